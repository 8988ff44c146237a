package rollover

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"github.com/tlsactl/tlsactl/rollover/schedule"
	"github.com/tlsactl/tlsactl/tlsa"
)

// ta211Text is the 2 1 1 record of a CA certificate.
func ta211Text(ca *x509.Certificate) string {
	r, err := tlsa.Compute(tlsa.FromCertificate(ca), tlsa.DANETA, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	if err != nil {
		return ""
	}
	return r.String()
}

func sameTexts(a, b []string) bool { return sameSet(mustParse(a), mustParse(b)) }

// Plan is the dry run of a migration: for every host the RRset now, the
// records it gains and loses, its TTL and the earliest deploy start inside
// the windows; for the fleet when publishing starts, when the one TTL wait
// ends, when the last deploy finishes (deploys of DeployEstimate each,
// MaxParallel at a time, the canary first) and whether that meets the
// deadline, with advice when not. It reads each host's RRset from its
// provider and changes nothing. It cannot know when certificates arrive
// (it assumes in time) or what others change meanwhile.
func (f *Fleet) Plan(ctx context.Context, spec MigrationSpec, now time.Time) (*MigrationPlan, error) {
	spec.Hosts = slices.Clone(spec.Hosts)
	if err := spec.check(); err != nil {
		return nil, err
	}
	windows, _ := schedule.ParseAll(spec.Windows)
	cas, _ := spec.newCAs()
	var set []tlsa.Record
	for _, ca := range cas {
		set = with(set, mustParse([]string{ta211Text(ca)})...)
	}
	start := now
	if spec.NotBefore.After(now) {
		start = spec.NotBefore
	}
	p := &MigrationPlan{Name: spec.Name, Start: start, Deadline: spec.Deadline, Hosts: make([]PlannedHost, len(spec.Hosts))}
	waits := make([]uint32, len(spec.Hosts))
	idx := make([]int, len(spec.Hosts))
	for i := range idx {
		idx[i] = i
	}
	each(idx, f.workers(), func(i int) {
		h := spec.Hosts[i]
		ph := PlannedHost{Host: h.Host, Canary: h.Host == spec.Canary}
		defer func() { p.Hosts[i] = ph }()
		t, err := f.Engine.Target(h.Host)
		if err != nil {
			ph.Error = err.Error()
			return
		}
		cur, neg, err := t.DNS.Current(ctx)
		if err != nil {
			ph.Error = fmt.Sprintf("reading the TLSA RRset of %s: %v", t.DNS.Owner(), err)
			return
		}
		ph.Batch = "owner " + t.DNS.Owner()
		if b, ok := t.DNS.(BatchDNS); ok && b.BatchKey() != "" {
			ph.Batch = b.BatchKey()
		}
		ph.Current = recordTexts(cur.Records)
		ph.Publish = recordTexts(without(set, cur.Records))
		for _, r := range cur.Records {
			if r.Usage == tlsa.DANETA && !containsRec(set, r) {
				ph.Retire = append(ph.Retire, r.String())
			}
		}
		ph.TTL = spec.TTL
		if ph.TTL == 0 {
			ph.TTL = cur.TTL
		}
		if ph.TTL == 0 {
			ph.TTL = 3600
		}
		old := cur.TTL
		if len(cur.Records) == 0 {
			old = neg
		}
		waits[i] = max(ph.TTL, old)
	})
	batches := map[string]bool{}
	for i, ph := range p.Hosts {
		if ph.Error == "" {
			p.MaxTTL = max(p.MaxTTL, waits[i])
			batches[ph.Batch] = true
		}
	}
	p.Batches = len(batches)
	if len(batches) == 0 {
		return p, nil // no host can take part: no times to give
	}
	p.WaitUntil = start.Add(transientWait + time.Duration(p.MaxTTL)*time.Second + time.Duration(spec.Margin))
	p.Finish = schedulePlan(p, spec, windows, spec.MaxParallel, p.WaitUntil, true)
	p.MeetsDeadline = spec.Deadline.IsZero() || !p.Finish.After(spec.Deadline)
	if !p.MeetsDeadline {
		p.Advice = advise(p, spec, windows, now)
	}
	return p, nil
}

// schedulePlan assigns deploy starts to the plan's hosts (when write) and
// returns the finish: hosts in order, the canary alone first, each deploy
// starting inside a window at the first free slot of parallel.
func schedulePlan(p *MigrationPlan, spec MigrationSpec, ws schedule.Windows, parallel int, from time.Time, write bool) time.Time {
	d := time.Duration(spec.DeployEstimate)
	lanes := make([]time.Time, max(parallel, 1))
	for i := range lanes {
		lanes[i] = from
	}
	finish := from
	order := make([]int, 0, len(p.Hosts))
	for i, ph := range p.Hosts {
		if ph.Canary {
			order = append([]int{i}, order...)
		} else {
			order = append(order, i)
		}
	}
	for n, i := range order {
		if p.Hosts[i].Error != "" {
			continue
		}
		l := 0
		for k := range lanes {
			if lanes[k].Before(lanes[l]) {
				l = k
			}
		}
		at := lanes[l]
		if len(ws) > 0 {
			if s, _, ok := ws.Next(at); ok {
				at = s
			}
		}
		if write {
			p.Hosts[i].Deploy = at
		}
		end := at.Add(d)
		lanes[l] = end
		if end.After(finish) {
			finish = end
		}
		if n == 0 && p.Hosts[i].Canary {
			for k := range lanes {
				lanes[k] = end // the others start once the canary is done
			}
		}
	}
	return finish
}

// advise says what would meet the deadline the plan misses.
func advise(p *MigrationPlan, spec MigrationSpec, ws schedule.Windows, now time.Time) []string {
	var out []string
	fits := func(parallel int, ws schedule.Windows, start time.Time) (time.Time, bool) {
		wait := start.Add(p.WaitUntil.Sub(p.Start))
		fin := schedulePlan(p, spec, ws, parallel, wait, false)
		return fin, !fin.After(spec.Deadline)
	}
	for par := spec.MaxParallel + 1; par <= len(p.Hosts); par++ {
		if fin, ok := fits(par, ws, p.Start); ok {
			out = append(out, fmt.Sprintf("max_parallel = %d finishes %s", par, fin.UTC().Format(time.RFC3339)))
			break
		}
	}
	if len(ws) > 0 {
		if fin, ok := fits(spec.MaxParallel, nil, p.Start); ok {
			out = append(out, fmt.Sprintf("without deploy windows it finishes %s: widen them", fin.UTC().Format(time.RFC3339)))
		}
	}
	if p.Start.After(now) {
		// The latest start that still meets the deadline, by bisection
		// (the finish grows with the start).
		if _, ok := fits(spec.MaxParallel, ws, now); ok {
			lo, hi := now, p.Start
			for hi.Sub(lo) > time.Minute {
				mid := lo.Add(hi.Sub(lo) / 2)
				if _, ok := fits(spec.MaxParallel, ws, mid); ok {
					lo = mid
				} else {
					hi = mid
				}
			}
			out = append(out, fmt.Sprintf("not_before = %s or earlier meets it", lo.UTC().Truncate(time.Minute).Format(time.RFC3339)))
		}
	}
	if len(out) == 0 {
		out = append(out, fmt.Sprintf("nothing within these hosts' TTLs (%ds) and %d hosts meets it: lower the TLSA TTL well ahead, or split the migration", p.MaxTTL, len(p.Hosts)))
	}
	return out
}
