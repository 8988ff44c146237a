package main

// End to end: `tlsactl acme renew` (lego as a library, embedded) against
// Pebble, DNS-01 through the configured rfc2136 provider into the signed Knot
// zone, and the rollover bed of rollover_e2e_test.go (caching validating
// Unbound, Postfix, background probe every 250 ms and posttls-finger at every
// step change; none may fail). Pebble validates through an Unbound of its own
// that caches for at most a second (the CA's resolver is not the mail
// server's).

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

// servedACME returns what Postfix serves as an acmeCert (leaf + issuer).
func (h *roHost) servedACME() acmeCert {
	h.t.Helper()
	chain, err := h.served(h.b.ctx)
	if err != nil || len(chain) != 2 {
		h.t.Fatalf("probe: %v, %d certificates", err, len(chain))
	}
	return acmeCert{leaf: chain[0], issuer: chain[1]}
}

// assertNoChallengeTXT: Knot serves no _acme-challenge TXT for the host.
func (h *roHost) assertNoChallengeTXT(what string) {
	h.t.Helper()
	m, err := testbed.Query(h.b.ctx, h.b.knot.Addr, "_acme-challenge."+h.name+".", dns.TypeTXT)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == dns.TypeTXT {
			h.t.Fatalf("%s: Knot still serves %s", what, rr)
		}
	}
}

