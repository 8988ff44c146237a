// Package outbound checks whether a sending mail server is ready for DANE
// (RFC 7672) the way the mandate for outbound mail asks since 2018: it
// resolves through a DNSSEC-validating resolver on a trusted path (preferably
// on the same host), and its MTA has opportunistic DANE switched on for every
// destination.
//
// Three parts, each producing findings:
//   - [CheckResolver]: a signed name gets the AD bit, a deliberately broken
//     (bogus) name gets SERVFAIL, and a retry of that name with the CD bit
//     (checking disabled) answers, which proves that the SERVFAIL was the
//     validator's verdict and not an unreachable authority;
//   - [CheckResolverPath]: the resolver is on loopback (127.0.0.0/8, ::1);
//   - [AuditPostfix] (from `postconf`) or [AuditExim] (from `exim -bP`):
//     the MTA enforces DANE.
//
// Severities and exit codes are those of `tlsactl check` (package check):
// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Each finding names the setting to
// change and how.
package outbound

import (
	"sort"
	"strings"

	"github.com/tlsactl/tlsactl/internal/check"
)

// Severity is check.Severity: its value is the monitoring-plugin exit code.
type Severity = check.Severity

// Severities.
const (
	OK       = check.OK
	Warning  = check.Warning
	Critical = check.Critical
	Unknown  = check.Unknown
)

// Finding is one line a person can act on.
type Finding struct {
	Severity Severity `json:"severity"`
	// Code is a stable identifier, e.g. "postfix-security-level".
	Code string `json:"code"`
	// Setting is what the finding is about: a Postfix parameter
	// ("smtp_tls_security_level"), a map entry ("smtp_tls_policy_maps
	// texthash:/etc/postfix/tls_policy: example.org"), an Exim option
	// ("transport remote_smtp: hosts_try_dane") or "resolver".
	Setting string `json:"setting"`
	// Value is the setting's current value, when it has one.
	Value   string `json:"value,omitempty"`
	Message string `json:"message"`
	// Fix says what to change, e.g. "postconf -e 'smtp_tls_security_level = dane'".
	Fix string `json:"fix,omitempty"`
}

// String renders the finding as one line:
//
//	CRITICAL smtp_tls_security_level = may: DANE is not used …; fix: postconf -e '…'
func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Severity.String())
	b.WriteString(" " + f.Setting)
	if f.Value != "" {
		b.WriteString(" = " + f.Value)
	}
	b.WriteString(": " + f.Message)
	if f.Fix != "" {
		b.WriteString("; fix: " + f.Fix)
	}
	return b.String()
}

// ResolverReport is what CheckResolver observed.
type ResolverReport struct {
	Addr string `json:"addr"`
	// Loopback reports whether Addr is on the same host (a trusted path).
	Loopback bool `json:"loopback"`
	// Signed is the lookup of the signed name: rcode and whether AD was set.
	Signed Probe `json:"signed"`
	// Bogus is the lookup of the broken name; BogusCD the same with the CD
	// bit (checking disabled).
	Bogus   Probe  `json:"bogus"`
	BogusCD *Probe `json:"bogus_cd,omitempty"`
	// Validates is the verdict: AD on the signed name and SERVFAIL on the
	// bogus one.
	Validates bool `json:"validates"`
}

// Probe is one query's outcome.
type Probe struct {
	Name  string `json:"name"`
	Rcode string `json:"rcode,omitempty"` // NOERROR, NXDOMAIN, SERVFAIL, …
	AD    bool   `json:"ad"`
	Error string `json:"error,omitempty"` // the query got no answer
}

// Report is the whole outbound readiness report.
type Report struct {
	Status   Severity       `json:"status"`
	Resolver ResolverReport `json:"resolver"`
	// MTA is "postfix", "exim" or "" (none audited).
	MTA string `json:"mta,omitempty"`
	// Enforced reports whether the MTA enforces DANE for outbound mail
	// (no CRITICAL or UNKNOWN MTA finding).
	Enforced bool      `json:"dane_enforced"`
	Findings []Finding `json:"findings"`
}

// Finish computes Status (the worst finding) and sorts the findings, worst
// first, keeping their order otherwise.
func (r *Report) Finish() {
	r.Status = OK
	for _, f := range r.Findings {
		r.Status = check.Worst(r.Status, f.Severity)
	}
	sort.SliceStable(r.Findings, func(i, j int) bool {
		return worse(r.Findings[i].Severity, r.Findings[j].Severity)
	})
}

// Enforcing reports whether findings (of one MTA audit) leave DANE enforced:
// none of them CRITICAL or UNKNOWN.
func Enforcing(findings []Finding) bool {
	for _, f := range findings {
		if f.Severity == Critical || f.Severity == Unknown {
			return false
		}
	}
	return true
}

// worse reports whether a ranks above b in check's order of "worst of"
// (CRITICAL > UNKNOWN > WARNING > OK), as check.Worst decides it.
func worse(a, b Severity) bool { return a != b && check.Worst(b, a) == a }
