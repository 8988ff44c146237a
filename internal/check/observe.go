package check

import (
	"context"
	"errors"
	"fmt"
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

// Resolver is what observation needs of a validating resolver;
// *dnsx.Resolver is the implementation, tests use fakes.
type Resolver interface {
	LookupMX(ctx context.Context, domain string) (*dnsx.MXResult, error)
	LookupAddrs(ctx context.Context, host string) (*dnsx.AddrsResult, error)
	LookupTLSA(ctx context.Context, port uint16, host string) (*dnsx.TLSAResult, error)
}

var _ Resolver = (*dnsx.Resolver)(nil)

// Defaults of Config; see DefaultConcurrency for Concurrency.
const (
	DefaultPerAddress     = 2   // probes in flight to one IP address
	DefaultDNSConcurrency = 128 // resolver lookups in flight
	DefaultHostTimeout    = 30 * time.Second
)

// Config says how to observe.
type Config struct {
	Resolver Resolver
	Prober   Prober
	Port     uint16 // SMTP port; 25 when zero
	// Concurrency is the number of hosts checked at once (and of domains
	// whose MX RRset is looked up at once); DefaultConcurrency() when zero.
	Concurrency int
	// PerAddress is the politeness bound: at most this many probes to one
	// IP address at a time, however many host names point there;
	// DefaultPerAddress when zero.
	PerAddress int
	// DNSConcurrency bounds the resolver lookups in flight (each one to a
	// few queries: A and AAAA, TLSA and its CNAME expansion);
	// DefaultDNSConcurrency when zero.
	DNSConcurrency int
	// HostTimeout is the deadline for one host, all lookups, probes and
	// the waits for a DNS or politeness slot; 30 s when zero. A domain's
	// MX lookup has a deadline of its own of the same length.
	HostTimeout time.Duration
	WarnDays    int // see Policy
	// CriticalDays: see Policy (0: no CRITICAL for expiry or forecast).
	CriticalDays int
	Now          func() time.Time
	// OnResult, when set, is called as each host and each domain is
	// finished, one call at a time, so callers can stream results.
	OnResult func(Result)
}

// Result is one finished host or domain, for streaming (Config.OnResult).
// The final Report of Run holds the same hosts and findings.
type Result struct {
	Type   string   `json:"type"`   // "host" or "domain"
	Status Severity `json:"status"` // for a domain: the worst of its findings and its MX hosts
	// Host is set for a host. Its Domains are those that had named it when
	// it finished; the domain results carry the complete mapping.
	Host     *HostReport   `json:"host,omitempty"`
	Domain   *DomainReport `json:"domain,omitempty"`
	Findings []Finding     `json:"findings"`
	// Direct is true for a host given directly (Run's hosts argument).
	Direct bool `json:"-"`
}

// Run checks the MX hosts of each domain and each host given directly, and
// returns the evaluated report. The work is pipelined: each domain's MX
// lookup feeds its hosts to a pool of cfg.Concurrency host workers as soon
// as it answers. A host named by many domains is observed once and its
// result reused. Each host runs under its own deadline, which also bounds
// its waits for a DNS slot (cfg.DNSConcurrency) and for a politeness slot
// (cfg.PerAddress probes per IP address), so one dead host never stalls the
// others. Run does not fail: problems are findings.
func Run(ctx context.Context, cfg Config, domains, hosts []string) Report {
	if cfg.Port == 0 {
		cfg.Port = 25
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency()
	}
	if cfg.PerAddress <= 0 {
		cfg.PerAddress = DefaultPerAddress
	}
	if cfg.DNSConcurrency <= 0 {
		cfg.DNSConcurrency = DefaultDNSConcurrency
	}
	if cfg.HostTimeout <= 0 {
		cfg.HostTimeout = DefaultHostTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &runner{
		cfg:    cfg,
		res:    &limitedResolver{r: cfg.Resolver, sem: make(chan struct{}, cfg.DNSConcurrency)},
		hosts:  map[string]*hostJob{},
		perIP:  map[netip.Addr]chan struct{}{},
		policy: Policy{WarnDays: cfg.WarnDays, CriticalDays: cfg.CriticalDays, Now: cfg.Now()},
	}
	queue := make(chan *hostJob)
	var workers sync.WaitGroup
	for range cfg.Concurrency {
		workers.Go(func() {
			for j := range queue {
				r.observe(ctx, j)
			}
		})
	}

	// Direct hosts are marked first, so a host that is also some domain's
	// MX host is reported as direct whichever comes first.
	for _, h := range hosts {
		h = dns.Fqdn(strings.ToLower(h))
		if r.hosts[h] == nil {
			r.hosts[h] = &hostJob{host: h, direct: true}
		}
	}

	doms := make([]DomainObservation, len(domains))
	forEach(ctx, cfg.Concurrency, len(domains), func(ctx context.Context, i int) {
		dctx, cancel := context.WithTimeout(ctx, cfg.HostTimeout)
		d := dns.Fqdn(strings.ToLower(domains[i]))
		mx, err := r.res.LookupMX(dctx, d)
		cancel()
		doms[i] = DomainObservation{Domain: d, MX: mx, Err: err}
		var names []string
		switch {
		case err == nil:
			for _, m := range mx.Hosts {
				names = append(names, m.Host)
			}
		case errors.Is(err, dnsx.ErrNoData):
			names = []string{d} // RFC 5321 §5.1 implicit MX
		}
		dj := &domainJob{obs: doms[i], pending: len(names) + 1, dane: map[string]bool{}}
		for _, h := range names {
			r.enqueue(ctx, queue, h, d, dj)
		}
		r.hostDone(dj, "", false, OK) // the +1: registration is over
	})
	for _, h := range hosts {
		r.enqueue(ctx, queue, h, "", nil)
	}
	close(queue)
	workers.Wait()

	// The report in a fixed order: every MX host once in the order the
	// domains name them, then the hosts given directly.
	var obs []HostObservation
	seen := map[string]bool{}
	add := func(h string) {
		h = dns.Fqdn(strings.ToLower(h))
		if seen[h] {
			return
		}
		seen[h] = true
		j := r.hosts[h]
		o := j.obs
		o.Domains = j.domains
		obs = append(obs, o)
	}
	for _, d := range doms {
		switch {
		case d.Err == nil:
			for _, mx := range d.MX.Hosts {
				add(mx.Host)
			}
		case errors.Is(d.Err, dnsx.ErrNoData):
			add(d.Domain)
		}
	}
	for _, h := range hosts {
		add(h)
	}
	return Evaluate(doms, obs, r.policy)
}

// runner is the state of one Run: nothing outlives it.
type runner struct {
	cfg    Config
	res    *limitedResolver
	policy Policy

	mu    sync.Mutex // guards hosts, perIP, the jobs' fields and OnResult calls
	hosts map[string]*hostJob
	perIP map[netip.Addr]chan struct{}
	emit  sync.Mutex
}

// hostJob is one host, observed once for every domain that names it.
type hostJob struct {
	host    string
	domains []string
	direct  bool // given directly, not (only) as an MX host
	queued  bool
	obs     HostObservation
	dane    bool
	status  Severity
	done    bool
	waiters []*domainJob // domains to tell when done
}

// domainJob waits for the hosts of one domain.
type domainJob struct {
	obs     DomainObservation
	pending int
	dane    map[string]bool
	status  Severity
}

// enqueue registers host for domain (or as a direct host when domain is
// empty) and queues it for a worker the first time it is seen.
func (r *runner) enqueue(ctx context.Context, queue chan<- *hostJob, host, domain string, dj *domainJob) {
	host = dns.Fqdn(strings.ToLower(host))
	r.mu.Lock()
	j := r.hosts[host]
	if j == nil {
		j = &hostJob{host: host}
		r.hosts[host] = j
	}
	if domain != "" && !slices.Contains(j.domains, domain) {
		j.domains = append(j.domains, domain)
	}
	queued := j.queued
	j.queued = true
	var finished bool
	if dj != nil {
		if j.done {
			finished = true
		} else {
			j.waiters = append(j.waiters, dj)
		}
	}
	dane, status := j.dane, j.status
	r.mu.Unlock()
	if finished {
		r.hostDone(dj, host, dane, status)
	}
	if queued {
		return
	}
	select {
	case queue <- j:
	case <-ctx.Done():
		// Cancelled run: record the host as not checked, not as missing.
		r.observe(ctx, j)
	}
}

// observe checks one host under its deadline and reports it.
func (r *runner) observe(ctx context.Context, j *hostJob) {
	hctx, cancel := context.WithTimeout(ctx, r.cfg.HostTimeout)
	r.mu.Lock()
	domains := slices.Clone(j.domains)
	r.mu.Unlock()
	o := observeHost(hctx, r.cfg, r.res, r.probe, j.host, domains)
	cancel()
	hr, fs, dane := evaluateHost(o, r.policy)

	r.mu.Lock()
	j.obs, j.dane, j.status, j.done = o, dane, hr.Status, true
	waiters := j.waiters
	j.waiters = nil
	direct := j.direct
	r.mu.Unlock()

	r.report(Result{Type: "host", Status: hr.Status, Host: &hr, Findings: nonNil(fs), Direct: direct})
	for _, dj := range waiters {
		r.hostDone(dj, j.host, dane, hr.Status)
	}
}

// hostDone counts one host of dj as finished (host "" ends registration)
// and reports the domain when it was the last.
func (r *runner) hostDone(dj *domainJob, host string, dane bool, status Severity) {
	r.mu.Lock()
	if host != "" {
		dj.dane[host] = dane
		dj.status = Worst(dj.status, status)
	}
	dj.pending--
	last := dj.pending == 0
	r.mu.Unlock()
	if !last {
		return
	}
	dr, fs := evaluateDomain(dj.obs, dj.dane)
	st := dj.status
	for _, f := range fs {
		st = Worst(st, f.Severity)
	}
	r.report(Result{Type: "domain", Status: st, Domain: &dr, Findings: nonNil(fs)})
}

func (r *runner) report(res Result) {
	if r.cfg.OnResult == nil {
		return
	}
	r.emit.Lock()
	defer r.emit.Unlock()
	r.cfg.OnResult(res)
}

func nonNil(fs []Finding) []Finding {
	if fs == nil {
		return []Finding{}
	}
	return fs
}

// probe probes addr under the politeness bound: it waits for one of the
// cfg.PerAddress slots of the IP address, and the wait counts against ctx.
// The slot is held until Probe returns (the connection is closed then).
func (r *runner) probe(ctx context.Context, addr netip.AddrPort, sni string) (Probe, error) {
	r.mu.Lock()
	sem, ok := r.perIP[addr.Addr()]
	if !ok {
		sem = make(chan struct{}, r.cfg.PerAddress)
		r.perIP[addr.Addr()] = sem
	}
	r.mu.Unlock()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return Probe{}, fmt.Errorf("waiting for a connection slot to %s (at most %d at a time): %w", addr.Addr(), r.cfg.PerAddress, context.Cause(ctx))
	}
	defer func() { <-sem }()
	return r.cfg.Prober.Probe(ctx, addr, sni)
}

// limitedResolver bounds the lookups in flight; waiting for a slot counts
// against the caller's deadline.
type limitedResolver struct {
	r   Resolver
	sem chan struct{}
}

func (l *limitedResolver) acquire(ctx context.Context, what, name string) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return &dnsx.LookupError{Name: dns.Fqdn(name), Type: what, Status: dnsx.Failed, Rcode: -1, Canonical: dns.Fqdn(name),
			Kind: dnsx.ErrLookupFailed, Err: fmt.Errorf("waiting for a resolver slot: %w", context.Cause(ctx))}
	}
}

