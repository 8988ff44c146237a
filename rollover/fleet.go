package rollover

import (
	"context"
	"crypto/x509"
	"errors"
	"time"
)

// MigrationStatus is the state of a fleet migration as a whole.
type MigrationStatus string

// Migration statuses.
const (
	MigrationActive  MigrationStatus = "active"  // hosts are being advanced
	MigrationPaused  MigrationStatus = "paused"  // by the operator: nothing is advanced until resume
	MigrationHalted  MigrationStatus = "halted"  // max_failures reached: no more deploys until resume
	MigrationAborted MigrationStatus = "aborted" // hosts not deployed were rolled back
	MigrationDone    MigrationStatus = "done"    // every host done
)

// HostPhase is where one host of a fleet migration is.
type HostPhase string

// Host phases, in the order a host goes through them.
const (
	PhasePending    HostPhase = "pending"             // no rollover started yet (not_before not reached, or not yet started)
	PhasePublishing HostPhase = "publishing"          // the new issuer set's 2 1 1 is being published and confirmed
	PhaseWaitTTL    HostPhase = "waiting-ttl"         // the RRsets without it may still be cached
	PhaseWaitCert   HostPhase = "waiting-certificate" // the new certificate has not arrived (late)
	PhaseWaitCanary HostPhase = "waiting-canary"      // the canary host is not done yet
	PhaseWaitWindow HostPhase = "waiting-window"      // outside every deploy window
	PhaseReady      HostPhase = "ready"               // may deploy as soon as a slot (max_parallel) is free
	PhaseDeploying  HostPhase = "deploying"           // deploying; then the 3 1 1 is replaced and the old CA retired
	PhaseDone       HostPhase = "done"                // new certificate served, records final
	PhaseHeld       HostPhase = "held"                // stopped with a reason (a failed deploy, a refused start); resume retries
	PhaseRolledBack HostPhase = "rolled-back"         // abort took back the records added for it
)

// Phases lists every host phase in order (for tables and metrics).
var Phases = []HostPhase{PhasePending, PhasePublishing, PhaseWaitTTL, PhaseWaitCert, PhaseWaitCanary, PhaseWaitWindow,
	PhaseReady, PhaseDeploying, PhaseDone, PhaseHeld, PhaseRolledBack}

// MigrationHost is one host of a migration.
type MigrationHost struct {
	Host string `json:"host"` // FQDN, lower case
	Port int    `json:"port"` // SMTP port; 25 when zero
}

// MigrationSpec is what a migration file says, resolved: host names, the
// issuer set's certificates, the schedule. It is stored with the
// migration, so runs after a reboot need neither the file nor the CA files.
type MigrationSpec struct {
	Name  string          `json:"name"`           // [a-z0-9._-]+
	File  string          `json:"file,omitempty"` // the migration file it came from, for messages
	Hosts []MigrationHost `json:"hosts"`
	// NewCAPEM is the new issuer set: one PEM CA certificate each. A 2 1 1
	// of each is published for every host.
	NewCAPEM []string `json:"new_ca_pem"`
	// TTL of the records published; the host's current TTL when zero.
	TTL    uint32   `json:"ttl,omitempty"`
	Margin Duration `json:"margin"`
	// NotBefore: nothing is published before it.
	NotBefore time.Time `json:"not_before,omitempty"`
	// Deadline: the date the old CA stops working; plan and status say
	// whether the migration finishes before it.
	Deadline time.Time `json:"deadline,omitempty"`
	// Windows are the deploy windows (schedule.Parse syntax); empty means
	// any time. Publishing and the TTL wait ignore them.
	Windows []string `json:"windows,omitempty"`
	// MaxParallel deploys at a time (at least 1).
	MaxParallel int `json:"max_parallel"`
	// MaxFailures: the migration halts once this many hosts failed (at
	// least 1).
	MaxFailures int `json:"max_failures"`
	// Canary, when set, is deployed and finished first; the others wait.
	Canary string `json:"canary,omitempty"`
	// DeployEstimate is how long one host's deploy takes, for plan.
	DeployEstimate Duration `json:"deploy_estimate,omitempty"`
	// Poll is how soon a run looks again for certificates that have not
	// arrived and retries a host whose step failed (0: Fleet.Poll, else
	// one minute).
	Poll Duration `json:"poll,omitempty"`
	// Source says where certificates come from, for the caller's
	// CertSource ("kind" = "dir", "acme" or "hook", and its settings);
	// the engine does not read it.
	Source map[string]string `json:"source,omitempty"`
}

// HostProgress is one host's place in a migration.
type HostProgress struct {
	Host  string    `json:"host"`
	Port  int       `json:"port"`
	Phase HostPhase `json:"phase"`
	// Reason says why the host is where it is (what it waits for, why it
	// is held), in one sentence.
	Reason string `json:"reason,omitempty"`
	// Next is the earliest time the host can move on (zero: now, or
	// unknown).
	Next     time.Time `json:"next,omitempty"`
	Since    time.Time `json:"since"` // when it entered Phase
	Deployed time.Time `json:"deployed,omitempty"`
	Done     time.Time `json:"done,omitempty"`
	// Failed marks a host counted in Migration.Failures (a deploy or a
	// step failed); resume clears it and retries.
	Failed bool `json:"failed,omitempty"`
	// Rollover is when this host's rollover state was created by the
	// migration (zero before); the rollover itself is in the Store.
	Rollover time.Time `json:"rollover,omitempty"`
}

