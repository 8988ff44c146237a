package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/urfave/cli/v2"
)

const (
	flagFrom         = "from"
	flagTo           = "to"
	flagKeyFile      = "key-file"
	flagPasswordFile = "password-file"
)

// Exit code of `state migrate` when it copied nothing or the copy differs.
const exitStateFailed = 1

func createState() *cli.Command {
	common := []cli.Flag{
		&cli.StringFlag{Name: flagConfig, EnvVars: []string{"TLSACTL_CONFIG"}, Usage: "configuration `FILE` whose state_password_file, state_key_file and runner are used for a postgres:// store (optional)"},
		&cli.StringFlag{Name: flagKeyFile, Usage: "the material key `FILE` of a postgres:// store (default: the configuration's state_key_file)"},
		&cli.StringFlag{Name: flagPasswordFile, Usage: "a `FILE` holding the database password (default: the configuration's state_password_file, then $PGPASSWORD, ~/.pgpass)"},
	}
	flags := func(extra ...cli.Flag) []cli.Flag { return append(append([]cli.Flag(nil), common...), extra...) }
	return &cli.Command{
		Name:  "state",
		Usage: "move the state between a directory and PostgreSQL; show where it is and who holds leases",
		Description: `The state (every host's rollover, staged certificates and keys, the ledgers of the TLSA
names, the fleet migrations) lives in a directory (state_dir, the default) or in a
PostgreSQL database that several runners share (state = "postgres://…" in the
configuration; see README "High availability"). 'state migrate' copies it from one to the
other and reads everything back to compare; 'state status' shows what a store holds.

EXAMPLES:
   tlsactl state migrate --config /etc/tlsactl/tlsactl.toml --from /var/lib/tlsactl \
       --to 'postgres://tlsactl@db.example.nl/tlsactl?sslmode=verify-full&sslrootcert=/etc/tlsactl/db-ca.pem'
   tlsactl state status --config /etc/tlsactl/tlsactl.toml

EXIT CODES (every subcommand; see each --help):
   0   done
   1   refused (the destination is not empty) or the copy read back differs
   2   bad input or configuration, a store that cannot be opened`,
		Subcommands: []*cli.Command{
			{
				Name:  "migrate",
				Usage: "copy every state, staged material, ledger and migration into an empty store, verified",
				Description: `Copies everything a store holds (--from) into another one (--to): a state directory
into PostgreSQL, PostgreSQL into a directory, or directory to directory. The destination
must be empty (a fresh database or a new directory): nothing is merged or overwritten.
After the copy every item is read back from the destination and compared with the source;
a difference is an error naming it. Staged private keys are encrypted in the database
with the key of state_key_file (--key-file): give every runner the same file.

Stop the runners first (the timer, every 'migration run --wait'): a rollover that moves
during the copy is copied as it was when it was read. Then change state = … in the
configuration of every runner and start them again. The source is left as it was.

--dry-run opens both stores, counts what would be copied and says whether the
destination is empty; it copies nothing (a new database gets tlsactl's tables, empty).

EXAMPLES:
   tlsactl state migrate --config /etc/tlsactl/tlsactl.toml --dry-run --from /var/lib/tlsactl \
       --to 'postgres://tlsactl@db.example.nl/tlsactl?sslmode=verify-full&sslrootcert=/etc/tlsactl/db-ca.pem'
   tlsactl state migrate --key-file /etc/tlsactl/state.key --from 'postgres://tlsactl@db/tlsactl' --to /var/lib/tlsactl.back
   PGPASSWORD=… tlsactl state migrate --json --key-file state.key --from /var/lib/tlsactl --to postgres://tlsactl@127.0.0.1/tlsactl

EXIT CODES:
   0   copied and verified (or --dry-run: counted, the destination is empty)
   1   the destination is not empty (nothing copied), or the copy read back differs
   2   bad input or configuration, a store that cannot be opened`,
				Flags: flags(
					&cli.StringFlag{Name: flagFrom, Usage: "the source: a state `DIR` or a postgres:// URL"},
					&cli.StringFlag{Name: flagTo, Usage: "the destination (empty): a state `DIR` or a postgres:// URL"},
					&cli.BoolFlag{Name: flagDryRun, Aliases: []string{"n"}, Usage: "count what would be copied; copy nothing"},
					&cli.BoolFlag{Name: flagJSON, Usage: "print JSON"}),
				Action: runStateMigrate,
			},
			{
				Name:  "status",
				Usage: "show a store: what it holds, and for PostgreSQL the schema version and the runners holding leases",
				Description: `Prints where the state is (--state, else the configuration's state or state_dir), how many
rollovers, staged materials, ledgers and migrations it holds and, for a database, the
schema version and every live lease: which runner holds which host or migration, until
when (the database's clock).

EXAMPLES:
   tlsactl state status --config /etc/tlsactl/tlsactl.toml
   tlsactl state status --json --key-file state.key --state postgres://tlsactl@127.0.0.1/tlsactl

EXIT CODES:
   0   shown
   2   bad input or configuration, a store that cannot be opened`,
				Flags:  flags(stateFlag(), &cli.BoolFlag{Name: flagJSON, Usage: "print JSON"}),
				Action: runStateStatus,
			},
		},
	}
}

