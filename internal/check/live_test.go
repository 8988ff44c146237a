package check_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/tlsa"
)

// bed is the package's real-server test bed, started once in TestMain:
// Knot serving a signed zone (example.test), an unsigned zone
// (unsigned.test) and a signed zone whose trust anchor at the resolver is
// wrong (bogus.test), and a validating Unbound in front of it.
type liveBed struct {
	knot    *testbed.Knot
	unbound *testbed.Unbound
	err     error // why the bed is not there
}

var bed liveBed

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "check-live-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	stop := startBed(dir)
	code := m.Run()
	stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startBed(dir string) func() {
	for _, b := range []string{"knotd", "keymgr", "unbound"} {
		if _, err := testbed.Lookup(b); err != nil {
			bed.err = fmt.Errorf("%v: apt-get install -y --no-install-recommends knot knot-dnsutils unbound", err)
			return func() {}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	k, err := testbed.StartKnot(ctx, dir+"/knot", testbed.KnotConfig{Zones: []testbed.Zone{
		{Name: "example.test.", Signed: true},
		{Name: "unsigned.test.", Signed: false},
		{Name: "bogus.test.", Signed: true},
	}})
	if err != nil {
		bed.err = err
		return func() {}
	}
	ds, err := k.DS(ctx, "example.test.")
	if err == nil {
		var bogusDS string
		if bogusDS, err = k.DS(ctx, "bogus.test."); err == nil {
			cfg := testbed.UnboundConfig{Stubs: []testbed.StubZone{
				{Name: "example.test.", Addr: k.Addr, TrustAnchor: ds},
				{Name: "unsigned.test.", Addr: k.Addr},
				{Name: "bogus.test.", Addr: k.Addr, TrustAnchor: testbed.CorruptDS(bogusDS)},
			}}
			if os.Geteuid() == 0 {
				cfg.Port53 = true // for posttls-finger
			}
			bed.unbound, err = testbed.StartUnbound(ctx, dir+"/unbound", cfg)
		}
	}
	if err != nil {
		bed.err = err
		k.Stop()
		return func() {}
	}
	bed.knot = k
	return func() {
		bed.unbound.Stop()
		bed.knot.Stop()
	}
}

func requireBed(t *testing.T) {
	t.Helper()
	if bed.err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("test bed unavailable (CI=true: this is a failure): %v", bed.err)
	}
	t.Skipf("test bed unavailable: %v", bed.err)
}

// publish adds records (zone-file text relative to nothing: full owner names)
// to zone through a TSIG-signed RFC 2136 update.
func publish(t *testing.T, zone string, lines ...string) {
	t.Helper()
	var rrs []dns.RR
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("bad test record %q: %v", l, err)
		}
		rrs = append(rrs, rr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bed.knot.Update(ctx, zone, rrs, nil); err != nil {
		t.Fatalf("update %s: %v", zone, err)
	}
}

func record(t *testing.T, c *testbed.Cert, u tlsa.Usage) string {
	t.Helper()
	r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: c.Cert, SPKI: c.SPKIDER}, u, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	if err != nil {
		t.Fatal(err)
	}
	return r.String()
}

func portOf(t *testing.T, addr string) uint16 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(n)
}

func runCheck(t *testing.T, port uint16, domains, hosts []string, timeout time.Duration) check.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return check.Run(ctx, check.Config{
		Resolver:    &dnsx.Resolver{Addr: bed.unbound.Addr, Timeout: 3 * time.Second},
		Prober:      check.STARTTLSProber{Timeout: 5 * time.Second},
		Port:        port,
		HostTimeout: timeout,
		WarnDays:    14,
	}, domains, hosts)
}

func codes(rep check.Report) map[string]check.Severity {
	m := map[string]check.Severity{}
	for _, f := range rep.Findings {
		m[f.Code] = check.Worst(m[f.Code], f.Severity)
	}
	return m
}

// scenario is one MX host set up in the test bed and what tlsactl must say
// about it.
type scenario struct {
	name  string
	zone  string
	chain func(t *testing.T) *testbed.Chain
	serve func(c *testbed.Chain) tls.Certificate // what the server sends; nil: leaf + intermediate
	mode  testbed.SMTPMode
	// postfix serves the chain from a real Postfix instead of the Go server.
	postfix bool
	tlsa    func(t *testing.T, c *testbed.Chain) []string // RDATA
	want    check.Severity
	codes   []string // finding codes that must be present
	reason  tlsa.Reason
}

