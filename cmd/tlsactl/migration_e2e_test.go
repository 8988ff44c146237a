package main

// End-to-end test of a scheduled CA migration of a fleet (issue 10) through
// the CLI: `tlsactl migration plan|start|run|status|abort` against real
// servers. Twenty MX hosts mx01…mx20 in two DNSSEC-signed zones on one Knot
// (RFC 2136 + TSIG: one UPDATE per zone for the whole issuer set), each on
// its own loopback address 127.25.R.n and port 25, with A + TLSA
// {2 1 1 old CA, 3 1 1 old leaf} at _25._tcp.<host> and TTL 5 s; eighteen
// are Go STARTTLS servers that read their key and chain files only on a
// reload (testbed.FileSMTPServer), two are real Postfix instances on one
// file holding key and chain (`postfix reload` is their deploy step); the
// migration takes the certificates from a dir source. tlsactl asks its own
// Unbound
// (cache ≤ 1 s); the senders' Unbound really caches every RRset for its
// TTL. For the whole test a probe per host resolves the TLSA RRset through
// the senders' Unbound every 250 ms and matches it against the chain the
// host serves (sfHost's probe, as in the safety tests), and posttls-finger
// verifies at every step change of every host, after every command and on
// a sample of hosts at each phase of the fleet. One host's reload command
// fails: it must end held, still serving its old chain with records that
// match it, while the other nineteen finish; `migration abort` then takes
// back its added record. Checked besides: the final RRsets, the fleet time
// against TTL + margin + ⌈20/4⌉ deploys + 5 s, max_parallel from the
// rollover histories, one UPDATE per zone (SOA serials and histories), no
// deploy before its host's new 2 1 1 aged.
//
// TestFleetMigrationBench (TLSACTL_BENCH=1, run by bench/migration.sh)
// runs the same fleet migration without the failing host, then on the same
// bed migrates the twenty hosts once more one after another with single
// ca-migrations (`rollover start` + `provide` + `run --wait`), and prints
// both times.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

const (
	flTTL      = 5 // TTL of every TLSA record, seconds
	flMargin   = time.Second
	flHosts    = 20
	flParallel = 4
	flName     = "e2e-fleet"
)

// flZones are the two zones of the fleet: mx01–mx10 in the first, mx11–mx20
// in the second.
var flZones = []string{"fleet1.test.", "fleet2.test."}

// fleetOpts is what a fleet test varies.
type fleetOpts struct {
	postfix []int // numbers of the hosts served by a real Postfix
	failing int   // number of the host whose reload command fails (0: none)
	late    []int // numbers of the hosts whose certificate arrives late
	sample  []int // hosts posttls-finger checks at each phase of the fleet
	timeout time.Duration
	hosts   int // how many hosts (0: flHosts); mx01–mx10 are in the first zone
}

// fleetHost is one MX host of the fleet: an sfHost (probe, posttls-finger,
// Knot and served-chain checks) plus what the fleet needs.
type fleetHost struct {
	*sfHost
	n      int    // 1…20
	zone   string // FQDN
	ip     string
	gosrv  *testbed.FileSMTPServer // nil for a Postfix host
	real   *testbed.Postfix        // nil for a Go host
	reload []string
	cur    *testbed.Chain // the chain it should serve (before and after a migration)
	next   *testbed.Chain // the chain a migration moves it to
}

// fleetBed is the shared world of a fleet test.
type fleetBed struct {
	t        *testing.T
	o        fleetOpts
	sf       *sfBed
	hosts    []*fleetHost
	stateDir string
	cfgPath  string
	dir      string // the migration file's directory
	incoming string // the dir source: <host>.pem and <host>.key
	migFile  string
	ca       *testbed.Chain // the CA every host's current chain is issued by
	store    *rollover.FileStore
}

