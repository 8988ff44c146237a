package deploy

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/safefile"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
)

// material returns c's key and full chain.
func material(c *testbed.Chain) rollover.Material {
	return rollover.Material{KeyPEM: c.Leaf.KeyPEM, ChainPEM: c.FullChainPEM()}
}

// fakeServer simulates a server: the reload command (a shell line, used
// only in tests) copies the chain file to loaded.pem, and the prober serves
// what loaded.pem holds at each of n addresses.
type fakeServer struct {
	dir, key, chain, loaded, log string
}

func newFakeServer(t *testing.T, initial *testbed.Chain) *fakeServer {
	t.Helper()
	dir := t.TempDir()
	s := &fakeServer{dir: dir, key: filepath.Join(dir, "key.pem"), chain: filepath.Join(dir, "fullchain.pem"),
		loaded: filepath.Join(dir, "loaded.pem"), log: filepath.Join(dir, "reloads")}
	write(t, s.key, initial.Leaf.KeyPEM, 0o600)
	write(t, s.chain, initial.FullChainPEM(), 0o644)
	write(t, s.loaded, initial.FullChainPEM(), 0o644)
	return s
}

// reloadCmd copies the chain to loaded.pem and logs the call; with fail set
// it logs, prints a message and exits 3.
func (s *fakeServer) reloadCmd(fail bool) []string {
	line := "echo reload >> " + s.log + " && cp " + s.chain + " " + s.loaded
	if fail {
		line = "echo reload >> " + s.log + "; echo 'fatal: bad config'; exit 3"
	}
	return []string{"sh", "-c", line}
}

func (s *fakeServer) reloads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(s.log)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "reload\n")
}

func (s *fakeServer) served(n int) Prober {
	return proberFunc(func(ctx context.Context) ([][]*x509.Certificate, error) {
		b, err := os.ReadFile(s.loaded)
		if err != nil {
			return nil, err
		}
		var chain []*x509.Certificate
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, err
			}
			chain = append(chain, c)
		}
		out := make([][]*x509.Certificate, n)
		for i := range out {
			out[i] = chain
		}
		return out, nil
	})
}

func (s *fakeServer) config(p Prober, fail bool) Config {
	return Config{Host: "mail.example.test.", Port: 25, KeyFile: s.key, ChainFile: s.chain,
		Reload: s.reloadCmd(fail), Prober: p, ProbeTimeout: 2 * time.Second, ProbeInterval: 20 * time.Millisecond}
}

type proberFunc func(ctx context.Context) ([][]*x509.Certificate, error)

func (f proberFunc) Served(ctx context.Context) ([][]*x509.Certificate, error) { return f(ctx) }

