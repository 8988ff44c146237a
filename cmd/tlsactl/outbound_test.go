package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/outbound"
	"github.com/tlsactl/tlsactl/internal/testbed"
)

// outboundBed is a DNSSEC-signed zone on Knot with two mail domains, each
// with one MX host on its own loopback address, port 25:
//
//	good.outbound.test MX mx-good  (TLSA 3 1 1 matches the sink's key)
//	bad.outbound.test  MX mx-bad   (TLSA 3 1 1 of another key)
//
// a second signed zone whose trust anchor in Unbound is wrong (bogus), and a
// validating Unbound with a port-53 listener for the sender's libc.
type outboundBed struct {
	unbound           *testbed.Unbound
	good, bad         *testbed.MailSink
	signed, bogusName string
}

func newOutboundBed(t *testing.T) *outboundBed {
	t.Helper()
	testbed.Require(t, "knotd", "knot")
	testbed.Require(t, "unbound", "unbound")
	testbed.RequireRoot(t, "port 25 receivers and a port-53 resolver")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	goodChain := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"mx-good.outbound.test"}})
	badChain := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"mx-bad.outbound.test"}})
	other := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"mx-bad.outbound.test"}})
	ipGood, ipBad := testbed.RandomLoopbackPair()

	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{
		{Name: "outbound.test", Signed: true, Records: []string{
			"signed A 127.0.0.9",
			"good MX 10 mx-good",
			"mx-good A " + ipGood,
			"_25._tcp.mx-good TLSA 3 1 1 " + goodChain.Leaf.TLSA311(),
			"bad MX 10 mx-bad",
			"mx-bad A " + ipBad,
			// The digest of a key the server does not have.
			"_25._tcp.mx-bad TLSA 3 1 1 " + other.Leaf.TLSA311(),
		}},
		{Name: "bogus-outbound.test", Signed: true, Records: []string{"www A 127.0.0.10"}},
	}})
	ds, err := knot.DS(ctx, "outbound.test")
	if err != nil {
		t.Fatal(err)
	}
	bogusDS, err := knot.DS(ctx, "bogus-outbound.test")
	if err != nil {
		t.Fatal(err)
	}
	u := testbed.NewUnbound(t, testbed.UnboundConfig{Port53: true, Stubs: []testbed.StubZone{
		{Name: "outbound.test", Addr: knot.Addr, TrustAnchor: ds},
		{Name: "bogus-outbound.test", Addr: knot.Addr, TrustAnchor: testbed.CorruptDS(bogusDS)},
	}})
	return &outboundBed{
		unbound:   u,
		good:      testbed.NewMailSink(t, net.JoinHostPort(ipGood, "25"), goodChain.TLSCertificate()),
		bad:       testbed.NewMailSink(t, net.JoinHostPort(ipBad, "25"), badChain.TLSCertificate()),
		signed:    "signed.outbound.test",
		bogusName: "www.bogus-outbound.test",
	}
}

// outboundJSON is the --json document (check.Severity marshals as its name
// and has no UnmarshalText: severities are read as strings).
type outboundJSON struct {
	Status   string                  `json:"status"`
	Resolver outbound.ResolverReport `json:"resolver"`
	MTA      string                  `json:"mta"`
	Enforced bool                    `json:"dane_enforced"`
	Findings []struct {
		Severity, Code, Setting, Value, Message, Fix string
	} `json:"findings"`
}

func (b *outboundBed) runOutbound(t *testing.T, dir string) (outboundJSON, string, int) {
	t.Helper()
	out, errOut, code := runCLI(t, "", "check", "outbound", "--postfix-config", dir, "--resolver", b.unbound.Addr,
		"--signed", b.signed, "--bogus", b.bogusName, "--json")
	var rep outboundJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check outbound --json: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	text, _, _ := runCLI(t, "", "check", "outbound", "--postfix-config", dir, "--resolver", b.unbound.Addr,
		"--signed", b.signed, "--bogus", b.bogusName)
	return rep, text, code
}

