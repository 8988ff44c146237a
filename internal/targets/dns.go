// Package targets connects the rollover engine to the real world: a TLSA
// RRset changed through a libdns provider and confirmed at every
// authoritative server (rollover.DNS), built from tlsactl's configuration.
package targets

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/providers"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

// ProviderDNS is rollover.DNS for the TLSA owner name senders query for one
// host: the owner _<port>._tcp.<host>. after CNAMEs (RFC 7671 §7), read and
// written through a provider in the zone that holds it. Build it with
// Resolve; it holds no mutable state and is safe for concurrent use.
type ProviderDNS struct {
	cfg        Config
	host       string   // FQDN, lower case
	configured string   // _<port>._tcp.<host>.
	owner      string   // the effective owner: configured after CNAMEs
	chain      []string // CNAME targets from configured to owner, in order
	zone       string   // the zone holding owner
	servers    []providers.AuthServer
}

var (
	_ rollover.BatchDNS            = (*ProviderDNS)(nil)
	_ rollover.ConditionalBatchDNS = (*ProviderDNS)(nil)
)

// Config is what Resolve needs to know about one host.
type Config struct {
	Provider providers.Provider
	// ProviderID names the provider instance, e.g. the configuration's
	// provider name. DNSes with the same ProviderID and zone can be
	// batched (BatchKey, SetBatch); "" means "not batchable with others".
	ProviderID string
	// Zone holding _<port>._tcp.<Host>; "" finds it with providers.FindZone.
	// A CNAME target's zone is always found that way.
	Zone string
	Host string // the MX host name
	Port int    // SMTP port; 0 means 25
	// Resolver is the validating resolver (required): CNAMEs, zones, NS
	// sets and the resolver's view in Observe come from it.
	Resolver *dnsx.Resolver
	// AuthServers ("ip:port") are asked besides the NS set of the
	// configured zone (providers.ServersFor), e.g. a hidden primary. They
	// are not used for a CNAME target in another zone. AuthPort is the
	// port of the NS set's servers (0 means 53).
	AuthServers []string
	AuthPort    int
	// Propagation tunes WaitServed (and the query timeout of every
	// authoritative query).
	Propagation providers.PropagationOptions
}

// Sentinel errors of Resolve.
var (
	// ErrCNAMEHost: the configured MX host name is a CNAME; senders look up
	// TLSA at the name it expands to first (RFC 7672 §2.2.3).
	ErrCNAMEHost = errors.New("the MX host name is a CNAME")
	// ErrCNAMEOwner: the TLSA owner is a CNAME into a zone the provider
	// cannot read or change.
	ErrCNAMEOwner = errors.New("the TLSA owner is a CNAME into a zone the provider cannot change")
)

// maxCNAMEHops bounds the CNAME chain followed from the configured owner.
const maxCNAMEHops = 8

