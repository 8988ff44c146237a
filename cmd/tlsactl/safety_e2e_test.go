package main

// End-to-end tests of "never breaks DANE" in a world tlsactl does not own:
// someone else writes the zone, the senders' resolvers are not tlsactl's, and
// a TLSA owner name may be a CNAME. Real servers on loopback: a
// DNSSEC-signed Knot zone updated through RFC 2136 + TSIG, a private Postfix
// per host whose key and chain files are the deploy paths (`postfix reload`
// is the swap), and TWO validating Unbounds:
//
//   - tlsactl's resolver (the `resolver` of its configuration), which caches
//     for at most a second: what tlsactl's own lookups see is not what the
//     senders hold;
//   - the senders' resolver (cache-max-ttl one day, its own 127.53.x.y
//     addresses, so-reuseport off), which really caches every RRset for its
//     TTL, as the resolvers of the mail servers that deliver to the host do.
//
// A background probe resolves the TLSA RRset through the senders' Unbound
// every 250 ms (at the name senders query: a CNAME at the owner is followed)
// and probes Postfix's STARTTLS chain; a probe fails when no usable record of
// the RRset it got matches the served chain. posttls-finger (a real Postfix
// DANE client, through the senders' Unbound) runs after every tlsactl
// command and whenever the host's rollover changes step. Each scenario must
// end with the new chain served, the senders' RRset matching it, and no
// failure at all.
//
// The scenarios (issue: three ordinary situations that broke delivery):
//  1. publish-then-hook: `tlsactl publish --add` of a new CA's 2 1 1, then
//     at once `tlsactl hook lego` with a certificate from that CA;
//  2. external-revert: during a ca-migration's TTL wait someone else puts
//     the old RRset back;
//  3. cname-owner: `_<port>._tcp.<host> CNAME _dane.<zone>` (a shared
//     RRset) and the hook with a certificate from a new CA;
//  4. edit-before-change: someone else adds a record after tlsactl observed
//     the RRset and before its change reaches the server (a failpoint holds
//     tlsactl there): the RFC 2136 prerequisite makes Knot refuse the
//     change, and tlsactl publishes again beside the other writer's record.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/internal/starttls"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

const (
	// sfTTL is the TTL of every TLSA (and CNAME) record of these tests: long
	// enough that a cached RRset outlives a publish + hook by seconds, short
	// enough that each scenario takes well under a minute.
	sfTTL = 8
	// sfExitHeld is the hook's "held back" exit code (EX_TEMPFAIL).
	sfExitHeld = 75
)

// sfBed is one signed Knot zone, tlsactl's Unbound, the senders' Unbound
// and the built tlsactl binary, shared by the scenarios.
type sfBed struct {
	ctx      context.Context
	zone     string // FQDN
	knot     *testbed.Knot
	own      *testbed.Unbound // tlsactl's resolver (config `resolver`)
	senders  *testbed.Unbound // the senders' resolver (probe, posttls-finger)
	sres     *dnsx.Resolver   // lookups through the senders' Unbound
	keyFile  string           // TSIG key file for the rfc2136 provider
	postfix  string           // path of the postfix command
	bin      string           // built tlsactl
	knotPort int
}

func newSfBed(t *testing.T, zone string, labels ...string) *sfBed {
	t.Helper()
	roRequire(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	var recs []string
	for _, l := range labels {
		recs = append(recs, l+" 60 IN A 127.0.0.1")
	}
	b := startSfBed(t, ctx, []testbed.Zone{{Name: zone, Signed: true, Records: recs}})
	t.Logf("bed: Knot %s, tlsactl's Unbound %s, senders' Unbound %s (port 53 on %s)", b.knot.Addr, b.own.Addr, b.senders.Addr, b.senders.Port53IP)
	return b
}

// startSfBed starts Knot serving zones (the first is sfBed.zone), tlsactl's
// Unbound and the senders' Unbound with the zones' trust anchors, writes
// the TSIG key file and builds tlsactl.
func startSfBed(t *testing.T, ctx context.Context, zones []testbed.Zone) *sfBed {
	t.Helper()
	// The generated NS set is "ns" A 127.0.0.1 (port 53, where nothing
	// listens): the configuration's auth_port makes it reach this Knot.
	knot := testbed.NewKnot(t, testbed.KnotConfig{Zones: zones})
	var stubs []testbed.StubZone
	for _, z := range zones {
		ds, err := knot.DS(ctx, z.Name)
		if err != nil {
			t.Fatal(err)
		}
		stubs = append(stubs, testbed.StubZone{Name: z.Name, Addr: knot.Addr, TrustAnchor: ds})
	}
	own := testbed.NewUnbound(t, testbed.UnboundConfig{Stubs: stubs}) // cache-max-ttl 1 s
	senders := testbed.NewUnbound(t, testbed.UnboundConfig{
		Stubs:       stubs,
		CacheMaxTTL: 86400, // really cache every RRset for its TTL
		IP:          testbed.RandomLoopbackIP(),
		Port53:      true, // for posttls-finger (libc resolver)
	})
	_, port, _ := strings.Cut(knot.Addr, ":")
	b := &sfBed{ctx: ctx, zone: dns.Fqdn(zones[0].Name), knot: knot, own: own, senders: senders,
		sres:    &dnsx.Resolver{Addr: senders.Addr, Timeout: 3 * time.Second},
		keyFile: knot.Key.KeyFile(t), postfix: testbed.Require(t, "postfix", "postfix")}
	b.knotPort, _ = strconv.Atoi(port)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("knotd log:\n%s", roTail(knot.Log(), 3000))
			t.Logf("senders' unbound log:\n%s", roTail(senders.Log(), 3000))
		}
	})
	b.bin = buildTlsactl(t)
	return b
}

