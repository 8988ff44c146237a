package exporter

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/dnsx"
)

// tracker watches one check.Run through its resolver and prober: when each
// host's first lookup started (for tlsactl_check_duration_seconds) and
// whether any lookup or probe of the host was still in flight when its
// context ended (the check was cut short: tlsactl_check_success 0).
type tracker struct {
	mu    sync.Mutex
	hosts map[string]*track
}

type track struct {
	start time.Time
	cut   bool
}

func newTracker() *tracker { return &tracker{hosts: map[string]*track{}} }

func hostKey(h string) string { return dns.Fqdn(strings.ToLower(h)) }

// begin notes a call for host under ctx; the returned func ends it.
func (t *tracker) begin(ctx context.Context, host string) func() {
	k := hostKey(host)
	t.mu.Lock()
	tr := t.hosts[k]
	if tr == nil {
		tr = &track{start: time.Now()}
		t.hosts[k] = tr
	}
	t.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		t.mu.Lock()
		tr.cut = true
		t.mu.Unlock()
	})
	return func() {
		stop()
		// A call that ends at its deadline (a connection deadline set from
		// it fires a moment before the context does) was cut short too.
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < deadlineSlack {
			t.mu.Lock()
			tr.cut = true
			t.mu.Unlock()
		}
	}
}

// deadlineSlack: a call or check that ends this close to its deadline is
// counted as having run into it.
const deadlineSlack = 25 * time.Millisecond

// get returns when host's check started and whether it was cut short.
func (t *tracker) get(host string) (start time.Time, cut, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.hosts[hostKey(host)]
	if tr == nil {
		return time.Time{}, false, false
	}
	return tr.start, tr.cut, true
}

type trackedResolver struct {
	r check.Resolver
	t *tracker
}

func (tr trackedResolver) LookupMX(ctx context.Context, domain string) (*dnsx.MXResult, error) {
	return tr.r.LookupMX(ctx, domain)
}

func (tr trackedResolver) LookupAddrs(ctx context.Context, host string) (*dnsx.AddrsResult, error) {
	defer tr.t.begin(ctx, host)()
	return tr.r.LookupAddrs(ctx, host)
}

func (tr trackedResolver) LookupTLSA(ctx context.Context, port uint16, host string) (*dnsx.TLSAResult, error) {
	defer tr.t.begin(ctx, host)()
	return tr.r.LookupTLSA(ctx, port, host)
}

type trackedProber struct {
	p check.Prober
	t *tracker
}

func (tp trackedProber) Probe(ctx context.Context, addr netip.AddrPort, serverName string) (check.Probe, error) {
	defer tp.t.begin(ctx, serverName)()
	return tp.p.Probe(ctx, addr, serverName)
}
