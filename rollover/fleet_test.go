package rollover

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/rollover/schedule"
	"github.com/tlsactl/tlsactl/tlsa"
)

// A simulated fleet: hosts over zones, each host its own TLSA owner (with
// its authoritative servers and senders' resolvers) and its own server; a
// batching provider per zone; certificates that arrive when the test says;
// deploys recorded with the fake clock's time.

// fleetLeaves are the old (CA One) and new (CA Two) leaves of every fleet
// host, built once per package run.
var (
	fleetOnce   sync.Once
	fleetLeaves map[string][2]testLeaf
	fleetErr    error
)

const fleetHostsMax = 40

// fleetTrace logs every run of the fleet tests under -v.
var fleetTrace = os.Getenv("FLEET_TRACE") != ""

func fleetHostName(i int) string { return fmt.Sprintf("mx%02d.z%d.example.net", i, i%3) }

func getFleetLeaves(tb testing.TB) map[string][2]testLeaf {
	tb.Helper()
	p := getPKI(tb)
	fleetOnce.Do(func() {
		fleetLeaves = map[string][2]testLeaf{}
		nb, na := testBase.AddDate(0, -1, 0), testBase.AddDate(1, 0, 0)
		for i := range fleetHostsMax {
			name := fleetHostName(i)
			var pair [2]testLeaf
			for k, ca := range []*testCA{p.ca1, p.ca2} {
				key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err != nil {
					fleetErr = err
					return
				}
				if pair[k], err = ca.leaf(key, fmt.Sprintf("%s %d", name, k), []string{name}, nb, na); err != nil {
					fleetErr = err
					return
				}
			}
			fleetLeaves[name] = pair
		}
	})
	if fleetErr != nil {
		tb.Fatal(fleetErr)
	}
	return fleetLeaves
}

type fleetWorld struct {
	w       *world
	store   *memStore
	c       *crasher
	names   []string // FQDNs without the final dot
	zone    map[string]string
	dns     map[string]*fakeDNS // by TLSA owner
	arrive  map[string]time.Time
	batches map[string]int // SetBatch calls by key
	refused map[string]int // conditional batches refused, by key
	// extra are records someone else added, by TLSA owner: they stay.
	extra map[string][]tlsa.Record
	// leaves are each host's old and new certificate (getFleetLeaves, but
	// hosts of one deploy target share theirs: shareDeploy).
	leaves  map[string][2]testLeaf
	deploys []deployRec
	spec    MigrationSpec
	crashes int
}

type deployRec struct {
	host string
	at   time.Time
	ok   bool
}

type fleetOpts struct {
	hosts    int
	windows  []string
	parallel int
	failures int
	canary   bool
	// conditional: the zones' provider takes conditional changes.
	conditional bool
	delays      []time.Duration
	ttl         uint32
}

func newFleetWorld(tb testing.TB, o fleetOpts) *fleetWorld {
	p := getPKI(tb)
	leaves := getFleetLeaves(tb)
	fw := &fleetWorld{w: emptyWorld(tb), store: newMemStore(), zone: map[string]string{}, dns: map[string]*fakeDNS{},
		arrive: map[string]time.Time{}, batches: map[string]int{}, refused: map[string]int{}, extra: map[string][]tlsa.Record{}, leaves: maps.Clone(leaves)}
	fw.c = &crasher{w: fw.w}
	for i := range o.hosts {
		name := fleetHostName(i)
		old := leaves[name][0]
		owner := "_25._tcp." + name + "."
		initial := []tlsa.Record{ta211(p.ca1.inter), ee311(old.cert)}
		d := fw.w.addZone(owner, worldOpts{initial: initial, initTTL: o.ttl, negTTL: 60, delays: o.delays, resolv: 2})
		d.conditional = o.conditional
		dep := fw.w.addDeployer(old.chain, 2)
		fw.w.addHost(name, d, dep)
		fw.store.seed(owner, d.changes[0].rr, 60, testBase.Add(-48*time.Hour))
		fw.names = append(fw.names, name)
		fw.zone[name] = fmt.Sprintf("z%d.example.net.", i%3)
		fw.dns[owner] = d
		fw.arrive[name] = testBase
	}
	fw.w.dns, fw.w.dep = fw.w.hosts[0].dns, fw.w.hosts[0].dep
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.ca2.inter.Raw})
	fw.spec = MigrationSpec{Name: "fleet", NewCAPEM: []string{string(ca)}, TTL: o.ttl, Margin: Duration(30 * time.Second),
		Windows: o.windows, MaxParallel: o.parallel, MaxFailures: o.failures}
	for _, n := range fw.names {
		fw.spec.Hosts = append(fw.spec.Hosts, MigrationHost{Host: n})
	}
	if o.canary {
		fw.spec.Canary = fw.names[len(fw.names)/2]
	}
	return fw
}

// fleetDNS is a host's DNS with the batching of its zone's provider.
type fleetDNS struct {
	DNS
	fw  *fleetWorld
	key string
}

func (d fleetDNS) BatchKey() string { return d.key }