// sfHost is one MX host: its Postfix, deploy files, configuration, state
// directory and probe.
type sfHost struct {
	t         *testing.T
	b         *sfBed
	name      string // "pth.safety.test"
	owner     string // _<port>._tcp.<name>.: the name senders query
	rrOwner   string // where the TLSA RRset is: owner, or the CNAME's target
	pf        *testbed.Postfix
	keyPath   string
	chainPath string
	stateDir  string
	cfgPath   string
	a         *testbed.Chain // served at the start
	probe     *sfProbe
}

// newHost starts a Postfix serving chain A from the deploy files, publishes
// {3 1 1 leafA, 2 1 1 intA} (through Knot.Update, as the zone's owner did
// long ago) at the owner or, with cname, at cnameTarget with a CNAME at the
// owner, writes the configuration and starts the probe.
func (b *sfBed) newHost(t *testing.T, label, cnameTarget string) *sfHost {
	t.Helper()
	name := strings.TrimSuffix(label+"."+b.zone, ".")
	dir := t.TempDir()
	h := &sfHost{t: t, b: b, name: name, keyPath: filepath.Join(dir, "key.pem"), chainPath: filepath.Join(dir, "fullchain.pem"),
		stateDir: t.TempDir(), cfgPath: filepath.Join(dir, "tlsactl.toml")}
	h.a = testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{name}})
	roWrite(t, h.keyPath, h.a.Leaf.KeyPEM, 0o600)
	roWrite(t, h.chainPath, h.a.FullChainPEM(), 0o644)
	h.pf = testbed.NewPostfix(t, testbed.PostfixConfig{
		KeyPEM: h.a.Leaf.KeyPEM, ChainPEM: h.a.FullChainPEM(), Hostname: name,
		Extra: []string{fmt.Sprintf("smtpd_tls_chain_files = %s, %s", h.keyPath, h.chainPath)},
	})
	t.Cleanup(func() {
		if t.Failed() {
			var keep []string
			for _, l := range strings.Split(h.pf.Log(), "\n") {
				if !strings.Contains(l, "overriding earlier entry") { // our smtpd_tls_chain_files line
					keep = append(keep, l)
				}
			}
			t.Logf("postfix log of %s:\n%s", name, roTail(strings.Join(keep, "\n"), 4000))
		}
	})
	h.owner = fmt.Sprintf("_%d._tcp.%s.", h.pf.Port, name)
	h.rrOwner = h.owner
	var add []dns.RR
	if cnameTarget != "" {
		h.rrOwner = dns.Fqdn(cnameTarget)
		add = append(add, h.rr(fmt.Sprintf("%s %d IN CNAME %s", h.owner, sfTTL, h.rrOwner)))
	}
	for _, r := range roPair(h.a) {
		add = append(add, h.rr(fmt.Sprintf("%s %d IN TLSA %s", h.rrOwner, sfTTL, r)))
	}
	if err := b.knot.Update(b.ctx, b.zone, add, nil); err != nil {
		t.Fatal(err)
	}
	h.waitKnot("initial", roPair(h.a))
	if cnameTarget != "" {
		h.assertCNAME("initial")
	}
	h.waitServes(h.a)
	h.writeConfig()
	h.startProbe()
	return h
}

func (h *sfHost) rr(text string) dns.RR {
	h.t.Helper()
	rr, err := dns.NewRR(text)
	if err != nil {
		h.t.Fatal(err)
	}
	return rr
}

func (h *sfHost) writeConfig() {
	h.t.Helper()
	text := e2eConfig(h.b.own.Addr, h.stateDir, "1s", h.b.knot.Addr, h.b.keyFile, e2eHost{
		name: h.name, port: h.pf.Port, zone: h.b.zone, ttl: sfTTL, auth: []string{h.b.knot.Addr}, authPort: h.b.knotPort,
		keyFile: h.keyPath, chainFile: h.chainPath, reload: []string{h.b.postfix, "-c", h.pf.Dir, "reload"}, probeTimeout: "30s",
	})
	roWrite(h.t, h.cfgPath, []byte(text), 0o600)
}

// sfFiles are a chain's files: full chain (leaf + intermediate), key, the
// intermediate alone (the new CA).
type sfFiles struct{ chain, key, ca string }

func (h *sfHost) files(c *testbed.Chain) sfFiles {
	h.t.Helper()
	dir := h.t.TempDir()
	f := sfFiles{chain: filepath.Join(dir, h.name+".crt"), key: filepath.Join(dir, h.name+".key"), ca: filepath.Join(dir, "ca.pem")}
	roWrite(h.t, f.chain, c.FullChainPEM(), 0o600) // lego's bundle: leaf + issuer
	roWrite(h.t, f.key, c.Leaf.KeyPEM, 0o600)
	roWrite(h.t, f.ca, c.Intermediate.PEM, 0o644)
	return f
}

