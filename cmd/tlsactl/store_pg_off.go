//go:build nopostgres

package main

import (
	"context"
	"errors"

	"github.com/tlsactl/tlsactl/rollover"
)

// pgBuilt reports whether this tlsactl can keep its state in PostgreSQL.
const pgBuilt = false

// errNoPostgres is the error of a PostgreSQL state in a build without it.
var errNoPostgres = errors.New("this tlsactl was built without PostgreSQL support (-tags nopostgres): use a state directory, or a tlsactl built without that tag")

// openPG refuses: this build has no PostgreSQL store.
func openPG(context.Context, storeSpec) (*stateStore, error) {
	return nil, errNoPostgres
}

// pgStatus is never reached: openPG refuses first.
func pgStatus(context.Context, *stateStore) (int, []rollover.Lease, error) {
	return 0, nil, errNoPostgres
}
