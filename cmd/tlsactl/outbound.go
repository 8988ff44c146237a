package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/outbound"
	"github.com/urfave/cli/v2"
)

const (
	flagSigned        = "signed"
	flagBogus         = "bogus"
	flagPostfixConfig = "postfix-config"
	flagMTA           = "mta"
	flagEximBinary    = "exim-binary"
	flagEximConfig    = "exim-config"
)

func createCheckOutbound() *cli.Command {
	return &cli.Command{
		Name:  "outbound",
		Usage: "check that this sending server validates DANE: a validating resolver on a trusted path, and an MTA that enforces DANE",
		Description: `Run on a sending mail server. Checks, one finding a line with the setting to change:

RESOLVER (the one the MTA uses: the first nameserver of /etc/resolv.conf, or --resolver)
   a signed name (--signed) is answered with the AD bit; a deliberately broken name (--bogus)
   gets SERVFAIL, and with checking disabled (CD) it resolves, which proves the SERVFAIL was
   the validator's; the resolver is on loopback (127.0.0.0/8, ::1), else WARNING: run a local
   validating resolver (Unbound).

MTA (--mta auto: Postfix if postconf is found or --postfix-config is given, else Exim)
   Postfix, from "postconf -x" and "postconf -P -x" (-c DIR with --postfix-config DIR):
   smtp_tls_security_level = dane or dane-only, smtp_dns_support_level = dnssec,
   disable_dns_lookups not yes, smtp_host_lookup including dns, no smtp_tls_policy_maps entry
   of none, may or encrypt (texthash: files are read, hash:/lmdb:/btree:/cdb: listed with
   "postmap -s"), no master.cf -o override that weakens these, and relays (relayhost,
   transport_maps next hops, default_transport with a next hop) reported as WARNING.
   Exim, from "exim -bP routers" and "exim -bP transports": hosts_try_dane (or
   hosts_require_dane) = * on every smtp transport, dnssec_request_domains = * on dnslookup
   routers, manualroute smarthosts reported as WARNING.

EXIT CODES (monitoring-plugin convention, as tlsactl check):
   0   OK: DANE is enforced, through a validating resolver on loopback
   1   WARNING: resolver not on loopback, a destination or relay where DANE is weakened
   2   CRITICAL: DANE not enforced (security level, DNSSEC support), resolver not validating
   3   UNKNOWN: resolver unreachable, configuration unreadable; also bad command-line input

EXAMPLES:
   tlsactl check outbound
   tlsactl check outbound --resolver 127.0.0.1 --postfix-config /etc/postfix-out --json
   tlsactl check outbound --mta exim --exim-binary /usr/sbin/exim4`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagResolver, EnvVars: []string{"TLSACTL_RESOLVER"}, Usage: "resolver `ADDR` the MTA uses (host or host:port; default: first nameserver of /etc/resolv.conf)"},
			&cli.StringFlag{Name: flagSigned, Value: outbound.DefaultSignedName, Usage: "a DNSSEC-signed `NAME`: the resolver must answer it with the AD bit"},
			&cli.StringFlag{Name: flagBogus, Value: outbound.DefaultBogusName, Usage: "a deliberately broken (bogus) `NAME`: the resolver must answer SERVFAIL"},
			&cli.StringFlag{Name: flagMTA, Value: "auto", Usage: "MTA to audit: auto, postfix, exim or none"},
			&cli.StringFlag{Name: flagPostfixConfig, Usage: "Postfix configuration `DIR` (postconf -c DIR); implies --mta postfix under auto"},
			&cli.StringFlag{Name: flagEximBinary, Usage: "Exim binary `PATH` (default: exim, then exim4)"},
			&cli.StringFlag{Name: flagEximConfig, Usage: "Exim configuration `FILE` (exim -C FILE)"},
			&cli.DurationFlag{Name: flagTimeout, Value: 30 * time.Second, Usage: "deadline for the whole check"},
			&cli.BoolFlag{Name: flagJSON, Usage: "print the report as JSON"},
		},
		Action: runCheckOutbound,
	}
}

