package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/exporter"
	"github.com/tlsactl/tlsactl/internal/starttls"
	"github.com/urfave/cli/v2"
)

const (
	flagListen          = "listen"
	flagInterval        = "interval"
	flagProbeTimeout    = "probe-timeout"
	flagMaxProbes       = "max-probes"
	flagShutdownTimeout = "shutdown-timeout"
	defaultListen       = "127.0.0.1:9748"
)

func createServe() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "serve DANE checks as a Prometheus exporter (/metrics on a schedule, /probe on demand)",
		ArgsUsage: "[DOMAIN…]",
		Description: `Runs the checks of "tlsactl check" as a Prometheus exporter.

/metrics     the hosts of --config ([[host]] entries, each at its port), every --host and the
             MX hosts of every DOMAIN, checked now and then every --interval with the bounds
             of --concurrency, --per-address and --dns-concurrency. A scrape serves the latest
             results from memory and never starts a check. Also the exporter's own metrics
             (tlsactl_exporter_*, go_*, process_*).
/probe       ?target=DOMAIN (a mail domain: MX → hosts) or ?host=MX-HOST, optional &port=N:
             checked during the request, as Prometheus' blackbox exporter does, within
             --probe-timeout or the X-Prometheus-Scrape-Timeout-Seconds header (minus 0.5 s),
             whichever is shorter. Returns probe_success, probe_duration_seconds and the
             per-host metrics. At most --max-probes run at once; more get 503.

Every secure TLSA RRset seen is recorded in the ledger of --state-dir (or the state_dir of
--config), as "tlsactl check" does, so rollovers know how long each has been published.

METRICS (per host address {host,address}; per host {host}; per domain {domain}):
   tlsactl_host_status                 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
   tlsactl_tlsa_matching_records       usable TLSA records matching the served chain
   tlsactl_tlsa_usable_records         TLSA records usable for SMTP
   tlsactl_certificate_expiry_days     days until the served leaf expires
   tlsactl_dane_break_days             forecast: days until no record matches
   tlsactl_dane_single_record_days     forecast: days until only one record matches
   tlsactl_tlsa_dnssec_bogus           1 when the TLSA lookup is DNSSEC-bogus
   tlsactl_check_success               1 when the host's check completed
   tlsactl_check_duration_seconds      how long the host's check took
   tlsactl_last_check_timestamp_seconds  when the host's check finished
   tlsactl_domain_mx_dnssec_secure     1 when the domain's MX RRset is DNSSEC-secure

SIGTERM or SIGINT stops the schedule and shuts the server down gracefully (in-flight
requests get --shutdown-timeout); the exit code is then 0.

EXAMPLES:
   tlsactl serve --config /etc/tlsactl/tlsactl.toml example.nl example.org
   tlsactl serve --listen :9748 --resolver 127.0.0.1:53 --host mail.example.nl
   curl 'http://127.0.0.1:9748/probe?target=example.nl'

EXIT CODES:
   0   stopped by SIGTERM or SIGINT after a graceful shutdown
   1   the listener or the first check could not start (the reason is shown)
   2   bad input or configuration`,
		Flags: slices.Concat([]cli.Flag{
			&cli.StringFlag{Name: flagListen, EnvVars: []string{"TLSACTL_LISTEN"}, Value: defaultListen, Usage: "serve HTTP on `ADDR` (host:port; \":9748\" for every interface)"},
			&cli.DurationFlag{Name: flagInterval, Value: exporter.DefaultInterval, Usage: "check the configured hosts and domains every `DURATION`"},
			&cli.DurationFlag{Name: flagProbeTimeout, Value: exporter.DefaultProbeTimeout, Usage: "deadline of a /probe check (a shorter X-Prometheus-Scrape-Timeout-Seconds wins)"},
			&cli.IntFlag{Name: flagMaxProbes, Value: exporter.DefaultMaxProbes, Usage: "at most `N` /probe checks at once; more get 503"},
			&cli.DurationFlag{Name: flagShutdownTimeout, Value: 10 * time.Second, Usage: "on SIGTERM, wait at most `DURATION` for requests in flight"},
			&cli.StringFlag{Name: flagConfig, EnvVars: []string{"TLSACTL_CONFIG"}, Usage: "configuration `FILE`: its [[host]] entries are checked, its resolver and state_dir used"},
			&cli.StringSliceFlag{Name: flagCheckHost, Usage: "also check this MX `HOST` on the schedule (repeatable)"},
			&cli.StringFlag{Name: flagDomainsFrom, Usage: "also check the mail domains in `FILE`, one a line (blanks and # comments ignored)"},
			&cli.StringFlag{Name: flagResolver, EnvVars: []string{"TLSACTL_RESOLVER"}, Usage: "validating resolver `ADDR` (default: the configuration's, else the first nameserver of /etc/resolv.conf)"},
			&cli.UintFlag{Name: flagPort, Aliases: []string{"p"}, Value: 25, Usage: "SMTP port of --host, the domains' MX hosts and /probe (a [[host]] port wins for that host)"},
			&cli.StringFlag{Name: flagStartTLS, Aliases: []string{"t"}, Value: "auto", Usage: "how TLS starts: smtp, imap, pop3, none (direct TLS) or auto (by port)"},
			&cli.IntFlag{Name: flagWarnDays, Value: 14, Usage: "warn when a certificate expires within `DAYS`"},
		}, checkLimitFlags(), []cli.Flag{
			&cli.DurationFlag{Name: flagTimeout, Value: check.DefaultHostTimeout, Usage: "deadline for one host of a scheduled check (all lookups and probes)"},
			&cli.StringFlag{Name: flagStateDir, EnvVars: []string{"TLSACTL_STATE_DIR"}, Usage: "record every secure TLSA RRset seen in the ledger of this state `DIR`"},
		}),
		Action: runServe,
	}
}

