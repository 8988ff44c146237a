// Package testbed starts real servers (Knot DNS, Unbound, Postfix, a Go SMTP
// server) and runs posttls-finger, for integration tests of tlsactl.
//
// Every server runs in the foreground on a loopback address with a free port
// and a configuration written into a directory the caller owns; it is stopped
// by PID. Constructors named Start* take a context and a directory and return
// (server, error), for use from TestMain; the New* wrappers take a testing.TB,
// create the directory with tb.TempDir, register tb.Cleanup and call tb.Fatal
// on error. The package holds no mutable package-level state.
//
// Only loopback addresses (127.0.0.0/8) are ever contacted.
package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultStartTimeout bounds how long a Start* function waits for a server to
// become ready when the context has no earlier deadline.
const DefaultStartTimeout = 20 * time.Second

// Lookup finds binary on PATH, then in /usr/sbin and /sbin. It is the
// non-testing variant of Require, e.g. for TestMain.
func Lookup(binary string) (string, error) {
	if p, err := exec.LookPath(binary); err == nil {
		return p, nil
	}
	// Debian puts the daemons into sbin, which is not always on a test
	// runner's PATH.
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, binary)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("testbed: %s not found on PATH, /usr/sbin or /sbin", binary)
}

// Require returns the path of binary, or stops the test: with CI=true in the
// environment a missing binary is a failure (tb.Fatalf), otherwise the test is
// skipped with the apt-get line that installs debianPackage.
func Require(tb testing.TB, binary, debianPackage string) string {
	tb.Helper()
	p, err := Lookup(binary)
	if err == nil {
		return p
	}
	Unavailable(tb, fmt.Sprintf("%v; install it with: apt-get install -y --no-install-recommends %s", err, debianPackage))
	return ""
}

// Unavailable stops a test that lacks a piece of the test bed (a binary, a
// package's file, root): under CI=true it fails, since CI installs every
// piece; otherwise it skips. msg says what is missing and how to install it.
func Unavailable(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s (CI=true: missing pieces of the test bed fail)", msg)
	} else {
		tb.Skipf("%s", msg)
	}
}

// RequireRoot stops the test unless it runs as root (Postfix's master, port
// 53 listeners and `unshare -m` need it): under CI=true it fails, otherwise it
// skips.
func RequireRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	Unavailable(tb, "testbed: needs root: "+why)
}

// withDefaultTimeout returns ctx bounded by DefaultStartTimeout unless it
// already has a deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultStartTimeout)
}

// poll calls check every interval until it returns nil, the context ends, or
// the process described by exited has exited. It returns the last error.
func poll(ctx context.Context, exited <-chan struct{}, check func(context.Context) error) error {
	var last error
	interval := 20 * time.Millisecond
	for {
		last = check(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last check: %v)", ctx.Err(), last)
		case <-exited:
			return fmt.Errorf("process exited (last check: %v)", last)
		case <-time.After(interval):
		}
		if interval < 200*time.Millisecond {
			interval *= 2
		}
	}
}

// freePort returns a port on ip that was free for both TCP and UDP a moment
// ago. There is an unavoidable race with other processes; callers retry.
func freePort(ip string) (int, error) {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp4", net.JoinHostPort(ip, "0"))
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp4", net.JoinHostPort(ip, strconv.Itoa(port)))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("testbed: no free TCP+UDP port found")
}

// syncBuffer is a goroutine-safe bytes.Buffer for a process's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a started foreground process.
type proc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{} // closed when Wait returned
	err    error         // Wait's result, valid after exited is closed
}

func startProc(dir string, out *syncBuffer, name string, args ...string) (*proc, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// Daemons' children may keep the output pipe open after the process
	// itself is gone; do not let Wait block on them.
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop sends SIGTERM to the process (by PID), waits up to grace, then kills it.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("pid %d did not stop within %v; killed", p.cmd.Process.Pid, grace)
}

// tail returns the last n bytes of s, for error messages.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// ensureDir creates dir when needed.
func ensureDir(dir string) error {
	if dir == "" {
		return errors.New("testbed: empty directory")
	}
	return os.MkdirAll(dir, 0o755)
}

// startForTest starts a server in a fresh temporary directory, fails the test
// if it does not come up, and stops it when the test ends.
func startForTest[S interface{ Stop() error }](tb testing.TB, start func(context.Context, string) (S, error)) S {
	tb.Helper()
	s, err := start(context.Background(), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// notReady describes a server that did not come up, with the end of its log,
// and reports whether the cause was its port being taken in the meantime, so
// a retry with another port may help.
func notReady(name string, err error, log string) (error, bool) {
	l := strings.ToLower(log)
	inUse := strings.Contains(l, "address already in use") || strings.Contains(l, "address in use")
	return fmt.Errorf("testbed: %s not ready: %w\n%s log:\n%s", name, err, name, tail(log, 4000)), inUse
}
