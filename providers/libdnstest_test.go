package providers_test

// libdns's own conformance suite (package libdnstest, "NewTestSuite(p,
// zone).RunTests(t)") is not usable here: it is not part of
// github.com/libdns/libdns v1.1.1 (the newest version the module proxy
// serves; `go get github.com/libdns/libdns/libdnstest@latest` says the module
// does not contain the package), and the only versions that have it are
// untagged v1.2.0-alpha pseudo-versions of the libdns master branch that the
// proxy refuses (403). TestLibdnsContract below does the equivalent checks
// for the record types tlsactl cares about (A, TXT, TLSA) against the
// rfc2136 adapter and each real server: the Append, Set (only the named
// RRsets change) and Delete (returns what it deleted) parts of the suite.
// The suite's ListZones part does not apply (rfc2136 has no ZoneLister), and
// its CAA/MX/SRV/NS/SVCB/HTTPS records are left out: tlsactl never writes
// them.

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/libdns/libdns"
)

// rrKey is a record as compared here: name relative to the zone, type,
// TTL and data (lower-cased: TLSA hex case is not significant).
type rrKey struct {
	Name, Type, Data string
	TTL              time.Duration
}

func keyOf(r libdns.Record) rrKey {
	rr := r.RR()
	return rrKey{Name: rr.Name, Type: rr.Type, Data: strings.ToLower(rr.Data), TTL: rr.TTL}
}

