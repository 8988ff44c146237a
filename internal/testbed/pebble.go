package testbed

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// PebbleVersion is the Pebble release the test bed is written for; its
// test/ directory (config and the minica certificates that sign Pebble's
// HTTPS) is read from the Go module cache.
const PebbleVersion = "v2.10.1"

// PebbleInstall is the command that installs the pebble binary and puts the
// module (and its test/ directory) into the module cache.
const PebbleInstall = "GOBIN=/usr/local/bin go install github.com/letsencrypt/pebble/v2/cmd/pebble@" + PebbleVersion

// PebbleConfig configures StartPebble.
type PebbleConfig struct {
	// DNSServer is the resolver ("ip:port", loopback) Pebble's validation
	// authority asks for _acme-challenge TXT records: the test Unbound.
	// Required: without it Pebble would use the system resolver.
	DNSServer string
	// IP to listen on (ACME and management ports); default 127.0.0.1.
	IP string
	// TestDir is Pebble's test/ directory (config/pebble-config.json,
	// certs/…); default: PebbleTestDir().
	TestDir string
	// Env adds environment variables, e.g. "PEBBLE_WFE_NONCEREJECT=0" or
	// "PEBBLE_AUTHZREUSE=0". PEBBLE_VA_NOSLEEP=1 is always set.
	Env []string
}

// Pebble is a running Pebble ACME server. Every start generates a fresh
// root and intermediate: two instances are two different CAs.
type Pebble struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:port/dir.
	DirectoryURL string
	// Addr and ManagementAddr are "ip:port" of the ACME and management
	// listeners.
	Addr, ManagementAddr string
	// CAFile is the minica root (PEM) that signs Pebble's HTTPS
	// certificate: what LEGO_CA_CERTIFICATES must name.
	CAFile string
	Dir    string

	pool   *x509.CertPool
	client *http.Client
	p      *proc
	once   sync.Once
	serr   error
}

// PebbleTestDir returns Pebble's test/ directory in the Go module cache
// (GOMODCACHE/github.com/letsencrypt/pebble/v2@PebbleVersion/test), which
// exists after PebbleInstall has run.
func PebbleTestDir() (string, error) {
	var cache string
	if goBin, err := exec.LookPath("go"); err == nil {
		if out, err := exec.Command(goBin, "env", "GOMODCACHE").Output(); err == nil {
			cache = strings.TrimSpace(string(out))
		}
	}
	if cache == "" {
		cache = os.Getenv("GOMODCACHE")
	}
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, "go", "pkg", "mod")
	}
	dir := filepath.Join(cache, "github.com", "letsencrypt", "pebble", "v2@"+PebbleVersion, "test")
	if _, err := os.Stat(filepath.Join(dir, "config", "pebble-config.json")); err != nil {
		return "", fmt.Errorf("testbed: pebble test directory not found (%v); run: %s", err, PebbleInstall)
	}
	return dir, nil
}

// RequirePebble returns the path of the pebble binary, or stops the test
// like Require: a failure under CI=true, a skip with the install command
// otherwise. It also checks that Pebble's test/ directory is in the module
// cache.
func RequirePebble(tb testing.TB) string {
	tb.Helper()
	p, err := Lookup("pebble")
	if err == nil {
		_, err = PebbleTestDir()
	}
	if err == nil {
		return p
	}
	Unavailable(tb, fmt.Sprintf("%v; install it with: %s", err, PebbleInstall))
	return ""
}

