package providers

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/tlsa"
)

// ErrNotPropagated: not every authoritative server served the expected TLSA
// RRset before the deadline. Errors of WaitPropagated wrap it (as a
// *PropagationError).
var ErrNotPropagated = errors.New("TLSA RRset not propagated to every authoritative server")

// Defaults of PropagationOptions.
const (
	DefaultPropagationInterval     = 2 * time.Second
	DefaultPropagationTimeout      = 10 * time.Minute
	DefaultPropagationQueryTimeout = 3 * time.Second
)

// PropagationOptions tune WaitPropagated. Zero values take the defaults.
type PropagationOptions struct {
	// Interval between two polls of a server that does not serve the
	// expected RRset yet (DefaultPropagationInterval).
	Interval time.Duration
	// Timeout bounds the whole wait (DefaultPropagationTimeout); the
	// context can end it earlier.
	Timeout time.Duration
	// QueryTimeout bounds each query (DefaultPropagationQueryTimeout).
	QueryTimeout time.Duration
	// TCP sends every query over TCP. Otherwise queries go over UDP and are
	// retried over TCP when the answer is truncated or UDP fails.
	TCP bool
	// ExactTTL makes a positive want.TTL part of what must be served. By
	// default any TTL is accepted: hosted providers raise TTLs below their
	// minimum (deSEC: 3600), and waiting for the requested one would never
	// end. The TTL actually served is reported in AddrState.TTL either way.
	ExactTTL bool
	// Zone whose SOA serial is reported per address. Empty: the SOA that
	// the server returns for "<owner> SOA" (in the answer at an apex, else
	// in the authority section), i.e. the zone the server holds the owner in.
	Zone string
	// Progress, when set, is called after every poll round that leaves
	// servers lagging, with a snapshot of the state (from the calling
	// goroutine; it must not block for long).
	Progress func(Propagation)
}

// Propagation is the state of a propagation check: one entry per address of
// every authoritative server.
type Propagation struct {
	Want    RRSet
	Started time.Time
	// Converged is when the last address was first seen serving the
	// expected RRset; zero unless all have.
	Converged time.Time
	Addrs     []AddrState
}

// Lagging returns the addresses that have not served the expected RRset.
func (p Propagation) Lagging() []AddrState {
	var out []AddrState
	for _, a := range p.Addrs {
		if !a.Converged {
			out = append(out, a)
		}
	}
	return out
}

// AddrState is what one address of an authoritative server served at its
// last poll (for a converged address: at the poll that found it converged;
// converged addresses are not asked again).
type AddrState struct {
	Server string         // NS name (AuthServer.Name)
	Addr   netip.AddrPort // where it was asked
	// Converged: the address served exactly the expected records (and TTL
	// with PropagationOptions.ExactTTL), validly signed when the zone is
	// signed. At is when the address was last asked: for a converged
	// address, the poll that first found it converged.
	Converged bool
	At        time.Time
	Polls     int // queries of the TLSA RRset sent to this address

	// The last answer, when there was one (Err == nil).
	Rcode   int           // dns.RcodeSuccess or dns.RcodeNameError for a usable answer
	Records []tlsa.Record // TLSA RDATA at the owner, in the server's order
	TTL     time.Duration // TTL of the TLSA RRset (0 when there is none)
	// NegTTL is the negative-caching TTL of a NODATA or NXDOMAIN answer:
	// min(SOA TTL, SOA MINIMUM) of the SOA in its authority section
	// (RFC 2308 §5); 0 when there are records or no SOA.
	NegTTL time.Duration
	CNAME  string // target, when the owner is a CNAME at this server
	// Serial is the zone's SOA serial at this address, queried right after
	// the TLSA RRset (so the data seen is at most that new); SerialOK
	// tells whether it could be read. Zone is the owner of that SOA.
	Serial   uint32
	SerialOK bool
	Zone     string

	// DNSSEC, checked for a non-empty TLSA RRset (RFC 4035 §5.3): Signed
	// reports that the server returned a DNSKEY RRset at the zone's apex
	// (asked with the DO bit); SigErr is why the RRSIG over the TLSA RRset
	// is not acceptable: it wraps ErrRRSIGMissing, ErrRRSIGExpired or
	// ErrRRSIGInvalid, or says why the check could not be made. An
	// address with a SigErr has not converged.
	Signed bool
	SigErr error

	// Err is why the last poll got no usable answer: no response, an rcode
	// other than NOERROR/NXDOMAIN, or an answer without the AA bit.
	Err error
}