func runCheckOutbound(c *cli.Context) error {
	unknown := func(err error) error { return &exitError{code: int(check.Unknown), err: err} }
	if c.NArg() > 0 {
		return unknown(fmt.Errorf("unexpected argument %q (check outbound takes only flags)", c.Args().First()))
	}
	addr := c.String(flagResolver)
	if addr == "" {
		var err error
		if addr, err = dnsx.SystemResolver(); err != nil {
			return unknown(fmt.Errorf("no resolver: %w; give --resolver ADDR", err))
		}
	}
	mta := strings.ToLower(c.String(flagMTA))
	switch mta {
	case "auto":
		switch {
		case c.IsSet(flagPostfixConfig):
			mta = "postfix"
		case c.IsSet(flagEximBinary) || c.IsSet(flagEximConfig):
			mta = "exim"
		default:
			if _, err := outbound.FindBinary("postconf"); err == nil {
				mta = "postfix"
			} else if _, err := outbound.FindExim(); err == nil {
				mta = "exim"
			} else {
				mta = ""
			}
		}
	case "postfix", "exim", "none":
	default:
		return unknown(fmt.Errorf("--mta %q: want auto, postfix, exim or none", mta))
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration(flagTimeout))
	defer cancel()

	var rep outbound.Report
	var rf []outbound.Finding
	rep.Resolver, rf = outbound.CheckResolver(ctx, outbound.ResolverConfig{Addr: addr, Signed: c.String(flagSigned), Bogus: c.String(flagBogus)})
	var mf []outbound.Finding
	switch mta {
	case "postfix":
		mf = outbound.AuditPostfix(ctx, outbound.PostfixConfig{ConfigDir: c.String(flagPostfixConfig)})
	case "exim":
		mf = outbound.AuditExim(ctx, outbound.EximConfig{Binary: c.String(flagEximBinary), ConfigFile: c.String(flagEximConfig)})
	case "":
		mf = []outbound.Finding{{Severity: outbound.Unknown, Code: "mta-not-found", Setting: "mta",
			Message: "neither postconf nor exim found: the MTA's DANE settings were not checked", Fix: "give --postfix-config DIR, --exim-binary PATH, or --mta none"}}
	}
	if mta != "" && mta != "none" {
		rep.MTA = mta
		rep.Enforced = outbound.Enforcing(mf)
	}
	rep.Findings = append(rf, mf...)
	rep.Finish()

	if c.Bool(flagJSON) {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		var b strings.Builder
		for _, f := range rep.Findings {
			b.WriteString(f.String())
			b.WriteByte('\n')
		}
		b.WriteString(outboundSummary(rep))
		b.WriteByte('\n')
		if _, err := fmt.Fprint(c.App.Writer, b.String()); err != nil {
			return err
		}
	}
	if rep.Status != check.OK {
		return silentExit(rep.Status)
	}
	return nil
}

// outboundSummary is the last line: "OK: DANE enforced by postfix; resolver
// 127.0.0.1:53 validates (loopback)".
func outboundSummary(rep outbound.Report) string {
	var parts []string
	switch {
	case rep.MTA == "":
		parts = append(parts, "MTA not checked")
	case rep.Enforced:
		parts = append(parts, "DANE enforced by "+rep.MTA)
	default:
		parts = append(parts, "DANE not enforced by "+rep.MTA)
	}
	r := "resolver " + rep.Resolver.Addr
	if rep.Resolver.Validates {
		r += " validates"
	} else {
		r += " not shown to validate"
	}
	if rep.Resolver.Loopback {
		r += " (loopback)"
	} else {
		r += " (not on loopback)"
	}
	parts = append(parts, r)
	n := 0
	for _, f := range rep.Findings {
		if f.Severity != check.OK {
			n++
		}
	}
	return fmt.Sprintf("%s: %s; %d finding(s)", rep.Status, strings.Join(parts, "; "), n)
}
