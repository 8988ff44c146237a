package rollover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

const testFQDN = testHost + "."

func TestStartRefusals(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	withTA := []tlsa.Record{ee311(p.old.cert), ta211(p.ca1.inter)}
	mat := func(l testLeaf) *Material { m := l.mat; return &m }
	tests := []struct {
		name    string
		initial []tlsa.Record
		before  *StartRequest // a rollover started first
		req     StartRequest
		want    string
		is      error
	}{
		{name: "unknown plan", initial: withTA, req: StartRequest{Plan: "swap", New: mat(p.renew)}, want: "unknown plan"},
		{name: "bad host", initial: withTA, req: StartRequest{Host: "mx example", Plan: PlanRenew, New: mat(p.renew)}, is: tlsa.ErrBadName},
		{name: "active rollover exists", initial: withTA, before: &StartRequest{Plan: PlanRenew, New: mat(p.renew)},
			req: StartRequest{Plan: PlanCAMigration, NewCA: p.ca2.inter}, want: "already has an active renew rollover"},
		{name: "host unsafe now", initial: []tlsa.Record{ee311(p.mig.cert)}, req: StartRequest{Plan: PlanRenew, New: mat(p.renew)},
			want: "not in a safe state", is: ErrUnsafe},
		{name: "renew without the new certificate", initial: withTA, req: StartRequest{Plan: PlanRenew}, want: "renew needs the new certificate"},
		{name: "renew without a 2 x x", initial: []tlsa.Record{ee311(p.old.cert)}, req: StartRequest{Plan: PlanRenew, New: mat(p.renew)},
			want: "relies on a published 2 x x"},
		{name: "ca-migration without the new CA", initial: withTA, req: StartRequest{Plan: PlanCAMigration, New: mat(p.mig)}, want: "needs the new CA"},
		{name: "key-prepublish without the next key", initial: withTA, req: StartRequest{Plan: PlanKeyPrepublish}, want: "needs the next key"},
		{name: "material key mismatch", initial: withTA,
			req:  StartRequest{Plan: PlanRenew, New: &Material{ChainPEM: p.renew.mat.ChainPEM, KeyPEM: p.mig.mat.KeyPEM}},
			want: "does not belong to the certificate"},
		{name: "chain not matching the new CA's 2 1 1", initial: withTA,
			req:  StartRequest{Plan: PlanCAMigration, NewCA: p.ca2.inter, New: mat(p.renew)},
			want: "does not match the new CA's 2 1 1"},
		{name: "chain without the new CA certificate", initial: withTA,
			req:  StartRequest{Plan: PlanCAMigration, NewCA: p.ca2.inter, New: &Material{ChainPEM: p.mig.mat.ChainPEM[:strings.Index(string(p.mig.mat.ChainPEM), "-----END CERTIFICATE-----")+26], KeyPEM: p.mig.mat.KeyPEM}},
			want: "does not match the new CA's 2 1 1"},
		{name: "key-prepublish certificate not on the next key", initial: withTA,
			req:  StartRequest{Plan: PlanKeyPrepublish, NextKeySPKI: p.nextSPKI, New: mat(p.renew)},
			want: "not on the next key"},
		{name: "garbage chain", initial: withTA, req: StartRequest{Plan: PlanRenew, New: &Material{ChainPEM: []byte("hello"), KeyPEM: p.renew.mat.KeyPEM}},
			want: "certificate chain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, worldOpts{initial: tt.initial, initTTL: 3600, negTTL: 300})
			store := newMemStore()
			e := w.engine(store, nil)
			var prior *State
			if tt.before != nil {
				tt.before.Host = testHost
				var err error
				if prior, err = e.Start(ctx, *tt.before); err != nil {
					t.Fatal(err)
				}
			}
			if tt.req.Host == "" {
				tt.req.Host = testHost
			}
			st, err := e.Start(ctx, tt.req)
			if err == nil {
				t.Fatalf("Start = %+v, want an error", st)
			}
			if st != nil {
				t.Errorf("Start returned a state with the error %v", err)
			}
			if tt.want != "" && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			got := store.state(testFQDN)
			switch {
			case prior == nil && got != nil:
				t.Errorf("a refused Start saved a state: %+v", got)
			case prior != nil && (got == nil || got.Plan != prior.Plan || len(got.History) != len(prior.History)):
				t.Errorf("a refused Start changed the existing rollover: %+v", got)
			}
			if w.dns.sets != 0 || w.dep.deploys != 0 {
				t.Errorf("a refused Start changed the world: %d sets, %d deploys", w.dns.sets, w.dep.deploys)
			}
		})
	}
}

