//go:build !noacme

package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/internal/acme"
	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/internal/safefile"
	"github.com/tlsactl/tlsactl/providers"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
	"github.com/urfave/cli/v2"
)

const (
	flagDirectory = "directory"
	flagEmail     = "email"
	flagCAFile    = "ca-file"
	flagDays      = "days"
	flagKeyType   = "key-type"
	flagTXTTTL    = "txt-ttl"
	flagVerbose   = "verbose"
	flagEABKID    = "eab-kid-file"
	flagEABHMAC   = "eab-hmac-file"
)

// The environment variables that give External Account Binding
// credentials themselves (rather than files): for a secrets manager that
// injects values; they are never printed.
const (
	envEABKID  = "TLSACTL_ACME_EAB_KID"
	envEABHMAC = "TLSACTL_ACME_EAB_HMAC"
)

func createACME() *cli.Command {
	return &cli.Command{
		Name:  "acme",
		Usage: "obtain certificates from an ACME CA (DNS-01 through the configured provider) and deploy them DANE-safely",
		Subcommands: []*cli.Command{{
			Name:  "renew",
			Usage: "obtain a certificate for a host with DNS-01 and hand it to the rollover engine",
			Description: `Obtains a certificate for the host (its name, plus --san names) from the ACME CA with
DNS-01: the _acme-challenge TXT record is written through the same [provider] that writes
the TLSA records (RFC 2136, or a hosted API), in the host's zone (its configured zone, else
the zone found through the resolver). tlsactl waits until every authoritative server of the
zone (auth_servers, else the zone's NS set) serves the record before it lets the CA
validate, and deletes exactly that TXT record afterwards. The ACME account (key and
registration) is kept in <state_dir>/acme/ (mode 0600) and created on first use.

Next key (RFC 7671 §8.1): when 'tlsactl key next' prepared a next key and its
key-prepublish rollover waits for the certificate, the order is placed for its CSR
(<state_dir>/keys/<host>/next.csr): the certificate lands on the key whose 3 1 1 is
already published, and the old 3 1 1 is retired. Otherwise a fresh key (--key-type) is
made for every certificate.

The certificate then goes through the same classification as 'tlsactl hook':

   the very same certificate is served        nothing to do
   same key / new key, CA's 2 x x covers it   renew: deploy now, replace the 3 1 1
   new CA (no published 2 x x matches)        ca-migration: publish the CA's 2 1 1 and HOLD
                                              the certificate back a TTL (exit 75); the
                                              timer ('tlsactl rollover run') deploys it
   a rollover is active for the host          the certificate is provided to it (next key)

Without --force nothing is ordered while the served certificate is valid for more than
--days, or while an active rollover already holds a certificate (it is advanced instead).

The ACME settings are flags or environment variables (the configuration file has no ACME
section): TLSACTL_ACME_DIRECTORY, TLSACTL_ACME_EMAIL, TLSACTL_ACME_CA_FILE.

External Account Binding (RFC 8555 §7.3.4; commercial CAs such as Sectigo, ZeroSSL, HARICA
or a PKIoverheid successor): the key ID and the HMAC key the CA hands out, from files
(--eab-kid-file, --eab-hmac-file; the HMAC file must be private, mode 0600) or from
TLSACTL_ACME_EAB_KID and TLSACTL_ACME_EAB_HMAC. They are used once, when the account is
registered, and never printed.

EXAMPLES:
   TLSACTL_ACME_DIRECTORY=https://acme-v02.api.letsencrypt.org/directory \
   TLSACTL_ACME_EMAIL=hostmaster@example.nl tlsactl acme renew --host mx.example.nl

   # a systemd timer, daily: renews 30 days before expiry, then finishes rollovers
   tlsactl acme renew --host mx.example.nl; tlsactl rollover run

   # next key: publish its 3 1 1 now, renew from its CSR weeks later
   tlsactl key next --host mx.example.nl
   tlsactl acme renew --host mx.example.nl --force

   # a CA that binds ACME accounts to a customer account (EAB)
   tlsactl acme renew --host mx.example.nl --directory https://acme.sectigo.com/v2/OV \
       --eab-kid-file /etc/tlsactl/eab.kid --eab-hmac-file /etc/tlsactl/eab.hmac

   # a test CA (Pebble) whose HTTPS certificate is signed by its own root
   tlsactl acme renew --host mx.example.test --directory https://127.0.0.1:14000/dir \
       --ca-file pebble.minica.pem --force

EXIT CODES:
   0   deployed, nothing to do, or not due yet (or --dry-run)
   1   the order or a rollover step failed; the server keeps its current certificate
   2   bad input or configuration
   75  held back (EX_TEMPFAIL): the certificate comes from a CA new to DANE; its 2 1 1 is
       published and 'tlsactl rollover run' deploys the certificate after the time named`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: flagConfig, EnvVars: []string{"TLSACTL_CONFIG"}, Value: "/etc/tlsactl/tlsactl.toml", Usage: "configuration `FILE`: provider, hosts, deploy paths, reload commands"},
				&cli.StringFlag{Name: flagStateDir, EnvVars: []string{"TLSACTL_STATE_DIR"}, Usage: "state `DIR` (default: config state_dir, then /var/lib/tlsactl)"},
				&cli.StringFlag{Name: flagResolver, EnvVars: []string{"TLSACTL_RESOLVER"}, Usage: "validating resolver `ADDR` (default: config, then /etc/resolv.conf)"},
				&cli.StringFlag{Name: flagHost, Usage: "the MX `HOST` (must be a [[host]] of the configuration)"},
				&cli.StringSliceFlag{Name: flagSAN, Usage: "another DNS `NAME` for the certificate (repeatable; not with a next-key CSR)"},
				&cli.StringFlag{Name: flagDirectory, EnvVars: []string{"TLSACTL_ACME_DIRECTORY"}, Usage: "ACME directory `URL` (required)"},
				&cli.StringFlag{Name: flagEmail, EnvVars: []string{"TLSACTL_ACME_EMAIL"}, Usage: "account e-mail `ADDRESS`"},
				&cli.StringFlag{Name: flagCAFile, EnvVars: []string{"TLSACTL_ACME_CA_FILE"}, Usage: "extra trusted root(s) `FILE` (PEM) for the ACME server's HTTPS"},
				&cli.StringFlag{Name: flagEABKID, EnvVars: []string{"TLSACTL_ACME_EAB_KID_FILE"}, Usage: "External Account Binding key ID `FILE` (or the value in $" + envEABKID + ")"},
				&cli.StringFlag{Name: flagEABHMAC, EnvVars: []string{"TLSACTL_ACME_EAB_HMAC_FILE"}, Usage: "External Account Binding HMAC key `FILE`, mode 0600 (or the value in $" + envEABHMAC + ")"},
				&cli.IntFlag{Name: flagDays, Value: 30, Usage: "renew only when the served certificate expires within `N` days"},
				&cli.BoolFlag{Name: flagForce, Usage: "order a certificate now, whatever the expiry"},
				&cli.StringFlag{Name: flagKeyType, Value: "ec256", Usage: "`TYPE` of a fresh key: ec256, ec384, rsa2048, rsa3072, rsa4096"},
				&cli.DurationFlag{Name: flagTXTTTL, Value: time.Minute, Usage: "TTL of the _acme-challenge TXT record"},
				&cli.DurationFlag{Name: flagTimeout, Value: 10 * time.Minute, Usage: "bound for the ACME order"},
				&cli.BoolFlag{Name: flagVerbose, Aliases: []string{"v"}, Usage: "print lego's log and each DNS-01 step on stderr"},
				&cli.BoolFlag{Name: flagDryRun, Aliases: []string{"n"}, Usage: "say what would be ordered; order and change nothing"},
			},
			Action: runACMERenew,
		}},
	}
}

