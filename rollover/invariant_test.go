package rollover

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

func TestMaybeCached(t *testing.T) {
	t0 := testBase
	sec := time.Second
	tests := []struct {
		name string
		v    Version
		at   time.Time
		want bool
	}{
		{"initial, current", Version{Initial: true, TTL: 300}, t0, true},
		{"initial, long after, still current", Version{Initial: true, TTL: 300}, t0.AddDate(1, 0, 0), true},
		{"initial, superseded, inside TTL", Version{Initial: true, TTL: 300, Superseded: t0}, t0.Add(299 * sec), true},
		{"initial, superseded, exactly at Superseded+TTL", Version{Initial: true, TTL: 300, Superseded: t0}, t0.Add(300 * sec), false},
		{"initial, superseded, after", Version{Initial: true, TTL: 300, Superseded: t0}, t0.Add(301 * sec), false},
		{"initial, superseded, TTL 0", Version{Initial: true, TTL: 0, Superseded: t0}, t0, false},
		{"requested before", Version{TTL: 60, Requested: t0}, t0.Add(sec), true},
		{"requested at t", Version{TTL: 60, Requested: t0}, t0, true},
		{"requested after t", Version{TTL: 60, Requested: t0.Add(sec)}, t0, false},
		{"never requested, not initial", Version{TTL: 60}, t0, false},
		{"requested, confirmed, not superseded", Version{TTL: 60, Requested: t0, Confirmed: t0.Add(sec)}, t0.AddDate(0, 0, 9), true},
		{"superseded, one second before the end", Version{TTL: 60, Requested: t0, Superseded: t0.Add(10 * sec)}, t0.Add(69 * sec), true},
		{"superseded, exactly at the end", Version{TTL: 60, Requested: t0, Superseded: t0.Add(10 * sec)}, t0.Add(70 * sec), false},
		{"superseded with the negative TTL of an empty RRset", Version{Initial: true, TTL: 900, Superseded: t0}, t0.Add(899 * sec), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MaybeCached([]Version{tt.v}, tt.at)
			if (len(got) == 1) != tt.want {
				t.Errorf("MaybeCached at +%s = %d versions, want cached=%v", tt.at.Sub(t0), len(got), tt.want)
			}
		})
	}

	// Order is kept and every cached version is returned.
	vs := []Version{
		{Initial: true, TTL: 100, Superseded: t0},
		{TTL: 50, Requested: t0.Add(-sec), Confirmed: t0, Superseded: t0.Add(10 * sec)},
		{TTL: 50, Requested: t0.Add(5 * sec), Confirmed: t0.Add(10 * sec)},
	}
	got := MaybeCached(vs, t0.Add(60*sec))
	if len(got) != 2 || !got[0].Initial || got[1].TTL != 50 || !got[1].Requested.Equal(vs[2].Requested) {
		t.Errorf("MaybeCached(+60s) = %+v, want the initial and the current version", got)
	}
}

