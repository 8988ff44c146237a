// Command checkbed starts a test bed of N MX hosts for benchmarking
// `tlsactl check`: Knot serving a DNSSEC-signed zone bench.test with, per host
// hN.bench.test, an A record 127.0.x.y and a TLSA RRset (3 1 1 + 2 1 1) at
// _PORT._tcp.hN.bench.test; a validating Unbound; and one STARTTLS SMTP
// server listening on every 127.0.x.y:PORT. Only loopback addresses are used.
//
// With -domains D it also serves D mail domains dI.bench.test, each with one
// MX record naming host h(I mod N): many domains share an MX host, as they do
// at hosting providers. The SMTP server waits -delay (default 100ms) before
// every reply (greeting, EHLO, STARTTLS, …) to emulate a network round trip.
// With -port53 Unbound also listens on port 53 of a 127.53.x.y address, for
// clients that resolve through /etc/resolv.conf (posttls-finger).
//
// It prints one line of JSON ({"resolver":…,"resolver53":…,"port":…,
// "hosts":[…],"domains":[…]}) when ready and runs until its standard input is
// closed or it gets SIGTERM/SIGINT.
//
//	go run ./bench/checkbed -n 1000
//	go run ./bench/checkbed -n 2000 -domains 10000 -delay 100ms -port53
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/tlsa"
)

func main() {
	n := flag.Int("n", 1000, "number of MX hosts")
	domains := flag.Int("domains", 0, "number of mail domains dI.bench.test, each with MX h(I mod n)")
	delay := flag.Duration("delay", 100*time.Millisecond, "wait this long before every SMTP reply (emulated round trip)")
	port53 := flag.Bool("port53", false, "also let Unbound listen on port 53 of a 127.53.x.y address")
	flag.Parse()
	if err := run(*n, *domains, *delay, *port53); err != nil {
		fmt.Fprintln(os.Stderr, "checkbed:", err)
		os.Exit(1)
	}
}

func run(n, ndomains int, delay time.Duration, port53 bool) error {
	if n < 1 || n > 60000 {
		return fmt.Errorf("-n %d: want 1 to 60000", n)
	}
	if ndomains < 0 || ndomains > 1000000 {
		return fmt.Errorf("-domains %d: want 0 to 1000000", ndomains)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	dir, err := os.MkdirTemp("", "checkbed-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	chain, err := testbed.NewChain(testbed.ChainOptions{DNSNames: []string{"*.bench.test"}})
	if err != nil {
		return err
	}
	cert := chain.TLSCertificate()
	r311, _ := tlsa.Compute(tlsa.FromCertificate(chain.Leaf.Cert), 3, 1, 1)
	r211, _ := tlsa.Compute(tlsa.FromCertificate(chain.Intermediate.Cert), 2, 1, 1)

	// One SMTP server, one listener per host address, all on the same port.
	srv := &slowSMTP{tls: &tls.Config{Certificates: []tls.Certificate{cert}}, delay: delay}
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	var port int
	var hosts []string
	var records []string
	for i := 0; i < n; i++ {
		ip := fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250)
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		l, err := net.Listen("tcp4", addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		if port == 0 {
			port = l.Addr().(*net.TCPAddr).Port
		}
		listeners = append(listeners, l)
		go srv.serve(l)
		h := fmt.Sprintf("h%d.bench.test.", i)
		hosts = append(hosts, h)
		records = append(records,
			fmt.Sprintf("%s A %s", h, ip),
			fmt.Sprintf("_%d._tcp.%s TLSA %s", port, h, r311),
			fmt.Sprintf("_%d._tcp.%s TLSA %s", port, h, r211))
	}

	var domains []string
	for i := 0; i < ndomains; i++ {
		d := fmt.Sprintf("d%d.bench.test.", i)
		domains = append(domains, d)
		records = append(records, fmt.Sprintf("%s MX 10 h%d.bench.test.", d, i%n))
	}

	startCtx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	k, err := testbed.StartKnot(startCtx, dir+"/knot", testbed.KnotConfig{Zones: []testbed.Zone{{Name: "bench.test.", Signed: true, Records: records}}})
	if err != nil {
		return err
	}
	defer k.Stop()
	ds, err := k.DS(startCtx, "bench.test.")
	if err != nil {
		return err
	}
	u, err := testbed.StartUnbound(startCtx, dir+"/unbound", testbed.UnboundConfig{
		Stubs: []testbed.StubZone{{Name: "bench.test.", Addr: k.Addr, TrustAnchor: ds}}, CacheMaxTTL: 3600,
		Port53: port53,
		Extra:  []string{"num-threads: 2", "outgoing-range: 4096", "num-queries-per-thread: 2048"},
	})
	if err != nil {
		return err
	}
	defer u.Stop()

	out, _ := json.Marshal(map[string]any{"resolver": u.Addr, "resolver53": u.Port53IP, "port": port,
		"delay_ms": delay.Milliseconds(), "hosts": hosts, "domains": domains})
	fmt.Println(string(out))

	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		close(eof)
	}()
	select {
	case <-ctx.Done():
	case <-eof:
	}
	return nil
}

// slowSMTP is a minimal ESMTP server that offers STARTTLS and waits delay
// before each reply, as a server across a network round trip would appear to
// a client. It accepts any envelope and discards messages.
type slowSMTP struct {
	tls   *tls.Config
	delay time.Duration
}

func (s *slowSMTP) serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return // the listener closed
		}
		go s.session(c)
	}
}

func (s *slowSMTP) session(c net.Conn) {
	defer c.Close()
	deadline := func() { _ = c.SetDeadline(time.Now().Add(30*time.Second + 10*s.delay)) }
	deadline()
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	reply := func(lines ...string) bool {
		if s.delay > 0 {
			time.Sleep(s.delay)
		}
		for _, l := range lines {
			w.WriteString(l + "\r\n")
		}
		return w.Flush() == nil
	}
	if !reply("220 bench.test ESMTP checkbed") {
		return
	}
	secure, data := false, false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		deadline()
		if data {
			if strings.TrimRight(line, "\r\n") == "." {
				data = false
				if !reply("250 2.0.0 OK: queued") {
					return
				}
			}
			continue
		}
		verb := strings.ToUpper(strings.TrimSpace(line))
		if i := strings.IndexByte(verb, ' '); i >= 0 {
			verb = verb[:i]
		}
		ok := true
		switch verb {
		case "EHLO":
			if secure {
				ok = reply("250-bench.test", "250-PIPELINING", "250-8BITMIME", "250 SIZE 10240000")
			} else {
				ok = reply("250-bench.test", "250-PIPELINING", "250-8BITMIME", "250-SIZE 10240000", "250 STARTTLS")
			}
		case "HELO":
			ok = reply("250 bench.test")
		case "STARTTLS":
			if secure {
				ok = reply("503 5.5.1 TLS already active")
				break
			}
			if !reply("220 2.0.0 Ready to start TLS") {
				return
			}
			tc := tls.Server(c, s.tls)
			if tc.Handshake() != nil {
				return
			}
			secure = true
			r, w = bufio.NewReader(tc), bufio.NewWriter(tc)
		case "MAIL", "RCPT", "RSET", "NOOP":
			ok = reply("250 2.0.0 OK")
		case "DATA":
			data = true
			ok = reply("354 End data with <CR><LF>.<CR><LF>")
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			ok = reply("502 5.5.2 Command not recognized")
		}
		if !ok {
			return
		}
	}
}
