package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
	"github.com/urfave/cli/v2"
)

// exitHookHeld is EX_TEMPFAIL (sysexits.h): the hook staged the new
// certificate but holds it back until it is safe to serve; the rollover timer
// (`tlsactl rollover run`) deploys it later. Nothing is broken.
const exitHookHeld = 75

// hookExitCodes is the EXIT CODES section of every hook command's help.
const hookExitCodes = `EXIT CODES:
   0   deployed, or nothing to do (or --dry-run)
   1   a step failed or was refused; the server keeps its current certificate (the rollover
       state says why; 'tlsactl rollover run' retries)
   2   bad input: missing hook environment, unknown domain, unreadable or mismatched files
   75  held back (EX_TEMPFAIL): the certificate is staged and deployed later by
       'tlsactl rollover run', after the time the message names`

// The environment ACME clients give their hooks.
const (
	// lego v4 (--run-hook, --renew-hook).
	envLegoDomain = "LEGO_CERT_DOMAIN"
	envLegoCert   = "LEGO_CERT_PATH"
	envLegoKey    = "LEGO_CERT_KEY_PATH"
	envLegoIssuer = "LEGO_ISSUER_CERT_PATH"
	// lego v5 (--deploy-hook; lego's cmd/internal/hook/metadata.go). The
	// certificate's name is the first domain unless --cert.name; the
	// domains are comma-separated.
	envLego5Name    = "LEGO_HOOK_CERT_NAME"
	envLego5Domains = "LEGO_HOOK_CERT_DOMAINS"
	envLego5Cert    = "LEGO_HOOK_CERT_PATH"
	envLego5Key     = "LEGO_HOOK_CERT_KEY_PATH"
	envLego5Issuer  = "LEGO_HOOK_ISSUER_CERT_PATH"
	envCertbotDir   = "RENEWED_LINEAGE"
	envCertbotNames = "RENEWED_DOMAINS"
)

const hookWorkflows = `WORKFLOWS:
   Same key at every renewal (lego --reuse-key, certbot --reuse-key): the 3 1 1 digest never
   changes. The hook verifies the new chain and deploys it at once (a renew rollover whose
   3 1 1 replacement is a no-op); the 2 1 1 of the CA covers the chain.
      lego run --path /etc/lego --email you@example.nl --dns dnsupdate -d mx.example.nl \
          --reuse-key --deploy-hook 'tlsactl hook lego'                          # lego v5
      lego --path /etc/lego --email you@example.nl --dns rfc2136 -d mx.example.nl \
          renew --reuse-key --renew-hook 'tlsactl hook lego'                     # lego v4
      certbot renew --reuse-key --deploy-hook 'tlsactl hook certbot'

   A fresh key at every renewal, never an outage (next key, RFC 7671 §8.1): after each
   renewal run 'tlsactl key next --host mx.example.nl'. It stores the next key in the state
   directory, writes its CSR and publishes its 3 1 1 beside the current one, weeks before it
   is needed. Renew from that CSR; the hook hands the certificate to the waiting
   key-prepublish rollover, which deploys it (the 3 1 1 has aged long ago) and retires the
   old 3 1 1. lego --csr writes no key: the hook takes the next key from the state directory.
      lego run --path /etc/lego --email you@example.nl --dns dnsupdate \
          --csr /var/lib/tlsactl/keys/mx.example.nl/next.csr --deploy-hook 'tlsactl hook lego'  # v5
      lego --path /etc/lego --email you@example.nl --dns rfc2136 \
          --csr /var/lib/tlsactl/keys/mx.example.nl/next.csr renew --renew-hook 'tlsactl hook lego'

   A fresh key without a next key (plain renewals): the new 3 1 1 is published when the
   certificate is deployed; the CA's 2 1 1 covers the swap. Publish the 2 1 1 of every
   intermediate the CA may issue from (tlsactl publish --usage 2 --certificate 'dir/*.pem'
   --add): Let's Encrypt picks among R10-R14 and E5-E9, and a certificate from an
   intermediate without a 2 1 1 is a new CA to DANE (held back a TTL, see above).`

