package providers_test

// SetTLSABatch against a real, DNSSEC-signed Knot (RFC 2136 with TSIG): a
// CA migration publishes the new CA's 2 1 1 at many owners of one zone in
// ONE UPDATE message. The provider reaches Knot through a counting TCP
// proxy on loopback (libdns/rfc2136 sends every message over TCP), which
// keeps a copy of every UPDATE: the wire-level proof, independent of the
// SOA serial (Knot may fold several queued UPDATE messages into one
// zone change, so serial+1 alone does not prove one message).

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/providers"
	"github.com/tlsactl/tlsactl/tlsa"
)

const zoneBatch = "batch.test."

// updateProxy is a TCP proxy on loopback in front of a DNS server that keeps
// a copy of every UPDATE message passing through it.
type updateProxy struct {
	addr string

	mu      sync.Mutex
	updates []*dns.Msg
	conns   map[net.Conn]bool
}

func newUpdateProxy(t *testing.T, upstream string) *updateProxy {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x := &updateProxy{addr: l.Addr().String(), conns: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			x.mu.Lock()
			x.conns[c] = true
			x.mu.Unlock()
			wg.Go(func() { x.serve(c, upstream) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		x.mu.Lock()
		for c := range x.conns {
			c.Close()
		}
		x.mu.Unlock()
		wg.Wait()
	})
	return x
}

// serve relays one client connection: client to server message by message
// (RFC 1035 §4.2.2 framing), server to client as a byte stream.
func (x *updateProxy) serve(client net.Conn, upstream string) {
	defer func() {
		client.Close()
		x.mu.Lock()
		delete(x.conns, client)
		x.mu.Unlock()
	}()
	server, err := net.DialTimeout("tcp", upstream, 5*time.Second)
	if err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(client, server)
		client.Close()
	}()
	for {
		var n [2]byte
		if _, err := io.ReadFull(client, n[:]); err != nil {
			break
		}
		buf := make([]byte, 2+int(binary.BigEndian.Uint16(n[:])))
		copy(buf, n[:])
		if _, err := io.ReadFull(client, buf[2:]); err != nil {
			break
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf[2:]); err == nil && m.Opcode == dns.OpcodeUpdate {
			x.mu.Lock()
			x.updates = append(x.updates, m)
			x.mu.Unlock()
		}
		if _, err := server.Write(buf); err != nil {
			break
		}
	}
	server.Close()
	<-done
}

// Updates returns copies of the UPDATE messages seen so far.
func (x *updateProxy) Updates() []*dns.Msg {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.updates)
}

// batchBed is one Knot serving zoneBatch, a provider that reaches it through
// the proxy and one that reaches it directly (for reading).
type batchBed struct {
	knot   *testbed.Knot
	proxy  *updateProxy
	prov   providers.Provider // through proxy
	direct providers.Provider
	auth   []providers.AuthServer
}

var batchOwners = func() []string {
	var out []string
	for _, h := range []string{"h1", "h2", "h3", "h4", "h5"} {
		out = append(out, "_25._tcp."+h+"."+zoneBatch)
	}
	return out
}()

func newBatchBed(t *testing.T) *batchBed {
	t.Helper()
	k := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{{Name: zoneBatch, Signed: true, Records: []string{
		"mail A 127.0.0.1",
		`keep TXT "untouched"`,
		"_25._tcp.keep 300 TLSA " + rec(3, 1, 1, 0x0b).String(),
		"_465._tcp.h1 TLSA " + rec(3, 1, 1, 0x0c).String(), // another port of a batched host
		"_25._tcp.h1 TLSA " + rec(3, 1, 1, 0x01).String(),  // replaced by the batch
		"_25._tcp.h2 TLSA " + rec(3, 1, 1, 0x02).String(),
		"_25._tcp.h2 TLSA " + rec(2, 1, 1, 0x0e).String(), // the old CA
	}}}})
	proxy := newUpdateProxy(t, k.Addr)
	ap := netip.MustParseAddrPort(k.Addr)
	return &batchBed{knot: k, proxy: proxy, prov: newProvider(t, proxy.addr, k.Key), direct: newProvider(t, k.Addr, k.Key),
		auth: []providers.AuthServer{{Name: "ns." + zoneBatch, Addrs: []netip.AddrPort{ap}}}}
}

