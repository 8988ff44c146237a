package tlsa

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
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
	ReasonMalformedData       Reason = "malformed-data"          // matching type 0 data that is not a DER certificate or SPKI
	ReasonWeakerDigest        Reason = "weaker-digest-ignored"   // a stronger digest of the same usage and selector is published, RFC 7671 §9
	ReasonTANotInChain        Reason = "ta-not-in-chain"         // DANE-TA: no served issuer (or key) matches
	ReasonChainNotVerified    Reason = "chain-does-not-verify-to-ta"
	ReasonExpired             Reason = "certificate-expired"       // DANE-TA: a certificate below the TA has expired
	ReasonNotYetValid         Reason = "certificate-not-yet-valid" // DANE-TA: a certificate below the TA is not valid yet
	ReasonNameMismatch        Reason = "name-mismatch"             // DANE-TA: leaf names do not include the host
	ReasonNoChain             Reason = "no-chain"                  // no certificate was served
)

// Verdict is the outcome for one TLSA record.
type Verdict struct {
	Record  Record
	Usable  bool   // false for records an SMTP client ignores (RFC 7672 §2.2, §3.1.3; RFC 7671 §4, §9)
	Matched bool   // true when the record authenticates the chain for the host
	Reason  Reason // ReasonMatched, or why not
	Detail  string // one human sentence about the outcome
	// Warning, when not empty, is one sentence about a rule the server
	// breaks although senders may still accept it: a DANE-TA trust anchor
	// that is not in the served chain (RFC 7672 §3.1.2).
	Warning string
	// Depth is the chain index of the certificate the record matched: 0 for
	// the leaf, >0 for a served issuer, len(chain) for a trust anchor that
	// was not itself served but came from the record ("2 0 0" certificate or
	// "2 1 0" key, RFC 7671 §5.2.2), -1 when nothing matched.
	Depth int
}

