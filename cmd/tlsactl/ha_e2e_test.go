//go:build !nopostgres

package main

// End-to-end test of two runners sharing one PostgreSQL state (issue 13):
// two `tlsactl migration run --wait` processes on the fleet test bed of
// migration_e2e_test.go (ten hosts mx01…mx10 in one signed Knot zone, each a
// Go STARTTLS server on its own loopback address, the senders' Unbound, a
// probe per host through it every 250 ms) and one PostgreSQL server with TLS
// (sslmode=verify-full). Each runner reaches the database through its own
// loopback TCP proxy, so the test can cut one runner off the network. The
// ledgers a check timer seeded in a state directory go into the database
// with `tlsactl state migrate`; then five migrations to new CAs run on the
// one bed, each with both runners (state_lease 4 s):
//
//  1. both started at once: every host done, each step's events once, each
//     naming the runner that did it;
//  2. the runner deploying mx03 (its reload held at a gate) is SIGKILLed:
//     the other takes over once the lease expires (measured: SIGKILL → its
//     first event on mx03) and finishes;
//  3. PostgreSQL is restarted while hosts deploy: the migration finishes,
//     no host held;
//  4. the runner deploying mx05 is cut off (its proxy closed and its
//     sessions killed with pg_terminate_backend): it stops acting within
//     the lease, says so, and the other finishes;
//  5. the runner deploying mx07 is SIGSTOPped past its lease, the other
//     takes over and deploys, then SIGCONT: the stale runner's write is
//     refused (ErrLeaseLost in its log) and mx07's history holds only the
//     newer runner's steps.
//
// At the end the database is copied back into a directory (`state migrate`,
// verified) and a second copy into it is refused. The DANE probes never
// fail. TLSACTL_HA_REPORT=FILE writes the measured take-over time there.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
)

const (
	haHosts    = 10
	haLease    = 4 * time.Second // state_lease of both runners
	haTTL      = 2               // TTL of the records the migrations publish
	haParallel = 4
)

// haRunnerNames are the two runners' names (config `runner`).
var haRunnerNames = []string{"runner-a", "runner-b"}

// haBed is the fleet bed plus the database, the runners' configurations
// and proxies, and the test's own reader of the shared state.
type haBed struct {
	*fleetBed
	pg      *testbed.Postgres
	dsn     string // direct, for the test and `state migrate`
	pwFile  string
	keyFile string
	gates   string // directory of the reload gates
	cfg     map[string]string
	proxy   map[string]*haProxy
	obs     *rollover.PGStore
	serial  int
	runners []*haRunner
	diag    sync.Once
}

func newHABed(t *testing.T) *haBed {
	t.Helper()
	testbed.RequirePostgres(t)
	f := newFleetBed(t, fleetOpts{hosts: haHosts, sample: []int{1, 6}, timeout: 4 * time.Minute})
	b := &haBed{fleetBed: f, gates: t.TempDir(), cfg: map[string]string{}, proxy: map[string]*haProxy{}}
	b.pg = testbed.StartPostgres(t, testbed.PostgresOptions{TLS: true})
	b.dsn = b.pg.CreateDB(t)
	b.pwFile = b.pg.PasswordFile(t)
	b.keyFile = filepath.Join(t.TempDir(), "state.key")
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	roWrite(t, b.keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres log:\n%s", roTail(b.pg.Log(), 3000))
		}
	})
	for _, r := range haRunnerNames {
		b.proxy[r] = newHAProxy(t, net.JoinHostPort(b.pg.Host, strconv.Itoa(b.pg.Port)))
		b.cfg[r] = b.writeConfig(r)
	}
	obs, err := rollover.OpenPG(f.sf.ctx, rollover.PGOptions{DSN: b.dsn, PasswordFile: b.pwFile, KeyFile: b.keyFile, Runner: "observer", Lease: haLease})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(obs.Close)
	b.obs = obs
	return b
}