func wrongChain(t *testing.T) *testbed.Chain {
	return testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"unrelated.example.test"}})
}

func TestLiveScenarios(t *testing.T) {
	requireBed(t)
	now := time.Now()
	scenarios := []scenario{
		{
			name: "good", zone: "example.test.",
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				return []string{record(t, c.Leaf, tlsa.DANEEE), record(t, c.Intermediate, tlsa.DANETA)}
			},
			want: check.OK,
		},
		{
			name: "postfix", zone: "example.test.", postfix: true,
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				return []string{record(t, c.Leaf, tlsa.DANEEE), record(t, c.Intermediate, tlsa.DANETA)}
			},
			want: check.OK,
		},
		{
			name: "stale311", zone: "example.test.",
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				return []string{record(t, wrongChain(t).Leaf, tlsa.DANEEE), record(t, c.Intermediate, tlsa.DANETA)}
			},
			want: check.Warning, codes: []string{"tlsa-partial-match"},
		},
		{
			name: "bothwrong", zone: "example.test.",
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				w := wrongChain(t)
				return []string{record(t, w.Leaf, tlsa.DANEEE), record(t, w.Intermediate, tlsa.DANETA)}
			},
			want: check.Critical, codes: []string{"tlsa-none-match"},
		},
		{
			name: "insecure", zone: "unsigned.test.",
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				return []string{record(t, c.Leaf, tlsa.DANEEE), record(t, c.Intermediate, tlsa.DANETA)}
			},
			want: check.Warning, codes: []string{"tlsa-insecure"},
		},
		{
			name: "bogus", zone: "bogus.test.",
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				return []string{record(t, c.Leaf, tlsa.DANEEE), record(t, c.Intermediate, tlsa.DANETA)}
			},
			want: check.Critical, codes: []string{"tlsa-bogus"},
		},
		{
			name: "nostarttls", zone: "example.test.", mode: testbed.SMTPNoStartTLS,
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				return []string{record(t, c.Leaf, tlsa.DANEEE), record(t, c.Intermediate, tlsa.DANETA)}
			},
			want: check.Critical, codes: []string{"starttls-missing"},
		},
		{
			name: "expired", zone: "example.test.",
			chain: func(t *testing.T) *testbed.Chain {
				return testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"expired.example.test"},
					NotBefore: now.Add(-60 * 24 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
			},
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				return []string{record(t, c.Leaf, tlsa.DANEEE), record(t, c.Intermediate, tlsa.DANETA)}
			},
			want: check.Warning, codes: []string{"cert-expired"},
		},
		{
			name: "tanotinchain", zone: "example.test.",
			serve: func(c *testbed.Chain) tls.Certificate {
				return tls.Certificate{Certificate: [][]byte{c.Leaf.DER}, PrivateKey: c.Leaf.Key}
			},
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				return []string{record(t, c.Intermediate, tlsa.DANETA)}
			},
			want: check.Critical, codes: []string{"tlsa-none-match", "tlsa-no-rollover", "chain-incomplete"}, reason: tlsa.ReasonTANotInChain,
		},
	}
	var finger sync.Mutex // posttls-finger runs are serialised: each mounts a private resolv.conf
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			host := sc.name + "." + sc.zone
			var chain *testbed.Chain
			if sc.chain != nil {
				chain = sc.chain(t)
			} else {
				chain = testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{strings.TrimSuffix(host, ".")}})
			}
			cert := chain.TLSCertificate()
			if sc.serve != nil {
				cert = sc.serve(chain)
			}
			var port uint16
			if sc.postfix {
				pf := testbed.NewPostfix(t, testbed.PostfixConfig{KeyPEM: chain.Leaf.KeyPEM, ChainPEM: chain.FullChainPEM(), Hostname: strings.TrimSuffix(host, ".")})
				port = uint16(pf.Port)
			} else {
				srv := testbed.NewSMTPServer(t, sc.mode, &cert)
				port = portOf(t, srv.Addr)
			}
			lines := []string{host + " 60 IN A 127.0.0.1"}
			for _, r := range sc.tlsa(t, chain) {
				lines = append(lines, fmt.Sprintf("_%d._tcp.%s 60 IN TLSA %s", port, host, r))
			}
			publish(t, sc.zone, lines...)

			rep := runCheck(t, port, nil, []string{host}, 20*time.Second)
			if rep.Status != sc.want {
				t.Errorf("status %s, want %s; findings: %v", rep.Status, sc.want, rep.Findings)
			}
			got := codes(rep)
			for _, c := range sc.codes {
				if _, ok := got[c]; !ok {
					t.Errorf("finding %q missing; got %v", c, rep.Findings)
				}
			}
			if len(rep.Hosts) != 1 {
				t.Fatalf("want 1 host report, got %d", len(rep.Hosts))
			}
			h := rep.Hosts[0]
			if sc.reason != "" {
				if len(h.Addresses) != 1 || len(h.Addresses[0].Verdicts) == 0 || h.Addresses[0].Verdicts[0].Reason != sc.reason {
					t.Errorf("want verdict reason %s, got %+v", sc.reason, h.Addresses)
				}
			}
			// tlsactl's DANE verdict: a secure RRset with a matching usable record.
			verified := h.TLSA.Status == "secure" && len(h.Addresses) == 1 && h.Addresses[0].Matched > 0 && h.Addresses[0].Error == ""
			if sc.name == "bogus" {
				for _, f := range rep.Findings {
					s := f.String()
					if strings.Contains(s, "no TLSA") && !strings.Contains(s, "not \"no TLSA\"") {
						t.Errorf("bogus reported as missing TLSA: %s", s)
					}
				}
				if h.TLSA.Status != "bogus" {
					t.Errorf("TLSA status %q, want bogus", h.TLSA.Status)
				}
			}
			if sc.name == "expired" {
				a := h.Addresses[0]
				if a.DaysToExpiry == nil || *a.DaysToExpiry >= 0 {
					t.Errorf("expired leaf: days to expiry %v, want negative", a.DaysToExpiry)
				}
				// The RRset comes back in any order: find the 3 1 1's verdict.
				eeMatched := false
				for _, v := range a.Verdicts {
					if strings.HasPrefix(v.Record, "3 ") {
						eeMatched = v.Matched
					} else if v.Matched || v.Reason != tlsa.ReasonExpired {
						t.Errorf("2 1 1 with an expired leaf: %+v, want %s", v, tlsa.ReasonExpired)
					}
				}
				if !eeMatched {
					t.Errorf("expired leaf under 3 1 1 must still match (RFC 7672 §3.1.1): %+v", a.Verdicts)
				}
			}
			crossCheck(t, &finger, host, port, verified)
		})
	}
}

