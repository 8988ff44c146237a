package starttls

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// testChain is a root -> intermediate -> leaf chain; the server sends leaf
// and intermediate.
type testChain struct {
	leaf, inter *x509.Certificate
	cert        tls.Certificate
}

func newChain(t *testing.T) *testChain {
	t.Helper()
	now := time.Now()
	mk := func(cn string, ca bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, serial int64) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(serial),
			Subject:               pkix.Name{CommonName: cn},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(24 * time.Hour),
			BasicConstraintsValid: true,
			IsCA:                  ca,
		}
		if ca {
			tmpl.KeyUsage = x509.KeyUsageCertSign
		} else {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.DNSNames = []string{cn}
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c, key
	}
	root, rootKey := mk("test root", true, nil, nil, 1)
	inter, interKey := mk("test intermediate", true, root, rootKey, 2)
	leaf, leafKey := mk("mail.example.test", false, inter, interKey, 3)
	return &testChain{leaf: leaf, inter: inter, cert: tls.Certificate{
		Certificate: [][]byte{leaf.Raw, inter.Raw}, PrivateKey: leafKey, Leaf: leaf}}
}

// server is a loopback listener whose connections run handle.
type server struct {
	addr string
	mu   sync.Mutex
	log  []string // what handlers recorded
}

func (s *server) record(x string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, x)
}

func (s *server) recorded() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

func serve(t *testing.T, handle func(s *server, c net.Conn)) *server {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: l.Addr().String()}
	var wg sync.WaitGroup
	done := make(chan struct{})
	var conns []net.Conn
	var mu sync.Mutex
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				handle(s, c)
			})
		}
	})
	t.Cleanup(func() {
		close(done)
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

func tlsServerConfig(s *server, ch *testChain) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{ch.cert},
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			s.record("sni=" + hi.ServerName)
			return nil, nil
		},
	}
}

type smtpServer struct {
	banner        []string // full lines
	noSTARTTLS    bool
	starttlsReply string // default "220 2.0.0 Ready to start TLS"
	inject        string // sent right after the STARTTLS reply
	chain         *testChain
}

func (o smtpServer) handle(s *server, c net.Conn) {
	br := bufio.NewReader(c)
	w := func(lines ...string) {
		for _, l := range lines {
			_, _ = c.Write([]byte(l + "\r\n"))
		}
	}
	banner := o.banner
	if banner == nil {
		banner = []string{"220 mx.example.test ESMTP test"}
	}
	w(banner...)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return
		}
		l = strings.TrimRight(l, "\r\n")
		s.record(l)
		cmd := strings.ToUpper(strings.Fields(l + " x")[0])
		switch cmd {
		case "EHLO":
			ext := []string{"250-mx.example.test", "250-PIPELINING", "250-SIZE 10240000"}
			if !o.noSTARTTLS {
				ext = append(ext, "250-STARTTLS")
			}
			w(append(ext, "250 8BITMIME")...)
		case "STARTTLS":
			if o.starttlsReply != "" {
				w(o.starttlsReply)
				continue
			}
			_, _ = c.Write([]byte("220 2.0.0 Ready to start TLS\r\n" + o.inject))
			tc := tls.Server(c, tlsServerConfig(s, o.chain))
			if err := tc.Handshake(); err != nil {
				s.record("handshake error: " + err.Error())
				return
			}
			br = bufio.NewReader(tc)
			c = tc
		case "QUIT":
			w("221 2.0.0 Bye")
			return
		default:
			w("502 5.5.2 Error: command not recognized")
		}
	}
}

func sameChain(t *testing.T, got []*x509.Certificate, ch *testChain) {
	t.Helper()
	if len(got) != 2 || !got[0].Equal(ch.leaf) || !got[1].Equal(ch.inter) {
		t.Fatalf("chain: got %d certificates, want leaf+intermediate as served", len(got))
	}
}

func phaseErr(t *testing.T, err error, phase Phase) *Error {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("want *Error in phase %s, got %v", phase, err)
	}
	if pe.Phase != phase {
		t.Fatalf("phase %s, want %s: %v", pe.Phase, phase, err)
	}
	return pe
}

