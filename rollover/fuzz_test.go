package rollover

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeFresh writes data to a new file at p. Removing the old file first
// keeps ext4 from flushing it on close (auto_da_alloc after a truncate),
// which would slow the fuzzer down a hundredfold.
func writeFresh(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// fuzzErr checks what a reader's error must be: one line naming the file.
func fuzzErr(t *testing.T, err error, path string) {
	t.Helper()
	msg := err.Error()
	if !strings.Contains(msg, path) {
		t.Fatalf("error does not name %s: %v", path, err)
	}
	if strings.ContainsAny(msg, "\r\n") {
		t.Fatalf("multi-line error: %q", msg)
	}
	if len(msg) > 1500 {
		t.Fatalf("error of %d bytes: %.200s…", len(msg), msg)
	}
}

// FuzzLoadState: whatever bytes a state file holds, Load returns a state
// that the engine can act on (host, format, plan and status as this code
// knows them, every record parses; saved and loaded again unchanged) or an
// error naming the file: never a panic, and never a zero state for a
// corrupt file (which would forget the records caches may hold).
func FuzzLoadState(f *testing.F) {
	const host = "mx.example.org"
	good, err := json.MarshalIndent(sampleState(host), "", "\t")
	if err != nil {
		f.Fatal(err)
	}
	done := sampleState(host)
	done.Plan, done.Status, done.Step, done.Version = PlanPublish, StatusDone, 1, stateFormat
	doneJSON, _ := json.Marshal(done)
	for _, s := range [][]byte{
		good, doneJSON, good[:len(good)/2], append(append([]byte{}, good...), "{}"...),
		append([]byte("\xef\xbb\xbf"), good...),
		[]byte(strings.Replace(string(good), `"host": "mx.example.org"`, `"host": "MX.Example.ORG."`, 1)),
		[]byte(strings.Replace(string(good), `"step": 1`, `"step": 99`, 1)),
		[]byte(strings.Replace(string(good), `"margin": "1m30s"`, `"margin": "soon"`, 1)),
		[]byte(strings.Replace(string(good), `"created": "2026-03-01T12:00:00Z"`, `"created": "2026-13-01T12:00:00Z"`, 1)),
		[]byte(`{}`), []byte(`null`), []byte(`[]`), []byte(`""`), []byte(`0`), []byte(" \n"), {0},
		[]byte(`{"host":"mx.example.org"}`), []byte(`{"host":"other.example"}`),
		[]byte(`{"version":3,"host":"mx.example.org","plan":"renew","status":"active"}`),
		[]byte(`{"version":2,"host":"mx.example.org","plan":"renew","status":"active","step":-1}`),
		[]byte(`{"version":2,"host":"mx.example.org","plan":"rewind","status":"active"}`),
		[]byte(`{"version":2,"host":"mx.example.org","plan":"publish","status":"active","want":["3 1 1 zz"]}`),
		[]byte(`{"version":2,"host":"mx.example.org","plan":"renew","status":"active","versions":[{"records":[null]}]}`),
		[]byte(`{"version":2,"host":"mx.example.org","plan":"renew","status":"paused"}`),
		[]byte(`{"version":2,"host":"mx.example.org","host":"other.example","plan":"renew","status":"active"}`),
		[]byte("{\"version\":2,\"host\":\"mx.example.org\xff\",\"plan\":\"renew\",\"status\":\"active\"}"),
	} {
		f.Add(s)
	}
	// One store per fuzzing process: the function runs once at a time.
	st, err := NewFileStore(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := st.statePath(host)
		writeFresh(t, p, data)
		s, err := st.Load(host)
		if err != nil {
			if s != nil {
				t.Fatalf("state and error %v", err)
			}
			if errors.Is(err, ErrNoRollover) {
				t.Fatalf("a file with %d bytes read as no rollover: %v", len(data), err)
			}
			fuzzErr(t, err, p)
			return
		}
		if h, err := normalizeHost(s.Host); err != nil || h != host {
			t.Fatalf("state of %q loaded for %s", s.Host, host)
		}
		if s.Version < 0 || s.Version > stateFormat || !s.Plan.Valid() || !knownStatus(s.Status) {
			t.Fatalf("loaded version %d, plan %q, status %q", s.Version, s.Plan, s.Status)
		}
		for _, recs := range [][]string{s.OldEE, s.OldTA, s.Added, s.Want, nonEmpty(s.NewTA, s.Next, s.NewEE)} {
			if got := mustParse(recs); len(got) != len(recs) {
				t.Fatalf("records %q read as %d records", recs, len(got))
			}
		}
		// What was loaded can be saved and reads back the same (Save
		// without its fsyncs, which would slow the fuzzer down).
		b, err := json.MarshalIndent(s, "", "\t")
		if err != nil {
			t.Fatalf("a loaded state does not save: %v", err)
		}
		writeFresh(t, p, b)
		again, err := st.Load(host)
		if err != nil || normTimes(again) != normTimes(s) {
			t.Fatalf("saved state reads back differently (%v):\n%+v\n%+v", err, again, s)
		}
		_ = s.CurrentStep()
	})
}