// zoneData is the zone as a zone transfer returns it, without SOA and
// DNSSEC records (which any change rewrites), as sorted "name type data".
func (b *batchBed) zoneData(t *testing.T, ctx context.Context) []string {
	t.Helper()
	recs, err := b.direct.GetRecords(ctx, zoneBatch)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		rr := r.RR()
		switch rr.Type {
		case "SOA", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DNSKEY", "CDS", "CDNSKEY":
			continue
		}
		out = append(out, strings.ToLower(libdns.AbsoluteName(rr.Name, zoneBatch))+" "+rr.TTL.String()+" "+rr.Type+" "+strings.ToLower(rr.Data))
	}
	slices.Sort(out)
	return out
}

// served reads every batched owner at Knot (ObserveTLSA: as served, with
// the RRSIG check) and fails unless each serves want[owner] exactly,
// validly signed.
func (b *batchBed) served(t *testing.T, ctx context.Context, want map[string][]tlsa.Record) {
	t.Helper()
	for _, owner := range batchOwners {
		states, err := providers.ObserveTLSA(ctx, b.auth, owner, providers.PropagationOptions{Zone: zoneBatch, QueryTimeout: 2 * time.Second})
		if err != nil || len(states) != 1 {
			t.Fatalf("ObserveTLSA(%s) = %+v, %v", owner, states, err)
		}
		s := states[0]
		if s.Err != nil || !sameRecords(s.Records, want[owner]) {
			t.Errorf("%s serves %q (err %v), want %q", owner, recordStrings(s.Records), s.Err, recordStrings(want[owner]))
		}
		if len(want[owner]) > 0 && (!s.Signed || s.SigErr != nil) {
			t.Errorf("%s: signed %v, RRSIG: %v", owner, s.Signed, s.SigErr)
		}
	}
}

