package main

// End-to-end tests of `tlsactl rollover` against real servers: a DNSSEC-signed
// Knot zone updated through RFC 2136 + TSIG, a validating Unbound that really
// caches for the TLSA TTL, and a private Postfix whose key and chain files are
// the deploy paths of the configuration. A background probe resolves the TLSA
// RRset through the caching Unbound and probes Postfix every 250 ms for the
// whole test: a rollover must never leave a cached RRset that matches nothing
// served. posttls-finger, an independent DANE verifier, runs after every
// rollover command and at every step change.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/starttls"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

// roBed is one Knot (signed zone) and one caching validating Unbound.
type roBed struct {
	t        *testing.T
	ctx      context.Context
	zone     string // FQDN
	knot     *testbed.Knot
	unbound  *testbed.Unbound
	res      *dnsx.Resolver
	keyFile  string // the right TSIG key
	badKey   string // a key with the same name and a wrong secret
	postfix  string // path of the postfix command
	bin      string // built tlsactl binary; "" runs the CLI in-process (runCLI)
	authAddr []string
}

func roRequire(t *testing.T) {
	t.Helper()
	testbed.Require(t, "knotd", "knot")
	testbed.Require(t, "unbound", "unbound")
	testbed.Require(t, "postfix", "postfix")
	testbed.RequirePosttlsFinger(t)
}

// newRoBed starts Knot with zone (labels get "A 127.0.0.1") and an Unbound
// with a large cache-max-ttl and a port-53 listener for posttls-finger.
func newRoBed(t *testing.T, zone string, labels ...string) *roBed {
	t.Helper()
	roRequire(t)
	var recs []string
	for _, l := range labels {
		recs = append(recs, l+" 60 IN A 127.0.0.1")
	}
	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: []testbed.Zone{{Name: zone, Signed: true, Records: recs}}})
	return newRoBedWith(t, knot, zone, []string{knot.Addr})
}

func newRoBedWith(t *testing.T, knot *testbed.Knot, zone string, auth []string) *roBed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	ds, err := knot.DS(ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	unbound := testbed.NewUnbound(t, testbed.UnboundConfig{
		Stubs:       []testbed.StubZone{{Name: zone, Addr: knot.Addr, TrustAnchor: ds}},
		CacheMaxTTL: 86400, // really cache for the record's TTL: the point of the TTL wait
		Port53:      true,
	})
	dir := t.TempDir()
	b := &roBed{t: t, ctx: ctx, zone: dns.Fqdn(zone), knot: knot, unbound: unbound,
		res:     &dnsx.Resolver{Addr: unbound.Addr, Timeout: 3 * time.Second},
		keyFile: filepath.Join(dir, "tsig.key"), badKey: filepath.Join(dir, "bad.key"),
		postfix: testbed.Require(t, "postfix", "postfix"), authAddr: auth}
	if err := knot.Key.WriteBINDKeyFile(b.keyFile); err != nil {
		t.Fatal(err)
	}
	bad := knot.Key
	bad.Secret = "c2VjcmV0LXRoYXQtaXMtd3Jvbmctc2VjcmV0LXRoYXQ="
	if err := bad.WriteBINDKeyFile(b.badKey); err != nil {
		t.Fatal(err)
	}
	return b
}

// knotPort is the port of the zone's NS set (ns.<zone> A 127.0.0.1, or the
// NameServers of the zone): auth_servers add to the NS set, so tlsactl must
// reach it there.
func (b *roBed) knotPort() int {
	_, port, _ := strings.Cut(b.knot.Addr, ":")
	p, _ := strconv.Atoi(port)
	return p
}

// buildTlsactl builds the tlsactl binary with failpoints into a temporary
// directory.
func buildTlsactl(t *testing.T) string {
	t.Helper()
	return buildTlsactlTags(t, "failpoints")
}

// builds holds the binaries the tests built, one per set of build tags,
// in one directory that TestMain removes after the tests: every e2e test of
// the package runs the same binary instead of building its own.
var builds struct {
	mu   sync.Mutex
	dir  string
	bins map[string]*builtBinary
}

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// buildTlsactlTags returns the tlsactl binary built with the build tags
// (comma separated), building it on first use.
func buildTlsactlTags(t *testing.T, tags string) string {
	t.Helper()
	builds.mu.Lock()
	if builds.bins == nil {
		builds.bins = map[string]*builtBinary{}
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "tlsactl-test-bin-")
		if err != nil {
			builds.mu.Unlock()
			t.Fatal(err)
		}
		builds.dir = dir
	}
	b := builds.bins[tags]
	if b == nil {
		b = &builtBinary{}
		builds.bins[tags] = b
	}
	dir := builds.dir
	builds.mu.Unlock()
	b.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		b.path = filepath.Join(dir, "tlsactl-"+strings.NewReplacer(",", "-", " ", "-").Replace(tags))
		if out, err := exec.Command(goBin, "build", "-tags", tags, "-o", b.path, ".").CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build -tags %s: %v\n%s", tags, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// removeBuilds deletes the binaries buildTlsactlTags made.
func removeBuilds() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
}

// roCfg is what the test varies in the configuration file.
type roCfg struct {
	keyFile      string
	reload       []string
	probeTimeout string
	ttl          int
	margin       string
}

// roHost is one MX host: a Postfix, its deploy files, its config and state.
type roHost struct {
	t         *testing.T
	b         *roBed
	name      string // "mx.roll.test"
	owner     string
	pf        *testbed.Postfix
	keyPath   string
	chainPath string
	stateDir  string
	cfgPath   string
	cfg       roCfg
	initial   *testbed.Chain
	probe     *roProbe
}

