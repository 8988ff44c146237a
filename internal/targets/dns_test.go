package targets

// ProviderDNS against real servers: one Knot serving three signed zones
// (RFC 2136 with TSIG is the provider), a caching validating Unbound (the
// resolver whose cache a rollover must wait out) and a non-caching one (to
// see changes at once). The zones' NS is ns.<zone> -> 127.0.0.1, so with
// AuthPort set to Knot's port the NS set reaches Knot. Each subtest uses its
// own names.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/providers"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

const (
	zoneT = "tg.test."
	zoneO = "other.test."
	zoneF = "far.test." // the provider cannot read it (refuseZone)
)

func rec(u uint8, b byte) tlsa.Record {
	return tlsa.Record{Usage: tlsa.Usage(u), Selector: 1, MatchingType: 1, Data: bytes.Repeat([]byte{b}, 32)}
}

// refuseZone is a provider that cannot read one zone, as a provider whose
// credentials do not cover a CNAME target's zone.
type refuseZone struct {
	providers.Provider
	zone string
}

func (p refuseZone) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	if dns.CanonicalName(zone) == p.zone {
		return nil, fmt.Errorf("zone transfer of %s refused (NOTAUTH)", p.zone)
	}
	return p.Provider.GetRecords(ctx, zone)
}

type bed struct {
	knot           *testbed.Knot
	caching, fresh *dnsx.Resolver
	prov           providers.Provider
	authPort       int
}

func newBed(t *testing.T) *bed {
	t.Helper()
	testbed.Require(t, "knotd", "knot")
	testbed.Require(t, "unbound", "unbound")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{
		{Name: zoneT, Signed: true, Records: []string{
			"mail A 127.0.0.1",
			"_25._tcp.mail 300 TLSA " + rec(3, 0xaa).String(),
			"plain A 127.0.0.1", // no TLSA
			"alias CNAME mail",  // an MX host name that is a CNAME
			"cn A 127.0.0.1",    // TLSA owner CNAME'd inside the zone
			"_25._tcp.cn CNAME _dane",
			"_dane 300 TLSA " + rec(3, 0xbb).String(),
			"two A 127.0.0.1", // two hops into another zone
			"_25._tcp.two CNAME _hop",
			"_hop CNAME _dane2.other.test.",
			"far A 127.0.0.1", // into a zone the provider cannot read
			"_25._tcp.far CNAME _dane.far.test.",
			"loop A 127.0.0.1",
			"_25._tcp.loop CNAME _l2",
			"_l2 CNAME _25._tcp.loop",
			"late A 127.0.0.1",   // gets a CNAME the caching resolver does not know of
			"victim A 127.0.0.1", // gets a CNAME after Resolve
			"rrsig A 127.0.0.1",  // Set and WaitServed
		}},
		{Name: zoneO, Signed: true, Records: []string{"_dane2 600 TLSA " + rec(3, 0xcc).String()}},
		{Name: zoneF, Signed: true, Records: []string{"_dane 600 TLSA " + rec(3, 0xdd).String()}},
	}})
	var stubs []testbed.StubZone
	for _, z := range []string{zoneT, zoneO, zoneF} {
		ds, err := k.DS(ctx, z)
		if err != nil {
			t.Fatal(err)
		}
		stubs = append(stubs, testbed.StubZone{Name: z, Addr: k.Addr, TrustAnchor: ds})
	}
	caching := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: stubs, CacheMaxTTL: 3600})
	fresh := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: stubs, NoCache: true})
	keyFile := filepath.Join(t.TempDir(), "tsig.key")
	if err := k.Key.WriteBINDKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	prov, err := providers.New("rfc2136", providers.Settings{Values: map[string]string{"server": k.Addr, "tsig_key_file": keyFile}})
	if err != nil {
		t.Fatal(err)
	}
	_, ps, _ := net.SplitHostPort(k.Addr)
	port, _ := strconv.Atoi(ps)
	return &bed{knot: k, prov: refuseZone{prov, zoneF}, authPort: port,
		caching: &dnsx.Resolver{Addr: caching.Addr, Timeout: 3 * time.Second},
		fresh:   &dnsx.Resolver{Addr: fresh.Addr, Timeout: 3 * time.Second}}
}

func (b *bed) config(host string, r *dnsx.Resolver) Config {
	return Config{Provider: b.prov, Host: host, Resolver: r, AuthPort: b.authPort,
		Propagation: providers.PropagationOptions{Interval: 50 * time.Millisecond, Timeout: 10 * time.Second, QueryTimeout: time.Second}}
}