// Resolve finds where the TLSA RRset of cfg.Host lives as senders see it
// and returns a ProviderDNS for it:
//
//  1. An MX host name that is a CNAME is refused (ErrCNAMEHost): senders
//     query TLSA at the expanded name first (RFC 7672 §2.2.3), so records
//     at the configured name may never be used.
//  2. A CNAME at _<port>._tcp.<host>. is followed, up to 8 hops (RFC 7671
//     §7): the validating resolver's answer gives the chain, and the
//     authoritative servers of each name are asked too, so that a CNAME the
//     resolver does not know of yet (a cached negative answer, a bogus
//     target) is never read as "no TLSA". The end of the chain is the
//     effective owner; its zone is found with providers.FindZone, and the
//     provider must be able to read it (else ErrCNAMEOwner).
//  3. The authoritative servers asked are the effective zone's NS set plus
//     cfg.AuthServers (when that zone is the configured one), each address
//     once (providers.ServersFor).
func Resolve(ctx context.Context, cfg Config) (*ProviderDNS, error) {
	if cfg.Provider == nil {
		return nil, errors.New("targets: no DNS provider")
	}
	if cfg.Resolver == nil {
		return nil, errors.New("targets: no resolver")
	}
	port := cmp.Or(cfg.Port, 25)
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("targets: invalid port %d", cfg.Port)
	}
	host := dns.CanonicalName(strings.TrimSpace(cfg.Host))
	if _, ok := dns.IsDomainName(host); !ok || host == "." {
		return nil, fmt.Errorf("targets: invalid host name %q", cfg.Host)
	}
	d := &ProviderDNS{cfg: cfg, host: host, configured: dnsx.TLSAName(uint16(port), host)}

	// 1. The host name itself.
	addrs, err := cfg.Resolver.LookupAddrs(ctx, host)
	if addrs != nil && addrs.Canonical != "" && addrs.Canonical != host {
		h, c := bare(host), bare(addrs.Canonical)
		return nil, &cnameError{kind: ErrCNAMEHost, msg: fmt.Sprintf(
			"%s is a CNAME for %s: senders look up _%d._tcp.%s first (RFC 7672 §2.2.3); configure [[host]] name = %q",
			h, c, port, c, c)}
	}
	if err != nil && !errors.Is(err, dnsx.ErrNoData) && !errors.Is(err, dnsx.ErrNXDomain) {
		return nil, fmt.Errorf("looking up %s (to tell whether it is a CNAME): %w", bare(host), err)
	}

	// 2. CNAMEs at the owner.
	configuredZone := ""
	if cfg.Zone != "" {
		configuredZone = dns.CanonicalName(cfg.Zone)
		if !dns.IsSubDomain(configuredZone, d.configured) {
			return nil, fmt.Errorf("targets: %s is not in the configured zone %s", d.configured, configuredZone)
		}
	}
	cur := d.configured
	seen := map[string]bool{cur: true}
	follow := func(next string) error {
		next = dns.CanonicalName(next)
		if seen[next] {
			return fmt.Errorf("the CNAME chain from %s loops at %s", bare(d.configured), bare(next))
		}
		if len(d.chain) == maxCNAMEHops {
			return fmt.Errorf("the CNAME chain from %s is longer than %d names", bare(d.configured), maxCNAMEHops)
		}
		seen[next] = true
		d.chain = append(d.chain, next)
		cur = next
		return nil
	}
	for {
		for _, next := range resolverChain(ctx, cfg.Resolver, cur) {
			if err := follow(next); err != nil {
				return nil, err
			}
		}
		zone := configuredZone
		var zerr error
		if cur != d.configured || zone == "" {
			zone, zerr = providers.FindZone(ctx, cfg.Resolver, cur)
		}
		if zerr != nil {
			// A CNAME into a broken zone (bogus, unreachable, a loop)
			// fails the SOA lookup at the name; a CNAME is never at an
			// apex, so its own zone is its parent's. Only a CNAME that
			// zone's servers serve is taken from there.
			pz, err := providers.FindZone(ctx, cfg.Resolver, parent(cur))
			if err != nil {
				return nil, fmt.Errorf("finding the zone of %s: %w (set zone in the configuration)", bare(cur), zerr)
			}
			if cur == d.configured {
				configuredZone = pz
			}
			next, _, err := d.authCNAME(ctx, cur, pz, configuredZone)
			if err != nil || next == "" {
				return nil, fmt.Errorf("finding the zone of %s: %w (set zone in the configuration)", bare(cur), zerr)
			}
			if err := follow(next); err != nil {
				return nil, err
			}
			continue
		}
		if cur == d.configured {
			configuredZone = zone
		}
		next, servers, err := d.authCNAME(ctx, cur, zone, configuredZone)
		if err != nil {
			return nil, err
		}
		if next == "" {
			d.owner, d.zone, d.servers = cur, zone, servers
			break
		}
		if err := follow(next); err != nil {
			return nil, err
		}
	}

	if d.owner != d.configured {
		if _, _, err := providers.GetOwner(ctx, cfg.Provider, d.zone, d.owner); err != nil {
			via := ""
			if len(d.chain) > 1 {
				via = " (via " + strings.Join(bareAll(d.chain[:len(d.chain)-1]), ", ") + ")"
			}
			return nil, &cnameError{kind: ErrCNAMEOwner, err: err, msg: fmt.Sprintf(
				"%s is a CNAME for %s%s, in zone %s, which the provider cannot change: %v; publish the TLSA records at %s yourself or give tlsactl a provider for that zone",
				bare(d.configured), bare(d.owner), via, d.zone, strings.Join(strings.Fields(err.Error()), " "), bare(d.owner))}
		}
	}
	return d, nil
}

