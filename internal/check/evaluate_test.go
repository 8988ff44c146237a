package check

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/tlsa"
)

var testNow = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

// mkChain builds CA -> leaf for host, the leaf valid until notAfter.
func mkChain(t *testing.T, host string, notAfter time.Time) []*x509.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA"}, NotBefore: testNow.Add(-time.Hour),
		NotAfter: testNow.Add(1000 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: testNow.Add(-time.Hour), NotAfter: notAfter}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	return []*x509.Certificate{leaf, ca}
}

func rec(t *testing.T, c *x509.Certificate, u tlsa.Usage) dnsx.TLSARecord {
	r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: c, SPKI: c.RawSubjectPublicKeyInfo}, u, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	return dnsx.TLSARecord{Usage: uint8(r.Usage), Selector: 1, MatchingType: 1, Data: r.Data}
}

func hostObs(host string, chain []*x509.Certificate, status dnsx.Status, recs ...dnsx.TLSARecord) HostObservation {
	a := netip.MustParseAddr("127.0.0.1")
	return HostObservation{
		Host: host, Port: 25,
		Addrs:  &dnsx.AddrsResult{Host: host, Addrs: []netip.Addr{a}, Status: dnsx.Secure},
		TLSA:   &dnsx.TLSAResult{Name: "_25._tcp." + host, BaseDomain: host, Records: recs, Status: status, TTL: 300},
		Probes: []ProbeObservation{{Addr: a, Probe: Probe{Connected: true, STARTTLSOffered: true, Chain: chain, TLSVersion: "TLS 1.3"}}},
	}
}

func TestEvaluateRules(t *testing.T) {
	host := "mail.example.nl."
	good := mkChain(t, "mail.example.nl", testNow.Add(60*24*time.Hour))
	soon := mkChain(t, "mail.example.nl", testNow.Add(5*24*time.Hour))
	other := mkChain(t, "mail.example.nl", testNow.Add(60*24*time.Hour))
	pkix := dnsx.TLSARecord{Usage: 1, Selector: 1, MatchingType: 1, Data: rec(t, good[0], 3).Data}

	tests := []struct {
		name string
		obs  HostObservation
		want Severity
		code string // a finding that must be present ("" for none at all)
	}{
		{"311 and 211 match", hostObs(host, good, dnsx.Secure, rec(t, good[0], 3), rec(t, good[1], 2)), OK, ""},
		{"current+next (RFC 7671 §8.1)", hostObs(host, good, dnsx.Secure, rec(t, good[0], 3), rec(t, other[0], 3)), OK, ""},
		{"stale 311, 211 covers", hostObs(host, good, dnsx.Secure, rec(t, other[0], 3), rec(t, good[1], 2)), Warning, "tlsa-partial-match"},
		{"single record", hostObs(host, good, dnsx.Secure, rec(t, good[0], 3)), Warning, "tlsa-no-rollover"},
		{"none match", hostObs(host, good, dnsx.Secure, rec(t, other[0], 3), rec(t, other[1], 2)), Critical, "tlsa-none-match"},
		// RFC 7672 §2.2: no usable record means mandatory TLS without
		// authentication, not deferral (was CRITICAL).
		{"PKIX only", hostObs(host, good, dnsx.Secure, pkix), Warning, "tlsa-unusable"},
		{"insecure zone", hostObs(host, good, dnsx.Insecure, rec(t, good[0], 3), rec(t, good[1], 2)), Warning, "tlsa-insecure"},
		{"expires soon", hostObs(host, soon, dnsx.Secure, rec(t, soon[0], 3), rec(t, soon[1], 2)), Warning, "cert-expiring"},
		{"name not in SAN", hostObs("mx.example.nl.", good, dnsx.Secure, rec(t, good[0], 3), rec(t, other[0], 3)), Warning, "cert-name"},
		{"leaf only with 211", hostObs(host, good[:1], dnsx.Secure, rec(t, good[0], 3), rec(t, good[1], 2)), Warning, "chain-incomplete"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := Evaluate(nil, []HostObservation{tc.obs}, Policy{WarnDays: 14, Now: testNow})
			if rep.Status != tc.want {
				t.Errorf("status %s, want %s: %v", rep.Status, tc.want, rep.Findings)
			}
			found := tc.code == ""
			for _, f := range rep.Findings {
				if f.Code == tc.code {
					found = true
				}
				if tc.code == "" && f.Severity != OK {
					t.Errorf("unexpected finding %v", f)
				}
			}
			if !found {
				t.Errorf("finding %q missing: %v", tc.code, rep.Findings)
			}
		})
	}
}