func (d fleetDNS) SetBatch(ctx context.Context, sets map[string]RRSet) error {
	d.fw.batches[d.key]++
	owners := make([]string, 0, len(sets))
	for o := range sets {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	for _, o := range owners {
		fd := d.fw.dns[o]
		if fd == nil || !strings.HasSuffix(o, "."+strings.TrimPrefix(d.key, "provider ")) {
			return fmt.Errorf("owner %s is not in batch %s", o, d.key)
		}
	}
	for _, o := range owners {
		if err := d.fw.dns[o].Set(ctx, sets[o]); err != nil {
			return err
		}
	}
	return nil
}

// condFleetDNS is fleetDNS of a provider that takes conditional changes.
type condFleetDNS struct{ fleetDNS }

func (d condFleetDNS) SetIf(ctx context.Context, expect, want RRSet) error {
	return d.DNS.(ConditionalDNS).SetIf(ctx, expect, want)
}

// SetBatchIf is SetBatch made only if every owner still holds expect[owner].
func (d condFleetDNS) SetBatchIf(ctx context.Context, expect, sets map[string]RRSet) error {
	d.fw.c.hit("before DNS.Set")
	if d.fw.c.beforeSet != nil {
		for _, o := range slices.Sorted(maps.Keys(sets)) {
			d.fw.c.beforeSet(d.fw.dns[o])
		}
	}
	for o := range sets {
		fd := d.fw.dns[o]
		if fd == nil {
			return fmt.Errorf("owner %s is not in batch %s", o, d.key)
		}
		if cur := fd.provider().Records; !sameSet(cur, expect[o].Records) {
			fd.conflicts++
			d.fw.refused[d.key]++
			d.fw.w.logf("  batch %s: conditional set REFUSED: %s holds %s, not %s", d.key, o, rrKey(cur), rrKey(expect[o].Records))
			return fmt.Errorf("%w: %s holds %s", ErrRRsetChanged, o, rrKey(cur))
		}
	}
	err := d.SetBatch(ctx, sets)
	d.fw.c.hit("after DNS.Set")
	return err
}

// recDeployer records every deploy with the time it began.
type recDeployer struct {
	Deployer
	fw   *fleetWorld
	host string
}

func (d recDeployer) Deploy(ctx context.Context, m Material, restore Material) error {
	at := d.fw.w.now()
	err := d.Deployer.Deploy(ctx, m, restore)
	d.fw.deploys = append(d.fw.deploys, deployRec{host: d.host, at: at, ok: err == nil})
	return err
}

// fleetSource hands out each host's new certificate from its arrival on.
type fleetSource struct{ fw *fleetWorld }

func (s fleetSource) Fetch(ctx context.Context, host string) (*Material, error) {
	name := strings.TrimSuffix(host, ".")
	at, ok := s.fw.arrive[name]
	if !ok || at.IsZero() || s.fw.w.now().Before(at) {
		return nil, nil
	}
	m := s.fw.leaves[name][1].mat
	return &m, nil
}

// fleet returns a fresh "process": engine and fleet on the world's store,
// every call boundary through the crasher.
func (fw *fleetWorld) fleet() *Fleet {
	e := fw.w.engine(fw.store, fw.c)
	inner := e.Target
	e.Target = func(host string) (Target, error) {
		t, err := inner(host)
		if err != nil {
			return t, err
		}
		name := strings.TrimSuffix(host, ".")
		fd := fleetDNS{DNS: t.DNS, fw: fw, key: "provider " + fw.zone[name]}
		t.DNS = fd
		if _, ok := fd.DNS.(ConditionalDNS); ok {
			t.DNS = condFleetDNS{fd}
		}
		t.Deployer = recDeployer{Deployer: t.Deployer, fw: fw, host: name}
		return t, nil
	}
	return &Fleet{Engine: e, Store: crashMigStore{MigrationStore: fw.store, c: fw.c}, Workers: 1, Poll: time.Hour,
		Source: func(*Migration) (CertSource, error) { return fleetSource{fw}, nil }}
}

// crashMigStore puts a call boundary around every migration save.
type crashMigStore struct {
	MigrationStore
	c *crasher
}

func (s crashMigStore) SaveMigration(m *Migration) error {
	s.c.hit("before SaveMigration")
	err := s.MigrationStore.SaveMigration(m)
	s.c.hit("after SaveMigration")
	return err
}

// run advances the migration until it is final or waits for the operator,
// moving the clock to each next action, letting senders' resolvers query
// at random between runs, restarting the "process" after every crash
// (crashEvery > 0: a crash at a random boundary within that many). It
// returns the migration as last saved.
func (fw *fleetWorld) run(tb testing.TB, rng *mrand.Rand, crashEvery int, until time.Time, between func()) *Migration {
	tb.Helper()
	f := fw.fleet()
	arm := func() {
		if crashEvery > 0 {
			fw.c.at = fw.c.n + 1 + rng.IntN(crashEvery)
		}
	}
	arm()
	for range 5000 {
		var m *Migration
		var err error
		if cs := catchCrash(func() { m, err = f.Advance(context.Background(), fw.spec.Name) }); cs != nil {
			fw.crashes++
			f = fw.fleet() // a new process after the crash
			arm()
			continue
		}
		if err != nil && !errors.Is(err, ErrLocked) {
			tb.Logf("advance: %v", err)
		}
		if m == nil {
			continue
		}
		if len(m.History) > 20*len(m.Hosts)+200 {
			var tail []string
			for _, ev := range m.History[len(m.History)-40:] {
				tail = append(tail, fmt.Sprintf("+%s %s %s %s", ev.At.Sub(testBase), ev.Host, ev.What, ev.Detail))
			}
			tb.Fatalf("the migration's history grows without bound (%d events); last:\n%s", len(m.History), strings.Join(tail, "\n"))
		}
		if between != nil {
			between()
		}
		next := m.Next()
		if testing.Verbose() && fleetTrace {
			tb.Logf("+%s %s %s next +%s", fw.w.now().Sub(testBase), m.Status, phaseCounts(m), next.Sub(testBase))
		}
		if m.Final() || next.IsZero() || next.After(until) {
			fw.c.at = 0
			return m
		}
		for _, d := range fw.w.zones {
			if rng.IntN(3) == 0 {
				d.lookup(rng.IntN(len(d.res)), rng.IntN(len(d.delays)))
			}
		}
		fw.w.advanceTo(next)
	}
	tb.Fatal("the migration did not settle in 5000 runs")
	return nil
}

func (fw *fleetWorld) migration(tb testing.TB) *Migration {
	tb.Helper()
	m, err := fw.store.LoadMigration(fw.spec.Name)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// assertFinal checks a done host's RRset is the new CA's 2 1 1 and its new
// leaf's 3 1 1, and that it serves the new leaf; a host not deployed still
// serves the old leaf, and its RRset holds the old records.
func (fw *fleetWorld) assertHosts(tb testing.TB, m *Migration) {
	tb.Helper()
	p := getPKI(tb)
	leaves := fw.leaves
	for _, h := range m.Hosts {
		name := strings.TrimSuffix(h.Host, ".")
		sh := fw.w.host(name)
		rr := sh.dns.provider().Records
		pair := leaves[name]
		extra := fw.extra["_25._tcp."+name+"."]
		switch h.Phase {
		case PhaseDone:
			if !allServe(sh.dep.addrs, pair[1].cert) {
				tb.Errorf("%s is done but does not serve its new certificate", name)
			}
			if !sameSet(rr, append([]tlsa.Record{ta211(p.ca2.inter), ee311(pair[1].cert)}, extra...)) {
				tb.Errorf("%s is done with RRset %s", name, rrKey(rr))
			}
		case PhaseRolledBack:
			if !allServe(sh.dep.addrs, pair[0].cert) {
				tb.Errorf("%s was rolled back but does not serve its old certificate", name)
			}
			if !sameSet(rr, append([]tlsa.Record{ta211(p.ca1.inter), ee311(pair[0].cert)}, extra...)) {
				tb.Errorf("%s was rolled back to RRset %s, not the one before the migration", name, rrKey(rr))
			}
		default:
			if !allServe(sh.dep.addrs, pair[0].cert) {
				tb.Errorf("%s is %s but does not serve its old certificate", name, h.Phase)
			}
			if !containsAll(rr, []tlsa.Record{ta211(p.ca1.inter), ee311(pair[0].cert)}) {
				tb.Errorf("%s is %s and lost an old record: RRset %s", name, h.Phase, rrKey(rr))
			}
		}
	}
}

func phaseCounts(m *Migration) string {
	c := m.Counts()
	var parts []string
	for _, p := range Phases {
		if c[p] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", p, c[p]))
		}
	}
	return strings.Join(parts, " ")
}

// TestFleetMigrationWorld: 40 hosts over 3 zones, deploy windows, a
// canary, late and missing certificates, failing reloads, someone else
// removing a host's new record during the wait, senders' resolvers caching
// at random, and (per seed) crashes at random call boundaries; the world
// invariant (every RRset any resolver may hold matches what every address
// of every host serves) is checked at every call boundary, propagation
// instant and clock move.
func TestFleetMigrationWorld(t *testing.T) {
	seeds := 4
	if testing.Short() {
		seeds = 2
	}
	for seed := range seeds {
		crashEvery := 0
		if seed > 0 {
			crashEvery = 300 + 100*seed
		}
		t.Run(fmt.Sprintf("seed%d_crash%d", seed, crashEvery), func(t *testing.T) {
			rng := mrand.New(mrand.NewPCG(uint64(seed), 10))
			// Odd seeds: a provider that takes conditional changes, and
			// someone else adding a record to the RRset a change is about
			// to replace, twice (the change is refused; the host
			// publishes again from a new observation, keeping the record).
			conditional := seed%2 == 1
			fw := newFleetWorld(t, fleetOpts{hosts: 40, windows: []string{"Mon-Fri 02:00-05:00 UTC"}, parallel: 4, failures: 5,
				canary: true, delays: []time.Duration{0, 2 * time.Minute}, ttl: 3600, conditional: conditional})
			edits := 0
			if conditional {
				fw.c.beforeSet = func(d *fakeDNS) {
					if edits < 2 && len(fw.extra[d.Owner()]) == 0 && rng.IntN(3) == 0 {
						edits++
						x := unrelatedRecords()[edits]
						fw.extra[d.Owner()] = []tlsa.Record{x}
						d.write(with(d.provider().Records, x), d.provider().TTL, true)
						fw.w.logf("  someone else added %s to %s before tlsactl's change", abbrev(texts(x)), d.Owner())
						fw.w.check("external write")
					}
				}
			}
			// Certificates arrive at random within two days; one never.
			for i, n := range fw.names {
				fw.arrive[n] = testBase.Add(time.Duration(rng.IntN(48)) * time.Hour)
				if i == 7 {
					fw.arrive[n] = time.Time{}
				}
			}
			// Two servers whose reload always fails.
			failing := []string{fw.names[3], fw.names[11]}
			for _, n := range failing {
				fw.w.host(n).dep.failDeploy = 1 << 20
			}
			f := fw.fleet()
			if _, err := f.Create(context.Background(), fw.spec); err != nil {
				t.Fatal(err)
			}
			removed := false
			victim := fw.w.host(fw.names[5])
			between := func() {
				// Someone else rewrites one host's RRset to what it was
				// during the TTL wait: the migration must republish and wait
				// again for that host, not deploy on its own history.
				if removed {
					return
				}
				if m, err := fw.store.LoadMigration("fleet"); err == nil {
					if i := m.index(victim.name + "."); i >= 0 && m.Hosts[i].Phase == PhaseWaitTTL {
						victim.dns.write(victim.dns.changes[0].rr.Records, 3600, true)
						fw.w.logf("  someone else put back %s's old RRset", victim.name)
						removed = true
					}
				}
			}
			m := fw.run(t, rng, crashEvery, testBase.AddDate(0, 0, 4), between)
			assertClean(t, fw.w, fw.store)
			fw.assertHosts(t, m)
			t.Logf("%s after %s; provider calls per batch %v, %d call boundaries, %d crashes, %d invariant checks", phaseCounts(m), fw.w.now().Sub(testBase), fw.batches, fw.c.n, fw.crashes, fw.w.checks)
			if !removed {
				t.Error("the external rewrite never happened")
			}
			if conditional {
				conflicts := 0
				for _, d := range fw.dns {
					conflicts += d.conflicts
				}
				t.Logf("conditional changes: %d records added by someone else before a change, %d changes refused (%d of them batches: %v)", edits, conflicts, len(fw.refused), fw.refused)
				// Two edits before one batch are one refusal.
				if edits != 2 || conflicts < 1 {
					t.Errorf("%d edits before a change, %d refused: want 2 and at least 1", edits, conflicts)
				}
			}
			c := m.Counts()
			if c[PhaseDone] != 37 || c[PhaseHeld] != 2 || c[PhaseWaitCert] != 1 {
				t.Errorf("phases %s, want 37 done, 2 held (failing reloads), 1 waiting for its certificate", phaseCounts(m))
			}
			for _, n := range failing {
				if h := m.Hosts[m.index(n+".")]; h.Phase != PhaseHeld || !h.Failed || !strings.Contains(h.Reason, "deploy failed") {
					t.Errorf("%s: %s %q, want held with the deploy failure", n, h.Phase, h.Reason)
				}
			}
			if m.Failures != 2 || m.Status != MigrationActive {
				t.Errorf("status %s with %d failures, want active with 2", m.Status, m.Failures)
			}
			fw.assertSchedule(t, m)
		})
	}
}

// assertSchedule checks the deploys against the spec: inside the windows,
// the canary first and alone, none before its certificate arrived, none
// before the fleet's TTL wait ended; and that publishing was batched.
func (fw *fleetWorld) assertSchedule(tb testing.TB, m *Migration) {
	tb.Helper()
	ws, err := schedule.ParseAll(fw.spec.Windows)
	if err != nil {
		tb.Fatal(err)
	}
	canary := strings.TrimSuffix(m.Spec.Canary, ".")
	var canaryDone time.Time
	if canary != "" {
		canaryDone = m.Hosts[m.index(m.Spec.Canary)].Done
	}
	for _, d := range fw.deploys {
		if !ws.Contains(d.at) && len(ws) > 0 {
			tb.Errorf("%s deployed at %s, outside the windows", d.host, d.at)
		}
		if d.host != canary && canary != "" && (canaryDone.IsZero() || d.at.Before(canaryDone)) {
			tb.Errorf("%s deployed at %s, before the canary was done (%s)", d.host, d.at, canaryDone)
		}
		if d.at.Before(fw.arrive[d.host]) {
			tb.Errorf("%s deployed at %s, before its certificate arrived (%s)", d.host, d.at, fw.arrive[d.host])
		}
		if d.at.Before(testBase.Add(time.Duration(fw.spec.TTL)*time.Second + time.Duration(fw.spec.Margin))) {
			tb.Errorf("%s deployed at %s, inside the TTL wait", d.host, d.at)
		}
	}
	// Each zone's first publication is one provider call; more only for
	// hosts that had to publish again (a crash between the calls of two
	// zones, someone else's removal).
	for k, n := range fw.batches {
		if n > 3 {
			tb.Errorf("batch %s: %d provider calls", k, n)
		}
	}
	zones := map[string]bool{}
	for k := range fw.batches {
		zones[k] = true
	}
	for k := range fw.refused { // a refused conditional batch is a call too
		zones[k] = true
	}
	if len(zones) != 3 {
		tb.Errorf("%d batches, want one per zone (3): %v (refused: %v)", len(zones), fw.batches, fw.refused)
	}
}

// TestFleetOneTTLWait: with no windows and no crashes the fleet waits one
// TTL: publication is one provider call per zone and every host's deploy
// follows the same wait end. (The simulated fleet runs sequentially; that
// max_parallel deploys run at once is shown end to end.)
func TestFleetOneTTLWait(t *testing.T) {
	fw := newFleetWorld(t, fleetOpts{hosts: 12, parallel: 4, failures: 1, delays: []time.Duration{0, 10 * time.Second}, ttl: 600})
	f := fw.fleet()
	if _, err := f.Create(context.Background(), fw.spec); err != nil {
		t.Fatal(err)
	}
	m := fw.run(t, mrand.New(mrand.NewPCG(1, 2)), 0, testBase.AddDate(0, 0, 1), nil)
	assertClean(t, fw.w, fw.store)
	fw.assertHosts(t, m)
	if m.Status != MigrationDone {
		t.Fatalf("status %s (%s), want done", m.Status, phaseCounts(m))
	}
	for k, n := range fw.batches {
		if n != 1 {
			t.Errorf("batch %s: %d provider calls, want 1", k, n)
		}
	}
	if len(fw.deploys) != 12 {
		t.Fatalf("%d deploys, want 12", len(fw.deploys))
	}
	// Published at once (+ propagation 10 s), one wait of 600 s + 30 s:
	// the first deploy right after it, not 12 waits later.
	wait := testBase.Add(10*time.Second + 600*time.Second + 30*time.Second)
	if first := fw.deploys[0].at; first.Before(wait) || first.After(wait.Add(time.Minute)) {
		t.Errorf("first deploy at +%s, want right after one TTL (600s) + margin at +%s", first.Sub(testBase), wait.Sub(testBase))
	}
	// Every deploy takes two propagations (3 1 1, retire) here: 12 hosts
	// finish within 12 × 20 s of the wait.
	if last := fw.deploys[11].at; last.After(wait.Add(12 * 25 * time.Second)) {
		t.Errorf("last deploy at +%s: the hosts waited one after another", last.Sub(testBase))
	}
}

// TestFleetHaltsAtMaxFailures: five servers whose reload fails, max
// failures 3: the migration halts after the third, deploys nothing more,
// and resumes to the end once the servers are fixed.
func TestFleetHaltsAtMaxFailures(t *testing.T) {
	fw := newFleetWorld(t, fleetOpts{hosts: 15, parallel: 1, failures: 3, delays: []time.Duration{0, 5 * time.Second}, ttl: 300})
	for _, i := range []int{0, 1, 2, 3, 4} {
		fw.w.host(fw.names[i]).dep.failDeploy = 1 << 20
	}
	f := fw.fleet()
	if _, err := f.Create(context.Background(), fw.spec); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(3, 4))
	m := fw.run(t, rng, 0, testBase.AddDate(0, 0, 1), nil)
	if m.Status != MigrationHalted || m.Failures != 3 {
		t.Fatalf("status %s, %d failures (%s), want halted at 3", m.Status, m.Failures, phaseCounts(m))
	}
	if n := len(fw.deploys); n != 3 {
		t.Errorf("%d deploys attempted, want 3 (then halted)", n)
	}
	// Halted is not stuck: runs report it and deploy nothing.
	before := len(fw.deploys)
	fw.w.advance(time.Hour)
	if m, _ = f.Advance(context.Background(), "fleet"); m.Status != MigrationHalted || len(fw.deploys) != before {
		t.Errorf("a run of a halted migration deployed (%d → %d) or changed its status to %s", before, len(fw.deploys), m.Status)
	}
	for _, i := range []int{0, 1, 2, 3, 4} {
		fw.w.host(fw.names[i]).dep.failDeploy = 0
	}
	if _, err := f.Resume(context.Background(), "fleet"); err != nil {
		t.Fatal(err)
	}
	m = fw.run(t, rng, 0, testBase.AddDate(0, 0, 2), nil)
	assertClean(t, fw.w, fw.store)
	fw.assertHosts(t, m)
	if m.Status != MigrationDone {
		t.Errorf("after resume: status %s (%s), want done", m.Status, phaseCounts(m))
	}
}

