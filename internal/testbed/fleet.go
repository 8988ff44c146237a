package testbed

// Pieces for fleet tests: many MX hosts, each on its own loopback address
// and the same port (25), as a fleet of mail servers is reached: a Go
// STARTTLS server that, like a real MTA, reads its key and chain files at
// start and again only when told to reload (by a command a deploy process
// can run), and a Postfix instance moved from its free port on 127.0.0.1
// to an address of its own.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FleetAddrs returns n addresses 127.25.R.1 … 127.25.R.n of a random /24 R
// in 127.25.0.0/16 (a range no other helper of this package uses) on which
// port was free for TCP a moment ago: one address per host of a fleet,
// all reached on the same port. It tries a few /24s before giving up.
func FleetAddrs(n, port int) ([]string, error) {
	if n < 1 || n > 254 {
		return nil, fmt.Errorf("testbed: FleetAddrs: %d addresses do not fit a /24", n)
	}
	var last error
	for attempt := 0; attempt < 8; attempt++ {
		b := make([]byte, 1)
		_, _ = rand.Read(b)
		ips := make([]string, n)
		last = nil
		for i := range ips {
			ips[i] = fmt.Sprintf("127.25.%d.%d", b[0], i+1)
			l, err := net.Listen("tcp4", net.JoinHostPort(ips[i], strconv.Itoa(port)))
			if err != nil {
				last = err
				break
			}
			l.Close()
		}
		if last == nil {
			return ips, nil
		}
	}
	return nil, fmt.Errorf("testbed: FleetAddrs: no /24 of 127.25.0.0/16 with port %d free on %d addresses: %w", port, n, last)
}

// FileSMTPServer is an in-process STARTTLS SMTP server (go-smtp, messages
// discarded) on a chosen address that serves the key and chain read from
// KeyFile and ChainFile (PEM; chain leaf first). It reads them at start and
// then only on a reload: writing new files changes nothing until
// ReloadCommand runs (or Reload is called), as with a real MTA. A reload
// that cannot load the files keeps serving the previous certificate and
// makes ReloadCommand exit 1.
type FileSMTPServer struct {
	Addr               string // "ip:port" of the SMTP listener
	ControlAddr        string // "ip:port" the reload command connects to
	KeyFile, ChainFile string

	reloads atomic.Int64
	smtp    *SMTPServer
	ctl     net.Listener
	bash    string
	wg      sync.WaitGroup
	once    sync.Once
}

// StartFileSMTPServer loads the files and listens on addr ("ip:port"),
// with the control listener on a free port of the same ip. hostname is the
// EHLO name. bash (for ReloadCommand) must be installed.
func StartFileSMTPServer(addr, hostname, keyFile, chainFile string) (*FileSMTPServer, error) {
	bash, err := Lookup("bash")
	if err != nil {
		return nil, err
	}
	ip, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	s := &FileSMTPServer{KeyFile: keyFile, ChainFile: chainFile, bash: bash}
	cert, err := s.load()
	if err != nil {
		return nil, err
	}
	if s.smtp, err = startSMTPServer(addr, hostname, SMTPStartTLS, cert); err != nil {
		return nil, err
	}
	if s.ctl, err = net.Listen("tcp4", net.JoinHostPort(ip, "0")); err != nil {
		_ = s.smtp.Close()
		return nil, err
	}
	s.Addr, s.ControlAddr = s.smtp.Addr, s.ctl.Addr().String()
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.serveControl() }()
	return s, nil
}

// NewFileSMTPServer is StartFileSMTPServer for tests; the server is closed
// at the end of the test.
func NewFileSMTPServer(tb testing.TB, addr, hostname, keyFile, chainFile string) *FileSMTPServer {
	tb.Helper()
	Require(tb, "bash", "bash")
	s, err := StartFileSMTPServer(addr, hostname, keyFile, chainFile)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// Reload reads the key and chain files again and serves them from the next
// handshake on; on error the previous certificate stays.
func (s *FileSMTPServer) Reload() error {
	c, err := s.load()
	if err != nil {
		return err
	}
	s.smtp.SetCertificate(*c)
	s.reloads.Add(1)
	return nil
}

// load reads the key and chain files.
func (s *FileSMTPServer) load() (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(s.ChainFile, s.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("testbed: reload %s, %s: %w", s.ChainFile, s.KeyFile, err)
	}
	return &c, nil
}

// Reloads counts the successful reloads since start.
func (s *FileSMTPServer) Reloads() int64 { return s.reloads.Load() }

// ReloadCommand is the argv of a command (no shell needed by the caller)
// that makes the server reload and exits 0 once it serves the files, or 1
// with the reason on stderr. It connects to ControlAddr with bash's
// /dev/tcp, so it works from any process, with a minimal environment.
func (s *FileSMTPServer) ReloadCommand() []string {
	ip, port, _ := net.SplitHostPort(s.ControlAddr)
	return []string{s.bash, "-c",
		`exec 3<>"/dev/tcp/$0/$1" || exit 1; IFS= read -r r <&3; [ "$r" = ok ] && exit 0; echo "reload refused: ${r:-no answer}" >&2; exit 1`,
		ip, port}
}

// serveControl answers every connection with "ok" after a successful
// reload, or "error: …".
func (s *FileSMTPServer) serveControl() {
	for {
		c, err := s.ctl.Accept()
		if err != nil {
			return
		}
		reply := "ok"
		if err := s.Reload(); err != nil {
			reply = "error: " + strings.ReplaceAll(err.Error(), "\n", " ")
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte(reply + "\n"))
		c.Close()
	}
}

// Close stops both listeners and closes every connection. Idempotent.
func (s *FileSMTPServer) Close() error {
	s.once.Do(func() {
		_ = s.ctl.Close()
		_ = s.smtp.Close()
		s.wg.Wait()
	})
	return nil
}

// Listen moves the instance's public smtpd from its free port on 127.0.0.1
// to ip:port: master.cf's smtpd line is rewritten and `postfix reload` makes
// master close the old listener and open the new one. It waits until the
// new address answers with a 220 banner, then sets Addr and Port.
func (pf *Postfix) Listen(ctx context.Context, ip string, port int) error {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	path := filepath.Join(pf.Dir, "master.cf")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	oldPrefix := pf.Addr + " inet "
	newAddr := net.JoinHostPort(ip, strconv.Itoa(port))
	text := string(b)
	if !strings.HasPrefix(text, oldPrefix) {
		return fmt.Errorf("testbed: postfix %s: master.cf does not start with the smtpd line for %s", pf.Dir, pf.Addr)
	}
	if err := writeAtomic(path, []byte(newAddr+" inet "+strings.TrimPrefix(text, oldPrefix)), 0o644); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, pf.postfix, "-c", pf.Dir, "reload").CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: postfix reload: %w: %s", err, out)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := poll(ctx, pf.p.exited, func(ctx context.Context) error { return smtpBanner(ctx, newAddr) }); err != nil {
		return fmt.Errorf("testbed: postfix %s: no banner at %s after the reload: %w\n%s", pf.Dir, newAddr, err, tail(pf.Log(), 2000))
	}
	pf.Addr, pf.Port = newAddr, port
	return nil
}
