package testbed

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// StubZone makes Unbound resolve Name by asking Addr ("ip:port") directly.
type StubZone struct {
	Name string
	Addr string
	// TrustAnchor is DS (or DNSKEY) zone-file text for the zone, usually
	// Knot.DS. Empty: the zone has no trust anchor and, as there is no root
	// trust anchor either, is validated as insecure (no AD bit). A wrong DS
	// makes the zone bogus (SERVFAIL).
	TrustAnchor string
	// Insecure adds `domain-insecure:` for the zone (needed only when an
	// enclosing zone has a trust anchor).
	Insecure bool
}

// UnboundConfig configures StartUnbound.
type UnboundConfig struct {
	Stubs []StubZone
	// CacheMaxTTL is cache-max-ttl; 0 means 1 second (answers are
	// effectively not cached). Set it large for tests that rely on caching.
	CacheMaxTTL int
	// NoCache sets cache-max-ttl and cache-max-negative-ttl to 0: every
	// answer comes fresh from the authority, as an ACME CA's validation
	// lookups should (a cached TXT from an earlier order fails the next).
	NoCache bool
	// IP to listen on with a free port; default 127.0.0.1.
	IP string
	// Port53 adds a listener on port 53 of a random 127.53.x.y address
	// (retried on conflict), for clients that use /etc/resolv.conf and cannot
	// name a port (posttls-finger). Unbound.Port53IP tells which address.
	Port53 bool
	// Port53IP forces the port-53 address (implies Port53). Use a distinct
	// address per instance: two listeners on one address:port would split
	// the queries between them.
	Port53IP string
	// Extra lines appended to the server: clause.
	Extra []string
}

// Unbound is a running validating resolver.
type Unbound struct {
	Addr     string // "ip:port" of the free-port listener
	Port53IP string // the port-53 listen address, if configured
	Dir      string

	p    *proc
	once sync.Once
	serr error
}

// RandomLoopbackIP returns a random address in 127.53.0.0/16 (excluding .0
// and .255 hosts), for a per-instance port-53 listener.
func RandomLoopbackIP() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	if b[1] == 0 || b[1] == 255 {
		b[1] = 1
	}
	return fmt.Sprintf("127.53.%d.%d", b[0], b[1])
}

// StartUnbound writes unbound.conf into dir, starts `unbound -d -c
// unbound.conf` and waits until it answers queries.
func StartUnbound(ctx context.Context, dir string, cfg UnboundConfig) (*Unbound, error) {
	bin, err := Lookup("unbound")
	if err != nil {
		return nil, err
	}
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	ip := cfg.IP
	if ip == "" {
		ip = "127.0.0.1"
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort(ip)
		if err != nil {
			return nil, err
		}
		u := &Unbound{Addr: net.JoinHostPort(ip, strconv.Itoa(port)), Port53IP: cfg.Port53IP, Dir: dir}
		if cfg.Port53 && cfg.Port53IP == "" {
			u.Port53IP = RandomLoopbackIP()
		}
		conf := filepath.Join(dir, "unbound.conf")
		if err := os.WriteFile(conf, []byte(u.config(cfg, ip, port)), 0o644); err != nil {
			return nil, err
		}
		logfile := filepath.Join(dir, "unbound.log")
		_ = os.Remove(logfile)
		u.p, err = startProc(dir, &syncBuffer{}, bin, "-d", "-c", conf)
		if err != nil {
			return nil, err
		}
		lastErr = u.waitReady(ctx)
		if lastErr == nil {
			return u, nil
		}
		_ = u.Stop()
		var retry bool
		if lastErr, retry = notReady("unbound", lastErr, u.Log()); !retry {
			break
		}
	}
	return nil, lastErr
}

// NewUnbound starts Unbound in a fresh temporary directory and stops it when
// the test ends.
func NewUnbound(tb testing.TB, cfg UnboundConfig) *Unbound {
	tb.Helper()
	Require(tb, "unbound", "unbound")
	return startForTest(tb, func(ctx context.Context, dir string) (*Unbound, error) { return StartUnbound(ctx, dir, cfg) })
}