// Describe says what the address serves compared with want, e.g.
// "serves 1 record (3 1 1 ab12cd34…) at serial 5, want 2 records (…)".
func (a AddrState) Describe(want RRSet) string {
	if a.Err != nil {
		return "gives no usable answer: " + a.Err.Error()
	}
	serial := ""
	if a.SerialOK {
		serial = fmt.Sprintf(" at serial %d", a.Serial)
	}
	var what string
	switch {
	case a.CNAME != "":
		what = "serves a CNAME to " + a.CNAME
	case len(a.Records) == 0:
		what = "serves no TLSA record (" + rcodeName(a.Rcode, true) + ")"
	default:
		if sameRecords(a.Records, want.Records) && len(want.Records) > 0 {
			if a.SigErr != nil {
				return fmt.Sprintf("serves the expected records%s, but %v", serial, a.SigErr)
			}
			return fmt.Sprintf("serves the expected records with TTL %s%s, want TTL %s", a.TTL, serial, want.TTL)
		}
		what = fmt.Sprintf("serves %s (%s)", plural(len(a.Records), "record"), abbrevRecords(a.Records))
	}
	sig := ""
	if a.SigErr != nil {
		sig = "; " + a.SigErr.Error()
	}
	if len(want.Records) == 0 {
		return what + serial + ", want none" + sig
	}
	return fmt.Sprintf("%s%s, want %s (%s)%s", what, serial, plural(len(want.Records), "record"), abbrevRecords(want.Records), sig)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func rcodeName(rc int, nodata bool) string {
	if rc == dns.RcodeSuccess && nodata {
		return "NODATA"
	}
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// abbrevRecords renders records as "3 1 1 ab12cd34…, …" (association data
// cut to 4 bytes), for messages.
func abbrevRecords(recs []tlsa.Record) string {
	parts := make([]string, len(recs))
	for i, r := range recs {
		h := hex.EncodeToString(r.Data)
		if len(h) > 8 {
			h = h[:8] + "…"
		}
		parts[i] = fmt.Sprintf("%d %d %d %s", r.Usage, r.Selector, r.MatchingType, h)
	}
	return strings.Join(parts, ", ")
}

// PropagationError is returned by WaitPropagated when the deadline passed
// (or the context ended) with servers lagging. It wraps ErrNotPropagated
// and the context's error.
type PropagationError struct {
	Want    RRSet
	Waited  time.Duration
	Lagging []AddrState
	Cause   error // context.DeadlineExceeded or context.Canceled
}

func (e *PropagationError) Error() string {
	var b strings.Builder
	what := "TLSA RRset"
	if len(e.Want.Records) == 0 {
		what = "removal of the TLSA RRset"
	}
	fmt.Fprintf(&b, "%s at %s not served by every authoritative server after %s: ", what, e.Want.Owner,
		e.Waited.Round(time.Millisecond))
	for i, a := range e.Lagging {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s [%s] %s", a.Server, a.Addr, a.Describe(e.Want))
	}
	return b.String()
}

// Unwrap returns ErrNotPropagated and the cause.
func (e *PropagationError) Unwrap() []error {
	if e.Cause != nil {
		return []error{ErrNotPropagated, e.Cause}
	}
	return []error{ErrNotPropagated}
}

// WaitPropagated polls every address of every server directly (queries
// without recursion, with the DO bit, which must come back authoritative)
// until each one serves exactly the TLSA RRset want: the same records,
// compared as bytes regardless of order, whatever their TTL (unless
// opts.ExactTTL). In a DNSSEC-signed zone (the server returns a DNSKEY
// RRset at the apex) a non-empty RRset counts only with an RRSIG over it
// that is valid now and verifies with one of the zone's DNSKEYs as served
// by the same address. An empty want.Records means "no TLSA at want.Owner":
// NXDOMAIN or NODATA. An address that has converged is not asked again.
//
// It returns the state per address (observed TTL, SOA serial, when it
// converged). When opts.Timeout passes or ctx ends first, it returns the
// state so far and a *PropagationError (wrapping ErrNotPropagated) that names
// every lagging server and address and what it serves instead.
func WaitPropagated(ctx context.Context, servers []AuthServer, want RRSet, opts PropagationOptions) (Propagation, error) {
	interval := cmp.Or(opts.Interval, DefaultPropagationInterval)
	timeout := cmp.Or(opts.Timeout, DefaultPropagationTimeout)
	qtimeout := cmp.Or(opts.QueryTimeout, DefaultPropagationQueryTimeout)
	want.Owner = dns.Fqdn(strings.ToLower(want.Owner))
	p := Propagation{Want: want, Started: time.Now()}
	if want.Owner == "." {
		return p, fmt.Errorf("%w: no TLSA owner name given", ErrConfig)
	}
	for _, s := range servers {
		if len(s.Addrs) == 0 {
			return p, fmt.Errorf("%w: authoritative server %s has no address", ErrConfig, s.Name)
		}
		for _, a := range s.Addrs {
			p.Addrs = append(p.Addrs, AddrState{Server: s.Name, Addr: a})
		}
	}
	if len(p.Addrs) == 0 {
		return p, fmt.Errorf("%w: no authoritative servers to check", ErrConfig)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	q := &prober{owner: want.Owner, zone: opts.Zone, tcp: opts.TCP, timeout: qtimeout}

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return p, &PropagationError{Want: want, Waited: time.Since(p.Started), Lagging: p.Lagging(), Cause: ctx.Err()}
		case <-timer.C:
		}
		var wg sync.WaitGroup
		for i := range p.Addrs {
			if p.Addrs[i].Converged {
				continue
			}
			wg.Go(func() { q.poll(ctx, &p.Addrs[i], want, opts.ExactTTL) })
		}
		wg.Wait()
		if len(p.Lagging()) == 0 {
			for _, a := range p.Addrs {
				if a.At.After(p.Converged) {
					p.Converged = a.At
				}
			}
			return p, nil
		}
		if opts.Progress != nil {
			snap := p
			snap.Addrs = slices.Clone(p.Addrs)
			opts.Progress(snap)
		}
		timer.Reset(interval)
	}
}

// ObserveTLSA asks every address of every server once, concurrently and
// with the same queries as WaitPropagated, what it serves at owner: the
// TLSA records and their TTL, the negative TTL of an empty answer, a CNAME,
// the SOA serial and the DNSSEC check (AddrState.Signed, SigErr). Only
// opts.Zone, TCP and QueryTimeout apply; ctx bounds the whole call. An
// address that cannot be asked has Err set; a server without addresses
// is reported as one AddrState with Err set. Converged is always false.
// The error is for bad input only (no owner, no servers; wraps ErrConfig).
func ObserveTLSA(ctx context.Context, servers []AuthServer, owner string, opts PropagationOptions) ([]AddrState, error) {
	owner = dns.Fqdn(strings.ToLower(owner))
	if owner == "." {
		return nil, fmt.Errorf("%w: no TLSA owner name given", ErrConfig)
	}
	var out []AddrState
	for _, s := range servers {
		if len(s.Addrs) == 0 {
			out = append(out, AddrState{Server: s.Name, Err: errors.New("no address")})
		}
		for _, a := range s.Addrs {
			out = append(out, AddrState{Server: s.Name, Addr: a})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no authoritative servers to ask", ErrConfig)
	}
	q := &prober{owner: owner, zone: opts.Zone, tcp: opts.TCP,
		timeout: cmp.Or(opts.QueryTimeout, DefaultPropagationQueryTimeout)}
	var wg sync.WaitGroup
	for i := range out {
		if out[i].Err != nil {
			continue
		}
		wg.Go(func() { out[i] = q.observe(ctx, out[i]) })
	}
	wg.Wait()
	return out, nil
}

// prober asks one address for the TLSA RRset, the SOA serial and, when
// there are records, the zone's DNSKEYs to check their RRSIG.
type prober struct {
	owner   string // FQDN, lower case
	zone    string // PropagationOptions.Zone
	tcp     bool
	timeout time.Duration
}

// poll queries st.Addr and updates st. A query cut short by the end of the
// whole wait does not replace an earlier observation, so that the final
// error reports what the server really served.
func (q *prober) poll(ctx context.Context, st *AddrState, want RRSet, exactTTL bool) {
	prev := *st
	obs := q.observe(ctx, *st)
	if matches(obs, want, exactTTL) {
		obs.Converged = true
	}
	if !obs.Converged && prev.Polls > 0 && ctx.Err() != nil {
		prev.Polls = obs.Polls
		obs = prev // cut short: keep what the server served before
	}
	*st = obs
}

// observe asks st.Addr once and returns what it served (Converged unset).
func (q *prober) observe(ctx context.Context, st AddrState) AddrState {
	obs := AddrState{Server: st.Server, Addr: st.Addr, Polls: st.Polls + 1, At: time.Now()}
	resp, err := q.exchange(ctx, st.Addr, q.owner, dns.TypeTLSA)
	if err != nil {
		obs.Err = err
		return obs
	}
	if err := usable(resp); err != nil {
		obs.Err = err
		return obs
	}
	obs.Rcode = resp.Rcode
	var rrset []dns.RR
	var sigs []*dns.RRSIG
	for _, rr := range resp.Answer {
		h := rr.Header()
		if !strings.EqualFold(h.Name, q.owner) {
			continue
		}
		switch v := rr.(type) {
		case *dns.CNAME:
			obs.CNAME = strings.ToLower(dns.Fqdn(v.Target))
		case *dns.TLSA:
			rec, err := recordFromRR(v)
			if err != nil {
				obs.Err = err
				return obs
			}
			obs.Records = append(obs.Records, rec)
			rrset = append(rrset, v)
			ttl := time.Duration(h.Ttl) * time.Second
			if obs.TTL == 0 || ttl < obs.TTL {
				obs.TTL = ttl
			}
		case *dns.RRSIG:
			if v.TypeCovered == dns.TypeTLSA {
				sigs = append(sigs, v)
			}
		}
	}
	if len(obs.Records) == 0 && obs.CNAME == "" {
		obs.NegTTL = time.Duration(negativeTTL(resp)) * time.Second
	}
	obs.Zone, obs.Serial, obs.SerialOK = q.serial(ctx, st.Addr)
	if len(rrset) > 0 {
		obs.Signed, obs.SigErr = q.checkSigned(ctx, st.Addr, obs.Zone, rrset, sigs)
	}
	return obs
}

// checkSigned learns whether zone is signed at addr (a DNSKEY RRset at its
// apex) and, if so, checks the RRSIGs over rrset against those keys.
func (q *prober) checkSigned(ctx context.Context, addr netip.AddrPort, zone string, rrset []dns.RR, sigs []*dns.RRSIG) (bool, error) {
	if zone == "" {
		// Without the SOA the apex is unknown; a signature names its zone.
		for _, s := range sigs {
			if dns.IsSubDomain(s.SignerName, q.owner) {
				zone = strings.ToLower(dns.Fqdn(s.SignerName))
				break
			}
		}
	}
	if zone == "" {
		return false, errors.New("cannot check DNSSEC: the zone's SOA could not be read")
	}
	resp, err := q.exchange(ctx, addr, zone, dns.TypeDNSKEY)
	if err == nil {
		err = usable(resp)
	}
	if err != nil {
		return false, fmt.Errorf("cannot check DNSSEC: DNSKEY of %s: %w", zone, err)
	}
	var keys []*dns.DNSKEY
	for _, rr := range resp.Answer {
		if k, ok := rr.(*dns.DNSKEY); ok && strings.EqualFold(k.Hdr.Name, zone) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		if len(sigs) > 0 {
			// Signatures without keys: half a signed zone, which
			// validating resolvers that hold a DS reject.
			return false, fmt.Errorf("%w: the TLSA RRset has an RRSIG but %s serves no DNSKEY", ErrRRSIGInvalid, zone)
		}
		return false, nil // an unsigned zone
	}
	return true, verifyRRSIG(rrset, sigs, keys, zone, time.Now())
}

// Errors of the DNSSEC check of a served TLSA RRset (AddrState.SigErr).
var (
	ErrRRSIGMissing = errors.New("RRSIG missing")
	ErrRRSIGExpired = errors.New("RRSIG expired")
	ErrRRSIGInvalid = errors.New("RRSIG invalid")
)

// verifyRRSIG returns nil when one of sigs is valid at now (inception <= now
// <= expiration) and verifies rrset with one of keys (RFC 4035 §5.3). Else
// it says why, preferring "invalid" (a signature in its validity period that
// does not verify) over "expired".
func verifyRRSIG(rrset []dns.RR, sigs []*dns.RRSIG, keys []*dns.DNSKEY, zone string, now time.Time) error {
	if len(sigs) == 0 {
		return fmt.Errorf("%w: zone %s is signed (it serves DNSKEY) but no RRSIG covers the TLSA RRset", ErrRRSIGMissing, zone)
	}
	var expired, invalid []string
	for _, sig := range sigs {
		if !sig.ValidityPeriod(now) {
			if now.Unix() < int64(sig.Inception) {
				expired = append(expired, fmt.Sprintf("key tag %d not valid before %s", sig.KeyTag, sigTime(sig.Inception)))
			} else {
				expired = append(expired, fmt.Sprintf("key tag %d expired at %s", sig.KeyTag, sigTime(sig.Expiration)))
			}
			continue
		}
		why := fmt.Sprintf("key tag %d: no DNSKEY of %s with that tag and algorithm %d", sig.KeyTag, zone, sig.Algorithm)
		for _, k := range keys {
			if k.KeyTag() != sig.KeyTag || k.Algorithm != sig.Algorithm {
				continue
			}
			err := sig.Verify(k, rrset)
			if err == nil {
				return nil
			}
			why = fmt.Sprintf("key tag %d: %v", sig.KeyTag, err)
		}
		invalid = append(invalid, why)
	}
	if len(invalid) > 0 {
		return fmt.Errorf("%w: %s", ErrRRSIGInvalid, strings.Join(invalid, "; "))
	}
	return fmt.Errorf("%w: now is %s, %s", ErrRRSIGExpired, now.UTC().Format(time.RFC3339), strings.Join(expired, "; "))
}

func sigTime(t uint32) string {
	return time.Unix(int64(t), 0).UTC().Format(time.RFC3339)
}

// negativeTTL is min(SOA TTL, SOA MINIMUM) of the SOA in the authority
// section (RFC 2308 §5), 0 without one.
func negativeTTL(resp *dns.Msg) uint32 {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(soa.Hdr.Ttl, soa.Minttl)
		}
	}
	return 0
}