func TestStartAfterFinishedRollover(t *testing.T) {
	sc := scenarios(getPKI(t))[0]
	w, store := sc.world(t), newMemStore()
	sc.start(t, w, store, true, 0, 0)
	w.runToEnd(t, w.engine(store, nil))
	// A done rollover does not block the next one.
	if _, err := w.engine(store, nil).Start(context.Background(), StartRequest{Host: testHost, Plan: PlanCAMigration, NewCA: getPKI(t).ca2.inter}); err != nil {
		t.Fatalf("Start after a finished rollover: %v", err)
	}
}

func TestRenewFull(t *testing.T) {
	p := getPKI(t)
	sc := scenarios(p)[0]
	w, store := sc.world(t), newMemStore()
	st0 := sc.start(t, w, store, true, 0, time.Minute)
	if st0.TTL != 3600 || st0.NewEE != ee311(p.renew.cert).String() || len(st0.OldTA) != 1 || len(st0.OldEE) != 1 {
		t.Errorf("started state = %+v", st0)
	}
	out, err := w.engine(store, nil).Advance(context.Background(), testHost)
	if err != nil {
		t.Fatal(err)
	}
	if out.Waiting || out.State.Status != StatusDone {
		t.Fatalf("renew after one Advance: status %s, waiting %v (%s); want done: no TTL wait", out.State.Status, out.Waiting, out.Reason)
	}
	assertRRSet(t, w.dns.provider().Records, ee311(p.renew.cert), ta211(p.ca1.inter))
	if !w.servesOnly(p.renew.cert) {
		t.Error("not every address serves the renewed certificate")
	}
	if w.dns.sets != 1 || w.dep.deploys != 1 {
		t.Errorf("%d sets and %d deploys, want 1 and 1", w.dns.sets, w.dep.deploys)
	}
	// The deploy came before the DNS change (the 2 1 1 covered the gap).
	if !strings.Contains(eventsText(out.State), "deployed") || strings.Index(eventsText(out.State), "deployed") > strings.Index(eventsText(out.State), "published") {
		t.Errorf("history: %s", eventsText(out.State))
	}
	vs := out.State.Versions
	if len(vs) != 2 || !vs[0].Superseded.Equal(vs[1].Confirmed) || vs[1].Confirmed.IsZero() {
		t.Errorf("versions = %+v", vs)
	}
	assertClean(t, w, store)
}

func eventsText(st *State) string {
	var b strings.Builder
	for _, ev := range st.History {
		b.WriteString(string(ev.Step) + ":" + ev.What + "; ")
	}
	return b.String()
}

