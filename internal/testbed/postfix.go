package testbed

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PostfixConfig configures StartPostfix.
type PostfixConfig struct {
	// KeyPEM and ChainPEM (leaf first, then intermediates) are served on
	// STARTTLS. Required unless NoSTARTTLS.
	KeyPEM, ChainPEM []byte
	// NoSTARTTLS sets smtpd_tls_security_level = none: EHLO does not offer
	// STARTTLS.
	NoSTARTTLS bool
	// Hostname is myhostname (the banner name); default mail.example.test.
	Hostname string
	// Extra main.cf lines.
	Extra []string
}

// Postfix is a private Postfix instance whose smtpd listens on Addr.
type Postfix struct {
	Addr string // "127.0.0.1:port"
	Port int
	Dir  string // config_directory; queue and data directories are below it

	cfg     PostfixConfig
	postfix string // path of the postfix command
	p       *proc

	mu      sync.Mutex // serialises SwapCertificate
	version int        // suffix of the current key/chain files
	once    sync.Once
	serr    error
}

// StartPostfix writes main.cf and master.cf into dir, runs `postfix -c dir
// start-fg` and waits until smtpd answers with a 220 banner. Every service runs
// without chroot; the log goes to the process's stdout (see Log).
func StartPostfix(ctx context.Context, dir string, cfg PostfixConfig) (*Postfix, error) {
	bin, err := Lookup("postfix")
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("testbed: postfix: the master daemon must be started as root")
	}
	if !cfg.NoSTARTTLS && (len(cfg.KeyPEM) == 0 || len(cfg.ChainPEM) == 0) {
		return nil, fmt.Errorf("testbed: postfix: KeyPEM and ChainPEM are required unless NoSTARTTLS")
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "mail.example.test"
	}
	dir, err = preparePostfixDir(dir, "postfix")
	if err != nil {
		return nil, err
	}
	return startPostfixInstance(ctx, "postfix", func(port int) (*Postfix, *proc, error) {
		pf := &Postfix{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, Dir: dir, cfg: cfg, postfix: bin}
		if !cfg.NoSTARTTLS {
			if err := pf.writeCertFiles(1, cfg.KeyPEM, cfg.ChainPEM); err != nil {
				return nil, nil, err
			}
			pf.version = 1
		}
		if err := pf.writeMainCf(); err != nil {
			return nil, nil, err
		}
		if err := writeMasterCf(dir, port); err != nil {
			return nil, nil, err
		}
		var err error
		pf.p, err = startProc(dir, &syncBuffer{}, bin, "-c", dir, "start-fg")
		return pf, pf.p, err
	})
}

// preparePostfixDir makes dir, as an absolute path, ready for a private
// Postfix instance (what names it in errors): searchable by user postfix, a
// data directory owned by postfix and a spool directory below it.
func preparePostfixDir(dir, what string) (string, error) {
	if err := ensureDir(dir); err != nil {
		return "", err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	// Postfix daemons run as user postfix and open data_directory by its
	// absolute path: every ancestor must be searchable (t.TempDir is 0700).
	if err := makeSearchable(dir); err != nil {
		return "", err
	}
	pu, err := user.Lookup("postfix")
	if err != nil {
		return "", fmt.Errorf("testbed: %s: %w", what, err)
	}
	uid, _ := strconv.Atoi(pu.Uid)
	gid, _ := strconv.Atoi(pu.Gid)
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return "", err
	}
	if err := os.Chown(data, uid, gid); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, "spool"), 0o755); err != nil {
		return "", err
	}
	return dir, nil
}

// startPostfixInstance starts a Postfix instance on a free port of
// 127.0.0.1 and waits until its smtpd answers with a 220 banner, trying up to
// three ports (a lost port race). launch writes the instance's configuration
// for port and starts it, returning the instance and its start-fg process;
// what names it in errors.
func startPostfixInstance[T interface {
	Stop() error
	Log() string
}](ctx context.Context, what string, launch func(port int) (T, *proc, error)) (T, error) {
	var zero T
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort("127.0.0.1")
		if err != nil {
			return zero, err
		}
		inst, p, err := launch(port)
		if err != nil {
			return zero, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		lastErr = poll(ctx, p.exited, func(ctx context.Context) error { return smtpBanner(ctx, addr) })
		if lastErr == nil {
			return inst, nil
		}
		stopErr := inst.Stop()
		var retry bool
		if lastErr, retry = notReady(what, fmt.Errorf("%w (stop: %v)", lastErr, stopErr), inst.Log()); !retry {
			break
		}
	}
	return zero, lastErr
}

// NewPostfix starts a private Postfix in a fresh temporary directory and
// stops it when the test ends.
func NewPostfix(tb testing.TB, cfg PostfixConfig) *Postfix {
	tb.Helper()
	Require(tb, "postfix", "postfix")
	RequireRoot(tb, "a private Postfix instance")
	return startForTest(tb, func(ctx context.Context, dir string) (*Postfix, error) { return StartPostfix(ctx, dir, cfg) })
}

// Log returns what postfix start-fg printed. Postfix's own logging is off:
// with maillog_file set, every daemon logs through postlogd, which was seen to
// deadlock here sending its own messages to its full socket (and then
// `postfix stop` hangs); without it, messages go to a /dev/log that does not
// exist and are dropped without blocking.
func (pf *Postfix) Log() string { return pf.p.out.String() }

