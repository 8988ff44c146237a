// Package dnsx performs the DNS lookups tlsactl needs (MX, A/AAAA, TLSA)
// through one configured validating resolver, and reports the DNSSEC status of
// every answer.
//
// # Trust model
//
// dnsx does not validate DNSSEC itself. It sends every query with RD, the DO
// bit (EDNS0, 1232-byte buffer) and the AD bit to the configured resolver and
// trusts that resolver's AD bit. The resolver must therefore be a validating
// resolver on a trusted path (normally on the same host, e.g. Unbound on
// 127.0.0.1).
//
// # Statuses and errors
//
// A lookup either returns records (Status Secure or Insecure) or an error.
// It never returns a nil result with a nil error. Every error is a
// *LookupError that wraps exactly one of the sentinels, so callers branch
// with errors.Is:
//
//   - ErrNXDomain: the name does not exist (NXDOMAIN). Status Secure or
//     Insecure tells whether the denial was authenticated.
//   - ErrNoData: the name exists but has no records of the type (NOERROR with
//     an empty answer, also at the end of a CNAME chain). Status as above.
//   - ErrBogus: the resolver answered SERVFAIL, which a validating resolver
//     does for data that fails validation. An Extended DNS Error (RFC 8914),
//     if the resolver sent one, is in LookupError.EDE. A SERVFAIL whose EDE
//     says the resolver could not reach an authority (Not Ready, No Reachable
//     Authority, Network Error, Not Authoritative, Not Supported) is reported
//     as ErrLookupFailed instead; a SERVFAIL without EDE stays ErrBogus, so a
//     failure is never mistaken for "no records".
//   - ErrLookupFailed: the resolver could not be asked or did not answer
//     usefully: timeout, network error, REFUSED, FORMERR, NOTIMP, other
//     rcodes, a malformed or mismatched response.
//
// Use StatusOf(err) or errors.As(err, &*LookupError) for the details.
//
// # CNAME handling (RFC 7672 §2.2.2)
//
// The resolver chases CNAMEs; dnsx follows the chain inside the answer and
// reports the fully expanded name as Canonical. The AD bit covers the whole
// chain, so a Secure result means the expansion is secure too.
//
// LookupTLSA(port, host) first resolves host (type A) to learn its expansion.
// Only when that expansion is Secure and differs from host, TLSA is looked up
// at _port._tcp.<expanded> first; if that yields no Secure records (NXDOMAIN,
// NODATA, or only insecure records) it falls back to _port._tcp.<host>. A
// Bogus or failed lookup at the expanded name is returned as is, without
// fallback (a fallback could downgrade). When the expansion is not secure,
// not a CNAME, or the A lookup fails, only _port._tcp.<host> is queried. A
// TLSA owner name that is itself a CNAME is followed by the resolver as
// usual.
//
// A Resolver holds no mutable state and is safe for concurrent use.
package dnsx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DefaultTimeout is the per-query timeout used when Resolver.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// ednsBufSize is the advertised EDNS0 UDP buffer size (DNS flag day 2020).
const ednsBufSize = 1232

// maxCNAMEChain bounds the CNAME chain followed inside one answer.
const maxCNAMEChain = 16

// Status is the DNSSEC status of a lookup.
type Status int

const (
	// Secure: the resolver set the AD bit (records or authenticated denial).
	Secure Status = iota + 1
	// Insecure: NOERROR or NXDOMAIN without the AD bit (unsigned data).
	Insecure
	// Bogus: the validating resolver answered SERVFAIL.
	Bogus
	// Failed: the resolver could not answer (timeout, network error,
	// REFUSED, other rcodes).
	Failed
)

