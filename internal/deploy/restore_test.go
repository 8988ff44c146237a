package deploy

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
)

// crashLeft writes what a deploy of c leaves when the process dies between
// the renames and the reload: the new key and chain (and leaf) in the files,
// with the wrong modes, while the server still has the old chain loaded.
func crashLeft(t *testing.T, key, chain, leaf string, c *testbed.Chain) {
	t.Helper()
	if key == chain {
		write(t, key, append(append([]byte{}, c.Leaf.KeyPEM...), c.FullChainPEM()...), 0o640)
	} else {
		write(t, key, c.Leaf.KeyPEM, 0o640)
		write(t, chain, c.FullChainPEM(), 0o600)
	}
	if leaf != "" {
		write(t, leaf, c.Leaf.PEM, 0o600)
	}
}

// TestResumedDeployRestoresPreRollover: a deploy resumed after a crash
// (the files already hold the new certificate, the reload never ran) that
// fails puts back the material from before the rollover, passed as restore,
// byte for byte and with the configured modes, not what it found.
func TestResumedDeployRestoresPreRollover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		combined bool // KeyFile == ChainFile
		notServe bool // fail by the probe instead of the reload
	}{
		{name: "reload fails"},
		{name: "not served", notServe: true},
		{name: "combined file", combined: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			old := testbed.MustChain(t, testbed.ChainOptions{})
			renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
			s := newFakeServer(t, old)
			leaf := filepath.Join(s.dir, "cert.pem")
			cfg := s.config(s.served(1), !tc.notServe)
			cfg.CertFile = leaf
			// Files as an operator left them: text around the PEM blocks,
			// the root in the chain. A restore must give these exact bytes.
			oldKey := append([]byte("# key of mail.example.test\n"), old.Leaf.KeyPEM...)
			oldChain := bytes.Join([][]byte{[]byte("subject=CN = mail\n"), old.FullChainPEM(), old.Root.PEM, []byte("\n")}, nil)
			oldFile := append(append([]byte{}, oldKey...), oldChain...)
			if tc.combined {
				cfg.KeyFile, cfg.ChainFile = s.key, s.key
				write(t, s.key, oldFile, 0o600)
				// The fake server loads the chain from the combined file.
				cfg.Reload = []string{"sh", "-c", "echo reload >> " + s.log + "; exit 3"}
			} else {
				write(t, s.key, oldKey, 0o600)
				write(t, s.chain, oldChain, 0o644)
			}
			write(t, leaf, old.Leaf.PEM, 0o644)
			if tc.notServe {
				// A second address keeps serving the old chain.
				oldServed := []*x509.Certificate{old.Leaf.Cert, old.Intermediate.Cert}
				inner := s.served(1)
				cfg.Prober = proberFunc(func(ctx context.Context) ([][]*x509.Certificate, error) {
					chains, err := inner.Served(ctx)
					return append(chains, oldServed), err
				})
				cfg.ProbeTimeout = 200 * time.Millisecond
			}
			d := mustNew(t, cfg)

			before, err := d.Snapshot(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := append(append([]byte{}, before.KeyPEM...), before.ChainPEM...); !bytes.Equal(got, oldFile) {
				t.Fatalf("snapshot key+chain:\n%s\nwant\n%s", got, oldFile)
			}
			if !tc.combined && (!bytes.Equal(before.KeyPEM, oldKey) || !bytes.Equal(before.ChainPEM, oldChain)) {
				t.Fatalf("snapshot differs from the files")
			}

			crashLeft(t, cfg.KeyFile, cfg.ChainFile, leaf, renewed)
			err = d.Deploy(context.Background(), material(renewed), before)
			want := ErrReloadFailed
			if tc.notServe {
				want = ErrNotServed
			}
			if !errors.Is(err, want) || !strings.Contains(err.Error(), "from before the rollover were restored") ||
				!strings.Contains(err.Error(), describe(old.Leaf.Cert)) {
				t.Fatalf("got %v, want %v naming the pre-rollover leaf as restored", err, want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("message is not one line: %q", err)
			}
			t.Log(err)

			if tc.combined {
				if got := readFile(t, s.key); !bytes.Equal(got, oldFile) {
					t.Errorf("combined file not restored byte for byte:\n%s", got)
				}
				if m := mode(t, s.key); m != 0o600 {
					t.Errorf("combined file mode %v, want 0600", m)
				}
			} else {
				assertFiles(t, s.key, s.chain, oldKey, oldChain)
				if m := mode(t, s.key); m != 0o600 {
					t.Errorf("key mode %v, want 0600", m)
				}
				if m := mode(t, s.chain); m != 0o644 {
					t.Errorf("chain mode %v, want 0644", m)
				}
				// The backups hold the pre-rollover files, not the crash's.
				assertFiles(t, s.key+backupSuffix, s.chain+backupSuffix, oldKey, oldChain)
			}
			if got := readFile(t, leaf); !bytes.Equal(got, old.Leaf.PEM) {
				t.Errorf("leaf file holds\n%s\nwant the pre-rollover leaf", got)
			}
			if m := mode(t, leaf); m != 0o644 {
				t.Errorf("leaf mode %v, want 0644", m)
			}
			if n := s.reloads(t); n != 2 {
				t.Errorf("%d reloads, want 2 (deploy, restore)", n)
			}
			if tc.notServe {
				// The restore reload made the server load the old chain.
				if got := readFile(t, s.loaded); !bytes.Equal(got, oldChain) {
					t.Errorf("server loaded\n%s", got)
				}
			}
			noTempFiles(t, s.dir)
		})
	}
}