// authCNAME asks the authoritative servers of zone whether name is a CNAME
// there and returns the target ("" when none says so) and the servers.
// Any server that serves a CNAME decides: a change under way must not be
// read as an empty RRset. cfg.AuthServers are asked when zone is the
// configured one (configuredZone, found here when still unknown).
func (d *ProviderDNS) authCNAME(ctx context.Context, name, zone, configuredZone string) (string, []providers.AuthServer, error) {
	var extra []string
	if len(d.cfg.AuthServers) > 0 {
		if configuredZone == "" {
			var err error
			if configuredZone, err = providers.FindZone(ctx, d.cfg.Resolver, parent(d.configured)); err != nil {
				return "", nil, fmt.Errorf("finding the zone of %s: %w (set zone in the configuration)", bare(d.configured), err)
			}
		}
		if zone == configuredZone {
			extra = d.cfg.AuthServers
		}
	}
	servers, err := providers.ServersFor(ctx, d.cfg.Resolver, zone, d.cfg.AuthPort, extra)
	if err != nil {
		return "", nil, fmt.Errorf("authoritative servers of %s: %w", zone, err)
	}
	states, err := providers.ObserveTLSA(ctx, servers, name, d.propagation(zone))
	if err != nil {
		return "", nil, err
	}
	for _, s := range states {
		if s.Err == nil && s.CNAME != "" {
			return s.CNAME, servers, nil
		}
	}
	return "", servers, nil
}

func parent(name string) string {
	i, end := dns.NextLabel(name, 0)
	if end {
		return "."
	}
	return name[i:]
}

// resolverChain asks the resolver for TLSA at name and returns the CNAME
// chain its answer holds from name on (the targets, in order); nothing
// when there is none or the resolver cannot answer.
func resolverChain(ctx context.Context, r *dnsx.Resolver, name string) []string {
	resp, err := r.Exchange(ctx, name, dns.TypeTLSA)
	if err != nil {
		return nil
	}
	var out []string
	cur := name
	for range maxCNAMEHops + 1 {
		next := ""
		for _, rr := range resp.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, cur) {
				next = dns.CanonicalName(c.Target)
				break
			}
		}
		if next == "" {
			break
		}
		out = append(out, next)
		cur = next
	}
	return out
}

// cnameError is an error of Resolve about a CNAME: one line of text that
// names the CNAME and the fix, wrapping a sentinel (and the cause).
type cnameError struct {
	kind error
	msg  string
	err  error
}

func (e *cnameError) Error() string { return e.msg }

func (e *cnameError) Unwrap() []error {
	if e.err != nil {
		return []error{e.kind, e.err}
	}
	return []error{e.kind}
}

func bare(name string) string { return strings.TrimSuffix(name, ".") }

func bareAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = bare(n)
	}
	return out
}

// Owner returns the effective TLSA owner: the name senders query after
// CNAMEs (FQDN, lower case).
func (d *ProviderDNS) Owner() string { return d.owner }

// ConfiguredOwner returns _<port>._tcp.<host>. as configured, before CNAMEs.
func (d *ProviderDNS) ConfiguredOwner() string { return d.configured }

