//go:build !nopostgres

package rollover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tlsactl/tlsactl/internal/safefile"
)

// PGOptions configures OpenPG.
type PGOptions struct {
	DSN          string        // postgres://user@host:port/db?sslmode=… ; password from the DSN, PasswordFile, $PGPASSWORD or ~/.pgpass (pgx does the last two)
	PasswordFile string        // optional: file whose first line is the password
	KeyFile      string        // file with the 32-byte material key (base64, as `openssl rand -base64 32` writes, or 64 hex digits); required to stage or read material
	Runner       string        // this runner's name in leases and history; default "<hostname>:<pid>"
	Lease        time.Duration // lease length; default 30s
}

// DefaultLease is the lease length of a PGStore when PGOptions.Lease is 0.
const DefaultLease = 30 * time.Second

// PGStore is a Store in a PostgreSQL database that several runners share
// (active/standby, or one per site). It implements Store, MigrationStore,
// Leaser and Enumerator.
//
// Its locks are leases (see LockLease): a runner that dies, or loses the
// database, stops acting, and another takes over once the lease has
// expired by the database's clock; every state, migration and material
// write is fenced by the lease's token, so a runner that lost its lease
// cannot overwrite what its successor wrote. Ledger updates are
// transactions holding the owner's row lock, so two runners recording at
// once never lose an observation.
//
// Documents are stored as the JSON a FileStore writes (states, ledgers,
// migrations); staged material is sealed with AES-256-GCM under the key of
// PGOptions.KeyFile, which never goes into the database or a log.
//
// The schema is created and migrated by OpenPG (forward only, under an
// advisory lock). A PGStore is safe for concurrent use; Close it.
type PGStore struct {
	pool      *pgxpool.Pool // documents
	leasePool *pgxpool.Pool // lease takes and renewals: never starved by document work
	runner    string
	holder    string // runner + "#" + random instance id
	lease     time.Duration
	key       *materialKey
	where     string // "database d on h:p", for errors (no password)

	mu     sync.Mutex
	leases map[string]*pgLease

	// transientWait bounds the wait for the lease an unlocked PutMaterial
	// takes (10 s).
	transientWait time.Duration
	// hookNoRenew (tests) stops renewals: the lease then expires.
	hookNoRenew atomic.Bool
}

var (
	_ Store          = (*PGStore)(nil)
	_ MigrationStore = (*PGStore)(nil)
	_ Leaser         = (*PGStore)(nil)
	_ Enumerator     = (*PGStore)(nil)
)

// pgStatementTimeout is the server-side statement_timeout of a PGStore's
// sessions (unless the DSN sets one): no statement holds a row lock for
// long. Lease renewals are bounded much tighter on the client: an attempt
// ends when the lease would be lost anyway.
const pgStatementTimeout = "60s"

