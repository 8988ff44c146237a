package safefile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func stat(t *testing.T, path string) (fs.FileMode, int, int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), int(st.Uid), int(st.Gid)
}

func noTemps(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if IsTemp(e.Name()) {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestWrite(t *testing.T) {
	t.Parallel()
	root := os.Geteuid() == 0
	for _, tc := range []struct {
		name     string
		existing fs.FileMode // 0: no file before
		opts     Options
		mode     fs.FileMode
		uid, gid int // -1: the process's
		root     bool
	}{
		{name: "new default mode", opts: Options{}, mode: 0o600, uid: -1, gid: -1},
		{name: "new 0644", opts: Options{Mode: 0o644}, mode: 0o644, uid: -1, gid: -1},
		{name: "new 0400", opts: Options{Mode: 0o400}, mode: 0o400, uid: -1, gid: -1},
		{name: "replace 0644 by 0600", existing: 0o644, opts: Options{Mode: 0o600}, mode: 0o600, uid: -1, gid: -1},
		{name: "replace 0600 by 0640", existing: 0o600, opts: Options{Mode: 0o640}, mode: 0o640, uid: -1, gid: -1},
		{name: "chown to self", opts: Options{Mode: 0o600, Chown: true, UID: os.Geteuid(), GID: os.Getegid()}, mode: 0o600, uid: -1, gid: -1},
		{name: "chown uid and gid", opts: Options{Mode: 0o640, Chown: true, UID: 1, GID: 2}, mode: 0o640, uid: 1, gid: 2, root: true},
		{name: "chown gid only", existing: 0o644, opts: Options{Mode: 0o640, Chown: true, UID: -1, GID: 3}, mode: 0o640, uid: -1, gid: 3, root: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.root && !root {
				t.Skip("chown to other ids needs root")
			}
			dir := t.TempDir()
			p := filepath.Join(dir, "f.pem")
			if tc.existing != 0 {
				if err := os.WriteFile(p, []byte("old"), tc.existing); err != nil {
					t.Fatal(err)
				}
			}
			if err := Write(p, []byte("new"), tc.opts); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(p); string(b) != "new" {
				t.Errorf("content %q", b)
			}
			m, uid, gid := stat(t, p)
			if !m.IsRegular() || m.Perm() != tc.mode {
				t.Errorf("mode %v, want %v", m, tc.mode)
			}
			wu, wg := tc.uid, tc.gid
			if wu < 0 {
				wu = os.Geteuid()
			}
			if wg < 0 {
				wg = os.Getegid()
			}
			if uid != wu || gid != wg {
				t.Errorf("owner %d:%d, want %d:%d", uid, gid, wu, wg)
			}
			noTemps(t, dir)
		})
	}
}

// TestWriteSymlinkReplaced: a symbolic link at the path is replaced by the
// file; its target is not touched.
func TestWriteSymlinkReplaced(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "link")
	if err := os.Symlink(victim, p); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("new"), Options{Mode: 0o600}); err != nil {
		t.Fatal(err)
	}
	if m, _, _ := stat(t, p); !m.IsRegular() {
		t.Errorf("%s is %v, want a regular file", p, m)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("link target changed to %q", b)
	}
	if m, _, _ := stat(t, victim); m.Perm() != 0o644 {
		t.Errorf("link target mode changed to %v", m)
	}
	// A dangling link too.
	if err := os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(dir, "dangling"), []byte("x"), Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the dangling link's target was created: %v", err)
	}
	noTemps(t, dir)
}

