package rollover

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

var (
	actorSeeds  = flag.Int("rollover.actors.seeds", 0, "seeds for TestPropertyWorldActors (default 200; 40 with -short)")
	actorSeed   = flag.Uint64("rollover.actors.seed", 0, "run TestPropertyWorldActors for this one seed only (with -v: and print its trace)")
	actorFirst  = flag.Uint64("rollover.actors.first", 1, "TestPropertyWorldActors: the first seed")
	actorStrict = flag.Bool("rollover.strict", true, "TestPropertyWorldActors: a failure of a kind a focused test shows (a known engine bug) fails the test too; false lists them instead")
)

// The other names of the multi-host worlds.
const (
	// sharedOwner is the TLSA owner both hosts' _25._tcp names are CNAMEs
	// to: senders of either host query it (RFC 7672 §2.2.3).
	sharedOwner = "_25._tcp.dane.example.net."
	ownerB      = "_25._tcp." + testHost2 + "."
)

// hostPlan is one host of an actor scenario and the rollover it runs.
type hostPlan struct {
	name    string
	zone    int // index into actorScenario.zones
	dep     int // index into actorScenario.deps
	old     testLeaf
	plan    Plan // "": the host is idle
	newLeaf testLeaf
	req     func(p *testPKI) StartRequest
	// final is the owner's RRset when the rollover is done (without the
	// unrelated records someone else added); nil when another host's
	// rollover writes the same owner.
	final []tlsa.Record
}

type zoneSpec struct {
	owner   string
	initial []tlsa.Record
}

// actorScenario is a world layout and the rollovers run in it.
type actorScenario struct {
	name  string
	zones []zoneSpec
	deps  []testLeaf // what each server serves at the start
	hosts []hostPlan
	// peers: hosts on one server are one deploy target (Target.Peers).
	peers bool
}

func actorScenarios(p *testPKI) []actorScenario {
	var out []actorScenario
	// One host, one owner: the plans of TestPropertyRollover.
	for _, sc := range scenarios(p) {
		out = append(out, actorScenario{
			name: sc.name, zones: []zoneSpec{{testOwner, sc.initial}}, deps: []testLeaf{p.old},
			hosts: []hostPlan{{name: testHost, old: p.old, plan: sc.plan, newLeaf: sc.newLeaf, req: sc.startReq, final: sc.final}},
		})
	}
	ta1, ta2 := ta211(p.ca1.inter), ta211(p.ca2.inter)
	renew := func(host string) func(*testPKI) StartRequest {
		return func(*testPKI) StartRequest { return StartRequest{Host: host, Plan: PlanRenew} }
	}
	caMig := func(host string) func(*testPKI) StartRequest {
		return func(p *testPKI) StartRequest {
			return StartRequest{Host: host, Plan: PlanCAMigration, NewCA: p.ca2.inter}
		}
	}
	prepub := func(host string, next testLeaf) func(*testPKI) StartRequest {
		return func(*testPKI) StartRequest {
			return StartRequest{Host: host, Plan: PlanKeyPrepublish, NextKeySPKI: next.cert.RawSubjectPublicKeyInfo}
		}
	}
	// A CNAME'd owner: mx and mx2, each on its own server with its own
	// key, publish at one name.
	cname := func(name string, initial []tlsa.Record, a, b hostPlan) actorScenario {
		a.name, a.zone, a.dep, a.old = testHost, 0, 0, p.old
		b.name, b.zone, b.dep, b.old = testHost2, 0, 1, p.oldB
		return actorScenario{name: name, zones: []zoneSpec{{sharedOwner, initial}}, deps: []testLeaf{p.old, p.oldB},
			hosts: []hostPlan{a, b}}
	}
	shared := []tlsa.Record{ta1, ee311(p.old.cert), ee311(p.oldB.cert)}
	out = append(out,
		cname("cname-renew-both", shared,
			hostPlan{plan: PlanRenew, newLeaf: p.renew, req: renew(testHost)},
			hostPlan{plan: PlanRenew, newLeaf: p.renewB, req: renew(testHost2)}),
		cname("cname-renew-one", shared,
			hostPlan{plan: PlanRenew, newLeaf: p.renew, req: renew(testHost)}, hostPlan{}),
		// mx2 stays on CA one: retiring "the old" 2 1 1 and 3 1 1 must
		// keep what mx2's chain needs (Target.Sharing).
		cname("cname-ca-migration-idle-peer", shared,
			hostPlan{plan: PlanCAMigration, newLeaf: p.mig, req: caMig(testHost)}, hostPlan{}),
		cname("cname-key-prepublish-idle-peer", []tlsa.Record{ee311(p.old.cert), ee311(p.oldB.cert)},
			hostPlan{plan: PlanKeyPrepublish, newLeaf: p.next, req: prepub(testHost, p.next)}, hostPlan{}),
	)
	// One deploy target: one server answers for mx and mx2 with one
	// certificate naming both; each host has its own owner.
	target := func(name string, initial []tlsa.Record, a, b hostPlan) actorScenario {
		a.name, a.zone, a.dep, a.old = testHost, 0, 0, p.oldAB
		b.name, b.zone, b.dep, b.old = testHost2, 1, 0, p.oldAB
		return actorScenario{name: name, zones: []zoneSpec{{testOwner, initial}, {ownerB, initial}}, deps: []testLeaf{p.oldAB},
			hosts: []hostPlan{a, b}, peers: true}
	}
	withTA, eeOnly := []tlsa.Record{ee311(p.oldAB.cert), ta1}, []tlsa.Record{ee311(p.oldAB.cert)}
	out = append(out,
		target("target-renew-one", withTA,
			hostPlan{plan: PlanRenew, newLeaf: p.renewAB, req: renew(testHost), final: []tlsa.Record{ta1, ee311(p.renewAB.cert)}}, hostPlan{}),
		target("target-ca-migration-both", withTA,
			hostPlan{plan: PlanCAMigration, newLeaf: p.migAB, req: caMig(testHost), final: []tlsa.Record{ta2, ee311(p.migAB.cert)}},
			hostPlan{plan: PlanCAMigration, newLeaf: p.migAB, req: caMig(testHost2), final: []tlsa.Record{ta2, ee311(p.migAB.cert)}}),
		target("target-key-prepublish-both", eeOnly,
			hostPlan{plan: PlanKeyPrepublish, newLeaf: p.nextAB, req: prepub(testHost, p.nextAB), final: []tlsa.Record{ee311(p.nextAB.cert)}},
			hostPlan{plan: PlanKeyPrepublish, newLeaf: p.nextAB, req: prepub(testHost2, p.nextAB), final: []tlsa.Record{ee311(p.nextAB.cert)}}),
		// The peer's RRset never covers the next key: the deploy must be
		// refused for as long as it does not.
		target("target-key-prepublish-one", eeOnly,
			hostPlan{plan: PlanKeyPrepublish, newLeaf: p.nextAB, req: prepub(testHost, p.nextAB), final: []tlsa.Record{ee311(p.nextAB.cert)}}, hostPlan{}),
	)
	return out
}

// unrelatedRecords are records someone else adds that match nothing
// served (a spare key's 3 1 1, say).
func unrelatedRecords() []tlsa.Record {
	return []tlsa.Record{spki311([]byte("spare key one")), spki311([]byte("spare key two")), spki311([]byte("backup MX key"))}
}

