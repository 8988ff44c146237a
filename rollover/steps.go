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

// stepDef is one step kind: what it does to the RRset (DNS steps), what it
// does otherwise, and what the dry run says. Advance and Preview both read
// this table, so the dry run cannot drift from what runs.
type stepDef struct {
	// rrset makes the RRset the step publishes from the current one; nil
	// for a step that changes no DNS. It must be idempotent.
	rrset func(st *State, cur []tlsa.Record) []tlsa.Record
	// run does a step that is not a DNS change.
	run func(e *Engine, ctx context.Context, st *State, t Target) error
	// waitsTTL: the dry run adds the TTL wait here.
	waitsTTL bool
	note     string
}

var stepTable = map[StepKind]stepDef{
	StepVerify: {run: (*Engine).verify, note: "the new chain must be covered by a published 2 x x that every cache holds"},
	StepPublishTA: {rrset: func(st *State, cur []tlsa.Record) []tlsa.Record { return with(cur, mustParse(newTAs(st))...) },
		note: "beside the old CA's 2 x x; confirmed at every authoritative server"},
	StepPublishNext: {rrset: func(st *State, cur []tlsa.Record) []tlsa.Record { return with(cur, mustParse(nonEmpty(st.Next))...) },
		note: "beside the current 3 x x"},
	StepWaitTTL: {run: (*Engine).waitTTL, waitsTTL: true, note: "every RRset without the new record leaves every cache (TTL as served + margin)"},
	StepDeploy:  {run: (*Engine).deploy, note: "write files, reload, probe until served; checked against every RRset a cache may hold"},
	StepReplaceEE: {rrset: func(st *State, cur []tlsa.Record) []tlsa.Record {
		if st.NewEE == "" {
			return cur
		}
		return with(without(cur, mustParse(st.OldEE)), mustParse([]string{st.NewEE})...)
	}},
	StepRetireTA: {rrset: func(st *State, cur []tlsa.Record) []tlsa.Record { return without(cur, mustParse(st.OldTA)) }},
	StepRetireEE: {rrset: func(st *State, cur []tlsa.Record) []tlsa.Record { return without(cur, mustParse(st.OldEE)) }},
	StepSetRRset: {rrset: func(st *State, cur []tlsa.Record) []tlsa.Record { return mustParse(st.Want) }},
	StepDone:     {},
}

// errSteppedBack: the step went back to an earlier one (a record the plan
// published is gone); Advance continues from there.
var errSteppedBack = errors.New("stepped back")

func (e *Engine) runStep(ctx context.Context, st *State, t Target, step StepKind) error {
	def, ok := stepTable[step]
	switch {
	case !ok:
		return fmt.Errorf("unknown step %q", step)
	case def.rrset != nil:
		if step == StepReplaceEE && st.NewEE == "" {
			return fmt.Errorf("%w: no new certificate staged", ErrNeedMaterial)
		}
		return e.publish(ctx, st, t, step, func(cur []tlsa.Record) []tlsa.Record { return cumulative(st, cur) })
	case def.run != nil:
		return def.run(e, ctx, st, t)
	}
	return nil
}

// cumulative applies to cur the RRset function of every DNS step of the
// plan up to the current one, in order: the RRset the plan wants at this
// step, whatever someone else changed since (a record a done step added or
// removed that was put back or taken out again is repaired, not forgotten).
// Each function is idempotent, so on an RRset nobody else touched this is
// the current step's function alone.
func cumulative(st *State, cur []tlsa.Record) []tlsa.Record {
	steps := st.Plan.Steps()
	for i := 0; i <= st.Step && i < len(steps); i++ {
		if def := stepTable[steps[i]]; def.rrset != nil {
			cur = def.rrset(st, cur)
		}
	}
	return cur
}

