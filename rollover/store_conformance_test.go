package rollover

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// storeFactory opens stores for the conformance suite: open(t) gives a
// fresh, empty store the first time it is called for t and, called again
// with the same t, another instance on the same backend (a second runner).
type storeFactory struct {
	name string
	open func(t *testing.T) Store
}

// storeFactories are the stores every conformance test runs on; the
// PostgreSQL store adds itself (pgstore_test.go) unless built with
// nopostgres.
var storeFactories = []storeFactory{
	{"mem", sameForTest(func(t *testing.T) func() Store {
		m := newMemStore()
		return func() Store { return m }
	})},
	{"file", sameForTest(func(t *testing.T) func() Store {
		dir := t.TempDir()
		return func() Store {
			s, err := NewFileStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})},
}

// sameForTest turns a backend constructor (called once per test, returning
// how to open an instance on it) into a storeFactory.open.
func sameForTest(backend func(t *testing.T) func() Store) func(t *testing.T) Store {
	var mu sync.Mutex
	opened := map[*testing.T]func() Store{}
	return func(t *testing.T) Store {
		mu.Lock()
		inst, ok := opened[t]
		if !ok {
			inst = backend(t)
			opened[t] = inst
			t.Cleanup(func() {
				mu.Lock()
				delete(opened, t)
				mu.Unlock()
			})
		}
		mu.Unlock()
		return inst()
	}
}

func TestStoreConformance(t *testing.T) {
	for _, f := range storeFactories {
		t.Run(f.name, func(t *testing.T) { testStoreConformance(t, f.open) })
	}
}

// confState is a minimal valid state of host.
func confState(host string, step int) *State {
	return &State{Version: stateFormat, Host: host, Port: 25, Owner: "_25._tcp." + host, Plan: PlanCAMigration,
		Step: step, Status: StatusActive, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), TTL: 300,
		OldEE: []string{confRecord(1)}, History: []Event{{At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Step: StepPublishTA, What: "started", Runner: "r1"}}}
}

// confRecord is a distinct, valid 3 1 1 record for i.
func confRecord(i int) string { return fmt.Sprintf("3 1 1 %064x", i) }

func trimDots(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.TrimSuffix(s, ".")
	}
	return out
}

// lockOrFatal takes host's lock on s.
func lockOrFatal(t *testing.T, s Store, host string) func() error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unlock, err := s.Lock(ctx, host)
	if err != nil {
		t.Fatalf("lock %s: %v", host, err)
	}
	return unlock
}

