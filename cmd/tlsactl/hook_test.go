package main

// The hook contract of `tlsactl hook lego` and `tlsactl hook certbot`: the
// environment lego and certbot set is set in the test (t.Setenv, so these
// tests do not run in parallel) and run() is called in-process, against the
// real bed of rollover_e2e_test.go (signed Knot, caching Unbound, Postfix,
// background probe every 250 ms and posttls-finger at every step change,
// which must never fail).

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

type hookResult struct {
	out, errOut string
	code        int
}

var hookEnvVars = []string{envLegoDomain, envLegoCert, envLegoKey, envLegoIssuer,
	envLego5Name, envLego5Domains, envLego5Cert, envLego5Key, envLego5Issuer, envCertbotDir, envCertbotNames}

// hook runs `tlsactl hook <client> --config <cfg> args…` in-process with
// exactly the hook variables in env set, then posttls-finger.
func (h *roHost) hook(client string, env map[string]string, args ...string) hookResult {
	h.t.Helper()
	for _, k := range hookEnvVars {
		h.t.Setenv(k, "")
		os.Unsetenv(k)
	}
	for k, v := range env {
		h.t.Setenv(k, v)
	}
	var r hookResult
	start := time.Now()
	r.out, r.errOut, r.code = runCLI(h.t, "", append([]string{"hook", client, "--config", h.cfgPath}, args...)...)
	h.t.Logf("tlsactl hook %s %s %v → exit %d in %s\n%s%s", client, strings.Join(args, " "), env, r.code,
		time.Since(start).Round(time.Millisecond), r.out, r.errOut)
	h.finger("after hook " + client)
	return r
}

// legoLayout writes what lego leaves in <path>/certificates for domain and
// returns the hook environment: the bundle (leaf + issuer) in .crt as Debian's
// lego 4.9.1 writes it without LEGO_ISSUER_CERT_PATH, or (issuerVar) the leaf
// alone with the issuer in .issuer.crt named by LEGO_ISSUER_CERT_PATH.
func legoLayout(t *testing.T, domain string, leafPEM, issuerPEM, keyPEM []byte, issuerVar bool) map[string]string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certificates")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	crt, key, iss := filepath.Join(dir, domain+".crt"), filepath.Join(dir, domain+".key"), filepath.Join(dir, domain+".issuer.crt")
	env := map[string]string{envLegoDomain: domain, envLegoCert: crt, envLegoKey: key}
	if issuerVar {
		roWrite(t, crt, leafPEM, 0o600)
		env[envLegoIssuer] = iss
	} else {
		roWrite(t, crt, append(append([]byte(nil), leafPEM...), issuerPEM...), 0o600)
	}
	roWrite(t, iss, issuerPEM, 0o600)
	if keyPEM != nil {
		roWrite(t, key, keyPEM, 0o600)
	}
	return env
}

func legoEnvFor(t *testing.T, domain string, c *testbed.Chain, issuerVar bool) map[string]string {
	return legoLayout(t, domain, c.Leaf.PEM, c.Intermediate.PEM, c.Leaf.KeyPEM, issuerVar)
}

// lego5Env is what lego v5's --deploy-hook gets for the files of a lego v4
// environment (lego's cmd/internal/hook/metadata.go): the same files under
// LEGO_HOOK_* names, the domains comma-separated, the certificate's name,
// key type and account beside them.
func lego5Env(v4 map[string]string, domains ...string) map[string]string {
	env := map[string]string{
		envLego5Cert: v4[envLegoCert], envLego5Key: v4[envLegoKey],
		envLego5Issuer:  strings.TrimSuffix(v4[envLegoCert], ".crt") + ".issuer.crt",
		envLego5Domains: strings.Join(domains, ","), envLego5Name: domains[0],
		"LEGO_HOOK_CERT_NAME_SANITIZED": domains[0], "LEGO_HOOK_CERT_KEY_TYPE": "EC256",
		"LEGO_HOOK_ACCOUNT_ID": "t@example.test", "LEGO_HOOK_ACCOUNT_EMAIL": "t@example.test",
		"LEGO_HOOK_ACCOUNT_SERVER": "https://127.0.0.1:14000/dir",
	}
	return env
}