func runServe(c *cli.Context) error {
	domains := c.Args().Slice()
	if f := c.String(flagDomainsFrom); f != "" {
		more, err := domainsFrom(c, f)
		if err != nil {
			return badInput(fmt.Errorf("--%s: %w", flagDomainsFrom, err))
		}
		domains = append(domains, more...)
	}
	port := c.Uint(flagPort)
	if port < 1 || port > 65535 {
		return badInput(fmt.Errorf("--port %d: want 1 to 65535", port))
	}
	for _, f := range []string{flagInterval, flagProbeTimeout, flagTimeout} {
		if c.Duration(f) <= 0 {
			return badInput(fmt.Errorf("--%s %s: want a positive duration", f, c.Duration(f)))
		}
	}
	if err := checkLimits(c, flagMaxProbes); err != nil {
		return badInput(err)
	}
	proto, err := starttls.ParseProtocol(c.String(flagStartTLS))
	if err != nil {
		return badInput(fmt.Errorf("--starttls: %w", err))
	}
	var hosts []exporter.Host
	for _, h := range c.StringSlice(flagCheckHost) {
		hosts = append(hosts, exporter.Host{Name: h, Port: uint16(port)})
	}
	addr := c.String(flagResolver)
	if p := c.String(flagConfig); p != "" {
		cfg, err := config.Load(p)
		if err != nil {
			return badInput(err)
		}
		for _, h := range cfg.Hosts {
			hosts = append(hosts, exporter.Host{Name: h.Name, Port: uint16(h.Port)})
		}
		if addr == "" {
			addr = cfg.Resolver
		}
	}
	if addr == "" {
		if addr, err = dnsx.SystemResolver(); err != nil {
			return badInput(fmt.Errorf("no resolver: %w; give --resolver ADDR", err))
		}
	}
	// The ledger as `tlsactl check` records it (--state-dir, or the state
	// or state_dir of --config; nothing without either), read once.
	var record func(context.Context, check.Report) error
	if sp, ok, err := ledgerSpec(c); err != nil {
		return badInput(err)
	} else if ok {
		rec := &sightingRecorder{spec: sp, resolver: addr}
		defer rec.Close()
		record = rec.record
	}
	listen := c.String(flagListen)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return listenError(listen, err)
	}
	check.RaiseFileLimit()

	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
	exp := exporter.New(exporter.Options{
		Check:         checkConfig(c, addr, proto, port),
		Domains:       domains,
		Hosts:         hosts,
		Interval:      c.Duration(flagInterval),
		ProbeTimeout:  c.Duration(flagProbeTimeout),
		TimeoutOffset: exporter.DefaultTimeoutOffset,
		MaxProbes:     c.Int(flagMaxProbes),
		Record:        record,
		Logger:        log,
	})

	ctx := c.Context
	srv := &http.Server{
		Handler:           exp.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Requests (probes in flight) end when the process is told to stop.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	schedCtx, stopSched := context.WithCancel(ctx)
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		exp.Run(schedCtx)
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("serving", "url", "http://"+ln.Addr().String()+"/metrics", "resolver", addr,
		"hosts", len(hosts), "domains", len(domains), "interval", c.Duration(flagInterval).String())

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		stopSched()
		<-schedDone
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	}
	log.Info("stopping")
	stopSched()
	sctx, cancel := context.WithTimeout(context.Background(), c.Duration(flagShutdownTimeout))
	defer cancel()
	shutErr := srv.Shutdown(sctx)
	<-schedDone
	exp.Close(sctx)
	if shutErr != nil && !errors.Is(shutErr, context.DeadlineExceeded) {
		return fmt.Errorf("shutting down: %w", shutErr)
	}
	if shutErr != nil {
		srv.Close()
		log.Warn("requests still in flight at the shutdown deadline were closed", "shutdown_timeout", c.Duration(flagShutdownTimeout).String())
	}
	log.Info("stopped")
	return nil
}

// listenError explains a failed listen on --listen.
func listenError(listen string, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("--listen %s: the address is already in use (another tlsactl serve or exporter runs there?); stop it or choose another --listen", listen)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("--listen %s: permission denied (ports below 1024 need privileges); choose a port above 1023, e.g. %s", listen, defaultListen)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("--listen %s: no interface of this machine has that address", listen)
	}
	return badInput(fmt.Errorf("--listen %s: %s", listen, strings.TrimPrefix(err.Error(), "listen tcp ")))
}

// sightingRecorder records each check cycle's secure TLSA RRsets in the
// ledger of one store, opened at the first cycle (again at the next one
// when opening failed) and kept for the server's life: with a database a
// connection pool that reconnects by itself, not a new pool and new
// sessions every cycle.
type sightingRecorder struct {
	spec     storeSpec
	resolver string
	mu       sync.Mutex
	store    *stateStore
}

// record is exporter.Options.Record.
func (r *sightingRecorder) record(ctx context.Context, rep check.Report) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.store == nil {
		s, err := openStore(ctx, r.spec)
		if err != nil {
			return err
		}
		r.store = s
	}
	return recordSightingsIn(ctx, r.store, rep, r.resolver)
}

// Close closes the store, if one was opened.
func (r *sightingRecorder) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.store != nil {
		r.store.Close()
		r.store = nil
	}
}
