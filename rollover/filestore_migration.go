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

// migrationDir is the subdirectory of a FileStore holding fleet migrations:
// <dir>/_migrations/<name>.json and its lock <name>.lock.
const migrationDir = "_migrations"

// migrationFormat is the newest Migration.Version this code reads.
const migrationFormat = 1

var _ MigrationStore = (*FileStore)(nil)

// CheckMigrationName refuses a migration name that is not
// [a-z0-9][a-z0-9._-]* of at most 64 bytes (it names a file).
func CheckMigrationName(name string) error {
	if name == "" || len(name) > 64 || name[0] == '.' || name[0] == '-' || name[0] == '_' || !safeChars(name, true) ||
		strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".lock") {
		return fmt.Errorf("invalid migration name %q: use lower-case letters, digits, '.', '-' and '_', starting with a letter or digit", name)
	}
	return nil
}

func (store *FileStore) migrationPath(name, ext string) (string, error) {
	if err := CheckMigrationName(name); err != nil {
		return "", err
	}
	dir := filepath.Join(store.dir, migrationDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("rollover: migrations: %w", err)
	}
	return filepath.Join(dir, name+ext), nil
}

// LockMigration takes the migration's lock (flock on
// <dir>/_migrations/<name>.lock) until ctx ends; see Lock.
func (store *FileStore) LockMigration(ctx context.Context, name string) (func() error, error) {
	p, err := store.migrationPath(name, ".lock")
	if err != nil {
		return nil, err
	}
	f, err := store.lockFile(ctx, p)
	if errors.Is(err, errBusy) {
		f.Close()
		return nil, &migrationLocked{name: name, path: p}
	} else if err != nil {
		return nil, fmt.Errorf("rollover: lock migration %s: %w", name, err)
	}
	return func() error {
		if f == nil {
			return nil
		}
		err := errors.Join(flock(f, syscall.LOCK_UN), f.Close())
		f = nil
		return err
	}, nil
}

// migrationLocked is ErrLocked for a migration's lock.
type migrationLocked struct{ name, path string }

func (e *migrationLocked) Error() string {
	return fmt.Sprintf("another tlsactl process is advancing migration %s (lock %s)", e.name, e.path)
}

func (e *migrationLocked) Unwrap() error { return ErrLocked }

// LoadMigration reads a migration. A missing file is ErrNoMigration; a file
// that does not parse or has a newer format is an error naming it.
func (store *FileStore) LoadMigration(name string) (*Migration, error) {
	p, err := store.migrationPath(name, ".json")
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoMigration, name)
	} else if err != nil {
		return nil, fmt.Errorf("rollover: migration %s: %w", name, err)
	}
	return decodeMigration(b, name, "migration file "+p)
}

// decodeMigration parses the document of migration name read from where
// ("migration file /x/_migrations/m.json").
func decodeMigration(b []byte, name, where string) (*Migration, error) {
	var m Migration
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("rollover: %s does not parse: %v (restore it from a backup; do not delete it while hosts are mid-migration)", where, err)
	}
	if m.Version > migrationFormat {
		return nil, fmt.Errorf("rollover: %s has format %d, newer than this tlsactl reads (%d): upgrade tlsactl", where, m.Version, migrationFormat)
	}
	if m.Spec.Name != name {
		return nil, fmt.Errorf("rollover: %s holds migration %q", where, m.Spec.Name)
	}
	return &m, nil
}

// encodeMigration is the migration document as a FileStore writes it.
func encodeMigration(m *Migration) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// SaveMigration writes the migration atomically, mode 0600.
func (store *FileStore) SaveMigration(m *Migration) error {
	p, err := store.migrationPath(m.Spec.Name, ".json")
	if err != nil {
		return err
	}
	b, err := encodeMigration(m)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Dir(p), filepath.Base(p), b); err != nil {
		return fmt.Errorf("rollover: save migration %s: %w", m.Spec.Name, err)
	}
	return nil
}

// ListMigrations returns the names of the stored migrations, sorted.
func (store *FileStore) ListMigrations() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(store.dir, migrationDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("rollover: list migrations: %w", err)
	}
	var out []string
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok && e.Type().IsRegular() && CheckMigrationName(name) == nil {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}