func write(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func mustNew(t *testing.T, cfg Config) *FileDeployer {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// assertFiles checks that the key and chain files hold exactly key and chain.
func assertFiles(t *testing.T, keyPath, chainPath string, key, chain []byte) {
	t.Helper()
	if got := readFile(t, keyPath); !bytes.Equal(got, key) {
		t.Errorf("%s:\n%s\nwant\n%s", keyPath, got, key)
	}
	if got := readFile(t, chainPath); !bytes.Equal(got, chain) {
		t.Errorf("%s differs from the expected chain", chainPath)
	}
}

// noTempFiles checks that no temporary file was left in dir.
func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if safefile.IsTemp(e.Name()) {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestDeploySuccess(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	// Loose modes on the old files: the configured modes must win.
	write(t, s.chain, old.FullChainPEM(), 0o600)
	d := mustNew(t, s.config(s.served(2), false))
	if err := d.Deploy(context.Background(), material(renewed), rollover.Material{}); err != nil {
		t.Fatal(err)
	}
	assertFiles(t, s.key, s.chain, renewed.Leaf.KeyPEM, renewed.FullChainPEM())
	if m := mode(t, s.key); m != 0o600 {
		t.Errorf("key mode %v", m)
	}
	if m := mode(t, s.chain); m != 0o644 {
		t.Errorf("chain mode %v", m)
	}
	if n := s.reloads(t); n != 1 {
		t.Errorf("%d reloads, want 1", n)
	}
	// The previous content is kept next to the files.
	assertFiles(t, s.key+backupSuffix, s.chain+backupSuffix, old.Leaf.KeyPEM, old.FullChainPEM())
	if m := mode(t, s.key+backupSuffix); m != 0o600 {
		t.Errorf("key backup mode %v", m)
	}
	noTempFiles(t, s.dir)
	chains, err := d.Served(context.Background())
	if err != nil || len(chains) != 2 || !bytes.Equal(chains[1][0].Raw, renewed.Leaf.DER) {
		t.Fatalf("Served: %v, %v", chains, err)
	}
}

func TestDeployInvalidMaterial(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	good := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	other := testbed.MustChain(t, testbed.ChainOptions{})
	expired := testbed.MustChain(t, testbed.ChainOptions{Reuse: old,
		NotBefore: time.Now().Add(-100 * 24 * time.Hour), NotAfter: time.Now().Add(-10 * 24 * time.Hour)})
	future := testbed.MustChain(t, testbed.ChainOptions{Reuse: old,
		NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour)})
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	legacyEnc := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}})
	cases := []struct {
		name, want string
		m          rollover.Material
	}{
		{"garbage key", "not a PEM private key", rollover.Material{KeyPEM: []byte("garbage\n"), ChainPEM: good.FullChainPEM()}},
		{"garbage chain", "no PEM certificate", rollover.Material{KeyPEM: good.Leaf.KeyPEM, ChainPEM: []byte("\x00\x01garbage")}},
		{"empty", "not a PEM private key", rollover.Material{}},
		{"corrupt key", "does not parse", rollover.Material{KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("xx")}), ChainPEM: good.FullChainPEM()}},
		{"corrupt certificate", "certificate 2 of the chain does not parse", rollover.Material{KeyPEM: good.Leaf.KeyPEM, ChainPEM: cat(good.Leaf.PEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("xx")}))}},
		{"encrypted key", "encrypted", rollover.Material{KeyPEM: encrypted, ChainPEM: good.FullChainPEM()}},
		{"legacy encrypted key", "encrypted", rollover.Material{KeyPEM: legacyEnc, ChainPEM: good.FullChainPEM()}},
		{"two keys", "2 private keys", rollover.Material{KeyPEM: cat(good.Leaf.KeyPEM, other.Leaf.KeyPEM), ChainPEM: good.FullChainPEM()}},
		{"key mismatch", "does not match the leaf", rollover.Material{KeyPEM: other.Leaf.KeyPEM, ChainPEM: good.FullChainPEM()}},
		{"private key in chain", "contains a private key", rollover.Material{KeyPEM: good.Leaf.KeyPEM, ChainPEM: cat(good.FullChainPEM(), good.Leaf.KeyPEM)}},
		{"expired leaf", "expired", material(expired)},
		{"leaf not yet valid", "not valid before", material(future)},
		{"wrong order", "belongs to certificate 2", rollover.Material{KeyPEM: good.Leaf.KeyPEM, ChainPEM: cat(good.Intermediate.PEM, good.Leaf.PEM)}},
		{"leaf only", "only the leaf", rollover.Material{KeyPEM: good.Leaf.KeyPEM, ChainPEM: good.Leaf.PEM}},
		{"wrong intermediate", "is not issued by certificate 2", rollover.Material{KeyPEM: good.Leaf.KeyPEM, ChainPEM: cat(good.Leaf.PEM, other.Intermediate.PEM)}},
		{"root before intermediate", "is not issued by certificate 2", rollover.Material{KeyPEM: good.Leaf.KeyPEM, ChainPEM: cat(good.Leaf.PEM, good.Root.PEM, good.Intermediate.PEM)}},
		{"other PEM block", "\"X509 CRL\" PEM block", rollover.Material{KeyPEM: good.Leaf.KeyPEM, ChainPEM: cat(good.FullChainPEM(), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{1}}))}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newFakeServer(t, old)
			var probes atomic.Int32
			p := proberFunc(func(ctx context.Context) ([][]*x509.Certificate, error) {
				probes.Add(1)
				return nil, errors.New("not called")
			})
			d := mustNew(t, s.config(p, false))
			err := d.Deploy(context.Background(), tc.m, rollover.Material{})
			if !errors.Is(err, ErrInvalidMaterial) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalidMaterial with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("message is not one line: %q", err)
			}
			t.Log(err)
			assertFiles(t, s.key, s.chain, old.Leaf.KeyPEM, old.FullChainPEM())
			if n := s.reloads(t); n != 0 || probes.Load() != 0 {
				t.Errorf("%d reloads, %d probes; want none", n, probes.Load())
			}
			if _, err := os.Stat(s.key + backupSuffix); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("backup written for refused material: %v", err)
			}
			noTempFiles(t, s.dir)
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	t.Parallel()
	c := testbed.MustChain(t, testbed.ChainOptions{KeyType: testbed.RSA2048})
	// Full chain with the root, junk text between blocks (openssl output),
	// and a PKCS#1 key.
	withRoot := bytes.Join([][]byte{[]byte("subject=CN = mail\n"), c.FullChainPEM(), c.Root.PEM}, nil)
	p, err := Validate(rollover.Material{KeyPEM: c.Leaf.KeyPEM, ChainPEM: withRoot}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Chain) != 3 || !bytes.Equal(p.Leaf.Raw, c.Leaf.DER) {
		t.Fatalf("parsed %d certificates", len(p.Chain))
	}
}