// legoEnv is what lego (Debian's 4.9.1: no LEGO_ISSUER_CERT_PATH) gives its
// hooks for the bundle in f.
func (h *sfHost) legoEnv(f sfFiles) []string {
	return []string{"LEGO_CERT_DOMAIN=" + h.name, "LEGO_CERT_PATH=" + f.chain, "LEGO_CERT_KEY_PATH=" + f.key}
}

type sfResult struct {
	out, errOut string
	code        int
	start, end  time.Time
}

// run runs the built tlsactl with args (env added to a clean environment
// without any ACME hook variable), logs it and then runs posttls-finger.
func (h *sfHost) run(env []string, args ...string) sfResult {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.b.ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.b.bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LEGO_") && !strings.HasPrefix(kv, "RENEWED_") && !strings.HasPrefix(kv, "TLSACTL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	r := sfResult{start: time.Now()}
	err := cmd.Run()
	r.end = time.Now()
	r.out, r.errOut = o.String(), e.String()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		h.t.Fatalf("tlsactl %s: %v", strings.Join(args, " "), err)
	}
	if slices.Contains(args, "status") && slices.Contains(args, "--json") {
		return r // parsed by the caller
	}
	h.t.Logf("%s tlsactl %s %v → exit %d in %s\n%s%s", r.start.Format("15:04:05.000"), strings.Join(args, " "), env, r.code,
		r.end.Sub(r.start).Round(time.Millisecond), r.out, r.errOut)
	h.finger("after tlsactl " + strings.Join(args[:min(2, len(args))], " "))
	return r
}

// startCAMigration starts a ca-migration of the host to f's CA and provides
// f's certificate; it returns when the start command began.
func (h *sfHost) startCAMigration(f sfFiles) time.Time {
	h.t.Helper()
	common := []string{"--config", h.cfgPath, "--host", h.name}
	r := h.run(nil, append([]string{"rollover", "start"}, append(common, "--plan", "ca-migration", "--new-ca", f.ca)...)...)
	if r.code != 0 {
		h.t.Fatalf("rollover start: exit %d", r.code)
	}
	if p := h.run(nil, append([]string{"rollover", "provide"}, append(common, "--cert", f.chain, "--key", f.key)...)...); p.code != 0 {
		h.t.Fatalf("rollover provide: exit %d", p.code)
	}
	return r.start
}

// wantCode reports (without stopping the scenario, so that its probe
// numbers are still measured) an exit code other than want.
func (h *sfHost) wantCode(what string, r sfResult, want int) bool {
	h.t.Helper()
	if r.code != want {
		h.t.Errorf("%s: exit %d, want %d\n%s%s", what, r.code, want, r.out, r.errOut)
		return false
	}
	return true
}

// sfEvent, sfVersion and sfStatus are the parts of `rollover status --json`
// these tests read.
type sfEvent struct {
	At     time.Time `json:"at"`
	Step   string    `json:"step"`
	What   string    `json:"what"`
	Detail string    `json:"detail"`
}

type sfVersion struct {
	Records   []string  `json:"records"`
	TTL       uint32    `json:"ttl"`
	Requested time.Time `json:"requested"`
	FirstSeen time.Time `json:"first_seen"`
	Confirmed time.Time `json:"confirmed"`
	Writer    string    `json:"writer"`
}

type sfStatus struct {
	Plan        string      `json:"plan"`
	Status      string      `json:"status"`
	CurrentStep string      `json:"current_step"`
	NotBefore   time.Time   `json:"not_before"`
	Versions    []sfVersion `json:"versions"`
	History     []sfEvent   `json:"history"`
	LastError   string      `json:"last_error"`
}

// status is `tlsactl rollover status --json` for the host; ok is false when
// there is no rollover state (logged).
func (h *sfHost) status() (sfStatus, bool) {
	h.t.Helper()
	r := h.run(nil, "rollover", "status", "--config", h.cfgPath, "--host", h.name, "--json")
	var all []sfStatus
	if r.code != 0 || json.Unmarshal([]byte(r.out), &all) != nil || len(all) != 1 {
		h.t.Logf("rollover status --json: exit %d\n%s%s", r.code, roTail(r.out, 2000), r.errOut)
		return sfStatus{}, false
	}
	return all[0], true
}

func (st sfStatus) dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s rollover %s, step %s, last error %q\n", st.Plan, st.Status, st.CurrentStep, st.LastError)
	for _, e := range st.History {
		fmt.Fprintf(&b, "  %s %-14s %-12s %s\n", e.At.Format("15:04:05.000"), e.Step, e.What, e.Detail)
	}
	for _, v := range st.Versions {
		fmt.Fprintf(&b, "  version %v ttl %d requested %s first seen %s confirmed %s writer %q\n", v.Records, v.TTL,
			sfClock(v.Requested), sfClock(v.FirstSeen), sfClock(v.Confirmed), v.Writer)
	}
	return b.String()
}

func sfClock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("15:04:05.000")
}

// knotAt is the RRset of type qtype Knot serves at name (sorted
// presentation RDATA; TLSA as "u s m <hex>", CNAME as its target).
func (h *sfHost) knotAt(name string, qtype uint16) []string {
	h.t.Helper()
	m, err := testbed.Query(h.b.ctx, h.b.knot.Addr, name, qtype)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, rr := range m.Answer {
		if !strings.EqualFold(rr.Header().Name, name) || rr.Header().Rrtype != qtype {
			continue
		}
		switch v := rr.(type) {
		case *dns.TLSA:
			out = append(out, fmt.Sprintf("%d %d %d %s", v.Usage, v.Selector, v.MatchingType, strings.ToLower(v.Certificate)))
		case *dns.CNAME:
			out = append(out, strings.ToLower(v.Target))
		}
	}
	slices.Sort(out)
	return out
}

