package starttls

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// scriptConn is a net.Conn whose peer sends a fixed script and swallows
// whatever is written to it.
type scriptConn struct {
	r       *bytes.Reader
	written bytes.Buffer
}

func (c *scriptConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *scriptConn) Write(b []byte) (int, error) { return c.written.Write(b) }
func (c *scriptConn) Close() error                { return nil }
func (c *scriptConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 40000}
}
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 25} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// scripted returns a prober talking proto to a server that sends script.
func scripted(proto Protocol, script []byte) (*prober, *scriptConn) {
	c := &scriptConn{r: bytes.NewReader(script)}
	return &prober{
		opts: Options{Addr: "192.0.2.1:25", Timeout: time.Second},
		res:  &Result{Protocol: proto},
		conn: c,
		br:   bufio.NewReaderSize(c, 4096),
		ctx:  context.Background(),
	}, c
}

// maxErrorText bounds what a failed probe's error may print: the server's
// text in it is cut (see maxReplyText), whatever the server sends.
const maxErrorText = 1024

// checkProbeError holds for every error of a probe: an *Error of a known
// phase naming the address, on one line, bounded.
func checkProbeError(t *testing.T, err error) {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %T is not an *Error: %v", err, err)
	}
	switch pe.Phase {
	case PhaseBanner, PhaseEHLO, PhaseSTARTTLS:
	default:
		t.Fatalf("phase %q before any handshake: %v", pe.Phase, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "192.0.2.1:25") {
		t.Fatalf("error does not name the address: %s", msg)
	}
	if strings.ContainsAny(msg, "\r\n") {
		t.Fatalf("multi-line error: %q", msg)
	}
	if len(msg) > maxErrorText || len(pe.Reply) > maxReplyText+len("…") {
		t.Fatalf("error of %d bytes (reply %d): %.200q…", len(msg), len(pe.Reply), msg)
	}
}

// FuzzSMTPReply feeds arbitrary bytes to the SMTP reply parser (RFC 5321
// §4.2: "ddd-text" lines up to "ddd text").
func FuzzSMTPReply(f *testing.F) {
	for _, s := range []string{
		"220 mx.example.test ESMTP\r\n",
		"220-mx.example.test\r\n220-second line\r\n220 last\r\n",
		"250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
		"250\r\n", "250-\r\n250 \r\n", "220-a\r\n250 b\r\n", "22\r\n", "2200 x\r\n", "220xtext\r\n",
		"199 low\r\n", "600 high\r\n", "+12 x\r\n", "-12 x\r\n", " 220 x\r\n", "220 no newline",
		"220-a\n220 b\n", "220-" + strings.Repeat("x", 9000) + "\r\n", strings.Repeat("250-x\r\n", 300),
		"\x00\x00\x00\r\n", "220 \xff\xfe\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, _ := scripted(SMTP, data)
		code, lines, raw, err := p.smtpReply()
		if err != nil {
			return // what the callers wrap is checked by FuzzDialogue
		}
		if code < 200 || code > 599 || len(lines) == 0 || len(lines) > maxLines {
			t.Fatalf("code %d with %d lines accepted", code, len(lines))
		}
		rawLines := strings.Split(raw, "\n")
		if len(rawLines) != len(lines) {
			t.Fatalf("%d raw lines for %d lines", len(rawLines), len(lines))
		}
		for i, l := range rawLines {
			if len(l) > maxLine || !strings.HasPrefix(l, raw[:3]) {
				t.Fatalf("line %d %.80q does not start with the code %s", i, l, raw[:3])
			}
			sep := byte(' ')
			if i < len(rawLines)-1 {
				sep = '-'
			}
			if len(l) > 3 && l[3] != sep {
				t.Fatalf("line %d %.80q: separator %q, want %q", i, l, l[3], sep)
			}
			if len(l) == 3 && i < len(rawLines)-1 {
				t.Fatalf("line %d %q without '-' continues the reply", i, l)
			}
			if text := strings.TrimPrefix(l, l[:min(4, len(l))]); text != lines[i] {
				t.Fatalf("line %d text %q, parsed %q", i, text, lines[i])
			}
		}
	})
}

