package rollover

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newTestFileStore(t *testing.T) *FileStore {
	t.Helper()
	st, err := NewFileStore(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	st.poll = 5 * time.Millisecond
	return st
}

func sampleState(host string) *State {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return &State{
		Version:   1,
		Host:      host,
		Port:      25,
		Owner:     "_25._tcp." + host + ".",
		Plan:      PlanCAMigration,
		Step:      1,
		Status:    StatusActive,
		Created:   t0,
		NotBefore: t0.Add(time.Hour),
		TTL:       3600,
		NegTTL:    300,
		Margin:    Duration(90 * time.Second),
		OldEE:     []string{"3 1 1 aabb"},
		OldTA:     []string{"2 1 1 ccdd"},
		NewTA:     "2 1 1 eeff",
		Versions: []Version{
			{Records: []string{"3 1 1 aabb", "2 1 1 ccdd"}, TTL: 3600, Initial: true, Confirmed: t0, Superseded: t0.Add(time.Minute)},
			{Records: []string{"3 1 1 aabb", "2 1 1 ccdd", "2 1 1 eeff"}, TTL: 3600, Requested: t0, Confirmed: t0.Add(time.Minute)},
		},
		History: []Event{
			{At: t0, Step: StepPublishTA, What: "published", Detail: "added 2 1 1 eeff"},
		},
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %04o, want %04o", path, got, want)
	}
}

func TestFileStoreSaveLoad(t *testing.T) {
	st := newTestFileStore(t)
	checkMode(t, st.Dir(), 0o700)
	want := sampleState("mx.example.org")
	if err := st.Save(want); err != nil {
		t.Fatal(err)
	}
	checkMode(t, filepath.Join(st.Dir(), "mx.example.org.json"), 0o600)

	// Trailing dot and upper case name the same file.
	got, err := st.Load("MX.Example.org.")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	b, _ := os.ReadFile(filepath.Join(st.Dir(), "mx.example.org.json"))
	if !strings.Contains(string(b), `"margin": "1m30s"`) {
		t.Errorf("margin not written as a duration string:\n%s", b)
	}

	if err := st.Save(sampleState("b.example.org.")); err != nil {
		t.Fatal(err)
	}
	hosts, err := st.List()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"b.example.org", "mx.example.org"}; !reflect.DeepEqual(hosts, want) {
		t.Errorf("List = %q, want %q", hosts, want)
	}
}

func TestFileStoreRefusesWritableDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFileStore(dir); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Errorf("NewFileStore(0777 dir) = %v, want refusal", err)
	}
}

