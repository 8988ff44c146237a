package rollover

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// Target is what the engine needs to act on one host.
type Target struct {
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
	// Failpoint, when set, is called with the name of each point where a
	// crash must be survivable ("step-start:<step>", "before-set",
	// "after-set", "after-confirm", "before-deploy", "after-deploy",
	// "step-done:<step>"). Crash tests kill the process there.
	Failpoint func(point string)
}

func (e *Engine) fail(point string) {
	if e.Failpoint != nil {
		e.Failpoint(point)
	}
}

// StartRequest describes a new rollover.
type StartRequest struct {
	Host   string // MX host name
	Port   int    // SMTP port; 25 when zero
	Plan   Plan
	TTL    uint32        // TTL for the records the rollover publishes; the current RRset's when zero
	Margin time.Duration // added to every TTL wait
	// NewCA is the new CA certificate (ca-migration): its 2 1 1 is published first.
	NewCA *x509.Certificate
	// New is the new certificate and key (renew: required; ca-migration and
	// key-prepublish: optional, may be provided later).
	New *Material
	// NextKeySPKI is the DER SubjectPublicKeyInfo of the next key (key-prepublish).
	NextKeySPKI []byte
}

const stagedNew = "new"

func (e *Engine) now() time.Time { return e.Clock.Now() }

func (e *Engine) lock(ctx context.Context, host string) (func(), error) {
	wait := e.LockWait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	lctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	unlock, err := e.Store.Lock(lctx, host)
	if err != nil {
		return nil, err
	}
	return func() { _ = unlock() }, nil
}