func TestCAMigrationFull(t *testing.T) {
	p := getPKI(t)
	sc := scenarios(p)[1]
	const margin = time.Minute
	tests := []struct {
		name             string
		initTTL, reqTTL  uint32
		wantWait, newTTL uint32
	}{
		{"old TTL larger", 3600, 300, 3600, 300},
		{"new TTL larger", 300, 7200, 7200, 7200},
		{"TTL kept", 600, 0, 600, 600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, worldOpts{initial: sc.initial, initTTL: tt.initTTL, negTTL: 300})
			store := newMemStore()
			sc.start(t, w, store, false, tt.reqTTL, margin)
			e := w.engine(store, nil)

			out, err := e.Advance(ctx, testHost)
			if err != nil {
				t.Fatal(err)
			}
			st := out.State
			if !out.Waiting || st.CurrentStep() != StepWaitTTL {
				t.Fatalf("first Advance stopped at %s (waiting %v), want wait-ttl", st.CurrentStep(), out.Waiting)
			}
			assertRRSet(t, w.dns.provider().Records, ee311(p.old.cert), ta211(p.ca1.inter), ta211(p.ca2.inter))
			if w.dns.provider().TTL != tt.newTTL {
				t.Errorf("published TTL %d, want %d", w.dns.provider().TTL, tt.newTTL)
			}
			conf := st.Versions[1].Confirmed
			if want := testBase.Add(90 * time.Second); !conf.Equal(want) {
				t.Errorf("confirmed at %s, want when the slowest secondary serves it (%s)", conf, want)
			}
			if want := conf.Add(time.Duration(tt.wantWait)*time.Second + margin); !st.NotBefore.Equal(want) {
				t.Errorf("NotBefore = confirmation+%s, want confirmation+%s", st.NotBefore.Sub(conf), want.Sub(conf))
			}
			notBefore, sets, events := st.NotBefore, w.dns.sets, len(st.History)

			w.advanceTo(notBefore.Add(-time.Second))
			out, err = e.Advance(ctx, testHost)
			if err != nil || !out.Waiting || out.State.CurrentStep() != StepWaitTTL {
				t.Fatalf("just before NotBefore: %v, waiting %v at %s; want still waiting", err, out.Waiting, out.State.CurrentStep())
			}
			if w.dns.sets != sets || w.dep.deploys != 0 || len(store.state(testFQDN).History) != events {
				t.Error("Advance before NotBefore acted or wrote history")
			}

			w.advanceTo(notBefore)
			out, err = e.Advance(ctx, testHost)
			if err != nil || !out.Waiting || !strings.Contains(out.Reason, ErrNeedMaterial.Error()) {
				t.Fatalf("at NotBefore without material: %v, waiting %v, reason %q; want waiting for the certificate", err, out.Waiting, out.Reason)
			}
			if out.State.CurrentStep() != StepDeploy || out.State.LastError != "" {
				t.Errorf("at %s, LastError %q; want deploy-certificate and none", out.State.CurrentStep(), out.State.LastError)
			}
			n := len(out.State.History)
			if out, _ = e.Advance(ctx, testHost); len(out.State.History) != n {
				t.Error("waiting again for the material repeated the history event")
			}

			if _, err := e.Provide(ctx, testHost, p.mig.mat); err != nil {
				t.Fatal(err)
			}
			out, err = e.Advance(ctx, testHost)
			if err != nil || out.State.Status != StatusDone {
				t.Fatalf("after Provide: %v, status %s (%s)", err, out.State.Status, out.Reason)
			}
			assertRRSet(t, w.dns.provider().Records, ee311(p.mig.cert), ta211(p.ca2.inter))
			if !w.servesOnly(p.mig.cert) {
				t.Error("not every address serves the new CA's certificate")
			}
			if _, err := e.Provide(ctx, testHost, p.mig.mat); err == nil {
				t.Error("Provide after the rollover finished succeeded")
			}
			assertClean(t, w, store)
		})
	}
}

func TestKeyPrepublishFull(t *testing.T) {
	p := getPKI(t)
	sc := scenarios(p)[2]
	w, store := sc.world(t), newMemStore()
	st := sc.start(t, w, store, true, 300, 0)
	if st.Next != ee311(p.next.cert).String() || st.NewEE != st.Next {
		t.Errorf("started state: next %q, new %q", st.Next, st.NewEE)
	}
	e := w.engine(store, nil)
	out, err := e.Advance(context.Background(), testHost)
	if err != nil || !out.Waiting || out.State.CurrentStep() != StepWaitTTL {
		t.Fatalf("first Advance: %v, at %s", err, out.State.CurrentStep())
	}
	assertRRSet(t, w.dns.provider().Records, ee311(p.old.cert), ee311(p.next.cert))
	if want := out.State.Versions[1].Confirmed.Add(3600 * time.Second); !out.State.NotBefore.Equal(want) {
		t.Errorf("NotBefore %s, want %s (old TTL 3600 > new TTL 300)", out.State.NotBefore, want)
	}
	final := w.runToEnd(t, e)
	if final.Status != StatusDone {
		t.Fatalf("status %s", final.Status)
	}
	assertRRSet(t, w.dns.provider().Records, ee311(p.next.cert))
	if !w.servesOnly(p.next.cert) {
		t.Error("not every address serves the certificate on the next key")
	}
	assertClean(t, w, store)
}

