//go:build !nohosted

package providers

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/tlsactl/tlsactl/tlsa"
)

// Offline tests of the hosted-DNS adapters. Every provider talks to an
// httptest.Server that follows the provider's published API; fixtures are in
// testdata/hosted/<provider>/. Providers that hard-code their API host and use
// http.DefaultClient / a bare http.Client (deSEC, Hetzner, Gandi) are reached
// by swapping http.DefaultTransport for one that rewrites only their API host
// to the test server and refuses every other host: those tests must not run in
// parallel.

const (
	hostedZone   = "example.nl."
	hostedOwner  = "_25._tcp.mail.example.nl."
	hostedNewHex = "8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1"
	hostedOldHex = "0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6" // in every fixture
)

// hostedTLSA is the record every adapter must write.
var hostedTLSA = libdns.RR{Type: "TLSA", Name: "_25._tcp.mail", TTL: time.Hour, Data: "3 1 1 " + hostedNewHex}

// hostedRequest is a request the fake API received.
type hostedRequest struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

// fakeAPI is an httptest.Server that records requests and hands them to h.
type fakeAPI struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []hostedRequest
}

func newFakeAPI(t *testing.T, h func(w http.ResponseWriter, r *http.Request, body []byte)) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, hostedRequest{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body})
		f.mu.Unlock()
		h(w, r, body)
	}))
	t.Cleanup(f.Close)
	return f
}

