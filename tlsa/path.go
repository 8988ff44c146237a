package tlsa

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"net"
	"strings"
	"time"
)

// maxPathLen bounds chain building; OpenSSL's default verify depth is 100,
// Postfix's smtp_tls_scert_verifydepth 9.
const maxPathLen = 16

// path is the chain as built from the leaf upwards, the way OpenSSL's
// build_chain does: each certificate's issuer is looked up among the served
// certificates (in the order served) and, for a "2 0 0" record, the
// certificate the record carries.
type path struct {
	certs []*x509.Certificate
	index []int  // served index of each certificate, -1 for the one from the record
	stop  string // why the path ends where it does
}

// buildPath builds the path from chain[0]. extra, when not nil, is a
// certificate from DNS that may serve as an issuer (OpenSSL adds "2 0 0"
// certificates to the untrusted ones). Among several issuers of one
// certificate the first valid at now wins, else the one that expires last
// (OpenSSL's find_issuer).
func buildPath(chain []*x509.Certificate, extra *x509.Certificate, now time.Time) path {
	p := path{certs: []*x509.Certificate{chain[0]}, index: []int{0}}
	in := map[string]bool{string(chain[0].Raw): true}
	for {
		cur := p.certs[len(p.certs)-1]
		if selfSigned(cur) {
			p.stop = subject(cur) + " is self-signed"
			return p
		}
		if len(p.certs) >= maxPathLen {
			p.stop = fmt.Sprintf("the chain is longer than %d certificates", maxPathLen)
			return p
		}
		var best *x509.Certificate
		bestIdx := 0
		named := false // some candidate has the right subject but did not sign
		try := func(c *x509.Certificate, i int) bool {
			if in[string(c.Raw)] || !bytes.Equal(c.RawSubject, cur.RawIssuer) {
				return false
			}
			if !issued(c, cur) {
				named = true
				return false
			}
			if r, _ := validAt(c, now); r == "" {
				best, bestIdx = c, i
				return true
			}
			if best == nil || c.NotAfter.After(best.NotAfter) {
				best, bestIdx = c, i
			}
			return false
		}
		found := false
		for i := 1; i < len(chain) && !found; i++ {
			found = try(chain[i], i)
		}
		if !found && extra != nil {
			try(extra, -1)
		}
		if best == nil {
			iss := issuerName(cur)
			if named {
				p.stop = fmt.Sprintf("a certificate named %s is there, but it did not sign %s", iss, subject(cur))
			} else {
				p.stop = fmt.Sprintf("the issuer of %s, %s, is not served", subject(cur), iss)
			}
			return p
		}
		p.certs = append(p.certs, best)
		p.index = append(p.index, bestIdx)
		in[string(best.Raw)] = true
	}
}

// issued reports whether parent signed child: key identifiers agree when
// both are present, and child's signature verifies with parent's key.
// The constraints on parent (CA, key usage) are checked separately.
func issued(parent, child *x509.Certificate) bool {
	if len(child.AuthorityKeyId) > 0 && len(parent.SubjectKeyId) > 0 && !bytes.Equal(child.AuthorityKeyId, parent.SubjectKeyId) {
		return false
	}
	return parent.PublicKey != nil && parent.CheckSignature(child.SignatureAlgorithm, child.RawTBSCertificate, child.Signature) == nil
}

// signedByKey reports whether key (a parsed public key) signed c.
func signedByKey(key any, c *x509.Certificate) bool {
	return key != nil && (&x509.Certificate{PublicKey: key}).CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// selfIssued reports whether subject and issuer names are the same.
func selfIssued(c *x509.Certificate) bool { return bytes.Equal(c.RawSubject, c.RawIssuer) }

// selfSigned is OpenSSL's EXFLAG_SS (and ossl_x509_likely_issued(c, c)):
// self-issued, key identifiers agree, and the signature algorithm fits the
// certificate's own key type. Chain building stops there, and such a trust
// anchor's own dates are checked. The signature itself is not checked (nor
// does OpenSSL).
func selfSigned(c *x509.Certificate) bool {
	if !selfIssued(c) {
		return false
	}
	if len(c.AuthorityKeyId) > 0 && len(c.SubjectKeyId) > 0 && !bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId) {
		return false
	}
	return sigKeyAlgorithm(c.SignatureAlgorithm) == c.PublicKeyAlgorithm
}

