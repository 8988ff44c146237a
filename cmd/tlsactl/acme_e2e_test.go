package main

// End-to-end tests of DANE-safe ACME renewals with real software: Pebble (the
// ACME test CA, one fresh root and intermediate per instance), lego solving
// DNS-01 through RFC 2136 into the signed Knot zone, and the rollover bed of
// rollover_e2e_test.go (caching validating Unbound, Postfix serving the deploy
// files, a background probe every 250 ms and posttls-finger at every step
// change, none of which may ever fail).
//
// Every lego test runs for each lego CLI as parallel subtests on one bed (one
// Knot, one validating Unbound, one tlsactl build; a host, its Postfix and
// its Pebbles per subtest):
//
//	v4  Debian 12's lego 4.9.1 (/usr/bin/lego): global flags, then `run` or
//	    `renew`; --run-hook / --renew-hook with LEGO_CERT_*; --dns rfc2136.
//	v5  lego v5.6.0 (`lego5` in PATH, or $TLSACTL_LEGO5; CI builds it with
//	    .ci/install-lego5.sh): one command `run` (obtain, or renew when due)
//	    with its flags after it; --deploy-hook with LEGO_HOOK_*; --dns
//	    dnsupdate (DNSUPDATE_*).
//
// Pebble and lego each resolve through an Unbound of their own that caches for
// at most a second (the CA's resolver is not the mail server's): lego's zone
// lookup of _acme-challenge.<name> before it adds the TXT record (NXDOMAIN)
// never reaches Pebble's cache. Neither lego can wait for propagation at the
// zone's name servers (they are named on port 53): lego 4.9.1 runs with
// --dns.disable-cp, lego v5 with --dns.propagation.disable-ans (it still waits
// until its own resolver sees the TXT record). Everything listens on
// 127.0.0.0/8.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

const acmeEmail = "t@example.test"

// legoCLI is one lego command-line client under test.
type legoCLI struct {
	major int // 4 or 5
	bin   string
}

// legoMajors are the lego versions every lego end-to-end test runs.
var legoMajors = []int{4, 5}

// requireLego finds lego of the major version: Debian's lego (4.9.1) as
// `lego`, lego v5 as $TLSACTL_LEGO5 or `lego5` in PATH. A missing one fails
// the test under CI=true and skips it otherwise.
func requireLego(t *testing.T, major int) legoCLI {
	t.Helper()
	if major == 4 {
		return legoCLI{major: 4, bin: testbed.Require(t, "lego", "lego")}
	}
	l, msg := findLego5()
	if msg == "" {
		return l
	}
	testbed.Unavailable(t, msg)
	return legoCLI{}
}

// findLego5 looks for a lego v5 with the dnsupdate (RFC 2136) DNS provider,
// else says why there is none.
func findLego5() (legoCLI, string) {
	bin := os.Getenv("TLSACTL_LEGO5")
	if bin == "" {
		bin, _ = exec.LookPath("lego5")
	}
	if bin == "" {
		return legoCLI{}, "lego v5 is not installed as lego5 in PATH (or $TLSACTL_LEGO5): run .ci/install-lego5.sh"
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "version v5.") {
		return legoCLI{}, fmt.Sprintf("%s is not lego v5 (%v: %s): run .ci/install-lego5.sh", bin, err, strings.TrimSpace(string(out)))
	}
	// A build with -tags lego_dnslight alone has no DNS provider at all.
	if out, err := exec.Command(bin, "dnshelp").CombinedOutput(); err != nil || !strings.Contains(string(out), "dnsupdate") {
		return legoCLI{}, fmt.Sprintf("%s has no dnsupdate DNS provider (built with -tags lego_dnslight without lego_dns_dnsupdate?): run .ci/install-lego5.sh", bin)
	}
	return legoCLI{major: 5, bin: bin}, ""
}

// acmeBed is a rollover bed plus the CA side: a non-caching Unbound for
// Pebble's validation authority and one for lego.
type acmeBed struct {
	*roBed
	caResolver   *testbed.Unbound // Pebble's -dnsserver
	legoResolver *testbed.Unbound // lego's --dns.resolvers
}

// newACMEBed starts the bed for zone with the host labels the subtests use.
func newACMEBed(t *testing.T, zone string, labels ...string) *acmeBed {
	t.Helper()
	roRequire(t)
	testbed.RequirePebble(t)
	b := newRoBed(t, zone, labels...)
	b.bin = buildTlsactl(t)
	ds, err := b.knot.DS(b.ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	// The CA's resolver does not cache (a validation must see the current
	// TXT); lego's caches for at most a second.
	stubs := []testbed.StubZone{{Name: zone, Addr: b.knot.Addr, TrustAnchor: ds}}
	cu := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: stubs, NoCache: true})
	lu := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: stubs})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("knotd log:\n%s", roTail(b.knot.Log(), 3000))
			t.Logf("CA-side unbound log:\n%s", roTail(cu.Log(), 3000))
		}
	})
	return &acmeBed{roBed: b, caResolver: cu, legoResolver: lu}
}