// acmeNextCSR returns the next key's CSR when the host's active
// key-prepublish rollover waits for a certificate on that key.
func acmeNextCSR(env *rolloverEnv, h *config.Host, st *rollover.State) ([]byte, string, error) {
	dir := keyDir(env.store.Dir(), h.Name)
	csrPath := filepath.Join(dir, nextCSRFile)
	b, err := os.ReadFile(csrPath)
	if errors.Is(err, os.ErrNotExist) {
		if st != nil && st.Status == rollover.StatusActive && st.Plan == rollover.PlanKeyPrepublish {
			return nil, "", fmt.Errorf("a key-prepublish rollover is active but %s does not exist: run 'tlsactl key next' again, or abort the rollover", csrPath)
		}
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	if st == nil || st.Status != rollover.StatusActive || st.Plan != rollover.PlanKeyPrepublish {
		return nil, "", nil // a used or abandoned next key: a fresh key is safer
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, "", fmt.Errorf("%s holds no PEM CERTIFICATE REQUEST", csrPath)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", csrPath, err)
	}
	r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindPublicKey, SPKI: csr.RawSubjectPublicKeyInfo}, tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	if err != nil {
		return nil, "", err
	}
	if st.Next != "" && r.String() != st.Next {
		return nil, "", fmt.Errorf("%s is not for the next key the active key-prepublish rollover published (%s): run 'tlsactl key next' again after aborting it", csrPath, st.Next)
	}
	return b, csrPath, nil
}