// sigKeyAlgorithm is the key type a signature algorithm needs; RSA-PSS
// signatures count as RSA, as in OpenSSL's check_sig_alg_match.
func sigKeyAlgorithm(a x509.SignatureAlgorithm) x509.PublicKeyAlgorithm {
	switch a {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
		x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
		return x509.RSA
	case x509.DSAWithSHA1, x509.DSAWithSHA256:
		return x509.DSA
	case x509.ECDSAWithSHA1, x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512:
		return x509.ECDSA
	case x509.PureEd25519:
		return x509.Ed25519
	}
	return x509.UnknownPublicKeyAlgorithm
}

// validAt checks c's validity period at now with OpenSSL's second-resolution
// comparisons (X509_cmp_time): not yet valid when notBefore is after now,
// expired when notAfter is at or before now. It returns "" when valid, else
// the reason and what happened.
func validAt(c *x509.Certificate, now time.Time) (Reason, string) {
	t := now.Unix()
	if c.NotBefore.Unix() > t {
		return ReasonNotYetValid, "is not valid before " + c.NotBefore.UTC().Format(time.RFC3339)
	}
	if c.NotAfter.Unix() <= t {
		return ReasonExpired, "expired at " + c.NotAfter.UTC().Format(time.RFC3339)
	}
	return "", ""
}

// caKind is OpenSSL's check_ca: 0 when c cannot be a CA; 1 for basic
// constraints CA:TRUE; 3 for a self-signed v1 certificate; 4 for a v3
// certificate without basic constraints whose key usage allows certSign.
// A key usage without certSign always gives 0.
func caKind(c *x509.Certificate) int {
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return 0
	}
	switch {
	case c.BasicConstraintsValid && c.IsCA:
		return 1
	case c.BasicConstraintsValid:
		return 0
	case c.Version < 3 && selfSigned(c):
		return 3
	case c.KeyUsage != 0:
		return 4
	}
	return 0
}

// notCA explains why caKind(c) is 0.
func notCA(c *x509.Certificate) string {
	switch {
	case c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0:
		return "its key usage does not include certificate signing"
	case c.BasicConstraintsValid:
		return "its basic constraints say CA:FALSE"
	}
	return "it has no basic constraints"
}

// checkPath checks the path as OpenSSL's verify_chain does after a DANE-TA
// match (RFC 7671 §5.2.2): certs runs from the leaf up to the trust anchor
// when taIsCert, or up to the highest certificate the trust-anchor key signed
// when it is a bare key. Validity at now of every certificate below the trust
// anchor, and of the trust anchor itself only when it is self-signed (OpenSSL
// checks the dates of a self-signed top certificate, never those of an
// intermediate CA as trust anchor); on every certificate: no unhandled
// critical extension, CA constraints (the top one leniently, as OpenSSL's
// check_extensions), path length, the TLS server purpose, name constraints.
// Signatures were checked when the path was built. Nothing above the trust
// anchor counts.
func checkPath(certs []*x509.Certificate, taIsCert bool, now time.Time) (Reason, string) {
	top := len(certs) - 1
	dated := len(certs)
	if taIsCert && !selfSigned(certs[top]) {
		dated = top
	}
	at := func(i int) string { return fmt.Sprintf("%s (depth %d)", subject(certs[i]), i) }
	for i, c := range certs {
		if len(c.UnhandledCriticalExtensions) > 0 {
			return ReasonChainNotVerified, fmt.Sprintf("%s has a critical extension that is not understood (%s)", at(i), c.UnhandledCriticalExtensions[0])
		}
	}
	plen := 0
	for i := 1; i < len(certs); i++ {
		c := certs[i]
		k := caKind(c)
		if k == 0 {
			return ReasonChainNotVerified, fmt.Sprintf("%s is not a CA certificate: %s", at(i), notCA(c))
		}
		if i < top && k != 1 {
			return ReasonChainNotVerified, fmt.Sprintf("%s is not a CA certificate: it has no basic constraints CA:TRUE", at(i))
		}
		if i > 1 && pathLenSet(c) && plen > c.MaxPathLen {
			return ReasonChainNotVerified, fmt.Sprintf("%s allows %d intermediate CA certificate(s) below it (path length), the chain has %d", at(i), c.MaxPathLen, plen)
		}
		if !selfIssued(c) {
			plen++
		}
	}
	for i, c := range certs {
		if !ekuServer(c) {
			return ReasonChainNotVerified, fmt.Sprintf("%s has an extended key usage without serverAuth", at(i))
		}
	}
	if ku := certs[0].KeyUsage; ku != 0 && ku&(x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment|x509.KeyUsageKeyAgreement) == 0 {
		return ReasonChainNotVerified, "the leaf's key usage allows no TLS server use (digitalSignature, keyEncipherment or keyAgreement)"
	}
	for i := 0; i < dated; i++ {
		if reason, what := validAt(certs[i], now); reason != "" {
			return reason, fmt.Sprintf("%s %s (checked at %s)", at(i), what, now.UTC().Format(time.RFC3339))
		}
	}
	if msg := checkNameConstraints(certs); msg != "" {
		return ReasonChainNotVerified, msg
	}
	return "", ""
}

