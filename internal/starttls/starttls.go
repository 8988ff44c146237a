// Package starttls connects to a TLS service (SMTP, IMAP or POP3 with
// STARTTLS, or direct TLS) and captures the certificate chain it serves.
//
// The handshake uses InsecureSkipVerify: nothing is verified here, DANE/PKIX
// verification is done by the caller on Result.Chain. TLS 1.2 is the minimum.
//
// Every phase (connect, greeting, capability query, STARTTLS, handshake) has
// its own deadline of Options.Timeout, and the context bounds the whole probe:
// cancelling it interrupts any blocked read or write. A server that accepts
// and never speaks fails in the banner phase after Timeout.
//
// Data the server sends after its positive STARTTLS reply and before the TLS
// handshake is a protocol violation (and a known injection vector); the probe
// fails in the STARTTLS phase when it sees such data.
package starttls

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultTimeout is the per-phase timeout used when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// quitTimeout bounds the polite goodbye after a successful handshake.
const quitTimeout = 2 * time.Second

// maxLine and maxLines bound what a server may send in one reply;
// maxReplyText what of it an *Error keeps (Error.Reply), and maxLineText
// what of one line an error message quotes, so that an error (which callers
// print and keep in state and history) stays a few hundred bytes long
// whatever the server sends.
const (
	maxLine        = 8192
	maxLines       = 256
	maxReplyText   = 256
	maxQuotedReply = 300
	maxLineText    = 80
)

// Protocol selects how TLS is started.
type Protocol string

const (
	Auto Protocol = ""     // by port: 25/587 SMTP, 143 IMAP, 110 POP3, 465/993/995/443 direct TLS
	SMTP Protocol = "smtp" // EHLO, STARTTLS (RFC 3207)
	IMAP Protocol = "imap" // CAPABILITY, STARTTLS (RFC 3501)
	POP3 Protocol = "pop3" // CAPA, STLS (RFC 2595)
	None Protocol = "none" // direct TLS (implicit TLS)
)

// ParseProtocol accepts "smtp", "imap", "pop3", "none" (also "tls",
// "direct") and "auto" or "" (case-insensitive).
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return Auto, nil
	case "smtp":
		return SMTP, nil
	case "imap":
		return IMAP, nil
	case "pop3", "pop":
		return POP3, nil
	case "none", "tls", "direct":
		return None, nil
	}
	return Auto, fmt.Errorf("starttls: unknown protocol %q (want smtp, imap, pop3, none or auto)", s)
}

// ProtocolForPort returns the protocol Auto picks for port, and false for a
// port it does not know.
func ProtocolForPort(port int) (Protocol, bool) {
	switch port {
	case 25, 587:
		return SMTP, true
	case 143:
		return IMAP, true
	case 110:
		return POP3, true
	case 465, 993, 995, 443:
		return None, true
	}
	return Auto, false
}

// Options configures Probe.
type Options struct {
	Addr       string   // "ip:port" (or "host:port") to connect to
	ServerName string   // SNI; empty sends none
	Protocol   Protocol // Auto (zero value) chooses by port
	// Timeout bounds each phase; zero means DefaultTimeout.
	Timeout time.Duration
	// EHLOName is the SMTP client name; empty means the address literal of
	// the local end, e.g. "[127.0.0.1]".
	EHLOName string
}

// Timings are the durations of the phases that ran.
type Timings struct {
	Connect   time.Duration
	Banner    time.Duration // reading the greeting
	STARTTLS  time.Duration // capability query and STARTTLS command
	Handshake time.Duration
	Total     time.Duration
}

// Result is what a probe learned.
type Result struct {
	Protocol Protocol // the protocol used (Auto resolved)
	// Chain is the certificate chain as served, leaf first (unverified).
	Chain []*x509.Certificate
	// STARTTLSOffered reports that the server advertised STARTTLS (STLS for
	// POP3). Always false for direct TLS.
	STARTTLSOffered bool
	// Banner is the greeting (all lines of a multi-line SMTP 220, joined by
	// "\n", CRLF removed). Empty for direct TLS.
	Banner string
	// Capabilities are the EHLO keywords (SMTP), CAPABILITY atoms (IMAP)
	// or CAPA lines (POP3), as sent.
	Capabilities []string
	TLSVersion   uint16 // tls.VersionTLS12, …; tls.VersionName renders it
	CipherSuite  uint16 // tls.CipherSuiteName renders it
	Timings      Timings
}