// newRoHost starts a Postfix serving a fresh chain A (root → intermediate →
// leaf) from the deploy files, publishes {3 1 1 leafA, 2 1 1 intA} with ttl,
// writes the configuration and starts the background probe.
func (b *roBed) newRoHost(t *testing.T, label string, ttl int, postfixExtra ...string) *roHost {
	t.Helper()
	name := strings.TrimSuffix(label+"."+b.zone, ".")
	dir := t.TempDir()
	h := &roHost{t: t, b: b, name: name, keyPath: filepath.Join(dir, "key.pem"), chainPath: filepath.Join(dir, "fullchain.pem"),
		stateDir: t.TempDir(), cfgPath: filepath.Join(dir, "tlsactl.toml")}
	h.initial = testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{name}})
	roWrite(t, h.keyPath, h.initial.Leaf.KeyPEM, 0o600)
	roWrite(t, h.chainPath, h.initial.FullChainPEM(), 0o644)
	h.pf = testbed.NewPostfix(t, testbed.PostfixConfig{
		KeyPEM: h.initial.Leaf.KeyPEM, ChainPEM: h.initial.FullChainPEM(), Hostname: name,
		Extra: append([]string{fmt.Sprintf("smtpd_tls_chain_files = %s, %s", h.keyPath, h.chainPath)}, postfixExtra...),
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfix log of %s:\n%s", name, roTail(h.pf.Log(), 6000))
		}
	})
	h.owner = fmt.Sprintf("_%d._tcp.%s.", h.pf.Port, name)
	var add []dns.RR
	for _, r := range []string{roRec(h.initial.Leaf, tlsa.DANEEE), roRec(h.initial.Intermediate, tlsa.DANETA)} {
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN TLSA %s", h.owner, ttl, r))
		if err != nil {
			t.Fatal(err)
		}
		add = append(add, rr)
	}
	if err := b.knot.Update(b.ctx, b.zone, add, nil); err != nil {
		t.Fatal(err)
	}
	h.waitKnot(roSorted(roRec(h.initial.Leaf, tlsa.DANEEE), roRec(h.initial.Intermediate, tlsa.DANETA)))
	h.waitServes(h.initial)
	h.seedLedger(ttl, add)
	h.cfg = roCfg{keyFile: b.keyFile, reload: []string{b.postfix, "-c", h.pf.Dir, "reload"}, probeTimeout: "30s", ttl: ttl, margin: "1s"}
	h.writeConfig(h.cfg)
	h.startProbe()
	return h
}

// seedLedger records in the host's ledger that a check timer has watched
// the initial RRset for an hour, as it would on a host tlsactl has managed
// for a while: the RRset before it is then out of every cache. (Tests of a
// name tlsactl sees for the first time skip this.)
func (h *roHost) seedLedger(ttl int, rrs []dns.RR) {
	h.t.Helper()
	store, err := rollover.NewFileStore(h.stateDir)
	if err != nil {
		h.t.Fatal(err)
	}
	var recs []tlsa.Record
	for _, rr := range rrs {
		r, err := tlsa.ParseRecord(strings.TrimPrefix(rr.String(), rr.Header().String()))
		if err != nil {
			h.t.Fatal(err)
		}
		recs = append(recs, r)
	}
	s := rollover.Sighting{Kind: rollover.SourceAuthoritative, Source: "auth seed (a check timer)", Records: recs, TTL: uint32(ttl)}
	if _, _, err := rollover.Record(h.b.ctx, store, h.owner, []rollover.Sighting{s}, 0, time.Now().Add(-time.Hour)); err != nil {
		h.t.Fatal(err)
	}
}

func (h *roHost) writeConfig(c roCfg) {
	h.t.Helper()
	h.cfg = c
	text := e2eConfig(h.b.unbound.Addr, h.stateDir, c.margin, h.b.knot.Addr, c.keyFile, e2eHost{
		name: h.name, port: h.pf.Port, zone: h.b.zone, ttl: c.ttl, auth: h.b.authAddr, authPort: h.b.knotPort(),
		keyFile: h.keyPath, chainFile: h.chainPath, reload: c.reload, probeTimeout: c.probeTimeout,
	})
	roWrite(h.t, h.cfgPath, []byte(text), 0o600)
}

// material writes a chain's files: full chain (leaf + intermediate), key,
// and the intermediate alone (the --new-ca).
type roFiles struct{ chain, key, ca string }

func (h *roHost) files(c *testbed.Chain) roFiles {
	h.t.Helper()
	dir := h.t.TempDir()
	f := roFiles{chain: filepath.Join(dir, "fullchain.pem"), key: filepath.Join(dir, "key.pem"), ca: filepath.Join(dir, "ca.pem")}
	roWrite(h.t, f.chain, c.FullChainPEM(), 0o644)
	roWrite(h.t, f.key, c.Leaf.KeyPEM, 0o600)
	roWrite(h.t, f.ca, c.Intermediate.PEM, 0o644)
	return f
}

// newChain returns a chain from a new root (reuse nil) or a renewal under
// reuse's intermediate with a new key.
func (h *roHost) newChain(reuse *testbed.Chain) *testbed.Chain {
	return testbed.MustChain(h.t, testbed.ChainOptions{DNSNames: []string{h.name}, Reuse: reuse})
}

type roResult struct {
	out, errOut string
	code        int
	killed      bool // died by SIGKILL
	took        time.Duration
}

