package targets

// ProviderDNS.SetBatch against the real bed of dns_test.go (Knot, signed
// zones, RFC 2136 with TSIG, validating Unbound): five hosts of one zone get
// the new CA's 2 1 1 in one provider call, which for RFC 2136 is one UPDATE
// message (providers/batch_test.go proves that on the wire). Here the proof
// is the provider calls counted, the zone's SOA serial (+1) and Knot's log
// of the UPDATE messages it applied.

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/providers"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

// callCounter counts the changing calls made to a provider.
type callCounter struct {
	providers.Provider

	mu    sync.Mutex
	sets  [][]libdns.Record // the input of every SetRecords call
	other int               // AppendRecords and DeleteRecords calls
}

func (c *callCounter) SetRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	c.mu.Lock()
	c.sets = append(c.sets, slices.Clone(recs))
	c.mu.Unlock()
	return c.Provider.SetRecords(ctx, zone, recs)
}

func (c *callCounter) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	c.mu.Lock()
	c.other++
	c.mu.Unlock()
	return c.Provider.AppendRecords(ctx, zone, recs)
}

func (c *callCounter) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	c.mu.Lock()
	c.other++
	c.mu.Unlock()
	return c.Provider.DeleteRecords(ctx, zone, recs)
}

// calls returns the SetRecords inputs so far and the number of other calls.
func (c *callCounter) calls() ([][]libdns.Record, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sets), c.other
}

// knotUpdates is how many UPDATE messages Knot's log says it applied to
// zone ("[zone] DDNS, processing N updates", one line per zone change).
func knotUpdates(log, zone string) int {
	n := 0
	for _, m := range regexp.MustCompile(`\[`+regexp.QuoteMeta(zone)+`\] DDNS, processing (\d+) updates?`).FindAllStringSubmatch(log, -1) {
		k, _ := strconv.Atoi(m[1])
		n += k
	}
	return n
}

