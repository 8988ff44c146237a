package rollover

import (
	"context"
	"crypto/x509"
	"errors"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// Plan names a rollover procedure.
type Plan string

// The plans.
const (
	PlanRenew         Plan = "renew"
	PlanCAMigration   Plan = "ca-migration"
	PlanKeyPrepublish Plan = "key-prepublish"
	// PlanDeploy installs a certificate that needs no DNS change (same
	// key, or no TLSA at all): a plan with zero DNS steps is still a plan,
	// with its lock, history, ledger and invariant check.
	PlanDeploy Plan = "deploy"
	// PlanPublish changes the RRset to State.Want and deploys nothing
	// (tlsactl publish).
	PlanPublish Plan = "publish"
)

// StepKind names one step of a plan.
type StepKind string

// Steps. Each is idempotent: it re-checks DNS and the server before acting.
const (
	StepVerify      StepKind = "verify-new-certificate" // renew: the new chain is covered by a published, aged 2 x x
	StepPublishTA   StepKind = "publish-new-ca"         // add the new CA's 2 1 1
	StepPublishNext StepKind = "publish-next-key"       // add the next key's 3 1 1
	StepWaitTTL     StepKind = "wait-ttl"               // until the previous RRset is in no cache
	StepDeploy      StepKind = "deploy-certificate"     // install the new certificate, reload, probe
	StepReplaceEE   StepKind = "replace-3-1-1"          // the new certificate's 3 1 1 replaces the old
	StepRetireTA    StepKind = "retire-old-ca"          // remove the old CA's 2 x x
	StepRetireEE    StepKind = "retire-old-key"         // remove the old key's 3 x x
	StepSetRRset    StepKind = "set-rrset"              // publish: make the RRset State.Want
	StepDone        StepKind = "done"
)

// Steps returns the steps of plan p, in order, ending with StepDone.
func (p Plan) Steps() []StepKind {
	switch p {
	case PlanRenew:
		return []StepKind{StepVerify, StepDeploy, StepReplaceEE, StepDone}
	case PlanCAMigration:
		return []StepKind{StepPublishTA, StepWaitTTL, StepDeploy, StepReplaceEE, StepRetireTA, StepDone}
	case PlanKeyPrepublish:
		return []StepKind{StepPublishNext, StepWaitTTL, StepDeploy, StepRetireEE, StepDone}
	case PlanDeploy:
		return []StepKind{StepDeploy, StepDone}
	case PlanPublish:
		return []StepKind{StepSetRRset, StepDone}
	}
	return nil
}

// Valid reports whether p is a known plan.
func (p Plan) Valid() bool { return p.Steps() != nil }

// Status is the state of a rollover as a whole.
type Status string

// Statuses.
const (
	StatusActive  Status = "active"  // steps remain
	StatusDone    Status = "done"    // all steps done
	StatusAborted Status = "aborted" // stopped by abort; DNS left in a safe state
)

// Version is one TLSA RRset that an owner name held: written by tlsactl or
// observed at the provider, an authoritative server or a resolver. A
// resolver may hold it from when it was first published (Requested, or
// FirstSeen for a version tlsactl did not write) until its successor was
// served by every authoritative server (Superseded) plus its TTL plus the
// margin. Versions live in the owner's [Ledger]; State.Versions is a copy.
type Version struct {
	Records []string `json:"records"` // presentation RDATA, "3 1 1 <hex>"
	// TTL is the largest TTL seen for it: published, or served by an
	// authoritative server (a provider may raise it); for an empty RRset
	// the negative-caching TTL.
	TTL uint32 `json:"ttl"`
	// Initial marks the first version of a ledger: what the name held when
	// tlsactl first looked. Its own predecessor is unknown and counts as
	// cached until FirstSeen + TTL + margin (see [UnknownBefore]).
	Initial bool `json:"initial,omitempty"`
	// Requested is when tlsactl sent it to the provider (zero for a version
	// it only observed).
	Requested time.Time `json:"requested,omitempty"`
	// FirstSeen and LastSeen bound the observations of it. A version whose
	// publication time is unknown counts as published when first seen.
	FirstSeen time.Time `json:"first_seen,omitempty"`
	LastSeen  time.Time `json:"last_seen,omitempty"`
	// Confirmed is when every authoritative server first served it.
	Confirmed time.Time `json:"confirmed,omitempty"`
	// Superseded is when every authoritative server served another
	// version. Zero while this is (or may become) the current version.
	Superseded time.Time `json:"superseded,omitempty"`
	// Writer is who wrote it: "tlsactl <what>", or "" when tlsactl only
	// observed it (someone else, or before tlsactl).
	Writer string `json:"writer,omitempty"`
	// Floor is the highest SOA serial any authoritative server had served
	// when this version was first seen (HasFloor): the version cannot be
	// served with a lower one, so a server still below it may serve it
	// later, and the version is superseded only once every server serves
	// a later serial.
	Floor    uint32 `json:"serial_floor,omitempty"`
	HasFloor bool   `json:"has_serial_floor,omitempty"`
	// Seen lists the sources it was observed at ("provider",
	// "auth ns1.example.nl 192.0.2.1:53", "resolver 127.0.0.1:53").
	Seen []string `json:"seen,omitempty"`
}

// Since is when a resolver may first have held v.
func (v Version) Since() time.Time {
	if !v.Requested.IsZero() && (v.FirstSeen.IsZero() || v.Requested.Before(v.FirstSeen)) {
		return v.Requested
	}
	return v.FirstSeen
}

// CachedUntil is when v has left every cache (zero while it is current).
func (v Version) CachedUntil(margin time.Duration) time.Time {
	if v.Superseded.IsZero() {
		return time.Time{}
	}
	return v.Superseded.Add(time.Duration(v.TTL)*time.Second + margin)
}

// Event is one line of a rollover's append-only history.
type Event struct {
	At     time.Time `json:"at"`
	Step   StepKind  `json:"step"`
	What   string    `json:"what"`             // "published", "deployed", "refused", "error", "waiting", …
	Detail string    `json:"detail,omitempty"` // human sentence
	// Runner names the tlsactl runner that wrote the event (Engine.Runner;
	// empty for a single runner, and in histories written before runners
	// were named).
	Runner string `json:"runner,omitempty"`
}

// State is everything persisted about one host's rollover. It is written
// atomically after every change, so a crash at any point resumes correctly.
type State struct {
	Version int    `json:"version"` // format version, 2
	Host    string `json:"host"`    // FQDN
	Port    int    `json:"port"`
	Owner   string `json:"owner"` // _<port>._tcp.<host>.
	Plan    Plan   `json:"plan"`
	Step    int    `json:"step"` // index into Plan.Steps()
	Status  Status `json:"status"`

	Created   time.Time `json:"created"`
	NotBefore time.Time `json:"not_before,omitempty"` // earliest time the current step may act
	TTL       uint32    `json:"ttl"`                  // TTL of the RRsets this rollover publishes
	NegTTL    uint32    `json:"neg_ttl,omitempty"`    // SOA negative TTL, when the name had no TLSA
	Margin    Duration  `json:"margin"`               // added to every TTL wait

	// Records fixed when the rollover starts (presentation RDATA).
	OldEE []string `json:"old_ee,omitempty"` // 3 x x records to retire
	OldTA []string `json:"old_ta,omitempty"` // 2 x x records to retire (ca-migration)
	NewTA string   `json:"new_ta,omitempty"` // the new CA's 2 1 1 (ca-migration)
	// NewTAs is the new issuer set's 2 1 1 records when the new CA issues
	// from more than one certificate (a fleet migration); it includes
	// NewTA. Empty for a single new CA.
	NewTAs []string `json:"new_tas,omitempty"`
	Next   string   `json:"next_ee,omitempty"` // the next key's 3 1 1 (key-prepublish)
	NewEE  string   `json:"new_ee,omitempty"`  // the new certificate's 3 1 1, once material is staged
	// Added are the records this rollover added that the RRset did not
	// hold when it started: abort takes back these and nothing else.
	Added []string `json:"added,omitempty"`
	// Want is the RRset a publish plan sets.
	Want []string `json:"want,omitempty"`
	// StepBacks counts how often a step found a record the plan published
	// gone (removed by someone else) and went back to publish it again.
	StepBacks int `json:"step_backs,omitempty"`
	// Force (publish only): the new RRset is not checked against the
	// served chain.
	Force bool `json:"force,omitempty"`
	// Migration names the fleet migration that started this rollover: its
	// schedule decides when the deploy happens (Advance stops before it).
	Migration string `json:"migration,omitempty"`
	// Peers are the other hosts on the same deploy target (shared key and
	// chain files or addresses): every deploy is checked against their
	// ledgers too.
	Peers []string `json:"peers,omitempty"`

	// Fingerprints (SHA-256 of SPKI, hex) of the material involved.
	OldLeafSPKI string `json:"old_leaf_spki,omitempty"`
	NewLeafSPKI string `json:"new_leaf_spki,omitempty"` // set when new material is staged
	NewCASPKI   string `json:"new_ca_spki,omitempty"`
	NextKeySPKI string `json:"next_key_spki,omitempty"`

	// Versions is a copy of the owner's ledger when the state was saved,
	// for status and history; the invariant reads the ledger itself.
	Versions  []Version `json:"versions"`
	History   []Event   `json:"history"`
	LastError string    `json:"last_error,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as "5s".
type Duration time.Duration

// MarshalText writes the duration as Go syntax ("1m30s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads Go duration syntax.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// CurrentStep returns the step the rollover is at.
func (s *State) CurrentStep() StepKind {
	steps := s.Plan.Steps()
	if s.Step < 0 || s.Step >= len(steps) {
		return StepDone
	}
	return steps[s.Step]
}

// Material is a certificate chain (leaf first, up to and including the CA
// the 2 1 1 names; not the root) and its private key, in PEM.
type Material struct {
	ChainPEM []byte
	KeyPEM   []byte
}

// RRSet is a TLSA RRset as the engine publishes it.
type RRSet struct {
	Records []tlsa.Record
	TTL     uint32
}

// Clock tells the time. Tests inject a fake one.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// DNS is how the engine sees and changes one TLSA RRset: the one senders
// query for a host, after CNAMEs (RFC 7672 §2.2.3, RFC 7671 §7).
type DNS interface {
	// Owner is the TLSA owner name this DNS reads and writes: the name
	// senders query after following CNAMEs (FQDN, lower case).
	Owner() string
	// Current returns the RRset the provider holds now, and the negative
	// TTL (SOA minimum) of the zone for when it is empty.
	Current(ctx context.Context) (RRSet, uint32, error)
	// Set replaces the RRset in one provider call (an empty set deletes it).
	Set(ctx context.Context, want RRSet) error
	// WaitServed returns once every authoritative server serves exactly
	// want's records (with a valid RRSIG when the zone is signed), whatever
	// TTL they serve, or with an error saying which lag (bounded by ctx).
	WaitServed(ctx context.Context, want RRSet) error
	// Observe reads the RRset once at every source it can: the provider,
	// every address of every authoritative server and the validating
	// resolver. A source that fails is reported in its Sighting, not as an
	// error; the error is for when nothing could be read.
	Observe(ctx context.Context) ([]Sighting, error)
}

// SourceKind says what kind of source a Sighting comes from.
type SourceKind string

// Source kinds.
const (
	SourceProvider      SourceKind = "provider"      // the DNS provider's API
	SourceAuthoritative SourceKind = "authoritative" // one address of an authoritative server
	SourceResolver      SourceKind = "resolver"      // a validating resolver's (possibly cached) answer
)

// Sighting is what one source held for the owner name at one moment.
type Sighting struct {
	Kind   SourceKind `json:"kind"`
	Source string     `json:"source"` // "provider", "auth ns1.example.nl 192.0.2.1:53", "resolver 127.0.0.1:53"
	// Records is the TLSA RRset; empty for NODATA/NXDOMAIN.
	Records []tlsa.Record `json:"-"`
	// TTL as served: the RRset's TTL, the negative TTL for an empty
	// answer; for a resolver the remaining TTL of its cached copy.
	TTL uint32 `json:"ttl"`
	// CNAME is set when the owner is an alias at this source: then
	// Records says nothing about the owner's TLSA.
	CNAME string `json:"cname,omitempty"`
	// Serial is the zone's SOA serial the source served with it, when
	// SerialOK (authoritative sources): it orders what a lagging secondary
	// serves against what the ledger has seen.
	Serial   uint32 `json:"serial,omitempty"`
	SerialOK bool   `json:"-"`
	// Err is why this source could not be read (Records and TTL unset).
	Err error `json:"-"`
}

// Deployer is how the engine sees and changes what one mail host serves.
type Deployer interface {
	// Served returns the chain served at each address of the host now.
	Served(ctx context.Context) ([][]*x509.Certificate, error)
	// Snapshot reads the key and chain files as they are now, so that a
	// deploy resumed after a crash can restore what was there before the
	// rollover (the engine keeps the first snapshot in the store).
	Snapshot(ctx context.Context) (Material, error)
	// Deploy installs m (files written atomically, reload command run) and
	// returns once every address serves m's chain. On failure it writes
	// restore back (when it holds a chain; else the files as they were
	// before this call), reloads, and returns an error; nothing is left
	// half done.
	Deploy(ctx context.Context, m Material, restore Material) error
}

// Store persists rollover state, staged material and the ledgers of TLSA
// owner names. Every write is atomic: a reader sees the old or the new
// content, never a mix. Two implementations ship: *FileStore (a local
// directory, files written with mode 0600; the default) and *PGStore (a
// PostgreSQL database that several runners share; its locks are leases, see
// Leaser, and its private keys are encrypted).
//
// Callers hold the host's Lock around load → check → act → save; a store
// whose locks are leases (PGStore) refuses a Save of a host it holds no
// lease for.
type Store interface {
	// Lock takes the per-host lock; the returned function releases it.
	// It fails with ErrLocked while another process holds it (stale locks
	// of dead processes are recovered; a lease lapses).
	Lock(ctx context.Context, host string) (unlock func() error, err error)
	// Load returns the host's state, or ErrNoRollover.
	Load(host string) (*State, error)
	// Save writes the state atomically.
	Save(s *State) error
	// List returns the hosts with state, sorted.
	List() ([]string, error)
	// PutMaterial stages material under a name ("new"); GetMaterial reads
	// it back or returns ErrNoMaterial.
	PutMaterial(host, name string, m Material) error
	GetMaterial(host, name string) (Material, error)
	// LoadLedger returns the ledger of a TLSA owner name (an empty one
	// when none was written yet).
	LoadLedger(owner string) (*Ledger, error)
	// UpdateLedger loads the owner's ledger, lets fn change it and writes
	// it back atomically, holding the owner's ledger lock throughout, so
	// two processes recording at once never lose an observation. When fn
	// fails nothing is written.
	UpdateLedger(ctx context.Context, owner string, fn func(*Ledger) error) (*Ledger, error)
}

// BatchDNS is a DNS whose provider can change the RRsets of several owner
// names of one zone in one call (RFC 2136: one UPDATE message). A fleet
// migration publishes the new issuer set for every host of a zone at once
// through it; a DNS that is not a BatchDNS is changed owner by owner.
type BatchDNS interface {
	DNS
	// BatchKey names the provider and the zone: DNSes with the same
	// non-empty key can be changed by one SetBatch call of any of them.
	BatchKey() string
	// SetBatch replaces the RRset of every owner in sets (TLSA owner FQDN
	// → RRset; all in this DNS's zone, none empty) in one provider call.
	SetBatch(ctx context.Context, sets map[string]RRSet) error
}

// ConditionalDNS is a DNS that can make a change conditional (RFC 2136
// prerequisites): the engine then sets an RRset only if the provider still
// holds what it observed, so an edit someone else made in between is never
// overwritten. Where the provider cannot check (hosted APIs), or the DNS is
// not a ConditionalDNS, the change is unconditional; the engine's
// observations before and after each change still notice such an edit, but
// only afterwards.
type ConditionalDNS interface {
	DNS
	// SetIf replaces the RRset (an empty want deletes it) in one atomic
	// provider call, only if the provider still holds expect's records (an
	// empty expect: no RRset); else it fails with an error wrapping
	// ErrRRsetChanged and changes nothing. A DNS whose provider turns out
	// unable to check may make the change as Set does (it then never
	// fails with ErrRRsetChanged).
	SetIf(ctx context.Context, expect, want RRSet) error
}

// ConditionalBatchDNS is a BatchDNS whose batches can be conditional.
type ConditionalBatchDNS interface {
	BatchDNS
	// SetBatchIf is SetBatch in one atomic call, made only if every owner's
	// RRset is still expect[owner] (missing or empty: no RRset); else it
	// fails with an error wrapping ErrRRsetChanged and changes no owner.
	SetBatchIf(ctx context.Context, expect, sets map[string]RRSet) error
}

// Sentinel errors callers branch on.
var (
	// ErrRRsetChanged: a conditional change (ConditionalDNS) was refused
	// because the RRset was no longer what the engine observed: someone
	// else changed it in between. Nothing was changed; the engine observes
	// again.
	ErrRRsetChanged = errors.New("the TLSA RRset changed since it was observed")
	ErrNoRollover   = errors.New("no rollover for this host")
	ErrLocked       = errors.New("another tlsactl process is working on this host")
	// ErrLeaseLost: a write refused by the fencing token, or a lease that
	// expired or was taken (see Leaser): this runner must stop acting on
	// the host or migration; another runner continues it.
	ErrLeaseLost  = errors.New("the lease was lost: another runner may act now, this one stopped")
	ErrNoMaterial = errors.New("no staged material")
	// ErrStoreUnavailable: a shared store could not be reached (database
	// down, restarting, connection cut). Nothing was decided by it: the
	// step is retried at the next pass, never counted as a failed deploy.
	ErrStoreUnavailable = errors.New("the state store cannot be reached")
	// ErrUnsafe: the action would break the safety invariant now; see
	// *UnsafeError for why and when it becomes safe.
	ErrUnsafe = errors.New("unsafe")
	// ErrWaiting: the step may not act before State.NotBefore.
	ErrWaiting = errors.New("waiting")
	// ErrNeedMaterial: the step needs a certificate that has not been provided.
	ErrNeedMaterial = errors.New("waiting for the new certificate")
)
