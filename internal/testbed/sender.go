package testbed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SenderConfig configures StartPostfixSender.
type SenderConfig struct {
	// ResolverIP is a resolver listening on ResolverIP:53 (an Unbound with
	// Port53IP). Postfix resolves through libc, which reads
	// /etc/resolv.conf and cannot be given a port; so the whole instance
	// runs in a private mount namespace (`unshare -m`) in which a
	// resolv.conf naming ResolverIP (with "options trust-ad", so that glibc
	// passes the AD bit on) is bind-mounted over /etc/resolv.conf, like
	// PosttlsFinger does.
	ResolverIP string
	// Hostname is myhostname (and myorigin); default sender.example.test.
	Hostname string
	// Extra main.cf lines, e.g. "smtp_tls_security_level = dane".
	Extra []string
}

// PostfixSender is a private Postfix instance used as a sending MTA:
// relayhost empty, no local delivery, mail injected with Send (Postfix's
// sendmail) and delivered by its smtp client to the recipients' MX hosts as
// found through ResolverIP. Its smtpd listens on Addr only so that readiness
// can be observed.
type PostfixSender struct {
	Addr string
	Port int
	Dir  string

	cfg       SenderConfig
	resolv    string
	postfix   string
	sendmail  string
	postqueue string
	p         *proc
	once      sync.Once
	serr      error
}

// StartPostfixSender writes main.cf and master.cf into dir and starts
// `unshare -m sh -c 'mount --bind RESOLV /etc/resolv.conf && exec postfix -c
// dir start-fg'`. Commands run later from outside the namespace (postfix
// reload/stop, postqueue, sendmail) talk to the instance through its queue
// directory and pid file; only the daemons need the private resolv.conf.
func StartPostfixSender(ctx context.Context, dir string, cfg SenderConfig) (*PostfixSender, error) {
	bins := map[string]string{}
	for _, b := range []string{"postfix", "sendmail", "postqueue", "unshare"} {
		p, err := Lookup(b)
		if err != nil {
			return nil, err
		}
		bins[b] = p
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("testbed: postfix sender: needs root (master, unshare -m)")
	}
	if ip := net.ParseIP(cfg.ResolverIP); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("testbed: postfix sender: resolver %q is not a loopback IP address", cfg.ResolverIP)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "sender.example.test"
	}
	dir, err := preparePostfixDir(dir, "postfix sender")
	if err != nil {
		return nil, err
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte(fmt.Sprintf("nameserver %s\noptions trust-ad edns0 attempts:2 timeout:2\n", cfg.ResolverIP)), 0o644); err != nil {
		return nil, err
	}
	return startPostfixInstance(ctx, "postfix sender", func(port int) (*PostfixSender, *proc, error) {
		s := &PostfixSender{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, Dir: dir, cfg: cfg,
			resolv: resolv, postfix: bins["postfix"], sendmail: bins["sendmail"], postqueue: bins["postqueue"]}
		if err := writeAtomic(filepath.Join(dir, "main.cf"), []byte(s.mainCf()), 0o644); err != nil {
			return nil, nil, err
		}
		if err := writeMasterCf(dir, port); err != nil {
			return nil, nil, err
		}
		var err error
		s.p, err = startProc(dir, &syncBuffer{}, bins["unshare"], "-m", "sh", "-c",
			`mount --bind "$0" /etc/resolv.conf && exec "$@"`, resolv, s.postfix, "-c", dir, "start-fg")
		return s, s.p, err
	})
}

// NewPostfixSender starts a sender in a fresh temporary directory and stops
// it when the test ends.
func NewPostfixSender(tb testing.TB, cfg SenderConfig) *PostfixSender {
	tb.Helper()
	Require(tb, "postfix", "postfix")
	Require(tb, "unshare", "util-linux")
	RequireRoot(tb, "a private Postfix sender in its own mount namespace")
	return startForTest(tb, func(ctx context.Context, dir string) (*PostfixSender, error) {
		return StartPostfixSender(ctx, dir, cfg)
	})
}