// newPebble starts a Pebble (a new CA) that validates through the
// non-caching Unbound. Authorizations are never reused, so every order
// solves a real DNS-01 challenge.
func (a *acmeBed) newPebble(t *testing.T) *testbed.Pebble {
	t.Helper()
	pb := testbed.NewPebble(t, testbed.PebbleConfig{DNSServer: a.caResolver.Addr, Env: []string{"PEBBLE_AUTHZREUSE=0"}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log (%s):\n%s", pb.DirectoryURL, roTail(pb.Log(), 4000))
		}
	})
	return pb
}

// legoRunner runs one lego CLI with its storage (--path) in dir.
type legoRunner struct {
	a   *acmeBed
	cli legoCLI
	dir string
	env []string // added to lego's environment (lego passes it to hooks)
	// stdin is lego's input (lego migrate asks to continue).
	stdin string
}

func (a *acmeBed) newLego(t *testing.T, l legoCLI) *legoRunner {
	return &legoRunner{a: a, cli: l, dir: t.TempDir()}
}

// obtain is the first order for domain: `lego … run` (v4) or `lego run …`
// (v5), with hook as --run-hook (v4) or --deploy-hook (v5) when set.
func (r *legoRunner) obtain(t *testing.T, pb *testbed.Pebble, domain, hook string) (string, int) {
	t.Helper()
	var cmd []string
	if hook != "" {
		cmd = []string{r.hookFlag(false), hook}
	}
	return r.exec(t, pb, domain, "", false, cmd...)
}

// renew renews domain's certificate whatever its expiry: v4 `lego … renew
// --days 100` (--renew-hook), v5 `lego run … --renew-days 100`
// (--deploy-hook); Pebble's certificates are valid for less than 100 days.
// A csr renews from that CSR (lego --csr; domain is then empty); extra adds
// flags of the renew command (e.g. --reuse-key).
func (r *legoRunner) renew(t *testing.T, pb *testbed.Pebble, domain, csr, hook string, extra ...string) (string, int) {
	t.Helper()
	var cmd []string
	if r.cli.major == 4 {
		cmd = append(cmd, "--days", "100")
	} else {
		cmd = append(cmd, "--renew-days", "100")
	}
	cmd = append(cmd, "--no-random-sleep")
	cmd = append(cmd, extra...)
	if hook != "" {
		cmd = append(cmd, r.hookFlag(true), hook)
	}
	return r.exec(t, pb, domain, csr, true, cmd...)
}

// switchCA is what a renewal from another CA needs: nothing for lego v4;
// lego v5 sends the stored certificate's ARI CertID as the order's
// "replaces" (RFC 9773) whatever the CA, and a CA that did not issue it
// refuses the order (Pebble: "malformed :: parsing ARI CertID failed: no
// known issuer matches the provided Authority Key Identifier"), so it runs
// with --ari-disable.
func (r *legoRunner) switchCA() []string {
	if r.cli.major == 5 {
		return []string{"--ari-disable"}
	}
	return nil
}

func (r *legoRunner) hookFlag(renew bool) string {
	switch {
	case r.cli.major == 5:
		return "--deploy-hook"
	case renew:
		return "--renew-hook"
	}
	return "--run-hook"
}

// mustObtain and mustRenew want exit 0.
func (r *legoRunner) mustObtain(t *testing.T, pb *testbed.Pebble, domain, hook string) string {
	t.Helper()
	out, code := r.obtain(t, pb, domain, hook)
	if code != 0 {
		t.Fatalf("lego v%d: the first order: exit %d", r.cli.major, code)
	}
	return out
}

func (r *legoRunner) mustRenew(t *testing.T, pb *testbed.Pebble, domain, csr, hook string, extra ...string) string {
	t.Helper()
	out, code := r.renew(t, pb, domain, csr, hook, extra...)
	if code != 0 {
		t.Fatalf("lego v%d: the renewal: exit %d", r.cli.major, code)
	}
	return out
}

// registerAt creates lego's account at pb before a renewal from it: lego
// 4.9.1's renew needs one and does not register (an order for a name of its
// own, without hooks). lego v5's run registers by itself.
func (r *legoRunner) registerAt(t *testing.T, pb *testbed.Pebble) {
	t.Helper()
	if r.cli.major == 4 {
		r.mustObtain(t, pb, "acct."+strings.TrimSuffix(r.a.zone, "."), "")
	}
}

