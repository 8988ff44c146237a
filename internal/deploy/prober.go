package deploy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/starttls"
)

// ResolverProber resolves Host's addresses through a validating resolver and
// probes each with STARTTLS (check.ProbeHost with check.STARTTLSProber). It
// returns one chain per address; an address that fails to probe, or a host
// without addresses, is an error.
type ResolverProber struct {
	Resolver *dnsx.Resolver
	Host     string
	Port     int           // default 25
	Timeout  time.Duration // per probe phase; starttls.DefaultTimeout when zero
}

// Served implements Prober.
func (p ResolverProber) Served(ctx context.Context) ([][]*x509.Certificate, error) {
	if p.Resolver == nil || p.Host == "" {
		return nil, fmt.Errorf("deploy: ResolverProber needs a resolver and a host name")
	}
	port := p.Port
	if port == 0 {
		port = 25
	}
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("deploy: port %d out of range", port)
	}
	obs, err := check.ProbeHost(ctx, check.Config{
		Resolver: p.Resolver, Prober: check.STARTTLSProber{Timeout: p.Timeout}, Port: uint16(port),
	}, p.Host)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", p.Host, err)
	}
	if len(obs) == 0 {
		return nil, fmt.Errorf("%s has no address", p.Host)
	}
	chains := make([][]*x509.Certificate, 0, len(obs))
	var errs []error
	for _, o := range obs {
		switch {
		case o.Err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", o.Addr, o.Err))
		case len(o.Probe.Chain) == 0:
			errs = append(errs, fmt.Errorf("%s: no certificate served", o.Addr))
		default:
			chains = append(chains, o.Probe.Chain)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return chains, nil
}

// AddrProber probes fixed "ip:port" addresses with STARTTLS (SMTP unless
// Protocol says otherwise), without DNS: for a server reached at a known
// address, and for tests.
type AddrProber struct {
	Addrs      []string
	ServerName string // SNI; empty sends none
	Protocol   starttls.Protocol
	Timeout    time.Duration // per probe phase
}

// Served implements Prober.
func (p AddrProber) Served(ctx context.Context) ([][]*x509.Certificate, error) {
	if len(p.Addrs) == 0 {
		return nil, fmt.Errorf("deploy: AddrProber has no address")
	}
	proto := p.Protocol
	if proto == starttls.Auto {
		proto = starttls.SMTP
	}
	chains := make([][]*x509.Certificate, len(p.Addrs))
	errs := make([]error, len(p.Addrs))
	var wg sync.WaitGroup
	for i, a := range p.Addrs {
		wg.Go(func() {
			res, err := starttls.Probe(ctx, starttls.Options{
				Addr: a, ServerName: strings.TrimSuffix(p.ServerName, "."), Protocol: proto, Timeout: p.Timeout,
			})
			switch {
			case err != nil:
				errs[i] = err
			case len(res.Chain) == 0:
				errs[i] = fmt.Errorf("%s: no certificate served", a)
			default:
				chains[i] = res.Chain
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return chains, nil
}