// writeConfig writes runner's configuration: the bed's hosts with their
// reload commands behind a gate (haBed.gate), the state in the database
// through the runner's proxy.
func (b *haBed) writeConfig(runner string) string {
	t := b.t
	var hosts []e2eHost
	for _, h := range b.hosts {
		gate := filepath.Join(b.gates, strings.Split(h.name, ".")[0])
		reload := append([]string{"bash", "-c",
			`g=$0; if [ -e "$g" ] && mkdir "$g.waiting" 2>/dev/null; then while [ -e "$g" ]; do sleep 0.05; done; fi; exec "$@"`, gate}, h.reload...)
		hosts = append(hosts, e2eHost{
			name: h.name, port: 25, zone: h.zone, ttl: haTTL, auth: []string{b.sf.knot.Addr}, authPort: b.sf.knotPort,
			keyFile: h.keyPath, chainFile: h.chainPath, reload: reload, probeTimeout: "30s",
		})
	}
	text := e2eConfig(b.sf.own.Addr, "", flMargin.String(), b.sf.knot.Addr, b.sf.keyFile, hosts...)
	dsn := strings.Replace(b.dsn, net.JoinHostPort(b.pg.Host, strconv.Itoa(b.pg.Port)), b.proxy[runner].addr(), 1)
	state := fmt.Sprintf("state = %q\nstate_password_file = %q\nstate_key_file = %q\nstate_lease = %q\nrunner = %q\nstate_dir = %q\n",
		dsn, b.pwFile, b.keyFile, haLease.String(), runner, filepath.Join(b.dir, runner))
	text = strings.Replace(text, "state_dir = \"\"\n", state, 1)
	p := filepath.Join(b.dir, runner+".toml")
	roWrite(t, p, []byte(text), 0o600)
	return p
}

// gate makes host's next reload wait until ungate (the deploy of host
// hangs in its reload command); later reloads (a rollback's, another
// runner's) pass. It returns the directory that appears while the first
// reload waits.
func (b *haBed) gate(h *fleetHost) string {
	p := filepath.Join(b.gates, strings.Split(h.name, ".")[0])
	roWrite(b.t, p, nil, 0o600)
	return p + ".waiting"
}

func (b *haBed) ungate(h *fleetHost) {
	p := filepath.Join(b.gates, strings.Split(h.name, ".")[0])
	if err := os.Remove(p); err != nil {
		b.t.Fatal(err)
	}
	if err := os.Remove(p + ".waiting"); err != nil && !errors.Is(err, os.ErrNotExist) {
		b.t.Fatal(err)
	}
}

// haRunner is one `tlsactl migration run --wait` process.
type haRunner struct {
	name        string
	cmd         *exec.Cmd
	out, errOut lockedBuffer
	done        chan struct{}
	state       *os.ProcessState
	start       time.Time
}

// run starts runner on migration name, in its own process group (so that
// a kill takes its reload commands too, as systemd's would).
func (b *haBed) run(runner, name string) *haRunner {
	t := b.t
	t.Helper()
	r := &haRunner{name: runner, done: make(chan struct{}), start: time.Now()}
	r.cmd = exec.Command(b.sf.bin, "migration", "run", "--config", b.cfg[runner], "--wait", "--timeout", "100s", name)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TLSACTL_") && !strings.HasPrefix(kv, "PG") {
			r.cmd.Env = append(r.cmd.Env, kv)
		}
	}
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.errOut
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = r.cmd.Wait()
		r.state = r.cmd.ProcessState
		close(r.done)
	}()
	b.runners = append(b.runners, r)
	t.Cleanup(func() {
		b.diag.Do(b.diagnose) // before the first runner is killed
		select {
		case <-r.done:
		default:
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGCONT)
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-r.done
		}
	})
	return r
}

