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
	if t.DNS.Owner() != st.Owner && st.Owner != "" {
		err := fmt.Errorf("the TLSA owner senders query for %s is now %s, not %s as when the rollover started (a CNAME changed?): abort the rollover and start again", host, t.DNS.Owner(), st.Owner)
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
		case errors.Is(err, errSteppedBack):
			st.LastError = ""
			if err := e.Store.Save(st); err != nil {
				return Outcome{State: st}, err
			}
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
			st.LastError = bounded(err.Error())
			st.History = append(st.History, Event{At: now, Step: step, What: "error", Detail: st.LastError})
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

// bounded cuts a message kept in state and history to a few hundred bytes:
// error texts may carry what a server sent.
func bounded(s string) string {
	const limit = 600
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "… (cut)"
}
