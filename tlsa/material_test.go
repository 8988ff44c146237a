package tlsa

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readKit(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(opensslKit(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseMaterialChains(t *testing.T) {
	p := newPKI(t)
	tests := []struct {
		name  string
		certs []*tcert
	}{
		{"leaf", []*tcert{p.leaf}},
		{"leaf+inter", []*tcert{p.leaf, p.inter}},
		{"leaf+inter+root", []*tcert{p.leaf, p.inter, p.root}},
		{"root+inter+leaf (input order kept)", []*tcert{p.root, p.inter, p.leaf}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var lf, crlf []byte
			for _, c := range tc.certs {
				lf = append(lf, c.pem()...)
			}
			crlf = bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))
			for variant, data := range map[string][]byte{"LF": lf, "CRLF": crlf} {
				ms, err := ParseMaterial(tc.name, data)
				if err != nil {
					t.Fatalf("%s: %v", variant, err)
				}
				got := Certificates(ms)
				if len(ms) != len(tc.certs) || len(got) != len(tc.certs) {
					t.Fatalf("%s: %d materials, %d certs, want %d", variant, len(ms), len(got), len(tc.certs))
				}
				for i, c := range tc.certs {
					if !bytes.Equal(got[i].Raw, c.der) {
						t.Errorf("%s: cert %d is %s, want %s", variant, i, got[i].Subject.CommonName, c.cert.Subject.CommonName)
					}
					if ms[i].Kind != KindCertificate || ms[i].PEMType != "CERTIFICATE" || !bytes.Equal(ms[i].SPKI, c.cert.RawSubjectPublicKeyInfo) {
						t.Errorf("%s: material %d = kind %v type %q", variant, i, ms[i].Kind, ms[i].PEMType)
					}
				}
			}
		})
	}
}

