package rollover

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// ---------------------------------------------------------------------------
// Clock

// fakeClock is a Clock that moves only when the test (or the fake DNS while
// it "waits" for propagation) moves it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Before(c.t) {
		panic(fmt.Sprintf("fake clock moved backwards: %s -> %s", c.t, t))
	}
	c.t = t
}

// ---------------------------------------------------------------------------
// Certificates: root -> intermediate -> leaf, built in the test.

// testBase is the fake clock's start; every certificate is valid around it.
var testBase = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

const testHost = "mx.example.net"

// testHost2 is the second host of the multi-host worlds.
const testHost2 = "mx2.example.net"

type testCA struct {
	root, inter *x509.Certificate
	interKey    *ecdsa.PrivateKey
}

type testLeaf struct {
	cert  *x509.Certificate
	chain []*x509.Certificate // leaf, intermediate: what the server sends
	mat   Material
	key   *ecdsa.PrivateKey
}

// testPKI is the material every rollover test uses: two CAs and leaves for
// each plan. It is built once per package run (key generation is the only
// cost) and never mutated.
type testPKI struct {
	ca1, ca2 *testCA
	old      testLeaf // served at the start: CA1, key "old"
	renew    testLeaf // renew: CA1, new key
	mig      testLeaf // ca-migration: CA2
	next     testLeaf // key-prepublish: CA1, the next key
	expired  testLeaf // CA1, expired before testBase
	other    testLeaf // CA1, names another host
	nextSPKI []byte

	// A second host, testHost2, on its own server with its own keys (a
	// CNAME'd TLSA owner shared with testHost).
	oldB, renewB, migB, nextB testLeaf
	// One server for both names (one deploy target): the certificates
	// name testHost and testHost2.
	oldAB, renewAB, migAB, nextAB testLeaf
}

var (
	pkiOnce sync.Once
	pki     *testPKI
	pkiErr  error
)

func getPKI(tb testing.TB) *testPKI {
	tb.Helper()
	pkiOnce.Do(func() { pki, pkiErr = buildPKI() })
	if pkiErr != nil {
		tb.Fatal(pkiErr)
	}
	return pki
}

var serial int64

func buildPKI() (*testPKI, error) {
	nb, na := testBase.AddDate(0, -1, 0), testBase.AddDate(2, 0, 0)
	ca1, err := newTestCA("Test CA One", nb, na)
	if err != nil {
		return nil, err
	}
	ca2, err := newTestCA("Test CA Two", nb, na)
	if err != nil {
		return nil, err
	}
	p := &testPKI{ca1: ca1, ca2: ca2}
	mk := func(ca *testCA, cn string, names []string, nb, na time.Time) (testLeaf, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return testLeaf{}, err
		}
		return ca.leaf(key, cn, names, nb, na)
	}
	if p.old, err = mk(ca1, "old", []string{testHost}, nb, na); err != nil {
		return nil, err
	}
	if p.renew, err = mk(ca1, "renew", []string{testHost}, nb, na); err != nil {
		return nil, err
	}
	if p.mig, err = mk(ca2, "migrated", []string{testHost}, nb, na); err != nil {
		return nil, err
	}
	if p.next, err = mk(ca1, "next", []string{testHost}, nb, na); err != nil {
		return nil, err
	}
	if p.expired, err = mk(ca1, "expired", []string{testHost}, nb.AddDate(-1, 0, 0), nb.Add(time.Hour)); err != nil {
		return nil, err
	}
	if p.other, err = mk(ca1, "other", []string{"other.example.org"}, nb, na); err != nil {
		return nil, err
	}
	p.nextSPKI = p.next.cert.RawSubjectPublicKeyInfo
	b, ab := []string{testHost2}, []string{testHost, testHost2}
	for _, l := range []struct {
		to    *testLeaf
		ca    *testCA
		cn    string
		names []string
	}{
		{&p.oldB, ca1, "old B", b}, {&p.renewB, ca1, "renew B", b}, {&p.migB, ca2, "migrated B", b}, {&p.nextB, ca1, "next B", b},
		{&p.oldAB, ca1, "old AB", ab}, {&p.renewAB, ca1, "renew AB", ab}, {&p.migAB, ca2, "migrated AB", ab}, {&p.nextAB, ca1, "next AB", ab},
	} {
		if *l.to, err = mk(l.ca, l.cn, l.names, nb, na); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func newTestCA(name string, nb, na time.Time) (*testCA, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial++
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name + " Root"},
		NotBefore: nb.AddDate(-1, 0, 0), NotAfter: na.AddDate(1, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, err
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial++
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name + " Intermediate"},
		NotBefore: nb, NotAfter: na,
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign,
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, &interKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	inter, err := x509.ParseCertificate(interDER)
	if err != nil {
		return nil, err
	}
	return &testCA{root: root, inter: inter, interKey: interKey}, nil
}

func (ca *testCA) leaf(key *ecdsa.PrivateKey, cn string, names []string, nb, na time.Time) (testLeaf, error) {
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		DNSNames: names, NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, &key.PublicKey, ca.interKey)
	if err != nil {
		return testLeaf{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return testLeaf{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return testLeaf{}, err
	}
	chainPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.inter.Raw})...)
	return testLeaf{
		cert: cert, chain: []*x509.Certificate{cert, ca.inter}, key: key,
		mat: Material{ChainPEM: chainPEM, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
	}, nil
}

func ee311(c *x509.Certificate) tlsa.Record { return spki311(c.RawSubjectPublicKeyInfo) }

