package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

// TestStateMigrateDirs: `state migrate` between two directories (the
// PostgreSQL cases run in ha_e2e_test.go): a dry run copies nothing and
// creates nothing, the copy is verified, a second copy into the now
// non-empty destination is refused, and bad input is exit 2.
func TestStateMigrateDirs(t *testing.T) {
	src := t.TempDir()
	store, err := rollover.NewFileStore(src)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := tlsa.ParseRecord("3 1 1 " + strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []string{"_25._tcp.mx1.example.nl.", "_25._tcp.mx2.example.nl."} {
		s := rollover.Sighting{Kind: rollover.SourceAuthoritative, Source: "seed", Records: []tlsa.Record{rec}, TTL: 60}
		if _, _, err := rollover.Record(context.Background(), store, o, []rollover.Sighting{s}, 0, time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "copy")

	tests := []struct {
		name string
		args []string
		code int
		want string // in stdout (code 0) or stderr
	}{
		{"no --to", []string{"--from", src}, exitBadInput, "give --from"},
		{"same store", []string{"--from", src, "--to", src}, exitBadInput, "the same store"},
		{"postgres without a key", []string{"--from", src, "--to", "postgres://u@127.0.0.1:1/x"}, exitBadInput, "state_key_file"},
		{"dry run", []string{"--dry-run", "--from", src, "--to", dst}, exitOK, "would copy 0 rollover state(s), 0 staged material(s), 2 ledger(s), 0 migration(s)"},
		{"copy", []string{"--json", "--from", src, "--to", dst}, exitOK, `"verified": true`},
		{"again", []string{"--from", src, "--to", dst}, exitStateFailed, "is not empty (it holds 0 rollover state(s), 0 staged material(s), 2 ledger(s)"},
	}
	for _, tc := range tests {
		out, errOut, code := runCLI(t, "", append([]string{"state", "migrate"}, tc.args...)...)
		got := out
		if tc.code != exitOK {
			got = errOut
		}
		if code != tc.code || !strings.Contains(got, tc.want) {
			t.Fatalf("%s: exit %d, want %d with %q\nstdout: %s\nstderr: %s", tc.name, code, tc.code, tc.want, out, errOut)
		}
		if tc.name == "dry run" {
			if _, err := os.Stat(dst); !os.IsNotExist(err) {
				t.Fatalf("the dry run created %s (%v)", dst, err)
			}
		}
		if tc.name == "copy" {
			var j stateMigrateJSON
			if err := json.Unmarshal([]byte(out), &j); err != nil || j.Copied.Ledgers != 2 || j.Source != j.Copied {
				t.Fatalf("copy --json: %v %+v", err, j)
			}
		}
	}
	out, errOut, code := runCLI(t, "", "state", "status", "--state", dst)
	if code != exitOK || !strings.Contains(out, "state directory "+dst+": 0 rollover state(s), 0 staged material(s), 2 ledger(s), 0 migration(s)") {
		t.Fatalf("state status: exit %d\n%s%s", code, out, errOut)
	}
}
