package rollover

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// TestFileStoreLedger: ledgers are per owner, 0600, updated under a lock so
// concurrent recorders lose nothing, refuse rewrites of the past, and a
// corrupt file is an error naming it, never an empty ledger.
func TestFileStoreLedger(t *testing.T) {
	p := getPKI(t)
	dir := t.TempDir()
	store, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	owner := "_25._tcp.mx.example.net."
	if l, err := store.LoadLedger(owner); err != nil || len(l.Versions) != 0 {
		t.Fatalf("empty ledger: %+v, %v", l, err)
	}
	at := testBase
	rs := func(r ...tlsa.Record) []Sighting {
		return []Sighting{{Kind: SourceAuthoritative, Source: "auth ns1", Records: r, TTL: 300}}
	}
	// Twenty recorders at once, each with its own RRset version.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			leaf := spki311([]byte{byte(i), 1, 2, 3})
			if _, _, err := Record(ctx, store, owner, []Sighting{{Kind: SourceResolver, Source: "resolver", Records: []tlsa.Record{leaf}, TTL: 60}}, 0, at.Add(time.Duration(i)*time.Second)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	l, err := store.LoadLedger(owner)
	if err != nil || len(l.Versions) != 20 {
		t.Fatalf("after 20 concurrent records: %d versions, %v", len(l.Versions), err)
	}
	fi, err := os.Stat(filepath.Join(dir, ledgerDir, "_25._tcp.mx.example.net.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ledger file: %v, mode %v", err, fi.Mode())
	}
	// The same RRset seen again only moves LastSeen; a superseded one that
	// is served again is a new version.
	old := []tlsa.Record{ee311(p.old.cert)}
	_, _, _ = Record(ctx, store, owner, rs(old...), 0, at.Add(time.Minute))
	_, _, _ = Record(ctx, store, owner, rs(old...), 0, at.Add(2*time.Minute))
	_, _, _ = Record(ctx, store, owner, rs(ee311(p.renew.cert)), 0, at.Add(3*time.Minute))
	l, _, _ = Record(ctx, store, owner, rs(old...), 0, at.Add(4*time.Minute))
	var n int
	for _, v := range l.Versions {
		if rrKeyText(v.Records) == rrKeyText(texts(old...)) {
			n++
		}
	}
	if n != 2 || len(l.Versions) != 23 {
		t.Fatalf("%d versions of the old RRset, %d in all; want 2 of 23", n, len(l.Versions))
	}
	// Rewriting history is refused, and nothing is written.
	_, err = store.UpdateLedger(ctx, owner, func(l *Ledger) error {
		l.Versions = l.Versions[1:]
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("shrinking the ledger: %v", err)
	}
	boom := errors.New("boom")
	if _, err := store.UpdateLedger(ctx, owner, func(l *Ledger) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	if l2, _ := store.LoadLedger(owner); len(l2.Versions) != 23 {
		t.Fatalf("ledger changed by refused updates: %d versions", len(l2.Versions))
	}
	// A corrupt file is an error naming it.
	path := filepath.Join(dir, ledgerDir, "_25._tcp.mx.example.net.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.LoadLedger(owner); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt ledger: %v", err)
	}
	if _, _, err := Record(ctx, store, owner, rs(old...), 0, at.Add(time.Hour)); err == nil {
		t.Fatal("recording into a corrupt ledger succeeded")
	}
}