func TestEvaluateLookupErrors(t *testing.T) {
	mk := func(kind error, st dnsx.Status) error {
		return &dnsx.LookupError{Name: "_25._tcp.mail.example.nl.", Type: "TLSA", Status: st, Rcode: -1, Kind: kind}
	}
	tests := []struct {
		err  error
		want Severity
		code string
	}{
		{mk(dnsx.ErrBogus, dnsx.Bogus), Critical, "tlsa-bogus"},
		{mk(dnsx.ErrLookupFailed, dnsx.Failed), Unknown, "tlsa-lookup-failed"},
		{mk(dnsx.ErrNoData, dnsx.Secure), Warning, "tlsa-none"},
		{mk(dnsx.ErrNXDomain, dnsx.Secure), Warning, "tlsa-none"},
	}
	for _, tc := range tests {
		obs := hostObs("mail.example.nl.", mkChain(t, "mail.example.nl", testNow.Add(90*24*time.Hour)), dnsx.Secure)
		obs.TLSA, obs.TLSAErr = nil, tc.err
		rep := Evaluate(nil, []HostObservation{obs}, Policy{WarnDays: 14, Now: testNow})
		if rep.Status != tc.want || rep.Findings[0].Code != tc.code {
			t.Errorf("%v: got %s %v, want %s %s", tc.err, rep.Status, rep.Findings, tc.want, tc.code)
		}
	}
}

func TestWorstOrdering(t *testing.T) {
	if Worst(Unknown, Critical) != Critical || Worst(Warning, Unknown) != Unknown || Worst(OK, Warning) != Warning {
		t.Error("severity ordering: CRITICAL > UNKNOWN > WARNING > OK")
	}
}

// findingCodes maps each finding code of rep to its worst severity.
func findingCodes(rep Report) map[string]Severity {
	m := map[string]Severity{}
	for _, f := range rep.Findings {
		m[f.Code] = Worst(m[f.Code], f.Severity)
	}
	return m
}

