//go:build !nohosted

package providers

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/libdns/transip"
)

// TransIP REST API v6 (https://api.transip.nl/rest/docs.html):
// POST /v6/auth with {login, nonce, read_only, expiration_time, label,
// global_key} and header Signature = base64(RSA-SHA512 PKCS #1 v1.5 of the
// body) returns {"token": JWT}; then with Authorization: Bearer JWT,
// GET /v6/domains/{domain}/dns returns {"dnsEntries": [{name, expire, type,
// content}]}, POST and DELETE /v6/domains/{domain}/dns with
// {"dnsEntry": {…}} add or remove one entry. Reached through the provider's
// own BaseUri field.

type transipEntry struct {
	Name    string `json:"name"`
	Expire  int    `json:"expire"`
	Type    string `json:"type"`
	Content string `json:"content"`
}

type transipZone struct {
	mu      sync.Mutex
	entries []transipEntry
}

func (z *transipZone) tlsa() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	var v []string
	for _, e := range z.entries {
		if e.Type == "TLSA" && e.Name == "_25._tcp.mail" {
			v = append(v, e.Content)
		}
	}
	sort.Strings(v)
	return v
}

// fakeJWT returns an unsigned token whose payload the library reads for its
// expiry.
func fakeJWT() string {
	enc := base64.RawURLEncoding.EncodeToString
	payload := fmt.Sprintf(`{"iss":"api.transip.nl","aud":"api.transip.nl","jti":"test","iat":%d,"nbf":%d,"exp":%d,"ro":false,"gk":true}`,
		time.Now().Unix(), time.Now().Unix(), time.Now().Add(time.Hour).Unix())
	return enc([]byte(`{"typ":"JWT","alg":"RS512"}`)) + "." + enc([]byte(payload)) + "." + enc([]byte("not-a-signature"))
}

func newTransIPFake(t *testing.T, pub *rsa.PublicKey) (*fakeAPI, *transipZone) {
	var fix struct {
		Entries []transipEntry `json:"dnsEntries"`
	}
	if err := json.Unmarshal(hostedFixture(t, "transip", "dns.json"), &fix); err != nil {
		t.Fatal(err)
	}
	z := &transipZone{entries: fix.Entries}
	jwt := fakeJWT()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		fail := func(code int, msg string) {
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"error": %q}`, msg)
		}
		if r.Method == http.MethodPost && r.URL.Path == "/v6/auth" {
			sig, err := base64.StdEncoding.DecodeString(r.Header.Get("Signature"))
			sum := sha512.Sum512(body)
			if err != nil || rsa.VerifyPKCS1v15(pub, crypto.SHA512, sum[:], sig) != nil {
				fail(http.StatusUnauthorized, "Invalid signature")
				return
			}
			var auth map[string]any
			if json.Unmarshal(body, &auth) != nil || auth["login"] != "tlsactl-test" || auth["nonce"] == "" {
				fail(http.StatusBadRequest, "Invalid request")
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"token": jwt})
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+jwt {
			fail(http.StatusUnauthorized, "Your access token is invalid")
			return
		}
		if r.URL.Path != "/v6/domains/example.nl/dns" {
			fail(http.StatusNotFound, "Domain not found")
			return
		}
		z.mu.Lock()
		defer z.mu.Unlock()
		var in struct {
			Entry *transipEntry `json:"dnsEntry"`
		}
		if r.Method != http.MethodGet && (json.Unmarshal(body, &in) != nil || in.Entry == nil) {
			fail(http.StatusBadRequest, "dnsEntry missing")
			return
		}
		switch r.Method {
		case http.MethodGet:
			json.NewEncoder(w).Encode(map[string]any{"dnsEntries": z.entries})
		case http.MethodPost:
			z.entries = append(z.entries, *in.Entry)
			w.WriteHeader(http.StatusCreated)
		case http.MethodDelete:
			for i, e := range z.entries {
				if e == *in.Entry {
					z.entries = append(z.entries[:i], z.entries[i+1:]...)
					w.WriteHeader(http.StatusNoContent)
					return
				}
			}
			fail(http.StatusNotFound, "DNS entry not found")
		default:
			fail(http.StatusMethodNotAllowed, "method")
		}
	})
	return f, z
}

func newTransIPProvider(t *testing.T, f *fakeAPI, pkcs8 string) Provider {
	p, err := New("transip", Settings{
		Values: map[string]string{"account_name": "tlsactl-test"},
		Env:    mapEnv(map[string]string{"TRANSIP_PRIVATE_KEY": pkcs8}),
	})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(f.URL + "/v6/")
	if err != nil {
		t.Fatal(err)
	}
	tp := p.(*transip.Provider)
	tp.BaseUri = (*transip.ApiBaseUri)(u)
	return p
}

func TestHostedTransIPGetRecords(t *testing.T) {
	t.Parallel()
	key, pkcs8, _ := newTestRSAKey(t)
	f, _ := newTransIPFake(t, &key.PublicKey)
	checkGetTLSA(t, newTransIPProvider(t, f, pkcs8))
	if len(f.requests(http.MethodPost, "/v6/auth")) != 1 {
		t.Errorf("want one signed POST /v6/auth; requests %+v", f.all())
	}
}

func TestHostedTransIPSetTLSA(t *testing.T) {
	t.Parallel()
	key, pkcs8, _ := newTestRSAKey(t)
	f, z := newTransIPFake(t, &key.PublicKey)
	p := newTransIPProvider(t, f, pkcs8)
	if _, err := p.SetRecords(hostedCtx(t), hostedZone, []libdns.Record{hostedTLSA}); err != nil {
		t.Fatal(err)
	}
	posts := f.requests(http.MethodPost, "/v6/domains/example.nl/dns")
	if len(posts) != 1 {
		t.Fatalf("POSTs %+v, want one", posts)
	}
	var got map[string]any
	if err := json.Unmarshal(posts[0].Body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"dnsEntry": map[string]any{"name": "_25._tcp.mail", "expire": 3600, "type": "TLSA", "content": "3 1 1 " + hostedNewHex}}
	if !jsonEqual(got, want) {
		t.Errorf("POST body %s, want %v", posts[0].Body, want)
	}
	if posts[0].Header.Get("Authorization") == "" {
		t.Errorf("POST without Authorization")
	}
	dels := f.requests(http.MethodDelete, "/v6/domains/example.nl/dns")
	var del map[string]any
	if len(dels) != 1 || json.Unmarshal(dels[0].Body, &del) != nil ||
		!jsonEqual(del, map[string]any{"dnsEntry": map[string]any{"name": "_25._tcp.mail", "expire": 3600, "type": "TLSA", "content": "3 1 1 " + hostedOldHex}}) {
		t.Errorf("DELETEs %+v: want the old TLSA entry only", dels)
	}
	if got := z.tlsa(); len(got) != 1 || got[0] != "3 1 1 "+hostedNewHex {
		t.Errorf("TLSA after SetRecords = %v", got)
	}
}

func TestHostedTransIPRollover(t *testing.T) {
	t.Parallel()
	key, pkcs8, _ := newTestRSAKey(t)
	f, z := newTransIPFake(t, &key.PublicKey)
	checkRollover(t, newTransIPProvider(t, f, pkcs8), z.tlsa)
}
