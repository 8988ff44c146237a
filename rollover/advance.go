package rollover

import (
	"context"
	"errors"
	"fmt"
	"time"
)

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
// material, an RRset that is not aged yet), or at the first error (recorded
// in the state; a later run retries). Every step observes the world first.
//
// A rollover a fleet migration started (State.Migration) stops before its
// deploy: the migration's schedule (windows, max_parallel, canary) decides
// when it deploys, not whoever calls Advance (a hook, `rollover run`).
func (e *Engine) Advance(ctx context.Context, host string) (Outcome, error) {
	return e.advance(ctx, host, "", false)
}

// advance is Advance that stops, waiting, when the rollover reaches step
// stop (before running it; "" never stops). byFleet: the fleet migration
// the rollover belongs to runs it, so it is not held for the schedule.
// Waits and step-back checks before stop run as in Advance.
func (e *Engine) advance(ctx context.Context, host string, stop StepKind, byFleet bool) (Outcome, error) {
	st, ctx, unlock, err := e.loadLocked(ctx, host)
	if err != nil {
		return Outcome{}, err
	}
	defer unlock()
	held := "held for the migration's schedule"
	if st.Migration != "" && !byFleet && stop == "" {
		stop, held = StepDeploy, fmt.Sprintf("the deploy is scheduled by migration %s (tlsactl migration status %s)", st.Migration, st.Migration)
	}
	host = st.Host
	t, err := e.Target(host)
	if err != nil {
		return Outcome{State: st}, err
	}
	if t.DNS.Owner() != st.Owner && st.Owner != "" {
		err := fmt.Errorf("the TLSA owner senders query for %s is now %s, not %s as when the rollover started (a CNAME changed?): abort the rollover and start again", host, t.DNS.Owner(), st.Owner)
		return Outcome{State: st}, err
	}
	for st.Status == StatusActive {
		step := st.CurrentStep()
		now := e.now()
		if now.Before(st.NotBefore) {
			// Waiting is no reason to look away: a record the plan
			// published that someone removed meanwhile is published again
			// now, not after the wait it made pointless.
			if err := e.stillPublished(ctx, st, t); errors.Is(err, errSteppedBack) {
				if err := e.Store.Save(st); err != nil {
					return Outcome{State: st}, err
				}
				continue
			} else if err != nil {
				return e.failed(st, step, now, err)
			}
			if err := e.Store.Save(st); err != nil {
				return Outcome{State: st}, err
			}
			return Outcome{State: st, Waiting: true, Reason: fmt.Sprintf("%s: not before %s", step, st.NotBefore.UTC().Format(time.RFC3339))}, nil
		}
		if stop != "" && step == stop {
			if err := e.Store.Save(st); err != nil {
				return Outcome{State: st}, err
			}
			return Outcome{State: st, Waiting: true, Reason: fmt.Sprintf("%s: %s", step, held)}, nil
		}
		if step == StepDone {
			st.Status = StatusDone
			e.note(st, Event{At: now, Step: step, What: "done", Detail: "rollover complete"})
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
		case errors.Is(err, errSteppedBack):
			st.LastError = ""
			if err := e.Store.Save(st); err != nil {
				return Outcome{State: st}, err
			}
			continue
		case errors.Is(err, ErrWaiting), errors.Is(err, ErrNeedMaterial):
			st.LastError = ""
			if len(st.History) == 0 || st.History[len(st.History)-1].Detail != err.Error() {
				e.note(st, Event{At: now, Step: step, What: "waiting", Detail: err.Error()})
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
			return e.failed(st, step, now, err)
		}
	}
	if err := e.Store.Save(st); err != nil {
		return Outcome{State: st}, err
	}
	return Outcome{State: st}, nil
}

// failed records err as the step's last error and in the history.
func (e *Engine) failed(st *State, step StepKind, now time.Time, err error) (Outcome, error) {
	st.LastError = bounded(err.Error())
	e.note(st, Event{At: now, Step: step, What: "error", Detail: st.LastError})
	if serr := e.Store.Save(st); serr != nil {
		return Outcome{State: st}, errors.Join(err, serr)
	}
	return Outcome{State: st}, fmt.Errorf("%s, step %s: %w", st.Host, step, err)
}

// bounded cuts a message kept in state and history to a few hundred bytes:
// error texts may carry what a server sent.
func bounded(s string) string {
	const limit = 600
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "… (cut)"
}

// stillPublished observes a waiting rollover whose later steps rely on a
// record it published, and steps back when that record is gone. A failed
// observation is no news: the wait goes on.
func (e *Engine) stillPublished(ctx context.Context, st *State, t Target) error {
	switch st.CurrentStep() {
	case StepWaitTTL, StepDeploy:
	default:
		return nil
	}
	if len(required(st)) == 0 {
		return nil
	}
	w, err := e.observeState(ctx, st, t)
	if err != nil {
		return nil
	}
	cur, err := w.provider()
	if err != nil {
		return nil
	}
	return e.stepBackIfGone(st, cur)
}
