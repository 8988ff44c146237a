package rollover

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// StartRequest describes a new rollover.
type StartRequest struct {
	Host   string // MX host name
	Port   int    // SMTP port; 25 when zero
	Plan   Plan
	TTL    uint32        // TTL for the records the rollover publishes; the current RRset's when zero
	Margin time.Duration // added to every TTL wait
	// NewCA is the new CA certificate (ca-migration): its 2 1 1 is published first.
	NewCA *x509.Certificate
	// NewCAs is the new issuer set (ca-migration), when the new CA issues
	// from several certificates: a 2 1 1 for each is published first, so
	// that a chain from any of them matches. NewCA, when also set, is one
	// of them.
	NewCAs []*x509.Certificate
	// New is the new certificate and key (renew, deploy: required;
	// ca-migration and key-prepublish: optional, may be provided later).
	New *Material
	// NextKeySPKI is the DER SubjectPublicKeyInfo of the next key (key-prepublish).
	NextKeySPKI []byte
	// Want is the RRset a publish plan sets.
	Want []tlsa.Record
	// Force (publish only) skips the check that the new RRset matches what
	// the host serves.
	Force bool
	// Migration names the fleet migration starting it (see
	// State.Migration).
	Migration string
}

// Start creates the rollover state for a host after checking that the host is
// in a safe state now (its TLSA RRset matches what it serves) and that the
// material fits the plan. It records what it observed in the owner's ledger
// and changes nothing in DNS or on the server.
func (e *Engine) Start(ctx context.Context, req StartRequest) (*State, error) {
	host, err := tlsa.HostName(req.Host)
	if err != nil {
		return nil, err
	}
	host = strings.ToLower(host)
	if !req.Plan.Valid() {
		return nil, fmt.Errorf("unknown plan %q: want renew, ca-migration or key-prepublish", req.Plan)
	}
	if req.Port == 0 {
		req.Port = 25
	}
	ctx, unlock, err := e.lock(ctx, host)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if old, err := e.Store.Load(host); err == nil && old.Status == StatusActive {
		return nil, fmt.Errorf("%s already has an active %s rollover at step %s: finish it (rollover run) or abort it first", host, old.Plan, old.CurrentStep())
	} else if err != nil && !errors.Is(err, ErrNoRollover) {
		return nil, err
	}
	t, err := e.Target(host)
	if err != nil {
		return nil, err
	}
	served, err := t.Deployer.Served(ctx)
	if err != nil {
		return nil, fmt.Errorf("probing what %s serves: %w", host, err)
	}
	now := e.now()
	st := &State{
		Version: stateFormat, Host: host, Port: req.Port, Owner: t.DNS.Owner(), Plan: req.Plan, Status: StatusActive,
		Created: now, TTL: req.TTL, Margin: Duration(req.Margin),
	}
	for _, p := range t.Peers {
		st.Peers = append(st.Peers, p.Host)
	}
	// One observation (provider, every authoritative server, resolver)
	// gives the RRset, its TTL and the negative TTL of an empty name.
	w, err := e.observeState(ctx, st, t)
	if err != nil {
		return nil, err
	}
	var cur RRSet
	if cur.Records, err = w.provider(); err != nil {
		return nil, err
	}
	for _, s := range w.sightings {
		switch {
		case s.Err != nil || s.CNAME != "":
		case s.Kind == SourceProvider:
			cur.TTL = s.TTL
		case s.Kind == SourceAuthoritative && len(s.Records) == 0:
			st.NegTTL = max(st.NegTTL, s.TTL)
		}
	}
	if st.TTL == 0 {
		st.TTL = cur.TTL
	}
	if st.TTL == 0 {
		st.TTL = 3600
	}
	names := []string{host}
	if len(cur.Records) > 0 && req.Plan != PlanPublish && req.Plan != PlanDeploy {
		inv := Invariant{Action: "start", Versions: w.ledger.Versions, Chains: served, Names: names, Now: now, Margin: time.Duration(st.Margin)}
		if err := inv.Check(); err != nil {
			return nil, fmt.Errorf("%s is not in a safe state now, fix that first: %w", host, err)
		}
	}
	if len(served) > 0 && len(served[0]) > 0 {
		st.OldLeafSPKI = spkiHex(served[0][0])
	}
	fillOld(st, cur.Records)
	switch req.Plan {
	case PlanRenew:
		if req.New == nil {
			return nil, errors.New("renew needs the new certificate and key (--new-cert, --new-key)")
		}
		if len(st.OldTA) == 0 {
			return nil, errors.New("renew relies on a published 2 x x record to cover the swap, and there is none: publish the CA's 2 1 1 first, or use --plan ca-migration")
		}
	case PlanDeploy:
		if req.New == nil {
			return nil, errors.New("deploy needs the new certificate and key")
		}
	case PlanPublish:
		st.Want = canonicalTexts(req.Want)
		if req.Force {
			e.note(st, Event{At: now, Step: StepSetRRset, What: "forced", Detail: "--force: the new RRset is not checked against the served chain"})
		}
	case PlanCAMigration:
		cas := req.NewCAs
		if req.NewCA != nil && !slices.ContainsFunc(cas, req.NewCA.Equal) {
			cas = append([]*x509.Certificate{req.NewCA}, cas...)
		}
		if len(cas) == 0 {
			return nil, errors.New("ca-migration needs the new CA certificate (--new-ca)")
		}
		var tas []tlsa.Record
		for _, ca := range cas {
			ta, err := tlsa.Compute(tlsa.FromCertificate(ca), tlsa.DANETA, tlsa.SelectorSPKI, tlsa.MatchSHA256)
			if err != nil {
				return nil, err
			}
			tas = with(tas, ta)
		}
		st.NewTA, st.NewCASPKI = tas[0].String(), fmt.Sprintf("%x", tas[0].Data)
		if len(tas) > 1 {
			st.NewTAs = recordTexts(tas)
		}
		fillOld(st, cur.Records) // never retire the new CA
		for _, ta := range tas {
			if !containsRec(cur.Records, ta) {
				st.Added = append(st.Added, ta.String())
			}
		}
	case PlanKeyPrepublish:
		if len(req.NextKeySPKI) == 0 {
			return nil, errors.New("key-prepublish needs the next key (--next-key)")
		}
		next, err := tlsa.Compute(tlsa.Material{Kind: tlsa.KindPublicKey, SPKI: req.NextKeySPKI}, tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
		if err != nil {
			return nil, err
		}
		st.Next, st.NextKeySPKI = next.String(), fmt.Sprintf("%x", next.Data)
		fillOld(st, cur.Records) // never retire the next key
		if !containsRec(cur.Records, next) {
			st.Added = append(st.Added, next.String())
		}
	}
	if req.New != nil {
		if err := e.stage(st, *req.New, now); err != nil {
			return nil, err
		}
	}
	e.note(st, Event{At: now, Step: st.CurrentStep(), What: "started",
		Detail: fmt.Sprintf("%s rollover of %s; RRset %s", req.Plan, st.Owner, abbrev(recordTexts(cur.Records)))})
	st.Force = req.Force && req.Plan == PlanPublish
	st.Migration = req.Migration
	if err := e.Store.Save(st); err != nil {
		return nil, err
	}
	return st, nil
}

func mustParse(ss []string) []tlsa.Record {
	rs, _ := parseRecords(ss)
	return rs
}

// Provide stages the new certificate and key for a rollover that waits for
// them (e.g. a ca-migration after its TTL wait). It checks the material fits
// the plan; it deploys nothing.
func (e *Engine) Provide(ctx context.Context, host string, m Material) (*State, error) {
	st, ctx, unlock, err := e.loadLocked(ctx, host)
	if err != nil {
		return st, err
	}
	defer unlock()
	if st.Status != StatusActive {
		return nil, fmt.Errorf("the %s rollover of %s is %s", st.Plan, st.Host, st.Status)
	}
	if idx := stepIndex(st.Plan, StepDeploy); idx < 0 || st.Step > idx {
		return nil, fmt.Errorf("the %s rollover of %s takes no new certificate now (step %s)", st.Plan, strings.TrimSuffix(host, "."), st.CurrentStep())
	}
	now := e.now()
	if err := e.stage(st, m, now); err != nil {
		return nil, err
	}
	if err := e.Store.Save(st); err != nil {
		return nil, err
	}
	return st, nil
}

// stage validates m against the plan and stores it.
func (e *Engine) stage(st *State, m Material, now time.Time) error {
	chain, err := parseChain(m)
	if err != nil {
		return err
	}
	leaf := chain[0]
	ee, _ := tlsa.Compute(tlsa.FromCertificate(leaf), tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	switch st.Plan {
	case PlanKeyPrepublish:
		if fmt.Sprintf("%x", ee.Data) != st.NextKeySPKI {
			return fmt.Errorf("the new certificate is not on the next key whose 3 1 1 this rollover publishes (SPKI %s…, want %s…): issue it from the next key's CSR", short(fmt.Sprintf("%x", ee.Data)), short(st.NextKeySPKI))
		}
	case PlanCAMigration:
		res := tlsa.Match(chain, mustParse(newTAs(st)), tlsa.MatchOptions{Names: []string{st.Host}, Now: now})
		if !res.Matched() {
			v := res.Verdicts[0]
			return fmt.Errorf("the new chain does not match the new CA's 2 1 1 (%s: %s): the chain file must hold the leaf and the new CA certificate", v.Reason, v.Detail)
		}
	}
	if err := e.Store.PutMaterial(st.Host, stagedNew, m); err != nil {
		return err
	}
	st.NewEE, st.NewLeafSPKI = ee.String(), fmt.Sprintf("%x", ee.Data)
	e.note(st, Event{At: now, Step: st.CurrentStep(), What: "material staged",
		Detail: fmt.Sprintf("new certificate %q, SPKI %s…, expires %s", leaf.Subject.CommonName, short(st.NewLeafSPKI), leaf.NotAfter.UTC().Format("2006-01-02"))})
	return nil
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

// parseChain parses a Material's chain and checks the key belongs to the leaf.
func parseChain(m Material) ([]*x509.Certificate, error) {
	ms, err := tlsa.ParseMaterial("certificate chain", m.ChainPEM)
	if err != nil {
		return nil, err
	}
	chain := tlsa.Certificates(ms)
	if len(chain) == 0 {
		return nil, errors.New("the certificate chain holds no certificate")
	}
	ks, err := tlsa.ParseMaterial("private key", m.KeyPEM)
	if err != nil {
		return nil, err
	}
	for _, k := range ks {
		if k.Kind == tlsa.KindPrivateKey {
			if !bytes.Equal(k.SPKI, chain[0].RawSubjectPublicKeyInfo) {
				return nil, errors.New("the private key does not belong to the certificate (first in the chain)")
			}
			return chain, nil
		}
	}
	return nil, errors.New("the key file holds no private key")
}