func TestProviderDNSLive(t *testing.T) {
	b := newBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nsT := "ns." + zoneT + " [" + b.knot.Addr + "]"
	nsO := "ns." + zoneO + " [" + b.knot.Addr + "]"

	t.Run("Resolve", func(t *testing.T) {
		for _, tc := range []struct {
			host    string
			zone    string   // Config.Zone
			extra   []string // Config.AuthServers
			owner   string
			inZone  string
			cnames  []string
			servers string
		}{
			{"mail.tg.test", "", nil, "_25._tcp.mail.tg.test.", zoneT, nil, fmt.Sprint([]string{nsT})},
			// The hidden primary given as an extra server is the NS
			// set's address: asked once, as ns.tg.test.
			{"MAIL.tg.test.", zoneT, []string{b.knot.Addr}, "_25._tcp.mail.tg.test.", zoneT, nil, fmt.Sprint([]string{nsT})},
			{"mail.tg.test", "", []string{b.knot.Addr, "127.0.0.9:53"}, "_25._tcp.mail.tg.test.", zoneT, nil,
				fmt.Sprint([]string{nsT, "127.0.0.9:53 [127.0.0.9:53]"})},
			{"cn.tg.test", "", nil, "_dane.tg.test.", zoneT, []string{"_dane.tg.test."}, fmt.Sprint([]string{nsT})},
			// Into another zone: its NS set, not the configured zone's
			// extra servers.
			{"two.tg.test", "", []string{"127.0.0.9:53"}, "_dane2.other.test.", zoneO,
				[]string{"_hop.tg.test.", "_dane2.other.test."}, fmt.Sprint([]string{nsO})},
		} {
			cfg := b.config(tc.host, b.fresh)
			cfg.Zone, cfg.AuthServers = tc.zone, tc.extra
			d, err := Resolve(ctx, cfg)
			if err != nil {
				t.Errorf("Resolve(%s): %v", tc.host, err)
				continue
			}
			if d.Owner() != tc.owner || d.Zone() != tc.inZone || fmt.Sprint(d.CNAMEs()) != fmt.Sprint(tc.cnames) ||
				fmt.Sprint(d.Servers()) != tc.servers || d.ConfiguredOwner() != "_25._tcp."+dns.CanonicalName(tc.host) {
				t.Errorf("Resolve(%s) = owner %s (configured %s) zone %s CNAMEs %v servers %v; want %s %s %v %s", tc.host,
					d.Owner(), d.ConfiguredOwner(), d.Zone(), d.CNAMEs(), d.Servers(), tc.owner, tc.inZone, tc.cnames, tc.servers)
			}
		}
	})

	t.Run("ResolveErrors", func(t *testing.T) {
		_, err := Resolve(ctx, b.config("alias.tg.test", b.fresh))
		const hostMsg = `alias.tg.test is a CNAME for mail.tg.test: senders look up _25._tcp.mail.tg.test first (RFC 7672 §2.2.3); configure [[host]] name = "mail.tg.test"`
		if !errors.Is(err, ErrCNAMEHost) || err.Error() != hostMsg {
			t.Errorf("CNAME'd MX host: err = %v\nwant %s", err, hostMsg)
		}

		_, err = Resolve(ctx, b.config("far.tg.test", b.fresh))
		t.Log(err)
		if !errors.Is(err, ErrCNAMEOwner) || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(),
			"_25._tcp.far.tg.test is a CNAME for _dane.far.test, in zone far.test., which the provider cannot change: ") ||
			!strings.Contains(err.Error(), "zone transfer of far.test. refused") || !strings.HasSuffix(err.Error(),
			"; publish the TLSA records at _dane.far.test yourself or give tlsactl a provider for that zone") {
			t.Errorf("CNAME into a zone the provider cannot read: err = %v", err)
		}

		_, err = Resolve(ctx, b.config("loop.tg.test", b.fresh))
		if err == nil || err.Error() != "the CNAME chain from _25._tcp.loop.tg.test loops at _25._tcp.loop.tg.test" {
			t.Errorf("CNAME loop: err = %v", err)
		}

		for what, cfg := range map[string]Config{
			"owner not in zone": func() Config { c := b.config("mail.tg.test", b.fresh); c.Zone = zoneO; return c }(),
			"no resolver":       b.config("mail.tg.test", nil),
			"no provider":       func() Config { c := b.config("mail.tg.test", b.fresh); c.Provider = nil; return c }(),
			"bad host":          b.config("bad..name", b.fresh),
			"bad extra server": func() Config {
				c := b.config("mail.tg.test", b.fresh)
				c.AuthServers = []string{"ns.tg.test"}
				return c
			}(),
			"resolver not there": b.config("mail.tg.test", &dnsx.Resolver{Addr: "127.0.0.1:1", Timeout: 200 * time.Millisecond}),
		} {
			if d, err := Resolve(ctx, cfg); err == nil || errors.Is(err, ErrCNAMEHost) || errors.Is(err, ErrCNAMEOwner) {
				t.Errorf("%s: Resolve = %+v, %v; want an error", what, d, err)
			} else {
				t.Logf("%s: %v", what, err)
			}
		}
	})

	// A CNAME the caching resolver cannot know yet (it holds the negative
	// answer from before): the authoritative server's CNAME decides.
	t.Run("ResolveCNAMEOnlyAtAuth", func(t *testing.T) {
		owner := "_25._tcp.late." + zoneT
		if _, err := b.caching.Exchange(ctx, owner, dns.TypeTLSA); err != nil {
			t.Fatal(err)
		}
		if err := b.knot.Update(ctx, zoneT, []dns.RR{mustRR(t, owner+" 60 IN CNAME _dane."+zoneT)}, nil); err != nil {
			t.Fatal(err)
		}
		resp, err := b.caching.Exchange(ctx, owner, dns.TypeTLSA)
		if err != nil || len(resp.Answer) != 0 {
			t.Fatalf("the caching resolver already knows the CNAME (%v, %v): the test proves nothing", resp, err)
		}
		d, err := Resolve(ctx, b.config("late.tg.test", b.caching))
		if err != nil || d.Owner() != "_dane."+zoneT {
			t.Fatalf("Resolve = %+v, %v; want owner _dane.%s", d, err, zoneT)
		}
	})

	t.Run("SetAtCNAMETarget", func(t *testing.T) {
		d, err := Resolve(ctx, b.config("cn.tg.test", b.fresh))
		if err != nil {
			t.Fatal(err)
		}
		want := rollover.RRSet{Records: []tlsa.Record{rec(3, 0xbb), rec(2, 0x01)}, TTL: 120}
		if err := d.Set(ctx, want); err != nil {
			t.Fatal(err)
		}
		// The TTL served may differ from the one asked for (providers
		// raise it): WaitServed accepts any, Knot serves 120.
		asked := want
		asked.TTL = 3600
		if err := d.WaitServed(ctx, asked); err != nil {
			t.Fatal(err)
		}
		cur, _, err := d.Current(ctx)
		if err != nil || !sameRecords(cur.Records, want.Records) || cur.TTL != 120 {
			t.Fatalf("Current = %+v, %v", cur, err)
		}
		// The CNAME stays; the records are at its target.
		resp, err := testbed.Query(ctx, b.knot.Addr, "_25._tcp.cn."+zoneT, dns.TypeCNAME)
		if err != nil || len(resp.Answer) == 0 || resp.Answer[0].(*dns.CNAME).Target != "_dane."+zoneT {
			t.Fatalf("CNAME at the configured owner: %v, %v", resp, err)
		}
		// A set that is not served times out naming the address.
		short := b.config("cn.tg.test", b.fresh)
		short.Propagation.Timeout = 300 * time.Millisecond
		d2, err := Resolve(ctx, short)
		if err != nil {
			t.Fatal(err)
		}
		err = d2.WaitServed(ctx, rollover.RRSet{Records: []tlsa.Record{rec(3, 0x99)}})
		if !errors.Is(err, providers.ErrNotPropagated) || !strings.Contains(err.Error(), "ns."+zoneT+" ["+b.knot.Addr+"] serves 2 records") {
			t.Fatalf("WaitServed of records nobody serves: %v", err)
		}
		// Removing it goes through the provider at the target, too.
		if err := d.Set(ctx, rollover.RRSet{}); err != nil {
			t.Fatal(err)
		}
		if err := d.WaitServed(ctx, rollover.RRSet{}); err != nil {
			t.Fatal(err)
		}
		if err := d.Set(ctx, rollover.RRSet{Records: []tlsa.Record{rec(3, 0xbb)}, TTL: 300}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Observe", func(t *testing.T) {
		auth := "auth ns.tg.test " + b.knot.Addr
		res := "resolver " + b.caching.Addr
		for _, tc := range []struct {
			host   string
			recs   []tlsa.Record
			ttl    uint32 // provider and authoritative
			resMax uint32 // the resolver's remaining TTL is in (0, resMax]
			negTTL uint32 // Current's negative TTL
		}{
			{"mail.tg.test", []tlsa.Record{rec(3, 0xaa)}, 300, 300, 0},
			{"plain.tg.test", nil, 60, 60, 60}, // NODATA: SOA TTL 60, MINIMUM 60
			{"two.tg.test", []tlsa.Record{rec(3, 0xcc)}, 600, 600, 0},
		} {
			d, err := Resolve(ctx, b.config(tc.host, b.caching))
			if err != nil {
				t.Fatal(err)
			}
			obs, err := d.Observe(ctx)
			if err != nil || len(obs) != 3 {
				t.Fatalf("%s: Observe = %+v, %v", tc.host, obs, err)
			}
			authSrc := auth
			if tc.host == "two.tg.test" {
				authSrc = "auth ns.other.test " + b.knot.Addr
			}
			provTTL := tc.ttl
			if len(tc.recs) == 0 {
				provTTL = 0 // the provider has no SOA to give
			}
			for i, want := range []rollover.Sighting{
				{Kind: rollover.SourceProvider, Source: "provider", Records: tc.recs, TTL: provTTL},
				{Kind: rollover.SourceAuthoritative, Source: authSrc, Records: tc.recs, TTL: tc.ttl},
				{Kind: rollover.SourceResolver, Source: res, Records: tc.recs},
			} {
				got := obs[i]
				ttlOK := got.TTL == want.TTL
				if want.Kind == rollover.SourceResolver {
					ttlOK = got.TTL > 0 && got.TTL <= tc.resMax
				}
				if got.Kind != want.Kind || got.Source != want.Source || got.Err != nil || got.CNAME != "" ||
					!sameRecords(got.Records, want.Records) || !ttlOK {
					t.Errorf("%s: sighting %d = %+v (err %v)\nwant %+v", tc.host, i, got, got.Err, want)
				}
			}
			cur, neg, err := d.Current(ctx)
			if err != nil || !sameRecords(cur.Records, tc.recs) || neg != tc.negTTL {
				t.Errorf("%s: Current = %+v, %d, %v; want negative TTL %d", tc.host, cur, neg, err, tc.negTTL)
			}
		}
	})

	// A CNAME added at the owner after Resolve is reported as a CNAME by
	// every source, never as an empty RRset.
	t.Run("ObserveCNAME", func(t *testing.T) {
		d, err := Resolve(ctx, b.config("victim.tg.test", b.fresh))
		if err != nil || d.Owner() != "_25._tcp.victim."+zoneT {
			t.Fatalf("Resolve = %+v, %v", d, err)
		}
		if err := b.knot.Update(ctx, zoneT, []dns.RR{mustRR(t, d.Owner()+" 60 IN CNAME _dane."+zoneT)}, nil); err != nil {
			t.Fatal(err)
		}
		obs, err := d.Observe(ctx)
		if err != nil || len(obs) != 3 {
			t.Fatalf("Observe = %+v, %v", obs, err)
		}
		// Even the non-caching Unbound may answer from the NSEC records
		// of its previous NXDOMAIN for up to a second: ask again until it
		// has the CNAME.
		for deadline := time.Now().Add(5 * time.Second); obs[2].CNAME == "" && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			if obs, err = d.Observe(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range obs {
			if s.Err != nil || s.CNAME != "_dane."+zoneT || len(s.Records) != 0 {
				t.Errorf("%s: %+v (err %v); want a CNAME to _dane.%s", s.Source, s, s.Err, zoneT)
			}
		}
		if _, _, err := d.Current(ctx); err == nil || !strings.Contains(err.Error(), "CNAME") {
			t.Errorf("Current with a CNAME at the owner: err = %v", err)
		}
		if err := d.Set(ctx, rollover.RRSet{}); err == nil {
			t.Error("Set deleted at an owner that is a CNAME")
		}
	})

	// Nothing readable: an error, with every source's reason.
	t.Run("ObserveNothing", func(t *testing.T) {
		d, err := Resolve(ctx, b.config("mail.tg.test", b.fresh))
		if err != nil {
			t.Fatal(err)
		}
		dead := *d
		dead.cfg.Provider = refuseZone{b.prov, zoneT}
		dead.cfg.Resolver = &dnsx.Resolver{Addr: "127.0.0.1:1", Timeout: 200 * time.Millisecond}
		dead.servers = []providers.AuthServer{{Name: "ns.tg.test.", Addrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}}}
		dead.cfg.Propagation.QueryTimeout = 200 * time.Millisecond
		obs, err := dead.Observe(ctx)
		if err == nil || len(obs) != 3 || !strings.Contains(err.Error(), "provider: ") || !strings.Contains(err.Error(), "resolver 127.0.0.1:1: ") {
			t.Errorf("Observe with nothing readable = %+v, %v", obs, err)
		}
	})
}

func sameRecords(a, b []tlsa.Record) bool {
	return len(providers.Diff(a, b).Add) == 0 && len(providers.Diff(a, b).Remove) == 0
}

func mustRR(t *testing.T, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}
