package providers_test

// The RFC 2136 adapter against three real, DNSSEC-signed primaries: Knot,
// BIND 9 and PowerDNS (internal/testbed). The servers start once for the
// package, on first use, and stop in TestMain; every test has its own zone.
//
// What github.com/libdns/rfc2136 v1.0.1 sends (read from its provider.go, and
// checked on the wire by TestRFC2136OneUpdateMessage):
//   - SetRecords: ONE UPDATE message whose update section first deletes every
//     RRset named in the input (name+type, class ANY) and then adds every
//     input record. RFC 2136 §3.4 makes a server apply an UPDATE message
//     atomically, so replacing a TLSA RRset is atomic: a resolver never sees
//     the RRset empty or half-replaced. Records of several RRsets in one call
//     are still one message.
//   - AppendRecords and DeleteRecords: one UPDATE message each, for all
//     records passed.
//   - GetRecords: a TSIG-signed AXFR; it also returns RRSIG, NSEC, DNSKEY,
//     NSEC3PARAM, … of a signed zone (GetTLSA filters them).
//   - It sends no prerequisites, so SetRecords does not check that the RRset
//     is still what the caller read: it replaces whatever is there.
//   - DeleteRecords returns its input, not what the server removed: RFC 2136
//     deletes of absent records are no-ops answered NOERROR.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
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

// Zones every test server serves, one per test.
const (
	zoneRFC2136 = "rfc2136.test."
	zoneRefuse  = "refuse.test."
	zoneLibdns  = "libdns.test."
	zoneCAS     = "cas.test." // conditional_test.go
)

func testZones() []testbed.Zone {
	return []testbed.Zone{
		{Name: zoneRFC2136, Signed: true, Records: []string{"mail A 127.0.0.1"}},
		{Name: zoneRefuse, Signed: true, Records: []string{
			"mail A 127.0.0.1",
			"_25._tcp.mail TLSA " + rec(3, 1, 1, 0xaa).String(),
			"_25._tcp.mail TLSA " + rec(2, 1, 1, 0xbb).String(),
		}},
		{Name: zoneLibdns, Signed: true},
		{Name: zoneCAS, Signed: true, Records: []string{"mail A 127.0.0.1", `keep TXT "untouched"`}},
	}
}

// authServer is one running primary.
type authServer struct {
	name string
	addr string
	key  testbed.TSIGKey
	log  func() string
}

// bed holds the servers shared by the package's tests; TestMain stops them.
var bed struct {
	once    sync.Once
	servers []authServer
	stops   []func() error
	dirs    []string
	err     error
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, stop := range bed.stops {
		if err := stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	for _, d := range bed.dirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

// servers returns Knot, BIND and PowerDNS, each serving testZones(),
// starting them on first use. Missing binaries skip the test, or fail it
// under CI=true.
func servers(t *testing.T) []authServer {
	t.Helper()
	testbed.Require(t, "knotd", "knot")
	testbed.Require(t, "named", "bind9")
	testbed.Require(t, "pdns_server", "pdns-server")
	testbed.Require(t, "pdnsutil", "pdns-server")
	testbed.Require(t, "sqlite3", "sqlite3")
	bed.once.Do(startServers)
	if bed.err != nil {
		t.Fatal(bed.err)
	}
	return bed.servers
}

func startServers() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	starts := []func(dir string) (authServer, func() error, error){
		func(dir string) (authServer, func() error, error) {
			k, err := testbed.StartKnot(ctx, dir, testbed.KnotConfig{Zones: testZones()})
			if err != nil {
				return authServer{}, nil, err
			}
			return authServer{"knot", k.Addr, k.Key, k.Log}, k.Stop, nil
		},
		func(dir string) (authServer, func() error, error) {
			b, err := testbed.StartBIND(ctx, dir, testbed.BINDConfig{Zones: testZones()})
			if err != nil {
				return authServer{}, nil, err
			}
			return authServer{"bind", b.Addr, b.Key, b.Log}, b.Stop, nil
		},
		func(dir string) (authServer, func() error, error) {
			d, err := testbed.StartPowerDNS(ctx, dir, testbed.PowerDNSConfig{Zones: testZones()})
			if err != nil {
				return authServer{}, nil, err
			}
			return authServer{"pdns", d.Addr, d.Key, d.Log}, d.Stop, nil
		},
	}
	type result struct {
		s    authServer
		stop func() error
		err  error
	}
	results := make([]result, len(starts))
	var wg sync.WaitGroup
	for i, start := range starts {
		dir, err := os.MkdirTemp("", "tlsactl-providers-")
		if err != nil {
			bed.err = err
			return
		}
		bed.dirs = append(bed.dirs, dir)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, stop, err := start(dir)
			results[i] = result{s, stop, err}
		}()
	}
	wg.Wait()
	var errs []error
	for _, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		bed.servers = append(bed.servers, r.s)
		bed.stops = append(bed.stops, r.stop)
	}
	bed.err = errors.Join(errs...)
}