func TestNegativeTTLWhenNoTLSA(t *testing.T) {
	p := getPKI(t)
	sc := scenarios(p)[3]
	w, store := sc.world(t), newMemStore()
	st := sc.start(t, w, store, true, 300, 30*time.Second)
	if v := st.Versions[0]; len(v.Records) != 0 || v.TTL != 1800 || st.NegTTL != 1800 {
		t.Errorf("initial version %+v, NegTTL %d; want empty with the negative TTL 1800", v, st.NegTTL)
	}
	e := w.engine(store, nil)
	out, err := e.Advance(context.Background(), testHost)
	if err != nil || !out.Waiting {
		t.Fatalf("first Advance: %v", err)
	}
	if want := out.State.Versions[1].Confirmed.Add(1800*time.Second + 30*time.Second); !out.State.NotBefore.Equal(want) {
		t.Errorf("NotBefore = confirmation+%s, want the negative TTL 1800s + margin", out.State.NotBefore.Sub(out.State.Versions[1].Confirmed))
	}
	if w.runToEnd(t, e).Status != StatusDone {
		t.Fatal("not done")
	}
	assertRRSet(t, w.dns.provider().Records, sc.final...)
	assertClean(t, w, store)
}

// Publishing a next key's 3 1 1 where there was no TLSA would make DANE
// senders reject the key the server still uses.
func TestKeyPrepublishFromNoTLSARefused(t *testing.T) {
	p := getPKI(t)
	w, store := newWorld(t, worldOpts{negTTL: 600}), newMemStore()
	scenarios(p)[2].start(t, w, store, true, 300, 0)
	out, err := w.engine(store, nil).Advance(context.Background(), testHost)
	var ue *UnsafeError
	if !errors.As(err, &ue) || !ue.SafeAt.IsZero() {
		t.Fatalf("Advance = %v, want an UnsafeError that waiting does not fix", err)
	}
	if w.dns.sets != 0 || out.State.LastError == "" || !out.State.NotBefore.IsZero() {
		t.Errorf("sets %d, LastError %q, NotBefore %v", w.dns.sets, out.State.LastError, out.State.NotBefore)
	}
	assertClean(t, w, store)
}

func TestAbort(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	scs := scenarios(p)
	t.Run("ca-migration before deploy", func(t *testing.T) {
		sc := scs[1]
		w, store := sc.world(t), newMemStore()
		sc.start(t, w, store, true, 300, 0)
		e := w.engine(store, nil)
		if out, err := e.Advance(ctx, testHost); err != nil || out.State.CurrentStep() != StepWaitTTL {
			t.Fatalf("Advance: %v", err)
		}
		st, err := e.Abort(ctx, testHost)
		if err != nil || st.Status != StatusAborted {
			t.Fatalf("Abort = %v, status %s", err, st.Status)
		}
		assertRRSet(t, w.dns.provider().Records, sc.initial...)
		if w.dep.deploys != 0 || !w.servesOnly(p.old.cert) {
			t.Error("abort deployed something")
		}
		// Nothing moves after an abort.
		sets := w.dns.sets
		w.advance(48 * time.Hour)
		if out, err := e.Advance(ctx, testHost); err != nil || out.State.Status != StatusAborted || w.dns.sets != sets {
			t.Errorf("Advance after abort: %v, %s", err, out.State.Status)
		}
		if _, err := e.Abort(ctx, testHost); err == nil {
			t.Error("a second Abort succeeded")
		}
		assertClean(t, w, store)
	})
	t.Run("key-prepublish before deploy", func(t *testing.T) {
		sc := scs[2]
		w, store := sc.world(t), newMemStore()
		sc.start(t, w, store, false, 300, 0)
		e := w.engine(store, nil)
		if _, err := e.Advance(ctx, testHost); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Abort(ctx, testHost); err != nil {
			t.Fatal(err)
		}
		assertRRSet(t, w.dns.provider().Records, ee311(p.old.cert))
		assertClean(t, w, store)
	})
	t.Run("ca-migration after deploy just stops", func(t *testing.T) {
		sc := scs[1]
		w, store := sc.world(t), newMemStore()
		sc.start(t, w, store, true, 300, 0)
		e := w.engine(store, nil)
		out, err := e.Advance(ctx, testHost)
		if err != nil {
			t.Fatal(err)
		}
		w.advanceTo(out.State.NotBefore)
		w.dns.failSet = 1 // stop at replace-3-1-1, after the deploy
		if out, err = e.Advance(ctx, testHost); err == nil || out.State.CurrentStep() != StepReplaceEE {
			t.Fatalf("Advance = %v at %s, want a provider error at replace-3-1-1", err, out.State.CurrentStep())
		}
		sets := w.dns.sets
		st, err := e.Abort(ctx, testHost)
		if err != nil || st.Status != StatusAborted {
			t.Fatalf("Abort = %v", err)
		}
		if w.dns.sets != sets {
			t.Error("abort after the deploy changed DNS")
		}
		assertRRSet(t, w.dns.provider().Records, ee311(p.old.cert), ta211(p.ca1.inter), ta211(p.ca2.inter))
		if !w.servesOnly(p.mig.cert) {
			t.Error("abort undid the deploy")
		}
		assertClean(t, w, store)
	})
	t.Run("renew before deploy", func(t *testing.T) {
		sc := scs[0]
		w, store := sc.world(t), newMemStore()
		sc.start(t, w, store, true, 0, 0)
		if st, err := w.engine(store, nil).Abort(ctx, testHost); err != nil || st.Status != StatusAborted {
			t.Fatalf("Abort = %v", err)
		}
		if w.dns.sets != 0 || w.dep.deploys != 0 {
			t.Error("aborting a renew before it acted changed the world")
		}
	})
}