// newFleetBed starts Knot with both zones, the two Unbounds, the servers of
// the twenty hosts on their addresses, publishes each host's initial RRset
// (one UPDATE per zone, as the zones' owner did long ago), seeds the
// ledgers as a check timer would have, writes the configuration and starts
// every host's probe.
func newFleetBed(t *testing.T, o fleetOpts) *fleetBed {
	t.Helper()
	roRequire(t)
	testbed.Require(t, "bash", "bash")
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	t.Cleanup(cancel)
	nHosts := cmp.Or(o.hosts, flHosts)
	ips, err := testbed.FleetAddrs(nHosts, 25)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleetBed{t: t, o: o, stateDir: t.TempDir(), dir: t.TempDir()}
	f.cfgPath = filepath.Join(f.dir, "tlsactl.toml")
	f.incoming = filepath.Join(f.dir, "incoming")
	f.migFile = filepath.Join(f.dir, "migration.toml")
	if err := os.Mkdir(f.incoming, 0o700); err != nil {
		t.Fatal(err)
	}

	recs := map[string][]string{}
	for i := 1; i <= nHosts; i++ {
		z := flZones[(i-1)/10]
		recs[z] = append(recs[z], fmt.Sprintf("mx%02d 60 IN A %s", i, ips[i-1]))
	}
	var zones []testbed.Zone
	for _, z := range flZones {
		zones = append(zones, testbed.Zone{Name: z, Signed: true, Records: recs[z]})
	}
	sf := startSfBed(t, ctx, zones)
	knot, own, senders := sf.knot, sf.own, sf.senders
	f.sf = sf
	store, err := rollover.NewFileStore(f.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	f.store = store

	f.ca = testbed.MustChain(t, testbed.ChainOptions{})
	falseBin, err := exec.LookPath("false")
	if err != nil {
		t.Fatal(err)
	}
	add := map[string][]dns.RR{}
	for i := 1; i <= nHosts; i++ {
		z := flZones[(i-1)/10]
		name := strings.TrimSuffix(fmt.Sprintf("mx%02d.%s", i, z), ".")
		dir := t.TempDir()
		h := &fleetHost{n: i, zone: z, ip: ips[i-1], sfHost: &sfHost{t: t, b: sf, name: name,
			keyPath: filepath.Join(dir, "key.pem"), chainPath: filepath.Join(dir, "fullchain.pem"),
			stateDir: f.stateDir, cfgPath: f.cfgPath}}
		h.cur = testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{name}, Reuse: f.ca})
		h.a = h.cur
		if slices.Contains(o.postfix, i) {
			// One file holding key and chain, replaced in one rename: an
			// smtpd starting while separate files are renamed can read
			// the old key with the new chain and refuse STARTTLS ("454
			// 4.7.0 TLS not available due to local problem", seen here
			// by posttls-finger), as internal/deploy documents.
			h.keyPath = filepath.Join(dir, "combined.pem")
			h.chainPath = h.keyPath
			roWrite(t, h.keyPath, append(append([]byte{}, h.cur.Leaf.KeyPEM...), h.cur.FullChainPEM()...), 0o600)
			h.real = testbed.NewPostfix(t, testbed.PostfixConfig{KeyPEM: h.cur.Leaf.KeyPEM, ChainPEM: h.cur.FullChainPEM(), Hostname: name,
				Extra: []string{"smtpd_tls_chain_files = " + h.keyPath}})
			if err := h.real.Listen(ctx, h.ip, 25); err != nil {
				t.Fatal(err)
			}
			h.pf = h.real
			h.reload = []string{sf.postfix, "-c", h.real.Dir, "reload"}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("postfix log of %s:\n%s", name, roTail(h.real.Log(), 3000))
				}
			})
		} else {
			roWrite(t, h.keyPath, h.cur.Leaf.KeyPEM, 0o600)
			roWrite(t, h.chainPath, h.cur.FullChainPEM(), 0o644)
			h.gosrv = testbed.NewFileSMTPServer(t, h.ip+":25", name, h.keyPath, h.chainPath)
			// sfHost reads only Addr and Port of its Postfix: the address
			// it probes and the port of the TLSA owner.
			h.pf = &testbed.Postfix{Addr: h.gosrv.Addr, Port: 25}
			h.reload = h.gosrv.ReloadCommand()
		}
		if i == o.failing {
			h.reload = []string{falseBin}
		}
		h.owner = fmt.Sprintf("_25._tcp.%s.", name)
		h.rrOwner = h.owner
		for _, r := range roPair(h.cur) {
			add[z] = append(add[z], h.rr(fmt.Sprintf("%s %d IN TLSA %s", h.owner, flTTL, r)))
		}
		f.hosts = append(f.hosts, h)
	}
	for _, z := range flZones {
		if len(add[z]) == 0 {
			continue
		}
		if err := knot.Update(ctx, z, add[z], nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range f.hosts {
		h.waitKnot("initial", roPair(h.cur))
		h.waitServes(h.cur)
		var rrs []dns.RR
		for _, rr := range add[h.zone] {
			if rr.Header().Name == h.owner {
				rrs = append(rrs, rr)
			}
		}
		(&roHost{t: t, b: &roBed{ctx: ctx}, stateDir: f.stateDir, owner: h.owner}).seedLedger(flTTL, rrs)
	}
	f.writeConfig()
	for _, h := range f.hosts {
		h.startProbe()
	}
	t.Logf("bed: Knot %s (zones %v), tlsactl's Unbound %s, senders' Unbound %s (port 53 on %s), hosts on %s…%s port 25 (Postfix: %v, failing reload: %d)",
		knot.Addr, flZones, own.Addr, senders.Addr, senders.Port53IP, ips[0], ips[len(ips)-1], o.postfix, o.failing)
	return f
}

func (f *fleetBed) host(n int) *fleetHost { return f.hosts[n-1] }

// holds reports whether the deploy files hold c's key and chain (separate
// files, or one holding key then chain).
func (h *fleetHost) holds(c *testbed.Chain) bool {
	k, err1 := os.ReadFile(h.keyPath)
	ch, err2 := os.ReadFile(h.chainPath)
	return err1 == nil && err2 == nil && bytes.Contains(k, c.Leaf.KeyPEM) && bytes.HasSuffix(ch, c.FullChainPEM())
}

func (f *fleetBed) writeConfig() {
	f.t.Helper()
	var hosts []e2eHost
	for _, h := range f.hosts {
		hosts = append(hosts, e2eHost{
			name: h.name, port: 25, zone: h.zone, ttl: flTTL, auth: []string{f.sf.knot.Addr}, authPort: f.sf.knotPort,
			keyFile: h.keyPath, chainFile: h.chainPath, reload: h.reload, probeTimeout: "30s",
		})
	}
	text := e2eConfig(f.sf.own.Addr, f.stateDir, flMargin.String(), f.sf.knot.Addr, f.sf.keyFile, hosts...)
	roWrite(f.t, f.cfgPath, []byte(text), 0o600)
}

// newChains gives every host a chain from one new CA (the same for all, as
// when a fleet changes CA) and returns the CA's chain.
func (f *fleetBed) newChains() *testbed.Chain {
	ca := testbed.MustChain(f.t, testbed.ChainOptions{})
	for _, h := range f.hosts {
		h.next = testbed.MustChain(f.t, testbed.ChainOptions{DNSNames: []string{h.name}, Reuse: ca})
	}
	return ca
}

// drop puts host's new certificate into the dir source: <host>.pem (leaf +
// new CA) and <host>.key, each written under a temporary name and renamed.
func (f *fleetBed) drop(h *fleetHost) {
	f.t.Helper()
	for _, x := range []struct {
		ext  string
		data []byte
		mode os.FileMode
	}{{".key", h.next.Leaf.KeyPEM, 0o600}, {".pem", h.next.FullChainPEM(), 0o644}} {
		p := filepath.Join(f.incoming, h.name+x.ext)
		roWrite(f.t, p+".tmp", x.data, x.mode)
		if err := os.Rename(p+".tmp", p); err != nil {
			f.t.Fatal(err)
		}
	}
}

// dirMigrationTOML is the migration file of the fleet tests: hosts (TOML
// strings), the new CA file, certificates from the "incoming" directory,
// no windows, at most two failures, the fleet's margin, a 1 s poll.
func dirMigrationTOML(name, hosts, caFile string, parallel, ttl int) string {
	return fmt.Sprintf(`name = %q
hosts = [%s]
new_ca = [%q]
windows = []
max_parallel = %d
max_failures = 2
ttl = %d
margin = %q
poll = "1s"

[source]
kind = "dir"
dir = "incoming"
`, name, hosts, caFile, parallel, ttl, flMargin.String())
}

// writeMigration writes the migration file and the new CA beside it.
func (f *fleetBed) writeMigration(ca *testbed.Chain) {
	f.t.Helper()
	roWrite(f.t, filepath.Join(f.dir, "newca.pem"), ca.Intermediate.PEM, 0o644)
	roWrite(f.t, f.migFile, []byte(dirMigrationTOML(flName, `"mx*.fleet1.test", "mx*.fleet2.test"`, "newca.pem", flParallel, flTTL)), 0o644)
}

// cli runs `tlsactl <args…>` with the built binary (through the first
// host's sfHost.run: logged, and posttls-finger of that host afterwards).
func (f *fleetBed) cli(args ...string) sfResult {
	f.t.Helper()
	return f.hosts[0].run(nil, args...)
}

func (f *fleetBed) mustCLI(args ...string) sfResult {
	f.t.Helper()
	r := f.cli(args...)
	if r.code != 0 {
		f.t.Fatalf("tlsactl %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.out, r.errOut)
	}
	return r
}

// migrationStatus is `tlsactl migration status NAME --json`.
func (f *fleetBed) migrationStatus() rollover.Migration {
	f.t.Helper()
	r := f.cli("migration", "status", "--config", f.cfgPath, "--json", flName)
	var m rollover.Migration
	if r.code != 0 || json.Unmarshal([]byte(r.out), &m) != nil {
		f.t.Fatalf("migration status --json: exit %d\n%s%s", r.code, roTail(r.out, 3000), r.errOut)
	}
	return m
}

// rolloverStates is `tlsactl rollover status --json` for every host, by
// host name (no trailing dot).
func (f *fleetBed) rolloverStates() map[string]roStatus {
	f.t.Helper()
	r := f.cli("rollover", "status", "--config", f.cfgPath, "--json")
	var all []roStatus
	if r.code != 0 || json.Unmarshal([]byte(r.out), &all) != nil {
		f.t.Fatalf("rollover status --json: exit %d\n%s%s", r.code, roTail(r.out, 3000), r.errOut)
	}
	out := map[string]roStatus{}
	for _, st := range all {
		out[strings.TrimSuffix(st.Host, ".")] = st
	}
	return out
}

// fingerSample runs posttls-finger on the sample hosts at once.
func (f *fleetBed) fingerSample(when string) {
	var wg sync.WaitGroup
	for _, n := range f.o.sample {
		wg.Go(func() { f.host(n).finger(when) })
	}
	wg.Wait()
	f.t.Logf("%s posttls-finger on the sample %v: %s", time.Now().Format("15:04:05.000"), f.o.sample, when)
}

// serials is the SOA serial Knot serves for each zone.
func (f *fleetBed) serials() map[string]uint32 {
	f.t.Helper()
	out := map[string]uint32{}
	for _, z := range flZones {
		s, err := f.sf.knot.Serial(f.sf.ctx, z)
		if err != nil {
			f.t.Fatal(err)
		}
		out[z] = s
	}
	return out
}

// report stops every host's probe and fails the test on any probe or
// posttls-finger failure (sfHost.report); it returns the probe counts.
func (f *fleetBed) report(start *time.Time) (probes map[string]int, fingers int) {
	probes = map[string]int{}
	var wg sync.WaitGroup
	for _, h := range f.hosts {
		wg.Go(func() { h.report(h.name, start) })
	}
	wg.Wait()
	for _, h := range f.hosts {
		h.probe.mu.Lock()
		probes[h.name] = h.probe.probes
		fingers += h.probe.fingers
		h.probe.mu.Unlock()
	}
	return probes, fingers
}

// fleetRun is what the fleet's run did, seen from outside.
type fleetRun struct {
	start, end  time.Time // `migration start` began; `migration run --wait` returned
	run         sfResult
	s0, sPub    map[string]uint32 // SOA serials before start, and once the issuer set was confirmed
	published   time.Time         // when the monitor saw wait_until set
	lateDropped map[string]time.Time
	firstDeploy time.Time
	phasesSeen  map[string][]rollover.HostPhase // per host, in order
}

// migrate runs the whole fleet migration to the hosts' next chains: plan,
// start, `run --wait` in the background while a monitor reads the stored
// migration every 100 ms (posttls-finger on the sample at each fleet phase,
// the late certificates dropped once their hosts wait for them, SOA
// serials once the issuer set is confirmed).
func (f *fleetBed) migrate(ca *testbed.Chain) fleetRun {
	t := f.t
	t.Helper()
	f.writeMigration(ca)
	for _, h := range f.hosts {
		if !slices.Contains(f.o.late, h.n) {
			f.drop(h)
		}
		h.expectNew(h.next)
	}
	fr := fleetRun{lateDropped: map[string]time.Time{}, phasesSeen: map[string][]rollover.HostPhase{}}

	// plan: a dry run that changes nothing.
	r := f.mustCLI("migration", "plan", "--config", f.cfgPath, "--json", f.migFile)
	var plan rollover.MigrationPlan
	if err := json.Unmarshal([]byte(r.out), &plan); err != nil {
		t.Fatalf("migration plan --json: %v\n%s", err, r.out)
	}
	newTA := roRec(ca.Intermediate, tlsa.DANETA)
	if len(plan.Hosts) != flHosts {
		t.Errorf("plan has %d hosts, want %d", len(plan.Hosts), flHosts)
	}
	for _, ph := range plan.Hosts {
		if !slices.Contains(ph.Publish, newTA) || ph.Error != "" {
			t.Errorf("plan for %s: publish %v (want the new CA's %s…), error %q", ph.Host, ph.Publish, newTA[:16], ph.Error)
		}
	}
	if plan.Batches != len(flZones) {
		t.Errorf("plan: %d publish batches, want %d (one per zone)", plan.Batches, len(flZones))
	}
	t.Logf("plan: start %s, wait until %s (max TTL %d), finish %s, %d batches", sfClock(plan.Start), sfClock(plan.WaitUntil), plan.MaxTTL,
		sfClock(plan.Finish), plan.Batches)
	for _, h := range f.hosts {
		h.waitKnot("after plan", roPair(h.cur))
	}
	f.fingerSample("before start")

	fr.s0 = f.serials()
	fr.start = time.Now()
	f.mustCLI("migration", "start", "--config", f.cfgPath, f.migFile)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fr.run = f.cli("migration", "run", "--config", f.cfgPath, "--wait", "--timeout", "3m", flName)
	}()

	// The monitor.
	var phaseFingers sync.WaitGroup
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	sawDeploy := false
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-tick.C:
		case <-f.sf.ctx.Done():
			t.Fatal("the fleet migration did not finish in time")
		}
		m, err := f.store.LoadMigration(flName)
		if err != nil {
			continue // not started yet, or being written
		}
		for _, hp := range m.Hosts {
			name := strings.TrimSuffix(hp.Host, ".")
			seen := fr.phasesSeen[name]
			if len(seen) == 0 || seen[len(seen)-1] != hp.Phase {
				fr.phasesSeen[name] = append(seen, hp.Phase)
			}
			if hp.Phase == rollover.PhaseWaitCert {
				for _, n := range f.o.late {
					if h := f.host(n); h.name == name && fr.lateDropped[name].IsZero() {
						f.drop(h)
						fr.lateDropped[name] = time.Now()
						t.Logf("%s %s waits for its certificate: dropped into %s", time.Now().Format("15:04:05.000"), name, f.incoming)
					}
				}
			}
			if hp.Phase == rollover.PhaseDeploying && !sawDeploy {
				sawDeploy = true
				fr.firstDeploy = time.Now()
				phaseFingers.Go(func() { f.fingerSample("during the first deploys") })
			}
		}
		if !m.WaitUntil.IsZero() && fr.sPub == nil {
			fr.published = time.Now()
			fr.sPub = f.serials()
			t.Logf("%s issuer set confirmed; fleet TTL wait until %s; SOA serials %v → %v", fr.published.Format("15:04:05.000"),
				sfClock(m.WaitUntil), fr.s0, fr.sPub)
			for _, h := range f.hosts {
				if got := h.knotAt(h.owner, dns.TypeTLSA); !slices.Contains(got, newTA) || !h.matches(got, h.cur) {
					t.Errorf("issuer set confirmed, but Knot serves %v at %s", got, h.owner)
				}
			}
			phaseFingers.Go(func() { f.fingerSample("after the issuer set is published (TTL wait)") })
		}
	}
	fr.end = time.Now()
	phaseFingers.Wait()
	f.fingerSample("after the run")
	return fr
}

