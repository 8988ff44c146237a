package dnsx

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeServer is an in-test DNS server on 127.0.0.1 (UDP and TCP, same port)
// whose answers the test scripts.
type fakeServer struct {
	Addr string
	mu   sync.Mutex
	reqs []fakeReq
}

type fakeReq struct {
	net string
	msg *dns.Msg
}

func (f *fakeServer) requests() []fakeReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeReq(nil), f.reqs...)
}

// startFake serves handle(network, request) -> response (nil: no answer).
func startFake(t *testing.T, handle func(network string, req *dns.Msg) *dns.Msg) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	var pc net.PacketConn
	var l net.Listener
	for i := 0; i < 20 && l == nil; i++ {
		var err error
		pc, err = net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err = net.Listen("tcp4", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			l = nil
		}
	}
	if l == nil {
		t.Fatal("no free UDP+TCP port")
	}
	f.Addr = pc.LocalAddr().String()
	h := func(network string) dns.HandlerFunc {
		return func(w dns.ResponseWriter, req *dns.Msg) {
			f.mu.Lock()
			f.reqs = append(f.reqs, fakeReq{network, req.Copy()})
			f.mu.Unlock()
			if resp := handle(network, req); resp != nil {
				_ = w.WriteMsg(resp)
			}
		}
	}
	su := &dns.Server{PacketConn: pc, Handler: h("udp")}
	st := &dns.Server{Listener: l, Handler: h("tcp")}
	for _, s := range []*dns.Server{su, st} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return f
}

func reply(req *dns.Msg, rcode int, ad bool, answer ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	m.AuthenticatedData = ad
	for _, s := range answer {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	m.SetEdns0(1232, true)
	return m
}

const hexA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestQueryFlagsAndSecureTLSA(t *testing.T) {
	f := startFake(t, func(_ string, req *dns.Msg) *dns.Msg {
		return reply(req, dns.RcodeSuccess, true, "_25._tcp.mail.example.test. 300 IN TLSA 3 1 1 "+hexA)
	})
	r := &Resolver{Addr: f.Addr, Timeout: 2 * time.Second}
	res, err := r.LookupTLSA(context.Background(), 25, "Mail.Example.Test")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != Secure || len(res.Records) != 1 || res.Records[0].String() != "3 1 1 "+hexA || res.TTL != 300 {
		t.Fatalf("got %+v", res)
	}
	if res.Name != "_25._tcp.mail.example.test." || res.BaseDomain != "mail.example.test." {
		t.Fatalf("names: %+v", res)
	}
	for _, q := range f.requests() {
		m := q.msg
		opt := m.IsEdns0()
		if !m.RecursionDesired || !m.AuthenticatedData || opt == nil || !opt.Do() || opt.UDPSize() != 1232 || q.net != "udp" {
			t.Errorf("query flags: net %s RD %v AD %v EDNS %v", q.net, m.RecursionDesired, m.AuthenticatedData, opt)
		}
	}
}

func TestTruncatedRetriesOverTCP(t *testing.T) {
	f := startFake(t, func(network string, req *dns.Msg) *dns.Msg {
		if network == "udp" {
			m := reply(req, dns.RcodeSuccess, true)
			m.Truncated = true
			return m
		}
		return reply(req, dns.RcodeSuccess, true,
			"example.test. 60 IN MX 20 b.example.test.", "example.test. 30 IN MX 10 a.example.test.")
	})
	r := &Resolver{Addr: f.Addr, Timeout: 2 * time.Second}
	res, err := r.LookupMX(context.Background(), "example.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Hosts) != 2 || res.Hosts[0].Host != "a.example.test." || res.TTL != 30 || res.Status != Secure {
		t.Fatalf("got %+v", res)
	}
	reqs := f.requests()
	if len(reqs) != 2 || reqs[0].net != "udp" || reqs[1].net != "tcp" {
		t.Fatalf("requests %v", reqs)
	}
}

func TestRcodeClassification(t *testing.T) {
	ede := func(code uint16, text string) func(*dns.Msg) {
		return func(m *dns.Msg) {
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_EDE{InfoCode: code, ExtraText: text})
		}
	}
	cases := []struct {
		name   string
		rcode  int
		ad     bool
		edit   func(*dns.Msg)
		want   error
		status Status
		ede    string
	}{
		{"nxdomain secure", dns.RcodeNameError, true, nil, ErrNXDomain, Secure, ""},
		{"nodata insecure", dns.RcodeSuccess, false, nil, ErrNoData, Insecure, ""},
		{"servfail", dns.RcodeServerFailure, false, nil, ErrBogus, Bogus, ""},
		{"servfail bogus ede", dns.RcodeServerFailure, false, ede(6, "sig expired"), ErrBogus, Bogus, "EDE 6 (DNSSEC Bogus): sig expired"},
		{"servfail unreachable ede", dns.RcodeServerFailure, false, ede(22, ""), ErrLookupFailed, Failed, "EDE 22 (No Reachable Authority)"},
		{"refused", dns.RcodeRefused, false, nil, ErrLookupFailed, Failed, ""},
		{"notimp", dns.RcodeNotImplemented, false, nil, ErrLookupFailed, Failed, ""},
		{"wrong question", dns.RcodeSuccess, true, func(m *dns.Msg) { m.Question[0].Name = "other.test." }, ErrLookupFailed, Failed, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, func(_ string, req *dns.Msg) *dns.Msg {
				m := reply(req, tc.rcode, tc.ad)
				if tc.rcode == dns.RcodeNameError || tc.rcode == dns.RcodeSuccess {
					soa, _ := dns.NewRR("example.test. 120 IN SOA ns.example.test. h.example.test. 1 2 3 4 30")
					m.Ns = append(m.Ns, soa)
				}
				if tc.edit != nil {
					tc.edit(m)
				}
				return m
			})
			r := &Resolver{Addr: f.Addr, Timeout: 2 * time.Second}
			res, err := r.LookupTLSA(context.Background(), 25, "mail.example.test")
			if res != nil || err == nil {
				t.Fatalf("want error, got %+v, %v", res, err)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			for _, other := range []error{ErrBogus, ErrLookupFailed, ErrNXDomain, ErrNoData} {
				if other != tc.want && errors.Is(err, other) {
					t.Fatalf("err %v also matches %v", err, other)
				}
			}
			var le *LookupError
			if !errors.As(err, &le) || le.Status != tc.status || StatusOf(err) != tc.status || le.EDE != tc.ede {
				t.Fatalf("details %+v", le)
			}
			if (tc.want == ErrNXDomain || tc.want == ErrNoData) && le.NegTTL != 30 {
				t.Fatalf("NegTTL %d", le.NegTTL)
			}
		})
	}
}

