//go:build failpoints

package main

import (
	"os"
	"syscall"

	"github.com/tlsactl/tlsactl/rollover"
)

// failpointsBuilt reports whether this binary honours TLSACTL_FAILPOINT.
const failpointsBuilt = true

// setFailpoint arms the crash tests' failpoint: TLSACTL_FAILPOINT=<point>
// kills this process with SIGKILL at that point of the engine (see
// rollover.Engine.Failpoint). Only test binaries (go build -tags
// failpoints) have it; the shipped binary ignores the variable.
func setFailpoint(e *rollover.Engine) {
	fp := os.Getenv("TLSACTL_FAILPOINT")
	if fp == "" {
		return
	}
	e.Failpoint = func(point string) {
		if point == fp {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}
