package outbound

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
)

// TestCheckResolverLive asks a validating Unbound and a non-validating one
// (module-config "iterator") about a signed zone on Knot and a zone whose
// trust anchor is wrong (bogus).
func TestCheckResolverLive(t *testing.T) {
	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{
		{Name: "signed-res.test", Signed: true, Records: []string{"www A 127.0.0.9"}},
		{Name: "bogus-res.test", Signed: true, Records: []string{"www A 127.0.0.10"}},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ds, err := knot.DS(ctx, "signed-res.test")
	if err != nil {
		t.Fatal(err)
	}
	bds, err := knot.DS(ctx, "bogus-res.test")
	if err != nil {
		t.Fatal(err)
	}
	stubs := []testbed.StubZone{
		{Name: "signed-res.test", Addr: knot.Addr, TrustAnchor: ds},
		{Name: "bogus-res.test", Addr: knot.Addr, TrustAnchor: testbed.CorruptDS(bds)},
	}
	validating := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: stubs})
	plain := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: stubs, Extra: []string{`module-config: "iterator"`}})
	codes := func(fs []Finding) map[string]Severity {
		m := map[string]Severity{}
		for _, f := range fs {
			m[f.Code] = f.Severity
		}
		return m
	}
	cfg := ResolverConfig{Signed: "www.signed-res.test", Bogus: "www.bogus-res.test", Timeout: 3 * time.Second}

	cfg.Addr = validating.Addr
	rep, fs := CheckResolver(ctx, cfg)
	c := codes(fs)
	if !rep.Validates || !rep.Loopback || c["resolver-signed-ad"] != OK || c["resolver-bogus-servfail"] != OK || c["resolver-path"] != OK {
		t.Errorf("validating: %+v %v", rep, fs)
	}

	cfg.Addr = plain.Addr
	rep, fs = CheckResolver(ctx, cfg)
	c = codes(fs)
	if rep.Validates || c["resolver-no-ad"] != Critical || c["resolver-accepts-bogus"] != Critical {
		t.Errorf("non-validating: %+v %v", rep, fs)
	}

	// Names whose authority is unreachable (Unbound either gives up with
	// SERVFAIL or outlasts the timeout): UNKNOWN, never CRITICAL — nothing
	// is proven either way.
	cfg.Addr = validating.Addr
	cfg.Signed = "www.unreachable-res.test"
	cfg.Bogus = "www.unreachable-res.test"
	rep, fs = CheckResolver(ctx, cfg)
	unknowns := 0
	for _, f := range fs {
		if f.Severity == Critical {
			t.Errorf("unreachable names: %s", f)
		}
		if f.Severity == Unknown {
			unknowns++
		}
	}
	if unknowns != 2 || rep.Validates {
		t.Errorf("unreachable names: %+v %v", rep, fs)
	}

	// Nobody listens: UNKNOWN.
	l, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg = ResolverConfig{Addr: l.LocalAddr().String(), Signed: "www.signed-res.test", Bogus: "www.bogus-res.test", Timeout: time.Second}
	l.Close()
	_, fs = CheckResolver(ctx, cfg)
	if c := codes(fs); c["resolver-unreachable"] != Unknown || c["resolver-bogus-no-answer"] != Unknown {
		t.Errorf("no resolver: %v", fs)
	}
}