// TestFleetStoreOutageIsNoFailure: a shared store that cannot be reached
// just as a host's deploy starts (a database restart, a cut connection, a
// lost lease) interrupts the deploy; that is not a failed deploy: the host
// is not held and not counted towards max_failures, and the next pass
// deploys it.
func TestFleetStoreOutageIsNoFailure(t *testing.T) {
	for _, cause := range []error{ErrStoreUnavailable, ErrLeaseLost} {
		t.Run(cause.Error(), func(t *testing.T) {
			fw := newFleetWorld(t, fleetOpts{hosts: 4, parallel: 2, failures: 1, delays: []time.Duration{0, 5 * time.Second}, ttl: 300})
			// Cut once as each deploy starts, and once as each rollover
			// saves itself done (then the step is done in memory, not in
			// the store: the migration must not count the host done).
			cut, cutDone := map[string]bool{}, map[string]bool{}
			fw.store.saveFault = func(st *State) error {
				switch n := len(st.History); {
				case n > 0 && st.History[n-1].What == "deploying" && !cut[st.Host]:
					cut[st.Host] = true
				case st.Status == StatusDone && !cutDone[st.Host]:
					cutDone[st.Host] = true
				default:
					return nil
				}
				return fmt.Errorf("rollover: save state of %s: %w: connection refused", st.Host, cause)
			}
			f := fw.fleet()
			if _, err := f.Create(context.Background(), fw.spec); err != nil {
				t.Fatal(err)
			}
			m := fw.run(t, mrand.New(mrand.NewPCG(5, 6)), 0, testBase.AddDate(0, 0, 1), nil)
			if len(cut) != 4 || len(cutDone) != 4 {
				t.Fatalf("the outage hit %d deploys and %d finishes, want 4 and 4", len(cut), len(cutDone))
			}
			for _, h := range m.Hosts {
				if st, err := fw.store.Load(h.Host); err != nil || st.Status != StatusDone {
					t.Errorf("%s: migration phase %s, stored rollover %v (%v); want done in both", h.Host, h.Phase, st.Status, err)
				}
			}
			if m.Status != MigrationDone || m.Failures != 0 {
				t.Errorf("status %s, %d failures (%s); want done with no failure", m.Status, m.Failures, phaseCounts(m))
			}
			for _, ev := range m.History {
				if strings.Contains(ev.Detail, "deploy failed") || ev.What == string(PhaseHeld) {
					t.Errorf("%s held by an outage: %s %s", ev.Host, ev.What, ev.Detail)
				}
			}
			assertClean(t, fw.w, fw.store)
			fw.assertHosts(t, m)
		})
	}
}