// TestWriteFailureKeepsOld: every failure leaves the old file and no
// temporary file.
func TestWriteFailureKeepsOld(t *testing.T) {
	t.Parallel()
	errCheck := errors.New("directory refused")
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the path to write
		opts  Options
		want  string // in the error
	}{
		{
			name:  "mode with more than permission bits",
			setup: func(t *testing.T, dir string) string { return oldFile(t, dir) },
			opts:  Options{Mode: fs.ModeSetuid | 0o755}, want: "permission bits",
		},
		{
			name:  "CheckDir refuses",
			setup: func(t *testing.T, dir string) string { return oldFile(t, dir) },
			opts:  Options{CheckDir: func(string, fs.FileInfo) error { return errCheck }}, want: "directory refused",
		},
		{
			name: "rename over a non-empty directory",
			setup: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "d")
				if err := os.MkdirAll(filepath.Join(p, "sub"), 0o700); err != nil {
					t.Fatal(err)
				}
				return p
			},
			want: "replacing",
		},
		{
			name:  "directory missing",
			setup: func(t *testing.T, dir string) string { return filepath.Join(dir, "no", "f") },
			want:  "opening its directory",
		},
		{
			name:  "not a file name",
			setup: func(t *testing.T, dir string) string { return dir + "/" },
			want:  "not a file name",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := tc.setup(t, dir)
			before := snapshotDir(t, dir)
			err := Write(p, []byte("new"), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if after := snapshotDir(t, dir); after != before {
				t.Errorf("directory changed:\n%s\nwant\n%s", after, before)
			}
			noTemps(t, dir)
		})
	}
}

func oldFile(t *testing.T, dir string) string {
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o640); err != nil {
		t.Fatal(err)
	}
	return p
}

