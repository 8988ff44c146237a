// Package acme obtains certificates from an ACME CA with
// github.com/go-acme/lego/v5 as a library, solving DNS-01 through the libdns
// provider tlsactl writes its TLSA records with (see DNSSolver). The ACME
// account (key and registration) is kept in the state directory, one per
// directory URL and e-mail address, written atomically with mode 0600.
package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/lego"
	legolog "github.com/go-acme/lego/v5/log"
	"github.com/go-acme/lego/v5/registration"

	"github.com/tlsactl/tlsactl/internal/safefile"
)

// Options of one Obtain.
type Options struct {
	// DirectoryURL of the ACME server (e.g. Let's Encrypt's
	// https://acme-v02.api.letsencrypt.org/directory).
	DirectoryURL string
	// Email of the account (may be empty).
	Email string
	// CAFile: PEM certificates trusted for the ACME server's HTTPS in
	// addition to the system roots (e.g. Pebble's minica).
	CAFile string
	// StateDir holds the accounts: <StateDir>/acme/<directory>/<email>/.
	StateDir string
	// Domains of the certificate, all as subject alternative names (lego
	// v5 leaves the common name empty, as Let's Encrypt does). Ignored
	// with CSR (the CSR names them).
	Domains []string
	// CSR (PEM or DER), optional: the certificate is issued for its key
	// (the next key), and Result.KeyPEM stays nil.
	CSR []byte
	// KeyType of a new certificate key without CSR: "ec256" (default),
	// "ec384", "rsa2048", "rsa3072", "rsa4096".
	KeyType string
	// Solver solves DNS-01 (required).
	Solver *DNSSolver
	// Resolver ("ip:port") for lego's own DNS lookups (the CNAME check at
	// _acme-challenge names); default the system's. lego keeps it in a
	// package variable (dns01.DefaultClient): Obtain calls are serialized.
	Resolver string
	// Log receives lego's log (default: discarded).
	Log io.Writer
	// Timeout of the whole order (default 5 minutes).
	Timeout time.Duration
}

// Result is the issued certificate.
type Result struct {
	ChainPEM []byte // leaf first, then the issuer(s)
	KeyPEM   []byte // the new key (PKCS#8 PEM); nil when a CSR was used
	Chain    []*x509.Certificate
	CertURL  string
	// Registered is true when a new account was created at the CA.
	Registered bool
	// AccountDir is where the account is stored.
	AccountDir string
}

// lego keeps its logger and DNS client in package variables.
var legoMu sync.Mutex

// lockLego holds legoMu, sends lego's log (debug level: the badNonce
// retries are logged there) to w (nil: nowhere; lego's own default is
// stdout) and, when resolver is set, makes lego's DNS client ask it, until
// the function it returns is called.
func lockLego(w io.Writer, resolver string) (unlock func()) {
	legoMu.Lock()
	h := slog.DiscardHandler
	if w != nil {
		h = slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	prevLog := legolog.Default()
	legolog.SetDefault(slog.New(h).With("lib", "lego"))
	prevDNS := dns01.DefaultClient()
	if resolver != "" {
		opts := dns01.NewOptions()
		opts.RecursiveNameservers = []string{resolver}
		dns01.SetDefaultClient(dns01.NewClient(opts))
	}
	return func() {
		dns01.SetDefaultClient(prevDNS)
		legolog.SetDefault(prevLog)
		legoMu.Unlock()
	}
}

// newClient returns a lego client for acct at o's directory over
// httpClient; set, when not nil, adjusts the configuration first.
func newClient(o Options, acct *account, httpClient *http.Client, set func(*lego.Config)) (*lego.Client, error) {
	cfg := lego.NewConfig(acct)
	cfg.CADirURL = o.DirectoryURL
	cfg.HTTPClient = httpClient
	cfg.UserAgent = "tlsactl"
	if set != nil {
		set(cfg)
	}
	client, err := lego.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("acme: %s: %w", o.DirectoryURL, err)
	}
	return client, nil
}

