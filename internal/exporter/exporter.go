// Package exporter serves the DANE checks of package check as Prometheus
// metrics: the configured hosts and domains checked on a schedule, the
// latest results served from memory on /metrics (a scrape never triggers a
// check), and checks of one target during the request on /probe, in the
// multi-target pattern of Prometheus' blackbox exporter.
package exporter

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tlsactl/tlsactl/internal/check"
)

// Defaults of Options.
const (
	DefaultInterval     = 5 * time.Minute
	DefaultProbeTimeout = 30 * time.Second
	DefaultMaxProbes    = 16
	// DefaultTimeoutOffset is taken off a Prometheus scrape timeout, so the
	// answer reaches Prometheus before it gives up (as blackbox does).
	DefaultTimeoutOffset = 500 * time.Millisecond
)

// Host is a host checked on the schedule, at its SMTP port.
type Host struct {
	Name string
	Port uint16 // Options.Check.Port (25) when zero
}

// Options configure an Exporter.
type Options struct {
	// Check is the base configuration of every check: resolver, prober,
	// port, the concurrency limits, the per-host deadline, --warn-days.
	// OnResult and Now are the exporter's.
	Check   check.Config
	Domains []string // mail domains checked on the schedule (at Check.Port)
	Hosts   []Host   // MX hosts checked on the schedule
	// Interval between the starts of scheduled checks; a check that takes
	// longer delays the next one, never overlaps it.
	Interval      time.Duration
	ProbeTimeout  time.Duration // deadline of a /probe check
	TimeoutOffset time.Duration // taken off X-Prometheus-Scrape-Timeout-Seconds; 0: DefaultTimeoutOffset, negative: none
	MaxProbes     int           // /probe checks at once; more get 503
	// Record, when set, records a finished check in the ledger (the
	// rollover engine's TLSA sightings). Probes record in the background.
	Record func(ctx context.Context, rep check.Report) error
	Logger *slog.Logger
}

// Exporter is the scheduler and the HTTP handlers.
type Exporter struct {
	o       Options
	latest  *results
	reg     *prometheus.Registry
	sem     chan struct{}
	bg      sync.WaitGroup // ledger writes of probes
	bgCtx   context.Context
	stopBg  context.CancelFunc
	cycles  prometheus.Counter
	cycleD  prometheus.Gauge
	cycleT  prometheus.Gauge
	probes  *prometheus.CounterVec
	inFly   prometheus.Gauge
	ledgerE prometheus.Counter
}

// New returns an Exporter; Run starts its schedule, Handler serves it.
func New(o Options) *Exporter {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	switch {
	case o.TimeoutOffset == 0:
		o.TimeoutOffset = DefaultTimeoutOffset
	case o.TimeoutOffset < 0:
		o.TimeoutOffset = 0 // none
	}
	if o.MaxProbes <= 0 {
		o.MaxProbes = DefaultMaxProbes
	}
	if o.Check.Port == 0 {
		o.Check.Port = 25
	}
	if o.Check.HostTimeout <= 0 {
		o.Check.HostTimeout = check.DefaultHostTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Exporter{o: o, latest: newResults(), reg: prometheus.NewRegistry(), sem: make(chan struct{}, o.MaxProbes)}
	e.bgCtx, e.stopBg = context.WithCancel(context.Background())
	e.cycles = prometheus.NewCounter(prometheus.CounterOpts{Name: "tlsactl_exporter_check_cycles_total",
		Help: "Scheduled checks of all configured hosts and domains completed since the exporter started."})
	e.cycleD = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tlsactl_exporter_last_cycle_duration_seconds",
		Help: "Seconds the last scheduled check of all configured hosts and domains took."})
	e.cycleT = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tlsactl_exporter_last_cycle_timestamp_seconds",
		Help: "Unix time at which the last scheduled check of all configured hosts and domains finished (0: none yet)."})
	e.probes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tlsactl_exporter_probes_total",
		Help: "Requests to /probe by outcome: success (probe_success 1), failure (probe_success 0), rejected (503: too many probes at once), bad_request (400)."},
		[]string{"result"})
	for _, r := range []string{"success", "failure", "rejected", "bad_request"} {
		e.probes.WithLabelValues(r)
	}
	e.inFly = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tlsactl_exporter_probes_in_flight",
		Help: "/probe checks running now (at most the --max-probes limit)."})
	e.ledgerE = prometheus.NewCounter(prometheus.CounterOpts{Name: "tlsactl_exporter_ledger_errors_total",
		Help: "Checks whose TLSA sightings could not be recorded in the ledger of the state directory."})
	e.reg.MustRegister(e.latest, e.cycles, e.cycleD, e.cycleT, e.probes, e.inFly, e.ledgerE,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return e
}