func runACMERenew(c *cli.Context) error {
	env, h, err := rolloverHost(c)
	if err != nil {
		return badInput(err)
	}
	ctx := c.Context
	name := strings.TrimSuffix(h.Name, ".")
	say := func(format string, args ...any) {
		fmt.Fprintf(c.App.Writer, "%s: %s\n", name, fmt.Sprintf(format, args...))
	}
	directory := c.String(flagDirectory)
	if directory == "" {
		return badInput(errors.New("no ACME directory: give --directory URL or set TLSACTL_ACME_DIRECTORY"))
	}
	if env.cfg.Provider.Name == "" {
		return badInput(errors.New("the configuration has no [provider]: DNS-01 writes the _acme-challenge TXT record through it"))
	}
	if c.Int(flagDays) < 0 {
		return badInput(fmt.Errorf("--days %d: want 0 or more", c.Int(flagDays)))
	}
	force, dry := c.Bool(flagForce), c.Bool(flagDryRun)
	eabKID, eabHMAC, err := eabCredentials(c)
	if err != nil {
		return badInput(err)
	}

	var st *rollover.State
	if s, err := env.store.Load(h.Name); err == nil {
		st = s
	} else if !errors.Is(err, rollover.ErrNoRollover) {
		return badInput(err)
	}
	active := st != nil && st.Status == rollover.StatusActive
	if active && !force {
		if _, err := env.store.GetMaterial(h.Name, "new"); err == nil {
			if dry {
				say("the active %s rollover (step %s) holds a certificate already: would advance it, order nothing", st.Plan, st.CurrentStep())
				return nil
			}
			say("the active %s rollover (step %s) holds a certificate already: advancing it, ordering nothing (--force orders anew)", st.Plan, st.CurrentStep())
			return acmeResult(c, h, hookAdvance(ctx, env, h, st.Plan, "certificate", say))
		}
	}

	t, err := env.target(h.Name)
	if err != nil {
		return badInput(err)
	}
	if !force {
		served, err := t.Deployer.Served(ctx)
		if err != nil {
			return &exitError{code: exitRolloverError, err: fmt.Errorf("probing what %s serves, to see whether the certificate is due (--force orders anyway): %w", name, err)}
		}
		var expiry time.Time
		for _, s := range served {
			if len(s) > 0 && (expiry.IsZero() || s[0].NotAfter.Before(expiry)) {
				expiry = s[0].NotAfter
			}
		}
		due := time.Now().Add(time.Duration(c.Int(flagDays)) * 24 * time.Hour)
		if !expiry.IsZero() && expiry.After(due) {
			say("not due: the served certificate expires %s, more than %d days from now (--force orders anyway)", expiry.UTC().Format(time.RFC3339), c.Int(flagDays))
			return nil
		}
	}

	csrPEM, csrPath, err := acmeNextCSR(env, h, st)
	if err != nil {
		return badInput(err)
	}
	names := []string{name}
	for _, s := range c.StringSlice(flagSAN) {
		s = strings.ToLower(strings.TrimSuffix(s, "."))
		if _, err := tlsa.HostName(s); err != nil {
			return badInput(fmt.Errorf("--san %q: %w", s, err))
		}
		if !contains(names, s) {
			names = append(names, s)
		}
	}
	if csrPEM != nil && len(names) > 1 {
		return badInput(fmt.Errorf("--san cannot change the names of the next key's CSR %s (made by 'tlsactl key next --san')", csrPath))
	}
	keyDesc := "a fresh " + c.String(flagKeyType) + " key"
	if csrPEM != nil {
		keyDesc = "the next key's CSR " + csrPath + " (its 3 1 1 is published)"
	}
	if dry {
		say("would order a certificate for %s from %s with %s, solving DNS-01 through provider %s, and hand it to the rollover engine", strings.Join(names, ", "), directory, keyDesc, env.cfg.Provider.Name)
		return nil
	}

	solver, err := env.dnsSolver(h, c.Duration(flagTXTTTL))
	if err != nil {
		return badInput(err)
	}
	opts := acme.Options{
		DirectoryURL: directory, Email: c.String(flagEmail), CAFile: c.String(flagCAFile), StateDir: env.store.Dir(),
		Domains: names, CSR: csrPEM, KeyType: c.String(flagKeyType), Solver: solver, Resolver: resolverHostPort(env.resolver.Addr),
		Timeout: c.Duration(flagTimeout),
	}
	if c.Bool(flagVerbose) {
		opts.Log = c.App.ErrWriter
		solver.Logf = func(format string, args ...any) {
			fmt.Fprintf(c.App.ErrWriter, "%s: dns-01: %s\n", name, fmt.Sprintf(format, args...))
		}
	}
	if eabKID != "" {
		reg, err := acme.RegisterEAB(ctx, opts, eabKID, eabHMAC)
		if err != nil {
			return &exitError{code: exitRolloverError, err: fmt.Errorf("registering the ACME account with External Account Binding (key ID %s) failed; nothing changed: %w", eabKID, err)}
		}
		if reg {
			say("registered a new ACME account with External Account Binding (key ID %s)", eabKID)
		}
	}
	say("ordering a certificate for %s from %s with %s", strings.Join(names, ", "), directory, keyDesc)
	start := time.Now()
	res, err := acme.Obtain(ctx, opts)
	if err != nil {
		return &exitError{code: exitRolloverError, err: fmt.Errorf("the ACME order failed; nothing changed: %w", err)}
	}
	if res.Registered {
		say("registered a new ACME account (stored in %s)", res.AccountDir)
	}
	say("issued %s by %q in %s", res.CertURL, certName(res.Chain[len(res.Chain)-1]), time.Since(start).Round(time.Millisecond))

	in := &hookInput{source: "acme", domains: names, certFrom: "the certificate " + res.CertURL, keyPEM: res.KeyPEM}
	for _, x := range res.Chain {
		dup := false
		for _, have := range in.certs {
			dup = dup || bytes.Equal(have.Raw, x.Raw)
		}
		if !dup {
			in.certs = append(in.certs, x)
		}
	}
	if res.KeyPEM == nil {
		in.keyFrom = filepath.Join(keyDir(env.store.Dir(), h.Name), nextKeyFile)
	} else {
		in.keyFrom = "the new key"
	}
	return acmeResult(c, h, hookHost(c, env, h, in))
}

