package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/internal/safefile"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
	"github.com/urfave/cli/v2"
)

const flagMetricsFile = "metrics-file"

const migrationFileHelp = `THE MIGRATION FILE (TOML; see examples/migrations/pkio-2027.toml):
   name = "pkio-2027"                            [a-z0-9][a-z0-9._-]*, names the stored state
   hosts = ["mx*.example.nl", "mail.example.org"] [[host]] names of the configuration, or globs
   new_ca = ["new-ca/*.pem"]                     the new issuer set (CA certificates, PEM)
   not_before = 2027-01-10T00:00:00+01:00        nothing is published before (optional)
   deadline = 2027-03-01T00:00:00+01:00          plan and status check it (optional)
   windows = ["Mon-Fri 02:00-05:00 Europe/Amsterdam"]  deploy windows (default: any time)
   max_parallel = 4    max_failures = 2    canary = "mx1.example.nl"
   ttl = 3600          margin = "30s"      deploy_estimate = "2m"
   [source]
   kind = "dir"        dir = "incoming"    (<host>.pem, leaf + new CA, and <host>.key appear)
   kind = "acme"       directory = "https://…/directory", email, eab_kid_file, eab_hmac_file, ca_file
   kind = "hook"       certificates arrive through 'tlsactl hook' or 'tlsactl rollover provide'
Paths are relative to the migration file.`