// required returns the records the plan published that later steps rely
// on: the new CA's 2 1 1, the next key's 3 1 1.
func required(st *State) []tlsa.Record {
	switch st.Plan {
	case PlanCAMigration:
		return mustParse(newTAs(st))
	case PlanKeyPrepublish:
		return mustParse(nonEmpty(st.Next))
	}
	return nil
}

func containsAll(rs, need []tlsa.Record) bool {
	for _, r := range need {
		if !containsRec(rs, r) {
			return false
		}
	}
	return true
}

// publishStep is the step that publishes the plan's required records.
func publishStep(p Plan) StepKind {
	if p == PlanKeyPrepublish {
		return StepPublishNext
	}
	return StepPublishTA
}

// stepBack sends the rollover back to the step that publishes its required
// records, because they are gone from the current RRset.
func (e *Engine) stepBack(st *State, why string) error {
	to := stepIndex(st.Plan, publishStep(st.Plan))
	if to < 0 {
		return fmt.Errorf("%s, and the %s plan has no step that publishes it", why, st.Plan)
	}
	if st.StepBacks >= maxStepBacks {
		return fmt.Errorf("%s, and it was published again %d times and removed each time: stopping here, the new certificate not deployed; find what rewrites the zone (zone-as-code, another tool), then `tlsactl rollover abort --host %s` and start again", why, st.StepBacks, strings.TrimSuffix(st.Host, "."))
	}
	st.StepBacks++
	from := st.CurrentStep()
	st.Step = to
	st.NotBefore = time.Time{}
	e.note(st, Event{At: e.now(), Step: from, What: "stepped back",
		Detail: fmt.Sprintf("%s: back to %s, then the TTL wait starts again", why, st.CurrentStep())})
	return errSteppedBack
}

// waiting returns an ErrWaiting that holds the step until at.
func waiting(st *State, at time.Time, format string, args ...any) error {
	st.NotBefore = at
	return fmt.Errorf("%w until %s: %s", ErrWaiting, at.UTC().Format(time.RFC3339), fmt.Sprintf(format, args...))
}

// publish makes the provider's RRset target(current), safely and
// idempotently: it observes first, the intent is recorded in the ledger
// before the provider call, and a resumed run recognises a change that was
// already made.
//
// Where the DNS can (ConditionalDNS), the change is made only if the
// provider still holds what was observed: when someone else changed the
// RRset in between, nothing is changed and the publication starts again
// from a new observation (at most maxConflicts times in one run), so their
// edit is kept or repaired as any other drift, never overwritten unseen.
func (e *Engine) publish(ctx context.Context, st *State, t Target, step StepKind, target func([]tlsa.Record) []tlsa.Record) error {
	for attempt := 1; ; attempt++ {
		rs, expect, change, err := e.preparePublish(ctx, st, t, step, target)
		if err != nil || rs == nil {
			return err
		}
		if change {
			e.fail("before-set")
			err := setRRset(ctx, t.DNS, expect, *rs)
			if errors.Is(err, ErrRRsetChanged) && attempt < maxConflicts {
				e.note(st, Event{At: e.now(), Step: step, What: "changed underneath",
					Detail: fmt.Sprintf("the provider no longer held %s, as observed: someone else changed the RRset; nothing was changed, observing again", abbrevOrNone(expect))})
				continue
			}
			if err != nil {
				return fmt.Errorf("provider: %w", err)
			}
			e.fail("after-set")
			e.note(st, Event{At: e.now(), Step: step, What: "published", Detail: abbrev(recordTexts(rs.Records))})
		}
		return e.confirm(ctx, st, t, step, *rs)
	}
}

// maxConflicts bounds how often one run starts a publication again because
// someone else changed the RRset between observation and change.
const maxConflicts = 3

// setRRset replaces d's RRset with want: only if the provider still holds
// expect when d can make that condition (ConditionalDNS), else outright.
func setRRset(ctx context.Context, d DNS, expect []tlsa.Record, want RRSet) error {
	if c, ok := d.(ConditionalDNS); ok {
		return c.SetIf(ctx, RRSet{Records: expect}, want)
	}
	return d.Set(ctx, want)
}

