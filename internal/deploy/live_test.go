package deploy

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
)

// livePostfix is a private Postfix whose smtpd reads key and chain from
// files in a directory of the test (smtpd_tls_chain_files in Extra comes
// after the testbed's own line in main.cf, and the last entry wins).
type livePostfix struct {
	pf         *testbed.Postfix
	postfix    string
	dir        string
	key, chain string
	probe      AddrProber
}

func startLivePostfix(t *testing.T, initial *testbed.Chain, extra ...string) *livePostfix {
	t.Helper()
	bin := testbed.Require(t, "postfix", "postfix")
	testbed.RequireRoot(t, "a private Postfix instance")
	dir := t.TempDir()
	l := &livePostfix{postfix: bin, dir: dir, key: filepath.Join(dir, "key.pem"), chain: filepath.Join(dir, "fullchain.pem")}
	write(t, l.key, initial.Leaf.KeyPEM, 0o600)
	write(t, l.chain, initial.FullChainPEM(), 0o644)
	l.pf = testbed.NewPostfix(t, testbed.PostfixConfig{
		KeyPEM: initial.Leaf.KeyPEM, ChainPEM: initial.FullChainPEM(),
		Extra: append([]string{fmt.Sprintf("smtpd_tls_chain_files = %s, %s", l.key, l.chain)}, extra...),
	})
	l.probe = AddrProber{Addrs: []string{l.pf.Addr}, ServerName: "mail.example.test", Timeout: 5 * time.Second}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfix log:\n%s", l.pf.Log())
		}
	})
	l.waitServed(t, initial)
	return l
}

// reload is the real reload command of the instance.
func (l *livePostfix) reload() []string { return []string{l.postfix, "-c", l.pf.Dir, "reload"} }

func (l *livePostfix) config(reload []string) Config {
	return Config{Host: "mail.example.test", Port: l.pf.Port, KeyFile: l.key, ChainFile: l.chain,
		Reload: reload, ReloadTimeout: 30 * time.Second, Prober: l.probe,
		ProbeTimeout: 30 * time.Second, ProbeInterval: 100 * time.Millisecond}
}

