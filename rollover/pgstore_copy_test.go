//go:build !nopostgres

package rollover

import "testing"

// TestCopyStorePG: file → PostgreSQL → file is byte-for-byte (private keys
// sealed in between).
func TestCopyStorePG(t *testing.T) {
	copyRoundTrip(t, newPGBackend(t).open(t, "", 0))
}
