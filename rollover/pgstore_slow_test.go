//go:build !nopostgres

package rollover

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// latencyProxy is a loopback TCP proxy to a PostgreSQL server that delays
// every chunk it forwards, in either direction, by delay (in order): a
// database that answers slowly, as one under load or far away does.
type latencyProxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // nanoseconds
	wg     sync.WaitGroup
}

func newLatencyProxy(t *testing.T, target string) *latencyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &latencyProxy{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *latencyProxy) addr() string { return p.ln.Addr().String() }

func (p *latencyProxy) serve(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	done := make(chan struct{}, 2)
	go func() { p.pipe(s, c); done <- struct{}{} }()
	go func() { p.pipe(c, s); done <- struct{}{} }()
	<-done
}

// pipe copies src to dst, each chunk written delay after it was read.
func (p *latencyProxy) pipe(dst, src net.Conn) {
	type chunk struct {
		due  time.Time
		data []byte
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{time.Now().Add(time.Duration(p.delay.Load())), append([]byte(nil), buf[:n]...)}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range q {
		// The delay is the simulated network: the chunk is in flight.
		time.Sleep(time.Until(ch.due))
		if _, err := dst.Write(ch.data); err != nil {
			_ = src.Close()
			io.Copy(io.Discard, src)
			break
		}
	}
	_ = dst.Close()
	for range q {
	}
}

// TestPGLeaseSurvivesSlowDatabase: a database that answers every round trip
// in 0.6 s (more than lease/5) but well within the lease keeps the lease
// live: renewals that answer late count from their send time, so a runner
// under load is not cut off (an earlier renewer gave up on each attempt
// after lease/5 and lost the lease under a loaded CI machine). Writes go on
// through the slow database, and once it answers again at once the lease
// is still this runner's.
func TestPGLeaseSurvivesSlowDatabase(t *testing.T) {
	t.Parallel()
	b := newPGBackend(t)
	const lease = 4 * time.Second
	direct := net.JoinHostPort(b.pg.Host, strconv.Itoa(b.pg.Port))
	p := newLatencyProxy(t, direct)
	slow := *b
	slow.dsn = strings.Replace(b.dsn, direct, p.addr(), 1)
	if slow.dsn == b.dsn {
		t.Fatalf("DSN %q does not name %s", b.dsn, direct)
	}
	a := slow.open(t, "runner-slow", lease)
	h := "mx1.example.test."
	held, unlock, err := a.LockLease(context.Background(), LeaseHost, h)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if err := a.Save(confState(h, 0)); err != nil {
		t.Fatal(err)
	}
	p.delay.Store(int64(300 * time.Millisecond)) // each way
	other := b.open(t, "runner-other", lease)
	// Two leases long: every renewal in that time is slow.
	wctx, cancel := context.WithTimeout(context.Background(), 2*lease)
	defer cancel()
	if _, _, err := other.LockLease(wctx, LeaseHost, h); !errors.Is(err, ErrLocked) {
		t.Fatalf("another runner's take while the slow one renews = %v, want ErrLocked", err)
	}
	if err := context.Cause(held); err != nil {
		t.Fatalf("the lease was lost although every renewal answered within the lease: %v", err)
	}
	if err := a.Save(confState(h, 1)); err != nil {
		t.Fatalf("Save through the slow database: %v", err)
	}
	p.delay.Store(0)
	if err := a.Save(confState(h, 2)); err != nil {
		t.Fatal(err)
	}
	if st, err := other.Load(h); err != nil || st.Step != 2 {
		t.Fatalf("state after the slow period: %+v, %v", st, err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	tctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	_, unlockO, err := other.LockLease(tctx, LeaseHost, h)
	if err != nil {
		t.Fatalf("take after release: %v", err)
	}
	_ = unlockO()
}