func (l *limitedResolver) LookupMX(ctx context.Context, domain string) (*dnsx.MXResult, error) {
	if err := l.acquire(ctx, "MX", domain); err != nil {
		return nil, err
	}
	defer func() { <-l.sem }()
	return l.r.LookupMX(ctx, domain)
}

func (l *limitedResolver) LookupAddrs(ctx context.Context, host string) (*dnsx.AddrsResult, error) {
	if err := l.acquire(ctx, "A", host); err != nil {
		return nil, err
	}
	defer func() { <-l.sem }()
	return l.r.LookupAddrs(ctx, host)
}

func (l *limitedResolver) LookupTLSA(ctx context.Context, port uint16, host string) (*dnsx.TLSAResult, error) {
	if err := l.acquire(ctx, "TLSA", dnsx.TLSAName(port, host)); err != nil {
		return nil, err
	}
	defer func() { <-l.sem }()
	return l.r.LookupTLSA(ctx, port, host)
}

type probeFunc func(ctx context.Context, addr netip.AddrPort, sni string) (Probe, error)

func observeHost(ctx context.Context, cfg Config, res Resolver, probe probeFunc, host string, domains []string) HostObservation {
	h := HostObservation{Host: host, Domains: domains, Port: cfg.Port}
	var wg sync.WaitGroup
	wg.Go(func() { h.Addrs, h.AddrErr = res.LookupAddrs(ctx, host) })
	wg.Go(func() { h.TLSA, h.TLSAErr = res.LookupTLSA(ctx, cfg.Port, host) })
	wg.Wait()
	if h.Addrs != nil {
		h.Probes = probeAll(ctx, cfg.Port, probe, host, h.Addrs.Addrs)
	}
	return h
}

