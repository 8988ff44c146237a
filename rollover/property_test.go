package rollover

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var propSeeds = flag.Int("rollover.seeds", 0, "seeds for TestPropertyRollover (default 300; 60 with -short)")
var propSeed = flag.Uint64("rollover.seed", 0, "run TestPropertyRollover for this one seed only")

// TestPropertyRollover drives each plan through random interleavings of
// engine runs, clock jumps (0..2×TTL), crashes at random call boundaries,
// propagation delays, lagging secondaries and other transient faults, late
// material and resolver lookups. After every event (and at every call
// boundary and propagation instant inside the engine) the world invariant
// must hold; once the faults stop, the rollover must finish with the plan's
// final RRset (or, if it was aborted, leave DNS matching what is served).
func TestPropertyRollover(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 60
	}
	if *propSeeds > 0 {
		n = *propSeeds
	}
	first := uint64(1)
	if *propSeed != 0 {
		first, n = *propSeed, 1
	}
	getPKI(t) // built here, not in a worker
	// Seeds are independent worlds: run them on every core, then report in
	// seed order (the first failing seed, as a sequential run would).
	msgs, stats := parallelSeeds(n, func(i int, stats map[string]int) string {
		return runProperty(t, first+uint64(i), stats)
	})
	for i, msg := range msgs {
		if seed := first + uint64(i); msg != "" {
			t.Fatalf("seed %d (rerun: go test ./rollover -run TestPropertyRollover -rollover.seed=%d):\n%s", seed, seed, msg)
		}
	}
	t.Logf("%d seeds: %v", n, stats)
}

// parallelSeeds runs run(i, stats) for i in [0, n) on every core and
// returns each result by i, and the stats of all runs summed.
func parallelSeeds(n int, run func(i int, stats map[string]int) string) ([]string, map[string]int) {
	return parallelSeedsOn(n, max(1, runtime.GOMAXPROCS(0)), run)
}