// requests returns the recorded requests with method (any when "") whose
// path starts with prefix.
func (f *fakeAPI) requests(method, prefix string) []hostedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hostedRequest
	for _, r := range f.reqs {
		if (method == "" || r.Method == method) && strings.HasPrefix(r.Path, prefix) {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeAPI) all() []hostedRequest { return f.requests("", "") }

// hostedFixture reads testdata/hosted/<provider>/<name>.
func hostedFixture(t *testing.T, provider, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "hosted", provider, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rewriteTransport sends requests for the hosts in rewrite to target and
// refuses every other host, so a test cannot reach the network.
type rewriteTransport struct {
	target  *url.URL
	rewrite map[string]bool
	base    http.RoundTripper
}

func (rt *rewriteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !rt.rewrite[req.URL.Hostname()] {
		return nil, fmt.Errorf("test transport: refusing request to %s (not redirected to the fake API)", req.URL.Host)
	}
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host, r.Host = rt.target.Scheme, rt.target.Host, ""
	return rt.base.RoundTrip(r)
}

// redirectDefaultTransport replaces http.DefaultTransport until the test ends
// so that requests to hosts reach f. Tests that call it must not be parallel.
func redirectDefaultTransport(t *testing.T, f *fakeAPI, hosts ...string) {
	t.Helper()
	target, err := url.Parse(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	rw := map[string]bool{}
	for _, h := range hosts {
		rw[h] = true
	}
	old := http.DefaultTransport
	base := f.Client().Transport
	http.DefaultTransport = &rewriteTransport{target: target, rewrite: rw, base: base}
	t.Cleanup(func() { http.DefaultTransport = old })
}

func hostedCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkGetTLSA reads the fixture zone through p and checks that the TLSA
// record comes back as a libdns TLSA record (and through GetTLSA as a parsed
// RRset), with the other types present and skipped.
func checkGetTLSA(t *testing.T, p Provider) {
	t.Helper()
	ctx := hostedCtx(t)
	recs, err := p.GetRecords(ctx, hostedZone)
	if err != nil {
		t.Fatalf("GetRecords: %v", err)
	}
	types := map[string]int{}
	var tlsaRR []libdns.RR
	for _, r := range recs {
		rr := r.RR()
		types[rr.Type]++
		if rr.Type == "TLSA" {
			tlsaRR = append(tlsaRR, rr)
		}
	}
	if types["A"] == 0 || types["MX"] == 0 || types["AAAA"] == 0 {
		t.Errorf("GetRecords types %v: want A, MX and AAAA from the fixture too", types)
	}
	if len(tlsaRR) != 1 || tlsaRR[0].Name != "_25._tcp.mail" || tlsaRR[0].Data != "3 1 1 "+hostedOldHex || tlsaRR[0].TTL != time.Hour {
		t.Fatalf("TLSA records %+v: want one _25._tcp.mail 3600 TLSA 3 1 1 %s", tlsaRR, hostedOldHex)
	}
	set, err := GetTLSA(ctx, p, hostedZone, hostedOwner)
	if err != nil {
		t.Fatalf("GetTLSA: %v", err)
	}
	if len(set.Records) != 1 || set.Records[0].String() != "3 1 1 "+hostedOldHex || set.TTL != time.Hour {
		t.Fatalf("GetTLSA = %+v", set)
	}
}

// newTestRSAKey returns a fresh RSA key, PEM-encoded as PKCS #8 and PKCS #1.
func newTestRSAKey(t *testing.T) (*rsa.PrivateKey, string, string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	return k, pkcs8, pkcs1
}

// isolateAWS keeps the AWS SDK away from the user's files, instance metadata
// and environment. It uses t.Setenv: callers cannot be parallel.
func isolateAWS(t *testing.T) {
	t.Helper()
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none, "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_PROFILE": "", "AWS_DEFAULT_PROFILE": "", "AWS_REGION": "", "AWS_DEFAULT_REGION": "",
		"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
		"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_ROUTE_53": "",
	} {
		t.Setenv(k, v)
	}
}

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// hostedSecretCase describes one factory's settings for the configuration
// tests: plain settings, and the secrets with their environment variables.
type hostedSecretCase struct {
	name    string
	plain   map[string]string
	secrets []struct{ key, env, value string }
}

func hostedSecretCases(t *testing.T) []hostedSecretCase {
	_, pkcs8, _ := newTestRSAKey(t)
	type sec = struct{ key, env, value string }
	return []hostedSecretCase{
		{"desec", nil, []sec{{"token", "DESEC_TOKEN", "S3CRET-desec-token"}}},
		{"gandi", nil, []sec{{"token", "GANDI_BEARER_TOKEN", "S3CRET-gandi-pat"}}},
		{"hetzner", nil, []sec{{"api_token", "HETZNER_API_TOKEN", "S3CRET-hetzner-token"}}},
		{"ovh", map[string]string{"endpoint": "ovh-eu"}, []sec{
			{"application_key", "OVH_APPLICATION_KEY", "S3CRET-ovh-ak"},
			{"application_secret", "OVH_APPLICATION_SECRET", "S3CRET-ovh-as"},
			{"consumer_key", "OVH_CONSUMER_KEY", "S3CRET-ovh-ck"},
		}},
		{"route53", map[string]string{"region": "eu-west-1"}, []sec{
			{"access_key_id", "AWS_ACCESS_KEY_ID", "AKIAS3CRETEXAMPLE"},
			{"secret_access_key", "AWS_SECRET_ACCESS_KEY", "S3CRET-aws-secret-key"},
		}},
		{"transip", map[string]string{"account_name": "tlsactl-test"}, []sec{{"private_key", "TRANSIP_PRIVATE_KEY", pkcs8}}},
	}
}

func TestHostedFactoriesRegistered(t *testing.T) {
	want := map[string][]string{
		"desec":   {"$DESEC_TOKEN"},
		"gandi":   {"$GANDI_BEARER_TOKEN"},
		"hetzner": {"$HETZNER_API_TOKEN"},
		"ovh":     {"$OVH_ENDPOINT", "$OVH_APPLICATION_KEY", "$OVH_APPLICATION_SECRET", "$OVH_CONSUMER_KEY"},
		"route53": {"$AWS_ACCESS_KEY_ID", "$AWS_SECRET_ACCESS_KEY", "$AWS_REGION", "$AWS_PROFILE"},
		"transip": {"$TRANSIP_ACCOUNT_NAME", "$TRANSIP_PRIVATE_KEY_FILE"},
	}
	got := map[string]Factory{}
	for _, f := range Factories() {
		got[f.Name] = f
	}
	for name, envs := range want {
		f, ok := got[name]
		if !ok {
			t.Errorf("no factory %q", name)
			continue
		}
		for _, e := range envs {
			if !strings.Contains(f.Doc, e) {
				t.Errorf("%s Doc does not mention %s:\n%s", name, e, f.Doc)
			}
		}
	}
	if _, ok := got["cloudflare"]; ok {
		t.Error("cloudflare is registered, but its libdns provider cannot write TLSA")
	}
}

// TestHostedConfigSecrets: every credential comes from a file or the
// environment; missing ones are named; plain values are refused; no error
// carries a secret.
func TestHostedConfigSecrets(t *testing.T) {
	isolateAWS(t)
	for _, c := range hostedSecretCases(t) {
		t.Run(c.name, func(t *testing.T) {
			secretsIn := func(err error) {
				t.Helper()
				for _, s := range c.secrets {
					probe := s.value
					if len(probe) > 40 {
						probe = probe[len(probe)/2 : len(probe)/2+20]
					}
					if strings.Contains(err.Error(), s.value) || strings.Contains(err.Error(), probe) {
						t.Errorf("error contains the secret %s: %v", s.key, err)
					}
				}
			}
			values := func() map[string]string {
				v := map[string]string{}
				for k, x := range c.plain {
					v[k] = x
				}
				return v
			}
			// All from the environment.
			env := map[string]string{}
			for _, s := range c.secrets {
				env[s.env] = s.value
			}
			if _, err := New(c.name, Settings{Values: values(), Env: mapEnv(env)}); err != nil {
				t.Fatalf("secrets from the environment: %v", err)
			}
			// All from files named in the configuration.
			files := map[string]string{}
			v := values()
			for _, s := range c.secrets {
				path := "/etc/tlsactl/" + s.key
				files[path] = s.value + "\n"
				v[s.key+"_file"] = path
			}
			rf := func(p string) ([]byte, error) {
				if x, ok := files[p]; ok {
					return []byte(x), nil
				}
				return nil, &os.PathError{Op: "open", Path: p, Err: os.ErrNotExist}
			}
			if _, err := New(c.name, Settings{Values: v, Env: mapEnv(nil), ReadFile: rf}); err != nil {
				t.Fatalf("secrets from files: %v", err)
			}
			for i, miss := range c.secrets {
				// One missing: ErrConfig naming the setting and the variable.
				env := map[string]string{}
				for j, s := range c.secrets {
					if j != i {
						env[s.env] = s.value
					}
				}
				_, err := New(c.name, Settings{Values: values(), Env: mapEnv(env)})
				if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), miss.key) || !strings.Contains(err.Error(), "$"+miss.env) {
					t.Errorf("without %s: err = %v, want ErrConfig naming %s and $%s", miss.key, err, miss.key, miss.env)
				} else {
					secretsIn(err)
				}
				// One written in the configuration: refused, not echoed.
				env[miss.env] = miss.value
				v := values()
				v[miss.key] = miss.value
				_, err = New(c.name, Settings{Values: v, Env: mapEnv(env)})
				if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "must not be written") {
					t.Errorf("%s given as a plain value: err = %v, want it refused", miss.key, err)
				} else {
					secretsIn(err)
				}
				// One whose file cannot be read: named, not echoed.
				v = values()
				v[miss.key+"_file"] = "/nonexistent/" + miss.key
				_, err = New(c.name, Settings{Values: v, Env: mapEnv(env), ReadFile: rf})
				if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "/nonexistent/"+miss.key) {
					t.Errorf("%s_file unreadable: err = %v", miss.key, err)
				} else {
					secretsIn(err)
				}
			}
		})
	}
}

