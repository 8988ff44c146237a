package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletionScripts checks the syntax of each script with its shell,
// when installed (bash is required).
func TestCompletionScripts(t *testing.T) {
	for _, tc := range []struct {
		shell, want string
		required    bool
	}{
		{"bash", "complete -o bashdefault -o default -F _tlsactl_complete tlsactl", true},
		{"zsh", "compdef _tlsactl tlsactl", false},
		{"fish", "complete -c tlsactl", false},
	} {
		out, errOut, code := runCLI(t, "", "completion", tc.shell)
		if code != 0 || errOut != "" || !strings.Contains(out, tc.want) {
			t.Errorf("completion %s: exit %d, stderr %q, no %q in\n%s", tc.shell, code, errOut, tc.want, out)
			continue
		}
		if _, err := exec.LookPath(tc.shell); err != nil {
			if tc.required {
				t.Errorf("%s not found", tc.shell)
			} else {
				t.Logf("%s not found: syntax not checked", tc.shell)
			}
			continue
		}
		f := filepath.Join(t.TempDir(), "tlsactl."+tc.shell)
		if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command(tc.shell, "-n", f).CombinedOutput(); err != nil || len(b) > 0 {
			t.Errorf("%s -n: %v\n%s", tc.shell, err, b)
		}
	}
	out, _, _ := runCLI(t, "", "completion", "fish")
	for _, w := range []string{"-a 'rollover'", "-a 'plan'", "-l host", "-l version"} {
		if !strings.Contains(out, w) {
			t.Errorf("fish script: no %q", w)
		}
	}
	if n := strings.Count(out, "__fish_tlsactl_no_subcommand' -f -l help"); n != 1 {
		t.Errorf("fish script: the top-level --help is listed more than once")
	}
	if _, _, code := runCLI(t, "", "completion", "bash", "extra"); code != exitBadInput {
		t.Errorf("completion bash extra: exit %d, want %d", code, exitBadInput)
	}
}

// TestCompletionBashLive sources the bash script and completes with the
// real binary, as bash does on TAB.
func TestCompletionBashLive(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not found")
	}
	bin := buildShippedTlsactl(t)
	script, err := exec.Command(bin, "completion", "bash").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "tlsactl.bash")
	if err := os.WriteFile(f, script, 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) []string {
		t.Helper()
		// COMP_WORDS: the words typed, the last one being completed.
		prog := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _tlsactl_complete; printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command("bash", append([]string{"-c", prog, "bash", f, "tlsactl"}, words...)...)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("complete %v: %v\n%s", words, err, out)
		}
		return strings.Fields(string(out))
	}
	has := func(list []string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !contains(list, w) {
				t.Errorf("completions %v lack %q", list, w)
			}
		}
	}
	has(complete(""), "rollover", "migration", "completion", "version", "man")
	has(complete("ro"), "rollover")
	has(complete("rollover", ""), "plan", "start", "provide", "run", "status", "abort")
	has(complete("rollover", "plan", "--ho"), "--host")
	has(complete("completion", ""), "bash", "zsh", "fish")
}