func createMigration() *cli.Command {
	common := []cli.Flag{
		&cli.StringFlag{Name: flagConfig, EnvVars: []string{"TLSACTL_CONFIG"}, Value: "/etc/tlsactl/tlsactl.toml", Usage: "configuration `FILE`: provider, hosts, deploy paths, reload commands"},
		&cli.StringFlag{Name: flagStateDir, EnvVars: []string{"TLSACTL_STATE_DIR"}, Usage: "state `DIR` (default: config state_dir, then /var/lib/tlsactl)"},
		&cli.StringFlag{Name: flagResolver, EnvVars: []string{"TLSACTL_RESOLVER"}, Usage: "validating resolver `ADDR` (default: config, then /etc/resolv.conf)"},
		stateFlag(),
	}
	flags := func(extra ...cli.Flag) []cli.Flag { return append(append([]cli.Flag(nil), common...), extra...) }
	jsonFlag := &cli.BoolFlag{Name: flagJSON, Usage: "print JSON"}
	metricsFlag := &cli.StringFlag{Name: flagMetricsFile, Usage: "also write Prometheus metrics of every migration to `FILE` (atomically; for node-exporter's textfile collector)"}
	return &cli.Command{
		Name:  "migration",
		Usage: "move many hosts to a new CA on a schedule (fleet CA migrations)",
		Description: `A migration moves a fleet of MX hosts to a new issuer set: it starts an ordinary
ca-migration rollover for every host, publishes every host's new 2 1 1 first (one provider
call per zone where the provider batches, e.g. one RFC 2136 UPDATE), waits one TTL for the
whole fleet, then deploys the new certificates inside the deploy windows, at most
max_parallel at a time (the canary first, alone), halting once max_failures hosts failed.
Every host step is checked against its ledger as any rollover's is; 'tlsactl rollover
status' shows each host's rollover. State lives in state_dir/_migrations/ (mode 0600):
a run after a crash or a reboot goes on where the last one stopped.

'tlsactl rollover run' (the systemd timer) advances every active migration too.

Phases of a host: pending, publishing, waiting-ttl, waiting-certificate, waiting-canary,
waiting-window, ready, deploying, done; held (a failed deploy or a refused start: resume
retries), rolled-back (abort).

` + migrationFileHelp + `

EXAMPLES:
   tlsactl migration plan /etc/tlsactl/migrations/pkio-2027.toml
   tlsactl migration start /etc/tlsactl/migrations/pkio-2027.toml
   tlsactl rollover run                  # from the timer; or: tlsactl migration run pkio-2027 --wait
   tlsactl migration status pkio-2027 --metrics-file /var/lib/node_exporter/tlsactl-migrations.prom
   tlsactl migration pause pkio-2027; tlsactl migration resume pkio-2027
   tlsactl migration abort pkio-2027 --dry-run

EXIT CODES (every subcommand; see each --help):
   0   done, or waiting safely (TTL, window, certificate): run again later
   1   a step failed, the migration halted (max_failures), or the plan misses the deadline
   2   bad input or configuration`,
		Subcommands: []*cli.Command{
			{
				Name: "plan", Usage: "dry run: per host the records and the earliest deploy; the finish and the deadline (changes nothing)",
				ArgsUsage: "FILE",
				Description: `Reads the migration file and every host's TLSA RRset (at the provider), and prints per
host: the batch (provider and zone) its publication goes with, the RRset now ("="), the
records published ("+") and those retired at the end ("-"), the TTL and the earliest
deploy start inside the windows; then for the fleet: when publishing starts (now or
not_before), when the one TTL wait ends, the finish, and whether it meets the deadline (else
what would). Nothing is changed or stored.

POSITIONAL ARGUMENTS:
   FILE   the migration file (TOML)

` + migrationFileHelp + `

EXAMPLES:
   tlsactl migration plan /etc/tlsactl/migrations/pkio-2027.toml
   tlsactl migration plan --json pkio-2027.toml | jq '.hosts[] | {host, deploy}'

EXIT CODES:
   0   the plan meets the deadline (or there is none) and every host can take part
   1   it misses the deadline, a host cannot take part (the line says why), or DNS could not be read
   2   bad input or configuration (the migration file, the configuration)`,
				Flags:  flags(jsonFlag),
				Action: runMigrationPlan,
			},
			{
				Name: "start", Usage: "store the migration (nothing changes in DNS yet; 'tlsactl rollover run' advances it)",
				ArgsUsage: "FILE",
				Description: `Checks the migration file and stores it, resolved (host names, the CA certificates, the
schedule), in state_dir/_migrations/NAME.json: runs after this need neither the file nor
the CA files. Nothing is changed in DNS or on any server: the next 'tlsactl rollover run'
(or 'tlsactl migration run NAME') starts publishing, at not_before. A host that is in
another unfinished migration, or a name already used, is refused. --dry-run prints the plan
instead (see 'tlsactl migration plan --help').

POSITIONAL ARGUMENTS:
   FILE   the migration file (TOML)

EXAMPLES:
   tlsactl migration start --dry-run /etc/tlsactl/migrations/pkio-2027.toml
   tlsactl migration start /etc/tlsactl/migrations/pkio-2027.toml

EXIT CODES:
   0   stored (or --dry-run: the plan meets the deadline)
   1   refused (the message says why; e.g. a host in another migration), or the dry run's plan fails
   2   bad input or configuration`,
				Flags:  flags(&cli.BoolFlag{Name: flagDryRun, Aliases: []string{"n"}, Usage: "print the plan; store nothing"}, jsonFlag),
				Action: runMigrationStart,
			},
			{
				Name: "run", Usage: "advance migrations as far as is safe and the schedule allows now",
				ArgsUsage: "[NAME…]",
				Description: `One pass over each named migration (default: every stored one that is active or
halted): start the hosts' rollovers at not_before, publish and confirm the new issuer set,
take certificates from the source as they arrive, deploy inside the windows. With --wait it
sleeps until the next action (a TTL's end, a window's opening, a certificate poll) and goes
on until every migration is done, halted or paused, or --timeout passes. 'tlsactl rollover
run' makes the same pass for every active migration.

POSITIONAL ARGUMENTS:
   NAME   a stored migration (repeatable; default: all)

EXAMPLES:
   tlsactl migration run
   tlsactl migration run pkio-2027 --wait --timeout 72h
   tlsactl migration run --metrics-file /var/lib/node_exporter/tlsactl-migrations.prom

EXIT CODES:
   0   done, paused, or waiting safely (TTL, window, certificate): run again later
   1   a pass failed or a host failed in it (the message says which), the migration halted
       (max_failures: fix the hosts, then 'tlsactl migration resume NAME'), or --wait timed out
   2   bad input or configuration, no such migration`,
				Flags: flags(&cli.BoolFlag{Name: flagWait, Usage: "sleep until each migration is done, halted or paused"},
					&cli.DurationFlag{Name: flagTimeout, Value: 24 * time.Hour, Usage: "bound for --wait"}, metricsFlag),
				Action: runMigrationRun,
			},
			{
				Name: "status", Usage: "show a migration's hosts, phases and deadline (or one line per migration)",
				ArgsUsage: "[NAME]",
				Description: `With NAME: the status, failures against max_failures, the deadline and the seconds to it,
the next action, the hosts per phase, and a table of every host (phase, next action time,
reason), then the latest history. Without NAME: one summary line per stored migration.

POSITIONAL ARGUMENTS:
   NAME   a stored migration (default: all, one line each)

EXAMPLES:
   tlsactl migration status
   tlsactl migration status pkio-2027
   tlsactl migration status --json pkio-2027 | jq '.hosts[] | select(.phase == "held")'

EXIT CODES:
   0   shown
   2   bad input or configuration, no such migration`,
				Flags:  flags(jsonFlag, metricsFlag),
				Action: runMigrationStatus,
			},
			{
				Name: "pause", Usage: "stop advancing a migration until resume (changes nothing in DNS)",
				ArgsUsage: "NAME",
				Description: `No host of a paused migration is advanced, not by 'migration run' and not by
'rollover run'. Records and files stay as they are; every RRset a resolver may hold still
matches what the hosts serve.

EXAMPLES:
   tlsactl migration pause pkio-2027

EXIT CODES:
   0   paused
   1   refused (done or aborted already)
   2   bad input or configuration, no such migration`,
				Flags: flags(), Action: runMigrationPause,
			},
			{
				Name: "resume", Usage: "continue a paused or halted migration; held hosts are retried",
				ArgsUsage: "NAME",
				Description: `Sets the migration active again, clears the failure count and retries every held host
at the next run.

EXAMPLES:
   tlsactl migration resume pkio-2027 && tlsactl migration run pkio-2027

EXIT CODES:
   0   resumed
   1   refused (done or aborted already)
   2   bad input or configuration, no such migration`,
				Flags: flags(), Action: runMigrationResume,
			},
			{
				Name: "abort", Usage: "end a migration: roll back hosts not deployed, finish those deployed",
				ArgsUsage: "NAME",
				Description: `Every host whose new certificate is not deployed yet is rolled back (its rollover is
aborted, which takes back the 2 1 1 records it added and nothing else); every host already
deployed is finished (its 3 1 1 replaced, the old CA's records retired), so each host is
left consistent. When a host cannot be rolled back now (a provider error) the migration
stays paused and abort says which; run it again. --dry-run says which hosts would be rolled
back and which finished.

EXAMPLES:
   tlsactl migration abort pkio-2027 --dry-run
   tlsactl migration abort pkio-2027

EXIT CODES:
   0   aborted (or --dry-run)
   1   a host could not be rolled back or finished now (the migration stays paused; run again)
   2   bad input or configuration, no such migration`,
				Flags:  flags(&cli.BoolFlag{Name: flagDryRun, Aliases: []string{"n"}, Usage: "say what abort would do; change nothing"}),
				Action: runMigrationAbort,
			},
		},
	}
}

