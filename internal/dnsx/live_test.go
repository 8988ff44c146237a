package dnsx

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
)

// digest returns a distinct 32-byte hex string per label.
func digest(label string) string {
	h := sha256.Sum256([]byte(label))
	return hex.EncodeToString(h[:])
}

// TestLive runs the lookups against a real Knot (authoritative, signed and
// unsigned zones) and a real validating Unbound. Both are started once.
func TestLive(t *testing.T) {
	testbed.Require(t, "knotd", "knot")
	testbed.Require(t, "unbound", "unbound")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{
		{Name: "example.test", Signed: true, Records: []string{
			"@ MX 20 mx2",
			"@ MX 10 mail",
			"@ MX 10 alias",
			"mail A 127.0.0.1",
			"mail AAAA ::1",
			"mx2 A 127.0.0.2",
			"v6only AAAA ::2",
			"_25._tcp.mail TLSA 3 1 1 " + digest("mail-ee"),
			"_25._tcp.mail TLSA 2 1 1 " + digest("mail-ta"),
			"_25._tcp.nodata TXT \"no tlsa here\"",
			"nullmx MX 0 .",
			"nomx A 127.0.0.1",
			// alias -> real: TLSA only at the expanded name.
			"alias CNAME real",
			"real A 127.0.0.3",
			"_25._tcp.real TLSA 3 1 1 " + digest("real"),
			// alias2 -> real2: TLSA only at the original name (fallback).
			"alias2 CNAME real2",
			"real2 A 127.0.0.4",
			"_25._tcp.alias2 TLSA 3 1 1 " + digest("alias2"),
			// alias3 -> an unsigned zone: expansion insecure, original only.
			"alias3 CNAME mail.plain.test.",
			"_25._tcp.alias3 TLSA 3 1 1 " + digest("alias3"),
		}},
		{Name: "plain.test", Records: []string{
			"mail A 127.0.0.1",
			"_25._tcp.mail TLSA 3 1 1 " + digest("plain"),
		}},
		{Name: "bogus.test", Signed: true, Records: []string{
			"mail A 127.0.0.1",
			"_25._tcp.mail TLSA 3 1 1 " + digest("bogus"),
		}},
	}})
	ds, err := knot.DS(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	unbound := testbed.NewUnbound(t, testbed.UnboundConfig{
		CacheMaxTTL: 3600,
		Extra:       []string{"ede: yes"},
		Stubs: []testbed.StubZone{
			{Name: "example.test", Addr: knot.Addr, TrustAnchor: ds},
			{Name: "plain.test", Addr: knot.Addr},
			{Name: "bogus.test", Addr: knot.Addr,
				TrustAnchor: "bogus.test. IN DS 1234 13 2 58EF065CF875CF96F2D4E802F7713540829975F07F5EE361D2A946ECD63473FC"},
		},
	})
	r := &Resolver{Addr: unbound.Addr, Timeout: 5 * time.Second}
	logOnFail := func(t *testing.T) {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("unbound log:\n%s", unbound.Log())
			}
		})
	}

	t.Run("secure TLSA", func(t *testing.T) {
		logOnFail(t)
		res, err := r.LookupTLSA(ctx, 25, "mail.example.test")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, rec := range res.Records {
			got[rec.String()] = true
		}
		if res.Status != Secure || len(got) != 2 || !got["3 1 1 "+digest("mail-ee")] || !got["2 1 1 "+digest("mail-ta")] {
			t.Fatalf("got %+v", res)
		}
		if res.TTL == 0 || res.TTL > 60 || res.Name != "_25._tcp.mail.example.test." || len(res.Tried) != 1 {
			t.Fatalf("got %+v", res)
		}
	})

	t.Run("secure NODATA", func(t *testing.T) {
		logOnFail(t)
		res, err := r.LookupTLSA(ctx, 25, "nodata.example.test")
		if res != nil || !errors.Is(err, ErrNoData) || StatusOf(err) != Secure {
			t.Fatalf("got %+v, %v", res, err)
		}
		var le *LookupError
		if errors.As(err, &le); le.NegTTL == 0 {
			t.Fatalf("NegTTL 0: %+v", le)
		}
	})

	t.Run("secure NXDOMAIN", func(t *testing.T) {
		logOnFail(t)
		res, err := r.LookupTLSA(ctx, 25, "nothere.example.test")
		if res != nil || !errors.Is(err, ErrNXDomain) || StatusOf(err) != Secure {
			t.Fatalf("got %+v, %v", res, err)
		}
		if errors.Is(err, ErrNoData) {
			t.Fatal("NXDOMAIN also matches ErrNoData")
		}
	})

	t.Run("unsigned zone is insecure", func(t *testing.T) {
		logOnFail(t)
		res, err := r.LookupTLSA(ctx, 25, "mail.plain.test")
		if err != nil || res.Status != Insecure || len(res.Records) != 1 || res.Records[0].String() != "3 1 1 "+digest("plain") {
			t.Fatalf("got %+v, %v", res, err)
		}
		_, err = r.LookupTLSA(ctx, 25, "nothere.plain.test")
		if !errors.Is(err, ErrNXDomain) || StatusOf(err) != Insecure {
			t.Fatalf("insecure NXDOMAIN: %v", err)
		}
	})

	t.Run("wrong DS is bogus, not no-TLSA", func(t *testing.T) {
		logOnFail(t)
		res, err := r.LookupTLSA(ctx, 25, "mail.bogus.test")
		if res != nil || !errors.Is(err, ErrBogus) || StatusOf(err) != Bogus {
			t.Fatalf("got %+v, %v", res, err)
		}
		if errors.Is(err, ErrNoData) || errors.Is(err, ErrNXDomain) || errors.Is(err, ErrLookupFailed) {
			t.Fatalf("bogus confused with something else: %v", err)
		}
		var le *LookupError
		errors.As(err, &le)
		if le.EDE == "" {
			t.Errorf("no Extended DNS Error carried (unbound has ede: yes): %v", err)
		}
		t.Logf("bogus: %v", err)
		ar, err := r.LookupAddrs(ctx, "mail.bogus.test")
		if !errors.Is(err, ErrBogus) || ar.Status != Bogus || len(ar.Addrs) != 0 {
			t.Fatalf("addrs: %+v, %v", ar, err)
		}
		if _, err := r.LookupMX(ctx, "bogus.test"); !errors.Is(err, ErrBogus) {
			t.Fatalf("mx: %v", err)
		}
	})

	t.Run("MX sorted", func(t *testing.T) {
		logOnFail(t)
		res, err := r.LookupMX(ctx, "example.test")
		if err != nil {
			t.Fatal(err)
		}
		want := "[{alias.example.test. 10} {mail.example.test. 10} {mx2.example.test. 20}]"
		if got := fmt.Sprint(res.Hosts); got != want || res.Status != Secure || res.Null {
			t.Fatalf("got %s %+v, want %s", got, res, want)
		}
		null, err := r.LookupMX(ctx, "nullmx.example.test")
		if err != nil || !null.Null || len(null.Hosts) != 0 {
			t.Fatalf("null MX: %+v, %v", null, err)
		}
		if _, err := r.LookupMX(ctx, "nomx.example.test"); !errors.Is(err, ErrNoData) || StatusOf(err) != Secure {
			t.Fatalf("no MX: %v", err)
		}
	})

	t.Run("addresses", func(t *testing.T) {
		logOnFail(t)
		ar, err := r.LookupAddrs(ctx, "mail.example.test")
		if err != nil || ar.Status != Secure || fmt.Sprint(ar.Addrs) != "[127.0.0.1 ::1]" || ar.Canonical != "mail.example.test." {
			t.Fatalf("got %+v, %v", ar, err)
		}
		ar, err = r.LookupAddrs(ctx, "v6only.example.test")
		if err != nil || fmt.Sprint(ar.Addrs) != "[::2]" || !errors.Is(ar.A.Err, ErrNoData) || ar.A.Status != Secure {
			t.Fatalf("v6only: %+v, %v", ar, err)
		}
		ar, err = r.LookupAddrs(ctx, "nothere.example.test")
		if !errors.Is(err, ErrNXDomain) || ar.Status != Secure {
			t.Fatalf("nxdomain: %+v, %v", ar, err)
		}
	})

	t.Run("CNAME", func(t *testing.T) {
		logOnFail(t)
		// MX host that is an alias: the expanded name is reported, securely.
		ar, err := r.LookupAddrs(ctx, "alias.example.test")
		if err != nil || ar.Canonical != "real.example.test." || !ar.CanonicalSecure || fmt.Sprint(ar.Addrs) != "[127.0.0.3]" {
			t.Fatalf("addrs: %+v, %v", ar, err)
		}
		// TLSA at the expanded name wins.
		res, err := r.LookupTLSA(ctx, 25, "alias.example.test")
		if err != nil || res.BaseDomain != "real.example.test." || res.Records[0].String() != "3 1 1 "+digest("real") || res.Status != Secure {
			t.Fatalf("alias: %+v, %v", res, err)
		}
		// Nothing at the expanded name: fall back to the original.
		res, err = r.LookupTLSA(ctx, 25, "alias2.example.test")
		if err != nil || res.BaseDomain != "alias2.example.test." || res.Records[0].String() != "3 1 1 "+digest("alias2") ||
			fmt.Sprint(res.Tried) != "[_25._tcp.real2.example.test. _25._tcp.alias2.example.test.]" {
			t.Fatalf("alias2: %+v, %v", res, err)
		}
		// Expansion into an unsigned zone is not secure: original name only.
		ar, err = r.LookupAddrs(ctx, "alias3.example.test")
		if err != nil || ar.Canonical != "mail.plain.test." || ar.CanonicalSecure || ar.Status != Insecure {
			t.Fatalf("alias3 addrs: %+v, %v", ar, err)
		}
		res, err = r.LookupTLSA(ctx, 25, "alias3.example.test")
		if err != nil || res.BaseDomain != "alias3.example.test." || len(res.Tried) != 1 || res.Status != Secure ||
			res.Records[0].String() != "3 1 1 "+digest("alias3") {
			t.Fatalf("alias3: %+v, %v", res, err)
		}
	})

	t.Run("no authority reachable is not no-records", func(t *testing.T) {
		logOnFail(t)
		// Names outside the stub zones go to a closed loopback port.
		r := &Resolver{Addr: unbound.Addr, Timeout: time.Second}
		_, err := r.LookupTLSA(ctx, 25, "mail.nowhere.test")
		if !errors.Is(err, ErrBogus) && !errors.Is(err, ErrLookupFailed) {
			t.Fatalf("got %v", err)
		}
		t.Logf("unreachable authority: %v", err)
	})
}