func (u *Unbound) config(cfg UnboundConfig, ip string, port int) string {
	ttl := cfg.CacheMaxTTL
	switch {
	case cfg.NoCache:
		ttl = 0
	case ttl <= 0:
		ttl = 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, `server:
    verbosity: 1
    val-log-level: 2
    use-syslog: no
    logfile: %q
    log-servfail: yes
    directory: %q
    pidfile: %q
    chroot: ""
    username: ""
    do-daemonize: no
    num-threads: 1
    so-reuseport: no
    do-ip6: no
    interface: %s@%d
`, filepath.Join(u.Dir, "unbound.log"), u.Dir, filepath.Join(u.Dir, "unbound.pid"), ip, port)
	if u.Port53IP != "" {
		fmt.Fprintf(&b, "    interface: %s@53\n", u.Port53IP)
	}
	fmt.Fprintf(&b, `    access-control: 127.0.0.0/8 allow_snoop
    do-not-query-localhost: no
    module-config: "validator iterator"
    cache-max-ttl: %d
    cache-max-negative-ttl: %d
    qname-minimisation: no
    trust-anchor-signaling: no
    root-key-sentinel: no
    local-zone: "test." nodefault
`, ttl, ttl)
	for _, s := range cfg.Stubs {
		if s.TrustAnchor != "" {
			fmt.Fprintf(&b, "    trust-anchor: %q\n", strings.Join(strings.Fields(s.TrustAnchor), " "))
		}
		if s.Insecure {
			fmt.Fprintf(&b, "    domain-insecure: %q\n", dns.Fqdn(s.Name))
		}
	}
	for _, l := range cfg.Extra {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	b.WriteString("\nremote-control:\n    control-enable: no\n")
	for _, s := range cfg.Stubs {
		host, p, err := net.SplitHostPort(s.Addr)
		if err != nil {
			host, p = s.Addr, "53"
		}
		fmt.Fprintf(&b, "\nstub-zone:\n    name: %q\n    stub-addr: %s@%s\n", dns.Fqdn(s.Name), host, p)
	}
	// Everything else goes to a loopback port nobody listens on, so that a
	// stray query never leaves the machine (no root hints are used).
	b.WriteString("\nstub-zone:\n    name: \".\"\n    stub-addr: 127.0.0.1@1\n")
	return b.String()
}

func (u *Unbound) waitReady(ctx context.Context) error {
	check := func(addr string) func(context.Context) error {
		return func(ctx context.Context) error {
			// A local-data name that needs no upstream: version.server CH TXT
			// is answered by Unbound itself.
			m := new(dns.Msg)
			m.SetQuestion("version.server.", dns.TypeTXT)
			m.Question[0].Qclass = dns.ClassCHAOS
			c := &dns.Client{Timeout: time.Second}
			r, _, err := c.ExchangeContext(ctx, m, addr)
			if err != nil {
				return err
			}
			if r.Rcode == dns.RcodeRefused {
				return fmt.Errorf("refused")
			}
			return nil
		}
	}
	if err := poll(ctx, u.p.exited, check(u.Addr)); err != nil {
		return err
	}
	if u.Port53IP != "" {
		return poll(ctx, u.p.exited, check(net.JoinHostPort(u.Port53IP, "53")))
	}
	return nil
}

// Log returns Unbound's log file and anything it printed.
func (u *Unbound) Log() string {
	b, _ := os.ReadFile(filepath.Join(u.Dir, "unbound.log"))
	return u.p.out.String() + string(b)
}

// Stop terminates unbound by PID (SIGTERM, SIGKILL after 10 s). Idempotent.
func (u *Unbound) Stop() error {
	u.once.Do(func() { u.serr = u.p.stop(10 * time.Second) })
	return u.serr
}

// Query sends a recursive query with the DO bit to the resolver.
func (u *Unbound) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	return queryDO(ctx, u.Addr, name, qtype)
}

// CorruptDS returns ds (DS zone-file text) with the last digest digit
// changed: a well-formed trust anchor that matches no key, which makes the
// zone bogus (SERVFAIL) in a validating resolver.
func CorruptDS(ds string) string {
	ds = strings.TrimSpace(ds)
	if ds == "" {
		return ds
	}
	last := ds[len(ds)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return ds[:len(ds)-1] + string(repl)
}