func TestFileStoreLoadErrors(t *testing.T) {
	st := newTestFileStore(t)
	_, err := st.Load("mx.example.org")
	if !errors.Is(err, ErrNoRollover) {
		t.Errorf("Load(missing) = %v, want ErrNoRollover", err)
	}

	p := filepath.Join(st.Dir(), "mx.example.org.json")
	if err := os.WriteFile(p, []byte(`{"version": 1, "host": "mx.exa`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = st.Load("mx.example.org")
	if err == nil || errors.Is(err, ErrNoRollover) || !strings.Contains(err.Error(), p) {
		t.Errorf("Load(corrupt) = %v, want an error naming %s", err, p)
	}
	if b, _ := os.ReadFile(p); string(b) != `{"version": 1, "host": "mx.exa` {
		t.Errorf("corrupt file was changed to %q", b)
	}

	// A state file that names another host is not silently accepted.
	b, _ := json.Marshal(sampleState("other.example.org"))
	os.WriteFile(p, b, 0o600)
	if _, err := st.Load("mx.example.org"); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Load(wrong host) = %v, want an error naming %s", err, p)
	}
}

func TestFileStoreHostValidation(t *testing.T) {
	st := newTestFileStore(t)
	for _, h := range []string{"../etc/passwd", "", ".", ".hidden", "a/b", `a\b`, "a..b", "mx.example.org/..", "x.lock", "x.json", "a b", strings.Repeat("a", 64) + ".org"} {
		if _, err := st.Load(h); err == nil || errors.Is(err, ErrNoRollover) {
			t.Errorf("Load(%q) = %v, want refusal", h, err)
		}
		s := sampleState(h)
		if err := st.Save(s); err == nil {
			t.Errorf("Save(Host=%q) accepted", h)
		}
		if _, err := st.Lock(context.Background(), h); err == nil {
			t.Errorf("Lock(%q) accepted", h)
		}
		if err := st.PutMaterial(h, "new", Material{ChainPEM: []byte("c"), KeyPEM: []byte("k")}); err == nil {
			t.Errorf("PutMaterial(%q) accepted", h)
		}
	}
	for _, n := range []string{"", ".x", "../new", "a/b", "NEW"} {
		if err := st.PutMaterial("mx.example.org", n, Material{ChainPEM: []byte("c"), KeyPEM: []byte("k")}); err == nil {
			t.Errorf("PutMaterial(name %q) accepted", n)
		}
		if _, err := st.GetMaterial("mx.example.org", n); err == nil || errors.Is(err, ErrNoMaterial) {
			t.Errorf("GetMaterial(name %q) = %v, want refusal", n, err)
		}
	}
	// Nothing escaped the store directory.
	ents, _ := os.ReadDir(filepath.Dir(st.Dir()))
	if len(ents) != 1 {
		t.Errorf("files outside the store: %v", ents)
	}
	for _, ok := range []string{"mx.example.org", "MX.EXAMPLE.ORG.", "_25._tcp.mx.example.org", "xn--bcher-kva.example", "localhost"} {
		if err := st.Save(sampleState(ok)); err != nil {
			t.Errorf("Save(Host=%q) = %v", ok, err)
		}
	}
}

func TestFileStoreConcurrentSaveAtomic(t *testing.T) {
	st := newTestFileStore(t)
	const host = "mx.example.org"
	if err := st.Save(sampleState(host)); err != nil {
		t.Fatal(err)
	}
	// Make the file large enough that a torn write would be visible.
	big := sampleState(host)
	for i := range 200 {
		big.History = append(big.History, Event{At: time.Unix(int64(i), 0).UTC(), Step: StepWaitTTL, What: "waiting", Detail: strings.Repeat("x", 100)})
	}
	big.Step = 0
	if err := st.Save(big); err != nil {
		t.Fatal(err)
	}

	p := filepath.Join(st.Dir(), host+".json")
	stop := make(chan struct{})
	var reads atomic.Int64
	readerErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				readerErr <- nil
				return
			default:
			}
			b, err := os.ReadFile(p)
			if err != nil {
				readerErr <- err
				return
			}
			var s State
			if err := json.Unmarshal(b, &s); err != nil {
				readerErr <- fmt.Errorf("reader saw an invalid file (%d bytes): %v", len(b), err)
				return
			}
			if _, err := st.Load(host); err != nil {
				readerErr <- err
				return
			}
			reads.Add(1)
		}
	}()

	const workers, rounds = 6, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for range workers {
		wg.Go(func() {
			for range rounds {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				unlock, err := st.Lock(ctx, host)
				cancel()
				if err != nil {
					errs <- err
					return
				}
				s, err := st.Load(host)
				if err == nil {
					s.Step++
					s.History = append(s.History, Event{What: "tick"})
					err = st.Save(s)
				}
				if uerr := unlock(); err == nil {
					err = uerr
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	if err := <-readerErr; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s, err := st.Load(host)
	if err != nil {
		t.Fatal(err)
	}
	// Lock → load → save under the lock loses no update.
	if s.Step != workers*rounds {
		t.Errorf("Step = %d after %d locked increments", s.Step, workers*rounds)
	}
	if reads.Load() == 0 {
		t.Error("reader never ran")
	}
	assertNoTemps(t, st.Dir())
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func TestFileStoreMaterial(t *testing.T) {
	st := newTestFileStore(t)
	const host = "mx.example.org"
	if _, err := st.GetMaterial(host, "new"); !errors.Is(err, ErrNoMaterial) {
		t.Errorf("GetMaterial(missing) = %v, want ErrNoMaterial", err)
	}
	m1 := Material{ChainPEM: []byte("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"), KeyPEM: []byte("-----BEGIN PRIVATE KEY-----\nK1\n-----END PRIVATE KEY-----\n")}
	if err := st.PutMaterial(host+".", "new", m1); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetMaterial(host, "new")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m1) {
		t.Errorf("GetMaterial = %q, want %q", got, m1)
	}
	if _, err := st.GetMaterial(host, "next"); !errors.Is(err, ErrNoMaterial) {
		t.Errorf("GetMaterial(other name) = %v, want ErrNoMaterial", err)
	}
	hd := filepath.Join(st.Dir(), host)
	checkMode(t, hd, 0o700)
	for _, f := range []string{"new.chain.pem", "new.key.pem", "new.manifest.json"} {
		checkMode(t, filepath.Join(hd, f), 0o600)
	}

	// Replacing works, and the directory is not listed as a host.
	m2 := Material{ChainPEM: []byte("chain 2"), KeyPEM: []byte("key 2")}
	if err := st.PutMaterial(host, "new", m2); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetMaterial(host, "new"); !reflect.DeepEqual(got, m2) {
		t.Errorf("after replace: %q, want %q", got, m2)
	}
	if hosts, _ := st.List(); len(hosts) != 0 {
		t.Errorf("List = %q with material only", hosts)
	}
	if err := st.PutMaterial(host, "new", Material{ChainPEM: []byte("c")}); err == nil {
		t.Error("PutMaterial accepted an empty key")
	}
	assertNoTemps(t, st.Dir())

	// A crash after the key was renamed but before the manifest: the new
	// key sits beside the old chain, and must not be read as a pair.
	os.Remove(filepath.Join(hd, "new.manifest.json"))
	os.WriteFile(filepath.Join(hd, "new.key.pem"), []byte("key 3"), 0o600)
	if _, err := st.GetMaterial(host, "new"); !errors.Is(err, ErrNoMaterial) {
		t.Errorf("GetMaterial(interrupted put) = %v, want ErrNoMaterial", err)
	}

	// A pair changed behind the manifest's back is an error naming the file.
	if err := st.PutMaterial(host, "new", m2); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(hd, "new.key.pem"), []byte("key 3"), 0o600)
	_, err = st.GetMaterial(host, "new")
	if err == nil || errors.Is(err, ErrNoMaterial) || !strings.Contains(err.Error(), "new.key.pem") {
		t.Errorf("GetMaterial(mismatched key) = %v, want an error naming new.key.pem", err)
	}
}

func TestFileStoreLock(t *testing.T) {
	st := newTestFileStore(t)
	const host = "mx.example.org"
	unlock, err := st.Lock(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, filepath.Join(st.Dir(), host+".lock"), 0o600)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = st.Lock(ctx, host)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock = %v, want ErrLocked", err)
	}
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Errorf("second Lock gave up after %v, before its context", el)
	}
	if want := fmt.Sprintf("pid %d since ", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the holder (%q)", err, want)
	}

	// Another host is independent.
	u2, err := st.Lock(ctx, "other.example.org")
	if err != nil {
		t.Fatalf("Lock(other host) = %v", err)
	}
	u2()

	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Errorf("second unlock = %v", err)
	}
	unlock3, err := st.Lock(context.Background(), host)
	if err != nil {
		t.Fatalf("Lock after unlock = %v", err)
	}
	// Unlocking twice must not release someone else's lock.
	if _, err := st.Lock(ctx, host); !errors.Is(err, ErrLocked) {
		t.Errorf("Lock while held after double unlock = %v, want ErrLocked", err)
	}
	unlock3()
}

