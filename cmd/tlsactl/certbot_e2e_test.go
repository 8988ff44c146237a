package main

// End-to-end test of DANE-safe renewals with Debian's real certbot (2.1)
// against Pebble: DNS-01 solved by certbot's --manual plugin with
// examples/hooks/certbot-rfc2136-hook.sh (nsupdate with the TSIG key into the
// signed Knot zone; Pebble validates through a non-caching Unbound), the
// certificate handed to `tlsactl hook certbot` by certbot's --deploy-hook, and
// the rollover bed of rollover_e2e_test.go (caching validating Unbound,
// Postfix serving the deploy files, a probe every 250 ms and posttls-finger at
// every step change, none of which may ever fail).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

// certbotBed is a rollover bed with one Pebble, validating through its own
// non-caching Unbound, and certbot's directories.
type certbotBed struct {
	*roBed
	pb      *testbed.Pebble
	certbot string
	dir     string // certbot's --config-dir, --work-dir, --logs-dir below it
	root    string // the module root (examples/hooks)
	env     []string
}

func newCertbotBed(t *testing.T, zone string) *certbotBed {
	t.Helper()
	roRequire(t)
	testbed.RequirePebble(t)
	certbot := testbed.Require(t, "certbot", "certbot")
	testbed.Require(t, "nsupdate", "bind9-dnsutils")
	testbed.Require(t, "dig", "bind9-dnsutils")
	b := newRoBed(t, zone, "mx")
	b.bin = buildTlsactl(t)
	ds, err := b.knot.DS(b.ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	// The CA's resolver does not cache: a validation must see the current TXT.
	cu := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: []testbed.StubZone{{Name: zone, Addr: b.knot.Addr, TrustAnchor: ds}}, NoCache: true})
	// Every order solves a new challenge (no authorization reuse); no
	// nonce is rejected at random (the real CA does not; certbot retries a
	// bad nonce once, which would make the test fail now and then).
	pb := testbed.NewPebble(t, testbed.PebbleConfig{DNSServer: cu.Addr, Env: []string{"PEBBLE_AUTHZREUSE=0", "PEBBLE_WFE_NONCEREJECT=0"}})
	cb := &certbotBed{roBed: b, pb: pb, certbot: certbot, dir: t.TempDir(), root: repoRoot(t)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("knotd log:\n%s", roTail(b.knot.Log(), 3000))
			t.Logf("CA-side unbound log:\n%s", roTail(cu.Log(), 3000))
			t.Logf("pebble log (%s):\n%s", pb.DirectoryURL, roTail(pb.Log(), 4000))
			if l, err := os.ReadFile(filepath.Join(cb.dir, "logs", "letsencrypt.log")); err == nil {
				t.Logf("certbot log:\n%s", roTail(string(l), 6000))
			}
			// Every hook line of every certbot run (certbot keeps a log per
			// run: letsencrypt.log, .1, .2, …) and every update Knot took.
			logs, _ := filepath.Glob(filepath.Join(cb.dir, "logs", "letsencrypt.log*"))
			var hooks []string
			for _, f := range logs {
				l, _ := os.ReadFile(f)
				for _, line := range strings.Split(string(l), "\n") {
					if strings.Contains(strings.ToLower(line), "hook") || strings.Contains(line, "Performing the following challenges") || strings.Contains(line, "Cleaning up") {
						hooks = append(hooks, filepath.Base(f)+": "+line)
					}
				}
			}
			t.Logf("certbot hook lines:\n  %s", strings.Join(hooks, "\n  "))
			var ddns []string
			for _, line := range strings.Split(b.knot.Log(), "\n") {
				if strings.Contains(line, "DDNS") {
					ddns = append(ddns, line)
				}
			}
			t.Logf("knotd updates:\n  %s", strings.Join(ddns, "\n  "))
		}
	})
	host, port, _ := strings.Cut(b.knot.Addr, ":")
	cb.env = []string{
		"REQUESTS_CA_BUNDLE=" + pb.CAFile, // certbot's HTTPS to Pebble (python-requests)
		"RFC2136_SERVER=" + host, "RFC2136_PORT=" + port, "RFC2136_KEY_FILE=" + b.keyFile,
		"RFC2136_ZONE=" + zone, "RFC2136_TTL=5", "RFC2136_WAIT=30",
	}
	return cb
}

// hookScript is the path of a script in examples/hooks.
func (cb *certbotBed) hookScript(name string) string {
	return filepath.Join(cb.root, "examples", "hooks", name)
}

