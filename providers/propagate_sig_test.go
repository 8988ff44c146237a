package providers

import (
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/tlsa"
)

// The DNSSEC check of served TLSA RRsets against a tiny authoritative server
// (fakeAuth) that serves whatever RRs and RRSIGs a test gives it: Knot
// always signs correctly, so missing, expired and invalid signatures need
// a server that gets them wrong on purpose. The live tests in
// propagate_test.go check that real signed zones pass.

const (
	fakeZone  = "sig.test."
	fakeOwner = "_25._tcp.mail.sig.test."
)

// fakeAuth answers from rrs, authoritatively unless noAA. RRSIGs at the
// query name covering the query type are added when the query has the DO
// bit. A name with no RRs of the type is NODATA, a name without any RR
// NXDOMAIN; both carry soa in the authority section. A CNAME at the name
// answers every type but CNAME.
type fakeAuth struct {
	addr netip.AddrPort

	mu   sync.Mutex
	rrs  []dns.RR
	soa  *dns.SOA
	noAA bool
}

func newFakeAuth(t *testing.T) *fakeAuth {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAuth{addr: netip.MustParseAddrPort(pc.LocalAddr().String()),
		soa: mustRR(t, fakeZone+" 300 IN SOA ns.sig.test. h.sig.test. 7 3600 600 86400 120").(*dns.SOA)}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(f.serve)}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return f
}

func (f *fakeAuth) set(soa *dns.SOA, noAA bool, rrs ...dns.RR) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if soa != nil {
		f.soa = soa
	}
	f.noAA, f.rrs = noAA, rrs
}

func (f *fakeAuth) servers() []AuthServer {
	return []AuthServer{{Name: "ns.sig.test.", Addrs: []netip.AddrPort{f.addr}}}
}

func (f *fakeAuth) serve(w dns.ResponseWriter, req *dns.Msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = !f.noAA
	q := req.Question[0]
	do := req.IsEdns0() != nil && req.IsEdns0().Do()
	rrs := append([]dns.RR{f.soa}, f.rrs...)
	exists := false
	var cname dns.RR
	for _, rr := range rrs {
		h := rr.Header()
		if !strings.EqualFold(h.Name, q.Name) {
			continue
		}
		exists = true
		switch {
		case h.Rrtype == q.Qtype:
			m.Answer = append(m.Answer, rr)
		case h.Rrtype == dns.TypeCNAME:
			cname = rr
		case h.Rrtype == dns.TypeRRSIG && rr.(*dns.RRSIG).TypeCovered == q.Qtype && do:
			m.Answer = append(m.Answer, rr)
		}
	}
	if len(m.Answer) == 0 || m.Answer[0].Header().Rrtype == dns.TypeRRSIG {
		switch {
		case cname != nil:
			m.Answer = []dns.RR{cname}
		case !exists:
			m.Rcode = dns.RcodeNameError
			fallthrough
		default:
			m.Ns = []dns.RR{f.soa}
		}
	}
	if do {
		m.SetEdns0(1232, true)
	}
	_ = w.WriteMsg(m)
}

