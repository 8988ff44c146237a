package check

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// IssuerSet is what is known of a CA that issues end-entity certificates
// from several intermediates in turn, picked per certificate: a renewal may
// come from any of them, so a DANE-TA record must cover the whole set.
type IssuerSet struct {
	CA string // the CA's name for messages, e.g. "Let's Encrypt"
	// Organization is the subject O of its intermediates; an intermediate
	// belongs to the set when its O is this and its CN is listed in a
	// generation or matches CNPattern.
	Organization string
	Generations  []IssuerGeneration
	// CNPattern matches the CNs of intermediates of the same naming scheme
	// that are not listed yet (a new batch), so they are still recognised.
	CNPattern *regexp.Regexp
	Source    string // where the names come from
}

// IssuerGeneration is one batch of intermediates under a root.
type IssuerGeneration struct {
	Name          string // e.g. "2024 (R10–R14, E5–E9)"
	Roots         []string
	Intermediates []Intermediate
	// Announced marks a generation that is announced but not (yet) the one
	// the CA issues from by default.
	Announced bool
}

// Intermediate is one issuing CA of an issuer set.
type Intermediate struct {
	CN   string
	Root string // subject CN of the root that issued it
	Key  string // "RSA 2048", "ECDSA P-384"
	// SPKISHA256 is the hex SHA-256 of the intermediate's
	// SubjectPublicKeyInfo (the data of its 2 1 1 record), when it could be
	// verified from a certificate file; empty otherwise, and the
	// intermediate is then recognised by subject O and CN only.
	SPKISHA256 string
}

// IssuerSets is the table of CAs known to rotate their intermediates. Only
// names confirmed from the CA's own announcements are listed; no SPKI digest
// is listed because none of these intermediates' certificates is in the
// repository or the Go module cache to verify it from (match by O + CN).
var IssuerSets = []IssuerSet{
	{
		CA:           "Let's Encrypt",
		Organization: "Let's Encrypt",
		Generations: []IssuerGeneration{
			{
				Name:  "2024 hierarchy (R10–R14, E5–E9)",
				Roots: []string{"ISRG Root X1", "ISRG Root X2"},
				Intermediates: append(
					seq("R", 10, 14, "ISRG Root X1", "RSA 2048"),
					// E5–E9 are issued by ISRG Root X2 and cross-signed by X1.
					seq("E", 5, 9, "ISRG Root X2", "ECDSA P-384")...),
			},
			{
				Name:      "Generation Y (YR1–YR3, YE1–YE3)",
				Roots:     []string{"ISRG Root YR", "ISRG Root YE"},
				Announced: true,
				Intermediates: append(
					seq("YR", 1, 3, "ISRG Root YR", "RSA"),
					seq("YE", 1, 3, "ISRG Root YE", "ECDSA P-384")...),
			},
		},
		CNPattern: regexp.MustCompile(`^(R|E|YR|YE)[0-9]+$`),
		Source:    "letsencrypt.org/2024/03/19/new-intermediate-certificates (R10–R14, E5–E9), letsencrypt.org/2025/11/24/gen-y-hierarchy.html and letsencrypt.org/certificates (YR1–YR3, YE1–YE3)",
	},
}

func seq(prefix string, from, to int, root, key string) []Intermediate {
	var out []Intermediate
	for i := from; i <= to; i++ {
		out = append(out, Intermediate{CN: prefix + strconv.Itoa(i), Root: root, Key: key})
	}
	return out
}

// IssuerSetOf returns the issuer set the CA certificate c belongs to, or nil:
// by SPKI digest where the table has one, else by subject O and CN.
func IssuerSetOf(c *x509.Certificate) *IssuerSet {
	if c == nil {
		return nil
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	spki := hex.EncodeToString(sum[:])
	for i := range IssuerSets {
		s := &IssuerSets[i]
		for _, g := range s.Generations {
			for _, in := range g.Intermediates {
				if in.SPKISHA256 != "" && strings.EqualFold(in.SPKISHA256, spki) {
					return s
				}
			}
		}
		if !slices.Contains(c.Subject.Organization, s.Organization) {
			continue
		}
		cn := c.Subject.CommonName
		if s.has(cn) || (s.CNPattern != nil && s.CNPattern.MatchString(cn)) {
			return s
		}
	}
	return nil
}

func (s *IssuerSet) has(cn string) bool {
	for _, g := range s.Generations {
		for _, in := range g.Intermediates {
			if in.CN == cn {
				return true
			}
		}
	}
	return false
}

// Describe names the set for messages: "R10–R14, E5–E9 (ISRG Root X1/X2;
// announced next: YR1–YR3, YE1–YE3 under ISRG Root YR/YE)".
func (s *IssuerSet) Describe() string {
	var cur, next []string
	for _, g := range s.Generations {
		d := ranges(g.Intermediates) + " under " + rootsOf(g.Roots)
		if g.Announced {
			next = append(next, d)
		} else {
			cur = append(cur, d)
		}
	}
	out := strings.Join(cur, "; ")
	if len(next) > 0 {
		out += "; announced next: " + strings.Join(next, "; ")
	}
	return out
}

// ranges compresses runs of CNs with one prefix: R10, R11, … R14 → "R10–R14".
func ranges(ins []Intermediate) string {
	var parts []string
	for i := 0; i < len(ins); {
		j := i
		for j+1 < len(ins) && prefixOf(ins[j+1].CN) == prefixOf(ins[i].CN) {
			j++
		}
		if j > i {
			parts = append(parts, ins[i].CN+"–"+ins[j].CN)
		} else {
			parts = append(parts, ins[i].CN)
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

func prefixOf(cn string) string { return strings.TrimRight(cn, "0123456789") }

// rootsOf: ["ISRG Root X1", "ISRG Root X2"] → "ISRG Root X1/X2".
func rootsOf(roots []string) string {
	if len(roots) == 0 {
		return ""
	}
	out := roots[0]
	base := out[:strings.LastIndex(out, " ")+1]
	for _, r := range roots[1:] {
		if base != "" && strings.HasPrefix(r, base) {
			out += "/" + strings.TrimPrefix(r, base)
		} else {
			out += ", " + r
		}
	}
	return out
}