// TestFleetAbortHalfway: abort once some hosts are done: the others are
// rolled back to the RRset they had, the deployed ones are consistent.
func TestFleetAbortHalfway(t *testing.T) {
	for _, crashEvery := range []int{0, 150} {
		t.Run(fmt.Sprintf("crash%d", crashEvery), func(t *testing.T) {
			fw := newFleetWorld(t, fleetOpts{hosts: 12, parallel: 2, failures: 2, windows: []string{"daily 02:00-02:20 UTC"},
				delays: []time.Duration{0, 3 * time.Minute}, ttl: 600})
			f := fw.fleet()
			if _, err := f.Create(context.Background(), fw.spec); err != nil {
				t.Fatal(err)
			}
			rng := mrand.New(mrand.NewPCG(5, uint64(crashEvery)))
			stop := testBase.Add(14*time.Hour + 10*time.Minute) // inside the first window
			m := fw.run(t, rng, crashEvery, stop, nil)
			done := m.Counts()[PhaseDone]
			if done == 0 || done == 12 {
				t.Fatalf("at the abort: %s, want some hosts done and some not", phaseCounts(m))
			}
			for {
				var err error
				cs := catchCrash(func() { m, err = f.Abort(context.Background(), "fleet") })
				if cs == nil && err == nil {
					break
				}
				if cs == nil {
					t.Fatalf("abort: %v", err)
				}
				f = fw.fleet()
				fw.c.at = fw.c.n + 1 + rng.IntN(crashEvery)
			}
			fw.c.at = 0
			fw.w.advance(time.Hour)
			assertClean(t, fw.w, fw.store)
			if m.Status != MigrationAborted {
				t.Fatalf("status %s, want aborted", m.Status)
			}
			c := m.Counts()
			if c[PhaseDone]+c[PhaseRolledBack] != 12 || c[PhaseDone] < done {
				t.Errorf("after abort: %s, want the %d done hosts done and the rest rolled back", phaseCounts(m), done)
			}
			fw.assertHosts(t, m)
			// A run after the abort changes nothing: no deploy, no DNS write.
			deploys, sets := len(fw.deploys), 0
			for _, d := range fw.w.zones {
				sets += d.sets
			}
			if _, err := f.Advance(context.Background(), "fleet"); err != nil {
				t.Fatal(err)
			}
			after := 0
			for _, d := range fw.w.zones {
				after += d.sets
			}
			if len(fw.deploys) != deploys || after != sets {
				t.Errorf("a run after the abort acted: %d → %d deploys, %d → %d provider writes", deploys, len(fw.deploys), sets, after)
			}
		})
	}
}