// diagnose logs, when the test failed, the sessions of the database and
// the output of every runner not waited for.
func (b *haBed) diagnose() {
	t := b.t
	if !t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pw, _ := os.ReadFile(b.pwFile)
	cfg, err := pgx.ParseConfig(b.dsn)
	if err == nil {
		cfg.Password = strings.TrimSpace(string(pw))
		var conn *pgx.Conn
		if conn, err = pgx.ConnectConfig(ctx, cfg); err == nil {
			defer conn.Close(context.Background())
			var lines []string
			rows, qerr := conn.Query(ctx, `SELECT application_name, state, coalesce(wait_event_type, ''), coalesce(wait_event, ''),
				coalesce(xact_start::text, ''), left(query, 160) FROM pg_stat_activity WHERE datname = current_database() ORDER BY application_name`)
			for qerr == nil && rows.Next() {
				var a, st, wt, we, xs, q string
				if rows.Scan(&a, &st, &wt, &we, &xs, &q) == nil {
					lines = append(lines, fmt.Sprintf("%s %s wait=%s/%s xact=%s: %s", a, st, wt, we, xs, oneLine(q)))
				}
			}
			rows, qerr = conn.Query(ctx, `SELECT kind, name, holder, token, expires::text FROM leases ORDER BY kind, name`)
			for qerr == nil && rows.Next() {
				var k, n, h, e string
				var tok int64
				if rows.Scan(&k, &n, &h, &tok, &e) == nil {
					lines = append(lines, fmt.Sprintf("lease %s %s %s token %d expires %s", k, n, h, tok, e))
				}
			}
			t.Logf("database sessions and leases:\n  %s", strings.Join(lines, "\n  "))
		}
	}
	if err != nil {
		t.Logf("database sessions: %v", err)
	}
	for _, r := range b.runners {
		select {
		case <-r.done:
		default:
			t.Logf("%s (running) stdout:\n%s\nstderr:\n%s", r.name, roTail(r.out.String(), 3000), roTail(r.errOut.String(), 3000))
		}
	}
}

// signal sends sig to the runner's process group.
func (r *haRunner) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-r.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("%s: kill -%d: %v", r.name, sig, err)
	}
}

// wait waits for the runner's exit and logs its output.
func (r *haRunner) wait(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-r.done:
	case <-ctx.Done():
		r.signal(t, syscall.SIGKILL)
		<-r.done
		t.Errorf("%s did not finish in time", r.name)
	}
	t.Logf("%s: migration run --wait → %s after %s\nstdout:\n%s\nstderr:\n%s", r.name, r.state, time.Since(r.start).Round(time.Millisecond),
		roTail(r.out.String(), 4000), roTail(r.errOut.String(), 4000))
}

func (r *haRunner) exitedOK() bool { return r.state != nil && r.state.Success() }

// waitFor is the package's waitFor on the bed's context.
func (b *haBed) waitFor(what string, d time.Duration, cond func() bool) time.Time {
	b.t.Helper()
	return waitFor(b.t, b.sf.ctx, what, d, cond)
}

// history is host's rollover history in the database (nil while it
// cannot be read).
func (b *haBed) history(h *fleetHost) []rollover.Event {
	st, err := b.obs.Load(h.name)
	if err != nil {
		return nil
	}
	return st.History
}

// lastEvent is the latest event of host with what, or a zero Event.
func (b *haBed) lastEvent(h *fleetHost, what string, since time.Time) rollover.Event {
	hist := b.history(h)
	for i := len(hist) - 1; i >= 0; i-- {
		if e := hist[i]; e.What == what && !e.At.Before(since) {
			return e
		}
	}
	return rollover.Event{}
}

// firstBy is the first event of host written by runner after since.
func (b *haBed) firstBy(h *fleetHost, runner string, since time.Time) (rollover.Event, bool) {
	for _, e := range b.history(h) {
		if e.Runner == runner && e.At.After(since) {
			return e, true
		}
	}
	return rollover.Event{}, false
}

// startMigration gives every host a chain from a new CA, drops them into
// the dir source and stores migration ha-N; it returns its name.
func (b *haBed) startMigration() string {
	t := b.t
	t.Helper()
	b.serial++
	name := fmt.Sprintf("ha-%d", b.serial)
	ca := b.newChains()
	caFile := filepath.Join(b.dir, name+"-ca.pem")
	roWrite(t, caFile, ca.Intermediate.PEM, 0o644)
	for _, h := range b.hosts {
		b.drop(h)
		h.expectNew(h.next)
	}
	file := filepath.Join(b.dir, name+".toml")
	roWrite(t, file, []byte(dirMigrationTOML(name, `"mx*.fleet1.test"`, filepath.Base(caFile), haParallel, haTTL)), 0o644)
	b.mustCLI("migration", "start", "--config", b.cfg[haRunnerNames[0]], file)
	return name
}

