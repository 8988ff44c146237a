package testbed

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/smtp"
	"time"
)

// ServedChain connects to addr, says EHLO, runs STARTTLS without verifying
// anything and returns the certificates the server sent (leaf first).
func ServedChain(ctx context.Context, addr string) ([]*x509.Certificate, error) {
	c, err := dialSMTP(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true, ServerName: "mail.example.test"}); err != nil {
		return nil, err
	}
	st, _ := c.TLSConnectionState()
	_ = c.Quit()
	return st.PeerCertificates, nil
}

// OffersSTARTTLS reports whether the EHLO response at addr lists STARTTLS.
func OffersSTARTTLS(ctx context.Context, addr string) (bool, error) {
	c, err := dialSMTP(ctx, addr)
	if err != nil {
		return false, err
	}
	defer c.Close()
	ok, _ := c.Extension("STARTTLS")
	_ = c.Quit()
	return ok, nil
}

func dialSMTP(ctx context.Context, addr string) (*smtp.Client, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	c, err := smtp.NewClient(conn, "mail.example.test")
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.Hello("client.example.test"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