func TestNullMXAndCNAME(t *testing.T) {
	f := startFake(t, func(_ string, req *dns.Msg) *dns.Msg {
		q := req.Question[0]
		switch {
		case q.Name == "null.test." && q.Qtype == dns.TypeMX:
			return reply(req, dns.RcodeSuccess, true, "null.test. 60 IN MX 0 .")
		case q.Name == "alias.test." && q.Qtype == dns.TypeA:
			return reply(req, dns.RcodeSuccess, true, "alias.test. 60 IN CNAME mid.test.", "mid.test. 60 IN CNAME real.test.", "real.test. 60 IN A 192.0.2.1")
		case q.Name == "alias.test." && q.Qtype == dns.TypeAAAA:
			return reply(req, dns.RcodeSuccess, true, "alias.test. 60 IN CNAME mid.test.", "mid.test. 60 IN CNAME real.test.")
		case q.Name == "loop.test.":
			return reply(req, dns.RcodeSuccess, false, "loop.test. 60 IN CNAME loop2.test.", "loop2.test. 60 IN CNAME loop.test.")
		}
		return reply(req, dns.RcodeNameError, true)
	})
	r := &Resolver{Addr: f.Addr, Timeout: 2 * time.Second}
	ctx := context.Background()
	mx, err := r.LookupMX(ctx, "null.test")
	if err != nil || !mx.Null || len(mx.Hosts) != 0 {
		t.Fatalf("null MX: %+v %v", mx, err)
	}
	ar, err := r.LookupAddrs(ctx, "alias.test")
	if err != nil || ar.Canonical != "real.test." || !ar.CanonicalSecure || len(ar.Addrs) != 1 || ar.Status != Secure ||
		!errors.Is(ar.AAAA.Err, ErrNoData) {
		t.Fatalf("alias: %+v %v", ar, err)
	}
	if _, err := r.LookupAddrs(ctx, "loop.test"); !errors.Is(err, ErrNoData) {
		t.Fatalf("loop: %v", err)
	}
}

func closedPort(t *testing.T) string {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestUnreachableResolver(t *testing.T) {
	r := &Resolver{Addr: closedPort(t), Timeout: 2 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := r.LookupTLSA(ctx, 25, "mail.example.test")
	if res != nil || !errors.Is(err, ErrLookupFailed) || StatusOf(err) != Failed {
		t.Fatalf("got %+v, %v", res, err)
	}
	ar, err := r.LookupAddrs(ctx, "mail.example.test")
	if !errors.Is(err, ErrLookupFailed) || ar == nil || ar.Status != Failed || len(ar.Addrs) != 0 {
		t.Fatalf("addrs: %+v, %v", ar, err)
	}
	if _, err := r.LookupMX(ctx, "example.test"); !errors.Is(err, ErrLookupFailed) {
		t.Fatalf("mx: %v", err)
	}
}

func TestTimeoutSilentResolver(t *testing.T) {
	f := startFake(t, func(string, *dns.Msg) *dns.Msg { return nil }) // never answers
	r := &Resolver{Addr: f.Addr, Timeout: 200 * time.Millisecond}
	start := time.Now()
	_, err := r.LookupMX(context.Background(), "example.test")
	if !errors.Is(err, ErrLookupFailed) || StatusOf(err) != Failed {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v, per-query timeout 200ms", d)
	}
	// The caller's context bounds the call too.
	r.Timeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = r.LookupMX(ctx, "example.test")
	if !errors.Is(err, ErrLookupFailed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v, context 200ms", d)
	}
}

func TestSystemResolver(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("# x\nsearch example.test\nnameserver 127.0.0.53\nnameserver ::1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := systemResolverFrom(p)
	if err != nil || got != "127.0.0.53:53" {
		t.Fatalf("%q %v", got, err)
	}
	if err := os.WriteFile(p, []byte("nameserver ::1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := systemResolverFrom(p); err != nil || got != "[::1]:53" {
		t.Fatalf("%q %v", got, err)
	}
	if err := os.WriteFile(p, []byte("search x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := systemResolverFrom(p); err == nil {
		t.Fatal("no nameserver: want error")
	}
	if a := (&Resolver{Addr: "127.0.0.1"}).addr(); a != "127.0.0.1:53" {
		t.Fatal(a)
	}
	if a := (&Resolver{Addr: "127.0.0.1:" + strconv.Itoa(5353)}).addr(); a != "127.0.0.1:5353" {
		t.Fatal(a)
	}
}
