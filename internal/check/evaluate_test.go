package check

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/netip"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/dnsx"
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
		{"PKIX only", hostObs(host, good, dnsx.Secure, pkix), Critical, "tlsa-unusable"},
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