// exec runs lego against pb for domain with DNS-01 via RFC 2136 into Knot:
// the first order (v4 `run`) or a renewal (v4 `renew`), with cmdFlags after
// the command (v5: `run` either way). An empty domain leaves --domains out
// (lego --csr takes the names from the CSR). It returns lego's output and
// exit code.
func (r *legoRunner) exec(t *testing.T, pb *testbed.Pebble, domain, csr string, renewal bool, cmdFlags ...string) (string, int) {
	t.Helper()
	a := r.a
	common := []string{"--server", pb.DirectoryURL, "--accept-tos", "--email", acmeEmail}
	if domain != "" {
		common = append(common, "--domains", domain)
	}
	if csr != "" {
		common = append(common, "--csr", csr)
	}
	common = append(common, "--dns.resolvers", a.legoResolver.Addr, "--path", r.dir)
	env := []string{"LEGO_CA_CERTIFICATES=" + pb.CAFile}
	var args []string
	switch r.cli.major {
	case 4:
		common = append(common, "--dns", "rfc2136", "--dns.disable-cp")
		args = append(common, "run")
		if renewal {
			args = append(common, "renew")
		}
		args = append(args, cmdFlags...)
		env = append(env, "RFC2136_NAMESERVER="+a.knot.Addr,
			"RFC2136_TSIG_KEY="+a.knot.Key.Name,
			"RFC2136_TSIG_SECRET="+a.knot.Key.Secret,
			"RFC2136_TSIG_ALGORITHM="+a.knot.Key.Algorithm,
			"RFC2136_TTL=5", "RFC2136_PROPAGATION_TIMEOUT=60", "RFC2136_POLLING_INTERVAL=1")
	default:
		common = append(common, "--dns", "dnsupdate", "--dns.propagation.disable-ans")
		args = append(append([]string{"run"}, common...), cmdFlags...)
		env = append(env, "DNSUPDATE_NAMESERVER="+a.knot.Addr,
			"DNSUPDATE_TSIG_KEY="+a.knot.Key.Name,
			"DNSUPDATE_TSIG_SECRET="+a.knot.Key.Secret,
			"DNSUPDATE_TSIG_ALGORITHM="+a.knot.Key.Algorithm,
			"DNSUPDATE_TTL=5", "DNSUPDATE_PROPAGATION_TIMEOUT=60", "DNSUPDATE_POLLING_INTERVAL=1",
			"LEGO_LOG_FORMAT=text")
	}
	return r.run(t, append(env, r.env...), args...)
}

// run runs lego with args in its directory and returns its output and
// exit code.
func (r *legoRunner) run(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(r.a.ctx, 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.cli.bin, args...)
	cmd.Dir = r.dir // lego would create .lego/ in the working directory otherwise
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if r.stdin != "" {
		cmd.Stdin = strings.NewReader(r.stdin)
	}
	start := time.Now()
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("lego v%d %s: %v", r.cli.major, strings.Join(args, " "), err)
	}
	text := out.String()
	if strings.Contains(text, r.a.knot.Key.Secret) {
		t.Errorf("lego v%d %s printed the TSIG secret", r.cli.major, args[0])
	}
	t.Logf("lego v%d %s → exit %d in %s\n%s", r.cli.major, strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond), roTail(text, 4000))
	return text, code
}

// acmeCert is what lego stored for a domain.
type acmeCert struct {
	chainPath, keyPath, issuerPath string
	leaf, issuer                   *x509.Certificate
}

// loadACMECert loads what lego stored for domain under dir.
func loadACMECert(t *testing.T, dir, domain string) acmeCert {
	t.Helper()
	base := filepath.Join(dir, "certificates", domain)
	return loadPEMCert(t, base+".crt", base+".key", base+".issuer.crt")
}

// loadPEMCert reads a full chain (leaf + issuer) and names its key and
// issuer files.
func loadPEMCert(t *testing.T, chainPath, keyPath, issuerPath string) acmeCert {
	t.Helper()
	c := acmeCert{chainPath: chainPath, keyPath: keyPath, issuerPath: issuerPath}
	b, err := os.ReadFile(chainPath)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
		x, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, x)
	}
	if len(certs) != 2 {
		t.Fatalf("%s: %d certificates, want leaf + issuer", chainPath, len(certs))
	}
	c.leaf, c.issuer = certs[0], certs[1]
	if err := c.leaf.CheckSignatureFrom(c.issuer); err != nil {
		t.Fatalf("%s: the leaf is not signed by the bundled issuer: %v", chainPath, err)
	}
	return c
}