// Run checks the configured hosts and domains now and then every Interval
// until ctx ends. It returns when the check in progress has stopped.
func (e *Exporter) Run(ctx context.Context) {
	if len(e.o.Domains) == 0 && len(e.o.Hosts) == 0 {
		e.o.Logger.Info("no hosts or domains configured: /metrics serves the exporter's own metrics only; use /probe")
		<-ctx.Done()
		return
	}
	for {
		start := time.Now()
		e.cycle(ctx)
		if ctx.Err() != nil {
			return
		}
		t := time.NewTimer(time.Until(start.Add(e.o.Interval)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Close waits for the ledger writes of finished probes, at most until ctx
// ends (then they are cancelled).
func (e *Exporter) Close(ctx context.Context) {
	done := make(chan struct{})
	go func() { e.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		e.stopBg()
		<-done
	}
	e.stopBg()
}

// cycle runs one scheduled check: one check.Run per SMTP port (the domains
// go with Check.Port). Results replace the served ones as they come in.
func (e *Exporter) cycle(ctx context.Context) {
	start := time.Now()
	byPort := map[uint16][]string{}
	seen := map[string]bool{}
	for _, h := range e.o.Hosts {
		p := h.Port
		if p == 0 {
			p = e.o.Check.Port
		}
		k := fmt.Sprintf("%s %d", hostKey(h.Name), p)
		if !seen[k] {
			seen[k] = true
			byPort[p] = append(byPort[p], h.Name)
		}
	}
	if len(e.o.Domains) > 0 && byPort[e.o.Check.Port] == nil {
		byPort[e.o.Check.Port] = []string{}
	}
	ports := make([]int, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, int(p))
	}
	sort.Ints(ports)
	e.latest.mark()
	var counts [4]int
	for _, p := range ports {
		var domains []string
		if uint16(p) == e.o.Check.Port {
			domains = e.o.Domains
		}
		out := e.check(ctx, uint16(p), e.o.Check.HostTimeout, domains, byPort[uint16(p)], e.latest.putHost, e.latest.putDomain)
		<-out.done
		for _, h := range out.hostList() {
			counts[min(int(h.Report.Status), 3)]++
		}
		if ctx.Err() != nil {
			return // stopping: keep what is served
		}
		e.record(ctx, out, false)
	}
	e.latest.sweep()
	d := time.Since(start)
	e.cycles.Inc()
	e.cycleD.Set(d.Seconds())
	e.cycleT.Set(float64(time.Now().UnixMilli()) / 1000)
	e.o.Logger.Info("scheduled check done", "duration", d.Round(time.Millisecond).String(),
		"ok", counts[0], "warning", counts[1], "critical", counts[2], "unknown", counts[3])
}

// outcome collects the results of one check.Run as they finish; done is
// closed when Run has returned.
type outcome struct {
	mu      sync.Mutex
	closed  bool
	hosts   []HostResult
	domains []check.DomainReport
	domSt   []check.Severity
	done    chan struct{}
}

func (o *outcome) hostList() []HostResult {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]HostResult(nil), o.hosts...)
}

// freeze stops collecting (a probe that answers at its deadline) and
// returns what was collected.
func (o *outcome) freeze() ([]HostResult, []check.DomainReport, []check.Severity) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	return append([]HostResult(nil), o.hosts...), append([]check.DomainReport(nil), o.domains...), append([]check.Severity(nil), o.domSt...)
}

