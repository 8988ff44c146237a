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

// Version is one TLSA RRset as published during (or found at the start of)
// a rollover. A resolver may hold it from Requested (or from before the
// rollover, for the initial version) until Superseded + TTL.
type Version struct {
	Records []string `json:"records"` // presentation RDATA, "3 1 1 <hex>"
	TTL     uint32   `json:"ttl"`     // seconds; for an empty RRset the negative-caching TTL
	Initial bool     `json:"initial,omitempty"`
	// Requested is when the change was sent to the provider (zero for the
	// initial version: it was there before).
	Requested time.Time `json:"requested,omitempty"`
	// Confirmed is when every authoritative server served it.
	Confirmed time.Time `json:"confirmed,omitempty"`
	// Superseded is when every authoritative server served the next
	// version. Zero while this is the current version.
	Superseded time.Time `json:"superseded,omitempty"`
}

// Event is one line of a rollover's append-only history.
type Event struct {
	At     time.Time `json:"at"`
	Step   StepKind  `json:"step"`
	What   string    `json:"what"`             // "published", "deployed", "refused", "error", "waiting", …
	Detail string    `json:"detail,omitempty"` // human sentence
}

// State is everything persisted about one host's rollover. It is written
// atomically after every change, so a crash at any point resumes correctly.
type State struct {
	Version int    `json:"version"` // format version, 1
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
	OldEE []string `json:"old_ee,omitempty"`  // 3 x x records to retire
	OldTA []string `json:"old_ta,omitempty"`  // 2 x x records to retire (ca-migration)
	NewTA string   `json:"new_ta,omitempty"`  // the new CA's 2 1 1 (ca-migration)
	Next  string   `json:"next_ee,omitempty"` // the next key's 3 1 1 (key-prepublish)
	NewEE string   `json:"new_ee,omitempty"`  // the new certificate's 3 1 1, once material is staged

	// Fingerprints (SHA-256 of SPKI, hex) of the material involved.
	OldLeafSPKI string `json:"old_leaf_spki,omitempty"`
	NewLeafSPKI string `json:"new_leaf_spki,omitempty"` // set when new material is staged
	NewCASPKI   string `json:"new_ca_spki,omitempty"`
	NextKeySPKI string `json:"next_key_spki,omitempty"`

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

// DNS is how the engine sees and changes one host's TLSA RRset.
type DNS interface {
	// Current returns the RRset the provider holds now, and the negative
	// TTL (SOA minimum) of the zone for when it is empty.
	Current(ctx context.Context) (RRSet, uint32, error)
	// Set replaces the RRset in one provider call (an empty set deletes it).
	Set(ctx context.Context, want RRSet) error
	// WaitServed returns once every authoritative server serves exactly
	// want, or with an error saying which lag (bounded by ctx).
	WaitServed(ctx context.Context, want RRSet) error
}

// CacheViewer is optionally implemented by a DNS: it returns the TLSA RRset a
// validating resolver holds now (with its remaining TTL). Start uses it to
// notice a change made shortly before the rollover (e.g. by hand) whose
// predecessor may still be cached elsewhere.
type CacheViewer interface {
	Cached(ctx context.Context) (RRSet, error)
}

// Deployer is how the engine sees and changes what one mail host serves.
type Deployer interface {
	// Served returns the chain served at each address of the host now.
	Served(ctx context.Context) ([][]*x509.Certificate, error)
	// Deploy installs m (files written atomically, reload command run) and
	// returns once every address serves m's chain. On failure it restores
	// the previous files and returns an error; nothing is left half done.
	Deploy(ctx context.Context, m Material) error
}

// Store persists rollover state and staged material per host. Implementations
// write atomically (temp file + rename) with mode 0600.
type Store interface {
	// Lock takes the per-host lock; the returned function releases it.
	// It fails with ErrLocked while another process holds it (stale locks
	// of dead processes are recovered).
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
}

// Sentinel errors callers branch on.
var (
	ErrNoRollover = errors.New("no rollover for this host")
	ErrLocked     = errors.New("another tlsactl process is working on this host")
	ErrNoMaterial = errors.New("no staged material")
	// ErrUnsafe: the action would break the safety invariant now; see
	// *UnsafeError for why and when it becomes safe.
	ErrUnsafe = errors.New("unsafe")
	// ErrWaiting: the step may not act before State.NotBefore.
	ErrWaiting = errors.New("waiting")
	// ErrNeedMaterial: the step needs a certificate that has not been provided.
	ErrNeedMaterial = errors.New("waiting for the new certificate")
)
