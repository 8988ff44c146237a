package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/urfave/cli/v2"
)

// flagState names the state on the command line: a directory or a
// PostgreSQL URL (overrides the configuration's state and state_dir).
const flagState = "state"

// stateFlag is --state for the commands that run rollovers and migrations.
func stateFlag() cli.Flag {
	return &cli.StringFlag{Name: flagState, EnvVars: []string{"TLSACTL_STATE"},
		Usage: "state: a `DIR` or postgres://user@host:port/db?sslmode=verify-full (default: config state, then state_dir, then /var/lib/tlsactl); the password comes from state_password_file, $PGPASSWORD or ~/.pgpass"}
}

// fullStore is what the commands need of a store: host state, staged
// material, ledgers and migrations. Both rollover.FileStore and
// rollover.PGStore are one.
type fullStore interface {
	rollover.Store
	rollover.MigrationStore
}

// stateStore is the store a command opened, with what the command says
// about it. Hand fullStore (the store itself, not this wrapper) to
// rollover.Engine and rollover.Fleet: they look for its lease methods.
type stateStore struct {
	fullStore
	// local is the directory of the files this runner keeps for itself
	// (ACME accounts, next keys): the state directory, or with
	// PostgreSQL the configuration's state_dir.
	local  string
	where  string // "state directory /x" or "PostgreSQL tlsactl@db:5432/tlsactl", for messages
	runner string // recorded on every event ("" for a file store without a runner name)
	close  func()
	once   sync.Once
}

// Dir is the directory of this runner's own files (see stateStore.local);
// with a file store, the state directory.
func (s *stateStore) Dir() string { return s.local }

// Close releases the store (the database connections; nothing for a file
// store). Leases still held are left to expire. Later calls do nothing.
func (s *stateStore) Close() {
	s.once.Do(func() {
		opened.Lock()
		opened.list = slices.DeleteFunc(opened.list, func(o *stateStore) bool { return o == s })
		opened.Unlock()
		if s.close != nil {
			s.close()
		}
	})
}

// opened are the stores opened by the command running now; run closes
// them when it returns (closeStores).
var opened struct {
	sync.Mutex
	list []*stateStore
}

// closeStores closes every store the command opened.
func closeStores() {
	opened.Lock()
	list := opened.list
	opened.list = nil
	opened.Unlock()
	for _, s := range list {
		s.Close()
	}
}

// register adds s to the stores closeStores closes.
func register(s *stateStore) *stateStore {
	opened.Lock()
	opened.list = append(opened.list, s)
	opened.Unlock()
	return s
}

// storeSpec is where the state is and how to reach it.
type storeSpec struct {
	location     string // a directory or a postgres:// URL
	local        string // see stateStore.local
	passwordFile string
	keyFile      string
	lease        time.Duration
	runner       string
}

// postgres reports whether the spec names a database.
func (sp storeSpec) postgres() bool { return config.IsPostgresURL(sp.location) }

// storeSpecFor is the state a command uses: --state, then --state-dir,
// then the configuration's state, state_dir, then /var/lib/tlsactl; the
// database settings come from the configuration (cfg may be nil).
func storeSpecFor(c *cli.Context, cfg *config.Config) storeSpec {
	if cfg == nil {
		cfg = &config.Config{}
	}
	sp := storeSpec{location: cfg.StateLocation(), local: cfg.StateLocal(), passwordFile: cfg.StatePasswordFile,
		keyFile: cfg.StateKeyFile, lease: cfg.Lease(), runner: cfg.Runner}
	if d := flagString(c, flagStateDir); d != "" {
		sp.location, sp.local = d, d
	}
	if s := flagString(c, flagState); s != "" {
		sp.location = s
		if !config.IsPostgresURL(s) {
			sp.local = s
		}
	}
	return sp
}

// flagString is c.String(name) when the command has that flag, else "".
func flagString(c *cli.Context, name string) string {
	if c == nil {
		return ""
	}
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			if n == name {
				return c.String(name)
			}
		}
	}
	return ""
}

// errStateStore wraps every failure to reach or read the state store, so
// that a --wait loop can tell a database that is away for a moment from bad
// input.
var errStateStore = errors.New("state store")

// storeErr wraps err (a failure of the store at where) in errStateStore.
func storeErr(where string, err error) error {
	return fmt.Errorf("%w %s: %w", errStateStore, where, err)
}

// openStore opens the store sp names: a FileStore (created, mode 0700) or
// a PGStore (connects, migrates the schema). The caller closes it.
func openStore(ctx context.Context, sp storeSpec) (*stateStore, error) {
	if !sp.postgres() {
		fs, err := rollover.NewFileStore(sp.location)
		if err != nil {
			return nil, err
		}
		return register(&stateStore{fullStore: fs, local: sp.local, where: "state directory " + sp.location, runner: sp.runner}), nil
	}
	if _, err := config.ParseStateURL(sp.location); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if sp.keyFile == "" {
		return nil, fmt.Errorf("state %s is a PostgreSQL database: set state_key_file in the configuration (the key every runner shares: openssl rand -base64 32 > /etc/tlsactl/state.key; chmod 600 /etc/tlsactl/state.key)", config.RedactURL(sp.location))
	}
	s, err := openPG(ctx, sp)
	if err != nil {
		return nil, err
	}
	return register(s), nil
}

// pgWhere names a database for messages: the URL without its password
// and parameters.
func pgWhere(dsn string) string {
	u, err := config.ParseStateURL(dsn)
	if err != nil {
		return "PostgreSQL " + config.RedactURL(dsn)
	}
	who := ""
	if u.User != nil && u.User.Username() != "" {
		who = u.User.Username() + "@"
	}
	return "PostgreSQL " + who + u.Host + u.Path
}
