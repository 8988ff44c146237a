package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/tlsa"
)

// serveProc is a running `tlsactl serve`.
type serveProc struct {
	cmd    *exec.Cmd
	url    string // http://127.0.0.1:port
	stderr *lockedBuffer
	done   chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// buildServeBinary is tlsactl as it ships (default tags), built once for
// the package's tests.
func buildServeBinary(t *testing.T) string {
	t.Helper()
	return buildTlsactlTags(t, "")
}

var servingRE = regexp.MustCompile(`url=http://([0-9.]+:[0-9]+)/metrics`)

// startServe runs `bin serve --listen 127.0.0.1:0 args…` and waits for the
// address it serves on.
func startServe(t *testing.T, bin string, args ...string) *serveProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	pr, pw := io.Pipe()
	p := &serveProc{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = io.MultiWriter(p.stderr, pw)
	cmd.Stdout = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case a := <-found:
		p.url = "http://" + a
	case err := <-p.done:
		t.Fatalf("tlsactl serve exited: %v\n%s", err, p.stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("tlsactl serve did not report its address\n%s", p.stderr)
	}
	return p
}

// get fetches path and returns the body, the status and how long it took.
func (p *serveProc) get(t *testing.T, path string, hdr map[string]string) (string, int, time.Duration) {
	t.Helper()
	req, err := http.NewRequest("GET", p.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return "", 0, time.Since(start)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
	}
	return string(b), resp.StatusCode, time.Since(start)
}

// families parses the Prometheus text exposition with expfmt.
func families(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, text)
	}
	return mf
}

// value returns the value of name with exactly the labels given, and
// whether that series exists.
func value(mf map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := mf[name]
	if f == nil {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
series:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				continue series
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

func expect(t *testing.T, mf map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := value(mf, name, labels...)
	switch {
	case !ok:
		t.Errorf("no series %s%v", name, labels)
	case got != want:
		t.Errorf("%s%v = %g, want %g", name, labels, got, want)
	}
}

// promtoolCheck runs `promtool check metrics` on text, when promtool is
// installed (under CI=true it must be: Debian's prometheus package).
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	pt, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found (CI=true): apt-get install -y prometheus")
		}
		t.Log("promtool not found; skipping `promtool check metrics` (apt-get install -y prometheus)")
		return
	}
	cmd := exec.Command(pt, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return
	}
	// Exit 3 is "lint problems found". The names of the three day-valued
	// metrics are fixed (alert rules use them), and promtool's lint wants
	// seconds: that one complaint about them is known and tolerated;
	// anything else (exit 1: the text does not parse) fails.
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !knownDaysLint[strings.TrimSpace(line)] {
			t.Errorf("promtool check metrics: %s", line)
		}
	}
}

// knownDaysLint are promtool's complaints about the fixed metric names that
// count days, not seconds.
var knownDaysLint = map[string]bool{
	`tlsactl_certificate_expiry_days use base unit "seconds" instead of "days"`: true,
	`tlsactl_dane_break_days use base unit "seconds" instead of "days"`:         true,
	`tlsactl_dane_single_record_days use base unit "seconds" instead of "days"`: true,
}

// signedZoneBed starts Knot serving zone signed and a validating Unbound
// that trusts it; ctx ends with the test (at most two minutes).
func signedZoneBed(t *testing.T, zone string) (context.Context, *testbed.Knot, *testbed.Unbound) {
	t.Helper()
	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{{Name: zone, Signed: true}}})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	ds, err := knot.DS(ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, knot, testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: []testbed.StubZone{{Name: zone, Addr: knot.Addr, TrustAnchor: ds}}})
}

