package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/internal/deploy"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/targets"
	"github.com/tlsactl/tlsactl/providers"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
	"github.com/urfave/cli/v2"
)

const (
	flagConfig      = "config"
	flagProvider    = "provider"
	flagServer      = "server"
	flagTSIGKeyFile = "tsig-key-file"
	flagZone        = "zone"
	flagAdd         = "add"
	flagReplace     = "replace-usage"
	flagRemove      = "remove"
	flagSet         = "set"
	flagDryRun      = "dry-run"
	flagWait        = "wait"
	flagForce       = "force"
	flagAuthServer  = "auth-server"
	flagAuthPort    = "auth-port"
)

// Exit codes of publish.
const (
	exitRefused      = 1 // the change would leave the served chain without a matching record
	exitChangeFailed = 3 // the provider refused the change, or it did not propagate in time
)

func createPublish() *cli.Command {
	var provDoc strings.Builder
	for _, f := range providers.Factories() {
		fmt.Fprintf(&provDoc, "   %s\n", f.Name)
		for _, l := range strings.Split(f.Doc, "\n") {
			fmt.Fprintf(&provDoc, "      %s\n", l)
		}
	}
	return &cli.Command{
		Name:  "publish",
		Usage: "change the TLSA RRset of an MX host through a DNS provider, safely",
		Description: `Computes the TLSA RRset a host should have, shows the difference with what the provider
holds (+ added, - removed, = kept), applies it in one provider call, and with --wait waits
until every authoritative server of the zone serves exactly the new RRset.

Before changing anything it probes the host (STARTTLS on --port at every address) and
refuses a change that leaves no usable record matching the chain the host serves now:
the NCSC rule that one record must match at every moment. --force skips that check.

ACTIONS (exactly one):
   --add            add the given records to the RRset
   --replace-usage  replace the records of the given records' usage (e.g. the 3 1 1 after a
                    renewal) and keep the others (the 2 1 1 that covers the gap)
   --remove         remove the given records
   --set            make the RRset exactly the given records

RECORDS: --certificate/--pubkey/--privkey with --usage/--selector/--mtype (as in create),
and --record "2 1 1 <hex>" (repeatable).

PROVIDER: from --config (TOML, see examples/tlsactl.toml) or flags; for RFC 2136 flags alone
work the way nsupdate -k users expect: --provider rfc2136 --server HOST:PORT --tsig-key-file FILE.
Credentials are read from files or environment variables only, never printed.
Providers and their settings:
` + provDoc.String() + `
EXIT CODES:
   0   applied (or nothing to change, or --dry-run that would apply)
   1   refused: the new RRset would not match what the host serves now (nothing changed)
   2   bad input or configuration (nothing changed)
   3   the provider refused or failed the change, or --wait timed out (the message says which)

EXAMPLES:
   After a renewal with the same CA, replace the 3 1 1 (the 2 1 1 stays):
      tlsactl publish --config /etc/tlsactl/tlsactl.toml --host mail.example.nl \
          --certificate /etc/postfix/fullchain.pem --replace-usage --wait
   Before a CA change, add the new CA's 2 1 1 beside the old one:
      tlsactl publish --provider rfc2136 --server ns1.example.nl --tsig-key-file tsig.key \
          --host mail.example.nl --usage 2 --certificate new-ca.pem --add --dry-run
   Publish an issuer set: one 2 1 1 per intermediate the ACME CA may issue from (one PEM file
   each, e.g. Let's Encrypt's current RSA and ECDSA intermediates), so that a renewal from
   another intermediate of the set never breaks DANE-TA (quote the glob):
      tlsactl publish --config /etc/tlsactl/tlsactl.toml --host mail.example.nl \
          --usage 2 --certificate '/etc/tlsactl/issuers/*.pem' --add --wait`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagConfig, EnvVars: []string{"TLSACTL_CONFIG"}, Usage: "configuration `FILE` (TOML)"},
			&cli.StringFlag{Name: flagProvider, EnvVars: []string{"TLSACTL_PROVIDER"}, Usage: "DNS provider `NAME` (overrides the config)"},
			&cli.StringFlag{Name: flagServer, Usage: "rfc2136: primary server `HOST:PORT` that takes updates"},
			&cli.StringFlag{Name: flagTSIGKeyFile, Usage: "rfc2136: TSIG key `FILE` as tsig-keygen writes it"},
			&cli.StringFlag{Name: flagResolver, EnvVars: []string{"TLSACTL_RESOLVER"}, Usage: "validating resolver `ADDR` (default: config, then /etc/resolv.conf)"},
			&cli.StringFlag{Name: flagHost, Usage: "the MX `HOST` whose TLSA RRset changes"},
			&cli.UintFlag{Name: flagPort, Aliases: []string{"p"}, Usage: "SMTP port (TLSA at _PORT._tcp.HOST; default: config, then 25)"},
			&cli.StringFlag{Name: flagZone, Usage: "the `ZONE` holding the records (default: config, then found by SOA)"},
			&cli.StringSliceFlag{Name: flagCertificate, Usage: "certificate or chain `FILE` (repeatable)"},
			&cli.StringSliceFlag{Name: flagPubkey, Usage: "public key `FILE` (repeatable)"},
			&cli.StringSliceFlag{Name: flagPrivkey, Usage: "private key `FILE`; only its public key is used (repeatable)"},
			&cli.IntFlag{Name: flagUsage, Aliases: []string{"u"}, Value: 3, Usage: "usage for records from files"},
			&cli.IntFlag{Name: flagSelector, Aliases: []string{"s"}, Value: 1, Usage: "selector for records from files"},
			&cli.IntFlag{Name: flagMtype, Aliases: []string{"m"}, Value: 1, Usage: "matching type for records from files"},
			&cli.StringSliceFlag{Name: flagRecord, Usage: `TLSA RDATA such as "2 1 1 <hex>" (repeatable)`},
			&cli.BoolFlag{Name: flagAdd, Usage: "add the records"},
			&cli.BoolFlag{Name: flagReplace, Usage: "replace the records of the same usage"},
			&cli.BoolFlag{Name: flagRemove, Usage: "remove the records"},
			&cli.BoolFlag{Name: flagSet, Usage: "make the RRset exactly the records"},
			&cli.Int64Flag{Name: flagTTL, Value: -1, DefaultText: "config, then 3600", Usage: "TTL of the RRset in seconds"},
			&cli.BoolFlag{Name: flagDryRun, Aliases: []string{"n"}, Usage: "show the change and the safety verdict; change nothing"},
			&cli.BoolFlag{Name: flagWait, Usage: "wait until every authoritative server serves the new RRset"},
			&cli.DurationFlag{Name: flagTimeout, Value: 5 * time.Minute, Usage: "bound for --wait"},
			&cli.StringSliceFlag{Name: flagAuthServer, Usage: "also ask this authoritative `HOST:PORT` (a hidden primary), besides the zone's NS set (repeatable)"},
			&cli.IntFlag{Name: flagAuthPort, Value: 53, Usage: "port of the NS set's servers"},
			&cli.StringFlag{Name: flagStateDir, EnvVars: []string{"TLSACTL_STATE_DIR"}, Usage: "state `DIR`: the ledger of what each TLSA name held, and the publish's history (default: config state_dir, then /var/lib/tlsactl)"},
			&cli.BoolFlag{Name: flagForce, Usage: "skip the check that the new RRset matches what the host serves"},
			&cli.BoolFlag{Name: flagJSON, Usage: "print the result as JSON"},
		},
		Action: runPublish,
	}
}