func TestSMTP(t *testing.T) {
	ch := newChain(t)
	s := serve(t, smtpServer{chain: ch, banner: []string{"220-mx.example.test ESMTP", "220-second line", "220 last line"}}.handle)
	res, err := Probe(context.Background(), Options{Addr: s.addr, ServerName: "mail.example.test", Protocol: SMTP, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sameChain(t, res.Chain, ch)
	if !res.STARTTLSOffered || res.Banner != "220-mx.example.test ESMTP\n220-second line\n220 last line" {
		t.Fatalf("result %+v", res)
	}
	if res.TLSVersion < tls.VersionTLS12 || res.CipherSuite == 0 || res.Timings.Total <= 0 || res.Timings.Handshake <= 0 {
		t.Fatalf("result %+v", res)
	}
	if strings.Join(res.Capabilities, ",") != "PIPELINING,SIZE 10240000,STARTTLS,8BITMIME" {
		t.Fatalf("capabilities %q", res.Capabilities)
	}
	// The server saw EHLO with the address literal, STARTTLS, SNI and QUIT
	// (sent after the handshake; the handler records it before answering).
	want := "EHLO [127.0.0.1],STARTTLS,sni=mail.example.test,QUIT"
	deadline := time.Now().Add(5 * time.Second)
	for strings.Join(s.recorded(), ",") != want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling a condition, not a fixed wait
	}
	if got := strings.Join(s.recorded(), ","); got != want {
		t.Fatalf("server saw %q, want %q", got, want)
	}
}

func TestSMTPEHLOName(t *testing.T) {
	ch := newChain(t)
	s := serve(t, smtpServer{chain: ch}.handle)
	if _, err := Probe(context.Background(), Options{Addr: s.addr, Protocol: SMTP, EHLOName: "probe.example.test", Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if got := s.recorded(); len(got) < 1 || got[0] != "EHLO probe.example.test" || got[2] != "sni=" {
		t.Fatalf("server saw %q", got)
	}
}

func TestNoSTARTTLS(t *testing.T) {
	s := serve(t, smtpServer{noSTARTTLS: true}.handle)
	res, err := Probe(context.Background(), Options{Addr: s.addr, Protocol: SMTP, Timeout: 5 * time.Second})
	if !errors.Is(err, ErrNoSTARTTLS) || errors.Is(err, ErrSTARTTLSRefused) {
		t.Fatalf("err %v", err)
	}
	phaseErr(t, err, PhaseSTARTTLS)
	if res == nil || res.STARTTLSOffered || res.Banner == "" || res.Chain != nil {
		t.Fatalf("result %+v", res)
	}
}

func TestSTARTTLS454(t *testing.T) {
	s := serve(t, smtpServer{starttlsReply: "454 4.7.0 TLS not available due to local problem"}.handle)
	res, err := Probe(context.Background(), Options{Addr: s.addr, Protocol: SMTP, Timeout: 5 * time.Second})
	if !errors.Is(err, ErrSTARTTLSRefused) || errors.Is(err, ErrNoSTARTTLS) {
		t.Fatalf("err %v", err)
	}
	pe := phaseErr(t, err, PhaseSTARTTLS)
	if !strings.HasPrefix(pe.Reply, "454 ") || !res.STARTTLSOffered {
		t.Fatalf("reply %q, result %+v", pe.Reply, res)
	}
}

func TestSMTPBanner554(t *testing.T) {
	s := serve(t, smtpServer{banner: []string{"554 5.3.2 go away"}}.handle)
	_, err := Probe(context.Background(), Options{Addr: s.addr, Protocol: SMTP, Timeout: 5 * time.Second})
	pe := phaseErr(t, err, PhaseBanner)
	if !errors.Is(err, ErrUnexpectedReply) || pe.Reply != "554 5.3.2 go away" {
		t.Fatalf("err %v", err)
	}
}

func TestSTARTTLSInjection(t *testing.T) {
	s := serve(t, smtpServer{chain: newChain(t), inject: "250 injected\r\n"}.handle)
	_, err := Probe(context.Background(), Options{Addr: s.addr, Protocol: SMTP, Timeout: 5 * time.Second})
	phaseErr(t, err, PhaseSTARTTLS)
}

func TestHandshakeFailure(t *testing.T) {
	// The server says 220 to STARTTLS, then talks plain text.
	s := serve(t, smtpServer{starttlsReply: "220 go ahead"}.handle)
	_, err := Probe(context.Background(), Options{Addr: s.addr, Protocol: SMTP, Timeout: 2 * time.Second})
	phaseErr(t, err, PhaseHandshake)

	// A server that only speaks TLS 1.1 is refused (minimum TLS 1.2).
	ch := newChain(t)
	s = serve(t, func(s *server, c net.Conn) {
		_ = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{ch.cert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}).Handshake()
	})
	_, err = Probe(context.Background(), Options{Addr: s.addr, Protocol: None, Timeout: 2 * time.Second})
	phaseErr(t, err, PhaseHandshake)
}

func TestDirectTLS(t *testing.T) {
	ch := newChain(t)
	s := serve(t, func(s *server, c net.Conn) {
		tc := tls.Server(c, tlsServerConfig(s, ch))
		if err := tc.Handshake(); err != nil {
			return
		}
		_, _ = tc.Read(make([]byte, 1)) // until the client closes
	})
	res, err := Probe(context.Background(), Options{Addr: s.addr, ServerName: "mail.example.test", Protocol: None, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sameChain(t, res.Chain, ch)
	if res.STARTTLSOffered || res.Banner != "" || res.Protocol != None {
		t.Fatalf("result %+v", res)
	}
}

func imapServer(ch *testChain, offer bool, stlsReply string) func(*server, net.Conn) {
	return func(s *server, c net.Conn) {
		br := bufio.NewReader(c)
		w := func(l string) { _, _ = c.Write([]byte(l + "\r\n")) }
		w("* OK [CAPABILITY IMAP4rev1] test IMAP ready")
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			f := strings.Fields(l)
			if len(f) < 2 {
				return
			}
			s.record(f[1])
			switch strings.ToUpper(f[1]) {
			case "CAPABILITY":
				caps := "* CAPABILITY IMAP4rev1 LOGINDISABLED"
				if offer {
					caps += " STARTTLS"
				}
				w(caps)
				w(f[0] + " OK done")
			case "STARTTLS":
				if stlsReply != "" {
					w(f[0] + " " + stlsReply)
					continue
				}
				w(f[0] + " OK Begin TLS negotiation now")
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{ch.cert}})
				if tc.Handshake() != nil {
					return
				}
				c, br = tc, bufio.NewReader(tc)
			case "LOGOUT":
				w("* BYE")
				w(f[0] + " OK bye")
				return
			}
		}
	}
}

func pop3Server(ch *testChain, offer bool, stlsReply string) func(*server, net.Conn) {
	return func(s *server, c net.Conn) {
		br := bufio.NewReader(c)
		w := func(l string) { _, _ = c.Write([]byte(l + "\r\n")) }
		w("+OK test POP3 ready")
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			l = strings.TrimSpace(l)
			s.record(l)
			switch strings.ToUpper(l) {
			case "CAPA":
				w("+OK Capability list follows")
				w("USER")
				if offer {
					w("STLS")
				}
				w("PIPELINING")
				w(".")
			case "STLS":
				if stlsReply != "" {
					w(stlsReply)
					continue
				}
				w("+OK Begin TLS")
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{ch.cert}})
				if tc.Handshake() != nil {
					return
				}
				c, br = tc, bufio.NewReader(tc)
			case "QUIT":
				w("+OK bye")
				return
			}
		}
	}
}

