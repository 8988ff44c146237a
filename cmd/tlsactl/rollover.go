package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

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
	flagStateDir = "state-dir"
	flagPlan     = "plan"
	flagNewCA    = "new-ca"
	flagNewCert  = "new-cert"
	flagNewKey   = "new-key"
	flagNextKey  = "next-key"
	flagCert     = "cert"
	flagKey      = "key"
)

// Exit codes of rollover commands.
const exitRolloverError = 1 // a step failed or was refused; state records why; a later run retries

func createRollover() *cli.Command {
	common := []cli.Flag{
		&cli.StringFlag{Name: flagConfig, EnvVars: []string{"TLSACTL_CONFIG"}, Value: "/etc/tlsactl/tlsactl.toml", Usage: "configuration `FILE`: provider, hosts, deploy paths, reload commands"},
		&cli.StringFlag{Name: flagStateDir, EnvVars: []string{"TLSACTL_STATE_DIR"}, Usage: "state `DIR` (default: config state_dir, then /var/lib/tlsactl)"},
		&cli.StringFlag{Name: flagResolver, EnvVars: []string{"TLSACTL_RESOLVER"}, Usage: "validating resolver `ADDR` (default: config, then /etc/resolv.conf)"},
		stateFlag(),
	}
	hostFlag := &cli.StringFlag{Name: flagHost, Usage: "the MX `HOST` (must be a [[host]] of the configuration)"}
	flags := func(extra ...cli.Flag) []cli.Flag { return append(append([]cli.Flag(nil), common...), extra...) }
	return &cli.Command{
		Name:  "rollover",
		Usage: "renew certificates and change CAs without ever breaking DANE (NCSC procedure)",
		Description: `Plans (each step re-checks DNS and the server before it acts):

   renew           same CA: verify the new certificate is covered by the published 2 1 1,
                   deploy it, replace the 3 1 1. No TTL wait.
   ca-migration    publish the new CA's 2 1 1 beside the old one, wait until the old RRset
                   is in no cache (confirmation + TTL + margin), deploy the new certificate,
                   replace the 3 1 1, retire the old CA's 2 1 1.
   key-prepublish  publish the next key's 3 1 1, wait a TTL, deploy the certificate on that
                   key, retire the old 3 1 1 (RFC 7671 §8.1).

Before every DNS change and every certificate swap tlsactl observes the TLSA RRset at the
provider, at every authoritative server (NS set plus auth_servers) and at the resolver, and
records it in the owner's ledger (state_dir/_ledger/). It then checks that every RRset a
resolver may still hold — by the ledger: until its successor was served everywhere, plus its
TTL as served, plus the margin — matches every chain the server may serve; an unsafe action
waits for the time it becomes safe or is refused. A record the plan published that someone
else removed is published again, and the TTL wait starts again ("stepped back" in status). State is kept per host in the state directory
(atomic writes, mode 0600, one process per host by lock): a crash resumes where it stopped.

'rollover run' also advances every active fleet migration (see 'tlsactl migration --help'):
the hosts of an unfinished migration are advanced by it, within its schedule, not one by one.

EXIT CODES:
   0   done, or waiting safely (TTL, material): run again later
   1   a step failed or was refused (the state says why), or a migration halted; run again to retry
   2   bad input or configuration`,
		Subcommands: []*cli.Command{
			{
				Name: "plan", Usage: "show the steps, the records after each and the earliest finish (changes nothing)",
				Description: `Shows each step of the plan for --host, the TLSA RRset after every step and the earliest
finish (TTL waits included). Reads DNS and the files named; changes nothing anywhere.

EXAMPLES:
   tlsactl rollover plan --host mx.example.nl --new-cert /etc/lego/certificates/mx.example.nl.crt
   tlsactl rollover plan --host mx.example.nl --plan ca-migration --new-ca harica-tls-rsa.pem --json

EXIT CODES:
   0   the plan is shown
   1   no plan can be made now (the reason is shown)
   2   bad input or configuration`,
				Flags: flags(hostFlag, &cli.StringFlag{Name: flagPlan, Value: string(rollover.PlanRenew), Usage: "renew, ca-migration or key-prepublish"},
					&cli.StringFlag{Name: flagNewCA, Usage: "new CA certificate `FILE` (ca-migration)"},
					&cli.StringFlag{Name: flagNewCert, Usage: "new certificate chain `FILE`"},
					&cli.StringFlag{Name: flagNextKey, Usage: "next private key `FILE` (key-prepublish)"},
					&cli.BoolFlag{Name: flagJSON, Usage: "print JSON"}),
				Action: runRolloverPlan,
			},
			{
				Name: "start", Usage: "begin a rollover for a host (checks it is safe now; changes nothing yet)",
				Description: `Begins a rollover for --host after checking that its first step is safe now. Nothing in
DNS or on the server changes until 'tlsactl rollover run' advances it.

EXAMPLES:
   tlsactl rollover start --host mx.example.nl --new-cert new.pem --new-key new.key
   tlsactl rollover start --host mx.example.nl --plan ca-migration --new-ca newca.pem
   tlsactl rollover start --host mx.example.nl --plan key-prepublish --next-key next.key

EXIT CODES:
   0   started (run 'tlsactl rollover run' to advance it)
   1   refused (another rollover is active, or the first step is unsafe: the reason is shown)
   2   bad input or configuration`,
				Flags: flags(hostFlag, &cli.StringFlag{Name: flagPlan, Usage: "renew, ca-migration or key-prepublish"},
					&cli.StringFlag{Name: flagNewCA, Usage: "new CA certificate `FILE` (ca-migration)"},
					&cli.StringFlag{Name: flagNewCert, Usage: "new certificate chain `FILE`, leaf first, with the CA certificate"},
					&cli.StringFlag{Name: flagNewKey, Usage: "private key `FILE` of the new certificate"},
					&cli.StringFlag{Name: flagNextKey, Usage: "next private key `FILE` (key-prepublish; only its public key is used)"},
					&cli.Int64Flag{Name: flagTTL, Value: -1, DefaultText: "config, then the current RRset's", Usage: "TTL of the records the rollover publishes"}),
				Action: runRolloverStart,
			},
			{
				Name: "provide", Usage: "stage the new certificate for a rollover that waits for it",
				Description: `Stages the new certificate chain and key of a rollover that waits for them (a
ca-migration started before the new CA issued). The files are checked before anything is
stored.

EXAMPLES:
   tlsactl rollover provide --host mx.example.nl --cert new-fullchain.pem --key new.key

EXIT CODES:
   0   staged; the next 'tlsactl rollover run' deploys when it is safe
   1   refused (no rollover waits, or the chain is not from the expected CA)
   2   bad input or configuration`,
				Flags: flags(hostFlag, &cli.StringFlag{Name: flagCert, Usage: "new certificate chain `FILE`"},
					&cli.StringFlag{Name: flagKey, Usage: "its private key `FILE`"}),
				Action: runRolloverProvide,
			},
			{
				Name: "run", Usage: "advance every rollover as far as is safe now (for cron / systemd timers)",
				Description: `Advances every active rollover (and every fleet migration) as far as is safe now, then
exits: meant for a systemd timer or cron. With --wait it sleeps until each rollover is done
or needs material.

EXAMPLES:
   tlsactl rollover run
   tlsactl rollover run --host mx.example.nl --wait --timeout 2h
   tlsactl rollover run --metrics-file /var/lib/prometheus/node-exporter/tlsactl.prom

EXIT CODES:
   0   done, or waiting safely (TTL, material): run again later
   1   a step failed or was refused (the state says why), or a migration halted
   2   bad input or configuration`,
				Flags: flags(&cli.StringSliceFlag{Name: flagHost, Usage: "only this `HOST` (repeatable; then no migration is advanced)"},
					&cli.BoolFlag{Name: flagWait, Usage: "sleep until each rollover is done (or needs material)"},
					&cli.DurationFlag{Name: flagTimeout, Value: 24 * time.Hour, Usage: "bound for --wait"},
					&cli.StringFlag{Name: flagMetricsFile, Usage: "also write Prometheus metrics of every migration to `FILE` (atomically)"}),
				Action: runRolloverRun,
			},
			{
				Name: "status", Usage: "show every rollover's step, records and history",
				Description: `Shows every rollover's plan, step, the records it published and its history (who did
what, when). Changes nothing.

EXAMPLES:
   tlsactl rollover status
   tlsactl rollover status --host mx.example.nl --json | jq '.[0].history' 

EXIT CODES:
   0   shown
   2   bad input or configuration`,
				Flags:  flags(&cli.StringSliceFlag{Name: flagHost, Usage: "only this `HOST`"}, &cli.BoolFlag{Name: flagJSON, Usage: "print JSON"}),
				Action: runRolloverStatus,
			},
			{
				Name: "abort", Usage: "stop a rollover safely (takes back records it added before the deploy)",
				Description: `Stops the rollover of --host safely. Before the new certificate is deployed, the records
the rollover added (the new CA's 2 1 1, the next key's 3 1 1) are taken back, checked
against what the server serves; nothing that was there before it started is removed. After
the deploy DNS is safe at every step boundary, and abort only stops the rollover.

EXAMPLES:
   tlsactl rollover abort --host mx.example.nl

EXIT CODES:
   0   aborted
   1   refused (already finished, or taking a record back is unsafe: the reason is shown) or
       the DNS change failed; nothing partial is left
   2   bad input or configuration`,
				Flags: flags(hostFlag), Action: runRolloverAbort,
			},
		},
	}
}