// snapshot copies lego's files for domain, so that a later lego command
// cannot change what a rollover has been given.
func (c acmeCert) snapshot(t *testing.T) acmeCert {
	t.Helper()
	dir := t.TempDir()
	out := c
	for _, p := range []*string{&out.chainPath, &out.keyPath, &out.issuerPath} {
		b, err := os.ReadFile(*p)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, filepath.Base(*p))
		roWrite(t, dst, b, 0o600)
		*p = dst
	}
	return out
}

func certRec(c *x509.Certificate, u tlsa.Usage) string {
	r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: c, SPKI: c.RawSubjectPublicKeyInfo}, u, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	if err != nil {
		panic(err)
	}
	return r.String()
}

// acmePair is {3 1 1 leaf, 2 1 1 issuer} of an ACME certificate.
func acmePair(c acmeCert) []string {
	return roSorted(certRec(c.leaf, tlsa.DANEEE), certRec(c.issuer, tlsa.DANETA))
}

// assertIssuedBy checks the certificate comes from pb's intermediate.
func assertIssuedBy(t *testing.T, ctx context.Context, c acmeCert, pb *testbed.Pebble) {
	t.Helper()
	_, inter, err := pb.Intermediate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !c.issuer.Equal(inter) {
		t.Fatalf("the certificate's issuer %q is not Pebble's intermediate %q (%s)", c.issuer.Subject, inter.Subject, pb.DirectoryURL)
	}
}

func (h *roHost) servesACME(ctx context.Context, c acmeCert) (bool, error) {
	chain, err := h.served(ctx)
	if err != nil {
		return false, err
	}
	return len(chain) == 2 && chain[0].Equal(c.leaf) && chain[1].Equal(c.issuer), nil
}

func (h *roHost) assertServesACME(what string, c acmeCert) {
	h.t.Helper()
	ok, err := h.servesACME(h.b.ctx, c)
	if err != nil || !ok {
		h.t.Fatalf("%s: Postfix does not serve the ACME certificate (%v)", what, err)
	}
}

// assertNotServing: Postfix does not serve c (yet).
func (h *roHost) assertNotServing(what string, c acmeCert) {
	h.t.Helper()
	ok, err := h.servesACME(h.b.ctx, c)
	if err != nil {
		h.t.Fatalf("%s: probe: %v", what, err)
	}
	if ok {
		h.t.Fatalf("%s: Postfix already serves the certificate of %q", what, c.issuer.Subject)
	}
}

// assertDeployedAfter: every deploy of st happened at or after notBefore.
// deployHeldBack checks that the certificate c an ACME client just handed
// over is held in an active ca-migration, lets `rollover run --wait`
// deploy it after the TTL, and checks the rollover finished no earlier, with
// Knot holding c's 2 1 1 + 3 1 1 and the host serving c.
func (h *roHost) deployHeldBack(what string, c acmeCert) {
	h.t.Helper()
	st := h.status()
	if st.Plan != rollover.PlanCAMigration || st.Status != rollover.StatusActive {
		h.t.Fatalf("after the held-back %s: %s rollover, %s", what, st.Plan, st.Status)
	}
	h.mustTL("run", "--wait", "--timeout", "2m")
	st = h.status()
	h.assertDone(st)
	assertDeployedAfter(h.t, st, st.NotBefore)
	h.assertKnot("after the "+what, acmePair(c))
	h.assertServesACME("after the "+what, c)
}

func assertDeployedAfter(t *testing.T, st roStatus, notBefore time.Time) {
	t.Helper()
	deployed := false
	for _, e := range st.History {
		if e.What == "deploying" || e.Step == rollover.StepDeploy {
			deployed = true
			if e.At.Before(notBefore) {
				t.Errorf("deploy event %+v before the new 2 1 1 had aged (%s)", e, notBefore)
			}
		}
	}
	if !deployed {
		t.Errorf("no deploy in the history: %+v", st.History)
	}
}

