//go:build !noacme

package main

// The embedded-ACME certificate source of a migration (source kind "acme").
// A build with -tags noacme has acme_off.go instead.

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/internal/acme"
	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/internal/safefile"
	"github.com/tlsactl/tlsactl/rollover"
)

// acmeMaterial names the store's copy of a certificate the ACME source
// ordered, kept until the host's rollover takes it, so that a later pass
// does not order again.
const acmeMaterial = "migration-acme"

// acmeSource orders each host's certificate from an ACME CA with DNS-01
// through the configured provider (as `tlsactl acme renew` does), with
// External Account Binding when the migration names the credentials.
type acmeSource struct {
	env *rolloverEnv
	src config.MigrationSource
	cas []*x509.Certificate
}

var _ rollover.CertSource = (*acmeSource)(nil)

// Fetch orders the host's certificate (once: the result is kept in the
// store until the rollover takes it).
func (a *acmeSource) Fetch(ctx context.Context, host string) (*rollover.Material, error) {
	env := a.env
	if m, err := env.store.GetMaterial(host, acmeMaterial); err == nil {
		// Ordered by an earlier pass: taken, or reported, but ordered
		// again only once it is about to expire (CAs rate-limit orders).
		switch problem := a.problem(host, m, 7*24*time.Hour); {
		case problem == "":
			return &m, nil
		case !strings.Contains(problem, "expired"):
			return nil, fmt.Errorf("the certificate ordered earlier for %s: %s", bare(host), problem)
		}
	}
	h := env.cfg.Host(host, 0)
	if h == nil {
		return nil, fmt.Errorf("host %s is not in the configuration", bare(host))
	}
	if env.cfg.Provider.Name == "" {
		return nil, errors.New("the configuration has no [provider]: DNS-01 writes the _acme-challenge TXT record through it")
	}
	solver, err := env.dnsSolver(h, time.Minute)
	if err != nil {
		return nil, err
	}
	opts := acme.Options{
		DirectoryURL: a.src.Directory, Email: a.src.Email, CAFile: a.src.CAFile, StateDir: env.store.Dir(),
		Domains: []string{bare(h.Name)}, KeyType: a.src.KeyType, Solver: solver,
		Resolver: resolverHostPort(env.resolver.Addr), Timeout: 10 * time.Minute,
	}
	if a.src.EABKIDFile != "" {
		kid, err := readInput(a.src.EABKIDFile, nil)
		if err != nil {
			return nil, fmt.Errorf("eab_kid_file: %w", err)
		}
		hmac, err := safefile.ReadPrivate(a.src.EABHMACFile)
		if err != nil {
			return nil, fmt.Errorf("eab_hmac_file: %w", err)
		}
		if _, err := acme.RegisterEAB(ctx, opts, strings.TrimSpace(string(kid)), strings.TrimSpace(string(hmac))); err != nil {
			return nil, err
		}
	}
	res, err := acme.Obtain(ctx, opts)
	if err != nil {
		return nil, err
	}
	m := rollover.Material{ChainPEM: res.ChainPEM, KeyPEM: res.KeyPEM}
	if err := env.store.PutMaterial(host, acmeMaterial, m); err != nil {
		return nil, err
	}
	if problem := a.problem(host, m, 0); problem != "" {
		return nil, fmt.Errorf("the ACME CA issued %s (from %q): %s", res.CertURL, certName(res.Chain[len(res.Chain)-1]), problem)
	}
	return &m, nil
}

// problem says what keeps ordered material from serving host for at least
// ahead more ("" when nothing): the checks of the directory source.
func (a *acmeSource) problem(host string, m rollover.Material, ahead time.Duration) string {
	d := &dirSource{cas: a.cas, now: func() time.Time { return time.Now().Add(ahead) }}
	return d.check(strings.ToLower(bare(host)), m.ChainPEM, m.KeyPEM)
}