// rolloverEnv is the configuration and engine every rollover command uses.
type rolloverEnv struct {
	cfg      *config.Config
	resolver *dnsx.Resolver
	store    *stateStore
	engine   *rollover.Engine
	// targets caches built targets; a fleet migration asks for them from
	// several goroutines.
	mu      sync.Mutex
	targets map[string]cachedTarget
}

type cachedTarget struct {
	t  rollover.Target
	at time.Time
}

func newRolloverEnv(c *cli.Context) (*rolloverEnv, error) {
	cfg, err := config.Load(c.String(flagConfig))
	if err != nil {
		return nil, err
	}
	store, err := openStore(c.Context, storeSpecFor(c, cfg))
	if err != nil {
		return nil, err
	}
	addr := c.String(flagResolver)
	if addr == "" {
		addr = cfg.Resolver
	}
	if addr == "" {
		if addr, err = dnsx.SystemResolver(); err != nil {
			return nil, fmt.Errorf("no resolver: %w; set resolver in the configuration", err)
		}
	}
	env := &rolloverEnv{cfg: cfg, resolver: &dnsx.Resolver{Addr: addr}, store: store}
	env.engine = &rollover.Engine{Store: store.fullStore, Clock: rollover.SystemClock{}, Target: env.target, LockWait: 10 * time.Second, Runner: store.runner}
	// Crash tests only: see failpoint.go (built with -tags failpoints).
	setFailpoint(env.engine)
	return env, nil
}