// TestParseMaterialForms reads each PEM and DER form openssl writes and checks
// it yields the kind and the SPKI (hence the 3 1 1) of the certificate.
func TestParseMaterialForms(t *testing.T) {
	dir := opensslKit(t)
	cmds := []string{
		// Text before the block, as `openssl x509 -text` writes it.
		"openssl x509 -in rsa2048.crt.pem -text > rsa2048.text.pem",
		"openssl x509 -in rsa2048.crt.pem -outform DER > rsa2048.crt.der",
		"openssl pkey -in rsa2048.key.pem -pubout -outform DER > rsa2048.pub.der",
		"openssl pkey -in rsa2048.key.pem -pubout > rsa2048.pub.pem",
		"openssl rsa -in rsa2048.key.pem -RSAPublicKey_out -outform DER > rsa2048.pkcs1pub.der",
		"openssl rsa -in rsa2048.key.pem -RSAPublicKey_out > rsa2048.pkcs1pub.pem",
		"openssl pkcs8 -topk8 -nocrypt -in rsa2048.key.pem -outform DER > rsa2048.pkcs8.der",
		"openssl rsa -in rsa2048.key.pem -traditional -outform DER > rsa2048.pkcs1.der",
		"openssl rsa -in rsa2048.key.pem -traditional > rsa2048.pkcs1.pem",
		"openssl req -in rsa2048.csr.pem -outform DER > rsa2048.csr.der",
		"openssl ec -in p256.key.pem -outform DER > p256.sec1.der",
		"openssl ec -in p256.key.pem > p256.sec1.pem",
		"openssl pkcs8 -topk8 -nocrypt -in p256.key.pem -outform DER > p256.pkcs8.der",
		"openssl pkcs8 -topk8 -nocrypt -in ed25519.key.pem -outform DER > ed25519.pkcs8.der",
		"openssl x509 -in p384.crt.pem -addtrust serverAuth > p384.trusted.pem",
		// `openssl ecparam -genkey` writes EC PARAMETERS then EC PRIVATE KEY.
		"openssl ecparam -name prime256v1 -genkey -out ecparam.key.pem",
		"openssl req -x509 -key ecparam.key.pem -subj /CN=mail.example.nl -days 30 -out ecparam.crt.pem",
		"openssl genpkey -algorithm X25519 -out x25519.key.pem",
		"openssl pkey -in x25519.key.pem -pubout -outform DER > x25519.pub.der",
		// A CSR issued by a Go CA below.
		"openssl req -new -key p384.key.pem -subj /CN=go.example.nl -outform DER -out p384.csr.der",
	}
	sh(t, dir, "cd "+dir+" && "+strings.Join(cmds, " && "))

	spkiOf := func(crt string) []byte {
		return parseOne(t, crt, readKit(t, crt)).SPKI
	}
	tests := []struct {
		file    string
		kind    Kind
		pemType string
		sameAs  string // certificate whose SPKI it must have
		fixture func([]byte) error
	}{
		{"rsa2048.text.pem", KindCertificate, "CERTIFICATE", "rsa2048.crt.pem", nil},
		{"rsa2048.crt.der", KindCertificate, "", "rsa2048.crt.pem", func(b []byte) error { _, err := x509.ParseCertificate(b); return err }},
		{"rsa2048.pub.der", KindPublicKey, "", "rsa2048.crt.pem", func(b []byte) error { _, err := x509.ParsePKIXPublicKey(b); return err }},
		{"rsa2048.pub.pem", KindPublicKey, "PUBLIC KEY", "rsa2048.crt.pem", nil},
		{"rsa2048.pkcs1pub.der", KindPublicKey, "", "rsa2048.crt.pem", func(b []byte) error { _, err := x509.ParsePKCS1PublicKey(b); return err }},
		{"rsa2048.pkcs1pub.pem", KindPublicKey, "RSA PUBLIC KEY", "rsa2048.crt.pem", nil},
		{"rsa2048.pkcs8.der", KindPrivateKey, "", "rsa2048.crt.pem", func(b []byte) error { _, err := x509.ParsePKCS8PrivateKey(b); return err }},
		{"rsa2048.key.pem", KindPrivateKey, "PRIVATE KEY", "rsa2048.crt.pem", nil},
		{"rsa2048.pkcs1.der", KindPrivateKey, "", "rsa2048.crt.pem", func(b []byte) error { _, err := x509.ParsePKCS1PrivateKey(b); return err }},
		{"rsa2048.pkcs1.pem", KindPrivateKey, "RSA PRIVATE KEY", "rsa2048.crt.pem", nil},
		{"rsa2048.csr.der", KindCSR, "", "rsa2048.crt.pem", func(b []byte) error { _, err := x509.ParseCertificateRequest(b); return err }},
		{"rsa2048.csr.pem", KindCSR, "CERTIFICATE REQUEST", "rsa2048.crt.pem", nil},
		{"p256.sec1.der", KindPrivateKey, "", "p256.crt.pem", func(b []byte) error { _, err := x509.ParseECPrivateKey(b); return err }},
		{"p256.sec1.pem", KindPrivateKey, "EC PRIVATE KEY", "p256.crt.pem", nil},
		{"p256.pkcs8.der", KindPrivateKey, "", "p256.crt.pem", func(b []byte) error { _, err := x509.ParsePKCS8PrivateKey(b); return err }},
		{"p384.key.pem", KindPrivateKey, "PRIVATE KEY", "p384.crt.pem", nil},
		{"p384.trusted.pem", KindCertificate, "TRUSTED CERTIFICATE", "p384.crt.pem", nil},
		{"ed25519.pkcs8.der", KindPrivateKey, "", "ed25519.crt.pem", func(b []byte) error { _, err := x509.ParsePKCS8PrivateKey(b); return err }},
		{"ed25519.key.pem", KindPrivateKey, "PRIVATE KEY", "ed25519.crt.pem", nil},
		{"ed25519.csr.pem", KindCSR, "CERTIFICATE REQUEST", "ed25519.issued.pem", nil},
		{"ecparam.key.pem", KindPrivateKey, "EC PRIVATE KEY", "ecparam.crt.pem", nil},
		{"rsa4096.key.pem", KindPrivateKey, "PRIVATE KEY", "rsa4096.issued.pem", nil},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			data := readKit(t, tc.file)
			if tc.fixture != nil {
				if err := tc.fixture(data); err != nil {
					t.Fatalf("fixture is not the DER form it claims: %v", err)
				}
			}
			m := parseOne(t, tc.file, data)
			if m.Kind != tc.kind || m.PEMType != tc.pemType {
				t.Errorf("kind %v type %q, want %v %q", m.Kind, m.PEMType, tc.kind, tc.pemType)
			}
			if (m.Certificate != nil) != (tc.kind == KindCertificate) {
				t.Errorf("Certificate set = %v for kind %v", m.Certificate != nil, m.Kind)
			}
			want := spkiOf(tc.sameAs)
			if !bytes.Equal(m.SPKI, want) {
				t.Errorf("SPKI differs from %s", tc.sameAs)
			}
			// private key / CSR / public key -> the same 3 1 1 as the certificate.
			cm := parseOne(t, tc.sameAs, readKit(t, tc.sameAs))
			if got, w := compute(t, m, 3, 1, 1), compute(t, cm, 3, 1, 1); !got.Equal(w) {
				t.Errorf("3 1 1 = %s, certificate %s", got, w)
			}
		})
	}

	t.Run("x25519", func(t *testing.T) {
		m := parseOne(t, "x25519", readKit(t, "x25519.key.pem"))
		if m.Kind != KindPrivateKey || !bytes.Equal(m.SPKI, readKit(t, "x25519.pub.der")) {
			t.Errorf("X25519 key: kind %v, SPKI %x", m.Kind, m.SPKI)
		}
	})

	t.Run("trusted certificate full cert", func(t *testing.T) {
		m := parseOne(t, "t", readKit(t, "p384.trusted.pem"))
		c := parseOne(t, "c", readKit(t, "p384.crt.pem"))
		if !bytes.Equal(m.Certificate.Raw, c.Certificate.Raw) {
			t.Error("TRUSTED CERTIFICATE: trust settings not stripped from the certificate DER")
		}
		if !compute(t, m, 3, 0, 1).Equal(compute(t, c, 3, 0, 1)) {
			t.Error("3 0 1 of TRUSTED CERTIFICATE differs")
		}
	})

	t.Run("CSR signed by Go CA", func(t *testing.T) {
		der := readKit(t, "p384.csr.der")
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		ca := issue(t, caTemplate("Go CA"), nil, newKey(t))
		tmpl := leafTemplate("go.example.nl", "go.example.nl")
		tmpl.SerialNumber = big.NewInt(9)
		cder, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		rm := parseOne(t, "csr", der)
		cm := parseOne(t, "cert", cder)
		if rm.Kind != KindCSR || cm.Kind != KindCertificate {
			t.Fatalf("kinds %v %v", rm.Kind, cm.Kind)
		}
		if !compute(t, rm, 3, 1, 1).Equal(compute(t, cm, 3, 1, 1)) {
			t.Error("CSR 3 1 1 differs from the certificate issued from it")
		}
	})
}

