package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/tlsa"
)

func TestCheckReadDomains(t *testing.T) {
	in := "# government domains\nexample.nl\n\n   \n  example.org   # second\n\t# indented comment\nEXAMPLE.com\n"
	got, err := readDomains(strings.NewReader(in), "list")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"example.nl", "example.org", "EXAMPLE.com"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, err := readDomains(strings.NewReader("# only comments\n\n"), "list"); err != nil || len(got) != 0 {
		t.Errorf("comments only: %q %v", got, err)
	}
	_, err = readDomains(strings.NewReader("a.nl\nb.nl,c.nl d.nl\n"), "list.csv")
	if err == nil || !strings.Contains(err.Error(), "list.csv:2") {
		t.Errorf("two words on line 2: %v", err)
	}
}

// unreachableResolver returns a UDP address nothing listens on.
func unreachableResolver(t *testing.T) string {
	t.Helper()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	return addr
}

// TestCheckDomainsFromStdin: "-" reads stdin; with --json each domain is a
// line, then the summary; exit code from the worst status; nothing on
// stderr (not a terminal: no progress display).
func TestCheckDomainsFromStdin(t *testing.T) {
	out, errOut, code := runCLI(t, "# list\na.test\n\nb.test # b\n", "check", "--resolver", unreachableResolver(t), "--timeout", "5s", "--domains-from", "-", "--json")
	if code != 3 {
		t.Fatalf("exit %d, want 3 (UNKNOWN)\n%s%s", code, out, errOut)
	}
	if errOut != "" {
		t.Errorf("stderr not empty without a terminal: %q", errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 2 domain lines and a summary, got:\n%s", out)
	}
	seen := map[string]bool{}
	for _, l := range lines[:2] {
		var r struct {
			Type   string `json:"type"`
			Status string `json:"status"`
			Domain struct {
				Domain string `json:"domain"`
			} `json:"domain"`
			Findings []struct {
				Code string `json:"code"`
			} `json:"findings"`
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if r.Type != "domain" || r.Status != "UNKNOWN" || len(r.Findings) != 1 || r.Findings[0].Code != "mx-lookup-failed" {
			t.Errorf("line %s", l)
		}
		seen[r.Domain.Domain] = true
	}
	if !seen["a.test."] || !seen["b.test."] {
		t.Errorf("domains %v", seen)
	}
	var s struct {
		Type     string         `json:"type"`
		Status   string         `json:"status"`
		Domains  int            `json:"domains"`
		ByStatus map[string]int `json:"domains_by_status"`
		Findings map[string]int `json:"findings_by_code"`
	}
	if err := json.Unmarshal([]byte(lines[2]), &s); err != nil {
		t.Fatal(err)
	}
	if s.Type != "summary" || s.Status != "UNKNOWN" || s.Domains != 2 || s.ByStatus["UNKNOWN"] != 2 || s.Findings["mx-lookup-failed"] != 2 {
		t.Errorf("summary %s", lines[2])
	}

	// Text: streamed finding lines, then the counts and the status line.
	out, _, code = runCLI(t, "a.test\n", "check", "--resolver", unreachableResolver(t), "--timeout", "5s", "--domains-from", "-")
	if code != 3 || !strings.Contains(out, "UNKNOWN a.test: MX lookup failed") ||
		!strings.Contains(out, "domains: 1 (1 UNKNOWN)\nhosts: 0 (none)\nfindings: mx-lookup-failed 1\nUNKNOWN: 0 host(s) checked, 1 finding(s)\n") {
		t.Errorf("exit %d, text:\n%s", code, out)
	}
}

func TestCheckDomainsFromErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("a.nl\nb.nl c.nl\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runCLI(t, "", "check", "--resolver", "127.0.0.1", "--domains-from", bad)
	if code != 3 || !strings.Contains(errOut, "bad.txt:2") {
		t.Errorf("bad line: exit %d, %q", code, errOut)
	}
	_, errOut, code = runCLI(t, "", "check", "--resolver", "127.0.0.1", "--domains-from", filepath.Join(dir, "missing.txt"))
	if code != 3 || !strings.Contains(errOut, "missing.txt") {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
	_, errOut, code = runCLI(t, "# nothing\n", "check", "--resolver", "127.0.0.1", "--domains-from", "-")
	if code != 3 || !strings.Contains(errOut, "nothing to check") {
		t.Errorf("empty list: exit %d, %q", code, errOut)
	}
	_, errOut, code = runCLI(t, "", "check", "--resolver", "127.0.0.1", "--per-address", "0", "a.nl")
	if code != 3 || !strings.Contains(errOut, "--per-address") {
		t.Errorf("--per-address 0: exit %d, %q", code, errOut)
	}
}

// TestCheckProgressSilent: no progress display unless stderr is a terminal.
func TestCheckProgressSilent(t *testing.T) {
	if p := newProgress(&bytes.Buffer{}, 10, "domains"); p != nil {
		t.Error("progress on a buffer")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if p := newProgress(f, 10, "domains"); p != nil {
		t.Error("progress on a regular file")
	}
	var p *progress // nil: every method is a no-op
	p.result(checkResultForTest())
	p.finish()
}

// TestCheckDomainsFromLive: five domains of a signed zone share one MX host
// with good TLSA. --domains-from with --json streams one host line (the
// host is checked once), five domain lines and the summary; exit 0.
func TestCheckDomainsFromLive(t *testing.T) {
	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{{Name: "bulk.test.", Signed: true}}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ds, err := knot.DS(ctx, "bulk.test.")
	if err != nil {
		t.Fatal(err)
	}
	unbound := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: []testbed.StubZone{{Name: "bulk.test.", Addr: knot.Addr, TrustAnchor: ds}}})
	chain := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"mx.bulk.test"}})
	cert := chain.TLSCertificate()
	srv := testbed.NewSMTPServer(t, testbed.SMTPStartTLS, &cert)
	_, port, _ := net.SplitHostPort(srv.Addr)
	var rrs []dns.RR
	add := func(s string) {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		rrs = append(rrs, rr)
	}
	var list strings.Builder
	list.WriteString("# five domains, one MX host\n")
	for i := range 5 {
		add(fmt.Sprintf("d%d.bulk.test. 60 IN MX 10 mx.bulk.test.", i))
		fmt.Fprintf(&list, "d%d.bulk.test\n", i)
	}
	add("mx.bulk.test. 60 IN A 127.0.0.1")
	for _, c := range []*testbed.Cert{chain.Leaf, chain.Intermediate} {
		u := tlsa.DANEEE
		if c == chain.Intermediate {
			u = tlsa.DANETA
		}
		r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: c.Cert, SPKI: c.SPKIDER}, u, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		add(fmt.Sprintf("_%s._tcp.mx.bulk.test. 60 IN TLSA %s", port, r))
	}
	if err := knot.Update(ctx, "bulk.test.", rrs, nil); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "domains.txt")
	if err := os.WriteFile(file, []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, "", "check", "--resolver", unbound.Addr, "--port", port, "--domains-from", file, "--json")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	types := map[string]int{}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, l := range lines {
		var r map[string]json.RawMessage
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %d %q: %v", i+1, l, err)
		}
		var typ string
		_ = json.Unmarshal(r["type"], &typ)
		types[typ]++
		if typ == "summary" && i != len(lines)-1 {
			t.Errorf("summary on line %d of %d", i+1, len(lines))
		}
		if typ == "host" {
			var h struct {
				Host struct {
					Host      string `json:"host"`
					Addresses []struct {
						Matched int `json:"matching_records"`
					} `json:"addresses"`
				} `json:"host"`
				Status string `json:"status"`
			}
			_ = json.Unmarshal([]byte(l), &h)
			if h.Host.Host != "mx.bulk.test." || h.Status != "OK" || len(h.Host.Addresses) != 1 || h.Host.Addresses[0].Matched != 2 {
				t.Errorf("host line %s", l)
			}
		}
	}
	if !reflect.DeepEqual(types, map[string]int{"host": 1, "domain": 5, "summary": 1}) {
		t.Errorf("line types %v:\n%s", types, out)
	}
	if !strings.Contains(lines[len(lines)-1], `"hosts_by_status":{"OK":1}`) || !strings.Contains(lines[len(lines)-1], `"domains_by_status":{"OK":5}`) {
		t.Errorf("summary %s", lines[len(lines)-1])
	}

	// Positional domains keep the single JSON document.
	out, _, code = runCLI(t, "", "check", "--resolver", unbound.Addr, "--port", port, "--json", "d0.bulk.test", "d1.bulk.test")
	var rep struct {
		Status string            `json:"status"`
		Hosts  []json.RawMessage `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || rep.Status != "OK" || len(rep.Hosts) != 1 {
		t.Errorf("single document: exit %d, %v\n%s", code, err, out)
	}
}

func checkResultForTest() check.Result { return check.Result{Type: "domain", Status: check.Warning} }