// OpenPG connects to the database of o.DSN, runs the schema migrations
// this tlsactl knows that are missing (in one transaction under an
// advisory lock, so two runners starting at once migrate once) and returns
// the store. A database whose schema is newer than this tlsactl is refused
// (ErrSchemaNewer) and not changed. The sessions' application_name is
// "tlsactl:<runner>" unless the DSN sets one. The key file is read now
// when given; without it the store works but refuses to stage or read
// material.
func OpenPG(ctx context.Context, o PGOptions) (*PGStore, error) {
	if o.DSN == "" {
		return nil, errors.New("rollover: state database: empty DSN (state = \"postgres://user@host:5432/db?sslmode=verify-full\")")
	}
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		// pgx's message may quote the DSN, password included: do not pass it on.
		return nil, errors.New("rollover: state database: the DSN does not parse (want postgres://user@host:port/db?sslmode=verify-full)")
	}
	where := fmt.Sprintf("database %s on %s:%d", cfg.ConnConfig.Database, cfg.ConnConfig.Host, cfg.ConnConfig.Port)
	if o.PasswordFile != "" && cfg.ConnConfig.Password == "" {
		b, err := safefile.ReadPrivate(o.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("rollover: state database password file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		cfg.ConnConfig.Password = strings.TrimRight(line, "\r")
	}
	runner := o.Runner
	if runner == "" {
		h, _ := os.Hostname()
		runner = h + ":" + strconv.Itoa(os.Getpid())
	}
	lease := o.Lease
	if lease <= 0 {
		lease = DefaultLease
	}
	if lease < 50*time.Millisecond {
		return nil, fmt.Errorf("rollover: state database: lease %v is too short (at least 50ms; the default is %v)", lease, DefaultLease)
	}
	rp := cfg.ConnConfig.RuntimeParams
	if rp["application_name"] == "" {
		rp["application_name"] = "tlsactl:" + runner
	}
	if rp["statement_timeout"] == "" {
		rp["statement_timeout"] = pgStatementTimeout
	}
	if rp["idle_in_transaction_session_timeout"] == "" {
		// A runner stopped inside a transaction (SIGSTOP, a paused VM) would
		// keep its row locks, e.g. on a ledger, and block the runner that took
		// over its leases until the statement timeout; the server ends such a
		// session after half the lease (0.5 s to 5 s) instead. The store's own
		// transactions are never idle that long.
		rp["idle_in_transaction_session_timeout"] = fmt.Sprintf("%dms", min(max(lease/2, 500*time.Millisecond), 5*time.Second).Milliseconds())
	}
	if !strings.Contains(o.DSN, "pool_max_conns") {
		cfg.MaxConns = max(cfg.MaxConns, 16)
	}
	lcfg := cfg.Copy()
	lcfg.MaxConns, lcfg.MinConns = 2, 0
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	s := &PGStore{runner: runner, holder: runner + "#" + hex.EncodeToString(id), lease: lease, where: where, leases: map[string]*pgLease{}, transientWait: 10 * time.Second}
	if o.KeyFile != "" {
		if s.key, err = loadMaterialKey(o.KeyFile); err != nil {
			return nil, err
		}
	}
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("rollover: state %s: %w", where, err)
	}
	if s.leasePool, err = pgxpool.NewWithConfig(ctx, lcfg); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("rollover: state %s: %w", where, err)
	}
	if _, err := migrateSchema(ctx, s.pool); err != nil {
		s.Close()
		return nil, fmt.Errorf("rollover: state %s: %w", where, err)
	}
	return s, nil
}

// Close releases every lease the store holds (their held contexts are
// cancelled) and closes its connections.
func (s *PGStore) Close() {
	s.mu.Lock()
	ls := make([]*pgLease, 0, len(s.leases))
	for _, l := range s.leases {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	for _, l := range ls {
		_ = s.release(l)
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.leasePool != nil {
		s.leasePool.Close()
	}
}

// Runner returns this runner's name (PGOptions.Runner or its default), for
// Engine.Runner.
func (s *PGStore) Runner() string { return s.runner }

// opTimeout bounds a read or an unlocked write (the Store interface gives
// those no context).
const opTimeout = 30 * time.Second

func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// Load returns the state of host, or ErrNoRollover; a document that does
// not parse, names another host or has a newer format is an error (as for
// FileStore.Load).
func (s *PGStore) Load(host string) (*State, error) {
	h, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	doc, ok, err := s.doc(`SELECT doc FROM states WHERE host = $1`, h)
	if err != nil {
		return nil, fmt.Errorf("rollover: load state of %s from %s: %w", h, s.where, err)
	} else if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoRollover, h)
	}
	return decodeState([]byte(doc), h, "state of "+h+" in "+s.where)
}

// Save writes s (as FileStore writes it) fenced by this store's lease on
// the host: without one it is refused; with a lease that was lost or
// taken, or a row written under a newer lease, it fails with ErrLeaseLost
// and writes nothing.
func (s *PGStore) Save(st *State) error {
	if st == nil {
		return errors.New("rollover: save: nil state")
	}
	h, err := normalizeHost(st.Host)
	if err != nil {
		return err
	}
	b, err := encodeState(st)
	if err != nil {
		return fmt.Errorf("rollover: save state of %s: %w", h, err)
	}
	return s.saveDoc(LeaseHost, h, "save state", `
INSERT INTO states AS s (host, doc, fence, runner, updated) VALUES ($1, $2, $3, $4, now())
ON CONFLICT (host) DO UPDATE SET doc = EXCLUDED.doc, fence = EXCLUDED.fence, runner = EXCLUDED.runner, updated = now()
	WHERE s.fence <= EXCLUDED.fence`, b)
}

// saveDoc writes doc under key with upsert (parameters: key, doc, fence,
// runner), fenced by this store's lease on kind/key: a row written under a
// newer lease is left alone and the write fails with ErrLeaseLost.
func (s *PGStore) saveDoc(kind, key, what, upsert string, doc []byte) error {
	return s.fenced(kind, key, what, false, func(ctx context.Context, tx pgx.Tx, token int64) error {
		tag, err := tx.Exec(ctx, upsert, key, string(doc), token, s.runner)
		if err == nil && tag.RowsAffected() == 0 {
			return errFenced(kind, key, token)
		}
		return err
	})
}

