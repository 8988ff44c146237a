package rollover

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// externalWrite is someone else (an administrator, a zone-as-code run)
// setting the provider's RRset directly, not through the engine.
func externalWrite(w *world, rs ...tlsa.Record) {
	ttl := w.dns.provider().TTL
	w.dns.changes = append(w.dns.changes, dnsChange{at: w.now(), rr: RRSet{Records: slices.Clone(rs), TTL: ttl}})
	w.logf("  dns: EXTERNAL write %s", rrKey(rs))
}

// TestSafetyExternalRevertStepsBack: a ca-migration published the new CA's
// 2 1 1; during the TTL wait someone puts the old RRset back. The engine
// must notice before the deploy, step back, publish the record again and
// wait a full TTL from the new confirmation; it never deploys on its own
// history.
func TestSafetyExternalRevertStepsBack(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[1]
	w, store := sc.world(t), newMemStore()
	sc.start(t, w, store, true, 300, 10*time.Second)
	e := w.engine(store, nil)
	out, err := e.Advance(ctx, testHost)
	if err != nil || !out.Waiting {
		t.Fatalf("first run: %v %+v", err, out)
	}
	firstWait := out.State.NotBefore
	w.advance(2 * time.Minute)
	externalWrite(w, sc.initial...) // the old RRset is back
	w.advanceTo(firstWait)
	out, err = e.Advance(ctx, testHost)
	if err != nil || !out.Waiting {
		t.Fatalf("after the revert: %v %+v", err, out)
	}
	if w.dep.deploys != 0 {
		t.Fatal("deployed although the new CA's 2 1 1 was removed by someone else")
	}
	hist := eventsText(out.State)
	if !strings.Contains(hist, "stepped back") || !strings.Contains(hist, "observed") || out.State.StepBacks != 1 {
		t.Fatalf("history %s (step backs %d): want the drift observed and a step back", hist, out.State.StepBacks)
	}
	if w.dns.sets != 2 {
		t.Errorf("%d provider sets, want 2 (publish, republish)", w.dns.sets)
	}
	if !out.State.NotBefore.After(firstWait) || out.State.NotBefore.Before(w.now().Add(300*time.Second)) {
		t.Errorf("new wait until %s: want a full TTL from the republish (now %s)", out.State.NotBefore, w.now())
	}
	if st := w.runToEnd(t, e); st.Status != StatusDone || !w.servesOnly(p.mig.cert) {
		t.Fatalf("status %s", st.Status)
	}
	assertRRSet(t, w.dns.provider().Records, sc.final...)
	assertClean(t, w, store)
}

// TestSafetyStepBackLimit: a writer that removes the record every time
// makes the engine stop with a refusal, the old chain still served.
func TestSafetyStepBackLimit(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[1]
	w, store := sc.world(t), newMemStore()
	sc.start(t, w, store, true, 300, 0)
	e := w.engine(store, nil)
	var err error
	for i := 0; i <= maxStepBacks+1 && err == nil; i++ {
		var out Outcome
		out, err = e.Advance(ctx, testHost)
		if err == nil {
			w.advance(time.Minute)
			externalWrite(w, sc.initial...)
			w.advanceTo(out.State.NotBefore)
		}
	}
	if err == nil || !strings.Contains(err.Error(), "removed each time") || w.dep.deploys != 0 {
		t.Fatalf("err %v, %d deploys; want a refusal after %d step backs", err, w.dep.deploys, maxStepBacks)
	}
	if !w.servesOnly(p.old.cert) {
		t.Error("the old chain is no longer served")
	}
	assertClean(t, w, store)
}

