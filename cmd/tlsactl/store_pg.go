//go:build !nopostgres

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/tlsactl/tlsactl/internal/safefile"
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
	return &stateStore{fullStore: s, local: sp.local, where: where, runner: s.Runner(), close: s.Close, spec: sp}, nil
}

// pgStatus reads the schema version of s's database and its live leases
// (who works on which host or migration, until when by the database's
// clock). It reads the leases table of rollover's schema over a connection
// of its own, with the store's DSN and password.
func pgStatus(ctx context.Context, s *stateStore) (int, []leaseInfo, error) {
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
	cfg, err := pgx.ParseConfig(s.spec.location)
	if err != nil {
		return 0, nil, errors.New("the DSN does not parse (want postgres://user@host:port/db?sslmode=verify-full)")
	}
	if s.spec.passwordFile != "" && cfg.Password == "" {
		b, err := safefile.ReadPrivate(s.spec.passwordFile)
		if err != nil {
			return 0, nil, fmt.Errorf("state_password_file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		cfg.Password = strings.TrimRight(line, "\r")
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "tlsactl:" + s.runner + ":status"
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT kind, name, holder, token, expires FROM leases WHERE expires > now() ORDER BY kind, name`)
	if err != nil {
		return 0, nil, err
	}
	var out []leaseInfo
	for rows.Next() {
		var l leaseInfo
		if err := rows.Scan(&l.Kind, &l.Name, &l.Holder, &l.Token, &l.Expires); err != nil {
			return 0, nil, err
		}
		if i := strings.LastIndexByte(l.Holder, '#'); i > 0 {
			l.Holder = l.Holder[:i] // the runner's name without its instance id
		}
		out = append(out, l)
	}
	return v, out, rows.Err()
}