func TestFaultProviderSet(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[1]
	for _, applied := range []bool{false, true} {
		name := "rejected"
		if applied {
			name = "applied but reported as failed"
		}
		t.Run(name, func(t *testing.T) {
			w, store := sc.world(t), newMemStore()
			sc.start(t, w, store, true, 300, 0)
			e := w.engine(store, nil)
			if applied {
				w.dns.failSetApplied = 1
			} else {
				w.dns.failSet = 1
			}
			out, err := e.Advance(ctx, testHost)
			if err == nil || !strings.Contains(err.Error(), "provider") {
				t.Fatalf("Advance = %v, want the provider error", err)
			}
			st := store.state(testFQDN)
			if !strings.Contains(st.LastError, "provider") || st.Step != 0 || out.Waiting {
				t.Errorf("state after the error: step %d, LastError %q", st.Step, st.LastError)
			}
			for i, v := range st.Versions {
				if (i > 0 && !v.Confirmed.IsZero()) || !v.Superseded.IsZero() {
					t.Errorf("version %d recorded as confirmed/superseded after a failed Set: %+v", i, v)
				}
			}
			if last := st.History[len(st.History)-1]; last.What != "error" {
				t.Errorf("last event %+v, want the error", last)
			}
			if w.dep.deploys != 0 {
				t.Error("deployed after a provider error")
			}
			out, err = e.Advance(ctx, testHost)
			if err != nil || out.State.CurrentStep() != StepWaitTTL || out.State.LastError != "" {
				t.Fatalf("retry: %v at %s, LastError %q", err, out.State.CurrentStep(), out.State.LastError)
			}
			if w.dns.sets != 1 {
				t.Errorf("%d successful provider changes, want 1", w.dns.sets)
			}
			if w.runToEnd(t, e).Status != StatusDone {
				t.Fatal("not done")
			}
			assertRRSet(t, w.dns.provider().Records, sc.final...)
			assertClean(t, w, store)
		})
	}
}

func TestFaultLaggingSecondary(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[1]
	w, store := sc.world(t), newMemStore()
	sc.start(t, w, store, true, 300, 0)
	e := w.engine(store, nil)
	w.dns.setLag(2, true)
	for range 2 {
		out, err := e.Advance(ctx, testHost)
		if err == nil || !strings.Contains(err.Error(), "propagation") {
			t.Fatalf("Advance = %v, want a propagation error", err)
		}
		if out.State.Step != 0 || w.dep.deploys != 0 || w.dns.sets != 1 {
			t.Fatalf("a later step ran: step %d, %d deploys, %d sets", out.State.Step, w.dep.deploys, w.dns.sets)
		}
		if !store.state(testFQDN).Versions[1].Confirmed.IsZero() {
			t.Fatal("a version lagging on a secondary was recorded as confirmed")
		}
		w.advance(10 * time.Minute)
	}
	w.dns.setLag(2, false)
	lagEnd := w.now()
	out, err := e.Advance(ctx, testHost)
	if err != nil || out.State.CurrentStep() != StepWaitTTL {
		t.Fatalf("retry after the lag: %v at %s", err, out.State.CurrentStep())
	}
	if conf := out.State.Versions[1].Confirmed; !conf.Equal(lagEnd) || !out.State.NotBefore.Equal(conf.Add(3600*time.Second)) {
		t.Errorf("confirmed %s, NotBefore %s; want the lag's end and +1h", conf, out.State.NotBefore)
	}
	if w.runToEnd(t, e).Status != StatusDone {
		t.Fatal("not done")
	}
	assertRRSet(t, w.dns.provider().Records, sc.final...)
	assertClean(t, w, store)
}

