package rollover

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// ledgerFormat is the newest Ledger.Format this code reads and writes.
const ledgerFormat = 1

// Ledger is what the world held at one TLSA owner name (the name senders
// query, after CNAMEs): every RRset version tlsactl wrote or observed at the
// provider, at each authoritative server and at the validating resolver,
// with first-seen and last-seen times, the TTL as served and who wrote it.
// It is shared by every host and every command that touches the owner.
//
// It is append-only: versions are never removed or reordered; a version's
// LastSeen and TTL only grow, and Confirmed and Superseded are set once.
// A version that reappears after it was superseded (an RRset put back) is a
// new version.
//
// What the ledger cannot know: a change made and undone between two
// observations that no source tlsactl asks has seen, and what senders'
// resolvers cached before tlsactl first looked at the name (see
// UnknownBefore).
type Ledger struct {
	Format   int       `json:"format"`
	Owner    string    `json:"owner"`
	Versions []Version `json:"versions"`
	// MaxSerial is the highest SOA serial an authoritative server served
	// in any observation (HasSerial).
	MaxSerial uint32 `json:"max_serial,omitempty"`
	HasSerial bool   `json:"has_serial,omitempty"`
}

// serialAfter reports a > b in RFC 1982 serial number arithmetic.
func serialAfter(a, b uint32) bool { return a != b && int32(a-b) > 0 }

// floor returns the serial floor for a version first seen now.
func (l *Ledger) floor() (uint32, bool) { return l.MaxSerial, l.HasSerial }

// Drift is a version the ledger learnt from an observation that tlsactl
// did not write: someone else changed the RRset, or it is what the name
// held before tlsactl first looked.
type Drift struct {
	Records []string
	Source  string
	First   bool // the ledger's first version: what was there before tlsactl
}

func (d Drift) String() string {
	if d.First {
		return fmt.Sprintf("first observation of the name: %s at %s", abbrev(d.Records), d.Source)
	}
	return fmt.Sprintf("%s at %s, not written by this rollover (someone else changed the RRset)", abbrev(d.Records), d.Source)
}

// rrKeyText is the canonical text of a record set: sorted, deduplicated.
func rrKeyText(records []string) string {
	rs := slices.Clone(records)
	for i := range rs {
		rs[i] = strings.ToLower(rs[i])
	}
	sort.Strings(rs)
	rs = slices.Compact(rs)
	return strings.Join(rs, "|")
}

func canonicalTexts(rs []tlsa.Record) []string {
	out := recordTexts(dedup(rs))
	sort.Strings(out)
	return out
}

// latest returns the index of the newest version with the key, or -1.
func (l *Ledger) latest(key string) int {
	for i := len(l.Versions) - 1; i >= 0; i-- {
		if rrKeyText(l.Versions[i].Records) == key {
			return i
		}
	}
	return -1
}

// Wrote records that tlsactl is about to send rs to the provider: the intent
// comes first, so a resolver may hold it from now on even if the process
// dies before the provider call returns.
func (l *Ledger) Wrote(rs RRSet, writer string, at time.Time) {
	texts := canonicalTexts(rs.Records)
	if i := l.latest(rrKeyText(texts)); i >= 0 && l.Versions[i].Superseded.IsZero() {
		v := &l.Versions[i]
		v.TTL = max(v.TTL, rs.TTL)
		if v.Writer == "" {
			v.Writer = writer
		}
		if v.Requested.IsZero() {
			v.Requested = at
		}
		return
	}
	fl, ok := l.floor()
	l.Versions = append(l.Versions, Version{Records: texts, TTL: rs.TTL, Requested: at, FirstSeen: at, LastSeen: at,
		Writer: writer, Initial: len(l.Versions) == 0, Floor: fl, HasFloor: ok})
}