// abbrevOrNone is abbrev of the records, or "no RRset".
func abbrevOrNone(recs []tlsa.Record) string {
	if len(recs) == 0 {
		return "no RRset"
	}
	return abbrev(recordTexts(recs))
}

// preparePublish observes the owner and decides what publishing
// target(current) takes. change: the provider must be set to rs; the
// checks passed, the intent is in the ledger and the state saved with a
// "publishing" event, so the caller makes the provider call next, on
// condition that the provider still holds expect (what it held when
// observed). No change and rs set: the provider holds it already, but it
// is still to be confirmed. rs nil: nothing to do (done before a crash, or
// no change).
func (e *Engine) preparePublish(ctx context.Context, st *State, t Target, step StepKind, target func([]tlsa.Record) []tlsa.Record) (rs *RRSet, expect []tlsa.Record, change bool, err error) {
	w, err := e.observeState(ctx, st, t)
	if err != nil {
		return nil, nil, false, err
	}
	cur, err := w.provider()
	if err != nil {
		return nil, nil, false, err
	}
	want := target(cur)
	// Hosts that share the RRset keep the records they still need.
	var sharers []sharer
	if len(t.Sharing) > 0 && !sameSet(cur, want) {
		if sharers, err = servedBySharers(ctx, t); err != nil {
			return nil, nil, false, err
		}
		var kept []tlsa.Record
		if want, kept = keepForSharers(cur, want, sharers, e.now()); len(kept) > 0 && !sameSet(cur, want) {
			e.note(st, Event{At: e.now(), Step: step, What: "kept",
				Detail: fmt.Sprintf("%s stays: another host that shares the RRset still serves a chain it matches", abbrev(recordTexts(kept)))})
		}
	}
	set := RRSet{Records: want, TTL: st.TTL}
	if sameSet(cur, want) {
		if w.servedEverywhere(want) == "" && !unconfirmed(st, step) {
			return nil, nil, false, nil // done before a crash, or nothing to change
		}
		return &set, cur, false, nil
	}
	now := e.now()
	if !st.Force {
		served, err := t.Deployer.Served(ctx)
		if err != nil {
			return nil, nil, false, fmt.Errorf("probing what %s serves: %w", st.Host, err)
		}
		// Only the new version is new: what caches hold already is not
		// changed by this action (and a refusal here would keep tlsactl
		// from repairing an RRset someone else broke).
		inv := Invariant{Action: fmt.Sprintf("publish %s", abbrev(recordTexts(want))),
			Versions: []Version{{Records: recordTexts(want), TTL: st.TTL, Requested: now}},
			Chains:   served, Names: []string{st.Host}, Now: now, Margin: time.Duration(st.Margin)}
		if err := inv.Check(); err != nil {
			return nil, nil, false, err
		}
		for _, sh := range sharers {
			inv.Action = fmt.Sprintf("publish %s, which %s shares", abbrev(recordTexts(want)), strings.TrimSuffix(sh.host, "."))
			inv.Chains, inv.Names = sh.served, []string{sh.host}
			if err := inv.Check(); err != nil {
				return nil, nil, false, err
			}
		}
	}
	// Record the intent first: from now on resolvers may see it.
	if err := e.wrote(ctx, st, t.DNS.Owner(), set, "tlsactl "+string(step), now); err != nil {
		return nil, nil, false, err
	}
	e.note(st, Event{At: now, Step: step, What: "publishing", Detail: abbrev(recordTexts(want))})
	if err := e.Store.Save(st); err != nil {
		return nil, nil, false, err
	}
	return &set, cur, true, nil
}