// Phase names the step of a probe that failed.
type Phase string

const (
	PhaseSetup     Phase = "setup" // invalid options
	PhaseConnect   Phase = "connect"
	PhaseBanner    Phase = "banner"
	PhaseEHLO      Phase = "ehlo" // EHLO, IMAP CAPABILITY or POP3 CAPA
	PhaseSTARTTLS  Phase = "starttls"
	PhaseHandshake Phase = "handshake"
)

// Sentinels, wrapped by *Error.
var (
	// ErrNoSTARTTLS: the server does not offer STARTTLS.
	ErrNoSTARTTLS = errors.New("server does not offer STARTTLS")
	// ErrSTARTTLSRefused: the server answered the STARTTLS command with
	// something other than success (e.g. SMTP 454).
	ErrSTARTTLSRefused = errors.New("server refused STARTTLS")
	// ErrUnexpectedReply: a greeting or reply was not the expected one
	// (e.g. SMTP 554 banner, IMAP BYE, POP3 -ERR).
	ErrUnexpectedReply = errors.New("unexpected reply")
)

// Error is a failed probe: which phase, and why.
type Error struct {
	Phase Phase
	Addr  string
	Reply string // the server's reply that caused the failure, if any
	Err   error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("starttls: %s %s: %v", e.Addr, e.Phase, e.Err)
	if e.Reply != "" {
		// Quoting may make binary bytes four times longer: bound the
		// quoted text, not only Reply.
		q := strconv.Quote(e.Reply)
		if len(q) > maxQuotedReply {
			q = clip(q, maxQuotedReply) + `"`
		}
		s += " (server said " + q + ")"
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether the phase timed out or the context's deadline
// passed.
func (e *Error) Timeout() bool {
	return errors.Is(e.Err, os.ErrDeadlineExceeded) || errors.Is(e.Err, context.DeadlineExceeded)
}

// Probe connects to opts.Addr, starts TLS as opts.Protocol says and returns
// the served chain. The returned Result is never nil: on error it holds what
// was learned before the failing phase (banner, capabilities, timings), and
// the error is an *Error.
func Probe(ctx context.Context, opts Options) (*Result, error) {
	start := time.Now()
	res := &Result{Protocol: opts.Protocol}
	p := &prober{opts: opts, res: res}
	if p.opts.Timeout <= 0 {
		p.opts.Timeout = DefaultTimeout
	}
	err := p.run(ctx)
	res.Timings.Total = time.Since(start)
	return res, err
}

type prober struct {
	opts Options
	res  *Result
	conn net.Conn
	br   *bufio.Reader
	ctx  context.Context
}

func (p *prober) fail(ph Phase, reply string, err error) error {
	if ctxErr := contextErr(p.ctx); ctxErr != nil && !errors.Is(err, ctxErr) &&
		!errors.Is(err, ErrNoSTARTTLS) && !errors.Is(err, ErrSTARTTLSRefused) && !errors.Is(err, ErrUnexpectedReply) {
		err = fmt.Errorf("%w (%v)", ctxErr, err)
	}
	return &Error{Phase: ph, Addr: p.opts.Addr, Reply: clip(reply, maxReplyText), Err: err}
}

// clip bounds s to max bytes, "…" appended when cut; the cut does not split
// a UTF-8 sequence (bytes that are none are cut anywhere).
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := max
	for j := 0; j < utf8.UTFMax-1 && i > 0 && !utf8.RuneStart(s[i]); j++ {
		i--
	}
	return s[:i] + "…"
}

// contextErr is ctx.Err(), also reporting DeadlineExceeded when the deadline
// has passed but the context's timer has not fired yet (the connection's
// deadline, copied from the context, can expire first).
func contextErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

func (p *prober) run(ctx context.Context) error {
	p.ctx = ctx
	if p.res.Protocol == Auto {
		_, portStr, err := net.SplitHostPort(p.opts.Addr)
		if err != nil {
			return p.fail(PhaseSetup, "", err)
		}
		port, _ := strconv.Atoi(portStr)
		proto, ok := ProtocolForPort(port)
		if !ok {
			return p.fail(PhaseSetup, "", fmt.Errorf("cannot choose a protocol for port %q; set one", portStr))
		}
		p.res.Protocol = proto
	}
	switch p.res.Protocol {
	case SMTP, IMAP, POP3, None:
	default:
		return p.fail(PhaseSetup, "", fmt.Errorf("unknown protocol %q", p.res.Protocol))
	}

	t := time.Now()
	d := net.Dialer{Timeout: p.opts.Timeout}
	conn, err := d.DialContext(ctx, "tcp", p.opts.Addr)
	p.res.Timings.Connect = time.Since(t)
	if err != nil {
		return p.fail(PhaseConnect, "", err)
	}
	p.conn = conn
	defer conn.Close()
	// Cancelling the context interrupts any blocked read or write.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	p.br = bufio.NewReaderSize(conn, 4096)

	if p.res.Protocol != None {
		if err := p.startTLS(); err != nil {
			return err
		}
	}

	// Handshake.
	t = time.Now()
	p.deadline()
	tc := tls.Client(conn, &tls.Config{
		ServerName:         p.opts.ServerName,
		InsecureSkipVerify: true, // DANE verification is done by the caller
		MinVersion:         tls.VersionTLS12,
	})
	hctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	err = tc.HandshakeContext(hctx)
	cancel()
	p.res.Timings.Handshake = time.Since(t)
	if err != nil {
		return p.fail(PhaseHandshake, "", err)
	}
	st := tc.ConnectionState()
	p.res.Chain = st.PeerCertificates
	p.res.TLSVersion = st.Version
	p.res.CipherSuite = st.CipherSuite
	p.goodbye(tc)
	return nil
}

// deadline sets the connection's deadline for the next phase.
func (p *prober) deadline() {
	d := time.Now().Add(p.opts.Timeout)
	if cd, ok := p.ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	if p.ctx.Err() != nil {
		d = time.Unix(1, 0)
	}
	_ = p.conn.SetDeadline(d)
}

func (p *prober) startTLS() error {
	t := time.Now()
	p.deadline()
	var err error
	switch p.res.Protocol {
	case SMTP:
		err = p.smtpBanner()
	case IMAP:
		err = p.imapBanner()
	case POP3:
		err = p.pop3Banner()
	}
	p.res.Timings.Banner = time.Since(t)
	if err != nil {
		return err
	}
	t = time.Now()
	defer func() { p.res.Timings.STARTTLS = time.Since(t) }()
	p.deadline()
	switch p.res.Protocol {
	case SMTP:
		err = p.smtpSTARTTLS()
	case IMAP:
		err = p.imapSTARTTLS()
	case POP3:
		err = p.pop3STARTTLS()
	}
	if err != nil {
		return err
	}
	if n := p.br.Buffered(); n > 0 {
		return p.fail(PhaseSTARTTLS, "", fmt.Errorf("server sent %d bytes after its STARTTLS reply, before the handshake", n))
	}
	return nil
}

// goodbye ends the session politely, best effort, within quitTimeout.
func (p *prober) goodbye(tc *tls.Conn) {
	var cmd string
	switch p.res.Protocol {
	case SMTP:
		cmd = "QUIT\r\n"
	case IMAP:
		cmd = "a003 LOGOUT\r\n"
	case POP3:
		cmd = "QUIT\r\n"
	default:
		_ = tc.Close()
		return
	}
	_ = tc.SetDeadline(time.Now().Add(min(quitTimeout, p.opts.Timeout)))
	if _, err := io.WriteString(tc, cmd); err == nil {
		buf := make([]byte, 512)
		_, _ = tc.Read(buf) // the 221 / BYE / +OK; not checked
	}
	_ = tc.Close()
}

// readLine reads one CRLF- (or LF-) terminated line, without the line ending.
func (p *prober) readLine() (string, error) {
	var line []byte
	for {
		chunk, isPrefix, err := p.br.ReadLine()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return string(line), err
		}
		line = append(line, chunk...)
		if len(line) > maxLine {
			return clip(string(line), maxLineText), fmt.Errorf("reply line longer than %d bytes", maxLine)
		}
		if !isPrefix {
			return string(line), nil
		}
	}
}