// TestEvaluateRFC7672Section22 covers the rules of RFC 7672 §2.2 on what a
// sender does with the DNSSEC status of MX, address and TLSA lookups and with
// an RRset of unusable records.
func TestEvaluateRFC7672Section22(t *testing.T) {
	host := "mail.example.nl."
	good := mkChain(t, "mail.example.nl", testNow.Add(60*24*time.Hour))
	other := mkChain(t, "mail.example.nl", testNow.Add(60*24*time.Hour))
	match := []dnsx.TLSARecord{rec(t, good[0], 3), rec(t, good[1], 2)}
	wrong := []dnsx.TLSARecord{rec(t, other[0], 3), rec(t, other[1], 2)}
	pkixEE := dnsx.TLSARecord{Usage: 1, Selector: 1, MatchingType: 1, Data: rec(t, good[0], 3).Data}
	pkixTA := dnsx.TLSARecord{Usage: 0, Selector: 1, MatchingType: 1, Data: rec(t, good[1], 2).Data}
	unknownSel := dnsx.TLSARecord{Usage: 3, Selector: 2, MatchingType: 1, Data: rec(t, good[0], 3).Data}
	unknownMT := dnsx.TLSARecord{Usage: 3, Selector: 1, MatchingType: 7, Data: rec(t, good[0], 3).Data}
	unknownUsage := dnsx.TLSARecord{Usage: 4, Selector: 1, MatchingType: 1, Data: rec(t, good[0], 3).Data}
	shortDigest := dnsx.TLSARecord{Usage: 3, Selector: 1, MatchingType: 1, Data: rec(t, good[0], 3).Data[:31]}

	insecureAddrs := func(o HostObservation) HostObservation {
		o.Addrs = &dnsx.AddrsResult{Host: o.Host, Addrs: o.Addrs.Addrs, Status: dnsx.Insecure,
			A: dnsx.Family{Status: dnsx.Insecure}, AAAA: dnsx.Family{Status: dnsx.Insecure}}
		return o
	}
	noStartTLS := func(o HostObservation) HostObservation {
		o.Probes[0].Probe = Probe{Connected: true}
		o.Probes[0].Err = errors.New("no STARTTLS")
		return o
	}
	tests := []struct {
		name   string
		obs    HostObservation
		want   Severity
		codes  map[string]Severity // findings that must be present, with their severity
		absent []string            // findings that must not be present
		text   []string            // substrings of the findings' messages
	}{
		{
			name: "unusable only: PKIX-EE and PKIX-TA", obs: hostObs(host, good, dnsx.Secure, pkixEE, pkixTA), want: Warning,
			codes: map[string]Severity{"tlsa-unusable": Warning}, absent: []string{"tlsa-none-match", "tlsa-no-rollover"},
			text: []string{"senders then use mandatory TLS without authentication (RFC 7672 §2.2)"},
		},
		{
			name: "unusable only: unknown parameters", obs: hostObs(host, good, dnsx.Secure, unknownSel, unknownMT, unknownUsage), want: Warning,
			codes: map[string]Severity{"tlsa-unusable": Warning}, absent: []string{"tlsa-none-match"},
		},
		{
			// A digest of the wrong length is unusable (RFC 7671 §4), as
			// tlsa.Match says: the RRset is all unusable.
			name: "unusable only: malformed digest", obs: hostObs(host, good, dnsx.Secure, shortDigest), want: Warning,
			codes: map[string]Severity{"tlsa-unusable": Warning}, absent: []string{"tlsa-none-match", "tlsa-no-rollover"},
		},
		{
			name: "malformed digest beside a good record is no rollover scheme", obs: hostObs(host, good, dnsx.Secure, match[0], shortDigest), want: Warning,
			codes: map[string]Severity{"tlsa-no-rollover": Warning}, absent: []string{"tlsa-none-match", "tlsa-unusable"},
		},
		{
			// Mandatory TLS: without STARTTLS senders still defer.
			name: "unusable only, no STARTTLS", obs: noStartTLS(hostObs(host, good, dnsx.Secure, pkixEE)), want: Critical,
			codes: map[string]Severity{"tlsa-unusable": Warning, "starttls-missing": Critical},
		},
		{
			name: "insecure addresses, TLSA matches", obs: insecureAddrs(hostObs(host, good, dnsx.Secure, match...)), want: Warning,
			codes: map[string]Severity{"addr-insecure": Warning},
			text:  []string{"senders do not look up its TLSA RRset at all (RFC 7672 §2.2.2)", "verdicts are informational"},
		},
		{
			// Was CRITICAL (tlsa-none-match): a verdict no sender acts on.
			name: "insecure addresses, TLSA does not match", obs: insecureAddrs(hostObs(host, good, dnsx.Secure, wrong...)), want: Warning,
			codes: map[string]Severity{"addr-insecure": Warning}, absent: []string{"tlsa-none-match", "tlsa-partial-match"},
		},
		{
			name: "insecure addresses, single record", obs: insecureAddrs(hostObs(host, good, dnsx.Secure, wrong[0])), want: Warning,
			codes: map[string]Severity{"addr-insecure": Warning}, absent: []string{"tlsa-none-match", "tlsa-no-rollover"},
		},
		{
			// Was CRITICAL: senders with opportunistic TLS deliver in clear.
			name: "insecure addresses, no STARTTLS", obs: noStartTLS(insecureAddrs(hostObs(host, good, dnsx.Secure, match...))), want: Warning,
			codes: map[string]Severity{"addr-insecure": Warning, "starttls-missing": Warning},
		},
		{
			name: "bogus addresses", obs: func() HostObservation {
				o := hostObs(host, good, dnsx.Secure, match...)
				o.Addrs = &dnsx.AddrsResult{Host: host, Status: dnsx.Bogus, A: dnsx.Family{Status: dnsx.Bogus}}
				o.AddrErr = &dnsx.LookupError{Name: host, Type: "A", Status: dnsx.Bogus, Rcode: 2, Kind: dnsx.ErrBogus}
				o.Probes = nil
				return o
			}(), want: Critical,
			codes: map[string]Severity{"addr-bogus": Critical}, absent: []string{"addr-insecure"},
			text: []string{"defer mail"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := Evaluate(nil, []HostObservation{tc.obs}, Policy{WarnDays: 14, Now: testNow})
			if rep.Status != tc.want {
				t.Errorf("status %s, want %s: %v", rep.Status, tc.want, rep.Findings)
			}
			got := findingCodes(rep)
			for c, sev := range tc.codes {
				if s, ok := got[c]; !ok || s != sev {
					t.Errorf("finding %s %s missing: %v", sev, c, rep.Findings)
				}
			}
			for _, c := range tc.absent {
				if _, ok := got[c]; ok {
					t.Errorf("finding %q must be absent: %v", c, rep.Findings)
				}
			}
			var all strings.Builder
			for _, f := range rep.Findings {
				all.WriteString(f.Message + "\n")
				if strings.Contains(f.Message, "example.nl.") {
					t.Errorf("name with a trailing dot in %q", f.Message)
				}
				if f.Code == "tlsa-unusable" && strings.Contains(f.Message, "defer") {
					t.Errorf("an unusable RRset does not make senders defer: %q", f.Message)
				}
			}
			for _, s := range tc.text {
				if !strings.Contains(all.String(), s) {
					t.Errorf("no finding says %q:\n%s", s, all.String())
				}
			}
			// The TLSA verdicts are still in the report.
			if len(tc.obs.Probes) > 0 && tc.obs.Probes[0].Err == nil {
				if a := rep.Hosts[0].Addresses[0]; len(a.Verdicts) != len(tc.obs.TLSA.Records) {
					t.Errorf("verdicts %+v, want one per record", a.Verdicts)
				}
			}
		})
	}
}

