package tlsa

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fixedNow is the MatchOptions.Now of every match test; Go-built certificates
// are valid around it.
var fixedNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// sharedDir holds the openssl material generated once per package run.
var sharedDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "tlsa-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// sh runs a shell pipeline in dir and returns its standard output.
func sh(t testing.TB, dir, cmd string) []byte {
	t.Helper()
	c := exec.Command("sh", "-c", "set -e; "+cmd)
	c.Dir = dir
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, stderr.String())
	}
	return out
}

// dgst parses the output of `openssl dgst -<alg> -r`: "<hex> *stdin".
func dgst(t testing.TB, out []byte) string {
	t.Helper()
	f := strings.Fields(string(out))
	if len(f) == 0 {
		t.Fatalf("empty openssl dgst output")
	}
	return f[0]
}

func needOpenSSL(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		skipOrFail(t, "openssl not installed: apt-get install -y openssl")
	}
}

// skipOrFail skips a test whose independent oracle is missing, except under
// CI=true, where a missing tool is a failure.
func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: missing tools fail)")
	}
	t.Skip(msg)
}

// osKind is one key algorithm generated with openssl.
type osKind struct {
	name    string
	genpkey string // arguments to openssl genpkey
}

var osKinds = []osKind{
	{"rsa2048", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"},
	{"rsa4096", "-algorithm RSA -pkeyopt rsa_keygen_bits:4096"},
	{"p256", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"},
	{"p384", "-algorithm EC -pkeyopt ec_paramgen_curve:P-384"},
	{"ed25519", "-algorithm ED25519"},
}

var (
	kitOnce sync.Once
	kitErr  string
)

// opensslKit generates, once per package, for every osKind a key
// (<kind>.key.pem), a self-signed certificate (<kind>.crt.pem), a CSR
// (<kind>.csr.pem) and a certificate issued from that CSR by a separate CA
// (<kind>.issued.pem). It returns the directory.
func opensslKit(t testing.TB) string {
	t.Helper()
	needOpenSSL(t)
	kitOnce.Do(func() {
		cmds := []string{
			// The CA that signs the CSRs.
			"openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key.pem",
			"openssl req -x509 -key ca.key.pem -subj /CN=Test-CA -days 30 -out ca.crt.pem",
		}
		var wg sync.WaitGroup
		errs := make([]string, len(osKinds)+1)
		run := func(i int, cs []string) {
			defer wg.Done()
			for _, c := range cs {
				cmd := exec.Command("sh", "-c", c)
				cmd.Dir = sharedDir
				if out, err := cmd.CombinedOutput(); err != nil {
					errs[i] = fmt.Sprintf("%s: %v: %s", c, err, out)
					return
				}
			}
		}
		wg.Add(1)
		run(len(osKinds), cmds)
		for i, k := range osKinds {
			n := k.name
			cs := []string{
				"openssl genpkey " + k.genpkey + " -out " + n + ".key.pem",
				"openssl req -x509 -key " + n + ".key.pem -subj /CN=mail.example.nl -addext subjectAltName=DNS:mail.example.nl -days 30 -out " + n + ".crt.pem",
				"openssl req -new -key " + n + ".key.pem -subj /CN=mail.example.nl -out " + n + ".csr.pem",
				"openssl x509 -req -in " + n + ".csr.pem -CA ca.crt.pem -CAkey ca.key.pem -set_serial 7 -days 30 -out " + n + ".issued.pem",
			}
			wg.Add(1)
			go run(i, cs) // RSA 4096 is slow; generate the kinds in parallel
		}
		wg.Wait()
		kitErr = strings.Join(errs, "")
	})
	if kitErr != "" {
		t.Fatal(kitErr)
	}
	return sharedDir
}

// parseOne parses data and insists on exactly one piece of material.
func parseOne(t testing.TB, name string, data []byte) Material {
	t.Helper()
	ms, err := ParseMaterial(name, data)
	if err != nil {
		t.Fatalf("ParseMaterial(%s): %v", name, err)
	}
	if len(ms) != 1 {
		t.Fatalf("ParseMaterial(%s): %d items, want 1", name, len(ms))
	}
	return ms[0]
}

func compute(t testing.TB, m Material, u Usage, s Selector, mt MatchingType) Record {
	t.Helper()
	r, err := Compute(m, u, s, mt)
	if err != nil {
		t.Fatalf("Compute(%d %d %d): %v", u, s, mt, err)
	}
	return r
}

func hexOf(r Record) string { return hex.EncodeToString(r.Data) }

// --- Go-built PKI ---

type tcert struct {
	cert *x509.Certificate
	der  []byte
	key  crypto.Signer
}

func (c *tcert) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der})
}

var serial int64 = 100
var serialMu sync.Mutex

func nextSerial() *big.Int {
	serialMu.Lock()
	defer serialMu.Unlock()
	serial++
	return big.NewInt(serial)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// issue signs tmpl with parent (nil: self-signed) and returns the certificate
// for key.
func issue(t testing.TB, tmpl *x509.Certificate, parent *tcert, key crypto.Signer) *tcert {
	t.Helper()
	tmpl.SerialNumber = nextSerial()
	p, pk := tmpl, key
	if parent != nil {
		p, pk = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p, key.Public(), pk)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tcert{cert: c, der: der, key: key}
}

func caTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             fixedNow.AddDate(-1, 0, 0),
		NotAfter:              fixedNow.AddDate(5, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

func leafTemplate(cn string, dns ...string) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dns,
		NotBefore:   fixedNow.AddDate(0, -1, 0),
		NotAfter:    fixedNow.AddDate(0, 2, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

// pki is root -> intermediate -> leaf for mail.example.nl.
type pki struct {
	root, inter, leaf *tcert
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	root := issue(t, caTemplate("Test Root"), nil, newKey(t))
	inter := issue(t, caTemplate("Test Intermediate"), root, newKey(t))
	leaf := issue(t, leafTemplate("mail.example.nl", "mail.example.nl"), inter, newKey(t))
	return &pki{root: root, inter: inter, leaf: leaf}
}

func certs(cs ...*tcert) []*x509.Certificate {
	out := make([]*x509.Certificate, len(cs))
	for i, c := range cs {
		out[i] = c.cert
	}
	return out
}

func recFor(t testing.TB, c *tcert, u Usage, s Selector, mt MatchingType) Record {
	t.Helper()
	return compute(t, Material{Kind: KindCertificate, Certificate: c.cert, SPKI: c.cert.RawSubjectPublicKeyInfo}, u, s, mt)
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func singleLine(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("error message is not a single line: %q", err.Error())
	}
}
