package testbed

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls check until it returns nil or the deadline passes.
func eventually(t *testing.T, ctx context.Context, what string, check func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := poll(ctx, nil, func(context.Context) error { return check() }); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func mustRR(t *testing.T, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

func answerHas(r *dns.Msg, t uint16, substr string) bool {
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == t && strings.Contains(strings.ToLower(rr.String()), strings.ToLower(substr)) {
			return true
		}
	}
	return false
}

func TestDNSSEC(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	k := NewKnot(t, KnotConfig{Zones: []Zone{
		{Name: "signed.test", Signed: true, Records: []string{"mail A 127.0.0.1"}},
		{Name: "plain.test", Records: []string{"mail A 127.0.0.1"}},
		{Name: "bogus.test", Signed: true, Records: []string{"mail A 127.0.0.1"}},
	}})
	ds, err := k.DS(ctx, "signed.test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ds, "signed.test.") || !strings.Contains(ds, "\tDS\t") {
		t.Fatalf("DS = %q", ds)
	}
	// A DS of the right shape whose digest matches no key: "bogus".
	bogusDS, err := k.DS(ctx, "bogus.test")
	if err != nil {
		t.Fatal(err)
	}
	wrongDS := CorruptDS(bogusDS)
	if wrongDS == bogusDS {
		t.Fatal("CorruptDS changed nothing")
	}
	u := NewUnbound(t, UnboundConfig{Stubs: []StubZone{
		{Name: "signed.test", Addr: k.Addr, TrustAnchor: ds},
		{Name: "plain.test", Addr: k.Addr},
		{Name: "bogus.test", Addr: k.Addr, TrustAnchor: wrongDS},
	}})

	t.Run("TSIG update visible with AD", func(t *testing.T) {
		digest := strings.Repeat("ab", 32)
		tlsa := mustRR(t, "_25._tcp.mail.signed.test. 60 IN TLSA 3 1 1 "+digest)
		if err := k.Update(ctx, "signed.test", []dns.RR{tlsa}, nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, ctx, "TLSA via unbound", func() error {
			r, err := u.Query(ctx, "_25._tcp.mail.signed.test", dns.TypeTLSA)
			if err != nil {
				return err
			}
			if r.Rcode != dns.RcodeSuccess || !answerHas(r, dns.TypeTLSA, digest) {
				return fmt.Errorf("rcode %s, answer %v", dns.RcodeToString[r.Rcode], r.Answer)
			}
			if !r.AuthenticatedData {
				return errors.New("no AD bit")
			}
			return nil
		})
		// Remove it again: gone at the authoritative server.
		if err := k.Update(ctx, "signed.test", nil, []dns.RR{tlsa}); err != nil {
			t.Fatal(err)
		}
		r, err := Query(ctx, k.Addr, "_25._tcp.mail.signed.test", dns.TypeTLSA)
		if err != nil {
			t.Fatal(err)
		}
		if answerHas(r, dns.TypeTLSA, digest) {
			t.Fatalf("TLSA still served after removal: %v", r.Answer)
		}
	})

	t.Run("update without or with wrong TSIG refused", func(t *testing.T) {
		rr := mustRR(t, "intruder.signed.test. 60 IN TXT \"x\"")
		err := SendUpdate(ctx, k.Addr, "signed.test", nil, []dns.RR{rr}, nil)
		var rc *RcodeError
		if !errors.As(err, &rc) || (rc.Rcode != dns.RcodeNotAuth && rc.Rcode != dns.RcodeRefused) {
			t.Fatalf("unsigned update: err = %v, want NOTAUTH or REFUSED", err)
		}
		wrong := NewTSIGKey(k.Key.Name) // same name, other secret
		err = SendUpdate(ctx, k.Addr, "signed.test", &wrong, []dns.RR{rr}, nil)
		if !errors.As(err, &rc) || rc.Rcode != dns.RcodeNotAuth {
			t.Fatalf("wrong TSIG secret: err = %v, want NOTAUTH", err)
		}
		t.Logf("wrong key: %v", err)
		r, err := Query(ctx, k.Addr, "intruder.signed.test", dns.TypeTXT)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
			t.Fatalf("intruder record exists: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
		}
	})

	t.Run("unsigned zone is insecure", func(t *testing.T) {
		r, err := u.Query(ctx, "mail.plain.test", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeSuccess || !answerHas(r, dns.TypeA, "127.0.0.1") || r.AuthenticatedData {
			t.Fatalf("got rcode %s AD=%v %v, want NOERROR, no AD, the A record", dns.RcodeToString[r.Rcode], r.AuthenticatedData, r.Answer)
		}
	})

	t.Run("wrong DS is bogus", func(t *testing.T) {
		r, err := u.Query(ctx, "mail.bogus.test", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeServerFailure {
			t.Fatalf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
		}
	})

	t.Run("AddZone", func(t *testing.T) {
		if err := k.AddZone(ctx, Zone{Name: "added.test", Signed: true, Records: []string{"www A 127.0.0.2"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := k.DS(ctx, "added.test"); err != nil {
			t.Fatal(err)
		}
		r, err := Query(ctx, k.Addr, "www.added.test", dns.TypeA)
		if err != nil || !answerHas(r, dns.TypeA, "127.0.0.2") || !hasType(r.Answer, dns.TypeRRSIG) {
			t.Fatalf("www.added.test: %v %v", err, r)
		}
	})

	t.Run("nsupdate with BIND key file", func(t *testing.T) {
		nsupdate := Require(t, "nsupdate", "bind9-dnsutils")
		keyFile := filepath.Join(t.TempDir(), "tsig.key")
		if err := k.Key.WriteBINDKeyFile(keyFile); err != nil {
			t.Fatal(err)
		}
		host, port, _ := net.SplitHostPort(k.Addr)
		cmd := exec.CommandContext(ctx, nsupdate, "-k", keyFile)
		cmd.Stdin = strings.NewReader(fmt.Sprintf("server %s %s\nzone signed.test.\nupdate add ns-up.signed.test. 60 TXT \"ok\"\nsend\n", host, port))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nsupdate: %v: %s", err, out)
		}
		r, err := Query(ctx, k.Addr, "ns-up.signed.test", dns.TypeTXT)
		if err != nil || !answerHas(r, dns.TypeTXT, "ok") {
			t.Fatalf("TXT after nsupdate: %v %v", err, r)
		}
	})
}

func sameChain(got []*x509.Certificate, want ...[]byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("served %d certificates, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i].Raw, want[i]) {
			return fmt.Errorf("certificate %d differs (served %q)", i, got[i].Subject.CommonName)
		}
	}
	return nil
}

func TestPostfix(t *testing.T) {
	t.Parallel()
	Require(t, "postfix", "postfix")
	ctx := testCtx(t)
	c1 := MustChain(t, ChainOptions{})
	c2 := MustChain(t, ChainOptions{Reuse: c1, KeyType: RSA2048})
	pf := NewPostfix(t, PostfixConfig{KeyPEM: c1.Leaf.KeyPEM, ChainPEM: c1.FullChainPEM()})

	got, err := ServedChain(ctx, pf.Addr)
	if err != nil {
		t.Fatalf("STARTTLS: %v\n%s", err, pf.Log())
	}
	if err := sameChain(got, c1.Leaf.DER, c1.Intermediate.DER); err != nil {
		t.Fatal(err)
	}
	if _, err := got[0].Verify(x509.VerifyOptions{DNSName: "mail.example.test", Roots: c1.RootPool(), Intermediates: x509Pool(got[1:])}); err != nil {
		t.Fatalf("served chain does not verify: %v", err)
	}

	if err := pf.SwapCertificate(c2.Leaf.KeyPEM, c2.FullChainPEM()); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "new leaf served after reload", func() error {
		got, err := ServedChain(ctx, pf.Addr)
		if err != nil {
			return err
		}
		return sameChain(got, c2.Leaf.DER, c2.Intermediate.DER)
	})

	if err := pf.Stop(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", pf.Addr, time.Second); err == nil {
		c.Close()
		t.Fatal("port still open after Stop")
	}
}

func x509Pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestPostfixNoSTARTTLS(t *testing.T) {
	t.Parallel()
	Require(t, "postfix", "postfix")
	ctx := testCtx(t)
	pf := NewPostfix(t, PostfixConfig{NoSTARTTLS: true})
	ok, err := OffersSTARTTLS(ctx, pf.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Fatal("EHLO offers STARTTLS in NoSTARTTLS mode")
	}
}

func TestSMTPServer(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c1 := MustChain(t, ChainOptions{})
	c2 := MustChain(t, ChainOptions{})
	cert := c1.TLSCertificate()
	s := NewSMTPServer(t, SMTPStartTLS, &cert)

	got, err := ServedChain(ctx, s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameChain(got, c1.Leaf.DER, c1.Intermediate.DER); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // swap back and forth
		want := []*Chain{c2, c1}[i%2]
		s.SetCertificate(want.TLSCertificate())
		got, err := ServedChain(ctx, s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := sameChain(got, want.Leaf.DER, want.Intermediate.DER); err != nil {
			t.Fatalf("after swap %d: %v", i, err)
		}
	}

	plain := NewSMTPServer(t, SMTPNoStartTLS, nil)
	if ok, err := OffersSTARTTLS(ctx, plain.Addr); err != nil || ok {
		t.Fatalf("no-STARTTLS server: offers=%v err=%v", ok, err)
	}

	dead := NewSMTPServer(t, SMTPDead, nil)
	conn, err := net.Dial("tcp", dead.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := conn.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dead host: read %d bytes, err %v; want a timeout", n, err)
	}
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPosttlsFinger(t *testing.T) {
	t.Parallel()
	RequirePosttlsFinger(t)
	Require(t, "postfix", "postfix")
	ctx := testCtx(t)
	ch := MustChain(t, ChainOptions{DNSNames: []string{"good.finger.test"}})
	pf := NewPostfix(t, PostfixConfig{KeyPEM: ch.Leaf.KeyPEM, ChainPEM: ch.FullChainPEM()})
	k := NewKnot(t, KnotConfig{Zones: []Zone{{Name: "finger.test", Signed: true, Records: []string{
		"good A 127.0.0.1",
		fmt.Sprintf("_%d._tcp.good TLSA 3 1 1 %s", pf.Port, ch.Leaf.TLSA311()),
		"bad A 127.0.0.1",
		fmt.Sprintf("_%d._tcp.bad TLSA 3 1 1 %s", pf.Port, strings.Repeat("00", 32)),
	}}}})
	ds, err := k.DS(ctx, "finger.test")
	if err != nil {
		t.Fatal(err)
	}
	u := NewUnbound(t, UnboundConfig{Port53: true, Stubs: []StubZone{{Name: "finger.test", Addr: k.Addr, TrustAnchor: ds}}})

	out, err := PosttlsFinger(ctx, u.Port53IP, "good.finger.test", pf.Port)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Verified TLS connection") {
		t.Fatalf("correct 3 1 1 TLSA not verified:\n%s", out)
	}
	out, err = PosttlsFinger(ctx, u.Port53IP, "bad.finger.test", pf.Port)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "Verified TLS connection") || !strings.Contains(out, "no matching DANE TLSA records") {
		t.Fatalf("wrong digest: want no verification and a TLSA mismatch, got:\n%s", out)
	}
}

// recordingTB records Fatalf/Skipf instead of stopping the goroutine.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper()                      {}
func (r *recordingTB) Fatalf(f string, args ...any) { r.fatal = fmt.Sprintf(f, args...) }
func (r *recordingTB) Skipf(f string, args ...any)  { r.skip = fmt.Sprintf(f, args...) }
func (r *recordingTB) Fatal(args ...any)            { r.fatal = fmt.Sprint(args...) }
func (r *recordingTB) Skip(args ...any)             { r.skip = fmt.Sprint(args...) }

func TestRequire(t *testing.T) {
	const missing = "testbed-no-such-binary-x9"
	t.Run("CI fails", func(t *testing.T) {
		t.Setenv("CI", "true")
		r := &recordingTB{TB: t}
		Require(r, missing, "some-pkg")
		if r.fatal == "" || r.skip != "" {
			t.Fatalf("under CI=true: fatal=%q skip=%q, want a failure", r.fatal, r.skip)
		}
	})
	t.Run("otherwise skips with apt-get line", func(t *testing.T) {
		t.Setenv("CI", "")
		r := &recordingTB{TB: t}
		Require(r, missing, "some-pkg")
		if r.fatal != "" || !strings.Contains(r.skip, "apt-get install -y --no-install-recommends some-pkg") {
			t.Fatalf("fatal=%q skip=%q, want a skip naming the apt-get line", r.fatal, r.skip)
		}
	})
	t.Run("finds sbin binaries", func(t *testing.T) {
		if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
			t.Skip("no /usr/sbin/postfix")
		}
		t.Setenv("PATH", "/nonexistent")
		if p, err := Lookup("postfix"); err != nil || p != "/usr/sbin/postfix" {
			t.Fatalf("Lookup(postfix) = %q, %v", p, err)
		}
	})
}

// TestPostfixKillMaster: the last-resort stop finds the instance's master by
// its pid file and takes every daemon down with it.
func TestPostfixKillMaster(t *testing.T) {
	chain := MustChain(t, ChainOptions{})
	pf := NewPostfix(t, PostfixConfig{KeyPEM: chain.Leaf.KeyPEM, ChainPEM: chain.FullChainPEM()})
	if _, err := os.Stat(filepath.Join(pf.Dir, "spool", "pid", "master.pid")); err != nil {
		t.Fatalf("master.pid: %v", err)
	}
	pf.killMaster()
	select {
	case <-pf.p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("start-fg still running after its master was killed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := poll(ctx, nil, func(ctx context.Context) error {
		c, err := net.DialTimeout("tcp", pf.Addr, time.Second)
		if err != nil {
			return nil
		}
		c.Close()
		return fmt.Errorf("%s still accepts connections", pf.Addr)
	}); err != nil {
		t.Fatal(err)
	}
}
