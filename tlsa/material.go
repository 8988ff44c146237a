package tlsa

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
)

// Kind says what a piece of [Material] is.
type Kind int

// Kinds of material.
const (
	KindCertificate Kind = iota + 1 // an X.509 certificate
	KindPublicKey                   // a bare SubjectPublicKeyInfo or PKCS#1 public key
	KindPrivateKey                  // a private key; only its public half is kept
	KindCSR                         // a PKCS#10 certificate signing request
)

// String returns a short human name for the kind.
func (k Kind) String() string {
	switch k {
	case KindCertificate:
		return "certificate"
	case KindPublicKey:
		return "public key"
	case KindPrivateKey:
		return "private key"
	case KindCSR:
		return "certificate request"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Material is one certificate, key or CSR read from PEM or DER.
//
// For every kind SPKI holds the DER SubjectPublicKeyInfo. For certificates and
// CSRs it is the exact encoding found in the input; for keys it is the PKIX
// encoding of the public key. Private key material is never retained: only the
// public half is kept.
type Material struct {
	Kind        Kind
	Certificate *x509.Certificate // set for KindCertificate only
	SPKI        []byte            // DER SubjectPublicKeyInfo
	PEMType     string            // the PEM block type, or "" for DER input
}

// Errors wrapped by [MaterialError]; callers branch with errors.Is.
var (
	// ErrNoMaterial: the input holds nothing that parses as PEM or DER material.
	ErrNoMaterial = errors.New("no certificate, key or CSR found")
	// ErrEncrypted: a private key is encrypted; tlsactl does not ask for passwords.
	ErrEncrypted = errors.New("private key is encrypted")
	// ErrUnsupported: the input is a kind of PEM block or key type tlsa does not handle.
	ErrUnsupported = errors.New("unsupported material")
	// ErrMalformed: a PEM block or DER structure is damaged.
	ErrMalformed = errors.New("malformed material")
	// ErrNeedsCertificate: selector 0 (full certificate) was asked of a key or CSR.
	ErrNeedsCertificate = errors.New("selector 0 (full certificate) needs a certificate")
)

// MaterialError describes why material from one source could not be used.
// Source is the name the caller gave (usually a file name); Found says what was
// found there; Err is one of the sentinel errors above.
type MaterialError struct {
	Source string
	Found  string
	Err    error
	Hint   string
}

// Error returns one line: "<source>: <problem> (<found>); <hint>".
func (e *MaterialError) Error() string {
	var b bytes.Buffer
	if e.Source != "" {
		b.WriteString(e.Source)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	if e.Found != "" {
		b.WriteString(" (found ")
		b.WriteString(e.Found)
		b.WriteString(")")
	}
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Unwrap returns the sentinel error.
func (e *MaterialError) Unwrap() error { return e.Err }

var pemBegin = []byte("-----BEGIN ")

// ParseMaterial reads every certificate, public key, private key and CSR in
// data, in input order. data may be PEM (any number of blocks, CRLF line ends,
// text between and before blocks, as `openssl x509 -text` writes) or a single
// DER structure. name is used in errors only.
//
// EC PARAMETERS blocks are skipped. Any other unknown PEM block, an encrypted
// private key, or a block that does not parse is an error: ParseMaterial never
// returns a partial list. RSA, ECDSA, Ed25519 and X25519 keys are supported.
func ParseMaterial(name string, data []byte) ([]Material, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &MaterialError{Source: name, Err: ErrNoMaterial, Found: "an empty input", Hint: "give a PEM or DER certificate, key or CSR"}
	}
	if !bytes.Contains(data, pemBegin) {
		m, err := parseDER(data)
		if err != nil {
			return nil, &MaterialError{Source: name, Err: ErrNoMaterial, Found: "neither PEM nor DER",
				Hint: "give a PEM file (-----BEGIN CERTIFICATE-----) or a DER certificate, key or CSR"}
		}
		return []Material{m}, nil
	}
	var out []Material
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		before := rest
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		// pem.Decode silently skips a damaged block and returns the next
		// good one: a second BEGIN line in what it consumed is such a block.
		if bytes.Count(before[:len(before)-len(rest)], pemBegin) > 1 {
			return nil, &MaterialError{Source: name, Err: ErrMalformed, Found: fmt.Sprintf("a PEM block before block %d that is truncated or damaged", n),
				Hint: "the -----END----- line is missing or the base64 is broken; copy the file again"}
		}
		m, skip, err := parseBlock(block)
		if err != nil {
			return nil, &MaterialError{Source: name, Err: err, Found: fmt.Sprintf("PEM block %d, %q", n, block.Type), Hint: hintFor(err)}
		}
		if !skip {
			out = append(out, m)
		}
	}
	// A BEGIN line that pem.Decode did not consume means a truncated or
	// damaged block (bad base64, missing END line).
	if bytes.Contains(rest, pemBegin) {
		return nil, &MaterialError{Source: name, Err: ErrMalformed, Found: "a PEM block that is truncated or damaged",
			Hint: "the -----END----- line is missing or the base64 is broken; copy the file again"}
	}
	if len(out) == 0 {
		return nil, &MaterialError{Source: name, Err: ErrNoMaterial, Found: "PEM with no usable block", Hint: "give a certificate, key or CSR"}
	}
	return out, nil
}

func hintFor(err error) string {
	switch {
	case errors.Is(err, ErrEncrypted):
		return "decrypt it first, e.g. `openssl pkey -in key.pem -out key.plain.pem`, or give the certificate or public key instead"
	case errors.Is(err, ErrUnsupported):
		return "give an RSA, ECDSA or Ed25519 certificate, key or CSR in PEM or DER"
	case errors.Is(err, ErrMalformed):
		return "the block does not parse; check the file is complete"
	}
	return ""
}

func parseBlock(b *pem.Block) (m Material, skip bool, err error) {
	if _, ok := b.Headers["Proc-Type"]; ok && bytes.Contains([]byte(b.Headers["Proc-Type"]), []byte("ENCRYPTED")) {
		return m, false, ErrEncrypted
	}
	switch b.Type {
	case "CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE":
		der := b.Bytes
		if b.Type == "TRUSTED CERTIFICATE" {
			// OpenSSL appends trust settings after the certificate; keep
			// only the certificate's own SEQUENCE.
			var raw asn1.RawValue
			if _, err := asn1.Unmarshal(der, &raw); err != nil {
				return m, false, fmt.Errorf("%w: %v", ErrMalformed, err)
			}
			der = raw.FullBytes
		}
		m, err = parseCertificate(der)
	case "PUBLIC KEY":
		m, err = parsePKIXPublicKey(b.Bytes)
	case "RSA PUBLIC KEY":
		m, err = parsePKCS1PublicKey(b.Bytes)
	case "PRIVATE KEY":
		m, err = parsePKCS8(b.Bytes)
	case "RSA PRIVATE KEY":
		m, err = parsePKCS1Private(b.Bytes)
	case "EC PRIVATE KEY":
		m, err = parseECPrivate(b.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return m, false, ErrEncrypted
	case "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST":
		m, err = parseCSR(b.Bytes)
	case "EC PARAMETERS":
		return m, true, nil
	default:
		return m, false, fmt.Errorf("%w: PEM block type %q", ErrUnsupported, b.Type)
	}
	if err != nil {
		return m, false, err
	}
	m.PEMType = b.Type
	return m, false, nil
}

// parseDER tries each DER structure in turn; the first that parses wins.
func parseDER(der []byte) (Material, error) {
	parsers := []func([]byte) (Material, error){
		parseCertificate, parsePKIXPublicKey, parsePKCS8, parsePKCS1Private, parseECPrivate, parseCSR, parsePKCS1PublicKey,
	}
	for _, p := range parsers {
		if m, err := p(der); err == nil {
			return m, nil
		}
	}
	return Material{}, ErrNoMaterial
}

func parseCertificate(der []byte) (Material, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return Material{}, fmt.Errorf("%w: certificate: %v", ErrMalformed, err)
	}
	return Material{Kind: KindCertificate, Certificate: c, SPKI: c.RawSubjectPublicKeyInfo}, nil
}

func parsePKIXPublicKey(der []byte) (Material, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return Material{}, fmt.Errorf("%w: public key: %v", ErrMalformed, err)
	}
	if err := checkKeyType(pub); err != nil {
		return Material{}, err
	}
	// Keep the input's own encoding: it is what a certificate would carry.
	return Material{Kind: KindPublicKey, SPKI: bytes.Clone(der)}, nil
}

func parsePKCS1PublicKey(der []byte) (Material, error) {
	pub, err := x509.ParsePKCS1PublicKey(der)
	if err != nil {
		return Material{}, fmt.Errorf("%w: RSA public key: %v", ErrMalformed, err)
	}
	return fromPublic(KindPublicKey, pub)
}

func parsePKCS8(der []byte) (Material, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return Material{}, fmt.Errorf("%w: PKCS#8 private key: %v", ErrMalformed, err)
	}
	return fromPrivate(k)
}