func TestFaultDeploy(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	tests := []struct {
		name  string
		sc    int
		fault func(d *fakeDeployer)
		want  string
	}{
		{"renew, deploy fails", 0, func(d *fakeDeployer) { d.failDeploy = 1 }, "deploy"},
		{"renew, one address keeps the old chain", 0, func(d *fakeDeployer) { d.stale = 1 }, "serves"},
		{"ca-migration, every address keeps the old chain", 1, func(d *fakeDeployer) { d.stale, d.staleAddr = 1, -1 }, "serves"},
		{"key-prepublish, deploy fails", 2, func(d *fakeDeployer) { d.failDeploy = 1 }, "deploy"},
		{"key-prepublish, the second address keeps the old chain", 2, func(d *fakeDeployer) { d.stale, d.staleAddr = 1, 1 }, "serves"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := scenarios(p)[tt.sc]
			w, store := sc.world(t), newMemStore()
			sc.start(t, w, store, true, 300, 0)
			e := w.engine(store, nil)
			if sc.plan != PlanRenew { // publish, then wait out the TTL
				out, err := e.Advance(ctx, testHost)
				if err != nil || !out.Waiting {
					t.Fatalf("first Advance: %v", err)
				}
				w.advanceTo(out.State.NotBefore)
			}
			sets := w.dns.sets
			tt.fault(w.dep)
			out, err := e.Advance(ctx, testHost)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Advance = %v, want an error about %q", err, tt.want)
			}
			if out.State.CurrentStep() != StepDeploy || w.dns.sets != sets {
				t.Fatalf("after the failed deploy: step %s, %d DNS changes after it", out.State.CurrentStep(), w.dns.sets-sets)
			}
			if w.runToEnd(t, e).Status != StatusDone {
				t.Fatal("not done")
			}
			assertRRSet(t, w.dns.provider().Records, sc.final...)
			if !w.servesOnly(sc.newLeaf.cert) {
				t.Error("done, but not every address serves the new certificate")
			}
			assertClean(t, w, store)
		})
	}
}

// A Provide that stages the material but dies before it saves the state
// must not lead to a deploy the state does not know about.
func TestProvideInterrupted(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[1]
	w, store := sc.world(t), newMemStore()
	sc.start(t, w, store, false, 300, 0)
	e := w.engine(store, nil)
	out, err := e.Advance(ctx, testHost)
	if err != nil {
		t.Fatal(err)
	}
	c := &crasher{w: w}
	c.at = 1 // the first boundary of Provide: before Store.Save
	if crashed := catchCrash(func() { _, _ = w.engine(store, c).Provide(ctx, testHost, p.mig.mat) }); crashed == nil || crashed.point != "before Store.Save" {
		t.Fatalf("crash = %+v", crashed)
	}
	w.advanceTo(out.State.NotBefore)
	out, err = e.Advance(ctx, testHost)
	if err != nil || !out.Waiting || w.dep.deploys != 0 {
		t.Fatalf("Advance after the interrupted Provide: %v, waiting %v, %d deploys; want to wait for the material", err, out.Waiting, w.dep.deploys)
	}
	if _, err := e.Provide(ctx, testHost, p.mig.mat); err != nil {
		t.Fatal(err)
	}
	if w.runToEnd(t, e).Status != StatusDone {
		t.Fatal("not done")
	}
	assertRRSet(t, w.dns.provider().Records, sc.final...)
	assertClean(t, w, store)
}

