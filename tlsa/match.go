package tlsa

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Reason says why a TLSA record did or did not match a served chain.
type Reason string

// Reasons reported in a [Verdict]. They are stable strings for JSON output.
const (
	ReasonMatched             Reason = "matched"
	ReasonDigestDiffers       Reason = "digest-differs"          // DANE-EE: the leaf's data differs
	ReasonUsageUnusable       Reason = "usage-unusable-for-smtp" // PKIX-TA/PKIX-EE, RFC 7672 §3.1.3
	ReasonUnknownUsage        Reason = "unknown-usage"           // usage > 3
	ReasonUnknownSelector     Reason = "unknown-selector"        // selector > 1
	ReasonUnknownMatchingType Reason = "unknown-matching-type"   // matching type > 2
	ReasonBadDigestLength     Reason = "bad-digest-length"       // SHA-256/512 data of the wrong length
	ReasonTANotInChain        Reason = "ta-not-in-chain"         // DANE-TA: no served issuer (or key) matches
	ReasonChainNotVerified    Reason = "chain-does-not-verify-to-ta"
	ReasonExpired             Reason = "certificate-expired" // DANE-TA: a certificate below the TA is outside its validity
	ReasonNameMismatch        Reason = "name-mismatch"       // DANE-TA: leaf names do not include the host
	ReasonNoChain             Reason = "no-chain"            // no certificate was served
)

// Verdict is the outcome for one TLSA record.
type Verdict struct {
	Record  Record
	Usable  bool   // false for records RFC 7672 says an SMTP client must ignore
	Matched bool   // true when the record authenticates the chain for the host
	Reason  Reason // ReasonMatched, or why not
	Detail  string // one human sentence about the outcome
	// Depth is the chain index of the certificate the record matched: 0 for
	// the leaf, >0 for an issuer, len(chain) for a trust-anchor key that was
	// not itself served (RFC 7671 §5.2.2), -1 when nothing matched.
	Depth int
}

// MatchOptions are the inputs to [Match] besides the chain and the records.
type MatchOptions struct {
	// Names are the reference identifiers for DANE-TA name checks: the TLSA
	// base domain (the MX host name) first, then optionally the MX host name
	// before CNAME expansion and the next-hop domain (RFC 7672 §3.2.2).
	Names []string
	// Now is the time for validity checks under DANE-TA; zero means time.Now().
	Now time.Time
}

// Result holds one [Verdict] per record, in RRset order.
type Result struct {
	Verdicts []Verdict
}

// Matched reports whether at least one usable record matched: the condition
// under which an SMTP client following RFC 7672 accepts the server.
func (r Result) Matched() bool { return r.MatchedCount() > 0 }

// MatchedCount returns the number of records that matched.
func (r Result) MatchedCount() int {
	n := 0
	for _, v := range r.Verdicts {
		if v.Matched {
			n++
		}
	}
	return n
}

// UsableCount returns the number of records an SMTP client can use.
func (r Result) UsableCount() int {
	n := 0
	for _, v := range r.Verdicts {
		if v.Usable {
			n++
		}
	}
	return n
}

// Match checks the served chain (leaf first, as the server sent it) against
// each record of a TLSA RRset with the SMTP semantics of RFC 7672:
//
//   - DANE-EE(3) matches the leaf only and ignores names and validity dates
//     (RFC 7672 §3.1.1).
//   - DANE-TA(2) matches an issuer certificate served in the chain, or for
//     "2 1 0" a bare trust-anchor public key that signed the top of the chain
//     (RFC 7671 §5.2.2); the chain from the leaf must then verify to it, be
//     within its validity period and carry one of opts.Names (RFC 7672 §3.1.2,
//     §3.2).
//   - PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP (RFC 7672 §3.1.3).
//   - Unknown usages, selectors and matching types, and digests of the wrong
//     length, are unusable, not errors (RFC 7671 §4).
//
// Digests are compared as bytes. Match never fails: problems are verdicts.
func Match(chain []*x509.Certificate, rrset []Record, opts MatchOptions) Result {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	res := Result{Verdicts: make([]Verdict, len(rrset))}
	for i, r := range rrset {
		res.Verdicts[i] = matchOne(chain, r, opts)
	}
	return res
}

