package testbed

import (
	"context"
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

// BINDConfig configures StartBIND.
type BINDConfig struct {
	// Zones to serve as primary. Signed zones use `dnssec-policy default;`
	// (one ECDSAP256SHA256 CSK, signed by named itself).
	Zones []Zone
	// IP to listen on; default 127.0.0.1. The port is always a free one.
	IP string
}

// BIND is a running named (BIND 9).
type BIND struct {
	Addr string  // "127.0.0.1:port", UDP and TCP
	Dir  string  // named.conf, zone files, journals, DNSSEC keys
	Key  TSIGKey // allowed to update and transfer every zone

	zones []Zone
	p     *proc
	once  sync.Once
	serr  error
}

// StartBIND writes named.conf and zone files into dir, starts `named -g -c
// named.conf` in the foreground and waits until every zone answers SOA (with
// RRSIG and a signed DNSKEY for signed zones). There is no rndc channel.
func StartBIND(ctx context.Context, dir string, cfg BINDConfig) (*BIND, error) {
	bin, err := Lookup("named")
	if err != nil {
		return nil, err
	}
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"zones", "keys"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	ip := cfg.IP
	if ip == "" {
		ip = "127.0.0.1"
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // retry on a lost port race
		port, err := freePort(ip)
		if err != nil {
			return nil, err
		}
		b := &BIND{
			Addr: net.JoinHostPort(ip, strconv.Itoa(port)),
			Dir:  dir,
			Key:  NewTSIGKey("testbed-key"),
		}
		for _, z := range cfg.Zones {
			z.Name = dns.Fqdn(z.Name)
			// A retry starts from fresh zone files: drop journals and keys
			// of the failed attempt.
			base := strings.TrimSuffix(z.Name, ".") + ".zone"
			_ = os.Remove(filepath.Join(dir, "zones", base+".jnl"))
			_ = os.Remove(filepath.Join(dir, "zones", base+".signed"))
			_ = os.Remove(filepath.Join(dir, "zones", base+".signed.jnl"))
			if err := os.WriteFile(filepath.Join(dir, "zones", base), []byte(zoneFileText(z)), 0o644); err != nil {
				return nil, err
			}
			b.zones = append(b.zones, z)
		}
		if err := b.writeConfig(); err != nil {
			return nil, err
		}
		// -g: foreground, log to stderr; -n 2: few worker threads. named
		// stays root when started by root (no -u), so it can write dir.
		b.p, err = startProc(dir, &syncBuffer{}, bin, "-g", "-n", "2", "-c", filepath.Join(dir, "named.conf"))
		if err != nil {
			return nil, err
		}
		lastErr = waitZonesReady(ctx, b.p, b.Addr, b.zones)
		if lastErr == nil {
			return b, nil
		}
		_ = b.Stop()
		var retry bool
		if lastErr, retry = notReady("named", lastErr, b.Log()); !retry {
			break
		}
	}
	return nil, lastErr
}

// NewBIND starts BIND in a fresh temporary directory and stops it when the
// test ends.
func NewBIND(tb testing.TB, cfg BINDConfig) *BIND {
	tb.Helper()
	Require(tb, "named", "bind9")
	return startForTest(tb, func(ctx context.Context, dir string) (*BIND, error) { return StartBIND(ctx, dir, cfg) })
}

// Log returns what named has logged so far.
func (b *BIND) Log() string { return b.p.out.String() }

// Stop terminates named (SIGTERM by PID, SIGKILL after 10 s). Idempotent.
func (b *BIND) Stop() error {
	b.once.Do(func() { b.serr = b.p.stop(10 * time.Second) })
	return b.serr
}

// DS returns the DS record (SHA-256) of the zone's key with the SEP flag as
// zone-file text, computed from the DNSKEY RRset BIND serves.
func (b *BIND) DS(ctx context.Context, zone string) (string, error) {
	return dsOf(ctx, b.Addr, zone)
}

// Update sends an RFC 2136 update for zone signed with the instance's TSIG
// key (see SendUpdate).
func (b *BIND) Update(ctx context.Context, zone string, add, remove []dns.RR) error {
	key := b.Key
	return SendUpdate(ctx, b.Addr, zone, &key, add, remove)
}

func (b *BIND) writeConfig() error {
	host, port, _ := net.SplitHostPort(b.Addr)
	var s strings.Builder
	fmt.Fprintf(&s, `options {
	directory %q;
	key-directory %q;
	managed-keys-directory %q;
	session-keyfile %q;
	pid-file none;
	listen-on port %s { %s; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
};

controls { };

key %q {
	algorithm %s;
	secret %q;
};

logging {
	channel testbed { stderr; severity info; print-time yes; print-category yes; };
	category default { testbed; };
	category lame-servers { null; };
};
`, b.Dir, filepath.Join(b.Dir, "keys"), b.Dir, filepath.Join(b.Dir, "session.key"), port, host,
		strings.TrimSuffix(b.Key.Name, "."), strings.TrimSuffix(b.Key.Algorithm, "."), b.Key.Secret)
	keyName := strings.TrimSuffix(b.Key.Name, ".")
	for _, z := range b.zones {
		fmt.Fprintf(&s, "\nzone %q {\n\ttype primary;\n\tfile %q;\n\tallow-update { key %q; };\n\tallow-transfer { key %q; };\n",
			strings.TrimSuffix(z.Name, "."), filepath.Join(b.Dir, "zones", strings.TrimSuffix(z.Name, ".")+".zone"), keyName, keyName)
		if z.Signed {
			s.WriteString("\tdnssec-policy default;\n")
		}
		s.WriteString("};\n")
	}
	return os.WriteFile(filepath.Join(b.Dir, "named.conf"), []byte(s.String()), 0o600)
}

// zoneFileText is the zone file for z, as Knot's: a generated SOA (serial 1),
// NS ns.<zone>, ns A 127.0.0.1, then z.Records; $ORIGIN is the zone, $TTL 60.
func zoneFileText(z Zone) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 60\n", z.Name)
	fmt.Fprintf(&b, "@ SOA ns.%s hostmaster.%s 1 3600 600 86400 60\n", z.Name, z.Name)
	fmt.Fprintf(&b, "@ NS ns.%s\nns A 127.0.0.1\n", z.Name)
	for _, r := range z.Records {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	return b.String()
}

// waitZonesReady polls addr until every zone answers SOA, and for signed
// zones until the SOA carries an RRSIG and a signed DNSKEY with the SEP flag
// is served.
func waitZonesReady(ctx context.Context, p *proc, addr string, zones []Zone) error {
	for _, z := range zones {
		err := poll(ctx, p.exited, func(ctx context.Context) error {
			r, err := queryDO(ctx, addr, z.Name, dns.TypeSOA)
			if err != nil {
				return err
			}
			if r.Rcode != dns.RcodeSuccess || !hasType(r.Answer, dns.TypeSOA) {
				return fmt.Errorf("SOA %s: rcode %s, %d answers", z.Name, dns.RcodeToString[r.Rcode], len(r.Answer))
			}
			if !z.Signed {
				return nil
			}
			if !hasType(r.Answer, dns.TypeRRSIG) {
				return fmt.Errorf("SOA %s: no RRSIG yet", z.Name)
			}
			_, err = sepKey(ctx, addr, z.Name)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// sepKey returns the signed DNSKEY with the SEP flag (257) served at addr.
func sepKey(ctx context.Context, addr, zone string) (*dns.DNSKEY, error) {
	r, err := queryDO(ctx, addr, dns.Fqdn(zone), dns.TypeDNSKEY)
	if err != nil {
		return nil, err
	}
	if !hasType(r.Answer, dns.TypeRRSIG) {
		return nil, fmt.Errorf("DNSKEY %s: not signed (yet)", zone)
	}
	for _, rr := range r.Answer {
		if key, ok := rr.(*dns.DNSKEY); ok && key.Flags&dns.SEP != 0 {
			return key, nil
		}
	}
	return nil, fmt.Errorf("DNSKEY %s: no key with the SEP flag", zone)
}

// dsOf returns the SHA-256 DS of the zone's SEP key served at addr as
// zone-file text.
func dsOf(ctx context.Context, addr, zone string) (string, error) {
	key, err := sepKey(ctx, addr, zone)
	if err != nil {
		return "", fmt.Errorf("testbed: DS %s: %w", zone, err)
	}
	ds := key.ToDS(dns.SHA256)
	if ds == nil {
		return "", fmt.Errorf("testbed: DS %s: cannot compute digest", zone)
	}
	return ds.String(), nil
}