// Start creates the rollover state for a host after checking that the host is
// in a safe state now (its TLSA RRset matches what it serves) and that the
// material fits the plan. It changes nothing in DNS or on the server.
func (e *Engine) Start(ctx context.Context, req StartRequest) (*State, error) {
	host, err := tlsa.HostName(req.Host)
	if err != nil {
		return nil, err
	}
	host = strings.ToLower(host)
	if !req.Plan.Valid() {
		return nil, fmt.Errorf("unknown plan %q: want renew, ca-migration or key-prepublish", req.Plan)
	}
	if req.Port == 0 {
		req.Port = 25
	}
	unlock, err := e.lock(ctx, host)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if old, err := e.Store.Load(host); err == nil && old.Status == StatusActive {
		return nil, fmt.Errorf("%s already has an active %s rollover at step %s: finish it (rollover run) or abort it first", host, old.Plan, old.CurrentStep())
	} else if err != nil && !errors.Is(err, ErrNoRollover) {
		return nil, err
	}
	t, err := e.Target(host)
	if err != nil {
		return nil, err
	}
	cur, negTTL, err := t.DNS.Current(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the TLSA RRset: %w", err)
	}
	served, err := t.Deployer.Served(ctx)
	if err != nil {
		return nil, fmt.Errorf("probing what %s serves: %w", host, err)
	}
	now := e.now()
	owner, _ := tlsa.OwnerName(fmt.Sprint(req.Port), "tcp", host)
	st := &State{
		Version: 1, Host: host, Port: req.Port, Owner: owner, Plan: req.Plan, Status: StatusActive,
		Created: now, TTL: req.TTL, NegTTL: negTTL, Margin: Duration(req.Margin),
	}
	if st.TTL == 0 {
		st.TTL = cur.TTL
	}
	if st.TTL == 0 {
		st.TTL = 3600
	}
	initTTL := cur.TTL
	if len(cur.Records) == 0 {
		initTTL = negTTL
	}
	st.Versions = []Version{{Records: recordTexts(cur.Records), TTL: initTTL, Initial: true}}
	// A resolver still holding another RRset means the provider's changed
	// recently: that older RRset may be cached anywhere for up to a TTL
	// from now, so it joins the versions the invariant checks.
	if cv, ok := t.DNS.(CacheViewer); ok {
		if cached, err := cv.Cached(ctx); err == nil && !sameSet(cached.Records, cur.Records) {
			older := Version{Records: recordTexts(cached.Records), TTL: max(cached.TTL, cur.TTL, st.TTL), Initial: true, Superseded: now}
			st.Versions = append([]Version{older}, st.Versions...)
		}
	}
	names := []string{host}
	if len(cur.Records) > 0 {
		if err := CheckInvariant("start", st.Versions, served, names, now); err != nil {
			return nil, fmt.Errorf("%s is not in a safe state now, fix that first: %w", host, err)
		}
	}
	if len(served) > 0 && len(served[0]) > 0 {
		st.OldLeafSPKI = spkiHex(served[0][0])
	}
	for _, r := range cur.Records {
		switch r.Usage {
		case tlsa.DANEEE:
			st.OldEE = append(st.OldEE, r.String())
		case tlsa.DANETA:
			st.OldTA = append(st.OldTA, r.String())
		}
	}
	switch req.Plan {
	case PlanRenew:
		if req.New == nil {
			return nil, errors.New("renew needs the new certificate and key (--new-cert, --new-key)")
		}
		if len(st.OldTA) == 0 {
			return nil, errors.New("renew relies on a published 2 x x record to cover the swap, and there is none: publish the CA's 2 1 1 first, or use --plan ca-migration")
		}
	case PlanCAMigration:
		if req.NewCA == nil {
			return nil, errors.New("ca-migration needs the new CA certificate (--new-ca)")
		}
		ta, err := tlsa.Compute(tlsa.FromCertificate(req.NewCA), tlsa.DANETA, tlsa.SelectorSPKI, tlsa.MatchSHA256)
		if err != nil {
			return nil, err
		}
		st.NewTA, st.NewCASPKI = ta.String(), fmt.Sprintf("%x", ta.Data)
		st.OldTA = recordTexts(without(mustParse(st.OldTA), []tlsa.Record{ta})) // never retire the new CA
	case PlanKeyPrepublish:
		if len(req.NextKeySPKI) == 0 {
			return nil, errors.New("key-prepublish needs the next key (--next-key)")
		}
		next, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindPublicKey, SPKI: req.NextKeySPKI}, tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
		if err != nil {
			return nil, err
		}
		st.Next, st.NextKeySPKI = next.String(), fmt.Sprintf("%x", next.Data)
		st.OldEE = recordTexts(without(mustParse(st.OldEE), []tlsa.Record{next}))
	}
	if req.New != nil {
		if err := e.stage(st, *req.New, now); err != nil {
			return nil, err
		}
	}
	st.History = append(st.History, Event{At: now, Step: st.CurrentStep(), What: "started",
		Detail: fmt.Sprintf("%s rollover of %s; RRset %s", req.Plan, owner, abbrev(st.Versions[len(st.Versions)-1].Records))})
	if err := e.Store.Save(st); err != nil {
		return nil, err
	}
	return st, nil
}

func mustParse(ss []string) []tlsa.Record {
	rs, _ := parseRecords(ss)
	return rs
}

// Provide stages the new certificate and key for a rollover that waits for
// them (e.g. a ca-migration after its TTL wait). It checks the material fits
// the plan; it deploys nothing.
func (e *Engine) Provide(ctx context.Context, host string, m Material) (*State, error) {
	st, unlock, err := e.loadLocked(ctx, host)
	if err != nil {
		return st, err
	}
	defer unlock()
	if st.Status != StatusActive {
		return nil, fmt.Errorf("the %s rollover of %s is %s", st.Plan, st.Host, st.Status)
	}
	if idx := stepIndex(st.Plan, StepDeploy); st.Step > idx {
		return nil, fmt.Errorf("the new certificate of %s is already deployed", host)
	}
	now := e.now()
	if err := e.stage(st, m, now); err != nil {
		return nil, err
	}
	if err := e.Store.Save(st); err != nil {
		return nil, err
	}
	return st, nil
}

