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
	"testing"
	"time"

	"github.com/miekg/dns"
)

// PowerDNSConfig configures StartPowerDNS.
type PowerDNSConfig struct {
	// Zones to serve. Signed zones are secured with `pdnsutil secure-zone`
	// (PowerDNS's default keys, signed on the fly).
	Zones []Zone
	// IP to listen on; default 127.0.0.1. The port is always a free one.
	IP string
}

// PowerDNS is a running pdns_server (authoritative) with the gsqlite3
// backend, taking RFC 2136 updates signed with Key.
type PowerDNS struct {
	Addr string  // "127.0.0.1:port", UDP and TCP
	Dir  string  // pdns.conf, the SQLite database
	Key  TSIGKey // allowed to update and transfer every zone

	zones []Zone
	p     *proc
	once  sync.Once
	serr  error
}

// pdnsSchemas are where Debian's pdns-backend-sqlite3 ships the schema.
var pdnsSchemas = [...]string{
	"/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql",
	"/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql",
}

// pdnsSchema returns the first of pdnsSchemas that exists, or "".
func pdnsSchema() string {
	for _, s := range pdnsSchemas {
		if _, err := os.Stat(s); err == nil {
			return s
		}
	}
	return ""
}

// StartPowerDNS creates an SQLite database in dir from the schema shipped by
// pdns-backend-sqlite3, loads the zones and the TSIG key with pdnsutil
// (metadata TSIG-ALLOW-DNSUPDATE, TSIG-ALLOW-AXFR, SOA-EDIT-DNSUPDATE
// INCREASE), starts `pdns_server --config-dir=dir` in the foreground and
// waits until every zone answers SOA (with RRSIG for signed zones).
func StartPowerDNS(ctx context.Context, dir string, cfg PowerDNSConfig) (*PowerDNS, error) {
	bin, err := Lookup("pdns_server")
	if err != nil {
		return nil, err
	}
	pdnsutil, err := Lookup("pdnsutil")
	if err != nil {
		return nil, err
	}
	sqlite, err := Lookup("sqlite3")
	if err != nil {
		return nil, err
	}
	schema := pdnsSchema()
	if schema == "" {
		return nil, fmt.Errorf("testbed: PowerDNS SQLite schema not found in %s (package pdns-backend-sqlite3)", strings.Join(pdnsSchemas[:], ", "))
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

	d := &PowerDNS{Dir: dir, Key: NewTSIGKey("testbed-key")}
	db := filepath.Join(dir, "pdns.sqlite3")
	_ = os.Remove(db)
	sql, err := os.ReadFile(schema)
	if err != nil {
		return nil, err
	}
	if err := runTool(ctx, dir, sql, sqlite, db); err != nil {
		return nil, fmt.Errorf("testbed: creating %s: %w", db, err)
	}
	// pdnsutil reads pdns.conf too; the port is filled in below.
	if err := d.writeConfig(ip, 0); err != nil {
		return nil, err
	}
	util := func(args ...string) error {
		return runTool(ctx, dir, nil, pdnsutil, append([]string{"--config-dir=" + dir}, args...)...)
	}
	keyName := strings.TrimSuffix(d.Key.Name, ".")
	if err := util("import-tsig-key", keyName, strings.TrimSuffix(d.Key.Algorithm, "."), d.Key.Secret); err != nil {
		return nil, err
	}
	for _, z := range cfg.Zones {
		z.Name = dns.Fqdn(z.Name)
		file := filepath.Join(dir, strings.TrimSuffix(z.Name, ".")+".zone")
		if err := os.WriteFile(file, []byte(zoneFileText(z)), 0o644); err != nil {
			return nil, err
		}
		steps := [][]string{
			{"load-zone", z.Name, file},
			{"set-meta", z.Name, "TSIG-ALLOW-DNSUPDATE", keyName},
			{"set-meta", z.Name, "TSIG-ALLOW-AXFR", keyName},
			{"set-meta", z.Name, "SOA-EDIT-DNSUPDATE", "INCREASE"},
		}
		if z.Signed {
			steps = append(steps, []string{"secure-zone", z.Name}, []string{"rectify-zone", z.Name})
		}
		for _, s := range steps {
			if err := util(s...); err != nil {
				return nil, err
			}
		}
		d.zones = append(d.zones, z)
	}

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // retry on a lost port race
		port, err := freePort(ip)
		if err != nil {
			return nil, err
		}
		d.Addr = net.JoinHostPort(ip, strconv.Itoa(port))
		d.once = sync.Once{}
		if err := d.writeConfig(ip, port); err != nil {
			return nil, err
		}
		d.p, err = startProc(dir, &syncBuffer{}, bin, "--config-dir="+dir)
		if err != nil {
			return nil, err
		}
		lastErr = waitZonesReady(ctx, d.p, d.Addr, d.zones)
		if lastErr == nil {
			return d, nil
		}
		_ = d.Stop()
		var retry bool
		if lastErr, retry = notReady("pdns_server", lastErr, d.Log()); !retry {
			break
		}
	}
	return nil, lastErr
}