func matchOne(chain []*x509.Certificate, r Record, opts MatchOptions) Verdict {
	v := Verdict{Record: r, Depth: -1}
	switch {
	case r.Usage == PKIXTA || r.Usage == PKIXEE:
		v.Reason, v.Detail = ReasonUsageUnusable, fmt.Sprintf("usage %d (%s) is not used for SMTP (RFC 7672 §3.1.3); publish 3 1 1 or 2 1 1", r.Usage, r.Usage)
		return v
	case r.Usage > DANEEE:
		v.Reason, v.Detail = ReasonUnknownUsage, fmt.Sprintf("usage %d is not defined", r.Usage)
		return v
	case r.Selector > SelectorSPKI:
		v.Reason, v.Detail = ReasonUnknownSelector, fmt.Sprintf("selector %d is not defined", r.Selector)
		return v
	case r.MatchingType > MatchSHA512:
		v.Reason, v.Detail = ReasonUnknownMatchingType, fmt.Sprintf("matching type %d is not defined", r.MatchingType)
		return v
	}
	if n := r.MatchingType.digestLen(); n != 0 && len(r.Data) != n {
		v.Reason, v.Detail = ReasonBadDigestLength, fmt.Sprintf("%s data must be %d octets, record has %d", r.MatchingType, n, len(r.Data))
		return v
	}
	v.Usable = true
	if len(chain) == 0 {
		v.Reason, v.Detail = ReasonNoChain, "the server sent no certificate"
		return v
	}
	if r.Usage == DANEEE {
		return matchEE(chain[0], r, v)
	}
	return matchTA(chain, r, opts, v)
}

func certMatches(c *x509.Certificate, r Record) ([]byte, bool) {
	content, _ := selected(c, r.Selector)
	d, _ := digest(r.MatchingType, content)
	return d, bytes.Equal(d, r.Data)
}

func matchEE(leaf *x509.Certificate, r Record, v Verdict) Verdict {
	d, ok := certMatches(leaf, r)
	if !ok {
		v.Reason = ReasonDigestDiffers
		v.Detail = fmt.Sprintf("the served leaf (%s) has %s %s, the record has %s",
			subject(leaf), what(r), short(d), short(r.Data))
		return v
	}
	v.Matched, v.Reason, v.Depth = true, ReasonMatched, 0
	v.Detail = fmt.Sprintf("leaf %s matches; names and expiry are not checked for DANE-EE (RFC 7672 §3.1.1)", selName(r.Selector))
	return v
}