func (b *batchBed) serial(t *testing.T, ctx context.Context) uint32 {
	t.Helper()
	s, err := b.knot.Serial(ctx, zoneBatch)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSetTLSABatch(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := newBatchBed(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("knot log (tail):\n%s", tailString(b.knot.Log(), 4000))
		}
	})

	before := map[string][]tlsa.Record{
		batchOwners[0]: {rec(3, 1, 1, 0x01)},
		batchOwners[1]: {rec(3, 1, 1, 0x02), rec(2, 1, 1, 0x0e)},
	}
	b.served(t, ctx, before)

	// The migration: every host keeps its 3 1 1 (if any) and gets the new
	// CA's 2 1 1; h2 drops the old CA's. h5 is given in another case and
	// without the trailing dot.
	newCA := rec(2, 1, 1, 0xca)
	want := map[string][]tlsa.Record{
		batchOwners[0]: {rec(3, 1, 1, 0x01), newCA},
		batchOwners[1]: {rec(3, 1, 1, 0x02), newCA},
		batchOwners[2]: {newCA},
		batchOwners[3]: {rec(3, 1, 1, 0x04), newCA},
		batchOwners[4]: {newCA},
	}
	var sets []providers.RRSet
	for i, owner := range batchOwners {
		name := owner
		if i == 4 {
			name = "_25._TCP.H5.Batch.Test"
		}
		sets = append(sets, providers.RRSet{Owner: name, TTL: 2 * time.Minute, Records: want[owner]})
	}
	// Zone data of the batched TLSA RRsets, and all other zone data.
	batched := func(s string) bool {
		return slices.ContainsFunc(batchOwners, func(o string) bool { return strings.HasPrefix(s, o+" ") }) && strings.Contains(s, " TLSA ")
	}
	others := func(all []string) []string { return slices.DeleteFunc(slices.Clone(all), batched) }
	zone0 := b.zoneData(t, ctx)
	serial0 := b.serial(t, ctx)

	done, err := providers.SetTLSABatch(ctx, b.prov, zoneBatch, sets)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, recs := range want {
		total += len(recs)
	}
	if len(done) != total {
		t.Errorf("SetTLSABatch reported %d records written, want %d", len(done), total)
	}

	// (a) Every owner serves exactly its records, validly signed, with the
	// TTL asked for.
	for _, owner := range batchOwners {
		p, err := providers.WaitPropagated(ctx, b.auth, providers.RRSet{Owner: owner, TTL: 2 * time.Minute, Records: want[owner]},
			providers.PropagationOptions{Zone: zoneBatch, ExactTTL: true, Interval: 50 * time.Millisecond, Timeout: 15 * time.Second, QueryTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if a := p.Addrs[0]; !a.Signed || a.SigErr != nil {
			t.Errorf("%s: signed %v, RRSIG: %v", owner, a.Signed, a.SigErr)
		}
		checkGetTLSA(t, ctx, b.direct, zoneBatch, owner, want[owner], 2*time.Minute)
	}
	b.served(t, ctx, want)

	// (b) One UPDATE message: on the wire, and one zone change (serial+1).
	ups := b.proxy.Updates()
	if len(ups) != 1 {
		t.Fatalf("the proxy saw %d UPDATE messages, want 1", len(ups))
	}
	checkBatchMessage(t, ups[0], want)
	if s := b.serial(t, ctx); s != serial0+1 {
		t.Errorf("SOA serial went from %d to %d, want +1 (one update)", serial0, s)
	}
	// Knot's own count: "[zone] DDNS, processing N updates" per zone
	// change, N the UPDATE messages it applied together.
	applied := 0
	for _, m := range regexp.MustCompile(`\[`+regexp.QuoteMeta(zoneBatch)+`\] DDNS, processing (\d+) updates?`).FindAllStringSubmatch(b.knot.Log(), -1) {
		n, _ := strconv.Atoi(m[1])
		applied += n
	}
	if applied != 1 {
		t.Errorf("Knot logged %d UPDATE messages applied, want 1", applied)
	}

	// (c) Nothing else in the zone changed; the batched owners hold
	// nothing but their TLSA RRsets.
	zone1 := b.zoneData(t, ctx)
	if o0, o1 := others(zone0), others(zone1); !slices.Equal(o0, o1) {
		t.Errorf("records outside the batch changed:\nbefore %q\nafter  %q", o0, o1)
	}
	if n := len(zone1) - len(others(zone1)); n != total {
		t.Errorf("%d batched TLSA records in the zone, want %d: %q", n, total, zone1)
	}

	// (d) Bad input: refused before anything is sent.
	next := rec(2, 1, 1, 0xcb)
	good := providers.RRSet{Owner: batchOwners[0], TTL: time.Minute, Records: []tlsa.Record{next}}
	for _, tc := range []struct {
		name    string
		sets    []providers.RRSet
		wantErr string
	}{
		{"owner outside zone", []providers.RRSet{good, {Owner: "_25._tcp.mail.other.test.", Records: []tlsa.Record{next}}},
			"setting TLSA: _25._tcp.mail.other.test. is not in zone batch.test."},
		{"owner is a parent zone", []providers.RRSet{good, {Owner: "test.", Records: []tlsa.Record{next}}},
			"setting TLSA: test. is not in zone batch.test."},
		{"empty set", []providers.RRSet{good, {Owner: batchOwners[1], TTL: time.Minute}},
			"setting TLSA in zone batch.test.: the RRset for _25._tcp.h2.batch.test. is empty (a batch only replaces RRsets; delete with SetTLSA)"},
		{"duplicate owner", []providers.RRSet{good, {Owner: batchOwners[1], Records: []tlsa.Record{next}}, {Owner: "_25._tcp.H1.batch.test", Records: []tlsa.Record{next}}},
			"setting TLSA in zone batch.test.: _25._tcp.h1.batch.test. is given twice"},
		{"no sets", nil, "setting TLSA in zone batch.test.: no RRsets given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done, err := providers.SetTLSABatch(ctx, b.prov, zoneBatch, tc.sets)
			if err == nil || err.Error() != tc.wantErr || done != nil {
				t.Fatalf("SetTLSABatch = %v, %v\nwant error %s", done, err, tc.wantErr)
			}
			if n := len(b.proxy.Updates()); n != 1 {
				t.Errorf("an UPDATE was sent for a refused batch (%d messages in all)", n)
			}
			if s := b.serial(t, ctx); s != serial0+1 {
				t.Errorf("SOA serial changed from %d to %d", serial0+1, s)
			}
			b.served(t, ctx, want)
		})
	}

	// (e) A batch the server refuses (wrong TSIG key) changes no owner.
	t.Run("refused", func(t *testing.T) {
		for _, key := range []testbed.TSIGKey{testbed.NewTSIGKey(b.knot.Key.Name), testbed.NewTSIGKey("not-configured-key")} {
			bad := newProvider(t, b.proxy.addr, key)
			var sets []providers.RRSet
			for _, owner := range batchOwners {
				sets = append(sets, providers.RRSet{Owner: owner, TTL: time.Minute, Records: []tlsa.Record{next}})
			}
			sent := len(b.proxy.Updates())
			_, err := providers.SetTLSABatch(ctx, bad, zoneBatch, sets)
			if err == nil {
				t.Fatalf("a batch with TSIG key %s (not the server's) succeeded", key.Name)
			}
			t.Logf("refused: %v", err)
			if !strings.HasPrefix(err.Error(), "setting TLSA at "+strings.Join(batchOwners, ", ")+": ") || strings.Contains(err.Error(), "\n") ||
				strings.Contains(err.Error(), key.Secret) {
				t.Errorf("error does not name every owner on one line (or holds the secret): %v", err)
			}
			checkClearTSIGError(t, err, b.proxy.addr, key.Name)
			if n := len(b.proxy.Updates()); n != sent+1 {
				t.Errorf("the refused batch was %d UPDATE messages, want 1", n-sent)
			}
			if s := b.serial(t, ctx); s != serial0+1 {
				t.Errorf("SOA serial changed from %d to %d by a refused batch", serial0+1, s)
			}
			b.served(t, ctx, want)
			if z := b.zoneData(t, ctx); !slices.Equal(z, zone1) {
				t.Errorf("a refused batch changed the zone:\nbefore %q\nafter  %q", zone1, z)
			}
		}
	})
}

