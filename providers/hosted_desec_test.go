//go:build !nohosted

package providers

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/libdns/libdns"
)

// deSEC API (https://desec.readthedocs.io/en/latest/dns/rrsets.html):
// GET /api/v1/domains/{name}/rrsets/ lists RRsets; PUT on the same URL with
// a JSON array of {subname, type, ttl, records} bulk-replaces RRsets.
// Authorization: Token <token>. The library hard-codes https://desec.io and
// uses http.DefaultClient: reached through redirectDefaultTransport.

func newDesecFake(t *testing.T) *fakeAPI {
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Token test-desec-token" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"detail": "Invalid token."}`))
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/domains/example.nl/rrsets/":
			w.Write(hostedFixture(t, "desec", "rrsets.json"))
		case r.Method == http.MethodPut && r.URL.Path == "/api/v1/domains/example.nl/rrsets/":
			w.Write(body) // deSEC answers with the RRsets written
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"detail": "Not found."}`))
		}
	})
	redirectDefaultTransport(t, f, "desec.io")
	return f
}

func newDesecProvider(t *testing.T) Provider {
	p, err := New("desec", Settings{Env: mapEnv(map[string]string{"DESEC_TOKEN": "test-desec-token"})})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostedDesecGetRecords(t *testing.T) {
	newDesecFake(t)
	checkGetTLSA(t, newDesecProvider(t))
}

func TestHostedDesecSetTLSA(t *testing.T) {
	f := newDesecFake(t)
	p := newDesecProvider(t)
	if _, err := p.SetRecords(hostedCtx(t), hostedZone, []libdns.Record{hostedTLSA}); err != nil {
		t.Fatal(err)
	}
	puts := f.requests(http.MethodPut, "/api/v1/domains/example.nl/rrsets/")
	if len(puts) != 1 || len(f.all()) != 1 {
		t.Fatalf("requests %+v: want exactly one PUT", f.all())
	}
	put := puts[0]
	if put.Header.Get("Authorization") != "Token test-desec-token" || put.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Errorf("headers %v", put.Header)
	}
	var got []map[string]any
	if err := json.Unmarshal(put.Body, &got); err != nil {
		t.Fatalf("body %s: %v", put.Body, err)
	}
	want := []map[string]any{{"subname": "_25._tcp.mail", "type": "TLSA", "ttl": 3600.0, "records": []any{"3 1 1 " + hostedNewHex}}}
	if !jsonEqual(got, want) {
		t.Errorf("PUT body %s, want %v", put.Body, want)
	}
}
