package rollover

import (
	"context"
	"errors"
	"github.com/tlsactl/tlsactl/tlsa"
	"testing"
	"time"
)

// cachedView is a DNS whose validating resolver still holds an older RRset.
type cachedView struct {
	DNS
	rr RRSet
}

func (c cachedView) Cached(context.Context) (RRSet, error) { return c.rr, nil }

// TestStartSeesRecentChange: the provider's RRset changed shortly before the
// rollover (by hand), and a resolver still holds the previous one, which does
// not cover the new certificate. The deploy must wait until that RRset has
// left every cache; without the CacheViewer the renew would deploy at once.
func TestStartSeesRecentChange(t *testing.T) {
	p := getPKI(t)
	sc := scenarios(p)[0] // renew
	w, store := sc.world(t), newMemStore()
	older := RRSet{Records: []tlsa.Record{ee311(p.old.cert)}, TTL: 600} // no 2 1 1: the new chain is not covered
	e := w.engine(store, nil)
	inner := e.Target
	e.Target = func(host string) (Target, error) {
		tg, err := inner(host)
		tg.DNS = cachedView{DNS: tg.DNS, rr: older}
		return tg, err
	}
	req := sc.startReq(p)
	m := sc.newLeaf.mat
	req.New = &m
	start := w.now()
	st, err := e.Start(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Versions) != 2 || !st.Versions[0].Superseded.Equal(start) {
		t.Fatalf("versions %+v: want the cached older RRset first, superseded at the start", st.Versions)
	}
	_, err = e.Advance(context.Background(), testHost)
	var ue *UnsafeError
	if !errors.As(err, &ue) || w.dep.deploys != 0 {
		t.Fatalf("advance: %v, %d deploys; want the deploy refused while the older RRset may be cached", err, w.dep.deploys)
	}
	// The largest TTL any cache may hold for it: max(600, the current RRset's 3600).
	if want := start.Add(3600 * time.Second); !ue.SafeAt.Equal(want) || !store.state(testFQDN).NotBefore.Equal(want) {
		t.Fatalf("safe at %v, not before %v; want %v", ue.SafeAt, store.state(testFQDN).NotBefore, want)
	}
	w.advanceTo(ue.SafeAt)
	if st := w.runToEnd(t, e); st.Status != StatusDone || !w.servesOnly(p.renew.cert) {
		t.Fatalf("after the wait: %s", st.Status)
	}
}