// TestResumedDeployEmptyRestore: without restore material the files as the
// call found them are put back, as before the restore parameter existed —
// after a crash, that is the crash's new certificate.
func TestResumedDeployEmptyRestore(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	d := mustNew(t, s.config(s.served(1), true))
	crashLeft(t, s.key, s.chain, "", renewed)
	err := d.Deploy(context.Background(), material(renewed), rollover.Material{})
	if !errors.Is(err, ErrReloadFailed) || !strings.Contains(err.Error(), "as this deploy found them) were restored") {
		t.Fatalf("got %v", err)
	}
	assertFiles(t, s.key, s.chain, renewed.Leaf.KeyPEM, renewed.FullChainPEM())
	// The found modes come back with the found content.
	if m := mode(t, s.key); m != 0o640 {
		t.Errorf("key mode %v, want the found 0640", m)
	}
	if n := s.reloads(t); n != 2 {
		t.Errorf("%d reloads, want 2", n)
	}
}

// TestRestoreWithoutKey: a restore whose key is empty (there was no key file
// before the rollover) removes the key file again, like a first deploy.
func TestRestoreWithoutKey(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	d := mustNew(t, s.config(s.served(1), true))
	err := d.Deploy(context.Background(), material(renewed), rollover.Material{ChainPEM: old.FullChainPEM()})
	if !errors.Is(err, ErrReloadFailed) || !strings.Contains(err.Error(), "from before the rollover") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(s.key); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("key file: %v, want it removed", err)
	}
	if got := readFile(t, s.chain); !bytes.Equal(got, old.FullChainPEM()) {
		t.Errorf("chain not restored")
	}
}

// TestRestoreWithoutCertificateRefused: with a leaf-only file configured, a
// restore whose chain holds no certificate could not be written: the deploy
// is refused before anything is touched.
func TestRestoreWithoutCertificateRefused(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	cfg := s.config(s.served(1), false)
	cfg.CertFile = filepath.Join(s.dir, "cert.pem")
	d := mustNew(t, cfg)
	err := d.Deploy(context.Background(), material(renewed), rollover.Material{KeyPEM: old.Leaf.KeyPEM, ChainPEM: []byte("not PEM\n")})
	if !errors.Is(err, ErrInvalidMaterial) || !strings.Contains(err.Error(), "to restore") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("got %v", err)
	}
	assertFiles(t, s.key, s.chain, old.Leaf.KeyPEM, old.FullChainPEM())
	if n := s.reloads(t); n != 0 {
		t.Errorf("%d reloads", n)
	}
	if _, err := os.Stat(cfg.CertFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leaf file written: %v", err)
	}
}

// TestResumedDeploySucceeds: restore material does not change a deploy
// that works.
func TestResumedDeploySucceeds(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	d := mustNew(t, s.config(s.served(2), false))
	before, err := d.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	crashLeft(t, s.key, s.chain, "", renewed)
	if err := d.Deploy(context.Background(), material(renewed), before); err != nil {
		t.Fatal(err)
	}
	assertFiles(t, s.key, s.chain, renewed.Leaf.KeyPEM, renewed.FullChainPEM())
	assertFiles(t, s.key+backupSuffix, s.chain+backupSuffix, old.Leaf.KeyPEM, old.FullChainPEM())
	if m := mode(t, s.key); m != 0o600 {
		t.Errorf("key mode %v", m)
	}
	if n := s.reloads(t); n != 1 {
		t.Errorf("%d reloads, want 1", n)
	}
}