func parsePKCS1Private(der []byte) (Material, error) {
	k, err := x509.ParsePKCS1PrivateKey(der)
	if err != nil {
		return Material{}, fmt.Errorf("%w: RSA private key: %v", ErrMalformed, err)
	}
	return fromPrivate(k)
}

func parseECPrivate(der []byte) (Material, error) {
	k, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return Material{}, fmt.Errorf("%w: EC private key: %v", ErrMalformed, err)
	}
	return fromPrivate(k)
}

func parseCSR(der []byte) (Material, error) {
	r, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return Material{}, fmt.Errorf("%w: certificate request: %v", ErrMalformed, err)
	}
	return Material{Kind: KindCSR, SPKI: r.RawSubjectPublicKeyInfo}, nil
}

func fromPrivate(k any) (Material, error) {
	s, ok := k.(crypto.Signer)
	if !ok {
		if dk, ok := k.(*ecdh.PrivateKey); ok {
			return fromPublic(KindPrivateKey, dk.PublicKey())
		}
		return Material{}, fmt.Errorf("%w: private key type %T", ErrUnsupported, k)
	}
	return fromPublic(KindPrivateKey, s.Public())
}

func fromPublic(kind Kind, pub crypto.PublicKey) (Material, error) {
	if err := checkKeyType(pub); err != nil {
		return Material{}, err
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Material{}, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	return Material{Kind: kind, SPKI: spki}, nil
}

func checkKeyType(pub crypto.PublicKey) error {
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey, *ecdh.PublicKey:
		return nil
	}
	return fmt.Errorf("%w: public key type %T", ErrUnsupported, pub)
}

// FromCertificate wraps an already parsed certificate as Material, for
// callers that hold an *x509.Certificate rather than its PEM or DER.
func FromCertificate(c *x509.Certificate) Material {
	return Material{Kind: KindCertificate, Certificate: c, SPKI: c.RawSubjectPublicKeyInfo}
}

// Certificates returns the certificates among ms, in order.
func Certificates(ms []Material) []*x509.Certificate {
	var out []*x509.Certificate
	for _, m := range ms {
		if m.Kind == KindCertificate {
			out = append(out, m.Certificate)
		}
	}
	return out
}