// fleet is the migration runner over env's engine and store.
func (env *rolloverEnv) fleet() *rollover.Fleet {
	return &rollover.Fleet{Engine: env.engine, Store: env.store.fullStore, Source: env.certSource}
}

// certSource builds a migration's certificate source from its stored
// Spec.Source: a directory, embedded ACME, or none (hooks and `rollover
// provide` hand the material over).
func (env *rolloverEnv) certSource(m *rollover.Migration) (rollover.CertSource, error) {
	src, err := config.SourceFromMap(m.Spec.Source)
	if err != nil {
		return nil, err
	}
	cas, err := parseIssuerSet(m.Spec.NewCAPEM)
	if err != nil {
		return nil, err
	}
	switch src.Kind {
	case config.SourceDir:
		return &dirSource{dir: src.Dir, cas: cas, now: time.Now, settle: dirSettle}, nil
	case config.SourceACME:
		return &acmeSource{env: env, src: src, cas: cas}, nil
	}
	return nil, nil
}

func parseIssuerSet(pems []string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for i, p := range pems {
		ms, err := tlsa.ParseMaterial(fmt.Sprintf("new CA %d", i+1), []byte(p))
		if err != nil {
			return nil, err
		}
		out = append(out, tlsa.Certificates(ms)...)
	}
	return out, nil
}

// migrationArg returns the one positional argument a subcommand takes.
func migrationArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("give one %s: tlsactl migration %s [flags] %s (see --help)", what, c.Command.Name, what)
	}
	return c.Args().First(), nil
}

// migrationInput reads a subcommand's one positional argument (what: FILE
// or NAME) and the configuration, then load(env, argument); every error is
// bad input.
func migrationInput[T any](c *cli.Context, what string, load func(*rolloverEnv, string) (T, error)) (*rolloverEnv, T, error) {
	var zero T
	arg, err := migrationArg(c, what)
	if err != nil {
		return nil, zero, badInput(err)
	}
	env, err := newRolloverEnv(c)
	if err != nil {
		return nil, zero, badInput(err)
	}
	v, err := load(env, arg)
	if err != nil {
		return nil, zero, badInput(err)
	}
	return env, v, nil
}

// migrationFileInput is migrationInput for a FILE: the migration file read
// against the configuration; warnings go to stderr.
func migrationFileInput(c *cli.Context) (*rolloverEnv, *config.Migration, error) {
	return migrationInput(c, "FILE", func(env *rolloverEnv, path string) (*config.Migration, error) {
		m, warnings, err := config.LoadMigration(path, env.cfg)
		if err != nil {
			return nil, err
		}
		for _, w := range warnings {
			fmt.Fprintf(c.App.ErrWriter, "tlsactl: warning: %s\n", oneLine(w))
		}
		return m, nil
	})
}

// storedMigrationInput is migrationInput for a NAME: the stored migration
// (see loadStoredMigration).
func storedMigrationInput(c *cli.Context) (*rolloverEnv, *rollover.Migration, error) {
	return migrationInput(c, "NAME", loadStoredMigration)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runMigrationPlan(c *cli.Context) error {
	env, m, err := migrationFileInput(c)
	if err != nil {
		return err
	}
	return migrationPlan(c, env, m)
}

// migrationPlan prints the dry run of m (plan, start --dry-run).
func migrationPlan(c *cli.Context, env *rolloverEnv, m *config.Migration) error {
	now := time.Now()
	p, err := env.fleet().Plan(c.Context, m.Spec(), now)
	if err != nil {
		return &exitError{code: exitRolloverError, err: err}
	}
	if c.Bool(flagJSON) {
		if err := printJSON(c.App.Writer, p); err != nil {
			return err
		}
	} else if _, err := io.WriteString(c.App.Writer, formatPlan(p, m, now)); err != nil {
		return err
	}
	held := 0
	for _, h := range p.Hosts {
		if h.Error != "" {
			held++
		}
	}
	switch {
	case !p.MeetsDeadline:
		fmt.Fprintf(c.App.ErrWriter, "tlsactl: migration %s would finish %s, after its deadline %s\n", p.Name, fmtTime(p.Finish), fmtTime(p.Deadline))
		return silentExit(exitRolloverError)
	case held > 0:
		fmt.Fprintf(c.App.ErrWriter, "tlsactl: migration %s: %d host(s) cannot take part now and would be held (see their lines)\n", p.Name, held)
		return silentExit(exitRolloverError)
	}
	return nil
}

// formatPlan renders a plan as text: a block per host, then the fleet's
// times.
func formatPlan(p *rollover.MigrationPlan, m *config.Migration, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "migration %s (dry run; nothing changed): %d hosts, %d new CA certificate(s), publishing in %d provider call(s)\n",
		p.Name, len(p.Hosts), len(m.NewCA), p.Batches)
	fmt.Fprintf(&b, "%-32s %-28s %6s  %-20s\n", "HOST", "BATCH", "TTL", "EARLIEST DEPLOY")
	for _, h := range p.Hosts {
		note := ""
		if h.Canary {
			note = "  canary (deploys first, alone)"
		}
		fmt.Fprintf(&b, "%-32s %-28s %6d  %-20s%s\n", bare(h.Host), orDash(h.Batch), h.TTL, fmtTime(h.Deploy), note)
		if h.Error != "" {
			fmt.Fprintf(&b, "    held: %s\n", oneLine(h.Error))
		}
		for _, r := range h.Current {
			mark := "="
			switch {
			case slices.Contains(h.Retire, r):
				mark = "-"
			case strings.HasPrefix(r, "3 "):
				mark = "~"
			}
			fmt.Fprintf(&b, "    %s %s\n", mark, r)
		}
		for _, r := range h.Retire {
			if !slices.Contains(h.Current, r) {
				fmt.Fprintf(&b, "    - %s\n", r)
			}
		}
		for _, r := range h.Publish {
			fmt.Fprintf(&b, "    + %s\n", r)
		}
	}
	b.WriteString("(= kept, + published first, ~ replaced by the new certificate's 3 1 1 after its deploy, - retired at the end)\n")
	start := "now"
	if p.Start.After(now) {
		start = "not_before"
	}
	fmt.Fprintf(&b, "publish start  %s (%s)\n", fmtTime(p.Start), start)
	fmt.Fprintf(&b, "wait end       %s (the largest TTL, %d s, + margin %s, after every server serves the new records)\n", fmtTime(p.WaitUntil), p.MaxTTL, m.Margin)
	win := "any time"
	if len(m.Spec().Windows) > 0 {
		win = strings.Join(m.Spec().Windows, "; ")
	}
	fmt.Fprintf(&b, "finish         %s (windows: %s; max_parallel %d, %s per deploy)\n", fmtTime(p.Finish), win, m.MaxParallel, m.DeployEstimate)
	switch {
	case p.Deadline.IsZero():
		b.WriteString("deadline       none\n")
	case p.MeetsDeadline:
		fmt.Fprintf(&b, "deadline       %s: met, %s to spare\n", fmtTime(p.Deadline), fmtDur(p.Deadline.Sub(p.Finish)))
	default:
		fmt.Fprintf(&b, "deadline       %s: MISSED by %s\n", fmtTime(p.Deadline), fmtDur(p.Finish.Sub(p.Deadline)))
	}
	for _, a := range p.Advice {
		fmt.Fprintf(&b, "  advice: %s\n", oneLine(a))
	}
	return b.String()
}

