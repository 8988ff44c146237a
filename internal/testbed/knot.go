package testbed

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Zone is a zone served by Knot.
type Zone struct {
	// Name is the zone apex, e.g. "example.test" (a trailing dot is added).
	Name string
	// Signed turns on DNSSEC signing (policy ecdsap256sha256, KSK+ZSK).
	Signed bool
	// Records are zone-file lines appended after a generated SOA, NS and
	// ns A 127.0.0.1; $ORIGIN is the zone and $TTL 60, so relative names work,
	// e.g. "mail A 127.0.0.1".
	Records []string
	// NS replaces the generated "@ NS ns" + "ns A 127.0.0.1" with these name
	// servers (the first one is also the SOA MNAME), e.g. ns1 -> 127.0.9.1
	// and ns2 -> 127.0.9.2 for a primary and a secondary on one port.
	NS []NameServer
	// Notify lists "ip:port" addresses of secondaries that get a NOTIFY
	// (signed with the instance's TSIG key) after every change of the zone.
	// See also Knot.AddNotify.
	Notify []string
}

// NameServer is one NS record of a Zone and its address record.
type NameServer struct {
	// Name is relative to the zone ("ns1") or absolute ("ns1.example.test.").
	Name string
	// IP, when set, adds an A (or AAAA) record for Name; leave it empty for
	// a name server outside the zone.
	IP string
}

// SecondaryZone is a zone that a Knot instance serves as a secondary: it
// transfers the zone (AXFR, then IXFR) from Primary, signing the requests
// with the instance's TSIG key, and accepts NOTIFY signed with that key. Give
// the secondary the primary's key (KnotConfig.Key = primary.Key) and tell the
// primary about the secondary (Zone.Notify or Knot.AddNotify).
type SecondaryZone struct {
	Name    string // zone apex
	Primary string // "ip:port" of the primary
}

// KnotConfig configures StartKnot.
type KnotConfig struct {
	Zones []Zone
	// Secondaries are zones transferred from a primary (see SecondaryZone).
	// StartKnot waits until each one has been transferred.
	Secondaries []SecondaryZone
	// IP to listen on; default 127.0.0.1. Any 127.x.y.z works on Linux, so
	// a primary and its secondary can listen on different addresses with the
	// same port (see RandomLoopbackPair).
	IP string
	// Port to listen on (UDP and TCP); 0 picks a free one. A fixed port is
	// not retried when it turns out to be taken.
	Port int
	// Key is the TSIG key allowed to update, transfer and notify every zone;
	// zero means a fresh random key named "testbed-key.". It must be an
	// hmac-sha256 key (as NewTSIGKey makes). A secondary needs its
	// primary's key.
	Key TSIGKey
}

// TSIGKey is a TSIG key as miekg/dns and nsupdate use it.
type TSIGKey struct {
	Name      string // FQDN, e.g. "testbed-key."
	Algorithm string // dns.HmacSHA256, i.e. "hmac-sha256."
	Secret    string // base64
}

// BINDKeyFile returns the key in the format tsig-keygen writes, as read by
// `nsupdate -k` and named.
func (k TSIGKey) BINDKeyFile() string {
	return fmt.Sprintf("key \"%s\" {\n\talgorithm %s;\n\tsecret \"%s\";\n};\n",
		strings.TrimSuffix(k.Name, "."), strings.TrimSuffix(k.Algorithm, "."), k.Secret)
}

// WriteBINDKeyFile writes BINDKeyFile to path with mode 0600.
func (k TSIGKey) WriteBINDKeyFile(path string) error {
	return os.WriteFile(path, []byte(k.BINDKeyFile()), 0o600)
}

// KeyFile writes BINDKeyFile to a new file of t's (mode 0600; a provider's
// tsig_key_file) and returns its path.
func (k TSIGKey) KeyFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tsig.key")
	if err := k.WriteBINDKeyFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// NewTSIGKey returns a hmac-sha256 key with a random 32-byte secret.
func NewTSIGKey(name string) TSIGKey {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand.Read panics on failure)
	return TSIGKey{Name: dns.Fqdn(name), Algorithm: dns.HmacSHA256, Secret: base64.StdEncoding.EncodeToString(b)}
}