func createHook() *cli.Command {
	common := func() []cli.Flag {
		return []cli.Flag{
			&cli.StringFlag{Name: flagConfig, EnvVars: []string{"TLSACTL_CONFIG"}, Value: "/etc/tlsactl/tlsactl.toml", Usage: "configuration `FILE`: provider, hosts, deploy paths, reload commands"},
			&cli.StringFlag{Name: flagStateDir, EnvVars: []string{"TLSACTL_STATE_DIR"}, Usage: "state `DIR` (default: config state_dir, then /var/lib/tlsactl)"},
			&cli.StringFlag{Name: flagResolver, EnvVars: []string{"TLSACTL_RESOLVER"}, Usage: "validating resolver `ADDR` (default: config, then /etc/resolv.conf)"},
			&cli.StringFlag{Name: flagHost, Usage: "the configured MX `HOST` to deploy to (default: the [[host]] the certificate's domain names)"},
			&cli.BoolFlag{Name: flagDryRun, Aliases: []string{"n"}, Usage: "say what the hook would do; change nothing"},
		}
	}
	return &cli.Command{
		Name:  "hook",
		Usage: "deploy an ACME client's new certificate without breaking DANE (lego, certbot hooks)",
		Description: `Run from the ACME client after it obtained a certificate. The hook reads the new
certificate chain and key, finds every configured [[host]] it is for (the domains the client
names and the certificate's other names; --host overrides), observes each host — what every
address serves, and the TLSA RRset at the provider, at every authoritative server and at the
resolver, recorded in the owner's ledger — and asks these decisions in order (the first that
applies wins; its reason is printed in brackets):

   active-rollover      a rollover is active for the host: the certificate is provided to it
                        (e.g. the next key's key-prepublish); one past its deploy is finished first
   same-certificate     every address serves this very certificate: nothing to do
   alias                a server answers with a CNAME at the owner: refused (run again; tlsactl
                        follows CNAMEs to the RRset senders use)
   no-tlsa              no TLSA at the provider, at any authoritative server or in any cache:
                        deploy rollover, no DNS change
   same-key             same key as served and the published 3 x x matches: deploy rollover
   covered-by-ta        a published 2 x x matches the new chain: renew rollover (deploy, replace
                        the 3 1 1) — held back (exit 75) until every RRset a cache may hold has
                        that 2 x x: published is not aged
   new-ca               nothing published matches: ca-migration rollover, the issuer's 2 1 1 is
                        published and the certificate HELD back until that record has aged a TTL;
                        the hook exits 75 and 'tlsactl rollover run' (the systemd timer) deploys
                        it after the time it names

The server is never left without a matching record: every DNS change and the swap are
checked by the engine first. The chain handed over is the leaf first, then its issuer
(lego v5: the bundle in LEGO_HOOK_CERT_PATH, or LEGO_HOOK_ISSUER_CERT_PATH; lego v4: the
bundle in LEGO_CERT_PATH, or LEGO_ISSUER_CERT_PATH; certbot: fullchain.pem).

` + hookWorkflows + `

` + hookExitCodes,
		Subcommands: []*cli.Command{
			{
				Name:  "lego",
				Usage: "for lego v5 --deploy-hook (LEGO_HOOK_CERT_*) or lego v4 --run-hook / --renew-hook (LEGO_CERT_*)",
				Description: `Accepts both of lego's hook contracts and tells them apart by the variables present.

lego v5 (lego run ... --deploy-hook): LEGO_HOOK_CERT_PATH (the certificate; lego writes the
bundle of leaf and issuer unless --no-bundle), LEGO_HOOK_CERT_KEY_PATH,
LEGO_HOOK_ISSUER_CERT_PATH and LEGO_HOOK_CERT_DOMAINS (comma-separated). lego v5 has one
command, 'run', for the first certificate and every renewal (it renews when the stored
certificate is due: a third of its lifetime left, --renew-days N, --renew-force, or when
the CA's renewal info says so); --run-hook and --renew-hook are gone, and so is 'renew'.
It kills a deploy hook after --deploy-hook-timeout (2m): the hook holds a certificate
back (exit 75) rather than wait. Its DNS provider for RFC 2136 is called 'dnsupdate'
(DNSUPDATE_* variables). The first renewal from another CA (a new --server) needs
--ari-disable: lego v5 names the stored certificate in the order ('replaces', RFC 9773)
and a CA that did not issue it refuses the order. A lego v4 --path must be converted once
with 'lego migrate --path DIR' (accounts and certificate metadata; the certificate files
stay where they are); without it lego v5 makes itself a new account key.

   lego run --path /etc/lego --email you@example.nl --dns dnsupdate -d mx.example.nl \
       --deploy-hook 'tlsactl hook lego'

lego v4 (Debian 12's 4.9.1): LEGO_CERT_DOMAIN, LEGO_CERT_PATH, LEGO_CERT_KEY_PATH and, when
set, LEGO_ISSUER_CERT_PATH (lego 4.9.1 does not set it: then the issuer must be in the
bundle).

   lego ... run --run-hook 'tlsactl hook lego'
   lego ... renew --renew-hook 'tlsactl hook lego'

With lego --csr there is no key file: the key is the next key of 'tlsactl key next'.
lego splits the hook command at blanks (no shell, no quotes): give the configuration as
'tlsactl hook lego --config FILE' or with TLSACTL_CONFIG.

` + hookWorkflows + `

EXAMPLES:
   lego run --path /etc/lego --email you@example.nl --dns dnsupdate -d mx.example.nl --deploy-hook 'tlsactl hook lego'
   lego --path /etc/lego --email you@example.nl --dns rfc2136 -d mx.example.nl renew --renew-hook 'tlsactl hook lego'
   TLSACTL_CONFIG=/etc/tlsactl/tlsactl.toml tlsactl hook lego --dry-run    # inside a hook: say what it would do

` + hookExitCodes,
				Flags:  common(),
				Action: runHookLego,
			},
			{
				Name:  "certbot",
				Usage: "for certbot --deploy-hook (RENEWED_LINEAGE, RENEWED_DOMAINS)",
				Description: `Reads RENEWED_LINEAGE (the live directory: fullchain.pem, privkey.pem) and RENEWED_DOMAINS
(space-separated names of the certificate). certbot stores --deploy-hook in the renewal
configuration (its timer runs it again) and exits 0 whatever the hook returns: a certificate
held back (75) is deployed by 'tlsactl rollover run'.

   certbot certonly -d mx.example.nl ... --deploy-hook 'tlsactl hook certbot'
   certbot renew --reuse-key --deploy-hook 'tlsactl hook certbot'

certbot certonly --csr (the next key's CSR of 'tlsactl key next') writes no privkey.pem and
runs no deploy hook (certbot 2.1): name the directory of its --fullchain-path yourself; the
key is then the next key in the state directory (examples/hooks/certbot-csr.sh does this):

   certbot certonly --csr /var/lib/tlsactl/keys/mx.example.nl/next.csr ... \
       --cert-path DIR/cert.pem --chain-path DIR/chain.pem --fullchain-path DIR/fullchain.pem
   RENEWED_LINEAGE=DIR tlsactl hook certbot --host mx.example.nl

` + hookWorkflows + `

EXAMPLES:
   certbot renew --reuse-key --deploy-hook 'tlsactl hook certbot --config /etc/tlsactl/tlsactl.toml'
   examples/hooks/certbot-csr.sh mx.example.nl    # the next-key CSR flow (certbot runs no hook for --csr)
   RENEWED_LINEAGE=/etc/letsencrypt/live/mx.example.nl RENEWED_DOMAINS=mx.example.nl tlsactl hook certbot --dry-run

` + hookExitCodes,
				Flags:  common(),
				Action: runHookCertbot,
			},
		},
	}
}