// CNAMEs returns the CNAME targets followed from ConfiguredOwner to Owner,
// in order (empty when the owner is no alias).
func (d *ProviderDNS) CNAMEs() []string { return append([]string(nil), d.chain...) }

// Zone returns the zone that holds Owner (FQDN), where the provider reads
// and writes.
func (d *ProviderDNS) Zone() string { return d.zone }

// Servers returns the authoritative servers WaitServed and Observe ask.
func (d *ProviderDNS) Servers() []providers.AuthServer {
	out := make([]providers.AuthServer, len(d.servers))
	for i, s := range d.servers {
		s.Addrs = append(s.Addrs[:0:0], s.Addrs...)
		out[i] = s
	}
	return out
}

func (d *ProviderDNS) propagation(zone string) providers.PropagationOptions {
	opts := d.cfg.Propagation
	opts.Zone = zone
	return opts
}

// Current reads the RRset at the owner from the provider. When it is empty,
// the negative TTL is the largest the authoritative servers serve for the
// owner (min of SOA TTL and MINIMUM), else the validating resolver's, else
// 0 (the engine then uses the rollover's TTL). A CNAME at the owner in the
// provider's zone is an error, never an empty RRset.
func (d *ProviderDNS) Current(ctx context.Context) (rollover.RRSet, uint32, error) {
	set, cname, err := providers.GetOwner(ctx, d.cfg.Provider, d.zone, d.owner)
	if err != nil {
		return rollover.RRSet{}, 0, err
	}
	if cname != "" {
		return rollover.RRSet{}, 0, fmt.Errorf("the provider holds a CNAME to %s at %s, not a TLSA RRset", bare(cname), bare(d.owner))
	}
	out := rollover.RRSet{Records: set.Records, TTL: seconds(set.TTL)}
	if len(set.Records) > 0 {
		return out, 0, nil
	}
	var neg uint32
	if states, err := providers.ObserveTLSA(ctx, d.servers, d.owner, d.propagation(d.zone)); err == nil {
		for _, s := range states {
			if s.Err == nil && len(s.Records) == 0 && s.CNAME == "" {
				neg = max(neg, seconds(s.NegTTL))
			}
		}
	}
	if neg == 0 {
		if s := d.resolverSighting(ctx); s.Err == nil && len(s.Records) == 0 && s.CNAME == "" {
			neg = s.TTL
		}
	}
	return out, neg, nil
}

// Set replaces the RRset at the owner in one provider call. Only an empty
// want (delete) needs the current records, so only then are they read.
func (d *ProviderDNS) Set(ctx context.Context, want rollover.RRSet) error {
	var cur providers.RRSet
	if len(want.Records) == 0 {
		var cname string
		var err error
		if cur, cname, err = providers.GetOwner(ctx, d.cfg.Provider, d.zone, d.owner); err != nil {
			return err
		}
		if cname != "" {
			return fmt.Errorf("the provider holds a CNAME to %s at %s: not deleting anything", bare(cname), bare(d.owner))
		}
	}
	_, err := providers.SetTLSA(ctx, d.cfg.Provider, d.zone, cur, rrset(d.owner, want))
	return err
}

// SetIf replaces the RRset at the owner in one provider call made only if
// the provider still holds expect's records (none: no RRset), where the
// provider can check that (providers.ConditionalSetter: RFC 2136
// prerequisites, checked by the server in the same atomic UPDATE). Someone
// else's change in between fails it with an error that is both
// rollover.ErrRRsetChanged and providers.ErrRRsetChanged, nothing changed.
// A provider that cannot check (the hosted APIs) gets the change
// unconditionally, as Set makes it.
func (d *ProviderDNS) SetIf(ctx context.Context, expect, want rollover.RRSet) error {
	_, err := providers.SetTLSAIf(ctx, d.cfg.Provider, d.zone, []providers.RRSet{rrset(d.owner, expect)}, []providers.RRSet{rrset(d.owner, want)})
	return changed(err)
}