// TestACMELegoRolloverE2E: real lego certificates from Pebble go through
// `tlsactl rollover` by hand (no hook), with each lego version: the first
// issue from a new CA as a ca-migration, a renewal with a new key (no
// --reuse-key) as a renew, and a renewal from a second Pebble (a different
// CA) as a ca-migration again.
func TestACMELegoRolloverE2E(t *testing.T) {
	t.Parallel()
	a := newACMEBed(t, "acme.test", "mx4", "mx5")
	for _, major := range legoMajors {
		t.Run(fmt.Sprintf("v%d", major), func(t *testing.T) {
			t.Parallel()
			lego := a.newLego(t, requireLego(t, major))
			h := a.newRoHost(t, fmt.Sprintf("mx%d", major), 3)
			p1 := a.newPebble(t)

			// Issue from Pebble 1: a new CA for this host.
			lego.mustObtain(t, p1, h.name, "")
			c1 := loadACMECert(t, lego.dir, h.name).snapshot(t)
			assertIssuedBy(t, a.ctx, c1, p1)
			h.mustTL("start", "--plan", "ca-migration", "--new-ca", c1.issuerPath, "--new-cert", c1.chainPath, "--new-key", c1.keyPath)
			h.mustTL("run", "--wait", "--timeout", "2m")
			h.assertDone(h.status())
			h.assertKnot("after the first issue", acmePair(c1))
			h.assertServesACME("after the first issue", c1)

			// Renew from Pebble 1 without --reuse-key: same CA, new key.
			lego.mustRenew(t, p1, h.name, "", "")
			c2 := loadACMECert(t, lego.dir, h.name).snapshot(t)
			if certRec(c2.leaf, tlsa.DANEEE) == certRec(c1.leaf, tlsa.DANEEE) {
				t.Fatal("a renewal without --reuse-key kept the key")
			}
			if !c2.issuer.Equal(c1.issuer) {
				t.Fatal("the renewal came from another intermediate")
			}
			h.mustTL("start", "--plan", "renew", "--new-cert", c2.chainPath, "--new-key", c2.keyPath)
			r := h.mustTL("run", "--wait", "--timeout", "2m")
			h.assertDone(h.status())
			h.assertKnot("after the renewal", roSorted(certRec(c2.leaf, tlsa.DANEEE), certRec(c1.issuer, tlsa.DANETA)))
			h.assertServesACME("after the renewal", c2)
			if r.took > 20*time.Second {
				t.Errorf("the renew run took %s", r.took)
			}

			// Renew from Pebble 2: a different CA.
			p2 := a.newPebble(t)
			lego.registerAt(t, p2)
			lego.mustRenew(t, p2, h.name, "", "", lego.switchCA()...)
			c3 := loadACMECert(t, lego.dir, h.name).snapshot(t)
			assertIssuedBy(t, a.ctx, c3, p2)
			if c3.issuer.Equal(c1.issuer) {
				t.Fatal("the second Pebble issued from the first one's intermediate")
			}
			h.mustTL("start", "--plan", "ca-migration", "--new-ca", c3.issuerPath, "--new-cert", c3.chainPath, "--new-key", c3.keyPath)
			h.mustTL("run")
			st := h.status()
			if st.Status != rollover.StatusActive || st.NotBefore.IsZero() {
				t.Fatalf("after the first run of the migration: %s, step %s, not before %v", st.Status, st.CurrentStep, st.NotBefore)
			}
			h.assertNotServing("while the new 2 1 1 ages", c3)
			h.mustTL("run", "--wait", "--timeout", "2m")
			st = h.status()
			h.assertDone(st)
			assertDeployedAfter(t, st, st.NotBefore)
			h.assertKnot("after the migration to Pebble 2", acmePair(c3))
			h.assertServesACME("after the migration to Pebble 2", c3)
		})
	}
}

// runTlsactl runs the built binary with args (no --host appended).
func (h *roHost) runTlsactl(args ...string) roResult {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.b.ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.b.bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := roResult{out: o.String(), errOut: e.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatal(err)
	}
	h.t.Logf("tlsactl %s → exit %d\n%s%s", strings.Join(args, " "), r.code, r.out, r.errOut)
	return r
}

