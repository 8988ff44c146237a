package check

import (
	"context"
	"crypto/tls"
	"net/netip"
	"time"

	"github.com/tlsactl/tlsactl/internal/starttls"
)

// STARTTLSProber probes SMTP servers with internal/starttls.
type STARTTLSProber struct {
	Timeout time.Duration // per phase; starttls.DefaultTimeout when zero
}

// Probe connects to addr, reads the banner, sends EHLO and STARTTLS and
// captures the served chain.
func (p STARTTLSProber) Probe(ctx context.Context, addr netip.AddrPort, serverName string) (Probe, error) {
	res, err := starttls.Probe(ctx, starttls.Options{
		Addr: addr.String(), ServerName: serverName, Protocol: starttls.SMTP, Timeout: p.Timeout,
	})
	out := Probe{Connected: res.Banner != "", STARTTLSOffered: res.STARTTLSOffered, Chain: res.Chain}
	if res.TLSVersion != 0 {
		out.TLSVersion = tls.VersionName(res.TLSVersion)
	}
	return out, err
}