// certbotLineage builds certbot's layout: live/<name>/{fullchain,privkey}.pem
// as symlinks into archive/<name>/, and returns the deploy-hook environment.
func certbotLineage(t *testing.T, domains []string, c *testbed.Chain) map[string]string {
	t.Helper()
	root := t.TempDir()
	archive, live := filepath.Join(root, "archive", domains[0]), filepath.Join(root, "live", domains[0])
	for _, d := range []string{archive, live} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string][]byte{"cert": c.Leaf.PEM, "chain": c.Intermediate.PEM, "fullchain": c.FullChainPEM(), "privkey": c.Leaf.KeyPEM}
	for name, b := range files {
		roWrite(t, filepath.Join(archive, name+"1.pem"), b, 0o600)
		if err := os.Symlink(filepath.Join("..", "..", "archive", domains[0], name+"1.pem"), filepath.Join(live, name+".pem")); err != nil {
			t.Fatal(err)
		}
	}
	return map[string]string{envCertbotDir: live, envCertbotNames: strings.Join(domains, " ")}
}

func (h *roHost) wantHookCode(what string, r hookResult, code int) {
	h.t.Helper()
	if r.code != code {
		h.t.Fatalf("%s: hook exit %d, want %d\n%s%s", what, r.code, code, r.out, r.errOut)
	}
}

