//go:build !nopostgres

package rollover

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgLease is a lease this store holds: its row's fencing token, the
// contexts it ends, and its renewer.
type pgLease struct {
	kind, name string
	token      int64
	// held is what LockLease returned (a child of the caller's context);
	// alive ends only when the lease is lost or released, and bounds the
	// store's fenced writes (a caller whose own context ended may still
	// record its final state while the lease is live).
	held, alive             context.Context
	cancelHeld, cancelAlive context.CancelCauseFunc
	mu                      sync.Mutex
	lost                    error // why the lease ended (nil while live)
	deadline                *time.Timer
	stop, done              chan struct{}
	stopOnce                sync.Once
	lastRenewal             time.Time // send time of the last successful renewal (or the take)
}

// leaseKey is the map key of a lease.
func leaseKey(kind, name string) string { return kind + "\x00" + name }

// errNotLeased: a Save or SaveMigration of a name this store holds no lease
// for (the caller did not take the Lock).
var errNotLeased = errors.New("no lease held")

// normLeaseName checks kind and normalizes name as the store's keys are.
func normLeaseName(kind, name string) (string, error) {
	switch kind {
	case LeaseHost:
		return normalizeHost(name)
	case LeaseMigration:
		return name, CheckMigrationName(name)
	}
	return "", fmt.Errorf("rollover: unknown lease kind %q (want %q or %q)", kind, LeaseHost, LeaseMigration)
}

// LockLease takes the lease of name in kind ("host" or "migration"),
// waiting while another holder's lease is live until ctx is done (then
// ErrLocked, naming the holder and until when). held is a child of ctx
// cancelled (cause ErrLeaseLost) as soon as the lease can no longer be
// proven live; unlock releases it.
//
// A lease is a row of the leases table (kind, name, holder, token,
// expires). Every time comparison is made by the database (now()), never
// by a runner's clock. Taking inserts the row, or updates it with token+1,
// this store as holder and expires = now()+lease, only where expires <=
// now(): a live lease is never taken, not even by the same runner name
// (the holder is the runner name plus a random instance id). Busy leases
// are polled every 50–200 ms.
//
// A goroutine renews the lease every lease/3 where token and holder still
// match and it has not expired; an attempt may take until the lease would
// be lost anyway (a slow database under load is not a lost lease), and a
// failed one is retried after lease/10 (at most a second). The
// store counts the lease valid only until the send time of its last
// successful renewal + lease − lease/5 on its own monotonic clock; past
// that, or when a renewal finds the row taken or expired, held is
// cancelled with cause ErrLeaseLost. A runner cut off from the database
// therefore stops acting at least lease/5 before the database lets another
// runner take the lease. After a database restart the pool reconnects and
// renewals go on, if they come in time.
//
// Every Save, SaveMigration and PutMaterial checks in its transaction that
// the lease row still has this store's token and holder and has not
// expired (locking it against a takeover until commit) and stores the
// token on the row written (fence), so a runner that lost its lease cannot
// overwrite a newer state: its write fails with ErrLeaseLost and writes
// nothing.
//
// unlock sets the row's expires to now() (token unchanged), stops the
// renewer and cancels held; it may be called more than once.
func (s *PGStore) LockLease(ctx context.Context, kind, name string) (context.Context, func() error, error) {
	n, err := normLeaseName(kind, name)
	if err != nil {
		return nil, nil, err
	}
	wait := 50 * time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return nil, nil, s.busy(kind, n, err)
		}
		sent := time.Now()
		var token int64
		err := s.leasePool.QueryRow(ctx, `
INSERT INTO leases AS l (kind, name, holder, token, expires, acquired)
VALUES ($1, $2, $3, 1, now() + make_interval(secs => $4), now())
ON CONFLICT (kind, name) DO UPDATE
	SET holder = EXCLUDED.holder, token = l.token + 1, expires = EXCLUDED.expires, acquired = now()
	WHERE l.expires <= now()
RETURNING token`, kind, n, s.holder, s.lease.Seconds()).Scan(&token)
		switch {
		case err == nil:
			return s.hold(ctx, kind, n, token, sent)
		case errors.Is(err, pgx.ErrNoRows):
			// live, someone else's (or ours in another goroutine)
		case ctx.Err() != nil:
			return nil, nil, s.busy(kind, n, ctx.Err())
		default:
			return nil, nil, fmt.Errorf("rollover: taking the lease of %s %s in %s: %w", kind, n, s.where, err)
		}
		t := time.NewTimer(wait + rand.N(wait/2))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, s.busy(kind, n, ctx.Err())
		case <-t.C:
		}
		wait = min(wait*2, 200*time.Millisecond)
	}
}

