package rollover

import (
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// PlannedStep is one step of a rollover preview.
type PlannedStep struct {
	Step     StepKind  `json:"step"`
	Records  []string  `json:"records_after"` // the RRset after the step
	Earliest time.Time `json:"earliest"`      // the earliest time the step can finish
	Note     string    `json:"note,omitempty"`
}

// Preview lists what a rollover would do, without doing it: the RRset after
// each step and the earliest time each step can finish, assuming propagation
// takes prop and the new certificate is at hand. current is the RRset now;
// newTA, newEE and next are the records the plan introduces ("" when not
// known yet). It runs the same step table as Advance (each step's RRset
// function and wait), so the dry run cannot drift from what runs. It is
// pure, and it cannot know what others will change meanwhile.
func Preview(plan Plan, current []tlsa.Record, ttl, oldTTL uint32, newTA, newEE, next string, margin, prop time.Duration, now time.Time) []PlannedStep {
	st := &State{Plan: plan, NewTA: valid(newTA), NewEE: valid(newEE), Next: valid(next)}
	fillOld(st, current)
	recs := dedup(current)
	wait := time.Duration(max(ttl, oldTTL))*time.Second + margin
	t := now
	var out []PlannedStep
	for _, k := range plan.Steps() {
		def := stepTable[k]
		if def.rrset != nil {
			after := def.rrset(st, recs)
			if !sameSet(after, recs) {
				t = t.Add(prop)
			}
			recs = after
		}
		if def.waitsTTL {
			t = t.Add(wait)
		}
		out = append(out, PlannedStep{Step: k, Records: recordTexts(recs), Earliest: t, Note: def.note})
	}
	return out
}

func valid(s string) string {
	if s == "" {
		return ""
	}
	if _, err := tlsa.ParseRecord(s); err != nil {
		return ""
	}
	return s
}

// fillOld sets the records a plan retires from the RRset it starts with:
// the 3 x x (but the next key's) and the 2 x x (but the new CA's).
func fillOld(st *State, cur []tlsa.Record) {
	var oldEE, oldTA []tlsa.Record
	for _, r := range dedup(cur) {
		switch r.Usage {
		case tlsa.DANEEE:
			oldEE = append(oldEE, r)
		case tlsa.DANETA:
			oldTA = append(oldTA, r)
		}
	}
	st.OldEE = recordTexts(without(oldEE, mustParse(nonEmpty(st.Next))))
	st.OldTA = recordTexts(without(oldTA, mustParse(newTAs(st))))
}
