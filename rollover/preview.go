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
// known yet). It is pure.
func Preview(plan Plan, current []tlsa.Record, ttl, oldTTL uint32, newTA, newEE, next string, margin, prop time.Duration, now time.Time) []PlannedStep {
	recs := dedup(current)
	var oldEE, oldTA []tlsa.Record
	for _, r := range recs {
		switch r.Usage {
		case tlsa.DANEEE:
			oldEE = append(oldEE, r)
		case tlsa.DANETA:
			oldTA = append(oldTA, r)
		}
	}
	parse := func(s string) []tlsa.Record {
		if s == "" {
			return nil
		}
		r, err := tlsa.ParseRecord(s)
		if err != nil {
			return nil
		}
		return []tlsa.Record{r}
	}
	ta, ee, nx := parse(newTA), parse(newEE), parse(next)
	oldTA = without(oldTA, ta)
	oldEE = without(oldEE, nx)
	wait := time.Duration(max(ttl, oldTTL))*time.Second + margin
	t := now
	var out []PlannedStep
	add := func(k StepKind, note string) {
		out = append(out, PlannedStep{Step: k, Records: recordTexts(recs), Earliest: t, Note: note})
	}
	for _, k := range plan.Steps() {
		switch k {
		case StepVerify:
			add(k, "the new chain must be covered by a published 2 x x")
		case StepPublishTA:
			recs, t = with(recs, ta...), t.Add(prop)
			add(k, "beside the old CA's 2 x x; confirmed at every authoritative server")
		case StepPublishNext:
			recs, t = with(recs, nx...), t.Add(prop)
			add(k, "beside the current 3 x x")
		case StepWaitTTL:
			t = t.Add(wait)
			add(k, "the previous RRset leaves every cache (TTL + margin)")
		case StepDeploy:
			add(k, "write files, reload, probe until served")
		case StepReplaceEE:
			if len(ee) > 0 {
				recs = with(without(recs, oldEE), ee...)
			}
			t = t.Add(prop)
			add(k, "")
		case StepRetireTA:
			recs, t = without(recs, oldTA), t.Add(prop)
			add(k, "")
		case StepRetireEE:
			recs, t = without(recs, oldEE), t.Add(prop)
			add(k, "")
		case StepDone:
			add(k, "")
		}
	}
	return out
}