func TestReloadFails(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	d := mustNew(t, s.config(s.served(1), true))
	err := d.Deploy(context.Background(), material(renewed), rollover.Material{})
	if !errors.Is(err, ErrReloadFailed) || !strings.Contains(err.Error(), "fatal: bad config") || !strings.Contains(err.Error(), "restored") {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	assertFiles(t, s.key, s.chain, old.Leaf.KeyPEM, old.FullChainPEM())
	if n := s.reloads(t); n != 2 {
		t.Errorf("%d reloads, want 2 (deploy, restore)", n)
	}
	noTempFiles(t, s.dir)
}

func TestReloadTimeout(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	cfg := s.config(s.served(1), false)
	cfg.Reload = []string{"sleep", "30"}
	cfg.ReloadTimeout = 200 * time.Millisecond
	d := mustNew(t, cfg)
	start := time.Now()
	err := d.Deploy(context.Background(), material(renewed), rollover.Material{})
	if !errors.Is(err, ErrReloadFailed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %s", el)
	}
	assertFiles(t, s.key, s.chain, old.Leaf.KeyPEM, old.FullChainPEM())
}

func TestNotServed(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	// A second address keeps serving the old chain.
	oldChain := []*x509.Certificate{old.Leaf.Cert, old.Intermediate.Cert}
	var probes atomic.Int32
	p := proberFunc(func(ctx context.Context) ([][]*x509.Certificate, error) {
		probes.Add(1)
		chains, err := s.served(1).Served(ctx)
		return append(chains, oldChain), err
	})
	cfg := s.config(p, false)
	cfg.ProbeTimeout = 300 * time.Millisecond
	cfg.ProbeInterval = 50 * time.Millisecond
	d := mustNew(t, cfg)
	start := time.Now()
	err := d.Deploy(context.Background(), material(renewed), rollover.Material{})
	el := time.Since(start)
	if !errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), "1 of 2 addresses") || !strings.Contains(err.Error(), "restored") {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	if el < 300*time.Millisecond || el > 3*time.Second {
		t.Errorf("took %s, want about the probe timeout", el)
	}
	if n := probes.Load(); n < 3 || n > 10 {
		t.Errorf("%d probes in 300ms at a 50ms interval", n)
	}
	assertFiles(t, s.key, s.chain, old.Leaf.KeyPEM, old.FullChainPEM())
	if n := s.reloads(t); n != 2 {
		t.Errorf("%d reloads, want 2", n)
	}
	// The restore reload made the fake server load the old chain again.
	assertFiles(t, s.key, s.loaded, old.Leaf.KeyPEM, old.FullChainPEM())
}