// hookInput is the new material as the ACME client left it.
type hookInput struct {
	source   string   // "lego" or "certbot"
	domains  []string // names the client gave, in order
	certs    []*x509.Certificate
	certFrom string // file(s) the certificates came from, for messages
	keyPEM   []byte // nil when the client wrote no key (lego --csr)
	keyFrom  string
	keyVar   string // the variable naming the key file (lego), for messages
}

// legoContract tells lego v5's hook environment (LEGO_HOOK_CERT_*) from
// lego v4's (LEGO_CERT_*, LEGO_ISSUER_CERT_PATH) by the variables set:
// 5, 4, or 0 when neither is. lego v5 sets none of v4's names, and v4 none
// of v5's; v5's wins should both be set.
func legoContract() int {
	set := func(names ...string) bool {
		for _, n := range names {
			if os.Getenv(n) != "" {
				return true
			}
		}
		return false
	}
	switch {
	case set(envLego5Cert, envLego5Key, envLego5Domains, envLego5Name, envLego5Issuer):
		return 5
	case set(envLegoCert, envLegoKey, envLegoDomain, envLegoIssuer):
		return 4
	}
	return 0
}

// legoEnv names the variables of one lego hook contract and how the hook
// is to be run under it (for messages).
type legoEnv struct {
	cert, key, issuer, domains string
	certNote, runAs            string
}