// interval is one host's [from, to).
type interval struct {
	host     string
	from, to time.Time
}

// maxOverlap is the largest number of intervals open at one moment.
func maxOverlap(iv []interval) (int, time.Time) {
	type ev struct {
		at time.Time
		d  int
	}
	var evs []ev
	for _, i := range iv {
		evs = append(evs, ev{i.from, 1}, ev{i.to, -1})
	}
	slices.SortFunc(evs, func(a, b ev) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d // an interval that ends where another begins does not overlap it
	})
	n, best := 0, 0
	var at time.Time
	for _, e := range evs {
		n += e.d
		if n > best {
			best, at = n, e.at
		}
	}
	return best, at
}

// deployIntervals reads, from each host's rollover history, the deploy
// ([first "deploying", first "deployed" after it]) and the slot ([first
// "deploying", the host's done time in the migration]).
func deployIntervals(states map[string]roStatus, m rollover.Migration, since time.Time) (deploys, slots []interval) {
	done := map[string]time.Time{}
	for _, hp := range m.Hosts {
		done[strings.TrimSuffix(hp.Host, ".")] = hp.Done
	}
	for name, st := range states {
		var from, to time.Time
		for _, e := range st.History {
			if e.At.Before(since) {
				continue
			}
			if e.What == "deploying" && from.IsZero() {
				from = e.At
			}
			if e.What == "deployed" && !from.IsZero() && to.IsZero() {
				to = e.At
			}
		}
		if from.IsZero() {
			continue
		}
		if !to.IsZero() {
			deploys = append(deploys, interval{name, from, to})
		}
		if d := done[name]; !d.IsZero() {
			slots = append(slots, interval{name, from, d})
		}
	}
	return deploys, slots
}