func spki311(spki []byte) tlsa.Record {
	r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindPublicKey, SPKI: spki}, tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	if err != nil {
		panic(err)
	}
	return r
}

func ta211(c *x509.Certificate) tlsa.Record {
	r, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindCertificate, Certificate: c, SPKI: c.RawSubjectPublicKeyInfo}, tlsa.DANETA, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	if err != nil {
		panic(err)
	}
	return r
}

func texts(rs ...tlsa.Record) []string { return recordTexts(rs) }

// rrKey is a canonical text for an RRset (sorted records).
func rrKey(rs []tlsa.Record) string {
	ss := recordTexts(rs)
	sort.Strings(ss)
	return "{" + strings.Join(ss, ", ") + "}"
}

// ---------------------------------------------------------------------------
// The simulated world: provider + authoritative servers with propagation
// delays, resolver caches, and the mail server's addresses.

type dnsChange struct {
	at time.Time
	rr RRSet // as stored and served (TTL after any provider rewrite)
	// asked is the TTL the writer asked for (0: as stored).
	asked uint32
	// external marks a write by someone else than tlsactl.
	external bool
}

// freeze is an interval during which a secondary applies no change: a
// lagging secondary. open means it still lags.
type freeze struct {
	from, to time.Time
	open     bool
}

// fakeDNS models a DNS provider and its authoritative servers. Set changes
// the provider at once; server i serves a change from at+delay[i] (or, when
// it lags then, from when it stops lagging). WaitServed moves the fake clock
// to when every server serves the change.
type fakeDNS struct {
	w       *world
	owner   string // the TLSA owner name; testOwner when empty
	negTTL  uint32
	changes []dnsChange // [0]: the RRset before the test
	delays  []time.Duration
	freezes [][]freeze

	// minTTL: the provider stores and serves any lower TTL as minTTL
	// (deSEC: 3600). echoTTL: its API then still reports the TTL asked
	// for, while the servers serve minTTL.
	minTTL  uint32
	echoTTL bool
	// res are the resolvers that cache this owner's RRset: senders', and
	// (ask >= 0) the one tlsactl asks, whose answer Observe reports.
	res   []resolver
	ask   int
	askNS int

	// Faults: the next n calls fail. failSetApplied: the change is made
	// but the provider reports an error (a timeout after commit).
	failCurrent, failSet, failSetApplied, failWait int

	sets, waits int
	// rewrites counts TTLs the provider raised; observed counts Observe
	// calls that read the provider.
	rewrites, observed int

	// conditional: the provider takes conditional changes (RFC 2136
	// prerequisites): the engine's targets for this owner are
	// ConditionalDNS. conflicts counts the changes it refused.
	conditional bool
	conflicts   int
}

const testOwner = "_25._tcp." + testHost + "."

func (d *fakeDNS) Owner() string {
	if d.owner != "" {
		return d.owner
	}
	return testOwner
}

// stored is the TTL the provider keeps for an RRset written with ttl.
func (d *fakeDNS) stored(rs []tlsa.Record, ttl uint32) uint32 {
	if d.minTTL > 0 && len(rs) > 0 && ttl < d.minTTL {
		d.rewrites++
		return d.minTTL
	}
	return ttl
}

// apiTTL is the TTL the provider's API reports for change c.
func (d *fakeDNS) apiTTL(c dnsChange) uint32 {
	if d.echoTTL && c.asked != 0 {
		return c.asked
	}
	return c.rr.TTL
}

// write appends a change to the provider's RRset (tlsactl's or not).
func (d *fakeDNS) write(rs []tlsa.Record, ttl uint32, external bool) {
	d.changes = append(d.changes, dnsChange{at: d.w.clock.Now(), rr: RRSet{Records: slices.Clone(rs), TTL: d.stored(rs, ttl)}, asked: ttl, external: external})
}

// Observe reports the provider's RRset and what every server serves now;
// the provider read fails while failCurrent is set.
func (d *fakeDNS) Observe(ctx context.Context) ([]Sighting, error) {
	var out []Sighting
	if d.failCurrent > 0 {
		d.failCurrent--
		out = append(out, Sighting{Kind: SourceProvider, Source: "provider", Err: errors.New("provider API: 503 service unavailable")})
	} else {
		c := d.changes[len(d.changes)-1]
		out = append(out, Sighting{Kind: SourceProvider, Source: "provider", Records: slices.Clone(c.rr.Records), TTL: d.apiTTL(c)})
		d.observed++
	}
	now := d.w.clock.Now()
	for i := range d.delays {
		rr := d.changes[d.servedIndex(i, now)].rr
		ttl := rr.TTL
		if len(rr.Records) == 0 {
			ttl = d.negTTL
		}
		// The zone's serial is the change's index: servers apply changes
		// in order.
		out = append(out, Sighting{Kind: SourceAuthoritative, Source: fmt.Sprintf("auth ns%d", i+1), Records: slices.Clone(rr.Records), TTL: ttl,
			Serial: uint32(1000 + d.servedIndex(i, now)), SerialOK: true})
	}
	if d.ask >= 0 && d.ask < len(d.res) {
		// tlsactl's validating resolver answers from its cache, fetching
		// from the next server when its copy ran out.
		d.lookup(d.ask, d.askNS%len(d.delays))
		d.askNS++
		c := d.res[d.ask]
		left := uint32(c.until.Sub(now) / time.Second)
		out = append(out, Sighting{Kind: SourceResolver, Source: "resolver 127.0.0.1:53", Records: slices.Clone(c.rr.Records), TTL: left})
	}
	return out, nil
}