// MatchOptions are the inputs to [Match] besides the chain and the records.
type MatchOptions struct {
	// Names are the reference identifiers for DANE-TA name checks: the TLSA
	// base domain (the MX host name) first, then optionally the MX host name
	// before CNAME expansion and the next-hop domain (RFC 7672 §3.2.2).
	Names []string
	// Now is the time for validity checks under DANE-TA; zero means
	// time.Now(). It is compared in whole seconds, as OpenSSL does.
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
// each record of a TLSA RRset with the SMTP semantics of RFC 7672, deciding
// as OpenSSL's DANE verifier (which Postfix uses) does:
//
//   - DANE-EE(3) matches the leaf only and ignores names and validity dates
//     (RFC 7672 §3.1.1).
//   - DANE-TA(2) matches an issuer certificate on the chain built from the
//     leaf through the served certificates; or a trust anchor the server does
//     not send when the record carries it whole ("2 0 0" certificate, "2 1 0"
//     key, RFC 7671 §5.2.2), with a [Verdict.Warning] (RFC 7672 §3.1.2 says
//     servers MUST send it). The chain is then checked below the trust
//     anchor only: signatures, the validity of every certificate below it at
//     opts.Now (the trust anchor's own dates and anything above it do not
//     count), CA constraints, path length, the TLS server purpose and DNS/IP
//     name constraints; and the leaf must carry one of opts.Names (RFC 7672
//     §3.2, wildcards as OpenSSL with X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS).
//   - PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP (RFC 7672 §3.1.3).
//   - Unknown usages, selectors and matching types, digests of the wrong
//     length and full values that are not a DER certificate or key are
//     unusable, not errors (RFC 7671 §4; OpenSSL's SSL_dane_tlsa_add).
//
// Digests are compared as bytes. Match never fails: problems are verdicts.
func Match(chain []*x509.Certificate, rrset []Record, opts MatchOptions) Result {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	res := Result{Verdicts: make([]Verdict, len(rrset))}
	m := matcher{chain: chain, opts: opts, strongest: strongestDigests(rrset)}
	for i, r := range rrset {
		res.Verdicts[i] = m.matchOne(r)
	}
	return res
}

// matcher holds what the records of one RRset share.
type matcher struct {
	chain     []*x509.Certificate
	opts      MatchOptions
	strongest map[usageSelector]MatchingType
	served    *path // the path built from the served certificates alone, once
}

// path returns the path from the leaf, built with extra (a "2 0 0"
// certificate) among the issuers when it is not nil.
func (m *matcher) path(extra *x509.Certificate) path {
	if extra != nil {
		return buildPath(m.chain, extra, m.opts.Now)
	}
	if m.served == nil {
		p := buildPath(m.chain, nil, m.opts.Now)
		m.served = &p
	}
	return *m.served
}

// usageSelector keys records by usage and selector.
type usageSelector struct {
	u Usage
	s Selector
}

// strongestDigests returns, per DANE usage and selector, the strongest
// matching type among the RRset's usable digest records. Digest algorithm
// agility (RFC 7671 §9, as OpenSSL's dane_match does it): senders use only
// records of that matching type (and full values) for that usage and
// selector, and ignore weaker digests.
func strongestDigests(rrset []Record) map[usageSelector]MatchingType {
	m := map[usageSelector]MatchingType{}
	for _, r := range rrset {
		if (r.Usage != DANETA && r.Usage != DANEEE) || r.Selector > SelectorSPKI {
			continue
		}
		if n := r.MatchingType.digestLen(); n == 0 || len(r.Data) != n {
			continue
		}
		k := usageSelector{r.Usage, r.Selector}
		if r.MatchingType > m[k] { // SHA2-512 ranks above SHA2-256, as in OpenSSL
			m[k] = r.MatchingType
		}
	}
	return m
}

func (m *matcher) matchOne(r Record) Verdict {
	chain := m.chain
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
	if best := m.strongest[usageSelector{r.Usage, r.Selector}]; r.MatchingType.digestLen() != 0 && best > r.MatchingType {
		v.Reason = ReasonWeakerDigest
		v.Detail = fmt.Sprintf("the RRset also has %d %d %d records: senders use only the strongest digest for a usage and selector (RFC 7671 §9), so they ignore this one", r.Usage, r.Selector, best)
		return v
	}
	if r.MatchingType == MatchFull && !wellFormed(chain, r) {
		v.Reason = ReasonMalformedData
		form := "certificate"
		if r.Selector == SelectorSPKI {
			form = "SubjectPublicKeyInfo"
		}
		v.Detail = fmt.Sprintf("the data (%d octets) is not a DER %s, so senders ignore the record", len(r.Data), form)
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
	return m.matchTA(r, v)
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
		rec, got, where := diffHex(r.Data, d)
		v.Detail = fmt.Sprintf("the served leaf (%s) has %s %s, the record has %s (%s)",
			subject(leaf), what(r), got, rec, where)
		return v
	}
	v.Matched, v.Reason, v.Depth = true, ReasonMatched, 0
	v.Detail = fmt.Sprintf("leaf %s matches; names and expiry are not checked for DANE-EE (RFC 7672 §3.1.1)", selName(r.Selector))
	return v
}

func (m *matcher) matchTA(r Record, v Verdict) Verdict {
	chain, opts := m.chain, m.opts
	// A full-value record carries the trust anchor itself, which the server
	// need not send (RFC 7671 §5.2.2): OpenSSL adds a "2 0 0" certificate to
	// the certificates it builds the chain from, and accepts a chain whose
	// top a "2 1 0" key signed.
	var recCert *x509.Certificate
	var recKey any
	if r.MatchingType == MatchFull {
		if r.Selector == SelectorCert {
			recCert, _ = x509.ParseCertificate(r.Data)
		} else {
			recKey, _ = x509.ParsePKIXPublicKey(r.Data)
		}
	}
	p := m.path(recCert)
	ta := -1
	for d := 1; d < len(p.certs); d++ {
		if _, ok := certMatches(p.certs[d], r); ok {
			ta = d
			break
		}
	}
	bare := false
	if ta < 0 && signedByKey(recKey, p.certs[len(p.certs)-1]) {
		ta, bare = len(p.certs), true
	}
	if ta < 0 {
		return taNotFound(chain, r, p, recCert, recKey, v)
	}
	served := !bare && p.index[ta] >= 0
	var anchor string
	switch {
	case served:
		v.Depth = p.index[ta]
		anchor = fmt.Sprintf("trust anchor %s at depth %d", subject(p.certs[ta]), v.Depth)
	case bare:
		v.Depth = len(chain)
		anchor = fmt.Sprintf("the trust-anchor key in the record (not served) signed %s", subject(p.certs[ta-1]))
	default:
		v.Depth = len(chain)
		anchor = fmt.Sprintf("the trust-anchor certificate in the record (%s, not served) issued %s", subject(p.certs[ta]), subject(p.certs[ta-1]))
	}
	if !served {
		v.Warning = "the server does not send the trust anchor: RFC 7672 §3.1.2 says servers MUST include the TA certificate in the chain"
	}
	certs := p.certs[:ta]
	if !bare {
		certs = p.certs[:ta+1]
	}
	if reason, msg := checkPath(certs, !bare, opts.Now); reason != "" {
		v.Reason = reason
		v.Detail = fmt.Sprintf("%s, but the chain below it does not verify: %s", anchor, msg)
		return v
	}
	leaf := chain[0]
	name, ok := nameMatches(leaf, opts.Names)
	if !ok {
		v.Reason = ReasonNameMismatch
		if len(opts.Names) == 0 {
			v.Detail = "no host name was given to check the leaf against"
		} else {
			v.Detail = fmt.Sprintf("the leaf's names %s do not include %s", leafNames(leaf), strings.Join(dotless(opts.Names), " or "))
		}
		return v
	}
	v.Detail = fmt.Sprintf("%s; the chain below it verifies; leaf name %s", anchor, name)
	v.Matched, v.Reason = true, ReasonMatched
	return v
}

// taNotFound explains why a DANE-TA record named no certificate on the path.
func taNotFound(chain []*x509.Certificate, r Record, p path, recCert *x509.Certificate, recKey any, v Verdict) Verdict {
	top := p.certs[len(p.certs)-1]
	for i := 1; i < len(chain); i++ {
		if _, ok := certMatches(chain[i], r); ok {
			v.Depth = i
			v.Reason = ReasonChainNotVerified
			v.Detail = fmt.Sprintf("the served %s at depth %d matches, but the chain from the leaf does not reach it: %s", subject(chain[i]), i, p.stop)
			return v
		}
	}
	v.Reason = ReasonTANotInChain
	switch {
	case r.Selector == SelectorSPKI && r.MatchingType == MatchFull && recKey == nil:
		v.Detail = "the trust-anchor key in the record is of an algorithm tlsa cannot check signatures with"
	case recKey != nil:
		v.Detail = fmt.Sprintf("the trust-anchor key in the record did not sign %s, the top of the served chain (%s)", subject(top), topIssuer(top))
	case recCert != nil:
		v.Detail = fmt.Sprintf("the trust-anchor certificate in the record (%s) did not issue %s, the top of the served chain (%s)", subject(recCert), subject(top), topIssuer(top))
	case r.Selector == SelectorCert && r.MatchingType == MatchFull:
		v.Detail = "the trust-anchor certificate in the record is of a key algorithm tlsa cannot check signatures with"
	default:
		if _, ok := certMatches(chain[0], r); ok {
			v.Detail = fmt.Sprintf("the record names the leaf (%s); a 2 x x record names a CA certificate, publish the leaf as 3 x x", subject(chain[0]))
			return v
		}
		ds := make([][]byte, len(chain))
		for i, c := range chain {
			ds[i], _ = certMatches(c, r)
		}
		v.Detail = fmt.Sprintf("no issuer certificate in the served chain (%d certificate(s)) has %s %s; the server must send the CA certificate the 2 x x record names",
			len(chain), what(r), distinctHex(r.Data, ds...))
	}
	return v
}

// topIssuer says who issued the top of the chain, for messages.
func topIssuer(c *x509.Certificate) string {
	if selfSigned(c) {
		return "self-signed"
	}
	return "issued by " + issuerName(c)
}

func leafNames(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return "[" + strings.Join(c.DNSNames, " ") + "]"
	}
	cns := commonNames(c)
	if len(cns) == 0 {
		return "(none: no DNS names and no CN)"
	}
	return "[CN=" + strings.Join(cns, " CN=") + "]"
}