// FuzzDialogue plays an arbitrary server script against the banner,
// capability and STARTTLS phases of each protocol: no panic, every error an
// *Error (bounded, one line), and success only after STARTTLS was offered
// and accepted with nothing sent after the acceptance.
func FuzzDialogue(f *testing.F) {
	for _, s := range []struct {
		proto  byte
		script string
	}{
		{0, "220 mx ESMTP\r\n250-mx\r\n250 STARTTLS\r\n220 go ahead\r\n"},
		{0, "220-mx\r\n220 ESMTP\r\n250-mx greets\r\n250-SIZE 1\r\n250-starttls\r\n250 HELP\r\n220 2.0.0 Ready\r\n"},
		{0, "220 mx\r\n250 mx\r\n"},
		{0, "220 mx\r\n250-mx\r\n250 STARTTLS\r\n454 4.7.0 TLS not available\r\n"},
		{0, "554 go away\r\n"},
		{0, "220 mx\r\n250-mx\r\n250 STARTTLS\r\n220 go ahead\r\n\x16\x03\x01"},
		{0, "220 mx\r\n500 what\r\n"},
		{1, "* OK IMAP4rev1 ready\r\n* CAPABILITY IMAP4rev1 STARTTLS\r\na001 OK done\r\na002 OK begin TLS\r\n"},
		{1, "* PREAUTH ready\r\n* CAPABILITY IMAP4rev1\r\na001 OK done\r\n"},
		{1, "* OK ready\r\n* CAPABILITY STARTTLS\r\na001 OK\r\na002 NO\r\n"},
		{1, "* BYE\r\n"},
		{1, "* OK\r\na001 BAD\r\n"},
		{2, "+OK POP3 ready\r\n+OK capa\r\nSTLS\r\nUSER\r\n.\r\n+OK begin TLS\r\n"},
		{2, "+OK ready\r\n-ERR no CAPA\r\n"},
		{2, "+OK ready\r\n+OK\r\nSTLS\r\n.\r\n-ERR no\r\n"},
		{2, "-ERR busy\r\n"},
	} {
		f.Add(s.proto, []byte(s.script))
	}

	f.Fuzz(func(t *testing.T, proto byte, script []byte) {
		pr := []Protocol{SMTP, IMAP, POP3}[int(proto)%3]
		p, _ := scripted(pr, script)
		err := p.startTLS()
		if err != nil {
			checkProbeError(t, err)
			return
		}
		if !p.res.STARTTLSOffered {
			t.Fatalf("%s: STARTTLS not offered, yet success", pr)
		}
		if p.br.Buffered() != 0 {
			t.Fatalf("%s: success with %d bytes pending before the handshake", pr, p.br.Buffered())
		}
	})
}

// TestLongRepliesBounded: however much a server sends, the error keeps a
// few hundred bytes of it (the seeds are kept out of FuzzDialogue, whose
// minimizer would spend its time shrinking them).
func TestLongRepliesBounded(t *testing.T) {
	for _, tc := range []struct {
		proto  Protocol
		script string
	}{
		{SMTP, "220 mx\r\n" + strings.Repeat("250-"+strings.Repeat("x", 100)+"\r\n", 300)},
		{SMTP, "220-" + strings.Repeat("x", 8000) + "\r\n220-" + strings.Repeat("y", 8000) + "\r\n2"},
		{SMTP, "220-" + strings.Repeat("ä", 5000) + "\r\n"},
		{IMAP, "* OK\r\n" + strings.Repeat("* "+strings.Repeat("z", 200)+"\r\n", 300)},
		{POP3, "+OK\r\n+OK\r\n" + strings.Repeat(strings.Repeat("c", 300)+"\r\n", 300)},
	} {
		p, _ := scripted(tc.proto, []byte(tc.script))
		err := p.startTLS()
		if err == nil {
			t.Fatalf("%s: accepted", tc.proto)
		}
		checkProbeError(t, err)
		t.Logf("%s: %d bytes: %.160s…", tc.proto, len(err.Error()), err)
	}
}