func runMigrationStart(c *cli.Context) error {
	env, m, err := migrationFileInput(c)
	if err != nil {
		return err
	}
	if c.Bool(flagDryRun) {
		return migrationPlan(c, env, m)
	}
	mig, err := env.fleet().Create(c.Context, m.Spec())
	if err != nil {
		return &exitError{code: exitRolloverError, err: fmt.Errorf("migration %s not started: %w", m.Name, err)}
	}
	if c.Bool(flagJSON) {
		return printJSON(c.App.Writer, migrationJSON(mig, time.Now()))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "started migration %s: %d hosts, %d new CA certificate(s), %s; nothing is changed in DNS yet\n", mig.Spec.Name, len(mig.Hosts), len(mig.Spec.NewCAPEM), mig.Status)
	if nb := mig.Spec.NotBefore; nb.After(time.Now()) {
		fmt.Fprintf(&b, "publishing starts at not_before, %s\n", fmtTime(nb))
	} else {
		b.WriteString("publishing starts at the next run\n")
	}
	fmt.Fprintf(&b, "next: tlsactl rollover run advances it (the timer; or tlsactl migration run %s --wait); status: tlsactl migration status %s\n", mig.Spec.Name, mig.Spec.Name)
	_, err = io.WriteString(c.App.Writer, b.String())
	return err
}

// migrationPass is the outcome of advancing migrations once.
type migrationPass struct {
	// busy are the hosts of unfinished (active, paused, halted)
	// migrations: the fleet advances them, not the per-host loop of
	// `rollover run`.
	busy map[string]string // host → migration
	// next is the earliest next action of an active migration (zero:
	// none).
	next   time.Time
	errors int // passes that failed
	// skipped counts migrations another runner was advancing (its
	// lease): a --wait loop goes on until it sees them finished.
	skipped int
	halted  []string // migrations halted after the pass
	// held are the held hosts of the migrations advanced ("mx1.example.nl
	// in pkio-2027"): each waits for the operator (resume or abort).
	held []string
	all  []*rollover.Migration
}