// TestFleetCrashEveryBoundary: a small fleet (4 hosts, 3 zones) crashed at
// every call boundary of a clean run in turn, each time resumed by a new
// process to the end.
func TestFleetCrashEveryBoundary(t *testing.T) {
	clean := newFleetWorld(t, fleetOpts{hosts: 4, parallel: 2, failures: 1, canary: true, delays: []time.Duration{0, 20 * time.Second}, ttl: 300})
	if _, err := clean.fleet().Create(context.Background(), clean.spec); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(7, 8))
	m := clean.run(t, rng, 0, testBase.AddDate(0, 0, 1), nil)
	if m.Status != MigrationDone {
		t.Fatalf("clean run: %s", phaseCounts(m))
	}
	boundaries := clean.c.n
	step := 1
	if testing.Short() {
		step = 7
	}
	for at := 1; at <= boundaries; at += step {
		fw := newFleetWorld(t, fleetOpts{hosts: 4, parallel: 2, failures: 1, canary: true, delays: []time.Duration{0, 20 * time.Second}, ttl: 300})
		f := fw.fleet()
		if _, err := f.Create(context.Background(), fw.spec); err != nil {
			t.Fatal(err)
		}
		fw.c.at = at
		m := fw.run(t, mrand.New(mrand.NewPCG(7, 8)), 0, testBase.AddDate(0, 0, 1), nil)
		if len(fw.w.violations) > 0 || len(fw.store.violations) > 0 || m.Status != MigrationDone {
			t.Errorf("crash at boundary %d (%s): status %s (%s)", at, fw.c.points[min(at, len(fw.c.points))-1], m.Status, phaseCounts(m))
			assertClean(t, fw.w, fw.store)
			return
		}
		fw.assertHosts(t, m)
	}
	t.Logf("%d boundaries crashed at", boundaries)
}

