package check

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/tlsa"
)

// DomainObservation is what was seen of one mail domain's MX RRset.
type DomainObservation struct {
	Domain string
	MX     *dnsx.MXResult // nil when Err is set
	Err    error
}

// HostObservation is what was seen of one MX host: its addresses, its TLSA
// RRset and a STARTTLS probe of each address.
type HostObservation struct {
	Host    string   // FQDN
	Domains []string // the mail domains whose MX names this host
	Port    uint16   // the SMTP port checked
	Addrs   *dnsx.AddrsResult
	AddrErr error
	TLSA    *dnsx.TLSAResult // nil when TLSAErr is set
	TLSAErr error
	Probes  []ProbeObservation
}

// ProbeObservation is the STARTTLS probe of one address.
type ProbeObservation struct {
	Addr  netip.Addr
	Probe Probe
	Err   error
}

// Probe is what a STARTTLS probe saw. Connected is false when no SMTP
// greeting was read; STARTTLSOffered says whether EHLO listed STARTTLS.
type Probe struct {
	Connected       bool
	STARTTLSOffered bool
	Chain           []*x509.Certificate // leaf first, as served; nil when no handshake
	TLSVersion      string
}

// Policy holds the thresholds of the rules.
type Policy struct {
	WarnDays int // warn when the leaf expires, or DANE breaks or only one record is left (the forecast), within this many days
	// CriticalDays, when > 0: CRITICAL when the leaf expires or DANE breaks
	// within this many days.
	CriticalDays int
	Now          time.Time // the check's clock: expiry, DANE-TA validity, the forecast; zero means time.Now()
}

// Report is the whole result of a check: JSON-ready.
type Report struct {
	Status   Severity       `json:"status"`
	Domains  []DomainReport `json:"domains,omitempty"`
	Hosts    []HostReport   `json:"hosts"`
	Findings []Finding      `json:"findings"`
}

