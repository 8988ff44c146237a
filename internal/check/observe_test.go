package check_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/dnsx"
)

// fakeResolver answers from maps: MX hosts per domain and one address per
// host, all secure; no TLSA anywhere (tlsa-none, a WARNING).
type fakeResolver struct {
	mx    map[string][]string
	addrs map[string]netip.Addr

	inFlight, peak atomic.Int64
	delay          time.Duration
	slow           map[string]time.Duration // extra delay of LookupAddrs per host
}

func (f *fakeResolver) enter() func() {
	n := f.inFlight.Add(1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	return func() { f.inFlight.Add(-1) }
}

func (f *fakeResolver) LookupMX(ctx context.Context, domain string) (*dnsx.MXResult, error) {
	defer f.enter()()
	hs, ok := f.mx[domain]
	if !ok {
		return nil, &dnsx.LookupError{Name: domain, Type: "MX", Status: dnsx.Secure, Rcode: dns.RcodeNameError, Kind: dnsx.ErrNXDomain}
	}
	res := &dnsx.MXResult{Domain: domain, Canonical: domain, Status: dnsx.Secure}
	for i, h := range hs {
		res.Hosts = append(res.Hosts, dnsx.MX{Host: h, Preference: uint16(10 * i)})
	}
	return res, nil
}

func (f *fakeResolver) LookupAddrs(ctx context.Context, host string) (*dnsx.AddrsResult, error) {
	defer f.enter()()
	time.Sleep(f.slow[host])
	a, ok := f.addrs[host]
	if !ok {
		return &dnsx.AddrsResult{Host: host, Status: dnsx.Secure}, &dnsx.LookupError{Name: host, Type: "A", Status: dnsx.Secure, Kind: dnsx.ErrNXDomain}
	}
	return &dnsx.AddrsResult{Host: host, Canonical: host, CanonicalSecure: true, Addrs: []netip.Addr{a}, Status: dnsx.Secure,
		A: dnsx.Family{Status: dnsx.Secure}, AAAA: dnsx.Family{Status: dnsx.Secure}}, nil
}

func (f *fakeResolver) LookupTLSA(ctx context.Context, port uint16, host string) (*dnsx.TLSAResult, error) {
	defer f.enter()()
	n := dnsx.TLSAName(port, host)
	return nil, &dnsx.LookupError{Name: n, Type: "TLSA", Status: dnsx.Secure, Canonical: n, Kind: dnsx.ErrNoData}
}

// fakeProber counts probes per address and the peak of probes in flight to
// one address; stall lists the server names that never answer.
type fakeProber struct {
	delay time.Duration
	stall map[string]bool
	lag   time.Duration // how long a stalled probe overruns its deadline

	mu       sync.Mutex
	calls    map[netip.AddrPort]int
	inFlight map[netip.Addr]int
	peak     map[netip.Addr]int
}

func (p *fakeProber) Probe(ctx context.Context, addr netip.AddrPort, sni string) (check.Probe, error) {
	p.mu.Lock()
	if p.calls == nil {
		p.calls, p.inFlight, p.peak = map[netip.AddrPort]int{}, map[netip.Addr]int{}, map[netip.Addr]int{}
	}
	p.calls[addr]++
	p.inFlight[addr.Addr()]++
	p.peak[addr.Addr()] = max(p.peak[addr.Addr()], p.inFlight[addr.Addr()])
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inFlight[addr.Addr()]--
		p.mu.Unlock()
	}()
	if p.stall[sni] {
		<-ctx.Done()
		time.Sleep(p.lag) // a prober slow to give up: its slot stays taken
		return check.Probe{Connected: true}, fmt.Errorf("reading the greeting: %w", ctx.Err())
	}
	select {
	case <-time.After(p.delay):
	case <-ctx.Done():
		return check.Probe{}, ctx.Err()
	}
	return check.Probe{Connected: true, STARTTLSOffered: true, TLSVersion: "TLS 1.3"}, nil
}

