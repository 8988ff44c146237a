package rollover

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// MaybeCached returns the versions a resolver may hold at t: the initial
// version and every requested one, until their successor was served by every
// authoritative server and their TTL ran out after that.
func MaybeCached(vs []Version, t time.Time) []Version {
	var out []Version
	for _, v := range vs {
		if !v.Initial && (v.Requested.IsZero() || v.Requested.After(t)) {
			continue
		}
		if !v.Superseded.IsZero() && !t.Before(v.Superseded.Add(time.Duration(v.TTL)*time.Second)) {
			continue
		}
		out = append(out, v)
	}
	return out
}

// UnsafeError explains why an action would break the safety invariant.
type UnsafeError struct {
	Action   string
	Problems []string
	// SafeAt is when the offending RRset versions leave every cache; zero
	// when waiting will not help (the current RRset itself does not match).
	SafeAt time.Time
}

func (e *UnsafeError) Error() string {
	s := fmt.Sprintf("refused to %s: %s", e.Action, strings.Join(e.Problems, "; "))
	if !e.SafeAt.IsZero() {
		s += fmt.Sprintf("; safe from %s", e.SafeAt.UTC().Format(time.RFC3339))
	}
	return s
}

// Unwrap makes errors.Is(err, ErrUnsafe) true.
func (e *UnsafeError) Unwrap() error { return ErrUnsafe }

// CheckInvariant is the safety invariant: for every RRset version a resolver
// may hold at now and every chain the server may serve, at least one usable
// record matches (RFC 7672). An empty RRset (no TLSA, or an NXDOMAIN a
// resolver cached) is safe: senders then do not use DANE. names are the
// reference identifiers for DANE-TA name checks (the MX host). It returns nil
// or an *UnsafeError.
func CheckInvariant(action string, versions []Version, chains [][]*x509.Certificate, names []string, now time.Time) error {
	e := &UnsafeError{Action: action}
	waitHelps := true
	for _, v := range MaybeCached(versions, now) {
		if len(v.Records) == 0 {
			continue
		}
		recs, err := parseRecords(v.Records)
		if err != nil {
			e.Problems = append(e.Problems, err.Error())
			waitHelps = false
			continue
		}
		for _, c := range chains {
			if tlsa.Match(c, recs, tlsa.MatchOptions{Names: names, Now: now}).Matched() {
				continue
			}
			e.Problems = append(e.Problems, fmt.Sprintf("the RRset %s (%s) matches no record of the chain of %s", abbrev(v.Records), versionAge(v), leafName(c)))
			if v.Superseded.IsZero() {
				waitHelps = false
			} else if end := v.Superseded.Add(time.Duration(v.TTL) * time.Second); end.After(e.SafeAt) {
				e.SafeAt = end
			}
		}
	}
	if len(e.Problems) == 0 {
		return nil
	}
	if !waitHelps {
		e.SafeAt = time.Time{}
	}
	return e
}

func versionAge(v Version) string {
	switch {
	case v.Initial && v.Superseded.IsZero():
		return "published before the rollover, current"
	case v.Initial:
		return fmt.Sprintf("published before the rollover, may be cached until %s", v.Superseded.Add(time.Duration(v.TTL)*time.Second).UTC().Format(time.RFC3339))
	case v.Superseded.IsZero():
		return "current"
	}
	return fmt.Sprintf("may be cached until %s", v.Superseded.Add(time.Duration(v.TTL)*time.Second).UTC().Format(time.RFC3339))
}

func leafName(c []*x509.Certificate) string {
	if len(c) == 0 {
		return "no certificate"
	}
	return fmt.Sprintf("leaf %q (SPKI %s)", c[0].Subject.CommonName, spkiHex(c[0])[:16])
}

func abbrev(recs []string) string {
	var parts []string
	for _, r := range recs {
		if len(r) > 22 {
			r = r[:22] + "…"
		}
		parts = append(parts, r)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func parseRecords(ss []string) ([]tlsa.Record, error) {
	out := make([]tlsa.Record, 0, len(ss))
	for _, s := range ss {
		r, err := tlsa.ParseRecord(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func recordTexts(rs []tlsa.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

// sameSet reports whether a and b hold the same records (bytes), in any order.
func sameSet(a, b []tlsa.Record) bool {
	if len(dedup(a)) != len(dedup(b)) {
		return false
	}
	for _, x := range a {
		if !containsRec(b, x) {
			return false
		}
	}
	return true
}

func containsRec(list []tlsa.Record, r tlsa.Record) bool {
	for _, x := range list {
		if x.Equal(r) {
			return true
		}
	}
	return false
}

func dedup(rs []tlsa.Record) []tlsa.Record {
	var out []tlsa.Record
	for _, r := range rs {
		if !containsRec(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// without returns rs minus every record in drop.
func without(rs []tlsa.Record, drop []tlsa.Record) []tlsa.Record {
	var out []tlsa.Record
	for _, r := range rs {
		if !containsRec(drop, r) && !containsRec(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// with returns rs plus add (no duplicates).
func with(rs []tlsa.Record, add ...tlsa.Record) []tlsa.Record {
	out := dedup(rs)
	for _, r := range add {
		if !containsRec(out, r) {
			out = append(out, r)
		}
	}
	return out
}

func spkiHex(c *x509.Certificate) string {
	r, _ := tlsa.Compute(tlsa.FromCertificate(c), tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	return fmt.Sprintf("%x", r.Data)
}
