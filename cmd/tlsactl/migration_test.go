package main

// Tests of `tlsactl migration` that need no servers: parsing, help texts,
// the lifecycle of a migration whose not_before is in the future (nothing
// reaches DNS before it), the directory certificate source and the metrics
// exposition. End-to-end runs against real servers are in
// migration_e2e_test.go.

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tlsactl/tlsactl/internal/config"
	"github.com/tlsactl/tlsactl/internal/safefile"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
)

// migPKI is a migration's new CA (the intermediate of a testbed chain),
// which issues each host's leaf.
type migPKI struct {
	chain *testbed.Chain
	caPEM []byte
	ca    *x509.Certificate
}

func newMigPKI(t testing.TB) *migPKI {
	t.Helper()
	c := testbed.MustChain(t, testbed.ChainOptions{})
	return &migPKI{chain: c, caPEM: c.Intermediate.PEM, ca: c.Intermediate.Cert}
}

// leaf returns a chain (leaf, then the CA) for host and the leaf's key.
func (p *migPKI) leaf(t testing.TB, host string) (chain, keyPEM []byte) {
	t.Helper()
	c := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{host}, Reuse: p.chain})
	return c.FullChainPEM(), c.Leaf.KeyPEM
}

// migBed is a configuration (no servers: the resolver and the provider are
// unreachable), a state directory, a new CA and a migration file whose
// not_before is far in the future, so nothing reaches DNS.
type migBed struct {
	dir, cfg, file, state string
	pki                   *migPKI
}