// TestEvaluateMixedFamilies: only the AAAA lookup is insecure; the A address
// is authenticated with DANE as usual, the AAAA address is not.
func TestEvaluateMixedFamilies(t *testing.T) {
	host := "mail.example.nl."
	good := mkChain(t, "mail.example.nl", testNow.Add(60*24*time.Hour))
	other := mkChain(t, "mail.example.nl", testNow.Add(60*24*time.Hour))
	o := hostObs(host, good, dnsx.Secure, rec(t, other[0], 3), rec(t, other[1], 2))
	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	o.Addrs = &dnsx.AddrsResult{Host: host, Addrs: []netip.Addr{v4, v6}, Status: dnsx.Insecure,
		A: dnsx.Family{Status: dnsx.Secure}, AAAA: dnsx.Family{Status: dnsx.Insecure}}
	o.Probes = append(o.Probes, ProbeObservation{Addr: v6, Probe: o.Probes[0].Probe})
	rep := Evaluate(nil, []HostObservation{o}, Policy{WarnDays: 14, Now: testNow})
	if rep.Status != Critical {
		t.Errorf("status %s, want CRITICAL: %v", rep.Status, rep.Findings)
	}
	for _, f := range rep.Findings {
		if f.Code == "tlsa-none-match" && f.Address != "127.0.0.1" {
			t.Errorf("tlsa-none-match for an address whose TLSA nobody looks up: %v", f)
		}
		if f.Code == "addr-insecure" && (!strings.Contains(f.Message, "(AAAA)") || !strings.Contains(f.Message, "for those addresses")) {
			t.Errorf("addr-insecure does not name the AAAA family: %v", f)
		}
	}
	if c := findingCodes(rep); c["tlsa-none-match"] != Critical || c["addr-insecure"] != Warning {
		t.Errorf("findings %v", rep.Findings)
	}
}

// TestEvaluateInsecureMX: senders MAY still use DANE for the hosts an
// insecure MX RRset names (RFC 7672 §2.2.1): their verdicts stand, and the
// MX RRset itself is reported unprotected.
func TestEvaluateInsecureMX(t *testing.T) {
	good := mkChain(t, "mx1.example.nl", testNow.Add(60*24*time.Hour))
	other := mkChain(t, "mx2.example.nl", testNow.Add(60*24*time.Hour))
	mx := func(st dnsx.Status, hosts ...string) DomainObservation {
		r := &dnsx.MXResult{Domain: "example.nl.", Status: st}
		for i, h := range hosts {
			r.Hosts = append(r.Hosts, dnsx.MX{Host: h, Preference: uint16(10 * (i + 1))})
		}
		return DomainObservation{Domain: "example.nl.", MX: r}
	}
	ok := hostObs("mx1.example.nl.", good, dnsx.Secure, rec(t, good[0], 3), rec(t, good[1], 2))
	bad := hostObs("mx2.example.nl.", other, dnsx.Secure, rec(t, good[0], 3), rec(t, good[1], 2))

	rep := Evaluate([]DomainObservation{mx(dnsx.Insecure, "mx1.example.nl.")}, []HostObservation{ok}, Policy{WarnDays: 14, Now: testNow})
	if rep.Status != Warning || findingCodes(rep)["mx-insecure"] != Warning || len(rep.Findings) != 1 {
		t.Errorf("insecure MX, good host: %s %v", rep.Status, rep.Findings)
	}
	if m := rep.Findings[0].Message; !strings.Contains(m, "MAY still use DANE") || !strings.Contains(m, "§2.2.1") || strings.Contains(m, "example.nl.") {
		t.Errorf("mx-insecure message %q", m)
	}
	rep = Evaluate([]DomainObservation{mx(dnsx.Insecure, "mx2.example.nl.")}, []HostObservation{bad}, Policy{WarnDays: 14, Now: testNow})
	if c := findingCodes(rep); rep.Status != Critical || c["tlsa-none-match"] != Critical || c["mx-insecure"] != Warning {
		t.Errorf("insecure MX, failing host: the host's verdict must stand: %s %v", rep.Status, rep.Findings)
	}
}