// rolloverHost loads the environment and the configured host named by --host.
func rolloverHost(c *cli.Context) (*rolloverEnv, *config.Host, error) {
	env, err := newRolloverEnv(c)
	if err != nil {
		return nil, nil, err
	}
	h, err := env.host(c.String(flagHost))
	return env, h, err
}

func (env *rolloverEnv) host(name string) (*config.Host, error) {
	if name == "" {
		return nil, errors.New("give --host HOST")
	}
	h := env.cfg.Host(name, 0)
	if h == nil {
		return nil, fmt.Errorf("host %s is not in the configuration: add a [[host]] with its deploy section", strings.TrimSuffix(name, "."))
	}
	return h, nil
}

// margin is the configured margin added to every TTL wait (default 1 min).
func (env *rolloverEnv) margin() time.Duration {
	if env.cfg.Margin.Duration == 0 {
		return time.Minute
	}
	return env.cfg.Margin.Duration
}

// target builds the real DNS and deployer for a configured host, and its
// peers: the other hosts on the same deploy target (shared certificate
// files, or a shared address and port), whose ledgers every deploy is
// checked against.
func (env *rolloverEnv) target(host string) (rollover.Target, error) {
	h, err := env.host(host)
	if err != nil {
		return rollover.Target{}, err
	}
	if !h.Deploy.Configured() {
		return rollover.Target{}, fmt.Errorf("host %s has no [host.deploy] section: tlsactl cannot install its certificate", strings.TrimSuffix(h.Name, "."))
	}
	t, err := env.hostTarget(h)
	if err != nil {
		return rollover.Target{}, err
	}
	peers, err := env.peers(h)
	if err != nil {
		return rollover.Target{}, err
	}
	for _, p := range peers {
		pt, err := env.hostTarget(p)
		if err != nil {
			return rollover.Target{}, fmt.Errorf("%s shares its deploy target with %s: %w", strings.TrimSuffix(h.Name, "."), strings.TrimSuffix(p.Name, "."), err)
		}
		t.Peers = append(t.Peers, rollover.Peer{Host: p.Name, DNS: pt.DNS, Deployer: pt.Deployer})
	}
	// Hosts whose TLSA owner is this one's (CNAMEs to one shared RRset):
	// a change of the RRset must keep matching what they serve.
	for i := range env.cfg.Hosts {
		o := &env.cfg.Hosts[i]
		if o == h {
			continue
		}
		ot, err := env.hostTarget(o)
		if err != nil {
			continue // its own commands say what is wrong with it
		}
		if ot.DNS.Owner() == t.DNS.Owner() {
			t.Sharing = append(t.Sharing, rollover.Peer{Host: o.Name, DNS: ot.DNS, Deployer: ot.Deployer})
		}
	}
	return t, nil
}