func knownStatus(s Status) bool {
	return s == StatusActive || s == StatusDone || s == StatusAborted
}

// normTimes returns s as JSON, which compares times by instant and zone
// offset rather than by *time.Location pointer.
func normTimes(s *State) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// FuzzLoadLedger: whatever bytes a ledger file holds, LoadLedger returns a
// ledger of the owner in a format this code reads, whose methods work, or
// an error naming the file: never a panic, never an empty ledger for a
// corrupt file.
func FuzzLoadLedger(f *testing.F) {
	const owner = "_25._tcp.mx.example.org"
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	good, err := json.MarshalIndent(&Ledger{Format: ledgerFormat, Owner: owner + ".", Versions: []Version{
		{Records: []string{"3 1 1 aabb"}, TTL: 3600, Initial: true, FirstSeen: t0, LastSeen: t0, Confirmed: t0, Superseded: t0.Add(time.Hour), Seen: []string{"provider"}},
		{Records: []string{"3 1 1 aabb", "2 1 1 ccdd"}, TTL: 300, Requested: t0.Add(time.Hour), Writer: "tlsactl publish"},
	}}, "", "\t")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][]byte{
		good, good[:len(good)/3], append(append([]byte{}, good...), ']'),
		[]byte(strings.Replace(string(good), owner+".", "_25._TCP.MX.example.org", 1)),
		[]byte(strings.Replace(string(good), `"format": 1`, `"format": 2`, 1)),
		[]byte(strings.Replace(string(good), `"ttl": 300`, `"ttl": -1`, 1)),
		[]byte(strings.Replace(string(good), `"3 1 1 aabb",`, `null,`, 1)),
		[]byte(`{}`), []byte(`null`), []byte(`{"format":1,"owner":"_25._tcp.mx.example.org."}`),
		[]byte(`{"format":1,"owner":"_25._tcp.mx.example.org.","versions":[{}]}`),
		[]byte(`{"format":1,"owner":"_25._tcp.mx.example.org.","versions":[{"records":["not a record"],"ttl":1}]}`),
		[]byte(`{"format":1,"owner":"other.example."}`), []byte("\x00\x01"), []byte(" "),
	} {
		f.Add(s)
	}
	st, err := NewFileStore(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	dir := filepath.Join(st.Dir(), ledgerDir)
	if err := os.Mkdir(dir, 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, owner+".json")
		writeFresh(t, p, data)
		l, err := st.LoadLedger(owner)
		if err != nil {
			if l != nil {
				t.Fatalf("ledger and error %v", err)
			}
			fuzzErr(t, err, p)
			return
		}
		if got := strings.TrimSuffix(strings.ToLower(l.Owner), "."); got != owner || l.Format > ledgerFormat {
			t.Fatalf("ledger of %q format %d loaded for %s", l.Owner, l.Format, owner)
		}
		// A ledger that loads is one the engine can read and extend.
		c := l.Copy()
		if bad := AppendOnly(l, c); len(bad) > 0 {
			t.Fatalf("a copy is not append-only: %v", bad)
		}
		_, _ = l.Current()
		_ = l.UnknownBefore(time.Minute)
		_ = MaybeCachedMargin(l.Versions, t0.Add(48*time.Hour), time.Minute)
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatalf("a loaded ledger does not marshal: %v", err)
		}
		var back Ledger
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("a loaded ledger does not read back: %v", err)
		}
	})
}