// advanceMigrations advances the named migrations (all stored ones that are
// active or halted when names is empty; none unless advance), printing one
// line each, and returns what `rollover run` and `migration run` need to go
// on: the hosts of every unfinished migration, the next action, errors.
func advanceMigrations(ctx context.Context, c *cli.Context, env *rolloverEnv, names []string, advance bool) (*migrationPass, error) {
	explicit := len(names) > 0
	stored, err := env.store.ListMigrations()
	if err != nil {
		return nil, storeErr(env.store.where, err)
	}
	for _, n := range names {
		if !slices.Contains(stored, n) {
			if err := rollover.CheckMigrationName(n); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("no migration %s is stored in %s (tlsactl migration status lists them)", n, env.store.where)
		}
	}
	if !explicit {
		names = stored
	}
	pass := &migrationPass{busy: map[string]string{}}
	fleet := env.fleet()
	for _, n := range stored {
		before, err := env.store.LoadMigration(n)
		if err != nil {
			return nil, storeErr(env.store.where, err)
		}
		m := before
		run := advance && slices.Contains(names, n) && !before.Final() && (explicit || before.Status != rollover.MigrationPaused)
		if run {
			after, err := fleet.Advance(ctx, n)
			if after != nil {
				m = after
			}
			if errors.Is(err, rollover.ErrLocked) && after == nil {
				// Another runner (a `--wait` loop, the timer) is in a
				// pass: it advances the migration; this one skips it.
				fmt.Fprintf(c.App.Writer, "migration %s: skipped, another tlsactl process is advancing it now\n", n)
				pass.skipped++
				err = nil
			}
			if err != nil {
				pass.errors++
				fmt.Fprintf(c.App.ErrWriter, "tlsactl: migration %s: %s\n", n, oneLine(err.Error()))
				// What the pass did after a lost lease or a store
				// failure may not be saved: report what the store holds
				// (perhaps another runner's), not what this pass meant.
				if cur, lerr := env.store.LoadMigration(n); lerr == nil {
					m = cur
				}
			}
			for i, h := range m.Hosts {
				if h.Phase == rollover.PhaseHeld && (i >= len(before.Hosts) || before.Hosts[i].Phase != rollover.PhaseHeld) {
					fmt.Fprintf(c.App.ErrWriter, "tlsactl: migration %s: %s: held: %s\n", n, bare(h.Host), oneLine(h.Reason))
				}
			}
		}
		if run || (advance && explicit && slices.Contains(names, n)) {
			fmt.Fprintf(c.App.Writer, "migration %s\n", migrationSummary(m, time.Now()))
		}
		pass.all = append(pass.all, m)
		if m.Final() {
			continue
		}
		for _, h := range m.Hosts {
			pass.busy[strings.ToLower(bare(h.Host))] = n
		}
		if run {
			for _, h := range m.Hosts {
				if h.Phase == rollover.PhaseHeld {
					pass.held = append(pass.held, bare(h.Host)+" in "+n)
				}
			}
		}
		switch m.Status {
		case rollover.MigrationHalted:
			if run {
				pass.halted = append(pass.halted, n)
			}
		case rollover.MigrationActive:
			if run {
				if nx := m.Next(); !nx.IsZero() && (pass.next.IsZero() || nx.Before(pass.next)) {
					pass.next = nx
				}
			}
		}
	}
	return pass, nil
}

func runMigrationRun(c *cli.Context) error {
	env, err := newRolloverEnv(c)
	if err != nil {
		return badInput(err)
	}
	names := c.Args().Slice()
	ctx := c.Context
	if c.Bool(flagWait) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Duration(flagTimeout))
		defer cancel()
	}
	for {
		pass, err := advanceMigrations(ctx, c, env, names, true)
		away := storeAwayPass(ctx, c, err)
		if away != nil {
			pass = away
		} else if err != nil {
			return badInput(err)
		}
		if err := writePassMetrics(c, pass, away != nil); err != nil {
			return err
		}
		if len(pass.all) == 0 && away == nil {
			fmt.Fprintln(c.App.Writer, "no migrations (tlsactl migration start FILE stores one)")
		}
		if !c.Bool(flagWait) || (pass.next.IsZero() && pass.errors == 0 && pass.skipped == 0) {
			return pass.verdict()
		}
		if err := sleepCtx(ctx, nextWait(pass.next, pass.errors, pass.skipped)); err != nil {
			return &exitError{code: exitRolloverError, err: fmt.Errorf("--wait: %w before every migration finished", err)}
		}
	}
}

// storeRetry is how soon a --wait loop looks again after the store could
// not be read, or after another runner held a migration's lease.
const storeRetry = time.Second

// storeAwayPass stands for a pass of advanceMigrations that failed with
// err: when the state store is away for a moment (a database restart, a
// network cut) in a --wait loop that still runs, it says so on stderr and
// returns a failed pass that the loop retries after storeRetry, as a
// standby would. Any other err (or none, or no --wait) gives nil.
func storeAwayPass(ctx context.Context, c *cli.Context, err error) *migrationPass {
	if err == nil || !c.Bool(flagWait) || !errors.Is(err, errStateStore) || ctx.Err() != nil {
		return nil
	}
	fmt.Fprintf(c.App.ErrWriter, "tlsactl: %s; retrying in %s\n", oneLine(err.Error()), storeRetry)
	return &migrationPass{busy: map[string]string{}, errors: 1, next: time.Now().Add(storeRetry)}
}

// writePassMetrics writes --metrics-file (when given) from the pass's
// migrations; not after a pass that could not read the store (away), which
// would replace the last good exposition with an empty one.
func writePassMetrics(c *cli.Context, pass *migrationPass, away bool) error {
	p := c.String(flagMetricsFile)
	if p == "" || away {
		return nil
	}
	if err := writeMigrationMetrics(p, pass.all, time.Now()); err != nil {
		return &exitError{code: exitRolloverError, err: fmt.Errorf("--metrics-file: %w", err)}
	}
	return nil
}

// nextWait is how long a --wait loop sleeps before its next pass: until
// next; soon (storeRetry) while another runner advances a migration (its
// lease; the lock waits too); 5 s to retry a failure, or when nothing is
// due.
func nextWait(next time.Time, failed, skipped int) time.Duration {
	wait := time.Until(next)
	switch {
	case skipped > 0 && (next.IsZero() || wait > storeRetry):
		return storeRetry
	case next.IsZero() || wait > 30*time.Second && failed > 0:
		return 5 * time.Second
	}
	return wait
}

