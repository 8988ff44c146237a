package rollover

import (
	"context"
	"time"
)

// Lease kinds: the names a Leaser's lease is taken in.
const (
	LeaseHost      = "host"      // a host's rollover (State, staged material)
	LeaseMigration = "migration" // a fleet migration (Migration)
)

// Leaser is a Store whose locks are leases that can be lost (a shared
// database; *PGStore). A lease, unlike a FileStore's flock, can end while
// its holder still runs: it is renewed in the background, and when it can
// no longer be proven live (the database is unreachable, the session was
// killed, or another runner took it after it expired) the holder must stop
// acting. The engine does every step done under the lock with the held
// context, so a lost lease cancels in-flight DNS and deploy I/O, and the
// store refuses the holder's next write (fencing token).
type Leaser interface {
	// LockLease takes the lease of name in kind ("host" or "migration"), waiting while another holder's
	// lease is live until ctx is done (then ErrLocked). held is a child of ctx cancelled (cause ErrLeaseLost)
	// as soon as the lease can no longer be proven live; unlock releases it.
	LockLease(ctx context.Context, kind, name string) (held context.Context, unlock func() error, err error)
}

// Lease is one live lease of a PGStore: which runner holds the host or
// migration, under which fencing token, until when (the database's clock).
type Lease struct {
	Kind    string    `json:"kind"` // LeaseHost or LeaseMigration
	Name    string    `json:"name"`
	Holder  string    `json:"holder"` // the runner's name (without its instance id)
	Token   int64     `json:"token"`
	Expires time.Time `json:"expires"`
}