// peers returns the other hosts on h's deploy target: those that share its
// certificate files (config.SharedTarget), and those that resolve to one of
// its addresses on the same port (one server serves both names). Hosts that
// share an address but not their files cannot be proven safe: refused.
func (env *rolloverEnv) peers(h *config.Host) ([]*config.Host, error) {
	out := env.cfg.SharedTarget(h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mine []string
	for i := range env.cfg.Hosts {
		o := &env.cfg.Hosts[i]
		if o == h || o.Port != h.Port || slices.Contains(out, o) {
			continue
		}
		if mine == nil {
			mine = addrsOf(ctx, env.resolver, h.Name)
		}
		theirs := addrsOf(ctx, env.resolver, o.Name)
		for _, a := range theirs {
			if !slices.Contains(mine, a) {
				continue
			}
			if o.Deploy.Configured() {
				return nil, fmt.Errorf("[[host]] %s and %s share the address %s (port %d) but not their certificate files: one server serves both names, so a deploy to one changes the other; give both the same key_file and chain_file", strings.TrimSuffix(h.Name, "."), strings.TrimSuffix(o.Name, "."), a, h.Port)
			}
			out = append(out, o)
			break
		}
	}
	return out, nil
}

// addrsOf returns host's addresses as text (none when the lookup fails).
func addrsOf(ctx context.Context, r *dnsx.Resolver, host string) []string {
	out := []string{}
	res, _ := r.LookupAddrs(ctx, host)
	if res != nil {
		for _, a := range res.Addrs {
			out = append(out, a.String())
		}
	}
	return out
}

// hostTarget builds one host's DNS (the TLSA owner senders query, after
// CNAMEs) and deployer.
func (env *rolloverEnv) hostTarget(h *config.Host) (rollover.Target, error) {
	// Built at most once a minute: a long `rollover run --wait` still
	// notices a CNAME that changed.
	key := fmt.Sprintf("%s:%d", h.Name, h.Port)
	env.mu.Lock()
	c, ok := env.targets[key]
	env.mu.Unlock()
	if ok && time.Since(c.at) < time.Minute {
		return c.t, nil
	}
	t, err := env.buildHostTarget(h)
	if err == nil {
		env.mu.Lock()
		if env.targets == nil {
			env.targets = map[string]cachedTarget{}
		}
		env.targets[key] = cachedTarget{t: t, at: time.Now()}
		env.mu.Unlock()
	}
	return t, err
}

func (env *rolloverEnv) buildHostTarget(h *config.Host) (rollover.Target, error) {
	if env.cfg.Provider.Name == "" {
		return rollover.Target{}, errors.New("the configuration has no [provider]")
	}
	prov, err := providers.New(env.cfg.Provider.Name, providers.Settings{Values: env.cfg.Provider.Settings})
	if err != nil {
		return rollover.Target{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := targets.Resolve(ctx, targets.Config{
		Provider: prov, ProviderID: env.cfg.Provider.Name, Zone: h.Zone, Host: h.Name, Port: h.Port, Resolver: env.resolver,
		AuthServers: h.AuthServers, AuthPort: h.AuthPort,
		// A lagging server fails the step after this; the next run retries.
		Propagation: providers.PropagationOptions{Interval: time.Second, Timeout: 2 * time.Minute},
	})
	if err != nil {
		return rollover.Target{}, err
	}
	km, _ := strconv.ParseUint(orDefault(h.Deploy.KeyMode, "0600"), 8, 32)
	cm, _ := strconv.ParseUint(orDefault(h.Deploy.CertMode, "0644"), 8, 32)
	var dep rollover.Deployer
	if h.Deploy.Configured() {
		fd, err := deploy.New(deploy.Config{
			Host: h.Name, Port: h.Port, KeyFile: h.Deploy.KeyFile, ChainFile: h.Deploy.ChainFile, CertFile: h.Deploy.CertFile,
			KeyMode: os.FileMode(km), CertMode: os.FileMode(cm), Owner: h.Deploy.Owner, Group: h.Deploy.Group,
			Reload: h.Deploy.Reload, ReloadTimeout: h.Deploy.ReloadTimeout.Duration, ProbeTimeout: h.Deploy.ProbeTimeout.Duration,
			Prober: deploy.ResolverProber{Resolver: env.resolver, Host: h.Name, Port: h.Port, Timeout: 30 * time.Second},
		})
		if err != nil {
			return rollover.Target{}, err
		}
		dep = fd
	} else {
		dep = probeOnly{prober: deploy.ResolverProber{Resolver: env.resolver, Host: h.Name, Port: h.Port, Timeout: 30 * time.Second}, host: h.Name}
	}
	return rollover.Target{DNS: d, Deployer: dep}, nil
}

// probeOnly is the deployer of a host tlsactl does not install certificates
// on (no [host.deploy]): it can tell what is served, nothing more.
type probeOnly struct {
	prober deploy.ResolverProber
	host   string
}

func (p probeOnly) Served(ctx context.Context) ([][]*x509.Certificate, error) {
	return p.prober.Served(ctx)
}

func (p probeOnly) Snapshot(context.Context) (rollover.Material, error) {
	return rollover.Material{}, nil
}

func (p probeOnly) Deploy(context.Context, rollover.Material, rollover.Material) error {
	return fmt.Errorf("host %s has no [host.deploy] section: tlsactl cannot install its certificate", strings.TrimSuffix(p.host, "."))
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func readMaterial(c *cli.Context, certFlag, keyFlag string) (*rollover.Material, error) {
	cp, kp := c.String(certFlag), c.String(keyFlag)
	if cp == "" && kp == "" {
		return nil, nil
	}
	if cp == "" || kp == "" {
		return nil, fmt.Errorf("give both --%s and --%s", certFlag, keyFlag)
	}
	chain, err := readInput(cp, c.App.Reader)
	if err != nil {
		return nil, err
	}
	key, err := readKeyInput(kp, c.App.Reader)
	if err != nil {
		return nil, err
	}
	return &rollover.Material{ChainPEM: chain, KeyPEM: key}, nil
}

func readCA(c *cli.Context) (*x509.Certificate, error) {
	p := c.String(flagNewCA)
	if p == "" {
		return nil, nil
	}
	certs, err := readCertificates(p, c.App.Reader, "")
	if err != nil {
		return nil, err
	}
	if !certs[0].IsCA {
		return nil, fmt.Errorf("%s: %s is not a CA certificate; give the issuing CA of the new certificate", p, certs[0].Subject)
	}
	return certs[0], nil
}

func readNextKey(c *cli.Context) ([]byte, error) {
	p := c.String(flagNextKey)
	if p == "" {
		return nil, nil
	}
	ms, err := readMaterialFile(p, c.App.Reader)
	if err != nil {
		return nil, err
	}
	return ms[0].SPKI, nil
}

func runRolloverStart(c *cli.Context) error {
	env, h, err := rolloverHost(c)
	if err != nil {
		return badInput(err)
	}
	req := rollover.StartRequest{Host: h.Name, Port: h.Port, Plan: rollover.Plan(c.String(flagPlan)), Margin: env.cfg.Margin.Duration}
	if !req.Plan.Valid() {
		return badInput(fmt.Errorf("--plan %q: want renew, ca-migration or key-prepublish", c.String(flagPlan)))
	}
	if env.cfg.Margin.Duration == 0 {
		req.Margin = time.Minute
	}
	switch ttl := c.Int64(flagTTL); {
	case ttl > 2147483647:
		return badInput(fmt.Errorf("--ttl %d out of range", ttl))
	case ttl >= 0:
		req.TTL = uint32(ttl)
	default:
		req.TTL = uint32(h.TTL)
	}
	if req.New, err = readMaterial(c, flagNewCert, flagNewKey); err != nil {
		return badInput(err)
	}
	if req.NewCA, err = readCA(c); err != nil {
		return badInput(err)
	}
	if req.NextKeySPKI, err = readNextKey(c); err != nil {
		return badInput(err)
	}
	st, err := env.engine.Start(c.Context, req)
	if err != nil {
		return &exitError{code: exitRolloverError, err: err}
	}
	fmt.Fprintf(c.App.Writer, "started %s rollover of %s; next step: %s (run `tlsactl rollover run`)\n", st.Plan, strings.TrimSuffix(st.Host, "."), st.CurrentStep())
	return nil
}

func runRolloverProvide(c *cli.Context) error {
	env, h, err := rolloverHost(c)
	if err != nil {
		return badInput(err)
	}
	m, err := readMaterial(c, flagCert, flagKey)
	if err != nil {
		return badInput(err)
	}
	if m == nil {
		return badInput(errors.New("give --cert FILE and --key FILE"))
	}
	st, err := env.engine.Provide(c.Context, h.Name, *m)
	if err != nil {
		return &exitError{code: exitRolloverError, err: err}
	}
	fmt.Fprintf(c.App.Writer, "staged the new certificate for %s (3 1 1 %s…); it is deployed when the plan says it is safe\n", strings.TrimSuffix(st.Host, "."), short16(st.NewLeafSPKI))
	return nil
}

func short16(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

func runRolloverRun(c *cli.Context) error {
	env, err := newRolloverEnv(c)
	if err != nil {
		return badInput(err)
	}
	hosts := c.StringSlice(flagHost)
	if len(hosts) == 0 {
		if hosts, err = env.store.List(); err != nil {
			return badInput(err)
		}
	}
	ctx := c.Context
	if c.Bool(flagWait) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Duration(flagTimeout))
		defer cancel()
	}
	explicit := len(c.StringSlice(flagHost)) > 0
	for {
		var next time.Time
		failed := 0
		// Fleet migrations first (migration.go): each advances its own
		// hosts within its schedule, so the loop below leaves them alone.
		pass, err := advanceMigrations(ctx, c, env, nil, !explicit)
		away := storeAwayPass(ctx, c, err)
		storeDown := away != nil
		if storeDown {
			pass = away
		} else if err != nil {
			return badInput(err)
		}
		failed += pass.errors
		next = pass.next
		if err := writePassMetrics(c, pass, storeDown); err != nil {
			return err
		}
		for _, h := range hosts {
			if storeDown {
				break // the store is away: the next pass
			}
			if name, ok := pass.busy[strings.ToLower(bare(h))]; ok {
				if explicit {
					fmt.Fprintf(c.App.Writer, "%s: in migration %s: tlsactl migration run %s advances it\n", bare(h), name, name)
				}
				continue
			}
			st, err := env.store.Load(h)
			if err != nil {
				if errors.Is(err, rollover.ErrNoRollover) {
					continue
				}
				if !c.Bool(flagWait) {
					return badInput(err)
				}
				failed++ // the store is away: retried at the next pass
				fmt.Fprintf(c.App.ErrWriter, "tlsactl: %s: %s\n", bare(h), oneLine(storeErr(env.store.where, err).Error()))
				continue
			}
			if st.Status != rollover.StatusActive {
				continue
			}
			out, err := env.engine.Advance(ctx, h)
			host := strings.TrimSuffix(h, ".")
			switch {
			case err != nil:
				failed++
				fmt.Fprintf(c.App.ErrWriter, "tlsactl: %s: %s\n", host, oneLine(err.Error()))
				if out.State != nil && !out.State.NotBefore.IsZero() && (next.IsZero() || out.State.NotBefore.Before(next)) {
					next = out.State.NotBefore
				}
			case out.Waiting:
				fmt.Fprintf(c.App.Writer, "%s: waiting: %s\n", host, out.Reason)
				if nb := out.State.NotBefore; !nb.IsZero() && (next.IsZero() || nb.Before(next)) {
					next = nb
				}
			default:
				fmt.Fprintf(c.App.Writer, "%s: %s rollover %s\n", host, out.State.Plan, out.State.Status)
			}
		}
		if !c.Bool(flagWait) || (next.IsZero() && failed == 0 && pass.skipped == 0) {
			if err := pass.verdict(); err != nil {
				return err // a migration halted, holds hosts or failed
			}
			if failed > 0 {
				return silentExit(exitRolloverError)
			}
			return nil
		}
		if err := sleepCtx(ctx, nextWait(next, failed, pass.skipped)); err != nil {
			return &exitError{code: exitRolloverError, err: fmt.Errorf("--wait: %w before every rollover finished", err)}
		}
	}
}

type statusJSON struct {
	*rollover.State
	CurrentStep rollover.StepKind `json:"current_step"`
}

func runRolloverStatus(c *cli.Context) error {
	env, err := newRolloverEnv(c)
	if err != nil {
		return badInput(err)
	}
	hosts := c.StringSlice(flagHost)
	if len(hosts) == 0 {
		if hosts, err = env.store.List(); err != nil {
			return badInput(err)
		}
	}
	var all []statusJSON
	for _, h := range hosts {
		st, err := env.store.Load(h)
		if err != nil {
			return badInput(err)
		}
		all = append(all, statusJSON{State: st, CurrentStep: st.CurrentStep()})
	}
	if c.Bool(flagJSON) {
		if all == nil {
			all = []statusJSON{}
		}
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(all)
	}
	return printStatus(c.App.Writer, all)
}

func printStatus(w io.Writer, all []statusJSON) error {
	var b strings.Builder
	if len(all) == 0 {
		b.WriteString("no rollovers\n")
	}
	for _, s := range all {
		fmt.Fprintf(&b, "%s: %s rollover, %s, step %d/%d %s", strings.TrimSuffix(s.Host, "."), s.Plan, s.Status, s.Step+1, len(s.Plan.Steps()), s.CurrentStep)
		if !s.NotBefore.IsZero() && s.Status == rollover.StatusActive {
			fmt.Fprintf(&b, ", not before %s", s.NotBefore.UTC().Format(time.RFC3339))
		}
		b.WriteString("\n")
		if s.LastError != "" {
			fmt.Fprintf(&b, "  last error: %s\n", oneLine(s.LastError))
		}
		l := rollover.Ledger{Owner: s.Owner, Versions: s.Versions}
		if cur, ok := l.Current(); ok {
			fmt.Fprintf(&b, "  current RRset (TTL %d): %s\n", cur.TTL, strings.Join(cur.Records, ", "))
		}
		if s.Owner != "" {
			fmt.Fprintf(&b, "  ledger of %s (what the name held, written or observed):\n", s.Owner)
		}
		now := time.Now()
		for _, v := range s.Versions {
			state := "current"
			switch {
			case !v.Superseded.IsZero() && now.Before(v.CachedUntil(time.Duration(s.Margin))):
				state = "cached until " + v.CachedUntil(time.Duration(s.Margin)).UTC().Format(time.RFC3339)
			case !v.Superseded.IsZero():
				state = "gone"
			case v.Confirmed.IsZero():
				state = "not confirmed"
			}
			who := v.Writer
			if who == "" {
				who = "observed"
			}
			recs := strings.Join(v.Records, ", ")
			if recs == "" {
				recs = "(no TLSA)"
			}
			fmt.Fprintf(&b, "    %-14s TTL %-5d since %s, %s: %s\n", state, v.TTL, v.Since().UTC().Format(time.RFC3339), who, recs)
		}
		for _, e := range s.History {
			fmt.Fprintf(&b, "  %s %-22s %-16s %s\n", e.At.UTC().Format(time.RFC3339), e.Step, e.What, oneLine(e.Detail))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func runRolloverAbort(c *cli.Context) error {
	env, h, err := rolloverHost(c)
	if err != nil {
		return badInput(err)
	}
	st, err := env.engine.Abort(c.Context, h.Name)
	if err != nil {
		return &exitError{code: exitRolloverError, err: err}
	}
	fmt.Fprintf(c.App.Writer, "aborted the %s rollover of %s at step %s\n", st.Plan, strings.TrimSuffix(st.Host, "."), st.CurrentStep())
	return nil
}

func runRolloverPlan(c *cli.Context) error {
	env, h, err := rolloverHost(c)
	if err != nil {
		return badInput(err)
	}
	plan := rollover.Plan(c.String(flagPlan))
	if !plan.Valid() {
		return badInput(fmt.Errorf("--plan %q: want renew, ca-migration or key-prepublish", plan))
	}
	t, err := env.target(h.Name)
	if err != nil {
		return badInput(err)
	}
	cur, _, err := t.DNS.Current(c.Context)
	if err != nil {
		return &exitError{code: exitRolloverError, err: err}
	}
	var newTA, newEE, next string
	if ca, err := readCA(c); err != nil {
		return badInput(err)
	} else if ca != nil {
		r, _ := tlsa.Compute(tlsa.FromCertificate(ca), 2, 1, 1)
		newTA = r.String()
	}
	if p := c.String(flagNewCert); p != "" {
		ms, err := readMaterialFile(p, c.App.Reader)
		if err != nil {
			return badInput(err)
		}
		r, err := tlsa.Compute(ms[0], 3, 1, 1)
		if err != nil {
			return badInput(err)
		}
		newEE = r.String()
	}
	if spki, err := readNextKey(c); err != nil {
		return badInput(err)
	} else if spki != nil {
		r, _ := tlsa.Compute(tlsa.Material{Kind: tlsa.KindPublicKey, SPKI: spki}, 3, 1, 1)
		next = r.String()
	}
	margin := env.cfg.Margin.Duration
	if margin == 0 {
		margin = time.Minute
	}
	steps := rollover.Preview(plan, cur.Records, uint32(h.TTL), cur.TTL, newTA, newEE, next, margin, 30*time.Second, time.Now())
	if c.Bool(flagJSON) {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(steps)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s rollover of %s (dry run; assumes 30 s propagation and the new certificate at hand)\n", plan, strings.TrimSuffix(h.Name, "."))
	for i, s := range steps {
		fmt.Fprintf(&b, "%d. %-22s earliest %s  RRset: %s\n", i+1, s.Step, s.Earliest.UTC().Format(time.RFC3339), strings.Join(s.Records, ", "))
		if s.Note != "" {
			fmt.Fprintf(&b, "   %s\n", s.Note)
		}
	}
	_, err = io.WriteString(c.App.Writer, b.String())
	return err
}
