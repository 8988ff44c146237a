// Package safefile writes files atomically and reads secret files only when
// other users cannot read them.
//
// [Write] (and [Stage] for several files committed together) replaces a file
// so that a reader sees the old or the new content, never a mix, and after a
// crash one of them is on disk: the data goes to a temporary file in the same
// directory, created with mode 0600 and O_EXCL|O_NOFOLLOW, written, given its
// final mode and owner, fsynced, renamed over the file, and the directory is
// fsynced. Every step works through one open handle of the directory (openat,
// renameat), so the directory [Options.CheckDir] approves is the one written
// to even if a path component is swapped meanwhile. A symbolic link at the
// path is replaced by the new file, never followed.
//
// [CheckPrivate] and [ReadPrivate] refuse private keys and token files that
// other users may read, as OpenSSH does for private keys.
package safefile

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// TempPrefix starts the name of every temporary file; the leading "." keeps
// it out of globs such as *.pem, *.json and *.prom.
const TempPrefix = ".tmp-"

// IsTemp reports whether a directory entry's name is one of this package's
// temporary files (left behind only by a crash).
func IsTemp(name string) bool { return strings.HasPrefix(name, TempPrefix) }

// Options says how a file is written. The zero value writes a file with
// mode 0600 owned by the process.
type Options struct {
	// Mode is the file's permission bits; 0 means 0600. Setuid, setgid,
	// sticky and type bits are refused.
	Mode fs.FileMode
	// Chown makes the file owned by UID and GID; -1 in either leaves that
	// id as created (the process's, or the directory's group when it is
	// setgid). An id the file already has is not set again, so an
	// unprivileged process may name itself.
	Chown    bool
	UID, GID int
	// CheckDir, when set, is called with the directory's path and the
	// FileInfo of its open handle before anything is created in it; its
	// error is returned as is.
	CheckDir func(dir string, fi fs.FileInfo) error
}

// File is a staged file: written in full and fsynced under a temporary name
// in its directory, waiting for [File.Commit]. [File.Close] must be called
// in every case: it removes an uncommitted temporary file.
type File struct {
	path      string   // the final path, for messages
	name      string   // the final base name
	tmp       string   // the temporary base name; "" once renamed or removed
	dir       *os.File // the directory, open; nil once closed
	committed bool
}

// Path returns the path the file replaces.
func (f *File) Path() string { return f.path }

// Write replaces path with data as the package documentation describes.
// On error the old file is intact and no temporary file is left behind
// (unless the directory could not be fsynced after the rename: then the new
// file is in place and the error says so).
func Write(path string, data []byte, opts Options) error {
	f, err := Stage(path, data, opts)
	if err != nil {
		return err
	}
	if err := f.Commit(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Stage writes data to a temporary file in path's directory with the mode
// and owner of opts, and fsyncs it; nothing at path changes until
// [File.Commit]. Symbolic links in the directory part of path are followed,
// one at its last element is not (Commit replaces it).
func Stage(path string, data []byte, opts Options) (*File, error) {
	mode := opts.Mode
	if mode == 0 {
		mode = 0o600
	}
	if mode&^fs.ModePerm != 0 {
		return nil, fmt.Errorf("writing %s: mode %v has more than permission bits", path, mode)
	}
	dirPath, name := filepath.Split(path)
	if name == "" || name == "." || name == ".." {
		return nil, fmt.Errorf("writing %s: not a file name", path)
	}
	if dirPath == "" {
		dirPath = "."
	}
	dirPath = filepath.Clean(dirPath)
	dir, err := os.OpenFile(dirPath, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("writing %s: opening its directory: %w", path, unwrapPath(err))
	}
	sf := &File{path: path, name: name, dir: dir}
	if opts.CheckDir != nil {
		fi, err := dir.Stat()
		if err != nil {
			dir.Close()
			return nil, fmt.Errorf("writing %s: %w", path, unwrapPath(err))
		}
		if err := opts.CheckDir(dirPath, fi); err != nil {
			dir.Close()
			return nil, err
		}
	}
	tf, err := sf.create()
	if err != nil {
		dir.Close()
		return nil, fmt.Errorf("writing %s: creating a temporary file: %w", path, err)
	}
	fail := func(what string, err error) (*File, error) {
		tf.Close()
		sf.Close()
		return nil, fmt.Errorf("writing %s: %s: %w", path, what, unwrapPath(err))
	}
	if _, err := tf.Write(data); err != nil {
		return fail("writing the temporary file", err)
	}
	if err := tf.Chmod(mode); err != nil {
		return fail("setting its mode", err)
	}
	if opts.Chown {
		if err := chown(tf, opts.UID, opts.GID); err != nil {
			return fail(fmt.Sprintf("setting its owner to %d:%d (run as root, or choose an owner and group this user may set)", opts.UID, opts.GID), err)
		}
	}
	if err := tf.Sync(); err != nil {
		return fail("fsync", err)
	}
	if err := tf.Close(); err != nil {
		sf.Close()
		return nil, fmt.Errorf("writing %s: closing the temporary file: %w", path, unwrapPath(err))
	}
	return sf, nil
}

// create makes the temporary file: O_EXCL so that nothing already there (a
// planted symbolic link included) is opened, mode 0600 until the data is in.
func (f *File) create() (*os.File, error) {
	base := f.name
	if len(base) > 64 {
		base = base[:64]
	}
	for range 100 {
		tmp := TempPrefix + base + "." + strconv.FormatUint(rand.Uint64(), 36)
		fd, err := unix.Openat(int(f.dir.Fd()), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		f.tmp = tmp
		return os.NewFile(uintptr(fd), filepath.Join(filepath.Dir(f.path), tmp)), nil
	}
	return nil, errors.New("no free temporary name after 100 attempts")
}

// chown sets the ids of f that differ from uid and gid (-1: keep).
func chown(f *os.File, uid, gid int) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid == int(st.Uid) {
			uid = -1
		}
		if gid == int(st.Gid) {
			gid = -1
		}
	}
	if uid < 0 && gid < 0 {
		return nil
	}
	return f.Chown(uid, gid)
}

// Commit renames the staged file over its path (replacing a symbolic link
// there, not its target). The directory is fsynced by [File.Close], so that
// several files can be renamed back to back first.
func (f *File) Commit() error {
	switch {
	case f.committed:
		return nil
	case f.dir == nil || f.tmp == "":
		return fmt.Errorf("replacing %s: the staged file was closed", f.path)
	}
	fd := int(f.dir.Fd())
	for {
		err := unix.Renameat(fd, f.tmp, fd, f.name)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("replacing %s: %w", f.path, err)
		}
		break
	}
	f.tmp, f.committed = "", true
	return nil
}

// Close fsyncs the directory after a [File.Commit], or else removes the
// temporary file, and releases the directory. Calls after the first return
// nil.
func (f *File) Close() error {
	if f.dir == nil {
		return nil
	}
	var err error
	if f.committed {
		if serr := f.dir.Sync(); serr != nil {
			err = fmt.Errorf("replaced %s but could not fsync its directory: %w", f.path, unwrapPath(serr))
		}
	} else if f.tmp != "" {
		_ = unix.Unlinkat(int(f.dir.Fd()), f.tmp, 0)
		f.tmp = ""
	}
	f.dir.Close()
	f.dir = nil
	return err
}

// SyncDir fsyncs the directory dir, which makes creations, renames and
// removals in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync of directory %s: %w", dir, unwrapPath(err))
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync of directory %s: %w", dir, unwrapPath(err))
	}
	return nil
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