// TestCheckRunSharedMX: 200 domains share two MX hosts (one address each):
// each address is probed once, the result reused for every domain, and each
// host reports all the domains that name it.
func TestCheckRunSharedMX(t *testing.T) {
	res := &fakeResolver{mx: map[string][]string{}, addrs: map[string]netip.Addr{
		"mx1.provider.test.": netip.MustParseAddr("192.0.2.1"),
		"mx2.provider.test.": netip.MustParseAddr("192.0.2.2"),
	}}
	var domains []string
	for i := range 200 {
		d := fmt.Sprintf("d%d.test.", i)
		res.mx[d] = []string{"mx1.provider.test.", "mx2.provider.test."}
		domains = append(domains, strings.ToUpper(d[:1])+d[1:]) // case does not defeat the dedup
	}
	pr := &fakeProber{delay: 20 * time.Millisecond}
	var mu sync.Mutex
	events := map[string]int{}
	rep := check.Run(context.Background(), check.Config{Resolver: res, Prober: pr, Concurrency: 64,
		OnResult: func(r check.Result) { mu.Lock(); events[r.Type]++; mu.Unlock() }}, domains, []string{"MX1.provider.test"})
	if len(pr.calls) != 2 {
		t.Fatalf("probed %d addresses, want 2: %v", len(pr.calls), pr.calls)
	}
	for a, n := range pr.calls {
		if n != 1 {
			t.Errorf("%s probed %d times, want once", a, n)
		}
	}
	if len(rep.Hosts) != 2 || len(rep.Domains) != 200 {
		t.Fatalf("%d hosts, %d domains", len(rep.Hosts), len(rep.Domains))
	}
	for _, h := range rep.Hosts {
		if len(h.Domains) != 200 {
			t.Errorf("%s names %d domains, want 200", h.Host, len(h.Domains))
		}
	}
	if events["host"] != 2 || events["domain"] != 200 {
		t.Errorf("streamed %v, want 2 host and 200 domain results", events)
	}
	if rep.Status != check.Warning || codes(rep)["tlsa-none"] != check.Warning {
		t.Errorf("status %s, findings %v", rep.Status, codes(rep))
	}
}

// TestCheckRunPoliteness: 60 host names on one IP address, 64 workers: never
// more than PerAddress probes to that address at once, and all are checked.
func TestCheckRunPoliteness(t *testing.T) {
	for _, per := range []int{1, 3} {
		t.Run(fmt.Sprint(per), func(t *testing.T) {
			res := &fakeResolver{addrs: map[string]netip.Addr{}}
			var hosts []string
			for i := range 60 {
				h := fmt.Sprintf("mx%d.shared.test.", i)
				res.addrs[h] = netip.MustParseAddr("198.51.100.7")
				hosts = append(hosts, h)
			}
			res.addrs["other.test."] = netip.MustParseAddr("198.51.100.8")
			hosts = append(hosts, "other.test.")
			pr := &fakeProber{delay: 5 * time.Millisecond}
			rep := check.Run(context.Background(), check.Config{Resolver: res, Prober: pr, Concurrency: 64, PerAddress: per, HostTimeout: 10 * time.Second}, nil, hosts)
			if got := pr.peak[netip.MustParseAddr("198.51.100.7")]; got != per {
				t.Errorf("peak %d probes in flight to one address, want %d", got, per)
			}
			if len(rep.Hosts) != 61 || rep.Status != check.Warning {
				t.Errorf("%d hosts, status %s: %v", len(rep.Hosts), rep.Status, codes(rep))
			}
		})
	}
}

// TestCheckRunDNSBound: resolver lookups in flight never exceed
// DNSConcurrency, however many hosts are in flight.
func TestCheckRunDNSBound(t *testing.T) {
	res := &fakeResolver{mx: map[string][]string{}, addrs: map[string]netip.Addr{}, delay: 2 * time.Millisecond}
	var domains []string
	for i := range 100 {
		d := fmt.Sprintf("d%d.test.", i)
		h := fmt.Sprintf("mx.d%d.test.", i)
		res.mx[d] = []string{h}
		res.addrs[h] = netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)})
		domains = append(domains, d)
	}
	check.Run(context.Background(), check.Config{Resolver: res, Prober: &fakeProber{}, Concurrency: 50, DNSConcurrency: 4}, domains, nil)
	if p := res.peak.Load(); p > 4 || p < 2 {
		t.Errorf("peak %d lookups in flight, want 2 to 4", p)
	}
}

