package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"github.com/tlsactl/tlsactl/rollover"
)

// TestSetFailpoint: the failpoint is armed exactly in builds with the
// failpoints tag (`go test -tags failpoints` runs the other half).
func TestSetFailpoint(t *testing.T) {
	t.Setenv("TLSACTL_FAILPOINT", "step-start:publish")
	e := &rollover.Engine{}
	setFailpoint(e)
	if got := e.Failpoint != nil; got != failpointsBuilt {
		t.Fatalf("failpoint armed = %v in a build with failpoints = %v", got, failpointsBuilt)
	}
	if failpointsBuilt {
		e.Failpoint("step-done:publish") // another point: must return
	}
}

// TestShippedBinaryIgnoresFailpoint builds tlsactl as it ships (no tags) and
// checks that it holds no code reading TLSACTL_FAILPOINT, and that `rollover
// run` with the variable set exits normally instead of being killed.
func TestShippedBinaryIgnoresFailpoint(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "tlsactl")
	// -tags= overrides any tags in GOFLAGS: this is the shipped build.
	if b, err := exec.Command(goBin, "build", "-tags=", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("TLSACTL_FAILPOINT")) {
		t.Error("the binary built without -tags failpoints mentions TLSACTL_FAILPOINT")
	}
	cfg := filepath.Join(dir, "tlsactl.toml")
	if err := os.WriteFile(cfg, []byte("resolver = \"127.0.0.1:53\"\nstate_dir = \""+filepath.Join(dir, "state")+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "rollover", "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "TLSACTL_FAILPOINT=step-start:publish")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("rollover run was killed by %v\n%s", ws.Signal(), out)
		}
	}
	if err != nil {
		t.Fatalf("rollover run: %v\n%s", err, out)
	}
}
