package testbed

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// SMTPMode selects how SMTPServer behaves.
type SMTPMode int

const (
	// SMTPStartTLS offers STARTTLS with the certificate set by SetCertificate.
	SMTPStartTLS SMTPMode = iota
	// SMTPNoStartTLS speaks SMTP but never offers STARTTLS.
	SMTPNoStartTLS
	// SMTPDead accepts TCP connections and never sends a byte (a hung host,
	// for timeout tests).
	SMTPDead
)

// SMTPServer is an in-process SMTP server (github.com/emersion/go-smtp) on
// 127.0.0.1 with a free port. Messages are accepted and discarded.
type SMTPServer struct {
	Addr string // "127.0.0.1:port"

	cert   atomic.Pointer[tls.Certificate]
	ln     net.Listener
	srv    *smtp.Server
	done   chan struct{}
	mu     sync.Mutex
	conns  map[net.Conn]struct{} // SMTPDead only
	closed bool
	once   sync.Once
}

// StartSMTPServer starts the server. cert is what STARTTLS serves (ignored,
// and may be nil, unless mode is SMTPStartTLS).
func StartSMTPServer(mode SMTPMode, cert *tls.Certificate) (*SMTPServer, error) {
	return startSMTPServer("127.0.0.1:0", "mail.example.test", mode, cert)
}

// startSMTPServer is StartSMTPServer on addr ("ip:port") with the EHLO name
// domain.
func startSMTPServer(addr, domain string, mode SMTPMode, cert *tls.Certificate) (*SMTPServer, error) {
	if mode == SMTPStartTLS && cert == nil {
		return nil, errors.New("testbed: SMTPStartTLS needs a certificate")
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, err
	}
	s := &SMTPServer{Addr: ln.Addr().String(), ln: ln, done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	if cert != nil {
		s.SetCertificate(*cert)
	}
	if mode == SMTPDead {
		go s.serveDead()
		return s, nil
	}
	be := smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return discardSession{}, nil })
	s.srv = smtp.NewServer(be)
	s.srv.Domain = domain
	s.srv.ReadTimeout = 30 * time.Second
	s.srv.WriteTimeout = 30 * time.Second
	if mode == SMTPStartTLS {
		s.srv.TLSConfig = &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return s.cert.Load(), nil
			},
		}
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// NewSMTPServer is StartSMTPServer for tests; it closes the server at the
// end of the test.
func NewSMTPServer(tb testing.TB, mode SMTPMode, cert *tls.Certificate) *SMTPServer {
	tb.Helper()
	s, err := StartSMTPServer(mode, cert)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// SetCertificate atomically replaces what STARTTLS serves; the next
// handshake uses it.
func (s *SMTPServer) SetCertificate(c tls.Certificate) {
	s.cert.Store(&c)
}

// Close stops listening and closes all connections. Idempotent.
func (s *SMTPServer) Close() error {
	s.once.Do(func() {
		if s.srv != nil {
			_ = s.srv.Close()
		} else {
			s.mu.Lock()
			s.closed = true
			for c := range s.conns {
				c.Close()
			}
			s.mu.Unlock()
			_ = s.ln.Close()
		}
		<-s.done
	})
	return nil
}

func (s *SMTPServer) serveDead() {
	defer close(s.done)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			c.Close()
		} else {
			s.conns[c] = struct{}{}
		}
		s.mu.Unlock()
	}
}

type discardSession struct{}

func (discardSession) Reset()                               {}
func (discardSession) Logout() error                        { return nil }
func (discardSession) Mail(string, *smtp.MailOptions) error { return nil }
func (discardSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (discardSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