// Record adds an observation made at at. Every RRset seen that the ledger
// does not hold as a live version becomes a new version first seen now; when
// every authoritative address answered with one and the same RRset, every
// other live version is superseded now (except one the provider holds: a
// change still on its way). negTTL is the TTL of an empty RRset whose
// sightings carry none. It returns the versions it learnt that tlsactl did
// not write.
func (l *Ledger) Record(obs []Sighting, negTTL uint32, at time.Time) []Drift {
	var drift []Drift
	atProvider := map[string]bool{}
	authKeys := map[string]bool{}
	authOK, authN := true, 0
	// Versions first seen now get the serial floor from before this
	// observation: what they are cannot be older than that.
	fl, hasFl := l.floor()
	allSerials := true
	for _, s := range obs {
		if s.Kind != SourceAuthoritative || s.Err != nil {
			continue
		}
		if !s.SerialOK {
			allSerials = false
			continue
		}
		if !l.HasSerial || serialAfter(s.Serial, l.MaxSerial) {
			l.MaxSerial, l.HasSerial = s.Serial, true
		}
	}
	for _, s := range obs {
		if s.Kind == SourceAuthoritative {
			authN++
			if s.Err != nil || s.CNAME != "" {
				authOK = false
			}
		}
		if s.Err != nil || s.CNAME != "" {
			continue
		}
		texts := canonicalTexts(s.Records)
		key := rrKeyText(texts)
		ttl := s.TTL
		if len(texts) == 0 && ttl == 0 {
			ttl = negTTL
		}
		switch s.Kind {
		case SourceProvider:
			atProvider[key] = true
		case SourceAuthoritative:
			authKeys[key] = true
		}
		i := l.latest(key)
		// A resolver may hold a superseded version until it has left every
		// cache: seeing it there is no news. Anywhere else, or later, it
		// is the RRset put back: a new version.
		expected := i >= 0 && s.Kind == SourceResolver && at.Before(l.Versions[i].CachedUntil(0))
		if i < 0 || (!l.Versions[i].Superseded.IsZero() && !expected) {
			first := len(l.Versions) == 0
			nv := Version{Records: texts, TTL: ttl, FirstSeen: at, LastSeen: at, Initial: first, Floor: fl, HasFloor: hasFl}
			if s.Kind == SourceAuthoritative && s.SerialOK && (!hasFl || serialAfter(fl, s.Serial)) {
				// Seen served with a serial: that is its floor.
				nv.Floor, nv.HasFloor = s.Serial, true
			}
			l.Versions = append(l.Versions, nv)
			i = len(l.Versions) - 1
			drift = append(drift, Drift{Records: texts, Source: s.Source, First: first})
		}
		v := &l.Versions[i]
		if s.Kind != SourceResolver || ttl > v.TTL {
			// A resolver's TTL is what remains of its copy: it can only
			// tell that the TTL was at least that.
			v.TTL = max(v.TTL, ttl)
		}
		if at.After(v.LastSeen) {
			v.LastSeen = at
		}
		if v.FirstSeen.IsZero() {
			v.FirstSeen = at
		}
		if !slices.Contains(v.Seen, s.Source) && len(v.Seen) < 16 {
			v.Seen = append(v.Seen, s.Source)
		}
	}
	// A version seen only at a resolver is one tlsactl never saw served:
	// the resolver's TTL is what remains of its copy, and other resolvers may
	// have fetched it later, so it counts with at least the TTL the servers
	// serve now.
	var authTTL uint32
	for _, s := range obs {
		if s.Kind == SourceAuthoritative && s.Err == nil && s.CNAME == "" {
			authTTL = max(authTTL, s.TTL)
		}
	}
	for i := range l.Versions {
		v := &l.Versions[i]
		if v.FirstSeen.Equal(at) && v.Requested.IsZero() && onlyResolvers(v.Seen) {
			v.TTL = max(v.TTL, authTTL)
		}
	}
	if authN > 0 && authOK && len(authKeys) == 1 {
		var cur string
		for k := range authKeys {
			cur = k
		}
		for i := range l.Versions {
			v := &l.Versions[i]
			key := rrKeyText(v.Records)
			if key == cur {
				if v.Superseded.IsZero() && v.Confirmed.IsZero() {
					v.Confirmed = at
				}
				continue
			}
			if v.Superseded.IsZero() && !atProvider[key] && passed(obs, v, allSerials) {
				v.Superseded = at
			}
		}
	}
	return drift
}