func TestCheckInvariant(t *testing.T) {
	p := getPKI(t)
	t0 := testBase
	old, renew, mig := p.old.chain, p.renew.chain, p.mig.chain
	ta1, ta2 := ta211(p.ca1.inter), ta211(p.ca2.inter)
	eeOld, eeMig := ee311(p.old.cert), ee311(p.mig.cert)
	pkixEE := tlsa.Record{Usage: tlsa.PKIXEE, Selector: eeOld.Selector, MatchingType: eeOld.MatchingType, Data: eeOld.Data}
	cur := func(rs ...tlsa.Record) Version { return Version{Initial: true, TTL: 300, Records: texts(rs...)} }
	super := func(at time.Time, ttl uint32, rs ...tlsa.Record) Version {
		return Version{Requested: t0.Add(-time.Hour), TTL: ttl, Records: texts(rs...), Superseded: at}
	}
	tests := []struct {
		name     string
		versions []Version
		chains   [][]*x509.Certificate
		names    []string
		now      time.Time
		safe     bool
		safeAt   time.Time // when unsafe; zero: waiting does not help
		problem  string    // a substring of the error
	}{
		{name: "empty RRset is safe whatever is served", versions: []Version{cur()}, chains: [][]*x509.Certificate{mig}, safe: true},
		{name: "empty superseded RRset is safe", versions: []Version{super(t0, 900), {Requested: t0, TTL: 300, Records: texts(eeMig)}}, chains: [][]*x509.Certificate{mig}, safe: true},
		{name: "3 1 1 matches", versions: []Version{cur(eeOld)}, chains: [][]*x509.Certificate{old}, safe: true},
		{name: "2 1 1 covers a new leaf of the same CA", versions: []Version{cur(eeOld, ta1)}, chains: [][]*x509.Certificate{old, renew}, safe: true},
		{name: "no chains at all", versions: []Version{cur(eeOld)}, chains: nil, safe: true},
		{name: "current version unmatched: SafeAt zero", versions: []Version{cur(eeOld, ta1)}, chains: [][]*x509.Certificate{mig},
			problem: "current"},
		{name: "one address of two unmatched", versions: []Version{cur(eeOld)}, chains: [][]*x509.Certificate{old, renew},
			problem: `leaf "renew"`},
		{name: "superseded version still cached: SafeAt = Superseded+TTL",
			versions: []Version{super(t0.Add(-100*time.Second), 300, eeOld, ta1), {Requested: t0.Add(-200 * time.Second), TTL: 60, Records: texts(eeOld, ta1, ta2)}},
			chains:   [][]*x509.Certificate{mig}, safeAt: t0.Add(200 * time.Second), problem: "may be cached until"},
		{name: "superseded version expires exactly at Superseded+TTL",
			versions: []Version{super(t0.Add(-300*time.Second), 300, eeOld, ta1), {Requested: t0.Add(-400 * time.Second), TTL: 60, Records: texts(eeOld, ta1, ta2)}},
			chains:   [][]*x509.Certificate{mig}, safe: true},
		{name: "SafeAt is the latest end of the offending versions",
			versions: []Version{
				{Initial: true, TTL: 600, Records: texts(eeOld), Superseded: t0.Add(-time.Minute)},
				super(t0.Add(-30*time.Second), 120, eeOld, ta1),
				{Requested: t0.Add(-time.Minute), TTL: 60, Records: texts(eeOld, ta1, ta2)},
			},
			chains: [][]*x509.Certificate{mig}, safeAt: t0.Add(9 * time.Minute), problem: "may be cached until"},
		{name: "superseded and current both unmatched: SafeAt zero",
			versions: []Version{super(t0.Add(-30*time.Second), 120, eeOld), {Requested: t0.Add(-time.Minute), TTL: 60, Records: texts(eeOld, ta1)}},
			chains:   [][]*x509.Certificate{mig}, problem: "current"},
		{name: "in-flight version (requested, not confirmed) counts", versions: []Version{cur(eeOld, ta1), {Requested: t0, TTL: 60, Records: texts(eeMig, ta2)}},
			chains: [][]*x509.Certificate{old}, problem: "matches no record"},
		{name: "version requested in the future is ignored", versions: []Version{cur(eeOld), {Requested: t0.Add(time.Hour), TTL: 60, Records: texts(eeMig)}},
			chains: [][]*x509.Certificate{old}, safe: true},
		{name: "PKIX-EE is unusable for SMTP", versions: []Version{cur(pkixEE)}, chains: [][]*x509.Certificate{old}, problem: "matches no record"},
		{name: "2 1 1 with a leaf for another name", versions: []Version{cur(ta1)}, chains: [][]*x509.Certificate{p.other.chain}, problem: "matches no record"},
		{name: "2 1 1 with an expired leaf", versions: []Version{cur(ta1)}, chains: [][]*x509.Certificate{p.expired.chain}, problem: "matches no record"},
		{name: "3 1 1 ignores expiry (RFC 7672 §3.1.1)", versions: []Version{cur(ee311(p.expired.cert))}, chains: [][]*x509.Certificate{p.expired.chain}, safe: true},
		{name: "names are case- and dot-insensitive", versions: []Version{cur(ta1)}, chains: [][]*x509.Certificate{old}, names: []string{"MX.Example.NET."}, safe: true},
		{name: "unparsable record", versions: []Version{{Initial: true, TTL: 60, Records: []string{"3 1 1 zz"}}}, chains: [][]*x509.Certificate{old}, problem: "TLSA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			names := tt.names
			if names == nil {
				names = []string{testHost + "."}
			}
			now := tt.now
			if now.IsZero() {
				now = t0
			}
			err := CheckInvariant("act", tt.versions, tt.chains, names, now)
			if tt.safe {
				if err != nil {
					t.Fatalf("CheckInvariant = %v, want safe", err)
				}
				return
			}
			var ue *UnsafeError
			if !errors.As(err, &ue) || !errors.Is(err, ErrUnsafe) {
				t.Fatalf("CheckInvariant = %v, want an *UnsafeError wrapping ErrUnsafe", err)
			}
			if !ue.SafeAt.Equal(tt.safeAt) {
				t.Errorf("SafeAt = %v, want %v", ue.SafeAt, tt.safeAt)
			}
			if !strings.Contains(err.Error(), tt.problem) || !strings.HasPrefix(err.Error(), "refused to act: ") {
				t.Errorf("error %q does not say %q", err, tt.problem)
			}
			if !tt.safeAt.IsZero() {
				if !strings.Contains(err.Error(), "safe from "+tt.safeAt.UTC().Format(time.RFC3339)) {
					t.Errorf("error %q does not say when it is safe", err)
				}
				// At SafeAt the offending versions are gone.
				if err := CheckInvariant("act", tt.versions, tt.chains, names, ue.SafeAt); err != nil {
					t.Errorf("at SafeAt: %v", err)
				}
				if err := CheckInvariant("act", tt.versions, tt.chains, names, ue.SafeAt.Add(-time.Nanosecond)); err == nil {
					t.Errorf("just before SafeAt: safe, want unsafe")
				}
			}
		})
	}
}

func TestWaitUntil(t *testing.T) {
	t0 := testBase
	st := &State{TTL: 300, NegTTL: 1800, Margin: Duration(time.Minute), Versions: []Version{
		{Initial: true, TTL: 3600, Records: []string{"3 1 1 00"}, Superseded: t0},
		{Requested: t0.Add(-time.Minute), TTL: 300, Confirmed: t0},
	}}
	if got, want := WaitUntil(st), t0.Add(time.Hour+time.Minute); !got.Equal(want) {
		t.Errorf("WaitUntil (old TTL larger) = %v, want %v", got, want)
	}
	// The negative TTL counts only where the name had no TLSA.
	st.Versions[0] = Version{Initial: true, TTL: 1800, Superseded: t0}
	st.Versions[1].TTL = 300
	if got, want := WaitUntil(st), t0.Add(30*time.Minute+time.Minute); !got.Equal(want) {
		t.Errorf("WaitUntil (from no TLSA) = %v, want %v", got, want)
	}
	st.Versions[0] = Version{Initial: true, TTL: 60, Records: []string{"3 1 1 00"}, Superseded: t0}
	if got, want := WaitUntil(st), t0.Add(5*time.Minute+time.Minute); !got.Equal(want) {
		t.Errorf("WaitUntil (new TTL larger, negative TTL irrelevant) = %v, want %v", got, want)
	}
}