// loadState reads the host's rollover state straight from the store.
func (h *roHost) loadState() *rollover.State {
	h.t.Helper()
	store, err := rollover.NewFileStore(h.stateDir)
	if err != nil {
		h.t.Fatal(err)
	}
	st, err := store.Load(h.name)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// TestHookLegoCertbot walks the hook through the cases of a renewal.
func TestHookLegoCertbot(t *testing.T) {
	b := newRoBed(t, "hook.test", "mx", "mx2")
	h := b.newRoHost(t, "mx", 3)
	// mx2's TTL is longer: its issuer-set case needs the hook to run "a
	// moment after the publish", well inside TTL + margin even on a loaded
	// machine (with 3 s a slow publish --wait had let the hold expire).
	h2 := b.newRoHost(t, "mx2", 10)
	a := h.initial

	// (e) Bad input: exit 2, one line on stderr, nothing changed.
	{
		other := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"other.hook.test"}, Reuse: a})
		leafOnly := legoEnvFor(t, h.name, h.newChain(a), false)
		roWrite(t, leafOnly[envLegoCert], h.newChain(a).Leaf.PEM, 0o600) // and a key of another leaf
		mine := h.newChain(a)
		noIssuer := legoLayout(t, h.name, mine.Leaf.PEM, mine.Intermediate.PEM, mine.Leaf.KeyPEM, false)
		roWrite(t, noIssuer[envLegoCert], mine.Leaf.PEM, 0o600)
		cases := []struct {
			name, client string
			env          map[string]string
			want         string
		}{
			{"lego without environment", "lego", nil, "no lego hook variables are set (lego v5's LEGO_HOOK_CERT_PATH, LEGO_HOOK_CERT_KEY_PATH, LEGO_HOOK_CERT_DOMAINS; lego v4's LEGO_CERT_PATH"},
			{"lego v4 without certificate", "lego", map[string]string{envLegoDomain: h.name}, "LEGO_CERT_PATH is not set"},
			{"lego v4 without domain", "lego", map[string]string{envLegoCert: leafOnly[envLegoCert]}, "LEGO_CERT_DOMAIN is not set"},
			// lego v5's --pre-hook environment: no paths yet.
			{"lego v5 pre-hook", "lego", map[string]string{envLego5Name: h.name, envLego5Domains: h.name, "LEGO_HOOK_CERT_KEY_TYPE": "EC256"}, "LEGO_HOOK_CERT_PATH is not set (lego v5 sets it for --deploy-hook only"},
			{"lego v5 without domains", "lego", map[string]string{envLego5Cert: leafOnly[envLegoCert]}, "LEGO_HOOK_CERT_DOMAINS is not set"},
			{"lego v5 unknown domain", "lego", lego5Env(legoEnvFor(t, "other.hook.test", other, false), "other.hook.test"), "is not a [[host]]"},
			{"lego v5 missing certificate file", "lego", map[string]string{envLego5Domains: h.name, envLego5Cert: "/nonexistent/x.crt"}, "no such file"},
			{"certbot without environment", "certbot", nil, "RENEWED_LINEAGE is not set"},
			{"unknown domain", "lego", legoEnvFor(t, "other.hook.test", other, false), "is not a [[host]]"},
			{"certbot unknown domain", "certbot", certbotLineage(t, []string{"other.hook.test"}, other), "is not a [[host]]"},
			{"missing certificate file", "lego", map[string]string{envLegoDomain: h.name, envLegoCert: "/nonexistent/x.crt"}, "no such file"},
			{"key of another certificate", "lego", leafOnly, "belongs to no certificate"},
			{"no issuer", "lego", noIssuer, "holds only the certificate"},
		}
		for _, c := range cases {
			r := h.hook(c.client, c.env)
			if r.code != exitBadInput || !strings.Contains(r.errOut, c.want) || strings.Count(strings.TrimSpace(r.errOut), "\n") != 0 {
				t.Errorf("%s: exit %d, stderr %q; want exit 2 and one line with %q", c.name, r.code, r.errOut, c.want)
			}
		}
		h.assertKnot("after bad input", roPair(a))
		h.assertServes("after bad input", a)
		if _, err := os.Stat(filepath.Join(h.stateDir, h.name+".json")); err == nil {
			t.Error("bad input started a rollover")
		}
	}

	// (a) Same CA, new key: renew in one hook call, no wait.
	a2 := h.newChain(a)
	envA2 := legoEnvFor(t, h.name, a2, false) // Debian lego 4.9.1: bundle, no issuer variable
	r := h.hook("lego", envA2, "--dry-run")
	h.wantHookCode("dry run", r, 0)
	if !strings.Contains(r.out, "would deploy") || !strings.Contains(r.out, "renew") {
		t.Errorf("dry run output: %s", r.out)
	}
	h.assertKnot("after the dry run", roPair(a))
	h.assertServes("after the dry run", a)

	start := time.Now()
	r = h.hook("lego", envA2)
	h.wantHookCode("(a) same CA, new key", r, 0)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the renew hook took %s with a TTL of 3 s", took)
	}
	h.assertServes("(a) renewed", a2)
	h.assertFiles("(a) renewed", a2)
	h.assertKnot("(a) renewed", roSorted(roRec(a2.Leaf, tlsa.DANEEE), roRec(a.Intermediate, tlsa.DANETA)))
	st := h.loadState()
	if st.Plan != rollover.PlanRenew || st.Status != rollover.StatusDone {
		t.Fatalf("(a): %s rollover %s", st.Plan, st.Status)
	}

	// (b) The very same certificate again: nothing changes, exit 0.
	r = h.hook("lego", envA2)
	h.wantHookCode("(b) same certificate", r, 0)
	if !strings.Contains(r.out, "already serves") {
		t.Errorf("(b) output: %s", r.out)
	}
	h.assertKnot("(b)", roSorted(roRec(a2.Leaf, tlsa.DANEEE), roRec(a.Intermediate, tlsa.DANETA)))
	if st2 := h.loadState(); len(st2.History) != len(st.History) || !st2.Created.Equal(st.Created) {
		t.Errorf("(b) the same certificate changed the rollover state")
	}

	// (a') --reuse-key: a new certificate on the same key; the 3 1 1 stays.
	// lego v5's contract: LEGO_HOOK_*, the domains comma-separated (one of
	// them not configured).
	a3 := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{h.name}, Reuse: a2, ReuseKey: true})
	r = h.hook("lego", lego5Env(legoEnvFor(t, h.name, a3, true), "www.hook.test", h.name))
	h.wantHookCode("(a') same key", r, 0)
	h.assertServes("(a') same key", a3)
	h.assertKnot("(a') same key", roSorted(roRec(a2.Leaf, tlsa.DANEEE), roRec(a.Intermediate, tlsa.DANETA)))

	// (c) A new CA: the hook publishes its 2 1 1 and holds the certificate
	// back (exit 75); `rollover run` deploys it after the TTL.
	nb := h.newChain(nil)
	envB := legoEnvFor(t, h.name, nb, true) // leaf + LEGO_ISSUER_CERT_PATH
	r = h.hook("lego", envB)
	h.wantHookCode("(c) new CA", r, exitHookHeld)
	for _, w := range []string{"held back", "tlsactl rollover run", "after"} {
		if !strings.Contains(r.errOut, w) {
			t.Errorf("(c) message lacks %q: %s", w, r.errOut)
		}
	}
	if strings.Count(strings.TrimSpace(r.errOut), "\n") != 0 {
		t.Errorf("(c) message is not one line: %q", r.errOut)
	}
	withB := roSorted(roRec(a2.Leaf, tlsa.DANEEE), roRec(a.Intermediate, tlsa.DANETA), roRec(nb.Intermediate, tlsa.DANETA))
	h.assertKnot("(c) held back", withB)
	h.assertServes("(c) held back", a3)
	st = h.loadState()
	if st.Plan != rollover.PlanCAMigration || st.CurrentStep() != rollover.StepWaitTTL || st.NotBefore.IsZero() {
		t.Fatalf("(c): %s step %s not before %v", st.Plan, st.CurrentStep(), st.NotBefore)
	}
	if !strings.Contains(r.errOut, st.NotBefore.Local().Format(time.RFC3339)) {
		t.Errorf("(c) message does not name the not-before time %s: %s", st.NotBefore.Local().Format(time.RFC3339), r.errOut)
	}
	notBefore := st.NotBefore
	// lego (or a retry) calls the hook again with the same certificate: still
	// held, nothing staged twice; lego v5's contract for the same files is
	// the same certificate.
	r = h.hook("lego", envB)
	h.wantHookCode("(c) again", r, exitHookHeld)
	r = h.hook("lego", lego5Env(envB, h.name))
	h.wantHookCode("(c) again", r, exitHookHeld)
	h.assertServes("(c) again", a3)
	h.mustTL("run", "--wait", "--timeout", "90s")
	if time.Now().Before(notBefore) {
		t.Errorf("rollover run finished before %s", notBefore)
	}
	h.assertDone(h.status())
	h.assertKnot("(c) migrated", roPair(nb))
	h.assertServes("(c) migrated", nb)
	h.assertFiles("(c) migrated", nb)
	for _, e := range h.status().History {
		if e.What == "deploying" && e.At.Before(notBefore) {
			t.Errorf("deployed at %s, before %s", e.At, notBefore)
		}
	}

	// (d) certbot's lineage layout, renew case, on the second host; the
	// certificate also names a domain that is not configured.
	c2 := h2.newChain(h2.initial)
	r = h2.hook("certbot", certbotLineage(t, []string{"example.test", h2.name}, c2))
	h2.wantHookCode("(d) certbot renew", r, 0)
	h2.assertServes("(d) certbot renew", c2)
	h2.assertFiles("(d) certbot renew", c2)
	h2.assertKnot("(d) certbot renew", roSorted(roRec(c2.Leaf, tlsa.DANEEE), roRec(h2.initial.Intermediate, tlsa.DANETA)))
	r = h2.hook("certbot", certbotLineage(t, []string{h2.name}, c2))
	h2.wantHookCode("(d) certbot again", r, 0)

	// Issuer set: publish the 2 1 1 of every intermediate the CA may issue
	// from (one per file of a glob); a certificate from a sibling
	// intermediate is then a plain renew, never held back.
	sib1 := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{h2.name}, Reuse: &testbed.Chain{Root: h2.initial.Root, Intermediate: siblingCA(t, h2.initial, "R11")}})
	sib2 := siblingCA(t, h2.initial, "E6")
	dir := t.TempDir()
	roWrite(t, filepath.Join(dir, "r10.pem"), h2.initial.Intermediate.PEM, 0o644)
	roWrite(t, filepath.Join(dir, "r11.pem"), sib1.Intermediate.PEM, 0o644)
	roWrite(t, filepath.Join(dir, "e6.pem"), sib2.PEM, 0o644)
	out, errOut, code := runCLI(t, "", "publish", "--config", h2.cfgPath, "--host", h2.name, "--usage", "2",
		"--certificate", filepath.Join(dir, "*.pem"), "--add", "--wait", "--timeout", "30s", "--auth-port", strconv.Itoa(b.knotPort()))
	t.Logf("publish issuer set → exit %d\n%s%s", code, out, errOut)
	if code != 0 {
		t.Fatalf("publish issuer set: exit %d", code)
	}
	set := roSorted(roRec(c2.Leaf, tlsa.DANEEE), roRec(h2.initial.Intermediate, tlsa.DANETA), roRec(sib1.Intermediate, tlsa.DANETA), roRec(sib2, tlsa.DANETA))
	h2.waitKnot(set)
	h2.waitResolver(set)
	// Published is not aged: a moment after the publish, senders' resolvers
	// may still hold the RRset without the sibling's 2 1 1, whatever the
	// resolver tlsactl asks has. The hook holds the certificate back.
	r = h2.hook("lego", legoEnvFor(t, h2.name, sib1, false))
	h2.wantHookCode("issuer set: sibling intermediate, a moment after the publish", r, exitHookHeld)
	if !strings.Contains(r.out, "published is not aged") {
		t.Errorf("held back without saying why: %s", r.out)
	}
	h2.assertServes("issuer set: held back", c2)
	// Published ahead of renewals, as the README advises: once the ledger
	// says the RRset before the add has left every cache, the same
	// certificate goes through at once.
	h2.mustTL("abort")
	h2.waitAged()
	r = h2.hook("lego", legoEnvFor(t, h2.name, sib1, false))
	h2.wantHookCode("issuer set: sibling intermediate", r, 0)
	h2.assertServes("issuer set: sibling intermediate", sib1)
	h2.assertKnot("issuer set: sibling intermediate", roSorted(roRec(sib1.Leaf, tlsa.DANEEE), roRec(h2.initial.Intermediate, tlsa.DANETA), roRec(sib1.Intermediate, tlsa.DANETA), roRec(sib2, tlsa.DANETA)))
}