// TestParseMaterialGoKeys covers the DER/PEM forms Go itself writes.
func TestParseMaterialGoKeys(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek := newKey(t)
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		pub  any
		ders map[string][]byte
	}{
		{"rsa", &rk.PublicKey, map[string][]byte{"PKCS1": x509.MarshalPKCS1PrivateKey(rk), "PKCS1PUB": x509.MarshalPKCS1PublicKey(&rk.PublicKey)}},
		{"ecdsa", &ek.PublicKey, map[string][]byte{"SEC1": must(x509.MarshalECPrivateKey(ek))}},
		{"ed25519", edk.Public(), map[string][]byte{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spki := must(x509.MarshalPKIXPublicKey(tc.pub))
			var priv any = rk
			switch tc.name {
			case "ecdsa":
				priv = ek
			case "ed25519":
				priv = edk
			}
			tc.ders["PKCS8"] = must(x509.MarshalPKCS8PrivateKey(priv))
			tc.ders["SPKI"] = spki
			for form, der := range tc.ders {
				m := parseOne(t, form, der)
				if !bytes.Equal(m.SPKI, spki) {
					t.Errorf("%s DER: SPKI differs", form)
				}
				wantKind := KindPrivateKey
				if form == "SPKI" || form == "PKCS1PUB" {
					wantKind = KindPublicKey
				}
				if m.Kind != wantKind {
					t.Errorf("%s DER: kind %v, want %v", form, m.Kind, wantKind)
				}
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestParseMaterialSkipsECParameters(t *testing.T) {
	ek := newKey(t)
	params := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	key := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: must(x509.MarshalECPrivateKey(ek))})
	ms, err := ParseMaterial("k", append(params, key...))
	if err != nil || len(ms) != 1 || ms[0].Kind != KindPrivateKey {
		t.Fatalf("got %v, %v", ms, err)
	}
	_, err = ParseMaterial("p", params)
	if !errors.Is(err, ErrNoMaterial) {
		t.Errorf("EC PARAMETERS alone: %v, want ErrNoMaterial", err)
	}
}

func TestParseMaterialErrors(t *testing.T) {
	dir := opensslKit(t)
	sh(t, dir, "cd "+dir+" && "+
		// PKCS#8 encrypted: ENCRYPTED PRIVATE KEY
		"openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes256 -pass pass:x -out enc8.pem && "+
		// legacy encrypted: RSA PRIVATE KEY with Proc-Type: 4,ENCRYPTED
		"openssl rsa -in rsa2048.key.pem -aes256 -passout pass:x -traditional -out encleg.pem 2>/dev/null && "+
		"openssl ec -in p256.key.pem -aes256 -passout pass:x -out encec.pem 2>/dev/null")
	certPEM := readKit(t, "p256.crt.pem")
	lines := strings.SplitAfter(string(certPEM), "\n")
	cut := []byte(strings.Join(lines[:len(lines)/2], ""))
	if !bytes.Contains(readKit(t, "encleg.pem"), []byte("Proc-Type: 4,ENCRYPTED")) {
		t.Fatal("fixture: legacy encrypted key has no Proc-Type header")
	}

	ca := issue(t, caTemplate("CRL CA"), nil, newKey(t))
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: fixedNow, NextUpdate: fixedNow.AddDate(0, 0, 7)}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	crlPEM := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl})
	sshPEM := pem.EncodeToMemory(&pem.Block{Type: "OPENSSH PRIVATE KEY", Bytes: []byte("openssh-key-v1\x00whatever")})
	badCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}})
	p := newPKI(t)

	tests := []struct {
		name    string
		data    []byte
		want    error
		mention []string // substrings the message must contain
	}{
		{"empty", nil, ErrNoMaterial, []string{"src.pem", "empty"}},
		{"whitespace", []byte(" \r\n\t\n "), ErrNoMaterial, []string{"src.pem"}},
		{"garbage", []byte("hello, this is not a certificate\x00\x01\x02"), ErrNoMaterial, []string{"src.pem", "neither PEM nor DER"}},
		{"random DER-ish", []byte{0x30, 0x82, 0x01, 0x00, 0x01}, ErrNoMaterial, nil},
		{"truncated PEM", cut, ErrMalformed, []string{"src.pem", "truncated"}},
		{"truncated then good", append(append([]byte{}, cut...), p.inter.pem()...), ErrMalformed, []string{"src.pem", "truncated"}},
		{"good then truncated", append(p.leaf.pem(), cut...), ErrMalformed, []string{"truncated"}},
		{"good, truncated, good", append(append(p.leaf.pem(), cut...), p.inter.pem()...), ErrMalformed, []string{"truncated"}},
		{"bad certificate DER in PEM", badCert, ErrMalformed, []string{"src.pem", `"CERTIFICATE"`}},
		{"encrypted PKCS8", readKit(t, "enc8.pem"), ErrEncrypted, []string{"src.pem", "ENCRYPTED PRIVATE KEY", "openssl pkey"}},
		{"encrypted legacy RSA", readKit(t, "encleg.pem"), ErrEncrypted, []string{"src.pem", "RSA PRIVATE KEY", "decrypt"}},
		{"encrypted legacy EC", readKit(t, "encec.pem"), ErrEncrypted, []string{"src.pem", "EC PRIVATE KEY", "decrypt"}},
		{"encrypted key after cert", append(p.leaf.pem(), readKit(t, "enc8.pem")...), ErrEncrypted, []string{"PEM block 2"}},
		{"X509 CRL", crlPEM, ErrUnsupported, []string{"src.pem", "X509 CRL"}},
		{"OPENSSH PRIVATE KEY", sshPEM, ErrUnsupported, []string{"src.pem", "OPENSSH PRIVATE KEY"}},
		{"cert then unsupported", append(p.leaf.pem(), sshPEM...), ErrUnsupported, []string{"PEM block 2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := ParseMaterial("src.pem", tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if ms != nil {
				t.Errorf("partial result %d items with error", len(ms))
			}
			var me *MaterialError
			if !errors.As(err, &me) || me.Source != "src.pem" || me.Hint == "" {
				t.Errorf("not a MaterialError with source and hint: %#v", err)
			}
			singleLine(t, err)
			for _, s := range tc.mention {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestComputeErrors(t *testing.T) {
	p := newPKI(t)
	cert := parseOne(t, "c", p.leaf.pem())
	key := parseOne(t, "k", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(p.leaf.key))}))
	csrDER := must(x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, p.leaf.key))
	csr := parseOne(t, "r", csrDER)
	pub := parseOne(t, "p", must(x509.MarshalPKIXPublicKey(p.leaf.key.Public())))
	tests := []struct {
		name     string
		m        Material
		u        Usage
		s        Selector
		mt       MatchingType
		want     error
		mentions string
	}{
		{"usage 4", cert, 4, 1, 1, ErrParameter, "usage 4"},
		{"usage 255", cert, 255, 1, 1, ErrParameter, "usage 255"},
		{"selector 2", cert, 3, 2, 1, ErrParameter, "selector 2"},
		{"mtype 3", cert, 3, 1, 3, ErrParameter, "matching type 3"},
		{"mtype 3 key", key, 3, 1, 3, ErrParameter, "matching type 3"},
		{"selector 0 key", key, 3, 0, 1, ErrNeedsCertificate, "private key"},
		{"selector 0 CSR", csr, 3, 0, 1, ErrNeedsCertificate, "certificate request"},
		{"selector 0 pubkey", pub, 2, 0, 0, ErrNeedsCertificate, "public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Compute(tc.m, tc.u, tc.s, tc.mt)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if r.Data != nil {
				t.Errorf("record data with error: %v", r)
			}
			if !strings.Contains(err.Error(), tc.mentions) {
				t.Errorf("%q does not mention %q", err, tc.mentions)
			}
			singleLine(t, err)
		})
	}
	// The same key gives the same 3 1 1 whatever its container.
	want := compute(t, cert, 3, 1, 1)
	for _, m := range []Material{key, csr, pub} {
		if got := compute(t, m, 3, 1, 1); !got.Equal(want) {
			t.Errorf("%v 3 1 1 = %s, cert %s", m.Kind, got, want)
		}
	}
	// Mtype 0 returns a copy, not the material's own bytes.
	r := compute(t, cert, 3, 1, 0)
	r.Data[0] ^= 0xff
	if bytes.Equal(r.Data, cert.SPKI) {
		t.Error("Compute 3 1 0 aliases Material.SPKI")
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindCertificate: "certificate", KindPublicKey: "public key", KindPrivateKey: "private key", KindCSR: "certificate request", Kind(9): "kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("%d: %q, want %q", int(k), got, want)
		}
	}
}
