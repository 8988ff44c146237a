package rollover

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// HookAction is what to do with a certificate an ACME client hands over.
type HookAction string

// Hook actions.
const (
	HookNothing HookAction = "nothing"      // the host serves this very certificate
	HookProvide HookAction = "provide"      // give it to the active rollover and advance that
	HookFinish  HookAction = "finish"       // the active rollover is past its deploy: finish it, then decide again
	HookDeploy  HookAction = "deploy"       // a deploy plan: no DNS change needed
	HookRenew   HookAction = "renew"        // a renew plan: a published 2 x x covers the chain
	HookMigrate HookAction = "ca-migration" // a ca-migration plan: the chain's CA is new to DANE
	HookRefuse  HookAction = "refuse"       // nothing safe can be done; Message says why
)

// HookFacts is what the hook decisions read: everything observed, nothing
// to fetch.
type HookFacts struct {
	Host   string              // FQDN
	New    []*x509.Certificate // the new chain, leaf first, then its issuer
	Served [][]*x509.Certificate
	// Sightings is the owner's RRset as observed now (provider, every
	// authoritative server, the resolver); Ledger is the owner's ledger
	// after recording them.
	Sightings []Sighting
	Ledger    *Ledger
	Active    *State // the host's active rollover, or nil
	Now       time.Time
	Margin    time.Duration
}

