package providers_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/providers"
)

// zoneData answers like a validating resolver over one small zone:
// example.test. with NS ns1 (A 192.0.2.53) and mx.example.test. inside.
// It is called concurrently, as the Resolver contract says.
type zoneData struct {
	mu    sync.Mutex
	asked []string
}

func (z *zoneData) Exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	z.mu.Lock()
	z.asked = append(z.asked, name+" "+dns.TypeToString[qtype])
	z.mu.Unlock()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Response, m.AuthenticatedData = true, true
	soa, _ := dns.NewRR("example.test. 300 IN SOA ns1.example.test. host.example.test. 1 3600 600 86400 60")
	switch {
	case name == "example.test." && qtype == dns.TypeSOA:
		m.Answer = []dns.RR{soa}
	case name == "example.test." && qtype == dns.TypeNS:
		ns, _ := dns.NewRR("example.test. 300 IN NS ns1.example.test.")
		m.Answer = []dns.RR{ns}
	case name == "ns1.example.test." && qtype == dns.TypeA:
		a, _ := dns.NewRR("ns1.example.test. 300 IN A 192.0.2.53")
		m.Answer = []dns.RR{a}
	case name == "ns1.example.test." || name == "mx.example.test.":
		m.Ns = []dns.RR{soa} // NODATA
	default:
		return nil, errors.New("unexpected query " + name)
	}
	return m, nil
}

// TestForeignResolver: a library caller's own Resolver (not tlsactl's) is
// asked every query, and its answers are classified as tlsactl's own
// resolver's are.
func TestForeignResolver(t *testing.T) {
	z := &zoneData{}
	ctx := context.Background()
	zone, err := providers.FindZone(ctx, z, "MX.example.test")
	if err != nil || zone != "example.test." {
		t.Fatalf("FindZone = %q, %v; want example.test.", zone, err)
	}
	servers, err := providers.AuthServers(ctx, z, zone, 5353)
	if err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddrPort("192.0.2.53:5353")
	if len(servers) != 1 || len(servers[0].Addrs) != 1 || servers[0].Addrs[0] != want {
		t.Fatalf("AuthServers = %+v, want ns1 at %s", servers, want)
	}
	// NODATA for the SOA at a name inside the zone is tlsactl's own
	// negative answer, whatever resolver gave it.
	if _, err := providers.AuthServers(ctx, z, "mx.example.test.", 53); !errors.Is(err, dnsx.ErrNoData) {
		t.Errorf("NS at a name without NS: %v, want ErrNoData", err)
	}
	if len(z.asked) == 0 {
		t.Error("the foreign resolver was never asked")
	}
	var nilResolver *dnsx.Resolver
	if s, err := providers.ServersFor(ctx, nilResolver, zone, 53, []string{"127.0.0.1:53"}); err != nil || len(s) != 1 {
		t.Errorf("ServersFor with a nil *dnsx.Resolver: %v, %v; want only the extra server", s, err)
	}
}