func maxLen(iv []interval) (time.Duration, string) {
	var d time.Duration
	var who string
	for _, i := range iv {
		if l := i.to.Sub(i.from); l > d {
			d, who = l, i.host
		}
	}
	return d, who
}

// timeline is a host's rollover history since start, one "what@clock"
// per event (observations left out).
func timeline(st roStatus, start time.Time) string {
	var parts []string
	for _, e := range st.History {
		if !e.At.Before(start) && e.What != "observed" {
			parts = append(parts, fmt.Sprintf("%s/%s@%s", e.Step, e.What, e.At.Local().Format("05.000")))
		}
	}
	return strings.Join(parts, " ")
}

// fleetResult is what checkFleet measured.
type fleetResult struct {
	fleet      time.Duration // start → last host done
	maxDeploy  time.Duration // longest "deploying" → "deployed"
	maxSlot    time.Duration // longest "deploying" → host done
	bound      time.Duration
	overlap    int
	published  int // publish-ta "published" events naming a batch of the zone's size
	serialStep map[string]uint32
}

// checkFleet asserts the end state of a fleet migration in which every host
// but f.o.failing finished: status, records, served chains, files, timing,
// parallelism and batching.
func (f *fleetBed) checkFleet(fr fleetRun, newCA *testbed.Chain) fleetResult {
	t := f.t
	t.Helper()
	var res fleetResult
	m := f.migrationStatus()
	txt := f.cli("migration", "status", "--config", f.cfgPath, flName)
	t.Logf("migration status:\n%s", txt.out)
	newTA := roRec(newCA.Intermediate, tlsa.DANETA)

	wantDone := flHosts
	if f.o.failing != 0 {
		wantDone--
	}
	var nDone, nHeld int
	var last time.Time  // the last on-time host done
	var late []interval // late hosts: certificate dropped → done
	for _, hp := range m.Hosts {
		name := strings.TrimSuffix(hp.Host, ".")
		var h *fleetHost
		for _, x := range f.hosts {
			if x.name == name {
				h = x
			}
		}
		if h == nil {
			t.Errorf("migration status names an unknown host %q", hp.Host)
			continue
		}
		if h.n == f.o.failing {
			nHeld++
			if hp.Phase != rollover.PhaseHeld || !hp.Failed || !strings.Contains(strings.ToLower(hp.Reason), "reload") {
				t.Errorf("%s (failing reload): phase %s, failed %v, reason %q; want held, failed, a reason naming the reload", name, hp.Phase, hp.Failed, hp.Reason)
			}
			t.Logf("%s held: %s", name, hp.Reason)
			// Restored: the old chain served and in the files; its RRset
			// still matches it (the new CA's 2 1 1 beside the old records).
			h.checkServes(name+" held", h.cur)
			if !h.holds(h.cur) {
				t.Errorf("%s held: the deploy files do not hold the old key and chain", name)
			}
			if got, want := h.knotAt(h.owner, dns.TypeTLSA), roSorted(append(roPair(h.cur), newTA)...); !slices.Equal(got, want) {
				t.Errorf("%s held: Knot serves %v, want %v", name, got, want)
			}
			continue
		}
		if hp.Phase != rollover.PhaseDone || hp.Done.IsZero() || hp.Failed {
			t.Errorf("%s: phase %s (%s), done %s, failed %v; want done", name, hp.Phase, hp.Reason, sfClock(hp.Done), hp.Failed)
			continue
		}
		nDone++
		if dropped := fr.lateDropped[name]; !dropped.IsZero() {
			late = append(late, interval{name, dropped, hp.Done})
		} else if hp.Done.After(last) {
			last = hp.Done
		}
		h.checkServes(name+" done", h.next)
		if got, want := h.knotAt(h.owner, dns.TypeTLSA), roPair(h.next); !slices.Equal(got, want) {
			t.Errorf("%s done: Knot serves %v, want exactly %v (new CA 2 1 1 + new leaf 3 1 1; old ones retired)", name, got, want)
		}
		if !h.holds(h.next) {
			t.Errorf("%s done: the deploy files do not hold the new key and chain", name)
		}
	}
	if len(m.Hosts) != flHosts || nDone != wantDone || nHeld != flHosts-wantDone {
		t.Errorf("migration has %d hosts: %d done, %d held; want %d: %d done, %d held", len(m.Hosts), nDone, nHeld, flHosts, wantDone, flHosts-wantDone)
	}
	wantStatus, wantFailures := rollover.MigrationDone, 0
	if f.o.failing != 0 {
		wantStatus, wantFailures = rollover.MigrationActive, 1
	}
	if m.Status != wantStatus || m.Failures != wantFailures {
		t.Errorf("migration status %s with %d failure(s); want %s with %d", m.Status, m.Failures, wantStatus, wantFailures)
	}
	wantCode := 0
	if f.o.failing != 0 {
		wantCode = -1 // a held host: any non-zero exit
	}
	if (wantCode == 0) != (fr.run.code == 0) {
		t.Errorf("migration run --wait: exit %d; want %s", fr.run.code, map[bool]string{true: "0", false: "non-zero (a host is held)"}[wantCode == 0])
	}

	// Timing: start → last host done within TTL + margin + ⌈20/4⌉ × the
	// longest deploy + 5 s.
	states := f.rolloverStates()
	deploys, slots := deployIntervals(states, m, fr.start)
	maxDeploy, dHost := maxLen(deploys)
	maxSlot, sHost := maxLen(slots)
	res.maxDeploy, res.maxSlot = maxDeploy, maxSlot
	res.fleet = last.Sub(fr.start) // the hosts whose certificate was there at start
	rounds := (flHosts + flParallel - 1) / flParallel
	res.bound = flTTL*time.Second + flMargin + time.Duration(rounds)*maxSlot + 5*time.Second
	var lens []string
	for _, d := range slots {
		lens = append(lens, fmt.Sprintf("%s %s", strings.Split(d.host, ".")[0], d.to.Sub(d.from).Round(10*time.Millisecond)))
	}
	slices.Sort(lens)
	t.Logf("FLEET %d hosts, TTL %ds, margin %s, max_parallel %d: start → last host done %s (of those whose certificate was there at start) (bound TTL + margin + %d × %s + 5 s = %s); "+
		"longest deploy (deploying → deployed) %s (%s), longest slot (deploying → done) %s (%s); issuer set confirmed %s after start, first deploy %s after start; run --wait returned %s after start",
		flHosts, flTTL, flMargin, flParallel, res.fleet.Round(time.Millisecond), rounds, maxSlot.Round(time.Millisecond), res.bound.Round(time.Millisecond),
		maxDeploy.Round(time.Millisecond), dHost, maxSlot.Round(time.Millisecond), sHost,
		fr.published.Sub(fr.start).Round(time.Millisecond), fr.firstDeploy.Sub(fr.start).Round(time.Millisecond), fr.end.Sub(fr.start).Round(time.Millisecond))
	t.Logf("slots: %s", strings.Join(lens, ", "))
	for _, h := range f.hosts {
		t.Logf("%s timeline: %s", h.name, timeline(states[h.name], fr.start))
	}
	if res.fleet > res.bound {
		t.Errorf("the fleet took %s, more than TTL + margin + %d × %s + 5 s = %s", res.fleet, rounds, maxSlot, res.bound)
	}
	// A late host is taken at the migration's next look for certificates
	// (poll = "1s" in the migration file) and then deploys at once.
	const certPoll = time.Second
	for _, l := range late {
		took := l.to.Sub(l.from)
		t.Logf("late %s: certificate dropped at %s, done %s later", l.host, sfClock(l.from), took.Round(time.Millisecond))
		// It is looked for at the start of a pass: one that arrives while a
		// pass deploys the others waits for that pass to end (at most every
		// round of slots), then the poll, then its own deploy.
		if limit := certPoll + time.Duration(rounds+1)*maxSlot + 5*time.Second; took > limit {
			t.Errorf("late %s: done %s after its certificate arrived, more than the poll + the pass under way (%d rounds) + its deploy + 5 s = %s", l.host, took, rounds, limit)
		}
	}
	// No host deployed before the new CA's 2 1 1 it relies on had aged:
	// its confirmation at every authoritative server + TTL + margin.
	for _, d := range deploys {
		var confirmed time.Time
		for _, e := range states[d.host].History {
			if e.Step == rollover.StepPublishTA && e.What == "confirmed" && !e.At.Before(fr.start) {
				confirmed = e.At
			}
		}
		if aged := confirmed.Add(flTTL*time.Second + flMargin); confirmed.IsZero() || d.from.Before(aged) {
			t.Errorf("%s deployed at %s; its new CA's 2 1 1 was confirmed at %s and aged only at %s", d.host, sfClock(d.from), sfClock(confirmed), sfClock(aged))
		}
	}

	// max_parallel: never more than 4 hosts deploying at once (neither the
	// deploy itself nor the whole slot up to done).
	od, odAt := maxOverlap(deploys)
	os_, osAt := maxOverlap(slots)
	res.overlap = max(od, os_)
	t.Logf("parallelism: at most %d deploys at once (at %s), %d slots (at %s); max_parallel %d", od, sfClock(odAt), os_, sfClock(osAt), flParallel)
	if od > flParallel || os_ > flParallel {
		t.Errorf("max_parallel %d exceeded: %d deploys, %d hosts between deploying and done at once", flParallel, od, os_)
	}
	if od < 2 {
		t.Errorf("at most %d deploy at a time: the deploys did not run in parallel", od)
	}

	// Batched publishing: each zone's SOA serial went up by exactly one
	// between start and the issuer set's confirmation (one UPDATE per
	// zone), and each host's history says its 2 1 1 went in one provider
	// call with the other hosts of its zone.
	res.serialStep = map[string]uint32{}
	for _, z := range flZones {
		if fr.sPub == nil {
			t.Errorf("the issuer set was never seen confirmed (wait_until stayed empty)")
			break
		}
		res.serialStep[z] = fr.sPub[z] - fr.s0[z]
		if fr.sPub[z] != fr.s0[z]+1 {
			t.Errorf("zone %s: SOA serial %d before start, %d once the issuer set was confirmed: want exactly one update", z, fr.s0[z], fr.sPub[z])
		}
	}
	for _, h := range f.hosts {
		st, ok := states[h.name]
		if !ok {
			t.Errorf("%s: no rollover state", h.name)
			continue
		}
		var pub []string
		for _, e := range st.History {
			if e.Step == rollover.StepPublishTA && e.What == "published" && !e.At.Before(fr.start) {
				pub = append(pub, e.Detail)
			}
		}
		want := fmt.Sprintf("one provider call with %d host(s)", flHosts/len(flZones))
		if len(pub) != 1 || !strings.Contains(pub[0], want) {
			t.Errorf("%s: publish-ta published %q; want one event saying %q", h.name, pub, want)
		} else {
			res.published++
		}
		if h.n != f.o.failing && st.Status != rollover.StatusDone {
			t.Errorf("%s: rollover %s at %s (%s)", h.name, st.Status, st.CurrentStep, st.LastError)
		}
	}
	for _, n := range f.o.late {
		name := f.host(n).name
		if fr.lateDropped[name].IsZero() {
			t.Errorf("%s (late certificate) was never seen waiting-certificate: phases %v", name, fr.phasesSeen[name])
		}
	}
	for _, h := range f.hosts {
		t.Logf("%s phases: %v", h.name, fr.phasesSeen[h.name])
	}
	return res
}