func (h *sfHost) waitKnot(what string, want []string) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := h.knotAt(h.rrOwner, dns.TypeTLSA)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: Knot serves %v at %s, want %v", what, got, h.rrOwner, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// assertCNAME: the owner is still exactly the CNAME to rrOwner.
func (h *sfHost) assertCNAME(what string) {
	h.t.Helper()
	if got := h.knotAt(h.owner, dns.TypeCNAME); !slices.Equal(got, []string{strings.ToLower(h.rrOwner)}) {
		h.t.Errorf("%s: Knot serves CNAME %v at %s, want %s", what, got, h.owner, h.rrOwner)
	}
}

func sfParse(t *testing.T, ss []string) []tlsa.Record {
	t.Helper()
	var out []tlsa.Record
	for _, s := range ss {
		f := strings.Fields(s)
		if len(f) != 4 {
			t.Fatalf("TLSA %q", s)
		}
		u, _ := strconv.Atoi(f[0])
		sel, _ := strconv.Atoi(f[1])
		mt, _ := strconv.Atoi(f[2])
		data, err := hex.DecodeString(f[3])
		if err != nil {
			t.Fatalf("TLSA %q: %v", s, err)
		}
		out = append(out, tlsa.Record{Usage: tlsa.Usage(u), Selector: tlsa.Selector(sel), MatchingType: tlsa.MatchingType(mt), Data: data})
	}
	return out
}

func sfChain(c *testbed.Chain) []*x509.Certificate {
	return []*x509.Certificate{c.Leaf.Cert, c.Intermediate.Cert}
}

func (h *sfHost) matches(recs []string, c *testbed.Chain) bool {
	return tlsa.Match(sfChain(c), sfParse(h.t, recs), tlsa.MatchOptions{Names: []string{h.name}, Now: time.Now()}).Matched()
}

