//go:build !failpoints

package main

import "github.com/tlsactl/tlsactl/rollover"

// failpointsBuilt reports whether this binary honours TLSACTL_FAILPOINT.
const failpointsBuilt = false

// setFailpoint does nothing: failpoints exist only in test binaries built
// with -tags failpoints (see failpoint.go), so TLSACTL_FAILPOINT set in a
// production environment cannot kill a rollover.
func setFailpoint(*rollover.Engine) {}
