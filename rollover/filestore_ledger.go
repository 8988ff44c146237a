package rollover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// ledgerDir is the subdirectory of a FileStore holding ledgers, one file per
// TLSA owner name: <dir>/_ledger/<owner>.json and its lock <owner>.lock. The
// leading underscore keeps it apart from every MX host's material directory.
const ledgerDir = "_ledger"

func (store *FileStore) ledgerPaths(owner string) (dir, name string, err error) {
	o, err := normalizeHost(owner)
	if err != nil {
		return "", "", fmt.Errorf("rollover: ledger: %w", err)
	}
	return filepath.Join(store.dir, ledgerDir), o, nil
}

// LoadLedger returns the owner's ledger, or an empty one. A ledger that does
// not parse is an error naming the file, never an empty ledger: forgetting
// versions would forget what caches may hold.
func (store *FileStore) LoadLedger(owner string) (*Ledger, error) {
	dir, o, err := store.ledgerPaths(owner)
	if err != nil {
		return nil, err
	}
	return readLedger(filepath.Join(dir, o+".json"), o)
}

func readLedger(path, owner string) (*Ledger, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Ledger{Format: ledgerFormat, Owner: owner + "."}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rollover: ledger: %w", err)
	}
	return decodeLedger(b, owner, "ledger file "+path)
}

// decodeLedger parses the ledger document of owner (normalized, no
// trailing dot) read from where ("ledger file /x/_ledger/o.json").
func decodeLedger(b []byte, owner, where string) (*Ledger, error) {
	corrupt := func(why string) (*Ledger, error) {
		return nil, fmt.Errorf("rollover: %s is corrupt (%s); it was not changed: repair it by hand (removing it forgets what caches may hold)", where, bounded(why))
	}
	var l Ledger
	if err := json.Unmarshal(b, &l); err != nil {
		return corrupt(err.Error())
	}
	if l.Format > ledgerFormat {
		return nil, fmt.Errorf("rollover: %s has format %d; this tlsactl reads up to %d", where, l.Format, ledgerFormat)
	}
	if got := strings.TrimSuffix(strings.ToLower(l.Owner), "."); got != owner {
		return nil, fmt.Errorf("rollover: %s is for %q, not %q", where, bounded(l.Owner), owner)
	}
	if l.Format < 0 {
		return corrupt(fmt.Sprintf("format %d", l.Format))
	}
	// A record that does not parse would read as no record: the version
	// would seem to hold less than it did.
	for i, v := range l.Versions {
		if err := checkRecords(fmt.Sprintf("versions[%d]", i), v.Records); err != nil {
			return corrupt(err.Error())
		}
	}
	return &l, nil
}

// UpdateLedger changes the owner's ledger under its lock (flock on
// <owner>.lock, waited for until ctx ends) and writes it atomically, 0600.
// A change that is not append-only is refused.
func (store *FileStore) UpdateLedger(ctx context.Context, owner string, fn func(*Ledger) error) (*Ledger, error) {
	dir, o, err := store.ledgerPaths(owner)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("rollover: ledger: %w", err)
	}
	f, err := store.lockFile(ctx, filepath.Join(dir, o+".lock"))
	if errors.Is(err, errBusy) {
		f.Close()
		return nil, fmt.Errorf("%w: the ledger of %s: %v", ErrLocked, o, ctx.Err())
	} else if err != nil {
		return nil, fmt.Errorf("rollover: ledger lock: %w", err)
	}
	defer f.Close()
	defer flock(f, syscall.LOCK_UN)
	l, err := readLedger(filepath.Join(dir, o+".json"), o)
	if err != nil {
		return nil, err
	}
	b, err := changeLedger(l, o, fn)
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(dir, o+".json", b); err != nil {
		return nil, fmt.Errorf("rollover: ledger of %s: %w", o, err)
	}
	return l, nil
}

// changeLedger lets fn change l (the ledger of owner o), refuses a change
// that is not append-only and returns the document to write.
func changeLedger(l *Ledger, o string, fn func(*Ledger) error) ([]byte, error) {
	prev := l.Copy()
	if err := fn(l); err != nil {
		return nil, err
	}
	if bad := AppendOnly(prev, l); len(bad) > 0 {
		return nil, fmt.Errorf("rollover: ledger of %s: refused a change that is not append-only: %s", o, strings.Join(bad, "; "))
	}
	return encodeLedger(l, o)
}

// encodeLedger is the document of l, the ledger of owner o (normalized, no
// trailing dot), as a FileStore writes it (and a PGStore stores it); it
// sets l's format and owner.
func encodeLedger(l *Ledger, o string) ([]byte, error) {
	l.Format, l.Owner = ledgerFormat, o+"."
	b, err := json.MarshalIndent(l, "", "\t")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ListLedgers returns the TLSA owner names (lower case, no trailing dot)
// that have a ledger file, sorted (Enumerator).
func (store *FileStore) ListLedgers() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(store.dir, ledgerDir))
	if errors.Is(err, os.ErrNotExist) {
		return []string{}, nil
	} else if err != nil {
		return nil, fmt.Errorf("rollover: list ledgers: %w", err)
	}
	out := []string{}
	for _, e := range ents {
		if o, ok := strings.CutSuffix(e.Name(), ".json"); ok && e.Type().IsRegular() {
			if n, err := normalizeHost(o); err == nil && n == o {
				out = append(out, o)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// ListMaterial returns the names of the material staged for host (complete
// pairs, those with a manifest), sorted (Enumerator).
func (store *FileStore) ListMaterial(host string) ([]string, error) {
	h, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(store.hostDir(h))
	if errors.Is(err, os.ErrNotExist) {
		return []string{}, nil
	} else if err != nil {
		return nil, fmt.Errorf("rollover: list material of %s: %w", h, err)
	}
	out := []string{}
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".manifest.json"); ok && e.Type().IsRegular() && checkMaterialName(n) == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}
