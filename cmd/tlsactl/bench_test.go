package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCertFiles writes n small ECDSA P-256 certificates, one PEM file each,
// into dir, all for one key (as bench/gencerts does).
func writeCertFiles(tb testing.TB, dir string, n int) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("mx%06d.example.nl", i)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i) + 1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour), BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			tb.Fatal(err)
		}
		b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%06d.pem", i)), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkCreateBatch: one `create --certificate 'dir/*.pem'` over 1000
// files per op, the whole CLI path (glob, read, parse, hash, print).
func BenchmarkCreateBatch(b *testing.B) {
	const n = 1000
	dir := b.TempDir()
	writeCertFiles(b, dir, n)
	args := []string{"tlsactl", "create", "--certificate", filepath.Join(dir, "*.pem"), "mail.example.nl"}
	var errb strings.Builder
	b.ResetTimer()
	for b.Loop() {
		if code := run(b.Context(), args, strings.NewReader(""), io.Discard, &errb); code != 0 {
			b.Fatalf("exit %d: %s", code, errb.String())
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
}

// TestCreateBatchOutput: the batch path prints one correct line per file, in order.
func TestCreateBatchOutput(t *testing.T) {
	dir := t.TempDir()
	writeCertFiles(t, dir, 50)
	stdout, stderr, code := runCLI(t, "", "create", "--output", "both", "--certificate", filepath.Join(dir, "*.pem"), "mail.example.nl")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 100 {
		t.Fatalf("%d lines, want 100", len(lines))
	}
	// One key certified 50 times: every pair of lines is the same.
	for i := 0; i < len(lines); i += 2 {
		if lines[i] != lines[0] || lines[i+1] != lines[1] {
			t.Fatalf("line %d/%d differ from the first pair: %q %q", i+1, i+2, lines[i], lines[i+1])
		}
	}
}