// testStoreConformance is the behaviour every Store must have; open is as
// storeFactory.open.
func testStoreConformance(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	t.Run("states", func(t *testing.T) {
		s := open(t)
		if _, err := s.Load("mx1.example.test."); !errors.Is(err, ErrNoRollover) {
			t.Fatalf("Load of a new host = %v, want ErrNoRollover", err)
		}
		for _, h := range []string{"mx2.example.test.", "mx1.example.test."} {
			unlock := lockOrFatal(t, s, h)
			if err := s.Save(confState(h, 0)); err != nil {
				t.Fatal(err)
			}
			st := confState(h, 1)
			st.History = append(st.History, Event{At: st.Created.Add(time.Minute), Step: StepWaitTTL, What: "published", Detail: "x"})
			if err := s.Save(st); err != nil {
				t.Fatal(err)
			}
			unlock()
		}
		got, err := s.Load("mx1.example.test.")
		if err != nil {
			t.Fatal(err)
		}
		want := confState("mx1.example.test.", 1)
		want.History = append(want.History, Event{At: want.Created.Add(time.Minute), Step: StepWaitTTL, What: "published", Detail: "x"})
		a, _ := encodeState(got)
		b, _ := encodeState(want)
		if string(a) != string(b) {
			t.Fatalf("loaded\n%s\nwant\n%s", a, b)
		}
		hosts, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(trimDots(hosts), ","); got != "mx1.example.test,mx2.example.test" {
			t.Fatalf("List = %v", hosts)
		}
		// A second instance (runner) sees the same.
		if st, err := open(t).Load("mx2.example.test."); err != nil || st.Step != 1 {
			t.Fatalf("second instance: %v %v", st, err)
		}
	})

	t.Run("material", func(t *testing.T) {
		s := open(t)
		h := "mx1.example.test."
		if _, err := s.GetMaterial(h, "new"); !errors.Is(err, ErrNoMaterial) {
			t.Fatalf("GetMaterial before Put = %v, want ErrNoMaterial", err)
		}
		unlock := lockOrFatal(t, s, h)
		for i, m := range []Material{
			{ChainPEM: []byte("chain one"), KeyPEM: []byte("-----BEGIN PRIVATE KEY-----\none\n")},
			{ChainPEM: []byte("chain two"), KeyPEM: []byte("-----BEGIN PRIVATE KEY-----\ntwo\n")},
		} {
			if err := s.PutMaterial(h, "new", m); err != nil {
				t.Fatalf("put %d: %v", i, err)
			}
			got, err := open(t).GetMaterial(h, "new")
			if err != nil || string(got.ChainPEM) != string(m.ChainPEM) || string(got.KeyPEM) != string(m.KeyPEM) {
				t.Fatalf("get %d = %q %q, %v", i, got.ChainPEM, got.KeyPEM, err)
			}
		}
		if err := s.PutMaterial(h, "before", Material{ChainPEM: []byte("c"), KeyPEM: []byte("k")}); err != nil {
			t.Fatal(err)
		}
		unlock()
		if _, err := s.GetMaterial(h, "other"); !errors.Is(err, ErrNoMaterial) {
			t.Fatalf("GetMaterial of another name = %v, want ErrNoMaterial", err)
		}
		if en, ok := s.(Enumerator); ok {
			names, err := en.ListMaterial(h)
			if err != nil || strings.Join(names, ",") != "before,new" {
				t.Fatalf("ListMaterial = %v, %v", names, err)
			}
		}
	})

	t.Run("ledger without lost updates", func(t *testing.T) {
		a, b := open(t), open(t)
		owner := "_25._tcp.mx1.example.test."
		const workers, each = 8, 5
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := a
				if w%2 == 1 {
					s = b // a second runner
				}
				for i := range each {
					n := w*each + i + 1
					_, err := s.UpdateLedger(ctx, owner, func(l *Ledger) error {
						l.Versions = append(l.Versions, Version{Records: []string{confRecord(n)}, TTL: 300, FirstSeen: time.Unix(int64(n), 0).UTC()})
						return nil
					})
					if err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		l, err := open(t).LoadLedger(owner)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, v := range l.Versions {
			seen[v.Records[0]] = true
		}
		if len(l.Versions) != workers*each || len(seen) != workers*each {
			t.Fatalf("ledger has %d versions (%d distinct), want %d: updates were lost", len(l.Versions), len(seen), workers*each)
		}
		// fn failing writes nothing.
		_, err = a.UpdateLedger(ctx, owner, func(l *Ledger) error {
			l.Versions = append(l.Versions, Version{Records: []string{confRecord(999)}})
			return errors.New("refused")
		})
		if err == nil {
			t.Fatal("UpdateLedger with a failing fn succeeded")
		}
		if l, _ := a.LoadLedger(owner); len(l.Versions) != workers*each {
			t.Fatalf("a failed update wrote: %d versions", len(l.Versions))
		}
		if en, ok := a.(Enumerator); ok {
			owners, err := en.ListLedgers()
			if err != nil || strings.Join(trimDots(owners), ",") != strings.TrimSuffix(owner, ".") {
				t.Fatalf("ListLedgers = %v, %v", owners, err)
			}
		}
	})

	t.Run("lock exclusion across instances", func(t *testing.T) {
		a, b := open(t), open(t)
		h := "mx1.example.test."
		unlock := lockOrFatal(t, a, h)
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := b.Lock(short, h)
		cancel()
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second instance's Lock while held = %v, want ErrLocked", err)
		}
		if err := unlock(); err != nil {
			t.Fatal(err)
		}
		lockOrFatal(t, b, h)()
		// Two runners at once on ten hosts: each host goes to exactly one.
		var mu sync.Mutex
		owners := map[string]int{}
		var unlocks []func() error
		var wg sync.WaitGroup
		for r, s := range []Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 10 {
					host := fmt.Sprintf("fleet%d.example.test.", i)
					c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
					u, err := s.Lock(c, host)
					cancel()
					mu.Lock()
					if err == nil {
						owners[host] |= 1 << r
						unlocks = append(unlocks, u)
					} else if !errors.Is(err, ErrLocked) {
						t.Error(err)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		for i := range 10 {
			host := fmt.Sprintf("fleet%d.example.test.", i)
			if o := owners[host]; o != 1 && o != 2 {
				t.Errorf("%s locked by runners %b, want exactly one", host, o)
			}
		}
		for _, u := range unlocks {
			_ = u()
		}
	})

	t.Run("migrations", func(t *testing.T) {
		s := open(t)
		ms, ok := s.(MigrationStore)
		if !ok {
			t.Skip("not a MigrationStore")
		}
		if _, err := ms.LoadMigration("m1"); !errors.Is(err, ErrNoMigration) {
			t.Fatalf("LoadMigration of a new name = %v, want ErrNoMigration", err)
		}
		unlock, err := ms.LockMigration(ctx, "m1")
		if err != nil {
			t.Fatal(err)
		}
		other := open(t).(MigrationStore)
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err = other.LockMigration(short, "m1")
		cancel()
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second instance's LockMigration while held = %v, want ErrLocked", err)
		}
		m := &Migration{Version: migrationFormat, Spec: MigrationSpec{Name: "m1", MaxParallel: 2}, Status: MigrationActive,
			History: []MigrationEvent{{At: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), What: "created", Runner: "r1"}}}
		for _, st := range []MigrationStatus{MigrationActive, MigrationPaused} {
			m.Status = st
			if err := ms.SaveMigration(m); err != nil {
				t.Fatal(err)
			}
		}
		_ = unlock()
		got, err := other.LoadMigration("m1")
		if err != nil || got.Status != MigrationPaused || got.Spec.MaxParallel != 2 || len(got.History) != 1 || got.History[0].Runner != "r1" {
			t.Fatalf("LoadMigration = %+v, %v", got, err)
		}
		names, err := other.ListMigrations()
		if err != nil || strings.Join(names, ",") != "m1" {
			t.Fatalf("ListMigrations = %v, %v", names, err)
		}
	})
}