func TestHostedConfigPlainSettings(t *testing.T) {
	isolateAWS(t)
	_, pkcs8, pkcs1 := newTestRSAKey(t)
	ovhEnv := map[string]string{"OVH_APPLICATION_KEY": "ak", "OVH_APPLICATION_SECRET": "as", "OVH_CONSUMER_KEY": "ck"}
	aws := map[string]string{"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "S3CRET-aws"}
	for _, c := range []struct {
		name, provider string
		values         map[string]string
		env            map[string]string
		wantErr        string // "" for success
	}{
		{"ovh no endpoint", "ovh", nil, ovhEnv, "$OVH_ENDPOINT"},
		{"ovh endpoint env", "ovh", nil, merge(ovhEnv, map[string]string{"OVH_ENDPOINT": "ovh-ca"}), ""},
		{"ovh endpoint url", "ovh", map[string]string{"endpoint": "https://eu.api.ovh.com/1.0"}, ovhEnv, ""},
		{"ovh endpoint unknown", "ovh", map[string]string{"endpoint": "ovh-mars"}, ovhEnv, "ovh-eu"},
		{"ovh endpoint slash", "ovh", map[string]string{"endpoint": "https://eu.api.ovh.com/1.0/"}, ovhEnv, "trailing slash"},
		{"transip no account", "transip", nil, map[string]string{"TRANSIP_PRIVATE_KEY": pkcs8}, "$TRANSIP_ACCOUNT_NAME"},
		{"transip pkcs1 key", "transip", map[string]string{"account_name": "x"}, map[string]string{"TRANSIP_PRIVATE_KEY": pkcs1}, ""},
		{"transip bad whitelist", "transip", map[string]string{"account_name": "x", "ip_whitelisted": "perhaps"}, map[string]string{"TRANSIP_PRIVATE_KEY": pkcs8}, "ip_whitelisted"},
		{"route53 no credentials", "route53", nil, nil, "default_credentials"},
		{"route53 default chain", "route53", map[string]string{"default_credentials": "true"}, nil, ""},
		{"route53 key id without secret", "route53", nil, map[string]string{"AWS_ACCESS_KEY_ID": "AKIDTEST"}, "$AWS_SECRET_ACCESS_KEY"},
		{"route53 session token plain", "route53", map[string]string{"session_token": "S3CRET-session"}, aws, "must not be written"},
		{"route53 unknown profile", "route53", map[string]string{"profile": "nosuchprofile"}, nil, "nosuchprofile"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.provider, Settings{Values: c.values, Env: mapEnv(c.env)})
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err = %v, want ErrConfig mentioning %q", err, c.wantErr)
			}
			if strings.Contains(err.Error(), "S3CRET") {
				t.Errorf("error carries a secret: %v", err)
			}
		})
	}
}