// TestPropertyWorldActors is TestPropertyRollover in a world with its other
// actors: someone else writing the provider's RRset (an administrator who
// reverts, drops, adds or puts back records, or a zone-as-code run that
// keeps reverting), a provider that raises TTLs, senders' resolvers that
// fetch from any server at any moment besides the one tlsactl asks, a
// check timer, a CNAME'd owner shared by two hosts and two hosts on one
// deploy target. After every event (and at every call boundary and
// propagation instant) the world invariant holds for every host; at the
// end, the rollovers finish, or stop only where they must.
func TestPropertyWorldActors(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 40
	}
	if *actorSeeds > 0 {
		n = *actorSeeds
	}
	first := uint64(1)
	if *actorFirst != 0 {
		first = *actorFirst
	}
	if *actorSeed != 0 {
		first, n = *actorSeed, 1
	}
	getPKI(t) // built here, not in a worker
	// Seeds are independent worlds: run them on every core, then report in
	// seed order.
	scs, bugs := make([]actorScenario, n), make([]string, n)
	msgs, stats := parallelSeeds(n, func(i int, stats map[string]int) string {
		sc, msg, bug := runActors(t, first+uint64(i), stats)
		scs[i], bugs[i] = sc, bug
		return msg
	})
	known := map[string][]uint64{} // known engine bug -> failing seeds
	var knownOrder, knownMsg []string
	knownSeeds := 0
	for i, msg := range msgs {
		seed := first + uint64(i)
		if msg == "" {
			continue
		}
		if bug := bugs[i]; bug != "" && !*actorStrict {
			if len(known[bug]) == 0 {
				knownOrder = append(knownOrder, bug)
				knownMsg = append(knownMsg, fmt.Sprintf("first seed %d (%s): %s", seed, scs[i].name, firstLine(msg)))
			}
			known[bug] = append(known[bug], seed)
			knownSeeds++
			continue
		}
		t.Fatalf("seed %d, %s (rerun: go test ./rollover -run TestPropertyWorldActors -rollover.actors.seed=%d -v):\n%s", seed, scs[i].name, seed, msg)
	}
	var outcomes, refusals []string
	for k, v := range stats {
		switch {
		case strings.HasPrefix(k, "refused/"):
			refusals = append(refusals, fmt.Sprintf("%s: %d", strings.TrimPrefix(k, "refused/"), v))
		case strings.Contains(k, "/"):
			outcomes = append(outcomes, fmt.Sprintf("%s:%d", k, v))
		}
	}
	sort.Strings(outcomes)
	sort.Strings(refusals)
	t.Logf("%d seeds (odd ones with conditional changes): external writes %d (%d at a call boundary inside a run, %d of them between an observation and a conditional change; %d changes refused), %d removing a record the plan published, step-backs %d, stops at the step-back limit %d, "+
		"TTL rewrites %d (%d seeds with a TTL-raising provider), resolver answers to tlsactl %d, check-timer runs %d, crashes %d, refusals that held %d, violations 0 (seeds failing only on a known engine bug: %d, below)",
		n, stats["external writes"], stats["mid-run writes"], stats["writes before a conditional change"], stats["conflicts"], stats["removals"], stats["step-backs"], stats["step-back stops"],
		stats["ttl rewrites"], stats["ttl-raising seeds"], stats["resolver sightings"], stats["check timer"], stats["crashes"], stats["refusals"], knownSeeds)
	t.Logf("outcomes (scenario/host/status): %s", strings.Join(outcomes, " "))
	t.Logf("refusals that held, checked against the world: %s", strings.Join(refusals, "; "))
	for i, bug := range knownOrder {
		t.Logf("known engine bug shown by %s (not fatal without -rollover.strict): %d seeds %v; %s", bug, len(known[bug]), known[bug], knownMsg[i])
	}
}

