//go:build !nohosted

package providers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/libdns/hetzner"
	"github.com/libdns/libdns"
)

// Hetzner DNS API (https://dns.hetzner.com/api-docs): GET /api/v1/zones?name=
// finds the zone id; GET /api/v1/records?zone_id= lists records {id, type,
// name, value, ttl, zone_id}; POST /api/v1/records creates one, PUT and
// DELETE /api/v1/records/{id} change or delete one. Header Auth-API-Token.
// The library hard-codes https://dns.hetzner.com and uses a bare http.Client
// (http.DefaultTransport): reached through redirectDefaultTransport.

type hetznerRec struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Name   string `json:"name"`
	Value  string `json:"value"`
	TTL    int    `json:"ttl"`
	ZoneID string `json:"zone_id"`
}

type hetznerZone struct {
	mu      sync.Mutex
	recs    []hetznerRec
	next    int
	noZones bool
}

func (z *hetznerZone) tlsa() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	var v []string
	for _, r := range z.recs {
		if r.Type == "TLSA" && r.Name == "_25._tcp.mail" {
			v = append(v, r.Value)
		}
	}
	sort.Strings(v)
	return v
}

func newHetznerFake(t *testing.T) (*fakeAPI, *hetznerZone) {
	var fix struct {
		Records []hetznerRec `json:"records"`
	}
	if err := json.Unmarshal(hostedFixture(t, "hetzner", "records.json"), &fix); err != nil {
		t.Fatal(err)
	}
	z := &hetznerZone{recs: fix.Records}
	const zoneID = "zZ5d8hGyAd7Q2Kf4"
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Auth-API-Token") != "test-hetzner-token" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"message": "Invalid authentication credentials"}`))
			return
		}
		z.mu.Lock()
		defer z.mu.Unlock()
		write := func(rec hetznerRec) {
			json.NewEncoder(w).Encode(map[string]any{"record": rec})
		}
		id, isRec := strings.CutPrefix(r.URL.Path, "/api/v1/records/")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/zones" && r.URL.Query().Get("name") == "example.nl":
			if z.noZones {
				w.Write([]byte(`{"zones": [], "meta": {"pagination": {"page": 1, "per_page": 100, "last_page": 1, "total_entries": 0}}}`))
				return
			}
			w.Write(hostedFixture(t, "hetzner", "zones.json"))
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/records" && r.URL.Query().Get("zone_id") == zoneID:
			json.NewEncoder(w).Encode(map[string]any{"records": z.recs})
		case r.Method == http.MethodPost && r.URL.Path == "/api/v1/records":
			var in hetznerRec
			if err := json.Unmarshal(body, &in); err != nil || in.ZoneID != zoneID || in.Type == "" || in.Value == "" {
				w.WriteHeader(http.StatusUnprocessableEntity)
				w.Write([]byte(`{"error": {"message": "invalid record", "code": 422}}`))
				return
			}
			z.next++
			in.ID = fmt.Sprintf("r-new-%d", z.next)
			z.recs = append(z.recs, in)
			write(in)
		case isRec && (r.Method == http.MethodPut || r.Method == http.MethodDelete):
			for i, rec := range z.recs {
				if rec.ID != id {
					continue
				}
				if r.Method == http.MethodDelete {
					z.recs = append(z.recs[:i], z.recs[i+1:]...)
					return
				}
				var in hetznerRec
				if err := json.Unmarshal(body, &in); err != nil {
					w.WriteHeader(http.StatusUnprocessableEntity)
					return
				}
				in.ID = id
				z.recs[i] = in
				write(in)
				return
			}
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error": {"message": "record not found", "code": 404}}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error": {"message": "not found", "code": 404}}`))
		}
	})
	redirectDefaultTransport(t, f, "dns.hetzner.com")
	return f, z
}

func newHetznerProvider(t *testing.T) Provider {
	p, err := New("hetzner", Settings{Env: mapEnv(map[string]string{"HETZNER_API_TOKEN": "test-hetzner-token"})})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostedHetznerGetRecords(t *testing.T) {
	newHetznerFake(t)
	checkGetTLSA(t, newHetznerProvider(t))
}

func TestHostedHetznerSetTLSA(t *testing.T) {
	f, z := newHetznerFake(t)
	p := newHetznerProvider(t)
	if _, err := p.SetRecords(hostedCtx(t), hostedZone, []libdns.Record{hostedTLSA}); err != nil {
		t.Fatal(err)
	}
	posts := f.requests(http.MethodPost, "/api/v1/records")
	if len(posts) != 1 {
		t.Fatalf("POSTs %+v, want one", posts)
	}
	if posts[0].Header.Get("Auth-API-Token") != "test-hetzner-token" {
		t.Errorf("headers %v", posts[0].Header)
	}
	var got map[string]any
	if err := json.Unmarshal(posts[0].Body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"zone_id": "zZ5d8hGyAd7Q2Kf4", "type": "TLSA", "name": "_25._tcp.mail", "value": "3 1 1 " + hostedNewHex, "ttl": 3600}
	if !jsonEqual(got, want) {
		t.Errorf("POST body %s, want %v", posts[0].Body, want)
	}
	dels := f.requests(http.MethodDelete, "/api/v1/records/")
	if len(dels) != 1 || dels[0].Path != "/api/v1/records/r-tlsa-1" {
		t.Errorf("DELETEs %+v: want the old TLSA record r-tlsa-1 only", dels)
	}
	if got := z.tlsa(); len(got) != 1 || got[0] != "3 1 1 "+hostedNewHex {
		t.Errorf("TLSA after SetRecords = %v", got)
	}
	if len(f.requests(http.MethodPut, "")) != 0 {
		t.Errorf("unexpected PUT: %+v", f.requests(http.MethodPut, ""))
	}
}

func TestHostedHetznerRollover(t *testing.T) {
	_, z := newHetznerFake(t)
	checkRollover(t, newHetznerProvider(t), z.tlsa)
}

// TestHostedHetznerLibraryLosesRecords documents why the factory wraps the
// library: its SetRecords writes both values over one record.
func TestHostedHetznerLibraryLosesRecords(t *testing.T) {
	_, z := newHetznerFake(t)
	raw := hetzner.New("test-hetzner-token")
	two := []libdns.Record{
		libdns.RR{Type: "TLSA", Name: "_25._tcp.mail", TTL: 3600e9, Data: "3 1 1 " + hostedOldHex},
		hostedTLSA,
	}
	if _, err := raw.SetRecords(hostedCtx(t), hostedZone, two); err != nil {
		t.Fatal(err)
	}
	if got := z.tlsa(); len(got) != 1 {
		t.Errorf("library SetRecords left %v; if it now keeps both, hetznerRRsets can go", got)
	}
}

func TestHostedHetznerUnknownZoneIsAnError(t *testing.T) {
	_, z := newHetznerFake(t)
	z.mu.Lock()
	z.noZones = true
	z.mu.Unlock()
	p := newHetznerProvider(t)
	_, err := p.GetRecords(hostedCtx(t), hostedZone)
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("GetRecords on a zone the account lacks: err = %v", err)
	}
	if strings.Contains(err.Error(), "test-hetzner-token") {
		t.Errorf("error carries the token: %v", err)
	}
}
