package rollover

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tlsactl/tlsactl/internal/safefile"
	"github.com/tlsactl/tlsactl/tlsa"
)

// FileStore is a [Store] in a local directory. The layout is
//
//	<dir>/<host>.json                   rollover state
//	<dir>/<host>.lock                   per-host lock (flock) and holder info
//	<dir>/<host>/<name>.chain.pem       staged chain
//	<dir>/<host>/<name>.key.pem         staged private key
//	<dir>/<host>/<name>.manifest.json   SHA-256 of both; marks the pair complete
//
// where <host> is the FQDN in lower case without the trailing dot. Every file
// except the lock file is written atomically by [safefile] (temporary file
// created 0600 with O_EXCL in the same directory, fsync, rename, fsync of the
// directory), so a reader sees the old or the new content, never a mix.
// Temporary files start with "." and so never collide with a host or
// material name.
//
// The lock is an advisory flock(2), which is Unix-only. It needs a local
// file system: flock over NFS is not reliable.
//
// A FileStore holds no open files between calls and is safe for concurrent
// use; the lock serializes work on a host across goroutines and processes.
type FileStore struct {
	dir   string
	clock Clock
	// poll is how often a busy lock is retried.
	poll time.Duration
}

var _ Store = (*FileStore)(nil)

// stateFormat is the newest State.Version this code reads.
const stateFormat = 2

// NewFileStore returns a FileStore in dir, creating dir with mode 0700 if it
// is missing. It refuses a directory that group or others may write to,
// since anyone who can write there can replace the staged private key or
// rewrite the rollover state.
func NewFileStore(dir string) (*FileStore, error) {
	if dir == "" {
		return nil, errors.New("rollover: file store: empty directory name")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("rollover: file store: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("rollover: file store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("rollover: file store: %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return nil, fmt.Errorf("rollover: file store: %s has mode %04o and is writable by group or others; run chmod 700 %s",
			dir, perm, dir)
	}
	return &FileStore{dir: dir, clock: SystemClock{}, poll: 50 * time.Millisecond}, nil
}

// Dir returns the store's directory.
func (store *FileStore) Dir() string { return store.dir }

// normalizeHost returns host in lower case without the trailing dot, or an
// error if it is not a DNS name safe to use as a file name: only
// [a-z0-9_-] in non-empty labels of at most 63 bytes, at most 253 bytes in
// all. The last label may not be "json" or "lock", whose directory would
// collide with another host's state or lock file.
func normalizeHost(host string) (string, error) {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "" || len(h) > 253 {
		return "", fmt.Errorf("rollover: invalid host name %q", host)
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || !safeChars(l, false) {
			return "", fmt.Errorf("rollover: invalid host name %q", host)
		}
	}
	if last := labels[len(labels)-1]; last == "json" || last == "lock" {
		return "", fmt.Errorf("rollover: invalid host name %q: a name ending in .%s would collide with the store's files", host, last)
	}
	return h, nil
}

// checkMaterialName refuses names that are empty, start with ".", or contain
// anything but [a-z0-9._-]. The fixed suffixes (".chain.pem", ".key.pem",
// ".manifest.json") differ in their last bytes, so two names never share a file.
func checkMaterialName(name string) error {
	if name == "" || len(name) > 64 || name[0] == '.' || !safeChars(name, true) {
		return fmt.Errorf("rollover: invalid material name %q", name)
	}
	return nil
}

// materialHost checks the host and name of staged material as every
// store's GetMaterial and PutMaterial do (normalizeHost, checkMaterialName)
// and returns the normalized host.
func materialHost(host, name string) (string, error) {
	h, err := normalizeHost(host)
	if err != nil {
		return "", err
	}
	return h, checkMaterialName(name)
}

// checkStage is materialHost for PutMaterial, which also refuses material
// with an empty chain or key.
func checkStage(host, name string, m Material) (string, error) {
	h, err := materialHost(host, name)
	if err == nil && (len(m.ChainPEM) == 0 || len(m.KeyPEM) == 0) {
		err = fmt.Errorf("rollover: stage material %s/%s: empty chain or key", h, name)
	}
	return h, err
}

func safeChars(s string, dot bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.' && dot:
		default:
			return false
		}
	}
	return true
}