// TestEvaluateUnprotectedMX: an MX host is DANE-protected only with secure
// address records and a secure RRset with a usable record.
func TestEvaluateUnprotectedMX(t *testing.T) {
	c1 := mkChain(t, "mx1.example.nl", testNow.Add(60*24*time.Hour))
	c2 := mkChain(t, "mx2.example.nl", testNow.Add(60*24*time.Hour))
	c3 := mkChain(t, "mx3.example.nl", testNow.Add(60*24*time.Hour))
	h1 := hostObs("mx1.example.nl.", c1, dnsx.Secure, rec(t, c1[0], 3), rec(t, c1[1], 2))
	h2 := hostObs("mx2.example.nl.", c2, dnsx.Secure, rec(t, c2[0], 3), rec(t, c2[1], 2))
	h2.Addrs.Status = dnsx.Insecure
	h3 := hostObs("mx3.example.nl.", c3, dnsx.Secure, dnsx.TLSARecord{Usage: 1, Selector: 1, MatchingType: 1, Data: rec(t, c3[0], 3).Data})
	d := DomainObservation{Domain: "example.nl.", MX: &dnsx.MXResult{Domain: "example.nl.", Status: dnsx.Secure, Hosts: []dnsx.MX{
		{Host: "mx1.example.nl.", Preference: 10}, {Host: "mx2.example.nl.", Preference: 20}, {Host: "mx3.example.nl.", Preference: 30}}}}
	rep := Evaluate([]DomainObservation{d}, []HostObservation{h1, h2, h3}, Policy{WarnDays: 14, Now: testNow})
	var msg string
	for _, f := range rep.Findings {
		if f.Code == "mx-unprotected" {
			msg = f.Message
		}
	}
	if !strings.Contains(msg, "mx2.example.nl, mx3.example.nl") || strings.Contains(msg, "mx1") {
		t.Errorf("mx-unprotected %q, want mx2 and mx3 named: %v", msg, rep.Findings)
	}
	if rep.Status != Warning {
		t.Errorf("status %s, want WARNING: %v", rep.Status, rep.Findings)
	}
}

// TestEvaluateTANotSent: a DANE-TA record that matches a trust anchor the
// server does not send (here the root's bare key, "2 1 0") is accepted by
// Postfix and OpenSSL, but RFC 7672 §3.1.2 says servers MUST send the TA.
func TestEvaluateTANotSent(t *testing.T) {
	c := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"mail.example.nl"}})
	root, err := tlsa.Compute(tlsa.FromCertificate(c.Root.Cert), tlsa.DANETA, tlsa.SelectorSPKI, tlsa.MatchFull)
	if err != nil {
		t.Fatal(err)
	}
	ee := rec(t, c.Leaf.Cert, 3)
	o := hostObs("mail.example.nl.", []*x509.Certificate{c.Leaf.Cert, c.Intermediate.Cert}, dnsx.Secure, ee,
		dnsx.TLSARecord{Usage: 2, Selector: 1, MatchingType: 0, Data: root.Data})
	rep := Evaluate(nil, []HostObservation{o}, Policy{WarnDays: 14, Now: time.Now()})
	if rep.Status != Warning || len(rep.Findings) != 1 || rep.Findings[0].Code != "chain-incomplete" ||
		!strings.Contains(rep.Findings[0].Message, "2 1 0") || !strings.Contains(rep.Findings[0].Message, "§3.1.2") {
		t.Errorf("want one chain-incomplete WARNING naming 2 1 0 and RFC 7672 §3.1.2: %s %v", rep.Status, rep.Findings)
	}
	if a := rep.Hosts[0].Addresses[0]; a.Matched != 2 {
		t.Errorf("both records must match: %+v", a.Verdicts)
	}
}
