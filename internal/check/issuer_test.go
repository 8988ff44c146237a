package check

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/tlsa"
)

// leCA is a generated CA certificate and its key.
type leCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var issuerSerial int64 = 100

func issueCert(t *testing.T, tmpl *x509.Certificate, parent *leCA) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issuerSerial++
	tmpl.SerialNumber = big.NewInt(issuerSerial)
	tmpl.NotBefore, tmpl.NotAfter = testNow.Add(-24*time.Hour), testNow.Add(90*24*time.Hour)
	pc, pk := tmpl, crypto.Signer(key)
	if parent != nil {
		pc, pk = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pc, key.Public(), pk)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func newCA(t *testing.T, org, cn string, parent *leCA) *leCA {
	t.Helper()
	c, k := issueCert(t, &x509.Certificate{Subject: pkix.Name{Organization: []string{org}, CommonName: cn},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, parent)
	return &leCA{cert: c, key: k}
}

func leafFrom(t *testing.T, host string, ca *leCA) []*x509.Certificate {
	t.Helper()
	c, _ := issueCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: host}, DNSNames: []string{host}}, ca)
	return []*x509.Certificate{c, ca.cert}
}

func recWith(t *testing.T, c *x509.Certificate, u tlsa.Usage, s tlsa.Selector) dnsx.TLSARecord {
	t.Helper()
	r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: c, SPKI: c.RawSubjectPublicKeyInfo}, u, s, 1)
	if err != nil {
		t.Fatal(err)
	}
	return dnsx.TLSARecord{Usage: uint8(u), Selector: uint8(s), MatchingType: 1, Data: r.Data}
}

// TestIssuerSingleIntermediate: a 2 1 1 pinned to one Let's Encrypt
// intermediate warns (tlsa-single-intermediate); the whole issuer set, a CA
// that does not rotate, or a root key does not.
func TestIssuerSingleIntermediate(t *testing.T) {
	host := "mail.example.nl."
	isrg := newCA(t, "Internet Security Research Group", "ISRG Root X1", nil)
	r10 := newCA(t, "Let's Encrypt", "R10", isrg)
	r11 := newCA(t, "Let's Encrypt", "R11", isrg)
	e5 := newCA(t, "Let's Encrypt", "E5", isrg)
	otherRoot := newCA(t, "Example Trust", "Example Root", nil)
	other := newCA(t, "Example Trust", "Example CA 1", otherRoot)

	le := leafFrom(t, "mail.example.nl", r10)
	fromR11 := leafFrom(t, "mail.example.nl", r11)
	ex := leafFrom(t, "mail.example.nl", other)
	leChainWithRoot := append(append([]*x509.Certificate(nil), le...), isrg.cert)

	tests := []struct {
		name string
		obs  HostObservation
		warn bool
		want Severity
	}{
		{"3 1 1 + 2 1 1 of R10 only", hostObs(host, le, dnsx.Secure, rec(t, le[0], 3), rec(t, r10.cert, 2)), true, Warning},
		{"2 1 1 and 2 0 1 of R10", hostObs(host, le, dnsx.Secure, rec(t, le[0], 3), recWith(t, r10.cert, 2, 1), recWith(t, r10.cert, 2, 0)), true, Warning},
		{"2 1 1 of R10 alone", hostObs(host, le, dnsx.Secure, rec(t, r10.cert, 2), rec(t, r10.cert, 2)), true, Warning},
		// The issuer set: the spare intermediates do not count as a partial match.
		{"issuer set R10 R11 E5", hostObs(host, le, dnsx.Secure, rec(t, le[0], 3), rec(t, r10.cert, 2), rec(t, r11.cert, 2), rec(t, e5.cert, 2)), false, OK},
		{"root key ISRG X1 (not served)", hostObs(host, le, dnsx.Secure, rec(t, le[0], 3), rec(t, isrg.cert, 2)), false, Warning}, // tlsa-partial-match
		{"root served in the chain", hostObs(host, leChainWithRoot, dnsx.Secure, rec(t, le[0], 3), rec(t, isrg.cert, 2)), false, OK},
		{"CA that does not rotate", hostObs(host, ex, dnsx.Secure, rec(t, ex[0], 3), rec(t, other.cert, 2)), false, OK},
		{"3 1 1 only", hostObs(host, le, dnsx.Secure, rec(t, le[0], 3)), false, Warning},
		// What the warning is about: the renewal came from R11.
		{"rotated to R11: breaks", hostObs(host, fromR11, dnsx.Secure, rec(t, le[0], 3), rec(t, r10.cert, 2)), false, Critical},
		{"rotated to R11 with the issuer set", hostObs(host, fromR11, dnsx.Secure, rec(t, fromR11[0], 3), rec(t, r10.cert, 2), rec(t, r11.cert, 2)), false, OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := Evaluate(nil, []HostObservation{tc.obs}, Policy{WarnDays: 14, Now: testNow})
			var got *Finding
			for i, f := range rep.Findings {
				if f.Code == "tlsa-single-intermediate" {
					got = &rep.Findings[i]
				}
			}
			if (got != nil) != tc.warn {
				t.Fatalf("tlsa-single-intermediate present=%v, want %v; findings %+v", got != nil, tc.warn, rep.Findings)
			}
			if rep.Status != tc.want {
				t.Errorf("status %s, want %s; findings %+v", rep.Status, tc.want, rep.Findings)
			}
			if got != nil {
				if got.Severity != Warning || got.Host != host {
					t.Errorf("finding %+v", *got)
				}
				for _, w := range []string{"R10", "Let's Encrypt", "issuer set", "2 1 1"} {
					if !strings.Contains(got.Message, w) {
						t.Errorf("message lacks %q: %s", w, got.Message)
					}
				}
			}
		})
	}
}
