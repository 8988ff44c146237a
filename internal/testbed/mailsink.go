package testbed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// ReceivedMessage is one message a MailSink accepted.
type ReceivedMessage struct {
	From string
	To   []string
	Data string
	// TLS reports whether the message came over STARTTLS.
	TLS bool
	At  time.Time
}

// MailSink is an in-process receiving SMTP server (github.com/emersion/go-smtp)
// on a given address, typically a dedicated loopback address on port 25
// (Postfix's smtp client connects to port 25 for MX delivery). It offers
// STARTTLS with a fixed certificate and records every message it accepts.
type MailSink struct {
	Addr string

	ln   net.Listener
	srv  *smtp.Server
	done chan struct{}
	once sync.Once

	mu   sync.Mutex
	msgs []ReceivedMessage
	tls  int // completed STARTTLS handshakes
}

// StartMailSink listens on addr ("127.x.y.z:25"; only loopback addresses
// are accepted) and serves STARTTLS with cert.
func StartMailSink(addr string, cert tls.Certificate) (*MailSink, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("testbed: mail sink: %s is not a loopback address", host)
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, err
	}
	s := &MailSink{Addr: ln.Addr().String(), ln: ln, done: make(chan struct{})}
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &sinkSession{sink: s, conn: c}, nil })
	s.srv = smtp.NewServer(be)
	s.srv.Domain = "sink.example.test"
	s.srv.ReadTimeout = 30 * time.Second
	s.srv.WriteTimeout = 30 * time.Second
	s.srv.MaxMessageBytes = 10 << 20
	s.srv.TLSConfig = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		VerifyConnection: func(tls.ConnectionState) error {
			s.mu.Lock()
			s.tls++
			s.mu.Unlock()
			return nil
		},
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// NewMailSink is StartMailSink for tests; the sink is closed when the test ends.
func NewMailSink(tb testing.TB, addr string, cert tls.Certificate) *MailSink {
	tb.Helper()
	s, err := StartMailSink(addr, cert)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// Messages returns a copy of what was received so far.
func (s *MailSink) Messages() []ReceivedMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ReceivedMessage(nil), s.msgs...)
}

// Handshakes returns how many STARTTLS handshakes reached certificate
// selection on the server side (a client that rejects the certificate
// still counts).
func (s *MailSink) Handshakes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tls
}

// WaitFor polls until a received message contains substr (e.g. a unique
// Subject) and returns it, or fails when ctx ends.
func (s *MailSink) WaitFor(ctx context.Context, substr string) (ReceivedMessage, error) {
	var found ReceivedMessage
	err := poll(ctx, nil, func(context.Context) error {
		for _, m := range s.Messages() {
			if strings.Contains(m.Data, substr) {
				found = m
				return nil
			}
		}
		return fmt.Errorf("no message with %q at %s (%d received)", substr, s.Addr, len(s.Messages()))
	})
	return found, err
}

// Has reports whether a received message contains substr.
func (s *MailSink) Has(substr string) bool {
	for _, m := range s.Messages() {
		if strings.Contains(m.Data, substr) {
			return true
		}
	}
	return false
}

// Close stops the server. Idempotent.
func (s *MailSink) Close() error {
	s.once.Do(func() {
		_ = s.srv.Close()
		<-s.done
	})
	return nil
}

type sinkSession struct {
	sink *MailSink
	conn *smtp.Conn
	from string
	to   []string
}

func (x *sinkSession) Reset()        { x.from, x.to = "", nil }
func (x *sinkSession) Logout() error { return nil }
func (x *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	x.from = from
	return nil
}
func (x *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.to = append(x.to, to)
	return nil
}
func (x *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(x.to) == 0 {
		return errors.New("no recipients")
	}
	_, isTLS := x.conn.TLSConnectionState()
	x.sink.mu.Lock()
	x.sink.msgs = append(x.sink.msgs, ReceivedMessage{From: x.from, To: append([]string(nil), x.to...), Data: string(b), TLS: isTLS, At: time.Now()})
	x.sink.mu.Unlock()
	return nil
}