func mustRR(t *testing.T, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

// zoneKey is a DNSKEY of fakeZone with its private key.
type zoneKey struct {
	key  *dns.DNSKEY
	priv crypto.Signer
}

func newZoneKey(t *testing.T) zoneKey {
	t.Helper()
	k := &dns.DNSKEY{Hdr: dns.RR_Header{Name: fakeZone, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 300},
		Flags: 257, Protocol: 3, Algorithm: dns.ECDSAP256SHA256}
	priv, err := k.Generate(256)
	if err != nil {
		t.Fatal(err)
	}
	return zoneKey{k, priv.(crypto.Signer)}
}

// sign returns an RRSIG by k over rrset valid from inception to expiration.
func (k zoneKey) sign(t *testing.T, rrset []dns.RR, inception, expiration time.Time) *dns.RRSIG {
	t.Helper()
	sig := &dns.RRSIG{Hdr: dns.RR_Header{Name: rrset[0].Header().Name, Rrtype: dns.TypeRRSIG, Class: dns.ClassINET,
		Ttl: rrset[0].Header().Ttl}, Algorithm: k.key.Algorithm, KeyTag: k.key.KeyTag(), SignerName: fakeZone,
		Inception: uint32(inception.Unix()), Expiration: uint32(expiration.Unix())}
	if err := sig.Sign(k.priv, rrset); err != nil {
		t.Fatal(err)
	}
	return sig
}

func tlsaRR(t *testing.T, ttl int, r tlsa.Record) dns.RR {
	t.Helper()
	return mustRR(t, fakeOwner+" "+strconv.Itoa(ttl)+" IN TLSA "+r.String())
}

func TestPropagationRRSIG(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key, other := newZoneKey(t), newZoneKey(t)
	a, b := propRec(3, 0xab), propRec(2, 0x01)
	now := time.Now()
	served := []dns.RR{tlsaRR(t, 3600, a), tlsaRR(t, 3600, b)} // the provider raised the TTL to 3600
	good := key.sign(t, served, now.Add(-time.Hour), now.Add(time.Hour))
	expired := key.sign(t, served, now.Add(-2*time.Hour), now.Add(-time.Hour))
	future := key.sign(t, served, now.Add(time.Hour), now.Add(2*time.Hour))
	byOther := other.sign(t, served, now.Add(-time.Hour), now.Add(time.Hour))
	otherData := key.sign(t, []dns.RR{tlsaRR(t, 3600, a)}, now.Add(-time.Hour), now.Add(time.Hour))
	otherData.Hdr.Name = fakeOwner
	corrupt := dns.Copy(good).(*dns.RRSIG)
	raw, _ := base64.StdEncoding.DecodeString(corrupt.Signature)
	raw[len(raw)/2] ^= 0xff
	corrupt.Signature = base64.StdEncoding.EncodeToString(raw)

	want := RRSet{Owner: fakeOwner, TTL: 60 * time.Second, Records: []tlsa.Record{a, b}}
	for _, tc := range []struct {
		what   string
		rrs    []dns.RR
		signed bool
		err    error  // nil: converges
		text   string // in the error
	}{
		{"valid RRSIG, served TTL above the requested one", append(served, good, key.key), true, nil, ""},
		{"one valid RRSIG beside an expired one", append(served, expired, good, key.key, other.key), true, nil, ""},
		{"unsigned zone", served, false, nil, ""},
		{"RRSIG missing", append(served, key.key), true, ErrRRSIGMissing,
			"serves the expected records at serial 7, but RRSIG missing: zone sig.test. is signed"},
		{"RRSIG expired", append(served, expired, key.key), true, ErrRRSIGExpired, "RRSIG expired: now is "},
		{"RRSIG not valid yet", append(served, future, key.key), true, ErrRRSIGExpired, "not valid before "},
		{"signature bytes changed", append(served, corrupt, key.key), true, ErrRRSIGInvalid, "but RRSIG invalid: key tag "},
		{"signed by a key the zone does not serve", append(served, byOther, key.key), true, ErrRRSIGInvalid,
			"no DNSKEY of sig.test. with that tag"},
		{"RRSIG over other records", append(served, otherData, key.key), true, ErrRRSIGInvalid, "RRSIG invalid"},
		{"RRSIG but no DNSKEY", append(served, good), false, ErrRRSIGInvalid, "serves no DNSKEY"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			f := newFakeAuth(t)
			f.set(nil, false, tc.rrs...)
			timeout := 5 * time.Second
			if tc.err != nil {
				timeout = 300 * time.Millisecond
			}
			p, err := WaitPropagated(ctx, f.servers(), want,
				PropagationOptions{Interval: 50 * time.Millisecond, Timeout: timeout, QueryTimeout: time.Second})
			st := p.Addrs[0]
			if st.Signed != tc.signed || st.Zone != fakeZone || st.TTL != time.Hour {
				t.Errorf("signed %v, zone %q, TTL %s; want signed %v, zone %s, TTL 1h", st.Signed, st.Zone, st.TTL, tc.signed, fakeZone)
			}
			if tc.err == nil {
				if err != nil || !st.Converged || st.SigErr != nil {
					t.Fatalf("WaitPropagated: %v (state %+v)", err, st)
				}
				return
			}
			if !errors.Is(err, ErrNotPropagated) || !errors.Is(st.SigErr, tc.err) || st.Converged {
				t.Fatalf("err = %v, SigErr = %v; want ErrNotPropagated and %v", err, st.SigErr, tc.err)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q does not contain %q", err, tc.text)
			}
		})
	}
}

