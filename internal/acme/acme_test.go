package acme

// Real servers, nothing faked: Pebble (rejecting half of all nonces), Knot
// with a signed zone taking RFC 2136 updates with TSIG, and a validating
// Unbound for Pebble's DNS-01 lookups and for FindZone.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/providers"
)

func TestEmbeddedObtainDNS01(t *testing.T) {
	testbed.Require(t, "knotd", "knot")
	testbed.Require(t, "unbound", "unbound")
	testbed.RequirePebble(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const zone = "obtain.test."
	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{{Name: zone, Signed: true}}})
	ds, err := knot.DS(ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	stubs := []testbed.StubZone{{Name: zone, Addr: knot.Addr, TrustAnchor: ds}}
	// tlsactl's resolver and the CA's are different servers, as in real
	// life: a negative answer one caches never reaches the other.
	ub := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: stubs})
	caUB := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: stubs, NoCache: true})
	// 30 % of nonces rejected: every request must survive badNonce (50 %
	// exhausted lego's retries now and then on a loaded machine).
	pb := testbed.NewPebble(t, testbed.PebbleConfig{DNSServer: caUB.Addr, Env: []string{"PEBBLE_AUTHZREUSE=0", "PEBBLE_WFE_NONCEREJECT=30"}})
	keyFile := filepath.Join(t.TempDir(), "tsig.key")
	if err := knot.Key.WriteBINDKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	prov, err := providers.New("rfc2136", providers.Settings{Values: map[string]string{"server": knot.Addr, "tsig_key_file": keyFile}})
	if err != nil {
		t.Fatal(err)
	}
	res := &dnsx.Resolver{Addr: ub.Addr, Timeout: 3 * time.Second}
	var steps []string
	_, knotPort, _ := net.SplitHostPort(knot.Addr)
	authPort, _ := strconv.Atoi(knotPort)
	solver := &DNSSolver{Provider: prov, Resolver: res, AuthServers: []string{knot.Addr}, AuthPort: authPort, TTL: 5 * time.Second,
		PropagationTimeout: 30 * time.Second, Interval: 200 * time.Millisecond,
		Logf: func(f string, a ...any) { steps = append(steps, strings.TrimSpace(strings.Split(f, " ")[0])) }}
	state := t.TempDir()
	var log bytes.Buffer
	names := []string{"mx.obtain.test", "smtp.obtain.test"}
	r, err := Obtain(ctx, Options{DirectoryURL: pb.DirectoryURL, Email: "t@obtain.test", CAFile: pb.CAFile, StateDir: state,
		Domains: names, Solver: solver, Resolver: ub.Addr, Log: &log})
	t.Logf("lego log:\n%s", log.String())
	if err != nil {
		t.Fatalf("Obtain: %v\npebble:\n%s", err, pb.Log())
	}
	if !r.Registered {
		t.Error("the first Obtain did not register an account")
	}
	if len(r.Chain) < 2 || r.KeyPEM == nil {
		t.Fatalf("chain of %d, key %v", len(r.Chain), r.KeyPEM != nil)
	}
	_, inter, err := pb.Intermediate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Chain[1].Equal(inter) || r.Chain[0].CheckSignatureFrom(r.Chain[1]) != nil {
		t.Fatal("the chain is not leaf + Pebble's intermediate")
	}
	for _, n := range names {
		if r.Chain[0].VerifyHostname(n) != nil {
			t.Errorf("the certificate is not valid for %s", n)
		}
	}
	if got := strings.Join(steps, " "); strings.Count(got, "added") != 2 || strings.Count(got, "deleted") != 2 || strings.Count(got, "TXT") != 2 {
		t.Errorf("solver steps: %q (want 2 × added, served, deleted)", got)
	}
	assertNoTXT(t, ctx, knot.Addr, names...)
	for _, f := range []string{accountKeyFile, accountJSONFile} {
		fi, err := os.Stat(filepath.Join(r.AccountDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %o, want 0600", f, fi.Mode().Perm())
		}
	}

	// A CSR (the next key) with the stored account: no new registration,
	// the certificate is on the CSR's key and no key is returned.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: names[0]}, DNSNames: names[:1]}, key)
	if err != nil {
		t.Fatal(err)
	}
	// lego v5 logs its badNonce retries at debug level; the check waits
	// for the second order (about 25 signed requests in all: a run without
	// a rejected nonce has odds of 0.7^25 ≈ 0.01 %).
	allLog := log.String()
	log.Reset()
	r2, err := Obtain(ctx, Options{DirectoryURL: pb.DirectoryURL, Email: "t@obtain.test", CAFile: pb.CAFile, StateDir: state,
		CSR: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}), Solver: solver, Resolver: ub.Addr, Log: &log})
	if err != nil {
		t.Fatalf("Obtain with CSR: %v\n%s", err, log.String())
	}
	if allLog += log.String(); !strings.Contains(allLog, "badNonce") {
		t.Error("no badNonce retry in lego's log although Pebble rejects 30 % of the nonces")
	}
	if strings.Contains(allLog, "BEGIN") || strings.Contains(allLog, "PRIVATE KEY") {
		t.Error("lego's log holds PEM material")
	}
	if r2.Registered || r2.KeyPEM != nil {
		t.Errorf("with CSR: registered %v, key returned %v", r2.Registered, r2.KeyPEM != nil)
	}
	pub, _ := x509.MarshalPKIXPublicKey(key.Public())
	if !bytes.Equal(r2.Chain[0].RawSubjectPublicKeyInfo, pub) {
		t.Error("the certificate from the CSR is not on the CSR's key")
	}
	assertNoTXT(t, ctx, knot.Addr, names...)

	// Without the extra root, Pebble's HTTPS is not trusted.
	_, err = Obtain(ctx, Options{DirectoryURL: pb.DirectoryURL, StateDir: t.TempDir(), Domains: names[:1], Solver: solver, Resolver: ub.Addr})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Obtain without the CA file: %v, want a TLS verification error", err)
	}
}

