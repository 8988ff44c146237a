package deploy

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/rollover"
)

// Parsed is validated material.
type Parsed struct {
	Key    crypto.Signer
	KeyPEM []byte              // the key block alone, re-encoded
	Chain  []*x509.Certificate // leaf first, as given
	Leaf   *x509.Certificate   // Chain[0]
}

// Validate checks material before it is deployed: the key parses (PEM,
// unencrypted PKCS#8, PKCS#1 or SEC 1), the chain parses (PEM certificates,
// leaf first, no private key in it), the key belongs to the leaf, every
// certificate is valid at now, each certificate is issued by the next one,
// and the chain verifies from the leaf to its last certificate (which is
// taken as the trust anchor: a root need not be present). A leaf alone is
// accepted only if it is self-signed. Errors wrap ErrInvalidMaterial and say
// on one line what is wrong and how to fix it.
func Validate(m rollover.Material, now time.Time) (*Parsed, error) {
	key, keyBlock, err := parseKey(m.KeyPEM)
	if err != nil {
		return nil, invalid("%v", err)
	}
	chain, err := parseChain(m.ChainPEM)
	if err != nil {
		return nil, invalid("%v", err)
	}
	leaf := chain[0]
	if !publicKeyEqual(key, leaf.PublicKey) {
		for i, c := range chain[1:] {
			if publicKeyEqual(key, c.PublicKey) {
				return nil, invalid("the key belongs to certificate %d of the chain (%s), not to the first: put the leaf certificate first", i+2, describe(c))
			}
		}
		return nil, invalid("the key does not match the leaf certificate (%s): pass the private key issued with this certificate (e.g. privkey.pem of the same renewal)", describe(leaf))
	}
	for i, c := range chain {
		what := "the leaf certificate"
		if i > 0 {
			what = fmt.Sprintf("certificate %d of the chain", i+1)
		}
		if now.After(c.NotAfter) {
			return nil, invalid("%s (%s) expired at %s: renew it / fetch the current chain from the CA", what, describe(c), c.NotAfter.UTC().Format(time.RFC3339))
		}
		if now.Before(c.NotBefore) {
			return nil, invalid("%s (%s) is not valid before %s: deploy it later or check this machine's clock", what, describe(c), c.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	if len(chain) == 1 {
		if leaf.CheckSignatureFrom(leaf) != nil {
			return nil, invalid("the chain holds only the leaf (%s): append the issuing CA certificate(s), e.g. use fullchain.pem instead of cert.pem", describe(leaf))
		}
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return nil, invalid("certificate %d (%s) is not issued by certificate %d (%s): %v: order the chain leaf first, each certificate followed by its issuer, and use the matching intermediate", i+1, describe(chain[i]), i+2, describe(chain[i+1]), err)
		}
	}
	anchor := x509.NewCertPool()
	anchor.AddCert(chain[len(chain)-1])
	inter := x509.NewCertPool()
	if len(chain) > 2 {
		for _, c := range chain[1 : len(chain)-1] {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: anchor, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, invalid("the chain does not verify from the leaf to its last certificate: %v: use the chain the CA issued with this certificate", err)
	}
	return &Parsed{Key: key, KeyPEM: pem.EncodeToMemory(keyBlock), Chain: chain, Leaf: leaf}, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("deploy: %w: %s", ErrInvalidMaterial, fmt.Sprintf(format, args...))
}

func publicKeyEqual(key crypto.Signer, pub crypto.PublicKey) bool {
	k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(pub)
}

// parseKey returns the one private key in pemData.
func parseKey(pemData []byte) (crypto.Signer, *pem.Block, error) {
	var (
		found []*pem.Block
		rest  = pemData
	)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			found = append(found, b)
		}
	}
	switch len(found) {
	case 0:
		return nil, nil, fmt.Errorf("the key is not a PEM private key (no \"-----BEGIN PRIVATE KEY-----\" block): pass the private key file (e.g. privkey.pem)")
	case 1:
	default:
		return nil, nil, fmt.Errorf("the key holds %d private keys: pass only the key of the leaf certificate", len(found))
	}
	b := found[0]
	if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] != "" {
		return nil, nil, fmt.Errorf("the private key is encrypted: decrypt it (openssl pkey -in key.pem -out plain.pem); a mail server cannot ask for a passphrase")
	}
	var (
		k   any
		err error
	)
	switch b.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("the private key (%s) does not parse: %v: pass an unencrypted PKCS#8, PKCS#1 or SEC 1 key in PEM", b.Type, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("the private key is of unsupported type %T: use an RSA, ECDSA or Ed25519 key", k)
	}
	return s, b, nil
}

// parseChain returns the certificates of pemData in order.
func parseChain(pemData []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := pemData
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case b.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certificate %d of the chain does not parse: %v: pass the PEM chain as issued by the CA", len(chain)+1, err)
			}
			chain = append(chain, c)
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			return nil, fmt.Errorf("the chain contains a private key: remove it, the chain file is readable by other users (pass the key separately)")
		default:
			return nil, fmt.Errorf("the chain contains a %q PEM block: keep only CERTIFICATE blocks, leaf first", b.Type)
		}
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("the chain holds no PEM certificate: pass the full chain (e.g. fullchain.pem), leaf first")
	}
	return chain, nil
}