func (d *fakeDNS) Current(ctx context.Context) (RRSet, uint32, error) {
	if d.failCurrent > 0 {
		d.failCurrent--
		return RRSet{}, 0, errors.New("provider API: 503 service unavailable")
	}
	c := d.changes[len(d.changes)-1]
	return RRSet{Records: slices.Clone(c.rr.Records), TTL: d.apiTTL(c)}, d.negTTL, nil
}

func (d *fakeDNS) Set(ctx context.Context, want RRSet) error {
	if d.failSet > 0 {
		d.failSet--
		return errors.New("provider API: 500 internal error")
	}
	d.sets++
	d.write(want.Records, want.TTL, false)
	d.w.logf("  dns %s: provider set %s ttl %d (stored %d)", d.Owner(), rrKey(want.Records), want.TTL, d.provider().TTL)
	if d.failSetApplied > 0 {
		d.failSetApplied--
		return errors.New("provider API: timeout (the change was made)")
	}
	return nil
}

// SetIf is Set made only if the provider still holds expect's records.
func (d *fakeDNS) SetIf(ctx context.Context, expect, want RRSet) error {
	if cur := d.changes[len(d.changes)-1].rr.Records; !sameSet(cur, expect.Records) {
		d.conflicts++
		d.w.logf("  dns %s: conditional set of %s REFUSED: the provider holds %s, not %s", d.Owner(), rrKey(want.Records), rrKey(cur), rrKey(expect.Records))
		return fmt.Errorf("%w: the provider holds %s", ErrRRsetChanged, rrKey(cur))
	}
	return d.Set(ctx, want)
}

func (d *fakeDNS) WaitServed(ctx context.Context, want RRSet) error {
	d.waits++
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.failWait > 0 {
		d.failWait--
		return errors.New("ns2.example.net: SERVFAIL")
	}
	last := len(d.changes) - 1
	if !sameSet(d.changes[last].rr.Records, want.Records) {
		return fmt.Errorf("the provider holds %s, not %s", rrKey(d.changes[last].rr.Records), rrKey(want.Records))
	}
	target := d.w.clock.Now()
	for i := range d.delays {
		at, ok := d.applyTime(i, last)
		if !ok {
			return fmt.Errorf("ns%d still serves %s (lagging secondary)", i+1, rrKey(d.changes[d.servedIndex(i, target)].rr.Records))
		}
		if at.After(target) {
			target = at
		}
	}
	d.w.advanceTo(target)
	return nil
}

// applyTime is when server i starts serving change k; ok is false while a
// lag holds it back indefinitely.
func (d *fakeDNS) applyTime(i, k int) (time.Time, bool) {
	if k == 0 {
		return time.Time{}, true
	}
	t := d.changes[k].at.Add(d.delays[i])
	for _, f := range d.freezes[i] {
		if !t.After(f.from) {
			break // applied before the lag began
		}
		if f.open {
			return time.Time{}, false
		}
		if t.Before(f.to) {
			t = f.to
		}
	}
	return t, true
}

// servedIndex is the change server i serves at t.
func (d *fakeDNS) servedIndex(i int, t time.Time) int {
	for k := len(d.changes) - 1; k > 0; k-- {
		if at, ok := d.applyTime(i, k); ok && !at.After(t) {
			return k
		}
	}
	return 0
}

// mayBeCached returns every RRset some resolver may hold at now: each one an
// authoritative server served at some instant t' with t'+TTL > now.
func (d *fakeDNS) mayBeCached(now time.Time) []RRSet {
	var out []RRSet
	for i := range d.delays {
		for k := range d.changes {
			at, ok := d.applyTime(i, k)
			if !ok || at.After(now) {
				break
			}
			rr := d.changes[k].rr
			if k+1 < len(d.changes) {
				if end, ok := d.applyTime(i, k+1); ok && !end.After(now) {
					if !end.After(at) {
						continue // replaced at the instant it arrived
					}
					if !now.Before(end.Add(time.Duration(rr.TTL) * time.Second)) {
						continue
					}
				}
			}
			out = append(out, rr)
		}
	}
	return out
}

// staleReplay reports whether some server served (by now) a change with
// records rs only after the provider had gone on to a change whose records
// are those of the change before it: an RRset put back, while that server
// still served the content from before. Observations cannot tell that
// server's answer from the put-back RRset (no SOA serials), so a violation
// of such an RRset is tagged (see TestLedgerRevertBehindLaggingSecondary).
func (d *fakeDNS) staleReplay(rs []tlsa.Record, now time.Time) bool {
	for i := range d.delays {
		for k := 1; k < len(d.changes); k++ {
			if !sameSet(d.changes[k].rr.Records, rs) {
				continue
			}
			a, ok := d.applyTime(i, k)
			if !ok || a.After(now) {
				continue
			}
			for m := k + 1; m < len(d.changes) && d.changes[m].at.Before(a); m++ {
				if sameSet(d.changes[m].rr.Records, d.changes[k-1].rr.Records) {
					return true
				}
			}
		}
	}
	return false
}

// setLag starts or ends a lag of server i at the current time.
func (d *fakeDNS) setLag(i int, on bool) {
	now := d.w.clock.Now()
	fs := d.freezes[i]
	lagging := len(fs) > 0 && fs[len(fs)-1].open
	switch {
	case on && !lagging:
		d.freezes[i] = append(fs, freeze{from: now, open: true})
	case !on && lagging:
		fs[len(fs)-1].open, fs[len(fs)-1].to = false, now
		d.w.check("lag ends")
	}
}