// checkBatchMessage checks the one UPDATE of a batch: for zoneBatch, no
// prerequisites, a delete of each owner's TLSA RRset (class ANY) strictly
// before the additions, and exactly want's records added.
func checkBatchMessage(t *testing.T, m *dns.Msg, want map[string][]tlsa.Record) {
	t.Helper()
	if len(m.Question) != 1 || m.Question[0].Name != zoneBatch || len(m.Answer) != 0 {
		t.Fatalf("not an UPDATE of %s without prerequisites:\n%v", zoneBatch, m)
	}
	deleted := map[string]bool{}
	added := map[string][]tlsa.Record{}
	seenAdd := false
	for _, rr := range m.Ns {
		h := rr.Header()
		owner := strings.ToLower(h.Name)
		switch {
		case h.Class == dns.ClassANY && h.Rrtype == dns.TypeTLSA && h.Rdlength == 0 && !seenAdd:
			deleted[owner] = true
		case h.Class == dns.ClassINET && h.Rrtype == dns.TypeTLSA:
			seenAdd = true
			x := rr.(*dns.TLSA)
			r, err := tlsa.ParseRecord(fmt.Sprintf("%d %d %d %s", x.Usage, x.Selector, x.MatchingType, x.Certificate))
			if err != nil {
				t.Fatal(err)
			}
			if x.Hdr.Ttl != 120 {
				t.Errorf("added %v with TTL %d, want 120", rr, x.Hdr.Ttl)
			}
			added[owner] = append(added[owner], r)
		default:
			t.Errorf("unexpected update RR %v", rr)
		}
	}
	for owner, recs := range want {
		if !deleted[owner] {
			t.Errorf("the UPDATE does not replace the TLSA RRset at %s", owner)
		}
		if !sameRecords(added[owner], recs) {
			t.Errorf("the UPDATE adds %q at %s, want %q", recordStrings(added[owner]), owner, recordStrings(recs))
		}
	}
	if len(deleted) != len(want) || len(added) != len(want) {
		t.Errorf("the UPDATE touches %d/%d owners, want %d", len(deleted), len(added), len(want))
	}
}