func TestHostedTransIPKeyErrorsDoNotLeak(t *testing.T) {
	for name, key := range map[string]string{
		"not pem":     "S3CRET-MATERIAL-not-a-pem-file",
		"bad pkcs8":   "-----BEGIN PRIVATE KEY-----\nUzNDUkVULU1BVEVSSUFM\n-----END PRIVATE KEY-----\n",
		"public key":  "-----BEGIN PUBLIC KEY-----\nUzNDUkVULU1BVEVSSUFM\n-----END PUBLIC KEY-----\n",
		"bad rsa key": "-----BEGIN RSA PRIVATE KEY-----\nUzNDUkVULU1BVEVSSUFM\n-----END RSA PRIVATE KEY-----\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New("transip", Settings{Values: map[string]string{"account_name": "x"}, Env: mapEnv(map[string]string{"TRANSIP_PRIVATE_KEY": key})})
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
			if strings.Contains(err.Error(), "S3CRET") || strings.Contains(err.Error(), "UzNDUkVU") {
				t.Errorf("error carries key material: %v", err)
			}
		})
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// jsonEqual compares a and b as JSON values.
func jsonEqual(a, b any) bool {
	norm := func(v any) any {
		j, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var out any
		if err := json.Unmarshal(j, &out); err != nil {
			return err
		}
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// checkNoOtherRRsetsTouched fails when a request with one of methods went to
// a path other than path.
func checkNoOtherRRsetsTouched(t *testing.T, f *fakeAPI, path string, methods ...string) {
	t.Helper()
	for _, r := range f.all() {
		for _, m := range methods {
			if r.Method == m && r.Path != path {
				t.Errorf("%s %s: only %s may change", r.Method, r.Path, path)
			}
		}
	}
}

// checkRollover publishes current + next (two records) and then next alone
// through SetTLSA, and checks the provider's TLSA values (state) after each
// step. The fixture starts with the old record alone.
func checkRollover(t *testing.T, p Provider, state func() []string) {
	t.Helper()
	ctx := hostedCtx(t)
	oldRec, err := tlsa.ParseRecord("3 1 1 " + hostedOldHex)
	if err != nil {
		t.Fatal(err)
	}
	newRec, err := tlsa.ParseRecord("3 1 1 " + hostedNewHex)
	if err != nil {
		t.Fatal(err)
	}
	wantState := func(step string, want ...string) {
		t.Helper()
		got := state()
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("%s: provider holds TLSA %q, want %q", step, got, want)
		}
	}
	cur, err := GetTLSA(ctx, p, hostedZone, hostedOwner)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SetTLSA(ctx, p, hostedZone, cur, RRSet{Owner: hostedOwner, TTL: time.Hour, Records: []tlsa.Record{oldRec, newRec}}); err != nil {
		t.Fatalf("publishing current + next: %v", err)
	}
	// sorted: "3 1 1 0c…" < "3 1 1 8c…"
	wantState("current + next", "3 1 1 "+hostedOldHex, "3 1 1 "+hostedNewHex)
	if cur, err = GetTLSA(ctx, p, hostedZone, hostedOwner); err != nil || len(cur.Records) != 2 {
		t.Fatalf("GetTLSA after adding next = %+v, %v", cur, err)
	}
	if _, err := SetTLSA(ctx, p, hostedZone, cur, RRSet{Owner: hostedOwner, TTL: time.Hour, Records: []tlsa.Record{newRec}}); err != nil {
		t.Fatalf("retiring current: %v", err)
	}
	wantState("next alone", "3 1 1 "+hostedNewHex)
}