// TestPoll drives waitServed with scripted prober answers.
func TestPoll(t *testing.T) {
	t.Parallel()
	oldC := testbed.MustChain(t, testbed.ChainOptions{})
	newC := testbed.MustChain(t, testbed.ChainOptions{Reuse: oldC})
	oldChain := []*x509.Certificate{oldC.Leaf.Cert, oldC.Intermediate.Cert}
	newChain := []*x509.Certificate{newC.Leaf.Cert, newC.Intermediate.Cert}
	type answer struct {
		chains [][]*x509.Certificate
		err    error
	}
	probeErr := errors.New("connection refused")
	cases := []struct {
		name    string
		script  []answer // the last answer repeats
		wantErr string   // "" for success
		minCall int
	}{
		{"immediately", []answer{{chains: [][]*x509.Certificate{newChain, newChain}}}, "", 1},
		{"after errors and old chains", []answer{{err: probeErr}, {err: probeErr}, {chains: [][]*x509.Certificate{oldChain}},
			{chains: [][]*x509.Certificate{newChain, oldChain}}, {chains: [][]*x509.Certificate{newChain, newChain}}}, "", 5},
		{"never", []answer{{chains: [][]*x509.Certificate{oldChain}}}, "1 of 1 addresses serve another leaf", 3},
		{"always failing", []answer{{err: probeErr}}, "probe failed: connection refused", 3},
		{"no addresses", []answer{{chains: nil}}, "no address probed", 3},
		{"empty chain", []answer{{chains: [][]*x509.Certificate{newChain, {}}}}, "an empty chain", 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			calls := 0
			var last time.Time
			var minGap time.Duration = time.Hour
			p := proberFunc(func(ctx context.Context) ([][]*x509.Certificate, error) {
				mu.Lock()
				defer mu.Unlock()
				now := time.Now()
				if calls > 0 && now.Sub(last) < minGap {
					minGap = now.Sub(last)
				}
				last = now
				a := tc.script[min(calls, len(tc.script)-1)]
				calls++
				return a.chains, a.err
			})
			d := mustNew(t, Config{KeyFile: "k", ChainFile: "c", Prober: p,
				ProbeTimeout: 400 * time.Millisecond, ProbeInterval: 40 * time.Millisecond})
			err := d.waitServed(context.Background(), newC.Leaf.Cert)
			mu.Lock()
			defer mu.Unlock()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if !errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want ErrNotServed with %q", err, tc.wantErr)
			}
			if calls < tc.minCall {
				t.Errorf("%d calls, want at least %d", calls, tc.minCall)
			}
			if calls > 1 && minGap < 30*time.Millisecond {
				t.Errorf("probes %s apart, interval 40ms", minGap)
			}
		})
	}
}

// TestCancelMidProbe cancels the context while waiting for the new chain:
// the files are restored and the reload re-run although ctx is done.
func TestCancelMidProbe(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := proberFunc(func(pctx context.Context) ([][]*x509.Certificate, error) {
		cancel()
		<-pctx.Done()
		return nil, pctx.Err()
	})
	cfg := s.config(p, false)
	cfg.ProbeTimeout = time.Minute
	d := mustNew(t, cfg)
	start := time.Now()
	err := d.Deploy(ctx, material(renewed), rollover.Material{})
	if !errors.Is(err, ErrNotServed) || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "restored") {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %s", time.Since(start))
	}
	assertFiles(t, s.key, s.chain, old.Leaf.KeyPEM, old.FullChainPEM())
	if n := s.reloads(t); n != 2 {
		t.Errorf("%d reloads, want 2", n)
	}
	assertFiles(t, s.key, s.loaded, old.Leaf.KeyPEM, old.FullChainPEM())
}

func TestCancelledBeforeStart(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	d := mustNew(t, s.config(s.served(1), false))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Deploy(ctx, material(renewed), rollover.Material{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	assertFiles(t, s.key, s.chain, old.Leaf.KeyPEM, old.FullChainPEM())
	if n := s.reloads(t); n != 0 {
		t.Errorf("%d reloads", n)
	}
}

// TestCombinedFile: KeyFile == ChainFile gives one file, key then chain,
// with the key's mode, plus a separate leaf-only file.
func TestCombinedFile(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	combined := filepath.Join(s.dir, "combined.pem")
	write(t, combined, append(append([]byte{}, old.Leaf.KeyPEM...), old.FullChainPEM()...), 0o600)
	leaf := filepath.Join(s.dir, "cert.pem")
	cfg := s.config(s.served(1), false)
	cfg.KeyFile, cfg.ChainFile, cfg.CertFile = combined, combined, leaf
	cfg.Reload = []string{"sh", "-c", "echo reload >> " + s.log + " && cp " + leaf + " " + s.loaded}
	d := mustNew(t, cfg)
	if err := d.Deploy(context.Background(), material(renewed), rollover.Material{}); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, renewed.Leaf.KeyPEM...), renewed.FullChainPEM()...)
	if got := readFile(t, combined); !bytes.Equal(got, want) {
		t.Errorf("combined file:\n%s", got)
	}
	if m := mode(t, combined); m != 0o600 {
		t.Errorf("combined mode %v", m)
	}
	if got := readFile(t, leaf); !bytes.Equal(got, renewed.Leaf.PEM) {
		t.Errorf("leaf file:\n%s", got)
	}
	if m := mode(t, leaf); m != 0o644 {
		t.Errorf("leaf mode %v", m)
	}
}

