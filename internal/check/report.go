// Package check inventories the MX hosts of mail domains and checks each one
// against the NCSC DANE rules: TLSA present and DNSSEC-secure, STARTTLS
// offered, at least one usable record matching the served chain on every
// address, a rollover scheme of two records, and certificate expiry.
//
// Severities follow what a DANE sender does (RFC 7672 §2.2): a bogus lookup
// makes it defer (CRITICAL); with insecure address records it never looks up
// TLSA, so the host gets addr-insecure (WARNING) and its TLSA verdicts are
// reported for information only; a secure RRset of only unusable records
// means mandatory TLS without authentication (tlsa-unusable, WARNING); an
// insecure MX RRset does not switch DANE off for the hosts it names, whose
// verdicts stand, and gets mx-insecure (WARNING).
//
// Observation (DNS through a validating resolver, STARTTLS probes) is kept
// apart from evaluation: [Evaluate] is a pure function from what was observed
// to findings, so the rules are tested without servers. Results are values;
// printing is the caller's job.
package check

import (
	"fmt"
	"strings"
)

// Severity follows the monitoring-plugin convention: its value is the exit
// code of `tlsactl check`.
type Severity int

// Severities, in the order of their exit codes.
const (
	OK       Severity = 0
	Warning  Severity = 1
	Critical Severity = 2
	Unknown  Severity = 3
)

// String returns the monitoring-plugin name of the severity.
func (s Severity) String() string {
	switch s {
	case OK:
		return "OK"
	case Warning:
		return "WARNING"
	case Critical:
		return "CRITICAL"
	case Unknown:
		return "UNKNOWN"
	}
	return fmt.Sprintf("SEVERITY(%d)", int(s))
}

// MarshalText renders the severity by name in JSON.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// rank orders severities for "worst of": CRITICAL > UNKNOWN > WARNING > OK.
// A definite failure outranks not knowing.
func (s Severity) rank() int {
	switch s {
	case Critical:
		return 3
	case Unknown:
		return 2
	case Warning:
		return 1
	}
	return 0
}

// Worst returns the more severe of a and b.
func Worst(a, b Severity) Severity {
	if b.rank() > a.rank() {
		return b
	}
	return a
}

// Finding is one thing a person can act on.
type Finding struct {
	Severity Severity `json:"severity"`
	Code     string   `json:"code"`              // stable identifier, e.g. "tlsa-none-match"
	Domain   string   `json:"domain,omitempty"`  // mail domain, for domain-level findings
	Host     string   `json:"host,omitempty"`    // MX host
	Address  string   `json:"address,omitempty"` // IP address
	Message  string   `json:"message"`
}

// String renders the finding as one line: "CRITICAL mail.example.nl [192.0.2.1]: message".
func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Severity.String())
	switch {
	case f.Host != "":
		b.WriteString(" " + strings.TrimSuffix(f.Host, "."))
		if f.Address != "" {
			b.WriteString(" [" + f.Address + "]")
		}
	case f.Domain != "":
		b.WriteString(" " + strings.TrimSuffix(f.Domain, "."))
	}
	b.WriteString(": " + f.Message)
	return b.String()
}

// Summary counts a report's outcomes: for the end of a big run.
type Summary struct {
	Status  Severity `json:"status"`
	Domains int      `json:"domains"`
	Hosts   int      `json:"hosts"`
	// DomainStatus counts domains by their worst status (their own
	// findings and their MX hosts'); HostStatus counts hosts.
	DomainStatus map[string]int `json:"domains_by_status"`
	HostStatus   map[string]int `json:"hosts_by_status"`
	// Findings counts the findings a person can act on (not OK) by code.
	Findings map[string]int `json:"findings_by_code"`
}

// Summarize counts rep's domains and hosts per status and its actionable
// findings per code.
func Summarize(rep Report) Summary {
	s := Summary{Status: rep.Status, Domains: len(rep.Domains), Hosts: len(rep.Hosts),
		DomainStatus: map[string]int{}, HostStatus: map[string]int{}, Findings: map[string]int{}}
	hostStatus := map[string]Severity{}
	for _, h := range rep.Hosts {
		hostStatus[h.Host] = h.Status
		s.HostStatus[h.Status.String()]++
	}
	domStatus := map[string]Severity{}
	for _, f := range rep.Findings {
		if f.Domain != "" && f.Host == "" {
			domStatus[f.Domain] = Worst(domStatus[f.Domain], f.Severity)
		}
		if f.Severity != OK {
			s.Findings[f.Code]++
		}
	}
	for _, d := range rep.Domains {
		st := domStatus[d.Domain]
		for _, mx := range d.MX {
			st = Worst(st, hostStatus[mx])
		}
		if d.Error != "" && d.MXStatus != "" { // implicit MX: the domain is its own host
			st = Worst(st, hostStatus[d.Domain])
		}
		s.DomainStatus[st.String()]++
	}
	return s
}
