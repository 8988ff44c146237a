package providers

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/tlsa"
)

// RRSet is a TLSA RRset as a provider holds it.
type RRSet struct {
	Owner   string // FQDN, e.g. "_25._tcp.mail.example.nl."
	TTL     time.Duration
	Records []tlsa.Record
}

// GetTLSA reads the TLSA RRset at owner from the provider's zone. Records of
// other types and names (RRSIG, NSEC, DNSKEY, … that RFC 2136 zone transfers
// return) are filtered out. An empty RRset is a result, not an error; use
// GetOwner to tell an owner that is a CNAME from one without TLSA.
func GetTLSA(ctx context.Context, p libdns.RecordGetter, zone, owner string) (RRSet, error) {
	set, _, err := GetOwner(ctx, p, zone, owner)
	return set, err
}

// GetOwner reads what the provider's zone holds at owner, in one read of
// the zone: the TLSA RRset, and the CNAME target (FQDN, lower case; "" when
// there is none). A target the provider returns without a trailing dot is
// taken as absolute, as hosted APIs write them.
func GetOwner(ctx context.Context, p libdns.RecordGetter, zone, owner string) (RRSet, string, error) {
	zone, owner = dns.CanonicalName(zone), dns.CanonicalName(owner)
	rel, err := relative(owner, zone)
	if err != nil {
		return RRSet{}, "", err
	}
	recs, err := p.GetRecords(ctx, zone)
	if err != nil {
		return RRSet{}, "", fmt.Errorf("reading zone %s: %w", zone, err)
	}
	set := RRSet{Owner: owner}
	var cname string
	for _, r := range recs {
		rr := r.RR()
		if !strings.EqualFold(strings.TrimSuffix(rr.Name, "."), strings.TrimSuffix(rel, ".")) {
			continue
		}
		switch {
		case strings.EqualFold(rr.Type, "CNAME"):
			cname = dns.CanonicalName(strings.TrimSpace(rr.Data))
		case strings.EqualFold(rr.Type, "TLSA"):
			rec, err := tlsa.ParseRecord(rr.Data)
			if err != nil {
				return RRSet{}, "", fmt.Errorf("zone %s holds a TLSA record at %s the provider returned as %q: %w", zone, owner, rr.Data, err)
			}
			set.Records = append(set.Records, rec)
			set.TTL = rr.TTL
		}
	}
	return set, cname, nil
}

// LibdnsRecords converts a TLSA RRset into libdns records relative to zone:
// libdns.RR{Type: "TLSA", Data: "3 1 1 <hex>"}.
func LibdnsRecords(set RRSet, zone string) ([]libdns.Record, error) {
	rel, err := relative(set.Owner, zone)
	if err != nil {
		return nil, err
	}
	out := make([]libdns.Record, len(set.Records))
	for i, r := range set.Records {
		out[i] = libdns.RR{Name: rel, TTL: set.TTL, Type: "TLSA", Data: r.String()}
	}
	return out, nil
}

// relative returns owner relative to zone ("@" for the apex), lower-cased,
// or an error when owner is not in zone. Names compare case-insensitively
// (libdns.RelativeName alone does not: "MAIL.example.test." in zone
// "example.test." would stay unrelativized and be written at
// "MAIL.example.test.example.test.").
func relative(owner, zone string) (string, error) {
	owner, zone = dns.CanonicalName(owner), dns.CanonicalName(zone)
	if !dns.IsSubDomain(zone, owner) {
		return "", fmt.Errorf("%s is not in zone %s", owner, zone)
	}
	n := dns.CountLabel(owner) - dns.CountLabel(zone)
	if n == 0 {
		return "@", nil
	}
	if idx := dns.Split(owner); n < len(idx) {
		return owner[:idx[n]-1], nil
	}
	return strings.TrimSuffix(owner, "."), nil // zone is the root
}