func firstLine(s string) string {
	if i := strings.Index(s, "\ntrace:"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

// actorHost is one host's part of an actor run.
type actorHost struct {
	hostPlan
	sim      *simHost
	fqdn     string
	provided bool
	aborting bool
	// lastObs is the sequence number of the last observation of its own
	// owner (provider read) by one of its engine runs.
	lastObs  int
	removals int    // writes by others that took away a record its plan published
	stopped  string // why it stopped without finishing (liveness phase)
}

type actorRun struct {
	w       *world
	store   *memStore
	sc      actorScenario
	rng     *rand.Rand
	hosts   []*actorHost
	ttlMax  uint32
	writer  int // 0: none; 1: an administrator now and then; 2: zone-as-code reverting
	midRun  bool
	quiet   bool // writers and faults have stopped
	seq     int
	written map[*fakeDNS]int // seq of the last write by someone else
	obsAt   map[*fakeDNS]int // fakeDNS.observed at that write
	pool    []tlsa.Record
	stats   map[string]int
	bug     string // the focused test showing the engine bug of the failure
}

// runActors runs one seed. It returns the scenario, a failure ("" when
// none) and, for a failure of a kind a focused test already shows as an
// engine bug, that test's name.
func runActors(tb testing.TB, seed uint64, stats map[string]int) (actorScenario, string, string) {
	sc, r, msg := runActorsSeed(tb, seed, stats)
	if *actorSeed != 0 && testing.Verbose() {
		tb.Logf("trace of seed %d:\n  %s", seed, strings.Join(r.w.trace, "\n  "))
	}
	bug := ""
	if msg != "" {
		bug = r.bug
	}
	return sc, msg, bug
}

func runActorsSeed(tb testing.TB, seed uint64, stats map[string]int) (actorScenario, *actorRun, string) {
	p := getPKI(tb)
	rng := rand.New(rand.NewPCG(seed, 0xac7025))
	scs := actorScenarios(p)
	sc := scs[rng.IntN(len(scs))]
	pick := func(xs ...uint32) uint32 { return xs[rng.IntN(len(xs))] }

	w := emptyWorld(tb)
	r := &actorRun{w: w, store: newMemStore(), sc: sc, rng: rng, stats: stats, written: map[*fakeDNS]int{}, obsAt: map[*fakeDNS]int{},
		pool: unrelatedRecords()}
	negTTL, initTTL := pick(60, 900, 3600), pick(60, 300, 3600)
	var minTTL uint32
	echo := false
	switch rng.IntN(4) {
	case 0:
		minTTL = 3600 // deSEC: stored and served as 3600
	case 1:
		minTTL, echo = 3600, true // served as 3600, the API says what was asked
	}
	if minTTL > 0 {
		stats["ttl-raising seeds"]++
	}
	ask := rng.IntN(2) == 0
	for _, z := range sc.zones {
		o := worldOpts{initial: z.initial, initTTL: initTTL, negTTL: negTTL, resolv: 2 + rng.IntN(4), minTTL: minTTL, echoTTL: echo, ask: ask}
		if len(z.initial) == 0 {
			o.initTTL = 0
		}
		first := time.Duration(0)
		if rng.IntN(4) == 0 {
			first = time.Duration(rng.IntN(61)) * time.Second // a hidden primary: no server serves a change at once
		}
		o.delays = []time.Duration{first}
		for range rng.IntN(3) {
			o.delays = append(o.delays, time.Duration(rng.IntN(181))*time.Second)
		}
		// Odd seeds: a provider that takes conditional changes (RFC
		// 2136), so other writers may also act between the engine's
		// observation and its change (the change is then refused).
		w.addZone(z.owner, o).conditional = seed%2 == 1
	}
	var deps []*fakeDeployer
	for _, d := range sc.deps {
		deps = append(deps, w.addDeployer(d.chain, 1+rng.IntN(3)))
	}
	w.dns, w.dep = w.zones[0], deps[0]
	for _, hp := range sc.hosts {
		var peers []string
		if sc.peers {
			for _, o := range sc.hosts {
				if o.name != hp.name && o.dep == hp.dep {
					peers = append(peers, o.name)
				}
			}
		}
		h := &actorHost{hostPlan: hp, sim: w.addHost(hp.name, w.zones[hp.zone], deps[hp.dep], peers...), fqdn: hp.name + "."}
		r.hosts = append(r.hosts, h)
	}
	reqTTL := pick(0, 60, 300, 3600)
	margin := []time.Duration{0, time.Second, 30 * time.Second}[rng.IntN(3)]
	r.ttlMax = max(initTTL, reqTTL, negTTL, minTTL, 60)
	r.writer = []int{0, 1, 1, 1, 2, 2}[rng.IntN(6)]
	r.midRun = rng.IntN(2) == 0
	seeded := rng.IntN(5) != 0
	if seeded {
		// A check timer has watched every owner for two days.
		for _, z := range w.zones {
			r.store.seed(z.Owner(), z.changes[0].rr, z.negTTL, testBase.Add(-48*time.Hour))
		}
	}
	w.logf("seed %d: %s; TTL %d (asked %d, provider minimum %d, echo %v), negative TTL %d, margin %s, writer %d (mid-run %v), tlsactl's resolver %v, check-timer history %v, conditional changes %v",
		seed, sc.name, initTTL, reqTTL, minTTL, echo, negTTL, margin, r.writer, r.midRun, ask, seeded, seed%2 == 1)
	for _, z := range w.zones {
		w.logf("  owner %s: delays %v, %d resolvers", z.Owner(), z.delays, len(z.res))
	}

	fail := func(what string) string {
		tr := w.trace
		if len(tr) > 300 {
			tr = append([]string{fmt.Sprintf("… %d earlier lines", len(tr)-300)}, tr[len(tr)-300:]...)
		}
		return fmt.Sprintf("%s\ntrace:\n  %s", what, strings.Join(tr, "\n  "))
	}
	checkWorld := func() string {
		if len(w.violations) > 0 {
			stale := true
			for _, v := range w.violations {
				stale = stale && strings.HasSuffix(v, "[stale replay]")
			}
			if stale {
				r.bug = "TestLedgerRevertBehindLaggingSecondary"
			}
			vs := w.violations
			if len(vs) > 6 {
				vs = append(vs[:6:6], fmt.Sprintf("… %d more", len(w.violations)-6))
			}
			return fail("world invariant broken:\n  " + strings.Join(vs, "\n  "))
		}
		if len(r.store.violations) > 0 {
			return fail("state or ledger not append-only:\n  " + strings.Join(r.store.violations, "\n  "))
		}
		return ""
	}

	ctx := context.Background()
	for _, h := range r.hosts {
		if h.plan == "" {
			continue
		}
		req := h.req(p)
		req.TTL, req.Margin = reqTTL, margin
		h.provided = h.plan == PlanRenew || rng.IntN(2) == 0
		if h.provided {
			m := h.newLeaf.mat
			req.New = &m
		}
		if _, err := w.engine(r.store, nil).Start(ctx, req); err != nil {
			return sc, r, fail(fmt.Sprintf("start %s: %v", h.name, err))
		}
		w.logf("started %s %s (material %v)", h.plan, h.name, h.provided)
	}
	if msg := checkWorld(); msg != "" {
		return sc, r, msg
	}

	events := 40 + rng.IntN(70)
	for i := range events {
		r.event(i)
		w.check("after event")
		if msg := checkWorld(); msg != "" {
			return sc, r, msg
		}
	}
	msg := r.liveness(fail, checkWorld)
	for _, z := range w.zones {
		stats["conflicts"] += z.conflicts
	}
	return sc, r, msg
}

// active returns the hosts with a rollover.
func (r *actorRun) active() []*actorHost {
	var out []*actorHost
	for _, h := range r.hosts {
		if h.plan != "" {
			out = append(out, h)
		}
	}
	return out
}

// crasher returns a crasher for a run of h's rollover that crashes at
// boundary at, tracks h's observations of its own owner and, mid-run, lets
// other writers act at observation boundaries.
func (r *actorRun) crasher(h *actorHost, at int, actors bool) *crasher {
	c := &crasher{w: r.w, at: at}
	c.afterObserve = func(d *fakeDNS, read bool) {
		if d.ask >= 0 {
			r.stats["resolver sightings"]++
		}
		if h != nil && read && d == h.sim.dns {
			r.seq++
			h.lastObs = r.seq
		}
	}
	if actors && r.midRun && r.writer > 0 {
		c.beforeObserve = func(d *fakeDNS) {
			// Only the owner about to be observed: a write between the
			// engine's last observation and its action is a race no
			// process can win.
			if r.rng.IntN(4) == 0 && r.externalWrite(d, "at a call boundary") {
				r.stats["mid-run writes"]++
			}
		}
		// With a conditional provider that race is won: the change is
		// refused and the engine observes again.
		c.beforeSet = func(d *fakeDNS) {
			if d.conditional && r.rng.IntN(3) == 0 && r.externalWrite(d, "between the engine's observation and its change") {
				r.stats["mid-run writes"]++
				r.stats["writes before a conditional change"]++
			}
		}
	}
	return c
}

func (r *actorRun) event(i int) {
	w, rng := r.w, r.rng
	ctx := context.Background()
	hosts := r.active()
	switch x := rng.IntN(100); {
	case x < 28: // an engine run of one host, maybe killed at a call boundary
		h := hosts[rng.IntN(len(hosts))]
		at := 0
		if rng.IntN(3) == 0 {
			at = 1 + rng.IntN(15)
		}
		if !h.aborting && rng.IntN(150) == 0 {
			h.aborting = true
			w.logf("event %d: the operator decides to abort %s", i, h.name)
		}
		e := w.engine(r.store, r.crasher(h, at, true))
		var desc string
		crashed := catchCrash(func() { desc = r.run(ctx, e, h) })
		if crashed != nil {
			r.stats["crashes"]++
			desc = fmt.Sprintf("crashed at boundary %d, %s", crashed.n, crashed.point)
		}
		w.logf("event %d: %s %s", i, h.name, desc)
	case x < 45: // time passes
		d := time.Duration(rng.Int64N(2*int64(r.ttlMax)+1)) * time.Second
		w.logf("event %d: clock +%s", i, d)
		w.advance(d)
	case x < 57: // a sender's resolver looks the RRset up at some server
		z := w.zones[rng.IntN(len(w.zones))]
		res, ns := rng.IntN(len(z.res)), rng.IntN(len(z.delays))
		if res == z.ask {
			res = 0
		}
		w.logf("event %d: resolver %d of %s asks ns%d", i, res, z.Owner(), ns+1)
		z.lookup(res, ns)
	case x < 74: // a transient fault
		r.fault(i)
	case x < 79:
		for _, h := range hosts {
			if !h.provided && rng.IntN(2) == 0 {
				at := 0
				if rng.IntN(3) == 0 {
					at = 1 + rng.IntN(2)
				}
				r.provide(h, at)
			}
		}
	case x < 93: // someone else writes the provider's RRset
		if r.writer == 0 {
			return
		}
		z := w.zones[rng.IntN(len(w.zones))]
		r.externalWrite(z, fmt.Sprintf("event %d", i))
	case x < 97: // a check timer looks at a host's owner
		h := r.hosts[rng.IntN(len(r.hosts))]
		r.stats["check timer"]++
		e := w.engine(r.store, r.crasher(nil, 0, false))
		_, _, err := e.Observe(ctx, h.name)
		w.logf("event %d: check timer observes %s: %v", i, h.name, err)
	default: // nothing happens
	}
}

// run advances (or, once the operator decided so, aborts) h's rollover
// with e and describes the result.
func (r *actorRun) run(ctx context.Context, e *Engine, h *actorHost) string {
	if h.aborting {
		st, err := e.Abort(ctx, h.name)
		desc := fmt.Sprintf("abort: %v", err)
		if st != nil {
			desc += fmt.Sprintf(" (%s)", st.Status)
		}
		return desc
	}
	out, err := e.Advance(ctx, h.name)
	return fmt.Sprintf("advance: %v; at %s, waiting %v %s", err, out.State.CurrentStep(), out.Waiting, out.Reason)
}

func (r *actorRun) fault(i int) {
	w, rng := r.w, r.rng
	d := w.zones[rng.IntN(len(w.zones))]
	dep := r.hosts[rng.IntN(len(r.hosts))].sim.dep
	armFault(w, rng, i, d, dep, r.store)
}

// provide stages h's new certificate, maybe crashing at boundary at.
func (r *actorRun) provide(h *actorHost, at int) {
	c := r.crasher(h, at, false)
	var err error
	crashed := catchCrash(func() { _, err = r.w.engine(r.store, c).Provide(context.Background(), h.name, h.newLeaf.mat) })
	switch {
	case crashed != nil:
		r.w.logf("provide %s: crashed at %s", h.name, crashed.point)
	case err != nil:
		r.w.logf("provide %s: %v", h.name, err)
		if strings.Contains(err.Error(), "takes no new certificate") || strings.Contains(err.Error(), string(StatusDone)) || strings.Contains(err.Error(), string(StatusAborted)) {
			h.provided = true // nothing left to provide for
		}
	default:
		r.w.logf("provide %s: ok", h.name)
		h.provided = true
	}
}

// served returns every chain served to senders of owner d, with the name
// each is checked for.
func (r *actorRun) matchesServed(d *fakeDNS, rs []tlsa.Record) bool {
	if len(rs) == 0 {
		return true // no TLSA: senders do not use DANE
	}
	for _, h := range r.w.hosts {
		if h.dns != d {
			continue
		}
		for _, ch := range h.dep.addrs {
			if !tlsa.Match(ch, rs, tlsa.MatchOptions{Names: []string{h.name}, Now: r.w.now()}).Matched() {
				return false
			}
		}
	}
	return true
}

// externalWrite is someone else setting d's RRset at the provider. The
// writer is a sane administrator: it writes only an RRset that matches every
// chain served now (so a violation afterwards is tlsactl's doing), and only
// once tlsactl (an engine run or a check timer) has read the provider since
// its last write: a change made and undone between two observations is
// what the ledger cannot know (see Ledger). A zone-as-code writer puts back
// what its source says, the RRset from before the rollover.
func (r *actorRun) externalWrite(d *fakeDNS, why string) bool {
	if r.quiet || r.writer == 0 || d.observed <= r.obsAt[d] {
		return false
	}
	rng := r.rng
	last := d.changes[len(d.changes)-1]
	cur := last.rr.Records
	for range 4 {
		var rs []tlsa.Record
		var what string
		op := rng.IntN(4)
		if r.writer == 2 {
			op = 0
		}
		switch op {
		case 0:
			rs, what = d.changes[0].rr.Records, "revert to the RRset from before the rollover"
		case 1:
			if len(cur) == 0 {
				continue
			}
			drop := cur[rng.IntN(len(cur))]
			rs, what = without(cur, []tlsa.Record{drop}), "drop "+abbrev(texts(drop))
		case 2:
			add := r.pool[rng.IntN(len(r.pool))]
			rs, what = with(cur, add), "add the unrelated "+abbrev(texts(add))
		case 3:
			if len(d.changes) < 2 {
				continue
			}
			rs, what = d.changes[rng.IntN(len(d.changes)-1)].rr.Records, "put back an older version"
		}
		if sameSet(rs, cur) || !r.matchesServed(d, rs) {
			continue
		}
		ttl := last.asked
		if ttl == 0 {
			ttl = last.rr.TTL
		}
		if rng.IntN(5) == 0 {
			ttl = []uint32{60, 300, 3600}[rng.IntN(3)]
		}
		for _, h := range r.hosts {
			if h.sim.dns != d || h.plan == "" {
				continue
			}
			st := r.store.state(h.fqdn)
			if st == nil || st.Status != StatusActive {
				continue
			}
			if need := required(st); len(need) > 0 && containsAll(cur, need) && !containsAll(rs, need) {
				h.removals++
				r.stats["removals"]++
			}
		}
		d.write(rs, ttl, true)
		r.seq++
		r.written[d], r.obsAt[d] = r.seq, d.observed
		r.stats["external writes"]++
		r.w.logf("  dns %s: EXTERNAL write (%s, %s): %s ttl %d (stored %d)", d.Owner(), why, what, rrKey(rs), ttl, d.provider().TTL)
		r.w.check("external write")
		return true
	}
	return false
}

// liveness stops the faults and the other writers and runs every rollover
// until it is done, aborted, or stopped where it must stop: at the
// step-back limit (someone removed its record more than maxStepBacks
// times), or refused because deploying would break an RRset that no step
// of the plan will change.
func (r *actorRun) liveness(fail func(string) string, checkWorld func() string) string {
	w := r.w
	for _, d := range w.zones {
		d.failCurrent, d.failSet, d.failSetApplied, d.failWait = 0, 0, 0, 0
		for i := range d.delays {
			d.setLag(i, false)
		}
	}
	for _, h := range r.hosts {
		h.sim.dep.failDeploy, h.sim.dep.failServed, h.sim.dep.stale = 0, 0, 0
	}
	r.store.failSave = 0
	r.quiet = true
	w.logf("faults and other writers stop")
	ctx := context.Background()
	hosts := r.active()
	progress := func(h *actorHost) string {
		st := r.store.state(h.fqdn)
		return fmt.Sprintf("%s %d %d %v", st.Status, st.Step, st.StepBacks, h.provided)
	}
	stuck := 0
	for round := 0; ; round++ {
		if round == 80 {
			return fail("liveness: 80 runs without faults and the rollovers are not settled")
		}
		var next time.Time
		moved, open := false, false
		errs := map[*actorHost]error{}
		for _, h := range hosts {
			if st := r.store.state(h.fqdn); st.Status != StatusActive || h.stopped != "" {
				continue
			}
			before := progress(h)
			if !h.provided {
				r.provide(h, 0)
			}
			e := w.engine(r.store, r.crasher(h, 0, false))
			var out Outcome
			var err error
			if h.aborting {
				_, err = e.Abort(ctx, h.name)
			} else {
				out, err = e.Advance(ctx, h.name)
			}
			st := r.store.state(h.fqdn)
			w.logf("liveness run %d of %s: %v; %s at %s, waiting %v %s", round, h.name, err, st.Status, st.CurrentStep(), out.Waiting, out.Reason)
			if msg := checkWorld(); msg != "" {
				return msg
			}
			if progress(h) != before {
				moved = true
			}
			if st.Status != StatusActive {
				continue
			}
			open = true
			switch {
			case err != nil && strings.Contains(err.Error(), "removed each time"):
				h.stopped = "step-back limit: " + err.Error()
			case w.now().Before(st.NotBefore):
				if next.IsZero() || st.NotBefore.Before(next) {
					next = st.NotBefore
				}
			case out.Waiting && strings.Contains(out.Reason, ErrNeedMaterial.Error()):
				h.provided = false // an interrupted provide: provide again
				moved = true
			case err != nil:
				errs[h] = err
			}
		}
		if !open {
			break
		}
		if moved || !next.IsZero() {
			stuck = 0
		} else if stuck++; stuck >= 4 {
			// Nothing moves and nothing waits for a time: whatever still
			// fails has stopped.
			for h, err := range errs {
				h.stopped = "refused: " + err.Error()
			}
			break
		}
		if !next.IsZero() {
			w.advanceTo(next)
		} else {
			w.advance(time.Duration(r.ttlMax) * time.Second)
		}
	}
	for _, h := range hosts {
		if msg := r.outcome(h, fail); msg != "" {
			return msg
		}
	}
	for _, d := range w.zones {
		r.stats["ttl rewrites"] += d.rewrites
	}
	return checkWorld()
}

// outcome checks where h's rollover ended.
func (r *actorRun) outcome(h *actorHost, fail func(string) string) string {
	w := r.w
	st := r.store.state(h.fqdn)
	d := h.sim.dns
	key := r.sc.name + "/" + h.name + "/"
	// Only when its own last look at the owner came after the last write
	// by someone else can the rollover be held to its RRset.
	settled := h.lastObs > r.written[d]
	cur := without(d.provider().Records, r.pool)
	r.stats["step-backs"] += st.StepBacks
	switch {
	case st.Status == StatusDone:
		r.stats[key+"done"]++
		if !allServe(h.sim.dep.addrs, h.newLeaf.cert) {
			return fail(fmt.Sprintf("%s done, but not every address serves the new certificate", h.name))
		}
		if r.written[d] == 0 && h.final != nil && !sameSet(cur, h.final) {
			return fail(fmt.Sprintf("%s done with RRset %s, want %s", h.name, rrKey(cur), rrKey(h.final)))
		}
		// Whatever someone else changed before the rollover's last look,
		// it ends with the records it publishes, without those it
		// retires (records it does not manage are not its business; on a
		// shared owner, another host may still need an old one).
		if settled {
			mine := mustParse(nonEmpty(st.NewEE))
			mine = with(mine, required(st)...)
			retired := mustParse(st.OldEE)
			if st.Plan == PlanCAMigration {
				retired = with(retired, mustParse(st.OldTA)...)
			}
			if len(r.sharing(h)) > 0 {
				retired = nil
			}
			retired = without(retired, mine)
			if !containsAll(cur, mine) || len(without(cur, without(cur, retired))) > 0 {
				r.bug = "TestConfirmSeesProviderDrift"
				return fail(fmt.Sprintf("%s done with RRset %s (unrelated records left out): want %s in it and %s not", h.name, rrKey(cur), rrKey(mine), rrKey(retired)))
			}
		}
	case st.Status == StatusAborted:
		r.stats[key+"aborted"]++
		if !h.aborting {
			return fail(fmt.Sprintf("%s aborted, but nobody asked for it", h.name))
		}
		deployed := false
		for _, c := range h.sim.dep.addrs {
			deployed = deployed || c[0].Equal(h.newLeaf.cert)
		}
		if !deployed && settled {
			for _, a := range mustParse(st.Added) {
				if containsRec(cur, a) {
					return fail(fmt.Sprintf("%s aborted before any deploy, but the RRset %s still holds %s it added", h.name, rrKey(cur), a))
				}
			}
		}
	case strings.HasPrefix(h.stopped, "step-back limit"):
		r.stats[key+"stopped at the step-back limit"]++
		r.stats["step-back stops"]++
		if h.removals <= maxStepBacks {
			return fail(fmt.Sprintf("%s stopped at the step-back limit, but its record was removed only %d times: %s", h.name, h.removals, h.stopped))
		}
		// The old chain is still served: everywhere, or (a deploy that
		// left an address behind) beside the new one, the RRset covering
		// both (the world check).
		for _, c := range h.sim.dep.addrs {
			if !c[0].Equal(h.old.cert) && !c[0].Equal(h.newLeaf.cert) {
				return fail(fmt.Sprintf("%s stopped at the step-back limit serving %q", h.name, c[0].Subject.CommonName))
			}
		}
		if !anyServe(h.sim.dep.addrs, h.old.cert) && !r.peerDeployed(h) {
			return fail(fmt.Sprintf("%s stopped at the step-back limit without the old certificate served", h.name))
		}
		return r.abortStopped(h, fail)
	case h.aborting && h.stopped != "":
		// Abort takes back the records the rollover added; it may refuse
		// only when the RRset without them matches no chain served
		// (someone else's records are all that would be left).
		back := without(d.provider().Records, mustParse(st.Added))
		if len(back) == 0 || r.matchesServed(d, back) {
			return fail(fmt.Sprintf("the abort of %s does not finish: %s", h.name, h.stopped))
		}
		r.stats[key+"abort refused"]++
		r.stats["refused/abort: the RRset without the records it added would match no served chain"]++
	case strings.HasPrefix(h.stopped, "refused"):
		r.stats[key+"refused"]++
		r.stats["refusals"]++
		if why := r.infeasible(h); why == "" {
			return fail(fmt.Sprintf("%s stopped (%s), although deploying its new certificate would break no RRset as published now", h.name, h.stopped))
		} else {
			w.logf("%s refused, rightly: %s", h.name, why)
			r.stats["refused/"+strings.SplitN(why, ":", 2)[0]]++
		}
		// Before the deploy the old certificate is served; after it (a
		// later DNS step refused) the new one.
		if st.Step <= stepIndex(st.Plan, StepDeploy) {
			if !allServe(h.sim.dep.addrs, h.old.cert) && !r.peerDeployed(h) {
				return fail(fmt.Sprintf("%s refused before its deploy, but no longer serves the old certificate", h.name))
			}
		} else if !allServe(h.sim.dep.addrs, h.newLeaf.cert) {
			return fail(fmt.Sprintf("%s refused after its deploy, but does not serve the new certificate everywhere", h.name))
		}
		return r.abortStopped(h, fail)
	default:
		return fail(fmt.Sprintf("%s still %s at %s: %s", h.name, st.Status, st.CurrentStep(), st.LastError))
	}
	return ""
}

func anyServe(served [][]*x509.Certificate, leaf *x509.Certificate) bool {
	for _, c := range served {
		if len(c) > 0 && c[0].Equal(leaf) {
			return true
		}
	}
	return false
}

// sharing returns the other hosts whose senders query h's owner.
func (r *actorRun) sharing(h *actorHost) []*actorHost {
	var out []*actorHost
	for _, o := range r.hosts {
		if o != h && o.sim.dns == h.sim.dns {
			out = append(out, o)
		}
	}
	return out
}

// peerDeployed reports whether a peer on h's deploy target deployed its
// new certificate (then h's server serves it, not h's old one).
func (r *actorRun) peerDeployed(h *actorHost) bool {
	for _, o := range r.hosts {
		if o != h && o.plan != "" && o.sim.dep == h.sim.dep && allServe(h.sim.dep.addrs, o.newLeaf.cert) {
			return true
		}
	}
	return false
}

// infeasible says why deploying h's new certificate would break an RRset as
// published now (h's owner, or a peer's), or "" when it would not.
func (r *actorRun) infeasible(h *actorHost) string {
	check := func(o *simHost) string {
		rs := o.dns.provider().Records
		if len(rs) == 0 || tlsa.Match(h.newLeaf.chain, rs, tlsa.MatchOptions{Names: []string{o.name}, Now: r.w.now()}).Matched() {
			return ""
		}
		return fmt.Sprintf("the deploy would break an RRset as published: %s of %s matches no record of the new chain for %s", rrKey(rs), o.dns.Owner(), o.name)
	}
	// A DNS step that would publish an RRset no longer matching what is
	// served (someone removed what the change was to be made beside).
	st := r.store.state(h.fqdn)
	if def := stepTable[st.CurrentStep()]; def.rrset != nil && (st.CurrentStep() != StepReplaceEE || st.NewEE != "") {
		want := def.rrset(st, h.sim.dns.provider().Records)
		if len(want) > 0 && !r.matchesServed(h.sim.dns, want) {
			return fmt.Sprintf("its DNS step would break a served chain: %s would publish %s", st.CurrentStep(), rrKey(want))
		}
	}
	if h.plan == PlanRenew {
		var tas []tlsa.Record
		for _, rec := range h.sim.dns.provider().Records {
			if rec.Usage == tlsa.DANETA {
				tas = append(tas, rec)
			}
		}
		if !tlsa.Match(h.newLeaf.chain, tas, tlsa.MatchOptions{Names: []string{h.name}, Now: r.w.now()}).Matched() {
			return "no published 2 x x covers the renewed chain: someone removed it"
		}
	}
	if why := check(h.sim); why != "" {
		return why
	}
	for _, name := range h.sim.peers {
		if why := check(r.w.host(name)); why != "" {
			return why
		}
	}
	return ""
}

// abortStopped aborts a rollover that stopped: the operator's way out.
func (r *actorRun) abortStopped(h *actorHost, fail func(string) string) string {
	st, err := r.w.engine(r.store, r.crasher(h, 0, false)).Abort(context.Background(), h.name)
	if err != nil || st.Status != StatusAborted {
		return fail(fmt.Sprintf("abort of the stopped %s: %v", h.name, err))
	}
	if len(r.w.violations) > 0 {
		return fail("world invariant broken by the abort:\n  " + strings.Join(r.w.violations, "\n  "))
	}
	return ""
}

// ---------------------------------------------------------------------------
// Focused tests for the multi-host worlds.

// sharedOwnerWorld is mx and mx2 (each its own server and key) whose
// _25._tcp names are CNAMEs to one owner holding initial.
func sharedOwnerWorld(t *testing.T, initial []tlsa.Record) (*world, *memStore) {
	p := getPKI(t)
	w := emptyWorld(t)
	w.dns = w.addZone(sharedOwner, worldOpts{initial: initial, initTTL: 300, negTTL: 300})
	w.dep = w.addDeployer(p.old.chain, 2)
	w.addHost(testHost, w.dns, w.dep)
	w.addHost(testHost2, w.dns, w.addDeployer(p.oldB.chain, 1))
	store := newMemStore()
	store.seed(sharedOwner, w.dns.changes[0].rr, 300, testBase.Add(-48*time.Hour))
	return w, store
}

// TestSharedOwnerOneLedger: two hosts whose TLSA owner is one name share
// one ledger, and both renew (the 2 1 1 covers both servers throughout).
func TestSharedOwnerOneLedger(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	w, store := sharedOwnerWorld(t, []tlsa.Record{ta211(p.ca1.inter), ee311(p.old.cert), ee311(p.oldB.cert)})
	e := w.engine(store, nil)
	for _, s := range []StartRequest{{Host: testHost, Plan: PlanRenew, New: &p.renew.mat, TTL: 300}, {Host: testHost2, Plan: PlanRenew, New: &p.renewB.mat, TTL: 300}} {
		st, err := e.Start(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if st.Owner != sharedOwner {
			t.Fatalf("owner %s, want %s", st.Owner, sharedOwner)
		}
	}
	for range 10 {
		out1, err1 := e.Advance(ctx, testHost)
		out2, err2 := e.Advance(ctx, testHost2)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if out1.State.Status == StatusDone && out2.State.Status == StatusDone {
			break
		}
		w.advanceTo(later(out1.State, out2.State))
	}
	if !w.servesOnly(p.renew.cert) || !allServe(w.host(testHost2).dep.addrs, p.renewB.cert) {
		t.Fatal("not both renewed")
	}
	if len(store.ledgers) != 1 {
		t.Errorf("%d ledgers, want one for the shared owner", len(store.ledgers))
	}
	assertRRSet(t, w.dns.provider().Records, ta211(p.ca1.inter), ee311(p.renew.cert), ee311(p.renewB.cert))
	assertClean(t, w, store)
}

// later returns the later NotBefore of two states (of those in the future).
func later(a, b *State) time.Time {
	t := a.NotBefore
	if b.NotBefore.After(t) {
		t = b.NotBefore
	}
	return t
}

// TestSharedOwnerRetireKeepsOtherHost: mx and mx2 publish at one owner
// (CNAMEs). mx migrates to CA two while mx2 stays on CA one. Retiring "the
// old CA's 2 1 1" and "the old 3 1 1" must not take away the records mx2's
// served chain relies on: senders of mx2 query the same RRset.
func TestSharedOwnerRetireKeepsOtherHost(t *testing.T) {
	p := getPKI(t)
	for _, tc := range []struct {
		name    string
		initial []tlsa.Record
		req     StartRequest
	}{
		{"ca-migration", []tlsa.Record{ta211(p.ca1.inter), ee311(p.old.cert), ee311(p.oldB.cert)},
			StartRequest{Host: testHost, Plan: PlanCAMigration, NewCA: p.ca2.inter, New: &p.mig.mat, TTL: 300}},
		{"key-prepublish", []tlsa.Record{ee311(p.old.cert), ee311(p.oldB.cert)},
			StartRequest{Host: testHost, Plan: PlanKeyPrepublish, NextKeySPKI: p.nextSPKI, New: &p.next.mat, TTL: 300}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, store := sharedOwnerWorld(t, tc.initial)
			e := w.engine(store, nil)
			if _, err := e.Start(context.Background(), tc.req); err != nil {
				t.Fatal(err)
			}
			for range 10 {
				out, err := e.Advance(context.Background(), testHost)
				if err != nil || out.State.Status != StatusActive {
					break
				}
				w.advanceTo(out.State.NotBefore)
			}
			if len(w.violations) > 0 {
				t.Errorf("mx2's chain (CA one, its own key) is no longer covered by the shared RRset %s:\n  %s",
					rrKey(w.dns.provider().Records), strings.Join(w.violations[:min(3, len(w.violations))], "\n  "))
			}
		})
	}
}

// TestDeployTargetWorld: two hosts on one server, each with its own owner,
// migrate together; a revert of mx2's RRset by someone else during its
// wait steps mx2 back and holds mx's deploy (mx2's senders would see the
// new chain) until mx2's republished record has aged.
func TestDeployTargetWorld(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	w, store := deployTargetWorld(t)
	e := w.engine(store, nil)
	for _, h := range []string{testHost, testHost2} {
		if _, err := e.Start(ctx, StartRequest{Host: h, Plan: PlanCAMigration, NewCA: p.ca2.inter, New: &p.migAB.mat, TTL: 300}); err != nil {
			t.Fatal(err)
		}
	}
	zb := w.host(testHost2).dns
	outA, err := e.Advance(ctx, testHost)
	if err != nil || !outA.Waiting {
		t.Fatal(err, outA)
	}
	if _, err := e.Advance(ctx, testHost2); err != nil {
		t.Fatal(err)
	}
	w.advance(100 * time.Second)
	zb.write(zb.changes[0].rr.Records, 300, true) // someone reverts mx2's RRset
	w.advanceTo(outA.State.NotBefore)
	_, err = e.Advance(ctx, testHost)
	if w.dep.deploys != 0 || !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), testHost2) {
		t.Fatalf("advance of mx: %v, %d deploys; want a refusal naming mx2, whose RRset lost the new CA", err, w.dep.deploys)
	}
	for range 40 {
		o1, _ := e.Advance(ctx, testHost)
		o2, _ := e.Advance(ctx, testHost2)
		if o1.State.Status != StatusActive && o2.State.Status != StatusActive {
			break
		}
		next := w.now().Add(5 * time.Minute)
		for _, s := range []*State{o1.State, o2.State} {
			if s.Status == StatusActive && s.NotBefore.After(w.now()) && s.NotBefore.Before(next) {
				next = s.NotBefore
			}
		}
		w.advanceTo(next)
	}
	for _, h := range []string{testHost, testHost2} {
		if st := store.state(h + "."); st.Status != StatusDone {
			t.Fatalf("%s: %s at %s (%s)", h, st.Status, st.CurrentStep(), st.LastError)
		}
	}
	if st := store.state(testHost2 + "."); st.StepBacks != 1 {
		t.Errorf("mx2 stepped back %d times, want 1", st.StepBacks)
	}
	assertRRSet(t, zb.provider().Records, ta211(p.ca2.inter), ee311(p.migAB.cert))
	assertClean(t, w, store)
}

