// Command checkbed starts a test bed of N MX hosts for benchmarking
// `tlsactl check`: Knot serving a DNSSEC-signed zone bench.test with, per host
// hN.bench.test, an A record 127.0.x.y and a TLSA RRset (3 1 1 + 2 1 1) at
// _PORT._tcp.hN.bench.test; a validating Unbound; and one STARTTLS SMTP
// server listening on every 127.0.x.y:PORT. Only loopback addresses are used.
//
// It prints one line of JSON ({"resolver":…,"port":…,"hosts":[…]}) when ready
// and runs until its standard input is closed or it gets SIGTERM/SIGINT.
//
//	go run ./bench/checkbed -n 1000
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
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/tlsa"
)

func main() {
	n := flag.Int("n", 1000, "number of MX hosts")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "checkbed:", err)
		os.Exit(1)
	}
}

func run(n int) error {
	if n < 1 || n > 60000 {
		return fmt.Errorf("-n %d: want 1 to 60000", n)
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
	srv := smtp.NewServer(backend{})
	srv.Domain = "bench.test"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.ReadTimeout, srv.WriteTimeout = 30*time.Second, 30*time.Second
	srv.AllowInsecureAuth = true
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
		go srv.Serve(l) //nolint:errcheck // ends when the listener closes
		h := fmt.Sprintf("h%d.bench.test.", i)
		hosts = append(hosts, h)
		records = append(records,
			fmt.Sprintf("%s A %s", h, ip),
			fmt.Sprintf("_%d._tcp.%s TLSA %s", port, h, r311),
			fmt.Sprintf("_%d._tcp.%s TLSA %s", port, h, r211))
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
		Extra: []string{"num-threads: 2", "outgoing-range: 4096", "num-queries-per-thread: 2048"},
	})
	if err != nil {
		return err
	}
	defer u.Stop()

	out, _ := json.Marshal(map[string]any{"resolver": u.Addr, "port": port, "hosts": hosts})
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

type backend struct{}

func (backend) NewSession(*smtp.Conn) (smtp.Session, error) { return session{}, nil }

type session struct{}

func (session) Reset()                               {}
func (session) Logout() error                        { return nil }
func (session) Mail(string, *smtp.MailOptions) error { return nil }
func (session) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (session) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
