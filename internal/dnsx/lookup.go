package dnsx

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

	"github.com/miekg/dns"
)

// Names in results are lower-case FQDNs with the trailing dot
// ("mail.example.nl."); trim the dot for TLS SNI or display.

// MX is one mail exchanger.
type MX struct {
	Host       string // FQDN
	Preference uint16
}

// MXResult is the MX RRset of a domain.
type MXResult struct {
	Domain    string // the queried domain (FQDN)
	Canonical string // the domain after CNAME expansion
	Status    Status // Secure or Insecure
	TTL       uint32 // minimum TTL of the RRset
	// Hosts are sorted by preference, ties by host name (deterministic,
	// rather than the random order RFC 5321 suggests for delivery).
	// Null MX entries (".") are never included.
	Hosts []MX
	// Null is true for an RFC 7505 null MX (the domain accepts no mail):
	// the RRset is the single record "0 .". Hosts is then empty.
	Null bool
}

// LookupMX returns the MX records of domain. A domain without MX records
// yields ErrNoData (the caller decides about the RFC 5321 implicit MX); a
// null MX is a result with Null set, not an error.
func (r *Resolver) LookupMX(ctx context.Context, domain string) (*MXResult, error) {
	a, err := r.query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	res := &MXResult{Domain: a.name, Canonical: a.canonical, Status: a.status, TTL: a.ttl}
	nulls := 0
	for _, rr := range a.rrs {
		mx := rr.(*dns.MX)
		if mx.Mx == "." {
			nulls++
			continue
		}
		res.Hosts = append(res.Hosts, MX{Host: strings.ToLower(mx.Mx), Preference: mx.Preference})
	}
	res.Null = nulls > 0 && len(res.Hosts) == 0
	slices.SortFunc(res.Hosts, func(x, y MX) int {
		return cmp.Or(cmp.Compare(x.Preference, y.Preference), cmp.Compare(x.Host, y.Host))
	})
	res.Hosts = slices.Compact(res.Hosts)
	return res, nil
}

// Family is the outcome of one address family's lookup in LookupAddrs.
type Family struct {
	Status Status
	TTL    uint32 // minimum TTL when there were records
	Err    error  // nil when there were records; else a *LookupError
}

// AddrsResult holds the A and AAAA lookups of one host.
type AddrsResult struct {
	Host string // the queried host (FQDN)
	// Canonical is the fully CNAME-expanded host name (from the A answer, or
	// the AAAA answer when A had nothing to say). It is trustworthy as a TLSA
	// base domain only when the family that produced it is Secure.
	Canonical string
	// CanonicalSecure reports whether Canonical came from a Secure answer.
	CanonicalSecure bool
	Addrs           []netip.Addr // A addresses first, then AAAA
	// Status combines both families: Bogus or Failed if either is, Secure
	// only if both are Secure (records or authenticated denial), else
	// Insecure.
	Status  Status
	A, AAAA Family
}

// LookupAddrs looks up A and AAAA of host concurrently.
//
// Unlike the other lookups, the result is always non-nil and reports both
// families. The error is nil only if there is at least one address and
// neither family is Bogus or Failed. Otherwise it is the Bogus error of
// either family, else a Failed one, else (no addresses) ErrNXDomain or
// ErrNoData.
func (r *Resolver) LookupAddrs(ctx context.Context, host string) (*AddrsResult, error) {
	res := &AddrsResult{Host: dns.Fqdn(strings.ToLower(host))}
	var (
		wg       sync.WaitGroup
		ans      [2]*answer
		errs     [2]error
		families = [2]uint16{dns.TypeA, dns.TypeAAAA}
	)
	for i, t := range families {
		wg.Go(func() { ans[i], errs[i] = r.query(ctx, host, t) })
	}
	wg.Wait()

	fams := [2]*Family{&res.A, &res.AAAA}
	canon := [2]string{}
	canonStatus := [2]Status{}
	for i := range families {
		f := fams[i]
		if errs[i] != nil {
			f.Status, f.Err = StatusOf(errs[i]), errs[i]
			var le *LookupError
			if errors.As(errs[i], &le) && (le.Status == Secure || le.Status == Insecure) {
				canon[i], canonStatus[i] = le.Canonical, le.Status
			}
			continue
		}
		a := ans[i]
		f.Status, f.TTL = a.status, a.ttl
		canon[i], canonStatus[i] = a.canonical, a.status
		for _, rr := range a.rrs {
			var ip netip.Addr
			switch v := rr.(type) {
			case *dns.A:
				ip, _ = netip.AddrFromSlice(v.A.To4())
			case *dns.AAAA:
				ip, _ = netip.AddrFromSlice(v.AAAA.To16())
			}
			if ip.IsValid() {
				res.Addrs = append(res.Addrs, ip)
			}
		}
	}
	switch {
	case canon[0] != "":
		res.Canonical, res.CanonicalSecure = canon[0], canonStatus[0] == Secure
	case canon[1] != "":
		res.Canonical, res.CanonicalSecure = canon[1], canonStatus[1] == Secure
	default:
		res.Canonical = res.Host
	}

	switch {
	case res.A.Status == Bogus || res.AAAA.Status == Bogus:
		res.Status = Bogus
	case res.A.Status == Failed || res.AAAA.Status == Failed:
		res.Status = Failed
	case res.A.Status == Secure && res.AAAA.Status == Secure:
		res.Status = Secure
	default:
		res.Status = Insecure
	}

	for _, want := range []Status{Bogus, Failed} {
		for _, f := range fams {
			if f.Status == want {
				return res, f.Err
			}
		}
	}
	if len(res.Addrs) == 0 {
		if errors.Is(res.A.Err, ErrNXDomain) || res.AAAA.Err == nil {
			return res, res.A.Err
		}
		return res, res.AAAA.Err
	}
	return res, nil
}