// legoEnvs are the contracts by lego major version (legoContract).
var legoEnvs = map[int]legoEnv{
	5: {cert: envLego5Cert, key: envLego5Key, issuer: envLego5Issuer, domains: envLego5Domains,
		certNote: " (lego v5 sets it for --deploy-hook only, not for --pre-hook or --post-hook)", runAs: "as lego run's --deploy-hook"},
	4: {cert: envLegoCert, key: envLegoKey, issuer: envLegoIssuer, domains: envLegoDomain,
		runAs: "from lego v4's --run-hook or --renew-hook"},
}

// errNoLegoEnv is the bad input of 'tlsactl hook lego' run outside a lego hook.
var errNoLegoEnv = fmt.Errorf("no lego hook variables are set (lego v5's %s, %s, %s; lego v4's %s, %s, %s): run 'tlsactl hook lego' as lego v5's 'run --deploy-hook' or lego v4's --run-hook / --renew-hook",
	envLego5Cert, envLego5Key, envLego5Domains, envLegoCert, envLegoKey, envLegoDomain)

func runHookLego(c *cli.Context) error {
	in := &hookInput{source: "lego"}
	env, ok := legoEnvs[legoContract()]
	if !ok {
		return badInput(errNoLegoEnv)
	}
	certPath, keyPath, issuerPath := os.Getenv(env.cert), os.Getenv(env.key), os.Getenv(env.issuer)
	in.keyVar = env.key
	if certPath == "" {
		return badInput(fmt.Errorf("%s is not set%s: run 'tlsactl hook lego' %s", env.cert, env.certNote, env.runAs))
	}
	// v5's domains are comma-separated; v4 names one.
	for _, d := range strings.Split(os.Getenv(env.domains), ",") {
		if d = strings.TrimSpace(d); d != "" {
			in.domains = append(in.domains, d)
		}
	}
	if len(in.domains) == 0 && c.String(flagHost) == "" {
		return badInput(fmt.Errorf("%s is not set: run 'tlsactl hook lego' %s, or give --host", env.domains, env.runAs))
	}
	if err := in.addCerts(certPath); err != nil {
		return badInput(err)
	}
	if issuerPath != "" {
		if err := in.addCerts(issuerPath); err != nil {
			return badInput(err)
		}
	}
	if keyPath != "" {
		in.keyFrom = keyPath
		// lego --csr sets the variable but writes no key file (or leaves
		// an old one): then the next key is looked up.
		if err := in.readKey(); err != nil {
			return badInput(fmt.Errorf("%s: %w", in.keyVar, err))
		}
	}
	return runHook(c, in)
}

