package providers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/testbed"
)

// The live tests of this file and propagate_test.go run against a real test
// bed (propBed): a signed zone prop.test on a Knot primary (ns1, 127.a.b.1)
// and a Knot secondary (ns2, 127.a.b.2) on the same port, the secondary fed
// by NOTIFY + IXFR with the primary's TSIG key, and a validating Unbound
// (trust anchor from the zone's DS) as the resolver. There is no TestMain
// here (the external test package has one): each top-level test starts its
// own bed and stops it in t.Cleanup.

const (
	bedZone   = "prop.test."
	otherZone = "other.test."  // signed, trusted: a CNAME target's zone
	bogusZone = "bogus.test."  // signed, trust anchor with a wrong digest
	unreach   = "unreach.test" // no stub: the resolver cannot reach it
)

type propBed struct {
	primary, secondary *testbed.Knot
	unbound            *testbed.Unbound
	res                *dnsx.Resolver
	ip1, ip2           string
	port               int
}

func propCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newPropBed(t *testing.T) *propBed {
	t.Helper()
	testbed.Require(t, "knotd", "knot")
	testbed.Require(t, "knotc", "knot")
	testbed.Require(t, "unbound", "unbound")
	ctx := propCtx(t)
	ip1, ip2 := testbed.RandomLoopbackPair()
	primary := testbed.NewKnot(t, testbed.KnotConfig{IP: ip1, Zones: []testbed.Zone{
		{
			Name:   bedZone,
			Signed: true,
			NS:     []testbed.NameServer{{Name: "ns1", IP: ip1}, {Name: "ns2", IP: ip2}},
			Records: []string{
				"mail A 127.0.0.1",
				"_25._tcp.mail TLSA 3 1 1 " + strings.Repeat("ab", 32),
				"a.b.c.deep A 127.0.0.1", // deep, b.c.deep is an empty non-terminal
				"www CNAME mail",
				"ext CNAME nothing." + otherZone,
			},
		},
		{Name: otherZone, Signed: true, Records: []string{"mail A 127.0.0.1"}},
		{Name: bogusZone, Signed: true, Records: []string{"mail A 127.0.0.1"}},
	}})
	_, ps, _ := net.SplitHostPort(primary.Addr)
	port, err := strconv.Atoi(ps)
	if err != nil {
		t.Fatal(err)
	}
	secondary := testbed.NewKnot(t, testbed.KnotConfig{IP: ip2, Port: port, Key: primary.Key,
		Secondaries: []testbed.SecondaryZone{{Name: bedZone, Primary: primary.Addr}}})
	if err := primary.AddNotify(ctx, bedZone, secondary.Addr); err != nil {
		t.Fatal(err)
	}
	var stubs []testbed.StubZone
	for _, z := range []string{bedZone, otherZone, bogusZone} {
		ds, err := primary.DS(ctx, z)
		if err != nil {
			t.Fatal(err)
		}
		if z == bogusZone {
			ds = testbed.CorruptDS(ds)
		}
		stubs = append(stubs, testbed.StubZone{Name: z, Addr: primary.Addr, TrustAnchor: ds})
	}
	u := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: stubs})
	return &propBed{primary: primary, secondary: secondary, unbound: u,
		res: &dnsx.Resolver{Addr: u.Addr, Timeout: 3 * time.Second}, ip1: ip1, ip2: ip2, port: port}
}