func (d *fakeDNS) provider() RRSet { return d.changes[len(d.changes)-1].rr }

// resolver is one validating resolver's cache of the TLSA RRset.
type resolver struct {
	has   bool
	rr    RRSet
	until time.Time
}

// fakeDeployer models the mail server: the chain each address serves.
type fakeDeployer struct {
	w     *world
	addrs [][]*x509.Certificate

	// Faults: the next n Deploy calls fail (nothing changes); the next
	// stale Deploy calls report success while address staleAddr (every
	// address when -1) keeps serving the old chain.
	failDeploy, failServed, stale int
	staleAddr                     int

	deploys int
}

func (f *fakeDeployer) Served(ctx context.Context) ([][]*x509.Certificate, error) {
	if f.failServed > 0 {
		f.failServed--
		return nil, errors.New("probe: connection refused")
	}
	out := make([][]*x509.Certificate, len(f.addrs))
	for i, c := range f.addrs {
		out[i] = slices.Clone(c)
	}
	return out, nil
}

func (f *fakeDeployer) Snapshot(ctx context.Context) (Material, error) {
	var b []byte
	for _, c := range f.addrs[0] {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	// A server's files hold a key too (the fake has none to read): real
	// stores refuse to stage a chain without one.
	return Material{ChainPEM: b, KeyPEM: []byte("-----BEGIN PRIVATE KEY-----\n(the fake deployer's key)\n-----END PRIVATE KEY-----\n")}, nil
}

func (f *fakeDeployer) Deploy(ctx context.Context, m Material, restore Material) error {
	if f.failDeploy > 0 {
		f.failDeploy--
		return errors.New("reload: postfix exited 1 (files restored)")
	}
	ms, err := tlsa.ParseMaterial("chain", m.ChainPEM)
	if err != nil {
		return err
	}
	chain := tlsa.Certificates(ms)
	f.deploys++
	stale := f.stale > 0
	if stale {
		f.stale--
	}
	for i := range f.addrs {
		if stale && (f.staleAddr < 0 || i == f.staleAddr) {
			continue
		}
		f.addrs[i] = chain
	}
	f.w.logf("  deployer: deployed %q (stale=%v)", chain[0].Subject.CommonName, stale)
	f.w.check("deploy")
	return nil
}

// world ties the fakes together and checks the safety invariant of the
// simulation (not the engine's model of it): for every RRset any resolver
// holds or may hold, and every chain any address serves, a usable record
// matches. A world has one or more TLSA owners (zones: each a fakeDNS with
// its servers and resolvers) and one or more hosts, each reading one owner
// (several when a CNAME points them at one name) and served by one
// deployer (several hosts share one on a shared deploy target).
type world struct {
	tb    testing.TB
	clock *fakeClock
	dns   *fakeDNS      // the main owner (testOwner)
	dep   *fakeDeployer // the main host's server
	zones []*fakeDNS
	hosts []*simHost

	trace      []string
	violations []string
	memo       map[string]bool
	checks     int
}

// simHost is one MX host of the world: the owner its senders query and the
// server that answers for its name.
type simHost struct {
	name  string // without the final dot
	dns   *fakeDNS
	dep   *fakeDeployer
	peers []string // the other hosts on its deploy target
}

type worldOpts struct {
	initial []tlsa.Record
	initTTL uint32
	negTTL  uint32
	delays  []time.Duration // per authoritative server
	addrs   int
	resolv  int
	minTTL  uint32 // the provider raises lower TTLs to this
	echoTTL bool   // … and its API reports the TTL asked for
	ask     bool   // Observe reports the answer of one more resolver, tlsactl's
}

// emptyWorld is a world without owners or hosts: callers add them
// (addZone, addDeployer, addHost) and set dns and dep to the main ones.
func emptyWorld(tb testing.TB) *world {
	return &world{tb: tb, clock: &fakeClock{t: testBase}, memo: map[string]bool{}}
}

func newWorld(tb testing.TB, o worldOpts) *world {
	p := getPKI(tb)
	w := emptyWorld(tb)
	if o.addrs == 0 {
		o.addrs = 2
	}
	w.dns = w.addZone(testOwner, o)
	w.dep = w.addDeployer(p.old.chain, o.addrs)
	w.addHost(testHost, w.dns, w.dep)
	return w
}

// addZone adds a TLSA owner holding o.initial (TTL o.initTTL), served by
// len(o.delays) servers and cached by o.resolv senders' resolvers (plus
// tlsactl's when o.ask), each of which fetched it just now.
func (w *world) addZone(owner string, o worldOpts) *fakeDNS {
	if len(o.delays) == 0 {
		o.delays = []time.Duration{0, 30 * time.Second, 90 * time.Second}
	}
	if o.resolv == 0 {
		o.resolv = 3
	}
	d := &fakeDNS{w: w, owner: owner, negTTL: o.negTTL, delays: o.delays, freezes: make([][]freeze, len(o.delays)),
		minTTL: o.minTTL, echoTTL: o.echoTTL, ask: -1}
	d.changes = []dnsChange{{rr: RRSet{Records: slices.Clone(o.initial), TTL: d.stored(o.initial, o.initTTL)}, asked: o.initTTL}}
	d.res = make([]resolver, o.resolv)
	if o.ask {
		d.ask = len(d.res)
		d.res = append(d.res, resolver{})
	}
	for i := range d.res {
		d.lookup(i, i%len(d.delays))
	}
	w.zones = append(w.zones, d)
	return d
}

// addDeployer adds a server whose addrs addresses serve chain.
func (w *world) addDeployer(chain []*x509.Certificate, addrs int) *fakeDeployer {
	dep := &fakeDeployer{w: w}
	for range addrs {
		dep.addrs = append(dep.addrs, chain)
	}
	return dep
}

// addHost adds a host whose senders query d and whose name dep serves.
func (w *world) addHost(name string, d *fakeDNS, dep *fakeDeployer, peers ...string) *simHost {
	h := &simHost{name: name, dns: d, dep: dep, peers: peers}
	w.hosts = append(w.hosts, h)
	return h
}

// host returns the host named name (with or without the final dot), or nil.
func (w *world) host(name string) *simHost {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	for _, h := range w.hosts {
		if h.name == name {
			return h
		}
	}
	return nil
}

func (w *world) now() time.Time { return w.clock.Now() }

func (w *world) logf(format string, args ...any) {
	w.trace = append(w.trace, fmt.Sprintf("%s ", w.now().Sub(testBase))+fmt.Sprintf(format, args...))
}

// advanceTo moves the clock to t, stopping at every instant a server
// starts serving a change to check the invariant there.
func (w *world) advanceTo(t time.Time) {
	now := w.now()
	if !t.After(now) {
		return
	}
	var stops []time.Time
	for _, d := range w.zones {
		for i := range d.delays {
			for k := 1; k < len(d.changes); k++ {
				if at, ok := d.applyTime(i, k); ok && at.After(now) && at.Before(t) {
					stops = append(stops, at)
				}
			}
		}
	}
	slices.SortFunc(stops, func(a, b time.Time) int { return a.Compare(b) })
	for _, s := range stops {
		w.clock.set(s)
		w.check("propagation")
	}
	w.clock.set(t)
	w.check("clock")
}

func (w *world) advance(d time.Duration) { w.advanceTo(w.now().Add(d)) }

// lookup makes resolver r of the main owner query server s.
func (w *world) lookup(r, s int) { w.dns.lookup(r, s) }

// lookup makes resolver r query server s (if its cache ran out).
func (d *fakeDNS) lookup(r, s int) {
	now := d.w.now()
	c := &d.res[r]
	if c.has && now.Before(c.until) {
		return
	}
	rr := d.changes[d.servedIndex(s, now)].rr
	ttl := rr.TTL
	if len(rr.Records) == 0 {
		ttl = d.negTTL
	}
	*c = resolver{has: true, rr: RRSet{Records: slices.Clone(rr.Records), TTL: ttl}, until: now.Add(time.Duration(ttl) * time.Second)}
	d.w.logf("  resolver %d of %s cached %s from ns%d for %ds", r, d.Owner(), rrKey(rr.Records), s+1, ttl)
}

// check records a violation of the world invariant at the current time:
// for every owner, every RRset a resolver may hold (every one a server
// served within its TTL as served, and every resolver's copy) must match
// every chain served at every address of every host whose senders query
// that owner, with that host's name.
func (w *world) check(where string) {
	w.checks++
	now := w.now()
	if now.Before(testBase.AddDate(0, -1, 0)) || now.After(testBase.AddDate(1, 0, 0)) {
		w.violations = append(w.violations, fmt.Sprintf("%s: the fake clock %s left the certificates' validity", where, now))
		return
	}
	for _, d := range w.zones {
		sets := d.mayBeCached(now)
		for i, r := range d.res {
			if r.has && now.Before(r.until) {
				sets = append(sets, r.rr)
			} else {
				d.res[i].has = false
			}
		}
		seen := map[string]bool{}
		for _, rr := range sets {
			if len(rr.Records) == 0 {
				continue // no TLSA: senders do not use DANE
			}
			key := rawKey(rr.Records)
			if seen[key] {
				continue
			}
			seen[key] = true
			for _, h := range w.hosts {
				if h.dns != d {
					continue
				}
				for a, chain := range h.dep.addrs {
					if !w.matches(rr.Records, key, chain, h.name) {
						tag := ""
						if d.staleReplay(rr.Records, now) {
							tag = " [stale replay]"
						}
						w.violations = append(w.violations, fmt.Sprintf("%s at +%s: address %d of %s serves %q, but the RRset %s of %s, which a resolver may hold, matches no record of it%s",
							where, now.Sub(testBase), a, h.name, chain[0].Subject.CommonName, rrKey(rr.Records), d.Owner(), tag))
					}
				}
			}
		}
	}
}

// matchMemo caches tlsa.Match results of the world checks across worlds:
// every test certificate is valid for the whole simulated time, so a
// result depends only on the records, the chain and the name.
var matchMemo sync.Map

// matches reports whether chain, served for name, matches a record of rs
// (whose rawKey is key).
func (w *world) matches(rs []tlsa.Record, key string, chain []*x509.Certificate, name string) bool {
	ck := key + "|" + chainKey(chain) + "|" + name
	if ok, known := w.memo[ck]; known {
		return ok
	}
	if v, known := matchMemo.Load(ck); known {
		w.memo[ck] = v.(bool)
		return v.(bool)
	}
	ok := tlsa.Match(chain, rs, tlsa.MatchOptions{Names: []string{name}, Now: w.now()}).Matched()
	w.memo[ck] = ok
	matchMemo.Store(ck, ok)
	return ok
}

// rawKey is a cheap canonical key of an RRset (sorted wire RDATA).
func rawKey(rs []tlsa.Record) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = string([]byte{byte(r.Usage), byte(r.Selector), byte(r.MatchingType)}) + string(r.Data)
	}
	sort.Strings(parts)
	parts = slices.Compact(parts)
	return strings.Join(parts, "\x00")
}