func (p *prober) write(s string) error {
	_, err := io.WriteString(p.conn, s+"\r\n")
	return err
}

// --- SMTP ---

// smtpReply reads a possibly multi-line SMTP reply and returns its code and
// lines (text after the code and separator).
func (p *prober) smtpReply() (int, []string, string, error) {
	var lines []string
	var raw []string
	code := 0
	for i := 0; ; i++ {
		if i >= maxLines {
			return code, lines, strings.Join(raw, "\n"), fmt.Errorf("more than %d reply lines", maxLines)
		}
		l, err := p.readLine()
		if err != nil {
			return code, lines, strings.Join(append(raw, l), "\n"), err
		}
		raw = append(raw, l)
		if len(l) < 3 {
			return code, lines, strings.Join(raw, "\n"), fmt.Errorf("malformed SMTP reply line %q", clip(l, maxLineText))
		}
		c, err := strconv.Atoi(l[:3])
		if err != nil || c < 200 || c > 599 || (code != 0 && c != code) {
			return code, lines, strings.Join(raw, "\n"), fmt.Errorf("malformed SMTP reply line %q", clip(l, maxLineText))
		}
		code = c
		text := ""
		if len(l) > 4 {
			text = l[4:]
		}
		lines = append(lines, text)
		if len(l) == 3 || l[3] == ' ' {
			return code, lines, strings.Join(raw, "\n"), nil
		}
		if l[3] != '-' {
			return code, lines, strings.Join(raw, "\n"), fmt.Errorf("malformed SMTP reply line %q", clip(l, maxLineText))
		}
	}
}