// busy is the ErrLocked error for a lease another holder has: "mx1.example.nl
// is locked by runner-b until <time>".
func (s *PGStore) busy(kind, name string, cause error) error {
	qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var holder string
	var expires time.Time
	err := s.leasePool.QueryRow(qctx, `SELECT holder, expires FROM leases WHERE kind = $1 AND name = $2`, kind, name).Scan(&holder, &expires)
	who := "another runner"
	if err == nil {
		who = runnerOf(holder) + " until " + expires.UTC().Format(time.RFC3339)
		if holder == s.holder {
			who = "this runner (another goroutine) until " + expires.UTC().Format(time.RFC3339)
		}
	}
	if kind == LeaseMigration {
		return fmt.Errorf("%w: migration %s is being advanced by %s (%v)", ErrLocked, name, who, cause)
	}
	return fmt.Errorf("%w: %s is locked by %s (%v)", ErrLocked, name, who, cause)
}

// runnerOf is the runner name of a holder ("runner-b#3fa2c1d0" → "runner-b").
func runnerOf(holder string) string {
	if i := strings.LastIndexByte(holder, '#'); i > 0 {
		return holder[:i]
	}
	return holder
}

// hold registers a lease just taken (at sent) and starts its renewer.
func (s *PGStore) hold(ctx context.Context, kind, name string, token int64, sent time.Time) (context.Context, func() error, error) {
	l := &pgLease{kind: kind, name: name, token: token, stop: make(chan struct{}), done: make(chan struct{}), lastRenewal: sent}
	l.held, l.cancelHeld = context.WithCancelCause(ctx)
	l.alive, l.cancelAlive = context.WithCancelCause(context.Background())
	valid := s.lease - s.lease/5
	l.mu.Lock() // the timer's func locks too: it sees l.deadline set
	l.deadline = time.AfterFunc(time.Until(sent.Add(valid)), func() {
		l.lose(fmt.Errorf("%w: the lease of %s %s was not renewed in time (the state database did not answer for %v)",
			ErrLeaseLost, kind, name, valid))
	})
	l.mu.Unlock()
	s.mu.Lock()
	s.leases[leaseKey(kind, name)] = l
	s.mu.Unlock()
	go s.renew(l)
	var once sync.Once
	var uerr error
	return l.held, func() error {
		once.Do(func() { uerr = s.release(l) })
		return uerr
	}, nil
}

// lose ends the lease with cause (the first cause wins).
func (l *pgLease) lose(cause error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return
	}
	l.lost = cause
	l.deadline.Stop()
	l.cancelHeld(cause)
	l.cancelAlive(cause)
}

// err is why the lease ended, or nil while it is live.
func (l *pgLease) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// renewed records a successful renewal sent at sent, unless the lease ended
// meanwhile.
func (l *pgLease) renewed(sent time.Time, valid time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil || !l.deadline.Stop() {
		return // the deadline fired first: lost stays lost
	}
	l.lastRenewal = sent
	l.deadline.Reset(time.Until(sent.Add(valid)))
}

// renewedAt is the send time of l's last successful renewal (or its take):
// l is provably live until renewedAt() + lease − lease/5.
func (l *pgLease) renewedAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastRenewal
}