// passed reports whether every authoritative address has moved past v: it
// serves a later serial than v's floor. Without serials (a source that
// did not give one), serving another RRset counts as past.
func passed(obs []Sighting, v *Version, allSerials bool) bool {
	if !v.HasFloor || !allSerials {
		return true
	}
	for _, s := range obs {
		if s.Kind == SourceAuthoritative && !serialAfter(s.Serial, v.Floor) {
			return false // it may still serve v later: a lagging secondary
		}
	}
	return true
}

func onlyResolvers(seen []string) bool {
	for _, s := range seen {
		if !strings.HasPrefix(s, "resolver") {
			return false
		}
	}
	return len(seen) > 0
}

// Current returns the live version every authoritative server served at
// the last observation that agreed (the newest confirmed, unsuperseded
// version), and false when there is none.
func (l *Ledger) Current() (Version, bool) {
	for i := len(l.Versions) - 1; i >= 0; i-- {
		v := l.Versions[i]
		if v.Superseded.IsZero() && !v.Confirmed.IsZero() {
			return v, true
		}
	}
	return Version{}, false
}

// UnknownBefore is until when senders' resolvers may still hold an RRset
// that tlsactl never saw: the one before the ledger's first version, whose
// content and age are unknown. It counts as replaced when first seen and
// cached for that first version's TTL plus the margin. Zero for an empty
// ledger (nothing known at all: callers observe first).
func (l *Ledger) UnknownBefore(margin time.Duration) time.Time {
	if len(l.Versions) == 0 {
		return time.Time{}
	}
	v := l.Versions[0]
	return v.Since().Add(time.Duration(v.TTL)*time.Second + margin)
}

// Copy returns a deep copy.
func (l *Ledger) Copy() *Ledger {
	c := &Ledger{Format: l.Format, Owner: l.Owner, Versions: make([]Version, len(l.Versions)), MaxSerial: l.MaxSerial, HasSerial: l.HasSerial}
	for i, v := range l.Versions {
		v.Records = slices.Clone(v.Records)
		v.Seen = slices.Clone(v.Seen)
		c.Versions[i] = v
	}
	return c
}

// AppendOnly lists how next rewrote what prev held (tests and stores use it
// to prove the ledger only grows).
func AppendOnly(prev, next *Ledger) []string {
	var out []string
	if len(next.Versions) < len(prev.Versions) {
		return append(out, fmt.Sprintf("ledger of %s shrank from %d to %d versions", prev.Owner, len(prev.Versions), len(next.Versions)))
	}
	for i, v := range prev.Versions {
		n := next.Versions[i]
		switch {
		case rrKeyText(n.Records) != rrKeyText(v.Records), n.TTL < v.TTL, !n.FirstSeen.Equal(v.FirstSeen):
			out = append(out, fmt.Sprintf("ledger version %d of %s rewritten", i, prev.Owner))
		case !v.Superseded.IsZero() && !n.Superseded.Equal(v.Superseded):
			out = append(out, fmt.Sprintf("ledger version %d of %s: superseded time changed", i, prev.Owner))
		case !v.Confirmed.IsZero() && !n.Confirmed.Equal(v.Confirmed):
			out = append(out, fmt.Sprintf("ledger version %d of %s: confirmation time changed", i, prev.Owner))
		case n.LastSeen.Before(v.LastSeen):
			out = append(out, fmt.Sprintf("ledger version %d of %s: last seen went back", i, prev.Owner))
		}
	}
	return out
}