// subject names a certificate in messages: its CN, or the whole subject.
func subject(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return "CN=" + c.Subject.CommonName
	}
	if s := c.Subject.String(); s != "" {
		return s
	}
	return "(empty subject)"
}

// issuerName names the issuer of c as [subject] would name that issuer.
func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return "CN=" + c.Issuer.CommonName
	}
	if s := c.Issuer.String(); s != "" {
		return s
	}
	return "(empty subject)"
}

func dotless(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.TrimSuffix(n, ".")
	}
	return out
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

// minHex is the fewest hex digits a shortened value shows.
const minHex = 8

// distinctHex abbreviates rec for a message to the shortest prefix (at least
// minHex hex digits) that tells it from each of others, so that a record and
// a computed value never print the same.
func distinctHex(rec []byte, others ...[]byte) string {
	h := hex.EncodeToString(rec)
	n := minHex
	for _, o := range others {
		if o == nil {
			continue
		}
		if k := commonPrefix(h, hex.EncodeToString(o)) + 1; k > n {
			n = k
		}
	}
	return abbrev(h, n)
}

// diffHex abbreviates the record's data and the computed value to the same
// shortest prefix that tells them apart, and says where they first differ.
func diffHex(rec, got []byte) (string, string, string) {
	a, b := hex.EncodeToString(rec), hex.EncodeToString(got)
	k := commonPrefix(a, b)
	n := max(minHex, k+1)
	where := fmt.Sprintf("first difference at hex digit %d", k+1)
	if len(a) != len(b) {
		where += fmt.Sprintf("; %d octets against %d", len(rec), len(got))
	}
	return abbrev(a, n), abbrev(b, n), where
}

func commonPrefix(a, b string) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

func abbrev(h string, n int) string {
	if len(h) <= n {
		return h
	}
	return h[:n] + "…"
}