// loadLocked takes the host's lock and loads its state: lock → reload →
// re-check → act, so a decision never rests on state another run changed.
func (e *Engine) loadLocked(ctx context.Context, host string) (*State, func(), error) {
	host, err := normHost(host)
	if err != nil {
		return nil, nil, err
	}
	unlock, err := e.lock(ctx, host)
	if err != nil {
		return nil, nil, err
	}
	st, err := e.Store.Load(host)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return st, unlock, nil
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

// stage validates m against the plan and stores it.
func (e *Engine) stage(st *State, m Material, now time.Time) error {
	chain, err := parseChain(m)
	if err != nil {
		return err
	}
	leaf := chain[0]
	ee, _ := tlsa.Compute(tlsa.FromCertificate(leaf), tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	switch st.Plan {
	case PlanKeyPrepublish:
		if fmt.Sprintf("%x", ee.Data) != st.NextKeySPKI {
			return fmt.Errorf("the new certificate is not on the next key whose 3 1 1 this rollover publishes (SPKI %s…, want %s…): issue it from the next key's CSR", short(fmt.Sprintf("%x", ee.Data)), short(st.NextKeySPKI))
		}
	case PlanCAMigration:
		ta, _ := tlsa.ParseRecord(st.NewTA)
		if v := tlsa.Match(chain, []tlsa.Record{ta}, tlsa.MatchOptions{Names: []string{st.Host}, Now: now}).Verdicts[0]; !v.Matched {
			return fmt.Errorf("the new chain does not match the new CA's 2 1 1 (%s: %s): the chain file must hold the leaf and the new CA certificate", v.Reason, v.Detail)
		}
	}
	if err := e.Store.PutMaterial(st.Host, stagedNew, m); err != nil {
		return err
	}
	st.NewEE, st.NewLeafSPKI = ee.String(), fmt.Sprintf("%x", ee.Data)
	st.History = append(st.History, Event{At: now, Step: st.CurrentStep(), What: "material staged",
		Detail: fmt.Sprintf("new certificate %q, SPKI %s…, expires %s", leaf.Subject.CommonName, short(st.NewLeafSPKI), leaf.NotAfter.UTC().Format("2006-01-02"))})
	return nil
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

// parseChain parses a Material's chain and checks the key belongs to the leaf.
func parseChain(m Material) ([]*x509.Certificate, error) {
	ms, err := tlsa.ParseMaterial("certificate chain", m.ChainPEM)
	if err != nil {
		return nil, err
	}
	chain := tlsa.Certificates(ms)
	if len(chain) == 0 {
		return nil, errors.New("the certificate chain holds no certificate")
	}
	ks, err := tlsa.ParseMaterial("private key", m.KeyPEM)
	if err != nil {
		return nil, err
	}
	for _, k := range ks {
		if k.Kind == tlsa.KindPrivateKey {
			if !bytes.Equal(k.SPKI, chain[0].RawSubjectPublicKeyInfo) {
				return nil, errors.New("the private key does not belong to the certificate (first in the chain)")
			}
			return chain, nil
		}
	}
	return nil, errors.New("the key file holds no private key")
}

// Outcome says where Advance stopped.
type Outcome struct {
	State *State
	// Waiting is set when a step may act only later (NotBefore), or waits
	// for material; Reason says why.
	Waiting bool
	Reason  string
}

// Advance moves the host's rollover forward as far as is safe now and
// returns. It stops when the rollover is done, when a step must wait (TTL,
// material), or at the first error (recorded in the state; a later run
// retries).
func (e *Engine) Advance(ctx context.Context, host string) (Outcome, error) {
	st, unlock, err := e.loadLocked(ctx, host)
	if err != nil {
		return Outcome{}, err
	}
	defer unlock()
	host = st.Host
	t, err := e.Target(host)
	if err != nil {
		return Outcome{State: st}, err
	}
	for st.Status == StatusActive {
		step := st.CurrentStep()
		now := e.now()
		if now.Before(st.NotBefore) {
			return Outcome{State: st, Waiting: true, Reason: fmt.Sprintf("%s: not before %s", step, st.NotBefore.UTC().Format(time.RFC3339))}, nil
		}
		if step == StepDone {
			st.Status = StatusDone
			st.History = append(st.History, Event{At: now, Step: step, What: "done", Detail: "rollover complete"})
			break
		}
		e.fail("step-start:" + string(step))
		err := e.runStep(ctx, st, t, step)
		switch {
		case err == nil:
			st.Step++
			st.NotBefore, st.LastError = time.Time{}, ""
			if err := e.Store.Save(st); err != nil {
				return Outcome{State: st}, err
			}
			e.fail("step-done:" + string(step))
			continue
		case errors.Is(err, ErrWaiting), errors.Is(err, ErrNeedMaterial):
			st.LastError = ""
			if len(st.History) == 0 || st.History[len(st.History)-1].Detail != err.Error() {
				st.History = append(st.History, Event{At: now, Step: step, What: "waiting", Detail: err.Error()})
			}
			if serr := e.Store.Save(st); serr != nil {
				return Outcome{State: st}, serr
			}
			return Outcome{State: st, Waiting: true, Reason: err.Error()}, nil
		default:
			var ue *UnsafeError
			if errors.As(err, &ue) && !ue.SafeAt.IsZero() {
				st.NotBefore = ue.SafeAt
			}
			st.LastError = err.Error()
			st.History = append(st.History, Event{At: now, Step: step, What: "error", Detail: err.Error()})
			if serr := e.Store.Save(st); serr != nil {
				return Outcome{State: st}, errors.Join(err, serr)
			}
			return Outcome{State: st}, fmt.Errorf("%s, step %s: %w", host, step, err)
		}
	}
	if err := e.Store.Save(st); err != nil {
		return Outcome{State: st}, err
	}
	return Outcome{State: st}, nil
}

func (e *Engine) runStep(ctx context.Context, st *State, t Target, step StepKind) error {
	switch step {
	case StepVerify:
		return e.verify(ctx, st, t)
	case StepPublishTA:
		ta := mustParse([]string{st.NewTA})
		return e.publish(ctx, st, t, step, func(cur []tlsa.Record) []tlsa.Record { return with(cur, ta...) })
	case StepPublishNext:
		next := mustParse([]string{st.Next})
		return e.publish(ctx, st, t, step, func(cur []tlsa.Record) []tlsa.Record { return with(cur, next...) })
	case StepWaitTTL:
		if until := WaitUntil(st); e.now().Before(until) {
			st.NotBefore = until
			return fmt.Errorf("%w until %s: the previous TLSA RRset may still be cached (TTL %s + margin %s)", ErrWaiting, until.UTC().Format(time.RFC3339), time.Duration(maxTTL(st))*time.Second, time.Duration(st.Margin))
		}
		return nil
	case StepDeploy:
		return e.deploy(ctx, st, t)
	case StepReplaceEE:
		if st.NewEE == "" {
			return fmt.Errorf("%w: no new certificate staged", ErrNeedMaterial)
		}
		old, ne := mustParse(st.OldEE), mustParse([]string{st.NewEE})
		return e.publish(ctx, st, t, step, func(cur []tlsa.Record) []tlsa.Record { return with(without(cur, old), ne...) })
	case StepRetireTA:
		old := mustParse(st.OldTA)
		return e.publish(ctx, st, t, step, func(cur []tlsa.Record) []tlsa.Record { return without(cur, old) })
	case StepRetireEE:
		old := mustParse(st.OldEE)
		return e.publish(ctx, st, t, step, func(cur []tlsa.Record) []tlsa.Record { return without(cur, old) })
	}
	return fmt.Errorf("unknown step %q", step)
}

// WaitUntil is when the versions superseded so far have left every cache:
// the last confirmation plus the largest TTL any cache may hold for the
// RRset (old and new TTL; the negative TTL where the name had no TLSA) plus
// the margin.
func WaitUntil(st *State) time.Time {
	var last time.Time
	for _, v := range st.Versions {
		if v.Confirmed.After(last) {
			last = v.Confirmed
		}
	}
	return last.Add(time.Duration(maxTTL(st))*time.Second + time.Duration(st.Margin))
}

func maxTTL(st *State) uint32 {
	m := st.TTL
	for _, v := range st.Versions {
		if v.Initial && len(v.Records) == 0 && st.NegTTL > m {
			m = st.NegTTL // the name had no TLSA: caches may hold the denial
		}
	}
	for _, v := range st.Versions {
		if v.TTL > m {
			m = v.TTL
		}
	}
	return m
}

// publish makes the provider's RRset target(current), safely and
// idempotently: the intent is recorded before the provider call, and a
// resumed run recognises a change that was already made.
func (e *Engine) publish(ctx context.Context, st *State, t Target, step StepKind, target func([]tlsa.Record) []tlsa.Record) error {
	cur, _, err := t.DNS.Current(ctx)
	if err != nil {
		return fmt.Errorf("reading the TLSA RRset: %w", err)
	}
	want := target(cur.Records)
	last := &st.Versions[len(st.Versions)-1]
	lastRecs := mustParse(last.Records)
	if sameSet(lastRecs, want) && !last.Confirmed.IsZero() && sameSet(cur.Records, want) {
		return nil // done before a crash
	}
	now := e.now()
	if !sameSet(cur.Records, want) {
		served, err := t.Deployer.Served(ctx)
		if err != nil {
			return fmt.Errorf("probing what %s serves: %w", st.Host, err)
		}
		candidate := append(append([]Version(nil), st.Versions...), Version{Records: recordTexts(want), TTL: st.TTL, Requested: now})
		if err := CheckInvariant(fmt.Sprintf("publish %s", abbrev(recordTexts(want))), candidate, served, []string{st.Host}, now); err != nil {
			return err
		}
	}
	if !sameSet(lastRecs, want) || !last.Confirmed.IsZero() {
		// Record the intent first: from now on resolvers may see it.
		st.Versions = append(st.Versions, Version{Records: recordTexts(want), TTL: st.TTL, Requested: now})
		if err := e.Store.Save(st); err != nil {
			return err
		}
		last = &st.Versions[len(st.Versions)-1]
	}
	if !sameSet(cur.Records, want) {
		e.fail("before-set")
		if err := t.DNS.Set(ctx, RRSet{Records: want, TTL: st.TTL}); err != nil {
			return fmt.Errorf("provider: %w", err)
		}
		e.fail("after-set")
		st.History = append(st.History, Event{At: now, Step: step, What: "published", Detail: abbrev(recordTexts(want))})
	}
	if err := t.DNS.WaitServed(ctx, RRSet{Records: want, TTL: st.TTL}); err != nil {
		return fmt.Errorf("propagation: %w", err)
	}
	done := e.now()
	last.Confirmed = done
	for i := range st.Versions[:len(st.Versions)-1] {
		if st.Versions[i].Superseded.IsZero() {
			st.Versions[i].Superseded = done
		}
	}
	st.History = append(st.History, Event{At: done, Step: step, What: "confirmed", Detail: "every authoritative server serves " + abbrev(recordTexts(want))})
	e.fail("after-confirm")
	return nil
}

// verify (renew) checks the staged chain is covered by a published 2 x x.
func (e *Engine) verify(ctx context.Context, st *State, t Target) error {
	m, err := e.Store.GetMaterial(st.Host, stagedNew)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNeedMaterial, err)
	}
	chain, err := parseChain(m)
	if err != nil {
		return err
	}
	cur, _, err := t.DNS.Current(ctx)
	if err != nil {
		return fmt.Errorf("reading the TLSA RRset: %w", err)
	}
	var tas []tlsa.Record
	for _, r := range cur.Records {
		if r.Usage == tlsa.DANETA {
			tas = append(tas, r)
		}
	}
	if !tlsa.Match(chain, tas, tlsa.MatchOptions{Names: []string{st.Host}, Now: e.now()}).Matched() {
		return fmt.Errorf("the new certificate is not covered by a published 2 x x record (its CA differs, or the chain file lacks the CA certificate): use --plan ca-migration, or fix the chain file")
	}
	return nil
}

// deploy installs the staged certificate once every RRset a resolver may
// hold matches both the old and the new chain.
func (e *Engine) deploy(ctx context.Context, st *State, t Target) error {
	m, err := e.Store.GetMaterial(st.Host, stagedNew)
	if errors.Is(err, ErrNoMaterial) {
		return fmt.Errorf("%w: provide it with `tlsactl rollover provide --host %s --cert FILE --key FILE`", ErrNeedMaterial, strings.TrimSuffix(st.Host, "."))
	} else if err != nil {
		return err
	}
	chain, err := parseChain(m)
	if err != nil {
		return err
	}
	// A provide that staged the material but died before saving the state
	// leaves a certificate the state (NewEE, checks) knows nothing about.
	if spki := spkiHex(chain[0]); spki != st.NewLeafSPKI {
		return fmt.Errorf("%w: the staged certificate (SPKI %s…) is not the one this rollover recorded (an interrupted provide?): provide it again", ErrNeedMaterial, short(spki))
	}
	served, err := t.Deployer.Served(ctx)
	if err != nil {
		return fmt.Errorf("probing what %s serves: %w", st.Host, err)
	}
	if allServe(served, chain[0]) {
		return nil // deployed before a crash
	}
	now := e.now()
	chains := append(append([][]*x509.Certificate(nil), served...), chain)
	if err := CheckInvariant("deploy the new certificate", st.Versions, chains, []string{st.Host}, now); err != nil {
		return err
	}
	st.History = append(st.History, Event{At: now, Step: StepDeploy, What: "deploying", Detail: "new certificate SPKI " + short(st.NewLeafSPKI) + "…"})
	if err := e.Store.Save(st); err != nil {
		return err
	}
	e.fail("before-deploy")
	if err := t.Deployer.Deploy(ctx, m); err != nil {
		return err // the deployer's errors name the deploy and what was restored
	}
	e.fail("after-deploy")
	// Probe: later steps retire the records the old chain needs.
	if served, err = t.Deployer.Served(ctx); err != nil {
		return fmt.Errorf("probing what %s serves after the deploy: %w", st.Host, err)
	}
	if !allServe(served, chain[0]) {
		return fmt.Errorf("the deploy reported success, but not every address of %s serves the new certificate", st.Host)
	}
	st.History = append(st.History, Event{At: e.now(), Step: StepDeploy, What: "deployed", Detail: "every address serves the new certificate"})
	return nil
}

func allServe(served [][]*x509.Certificate, leaf *x509.Certificate) bool {
	if len(served) == 0 {
		return false
	}
	for _, c := range served {
		if len(c) == 0 || !c[0].Equal(leaf) {
			return false
		}
	}
	return true
}

// Abort stops a rollover safely. Before the new certificate is deployed it
// takes back the records the rollover added (new CA's 2 1 1, next key's
// 3 1 1), invariant-checked; after it, DNS is already in a safe state at every
// step boundary and abort only stops the rollover.
func (e *Engine) Abort(ctx context.Context, host string) (*State, error) {
	st, unlock, err := e.loadLocked(ctx, host)
	if err != nil {
		return st, err
	}
	defer unlock()
	host = st.Host
	if st.Status != StatusActive {
		return st, fmt.Errorf("the %s rollover of %s is already %s", st.Plan, host, st.Status)
	}
	t, err := e.Target(host)
	if err != nil {
		return nil, err
	}
	now := e.now()
	if st.Step <= stepIndex(st.Plan, StepDeploy) {
		added := mustParse(nonEmpty(st.NewTA, st.Next))
		served, err := t.Deployer.Served(ctx)
		if err != nil {
			return st, fmt.Errorf("probing what %s serves: %w", host, err)
		}
		deployed := false // on any address: then the added records are needed
		for _, c := range served {
			deployed = deployed || (st.NewLeafSPKI != "" && len(c) > 0 && spkiHex(c[0]) == st.NewLeafSPKI)
		}
		if len(added) > 0 && !deployed {
			if err := e.publish(ctx, st, t, "abort", func(cur []tlsa.Record) []tlsa.Record { return without(cur, added) }); err != nil {
				st.History = append(st.History, Event{At: now, Step: st.CurrentStep(), What: "error", Detail: "abort: " + err.Error()})
				_ = e.Store.Save(st)
				return st, fmt.Errorf("abort: %w", err)
			}
		}
	}
	st.Status = StatusAborted
	st.History = append(st.History, Event{At: e.now(), Step: st.CurrentStep(), What: "aborted", Detail: "DNS left in a state that matches what the server serves"})
	return st, e.Store.Save(st)
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
