package testbed

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"testing"
	"time"
)

// Validity is a certificate's validity window. A zero bound takes the
// default of the certificate it applies to (see ValidityChainOptions).
type Validity struct {
	NotBefore, NotAfter time.Time
}

// ValidityChainOptions configures NewValidityChain: like ChainOptions, with a
// validity window for each of the three certificates, so a test can build an
// expired (or not yet valid) root, intermediate or leaf. Defaults: root
// now-24h..now+10y, intermediate now-24h..now+5y, leaf now-1h..now+90d.
type ValidityChainOptions struct {
	DNSNames                 []string // leaf SANs; default "mail.example.test"
	Root, Intermediate, Leaf Validity
}

// NewValidityChain generates root CA -> intermediate CA -> leaf with the
// given validity windows. Signatures, CA constraints and key usages are those
// of NewChain; only the dates differ.
func NewValidityChain(opts ValidityChainOptions) (*Chain, error) {
	now := time.Now()
	window := func(v Validity, before, after time.Duration) (time.Time, time.Time) {
		nb, na := v.NotBefore, v.NotAfter
		if nb.IsZero() {
			nb = now.Add(before)
		}
		if na.IsZero() {
			na = now.Add(after)
		}
		return nb, na
	}
	c := &Chain{}
	rootKey, err := newKey(ECDSAP256)
	if err != nil {
		return nil, err
	}
	nb, na := window(opts.Root, -24*time.Hour, 10*365*24*time.Hour)
	c.Root, err = issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "testbed root CA"},
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil, rootKey)
	if err != nil {
		return nil, err
	}
	intKey, err := newKey(ECDSAP256)
	if err != nil {
		return nil, err
	}
	nb, na = window(opts.Intermediate, -24*time.Hour, 5*365*24*time.Hour)
	c.Intermediate, err = issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "testbed intermediate CA"},
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}, c.Root, intKey)
	if err != nil {
		return nil, err
	}
	leafKey, err := newKey(ECDSAP256)
	if err != nil {
		return nil, err
	}
	names := opts.DNSNames
	if len(names) == 0 {
		names = []string{"mail.example.test"}
	}
	nb, na = window(opts.Leaf, -time.Hour, 90*24*time.Hour)
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0]},
		NotBefore:   nb,
		NotAfter:    na,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if c.Leaf, err = issue(tmpl, c.Intermediate, leafKey); err != nil {
		return nil, err
	}
	return c, nil
}

// MustValidityChain is NewValidityChain for tests: it calls tb.Fatal on error.
func MustValidityChain(tb testing.TB, opts ValidityChainOptions) *Chain {
	tb.Helper()
	c, err := NewValidityChain(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
