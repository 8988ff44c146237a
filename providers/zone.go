package providers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/dnsx"
)

// Resolver is the DNS resolver FindZone, AuthServers and ServersFor ask. It
// should be a validating recursive resolver: Exchange sends a recursive
// query for name (an FQDN) and type qtype (a dns.Type* value) and returns the
// response when its rcode is NOERROR or NXDOMAIN, so the caller reads the
// sections; any other outcome (SERVFAIL, a network error, a response that
// does not match the question) is an error. A SERVFAIL from a validating
// resolver means the answer was bogus and must be returned as an error,
// never as an empty answer. Negative answers and address lookups are derived
// from Exchange's responses by tlsactl's own DNS code (its errors wrap the
// dnsx sentinels whatever the Resolver). Exchange is called from several
// goroutines at once (AuthServers looks up every server's addresses in
// parallel): it must be safe for concurrent use.
type Resolver interface {
	Exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error)
}

// resolverOf returns tlsactl's resolver for r: r itself when it is one (a
// nil *dnsx.Resolver stays nil), else one that sends its queries through r.
func resolverOf(r Resolver) *dnsx.Resolver {
	switch v := r.(type) {
	case nil:
		return nil
	case *dnsx.Resolver:
		return v
	}
	return &dnsx.Resolver{Upstream: r}
}

// AuthServer is one authoritative server of a zone: its NS name and the
// addresses (with the DNS port) it is queried at.
type AuthServer struct {
	Name  string           // NS target (FQDN), or the address as given to ExplicitServers
	Addrs []netip.AddrPort // A addresses first, then AAAA
}

func (s AuthServer) String() string {
	addrs := make([]string, len(s.Addrs))
	for i, a := range s.Addrs {
		addrs[i] = a.String()
	}
	return fmt.Sprintf("%s [%s]", s.Name, strings.Join(addrs, " "))
}

// FindZone returns the zone (apex FQDN, lower case) that holds name, asking
// the validating resolver r for SOA records: at name itself (an apex answers
// with its SOA), else the SOA in the authority section of the NODATA or
// NXDOMAIN answer names the zone; without one, it walks up one label at a
// time. Failures are *dnsx.LookupError values wrapping the dnsx sentinels: a
// bogus (ErrBogus) or failed (ErrLookupFailed) lookup is returned as such,
// never taken for "no zone here". When no zone answers up to the root, the
// error wraps ErrNXDomain or ErrNoData.
func FindZone(ctx context.Context, resolver Resolver, name string) (string, error) {
	r := resolverOf(resolver)
	name = dns.Fqdn(strings.ToLower(name))
	var last error
	for cur := name; ; {
		resp, err := r.Exchange(ctx, cur, dns.TypeSOA)
		if err != nil {
			return "", err
		}
		if zone, ok := zoneFromSOAResponse(cur, resp); ok {
			return zone, nil
		}
		last = r.NegativeError(cur, dns.TypeSOA, resp)
		if cur == "." {
			return "", fmt.Errorf("no zone found for %s: %w", name, last)
		}
		cur = parent(cur)
	}
}

// zoneFromSOAResponse reads the zone of qname from a NOERROR/NXDOMAIN answer
// to "qname SOA": the SOA owned by qname in the answer (qname is an apex), or
// the SOA in the authority section of a negative answer when qname is inside
// it. A CNAME at qname makes the authority section describe the CNAME
// target's zone, so it is not used then.
func zoneFromSOAResponse(qname string, resp *dns.Msg) (string, bool) {
	for _, rr := range resp.Answer {
		h := rr.Header()
		if !strings.EqualFold(h.Name, qname) {
			continue
		}
		switch h.Rrtype {
		case dns.TypeSOA:
			if resp.Rcode == dns.RcodeSuccess {
				return strings.ToLower(qname), true
			}
		case dns.TypeCNAME, dns.TypeDNAME:
			return "", false
		}
	}
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype == dns.TypeCNAME || rr.Header().Rrtype == dns.TypeDNAME {
			return "", false // a chain that leaves qname: its SOA is someone else's
		}
	}
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok && dns.IsSubDomain(soa.Hdr.Name, qname) {
			return strings.ToLower(dns.Fqdn(soa.Hdr.Name)), true
		}
	}
	return "", false
}

func parent(name string) string {
	i, end := dns.NextLabel(name, 0)
	if end {
		return "."
	}
	return name[i:]
}