func TestZoneLive(t *testing.T) {
	t.Parallel()
	b := newPropBed(t)
	ctx := propCtx(t)

	t.Run("FindZone", func(t *testing.T) {
		for _, tc := range []struct{ name, want string }{
			{"prop.test", bedZone},                   // the apex
			{"PROP.test.", bedZone},                  // case and dot do not matter
			{"_25._tcp.mail.prop.test", bedZone},     // deep name with data
			{"a.b.c.deep.prop.test", bedZone},        // deeper still
			{"b.c.deep.prop.test", bedZone},          // empty non-terminal (NODATA)
			{"nope.x.y.prop.test", bedZone},          // nonexistent (NXDOMAIN)
			{"_25._tcp.nope.prop.test", bedZone},     // nonexistent TLSA owner
			{"www.prop.test", bedZone},               // CNAME inside the zone
			{"ext.prop.test", bedZone},               // CNAME into another zone: not other.test
			{"mail.other.test", otherZone},           // another zone on the same server
			{"_25._tcp.mail.other.test.", otherZone}, //
		} {
			got, err := FindZone(ctx, b.res, tc.name)
			if err != nil || got != tc.want {
				t.Errorf("FindZone(%q) = %q, %v; want %q", tc.name, got, err, tc.want)
			}
		}
	})

	t.Run("FindZoneErrors", func(t *testing.T) {
		// Bogus is bogus, never "no zone".
		_, err := FindZone(ctx, b.res, "mail.bogus.test")
		if !errors.Is(err, dnsx.ErrBogus) || errors.Is(err, dnsx.ErrNXDomain) || errors.Is(err, dnsx.ErrNoData) {
			t.Errorf("bogus zone: err = %v, want ErrBogus", err)
		}
		var le *dnsx.LookupError
		if !errors.As(err, &le) || le.Status != dnsx.Bogus {
			t.Errorf("bogus zone: err = %#v, want a *dnsx.LookupError with status bogus", err)
		}
		// A zone the resolver cannot reach: SERVFAIL, a failure, not "not found".
		_, err = FindZone(ctx, b.res, "mail."+unreach)
		if err == nil || errors.Is(err, dnsx.ErrNXDomain) || errors.Is(err, dnsx.ErrNoData) ||
			!(errors.Is(err, dnsx.ErrBogus) || errors.Is(err, dnsx.ErrLookupFailed)) {
			t.Errorf("unreachable zone: err = %v, want ErrBogus or ErrLookupFailed", err)
		}
		// No resolver listening.
		dead := &dnsx.Resolver{Addr: "127.0.0.1:1", Timeout: 500 * time.Millisecond}
		if _, err := FindZone(ctx, dead, "prop.test"); !errors.Is(err, dnsx.ErrLookupFailed) {
			t.Errorf("dead resolver: err = %v, want ErrLookupFailed", err)
		}
		if _, err := FindZone(ctx, b.res, "bad..name"); !errors.Is(err, dnsx.ErrLookupFailed) {
			t.Errorf("invalid name: err = %v, want ErrLookupFailed", err)
		}
	})

	t.Run("AuthServers", func(t *testing.T) {
		got, err := AuthServers(ctx, b.res, bedZone, b.port)
		if err != nil {
			t.Fatal(err)
		}
		want := []AuthServer{
			{Name: "ns1." + bedZone, Addrs: []netip.AddrPort{netip.MustParseAddrPort(b.primary.Addr)}},
			{Name: "ns2." + bedZone, Addrs: []netip.AddrPort{netip.MustParseAddrPort(b.secondary.Addr)}},
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("AuthServers = %v, want %v", got, want)
		}
		if b.primary.Addr == b.secondary.Addr || !strings.HasSuffix(b.secondary.Addr, ":"+strconv.Itoa(b.port)) {
			t.Fatalf("primary %s and secondary %s: want different IPs, one port", b.primary.Addr, b.secondary.Addr)
		}
		// Port 0 means 53.
		got, err = AuthServers(ctx, b.res, "PROP.TEST", 0)
		if err != nil || len(got) != 2 || got[0].Addrs[0].Port() != 53 {
			t.Fatalf("AuthServers port 0 = %v, %v", got, err)
		}
		// The other zone's NS is ns.other.test -> 127.0.0.1.
		got, err = AuthServers(ctx, b.res, otherZone, 5353)
		if err != nil || len(got) != 1 || got[0].Name != "ns."+otherZone || got[0].Addrs[0].String() != "127.0.0.1:5353" {
			t.Fatalf("AuthServers(%s) = %v, %v", otherZone, got, err)
		}
	})

	t.Run("ServersFor", func(t *testing.T) {
		ns1 := "ns1." + bedZone + " [" + b.primary.Addr + "]"
		ns2 := "ns2." + bedZone + " [" + b.secondary.Addr + "]"
		for _, tc := range []struct {
			what  string
			res   *dnsx.Resolver
			extra []string
			want  string
		}{
			{"NS set only", b.res, nil, fmt.Sprint([]string{ns1, ns2})},
			// A hidden primary adds to the NS set; the primary's address
			// is asked once, as ns1; a repeated extra address once.
			{"NS set and extra servers", b.res, []string{b.primary.Addr, "127.0.0.9:53", "127.0.0.9"},
				fmt.Sprint([]string{ns1, ns2, "127.0.0.9:53 [127.0.0.9:53]"})},
			{"no resolver: the extra servers", nil, []string{"127.0.0.9:53", b.secondary.Addr},
				fmt.Sprint([]string{"127.0.0.9:53 [127.0.0.9:53]", b.secondary.Addr + " [" + b.secondary.Addr + "]"})},
		} {
			got, err := ServersFor(ctx, tc.res, "PROP.test", b.port, tc.extra)
			if err != nil || fmt.Sprint(got) != tc.want {
				t.Errorf("%s: ServersFor = %v, %v; want %s", tc.what, got, err, tc.want)
			}
		}
		// The NS set cannot be skipped: a failed NS lookup fails, even
		// with extra servers; nothing at all is a configuration error.
		if _, err := ServersFor(ctx, b.res, bogusZone, b.port, []string{b.primary.Addr}); !errors.Is(err, dnsx.ErrBogus) {
			t.Errorf("bogus zone: err = %v, want ErrBogus", err)
		}
		if _, err := ServersFor(ctx, nil, bedZone, b.port, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("nothing to ask: err = %v, want ErrConfig", err)
		}
		if _, err := ServersFor(ctx, b.res, bedZone, b.port, []string{"ns1.prop.test:53"}); !errors.Is(err, ErrConfig) {
			t.Errorf("host name as extra server: err = %v, want ErrConfig", err)
		}
	})

	t.Run("AuthServersErrors", func(t *testing.T) {
		if _, err := AuthServers(ctx, b.res, "mail."+bedZone, b.port); !errors.Is(err, dnsx.ErrNoData) {
			t.Errorf("not an apex: err = %v, want ErrNoData", err)
		}
		if _, err := AuthServers(ctx, b.res, "nope."+bedZone, b.port); !errors.Is(err, dnsx.ErrNXDomain) {
			t.Errorf("nonexistent: err = %v, want ErrNXDomain", err)
		}
		if _, err := AuthServers(ctx, b.res, bogusZone, b.port); !errors.Is(err, dnsx.ErrBogus) {
			t.Errorf("bogus: err = %v, want ErrBogus", err)
		}
		if _, err := AuthServers(ctx, b.res, bedZone, 70000); err == nil {
			t.Error("port 70000 accepted")
		}
	})
}

