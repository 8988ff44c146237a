package testbed

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// authQuery asks addr without recursion and returns the answer's records of
// type t as text.
func authQuery(ctx context.Context, addr, name string, t uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), t)
	m.RecursionDesired = false
	m.SetEdns0(4096, true)
	c := &dns.Client{Net: "tcp"}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	return r, err
}

func TestSecondaryKnot(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	ip1, ip2 := RandomLoopbackPair()
	const zone = "secondary.test."
	primary := NewKnot(t, KnotConfig{IP: ip1, Zones: []Zone{{
		Name:   zone,
		Signed: true,
		NS:     []NameServer{{Name: "ns1", IP: ip1}, {Name: "ns2", IP: ip2}},
		Records: []string{
			"mail A 127.0.0.1",
		},
	}}})
	_, port, _ := net.SplitHostPort(primary.Addr)
	var p int
	fmt.Sscan(port, &p)
	secondary := NewKnot(t, KnotConfig{IP: ip2, Port: p, Key: primary.Key,
		Secondaries: []SecondaryZone{{Name: zone, Primary: primary.Addr}}})
	if want := net.JoinHostPort(ip2, port); secondary.Addr != want {
		t.Fatalf("secondary.Addr = %s, want %s", secondary.Addr, want)
	}
	if err := primary.AddNotify(ctx, zone, secondary.Addr); err != nil {
		t.Fatal(err)
	}

	// The secondary serves the signed zone with the generated NS set.
	r, err := authQuery(ctx, secondary.Addr, zone, dns.TypeNS)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Authoritative || !answerHas(r, dns.TypeNS, "ns1."+zone) || !answerHas(r, dns.TypeNS, "ns2."+zone) ||
		!hasType(r.Answer, dns.TypeRRSIG) {
		t.Fatalf("secondary NS answer:\n%v", r)
	}
	r, err = authQuery(ctx, secondary.Addr, "ns2."+zone, dns.TypeA)
	if err != nil || !answerHas(r, dns.TypeA, ip2) {
		t.Fatalf("ns2 A at secondary: %v\n%v", err, r)
	}

	sameSerial := func() error {
		s1, err := primary.Serial(ctx, zone)
		if err != nil {
			return err
		}
		s2, err := secondary.Serial(ctx, zone)
		if err != nil {
			return err
		}
		if s1 != s2 {
			return fmt.Errorf("primary serial %d, secondary %d", s1, s2)
		}
		return nil
	}
	eventually(t, ctx, "secondary in sync after start", sameSerial)

	// An update on the primary reaches the secondary through NOTIFY + IXFR
	// (the SOA refresh timer is an hour, so nothing else could bring it).
	if err := primary.Update(ctx, zone, []dns.RR{mustRR(t, "new."+zone+" 60 IN A 127.0.0.7")}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "update propagated", func() error {
		r, err := authQuery(ctx, secondary.Addr, "new."+zone, dns.TypeA)
		if err != nil {
			return err
		}
		if !answerHas(r, dns.TypeA, "127.0.0.7") {
			return fmt.Errorf("secondary answers %s", dns.RcodeToString[r.Rcode])
		}
		return sameSerial()
	})

	// Frozen, the secondary keeps serving the old data.
	if err := secondary.Freeze(ctx, zone); err != nil {
		t.Fatal(err)
	}
	before, err := secondary.Serial(ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	if err := primary.Update(ctx, zone, []dns.RR{mustRR(t, "frozen."+zone+" 60 IN A 127.0.0.8")}, nil); err != nil {
		t.Fatal(err)
	}
	s1, err := primary.Serial(ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	if s1 == before {
		t.Fatalf("primary serial did not change: %d", s1)
	}
	// The NOTIFY was sent (the primary logs it) and the refresh it triggers
	// is held: poll the primary's log instead of sleeping.
	eventually(t, ctx, "primary sent NOTIFY", func() error {
		h, p, _ := net.SplitHostPort(secondary.Addr)
		want := fmt.Sprintf("notify, outgoing, remote %s@%s, serial %d", h, p, s1)
		if !strings.Contains(primary.Log(), want) {
			return fmt.Errorf("no %q in the log", want)
		}
		return nil
	})
	r, err = authQuery(ctx, secondary.Addr, "frozen."+zone, dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if answerHas(r, dns.TypeA, "127.0.0.8") {
		t.Fatal("frozen secondary serves the new record")
	}
	if s2, err := secondary.Serial(ctx, zone); err != nil || s2 != before {
		t.Fatalf("frozen secondary serial = %d, %v; want %d", s2, err, before)
	}
	if err := secondary.Thaw(ctx, zone); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "secondary catches up after thaw", sameSerial)

	// Errors: AddNotify for an unknown zone, a bad address.
	if err := primary.AddNotify(ctx, "nope.test", secondary.Addr); err == nil {
		t.Error("AddNotify for an unknown zone succeeded")
	}
	if err := primary.AddNotify(ctx, zone, "127.0.0.1"); err == nil {
		t.Error("AddNotify without port succeeded")
	}
}
