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
	// Converged: the address served exactly the expected RRset (and TTL);
	// At is when that was first seen.
	Converged bool
	At        time.Time
	Polls     int // queries of the TLSA RRset sent to this address

	// The last answer, when there was one (Err == nil).
	Rcode   int           // dns.RcodeSuccess or dns.RcodeNameError for a usable answer
	Records []tlsa.Record // TLSA RDATA at the owner, in the server's order
	TTL     time.Duration // TTL of the TLSA RRset (0 when there is none)
	CNAME   string        // target, when the owner is a CNAME at this server
	// Serial is the zone's SOA serial at this address, queried right after
	// the TLSA RRset (so the data seen is at most that new); SerialOK
	// tells whether it could be read.
	Serial   uint32
	SerialOK bool

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
			return fmt.Sprintf("serves the expected records with TTL %s%s, want TTL %s", a.TTL, serial, want.TTL)
		}
		what = fmt.Sprintf("serves %s (%s)", plural(len(a.Records), "record"), abbrevRecords(a.Records))
	}
	if len(want.Records) == 0 {
		return what + serial + ", want none"
	}
	return fmt.Sprintf("%s%s, want %s (%s)", what, serial, plural(len(want.Records), "record"), abbrevRecords(want.Records))
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
// without recursion, which must come back authoritative) until each one
// serves exactly the TLSA RRset want: the same records, compared as bytes
// regardless of order, and the TTL want.TTL when it is positive. An empty
// want.Records means "no TLSA at want.Owner": NXDOMAIN or NODATA. An address
// that has converged is not asked again.
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
	q := &prober{want: want, zone: opts.Zone, tcp: opts.TCP, timeout: qtimeout}

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
			wg.Go(func() { q.poll(ctx, &p.Addrs[i]) })
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

// prober asks one address for the TLSA RRset and the SOA serial.
type prober struct {
	want    RRSet
	zone    string
	tcp     bool
	timeout time.Duration
}

// poll queries st.Addr and updates st. A query cut short by the end of the
// whole wait does not replace an earlier observation, so that the final
// error reports what the server really served.
func (q *prober) poll(ctx context.Context, st *AddrState) {
	resp, err := q.exchange(ctx, st.Addr, q.want.Owner, dns.TypeTLSA)
	prev := *st
	obs := AddrState{Server: st.Server, Addr: st.Addr, Polls: st.Polls + 1}
	defer func() {
		if !obs.Converged && prev.Polls > 0 && ctx.Err() != nil {
			prev.Polls = obs.Polls
			obs = prev // cut short: keep what the server served before
		}
		*st = obs
	}()
	if err != nil {
		obs.Err = err
		return
	}
	if err := usable(resp); err != nil {
		obs.Err = err
		return
	}
	obs.Rcode = resp.Rcode
	for _, rr := range resp.Answer {
		h := rr.Header()
		if !strings.EqualFold(h.Name, q.want.Owner) {
			continue
		}
		switch v := rr.(type) {
		case *dns.CNAME:
			obs.CNAME = strings.ToLower(v.Target)
		case *dns.TLSA:
			rec, err := recordFromRR(v)
			if err != nil {
				obs.Err = err
				return
			}
			obs.Records = append(obs.Records, rec)
			ttl := time.Duration(h.Ttl) * time.Second
			if obs.TTL == 0 || ttl < obs.TTL {
				obs.TTL = ttl
			}
		}
	}
	obs.Serial, obs.SerialOK = q.serial(ctx, st.Addr)
	if matches(obs, q.want) {
		obs.Converged, obs.At = true, time.Now()
	}
}

// matches reports whether an observation is exactly the wanted RRset.
func matches(obs AddrState, want RRSet) bool {
	if obs.Err != nil || obs.CNAME != "" {
		return false
	}
	if len(want.Records) == 0 {
		return len(obs.Records) == 0
	}
	if !sameRecords(obs.Records, want.Records) {
		return false
	}
	return want.TTL <= 0 || obs.TTL/time.Second == want.TTL/time.Second
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

// serial returns the SOA serial at addr: of q.zone, or of the zone that
// holds the owner (answer or authority section of "<owner> SOA").
func (q *prober) serial(ctx context.Context, addr netip.AddrPort) (uint32, bool) {
	name := q.want.Owner
	if q.zone != "" {
		name = dns.Fqdn(q.zone)
	}
	resp, err := q.exchange(ctx, addr, name, dns.TypeSOA)
	if err != nil || usable(resp) != nil {
		return 0, false
	}
	for _, sec := range [][]dns.RR{resp.Answer, resp.Ns} {
		for _, rr := range sec {
			if soa, ok := rr.(*dns.SOA); ok && dns.IsSubDomain(soa.Hdr.Name, name) {
				return soa.Serial, true
			}
		}
	}
	return 0, false
}

// exchange sends a non-recursive query to addr: over UDP with a TCP retry
// when the answer is truncated or UDP fails, or over TCP only.
func (q *prober) exchange(ctx context.Context, addr netip.AddrPort, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	m.SetEdns0(1232, false)
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