// assertNoTXT: Knot serves no _acme-challenge TXT record for the names.
func assertNoTXT(t *testing.T, ctx context.Context, knot string, names ...string) {
	t.Helper()
	for _, n := range names {
		m, err := testbed.Query(ctx, knot, Owner(n), dns.TypeTXT)
		if err != nil {
			t.Fatal(err)
		}
		for _, rr := range m.Answer {
			if rr.Header().Rrtype == dns.TypeTXT {
				t.Errorf("Knot still serves %s after CleanUp", rr)
			}
		}
	}
}

// TestLoadAccountStored: account.json as tlsactl wrote it with lego v4
// (lego v4's registration.Resource: "body" and "uri") is still the account
// with lego v5, whose ExtendedAccount has the URL as Location.
func TestLoadAccountStored(t *testing.T) {
	const dirURL = "https://ca.example.test/dir"
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	cases := []struct {
		name, json string
		wantURL    string // "" = not registered
	}{
		{"written with lego v4", `{"email":"a@example.test","directory":"` + dirURL + `","registration":{"body":{"status":"valid","contact":["mailto:a@example.test"],"orders":"https://ca.example.test/orders/1"},"uri":"https://ca.example.test/acct/1"}}`, "https://ca.example.test/acct/1"},
		{"another directory", `{"email":"a@example.test","directory":"https://other.example.test/dir","registration":{"body":{"status":"valid"},"uri":"https://other.example.test/acct/1"}}`, ""},
		{"no account URL", `{"email":"a@example.test","directory":"` + dirURL + `","registration":{"body":{"status":"valid"}}}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			state := t.TempDir()
			dir := AccountDir(state, dirURL, "a@example.test")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, accountKeyFile), keyPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, accountJSONFile), []byte(tc.json), 0o600); err != nil {
				t.Fatal(err)
			}
			a, err := loadAccount(state, dirURL, "a@example.test")
			if err != nil {
				t.Fatal(err)
			}
			reg := a.GetRegistration()
			switch {
			case tc.wantURL == "" && reg != nil:
				t.Fatalf("registered as %q, want a new registration", reg.Location)
			case tc.wantURL != "" && (reg == nil || reg.Location != tc.wantURL || reg.Status != "valid"):
				t.Fatalf("registration %+v, want %s (valid)", reg, tc.wantURL)
			}
			if !a.key.(*ecdsa.PrivateKey).Equal(key) {
				t.Error("another account key")
			}
			// Saving keeps the stored shape.
			if reg != nil {
				a.setRegistration(reg)
				if err := a.save(); err != nil {
					t.Fatal(err)
				}
				b, _ := os.ReadFile(filepath.Join(dir, accountJSONFile))
				if !strings.Contains(string(b), `"uri": "`+tc.wantURL+`"`) || !strings.Contains(string(b), `"body": {`) {
					t.Errorf("saved account.json changed its shape:\n%s", b)
				}
			}
		})
	}
}