// parallelSeedsOn is parallelSeeds with workers goroutines (more than the
// cores for seeds that wait on a real store's I/O).
func parallelSeedsOn(n, workers int, run func(i int, stats map[string]int) string) ([]string, map[string]int) {
	msgs := make([]string, n)
	each := make([]map[string]int, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				each[i] = map[string]int{}
				msgs[i] = run(i, each[i])
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	stats := map[string]int{}
	for _, st := range each {
		for k, v := range st {
			stats[k] += v
		}
	}
	return msgs, stats
}

type propRun struct {
	w        *world
	store    testStore
	sc       scenario
	rng      *rand.Rand
	ttlMax   uint32
	provided bool
	aborting bool
	stats    map[string]int
}

func runProperty(tb testing.TB, seed uint64, stats map[string]int) (failure string) {
	return runPropertyOn(tb, seed, stats, newMemStore())
}

// runPropertyOn is runProperty on store (fresh and empty: a memStore, or a
// real store wrapped by newHookStore).
func runPropertyOn(tb testing.TB, seed uint64, stats map[string]int, store testStore) (failure string) {
	p := getPKI(tb)
	rng := rand.New(rand.NewPCG(seed, 0x7715a))
	scs := scenarios(p)
	sc := scs[rng.IntN(len(scs))]
	pick := func(xs ...uint32) uint32 { return xs[rng.IntN(len(xs))] }
	o := worldOpts{initial: sc.initial, initTTL: sc.initTTL, negTTL: pick(60, 900, 3600), addrs: 1 + rng.IntN(3), resolv: 3}
	if len(sc.initial) > 0 {
		o.initTTL = pick(60, 300, 3600)
	}
	o.delays = []time.Duration{0}
	for range rng.IntN(3) {
		o.delays = append(o.delays, time.Duration(rng.IntN(181))*time.Second)
	}
	reqTTL := pick(0, 60, 300, 3600)
	margin := []time.Duration{0, time.Second, 30 * time.Second}[rng.IntN(3)]
	w := newWorld(tb, o)
	r := &propRun{w: w, store: store, sc: sc, rng: rng, stats: stats}
	r.ttlMax = max(o.initTTL, reqTTL, o.negTTL, 60)
	r.provided = sc.plan == PlanRenew || rng.IntN(2) == 0
	w.logf("seed %d: %s, initial TTL %d, TTL %d, negative TTL %d, margin %s, delays %v, %d addresses, material at start %v",
		seed, sc.name, o.initTTL, reqTTL, o.negTTL, margin, o.delays, o.addrs, r.provided)
	sc.start(tb, w, r.store, r.provided, reqTTL, margin)

	events := 40 + rng.IntN(60)
	abortAt := -1
	if rng.IntN(6) == 0 {
		abortAt = rng.IntN(events)
	}
	fail := func(what string) string {
		tr := w.trace
		if len(tr) > 250 {
			tr = append([]string{fmt.Sprintf("… %d earlier lines", len(tr)-250)}, tr[len(tr)-250:]...)
		}
		return fmt.Sprintf("%s\ntrace:\n  %s", what, strings.Join(tr, "\n  "))
	}
	checkWorld := func() string {
		if len(w.violations) > 0 {
			return fail("world invariant broken:\n  " + strings.Join(w.violations, "\n  "))
		}
		if v := r.store.violationList(); len(v) > 0 {
			return fail("state not append-only:\n  " + strings.Join(v, "\n  "))
		}
		return ""
	}

	for i := range events {
		if i == abortAt {
			r.aborting = true
			w.logf("event %d: the operator decides to abort", i)
		}
		r.event(i)
		w.check("after event")
		if msg := checkWorld(); msg != "" {
			return msg
		}
	}

	// Liveness: the faults stop, the material is there, time moves on.
	d := w.dns
	d.failCurrent, d.failSet, d.failSetApplied, d.failWait = 0, 0, 0, 0
	for i := range d.delays {
		d.setLag(i, false)
	}
	w.dep.failDeploy, w.dep.failServed, w.dep.stale = 0, 0, 0
	r.store.clearFaults()
	w.logf("faults stop")
	ctx := context.Background()
	var st *State
	for round := 0; ; round++ {
		if round == 40 {
			return fail(fmt.Sprintf("liveness: still %s at %s after 40 runs without faults; last error %q", st.Status, st.CurrentStep(), st.LastError))
		}
		if !r.provided {
			r.provide(0)
		}
		e := w.engine(r.store, nil)
		var out Outcome
		var err error
		if r.aborting {
			st, err = e.Abort(ctx, testHost)
			if st == nil {
				st = r.store.state(testFQDN)
			}
		} else {
			out, err = e.Advance(ctx, testHost)
			st = out.State
		}
		w.logf("liveness run %d: %v; %s at %s, waiting %v %s", round, err, st.Status, st.CurrentStep(), out.Waiting, out.Reason)
		if msg := checkWorld(); msg != "" {
			return msg
		}
		if st.Status != StatusActive {
			break
		}
		switch {
		case w.now().Before(st.NotBefore):
			w.advanceTo(st.NotBefore)
		case errors.Is(err, ErrUnsafe):
			w.advance(time.Duration(r.ttlMax) * time.Second)
		case out.Waiting && strings.Contains(out.Reason, ErrNeedMaterial.Error()):
			r.provided = false // an interrupted provide: provide again
		}
	}
	stats[sc.name+"/"+string(st.Status)]++
	switch st.Status {
	case StatusDone:
		if !sameSet(d.provider().Records, sc.final) {
			return fail(fmt.Sprintf("done with RRset %s, want %s", rrKey(d.provider().Records), rrKey(sc.final)))
		}
		if !w.servesOnly(sc.newLeaf.cert) {
			return fail("done, but not every address serves the new certificate")
		}
	case StatusAborted:
		// DNS must cover what is served (the world check does this for
		// every cached RRset); before the deploy, abort restores the start.
		if w.dep.deploys == 0 && !sameSet(d.provider().Records, sc.initial) {
			return fail(fmt.Sprintf("aborted before any deploy with RRset %s, want the initial %s", rrKey(d.provider().Records), rrKey(sc.initial)))
		}
	}
	if st.Status == StatusDone && r.aborting {
		stats["abort-too-late"]++
	}
	return checkWorld()
}

// event runs one random event of the chaos phase.
func (r *propRun) event(i int) {
	w, rng := r.w, r.rng
	ctx := context.Background()
	switch x := rng.IntN(100); {
	case x < 30: // an engine run, maybe killed at a call boundary
		c := &crasher{w: w}
		if rng.IntN(3) == 0 {
			c.at = 1 + rng.IntN(12)
		}
		e := w.engine(r.store, c)
		var desc string
		crashed := catchCrash(func() {
			if r.aborting {
				st, err := e.Abort(ctx, testHost)
				desc = fmt.Sprintf("abort: %v", err)
				if st != nil {
					desc += fmt.Sprintf(" (%s)", st.Status)
				}
				return
			}
			out, err := e.Advance(ctx, testHost)
			desc = fmt.Sprintf("advance: %v; at %s, waiting %v %s", err, out.State.CurrentStep(), out.Waiting, out.Reason)
		})
		if crashed != nil {
			r.stats["crashes"]++
			desc = fmt.Sprintf("crashed at boundary %d, %s", crashed.n, crashed.point)
		}
		w.logf("event %d: %s", i, desc)
	case x < 50: // time passes
		d := time.Duration(rng.Int64N(2*int64(r.ttlMax)+1)) * time.Second
		w.logf("event %d: clock +%s", i, d)
		w.advance(d)
	case x < 65: // a resolver looks the RRset up
		res, ns := rng.IntN(len(w.dns.res)), rng.IntN(len(w.dns.delays))
		w.logf("event %d: resolver %d asks ns%d", i, res, ns+1)
		w.lookup(res, ns)
	case x < 88: // a transient fault
		armFault(w, rng, i, w.dns, w.dep, r.store)
	case x < 93:
		if !r.provided {
			at := 0
			if rng.IntN(3) == 0 {
				at = 1 + rng.IntN(2)
			}
			r.provide(at)
		}
	default: // nothing happens
	}
}

var faultNames = []string{"provider Set rejected", "provider Set applied but failed", "lag", "WaitServed error",
	"deploy error", "deploy leaves an old chain", "probe error", "provider read error", "store Save error"}

// provide stages the new certificate, maybe crashing at boundary at.
func (r *propRun) provide(at int) {
	c := &crasher{w: r.w, at: at}
	var err error
	crashed := catchCrash(func() { _, err = r.w.engine(r.store, c).Provide(context.Background(), testHost, r.sc.newLeaf.mat) })
	switch {
	case crashed != nil:
		r.w.logf("provide: crashed at %s", crashed.point)
	case err != nil:
		r.w.logf("provide: %v", err)
		if strings.Contains(err.Error(), "already") || strings.Contains(err.Error(), string(StatusDone)) || strings.Contains(err.Error(), string(StatusAborted)) {
			r.provided = true // nothing left to provide for
		}
	default:
		r.w.logf("provide: ok")
		r.provided = true
	}
}