// stateConfig is the configuration named by --config (nil when none).
func stateConfig(c *cli.Context) (*config.Config, error) {
	p := c.String(flagConfig)
	if p == "" {
		return nil, nil
	}
	return config.Load(p)
}

// stateSpec is the store spec for location under c's flags and cfg.
func stateSpec(c *cli.Context, cfg *config.Config, location string) storeSpec {
	sp := storeSpecFor(nil, cfg)
	sp.location, sp.local = location, location
	if cfg != nil && config.IsPostgresURL(location) {
		sp.local = cfg.StateLocal()
	}
	if f := c.String(flagKeyFile); f != "" {
		sp.keyFile = f
	}
	if f := c.String(flagPasswordFile); f != "" {
		sp.passwordFile = f
	}
	return sp
}

// countStore counts what s holds, as state migrate copies it
// (rollover.Count).
func countStore(s *stateStore) (rollover.CopyReport, error) {
	n, err := rollover.Count(s.fullStore)
	if err != nil {
		return n, storeErr(s.where, err)
	}
	return n, nil
}

// countsText is n in words.
func countsText(n rollover.CopyReport) string {
	return fmt.Sprintf("%d rollover state(s), %d staged material(s), %d ledger(s), %d migration(s)", n.States, n.Materials, n.Ledgers, n.Migrations)
}

type stateMigrateJSON struct {
	From     string              `json:"from"`
	To       string              `json:"to"`
	DryRun   bool                `json:"dry_run"`
	Source   rollover.CopyReport `json:"source"`
	Copied   rollover.CopyReport `json:"copied"`
	Verified bool                `json:"verified"`
}

func runStateMigrate(c *cli.Context) error {
	if c.NArg() > 0 {
		return badInput(fmt.Errorf("state migrate takes no arguments (got %q): give --from and --to", c.Args().First()))
	}
	from, to := c.String(flagFrom), c.String(flagTo)
	if from == "" || to == "" {
		return badInput(errors.New("give --from DIR|postgres://… and --to DIR|postgres://… (see --help)"))
	}
	if from == to {
		return badInput(fmt.Errorf("--from and --to name the same store %s", config.RedactURL(from)))
	}
	cfg, err := stateConfig(c)
	if err != nil {
		return badInput(err)
	}
	src, err := openStore(c.Context, stateSpec(c, cfg, from))
	if err != nil {
		return badInput(fmt.Errorf("--from: %w", err))
	}
	defer src.Close()
	dry := c.Bool(flagDryRun)
	if dry && !config.IsPostgresURL(to) {
		if _, err := os.Stat(to); errors.Is(err, os.ErrNotExist) {
			// Not created by a dry run: a directory that does not exist
			// is empty.
			return stateMigrateDry(c, src, to, nil)
		}
	}
	dst, err := openStore(c.Context, stateSpec(c, cfg, to))
	if err != nil {
		return badInput(fmt.Errorf("--to: %w", err))
	}
	defer dst.Close()
	if dry {
		return stateMigrateDry(c, src, to, dst)
	}
	srcN, err := countStore(src)
	if err != nil {
		return badInput(fmt.Errorf("--from: %w", err))
	}
	if err := refuseNonEmpty(dst); err != nil {
		return err
	}
	rep, err := rollover.CopyStore(context.WithoutCancel(c.Context), dst.fullStore, src.fullStore)
	if err != nil {
		return &exitError{code: exitStateFailed, err: fmt.Errorf("state migrate %s → %s: %w (the destination may hold part of the copy: empty it before trying again)", src.where, dst.where, err)}
	}
	copied := rep
	if copied != srcN {
		return &exitError{code: exitStateFailed, err: fmt.Errorf("state migrate %s → %s: copied %s, but the source holds %s (did a runner change it meanwhile? stop the runners, empty the destination and copy again)", src.where, dst.where, countsText(copied), countsText(srcN))}
	}
	if c.Bool(flagJSON) {
		return printJSON(c.App.Writer, stateMigrateJSON{From: src.where, To: dst.where, Source: srcN, Copied: copied, Verified: true})
	}
	_, err = fmt.Fprintf(c.App.Writer, "copied %s from %s to %s; read back and compared: equal\nnext: set state = %q in the configuration of every runner (state_key_file the same for all), then start them\n",
		countsText(copied), src.where, dst.where, config.RedactURL(to))
	return err
}

