//go:build !nopostgres

package main

import (
	"context"
	"errors"
	"time"

	"github.com/tlsactl/tlsactl/rollover"
)

// pgBuilt reports whether this tlsactl can keep its state in PostgreSQL.
const pgBuilt = true

// openPG opens the PostgreSQL store sp names (see rollover.OpenPG).
func openPG(ctx context.Context, sp storeSpec) (*stateStore, error) {
	where := pgWhere(sp.location)
	s, err := rollover.OpenPG(ctx, rollover.PGOptions{DSN: sp.location, PasswordFile: sp.passwordFile, KeyFile: sp.keyFile,
		Runner: sp.runner, Lease: sp.lease})
	if err != nil {
		return nil, storeErr(where, err)
	}
	return &stateStore{fullStore: s, local: sp.local, where: where, runner: s.Runner(), close: s.Close}, nil
}

// pgStatus reads the schema version of s's database and its live leases
// (who works on which host or migration, until when by the database's
// clock).
func pgStatus(ctx context.Context, s *stateStore) (int, []rollover.Lease, error) {
	pg, ok := s.fullStore.(*rollover.PGStore)
	if !ok {
		return 0, nil, errors.New("not a PostgreSQL store")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := pg.SchemaVersion(ctx)
	if err != nil {
		return 0, nil, err
	}
	leases, err := pg.Leases(ctx)
	return v, leases, err
}
