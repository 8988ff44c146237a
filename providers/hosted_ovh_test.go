//go:build !nohosted

package providers

import (
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
)

// OVHcloud API (https://eu.api.ovh.com/console/ → /domain/zone):
// GET /domain/zone/{zone}/record[?fieldType=&subDomain=] lists record ids,
// GET /domain/zone/{zone}/record/{id} returns {id, zone, fieldType,
// subDomain, target, ttl}, POST …/record creates one, DELETE …/record/{id}
// deletes one, POST …/refresh applies the zone. GET /auth/time is the
// server clock. Requests carry X-Ovh-Application, X-Ovh-Consumer,
// X-Ovh-Timestamp and X-Ovh-Signature = "$1$" + sha1(AS+CK+METHOD+URL+BODY+TS).
// Reached through the provider's own endpoint setting (a URL).

type ovhRec struct {
	ID        int64  `json:"id"`
	Zone      string `json:"zone"`
	FieldType string `json:"fieldType"`
	SubDomain string `json:"subDomain"`
	Target    string `json:"target"`
	TTL       int64  `json:"ttl"`
}

type ovhZone struct {
	mu        sync.Mutex
	recs      map[int64]ovhRec
	next      int64
	refreshed int
}

func (z *ovhZone) tlsa() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	var v []string
	for _, r := range z.recs {
		if r.FieldType == "TLSA" && r.SubDomain == "_25._tcp.mail" {
			v = append(v, r.Target)
		}
	}
	sort.Strings(v)
	return v
}

const (
	ovhTestAK = "test-ovh-ak"
	ovhTestAS = "test-ovh-as"
	ovhTestCK = "test-ovh-ck"
)

func newOVHFake(t *testing.T) (*fakeAPI, *ovhZone) {
	var list []ovhRec
	if err := json.Unmarshal(hostedFixture(t, "ovh", "records.json"), &list); err != nil {
		t.Fatal(err)
	}
	z := &ovhZone{recs: map[int64]ovhRec{}, next: 6000000}
	for _, r := range list {
		z.recs[r.ID] = r
	}
	const base = "/1.0/domain/zone/example.nl"
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		fail := func(code int, msg string) {
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"class": "Client::BadRequest", "message": %q}`, msg)
		}
		if r.URL.Path == "/1.0/auth/time" {
			fmt.Fprint(w, time.Now().Unix())
			return
		}
		// Check the request signature as the API does.
		fullURL := "http://" + r.Host + r.URL.RequestURI()
		ts := r.Header.Get("X-Ovh-Timestamp")
		sum := sha1.Sum([]byte(ovhTestAS + "+" + ovhTestCK + "+" + r.Method + "+" + fullURL + "+" + string(body) + "+" + ts))
		if r.Header.Get("X-Ovh-Application") != ovhTestAK || r.Header.Get("X-Ovh-Consumer") != ovhTestCK ||
			r.Header.Get("X-Ovh-Signature") != fmt.Sprintf("$1$%x", sum) {
			fail(http.StatusForbidden, "Invalid signature")
			return
		}
		z.mu.Lock()
		defer z.mu.Unlock()
		switch p := r.URL.Path; {
		case r.Method == http.MethodGet && p == base+"/record":
			ids := []int64{}
			q := r.URL.Query()
			for id, rec := range z.recs {
				if (q.Get("fieldType") == "" || q.Get("fieldType") == rec.FieldType) && (!q.Has("subDomain") || q.Get("subDomain") == rec.SubDomain) {
					ids = append(ids, id)
				}
			}
			sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
			json.NewEncoder(w).Encode(ids)
		case r.Method == http.MethodPost && p == base+"/record":
			var in ovhRec
			if err := json.Unmarshal(body, &in); err != nil || in.FieldType == "" || in.Target == "" {
				fail(http.StatusBadRequest, "Invalid record")
				return
			}
			z.next++
			in.ID, in.Zone = z.next, "example.nl"
			z.recs[in.ID] = in
			json.NewEncoder(w).Encode(in)
		case r.Method == http.MethodPost && p == base+"/refresh":
			z.refreshed++
			w.Write([]byte("null"))
		case strings.HasPrefix(p, base+"/record/"):
			id, err := strconv.ParseInt(strings.TrimPrefix(p, base+"/record/"), 10, 64)
			rec, ok := z.recs[id]
			if err != nil || !ok {
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprintf(w, `{"class": "Client::NotFound", "message": "The requested object (id = %d) does not exist"}`, id)
				return
			}
			switch r.Method {
			case http.MethodGet:
				json.NewEncoder(w).Encode(rec)
			case http.MethodDelete:
				delete(z.recs, id)
				w.Write([]byte("null"))
			default:
				fail(http.StatusMethodNotAllowed, "method")
			}
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"class": "Client::NotFound", "message": "Got an invalid (or empty) URL"}`))
		}
	})
	return f, z
}

func newOVHProvider(t *testing.T, f *fakeAPI) Provider {
	p, err := New("ovh", Settings{
		Values: map[string]string{"endpoint": f.URL + "/1.0"},
		Env:    mapEnv(map[string]string{"OVH_APPLICATION_KEY": ovhTestAK, "OVH_APPLICATION_SECRET": ovhTestAS, "OVH_CONSUMER_KEY": ovhTestCK}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostedOVHGetRecords(t *testing.T) {
	t.Parallel()
	f, _ := newOVHFake(t)
	checkGetTLSA(t, newOVHProvider(t, f))
}

func TestHostedOVHSetTLSA(t *testing.T) {
	t.Parallel()
	f, z := newOVHFake(t)
	p := newOVHProvider(t, f)
	if _, err := p.SetRecords(hostedCtx(t), hostedZone, []libdns.Record{hostedTLSA}); err != nil {
		t.Fatal(err)
	}
	posts := f.requests(http.MethodPost, "/1.0/domain/zone/example.nl/record")
	if len(posts) != 1 {
		t.Fatalf("POSTs %+v, want one", posts)
	}
	var got map[string]any
	if err := json.Unmarshal(posts[0].Body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"fieldType": "TLSA", "subDomain": "_25._tcp.mail", "target": "3 1 1 " + hostedNewHex, "ttl": 3600}
	if !jsonEqual(got, want) {
		t.Errorf("POST body %s, want %v", posts[0].Body, want)
	}
	if h := posts[0].Header; h.Get("X-Ovh-Application") == "" || h.Get("X-Ovh-Signature") == "" {
		t.Errorf("headers %v", h)
	}
	dels := f.requests(http.MethodDelete, "/1.0/domain/zone/example.nl/record/")
	if len(dels) != 1 || dels[0].Path != "/1.0/domain/zone/example.nl/record/5000004" {
		t.Errorf("DELETEs %+v: want the old TLSA record 5000004 only", dels)
	}
	if len(f.requests(http.MethodPost, "/1.0/domain/zone/example.nl/refresh")) != 1 {
		t.Error("zone not refreshed")
	}
	if got := z.tlsa(); len(got) != 1 || got[0] != "3 1 1 "+hostedNewHex {
		t.Errorf("TLSA after SetRecords = %v", got)
	}
}

func TestHostedOVHRollover(t *testing.T) {
	t.Parallel()
	f, z := newOVHFake(t)
	checkRollover(t, newOVHProvider(t, f), z.tlsa)
}
