package rollover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// memStore is an in-memory Store for tests. It persists states as JSON, so
// what a later engine run loads is exactly what survived serialization, and
// it checks on every Save that the rollover's history and RRset versions
// only grow (append-only across runs and crashes).
type memStore struct {
	mu       sync.Mutex
	states   map[string][]byte
	material map[string]Material
	locked   map[string]bool
	ledgers  map[string][]byte
	// migrations are the fleet migrations (MigrationStore).
	migrations map[string][]byte

	// failSave makes the next n Save calls fail without writing.
	failSave int
	// saveFault, when set, is asked first by every Save: an error it
	// returns is returned and nothing is written.
	saveFault func(*State) error
	saves     int
	// violations collects append-only breaches; tests assert it is empty.
	violations []string
}

var _ Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{states: map[string][]byte{}, material: map[string]Material{}, locked: map[string]bool{}, ledgers: map[string][]byte{}}
}

func (m *memStore) Lock(ctx context.Context, host string) (func() error, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locked[host] {
		return nil, ErrLocked
	}
	m.locked[host] = true
	var once sync.Once
	return func() error {
		once.Do(func() {
			m.mu.Lock()
			delete(m.locked, host)
			m.mu.Unlock()
		})
		return nil
	}, nil
}

func (m *memStore) Load(host string) (*State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.states[host]
	if !ok {
		return nil, ErrNoRollover
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func (m *memStore) Save(s *State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failSave > 0 {
		m.failSave--
		return errors.New("memstore: disk full")
	}
	if m.saveFault != nil {
		if err := m.saveFault(s); err != nil {
			return err
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if old, ok := m.states[s.Host]; ok {
		var prev State
		if err := json.Unmarshal(old, &prev); err != nil {
			return err
		}
		if prev.Created.Equal(s.Created) {
			m.violations = append(m.violations, appendOnly(&prev, s)...)
		}
	}
	m.states[s.Host] = b
	m.saves++
	return nil
}

// appendOnly lists how next rewrote what prev had persisted.
func appendOnly(prev, next *State) []string {
	var out []string
	if len(next.History) < len(prev.History) {
		out = append(out, fmt.Sprintf("history shrank from %d to %d events", len(prev.History), len(next.History)))
	} else {
		for i, ev := range prev.History {
			if n := next.History[i]; !n.At.Equal(ev.At) || n.Step != ev.Step || n.What != ev.What || n.Detail != ev.Detail {
				out = append(out, fmt.Sprintf("history event %d rewritten: %+v -> %+v", i, ev, n))
			}
		}
	}
	return append(out, AppendOnly(&Ledger{Owner: prev.Owner, Versions: prev.Versions}, &Ledger{Owner: next.Owner, Versions: next.Versions})...)
}

func (m *memStore) LoadLedger(owner string) (*Ledger, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.loadLedger(owner)
}

func (m *memStore) loadLedger(owner string) (*Ledger, error) {
	b, ok := m.ledgers[owner]
	if !ok {
		return &Ledger{Format: ledgerFormat, Owner: owner}, nil
	}
	var l Ledger
	return &l, json.Unmarshal(b, &l)
}

func (m *memStore) UpdateLedger(ctx context.Context, owner string, fn func(*Ledger) error) (*Ledger, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := m.loadLedger(owner)
	if err != nil {
		return nil, err
	}
	prev := l.Copy()
	if err := fn(l); err != nil {
		return nil, err
	}
	m.violations = append(m.violations, AppendOnly(prev, l)...)
	b, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	m.ledgers[owner] = b
	return l, nil
}

// seed records that a check timer has watched owner hold rs since at (the
// usual situation: ages are known).
func (m *memStore) seed(owner string, rs RRSet, negTTL uint32, at time.Time) {
	ttl := rs.TTL
	if len(rs.Records) == 0 {
		ttl = negTTL
	}
	_, _ = m.UpdateLedger(context.Background(), owner, func(l *Ledger) error {
		l.Record([]Sighting{{Kind: SourceAuthoritative, Source: "auth seed", Records: rs.Records, TTL: ttl}}, negTTL, at)
		return nil
	})
}

func (m *memStore) List() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for h := range m.states {
		out = append(out, h)
	}
	sort.Strings(out)
	return out, nil
}

func (m *memStore) PutMaterial(host, name string, mat Material) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.material[host+"/"+name] = Material{ChainPEM: slices.Clone(mat.ChainPEM), KeyPEM: slices.Clone(mat.KeyPEM)}
	return nil
}

func (m *memStore) GetMaterial(host, name string) (Material, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mat, ok := m.material[host+"/"+name]
	if !ok {
		return Material{}, ErrNoMaterial
	}
	return mat, nil
}

// state returns the persisted state of host, or nil.
func (m *memStore) state(host string) *State {
	st, err := m.Load(host)
	if err != nil {
		return nil
	}
	return st
}

// Migrations (MigrationStore), persisted as JSON like states.

func (m *memStore) LockMigration(ctx context.Context, name string) (func() error, error) {
	return m.Lock(ctx, "migration "+name)
}

func (m *memStore) LoadMigration(name string) (*Migration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.migrations[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoMigration, name)
	}
	var out Migration
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (m *memStore) SaveMigration(mig *Migration) error {
	b, err := json.Marshal(mig)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.migrations == nil {
		m.migrations = map[string][]byte{}
	}
	m.migrations[mig.Spec.Name] = b
	return nil
}

func (m *memStore) ListMigrations() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range m.migrations {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// ListLedgers and ListMaterial make memStore an Enumerator (for the
// conformance suite and CopyStore).
func (m *memStore) ListLedgers() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []string{}
	for o := range m.ledgers {
		out = append(out, o)
	}
	sort.Strings(out)
	return out, nil
}

func (m *memStore) ListMaterial(host string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []string{}
	for k := range m.material {
		if h, n, _ := strings.Cut(k, "/"); h == host {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// The hooks of the property and crash tests (testStore).

func (m *memStore) armSaveFault() {
	m.mu.Lock()
	m.failSave = 1
	m.mu.Unlock()
}

func (m *memStore) clearFaults() {
	m.mu.Lock()
	m.failSave = 0
	m.mu.Unlock()
}

func (m *memStore) violationList() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.violations)
}