// realStore opens real stores for the property and crash tests: backend(t)
// prepares a backend and returns fresh, which returns an empty store on it
// each time it is called (one at a time).
type realStore struct {
	name    string
	backend func(t testing.TB) (fresh func() Store)
}

// realStores are FileStore and (unless built with nopostgres) PGStore.
var realStores = []realStore{
	{"file", func(t testing.TB) func() Store {
		return func() Store {
			s, err := NewFileStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}},
}

// crashStride: TestCrashResumeStores crashes at every crashStride-th
// boundary (the wall time of real stores' fsyncs and round trips).
const crashStride = 4

var storeSeeds = flag.Int("rollover.storeseeds", 20, "seeds of TestPropertyRolloverStores per real store")

// TestPropertyRolloverStores is TestPropertyRollover on the real stores
// (fewer seeds; the full count runs on memStore). The store's Save fault and
// append-only check come from newHookStore.
func TestPropertyRolloverStores(t *testing.T) {
	n := *storeSeeds
	if testing.Short() {
		n = max(1, n/4)
	}
	getPKI(t)
	for _, rs := range realStores {
		t.Run(rs.name, func(t *testing.T) {
			start := time.Now()
			stores := make([]testStore, n)
			for i := range stores {
				stores[i] = newHookStore(rs.backend(t)())
			}
			t.Logf("%d stores opened in %v", n, time.Since(start).Round(time.Millisecond))
			msgs, stats := parallelSeedsOn(n, 6, func(i int, stats map[string]int) string {
				return runPropertyOn(t, uint64(i+1), stats, stores[i])
			})
			for i, msg := range msgs {
				if msg != "" {
					t.Fatalf("seed %d on %s (rerun: go test ./rollover -run TestPropertyRolloverStores/%s -rollover.storeseeds=%d):\n%s", i+1, rs.name, rs.name, i+1, msg)
				}
			}
			t.Logf("%d seeds in %v: %v", n, time.Since(start).Round(time.Millisecond), stats)
		})
	}
}

// TestCrashResumeStores is the first part of TestCrashResume on the real
// stores: the engine is killed at every crashStride-th call boundary of each
// plan (a different offset per plan; every boundary runs on memStore) and a
// fresh engine finishes the rollover with the reference RRset.
func TestCrashResumeStores(t *testing.T) {
	p := getPKI(t)
	for _, rs := range realStores {
		t.Run(rs.name, func(t *testing.T) {
			start := time.Now()
			fresh := rs.backend(t)
			points := 0
			for si, sc := range scenarios(p) {
				w, store := sc.world(t), newHookStore(fresh())
				sc.start(t, w, store, true, 300, 10*time.Second)
				ref := &crasher{w: w}
				if w.runToEnd(t, w.engine(store, ref)).Status != StatusDone {
					t.Fatalf("%s: reference run not done", sc.name)
				}
				want := w.dns.provider().Records
				assertRRSet(t, want, sc.final...)
				assertClean(t, w, store)
				for k := 1 + si%crashStride; k <= ref.n; k += crashStride {
					points++
					w, store := sc.world(t), newHookStore(fresh())
					sc.start(t, w, store, true, 300, 10*time.Second)
					c := &crasher{w: w, at: k}
					crashed := catchCrash(func() { w.runToEnd(t, w.engine(store, c)) })
					if crashed == nil {
						t.Fatalf("%s: boundary %d (%s): no crash", sc.name, k, ref.points[k-1])
					}
					st := w.runToEnd(t, w.engine(store, nil))
					if st.Status != StatusDone || !sameSet(w.dns.provider().Records, want) || !w.servesOnly(sc.newLeaf.cert) {
						t.Fatalf("%s: crash at %d (%s): resumed to %s with RRset %s, want done with %s", sc.name, k, crashed.point, st.Status, rrKey(w.dns.provider().Records), rrKey(want))
					}
					assertClean(t, w, store)
					if t.Failed() {
						return
					}
				}
			}
			t.Logf("%d crash points in %v", points, time.Since(start).Round(time.Millisecond))
		})
	}
}