// probeAll probes every address of host concurrently. It returns by ctx's
// deadline even when a prober does not: an address still being probed then
// gets the context's error.
func probeAll(ctx context.Context, port uint16, probe probeFunc, host string, addrs []netip.Addr) []ProbeObservation {
	sni := strings.TrimSuffix(host, ".")
	obs := make([]ProbeObservation, len(addrs))
	type result struct {
		i int
		o ProbeObservation
	}
	ch := make(chan result, len(addrs)) // buffered: a late prober never blocks
	for i, a := range addrs {
		go func() {
			p, err := probe(ctx, netip.AddrPortFrom(a, port), sni)
			ch <- result{i, ProbeObservation{Addr: a, Probe: p, Err: err}}
		}()
	}
	got := make([]bool, len(addrs))
	for range addrs {
		select {
		case r := <-ch:
			obs[r.i], got[r.i] = r.o, true
		case <-ctx.Done():
			// A prober that honours ctx returns within moments and its own
			// error says more; one that does not is abandoned.
			grace := time.NewTimer(abandonGrace)
		drain:
			for slices.Contains(got, false) {
				select {
				case r := <-ch:
					obs[r.i], got[r.i] = r.o, true
				case <-grace.C:
					break drain
				}
			}
			grace.Stop()
			for i, a := range addrs {
				if !got[i] {
					obs[i] = ProbeObservation{Addr: a, Err: fmt.Errorf("probe abandoned at the host deadline: %w", context.Cause(ctx))}
				}
			}
			return obs
		}
	}
	return obs
}

// abandonGrace is how long probeAll waits, after the host deadline, for
// probers to return on their own.
const abandonGrace = 50 * time.Millisecond

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
	return probeAll(ctx, cfg.Port, cfg.Prober.Probe, host, addrs.Addrs), nil
}
