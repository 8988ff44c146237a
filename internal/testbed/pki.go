package testbed

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"testing"
	"time"
)

// KeyType selects the key algorithm of generated certificates.
type KeyType int

const (
	ECDSAP256 KeyType = iota // default
	RSA2048
)

// Cert is a generated certificate with its key.
type Cert struct {
	Cert    *x509.Certificate
	DER     []byte
	PEM     []byte // the certificate alone
	Key     crypto.Signer
	KeyPEM  []byte // PKCS#8
	SPKIDER []byte // SubjectPublicKeyInfo, what TLSA selector 1 hashes
}

// Chain is root CA -> intermediate CA -> leaf, all generated in memory.
// Nothing is written to disk unless the caller does; never commit the keys.
type Chain struct {
	Root, Intermediate, Leaf *Cert
}

// FullChainPEM returns leaf then intermediate (what a server sends; the root
// is left out), the order smtpd_tls_chain_files and tls.X509KeyPair expect.
func (c *Chain) FullChainPEM() []byte {
	out := append([]byte{}, c.Leaf.PEM...)
	return append(out, c.Intermediate.PEM...)
}

// TLSCertificate returns the leaf key and chain (leaf, intermediate) for a
// tls.Config.
func (c *Chain) TLSCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{c.Leaf.DER, c.Intermediate.DER},
		PrivateKey:  c.Leaf.Key,
		Leaf:        c.Leaf.Cert,
	}
}

// RootPool returns a pool holding only the root CA.
func (c *Chain) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Root.Cert)
	return p
}

// ChainOptions configures NewChain. The zero value gives an ECDSA P-256 leaf
// for "mail.example.test" valid from an hour ago for 90 days.
type ChainOptions struct {
	// DNSNames are the leaf's SANs (IP addresses are put into IP SANs).
	DNSNames []string
	KeyType  KeyType // leaf key; the CAs always use ECDSA P-256
	// NotBefore/NotAfter of the leaf; zero means now-1h / now+90d. Put both
	// in the past for an expired leaf.
	NotBefore, NotAfter time.Time
	// Reuse, if set, issues the new leaf with this chain's CAs (and key, if
	// ReuseKey), e.g. for a renewal that keeps the intermediate.
	Reuse    *Chain
	ReuseKey bool
	// Root and Intermediate are the CAs' validity windows (not with
	// Reuse); a zero bound means now-24h / now+10y (root), now+5y
	// (intermediate).
	Root, Intermediate Validity
}

// window returns v's bounds, a zero bound replaced by now+before/now+after.
func window(now time.Time, v Validity, before, after time.Duration) (time.Time, time.Time) {
	nb, na := v.NotBefore, v.NotAfter
	if nb.IsZero() {
		nb = now.Add(before)
	}
	if na.IsZero() {
		na = now.Add(after)
	}
	return nb, na
}

// NewChain generates a root CA, an intermediate CA and a leaf.
func NewChain(opts ChainOptions) (*Chain, error) {
	now := time.Now()
	c := &Chain{}
	if opts.Reuse != nil {
		c.Root, c.Intermediate = opts.Reuse.Root, opts.Reuse.Intermediate
	} else {
		rootKey, err := newKey(ECDSAP256)
		if err != nil {
			return nil, err
		}
		nb, na := window(now, opts.Root, -24*time.Hour, 10*365*24*time.Hour)
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
		nb, na = window(now, opts.Intermediate, -24*time.Hour, 5*365*24*time.Hour)
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
	}
	var leafKey crypto.Signer
	if opts.ReuseKey && opts.Reuse != nil {
		leafKey = opts.Reuse.Leaf.Key
	} else {
		var err error
		if leafKey, err = newKey(opts.KeyType); err != nil {
			return nil, err
		}
	}
	names := opts.DNSNames
	if len(names) == 0 {
		names = []string{"mail.example.test"}
	}
	nb, na := window(now, Validity{NotBefore: opts.NotBefore, NotAfter: opts.NotAfter}, -time.Hour, 90*24*time.Hour)
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0]},
		NotBefore:   nb,
		NotAfter:    na,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if _, ok := leafKey.(*rsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	var err error
	c.Leaf, err = issue(tmpl, c.Intermediate, leafKey)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func newKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return nil, fmt.Errorf("testbed: unknown key type %d", t)
}

// issue signs tmpl with parent (self-signed if parent is nil).
func issue(tmpl *x509.Certificate, parent *Cert, key crypto.Signer) (*Cert, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	parentCert, signer := tmpl, key
	if parent != nil {
		parentCert, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Cert{
		Cert:    cert,
		DER:     der,
		PEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:     key,
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		SPKIDER: cert.RawSubjectPublicKeyInfo,
	}, nil
}

// TLSA311 returns the hex SHA-256 digest of the certificate's
// SubjectPublicKeyInfo: the data of a "3 1 1" (DANE-EE SPKI SHA-256) TLSA
// record.
func (c *Cert) TLSA311() string {
	sum := sha256.Sum256(c.SPKIDER)
	return hex.EncodeToString(sum[:])
}

// MustChain is NewChain for tests: it calls tb.Fatal on error.
func MustChain(tb testing.TB, opts ChainOptions) *Chain {
	tb.Helper()
	c, err := NewChain(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
