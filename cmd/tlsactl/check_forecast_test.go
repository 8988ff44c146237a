package main

import (
	"context"
	"crypto/tls"
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

// forecastJSON is the part of `tlsactl check --json` this test reads.
type forecastJSON struct {
	Status string `json:"status"`
	Hosts  []struct {
		Addresses []struct {
			Matched  int `json:"matching_records"`
			Forecast *struct {
				Records []struct {
					Record string     `json:"record"`
					Until  *time.Time `json:"until"`
					Why    string     `json:"why"`
				} `json:"records"`
				BreaksAt   *time.Time `json:"breaks_at"`
				BreakDays  *float64   `json:"break_days"`
				SingleAt   *time.Time `json:"single_at"`
				SingleDays *float64   `json:"single_days"`
			} `json:"forecast"`
		} `json:"addresses"`
	} `json:"hosts"`
	Findings []struct {
		Code     string `json:"code"`
		Severity string `json:"severity"`
	} `json:"findings"`
}

// TestCheckForecastLive runs `tlsactl check --json` against live hosts
// (Knot, a validating Unbound, STARTTLS servers), reads the forecast and
// cross-checks every predicted instant with `tlsactl match --time`: the
// records match one second before it and no longer one second after.
func TestCheckForecastLive(t *testing.T) {
	zone := "fc.test."
	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{{Name: zone, Signed: true}}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ds, err := knot.DS(ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	unbound := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: []testbed.StubZone{{Name: zone, Addr: knot.Addr, TrustAnchor: ds}}})

	now := time.Now()
	v := func(d time.Duration) testbed.Validity {
		return testbed.Validity{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(d)}
	}
	const day = 24 * time.Hour
	rec := func(c *testbed.Cert, u tlsa.Usage) string {
		r, err := tlsa.Compute(tlsa.FromCertificate(c.Cert), u, tlsa.SelectorSPKI, tlsa.MatchSHA256)
		if err != nil {
			t.Fatal(err)
		}
		return r.String()
	}
	type scenario struct {
		name       string
		chain      *testbed.Chain
		withRoot   bool // serve the root too
		records    func(c *testbed.Chain) []string
		wantStatus string
		wantBreaks bool   // BreaksAt set
		wantSingle bool   // SingleAt set
		wantCode   string // a finding that must be present
	}
	scenarios := []scenario{
		{
			name:  "ncsc", // 3 1 1 + 2 1 1 of the intermediate, 90-day leaf
			chain: testbed.MustValidityChain(t, testbed.ValidityChainOptions{DNSNames: []string{"ncsc.fc.test"}}),
			records: func(c *testbed.Chain) []string {
				return []string{rec(c.Leaf, tlsa.DANEEE), rec(c.Intermediate, tlsa.DANETA)}
			},
			wantStatus: "OK", wantSingle: true,
		},
		{
			name: "inter", // 2 1 1 of the root and of the intermediate; the intermediate expires first
			chain: testbed.MustValidityChain(t, testbed.ValidityChainOptions{DNSNames: []string{"inter.fc.test"},
				Root: v(10 * 365 * day), Intermediate: v(20*day + 3*time.Hour), Leaf: v(60 * day)}),
			withRoot: true,
			records: func(c *testbed.Chain) []string {
				return []string{rec(c.Root, tlsa.DANETA), rec(c.Intermediate, tlsa.DANETA)}
			},
			wantStatus: "OK", wantBreaks: true, wantSingle: true,
		},
		{
			name:  "short", // a single 2 1 1, leaf expires in 5 days: DANE breaks, CRITICAL
			chain: testbed.MustValidityChain(t, testbed.ValidityChainOptions{DNSNames: []string{"short.fc.test"}, Leaf: v(5*day + 6*time.Hour)}),
			records: func(c *testbed.Chain) []string {
				return []string{rec(c.Intermediate, tlsa.DANETA)}
			},
			wantStatus: "CRITICAL", wantBreaks: true, wantCode: "dane-breaks",
		},
	}

	dir := t.TempDir()
	type live struct {
		scenario
		host, port, chainFile string
	}
	var hosts []live
	var add []dns.RR
	for _, sc := range scenarios {
		c := sc.chain
		tc := tls.Certificate{Certificate: [][]byte{c.Leaf.DER, c.Intermediate.DER}, PrivateKey: c.Leaf.Key, Leaf: c.Leaf.Cert}
		pem := append(append([]byte{}, c.Leaf.PEM...), c.Intermediate.PEM...)
		if sc.withRoot {
			tc.Certificate = append(tc.Certificate, c.Root.DER)
			pem = append(pem, c.Root.PEM...)
		}
		srv := testbed.NewSMTPServer(t, testbed.SMTPStartTLS, &tc)
		_, port, _ := net.SplitHostPort(srv.Addr)
		host := sc.name + ".fc.test"
		file := filepath.Join(dir, sc.name+".pem")
		if err := os.WriteFile(file, pem, 0o644); err != nil {
			t.Fatal(err)
		}
		lines := []string{host + ". 1 IN A 127.0.0.1"}
		for _, r := range sc.records(c) {
			lines = append(lines, fmt.Sprintf("_%s._tcp.%s. 1 IN TLSA %s", port, host, r))
		}
		for _, l := range lines {
			rr, err := dns.NewRR(l)
			if err != nil {
				t.Fatalf("bad test record %q: %v", l, err)
			}
			add = append(add, rr)
		}
		hosts = append(hosts, live{sc, host, port, file})
	}
	if err := knot.Update(ctx, zone, add, nil); err != nil {
		t.Fatal(err)
	}

	// match runs `tlsactl match --time at` and reports whether it matched.
	match := func(l live, at time.Time, recs []string) bool {
		t.Helper()
		args := []string{"match", "--chain", l.chainFile, "--host", l.host, "--time", at.UTC().Format(time.RFC3339)}
		for _, r := range recs {
			args = append(args, "--record", r)
		}
		out, errOut, code := runCLI(t, "", args...)
		if code != 0 && code != exitNoMatch {
			t.Fatalf("match: exit %d\n%s%s", code, out, errOut)
		}
		return code == 0
	}
	around := func(l live, what string, at time.Time, recs []string) {
		t.Helper()
		if !match(l, at.Add(-time.Second), recs) {
			t.Errorf("%s: %s: no match at %s − 1 s", l.name, what, at.Format(time.RFC3339))
		}
		if match(l, at.Add(time.Second), recs) {
			t.Errorf("%s: %s: still matches at %s + 1 s", l.name, what, at.Format(time.RFC3339))
		}
	}

	for _, l := range hosts {
		t.Run(l.name, func(t *testing.T) {
			args := []string{"check", "--resolver", unbound.Addr, "--port", l.port, "--host", l.host, "--json"}
			want := map[string]int{"OK": 0, "WARNING": 1, "CRITICAL": 2}[l.wantStatus]
			out, errOut, code := runCLI(t, "", args...)
			if code != want {
				t.Fatalf("check: exit %d, want %d\n%s%s", code, want, out, errOut)
			}
			var rep forecastJSON
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("--json: %v\n%s", err, out)
			}
			if len(rep.Hosts) != 1 || len(rep.Hosts[0].Addresses) != 1 || rep.Hosts[0].Addresses[0].Forecast == nil {
				t.Fatalf("no forecast:\n%s", out)
			}
			a := rep.Hosts[0].Addresses[0]
			fc := a.Forecast
			b, _ := json.Marshal(fc)
			t.Logf("%s: status %s, forecast %s", l.name, rep.Status, b)
			if rep.Status != l.wantStatus || len(fc.Records) != a.Matched || (fc.BreaksAt != nil) != l.wantBreaks || (fc.SingleAt != nil) != l.wantSingle {
				t.Fatalf("status %s, forecast %s", rep.Status, b)
			}
			if l.wantCode != "" {
				found := false
				for _, f := range rep.Findings {
					found = found || f.Code == l.wantCode
				}
				if !found {
					t.Errorf("finding %s missing: %+v", l.wantCode, rep.Findings)
				}
			}
			var all []string
			for _, r := range fc.Records {
				all = append(all, r.Record)
				if r.Until == nil {
					if !strings.HasPrefix(r.Record, "3 ") || !match(l, now.Add(10*365*day), []string{r.Record}) {
						t.Errorf("%s: no end forecast for %s, yet it stops matching", l.name, r.Record)
					}
					continue
				}
				around(l, r.Record+" until", *r.Until, []string{r.Record})
			}
			if fc.BreaksAt != nil {
				around(l, "breaks_at", *fc.BreaksAt, all)
			}
			switch l.name {
			case "ncsc":
				if !fc.SingleAt.Equal(l.chain.Leaf.Cert.NotAfter.Truncate(time.Second)) {
					t.Errorf("single_at %s, want the leaf's NotAfter %s", fc.SingleAt, l.chain.Leaf.Cert.NotAfter)
				}
			case "inter":
				if !fc.SingleAt.Equal(l.chain.Intermediate.Cert.NotAfter.Truncate(time.Second)) || !fc.BreaksAt.Equal(l.chain.Leaf.Cert.NotAfter.Truncate(time.Second)) {
					t.Errorf("single_at %s (intermediate %s), breaks_at %s (leaf %s)", fc.SingleAt, l.chain.Intermediate.Cert.NotAfter, fc.BreaksAt, l.chain.Leaf.Cert.NotAfter)
				}
			}

			// Text output and metrics carry the same forecast.
			prom := filepath.Join(t.TempDir(), "t.prom")
			out, _, _ = runCLI(t, "", append(args[:len(args)-1], "--prometheus", prom)...)
			if !strings.Contains(out, "    forecast: ") {
				t.Errorf("text output lacks the forecast line:\n%s", out)
			}
			pb, err := os.ReadFile(prom)
			if err != nil {
				t.Fatal(err)
			}
			mf := families(t, string(pb))
			ha := []string{"host", l.host, "address", "127.0.0.1"}
			_, usable := value(mf, "tlsactl_tlsa_usable_records", ha...)
			_, breaks := value(mf, "tlsactl_dane_break_days", ha...)
			_, single := value(mf, "tlsactl_dane_single_record_days", ha...)
			if !usable || breaks != l.wantBreaks || single != l.wantSingle {
				t.Errorf("prometheus file (break days present %v, want %v; single record days %v, want %v):\n%s", breaks, l.wantBreaks, single, l.wantSingle, pb)
			}
			t.Logf("%s text:\n%s", l.name, out)
		})
	}
}