// crossCheck asks Postfix's own DANE client, posttls-finger, about the same
// host and requires the same verdict as tlsactl's.
func crossCheck(t *testing.T, mu *sync.Mutex, host string, port uint16, verified bool) {
	t.Helper()
	testbed.RequirePosttlsFinger(t)
	testbed.RequireRoot(t, "posttls-finger needs a private mount namespace")
	mu.Lock()
	defer mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := testbed.PosttlsFinger(ctx, bed.unbound.Port53IP, strings.TrimSuffix(host, "."), int(port))
	if err != nil {
		t.Fatalf("posttls-finger: %v", err)
	}
	fingerOK := strings.Contains(out, "Verified TLS connection")
	t.Logf("posttls-finger: verified=%v; tlsactl: verified=%v", fingerOK, verified)
	if fingerOK != verified {
		t.Errorf("tlsactl says DANE-verified=%v, posttls-finger disagrees:\n%s", verified, out)
	}
}

// TestLiveDomainMX checks a mail domain with two MX hosts of which one has no
// TLSA: the unprotected host is named in a WARNING. A third MX host that never
// answers must not stall the others.
func TestLiveDomainMX(t *testing.T) {
	requireBed(t)
	good := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"mx1.corp.example.test"}})
	cert := good.TLSCertificate()
	srv := testbed.NewSMTPServer(t, testbed.SMTPStartTLS, &cert)
	port := portOf(t, srv.Addr)
	publish(t, "example.test.",
		"corp.example.test. 60 IN MX 10 mx1.corp.example.test.",
		"corp.example.test. 60 IN MX 20 mx2.corp.example.test.",
		"mx1.corp.example.test. 60 IN A 127.0.0.1",
		"mx2.corp.example.test. 60 IN A 127.0.0.1",
		fmt.Sprintf("_%d._tcp.mx1.corp.example.test. 60 IN TLSA %s", port, record(t, good.Leaf, tlsa.DANEEE)),
		fmt.Sprintf("_%d._tcp.mx1.corp.example.test. 60 IN TLSA %s", port, record(t, good.Intermediate, tlsa.DANETA)),
	)
	rep := runCheck(t, port, []string{"corp.example.test"}, nil, 20*time.Second)
	if rep.Status != check.Warning {
		t.Errorf("status %s, want WARNING; findings %v", rep.Status, rep.Findings)
	}
	var named bool
	for _, f := range rep.Findings {
		if f.Code == "mx-unprotected" && strings.Contains(f.Message, "mx2.corp.example.test") && !strings.Contains(f.Message, "mx1.") {
			named = true
		}
	}
	if !named {
		t.Errorf("no WARNING naming mx2 as unprotected: %v", rep.Findings)
	}
	if len(rep.Domains) != 1 || len(rep.Domains[0].MX) != 2 || rep.Domains[0].MXStatus != "secure" {
		t.Errorf("domain report %+v", rep.Domains)
	}
}