// Change is the difference between two TLSA RRsets.
type Change struct {
	Add    []tlsa.Record
	Remove []tlsa.Record
	Keep   []tlsa.Record
}

// Empty reports whether the change does nothing.
func (c Change) Empty() bool { return len(c.Add) == 0 && len(c.Remove) == 0 }

// Diff returns what turns current into want. Records are compared as bytes.
func Diff(current, want []tlsa.Record) Change {
	var c Change
	for _, w := range want {
		switch {
		case containsRecord(c.Keep, w) || containsRecord(c.Add, w): // duplicate
		case containsRecord(current, w):
			c.Keep = append(c.Keep, w)
		default:
			c.Add = append(c.Add, w)
		}
	}
	for _, r := range current {
		if !containsRecord(want, r) && !containsRecord(c.Remove, r) {
			c.Remove = append(c.Remove, r)
		}
	}
	return c
}

func containsRecord(list []tlsa.Record, r tlsa.Record) bool {
	for _, x := range list {
		if x.Equal(r) {
			return true
		}
	}
	return false
}

// SetTLSA makes the provider's TLSA RRset at want.Owner exactly want, in one
// provider call where possible: SetRecords replaces the RRset (for RFC 2136
// one atomic UPDATE message, as SetTLSABatch of one RRset); an empty want
// deletes the RRset. It returns what the provider reports it wrote or
// deleted.
func SetTLSA(ctx context.Context, p Provider, zone string, current, want RRSet) ([]libdns.Record, error) {
	zone = dns.CanonicalName(zone)
	if len(want.Records) == 0 {
		old, err := LibdnsRecords(current, zone)
		if err != nil {
			return nil, err
		}
		if len(old) == 0 {
			return nil, nil
		}
		done, err := p.DeleteRecords(ctx, zone, old)
		if err != nil {
			return nil, fmt.Errorf("deleting TLSA at %s: %w", current.Owner, err)
		}
		return done, nil
	}
	return SetTLSABatch(ctx, p, zone, []RRSet{want})
}

// SetTLSABatch replaces, in one provider call, the TLSA RRset of every owner
// in sets (all in zone; each set non-empty, owners distinct): SetRecords with
// the records of all owners together, which for RFC 2136 is one UPDATE
// message that deletes and re-adds every RRset named, applied by the server
// atomically (RFC 2136 §3.4): every owner gets its records or none does.
// Other providers may apply part of a failed call (libdns leaves that
// undefined). A scheduled CA migration thus makes one call per zone, not one
// per host. An empty set is refused: deleting needs the current records
// (SetTLSA), and skipping it would leave stale records without a word.
// It returns what the provider reports it wrote.
func SetTLSABatch(ctx context.Context, p Provider, zone string, sets []RRSet) ([]libdns.Record, error) {
	zone = dns.CanonicalName(zone)
	if len(sets) == 0 {
		return nil, fmt.Errorf("setting TLSA in zone %s: no RRsets given", zone)
	}
	owners := make([]string, 0, len(sets))
	seen := make(map[string]bool, len(sets))
	var recs []libdns.Record
	for _, set := range sets {
		owner := dns.CanonicalName(set.Owner)
		if len(set.Records) == 0 {
			return nil, fmt.Errorf("setting TLSA in zone %s: the RRset for %s is empty (a batch only replaces RRsets; delete with SetTLSA)", zone, owner)
		}
		if seen[owner] {
			return nil, fmt.Errorf("setting TLSA in zone %s: %s is given twice", zone, owner)
		}
		rs, err := LibdnsRecords(set, zone)
		if err != nil {
			return nil, fmt.Errorf("setting TLSA: %w", err)
		}
		seen[owner] = true
		owners = append(owners, owner)
		recs = append(recs, rs...)
	}
	done, err := p.SetRecords(ctx, zone, recs)
	if err != nil {
		return nil, fmt.Errorf("setting TLSA at %s: %w", strings.Join(owners, ", "), err)
	}
	return done, nil
}
