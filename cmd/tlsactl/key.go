package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
	"github.com/urfave/cli/v2"
)

// Next keys live beside the rollover state, in their own directory:
// <state_dir>/keys/<host>/next-key.pem (0600) and next.csr.
const (
	nextKeyFile = "next-key.pem"
	nextCSRFile = "next.csr"
	flagRSA     = "rsa"
	flagOut     = "out"
	flagSAN     = "san"
)

// keyDir is where the next key of host is kept.
func keyDir(stateDir, host string) string {
	return filepath.Join(stateDir, "keys", strings.ToLower(strings.TrimSuffix(host, ".")))
}

func createKey() *cli.Command {
	return &cli.Command{
		Name:  "key",
		Usage: "prepare the next private key and publish its 3 1 1 ahead of the renewal (RFC 7671 §8.1)",
		Subcommands: []*cli.Command{{
			Name:  "next",
			Usage: "generate the next key and its CSR, and publish the key's 3 1 1 beside the current one",
			Description: `Generates the next private key of the host (ECDSA P-256, or RSA-2048 with --rsa), stores
it with mode 0600 as <state_dir>/keys/<host>/next-key.pem, writes a CSR for the host name
(plus --san names) next to it as next.csr, and starts a key-prepublish rollover: the next
key's 3 1 1 is published beside the current 3 1 1 and 2 1 1 now. Renew from that CSR any
time later; 'tlsactl hook lego' (or certbot) hands the certificate to the rollover, which
deploys it once the 3 1 1 has aged a TTL (at once, if the renewal is weeks later) and then
retires the old 3 1 1. Every renewal gets a fresh key and no resolver ever holds a TLSA
RRset that the served certificate does not match.

Refused while another rollover of the host is active (the stored next key of an active
key-prepublish is never overwritten).

` + hookWorkflows + `

EXAMPLES:
   tlsactl key next --host mx.example.nl
   lego --path /etc/lego --email you@example.nl --dns rfc2136 \
       --csr /var/lib/tlsactl/keys/mx.example.nl/next.csr renew --renew-hook 'tlsactl hook lego'

EXIT CODES:
   0   key and CSR written, the next 3 1 1 published (the rollover waits for the certificate)
   1   refused (another rollover is active) or the publication failed; 'tlsactl rollover run'
       retries a started rollover
   2   bad input or configuration`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: flagConfig, EnvVars: []string{"TLSACTL_CONFIG"}, Value: "/etc/tlsactl/tlsactl.toml", Usage: "configuration `FILE`: provider, hosts, deploy paths, reload commands"},
				&cli.StringFlag{Name: flagStateDir, EnvVars: []string{"TLSACTL_STATE_DIR"}, Usage: "state `DIR` (default: config state_dir, then /var/lib/tlsactl)"},
				&cli.StringFlag{Name: flagResolver, EnvVars: []string{"TLSACTL_RESOLVER"}, Usage: "validating resolver `ADDR` (default: config, then /etc/resolv.conf)"},
				&cli.StringFlag{Name: flagHost, Usage: "the MX `HOST` (must be a [[host]] of the configuration)"},
				&cli.BoolFlag{Name: flagRSA, Usage: "an RSA-2048 key instead of ECDSA P-256"},
				&cli.StringSliceFlag{Name: flagSAN, Usage: "another DNS `NAME` for the CSR (repeatable)"},
				&cli.StringFlag{Name: flagOut, Usage: "also write the CSR to `DIR`/<host>.csr (the key stays in the state directory)"},
			},
			Action: runKeyNext,
		}},
	}
}

func runKeyNext(c *cli.Context) error {
	env, err := newRolloverEnv(c)
	if err != nil {
		return badInput(err)
	}
	h, err := env.host(c.String(flagHost))
	if err != nil {
		return badInput(err)
	}
	name := strings.TrimSuffix(h.Name, ".")
	names := []string{name}
	for _, s := range c.StringSlice(flagSAN) {
		s = strings.ToLower(strings.TrimSuffix(s, "."))
		if _, err := tlsa.HostName(s); err != nil {
			return badInput(fmt.Errorf("--san %q: %w", s, err))
		}
		dup := false
		for _, n := range names {
			dup = dup || n == s
		}
		if !dup {
			names = append(names, s)
		}
	}
	if st, err := env.store.Load(h.Name); err == nil && st.Status == rollover.StatusActive {
		return &exitError{code: exitRolloverError, err: fmt.Errorf("a %s rollover of %s is active (step %s): finish it ('tlsactl rollover run') or abort it before preparing the next key", st.Plan, name, st.CurrentStep())}
	} else if err != nil && !errors.Is(err, rollover.ErrNoRollover) {
		return badInput(err)
	}
	if _, err := env.target(h.Name); err != nil {
		return badInput(err)
	}

	var key crypto.Signer
	alg := "ECDSA P-256"
	if c.Bool(flagRSA) {
		alg = "RSA-2048"
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}, DNSNames: names}, key)
	if err != nil {
		return err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}

	dir := keyDir(env.store.Dir(), h.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return badInput(err)
	}
	keyPath, csrPath := filepath.Join(dir, nextKeyFile), filepath.Join(dir, nextCSRFile)
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return badInput(err)
	}
	if err := writeFileAtomic(csrPath, csrPEM, 0o644); err != nil {
		return badInput(err)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "%s: next key (%s) written to %s (mode 0600)\n", name, alg, keyPath)
	fmt.Fprintf(w, "%s: CSR for %s written to %s\n", name, strings.Join(names, ", "), csrPath)
	if out := c.String(flagOut); out != "" {
		p := filepath.Join(out, name+".csr")
		if err := writeFileAtomic(p, csrPEM, 0o644); err != nil {
			return badInput(err)
		}
		fmt.Fprintf(w, "%s: CSR also written to %s\n", name, p)
		csrPath = p
	}

	req := rollover.StartRequest{Host: h.Name, Port: h.Port, Plan: rollover.PlanKeyPrepublish, TTL: uint32(h.TTL), Margin: env.cfg.Margin.Duration, NextKeySPKI: spki}
	if req.Margin == 0 {
		req.Margin = time.Minute
	}
	if _, err := env.engine.Start(c.Context, req); err != nil {
		return &exitError{code: exitRolloverError, err: fmt.Errorf("the next key is stored, but its 3 1 1 is not published: %w", err)}
	}
	out, err := env.engine.Advance(c.Context, h.Name)
	if err != nil {
		return &exitError{code: exitRolloverError, err: fmt.Errorf("publishing the next key's 3 1 1: %w; 'tlsactl rollover run' retries", err)}
	}
	st := out.State
	fmt.Fprintf(w, "%s: published the next key's %s beside the current records; TLSA %s\n", name, st.Next, strings.Join(st.Versions[len(st.Versions)-1].Records, ", "))
	if !st.NotBefore.IsZero() {
		fmt.Fprintf(w, "%s: a certificate on the next key may be served from %s (TTL %ds + margin); the hook holds back one that comes earlier\n", name, st.NotBefore.Local().Format(time.RFC3339), st.TTL)
	}
	fmt.Fprintf(w, "renew with the CSR, and let the hook deploy the certificate and retire the old 3 1 1:\n")
	fmt.Fprintf(w, "   lego --path /etc/lego --email you@example.nl --dns <provider> --csr %s renew --renew-hook 'tlsactl hook lego'\n", csrPath)
	return nil
}