func (store *FileStore) statePath(host string) string {
	return filepath.Join(store.dir, host+".json")
}

func (store *FileStore) lockPath(host string) string {
	return filepath.Join(store.dir, host+".lock")
}

func (store *FileStore) hostDir(host string) string {
	return filepath.Join(store.dir, host)
}

// Load returns the state of host. A missing file is ErrNoRollover; a file
// that does not parse, names another host or has a newer format is an error
// naming the file, never an empty state: resetting would forget records
// that caches may still hold.
func (store *FileStore) Load(host string) (*State, error) {
	h, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	p := store.statePath(h)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoRollover, h)
	}
	if err != nil {
		return nil, fmt.Errorf("rollover: load state: %w", err)
	}
	return decodeState(b, h, "state file "+p)
}

// decodeState parses the state document of host h read from where ("state
// file /x/mx1.json"), refusing what Load refuses.
func decodeState(b []byte, h, where string) (*State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("rollover: %s is corrupt (%s); it was not changed: repair or remove it by hand", where, bounded(err.Error()))
	}
	if got, err := normalizeHost(s.Host); err != nil || got != h {
		return nil, fmt.Errorf("rollover: %s is for host %q, not %q", where, bounded(s.Host), h)
	}
	if s.Version > stateFormat {
		return nil, fmt.Errorf("rollover: %s has format version %d; this tlsactl reads up to %d", where, s.Version, stateFormat)
	}
	if err := checkState(&s); err != nil {
		return nil, fmt.Errorf("rollover: %s is corrupt (%s); it was not changed: repair or remove it by hand", where, bounded(err.Error()))
	}
	return &s, nil
}

// encodeState is the state document as a FileStore writes it (and a
// PGStore stores it).
func encodeState(s *State) ([]byte, error) {
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// checkState refuses a state the engine cannot act on as written: an
// unknown plan or status, or a record that does not parse. Acting on it
// would go wrong quietly: a record that does not parse reads as no record
// (a publish would then delete the RRset). A step outside the plan reads
// as done (State.CurrentStep).
func checkState(s *State) error {
	if s.Version < 0 {
		return fmt.Errorf("format version %d", s.Version)
	}
	if !s.Plan.Valid() {
		return fmt.Errorf("unknown plan %q", s.Plan)
	}
	switch s.Status {
	case StatusActive, StatusDone, StatusAborted:
	default:
		return fmt.Errorf("unknown status %q", s.Status)
	}
	for _, f := range []struct {
		name string
		recs []string
	}{
		{"old_ee", s.OldEE}, {"old_ta", s.OldTA}, {"new_ta", nonEmpty(s.NewTA)}, {"new_tas", s.NewTAs}, {"next_ee", nonEmpty(s.Next)},
		{"new_ee", nonEmpty(s.NewEE)}, {"added", s.Added}, {"want", s.Want},
	} {
		if err := checkRecords(f.name, f.recs); err != nil {
			return err
		}
	}
	for i, v := range s.Versions {
		if err := checkRecords(fmt.Sprintf("versions[%d]", i), v.Records); err != nil {
			return err
		}
	}
	return nil
}

// checkRecords returns an error naming field when a record does not parse.
func checkRecords(field string, recs []string) error {
	for i, r := range recs {
		if _, err := tlsa.ParseRecord(r); err != nil {
			return fmt.Errorf("%s[%d]: %w", field, i, err)
		}
	}
	return nil
}

// Save writes s atomically to the state file of s.Host. It does not take
// the lock: callers hold it around load → check → act → save.
func (store *FileStore) Save(s *State) error {
	if s == nil {
		return errors.New("rollover: save: nil state")
	}
	h, err := normalizeHost(s.Host)
	if err != nil {
		return err
	}
	b, err := encodeState(s)
	if err != nil {
		return fmt.Errorf("rollover: save state of %s: %w", h, err)
	}
	if err := writeAtomic(store.dir, h+".json", b); err != nil {
		return fmt.Errorf("rollover: save state of %s: %w", h, err)
	}
	return nil
}

// List returns the hosts that have a state file, sorted.
func (store *FileStore) List() ([]string, error) {
	ents, err := os.ReadDir(store.dir)
	if err != nil {
		return nil, fmt.Errorf("rollover: list: %w", err)
	}
	hosts := []string{}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if h, err := normalizeHost(name); err == nil && h == name {
			hosts = append(hosts, h)
		}
	}
	slices.Sort(hosts)
	return hosts, nil
}