// Knot is a running knotd.
type Knot struct {
	Addr string  // "127.0.0.1:port", UDP and TCP
	Dir  string  // configuration, zone files, storage
	Key  TSIGKey // allowed to update, transfer and notify every zone

	mu          sync.Mutex // guards zones, secondaries and config rewrites
	zones       []Zone
	secondaries []SecondaryZone
	p           *proc
	once        sync.Once
	serr        error
}

// StartKnot writes knot.conf and zone files into dir, starts `knotd -c
// knot.conf` and waits until every zone answers SOA (with RRSIG and a
// DNSKEY for signed zones).
func StartKnot(ctx context.Context, dir string, cfg KnotConfig) (*Knot, error) {
	bin, err := Lookup("knotd")
	if err != nil {
		return nil, err
	}
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"zones", "storage", "run"} {
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
	key := cfg.Key
	if key.Name == "" {
		key = NewTSIGKey("testbed-key")
	}
	for attempt := 0; attempt < 3; attempt++ { // retry on a lost port race
		port := cfg.Port
		if port == 0 {
			if port, err = freePort(ip); err != nil {
				return nil, err
			}
		}
		k := &Knot{
			Addr: net.JoinHostPort(ip, strconv.Itoa(port)),
			Dir:  dir,
			Key:  key,
		}
		for _, z := range cfg.Zones {
			z.Name = dns.Fqdn(z.Name)
			z.Notify = slices.Clone(z.Notify)
			if err := k.writeZoneFile(z); err != nil {
				return nil, err
			}
			k.zones = append(k.zones, z)
		}
		for _, sz := range cfg.Secondaries {
			sz.Name = dns.Fqdn(sz.Name)
			if _, _, err := net.SplitHostPort(sz.Primary); err != nil {
				return nil, fmt.Errorf("testbed: secondary zone %s: primary %q: %w", sz.Name, sz.Primary, err)
			}
			k.secondaries = append(k.secondaries, sz)
		}
		if err := k.writeConfig(); err != nil {
			return nil, err
		}
		k.p, err = startProc(dir, &syncBuffer{}, bin, "-c", filepath.Join(dir, "knot.conf"))
		if err != nil {
			return nil, err
		}
		lastErr = k.waitReady(ctx, k.zones)
		if lastErr == nil {
			lastErr = k.waitSecondaries(ctx, k.secondaries)
		}
		if lastErr == nil {
			return k, nil
		}
		_ = k.Stop()
		var retry bool
		if lastErr, retry = notReady("knotd", lastErr, k.Log()); !retry || cfg.Port != 0 {
			break
		}
	}
	return nil, lastErr
}

// NewKnot starts Knot in a fresh temporary directory and stops it when the
// test ends.
func NewKnot(tb testing.TB, cfg KnotConfig) *Knot {
	tb.Helper()
	Require(tb, "knotd", "knot")
	return startForTest(tb, func(ctx context.Context, dir string) (*Knot, error) { return StartKnot(ctx, dir, cfg) })
}

// Log returns what knotd has logged so far.
func (k *Knot) Log() string { return k.p.out.String() }

// Stop terminates knotd (SIGTERM by PID, SIGKILL after 10 s). Idempotent.
func (k *Knot) Stop() error {
	k.once.Do(func() { k.serr = k.p.stop(10 * time.Second) })
	return k.serr
}

