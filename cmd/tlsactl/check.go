package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/exporter"
	"github.com/tlsactl/tlsactl/internal/safefile"
	"github.com/tlsactl/tlsactl/internal/starttls"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
	"github.com/urfave/cli/v2"
)

const (
	flagResolver    = "resolver"
	flagWarnDays    = "warn-days"
	flagCritDays    = "critical-days"
	flagConcurrency = "concurrency"
	flagTimeout     = "timeout"
	flagPrometheus  = "prometheus"
	flagCheckHost   = "host"
	flagStartTLS    = "starttls"
	flagDomainsFrom = "domains-from"
	flagPerAddress  = "per-address"
	flagDNSConc     = "dns-concurrency"
)

func createCheck() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "check the DANE setup of mail domains or MX hosts live (DNSSEC, STARTTLS, TLSA, expiry)",
		ArgsUsage: "[DOMAIN…]",
		Description: `For each mail DOMAIN: its MX hosts; for each host (and each --host): every address,
STARTTLS on the SMTP port, the served chain, the TLSA RRset at _<port>._tcp.<host> with its
DNSSEC status from a validating resolver, each record's verdict (RFC 7672), days to expiry,
and the NCSC rules: TLSA present and secure, two records (a rollover scheme), at least one
matching on every address, the whole chain sent when a 2 x x record exists, every MX host
of a domain protected, the MX host name in the certificate.

The resolver must validate DNSSEC (Unbound, BIND, Knot Resolver on a trusted path): its AD
bit is trusted. SERVFAIL is reported as DNSSEC-bogus, never as "no TLSA".

FORECAST:
   For every address: when each usable record that matches now stops matching on its own
   (a DANE-TA record when the leaf or a certificate below the trust anchor expires; a DANE-EE
   record never, RFC 7671 §5.1), when DANE breaks (no such record matches any more) and when
   only one will be left; in the text output (a "forecast:" line), in --json ("forecast")
   and in --prometheus (tlsactl_dane_break_days, tlsactl_dane_single_record_days).

POSITIONAL ARGUMENTS:
   DOMAIN   a mail domain whose MX hosts are checked (e.g. example.nl)

LARGE RUNS:
   --domains-from FILE reads one domain a line ("-": stdin; blank lines and "#" comments
   ignored). Results are then streamed as each host and domain finishes: with --json one
   JSON object a line ({"type":"host",…}, {"type":"domain",…}), then {"type":"summary",…}
   with counts per status and per finding code; without --json the text lines of each host
   as it finishes, then the summary. Without --domains-from, --json prints one document.
   An MX host named by many domains is checked once. By default as many hosts are checked
   at once as the file-descriptor limit (raised to the hard limit) and a quarter of the
   available memory allow, at most 1024; at most --per-address probes go to one IP address
   at a time, and at most --dns-concurrency lookups to the resolver. When stderr is a
   terminal a progress bar shows done/total, rate, ETA and the worst status so far.

EXIT CODES (monitoring-plugin convention):
   0   OK
   1   WARNING: only one of two records matches, expiry within --warn-days, DANE breaking
       (forecast) within --warn-days, only one record left within --warn-days, a leaf that
       expires sooner than the TLSA TTL + margin, a single record (no rollover scheme), TLSA
       in an unsigned zone, an MX host without TLSA
   2   CRITICAL: TLSA secure but nothing usable matches, expiry or DANE breaking within
       --critical-days, STARTTLS missing or failing where TLSA exists, DNSSEC bogus
   3   UNKNOWN: the resolver cannot be reached or lookups fail; also bad command-line input

EXAMPLES:
   tlsactl check example.nl
   tlsactl check --resolver 127.0.0.1:53 --json example.nl example.org
   tlsactl check --host mail.example.nl --warn-days 21 --prometheus /var/lib/node_exporter/tlsactl.prom
   tlsactl check --domains-from government-domains.txt --json > results.jsonl`,
		Flags: slices.Concat([]cli.Flag{
			&cli.StringFlag{Name: flagResolver, EnvVars: []string{"TLSACTL_RESOLVER"}, Usage: "validating resolver `ADDR` (host or host:port; default: first nameserver of /etc/resolv.conf)"},
			&cli.UintFlag{Name: flagPort, Aliases: []string{"p"}, Value: 25, Usage: "SMTP port to probe and to look up TLSA for"},
			&cli.StringFlag{Name: flagStartTLS, Aliases: []string{"t"}, Value: "auto", Usage: "how TLS starts: smtp, imap, pop3, none (direct TLS) or auto (by port: 25/587 smtp, 143 imap, 110 pop3, 465/993/995/443 direct; smtp otherwise)"},
			&cli.StringSliceFlag{Name: flagCheckHost, Usage: "check this MX `HOST` directly (repeatable)"},
			&cli.IntFlag{Name: flagWarnDays, Value: 14, Usage: "warn when a certificate expires, DANE breaks (the forecast) or only one record will be left within `DAYS`"},
			&cli.IntFlag{Name: flagCritDays, Value: 7, Usage: "CRITICAL when a certificate expires or DANE breaks (the forecast) within `DAYS` (0: never for these)"},
			&cli.StringFlag{Name: flagDomainsFrom, Usage: "also check the domains in `FILE`, one a line (\"-\": stdin; blanks and # comments ignored), streaming the results"},
		}, checkLimitFlags(), []cli.Flag{
			&cli.DurationFlag{Name: flagTimeout, Value: 30 * time.Second, Usage: "deadline for one host (all lookups and probes)"},
			&cli.BoolFlag{Name: flagJSON, Usage: "print the whole report as JSON (with --domains-from: one JSON object a line)"},
			&cli.StringFlag{Name: flagPrometheus, Usage: "also write a node-exporter textfile `FILE` (atomically)"},
			&cli.StringFlag{Name: flagStateDir, EnvVars: []string{"TLSACTL_STATE_DIR"}, Usage: "record every secure TLSA RRset seen in the ledger of this state `DIR`, so rollovers know how long each has been published (a check timer every few minutes makes ages known)"},
			&cli.StringFlag{Name: flagConfig, Usage: "configuration `FILE`: its state_dir is the ledger's, as --state-dir"},
		}),
		Action:      runCheck,
		Subcommands: []*cli.Command{createCheckOutbound()},
	}
}