func pathLenSet(c *x509.Certificate) bool {
	return c.BasicConstraintsValid && (c.MaxPathLen > 0 || c.MaxPathLen == 0 && c.MaxPathLenZero)
}

// ekuServer is OpenSSL's xku_reject for the SSL server purpose: without an
// extended key usage anything goes; with one it must name serverAuth or one
// of the server-gated-crypto usages (anyExtendedKeyUsage does not do).
func ekuServer(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageNetscapeServerGatedCrypto, x509.ExtKeyUsageMicrosoftServerGatedCrypto:
			return true
		}
	}
	return false
}

// checkNameConstraints applies the DNS and IP name constraints of every CA
// certificate in certs to the certificates below it (self-issued
// intermediates excepted), and the DNS constraints also to the leaf's
// commonNames that look like host names when it has no DNS names (OpenSSL's
// check_name_constraints). Email, URI and directory-name constraints are not
// checked. It returns "" when all hold.
func checkNameConstraints(certs []*x509.Certificate) string {
	for i := len(certs) - 1; i >= 0; i-- {
		x := certs[i]
		if i != 0 && selfIssued(x) {
			continue
		}
		dns := x.DNSNames
		if i == 0 && len(dns) == 0 {
			for _, cn := range commonNames(x) {
				if looksLikeHostName(cn) {
					dns = append(dns, cn)
				}
			}
		}
		for j := len(certs) - 1; j > i; j-- {
			ca := certs[j]
			for _, n := range dns {
				if !dnsConstraintsAllow(ca, n) {
					return fmt.Sprintf("the name %s of %s (depth %d) is outside the name constraints of %s (depth %d)", n, subject(x), i, subject(ca), j)
				}
			}
			for _, ip := range x.IPAddresses {
				if !ipConstraintsAllow(ca, ip) {
					return fmt.Sprintf("the address %s of %s (depth %d) is outside the name constraints of %s (depth %d)", ip, subject(x), i, subject(ca), j)
				}
			}
		}
	}
	return ""
}