// HookDecision is the outcome of one decision: what to do and why.
type HookDecision struct {
	Action HookAction `json:"action"`
	// Reason is a stable code ("same-certificate", "no-tlsa", …); Message
	// the sentence for the operator.
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// HookPolicy is one decision: it returns ok=false when it does not apply,
// and the next one is asked.
type HookPolicy func(HookFacts) (HookDecision, bool)

// HookPolicies are the hook's decisions in the order they are asked (the
// model is cert-manager's renewal policy chain). The last always applies.
var HookPolicies = []HookPolicy{
	PolicyActiveRollover,
	PolicySameCertificate,
	PolicyAlias,
	PolicyNoTLSA,
	PolicySameKey,
	PolicyCoveredByTA,
	PolicyNewCA,
}

// DecideHook asks HookPolicies in order and returns the first decision that
// applies. It is pure.
func DecideHook(f HookFacts) HookDecision {
	for _, p := range HookPolicies {
		if d, ok := p(f); ok {
			return d
		}
	}
	return HookDecision{Action: HookRefuse, Reason: "undecided", Message: "no decision applies"}
}

// PolicyActiveRollover: a rollover in progress takes the certificate (e.g.
// the next key's key-prepublish), or is finished first when it is past its
// deploy.
func PolicyActiveRollover(f HookFacts) (HookDecision, bool) {
	st := f.Active
	if st == nil || st.Status != StatusActive {
		return HookDecision{}, false
	}
	if idx := stepIndex(st.Plan, StepDeploy); idx >= 0 && st.Step <= idx {
		return HookDecision{Action: HookProvide, Reason: "active-rollover",
			Message: fmt.Sprintf("a %s rollover is active (step %s): the certificate is provided to it", st.Plan, st.CurrentStep())}, true
	}
	return HookDecision{Action: HookFinish, Reason: "active-rollover-deployed",
		Message: fmt.Sprintf("a %s rollover has deployed its certificate and is finishing (step %s): it is finished first", st.Plan, st.CurrentStep())}, true
}

// PolicySameCertificate: every address already serves the new leaf.
func PolicySameCertificate(f HookFacts) (HookDecision, bool) {
	if len(f.New) == 0 || !allServe(f.Served, f.New[0]) {
		return HookDecision{}, false
	}
	return HookDecision{Action: HookNothing, Reason: "same-certificate", Message: "the host already serves this certificate: nothing to do"}, true
}

// PolicyAlias: a source answers with a CNAME at the owner name tlsactl
// manages; the name senders query moved, and nothing is decided on it.
func PolicyAlias(f HookFacts) (HookDecision, bool) {
	for _, s := range f.Sightings {
		if s.CNAME != "" {
			return HookDecision{Action: HookRefuse, Reason: "alias",
				Message: fmt.Sprintf("%s answers with a CNAME to %s at %s: the TLSA RRset senders use is at the CNAME's target; run the hook again (tlsactl follows CNAMEs when it starts) or publish there", s.Source, s.CNAME, f.Ledger.Owner)}, true
		}
	}
	return HookDecision{}, false
}

// PolicyNoTLSA: no TLSA at the owner anywhere — the provider, every
// authoritative server, every version a cache may still hold — so DANE is
// not in use and no record needs to change. A name that any source could
// not be asked about, or that answers with a CNAME, is never taken as
// "no TLSA".
func PolicyNoTLSA(f HookFacts) (HookDecision, bool) {
	auth := 0
	for _, s := range f.Sightings {
		if s.Err != nil || s.CNAME != "" || len(s.Records) > 0 {
			return HookDecision{}, false
		}
		if s.Kind == SourceAuthoritative {
			auth++
		}
	}
	if auth == 0 || f.Ledger == nil {
		return HookDecision{}, false
	}
	for _, v := range MaybeCachedMargin(f.Ledger.Versions, f.Now, f.Margin) {
		if len(v.Records) > 0 {
			return HookDecision{}, false // removed lately: caches may hold it
		}
	}
	return HookDecision{Action: HookDeploy, Reason: "no-tlsa",
		Message: "no TLSA record at the provider, at any authoritative server or in any cache: DANE is not in use; deploy without a DNS change"}, true
}

// providerRecords returns the provider's RRset of the sightings.
func providerRecords(f HookFacts) ([]tlsa.Record, bool) {
	recs, err := providerOf(f.Sightings)
	return recs, err == nil
}

// PolicySameKey: the new certificate is on the key every address serves and
// the current RRset already matches it (its 3 1 1 names that key): deploy
// without a DNS change; the engine still waits until every cached RRset
// matches it.
func PolicySameKey(f HookFacts) (HookDecision, bool) {
	if len(f.New) == 0 || len(f.Served) == 0 {
		return HookDecision{}, false
	}
	for _, c := range f.Served {
		if len(c) == 0 || !bytes.Equal(c[0].RawSubjectPublicKeyInfo, f.New[0].RawSubjectPublicKeyInfo) {
			return HookDecision{}, false
		}
	}
	cur, ok := providerRecords(f)
	if !ok || len(cur) == 0 {
		return HookDecision{}, false
	}
	var ee []tlsa.Record
	for _, r := range cur {
		if r.Usage == tlsa.DANEEE {
			ee = append(ee, r)
		}
	}
	if !tlsa.Match(f.New, ee, tlsa.MatchOptions{Names: []string{f.Host}, Now: f.Now}).Matched() {
		return HookDecision{}, false
	}
	return HookDecision{Action: HookDeploy, Reason: "same-key",
		Message: "same key: the published 3 x x matches the new certificate too; deploy without a DNS change"}, true
}

// PolicyCoveredByTA: a published 2 x x matches the new chain (same CA, new
// key): a renew plan deploys it and replaces the 3 1 1 — once every RRset
// a cache may hold has that 2 x x (published is not aged).
func PolicyCoveredByTA(f HookFacts) (HookDecision, bool) {
	cur, ok := providerRecords(f)
	if !ok || len(f.New) == 0 {
		return HookDecision{}, false
	}
	var tas []tlsa.Record
	for _, r := range cur {
		if r.Usage == tlsa.DANETA {
			tas = append(tas, r)
		}
	}
	if len(tas) == 0 || !tlsa.Match(f.New, tas, tlsa.MatchOptions{Names: []string{f.Host}, Now: f.Now}).Matched() {
		return HookDecision{}, false
	}
	msg := "same CA, new key: a published 2 x x matches the new chain; renew: deploy, then replace the 3 1 1"
	if f.Ledger != nil {
		inv := Invariant{Action: "deploy", Versions: f.Ledger.Versions, Chains: [][]*x509.Certificate{f.New}, Names: []string{f.Host},
			Now: f.Now, Margin: f.Margin, UnknownUntil: f.Ledger.UnknownBefore(f.Margin)}
		if err := inv.Check(); err != nil {
			if ue, ok := err.(*UnsafeError); ok && !ue.SafeAt.IsZero() {
				msg = fmt.Sprintf("same CA, new key: a published 2 x x matches the new chain, but caches may hold an RRset without it until %s (published is not aged): renew, held back until then", ue.SafeAt.UTC().Format(time.RFC3339))
			}
		}
	}
	return HookDecision{Action: HookRenew, Reason: "covered-by-ta", Message: msg}, true
}

// PolicyNewCA: nothing published matches the new chain: its CA is new to
// DANE. A ca-migration publishes the issuer's 2 1 1 and holds the
// certificate back until that record has aged.
func PolicyNewCA(f HookFacts) (HookDecision, bool) {
	if len(f.New) < 2 {
		return HookDecision{Action: HookRefuse, Reason: "no-issuer", Message: "the chain holds no issuer certificate, so no 2 1 1 can be published for it"}, true
	}
	name := f.New[1].Subject.CommonName
	if name == "" {
		name = f.New[1].Subject.String()
	}
	return HookDecision{Action: HookMigrate, Reason: "new-ca",
		Message: fmt.Sprintf("new CA %q: no published 2 x x matches the new chain; ca-migration: its 2 1 1 is published and the certificate held back until that record is in every cache", strings.TrimSpace(name))}, true
}
