// Package targets connects the rollover engine to the real world: a TLSA
// RRset changed through a libdns provider and confirmed at every
// authoritative server (rollover.DNS), built from tlsactl's configuration.
package targets

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/providers"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

// ProviderDNS is rollover.DNS for one owner name through a provider.
type ProviderDNS struct {
	Provider providers.Provider
	Zone     string // FQDN
	Owner    string // _<port>._tcp.<host>.
	Port     uint16 // SMTP port (for the negative-TTL lookup)
	Host     string
	Resolver *dnsx.Resolver
	// AuthServers, when set, are asked instead of the zone's NS set
	// ("host:port"); AuthPort is the port of the NS set's servers (53).
	AuthServers []string
	AuthPort    int
	Propagation providers.PropagationOptions
}

var (
	_ rollover.DNS         = (*ProviderDNS)(nil)
	_ rollover.CacheViewer = (*ProviderDNS)(nil)
)

// Cached returns the TLSA RRset the validating resolver holds now, with its
// remaining TTL; for NODATA/NXDOMAIN an empty set with the negative TTL.
func (d *ProviderDNS) Cached(ctx context.Context) (rollover.RRSet, error) {
	if d.Resolver == nil {
		return rollover.RRSet{}, errors.New("no resolver")
	}
	res, err := d.Resolver.LookupTLSA(ctx, d.Port, d.Host)
	var le *dnsx.LookupError
	switch {
	case err == nil:
		out := rollover.RRSet{TTL: res.TTL}
		for _, r := range res.Records {
			out.Records = append(out.Records, tlsa.Record{Usage: tlsa.Usage(r.Usage), Selector: tlsa.Selector(r.Selector), MatchingType: tlsa.MatchingType(r.MatchingType), Data: r.Data})
		}
		return out, nil
	case errors.As(err, &le) && (errors.Is(err, dnsx.ErrNoData) || errors.Is(err, dnsx.ErrNXDomain)):
		return rollover.RRSet{TTL: le.NegTTL}, nil
	}
	return rollover.RRSet{}, err
}

// Current reads the RRset from the provider. When it is empty, the negative
// TTL comes from the validating resolver's NODATA/NXDOMAIN answer (0 when
// that cannot be learned; the engine then uses the rollover's TTL).
func (d *ProviderDNS) Current(ctx context.Context) (rollover.RRSet, uint32, error) {
	set, err := providers.GetTLSA(ctx, d.Provider, d.Zone, d.Owner)
	if err != nil {
		return rollover.RRSet{}, 0, err
	}
	out := rollover.RRSet{Records: set.Records, TTL: uint32(set.TTL / time.Second)}
	var neg uint32
	if len(set.Records) == 0 && d.Resolver != nil {
		_, lerr := d.Resolver.LookupTLSA(ctx, d.Port, d.Host)
		var le *dnsx.LookupError
		if errors.As(lerr, &le) && (errors.Is(lerr, dnsx.ErrNoData) || errors.Is(lerr, dnsx.ErrNXDomain)) {
			neg = le.NegTTL
		}
	}
	return out, neg, nil
}

// Set replaces the RRset in one provider call. Only an empty want (delete)
// needs the current records, so only then are they read again.
func (d *ProviderDNS) Set(ctx context.Context, want rollover.RRSet) error {
	var cur providers.RRSet
	if len(want.Records) == 0 {
		var err error
		if cur, err = providers.GetTLSA(ctx, d.Provider, d.Zone, d.Owner); err != nil {
			return err
		}
	}
	_, err := providers.SetTLSA(ctx, d.Provider, d.Zone, cur, d.rrset(want))
	return err
}

func (d *ProviderDNS) rrset(want rollover.RRSet) providers.RRSet {
	return providers.RRSet{Owner: d.Owner, TTL: time.Duration(want.TTL) * time.Second, Records: want.Records}
}

// WaitServed waits until every authoritative server serves exactly want.
func (d *ProviderDNS) WaitServed(ctx context.Context, want rollover.RRSet) error {
	var servers []providers.AuthServer
	var err error
	if len(d.AuthServers) > 0 {
		servers, err = providers.ExplicitServers(d.AuthServers)
	} else {
		servers, err = providers.AuthServers(ctx, d.Resolver, d.Zone, d.AuthPort)
	}
	if err != nil {
		return fmt.Errorf("authoritative servers of %s: %w", d.Zone, err)
	}
	opts := d.Propagation
	opts.Zone = d.Zone
	_, err = providers.WaitPropagated(ctx, servers, d.rrset(want), opts)
	return err
}