func TestSnapshot(t *testing.T) {
	t.Parallel()
	c := testbed.MustChain(t, testbed.ChainOptions{})
	p := proberFunc(func(context.Context) ([][]*x509.Certificate, error) { return nil, nil })
	snap := func(t *testing.T, key, chain string) (rollover.Material, error) {
		t.Helper()
		d := mustNew(t, Config{KeyFile: key, ChainFile: chain, Prober: p})
		return d.Snapshot(context.Background())
	}

	t.Run("missing files", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		m, err := snap(t, filepath.Join(dir, "key.pem"), filepath.Join(dir, "chain.pem"))
		if err != nil || len(m.KeyPEM) != 0 || len(m.ChainPEM) != 0 {
			t.Fatalf("got %q, %q, %v; want empty material, no error", m.KeyPEM, m.ChainPEM, err)
		}
		// Not even the directory: still the first deploy, not an error.
		if m, err = snap(t, filepath.Join(dir, "no", "key.pem"), filepath.Join(dir, "no", "chain.pem")); err != nil || len(m.ChainPEM) != 0 {
			t.Fatalf("missing directory: %v", err)
		}
	})
	t.Run("key only", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		key := filepath.Join(dir, "key.pem")
		write(t, key, c.Leaf.KeyPEM, 0o600)
		m, err := snap(t, key, filepath.Join(dir, "chain.pem"))
		if err != nil || !bytes.Equal(m.KeyPEM, c.Leaf.KeyPEM) || len(m.ChainPEM) != 0 {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("symlink followed", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		key, chain, link := filepath.Join(dir, "key.pem"), filepath.Join(dir, "chain.pem"), filepath.Join(dir, "live.pem")
		write(t, key, c.Leaf.KeyPEM, 0o600)
		write(t, chain, c.FullChainPEM(), 0o644)
		if err := os.Symlink("chain.pem", link); err != nil {
			t.Fatal(err)
		}
		m, err := snap(t, key, link)
		if err != nil || !bytes.Equal(m.ChainPEM, c.FullChainPEM()) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("combined, certificate before key", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		f := filepath.Join(dir, "combined.pem")
		write(t, f, append(append([]byte{}, c.FullChainPEM()...), c.Leaf.KeyPEM...), 0o600)
		m, err := snap(t, f, f)
		if err != nil || !bytes.Equal(m.KeyPEM, c.Leaf.KeyPEM) || !bytes.Equal(m.ChainPEM, c.FullChainPEM()) {
			t.Fatalf("got %q / %q, %v", m.KeyPEM, m.ChainPEM, err)
		}
	})
	t.Run("combined, key only", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		f := filepath.Join(dir, "combined.pem")
		write(t, f, c.Leaf.KeyPEM, 0o600)
		m, err := snap(t, f, f)
		if err != nil || !bytes.Equal(m.KeyPEM, c.Leaf.KeyPEM) || len(m.ChainPEM) != 0 {
			t.Fatalf("got %q / %q, %v", m.KeyPEM, m.ChainPEM, err)
		}
	})
	for _, tc := range []struct {
		name  string
		setup func(dir string) (key, chain, bad string)
	}{
		{"chain is a directory", func(dir string) (string, string, string) {
			bad := filepath.Join(dir, "chain.pem")
			if err := os.Mkdir(bad, 0o755); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "key.pem"), bad, bad
		}},
		{"path through a file", func(dir string) (string, string, string) {
			f := filepath.Join(dir, "file")
			write(t, f, []byte("x"), 0o644)
			bad := filepath.Join(f, "key.pem")
			return bad, filepath.Join(dir, "chain.pem"), bad
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			key, chain, bad := tc.setup(t.TempDir())
			_, err := snap(t, key, chain)
			if err == nil || !strings.Contains(err.Error(), bad) {
				t.Fatalf("got %v, want an error naming %s", err, bad)
			}
			t.Log(err)
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		d := mustNew(t, Config{KeyFile: filepath.Join(dir, "k"), ChainFile: filepath.Join(dir, "c"), Prober: p})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := d.Snapshot(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})
}
