package rollover

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// Target is what the engine needs to act on one host.
type Target struct {
	DNS      DNS
	Deployer Deployer
	// Peers are the other hosts on the same deploy target: hosts that
	// share this host's key and chain files, or its addresses. Deploying to
	// this host changes what they serve, so every deploy is checked
	// against their ledgers too.
	Peers []Peer
	// Sharing are the other hosts whose TLSA owner is this DNS's owner (a
	// shared RRset: CNAMEs to one name, RFC 7671 §7). A change of the RRset
	// must keep matching what each of them serves: records a step would
	// remove that a sharing host still needs are kept.
	Sharing []Peer
}

// Peer is another host on a deploy target, or sharing a TLSA RRset.
type Peer struct {
	Host     string // FQDN
	DNS      DNS
	Deployer Deployer
}

// Engine advances rollovers. It holds no state of its own: everything is in
// the Store, so any number of engine runs (one at a time per host, by lock)
// continue where the last one stopped.
type Engine struct {
	Store  Store
	Clock  Clock
	Target func(host string) (Target, error)
	// LockWait bounds how long to wait for another process's lock.
	LockWait time.Duration
	// Runner names this runner (PGStore.Runner when several share a
	// store): it is recorded on every event the engine writes to a host's
	// history and on migration events; "" leaves it out.
	Runner string
	// Failpoint, when set, is called with the name of each point where a
	// crash must be survivable ("step-start:<step>", "before-set",
	// "after-set", "after-confirm", "before-deploy", "after-deploy",
	// "step-done:<step>"). Crash tests kill the process there; the shipped
	// binary sets it only in test builds.
	Failpoint func(point string)
}

func (e *Engine) fail(point string) {
	if e.Failpoint != nil {
		e.Failpoint(point)
	}
}

const (
	stagedNew    = "new"
	stagedBefore = "before" // the files as they were before the rollover's first deploy
)

// maxStepBacks bounds how often a rollover republishes a record someone
// else keeps removing before it stops and asks the operator.
const maxStepBacks = 5

// transientWait is how long a step waits for something expected to settle
// soon (propagation to every authoritative server).
const transientWait = 5 * time.Second

func (e *Engine) now() time.Time { return e.Clock.Now() }

// lock takes the host's lock (a lease when the Store is a Leaser) and
// returns the context to do the locked work with: the held context of the
// lease, which ends when the lease is lost, or ctx for a plain lock.
func (e *Engine) lock(ctx context.Context, host string) (context.Context, func(), error) {
	l, _ := e.Store.(Leaser)
	return e.lockWith(ctx, host, l, LeaseHost, e.Store.Lock)
}

// lockWith takes the lock of name, waiting at most LockWait (5 s when
// unset) for another holder: a lease of kind from leaser when it is not
// nil, else with take. It returns the context every step under the lock
// must use (see Leaser): the lease's held context, or ctx itself for a
// lock that cannot be lost (FileStore's flock).
func (e *Engine) lockWith(ctx context.Context, name string, leaser Leaser, kind string, take func(context.Context, string) (func() error, error)) (context.Context, func(), error) {
	wait := e.LockWait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	if leaser == nil {
		lctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		unlock, err := take(lctx, name)
		if err != nil {
			return nil, nil, err
		}
		return ctx, func() { _ = unlock() }, nil
	}
	// The held context is a child of the context the lease is taken
	// with, so that context may not carry the wait's deadline: it is
	// cancelled when the wait ends without the lease (and released with
	// the lease).
	wctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(wait, cancel)
	held, unlock, err := leaser.LockLease(wctx, kind, name)
	if !timer.Stop() && err == nil { // taken just as the wait ended
		_ = unlock()
		err = fmt.Errorf("%w: %s: the lease came as the wait of %v ended", ErrLocked, name, wait)
	}
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return held, func() { _ = unlock(); cancel() }, nil
}

// loadLocked takes the host's lock and loads its state: lock → reload →
// re-check → act, so a decision never rests on state another run changed.
// The returned context is the one to act with (see lock).
func (e *Engine) loadLocked(ctx context.Context, host string) (*State, context.Context, func(), error) {
	host, err := normHost(host)
	if err != nil {
		return nil, nil, nil, err
	}
	held, unlock, err := e.lock(ctx, host)
	if err != nil {
		return nil, nil, nil, err
	}
	st, err := e.Store.Load(host)
	if err != nil {
		unlock()
		return nil, nil, nil, err
	}
	return st, held, unlock, nil
}

// note appends ev to the rollover's history, naming this engine's Runner.
func (e *Engine) note(st *State, ev Event) {
	ev.Runner = e.Runner
	st.History = append(st.History, ev)
}

func normHost(h string) (string, error) {
	host, err := tlsa.HostName(h)
	return strings.ToLower(host), err
}

func stepIndex(p Plan, k StepKind) int {
	for i, s := range p.Steps() {
		if s == k {
			return i
		}
	}
	return -1
}

// seen is one observation of a host's DNS: what every source held, and the
// owner's ledger after recording it.
type seen struct {
	at        time.Time
	sightings []Sighting
	ledger    *Ledger
	drift     []Drift
}

// provider returns the provider's RRset of the observation.
func (w *seen) provider() ([]tlsa.Record, error) { return providerOf(w.sightings) }