func TestZoneFromSOAResponse(t *testing.T) {
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	soa := func(owner string) dns.RR {
		return rr(owner + " 60 IN SOA ns." + owner + " h." + owner + " 1 3600 600 86400 60")
	}
	msg := func(rcode int, ans, ns []dns.RR) *dns.Msg {
		m := new(dns.Msg)
		m.Rcode, m.Answer, m.Ns = rcode, ans, ns
		return m
	}
	for _, tc := range []struct {
		what  string
		qname string
		m     *dns.Msg
		want  string
		ok    bool
	}{
		{"apex", "example.test.", msg(dns.RcodeSuccess, []dns.RR{soa("Example.Test.")}, nil), "example.test.", true},
		{"nodata", "a.example.test.", msg(dns.RcodeSuccess, nil, []dns.RR{soa("example.test.")}), "example.test.", true},
		{"nxdomain", "a.b.example.test.", msg(dns.RcodeNameError, nil, []dns.RR{soa("example.test.")}), "example.test.", true},
		{"no soa", "a.example.test.", msg(dns.RcodeNameError, nil, nil), "", false},
		{"soa of an unrelated zone", "a.example.test.", msg(dns.RcodeSuccess, nil, []dns.RR{soa("other.test.")}), "", false},
		{"cname out of the zone", "www.example.test.", msg(dns.RcodeSuccess,
			[]dns.RR{rr("www.example.test. 60 IN CNAME x.other.test.")}, []dns.RR{soa("other.test.")}), "", false},
		{"cname then soa of the target", "www.example.test.", msg(dns.RcodeSuccess,
			[]dns.RR{rr("www.example.test. 60 IN CNAME other.test."), soa("other.test.")}, nil), "", false},
	} {
		got, ok := zoneFromSOAResponse(tc.qname, tc.m)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: got %q, %v; want %q, %v", tc.what, got, ok, tc.want, tc.ok)
		}
	}
	for in, want := range map[string]string{"a.b.test.": "b.test.", "test.": ".", ".": "."} {
		if got := parent(in); got != want {
			t.Errorf("parent(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAuthExplicitServers(t *testing.T) {
	got, err := ExplicitServers([]string{"127.0.0.1:5353", "127.0.1.2", " [::1]:53 ", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.1:5353", "127.0.1.2:53", "[::1]:53", "[::1]:53"}
	var addrs []string
	for _, s := range got {
		if len(s.Addrs) != 1 {
			t.Fatalf("%v: want one address", s)
		}
		addrs = append(addrs, s.Addrs[0].String())
	}
	if !slices.Equal(addrs, want) || got[0].Name != "127.0.0.1:5353" {
		t.Fatalf("ExplicitServers = %v, want addresses %v", got, want)
	}
	for _, bad := range [][]string{nil, {"ns1.example.test:53"}, {"127.0.0.1:99999"}, {""}, {"127.0.0.1:x"}} {
		if _, err := ExplicitServers(bad); !errors.Is(err, ErrConfig) {
			t.Errorf("ExplicitServers(%q) err = %v, want ErrConfig", bad, err)
		}
	}
}
