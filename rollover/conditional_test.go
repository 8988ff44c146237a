package rollover

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// TestConditionalPublishKeepsConcurrentEdit: someone else adds a record to
// the RRset after the engine observed it and before its change reaches the
// provider. A provider that takes conditional changes refuses the change;
// the engine observes again and publishes the new CA's 2 1 1 beside the
// other writer's record, which stays to the end. An unconditional provider
// (the hosted APIs) overwrites it: the gap the condition closes.
func TestConditionalPublishKeepsConcurrentEdit(t *testing.T) {
	p := getPKI(t)
	for _, conditional := range []bool{true, false} {
		name := map[bool]string{true: "conditional", false: "unconditional"}[conditional]
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			sc := scenarios(p)[1] // ca-migration
			w, store := sc.world(t), newMemStore()
			w.dns.conditional = conditional
			sc.start(t, w, store, true, 300, 10*time.Second)
			extra := unrelatedRecords()[2] // the backup MX's key
			c := &crasher{w: w}
			edits := 0
			c.beforeSet = func(d *fakeDNS) {
				if edits == 0 {
					edits++
					externalWrite(w, with(d.provider().Records, extra)...)
				}
			}
			e := w.engine(store, c)
			out, err := e.Advance(ctx, testHost)
			if err != nil || !out.Waiting {
				t.Fatalf("first run: %v %+v", err, out)
			}
			rs := w.dns.provider().Records
			if !containsRec(rs, ta211(p.ca2.inter)) {
				t.Fatalf("the new CA's 2 1 1 is not published: %s", rrKey(rs))
			}
			hist := eventsText(out.State)
			if !conditional {
				if containsRec(rs, extra) || w.dns.conflicts != 0 {
					t.Fatalf("an unconditional provider kept the other writer's record (%s, %d conflicts): the test shows nothing", rrKey(rs), w.dns.conflicts)
				}
				return
			}
			if !containsRec(rs, extra) {
				t.Fatalf("the other writer's record %s was overwritten: %s", abbrev(texts(extra)), rrKey(rs))
			}
			if w.dns.conflicts != 1 || w.dns.sets != 1 || strings.Count(hist, "changed underneath") != 1 {
				t.Fatalf("%d refused, %d made; history %s: want one refused change, one made, one \"changed underneath\" event", w.dns.conflicts, w.dns.sets, hist)
			}
			if st := w.runToEnd(t, e); st.Status != StatusDone || !w.servesOnly(p.mig.cert) {
				t.Fatalf("status %s", st.Status)
			}
			assertRRSet(t, w.dns.provider().Records, append(append([]tlsa.Record(nil), sc.final...), extra)...)
			assertClean(t, w, store)
		})
	}
}

// TestConditionalPublishGivesUp: a writer that changes the RRset before
// every change makes the run stop after maxConflicts refused changes with
// ErrRRsetChanged, having changed nothing itself; once the writer stops,
// the next run publishes.
func TestConditionalPublishGivesUp(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[1]
	w, store := sc.world(t), newMemStore()
	w.dns.conditional = true
	sc.start(t, w, store, true, 300, 10*time.Second)
	pool := unrelatedRecords()
	c := &crasher{w: w}
	edits := 0
	c.beforeSet = func(d *fakeDNS) {
		externalWrite(w, append(append([]tlsa.Record(nil), sc.initial...), pool[edits%len(pool)])...)
		edits++
	}
	e := w.engine(store, c)
	_, err := e.Advance(ctx, testHost)
	if !errors.Is(err, ErrRRsetChanged) {
		t.Fatalf("Advance with a writer before every change = %v, want ErrRRsetChanged", err)
	}
	if w.dns.conflicts != maxConflicts || w.dns.sets != 0 {
		t.Fatalf("%d refused, %d made; want %d refused and none made", w.dns.conflicts, w.dns.sets, maxConflicts)
	}
	if rs := w.dns.provider().Records; !containsRec(rs, pool[(edits-1)%len(pool)]) {
		t.Fatalf("the provider holds %s, not the other writer's last RRset", rrKey(rs))
	}
	c.beforeSet = nil
	out, err := e.Advance(ctx, testHost)
	if err != nil || !out.Waiting {
		t.Fatalf("run after the writer stopped: %v %+v", err, out)
	}
	if rs := w.dns.provider().Records; !containsRec(rs, ta211(p.ca2.inter)) || !containsRec(rs, pool[(edits-1)%len(pool)]) {
		t.Fatalf("after the writer stopped the provider holds %s: want the new CA's 2 1 1 beside the writer's record", rrKey(rs))
	}
	assertClean(t, w, store)
}

// TestConditionalBatchRefusedAtomically: a fleet batch of three hosts in
// one zone; someone else edits one host's RRset between the observations
// and the batch. The conditional batch is refused as a whole (no host
// changed), and each host then publishes on its own, the edited one
// beside the other writer's record.
func TestConditionalBatchRefusedAtomically(t *testing.T) {
	p := getPKI(t)
	fw := newFleetWorld(t, fleetOpts{hosts: 9, parallel: 1, failures: 9, delays: []time.Duration{0}, ttl: 600, conditional: true})
	var batch []string
	for i, n := range fw.names {
		if fw.zone[n] == "z0.example.net." && i < 9 {
			batch = append(batch, n)
		}
	}
	if len(batch) != 3 {
		t.Fatalf("zone z0 has hosts %v, want 3", batch)
	}
	e := fw.fleet().Engine
	ctx := context.Background()
	for _, h := range batch {
		if _, err := e.Start(ctx, StartRequest{Host: h, Plan: PlanCAMigration, NewCA: p.ca2.inter, TTL: 600}); err != nil {
			t.Fatalf("start %s: %v", h, err)
		}
	}
	edited := fw.dns["_25._tcp."+batch[1]+"."]
	extra := unrelatedRecords()[0]
	edits := 0
	fw.c.beforeSet = func(d *fakeDNS) {
		if d == edited && edits == 0 {
			edits++
			d.write(with(d.provider().Records, extra), d.provider().TTL, true)
			fw.w.logf("  dns %s: EXTERNAL write before the batch", d.Owner())
		}
	}
	errs := e.publishBatch(ctx, batch, 1)
	if fw.batches["provider z0.example.net."] != 0 || edited.conflicts != 1 {
		t.Fatalf("%d batch calls made, %d refused; want the one batch refused", fw.batches["provider z0.example.net."], edited.conflicts)
	}
	for _, h := range batch {
		if err := errs[h+"."]; !errors.Is(err, ErrRRsetChanged) {
			t.Errorf("%s: %v, want ErrRRsetChanged", h, err)
		}
		if rs := fw.dns["_25._tcp."+h+"."].provider().Records; containsRec(rs, ta211(p.ca2.inter)) {
			t.Errorf("%s: the refused batch changed its RRset: %s", h, rrKey(rs))
		}
	}
	fw.c.beforeSet = nil
	for _, h := range batch {
		if out, err := e.Advance(ctx, h); err != nil || !out.Waiting {
			t.Fatalf("%s on its own: %v %+v", h, err, out)
		}
		rs := fw.dns["_25._tcp."+h+"."].provider().Records
		if !containsRec(rs, ta211(p.ca2.inter)) || (h == batch[1]) != containsRec(rs, extra) {
			t.Errorf("%s after its own publish: %s", h, rrKey(rs))
		}
	}
	assertClean(t, fw.w, fw.store)
}