// Obtain registers (or loads) the account and obtains a certificate with
// DNS-01. lego retries badNonce errors itself (acme/api.Core.retrievablePost:
// exponential back-off up to 20 s per request).
func Obtain(ctx context.Context, o Options) (*Result, error) {
	if o.DirectoryURL == "" {
		return nil, errors.New("acme: no ACME directory URL")
	}
	if u, err := url.Parse(o.DirectoryURL); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("acme: directory %q is not an https:// URL", o.DirectoryURL)
	}
	if o.Solver == nil {
		return nil, errors.New("acme: no DNS-01 solver")
	}
	if o.StateDir == "" {
		return nil, errors.New("acme: no state directory for the account")
	}
	var csr *x509.CertificateRequest
	if len(o.CSR) > 0 {
		der := o.CSR
		if b, _ := pem.Decode(o.CSR); b != nil {
			der = b.Bytes
		}
		var err error
		if csr, err = x509.ParseCertificateRequest(der); err != nil {
			return nil, fmt.Errorf("acme: CSR: %w", err)
		}
		if err := csr.CheckSignature(); err != nil {
			return nil, fmt.Errorf("acme: CSR: %w", err)
		}
	} else if len(o.Domains) == 0 {
		return nil, errors.New("acme: no domains")
	}
	kt, err := keyType(o.KeyType)
	if err != nil {
		return nil, err
	}
	httpClient, err := newHTTPClient(o.CAFile)
	if err != nil {
		return nil, err
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}

	defer lockLego(o.Log, o.Resolver)()

	acct, err := loadAccount(o.StateDir, o.DirectoryURL, o.Email)
	if err != nil {
		return nil, err
	}
	client, err := newClient(o, acct, httpClient, func(cfg *lego.Config) {
		cfg.Certificate.Timeout = timeout
	})
	if err != nil {
		return nil, err
	}
	res := &Result{AccountDir: acct.dir}
	if acct.Registration == nil {
		reg, err := client.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
		if err != nil {
			return nil, fmt.Errorf("acme: registering the account at %s: %w", o.DirectoryURL, err)
		}
		acct.setRegistration(reg)
		if err := acct.save(); err != nil {
			return nil, err
		}
		res.Registered = true
	}

	// Present waits until every authoritative server serves the TXT
	// record; lego's own check (the NS set on port 53, via a recursive
	// resolver) is not used.
	noCheck := dns01.WrapPreCheck(func(context.Context, string, string, string, dns01.PreCheckFunc) (bool, error) { return true, nil })
	if err := client.Challenge.SetDNS01Provider(o.Solver, noCheck); err != nil {
		return nil, err
	}

	var cr *certificate.Resource
	if csr != nil {
		cr, err = client.Certificate.ObtainForCSR(ctx, certificate.ObtainForCSRRequest{CSR: csr, Bundle: true})
	} else {
		cr, err = client.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: o.Domains, KeyType: kt, Bundle: true})
	}
	if err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	res.CertURL = cr.CertURL
	chainPEM := cr.Certificate
	for b, rest := pem.Decode(chainPEM); b != nil; b, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("acme: the CA returned a bad certificate: %w", err)
		}
		res.Chain = append(res.Chain, c)
	}
	if len(res.Chain) == 1 && len(cr.IssuerCertificate) > 0 {
		chainPEM = append(append([]byte(nil), chainPEM...), cr.IssuerCertificate...)
		if b, _ := pem.Decode(cr.IssuerCertificate); b != nil {
			if c, err := x509.ParseCertificate(b.Bytes); err == nil {
				res.Chain = append(res.Chain, c)
			}
		}
	}
	if len(res.Chain) == 0 {
		return nil, errors.New("acme: the CA returned no certificate")
	}
	res.ChainPEM = chainPEM
	if csr == nil {
		k, err := pkcs8PEM(cr.PrivateKey)
		if err != nil {
			return nil, err
		}
		res.KeyPEM = k
	}
	return res, nil
}

func keyType(s string) (certcrypto.KeyType, error) {
	switch strings.ToLower(s) {
	case "", "ec256", "p256", "ecdsa":
		return certcrypto.EC256, nil
	case "ec384", "p384":
		return certcrypto.EC384, nil
	case "rsa2048", "rsa":
		return certcrypto.RSA2048, nil
	case "rsa3072":
		return certcrypto.RSA3072, nil
	case "rsa4096":
		return certcrypto.RSA4096, nil
	}
	return "", fmt.Errorf("acme: unknown key type %q (ec256, ec384, rsa2048, rsa3072, rsa4096)", s)
}