// AddZone adds a zone to the running server (rewrites knot.conf, sends
// SIGHUP) and waits until it is served.
func (k *Knot) AddZone(ctx context.Context, z Zone) error {
	k.mu.Lock()
	z.Name = dns.Fqdn(z.Name)
	z.Notify = slices.Clone(z.Notify)
	for _, old := range k.zones {
		if old.Name == z.Name {
			k.mu.Unlock()
			return fmt.Errorf("testbed: zone %s already exists", z.Name)
		}
	}
	if err := k.writeZoneFile(z); err != nil {
		k.mu.Unlock()
		return err
	}
	k.zones = append(k.zones, z)
	err := k.writeConfig()
	if err == nil {
		err = k.p.cmd.Process.Signal(syscall.SIGHUP)
	}
	k.mu.Unlock()
	if err != nil {
		return err
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := k.waitReady(ctx, []Zone{z}); err != nil {
		return fmt.Errorf("testbed: knotd: zone %s not served: %w\nknotd log:\n%s", z.Name, err, tail(k.Log(), 4000))
	}
	return nil
}

func (k *Knot) writeZoneFile(z Zone) error {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 60\n", z.Name)
	if len(z.NS) == 0 {
		fmt.Fprintf(&b, "@ SOA ns.%s hostmaster.%s 1 3600 600 86400 60\n", z.Name, z.Name)
		fmt.Fprintf(&b, "@ NS ns.%s\nns A 127.0.0.1\n", z.Name)
	} else {
		fmt.Fprintf(&b, "@ SOA %s hostmaster.%s 1 3600 600 86400 60\n", z.NS[0].Name, z.Name)
		for _, ns := range z.NS {
			fmt.Fprintf(&b, "@ NS %s\n", ns.Name)
		}
		for _, ns := range z.NS {
			if ns.IP == "" {
				continue
			}
			ip := net.ParseIP(ns.IP)
			if ip == nil {
				return fmt.Errorf("testbed: zone %s: name server %s: bad IP %q", z.Name, ns.Name, ns.IP)
			}
			t := "A"
			if ip.To4() == nil {
				t = "AAAA"
			}
			fmt.Fprintf(&b, "%s %s %s\n", ns.Name, t, ns.IP)
		}
	}
	for _, r := range z.Records {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	return os.WriteFile(filepath.Join(k.Dir, "zones", strings.TrimSuffix(z.Name, ".")+".zone"), []byte(b.String()), 0o644)
}

func (k *Knot) writeConfig() error {
	host, port, _ := net.SplitHostPort(k.Addr)
	var b strings.Builder
	fmt.Fprintf(&b, `server:
    rundir: %q
%s    listen: %s@%s
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

log:
  - target: stderr
    any: info

database:
    storage: %q

key:
  - id: %s
    algorithm: hmac-sha256
    secret: %s

acl:
  - id: testbed-acl
    key: %s
    action: [update, transfer, notify]

policy:
  - id: testbed-policy
    algorithm: ecdsap256sha256

template:
  - id: default
    storage: %q
    file: "%%s.zone"
    acl: testbed-acl

`, filepath.Join(k.Dir, "run"), userLine(), host, port, filepath.Join(k.Dir, "storage"),
		k.Key.Name, k.Key.Secret, k.Key.Name, filepath.Join(k.Dir, "zones"))
	// Remotes: the primaries of secondary zones and the NOTIFY targets of
	// primary zones, all reached with the instance's key.
	var remotes strings.Builder
	remote := func(id, addr string) error {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("testbed: remote %q: %w", addr, err)
		}
		fmt.Fprintf(&remotes, "  - id: %s\n    address: %s@%s\n    key: %s\n", id, h, p, k.Key.Name)
		return nil
	}
	var zones strings.Builder
	for i, z := range k.zones {
		fmt.Fprintf(&zones, "  - domain: %s\n    file: %q\n", z.Name, strings.TrimSuffix(z.Name, ".")+".zone")
		if z.Signed {
			zones.WriteString("    dnssec-signing: on\n    dnssec-policy: testbed-policy\n    zonefile-load: difference\n")
		}
		var ids []string
		for j, addr := range z.Notify {
			id := fmt.Sprintf("notify-%d-%d", i, j)
			if err := remote(id, addr); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		if len(ids) > 0 {
			fmt.Fprintf(&zones, "    notify: [%s]\n", strings.Join(ids, ", "))
		}
	}
	for i, sz := range k.secondaries {
		id := fmt.Sprintf("primary-%d", i)
		if err := remote(id, sz.Primary); err != nil {
			return err
		}
		fmt.Fprintf(&zones, "  - domain: %s\n    file: %q\n    master: %s\n", sz.Name, strings.TrimSuffix(sz.Name, ".")+".zone", id)
	}
	if remotes.Len() > 0 {
		b.WriteString("remote:\n")
		b.WriteString(remotes.String())
		b.WriteString("\n")
	}
	b.WriteString("zone:\n")
	b.WriteString(zones.String())
	tmp := filepath.Join(k.Dir, "knot.conf.tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(k.Dir, "knot.conf"))
}

func (k *Knot) waitReady(ctx context.Context, zones []Zone) error {
	for _, z := range zones {
		err := poll(ctx, k.p.exited, func(ctx context.Context) error {
			r, err := queryDO(ctx, k.Addr, z.Name, dns.TypeSOA)
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
			_, err = k.ksk(ctx, z.Name)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// waitSecondaries waits until every secondary zone has been transferred: the
// instance answers its SOA authoritatively.
func (k *Knot) waitSecondaries(ctx context.Context, zones []SecondaryZone) error {
	for _, z := range zones {
		err := poll(ctx, k.p.exited, func(ctx context.Context) error {
			_, err := k.Serial(ctx, z.Name)
			return err
		})
		if err != nil {
			return fmt.Errorf("secondary zone %s (primary %s): %w", z.Name, z.Primary, err)
		}
	}
	return nil
}

// Serial returns the SOA serial this instance serves for zone (an
// authoritative answer, without recursion).
func (k *Knot) Serial(ctx context.Context, zone string) (uint32, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(zone), dns.TypeSOA)
	m.RecursionDesired = false
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, k.Addr)
	if err != nil {
		return 0, err
	}
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
		return 0, fmt.Errorf("SOA %s at %s: rcode %s, aa=%v", zone, k.Addr, dns.RcodeToString[r.Rcode], r.Authoritative)
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*dns.SOA); ok && strings.EqualFold(soa.Hdr.Name, dns.Fqdn(zone)) {
			return soa.Serial, nil
		}
	}
	return 0, fmt.Errorf("SOA %s at %s: no SOA in the answer", zone, k.Addr)
}

// AddNotify makes the running server send NOTIFY for zone (one of its
// primary zones) to addr ("ip:port", e.g. a secondary's Addr) after every
// change: it rewrites knot.conf and reloads it with `knotc reload`, which
// returns when the new configuration is in effect.
func (k *Knot) AddNotify(ctx context.Context, zone, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("testbed: notify target %q: %w", addr, err)
	}
	zone = dns.Fqdn(zone)
	k.mu.Lock()
	found := false
	for i := range k.zones {
		if strings.EqualFold(k.zones[i].Name, zone) {
			found = true
			if !slices.Contains(k.zones[i].Notify, addr) {
				k.zones[i].Notify = append(k.zones[i].Notify, addr)
			}
		}
	}
	var err error
	if !found {
		err = fmt.Errorf("testbed: %s is not a primary zone of this server", zone)
	} else {
		err = k.writeConfig()
	}
	k.mu.Unlock()
	if err != nil {
		return err
	}
	return k.Control(ctx, "reload")
}

// Freeze holds every zone-changing event of zone (`knotc zone-freeze`): on a
// secondary, NOTIFY-triggered refreshes wait, so the server keeps answering
// with the old data: a lagging secondary on purpose. (Freezing, unlike
// SIGSTOP, keeps the server answering, and Stop still works.) Thaw resumes.
func (k *Knot) Freeze(ctx context.Context, zone string) error {
	return k.Control(ctx, "zone-freeze", dns.Fqdn(zone))
}

// Thaw undoes Freeze (`knotc zone-thaw`); held events, such as a refresh
// after a NOTIFY, then run.
func (k *Knot) Thaw(ctx context.Context, zone string) error {
	return k.Control(ctx, "zone-thaw", dns.Fqdn(zone))
}

// Control runs `knotc -s <control socket> -b <args…>` against this instance
// and returns an error with knotc's output when it fails.
func (k *Knot) Control(ctx context.Context, args ...string) error {
	bin, err := Lookup("knotc")
	if err != nil {
		return err
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	full := append([]string{"-s", filepath.Join(k.Dir, "run", "knot.sock"), "-b"}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed: knotc %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// RandomLoopbackPair returns two addresses 127.a.b.1 and 127.a.b.2 of a
// random /24 in 127.64.0.0/10, e.g. for a primary and a secondary that
// listen on the same port (KnotConfig.IP, KnotConfig.Port).
func RandomLoopbackPair() (string, string) {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	prefix := fmt.Sprintf("127.%d.%d.", 64+b[0]%64, b[1])
	return prefix + "1", prefix + "2"
}

// ksk returns the zone's signed DNSKEY with the SEP flag (257).
func (k *Knot) ksk(ctx context.Context, zone string) (*dns.DNSKEY, error) {
	r, err := queryDO(ctx, k.Addr, dns.Fqdn(zone), dns.TypeDNSKEY)
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

// DS returns the DS record (SHA-256 digest) of the zone's KSK as zone-file
// text, e.g. "example.test.\t60\tIN\tDS\t12345 13 2 AB…", suitable for an
// Unbound trust-anchor. It is computed from the DNSKEY served by Knot.
func (k *Knot) DS(ctx context.Context, zone string) (string, error) {
	key, err := k.ksk(ctx, zone)
	if err != nil {
		return "", fmt.Errorf("testbed: DS %s: %w", zone, err)
	}
	ds := key.ToDS(dns.SHA256)
	if ds == nil {
		return "", fmt.Errorf("testbed: DS %s: cannot compute digest", zone)
	}
	return ds.String(), nil
}

// Update sends an RFC 2136 update for zone signed with the instance's TSIG
// key: add inserts the RRs, remove deletes exactly those RRs (name, type and
// rdata). A response code other than NOERROR is an error.
func (k *Knot) Update(ctx context.Context, zone string, add, remove []dns.RR) error {
	key := k.Key
	return SendUpdate(ctx, k.Addr, zone, &key, add, remove)
}

// SendUpdate sends an RFC 2136 update over TCP to addr, signed with key
// unless key is nil. It returns an error mentioning the rcode unless the
// server answered NOERROR.
func SendUpdate(ctx context.Context, addr, zone string, key *TSIGKey, add, remove []dns.RR) error {
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	if len(add) > 0 {
		m.Insert(add)
	}
	if len(remove) > 0 {
		m.Remove(remove)
	}
	c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second}
	if key != nil {
		m.SetTsig(key.Name, key.Algorithm, 300, time.Now().Unix())
		c.TsigSecret = map[string]string{key.Name: key.Secret}
	}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if r != nil && r.Rcode != dns.RcodeSuccess {
		// A rejected TSIG comes back unsigned or with a bad MAC: miekg/dns
		// then returns the response together with ErrAuth.
		e := &RcodeError{Op: "update " + dns.Fqdn(zone) + " at " + addr, Rcode: r.Rcode, Err: err}
		if t := r.IsTsig(); t != nil {
			e.TSIGError = t.Error
		}
		return e
	}
	if err != nil {
		return fmt.Errorf("testbed: update %s at %s: %w", zone, addr, err)
	}
	return nil
}

// RcodeError is returned by SendUpdate when the server did not answer NOERROR.
type RcodeError struct {
	Op        string
	Rcode     int    // e.g. dns.RcodeNotAuth, dns.RcodeRefused
	TSIGError uint16 // TSIG error field of the response, e.g. dns.RcodeBadSig
	Err       error  // e.g. dns.ErrAuth when the response's TSIG did not verify
}

func (e *RcodeError) Error() string {
	s := fmt.Sprintf("testbed: %s: rcode %s", e.Op, dns.RcodeToString[e.Rcode])
	if e.TSIGError != 0 {
		s += ", TSIG error " + dns.RcodeToString[int(e.TSIGError)]
	}
	if e.Err != nil {
		s += " (" + e.Err.Error() + ")"
	}
	return s
}

func (e *RcodeError) Unwrap() error { return e.Err }

// Query sends one query with the DO bit (EDNS0, 4096) to a DNS server and
// returns the response, retrying over TCP when truncated.
func Query(ctx context.Context, addr, name string, qtype uint16) (*dns.Msg, error) {
	return queryDO(ctx, addr, name, qtype)
}

func queryDO(ctx context.Context, addr, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(4096, true)
	m.RecursionDesired = true
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, addr)
	}
	return r, err
}

func hasType(rrs []dns.RR, t uint16) bool {
	for _, rr := range rrs {
		if rr.Header().Rrtype == t {
			return true
		}
	}
	return false
}

// userLine keeps knotd running as root when started by root (the default
// would be the configured user, which cannot write the temp directory).
func userLine() string {
	if os.Geteuid() == 0 {
		return "    user: root:root\n"
	}
	return ""
}