func TestFileStoreLockSerializes(t *testing.T) {
	st := newTestFileStore(t)
	var inside, overlaps, total atomic.Int32
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for range 20 {
				unlock, err := st.Lock(t.Context(), "mx.example.org")
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				time.Sleep(time.Millisecond)
				total.Add(1)
				inside.Add(-1)
				unlock()
			}
		})
	}
	wg.Wait()
	if overlaps.Load() != 0 || total.Load() != 40 {
		t.Errorf("%d overlapping critical sections (want 0), %d in all (want 40)", overlaps.Load(), total.Load())
	}
}

// TestHelperProcess is not a test: run by TestFileStoreLockSIGKILL as a child
// that takes a lock, says so and waits to be killed.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("TLSACTL_FILESTORE_HELPER") != "1" {
		t.Skip("helper process")
	}
	st, err := NewFileStore(os.Getenv("TLSACTL_FILESTORE_DIR"))
	if err != nil {
		fmt.Fprintln(os.Stdout, "error:", err)
		os.Exit(2)
	}
	if _, err := st.Lock(context.Background(), os.Getenv("TLSACTL_FILESTORE_HOST")); err != nil {
		fmt.Fprintln(os.Stdout, "error:", err)
		os.Exit(2)
	}
	fmt.Fprintln(os.Stdout, "locked")
	time.Sleep(time.Minute)
	os.Exit(3)
}

func TestFileStoreLockSIGKILL(t *testing.T) {
	st := newTestFileStore(t)
	const host = "mx.example.org"
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(),
		"TLSACTL_FILESTORE_HELPER=1",
		"TLSACTL_FILESTORE_DIR="+st.Dir(),
		"TLSACTL_FILESTORE_HOST="+host,
	)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "locked" {
		t.Fatalf("helper said %q (%v)", line, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = st.Lock(ctx, host)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(cmd.Process.Pid)+" ") {
		t.Fatalf("Lock while the child holds it = %v, want ErrLocked naming pid %d", err, cmd.Process.Pid)
	}

	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no chance to clean up
		t.Fatal(err)
	}
	cmd.Wait()

	// The kernel dropped the flock with the process: no stale lock, no wait.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	start := time.Now()
	unlock, err := st.Lock(ctx2, host)
	if err != nil {
		t.Fatalf("Lock after the holder was killed = %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Lock after SIGKILL took %v", el)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
}
