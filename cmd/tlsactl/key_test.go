package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

// readCSR parses a PEM CSR file and checks its signature.
func readCSR(t *testing.T, path string) *x509.CertificateRequest {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("%s: not a PEM CSR", path)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signature: %v", err)
	}
	return csr
}

// signCSR issues a server certificate for the CSR's names and key from ca
// (the test CA standing in for the ACME CA).
func signCSR(t *testing.T, csr *x509.CertificateRequest, ca *testbed.Cert) []byte {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: csr.Subject, DNSNames: csr.DNSNames,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keySPKI(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := tlsa.ParseMaterial(path, b)
	if err != nil || len(ms) != 1 || ms[0].Kind != tlsa.KindPrivateKey {
		t.Fatalf("%s: %v %v", path, ms, err)
	}
	return ms[0].SPKI
}

func spkiRec(spki []byte) string {
	r, _ := tlsa.Compute(tlsa.Material{Kind: tlsa.KindPublicKey, SPKI: spki}, tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	return r.String()
}

// TestKeyNext: `key next` stores a 0600 key and its CSR, publishes the next
// 3 1 1 beside the current records; a certificate issued from the CSR and
// handed to `hook lego` the way lego --csr does (no key file) is held back
// until the 3 1 1 has aged, then deployed, and the old 3 1 1 retired. The
// background probe and posttls-finger never fail.
func TestKeyNext(t *testing.T) {
	b := newRoBed(t, "key.test", "mx")
	h := b.newRoHost(t, "mx", 3)
	a := h.initial
	outDir := t.TempDir()

	out, errOut, code := runCLI(t, "", "key", "next", "--config", h.cfgPath, "--host", h.name)
	t.Logf("key next → exit %d\n%s%s", code, out, errOut)
	h.finger("after key next")
	if code != 0 {
		t.Fatalf("key next: exit %d", code)
	}
	dir := filepath.Join(h.stateDir, "keys", h.name)
	keyPath, csrPath := filepath.Join(dir, "next-key.pem"), filepath.Join(dir, "next.csr")
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("next key mode %04o, want 0600", fi.Mode().Perm())
	}
	for _, w := range []string{csrPath, "lego", "--csr " + csrPath, "renew", "tlsactl hook lego"} {
		if !strings.Contains(out, w) {
			t.Errorf("key next output lacks %q", w)
		}
	}
	csr := readCSR(t, csrPath)
	spki := keySPKI(t, keyPath)
	if !bytes.Equal(csr.RawSubjectPublicKeyInfo, spki) {
		t.Fatal("the CSR's public key is not the next key's")
	}
	if len(csr.DNSNames) != 1 || csr.DNSNames[0] != h.name || csr.Subject.CommonName != h.name {
		t.Errorf("CSR names %v CN %q", csr.DNSNames, csr.Subject.CommonName)
	}
	next := spkiRec(spki)
	h.assertKnot("next key published", roSorted(append(roPair(a), next)...))
	h.assertServes("next key published", a)
	st := h.loadState()
	if st.Plan != rollover.PlanKeyPrepublish || st.CurrentStep() != rollover.StepWaitTTL || st.Next != next {
		t.Fatalf("after key next: %s step %s next %s", st.Plan, st.CurrentStep(), st.Next)
	}
	notBefore := st.NotBefore

	// A second `key next` while the rollover is active must not replace the key.
	keyBefore, _ := os.ReadFile(keyPath)
	_, errOut, code = runCLI(t, "", "key", "next", "--config", h.cfgPath, "--host", h.name)
	if code != exitRolloverError || !strings.Contains(errOut, "active") {
		t.Errorf("key next during a rollover: exit %d %s", code, errOut)
	}
	if k, _ := os.ReadFile(keyPath); !bytes.Equal(k, keyBefore) {
		t.Error("key next during a rollover replaced the next key")
	}

	// The ACME CA issues from the CSR; lego --csr leaves no key file.
	leafPEM := signCSR(t, csr, a.Intermediate)
	env := legoLayout(t, h.name, leafPEM, a.Intermediate.PEM, nil, false)
	if time.Now().Before(notBefore) {
		r := h.hook("lego", env)
		h.wantHookCode("certificate on the next key before the TTL", r, exitHookHeld)
		if !strings.Contains(r.errOut, "held back") || !strings.Contains(r.errOut, "3 1 1 has not aged") {
			t.Errorf("held-back message: %s", r.errOut)
		}
		h.assertServes("held back", a)
	}
	time.Sleep(time.Until(notBefore))
	r := h.hook("lego", env)
	h.wantHookCode("certificate on the next key after the TTL", r, 0)
	chain, err := h.served(b.ctx)
	if err != nil || len(chain) != 2 || !bytes.Equal(chain[0].RawSubjectPublicKeyInfo, spki) || !chain[1].Equal(a.Intermediate.Cert) {
		t.Fatalf("Postfix does not serve the certificate on the next key: %v %s", err, roLeaf(chain))
	}
	if k, _ := os.ReadFile(h.keyPath); !bytes.Equal(k, keyBefore) {
		t.Error("the deployed key file is not the next key")
	}
	h.assertKnot("old 3 1 1 retired", roSorted(next, roRec(a.Intermediate, tlsa.DANETA)))
	st = h.loadState()
	if st.Status != rollover.StatusDone {
		t.Fatalf("key-prepublish %s at %s", st.Status, st.CurrentStep())
	}
	for _, e := range st.History {
		if e.What == "deploying" && e.At.Before(notBefore) {
			t.Errorf("deployed at %s, before %s", e.At, notBefore)
		}
	}

	// The next round: an RSA key with another name, the CSR copied to --out.
	out, errOut, code = runCLI(t, "", "key", "next", "--config", h.cfgPath, "--host", h.name, "--rsa", "--san", "smtp.key.test", "--out", outDir)
	t.Logf("key next --rsa → exit %d\n%s%s", code, out, errOut)
	h.finger("after key next --rsa")
	if code != 0 {
		t.Fatalf("key next --rsa: exit %d", code)
	}
	csr2 := readCSR(t, filepath.Join(outDir, h.name+".csr"))
	if _, ok := csr2.PublicKey.(*rsa.PublicKey); !ok || csr2.PublicKey.(*rsa.PublicKey).N.BitLen() != 2048 {
		t.Errorf("--rsa: CSR key %T", csr2.PublicKey)
	}
	if strings.Join(csr2.DNSNames, " ") != h.name+" smtp.key.test" {
		t.Errorf("--san: CSR names %v", csr2.DNSNames)
	}
	spki2 := keySPKI(t, keyPath)
	if !bytes.Equal(csr2.RawSubjectPublicKeyInfo, spki2) {
		t.Fatal("--out CSR is not the new next key's")
	}
	h.assertKnot("second next key", roSorted(next, spkiRec(spki2), roRec(a.Intermediate, tlsa.DANETA)))
	h.mustTL("abort")
	h.assertKnot("second next key aborted", roSorted(next, roRec(a.Intermediate, tlsa.DANETA)))
}
