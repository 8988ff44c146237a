//go:build failpoints

package main

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tlsactl/tlsactl/rollover"
)

// failpointsBuilt reports whether this binary honours TLSACTL_FAILPOINT.
const failpointsBuilt = true

// setFailpoint arms the test failpoints of rollover.Engine.Failpoint:
//
//   - TLSACTL_FAILPOINT=<point> kills this process with SIGKILL at that
//     point (the crash tests);
//   - TLSACTL_FAILPOINT_PAUSE=<point>:<gate file> makes the first pass
//     through that point create <gate file>.reached and wait while <gate
//     file> exists, so a test can act at that instant (someone else
//     editing the zone between tlsactl's observation and its change).
//
// Only test binaries (go build -tags failpoints) have them; the shipped
// binary ignores the variables.
func setFailpoint(e *rollover.Engine) {
	kill := os.Getenv("TLSACTL_FAILPOINT")
	pausePoint, gate, _ := strings.Cut(os.Getenv("TLSACTL_FAILPOINT_PAUSE"), ":")
	if kill == "" && (pausePoint == "" || gate == "") {
		return
	}
	var paused atomic.Bool
	e.Failpoint = func(point string) {
		if point == kill {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
		if point == pausePoint && gate != "" && paused.CompareAndSwap(false, true) {
			_ = os.WriteFile(gate+".reached", nil, 0o600)
			for {
				if _, err := os.Stat(gate); errors.Is(err, fs.ErrNotExist) {
					return
				}
				time.Sleep(20 * time.Millisecond) // polling a file the test removes
			}
		}
	}
}