// confirm waits until every authoritative server serves rs and checks the
// provider still holds it.
func (e *Engine) confirm(ctx context.Context, st *State, t Target, step StepKind, rs RRSet) error {
	want := rs.Records
	if err := t.DNS.WaitServed(ctx, rs); err != nil {
		return fmt.Errorf("propagation: %w", err)
	}
	w, err := e.observeState(ctx, st, t)
	if err != nil {
		return err
	}
	if msg := w.servedEverywhere(want); msg != "" {
		return fmt.Errorf("propagation: confirmed, then %s (someone else changed the RRset?)", msg)
	}
	if now, err := w.provider(); err != nil {
		return err
	} else if !sameSet(now, want) {
		// A hidden primary serves the change everywhere while the
		// provider already holds someone else's: the next run repairs it.
		return fmt.Errorf("confirmed at every authoritative server, but the provider now holds %s (someone else changed the RRset)", abbrev(recordTexts(now)))
	}
	ttl := st.TTL
	if v, ok := w.ledger.Current(); ok {
		ttl = v.TTL
	}
	detail := "every authoritative server serves " + abbrev(recordTexts(want))
	if ttl != st.TTL {
		detail += fmt.Sprintf(" with TTL %d (asked for %d); waits use the TTL served", ttl, st.TTL)
	}
	e.note(st, Event{At: e.now(), Step: step, What: "confirmed", Detail: detail})
	e.fail("after-confirm")
	return nil
}

// sharer is what a host sharing the RRset serves.
type sharer struct {
	host   string
	served [][]*x509.Certificate
}

func servedBySharers(ctx context.Context, t Target) ([]sharer, error) {
	var out []sharer
	for _, p := range t.Sharing {
		served, err := p.Deployer.Served(ctx)
		if err != nil {
			return nil, fmt.Errorf("probing what %s serves (it shares the TLSA RRset): %w", strings.TrimSuffix(p.Host, "."), err)
		}
		out = append(out, sharer{host: p.Host, served: served})
	}
	return out, nil
}

// keepForSharers adds back to want the records of cur that a sharing host's
// served chain matches, when want alone matches it no more. It returns the
// new want and the records kept.
func keepForSharers(cur, want []tlsa.Record, sharers []sharer, now time.Time) ([]tlsa.Record, []tlsa.Record) {
	var kept []tlsa.Record
	for _, sh := range sharers {
		opts := tlsa.MatchOptions{Names: []string{sh.host}, Now: now}
		for _, ch := range sh.served {
			if tlsa.Match(ch, want, opts).Matched() {
				continue
			}
			for _, r := range cur {
				if !containsRec(want, r) && tlsa.Match(ch, []tlsa.Record{r}, opts).Matched() {
					want, kept = with(want, r), with(kept, r)
				}
			}
		}
	}
	return want, kept
}

// unconfirmed reports whether step published a change whose confirmation
// it has not recorded (a crash between the provider call and the
// confirmation): the resumed run confirms it, so the history says when.
func unconfirmed(st *State, step StepKind) bool {
	for i := len(st.History) - 1; i >= 0; i-- {
		ev := st.History[i]
		if ev.Step != step {
			continue
		}
		switch ev.What {
		case "publishing", "published":
			return true
		case "confirmed":
			return false
		}
	}
	return false
}

// settled observes the owner and checks that the plan's required records
// are still published and that every authoritative server serves the
// provider's RRset. It steps back when a required record is gone.
func (e *Engine) settled(ctx context.Context, st *State, t Target) (*seen, []tlsa.Record, error) {
	w, err := e.observeState(ctx, st, t)
	if err != nil {
		return nil, nil, err
	}
	cur, err := w.provider()
	if err != nil {
		return nil, nil, err
	}
	if err := e.stepBackIfGone(st, cur); err != nil {
		return nil, nil, err
	}
	if msg := w.servedEverywhere(cur); msg != "" {
		return nil, nil, waiting(st, e.now().Add(transientWait), "not every authoritative server serves the provider's RRset yet: %s", msg)
	}
	return w, cur, nil
}