func matchTA(chain []*x509.Certificate, r Record, opts MatchOptions, v Verdict) Verdict {
	leaf := chain[0]
	var ta *x509.Certificate
	depth := -1
	for i := 1; i < len(chain); i++ {
		if _, ok := certMatches(chain[i], r); ok {
			ta, depth = chain[i], i
			break
		}
	}
	var verr error
	switch {
	case ta != nil:
		verr = verifyTo(chain, ta, opts.Now)
	case r.Selector == SelectorSPKI && r.MatchingType == MatchFull:
		// RFC 7671 §5.2.2: a "2 1 0" record carries the TA key itself, which
		// the server need not send. Find the served certificate it signed.
		d, err := verifyToBareKey(chain, r.Data, opts.Now)
		if d < 0 {
			v.Reason, v.Detail = ReasonTANotInChain, "no served certificate is signed by the trust-anchor key in the record"
			return v
		}
		depth, verr = len(chain), err
	default:
		v.Reason = ReasonTANotInChain
		v.Detail = fmt.Sprintf("no issuer certificate in the served chain (%d certificate(s)) has %s %s; the server must send the CA certificate the 2 x x record names", len(chain), what(r), short(r.Data))
		return v
	}
	v.Depth = depth
	if verr != nil {
		var inv x509.CertificateInvalidError
		if errors.As(verr, &inv) && inv.Reason == x509.Expired {
			v.Reason = ReasonExpired
		} else {
			v.Reason = ReasonChainNotVerified
		}
		v.Detail = fmt.Sprintf("trust anchor found at depth %d, but the chain does not verify to it: %v", depth, verr)
		return v
	}
	name, ok := nameMatches(leaf, opts.Names)
	if !ok {
		v.Reason = ReasonNameMismatch
		if len(opts.Names) == 0 {
			v.Detail = "no host name was given to check the leaf against"
		} else {
			v.Detail = fmt.Sprintf("the leaf's names %s do not include %s", leafNames(leaf), strings.Join(opts.Names, " or "))
		}
		return v
	}
	v.Detail = fmt.Sprintf("trust anchor at depth %d (%s), chain verifies, leaf name %s", depth, taName(chain, depth), name)
	v.Matched, v.Reason = true, ReasonMatched
	return v
}

// verifyTo checks that the leaf chains to ta, using the other served
// certificates as intermediates, at time now. Name checks are separate.
func verifyTo(chain []*x509.Certificate, ta *x509.Certificate, now time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(ta)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		if c != ta {
			inter.AddCert(c)
		}
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

// verifyToBareKey finds the served certificate signed by the SPKI in keyDER
// and verifies the leaf up to it. It returns the index of that certificate,
// or -1 when the key signed none.
func verifyToBareKey(chain []*x509.Certificate, keyDER []byte, now time.Time) (int, error) {
	pub, err := x509.ParsePKIXPublicKey(keyDER)
	if err != nil {
		return -1, err
	}
	anchor := &x509.Certificate{PublicKey: pub}
	for i := len(chain) - 1; i >= 0; i-- {
		c := chain[i]
		if anchor.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) != nil {
			continue
		}
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return i, x509.CertificateInvalidError{Cert: c, Reason: x509.Expired}
		}
		if i == 0 {
			return 0, nil
		}
		return i, verifyTo(chain, c, now)
	}
	return -1, nil
}

// nameMatches checks the leaf against each reference identifier with RFC 6125
// rules (wildcards in the left-most label only), falling back to the subject
// CN when the certificate has no DNS names (RFC 7672 §3.2.3).
func nameMatches(leaf *x509.Certificate, names []string) (string, bool) {
	for _, n := range names {
		n = strings.TrimSuffix(n, ".")
		if n == "" {
			continue
		}
		if len(leaf.DNSNames) == 0 {
			if strings.EqualFold(leaf.Subject.CommonName, n) {
				return n, true
			}
			continue
		}
		if leaf.VerifyHostname(n) == nil {
			return n, true
		}
	}
	return "", false
}

func leafNames(c *x509.Certificate) string {
	if len(c.DNSNames) == 0 {
		return "[CN=" + c.Subject.CommonName + "]"
	}
	return "[" + strings.Join(c.DNSNames, " ") + "]"
}

func subject(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return "CN=" + c.Subject.CommonName
	}
	return c.Subject.String()
}

func taName(chain []*x509.Certificate, depth int) string {
	if depth < len(chain) {
		return subject(chain[depth])
	}
	return "key not served"
}

func selName(s Selector) string {
	if s == SelectorCert {
		return "certificate"
	}
	return "SPKI"
}

// what describes the data a record carries, e.g. "SHA2-256(SPKI)".
func what(r Record) string {
	if r.MatchingType == MatchFull {
		return selName(r.Selector)
	}
	return r.MatchingType.String() + "(" + selName(r.Selector) + ")"
}

// short abbreviates long hex for messages.
func short(b []byte) string {
	h := hex.EncodeToString(b)
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}