// TestOutboundRealSender proves the verdict of `check outbound` against a
// real Postfix sender: with dane + dnssec the command says enforced, and the
// message to the domain whose TLSA matches arrives while the one whose TLSA
// does not is deferred; with may the command says CRITICAL and both arrive.
func TestOutboundRealSender(t *testing.T) {
	b := newOutboundBed(t)
	sender := testbed.NewPostfixSender(t, testbed.SenderConfig{
		ResolverIP: b.unbound.Port53IP,
		Hostname:   "sender.outbound.test",
		Extra:      []string{"smtp_tls_security_level = dane", "smtp_dns_support_level = dnssec"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dump := func() string {
		qs, err := sender.Queue(ctx)
		return fmt.Sprintf("queue: %+v (err %v)\nsender log:\n%s\nunbound log tail:\n%s", qs, err, sender.Log(), outboundTail(b.unbound.Log(), 3000))
	}

	// 1. dane + dnssec: enforced.
	rep, text, code := b.runOutbound(t, sender.Dir)
	if code != 0 || !rep.Enforced || rep.MTA != "postfix" || !rep.Resolver.Validates || !rep.Resolver.Loopback {
		t.Fatalf("dane: exit %d, report %+v\n%s", code, rep, text)
	}
	if !strings.Contains(text, "OK: DANE enforced by postfix") {
		t.Errorf("dane: text output lacks the verdict:\n%s", text)
	}
	t.Logf("check outbound (dane):\n%s", text)

	from := "probe@sender.outbound.test"
	if err := sender.Send(ctx, from, "user@good.outbound.test", "dane-good-1", "hello"); err != nil {
		t.Fatal(err)
	}
	if err := sender.Send(ctx, from, "user@bad.outbound.test", "dane-bad-1", "hello"); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	m, err := b.good.WaitFor(wctx, "Subject: dane-good-1")
	wcancel()
	if err != nil {
		t.Fatalf("dane: the message to the matching receiver did not arrive: %v\n%s", err, dump())
	}
	if !m.TLS {
		t.Errorf("dane: the message to the matching receiver arrived without TLS")
	}
	wctx, wcancel = context.WithTimeout(ctx, 60*time.Second)
	reason, err := sender.WaitDeferred(wctx, "user@bad.outbound.test")
	wcancel()
	if err != nil {
		t.Fatalf("dane: the message to the mismatching receiver was not deferred: %v\n%s", err, dump())
	}
	t.Logf("dane: deferred with reason %q", reason)
	if !strings.Contains(reason, "TLSA") && !strings.Contains(reason, "Server certificate not verified") {
		t.Errorf("dane: delay reason %q names neither TLSA nor certificate verification", reason)
	}
	if b.bad.Has("dane-bad-1") {
		t.Fatalf("dane: the mismatching receiver got the message")
	}
	if b.bad.Handshakes() == 0 {
		t.Errorf("dane: the sender never reached the mismatching receiver's TLS handshake (deferred for another reason?)")
	}

	// 2. may: not enforced, both arrive (the deferred one after a flush).
	if err := sender.Postconf("-e", "smtp_tls_security_level = may"); err != nil {
		t.Fatal(err)
	}
	if err := sender.Reload(); err != nil {
		t.Fatal(err)
	}
	rep, text, code = b.runOutbound(t, sender.Dir)
	if code != 2 || rep.Enforced || rep.Status != "CRITICAL" {
		t.Fatalf("may: exit %d, report %+v\n%s", code, rep, text)
	}
	found := false
	for _, f := range rep.Findings {
		if f.Code == "postfix-security-level" && f.Severity == "CRITICAL" && f.Value == "may" {
			found = true
		}
	}
	if !found || !strings.Contains(text, "CRITICAL smtp_tls_security_level = may") || !strings.Contains(text, "DANE not enforced by postfix") {
		t.Errorf("may: no CRITICAL smtp_tls_security_level finding:\n%s", text)
	}
	t.Logf("check outbound (may):\n%s", text)

	if err := sender.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := sender.Send(ctx, from, "user@good.outbound.test", "may-good-2", "hello"); err != nil {
		t.Fatal(err)
	}
	if err := sender.Send(ctx, from, "user@bad.outbound.test", "may-bad-2", "hello"); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		sink    *testbed.MailSink
		subject string
	}{{b.bad, "dane-bad-1"}, {b.good, "may-good-2"}, {b.bad, "may-bad-2"}} {
		wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
		_, err := w.sink.WaitFor(wctx, "Subject: "+w.subject)
		wcancel()
		if err != nil {
			t.Fatalf("may: %s did not arrive at %s: %v\n%s", w.subject, w.sink.Addr, err, dump())
		}
	}
	// Nothing is left in the queue.
	qs, err := sender.Queue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.QueueName == "deferred" {
			t.Errorf("may: still deferred: %+v", q)
		}
	}

	// 3. dane without smtp_dns_support_level = dnssec: the command says
	// CRITICAL ("DANE silently off"), and indeed Postfix delivers to the
	// mismatching receiver.
	if err := sender.Postconf("-e", "smtp_tls_security_level = dane"); err != nil {
		t.Fatal(err)
	}
	if err := sender.Postconf("-X", "smtp_dns_support_level"); err != nil {
		t.Fatal(err)
	}
	if err := sender.Reload(); err != nil {
		t.Fatal(err)
	}
	rep, text, code = b.runOutbound(t, sender.Dir)
	if code != 2 || rep.Enforced || !strings.Contains(text, "CRITICAL smtp_dns_support_level: empty") {
		t.Fatalf("no dnssec: exit %d\n%s", code, text)
	}
	t.Logf("check outbound (dane, no dnssec):\n%s", text)
	if err := sender.Send(ctx, from, "user@bad.outbound.test", "nodnssec-bad-3", "hello"); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel = context.WithTimeout(ctx, 60*time.Second)
	_, err = b.bad.WaitFor(wctx, "Subject: nodnssec-bad-3")
	wcancel()
	if err != nil {
		t.Fatalf("no dnssec: the message to the mismatching receiver did not arrive (DANE was expected to be silently off): %v\n%s", err, dump())
	}
}

// TestOutboundResolverVerdicts runs the resolver part of `check outbound`
// against a validating Unbound, one that does not validate, an unreachable
// address, and a non-loopback address.
func TestOutboundResolverVerdicts(t *testing.T) {
	b := newOutboundBed(t)
	dir := t.TempDir()
	writeOutboundFile(t, filepath.Join(dir, "main.cf"), "smtp_tls_security_level = dane\nsmtp_dns_support_level = dnssec\n")
	writeOutboundFile(t, filepath.Join(dir, "master.cf"), "smtp unix - - n - - smtp\n")
	testbed.Require(t, "postconf", "postfix")

	rep, text, code := b.runOutbound(t, dir)
	if code != 0 || !rep.Resolver.Validates || rep.Resolver.BogusCD == nil || rep.Resolver.Bogus.Rcode != "SERVFAIL" {
		t.Fatalf("validating resolver: exit %d, %+v\n%s", code, rep.Resolver, text)
	}

	// --mta none: only the resolver; a wrong bogus name (it resolves) is CRITICAL.
	out, _, code := runCLI(t, "", "check", "outbound", "--mta", "none", "--resolver", b.unbound.Addr,
		"--signed", b.signed, "--bogus", b.signed)
	if code != 2 || !strings.Contains(out, "CRITICAL resolver") || !strings.Contains(out, "bogus name") {
		t.Errorf("bogus name that validates: exit %d\n%s", code, out)
	}
	// Unreachable resolver: UNKNOWN.
	l, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	out, _, code = runCLI(t, "", "check", "outbound", "--mta", "none", "--resolver", addr, "--signed", b.signed, "--bogus", b.bogusName, "--timeout", "10s")
	if code != 3 || !strings.Contains(out, "UNKNOWN resolver") {
		t.Errorf("unreachable resolver: exit %d\n%s", code, out)
	}
	// Bad flag value: UNKNOWN.
	if _, errOut, code := runCLI(t, "", "check", "outbound", "--mta", "sendmail"); code != 3 || !strings.Contains(errOut, "--mta") {
		t.Errorf("--mta sendmail: exit %d, %s", code, errOut)
	}
}

func writeOutboundFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func outboundTail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
