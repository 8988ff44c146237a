package rollover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tlsactl/tlsactl/tlsa"
)

// PublishBatch makes the publication step of every host's rollover that is
// at it (StepPublishTA, StepPublishNext) with one provider call per batch:
// hosts whose DNS is a BatchDNS with the same key (one provider, one zone;
// for RFC 2136 one UPDATE message). Each host is checked as a single
// publish would be (observed first, the invariant, hosts sharing the
// RRset) and its intent recorded in its ledger and state before the call;
// confirming at every authoritative server is left to the host's next
// Advance, which recognises the change as made. Hosts at another step, not
// due yet (NotBefore), or whose DNS cannot batch are left alone (their
// Advance publishes them one by one). It returns the error of each host
// that failed, by host; a failed provider call fails every host of its
// batch and changes none of them. Where the provider can
// (ConditionalBatchDNS), the call is made only if every owner still holds
// what was observed; an edit by someone else in between fails the batch
// with ErrRRsetChanged and changes nothing.
func (e *Engine) PublishBatch(ctx context.Context, hosts []string) map[string]error {
	return e.publishBatch(ctx, hosts, 8)
}

// batchJob is one host's part of a batch.
type batchJob struct {
	host  string
	st    *State
	batch BatchDNS
	rs    RRSet
	// expect is the owner's RRset as the provider held it when observed:
	// a conditional batch is made only if it still does.
	expect []tlsa.Record
	step   StepKind
}

// publishBatch is PublishBatch preparing up to workers hosts at once.
func (e *Engine) publishBatch(ctx context.Context, hosts []string, workers int) map[string]error {
	errs := map[string]error{}
	norm := make([]string, 0, len(hosts))
	for _, h := range hosts {
		n, err := normHost(h)
		if err != nil {
			errs[h] = err
			continue
		}
		norm = append(norm, n)
	}
	slices.Sort(norm)
	norm = slices.Compact(norm)
	// Prepare every host (lock, observe, check, record the intent); the
	// locks are held until the batch's provider call is made.
	jobs := make([]*batchJob, len(norm))
	fails := make([]error, len(norm))
	unlocks := make([]func(), len(norm))
	idx := make([]int, len(norm))
	for i := range idx {
		idx[i] = i
	}
	defer func() {
		for _, u := range unlocks {
			if u != nil {
				u()
			}
		}
	}()
	each(idx, workers, func(i int) {
		jobs[i], unlocks[i], fails[i] = e.prepareBatch(ctx, norm[i])
	})
	groups := map[string][]*batchJob{}
	var keys []string
	for i, j := range jobs {
		if fails[i] != nil {
			errs[norm[i]] = fails[i]
		}
		if j == nil {
			continue
		}
		k := j.batch.BatchKey()
		if _, seen := groups[k]; !seen {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], j)
	}
	for _, k := range keys {
		jobs := groups[k]
		// Hosts sharing one owner: the first publishes; one that wants a
		// different RRset there is retried on its own.
		sets, expect := map[string]RRSet{}, map[string]RRSet{}
		for _, j := range jobs {
			other, taken := sets[j.st.Owner]
			switch {
			case !taken:
				sets[j.st.Owner] = j.rs
				expect[j.st.Owner] = RRSet{Records: j.expect}
			case !sameSet(other.Records, j.rs.Records):
				errs[j.host] = e.batchFailed(j.st, j.step, fmt.Errorf("another host of the batch publishes a different RRset at %s: retried on its own", j.st.Owner))
			}
		}
		e.fail("before-set")
		var err error
		if c, ok := jobs[0].batch.(ConditionalBatchDNS); ok {
			// Someone else's edit of any owner since it was observed: no
			// owner changes, and each host publishes on its own next.
			err = c.SetBatchIf(ctx, expect, sets)
		} else {
			err = jobs[0].batch.SetBatch(ctx, sets)
		}
		e.fail("after-set")
		names := make([]string, len(jobs))
		for i, j := range jobs {
			names[i] = strings.TrimSuffix(j.host, ".")
		}
		for _, j := range jobs {
			if errs[j.host] != nil {
				continue
			}
			if err != nil {
				errs[j.host] = e.batchFailed(j.st, j.step, fmt.Errorf("provider (one call for %s): %w", strings.Join(names, ", "), err))
				continue
			}
			e.note(j.st, Event{At: e.now(), Step: j.step, What: "published",
				Detail: fmt.Sprintf("%s, in one provider call with %d host(s)", abbrev(recordTexts(j.rs.Records)), len(jobs))})
			if err := e.Store.Save(j.st); err != nil {
				errs[j.host] = err
			}
		}
	}
	return errs
}

// prepareBatch locks host and prepares its publication for a batch: nil
// job when the host has nothing to publish now or cannot batch (its lock
// is then released), else the job and the unlock to call after the
// provider call.
func (e *Engine) prepareBatch(ctx context.Context, host string) (job *batchJob, _ func(), err error) {
	st, ctx, unlock, err := e.loadLocked(ctx, host)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if job == nil { // also when a panic unwinds: never leak the lock
			unlock()
		}
	}()
	step := st.CurrentStep()
	if st.Status != StatusActive || (step != StepPublishTA && step != StepPublishNext) || e.now().Before(st.NotBefore) {
		return nil, nil, nil
	}
	t, err := e.Target(host)
	if err != nil {
		return nil, nil, err
	}
	b, ok := t.DNS.(BatchDNS)
	if !ok || b.BatchKey() == "" || t.DNS.Owner() != st.Owner {
		return nil, nil, nil
	}
	rs, expect, change, err := e.preparePublish(ctx, st, t, step, func(cur []tlsa.Record) []tlsa.Record { return cumulative(st, cur) })
	if err != nil {
		return nil, nil, e.batchFailed(st, step, err)
	}
	if !change {
		return nil, nil, nil // made already, or nothing to make: Advance confirms
	}
	return &batchJob{host: host, st: st, batch: b, rs: *rs, expect: expect, step: step}, unlock, nil
}

// batchFailed records err in st as a failed Advance would and returns it.
func (e *Engine) batchFailed(st *State, step StepKind, err error) error {
	if errors.Is(err, ErrWaiting) {
		return err
	}
	_, err = e.failed(st, step, e.now(), err)
	return err
}
