package deploy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
)

// treeState describes every entry under dir (path, type and mode, owner,
// content) to tell whether anything changed.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		b.WriteString(p + " " + fi.Mode().String())
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			fmt.Fprintf(&b, " %d:%d", st.Uid, st.Gid)
		}
		switch {
		case fi.Mode().IsRegular():
			c, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b.Write(c)
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			b.WriteString(" -> " + l)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func mkdir(t *testing.T, p string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func symlink(t *testing.T, target, link string) string {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return link
}

func chown(t *testing.T, p string, uid, gid int) {
	t.Helper()
	if err := os.Lchown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// TestUnsafePathsRefused: a deploy refuses, before touching any file or
// running the reload command, to follow a symbolic link into a file of
// another user, or to write in (or read a link from) a directory others may
// write to or that another user owns. Snapshot refuses the same.
func TestUnsafePathsRefused(t *testing.T) {
	t.Parallel()
	testbed.RequireRoot(t, "files and directories of other users")
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	const other = 4321
	for _, tc := range []struct {
		name string
		// setup changes the configuration and returns the texts the error
		// must hold (the configured path is always required).
		setup func(t *testing.T, s *fakeServer, cfg *Config) []string
	}{
		{"link to a file of another user", func(t *testing.T, s *fakeServer, cfg *Config) []string {
			f := filepath.Join(s.dir, "other.pem")
			write(t, f, old.FullChainPEM(), 0o644)
			chown(t, f, other, other)
			cfg.ChainFile = symlink(t, "other.pem", filepath.Join(s.dir, "live.pem"))
			return []string{"owned by uid 4321", "chown root " + f}
		}},
		{"link into a group-writable directory", func(t *testing.T, s *fakeServer, cfg *Config) []string {
			sub := mkdir(t, filepath.Join(s.dir, "shared"), 0o770)
			write(t, filepath.Join(sub, "chain.pem"), old.FullChainPEM(), 0o644)
			cfg.ChainFile = symlink(t, filepath.Join(sub, "chain.pem"), filepath.Join(s.dir, "live.pem"))
			return []string{"mode 0770", "chmod go-w " + sub}
		}},
		{"link into a sticky world-writable directory", func(t *testing.T, s *fakeServer, cfg *Config) []string {
			sub := mkdir(t, filepath.Join(s.dir, "tmp"), 0o777|os.ModeSticky)
			write(t, filepath.Join(sub, "key.pem"), old.Leaf.KeyPEM, 0o600)
			cfg.KeyFile = symlink(t, filepath.Join(sub, "key.pem"), filepath.Join(s.dir, "live-key.pem"))
			return []string{"writable by group or others", "chmod go-w " + sub}
		}},
		{"link in a group-writable directory", func(t *testing.T, s *fakeServer, cfg *Config) []string {
			sub := mkdir(t, filepath.Join(s.dir, "conf"), 0o775)
			cfg.KeyFile = symlink(t, s.key, filepath.Join(sub, "key.pem"))
			return []string{"chmod go-w " + sub}
		}},
		{"file in a directory of another user", func(t *testing.T, s *fakeServer, cfg *Config) []string {
			sub := mkdir(t, filepath.Join(s.dir, "theirs"), 0o755)
			write(t, filepath.Join(sub, "chain.pem"), old.FullChainPEM(), 0o644)
			chown(t, sub, other, other)
			cfg.ChainFile = filepath.Join(sub, "chain.pem")
			return []string{"owned by uid 4321", "chown root " + sub}
		}},
		{"new file in a world-writable directory", func(t *testing.T, s *fakeServer, cfg *Config) []string {
			sub := mkdir(t, filepath.Join(s.dir, "open"), 0o777|os.ModeSticky)
			cfg.CertFile = filepath.Join(sub, "cert.pem")
			return []string{"chmod go-w " + sub}
		}},
		{"writable ancestor", func(t *testing.T, s *fakeServer, cfg *Config) []string {
			a := mkdir(t, filepath.Join(s.dir, "a"), 0o777)
			b := mkdir(t, filepath.Join(a, "b"), 0o700)
			write(t, filepath.Join(b, "chain.pem"), old.FullChainPEM(), 0o644)
			cfg.ChainFile = filepath.Join(b, "chain.pem")
			return []string{"mode 0777", "chmod go-w " + a}
		}},
		{"dangling link", func(t *testing.T, s *fakeServer, cfg *Config) []string {
			cfg.ChainFile = symlink(t, "nowhere.pem", filepath.Join(s.dir, "live.pem"))
			return []string{"does not exist", filepath.Join(s.dir, "nowhere.pem")}
		}},
		{"link loop", func(t *testing.T, s *fakeServer, cfg *Config) []string {
			symlink(t, "b.pem", filepath.Join(s.dir, "a.pem"))
			cfg.ChainFile = symlink(t, "a.pem", filepath.Join(s.dir, "b.pem"))
			return []string{"symbolic links"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newFakeServer(t, old)
			cfg := s.config(s.served(1), false)
			want := append(tc.setup(t, s, &cfg), "")
			configured := map[string]bool{cfg.KeyFile: true, cfg.ChainFile: true, cfg.CertFile: true}
			before := treeState(t, s.dir)
			d := mustNew(t, cfg)
			err := d.Deploy(context.Background(), material(renewed), rollover.Material{})
			errs := map[string]error{"Deploy": err}
			if cfg.CertFile == "" { // Snapshot does not read the leaf-only file
				_, errs["Snapshot"] = d.Snapshot(context.Background())
			}
			for what, err := range errs {
				if err == nil {
					t.Fatalf("%s accepted the path", what)
				}
				msg := err.Error()
				named := false
				for p := range configured {
					named = named || (p != "" && strings.Contains(msg, p))
				}
				if !named || strings.Contains(msg, "\n") {
					t.Errorf("%s: %q names no configured path or has several lines", what, msg)
				}
				for _, w := range want {
					if !strings.Contains(msg, w) {
						t.Errorf("%s: %q lacks %q", what, msg, w)
					}
				}
			}
			t.Log(err)
			if after := treeState(t, s.dir); after != before {
				t.Errorf("files changed:\n%s\nwant\n%s", after, before)
			}
			if n := s.reloads(t); n != 0 {
				t.Errorf("%d reloads, want none", n)
			}
		})
	}
}

// TestSafePathsAccepted: links into files of root, of this user or of the
// configured owner, chains of links, and sticky ancestors (such as /tmp)
// are deployed through.
func TestSafePathsAccepted(t *testing.T) {
	t.Parallel()
	testbed.RequireRoot(t, "files of other users")
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	const owner = 4322
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, s *fakeServer, cfg *Config) (chain string)
	}{
		{"chain of links", func(t *testing.T, s *fakeServer, cfg *Config) string {
			l2 := symlink(t, "fullchain.pem", filepath.Join(s.dir, "l2.pem"))
			cfg.ChainFile = symlink(t, l2, filepath.Join(s.dir, "live.pem"))
			return s.chain
		}},
		{"sticky ancestor", func(t *testing.T, s *fakeServer, cfg *Config) string {
			tmp := mkdir(t, filepath.Join(s.dir, "tmp"), 0o777|os.ModeSticky)
			sub := mkdir(t, filepath.Join(tmp, "mine"), 0o755)
			cfg.ChainFile = filepath.Join(sub, "chain.pem")
			s.chain = cfg.ChainFile // what the fake reload copies
			cfg.Reload = s.reloadCmd(false)
			return cfg.ChainFile
		}},
		{"link to a file of the configured owner", func(t *testing.T, s *fakeServer, cfg *Config) string {
			sub := mkdir(t, filepath.Join(s.dir, "postfix"), 0o755)
			chown(t, sub, owner, owner)
			f := filepath.Join(sub, "chain.pem")
			write(t, f, old.FullChainPEM(), 0o644)
			chown(t, f, owner, owner)
			cfg.ChainFile = symlink(t, f, filepath.Join(s.dir, "live.pem"))
			cfg.Owner = "4322"
			s.chain = f
			cfg.Reload = s.reloadCmd(false)
			return f
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newFakeServer(t, old)
			cfg := s.config(s.served(1), false)
			chain := tc.setup(t, s, &cfg)
			d := mustNew(t, cfg)
			if _, err := d.Snapshot(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := d.Deploy(context.Background(), material(renewed), rollover.Material{}); err != nil {
				t.Fatal(err)
			}
			assertFiles(t, cfg.KeyFile, chain, renewed.Leaf.KeyPEM, renewed.FullChainPEM())
			if fi, err := os.Lstat(cfg.ChainFile); err != nil || (cfg.ChainFile != chain && fi.Mode()&os.ModeSymlink == 0) {
				t.Errorf("the link %s was replaced: %v", cfg.ChainFile, err)
			}
		})
	}
}

// TestLinkTargetOwnerNotInherited: a file written through a symbolic link
// gets the configured owner and group or the process's, never those of the
// link's target; a plain file keeps those of the file it replaces.
func TestLinkTargetOwnerNotInherited(t *testing.T) {
	t.Parallel()
	testbed.RequireRoot(t, "chown")
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	ids := func(p string) (int, int) {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return int(st.Uid), int(st.Gid)
	}
	for _, group := range []string{"", "7"} {
		s := newFakeServer(t, old)
		chown(t, s.chain, 0, 5)
		chown(t, s.key, 0, 5)
		cfg := s.config(s.served(1), false)
		cfg.ChainFile = symlink(t, "fullchain.pem", filepath.Join(s.dir, "live.pem"))
		cfg.Group = group
		d := mustNew(t, cfg)
		if err := d.Deploy(context.Background(), material(renewed), rollover.Material{}); err != nil {
			t.Fatal(err)
		}
		wantLink, wantPlain := os.Getegid(), 5
		if group != "" {
			wantLink, wantPlain = 7, 7
		}
		if u, g := ids(s.chain); u != os.Geteuid() || g != wantLink {
			t.Errorf("group %q: chain written through a link is %d:%d, want %d:%d", group, u, g, os.Geteuid(), wantLink)
		}
		if u, g := ids(s.key); u != 0 || g != wantPlain {
			t.Errorf("group %q: plain key file is %d:%d, want 0:%d", group, u, g, wantPlain)
		}
	}
}

// TestHelperReload is not a test: run as a reload command by TestReloadEnv
// (its arguments after "--" name a file), it writes its environment there.
func TestHelperReload(t *testing.T) {
	i := slices.Index(os.Args, "--")
	if i < 0 || i+1 >= len(os.Args) {
		t.Skip("helper process of TestReloadEnv")
	}
	if err := os.WriteFile(os.Args[i+1], []byte(strings.Join(os.Environ(), "\n")), 0o600); err != nil {
		os.Exit(2)
	}
	os.Exit(0)
}

// TestReloadEnv: the reload command sees PATH, HOME and the locale, and none
// of the provider credentials in tlsactl's environment.
func TestReloadEnv(t *testing.T) {
	secrets := map[string]string{
		"AWS_SECRET_ACCESS_KEY": "aws-secret", "AWS_ACCESS_KEY_ID": "aws-id", "OVH_APPLICATION_SECRET": "ovh-secret",
		"DESEC_TOKEN": "desec-token", "HETZNER_API_TOKEN": "hetzner-token", "GANDI_BEARER_TOKEN": "gandi-token",
		"TRANSIP_PRIVATE_KEY": "transip-key", "TSIG_SECRET": "tsig-secret", "TLSACTL_TSIG_KEY_FILE": "/etc/tlsactl/tsig",
		"TLSACTL_FAILPOINT": "before-deploy", "SSH_AUTH_SOCK": "/run/agent", "LD_PRELOAD": "/tmp/evil.so",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("LANG", "C.UTF-8")
	t.Setenv("LC_TIME", "C")
	t.Setenv("HOME", "/root")
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	s := newFakeServer(t, old)
	dump := filepath.Join(s.dir, "env")
	cfg := s.config(proberFunc(func(context.Context) ([][]*x509.Certificate, error) {
		return [][]*x509.Certificate{{renewed.Leaf.Cert}}, nil
	}), false)
	cfg.Reload = []string{os.Args[0], "-test.run=^TestHelperReload$", "--", dump}
	d := mustNew(t, cfg)
	if err := d.Deploy(context.Background(), material(renewed), rollover.Material{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k := range env {
		if k != "PATH" && k != "HOME" && k != "LANG" && k != "LANGUAGE" && !strings.HasPrefix(k, "LC_") {
			t.Errorf("the reload command got %s=%s", k, env[k])
		}
	}
	for _, v := range secrets {
		if strings.Contains(string(b), v) {
			t.Errorf("the reload command saw %q", v)
		}
	}
	if env["PATH"] != os.Getenv("PATH") || env["LANG"] != "C.UTF-8" || env["LC_TIME"] != "C" || env["HOME"] != "/root" {
		t.Errorf("environment %v lacks PATH, HOME or the locale", env)
	}
}

func TestReloadEnvDefaultPath(t *testing.T) {
	t.Parallel()
	got := ReloadEnv([]string{"DESEC_TOKEN=x", "LC_ALL=C", "noequals", "HOME=/var/lib/tlsactl"})
	want := []string{"LC_ALL=C", "HOME=/var/lib/tlsactl", "PATH=" + defaultPath}
	if !slices.Equal(got, want) {
		t.Errorf("ReloadEnv = %q, want %q", got, want)
	}
}

// TestErrorsBounded: what a reload command prints or a probe reports is
// bounded before it reaches the error (and so the rollover state).
func TestErrorsBounded(t *testing.T) {
	t.Parallel()
	old := testbed.MustChain(t, testbed.ChainOptions{})
	renewed := testbed.MustChain(t, testbed.ChainOptions{Reuse: old})
	t.Run("reload output", func(t *testing.T) {
		t.Parallel()
		s := newFakeServer(t, old)
		cfg := s.config(s.served(1), false)
		cfg.Reload = []string{"sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; exit 3"}
		err := mustNew(t, cfg).Deploy(context.Background(), material(renewed), rollover.Material{})
		if !errors.Is(err, ErrReloadFailed) || len(err.Error()) > 1500 || !strings.Contains(err.Error(), "xxx …") {
			t.Fatalf("%d bytes: %.300s", len(err.Error()), err)
		}
	})
	t.Run("probe error", func(t *testing.T) {
		t.Parallel()
		s := newFakeServer(t, old)
		cfg := s.config(proberFunc(func(context.Context) ([][]*x509.Certificate, error) {
			return nil, errors.New("starttls: server said " + strings.Repeat("ä", 50000))
		}), false)
		cfg.ProbeTimeout = 100 * time.Millisecond
		err := mustNew(t, cfg).Deploy(context.Background(), material(renewed), rollover.Material{})
		if !errors.Is(err, ErrNotServed) || len(err.Error()) > 1500 || !strings.Contains(err.Error(), "ä…") {
			t.Fatalf("%d bytes: %.300s", len(err.Error()), err)
		}
	})
}

func TestClip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijk", 10, "abcdefghij…"},
		{"ääääää", 5, "ää…"}, // never half a rune
	} {
		if got := clip(tc.in, tc.max); got != tc.want {
			t.Errorf("clip(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}
