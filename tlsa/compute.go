package tlsa

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"fmt"
)

// ErrParameter is returned by [Compute] for a usage, selector or matching
// type it cannot produce. (Parsing such values is fine; see [ParseRecord].)
var ErrParameter = fmt.Errorf("unsupported TLSA parameter")

// Compute returns the TLSA record for m with the given usage, selector and
// matching type. Selector 0 needs a certificate: for keys and CSRs it returns
// an error wrapping [ErrNeedsCertificate]. Compute does not check that the
// usage fits the material (a leaf under usage 2 is the caller's choice).
func Compute(m Material, u Usage, s Selector, mt MatchingType) (Record, error) {
	if u > DANEEE {
		return Record{}, fmt.Errorf("%w: usage %d (want 0-3)", ErrParameter, u)
	}
	var content []byte
	switch s {
	case SelectorCert:
		if m.Kind != KindCertificate {
			return Record{}, fmt.Errorf("%w, not a %s: use selector 1 (SPKI) or give the certificate", ErrNeedsCertificate, m.Kind)
		}
		content = m.Certificate.Raw
	case SelectorSPKI:
		content = m.SPKI
	default:
		return Record{}, fmt.Errorf("%w: selector %d (want 0 or 1)", ErrParameter, s)
	}
	d, ok := digest(mt, content)
	if !ok {
		return Record{}, fmt.Errorf("%w: matching type %d (want 0, 1 or 2)", ErrParameter, mt)
	}
	return Record{Usage: u, Selector: s, MatchingType: mt, Data: d}, nil
}

// digest returns content transformed by matching type mt; ok is false for an
// unknown matching type.
func digest(mt MatchingType, content []byte) ([]byte, bool) {
	switch mt {
	case MatchFull:
		return bytes.Clone(content), true
	case MatchSHA256:
		h := sha256.Sum256(content)
		return h[:], true
	case MatchSHA512:
		h := sha512.Sum512(content)
		return h[:], true
	}
	return nil, false
}

// selected returns the content of c that selector s picks; ok is false for an
// unknown selector.
func selected(c *x509.Certificate, s Selector) ([]byte, bool) {
	switch s {
	case SelectorCert:
		return c.Raw, true
	case SelectorSPKI:
		return c.RawSubjectPublicKeyInfo, true
	}
	return nil, false
}