// repoRoot is the module root (two levels above cmd/tlsactl).
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// TestACMELegoHookE2E: lego's hooks (v4 --run-hook / --renew-hook, v5
// --deploy-hook) call `tlsactl hook lego`, which hands every certificate to
// the rollover engine, with each lego version:
//
//	(a) the first issue (Pebble 1, a new CA for the host): the hook publishes
//	    the CA's 2 1 1, holds the certificate back (exit ≠ 0, lego fails) and
//	    `rollover run --wait` deploys it after the TTL;
//	(b) a renewal without --reuse-key (same CA, new key), through the
//	    examples/hooks/lego-hook.sh wrapper: deployed at once, 3 1 1 replaced;
//	(c) a renewal from Pebble 2 (a different CA): held back until the new
//	    2 1 1 has aged, then `rollover run --wait` deploys;
//	(d) v4: certbot's deploy-hook contract (RENEWED_LINEAGE, RENEWED_DOMAINS)
//	    through examples/hooks/certbot-deploy-hook.sh with a lineage built
//	    from a real Pebble 2 renewal; v5: a renewal with --reuse-key through
//	    the hook: the 3 1 1 stays, deployed at once;
//	(e) the next-key flow: `tlsactl key next` publishes the next key's
//	    3 1 1, lego renews from its CSR (--csr, a fresh key lego never sees)
//	    and the hook deploys it and retires the old 3 1 1;
//	(f) v4 only: `lego5 migrate` converts the store lego 4.9.1 wrote, and
//	    lego v5 renews from it with the hook (a renew, deployed at once).
//
// The background probe and posttls-finger must never fail.
func TestACMELegoHookE2E(t *testing.T) {
	t.Parallel()
	a := newACMEBed(t, "hook.test", "mx4", "mx5")
	root := repoRoot(t)
	for _, major := range legoMajors {
		t.Run(fmt.Sprintf("v%d", major), func(t *testing.T) {
			t.Parallel()
			lego := a.newLego(t, requireLego(t, major))
			h := a.newRoHost(t, fmt.Sprintf("mx%d", major), 3)
			p1 := a.newPebble(t)
			hook := a.bin + " hook lego --config " + h.cfgPath
			// For the wrapper scripts: which tlsactl and which configuration.
			hookEnv := []string{"TLSACTL=" + a.bin, "TLSACTL_CONFIG=" + h.cfgPath}
			lego.env = hookEnv

			// (a) First issue: new CA → held back.
			out, code := lego.obtain(t, p1, h.name, hook)
			if code == 0 || !strings.Contains(out, "held back") {
				t.Fatalf("the first order: exit %d: the hook did not hold back a certificate of a CA whose 2 1 1 was not published", code)
			}
			c1 := loadACMECert(t, lego.dir, h.name).snapshot(t)
			assertIssuedBy(t, a.ctx, c1, p1)
			h.assertNotServing("after the held-back issue", c1)
			h.deployHeldBack("issue (a)", c1)

			// (b) Renew, same CA, new key, through the wrapper script.
			wrapper := filepath.Join(root, "examples", "hooks", "lego-hook.sh")
			start := time.Now()
			lego.mustRenew(t, p1, h.name, "", wrapper)
			c2 := loadACMECert(t, lego.dir, h.name)
			if certRec(c2.leaf, tlsa.DANEEE) == certRec(c1.leaf, tlsa.DANEEE) {
				t.Fatal("a renewal without --reuse-key kept the key")
			}
			h.assertServesACME("after (b)", c2)
			h.assertKnot("after (b)", roSorted(certRec(c2.leaf, tlsa.DANEEE), certRec(c1.issuer, tlsa.DANETA)))
			st := h.status()
			if st.Plan != rollover.PlanRenew {
				t.Errorf("(b) ran a %s rollover, want renew", st.Plan)
			}
			h.assertDone(st)
			t.Logf("(b) renew + hook took %s", time.Since(start).Round(time.Millisecond))

			// (c) Renew from another CA: held back until its 2 1 1 has aged.
			p2 := a.newPebble(t)
			lego.registerAt(t, p2)
			out, code = lego.renew(t, p2, h.name, "", hook, lego.switchCA()...)
			if code == 0 || !strings.Contains(out, "held back") {
				t.Fatal("a renewal from a new CA: the hook did not hold the certificate back")
			}
			c3 := loadACMECert(t, lego.dir, h.name).snapshot(t)
			assertIssuedBy(t, a.ctx, c3, p2)
			h.assertNotServing("after the held-back renewal", c3)
			h.assertServesACME("after the held-back renewal", c2)
			h.deployHeldBack("renewal (c)", c3)

			// (d) v4: certbot's contract, a lineage directory with certbot's
			// file names; v5: --reuse-key through the hook.
			var c4 acmeCert
			if major == 4 {
				lego.mustRenew(t, p2, h.name, "", "")
				c4 = loadACMECert(t, lego.dir, h.name)
				lineage := filepath.Join(t.TempDir(), "live", h.name)
				if err := os.MkdirAll(lineage, 0o700); err != nil {
					t.Fatal(err)
				}
				chainPEM, _ := os.ReadFile(c4.chainPath)
				keyPEM, _ := os.ReadFile(c4.keyPath)
				issuerPEM, _ := os.ReadFile(c4.issuerPath)
				leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c4.leaf.Raw})
				roWrite(t, filepath.Join(lineage, "fullchain.pem"), chainPEM, 0o644)
				roWrite(t, filepath.Join(lineage, "privkey.pem"), keyPEM, 0o600)
				roWrite(t, filepath.Join(lineage, "cert.pem"), leafPEM, 0o644)
				roWrite(t, filepath.Join(lineage, "chain.pem"), issuerPEM, 0o644)
				cmd := exec.Command(filepath.Join(root, "examples", "hooks", "certbot-deploy-hook.sh"))
				cmd.Env = append(append(os.Environ(), hookEnv...), "RENEWED_LINEAGE="+lineage, "RENEWED_DOMAINS="+h.name)
				b, err := cmd.CombinedOutput()
				t.Logf("certbot deploy hook: %v\n%s", err, b)
				if err != nil {
					t.Fatalf("certbot deploy hook: %v", err)
				}
				h.finger("after the certbot hook")
			} else {
				lego.mustRenew(t, p2, h.name, "", hook, "--reuse-key")
				c4 = loadACMECert(t, lego.dir, h.name)
				if c4.leaf.Equal(c3.leaf) || certRec(c4.leaf, tlsa.DANEEE) != certRec(c3.leaf, tlsa.DANEEE) {
					t.Fatal("lego run --reuse-key: not a new certificate on the same key")
				}
				if st := h.status(); st.Plan != rollover.PlanDeploy && st.Plan != rollover.PlanRenew {
					t.Errorf("(d) ran a %s rollover, want deploy or renew", st.Plan)
				}
			}
			h.assertServesACME("after (d)", c4)
			h.assertKnot("after (d)", roSorted(certRec(c4.leaf, tlsa.DANEEE), certRec(c3.issuer, tlsa.DANETA)))

			// (e) Next key: publish its 3 1 1 ahead, renew from its CSR.
			kn := h.runTlsactl("key", "next", "--config", h.cfgPath, "--host", h.name)
			if kn.code != 0 {
				t.Fatalf("key next: exit %d\n%s%s", kn.code, kn.out, kn.errOut)
			}
			nextRec := nextKeyRecord(t, h)
			h.waitKnot(roSorted(certRec(c4.leaf, tlsa.DANEEE), certRec(c3.issuer, tlsa.DANETA), nextRec))
			csr := filepath.Join(h.stateDir, "keys", h.name, "next.csr")
			// The certificate may arrive before the next key's 3 1 1 has aged a
			// TTL (then the hook holds it back, exit 75) or after (deployed at
			// once); either way `rollover run --wait` completes the
			// key-prepublish.
			out, code = lego.renew(t, p2, "", csr, hook)
			switch {
			case code == 0:
			case code != 0 && strings.Contains(out, "held back"):
				h.mustTL("run", "--wait", "--timeout", "2m")
			default:
				t.Fatalf("the renewal from the CSR: exit %d", code)
			}
			c5 := loadACMECert(t, lego.dir, h.name)
			if certRec(c5.leaf, tlsa.DANEEE) != nextRec {
				t.Fatal("the certificate from the CSR is not on the next key")
			}
			h.assertServesACME("after (e)", c5)
			h.assertKnot("after (e)", roSorted(nextRec, certRec(c3.issuer, tlsa.DANETA)))
			h.assertDone(h.status())

			if major == 4 {
				legoMigrateV4(t, h, lego, p2, hook, c3)
			}
		})
	}
}