func dnsConstraintsAllow(ca *x509.Certificate, name string) bool {
	if len(ca.PermittedDNSDomains) > 0 {
		ok := false
		for _, base := range ca.PermittedDNSDomains {
			if ncDNS(name, base) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, base := range ca.ExcludedDNSDomains {
		if ncDNS(name, base) {
			return false
		}
	}
	return true
}

// ncDNS is OpenSSL's nc_dns: an empty base matches everything; otherwise the
// name ends in base, at a label boundary unless base starts with a dot.
func ncDNS(name, base string) bool {
	if base == "" {
		return true
	}
	if len(name) < len(base) {
		return false
	}
	tail := name[len(name)-len(base):]
	if len(name) > len(base) && base[0] != '.' && name[len(name)-len(base)-1] != '.' {
		return false
	}
	return strings.EqualFold(tail, base)
}

func ipConstraintsAllow(ca *x509.Certificate, ip net.IP) bool {
	in := func(n *net.IPNet) bool {
		if len(n.IP) != len(ip) || len(n.Mask) != len(ip) {
			return false
		}
		for k := range ip {
			if ip[k]&n.Mask[k] != n.IP[k]&n.Mask[k] {
				return false
			}
		}
		return true
	}
	if len(ca.PermittedIPRanges) > 0 {
		ok := false
		for _, n := range ca.PermittedIPRanges {
			if in(n) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, n := range ca.ExcludedIPRanges {
		if in(n) {
			return false
		}
	}
	return true
}

// looksLikeHostName is OpenSSL's cn2dnsid test: letters, digits, '_', and
// internal '-' and '.', with at least two labels and no empty label.
func looksLikeHostName(s string) bool {
	dns := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || c == '_' {
			continue
		}
		if i > 0 && i < len(s)-1 {
			if c == '-' {
				continue
			}
			if c == '.' && s[i+1] != '.' && s[i-1] != '-' && s[i+1] != '-' {
				dns = true
				continue
			}
		}
		return false
	}
	return dns
}

// wellFormed reports whether full-value (matching type 0) association data
// is what the selector says: a DER certificate or SubjectPublicKeyInfo.
// OpenSSL's SSL_dane_tlsa_add refuses other data, which makes the record
// unusable. Data equal to a served certificate (or its SPKI) is well formed
// by construction; certificates and keys whose algorithm tlsa cannot parse
// are judged by their ASN.1 structure only.
func wellFormed(chain []*x509.Certificate, r Record) bool {
	for _, c := range chain {
		if content, _ := selected(c, r.Selector); bytes.Equal(content, r.Data) {
			return true
		}
	}
	if r.Selector == SelectorCert {
		if _, err := x509.ParseCertificate(r.Data); err == nil {
			return true
		}
		var cert struct {
			TBS       asn1.RawValue
			Algorithm asn1.RawValue
			Signature asn1.BitString
		}
		rest, err := asn1.Unmarshal(r.Data, &cert)
		return err == nil && len(rest) == 0 && cert.TBS.Tag == asn1.TagSequence && cert.TBS.IsCompound &&
			cert.Algorithm.Tag == asn1.TagSequence && !parsableKeyInCert(cert.TBS.FullBytes)
	}
	var spki struct {
		Algorithm struct {
			Algorithm  asn1.ObjectIdentifier
			Parameters asn1.RawValue `asn1:"optional"`
		}
		PublicKey asn1.BitString
	}
	rest, err := asn1.Unmarshal(r.Data, &spki)
	if err != nil || len(rest) != 0 {
		return false
	}
	if goParsesKey(spki.Algorithm.Algorithm, spki.Algorithm.Parameters) {
		_, err := x509.ParsePKIXPublicKey(r.Data)
		return err == nil
	}
	return true
}

// parsableKeyInCert reports whether a TBSCertificate carries a key of an
// algorithm Go parses: then ParseCertificate's failure was not the key's
// algorithm, and the certificate is malformed.
func parsableKeyInCert(tbs []byte) bool {
	var t struct {
		Version   asn1.RawValue `asn1:"optional,explicit,tag:0"`
		Serial    asn1.RawValue
		Signature asn1.RawValue
		Issuer    asn1.RawValue
		Validity  asn1.RawValue
		Subject   asn1.RawValue
		SPKI      struct {
			Algorithm struct {
				Algorithm  asn1.ObjectIdentifier
				Parameters asn1.RawValue `asn1:"optional"`
			}
			PublicKey asn1.BitString
		}
	}
	if _, err := asn1.Unmarshal(tbs, &t); err != nil {
		return true // not even the structure: malformed
	}
	return goParsesKey(t.SPKI.Algorithm.Algorithm, t.SPKI.Algorithm.Parameters)
}

var (
	oidRSA      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidEC       = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidEd25519  = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidX25519   = asn1.ObjectIdentifier{1, 3, 101, 110}
	oidGoCurves = []asn1.ObjectIdentifier{{1, 3, 132, 0, 33}, {1, 2, 840, 10045, 3, 1, 7}, {1, 3, 132, 0, 34}, {1, 3, 132, 0, 35}}
)

// goParsesKey reports whether x509.ParsePKIXPublicKey handles this key
// algorithm (RSA, ECDSA on the NIST curves Go knows, Ed25519, X25519).
func goParsesKey(alg asn1.ObjectIdentifier, params asn1.RawValue) bool {
	switch {
	case alg.Equal(oidRSA), alg.Equal(oidEd25519), alg.Equal(oidX25519):
		return true
	case alg.Equal(oidEC):
		var curve asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(params.FullBytes, &curve); err != nil {
			return false
		}
		for _, c := range oidGoCurves {
			if curve.Equal(c) {
				return true
			}
		}
	}
	return false
}