// MigrationEvent is one line of a migration's append-only history.
type MigrationEvent struct {
	At     time.Time `json:"at"`
	Host   string    `json:"host,omitempty"` // "" for the migration as a whole
	What   string    `json:"what"`
	Detail string    `json:"detail,omitempty"`
	// Runner names the runner that recorded it (Engine.Runner; "" for
	// none).
	Runner string `json:"runner,omitempty"`
}

// Migration is everything persisted about one fleet migration. The hosts'
// own rollovers are ordinary rollover states in the Store (plan
// ca-migration), so `rollover status` shows them and every deploy is
// checked against the ledger as any other.
type Migration struct {
	Version  int             `json:"version"` // format version, 1
	Spec     MigrationSpec   `json:"spec"`
	Status   MigrationStatus `json:"status"`
	Created  time.Time       `json:"created"`
	Updated  time.Time       `json:"updated"`
	Failures int             `json:"failures"`
	// WaitUntil is when the fleet's one TTL wait ends (zero before the
	// issuer set is confirmed everywhere).
	WaitUntil time.Time        `json:"wait_until,omitempty"`
	Hosts     []HostProgress   `json:"hosts"`
	History   []MigrationEvent `json:"history"`

	// runner is Engine.Runner of the run that loaded it, recorded on its
	// events; not persisted.
	runner string
}

// MigrationStore persists migrations. *FileStore implements it
// (<state_dir>/_migrations/<name>.json, mode 0600, written atomically).
type MigrationStore interface {
	// LockMigration takes the migration's lock (ErrLocked while another
	// process holds it after ctx is done).
	LockMigration(ctx context.Context, name string) (unlock func() error, err error)
	// LoadMigration returns the migration or ErrNoMigration.
	LoadMigration(name string) (*Migration, error)
	SaveMigration(m *Migration) error
	// ListMigrations returns the names of stored migrations, sorted.
	ListMigrations() ([]string, error)
}

// CertSource supplies the new certificates of a migration's hosts.
type CertSource interface {
	// Fetch returns host's new certificate chain (leaf first, then the
	// new CA) and key, or nil and no error while it has not arrived.
	Fetch(ctx context.Context, host string) (*Material, error)
}

// Fleet runs scheduled CA migrations of many hosts: it publishes the new
// issuer set's 2 1 1 for every host first (one provider call per zone
// where the provider allows), waits one TTL for the whole fleet, then
// deploys host by host inside the deploy windows, at most MaxParallel at a
// time, each through the host's own ca-migration rollover. Like Engine it
// holds no state: a run after a crash continues where the last one stopped.
type Fleet struct {
	Engine *Engine
	Store  MigrationStore
	// Source returns the certificate source of a migration; nil (or a nil
	// CertSource) means certificates arrive by other ways (hooks,
	// `rollover provide`).
	Source func(m *Migration) (CertSource, error)
	// Workers bounds how many hosts are observed, published or confirmed
	// at once (0: 8; 1 makes a run sequential, as tests want). Deploys are
	// bounded by the migration's MaxParallel.
	Workers int
	// Poll is the default of MigrationSpec.Poll (0: one minute).
	Poll time.Duration
}

// MigrationPlan is what plan shows: per host the records and the earliest
// deploy time, the finish, and whether the deadline is met.
type MigrationPlan struct {
	Name      string        `json:"name"`
	Start     time.Time     `json:"start"`      // when publishing can begin (now or not_before)
	WaitUntil time.Time     `json:"wait_until"` // the end of the fleet's one TTL wait
	MaxTTL    uint32        `json:"max_ttl"`    // the largest TTL of any host's RRset (what the wait is made of)
	Hosts     []PlannedHost `json:"hosts"`
	Finish    time.Time     `json:"finish"`
	Deadline  time.Time     `json:"deadline,omitempty"`
	// MeetsDeadline is true when Finish is before Deadline (or there is
	// none); Advice then is empty, else it says what would meet it.
	MeetsDeadline bool     `json:"meets_deadline"`
	Advice        []string `json:"advice,omitempty"`
	// Batches: the provider calls publishing takes (one per zone where
	// the provider can batch).
	Batches int `json:"batches"`
}

// PlannedHost is one host's line of a plan.
type PlannedHost struct {
	Host    string    `json:"host"`
	Batch   string    `json:"batch,omitempty"` // the batch (provider and zone) its publication goes with
	Current []string  `json:"current"`         // the RRset now
	Publish []string  `json:"publish"`         // the 2 1 1 records added
	Retire  []string  `json:"retire"`          // the old CA's 2 x x removed at the end (its 3 x x replaced)
	TTL     uint32    `json:"ttl"`
	Deploy  time.Time `json:"deploy"` // earliest deploy start inside the windows
	Canary  bool      `json:"canary,omitempty"`
	Error   string    `json:"error,omitempty"` // why the host cannot take part now (it would be held)
}

// ErrNoMigration: no migration of that name is stored.
var ErrNoMigration = errors.New("no migration of that name")

// newCAs parses the spec's issuer set.
func (s *MigrationSpec) newCAs() ([]*x509.Certificate, error) {
	return parseCAPEMs(s.NewCAPEM)
}