// legoMigrateV4 is (f) of TestACMELegoHookE2E: lego v5 takes over the
// store lego 4.9.1 wrote (accounts at two Pebbles, the certificate) after
// `lego migrate`, and renews from it with the hook. Without lego v5 it is
// left out (a failure under CI=true).
func legoMigrateV4(t *testing.T, h *roHost, v4 *legoRunner, pb *testbed.Pebble, hook string, c3 acmeCert) {
	t.Helper()
	l5, msg := findLego5()
	if msg != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("(f) needs lego v5: %s (CI=true)", msg)
		}
		t.Logf("(f) left out: %s", msg)
		return
	}
	v5 := &legoRunner{a: v4.a, cli: l5, dir: v4.dir, env: v4.env}
	accounts := filepath.Join(v4.dir, "accounts", strings.ReplaceAll(pb.Addr, ":", "_"), acmeEmail)
	if _, err := os.Stat(filepath.Join(accounts, "keys", acmeEmail+".key")); err != nil {
		t.Fatalf("lego 4.9.1's account layout: %v", err)
	}
	// lego migrate asks "Continue? Y/n" on stdin.
	v5.stdin = "y\n"
	out, code := v5.run(t, []string{"LEGO_LOG_FORMAT=text"}, "migrate", "--path", v4.dir)
	v5.stdin = ""
	if code != 0 {
		t.Fatalf("lego migrate: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(accounts, acmeEmail+".key")); err != nil {
		t.Errorf("lego migrate did not move the account key: %v\n%s", err, out)
	}
	res, err := os.ReadFile(filepath.Join(v4.dir, "certificates", h.name+".json"))
	if err != nil || !strings.Contains(string(res), `"origin"`) {
		t.Errorf("lego migrate did not rewrite the certificate resource: %v\n%s", err, res)
	}
	before := loadACMECert(t, v4.dir, h.name)
	v5.mustRenew(t, pb, h.name, "", hook)
	c6 := loadACMECert(t, v4.dir, h.name)
	if c6.leaf.Equal(before.leaf) {
		t.Fatal("(f) lego v5 did not renew the migrated certificate")
	}
	h.assertServesACME("after (f)", c6)
	h.assertKnot("after (f)", roSorted(certRec(c6.leaf, tlsa.DANEEE), certRec(c3.issuer, tlsa.DANETA)))
	if st := h.status(); st.Plan != rollover.PlanRenew {
		t.Errorf("(f) ran a %s rollover, want renew", st.Plan)
	}
	h.assertDone(h.status())
}