// snapshotDir describes every entry under dir: name, mode, content.
func snapshotDir(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		b.WriteString(p + " " + fi.Mode().String())
		if d.Type().IsRegular() {
			c, _ := os.ReadFile(p)
			b.WriteString(" " + string(c))
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}

// TestStageCommit: nothing changes before Commit; Close without Commit
// removes the temporary file; files staged together are committed in order.
func TestStageCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := os.WriteFile(a, []byte("old a"), 0o600); err != nil {
		t.Fatal(err)
	}
	fa, err := Stage(a, []byte("new a"), Options{Mode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	fb, err := Stage(b, []byte("new b"), Options{Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	if fa.Path() != a {
		t.Errorf("Path() = %q", fa.Path())
	}
	if c, _ := os.ReadFile(a); string(c) != "old a" {
		t.Errorf("a changed before Commit: %q", c)
	}
	if _, err := os.Stat(b); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("b exists before Commit: %v", err)
	}
	// Abandon b, commit a.
	if err := fb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fb.Commit(); err == nil {
		t.Error("Commit after Close succeeded")
	}
	if err := fa.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := fa.Commit(); err != nil {
		t.Errorf("second Commit: %v", err)
	}
	if err := fa.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fa.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if c, _ := os.ReadFile(a); !bytes.Equal(c, []byte("new a")) {
		t.Errorf("a = %q", c)
	}
	if _, err := os.Stat(b); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("abandoned b exists: %v", err)
	}
	noTemps(t, dir)
	if err := SyncDir(dir); err != nil {
		t.Error(err)
	}
	if err := SyncDir(filepath.Join(dir, "none")); err == nil {
		t.Error("SyncDir of a missing directory succeeded")
	}
}

// TestStageCheckDirSeesTheDirectory: CheckDir gets the directory written to.
func TestStageCheckDirSeesTheDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	var got fs.FileMode
	var gotPath string
	err := Write(filepath.Join(dir, "f"), nil, Options{CheckDir: func(p string, fi fs.FileInfo) error {
		got, gotPath = fi.Mode(), p
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !got.IsDir() || got.Perm() != 0o750 || gotPath != dir {
		t.Errorf("CheckDir saw %s %v, want %s 0750 directory", gotPath, got, dir)
	}
}

func TestCheckPrivate(t *testing.T) {
	t.Parallel()
	root := os.Geteuid() == 0
	for _, tc := range []struct {
		mode  fs.FileMode
		uid   int // -1: this process's user
		ok    bool
		chmod string // expected in the error
	}{
		{mode: 0o600, uid: -1, ok: true},
		{mode: 0o400, uid: -1, ok: true},
		{mode: 0o640, uid: -1, chmod: "chmod 600 "},
		{mode: 0o644, uid: -1, chmod: "chmod 600 "},
		{mode: 0o604, uid: -1, chmod: "chmod 600 "},
		{mode: 0o660, uid: -1, chmod: "chmod 600 "},
		{mode: 0o600, uid: 1, ok: true},
		{mode: 0o640, uid: 1, ok: true},
		{mode: 0o440, uid: 1, ok: true},
		{mode: 0o644, uid: 1, chmod: "chmod 640 "},
		{mode: 0o660, uid: 1, chmod: "chmod 640 "},
		{mode: 0o606, uid: 1, chmod: "chmod 600 "},
	} {
		t.Run(tc.mode.String()+"/"+map[bool]string{true: "other", false: "self"}[tc.uid >= 0], func(t *testing.T) {
			t.Parallel()
			if tc.uid >= 0 && !root {
				t.Skip("a file of another user needs root")
			}
			p := filepath.Join(t.TempDir(), "key")
			if err := os.WriteFile(p, []byte("secret"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.uid >= 0 {
				if err := os.Chown(p, tc.uid, -1); err != nil {
					t.Fatal(err)
				}
			}
			cerr := CheckPrivate(p)
			b, rerr := ReadPrivate(p)
			if tc.ok {
				if cerr != nil || rerr != nil || string(b) != "secret" {
					t.Fatalf("CheckPrivate: %v; ReadPrivate: %q, %v", cerr, b, rerr)
				}
				return
			}
			for _, err := range []error{cerr, rerr} {
				if !errors.Is(err, ErrTooOpen) || !strings.Contains(err.Error(), tc.chmod+p) || strings.Contains(err.Error(), "\n") {
					t.Errorf("err = %v, want ErrTooOpen with %q", err, tc.chmod+p)
				}
			}
			if b != nil {
				t.Errorf("ReadPrivate returned the content of a refused file")
			}
		})
	}
}

func TestCheckPrivateNotAFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, p := range []string{dir, filepath.Join(dir, "missing")} {
		if err := CheckPrivate(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("CheckPrivate(%s) = %v", p, err)
		}
		if _, err := ReadPrivate(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("ReadPrivate(%s) = %v", p, err)
		}
	}
	// Symbolic links are followed: the target's mode counts.
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := CheckPrivate(link); !errors.Is(err, ErrTooOpen) {
		t.Errorf("CheckPrivate(link to 0644) = %v", err)
	}
}

// TestReadLimited: each refusal is one line naming the file and the fix;
// a named pipe is read unless a regular file is required.
func TestReadLimited(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ca.pem")
	big := filepath.Join(dir, "big.pem")
	fifo := filepath.Join(dir, "fifo")
	if err := os.WriteFile(ok, []byte("pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, make([]byte, 2048), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() { // the writer end of the pipe, as bash's <(…) is
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			_, _ = f.Write([]byte("piped"))
			f.Close()
		}
	}()
	for _, tc := range []struct {
		name, path string
		regular    bool
		want, err  string
	}{
		{"file", ok, true, "pem", ""},
		{"missing", filepath.Join(dir, "nope.pem"), false, "", "nope.pem: no such file; check the path"},
		{"directory", dir, false, "", "is a directory; give a file, or a glob such as '" + dir + "/*.pem'"},
		{"too large", big, false, "", "big.pem: 2048 bytes is larger than the 1 KiB limit; a hint"},
		{"pipe refused", fifo, true, "", "fifo: not a regular file"},
		{"pipe read", fifo, false, "piped", ""},
	} {
		b, err := ReadLimited(tc.path, 1024, tc.regular, "; a hint")
		switch {
		case tc.err == "" && (err != nil || string(b) != tc.want):
			t.Errorf("%s: %q, %v; want %q", tc.name, b, err, tc.want)
		case tc.err != "" && (err == nil || !strings.HasSuffix(err.Error(), tc.err) || strings.Contains(err.Error(), "\n")):
			t.Errorf("%s: error %v, want one line ending %q", tc.name, err, tc.err)
		}
	}
}