func (p *prober) smtpBanner() error {
	code, _, raw, err := p.smtpReply()
	if err != nil {
		return p.fail(PhaseBanner, raw, err)
	}
	p.res.Banner = raw
	if code != 220 {
		p.quitPlain("QUIT")
		return p.fail(PhaseBanner, raw, fmt.Errorf("%w: greeting %d, want 220", ErrUnexpectedReply, code))
	}
	return nil
}

func (p *prober) ehloName() string {
	if p.opts.EHLOName != "" {
		return p.opts.EHLOName
	}
	if a, ok := p.conn.LocalAddr().(*net.TCPAddr); ok {
		if a.IP.To4() != nil {
			return "[" + a.IP.String() + "]"
		}
		return "[IPv6:" + a.IP.String() + "]"
	}
	return "localhost"
}

func (p *prober) smtpSTARTTLS() error {
	if err := p.write("EHLO " + p.ehloName()); err != nil {
		return p.fail(PhaseEHLO, "", err)
	}
	code, lines, raw, err := p.smtpReply()
	if err != nil {
		return p.fail(PhaseEHLO, raw, err)
	}
	if code != 250 {
		p.quitPlain("QUIT")
		return p.fail(PhaseEHLO, raw, fmt.Errorf("%w: EHLO answered %d", ErrUnexpectedReply, code))
	}
	if len(lines) > 1 {
		p.res.Capabilities = lines[1:] // the first line is the greeting
	}
	for _, l := range p.res.Capabilities {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], "STARTTLS") {
			p.res.STARTTLSOffered = true
		}
	}
	if !p.res.STARTTLSOffered {
		p.quitPlain("QUIT")
		return p.fail(PhaseSTARTTLS, raw, ErrNoSTARTTLS)
	}
	if err := p.write("STARTTLS"); err != nil {
		return p.fail(PhaseSTARTTLS, "", err)
	}
	code, _, raw, err = p.smtpReply()
	if err != nil {
		return p.fail(PhaseSTARTTLS, raw, err)
	}
	if code != 220 {
		p.quitPlain("QUIT")
		return p.fail(PhaseSTARTTLS, raw, fmt.Errorf("%w: reply %d", ErrSTARTTLSRefused, code))
	}
	return nil
}

// quitPlain sends a goodbye command in clear text, best effort, without
// waiting for the answer.
func (p *prober) quitPlain(cmd string) {
	if p.ctx.Err() == nil {
		_ = p.write(cmd)
	}
}

// --- IMAP ---

func (p *prober) imapBanner() error {
	l, err := p.readLine()
	if err != nil {
		return p.fail(PhaseBanner, l, err)
	}
	p.res.Banner = l
	up := strings.ToUpper(l)
	if !strings.HasPrefix(up, "* OK") && !strings.HasPrefix(up, "* PREAUTH") {
		return p.fail(PhaseBanner, l, fmt.Errorf("%w: greeting is not * OK", ErrUnexpectedReply))
	}
	return nil
}

