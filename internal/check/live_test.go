package check_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"regexp"
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
// (unsigned.test), a signed zone whose trust anchor at the resolver is
// wrong (bogus.test) and a signed island below the unsigned zone (see
// addrInsecureHost), and a validating Unbound in front of it.
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

// addrInsecureHost is a host whose A record is in the unsigned zone
// unsigned.test while its TLSA records are in the signed zone
// _tcp.<host> below it, an island of trust with its own trust anchor at the
// resolver: the address lookup is insecure, the TLSA lookup secure.
const addrInsecureHost = "addrinsecure.unsigned.test."

func startBed(dir string) func() {
	for _, b := range []string{"knotd", "keymgr", "unbound"} {
		if _, err := testbed.Lookup(b); err != nil {
			bed.err = fmt.Errorf("%v: apt-get install -y --no-install-recommends knot knot-dnsutils unbound", err)
			return func() {}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	zones := []struct {
		name   string
		signed bool
		anchor func(ds string) string // nil: no trust anchor (insecure)
	}{
		{"example.test.", true, func(ds string) string { return ds }},
		{"unsigned.test.", false, nil},
		{"bogus.test.", true, testbed.CorruptDS},
		{"_tcp." + addrInsecureHost, true, func(ds string) string { return ds }},
	}
	var kz []testbed.Zone
	for _, z := range zones {
		kz = append(kz, testbed.Zone{Name: z.name, Signed: z.signed})
	}
	k, err := testbed.StartKnot(ctx, dir+"/knot", testbed.KnotConfig{Zones: kz})
	if err != nil {
		bed.err = err
		return func() {}
	}
	var cfg testbed.UnboundConfig
	for _, z := range zones {
		stub := testbed.StubZone{Name: z.name, Addr: k.Addr}
		if z.anchor != nil {
			var ds string
			if ds, err = k.DS(ctx, z.name); err != nil {
				break
			}
			stub.TrustAnchor = z.anchor(ds)
		}
		cfg.Stubs = append(cfg.Stubs, stub)
	}
	if err == nil {
		if os.Geteuid() == 0 {
			cfg.Port53 = true // for posttls-finger
		}
		bed.unbound, err = testbed.StartUnbound(ctx, dir+"/unbound", cfg)
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

// scenario is one MX host set up in the test bed, what tlsactl must say
// about it, and what a DANE sender does with it.
type scenario struct {
	name string
	zone string // the zone of the TLSA records (and of the host, unless host is set)
	// host is the MX host; default <name>.<zone>. addrZone is the zone of
	// its A record; default zone.
	host, addrZone string
	chain          func(t *testing.T, host string) *testbed.Chain // nil: a fresh valid chain for host
	serve          func(c *testbed.Chain) tls.Certificate         // what the server sends; nil: leaf + intermediate
	mode           testbed.SMTPMode
	// postfix serves the chain from a real Postfix instead of the Go server.
	postfix bool
	tlsa    func(t *testing.T, c *testbed.Chain) []string // RDATA
	// cname publishes the records at _dane.<zone> and makes the TLSA owner
	// name _<port>._tcp.<host> a CNAME to it.
	cname  bool
	want   check.Severity
	codes  []string // finding codes that must be present
	absent []string // finding codes that must not be present
	reason tlsa.Reason
	// finger is posttls-finger's verdict: what Postfix
	// (smtp_tls_security_level = dane) does. tlsactl's report must imply
	// the same.
	finger testbed.FingerVerdict
	// forced, if set, is posttls-finger's verdict with -f (TLSA looked up
	// even for insecure address records), which tlsactl's informational
	// verdicts must imply.
	forced testbed.FingerVerdict
}

func wrongChain(t *testing.T) *testbed.Chain {
	return testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"unrelated.example.test"}})
}

// both211 is the NCSC pair: 3 1 1 for the leaf, 2 1 1 for the intermediate.
func both211(t *testing.T, c *testbed.Chain) []string {
	return []string{record(t, c.Leaf, tlsa.DANEEE), record(t, c.Intermediate, tlsa.DANETA)}
}

func TestLiveScenarios(t *testing.T) {
	requireBed(t)
	now := time.Now()
	day := 24 * time.Hour
	scenarios := []scenario{
		{name: "good", zone: "example.test.", tlsa: both211, want: check.OK, finger: testbed.FingerVerified},
		{name: "postfix", zone: "example.test.", postfix: true, tlsa: both211, want: check.OK, finger: testbed.FingerVerified},
		{
			name: "stale311", zone: "example.test.",
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				return []string{record(t, wrongChain(t).Leaf, tlsa.DANEEE), record(t, c.Intermediate, tlsa.DANETA)}
			},
			want: check.Warning, codes: []string{"tlsa-partial-match"}, finger: testbed.FingerVerified,
		},
		{
			name: "bothwrong", zone: "example.test.",
			tlsa: func(t *testing.T, c *testbed.Chain) []string { return both211(t, wrongChain(t)) },
			want: check.Critical, codes: []string{"tlsa-none-match"}, finger: testbed.FingerDANEFailed,
		},
		{name: "insecure", zone: "unsigned.test.", tlsa: both211, want: check.Warning, codes: []string{"tlsa-insecure"}, finger: testbed.FingerNoTLSA},
		{name: "bogus", zone: "bogus.test.", tlsa: both211, want: check.Critical, codes: []string{"tlsa-bogus", "addr-bogus"}, finger: testbed.FingerLookupFailed},
		{
			name: "nostarttls", zone: "example.test.", mode: testbed.SMTPNoStartTLS, tlsa: both211,
			want: check.Critical, codes: []string{"starttls-missing"}, finger: testbed.FingerNoSTARTTLS,
		},
		{
			name: "expired", zone: "example.test.",
			chain: func(t *testing.T, host string) *testbed.Chain {
				return testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"expired.example.test"},
					NotBefore: now.Add(-60 * day), NotAfter: now.Add(-day)})
			},
			tlsa: both211,
			want: check.Warning, codes: []string{"cert-expired"}, finger: testbed.FingerVerified,
		},
		{
			name: "tanotinchain", zone: "example.test.", serve: leafOnly,
			tlsa: func(t *testing.T, c *testbed.Chain) []string { return []string{record(t, c.Intermediate, tlsa.DANETA)} },
			want: check.Critical, codes: []string{"tlsa-none-match", "tlsa-no-rollover", "chain-incomplete"}, reason: tlsa.ReasonTANotInChain,
			finger: testbed.FingerDANEFailed,
		},
		{
			// Issue 15: OpenSSL's DANE code checks validity only below the
			// trust anchor; the TA's own dates do not count. Agreement needs
			// the tlsa.Match change of issue 15 part 1 (before it tlsactl
			// said certificate-expired and CRITICAL).
			name: "taexpired", zone: "example.test.",
			chain: func(t *testing.T, host string) *testbed.Chain {
				return testbed.MustValidityChain(t, testbed.ValidityChainOptions{DNSNames: []string{dotless(host)},
					Intermediate: testbed.Validity{NotBefore: now.Add(-400 * day), NotAfter: now.Add(-day)}})
			},
			tlsa: func(t *testing.T, c *testbed.Chain) []string { return []string{record(t, c.Intermediate, tlsa.DANETA)} },
			want: check.Warning, codes: []string{"tlsa-no-rollover"}, absent: []string{"cert-expired", "tlsa-none-match"},
			finger: testbed.FingerVerified,
		},
		{
			// A full-certificate 2 0 0 for a TA the server does not send:
			// OpenSSL and Postfix build the chain with the certificate from
			// DNS. RFC 7672 §3.1.2 still says servers MUST send it
			// (chain-incomplete). Agreement needs the tlsa.Match change of
			// issue 15 part 1 (before it: ta-not-in-chain, CRITICAL).
			name: "ta200notsent", zone: "example.test.", serve: leafOnly,
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				r, err := tlsa.Compute(tlsa.FromCertificate(c.Intermediate.Cert), tlsa.DANETA, tlsa.SelectorCert, tlsa.MatchFull)
				if err != nil {
					t.Fatal(err)
				}
				return []string{r.String()}
			},
			want: check.Warning, codes: []string{"chain-incomplete", "tlsa-no-rollover"}, absent: []string{"tlsa-none-match"},
			finger: testbed.FingerVerified,
		},
		{
			// DANE-TA checks the leaf's dates (RFC 7672 §3.1.2): fails in
			// both.
			name: "leafexpired211", zone: "example.test.",
			chain: func(t *testing.T, host string) *testbed.Chain {
				return testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{dotless(host)},
					NotBefore: now.Add(-60 * day), NotAfter: now.Add(-day)})
			},
			tlsa: func(t *testing.T, c *testbed.Chain) []string { return []string{record(t, c.Intermediate, tlsa.DANETA)} },
			want: check.Critical, codes: []string{"tlsa-none-match", "cert-expired"}, reason: tlsa.ReasonExpired,
			finger: testbed.FingerDANEFailed,
		},
		{
			// _<port>._tcp.cname.example.test CNAME _dane.example.test: one
			// RRset shared by several names.
			name: "cname", zone: "example.test.", cname: true, tlsa: both211, want: check.OK, finger: testbed.FingerVerified,
		},
		{
			// RFC 7672 §2.2: no usable record: mandatory TLS without
			// authentication, mail is not deferred.
			name: "unusable", zone: "example.test.",
			tlsa: func(t *testing.T, c *testbed.Chain) []string {
				ee, err := tlsa.Compute(tlsa.FromCertificate(c.Leaf.Cert), tlsa.PKIXEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
				if err != nil {
					t.Fatal(err)
				}
				ta, err := tlsa.Compute(tlsa.FromCertificate(c.Intermediate.Cert), tlsa.PKIXTA, tlsa.SelectorSPKI, tlsa.MatchSHA256)
				if err != nil {
					t.Fatal(err)
				}
				return []string{ee.String(), ta.String()}
			},
			want: check.Warning, codes: []string{"tlsa-unusable"}, absent: []string{"tlsa-none-match"},
			finger: testbed.FingerNoUsableTLSA,
		},
		{
			// RFC 7672 §2.2.2: the A record is insecure, so senders never
			// look up the (secure) TLSA RRset; it names a wrong key, which
			// nobody acts on.
			name: "addrinsecure", zone: "_tcp." + addrInsecureHost, host: addrInsecureHost, addrZone: "unsigned.test.",
			tlsa: func(t *testing.T, c *testbed.Chain) []string { return both211(t, wrongChain(t)) },
			want: check.Warning, codes: []string{"addr-insecure"}, absent: []string{"tlsa-none-match"},
			finger: testbed.FingerNoTLSA, forced: testbed.FingerDANEFailed,
		},
	}
	var finger sync.Mutex // posttls-finger runs are serialised: each mounts a private resolv.conf
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			host := sc.host
			if host == "" {
				host = sc.name + "." + sc.zone
			}
			addrZone := sc.addrZone
			if addrZone == "" {
				addrZone = sc.zone
			}
			var chain *testbed.Chain
			if sc.chain != nil {
				chain = sc.chain(t, host)
			} else {
				chain = testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{dotless(host)}})
			}
			cert := chain.TLSCertificate()
			if sc.serve != nil {
				cert = sc.serve(chain)
			}
			var port uint16
			if sc.postfix {
				pf := testbed.NewPostfix(t, testbed.PostfixConfig{KeyPEM: chain.Leaf.KeyPEM, ChainPEM: chain.FullChainPEM(), Hostname: dotless(host)})
				port = uint16(pf.Port)
			} else {
				srv := testbed.NewSMTPServer(t, sc.mode, &cert)
				port = portOf(t, srv.Addr)
			}
			owner := fmt.Sprintf("_%d._tcp.%s", port, host)
			var lines []string
			if a := host + " 60 IN A 127.0.0.1"; addrZone == sc.zone {
				lines = append(lines, a)
			} else {
				publish(t, addrZone, a)
			}
			rdata := sc.tlsa(t, chain)
			if sc.cname {
				target := "_dane." + sc.zone
				replaceTLSA(t, sc.zone, target, rdata)
				lines = append(lines, owner+" 60 IN CNAME "+target)
			} else {
				for _, r := range rdata {
					lines = append(lines, owner+" 60 IN TLSA "+r)
				}
			}
			publish(t, sc.zone, lines...)

			rep := runCheck(t, port, nil, []string{host}, 20*time.Second)
			for _, f := range rep.Findings {
				t.Logf("tlsactl: %s", f)
			}
			if rep.Status != sc.want {
				t.Errorf("status %s, want %s; findings: %v", rep.Status, sc.want, rep.Findings)
			}
			got := codes(rep)
			for _, c := range sc.codes {
				if _, ok := got[c]; !ok {
					t.Errorf("finding %q missing; got %v", c, rep.Findings)
				}
			}
			for _, c := range sc.absent {
				if _, ok := got[c]; ok {
					t.Errorf("finding %q must be absent; got %v", c, rep.Findings)
				}
			}
			dotted := regexp.MustCompile(regexp.QuoteMeta(dotless(host)) + `\.($|[^A-Za-z0-9-])`)
			for _, f := range rep.Findings {
				if dotted.MatchString(f.Message) {
					t.Errorf("a name with a trailing dot in %q", f.Message)
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
			switch sc.name {
			case "bogus":
				for _, f := range rep.Findings {
					s := f.String()
					if strings.Contains(s, "no TLSA") && !strings.Contains(s, "not \"no TLSA\"") {
						t.Errorf("bogus reported as missing TLSA: %s", s)
					}
				}
				if h.TLSA.Status != "bogus" {
					t.Errorf("TLSA status %q, want bogus", h.TLSA.Status)
				}
			case "expired":
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
			case "cname":
				if want := "_dane." + sc.zone; h.TLSA.Owner != want || h.TLSA.Name != owner || len(h.TLSA.Records) != 2 {
					t.Errorf("CNAME'd TLSA: name %q owner %q records %v, want name %q owner %q and 2 records", h.TLSA.Name, h.TLSA.Owner, h.TLSA.Records, owner, want)
				}
			case "addrinsecure", "unusable":
				// The verdicts are still reported, for information.
				if a := h.Addresses[0]; len(a.Verdicts) != 2 || a.Matched != 0 {
					t.Errorf("informational verdicts: %+v", a)
				}
				if sc.name == "addrinsecure" && (h.AddrStatus != "insecure" || h.TLSA.Status != "secure") {
					t.Errorf("bed: address %s, TLSA %s; want an insecure address and a secure TLSA RRset", h.AddrStatus, h.TLSA.Status)
				}
			}
			mine := tlsactlVerdict(rep)
			if mine != sc.finger {
				t.Errorf("tlsactl's report means %q, the scenario expects %q: %v", mine, sc.finger, rep.Findings)
			}
			crossCheck(t, &finger, host, port, mine)
			if sc.forced != "" {
				info := matchVerdict(h.Addresses[0])
				if info != sc.forced {
					t.Errorf("tlsactl's informational verdicts mean %q, the scenario expects %q: %+v", info, sc.forced, h.Addresses[0].Verdicts)
				}
				crossCheck(t, &finger, host, port, info, "-f")
			}
		})
	}
}