// publishPlan is everything publish decided, for text or JSON output.
type publishPlan struct {
	Host        string   `json:"host"`
	Owner       string   `json:"owner"`
	Zone        string   `json:"zone"`
	Provider    string   `json:"provider"`
	TTL         uint32   `json:"ttl"`
	Current     []string `json:"current"`
	Want        []string `json:"want"`
	Add         []string `json:"add"`
	Remove      []string `json:"remove"`
	Keep        []string `json:"keep"`
	Safety      string   `json:"safety"` // "ok", "refused", "skipped (--force)"
	SafetyNotes []string `json:"safety_notes,omitempty"`
	DryRun      bool     `json:"dry_run"`
	Applied     bool     `json:"applied"`
}

func runPublish(c *cli.Context) error {
	if c.NArg() != 0 {
		return badInput(fmt.Errorf("publish takes no positional arguments, got %q (use --host)", c.Args().Slice()))
	}
	ctx := c.Context
	cfg := &config.Config{}
	if p := c.String(flagConfig); p != "" {
		var err error
		if cfg, err = config.Load(p); err != nil {
			return badInput(err)
		}
	}
	if c.String(flagHost) == "" {
		return badInput(errors.New("publish needs --host HOST (the MX host whose TLSA RRset changes)"))
	}
	host, err := tlsa.HostName(c.String(flagHost))
	if err != nil {
		return badInput(err)
	}
	hc := cfg.Host(host, int(c.Uint(flagPort)))
	port, zone, ttl := 25, "", int64(3600)
	if hc != nil {
		port, zone, ttl = hc.Port, hc.Zone, int64(hc.TTL)
	}
	if c.IsSet(flagPort) {
		port = int(c.Uint(flagPort))
	}
	if port < 1 || port > 65535 {
		return badInput(fmt.Errorf("--port %d: want 1 to 65535", port))
	}
	if z := c.String(flagZone); z != "" {
		zone = strings.ToLower(dns.Fqdn(z))
	}
	if c.Int64(flagTTL) >= 0 {
		ttl = c.Int64(flagTTL)
	}
	if ttl > 2147483647 {
		return badInput(fmt.Errorf("--ttl %d: want 0 to 2147483647", ttl))
	}
	action, err := publishAction(c)
	if err != nil {
		return badInput(err)
	}
	owner, _ := tlsa.OwnerName(fmt.Sprint(port), "tcp", host)
	given, err := publishRecords(c, owner)
	if err != nil {
		return badInput(err)
	}
	prov, provName, err := buildProvider(c, cfg)
	if err != nil {
		return badInput(err)
	}
	resolverAddr := c.String(flagResolver)
	if resolverAddr == "" {
		resolverAddr = cfg.Resolver
	}
	if resolverAddr == "" {
		if resolverAddr, err = dnsx.SystemResolver(); err != nil {
			return badInput(fmt.Errorf("no resolver: %w; give --resolver ADDR", err))
		}
	}
	resolver := &dnsx.Resolver{Addr: resolverAddr}
	auth, authPort := c.StringSlice(flagAuthServer), c.Int(flagAuthPort)
	if hc != nil && len(auth) == 0 {
		auth = hc.AuthServers
	}
	if hc != nil && !c.IsSet(flagAuthPort) && hc.AuthPort != 0 {
		authPort = hc.AuthPort
	}
	propTimeout := 10 * time.Second
	if c.Bool(flagWait) {
		propTimeout = c.Duration(flagTimeout)
	}
	// The RRset senders query: after a CNAME at the owner, its target.
	d, err := targets.Resolve(ctx, targets.Config{Provider: prov, Zone: zone, Host: host, Port: port, Resolver: resolver,
		AuthServers: auth, AuthPort: authPort, Propagation: providers.PropagationOptions{Interval: time.Second, Timeout: propTimeout}})
	switch {
	case errors.Is(err, targets.ErrCNAMEHost), errors.Is(err, targets.ErrCNAMEOwner):
		return &exitError{code: exitChangeFailed, err: err}
	case err != nil:
		return &exitError{code: exitChangeFailed, err: fmt.Errorf("%w (give --zone)", err)}
	}
	owner, zone = d.Owner(), d.Zone()
	if !dns.IsSubDomain(zone, owner) {
		return badInput(fmt.Errorf("%s is not in zone %s", owner, zone))
	}

	current, alias, err := providers.GetOwner(ctx, prov, zone, owner)
	if err != nil {
		return &exitError{code: exitChangeFailed, err: fmt.Errorf("provider %s: %w", provName, err)}
	}
	if alias != "" {
		return &exitError{code: exitChangeFailed, err: fmt.Errorf("provider %s holds a CNAME to %s at %s, not a TLSA RRset: senders follow it; nothing was changed — publish at %s, or remove the CNAME first", provName, alias, owner, alias)}
	}
	want := providers.RRSet{Owner: owner, TTL: time.Duration(ttl) * time.Second, Records: desired(action, current.Records, given)}
	change := providers.Diff(current.Records, want.Records)
	plan := publishPlan{
		Host: strings.TrimSuffix(host, "."), Owner: owner, Zone: zone, Provider: provName, TTL: uint32(ttl),
		Current: texts(current.Records), Want: texts(want.Records),
		Add: texts(change.Add), Remove: texts(change.Remove), Keep: texts(change.Keep), DryRun: c.Bool(flagDryRun),
	}
	ttlChange := len(want.Records) > 0 && len(current.Records) > 0 && current.TTL != want.TTL
	if change.Empty() && !ttlChange {
		plan.Safety = "not needed"
		return printPublish(c.App.Writer, c.Bool(flagJSON), plan, "nothing to change: the provider already holds exactly this RRset")
	}

	// The NCSC invariant: some usable record must match what is served now.
	if c.Bool(flagForce) {
		plan.Safety = "skipped (--force)"
	} else {
		ok, notes := servedChainMatches(ctx, resolver, host, port, want.Records)
		plan.SafetyNotes = notes
		if !ok {
			plan.Safety = "refused"
			_ = printPublish(c.App.Writer, c.Bool(flagJSON), plan, "")
			return &exitError{code: exitRefused, err: fmt.Errorf("refused: after this change no usable TLSA record at %s would match what %s serves now (%s); nothing was changed — fix the records or deploy the matching certificate first, or use --force", owner, plan.Host, strings.Join(notes, "; "))}
		}
		plan.Safety = "ok"
	}
	if plan.DryRun {
		return printPublish(c.App.Writer, c.Bool(flagJSON), plan, "dry run: nothing changed")
	}

	// The change is a publish plan of the rollover engine: its lock, its
	// history, the owner's ledger (so a later hook knows how old the new
	// records are) and the same observation and invariant as every step.
	store, err := openStore(ctx, storeSpecFor(c, cfg))
	if err != nil {
		return badInput(err)
	}
	target := rollover.Target{DNS: d, Deployer: probeOnly{prober: deploy.ResolverProber{Resolver: resolver, Host: host, Port: port, Timeout: 30 * time.Second}, host: host}}
	engine := &rollover.Engine{Store: store.fullStore, Clock: rollover.SystemClock{}, LockWait: 10 * time.Second, Runner: store.runner,
		Target: func(string) (rollover.Target, error) { return target, nil }}
	if st, err := store.Load(host); err == nil && st.Status == rollover.StatusActive {
		if st.Plan != rollover.PlanPublish {
			return &exitError{code: exitRefused, err: fmt.Errorf("refused: a %s rollover of %s is active (step %s) and would race this change; nothing was changed — let it finish (tlsactl rollover run) or abort it", st.Plan, plan.Host, st.CurrentStep())}
		}
		if _, err := engine.Abort(ctx, host); err != nil { // an earlier publish that never confirmed
			return &exitError{code: exitChangeFailed, err: err}
		}
	}
	if _, err := engine.Start(ctx, rollover.StartRequest{Host: host, Port: port, Plan: rollover.PlanPublish, TTL: uint32(ttl),
		Want: want.Records, Force: c.Bool(flagForce), Margin: cfg.Margin.Duration}); err != nil {
		return &exitError{code: exitChangeFailed, err: fmt.Errorf("nothing was changed: %w", err)}
	}
	out, err := engine.Advance(ctx, host)
	switch {
	case errors.Is(err, rollover.ErrUnsafe):
		plan.Safety = "refused"
		_ = printPublish(c.App.Writer, c.Bool(flagJSON), plan, "")
		return &exitError{code: exitRefused, err: err}
	case err != nil && out.State != nil && publishApplied(out.State):
		plan.Applied = true
		if !c.Bool(flagWait) {
			return printPublish(c.App.Writer, c.Bool(flagJSON), plan, "applied at the provider; not yet confirmed at every authoritative server ('tlsactl rollover run' confirms it)")
		}
		_ = printPublish(c.App.Writer, c.Bool(flagJSON), plan, "applied at the provider, but not yet served everywhere")
		return &exitError{code: exitChangeFailed, err: err}
	case err != nil:
		return &exitError{code: exitChangeFailed, err: fmt.Errorf("provider %s: the change was not applied: %w", provName, err)}
	}
	plan.Applied = true
	return printPublish(c.App.Writer, c.Bool(flagJSON), plan, "applied; every authoritative server serves the new RRset")
}

