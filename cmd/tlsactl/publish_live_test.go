package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/tlsa"
)

// TestPublishLive drives `tlsactl publish` against a real Knot (signed zone,
// TSIG-signed RFC 2136 updates), a validating Unbound and a STARTTLS server,
// through the NCSC steps, and checks what the authoritative server serves
// after each step.
// knotAddrPort is the port of "ip:port".
func knotAddrPort(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

func TestPublishLive(t *testing.T) {
	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{{Name: "pub.test.", Signed: true, Records: []string{"mx 60 IN A 127.0.0.1"}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	ds, err := knot.DS(ctx, "pub.test.")
	if err != nil {
		t.Fatal(err)
	}
	unbound := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: []testbed.StubZone{{Name: "pub.test.", Addr: knot.Addr, TrustAnchor: ds}}})
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "tsig.key")
	if err := knot.Key.WriteBINDKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	chain := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"mx.pub.test"}})
	cert := chain.TLSCertificate()
	srv := testbed.NewSMTPServer(t, testbed.SMTPStartTLS, &cert)
	_, port, _ := net.SplitHostPort(srv.Addr)
	owner := "_" + port + "._tcp.mx.pub.test."

	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leafPEM := write("leaf.pem", chain.FullChainPEM())
	renewed := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"mx.pub.test"}, Reuse: chain})
	renewedPEM := write("renewed.pem", renewed.FullChainPEM())
	otherCA := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"mx.pub.test"}})
	otherPEM := write("other.pem", otherCA.FullChainPEM())

	rec := func(c *testbed.Cert, u tlsa.Usage) string {
		r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: c.Cert, SPKI: c.SPKIDER}, u, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		return r.String()
	}
	served := func() []string {
		t.Helper()
		m, err := testbed.Query(ctx, knot.Addr, owner, dns.TypeTLSA)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		signed := false
		for _, rr := range m.Answer {
			switch v := rr.(type) {
			case *dns.TLSA:
				out = append(out, strings.ToLower(strings.TrimPrefix(v.String(), v.Hdr.String())))
			case *dns.RRSIG:
				signed = signed || v.TypeCovered == dns.TypeTLSA
			}
		}
		if len(out) > 0 && !signed {
			t.Errorf("TLSA at %s served without RRSIG", owner)
		}
		slices.Sort(out)
		return out
	}
	sorted := func(s ...string) []string { slices.Sort(s); return s }
	base := []string{"publish", "--provider", "rfc2136", "--server", knot.Addr, "--tsig-key-file", keyFile,
		"--resolver", unbound.Addr, "--host", "mx.pub.test", "--port", port, "--ttl", "60",
		"--state-dir", t.TempDir(), "--auth-port", knotAddrPort(knot.Addr)}
	pub := func(args ...string) (string, string, int) {
		return runCLI(t, "", append(slices.Clone(base), args...)...)
	}

	// 1. The NCSC pair: 3 1 1 of the server and 2 1 1 of the issuing CA. The
	// zone is found by walking up to the SOA.
	out, errOut, code := pub("--set", "--certificate", leafPEM, "--record", rec(chain.Intermediate, tlsa.DANETA), "--wait")
	if code != 0 {
		t.Fatalf("set: exit %d\n%s%s", code, out, errOut)
	}
	want := sorted(rec(chain.Leaf, tlsa.DANEEE), rec(chain.Intermediate, tlsa.DANETA))
	if got := served(); !slices.Equal(got, want) {
		t.Fatalf("after set: served %v, want %v", got, want)
	}
	if !strings.Contains(out, "zone pub.test.") || !strings.Contains(out, "+ 3 1 1") || !strings.Contains(out, "every authoritative server serves the new RRset") {
		t.Errorf("set output:\n%s", out)
	}

	t.Logf("set output:\n%s", out)
	// 2. Removing both records would leave the served chain unmatched: refused,
	// with --dry-run and without, and nothing changes.
	for _, dry := range [][]string{{"--dry-run"}, nil} {
		out, errOut, code = pub(append([]string{"--remove", "--certificate", leafPEM, "--usage", "3", "--record", rec(chain.Intermediate, tlsa.DANETA)}, dry...)...)
		if code != exitRefused || !strings.Contains(errOut, "refused") || !strings.Contains(out, "- 3 1 1") {
			t.Errorf("remove both %v: exit %d\n%s%s", dry, code, out, errOut)
		}
		if got := served(); !slices.Equal(got, want) {
			t.Fatalf("refused change altered the zone: %v", got)
		}
	}

	// 3. Same-CA renewal: the new certificate's 3 1 1 replaces the old one
	// before it is installed; the 2 1 1 still matches what is served.
	out, errOut, code = pub("--replace-usage", "--certificate", renewedPEM, "--dry-run", "--json")
	var plan publishPlan
	if code != 0 || json.Unmarshal([]byte(out), &plan) != nil || !plan.DryRun || plan.Applied || plan.Safety != "ok" ||
		len(plan.Add) != 1 || len(plan.Remove) != 1 || len(plan.Keep) != 1 {
		t.Fatalf("renew dry run: exit %d %+v\n%s%s", code, plan, out, errOut)
	}
	if got := served(); !slices.Equal(got, want) {
		t.Fatalf("dry run altered the zone: %v", got)
	}
	if _, errOut, code = pub("--replace-usage", "--certificate", renewedPEM); code != 0 {
		t.Fatalf("renew: exit %d: %s", code, errOut)
	}
	want = sorted(rec(renewed.Leaf, tlsa.DANEEE), rec(chain.Intermediate, tlsa.DANETA))
	if got := served(); !slices.Equal(got, want) {
		t.Fatalf("after renew: served %v, want %v", got, want)
	}

	// 4. A set of records from another CA matches nothing served: refused.
	if _, errOut, code = pub("--set", "--certificate", otherPEM); code != exitRefused {
		t.Errorf("foreign set: exit %d: %s", code, errOut)
	}
	// ... unless forced.
	if _, errOut, code = pub("--add", "--usage", "2", "--certificate", otherPEM, "--force"); code != 0 {
		t.Errorf("forced add: exit %d: %s", code, errOut)
	}
	want = sorted(append(want, rec(otherCA.Intermediate, tlsa.DANETA))...)
	if got := served(); !slices.Equal(got, want) {
		t.Fatalf("after forced add: served %v, want %v", got, want)
	}

	// 5. A wrong TSIG secret: the server refuses, exit 3, nothing changes, and
	// the secret is not printed.
	bad := knot.Key
	bad.Secret = "c2VjcmV0LXRoYXQtaXMtd3Jvbmc=" // "secret-that-is-wrong"
	badFile := filepath.Join(dir, "bad.key")
	if err := bad.WriteBINDKeyFile(badFile); err != nil {
		t.Fatal(err)
	}
	args := slices.Clone(base)
	args[slices.Index(args, keyFile)] = badFile
	out, errOut, code = runCLI(t, "", append(args, "--add", "--record", rec(renewed.Leaf, tlsa.DANETA), "--zone", "pub.test")...)
	if code != exitChangeFailed || strings.Count(errOut, "\n") != 1 || strings.Contains(out+errOut, bad.Secret) || strings.Contains(out+errOut, knot.Key.Secret) {
		t.Errorf("bad key: exit %d\n%s%s", code, out, errOut)
	}
	if got := served(); !slices.Equal(got, want) {
		t.Fatalf("failed update altered the zone: %v", got)
	}

	// 6. Nothing to change is reported as such.
	out, _, code = pub("--add", "--certificate", renewedPEM)
	if code != 0 || !strings.Contains(out, "nothing to change") {
		t.Errorf("no-op: exit %d\n%s", code, out)
	}
}
