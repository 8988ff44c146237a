package providers_test

// SetTLSAIf (compare-and-set of TLSA RRsets) against Knot, BIND and
// PowerDNS, each case on every server, in zone cas.test. (zoneCAS, used by
// no other test). "Someone else" is a real second writer: a plain
// TSIG-signed UPDATE sent with miekg/dns, not through tlsactl's code.
// TestSetTLSAIfWire checks the message on the wire and how response codes
// map to errors; TestSetTLSAIfFallback the unconditional fallback for
// providers that cannot check.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
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

func casOwner(host string) string { return "_25._tcp." + host + "." + zoneCAS }

// casBed is one server in a SetTLSAIf test.
type casBed struct {
	t   *testing.T
	ctx context.Context
	s   authServer
	p   providers.Provider
}

// foreign replaces the TLSA RRset at owner the way another tool would: one
// TSIG-signed UPDATE (delete the RRset, add recs) sent directly with
// miekg/dns. Empty recs delete the RRset. It returns once the server
// serves the result.
func (b *casBed) foreign(owner string, ttl uint32, recs ...tlsa.Record) {
	b.t.Helper()
	m := new(dns.Msg)
	m.SetUpdate(zoneCAS)
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeTLSA}}})
	for _, r := range recs {
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN TLSA %s", owner, ttl, r))
		if err != nil {
			b.t.Fatal(err)
		}
		m.Insert([]dns.RR{rr})
	}
	m.SetTsig(b.s.key.Name, b.s.key.Algorithm, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second, TsigSecret: map[string]string{b.s.key.Name: b.s.key.Secret}}
	r, _, err := c.ExchangeContext(b.ctx, m, b.s.addr)
	if err != nil {
		b.t.Fatalf("other writer's update of %s: %v", owner, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		b.t.Fatalf("other writer's update of %s: rcode %s", owner, dns.RcodeToString[r.Rcode])
	}
	waitServed(b.t, b.ctx, b.s.addr, owner, recs)
}

// read is what tlsactl reads before a conditional change.
func (b *casBed) read(owner string) providers.RRSet {
	b.t.Helper()
	set, err := providers.GetTLSA(b.ctx, b.p, zoneCAS, owner)
	if err != nil {
		b.t.Fatal(err)
	}
	return set
}

// setIf calls providers.SetTLSAIf and checks that it went the conditional
// way.
func (b *casBed) setIf(expect, want []providers.RRSet) error {
	b.t.Helper()
	conditional, err := providers.SetTLSAIf(b.ctx, b.p, zoneCAS, expect, want)
	if !conditional {
		b.t.Fatalf("SetTLSAIf on the rfc2136 provider was not conditional (err %v)", err)
	}
	return err
}

// zoneState is the zone as a zone transfer returns it, without SOA and
// DNSSEC records, and the SOA serial.
type zoneState struct {
	serial uint32
	data   []string
}

func (b *casBed) state() zoneState {
	b.t.Helper()
	recs, err := b.p.GetRecords(b.ctx, zoneCAS)
	if err != nil {
		b.t.Fatal(err)
	}
	var data []string
	for _, r := range recs {
		rr := r.RR()
		switch rr.Type {
		case "SOA", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DNSKEY", "CDS", "CDNSKEY", "TYPE65534":
			continue
		}
		data = append(data, strings.ToLower(libdns.AbsoluteName(rr.Name, zoneCAS))+" "+rr.TTL.String()+" "+rr.Type+" "+strings.ToLower(rr.Data))
	}
	slices.Sort(data)
	return zoneState{soaSerial(b.t, b.ctx, b.s.addr, zoneCAS), data}
}

