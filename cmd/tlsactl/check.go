package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/safefile"
	"github.com/tlsactl/tlsactl/internal/starttls"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
	"github.com/urfave/cli/v2"
)

const (
	flagResolver    = "resolver"
	flagWarnDays    = "warn-days"
	flagConcurrency = "concurrency"
	flagTimeout     = "timeout"
	flagPrometheus  = "prometheus"
	flagCheckHost   = "host"
	flagStartTLS    = "starttls"
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

POSITIONAL ARGUMENTS:
   DOMAIN   a mail domain whose MX hosts are checked (e.g. example.nl)

EXIT CODES (monitoring-plugin convention):
   0   OK
   1   WARNING: only one of two records matches, expiry within --warn-days, a single record
       (no rollover scheme), TLSA in an unsigned zone, an MX host without TLSA
   2   CRITICAL: TLSA secure but nothing usable matches, STARTTLS missing or failing where
       TLSA exists, DNSSEC bogus
   3   UNKNOWN: the resolver cannot be reached or lookups fail; also bad command-line input

EXAMPLES:
   tlsactl check example.nl
   tlsactl check --resolver 127.0.0.1:53 --json example.nl example.org
   tlsactl check --host mail.example.nl --warn-days 21 --prometheus /var/lib/node_exporter/tlsactl.prom`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagResolver, EnvVars: []string{"TLSACTL_RESOLVER"}, Usage: "validating resolver `ADDR` (host or host:port; default: first nameserver of /etc/resolv.conf)"},
			&cli.UintFlag{Name: flagPort, Aliases: []string{"p"}, Value: 25, Usage: "SMTP port to probe and to look up TLSA for"},
			&cli.StringFlag{Name: flagStartTLS, Aliases: []string{"t"}, Value: "auto", Usage: "how TLS starts: smtp, imap, pop3, none (direct TLS) or auto (by port: 25/587 smtp, 143 imap, 110 pop3, 465/993/995/443 direct; smtp otherwise)"},
			&cli.StringSliceFlag{Name: flagCheckHost, Usage: "check this MX `HOST` directly (repeatable)"},
			&cli.IntFlag{Name: flagWarnDays, Value: 14, Usage: "warn when a certificate expires within `DAYS`"},
			&cli.IntFlag{Name: flagConcurrency, Value: 32, Usage: "hosts checked at once"},
			&cli.DurationFlag{Name: flagTimeout, Value: 30 * time.Second, Usage: "deadline for one host (all lookups and probes)"},
			&cli.BoolFlag{Name: flagJSON, Usage: "print the whole report as JSON"},
			&cli.StringFlag{Name: flagPrometheus, Usage: "also write a node-exporter textfile `FILE` (atomically)"},
			&cli.StringFlag{Name: flagStateDir, EnvVars: []string{"TLSACTL_STATE_DIR"}, Usage: "record every secure TLSA RRset seen in the ledger of this state `DIR`, so rollovers know how long each has been published (a check timer every few minutes makes ages known)"},
			&cli.StringFlag{Name: flagConfig, Usage: "configuration `FILE`: its state_dir is the ledger's, as --state-dir"},
		},
		Action: runCheck,
	}
}

func runCheck(c *cli.Context) error {
	unknown := func(err error) error { return &exitError{code: int(check.Unknown), err: err} }
	domains := c.Args().Slice()
	hosts := c.StringSlice(flagCheckHost)
	if len(domains) == 0 && len(hosts) == 0 {
		return unknown(errors.New("nothing to check: give a mail DOMAIN or --host HOST"))
	}
	port := c.Uint(flagPort)
	if port < 1 || port > 65535 {
		return unknown(fmt.Errorf("--port %d: want 1 to 65535", port))
	}
	if c.Int(flagConcurrency) < 1 {
		return unknown(fmt.Errorf("--concurrency %d: want at least 1", c.Int(flagConcurrency)))
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
	cfg := check.Config{
		Resolver:    &dnsx.Resolver{Addr: addr},
		Prober:      check.STARTTLSProber{Protocol: proto},
		Port:        uint16(port),
		Concurrency: c.Int(flagConcurrency),
		HostTimeout: c.Duration(flagTimeout),
		WarnDays:    c.Int(flagWarnDays),
	}
	rep := check.Run(c.Context, cfg, domains, hosts)
	if err := recordCheck(c, rep, addr); err != nil {
		fmt.Fprintf(c.App.ErrWriter, "tlsactl: warning: the ledger was not updated: %s\n", oneLine(err.Error()))
	}
	if p := c.String(flagPrometheus); p != "" {
		if err := writePrometheus(p, rep); err != nil {
			return unknown(err)
		}
	}
	if c.Bool(flagJSON) {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
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
		host := strings.TrimSuffix(h.Host, ".")
		tl := "no TLSA"
		if h.TLSA.Present {
			tl = fmt.Sprintf("TLSA %s (%d record(s), TTL %d)", h.TLSA.Status, len(h.TLSA.Records), h.TLSA.TTL)
		} else if h.TLSA.Status == "bogus" || h.TLSA.Status == "failed" {
			tl = "TLSA " + h.TLSA.Status
		}
		fmt.Fprintf(&b, "%s %s: %s\n", h.Status, host, tl)
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
		}
	}
	fmt.Fprintf(&b, "%s: %d host(s) checked, %d finding(s)\n", rep.Status, len(rep.Hosts), countActionable(rep.Findings))
	_, err := io.WriteString(w, b.String())
	return err
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

// writePrometheus writes a node-exporter textfile atomically (see
// writeFileAtomic); the temporary name does not end in .prom, so the
// collector never reads it.
func writePrometheus(path string, rep check.Report) error {
	var b strings.Builder
	b.WriteString("# HELP tlsactl_host_status Check status per MX host address: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.\n# TYPE tlsactl_host_status gauge\n")
	for _, h := range rep.Hosts {
		for _, a := range h.Addresses {
			fmt.Fprintf(&b, "tlsactl_host_status{host=%q,address=%q} %d\n", strings.TrimSuffix(h.Host, "."), a.Address, int(check.Worst(h.Status, a.Status)))
		}
	}
	b.WriteString("# HELP tlsactl_tlsa_matching_records Usable TLSA records that match the served chain.\n# TYPE tlsactl_tlsa_matching_records gauge\n")
	for _, h := range rep.Hosts {
		for _, a := range h.Addresses {
			fmt.Fprintf(&b, "tlsactl_tlsa_matching_records{host=%q,address=%q} %d\n", strings.TrimSuffix(h.Host, "."), a.Address, a.Matched)
		}
	}
	b.WriteString("# HELP tlsactl_certificate_expiry_days Days until the served leaf certificate expires.\n# TYPE tlsactl_certificate_expiry_days gauge\n")
	for _, h := range rep.Hosts {
		for _, a := range h.Addresses {
			if a.DaysToExpiry != nil {
				fmt.Fprintf(&b, "tlsactl_certificate_expiry_days{host=%q,address=%q} %g\n", strings.TrimSuffix(h.Host, "."), a.Address, *a.DaysToExpiry)
			}
		}
	}
	return writeFileAtomic(path, []byte(b.String()), 0o644)
}

// writeFileAtomic writes data to path with mode through a temporary file in
// the same directory, fsynced and renamed (see [safefile.Write]), so readers
// never see a partial file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	return safefile.Write(path, data, safefile.Options{Mode: mode})
}

// recordCheck adds every secure TLSA RRset the check saw to the ledger of
// its owner (after CNAMEs), when a state directory is given (--state-dir,
// or the state_dir of --config). What the validating resolver returned may
// be a cached copy: it is recorded as a resolver sighting.
func recordCheck(c *cli.Context, rep check.Report, resolver string) error {
	dir := c.String(flagStateDir)
	if dir == "" && c.String(flagConfig) != "" {
		cfg, err := config.Load(c.String(flagConfig))
		if err != nil {
			return err
		}
		dir = cfg.StateDir
	}
	if dir == "" {
		return nil
	}
	store, err := rollover.NewFileStore(dir)
	if err != nil {
		return err
	}
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
		if _, _, err := rollover.Record(c.Context, store, h.TLSA.Owner, []rollover.Sighting{s}, 0, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