// List returns the hosts with state, sorted.
func (s *PGStore) List() ([]string, error) {
	return s.names(`SELECT host FROM states`, "list states")
}

// names runs a one-column query and returns its values sorted.
func (s *PGStore) names(q, what string, args ...any) ([]string, error) {
	ctx, cancel := opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("rollover: %s in %s: %w", what, s.where, unreachable(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("rollover: %s in %s: %w", what, s.where, unreachable(err))
	}
	if out == nil {
		out = []string{}
	}
	slices.Sort(out)
	return out, nil
}

// noKey is the error for material without a key file.
func (s *PGStore) noKey(what, h, name string) error {
	return fmt.Errorf("rollover: %s %s/%s: the state database needs state_key_file (the key every runner shares; never stored in the database): create it with: "+keyFix,
		what, h, name, "/etc/tlsactl/state.key")
}

// PutMaterial seals m (AES-256-GCM, fresh nonce, host and name as
// additional data) and stores it with its key id, fenced by the host's
// lease. A caller that holds no lease on the host (a certificate source
// staging an order) gets one taken, waiting up to 10 s, around this write.
func (s *PGStore) PutMaterial(host, name string, m Material) error {
	h, err := checkStage(host, name, m)
	if err != nil {
		return err
	}
	if s.key == nil {
		return s.noKey("stage material", h, name)
	}
	nonce, sealed, err := s.key.seal(h, name, m)
	if err != nil {
		return fmt.Errorf("rollover: stage material %s/%s: %w", h, name, err)
	}
	return s.fenced(LeaseHost, h, "stage material "+name, true, func(ctx context.Context, tx pgx.Tx, token int64) error {
		tag, err := tx.Exec(ctx, `
INSERT INTO materials AS m (host, name, key_id, nonce, sealed, fence, updated) VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT (host, name) DO UPDATE SET key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, sealed = EXCLUDED.sealed, fence = EXCLUDED.fence, updated = now()
	WHERE m.fence <= EXCLUDED.fence`, h, name, s.key.id, nonce, sealed, token)
		if err == nil && tag.RowsAffected() == 0 {
			return errFenced(LeaseHost, h, token)
		}
		return err
	})
}

// GetMaterial returns the material staged for host under name, or
// ErrNoMaterial. Material sealed with another key than this runner's is an
// error naming both key ids and the key file.
func (s *PGStore) GetMaterial(host, name string) (Material, error) {
	h, err := materialHost(host, name)
	if err != nil {
		return Material{}, err
	}
	ctx, cancel := opContext()
	defer cancel()
	var keyID string
	var nonce, sealed []byte
	err = s.pool.QueryRow(ctx, `SELECT key_id, nonce, sealed FROM materials WHERE host = $1 AND name = $2`, h, name).Scan(&keyID, &nonce, &sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return Material{}, fmt.Errorf("%w: %s/%s", ErrNoMaterial, h, name)
	} else if err != nil {
		return Material{}, fmt.Errorf("rollover: read material %s/%s from %s: %w", h, name, s.where, unreachable(err))
	}
	if s.key == nil {
		return Material{}, s.noKey("read material", h, name)
	}
	return s.key.open(h, name, keyID, nonce, sealed)
}

// LoadLedger returns the owner's ledger, or an empty one.
func (s *PGStore) LoadLedger(owner string) (*Ledger, error) {
	o, err := normalizeHost(owner)
	if err != nil {
		return nil, fmt.Errorf("rollover: ledger: %w", err)
	}
	doc, _, err := s.doc(`SELECT doc FROM ledgers WHERE owner = $1`, o)
	if err != nil {
		return nil, fmt.Errorf("rollover: ledger of %s in %s: %w", o, s.where, err)
	} else if doc == "" { // no row, or the row UpdateLedger inserts before its first write
		return &Ledger{Format: ledgerFormat, Owner: o + "."}, nil
	}
	return decodeLedger([]byte(doc), o, "ledger of "+o+" in "+s.where)
}

// UpdateLedger changes the owner's ledger in one transaction: the row is
// inserted when missing, then read with SELECT … FOR UPDATE, so a second
// runner's update waits for this one and works on its result; no
// observation is lost. When fn fails (or the change is not append-only)
// the transaction is rolled back and nothing is written. Ledgers need no
// lease: any runner (or check) may record what it saw.
func (s *PGStore) UpdateLedger(ctx context.Context, owner string, fn func(*Ledger) error) (*Ledger, error) {
	o, err := normalizeHost(owner)
	if err != nil {
		return nil, fmt.Errorf("rollover: ledger: %w", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("rollover: ledger of %s in %s: %w", o, s.where, unreachable(err))
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `INSERT INTO ledgers (owner, doc) VALUES ($1, '') ON CONFLICT (owner) DO NOTHING`, o); err != nil {
		return nil, fmt.Errorf("rollover: ledger of %s in %s: %w", o, s.where, unreachable(err))
	}
	var doc string
	if err := tx.QueryRow(ctx, `SELECT doc FROM ledgers WHERE owner = $1 FOR UPDATE`, o).Scan(&doc); err != nil {
		return nil, fmt.Errorf("rollover: ledger of %s in %s: %w", o, s.where, unreachable(err))
	}
	l := &Ledger{Format: ledgerFormat, Owner: o + "."}
	if doc != "" {
		if l, err = decodeLedger([]byte(doc), o, "ledger of "+o+" in "+s.where); err != nil {
			return nil, err
		}
	}
	b, err := changeLedger(l, o, fn)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `UPDATE ledgers SET doc = $2, updated = now() WHERE owner = $1`, o, string(b)); err != nil {
		return nil, fmt.Errorf("rollover: ledger of %s in %s: %w", o, s.where, unreachable(err))
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("rollover: ledger of %s in %s: %w", o, s.where, unreachable(err))
	}
	return l, nil
}

// LoadMigration reads a migration, or ErrNoMigration.
func (s *PGStore) LoadMigration(name string) (*Migration, error) {
	if err := CheckMigrationName(name); err != nil {
		return nil, err
	}
	doc, ok, err := s.doc(`SELECT doc FROM migrations WHERE name = $1`, name)
	if err != nil {
		return nil, fmt.Errorf("rollover: migration %s in %s: %w", name, s.where, err)
	} else if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoMigration, name)
	}
	return decodeMigration([]byte(doc), name, "migration "+name+" in "+s.where)
}

