package check_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/check"
	"github.com/tlsactl/tlsactl/internal/starttls"
	"github.com/tlsactl/tlsactl/internal/testbed"
)

// TestProberDirectTLS: with --starttls none (implicit TLS, as on 465) the
// prober captures the chain and treats the TLS service as reachable.
func TestProberDirectTLS(t *testing.T) {
	chain := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"smtps.example.test"}})
	cert := chain.TLSCertificate()
	l, err := tls.Listen("tcp4", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()
	ap := netip.MustParseAddrPort(l.Addr().(*net.TCPAddr).String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := check.STARTTLSProber{Protocol: starttls.None, Timeout: 5 * time.Second}.Probe(ctx, ap, "smtps.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Connected || len(p.Chain) != 2 || !p.Chain[0].Equal(chain.Leaf.Cert) || p.TLSVersion == "" {
		t.Errorf("probe %+v", p)
	}
	// The same listener probed as SMTP fails in a phase before the chain.
	_, err = check.STARTTLSProber{Protocol: starttls.SMTP, Timeout: time.Second}.Probe(ctx, ap, "smtps.example.test")
	if err == nil {
		t.Error("SMTP probe of a direct-TLS port succeeded")
	}
}