// TLSARecord is one TLSA record's RDATA.
type TLSARecord struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte // certificate association data
}

// String returns the RDATA in presentation form, "3 1 1 <lower-case hex>".
func (t TLSARecord) String() string {
	return fmt.Sprintf("%d %d %d %x", t.Usage, t.Selector, t.MatchingType, t.Data)
}

// TLSAResult is a TLSA RRset.
type TLSAResult struct {
	Name       string // owner name where the RRset was found, "_25._tcp.<base>."
	BaseDomain string // the TLSA base domain used (expanded or original host)
	Canonical  string // Name after CNAME expansion (the RRset's real owner)
	Records    []TLSARecord
	TTL        uint32 // minimum TTL of the RRset
	Status     Status // Secure or Insecure
	// Tried lists the owner names queried, in order (one or two).
	Tried []string
}

// TLSAName returns the TLSA owner name _<port>._tcp.<host>. (FQDN).
func TLSAName(port uint16, host string) string {
	return fmt.Sprintf("_%d._tcp.%s", port, dns.Fqdn(strings.ToLower(host)))
}

// LookupTLSA returns the TLSA RRset for port/TCP at host, CNAME-aware as
// described in the package documentation. Errors are those of the last name
// tried, except that Bogus/Failed at the expanded name is returned at once.
func (r *Resolver) LookupTLSA(ctx context.Context, port uint16, host string) (*TLSAResult, error) {
	host = dns.Fqdn(strings.ToLower(host))
	bases := []string{host}
	if exp := r.secureExpansion(ctx, host); exp != "" && exp != host {
		bases = []string{exp, host}
	}
	var (
		tried   []string
		lastErr error
		prev    *TLSAResult // insecure records at the expanded name
	)
	for _, base := range bases {
		name := TLSAName(port, base)
		tried = append(tried, name)
		res, err := r.lookupTLSAAt(ctx, name)
		if err == nil {
			res.BaseDomain = base
			if res.Status == Secure {
				res.Tried = tried
				return res, nil
			}
			prev, lastErr = res, nil
			continue // insecure records: try the original name, if any left
		}
		if !errors.Is(err, ErrNoData) && !errors.Is(err, ErrNXDomain) {
			return nil, err // bogus or failed: never fall back
		}
		lastErr = err
	}
	if prev != nil {
		prev.Tried = tried
		return prev, nil
	}
	return nil, lastErr
}

// secureExpansion returns host's CNAME expansion if the resolver validated
// it, else "".
func (r *Resolver) secureExpansion(ctx context.Context, host string) string {
	a, err := r.query(ctx, host, dns.TypeA)
	if err == nil {
		if a.status == Secure {
			return a.canonical
		}
		return ""
	}
	var le *LookupError
	if errors.As(err, &le) && le.Status == Secure {
		return le.Canonical
	}
	return ""
}

func (r *Resolver) lookupTLSAAt(ctx context.Context, name string) (*TLSAResult, error) {
	a, err := r.query(ctx, name, dns.TypeTLSA)
	if err != nil {
		return nil, err
	}
	res := &TLSAResult{Name: a.name, Canonical: a.canonical, TTL: a.ttl, Status: a.status}
	for _, rr := range a.rrs {
		t := rr.(*dns.TLSA)
		data, err := hex.DecodeString(t.Certificate)
		if err != nil {
			return nil, &LookupError{Name: a.name, Type: "TLSA", Server: r.addr(), Status: Failed,
				Rcode: dns.RcodeSuccess, Canonical: a.canonical, Kind: ErrLookupFailed,
				Err: fmt.Errorf("undecodable TLSA data %q: %w", t.Certificate, err)}
		}
		res.Records = append(res.Records, TLSARecord{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data})
	}
	return res, nil
}