// waitAged waits until every RRset version in the host's ledger that
// another has replaced has left every cache (CachedUntil with the margin).
func (h *roHost) waitAged() {
	h.t.Helper()
	store, err := rollover.NewFileStore(h.stateDir)
	if err != nil {
		h.t.Fatal(err)
	}
	l, err := store.LoadLedger(h.owner)
	if err != nil {
		h.t.Fatal(err)
	}
	margin, _ := time.ParseDuration(h.cfg.margin)
	var until time.Time
	for _, v := range l.Versions {
		if end := v.CachedUntil(margin); end.After(until) {
			until = end
		}
	}
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(until); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			h.t.Fatalf("the ledger of %s is not aged by %s", h.owner, until)
		}
	}
}

// siblingCA issues another intermediate CA under c's root (as Let's Encrypt's
// R10 and R11 are siblings under ISRG Root X1).
func siblingCA(t *testing.T, c *testbed.Chain, cn string) *testbed.Cert {
	t.Helper()
	// A chain whose "root" is c's root: NewChain with Reuse takes the
	// intermediate as issuer, so issue the sibling by hand.
	key := testbed.MustChain(t, testbed.ChainOptions{}).Leaf.Key // a fresh P-256 key
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{Organization: []string{"Let's Encrypt"}, CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Root.Cert, key.Public(), c.Root.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &testbed.Cert{Cert: cert, DER: der, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Key: key,
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), SPKIDER: cert.RawSubjectPublicKeyInfo}
}

// waitResolver waits until the bed's caching Unbound answers want.
func (h *roHost) waitResolver(want []string) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []string
		if res, err := h.b.res.LookupTLSA(h.b.ctx, uint16(h.pf.Port), h.name); err == nil {
			for _, r := range res.Records {
				got = append(got, tlsa.Record{Usage: tlsa.Usage(r.Usage), Selector: tlsa.Selector(r.Selector), MatchingType: tlsa.MatchingType(r.MatchingType), Data: r.Data}.String())
			}
		}
		if slices.Equal(roSorted(got...), want) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the caching resolver answers %v, want %v", got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
