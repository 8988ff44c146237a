package rollover

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// resolverView is a DNS whose validating resolver still holds an older RRset.
// It holds it until until, then the current RRset.
type resolverView struct {
	DNS
	rr    RRSet
	clock Clock
	until time.Time
}

func (c resolverView) Observe(ctx context.Context) ([]Sighting, error) {
	obs, err := c.DNS.Observe(ctx)
	if now := c.clock.Now(); now.Before(c.until) {
		left := uint32(c.until.Sub(now) / time.Second)
		return append(obs, Sighting{Kind: SourceResolver, Source: "resolver 127.0.0.1:53", Records: c.rr.Records, TTL: left}), err
	}
	return obs, err
}

// TestStartSeesRecentChange: the provider's RRset changed shortly before the
// rollover (by hand), and tlsactl's resolver still holds the previous one,
// which does not cover the new certificate. The ledger records it, superseded
// now, with at least the TTL served now (other resolvers may have fetched it
// later than this one); the deploy waits until it has left every cache.
func TestStartSeesRecentChange(t *testing.T) {
	p := getPKI(t)
	sc := scenarios(p)[0] // renew
	w, store := sc.world(t), newMemStore()
	older := RRSet{Records: []tlsa.Record{ee311(p.old.cert)}, TTL: 600} // no 2 1 1: the new chain is not covered
	e := w.engine(store, nil)
	inner := e.Target
	e.Target = func(host string) (Target, error) {
		tg, err := inner(host)
		tg.DNS = resolverView{DNS: tg.DNS, rr: older, clock: w.clock, until: testBase.Add(600 * time.Second)}
		return tg, err
	}
	start := w.now()
	sc.startWith(t, w, store, e)
	l, _ := store.LoadLedger(testOwner)
	var found bool
	for _, v := range l.Versions {
		if rrKeyText(v.Records) == rrKeyText(texts(older.Records...)) {
			found = v.Superseded.Equal(start) && v.TTL == 3600
		}
	}
	if !found {
		t.Fatalf("ledger %+v: want the resolver's older RRset superseded at the start, TTL 3600", l.Versions)
	}
	out, err := e.Advance(context.Background(), testHost)
	if err != nil || !out.Waiting || w.dep.deploys != 0 || !strings.Contains(out.Reason, "may be cached until") {
		t.Fatalf("advance: %v, %+v, %d deploys; want the deploy held back while the older RRset may be cached", err, out, w.dep.deploys)
	}
	// The largest TTL any cache may hold for it: max(600, the TTL served now, 3600).
	if want := start.Add(3600 * time.Second); !out.State.NotBefore.Equal(want) {
		t.Fatalf("not before %v; want %v", out.State.NotBefore, want)
	}
	w.advanceTo(out.State.NotBefore)
	if st := w.runToEnd(t, e); st.Status != StatusDone || !w.servesOnly(p.renew.cert) {
		t.Fatalf("after the wait: %s", st.Status)
	}
	assertClean(t, w, store)
}