// verdict is the error a run ends with: the migrations that halted, the
// hosts held (each needs the operator: fix it, then resume, or abort), or
// a pass that failed (its message is printed already).
func (pass *migrationPass) verdict() error {
	switch {
	case len(pass.halted) > 0:
		return &exitError{code: exitRolloverError, err: fmt.Errorf("migration %s halted (max_failures reached): fix the held hosts (tlsactl migration status), then tlsactl migration resume", strings.Join(pass.halted, ", "))}
	case pass.errors > 0:
		return silentExit(exitRolloverError)
	case len(pass.held) > 0:
		return &exitError{code: exitRolloverError, err: fmt.Errorf("held, waiting for the operator: %s (tlsactl migration status says why; fix, then tlsactl migration resume, or abort)", strings.Join(pass.held, ", "))}
	}
	return nil
}

// sleepCtx sleeps for d (nothing when d ≤ 0) or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d < 0 {
		d = 0
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// migrationStatus is a migration with what status computes from it.
type migrationStatus struct {
	*rollover.Migration
	Counts map[rollover.HostPhase]int `json:"counts"` // every phase, zeros included
	// NextAction is the earliest next action (absent: none pending).
	NextAction *time.Time `json:"next_action,omitempty"`
	// DeadlineSeconds is the time left to the deadline (negative after
	// it; absent without a deadline).
	DeadlineSeconds *float64 `json:"deadline_seconds,omitempty"`
}

func migrationJSON(m *rollover.Migration, now time.Time) migrationStatus {
	s := migrationStatus{Migration: m, Counts: map[rollover.HostPhase]int{}}
	for _, ph := range rollover.Phases {
		s.Counts[ph] = 0
	}
	for ph, n := range m.Counts() {
		s.Counts[ph] = n
	}
	if nx := m.Next(); !nx.IsZero() {
		s.NextAction = &nx
	}
	if d := m.Spec.Deadline; !d.IsZero() {
		secs := d.Sub(now).Seconds()
		s.DeadlineSeconds = &secs
	}
	return s
}

func runMigrationStatus(c *cli.Context) error {
	if c.NArg() > 1 {
		return badInput(errors.New("give at most one NAME: tlsactl migration status [NAME] (see --help)"))
	}
	env, err := newRolloverEnv(c)
	if err != nil {
		return badInput(err)
	}
	now := time.Now()
	name := c.Args().First()
	var all []*rollover.Migration
	if p := c.String(flagMetricsFile); p != "" || name == "" {
		// Every migration: for the list, and for the metrics (which
		// cover them all even when one NAME is shown).
		names, err := env.store.ListMigrations()
		if err != nil {
			return badInput(err)
		}
		for _, n := range names {
			m, err := env.store.LoadMigration(n)
			if err != nil {
				return badInput(err)
			}
			all = append(all, m)
		}
		if p != "" {
			if err := writeMigrationMetrics(p, all, now); err != nil {
				return &exitError{code: exitRolloverError, err: fmt.Errorf("--metrics-file: %w", err)}
			}
		}
	}
	if name != "" {
		m, err := loadStoredMigration(env, name)
		if err != nil {
			return badInput(err)
		}
		if c.Bool(flagJSON) {
			return printJSON(c.App.Writer, migrationJSON(m, now))
		}
		_, err = io.WriteString(c.App.Writer, formatMigration(m, now))
		return err
	}
	if c.Bool(flagJSON) {
		out := []migrationStatus{}
		for _, m := range all {
			out = append(out, migrationJSON(m, now))
		}
		return printJSON(c.App.Writer, out)
	}
	var b strings.Builder
	if len(all) == 0 {
		b.WriteString("no migrations\n")
	}
	for _, m := range all {
		b.WriteString(migrationSummary(m, now) + "\n")
	}
	_, err = io.WriteString(c.App.Writer, b.String())
	return err
}

// loadStoredMigration loads a stored migration; a missing one is an error
// that says how to list them.
func loadStoredMigration(env *rolloverEnv, name string) (*rollover.Migration, error) {
	if err := rollover.CheckMigrationName(name); err != nil {
		return nil, err
	}
	m, err := env.store.LoadMigration(name)
	if errors.Is(err, rollover.ErrNoMigration) {
		return nil, fmt.Errorf("no migration %s is stored in %s (tlsactl migration status lists them; tlsactl migration start FILE stores one)", name, env.store.where)
	}
	return m, err
}

// migrationSummary is one line: name, status, hosts per phase, failures,
// deadline and next action.
func migrationSummary(m *rollover.Migration, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s, %d hosts (%s), failures %d/%d", m.Spec.Name, m.Status, len(m.Hosts), phaseCounts(m), m.Failures, m.Spec.MaxFailures)
	if d := m.Spec.Deadline; !d.IsZero() {
		fmt.Fprintf(&b, ", deadline %s (%s)", fmtTime(d), untilText(d, now))
	}
	if nx := m.Next(); !nx.IsZero() {
		fmt.Fprintf(&b, ", next action %s", fmtTime(nx))
	}
	return b.String()
}

// phaseCounts lists the non-zero phase counts in phase order.
func phaseCounts(m *rollover.Migration) string {
	counts := m.Counts()
	var parts []string
	for _, ph := range rollover.Phases {
		if n := counts[ph]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, ph))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// historyShown is how many of the latest history events status prints.
const historyShown = 10