func leafOnly(c *testbed.Chain) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Leaf.DER}, PrivateKey: c.Leaf.Key}
}

func dotless(name string) string { return strings.TrimSuffix(name, ".") }

// replaceTLSA replaces the TLSA RRset at name with rdata in one update.
func replaceTLSA(t *testing.T, zone, name string, rdata []string) {
	t.Helper()
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.RemoveRRset([]dns.RR{&dns.TLSA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTLSA, Class: dns.ClassINET}}})
	for _, r := range rdata {
		rr, err := dns.NewRR(name + " 60 IN TLSA " + r)
		if err != nil {
			t.Fatal(err)
		}
		m.Insert([]dns.RR{rr})
	}
	key := bed.knot.Key
	m.SetTsig(key.Name, key.Algorithm, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second, TsigSecret: map[string]string{key.Name: key.Secret}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, bed.knot.Addr)
	if err != nil {
		t.Fatalf("replace %s: %v", name, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		t.Fatalf("replace %s: rcode %s", name, dns.RcodeToString[r.Rcode])
	}
}

// tlsactlVerdict reads what tlsactl's report of a single-address host says a
// DANE sender does, in posttls-finger's terms.
func tlsactlVerdict(rep check.Report) testbed.FingerVerdict {
	h := rep.Hosts[0]
	if h.AddrStatus == "bogus" || h.TLSA.Status == "bogus" {
		return testbed.FingerLookupFailed
	}
	if len(h.Addresses) != 1 {
		return testbed.FingerUnknown
	}
	a := h.Addresses[0]
	// RFC 7672 §2.2.2: TLSA is used only with secure address records.
	dane := h.AddrStatus == "secure" && h.TLSA.Status == "secure" && h.TLSA.Present
	switch {
	case a.Error != "" && !a.STARTTLSOffered && dane:
		return testbed.FingerNoSTARTTLS
	case a.Error != "" && !a.STARTTLSOffered:
		return testbed.FingerPlaintext
	case a.Error != "":
		return testbed.FingerUnknown
	case !dane:
		return testbed.FingerNoTLSA
	}
	return matchVerdict(a)
}