// tl runs `tlsactl rollover <sub> --config <cfg> --host <host> args…`, with
// the built binary (env added) or in-process, and then posttls-finger.
func (h *roHost) tl(env []string, sub string, args ...string) roResult {
	h.t.Helper()
	full := append([]string{"rollover", sub, "--config", h.cfgPath, "--host", h.name}, args...)
	var r roResult
	start := time.Now()
	if h.b.bin == "" {
		if len(env) > 0 {
			h.t.Fatal("environment needs the built binary")
		}
		r.out, r.errOut, r.code = runCLI(h.t, "", full...)
	} else {
		ctx, cancel := context.WithTimeout(h.b.ctx, 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, h.b.bin, full...)
		cmd.Env = append(os.Environ(), env...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		r.out, r.errOut = o.String(), e.String()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.code, r.killed = -1, ws.Signal() == syscall.SIGKILL
			} else {
				r.code = ee.ExitCode()
			}
		default:
			h.t.Fatalf("tlsactl %s: %v", strings.Join(full, " "), err)
		}
	}
	r.took = time.Since(start)
	if sub == "status" && r.code == 0 && slices.Contains(args, "--json") {
		return r // parsed by the caller; too long for the log
	}
	h.t.Logf("tlsactl rollover %s %s %v → exit %d killed=%v in %s\n%s%s", sub, strings.Join(args, " "), env, r.code, r.killed,
		r.took.Round(time.Millisecond), r.out, r.errOut)
	switch sub {
	case "start", "provide", "run", "abort":
		h.finger("after rollover " + sub)
	}
	return r
}

// mustTL is tl that wants exit code 0.
func (h *roHost) mustTL(sub string, args ...string) roResult {
	h.t.Helper()
	r := h.tl(nil, sub, args...)
	if r.code != 0 {
		h.t.Fatalf("rollover %s: exit %d\n%s%s", sub, r.code, r.out, r.errOut)
	}
	return r
}

type roStatus struct {
	rollover.State
	CurrentStep string `json:"current_step"`
}