// materialManifest marks a staged chain and key as one complete pair.
type materialManifest struct {
	Version     int    `json:"version"`
	ChainSHA256 string `json:"chain_sha256"`
	KeySHA256   string `json:"key_sha256"`
}

// PutMaterial stages m for host under name. The pair is committed by its
// manifest:
//
//  1. write the chain, the key and the new manifest to temporary files;
//  2. remove the old manifest (and fsync the directory);
//  3. rename the key, then the chain, into place;
//  4. rename the manifest into place and fsync the directory.
//
// A crash before step 4 leaves no manifest, which GetMaterial reports as
// ErrNoMaterial (the caller stages again); a crash after it leaves the new
// pair. So a chain is never read together with a key from another
// PutMaterial. The manifest's digests catch pairs changed by hand.
func (store *FileStore) PutMaterial(host, name string, m Material) error {
	h, err := checkStage(host, name, m)
	if err != nil {
		return err
	}
	dir := store.hostDir(h)
	if err := os.Mkdir(dir, 0o700); err == nil {
		if err := safefile.SyncDir(store.dir); err != nil {
			return fmt.Errorf("rollover: stage material %s/%s: %w", h, name, err)
		}
	} else if !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("rollover: stage material %s/%s: %w", h, name, err)
	}

	cs, ks := sha256.Sum256(m.ChainPEM), sha256.Sum256(m.KeyPEM)
	man, err := json.MarshalIndent(materialManifest{
		Version:     1,
		ChainSHA256: hex.EncodeToString(cs[:]),
		KeySHA256:   hex.EncodeToString(ks[:]),
	}, "", "\t")
	if err != nil {
		return fmt.Errorf("rollover: stage material %s/%s: %w", h, name, err)
	}
	man = append(man, '\n')

	manPath := filepath.Join(dir, name+".manifest.json")
	finals := []string{
		filepath.Join(dir, name+".key.pem"),
		filepath.Join(dir, name+".chain.pem"),
		manPath,
	}
	// Staged files in creation order; Close removes those not renamed.
	var staged []*safefile.File
	defer func() {
		for _, f := range staged {
			f.Close()
		}
	}()
	for i, data := range [][]byte{m.KeyPEM, m.ChainPEM, man} {
		f, err := safefile.Stage(finals[i], data, safefile.Options{Mode: 0o600})
		if err != nil {
			return fmt.Errorf("rollover: stage material %s/%s: %w", h, name, err)
		}
		staged = append(staged, f)
	}

	if err := os.Remove(manPath); err == nil {
		if err := safefile.SyncDir(dir); err != nil {
			return fmt.Errorf("rollover: stage material %s/%s: %w", h, name, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rollover: stage material %s/%s: %w", h, name, err)
	}
	for _, f := range staged {
		if err := f.Commit(); err != nil {
			return fmt.Errorf("rollover: stage material %s/%s: %w", h, name, err)
		}
	}
	// Close fsyncs the directory after the renames.
	for _, f := range staged {
		if err := f.Close(); err != nil {
			return fmt.Errorf("rollover: stage material %s/%s: %w", h, name, err)
		}
	}
	return nil
}

// GetMaterial returns the material staged for host under name, or
// ErrNoMaterial when none was staged or its staging did not complete.
func (store *FileStore) GetMaterial(host, name string) (Material, error) {
	h, err := materialHost(host, name)
	if err != nil {
		return Material{}, err
	}
	dir := store.hostDir(h)
	manPath := filepath.Join(dir, name+".manifest.json")
	mb, err := os.ReadFile(manPath)
	if errors.Is(err, os.ErrNotExist) {
		return Material{}, fmt.Errorf("%w: %s/%s", ErrNoMaterial, h, name)
	}
	if err != nil {
		return Material{}, fmt.Errorf("rollover: read material %s/%s: %w", h, name, err)
	}
	var man materialManifest
	if err := json.Unmarshal(mb, &man); err != nil {
		return Material{}, fmt.Errorf("rollover: material manifest %s is corrupt: %v", manPath, err)
	}
	var m Material
	for _, f := range []struct {
		path string
		hex  string
		dst  *[]byte
	}{
		{filepath.Join(dir, name+".chain.pem"), man.ChainSHA256, &m.ChainPEM},
		{filepath.Join(dir, name+".key.pem"), man.KeySHA256, &m.KeyPEM},
	} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return Material{}, fmt.Errorf("rollover: read material %s/%s: %w", h, name, err)
		}
		want, err := hex.DecodeString(f.hex)
		sum := sha256.Sum256(b)
		if err != nil || !bytes.Equal(sum[:], want) {
			return Material{}, fmt.Errorf("rollover: material file %s does not match its manifest %s (changed by hand?); stage the material again",
				f.path, manPath)
		}
		*f.dst = b
	}
	return m, nil
}