// NewPowerDNS starts PowerDNS in a fresh temporary directory and stops it
// when the test ends.
func NewPowerDNS(tb testing.TB, cfg PowerDNSConfig) *PowerDNS {
	tb.Helper()
	Require(tb, "pdns_server", "pdns-server")
	Require(tb, "pdnsutil", "pdns-server")
	Require(tb, "sqlite3", "sqlite3")
	if pdnsSchema() == "" {
		Unavailable(tb, "testbed: the PowerDNS SQLite schema is missing; install it with: apt-get install -y --no-install-recommends pdns-backend-sqlite3")
	}
	return startForTest(tb, func(ctx context.Context, dir string) (*PowerDNS, error) {
		return StartPowerDNS(ctx, dir, cfg)
	})
}

// Log returns what pdns_server has logged so far.
func (d *PowerDNS) Log() string { return d.p.out.String() }

// Stop terminates pdns_server (SIGTERM by PID, SIGKILL after 10 s).
// Idempotent.
func (d *PowerDNS) Stop() error {
	d.once.Do(func() { d.serr = d.p.stop(10 * time.Second) })
	return d.serr
}

// DS returns the DS record (SHA-256) of the zone's key with the SEP flag as
// zone-file text, computed from the DNSKEY RRset PowerDNS serves.
func (d *PowerDNS) DS(ctx context.Context, zone string) (string, error) {
	return dsOf(ctx, d.Addr, zone)
}

// Update sends an RFC 2136 update for zone signed with the instance's TSIG
// key (see SendUpdate).
func (d *PowerDNS) Update(ctx context.Context, zone string, add, remove []dns.RR) error {
	key := d.Key
	return SendUpdate(ctx, d.Addr, zone, &key, add, remove)
}

func (d *PowerDNS) writeConfig(ip string, port int) error {
	conf := fmt.Sprintf(`launch=gsqlite3
gsqlite3-database=%s
gsqlite3-dnssec=yes
local-address=%s
local-port=%d
daemon=no
guardian=no
write-pid=no
socket-dir=%s
disable-syslog=yes
loglevel=5
log-dns-queries=no
primary=no
dnsupdate=yes
allow-dnsupdate-from=127.0.0.0/8
allow-axfr-ips=127.0.0.0/8
cache-ttl=0
query-cache-ttl=0
negquery-cache-ttl=0
distributor-threads=1
receiver-threads=1
webserver=no
api=no
`, filepath.Join(d.Dir, "pdns.sqlite3"), ip, port, d.Dir)
	return os.WriteFile(filepath.Join(d.Dir, "pdns.conf"), []byte(conf), 0o600)
}

// runTool runs a short command in dir with stdin and returns its output in the
// error when it fails.
func runTool(ctx context.Context, dir string, stdin []byte, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || len(out) > 0 {
			return fmt.Errorf("testbed: %s %s: %v: %s", filepath.Base(name), toolStep(args), err, tail(string(out), 2000))
		}
		return fmt.Errorf("testbed: %s: %w", filepath.Base(name), err)
	}
	return nil
}

// toolStep names a pdnsutil step without printing arguments that may hold
// a secret (import-tsig-key).
func toolStep(args []string) string {
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			return a
		}
	}
	return ""
}
