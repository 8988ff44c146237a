package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/migration")

// migNow is the clock of these tests: the CA certificates are made around
// it and the golden files do not change as real time goes by.
var migNow = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// migCert makes a certificate (self-signed, so each stands alone) valid
// from notBefore to notAfter.
func migCert(t testing.TB, cn string, isCA bool, notBefore, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		BasicConstraintsValid: true, IsCA: isCA,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.DNSNames = []string{cn}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// migrationDir copies testdata/migration into a new directory and adds the
// files the migration files name: CA certificates (ca/), the incoming
// directory, EAB credentials. It returns the directory and the
// configuration read from its tlsactl.toml.
func migrationDir(t testing.TB) (string, *Config) {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir(filepath.Join("testdata", "migration"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("testdata", "migration", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, e.Name()), b, 0o644)
	}
	year := 365 * 24 * time.Hour
	new1 := migCert(t, "New Issuing CA 1", true, migNow.Add(-year), migNow.Add(5*year))
	files := map[string][]byte{
		"ca/new-1.pem":   new1,
		"ca/new-2.pem":   migCert(t, "New Issuing CA 2", true, migNow.Add(-year), migNow.Add(5*year)),
		"ca/future.pem":  migCert(t, "Future CA", true, migNow.Add(30*24*time.Hour), migNow.Add(5*year)),
		"ca/expired.pem": migCert(t, "Expired CA", true, migNow.Add(-2*year), migNow.Add(-24*time.Hour)),
		"ca/leaf.pem":    migCert(t, "mx1.example.nl", false, migNow.Add(-year), migNow.Add(year)),
		"ca/garbage.pem": []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"),
		"ca/roots.pem":   new1,
		"eab/kid":        []byte("kid-1\n"),
	}
	for i := 1; i <= 13; i++ {
		files[fmt.Sprintf("ca/many/%02d.pem", i)] = migCert(t, fmt.Sprintf("Many CA %02d", i), true, migNow.Add(-year), migNow.Add(year))
	}
	for name, b := range files {
		write(t, filepath.Join(dir, name), b, 0o644)
	}
	write(t, filepath.Join(dir, "eab/hmac"), []byte("c2VjcmV0LWhtYWMta2V5\n"), 0o600)
	write(t, filepath.Join(dir, "eab/hmac-open"), []byte("c2VjcmV0LWhtYWMta2V5\n"), 0o644)
	if err := os.Mkdir(filepath.Join(dir, "incoming"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(filepath.Join(dir, "tlsactl.toml"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

func write(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
}

// renderMigration is what the golden files hold: the resolved migration,
// its spec as stored (the CA certificates by subject) and the warnings,
// with the test directory written as $DIR.
func renderMigration(t *testing.T, m *Migration, warnings []string, dir string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "file: %s\nname: %s\n", m.File, m.Name)
	for _, h := range m.Hosts {
		fmt.Fprintf(&b, "host: %s port %d\n", h.Name, h.Port)
	}
	for i, c := range m.NewCA {
		fmt.Fprintf(&b, "new_ca: %q from %s\n", c.Subject.CommonName, m.NewCAFiles[i])
	}
	fmt.Fprintf(&b, "not_before: %s\ndeadline: %s\n", rfc(m.NotBefore), rfc(m.Deadline))
	fmt.Fprintf(&b, "windows: %q\nmax_parallel: %d\nmax_failures: %d\ncanary: %q\nttl: %d\nmargin: %s\ndeploy_estimate: %s\n",
		m.WindowSpecs, m.MaxParallel, m.MaxFailures, m.Canary, m.TTL, m.Margin, m.DeployEstimate)
	spec := m.Spec()
	if len(spec.NewCAPEM) != len(m.NewCA) {
		t.Errorf("spec has %d CA PEMs, want %d", len(spec.NewCAPEM), len(m.NewCA))
	}
	for i, p := range spec.NewCAPEM {
		blk, _ := pem.Decode([]byte(p))
		if blk == nil || string(blk.Bytes) != string(m.NewCA[i].Raw) {
			t.Errorf("spec CA %d is not the PEM of %s", i, m.NewCA[i].Subject)
		}
	}
	spec.NewCAPEM = []string{fmt.Sprintf("(%d PEM certificates)", len(spec.NewCAPEM))}
	js, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "spec: %s\n", js)
	for _, w := range warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	return strings.ReplaceAll(b.String(), dir, "$DIR")
}

func rfc(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// eachMigrationFile runs fn in a subtest for every testdata/migration file f
// that matches glob (there must be atLeast), with the contents b of its
// copy path in dir.
func eachMigrationFile(t *testing.T, dir, glob string, atLeast int, fn func(t *testing.T, f, path string, b []byte)) {
	files, _ := filepath.Glob(filepath.Join("testdata", "migration", glob))
	if len(files) < atLeast {
		t.Fatalf("only %d testdata/migration/%s", len(files), glob)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(strings.TrimSuffix(name, ".toml"), func(t *testing.T) {
			path := filepath.Join(dir, name)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			fn(t, f, path, b)
		})
	}
}

func TestLoadMigrationGolden(t *testing.T) {
	dir, cfg := migrationDir(t)
	eachMigrationFile(t, dir, "good-*.toml", 1, func(t *testing.T, f, path string, b []byte) {
		m, warnings, err := parseMigration(b, path, cfg, migNow)
		if err != nil {
			t.Fatal(err)
		}
		got := renderMigration(t, m, warnings, dir)
		golden := strings.TrimSuffix(f, ".toml") + ".golden"
		if *update {
			if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run go test -run TestLoadMigrationGolden -update)", err)
		}
		if got != string(want) {
			t.Errorf("resolved migration differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", golden, got, want)
		}
	})
}

// TestLoadMigrationErrors reads every testdata/migration/bad-*.toml: its
// first line, "# error: TEXT", is part of the one-line error it must give
// ($DIR is the test directory).
func TestLoadMigrationErrors(t *testing.T) {
	dir, cfg := migrationDir(t)
	eachMigrationFile(t, dir, "bad-*.toml", 30, func(t *testing.T, f, path string, b []byte) {
		first, _, _ := strings.Cut(string(b), "\n")
		want, ok := strings.CutPrefix(first, "# error: ")
		if !ok {
			t.Fatalf("%s: the first line must be \"# error: TEXT\"", f)
		}
		want = strings.ReplaceAll(want, "$DIR", dir)
		_, _, err := parseMigration(b, path, cfg, migNow)
		if err == nil {
			t.Fatalf("loaded; want an error containing %q", want)
		}
		msg := err.Error()
		if !errors.Is(err, ErrConfig) || !strings.Contains(msg, want) {
			t.Errorf("error %q\nwant one containing %q", msg, want)
		}
		if !strings.Contains(msg, path) && !strings.Contains(msg, filepath.Base(path)) {
			t.Errorf("error %q does not name the file", msg)
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("error is not one line: %q", msg)
		}
		if strings.Contains(msg, "c2VjcmV0LWhtYWMta2V5") {
			t.Errorf("error leaks the HMAC key: %q", msg)
		}
	})
}

func TestLoadMigrationFile(t *testing.T) {
	dir, cfg := migrationDir(t)
	m, _, err := LoadMigration(filepath.Join(dir, "good-minimal.toml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "min" || m.Margin != 45*time.Second || m.MaxParallel != 1 || m.MaxFailures != 1 || m.DeployEstimate != time.Minute {
		t.Errorf("defaults: %+v", m)
	}
	// No margin in the configuration either: 60 s, as `rollover` uses.
	m, _, err = LoadMigration(filepath.Join(dir, "good-minimal.toml"), &Config{Hosts: cfg.Hosts})
	if err != nil || m.Margin != time.Minute {
		t.Errorf("margin %v, err %v; want 1m0s", m.Margin, err)
	}
	_, _, err = LoadMigration(filepath.Join(dir, "nope.toml"), cfg)
	if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	// A relative path: the CA files are found beside the migration file,
	// not in the working directory.
	t.Chdir(filepath.Dir(dir))
	m, _, err = LoadMigration(filepath.Join(filepath.Base(dir), "good-minimal.toml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.File != filepath.Join(dir, "good-minimal.toml") {
		t.Errorf("File %q, want the absolute path", m.File)
	}
}

func TestSourceMapRoundTrip(t *testing.T) {
	for _, s := range []MigrationSource{
		{Kind: SourceDir, Dir: "/srv/incoming"},
		{Kind: SourceHook},
		{Kind: SourceACME, Directory: "https://acme.example.test/dir", Email: "a@example.nl", EABKIDFile: "/k", EABHMACFile: "/h", CAFile: "/ca.pem", KeyType: "rsa2048"},
	} {
		got, err := SourceFromMap(s.Map())
		if err != nil || got != s {
			t.Errorf("round trip of %+v: %+v, %v", s, got, err)
		}
	}
	for _, m := range []map[string]string{
		{"kind": "ftp"},
		{"kind": "dir"},
		{"kind": "acme"},
		{"kind": "hook", "colour": "blue"},
	} {
		if _, err := SourceFromMap(m); err == nil {
			t.Errorf("SourceFromMap(%v) accepted", m)
		}
	}
	if s, err := SourceFromMap(nil); err != nil || s.Kind != SourceHook {
		t.Errorf("an empty source: %+v, %v; want kind hook", s, err)
	}
}

// FuzzLoadMigration: no input makes the loader panic; every error is one
// line wrapping ErrConfig; whatever loads is complete.
func FuzzLoadMigration(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "migration", "*.toml"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("name = \"a\"\nhosts = [\"*\"]\nnew_ca = [\"ca/*.pem\"]\n[source]\nkind = \"hook\"\n"))
	f.Add([]byte("name = \"a\"\nhosts = [\"[\"]\nnew_ca = [\"/dev/stdin\"]\n[source]\nkind = \"dir\"\ndir = \"/dev/null\"\n"))
	dir, cfg := migrationDir(f)
	path := filepath.Join(dir, "fuzz.toml")
	f.Fuzz(func(t *testing.T, b []byte) {
		m, _, err := parseMigration(b, path, cfg, migNow)
		if err != nil {
			if !errors.Is(err, ErrConfig) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: not one line wrapping ErrConfig", err)
			}
			return
		}
		if len(m.Hosts) == 0 || len(m.NewCA) == 0 || m.MaxParallel < 1 || m.MaxFailures < 1 || m.Source.Kind == "" {
			t.Fatalf("incomplete migration accepted: %+v", m)
		}
		spec := m.Spec()
		if len(spec.Hosts) != len(m.Hosts) || len(spec.NewCAPEM) != len(m.NewCA) || len(spec.Windows) != len(m.Windows) {
			t.Fatalf("spec %+v does not match %+v", spec, m)
		}
		if _, err := SourceFromMap(spec.Source); err != nil {
			t.Fatalf("the stored source does not read back: %v", err)
		}
	})
}

// TestExampleMigrationLoads: examples/migrations/pkio-2027.toml is a valid
// migration for examples/tlsactl.toml (its incoming directory replaced by
// one that exists here).
func TestExampleMigrationLoads(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "..", "examples", "tlsactl.toml"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "examples", "migrations", "pkio-2027.toml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	incoming := t.TempDir()
	text := strings.Replace(string(b), `dir = "/var/lib/tlsactl/incoming/pkio-2027"`, `dir = "`+incoming+`"`, 1)
	if text == string(b) {
		t.Fatal("the example's source.dir line changed: update this test")
	}
	m, warnings, err := ParseMigration([]byte(text), path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "pkio-2027" || len(m.Hosts) != 2 || len(m.NewCA) != 1 || m.Canary != "mail.example.nl." || m.MaxParallel != 4 ||
		len(m.Windows) != 1 || m.Source.Kind != SourceDir || m.Source.Dir != incoming || m.Deadline.IsZero() {
		t.Errorf("example migration: %+v", m)
	}
	for _, w := range warnings {
		if !strings.Contains(w, "deadline") { // it passes one day
			t.Errorf("warning: %s", w)
		}
	}
}