func newMigBed(t *testing.T) *migBed {
	t.Helper()
	d := t.TempDir()
	b := &migBed{dir: d, cfg: filepath.Join(d, "tlsactl.toml"), file: filepath.Join(d, "fleet.toml"), state: filepath.Join(d, "state"), pki: newMigPKI(t)}
	for _, sub := range []string{"ca", "incoming", "state"} {
		if err := os.Mkdir(filepath.Join(d, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(d, "ca", "new.pem"), b.pki.caPEM)
	writeFile(t, b.cfg, []byte(`resolver = "127.0.0.1:9"
state_dir = "`+b.state+`"
[provider]
name = "rfc2136"
server = "127.0.0.1:9"
[[host]]
name = "mx1.example.nl"
[[host]]
name = "mx2.example.nl"
[[host]]
name = "mx3.example.nl"
[[host]]
name = "other.example.nl"
`))
	b.writeMigration(t, "fleet-1", "")
	return b
}

// writeMigration writes the migration file with name and extra settings.
func (b *migBed) writeMigration(t *testing.T, name, extra string) {
	t.Helper()
	writeFile(t, b.file, []byte(`name = "`+name+`"
hosts = ["mx*.example.nl"]
new_ca = ["ca/new.pem"]
not_before = 2099-01-10T00:00:00+01:00
deadline = 2099-03-01T00:00:00+01:00
windows = ["Mon-Fri 02:00-05:00 Europe/Amsterdam"]
max_parallel = 2
max_failures = 2
canary = "mx2.example.nl"
`+extra+`
[source]
kind = "dir"
dir = "incoming"
`))
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// cli runs tlsactl with --config added after the subcommand.
func (b *migBed) cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	full := append(append([]string{}, args[:2]...), append([]string{"--config", b.cfg}, args[2:]...)...)
	out, errOut, code := runCLI(t, "", full...)
	t.Logf("tlsactl %s → %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	return out, errOut, code
}

func (b *migBed) store(t *testing.T) *rollover.FileStore {
	t.Helper()
	s, err := rollover.NewFileStore(b.state)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMigrationHelp(t *testing.T) {
	out, _, code := runCLI(t, "", "migration", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"plan", "start", "run", "status", "pause", "resume", "abort", "EXIT CODES", "EXAMPLES", "max_parallel", "rollover run"} {
		if !strings.Contains(out, want) {
			t.Errorf("migration --help lacks %q", want)
		}
	}
	for _, sub := range []struct {
		name string
		want []string
	}{
		{"plan", []string{"POSITIONAL ARGUMENTS", "FILE", "--json", "deadline", "new_ca"}},
		{"start", []string{"FILE", "--dry-run", "Nothing is changed in DNS"}},
		{"run", []string{"NAME", "--wait", "--timeout", "--metrics-file", "halted"}},
		{"status", []string{"NAME", "--json", "--metrics-file"}},
		{"pause", []string{"NAME"}},
		{"resume", []string{"held hosts"}},
		{"abort", []string{"--dry-run", "rolled back", "finished"}},
	} {
		out, _, code := runCLI(t, "", "migration", sub.name, "--help")
		if code != 0 {
			t.Errorf("migration %s --help: exit %d", sub.name, code)
		}
		for _, want := range append(sub.want, "EXIT CODES", "EXAMPLES") {
			if !strings.Contains(out, want) {
				t.Errorf("migration %s --help lacks %q:\n%s", sub.name, want, out)
			}
		}
	}
	out, _, _ = runCLI(t, "", "rollover", "run", "--help")
	if !strings.Contains(out, "--metrics-file") {
		t.Errorf("rollover run --help lacks --metrics-file:\n%s", out)
	}
	out, _, _ = runCLI(t, "", "rollover", "--help")
	if !strings.Contains(out, "fleet migration") {
		t.Errorf("rollover --help does not say that run advances migrations:\n%s", out)
	}
	out, _, _ = runCLI(t, "", "--help")
	if !strings.Contains(out, "migration") {
		t.Errorf("tlsactl --help does not list migration")
	}
}

func TestMigrationParseErrors(t *testing.T) {
	b := newMigBed(t)
	bad := filepath.Join(b.dir, "bad.toml")
	writeFile(t, bad, []byte("name = \"x\"\nhosts = [\"nowhere.example.nl\"]\nnew_ca = [\"ca/new.pem\"]\n[source]\nkind = \"hook\"\n"))
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"migration", "plan"}, 2, "give one FILE"},
		{[]string{"migration", "plan", b.file, "extra"}, 2, "give one FILE"},
		{[]string{"migration", "start"}, 2, "give one FILE"},
		{[]string{"migration", "plan", filepath.Join(b.dir, "nope.toml")}, 2, "nope.toml: no such file"},
		{[]string{"migration", "start", bad}, 2, `bad.toml: hosts: "nowhere.example.nl" matches no [[host]]`},
		{[]string{"migration", "start", "--bogus", b.file}, 2, "flag provided but not defined: -bogus"},
		{[]string{"migration", "status", "a", "b"}, 2, "at most one NAME"},
		{[]string{"migration", "status", "nosuch"}, 2, "no migration nosuch is stored"},
		{[]string{"migration", "status", "Bad Name"}, 2, "invalid migration name"},
		{[]string{"migration", "pause"}, 2, "give one NAME"},
		{[]string{"migration", "resume", "nosuch"}, 2, "no migration nosuch"},
		{[]string{"migration", "abort", "--dry-run", "nosuch"}, 2, "no migration nosuch"},
		{[]string{"migration", "run", "nosuch"}, 2, "no migration nosuch is stored"},
		{[]string{"migration", "run", "--timeout", "soon"}, 2, "invalid value"},
	}
	for _, tc := range tests {
		_, errOut, code := b.cli(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
		if strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("%v: error is not one line: %q", tc.args, errOut)
		}
	}
	// No configuration at all.
	_, errOut, code := runCLI(t, "", "migration", "status", "--config", filepath.Join(b.dir, "none.toml"))
	if code != 2 || !strings.Contains(errOut, "none.toml") {
		t.Errorf("missing configuration: exit %d, %q", code, errOut)
	}
}

// TestMigrationLifecycle stores, inspects, pauses, resumes and aborts a
// migration whose not_before lies ahead: no command may reach DNS (the
// configured resolver and provider do not exist).
func TestMigrationLifecycle(t *testing.T) {
	b := newMigBed(t)
	out, _, code := b.cli(t, "migration", "start", b.file)
	if code != 0 || !strings.Contains(out, "started migration fleet-1: 3 hosts") || !strings.Contains(out, "tlsactl migration status fleet-1") ||
		!strings.Contains(out, "2099-01-09T23:00:00Z") {
		t.Fatalf("start: exit %d\n%s", code, out)
	}
	if _, errOut, code := b.cli(t, "migration", "start", b.file); code != 1 || !strings.Contains(errOut, "exists already") {
		t.Errorf("second start: exit %d, %q; want 1, exists already", code, errOut)
	}
	// The same hosts in another migration are refused while this one runs.
	other := filepath.Join(b.dir, "other.toml")
	data, _ := os.ReadFile(b.file)
	writeFile(t, other, []byte(strings.Replace(string(data), `name = "fleet-1"`, `name = "fleet-2"`, 1)))
	if _, errOut, code := b.cli(t, "migration", "start", other); code != 1 || !strings.Contains(errOut, "in migration fleet-1") {
		t.Errorf("overlapping start: exit %d, %q", code, errOut)
	}

	// Flags after the name are read (permuteArgs).
	out, _, code = b.cli(t, "migration", "status", "fleet-1", "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d", code)
	}
	var st struct {
		Spec struct {
			Name    string   `json:"name"`
			Windows []string `json:"windows"`
			Source  map[string]string
		} `json:"spec"`
		Status          string         `json:"status"`
		Counts          map[string]int `json:"counts"`
		DeadlineSeconds *float64       `json:"deadline_seconds"`
		Hosts           []struct {
			Host  string `json:"host"`
			Phase string `json:"phase"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.Spec.Name != "fleet-1" || st.Status != "active" || len(st.Hosts) != 3 || st.Counts["pending"] != 3 || st.Counts["done"] != 0 ||
		len(st.Counts) != len(rollover.Phases) || st.DeadlineSeconds == nil || *st.DeadlineSeconds < 1e9 {
		t.Errorf("status --json: %+v", st)
	}
	if st.Spec.Source["kind"] != "dir" || st.Spec.Source["dir"] != filepath.Join(b.dir, "incoming") {
		t.Errorf("stored source %v: want kind dir and the absolute directory", st.Spec.Source)
	}

	out, _, code = b.cli(t, "migration", "status", "fleet-1")
	for _, want := range []string{"migration fleet-1: active", "3 pending", "failures    0 of max_failures 2", "deadline    2099-02-28T23:00:00Z", "mx2.example.nl (canary)", "HOST", "PHASE", "created"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status: exit %d, output lacks %q", code, want)
		}
	}
	out, _, code = b.cli(t, "migration", "status")
	if code != 0 || !strings.HasPrefix(out, "fleet-1: active, 3 hosts (3 pending), failures 0/2, deadline 2099-02-28T23:00:00Z") {
		t.Errorf("status (all): exit %d\n%s", code, out)
	}

	// A run before not_before touches nothing and says when it acts.
	prom := filepath.Join(b.dir, "migrations.prom")
	out, _, code = b.cli(t, "migration", "run", "--metrics-file", prom)
	if code != 0 || !strings.Contains(out, "migration fleet-1: active") || !strings.Contains(out, "next action 2099-01-09T23:00:00Z") {
		t.Errorf("run: exit %d\n%s", code, out)
	}
	if fams := parseExposition(t, prom); fams["tlsactl_migration_hosts"] == nil {
		t.Errorf("run --metrics-file wrote no tlsactl_migration_hosts")
	}
	// rollover run advances it too, and writes the same metrics.
	os.Remove(prom)
	out, _, code = b.cli(t, "rollover", "run", "--metrics-file", prom)
	if code != 0 || !strings.Contains(out, "migration fleet-1: active") {
		t.Errorf("rollover run: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(prom); err != nil {
		t.Errorf("rollover run --metrics-file: %v", err)
	}

	if out, _, code = b.cli(t, "migration", "pause", "fleet-1"); code != 0 || !strings.Contains(out, "paused migration fleet-1: paused") {
		t.Errorf("pause: exit %d\n%s", code, out)
	}
	// A paused migration is not advanced by a run over all of them.
	if out, _, code = b.cli(t, "migration", "run"); code != 0 || strings.Contains(out, "fleet-1") {
		t.Errorf("run while paused: exit %d\n%s", code, out)
	}
	if out, _, code = b.cli(t, "migration", "resume", "fleet-1"); code != 0 || !strings.Contains(out, "resumed migration fleet-1: active") {
		t.Errorf("resume: exit %d\n%s", code, out)
	}

	out, _, code = b.cli(t, "migration", "abort", "fleet-1", "--dry-run")
	if code != 0 || !strings.Contains(out, "roll back 3") || !strings.Contains(out, "mx1.example.nl, mx2.example.nl, mx3.example.nl") || !strings.Contains(out, "finish    0") {
		t.Errorf("abort --dry-run: exit %d\n%s", code, out)
	}
	if m, err := b.store(t).LoadMigration("fleet-1"); err != nil || m.Status != rollover.MigrationActive {
		t.Errorf("abort --dry-run changed the migration: %v %v", m.Status, err)
	}
	out, _, code = b.cli(t, "migration", "abort", "fleet-1")
	if code != 0 || !strings.Contains(out, "migration fleet-1: aborted; 3 rolled back, 0 done") {
		t.Errorf("abort: exit %d\n%s", code, out)
	}
	if _, errOut, code := b.cli(t, "migration", "pause", "fleet-1"); code != 1 || !strings.Contains(errOut, "aborted") {
		t.Errorf("pause after abort: exit %d, %q", code, errOut)
	}
	// Once aborted, its hosts may join another migration.
	if out, _, code := b.cli(t, "migration", "start", other); code != 0 {
		t.Errorf("start after abort: exit %d\n%s", code, out)
	}
}

// saveMigration stores m as the engine would have left it.
func (b *migBed) saveMigration(t *testing.T, m *rollover.Migration) {
	t.Helper()
	if err := b.store(t).SaveMigration(m); err != nil {
		t.Fatal(err)
	}
}

func (b *migBed) stored(t *testing.T) *rollover.Migration {
	t.Helper()
	if _, _, code := b.cli(t, "migration", "start", b.file); code != 0 {
		t.Fatal("start failed")
	}
	m, err := b.store(t).LoadMigration("fleet-1")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMigrationRunHalted(t *testing.T) {
	b := newMigBed(t)
	m := b.stored(t)
	m.Status, m.Failures = rollover.MigrationHalted, 2
	m.Hosts[0].Phase, m.Hosts[0].Failed, m.Hosts[0].Reason = rollover.PhaseHeld, true, "deploy failed: reload exited 1"
	m.Hosts[1].Phase, m.Hosts[1].Failed, m.Hosts[1].Reason = rollover.PhaseHeld, true, "deploy failed: probe timed out"
	b.saveMigration(t, m)
	for _, args := range [][]string{{"migration", "run"}, {"migration", "run", "fleet-1", "--wait", "--timeout", "10s"}, {"rollover", "run"}} {
		_, errOut, code := b.cli(t, args...)
		if code != 1 || !strings.Contains(errOut, "migration fleet-1 halted (max_failures reached)") || !strings.Contains(errOut, "tlsactl migration resume") {
			t.Errorf("%v on a halted migration: exit %d, %q; want 1 and the way out", args, code, errOut)
		}
	}
	out, _, _ := b.cli(t, "migration", "status", "fleet-1")
	if !strings.Contains(out, "failures    2 of max_failures 2") || !strings.Contains(out, "deploy failed: reload exited 1") || !strings.Contains(out, "resume fleet-1") {
		t.Errorf("status of a halted migration:\n%s", out)
	}
}

// TestMigrationRunHeld: a held host (below max_failures) waits for the
// operator: runs say so and exit 1, while the other hosts go on.
func TestMigrationRunHeld(t *testing.T) {
	b := newMigBed(t)
	m := b.stored(t)
	m.Failures = 1
	m.Hosts[2].Phase, m.Hosts[2].Failed, m.Hosts[2].Reason = rollover.PhaseHeld, true, "deploy failed: reload exited 1"
	b.saveMigration(t, m)
	for _, args := range [][]string{{"migration", "run"}, {"rollover", "run"}} {
		out, errOut, code := b.cli(t, args...)
		if code != 1 || !strings.Contains(errOut, "held, waiting for the operator: mx3.example.nl in fleet-1") || !strings.Contains(out, "migration fleet-1: active") {
			t.Errorf("%v with a held host: exit %d, %q", args, code, errOut)
		}
	}
	if m, _ := b.store(t).LoadMigration("fleet-1"); m.Status != rollover.MigrationActive || m.Hosts[2].Phase != rollover.PhaseHeld {
		t.Errorf("after the runs: %s, %s", m.Status, m.Hosts[2].Phase)
	}
}

// TestRolloverRunSkipsMigrationHosts: `rollover run` leaves the hosts of an
// unfinished migration to the migration (else it would deploy outside its
// windows); other hosts are advanced as before.
func TestRolloverRunSkipsMigrationHosts(t *testing.T) {
	b := newMigBed(t)
	b.stored(t)
	store := b.store(t)
	for _, h := range []string{"mx1.example.nl.", "other.example.nl."} {
		if err := store.Save(&rollover.State{Version: 2, Host: h, Port: 25, Owner: "_25._tcp." + h, Plan: rollover.PlanCAMigration, Step: 1, Status: rollover.StatusActive}); err != nil {
			t.Fatal(err)
		}
	}
	out, _, code := b.cli(t, "rollover", "run", "--host", "mx1.example.nl")
	if code != 0 || !strings.Contains(out, "mx1.example.nl: in migration fleet-1: tlsactl migration run fleet-1 advances it") || strings.Contains(out, "migration fleet-1: active") {
		t.Errorf("rollover run --host (a migration's host): exit %d\n%s", code, out)
	}
	// other.example.nl is advanced (and fails: there is no DNS here);
	// mx1.example.nl is not touched.
	_, errOut, code := b.cli(t, "rollover", "run")
	if code != 1 || !strings.Contains(errOut, "other.example.nl") || strings.Contains(errOut, "mx1.example.nl") {
		t.Errorf("rollover run: exit %d, %q; want 1, an error for other.example.nl only", code, errOut)
	}
	if st, err := store.Load("mx1.example.nl"); err != nil || st.LastError != "" || len(st.History) != 0 {
		t.Errorf("the migration's host was advanced by rollover run: %+v %v", st, err)
	}
}

func TestMigrationStartJSON(t *testing.T) {
	b := newMigBed(t)
	out, _, code := b.cli(t, "migration", "start", "--json", b.file)
	var m struct {
		Spec   rollover.MigrationSpec `json:"spec"`
		Status string                 `json:"status"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil || m.Status != "active" || len(m.Spec.NewCAPEM) != 1 ||
		m.Spec.Canary != "mx2.example.nl." || m.Spec.MaxParallel != 2 || len(m.Spec.Windows) != 1 {
		t.Errorf("start --json: exit %d %+v\n%s", code, m, out)
	}
}

func TestMigrationDirSource(t *testing.T) {
	p := newMigPKI(t)
	other := newMigPKI(t)
	dir := t.TempDir()
	now := time.Now()
	src := &dirSource{dir: dir, cas: []*x509.Certificate{p.ca}, now: func() time.Time { return now }, settle: dirSettle}
	const host = "mx1.example.nl."
	certPath, keyPath := filepath.Join(dir, "mx1.example.nl.pem"), filepath.Join(dir, "mx1.example.nl.key")
	chain, key := p.leaf(t, "mx1.example.nl")
	_, otherKey := p.leaf(t, "mx1.example.nl")
	otherChain, otherChainKey := other.leaf(t, "mx1.example.nl")
	wrongName, wrongNameKey := p.leaf(t, "mx9.example.nl")
	// A leaf of another CA followed by the new CA's (public) certificate.
	end := strings.Index(string(otherChain), "-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----\n")
	forged := append(append([]byte{}, otherChain[:end]...), p.caPEM...)
	old := now.Add(-time.Hour)
	// Cut inside the leaf (the CA's certificate may be the longer one).
	half := chain[:strings.Index(string(chain), "-----END CERTIFICATE-----")/2]

	put := func(c, k []byte, mtime time.Time) {
		t.Helper()
		os.Remove(certPath)
		os.Remove(keyPath)
		if c != nil {
			writeFile(t, certPath, c)
			os.Chtimes(certPath, mtime, mtime)
		}
		if k != nil {
			writeFile(t, keyPath, k)
			os.Chtimes(keyPath, mtime, mtime)
		}
	}
	tests := []struct {
		name    string
		chain   []byte
		key     []byte
		mtime   time.Time
		want    bool   // material returned
		wantErr string // error (else nil, nil)
	}{
		{"nothing yet", nil, nil, now, false, ""},
		{"chain only", chain, nil, old, false, ""},
		{"key only", nil, key, old, false, ""},
		{"half-written chain", half, key, now, false, ""},
		{"half-written key", chain, key[:len(key)/2], now, false, ""},
		{"leaf written, CA not yet", chain[:strings.Index(string(chain), "-----END CERTIFICATE-----")+26], key, now, false, ""},
		{"wrong key, fresh", chain, otherKey, now, false, ""},
		{"wrong key, settled", chain, otherKey, old, false, "the key does not belong to the certificate"},
		{"half-written, settled", half, key, old, false, "the chain does not parse"},
		{"other CA, settled", otherChain, otherChainKey, old, false, "does not include a certificate of the migration's new CA set"},
		{"other name, settled", wrongName, wrongNameKey, old, false, "not valid for mx1.example.nl"},
		{"key and chain swapped, settled", key, chain, old, false, "must hold the certificate chain only"},
		{"forged chain, settled", forged, otherChainKey, old, false, "does not verify up to the new CA set"},
		{"good pair", chain, key, now, true, ""},
		{"good pair, settled", chain, key, old, true, ""},
	}
	for _, tc := range tests {
		put(tc.chain, tc.key, tc.mtime)
		m, err := src.Fetch(t.Context(), host)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || m != nil {
				t.Errorf("%s: %v, %v; want error %q", tc.name, m, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%s: error %v", tc.name, err)
		case tc.want != (m != nil):
			t.Errorf("%s: material %v, want %v", tc.name, m != nil, tc.want)
		case m != nil && (string(m.ChainPEM) != string(tc.chain) || string(m.KeyPEM) != string(tc.key)):
			t.Errorf("%s: returned other material", tc.name)
		}
	}
	// A key file others can read is never taken: the error says the chmod.
	put(chain, key, old)
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if m, err := src.Fetch(t.Context(), host); m != nil || !errors.Is(err, safefile.ErrTooOpen) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("open key file: %v, %v", m, err)
	}
	if err := os.Chmod(keyPath, 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory others may write is not trusted.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if m, err := src.Fetch(t.Context(), host); m != nil || err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Errorf("world-writable directory: %v, %v", m, err)
	}
	os.Chmod(dir, 0o700)
	if m, err := src.Fetch(t.Context(), host); m == nil || err != nil {
		t.Errorf("after chmod 700: %v, %v", m, err)
	}
	if _, err := src.Fetch(t.Context(), "../etc/passwd"); err == nil {
		t.Errorf("a host name with a slash was looked up")
	}
}

// TestMigrationCertSource: the source is built from the stored spec.
func TestMigrationCertSource(t *testing.T) {
	p := newMigPKI(t)
	env := &rolloverEnv{}
	for _, tc := range []struct {
		source map[string]string
		kind   string
	}{
		{map[string]string{"kind": "dir", "dir": "/srv/incoming"}, "dir"},
		{map[string]string{"kind": "hook"}, ""},
		{nil, ""},
		{map[string]string{"kind": "acme", "directory": "https://acme.example.test/dir"}, "acme"},
		{map[string]string{"kind": "tape"}, "error"},
	} {
		src, err := env.certSource(&rollover.Migration{Spec: rollover.MigrationSpec{Source: tc.source, NewCAPEM: []string{string(p.caPEM)}}})
		var kind string
		switch s := src.(type) {
		case *dirSource:
			kind = "dir"
			if s.dir != "/srv/incoming" || len(s.cas) != 1 {
				t.Errorf("dir source %+v", s)
			}
		case *acmeSource:
			kind = "acme"
		case nil:
		default:
			kind = "other"
		}
		if err != nil {
			kind = "error"
		}
		if kind != tc.kind || (tc.kind == "" && src != nil) {
			t.Errorf("source %v: got %q (%T, %v), want %q", tc.source, kind, src, err, tc.kind)
		}
	}
}

// parseExposition reads a metrics file back with the Prometheus parser.
func parseExposition(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("%s does not parse as the Prometheus text format: %v", path, err)
	}
	return fams
}

func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	fam := fams[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if len(got) != len(labels) {
			continue
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		return m.GetGauge().GetValue(), true
	}
	return 0, false
}

func TestMigrationMetrics(t *testing.T) {
	now := time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)
	next := now.Add(90 * time.Minute)
	a := &rollover.Migration{
		Spec:   rollover.MigrationSpec{Name: "pkio-2027", MaxFailures: 3, Deadline: now.Add(24 * time.Hour)},
		Status: rollover.MigrationActive, Failures: 1, Updated: now,
		Hosts: []rollover.HostProgress{
			{Host: "mx1.example.nl.", Phase: rollover.PhaseDone},
			{Host: "mx2.example.nl.", Phase: rollover.PhaseDone},
			{Host: "mx3.example.nl.", Phase: rollover.PhaseHeld, Failed: true},
			{Host: "mx4.example.nl.", Phase: rollover.PhaseWaitWindow, Next: next},
		},
	}
	b := &rollover.Migration{
		Spec:   rollover.MigrationSpec{Name: "old", MaxFailures: 1, Deadline: now.Add(-time.Hour)},
		Status: rollover.MigrationDone,
		Hosts:  []rollover.HostProgress{{Host: "mail.example.org.", Phase: rollover.PhaseDone}},
	}
	c := &rollover.Migration{Spec: rollover.MigrationSpec{Name: "nodeadline", MaxFailures: 1}, Status: rollover.MigrationPaused,
		Hosts: []rollover.HostProgress{{Host: "x.example.nl.", Phase: rollover.PhasePending}}}
	path := filepath.Join(t.TempDir(), "tlsactl.prom")
	if err := writeMigrationMetrics(path, []*rollover.Migration{a, b, c}, now); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("metrics file: %v, %v; want mode 0644 for the collector", fi, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("temporary files left beside the metrics file: %v", ents)
	}
	fams := parseExposition(t, path)
	for _, f := range fams {
		if f.GetType() != dto.MetricType_GAUGE || f.GetHelp() == "" {
			t.Errorf("%s: type %v, help %q; want a gauge with help", f.GetName(), f.GetType(), f.GetHelp())
		}
	}
	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"tlsactl_migration_hosts", map[string]string{"migration": "pkio-2027", "phase": "done"}, 2},
		{"tlsactl_migration_hosts", map[string]string{"migration": "pkio-2027", "phase": "held"}, 1},
		{"tlsactl_migration_hosts", map[string]string{"migration": "pkio-2027", "phase": "waiting-window"}, 1},
		{"tlsactl_migration_hosts", map[string]string{"migration": "pkio-2027", "phase": "rolled-back"}, 0},
		{"tlsactl_migration_hosts", map[string]string{"migration": "old", "phase": "done"}, 1},
		{"tlsactl_migration_failures", map[string]string{"migration": "pkio-2027"}, 1},
		{"tlsactl_migration_max_failures", map[string]string{"migration": "pkio-2027"}, 3},
		{"tlsactl_migration_deadline_seconds", map[string]string{"migration": "pkio-2027"}, 86400},
		{"tlsactl_migration_deadline_seconds", map[string]string{"migration": "old"}, -3600},
		{"tlsactl_migration_status", map[string]string{"migration": "pkio-2027", "status": "active"}, 1},
		{"tlsactl_migration_status", map[string]string{"migration": "pkio-2027", "status": "halted"}, 0},
		{"tlsactl_migration_status", map[string]string{"migration": "old", "status": "done"}, 1},
		{"tlsactl_migration_status", map[string]string{"migration": "nodeadline", "status": "paused"}, 1},
		{"tlsactl_migration_next_action_timestamp_seconds", map[string]string{"migration": "pkio-2027"}, float64(next.Unix())},
	}
	for _, w := range want {
		got, ok := metricValue(fams, w.name, w.labels)
		if !ok || got != w.value {
			t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, got, ok, w.value)
		}
	}
	// Every phase and every status has a series, zeros included.
	if n := len(fams["tlsactl_migration_hosts"].GetMetric()); n != 3*len(rollover.Phases) {
		t.Errorf("%d tlsactl_migration_hosts series, want %d", n, 3*len(rollover.Phases))
	}
	if n := len(fams["tlsactl_migration_status"].GetMetric()); n != 3*len(migrationStatuses) {
		t.Errorf("%d tlsactl_migration_status series, want %d", n, 3*len(migrationStatuses))
	}
	// No deadline: no deadline series; nothing pending: no next action.
	if _, ok := metricValue(fams, "tlsactl_migration_deadline_seconds", map[string]string{"migration": "nodeadline"}); ok {
		t.Errorf("a deadline series for a migration without deadline")
	}
	for _, n := range []string{"old", "nodeadline"} {
		if _, ok := metricValue(fams, "tlsactl_migration_next_action_timestamp_seconds", map[string]string{"migration": n}); ok {
			t.Errorf("a next-action series for %s, which waits for nothing", n)
		}
	}
	// No migrations: a valid, empty exposition.
	if err := writeMigrationMetrics(path, nil, now); err != nil {
		t.Fatal(err)
	}
	if fams := parseExposition(t, path); len(fams) != 0 {
		t.Errorf("metrics without migrations: %v", fams)
	}
}

