package check

import (
	"crypto/x509"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/tlsa"
)

const fcHost = "mail.example.test"

// fcChain builds root -> intermediate -> leaf for fcHost with the given
// lifetimes from testNow (zero: the default of NewValidityChain).
func fcChain(t *testing.T, root, inter, leaf time.Duration) *testbed.Chain {
	t.Helper()
	v := func(d time.Duration) testbed.Validity {
		return testbed.Validity{NotBefore: testNow.Add(-48 * time.Hour), NotAfter: testNow.Add(d)}
	}
	return testbed.MustValidityChain(t, testbed.ValidityChainOptions{DNSNames: []string{fcHost}, Root: v(root), Intermediate: v(inter), Leaf: v(leaf)})
}

func tr(t *testing.T, c *x509.Certificate, u tlsa.Usage) tlsa.Record {
	t.Helper()
	r, err := tlsa.Compute(tlsa.FromCertificate(c), u, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func sec(t time.Time) time.Time { return time.Unix(t.Unix(), 0).UTC() }

const day = 24 * time.Hour

// TestForecastTable: the forecast with an injected clock, and for every
// predicted end a cross-check against tlsa.Match one second before (still
// matches) and at/after it (does not).
func TestForecastTable(t *testing.T) {
	std := fcChain(t, 10*365*day, 5*365*day, 90*day)       // NCSC shape: leaf expires first
	leafFirst := fcChain(t, 10*365*day, 5*365*day, 10*day) // leaf in 10 days
	interFirst := fcChain(t, 10*365*day, 20*day, 60*day)   // intermediate before the leaf
	rootFirst := fcChain(t, 15*day, 5*365*day, 60*day)     // the root (served, a TA) first
	next := fcChain(t, 10*365*day, 5*365*day, 90*day)      // the next key
	other := fcChain(t, 10*365*day, 5*365*day, 90*day)     // an unrelated CA
	served := func(c *testbed.Chain, root bool) []*x509.Certificate {
		out := []*x509.Certificate{c.Leaf.Cert, c.Intermediate.Cert}
		if root {
			out = append(out, c.Root.Cert)
		}
		return out
	}
	type rf struct {
		until time.Time // zero: nil
		why   string    // substring
	}
	tests := []struct {
		name          string
		chain         []*x509.Certificate
		recs          []tlsa.Record
		want          []rf
		breaks        time.Time // zero: nil
		single        time.Time // zero: nil
		breakDays     float64
		wantNoRecords bool
	}{
		{
			name:   "leaf expires first: 2 1 1 of the root and of the intermediate",
			chain:  served(leafFirst, true),
			recs:   []tlsa.Record{tr(t, leafFirst.Root.Cert, tlsa.DANETA), tr(t, leafFirst.Intermediate.Cert, tlsa.DANETA)},
			want:   []rf{{leafFirst.Leaf.Cert.NotAfter, "leaf expires"}, {leafFirst.Leaf.Cert.NotAfter, "leaf expires"}},
			breaks: leafFirst.Leaf.Cert.NotAfter, single: leafFirst.Leaf.Cert.NotAfter, breakDays: 10,
		},
		{
			// The root as TA: the intermediate below it must be valid. The
			// intermediate as TA: its own dates do not count (RFC 7671 §5.2,
			// OpenSSL), only the leaf's.
			name:   "intermediate expires first",
			chain:  served(interFirst, true),
			recs:   []tlsa.Record{tr(t, interFirst.Root.Cert, tlsa.DANETA), tr(t, interFirst.Intermediate.Cert, tlsa.DANETA)},
			want:   []rf{{interFirst.Intermediate.Cert.NotAfter, "intermediate CN=testbed intermediate CA expires"}, {interFirst.Leaf.Cert.NotAfter, "leaf expires"}},
			breaks: interFirst.Leaf.Cert.NotAfter, single: interFirst.Intermediate.Cert.NotAfter, breakDays: 60,
		},
		{
			name:   "self-signed trust anchor expires first",
			chain:  served(rootFirst, true),
			recs:   []tlsa.Record{tr(t, rootFirst.Root.Cert, tlsa.DANETA), tr(t, rootFirst.Leaf.Cert, tlsa.DANEEE)},
			want:   []rf{{rootFirst.Root.Cert.NotAfter, "trust anchor CN=testbed root CA expires"}, {time.Time{}, "DANE-EE ignores validity; the certificate expires " + rootFirst.Leaf.Cert.NotAfter.UTC().Format("2006-01-02")}},
			single: rootFirst.Root.Cert.NotAfter,
		},
		{
			// RFC 7671 §8.1: only the current key matches; the next one is
			// not counted, so "at most one" is already the case.
			name:  "current+next 3 1 1 pair",
			chain: served(std, false),
			recs:  []tlsa.Record{tr(t, std.Leaf.Cert, tlsa.DANEEE), tr(t, next.Leaf.Cert, tlsa.DANEEE)},
			want:  []rf{{time.Time{}, "DANE-EE ignores validity"}},
		},
		{
			name:   "a single 2 1 1",
			chain:  served(std, false),
			recs:   []tlsa.Record{tr(t, std.Intermediate.Cert, tlsa.DANETA)},
			want:   []rf{{std.Leaf.Cert.NotAfter, "leaf expires"}},
			breaks: std.Leaf.Cert.NotAfter, breakDays: 90,
		},
		{
			name:   "NCSC pair 3 1 1 + 2 1 1",
			chain:  served(std, false),
			recs:   []tlsa.Record{tr(t, std.Leaf.Cert, tlsa.DANEEE), tr(t, std.Intermediate.Cert, tlsa.DANETA)},
			want:   []rf{{time.Time{}, "DANE-EE ignores validity"}, {std.Leaf.Cert.NotAfter, "leaf expires"}},
			single: std.Leaf.Cert.NotAfter,
		},
		{
			name:   "nothing matches now",
			chain:  served(std, false),
			recs:   []tlsa.Record{tr(t, other.Leaf.Cert, tlsa.DANEEE), tr(t, other.Intermediate.Cert, tlsa.DANETA)},
			breaks: testNow, wantNoRecords: true,
		},
	}
	names := []string{fcHost + "."}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := tlsa.Match(tc.chain, tc.recs, tlsa.MatchOptions{Names: names, Now: testNow})
			fc := forecastMatch(tc.chain, tc.recs, names, testNow, res)
			if fc == nil {
				t.Fatal("no forecast")
			}
			b, _ := json.Marshal(fc)
			t.Logf("forecast %s; text: %s", b, ForecastText(fc))
			if len(fc.Records) != len(tc.want) || tc.wantNoRecords != (len(fc.Records) == 0) {
				t.Fatalf("records %+v, want %d", fc.Records, len(tc.want))
			}
			for i, w := range tc.want {
				got := fc.Records[i]
				if w.until.IsZero() != (got.Until == nil) || (got.Until != nil && !got.Until.Equal(sec(w.until))) {
					t.Errorf("record %d %s: until %v, want %v", i, got.Record, got.Until, sec(w.until))
				}
				if !strings.Contains(got.Why, w.why) {
					t.Errorf("record %d: why %q, want %q", i, got.Why, w.why)
				}
				if got.Until != nil {
					crossCheck(t, tc.chain, []tlsa.Record{mustParse(t, got.Record)}, names, *got.Until)
				}
			}
			checkTime(t, "breaks_at", fc.BreaksAt, tc.breaks)
			checkTime(t, "single_at", fc.SingleAt, tc.single)
			if (fc.BreakDays == nil) != (fc.BreaksAt == nil) || (fc.SingleDays == nil) != (fc.SingleAt == nil) {
				t.Errorf("days and times disagree: %s", b)
			}
			if fc.BreakDays != nil && *fc.BreakDays != tc.breakDays {
				t.Errorf("break_days %v, want %v", *fc.BreakDays, tc.breakDays)
			}
			if fc.BreaksAt != nil && len(fc.Records) > 0 {
				crossCheck(t, tc.chain, tc.recs, names, *fc.BreaksAt)
			}
		})
	}
}