// haCheck is what checkMigration allows beyond "every step once".
type haCheck struct {
	// victim is the runner stopped mid-step: a host whose deploy it
	// began ("deploying") and did not record as done ("deployed") may show
	// "deploying" twice (the interrupted one and the one that resumed
	// it) or no "deployed" at all (the other runner found the new chain
	// served and went on).
	victim string
	// relaxed allows every intent event ("publishing", "deploying") twice
	// on every host and treats every runner as victim: the database went
	// away under some step.
	relaxed bool
}

// interrupted reports whether, in hist since since, a deploy begun by
// victim ("" : anyone) was not recorded done by the same runner.
func interrupted(hist []rollover.Event, victim string, since time.Time) bool {
	open := map[string]bool{}
	for _, e := range hist {
		if e.At.Before(since) || e.Step != rollover.StepDeploy {
			continue
		}
		switch e.What {
		case "deploying":
			open[e.Runner] = true
		case "deployed":
			open[e.Runner] = false
		}
	}
	for r, o := range open {
		if o && (victim == "" || r == victim) {
			return true
		}
	}
	return false
}

// checkMigration asserts that migration name is done: every host done,
// serving its new chain, with exactly its new records at Knot; in each
// host's history since since every event names one of the runners, and
// each step's actions are there once. It returns the events per runner.
func (b *haBed) checkMigration(name string, since time.Time, c haCheck) map[string]int {
	t := b.t
	t.Helper()
	perRunner := map[string]int{}
	m, err := b.obs.LoadMigration(name)
	if err != nil {
		t.Fatalf("migration %s: %v", name, err)
	}
	if m.Status != rollover.MigrationDone {
		t.Errorf("migration %s is %s, want done", name, m.Status)
	}
	for _, hp := range m.Hosts {
		if hp.Phase != rollover.PhaseDone || hp.Failed {
			t.Errorf("migration %s: %s is %s (failed %v): %s", name, hp.Host, hp.Phase, hp.Failed, hp.Reason)
		}
	}
	for _, h := range b.hosts {
		st, err := b.obs.Load(h.name)
		if err != nil {
			t.Errorf("%s: %v", h.name, err)
			continue
		}
		if st.Status != rollover.StatusDone {
			t.Errorf("%s: rollover %s at %s (%s)", h.name, st.Status, st.CurrentStep(), st.LastError)
		}
		count := map[string]int{}
		cutShort := map[string]bool{} // steps the victim began and ended with an error (it was cut off)
		var line []string
		for _, e := range st.History {
			if e.At.Before(since) {
				continue
			}
			if c.victim != "" && e.Runner == c.victim && e.What == "error" {
				cutShort[string(e.Step)] = true
			}
			if !slices.Contains(haRunnerNames, e.Runner) {
				t.Errorf("%s: event %s/%s at %s names runner %q, want one of %v", h.name, e.Step, e.What, sfClock(e.At), e.Runner, haRunnerNames)
			}
			perRunner[e.Runner]++
			if e.What != "observed" && e.What != "waiting" && (e.What != "error" || !c.relaxed) {
				count[string(e.Step)+"/"+e.What]++
				line = append(line, fmt.Sprintf("%s/%s@%s:%s", e.Step, e.What, e.At.Local().Format("05.000"), strings.TrimPrefix(e.Runner, "runner-")))
			}
		}
		redo := (c.victim != "" || c.relaxed) && interrupted(st.History, map[bool]string{true: "", false: c.victim}[c.relaxed], since)
		for k, n := range count {
			allowed := 1
			step, _, _ := strings.Cut(k, "/")
			if (strings.HasSuffix(k, "/publishing") && (c.relaxed || cutShort[step])) || (strings.HasSuffix(k, "/deploying") && redo) {
				allowed = 2
			}
			if n > allowed {
				t.Errorf("%s: %s %d times in migration %s (want at most %d): %s", h.name, k, n, name, allowed, strings.Join(line, " "))
			}
		}
		deploying, deployed := string(rollover.StepDeploy)+"/deploying", string(rollover.StepDeploy)+"/deployed"
		if count[deploying] == 0 || (count[deployed] == 0 && !redo) {
			t.Errorf("%s: %d %s and %d %s in migration %s: %s", h.name, count[deploying], deploying, count[deployed], deployed, name, strings.Join(line, " "))
		}
		h.checkServes(h.name+" after "+name, h.next)
		if got, want := h.knotAt(h.owner, dns.TypeTLSA), roPair(h.next); !slices.Equal(got, want) {
			t.Errorf("%s after %s: Knot serves %v, want %v", h.name, name, got, want)
		}
		if !h.holds(h.next) {
			t.Errorf("%s after %s: the deploy files do not hold the new key and chain", h.name, name)
		}
		h.cur = h.next
	}
	return perRunner
}

