package check

import (
	"crypto/x509"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// Forecast says, for one address, when each usable record that matches the
// served chain now stops matching on its own (nothing changes but the
// clock), and when DANE breaks: the earliest moment none of them matches.
type Forecast struct {
	Records []RecordForecast `json:"records"` // every usable record that matches now
	// BreaksAt is the earliest moment no record that matches now matches
	// any more; nil when one never stops on its own (a 3 x x). When no
	// record matches now it is the check time itself.
	BreaksAt  *time.Time `json:"breaks_at,omitempty"`
	BreakDays *float64   `json:"break_days,omitempty"` // days from the check time to BreaksAt
	// SingleAt is when at most one record will still match (nil: not
	// foreseen, or already at most one matches).
	SingleAt   *time.Time `json:"single_at,omitempty"`
	SingleDays *float64   `json:"single_days,omitempty"`
}

// RecordForecast is the forecast of one record.
type RecordForecast struct {
	Record string     `json:"record"`
	Until  *time.Time `json:"until,omitempty"` // first moment it no longer matches; nil: does not stop on its own
	Why    string     `json:"why"`             // "leaf expires", "intermediate CN=… expires", "DANE-EE ignores validity; the certificate expires <date>"
}

// forecastMatch computes the forecast by evaluating the rules, not by
// re-implementing them: the only instants at which a verdict can change by
// itself are the NotAfter times of the certificates involved (a DANE-TA
// match requires every certificate on the path below the trust anchor, and
// a self-signed trust anchor, to be valid; RFC 7671 §5.2, RFC 7672 §3.1.2).
// tlsa.Match compares whole seconds and calls a certificate expired at its
// NotAfter second, so each such second is a candidate; Match is re-run at
// each one, in order, and a record's end is the first candidate at which it
// no longer matches. That keeps the forecast identical to what
// `tlsactl match --time T` says at any T. A NotBefore in the future is
// ignored: it can only make something match later, not stop.
func forecastMatch(chain []*x509.Certificate, recs []tlsa.Record, names []string, now time.Time, res tlsa.Result) *Forecast {
	if len(chain) == 0 || len(recs) == 0 {
		return nil
	}
	fc := &Forecast{Records: []RecordForecast{}}
	var live []int // indices of the records that match now
	for i, v := range res.Verdicts {
		if v.Usable && v.Matched {
			live = append(live, i)
		}
	}
	if len(live) == 0 {
		if res.UsableCount() == 0 {
			return nil
		}
		at, d := now, 0.0
		fc.BreaksAt, fc.BreakDays = &at, &d
		return fc
	}
	certs := append([]*x509.Certificate(nil), chain...)
	for _, r := range recs { // a "2 0 0" record carries its trust anchor
		if r.Usage == tlsa.DANETA && r.Selector == tlsa.SelectorCert && r.MatchingType == tlsa.MatchFull {
			if c, err := x509.ParseCertificate(r.Data); err == nil {
				certs = append(certs, c)
			}
		}
	}
	var cands []int64
	for _, c := range certs {
		if t := c.NotAfter.Unix(); t > now.Unix() {
			cands = append(cands, t)
		}
	}
	slices.Sort(cands)
	cands = slices.Compact(cands)

	until := make([]*time.Time, len(recs))
	why := make([]string, len(recs))
	single := len(live) <= 1
	for _, sec := range cands {
		t := time.Unix(sec, 0).UTC()
		r := tlsa.Match(chain, recs, tlsa.MatchOptions{Names: names, Now: t})
		still := 0
		for _, i := range live {
			if until[i] != nil {
				continue
			}
			if r.Verdicts[i].Matched {
				still++
				continue
			}
			tt := t
			until[i], why[i] = &tt, stopReason(certs, res.Verdicts[i], r.Verdicts[i], sec)
		}
		if !single && still <= 1 {
			single = true
			tt := t
			fc.SingleAt, fc.SingleDays = &tt, days(now, t)
		}
		if still == 0 {
			tt := t
			fc.BreaksAt, fc.BreakDays = &tt, days(now, t)
			break
		}
	}
	for _, i := range live {
		rf := RecordForecast{Record: recs[i].String(), Until: until[i], Why: why[i]}
		if until[i] == nil {
			switch recs[i].Usage {
			case tlsa.DANEEE:
				rf.Why = fmt.Sprintf("DANE-EE ignores validity; the certificate expires %s", chain[0].NotAfter.UTC().Format("2006-01-02"))
			default:
				rf.Why = "does not stop matching on its own"
			}
		}
		fc.Records = append(fc.Records, rf)
	}
	return fc
}

// days from now to t, rounded down to a tenth as DaysToExpiry is.
func days(now, t time.Time) *float64 {
	d := math.Floor(t.Sub(now).Hours()/24*10) / 10
	return &d
}

// stopReason says why a record that matched (before) no longer does at the
// candidate second sec (after): the certificate on its path that expires
// then, lowest first (the leaf, then the intermediates up to the trust
// anchor), or the verdict's reason when no certificate expires then.
func stopReason(certs []*x509.Certificate, before, after tlsa.Verdict, sec int64) string {
	if after.Reason == tlsa.ReasonExpired {
		top := before.Depth
		if top < 0 || top >= len(certs) {
			top = len(certs) - 1
		}
		for i := 0; i <= top; i++ {
			c := certs[i]
			if c.NotAfter.Unix() != sec {
				continue
			}
			switch {
			case i == 0:
				return "leaf expires"
			case i == before.Depth && selfIssued(c):
				return fmt.Sprintf("trust anchor %s expires", certName(c))
			default:
				return fmt.Sprintf("intermediate %s expires", certName(c))
			}
		}
	}
	return fmt.Sprintf("stops matching: %s (%s)", after.Reason, after.Detail)
}

func selfIssued(c *x509.Certificate) bool { return string(c.RawSubject) == string(c.RawIssuer) }

func certName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return "CN=" + c.Subject.CommonName
	}
	return c.Subject.String()
}