// chainKey names a chain by its certificates' serial numbers (unique in
// the test PKI) and their signatures' first bytes.
func chainKey(chain []*x509.Certificate) string {
	var b strings.Builder
	for _, c := range chain {
		b.WriteString(c.SerialNumber.String())
		b.WriteByte(':')
		b.Write(c.Signature[:min(8, len(c.Signature))])
		b.WriteByte(';')
	}
	return b.String()
}

// servesOnly reports whether every address serves leaf.
func (w *world) servesOnly(leaf *x509.Certificate) bool {
	return allServe(w.dep.addrs, leaf)
}

// ---------------------------------------------------------------------------
// Crashes: every call boundary may kill the "process".

// crashSignal is the panic value of a simulated crash.
type crashSignal struct {
	point string
	n     int
}

// crasher counts call boundaries, checks the world invariant at each, and
// panics at boundary number at (1-based; 0: never).
type crasher struct {
	w      *world
	n, at  int
	points []string
	// beforeObserve, when set, runs at every DNS.Observe boundary (after
	// the crash point, before the observation): other actors act there.
	// afterObserve is told whether the observation read the provider.
	beforeObserve func(d *fakeDNS)
	afterObserve  func(d *fakeDNS, providerRead bool)
	// beforeSet, when set, runs at every DNS.Set boundary (after the
	// crash point, before the provider changes or, when conditional,
	// compares): other actors act between the engine's observation and
	// its change there.
	beforeSet func(d *fakeDNS)
}