// publishApplied reports whether a publish plan got as far as the provider
// call.
func publishApplied(st *rollover.State) bool {
	for _, e := range st.History {
		if e.What == "published" {
			return true
		}
	}
	return false
}

func publishAction(c *cli.Context) (string, error) {
	var set []string
	for _, a := range []string{flagAdd, flagReplace, flagRemove, flagSet} {
		if c.Bool(a) {
			set = append(set, a)
		}
	}
	if len(set) != 1 {
		return "", fmt.Errorf("give exactly one of --add, --replace-usage, --remove, --set (got %d)", len(set))
	}
	return set[0], nil
}

// publishRecords computes the records named on the command line.
func publishRecords(c *cli.Context, owner string) ([]tlsa.Record, error) {
	u, err := fieldValue("usage", c.Int(flagUsage), 3)
	if err != nil {
		return nil, err
	}
	s, err := fieldValue("selector", c.Int(flagSelector), 1)
	if err != nil {
		return nil, err
	}
	m, err := fieldValue("mtype", c.Int(flagMtype), 2)
	if err != nil {
		return nil, err
	}
	req := createRequest{owner: owner, usage: tlsa.Usage(u), selector: tlsa.Selector(s), mtype: tlsa.MatchingType(m), ttl: -1}
	var out []tlsa.Record
	for _, src := range []struct {
		flag string
		kind tlsa.Kind
	}{{flagCertificate, tlsa.KindCertificate}, {flagPubkey, tlsa.KindPublicKey}, {flagPrivkey, tlsa.KindPrivateKey}} {
		paths, err := expandPaths(c.StringSlice(src.flag))
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			data, err := readInput(p, c.App.Reader)
			if err != nil {
				return nil, err
			}
			rrs, warns, err := recordsFor(p, data, src.kind, req)
			if err != nil {
				return nil, err
			}
			for _, w := range warns {
				fmt.Fprintf(c.App.ErrWriter, "tlsactl: warning: %s\n", w)
			}
			for _, rr := range rrs {
				out = append(out, rr.Record)
			}
		}
	}
	for _, r := range c.StringSlice(flagRecord) {
		rec, err := tlsa.ParseRecord(r)
		if err != nil {
			return nil, fmt.Errorf("--record: %w", err)
		}
		out = append(out, rec)
	}
	if len(out) == 0 {
		return nil, errors.New("no records: give --certificate, --pubkey, --privkey or --record")
	}
	return out, nil
}