// providerOf returns the provider's RRset among sightings, or why there is
// none to rely on.
func providerOf(sightings []Sighting) ([]tlsa.Record, error) {
	for _, s := range sightings {
		if s.Kind != SourceProvider {
			continue
		}
		if s.Err != nil {
			return nil, fmt.Errorf("reading the TLSA RRset from the provider: %w", s.Err)
		}
		if s.CNAME != "" {
			return nil, fmt.Errorf("the provider holds a CNAME to %s at the owner, not a TLSA RRset", s.CNAME)
		}
		return s.Records, nil
	}
	return nil, errors.New("the provider's RRset was not read")
}

// servedEverywhere checks that every authoritative address serves want (the
// records; TTL as served). It returns a sentence naming the first that does
// not, or "".
func (w *seen) servedEverywhere(want []tlsa.Record) string {
	n := 0
	for _, s := range w.sightings {
		if s.Kind != SourceAuthoritative {
			continue
		}
		n++
		switch {
		case s.Err != nil:
			return fmt.Sprintf("%s could not be asked: %v", s.Source, s.Err)
		case s.CNAME != "":
			return fmt.Sprintf("%s answers with a CNAME to %s", s.Source, s.CNAME)
		case !sameSet(s.Records, want):
			return fmt.Sprintf("%s serves %s, not %s", s.Source, abbrev(recordTexts(s.Records)), abbrev(recordTexts(want)))
		}
	}
	if n == 0 {
		return "no authoritative server could be asked"
	}
	return ""
}

// observe reads the owner's RRset everywhere and records it in the ledger.
func (e *Engine) observe(ctx context.Context, d DNS, negTTL uint32) (*seen, error) {
	obs, err := d.Observe(ctx)
	if err != nil {
		return nil, fmt.Errorf("observing %s: %w", d.Owner(), err)
	}
	w := &seen{at: e.now(), sightings: obs}
	l, err := e.Store.UpdateLedger(ctx, d.Owner(), func(l *Ledger) error {
		w.drift = l.Record(obs, negTTL, w.at)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("recording what %s holds: %w", d.Owner(), err)
	}
	w.ledger = l
	return w, nil
}

// observeState observes the rollover's own owner, notes drift in its
// history and refreshes its copy of the ledger.
func (e *Engine) observeState(ctx context.Context, st *State, t Target) (*seen, error) {
	w, err := e.observe(ctx, t.DNS, st.NegTTL)
	if err != nil {
		return nil, err
	}
	for _, d := range w.drift {
		if d.First {
			continue
		}
		e.note(st, Event{At: w.at, Step: st.CurrentStep(), What: "observed", Detail: d.String()})
	}
	st.Versions = w.ledger.Copy().Versions
	return w, nil
}

// wrote records the intent to publish rs in the owner's ledger.
func (e *Engine) wrote(ctx context.Context, st *State, owner string, rs RRSet, writer string, at time.Time) error {
	l, err := e.Store.UpdateLedger(ctx, owner, func(l *Ledger) error {
		l.Wrote(rs, writer, at)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording the change of %s: %w", owner, err)
	}
	st.Versions = l.Copy().Versions
	return nil
}

// peerCheck checks a deploy of chain against every peer of the deploy
// target: each peer's ledger, freshly observed, must match both what the
// peer serves now and the new chain.
func (e *Engine) peerCheck(ctx context.Context, st *State, t Target, chain []*x509.Certificate, now time.Time) error {
	for _, p := range t.Peers {
		w, err := e.observe(ctx, p.DNS, 0)
		if err != nil {
			return fmt.Errorf("peer %s on the same deploy target: %w", strings.TrimSuffix(p.Host, "."), err)
		}
		served, err := p.Deployer.Served(ctx)
		if err != nil {
			return fmt.Errorf("probing what %s (same deploy target) serves: %w", strings.TrimSuffix(p.Host, "."), err)
		}
		inv := Invariant{
			Action:   fmt.Sprintf("deploy the new certificate to %s, which shares its files or addresses with %s", strings.TrimSuffix(st.Host, "."), strings.TrimSuffix(p.Host, ".")),
			Versions: w.ledger.Versions, Chains: append(slices.Clone(served), chain), Names: []string{p.Host},
			Now: now, Margin: time.Duration(st.Margin), UnknownUntil: w.ledger.UnknownBefore(time.Duration(st.Margin)),
		}
		if err := inv.Check(); err != nil {
			return err
		}
	}
	return nil
}

// Record adds sightings of owner made at at to its ledger (commands that
// only look, such as check, record what they saw so ages become known). It
// returns the ledger and the versions it learnt that tlsactl did not write.
func Record(ctx context.Context, store Store, owner string, sightings []Sighting, negTTL uint32, at time.Time) (*Ledger, []Drift, error) {
	var drift []Drift
	l, err := store.UpdateLedger(ctx, owner, func(l *Ledger) error {
		drift = l.Record(sightings, negTTL, at)
		return nil
	})
	return l, drift, err
}

// Observe reads host's TLSA RRset at every source and records it in the
// owner's ledger, outside any rollover. It changes nothing in DNS.
func (e *Engine) Observe(ctx context.Context, host string) (*Ledger, []Sighting, error) {
	h, err := normHost(host)
	if err != nil {
		return nil, nil, err
	}
	t, err := e.Target(h)
	if err != nil {
		return nil, nil, err
	}
	w, err := e.observe(ctx, t.DNS, 0)
	if err != nil {
		return nil, nil, err
	}
	return w.ledger, w.sightings, nil
}