func (h *sfHost) served(ctx context.Context) ([]*x509.Certificate, error) {
	r, err := starttls.Probe(ctx, starttls.Options{Addr: h.pf.Addr, ServerName: h.name, Protocol: starttls.SMTP, Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	return r.Chain, nil
}

func (h *sfHost) serves(c *testbed.Chain) (bool, string) {
	chain, err := h.served(h.b.ctx)
	if err != nil {
		return false, err.Error()
	}
	return roServes(chain, c), roLeaf(chain)
}

// checkServes reports (and lets the scenario go on) when Postfix does not
// serve c now.
func (h *sfHost) checkServes(what string, c *testbed.Chain) {
	h.t.Helper()
	if ok, leaf := h.serves(c); !ok {
		h.t.Errorf("%s: Postfix does not serve the expected chain; it serves %s", what, leaf)
	}
}

func (h *sfHost) waitServes(c *testbed.Chain) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, leaf := h.serves(c)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("Postfix does not serve the expected chain: it serves %s", leaf)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sendersView is the TLSA RRset the senders' Unbound answers for the host
// (CNAMEs followed) and its remaining TTL.
func (h *sfHost) sendersView(ctx context.Context) (*dnsx.TLSAResult, []string, error) {
	res, err := h.b.sres.LookupTLSA(ctx, uint16(h.pf.Port), h.name)
	if err != nil {
		return nil, nil, err
	}
	var recs []string
	for _, r := range res.Records {
		recs = append(recs, r.String())
	}
	slices.Sort(recs)
	return res, recs, nil
}

// primeSenders waits until the senders' Unbound holds exactly want and has
// just fetched it (remaining TTL ≥ TTL-1): from now on it keeps that RRset
// for about a full TTL, whatever the zone holds. The probe's lookups every
// 250 ms refetch it as soon as it expires, so this takes at most a TTL.
func (h *sfHost) primeSenders(what string, want []string) {
	h.t.Helper()
	deadline := time.Now().Add(2*sfTTL*time.Second + 10*time.Second)
	for {
		res, got, err := h.sendersView(h.b.ctx)
		if err == nil && slices.Equal(got, want) && res.TTL >= sfTTL-1 {
			h.t.Logf("%s: the senders' resolver holds %v (TTL %d left, at %s)", what, got, res.TTL, res.Canonical)
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: the senders' resolver answers %v (%v), want %v freshly cached", what, got, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSendersMatch waits until the RRset the senders' Unbound answers
// matches chain c (reported, not fatal, on timeout).
func (h *sfHost) waitSendersMatch(what string, c *testbed.Chain) bool {
	h.t.Helper()
	deadline := time.Now().Add(3*sfTTL*time.Second + 10*time.Second)
	for {
		res, got, err := h.sendersView(h.b.ctx)
		if err == nil && res.Status == dnsx.Secure && h.matches(got, c) {
			h.t.Logf("%s: the senders' resolver answers %v at %s (TTL %d left): matches", what, got, res.Canonical, res.TTL)
			return true
		}
		if time.Now().After(deadline) {
			h.t.Errorf("%s: the senders' resolver answers %v (%v), which does not match the new chain", what, got, err)
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// finger runs posttls-finger through the senders' Unbound; it must verify.
func (h *sfHost) finger(when string) {
	ctx, cancel := context.WithTimeout(h.b.ctx, 30*time.Second)
	defer cancel()
	out, err := testbed.PosttlsFinger(ctx, h.b.senders.Port53IP, h.name, h.pf.Port)
	p := h.probe
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fingers++
	if err != nil || !strings.Contains(out, "Verified TLS connection") {
		p.fingerFails = append(p.fingerFails, fmt.Sprintf("%s posttls-finger %s: %v\n%s", time.Now().Format("15:04:05.000"), when, err, roTail(out, 1200)))
	}
}

// sfProbe is what the background probe saw.
type sfProbe struct {
	mu                   sync.Mutex
	probes, matched      int
	fails, soft          []string
	firstFail, lastFail  time.Time
	fingers              int
	fingerFails          []string
	steps                []string
	want                 *testbed.Chain // the new chain: firstNew is when it was first served
	firstNew             time.Time
	stop                 chan struct{}
	wg                   sync.WaitGroup
	once                 sync.Once
	lastStep, lastRRsets string
	rrsets               []string // the distinct RRsets the senders' resolver answered, in order
}

func (h *sfHost) startProbe() {
	p := &sfProbe{stop: make(chan struct{})}
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
	go func() { // posttls-finger at every change of the rollover's step
		defer p.wg.Done()
		store, err := rollover.NewFileStore(h.stateDir)
		if err != nil {
			h.t.Logf("step watcher: %v", err)
			return
		}
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			if st, err := store.Load(h.name); err == nil {
				key := fmt.Sprintf("%s %s step %s", st.Plan, st.Status, st.CurrentStep())
				p.mu.Lock()
				changed := key != p.lastStep
				if changed {
					p.lastStep = key
					p.steps = append(p.steps, time.Now().Format("15:04:05.000")+" "+key)
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
	h.t.Cleanup(h.stopProbe)
}

func (h *sfHost) stopProbe() {
	h.probe.once.Do(func() {
		close(h.probe.stop)
		h.probe.wg.Wait()
	})
}

func (h *sfHost) expectNew(c *testbed.Chain) {
	h.probe.mu.Lock()
	defer h.probe.mu.Unlock()
	h.probe.want = c
}

func (h *sfHost) probeOnce() {
	p := h.probe
	ctx, cancel := context.WithTimeout(h.b.ctx, 10*time.Second)
	defer cancel()
	now := time.Now()
	stamp := now.Format("15:04:05.000")
	res, recs, err := h.sendersView(ctx)
	if err != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		if errors.Is(err, dnsx.ErrBogus) || errors.Is(err, dnsx.ErrNoData) || errors.Is(err, dnsx.ErrNXDomain) {
			p.fail(now, fmt.Sprintf("%s TLSA lookup: %v", stamp, err))
		} else if h.b.ctx.Err() == nil {
			p.soft = append(p.soft, fmt.Sprintf("%s TLSA lookup: %v", stamp, err))
		}
		return
	}
	chain, err := h.served(ctx)
	if err != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		if h.b.ctx.Err() == nil {
			p.soft = append(p.soft, fmt.Sprintf("%s STARTTLS: %v", stamp, err))
		}
		return
	}
	m := tlsa.Match(chain, sfParse(h.t, recs), tlsa.MatchOptions{Names: []string{h.name}, Now: now})
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probes++
	if view := fmt.Sprintf("%v at %s", recs, res.Canonical); view != p.lastRRsets {
		p.lastRRsets = view
		p.rrsets = append(p.rrsets, stamp+" "+view)
	}
	if p.want != nil && p.firstNew.IsZero() && roServes(chain, p.want) {
		p.firstNew = now
	}
	switch {
	case res.Status != dnsx.Secure:
		p.fail(now, fmt.Sprintf("%s TLSA RRset %v is %s, not secure", stamp, recs, res.Status))
	case !m.Matched():
		p.fail(now, fmt.Sprintf("%s no usable record matches: the senders' resolver holds %v at %s (TTL %d left), Postfix serves %s",
			stamp, recs, res.Canonical, res.TTL, roLeaf(chain)))
	default:
		p.matched++
	}
}

// fail records a probe failure; p.mu is held.
func (p *sfProbe) fail(at time.Time, msg string) {
	p.fails = append(p.fails, msg)
	if p.firstFail.IsZero() {
		p.firstFail = at
	}
	p.lastFail = at
}

// report stops the probe, logs the scenario's numbers and fails the test
// for every probe or posttls-finger failure. start is when the scenario's
// first tlsactl command began.
func (h *sfHost) report(scenario string, start *time.Time) {
	p := h.probe
	// Let the probe see the end state at least twice before it stops.
	count := func() int { p.mu.Lock(); defer p.mu.Unlock(); return p.probes }
	for n, deadline := count(), time.Now().Add(5*time.Second); count() < n+2 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	h.stopProbe()
	p.mu.Lock()
	defer p.mu.Unlock()
	toNew := "never"
	if !p.firstNew.IsZero() && !start.IsZero() {
		toNew = p.firstNew.Sub(*start).Round(time.Millisecond).String()
	}
	window := "none"
	if !p.firstFail.IsZero() {
		window = fmt.Sprintf("%s–%s (%s)", p.firstFail.Format("15:04:05.000"), p.lastFail.Format("15:04:05.000"),
			p.lastFail.Sub(p.firstFail).Round(time.Millisecond))
	}
	h.t.Logf("scenario %s: %d probes, %d failures (window %s), %d posttls-finger runs (%d failed), %d transient probe errors; first command → new chain served: %s",
		scenario, p.probes, len(p.fails), window, p.fingers, len(p.fingerFails), len(p.soft), toNew)
	h.t.Logf("scenario %s: steps seen: %s", scenario, strings.Join(p.steps, " → "))
	h.t.Logf("scenario %s: RRsets the senders' resolver answered:\n  %s", scenario, strings.Join(p.rrsets, "\n  "))
	for i, s := range p.soft {
		if i < 5 {
			h.t.Logf("transient: %s", s)
		}
	}
	if p.probes == 0 || p.matched == 0 {
		h.t.Errorf("scenario %s: the background probe never matched (%d probes)", scenario, p.probes)
	}
	for i, f := range p.fails {
		if i < 12 || i == len(p.fails)-1 {
			h.t.Errorf("scenario %s: probe failure %d/%d: %s", scenario, i+1, len(p.fails), f)
		}
	}
	for _, f := range p.fingerFails {
		h.t.Errorf("scenario %s: %s", scenario, f)
	}
}

// assertDeployedAged checks that the new chain was deployed, and not
// before cmd (which published what, e.g. "the added 2 1 1") began + ttl.
func (h *sfHost) assertDeployedAged(st sfStatus, since time.Time, cmd sfResult, ttl time.Duration, by, what string) {
	h.t.Helper()
	switch at := h.deployedAt(st, since); {
	case at.IsZero():
		h.t.Error("no deploy of the new chain was seen")
	case at.Before(cmd.start.Add(ttl)):
		h.t.Errorf("the new chain was deployed at %s, %s after %s began: %s had not aged its TTL %s",
			sfClock(at), at.Sub(cmd.start).Round(time.Millisecond), by, what, ttl)
	default:
		h.t.Logf("deployed %s after %s returned (TTL %s)", at.Sub(cmd.end).Round(time.Millisecond), by, ttl)
	}
}

// deployedAt is when the new chain was first deployed: the earliest of the
// first "deploying" event of the rollover history (at or after since) and
// the probe's first sighting of the chain.
func (h *sfHost) deployedAt(st sfStatus, since time.Time) time.Time {
	h.probe.mu.Lock()
	at := h.probe.firstNew
	h.probe.mu.Unlock()
	for _, e := range st.History {
		if e.What == "deploying" && !e.At.Before(since) && (at.IsZero() || e.At.Before(at)) {
			at = e.At
		}
	}
	return at
}

// TestSafetyE2E: the three scenarios against one Knot and two Unbounds,
// each with its own host, Postfix and state directory.
func TestSafetyE2E(t *testing.T) {
	t.Parallel()
	b := newSfBed(t, "safety.test", "pth", "rev", "cn", "ebc")
	const ttl = sfTTL * time.Second

	// 1. `publish --add` of the new CA's 2 1 1, then at once the hook with a
	// certificate from that CA. The provider shows a 2 1 1 covering the new
	// chain, but the senders' resolvers hold the RRset from before the add
	// for a TTL: the hook must hold the certificate back (75) until the
	// added record has aged, and `rollover run --wait` deploys it then.
	t.Run("publish-then-hook", func(t *testing.T) {
		t.Parallel()
		h := b.newHost(t, "pth", "")
		a, nb := h.a, testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{h.name}})
		f := h.files(nb)
		h.expectNew(nb)
		var start time.Time
		defer h.report("publish-then-hook", &start)
		h.primeSenders("before the publish", roPair(a))

		pub := h.run(nil, "publish", "--config", h.cfgPath, "--host", h.name, "--usage", "2", "--selector", "1", "--mtype", "1",
			"--certificate", f.ca, "--add", "--wait", "--timeout", "60s",
			"--auth-server", b.knot.Addr, "--auth-port", strconv.Itoa(b.knotPort))
		start = pub.start
		if pub.code != 0 {
			t.Fatalf("publish --add: exit %d\n%s%s", pub.code, pub.out, pub.errOut)
		}
		withB := roSorted(append(roPair(a), roRec(nb.Intermediate, tlsa.DANETA))...)
		h.waitKnot("after publish --add", withB)

		hk := h.run(h.legoEnv(f), "hook", "lego", "--config", h.cfgPath)
		if h.wantCode("hook lego right after the publish", hk, sfExitHeld) && !strings.Contains(hk.errOut, "held back") {
			t.Errorf("hook message lacks %q: %s", "held back", hk.errOut)
		}
		h.checkServes("after the hook", a)

		r := h.run(nil, "rollover", "run", "--wait", "--config", h.cfgPath, "--timeout", "2m")
		h.wantCode("rollover run --wait", r, 0)
		h.waitServes(nb)
		h.waitSendersMatch("end", nb)
		if got := h.knotAt(h.rrOwner, dns.TypeTLSA); !h.matches(got, nb) {
			t.Errorf("end: Knot serves %v, which does not match the new chain", got)
		}
		st, _ := h.status()
		t.Logf("status:\n%s", st.dump())
		// The added record must have aged a TTL before the new chain was
		// served: its confirmation came after the publish command began.
		h.assertDeployedAged(st, start, pub, ttl, "the publish", "the added 2 1 1")
	})

	// 2. A ca-migration publishes the new CA's 2 1 1; during the TTL wait
	// someone else puts the old RRset back. The engine must notice, step
	// back, republish, and wait a full TTL from the republish before the
	// deploy.
	t.Run("external-revert", func(t *testing.T) {
		t.Parallel()
		h := b.newHost(t, "rev", "")
		a, nb := h.a, testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{h.name}})
		f := h.files(nb)
		h.expectNew(nb)
		var start time.Time
		defer h.report("external-revert", &start)
		h.primeSenders("before the rollover", roPair(a))

		common := []string{"--config", h.cfgPath, "--host", h.name}
		start = h.startCAMigration(f)
		r := h.run(nil, append([]string{"rollover", "run"}, common...)...)
		if r.code != 0 {
			t.Fatalf("first rollover run: exit %d", r.code)
		}
		if !strings.Contains(r.out, "waiting") {
			t.Errorf("first rollover run does not say it is waiting: %s", r.out)
		}
		newTA := roRec(nb.Intermediate, tlsa.DANETA)
		h.waitKnot("after the first run", roSorted(append(roPair(a), newTA)...))
		h.checkServes("after the first run", a)

		// Someone else puts the old RRset back (an RFC 2136 update that
		// removes the new 2 1 1), and the senders' resolvers pick it up.
		if err := b.knot.Update(b.ctx, b.zone, nil, []dns.RR{h.rr(fmt.Sprintf("%s %d IN TLSA %s", h.owner, sfTTL, newTA))}); err != nil {
			t.Fatal(err)
		}
		revertAt := time.Now()
		h.waitKnot("after the external revert", roPair(a))
		h.primeSenders("after the external revert", roPair(a))

		r = h.run(nil, append([]string{"rollover", "run"}, append(common, "--wait", "--timeout", "2m")...)...)
		h.wantCode("rollover run --wait after the revert", r, 0)
		h.waitServes(nb)
		h.waitSendersMatch("end", nb)
		if got := h.knotAt(h.rrOwner, dns.TypeTLSA); !h.matches(got, nb) {
			t.Errorf("end: Knot serves %v, which does not match the new chain", got)
		}
		st, ok := h.status()
		if !ok {
			t.Fatal("no rollover status")
		}
		t.Logf("status:\n%s", st.dump())

		// The history says what happened: the RRset someone else wrote was
		// observed (the event names it: the old pair, without the new 2 1 1)
		// and the step went back (naming the 2 1 1 that vanished).
		var stepBack, observed *sfEvent
		short := func(rec string) string { return strings.Fields(rec)[3][:8] }
		for i := range st.History {
			e := &st.History[i]
			d := strings.ToLower(e.Detail)
			if e.What == "stepped back" && stepBack == nil && strings.Contains(d, short(newTA)) {
				stepBack = e
			}
			if e.What == "observed" && observed == nil && !e.At.Before(revertAt) &&
				strings.Contains(d, short(roRec(a.Leaf, tlsa.DANEEE))) && strings.Contains(d, short(roRec(a.Intermediate, tlsa.DANETA))) &&
				!strings.Contains(d, short(newTA)) {
				observed = e
			}
		}
		if observed == nil {
			t.Errorf("the history has no %q event after the revert naming the RRset someone else wrote (%v)", "observed", roPair(a))
		}
		if stepBack == nil {
			t.Errorf("the history has no %q event naming the vanished 2 1 1 (%s…)", "stepped back", short(newTA))
		}
		if observed != nil {
			t.Logf("the rollover observed the revert %s after it happened", observed.At.Sub(revertAt).Round(time.Millisecond))
		}
		// The new chain may be served only a full TTL after the republished
		// RRset was confirmed (never on the strength of the first publish).
		at := h.deployedAt(st, start)
		switch {
		case at.IsZero():
			t.Error("no deploy of the new chain was seen")
		case stepBack == nil:
			t.Logf("deployed %s after the external revert (TTL %s)", at.Sub(revertAt).Round(time.Millisecond), ttl)
		default:
			ref, from := stepBack.At, "the step-back event"
			for _, e := range st.History {
				if e.What == "confirmed" && !e.At.Before(stepBack.At) {
					ref, from = e.At, "the first confirmation after the step back"
					break
				}
			}
			if at.Before(ref.Add(ttl)) {
				t.Errorf("the new chain was deployed at %s, %s after %s (%s): less than the TTL %s",
					sfClock(at), at.Sub(ref).Round(time.Millisecond), from, sfClock(ref), ttl)
			} else {
				t.Logf("deployed %s after %s (TTL %s)", at.Sub(ref).Round(time.Millisecond), from, ttl)
			}
		}
	})

	// 3. The TLSA owner is a CNAME to a shared RRset at _dane.<zone>. The
	// provider shows no TLSA at the owner, but senders resolve the CNAME and
	// hold the RRset at _dane: a certificate from a new CA is held back, its
	// 2 1 1 is published at _dane (the CNAME stays), and deployed after a
	// TTL.
	t.Run("cname-owner", func(t *testing.T) {
		t.Parallel()
		h := b.newHost(t, "cn", "_dane."+b.zone)
		a, nb := h.a, testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{h.name}})
		f := h.files(nb)
		h.expectNew(nb)
		var start time.Time
		defer h.report("cname-owner", &start)
		h.primeSenders("before the hook", roPair(a))

		hk := h.run(h.legoEnv(f), "hook", "lego", "--config", h.cfgPath)
		start = hk.start
		if h.wantCode("hook lego with a new CA behind a CNAME'd owner", hk, sfExitHeld) && !strings.Contains(hk.errOut, "held back") {
			t.Errorf("hook message lacks %q: %s", "held back", hk.errOut)
		}
		newTA := roRec(nb.Intermediate, tlsa.DANETA)
		got := h.knotAt(h.rrOwner, dns.TypeTLSA)
		if !slices.Contains(got, newTA) || !h.matches(got, a) {
			t.Errorf("after the hook: Knot serves %v at %s; want the new CA's %s beside records matching the served chain", got, h.rrOwner, newTA)
		}
		if own := h.knotAt(h.owner, dns.TypeTLSA); len(own) > 0 {
			t.Errorf("after the hook: Knot serves TLSA %v at the CNAME owner %s", own, h.owner)
		}
		h.assertCNAME("after the hook")
		h.checkServes("after the hook", a)

		r := h.run(nil, "rollover", "run", "--wait", "--config", h.cfgPath, "--timeout", "2m")
		h.wantCode("rollover run --wait", r, 0)
		h.waitServes(nb)
		h.waitSendersMatch("end", nb)
		if got := h.knotAt(h.rrOwner, dns.TypeTLSA); !h.matches(got, nb) {
			t.Errorf("end: Knot serves %v at %s, which does not match the new chain", got, h.rrOwner)
		}
		h.assertCNAME("end")
		st, _ := h.status()
		t.Logf("status:\n%s", st.dump())
		h.assertDeployedAged(st, start, hk, ttl, "the hook", "the new CA's 2 1 1")
	})

	// 4. A ca-migration's first run observes the RRset and is held (a
	// failpoint) just before its UPDATE; someone else adds a record then
	// (the backup MX's key, pre-published by hand). tlsactl's UPDATE
	// carries the RRset it observed as an RFC 2136 prerequisite, so Knot
	// refuses it and changes nothing; tlsactl observes again and publishes
	// the new CA's 2 1 1 beside the other writer's record, which stays to
	// the end.
	t.Run("edit-before-change", func(t *testing.T) {
		t.Parallel()
		h := b.newHost(t, "ebc", "")
		a, nb := h.a, testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{h.name}})
		backup := testbed.MustChain(t, testbed.ChainOptions{DNSNames: []string{"backup." + h.name}})
		f := h.files(nb)
		h.expectNew(nb)
		var start time.Time
		defer h.report("edit-before-change", &start)
		h.primeSenders("before the rollover", roPair(a))

		common := []string{"--config", h.cfgPath, "--host", h.name}
		start = h.startCAMigration(f)
		gate := filepath.Join(t.TempDir(), "gate")
		roWrite(t, gate, nil, 0o600)
		done := make(chan sfResult, 1)
		go func() {
			done <- h.run([]string{"TLSACTL_FAILPOINT_PAUSE=before-set:" + gate}, append([]string{"rollover", "run"}, common...)...)
		}()
		waitFor(t, b.ctx, "rollover run reaching its change", 60*time.Second, func() bool {
			select {
			case r := <-done:
				t.Fatalf("rollover run ended (exit %d) before its change:\n%s%s", r.code, r.out, r.errOut)
			default:
			}
			_, err := os.Stat(gate + ".reached")
			return err == nil
		})
		extra := roRec(backup.Leaf, tlsa.DANEEE)
		if err := b.knot.Update(b.ctx, b.zone, []dns.RR{h.rr(fmt.Sprintf("%s %d IN TLSA %s", h.owner, sfTTL, extra))}, nil); err != nil {
			t.Fatal(err)
		}
		editAt := time.Now()
		h.waitKnot("after the other writer's add", roSorted(append(roPair(a), extra)...))
		if err := os.Remove(gate); err != nil {
			t.Fatal(err)
		}
		r := <-done
		h.wantCode("the held rollover run", r, 0)
		newTA := roRec(nb.Intermediate, tlsa.DANETA)
		h.waitKnot("after the first run", roSorted(append(roPair(a), extra, newTA)...))
		h.checkServes("after the first run", a)
		st, ok := h.status()
		if !ok {
			t.Fatal("no rollover status")
		}
		var changed *sfEvent
		for i := range st.History {
			if e := &st.History[i]; e.What == "changed underneath" && !e.At.Before(editAt) {
				changed = e
			}
		}
		if changed == nil {
			t.Errorf("the history has no %q event after the other writer's add:\n%s", "changed underneath", st.dump())
		} else {
			t.Logf("refused change seen: %s %s", sfClock(changed.At), changed.Detail)
		}

		r = h.run(nil, append([]string{"rollover", "run"}, append(common, "--wait", "--timeout", "2m")...)...)
		h.wantCode("rollover run --wait", r, 0)
		h.waitServes(nb)
		h.waitSendersMatch("end", nb)
		got := h.knotAt(h.rrOwner, dns.TypeTLSA)
		if !h.matches(got, nb) || !slices.Contains(got, extra) {
			t.Errorf("end: Knot serves %v; want records matching the new chain and the other writer's %s", got, extra)
		}
		if st, ok = h.status(); ok {
			t.Logf("status:\n%s", st.dump())
		}
	})
}
