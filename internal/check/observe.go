package check

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/dnsx"
)

// Prober probes one address of an MX host with STARTTLS.
type Prober interface {
	Probe(ctx context.Context, addr netip.AddrPort, serverName string) (Probe, error)
}

// Config says how to observe.
type Config struct {
	Resolver    *dnsx.Resolver
	Prober      Prober
	Port        uint16        // SMTP port; 25 when zero
	Concurrency int           // hosts checked at once; 16 when zero
	HostTimeout time.Duration // deadline for one host, all addresses; 30 s when zero
	WarnDays    int           // see Policy
	Now         func() time.Time
}

// Run checks the MX hosts of each domain and each host given directly, and
// returns the evaluated report. Hosts are checked concurrently, at most
// cfg.Concurrency at once, each under its own deadline, so one dead host never
// stalls the others. Run does not fail: problems are findings.
func Run(ctx context.Context, cfg Config, domains, hosts []string) Report {
	if cfg.Port == 0 {
		cfg.Port = 25
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.HostTimeout <= 0 {
		cfg.HostTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	doms := make([]DomainObservation, len(domains))
	forEach(ctx, cfg.Concurrency, len(domains), func(ctx context.Context, i int) {
		ctx, cancel := context.WithTimeout(ctx, cfg.HostTimeout)
		defer cancel()
		d := dns.Fqdn(strings.ToLower(domains[i]))
		mx, err := cfg.Resolver.LookupMX(ctx, d)
		doms[i] = DomainObservation{Domain: d, MX: mx, Err: err}
	})

	// The host list: every MX host once, remembering which domains name it.
	var order []string
	byHost := map[string][]string{}
	addHost := func(h, domain string) {
		h = dns.Fqdn(strings.ToLower(h))
		if _, ok := byHost[h]; !ok {
			order = append(order, h)
			byHost[h] = nil
		}
		if domain != "" && !slices.Contains(byHost[h], domain) {
			byHost[h] = append(byHost[h], domain)
		}
	}
	for _, d := range doms {
		switch {
		case d.Err == nil:
			for _, mx := range d.MX.Hosts {
				addHost(mx.Host, d.Domain)
			}
		case errors.Is(d.Err, dnsx.ErrNoData):
			addHost(d.Domain, d.Domain) // RFC 5321 §5.1 implicit MX
		}
	}
	for _, h := range hosts {
		addHost(h, "")
	}

	obs := make([]HostObservation, len(order))
	forEach(ctx, cfg.Concurrency, len(order), func(ctx context.Context, i int) {
		ctx, cancel := context.WithTimeout(ctx, cfg.HostTimeout)
		defer cancel()
		obs[i] = observeHost(ctx, cfg, order[i], byHost[order[i]])
	})
	return Evaluate(doms, obs, Policy{WarnDays: cfg.WarnDays, Now: cfg.Now()})
}

func observeHost(ctx context.Context, cfg Config, host string, domains []string) HostObservation {
	h := HostObservation{Host: host, Domains: domains, Port: cfg.Port}
	var wg sync.WaitGroup
	wg.Go(func() { h.Addrs, h.AddrErr = cfg.Resolver.LookupAddrs(ctx, host) })
	wg.Go(func() { h.TLSA, h.TLSAErr = cfg.Resolver.LookupTLSA(ctx, cfg.Port, host) })
	wg.Wait()
	if h.Addrs != nil {
		h.Probes = probeAll(ctx, cfg, host, h.Addrs.Addrs)
	}
	return h
}

// probeAll probes every address of host concurrently.
func probeAll(ctx context.Context, cfg Config, host string, addrs []netip.Addr) []ProbeObservation {
	sni := strings.TrimSuffix(host, ".")
	obs := make([]ProbeObservation, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() {
			p, err := cfg.Prober.Probe(ctx, netip.AddrPortFrom(a, cfg.Port), sni)
			obs[i] = ProbeObservation{Addr: a, Probe: p, Err: err}
		})
	}
	wg.Wait()
	return obs
}

// forEach runs fn(i) for i in [0,n) with at most limit running at once.
func forEach(ctx context.Context, limit, n int, fn func(context.Context, int)) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(ctx, i)
		})
	}
	wg.Wait()
}

// ProbeHost resolves host's addresses and probes each one, for callers that
// need the chains a host serves now (the publish safety check). An address
// lookup failure is returned as the error; probe failures are per address.
func ProbeHost(ctx context.Context, cfg Config, host string) ([]ProbeObservation, error) {
	if cfg.Port == 0 {
		cfg.Port = 25
	}
	host = dns.Fqdn(strings.ToLower(host))
	addrs, err := cfg.Resolver.LookupAddrs(ctx, host)
	if err != nil {
		return nil, err
	}
	return probeAll(ctx, cfg, host, addrs.Addrs), nil
}
