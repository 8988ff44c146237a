package testbed

import (
	"context"
	"testing"

	"github.com/miekg/dns"
)

func TestScratchKnot(t *testing.T) {
	ctx := context.Background()
	k := NewKnot(t, KnotConfig{Zones: []Zone{{Name: "example.test", Signed: true, Records: []string{"mail A 127.0.0.1"}}, {Name: "plain.test", Records: []string{"mail A 127.0.0.1"}}, {Name: "bogus.test", Signed: true, Records: []string{"mail A 127.0.0.1"}}}})
	ds, err := k.DS(ctx, "example.test")
	t.Log(ds, err)
	u := NewUnbound(t, UnboundConfig{Port53IP: RandomLoopbackIP(), Stubs: []StubZone{{Name: "example.test", Addr: k.Addr, TrustAnchor: ds}, {Name: "plain.test", Addr: k.Addr},
		{Name: "bogus.test", Addr: k.Addr, TrustAnchor: "bogus.test. IN DS 1234 13 2 58EF065CF875CF96F2D4E802F7713540829975F07F5EE361D2A946ECD63473FC"}}})
	for _, n := range []string{"mail.example.test", "mail.plain.test", "mail.bogus.test"} {
		r, err := u.Query(ctx, n, dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(n, dns.RcodeToString[r.Rcode], r.AuthenticatedData, r.Answer)
	}
	t.Log(u.Log())
}