func runHookCertbot(c *cli.Context) error {
	in := &hookInput{source: "certbot"}
	dir := os.Getenv(envCertbotDir)
	if dir == "" {
		return badInput(fmt.Errorf("%s is not set: run 'tlsactl hook certbot' from certbot's --deploy-hook", envCertbotDir))
	}
	in.domains = strings.Fields(os.Getenv(envCertbotNames))
	if len(in.domains) == 0 && c.String(flagHost) == "" {
		return badInput(fmt.Errorf("%s is not set: run 'tlsactl hook certbot' from certbot's --deploy-hook, or give --host", envCertbotNames))
	}
	if err := in.addCerts(filepath.Join(dir, "fullchain.pem")); err != nil {
		return badInput(err)
	}
	in.keyFrom = filepath.Join(dir, "privkey.pem")
	// certbot certonly --csr writes no key (and runs no deploy hook): the
	// directory of its --fullchain-path is handed over by hand, and the key
	// is the next key of 'tlsactl key next'.
	if err := in.readKey(); err != nil {
		return badInput(err)
	}
	return runHook(c, in)
}

// readKey reads the key file keyFrom into keyPEM. A file that does not
// exist (lego or certbot --csr writes none) leaves keyPEM nil: material
// then looks for the next key.
func (in *hookInput) readKey() error {
	if _, err := os.Stat(in.keyFrom); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	b, err := readKeyInput(in.keyFrom, nil)
	if err != nil {
		return err
	}
	in.keyPEM = b
	return nil
}

// addCerts appends the certificates of a PEM file, skipping duplicates.
func (in *hookInput) addCerts(path string) error {
	certs, err := readCertificates(path, nil, "")
	if err != nil {
		return err
	}
	for _, c := range certs {
		dup := false
		for _, have := range in.certs {
			dup = dup || have.Equal(c)
		}
		if !dup {
			in.certs = append(in.certs, c)
		}
	}
	if in.certFrom != "" {
		in.certFrom += " + "
	}
	in.certFrom += path
	return nil
}

// material pairs the certificates with a private key (the client's, else the
// next key kept in keyDir) and returns the chain leaf first, then the issuers
// in the order given.
func (in *hookInput) material(keyDir string) (rollover.Material, []*x509.Certificate, error) {
	type cand struct {
		from string
		pem  []byte
	}
	var cands []cand
	if in.keyPEM != nil {
		cands = append(cands, cand{in.keyFrom, in.keyPEM})
	}
	next := filepath.Join(keyDir, nextKeyFile)
	if b, err := readKeyInput(next, nil); err == nil {
		cands = append(cands, cand{next, b})
	}
	for _, k := range cands {
		ms, err := tlsa.ParseMaterial(k.from, k.pem)
		if err != nil {
			return rollover.Material{}, nil, err
		}
		for _, m := range ms {
			if m.Kind != tlsa.KindPrivateKey {
				continue
			}
			for i, c := range in.certs {
				if !bytes.Equal(c.RawSubjectPublicKeyInfo, m.SPKI) {
					continue
				}
				chain := append([]*x509.Certificate{c}, in.certs[:i]...)
				chain = append(chain, in.certs[i+1:]...)
				var buf bytes.Buffer
				for _, x := range chain {
					_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: x.Raw})
				}
				return rollover.Material{ChainPEM: buf.Bytes(), KeyPEM: k.pem}, chain, nil
			}
		}
	}
	switch {
	case in.keyPEM == nil && in.keyFrom != "":
		return rollover.Material{}, nil, fmt.Errorf("no private key for the certificate in %s: %s does not exist (lego or certbot --csr?) and %s does not hold its key either (see 'tlsactl key next')", in.certFrom, in.keyFrom, next)
	case in.keyPEM == nil:
		return rollover.Material{}, nil, fmt.Errorf("no private key for the certificate in %s: %s is not set and %s does not hold its key either", in.certFrom, cmp.Or(in.keyVar, envLegoKey), next)
	}
	return rollover.Material{}, nil, fmt.Errorf("the private key %s belongs to no certificate in %s (nor does the next key %s)", in.keyFrom, in.certFrom, next)
}

