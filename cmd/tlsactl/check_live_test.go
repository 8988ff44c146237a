package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/tlsa"
)

// TestCheckCommandLive runs `tlsactl check` end to end against a real Knot
// (signed zone, TSIG updates), a validating Unbound and a STARTTLS server:
// exit codes, the text lines, --json and the --prometheus textfile.
func TestCheckCommandLive(t *testing.T) {
	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{{Name: "cli.test.", Signed: true}}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ds, err := knot.DS(ctx, "cli.test.")
	if err != nil {
		t.Fatal(err)
	}
	unbound := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: []testbed.StubZone{{Name: "cli.test.", Addr: knot.Addr, TrustAnchor: ds}}})

	chain := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"mx.cli.test"}})
	cert := chain.TLSCertificate()
	srv := testbed.NewSMTPServer(t, testbed.SMTPStartTLS, &cert)
	_, port, _ := net.SplitHostPort(srv.Addr)
	rec := func(c *testbed.Cert, u tlsa.Usage) string {
		r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: c.Cert, SPKI: c.SPKIDER}, u, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		return r.String()
	}
	owner := fmt.Sprintf("_%s._tcp.mx.cli.test.", port)
	update := func(add, del []string) {
		t.Helper()
		parse := func(lines []string) []dns.RR {
			var rrs []dns.RR
			for _, l := range lines {
				rr, err := dns.NewRR(l)
				if err != nil {
					t.Fatalf("bad test record %q: %v", l, err)
				}
				rrs = append(rrs, rr)
			}
			return rrs
		}
		a, d := parse(add), parse(del)
		if err := knot.Update(ctx, "cli.test.", a, d); err != nil {
			t.Fatal(err)
		}
	}
	good311 := owner + " 1 IN TLSA " + rec(chain.Leaf, tlsa.DANEEE)
	good211 := owner + " 1 IN TLSA " + rec(chain.Intermediate, tlsa.DANETA)
	update([]string{"mx.cli.test. 1 IN A 127.0.0.1", good311, good211}, nil)

	prom := filepath.Join(t.TempDir(), "tlsactl.prom")
	args := []string{"check", "--resolver", unbound.Addr, "--port", port, "--host", "mx.cli.test"}

	out, errOut, code := runCLI(t, "", append(args, "--prometheus", prom)...)
	if code != 0 {
		t.Fatalf("good host: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "OK mx.cli.test: TLSA secure (2 record(s)") || !strings.Contains(out, "2 of 2 usable record(s) match") {
		t.Errorf("text output:\n%s", out)
	}
	pb, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	// The textfile has the exporter's series and help texts (one writer:
	// exporter.WriteTextfile), and passes promtool.
	mf := families(t, string(pb))
	ha := []string{"host", "mx.cli.test", "address", "127.0.0.1"}
	expect(t, mf, 0, "tlsactl_host_status", ha...)
	expect(t, mf, 2, "tlsactl_tlsa_matching_records", ha...)
	expect(t, mf, 2, "tlsactl_tlsa_usable_records", ha...)
	expect(t, mf, 0, "tlsactl_tlsa_dnssec_bogus", "host", "mx.cli.test")
	if d, ok := value(mf, "tlsactl_certificate_expiry_days", ha...); !ok || d < 80 || d > 90 { // 90-day leaf
		t.Errorf("tlsactl_certificate_expiry_days = %g (present %v), want the 90-day leaf's ~89\n%s", d, ok, pb)
	}
	if !strings.Contains(string(pb), "# HELP tlsactl_host_status DANE check status of an MX host address") {
		t.Errorf("the textfile's help texts are not the exporter's:\n%s", pb)
	}
	for _, name := range []string{"tlsactl_check_success", "tlsactl_check_duration_seconds", "tlsactl_last_check_timestamp_seconds"} {
		if mf[name] != nil {
			t.Errorf("the textfile of a one-off check has %s, which it does not measure", name)
		}
	}
	promtoolCheck(t, string(pb))

	// A host that does not resolve keeps its status series (address=""),
	// so an alert on it fires instead of the series vanishing.
	nx := filepath.Join(t.TempDir(), "nx.prom")
	runCLI(t, "", "check", "--resolver", unbound.Addr, "--port", port, "--host", "nx.cli.test", "--prometheus", nx)
	if nb, err := os.ReadFile(nx); err != nil {
		t.Error(err)
	} else if v, ok := value(families(t, string(nb)), "tlsactl_host_status", "host", "nx.cli.test", "address", ""); !ok || v == 0 {
		t.Errorf("unresolvable host: tlsactl_host_status{address=\"\"} = %g (present %v), want a non-OK status\n%s", v, ok, nb)
	}

	// Replace the 3 1 1 with a stale one: the 2 1 1 still covers, WARNING.
	other := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"mx.cli.test"}})
	stale311 := owner + " 1 IN TLSA " + rec(other.Leaf, tlsa.DANEEE)
	update([]string{stale311}, []string{good311})
	out, _, code = waitExit(t, 1, args)
	if !strings.Contains(out, "WARNING mx.cli.test [127.0.0.1]: only 1 of 2 usable TLSA records match") {
		t.Errorf("stale 3 1 1 text:\n%s", out)
	}

	// And the 2 1 1 too: nothing matches, CRITICAL, and JSON says why.
	update([]string{owner + " 1 IN TLSA " + rec(other.Intermediate, tlsa.DANETA)}, []string{good211})
	out, _, code = waitExit(t, 2, append(args, "--json"))
	var rep struct {
		Status string `json:"status"`
		Hosts  []struct {
			Addresses []struct {
				Matched  int `json:"matching_records"`
				Verdicts []struct {
					Reason string `json:"reason"`
				} `json:"verdicts"`
			} `json:"addresses"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, out)
	}
	if rep.Status != "CRITICAL" || rep.Hosts[0].Addresses[0].Matched != 0 || len(rep.Hosts[0].Addresses[0].Verdicts) != 2 {
		t.Errorf("JSON report: %+v", rep)
	}
	_ = code
}

// waitExit runs the command until it exits with want: the resolver may hold
// the previous RRset for its 1-second TTL. It fails after 15 s.
func waitExit(t *testing.T, want int, args []string) (string, string, int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, errOut, code := runCLI(t, "", args...)
		if code == want {
			return out, errOut, code
		}
		if time.Now().After(deadline) {
			t.Fatalf("exit %d, want %d\n%s%s", code, want, out, errOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCheckResolverUnreachable: UNKNOWN (3), never "no TLSA".
func TestCheckResolverUnreachable(t *testing.T) {
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	out, _, code := runCLI(t, "", "check", "--resolver", addr, "--timeout", "5s", "example.test")
	if code != 3 || !strings.Contains(out, "UNKNOWN example.test: MX lookup failed") {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
}
