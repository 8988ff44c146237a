//go:build !nopostgres

package rollover

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
)

// One PostgreSQL server per test binary, started by the first test that
// needs it; every test gets a fresh database.
var shared struct {
	once sync.Once
	pg   *testbed.Postgres
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.pg != nil {
		if err := shared.pg.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(code)
}

// testPG returns the shared server (skipping or failing as
// testbed.RequirePostgres does when PostgreSQL cannot run here).
func testPG(t testing.TB) *testbed.Postgres {
	t.Helper()
	testbed.RequirePostgres(t)
	shared.once.Do(func() {
		start := time.Now()
		shared.pg, shared.err = testbed.LaunchPostgres(context.Background(), testbed.PostgresOptions{})
		if shared.err == nil {
			fmt.Fprintf(os.Stderr, "rollover tests: PostgreSQL started in %v\n", time.Since(start).Round(time.Millisecond))
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.pg
}

// writeKeyFile writes a fresh material key (base64, 0600) into dir.
func writeKeyFile(t testing.TB, dir string) string {
	t.Helper()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	f := filepath.Join(dir, fmt.Sprintf("state-%x.key", k[:4]))
	if err := os.WriteFile(f, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// pgBackend is one test database with its key file.
type pgBackend struct {
	pg      *testbed.Postgres
	dsn     string
	pwfile  string
	keyFile string
	n       int
}

func newPGBackend(t testing.TB) *pgBackend {
	pg := testPG(t)
	return &pgBackend{pg: pg, dsn: pg.CreateDB(t), pwfile: pg.PasswordFile(t), keyFile: writeKeyFile(t, t.TempDir())}
}

// schema returns a backend on a new schema of b's database (search_path in
// the DSN): an empty store far cheaper than a new database.
func (b *pgBackend) schema(t testing.TB, name string) *pgBackend {
	t.Helper()
	b.pg.Exec(t, testbed.DBName(b.dsn), fmt.Sprintf("CREATE SCHEMA %s AUTHORIZATION %s", name, testbed.PostgresUser))
	c := *b
	c.dsn += "&search_path=" + name
	return &c
}

// open opens a store (runner "runner-<n>" unless given) on the database.
func (b *pgBackend) open(t testing.TB, runner string, lease time.Duration) *PGStore {
	t.Helper()
	b.n++
	if runner == "" {
		runner = fmt.Sprintf("runner-%d", b.n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := OpenPG(ctx, PGOptions{DSN: b.dsn, PasswordFile: b.pwfile, KeyFile: b.keyFile, Runner: runner, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func init() {
	storeFactories = append(storeFactories, storeFactory{"postgres", sameForTest(func(t *testing.T) func() Store {
		b := newPGBackend(t)
		return func() Store { return b.open(t, "", 0) }
	})})
}

// waitDone waits up to d for ctx to end and returns how long it took, or
// fails the test.
func waitDone(t *testing.T, ctx context.Context, d time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-ctx.Done():
		return time.Since(start)
	case <-time.After(d):
		t.Fatalf("%s: the held context was not cancelled within %v", what, d)
		return 0
	}
}

// TestPGLeaseTakenOnlyAfterExpiry: a live lease is never taken, not even by
// a runner of the same name; once its holder stops renewing, the holder
// stops acting (held cancelled, ErrLeaseLost) before another runner takes
// it by the database's clock.
func TestPGLeaseTakenOnlyAfterExpiry(t *testing.T) {
	b := newPGBackend(t)
	const lease = 500 * time.Millisecond
	a, other, same := b.open(t, "runner-a", lease), b.open(t, "runner-b", lease), b.open(t, "runner-a", lease)
	ctx := context.Background()
	heldA, unlockA, err := a.LockLease(ctx, LeaseHost, "mx1.example.test.")
	if err != nil {
		t.Fatal(err)
	}
	defer unlockA()
	for _, s := range []*PGStore{other, same} {
		short, cancel := context.WithTimeout(ctx, 750*time.Millisecond) // longer than the lease: renewals keep it
		_, _, err := s.LockLease(short, LeaseHost, "mx1.example.test")
		cancel()
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "mx1.example.test is locked by runner-a until") {
			t.Fatalf("%s took a live lease: %v", s.Runner(), err)
		}
	}
	if heldA.Err() != nil {
		t.Fatalf("a's lease ended while renewed: %v", context.Cause(heldA))
	}
	a.hookNoRenew.Store(true)
	stopped := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	heldB, unlockB, err := other.LockLease(wctx, LeaseHost, "mx1.example.test.")
	if err != nil {
		t.Fatal(err)
	}
	defer unlockB()
	took := time.Since(stopped)
	select {
	case <-heldA.Done():
	default:
		t.Fatal("runner b took the lease while runner a still counted it live")
	}
	if !errors.Is(context.Cause(heldA), ErrLeaseLost) {
		t.Fatalf("a's held cause = %v, want ErrLeaseLost", context.Cause(heldA))
	}
	if heldB.Err() != nil {
		t.Fatal("b's lease ended at once")
	}
	t.Logf("lease %v: renewals stopped, runner b took it %v later; a stopped acting first (%v)", lease, took.Round(time.Millisecond), context.Cause(heldA))
}

// TestPGLeaseLostWhenCutOff: a runner whose sessions are killed and which
// cannot reconnect (pg_terminate_backend with CONNECT revoked) stops
// acting within the lease.
func TestPGLeaseLostWhenCutOff(t *testing.T) {
	b := newPGBackend(t)
	const lease = time.Second
	a := b.open(t, "runner-cut", lease)
	held, unlock, err := a.LockLease(context.Background(), LeaseHost, "mx1.example.test.")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	db := testbed.DBName(b.dsn)
	b.pg.Exec(t, "postgres", fmt.Sprintf("REVOKE CONNECT ON DATABASE %s FROM PUBLIC, %s", db, testbed.PostgresUser))
	t.Cleanup(func() {
		b.pg.Exec(t, "postgres", fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s", db, testbed.PostgresUser))
	})
	start := time.Now()
	n := b.pg.TerminateBackends(t, "tlsactl:runner-cut")
	if n == 0 {
		t.Fatal("no session of the runner to terminate")
	}
	waitDone(t, held, lease, "cut off")
	if !errors.Is(context.Cause(held), ErrLeaseLost) {
		t.Fatalf("cause = %v, want ErrLeaseLost", context.Cause(held))
	}
	t.Logf("lease %v: %d sessions terminated; held cancelled %v later (%v)", lease, n, time.Since(start).Round(time.Millisecond), context.Cause(held))
	st := confState("mx1.example.test.", 0)
	if err := a.Save(st); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Save after the lease was lost = %v, want ErrLeaseLost", err)
	}
}

// TestPGStaleWriteRefused: runner a's lease expires (it cannot renew), b
// takes it and saves; a's Save and PutMaterial fail with ErrLeaseLost and
// b's state stays.
func TestPGStaleWriteRefused(t *testing.T) {
	b := newPGBackend(t)
	a, other := b.open(t, "runner-a", time.Second), b.open(t, "runner-b", 10*time.Second)
	h := "mx1.example.test."
	ctx := context.Background()
	_, unlockA, err := a.LockLease(ctx, LeaseHost, h)
	if err != nil {
		t.Fatal(err)
	}
	defer unlockA()
	if err := a.Save(confState(h, 0)); err != nil {
		t.Fatal(err)
	}
	a.hookNoRenew.Store(true)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, unlockB, err := other.LockLease(wctx, LeaseHost, h)
	if err != nil {
		t.Fatal(err)
	}
	defer unlockB()
	if err := other.Save(confState(h, 2)); err != nil {
		t.Fatal(err)
	}
	if err := a.Save(confState(h, 1)); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale Save = %v, want ErrLeaseLost", err)
	}
	if err := a.PutMaterial(h, "new", Material{ChainPEM: []byte("c"), KeyPEM: []byte("k")}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale PutMaterial = %v, want ErrLeaseLost", err)
	}
	if st, err := other.Load(h); err != nil || st.Step != 2 {
		t.Fatalf("b's state after a's stale writes: %+v, %v", st, err)
	}
	if _, err := other.GetMaterial(h, "new"); !errors.Is(err, ErrNoMaterial) {
		t.Fatalf("a's stale material was written: %v", err)
	}
	// Without any lease a Save is refused; PutMaterial takes one.
	c := b.open(t, "runner-c", time.Second)
	c.transientWait = 300 * time.Millisecond
	if err := c.Save(confState("mx2.example.test.", 0)); err == nil || !strings.Contains(err.Error(), "take its lock first") {
		t.Fatalf("unlocked Save = %v", err)
	}
	if err := c.PutMaterial("mx2.example.test.", "acme", Material{ChainPEM: []byte("c"), KeyPEM: []byte("k")}); err != nil {
		t.Fatalf("unlocked PutMaterial: %v", err)
	}
	if err := c.PutMaterial(h, "acme", Material{ChainPEM: []byte("c"), KeyPEM: []byte("k")}); !errors.Is(err, ErrLocked) {
		t.Fatalf("unlocked PutMaterial of a host another runner holds = %v, want ErrLocked", err)
	}
}

// TestPGSchema: two runners opening a new database at once migrate it
// once; a newer schema is refused and left alone.
func TestPGSchema(t *testing.T) {
	b := newPGBackend(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := OpenPG(context.Background(), PGOptions{DSN: b.dsn, PasswordFile: b.pwfile, Runner: fmt.Sprintf("r%d", i)})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s := b.open(t, "", 0)
	ctx := context.Background()
	var rows, max int
	if err := s.pool.QueryRow(ctx, `SELECT count(*), max(version) FROM tlsactl_schema`).Scan(&rows, &max); err != nil {
		t.Fatal(err)
	}
	if rows != PGSchemaVersion() || max != PGSchemaVersion() {
		t.Fatalf("tlsactl_schema has %d rows up to v%d, want %d (migrated once)", rows, max, PGSchemaVersion())
	}
	newer := PGSchemaVersion() + 98
	if _, err := s.pool.Exec(ctx, `INSERT INTO tlsactl_schema (version, what) VALUES ($1, 'from the future')`, newer); err != nil {
		t.Fatal(err)
	}
	_, err := OpenPG(ctx, PGOptions{DSN: b.dsn, PasswordFile: b.pwfile})
	want := fmt.Sprintf("database schema v%d is newer than this tlsactl (v%d): upgrade tlsactl", newer, PGSchemaVersion())
	if !errors.Is(err, ErrSchemaNewer) || !strings.Contains(err.Error(), want) {
		t.Fatalf("OpenPG on a newer schema = %v, want %q", err, want)
	}
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM tlsactl_schema`).Scan(&rows); err != nil || rows != PGSchemaVersion()+1 {
		t.Fatalf("the refused open changed the schema table: %d rows, %v", rows, err)
	}
	if strings.Contains(err.Error(), b.pg.Password) {
		t.Fatal("error shows the password")
	}
}

// TestPGMaterialEncrypted: the row holds no plaintext; another key is
// refused with both key ids; bad key files are refused with the fix.
func TestPGMaterialEncrypted(t *testing.T) {
	b := newPGBackend(t)
	s := b.open(t, "", 0)
	h := "mx1.example.test."
	p := getPKI(t)
	m := p.renew.mat
	unlock := lockOrFatal(t, s, h)
	if err := s.PutMaterial(h, "new", m); err != nil {
		t.Fatal(err)
	}
	unlock()
	var keyID string
	var nonce, sealed []byte
	if err := s.pool.QueryRow(context.Background(), `SELECT key_id, nonce, sealed FROM materials WHERE host = $1 AND name = 'new'`, "mx1.example.test").Scan(&keyID, &nonce, &sealed); err != nil {
		t.Fatal(err)
	}
	for _, plain := range [][]byte{m.KeyPEM, m.ChainPEM, []byte("PRIVATE KEY"), []byte(base64.StdEncoding.EncodeToString(m.KeyPEM)[:40])} {
		if strings.Contains(string(sealed), string(plain)) {
			t.Fatalf("the sealed row contains plaintext %.30q", plain)
		}
	}
	if len(keyID) != 16 || keyID != s.key.id {
		t.Fatalf("key id %q, want 16 hex digits = %s", keyID, s.key.id)
	}
	// Another runner with another key file.
	otherKey := writeKeyFile(t, t.TempDir())
	o, err := OpenPG(context.Background(), PGOptions{DSN: b.dsn, PasswordFile: b.pwfile, KeyFile: otherKey})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	_, err = o.GetMaterial(h, "new")
	want := fmt.Sprintf("staged material of mx1.example.test/new was encrypted with key %s, state_key_file %s has key %s: give every runner the same key file", keyID, otherKey, o.key.id)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("GetMaterial with another key = %v\nwant %q", err, want)
	}
	// A row moved to another name does not open.
	if _, err := s.pool.Exec(context.Background(), `UPDATE materials SET name = 'moved' WHERE host = 'mx1.example.test'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMaterial(h, "moved"); err == nil || !strings.Contains(err.Error(), "does not decrypt") {
		t.Fatalf("moved row = %v", err)
	}

	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return f
	}
	hex64 := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name, file, want string
	}{
		{"missing", filepath.Join(dir, "nope.key"), "openssl rand -base64 32 > " + filepath.Join(dir, "nope.key")},
		{"short", write("short.key", base64.StdEncoding.EncodeToString(make([]byte, 16)), 0o600), "does not hold a 32-byte key"},
		{"not base64", write("junk.key", "not a key at all", 0o600), "does not hold a 32-byte key"},
		{"world-readable", write("open.key", hex64, 0o644), "chmod 600 " + filepath.Join(dir, "open.key")},
		{"group-readable", write("group.key", hex64, 0o640), "permissions too open"},
		{"directory", dir, "not a regular file"},
		{"hex ok", write("hex.key", hex64+"\n", 0o600), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := loadMaterialKey(tc.file)
			if tc.want == "" {
				if err != nil || k == nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file) {
				t.Fatalf("loadMaterialKey = %v, want %q naming the file", err, tc.want)
			}
			if strings.Contains(err.Error(), hex64) {
				t.Fatal("the error shows the key")
			}
		})
	}
	// No key file: the store opens, material is refused with the fix.
	nk, err := OpenPG(context.Background(), PGOptions{DSN: b.dsn, PasswordFile: b.pwfile})
	if err != nil {
		t.Fatal(err)
	}
	defer nk.Close()
	if _, err := nk.GetMaterial(h, "moved"); err == nil || !strings.Contains(err.Error(), "state_key_file") {
		t.Fatalf("GetMaterial without a key file = %v", err)
	}
}

// TestPGDatabaseRestart: a lease shorter than the database's downtime is
// lost (held cancelled); a longer one survives a restart, renewed over new
// connections.
func TestPGDatabaseRestart(t *testing.T) {
	b := newPGBackend(t)
	ctx := context.Background()
	short := b.open(t, "short", 300*time.Millisecond)
	long := b.open(t, "long", 3*time.Second)
	heldS, unlockS, err := short.LockLease(ctx, LeaseHost, "mx1.example.test.")
	if err != nil {
		t.Fatal(err)
	}
	defer unlockS()
	heldL, unlockL, err := long.LockLease(ctx, LeaseHost, "mx2.example.test.")
	if err != nil {
		t.Fatal(err)
	}
	defer unlockL()
	start := time.Now()
	b.pg.Stop(t)
	waitDone(t, heldS, 300*time.Millisecond, "database stopped")
	lostAfter := time.Since(start)
	if !errors.Is(context.Cause(heldS), ErrLeaseLost) {
		t.Fatalf("cause = %v", context.Cause(heldS))
	}
	// While the database is down, reads and fenced writes say so with
	// ErrStoreUnavailable (the fleet retries instead of holding a host).
	if _, err := long.Load("mx2.example.test."); !errors.Is(err, ErrStoreUnavailable) {
		t.Errorf("Load with the database down: %v, want ErrStoreUnavailable", err)
	}
	if err := long.Save(confState("mx2.example.test.", 0)); !errors.Is(err, ErrStoreUnavailable) {
		t.Errorf("Save with the database down: %v, want ErrStoreUnavailable", err)
	}
	b.pg.Start(t)
	down := time.Since(start)
	t.Logf("database down %v; the 300ms lease was cancelled %v after the stop began", down.Round(time.Millisecond), lostAfter.Round(time.Millisecond))
	// The long lease must be renewed after the restart, then still held.
	l := long.leaseOf(LeaseHost, "mx2.example.test")
	deadline := time.Now().Add(3 * time.Second)
	for {
		l.mu.Lock()
		renewed := l.lastRenewal.After(start.Add(down))
		l.mu.Unlock()
		if renewed {
			break
		}
		if time.Now().After(deadline) || heldL.Err() != nil {
			t.Fatalf("the 3s lease was not renewed after the restart (%v)", context.Cause(heldL))
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	if heldL.Err() != nil {
		t.Fatalf("the 3s lease was lost: %v", context.Cause(heldL))
	}
	if err := long.Save(confState("mx2.example.test.", 0)); err != nil {
		t.Fatalf("Save after the restart: %v", err)
	}
	t.Logf("the 3s lease survived a %v restart", down.Round(time.Millisecond))
}

// TestPGEngineLeaseContext: an engine run whose lease is lost has
// its held context cancelled, so the step's I/O stops, and its next write
// is refused.
func TestPGEngineLeaseContext(t *testing.T) {
	b := newPGBackend(t)
	s := b.open(t, "runner-e", time.Second)
	e := &Engine{Store: s, Clock: SystemClock{}, Runner: s.Runner()}
	ctx, unlock, err := e.lock(context.Background(), "mx1.example.test.")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if ctx.Err() != nil {
		t.Fatal("held context ended at once")
	}
	s.hookNoRenew.Store(true)
	took := waitDone(t, ctx, 2*time.Second, "renewals stopped")
	if !errors.Is(context.Cause(ctx), ErrLeaseLost) {
		t.Fatalf("cause %v", context.Cause(ctx))
	}
	t.Logf("engine's held context cancelled %v after renewals stopped (lease 1s)", took.Round(time.Millisecond))
	if err := s.Save(confState("mx1.example.test.", 0)); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Save after the engine's lease was lost = %v, want ErrLeaseLost", err)
	}
	// The wait for a lock stays bounded by LockWait, the held context is not.
	e2 := &Engine{Store: b.open(t, "runner-f", 2*time.Second), Clock: SystemClock{}, LockWait: 200 * time.Millisecond}
	held, unlock2, err := e2.lock(context.Background(), "mx3.example.test.")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock2()
	select {
	case <-held.Done():
		t.Fatal("held ended")
	case <-time.After(500 * time.Millisecond): // past LockWait: the lease's context outlives the wait
	}
}

func init() {
	var mu sync.Mutex
	dbs := map[testing.TB]*pgBackend{}
	realStores = append(realStores, realStore{"postgres", func(t testing.TB) func() Store {
		// One database per test, a schema per backend.
		mu.Lock()
		db := dbs[t]
		if db == nil {
			db = newPGBackend(t)
			dbs[t] = db
			t.Cleanup(func() { mu.Lock(); delete(dbs, t); mu.Unlock() })
		}
		db.n++
		b := db.schema(t, fmt.Sprintf("store%d", db.n))
		mu.Unlock()
		s := b.open(t, "", 0)
		first := true
		return func() Store {
			if !first {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if _, err := s.pool.Exec(ctx, `TRUNCATE states, materials, ledgers, migrations, leases`); err != nil {
					t.Fatal(err)
				}
			}
			first = false
			return s
		}
	}})
}

// TestPGLeases: Leases lists who holds what, by the runner's name, and
// drops a lease once it is released.
func TestPGLeases(t *testing.T) {
	b := newPGBackend(t)
	ctx := context.Background()
	s := b.open(t, "runner-x", 5*time.Second)
	_, unlock, err := s.LockLease(ctx, LeaseHost, "mx1.example.test.")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := s.Leases(ctx)
	if err != nil || len(ls) != 1 || ls[0].Kind != LeaseHost || ls[0].Name != "mx1.example.test" || ls[0].Holder != "runner-x" || ls[0].Token < 1 || !ls[0].Expires.After(time.Now().Add(-time.Minute)) {
		t.Fatalf("Leases while held = %+v, %v; want one host lease of runner-x", ls, err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if ls, err := s.Leases(ctx); err != nil || len(ls) != 0 {
		t.Fatalf("Leases after unlock = %+v, %v; want none", ls, err)
	}
}