// refused checks that err says a conditional change was refused because an
// RRset changed (wantRcode is what the server should have answered), that
// the message names the server, the key and every owner, and that the zone
// is exactly before.
func (b *casBed) refused(err error, wantRcode int, before zoneState, owners ...string) {
	b.t.Helper()
	if !errors.Is(err, providers.ErrRRsetChanged) {
		b.t.Fatalf("SetTLSAIf = %v, want an error wrapping ErrRRsetChanged", err)
	}
	b.t.Logf("%s answered: %v", b.s.name, err)
	msg := err.Error()
	for _, want := range append([]string{"RFC 2136 server " + b.s.addr + ", TSIG key " + strings.TrimSuffix(b.s.key.Name, "."),
		"nothing changed", "the server answered " + dns.RcodeToString[wantRcode]}, owners...) {
		if !strings.Contains(msg, want) {
			b.t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if strings.Contains(msg, b.s.key.Secret) {
		b.t.Errorf("error holds the TSIG secret: %v", err)
	}
	after := b.state()
	if after.serial != before.serial {
		b.t.Errorf("SOA serial changed from %d to %d by a refused change", before.serial, after.serial)
	}
	if !slices.Equal(after.data, before.data) {
		b.t.Errorf("a refused change changed the zone:\nbefore %q\nafter  %q", before.data, after.data)
	}
}

// serves checks that the server serves exactly recs at owner, signed, and
// that GetTLSA reads them with ttl.
func (b *casBed) serves(owner string, ttl time.Duration, recs ...tlsa.Record) {
	b.t.Helper()
	waitServed(b.t, b.ctx, b.s.addr, owner, recs)
	checkGetTLSA(b.t, b.ctx, b.p, zoneCAS, owner, recs, ttl)
}

func rrset(owner string, ttl time.Duration, recs ...tlsa.Record) providers.RRSet {
	return providers.RRSet{Owner: owner, TTL: ttl, Records: recs}
}

func single(s providers.RRSet) []providers.RRSet { return []providers.RRSet{s} }

func TestSetTLSAIf(t *testing.T) {
	t.Parallel()
	a, b, c, d := rec(3, 1, 1, 0xc1), rec(2, 1, 1, 0xc2), rec(3, 1, 1, 0xc3), rec(2, 1, 1, 0xc4)
	forEachServer(t, func(t *testing.T, s authServer) {
		p := newProvider(t, s.addr, s.key)
		if _, ok := p.(providers.ConditionalSetter); !ok {
			t.Fatalf("the rfc2136 provider (%T) is not a ConditionalSetter", p)
		}
		newBed := func(t *testing.T) *casBed { return &casBed{t, testCtx(t), s, p} }

		t.Run("expect holds: applied", func(t *testing.T) {
			x, owner := newBed(t), casOwner("cas1")
			x.foreign(owner, 60, a)
			cur := x.read(owner)
			if err := x.setIf(single(cur), single(rrset(owner, 2*time.Minute, b, c))); err != nil {
				t.Fatal(err)
			}
			x.serves(owner, 2*time.Minute, b, c)
		})

		t.Run("changed in between: refused", func(t *testing.T) {
			x, owner := newBed(t), casOwner("cas2")
			x.foreign(owner, 60, a)
			cur := x.read(owner)
			x.foreign(owner, 300, d) // someone else replaces it
			before := x.state()
			x.refused(x.setIf(single(cur), single(rrset(owner, time.Minute, b))), dns.RcodeNXRrset, before, owner)
			x.serves(owner, 5*time.Minute, d)

			// Someone else adds a record: the RRset is a superset of
			// what was read.
			cur = x.read(owner)
			x.foreign(owner, 300, d, c)
			before = x.state()
			x.refused(x.setIf(single(cur), single(rrset(owner, time.Minute, b))), dns.RcodeNXRrset, before, owner)
			x.serves(owner, 5*time.Minute, c, d)

			// Someone else deletes it.
			cur = x.read(owner)
			x.foreign(owner, 0)
			before = x.state()
			x.refused(x.setIf(single(cur), single(rrset(owner, time.Minute, b))), dns.RcodeNXRrset, before, owner)
			x.serves(owner, 0)
		})

		t.Run("expect empty", func(t *testing.T) {
			x, owner := newBed(t), casOwner("cas3")
			x.foreign(owner, 0)
			cur := x.read(owner)
			if len(cur.Records) != 0 {
				t.Fatalf("read %q, want nothing", recordStrings(cur.Records))
			}
			x.foreign(owner, 60, a) // someone else creates it
			before := x.state()
			x.refused(x.setIf(single(cur), single(rrset(owner, time.Minute, b))), dns.RcodeYXRrset, before, owner)
			x.serves(owner, time.Minute, a)

			x.foreign(owner, 0)
			if err := x.setIf(single(x.read(owner)), single(rrset(owner, time.Minute, b))); err != nil {
				t.Fatal(err)
			}
			x.serves(owner, time.Minute, b)
		})

		t.Run("two owners, second changed: neither changes", func(t *testing.T) {
			x, o1, o2 := newBed(t), casOwner("cas4a"), casOwner("cas4b")
			x.foreign(o1, 60, a)
			x.foreign(o2, 60, a)
			expect := []providers.RRSet{x.read(o1), x.read(o2)}
			want := []providers.RRSet{rrset(o1, time.Minute, b), rrset(o2, time.Minute, b)}
			x.foreign(o2, 60, c)
			before := x.state()
			err := x.setIf(expect, want)
			x.refused(err, dns.RcodeNXRrset, before, o1, o2)
			if !strings.Contains(err.Error(), "at least one of the TLSA RRsets at "+o1+", "+o2+" is no longer what was read") {
				t.Errorf("error does not say that one of the two changed: %v", err)
			}
			x.serves(o1, time.Minute, a)
			x.serves(o2, time.Minute, c)

			// Read again and recompute: both change, in one update.
			expect = []providers.RRSet{x.read(o1), x.read(o2)}
			if err := x.setIf(expect, want); err != nil {
				t.Fatal(err)
			}
			x.serves(o1, time.Minute, b)
			x.serves(o2, time.Minute, b)
		})

		t.Run("want empty: deleted", func(t *testing.T) {
			x, owner := newBed(t), casOwner("cas5")
			x.foreign(owner, 60, a, b)
			if err := x.setIf(single(x.read(owner)), single(rrset(owner, 0))); err != nil {
				t.Fatal(err)
			}
			x.serves(owner, 0)

			// A delete from a stale read is refused: the records
			// someone else wrote stay.
			x.foreign(owner, 60, a, b)
			cur := x.read(owner)
			x.foreign(owner, 60, c)
			before := x.state()
			x.refused(x.setIf(single(cur), single(rrset(owner, 0))), dns.RcodeNXRrset, before, owner)
			x.serves(owner, time.Minute, c)
		})

		t.Run("set compared, not order or TTL", func(t *testing.T) {
			x, owner := newBed(t), casOwner("cas6")
			x.foreign(owner, 300, a, b)
			// A subset or a superset is not the RRset.
			before := x.state()
			x.refused(x.setIf(single(rrset(owner, 5*time.Minute, a)), single(rrset(owner, time.Minute, c))), dns.RcodeNXRrset, before, owner)
			x.refused(x.setIf(single(rrset(owner, 5*time.Minute, a, b, c)), single(rrset(owner, time.Minute, c))), dns.RcodeNXRrset, before, owner)
			x.serves(owner, 5*time.Minute, a, b)
			// Another order and another TTL match.
			if err := x.setIf(single(rrset(owner, time.Minute, b, a)), single(rrset(owner, 2*time.Minute, c, d))); err != nil {
				t.Fatalf("expect in another order and with another TTL: %v", err)
			}
			x.serves(owner, 2*time.Minute, c, d)
			// So does an expect with a duplicate record (the zone holds
			// a set).
			if err := x.setIf(single(rrset(owner, 0, d, c, d)), single(rrset(owner, time.Minute, a))); err != nil {
				t.Fatalf("expect with a duplicate: %v", err)
			}
			x.serves(owner, time.Minute, a)
		})

		t.Run("other data untouched", func(t *testing.T) {
			x := newBed(t)
			st := x.state()
			for _, want := range []string{"keep.cas.test. 1m0s TXT untouched", "mail.cas.test. 1m0s A 127.0.0.1"} {
				if !slices.Contains(st.data, want) {
					t.Errorf("zone lost %q: %q", want, st.data)
				}
			}
		})
	})
}

// wireServer is a miekg/dns server on loopback that keeps every request and
// answers with rcode (signed with key).
type wireServer struct {
	addr string
	mu   sync.Mutex
	msgs []*dns.Msg
	bad  []string // requests whose TSIG did not verify
	code int
}

func newWireServer(t *testing.T, key testbed.TSIGKey) *wireServer {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x := &wireServer{addr: l.Addr().String()}
	srv := &dns.Server{
		Listener:      l,
		Net:           "tcp",
		TsigSecret:    map[string]string{key.Name: key.Secret},
		MsgAcceptFunc: func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }, // the default answers UPDATE with NOTIMP
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(req)
			x.mu.Lock()
			defer x.mu.Unlock()
			if w.TsigStatus() != nil || req.IsTsig() == nil {
				x.bad = append(x.bad, fmt.Sprint(w.TsigStatus()))
				m.Rcode = dns.RcodeNotAuth
			} else {
				x.msgs = append(x.msgs, req.Copy())
				m.Rcode = x.code
				m.SetTsig(key.Name, key.Algorithm, 300, time.Now().Unix())
			}
			_ = w.WriteMsg(m)
		}),
	}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	<-started
	return x
}