// singleMigrations moves each host, one after another, to its next chain
// with a single ca-migration: `rollover start --plan ca-migration --new-ca`,
// `rollover provide`, `rollover run --wait`. It returns each host's time.
func (f *fleetBed) singleMigrations(hosts []*fleetHost, caFile string) []time.Duration {
	t := f.t
	t.Helper()
	var each []time.Duration
	for _, h := range hosts {
		h.expectNew(h.next)
		fl := h.files(h.next)
		t0 := time.Now()
		common := []string{"--config", f.cfgPath, "--host", h.name}
		for _, args := range [][]string{
			append([]string{"rollover", "start"}, append(common, "--plan", "ca-migration", "--new-ca", caFile)...),
			append([]string{"rollover", "provide"}, append(common, "--cert", fl.chain, "--key", fl.key)...),
			append([]string{"rollover", "run"}, append(common, "--wait", "--timeout", "2m")...),
		} {
			if r := h.run(nil, args...); r.code != 0 {
				t.Fatalf("%s: exit %d\n%s%s", strings.Join(args[:2], " "), r.code, r.out, r.errOut)
			}
		}
		each = append(each, time.Since(t0))
		h.checkServes(h.name+" after its single ca-migration", h.next)
		if got := h.knotAt(h.owner, dns.TypeTLSA); !slices.Equal(got, roPair(h.next)) {
			t.Errorf("%s after its single ca-migration: Knot serves %v, want %v", h.name, got, roPair(h.next))
		}
		h.cur = h.next
	}
	return each
}