// stepBackIfGone steps back when cur lacks a record the plan published.
func (e *Engine) stepBackIfGone(st *State, cur []tlsa.Record) error {
	if need := required(st); !containsAll(cur, need) {
		return e.stepBack(st, fmt.Sprintf("the %s this rollover published is no longer in the RRset %s (removed by someone else)", abbrev(recordTexts(need)), abbrev(recordTexts(cur))))
	}
	return nil
}

// waitEnd is when v has left every cache for a TTL wait: its supersession
// plus the larger of its served TTL and the rollover's, plus the margin.
func waitEnd(st *State, v Version) (time.Time, uint32) {
	ttl := max(v.TTL, st.TTL)
	return v.Superseded.Add(time.Duration(ttl)*time.Second + time.Duration(st.Margin)), ttl
}

// waitTTL waits until every RRset version without the plan's new records
// has left every cache: its successor's confirmation + its TTL as served +
// the margin.
func (e *Engine) waitTTL(ctx context.Context, st *State, t Target) error {
	w, _, err := e.settled(ctx, st, t)
	if err != nil {
		return err
	}
	need := required(st)
	margin := time.Duration(st.Margin)
	until := w.ledger.UnknownBefore(margin)
	var ttl uint32
	for _, v := range w.ledger.Versions {
		if containsAll(mustParse(v.Records), need) || v.Superseded.IsZero() {
			continue
		}
		if end, vt := waitEnd(st, v); end.After(until) {
			until, ttl = end, vt
		}
	}
	if e.now().Before(until) {
		return waiting(st, until, "the previous TLSA RRset may still be cached (TTL %s + margin %s)", time.Duration(ttl)*time.Second, margin)
	}
	return nil
}

// material returns the staged material and its chain.
func (e *Engine) material(st *State) (Material, []*x509.Certificate, error) {
	m, err := e.Store.GetMaterial(st.Host, stagedNew)
	if errors.Is(err, ErrNoMaterial) {
		return m, nil, fmt.Errorf("%w: provide it with `tlsactl rollover provide --host %s --cert FILE --key FILE`", ErrNeedMaterial, strings.TrimSuffix(st.Host, "."))
	} else if err != nil {
		return m, nil, err
	}
	chain, err := parseChain(m)
	if err != nil {
		return m, nil, err
	}
	// A provide that staged the material but died before saving the state
	// leaves a certificate the state (NewEE, checks) knows nothing about.
	if spki := spkiHex(chain[0]); spki != st.NewLeafSPKI {
		return m, nil, fmt.Errorf("%w: the staged certificate (SPKI %s…) is not the one this rollover recorded (an interrupted provide?): provide it again", ErrNeedMaterial, short(spki))
	}
	return m, chain, nil
}

// deployCheck is the invariant for serving chain beside what is served now,
// read from the freshly observed ledger: an unsafe result that waiting cures
// becomes a wait until then.
func (e *Engine) deployCheck(ctx context.Context, st *State, t Target, w *seen, served [][]*x509.Certificate, chain []*x509.Certificate, action string) error {
	now := e.now()
	margin := time.Duration(st.Margin)
	cur, _ := w.provider() // settled: every authoritative server serves it
	inv := Invariant{Action: action, Versions: w.ledger.Versions, Chains: append(slices.Clone(served), chain),
		Names: []string{st.Host}, Now: now, Margin: margin, UnknownUntil: w.ledger.UnknownBefore(margin),
		Current: cur, Pending: transientWait}
	err := inv.Check()
	if err == nil {
		err = e.peerCheck(ctx, st, t, chain, now)
	}
	var ue *UnsafeError
	if errors.As(err, &ue) && !ue.SafeAt.IsZero() {
		return waiting(st, ue.SafeAt, "%s", strings.TrimPrefix(ue.Error(), "refused to "))
	}
	return err
}

