package testbed

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPebbleTwoInstances starts two Pebble servers at once: both answer on
// their own loopback ports, and each is a different CA (fresh root and
// intermediate per start), the intermediate chaining to its root.
func TestPebbleTwoInstances(t *testing.T) {
	t.Parallel()
	u := NewUnbound(t, UnboundConfig{})
	p1 := NewPebble(t, PebbleConfig{DNSServer: u.Addr})
	p2 := NewPebble(t, PebbleConfig{DNSServer: u.Addr, Env: []string{"PEBBLE_WFE_NONCEREJECT=0"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if p1.DirectoryURL == p2.DirectoryURL || p1.ManagementAddr == p2.ManagementAddr {
		t.Fatalf("the instances share an address: %s %s", p1.DirectoryURL, p2.DirectoryURL)
	}
	type ca struct{ root, inter *x509.Certificate }
	var cas []ca
	for _, p := range []*Pebble{p1, p2} {
		if !strings.HasPrefix(p.DirectoryURL, "https://127.0.0.1:") {
			t.Errorf("directory %s is not on loopback", p.DirectoryURL)
		}
		b, err := os.ReadFile(p.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		if blk, _ := pem.Decode(b); blk == nil {
			t.Fatalf("CAFile %s holds no PEM", p.CAFile)
		}
		rootPEM, err := p.Root(ctx)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(rootPEM)
		root, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		_, inter, err := p.Intermediate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !inter.IsCA || !root.IsCA {
			t.Errorf("root CA=%v, intermediate CA=%v", root.IsCA, inter.IsCA)
		}
		if err := inter.CheckSignatureFrom(root); err != nil {
			t.Errorf("the intermediate %q is not signed by the root %q: %v", inter.Subject, root.Subject, err)
		}
		// The directory is served with the minica certificate, nothing else.
		if _, err := p.get(ctx, p.DirectoryURL); err != nil {
			t.Errorf("directory: %v", err)
		}
		cas = append(cas, ca{root, inter})
	}
	if cas[0].root.Equal(cas[1].root) || string(cas[0].inter.RawSubjectPublicKeyInfo) == string(cas[1].inter.RawSubjectPublicKeyInfo) {
		t.Error("the two Pebble instances share a CA key")
	}
	if err := cas[1].inter.CheckSignatureFrom(cas[0].root); err == nil {
		t.Error("the second intermediate verifies under the first root")
	}
	if !strings.Contains(p1.Log(), "Configured to reject 5% of good nonces") || !strings.Contains(p2.Log(), "reject 0% of good nonces") {
		t.Errorf("the environment did not reach Pebble:\n%s\n%s", tail(p1.Log(), 800), tail(p2.Log(), 800))
	}
}

// TestPebbleLoopbackOnly: a DNS server or listen address outside 127/8 is
// refused before anything starts.
func TestPebbleLoopbackOnly(t *testing.T) {
	t.Parallel()
	RequirePebble(t)
	for _, cfg := range []PebbleConfig{
		{DNSServer: "192.0.2.1:53"},
		{DNSServer: ""},
		{DNSServer: "127.0.0.1:53", IP: "0.0.0.0"},
	} {
		if p, err := StartPebble(context.Background(), t.TempDir(), cfg); err == nil {
			p.Stop()
			t.Errorf("%+v: started", cfg)
		}
	}
}