// check starts check.Run in a goroutine for domains and hosts at port with
// the per-host deadline hostTimeout and returns at once.
func (e *Exporter) check(ctx context.Context, port uint16, hostTimeout time.Duration, domains, hosts []string,
	onHost func(HostResult), onDomain func(check.DomainReport)) *outcome {
	out := &outcome{done: make(chan struct{})}
	t := newTracker()
	cfg := e.o.Check
	cfg.Port = port
	cfg.HostTimeout = hostTimeout
	cfg.Resolver = trackedResolver{r: cfg.Resolver, t: t}
	cfg.Prober = trackedProber{p: cfg.Prober, t: t}
	cfg.Now = nil
	cfg.OnResult = func(r check.Result) {
		now := time.Now()
		out.mu.Lock()
		defer out.mu.Unlock()
		if out.closed {
			return
		}
		switch {
		case r.Host != nil:
			start, cut, ok := t.get(r.Host.Host)
			if !ok {
				start = now
			}
			success := !cut && ctx.Err() == nil && now.Sub(start) < hostTimeout-deadlineSlack
			for _, f := range r.Findings {
				if f.Severity == check.Unknown {
					success = false
				}
			}
			h := HostResult{Report: *r.Host, Success: success, Duration: now.Sub(start), Finished: now}
			out.hosts = append(out.hosts, h)
			if onHost != nil {
				onHost(h)
			}
		case r.Domain != nil:
			out.domains = append(out.domains, *r.Domain)
			out.domSt = append(out.domSt, r.Status)
			if onDomain != nil {
				onDomain(*r.Domain)
			}
		}
	}
	go func() {
		defer close(out.done)
		check.Run(ctx, cfg, domains, hosts)
	}()
	return out
}

// record writes the hosts of out to the ledger: now, or for a probe in the
// background (a ledger lock held by a rollover must not delay the answer).
func (e *Exporter) record(ctx context.Context, out *outcome, background bool) {
	if e.o.Record == nil {
		return
	}
	var rep check.Report
	for _, h := range out.hostList() {
		rep.Hosts = append(rep.Hosts, h.Report)
	}
	if len(rep.Hosts) == 0 {
		return
	}
	do := func(ctx context.Context) {
		if err := e.o.Record(ctx, rep); err != nil {
			e.ledgerE.Inc()
			e.o.Logger.Warn("the ledger was not updated", "error", strings.Join(strings.Fields(err.Error()), " "))
		}
	}
	if !background {
		do(ctx)
		return
	}
	e.bg.Go(func() { do(e.bgCtx) })
}