// TestFleetMigrationE2E: twenty hosts (two of them Postfix) move to a new
// CA in one migration with max_parallel 4; mx07's reload fails and it is
// held while the rest finish; zero probe and posttls-finger failures. Then abort takes back mx07's
// added record.
func TestFleetMigrationE2E(t *testing.T) {
	t.Parallel()
	// mx19 and mx20 get their certificates late: dropped once they wait
	// for them (the migration looks again every poll = 1 s).
	f := newFleetBed(t, fleetOpts{postfix: []int{5, 16}, failing: 7, late: []int{19, 20}, sample: []int{1, 5, 7, 16}, timeout: 4 * time.Minute})
	var start time.Time
	var probes map[string]int
	var fingers int
	reported := false
	defer func() {
		if !reported {
			f.report(&start)
		}
	}()
	newCA := f.newChains()
	fr := f.migrate(newCA)
	start = fr.start
	res := f.checkFleet(fr, newCA)

	// Abort: mx07, held with the new CA's 2 1 1 beside its old records,
	// gets them back alone; the done hosts are left as they are.
	held := f.host(f.o.failing)
	f.mustCLI("migration", "abort", "--config", f.cfgPath, flName)
	held.waitKnot("after abort", roPair(held.cur))
	held.checkServes("after abort", held.cur)
	m := f.migrationStatus()
	if m.Status != rollover.MigrationAborted {
		t.Errorf("after abort: migration %s", m.Status)
	}
	for _, hp := range m.Hosts {
		name := strings.TrimSuffix(hp.Host, ".")
		if name == held.name && hp.Phase != rollover.PhaseRolledBack {
			t.Errorf("after abort: %s is %s, want %s", name, hp.Phase, rollover.PhaseRolledBack)
		}
		if name != held.name && hp.Phase != rollover.PhaseDone {
			t.Errorf("after abort: %s is %s, want it to stay done", name, hp.Phase)
		}
	}
	for _, h := range f.hosts {
		if h != held {
			if got := h.knotAt(h.owner, dns.TypeTLSA); !slices.Equal(got, roPair(h.next)) {
				t.Errorf("after abort: %s: Knot serves %v, want %v", h.name, got, roPair(h.next))
			}
		}
	}
	f.fingerSample("after abort")

	probes, fingers = f.report(&start)
	reported = true
	var counts []string
	minProbes := math.MaxInt
	total := 0
	for _, h := range f.hosts {
		c := probes[h.name]
		total += c
		minProbes = min(minProbes, c)
		counts = append(counts, fmt.Sprintf("%s %d", strings.Split(h.name, ".")[0], c))
	}
	elapsed := time.Since(start)
	t.Logf("PROBES %d in all (per host: %s); %d posttls-finger runs; fleet %s, longest deploy %s, longest slot %s, max parallel %d, %d hosts published in one call per zone, SOA serial steps %v",
		total, strings.Join(counts, ", "), fingers, res.fleet.Round(time.Millisecond), res.maxDeploy.Round(time.Millisecond),
		res.maxSlot.Round(time.Millisecond), res.overlap, res.published, res.serialStep)
	// One probe every 250 ms from the bed's start to the end: at least
	// half as many as the migration's duration allows, even on a loaded
	// machine.
	if want := int(elapsed / (500 * time.Millisecond)); minProbes < want {
		t.Errorf("a host had only %d probes in %s (want ≥ %d: one every 250 ms, half of them at least)", minProbes, elapsed.Round(time.Second), want)
	}
}