// checkLimitFlags are the flags that bound a check run, shared by check and
// serve: --concurrency, --per-address and --dns-concurrency.
func checkLimitFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: flagConcurrency, Usage: "hosts checked at once (0: derived from the file-descriptor limit and memory, at most 1024)"},
		&cli.IntFlag{Name: flagPerAddress, Value: check.DefaultPerAddress, Usage: "at most `N` probes to one IP address at a time"},
		&cli.IntFlag{Name: flagDNSConc, Value: check.DefaultDNSConcurrency, Usage: "at most `N` resolver lookups in flight"},
	}
}

// checkLimits validates the flags of checkLimitFlags and the further int
// flags atLeastOne, which must be at least 1.
func checkLimits(c *cli.Context, atLeastOne ...string) error {
	if c.Int(flagConcurrency) < 0 {
		return fmt.Errorf("--concurrency %d: want 0 (automatic) or more", c.Int(flagConcurrency))
	}
	for _, f := range append([]string{flagPerAddress, flagDNSConc}, atLeastOne...) {
		if c.Int(f) < 1 {
			return fmt.Errorf("--%s %d: want at least 1", f, c.Int(f))
		}
	}
	return nil
}

// checkConfig is the check.Config of the flags that check and serve share,
// with the validating resolver at addr and TLS started by proto on port.
func checkConfig(c *cli.Context, addr string, proto starttls.Protocol, port uint) check.Config {
	return check.Config{
		Resolver:       &dnsx.Resolver{Addr: addr},
		Prober:         check.STARTTLSProber{Protocol: proto},
		Port:           uint16(port),
		Concurrency:    c.Int(flagConcurrency),
		PerAddress:     c.Int(flagPerAddress),
		DNSConcurrency: c.Int(flagDNSConc),
		HostTimeout:    c.Duration(flagTimeout),
		WarnDays:       c.Int(flagWarnDays),
	}
}