// TestServeExporterLive runs `tlsactl serve` as a process against Knot, a
// validating Unbound and a Go STARTTLS server: an OK, a WARNING and a
// CRITICAL host on the schedule (/metrics) and on demand (/probe), a dead
// host beside them, the ledger, and SIGTERM.
func TestServeExporterLive(t *testing.T) {
	const zone = "serve.test."
	ctx, knot, unbound := signedZoneBed(t, zone)

	// One STARTTLS server serves all three hosts (one port, one chain);
	// their TLSA RRsets differ.
	names := []string{"ok.serve.test", "warn.serve.test", "crit.serve.test", "dead.serve.test"}
	chain := testbed.MustChain(t, testbed.ChainOptions{DNSNames: names})
	other := testbed.MustChain(t, testbed.ChainOptions{DNSNames: names})
	cert := chain.TLSCertificate()
	srv := testbed.NewSMTPServer(t, testbed.SMTPStartTLS, &cert)
	_, port, _ := net.SplitHostPort(srv.Addr)

	// The dead host: another loopback address, the same port, a listener
	// that accepts and never says a word.
	deadIP := testbed.RandomLoopbackIP()
	dl, err := net.Listen("tcp4", net.JoinHostPort(deadIP, port))
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		for {
			c, err := dl.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, c)
			heldMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		dl.Close()
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	})

	rec := func(c *testbed.Cert, u tlsa.Usage) string {
		r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: c.Cert, SPKI: c.SPKIDER}, u, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		return r.String()
	}
	good311, good211 := rec(chain.Leaf, tlsa.DANEEE), rec(chain.Intermediate, tlsa.DANETA)
	stale311, stale211 := rec(other.Leaf, tlsa.DANEEE), rec(other.Intermediate, tlsa.DANETA)
	owner := func(h string) string { return fmt.Sprintf("_%s._tcp.%s. 1 IN TLSA ", port, h) }
	lines := []string{
		"serve.test. 1 IN MX 10 ok.serve.test.", "serve.test. 1 IN MX 20 warn.serve.test.", "serve.test. 1 IN MX 30 crit.serve.test.",
		"ok.serve.test. 1 IN A 127.0.0.1", "warn.serve.test. 1 IN A 127.0.0.1", "crit.serve.test. 1 IN A 127.0.0.1",
		"dead.serve.test. 1 IN A " + deadIP,
		owner("ok.serve.test") + good311, owner("ok.serve.test") + good211,
		owner("warn.serve.test") + stale311, owner("warn.serve.test") + good211,
		owner("crit.serve.test") + stale311, owner("crit.serve.test") + stale211,
		owner("dead.serve.test") + good311, owner("dead.serve.test") + good211,
	}
	var add []dns.RR
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("bad test record %q: %v", l, err)
		}
		add = append(add, rr)
	}
	if err := knot.Update(ctx, zone, add, nil); err != nil {
		t.Fatal(err)
	}

	// The configuration names ok and warn (with their port), --host crit,
	// and the domain's MX RRset names all three again.
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfgPath := filepath.Join(dir, "tlsactl.toml")
	cfgText := fmt.Sprintf("resolver = %q\nstate_dir = %q\n\n[[host]]\nname = \"ok.serve.test\"\nport = %s\n\n[[host]]\nname = \"warn.serve.test\"\nport = %s\n",
		unbound.Addr, state, port, port)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := buildServeBinary(t)
	p := startServe(t, bin, "--config", cfgPath, "--host", "crit.serve.test", "--port", port,
		"--interval", "2s", "--timeout", "5s", "--probe-timeout", "6s", "serve.test")

	// /metrics: wait for the first scheduled check of all three hosts.
	var text string
	var mf map[string]*dto.MetricFamily
	deadline := time.Now().Add(30 * time.Second)
	for {
		var code int
		text, code, _ = p.get(t, "/metrics", nil)
		if code == http.StatusOK {
			mf = families(t, text)
			_, a := value(mf, "tlsactl_host_status", "host", "ok.serve.test", "address", "127.0.0.1")
			_, b := value(mf, "tlsactl_host_status", "host", "warn.serve.test", "address", "127.0.0.1")
			_, c := value(mf, "tlsactl_host_status", "host", "crit.serve.test", "address", "127.0.0.1")
			_, d := value(mf, "tlsactl_domain_mx_dnssec_secure", "domain", "serve.test")
			if a && b && c && d {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no complete results on /metrics:\n%s\n--- stderr:\n%s", text, p.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	assertHosts := func(t *testing.T, mf map[string]*dto.MetricFamily) {
		t.Helper()
		for _, c := range []struct {
			host                     string
			status, matching, usable float64
		}{
			{"ok.serve.test", 0, 2, 2},
			{"warn.serve.test", 1, 1, 2},
			{"crit.serve.test", 2, 0, 2},
		} {
			ha := []string{"host", c.host, "address", "127.0.0.1"}
			expect(t, mf, c.status, "tlsactl_host_status", ha...)
			expect(t, mf, c.matching, "tlsactl_tlsa_matching_records", ha...)
			expect(t, mf, c.usable, "tlsactl_tlsa_usable_records", ha...)
			if d, ok := value(mf, "tlsactl_certificate_expiry_days", ha...); !ok || d < 80 || d > 90 {
				t.Errorf("tlsactl_certificate_expiry_days%v = %g (present %v), want the 90-day leaf's ~89", ha, d, ok)
			}
			// The forecast: the 3 1 1 never stops on its own, the 2 1 1
			// stops with the 90-day leaf.
			brk, okB := value(mf, "tlsactl_dane_break_days", ha...)
			single, okS := value(mf, "tlsactl_dane_single_record_days", ha...)
			switch c.host {
			case "ok.serve.test":
				if okB || !okS || single < 80 || single > 90 {
					t.Errorf("%s: break_days %g (present %v), single_record_days %g (present %v); want none and ~89", c.host, brk, okB, single, okS)
				}
			case "warn.serve.test":
				if !okB || brk < 80 || brk > 90 || okS {
					t.Errorf("%s: break_days %g (present %v), single_record_days %g (present %v); want ~89 and none", c.host, brk, okB, single, okS)
				}
			case "crit.serve.test":
				if !okB || brk != 0 {
					t.Errorf("%s: break_days %g (present %v), want 0", c.host, brk, okB)
				}
			}
			expect(t, mf, 0, "tlsactl_tlsa_dnssec_bogus", "host", c.host)
			expect(t, mf, 1, "tlsactl_check_success", "host", c.host)
			if d, ok := value(mf, "tlsactl_check_duration_seconds", "host", c.host); !ok || d <= 0 || d > 5 {
				t.Errorf("tlsactl_check_duration_seconds{host=%q} = %g (present %v)", c.host, d, ok)
			}
			if ts, ok := value(mf, "tlsactl_last_check_timestamp_seconds", "host", c.host); !ok || time.Since(time.UnixMilli(int64(ts*1000))) > time.Minute {
				t.Errorf("tlsactl_last_check_timestamp_seconds{host=%q} = %g (present %v)", c.host, ts, ok)
			}
		}
	}
	assertHosts(t, mf)
	expect(t, mf, 1, "tlsactl_domain_mx_dnssec_secure", "domain", "serve.test")
	for _, name := range []string{"go_goroutines", "process_start_time_seconds", "tlsactl_exporter_probes_in_flight", "tlsactl_exporter_ledger_errors_total"} {
		if mf[name] == nil {
			t.Errorf("/metrics lacks the exporter's own %s", name)
		}
	}
	for name, f := range mf {
		if strings.HasPrefix(name, "tlsactl_") && f.GetHelp() == "" {
			t.Errorf("%s has no help text", name)
		}
	}
	if !strings.Contains(text, "# HELP tlsactl_host_status DANE check status of an MX host address: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN") {
		t.Errorf("help text of tlsactl_host_status:\n%s", text)
	}
	promtoolCheck(t, text)

	// The ledger: the secure RRsets were recorded in state_dir.
	var ledgers int
	_ = filepath.Walk(state, func(path string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.HasSuffix(path, ".json") {
			ledgers++
		}
		return nil
	})
	if ledgers < 3 {
		t.Errorf("%d ledger file(s) under %s, want one per host's TLSA owner\n%s", ledgers, state, p.stderr)
	}

	// /probe of the domain and of one host.
	body, code, took := p.get(t, "/probe?target=serve.test", nil)
	if code != http.StatusOK {
		t.Fatalf("/probe?target=serve.test: %d %s", code, body)
	}
	pm := families(t, body)
	expect(t, pm, 1, "probe_success")
	if d, ok := value(pm, "probe_duration_seconds"); !ok || d <= 0 || d > took.Seconds() {
		t.Errorf("probe_duration_seconds = %g (present %v), request took %s", d, ok, took)
	}
	assertHosts(t, pm)
	expect(t, pm, 1, "tlsactl_domain_mx_dnssec_secure", "domain", "serve.test")
	if pm["go_goroutines"] != nil {
		t.Error("/probe serves the exporter's own metrics; want the probe's registry only")
	}
	promtoolCheck(t, body)

	body, _, _ = p.get(t, "/probe?host=warn.serve.test&port="+port, nil)
	pm = families(t, body)
	expect(t, pm, 1, "probe_success")
	expect(t, pm, 1, "tlsactl_host_status", "host", "warn.serve.test", "address", "127.0.0.1")
	if _, ok := value(pm, "tlsactl_host_status", "host", "ok.serve.test", "address", "127.0.0.1"); ok {
		t.Error("/probe?host=warn.serve.test also reports ok.serve.test")
	}

	// A dead target probed beside a good one: the good one answers in its
	// normal time, /metrics too, and the dead one by its deadline.
	var wg sync.WaitGroup
	var deadBody string
	var deadTook time.Duration
	wg.Go(func() { deadBody, _, deadTook = p.get(t, "/probe?host=dead.serve.test", nil) })
	// The dead probe is in flight: the exporter's own gauge says so.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _, _ := p.get(t, "/metrics", nil); strings.Contains(b, "tlsactl_exporter_probes_in_flight 1\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dead target's probe never started")
		}
	}
	body, _, goodTook := p.get(t, "/probe?host=ok.serve.test", nil)
	expect(t, families(t, body), 1, "probe_success")
	if goodTook > 3*time.Second {
		t.Errorf("a good probe beside a dead one took %s", goodTook)
	}
	if _, _, mt := p.get(t, "/metrics", nil); mt > 2*time.Second {
		t.Errorf("/metrics beside a dead probe took %s", mt)
	}
	wg.Wait()
	dm := families(t, deadBody)
	expect(t, dm, 0, "probe_success")
	expect(t, dm, 0, "tlsactl_check_success", "host", "dead.serve.test")
	expect(t, dm, 2, "tlsactl_host_status", "host", "dead.serve.test", "address", deadIP)
	if deadTook < 4*time.Second || deadTook > 7*time.Second {
		t.Errorf("dead probe took %s, want about its 5 s host deadline (--probe-timeout 6s)", deadTook)
	}

	// A short scrape timeout: the answer comes within it.
	body, code, took = p.get(t, "/probe?host=dead.serve.test", map[string]string{"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
	if code != http.StatusOK || took > 1500*time.Millisecond {
		t.Errorf("/probe with a 1.5 s scrape timeout: %d after %s", code, took)
	}
	expect(t, families(t, body), 0, "probe_success")

	// Bad requests.
	for _, q := range []string{"/probe", "/probe?target=a&host=b", "/probe?host=bad/name", "/probe?host=x.test&port=0"} {
		if _, code, _ := p.get(t, q, nil); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", q, code)
		}
	}

	// SIGTERM: exits 0 within a few seconds.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("after SIGTERM: %v\n%s", err, p.stderr)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("still running 5 s after SIGTERM\n%s", p.stderr)
	}
}

// TestServeListenInUse: a clear error when --listen is taken.
func TestServeListenInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, errOut, code := runCLI(t, "", "serve", "--listen", l.Addr().String(), "--resolver", "127.0.0.1:1")
	if code == 0 || !strings.Contains(errOut, "already in use") || !strings.Contains(errOut, l.Addr().String()) {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

// TestServeSIGTERMIdle: an exporter with nothing to schedule stops at once.
func TestServeSIGTERMIdle(t *testing.T) {
	p := startServe(t, buildServeBinary(t), "--resolver", "127.0.0.1:1")
	if body, code, _ := p.get(t, "/metrics", nil); code != http.StatusOK || !strings.Contains(body, "tlsactl_exporter_probes_total") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("after SIGTERM: %v\n%s", err, p.stderr)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %s to stop", d)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("still running 5 s after SIGTERM")
	}
}