// zoneRecords returns the records at name of type typ, sorted.
func zoneRecords(t *testing.T, ctx context.Context, p libdns.RecordGetter, zone, name, typ string) []rrKey {
	t.Helper()
	all, err := p.GetRecords(ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	var out []rrKey
	for _, r := range all {
		if k := keyOf(r); k.Name == name && k.Type == typ {
			out = append(out, k)
		}
	}
	sortKeys(out)
	return out
}

func sortKeys(ks []rrKey) {
	sort.Slice(ks, func(i, j int) bool { return ks[i].Data < ks[j].Data })
}

func keysOf(rs ...libdns.Record) []rrKey {
	out := make([]rrKey, len(rs))
	for i, r := range rs {
		out[i] = keyOf(r)
	}
	sortKeys(out)
	return out
}

func equalKeys(a, b []rrKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func wantRecords(t *testing.T, ctx context.Context, p libdns.RecordGetter, name, typ string, want ...libdns.Record) {
	t.Helper()
	got := zoneRecords(t, ctx, p, zoneLibdns, name, typ)
	if w := keysOf(want...); !equalKeys(got, w) {
		t.Fatalf("%s %s in zone: got %+v, want %+v", name, typ, got, w)
	}
}

func tlsaRR(name string, ttl time.Duration, data string) libdns.RR {
	return libdns.RR{Name: name, TTL: ttl, Type: "TLSA", Data: data}
}

func TestLibdnsContract(t *testing.T) {
	t.Parallel()
	const ttl = 300 * time.Second
	hexA, hexB, hexC := strings.Repeat("0a", 32), strings.Repeat("0b", 32), strings.Repeat("0c", 32)
	forEachServer(t, func(t *testing.T, s authServer) {
		ctx := testCtx(t)
		p := newProvider(t, s.addr, s.key)
		// Start from a clean zone even when the servers outlive a run
		// (-count=N): delete every RRset the subtests use.
		var clean []libdns.Record
		for _, n := range []struct{ name, typ string }{
			{"test-append-address", "A"}, {"test-append-txt", "TXT"}, {"_25._tcp.test-append", "TLSA"},
			{"test-set-preserve", "TXT"}, {"test-set-address", "TXT"}, {"test-set-address", "A"},
			{"test-set-txt", "TXT"}, {"_25._tcp.test-set", "TLSA"}, {"_25._tcp.test-delete", "TLSA"}, {"test-delete", "TXT"},
		} {
			clean = append(clean, libdns.RR{Name: n.name, Type: n.typ})
		}
		if _, err := p.DeleteRecords(ctx, zoneLibdns, clean); err != nil {
			t.Fatal(err)
		}

		t.Run("append", func(t *testing.T) {
			in := []libdns.Record{
				libdns.Address{Name: "test-append-address", TTL: ttl, IP: netip.MustParseAddr("192.0.2.1")},
				libdns.Address{Name: "test-append-address", TTL: ttl, IP: netip.MustParseAddr("192.0.2.2")},
				libdns.TXT{Name: "test-append-txt", TTL: ttl, Text: "Hello, world!"},
				tlsaRR("_25._tcp.test-append", ttl, "3 1 1 "+hexA),
				tlsaRR("_25._tcp.test-append", ttl, "2 1 1 "+strings.ToUpper(hexB)),
			}
			out, err := p.AppendRecords(ctx, zoneLibdns, in)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != len(in) {
				t.Fatalf("AppendRecords returned %d records, want %d", len(out), len(in))
			}
			wantRecords(t, ctx, p, "test-append-address", "A", in[0], in[1])
			wantRecords(t, ctx, p, "test-append-txt", "TXT", in[2])
			wantRecords(t, ctx, p, "_25._tcp.test-append", "TLSA", in[3], in[4])
			// Appending a record that exists already does not duplicate it.
			if _, err := p.AppendRecords(ctx, zoneLibdns, in[3:4]); err != nil {
				t.Fatal(err)
			}
			wantRecords(t, ctx, p, "_25._tcp.test-append", "TLSA", in[3], in[4])
		})

		t.Run("set", func(t *testing.T) {
			preserved := libdns.RR{Name: "test-set-preserve", TTL: ttl, Type: "TXT", Data: "should-not-change"}
			sameNameOtherType := libdns.TXT{Name: "test-set-address", TTL: ttl, Text: "other type, same name"}
			if _, err := p.AppendRecords(ctx, zoneLibdns, []libdns.Record{preserved, sameNameOtherType}); err != nil {
				t.Fatal(err)
			}
			initial := []libdns.Record{
				libdns.Address{Name: "test-set-address", TTL: ttl, IP: netip.MustParseAddr("192.0.2.1")},
				libdns.Address{Name: "test-set-address", TTL: ttl, IP: netip.MustParseAddr("192.0.2.2")},
				libdns.TXT{Name: "test-set-txt", TTL: ttl, Text: "initial value"},
				tlsaRR("_25._tcp.test-set", ttl, "3 1 1 "+hexA),
				tlsaRR("_25._tcp.test-set", ttl, "2 1 1 "+hexB),
			}
			out, err := p.SetRecords(ctx, zoneLibdns, initial)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != len(initial) {
				t.Fatalf("SetRecords returned %d records, want %d", len(out), len(initial))
			}
			wantRecords(t, ctx, p, "test-set-address", "A", initial[0], initial[1])
			wantRecords(t, ctx, p, "_25._tcp.test-set", "TLSA", initial[3], initial[4])

			updated := []libdns.Record{
				libdns.Address{Name: "test-set-address", TTL: 2 * ttl, IP: netip.MustParseAddr("192.0.2.3")},
				libdns.TXT{Name: "test-set-txt", TTL: 2 * ttl, Text: "updated value"},
				tlsaRR("_25._tcp.test-set", 2*ttl, "3 1 1 "+hexC),
			}
			out, err = p.SetRecords(ctx, zoneLibdns, updated)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != len(updated) {
				t.Fatalf("SetRecords returned %d records, want %d", len(out), len(updated))
			}
			wantRecords(t, ctx, p, "test-set-address", "A", updated[0])
			wantRecords(t, ctx, p, "test-set-txt", "TXT", updated[1])
			wantRecords(t, ctx, p, "_25._tcp.test-set", "TLSA", updated[2])
			// Only the (name, type) pairs of the input changed.
			wantRecords(t, ctx, p, "test-set-preserve", "TXT", preserved)
			wantRecords(t, ctx, p, "test-set-address", "TXT", sameNameOtherType)
		})

		t.Run("delete", func(t *testing.T) {
			a := tlsaRR("_25._tcp.test-delete", ttl, "3 1 1 "+hexA)
			b := tlsaRR("_25._tcp.test-delete", ttl, "2 1 1 "+hexB)
			txt := libdns.TXT{Name: "test-delete", TTL: ttl, Text: "stays"}
			if _, err := p.AppendRecords(ctx, zoneLibdns, []libdns.Record{a, b, txt}); err != nil {
				t.Fatal(err)
			}
			wantRecords(t, ctx, p, "_25._tcp.test-delete", "TLSA", a, b)

			// Deleting one record of an RRset removes exactly it and
			// returns it. The TTL of the input does not matter (RFC 2136
			// matches name, type and data).
			del := tlsaRR(a.Name, 0, a.Data)
			out, err := p.DeleteRecords(ctx, zoneLibdns, []libdns.Record{del})
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != 1 || out[0].RR() != del {
				t.Fatalf("DeleteRecords returned %+v, want [%+v]", out, del)
			}
			wantRecords(t, ctx, p, "_25._tcp.test-delete", "TLSA", b)

			// An RR with empty Data deletes the whole RRset of that type;
			// other types at the name stay.
			whole := libdns.RR{Name: "_25._tcp.test-delete", Type: "TLSA"}
			out, err = p.DeleteRecords(ctx, zoneLibdns, []libdns.Record{whole})
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != 1 || out[0].RR() != whole {
				t.Fatalf("DeleteRecords returned %+v, want [%+v]", out, whole)
			}
			wantRecords(t, ctx, p, "_25._tcp.test-delete", "TLSA")
			wantRecords(t, ctx, p, "test-delete", "TXT", txt)

			// Deleting a record that is not there succeeds and changes
			// nothing. libdns's contract says DeleteRecords returns the
			// records that were deleted, but rfc2136 v1.0.1 returns its
			// input: an RFC 2136 delete of an absent RR is a no-op that the
			// server answers NOERROR without saying what it removed. So the
			// returned list is no proof of a change; tlsactl verifies by
			// querying the servers instead.
			absent := tlsaRR("_25._tcp.test-delete", ttl, "3 1 1 "+hexC)
			out, err = p.DeleteRecords(ctx, zoneLibdns, []libdns.Record{absent})
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != 1 {
				t.Fatalf("DeleteRecords of an absent record returned %+v", out)
			}
			wantRecords(t, ctx, p, "_25._tcp.test-delete", "TLSA")
			wantRecords(t, ctx, p, "test-delete", "TXT", txt)
		})

		t.Run("get", func(t *testing.T) {
			all, err := p.GetRecords(ctx, zoneLibdns)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range all {
				rr := r.RR()
				if rr.Name == "" || rr.Type == "" {
					t.Errorf("record without name or type: %+v", rr)
				}
				if strings.HasSuffix(rr.Name, ".") {
					t.Errorf("record name %q is not relative to the zone", rr.Name)
				}
			}
		})
	})
}