// AuthServers returns the authoritative servers of zone: the NS RRset that
// the resolver r returns for zone, and the A and AAAA addresses of every NS
// name, with port (0 means 53). Servers are sorted by name. An NS name
// without any address, or whose lookup is bogus or failed, is an error: a
// propagation check that skipped it would be incomplete. Errors wrap the
// dnsx sentinels.
func AuthServers(ctx context.Context, resolver Resolver, zone string, port int) ([]AuthServer, error) {
	r := resolverOf(resolver)
	if port == 0 {
		port = 53
	}
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("providers: invalid port %d", port)
	}
	zone = dns.Fqdn(strings.ToLower(zone))
	resp, err := r.Exchange(ctx, zone, dns.TypeNS)
	if err != nil {
		return nil, fmt.Errorf("NS of zone %s: %w", zone, err)
	}
	var names []string
	for _, rr := range resp.Answer {
		if ns, ok := rr.(*dns.NS); ok && strings.EqualFold(ns.Hdr.Name, zone) {
			names = append(names, strings.ToLower(dns.Fqdn(ns.Ns)))
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("NS of zone %s: %w", zone, r.NegativeError(zone, dns.TypeNS, resp))
	}
	slices.Sort(names)
	names = slices.Compact(names)

	type result struct {
		res *dnsx.AddrsResult
		err error
	}
	results := make([]result, len(names))
	done := make(chan struct{})
	for i, n := range names {
		go func() {
			defer func() { done <- struct{}{} }()
			res, err := r.LookupAddrs(ctx, n)
			results[i] = result{res, err}
		}()
	}
	for range names {
		<-done
	}
	servers := make([]AuthServer, 0, len(names))
	var errs []error
	for i, n := range names {
		if results[i].err != nil {
			errs = append(errs, fmt.Errorf("address of name server %s of zone %s: %w", n, zone, results[i].err))
			continue
		}
		s := AuthServer{Name: n}
		for _, a := range results[i].res.Addrs {
			ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
			if !slices.Contains(s.Addrs, ap) {
				s.Addrs = append(s.Addrs, ap)
			}
		}
		servers = append(servers, s)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return servers, nil
}

// ExplicitServers turns "ip:port" strings (a bare IP gets port 53, IPv6 in
// brackets when a port is given) into AuthServers, one per entry, named by
// the entry as given: a known list of servers to check propagation on, such
// as hidden primaries. ServersFor adds them to the zone's NS set, which
// senders ask and which a check must therefore never skip.
func ExplicitServers(addrs []string) ([]AuthServer, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: no servers given", ErrConfig)
	}
	out := make([]AuthServer, 0, len(addrs))
	for _, s := range addrs {
		s = strings.TrimSpace(s)
		ap, err := parseAddrPort(s)
		if err != nil {
			return nil, fmt.Errorf("%w: server %q: %v", ErrConfig, s, err)
		}
		out = append(out, AuthServer{Name: s, Addrs: []netip.AddrPort{ap}})
	}
	return out, nil
}

func parseAddrPort(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, errors.New("want IP or IP:PORT")
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address (host names are not resolved here)", host)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", port)
	}
	return netip.AddrPort{}, errors.New("want IP or IP:PORT")
}

// ServersFor returns the authoritative servers to ask about zone: its NS
// set as the validating resolver r returns it (AuthServers, port port; 0
// means 53), then every "ip:port" in extra (ExplicitServers), such as a
// hidden primary. The extra servers add to the NS set and never replace
// it: senders ask the NS set, so a check that skipped it would prove
// nothing about what they see. An address is asked once: a later entry
// with an address already listed loses that address, and disappears when
// none is left. With a nil r only extra is used. Errors are those of
// AuthServers and ExplicitServers.
func ServersFor(ctx context.Context, resolver Resolver, zone string, port int, extra []string) ([]AuthServer, error) {
	r := resolverOf(resolver)
	var list []AuthServer
	if r != nil {
		ns, err := AuthServers(ctx, r, zone, port)
		if err != nil {
			return nil, err
		}
		list = ns
	}
	if len(extra) > 0 {
		ex, err := ExplicitServers(extra)
		if err != nil {
			return nil, err
		}
		list = append(list, ex...)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: no resolver to find the name servers of %s and no servers given", ErrConfig, zone)
	}
	seen := map[netip.AddrPort]bool{}
	out := list[:0]
	for _, s := range list {
		var addrs []netip.AddrPort
		for _, a := range s.Addrs {
			if !seen[a] {
				seen[a] = true
				addrs = append(addrs, a)
			}
		}
		if len(addrs) > 0 {
			s.Addrs = addrs
			out = append(out, s)
		}
	}
	return out, nil
}