// verify (renew) checks the staged chain is covered by a published 2 x x
// that every RRset a cache may hold contains: published is not aged.
func (e *Engine) verify(ctx context.Context, st *State, t Target) error {
	_, chain, err := e.material(st)
	if err != nil {
		return err
	}
	w, cur, err := e.settled(ctx, st, t)
	if err != nil {
		return err
	}
	var tas []tlsa.Record
	for _, r := range cur {
		if r.Usage == tlsa.DANETA {
			tas = append(tas, r)
		}
	}
	if !tlsa.Match(chain, tas, tlsa.MatchOptions{Names: []string{st.Host}, Now: e.now()}).Matched() {
		return fmt.Errorf("the new certificate is not covered by a published 2 x x record (its CA differs, or the chain file lacks the CA certificate): use --plan ca-migration, or fix the chain file")
	}
	served, err := t.Deployer.Served(ctx)
	if err != nil {
		return fmt.Errorf("probing what %s serves: %w", st.Host, err)
	}
	return e.deployCheck(ctx, st, t, w, served, chain, "deploy the new certificate")
}

// deploy installs the staged certificate once every RRset a resolver may
// hold (by the owner's ledger, freshly observed, and every peer's) matches
// both the old and the new chain, and every authoritative server serves the
// RRset the check relies on.
func (e *Engine) deploy(ctx context.Context, st *State, t Target) error {
	m, chain, err := e.material(st)
	if err != nil {
		return err
	}
	served, err := t.Deployer.Served(ctx)
	if err != nil {
		return fmt.Errorf("probing what %s serves: %w", st.Host, err)
	}
	if allServe(served, chain[0]) {
		return nil // deployed before a crash
	}
	w, _, err := e.settled(ctx, st, t)
	if err != nil {
		return err
	}
	if err := e.deployCheck(ctx, st, t, w, served, chain, "deploy the new certificate"); err != nil {
		return err
	}
	// The files as they were before the rollover, kept once: a deploy
	// resumed after a crash restores these, not what the crash left.
	before := fmt.Sprintf("%s-%d", stagedBefore, st.Created.Unix())
	restore, err := e.Store.GetMaterial(st.Host, before)
	if errors.Is(err, ErrNoMaterial) {
		if restore, err = t.Deployer.Snapshot(ctx); err != nil {
			return fmt.Errorf("reading the current key and chain files before the deploy: %w", err)
		}
		if len(restore.ChainPEM) > 0 {
			if err := e.Store.PutMaterial(st.Host, before, restore); err != nil {
				return err
			}
		}
	} else if err != nil {
		return err
	}
	now := e.now()
	e.note(st, Event{At: now, Step: StepDeploy, What: "deploying", Detail: "new certificate SPKI " + short(st.NewLeafSPKI) + "…"})
	if err := e.Store.Save(st); err != nil {
		return err
	}
	e.fail("before-deploy")
	if err := t.Deployer.Deploy(ctx, m, restore); err != nil {
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
	e.note(st, Event{At: e.now(), Step: StepDeploy, What: "deployed", Detail: "every address serves the new certificate"})
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

// newTAs returns the new CA's 2 1 1 records: the issuer set, or NewTA.
func newTAs(st *State) []string {
	if len(st.NewTAs) > 0 {
		return st.NewTAs
	}
	return nonEmpty(st.NewTA)
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

// WaitUntil is when the versions superseded so far have left every cache,
// by the rollover's copy of its ledger: the latest supersession plus the
// largest TTL a cache may hold (as served, and at least the rollover's TTL)
// plus the margin. Zero when nothing was superseded.
func WaitUntil(st *State) time.Time {
	var last time.Time
	for _, v := range st.Versions {
		if v.Superseded.IsZero() {
			continue
		}
		if end, _ := waitEnd(st, v); end.After(last) {
			last = end
		}
	}
	return last
}