// TestFleetPlan: the dry run's schedule: one TTL wait for every host, the
// canary first, max_parallel lanes inside the windows, and advice when the
// deadline is missed.
func TestFleetPlan(t *testing.T) {
	fw := newFleetWorld(t, fleetOpts{hosts: 9, parallel: 2, failures: 1, canary: true, windows: []string{"Mon-Fri 02:00-03:00 UTC"},
		delays: []time.Duration{0}, ttl: 3600})
	fw.spec.DeployEstimate = Duration(20 * time.Minute)
	f := fw.fleet()
	now := testBase // Monday 12:00 UTC
	p, err := f.Plan(context.Background(), fw.spec, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(transientWait + time.Hour + 30*time.Second); !p.WaitUntil.Equal(want) {
		t.Errorf("wait until %s, want %s", p.WaitUntil, want)
	}
	if p.Batches != 3 {
		t.Errorf("%d batches, want 3", p.Batches)
	}
	tue2 := time.Date(2026, 6, 2, 2, 0, 0, 0, time.UTC)
	var canary PlannedHost
	starts := map[time.Time]int{}
	for _, h := range p.Hosts {
		if len(h.Publish) != 1 || len(h.Retire) != 1 {
			t.Errorf("%s: publish %v retire %v", h.Host, h.Publish, h.Retire)
		}
		if h.Canary {
			canary = h
			continue
		}
		starts[h.Deploy]++
	}
	if !canary.Deploy.Equal(tue2) {
		t.Errorf("canary deploys %s, want %s", canary.Deploy, tue2)
	}
	// 8 others, 2 lanes, 20 minutes each, after the canary: 02:20, 02:40
	// on Tuesday, then 02:00, 02:20, 02:40 on Wednesday (a start must be
	// inside a window).
	want := map[time.Time]int{tue2.Add(20 * time.Minute): 2, tue2.Add(40 * time.Minute): 2,
		tue2.AddDate(0, 0, 1): 2, tue2.AddDate(0, 0, 1).Add(20 * time.Minute): 2}
	for at, n := range want {
		if starts[at] != n {
			t.Errorf("%d deploys at %s, want %d (all: %v)", starts[at], at, n, starts)
		}
	}
	if !p.MeetsDeadline {
		t.Error("no deadline, but not met")
	}
	fw.spec.Deadline = tue2.Add(time.Hour)
	if p, err = f.Plan(context.Background(), fw.spec, now); err != nil {
		t.Fatal(err)
	}
	if p.MeetsDeadline || len(p.Advice) == 0 || !strings.Contains(strings.Join(p.Advice, "; "), "max_parallel = 4") {
		t.Errorf("deadline Tuesday 03:00: meets %v, advice %q; want missed, max_parallel = 4 advised", p.MeetsDeadline, p.Advice)
	}
	if got := fw.w.hosts[0].dns.sets; got != 0 {
		t.Errorf("plan changed DNS (%d sets)", got)
	}
}

// TestFleetCreateRefuses: bad specs, a duplicate name, a host in another
// unfinished migration.
func TestFleetCreateRefuses(t *testing.T) {
	fw := newFleetWorld(t, fleetOpts{hosts: 3, parallel: 1, failures: 1, delays: []time.Duration{0}, ttl: 300})
	f := fw.fleet()
	p := getPKI(t)
	leafPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.old.cert.Raw}))
	for _, tc := range []struct {
		name string
		mod  func(s *MigrationSpec)
		want string
	}{
		{"bad name", func(s *MigrationSpec) { s.Name = "../x" }, "invalid migration name"},
		{"no hosts", func(s *MigrationSpec) { s.Hosts = nil }, "names no host"},
		{"twice", func(s *MigrationSpec) { s.Hosts = append(s.Hosts, s.Hosts[0]) }, "twice"},
		{"leaf as CA", func(s *MigrationSpec) { s.NewCAPEM = []string{leafPEM} }, "is not a CA certificate"},
		{"bad window", func(s *MigrationSpec) { s.Windows = []string{"Mon 2-5"} }, "window"},
		{"canary elsewhere", func(s *MigrationSpec) { s.Canary = "mx99.example.net" }, "not one of its hosts"},
	} {
		spec := fw.spec
		spec.Hosts = slices.Clone(spec.Hosts)
		tc.mod(&spec)
		if _, err := f.Create(context.Background(), spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := f.Create(context.Background(), fw.spec); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Create(context.Background(), fw.spec); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("second create: %v", err)
	}
	other := fw.spec
	other.Name = "other"
	if _, err := f.Create(context.Background(), other); err == nil || !strings.Contains(err.Error(), "has not finished") {
		t.Errorf("overlapping create: %v", err)
	}
}

// The certificates of the fleet hosts are what fleetSource serves; keep the
// helper honest.
func TestFleetLeavesMatch(t *testing.T) {
	p := getPKI(t)
	for name, pair := range getFleetLeaves(t) {
		chain := pair[1].chain
		if !tlsa.Match(chain, []tlsa.Record{ta211(p.ca2.inter)}, tlsa.MatchOptions{Names: []string{name}, Now: testBase}).Matched() {
			t.Fatalf("%s: new leaf does not match the new CA's 2 1 1", name)
		}
	}
}

// TestFleetScheduleBindsOtherCallers: a migration host's rollover deploys
// only when the migration's schedule says, whoever else advances it (a
// hook, `rollover run`).
func TestFleetScheduleBindsOtherCallers(t *testing.T) {
	fw := newFleetWorld(t, fleetOpts{hosts: 3, parallel: 1, failures: 1, windows: []string{"Sat 02:00-03:00 UTC"},
		delays: []time.Duration{0, 5 * time.Second}, ttl: 300})
	f := fw.fleet()
	if _, err := f.Create(context.Background(), fw.spec); err != nil {
		t.Fatal(err)
	}
	// Until Friday: published, waited, certificates staged, outside the window.
	m := fw.run(t, mrand.New(mrand.NewPCG(9, 9)), 0, testBase.AddDate(0, 0, 3), nil)
	if c := m.Counts(); c[PhaseWaitWindow] != 3 {
		t.Fatalf("phases %s, want all 3 waiting for the window", phaseCounts(m))
	}
	out, err := f.Engine.Advance(context.Background(), fw.names[0])
	if err != nil || !out.Waiting || !strings.Contains(out.Reason, "scheduled by migration fleet") {
		t.Errorf("Advance outside the fleet: waiting %v, reason %q, err %v; want held for the migration's schedule", out.Waiting, out.Reason, err)
	}
	if len(fw.deploys) != 0 {
		t.Errorf("%d deploys outside the window", len(fw.deploys))
	}
	m = fw.run(t, mrand.New(mrand.NewPCG(9, 9)), 0, testBase.AddDate(0, 0, 7), nil)
	if m.Status != MigrationDone {
		t.Errorf("status %s (%s), want done after Saturday's window", m.Status, phaseCounts(m))
	}
	fw.assertSchedule(t, m)
	assertClean(t, fw.w, fw.store)
}