func TestObserveTLSA(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := newZoneKey(t)
	a := propRec(3, 0xab)
	now := time.Now()
	rrset := []dns.RR{tlsaRR(t, 600, a)}
	sig := key.sign(t, rrset, now.Add(-time.Hour), now.Add(time.Hour))
	soa := func(ttl, minimum string) *dns.SOA {
		return mustRR(t, fakeZone+" "+ttl+" IN SOA ns.sig.test. h.sig.test. 7 3600 600 86400 "+minimum).(*dns.SOA)
	}
	for _, tc := range []struct {
		what    string
		soa     *dns.SOA
		noAA    bool
		rrs     []dns.RR
		check   func(AddrState) bool
		explain string
	}{
		{"records and TTL as served", nil, false, append(rrset, sig, key.key), func(s AddrState) bool {
			return len(s.Records) == 1 && s.Records[0].Equal(a) && s.TTL == 10*time.Minute && s.Signed &&
				s.SigErr == nil && s.NegTTL == 0 && s.Serial == 7 && s.SerialOK && !s.Converged
		}, "one record, TTL 10m, signed and verified, serial 7"},
		{"NODATA: SOA MINIMUM below the SOA TTL", soa("300", "120"), false, []dns.RR{mustRR(t, "_25._tcp.mail.sig.test. 60 IN TXT x")},
			func(s AddrState) bool {
				return len(s.Records) == 0 && s.Rcode == dns.RcodeSuccess && s.NegTTL == 2*time.Minute && s.Err == nil
			}, "NODATA with negative TTL 2m"},
		{"NXDOMAIN: SOA TTL below the MINIMUM", soa("50", "120"), false, nil, func(s AddrState) bool {
			return len(s.Records) == 0 && s.Rcode == dns.RcodeNameError && s.NegTTL == 50*time.Second
		}, "NXDOMAIN with negative TTL 50s"},
		{"CNAME at the owner", nil, false, []dns.RR{mustRR(t, fakeOwner+" 60 IN CNAME _dane.Other.test.")}, func(s AddrState) bool {
			return s.CNAME == "_dane.other.test." && len(s.Records) == 0 && s.NegTTL == 0
		}, "a CNAME to _dane.other.test., not an empty RRset"},
		{"not authoritative", nil, true, rrset, func(s AddrState) bool {
			return s.Err != nil && strings.Contains(s.Err.Error(), "without the AA bit")
		}, "an error: not authoritative"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			f := newFakeAuth(t)
			f.set(tc.soa, tc.noAA, tc.rrs...)
			got, err := ObserveTLSA(ctx, f.servers(), strings.ToUpper(fakeOwner), PropagationOptions{QueryTimeout: time.Second})
			if err != nil || len(got) != 1 {
				t.Fatalf("ObserveTLSA = %+v, %v", got, err)
			}
			if got[0].Addr != f.addr || got[0].Polls != 1 || got[0].At.IsZero() || !tc.check(got[0]) {
				t.Errorf("got %+v; want %s", got[0], tc.explain)
			}
		})
	}

	// Bad input, a server without address, one that does not answer.
	if _, err := ObserveTLSA(ctx, nil, fakeOwner, PropagationOptions{}); !errors.Is(err, ErrConfig) {
		t.Errorf("no servers: err = %v", err)
	}
	if _, err := ObserveTLSA(ctx, []AuthServer{{Name: "x."}}, "", PropagationOptions{}); !errors.Is(err, ErrConfig) {
		t.Errorf("no owner: err = %v", err)
	}
	got, err := ObserveTLSA(ctx, []AuthServer{{Name: "noaddr."},
		{Name: "dead.", Addrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}}}, fakeOwner,
		PropagationOptions{QueryTimeout: 300 * time.Millisecond})
	if err != nil || len(got) != 2 || got[0].Err == nil || got[1].Err == nil || got[1].Server != "dead." {
		t.Errorf("unreachable servers: %+v, %v", got, err)
	}
}

func TestVerifyRRSIGTimes(t *testing.T) {
	key := newZoneKey(t)
	rrset := []dns.RR{tlsaRR(t, 60, propRec(3, 1))}
	now := time.Now()
	sig := key.sign(t, rrset, now.Add(-time.Hour), now.Add(time.Hour))
	for _, tc := range []struct {
		what string
		at   time.Time
		want error
	}{
		{"inside", now, nil},
		{"at inception", now.Add(-time.Hour).Truncate(time.Second), nil},
		{"at expiration", now.Add(time.Hour).Truncate(time.Second), nil},
		{"after expiration", now.Add(time.Hour + 2*time.Second), ErrRRSIGExpired},
		{"before inception", now.Add(-time.Hour - 2*time.Second), ErrRRSIGExpired},
	} {
		err := verifyRRSIG(rrset, []*dns.RRSIG{sig}, []*dns.DNSKEY{key.key}, fakeZone, tc.at)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: err = %v, want %v", tc.what, err, tc.want)
		}
	}
}
