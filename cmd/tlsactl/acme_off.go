//go:build noacme

package main

// This file replaces acme.go and migration_acme.go in a minimal build
// (go build -tags noacme): the binary has no embedded ACME client (no lego
// library). lego and certbot still work through 'tlsactl hook'.

import (
	"context"
	"crypto/x509"
	"errors"

	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/urfave/cli/v2"
)

// errNoACME is what every use of embedded ACME returns in this build.
var errNoACME = errors.New("this tlsactl was built without embedded ACME (-tags noacme): run lego or certbot with 'tlsactl hook lego|certbot', or use a build without -tags noacme")

// createACME keeps the command's name, so that `tlsactl acme renew …`
// says why it cannot run instead of "no such command".
func createACME() *cli.Command {
	refuse := func(*cli.Context) error { return errNoACME }
	return &cli.Command{
		Name:            "acme",
		Usage:           "not in this build: built without embedded ACME (-tags noacme)",
		SkipFlagParsing: true,
		Action:          refuse,
		Subcommands: []*cli.Command{{
			Name:            "renew",
			Usage:           "not in this build: built without embedded ACME (-tags noacme)",
			SkipFlagParsing: true,
			Action:          refuse,
		}},
	}
}

// acmeSource is the migration source kind "acme"; in this build it orders
// nothing and every Fetch returns errNoACME.
type acmeSource struct {
	env *rolloverEnv
	src config.MigrationSource
	cas []*x509.Certificate
}

var _ rollover.CertSource = (*acmeSource)(nil)

// Fetch refuses: this build has no ACME client.
func (a *acmeSource) Fetch(context.Context, string) (*rollover.Material, error) {
	return nil, errNoACME
}
