package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, errOut, code := runCLI(t, "", args...)
		if code != 0 || errOut != "" {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
		}
		if !strings.HasPrefix(out, "tlsactl ") || !strings.Contains(out, runtime.Version()) ||
			!strings.Contains(out, runtime.GOOS+"/"+runtime.GOARCH) || !strings.Contains(out, modulePath) {
			t.Errorf("%v: output lacks name, module, Go version or platform:\n%s", args, out)
		}
	}

	out, errOut, code := runCLI(t, "", "version", "--json")
	if code != 0 || errOut != "" {
		t.Fatalf("version --json: exit %d, stderr %q", code, errOut)
	}
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version --json: %v\n%s", err, out)
	}
	if v.Name != "tlsactl" || v.GoVersion != runtime.Version() || v.GOOS != runtime.GOOS || v.GOARCH != runtime.GOARCH || v.Version == "" {
		t.Errorf("version --json = %+v", v)
	}

	// -v is no alias of --version: 'acme renew -v' means --verbose.
	if _, errOut, code := runCLI(t, "", "-v"); code != exitBadInput || !strings.Contains(errOut, "-v") {
		t.Errorf("-v: exit %d, stderr %q; want a usage error", code, errOut)
	}
	if _, _, code := runCLI(t, "", "version", "extra"); code != exitBadInput {
		t.Errorf("version extra: exit %d, want %d", code, exitBadInput)
	}
}

// buildShippedTlsactl builds the binary as shipped (no failpoints tag) into a
// temporary directory and returns its path: test binaries carry no VCS stamp.
func buildShippedTlsactl(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skip("go command not found")
		}
	}
	bin := filepath.Join(t.TempDir(), "tlsactl")
	out, err := exec.Command(goBin, "build", "-buildvcs=auto", "-o", bin, ".").CombinedOutput()
	if err != nil {
		// e.g. a work tree whose VCS cannot be queried: build unstamped.
		t.Logf("go build -buildvcs=auto: %v\n%s", err, out)
		if out, err := exec.Command(goBin, "build", "-buildvcs=false", "-o", bin, ".").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	return bin
}

func TestVersionBuiltBinary(t *testing.T) {
	bin := buildShippedTlsactl(t)
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("--version: %v", err)
	}
	if !strings.HasPrefix(string(out), "tlsactl ") || !strings.Contains(string(out), runtime.Version()) {
		t.Errorf("--version:\n%s", out)
	}
	out, err = exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("version --json: %v", err)
	}
	var v versionInfo
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("version --json: %v\n%s", err, out)
	}
	if v.Module != modulePath || v.GoVersion != runtime.Version() || v.Version == "" {
		t.Errorf("version --json = %+v", v)
	}
	if v.Revision == "" {
		t.Logf("binary not VCS-stamped (no repository or -buildvcs=false): %+v", v)
		return
	}
	if v.Time == "" || v.Modified == nil {
		t.Errorf("VCS revision without time or modified: %+v", v)
	}
	if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil && strings.TrimSpace(string(head)) != v.Revision {
		t.Errorf("vcs_revision %s, git HEAD %s", v.Revision, head)
	}
}
