package exporter

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/dnsx"
)

// The metric names are a contract with alert rules: never rename them.
var (
	descHostStatus = newDesc("tlsactl_host_status",
		"DANE check status of an MX host address: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the worse of the host's and the address's status; address=\"\" when the host has no address to check).",
		"host", "address")
	descMatching = newDesc("tlsactl_tlsa_matching_records",
		"Usable TLSA records of the host that match the chain served at this address (NCSC: 2 with a rollover scheme; 0 means DANE senders defer mail).",
		"host", "address")
	descUsable = newDesc("tlsactl_tlsa_usable_records",
		"TLSA records of the host usable for SMTP (RFC 7672: DANE-TA(2) and DANE-EE(3) with known selector and matching type); fewer than 2 means no rollover scheme.",
		"host", "address")
	descExpiry = newDesc("tlsactl_certificate_expiry_days",
		"Days until the leaf certificate served at this address expires (negative once expired).",
		"host", "address")
	descBreak = newDesc("tlsactl_dane_break_days",
		"Forecast: days until no TLSA record that matches the chain served at this address now matches any more (certificates expire; DANE senders then defer mail); 0 when none matches now; absent when a record never stops matching on its own (3 x x).",
		"host", "address")
	descSingle = newDesc("tlsactl_dane_single_record_days",
		"Forecast: days until at most one TLSA record still matches the chain served at this address (the rollover scheme is lost); absent when not foreseen or when at most one matches already.",
		"host", "address")
	descBogus = newDesc("tlsactl_tlsa_dnssec_bogus",
		"1 when the validating resolver answered the host's TLSA lookup as DNSSEC-bogus (SERVFAIL: DANE senders defer all mail), else 0.",
		"host")
	descSuccess = newDesc("tlsactl_check_success",
		"1 when the check of the host completed (every lookup answered and every probe finished within the deadline), 0 when it was cut short or a lookup failed (its status is then not trustworthy).",
		"host")
	descDuration = newDesc("tlsactl_check_duration_seconds",
		"Seconds the last check of the host took, from its first lookup to its result.",
		"host")
	descLastCheck = newDesc("tlsactl_last_check_timestamp_seconds",
		"Unix time at which the last check of the host finished.",
		"host")
	descMXSecure = newDesc("tlsactl_domain_mx_dnssec_secure",
		"1 when the mail domain's MX RRset (or its implicit MX) validated as DNSSEC-secure, else 0 (insecure, bogus or lookup failure).",
		"domain")
)

// newDesc describes a metric without constant labels.
func newDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// HostResult is the outcome of one host's check as the exporter serves it.
type HostResult struct {
	Report   check.HostReport
	Success  bool          // the check completed: see tlsactl_check_success
	Duration time.Duration // from the first lookup to the result
	Finished time.Time
}

// results is a set of host and domain results, keyed by the label values.
// It is a prometheus.Collector: a scrape reads it and never checks anything.
type results struct {
	mu      sync.RWMutex
	hosts   map[string]HostResult
	domains map[string]check.DomainReport
	seen    map[string]bool // keys stored since the last reset mark (sweep)
	// oneOff: the results of one check run (WriteTextfile), which measures
	// no completion, duration or finish time: those series are left out.
	oneOff bool
}

func newResults() *results {
	return &results{hosts: map[string]HostResult{}, domains: map[string]check.DomainReport{}, seen: map[string]bool{}}
}

func label(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") }

func (r *results) putHost(h HostResult) {
	k := label(h.Report.Host)
	r.mu.Lock()
	r.hosts[k] = h
	r.seen["h "+k] = true
	r.mu.Unlock()
}

func (r *results) putDomain(d check.DomainReport) {
	k := label(d.Domain)
	r.mu.Lock()
	r.domains[k] = d
	r.seen["d "+k] = true
	r.mu.Unlock()
}

// mark starts a cycle: sweep later drops what was not stored since.
func (r *results) mark() {
	r.mu.Lock()
	r.seen = map[string]bool{}
	r.mu.Unlock()
}

// sweep drops the hosts and domains not stored since mark (an MX host that a
// domain no longer names), so their series end instead of going stale.
func (r *results) sweep() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.hosts {
		if !r.seen["h "+k] {
			delete(r.hosts, k)
		}
	}
	for k := range r.domains {
		if !r.seen["d "+k] {
			delete(r.domains, k)
		}
	}
}

// hostList returns the host results, sorted by host.
func (r *results) hostList() []HostResult {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]HostResult, 0, len(r.hosts))
	for _, h := range r.hosts {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Report.Host < out[j].Report.Host })
	return out
}

func (r *results) domainList() []check.DomainReport {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]check.DomainReport, 0, len(r.domains))
	for _, d := range r.domains {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out
}

// Describe implements prometheus.Collector.
func (r *results) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHostStatus, descMatching, descUsable, descExpiry, descBreak, descSingle,
		descBogus, descSuccess, descDuration, descLastCheck, descMXSecure} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *results) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, h := range r.hostList() {
		host := label(h.Report.Host)
		if len(h.Report.Addresses) == 0 {
			// No address was checked (none resolved, or the lookup
			// failed): the host's status must not vanish with them.
			gauge(descHostStatus, float64(h.Report.Status), host, "")
		}
		for _, a := range h.Report.Addresses {
			gauge(descHostStatus, float64(check.Worst(h.Report.Status, a.Status)), host, a.Address)
			gauge(descMatching, float64(a.Matched), host, a.Address)
			gauge(descUsable, float64(a.Usable), host, a.Address)
			if a.DaysToExpiry != nil {
				gauge(descExpiry, *a.DaysToExpiry, host, a.Address)
			}
			// The forecast series are absent when the check foresees no
			// such moment (a 3 x x record does not stop matching on its
			// own; at most one record matches already).
			if fc := a.Forecast; fc != nil && fc.BreakDays != nil {
				gauge(descBreak, *fc.BreakDays, host, a.Address)
			}
			if fc := a.Forecast; fc != nil && fc.SingleDays != nil {
				gauge(descSingle, *fc.SingleDays, host, a.Address)
			}
		}
		gauge(descBogus, bool01(h.Report.TLSA.Status == dnsx.Bogus.String()), host)
		if r.oneOff {
			continue
		}
		gauge(descSuccess, bool01(h.Success), host)
		gauge(descDuration, h.Duration.Seconds(), host)
		gauge(descLastCheck, float64(h.Finished.UnixMilli())/1000, host)
	}
	for _, d := range r.domainList() {
		gauge(descMXSecure, bool01(d.MXStatus == dnsx.Secure.String()), label(d.Domain))
	}
}

// WriteTextfile writes the results of one check (tlsactl check
// --prometheus) to path for node-exporter's textfile collector, atomically
// (prometheus.WriteToTextfile: a temporary file, whose name does not end
// in .prom, renamed over path; mode 0644). The series are those of the
// exporter's /metrics, with the same names, labels and help texts —
// including a host whose addresses could not be checked (address="") and
// the domains' MX status — but without tlsactl_check_success,
// tlsactl_check_duration_seconds and tlsactl_last_check_timestamp_seconds,
// which a one-off check does not measure (node-exporter adds the file's
// modification time).
func WriteTextfile(path string, rep check.Report) error {
	r := newResults()
	r.oneOff = true
	for _, h := range rep.Hosts {
		r.putHost(HostResult{Report: h})
	}
	for _, d := range rep.Domains {
		r.putDomain(d)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(r); err != nil {
		return err
	}
	return prometheus.WriteToTextfile(path, reg)
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