// TestHATwoRunnersE2E: see the top of this file.
func TestHATwoRunnersE2E(t *testing.T) {
	t.Parallel()
	b := newHABed(t)
	ctx := b.sf.ctx
	var start time.Time
	defer func() { b.report(&start) }()
	a, bb := haRunnerNames[0], haRunnerNames[1]
	leaseLost := rollover.ErrLeaseLost.Error()

	// The ledgers the check timer wrote into the state directory go into
	// the database.
	r := b.mustCLI("state", "migrate", "--config", b.cfg[a], "--json", "--from", b.stateDir, "--to", b.dsn)
	var mig stateMigrateJSON
	if err := json.Unmarshal([]byte(r.out), &mig); err != nil || !mig.Verified || mig.Copied.Ledgers != haHosts || mig.Copied.States != 0 {
		t.Fatalf("state migrate into the database: %v %+v\n%s", err, mig, r.out)
	}

	// 1. Two runners started at once.
	start = time.Now()
	t0 := time.Now()
	name := b.startMigration()
	ra, rb := b.run(a, name), b.run(bb, name)
	ra.wait(t, ctx)
	rb.wait(t, ctx)
	if !ra.exitedOK() || !rb.exitedOK() {
		t.Errorf("scenario 1: exits %s, %s; want both 0", ra.state, rb.state)
	}
	per := b.checkMigration(name, t0, haCheck{})
	t.Logf("scenario 1 (%s, two runners at once): %s; events per runner %v", name, time.Since(t0).Round(time.Millisecond), per)
	b.fingerSample("after scenario 1")

	// 2. SIGKILL of the runner deploying mx03.
	t0 = time.Now()
	h3 := b.host(3)
	waiting := b.gate(h3)
	name = b.startMigration()
	runners := map[string]*haRunner{a: b.run(a, name), bb: b.run(bb, name)}
	b.waitFor("mx03's deploy waits in its reload", time.Minute, func() bool { _, err := os.Stat(waiting); return err == nil })
	victim := b.lastEvent(h3, "deploying", t0).Runner
	other := map[string]string{a: bb, bb: a}[victim]
	if victim == "" {
		t.Fatalf("mx03 waits in its reload, but its history has no deploying event since %s", sfClock(t0))
	}
	killed := time.Now()
	runners[victim].signal(t, syscall.SIGKILL)
	<-runners[victim].done
	b.ungate(h3)
	var took rollover.Event
	b.waitFor("the other runner's first event on mx03", 30*time.Second, func() bool {
		e, ok := b.firstBy(h3, other, killed)
		took = e
		return ok
	})
	takeover := took.At.Sub(killed)
	t.Logf("TAKEOVER after SIGKILL of %s (deploying mx03): %s's first event on mx03 (%s/%s) %s later (state_lease %s)",
		victim, other, took.Step, took.What, takeover.Round(time.Millisecond), haLease)
	if p := os.Getenv("TLSACTL_HA_REPORT"); p != "" {
		roWrite(t, p, []byte(fmt.Sprintf("takeover_after_sigkill_s=%.3f lease_s=%.0f\n", takeover.Seconds(), haLease.Seconds())), 0o644)
	}
	if takeover > haLease+3*time.Second {
		t.Errorf("take-over after SIGKILL took %s, more than the lease %s + 3 s", takeover, haLease)
	}
	runners[other].wait(t, ctx)
	if !runners[other].exitedOK() {
		t.Errorf("scenario 2: %s exited %s, want 0", other, runners[other].state)
	}
	per = b.checkMigration(name, t0, haCheck{victim: victim})
	if e := b.lastEvent(h3, "deployed", t0); e.Runner != other {
		t.Errorf("mx03 deployed by %q, want %s (the survivor)", e.Runner, other)
	}
	t.Logf("scenario 2 (%s, SIGKILL of %s): %s; events per runner %v", name, victim, time.Since(t0).Round(time.Millisecond), per)

	// 3. PostgreSQL restarted while hosts deploy.
	t0 = time.Now()
	name = b.startMigration()
	runners = map[string]*haRunner{a: b.run(a, name), bb: b.run(bb, name)}
	b.waitFor("a host deploying", time.Minute, func() bool {
		for _, h := range b.hosts {
			if b.lastEvent(h, "deploying", t0).Runner != "" {
				return true
			}
		}
		return false
	})
	restartAt := time.Now()
	b.pg.Restart(t)
	t.Logf("%s PostgreSQL restarted in %s", sfClock(time.Now()), time.Since(restartAt).Round(time.Millisecond))
	for _, r := range runners {
		r.wait(t, ctx)
		if !r.exitedOK() {
			t.Errorf("scenario 3: %s exited %s, want 0", r.name, r.state)
		}
	}
	per = b.checkMigration(name, t0, haCheck{relaxed: true})
	t.Logf("scenario 3 (%s, database restart): %s; events per runner %v", name, time.Since(t0).Round(time.Millisecond), per)
	b.fingerSample("after the database restart")

	// 4. The runner deploying mx05 cut off from the database.
	t0 = time.Now()
	h5 := b.host(5)
	waiting = b.gate(h5)
	name = b.startMigration()
	runners = map[string]*haRunner{a: b.run(a, name), bb: b.run(bb, name)}
	b.waitFor("mx05's deploy waits in its reload", time.Minute, func() bool { _, err := os.Stat(waiting); return err == nil })
	victim = b.lastEvent(h5, "deploying", t0).Runner
	other = map[string]string{a: bb, bb: a}[victim]
	cut := time.Now()
	b.proxy[victim].refuse()
	n := b.pg.TerminateBackends(t, "tlsactl:"+victim)
	b.proxy[victim].setCut(true)
	t.Logf("%s cut %s off: its proxy refuses connections, %d backend(s) terminated", sfClock(cut), victim, n)
	if n == 0 {
		t.Errorf("no backend of %s to terminate", victim)
	}
	// Its pass ends with the lost lease or, when a write fails before the
	// renewer declares the lease lost, with the unreachable store; either
	// way the pass (and every deploy slot in it) has returned.
	stopped := b.waitFor(victim+" ends its pass (lost lease or unreachable store)", haLease+10*time.Second, func() bool {
		e := runners[victim].errOut.String()
		return strings.Contains(e, leaseLost) || strings.Contains(e, rollover.ErrStoreUnavailable.Error())
	})
	b.ungate(h5)
	b.waitFor("the other runner's first event on mx05", 30*time.Second, func() bool {
		e, ok := b.firstBy(h5, other, cut)
		took = e
		return ok
	})
	t.Logf("scenario 4: %s ended its pass %s after the cut; %s's first event on mx05 %s after it",
		victim, stopped.Sub(cut).Round(time.Millisecond), other, took.At.Sub(cut).Round(time.Millisecond))
	// Nothing written by the cut-off runner after its lease ran out,
	// until the other took over.
	for _, h := range b.hosts {
		for _, e := range b.history(h) {
			if e.Runner == victim && e.At.After(cut.Add(haLease)) && e.At.Before(took.At) {
				t.Errorf("%s: %s wrote %s/%s at %s, after the cut at %s + the lease", h.name, victim, e.Step, e.What, sfClock(e.At), sfClock(cut))
			}
		}
	}
	b.proxy[victim].setCut(false) // back on the network: it goes on as a standby
	for _, r := range runners {
		r.wait(t, ctx)
		if !r.exitedOK() {
			t.Errorf("scenario 4: %s exited %s, want 0", r.name, r.state)
		}
	}
	per = b.checkMigration(name, t0, haCheck{victim: victim})
	t.Logf("scenario 4 (%s, %s cut off): %s; events per runner %v", name, victim, time.Since(t0).Round(time.Millisecond), per)

	// 5. A stale runner: SIGSTOP past the lease, SIGCONT after the other
	// took over.
	t0 = time.Now()
	h7 := b.host(7)
	waiting = b.gate(h7)
	name = b.startMigration()
	runners = map[string]*haRunner{a: b.run(a, name), bb: b.run(bb, name)}
	b.waitFor("mx07's deploy waits in its reload", time.Minute, func() bool { _, err := os.Stat(waiting); return err == nil })
	victim = b.lastEvent(h7, "deploying", t0).Runner
	other = map[string]string{a: bb, bb: a}[victim]
	stoppedAt := time.Now()
	runners[victim].signal(t, syscall.SIGSTOP)
	b.ungate(h7)
	b.waitFor("the other runner takes mx07 past its deploy", 30*time.Second, func() bool {
		st, err := b.obs.Load(h7.name)
		_, by := b.firstBy(h7, other, stoppedAt)
		return err == nil && by && st.CurrentStep() != rollover.StepDeploy
	})
	contAt := time.Now()
	runners[victim].signal(t, syscall.SIGCONT)
	refused := b.waitFor(victim+" has its write refused", 10*time.Second, func() bool {
		return strings.Contains(runners[victim].errOut.String(), leaseLost)
	})
	t.Logf("scenario 5: %s stopped %s; refused after SIGCONT at %s", victim, contAt.Sub(stoppedAt).Round(time.Millisecond), sfClock(contAt))
	for _, r := range runners {
		r.wait(t, ctx)
		if !r.exitedOK() {
			t.Errorf("scenario 5: %s exited %s, want 0", r.name, r.state)
		}
	}
	// From the stop to the refusal only the newer runner's steps are
	// stored (later, the stale runner may take a lease again as any
	// standby would).
	for _, e := range b.history(h7) {
		if e.At.After(stoppedAt) && !e.At.After(refused) && e.Runner != other {
			t.Errorf("mx07: %s/%s at %s by %q while %s was stale (stopped %s, refused %s): want only %s's steps",
				e.Step, e.What, sfClock(e.At), e.Runner, victim, sfClock(stoppedAt), sfClock(refused), other)
		}
	}
	per = b.checkMigration(name, t0, haCheck{victim: victim})
	t.Logf("scenario 5 (%s, stale %s): %s; events per runner %v", name, victim, time.Since(t0).Round(time.Millisecond), per)

	// The database back into a directory, verified; a second copy into
	// it is refused.
	back := filepath.Join(t.TempDir(), "back")
	r = b.mustCLI("state", "migrate", "--config", b.cfg[a], "--json", "--from", b.dsn, "--to", back)
	if err := json.Unmarshal([]byte(r.out), &mig); err != nil || !mig.Verified || mig.Copied.States != haHosts || mig.Copied.Migrations != b.serial || mig.Copied.Ledgers != haHosts {
		t.Errorf("state migrate back: %v %+v", err, mig)
	}
	if r = b.cli("state", "migrate", "--config", b.cfg[a], "--from", b.dsn, "--to", back); r.code != exitStateFailed || !strings.Contains(r.errOut, "not empty") {
		t.Errorf("a second state migrate into %s: exit %d %s; want %d, not empty", back, r.code, r.errOut, exitStateFailed)
	}
	r = b.mustCLI("state", "status", "--config", b.cfg[a])
	t.Logf("state status:\n%s", r.out)
}

// report stops the probes and fails on any probe failure.
func (b *haBed) report(start *time.Time) {
	probes, fingers := b.fleetBed.report(start)
	total := 0
	for _, n := range probes {
		total += n
	}
	b.t.Logf("PROBES %d through the senders' resolver (%v), %d posttls-finger runs", total, probes, fingers)
}

// haProxy forwards TCP connections to the database; setCut(true) closes
// every connection and refuses new ones (a runner cut off the network).
type haProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func newHAProxy(t *testing.T, target string) *haProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &haProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	return p
}

func (p *haProxy) addr() string { return p.ln.Addr().String() }

func (p *haProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *haProxy) forward(c net.Conn) {
	p.mu.Lock()
	cut := p.cut
	p.mu.Unlock()
	if cut {
		c.Close()
		return
	}
	d, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		d.Close()
		return
	}
	p.conns[c], p.conns[d] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(d, c)
	go pipe(c, d)
	<-done
	c.Close()
	d.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, d)
	p.mu.Unlock()
}

// refuse turns new connections away, leaving those open as they are.
func (p *haProxy) refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
}

func (p *haProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}
