package deploy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// maxLinks bounds the symbolic links followed from one configured path (as
// the kernel's MAXSYMLINKS does).
const maxLinks = 40

// errNoDir is wrapped when the directory of a configured path does not
// exist; Snapshot takes it for "no file yet".
var errNoDir = errors.New("directory does not exist")

// resolved is a configured path checked for writing.
type resolved struct {
	path    string // absolute, symbolic links followed
	viaLink bool   // the configured path is (or passes through) a symbolic link at its last element
}

// resolve makes the configured path what (e.g. "key file") absolute and
// follows symbolic links at its last element, checking every directory it
// passes through and the file it ends at, so that a deploy running as root
// cannot be pointed at a file of the attacker's choosing:
//
//   - the directory holding the configured path, every symbolic link and the
//     final file must be owned by root, the configured owner or this user
//     and not writable by group or others (not even with the sticky bit: a
//     name that does not exist yet could be taken there);
//   - their ancestors must be owned likewise and not writable by group or
//     others unless sticky (as /tmp is: an entry there cannot be replaced by
//     another user);
//   - a file reached through a symbolic link must be owned by root, the
//     configured owner or this user, and a link to a file that does not
//     exist is refused.
//
// A path that does not exist yet (without a link) is kept; its directory
// must exist. Every error is one line naming the path and the fix.
func (d *FileDeployer) resolve(what, path string) (resolved, error) {
	cur := absPath(path)
	r := resolved{}
	for hops := 0; ; hops++ {
		if hops > maxLinks {
			return resolved{}, fmt.Errorf("deploy: the %s %s: more than %d symbolic links: point the configuration at the file itself", what, path, maxLinks)
		}
		dir, err := filepath.EvalSymlinks(filepath.Dir(cur))
		if errors.Is(err, fs.ErrNotExist) {
			return resolved{}, fmt.Errorf("deploy: the %s %s: %w: create %s or fix the path", what, path, errNoDir, filepath.Dir(cur))
		}
		if err != nil {
			return resolved{}, fmt.Errorf("deploy: the %s %s: %w", what, path, unwrapPath(err))
		}
		if err := d.checkDirs(what, path, dir); err != nil {
			return resolved{}, err
		}
		cur = filepath.Join(dir, filepath.Base(cur))
		fi, err := os.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist) && r.viaLink:
			return resolved{}, fmt.Errorf("deploy: the %s %s is a symbolic link to %s, which does not exist: create that file, or replace the link by the file", what, path, cur)
		case errors.Is(err, fs.ErrNotExist):
			return resolved{path: cur}, nil
		case err != nil:
			return resolved{}, fmt.Errorf("deploy: the %s %s: %w: check the path and this user's permissions", what, path, unwrapPath(err))
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if r.viaLink {
				if uid := fileUID(fi); !d.trusted(uid) {
					return resolved{}, fmt.Errorf("deploy: the %s %s is a symbolic link to %s, which is owned by uid %d (not root, the configured owner or this user): that user could read or swap what the server loads; chown root %s or point the configuration at a file of yours", what, path, cur, uid, cur)
				}
			}
			r.path = cur
			return r, nil
		}
		target, err := os.Readlink(cur)
		if err != nil {
			return resolved{}, fmt.Errorf("deploy: the %s %s: %w", what, path, unwrapPath(err))
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(dir, target)
		}
		r.viaLink, cur = true, target
	}
}

// trusted reports whether a file or directory owned by uid may decide what
// the server loads: root, the configured owner, or this process's user.
func (d *FileDeployer) trusted(uid int) bool {
	return uid == 0 || uid == os.Geteuid() || (d.uid >= 0 && uid == d.uid)
}

// checkDirs checks dir (the real directory a file of path is written in or
// a link is read from) strictly and its ancestors with sticky directories
// allowed; see resolve.
func (d *FileDeployer) checkDirs(what, path, dir string) error {
	for p, strict := dir, true; ; p, strict = filepath.Dir(p), false {
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("deploy: the %s %s: %w", what, path, unwrapPath(err))
		}
		if err := d.checkDir(what, path, p, fi, strict); err != nil {
			return err
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// checkDir checks one directory on the way to the configured path; strict
// for the one the file is in.
func (d *FileDeployer) checkDir(what, path, dir string, fi fs.FileInfo, strict bool) error {
	if !fi.IsDir() {
		return fmt.Errorf("deploy: the %s %s: %s is not a directory (%v): fix the path", what, path, dir, fi.Mode().Type())
	}
	if uid := fileUID(fi); !d.trusted(uid) {
		return fmt.Errorf("deploy: the %s %s: the directory %s is owned by uid %d (not root, the configured owner or this user), who could swap the file the server loads: chown root %s or move the file", what, path, dir, uid, dir)
	}
	perm := fi.Mode().Perm()
	if perm&0o022 != 0 && (strict || fi.Mode()&fs.ModeSticky == 0) {
		return fmt.Errorf("deploy: the %s %s: the directory %s has mode %04o and is writable by group or others, who could swap the file the server loads: run chmod go-w %s or move the file", what, path, dir, perm, dir)
	}
	return nil
}

// checkParent is the safefile.Options.CheckDir of every write: the
// directory, as opened for writing, is checked again, so that it is the one
// resolve approved of even if a path component changed since.
func (d *FileDeployer) checkParent(what, path string) func(string, fs.FileInfo) error {
	return func(dir string, fi fs.FileInfo) error { return d.checkDir(what, path, dir, fi, true) }
}

// fileUID returns the owner of fi, or -1 when unknown.
func fileUID(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// fileGID returns the group of fi, or -1 when unknown.
func fileGID(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Gid)
	}
	return -1
}

// unwrapPath drops an *fs.PathError's repetition of a path the message
// already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