// hookHosts returns the configured hosts the hook works on.
func hookHosts(c *cli.Context, env *rolloverEnv, in *hookInput) ([]*config.Host, error) {
	if name := c.String(flagHost); name != "" {
		h, err := env.host(name)
		if err != nil {
			return nil, err
		}
		return []*config.Host{h}, nil
	}
	find := func(names []string) []*config.Host {
		var out []*config.Host
		for _, n := range names {
			n = strings.ToLower(strings.TrimSuffix(n, ".")) + "."
			for i := range env.cfg.Hosts {
				h := &env.cfg.Hosts[i]
				dup := false
				for _, o := range out {
					dup = dup || o == h
				}
				if h.Name == n && !dup {
					out = append(out, h)
				}
			}
		}
		return out
	}
	// Every configured name the certificate is for: the client's domain
	// and the leaf's other SANs (one certificate for several MX hosts).
	var sans []string
	for _, c := range in.certs {
		if !c.IsCA {
			sans = append(sans, c.DNSNames...)
		}
	}
	if hs := find(append(slices.Clone(in.domains), sans...)); len(hs) > 0 {
		return hs, nil
	}
	return nil, fmt.Errorf("%s (certificate names %s) is not a [[host]] of %s: add the MX host with its [host.deploy] section, or give --host",
		strings.Join(in.domains, " "), strings.Join(sans, " "), c.String(flagConfig))
}

func runHook(c *cli.Context, in *hookInput) error {
	env, err := newRolloverEnv(c)
	if err != nil {
		return badInput(err)
	}
	hosts, err := hookHosts(c, env, in)
	if err != nil {
		return badInput(err)
	}
	worst := exitOK
	report := func(h *config.Host, err error) {
		if err == nil {
			return
		}
		code := exitRolloverError
		var e *exitError
		if errors.As(err, &e) {
			code = e.code
		}
		fmt.Fprintf(c.App.ErrWriter, "tlsactl: %s: %s\n", strings.TrimSuffix(h.Name, "."), oneLine(err.Error()))
		if hookRank(code) > hookRank(worst) {
			worst = code
		}
	}
	// Decide and start for every name first, then advance: hosts on one
	// deploy target (shared files or addresses) must all have their
	// rollovers before the first deploy, which is checked against each.
	var todo []*hookJob
	for _, h := range hosts {
		job, err := hookPrepare(c, env, h, in)
		report(h, err)
		if job != nil {
			todo = append(todo, job)
		}
	}
	for _, job := range todo {
		report(job.h, hookAdvance(c.Context, env, job.h, job.plan, job.desc, job.say))
	}
	if worst != exitOK {
		return silentExit(worst)
	}
	return nil
}

// hookRank orders exit codes: bad input, then failure, then held back.
func hookRank(code int) int {
	switch code {
	case exitOK:
		return 0
	case exitHookHeld:
		return 1
	case exitRolloverError:
		return 2
	}
	return 3
}

// certName names a certificate: its CN, else its first DNS name (ACME CAs
// may leave the CN empty), else its subject.
func certName(c *x509.Certificate) string {
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return c.Subject.String()
}

