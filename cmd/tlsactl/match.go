package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
	"github.com/urfave/cli/v2"
)

const (
	flagChain  = "chain"
	flagHost   = "host"
	flagRecord = "record"
	flagRRSet  = "rrset"
	flagJSON   = "json"
	flagName   = "name"
	flagTime   = "time"
)

func createMatch() *cli.Command {
	return &cli.Command{
		Name:  "match",
		Usage: "check a certificate chain against TLSA records offline, with the SMTP rules of RFC 7672",
		Description: `Says for each TLSA record whether it matches the chain a mail server serves, and why
not. No network is used: give the chain as a file (leaf first, as the server sends it,
e.g. Postfix's fullchain.pem or "openssl s_client -showcerts" output).

Rules (RFC 7672): 3 x x (DANE-EE) matches the leaf key or certificate and ignores names
and expiry; 2 x x (DANE-TA) needs that CA certificate in the served chain (or, for
2 1 0, its key), a chain that verifies to it and the host name in the leaf; 0 x x and
1 x x are unusable for SMTP; unknown parameters are unusable, not errors.

EXIT CODES:
   0   at least one usable record matches (mail is delivered with DANE)
   1   no usable record matches (DANE senders will defer mail to this host), or no record
       is usable at all (senders then use mandatory TLS without authentication, RFC 7672 §2.2)
   2   bad input (chain or records unreadable); nothing checked

EXAMPLES:
   tlsactl match --chain fullchain.pem --host mail.example.nl --record "3 1 1 8a9f…" --record "2 1 1 c0ff…"
   dig +short TLSA _25._tcp.mail.example.nl > rrset.txt
   tlsactl match --chain fullchain.pem --host mail.example.nl --rrset rrset.txt --json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagChain, Usage: "served certificate chain `FILE`, leaf first (PEM or DER)"},
			&cli.StringFlag{Name: flagHost, Usage: "the MX host name the chain is served for (DANE-TA name check)"},
			&cli.StringSliceFlag{Name: flagRecord, Usage: `TLSA RDATA such as "3 1 1 <hex>" (repeatable)`},
			&cli.StringFlag{Name: flagRRSet, Usage: "`FILE` of TLSA records: one \"3 1 1 <hex>\" per line (dig +short output) or zone-file lines"},
			&cli.StringSliceFlag{Name: flagName, Usage: "additional reference `NAME` for DANE-TA name checks (the MX name before CNAME expansion, the next-hop domain)"},
			&cli.StringFlag{Name: flagTime, Usage: "check validity at this `TIME` (RFC 3339, e.g. 2027-01-31T00:00:00Z) instead of now"},
			&cli.BoolFlag{Name: flagJSON, Usage: "print the result as JSON"},
		},
		Action: runMatch,
	}
}

type matchJSON struct {
	Host         string        `json:"host"`
	Matched      bool          `json:"matched"`
	MatchedCount int           `json:"matched_count"`
	UsableCount  int           `json:"usable_count"`
	Chain        []certSummary `json:"chain"`
	Verdicts     []verdictJSON `json:"verdicts"`
}

type verdictJSON struct {
	Record  string      `json:"record"`
	Usable  bool        `json:"usable"`
	Matched bool        `json:"matched"`
	Reason  tlsa.Reason `json:"reason"`
	Detail  string      `json:"detail"`
	Depth   int         `json:"depth"`
}

func runMatch(c *cli.Context) error {
	if c.NArg() != 0 {
		return badInput(fmt.Errorf("match takes no positional arguments, got %q (use --host, --chain, --record)", c.Args().Slice()))
	}
	// Checked here, not with Required: urfave/cli prints the whole help to
	// stdout for a missing required flag.
	if c.String(flagChain) == "" || c.String(flagHost) == "" {
		return badInput(errors.New("match needs --chain FILE and --host NAME (see --help)"))
	}
	host, err := tlsa.HostName(c.String(flagHost))
	if err != nil {
		return badInput(err)
	}
	chainPath := c.String(flagChain)
	chain, err := readCertificates(chainPath, c.App.Reader, "give the chain the server sends, leaf first")
	if err != nil {
		return badInput(err)
	}
	var recs []tlsa.Record
	for _, s := range c.StringSlice(flagRecord) {
		r, err := tlsa.ParseRecord(s)
		if err != nil {
			return badInput(fmt.Errorf("--record: %w", err))
		}
		recs = append(recs, r)
	}
	if p := c.String(flagRRSet); p != "" {
		text, err := readInput(p, c.App.Reader)
		if err != nil {
			return badInput(err)
		}
		rs, err := tlsa.ParseRRSet(string(text), p)
		if err != nil {
			return badInput(err)
		}
		recs = append(recs, rs...)
	}
	if len(recs) == 0 {
		return badInput(errors.New("no TLSA records: give --record \"3 1 1 <hex>\" or --rrset FILE"))
	}
	opts := tlsa.MatchOptions{Names: append([]string{host}, c.StringSlice(flagName)...)}
	if t := c.String(flagTime); t != "" {
		opts.Now, err = time.Parse(time.RFC3339, t)
		if err != nil {
			return badInput(fmt.Errorf("--time %q: want RFC 3339, e.g. 2027-01-31T00:00:00Z", t))
		}
	}
	res := tlsa.Match(chain, recs, opts)
	if c.Bool(flagJSON) {
		err = printMatchJSON(c.App.Writer, host, chain, res)
	} else {
		err = printMatchText(c.App.Writer, host, res)
	}
	if err != nil {
		return err
	}
	if !res.Matched() {
		return silentExit(exitNoMatch)
	}
	return nil
}

func printMatchText(w io.Writer, host string, res tlsa.Result) error {
	var b strings.Builder
	for _, v := range res.Verdicts {
		status := "MATCH"
		switch {
		case !v.Usable:
			status = "UNUSABLE"
		case !v.Matched:
			status = "NO-MATCH"
		}
		fmt.Fprintf(&b, "%-8s %s: %s\n", status, abbrev(v.Record), v.Detail)
	}
	n, u := res.MatchedCount(), res.UsableCount()
	switch {
	case u == 0:
		fmt.Fprintf(&b, "FAIL: none of the %d record(s) is usable for SMTP: senders then use mandatory TLS without authentication (RFC 7672 §2.2); publish a 3 1 1 and a 2 1 1 for %s\n", len(res.Verdicts), strings.TrimSuffix(host, "."))
	case n == 0:
		fmt.Fprintf(&b, "FAIL: none of %d usable record(s) matches %s (%d record(s) in all)\n", u, strings.TrimSuffix(host, "."), len(res.Verdicts))
	case n < u:
		fmt.Fprintf(&b, "OK: %d of %d usable record(s) match %s\n", n, u, strings.TrimSuffix(host, "."))
	default:
		fmt.Fprintf(&b, "OK: all %d usable record(s) match %s\n", u, strings.TrimSuffix(host, "."))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// abbrev shortens a record's hex for one-line text output.
func abbrev(r tlsa.Record) string {
	s := r.String()
	if len(s) > 30 {
		return s[:30] + "…"
	}
	return s
}

func printMatchJSON(w io.Writer, host string, chain []*x509.Certificate, res tlsa.Result) error {
	out := matchJSON{Host: host, Matched: res.Matched(), MatchedCount: res.MatchedCount(), UsableCount: res.UsableCount()}
	for _, c := range chain {
		out.Chain = append(out.Chain, summarize(c))
	}
	for _, v := range res.Verdicts {
		out.Verdicts = append(out.Verdicts, verdictJSON{
			Record: v.Record.String(), Usable: v.Usable, Matched: v.Matched, Reason: v.Reason, Detail: v.Detail, Depth: v.Depth,
		})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