// deployTargetWorld is mx and mx2 answered by one server (one certificate
// naming both), each with its own owner holding its 3 1 1 and CA one's
// 2 1 1; each is the other's peer.
func deployTargetWorld(t testing.TB) (*world, *memStore) {
	p := getPKI(t)
	w := emptyWorld(t)
	initial := []tlsa.Record{ee311(p.oldAB.cert), ta211(p.ca1.inter)}
	w.dns = w.addZone(testOwner, worldOpts{initial: initial, initTTL: 300, negTTL: 300})
	zb := w.addZone(ownerB, worldOpts{initial: initial, initTTL: 300, negTTL: 300, delays: []time.Duration{0, 45 * time.Second}})
	w.dep = w.addDeployer(p.oldAB.chain, 2)
	w.addHost(testHost, w.dns, w.dep, testHost2)
	w.addHost(testHost2, zb, w.dep, testHost)
	store := newMemStore()
	for _, z := range w.zones {
		store.seed(z.Owner(), z.changes[0].rr, 300, testBase.Add(-48*time.Hour))
	}
	return w, store
}

// TestCrashResumeWorldActors kills the engine at every call boundary of a
// run of two hosts on one deploy target (both migrating) with someone else
// reverting one owner during the wait, and checks that fresh engines finish
// both rollovers with the world invariant holding throughout.
func TestCrashResumeWorldActors(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	// script runs both rollovers to the end with c at every call; the
	// revert comes after the first wait. It returns the boundaries seen.
	script := func(t *testing.T, c *crasher) (*world, *memStore, *crasher, bool) {
		w, store := deployTargetWorld(t)
		c.w = w
		e := w.engine(store, c)
		for _, h := range []string{testHost, testHost2} {
			if _, err := w.engine(store, nil).Start(ctx, StartRequest{Host: h, Plan: PlanCAMigration, NewCA: p.ca2.inter, New: &p.migAB.mat, TTL: 300, Margin: 5 * time.Second}); err != nil {
				t.Fatal(err)
			}
		}
		reverted := false
		crashed := catchCrash(func() {
			for range 30 {
				var sts []*State
				for _, h := range []string{testHost, testHost2} {
					out, err := e.Advance(ctx, h)
					if err != nil && !errors.Is(err, ErrUnsafe) {
						t.Fatalf("advance %s: %v", h, err)
					}
					sts = append(sts, out.State)
				}
				if sts[0].Status != StatusActive && sts[1].Status != StatusActive {
					return
				}
				if !reverted && w.now().After(testBase.Add(100*time.Second)) {
					zb := w.host(testHost2).dns
					zb.write(zb.changes[0].rr.Records, 300, true)
					reverted = true
				}
				next := w.now().Add(time.Minute)
				for _, s := range sts {
					if s.Status == StatusActive && s.NotBefore.After(w.now()) && s.NotBefore.Before(next) {
						next = s.NotBefore
					}
				}
				w.advanceTo(next)
			}
			t.Fatal("not done in 30 rounds")
		}) != nil
		return w, store, c, crashed
	}
	_, store, ref, _ := script(t, &crasher{})
	for _, h := range []string{testHost, testHost2} {
		if st := store.state(h + "."); st.Status != StatusDone {
			t.Fatalf("reference run: %s %s", h, st.Status)
		}
	}
	step := 1
	if testing.Short() {
		step = 4
	}
	t.Logf("%d crash points; a crash at every %s", ref.n, map[bool]string{true: "fourth (-short)", false: "one"}[step > 1])
	for k := 1; k <= ref.n; k += step {
		t.Run(fmt.Sprint(k), func(t *testing.T) {
			t.Parallel()
			w, store, c, crashed := script(t, &crasher{at: k})
			if !crashed {
				return // the run took another path and ended before boundary k
			}
			// Resume: fresh engines, no more crashes.
			e := w.engine(store, nil)
			for range 30 {
				done := true
				next := w.now().Add(time.Minute)
				for _, h := range []string{testHost, testHost2} {
					out, _ := e.Advance(ctx, h)
					if out.State.Status == StatusActive {
						done = false
						if out.State.NotBefore.After(w.now()) && out.State.NotBefore.Before(next) {
							next = out.State.NotBefore
						}
					}
				}
				if done {
					break
				}
				w.advanceTo(next)
			}
			point := c.points[len(c.points)-1]
			for _, h := range []string{testHost, testHost2} {
				if st := store.state(h + "."); st.Status != StatusDone {
					t.Fatalf("crash at %d (%s): %s resumed to %s at %s (%s)", k, point, h, st.Status, st.CurrentStep(), st.LastError)
				}
				if d := w.host(h).dns; !sameSet(d.provider().Records, []tlsa.Record{ta211(p.ca2.inter), ee311(p.migAB.cert)}) {
					t.Errorf("crash at %d (%s): %s ends with %s", k, point, d.Owner(), rrKey(d.provider().Records))
				}
			}
			if !w.servesOnly(p.migAB.cert) {
				t.Errorf("crash at %d (%s): not every address serves the new certificate", k, point)
			}
			assertClean(t, w, store)
		})
	}
}

