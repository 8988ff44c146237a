//go:build !nopostgres

package rollover

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgMigration is one forward-only schema change of a PGStore database.
type pgMigration struct {
	what string
	sql  string
}

// pgMigrations are the schema versions in order: version i+1 is
// pgMigrations[i]. Append only; never change a released entry.
//
// Documents (states, ledgers, migrations) are stored as text holding the
// JSON a FileStore writes, byte for byte, so a copy between the stores
// round-trips exactly. Every lease-guarded row records the fencing token
// (fence) of the lease it was written under.
var pgMigrations = []pgMigration{
	{what: "leases, states, staged material, ledgers, migrations", sql: `
CREATE TABLE leases (
	kind     text        NOT NULL,
	name     text        NOT NULL,
	holder   text        NOT NULL,
	token    bigint      NOT NULL,
	expires  timestamptz NOT NULL,
	acquired timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (kind, name)
);
CREATE TABLE states (
	host    text        PRIMARY KEY,
	doc     text        NOT NULL,
	fence   bigint      NOT NULL,
	runner  text        NOT NULL,
	updated timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE materials (
	host    text        NOT NULL,
	name    text        NOT NULL,
	key_id  text        NOT NULL,
	nonce   bytea       NOT NULL,
	sealed  bytea       NOT NULL,
	fence   bigint      NOT NULL,
	updated timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (host, name)
);
CREATE TABLE ledgers (
	owner   text        PRIMARY KEY,
	doc     text        NOT NULL,
	updated timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE migrations (
	name    text        PRIMARY KEY,
	doc     text        NOT NULL,
	fence   bigint      NOT NULL,
	runner  text        NOT NULL,
	updated timestamptz NOT NULL DEFAULT now()
);
`},
}

// pgSchemaLockKey is the pg_advisory_xact_lock key under which schema
// migrations run ("tlsactl" in ASCII).
const pgSchemaLockKey int64 = 0x746c736163746c

// ErrSchemaNewer: the database was migrated by a newer tlsactl; this one
// changes nothing in it.
var ErrSchemaNewer = errors.New("database schema is newer than this tlsactl")

// PGSchemaVersion is the schema version this tlsactl migrates a database to.
func PGSchemaVersion() int { return len(pgMigrations) }

// migrateSchema brings the database to PGSchemaVersion: in ONE transaction
// under pg_advisory_xact_lock, it creates tlsactl_schema when missing, reads
// the version and applies the missing migrations, each recorded in
// tlsactl_schema. Two runners starting at once migrate once (the second
// waits for the lock and finds nothing to do). A database with a newer
// version is refused (ErrSchemaNewer) and not changed. It returns the
// versions applied.
func migrateSchema(ctx context.Context, pool *pgxpool.Pool) (applied []int, err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, pgSchemaLockKey); err != nil {
		return nil, fmt.Errorf("schema lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS tlsactl_schema (
	version    int         PRIMARY KEY,
	applied_at timestamptz NOT NULL DEFAULT now(),
	what       text        NOT NULL
)`); err != nil {
		return nil, fmt.Errorf("creating tlsactl_schema: %w", err)
	}
	var have int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM tlsactl_schema`).Scan(&have); err != nil {
		return nil, fmt.Errorf("reading the schema version: %w", err)
	}
	if have > len(pgMigrations) {
		return nil, fmt.Errorf("%w: database schema v%d is newer than this tlsactl (v%d): upgrade tlsactl", ErrSchemaNewer, have, len(pgMigrations))
	}
	for v := have + 1; v <= len(pgMigrations); v++ {
		m := pgMigrations[v-1]
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return nil, fmt.Errorf("schema migration v%d (%s): %w", v, m.what, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tlsactl_schema (version, what) VALUES ($1, $2)`, v, m.what); err != nil {
			return nil, fmt.Errorf("schema migration v%d: %w", v, err)
		}
		applied = append(applied, v)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("schema migration: %w", err)
	}
	return applied, nil
}

// SchemaVersion returns the schema version of the store's database.
func (s *PGStore) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM tlsactl_schema`).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return v, err
}
