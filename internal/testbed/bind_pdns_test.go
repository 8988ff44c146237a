package testbed

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// authServer is what the BIND and PowerDNS helpers (and Knot) expose.
type authServer interface {
	DS(ctx context.Context, zone string) (string, error)
	Update(ctx context.Context, zone string, add, remove []dns.RR) error
	Log() string
}

func TestBINDAndPowerDNS(t *testing.T) {
	t.Parallel()
	zones := []Zone{
		{Name: "signed.test", Signed: true, Records: []string{"mail A 127.0.0.1"}},
		{Name: "plain.test", Records: []string{"mail A 127.0.0.1"}},
	}
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) (authServer, string)
	}{
		{"bind", func(t *testing.T) (authServer, string) {
			b := NewBIND(t, BINDConfig{Zones: zones})
			return b, b.Addr
		}},
		{"pdns", func(t *testing.T) (authServer, string) {
			d := NewPowerDNS(t, PowerDNSConfig{Zones: zones})
			return d, d.Addr
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			s, addr := tc.start(t)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("%s log:\n%s", tc.name, tail(s.Log(), 6000))
				}
			})

			// Signed zone: SOA and A answer with RRSIG; DS derivable.
			for _, q := range []struct {
				name  string
				qtype uint16
			}{{"signed.test", dns.TypeSOA}, {"mail.signed.test", dns.TypeA}} {
				r, err := Query(ctx, addr, q.name, q.qtype)
				if err != nil {
					t.Fatal(err)
				}
				if !hasType(r.Answer, q.qtype) || !hasType(r.Answer, dns.TypeRRSIG) {
					t.Fatalf("%s %s: want answer with RRSIG, got\n%v", q.name, dns.TypeToString[q.qtype], r)
				}
			}
			ds, err := s.DS(ctx, "signed.test")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(ds, "signed.test.") || !strings.Contains(ds, "\tDS\t") {
				t.Fatalf("DS = %q", ds)
			}
			// Unsigned zone: no RRSIG.
			r, err := Query(ctx, addr, "mail.plain.test", dns.TypeA)
			if err != nil {
				t.Fatal(err)
			}
			if !hasType(r.Answer, dns.TypeA) || hasType(r.Answer, dns.TypeRRSIG) {
				t.Fatalf("mail.plain.test A: want unsigned answer, got\n%v", r)
			}

			// TSIG-signed update: visible at once, signed in the signed zone.
			tlsaRR := mustRR(t, "_25._tcp.mail.signed.test. 60 IN TLSA 3 1 1 "+strings.Repeat("ab", 32))
			if err := s.Update(ctx, "signed.test", []dns.RR{tlsaRR}, nil); err != nil {
				t.Fatal(err)
			}
			eventually(t, ctx, "TLSA after update", func() error {
				r, err := Query(ctx, addr, "_25._tcp.mail.signed.test", dns.TypeTLSA)
				if err != nil {
					return err
				}
				if !answerHas(r, dns.TypeTLSA, strings.Repeat("ab", 32)) || !hasType(r.Answer, dns.TypeRRSIG) {
					return errors.New("no signed TLSA yet: " + r.String())
				}
				return nil
			})

			// An update without TSIG is refused and changes nothing.
			other := mustRR(t, "_25._tcp.mail.signed.test. 60 IN TLSA 3 1 1 "+strings.Repeat("cd", 32))
			err = SendUpdate(ctx, addr, "signed.test", nil, []dns.RR{other}, nil)
			var re *RcodeError
			if !errors.As(err, &re) || (re.Rcode != dns.RcodeRefused && re.Rcode != dns.RcodeNotAuth) {
				t.Fatalf("unsigned update: want REFUSED or NOTAUTH, got %v", err)
			}
			r, err = Query(ctx, addr, "_25._tcp.mail.signed.test", dns.TypeTLSA)
			if err != nil {
				t.Fatal(err)
			}
			if answerHas(r, dns.TypeTLSA, strings.Repeat("cd", 32)) {
				t.Fatalf("unsigned update was applied:\n%v", r)
			}
		})
	}
}