// stopAt runs e's Advance of testHost until the engine reaches failpoint
// point, and stops the "process" there.
func stopAt(t *testing.T, w *world, e *Engine, point string) {
	t.Helper()
	inner := e.Failpoint
	e.Failpoint = func(p string) {
		inner(p)
		if p == point {
			panic(crashSignal{point: p})
		}
	}
	defer func() { e.Failpoint = inner }()
	for range 20 {
		var out Outcome
		var err error
		if catchCrash(func() { out, err = e.Advance(context.Background(), testHost) }) != nil {
			return
		}
		if err != nil || out.State.Status != StatusActive {
			t.Fatalf("did not reach %s: %v, %s", point, err, out.State.Status)
		}
		w.advanceTo(out.State.NotBefore)
	}
	t.Fatalf("did not reach %s", point)
}

// TestDriftAfterDeployRepaired: after the deploy, someone else takes a
// record the plan published out of the RRset (the new chain is still
// covered, so that is no breach). The steps that follow observe it and
// must put it back: the rollover ends with the plan's final RRset, not
// "done" with the new CA's 2 1 1 gone (the next renew would then find no
// 2 x x to rely on).
func TestDriftAfterDeployRepaired(t *testing.T) {
	p := getPKI(t)
	for _, tc := range []struct {
		name  string
		sc    scenario
		after string        // the failpoint after which someone writes
		write []tlsa.Record // what they write
	}{
		// After replace-3-1-1 the new CA's 2 1 1 is removed (the new 3 1 1
		// covers the chain); retire-old-ca leaves the new 3 1 1 alone.
		{"ca-migration/new-2-1-1-removed", scenarios(p)[1], "step-done:replace-3-1-1", []tlsa.Record{ta211(p.ca1.inter), ee311(p.mig.cert)}},
		// After replace-3-1-1 the RRset from before it is put back (the
		// new CA's 2 1 1 covers the chain): the new 3 1 1 is gone, the old
		// one back.
		{"ca-migration/older-rrset-put-back", scenarios(p)[1], "step-done:replace-3-1-1", []tlsa.Record{ta211(p.ca1.inter), ta211(p.ca2.inter), ee311(p.old.cert)}},
		// After the deploy the RRset is emptied (no TLSA: safe);
		// replace-3-1-1 adds the new 3 1 1 to nothing.
		{"ca-migration-from-none/emptied", scenarios(p)[3], "step-done:deploy-certificate", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, store := tc.sc.world(t), newMemStore()
			tc.sc.start(t, w, store, true, 300, 0)
			e := w.engine(store, nil)
			stopAt(t, w, e, tc.after)
			w.dns.write(tc.write, 300, true)
			w.check("external write")
			w.advance(time.Minute)
			st := w.runToEnd(t, e)
			if st.Status != StatusDone {
				t.Fatalf("status %s", st.Status)
			}
			assertRRSet(t, w.dns.provider().Records, tc.sc.final...)
			assertClean(t, w, store)
		})
	}
}