// waitServed waits until Postfix serves c's full chain (leaf and
// intermediate, DER-equal).
func (l *livePostfix) waitServed(t *testing.T, c *testbed.Chain) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last string
	for {
		chains, err := l.probe.Served(ctx)
		if err == nil && len(chains) == 1 && len(chains[0]) == 2 &&
			bytes.Equal(chains[0][0].Raw, c.Leaf.DER) && bytes.Equal(chains[0][1].Raw, c.Intermediate.DER) {
			return
		}
		last = fmt.Sprintf("%d chains, %v", len(chains), err)
		select {
		case <-ctx.Done():
			t.Fatalf("Postfix at %s does not serve the expected chain (last: %s)", l.pf.Addr, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// assertServesNow probes once: Postfix serves c's leaf right now.
func (l *livePostfix) assertServesNow(t *testing.T, c *testbed.Chain) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	chains, err := l.probe.Served(ctx)
	if err != nil || len(chains) != 1 || !bytes.Equal(chains[0][0].Raw, c.Leaf.DER) {
		t.Fatalf("Postfix does not serve the expected leaf: %v", err)
	}
}

func TestLiveDeployRenewed(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	l := startLivePostfix(t, old)
	d := mustNew(t, l.config(l.reload()))
	start := time.Now()
	if err := d.Deploy(context.Background(), material(renewed), rollover.Material{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("deployed and served in %s", time.Since(start).Round(time.Millisecond))
	// Deploy returned only once the new leaf was served; the whole chain is.
	l.assertServesNow(t, renewed)
	l.waitServed(t, renewed)
	assertFiles(t, l.key, l.chain, renewed.Leaf.KeyPEM, renewed.FullChainPEM())
	if m := mode(t, l.key); m != 0o600 {
		t.Errorf("key mode %v", m)
	}
	if m := mode(t, l.chain); m != 0o644 {
		t.Errorf("chain mode %v", m)
	}
	chains, err := d.Served(context.Background())
	if err != nil || len(chains) != 1 || !bytes.Equal(chains[0][0].Raw, renewed.Leaf.DER) {
		t.Fatalf("Served: %v", err)
	}

	// A second renewal with a new CA (CA migration) and an RSA key.
	migrated := testbed.MustChain(t, testbed.ChainOptions{KeyType: testbed.RSA2048})
	if err := d.Deploy(context.Background(), material(migrated), rollover.Material{}); err != nil {
		t.Fatal(err)
	}
	l.waitServed(t, migrated)
}

func TestLiveInvalidMaterial(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	good := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	other := testbed.MustChain(t, testbed.ChainOptions{})
	expired := testbed.MustChain(t, testbed.ChainOptions{Reuse: old,
		NotBefore: time.Now().Add(-100 * 24 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	l := startLivePostfix(t, old)
	log := filepath.Join(l.dir, "reloads")
	reload := []string{"sh", "-c", "echo reload >> " + log + " && exec " + strings.Join(l.reload(), " ")}
	d := mustNew(t, l.config(reload))
	for _, tc := range []struct {
		name string
		m    rollover.Material
	}{
		{"key mismatch", rollover.Material{KeyPEM: other.Leaf.KeyPEM, ChainPEM: good.FullChainPEM()}},
		{"expired leaf", material(expired)},
		{"garbage", rollover.Material{KeyPEM: []byte("garbage"), ChainPEM: []byte("more garbage")}},
		{"chain does not verify", rollover.Material{KeyPEM: good.Leaf.KeyPEM, ChainPEM: append(append([]byte{}, good.Leaf.PEM...), other.Intermediate.PEM...)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := d.Deploy(context.Background(), tc.m, rollover.Material{})
			if !errors.Is(err, ErrInvalidMaterial) {
				t.Fatalf("got %v, want ErrInvalidMaterial", err)
			}
			assertFiles(t, l.key, l.chain, old.Leaf.KeyPEM, old.FullChainPEM())
			if _, err := os.Stat(log); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the reload command ran: %v", err)
			}
			l.assertServesNow(t, old)
		})
	}
}

func TestLiveReloadFails(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	l := startLivePostfix(t, old)
	d := mustNew(t, l.config([]string{"false"}))
	err := d.Deploy(context.Background(), material(renewed), rollover.Material{})
	if !errors.Is(err, ErrReloadFailed) || !strings.Contains(err.Error(), "restored") {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	assertFiles(t, l.key, l.chain, old.Leaf.KeyPEM, old.FullChainPEM())
	l.assertServesNow(t, old)
}

// TestLiveNotServed: the "reload" command does nothing, so Postfix keeps
// serving the old chain. One smtpd process at most (default_process_limit),
// so no fresh smtpd picks up the new files on its own.
func TestLiveNotServed(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	l := startLivePostfix(t, old, "default_process_limit = 1", "max_idle = 3600s", "max_use = 10000")
	cfg := l.config([]string{"true"})
	cfg.ProbeTimeout = 1500 * time.Millisecond
	d := mustNew(t, cfg)
	start := time.Now()
	err := d.Deploy(context.Background(), material(renewed), rollover.Material{})
	if !errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), "restored") {
		t.Fatalf("got %v", err)
	}
	if el := time.Since(start); el < cfg.ProbeTimeout || el > 15*time.Second {
		t.Errorf("took %s with ProbeTimeout %s", el, cfg.ProbeTimeout)
	}
	t.Log(err)
	assertFiles(t, l.key, l.chain, old.Leaf.KeyPEM, old.FullChainPEM())
	l.assertServesNow(t, old)
}

// cancelWhenServed cancels the deploy's context as soon as the new leaf is
// served, i.e. in the middle of the probe loop after Postfix reloaded.
type cancelWhenServed struct {
	inner  Prober
	leaf   []byte
	cancel context.CancelFunc
}

func (p *cancelWhenServed) Served(ctx context.Context) ([][]*x509.Certificate, error) {
	chains, err := p.inner.Served(ctx)
	if err == nil && len(chains) > 0 && bytes.Equal(chains[0][0].Raw, p.leaf) {
		p.cancel()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return chains, err
}

func TestLiveCancelMidProbe(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	l := startLivePostfix(t, old)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := l.config(l.reload())
	cfg.Prober = &cancelWhenServed{inner: l.probe, leaf: renewed.Leaf.DER, cancel: cancel}
	d := mustNew(t, cfg)
	err := d.Deploy(ctx, material(renewed), rollover.Material{})
	if !errors.Is(err, ErrNotServed) || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "restored and the server reloaded") {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	assertFiles(t, l.key, l.chain, old.Leaf.KeyPEM, old.FullChainPEM())
	// Postfix served the new chain; the restore reload (run although ctx
	// was cancelled) brings the old one back.
	l.waitServed(t, old)
}

// TestLiveResolverProber finds the Postfix's address through a validating
// Unbound in front of a signed Knot zone.
func TestLiveResolverProber(t *testing.T) {
	t.Parallel()
	testbed.Require(t, "knotd", "knot")
	testbed.Require(t, "keymgr", "knot")
	testbed.Require(t, "unbound", "unbound")
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	l := startLivePostfix(t, old)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{
		{Name: "example.test", Signed: true, Records: []string{"mail A 127.0.0.1", "dead A 127.0.0.1", "dead A 127.0.0.2"}},
	}})
	ds, err := knot.DS(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	unbound := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: []testbed.StubZone{
		{Name: "example.test", Addr: knot.Addr, TrustAnchor: ds},
	}})
	res := &dnsx.Resolver{Addr: unbound.Addr, Timeout: 5 * time.Second}
	p := ResolverProber{Resolver: res, Host: "mail.example.test.", Port: l.pf.Port, Timeout: 5 * time.Second}
	cfg := l.config(l.reload())
	cfg.Prober = p
	d := mustNew(t, cfg)
	chains, err := d.Served(ctx)
	if err != nil || len(chains) != 1 || !bytes.Equal(chains[0][0].Raw, old.Leaf.DER) {
		t.Fatalf("Served before: %d chains, %v", len(chains), err)
	}
	if err := d.Deploy(ctx, material(renewed), rollover.Material{}); err != nil {
		t.Fatal(err)
	}
	l.assertServesNow(t, renewed)

	// An address that does not answer is an error, and so is a name
	// without addresses.
	if _, err := (ResolverProber{Resolver: res, Host: "dead.example.test", Port: l.pf.Port, Timeout: 2 * time.Second}).Served(ctx); err == nil || !strings.Contains(err.Error(), "127.0.0.2") {
		t.Errorf("dead address: %v", err)
	}
	if _, err := (ResolverProber{Resolver: res, Host: "nx.example.test", Port: l.pf.Port}).Served(ctx); !errors.Is(err, dnsx.ErrNXDomain) {
		t.Errorf("NXDOMAIN: %v", err)
	}
}
