package tlsa

import (
	"crypto/x509"
	"strings"
)

// oidCommonName is the X.520 commonName attribute type, 2.5.4.3.
var oidCommonName = []int{2, 5, 4, 3}

// nameMatches checks the leaf against each reference identifier the way
// OpenSSL's X509_check_host does with the flags Postfix sets for DANE
// (X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS): the DNS names of the
// subjectAltName, or, only when there are none, every subject commonName
// (RFC 6125 §6.4.4, RFC 7672 §3.2.3). It returns the first reference
// identifier that matched, without its trailing dot.
func nameMatches(leaf *x509.Certificate, names []string) (string, bool) {
	ids := leaf.DNSNames
	if len(ids) == 0 {
		ids = commonNames(leaf)
	}
	for _, n := range names {
		n = strings.TrimSuffix(n, ".")
		if n == "" {
			continue
		}
		for _, id := range ids {
			if equalWildcard(id, n) {
				return n, true
			}
		}
	}
	return "", false
}

// commonNames returns every commonName value of the subject, in order (a
// subject may carry several; OpenSSL checks each).
func commonNames(c *x509.Certificate) []string {
	var out []string
	for _, atv := range c.Subject.Names {
		if atv.Type.Equal(oidCommonName) {
			if s, ok := atv.Value.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// equalWildcard is OpenSSL's equal_wildcard for a presented identifier
// (pattern) and a reference name (subject): a wildcard counts only when it is
// the whole left-most label of a name with at least two more labels, matches
// exactly one label of at least one character, and the label is not partial
// ("f*.example.com" is taken literally, as with NO_PARTIAL_WILDCARDS).
// Anything else compares as ASCII case-insensitive bytes.
func equalWildcard(pattern, subject string) bool {
	star := -1
	if !(len(subject) > 1 && subject[0] == '.') {
		star = validStar(pattern)
	}
	if star < 0 {
		return equalNoCase(pattern, subject)
	}
	// With NO_PARTIAL_WILDCARDS the star is the whole first label: the
	// prefix is empty and the suffix starts with the dot.
	suffix := pattern[star+1:]
	if len(subject) < len(suffix) || !equalNoCase(subject[len(subject)-len(suffix):], suffix) {
		return false
	}
	label := subject[:len(subject)-len(suffix)]
	if label == "" {
		return false // the wildcard must match at least one character
	}
	if label == "*" {
		return true // a wildcard matches a literal "*" (OpenSSL does so)
	}
	for i := 0; i < len(label); i++ {
		if !isLDH(label[i]) {
			return false // also rejects '.': one label only
		}
	}
	return true
}

// validStar is OpenSSL's valid_star with X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS:
// the index of the only '*' when it makes up the whole first, non-IDNA label
// of a name with at least two dots after it and well-formed labels; else -1.
func validStar(p string) int {
	const (
		labelStart  = 1 << 0
		labelIDNA   = 1 << 1
		labelHyphen = 1 << 2
	)
	star := -1
	state := labelStart
	dots := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '*':
			atStart := state&labelStart != 0
			atEnd := i == len(p)-1 || p[i+1] == '.'
			if star >= 0 || state&labelIDNA != 0 || dots > 0 {
				return -1
			}
			if !atStart || !atEnd {
				return -1
			}
			star = i
			state &^= labelStart
		case isAlnum(c):
			if state&labelStart != 0 && len(p)-i >= 4 && strings.EqualFold(p[i:i+4], "xn--") {
				state |= labelIDNA
			}
			state &^= labelHyphen | labelStart
		case c == '.':
			if state&(labelHyphen|labelStart) != 0 {
				return -1
			}
			state = labelStart
			dots++
		case c == '-':
			if state&labelStart != 0 {
				return -1
			}
			state |= labelHyphen
		default:
			return -1
		}
	}
	if state&(labelStart|labelHyphen) != 0 || dots < 2 {
		return -1
	}
	return star
}

// equalNoCase compares ASCII case-insensitively; a NUL in the pattern never
// matches (OpenSSL's equal_nocase).
func equalNoCase(pattern, subject string) bool {
	if len(pattern) != len(subject) {
		return false
	}
	for i := 0; i < len(pattern); i++ {
		l, r := pattern[i], subject[i]
		if l == 0 {
			return false
		}
		if lower(l) != lower(r) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c - 'A' + 'a'
	}
	return c
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isLDH(c byte) bool { return isAlnum(c) || c == '-' }