// TestSafetyUnknownPredecessor: the first time tlsactl looks at a name, the
// RRset before it is unknown and may be cached for a TTL: a renew waits
// until then. With a check timer's history (seeded ledger) it does not.
func TestSafetyUnknownPredecessor(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[0]
	w, store := sc.world(t), newMemStore()
	req := sc.startReq(p)
	m := sc.newLeaf.mat
	req.New, req.Margin = &m, 5*time.Second
	e := w.engine(store, nil)
	start := w.now()
	if _, err := e.Start(ctx, req); err != nil {
		t.Fatal(err)
	}
	out, err := e.Advance(ctx, testHost)
	if err != nil || !out.Waiting || w.dep.deploys != 0 || !strings.Contains(out.Reason, "never saw") {
		t.Fatalf("advance: %v %+v: want a wait for the unknown predecessor", err, out)
	}
	if want := start.Add(3600*time.Second + 5*time.Second); !out.State.NotBefore.Equal(want) {
		t.Errorf("not before %s, want first seen + TTL + margin = %s", out.State.NotBefore, want)
	}
	if st := w.runToEnd(t, e); st.Status != StatusDone || !w.servesOnly(p.renew.cert) {
		t.Fatalf("status %s", st.Status)
	}
	assertClean(t, w, store)
}

// TestSafetyAbortKeepsPreexisting: the new CA's 2 1 1 was published before
// the rollover (tlsactl publish --add of an issuer set): abort must not take
// it back.
func TestSafetyAbortKeepsPreexisting(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	initial := []tlsa.Record{ee311(p.old.cert), ta211(p.ca1.inter), ta211(p.ca2.inter)}
	w, store := newWorld(t, worldOpts{initial: initial, initTTL: 300, negTTL: 300}), newMemStore()
	store.seed(testOwner, RRSet{Records: initial, TTL: 300}, 300, testBase.Add(-48*time.Hour))
	e := w.engine(store, nil)
	st, err := e.Start(ctx, StartRequest{Host: testHost, Plan: PlanCAMigration, NewCA: p.ca2.inter, TTL: 300})
	if err != nil || len(st.Added) != 0 {
		t.Fatalf("start: %v, added %v: want nothing added", err, st.Added)
	}
	if _, err := e.Advance(ctx, testHost); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Abort(ctx, testHost); err != nil {
		t.Fatal(err)
	}
	assertRRSet(t, w.dns.provider().Records, initial...)
	assertClean(t, w, store)
}

// ttlRaiser is a provider that stores any TTL below 3600 as 3600 (deSEC).
type ttlRaiser struct{ DNS }

func (d ttlRaiser) Set(ctx context.Context, want RRSet) error {
	want.TTL = max(want.TTL, 3600)
	return d.DNS.Set(ctx, want)
}

// TestSafetyServedTTL: the TTL the servers serve is recorded and waited,
// and a publish whose TTL was raised by the provider completes.
func TestSafetyServedTTL(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[1]
	w := newWorld(t, worldOpts{initial: sc.initial, initTTL: 300, negTTL: 300})
	store := newMemStore()
	e := w.engine(store, nil)
	inner := e.Target
	e.Target = func(host string) (Target, error) {
		tg, err := inner(host)
		tg.DNS = ttlRaiser{tg.DNS}
		return tg, err
	}
	store.seed(testOwner, w.dns.changes[0].rr, 300, testBase.Add(-48*time.Hour))
	m := sc.newLeaf.mat
	if _, err := e.Start(ctx, StartRequest{Host: testHost, Plan: PlanCAMigration, NewCA: p.ca2.inter, TTL: 300, New: &m}); err != nil {
		t.Fatal(err)
	}
	st := w.runToEnd(t, e)
	if st.Status != StatusDone {
		t.Fatalf("status %s", st.Status)
	}
	if !strings.Contains(eventsText(st), "confirmed") || !strings.Contains(historyDetails(st), "with TTL 3600 (asked for 300)") {
		t.Errorf("history does not say the served TTL: %s", historyDetails(st))
	}
	l, _ := store.LoadLedger(testOwner)
	cur, ok := l.Current()
	if !ok || cur.TTL != 3600 {
		t.Errorf("current ledger version %+v: want TTL 3600 as served", cur)
	}
	// The next rollover waits the served TTL, not the one asked for.
	if _, err := e.Start(ctx, StartRequest{Host: testHost, Plan: PlanCAMigration, NewCA: p.ca1.inter, TTL: 300, New: &p.renew.mat}); err != nil {
		t.Fatal(err)
	}
	out, err := e.Advance(ctx, testHost)
	if err != nil || !out.Waiting {
		t.Fatalf("%v %+v", err, out)
	}
	if d := out.State.NotBefore.Sub(w.now()); d < 3600*time.Second {
		t.Errorf("waits %s, want at least the served TTL 3600 s", d)
	}
	assertClean(t, w, store)
}