// Handler serves /metrics, /probe and a landing page on /.
func (e *Exporter) Handler() http.Handler {
	mux := http.NewServeMux()
	opts := promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(e.o.Logger.Handler(), slog.LevelError), ErrorHandling: promhttp.ContinueOnError}
	mux.Handle("/metrics", promhttp.InstrumentMetricHandler(e.reg, promhttp.HandlerFor(e.reg, opts)))
	mux.HandleFunc("/probe", e.serveProbe)
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!DOCTYPE html><html><head><title>tlsactl exporter</title></head><body><h1>tlsactl exporter</h1>
<p><a href="/metrics">/metrics</a>: the configured hosts and domains, checked on a schedule.</p>
<p>/probe?target=example.nl (a mail domain: its MX hosts) or /probe?host=mx.example.nl (optional &amp;port=25): checked now.</p>
</body></html>`)
	})
	return mux
}

// probeTimeout is the probe's deadline: --probe-timeout, or the scrape
// timeout Prometheus announces minus the offset when that is shorter.
func (e *Exporter) probeTimeout(r *http.Request) (time.Duration, error) {
	t := e.o.ProbeTimeout
	if v := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"); v != "" {
		secs, err := strconv.ParseFloat(v, 64)
		if err != nil || secs <= 0 {
			return 0, fmt.Errorf("bad X-Prometheus-Scrape-Timeout-Seconds %q: want a positive number of seconds", v)
		}
		st := time.Duration(secs * float64(time.Second))
		if st-e.o.TimeoutOffset > 0 {
			st -= e.o.TimeoutOffset
		} else {
			st /= 2 // an offset larger than the whole timeout: leave half for the answer
		}
		t = min(t, st)
	}
	return t, nil
}

func (e *Exporter) serveProbe(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	bad := func(format string, args ...any) {
		e.probes.WithLabelValues("bad_request").Inc()
		http.Error(w, fmt.Sprintf(format, args...), http.StatusBadRequest)
	}
	q := r.URL.Query()
	target, host := strings.TrimSpace(q.Get("target")), strings.TrimSpace(q.Get("host"))
	if (target == "") == (host == "") {
		bad("give exactly one of target=DOMAIN (a mail domain: its MX hosts are checked) or host=MX-HOST")
		return
	}
	name := target + host
	if _, ok := dns.IsDomainName(name); !ok || strings.ContainsAny(name, " /:") {
		bad("%q is not a DNS name", name)
		return
	}
	port := e.o.Check.Port
	if p := q.Get("port"); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			bad("port=%q: want 1 to 65535", p)
			return
		}
		port = uint16(n)
	}
	timeout, err := e.probeTimeout(r)
	if err != nil {
		bad("%v", err)
		return
	}
	select {
	case e.sem <- struct{}{}:
	default:
		e.probes.WithLabelValues("rejected").Inc()
		http.Error(w, fmt.Sprintf("too many probes at once (at most %d): try again later", e.o.MaxProbes), http.StatusServiceUnavailable)
		return
	}
	e.inFly.Inc()
	release := func() { e.inFly.Dec(); <-e.sem }

	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	var domains, hosts []string
	if target != "" {
		domains = []string{target}
	} else {
		hosts = []string{host}
	}
	out := e.check(ctx, port, min(timeout, e.o.Check.HostTimeout), domains, hosts, nil, nil)
	finished := true
	select {
	case <-out.done:
	case <-ctx.Done():
		// check.Run returns moments after the deadline; a straggler is
		// not waited for beyond a short grace.
		grace := time.NewTimer(100 * time.Millisecond)
		select {
		case <-out.done:
		case <-grace.C:
			finished = false
		}
		grace.Stop()
	}
	dl, _ := ctx.Deadline()
	timedOut := ctx.Err() != nil || time.Until(dl) < deadlineSlack
	cancel()
	hs, ds, dst := out.freeze()
	// The semaphore slot is held until check.Run has really returned, so a
	// dead target never lets more checks pile up than --max-probes.
	go func() { <-out.done; release() }()

	success := finished && !timedOut
	for _, h := range hs {
		success = success && h.Success
	}
	for _, s := range dst {
		success = success && s != check.Unknown
	}
	if target != "" && len(ds) == 0 {
		success = false
	}
	if host != "" && len(hs) == 0 {
		success = false
	}
	if finished && !timedOut {
		e.record(ctx, out, true)
	}

	reg := prometheus.NewRegistry()
	res := newResults()
	for _, h := range hs {
		res.putHost(h)
	}
	for _, d := range ds {
		res.putDomain(d)
	}
	succ := prometheus.NewGauge(prometheus.GaugeOpts{Name: "probe_success",
		Help: "1 when the check of the target completed within the deadline (every lookup answered, every probe finished), else 0; the DANE verdict itself is tlsactl_host_status."})
	dur := prometheus.NewGauge(prometheus.GaugeOpts{Name: "probe_duration_seconds",
		Help: "Seconds the probe took."})
	reg.MustRegister(res, succ, dur)
	succ.Set(bool01(success))
	dur.Set(time.Since(start).Seconds())
	if success {
		e.probes.WithLabelValues("success").Inc()
	} else {
		e.probes.WithLabelValues("failure").Inc()
		e.o.Logger.Info("probe failed", "target", name, "port", port, "timeout", timeout.String(), "timed_out", timedOut)
	}
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}