// TestWorldCheckerCatchesUnseenRevert shows what the ledger cannot know
// and the world check still sees: during a ca-migration's wait someone
// reverts the RRset and puts it back before tlsactl (engine or check
// timer) looks again; caches may hold the revert, and the deploy that
// follows breaks them. The property test's writers therefore write again
// only after tlsactl has read the provider.
func TestWorldCheckerCatchesUnseenRevert(t *testing.T) {
	sc := scenarios(getPKI(t))[1]
	w, store := sc.world(t), newMemStore()
	sc.start(t, w, store, true, 300, 0)
	e := w.engine(store, nil)
	out, err := e.Advance(context.Background(), testHost)
	if err != nil || !out.Waiting {
		t.Fatal(err, out)
	}
	published := w.dns.provider()
	w.advance(time.Minute)
	w.dns.write(sc.initial, 3600, true) // reverted: served at once by ns1
	w.advance(time.Minute)
	w.dns.write(published.Records, published.TTL, true) // and put back, unseen
	w.advanceTo(out.State.NotBefore)
	if st := w.runToEnd(t, e); st.Status != StatusDone {
		t.Fatalf("status %s", st.Status)
	}
	if len(w.violations) == 0 {
		t.Fatal("the world check missed a deploy while an unseen revert may be cached")
	}
}