func (x *wireServer) answer(rcode int) {
	x.mu.Lock()
	x.code = rcode
	x.mu.Unlock()
}

func (x *wireServer) received() ([]*dns.Msg, []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.msgs), slices.Clone(x.bad)
}

func tlsaOf(t *testing.T, rr dns.RR) tlsa.Record {
	t.Helper()
	x, ok := rr.(*dns.TLSA)
	if !ok {
		t.Fatalf("not TLSA: %v", rr)
	}
	r, err := tlsa.ParseRecord(fmt.Sprintf("%d %d %d %s", x.Usage, x.Selector, x.MatchingType, x.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSetTLSAIfWire: one conditional change is ONE signed UPDATE message:
// the prerequisites in the answer (prerequisite) section with TTL 0 —
// class IN with every expected record, or class NONE without rdata for an
// expected empty RRset — and the replacements in the authority (update)
// section, every RRset deletion before the additions. Response codes map
// to errors: NXRRSET and YXRRSET to ErrRRsetChanged, others explained.
func TestSetTLSAIfWire(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	key := testbed.NewTSIGKey("wire-key")
	x := newWireServer(t, key)
	p := newProvider(t, x.addr, key)

	const zone = "wire.test."
	o1, o2, o3 := "_25._tcp.mx1.wire.test.", "_25._tcp.mx2.wire.test.", "_465._tcp.mx3.wire.test."
	a, b, c, d := rec(3, 1, 1, 1), rec(2, 1, 1, 2), rec(3, 1, 1, 3), rec(2, 1, 1, 4)
	expect := []providers.RRSet{rrset(o1, 5*time.Minute, a, b), rrset(o2, 0), rrset("_465._TCP.MX3.wire.test", time.Minute, c)}
	want := []providers.RRSet{rrset(o1, 2*time.Minute, c), rrset(o2, time.Minute, d, a), rrset(o3, 0)}
	conditional, err := providers.SetTLSAIf(ctx, p, zone, expect, want)
	if err != nil || !conditional {
		t.Fatalf("SetTLSAIf = %v, %v", conditional, err)
	}
	msgs, bad := x.received()
	if len(msgs) != 1 || len(bad) != 0 {
		t.Fatalf("server got %d signed messages and %d badly signed (%q), want 1 signed", len(msgs), len(bad), bad)
	}
	m := msgs[0]
	if m.Opcode != dns.OpcodeUpdate || len(m.Question) != 1 || m.Question[0].Name != zone || m.Question[0].Qtype != dns.TypeSOA || m.Question[0].Qclass != dns.ClassINET {
		t.Fatalf("not an UPDATE of %s:\n%v", zone, m)
	}
	if ts := m.IsTsig(); ts == nil || ts.Hdr.Name != key.Name || len(m.Extra) != 1 {
		t.Fatalf("not signed with %s alone:\n%v", key.Name, m)
	}

	// Prerequisites: o1 exists with exactly a and b; o2 has no TLSA; o3
	// exists with exactly c.
	prereq := map[string][]tlsa.Record{}
	var absent []string
	for _, rr := range m.Answer {
		h := rr.Header()
		if h.Ttl != 0 || h.Rrtype != dns.TypeTLSA {
			t.Errorf("prerequisite %v: want type TLSA, TTL 0", rr)
		}
		switch h.Class {
		case dns.ClassINET:
			prereq[h.Name] = append(prereq[h.Name], tlsaOf(t, rr))
		case dns.ClassNONE:
			if h.Rdlength != 0 {
				t.Errorf("RRset-does-not-exist prerequisite with rdata: %v", rr)
			}
			absent = append(absent, h.Name)
		default:
			t.Errorf("prerequisite %v: class %s", rr, dns.ClassToString[h.Class])
		}
	}
	if len(prereq) != 2 || !sameRecords(prereq[o1], []tlsa.Record{a, b}) || len(prereq[o1]) != 2 || !sameRecords(prereq[o3], []tlsa.Record{c}) {
		t.Errorf("RRset-exists prerequisites %v, want %s: a b, %s: c", prereq, o1, o3)
	}
	if !slices.Equal(absent, []string{o2}) {
		t.Errorf("RRset-does-not-exist prerequisites for %q, want %s", absent, o2)
	}

	// Updates: each owner's TLSA RRset deleted (class ANY, TTL 0, no
	// rdata) before the additions (class IN, want's TTL).
	var deleted []string
	added := map[string][]tlsa.Record{}
	seenAdd := false
	for _, rr := range m.Ns {
		h := rr.Header()
		switch {
		case h.Class == dns.ClassANY && h.Rrtype == dns.TypeTLSA && h.Rdlength == 0 && h.Ttl == 0 && !seenAdd:
			deleted = append(deleted, h.Name)
		case h.Class == dns.ClassINET && h.Rrtype == dns.TypeTLSA:
			seenAdd = true
			if wantTTL := map[string]uint32{o1: 120, o2: 60}[h.Name]; h.Ttl != wantTTL {
				t.Errorf("added %v with TTL %d, want %d", rr, h.Ttl, wantTTL)
			}
			added[h.Name] = append(added[h.Name], tlsaOf(t, rr))
		default:
			t.Errorf("unexpected update RR %v", rr)
		}
	}
	if !slices.Equal(deleted, []string{o1, o2, o3}) {
		t.Errorf("RRsets deleted: %q, want %s %s %s", deleted, o1, o2, o3)
	}
	if len(added) != 2 || !sameRecords(added[o1], []tlsa.Record{c}) || !sameRecords(added[o2], []tlsa.Record{d, a}) {
		t.Errorf("added %v, want %s: c, %s: d a", added, o1, o2)
	}

	// Response codes.
	for _, tc := range []struct {
		rcode   int
		changed bool
		wantErr string
	}{
		{dns.RcodeNXRrset, true, "RFC 2136 server " + x.addr + ", TSIG key wire-key: the TLSA RRset at " + o1 +
			" is no longer what was read (someone else changed it; the server answered NXRRSET): nothing changed; read it again"},
		{dns.RcodeYXRrset, true, "RFC 2136 server " + x.addr + ", TSIG key wire-key: the TLSA RRset at " + o1 +
			" is no longer what was read (someone else changed it; the server answered YXRRSET): nothing changed; read it again"},
		{dns.RcodeRefused, false, "setting TLSA conditionally at " + o1 + ": RFC 2136 server " + x.addr + `, TSIG key wire-key: dns response error code "REFUSED" (5)` +
			" (the server refused: the TSIG key is wrong or not allowed to change this zone, or the server is not the zone's primary)"},
		{dns.RcodeNotAuth, false, "setting TLSA conditionally at " + o1 + ": RFC 2136 server " + x.addr + ", TSIG key wire-key: dns: bad authentication" + // miekg/dns reports a NOTAUTH response as ErrAuth
			" (the server rejected the TSIG key: wrong secret, a key name it does not know, or a clock off by more than 5 minutes)"},
		{dns.RcodeServerFailure, false, "setting TLSA conditionally at " + o1 + ": RFC 2136 server " + x.addr + `, TSIG key wire-key: dns response error code "SERVFAIL" (2)`},
	} {
		t.Run(dns.RcodeToString[tc.rcode], func(t *testing.T) {
			x.answer(tc.rcode)
			_, err := providers.SetTLSAIf(ctx, p, zone, single(rrset(o1, 0, a)), single(rrset(o1, time.Minute, b)))
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("SetTLSAIf = %v\nwant error %s", err, tc.wantErr)
			}
			if errors.Is(err, providers.ErrRRsetChanged) != tc.changed {
				t.Errorf("errors.Is(err, ErrRRsetChanged) = %v, want %v", !tc.changed, tc.changed)
			}
		})
	}
	x.answer(dns.RcodeSuccess)

	// A key the server does not know: the response comes back unsigned.
	wrong := newProvider(t, x.addr, testbed.NewTSIGKey("other-key"))
	if _, err := providers.SetTLSAIf(ctx, wrong, zone, single(rrset(o1, 0, a)), single(rrset(o1, time.Minute, b))); err == nil ||
		errors.Is(err, providers.ErrRRsetChanged) || !strings.Contains(err.Error(), "rejected the TSIG key") {
		t.Errorf("SetTLSAIf with an unknown key = %v, want the TSIG hint", err)
	}

	// Bad input: refused before anything is sent.
	msgs, bad = x.received()
	sent := len(msgs) + len(bad)
	for _, tc := range badConditionalInput(zone) {
		t.Run(tc.name, func(t *testing.T) {
			conditional, err := providers.SetTLSAIf(ctx, p, zone, tc.expect, tc.want)
			if err == nil || err.Error() != tc.wantErr || !conditional {
				t.Fatalf("SetTLSAIf = %v, %v\nwant true, error %s", conditional, err, tc.wantErr)
			}
			// The method checks the same on its own.
			err = p.(providers.ConditionalSetter).SetTLSAIf(ctx, zone, tc.expect, tc.want)
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("(*rfc2136Provider).SetTLSAIf = %v\nwant error %s", err, tc.wantErr)
			}
			if msgs, bad := x.received(); len(msgs)+len(bad) != sent {
				t.Errorf("refused input sent %d messages", len(msgs)+len(bad)-sent)
			}
		})
	}
}

type badInput struct {
	name         string
	expect, want []providers.RRSet
	wantErr      string
}

func badConditionalInput(zone string) []badInput {
	o1, o2 := "_25._tcp.mx1."+zone, "_25._tcp.mx2."+zone
	r := rec(3, 1, 1, 9)
	good := rrset(o1, time.Minute, r)
	prefix := "setting TLSA conditionally in zone " + zone + ": "
	return []badInput{
		{"nothing", nil, nil, prefix + "no RRsets given"},
		{"lengths differ", []providers.RRSet{good}, []providers.RRSet{good, rrset(o2, time.Minute, r)},
			prefix + "1 RRsets expected for 2 wanted (one expected RRset per owner, in the same order)"},
		{"owners differ", []providers.RRSet{good, rrset(o1, 0)}, []providers.RRSet{good, rrset(o2, time.Minute, r)},
			prefix + "RRset 1 is expected at " + o1 + " but wanted at " + o2 + " (they must name the same owner)"},
		{"owner twice", []providers.RRSet{good, rrset("_25._TCP.mx1."+strings.TrimSuffix(zone, "."), 0)}, []providers.RRSet{good, rrset(o1, 0)},
			prefix + o1 + " is given twice"},
		{"owner outside zone", single(rrset("_25._tcp.mail.other.test.", 0)), single(rrset("_25._tcp.mail.other.test.", time.Minute, r)),
			"setting TLSA conditionally: _25._tcp.mail.other.test. is not in zone " + zone},
		{"owner is the parent", single(rrset("test.", 0)), single(rrset("test.", time.Minute, r)),
			"setting TLSA conditionally: test. is not in zone " + zone},
		{"no association data", single(rrset(o1, 0, tlsa.Record{Usage: 3, Selector: 1, MatchingType: 1})), single(good),
			prefix + "a TLSA record for " + o1 + " has no association data"},
		{"negative TTL", single(rrset(o1, 0)), single(rrset(o1, -time.Second, r)),
			prefix + "TTL -1s for " + o1 + " is outside 0 to 2^31-1 seconds"},
		{"TTL too large", single(rrset(o1, 0)), single(rrset(o1, (1<<31)*time.Second, r)),
			prefix + "TTL 596523h14m8s for " + o1 + " is outside 0 to 2^31-1 seconds"},
	}
}

// memProvider is an in-memory libdns provider without conditional changes,
// as the hosted ones are. It counts the calls that write.
type memProvider struct {
	mu     sync.Mutex
	recs   []libdns.RR // names relative to the zone
	writes []string
}

var _ providers.Provider = (*memProvider)(nil)

func (m *memProvider) GetRecords(_ context.Context, _ string) ([]libdns.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]libdns.Record, len(m.recs))
	for i, r := range m.recs {
		out[i] = r
	}
	return out, nil
}