func historyDetails(st *State) string {
	var b strings.Builder
	for _, ev := range st.History {
		b.WriteString(ev.Detail + "; ")
	}
	return b.String()
}

// ownerDNS gives a DNS another owner name (a second host's RRset).
type ownerDNS struct {
	DNS
	owner string
}

func (d ownerDNS) Owner() string { return d.owner }

// TestSafetyDeployTargetPeers: two hosts served by one server (one deploy
// target). A ca-migration of mx's RRset must not deploy the new CA's
// certificate while the peer's RRset does not cover it; once the peer's
// RRset has the new CA's 2 1 1, aged, it may.
func TestSafetyDeployTargetPeers(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[1]
	w, store := sc.world(t), newMemStore()
	peerOwner := "_25._tcp.mx2.example.net."
	peerDNS := &fakeDNS{w: w, negTTL: 300, delays: []time.Duration{0}, freezes: make([][]freeze, 1),
		changes: []dnsChange{{rr: RRSet{Records: []tlsa.Record{ee311(p.old.cert), ta211(p.ca1.inter)}, TTL: 300}}}}
	store.seed(peerOwner, peerDNS.changes[0].rr, 300, testBase.Add(-48*time.Hour))
	e := w.engine(store, nil)
	inner := e.Target
	e.Target = func(host string) (Target, error) {
		tg, err := inner(host)
		tg.Peers = []Peer{{Host: "mx2.example.net.", DNS: ownerDNS{peerDNS, peerOwner}, Deployer: w.dep}}
		return tg, err
	}
	// The new certificate names both hosts (a DANE-TA match checks names).
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	both, err := p.ca2.leaf(key, "both", []string{testHost, "mx2.example.net"}, testBase.AddDate(0, -1, 0), testBase.AddDate(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	store.seed(testOwner, w.dns.changes[0].rr, w.dns.negTTL, testBase.Add(-48*time.Hour))
	if _, err := e.Start(ctx, StartRequest{Host: testHost, Plan: PlanCAMigration, NewCA: p.ca2.inter, TTL: 300, New: &both.mat}); err != nil {
		t.Fatal(err)
	}
	out, err := e.Advance(ctx, testHost)
	if err != nil || !out.Waiting {
		t.Fatal(err, out)
	}
	w.advanceTo(out.State.NotBefore)
	_, err = e.Advance(ctx, testHost)
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "shares its files or addresses with mx2.example.net") || w.dep.deploys != 0 {
		t.Fatalf("advance: %v, %d deploys; want a refusal naming the peer", err, w.dep.deploys)
	}
	// The peer's RRset gets the new CA's 2 1 1 (its own rollover, here by
	// hand) and ages: then the deploy may go ahead.
	peerDNS.changes = append(peerDNS.changes, dnsChange{at: w.now(), rr: RRSet{Records: []tlsa.Record{ee311(p.old.cert), ta211(p.ca1.inter), ta211(p.ca2.inter)}, TTL: 300}})
	if _, _, err := e.observeAll(ctx, ownerDNS{peerDNS, peerOwner}); err != nil {
		t.Fatal(err)
	}
	w.advance(301 * time.Second)
	st := store.state(testFQDN)
	st.NotBefore = time.Time{}
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
	if st := w.runToEnd(t, e); st.Status != StatusDone || !w.servesOnly(both.cert) {
		t.Fatalf("status %s", st.Status)
	}
	assertClean(t, w, store)
}

// observeAll records what d holds now in its ledger (what a check timer does).
func (e *Engine) observeAll(ctx context.Context, d DNS) (*Ledger, []Sighting, error) {
	w, err := e.observe(ctx, d, 0)
	if err != nil {
		return nil, nil, err
	}
	return w.ledger, w.sightings, nil
}