// TestLedgerRevertBehindLaggingSecondary: someone drops the 2 1 1 (the old
// chain still matches its 3 1 1) and puts the RRset back half a minute
// later. tlsactl saw the drop at the provider and ns1; ns2 applies changes
// in order, 150 s late, so it still serves the RRset from before the drop,
// which has the same records as the one put back. The ledger takes that for
// ns2 serving the successor and marks the drop superseded; but ns2 serves
// the drop from +160 s to +180 s, and a renewed certificate (which only the
// 2 1 1 covers) deployed before +160 s + TTL breaks resolvers that fetched
// it there.
func TestLedgerRevertBehindLaggingSecondary(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[0] // renew
	w := newWorld(t, worldOpts{initial: sc.initial, initTTL: 60, negTTL: 60, delays: []time.Duration{0, 150 * time.Second}})
	store := newMemStore()
	store.seed(testOwner, w.dns.changes[0].rr, 60, testBase.Add(-48*time.Hour))
	e := w.engine(store, nil)
	if _, err := e.Start(ctx, StartRequest{Host: testHost, Plan: PlanRenew, New: &p.renew.mat}); err != nil {
		t.Fatal(err)
	}
	w.advance(10 * time.Second)
	w.dns.write([]tlsa.Record{ee311(p.old.cert)}, 60, true) // the 2 1 1 dropped
	w.advance(10 * time.Second)
	if _, _, err := e.Observe(ctx, testHost); err != nil { // a check timer sees it
		t.Fatal(err)
	}
	w.advance(10 * time.Second)
	w.dns.write(sc.initial, 60, true) // and put back
	w.advance(10 * time.Second)
	for range 100 {
		out, err := e.Advance(ctx, testHost)
		if err != nil {
			t.Fatal(err)
		}
		if out.State.Status != StatusActive {
			break
		}
		w.advanceTo(out.State.NotBefore)
	}
	w.advance(10 * time.Minute) // ns2 catches up
	if !w.servesOnly(p.renew.cert) {
		t.Fatal("not renewed")
	}
	if len(w.violations) > 0 {
		l, _ := store.LoadLedger(testOwner)
		var vs []string
		for _, v := range l.Versions {
			sup := "live"
			if !v.Superseded.IsZero() {
				sup = "superseded at +" + v.Superseded.Sub(testBase).String()
			}
			vs = append(vs, fmt.Sprintf("%s first seen +%s, %s", abbrev(v.Records), v.FirstSeen.Sub(testBase), sup))
		}
		t.Errorf("deployed while ns2 was still to serve the RRset without the 2 1 1 (ledger: %s):\n  %s", strings.Join(vs, "; "), w.violations[0])
	}
}

