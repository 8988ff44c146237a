package providers

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/tlsa"
)

// ErrRRsetChanged: a conditional change was refused because a TLSA RRset was
// no longer what the caller read (someone else changed it in between);
// nothing was changed. Callers read again and recompute.
var ErrRRsetChanged = errors.New("the TLSA RRset changed since it was read")

// ConditionalSetter is a Provider that can replace TLSA RRsets only where the
// zone still holds what the caller read (compare-and-set).
//
// SetTLSAIf makes want[i] the TLSA RRset at want[i].Owner for every i if,
// and only if, every expect[i] is exactly the TLSA RRset the zone holds at
// that owner (same records, in any order; TTLs are not compared; an empty
// expect[i] means "no TLSA RRset there"). The check and the change are one
// atomic step on the provider's side: either every owner gets want or none
// changes. When the check fails it returns an error wrapping
// [ErrRRsetChanged]. It does not retry, and it does not say which owner
// differed (RFC 2136 servers do not tell).
type ConditionalSetter interface {
	SetTLSAIf(ctx context.Context, zone string, expect, want []RRSet) error
}

var _ ConditionalSetter = (*rfc2136Provider)(nil)

// SetTLSAIf makes want[i] the TLSA RRset at want[i].Owner for every i, in
// one provider call, but only if every expect[i] is still what the zone
// holds; otherwise it changes nothing and returns an error wrapping
// [ErrRRsetChanged]. expect and want have the same length (at least 1),
// expect[i] and want[i] name the same owner, owners are distinct and inside
// zone; an empty expect[i] means "no TLSA RRset at that owner", an empty
// want[i] deletes the RRset. Input that breaks these rules is refused before
// anything is sent.
//
// conditional reports whether p is a [ConditionalSetter], that is whether
// expect was (or, for refused input, would have been) checked by the
// provider. When it is not, SetTLSAIf makes the change unconditionally
// instead and returns conditional=false: [SetTLSA] for one RRset (an empty
// want deletes the records of expect, not records someone else added),
// [SetTLSABatch] for several (which refuses an empty want). It then cannot
// detect a concurrent change and never returns ErrRRsetChanged.
func SetTLSAIf(ctx context.Context, p Provider, zone string, expect, want []RRSet) (conditional bool, err error) {
	zone = dns.CanonicalName(zone)
	cs, conditional := p.(ConditionalSetter)
	if _, err := checkConditional(zone, expect, want); err != nil {
		return conditional, err
	}
	if conditional {
		return true, cs.SetTLSAIf(ctx, zone, expect, want)
	}
	if len(want) == 1 {
		_, err := SetTLSA(ctx, p, zone, expect[0], want[0])
		return false, err
	}
	_, err = SetTLSABatch(ctx, p, zone, want)
	return false, err
}

// checkConditional checks the input of a conditional change and returns the
// owners (canonical FQDNs) in order.
func checkConditional(zone string, expect, want []RRSet) ([]string, error) {
	prefix := "setting TLSA conditionally in zone " + zone
	if len(want) == 0 {
		return nil, fmt.Errorf("%s: no RRsets given", prefix)
	}
	if len(expect) != len(want) {
		return nil, fmt.Errorf("%s: %d RRsets expected for %d wanted (one expected RRset per owner, in the same order)", prefix, len(expect), len(want))
	}
	owners := make([]string, len(want))
	seen := make(map[string]bool, len(want))
	for i := range want {
		owner := dns.CanonicalName(want[i].Owner)
		if e := dns.CanonicalName(expect[i].Owner); e != owner {
			return nil, fmt.Errorf("%s: RRset %d is expected at %s but wanted at %s (they must name the same owner)", prefix, i, e, owner)
		}
		if seen[owner] {
			return nil, fmt.Errorf("%s: %s is given twice", prefix, owner)
		}
		if _, err := relative(owner, zone); err != nil {
			return nil, fmt.Errorf("setting TLSA conditionally: %w", err)
		}
		for _, set := range []RRSet{expect[i], want[i]} {
			for _, r := range set.Records {
				if len(r.Data) == 0 {
					return nil, fmt.Errorf("%s: a TLSA record for %s has no association data", prefix, owner)
				}
			}
		}
		// RFC 2181 §8: a TTL is 0 to 2^31-1 seconds.
		if ttl := want[i].TTL; len(want[i].Records) > 0 && (ttl < 0 || ttl/time.Second > math.MaxInt32) {
			return nil, fmt.Errorf("%s: TTL %v for %s is outside 0 to 2^31-1 seconds", prefix, ttl, owner)
		}
		seen[owner] = true
		owners[i] = owner
	}
	return owners, nil
}