// refuseNonEmpty is an error (exit 1) when dst holds anything.
func refuseNonEmpty(dst *stateStore) error {
	n, err := countStore(dst)
	if err != nil {
		return badInput(fmt.Errorf("--to: %w", err))
	}
	if n != (rollover.CopyReport{}) {
		return &exitError{code: exitStateFailed, err: fmt.Errorf("the destination %s is not empty (it holds %s): state migrate copies into an empty store only; nothing was copied", dst.where, countsText(n))}
	}
	return nil
}

// stateMigrateDry counts the source and checks the destination to (dst
// nil: a directory that does not exist yet) without copying.
func stateMigrateDry(c *cli.Context, src *stateStore, to string, dst *stateStore) error {
	n, err := countStore(src)
	if err != nil {
		return badInput(fmt.Errorf("--from: %w", err))
	}
	dstWhere := "state directory " + to
	if dst != nil {
		dstWhere = dst.where
		if err := refuseNonEmpty(dst); err != nil {
			return err
		}
	}
	if c.Bool(flagJSON) {
		return printJSON(c.App.Writer, stateMigrateJSON{From: src.where, To: dstWhere, DryRun: true, Source: n})
	}
	_, err = fmt.Fprintf(c.App.Writer, "dry run: would copy %s from %s to %s (empty); nothing copied\n", countsText(n), src.where, dstWhere)
	return err
}

// stateStatusJSON is the --json output of state status.
type stateStatusJSON struct {
	Store  string              `json:"store"`
	Runner string              `json:"runner,omitempty"`
	Counts rollover.CopyReport `json:"counts"`
	// Schema and Leases: PostgreSQL only.
	Schema int              `json:"schema_version,omitempty"`
	Leases []rollover.Lease `json:"leases,omitempty"`
}

func runStateStatus(c *cli.Context) error {
	if c.NArg() > 0 {
		return badInput(fmt.Errorf("state status takes no arguments (got %q)", c.Args().First()))
	}
	cfg, err := stateConfig(c)
	if err != nil {
		return badInput(err)
	}
	sp := storeSpecFor(c, cfg)
	sp = stateSpec(c, cfg, sp.location)
	s, err := openStore(c.Context, sp)
	if err != nil {
		return badInput(err)
	}
	defer s.Close()
	out := stateStatusJSON{Store: s.where, Runner: s.runner}
	if out.Counts, err = countStore(s); err != nil {
		return badInput(err)
	}
	if sp.postgres() {
		if out.Schema, out.Leases, err = pgStatus(c.Context, s); err != nil {
			return badInput(storeErr(s.where, err))
		}
	}
	if c.Bool(flagJSON) {
		return printJSON(c.App.Writer, out)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\n", out.Store, countsText(out.Counts))
	if sp.postgres() {
		fmt.Fprintf(&b, "schema version %d; this runner would be %s\n", out.Schema, out.Runner)
		if len(out.Leases) == 0 {
			b.WriteString("no live leases: no runner is working on a host or migration now\n")
		}
		for _, l := range out.Leases {
			fmt.Fprintf(&b, "lease %-9s %-32s held by %s until %s (token %d)\n", l.Kind, l.Name, l.Holder, fmtTime(l.Expires), l.Token)
		}
	}
	_, err = io.WriteString(c.App.Writer, b.String())
	return err
}