// SetBatchIf is SetBatch made only if every owner's RRset is still
// expect[owner] (missing or empty: no RRset), as SetIf: someone else's
// change of any owner fails the whole call and changes no owner.
func (d *ProviderDNS) SetBatchIf(ctx context.Context, expect, sets map[string]rollover.RRSet) error {
	owners := slices.Sorted(maps.Keys(sets))
	exp := make([]providers.RRSet, 0, len(owners))
	batch := make([]providers.RRSet, 0, len(owners))
	for _, owner := range owners {
		exp = append(exp, rrset(owner, expect[owner]))
		batch = append(batch, rrset(owner, sets[owner]))
	}
	_, err := providers.SetTLSAIf(ctx, d.cfg.Provider, d.zone, exp, batch)
	return changed(err)
}

// changedError is a provider's refusal of a conditional change, which the
// engine branches on as rollover.ErrRRsetChanged.
type changedError struct{ err error }

func (e changedError) Error() string   { return e.err.Error() }
func (e changedError) Unwrap() []error { return []error{e.err, rollover.ErrRRsetChanged} }

// changed marks err as rollover.ErrRRsetChanged when the provider refused
// a conditional change.
func changed(err error) error {
	if errors.Is(err, providers.ErrRRsetChanged) {
		return changedError{err}
	}
	return err
}

// BatchKey returns "<ProviderID> <zone>": DNSes with the same key write
// through the same provider instance into the same zone, so one SetBatch of
// any of them can change them all. It is "" (batchable with no other DNS)
// when Config.ProviderID is empty.
func (d *ProviderDNS) BatchKey() string {
	if d.cfg.ProviderID == "" {
		return ""
	}
	return d.cfg.ProviderID + " " + d.zone
}

// SetBatch replaces the TLSA RRset of every owner in sets (owner FQDN, lower
// case, as Owner returns; all in Zone; none empty) in one provider call,
// providers.SetTLSABatch: for RFC 2136 one UPDATE message, which the server
// applies to every owner or to none. The owners need not include this DNS's
// own. They are written in sorted order, so the message and the errors
// (which name the owners) do not depend on map order.
func (d *ProviderDNS) SetBatch(ctx context.Context, sets map[string]rollover.RRSet) error {
	batch := make([]providers.RRSet, 0, len(sets))
	for _, owner := range slices.Sorted(maps.Keys(sets)) {
		batch = append(batch, rrset(owner, sets[owner]))
	}
	_, err := providers.SetTLSABatch(ctx, d.cfg.Provider, d.zone, batch)
	return err
}

func rrset(owner string, want rollover.RRSet) providers.RRSet {
	return providers.RRSet{Owner: owner, TTL: time.Duration(want.TTL) * time.Second, Records: want.Records}
}

// WaitServed waits until every authoritative address serves exactly want's
// records, whatever TTL it serves, validly signed when the zone is signed
// (providers.WaitPropagated); its error names every address that lags and
// why.
func (d *ProviderDNS) WaitServed(ctx context.Context, want rollover.RRSet) error {
	_, err := providers.WaitPropagated(ctx, d.servers, rrset(d.owner, want), d.propagation(d.zone))
	return err
}