// TestLiveDeadHost: one host accepts TCP and never speaks; the per-host
// deadline ends its probe while a healthy host in the same run is checked.
func TestLiveDeadHost(t *testing.T) {
	requireBed(t)
	chain := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"alive.example.test"}})
	cert := chain.TLSCertificate()
	alive := testbed.NewSMTPServer(t, testbed.SMTPStartTLS, &cert)
	dead := testbed.NewSMTPServer(t, testbed.SMTPDead, nil)
	// Both on one port number is impossible; use two addresses of the loopback
	// net for the dead host: it listens on 127.0.0.1 only, so give it its own
	// port and publish TLSA there. The check runs per port, so run twice in
	// parallel goroutines under one deadline.
	ap, dp := portOf(t, alive.Addr), portOf(t, dead.Addr)
	publish(t, "example.test.",
		"alive.example.test. 60 IN A 127.0.0.1",
		"dead.example.test. 60 IN A 127.0.0.1",
		fmt.Sprintf("_%d._tcp.alive.example.test. 60 IN TLSA %s", ap, record(t, chain.Leaf, tlsa.DANEEE)),
		fmt.Sprintf("_%d._tcp.alive.example.test. 60 IN TLSA %s", ap, record(t, chain.Intermediate, tlsa.DANETA)),
		fmt.Sprintf("_%d._tcp.dead.example.test. 60 IN TLSA %s", dp, record(t, chain.Leaf, tlsa.DANEEE)),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := check.Config{
		Resolver: &dnsx.Resolver{Addr: bed.unbound.Addr, Timeout: 3 * time.Second},
		Prober:   check.STARTTLSProber{Timeout: 30 * time.Second}, HostTimeout: 2 * time.Second,
	}
	var deadRep, aliveRep check.Report
	var wg sync.WaitGroup
	wg.Go(func() { c := cfg; c.Port = dp; deadRep = check.Run(ctx, c, nil, []string{"dead.example.test"}) })
	wg.Go(func() { c := cfg; c.Port = ap; aliveRep = check.Run(ctx, c, nil, []string{"alive.example.test"}) })
	wg.Wait()
	if aliveRep.Status != check.OK {
		t.Errorf("alive host: %s %v", aliveRep.Status, aliveRep.Findings)
	}
	if deadRep.Status != check.Critical || codes(deadRep)["smtp-unreachable"] != check.Critical {
		t.Errorf("dead host: %s %v", deadRep.Status, deadRep.Findings)
	}
	if e := deadRep.Hosts[0].Addresses[0].Error; !strings.Contains(e, "deadline") && !strings.Contains(e, "timeout") {
		t.Errorf("dead host error %q does not say it timed out", e)
	}
}

// TestLiveResolverDown: an unreachable resolver is UNKNOWN, not "no TLSA".
func TestLiveResolverDown(t *testing.T) {
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close() // nothing listens there now
	rep := check.Run(context.Background(), check.Config{
		Resolver: &dnsx.Resolver{Addr: addr, Timeout: time.Second}, Prober: check.STARTTLSProber{},
	}, []string{"example.test"}, []string{"mail.example.test"})
	if rep.Status != check.Unknown {
		t.Errorf("status %s, want UNKNOWN: %v", rep.Status, rep.Findings)
	}
	for _, f := range rep.Findings {
		if f.Code == "tlsa-none" {
			t.Errorf("resolver failure folded into no-TLSA: %v", f)
		}
	}
}