// dirFlags keep certbot out of /etc/letsencrypt, /var/lib/letsencrypt and
// /var/log/letsencrypt.
func (cb *certbotBed) dirFlags() []string {
	return []string{"--config-dir", filepath.Join(cb.dir, "config"), "--work-dir", filepath.Join(cb.dir, "work"), "--logs-dir", filepath.Join(cb.dir, "logs")}
}

// certonlyFlags are what `certbot certonly` needs here besides the names:
// Pebble, an account without questions, DNS-01 through the RFC 2136 hook.
func (cb *certbotBed) certonlyFlags() []string {
	hook := cb.hookScript("certbot-rfc2136-hook.sh")
	return append(cb.dirFlags(), "--server", cb.pb.DirectoryURL, "--non-interactive", "--agree-tos", "-m", acmeEmail, "--no-eff-email",
		"--manual", "--preferred-challenges", "dns", "--manual-auth-hook", hook+" add", "--manual-cleanup-hook", hook+" delete")
}

// run runs name (certbot or a script) with args and env added to the bed's
// environment; it returns the combined output and exit code.
func (cb *certbotBed) run(t *testing.T, env []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(cb.ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = cb.dir
	cmd.Env = append(append(os.Environ(), cb.env...), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	text := out.String()
	if strings.Contains(text, cb.knot.Key.Secret) {
		t.Errorf("%s %s printed the TSIG secret", filepath.Base(name), args[0])
	}
	t.Logf("%s %s → exit %d in %s\n%s", filepath.Base(name), strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond), roTail(text, 4000))
	return text, code
}

// mustCertbot runs certbot and wants exit 0 (certbot exits 0 whatever its
// deploy hook returns; the callers look at the hook's report).
func (cb *certbotBed) mustCertbot(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, code := cb.run(t, env, cb.certbot, args...)
	if code != 0 {
		t.Fatalf("certbot %s: exit %d", args[0], code)
	}
	return out
}

// lineage reads certbot's live/<name> directory.
func (cb *certbotBed) lineage(t *testing.T, name string) acmeCert {
	t.Helper()
	live := filepath.Join(cb.dir, "config", "live", name)
	return loadPEMCert(t, filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem"), filepath.Join(live, "chain.pem"))
}

// assertRenewalConf checks certbot's renewal/<name>.conf has these lines.
func (cb *certbotBed) assertRenewalConf(t *testing.T, name string, lines ...string) {
	t.Helper()
	p := filepath.Join(cb.dir, "config", "renewal", name+".conf")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	have := strings.Split(string(b), "\n")
	for _, l := range lines {
		if !slices.Contains(have, l) {
			t.Errorf("%s lacks the line %q:\n%s", p, l, b)
		}
	}
}

// hookReport is what certbot printed about its deploy hook: whether it
// reported one at all (certbot prints a hook's output and a non-zero exit
// code; tlsactl's hook always prints a line) and the exit code (0 when none
// was reported).
func hookReport(out string) (ran bool, code int) {
	ran = strings.Contains(out, "Hook 'deploy-hook' ")
	const mark = "Hook 'deploy-hook' reported error code "
	if i := strings.Index(out, mark); i >= 0 {
		f := strings.Fields(out[i+len(mark):])
		if len(f) > 0 {
			code, _ = strconv.Atoi(f[0])
		}
	}
	return ran, code
}

// nextKeyRecord is the 3 1 1 of the next key `tlsactl key next` stored.
func nextKeyRecord(t *testing.T, h *roHost) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.stateDir, "keys", h.name, "next-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("next-key.pem holds no PEM")
	}
	priv, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
	if err != nil {
		t.Fatal(err)
	}
	r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindPublicKey, SPKI: pub}, tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	if err != nil {
		t.Fatal(err)
	}
	return r.String()
}