// matches reports whether an observation is exactly the wanted RRset.
func matches(obs AddrState, want RRSet, exactTTL bool) bool {
	if obs.Err != nil || obs.CNAME != "" {
		return false
	}
	if len(want.Records) == 0 {
		return len(obs.Records) == 0
	}
	if !sameRecords(obs.Records, want.Records) || obs.SigErr != nil {
		return false
	}
	return !exactTTL || want.TTL <= 0 || obs.TTL/time.Second == want.TTL/time.Second
}

// sameRecords reports whether a and b hold the same records, compared as
// bytes, ignoring order and duplicates (an RRset is a set).
func sameRecords(a, b []tlsa.Record) bool {
	for _, r := range a {
		if !containsRecord(b, r) {
			return false
		}
	}
	for _, r := range b {
		if !containsRecord(a, r) {
			return false
		}
	}
	return true
}

func recordFromRR(t *dns.TLSA) (tlsa.Record, error) {
	data, err := hex.DecodeString(t.Certificate)
	if err != nil {
		return tlsa.Record{}, fmt.Errorf("undecodable TLSA data %q: %w", t.Certificate, err)
	}
	return tlsa.Record{Usage: tlsa.Usage(t.Usage), Selector: tlsa.Selector(t.Selector),
		MatchingType: tlsa.MatchingType(t.MatchingType), Data: data}, nil
}