// renew renews l every lease/3 until it is released or lost; a failed
// renewal is retried sooner (lease/10, at most a second).
func (s *PGStore) renew(l *pgLease) {
	defer close(l.done)
	every, retry := s.lease/3, min(s.lease/10, time.Second)
	valid := s.lease - s.lease/5
	// The first renewal is due every after the take was sent, not after it
	// answered: a take that came back late leaves less of the lease.
	next := time.Until(l.renewedAt().Add(every))
	for {
		t := time.NewTimer(max(next, 0))
		select {
		case <-l.stop:
			t.Stop()
			return
		case <-l.alive.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if s.hookNoRenew.Load() {
			next = every
			continue
		}
		sent := time.Now()
		// The attempt may run until the lease would be lost anyway: a
		// renewal that answers late still counts from its send time.
		rctx, cancel := context.WithDeadline(l.alive, l.renewedAt().Add(valid))
		tag, err := s.leasePool.Exec(rctx, `
UPDATE leases SET expires = now() + make_interval(secs => $5)
WHERE kind = $1 AND name = $2 AND token = $3 AND holder = $4 AND expires > now()`,
			l.kind, l.name, l.token, s.holder, s.lease.Seconds())
		cancel()
		switch {
		case err != nil:
			next = retry
		case tag.RowsAffected() == 0:
			l.lose(fmt.Errorf("%w: the lease of %s %s expired or was taken by another runner", ErrLeaseLost, l.kind, l.name))
			return
		default:
			l.renewed(sent, valid)
			next = time.Until(sent.Add(every))
		}
	}
}

// release ends a lease at unlock: the renewer stops, held is cancelled and
// the row expires now (when the lease was still ours).
func (s *PGStore) release(l *pgLease) error {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
	wasLost := l.err()
	l.lose(context.Canceled)
	s.mu.Lock()
	if s.leases[leaseKey(l.kind, l.name)] == l {
		delete(s.leases, leaseKey(l.kind, l.name))
	}
	s.mu.Unlock()
	if wasLost != nil {
		return nil // nothing of ours to release
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.leasePool.Exec(ctx, `UPDATE leases SET expires = now() WHERE kind = $1 AND name = $2 AND token = $3 AND holder = $4`,
		l.kind, l.name, l.token, s.holder)
	if err != nil {
		return fmt.Errorf("rollover: releasing the lease of %s %s: %w (it lapses by itself within %v)", l.kind, l.name, err, s.lease)
	}
	return nil
}

// leaseOf returns the lease this store holds on kind/name, or nil.
func (s *PGStore) leaseOf(kind, name string) *pgLease {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leases[leaseKey(kind, name)]
}

// Lock takes the host's lease (LockLease of kind "host") for the Store
// interface: callers that do not use the held context still have their
// writes fenced.
func (s *PGStore) Lock(ctx context.Context, host string) (func() error, error) {
	_, unlock, err := s.LockLease(ctx, LeaseHost, host)
	return unlock, err
}

// LockMigration takes the migration's lease (LockLease of kind
// "migration"); see Lock.
func (s *PGStore) LockMigration(ctx context.Context, name string) (func() error, error) {
	_, unlock, err := s.LockLease(ctx, LeaseMigration, name)
	return unlock, err
}

// fencedWriteTimeout bounds one fenced write transaction.
const fencedWriteTimeout = 30 * time.Second

// fenced runs write in one transaction that first checks (and locks FOR
// SHARE, so nobody takes it until commit) that this store's lease on
// kind/name is still the row's (token, holder) and not expired, and gives
// write the token to store as the row's fence. what names the write in
// errors. Without a lease on kind/name it refuses (errNotLeased), unless
// transient: then it takes the lease (waiting up to 10 s, transientWait)
// around this one write.
func (s *PGStore) fenced(kind, name, what string, transient bool, write func(ctx context.Context, tx pgx.Tx, token int64) error) error {
	l := s.leaseOf(kind, name)
	if l == nil {
		if !transient {
			return fmt.Errorf("rollover: %s of %s %s refused: %w: take its lock first (a shared store only accepts writes from the runner holding the lease)", what, kind, name, errNotLeased)
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.transientWait)
		defer cancel()
		_, unlock, err := s.LockLease(ctx, kind, name)
		if err != nil {
			return fmt.Errorf("rollover: %s of %s: %w", what, name, err)
		}
		defer unlock()
		if l = s.leaseOf(kind, name); l == nil {
			return fmt.Errorf("rollover: %s of %s: lease vanished", what, name)
		}
	}
	if err := l.err(); err != nil {
		return fmt.Errorf("rollover: %s of %s refused: %w", what, name, err)
	}
	ctx, cancel := context.WithTimeout(l.alive, fencedWriteTimeout)
	defer cancel()
	err := func() error {
		tx, err := s.pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.Background())
		var one int
		err = tx.QueryRow(ctx, `SELECT 1 FROM leases WHERE kind = $1 AND name = $2 AND token = $3 AND holder = $4 AND expires > now() FOR SHARE`,
			kind, name, l.token, s.holder).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			lost := fmt.Errorf("%w: the lease of %s %s expired or was taken by another runner (fencing token %d)", ErrLeaseLost, kind, name, l.token)
			l.lose(lost)
			return lost
		} else if err != nil {
			return err
		}
		if err := write(ctx, tx, l.token); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}()
	if err == nil {
		return nil
	}
	if cause := l.err(); cause != nil && !errors.Is(err, ErrLeaseLost) {
		err = fmt.Errorf("%w (%v)", cause, err)
	}
	return fmt.Errorf("rollover: %s of %s in %s: %w", what, name, s.where, unreachable(err))
}

// errFenced is what a write returns when the row holds a newer fence.
func errFenced(kind, name string, token int64) error {
	return fmt.Errorf("%w: %s %s was written under a newer lease than this runner's (fencing token %d)", ErrLeaseLost, kind, name, token)
}

// Leases returns the leases live now, by kind and name, whoever holds
// them. It only reads.
func (s *PGStore) Leases(ctx context.Context) ([]Lease, error) {
	rows, err := s.pool.Query(ctx, `SELECT kind, name, holder, token, expires FROM leases WHERE expires > now() ORDER BY kind, name`)
	if err != nil {
		return nil, fmt.Errorf("rollover: leases in %s: %w", s.where, unreachable(err))
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		var l Lease
		if err := rows.Scan(&l.Kind, &l.Name, &l.Holder, &l.Token, &l.Expires); err != nil {
			return nil, fmt.Errorf("rollover: leases in %s: %w", s.where, err)
		}
		if i := strings.LastIndexByte(l.Holder, '#'); i > 0 {
			l.Holder = l.Holder[:i]
		}
		out = append(out, l)
	}
	return out, rows.Err()
}