// TestCertbotHookE2E: Debian's certbot 2.1 obtains and renews from Pebble and
// hands every certificate to tlsactl:
//
//	(a) certbot certonly --deploy-hook 'tlsactl hook certbot': the first
//	    issue from a new CA; the hook publishes its 2 1 1 and holds the
//	    certificate back (certbot reports exit 75 and still exits 0);
//	    `rollover run --wait` deploys it after the TTL;
//	(b) certbot renew --force-renewal (a new key) through
//	    examples/hooks/certbot-deploy-hook.sh: deployed at once, the 3 1 1
//	    replaced;
//	(c) certbot renew --force-renewal --reuse-key: the 3 1 1 stays, the
//	    certificate is deployed at once (a deploy rollover, same-key);
//	(d) the next-key flow: `tlsactl key next` publishes the next key's 3 1 1,
//	    examples/hooks/certbot-csr.sh runs certbot certonly --csr (which runs
//	    no deploy hook: checked) and hands the files to `tlsactl hook
//	    certbot`; the key-prepublish rollover completes.
//
// The background probe and posttls-finger must never fail.
func TestCertbotHookE2E(t *testing.T) {
	t.Parallel()
	cb := newCertbotBed(t, "certbot.test")
	h := cb.newRoHost(t, "mx", 3)
	hook := cb.bin + " hook certbot --config " + h.cfgPath
	tlsactlEnv := []string{"TLSACTL=" + cb.bin, "TLSACTL_CONFIG=" + h.cfgPath}

	// (a) First issue from Pebble, a new CA for the host: held back.
	out := cb.mustCertbot(t, nil, append([]string{"certonly"}, append(cb.certonlyFlags(), "-d", h.name, "--deploy-hook", hook)...)...)
	if ran, code := hookReport(out); !ran || code != exitHookHeld || !strings.Contains(out, "held back") {
		t.Fatalf("certbot certonly: deploy hook ran=%v, exit %d: want the certificate of a CA without a 2 1 1 held back (exit %d)", ran, code, exitHookHeld)
	}
	c1 := cb.lineage(t, h.name)
	_, inter, err := cb.pb.Intermediate(cb.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !c1.issuer.Equal(inter) {
		t.Fatalf("certbot's chain.pem is not Pebble's intermediate")
	}
	h.assertNotServing("after the held-back issue", c1)
	// certbot keeps the hooks for its renewals (Debian's certbot.timer).
	cb.assertRenewalConf(t, h.name, "manual_auth_hook = "+cb.hookScript("certbot-rfc2136-hook.sh")+" add", "renew_hook = "+hook)
	h.deployHeldBack("issue (a)", c1)

	// (b) Renewal with a new key, through the wrapper script.
	start := time.Now()
	out = cb.mustCertbot(t, tlsactlEnv, append([]string{"renew", "--force-renewal", "--no-random-sleep-on-renew", "--deploy-hook", cb.hookScript("certbot-deploy-hook.sh")}, cb.dirFlags()...)...)
	if ran, code := hookReport(out); !ran || code != 0 {
		t.Fatalf("certbot renew: deploy hook ran=%v, exit %d; want deployed (0)", ran, code)
	}
	c2 := cb.lineage(t, h.name)
	if certRec(c2.leaf, tlsa.DANEEE) == certRec(c1.leaf, tlsa.DANEEE) {
		t.Fatal("certbot renew without --reuse-key kept the key")
	}
	h.assertServesACME("after (b)", c2)
	h.assertKnot("after (b)", acmePair(c2))
	st := h.status()
	if st.Plan != rollover.PlanRenew {
		t.Errorf("(b) ran a %s rollover, want renew", st.Plan)
	}
	h.assertDone(st)
	t.Logf("(b) certbot renew + hook took %s", time.Since(start).Round(time.Millisecond))

	// (c) Renewal with the same key: the 3 1 1 stays, deployed at once.
	start = time.Now()
	out = cb.mustCertbot(t, nil, append([]string{"renew", "--force-renewal", "--no-random-sleep-on-renew", "--reuse-key", "--deploy-hook", hook}, cb.dirFlags()...)...)
	if ran, code := hookReport(out); !ran || code != 0 || !strings.Contains(out, "[same-key]") {
		t.Fatalf("certbot renew --reuse-key: deploy hook ran=%v, exit %d; want deployed (0) as same-key", ran, code)
	}
	c3 := cb.lineage(t, h.name)
	if c3.leaf.Equal(c2.leaf) {
		t.Fatal("certbot renew --reuse-key: no new certificate")
	}
	if certRec(c3.leaf, tlsa.DANEEE) != certRec(c2.leaf, tlsa.DANEEE) {
		t.Fatal("certbot renew --reuse-key changed the key")
	}
	h.assertServesACME("after (c)", c3)
	cb.assertRenewalConf(t, h.name, "reuse_key = True") // later renewals keep the key too
	h.assertKnot("after (c): the RRset is unchanged", acmePair(c2))
	st = h.status()
	if st.Plan != rollover.PlanDeploy {
		t.Errorf("(c) ran a %s rollover, want deploy", st.Plan)
	}
	h.assertDone(st)
	t.Logf("(c) certbot renew --reuse-key + hook took %s", time.Since(start).Round(time.Millisecond))

	// (d) Next key: publish its 3 1 1 ahead, obtain from its CSR.
	kn := h.runTlsactl("key", "next", "--config", h.cfgPath, "--host", h.name)
	if kn.code != 0 {
		t.Fatalf("key next: exit %d\n%s%s", kn.code, kn.out, kn.errOut)
	}
	nextRec := nextKeyRecord(t, h)
	h.waitKnot(roSorted(certRec(c3.leaf, tlsa.DANEEE), certRec(c3.issuer, tlsa.DANETA), nextRec))
	marker := filepath.Join(t.TempDir(), "deploy-hook-ran")
	tmp := t.TempDir() // the script's directory for certbot's files
	env := append([]string{"TLSACTL_STATE_DIR=" + h.stateDir, "CERTBOT=" + cb.certbot, "TMPDIR=" + tmp}, tlsactlEnv...)
	args := append([]string{h.name}, cb.certonlyFlags()...)
	// certbot 2.1 runs no deploy hook for --csr; the script hands over.
	args = append(args, "--deploy-hook", "touch "+marker)
	out, code := cb.run(t, env, cb.hookScript("certbot-csr.sh"), args...)
	// The certificate may come before the next key's 3 1 1 has aged a TTL
	// (held back, exit 75) or after (deployed at once); either way
	// `rollover run --wait` completes the key-prepublish.
	switch {
	case code == 0:
	case code == exitHookHeld && strings.Contains(out, "held back"):
		h.mustTL("run", "--wait", "--timeout", "2m")
	default:
		t.Fatalf("certbot-csr.sh: exit %d", code)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("certbot certonly --csr ran the deploy hook: this certbot does, so README's certbot --csr lines can use --deploy-hook")
	}
	if ran, _ := hookReport(out); ran {
		t.Error("certbot certonly --csr reported a deploy hook")
	}
	st = h.status()
	if st.Plan != rollover.PlanKeyPrepublish {
		t.Errorf("(d) ran a %s rollover, want key-prepublish", st.Plan)
	}
	h.assertDone(st)
	chain, err := h.served(cb.ctx)
	if err != nil || len(chain) != 2 || roLeaf(chain) == roLeaf([]*x509.Certificate{c3.leaf}) {
		t.Fatalf("after (d): Postfix serves %s (%v), want the certificate on the next key", roLeaf(chain), err)
	}
	if certRec(chain[0], tlsa.DANEEE) != nextRec || !chain[1].Equal(c3.issuer) {
		t.Fatal("after (d): the served certificate is not on the next key, or not from Pebble's intermediate")
	}
	if !slices.Contains(chain[0].DNSNames, h.name) {
		t.Fatalf("after (d): the served certificate is for %v", chain[0].DNSNames)
	}
	h.assertKnot("after (d)", roSorted(nextRec, certRec(c3.issuer, tlsa.DANETA)))
	left, _ := filepath.Glob(filepath.Join(tmp, "*"))
	if len(left) != 0 {
		t.Errorf("certbot-csr.sh left %v behind", left)
	}
	// The cleanup hook removed every challenge it added.
	m, err := testbed.Query(cb.ctx, cb.knot.Addr, "_acme-challenge."+h.name+".", dns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Answer) != 0 {
		t.Errorf("_acme-challenge.%s TXT left in the zone: %v", h.name, m.Answer)
	}

	// (e) A CNAME'd challenge (delegated, as operators do for names whose
	// zone they cannot update): the hook writes the TXT at the CNAME's
	// target, Pebble follows the CNAME, the cleanup removes it there.
	alias := "alias." + strings.TrimSuffix(cb.zone, ".")
	target := "_acme-challenge.delegated." + cb.zone
	var add []dns.RR
	for _, l := range []string{alias + ". 60 IN A 127.0.0.1", "_acme-challenge." + alias + ". 60 IN CNAME " + target} {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatal(err)
		}
		add = append(add, rr)
	}
	if err := cb.knot.Update(cb.ctx, cb.zone, add, nil); err != nil {
		t.Fatal(err)
	}
	cb.mustCertbot(t, nil, append([]string{"certonly"}, append(cb.certonlyFlags(), "-d", alias)...)...)
	if c := cb.lineage(t, alias); !slices.Contains(c.leaf.DNSNames, alias) {
		t.Errorf("(e) certificate for %v, want %s", c.leaf.DNSNames, alias)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
		want  int
	}{{target, dns.TypeTXT, 0}, {"_acme-challenge." + alias + ".", dns.TypeCNAME, 1}} {
		m, err := testbed.Query(cb.ctx, cb.knot.Addr, q.name, q.qtype)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, rr := range m.Answer {
			if rr.Header().Rrtype == q.qtype {
				n++
			}
		}
		if n != q.want {
			t.Errorf("(e) after the CNAME'd challenge: %d %s at %s, want %d: %v", n, dns.TypeToString[q.qtype], q.name, q.want, m.Answer)
		}
	}
}