func (m *memProvider) SetRecords(_ context.Context, _ string, recs []libdns.Record) ([]libdns.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes = append(m.writes, "set")
	for _, r := range recs {
		rr := r.RR()
		m.recs = slices.DeleteFunc(m.recs, func(x libdns.RR) bool { return x.Name == rr.Name && x.Type == rr.Type })
	}
	for _, r := range recs {
		m.recs = append(m.recs, r.RR())
	}
	return recs, nil
}

func (m *memProvider) AppendRecords(_ context.Context, _ string, recs []libdns.Record) ([]libdns.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes = append(m.writes, "append")
	for _, r := range recs {
		m.recs = append(m.recs, r.RR())
	}
	return recs, nil
}

func (m *memProvider) DeleteRecords(_ context.Context, _ string, recs []libdns.Record) ([]libdns.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes = append(m.writes, "delete")
	var done []libdns.Record
	for _, r := range recs {
		rr := r.RR()
		n := len(m.recs)
		m.recs = slices.DeleteFunc(m.recs, func(x libdns.RR) bool {
			return x.Name == rr.Name && x.Type == rr.Type && strings.EqualFold(x.Data, rr.Data)
		})
		if len(m.recs) < n {
			done = append(done, r)
		}
	}
	return done, nil
}

func (m *memProvider) calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.writes)
}

