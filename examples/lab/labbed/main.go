// Command labbed starts the servers of examples/lab on loopback, in a
// directory of its own: Knot serving the DNSSEC-signed zone lab.test (RFC 2136
// updates with a TSIG key), a validating caching Unbound for tlsactl, Postfix
// serving mx.lab.test from tlsactl's deploy files (a chain from a self-made
// "lab CA", with its 3 1 1 and 2 1 1 published), and Pebble, an ACME test CA
// that validates DNS-01 through an Unbound of its own. It writes the
// tlsactl configuration and a shell file with everything the lab script
// needs (lab.env), prints "ready", and runs until its standard input is
// closed or it gets SIGTERM/SIGINT; then it stops every server.
//
//	go run ./examples/lab/labbed -dir /tmp/lab -ttl 5
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/tlsa"
)

const (
	zone = "lab.test"
	host = "mx.lab.test"
)

func main() {
	dir := flag.String("dir", "", "working `DIR` (required; the servers' files and lab.env go here)")
	ttl := flag.Int("ttl", 5, "TTL of the TLSA records, seconds")
	flag.Parse()
	if err := run(*dir, *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "labbed:", err)
		os.Exit(1)
	}
}

type stopper interface{ Stop() error }

func run(dir string, ttl int) error {
	if dir == "" {
		return fmt.Errorf("give -dir DIR")
	}
	if ttl < 1 || ttl > 3600 {
		return fmt.Errorf("-ttl %d: want 1 to 3600", ttl)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var servers []stopper
	defer func() {
		for i := len(servers) - 1; i >= 0; i-- {
			if err := servers[i].Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "labbed: stop:", err)
			}
		}
	}()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	knot, err := testbed.StartKnot(startCtx, filepath.Join(dir, "knot"), testbed.KnotConfig{
		Zones: []testbed.Zone{{Name: zone, Signed: true, Records: []string{"mx 60 IN A 127.0.0.1"}}},
	})
	if err != nil {
		return err
	}
	servers = append(servers, knot)
	ds, err := knot.DS(startCtx, zone)
	if err != nil {
		return err
	}
	stubs := []testbed.StubZone{{Name: zone, Addr: knot.Addr, TrustAnchor: ds}}
	// tlsactl's resolver caches for the records' TTL, as a real one does.
	resolver, err := testbed.StartUnbound(startCtx, filepath.Join(dir, "unbound"), testbed.UnboundConfig{Stubs: stubs, CacheMaxTTL: 86400})
	if err != nil {
		return err
	}
	servers = append(servers, resolver)
	// The CA's resolver and lego's: no caching beyond a second.
	caResolver, err := testbed.StartUnbound(startCtx, filepath.Join(dir, "unbound-ca"), testbed.UnboundConfig{Stubs: stubs, NoCache: true})
	if err != nil {
		return err
	}
	servers = append(servers, caResolver)
	legoResolver, err := testbed.StartUnbound(startCtx, filepath.Join(dir, "unbound-lego"), testbed.UnboundConfig{Stubs: stubs})
	if err != nil {
		return err
	}
	servers = append(servers, legoResolver)

	// Postfix serves tlsactl's deploy files: a chain from the lab CA.
	chain, err := testbed.NewChain(testbed.ChainOptions{DNSNames: []string{host}})
	if err != nil {
		return err
	}
	deploy := filepath.Join(dir, "deploy")
	if err := os.MkdirAll(deploy, 0o755); err != nil {
		return err
	}
	keyPath, chainPath := filepath.Join(deploy, "key.pem"), filepath.Join(deploy, "fullchain.pem")
	if err := os.WriteFile(keyPath, chain.Leaf.KeyPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(chainPath, chain.FullChainPEM(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(deploy, "lab-ca.pem"), chain.Intermediate.PEM, 0o644); err != nil {
		return err
	}
	pf, err := testbed.StartPostfix(startCtx, filepath.Join(dir, "postfix"), testbed.PostfixConfig{
		KeyPEM: chain.Leaf.KeyPEM, ChainPEM: chain.FullChainPEM(), Hostname: host,
		Extra: []string{fmt.Sprintf("smtpd_tls_chain_files = %s, %s", keyPath, chainPath)},
	})
	if err != nil {
		return err
	}
	servers = append(servers, pf)

	// The starting point: 3 1 1 (the server's key) + 2 1 1 (the lab CA).
	owner := fmt.Sprintf("_%d._tcp.%s.", pf.Port, host)
	var add []dns.RR
	for _, m := range []struct {
		c *testbed.Cert
		u tlsa.Usage
	}{{chain.Leaf, tlsa.DANEEE}, {chain.Intermediate, tlsa.DANETA}} {
		r, err := tlsa.Compute(tlsa.FromCertificate(m.c.Cert), m.u, tlsa.SelectorSPKI, tlsa.MatchSHA256)
		if err != nil {
			return err
		}
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN TLSA %s", owner, ttl, r))
		if err != nil {
			return err
		}
		add = append(add, rr)
	}
	if err := knot.Update(startCtx, zone, add, nil); err != nil {
		return err
	}

	pebble, err := testbed.StartPebble(startCtx, filepath.Join(dir, "pebble"), testbed.PebbleConfig{
		DNSServer: caResolver.Addr, Env: []string{"PEBBLE_AUTHZREUSE=0"},
	})
	if err != nil {
		return err
	}
	servers = append(servers, pebble)

	keyFile := filepath.Join(dir, "tsig.key")
	if err := knot.Key.WriteBINDKeyFile(keyFile); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "tlsactl.toml")
	_, knotPort, _ := net.SplitHostPort(knot.Addr)
	cfg := fmt.Sprintf(`# written by examples/lab/labbed
resolver = %q
state_dir = %q
margin = "1s"

[provider]
name = "rfc2136"
server = %q
tsig_key_file = %q

[[host]]
name = %q
port = %d
zone = %q
ttl = %d
auth_servers = [%q]   # also asked, besides the zone's NS set (a hidden primary)
auth_port = %s        # the NS set (ns.<zone> A 127.0.0.1) is on Knot's port here, not 53

[host.deploy]
key_file = %q
chain_file = %q
reload = ["postfix", "-c", %q, "reload"]
reload_timeout = "30s"
probe_timeout = "30s"
`, resolver.Addr, filepath.Join(dir, "state"), knot.Addr, keyFile, host, pf.Port, zone, ttl, knot.Addr, knotPort, keyPath, chainPath, pf.Dir)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	vars := [][2]string{
		{"LAB_ZONE", zone}, {"LAB_HOST", host}, {"LAB_PORT", fmt.Sprint(pf.Port)}, {"LAB_TTL", fmt.Sprint(ttl)},
		{"LAB_CONFIG", cfgPath}, {"LAB_RESOLVER", resolver.Addr}, {"LAB_LEGO_RESOLVER", legoResolver.Addr},
		{"LAB_KNOT", knot.Addr}, {"LAB_PEBBLE", pebble.DirectoryURL}, {"LAB_PEBBLE_CA", pebble.CAFile},
		{"LAB_DEPLOY_CHAIN", chainPath},
		{"RFC2136_NAMESERVER", knot.Addr}, {"RFC2136_TSIG_KEY", knot.Key.Name},
		{"RFC2136_TSIG_SECRET", knot.Key.Secret}, {"RFC2136_TSIG_ALGORITHM", knot.Key.Algorithm},
		{"RFC2136_TTL", "5"}, {"RFC2136_POLLING_INTERVAL", "1"}, {"RFC2136_PROPAGATION_TIMEOUT", "60"},
	}
	var env strings.Builder
	for _, v := range vars {
		fmt.Fprintf(&env, "export %s='%s'\n", v[0], v[1])
	}
	if err := os.WriteFile(filepath.Join(dir, "lab.env"), []byte(env.String()), 0o600); err != nil {
		return err
	}
	fmt.Println("ready")

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