// StartPebble copies Pebble's test certificates into dir, writes a
// configuration that listens on free loopback ports, starts `pebble -config
// … -dnsserver cfg.DNSServer` with PEBBLE_VA_NOSLEEP=1 and waits until the
// directory and the management interface answer over HTTPS (trusting only
// the minica root).
func StartPebble(ctx context.Context, dir string, cfg PebbleConfig) (*Pebble, error) {
	bin, err := Lookup("pebble")
	if err != nil {
		return nil, err
	}
	if err := checkLoopback(cfg.DNSServer); err != nil {
		return nil, fmt.Errorf("testbed: pebble: DNSServer: %w", err)
	}
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	src := cfg.TestDir
	if src == "" {
		if src, err = PebbleTestDir(); err != nil {
			return nil, err
		}
	}
	ip := cfg.IP
	if ip == "" {
		ip = "127.0.0.1"
	}
	if err := checkLoopback(net.JoinHostPort(ip, "1")); err != nil {
		return nil, fmt.Errorf("testbed: pebble: IP: %w", err)
	}
	files := map[string]string{ // destination → source below test/
		"minica.pem": "certs/pebble.minica.pem",
		"cert.pem":   "certs/localhost/cert.pem",
		"key.pem":    "certs/localhost/key.pem",
	}
	for dst, s := range files {
		b, err := os.ReadFile(filepath.Join(src, s))
		if err != nil {
			return nil, fmt.Errorf("testbed: pebble: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			return nil, err
		}
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "minica.pem"))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("testbed: pebble: no certificate in %s", filepath.Join(src, files["minica.pem"]))
	}
	base, err := os.ReadFile(filepath.Join(src, "config", "pebble-config.json"))
	if err != nil {
		return nil, fmt.Errorf("testbed: pebble: %w", err)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		var ports [4]int
		for i := range ports {
			if ports[i], err = freePort(ip); err != nil {
				return nil, err
			}
		}
		pb := &Pebble{
			Addr: net.JoinHostPort(ip, strconv.Itoa(ports[0])), ManagementAddr: net.JoinHostPort(ip, strconv.Itoa(ports[1])),
			CAFile: filepath.Join(dir, "minica.pem"), Dir: dir, pool: pool,
		}
		pb.DirectoryURL = "https://" + pb.Addr + "/dir"
		pb.client = &http.Client{
			Timeout:   5 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		}
		conf, err := pebbleConfig(base, map[string]any{
			"listenAddress":           pb.Addr,
			"managementListenAddress": pb.ManagementAddr,
			"certificate":             filepath.Join(dir, "cert.pem"),
			"privateKey":              filepath.Join(dir, "key.pem"),
			// HTTP-01 and TLS-ALPN-01 are not used; they would connect to
			// these ports of whatever the name resolves to (loopback here).
			"httpPort": ports[2],
			"tlsPort":  ports[3],
		})
		if err != nil {
			return nil, err
		}
		confPath := filepath.Join(dir, "pebble-config.json")
		if err := os.WriteFile(confPath, conf, 0o644); err != nil {
			return nil, err
		}
		env := append([]string{"PEBBLE_VA_NOSLEEP=1"}, cfg.Env...)
		pb.p, err = startProcEnv(dir, &syncBuffer{}, env, bin, "-config", confPath, "-dnsserver", cfg.DNSServer)
		if err != nil {
			return nil, err
		}
		lastErr = poll(ctx, pb.p.exited, pb.ready)
		if lastErr == nil {
			return pb, nil
		}
		_ = pb.Stop()
		pb.client.CloseIdleConnections()
		var retry bool
		if lastErr, retry = notReady("pebble", lastErr, pb.Log()); !retry {
			break
		}
	}
	return nil, lastErr
}

// NewPebble starts Pebble in a fresh temporary directory and stops it when
// the test ends.
func NewPebble(tb testing.TB, cfg PebbleConfig) *Pebble {
	tb.Helper()
	RequirePebble(tb)
	return startForTest(tb, func(ctx context.Context, dir string) (*Pebble, error) { return StartPebble(ctx, dir, cfg) })
}

// pebbleConfig returns Pebble's JSON configuration base with the "pebble"
// object's fields replaced by set.
func pebbleConfig(base []byte, set map[string]any) ([]byte, error) {
	var doc map[string]map[string]any
	if err := json.Unmarshal(base, &doc); err != nil {
		return nil, fmt.Errorf("testbed: pebble config: %w", err)
	}
	if doc["pebble"] == nil {
		return nil, errors.New(`testbed: pebble config: no "pebble" object`)
	}
	for k, v := range set {
		doc["pebble"][k] = v
	}
	return json.MarshalIndent(doc, "", "  ")
}