func (c *crasher) hit(point string) {
	c.n++
	c.points = append(c.points, point)
	c.w.check(point)
	if c.at > 0 && c.n == c.at {
		c.at = 0
		c.w.logf("  CRASH at %s (boundary %d)", point, c.n)
		panic(crashSignal{point: point, n: c.n})
	}
}

type crashDNS struct {
	inner DNS
	fd    *fakeDNS // inner, when it is one
	c     *crasher
}

func (d crashDNS) Current(ctx context.Context) (RRSet, uint32, error) { return d.inner.Current(ctx) }

func (d crashDNS) Owner() string { return d.inner.Owner() }

func (d crashDNS) Observe(ctx context.Context) ([]Sighting, error) {
	d.c.hit("before DNS.Observe")
	if d.c.beforeObserve != nil && d.fd != nil {
		d.c.beforeObserve(d.fd)
		d.c.w.check("other actors at DNS.Observe")
	}
	obs, err := d.inner.Observe(ctx)
	if d.c.afterObserve != nil && d.fd != nil {
		read := err == nil
		for _, s := range obs {
			if s.Kind == SourceProvider && s.Err != nil {
				read = false
			}
		}
		d.c.afterObserve(d.fd, read)
	}
	return obs, err
}

func (d crashDNS) Set(ctx context.Context, want RRSet) error {
	d.c.hit("before DNS.Set")
	if d.c.beforeSet != nil && d.fd != nil {
		d.c.beforeSet(d.fd)
		d.c.w.check("other actors at DNS.Set")
	}
	err := d.inner.Set(ctx, want)
	d.c.hit("after DNS.Set")
	return err
}

// crashCondDNS is crashDNS of a conditional provider.
type crashCondDNS struct{ crashDNS }

func (d crashCondDNS) SetIf(ctx context.Context, expect, want RRSet) error {
	d.c.hit("before DNS.Set")
	if d.c.beforeSet != nil {
		d.c.beforeSet(d.fd)
		d.c.w.check("other actors at DNS.Set")
	}
	err := d.fd.SetIf(ctx, expect, want)
	d.c.hit("after DNS.Set")
	return err
}

func (d crashDNS) WaitServed(ctx context.Context, want RRSet) error {
	d.c.hit("before DNS.WaitServed")
	err := d.inner.WaitServed(ctx, want)
	d.c.hit("after DNS.WaitServed")
	return err
}

type crashDeployer struct {
	inner Deployer
	c     *crasher
}

func (d crashDeployer) Served(ctx context.Context) ([][]*x509.Certificate, error) {
	return d.inner.Served(ctx)
}

func (d crashDeployer) Snapshot(ctx context.Context) (Material, error) { return d.inner.Snapshot(ctx) }

func (d crashDeployer) Deploy(ctx context.Context, m Material, restore Material) error {
	d.c.hit("before Deploy")
	err := d.inner.Deploy(ctx, m, restore)
	d.c.hit("after Deploy")
	return err
}

type crashStore struct {
	Store
	c *crasher
}

func (s crashStore) Save(st *State) error {
	s.c.hit("before Store.Save")
	err := s.Store.Save(st)
	s.c.hit("after Store.Save")
	return err
}

// crashLeaseStore is crashStore of a store whose locks are leases.
type crashLeaseStore struct {
	crashStore
	l Leaser
}

func (s crashLeaseStore) LockLease(ctx context.Context, kind, name string) (context.Context, func() error, error) {
	return s.l.LockLease(ctx, kind, name)
}

// testStore is a Store with the hooks the property and crash tests use:
// memStore, or a real store wrapped by newHookStore.
type testStore interface {
	Store
	armSaveFault()           // the next Save fails without writing
	clearFaults()            // no armed Save fault
	violationList() []string // append-only breaches seen by Save
	state(host string) *State
	seed(owner string, rs RRSet, negTTL uint32, at time.Time)
}