// desired computes the RRset an action leads to.
func desired(action string, current, given []tlsa.Record) []tlsa.Record {
	var out []tlsa.Record
	add := func(r tlsa.Record) {
		for _, x := range out {
			if x.Equal(r) {
				return
			}
		}
		out = append(out, r)
	}
	inGiven := func(r tlsa.Record) bool {
		for _, g := range given {
			if g.Equal(r) {
				return true
			}
		}
		return false
	}
	usages := map[tlsa.Usage]bool{}
	for _, g := range given {
		usages[g.Usage] = true
	}
	switch action {
	case flagAdd:
		for _, r := range current {
			add(r)
		}
		for _, r := range given {
			add(r)
		}
	case flagReplace:
		for _, r := range current {
			if !usages[r.Usage] {
				add(r)
			}
		}
		for _, r := range given {
			add(r)
		}
	case flagRemove:
		for _, r := range current {
			if !inGiven(r) {
				add(r)
			}
		}
	case flagSet:
		for _, r := range given {
			add(r)
		}
	}
	return out
}

// buildProvider makes the provider from the config file and flags; flags win.
func buildProvider(c *cli.Context, cfg *config.Config) (providers.Provider, string, error) {
	name := cfg.Provider.Name
	settings := map[string]string{}
	for k, v := range cfg.Provider.Settings {
		settings[k] = v
	}
	if n := c.String(flagProvider); n != "" && n != name {
		name, settings = n, map[string]string{}
	}
	if c.String(flagServer) != "" || c.String(flagTSIGKeyFile) != "" {
		if name == "" {
			name = "rfc2136"
		}
		if v := c.String(flagServer); v != "" {
			settings["server"] = v
		}
		if v := c.String(flagTSIGKeyFile); v != "" {
			settings["tsig_key_file"] = v
		}
	}
	if name == "" {
		return nil, "", errors.New("no DNS provider: give --config FILE or --provider rfc2136 --server HOST:PORT --tsig-key-file FILE")
	}
	p, err := providers.New(name, providers.Settings{Values: settings})
	return p, name, err
}

