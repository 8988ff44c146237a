package rollover

import (
	"context"
	"fmt"

	"github.com/tlsactl/tlsactl/tlsa"
)

// Abort stops a rollover safely. Before the new certificate is deployed it
// takes back the records the rollover added (the new CA's 2 1 1, the next
// key's 3 1 1) and nothing that was there before it started, checked against
// what the server serves; after the deploy, DNS is in a safe state at every
// step boundary and abort only stops the rollover.
func (e *Engine) Abort(ctx context.Context, host string) (*State, error) {
	st, ctx, unlock, err := e.loadLocked(ctx, host)
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
	if idx := stepIndex(st.Plan, StepDeploy); idx >= 0 && st.Step <= idx {
		added := mustParse(st.Added)
		if st.Version < 2 { // state written before Added existed
			added = mustParse(append(newTAs(st), nonEmpty(st.Next)...))
		}
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
				e.note(st, Event{At: now, Step: st.CurrentStep(), What: "error", Detail: "abort: " + bounded(err.Error())})
				_ = e.Store.Save(st)
				return st, fmt.Errorf("abort: %w", err)
			}
		}
	}
	st.Status = StatusAborted
	e.note(st, Event{At: e.now(), Step: st.CurrentStep(), What: "aborted", Detail: "DNS left in a state that matches what the server serves"})
	return st, e.Store.Save(st)
}