func (s Status) String() string {
	switch s {
	case Secure:
		return "secure"
	case Insecure:
		return "insecure"
	case Bogus:
		return "bogus"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// MarshalText makes Status render as its name in JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Sentinel errors; every error returned by a lookup wraps exactly one.
var (
	ErrBogus        = errors.New("DNSSEC validation failed (bogus)")
	ErrLookupFailed = errors.New("lookup failed")
	ErrNXDomain     = errors.New("no such domain (NXDOMAIN)")
	ErrNoData       = errors.New("no records of that type (NODATA)")
)

// LookupError describes a lookup that returned no usable records.
type LookupError struct {
	Name   string // the queried name (FQDN)
	Type   string // the query type, e.g. "TLSA"
	Server string // the resolver's address
	Status Status // Secure/Insecure for NXDOMAIN and NODATA; Bogus; Failed
	Rcode  int    // the response code, -1 when there was no response
	// Canonical is the end of the CNAME chain for NODATA/NXDOMAIN reached
	// through CNAMEs; otherwise equal to Name.
	Canonical string
	// NegTTL is the negative-caching TTL for NXDOMAIN/NODATA: the minimum of
	// the SOA TTL and SOA MINIMUM from the authority section (0 if absent).
	NegTTL uint32
	// EDE is the Extended DNS Error (RFC 8914) text, e.g.
	// "EDE 9 (DNSKEY Missing): no keys have a DS", if the resolver sent one.
	EDE string
	// Kind is the sentinel: ErrNXDomain, ErrNoData, ErrBogus or ErrLookupFailed.
	Kind error
	// Err is the underlying error (network error, context error), if any.
	Err error
}

func (e *LookupError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dnsx: %s %s via %s: %v", e.Name, e.Type, e.Server, e.Kind)
	if e.Rcode >= 0 {
		fmt.Fprintf(&b, " (rcode %s, %s)", rcodeString(e.Rcode), e.Status)
	} else {
		fmt.Fprintf(&b, " (%s)", e.Status)
	}
	if e.EDE != "" {
		fmt.Fprintf(&b, ": %s", e.EDE)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap returns the sentinel and the underlying error.
func (e *LookupError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// StatusOf returns the Status carried by err (a *LookupError), Failed for any
// other non-nil error, and 0 for nil.
func StatusOf(err error) Status {
	if err == nil {
		return 0
	}
	var le *LookupError
	if errors.As(err, &le) {
		return le.Status
	}
	return Failed
}

func rcodeString(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// Resolver sends queries to one validating resolver.
type Resolver struct {
	// Addr is the resolver's "host:port"; a bare host gets port 53.
	Addr string
	// Timeout bounds each query exchange (UDP, and the TCP retry
	// separately); zero means DefaultTimeout. The context bounds the whole
	// call.
	Timeout time.Duration
	// Upstream, when set, answers Exchange instead of a query to Addr: a
	// library caller's own resolver, whose responses the lookups classify
	// as their own.
	Upstream interface {
		Exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error)
	}
}

// SystemResolver returns the first nameserver of /etc/resolv.conf as
// "host:53".
func SystemResolver() (string, error) {
	return systemResolverFrom("/etc/resolv.conf")
}

func systemResolverFrom(path string) (string, error) {
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return "", fmt.Errorf("dnsx: reading %s: %w", path, err)
	}
	if len(cfg.Servers) == 0 {
		return "", fmt.Errorf("dnsx: no nameserver in %s", path)
	}
	return net.JoinHostPort(cfg.Servers[0], "53"), nil
}

func (r *Resolver) addr() string { return ResolverAddr(r.Addr) }

// ResolverAddr returns a resolver address as "host:port": addr itself when
// it has a port, else port 53 (a bare or bracketed IPv6 address included).
// It does not check that host is an address.
func ResolverAddr(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), "53")
}

func (r *Resolver) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultTimeout
}

// answer is a successful (records present) response, already classified.
type answer struct {
	name      string // queried FQDN
	canonical string // end of the CNAME chain
	status    Status // Secure or Insecure
	rrs       []dns.RR
	ttl       uint32 // minimum TTL of rrs
}

// Exchange sends a recursive query for name/qtype with RD, AD and the DO bit
// to the resolver (UDP, then TCP when truncated) and returns the response when
// its rcode is NOERROR or NXDOMAIN; the caller reads the sections. Everything
// else is a *LookupError classified as the lookups classify it: SERVFAIL is
// ErrBogus (ErrLookupFailed when its Extended DNS Error says the resolver
// could not reach an authority); other rcodes, network errors, invalid names
// and mismatched responses are ErrLookupFailed. Use NegativeError for a
// response that lacks the wanted records.
func (r *Resolver) Exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	name = dns.Fqdn(name)
	if r.Upstream != nil {
		return r.Upstream.Exchange(ctx, name, qtype)
	}
	addr := r.addr()
	lerr := func(kind error, st Status, rcode int, err error) *LookupError {
		return &LookupError{Name: name, Type: dns.TypeToString[qtype], Server: addr,
			Status: st, Rcode: rcode, Canonical: name, Kind: kind, Err: err}
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, lerr(ErrLookupFailed, Failed, -1, errors.New("invalid domain name"))
	}

	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.AuthenticatedData = true
	m.SetEdns0(ednsBufSize, true)

	resp, err := r.exchange(ctx, m, "udp", addr)
	if err == nil && resp.Truncated {
		resp, err = r.exchange(ctx, m, "tcp", addr)
	}
	if err != nil {
		if ctxErr := contextErr(ctx); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%v)", ctxErr, err)
		}
		return nil, lerr(ErrLookupFailed, Failed, -1, err)
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, name) ||
		resp.Question[0].Qtype != qtype {
		return nil, lerr(ErrLookupFailed, Failed, resp.Rcode, errors.New("response does not match the question"))
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return resp, nil
	case dns.RcodeServerFailure:
		e := lerr(ErrBogus, Bogus, resp.Rcode, nil)
		code, text, ok := extendedError(resp)
		if ok {
			e.EDE = text
			if resolverFailureEDE(code) {
				e.Kind, e.Status = ErrLookupFailed, Failed
			}
		}
		return nil, e
	default:
		return nil, lerr(ErrLookupFailed, Failed, resp.Rcode, nil)
	}
}