func (h *roHost) status() roStatus {
	h.t.Helper()
	r := h.tl(nil, "status", "--json")
	var all []roStatus
	if r.code != 0 || json.Unmarshal([]byte(r.out), &all) != nil || len(all) != 1 {
		h.t.Fatalf("status: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	return all[0]
}

// knotRRset is the TLSA RRset Knot serves now (sorted presentation RDATA).
func (h *roHost) knotRRset() []string {
	h.t.Helper()
	m, err := testbed.Query(h.b.ctx, h.b.knot.Addr, h.owner, dns.TypeTLSA)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, rr := range m.Answer {
		if v, ok := rr.(*dns.TLSA); ok {
			out = append(out, fmt.Sprintf("%d %d %d %s", v.Usage, v.Selector, v.MatchingType, strings.ToLower(v.Certificate)))
		}
	}
	slices.Sort(out)
	return out
}

func (h *roHost) assertKnot(what string, want []string) {
	h.t.Helper()
	if got := h.knotRRset(); !slices.Equal(got, want) {
		h.t.Fatalf("%s: Knot serves %v, want %v", what, got, want)
	}
}

func (h *roHost) waitKnot(want []string) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := h.knotRRset()
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("Knot serves %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *roHost) served(ctx context.Context) ([]*x509.Certificate, error) {
	r, err := starttls.Probe(ctx, starttls.Options{Addr: h.pf.Addr, ServerName: h.name, Protocol: starttls.SMTP, Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	return r.Chain, nil
}

func roServes(chain []*x509.Certificate, c *testbed.Chain) bool {
	return len(chain) == 2 && bytes.Equal(chain[0].Raw, c.Leaf.DER) && bytes.Equal(chain[1].Raw, c.Intermediate.DER)
}

// assertServes probes once: Postfix serves c's chain now.
func (h *roHost) assertServes(what string, c *testbed.Chain) {
	h.t.Helper()
	chain, err := h.served(h.b.ctx)
	if err != nil || !roServes(chain, c) {
		h.t.Fatalf("%s: Postfix does not serve the expected chain (%v, leaf %s)", what, err, roLeaf(chain))
	}
}

func (h *roHost) waitServes(c *testbed.Chain) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		chain, err := h.served(h.b.ctx)
		if err == nil && roServes(chain, c) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("Postfix does not serve the expected chain: %v, leaf %s", err, roLeaf(chain))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *roHost) assertFiles(what string, c *testbed.Chain) {
	h.t.Helper()
	k, _ := os.ReadFile(h.keyPath)
	ch, _ := os.ReadFile(h.chainPath)
	if !bytes.Equal(k, c.Leaf.KeyPEM) || !bytes.Equal(ch, c.FullChainPEM()) {
		h.t.Fatalf("%s: the deploy files do not hold the expected key and chain", what)
	}
}

// finger runs posttls-finger through the caching Unbound; it must verify.
func (h *roHost) finger(when string) {
	ctx, cancel := context.WithTimeout(h.b.ctx, 30*time.Second)
	defer cancel()
	out, err := testbed.PosttlsFinger(ctx, h.b.unbound.Port53IP, h.name, h.pf.Port)
	h.probe.mu.Lock()
	defer h.probe.mu.Unlock()
	h.probe.fingers++
	if err != nil || !strings.Contains(out, "Verified TLS connection") {
		h.probe.fails = append(h.probe.fails, fmt.Sprintf("%s posttls-finger %s: %v\n%s", time.Now().Format("15:04:05.000"), when, err, roTail(out, 1500)))
	}
}

// roProbe records what the background probe saw.
type roProbe struct {
	mu                       sync.Mutex
	fails                    []string // "no usable record matches", bogus answers, finger failures
	soft                     []string // transient probe errors (logged)
	probes, matched, fingers int
	steps                    []string // the (plan, status, step) seen, in order
	stop                     chan struct{}
	wg                       sync.WaitGroup
	lastStep                 string
	stepFingers              int
}

// startProbe probes every 250 ms until the test ends, and runs
// posttls-finger whenever the rollover's step or status changes. At cleanup
// it fails the test if any probe found no usable matching record.
func (h *roHost) startProbe() *roProbe {
	p := &roProbe{stop: make(chan struct{})}
	h.probe = p
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			h.probeOnce()
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	go func() {
		defer p.wg.Done()
		store, err := rollover.NewFileStore(h.stateDir)
		if err != nil {
			panic(err)
		}
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			if st, err := store.Load(h.name); err == nil {
				key := fmt.Sprintf("%s %s step %s", st.Plan, st.Status, st.CurrentStep())
				p.mu.Lock()
				changed := key != p.lastStep
				p.lastStep = key
				if changed {
					p.steps = append(p.steps, key)
					p.stepFingers++
				}
				p.mu.Unlock()
				if changed {
					h.finger("at " + key)
				}
			}
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	h.t.Cleanup(func() {
		close(p.stop)
		p.wg.Wait()
		p.mu.Lock()
		defer p.mu.Unlock()
		h.t.Logf("%s: %d probes (%d matched), %d posttls-finger runs (%d at step changes), %d transient probe errors",
			h.name, p.probes, p.matched, p.fingers, p.stepFingers, len(p.soft))
		h.t.Logf("%s: steps seen: %s", h.name, strings.Join(p.steps, " → "))
		for i, s := range p.soft {
			if i < 10 {
				h.t.Logf("transient: %s", s)
			}
		}
		if p.probes == 0 || p.matched == 0 {
			h.t.Errorf("%s: the background probe never matched (%d probes)", h.name, p.probes)
		}
		for _, f := range p.fails {
			h.t.Errorf("%s: %s", h.name, f)
		}
	})
	return p
}

func (h *roHost) probeOnce() {
	p := h.probe
	ctx, cancel := context.WithTimeout(h.b.ctx, 10*time.Second)
	defer cancel()
	now := time.Now().Format("15:04:05.000")
	res, err := h.b.res.LookupTLSA(ctx, uint16(h.pf.Port), h.name)
	if err != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		if errors.Is(err, dnsx.ErrBogus) || errors.Is(err, dnsx.ErrNoData) || errors.Is(err, dnsx.ErrNXDomain) {
			p.fails = append(p.fails, fmt.Sprintf("%s TLSA lookup: %v", now, err))
		} else if h.b.ctx.Err() == nil {
			p.soft = append(p.soft, fmt.Sprintf("%s TLSA lookup: %v", now, err))
		}
		return
	}
	chain, err := h.served(ctx)
	if err != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		if h.b.ctx.Err() == nil {
			p.soft = append(p.soft, fmt.Sprintf("%s STARTTLS: %v", now, err))
		}
		return
	}
	var recs []tlsa.Record
	var texts []string
	for _, r := range res.Records {
		rec := tlsa.Record{Usage: tlsa.Usage(r.Usage), Selector: tlsa.Selector(r.Selector), MatchingType: tlsa.MatchingType(r.MatchingType), Data: r.Data}
		recs = append(recs, rec)
		texts = append(texts, rec.String())
	}
	m := tlsa.Match(chain, recs, tlsa.MatchOptions{Names: []string{h.name}, Now: time.Now()})
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probes++
	switch {
	case res.Status != dnsx.Secure:
		p.fails = append(p.fails, fmt.Sprintf("%s TLSA RRset %v is %s, not secure", now, texts, res.Status))
	case !m.Matched():
		p.fails = append(p.fails, fmt.Sprintf("%s no usable record matches: cached RRset %v (TTL %d), served leaf %s", now, texts, res.TTL, roLeaf(chain)))
	default:
		p.matched++
	}
}

// --- helpers ---

// e2eHost is a [[host]] of an end-to-end test's configuration, with its
// [host.deploy] section.
type e2eHost struct {
	name, zone         string
	port, ttl          int
	auth               []string // auth_servers
	authPort           int
	keyFile, chainFile string
	reload             []string
	probeTimeout       string
}

// e2eConfig is the text of an end-to-end test's configuration: tlsactl's
// resolver, state directory and margin, the rfc2136 provider (server, TSIG
// key file) and the hosts.
func e2eConfig(resolver, stateDir, margin, server, keyFile string, hosts ...e2eHost) string {
	var b strings.Builder
	fmt.Fprintf(&b, "resolver = %q\nstate_dir = %q\nmargin = %q\n\n[provider]\nname = \"rfc2136\"\nserver = %q\ntsig_key_file = %q\n",
		resolver, stateDir, margin, server, keyFile)
	for _, h := range hosts {
		fmt.Fprintf(&b, `
[[host]]
name = %q
port = %d
zone = %q
ttl = %d
auth_servers = %s
auth_port = %d

[host.deploy]
key_file = %q
chain_file = %q
reload = %s
reload_timeout = "30s"
probe_timeout = %q
`, h.name, h.port, h.zone, h.ttl, tomlArray(h.auth), h.authPort, h.keyFile, h.chainFile, tomlArray(h.reload), h.probeTimeout)
	}
	return b.String()
}

// tomlArray is a TOML array of strings.
func tomlArray(ss []string) string {
	var parts []string
	for _, s := range ss {
		parts = append(parts, strconv.Quote(s))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func roWrite(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

func roRec(c *testbed.Cert, u tlsa.Usage) string {
	r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: c.Cert, SPKI: c.SPKIDER}, u, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	if err != nil {
		panic(err)
	}
	return r.String()
}

func roSorted(s ...string) []string { slices.Sort(s); return s }

// roPair is {3 1 1 leaf, 2 1 1 intermediate} of a chain.
func roPair(c *testbed.Chain) []string {
	return roSorted(roRec(c.Leaf, tlsa.DANEEE), roRec(c.Intermediate, tlsa.DANETA))
}

func roLeaf(chain []*x509.Certificate) string {
	if len(chain) == 0 {
		return "(none)"
	}
	r, _ := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: chain[0], SPKI: chain[0].RawSubjectPublicKeyInfo}, tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	return fmt.Sprintf("%q (3 1 1 %x…, issuer %q)", chain[0].Subject.CommonName, r.Data[:8], chain[0].Issuer.CommonName)
}

func roTail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// historySteps returns the steps named in the history.
func historySteps(st roStatus) map[string]bool {
	m := map[string]bool{}
	for _, e := range st.History {
		m[string(e.Step)] = true
	}
	return m
}

func (h *roHost) assertDone(st roStatus) {
	h.t.Helper()
	if st.Status != rollover.StatusDone || st.LastError != "" {
		h.t.Fatalf("status %s (step %s), last error %q", st.Status, st.CurrentStep, st.LastError)
	}
	hs := historySteps(st)
	for _, s := range st.Plan.Steps() {
		if !hs[string(s)] {
			h.t.Errorf("history lacks step %s: %+v", s, st.History)
		}
	}
}

// propagation sums how long the published versions took to be confirmed.
func propagation(st roStatus) time.Duration {
	var d time.Duration
	for _, v := range st.Versions {
		if !v.Initial && !v.Requested.IsZero() && !v.Confirmed.IsZero() {
			d += v.Confirmed.Sub(v.Requested)
		}
	}
	return d
}

// --- tests ---

// TestRolloverCAMigrationE2E: the whole NCSC CA migration through the CLI,
// the new certificate provided after the new CA's 2 1 1 is published.
func TestRolloverCAMigrationE2E(t *testing.T) {
	t.Parallel()
	b := newRoBed(t, "roll.test", "mx")
	h := b.newRoHost(t, "mx", 3)
	a := h.initial
	nb := h.newChain(nil) // chain B, from a second root
	fb := h.files(nb)

	r := h.mustTL("plan", "--plan", "ca-migration", "--new-ca", fb.ca)
	for _, s := range rollover.PlanCAMigration.Steps() {
		if !strings.Contains(r.out, string(s)) {
			t.Errorf("plan output lacks step %s:\n%s", s, r.out)
		}
	}
	h.assertKnot("after plan", roPair(a))

	h.mustTL("start", "--plan", "ca-migration", "--new-ca", fb.ca)
	h.assertKnot("after start", roPair(a))

	r = h.mustTL("run")
	if !strings.Contains(r.out, "waiting") {
		t.Errorf("run output: %s", r.out)
	}
	withB := roSorted(append(roPair(a), roRec(nb.Intermediate, tlsa.DANETA))...)
	h.assertKnot("after the first run", withB)
	h.assertServes("after the first run", a)
	st := h.status()
	if st.CurrentStep != string(rollover.StepWaitTTL) || st.NotBefore.IsZero() || st.Status != rollover.StatusActive {
		t.Fatalf("after the first run: step %s, not before %v, %s", st.CurrentStep, st.NotBefore, st.Status)
	}
	if txt := h.mustTL("status").out; !strings.Contains(txt, "not before") {
		t.Errorf("status text lacks the not-before time:\n%s", txt)
	}
	notBefore := st.NotBefore

	h.mustTL("provide", "--cert", fb.chain, "--key", fb.key)
	r = h.mustTL("run", "--wait", "--timeout", "2m")
	if time.Now().Before(notBefore) {
		t.Errorf("run --wait finished before the not-before time %s", notBefore)
	}
	h.assertKnot("done", roPair(nb))
	h.assertServes("done", nb)
	h.assertFiles("done", nb)
	st = h.status()
	h.assertDone(st)
	for _, e := range st.History {
		if e.What == "deploying" && e.At.Before(notBefore) {
			t.Errorf("the certificate was deployed at %s, before the TTL wait ended (%s)", e.At, notBefore)
		}
	}
	txt := h.mustTL("status").out
	for _, s := range rollover.PlanCAMigration.Steps() {
		if !strings.Contains(txt, string(s)) {
			t.Errorf("status history lacks %s:\n%s", s, txt)
		}
	}
	t.Logf("status:\n%s", txt)
}

// TestRolloverRenewE2E: same CA, new key: one run, no TTL wait.
func TestRolloverRenewE2E(t *testing.T) {
	t.Parallel()
	b := newRoBed(t, "renew.test", "mx")
	h := b.newRoHost(t, "mx", 30)
	a := h.initial
	a2 := h.newChain(a)
	f := h.files(a2)
	h.mustTL("start", "--plan", "renew", "--new-cert", f.chain, "--new-key", f.key)
	r := h.mustTL("run")
	if r.took > 20*time.Second {
		t.Errorf("renew run took %s with a TTL of 30 s", r.took)
	}
	h.assertKnot("renewed", roSorted(roRec(a2.Leaf, tlsa.DANEEE), roRec(a.Intermediate, tlsa.DANETA)))
	h.assertServes("renewed", a2)
	st := h.status()
	h.assertDone(st)
	t.Logf("renew run took %s (TTL 30 s)", r.took.Round(time.Millisecond))
}

// TestRolloverTiming measures `run --wait` of a ca-migration with TTL T
// against T, and a renew against T.
func TestRolloverTiming(t *testing.T) {
	t.Parallel()
	const T = 5
	b := newRoBed(t, "timing.test", "mx")
	b.bin = buildTlsactl(t)
	h := b.newRoHost(t, "mx", T)
	nb := h.newChain(nil)
	fb := h.files(nb)
	h.mustTL("start", "--plan", "ca-migration", "--new-ca", fb.ca, "--new-cert", fb.chain, "--new-key", fb.key)
	r := h.mustTL("run", "--wait", "--timeout", "2m")
	st := h.status()
	h.assertDone(st)
	h.assertKnot("migrated", roPair(nb))
	h.assertServes("migrated", nb)
	prop := propagation(st)
	margin := time.Second
	ttl := T * time.Second
	t.Logf("TIMING ca-migration TTL %s margin %s: run --wait took %s; propagation (3 publishes) %s; overhead beyond the TTL %s",
		ttl, margin, r.took.Round(time.Millisecond), prop.Round(time.Millisecond), (r.took - ttl).Round(time.Millisecond))
	if r.took < ttl {
		t.Errorf("run --wait took %s, less than the TTL %s: it did not wait", r.took, ttl)
	}
	if max := ttl + prop + margin + 10*time.Second; r.took > max {
		t.Errorf("run --wait took %s, more than TTL + propagation + margin + 10 s = %s", r.took, max)
	}

	b2 := h.newChain(nb)
	f2 := h.files(b2)
	h.mustTL("start", "--plan", "renew", "--new-cert", f2.chain, "--new-key", f2.key)
	r = h.mustTL("run", "--wait", "--timeout", "2m")
	h.assertDone(h.status())
	h.assertKnot("renewed", roSorted(roRec(b2.Leaf, tlsa.DANEEE), roRec(nb.Intermediate, tlsa.DANETA)))
	t.Logf("TIMING renew TTL %s: run --wait took %s", ttl, r.took.Round(time.Millisecond))
	if r.took >= ttl {
		t.Errorf("renew took %s, not well under the TTL %s", r.took, ttl)
	}
}

// crashRun runs `rollover run --wait` with TLSACTL_FAILPOINT=point; it must
// die by SIGKILL.
func (h *roHost) crashRun(point string) {
	h.t.Helper()
	r := h.tl([]string{"TLSACTL_FAILPOINT=" + point}, "run", "--wait", "--timeout", "90s")
	if !r.killed {
		h.t.Fatalf("failpoint %s: the run was not killed (exit %d)\n%s%s", point, r.code, r.out, r.errOut)
	}
}

// resume runs `rollover run --wait` without failpoint: it must finish at once
// (no stale lock) and leave the rollover done.
func (h *roHost) resume(what string) roResult {
	h.t.Helper()
	r := h.tl(nil, "run", "--wait", "--timeout", "90s")
	if r.code != 0 || strings.Contains(r.errOut, "another tlsactl process") {
		h.t.Fatalf("%s: resumed run: exit %d\n%s%s", what, r.code, r.out, r.errOut)
	}
	h.assertDone(h.status())
	return r
}

// migrateWithCrashes runs one ca-migration from the current chain to a new
// one, crashing at each point in turn, and checks the result.
func (h *roHost) migrateWithCrashes(cur *testbed.Chain, points ...string) *testbed.Chain {
	h.t.Helper()
	h.assertServes("before "+strings.Join(points, ","), cur)
	nb := h.newChain(nil)
	f := h.files(nb)
	h.mustTL("start", "--plan", "ca-migration", "--new-ca", f.ca, "--new-cert", f.chain, "--new-key", f.key)
	for _, p := range points {
		h.crashRun(p)
	}
	h.resume(strings.Join(points, ","))
	h.assertKnot("after "+strings.Join(points, ","), roPair(nb))
	h.assertServes("after "+strings.Join(points, ","), nb)
	return nb
}

func (h *roHost) renewWithCrashes(cur *testbed.Chain, points ...string) *testbed.Chain {
	h.t.Helper()
	h.assertServes("before "+strings.Join(points, ","), cur)
	nb := h.newChain(cur)
	f := h.files(nb)
	h.mustTL("start", "--plan", "renew", "--new-cert", f.chain, "--new-key", f.key)
	for _, p := range points {
		h.crashRun(p)
	}
	h.resume(strings.Join(points, ","))
	h.assertKnot("after "+strings.Join(points, ","), roSorted(roRec(nb.Leaf, tlsa.DANEEE), roRec(cur.Intermediate, tlsa.DANETA)))
	h.assertServes("after "+strings.Join(points, ","), nb)
	return nb
}

// roFailpoints lists every failpoint of plan, in the order they are reached;
// a name that occurs in several steps (before-set, …) is listed each time.
func roFailpoints(plan rollover.Plan) []string {
	var out []string
	for _, s := range plan.Steps() {
		if s == rollover.StepDone {
			continue
		}
		out = append(out, "step-start:"+string(s))
		switch s {
		case rollover.StepPublishTA, rollover.StepPublishNext, rollover.StepReplaceEE, rollover.StepRetireTA, rollover.StepRetireEE:
			out = append(out, "before-set", "after-set", "after-confirm")
		case rollover.StepDeploy:
			out = append(out, "before-deploy", "after-deploy")
		}
		out = append(out, "step-done:"+string(s))
	}
	return out
}

// TestRolloverCrashResume kills `rollover run --wait` (SIGKILL) at every
// failpoint of a ca-migration and resumes it: each distinct failpoint name in
// a fresh migration resumed by a plain run, and every occurrence of every
// failpoint (before-set in all three publishing steps, …) in chained
// migrations where each resumed run dies at the next point. The same for
// every failpoint of a renew.
func TestRolloverCrashResume(t *testing.T) {
	t.Parallel()
	b := newRoBed(t, "crash.test", "mx1", "mx2", "mx3", "mx4")
	b.bin = buildTlsactl(t)
	all := roFailpoints(rollover.PlanCAMigration)
	var distinct []string
	for _, p := range all {
		if !slices.Contains(distinct, p) {
			distinct = append(distinct, p)
		}
	}
	t.Logf("ca-migration failpoints in order: %v", all)
	groups := [][]string{nil, nil, nil}
	for i, p := range distinct {
		groups[i%3] = append(groups[i%3], p)
	}
	for i, g := range groups {
		t.Run(fmt.Sprintf("fresh-%d", i+1), func(t *testing.T) {
			t.Parallel()
			h := b.newRoHost(t, fmt.Sprintf("mx%d", i+1), 2)
			cur := h.initial
			for _, p := range g {
				t.Logf("=== failpoint %s", p)
				cur = h.migrateWithCrashes(cur, p)
			}
		})
	}
	t.Run("chained", func(t *testing.T) {
		t.Parallel()
		h := b.newRoHost(t, "mx4", 2)
		// Every occurrence of every ca-migration failpoint: a run dies at
		// the first point, each resumed run at the next one. A point name
		// repeated later is reached only after the step between them.
		cur := h.migrateWithCrashes(h.initial, all...)
		renew := roFailpoints(rollover.PlanRenew)
		t.Logf("renew failpoints in order: %v", renew)
		cur = h.renewWithCrashes(cur, renew...)
		// And a renew resumed by a plain run after a crash in the middle of
		// the deploy and of the 3 1 1 replacement.
		cur = h.renewWithCrashes(cur, "before-deploy")
		h.renewWithCrashes(cur, "after-set")
	})
}

// TestRolloverFaults: a provider that refuses, a failing reload command, a
// server that keeps serving the old chain. Each run fails with exit 1, the
// state says why, nothing unsafe happens, and a later run with the fault
// fixed completes.
func TestRolloverFaults(t *testing.T) {
	t.Parallel()
	b := newRoBed(t, "faults.test", "mx", "stuck")
	b.bin = buildTlsactl(t)
	t.Run("provider-refuses-then-reload-fails", func(t *testing.T) {
		t.Parallel()
		h := b.newRoHost(t, "mx", 2)
		a := h.initial
		good := h.cfg

		// (a) The TSIG key is wrong: the provider refuses; nothing changes.
		nb := h.newChain(nil)
		fb := h.files(nb)
		h.mustTL("start", "--plan", "ca-migration", "--new-ca", fb.ca, "--new-cert", fb.chain, "--new-key", fb.key)
		bad := good
		bad.keyFile = b.badKey
		h.writeConfig(bad)
		r := h.tl(nil, "run")
		if r.code != 1 {
			t.Fatalf("run with a wrong TSIG key: exit %d", r.code)
		}
		st := h.status()
		if st.LastError == "" || st.CurrentStep != string(rollover.StepPublishTA) || st.Status != rollover.StatusActive {
			t.Fatalf("after the refused update: step %s, %s, last error %q", st.CurrentStep, st.Status, st.LastError)
		}
		if strings.Contains(r.out+r.errOut+st.LastError, b.knot.Key.Secret) {
			t.Error("the TSIG secret was printed")
		}
		t.Logf("refused: %s", st.LastError)
		h.assertKnot("after the refused update", roPair(a))
		h.assertServes("after the refused update", a)
		h.writeConfig(good)
		h.mustTL("run", "--wait", "--timeout", "2m")
		h.assertDone(h.status())
		h.assertKnot("after the fixed key", roPair(nb))
		h.assertServes("after the fixed key", nb)

		// (b) The reload command fails: the old files are restored, Postfix
		// still serves the old chain, the 3 1 1 is not replaced.
		nb2 := h.newChain(nb)
		f2 := h.files(nb2)
		h.mustTL("start", "--plan", "renew", "--new-cert", f2.chain, "--new-key", f2.key)
		failing := good
		failing.reload = []string{"false"}
		h.writeConfig(failing)
		r = h.tl(nil, "run")
		if r.code != 1 {
			t.Fatalf("run with a failing reload: exit %d", r.code)
		}
		st = h.status()
		if !strings.Contains(st.LastError, "reload") || st.CurrentStep != string(rollover.StepDeploy) {
			t.Fatalf("after the failed reload: step %s, last error %q", st.CurrentStep, st.LastError)
		}
		t.Logf("reload failed: %s", st.LastError)
		h.assertServes("after the failed reload", nb)
		h.assertFiles("after the failed reload", nb)
		h.assertKnot("after the failed reload", roPair(nb))
		h.writeConfig(good)
		h.mustTL("run")
		h.assertDone(h.status())
		h.assertKnot("after the fixed reload", roSorted(roRec(nb2.Leaf, tlsa.DANEEE), roRec(nb.Intermediate, tlsa.DANETA)))
		h.assertServes("after the fixed reload", nb2)
		h.assertFiles("after the fixed reload", nb2)
	})
	t.Run("server-keeps-old-chain", func(t *testing.T) {
		t.Parallel()
		// (c) The "reload" does nothing and the single smtpd keeps the old
		// chain: the deploy times out, the files are restored, no 3 1 1 of
		// a certificate that is not served is published.
		h := b.newRoHost(t, "stuck", 2, "default_process_limit = 1", "max_idle = 3600s", "max_use = 10000")
		a := h.initial
		good := h.cfg
		a2 := h.newChain(a)
		f := h.files(a2)
		h.mustTL("start", "--plan", "renew", "--new-cert", f.chain, "--new-key", f.key)
		stuck := good
		stuck.reload = []string{"true"}
		stuck.probeTimeout = "1500ms"
		h.writeConfig(stuck)
		r := h.tl(nil, "run")
		if r.code != 1 {
			t.Fatalf("run with a reload that does nothing: exit %d", r.code)
		}
		st := h.status()
		if !strings.Contains(st.LastError, "not served") || st.CurrentStep != string(rollover.StepDeploy) {
			t.Fatalf("after the stuck deploy: step %s, last error %q", st.CurrentStep, st.LastError)
		}
		t.Logf("not served: %s", st.LastError)
		h.assertServes("after the stuck deploy", a)
		h.assertFiles("after the stuck deploy", a)
		h.assertKnot("after the stuck deploy", roPair(a))
		h.writeConfig(good)
		h.mustTL("run")
		h.assertDone(h.status())
		h.assertKnot("after the real reload", roSorted(roRec(a2.Leaf, tlsa.DANEEE), roRec(a.Intermediate, tlsa.DANETA)))
		h.assertServes("after the real reload", a2)
	})
}

// TestRolloverAbort: abort after the new CA's 2 1 1 is published takes it
// back.
func TestRolloverAbort(t *testing.T) {
	t.Parallel()
	b := newRoBed(t, "abort.test", "mx")
	b.bin = buildTlsactl(t)
	h := b.newRoHost(t, "mx", 2)
	a := h.initial
	nb := h.newChain(nil)
	fb := h.files(nb)
	h.mustTL("start", "--plan", "ca-migration", "--new-ca", fb.ca)
	h.mustTL("run")
	h.assertKnot("published", roSorted(append(roPair(a), roRec(nb.Intermediate, tlsa.DANETA))...))
	h.mustTL("abort")
	h.assertKnot("aborted", roPair(a))
	h.assertServes("aborted", a)
	st := h.status()
	if st.Status != rollover.StatusAborted {
		t.Fatalf("status %s", st.Status)
	}
	// Nothing is left to run, and a new rollover can start.
	if r := h.mustTL("run"); strings.Contains(r.out, "rollover") {
		t.Errorf("run after abort: %s", r.out)
	}
	h.mustTL("start", "--plan", "ca-migration", "--new-ca", fb.ca, "--new-cert", fb.chain, "--new-key", fb.key)
	h.mustTL("run", "--wait", "--timeout", "2m")
	h.assertDone(h.status())
	h.assertKnot("migrated after abort", roPair(nb))
}

// TestRolloverLaggingSecondary: with a frozen secondary among the
// authoritative servers, the publish step fails with a propagation error
// naming it and no later step runs; once thawed, the rollover completes.
func TestRolloverLaggingSecondary(t *testing.T) {
	t.Parallel()
	roRequire(t)
	testbed.Require(t, "knotc", "knot")
	const zone = "lag.test."
	ip1, ip2 := testbed.RandomLoopbackPair()
	primary := testbed.NewKnot(t, testbed.KnotConfig{IP: ip1, Zones: []testbed.Zone{{
		Name: zone, Signed: true,
		NS:      []testbed.NameServer{{Name: "ns1", IP: ip1}, {Name: "ns2", IP: ip2}},
		Records: []string{"mx 60 IN A 127.0.0.1"},
	}}})
	_, port, _ := strings.Cut(primary.Addr, ":")
	var p int
	fmt.Sscan(port, &p)
	secondary := testbed.NewKnot(t, testbed.KnotConfig{IP: ip2, Port: p, Key: primary.Key,
		Secondaries: []testbed.SecondaryZone{{Name: zone, Primary: primary.Addr}}})
	b := newRoBedWith(t, primary, zone, []string{primary.Addr, secondary.Addr})
	if err := primary.AddNotify(b.ctx, zone, secondary.Addr); err != nil {
		t.Fatal(err)
	}
	b.bin = buildTlsactl(t)
	h := b.newRoHost(t, "mx", 2)
	a := h.initial
	inSync := func() bool {
		s1, err1 := primary.Serial(b.ctx, zone)
		s2, err2 := secondary.Serial(b.ctx, zone)
		return err1 == nil && err2 == nil && s1 == s2
	}
	for deadline := time.Now().Add(30 * time.Second); !inSync(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the secondary does not catch up with the primary")
		}
	}
	if err := secondary.Freeze(b.ctx, zone); err != nil {
		t.Fatal(err)
	}
	nb := h.newChain(nil)
	fb := h.files(nb)
	h.mustTL("start", "--plan", "ca-migration", "--new-ca", fb.ca, "--new-cert", fb.chain, "--new-key", fb.key)
	r := h.tl(nil, "run", "--wait", "--timeout", "6s")
	if r.code != 1 {
		t.Fatalf("run with a frozen secondary: exit %d", r.code)
	}
	st := h.status()
	if st.CurrentStep != string(rollover.StepPublishTA) || !strings.Contains(st.LastError, "propagation") || !strings.Contains(st.LastError, ip2) {
		t.Fatalf("after the propagation timeout: step %s, last error %q", st.CurrentStep, st.LastError)
	}
	t.Logf("lagging: %s", st.LastError)
	for _, e := range st.History {
		if e.Step != rollover.StepPublishTA {
			t.Errorf("a later step ran: %+v", e)
		}
	}
	h.assertServes("with the secondary frozen", a)
	if err := secondary.Thaw(b.ctx, zone); err != nil {
		t.Fatal(err)
	}
	h.mustTL("run", "--wait", "--timeout", "2m")
	h.assertDone(h.status())
	h.assertKnot("after thaw", roPair(nb))
	h.assertServes("after thaw", nb)
}
