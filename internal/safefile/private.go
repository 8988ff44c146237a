package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// MaxPrivateSize bounds what ReadPrivate reads: keys and tokens are small.
const MaxPrivateSize = 1 << 20

// ErrTooOpen is wrapped by the errors of CheckPrivate and ReadPrivate for a
// file that other users may read or change.
var ErrTooOpen = errors.New("permissions too open")

// CheckPrivate returns an error when the file at path (symbolic links
// followed) may hold a secret others can read or change: a private key, a
// TSIG key, an API token. As OpenSSH does for private keys, a file owned by
// this process's user must have no group or other permission bits (0600 or
// 0400); a file owned by another user (say root, with a group this user is
// in) may also be group-readable (0640), not group-writable and not
// accessible to others. The error names the path and the chmod to run, and
// wraps ErrTooOpen.
func CheckPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	return checkPrivate(path, fi)
}

// ReadPrivate reads the file at path, at most MaxPrivateSize bytes, after
// checking it as CheckPrivate does. The check is made on the opened file, so
// it is the file read.
func ReadPrivate(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	if err := checkPrivate(path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxPrivateSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	if len(b) > MaxPrivateSize {
		return nil, fmt.Errorf("%s: larger than %d bytes: not a key or token file", path, MaxPrivateSize)
	}
	return b, nil
}

func checkPrivate(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file (%v): give the key or token file", path, fi.Mode().Type())
	}
	perm := fi.Mode().Perm()
	uid := -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid = int(st.Uid)
	}
	if uid == os.Geteuid() {
		if perm&0o077 != 0 {
			return fmt.Errorf("%s has mode %04o: %w: other users may read or change this private file; run chmod 600 %s", path, perm, ErrTooOpen, path)
		}
		return nil
	}
	if perm&0o027 != 0 {
		fix := "chmod 600 " + path
		if perm&0o040 != 0 {
			fix = "chmod 640 " + path + " (or chmod 600 if its group need not read it)"
		}
		return fmt.Errorf("%s has mode %04o and is owned by uid %d: %w: other users may read or change this private file; run %s", path, perm, uid, ErrTooOpen, fix)
	}
	return nil
}