// TestCheckRunStall: a host that never answers holds its slot only until
// its deadline. With one worker, the hosts after it are still checked; with
// many, the others finish long before its deadline. A host waiting for a
// politeness slot that the stalled probe holds gives up at its own deadline.
func TestCheckRunStall(t *testing.T) {
	res := &fakeResolver{addrs: map[string]netip.Addr{"stall.test.": netip.MustParseAddr("192.0.2.9")}}
	// neighbour.test has the stalled host's address and asks for it a
	// little later, when the stalled probe holds the only slot.
	res.addrs["neighbour.test."] = netip.MustParseAddr("192.0.2.9")
	res.slow = map[string]time.Duration{"neighbour.test.": 50 * time.Millisecond}
	hosts := []string{"stall.test.", "neighbour.test."}
	for i := range 20 {
		h := fmt.Sprintf("ok%d.test.", i)
		res.addrs[h] = netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
		hosts = append(hosts, h)
	}
	const deadline = 400 * time.Millisecond

	pr := &fakeProber{stall: map[string]bool{"stall.test": true}, lag: deadline / 2}
	var mu sync.Mutex
	finished := map[string]time.Duration{}
	start := time.Now()
	rep := check.Run(context.Background(), check.Config{Resolver: res, Prober: pr, Concurrency: 8, PerAddress: 1, HostTimeout: deadline,
		OnResult: func(r check.Result) {
			mu.Lock()
			defer mu.Unlock()
			if r.Host != nil {
				finished[r.Host.Host] = time.Since(start)
			}
		}}, nil, hosts)
	total := time.Since(start)
	if total > 3*deadline {
		t.Errorf("run took %v with a %v host deadline", total, deadline)
	}
	for h, d := range finished {
		if strings.HasPrefix(h, "ok") && d > deadline*3/4 {
			t.Errorf("%s finished after %v: held up by the stalled host", h, d)
		}
	}
	status := map[string]check.HostReport{}
	for _, h := range rep.Hosts {
		status[h.Host] = h
	}
	if h := status["stall.test."]; !strings.Contains(h.Addresses[0].Error, "abandoned at the host deadline") {
		t.Errorf("stalled host: %s %+v", h.Status, h.Addresses)
	}
	if h := status["neighbour.test."]; !strings.Contains(h.Addresses[0].Error, "waiting for a connection slot") {
		t.Errorf("host waiting behind the stalled one: %s %+v", h.Status, h.Addresses)
	}
	// Read under the prober's lock: the abandoned probe's goroutine may
	// still be running (it overruns its deadline by lag).
	pr.mu.Lock()
	n := pr.calls[netip.AddrPortFrom(netip.MustParseAddr("192.0.2.9"), 25)]
	pr.mu.Unlock()
	if n != 1 {
		t.Errorf("the shared address was probed %d times while the stalled probe held the only slot", n)
	}

	// One worker: the stall costs one deadline, then the rest are checked.
	pr = &fakeProber{stall: map[string]bool{"stall.test": true}}
	start = time.Now()
	rep = check.Run(context.Background(), check.Config{Resolver: res, Prober: pr, Concurrency: 1, HostTimeout: deadline}, nil, hosts[:6])
	if d := time.Since(start); d > 2*deadline {
		t.Errorf("one worker: %v", d)
	}
	for _, h := range rep.Hosts[2:] {
		if h.Status != check.Warning {
			t.Errorf("%s: %s %+v", h.Host, h.Status, h.Addresses)
		}
	}
}

// TestCheckSummary counts domains and hosts per status and findings per code.
func TestCheckSummary(t *testing.T) {
	res := &fakeResolver{mx: map[string][]string{
		"a.test.": {"mx.shared.test."},
		"b.test.": {"mx.shared.test.", "gone.test."},
	}, addrs: map[string]netip.Addr{"mx.shared.test.": netip.MustParseAddr("192.0.2.1")}}
	rep := check.Run(context.Background(), check.Config{Resolver: res, Prober: &fakeProber{}}, []string{"a.test", "b.test", "nx.test"}, nil)
	s := check.Summarize(rep)
	if s.Status != check.Critical || s.Domains != 3 || s.Hosts != 2 {
		t.Errorf("summary %+v", s)
	}
	if s.HostStatus["WARNING"] != 1 || s.HostStatus["CRITICAL"] != 1 {
		t.Errorf("hosts by status %v", s.HostStatus)
	}
	if s.DomainStatus["WARNING"] != 1 || s.DomainStatus["CRITICAL"] != 2 {
		t.Errorf("domains by status %v", s.DomainStatus)
	}
	if s.Findings["tlsa-none"] != 2 || s.Findings["addr-none"] != 1 || s.Findings["domain-nxdomain"] != 1 {
		t.Errorf("findings by code %v", s.Findings)
	}
}

// TestCheckDefaultConcurrency: the default is within its documented bounds.
func TestCheckDefaultConcurrency(t *testing.T) {
	n := check.DefaultConcurrency()
	if n < 16 || n > 1024 {
		t.Errorf("DefaultConcurrency() = %d, want 16 to 1024", n)
	}
	if lim := check.RaiseFileLimit(); lim != 0 && uint64(n) > lim {
		t.Errorf("default %d exceeds the file limit %d", n, lim)
	}
}