// matchVerdict is the verdict of an address's TLSA verdicts, whether or not
// senders use them.
func matchVerdict(a check.AddressReport) testbed.FingerVerdict {
	switch {
	case a.Usable == 0:
		return testbed.FingerNoUsableTLSA
	case a.Matched > 0:
		return testbed.FingerVerified
	}
	return testbed.FingerDANEFailed
}

// crossCheck asks Postfix's own DANE client, posttls-finger, about the same
// host and requires the verdict tlsactl's report implies.
func crossCheck(t *testing.T, mu *sync.Mutex, host string, port uint16, mine testbed.FingerVerdict, extraArgs ...string) {
	t.Helper()
	crossCheckDest(t, mu, testbed.HostDest(dotless(host), int(port)), mine, extraArgs...)
}

// crossCheckDest is crossCheck for a posttls-finger destination (HostDest or
// DomainDest).
func crossCheckDest(t *testing.T, mu *sync.Mutex, dest string, mine testbed.FingerVerdict, extraArgs ...string) {
	t.Helper()
	testbed.RequirePosttlsFinger(t)
	mu.Lock()
	defer mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// dnssec_probe (". NS") has no answer in this bed, whose resolver knows
	// only the test zones: posttls-finger would wait for it (seconds) on
	// every insecure lookup just to log a warning. It changes no verdict.
	args := append([]string{"-o", "dnssec_probe="}, extraArgs...)
	res, err := testbed.DANEFinger(ctx, bed.unbound.Port53IP, dest, args...)
	if err != nil {
		t.Fatalf("posttls-finger: %v", err)
	}
	t.Logf("posttls-finger %v %s: %s (%q); tlsactl: %s", extraArgs, dest, res.Verdict, res.Summary, mine)
	if res.Verdict != mine {
		t.Errorf("tlsactl's report means %q, posttls-finger %v %s says %q:\n%s", mine, extraArgs, dest, res.Verdict, fingerLines(res.Output))
	}
}