// The history and the RRset versions only grow, across runs, errors and
// waits (memStore checks every Save), and a rewrite is caught.
func TestHistoryAppendOnly(t *testing.T) {
	p := getPKI(t)
	sc := scenarios(p)[1]
	w, store := sc.world(t), newMemStore()
	sc.start(t, w, store, false, 300, 0)
	ctx := context.Background()
	w.dns.failSet = 1
	var lens []int
	for i := range 8 {
		e := w.engine(store, nil) // a new process each time
		switch i {
		case 3:
			if _, err := e.Provide(ctx, testHost, p.mig.mat); err != nil {
				t.Fatal(err)
			}
		case 4:
			w.dep.failDeploy = 1
		}
		out, _ := e.Advance(ctx, testHost)
		lens = append(lens, len(store.state(testFQDN).History))
		if out.Waiting {
			w.advanceTo(out.State.NotBefore)
		}
	}
	if st := store.state(testFQDN); st.Status != StatusDone {
		t.Fatalf("status %s", st.Status)
	}
	for i := 1; i < len(lens); i++ {
		if lens[i] < lens[i-1] {
			t.Errorf("history lengths %v shrink", lens)
		}
	}
	if store.saves < 8 {
		t.Errorf("only %d saves", store.saves)
	}
	assertClean(t, w, store)

	prev := store.state(testFQDN)
	next := store.state(testFQDN)
	next.History[1].Detail = "rewritten"
	moved := false
	for i := range next.Versions {
		if i > 0 && !next.Versions[i].Confirmed.IsZero() && !moved {
			next.Versions[i].Confirmed, moved = next.Versions[i].Confirmed.Add(time.Second), true
		}
	}
	if v := appendOnly(prev, next); len(v) != 2 {
		t.Errorf("appendOnly found %q, want the rewritten event and the moved confirmation", v)
	}
}

// TestCrashResume kills the engine at every call boundary (before and after
// each DNS.Set, DNS.WaitServed, Deploy, Store.Save, and each engine
// failpoint) and checks that a fresh engine finishes with the same RRset,
// with the world invariant holding throughout.
func TestCrashResume(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	for _, sc := range scenarios(p) {
		t.Run(sc.name, func(t *testing.T) {
			w, store := sc.world(t), newMemStore()
			sc.start(t, w, store, true, 300, 10*time.Second)
			ref := &crasher{w: w}
			if w.runToEnd(t, w.engine(store, ref)).Status != StatusDone {
				t.Fatal("reference run not done")
			}
			want := w.dns.provider().Records
			assertRRSet(t, want, sc.final...)
			assertClean(t, w, store)
			if ref.n < 6 {
				t.Fatalf("only %d boundaries: %v", ref.n, ref.points)
			}
			t.Logf("%d crash points", ref.n)
			for k := 1; k <= ref.n; k++ {
				w, store := sc.world(t), newMemStore()
				sc.start(t, w, store, true, 300, 10*time.Second)
				c := &crasher{w: w, at: k}
				crashed := catchCrash(func() { w.runToEnd(t, w.engine(store, c)) })
				if crashed == nil {
					t.Fatalf("boundary %d (%s): no crash", k, ref.points[k-1])
				}
				st := w.runToEnd(t, w.engine(store, nil))
				if st.Status != StatusDone {
					t.Fatalf("crash at %d (%s): resumed to %s", k, crashed.point, st.Status)
				}
				if !sameSet(w.dns.provider().Records, want) {
					t.Errorf("crash at %d (%s): final RRset %s, want %s", k, crashed.point, rrKey(w.dns.provider().Records), rrKey(want))
				}
				if !w.servesOnly(sc.newLeaf.cert) {
					t.Errorf("crash at %d (%s): not every address serves the new certificate", k, crashed.point)
				}
				if t.Failed() {
					assertClean(t, w, store)
					return
				}
				assertClean(t, w, store)
			}
		})
	}
	// Abort can be killed anywhere too; a second Abort finishes it.
	for _, sc := range scenarios(p)[1:3] {
		t.Run("abort "+sc.name, func(t *testing.T) {
			for k := 1; ; k++ {
				w, store := sc.world(t), newMemStore()
				sc.start(t, w, store, true, 300, 0)
				if _, err := w.engine(store, nil).Advance(ctx, testHost); err != nil {
					t.Fatal(err)
				}
				c := &crasher{w: w, at: k}
				if catchCrash(func() { _, _ = w.engine(store, c).Abort(ctx, testHost) }) == nil {
					if k < 4 {
						t.Fatalf("Abort passed only %d boundaries", k-1)
					}
					break
				}
				if st := store.state(testFQDN); st.Status == StatusActive {
					if st, err := w.engine(store, nil).Abort(ctx, testHost); err != nil || st.Status != StatusAborted {
						t.Fatalf("crash at %d: second Abort = %v", k, err)
					}
				}
				assertRRSet(t, w.dns.provider().Records, sc.initial...)
				assertClean(t, w, store)
			}
		})
	}
}