func TestMigrationFormatting(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{42 * time.Second, "42s"}, {3*time.Minute + 5*time.Second, "3m5s"}, {3*time.Hour + 5*time.Minute, "3h5m"},
		{47*24*time.Hour + 19*time.Hour + 3*time.Minute, "47d19h"}, {-90 * time.Second, "1m30s"},
	} {
		if got := fmtDur(tc.d); got != tc.want {
			t.Errorf("fmtDur(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	p := &rollover.MigrationPlan{
		Name: "pkio-2027", Batches: 1, MaxTTL: 3600,
		Start:     time.Date(2027, 1, 9, 23, 0, 0, 0, time.UTC),
		WaitUntil: time.Date(2027, 1, 10, 0, 1, 0, 0, time.UTC),
		Finish:    time.Date(2027, 1, 11, 2, 10, 0, 0, time.UTC),
		Deadline:  time.Date(2027, 1, 11, 0, 0, 0, 0, time.UTC),
		Advice:    []string{"raise max_parallel to 4 (finish 2027-01-11T01:10:00Z)"},
		Hosts: []rollover.PlannedHost{{
			Host: "mx1.example.nl.", Batch: "rfc2136 example.nl.", TTL: 3600, Canary: true,
			Deploy:  time.Date(2027, 1, 11, 1, 0, 0, 0, time.UTC),
			Current: []string{"3 1 1 aaaa", "2 1 1 bbbb"}, Publish: []string{"2 1 1 cccc"}, Retire: []string{"2 1 1 bbbb"},
		}, {Host: "mx2.example.nl.", Error: "another renew rollover is under way"}},
	}
	m := &config.Migration{Name: "pkio-2027", NewCA: []*x509.Certificate{newMigPKI(t).ca}, Margin: time.Minute, MaxParallel: 1, DeployEstimate: time.Minute}
	got := formatPlan(p, m, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	for _, want := range []string{
		"migration pkio-2027 (dry run; nothing changed): 2 hosts",
		"mx1.example.nl                   rfc2136 example.nl.            3600  2027-01-11T01:00:00Z  canary",
		"    ~ 3 1 1 aaaa\n    - 2 1 1 bbbb\n    + 2 1 1 cccc\n",
		"mx2.example.nl", "    held: another renew rollover is under way",
		"publish start  2027-01-09T23:00:00Z (not_before)",
		"wait end       2027-01-10T00:01:00Z (the largest TTL, 3600 s",
		"finish         2027-01-11T02:10:00Z",
		"deadline       2027-01-11T00:00:00Z: MISSED by 2h10m",
		"  advice: raise max_parallel to 4",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("plan text lacks %q:\n%s", want, got)
		}
	}
}
