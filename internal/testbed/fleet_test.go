package testbed

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFileSMTPServer: the server serves its files, ignores new files until
// the reload command runs, and keeps the old certificate when a reload
// cannot load the files (the command then exits 1).
func TestFileSMTPServer(t *testing.T) {
	t.Parallel()
	RequireRoot(t, "port 25 on 127.25.x.y")
	ctx := testCtx(t)
	ips, err := FleetAddrs(2, 25)
	if err != nil {
		t.Fatal(err)
	}
	c1 := MustChain(t, ChainOptions{DNSNames: []string{"mx1.fleet.test"}})
	c2 := MustChain(t, ChainOptions{DNSNames: []string{"mx1.fleet.test"}})
	dir := t.TempDir()
	key, chain := filepath.Join(dir, "key.pem"), filepath.Join(dir, "fullchain.pem")
	write := func(k, c []byte) {
		t.Helper()
		if err := os.WriteFile(key, k, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(chain, c, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(c1.Leaf.KeyPEM, c1.FullChainPEM())
	s := NewFileSMTPServer(t, ips[1]+":25", "mx1.fleet.test", key, chain)
	if s.Addr != ips[1]+":25" || !strings.HasPrefix(s.ControlAddr, ips[1]+":") {
		t.Fatalf("addresses %s, %s", s.Addr, s.ControlAddr)
	}
	serves := func(what string, c *Chain) {
		t.Helper()
		got, err := ServedChain(ctx, s.Addr)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := sameChain(got, c.Leaf.DER, c.Intermediate.DER); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	serves("at start", c1)
	write(c2.Leaf.KeyPEM, c2.FullChainPEM())
	serves("new files, no reload", c1)
	argv := s.ReloadCommand()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reload command: %v: %s", err, out)
	}
	serves("after the reload", c2)
	if s.Reloads() != 1 {
		t.Errorf("reloads %d, want 1", s.Reloads())
	}
	write(c1.Leaf.KeyPEM, c2.FullChainPEM()) // key and chain do not match
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "reload refused") {
		t.Fatalf("reload of mismatched files: %v: %s", err, out)
	}
	serves("after the refused reload", c2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ServedChain(ctx, s.Addr); err == nil {
		t.Error("still serving after Close")
	}
}

// TestPostfixListen: a Postfix moved to its own address and port 25 serves
// there, and no longer on its start port.
func TestPostfixListen(t *testing.T) {
	t.Parallel()
	Require(t, "postfix", "postfix")
	ctx := testCtx(t)
	ips, err := FleetAddrs(1, 25)
	if err != nil {
		t.Fatal(err)
	}
	c := MustChain(t, ChainOptions{})
	pf := NewPostfix(t, PostfixConfig{KeyPEM: c.Leaf.KeyPEM, ChainPEM: c.FullChainPEM()})
	old := pf.Addr
	if err := pf.Listen(ctx, ips[0], 25); err != nil {
		t.Fatal(err)
	}
	if pf.Addr != ips[0]+":25" || pf.Port != 25 {
		t.Fatalf("Addr %s Port %d", pf.Addr, pf.Port)
	}
	got, err := ServedChain(ctx, pf.Addr)
	if err != nil {
		t.Fatalf("STARTTLS at %s: %v\n%s", pf.Addr, err, pf.Log())
	}
	if err := sameChain(got, c.Leaf.DER, c.Intermediate.DER); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "the start port closed", func() error {
		if err := smtpBanner(ctx, old); err == nil {
			return os.ErrExist
		}
		return nil
	})
}