// servedChainMatches probes every address of host and reports whether want
// has a usable record matching each served chain.
func servedChainMatches(ctx context.Context, r *dnsx.Resolver, host string, port int, want []tlsa.Record) (bool, []string) {
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	obs, err := check.ProbeHost(pctx, check.Config{Resolver: r, Prober: check.STARTTLSProber{}, Port: uint16(port)}, host)
	if err != nil {
		return false, []string{fmt.Sprintf("cannot probe %s: %v", strings.TrimSuffix(host, "."), err)}
	}
	if len(obs) == 0 {
		return false, []string{"the host has no addresses to probe"}
	}
	ok := true
	var notes []string
	for _, o := range obs {
		if o.Err != nil {
			ok = false
			notes = append(notes, fmt.Sprintf("[%s] cannot verify: %v", o.Addr, o.Err))
			continue
		}
		res := tlsa.Match(o.Probe.Chain, want, tlsa.MatchOptions{Names: []string{host}})
		if !res.Matched() {
			ok = false
			notes = append(notes, fmt.Sprintf("[%s] serves a chain no new record matches", o.Addr))
			continue
		}
		notes = append(notes, fmt.Sprintf("[%s] %d of %d usable record(s) match the served chain", o.Addr, res.MatchedCount(), res.UsableCount()))
	}
	return ok, notes
}

func texts(rs []tlsa.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

func printPublish(w io.Writer, asJSON bool, p publishPlan, msg string) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s (zone %s, provider %s, TTL %d)\n", p.Owner, p.Zone, p.Provider, p.TTL)
	for _, r := range p.Keep {
		fmt.Fprintf(&b, "  = %s\n", r)
	}
	for _, r := range p.Remove {
		fmt.Fprintf(&b, "  - %s\n", r)
	}
	for _, r := range p.Add {
		fmt.Fprintf(&b, "  + %s\n", r)
	}
	if len(p.Want) == 0 {
		b.WriteString("  (the RRset will be empty)\n")
	}
	for _, n := range p.SafetyNotes {
		fmt.Fprintf(&b, "  safety: %s\n", n)
	}
	if msg != "" {
		b.WriteString(msg + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