// hookStore gives a real store (FileStore, PGStore) memStore's hooks: an
// armed Save fault and the append-only check of every Save.
type hookStore struct {
	Store
	mu         sync.Mutex
	failSave   int
	violations []string
}

// hookLeaseStore is a hookStore of a store whose locks are leases.
type hookLeaseStore struct {
	*hookStore
	l Leaser
}

func (h hookLeaseStore) LockLease(ctx context.Context, kind, name string) (context.Context, func() error, error) {
	return h.l.LockLease(ctx, kind, name)
}

func newHookStore(s Store) testStore {
	h := &hookStore{Store: s}
	if l, ok := s.(Leaser); ok {
		return hookLeaseStore{hookStore: h, l: l}
	}
	return h
}

func (h *hookStore) Save(st *State) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failSave > 0 {
		h.failSave--
		return errors.New("hookstore: disk full")
	}
	if prev, err := h.Store.Load(st.Host); err == nil && prev.Created.Equal(st.Created) {
		h.violations = append(h.violations, appendOnly(prev, st)...)
	}
	return h.Store.Save(st)
}

func (h *hookStore) armSaveFault() {
	h.mu.Lock()
	h.failSave = 1
	h.mu.Unlock()
}

func (h *hookStore) clearFaults() {
	h.mu.Lock()
	h.failSave = 0
	h.mu.Unlock()
}

func (h *hookStore) violationList() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.violations)
}

func (h *hookStore) state(host string) *State {
	st, err := h.Store.Load(host)
	if err != nil {
		return nil
	}
	return st
}

func (h *hookStore) seed(owner string, rs RRSet, negTTL uint32, at time.Time) {
	ttl := rs.TTL
	if len(rs.Records) == 0 {
		ttl = negTTL
	}
	_, _ = h.Store.UpdateLedger(context.Background(), owner, func(l *Ledger) error {
		l.Record([]Sighting{{Kind: SourceAuthoritative, Source: "auth seed", Records: rs.Records, TTL: ttl}}, negTTL, at)
		return nil
	})
}

// engine returns a fresh engine ("process") on the world and store; every
// call boundary goes through c. Every host of the world is a target; its
// deploy-target peers and the hosts sharing its owner come with it.
func (w *world) engine(store Store, c *crasher) *Engine {
	if c == nil {
		c = &crasher{w: w}
	}
	wrap := func(h *simHost) (DNS, Deployer) {
		d := crashDNS{inner: h.dns, fd: h.dns, c: c}
		if h.dns.conditional {
			return crashCondDNS{d}, crashDeployer{inner: h.dep, c: c}
		}
		return d, crashDeployer{inner: h.dep, c: c}
	}
	var es Store = crashStore{Store: store, c: c}
	if l, ok := store.(Leaser); ok { // a PGStore: the engine works with its leases
		es = crashLeaseStore{crashStore: crashStore{Store: store, c: c}, l: l}
	}
	return &Engine{
		Store: es,
		Clock: w.clock,
		Target: func(host string) (Target, error) {
			h := w.host(host)
			if h == nil || !strings.HasSuffix(host, ".") {
				return Target{}, fmt.Errorf("unknown host %q", host)
			}
			var t Target
			t.DNS, t.Deployer = wrap(h)
			for _, name := range h.peers {
				ph := w.host(name)
				pd, pdep := wrap(ph)
				t.Peers = append(t.Peers, Peer{Host: ph.name + ".", DNS: pd, Deployer: pdep})
			}
			// Hosts whose senders query the same owner (CNAMEs to one
			// name) share the RRset.
			for _, o := range w.hosts {
				if o != h && o.dns == h.dns {
					od, odep := wrap(o)
					t.Sharing = append(t.Sharing, Peer{Host: o.name + ".", DNS: od, Deployer: odep})
				}
			}
			return t, nil
		},
		Failpoint: c.hit,
	}
}

// catchCrash runs f and reports the simulated crash it ended with, if any.
func catchCrash(f func()) (crashed *crashSignal) {
	defer func() {
		if r := recover(); r != nil {
			cs, ok := r.(crashSignal)
			if !ok {
				panic(r)
			}
			crashed = &cs
		}
	}()
	f()
	return nil
}

// ---------------------------------------------------------------------------
// Scenarios: one per plan, plus a ca-migration of a host without TLSA.

type scenario struct {
	name     string
	plan     Plan
	initial  []tlsa.Record
	initTTL  uint32
	negTTL   uint32
	newLeaf  testLeaf
	final    []tlsa.Record // the provider's RRset when done
	startReq func(p *testPKI) StartRequest
}