// forEachServer runs f as a parallel subtest per server; the server's log
// is printed when the subtest fails.
func forEachServer(t *testing.T, f func(t *testing.T, s authServer)) {
	for _, s := range servers(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("%s log (tail):\n%s", s.name, tailString(s.log(), 4000))
				}
			})
			f(t, s)
		})
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rec returns a TLSA record whose association data is 32 bytes b.
func rec(u, s, m uint8, b byte) tlsa.Record {
	return tlsa.Record{Usage: tlsa.Usage(u), Selector: tlsa.Selector(s), MatchingType: tlsa.MatchingType(m), Data: bytes.Repeat([]byte{b}, 32)}
}

// newProvider builds the rfc2136 provider the way tlsactl does: server
// setting plus a key file as tsig-keygen writes it.
func newProvider(t *testing.T, addr string, key testbed.TSIGKey) providers.Provider {
	t.Helper()
	p, err := providers.New("rfc2136", providers.Settings{Values: map[string]string{"server": addr, "tsig_key_file": key.KeyFile(t)}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func recordStrings(rs []tlsa.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	sort.Strings(out)
	return out
}

func sameRecords(a, b []tlsa.Record) bool {
	x, y := recordStrings(a), recordStrings(b)
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

// servedTLSA asks the server directly (DO bit) for the TLSA RRset at owner.
// It returns the records and an error when the answer is not signed: a
// non-empty RRset must be covered by an RRSIG(TLSA), an empty one must come
// with a signed denial (RRSIG in the authority section).
func servedTLSA(ctx context.Context, addr, owner string) ([]tlsa.Record, error) {
	r, err := testbed.Query(ctx, addr, owner, dns.TypeTLSA)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("TLSA %s: rcode %s", owner, dns.RcodeToString[r.Rcode])
	}
	var got []tlsa.Record
	covered := false
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.TLSA:
			x, err := tlsa.ParseRecord(fmt.Sprintf("%d %d %d %s", rr.Usage, rr.Selector, rr.MatchingType, rr.Certificate))
			if err != nil {
				return nil, err
			}
			got = append(got, x)
		case *dns.RRSIG:
			if rr.TypeCovered == dns.TypeTLSA {
				covered = true
			}
		}
	}
	if len(got) > 0 && !covered {
		return got, fmt.Errorf("TLSA %s: RRset served without RRSIG", owner)
	}
	if len(got) == 0 {
		signed := false
		for _, rr := range r.Ns {
			if _, ok := rr.(*dns.RRSIG); ok {
				signed = true
			}
		}
		if !signed {
			return nil, fmt.Errorf("TLSA %s: denial without RRSIG", owner)
		}
	}
	return got, nil
}

// waitServed polls the server until it serves exactly want, signed.
func waitServed(t *testing.T, ctx context.Context, addr, owner string, want []tlsa.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var last error
	for {
		got, err := servedTLSA(ctx, addr, owner)
		if err == nil && sameRecords(got, want) {
			return
		}
		if err == nil {
			err = fmt.Errorf("served %q, want %q", recordStrings(got), recordStrings(want))
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("TLSA %s at %s: %v", owner, addr, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkGetTLSA checks that GetTLSA returns exactly want (and its TTL).
func checkGetTLSA(t *testing.T, ctx context.Context, p providers.Provider, zone, owner string, want []tlsa.Record, ttl time.Duration) {
	t.Helper()
	got, err := providers.GetTLSA(ctx, p, zone, owner)
	if err != nil {
		t.Fatal(err)
	}
	if got.Owner != dns.Fqdn(owner) {
		t.Errorf("GetTLSA owner = %q, want %q", got.Owner, dns.Fqdn(owner))
	}
	if !sameRecords(got.Records, want) {
		t.Fatalf("GetTLSA = %q, want %q", recordStrings(got.Records), recordStrings(want))
	}
	if len(want) > 0 && got.TTL != ttl {
		t.Errorf("GetTLSA TTL = %v, want %v", got.TTL, ttl)
	}
}

func soaSerial(t *testing.T, ctx context.Context, addr, zone string) uint32 {
	t.Helper()
	r, err := testbed.Query(ctx, addr, zone, dns.TypeSOA)
	if err != nil {
		t.Fatal(err)
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa.Serial
		}
	}
	t.Fatalf("no SOA for %s: %v", zone, r)
	return 0
}

func TestRFC2136(t *testing.T) {
	t.Parallel()
	const owner = "_25._tcp.mail." + zoneRFC2136
	a, b, c, d := rec(3, 1, 1, 0x11), rec(2, 1, 1, 0x22), rec(3, 1, 1, 0x33), rec(2, 1, 1, 0x44)
	steps := []struct {
		name string
		ttl  time.Duration
		do   func(ctx context.Context, p providers.Provider, current providers.RRSet) error
		want []tlsa.Record
	}{
		{"add", time.Minute, func(ctx context.Context, p providers.Provider, _ providers.RRSet) error {
			recs, err := providers.LibdnsRecords(providers.RRSet{Owner: owner, TTL: time.Minute, Records: []tlsa.Record{a}}, zoneRFC2136)
			if err != nil {
				return err
			}
			_, err = p.AppendRecords(ctx, zoneRFC2136, recs)
			return err
		}, []tlsa.Record{a}},
		{"add second", time.Minute, func(ctx context.Context, p providers.Provider, _ providers.RRSet) error {
			recs, err := providers.LibdnsRecords(providers.RRSet{Owner: owner, TTL: time.Minute, Records: []tlsa.Record{b}}, zoneRFC2136)
			if err != nil {
				return err
			}
			_, err = p.AppendRecords(ctx, zoneRFC2136, recs)
			return err
		}, []tlsa.Record{a, b}},
		{"replace", 2 * time.Minute, func(ctx context.Context, p providers.Provider, cur providers.RRSet) error {
			want := providers.RRSet{Owner: owner, TTL: 2 * time.Minute, Records: []tlsa.Record{c, d}}
			done, err := providers.SetTLSA(ctx, p, zoneRFC2136, cur, want)
			if err == nil && len(done) != 2 {
				err = fmt.Errorf("SetTLSA reported %d records written, want 2", len(done))
			}
			return err
		}, []tlsa.Record{c, d}},
		{"replace keeping one", 2 * time.Minute, func(ctx context.Context, p providers.Provider, cur providers.RRSet) error {
			want := providers.RRSet{Owner: owner, TTL: 2 * time.Minute, Records: []tlsa.Record{c, b}}
			_, err := providers.SetTLSA(ctx, p, zoneRFC2136, cur, want)
			return err
		}, []tlsa.Record{c, b}},
		{"remove", 0, func(ctx context.Context, p providers.Provider, cur providers.RRSet) error {
			done, err := providers.SetTLSA(ctx, p, zoneRFC2136, cur, providers.RRSet{Owner: owner})
			if err == nil && len(done) != 2 {
				err = fmt.Errorf("SetTLSA reported %d records deleted, want 2", len(done))
			}
			return err
		}, nil},
		{"remove again is a no-op", 0, func(ctx context.Context, p providers.Provider, cur providers.RRSet) error {
			done, err := providers.SetTLSA(ctx, p, zoneRFC2136, cur, providers.RRSet{Owner: owner})
			if err == nil && len(done) != 0 {
				err = fmt.Errorf("SetTLSA on an empty RRset reported %d records", len(done))
			}
			return err
		}, nil},
		{"set from empty", 5 * time.Minute, func(ctx context.Context, p providers.Provider, cur providers.RRSet) error {
			want := providers.RRSet{Owner: owner, TTL: 5 * time.Minute, Records: []tlsa.Record{a, d}}
			_, err := providers.SetTLSA(ctx, p, zoneRFC2136, cur, want)
			return err
		}, []tlsa.Record{a, d}},
	}
	forEachServer(t, func(t *testing.T, s authServer) {
		ctx := testCtx(t)
		p := newProvider(t, s.addr, s.key)

		// The zone transfer behind GetRecords returns the DNSSEC records
		// too; GetTLSA must filter them.
		all, err := p.GetRecords(ctx, zoneRFC2136)
		if err != nil {
			t.Fatal(err)
		}
		types := map[string]bool{}
		for _, r := range all {
			types[r.RR().Type] = true
		}
		if !types["RRSIG"] || !types["DNSKEY"] {
			t.Fatalf("zone transfer of a signed zone without RRSIG/DNSKEY: types %v", types)
		}
		// Start empty even when the servers outlive a run (-count=N).
		if cur, err := providers.GetTLSA(ctx, p, zoneRFC2136, owner); err != nil {
			t.Fatal(err)
		} else if _, err := providers.SetTLSA(ctx, p, zoneRFC2136, cur, providers.RRSet{Owner: owner}); err != nil {
			t.Fatal(err)
		}
		checkGetTLSA(t, ctx, p, zoneRFC2136, owner, nil, 0)

		for _, step := range steps {
			cur, err := providers.GetTLSA(ctx, p, zoneRFC2136, owner)
			if err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			if err := step.do(ctx, p, cur); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			waitServed(t, ctx, s.addr, owner, step.want)
			checkGetTLSA(t, ctx, p, zoneRFC2136, owner, step.want, step.ttl)
		}
		// Other names and types are untouched.
		r, err := testbed.Query(ctx, s.addr, "mail."+zoneRFC2136, dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		var as []string
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				as = append(as, a.A.String())
			}
		}
		if len(as) != 1 || as[0] != "127.0.0.1" {
			t.Fatalf("mail A changed: %v", r)
		}
	})
}

// TestRFC2136Refused: updates without a key, with a wrong secret or with a
// key the server does not know are refused with a clear error that holds no
// secret, and leave the zone exactly as it was.
func TestRFC2136Refused(t *testing.T) {
	t.Parallel()
	const owner = "_25._tcp.mail." + zoneRefuse
	before := []tlsa.Record{rec(3, 1, 1, 0xaa), rec(2, 1, 1, 0xbb)}
	want := providers.RRSet{Owner: owner, TTL: time.Minute, Records: []tlsa.Record{rec(3, 1, 1, 0xcc)}}
	forEachServer(t, func(t *testing.T, s authServer) {
		ctx := testCtx(t)
		waitServed(t, ctx, s.addr, owner, before)
		serial := soaSerial(t, ctx, s.addr, zoneRefuse)
		good := newProvider(t, s.addr, s.key)
		current, err := providers.GetTLSA(ctx, good, zoneRefuse, owner)
		if err != nil {
			t.Fatal(err)
		}
		if !sameRecords(current.Records, before) {
			t.Fatalf("GetTLSA = %q, want %q", recordStrings(current.Records), recordStrings(before))
		}

		wrongSecret := testbed.NewTSIGKey(s.key.Name) // same name, another secret
		unknownKey := testbed.NewTSIGKey("not-configured-key")
		secrets := []string{s.key.Secret, wrongSecret.Secret, unknownKey.Secret}

		unchanged := func(t *testing.T) {
			t.Helper()
			got, err := servedTLSA(ctx, s.addr, owner)
			if err != nil {
				t.Fatal(err)
			}
			if !sameRecords(got, before) {
				t.Fatalf("zone changed by a refused update: served %q, want %q", recordStrings(got), recordStrings(before))
			}
			if now := soaSerial(t, ctx, s.addr, zoneRefuse); now != serial {
				t.Fatalf("SOA serial changed from %d to %d by a refused update", serial, now)
			}
			checkGetTLSA(t, ctx, good, zoneRefuse, owner, before, time.Minute)
		}
		noSecret := func(t *testing.T, err error) {
			t.Helper()
			for _, sec := range secrets {
				if strings.Contains(err.Error(), sec) {
					t.Fatalf("error contains a TSIG secret: %v", err)
				}
			}
		}

		t.Run("no key", func(t *testing.T) {
			add, del := []dns.RR{mustTLSA(t, owner, want.Records[0])}, []dns.RR{mustTLSA(t, owner, before[0])}
			err := testbed.SendUpdate(ctx, s.addr, zoneRefuse, nil, add, del)
			var re *testbed.RcodeError
			if !errors.As(err, &re) || (re.Rcode != dns.RcodeRefused && re.Rcode != dns.RcodeNotAuth) {
				t.Fatalf("unsigned update: want REFUSED or NOTAUTH, got %v", err)
			}
			t.Logf("refused: %v", err)
			unchanged(t)
		})
		for _, tc := range []struct {
			name string
			key  testbed.TSIGKey
		}{{"wrong secret", wrongSecret}, {"unknown key", unknownKey}} {
			t.Run(tc.name, func(t *testing.T) {
				bad := newProvider(t, s.addr, tc.key)
				_, err := providers.SetTLSA(ctx, bad, zoneRefuse, current, want)
				if err == nil {
					t.Fatal("SetTLSA with a bad key succeeded")
				}
				noSecret(t, err)
				checkClearTSIGError(t, err, s.addr, tc.key.Name)
				t.Logf("SetTLSA: %v", err)
				// A delete is refused as well.
				_, err = providers.SetTLSA(ctx, bad, zoneRefuse, current, providers.RRSet{Owner: owner})
				if err == nil {
					t.Fatal("deleting with a bad key succeeded")
				}
				noSecret(t, err)
				// Reading (zone transfer) is refused too.
				_, err = providers.GetTLSA(ctx, bad, zoneRefuse, owner)
				if err == nil {
					t.Fatal("GetTLSA with a bad key succeeded")
				}
				noSecret(t, err)
				checkClearTSIGError(t, err, s.addr, tc.key.Name)
				t.Logf("GetTLSA: %v", err)
				unchanged(t)
			})
		}
	})
}

// checkClearTSIGError wants an error that names the server and the key and
// says the server rejected or refused it, not just "failed".
func checkClearTSIGError(t *testing.T, err error, server, keyName string) {
	t.Helper()
	msg := err.Error()
	if !strings.Contains(msg, server) || !strings.Contains(msg, "TSIG key "+strings.TrimSuffix(keyName, ".")) {
		t.Errorf("error does not name the server %s and TSIG key %s: %v", server, keyName, err)
	}
	if !strings.Contains(msg, "rejected the TSIG key") && !strings.Contains(msg, "server refused") {
		t.Errorf("error does not say the key was rejected: %v", err)
	}
}

func mustTLSA(t *testing.T, owner string, r tlsa.Record) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(dns.Fqdn(owner) + " 60 IN TLSA " + r.String())
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

// TestRFC2136OneUpdateMessage records what the adapter puts on the wire: a
// SetTLSA replacing an RRset is ONE signed UPDATE message that deletes the
// RRset and adds the new records (atomic per RFC 2136 §3.4), and an empty
// want is one message deleting exactly the current records.
func TestRFC2136OneUpdateMessage(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	key := testbed.NewTSIGKey("wire-key")
	x := newWireServer(t, key) // conditional_test.go
	p := newProvider(t, x.addr, key)

	const zone, owner = "wire.test.", "_25._tcp.mail.wire.test."
	cur := providers.RRSet{Owner: owner, TTL: time.Minute, Records: []tlsa.Record{rec(3, 1, 1, 1), rec(2, 1, 1, 2)}}
	want := providers.RRSet{Owner: owner, TTL: time.Minute, Records: []tlsa.Record{rec(3, 1, 1, 3), rec(2, 1, 1, 4)}}
	if _, err := providers.SetTLSA(ctx, p, zone, cur, want); err != nil {
		t.Fatal(err)
	}
	if _, err := providers.SetTLSA(ctx, p, zone, want, providers.RRSet{Owner: owner}); err != nil {
		t.Fatal(err)
	}
	msgs, _ := x.received()
	if len(msgs) != 2 {
		t.Fatalf("server got %d messages, want 2 (one per SetTLSA)", len(msgs))
	}
	set, del := msgs[0], msgs[1]
	for _, m := range msgs {
		if m.Opcode != dns.OpcodeUpdate || len(m.Question) != 1 || m.Question[0].Name != zone || len(m.Answer) != 0 {
			t.Fatalf("not an UPDATE of %s without prerequisites:\n%v", zone, m)
		}
	}
	// Replace: delete-RRset entries (class ANY, type TLSA, no rdata) strictly
	// before the additions (class IN), all in the one message.
	var adds []string
	seenAdd := false
	for _, rr := range set.Ns {
		h := rr.Header()
		if h.Name != owner || h.Rrtype != dns.TypeTLSA && h.Rrtype != dns.TypeANY {
			t.Fatalf("unexpected update RR %v", rr)
		}
		switch h.Class {
		case dns.ClassANY:
			if seenAdd || h.Rrtype != dns.TypeTLSA || h.Rdlength != 0 {
				t.Fatalf("RRset deletion %v out of place in\n%v", rr, set)
			}
		case dns.ClassINET:
			seenAdd = true
			adds = append(adds, rr.(*dns.TLSA).Certificate)
		default:
			t.Fatalf("unexpected class in %v", rr)
		}
	}
	if len(adds) != 2 || adds[0] != want.Records[0].String()[6:] || adds[1] != want.Records[1].String()[6:] {
		t.Fatalf("additions %q, want the two new records", adds)
	}
	// Remove: deletes exactly the current records (class NONE), nothing else.
	if len(del.Ns) != 2 {
		t.Fatalf("delete message has %d RRs, want 2:\n%v", len(del.Ns), del)
	}
	for i, rr := range del.Ns {
		tl, ok := rr.(*dns.TLSA)
		if !ok || tl.Hdr.Class != dns.ClassNONE || tl.Certificate != want.Records[i].String()[6:] {
			t.Fatalf("delete RR %d = %v, want class NONE TLSA %s", i, rr, want.Records[i])
		}
	}
	var _ libdns.Record = libdns.RR{} // the adapter speaks libdns records
}