func (s *PostfixSender) mainCf() string {
	var b strings.Builder
	writeMainCfHead(&b, s.Dir, s.cfg.Hostname)
	b.WriteString(`myorigin = $myhostname
mydomain = example.test
mydestination =
relayhost =
relay_domains =
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtpd_banner = $myhostname ESMTP
smtpd_tls_security_level = none
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_tls_loglevel = 1
smtp_connect_timeout = 10s
notify_classes =
delay_warning_time = 0h
bounce_queue_lifetime = 1h
maximal_queue_lifetime = 1h
`)
	for _, l := range s.cfg.Extra {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// Log returns what postfix start-fg printed (Postfix's own log is off, see
// Postfix.Log; use Queue for delivery status).
func (s *PostfixSender) Log() string { return s.p.out.String() }

// Postconf runs `postconf -c dir ARGS…`, e.g. "-e", "smtp_tls_security_level = may".
func (s *PostfixSender) Postconf(args ...string) error {
	bin, err := Lookup("postconf")
	if err != nil {
		return err
	}
	out, err := exec.Command(bin, append([]string{"-c", s.Dir}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed: postconf %v: %w: %s", args, err, out)
	}
	return nil
}

// Reload runs `postfix -c dir reload`.
func (s *PostfixSender) Reload() error { return postfixReload(s.postfix, s.Dir) }

// Send submits a message with Postfix's sendmail (`sendmail -C dir -i -f
// from -- to`); Subject is set, so that receivers can tell messages apart.
func (s *PostfixSender) Send(ctx context.Context, from, to, subject, body string) error {
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\n\r\n%s\r\n",
		from, to, subject, time.Now().Format(time.RFC1123Z), body)
	cmd := exec.CommandContext(ctx, s.sendmail, "-C", s.Dir, "-i", "-f", from, "--", to)
	cmd.Stdin = strings.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed: sendmail: %w: %s", err, out)
	}
	return nil
}

// Flush runs `postqueue -c dir -f`: every queued message is retried now.
func (s *PostfixSender) Flush() error {
	out, err := exec.Command(s.postqueue, "-c", s.Dir, "-f").CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed: postqueue -f: %w: %s", err, out)
	}
	return nil
}

// QueuedMessage is one object of `postqueue -j`.
type QueuedMessage struct {
	QueueName  string `json:"queue_name"` // incoming, active, deferred, hold, maildrop
	QueueID    string `json:"queue_id"`
	Sender     string `json:"sender"`
	Recipients []struct {
		Address     string `json:"address"`
		DelayReason string `json:"delay_reason"`
	} `json:"recipients"`
}

// Queue returns the queue as `postqueue -c dir -j` reports it.
func (s *PostfixSender) Queue(ctx context.Context) ([]QueuedMessage, error) {
	cmd := exec.CommandContext(ctx, s.postqueue, "-c", s.Dir, "-j")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("testbed: postqueue -j: %w: %s", err, errb.String())
	}
	var qs []QueuedMessage
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var q QueuedMessage
		if err := json.Unmarshal(sc.Bytes(), &q); err != nil {
			return nil, fmt.Errorf("testbed: postqueue -j: %w: %q", err, sc.Text())
		}
		qs = append(qs, q)
	}
	return qs, sc.Err()
}

// WaitDeferred polls the queue until the message to rcpt is in the deferred
// queue with a delay reason, and returns that reason.
func (s *PostfixSender) WaitDeferred(ctx context.Context, rcpt string) (string, error) {
	var reason string
	err := poll(ctx, s.p.exited, func(ctx context.Context) error {
		qs, err := s.Queue(ctx)
		if err != nil {
			return err
		}
		var seen []string
		for _, q := range qs {
			for _, r := range q.Recipients {
				seen = append(seen, fmt.Sprintf("%s/%s: %q", q.QueueName, r.Address, r.DelayReason))
				if strings.EqualFold(r.Address, rcpt) && q.QueueName == "deferred" && r.DelayReason != "" {
					reason = r.DelayReason
					return nil
				}
			}
		}
		return fmt.Errorf("%s not deferred yet; queue: %v", rcpt, seen)
	})
	return reason, err
}

// Stop runs `postfix -c dir stop` and waits for start-fg (and so the mount
// namespace) to end; as a last resort it kills the master's session.
// Idempotent.
func (s *PostfixSender) Stop() error {
	s.once.Do(func() {
		errs := stopPostfixMaster(s.postfix, s.Dir, s.p)
		if len(errs) > 0 {
			s.serr = fmt.Errorf("testbed: postfix sender %s: %s", s.Dir, strings.Join(errs, "; "))
		}
	})
	return s.serr
}