// SaveMigration writes the migration fenced by this store's lease on it
// (see Save).
func (s *PGStore) SaveMigration(m *Migration) error {
	name := m.Spec.Name
	if err := CheckMigrationName(name); err != nil {
		return err
	}
	b, err := encodeMigration(m)
	if err != nil {
		return err
	}
	return s.saveDoc(LeaseMigration, name, "save migration", `
INSERT INTO migrations AS m (name, doc, fence, runner, updated) VALUES ($1, $2, $3, $4, now())
ON CONFLICT (name) DO UPDATE SET doc = EXCLUDED.doc, fence = EXCLUDED.fence, runner = EXCLUDED.runner, updated = now()
	WHERE m.fence <= EXCLUDED.fence`, b)
}

// ListMigrations returns the names of the stored migrations, sorted.
func (s *PGStore) ListMigrations() ([]string, error) {
	return s.names(`SELECT name FROM migrations`, "list migrations")
}

// ListLedgers returns the TLSA owner names (lower case, no trailing dot)
// with a ledger, sorted (Enumerator).
func (s *PGStore) ListLedgers() ([]string, error) {
	return s.names(`SELECT owner FROM ledgers WHERE doc <> ''`, "list ledgers")
}

// ListMaterial returns the names of the material staged for host, sorted
// (Enumerator).
func (s *PGStore) ListMaterial(host string) ([]string, error) {
	h, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	return s.names(`SELECT name FROM materials WHERE host = $1`, "list material of "+h, h)
}

// unreachable marks err with ErrStoreUnavailable when it says the database
// could not be reached or dropped the session (connect errors, network
// errors and timeouts, SQLSTATE classes 08 connection exception and 57
// operator intervention, e.g. a shutdown or pg_terminate_backend), so the
// engine retries rather than counting a failure. Other errors pass as
// they are.
// doc runs query (one doc column of the row keyed by $1) for key: ok is
// false when there is no such row; transport errors are
// ErrStoreUnavailable (see unreachable).
func (s *PGStore) doc(query, key string) (doc string, ok bool, err error) {
	ctx, cancel := opContext()
	defer cancel()
	err = s.pool.QueryRow(ctx, query, key).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	return doc, err == nil, unreachable(err)
}

func unreachable(err error) error {
	if err == nil || errors.Is(err, ErrStoreUnavailable) {
		return err
	}
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	var ne net.Error
	switch {
	case errors.As(err, &ce), errors.As(err, &ne), pgconn.Timeout(err), pgconn.SafeToRetry(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57")):
		return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	return err
}