// TestFirstDeployRestoreRemoves: files that did not exist before are
// removed again when the deploy fails.
func TestFirstDeployRestoreRemoves(t *testing.T) {
	t.Parallel()
	c := testbed.MustChain(t, testbed.ChainOptions{})
	dir := t.TempDir()
	key, chain := filepath.Join(dir, "key.pem"), filepath.Join(dir, "chain.pem")
	d := mustNew(t, Config{KeyFile: key, ChainFile: chain, Reload: []string{"false"},
		Prober: proberFunc(func(context.Context) ([][]*x509.Certificate, error) { return nil, nil })})
	err := d.Deploy(context.Background(), material(c), rollover.Material{})
	if !errors.Is(err, ErrReloadFailed) {
		t.Fatalf("got %v", err)
	}
	for _, p := range []string{key, chain, key + backupSuffix} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it absent", p, err)
		}
	}
	noTempFiles(t, dir)
}

// TestSymlinkFollowed: a symlinked path keeps its link; the target changes.
func TestSymlinkFollowed(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	link := filepath.Join(s.dir, "live.pem")
	if err := os.Symlink("fullchain.pem", link); err != nil {
		t.Fatal(err)
	}
	cfg := s.config(s.served(1), false)
	cfg.ChainFile = link
	d := mustNew(t, cfg)
	if err := d.Deploy(context.Background(), material(renewed), rollover.Material{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link replaced: %v %v", fi.Mode(), err)
	}
	assertFiles(t, s.key, s.chain, renewed.Leaf.KeyPEM, renewed.FullChainPEM())
}

// TestOwner sets a configured owner and keeps the previous one otherwise.
func TestOwner(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testbed.RequireRoot(t, "chown")
	}
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	if err := os.Chown(s.chain, 2, 2); err != nil {
		t.Fatal(err)
	}
	cfg := s.config(s.served(1), false)
	cfg.Owner, cfg.Group = "1", "root"
	d := mustNew(t, cfg)
	if err := d.Deploy(context.Background(), material(renewed), rollover.Material{}); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) (uint32, uint32) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return st.Uid, st.Gid
	}
	if u, g := owner(s.key); u != 1 || g != 0 {
		t.Errorf("key owner %d:%d, want 1:0", u, g)
	}
	if u, g := owner(s.chain + backupSuffix); u != 2 || g != 2 {
		t.Errorf("backup owner %d:%d, want the previous 2:2", u, g)
	}
	// Without a configured owner the previous one is kept.
	cfg.Owner, cfg.Group = "", ""
	d = mustNew(t, cfg)
	if err := os.Chown(s.chain, 3, 3); err != nil {
		t.Fatal(err)
	}
	if err := d.Deploy(context.Background(), material(old), rollover.Material{}); err != nil {
		t.Fatal(err)
	}
	if u, g := owner(s.chain); u != 3 || g != 3 {
		t.Errorf("chain owner %d:%d, want the previous 3:3", u, g)
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	p := proberFunc(func(context.Context) ([][]*x509.Certificate, error) { return nil, nil })
	for _, cfg := range []Config{
		{ChainFile: "c", Prober: p},
		{KeyFile: "k", Prober: p},
		{KeyFile: "k", ChainFile: "c"},
		{KeyFile: "k", ChainFile: "c", CertFile: "c", Prober: p},
		{KeyFile: "k", ChainFile: "c", Prober: p, Reload: []string{""}},
		{KeyFile: "k", ChainFile: "c", Prober: p, KeyMode: 0o644},
		{KeyFile: "k", ChainFile: "c", Prober: p, Owner: "no-such-user-tlsactl"},
		{KeyFile: "k", ChainFile: "c", Prober: p, Group: "no-such-group-tlsactl"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	d, err := New(Config{KeyFile: "k", ChainFile: "c", Prober: p})
	if err != nil {
		t.Fatal(err)
	}
	c := d.Config()
	if c.KeyMode != 0o600 || c.CertMode != 0o644 || c.ReloadTimeout != time.Minute || c.ProbeTimeout != 2*time.Minute || c.ProbeInterval != 500*time.Millisecond {
		t.Errorf("defaults: %+v", c)
	}
}

func TestBoundedBuffer(t *testing.T) {
	t.Parallel()
	b := &boundedBuffer{max: 10}
	b.Write([]byte("line one\nline two\n"))
	b.Write([]byte("more"))
	if got := b.String(); got != "line one | l …" {
		t.Errorf("got %q", got)
	}
}