// NegativeError describes a NOERROR or NXDOMAIN response (from Exchange)
// that lacks the wanted records: ErrNXDomain or ErrNoData, Secure when the
// resolver set the AD bit, with the negative-caching TTL and any EDE.
func (r *Resolver) NegativeError(name string, qtype uint16, resp *dns.Msg) *LookupError {
	name = dns.Fqdn(name)
	return r.negative(name, name, qtype, resp)
}

func (r *Resolver) negative(name, canonical string, qtype uint16, resp *dns.Msg) *LookupError {
	kind := ErrNoData
	if resp.Rcode == dns.RcodeNameError {
		kind = ErrNXDomain
	}
	e := &LookupError{Name: name, Type: dns.TypeToString[qtype], Server: r.addr(), Status: adStatus(resp),
		Rcode: resp.Rcode, Canonical: canonical, Kind: kind, NegTTL: negativeTTL(resp)}
	if _, text, ok := extendedError(resp); ok {
		e.EDE = text
	}
	return e
}

func adStatus(resp *dns.Msg) Status {
	if resp.AuthenticatedData {
		return Secure
	}
	return Insecure
}

// query asks the resolver for name/qtype and classifies the response. It
// returns records of qtype owned by the end of the CNAME chain, or a
// *LookupError.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*answer, error) {
	name = dns.Fqdn(name)
	resp, err := r.Exchange(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	canonical, rrs := follow(name, qtype, resp.Answer)
	if len(rrs) > 0 && resp.Rcode == dns.RcodeSuccess {
		ttl := rrs[0].Header().Ttl
		for _, rr := range rrs[1:] {
			ttl = min(ttl, rr.Header().Ttl)
		}
		return &answer{name: name, canonical: canonical, status: adStatus(resp), rrs: rrs, ttl: ttl}, nil
	}
	return nil, r.negative(name, canonical, qtype, resp)
}

// contextErr is ctx.Err(), also reporting DeadlineExceeded when the deadline
// has passed but the context's timer has not fired yet (the connection's
// deadline, set from the context, can expire first).
func contextErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, network, addr string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	c := &dns.Client{Net: network, UDPSize: ednsBufSize, Timeout: r.timeout()}
	resp, _, err := c.ExchangeContext(ctx, m, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", network, err)
	}
	return resp, nil
}

// follow walks the CNAME chain starting at name inside the answer section and
// returns the final name and the records of qtype owned by it.
func follow(name string, qtype uint16, ans []dns.RR) (string, []dns.RR) {
	cur := name
	seen := map[string]bool{}
	for i := 0; i < maxCNAMEChain && qtype != dns.TypeCNAME; i++ {
		seen[strings.ToLower(cur)] = true
		next := ""
		for _, rr := range ans {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, cur) {
				next = c.Target
				break
			}
		}
		if next == "" || seen[strings.ToLower(next)] {
			break
		}
		cur = next
	}
	var out []dns.RR
	for _, rr := range ans {
		h := rr.Header()
		if h.Rrtype == qtype && h.Class == dns.ClassINET && strings.EqualFold(h.Name, cur) {
			out = append(out, rr)
		}
	}
	return strings.ToLower(cur), out
}

func negativeTTL(resp *dns.Msg) uint32 {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(soa.Hdr.Ttl, soa.Minttl)
		}
	}
	return 0
}

func extendedError(resp *dns.Msg) (uint16, string, bool) {
	opt := resp.IsEdns0()
	if opt == nil {
		return 0, "", false
	}
	for _, o := range opt.Option {
		if ede, ok := o.(*dns.EDNS0_EDE); ok {
			text := fmt.Sprintf("EDE %d", ede.InfoCode)
			if s, ok := dns.ExtendedErrorCodeToString[ede.InfoCode]; ok {
				text += " (" + s + ")"
			}
			if ede.ExtraText != "" {
				text += ": " + ede.ExtraText
			}
			return ede.InfoCode, text, true
		}
	}
	return 0, "", false
}

// resolverFailureEDE reports EDE codes that mean "the resolver could not get
// an answer" rather than "the answer failed validation".
func resolverFailureEDE(code uint16) bool {
	switch code {
	case dns.ExtendedErrorCodeNotReady,
		dns.ExtendedErrorCodeNotAuthoritative,
		dns.ExtendedErrorCodeNotSupported,
		dns.ExtendedErrorCodeNoReachableAuthority,
		dns.ExtendedErrorCodeNetworkError:
		return true
	}
	return false
}