func TestProviderDNSBatchLive(t *testing.T) {
	b := newBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("knot log (tail):\n%s", b.knot.Log()[max(0, len(b.knot.Log())-4000):])
		}
	})
	calls := &callCounter{Provider: b.prov}
	config := func(host string, p providers.Provider, id string) Config {
		c := b.config(host, b.fresh)
		c.Provider, c.ProviderID = p, id
		return c
	}

	t.Run("BatchKey", func(t *testing.T) {
		for _, tc := range []struct {
			host, id, want string
		}{
			{"b1.tg.test", "knot", "knot tg.test."},
			{"b1.tg.test", "", ""},
			{"b1.tg.test", "other", "other tg.test."},
			{"cn.tg.test", "knot", "knot tg.test."},     // CNAME inside the zone
			{"two.tg.test", "knot", "knot other.test."}, // the effective owner's zone
		} {
			d, err := Resolve(ctx, config(tc.host, calls, tc.id))
			if err != nil {
				t.Fatal(err)
			}
			if got := d.BatchKey(); got != tc.want {
				t.Errorf("%s with ProviderID %q: BatchKey() = %q, want %q", tc.host, tc.id, got, tc.want)
			}
		}
	})

	var ds []*ProviderDNS
	var owners []string
	for i := range 5 {
		d, err := Resolve(ctx, config("b"+strconv.Itoa(i+1)+".tg.test", calls, "knot"))
		if err != nil {
			t.Fatal(err)
		}
		if d.BatchKey() != "knot "+zoneT {
			t.Fatalf("%s: BatchKey() = %q", d.Owner(), d.BatchKey())
		}
		ds = append(ds, d)
		owners = append(owners, d.Owner())
	}

	// sees fails unless the provider and the authoritative server show
	// every owner with exactly want[owner] (validly signed: an RRSIG
	// problem is a sighting's Err) and its TTL; nil means no TLSA.
	sees := func(t *testing.T, want map[string]rollover.RRSet) {
		t.Helper()
		for _, d := range ds {
			obs, err := d.Observe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			w := want[d.Owner()]
			for _, s := range obs {
				if s.Kind == rollover.SourceResolver {
					continue // a resolver's view is not what the batch is about
				}
				if s.Err != nil || !sameRecords(s.Records, w.Records) || len(w.Records) > 0 && s.TTL != w.TTL {
					t.Errorf("%s: %s sees %d records, TTL %d (err %v); want %d, TTL %d", d.Owner(), s.Source, len(s.Records), s.TTL, s.Err, len(w.Records), w.TTL)
				}
			}
		}
	}
	// zoneData is the zone without SOA and DNSSEC records, as
	// "owner type data" lines, split into the batched owners' TLSA
	// records and everything else.
	zoneData := func(t *testing.T) (batched, others []string) {
		t.Helper()
		recs, err := b.prov.GetRecords(ctx, zoneT)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			rr := r.RR()
			switch rr.Type {
			case "SOA", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DNSKEY", "CDS", "CDNSKEY":
				continue
			}
			name := strings.ToLower(libdns.AbsoluteName(rr.Name, zoneT))
			line := name + " " + rr.TTL.String() + " " + rr.Type + " " + strings.ToLower(rr.Data)
			if rr.Type == "TLSA" && slices.Contains(owners, name) {
				batched = append(batched, line)
			} else {
				others = append(others, line)
			}
		}
		slices.Sort(batched)
		slices.Sort(others)
		return batched, others
	}
	serial := func(t *testing.T) uint32 {
		t.Helper()
		s, err := b.knot.Serial(ctx, zoneT)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	sees(t, nil)
	_, others0 := zoneData(t)
	serial0 := serial(t)
	logged0 := knotUpdates(b.knot.Log(), zoneT)

	newCA := rec(2, 0xca)
	want := map[string]rollover.RRSet{}
	total := 0
	for i, owner := range owners {
		set := rollover.RRSet{Records: []tlsa.Record{rec(3, byte(0x10+i)), newCA}, TTL: 120}
		if i == 4 {
			set.Records = set.Records[1:] // a host that has only the CA's
		}
		want[owner] = set
		total += len(set.Records)
	}
	// Any DNS of the batch can write it, not only the first.
	if err := ds[2].SetBatch(ctx, want); err != nil {
		t.Fatal(err)
	}

	// (a) Served by the authoritative server, validly signed.
	for _, d := range ds {
		if err := d.WaitServed(ctx, want[d.Owner()]); err != nil {
			t.Fatal(err)
		}
		if cur, _, err := d.Current(ctx); err != nil || !sameRecords(cur.Records, want[d.Owner()].Records) || cur.TTL != 120 {
			t.Errorf("%s: Current = %+v, %v", d.Owner(), cur, err)
		}
	}
	sees(t, want)

	// (b) One provider call with every owner's records: one UPDATE, one
	// zone change.
	sets, other := calls.calls()
	if len(sets) != 1 || other != 0 {
		t.Fatalf("SetBatch made %d SetRecords and %d other provider calls, want 1 SetRecords", len(sets), other)
	}
	if len(sets[0]) != total {
		t.Errorf("the SetRecords call had %d records, want %d", len(sets[0]), total)
	}
	if s := serial(t); s != serial0+1 {
		t.Errorf("SOA serial went from %d to %d, want +1 (one update)", serial0, s)
	}
	if n := knotUpdates(b.knot.Log(), zoneT) - logged0; n != 1 {
		t.Errorf("Knot logged %d UPDATE messages applied, want 1", n)
	}

	// (c) Nothing else changed; the batch is all there is at its owners.
	batched1, others1 := zoneData(t)
	if !slices.Equal(others0, others1) {
		t.Errorf("records outside the batch changed:\nbefore %q\nafter  %q", others0, others1)
	}
	if len(batched1) != total {
		t.Errorf("%d batched TLSA records in the zone, want %d: %q", len(batched1), total, batched1)
	}

	// (d) Bad input: an error naming the owner, and no provider call.
	next := rollover.RRSet{Records: []tlsa.Record{rec(2, 0xcb)}, TTL: 60}
	for _, tc := range []struct {
		name    string
		sets    map[string]rollover.RRSet
		wantErr string
	}{
		{"owner outside zone", map[string]rollover.RRSet{owners[0]: next, "_25._tcp.mail.other.test.": next},
			"setting TLSA: _25._tcp.mail.other.test. is not in zone tg.test."},
		{"empty set", map[string]rollover.RRSet{owners[0]: next, owners[1]: {TTL: 60}},
			"setting TLSA in zone tg.test.: the RRset for _25._tcp.b2.tg.test. is empty (a batch only replaces RRsets; delete with SetTLSA)"},
		{"duplicate owner", map[string]rollover.RRSet{owners[1]: next, "_25._tcp.B2.tg.test.": next},
			"setting TLSA in zone tg.test.: _25._tcp.b2.tg.test. is given twice"},
		{"no sets", map[string]rollover.RRSet{}, "setting TLSA in zone tg.test.: no RRsets given"},
		{"nil", nil, "setting TLSA in zone tg.test.: no RRsets given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ds[0].SetBatch(ctx, tc.sets)
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("SetBatch: %v\nwant %s", err, tc.wantErr)
			}
			if sets, other := calls.calls(); len(sets) != 1 || other != 0 {
				t.Errorf("a refused batch reached the provider (%d SetRecords, %d other calls in all)", len(sets), other)
			}
			if s := serial(t); s != serial0+1 {
				t.Errorf("SOA serial changed from %d to %d", serial0+1, s)
			}
			sees(t, want)
		})
	}

	// (e) A batch the server refuses (a wrong TSIG key) changes no owner.
	t.Run("refused", func(t *testing.T) {
		// The provider as tlsactl builds it, with a key of the right name
		// and a wrong secret.
		prov, err := providers.New("rfc2136", providers.Settings{Values: map[string]string{
			"server": b.knot.Addr, "tsig_key_file": testbed.NewTSIGKey(b.knot.Key.Name).KeyFile(t)}})
		if err != nil {
			t.Fatal(err)
		}
		bad := &callCounter{Provider: prov}
		d, err := Resolve(ctx, config("b1.tg.test", bad, "knot"))
		if err != nil {
			t.Fatal(err)
		}
		sets := map[string]rollover.RRSet{}
		for _, owner := range owners {
			sets[owner] = next
		}
		err = d.SetBatch(ctx, sets)
		if err == nil {
			t.Fatal("a batch with a wrong TSIG key succeeded")
		}
		t.Logf("refused: %v", err)
		if !strings.HasPrefix(err.Error(), "setting TLSA at "+strings.Join(owners, ", ")+": ") || strings.Contains(err.Error(), "\n") ||
			!strings.Contains(err.Error(), "rejected the TSIG key") {
			t.Errorf("the error does not name every owner and the cause on one line: %v", err)
		}
		if sets, other := bad.calls(); len(sets) != 1 || other != 0 {
			t.Errorf("the refused batch was %d SetRecords and %d other calls, want 1 SetRecords", len(sets), other)
		}
		if s := serial(t); s != serial0+1 {
			t.Errorf("SOA serial changed from %d to %d by a refused batch", serial0+1, s)
		}
		if n := knotUpdates(b.knot.Log(), zoneT) - logged0; n != 1 {
			t.Errorf("Knot applied %d UPDATE messages in all, want 1", n)
		}
		sees(t, want)
		if batched, others := zoneData(t); !slices.Equal(batched, batched1) || !slices.Equal(others, others1) {
			t.Errorf("a refused batch changed the zone")
		}
	})
}
