package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// runMu serialises calls of run: urfave/cli v2 writes to its package-level
// helpCommand on every App.Run (command.go, Command.setup), a data race when
// two Apps run at once in one process. The real binary runs one App; tests
// that call run from parallel subtests take this lock.
var runMu sync.Mutex

// runCLI calls run with "tlsactl" prepended to args and returns what it wrote.
func runCLI(t testing.TB, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	runMu.Lock()
	defer runMu.Unlock()
	code = run(context.Background(), append([]string{"tlsactl"}, args...), strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// needOpenSSL skips (or, under CI=true, fails) when openssl is missing.
func needOpenSSL(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not found; apt-get install -y openssl")
		}
		t.Skip("openssl not found; apt-get install -y openssl")
	}
}

// openssl runs openssl in dir and fails the test on error.
func openssl(t testing.TB, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// keyAlg is a key type for openssl req -newkey.
type keyAlg struct {
	name   string
	newkey []string
}

var keyAlgs = []keyAlg{
	{"rsa2048", []string{"-newkey", "rsa:2048"}},
	{"p256", []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"}},
	{"p384", []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"}},
	{"ed25519", []string{"-newkey", "ed25519"}},
}

// pki is a CA and a leaf it signed, as files in one directory.
type pki struct {
	dir                    string
	ca, caKey              string // CA certificate and key
	leaf, leafKey, leafCSR string // leaf certificate, key and CSR
	chain                  string // leaf then CA
}

// makePKI creates a CA (CA:TRUE) and a leaf for mail.example.nl (CA:FALSE)
// signed by it, both with key type alg, in a new directory.
func makePKI(t testing.TB, alg keyAlg) pki {
	t.Helper()
	d := t.TempDir()
	p := pki{dir: d,
		ca: filepath.Join(d, "ca.pem"), caKey: filepath.Join(d, "ca.key"),
		leaf: filepath.Join(d, "leaf.pem"), leafKey: filepath.Join(d, "leaf.key"), leafCSR: filepath.Join(d, "leaf.csr"),
		chain: filepath.Join(d, "chain.pem"),
	}
	ext := "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:mail.example.nl\n"
	if err := os.WriteFile(filepath.Join(d, "leaf.ext"), []byte(ext), 0o644); err != nil {
		t.Fatal(err)
	}
	openssl(t, d, append(append([]string{"req", "-x509"}, alg.newkey...),
		"-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Test CA "+alg.name, "-days", "30",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")...)
	openssl(t, d, append(append([]string{"req", "-new"}, alg.newkey...),
		"-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=mail.example.nl")...)
	openssl(t, d, "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "2",
		"-days", "30", "-extfile", "leaf.ext", "-out", "leaf.pem")
	leaf, err := os.ReadFile(p.leaf)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(p.ca)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.chain, append(leaf, ca...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitFor polls cond every 50 ms until it holds and returns when it did;
// after d, or once ctx is done, it fails the test naming what.
func waitFor(t testing.TB, ctx context.Context, what string, d time.Duration, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(50 * time.Millisecond) // the interval of a poll, not a wait for anything
	}
	return time.Now()
}