// lockHolder is written into a lock file by the process that holds it, for
// error messages only; the flock itself is the lock.
type lockHolder struct {
	PID   int       `json:"pid"`
	Since time.Time `json:"since"`
}

// Lock takes the exclusive lock of host: flock(LOCK_EX|LOCK_NB) on
// <dir>/<host>.lock, retried every 50 ms until ctx is done, when it returns
// an error wrapping ErrLocked that names the holder's pid. The lock belongs
// to an open file description, so a second Lock in the same process (another
// goroutine) waits too.
//
// Stale locks need no cleanup: the kernel drops a flock when the last
// descriptor of the file closes, which includes the holder's death by
// SIGKILL. The descriptor is close-on-exec, so hook processes do not inherit
// it. The lock file is never removed (removing it would let a waiter lock an
// unlinked inode while a newcomer locks a fresh one), only emptied on unlock.
//
// The returned unlock may be called more than once; later calls do nothing.
func (store *FileStore) Lock(ctx context.Context, host string) (unlock func() error, err error) {
	h, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	p := store.lockPath(h)
	f, err := store.lockFile(ctx, p)
	if errors.Is(err, errBusy) {
		return nil, fmt.Errorf("%w: %s: lock %s held by %s", ErrLocked, h, p, describeHolder(f))
	} else if err != nil {
		return nil, fmt.Errorf("rollover: lock %s: %w", h, err)
	}

	// Record who holds the lock. This file is rewritten in place, not
	// renamed, because the lock lives on its inode; a torn write only spoils
	// the diagnostic.
	info, _ := json.Marshal(lockHolder{PID: os.Getpid(), Since: store.clock.Now().UTC().Truncate(time.Second)})
	if err := f.Truncate(0); err == nil {
		f.WriteAt(append(info, '\n'), 0)
	}

	var once sync.Once
	var uerr error
	return func() error {
		once.Do(func() {
			f.Truncate(0)
			uerr = errors.Join(flock(f, syscall.LOCK_UN), f.Close())
			if uerr != nil {
				uerr = fmt.Errorf("rollover: unlock %s: %w", h, uerr)
			}
		})
		return uerr
	}, nil
}

// errBusy: lockFile gave up because ctx ended while another holder had it.
var errBusy = errors.New("busy")

// lockFile opens (creating, mode 0600, never through a symlink) the lock
// file at path and takes flock(LOCK_EX|LOCK_NB) on it, retried every poll
// until ctx is done. When ctx ends first it returns the still open file
// (for describeHolder; the caller closes it) and errBusy; on other errors
// no file.
func (store *FileStore) lockFile(ctx context.Context, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	var t *time.Ticker
	for {
		err := flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		if t == nil {
			t = time.NewTicker(store.poll)
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			return f, errBusy
		case <-t.C:
		}
	}
}

// describeHolder reads the holder info of a lock file for an error message.
func describeHolder(f *os.File) string {
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 4096))
	var lh lockHolder
	if err != nil || json.Unmarshal(b, &lh) != nil || lh.PID == 0 {
		return "another process (holder unknown)"
	}
	return fmt.Sprintf("pid %d since %s", lh.PID, lh.Since.Format(time.RFC3339))
}

// flock retries on EINTR, which Go's runtime signals can cause.
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// writeAtomic replaces dir/name with data, mode 0600 (see [safefile.Write]):
// a reader sees the old or the new file, and after a crash one of them is on
// disk.
func writeAtomic(dir, name string, data []byte) error {
	return safefile.Write(filepath.Join(dir, name), data, safefile.Options{Mode: 0o600})
}