// TestFleetSharedOwner: two hosts of the fleet whose TLSA owner is one name
// (a CNAME to a shared RRset, RFC 7671 §7), plus someone else's write and
// senders' resolvers: each host's 3 1 1 replacement keeps the record the
// other still needs, publishing goes in one batch, and at every event every
// RRset a resolver may hold matches both servers.
func TestFleetSharedOwner(t *testing.T) {
	p := getPKI(t)
	leaves := getFleetLeaves(t)
	fw := newFleetWorld(t, fleetOpts{hosts: 4, parallel: 2, failures: 1, delays: []time.Duration{0, 30 * time.Second}, ttl: 600})
	a, b, shared := fw.shareOwner(t)
	f := fw.fleet()
	if _, err := f.Create(context.Background(), fw.spec); err != nil {
		t.Fatal(err)
	}
	readded := false
	// Someone else puts a 3 1 1 the migration retired back into the shared
	// RRset once, at a moment one host serves its new certificate and the
	// other its old one (a harmless edit: the served chains match other
	// records), while the migration works (at an observation of the shared
	// owner). The migration must take it out again.
	fw.c.beforeObserve = func(d *fakeDNS) {
		newA := allServe(a.dep.addrs, leaves[a.name][1].cert)
		newB := allServe(b.dep.addrs, leaves[b.name][1].cert)
		if d != shared || readded || newA == newB {
			return
		}
		done := a
		if newB {
			done = b
		}
		old := ee311(leaves[done.name][0].cert)
		if rs := d.provider().Records; !containsRec(rs, old) {
			d.write(append(slices.Clone(rs), old), 600, true)
			fw.w.logf("  someone else re-added %s's old 3 1 1 to %s", done.name, d.Owner())
			readded = true
		}
	}
	m := fw.run(t, mrand.New(mrand.NewPCG(11, 12)), 0, testBase.AddDate(0, 0, 1), nil)
	if !readded {
		t.Error("the external write never happened")
	}
	assertClean(t, fw.w, fw.store)
	if m.Status != MigrationDone {
		t.Fatalf("status %s (%s), want done", m.Status, phaseCounts(m))
	}
	rs := shared.provider().Records
	for _, h := range []*simHost{a, b} {
		if !allServe(h.dep.addrs, leaves[h.name][1].cert) {
			t.Errorf("%s does not serve its new certificate", h.name)
		}
		if !containsRec(rs, ee311(leaves[h.name][1].cert)) {
			t.Errorf("the shared RRset %s lacks %s's new 3 1 1", rrKey(rs), h.name)
		}
		if containsRec(rs, ee311(leaves[h.name][0].cert)) {
			t.Errorf("the shared RRset %s keeps %s's old 3 1 1", rrKey(rs), h.name)
		}
	}
	if !containsRec(rs, ta211(p.ca2.inter)) || containsRec(rs, ta211(p.ca1.inter)) {
		t.Errorf("the shared RRset %s: want the new CA's 2 1 1 and not the old one's", rrKey(rs))
	}
	if fw.batches["provider z0.example.net."] != 1 {
		t.Errorf("zone z0 (the shared owner and one more host): %d provider calls to publish, want 1", fw.batches["provider z0.example.net."])
	}
}

// shareOwner makes fleet hosts 0 and 3 (both in zone z0) share host 0's
// TLSA owner, which holds the old CA's 2 1 1 and both old leaves' 3 1 1,
// as every resolver has seen it.
func (fw *fleetWorld) shareOwner(tb testing.TB) (a, b *simHost, shared *fakeDNS) {
	tb.Helper()
	p, leaves := getPKI(tb), getFleetLeaves(tb)
	a, b = fw.w.hosts[0], fw.w.hosts[3]
	shared = a.dns
	shared.changes[0].rr.Records = []tlsa.Record{ta211(p.ca1.inter), ee311(leaves[a.name][0].cert), ee311(leaves[b.name][0].cert)}
	for r := range shared.res {
		shared.res[r] = resolver{}
		shared.lookup(r, 0)
	}
	fw.store.seed(shared.Owner(), shared.changes[0].rr, 60, testBase.Add(-48*time.Hour))
	b.dns = shared
	fw.w.zones = slices.DeleteFunc(fw.w.zones, func(d *fakeDNS) bool { return d.Owner() == "_25._tcp."+b.name+"." })
	return a, b, shared
}

// shareDeploy makes hosts i and j one deploy target (Target.Peers): one
// server serving one chain valid for both names — the old one from CA 1,
// the new one (what fleetSource hands out for both) from CA 2 — with each
// host's own TLSA owner holding CA 1's 2 1 1 and the shared leaf's 3 1 1.
func (fw *fleetWorld) shareDeploy(tb testing.TB, i, j int) (a, b *simHost) {
	tb.Helper()
	p := getPKI(tb)
	a, b = fw.w.hosts[i], fw.w.hosts[j]
	var pair [2]testLeaf
	nb, na := testBase.AddDate(0, -1, 0), testBase.AddDate(1, 0, 0)
	for k, ca := range []*testCA{p.ca1, p.ca2} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		if pair[k], err = ca.leaf(key, fmt.Sprintf("%s+%s %d", a.name, b.name, k), []string{a.name, b.name}, nb, na); err != nil {
			tb.Fatal(err)
		}
	}
	dep := fw.w.addDeployer(pair[0].chain, 2)
	for _, h := range []*simHost{a, b} {
		h.dep = dep
		fw.leaves[h.name] = pair
		d := h.dns
		d.changes[0].rr.Records = []tlsa.Record{ta211(p.ca1.inter), ee311(pair[0].cert)}
		for r := range d.res {
			d.res[r] = resolver{}
			d.lookup(r, 0)
		}
		fw.store.seed(d.Owner(), d.changes[0].rr, 60, testBase.Add(-48*time.Hour))
	}
	a.peers, b.peers = []string{b.name}, []string{a.name}
	return a, b
}

