package check

import (
	"context"
	"crypto/tls"
	"net/netip"
	"time"

	"github.com/tlsactl/tlsactl/internal/starttls"
)

// STARTTLSProber probes mail servers with internal/starttls.
type STARTTLSProber struct {
	Timeout time.Duration // per phase; starttls.DefaultTimeout when zero
	// Protocol says how TLS starts. Auto picks by port (25/587 SMTP, 143
	// IMAP, 110 POP3, 465/993/995/443 direct TLS) and SMTP for other ports.
	Protocol starttls.Protocol
}

// Probe connects to addr, starts TLS (for SMTP: banner, EHLO, STARTTLS) and
// captures the served chain.
func (p STARTTLSProber) Probe(ctx context.Context, addr netip.AddrPort, serverName string) (Probe, error) {
	proto := p.Protocol
	if proto == starttls.Auto {
		var ok bool
		if proto, ok = starttls.ProtocolForPort(int(addr.Port())); !ok {
			proto = starttls.SMTP
		}
	}
	res, err := starttls.Probe(ctx, starttls.Options{
		Addr: addr.String(), ServerName: serverName, Protocol: proto, Timeout: p.Timeout,
	})
	out := Probe{Connected: res.Banner != "" || proto == starttls.None, STARTTLSOffered: res.STARTTLSOffered || (proto == starttls.None && err == nil), Chain: res.Chain}
	if res.TLSVersion != 0 {
		out.TLSVersion = tls.VersionName(res.TLSVersion)
	}
	return out, err
}