func TestACMERenewEmbeddedE2E(t *testing.T) {
	t.Parallel()
	roRequire(t)
	testbed.RequirePebble(t)
	b := newRoBed(t, "embed.test", "mx")
	b.bin = buildTlsactl(t)
	ds, err := b.knot.DS(b.ctx, "embed.test.")
	if err != nil {
		t.Fatal(err)
	}
	cu := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: []testbed.StubZone{{Name: "embed.test.", Addr: b.knot.Addr, TrustAnchor: ds}}, NoCache: true})
	h := b.newRoHost(t, "mx", 3)
	// A CA that requires External Account Binding, as commercial ones do:
	// every order below runs on an account bound with its key.
	pb := testbed.NewPebble(t, testbed.PebbleConfig{DNSServer: cu.Addr, TestDir: testbed.PebbleEABTestDir(t), Env: []string{"PEBBLE_AUTHZREUSE=0"}})
	eabDir := t.TempDir()
	kidFile, hmacFile := filepath.Join(eabDir, "eab.kid"), filepath.Join(eabDir, "eab.hmac")
	roWrite(t, kidFile, []byte(testbed.PebbleEABKID+"\n"), 0o644)
	roWrite(t, hmacFile, []byte(testbed.PebbleEABHMAC+"\n"), 0o600)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log:\n%s", roTail(pb.Log(), 4000))
			t.Logf("knotd log:\n%s", roTail(b.knot.Log(), 3000))
		}
	})
	_, inter, err := pb.Intermediate(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	renew := func(args ...string) roResult {
		t.Helper()
		full := append([]string{"acme", "renew", "--config", h.cfgPath, "--host", h.name,
			"--directory", pb.DirectoryURL, "--ca-file", pb.CAFile, "--email", "t@embed.test", "-v",
			"--eab-kid-file", kidFile, "--eab-hmac-file", hmacFile}, args...)
		r := h.runTlsactl(full...)
		if strings.Contains(r.out+r.errOut, b.knot.Key.Secret) {
			t.Error("acme renew printed the TSIG secret")
		}
		if strings.Contains(r.out+r.errOut, testbed.PebbleEABHMAC) {
			t.Error("acme renew printed the EAB HMAC key")
		}
		h.finger("after acme renew")
		return r
	}

	// Not due: the served certificate is valid for longer than --days.
	if r := renew(); r.code != 0 || !strings.Contains(r.out, "not due") {
		t.Fatalf("acme renew without --force: exit %d, want 0 and 'not due'", r.code)
	}
	// --dry-run orders nothing.
	if r := renew("--force", "--dry-run"); r.code != 0 || !strings.Contains(r.out, "would order") {
		t.Fatalf("--dry-run: exit %d", r.code)
	}
	if _, err := os.Stat(filepath.Join(h.stateDir, "acme")); err == nil {
		t.Fatal("--dry-run created an ACME account")
	}

	// EAB credentials: half a pair, or an HMAC file others may read, is
	// refused before anything is ordered; the CA itself refuses an account
	// without a binding.
	wideHMAC := filepath.Join(eabDir, "wide.hmac")
	roWrite(t, wideHMAC, []byte(testbed.PebbleEABHMAC), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--eab-hmac-file", ""}, exitBadInput, "needs the HMAC key too"},
		{[]string{"--eab-kid-file", ""}, exitBadInput, "needs the key ID too"},
		{[]string{"--eab-hmac-file", wideHMAC}, exitBadInput, "--eab-hmac-file"},
		{[]string{"--eab-kid-file", "", "--eab-hmac-file", ""}, exitRolloverError, "the ACME order failed"},
	} {
		if r := renew(append([]string{"--force"}, tc.args...)...); r.code != tc.code || !strings.Contains(r.errOut, tc.want) {
			t.Fatalf("acme renew %v: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.errOut, tc.code, tc.want)
		}
	}

	// (a) First issue: Pebble is a new CA → 2 1 1 published, held back (75).
	r := renew("--force")
	if r.code != exitHookHeld || !strings.Contains(r.errOut, "held back") || !strings.Contains(r.out, "registered a new ACME account with External Account Binding (key ID "+testbed.PebbleEABKID+")") {
		t.Fatalf("first acme renew: exit %d, want %d (held back) after registering", r.code, exitHookHeld)
	}
	h.assertNoChallengeTXT("after (a)")
	h.assertServes("while the new 2 1 1 ages", h.initial)
	st := h.status()
	if st.Plan != rollover.PlanCAMigration || st.Status != rollover.StatusActive {
		t.Fatalf("after (a): %s rollover, %s", st.Plan, st.Status)
	}
	// Again without --force: the active rollover holds the certificate;
	// nothing is ordered, it is only advanced (still held back).
	if r := renew(); r.code != exitHookHeld || !strings.Contains(r.out, "ordering nothing") {
		t.Fatalf("acme renew during the migration: exit %d", r.code)
	}
	h.mustTL("run", "--wait", "--timeout", "2m")
	st = h.status()
	h.assertDone(st)
	assertDeployedAfter(t, st, st.NotBefore)
	c1 := h.servedACME()
	if !c1.issuer.Equal(inter) {
		t.Fatalf("served issuer %q is not Pebble's intermediate", c1.issuer.Subject)
	}
	h.assertKnot("after (a)", acmePair(c1))
	for _, f := range []string{"account-key.pem", "account.json"} {
		m, _ := filepath.Glob(filepath.Join(h.stateDir, "acme", "*", "*", f))
		if len(m) != 1 {
			t.Fatalf("%s: %v", f, m)
		}
		if fi, err := os.Stat(m[0]); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v", m[0], err, fi.Mode())
		}
	}

	// (b) Renew from the same Pebble: same CA, new key → deployed at once.
	r = renew("--force")
	if r.code != 0 || strings.Contains(r.out, "registered") || !strings.Contains(r.out, "renew rollover") {
		t.Fatalf("second acme renew: exit %d, want 0 (renew, stored account)", r.code)
	}
	h.assertNoChallengeTXT("after (b)")
	h.assertDone(h.status())
	c2 := h.servedACME()
	if c2.leaf.Equal(c1.leaf) || certRec(c2.leaf, tlsa.DANEEE) == certRec(c1.leaf, tlsa.DANEEE) || !c2.issuer.Equal(inter) {
		t.Fatal("(b): not a new key under the same intermediate")
	}
	h.assertKnot("after (b)", acmePair(c2))

	// (c) Next key: publish its 3 1 1, then after the TTL renew from its CSR.
	kn := h.runTlsactl("key", "next", "--config", h.cfgPath, "--host", h.name)
	if kn.code != 0 {
		t.Fatalf("key next: exit %d\n%s%s", kn.code, kn.out, kn.errOut)
	}
	nextRec := nextKeyRecord(t, h)
	h.waitKnot(roSorted(certRec(c2.leaf, tlsa.DANEEE), certRec(inter, tlsa.DANETA), nextRec))
	st = h.status()
	if st.Plan != rollover.PlanKeyPrepublish || st.NotBefore.IsZero() {
		t.Fatalf("after key next: %s rollover, not before %v", st.Plan, st.NotBefore)
	}
	time.Sleep(time.Until(st.NotBefore) + 500*time.Millisecond)
	r = renew("--force")
	if r.code != 0 || !strings.Contains(r.out, "next.csr") {
		t.Fatalf("acme renew with the next key: exit %d, want 0 with the CSR", r.code)
	}
	h.assertNoChallengeTXT("after (c)")
	h.assertDone(h.status())
	c3 := h.servedACME()
	if certRec(c3.leaf, tlsa.DANEEE) != nextRec {
		t.Fatal("(c): the served certificate is not on the next key")
	}
	h.assertKnot("after (c): the old 3 1 1 retired", roSorted(nextRec, certRec(inter, tlsa.DANETA)))
}