// formatMigration renders one migration for status.
func formatMigration(m *rollover.Migration, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "migration %s: %s", m.Spec.Name, m.Status)
	if m.Spec.File != "" {
		fmt.Fprintf(&b, " (from %s)", m.Spec.File)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  hosts       %d: %s\n", len(m.Hosts), phaseCounts(m))
	fmt.Fprintf(&b, "  failures    %d of max_failures %d\n", m.Failures, m.Spec.MaxFailures)
	if d := m.Spec.Deadline; !d.IsZero() {
		fmt.Fprintf(&b, "  deadline    %s (%s; %d s)\n", fmtTime(d), untilText(d, now), int64(d.Sub(now).Seconds()))
	} else {
		b.WriteString("  deadline    none\n")
	}
	if !m.WaitUntil.IsZero() {
		fmt.Fprintf(&b, "  ttl wait    until %s\n", fmtTime(m.WaitUntil))
	}
	if nx := m.Next(); !nx.IsZero() {
		fmt.Fprintf(&b, "  next action %s (%s)\n", fmtTime(nx), untilText(nx, now))
	} else {
		switch m.Status {
		case rollover.MigrationPaused:
			fmt.Fprintf(&b, "  next action none until tlsactl migration resume %s\n", m.Spec.Name)
		case rollover.MigrationHalted:
			fmt.Fprintf(&b, "  next action none: fix the held hosts, then tlsactl migration resume %s\n", m.Spec.Name)
		}
	}
	fmt.Fprintf(&b, "%-32s %-20s %-20s %s\n", "HOST", "PHASE", "NEXT", "REASON")
	for _, h := range m.Hosts {
		host := bare(h.Host)
		if m.Spec.Canary != "" && h.Host == m.Spec.Canary {
			host += " (canary)"
		}
		fmt.Fprintf(&b, "%-32s %-20s %-20s %s\n", host, h.Phase, fmtTime(h.Next), oneLine(h.Reason))
	}
	if n := len(m.History); n > 0 {
		from := max(0, n-historyShown)
		fmt.Fprintf(&b, "history (%d of %d events; --json shows all):\n", n-from, n)
		for _, e := range m.History[from:] {
			who := e.Host
			if who == "" {
				who = "-"
			}
			fmt.Fprintf(&b, "  %s %-24s %-20s %s\n", fmtTime(e.At), who, e.What, oneLine(e.Detail))
		}
	}
	return b.String()
}

func runMigrationPause(c *cli.Context) error {
	return migrationUpdate(c, "paused", (*rollover.Fleet).Pause)
}

func runMigrationResume(c *cli.Context) error {
	return migrationUpdate(c, "resumed", (*rollover.Fleet).Resume)
}

func migrationUpdate(c *cli.Context, verb string, fn func(*rollover.Fleet, context.Context, string) (*rollover.Migration, error)) error {
	env, stored, err := storedMigrationInput(c)
	if err != nil {
		return err
	}
	m, err := fn(env.fleet(), c.Context, stored.Spec.Name)
	if err != nil {
		return &exitError{code: exitRolloverError, err: err}
	}
	fmt.Fprintf(c.App.Writer, "%s migration %s\n", verb, migrationSummary(m, time.Now()))
	return nil
}

// abortPlan splits a migration's hosts as Abort will treat them: rolled
// back (not deployed), finished (deployed), and those left as they are
// (done or rolled back already).
func abortPlan(env *rolloverEnv, m *rollover.Migration) (back, finish, left []string) {
	for _, h := range m.Hosts {
		name := bare(h.Host)
		switch {
		case h.Phase == rollover.PhaseDone || h.Phase == rollover.PhaseRolledBack:
			left = append(left, name+" ("+string(h.Phase)+")")
			continue
		case h.Rollover.IsZero():
			back = append(back, name)
			continue
		}
		st, err := env.store.Load(h.Host)
		if err != nil {
			back = append(back, name)
			continue
		}
		deployAt := slices.Index(st.Plan.Steps(), rollover.StepDeploy)
		switch {
		case st.Status != rollover.StatusActive:
			left = append(left, name+" (rollover "+string(st.Status)+")")
		case st.Step <= deployAt:
			back = append(back, name)
		default:
			finish = append(finish, name)
		}
	}
	return back, finish, left
}

func runMigrationAbort(c *cli.Context) error {
	env, m, err := storedMigrationInput(c)
	if err != nil {
		return err
	}
	name := m.Spec.Name
	if c.Bool(flagDryRun) {
		if m.Final() {
			fmt.Fprintf(c.App.Writer, "migration %s is %s already: abort would do nothing\n", name, m.Status)
			return nil
		}
		back, finish, left := abortPlan(env, m)
		var b strings.Builder
		fmt.Fprintf(&b, "abort of migration %s (dry run; nothing changed):\n", name)
		fmt.Fprintf(&b, "  roll back %d (not deployed: the 2 1 1 records added for them are taken back): %s\n", len(back), listOrNone(back))
		fmt.Fprintf(&b, "  finish    %d (deployed: the 3 1 1 is replaced, the old CA's records retired): %s\n", len(finish), listOrNone(finish))
		if len(left) > 0 {
			fmt.Fprintf(&b, "  leave     %d: %s\n", len(left), strings.Join(left, ", "))
		}
		_, err := io.WriteString(c.App.Writer, b.String())
		return err
	}
	m2, err := env.fleet().Abort(c.Context, name)
	if m2 != nil {
		counts := m2.Counts()
		fmt.Fprintf(c.App.Writer, "migration %s: %s; %d rolled back, %d done\n", name, m2.Status, counts[rollover.PhaseRolledBack], counts[rollover.PhaseDone])
	}
	if err != nil {
		return &exitError{code: exitRolloverError, err: fmt.Errorf("abort of migration %s is not complete (it stays paused; run abort again): %w", name, err)}
	}
	return nil
}

