//go:build !nopostgres

package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

// TestServeLedgerInPostgres: `tlsactl serve` with its state in PostgreSQL
// records what every check cycle sees in the ledger through one store kept
// open: the sessions it holds after its second cycle are the ones it holds
// three cycles later (an earlier serve opened a store, a pool and new
// sessions for each cycle and closed them again).
func TestServeLedgerInPostgres(t *testing.T) {
	testbed.RequirePostgres(t)
	const zone = "servepg.test."
	ctx, knot, unbound := signedZoneBed(t, zone)
	host := "mx.servepg.test"
	chain := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{host}})
	cert := chain.TLSCertificate()
	srv := testbed.NewSMTPServer(t, testbed.SMTPStartTLS, &cert)
	_, port, _ := net.SplitHostPort(srv.Addr)
	r311, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: chain.Leaf.Cert, SPKI: chain.Leaf.SPKIDER}, tlsa.DANEEE, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	owner := fmt.Sprintf("_%s._tcp.%s.", port, host)
	var add []dns.RR
	for _, l := range []string{host + ". 1 IN A 127.0.0.1", owner + " 1 IN TLSA " + r311.String()} {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatal(err)
		}
		add = append(add, rr)
	}
	if err := knot.Update(ctx, zone, add, nil); err != nil {
		t.Fatal(err)
	}

	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	dsn := pg.CreateDB(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "state.key")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "tlsactl.toml")
	text := fmt.Sprintf("resolver = %q\nstate = %q\nstate_password_file = %q\nstate_key_file = %q\nrunner = \"exporter\"\nstate_dir = %q\n\n[[host]]\nname = %q\nport = %s\n",
		unbound.Addr, dsn, pg.PasswordFile(t), keyFile, filepath.Join(dir, "local"), host, port)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, buildServeBinary(t), "--config", cfg, "--interval", "300ms", "--timeout", "5s")

	// cycles waits until the exporter has finished at least n check cycles.
	cycles := func(n float64) {
		t.Helper()
		waitFor(t, ctx, fmt.Sprintf("%v check cycles", n), 60*time.Second, func() bool {
			text, code, _ := p.get(t, "/metrics", nil)
			if code != http.StatusOK {
				return false
			}
			v, ok := value(families(t, text), "tlsactl_exporter_check_cycles_total")
			return ok && v >= n
		})
	}
	db := testbed.DBName(dsn)
	cycles(2)
	first := pg.Sessions(t, db, "tlsactl:exporter")
	cycles(5)
	later := pg.Sessions(t, db, "tlsactl:exporter")
	if len(first) == 0 || !slices.Equal(first, later) {
		t.Errorf("serve's sessions after cycle 2: %v; after cycle 5: %v; want the same, open ones\n%s", first, later, p.stderr)
	}

	obs, err := rollover.OpenPG(ctx, rollover.PGOptions{DSN: dsn, PasswordFile: pg.PasswordFile(t), KeyFile: keyFile, Runner: "observer"})
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	l, err := obs.LoadLedger(owner)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Versions) != 1 || !slices.Equal(l.Versions[0].Records, []string{r311.String()}) {
		t.Errorf("ledger of %s: %+v, want the one RRset the resolver served", owner, l.Versions)
	}
	if v, ok := value(families(t, func() string { s, _, _ := p.get(t, "/metrics", nil); return s }()), "tlsactl_exporter_ledger_errors_total"); !ok || v != 0 {
		t.Errorf("tlsactl_exporter_ledger_errors_total = %v (present %v), want 0\n%s", v, ok, p.stderr)
	}
}
