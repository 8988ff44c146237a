package rollover

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tlsactl/tlsactl/rollover/schedule"
)

// poll is how soon the migration looks again for what it cannot know the
// time of: a certificate that has not arrived, a step that failed.
func (f *Fleet) poll(m *Migration) time.Duration {
	switch {
	case m.Spec.Poll > 0:
		return time.Duration(m.Spec.Poll)
	case f.Poll > 0:
		return f.Poll
	}
	return time.Minute
}

// parseCAPEMs parses one PEM CA certificate per string.
func parseCAPEMs(pems []string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for i, p := range pems {
		b, _ := pem.Decode([]byte(p))
		if b == nil || b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("new CA %d: not a PEM certificate", i+1)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("new CA %d: %w", i+1, err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("new CA %d (%q) is not a CA certificate: a 2 1 1 must name the issuing CA", i+1, c.Subject.CommonName)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("the migration names no new CA certificate")
	}
	return out, nil
}

// check validates a spec and fills its defaults.
func (s *MigrationSpec) check() error {
	if err := CheckMigrationName(s.Name); err != nil {
		return err
	}
	if len(s.Hosts) == 0 {
		return fmt.Errorf("migration %s names no host", s.Name)
	}
	seen := map[string]bool{}
	for i, h := range s.Hosts {
		n, err := normHost(h.Host)
		if err != nil {
			return fmt.Errorf("migration %s: host %q: %w", s.Name, h.Host, err)
		}
		if seen[n] {
			return fmt.Errorf("migration %s names %s twice", s.Name, strings.TrimSuffix(n, "."))
		}
		seen[n] = true
		s.Hosts[i].Host = n
		if s.Hosts[i].Port == 0 {
			s.Hosts[i].Port = 25
		}
	}
	if _, err := s.newCAs(); err != nil {
		return fmt.Errorf("migration %s: %w", s.Name, err)
	}
	if _, err := schedule.ParseAll(s.Windows); err != nil {
		return fmt.Errorf("migration %s: %w", s.Name, err)
	}
	s.MaxParallel = max(s.MaxParallel, 1)
	s.MaxFailures = max(s.MaxFailures, 1)
	if s.Canary != "" {
		n, err := normHost(s.Canary)
		if err != nil || !seen[n] {
			return fmt.Errorf("migration %s: the canary %s is not one of its hosts", s.Name, s.Canary)
		}
		s.Canary = n
	}
	if s.DeployEstimate <= 0 {
		s.DeployEstimate = Duration(time.Minute)
	}
	if !s.Deadline.IsZero() && !s.NotBefore.IsZero() && !s.Deadline.After(s.NotBefore) {
		return fmt.Errorf("migration %s: the deadline %s is not after not_before %s", s.Name, s.Deadline.Format(time.RFC3339), s.NotBefore.Format(time.RFC3339))
	}
	return nil
}

func (f *Fleet) now() time.Time { return f.Engine.now() }

// lock takes the migration's lock: a lease of kind "migration" when the
// store is a Leaser. It returns the context to act with: the lease's held
// context (ended when the lease is lost, so every host step of the run
// stops), or ctx for a plain lock.
func (f *Fleet) lock(ctx context.Context, name string) (context.Context, func(), error) {
	l, _ := f.Store.(Leaser)
	return f.Engine.lockWith(ctx, name, l, LeaseMigration, f.Store.LockMigration)
}

// loadLocked takes the migration's lock and loads it: lock → reload → act,
// as for a host's rollover. The returned context is the one to act with
// (see lock); events the run records name Engine.Runner.
func (f *Fleet) loadLocked(ctx context.Context, name string) (*Migration, context.Context, func(), error) {
	held, unlock, err := f.lock(ctx, name)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := f.Store.LoadMigration(name)
	if err != nil {
		unlock()
		return nil, nil, nil, err
	}
	m.runner = f.Engine.Runner
	return m, held, unlock, nil
}

// Create validates spec and stores a new migration with every host
// pending. It changes nothing in DNS or on any server: the first Advance
// (tlsactl rollover run) starts publishing, at not_before. A host in
// another unfinished migration, or a name already used, is refused.
func (f *Fleet) Create(ctx context.Context, spec MigrationSpec) (*Migration, error) {
	spec.Hosts = slices.Clone(spec.Hosts)
	if err := spec.check(); err != nil {
		return nil, err
	}
	ctx, unlock, err := f.lock(ctx, spec.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if old, err := f.Store.LoadMigration(spec.Name); err == nil {
		return nil, fmt.Errorf("a migration named %s exists already (%s): choose another name", spec.Name, old.Status)
	} else if !errors.Is(err, ErrNoMigration) {
		return nil, err
	}
	names, err := f.Store.ListMigrations()
	if err != nil {
		return nil, err
	}
	mine := map[string]bool{}
	for _, h := range spec.Hosts {
		mine[h.Host] = true
	}
	for _, n := range names {
		other, err := f.Store.LoadMigration(n)
		if err != nil {
			return nil, err
		}
		if other.Final() {
			continue
		}
		for _, h := range other.Hosts {
			if mine[h.Host] {
				return nil, fmt.Errorf("%s is in migration %s (%s), which has not finished: finish or abort it first", strings.TrimSuffix(h.Host, "."), n, other.Status)
			}
		}
	}
	now := f.now()
	m := &Migration{Version: migrationFormat, Spec: spec, Status: MigrationActive, Created: now, Updated: now, runner: f.Engine.Runner}
	for _, h := range spec.Hosts {
		m.Hosts = append(m.Hosts, HostProgress{Host: h.Host, Port: h.Port, Phase: PhasePending, Since: now})
	}
	m.event(now, "", "created", fmt.Sprintf("%d hosts, %d new CA certificate(s), max_parallel %d, max_failures %d", len(spec.Hosts), len(spec.NewCAPEM), spec.MaxParallel, spec.MaxFailures))
	return m, f.Store.SaveMigration(m)
}

// Final reports whether the migration will do nothing more (done or
// aborted).
func (m *Migration) Final() bool { return m.Status == MigrationDone || m.Status == MigrationAborted }

// Counts returns how many hosts are in each phase.
func (m *Migration) Counts() map[HostPhase]int {
	out := map[HostPhase]int{}
	for _, h := range m.Hosts {
		out[h.Phase]++
	}
	return out
}

// Next is the earliest time a run can move the migration on: the first
// host's next action. Zero when the migration waits for nobody but the
// operator (paused, halted, done, aborted, or every host held).
func (m *Migration) Next() time.Time {
	if m.Status != MigrationActive {
		return time.Time{}
	}
	var next time.Time
	for _, h := range m.Hosts {
		switch h.Phase {
		case PhaseDone, PhaseHeld, PhaseRolledBack, PhaseWaitCanary:
			continue // final, the operator's, or the canary's
		}
		at := h.Next
		if at.IsZero() {
			at = m.Updated.Add(time.Second) // due now: the next run, not a busy loop
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

func (m *Migration) event(at time.Time, host, what, detail string) {
	m.History = append(m.History, MigrationEvent{At: at, Host: strings.TrimSuffix(host, "."), What: what, Detail: bounded(detail), Runner: m.runner})
}

// set moves host i to phase with reason and next; a change of phase is a
// history event.
func (m *Migration) set(i int, phase HostPhase, reason string, next, now time.Time) {
	h := &m.Hosts[i]
	if h.Phase != phase {
		m.event(now, h.Host, string(phase), reason)
		h.Phase, h.Since = phase, now
	}
	h.Reason, h.Next = bounded(reason), next
	if phase == PhaseDone && h.Done.IsZero() {
		h.Done = now
	}
}

// checkHalt halts the migration once max_failures hosts failed.
func (m *Migration) checkHalt(now time.Time) {
	if m.Failures >= m.Spec.MaxFailures && m.Status == MigrationActive {
		m.Status = MigrationHalted
		m.event(now, "", "halted", fmt.Sprintf("%d hosts failed (max_failures %d): no more deploys until `tlsactl migration resume %s`", m.Failures, m.Spec.MaxFailures, m.Spec.Name))
	}
}

// hold stops host i with reason; failed counts it towards max_failures.
func (m *Migration) hold(i int, reason string, failed bool, now time.Time) {
	m.set(i, PhaseHeld, reason, time.Time{}, now)
	if failed && !m.Hosts[i].Failed {
		m.Hosts[i].Failed = true
		m.Failures++
	}
}

func (m *Migration) index(host string) int {
	return slices.IndexFunc(m.Hosts, func(h HostProgress) bool { return h.Host == host })
}

// each runs fn for every index in idx, at most n at a time (in order when
// n is 1).
func each(idx []int, n int, fn func(i int)) {
	if n <= 1 {
		for _, i := range idx {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, n)
	for _, i := range idx {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}

func (f *Fleet) workers() int {
	if f.Workers > 0 {
		return f.Workers
	}
	return 8
}

// Advance moves the migration on as far as is safe and the schedule allows
// now, and saves it:
//
//  1. at not_before, a ca-migration rollover is started for every pending
//     host (a host that is not in a safe state, or has another rollover
//     under way, is held with the reason);
//  2. the new issuer set's 2 1 1 is published for every host at once, one
//     provider call per zone where the provider batches (PublishBatch),
//     and each host's rollover confirms it at every authoritative server;
//  3. each host's rollover waits out the TTL of the RRsets without it — all
//     published together, so the fleet waits once;
//  4. new certificates are taken from the source as they arrive;
//  5. inside a deploy window, hosts are deployed at most max_parallel at a
//     time (the canary first, alone), each by its own rollover, which
//     checks the deploy against its ledger, replaces the 3 1 1 and retires
//     the old CA's records. A failed deploy holds the host (its files are
//     restored); at max_failures the migration halts: no more deploys.
//
// A paused, halted, done or aborted migration is only reported (halted:
// hosts before their deploy still publish and wait). Every host step is an
// ordinary rollover step, so a crash anywhere resumes at the next run.
func (f *Fleet) Advance(ctx context.Context, name string) (*Migration, error) {
	m, ctx, unlock, err := f.loadLocked(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if m.Status != MigrationActive && m.Status != MigrationHalted {
		return m, nil
	}
	now := f.now()
	m.Updated = now
	if now.Before(m.Spec.NotBefore) {
		for i := range m.Hosts {
			if m.Hosts[i].Phase == PhasePending {
				m.set(i, PhasePending, "not before "+m.Spec.NotBefore.UTC().Format(time.RFC3339), m.Spec.NotBefore, now)
			}
		}
		return m, f.Store.SaveMigration(m)
	}
	var errs []error
	f.startHosts(ctx, m)
	m.checkHalt(f.now())
	f.Engine.fail("fleet:started")
	if err := f.Store.SaveMigration(m); err != nil {
		return m, err
	}
	f.publishAll(ctx, m)
	f.Engine.fail("fleet:published")
	f.fetchAll(ctx, m, f.advanceAll(ctx, m))
	if err := f.Store.SaveMigration(m); err != nil {
		return m, err
	}
	if err := f.deploy(ctx, m); err != nil {
		errs = append(errs, err)
	}
	f.finish(m)
	if err := f.Store.SaveMigration(m); err != nil {
		errs = append(errs, err)
	}
	return m, errors.Join(errs...)
}

// hostsIn returns the indexes of hosts in one of the phases.
func (m *Migration) hostsIn(phases ...HostPhase) []int {
	var out []int
	for i, h := range m.Hosts {
		if slices.Contains(phases, h.Phase) {
			out = append(out, i)
		}
	}
	return out
}

// startHosts starts the rollover of every pending host.
func (f *Fleet) startHosts(ctx context.Context, m *Migration) {
	idx := m.hostsIn(PhasePending)
	if len(idx) == 0 {
		return
	}
	cas, err := m.Spec.newCAs()
	if err != nil {
		for _, i := range idx {
			m.hold(i, err.Error(), true, f.now())
		}
		return
	}
	type result struct {
		st  *State
		err error
	}
	res := make([]result, len(m.Hosts))
	each(idx, f.workers(), func(i int) {
		h := m.Hosts[i]
		if st, err := f.Engine.Store.Load(h.Host); err == nil && st.Status == StatusActive {
			if f.adopt(m, st, cas) {
				res[i] = result{st: st}
			} else {
				res[i] = result{err: fmt.Errorf("another %s rollover is under way (step %s): finish it (rollover run) or abort it, then resume the migration", st.Plan, st.CurrentStep())}
			}
			return
		}
		st, err := f.Engine.Start(ctx, StartRequest{Host: h.Host, Port: h.Port, Plan: PlanCAMigration, NewCAs: cas,
			TTL: m.Spec.TTL, Margin: time.Duration(m.Spec.Margin), Migration: m.Spec.Name})
		res[i] = result{st: st, err: err}
	})
	now := f.now()
	for _, i := range idx {
		r := res[i]
		if r.err != nil {
			m.hold(i, "not started: "+r.err.Error(), true, now)
			continue
		}
		m.Hosts[i].Rollover = r.st.Created
		f.Engine.fail("fleet:after-start")
		m.set(i, PhasePublishing, "rollover started", time.Time{}, now)
	}
}

// adopt reports whether an active rollover is this migration's own (its
// start was not saved in the migration before a crash); cas is the
// migration's issuer set.
func (f *Fleet) adopt(m *Migration, st *State, cas []*x509.Certificate) bool {
	if st.Plan != PlanCAMigration || st.Created.Before(m.Created) || st.Migration != m.Spec.Name {
		return false
	}
	var want []string
	for _, ca := range cas {
		want = append(want, ta211Text(ca))
	}
	return sameTexts(want, newTAs(st))
}

// rolling returns the hosts whose rollover this migration runs.
func (m *Migration) rolling() []int {
	var out []int
	for i, h := range m.Hosts {
		if !h.Rollover.IsZero() && h.Phase != PhaseDone && h.Phase != PhaseRolledBack {
			out = append(out, i)
		}
	}
	return out
}

// publishAll publishes, batched, every host's issuer set that is due.
func (f *Fleet) publishAll(ctx context.Context, m *Migration) {
	var hosts []string
	for _, i := range m.rolling() {
		if m.Hosts[i].Phase == PhasePublishing {
			hosts = append(hosts, m.Hosts[i].Host)
		}
	}
	if len(hosts) == 0 {
		return
	}
	for host, err := range f.Engine.publishBatch(ctx, hosts, f.workers()) {
		if i := m.index(host); i >= 0 {
			m.Hosts[i].Reason = bounded(err.Error())
		}
	}
}

// advanceAll advances every host's rollover up to its deploy (hosts past
// it finish), sets each host's phase from its rollover and returns the
// rollover states by host index (nil for hosts not advanced).
func (f *Fleet) advanceAll(ctx context.Context, m *Migration) []*State {
	idx := m.rolling()
	outs := make([]Outcome, len(m.Hosts))
	errs := make([]error, len(m.Hosts))
	each(idx, f.workers(), func(i int) {
		outs[i], errs[i] = f.Engine.advance(ctx, m.Hosts[i].Host, StepDeploy, true)
	})
	now := f.now()
	for _, i := range idx {
		if m.Hosts[i].Phase == PhaseHeld {
			continue // observed (and a removed record republished), nothing more
		}
		f.phaseFromState(m, i, outs[i].State, errs[i], now)
	}
	states := make([]*State, len(m.Hosts))
	for i, out := range outs {
		states[i] = out.State
	}
	return states
}

// phaseFromState sets host i's phase from its rollover state after a run
// that returned err.
func (f *Fleet) phaseFromState(m *Migration, i int, st *State, err error, now time.Time) {
	if err != nil && (errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrStoreUnavailable)) {
		// The run was cut off from the store: st may be ahead of what was
		// stored (a step done, its save refused). The phase stays what the
		// store last confirmed; the runner that holds the host next goes on
		// from the stored state.
		m.Hosts[i].Reason, m.Hosts[i].Next = bounded(err.Error()), now.Add(f.poll(m))
		return
	}
	if st == nil {
		if err != nil {
			m.Hosts[i].Reason, m.Hosts[i].Next = bounded(err.Error()), now.Add(f.poll(m))
		}
		return
	}
	reason, next := "", st.NotBefore
	if err != nil {
		reason, next = err.Error(), now.Add(f.poll(m))
	} else if n := len(st.History); n > 0 && st.History[n-1].What == "waiting" && st.NotBefore.After(now) {
		// Only while the wait holds: a wait that has run out says nothing
		// of where the host is now.
		reason = st.History[n-1].Detail
	}
	switch st.Status {
	case StatusDone:
		m.set(i, PhaseDone, "new certificate served, records final", time.Time{}, now)
		return
	case StatusAborted:
		m.set(i, PhaseRolledBack, "the rollover was aborted", time.Time{}, now)
		return
	}
	deployAt := stepIndex(st.Plan, StepDeploy)
	switch {
	case st.Step < stepIndex(st.Plan, StepWaitTTL):
		m.set(i, PhasePublishing, orText(reason, "publishing the new issuer set"), next, now)
	case st.Step < deployAt:
		m.set(i, PhaseWaitTTL, orText(reason, "the RRsets without the new issuer set may still be cached"), next, now)
	case st.Step == deployAt && st.NewEE == "":
		if next.IsZero() || next.Before(now) {
			next = now.Add(f.poll(m))
		}
		m.set(i, PhaseWaitCert, orText(m.Hosts[i].Reason, "the new certificate has not arrived"), next, now)
	case st.Step == deployAt:
		if ph := m.Hosts[i].Phase; (ph == PhaseWaitCanary || ph == PhaseWaitWindow) && reason == "" {
			return // the schedule's gate stands until deploy lifts it
		}
		m.set(i, PhaseReady, orText(reason, "may deploy"), next, now)
	default:
		if m.Hosts[i].Deployed.IsZero() {
			m.Hosts[i].Deployed = now
		}
		m.set(i, PhaseDeploying, orText(reason, "deployed; replacing the 3 1 1 and retiring the old CA"), next, now)
	}
}

func orText(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// fetchAll stages the certificates that arrived for hosts that wait for
// one; states are the hosts' rollover states as advanceAll left them.
func (f *Fleet) fetchAll(ctx context.Context, m *Migration, states []*State) {
	if f.Source == nil {
		return
	}
	src, err := f.Source(m)
	if err != nil || src == nil {
		if err != nil {
			for _, i := range m.hostsIn(PhaseWaitCert) {
				m.Hosts[i].Reason = "certificate source: " + bounded(err.Error())
			}
		}
		return
	}
	var idx []int
	for _, i := range m.rolling() {
		switch m.Hosts[i].Phase {
		case PhasePublishing, PhaseWaitTTL, PhaseWaitCert:
			if st := states[i]; st != nil && st.NewEE == "" {
				idx = append(idx, i)
			}
		}
	}
	reasons := make([]string, len(m.Hosts))
	staged := make([]*State, len(m.Hosts))
	each(idx, f.workers(), func(i int) {
		mat, err := src.Fetch(ctx, m.Hosts[i].Host)
		switch {
		case err != nil:
			reasons[i] = "certificate source: " + err.Error()
		case mat == nil:
		default:
			st, err := f.Engine.Provide(ctx, m.Hosts[i].Host, *mat)
			if err != nil {
				reasons[i] = "the new certificate was refused: " + err.Error()
			}
			staged[i] = st
		}
	})
	now := f.now()
	for _, i := range idx {
		switch {
		case staged[i] != nil:
			m.event(now, m.Hosts[i].Host, "certificate", "new certificate staged")
			if m.Hosts[i].Phase == PhaseWaitCert {
				f.phaseFromState(m, i, staged[i], nil, now)
			}
		case reasons[i] != "":
			m.Hosts[i].Reason = bounded(reasons[i])
		}
	}
}

// deploy deploys the ready hosts the schedule allows now: the canary
// alone first, then the others through max_parallel slots, each slot taking
// the next host as soon as its deploy is over. A host starts only inside a
// window and while the migration has not halted.
func (f *Fleet) deploy(ctx context.Context, m *Migration) error {
	windows, err := schedule.ParseAll(m.Spec.Windows)
	if err != nil {
		return err
	}
	canary := m.index(m.Spec.Canary)
	for {
		now := f.now()
		ready := m.hostsIn(PhaseReady, PhaseWaitCanary, PhaseWaitWindow)
		if len(ready) == 0 {
			return nil
		}
		if m.Status == MigrationHalted {
			for _, i := range ready {
				m.set(i, PhaseReady, fmt.Sprintf("the migration halted after %d failed hosts (max_failures %d): fix them, then `tlsactl migration resume %s`", m.Failures, m.Spec.MaxFailures, m.Spec.Name), time.Time{}, now)
			}
			return nil
		}
		var due []int
		for _, i := range ready {
			if h := m.Hosts[i]; h.Next.After(now) && h.Phase == PhaseReady {
				continue // the deploy check said when
			}
			due = append(due, i)
		}
		if len(due) == 0 {
			return nil
		}
		if start, _, ok := windows.Next(now); len(windows) > 0 && (!ok || start.After(now)) {
			for _, i := range due {
				m.set(i, PhaseWaitWindow, fmt.Sprintf("outside the deploy windows; the next opens %s", start.UTC().Format(time.RFC3339)), start, now)
			}
			return nil
		}
		if canary >= 0 && m.Hosts[canary].Phase != PhaseDone {
			why := "the canary " + strings.TrimSuffix(m.Spec.Canary, ".") + " deploys and finishes first"
			if m.Hosts[canary].Phase == PhaseHeld {
				why = "the canary " + strings.TrimSuffix(m.Spec.Canary, ".") + " is held; fix it and resume the migration"
			}
			for _, i := range due {
				if i != canary {
					m.set(i, PhaseWaitCanary, why, time.Time{}, now)
				}
			}
			if !slices.Contains(due, canary) {
				return nil
			}
			due = []int{canary}
		}
		progressed, err := f.deploySlots(ctx, m, due, windows)
		if err != nil || !progressed {
			return err
		}
	}
}

// deploySlots deploys the hosts due through max_parallel slots (one when
// the fleet runs sequentially) and reports whether any host moved on.
func (f *Fleet) deploySlots(ctx context.Context, m *Migration, due []int, windows schedule.Windows) (bool, error) {
	n := m.Spec.MaxParallel // max_parallel, not Workers, bounds deploys
	if f.Workers == 1 {
		n = 1
	}
	var mu sync.Mutex // guards m from the slots
	var saveErr error
	progressed := false
	each(due, min(n, len(due)), func(i int) {
		mu.Lock()
		now := f.now()
		switch {
		case m.Status != MigrationActive:
			mu.Unlock()
			return // halted by a failure in another slot
		case len(windows) > 0 && !windows.Contains(now):
			// A deploy starts inside a window (it may run past its end).
			start, _, _ := windows.Next(now)
			m.set(i, PhaseWaitWindow, fmt.Sprintf("the deploy window closed; the next opens %s", start.UTC().Format(time.RFC3339)), start, now)
			mu.Unlock()
			return
		}
		m.set(i, PhaseDeploying, "deploying", time.Time{}, now)
		saveErr = errors.Join(saveErr, f.Store.SaveMigration(m))
		mu.Unlock()

		out, err := f.Engine.advance(ctx, m.Hosts[i].Host, "", true)

		mu.Lock()
		defer mu.Unlock()
		now = f.now()
		st := out.State
		if st != nil && st.CurrentStep() == StepDeploy && st.Status == StatusActive && err != nil && !interrupted(ctx, err) {
			m.hold(i, "deploy failed: "+err.Error()+" (files restored; fix it, then `tlsactl migration resume "+m.Spec.Name+"`)", true, now)
			progressed = true
			m.checkHalt(now)
		} else {
			f.phaseFromState(m, i, st, err, now)
			progressed = progressed || m.Hosts[i].Phase != PhaseReady
		}
		saveErr = errors.Join(saveErr, f.Store.SaveMigration(m))
	})
	return progressed, saveErr
}

// interrupted reports whether a deploy's error says the runner was stopped
// rather than that the deploy failed: the lease on the host was lost, the
// shared store could not be reached, another process holds the host, or
// the pass itself was cancelled. Such a host is not held (a hold counts
// towards max_failures and waits for an operator): the runner that holds
// the host next resumes the deploy, as after a crash.
func interrupted(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrStoreUnavailable) || errors.Is(err, ErrLocked)
}

// deployedSomewhere reports whether an address of the host serves the
// rollover's new certificate (a deploy that a crash kept from being
// recorded): abort then finishes the host instead of rolling it back. When
// the server cannot be probed it says no: Engine.Abort probes again and
// refuses to take back records a served chain needs.
func (f *Fleet) deployedSomewhere(ctx context.Context, st *State) bool {
	if st.NewLeafSPKI == "" {
		return false
	}
	t, err := f.Engine.Target(st.Host)
	if err != nil {
		return false
	}
	served, err := t.Deployer.Served(ctx)
	if err != nil {
		return false
	}
	for _, c := range served {
		if len(c) > 0 && spkiHex(c[0]) == st.NewLeafSPKI {
			return true
		}
	}
	return false
}

// finish marks the migration done when every host is.
func (f *Fleet) finish(m *Migration) {
	if c := m.Counts(); c[PhaseDone] < len(m.Hosts) {
		for _, h := range m.Hosts {
			if h.Phase == PhaseWaitTTL && h.Next.After(m.WaitUntil) {
				m.WaitUntil = h.Next // when the fleet's TTL wait ends
			}
		}
		return
	}
	if m.Status != MigrationDone {
		m.Status = MigrationDone
		m.event(f.now(), "", "done", fmt.Sprintf("every host serves a certificate from the new CA; %d failed on the way", m.Failures))
	}
}

// Pause stops the migration until Resume: no host is advanced (not even
// by `tlsactl rollover run`). It changes nothing in DNS.
func (f *Fleet) Pause(ctx context.Context, name string) (*Migration, error) {
	return f.update(ctx, name, func(m *Migration, now time.Time) error {
		if m.Final() {
			return fmt.Errorf("migration %s is %s", name, m.Status)
		}
		m.Status = MigrationPaused
		m.event(now, "", "paused", "")
		return nil
	})
}

// Resume continues a paused or halted migration; held hosts are retried
// (their failures no longer count).
func (f *Fleet) Resume(ctx context.Context, name string) (*Migration, error) {
	return f.update(ctx, name, func(m *Migration, now time.Time) error {
		if m.Final() {
			return fmt.Errorf("migration %s is %s", name, m.Status)
		}
		m.Status, m.Failures = MigrationActive, 0
		for i := range m.Hosts {
			h := &m.Hosts[i]
			h.Failed = false
			if h.Phase == PhaseHeld {
				phase := PhasePending
				if !h.Rollover.IsZero() {
					phase = PhaseReady // phaseFromState corrects it at the next run
				}
				m.set(i, phase, "resumed", time.Time{}, now)
			}
		}
		m.event(now, "", "resumed", "held hosts are retried")
		return nil
	})
}

func (f *Fleet) update(ctx context.Context, name string, fn func(*Migration, time.Time) error) (*Migration, error) {
	m, ctx, unlock, err := f.loadLocked(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	now := f.now()
	if err := fn(m, now); err != nil {
		return m, err
	}
	m.Updated = now
	return m, f.Store.SaveMigration(m)
}

// Abort ends the migration: every host not yet deployed is rolled back
// (its rollover aborted, which takes back the 2 1 1 records it added and
// nothing else), and every host already deployed is finished (its 3 1 1
// replaced, the old CA retired), so each is left consistent. The migration
// is paused first: when a host cannot be rolled back now (a provider
// error), Abort says which and stays paused, and running it again goes on.
func (f *Fleet) Abort(ctx context.Context, name string) (*Migration, error) {
	m, ctx, unlock, err := f.loadLocked(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if m.Final() {
		return m, fmt.Errorf("migration %s is already %s", name, m.Status)
	}
	now := f.now()
	m.Status, m.Updated = MigrationPaused, now
	m.event(now, "", "aborting", "")
	if err := f.Store.SaveMigration(m); err != nil {
		return m, err
	}
	var idx []int
	for i, h := range m.Hosts {
		switch {
		case h.Phase == PhaseDone || h.Phase == PhaseRolledBack:
		case h.Rollover.IsZero():
			m.set(i, PhaseRolledBack, "aborted before its rollover started", time.Time{}, now)
		default:
			idx = append(idx, i)
		}
	}
	errs := make([]error, len(m.Hosts))
	states := make([]*State, len(m.Hosts))
	each(idx, f.workers(), func(i int) {
		host := m.Hosts[i].Host
		st, err := f.Engine.Store.Load(host)
		if err != nil {
			errs[i] = err
			return
		}
		if st.Status == StatusActive && st.Step <= stepIndex(st.Plan, StepDeploy) && !f.deployedSomewhere(ctx, st) {
			states[i], errs[i] = f.Engine.Abort(ctx, host)
			return
		}
		if st.Status == StatusActive {
			out, err := f.Engine.advance(ctx, host, "", true)
			states[i], errs[i] = out.State, err
			return
		}
		states[i] = st
	})
	now = f.now()
	var failed []error
	for _, i := range idx {
		if errs[i] != nil {
			failed = append(failed, fmt.Errorf("%s: %w", strings.TrimSuffix(m.Hosts[i].Host, "."), errs[i]))
			m.Hosts[i].Reason = "abort: " + bounded(errs[i].Error())
			continue
		}
		f.phaseFromState(m, i, states[i], nil, now)
	}
	if len(failed) == 0 {
		m.Status = MigrationAborted
		m.event(now, "", "aborted", fmt.Sprintf("%d rolled back, %d finished", m.Counts()[PhaseRolledBack], m.Counts()[PhaseDone]))
	}
	if err := f.Store.SaveMigration(m); err != nil {
		failed = append(failed, err)
	}
	return m, errors.Join(failed...)
}
