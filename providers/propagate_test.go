package providers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/tlsa"
)

func propRec(u uint8, b byte) tlsa.Record {
	return tlsa.Record{Usage: tlsa.Usage(u), Selector: 1, MatchingType: 1, Data: bytes.Repeat([]byte{b}, 32)}
}

func TestPropagationLive(t *testing.T) {
	t.Parallel()
	b := newPropBed(t)
	ctx := propCtx(t)

	keyFile := filepath.Join(t.TempDir(), "tsig.key")
	if err := b.primary.Key.WriteBINDKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	prov, err := New("rfc2136", Settings{Values: map[string]string{"server": b.primary.Addr, "tsig_key_file": keyFile}})
	if err != nil {
		t.Fatal(err)
	}
	owner := "_25._tcp.smtp." + bedZone

	// Discovery as tlsactl does it: zone of the owner, then its servers.
	zone, err := FindZone(ctx, b.res, owner)
	if err != nil || zone != bedZone {
		t.Fatalf("FindZone(%s) = %q, %v", owner, zone, err)
	}
	servers, err := AuthServers(ctx, b.res, zone, b.port)
	if err != nil || len(servers) != 2 {
		t.Fatalf("AuthServers = %v, %v", servers, err)
	}
	fast := PropagationOptions{Interval: 50 * time.Millisecond, Timeout: 20 * time.Second, QueryTimeout: time.Second}

	set := func(current, want RRSet) {
		t.Helper()
		if _, err := SetTLSA(ctx, prov, zone, current, want); err != nil {
			t.Fatal(err)
		}
	}
	checkConverged := func(p Propagation, want RRSet) {
		t.Helper()
		serial, err := b.primary.Serial(ctx, zone)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Addrs) != 2 || p.Converged.IsZero() || p.Converged.Before(p.Started) {
			t.Fatalf("propagation = %+v", p)
		}
		for i, a := range p.Addrs {
			if !a.Converged || a.At.IsZero() || a.At.After(p.Converged) || a.Err != nil || a.Polls < 1 {
				t.Errorf("%s [%s]: %+v", a.Server, a.Addr, a)
			}
			if a.Server != servers[i].Name || a.Addr != servers[i].Addrs[0] {
				t.Errorf("address %d = %s [%s], want %v", i, a.Server, a.Addr, servers[i])
			}
			if !a.SerialOK || a.Serial != serial {
				t.Errorf("%s [%s]: serial %d (ok %v), want the primary's %d", a.Server, a.Addr, a.Serial, a.SerialOK, serial)
			}
			if len(want.Records) > 0 && a.TTL != want.TTL {
				t.Errorf("%s [%s]: TTL %s, want %s", a.Server, a.Addr, a.TTL, want.TTL)
			}
			if !sameRecords(a.Records, want.Records) {
				t.Errorf("%s [%s]: records %v, want %v", a.Server, a.Addr, a.Records, want.Records)
			}
			// The zone is signed: records count only with a verified RRSIG.
			if len(want.Records) > 0 && (!a.Signed || a.SigErr != nil || a.Zone != zone) {
				t.Errorf("%s [%s]: signed %v, zone %q, SigErr %v", a.Server, a.Addr, a.Signed, a.Zone, a.SigErr)
			}
		}
	}

	// 1. A new RRset reaches both: the secondary by NOTIFY + IXFR.
	one := RRSet{Owner: owner, TTL: 300 * time.Second, Records: []tlsa.Record{propRec(3, 0xab)}}
	set(RRSet{Owner: owner}, one)
	p, err := WaitPropagated(ctx, servers, one, fast)
	if err != nil {
		t.Fatal(err)
	}
	checkConverged(p, one)

	// Same result over TCP only, with the zone named, and on an explicit list.
	explicit, err := ExplicitServers([]string{b.primary.Addr, b.secondary.Addr})
	if err != nil {
		t.Fatal(err)
	}
	tcp := fast
	tcp.TCP, tcp.Zone = true, zone
	if p, err := WaitPropagated(ctx, explicit, one, tcp); err != nil || len(p.Addrs) != 2 || p.Addrs[1].Server != b.secondary.Addr {
		t.Fatalf("explicit servers over TCP: %+v, %v", p, err)
	}

	// 2. Another TTL than asked for is propagation (providers raise TTLs),
	// reported as served; only with ExactTTL is it not.
	wrongTTL := one
	wrongTTL.TTL = 600 * time.Second
	// Long enough that the first poll completes on a loaded machine (a
	// first poll cut off by the deadline is all the error can report: CI
	// once saw "cannot check DNSSEC: … i/o timeout" with 500 ms).
	short := fast
	short.Timeout = 2 * time.Second
	if p, err := WaitPropagated(ctx, servers, wrongTTL, short); err != nil || p.Addrs[0].TTL != 300*time.Second {
		t.Fatalf("other TTL: %+v, %v", p, err)
	}
	exact := short
	exact.ExactTTL = true
	_, err = WaitPropagated(ctx, servers, wrongTTL, exact)
	if !errors.Is(err, ErrNotPropagated) || !strings.Contains(err.Error(), "with TTL 5m0s") ||
		!strings.Contains(err.Error(), "want TTL 10m0s") {
		t.Fatalf("wrong TTL with ExactTTL: err = %v", err)
	}

	// 3. With the secondary frozen, it keeps serving one record: the wait
	// times out naming ns2 and its address, not ns1.
	if err := b.secondary.Freeze(ctx, zone); err != nil {
		t.Fatal(err)
	}
	two := RRSet{Owner: owner, TTL: 300 * time.Second, Records: []tlsa.Record{propRec(3, 0xcd), propRec(3, 0xab)}}
	set(one, two)
	var rounds int
	slow := fast
	slow.Timeout = 3 * time.Second // as short: the first poll must complete under load
	slow.Progress = func(Propagation) { rounds++ }
	p, err = WaitPropagated(ctx, servers, two, slow)
	if !errors.Is(err, ErrNotPropagated) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("frozen secondary: err = %v, want ErrNotPropagated", err)
	}
	msg := err.Error()
	t.Log(msg)
	for _, want := range []string{
		"ns2." + bedZone + " [" + b.secondary.Addr + "] serves 1 record (3 1 1 abababab…) at serial ",
		", want 2 records (3 1 1 cdcdcdcd…, 3 1 1 abababab…)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "ns1.") || strings.Contains(msg, b.primary.Addr) {
		t.Errorf("error names the converged primary: %s", msg)
	}
	var pe *PropagationError
	if !errors.As(err, &pe) || len(pe.Lagging) != 1 || pe.Lagging[0].Server != "ns2."+bedZone {
		t.Fatalf("PropagationError = %+v", pe)
	}
	if !p.Addrs[0].Converged || p.Addrs[1].Converged || !p.Converged.IsZero() || len(p.Lagging()) != 1 {
		t.Fatalf("propagation state: %+v", p)
	}
	if rounds < 2 || p.Addrs[1].Polls < 2 || p.Addrs[0].Polls != 1 {
		t.Errorf("rounds %d, polls %d/%d: want several rounds, the converged primary asked once", rounds,
			p.Addrs[0].Polls, p.Addrs[1].Polls)
	}

	// 4. Thawed, the secondary catches up.
	if err := b.secondary.Thaw(ctx, zone); err != nil {
		t.Fatal(err)
	}
	p, err = WaitPropagated(ctx, servers, two, fast)
	if err != nil {
		t.Fatal(err)
	}
	checkConverged(p, two)

	// 5. Removal (empty want) propagates; waiting for records that are gone
	// times out with "serves no TLSA record".
	gone := RRSet{Owner: owner}
	set(two, gone)
	p, err = WaitPropagated(ctx, servers, gone, fast)
	if err != nil {
		t.Fatal(err)
	}
	checkConverged(p, gone)
	for _, a := range p.Addrs {
		if a.Rcode != dns.RcodeNameError || len(a.Records) != 0 || a.TTL != 0 {
			t.Errorf("%s after removal: rcode %d, %v, TTL %s", a.Server, a.Rcode, a.Records, a.TTL)
		}
	}
	_, err = WaitPropagated(ctx, servers, one, short)
	if !errors.Is(err, ErrNotPropagated) || !strings.Contains(err.Error(), "serves no TLSA record (NXDOMAIN)") {
		t.Fatalf("records gone: err = %v", err)
	}
	// An existing name without TLSA is NODATA, also "no TLSA".
	p, err = WaitPropagated(ctx, servers, RRSet{Owner: "mail." + bedZone}, fast)
	if err != nil || p.Addrs[0].Rcode != dns.RcodeSuccess {
		t.Fatalf("NODATA as removal: %+v, %v", p, err)
	}

	// 6. A server that does not answer, and the context ending first.
	dead, err := ExplicitServers([]string{"127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = WaitPropagated(ctx, dead, one, short)
	if !errors.Is(err, ErrNotPropagated) || !strings.Contains(err.Error(), "127.0.0.1:1 [127.0.0.1:1] gives no usable answer") {
		t.Fatalf("dead server: err = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := WaitPropagated(cctx, servers, two, fast); !errors.Is(err, ErrNotPropagated) || !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: err = %v", err)
	}
}

func TestPropagationSameRecords(t *testing.T) {
	a, b, c := propRec(3, 1), propRec(3, 2), propRec(2, 1)
	for _, tc := range []struct {
		x, y []tlsa.Record
		want bool
	}{
		{nil, nil, true},
		{[]tlsa.Record{a}, []tlsa.Record{a}, true},
		{[]tlsa.Record{a, b}, []tlsa.Record{b, a}, true},    // order does not matter
		{[]tlsa.Record{a, b, a}, []tlsa.Record{b, a}, true}, // an RRset is a set
		{[]tlsa.Record{a}, []tlsa.Record{a, b}, false},      // missing one
		{[]tlsa.Record{a, b}, []tlsa.Record{a}, false},      // one too many
		{[]tlsa.Record{a}, []tlsa.Record{c}, false},         // same data, other usage
		{[]tlsa.Record{a}, nil, false},                      //
		{[]tlsa.Record{{Usage: 3, Data: []byte{1}}}, []tlsa.Record{{Usage: 3, Data: []byte{1, 0}}}, false},
	} {
		if got := sameRecords(tc.x, tc.y); got != tc.want {
			t.Errorf("sameRecords(%v, %v) = %v", tc.x, tc.y, got)
		}
	}
}

func TestPropagationMatches(t *testing.T) {
	a, b := propRec(3, 1), propRec(3, 2)
	want := RRSet{Owner: "_25._tcp.x.test.", TTL: 300 * time.Second, Records: []tlsa.Record{a, b}}
	anyTTL := want
	anyTTL.TTL = 0
	gone := RRSet{Owner: want.Owner}
	for _, tc := range []struct {
		what  string
		obs   AddrState
		want  RRSet
		exact bool // PropagationOptions.ExactTTL
		ok    bool
	}{
		{"exact", AddrState{Records: []tlsa.Record{b, a}, TTL: 300 * time.Second}, want, true, true},
		{"wrong TTL", AddrState{Records: []tlsa.Record{a, b}, TTL: 60 * time.Second}, want, true, false},
		{"other TTL accepted by default", AddrState{Records: []tlsa.Record{a, b}, TTL: 3600 * time.Second}, want, false, true},
		{"any TTL", AddrState{Records: []tlsa.Record{a, b}, TTL: 60 * time.Second}, anyTTL, true, true},
		{"missing", AddrState{Records: []tlsa.Record{a}, TTL: 300 * time.Second}, want, false, false},
		{"nothing", AddrState{Rcode: dns.RcodeNameError}, want, false, false},
		{"error", AddrState{Err: errors.New("x")}, gone, false, false},
		{"removed, NXDOMAIN", AddrState{Rcode: dns.RcodeNameError}, gone, false, true},
		{"removed, NODATA", AddrState{}, gone, false, true},
		{"not removed", AddrState{Records: []tlsa.Record{a}}, gone, false, false},
		{"CNAME is not absence", AddrState{CNAME: "x.test."}, gone, false, false},
		{"signed, valid", AddrState{Records: []tlsa.Record{a, b}, Signed: true}, want, false, true},
		{"bad RRSIG", AddrState{Records: []tlsa.Record{a, b}, Signed: true, SigErr: ErrRRSIGInvalid}, want, false, false},
	} {
		if got := matches(tc.obs, tc.want, tc.exact); got != tc.ok {
			t.Errorf("%s: matches = %v", tc.what, got)
		}
	}
}

func TestPropagationDescribe(t *testing.T) {
	a, b := propRec(3, 0xab), propRec(2, 0x01)
	want := RRSet{Owner: "_25._tcp.x.test.", TTL: 300 * time.Second, Records: []tlsa.Record{a, b}}
	for _, tc := range []struct {
		obs  AddrState
		want RRSet
		text string
	}{
		{AddrState{Records: []tlsa.Record{a}, Serial: 7, SerialOK: true}, want,
			"serves 1 record (3 1 1 abababab…) at serial 7, want 2 records (3 1 1 abababab…, 2 1 1 01010101…)"},
		{AddrState{Rcode: dns.RcodeNameError}, want,
			"serves no TLSA record (NXDOMAIN), want 2 records (3 1 1 abababab…, 2 1 1 01010101…)"},
		{AddrState{Records: []tlsa.Record{a, b}, TTL: time.Minute}, want,
			"serves the expected records with TTL 1m0s, want TTL 5m0s"},
		{AddrState{Records: []tlsa.Record{{Usage: 3, Selector: 1, MatchingType: 0, Data: []byte{1, 2}}}}, RRSet{},
			"serves 1 record (3 1 0 0102), want none"},
		{AddrState{CNAME: "y.test."}, RRSet{}, "serves a CNAME to y.test., want none"},
		{AddrState{Err: errors.New("answers REFUSED")}, want, "gives no usable answer: answers REFUSED"},
		{AddrState{Records: []tlsa.Record{b, a}, Signed: true, Serial: 3, SerialOK: true,
			SigErr: fmt.Errorf("%w: key tag 1: dns: bad signature", ErrRRSIGInvalid)}, want,
			"serves the expected records at serial 3, but RRSIG invalid: key tag 1: dns: bad signature"},
		{AddrState{Records: []tlsa.Record{a}, Signed: true, SigErr: fmt.Errorf("%w: no RRSIG", ErrRRSIGMissing)}, want,
			"serves 1 record (3 1 1 abababab…), want 2 records (3 1 1 abababab…, 2 1 1 01010101…); RRSIG missing: no RRSIG"},
	} {
		if got := tc.obs.Describe(tc.want); got != tc.text {
			t.Errorf("Describe = %q\nwant       %q", got, tc.text)
		}
	}
	e := &PropagationError{Want: want, Waited: 1500 * time.Millisecond, Cause: context.DeadlineExceeded, Lagging: []AddrState{
		{Server: "ns2.x.test.", Addr: netip.MustParseAddrPort("127.0.1.2:5353"), Records: []tlsa.Record{a}},
		{Server: "ns3.x.test.", Addr: netip.MustParseAddrPort("[::1]:53"), Err: errors.New("udp: timeout")},
	}}
	const text = "TLSA RRset at _25._tcp.x.test. not served by every authoritative server after 1.5s: " +
		"ns2.x.test. [127.0.1.2:5353] serves 1 record (3 1 1 abababab…), want 2 records (3 1 1 abababab…, 2 1 1 01010101…); " +
		"ns3.x.test. [[::1]:53] gives no usable answer: udp: timeout"
	if e.Error() != text {
		t.Errorf("Error() = %q\nwant      %q", e.Error(), text)
	}
	if !errors.Is(e, ErrNotPropagated) || !errors.Is(e, context.DeadlineExceeded) {
		t.Error("PropagationError does not wrap ErrNotPropagated and its cause")
	}
}

func TestPropagationBadInput(t *testing.T) {
	ctx := context.Background()
	one := RRSet{Owner: "_25._tcp.x.test", Records: []tlsa.Record{propRec(3, 1)}}
	srv := []AuthServer{{Name: "ns.x.test.", Addrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}}}
	for what, tc := range map[string]struct {
		servers []AuthServer
		want    RRSet
	}{
		"no servers":         {nil, one},
		"server, no address": {[]AuthServer{{Name: "ns.x.test."}}, one},
		"no owner":           {srv, RRSet{}},
	} {
		if _, err := WaitPropagated(ctx, tc.servers, tc.want, PropagationOptions{}); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", what, err)
		}
	}
}
