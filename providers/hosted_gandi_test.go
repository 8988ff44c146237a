//go:build !nohosted

package providers

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/libdns/gandi"
	"github.com/libdns/libdns"
)

// Gandi LiveDNS API (https://api.gandi.net/docs/livedns/):
// GET /v5/livedns/domains/{fqdn} (domain_records_href), GET …/records lists
// RRsets {rrset_name, rrset_type, rrset_ttl, rrset_values}; GET/PUT/DELETE
// …/records/{name}/{type} reads, replaces or deletes one RRset.
// Authorization: Bearer <personal access token>. The library hard-codes
// https://api.gandi.net and uses http.DefaultClient: reached through
// redirectDefaultTransport.

type gandiRRset struct {
	Name   string   `json:"rrset_name"`
	Type   string   `json:"rrset_type"`
	TTL    int      `json:"rrset_ttl,omitempty"`
	Values []string `json:"rrset_values"`
	Href   string   `json:"rrset_href,omitempty"`
}

// gandiZone is the fake's zone state, loaded from the fixture.
type gandiZone struct {
	mu   sync.Mutex
	sets map[string]gandiRRset // "name/type"
}

func (z *gandiZone) tlsa() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	v := append([]string(nil), z.sets["_25._tcp.mail/TLSA"].Values...)
	sort.Strings(v)
	return v
}

func newGandiFake(t *testing.T) (*fakeAPI, *gandiZone) {
	var list []gandiRRset
	if err := json.Unmarshal(hostedFixture(t, "gandi", "records.json"), &list); err != nil {
		t.Fatal(err)
	}
	z := &gandiZone{sets: map[string]gandiRRset{}}
	for _, s := range list {
		z.sets[s.Name+"/"+s.Type] = s
	}
	const records = "/v5/livedns/domains/example.nl/records"
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bearer test-gandi-token" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"code": 401, "message": "The server could not verify that you are authorized", "object": "HTTPUnauthorized", "cause": "Unauthorized"}`))
			return
		}
		z.mu.Lock()
		defer z.mu.Unlock()
		notFound := func() {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"code": 404, "message": "Can't find the DNS record", "object": "dns-record", "cause": "Not Found"}`))
		}
		switch p := r.URL.Path; {
		case r.Method == http.MethodGet && p == "/v5/livedns/domains/example.nl":
			w.Write(hostedFixture(t, "gandi", "domain.json"))
		case r.Method == http.MethodGet && p == records:
			var out []gandiRRset
			for _, s := range z.sets {
				out = append(out, s)
			}
			sort.Slice(out, func(i, j int) bool { return out[i].Name+out[i].Type < out[j].Name+out[j].Type })
			json.NewEncoder(w).Encode(out)
		case strings.HasPrefix(p, records+"/"):
			key, _ := url.PathUnescape(strings.TrimPrefix(r.URL.EscapedPath(), records+"/"))
			s, ok := z.sets[key]
			switch r.Method {
			case http.MethodGet:
				if !ok {
					notFound()
					return
				}
				json.NewEncoder(w).Encode(s)
			case http.MethodPut:
				var in gandiRRset
				if err := json.Unmarshal(body, &in); err != nil || len(in.Values) == 0 {
					w.WriteHeader(http.StatusBadRequest)
					w.Write([]byte(`{"code": 400, "message": "Bad Request", "object": "BadRequest", "cause": "Bad Request"}`))
					return
				}
				name, typ, _ := strings.Cut(key, "/")
				in.Name, in.Type = name, typ
				z.sets[key] = in
				w.WriteHeader(http.StatusCreated)
				w.Write([]byte(`{"message": "DNS Record Created"}`))
			case http.MethodDelete:
				if !ok {
					notFound()
					return
				}
				delete(z.sets, key)
				w.WriteHeader(http.StatusNoContent)
			}
		default:
			notFound()
		}
	})
	redirectDefaultTransport(t, f, "api.gandi.net")
	return f, z
}

func newGandiProvider(t *testing.T) Provider {
	p, err := New("gandi", Settings{Env: mapEnv(map[string]string{"GANDI_BEARER_TOKEN": "test-gandi-token"})})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostedGandiGetRecords(t *testing.T) {
	newGandiFake(t)
	checkGetTLSA(t, newGandiProvider(t))
}

func TestHostedGandiSetTLSA(t *testing.T) {
	f, z := newGandiFake(t)
	p := newGandiProvider(t)
	if _, err := p.SetRecords(hostedCtx(t), hostedZone, []libdns.Record{hostedTLSA}); err != nil {
		t.Fatal(err)
	}
	puts := f.requests(http.MethodPut, "/v5/livedns/domains/example.nl/records/_25._tcp.mail/TLSA")
	if len(puts) == 0 {
		t.Fatalf("no PUT of the TLSA RRset; requests %+v", f.all())
	}
	for _, put := range puts {
		if put.Header.Get("Authorization") != "Bearer test-gandi-token" || put.Header.Get("Content-Type") != "application/json" {
			t.Errorf("headers %v", put.Header)
		}
	}
	// First PUT: the new value added to the RRset, in LiveDNS's shape.
	var first map[string]any
	if err := json.Unmarshal(puts[0].Body, &first); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"rrset_name": "_25._tcp.mail", "rrset_type": "TLSA", "rrset_ttl": 3600, "rrset_values": []string{"3 1 1 " + hostedOldHex, "3 1 1 " + hostedNewHex}}
	if !jsonEqual(first, want) {
		t.Errorf("first PUT body %s, want %v", puts[0].Body, want)
	}
	// In the end the RRset holds exactly the new value.
	if got := z.tlsa(); len(got) != 1 || got[0] != "3 1 1 "+hostedNewHex {
		t.Errorf("TLSA RRset after SetRecords = %v, want only the new record", got)
	}
	checkNoOtherRRsetsTouched(t, f, "/v5/livedns/domains/example.nl/records/_25._tcp.mail/TLSA", http.MethodPut, http.MethodDelete)
}

// TestHostedGandiRollover: a two-record RRset (current + next key) and back
// to one, through SetTLSA.
func TestHostedGandiRollover(t *testing.T) {
	_, z := newGandiFake(t)
	p := newGandiProvider(t)
	checkRollover(t, p, z.tlsa)
}

// TestHostedGandiLibraryAppendsOnly documents why the factory wraps the
// library: its SetRecords leaves the old value in the RRset.
func TestHostedGandiLibraryAppendsOnly(t *testing.T) {
	_, z := newGandiFake(t)
	raw := &gandi.Provider{BearerToken: "test-gandi-token"}
	if _, err := raw.SetRecords(hostedCtx(t), hostedZone, []libdns.Record{hostedTLSA}); err != nil {
		t.Fatal(err)
	}
	if got := z.tlsa(); len(got) != 2 {
		t.Errorf("library SetRecords left %v; if it now replaces the RRset, gandiRRsets can go", got)
	}
}