func scenarios(p *testPKI) []scenario {
	return []scenario{
		{
			name: "renew", plan: PlanRenew,
			initial: []tlsa.Record{ee311(p.old.cert), ta211(p.ca1.inter)}, initTTL: 3600, negTTL: 300,
			newLeaf: p.renew, final: []tlsa.Record{ta211(p.ca1.inter), ee311(p.renew.cert)},
			startReq: func(p *testPKI) StartRequest { return StartRequest{Host: testHost, Plan: PlanRenew} },
		},
		{
			name: "ca-migration", plan: PlanCAMigration,
			initial: []tlsa.Record{ee311(p.old.cert), ta211(p.ca1.inter)}, initTTL: 3600, negTTL: 300,
			newLeaf: p.mig, final: []tlsa.Record{ee311(p.mig.cert), ta211(p.ca2.inter)},
			startReq: func(p *testPKI) StartRequest {
				return StartRequest{Host: testHost, Plan: PlanCAMigration, NewCA: p.ca2.inter}
			},
		},
		{
			name: "key-prepublish", plan: PlanKeyPrepublish,
			initial: []tlsa.Record{ee311(p.old.cert)}, initTTL: 3600, negTTL: 300,
			newLeaf: p.next, final: []tlsa.Record{ee311(p.next.cert)},
			startReq: func(p *testPKI) StartRequest {
				return StartRequest{Host: testHost, Plan: PlanKeyPrepublish, NextKeySPKI: p.nextSPKI}
			},
		},
		{
			// No TLSA at the start: the first 2 1 1 is the current CA's, and
			// the wait covers the negative-caching TTL.
			name: "ca-migration-from-none", plan: PlanCAMigration,
			initial: nil, initTTL: 0, negTTL: 1800,
			newLeaf: p.renew, final: []tlsa.Record{ta211(p.ca1.inter), ee311(p.renew.cert)},
			startReq: func(p *testPKI) StartRequest {
				return StartRequest{Host: testHost, Plan: PlanCAMigration, NewCA: p.ca1.inter}
			},
		},
	}
}

func (sc scenario) world(tb testing.TB) *world {
	return newWorld(tb, worldOpts{initial: sc.initial, initTTL: sc.initTTL, negTTL: sc.negTTL})
}

// start starts sc's rollover; withMaterial stages the new certificate now.
func (sc scenario) start(tb testing.TB, w *world, store Store, withMaterial bool, ttl uint32, margin time.Duration) *State {
	tb.Helper()
	req := sc.startReq(getPKI(tb))
	req.TTL, req.Margin = ttl, margin
	if ms, ok := store.(testStore); ok {
		// A check timer has watched the name for two days: ages are known.
		ms.seed(testOwner, w.dns.changes[0].rr, w.dns.negTTL, testBase.Add(-48*time.Hour))
	}
	if withMaterial || sc.plan == PlanRenew {
		m := sc.newLeaf.mat
		req.New = &m
	}
	st, err := w.engine(store, nil).Start(context.Background(), req)
	if err != nil {
		tb.Fatalf("start %s: %v", sc.name, err)
	}
	return st
}

// startWith starts sc's renew-style rollover (material at start) with e.
func (sc scenario) startWith(tb testing.TB, w *world, store *memStore, e *Engine) *State {
	tb.Helper()
	req := sc.startReq(getPKI(tb))
	m := sc.newLeaf.mat
	req.New = &m
	store.seed(testOwner, w.dns.changes[0].rr, w.dns.negTTL, testBase.Add(-48*time.Hour))
	st, err := e.Start(context.Background(), req)
	if err != nil {
		tb.Fatalf("start %s: %v", sc.name, err)
	}
	return st
}

// runToEnd advances the rollover with e until it is no longer active,
// moving the clock to NotBefore whenever a step waits for time.
func (w *world) runToEnd(tb testing.TB, e *Engine) *State {
	tb.Helper()
	for range 20 {
		out, err := e.Advance(context.Background(), testHost)
		if err != nil {
			tb.Fatalf("advance: %v", err)
		}
		if out.State.Status != StatusActive {
			return out.State
		}
		if !out.Waiting || !w.now().Before(out.State.NotBefore) {
			tb.Fatalf("advance stopped without a time to wait for: %s", out.Reason)
		}
		w.advanceTo(out.State.NotBefore)
	}
	tb.Fatal("the rollover did not finish in 20 runs")
	return nil
}

// assertClean fails the test on world-invariant or append-only violations.
func assertClean(tb testing.TB, w *world, store testStore) {
	tb.Helper()
	if len(w.violations) > 0 {
		tb.Errorf("world invariant broken:\n  %s\ntrace:\n  %s", strings.Join(w.violations, "\n  "), strings.Join(w.trace, "\n  "))
	}
	if store != nil && len(store.violationList()) > 0 {
		tb.Errorf("state not append-only:\n  %s", strings.Join(store.violationList(), "\n  "))
	}
}

func assertRRSet(tb testing.TB, got []tlsa.Record, want ...tlsa.Record) {
	tb.Helper()
	if !sameSet(got, want) {
		tb.Errorf("RRset = %s, want %s", rrKey(got), rrKey(want))
	}
}

// armFault arms one transient fault, chosen with rng, on d, dep or store
// (event i of a random run): a failing or half-applied provider call, a
// lagging secondary, a failed wait, deploy, probe or save, a deploy that
// leaves an address stale.
func armFault(w *world, rng *mrand.Rand, i int, d *fakeDNS, dep *fakeDeployer, store testStore) {
	f := rng.IntN(9)
	switch f {
	case 0:
		d.failSet = 1 + rng.IntN(2)
	case 1:
		d.failSetApplied = 1
	case 2:
		if len(d.delays) > 1 {
			ns := 1 + rng.IntN(len(d.delays)-1)
			fs := d.freezes[ns]
			on := len(fs) == 0 || !fs[len(fs)-1].open
			d.setLag(ns, on)
			w.logf("event %d: ns%d of %s lagging=%v", i, ns+1, d.Owner(), on)
			return
		}
	case 3:
		d.failWait = 1
	case 4:
		dep.failDeploy = 1
	case 5:
		dep.stale, dep.staleAddr = 1, rng.IntN(len(dep.addrs)+1)-1
	case 6:
		dep.failServed = 1
	case 7:
		d.failCurrent = 1
	case 8:
		store.armSaveFault()
	}
	w.logf("event %d: fault %s armed (%s)", i, faultNames[f], d.Owner())
}