// writeAfterWait is a DNS on which someone else writes rs at the provider
// right after the first WaitServed for an RRset holding trigger returns:
// between tlsactl's propagation wait and its confirming observation.
type writeAfterWait struct {
	DNS
	fd      *fakeDNS
	trigger tlsa.Record
	rs      []tlsa.Record
	done    bool
}

func (d *writeAfterWait) WaitServed(ctx context.Context, want RRSet) error {
	err := d.DNS.WaitServed(ctx, want)
	if err == nil && !d.done && containsRec(want.Records, d.trigger) {
		d.done = true
		d.fd.write(d.rs, d.fd.provider().TTL, true)
		d.fd.w.logf("  dns: EXTERNAL write %s", rrKey(d.rs))
	}
	return err
}

// TestConfirmSeesProviderDrift: the provider is a hidden primary (no
// server serves a change at once). Right after replace-3-1-1's propagation
// wait, someone puts the RRset from before the rollover back. The
// confirming observation sees it at the provider, while every server still
// serves the new RRset: the step must not count as confirmed, else the
// rollover is "done" with the old 3 1 1 back and the new one gone.
func TestConfirmSeesProviderDrift(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[0] // renew
	w := newWorld(t, worldOpts{initial: sc.initial, initTTL: 300, negTTL: 300, delays: []time.Duration{20 * time.Second, 40 * time.Second}})
	store := newMemStore()
	store.seed(testOwner, w.dns.changes[0].rr, 300, testBase.Add(-48*time.Hour))
	e := w.engine(store, nil)
	inner := e.Target
	wr := &writeAfterWait{fd: w.dns, trigger: ee311(p.renew.cert), rs: sc.initial}
	e.Target = func(host string) (Target, error) {
		tg, err := inner(host)
		wr.DNS = tg.DNS
		tg.DNS = wr
		return tg, err
	}
	if _, err := e.Start(ctx, StartRequest{Host: testHost, Plan: PlanRenew, New: &p.renew.mat}); err != nil {
		t.Fatal(err)
	}
	var st *State
	for range 10 {
		out, _ := e.Advance(ctx, testHost)
		if st = out.State; st.Status != StatusActive {
			break
		}
		next := w.now().Add(time.Minute)
		if out.State.NotBefore.After(next) {
			next = out.State.NotBefore
		}
		w.advanceTo(next)
	}
	if !wr.done {
		t.Fatal("the other writer never wrote")
	}
	if st.Status != StatusDone {
		t.Fatalf("status %s at %s: %s", st.Status, st.CurrentStep(), st.LastError)
	}
	assertRRSet(t, w.dns.provider().Records, sc.final...)
	assertClean(t, w, store)
}