// ForecastText renders the forecast as one line for the text output:
// "2 1 1 until 2027-02-03 (leaf expires), 3 1 1 does not expire
// (certificate expires 2027-02-03); DANE breaks: never on its own".
func ForecastText(fc *Forecast) string {
	if fc == nil {
		return ""
	}
	if len(fc.Records) == 0 {
		return "no usable record matches now"
	}
	short := map[string]int{}
	for _, r := range fc.Records {
		short[shortRecord(r.Record, 0)]++
	}
	var parts []string
	for _, r := range fc.Records {
		name := shortRecord(r.Record, 0)
		if short[name] > 1 {
			name = shortRecord(r.Record, 8)
		}
		if r.Until == nil {
			why := strings.TrimPrefix(r.Why, "DANE-EE ignores validity; the ")
			parts = append(parts, fmt.Sprintf("%s does not expire (%s)", name, why))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s until %s (%s)", name, r.Until.UTC().Format("2006-01-02"), r.Why))
	}
	out := strings.Join(parts, ", ")
	if fc.BreaksAt == nil {
		out += "; DANE breaks: never on its own"
	} else {
		out += fmt.Sprintf("; DANE breaks %s (in %.1f days)", fc.BreaksAt.UTC().Format("2006-01-02"), *fc.BreakDays)
	}
	if fc.SingleAt != nil && (fc.BreaksAt == nil || !fc.SingleAt.Equal(*fc.BreaksAt)) {
		out += fmt.Sprintf("; only one record matches from %s (in %.1f days)", fc.SingleAt.UTC().Format("2006-01-02"), *fc.SingleDays)
	}
	return out
}

// shortRecord is "3 1 1", or with hex > 0 "3 1 1 26bc18f9…".
func shortRecord(rec string, hex int) string {
	f := strings.Fields(rec)
	if len(f) < 4 {
		return rec
	}
	s := strings.Join(f[:3], " ")
	if hex > 0 {
		d := f[3]
		if len(d) > hex {
			d = d[:hex] + "…"
		}
		s += " " + d
	}
	return s
}

// DefaultRenewalMargin is added to the TLSA TTL for the time a renewal that
// changes the CA or key needs before the certificate can be swapped: the new
// records published, confirmed on every authoritative server, then one TTL
// wait (NCSC "Wisselen van certificaatautoriteit").
const DefaultRenewalMargin = time.Hour

// forecastFindings raises the findings of an address's forecast: DANE
// breaking within --warn-days/--critical-days, only one record left within
// --warn-days, and a leaf that expires before a renewal that changes a
// record could be deployed safely (TTL + margin).
func forecastFindings(fc *Forecast, leaf *x509.Certificate, ttl uint32, p Policy, sev func(Severity, string, string, ...any)) {
	if fc == nil || len(fc.Records) == 0 {
		return // nothing matches now: tlsa-none-match says so
	}
	lastWhy := func() string {
		var parts []string
		for _, r := range fc.Records {
			if r.Until != nil {
				parts = append(parts, fmt.Sprintf("%s stops matching %s (%s)", shortRecord(r.Record, 0), r.Until.UTC().Format(time.RFC3339), r.Why))
			}
		}
		return strings.Join(parts, "; ")
	}
	if fc.BreakDays != nil {
		d := *fc.BreakDays
		s := OK
		switch {
		case p.CriticalDays > 0 && d < float64(p.CriticalDays):
			s = Critical
		case d < float64(p.WarnDays):
			s = Warning
		}
		if s != OK {
			sev(s, "dane-breaks", "DANE breaks in %.1f days (%s): %s; every usable record that matches now stops matching then and DANE senders will defer mail: deploy the renewed certificate (and its records) before then",
				d, fc.BreaksAt.UTC().Format(time.RFC3339), lastWhy())
		}
	}
	if fc.SingleDays != nil && (fc.BreaksAt == nil || !fc.SingleAt.Equal(*fc.BreaksAt)) && *fc.SingleDays < float64(p.WarnDays) {
		var gone []string
		for _, r := range fc.Records {
			if r.Until != nil && !r.Until.After(*fc.SingleAt) {
				gone = append(gone, fmt.Sprintf("%s (%s)", shortRecord(r.Record, 0), r.Why))
			}
		}
		sev(Warning, "tlsa-single-soon", "only one record will match from %s (in %.1f days): %s stops matching; after that one more mistake breaks delivery; renew before then",
			fc.SingleAt.UTC().Format(time.RFC3339), *fc.SingleDays, strings.Join(gone, ", "))
	}
	if leaf == nil || ttl == 0 {
		return
	}
	margin := DefaultRenewalMargin
	now := p.Now
	left := leaf.NotAfter.Sub(now)
	window := time.Duration(ttl)*time.Second + margin
	if left <= 0 || left >= window {
		return
	}
	breaksSoon := fc.BreaksAt != nil && !fc.BreaksAt.After(now.Add(window))
	if breaksSoon {
		sev(Critical, "cert-renewal-window", "the certificate expires %s, in %s, sooner than the TLSA TTL (%d s) + margin (%s): a renewal that changes a record (new CA or key) can no longer be deployed safely before DANE breaks at %s; deploy a renewal from the same CA now, and renew well ahead of TTL + margin next time",
			leaf.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Second), ttl, margin, fc.BreaksAt.UTC().Format(time.RFC3339))
		return
	}
	sev(Warning, "cert-renewal-window", "the certificate expires %s, in %s, sooner than the TLSA TTL (%d s) + margin (%s): a renewal with a CA or key change cannot be deployed safely before it expires (its new records need a TTL wait before the swap); renew with the same CA and key, or renew earlier",
		leaf.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Second), ttl, margin)
}