// usable checks that resp is an authoritative NOERROR or NXDOMAIN answer.
func usable(resp *dns.Msg) error {
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		return fmt.Errorf("answers %s", rcodeName(resp.Rcode, false))
	}
	if !resp.Authoritative {
		return fmt.Errorf("answers %s without the AA bit: not authoritative for the zone", rcodeName(resp.Rcode, false))
	}
	return nil
}

// serial returns the zone and its SOA serial at addr: q.zone, or the zone
// that holds the owner (answer or authority section of "<owner> SOA").
func (q *prober) serial(ctx context.Context, addr netip.AddrPort) (string, uint32, bool) {
	name := q.owner
	if q.zone != "" {
		name = dns.CanonicalName(q.zone)
	}
	resp, err := q.exchange(ctx, addr, name, dns.TypeSOA)
	if err != nil || usable(resp) != nil {
		return "", 0, false
	}
	for _, sec := range [][]dns.RR{resp.Answer, resp.Ns} {
		for _, rr := range sec {
			if soa, ok := rr.(*dns.SOA); ok && dns.IsSubDomain(soa.Hdr.Name, name) {
				return dns.CanonicalName(soa.Hdr.Name), soa.Serial, true
			}
		}
	}
	return "", 0, false
}

// exchange sends a non-recursive query to addr: over UDP with a TCP retry
// when the answer is truncated or UDP fails, or over TCP only.
func (q *prober) exchange(ctx context.Context, addr netip.AddrPort, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	m.SetEdns0(1232, true) // DO: the RRSIGs come along (RFC 3225)
	one := func(network string) (*dns.Msg, error) {
		ctx, cancel := context.WithTimeout(ctx, q.timeout)
		defer cancel()
		c := &dns.Client{Net: network, UDPSize: 1232, Timeout: q.timeout}
		resp, _, err := c.ExchangeContext(ctx, m, addr.String())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", network, err)
		}
		if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, name) || resp.Question[0].Qtype != qtype {
			return nil, fmt.Errorf("%s: response does not match the question", network)
		}
		return resp, nil
	}
	if q.tcp {
		return one("tcp")
	}
	resp, err := one("udp")
	if err == nil && !resp.Truncated {
		return resp, nil
	}
	tresp, terr := one("tcp")
	if terr != nil && err != nil {
		return nil, fmt.Errorf("%w; %w", err, terr)
	}
	return tresp, terr
}
