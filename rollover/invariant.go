package rollover

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// MaybeCached returns the versions a resolver may hold at t: the initial
// version and every one published (or first seen) by t, until their
// successor was served by every authoritative server and their TTL ran out
// after that.
func MaybeCached(vs []Version, t time.Time) []Version { return MaybeCachedMargin(vs, t, 0) }

// MaybeCachedMargin is MaybeCached with margin added to every TTL.
func MaybeCachedMargin(vs []Version, t time.Time, margin time.Duration) []Version {
	var out []Version
	for _, v := range vs {
		if start := v.Since(); !v.Initial && (start.IsZero() || start.After(t)) {
			continue
		}
		if !v.Superseded.IsZero() && !t.Before(v.CachedUntil(margin)) {
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
	return Invariant{Action: action, Versions: versions, Chains: chains, Names: names, Now: now}.Check()
}

// Invariant is one safety check (see CheckInvariant) with everything it
// reads spelled out.
type Invariant struct {
	Action   string
	Versions []Version // the owner's ledger
	Chains   [][]*x509.Certificate
	Names    []string
	Now      time.Time
	// Margin is added to every TTL, and so to SafeAt.
	Margin time.Duration
	// UnknownUntil, when after Now, is until when an RRset tlsactl never
	// saw may be cached (Ledger.UnknownBefore): set for actions that change
	// the served chain, which nothing unknown may be relied on to match.
	UnknownUntil time.Time
	// Current, when set, is the RRset the provider and every
	// authoritative server serve now. A live version other than it is one
	// a lagging server has still to move past: waiting helps, and Pending
	// is how long to wait before looking again.
	Current []tlsa.Record
	Pending time.Duration
}

// Check returns nil when the action is safe now, else an *UnsafeError.
func (c Invariant) Check() error {
	e := &UnsafeError{Action: c.Action}
	waitHelps := true
	for _, v := range MaybeCachedMargin(c.Versions, c.Now, c.Margin) {
		if len(v.Records) == 0 {
			continue
		}
		recs, err := parseRecords(v.Records)
		if err != nil {
			e.Problems = append(e.Problems, err.Error())
			waitHelps = false
			continue
		}
		for _, ch := range c.Chains {
			if tlsa.Match(ch, recs, tlsa.MatchOptions{Names: c.Names, Now: c.Now}).Matched() {
				continue
			}
			e.Problems = append(e.Problems, fmt.Sprintf("the RRset %s (%s) matches no record of the chain of %s", abbrev(v.Records), versionAge(v, c.Margin), leafName(ch)))
			switch {
			case v.Superseded.IsZero() && c.Current != nil && !sameSet(recs, c.Current):
				if end := c.Now.Add(c.Pending); end.After(e.SafeAt) {
					e.SafeAt = end // a server has still to move past it
				}
			case v.Superseded.IsZero():
				waitHelps = false
			default:
				if end := v.CachedUntil(c.Margin); end.After(e.SafeAt) {
					e.SafeAt = end
				}
			}
		}
	}
	if c.Now.Before(c.UnknownUntil) {
		e.Problems = append(e.Problems, fmt.Sprintf("senders' resolvers may still hold an RRset tlsactl never saw, from before it first looked at the name, until %s (first seen + TTL + margin; a `tlsactl check` timer makes ages known)", c.UnknownUntil.UTC().Format(time.RFC3339)))
		if c.UnknownUntil.After(e.SafeAt) {
			e.SafeAt = c.UnknownUntil
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

func versionAge(v Version, margin time.Duration) string {
	who := ""
	if v.Writer == "" && v.Requested.IsZero() {
		who = "not written by tlsactl, "
	}
	switch {
	case v.Superseded.IsZero():
		return who + "current"
	}
	return fmt.Sprintf("%smay be cached until %s", who, v.CachedUntil(margin).UTC().Format(time.RFC3339))
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