// acmeResult prints a hook error like 'tlsactl hook' does and keeps its
// exit code (75 held back, 1 failed, 2 bad input).
func acmeResult(c *cli.Context, h *config.Host, err error) error {
	if err == nil {
		return nil
	}
	code := exitRolloverError
	var e *exitError
	if errors.As(err, &e) {
		code = e.code
	}
	fmt.Fprintf(c.App.ErrWriter, "tlsactl: %s: %s\n", strings.TrimSuffix(h.Name, "."), oneLine(err.Error()))
	return silentExit(code)
}

// resolverHostPort adds port 53 to a resolver address without one.
func resolverHostPort(addr string) string {
	if addr == "" || strings.Contains(strings.TrimPrefix(addr, "["), "]:") || strings.Count(addr, ":") == 1 {
		return addr
	}
	if strings.Contains(addr, ":") {
		return "[" + strings.Trim(addr, "[]") + "]:53"
	}
	return addr + ":53"
}

// dnsSolver is the DNS-01 solver for h: it writes the _acme-challenge TXT
// record (TTL ttl) through the configured provider and waits until h's
// authoritative servers serve it. It checks no ACME setting.
func (env *rolloverEnv) dnsSolver(h *config.Host, ttl time.Duration) (*acme.DNSSolver, error) {
	prov, err := providers.New(env.cfg.Provider.Name, providers.Settings{Values: env.cfg.Provider.Settings})
	if err != nil {
		return nil, err
	}
	return &acme.DNSSolver{
		Provider: prov, Zone: h.Zone, Resolver: env.resolver, AuthServers: h.AuthServers, AuthPort: h.AuthPort,
		TTL: ttl, PropagationTimeout: 2 * time.Minute, Interval: 500 * time.Millisecond,
	}, nil
}

// eabCredentials returns the External Account Binding key ID and HMAC key
// from --eab-kid-file/--eab-hmac-file or $TLSACTL_ACME_EAB_KID/_HMAC, or two
// empty strings when none is given. Half a pair, an HMAC file others may
// read, or an empty file is an error naming the fix; the HMAC key itself
// never appears in an error.
func eabCredentials(c *cli.Context) (kid, hmac string, err error) {
	kid, hmac = os.Getenv(envEABKID), os.Getenv(envEABHMAC)
	if f := c.String(flagEABKID); f != "" {
		b, err := readInput(f, nil)
		if err != nil {
			return "", "", fmt.Errorf("--%s: %w", flagEABKID, err)
		}
		kid = string(b)
	}
	if f := c.String(flagEABHMAC); f != "" {
		b, err := safefile.ReadPrivate(f)
		if err != nil {
			return "", "", fmt.Errorf("--%s: %w", flagEABHMAC, err)
		}
		hmac = string(b)
	}
	kid, hmac = strings.TrimSpace(kid), strings.TrimSpace(hmac)
	switch {
	case kid == "" && hmac == "":
		return "", "", nil
	case kid == "":
		return "", "", fmt.Errorf("External Account Binding needs the key ID too: give --%s FILE or set %s", flagEABKID, envEABKID)
	case hmac == "":
		return "", "", fmt.Errorf("External Account Binding needs the HMAC key too: give --%s FILE (mode 0600) or set %s", flagEABHMAC, envEABHMAC)
	}
	return kid, hmac, nil
}