// TestLegoV5CommandLines: every `lego run …` line of README.md and of
// `tlsactl hook lego --help` is accepted by the real lego v5: its flags
// parse, and lego goes on to fetch the ACME directory (here an HTTPS server
// on loopback that answers 404, so it stops there at once). What the lines
// do against a CA is TestACMELegoHookE2E's v5 run, with the same flags.
func TestLegoV5CommandLines(t *testing.T) {
	lego := requireLego(t, 5)
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	roWrite(t, caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	csrPath := filepath.Join(dir, "next.csr")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"mail.example.nl"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	roWrite(t, csrPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}), 0o600)

	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	help, _, code := runCLI(t, "", "hook", "lego", "--help")
	if code != 0 {
		t.Fatalf("hook lego --help: exit %d", code)
	}
	lines := append(legoRunLines(string(readme)), legoRunLines(help)...)
	if len(lines) < 6 {
		t.Fatalf("%d `lego run` lines in README.md and the help, want at least 6: %q", len(lines), lines)
	}
	dirURL := srv.URL + "/dir"
	for _, line := range lines {
		t.Run(line, func(t *testing.T) {
			// One argument per blank-separated word, a quoted hook command
			// as one; the example paths and names made local.
			line := strings.NewReplacer(`"$H/lego-hook.sh"`, "HOOK", `'tlsactl hook lego'`, "HOOK",
				"/etc/lego", t.TempDir(), "/var/lib/tlsactl/keys/mail.example.nl/next.csr", csrPath,
				"/var/lib/tlsactl/keys/mx.example.nl/next.csr", csrPath).Replace(line)
			args := strings.Fields(line)[1:]
			server := false
			for i := range args {
				switch {
				case args[i] == "HOOK":
					args[i] = "tlsactl hook lego"
				case args[i] == "--server" && i+1 < len(args):
					args[i+1], server = dirURL, true
				case strings.ContainsAny(args[i], `'"$…`):
					t.Fatalf("%q: cannot run the word %q", line, args[i])
				}
			}
			if !server {
				args = append(args, "--server", dirURL)
			}
			cmd := exec.Command(lego.bin, args...)
			cmd.Dir = t.TempDir()
			cmd.Env = append(os.Environ(), "LEGO_CA_CERTIFICATES="+caFile, "LEGO_LOG_FORMAT=text", "DNSUPDATE_NAMESERVER=127.0.0.1:9")
			out, _ := cmd.CombinedOutput()
			text := string(out)
			if strings.Contains(text, "flag provided but not defined") || strings.Contains(text, "Incorrect Usage") ||
				!strings.Contains(text, "get directory at '"+dirURL+"'") {
				t.Errorf("lego v5 %s:\n%s", strings.Join(args, " "), text)
			}
		})
	}
}

// legoRunLines returns the `lego run …` command lines of text, each joined
// with its backslash continuations and without a trailing # comment.
func legoRunLines(text string) []string {
	var out []string
	ls := strings.Split(text, "\n")
	for i := 0; i < len(ls); i++ {
		l := strings.TrimSpace(ls[i])
		if !strings.HasPrefix(l, "lego run ") {
			continue
		}
		for strings.HasSuffix(strings.TrimSpace(strings.SplitN(l, " # ", 2)[0]), `\`) && i+1 < len(ls) {
			l = strings.TrimSuffix(strings.TrimSpace(strings.SplitN(l, " # ", 2)[0]), `\`) + " " + strings.TrimSpace(ls[i+1])
			i++
		}
		l, _, _ = strings.Cut(l, " # ")
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return out
}