func spkiOf(c *x509.Certificate) string {
	r, _ := tlsa.Compute(tlsa.FromCertificate(c), tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	return fmt.Sprintf("%x", r.Data)
}

// hookJob is a rollover the hook started or provided to, to be advanced.
type hookJob struct {
	h    *config.Host
	plan rollover.Plan
	desc string
	say  func(string, ...any)
}

// hookHost decides for one host and advances what it started.
func hookHost(c *cli.Context, env *rolloverEnv, h *config.Host, in *hookInput) error {
	job, err := hookPrepare(c, env, h, in)
	if err != nil || job == nil {
		return err
	}
	return hookAdvance(c.Context, env, job.h, job.plan, job.desc, job.say)
}

// hookPrepare observes the host (its served chains, its TLSA RRset at every
// source, recorded in the ledger), asks the hook decisions
// (rollover.DecideHook) and starts or provides to the rollover they name.
// It returns nil when nothing is left to advance.
func hookPrepare(c *cli.Context, env *rolloverEnv, h *config.Host, in *hookInput) (*hookJob, error) {
	ctx := c.Context
	name := strings.TrimSuffix(h.Name, ".")
	dry := c.Bool(flagDryRun)
	say := func(format string, args ...any) {
		fmt.Fprintf(c.App.Writer, "%s: %s\n", name, fmt.Sprintf(format, args...))
	}
	m, chain, err := in.material(keyDir(env.store.Dir(), h.Name))
	if err != nil {
		return nil, badInput(err)
	}
	leaf := chain[0]
	if len(chain) < 2 {
		return nil, badInput(fmt.Errorf("%s holds only the certificate, not its issuer: DANE-TA (2 1 1) needs the whole chain; let lego write the bundle (no --no-bundle) or set %s (lego v5: %s), or use certbot's fullchain.pem", in.certFrom, envLegoIssuer, envLego5Issuer))
	}
	if !chain[1].IsCA {
		return nil, badInput(fmt.Errorf("%s: the certificate after the leaf (%s) is not a CA certificate", in.certFrom, chain[1].Subject))
	}
	if err := leaf.VerifyHostname(name); err != nil {
		return nil, badInput(fmt.Errorf("the new certificate (names %s) is not valid for %s: %v", strings.Join(leaf.DNSNames, " "), name, err))
	}
	spki := spkiOf(leaf)
	desc := fmt.Sprintf("certificate %q from %q (3 1 1 %s…, expires %s)", certName(leaf), certName(chain[1]), spki[:16], leaf.NotAfter.UTC().Format("2006-01-02"))
	job := &hookJob{h: h, desc: desc, say: say}
	margin := env.margin()

	for round := 0; ; round++ {
		var active *rollover.State
		if st, err := env.store.Load(h.Name); err == nil && st.Status == rollover.StatusActive {
			active = st
		} else if err != nil && !errors.Is(err, rollover.ErrNoRollover) {
			return nil, badInput(err)
		}
		t, err := env.target(h.Name)
		if err != nil {
			return nil, badInput(err)
		}
		served, err := t.Deployer.Served(ctx)
		if err != nil {
			return nil, &exitError{code: exitRolloverError, err: fmt.Errorf("probing what %s serves: %w", name, err)}
		}
		facts := rollover.HookFacts{Host: h.Name, New: chain, Served: served, Active: active, Now: time.Now(), Margin: margin}
		if dry {
			// A dry run records nothing: it reads the ledger as it is.
			if facts.Sightings, err = t.DNS.Observe(ctx); err == nil {
				facts.Ledger, err = env.store.LoadLedger(t.DNS.Owner())
			}
		} else {
			facts.Ledger, facts.Sightings, err = env.engine.Observe(ctx, h.Name)
		}
		if err != nil {
			return nil, &exitError{code: exitRolloverError, err: err}
		}
		d := rollover.DecideHook(facts)
		switch d.Action {
		case rollover.HookNothing:
			say("already serves this %s: %s", desc, d.Message)
			return nil, nil
		case rollover.HookRefuse:
			return nil, &exitError{code: exitRolloverError, err: fmt.Errorf("the new %s is not deployed: %s", desc, d.Message)}
		case rollover.HookFinish:
			if dry {
				say("would finish the active %s rollover (step %s) first, then decide for the new %s", active.Plan, active.CurrentStep(), desc)
				return nil, nil
			}
			out, err := env.engine.Advance(ctx, h.Name)
			if err != nil {
				return nil, &exitError{code: exitRolloverError, err: fmt.Errorf("the previous %s rollover could not finish, so the new certificate is not deployed: %w", active.Plan, err)}
			}
			if out.Waiting || out.State.Status == rollover.StatusActive || round > 0 {
				return nil, &exitError{code: exitRolloverError, err: fmt.Errorf("the previous %s rollover is still finishing (%s): run the hook again later", active.Plan, out.Reason)}
			}
			say("finished the previous %s rollover", active.Plan)
			continue
		case rollover.HookProvide:
			if err := hookProvide(c, env, h, active, m, desc, dry, say); err != nil || dry {
				return nil, err
			}
			job.plan = active.Plan
			return job, nil
		}
		req := rollover.StartRequest{Host: h.Name, Port: h.Port, TTL: uint32(h.TTL), Margin: margin, New: &m}
		switch d.Action {
		case rollover.HookDeploy:
			req.Plan = rollover.PlanDeploy
		case rollover.HookRenew:
			req.Plan = rollover.PlanRenew
		case rollover.HookMigrate:
			req.Plan, req.NewCA = rollover.PlanCAMigration, chain[1]
		}
		if dry {
			switch req.Plan {
			case rollover.PlanCAMigration:
				say("would hold the new %s back: %s [%s]", desc, d.Message, d.Reason)
			default:
				say("would deploy the new %s with a %s rollover: %s [%s]", desc, req.Plan, d.Message, d.Reason)
			}
			return nil, nil
		}
		say("%s [%s]: %s rollover", d.Message, d.Reason, req.Plan)
		if _, err := env.engine.Start(ctx, req); err != nil {
			return nil, &exitError{code: exitRolloverError, err: fmt.Errorf("the new certificate is not deployed: %w", err)}
		}
		job.plan = req.Plan
		return job, nil
	}
}

// hookProvide hands the material to the active rollover (advanced later).
func hookProvide(c *cli.Context, env *rolloverEnv, h *config.Host, st *rollover.State, m rollover.Material, desc string, dry bool, say func(string, ...any)) error {
	staged := false
	if old, err := env.store.GetMaterial(h.Name, "new"); err == nil && bytes.Equal(old.ChainPEM, m.ChainPEM) && bytes.Equal(old.KeyPEM, m.KeyPEM) {
		staged = true
	}
	if dry {
		verb := "would provide the new %s to the active %s rollover (step %s) and advance it"
		if staged {
			verb = "the new %s is already staged for the active %s rollover (step %s); would advance it"
		}
		say(verb, desc, st.Plan, st.CurrentStep())
		return nil
	}
	if !staged {
		if _, err := env.engine.Provide(c.Context, h.Name, m); err != nil {
			return &exitError{code: exitRolloverError, err: fmt.Errorf("the active %s rollover (step %s) does not take the new certificate, which is not deployed: %w (or abort it: tlsactl rollover abort --host %s)", st.Plan, st.CurrentStep(), err, strings.TrimSuffix(h.Name, "."))}
		}
		say("provided the new %s to the active %s rollover", desc, st.Plan)
	}
	return nil
}

// hookAdvance advances the host's rollover and turns the outcome into the
// hook's exit status.
func hookAdvance(ctx context.Context, env *rolloverEnv, h *config.Host, plan rollover.Plan, desc string, say func(string, ...any)) error {
	out, err := env.engine.Advance(ctx, h.Name)
	if err != nil {
		return &exitError{code: exitRolloverError, err: fmt.Errorf("%s rollover: %w; the server keeps a certificate that a published record matches; 'tlsactl rollover run' retries", plan, err)}
	}
	st := out.State
	if out.Waiting {
		var why string
		switch {
		case st.Migration != "" && st.CurrentStep() == rollover.StepDeploy && st.NotBefore.IsZero():
			why = fmt.Sprintf("%s is in migration %s, whose schedule (deploy windows, max_parallel, canary) deploys it; see 'tlsactl migration status %s'", h.Name, st.Migration, st.Migration)
		case st.Plan == rollover.PlanCAMigration:
			why = fmt.Sprintf("its CA is new to DANE: the CA's 2 1 1 is published and the certificate may be served only once that record is in every cache (TTL %ds + margin)", st.TTL)
		case st.Plan == rollover.PlanKeyPrepublish:
			why = "the next key's 3 1 1 has not aged a TTL yet"
		default:
			why = out.Reason
		}
		when := "the rollover can continue"
		if !st.NotBefore.IsZero() {
			when = st.NotBefore.Local().Format(time.RFC3339)
		}
		return &exitError{code: exitHookHeld, err: fmt.Errorf("held back the new %s: %s; 'tlsactl rollover run' (the timer) deploys it after %s; until then the server keeps its current certificate", desc, why, when)}
	}
	last := st.Versions[len(st.Versions)-1]
	say("%s rollover %s: deployed the new %s; TLSA %s", st.Plan, st.Status, desc, strings.Join(last.Records, ", "))
	return nil
}