// SwapCertificate installs a new key and chain (leaf first) and runs `postfix
// reload`. The files are written under new names and main.cf is replaced
// atomically, so no smtpd ever sees a key that does not match its chain. The
// reload is asynchronous: smtpd processes that are busy finish their session
// with the old certificate; poll for the new leaf.
func (pf *Postfix) SwapCertificate(keyPEM, chainPEM []byte) error {
	if pf.cfg.NoSTARTTLS {
		return fmt.Errorf("testbed: postfix: SwapCertificate in NoSTARTTLS mode")
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	old := pf.version
	if err := pf.writeCertFiles(old+1, keyPEM, chainPEM); err != nil {
		return err
	}
	pf.version = old + 1
	if err := pf.writeMainCf(); err != nil {
		return err
	}
	return postfixReload(pf.postfix, pf.Dir)
}

// postfixReload runs `postfix -c dir reload` with the postfix command bin.
func postfixReload(bin, dir string) error {
	out, err := exec.Command(bin, "-c", dir, "reload").CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed: postfix reload: %w: %s", err, out)
	}
	return nil
}

// Stop runs `postfix -c dir stop`, waits for the start-fg process and for the
// port to close. Idempotent.
func (pf *Postfix) Stop() error {
	pf.once.Do(func() { pf.serr = pf.stop() })
	return pf.serr
}

func (pf *Postfix) stop() error {
	errs := stopPostfixMaster(pf.postfix, pf.Dir, pf.p)
	// master is gone when start-fg returns; make sure nothing still listens.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := poll(ctx, nil, func(ctx context.Context) error {
		c, err := net.DialTimeout("tcp", pf.Addr, time.Second)
		if err != nil {
			return nil
		}
		c.Close()
		return fmt.Errorf("%s still accepts connections", pf.Addr)
	})
	if err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("testbed: postfix %s: %s", pf.Dir, strings.Join(errs, "; "))
	}
	return nil
}

// stopPostfixMaster runs `postfix -c dir stop` (bin is the postfix command)
// and waits for start-fg, p, to exit; as a last resort it kills the master's
// session. It returns what went wrong.
func stopPostfixMaster(bin, dir string, p *proc) []string {
	var errs []string
	select {
	case <-p.exited:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, "-c", dir, "stop").CombinedOutput()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Sprintf("postfix stop: %v: %s", err, strings.TrimSpace(string(out))))
			killPostfixMaster(dir)
		}
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			errs = append(errs, "start-fg did not exit after postfix stop")
			killPostfixMaster(dir)
			_ = p.stop(5 * time.Second)
		}
	}
	return errs
}

// killMaster kills the instance's master and every daemon it started.
func (pf *Postfix) killMaster() { killPostfixMaster(pf.Dir) }

// killPostfixMaster kills the master of the instance in dir and every daemon
// it started: master runs in its own session, so its process group is
// exactly this instance.
func killPostfixMaster(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "spool", "pid", "master.pid"))
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

func (pf *Postfix) certPaths(v int) (key, chain string) {
	return filepath.Join(pf.Dir, fmt.Sprintf("key-%d.pem", v)), filepath.Join(pf.Dir, fmt.Sprintf("fullchain-%d.pem", v))
}

func (pf *Postfix) writeCertFiles(v int, keyPEM, chainPEM []byte) error {
	k, c := pf.certPaths(v)
	if err := writeAtomic(k, keyPEM, 0o600); err != nil {
		return err
	}
	return writeAtomic(c, chainPEM, 0o644)
}

func (pf *Postfix) writeMainCf() error {
	var b strings.Builder
	writeMainCfHead(&b, pf.Dir, pf.cfg.Hostname)
	b.WriteString(`mydomain = example.test
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtpd_banner = $myhostname ESMTP
smtpd_tls_loglevel = 1
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
`)
	if pf.cfg.NoSTARTTLS {
		b.WriteString("smtpd_tls_security_level = none\n")
	} else {
		k, c := pf.certPaths(pf.version)
		fmt.Fprintf(&b, "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s, %s\n", k, c)
	}
	for _, l := range pf.cfg.Extra {
		b.WriteString(l + "\n")
	}
	return writeAtomic(filepath.Join(pf.Dir, "main.cf"), []byte(b.String()), 0o644)
}

// writeMainCfHead writes the first lines of a private instance's main.cf:
// its directories below dir (see preparePostfixDir), owners and myhostname.
func writeMainCfHead(b *strings.Builder, dir, hostname string) {
	fmt.Fprintf(b, `compatibility_level = 3.6
queue_directory = %s
data_directory = %s
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = %s
`, filepath.Join(dir, "spool"), filepath.Join(dir, "data"), hostname)
}

// writeMasterCf writes dir/master.cf (see masterCf).
func writeMasterCf(dir string, port int) error {
	return os.WriteFile(filepath.Join(dir, "master.cf"), []byte(masterCf(port)), 0o644)
}

// masterCf is Debian's master.cf reduced to what smtpd needs, with chroot
// off everywhere and the public smtpd on 127.0.0.1:port.
func masterCf(port int) string {
	return fmt.Sprintf(`127.0.0.1:%d inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`, port)
}

// smtpBanner connects to addr and expects a 220 greeting, then says QUIT.
func smtpBanner(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading banner: %w", err)
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("banner %q", strings.TrimSpace(line))
	}
	_, _ = c.Write([]byte("QUIT\r\n"))
	return nil
}

// writeAtomic writes data to a temporary file next to path and renames it.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// makeSearchable adds o+x to dir and to those of its ancestors that lack it
// and are owned by the current user (e.g. the 0700 directories of
// t.TempDir), so that unprivileged Postfix daemons can reach dir.
func makeSearchable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
				return fmt.Errorf("testbed: postfix needs %s searchable by user postfix (mode %v, not ours to change)", d, fi.Mode().Perm())
			}
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("testbed: postfix needs %s searchable by user postfix: %w", d, err)
			}
		}
		if p := filepath.Dir(d); p == d {
			return nil
		}
	}
}
