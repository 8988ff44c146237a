package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/dnsx"
)

// hangingResolver answers nothing until the caller's context ends: a dead
// resolver path. The live tests (cmd/tlsactl) use real servers; this one
// pins the exporter's own bounds.
type hangingResolver struct{}

func (hangingResolver) LookupMX(ctx context.Context, _ string) (*dnsx.MXResult, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (hangingResolver) LookupAddrs(ctx context.Context, _ string) (*dnsx.AddrsResult, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (hangingResolver) LookupTLSA(ctx context.Context, _ uint16, _ string) (*dnsx.TLSAResult, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

type noProber struct{}

func (noProber) Probe(context.Context, netip.AddrPort, string) (check.Probe, error) {
	return check.Probe{}, errors.New("no prober in this test")
}

func TestExporterProbeBounds(t *testing.T) {
	e := New(Options{Check: check.Config{Resolver: &hangingResolver{}, Prober: noProber{}, HostTimeout: 10 * time.Second},
		ProbeTimeout: 3 * time.Second, MaxProbes: 1})
	srv := httptest.NewServer(e.Handler())
	defer srv.Close()

	// The scrape timeout header shortens the probe.
	get := func(path, timeout string) (int, string, time.Duration) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if timeout != "" {
			req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", timeout)
		}
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		return resp.StatusCode, b.String(), time.Since(start)
	}
	code, body, took := get("/probe?host=mx.example.test", "1")
	if code != 200 || took > time.Second || !strings.Contains(body, "probe_success 0") {
		t.Errorf("1 s scrape timeout: %d after %s\n%s", code, took, body)
	}
	if !strings.Contains(body, `tlsactl_check_success{host="mx.example.test"} 0`) {
		t.Errorf("a cut check must report tlsactl_check_success 0:\n%s", body)
	}

	// One slot: a second probe while one runs gets 503 at once; /metrics
	// answers meanwhile.
	// Wait on the exporter's own gauge, not a guess at timing.
	inFlight := func(n int) {
		t.Helper()
		want := fmt.Sprintf("tlsactl_exporter_probes_in_flight %d\n", n)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, body, _ := get("/metrics", ""); strings.Contains(body, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("probes in flight never became %d", n)
			}
		}
	}
	inFlight(0) // the first probe's slot is returned
	done := make(chan struct{})
	go func() { defer close(done); get("/probe?target=example.test", "") }()
	inFlight(1)
	code, _, took = get("/probe?host=mx.example.test", "")
	if code != http.StatusServiceUnavailable || took > 500*time.Millisecond {
		t.Errorf("probe beyond --max-probes: %d after %s, want 503 at once", code, took)
	}
	code, body, took = get("/metrics", "")
	if code != 200 || took > time.Second || !strings.Contains(body, `tlsactl_exporter_probes_total{result="rejected"} 1`) ||
		!strings.Contains(body, "tlsactl_exporter_probes_in_flight 1") {
		t.Errorf("/metrics during a probe: %d after %s\n%s", code, took, body)
	}
	<-done
	if code, _, _ := get("/probe?host=mx.example.test", "0.5"); code != 200 {
		t.Errorf("after the slot is free: %d", code)
	}
}

func TestExporterProbeTimeout(t *testing.T) {
	e := New(Options{ProbeTimeout: 30 * time.Second})
	for _, c := range []struct {
		hdr  string
		want time.Duration
	}{
		{"", 30 * time.Second},
		{"10", 9500 * time.Millisecond},
		{"0.4", 200 * time.Millisecond},
		{"120", 30 * time.Second},
	} {
		r := httptest.NewRequest("GET", "/probe?host=x", nil)
		if c.hdr != "" {
			r.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", c.hdr)
		}
		got, err := e.probeTimeout(r)
		if err != nil || got != c.want {
			t.Errorf("header %q: %s, %v; want %s", c.hdr, got, err, c.want)
		}
	}
	r := httptest.NewRequest("GET", "/probe?host=x", nil)
	r.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "soon")
	if _, err := e.probeTimeout(r); err == nil {
		t.Error("a bad header is accepted")
	}
}