func runCheck(c *cli.Context) error {
	unknown := func(err error) error { return &exitError{code: int(check.Unknown), err: err} }
	domains := c.Args().Slice()
	hosts := c.StringSlice(flagCheckHost)
	stream := c.IsSet(flagDomainsFrom)
	if stream {
		more, err := domainsFrom(c, c.String(flagDomainsFrom))
		if err != nil {
			return unknown(fmt.Errorf("--%s: %w", flagDomainsFrom, err))
		}
		domains = append(domains, more...)
	}
	if len(domains) == 0 && len(hosts) == 0 {
		return unknown(errors.New("nothing to check: give a mail DOMAIN, --domains-from FILE or --host HOST"))
	}
	port := c.Uint(flagPort)
	if port < 1 || port > 65535 {
		return unknown(fmt.Errorf("--port %d: want 1 to 65535", port))
	}
	if c.Int(flagCritDays) < 0 || c.Int(flagWarnDays) < 0 {
		return unknown(fmt.Errorf("--%s %d, --%s %d: want 0 or more", flagWarnDays, c.Int(flagWarnDays), flagCritDays, c.Int(flagCritDays)))
	}
	if err := checkLimits(c); err != nil {
		return unknown(err)
	}
	proto, err := starttls.ParseProtocol(c.String(flagStartTLS))
	if err != nil {
		return unknown(fmt.Errorf("--starttls: %w", err))
	}
	addr := c.String(flagResolver)
	if addr == "" {
		if addr, err = dnsx.SystemResolver(); err != nil {
			return unknown(fmt.Errorf("no resolver: %w; give --resolver ADDR", err))
		}
	}
	// Many hosts in flight need many sockets: use the hard limit.
	check.RaiseFileLimit()
	cfg := checkConfig(c, addr, proto, port)
	cfg.CriticalDays = c.Int(flagCritDays)
	// Progress counts domains and distinct direct hosts: one result each.
	direct := map[string]bool{}
	for _, h := range hosts {
		direct[dns.Fqdn(strings.ToLower(h))] = true
	}
	unit := "domains"
	if len(domains) == 0 {
		unit = "hosts"
	}
	prog := newProgress(c.App.ErrWriter, len(domains)+len(direct), unit)
	var st *streamer
	if stream {
		st = &streamer{w: c.App.Writer, json: c.Bool(flagJSON)}
	}
	sameTerminal := prog != nil && isTerminal(c.App.Writer)
	cfg.OnResult = func(r check.Result) {
		if st != nil {
			if sameTerminal {
				prog.clear() // streamed lines would run into the bar
			}
			st.result(r)
		}
		prog.result(r)
	}
	rep := check.Run(c.Context, cfg, domains, hosts)
	prog.finish()
	if err := recordCheck(c, rep, addr); err != nil {
		fmt.Fprintf(c.App.ErrWriter, "tlsactl: warning: the ledger was not updated: %s\n", oneLine(err.Error()))
	}
	if p := c.String(flagPrometheus); p != "" {
		if err := writePrometheus(p, rep); err != nil {
			return unknown(err)
		}
	}
	switch {
	case stream && st.err != nil:
		err = st.err
	case stream && c.Bool(flagJSON):
		err = json.NewEncoder(c.App.Writer).Encode(summaryLine{Type: "summary", Summary: check.Summarize(rep)})
	case stream:
		var b strings.Builder
		writeSummaryText(&b, check.Summarize(rep))
		fmt.Fprintf(&b, "%s: %d host(s) checked, %d finding(s)\n", rep.Status, len(rep.Hosts), countActionable(rep.Findings))
		_, err = io.WriteString(c.App.Writer, b.String())
	case c.Bool(flagJSON):
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	default:
		err = printCheckText(c.App.Writer, rep)
	}
	if err != nil {
		return err
	}
	if rep.Status != check.OK {
		return silentExit(rep.Status)
	}
	return nil
}

// printCheckText prints one line per finding a person can act on, then one
// summary line per host and address.
func printCheckText(w io.Writer, rep check.Report) error {
	var b strings.Builder
	for _, f := range rep.Findings {
		if f.Severity == check.OK {
			continue
		}
		b.WriteString(f.String())
		b.WriteByte('\n')
	}
	for _, h := range rep.Hosts {
		writeHostText(&b, h)
	}
	writeSummaryText(&b, check.Summarize(rep))
	fmt.Fprintf(&b, "%s: %d host(s) checked, %d finding(s)\n", rep.Status, len(rep.Hosts), countActionable(rep.Findings))
	_, err := io.WriteString(w, b.String())
	return err
}