// TestSetTLSAIfFallback: a provider that is not a ConditionalSetter gets
// the change unconditionally (SetTLSA for one RRset, SetTLSABatch for
// several) and SetTLSAIf says so with conditional=false; it cannot see
// that the zone changed since the read.
func TestSetTLSAIfFallback(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	const zone = "mem.test."
	o1, o2 := "_25._tcp.mx1."+zone, "_25._tcp.mx2."+zone
	a, b, c := rec(3, 1, 1, 0xa1), rec(2, 1, 1, 0xa2), rec(3, 1, 1, 0xa3)
	m := &memProvider{recs: []libdns.RR{{Name: "_25._tcp.mx1", TTL: time.Minute, Type: "TLSA", Data: c.String()}}}
	var p providers.Provider = m
	if _, ok := p.(providers.ConditionalSetter); ok {
		t.Fatal("memProvider is a ConditionalSetter")
	}
	read := func(owner string) providers.RRSet {
		t.Helper()
		s, err := providers.GetTLSA(ctx, p, zone, owner)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// One RRset: replaced although expect ({a}) is not what the zone
	// holds ({c}): the fallback cannot check.
	conditional, err := providers.SetTLSAIf(ctx, p, zone, single(rrset(o1, 0, a)), single(rrset(o1, 2*time.Minute, b)))
	if err != nil || conditional {
		t.Fatalf("SetTLSAIf = %v, %v; want false, nil", conditional, err)
	}
	if got := read(o1); !sameRecords(got.Records, []tlsa.Record{b}) || got.TTL != 2*time.Minute {
		t.Fatalf("%s holds %q (TTL %v), want %s", o1, recordStrings(got.Records), got.TTL, b)
	}
	// Several: one SetRecords call.
	conditional, err = providers.SetTLSAIf(ctx, p, zone, []providers.RRSet{read(o1), read(o2)},
		[]providers.RRSet{rrset(o1, time.Minute, a, c), rrset(o2, time.Minute, b)})
	if err != nil || conditional {
		t.Fatalf("SetTLSAIf = %v, %v; want false, nil", conditional, err)
	}
	if !sameRecords(read(o1).Records, []tlsa.Record{a, c}) || !sameRecords(read(o2).Records, []tlsa.Record{b}) {
		t.Fatalf("zone holds %v", m.recs)
	}
	if got := m.calls(); !slices.Equal(got, []string{"set", "set"}) {
		t.Fatalf("provider calls %q, want one set per SetTLSAIf", got)
	}
	// Several with one deletion: refused like SetTLSABatch, nothing written.
	_, err = providers.SetTLSAIf(ctx, p, zone, []providers.RRSet{read(o1), read(o2)}, []providers.RRSet{rrset(o1, time.Minute, a), rrset(o2, 0)})
	if want := "setting TLSA in zone " + zone + ": the RRset for " + o2 + " is empty (a batch only replaces RRsets; delete with SetTLSA)"; err == nil || err.Error() != want {
		t.Fatalf("SetTLSAIf = %v, want error %s", err, want)
	}
	if got := m.calls(); len(got) != 2 {
		t.Fatalf("a refused batch called the provider: %q", got)
	}
	// One deletion: the records read are deleted.
	conditional, err = providers.SetTLSAIf(ctx, p, zone, single(read(o2)), single(rrset(o2, 0)))
	if err != nil || conditional {
		t.Fatalf("SetTLSAIf = %v, %v; want false, nil", conditional, err)
	}
	if got := read(o2); len(got.Records) != 0 {
		t.Fatalf("%s still holds %q", o2, recordStrings(got.Records))
	}
	if !sameRecords(read(o1).Records, []tlsa.Record{a, c}) {
		t.Fatalf("zone holds %v", m.recs)
	}

	// Bad input: refused, nothing written.
	n := len(m.calls())
	for _, tc := range badConditionalInput(zone) {
		t.Run(tc.name, func(t *testing.T) {
			conditional, err := providers.SetTLSAIf(ctx, p, zone, tc.expect, tc.want)
			if err == nil || err.Error() != tc.wantErr || conditional {
				t.Fatalf("SetTLSAIf = %v, %v\nwant false, error %s", conditional, err, tc.wantErr)
			}
			if got := m.calls(); len(got) != n {
				t.Fatalf("refused input called the provider: %q", got[n:])
			}
		})
	}
}