// DomainReport summarises one mail domain.
type DomainReport struct {
	Domain   string   `json:"domain"`
	MXStatus string   `json:"mx_dnssec"`
	MX       []string `json:"mx,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// HostReport summarises one MX host.
type HostReport struct {
	Host       string          `json:"host"`
	Domains    []string        `json:"domains,omitempty"`
	Status     Severity        `json:"status"`
	AddrStatus string          `json:"address_dnssec"`
	AddrError  string          `json:"address_error,omitempty"`
	TLSA       TLSAReport      `json:"tlsa"`
	Addresses  []AddressReport `json:"addresses"`
}

// TLSAReport is the TLSA RRset of a host as the validating resolver gave it.
type TLSAReport struct {
	Name string `json:"name"`
	// Owner is the RRset's real owner after CNAME expansion (the name a
	// shared RRset lives at); Name when there is no CNAME.
	Owner   string   `json:"owner,omitempty"`
	Status  string   `json:"dnssec"` // secure, insecure, bogus, failed, or nxdomain/nodata status
	Present bool     `json:"present"`
	Records []string `json:"records,omitempty"`
	TTL     uint32   `json:"ttl,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// AddressReport is the outcome for one address of a host.
type AddressReport struct {
	Address         string        `json:"address"`
	Status          Severity      `json:"status"`
	STARTTLSOffered bool          `json:"starttls"`
	Error           string        `json:"error,omitempty"`
	TLSVersion      string        `json:"tls_version,omitempty"`
	Chain           []CertInfo    `json:"chain,omitempty"`
	Verdicts        []VerdictInfo `json:"verdicts,omitempty"`
	Matched         int           `json:"matching_records"`
	Usable          int           `json:"usable_records"`
	NotAfter        *time.Time    `json:"not_after,omitempty"`
	DaysToExpiry    *float64      `json:"days_to_expiry,omitempty"`
	// Forecast is when the records that match now stop matching on their
	// own; nil when the RRset is not evaluated here (no TLSA, no chain).
	Forecast *Forecast `json:"forecast,omitempty"`
}

// CertInfo describes a served certificate.
type CertInfo struct {
	Subject    string    `json:"subject"`
	Issuer     string    `json:"issuer"`
	DNSNames   []string  `json:"dns_names,omitempty"`
	NotAfter   time.Time `json:"not_after"`
	SPKISHA256 string    `json:"spki_sha256"`
}

// VerdictInfo is a record's match result.
type VerdictInfo struct {
	Record  string      `json:"record"`
	Usable  bool        `json:"usable"`
	Matched bool        `json:"matched"`
	Reason  tlsa.Reason `json:"reason"`
	Detail  string      `json:"detail"`
}

// Evaluate applies the NCSC rules to the observations and returns the report.
// It is pure: same observations and policy, same report.
func Evaluate(domains []DomainObservation, hosts []HostObservation, p Policy) Report {
	if p.Now.IsZero() {
		p.Now = time.Now()
	}
	var rep Report
	add := func(f Finding) { rep.Findings = append(rep.Findings, f) }
	hostDANE := map[string]bool{}
	for _, h := range hosts {
		hr, fs, dane := evaluateHost(h, p)
		rep.Hosts = append(rep.Hosts, hr)
		for _, f := range fs {
			add(f)
		}
		hostDANE[h.Host] = dane
	}
	for _, d := range domains {
		dr, fs := evaluateDomain(d, hostDANE)
		rep.Domains = append(rep.Domains, dr)
		for _, f := range fs {
			add(f)
		}
	}
	for _, f := range rep.Findings {
		rep.Status = Worst(rep.Status, f.Severity)
	}
	// Most severe first; within a severity, in observation order.
	sort.SliceStable(rep.Findings, func(i, j int) bool { return rep.Findings[i].Severity.rank() > rep.Findings[j].Severity.rank() })
	if rep.Findings == nil {
		rep.Findings = []Finding{}
	}
	return rep
}

func evaluateDomain(d DomainObservation, hostDANE map[string]bool) (DomainReport, []Finding) {
	dr := DomainReport{Domain: d.Domain}
	var fs []Finding
	f := func(sev Severity, code, format string, args ...any) {
		fs = append(fs, Finding{Severity: sev, Code: code, Domain: d.Domain, Message: fmt.Sprintf(format, args...)})
	}
	if d.Err != nil {
		dr.MXStatus, dr.Error = dnsx.StatusOf(d.Err).String(), d.Err.Error()
		switch {
		case errors.Is(d.Err, dnsx.ErrBogus):
			f(Critical, "mx-bogus", "MX lookup is DNSSEC-bogus (the validating resolver answered SERVFAIL): DANE senders cannot deliver; fix the zone's signatures or DS")
		case errors.Is(d.Err, dnsx.ErrNXDomain):
			f(Critical, "domain-nxdomain", "the domain does not exist (NXDOMAIN)")
		case errors.Is(d.Err, dnsx.ErrNoData):
			// RFC 5321 §5.1 implicit MX: the caller checks the domain as a host.
			f(OK, "mx-implicit", "no MX records: mail goes to the domain's own address (implicit MX)")
		default:
			f(Unknown, "mx-lookup-failed", "MX lookup failed: %v", d.Err)
		}
		return dr, fs
	}
	dr.MXStatus = d.MX.Status.String()
	if d.MX.Null {
		f(OK, "mx-null", "null MX (RFC 7505): the domain accepts no mail")
		return dr, fs
	}
	if d.MX.Status != dnsx.Secure {
		// RFC 7672 §2.2.1: an insecure MX RRset does not switch DANE off.
		// Senders MAY still look up TLSA for the hosts it names (and Postfix
		// does), so those hosts' verdicts stand as reported; what is lost is
		// the protection of the MX RRset itself. WARNING: mail is delivered,
		// but an attacker can replace the MX hosts with their own.
		f(Warning, "mx-insecure", "the MX RRset of %s is not DNSSEC-signed (insecure): an attacker on the path can replace the MX hosts with their own; senders MAY still use DANE for the hosts it names (RFC 7672 §2.2.1), whose TLSA is checked below as usual; sign the zone",
			dotless(d.Domain))
	}
	var without []string
	for _, mx := range d.MX.Hosts {
		dr.MX = append(dr.MX, mx.Host)
		if !hostDANE[mx.Host] {
			without = append(without, strings.TrimSuffix(mx.Host, "."))
		}
	}
	if len(without) > 0 && len(without) < len(d.MX.Hosts) {
		f(Warning, "mx-unprotected", "MX host(s) %s are not DANE-protected (no secure TLSA RRset with a usable record, or insecure address records) while others are: an attacker can steer mail to them; publish TLSA for every MX host",
			strings.Join(without, ", "))
	}
	return dr, fs
}

// evaluateHost returns the host's report, its findings, and whether senders
// authenticate the host with DANE: a secure TLSA RRset with at least one
// usable record, looked up because the address records are secure.
func evaluateHost(h HostObservation, p Policy) (HostReport, []Finding, bool) {
	hr := HostReport{Host: h.Host, Domains: h.Domains, TLSA: TLSAReport{Name: dnsx.TLSAName(h.Port, h.Host)}}
	var fs []Finding
	f := func(sev Severity, addr, code, format string, args ...any) {
		fs = append(fs, Finding{Severity: sev, Code: code, Host: h.Host, Address: addr, Message: fmt.Sprintf(format, args...)})
		hr.Status = Worst(hr.Status, sev)
	}
	tlsaSecure := h.TLSAErr == nil && h.TLSA != nil && h.TLSA.Status == dnsx.Secure && len(h.TLSA.Records) > 0

	// Addresses. RFC 7672 §2.2.2: a sender looks up TLSA only for addresses
	// whose A/AAAA lookup was secure; with insecure address records it does
	// not ask for TLSA at all and delivers with opportunistic TLS.
	addrsKnown := h.AddrErr == nil && h.Addrs != nil && len(h.Addrs.Addrs) > 0
	anySecure := !addrsKnown // addresses unknown: judge the RRset as a sender that has them would
	if addrsKnown {
		for _, a := range h.Addrs.Addrs {
			anySecure = anySecure || addrSecure(h.Addrs, a)
		}
	}
	if h.Addrs != nil {
		hr.AddrStatus = h.Addrs.Status.String()
	}
	if h.AddrErr != nil {
		hr.AddrError = h.AddrErr.Error()
		if hr.AddrStatus == "" {
			hr.AddrStatus = dnsx.StatusOf(h.AddrErr).String()
		}
		switch {
		case errors.Is(h.AddrErr, dnsx.ErrBogus):
			// Not the same as insecure: a validating sender cannot resolve
			// the host at all and defers.
			f(Critical, "", "addr-bogus", "the address lookup is DNSSEC-bogus (SERVFAIL from the validating resolver): senders cannot resolve the host and defer mail to it; fix the signatures or the DS of its zone")
		case errors.Is(h.AddrErr, dnsx.ErrNXDomain), errors.Is(h.AddrErr, dnsx.ErrNoData):
			f(Critical, "", "addr-none", "the MX host has no A or AAAA records")
		default:
			f(Unknown, "", "addr-lookup-failed", "address lookup failed: %v", h.AddrErr)
		}
	} else if h.Addrs != nil && h.Addrs.Status != dnsx.Secure {
		// WARNING, not CRITICAL: mail is delivered (opportunistic TLS), but
		// nobody authenticates the server; the TLSA RRset, however good or
		// bad, changes nothing for senders.
		fams := insecureFamilies(h.Addrs)
		scope := "at all"
		if anySecure {
			scope = "for those addresses"
		}
		unused := ""
		if tlsaSecure {
			unused = fmt.Sprintf("; the secure TLSA RRset at %s is therefore not used and its verdicts are informational", dotless(dnsx.TLSAName(h.Port, h.Host)))
			if anySecure {
				unused = fmt.Sprintf("; the TLSA RRset at %s is used only for the host's secure addresses", dotless(dnsx.TLSAName(h.Port, h.Host)))
			}
		}
		f(Warning, "", "addr-insecure", "the host's address records (%s) are not DNSSEC-signed (insecure): senders do not look up its TLSA RRset %s (RFC 7672 §2.2.2) and deliver with opportunistic TLS, unauthenticated%s; sign the zone of %s",
			fams, scope, unused, dotless(h.Host))
	}

	// TLSA RRset.
	var recs []tlsa.Record
	switch {
	case h.TLSAErr != nil:
		var le *dnsx.LookupError
		if errors.As(h.TLSAErr, &le) {
			hr.TLSA.Name = le.Name
		}
		hr.TLSA.Status, hr.TLSA.Error = dnsx.StatusOf(h.TLSAErr).String(), h.TLSAErr.Error()
		switch {
		case errors.Is(h.TLSAErr, dnsx.ErrBogus):
			f(Critical, "", "tlsa-bogus", "TLSA lookup at %s is DNSSEC-bogus (SERVFAIL from the validating resolver), not \"no TLSA\": DANE senders defer all mail; fix the signatures or the DS", dotless(hr.TLSA.Name))
		case errors.Is(h.TLSAErr, dnsx.ErrNXDomain), errors.Is(h.TLSAErr, dnsx.ErrNoData):
			f(Warning, "", "tlsa-none", "no TLSA record at %s: DANE is not in use for this host; publish a 3 1 1 and a 2 1 1 record", dotless(hr.TLSA.Name))
		default:
			f(Unknown, "", "tlsa-lookup-failed", "TLSA lookup failed: %v", h.TLSAErr)
		}
	case h.TLSA != nil:
		hr.TLSA.Name, hr.TLSA.Status, hr.TLSA.TTL, hr.TLSA.Present = h.TLSA.Name, h.TLSA.Status.String(), h.TLSA.TTL, len(h.TLSA.Records) > 0
		hr.TLSA.Owner = h.TLSA.Canonical
		if hr.TLSA.Owner == "" {
			hr.TLSA.Owner = h.TLSA.Name
		}
		for _, r := range h.TLSA.Records {
			rec := tlsa.Record{Usage: tlsa.Usage(r.Usage), Selector: tlsa.Selector(r.Selector), MatchingType: tlsa.MatchingType(r.MatchingType), Data: r.Data}
			recs = append(recs, rec)
			hr.TLSA.Records = append(hr.TLSA.Records, rec.String())
		}
		if h.TLSA.Status != dnsx.Secure {
			f(Warning, "", "tlsa-insecure", "TLSA at %s is in an unsigned (insecure) zone: senders ignore it; sign the zone", dotless(h.TLSA.Name))
			recs = nil // not used by senders; still probed for the report
		}
	}
	usable := usableCount(recs)
	if len(recs) > 0 && anySecure {
		scheme(dotless(hr.TLSA.Name), usable, func(sev Severity, code, msg string) { f(sev, "", code, "%s", msg) })
	}

	names := []string{h.Host}
	if h.TLSA != nil && h.TLSA.BaseDomain != "" && h.TLSA.BaseDomain != h.Host {
		names = []string{h.TLSA.BaseDomain, h.Host}
	}
	for _, po := range h.Probes {
		mode := daneOff
		if len(recs) > 0 {
			mode = daneOn
			if addrsKnown && !addrSecure(h.Addrs, po.Addr) {
				mode = daneInformational
			}
		}
		var ttl uint32
		if h.TLSA != nil {
			ttl = h.TLSA.TTL
		}
		ar := evaluateAddress(po, recs, mode, names, ttl, p, func(sev Severity, code, msg string) { f(sev, po.Addr.String(), code, "%s", msg) })
		hr.Addresses = append(hr.Addresses, ar)
	}
	if hr.Addresses == nil {
		hr.Addresses = []AddressReport{}
	}
	return hr, fs, len(recs) > 0 && usable > 0 && anySecure
}

// addrSecure reports whether senders look up TLSA for a: its address family's
// lookup was secure. Without per-family statuses the combined one decides.
func addrSecure(res *dnsx.AddrsResult, a netip.Addr) bool {
	fam := res.A
	if !a.Unmap().Is4() {
		fam = res.AAAA
	}
	if fam.Status != 0 {
		return fam.Status == dnsx.Secure
	}
	return res.Status == dnsx.Secure
}

// insecureFamilies names the address families whose lookup was insecure.
func insecureFamilies(res *dnsx.AddrsResult) string {
	var fams []string
	if res.A.Status == dnsx.Insecure {
		fams = append(fams, "A")
	}
	if res.AAAA.Status == dnsx.Insecure {
		fams = append(fams, "AAAA")
	}
	if len(fams) == 0 {
		return "A/AAAA"
	}
	return strings.Join(fams, ", ")
}

// usableCount counts the records an SMTP client can use, as tlsa.Match
// decides: DANE-TA or DANE-EE (RFC 7672 §3.1.3), a known selector and
// matching type, well-formed data (RFC 7671 §4). Match decides usability
// before it looks at the chain, so an empty chain gives the same Usable flags
// as any served chain (TestEvaluateRFC7672Section22 pins that).
func usableCount(recs []tlsa.Record) int {
	if len(recs) == 0 {
		return 0
	}
	return tlsa.Match(nil, recs, tlsa.MatchOptions{Now: time.Unix(0, 0)}).UsableCount()
}

// scheme checks that the RRset is a rollover scheme: at least two usable
// records (current + next, or 3 1 1 + 2 1 1).
func scheme(name string, usable int, f func(Severity, string, string)) {
	switch {
	case usable == 0:
		// RFC 7672 §2.2: a secure RRset with no usable record does not make
		// senders defer; they fall back to mandatory TLS without
		// authentication. WARNING, not CRITICAL: mail is delivered (if
		// STARTTLS works, which the address checks treat as CRITICAL when it
		// does not), but DANE authenticates nothing, as if no TLSA existed.
		f(Warning, "tlsa-unusable", fmt.Sprintf("the TLSA RRset at %s has no record usable for SMTP (only PKIX-TA/PKIX-EE, unknown parameters or malformed data): senders then use mandatory TLS without authentication (RFC 7672 §2.2); publish 3 1 1 and 2 1 1", name))
	case usable == 1:
		f(Warning, "tlsa-no-rollover", "only one usable TLSA record: no rollover scheme; publish both a 3 1 1 and a 2 1 1 record (NCSC) so a renewal never breaks delivery")
	}
}

// daneMode says what the TLSA RRset means for one address.
type daneMode int

const (
	daneOff           daneMode = iota // no secure TLSA records: opportunistic TLS
	daneOn                            // senders use the RRset for this address
	daneInformational                 // a secure RRset senders never look up (insecure address records): verdicts shown, no findings
)

func evaluateAddress(po ProbeObservation, recs []tlsa.Record, mode daneMode, names []string, ttl uint32, p Policy, f func(Severity, string, string)) AddressReport {
	ar := AddressReport{Address: po.Addr.String(), STARTTLSOffered: po.Probe.STARTTLSOffered, TLSVersion: po.Probe.TLSVersion}
	sev := func(s Severity, code, format string, args ...any) {
		ar.Status = Worst(ar.Status, s)
		f(s, code, fmt.Sprintf(format, args...))
	}
	dane := mode == daneOn
	// STARTTLS problems without DANE are a warning. With DANE they are
	// critical, also for an RRset of unusable records: senders then still
	// require TLS (RFC 7672 §2.2), they only skip authentication.
	failSev := Warning
	if dane {
		failSev = Critical
	}
	if po.Err != nil {
		ar.Error = po.Err.Error()
		switch {
		case !po.Probe.Connected:
			sev(failSev, "smtp-unreachable", "cannot talk SMTP: %v", po.Err)
		case !po.Probe.STARTTLSOffered:
			sev(failSev, "starttls-missing", "the server does not offer STARTTLS in its EHLO reply (a firewall may strip it)%s", ifDANE(dane, ": DANE senders will not deliver"))
		default:
			sev(failSev, "starttls-failed", "STARTTLS failed: %v", po.Err)
		}
		return ar
	}
	chain := po.Probe.Chain
	for _, c := range chain {
		ar.Chain = append(ar.Chain, certInfo(c))
	}
	if len(chain) > 0 {
		leaf := chain[0]
		na := leaf.NotAfter.UTC()
		ar.NotAfter, ar.DaysToExpiry = &na, days(p.Now, leaf.NotAfter)
		left := *ar.DaysToExpiry
		switch {
		case p.Now.After(leaf.NotAfter):
			sev(Warning, "cert-expired", "the certificate expired on %s (DANE-EE still accepts it, RFC 7672 §3.1.1, but renew it)", na.Format("2006-01-02"))
		case p.CriticalDays > 0 && left < float64(p.CriticalDays):
			sev(Critical, "cert-expiring", "the certificate expires in %.1f days (%s)", left, na.Format("2006-01-02"))
		case left < float64(p.WarnDays):
			sev(Warning, "cert-expiring", "the certificate expires in %.1f days (%s)", left, na.Format("2006-01-02"))
		}
		if !nameInSAN(leaf, names[0]) {
			sev(Warning, "cert-name", "the certificate's names %v do not include the MX host %s (NCSC: put the MX host name in the SAN)", leaf.DNSNames, dotless(names[0]))
		}
	}
	if mode == daneOff {
		return ar
	}
	res := tlsa.Match(chain, recs, tlsa.MatchOptions{Names: names, Now: p.Now})
	for _, v := range res.Verdicts {
		ar.Verdicts = append(ar.Verdicts, VerdictInfo{Record: v.Record.String(), Usable: v.Usable, Matched: v.Matched, Reason: v.Reason, Detail: v.Detail})
	}
	ar.Matched, ar.Usable = res.MatchedCount(), res.UsableCount()
	ar.Forecast = forecastMatch(chain, recs, names, p.Now, res)
	if mode == daneInformational || ar.Usable == 0 {
		// Nobody authenticates this address with the RRset: either senders
		// never look it up (the address records are insecure; the host's
		// addr-insecure finding says so) or no record is usable (tlsa-unusable
		// says so). The verdicts stay in the report as information.
		return ar
	}
	switch {
	case ar.Matched == 0:
		sev(Critical, "tlsa-none-match", "no usable TLSA record matches the served chain: DANE senders defer mail to this host; %s", firstReason(res))
	case ar.Matched < ar.Usable && !nextKeyPublished(res):
		sev(Warning, "tlsa-partial-match", "only %d of %d usable TLSA records match; one more mistake breaks delivery: %s", ar.Matched, ar.Usable, firstReason(res))
	}
	if ar.Matched > 0 {
		var leaf *x509.Certificate
		if len(chain) > 0 {
			leaf = chain[0]
		}
		forecastFindings(ar.Forecast, leaf, ttl, p, sev)
	}
	if ca, set := singleRotatingIntermediate(chain, res); ca != nil {
		sev(Warning, "tlsa-single-intermediate", "every usable 2 x x record names one intermediate CA, %q of %s, a CA that issues from several intermediates in turn (its issuer set: %s): a renewal from a sibling intermediate matches no 2 x x record and breaks DANE-TA; publish a 2 1 1 for every intermediate of the CA's issuer set (tlsactl publish --usage 2 --certificate 'issuers/*.pem' --add)",
			ca.Subject.CommonName, set.CA, set.Describe())
	}
	switch {
	case usableTA(res) && len(chain) == 1:
		sev(Warning, "chain-incomplete", "a 2 x x record is published but the server sends only its own certificate: send the whole chain up to the CA (NCSC, RFC 7672 §3.1.2)")
	case taNotSent(chain, res) != "":
		sev(Warning, "chain-incomplete", "the %s record matches a trust anchor the server does not send: Postfix and OpenSSL accept that, but RFC 7672 §3.1.2 says servers MUST send the TA certificate; send the whole chain up to the CA (NCSC)", taNotSent(chain, res))
	}
	return ar
}

// taNotSent returns the first matching DANE-TA record whose trust anchor is
// not in the served chain (a full certificate or key from DNS, RFC 7671
// §5.2.2: Depth len(chain)), in the short form "2 1 0", or "".
func taNotSent(chain []*x509.Certificate, res tlsa.Result) string {
	for _, v := range res.Verdicts {
		if v.Matched && v.Record.Usage == tlsa.DANETA && v.Depth >= len(chain) {
			return fmt.Sprintf("%d %d %d", v.Record.Usage, v.Record.Selector, v.Record.MatchingType)
		}
	}
	return ""
}

// usableTA reports whether the RRset has a usable DANE-TA record.
func usableTA(res tlsa.Result) bool {
	for _, v := range res.Verdicts {
		if v.Usable && v.Record.Usage == tlsa.DANETA {
			return true
		}
	}
	return false
}

// dotless returns a DNS name without its trailing dot, as messages print it.
func dotless(name string) string { return strings.TrimSuffix(name, ".") }

// singleRotatingIntermediate returns the intermediate CA that every usable
// DANE-TA record of the RRset matches, when there is exactly one such
// certificate, it is an intermediate (not self-signed) and its CA rotates its
// intermediates (it belongs to an issuer set of IssuerSets), with that set;
// otherwise nil. A usable 2 x x record that matches nothing served is taken
// for another member of the issuer set.
func singleRotatingIntermediate(chain []*x509.Certificate, res tlsa.Result) (*x509.Certificate, *IssuerSet) {
	var ca *x509.Certificate
	for _, v := range res.Verdicts {
		if !v.Usable || v.Record.Usage != tlsa.DANETA {
			continue
		}
		if !v.Matched || v.Depth <= 0 || v.Depth >= len(chain) {
			return nil, nil // a record for another CA (or a bare key): an issuer set
		}
		c := chain[v.Depth]
		if ca != nil && !bytes.Equal(ca.RawSubjectPublicKeyInfo, c.RawSubjectPublicKeyInfo) {
			return nil, nil
		}
		ca = c
	}
	if ca == nil || selfIssued(ca) {
		return nil, nil
	}
	if set := IssuerSetOf(ca); set != nil {
		return ca, set
	}
	return nil, nil
}

// nextKeyPublished reports whether every non-matching record is a spare that
// is not supposed to match yet: a DANE-EE record beside a matching DANE-EE
// record (the RFC 7671 §8.1 current + next scheme), or a DANE-TA record of a
// CA that is not in the served chain beside a matching DANE-TA record (an
// issuer set: the CA's other intermediates, which a renewal may come from).
func nextKeyPublished(res tlsa.Result) bool {
	eeMatch, taMatch := false, false
	for _, v := range res.Verdicts {
		if v.Usable && v.Matched {
			eeMatch = eeMatch || v.Record.Usage == tlsa.DANEEE
			taMatch = taMatch || v.Record.Usage == tlsa.DANETA
		}
	}
	for _, v := range res.Verdicts {
		if !v.Usable || v.Matched {
			continue
		}
		switch {
		case v.Record.Usage == tlsa.DANEEE && eeMatch:
		case v.Record.Usage == tlsa.DANETA && taMatch && v.Reason == tlsa.ReasonTANotInChain:
		default:
			return false
		}
	}
	return eeMatch || taMatch
}

func firstReason(res tlsa.Result) string {
	var parts []string
	for _, v := range res.Verdicts {
		if v.Usable && !v.Matched {
			parts = append(parts, fmt.Sprintf("%d %d %d: %s (%s)", v.Record.Usage, v.Record.Selector, v.Record.MatchingType, v.Reason, v.Detail))
		}
	}
	if len(parts) == 0 {
		return "no usable records"
	}
	return strings.Join(parts, "; ")
}

func ifDANE(dane bool, s string) string {
	if dane {
		return s
	}
	return ""
}

func nameInSAN(c *x509.Certificate, host string) bool {
	return c.VerifyHostname(strings.TrimSuffix(host, ".")) == nil
}

func certInfo(c *x509.Certificate) CertInfo {
	r, _ := tlsa.Compute(tlsa.FromCertificate(c), tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	return CertInfo{Subject: c.Subject.String(), Issuer: c.Issuer.String(), DNSNames: c.DNSNames, NotAfter: c.NotAfter.UTC(), SPKISHA256: fmt.Sprintf("%x", r.Data)}
}