// After a deploy that left one address on the old chain, abort must see that
// the new certificate is (partly) deployed whichever address has it, and
// stop without taking back the records the new chain needs.
func TestAbortAfterPartialDeploy(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	for _, staleAddr := range []int{0, 1} {
		t.Run(fmt.Sprintf("address %d keeps the old chain", staleAddr), func(t *testing.T) {
			sc := scenarios(p)[2]
			w, store := sc.world(t), newMemStore()
			sc.start(t, w, store, true, 300, 0)
			e := w.engine(store, nil)
			out, err := e.Advance(ctx, testHost)
			if err != nil {
				t.Fatal(err)
			}
			w.advanceTo(out.State.NotBefore)
			w.dep.stale, w.dep.staleAddr = 1, staleAddr
			if _, err := e.Advance(ctx, testHost); err == nil {
				t.Fatal("Advance after a partial deploy succeeded")
			}
			sets := w.dns.sets
			st, err := e.Abort(ctx, testHost)
			if err != nil || st.Status != StatusAborted {
				t.Fatalf("Abort = %v", err)
			}
			if w.dns.sets != sets {
				t.Error("abort changed DNS although an address serves the new certificate")
			}
			assertRRSet(t, w.dns.provider().Records, ee311(p.old.cert), ee311(p.next.cert))
			assertClean(t, w, store)
		})
	}
}

// The deploy re-checks the invariant itself: a state that reaches the deploy
// while the old RRset may still be cached (here: the wait step skipped by
// hand) is refused with the time it becomes safe, and Advance waits for it.
func TestDeployRefusedWhileOldRRsetCached(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	sc := scenarios(p)[1]
	w, store := sc.world(t), newMemStore()
	sc.start(t, w, store, true, 300, 0)
	e := w.engine(store, nil)
	if _, err := e.Advance(ctx, testHost); err != nil {
		t.Fatal(err)
	}
	st := store.state(testFQDN)
	st.Step, st.NotBefore = stepIndex(PlanCAMigration, StepDeploy), time.Time{}
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
	safeAt := st.Versions[0].Superseded.Add(3600 * time.Second)
	out, err := e.Advance(ctx, testHost)
	if err != nil || !out.Waiting || !strings.Contains(out.Reason, "may be cached until") {
		t.Fatalf("Advance = %v, %+v; want a wait while the old RRset may be cached", err, out)
	}
	if w.dep.deploys != 0 || !out.State.NotBefore.Equal(safeAt) {
		t.Fatalf("%d deploys, NotBefore %s, want %s", w.dep.deploys, out.State.NotBefore, safeAt)
	}
	if st := w.runToEnd(t, e); st.Status != StatusDone || st.LastError != "" {
		t.Fatalf("status %s, LastError %q", st.Status, st.LastError)
	}
	assertRRSet(t, w.dns.provider().Records, sc.final...)
	assertClean(t, w, store)
}

// The world's checker is what the other tests rely on: it must see a
// deploy that comes before the old RRset has left the caches.
func TestWorldCheckerCatchesEarlyDeploy(t *testing.T) {
	p := getPKI(t)
	sc := scenarios(p)[1]
	w := sc.world(t)
	ctx := context.Background()
	want := RRSet{Records: append(slices.Clone(sc.initial), ta211(p.ca2.inter)), TTL: 300}
	if err := w.dns.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := w.dns.WaitServed(ctx, want); err != nil {
		t.Fatal(err)
	}
	confirmed := w.now()
	w.advanceTo(confirmed.Add(3599 * time.Second))
	if err := w.dep.Deploy(ctx, p.mig.mat, Material{}); err != nil {
		t.Fatal(err)
	}
	if len(w.violations) == 0 {
		t.Fatal("a deploy while the old RRset (TTL 3600) may be cached went unnoticed")
	}
	w2 := sc.world(t)
	if err := w2.dns.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	_ = w2.dns.WaitServed(ctx, want)
	w2.advanceTo(w2.now().Add(3600 * time.Second))
	if err := w2.dep.Deploy(ctx, p.mig.mat, Material{}); err != nil {
		t.Fatal(err)
	}
	if len(w2.violations) != 0 {
		t.Fatalf("violations after the TTL: %v", w2.violations)
	}
}