// imapCommand sends "tag cmd" and returns the untagged lines and the tagged
// completion line.
func (p *prober) imapCommand(tag, cmd string) ([]string, string, error) {
	if err := p.write(tag + " " + cmd); err != nil {
		return nil, "", err
	}
	var untagged []string
	for i := 0; i < maxLines; i++ {
		l, err := p.readLine()
		if err != nil {
			return untagged, l, err
		}
		if strings.HasPrefix(l, tag+" ") {
			return untagged, l, nil
		}
		untagged = append(untagged, l)
	}
	return untagged, "", fmt.Errorf("more than %d reply lines", maxLines)
}

func imapOK(tag, l string) bool {
	return strings.HasPrefix(strings.ToUpper(l), strings.ToUpper(tag)+" OK")
}

func (p *prober) imapSTARTTLS() error {
	untagged, done, err := p.imapCommand("a001", "CAPABILITY")
	if err != nil {
		return p.fail(PhaseEHLO, done, err)
	}
	if !imapOK("a001", done) {
		p.quitPlain("a003 LOGOUT")
		return p.fail(PhaseEHLO, done, fmt.Errorf("%w: CAPABILITY failed", ErrUnexpectedReply))
	}
	for _, l := range untagged {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "*" && strings.EqualFold(f[1], "CAPABILITY") {
			p.res.Capabilities = append(p.res.Capabilities, f[2:]...)
		}
	}
	for _, c := range p.res.Capabilities {
		if strings.EqualFold(c, "STARTTLS") {
			p.res.STARTTLSOffered = true
		}
	}
	if !p.res.STARTTLSOffered {
		p.quitPlain("a003 LOGOUT")
		return p.fail(PhaseSTARTTLS, strings.Join(untagged, "\n"), ErrNoSTARTTLS)
	}
	_, done, err = p.imapCommand("a002", "STARTTLS")
	if err != nil {
		return p.fail(PhaseSTARTTLS, done, err)
	}
	if !imapOK("a002", done) {
		p.quitPlain("a003 LOGOUT")
		return p.fail(PhaseSTARTTLS, done, ErrSTARTTLSRefused)
	}
	return nil
}

// --- POP3 ---

func (p *prober) pop3Banner() error {
	l, err := p.readLine()
	if err != nil {
		return p.fail(PhaseBanner, l, err)
	}
	p.res.Banner = l
	if !strings.HasPrefix(l, "+OK") {
		return p.fail(PhaseBanner, l, fmt.Errorf("%w: greeting is not +OK", ErrUnexpectedReply))
	}
	return nil
}

func (p *prober) pop3STARTTLS() error {
	if err := p.write("CAPA"); err != nil {
		return p.fail(PhaseEHLO, "", err)
	}
	l, err := p.readLine()
	if err != nil {
		return p.fail(PhaseEHLO, l, err)
	}
	if strings.HasPrefix(l, "+OK") {
		for i := 0; ; i++ {
			if i >= maxLines {
				return p.fail(PhaseEHLO, "", fmt.Errorf("more than %d CAPA lines", maxLines))
			}
			c, err := p.readLine()
			if err != nil {
				return p.fail(PhaseEHLO, c, err)
			}
			if c == "." {
				break
			}
			p.res.Capabilities = append(p.res.Capabilities, c)
			if f := strings.Fields(c); len(f) > 0 && strings.EqualFold(f[0], "STLS") {
				p.res.STARTTLSOffered = true
			}
		}
	}
	// A server without CAPA (-ERR) does not advertise STLS.
	if !p.res.STARTTLSOffered {
		p.quitPlain("QUIT")
		return p.fail(PhaseSTARTTLS, l, ErrNoSTARTTLS)
	}
	if err := p.write("STLS"); err != nil {
		return p.fail(PhaseSTARTTLS, "", err)
	}
	l, err = p.readLine()
	if err != nil {
		return p.fail(PhaseSTARTTLS, l, err)
	}
	if !strings.HasPrefix(l, "+OK") {
		p.quitPlain("QUIT")
		return p.fail(PhaseSTARTTLS, l, ErrSTARTTLSRefused)
	}
	return nil
}