// SetTLSAIf implements [ConditionalSetter] with ONE TSIG-signed RFC 2136
// UPDATE message that the server applies atomically (RFC 2136 §3.4): the
// prerequisite section holds, per owner, "RRset exists (value dependent)"
// with every expected record (§2.4.2; the server compares the whole RRset,
// not TTLs) or, for an empty expect, "RRset does not exist" (§2.4.3); the
// update section deletes every owner's TLSA RRset and adds want's records
// (the shape of libdns/rfc2136 SetRecords). A server that finds a
// prerequisite false answers NXRRSET or YXRRSET and changes nothing
// (§3.2.5), which is returned as an error wrapping [ErrRRsetChanged].
func (r *rfc2136Provider) SetTLSAIf(ctx context.Context, zone string, expect, want []RRSet) error {
	zone = dns.CanonicalName(zone)
	owners, err := checkConditional(zone, expect, want)
	if err != nil {
		return err
	}
	m := new(dns.Msg)
	m.SetUpdate(zone)
	for i, owner := range owners {
		if len(expect[i].Records) == 0 {
			m.RRsetNotUsed([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeTLSA}}})
			continue
		}
		// Used sets class and TTL (0: TTLs are not compared) in the headers
		// of the RRs it is given: they are fresh ones. Duplicates are
		// dropped: the zone holds a set, yet BIND and PowerDNS answer
		// NXRRSET to a prerequisite that names a record twice (Knot does
		// not).
		m.Used(tlsaRRs(owner, 0, uniqueRecords(expect[i].Records)))
	}
	for _, owner := range owners {
		m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeTLSA}}})
	}
	for i, owner := range owners {
		if len(want[i].Records) > 0 {
			m.Insert(tlsaRRs(owner, uint32(want[i].TTL/time.Second), uniqueRecords(want[i].Records)))
		}
	}

	keyName := dns.Fqdn(r.p.KeyName)
	m.SetTsig(keyName, dns.Fqdn(r.p.KeyAlg), 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", TsigSecret: map[string]string{keyName: r.p.Key}}
	resp, _, err := c.ExchangeContext(ctx, m, r.p.Server)
	if err == nil {
		switch resp.Rcode {
		case dns.RcodeSuccess:
			return nil
		case dns.RcodeNXRrset, dns.RcodeYXRrset:
			return &rrsetChangedError{server: r.p.Server, key: strings.TrimSuffix(r.p.KeyName, "."), owners: owners, rcode: resp.Rcode}
		}
		err = rcodeError(resp)
	}
	return fmt.Errorf("setting TLSA conditionally at %s: %w", strings.Join(owners, ", "), r.explain(err))
}

// rcodeError describes a response that is not NOERROR as libdns/rfc2136
// does (explain looks for the quoted rcode), with any extended DNS error.
func rcodeError(m *dns.Msg) error {
	err := fmt.Errorf("dns response error code %q (%d)", dns.RcodeToString[m.Rcode], m.Rcode)
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if ede, ok := o.(*dns.EDNS0_EDE); ok {
				err = fmt.Errorf("%w: %s (%d): %s", err, dns.ExtendedErrorCodeToString[ede.InfoCode], ede.InfoCode, ede.ExtraText)
			}
		}
	}
	return err
}

// rrsetChangedError is a conditional change the server refused because a
// prerequisite was false. It wraps ErrRRsetChanged.
type rrsetChangedError struct {
	server, key string
	owners      []string
	rcode       int
}

func (e *rrsetChangedError) Error() string {
	what := "the TLSA RRset at " + e.owners[0] + " is"
	again := "it"
	if len(e.owners) > 1 {
		// The server does not say which prerequisite failed.
		what = "at least one of the TLSA RRsets at " + strings.Join(e.owners, ", ") + " is"
		again = "them"
	}
	return fmt.Sprintf("RFC 2136 server %s, TSIG key %s: %s no longer what was read (someone else changed it; the server answered %s): nothing changed; read %s again",
		e.server, e.key, what, dns.RcodeToString[e.rcode], again)
}

func (e *rrsetChangedError) Unwrap() error { return ErrRRsetChanged }

// tlsaRRs returns new TLSA RRs (class IN) at owner for recs.
func tlsaRRs(owner string, ttl uint32, recs []tlsa.Record) []dns.RR {
	out := make([]dns.RR, len(recs))
	for i, rec := range recs {
		out[i] = &dns.TLSA{
			Hdr:          dns.RR_Header{Name: owner, Rrtype: dns.TypeTLSA, Class: dns.ClassINET, Ttl: ttl},
			Usage:        uint8(rec.Usage),
			Selector:     uint8(rec.Selector),
			MatchingType: uint8(rec.MatchingType),
			Certificate:  hex.EncodeToString(rec.Data), // lower case, as miekg/dns writes it,
		}
	}
	return out
}

// uniqueRecords returns recs without duplicates (compared as bytes), in order.
func uniqueRecords(recs []tlsa.Record) []tlsa.Record {
	var out []tlsa.Record
	for _, r := range recs {
		if !containsRecord(out, r) {
			out = append(out, r)
		}
	}
	return out
}