// writeHostText writes a host's summary line and one line per address.
func writeHostText(b *strings.Builder, h check.HostReport) {
	host := strings.TrimSuffix(h.Host, ".")
	tl := "no TLSA"
	if h.TLSA.Present {
		tl = fmt.Sprintf("TLSA %s (%d record(s), TTL %d)", h.TLSA.Status, len(h.TLSA.Records), h.TLSA.TTL)
	} else if h.TLSA.Status == "bogus" || h.TLSA.Status == "failed" {
		tl = "TLSA " + h.TLSA.Status
	}
	fmt.Fprintf(b, "%s %s: %s\n", h.Status, host, tl)
	for _, a := range h.Addresses {
		line := fmt.Sprintf("  [%s] %s", a.Address, a.Status)
		switch {
		case a.Error != "":
			line += ": " + a.Error
		default:
			line += fmt.Sprintf(": STARTTLS %s, %d of %d usable record(s) match", a.TLSVersion, a.Matched, a.Usable)
			if a.DaysToExpiry != nil {
				line += fmt.Sprintf(", certificate expires in %.1f days", *a.DaysToExpiry)
			}
		}
		b.WriteString(line + "\n")
		if a.Forecast != nil {
			b.WriteString("    forecast: " + check.ForecastText(a.Forecast) + "\n")
		}
	}
}

// domainsFrom reads the domains of --domains-from: a file, or stdin for "-".
func domainsFrom(c *cli.Context, name string) ([]string, error) {
	if name == "-" {
		return readDomains(c.App.Reader, "stdin")
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readDomains(f, name)
}

func countActionable(fs []check.Finding) int {
	n := 0
	for _, f := range fs {
		if f.Severity != check.OK {
			n++
		}
	}
	return n
}

// writePrometheus writes the check's node-exporter textfile (the
// exporter's series and help texts; see exporter.WriteTextfile).
func writePrometheus(path string, rep check.Report) error {
	return exporter.WriteTextfile(path, rep)
}

// writeFileAtomic writes data to path with mode through a temporary file in
// the same directory, fsynced and renamed (see [safefile.Write]), so readers
// never see a partial file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	return safefile.Write(path, data, safefile.Options{Mode: mode})
}

// recordCheck adds every secure TLSA RRset the check saw to the ledger of
// its owner (after CNAMEs), when a state is given (see ledgerSpec).
func recordCheck(c *cli.Context, rep check.Report, resolver string) error {
	sp, ok, err := ledgerSpec(c)
	if err != nil || !ok {
		return err
	}
	return recordSightings(c.Context, sp, rep, resolver)
}

// ledgerSpec returns the state checks record their sightings in:
// --state-dir, or the state or state_dir of --config (a directory or the
// shared database); false when neither names one.
func ledgerSpec(c *cli.Context) (storeSpec, bool, error) {
	if c.String(flagStateDir) != "" {
		return storeSpecFor(c, nil), true, nil
	}
	if c.String(flagConfig) == "" {
		return storeSpec{}, false, nil
	}
	cfg, err := config.Load(c.String(flagConfig))
	if err != nil {
		return storeSpec{}, false, err
	}
	if cfg.State == "" && cfg.StateDir == "" {
		return storeSpec{}, false, nil
	}
	return storeSpecFor(c, cfg), true, nil
}

// recordSightings records every secure TLSA RRset of rep in the state sp
// under ctx. What the validating resolver returned may be a cached copy: it
// is recorded as a resolver sighting.
func recordSightings(ctx context.Context, sp storeSpec, rep check.Report, resolver string) error {
	store, err := openStore(ctx, sp)
	if err != nil {
		return err
	}
	defer store.Close()
	return recordSightingsIn(ctx, store, rep, resolver)
}

// recordSightingsIn is recordSightings into a store already open.
func recordSightingsIn(ctx context.Context, store *stateStore, rep check.Report, resolver string) error {
	now := time.Now()
	var errs []error
	for _, h := range rep.Hosts {
		if !h.TLSA.Present || h.TLSA.Status != dnsx.Secure.String() {
			continue
		}
		var recs []tlsa.Record
		for _, r := range h.TLSA.Records {
			rec, err := tlsa.ParseRecord(r)
			if err != nil {
				continue
			}
			recs = append(recs, rec)
		}
		s := rollover.Sighting{Kind: rollover.SourceResolver, Source: "resolver " + resolver, Records: recs, TTL: h.TLSA.TTL}
		if _, _, err := rollover.Record(ctx, store.fullStore, h.TLSA.Owner, []rollover.Sighting{s}, 0, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