// pkcs8PEM re-encodes lego's key PEM (SEC 1 or PKCS#1) as PKCS#8.
func pkcs8PEM(keyPEM []byte) ([]byte, error) {
	key, err := certcrypto.ParsePEMPrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("acme: the new key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("acme: the new key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// newHTTPClient trusts the system roots plus caFile.
func newHTTPClient(caFile string) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("acme: CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("acme: CA file %s holds no PEM certificate", caFile)
		}
		tlsCfg.RootCAs = pool
	}
	return &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			TLSClientConfig:       tlsCfg,
		},
	}, nil
}

// account is a lego registration.User stored in the state directory.
type account struct {
	Email        string              `json:"email"`
	Directory    string              `json:"directory"`
	Registration *storedRegistration `json:"registration,omitempty"`
	key          crypto.Signer
	dir          string
}

// storedRegistration is the account as the CA returned it, stored as
// account.json has always held it (lego v4's registration.Resource: the
// ACME account object as "body", its URL as "uri"), so accounts created
// before the move to lego v5 are used as they are.
type storedRegistration struct {
	Body legoacme.Account `json:"body"`
	URI  string           `json:"uri,omitempty"`
}

func (a *account) GetEmail() string             { return a.Email }
func (a *account) GetPrivateKey() crypto.Signer { return a.key }

// GetRegistration is lego v5's view of the stored registration (the
// account URL is the "kid" of every request).
func (a *account) GetRegistration() *legoacme.ExtendedAccount {
	if a.Registration == nil {
		return nil
	}
	return &legoacme.ExtendedAccount{Account: a.Registration.Body, Location: a.Registration.URI}
}

func (a *account) setRegistration(r *legoacme.ExtendedAccount) {
	a.Registration = &storedRegistration{Body: r.Account, URI: r.Location}
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9._@-]+`)

// AccountDir is where the account for directory and email is kept:
// <stateDir>/acme/<host_port>-<hash of the URL>/<email or "default">.
func AccountDir(stateDir, directory, email string) string {
	u, _ := url.Parse(directory)
	host := "directory"
	if u != nil && u.Host != "" {
		host = u.Host
	}
	sum := sha256.Sum256([]byte(directory))
	name := unsafeChars.ReplaceAllString(host, "_") + "-" + hex.EncodeToString(sum[:4])
	e := unsafeChars.ReplaceAllString(strings.ToLower(email), "_")
	if e == "" {
		e = "default"
	}
	return filepath.Join(stateDir, "acme", name, e)
}

const (
	accountKeyFile  = "account-key.pem"
	accountJSONFile = "account.json"
)

// loadAccount reads the account, or makes a new key (saved at once, so a
// registration that fails half-way is retried with the same key).
func loadAccount(stateDir, directory, email string) (*account, error) {
	dir := AccountDir(stateDir, directory, email)
	a := &account{Email: email, Directory: directory, dir: dir}
	kb, err := os.ReadFile(filepath.Join(dir, accountKeyFile))
	if err == nil {
		// The account key signs every order: one others can read is
		// refused, as OpenSSH refuses such a private key.
		err = safefile.CheckPrivate(filepath.Join(dir, accountKeyFile))
	}
	switch {
	case err == nil:
		k, err := certcrypto.ParsePEMPrivateKey(kb)
		if err != nil {
			return nil, fmt.Errorf("acme: account key %s: %w", filepath.Join(dir, accountKeyFile), err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("acme: account key %s: not a signing key", filepath.Join(dir, accountKeyFile))
		}
		a.key = s
	case errors.Is(err, os.ErrNotExist):
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		a.key = k
		if err := a.save(); err != nil {
			return nil, err
		}
		return a, nil
	default:
		return nil, fmt.Errorf("acme: %w", err)
	}
	jb, err := os.ReadFile(filepath.Join(dir, accountJSONFile))
	if errors.Is(err, os.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	var stored account
	if err := json.Unmarshal(jb, &stored); err != nil {
		return nil, fmt.Errorf("acme: %s: %w", filepath.Join(dir, accountJSONFile), err)
	}
	if stored.Directory == directory && stored.Registration != nil && stored.Registration.URI != "" {
		a.Registration = stored.Registration
	}
	return a, nil
}

func (a *account) save() error {
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(a.key)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(a.dir, accountKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return err
	}
	if a.Registration == nil {
		return nil
	}
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(a.dir, accountJSONFile), append(b, '\n'))
}

// writeAtomic writes b to path with mode 0600 through a temporary file in
// the same directory, fsynced and renamed (see [safefile.Write]).
func writeAtomic(path string, b []byte) error {
	if err := safefile.Write(path, b, safefile.Options{Mode: 0o600}); err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	return nil
}