// fingerLines keeps the TLS, DANE and DNS lines of verbose posttls-finger
// output, for failure messages.
func fingerLines(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		for _, k := range []string{"TLSA", "DANE", "TLS connection", "verification", "lookup failed", "resorting", "< 250", "warning"} {
			if strings.Contains(l, k) {
				keep = append(keep, l)
				break
			}
		}
	}
	return strings.Join(keep, "\n")
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

// TestLiveInsecureMX: an unsigned domain's MX names a host with good,
// secure TLSA. RFC 7672 §2.2.1: senders MAY still use DANE for it, and
// Postfix does (smtp_tls_dane_insecure_mx_policy = dane): it authenticates
// the host with DANE and logs the connection as "Trusted", not "Verified",
// because the MX RRset that named it is unprotected. tlsactl: the host's
// verdicts stand (OK), the MX RRset gets mx-insecure (WARNING).
func TestLiveInsecureMX(t *testing.T) {
	requireBed(t)
	host := "imx.example.test."
	chain := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{dotless(host)}})
	cert := chain.TLSCertificate()
	srv := testbed.NewSMTPServer(t, testbed.SMTPStartTLS, &cert)
	port := portOf(t, srv.Addr)
	publish(t, "unsigned.test.", "insecuremx.unsigned.test. 60 IN MX 10 "+host)
	publish(t, "example.test.", host+" 60 IN A 127.0.0.1",
		fmt.Sprintf("_%d._tcp.%s 60 IN TLSA %s", port, host, record(t, chain.Leaf, tlsa.DANEEE)),
		fmt.Sprintf("_%d._tcp.%s 60 IN TLSA %s", port, host, record(t, chain.Intermediate, tlsa.DANETA)))
	rep := runCheck(t, port, []string{"insecuremx.unsigned.test"}, nil, 20*time.Second)
	if rep.Status != check.Warning || len(rep.Findings) != 1 || rep.Findings[0].Code != "mx-insecure" {
		t.Fatalf("want only mx-insecure (WARNING): %s %v", rep.Status, rep.Findings)
	}
	if m := rep.Findings[0].Message; !strings.Contains(m, "MAY still use DANE") || strings.Contains(m, "unsigned.test.") {
		t.Errorf("mx-insecure message %q", m)
	}
	if len(rep.Domains) != 1 || rep.Domains[0].MXStatus != "insecure" || len(rep.Hosts) != 1 || rep.Hosts[0].Status != check.OK {
		t.Fatalf("domain %+v, hosts %+v", rep.Domains, rep.Hosts)
	}
	mine := tlsactlVerdict(rep)
	if mine == testbed.FingerVerified && rep.Domains[0].MXStatus != "secure" {
		mine = testbed.FingerDANEInsecureMX // DANE-verified, named by an insecure MX RRset
	}
	if mine != testbed.FingerDANEInsecureMX {
		t.Errorf("tlsactl's report means %q, want %q", mine, testbed.FingerDANEInsecureMX)
	}
	var mu sync.Mutex
	crossCheckDest(t, &mu, testbed.DomainDest("insecuremx.unsigned.test", int(port)), mine)
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