func listOrNone(ss []string) string {
	if len(ss) == 0 {
		return "none"
	}
	return strings.Join(ss, ", ")
}

func bare(name string) string { return strings.TrimSuffix(name, ".") }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// fmtDur writes a duration for people: "47d19h", "3h5m", "42s".
func fmtDur(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	d = d.Round(time.Second)
	switch days := int64(d / (24 * time.Hour)); {
	case days > 0:
		return fmt.Sprintf("%dd%dh", days, int64(d%(24*time.Hour)/time.Hour))
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", int64(d/time.Hour), int64(d%time.Hour/time.Minute))
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", int64(d/time.Minute), int64(d%time.Minute/time.Second))
	}
	return fmt.Sprintf("%ds", int64(d/time.Second))
}

// untilText says "in 3h5m" or "4d2h ago".
func untilText(t, now time.Time) string {
	if t.Before(now) {
		return fmtDur(now.Sub(t)) + " ago"
	}
	return "in " + fmtDur(t.Sub(now))
}

// Certificate sources.

// dirSettle is how long a certificate and key pair that does not fit
// together may be mid-write before the directory source reports it.
const dirSettle = 2 * time.Minute

// dirSource takes each host's new certificate from <dir>/<host>.pem (the
// chain: leaf first, then the new CA) and <dir>/<host>.key, <host> without
// the trailing dot. A pair is taken only when both parse, the key is the
// leaf's, the leaf is valid for the host and the chain holds a certificate
// of the new issuer set: files still being written are left alone (nil),
// and reported only once they have not changed for dirSettle.
type dirSource struct {
	dir    string
	cas    []*x509.Certificate
	now    func() time.Time
	settle time.Duration
}

var _ rollover.CertSource = (*dirSource)(nil)

// Fetch returns the host's material, nil while there is none (or it is
// incomplete), or an error that needs the operator (a key file others can
// read, a pair that stays wrong).
func (d *dirSource) Fetch(_ context.Context, host string) (*rollover.Material, error) {
	name := strings.ToLower(bare(host))
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("host %q cannot name a file", host)
	}
	// Whoever can write the directory chooses what is deployed (within
	// what the new CA signed): as for keys, others may not.
	if st, err := os.Stat(d.dir); err != nil {
		return nil, fmt.Errorf("certificate directory: %w", err)
	} else if !st.IsDir() || st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("certificate directory %s (mode %04o) is not a directory only its owner can write: run chmod 700 %s", d.dir, st.Mode().Perm(), d.dir)
	}
	certPath, keyPath := filepath.Join(d.dir, name+".pem"), filepath.Join(d.dir, name+".key")
	var times []time.Time
	for _, p := range []string{certPath, keyPath} {
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, unwrapPathError(err))
		}
		times = append(times, st.ModTime())
	}
	key, err := safefile.ReadPrivate(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	chain, err := readInput(certPath, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if problem := d.check(name, chain, key); problem != "" {
		newest := slices.MaxFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		if d.now().Sub(newest) < d.settle {
			return nil, nil // perhaps still being written
		}
		return nil, fmt.Errorf("%s and %s: %s", certPath, keyPath, problem)
	}
	return &rollover.Material{ChainPEM: chain, KeyPEM: key}, nil
}

// check says what is wrong with a chain and key pair for host ("" when
// nothing).
func (d *dirSource) check(host string, chainPEM, keyPEM []byte) string {
	ms, err := tlsa.ParseMaterial("chain", chainPEM)
	if err != nil {
		return "the chain does not parse: " + oneLine(err.Error())
	}
	certs := tlsa.Certificates(ms)
	if len(certs) == 0 || len(certs) != len(ms) {
		return "the .pem file must hold the certificate chain only (leaf first, then the new CA)"
	}
	leaf := certs[0]
	if leaf.IsCA {
		return "the first certificate is a CA certificate: put the leaf first, then the new CA"
	}
	ks, err := tlsa.ParseMaterial("key", keyPEM)
	if err != nil {
		return "the key does not parse: " + oneLine(err.Error())
	}
	if len(ks) != 1 || ks[0].Kind != tlsa.KindPrivateKey {
		return "the .key file must hold the private key only"
	}
	if !bytes.Equal(ks[0].SPKI, leaf.RawSubjectPublicKeyInfo) {
		return "the key does not belong to the certificate (a different public key): write the pair again"
	}
	if err := leaf.VerifyHostname(host); err != nil {
		return fmt.Sprintf("the certificate (names %s) is not valid for %s", strings.Join(leaf.DNSNames, " "), host)
	}
	now := d.now()
	if now.After(leaf.NotAfter) {
		return "the certificate expired " + fmtTime(leaf.NotAfter)
	}
	// The new CA's certificate must be sent (NCSC: the whole chain up to
	// the CA the 2 1 1 names), and the leaf must verify up to it.
	inChain := false
	for _, c := range certs[1:] {
		for _, ca := range d.cas {
			inChain = inChain || bytes.Equal(c.RawSubjectPublicKeyInfo, ca.RawSubjectPublicKeyInfo)
		}
	}
	if !inChain {
		return "the chain does not include a certificate of the migration's new CA set (new_ca): append the issuing CA certificate after the leaf"
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, ca := range d.cas {
		roots.AddCert(ca)
	}
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return "the certificate does not verify up to the new CA set: " + oneLine(err.Error())
	}
	return ""
}