func checkTime(t *testing.T, what string, got *time.Time, want time.Time) {
	t.Helper()
	if want.IsZero() != (got == nil) || (got != nil && !got.Equal(sec(want))) {
		t.Errorf("%s %v, want %v", what, got, want)
	}
}

func mustParse(t *testing.T, s string) tlsa.Record {
	t.Helper()
	r, err := tlsa.ParseRecord(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// crossCheck: tlsa.Match matches at end-1s and not at end or end+1s, as
// `tlsactl match --time` would say.
func crossCheck(t *testing.T, chain []*x509.Certificate, recs []tlsa.Record, names []string, end time.Time) {
	t.Helper()
	if !tlsa.Match(chain, recs, tlsa.MatchOptions{Names: names, Now: end.Add(-time.Second)}).Matched() {
		t.Errorf("no match at %s, one second before the predicted end", end.Add(-time.Second))
	}
	for _, at := range []time.Time{end, end.Add(time.Second)} {
		if tlsa.Match(chain, recs, tlsa.MatchOptions{Names: names, Now: at}).Matched() {
			t.Errorf("still matches at %s, after the predicted end %s", at, end)
		}
	}
}

// TestForecastInReport: Evaluate fills AddressReport.Forecast and raises
// dane-breaks (warn/critical days), tlsa-single-soon and
// cert-renewal-window.
func TestForecastInReport(t *testing.T) {
	host := fcHost + "."
	mk := func(c *testbed.Chain, ttl uint32, recs ...dnsx.TLSARecord) HostObservation {
		o := hostObs(host, []*x509.Certificate{c.Leaf.Cert, c.Intermediate.Cert}, dnsx.Secure, recs...)
		o.TLSA.TTL = ttl
		return o
	}
	in10 := fcChain(t, 10*365*day, 5*365*day, 10*day)
	in5 := fcChain(t, 10*365*day, 5*365*day, 5*day)
	in2 := fcChain(t, 10*365*day, 5*365*day, 2*day)
	in90 := fcChain(t, 10*365*day, 5*365*day, 90*day)
	p := Policy{WarnDays: 14, CriticalDays: 7, Now: testNow}
	tests := []struct {
		name  string
		obs   HostObservation
		codes map[string]Severity // findings that must be there, with their severity
		none  []string            // codes that must be absent
	}{
		{"2 1 1 alone, breaks in 10 days: WARNING", mk(in10, 300, rec(t, in10.Intermediate.Cert, 2)),
			map[string]Severity{"dane-breaks": Warning}, []string{"tlsa-single-soon", "cert-renewal-window"}},
		{"2 1 1 alone, breaks in 5 days: CRITICAL", mk(in5, 300, rec(t, in5.Intermediate.Cert, 2)),
			map[string]Severity{"dane-breaks": Critical, "cert-expiring": Critical}, nil},
		{"pair, leaf in 10 days: one record left soon", mk(in10, 300, rec(t, in10.Leaf.Cert, 3), rec(t, in10.Intermediate.Cert, 2)),
			map[string]Severity{"tlsa-single-soon": Warning, "cert-expiring": Warning}, []string{"dane-breaks"}},
		{"pair, 90 days: quiet", mk(in90, 300, rec(t, in90.Leaf.Cert, 3), rec(t, in90.Intermediate.Cert, 2)),
			nil, []string{"tlsa-single-soon", "dane-breaks", "cert-renewal-window", "cert-expiring"}},
		{"pair, leaf in 2 days, TTL 3 days: renewal window", mk(in2, 3*86400, rec(t, in2.Leaf.Cert, 3), rec(t, in2.Intermediate.Cert, 2)),
			map[string]Severity{"cert-renewal-window": Warning}, nil},
		{"2 1 1 alone, leaf in 2 days, TTL 3 days: renewal window CRITICAL", mk(in2, 3*86400, rec(t, in2.Intermediate.Cert, 2)),
			map[string]Severity{"cert-renewal-window": Critical, "dane-breaks": Critical}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := Evaluate(nil, []HostObservation{tc.obs}, p)
			got := map[string]Finding{}
			for _, f := range rep.Findings {
				got[f.Code] = f
			}
			for code, want := range tc.codes {
				f, ok := got[code]
				if !ok {
					t.Errorf("finding %s missing: %v", code, rep.Findings)
				} else if f.Severity != want {
					t.Errorf("%s: %s, want %s: %s", code, f.Severity, want, f.Message)
				}
			}
			for _, code := range tc.none {
				if f, ok := got[code]; ok {
					t.Errorf("unexpected %v", f)
				}
			}
			ar := rep.Hosts[0].Addresses[0]
			if ar.Forecast == nil {
				t.Fatalf("no forecast in %+v", ar)
			}
			if f, ok := got["dane-breaks"]; ok && !strings.Contains(f.Message, "DANE breaks in") {
				t.Errorf("message %q", f.Message)
			}
			if f, ok := got["tlsa-single-soon"]; ok && !strings.Contains(f.Message, "only one record will match from") {
				t.Errorf("message %q", f.Message)
			}
		})
	}

	// The clock defaults to time.Now() and the forecast is in the JSON.
	rep := Evaluate(nil, []HostObservation{hostObs(host, []*x509.Certificate{in90.Leaf.Cert, in90.Intermediate.Cert}, dnsx.Secure,
		rec(t, in90.Leaf.Cert, 3), rec(t, in90.Intermediate.Cert, 2))}, Policy{WarnDays: 14})
	b, _ := json.Marshal(rep.Hosts[0].Addresses[0])
	for _, want := range []string{`"forecast":{"records":[`, `"why":"leaf expires"`, `"single_at":`, `"single_days":`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
	if strings.Contains(string(b), `"breaks_at"`) {
		t.Errorf("breaks_at for a host with a 3 1 1: %s", b)
	}
}

func TestForecastText(t *testing.T) {
	c := fcChain(t, 10*365*day, 5*365*day, 12*day+12*time.Hour)
	chain := []*x509.Certificate{c.Leaf.Cert, c.Intermediate.Cert}
	names := []string{fcHost + "."}
	date := c.Leaf.Cert.NotAfter.UTC().Format("2006-01-02")
	pair := []tlsa.Record{tr(t, c.Intermediate.Cert, tlsa.DANETA), tr(t, c.Leaf.Cert, tlsa.DANEEE)}
	fc := forecastMatch(chain, pair, names, testNow, tlsa.Match(chain, pair, tlsa.MatchOptions{Names: names, Now: testNow}))
	got := ForecastText(fc)
	for _, want := range []string{"2 1 1 until " + date, "(leaf expires)", "3 1 1 does not expire (certificate expires " + date + ")", "DANE breaks: never on its own"} {
		if !strings.Contains(got, want) {
			t.Errorf("text %q lacks %q", got, want)
		}
	}
	one := pair[:1]
	fc = forecastMatch(chain, one, names, testNow, tlsa.Match(chain, one, tlsa.MatchOptions{Names: names, Now: testNow}))
	if got := ForecastText(fc); !strings.Contains(got, "DANE breaks "+date) || !strings.Contains(got, "(in 12.5 days)") {
		t.Errorf("text %q", got)
	}
}

// TestIssuerSets: the table recognises Let's Encrypt's current and announced
// intermediates by O + CN, and the warning names the set.
func TestIssuerSets(t *testing.T) {
	isrg := newCA(t, "Internet Security Research Group", "ISRG Root X1", nil)
	for _, cn := range []string{"R10", "R14", "E5", "E9", "YR1", "YR3", "YE2", "R15"} {
		if IssuerSetOf(newCA(t, "Let's Encrypt", cn, isrg).cert) == nil {
			t.Errorf("%s not recognised", cn)
		}
	}
	for _, c := range []*leCA{isrg, newCA(t, "Example Trust", "R10", isrg), newCA(t, "Let's Encrypt", "Example CA", isrg)} {
		if IssuerSetOf(c.cert) != nil {
			t.Errorf("%s / %v recognised", c.cert.Subject.CommonName, c.cert.Subject.Organization)
		}
	}
	d := IssuerSets[0].Describe()
	for _, want := range []string{"R10–R14", "E5–E9", "ISRG Root X1/X2", "YR1–YR3", "YE1–YE3", "ISRG Root YR/YE"} {
		if !strings.Contains(d, want) {
			t.Errorf("Describe() = %q lacks %q", d, want)
		}
	}
	// Gen Y: a 2 1 1 pinned to YE1 alone warns, naming the set.
	ye := newCA(t, "ISRG", "ISRG Root YE", nil)
	ye1 := newCA(t, "Let's Encrypt", "YE1", ye)
	chain := leafFrom(t, "mail.example.nl", ye1)
	obs := hostObs("mail.example.nl.", chain, dnsx.Secure, rec(t, chain[0], 3), rec(t, ye1.cert, 2))
	obs.Probes[0].Addr = netip.MustParseAddr("127.0.0.1")
	rep := Evaluate(nil, []HostObservation{obs}, Policy{WarnDays: 14, Now: testNow})
	found := false
	for _, f := range rep.Findings {
		if f.Code == "tlsa-single-intermediate" {
			found = true
			for _, want := range []string{`"YE1"`, "Let's Encrypt", "YR1–YR3", "R10–R14"} {
				if !strings.Contains(f.Message, want) {
					t.Errorf("message lacks %q: %s", want, f.Message)
				}
			}
		}
	}
	if !found {
		t.Errorf("no tlsa-single-intermediate: %v", rep.Findings)
	}
}
