package rollover

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// TestHookPolicies is the decision table of the hook: every decision, with
// the facts that lead to it and its reason text.
var errTest = errors.New("i/o timeout")

func TestHookPolicies(t *testing.T) {
	p := getPKI(t)
	now := testBase
	old := []tlsa.Record{ee311(p.old.cert), ta211(p.ca1.inter)}
	auth := func(rs ...tlsa.Record) []Sighting {
		return []Sighting{
			{Kind: SourceProvider, Source: "provider", Records: rs, TTL: 300},
			{Kind: SourceAuthoritative, Source: "auth ns1", Records: rs, TTL: 300},
			{Kind: SourceAuthoritative, Source: "auth ns2", Records: rs, TTL: 300},
		}
	}
	// aged: a ledger that has held rs for two days; fresh: one that first
	// saw rs now (its predecessor unknown); changed: rs replaced prev a
	// minute ago.
	aged := func(rs ...tlsa.Record) *Ledger {
		l := &Ledger{Owner: testOwner}
		l.Record(auth(rs...), 300, now.Add(-48*time.Hour))
		l.Record(auth(rs...), 300, now)
		return l
	}
	fresh := func(rs ...tlsa.Record) *Ledger {
		l := &Ledger{Owner: testOwner}
		l.Record(auth(rs...), 300, now)
		return l
	}
	changed := func(prev []tlsa.Record, rs ...tlsa.Record) *Ledger {
		l := aged(prev...)
		l.Record(auth(rs...), 300, now.Add(-time.Minute))
		return l
	}
	served := func(c []*x509.Certificate) [][]*x509.Certificate { return [][]*x509.Certificate{c, c} }
	// A same-key certificate: the old key, reissued by CA1.
	sameKey, err := p.ca1.leaf(p.old.key, "old-reissued", []string{testHost}, testBase.AddDate(0, -1, 0), testBase.AddDate(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	active := func(plan Plan, step StepKind) *State {
		return &State{Plan: plan, Status: StatusActive, Step: stepIndex(plan, step)}
	}
	withCNAME := auth(old...)
	withCNAME[1].CNAME, withCNAME[1].Records = "_dane.example.net.", nil
	failing := auth()
	failing[2].Err, failing[2].Records = errTest, nil

	tests := []struct {
		name   string
		f      HookFacts
		action HookAction
		reason string
		says   string
	}{
		{"active rollover before its deploy takes the certificate",
			HookFacts{New: p.next.chain, Served: served(p.old.chain), Sightings: auth(old...), Ledger: aged(old...), Active: active(PlanKeyPrepublish, StepWaitTTL)},
			HookProvide, "active-rollover", "key-prepublish rollover is active (step wait-ttl)"},
		{"active rollover past its deploy is finished first",
			HookFacts{New: p.next.chain, Served: served(p.renew.chain), Sightings: auth(old...), Ledger: aged(old...), Active: active(PlanRenew, StepReplaceEE)},
			HookFinish, "active-rollover-deployed", "is finished first"},
		{"the very same certificate is served",
			HookFacts{New: p.old.chain, Served: served(p.old.chain), Sightings: auth(old...), Ledger: aged(old...)},
			HookNothing, "same-certificate", "nothing to do"},
		{"a CNAME at the owner is never read as no TLSA",
			HookFacts{New: p.mig.chain, Served: served(p.old.chain), Sightings: withCNAME, Ledger: aged()},
			HookRefuse, "alias", "CNAME to _dane.example.net."},
		{"no TLSA anywhere: DANE not in use",
			HookFacts{New: p.mig.chain, Served: served(p.old.chain), Sightings: auth(), Ledger: aged()},
			HookDeploy, "no-tlsa", "DANE is not in use"},
		{"no TLSA now, but removed a minute ago: caches may hold it",
			HookFacts{New: p.mig.chain, Served: served(p.old.chain), Sightings: auth(), Ledger: changed(old)},
			HookMigrate, "new-ca", "new CA \"Test CA Two Intermediate\""},
		{"no TLSA at the provider, one server not answering: not proven",
			HookFacts{New: p.mig.chain, Served: served(p.old.chain), Sightings: failing, Ledger: aged()},
			HookMigrate, "new-ca", "ca-migration"},
		{"same key, the 3 1 1 matches",
			HookFacts{New: sameKey.chain, Served: served(p.old.chain), Sightings: auth(old...), Ledger: aged(old...)},
			HookDeploy, "same-key", "same key"},
		{"same key, only a 2 1 1 of another CA: not covered",
			HookFacts{New: sameKey.chain, Served: served(p.old.chain), Sightings: auth(ta211(p.ca2.inter)), Ledger: aged(ta211(p.ca2.inter))},
			HookMigrate, "new-ca", "new CA \"Test CA One Intermediate\""},
		{"same CA, new key, 2 1 1 aged",
			HookFacts{New: p.renew.chain, Served: served(p.old.chain), Sightings: auth(old...), Ledger: aged(old...)},
			HookRenew, "covered-by-ta", "renew: deploy, then replace the 3 1 1"},
		{"same CA, new key, 2 1 1 published a minute ago (published is not aged)",
			HookFacts{New: p.mig.chain, Served: served(p.old.chain), Sightings: auth(append(old, ta211(p.ca2.inter))...), Ledger: changed(old, append(old, ta211(p.ca2.inter))...)},
			HookRenew, "covered-by-ta", "published is not aged"},
		{"2 1 1 first seen now by tlsactl: its predecessor is unknown",
			HookFacts{New: p.renew.chain, Served: served(p.old.chain), Sightings: auth(old...), Ledger: fresh(old...)},
			HookRenew, "covered-by-ta", "published is not aged"},
		{"new CA",
			HookFacts{New: p.mig.chain, Served: served(p.old.chain), Sightings: auth(old...), Ledger: aged(old...)},
			HookMigrate, "new-ca", "its 2 1 1 is published and the certificate held back"},
		{"no issuer in the chain",
			HookFacts{New: p.mig.chain[:1], Served: served(p.old.chain), Sightings: auth(old...), Ledger: aged(old...)},
			HookRefuse, "no-issuer", "no issuer certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.Host, tt.f.Now, tt.f.Margin = testHost+".", now, time.Second
			d := DecideHook(tt.f)
			if d.Action != tt.action || d.Reason != tt.reason || !strings.Contains(d.Message, tt.says) {
				t.Errorf("DecideHook = %+v\nwant action %s, reason %s, a message with %q", d, tt.action, tt.reason, tt.says)
			}
		})
	}
}