// TestFleetMigrationBench (TLSACTL_BENCH=1; bench/migration.sh): the fleet
// migration of twenty hosts, then twenty single ca-migrations one after
// another on the same bed; prints one BENCH line.
func TestFleetMigrationBench(t *testing.T) {
	if os.Getenv("TLSACTL_BENCH") != "1" {
		t.Skip("set TLSACTL_BENCH=1 (bench/migration.sh)")
	}
	f := newFleetBed(t, fleetOpts{postfix: []int{5, 16}, sample: []int{1, 16}, timeout: 10 * time.Minute})
	var start time.Time
	defer func() { f.report(&start) }()
	newCA := f.newChains()
	fr := f.migrate(newCA)
	start = fr.start
	res := f.checkFleet(fr, newCA)
	for _, h := range f.hosts {
		h.cur = h.next
	}

	// The same move again, host after host, with single ca-migrations.
	ca3 := f.newChains()
	caFile := filepath.Join(f.dir, "ca3.pem")
	roWrite(t, caFile, ca3.Intermediate.PEM, 0o644)
	loopStart := time.Now()
	each := f.singleMigrations(f.hosts, caFile)
	loop := time.Since(loopStart)
	slices.Sort(each)
	ok := res.fleet <= res.bound
	line := fmt.Sprintf("BENCH hosts=%d ttl_s=%d margin_s=%.1f max_parallel=%d fleet_s=%.2f loop_s=%.2f ratio=%.1f deploy_max_s=%.2f slot_max_s=%.2f single_min_s=%.2f single_max_s=%.2f target_s=%.2f within_target=%v",
		flHosts, flTTL, flMargin.Seconds(), flParallel, res.fleet.Seconds(), loop.Seconds(), loop.Seconds()/res.fleet.Seconds(),
		res.maxDeploy.Seconds(), res.maxSlot.Seconds(), each[0].Seconds(), each[len(each)-1].Seconds(), res.bound.Seconds(), ok)
	t.Log(line)
}