func TestIMAPAndPOP3(t *testing.T) {
	ch := newChain(t)
	for _, tc := range []struct {
		proto                 Protocol
		ok, noOffer, refused  func(*server, net.Conn)
		banner, capa, goodbye string
	}{
		{IMAP, imapServer(ch, true, ""), imapServer(ch, false, ""), imapServer(ch, true, "BAD not now"),
			"* OK [CAPABILITY IMAP4rev1] test IMAP ready", "IMAP4rev1,LOGINDISABLED,STARTTLS", "LOGOUT"},
		{POP3, pop3Server(ch, true, ""), pop3Server(ch, false, ""), pop3Server(ch, true, "-ERR not now"),
			"+OK test POP3 ready", "USER,STLS,PIPELINING", "QUIT"},
	} {
		t.Run(string(tc.proto), func(t *testing.T) {
			s := serve(t, tc.ok)
			res, err := Probe(context.Background(), Options{Addr: s.addr, Protocol: tc.proto, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			sameChain(t, res.Chain, ch)
			if !res.STARTTLSOffered || res.Banner != tc.banner || strings.Join(res.Capabilities, ",") != tc.capa {
				t.Fatalf("result %+v", res)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(strings.Join(s.recorded(), ","), tc.goodbye) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond) // polling a condition
			}
			if !strings.Contains(strings.Join(s.recorded(), ","), tc.goodbye) {
				t.Fatalf("no %s after TLS: %q", tc.goodbye, s.recorded())
			}

			s = serve(t, tc.noOffer)
			_, err = Probe(context.Background(), Options{Addr: s.addr, Protocol: tc.proto, Timeout: 5 * time.Second})
			if !errors.Is(err, ErrNoSTARTTLS) {
				t.Fatalf("no offer: %v", err)
			}
			phaseErr(t, err, PhaseSTARTTLS)

			s = serve(t, tc.refused)
			_, err = Probe(context.Background(), Options{Addr: s.addr, Protocol: tc.proto, Timeout: 5 * time.Second})
			if !errors.Is(err, ErrSTARTTLSRefused) {
				t.Fatalf("refused: %v", err)
			}
			phaseErr(t, err, PhaseSTARTTLS)
		})
	}
}

// silent accepts and never speaks (until the client goes away).
func silent(_ *server, c net.Conn) { _, _ = io.Copy(io.Discard, c) }

func TestSilentServerTimesOut(t *testing.T) {
	s := serve(t, silent)
	for _, proto := range []Protocol{SMTP, IMAP, POP3} {
		start := time.Now()
		_, err := Probe(context.Background(), Options{Addr: s.addr, Protocol: proto, Timeout: 300 * time.Millisecond})
		pe := phaseErr(t, err, PhaseBanner)
		if !pe.Timeout() {
			t.Fatalf("%s: not a timeout: %v", proto, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("%s: took %v with a 300ms timeout", proto, d)
		}
	}
	// Direct TLS against a server that never answers the ClientHello.
	start := time.Now()
	_, err := Probe(context.Background(), Options{Addr: s.addr, Protocol: None, Timeout: 300 * time.Millisecond})
	if pe := phaseErr(t, err, PhaseHandshake); !pe.Timeout() {
		t.Fatalf("not a timeout: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestContextBoundsProbe(t *testing.T) {
	s := serve(t, silent)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Probe(ctx, Options{Addr: s.addr, Protocol: SMTP, Timeout: time.Minute})
	phaseErr(t, err, PhaseBanner)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
	// Explicit cancellation interrupts a blocked read, too.
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		<-time.After(100 * time.Millisecond)
		cancel()
	}()
	_, err = Probe(ctx, Options{Addr: s.addr, Protocol: IMAP, Timeout: time.Minute})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}

func TestConnectFailureAndSetup(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = Probe(context.Background(), Options{Addr: addr, Protocol: SMTP, Timeout: 2 * time.Second})
	phaseErr(t, err, PhaseConnect)

	// Auto: an unknown port needs an explicit protocol.
	_, err = Probe(context.Background(), Options{Addr: addr, Timeout: time.Second})
	phaseErr(t, err, PhaseSetup)
	_, err = Probe(context.Background(), Options{Addr: addr, Protocol: "gopher"})
	phaseErr(t, err, PhaseSetup)

	for port, want := range map[int]Protocol{25: SMTP, 587: SMTP, 143: IMAP, 110: POP3, 465: None, 993: None, 995: None, 443: None} {
		if got, ok := ProtocolForPort(port); !ok || got != want {
			t.Errorf("port %d: %q", port, got)
		}
	}
	for in, want := range map[string]Protocol{"": Auto, "AUTO": Auto, "smtp": SMTP, "imap": IMAP, "pop3": POP3, "none": None, "tls": None} {
		if got, err := ParseProtocol(in); err != nil || got != want {
			t.Errorf("ParseProtocol(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseProtocol("ftp"); err == nil {
		t.Error("ParseProtocol(ftp): no error")
	}
}