// checkLoopback accepts only "ip:port" with ip in 127.0.0.0/8.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return fmt.Errorf("%q is not an IPv4 loopback address", addr)
	}
	return nil
}

// startProcEnv is startProc with extra environment variables.
func startProcEnv(dir string, out *syncBuffer, env []string, name string, args ...string) (*proc, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.Env = append(append(os.Environ(), "LC_ALL=C"), env...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// HTTPClient returns a client that trusts only the minica root (Pebble's
// HTTPS certificate).
func (pb *Pebble) HTTPClient() *http.Client { return pb.client }

// CAPool returns a pool holding only the minica root (CAFile).
func (pb *Pebble) CAPool() *x509.CertPool { return pb.pool }

func (pb *Pebble) ready(ctx context.Context) error {
	b, err := pb.get(ctx, pb.DirectoryURL)
	if err != nil {
		return err
	}
	var dir map[string]any
	if err := json.Unmarshal(b, &dir); err != nil || dir["newNonce"] == nil {
		return fmt.Errorf("directory %s: not an ACME directory: %.200s", pb.DirectoryURL, b)
	}
	_, err = pb.Root(ctx)
	return err
}

func (pb *Pebble) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := pb.HTTPClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}

// managementPEM fetches a certificate from the management interface and
// checks it is one PEM certificate.
func (pb *Pebble) managementPEM(ctx context.Context, path string) ([]byte, *x509.Certificate, error) {
	b, err := pb.get(ctx, "https://"+pb.ManagementAddr+path)
	if err != nil {
		return nil, nil, fmt.Errorf("testbed: pebble: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("testbed: pebble: %s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("testbed: pebble: %s: %w", path, err)
	}
	return pem.EncodeToMemory(blk), c, nil
}

// Root returns the PEM of Pebble's issuing root (management /roots/0).
func (pb *Pebble) Root(ctx context.Context) ([]byte, error) {
	b, _, err := pb.managementPEM(ctx, "/roots/0")
	return b, err
}

// Intermediate returns the PEM and certificate of the intermediate that
// signs Pebble's certificates (management /intermediates/0): the CA whose
// "2 1 1" a DANE host publishes.
func (pb *Pebble) Intermediate(ctx context.Context) ([]byte, *x509.Certificate, error) {
	return pb.managementPEM(ctx, "/intermediates/0")
}

// Log returns what Pebble has printed.
func (pb *Pebble) Log() string { return pb.p.out.String() }

// Stop terminates Pebble by PID (SIGTERM, SIGKILL after 10 s). Idempotent.
func (pb *Pebble) Stop() error {
	pb.once.Do(func() {
		pb.serr = pb.p.stop(10 * time.Second)
		pb.client.CloseIdleConnections()
	})
	return pb.serr
}

// PebbleEABKID and PebbleEABHMAC are a key of Pebble's own External
// Account Binding test configuration
// (test/config/pebble-config-external-account-bindings.json).
const (
	PebbleEABKID  = "kid-1"
	PebbleEABHMAC = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
)

// PebbleEABTestDir returns a Pebble test/ directory (for
// PebbleConfig.TestDir) whose configuration is Pebble's EAB one: every new
// account must carry an External Account Binding with one of its keys,
// PebbleEABKID/PebbleEABHMAC among them. It fails tb when Pebble's test
// files cannot be read.
func PebbleEABTestDir(tb testing.TB) string {
	tb.Helper()
	src, err := PebbleTestDir()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	for dst, from := range map[string]string{
		"certs/pebble.minica.pem":   "certs/pebble.minica.pem",
		"certs/localhost/cert.pem":  "certs/localhost/cert.pem",
		"certs/localhost/key.pem":   "certs/localhost/key.pem",
		"config/pebble-config.json": "config/pebble-config-external-account-bindings.json",
	} {
		b, err := os.ReadFile(filepath.Join(src, from))
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, dst)), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}