// TestFleetSharedDeployTarget: two hosts of the fleet are one server (one
// certificate for both names, one deploy), each with its own TLSA owner in
// its own zone; someone else reverts one owner during the wait. Both are
// done with the new certificate served and each owner final; the world
// invariant holds for both owners at every call boundary, with crashes.
func TestFleetSharedDeployTarget(t *testing.T) {
	for _, crashEvery := range []int{0, 60} {
		t.Run(fmt.Sprintf("crash%d", crashEvery), func(t *testing.T) {
			rng := mrand.New(mrand.NewPCG(uint64(crashEvery), 11))
			fw := newFleetWorld(t, fleetOpts{hosts: 6, parallel: 2, failures: 1, delays: []time.Duration{0, 30 * time.Second}, ttl: 600})
			a, b := fw.shareDeploy(t, 1, 2) // zones z1 and z2
			f := fw.fleet()
			if _, err := f.Create(context.Background(), fw.spec); err != nil {
				t.Fatal(err)
			}
			// During the TTL wait someone else puts b's old RRset back: the
			// shared server (a's deploy too) must wait until b's owner has
			// the new CA's 2 1 1 again and it has aged.
			reverted := false
			between := func() {
				if reverted {
					return
				}
				if m, err := fw.store.LoadMigration("fleet"); err == nil {
					if i := m.index(b.name + "."); i >= 0 && m.Hosts[i].Phase == PhaseWaitTTL {
						b.dns.write(b.dns.changes[0].rr.Records, 600, true)
						fw.w.logf("  someone else put back %s's old RRset", b.name)
						reverted = true
					}
				}
			}
			m := fw.run(t, rng, crashEvery, testBase.AddDate(0, 0, 1), between)
			if !reverted {
				t.Fatal("the external revert never happened")
			}
			assertClean(t, fw.w, fw.store)
			fw.assertHosts(t, m)
			if c := m.Counts(); c[PhaseDone] != 6 {
				t.Fatalf("phases %s, want all 6 done", phaseCounts(m))
			}
			if !allServe(a.dep.addrs, fw.leaves[a.name][1].cert) || a.dep != b.dep {
				t.Errorf("%s and %s: the shared server does not serve the shared new certificate", a.name, b.name)
			}
			t.Logf("%s after %s; %d deploys recorded (%d to the shared server's hosts), %d crashes", phaseCounts(m), fw.w.now().Sub(testBase), len(fw.deploys), countDeploys(fw.deploys, a.name, b.name), fw.crashes)
		})
	}
}

func countDeploys(ds []deployRec, names ...string) int {
	n := 0
	for _, d := range ds {
		if slices.Contains(names, d.host) {
			n++
		}
	}
	return n
}

// TestPublishBatchSharedOwnerConflict: two hosts of one batch share a TLSA
// owner but their rollovers want different RRsets there (each its own new
// CA): one provider call publishes the first host's RRset, the other host
// fails with the reason and is retried on its own, and the published
// event of the first says what the provider holds.
func TestPublishBatchSharedOwnerConflict(t *testing.T) {
	p := getPKI(t)
	fw := newFleetWorld(t, fleetOpts{hosts: 4, parallel: 1, failures: 1, delays: []time.Duration{0}, ttl: 600})
	a, b, shared := fw.shareOwner(t)
	e := fw.fleet().Engine
	ctx := context.Background()
	for _, s := range []struct {
		h  *simHost
		ca *x509.Certificate
	}{{a, p.ca2.inter}, {b, p.ca2.root}} {
		if _, err := e.Start(ctx, StartRequest{Host: s.h.name, Plan: PlanCAMigration, NewCA: s.ca, TTL: 600}); err != nil {
			t.Fatalf("start %s: %v", s.h.name, err)
		}
	}
	// One worker, as every fleet test runs: the simulated world's crash
	// points are not for concurrent callers, and the order is the batch's.
	errs := e.publishBatch(ctx, []string{a.name, b.name}, 1)
	if err := errs[a.name+"."]; err != nil {
		t.Errorf("%s (first of the batch): %v", a.name, err)
	}
	if err := errs[b.name+"."]; err == nil || !strings.Contains(err.Error(), "different RRset") {
		t.Errorf("%s (a different RRset at the same owner): %v, want the conflict", b.name, err)
	}
	if n := fw.batches["provider z0.example.net."]; n != 1 {
		t.Errorf("%d provider calls, want 1", n)
	}
	rs := shared.provider().Records
	if !containsRec(rs, ta211(p.ca2.inter)) || containsRec(rs, ta211(p.ca2.root)) {
		t.Errorf("the shared RRset %s: want %s's new 2 1 1 only", rrKey(rs), a.name)
	}
	st := fw.store.state(a.name + ".")
	if ev := st.History[len(st.History)-1]; ev.What != "published" || !strings.Contains(ev.Detail, abbrev(recordTexts(rs))) {
		t.Errorf("%s's last event %s %q, want published %s", a.name, ev.What, ev.Detail, abbrev(recordTexts(rs)))
	}
	assertClean(t, fw.w, fw.store)
}

// TestFleetPhaseReasonNotStale: a host's reason is its rollover's last
// "waiting" event only while that wait holds; once it has run out the
// phase's own description is shown, not a wait that is over.
func TestFleetPhaseReasonNotStale(t *testing.T) {
	f := &Fleet{Poll: time.Hour}
	now := testBase.Add(time.Hour)
	waitEv := Event{At: testBase, Step: StepWaitTTL, What: "waiting", Detail: "the old RRset may be cached until 01:05"}
	for _, tc := range []struct {
		name      string
		notBefore time.Time
		want      string
	}{
		{"wait holds", now.Add(time.Minute), waitEv.Detail},
		{"wait over", now.Add(-time.Minute), "the RRsets without the new issuer set may still be cached"},
	} {
		m := &Migration{Hosts: []HostProgress{{Host: testHost + "."}}}
		st := &State{Plan: PlanCAMigration, Status: StatusActive, Step: stepIndex(PlanCAMigration, StepWaitTTL), NotBefore: tc.notBefore, History: []Event{waitEv}}
		f.phaseFromState(m, 0, st, nil, now)
		if h := m.Hosts[0]; h.Phase != PhaseWaitTTL || h.Reason != tc.want {
			t.Errorf("%s: phase %s, reason %q; want %s, %q", tc.name, h.Phase, h.Reason, PhaseWaitTTL, tc.want)
		}
	}
}