// Observe reads the owner once at every source, concurrently: the provider
// (Source "provider"), every address of every authoritative server ("auth
// <ns name> <ip:port>", as served, DNSSEC checked as in WaitServed) and the
// validating resolver ("resolver <addr>", with its remaining TTL). Empty
// RRsets carry the negative TTL. It fails only when no source could be read.
func (d *ProviderDNS) Observe(ctx context.Context) ([]rollover.Sighting, error) {
	var (
		wg       sync.WaitGroup
		provider rollover.Sighting
		auth     []rollover.Sighting
		resolver rollover.Sighting
	)
	wg.Go(func() { provider = d.providerSighting(ctx) })
	wg.Go(func() { auth = d.authSightings(ctx) })
	wg.Go(func() { resolver = d.resolverSighting(ctx) })
	wg.Wait()
	out := append(append([]rollover.Sighting{provider}, auth...), resolver)
	var errs []error
	for _, s := range out {
		if s.Err == nil {
			return out, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", s.Source, s.Err))
	}
	return out, fmt.Errorf("nothing could be read for %s: %w", bare(d.owner), errors.Join(errs...))
}

func (d *ProviderDNS) providerSighting(ctx context.Context) rollover.Sighting {
	s := rollover.Sighting{Kind: rollover.SourceProvider, Source: "provider"}
	set, cname, err := providers.GetOwner(ctx, d.cfg.Provider, d.zone, d.owner)
	switch {
	case err != nil:
		s.Err = err
	case cname != "":
		s.CNAME = cname
	default:
		s.Records, s.TTL = set.Records, seconds(set.TTL)
	}
	return s
}

func (d *ProviderDNS) authSightings(ctx context.Context) []rollover.Sighting {
	states, err := providers.ObserveTLSA(ctx, d.servers, d.owner, d.propagation(d.zone))
	if err != nil {
		return []rollover.Sighting{{Kind: rollover.SourceAuthoritative, Source: "auth", Err: err}}
	}
	out := make([]rollover.Sighting, len(states))
	for i, a := range states {
		s := rollover.Sighting{Kind: rollover.SourceAuthoritative, Source: fmt.Sprintf("auth %s %s", bare(a.Server), a.Addr),
			Serial: a.Serial, SerialOK: a.SerialOK}
		switch {
		case a.Err != nil:
			s.Err = a.Err
		case a.CNAME != "":
			s.CNAME = a.CNAME
		case a.SigErr != nil:
			s.Err = fmt.Errorf("serves %d TLSA record(s), but %w", len(a.Records), a.SigErr)
		case len(a.Records) == 0:
			s.TTL = seconds(a.NegTTL)
		default:
			s.Records, s.TTL = a.Records, seconds(a.TTL)
		}
		out[i] = s
	}
	return out
}

// resolverSighting asks the validating resolver for TLSA at the owner
// itself (not through the configured name: the ledger is the owner's).
func (d *ProviderDNS) resolverSighting(ctx context.Context) rollover.Sighting {
	r := d.cfg.Resolver
	s := rollover.Sighting{Kind: rollover.SourceResolver, Source: "resolver " + dnsx.ResolverAddr(r.Addr)}
	resp, err := r.Exchange(ctx, d.owner, dns.TypeTLSA)
	if err != nil {
		s.Err = err
		return s
	}
	var ttl uint32
	for _, rr := range resp.Answer {
		h := rr.Header()
		if !strings.EqualFold(h.Name, d.owner) {
			continue
		}
		switch v := rr.(type) {
		case *dns.CNAME:
			s.CNAME = dns.CanonicalName(v.Target)
		case *dns.TLSA:
			rec, err := tlsa.ParseRecord(fmt.Sprintf("%d %d %d %s", v.Usage, v.Selector, v.MatchingType, v.Certificate))
			if err != nil {
				s.Err = fmt.Errorf("undecodable TLSA record %q: %w", v.String(), err)
				return s
			}
			s.Records = append(s.Records, rec)
			if ttl == 0 || h.Ttl < ttl {
				ttl = h.Ttl
			}
		}
	}
	switch {
	case s.CNAME != "":
		s.Records = nil
	case len(s.Records) > 0 && resp.Rcode == dns.RcodeSuccess:
		s.TTL = ttl
	default:
		s.Records = nil
		s.TTL = r.NegativeError(d.owner, dns.TypeTLSA, resp).NegTTL
	}
	return s
}

func seconds(d time.Duration) uint32 {
	s := d / time.Second
	if s < 0 {
		return 0
	}
	if s > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(s)
}
