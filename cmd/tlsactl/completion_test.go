package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsactl/tlsactl/internal/testbed"
)

// TestCompletionScripts checks the syntax of each script with its shell,
// when installed (bash is required).
func TestCompletionScripts(t *testing.T) {
	for _, tc := range []struct {
		shell, want string
		required    bool
	}{
		{"bash", "complete -o bashdefault -o default -F _tlsactl_complete tlsactl", true},
		{"zsh", "compdef _tlsactl tlsactl", os.Getenv("CI") == "true"},
		{"fish", "complete -c tlsactl", os.Getenv("CI") == "true"},
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
	testbed.Require(t, "bash", "bash")
	bin := buildTlsactlTags(t, "") // the shared build
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

// TestCompletionFishLive sources the fish script in fish and asks fish for
// the candidates of a command line (complete -C, what fish does on TAB).
func TestCompletionFishLive(t *testing.T) {
	fish := testbed.Require(t, "fish", "fish")
	bin := buildTlsactlTags(t, "") // the shared build
	script, err := exec.Command(bin, "completion", "fish").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "tlsactl.fish")
	if err := os.WriteFile(f, script, 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(line string) []string {
		t.Helper()
		cmd := exec.Command(fish, "--no-config", "-c", `source $argv[1]; complete -C $argv[2]`, f, line)
		cmd.Dir = t.TempDir() // an empty directory: no file names among the candidates
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish complete -C %q: %v\n%s", line, err, out)
		}
		var words []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			w, _, _ := strings.Cut(l, "\t") // candidate, tab, description
			words = append(words, w)
		}
		return words
	}
	has := func(line string, want ...string) {
		t.Helper()
		got := complete(line)
		for _, w := range want {
			if !contains(got, w) {
				t.Errorf("fish completions of %q: %v lack %q", line, got, w)
			}
		}
	}
	has("tlsactl ", "rollover", "migration", "completion", "version", "man")
	has("tlsactl ro", "rollover")
	has("tlsactl rollover ", "plan", "start", "provide", "run", "status", "abort")
	has("tlsactl rollover plan --ho", "--host")
	has("tlsactl completion ", "bash", "zsh", "fish")
}

// TestCompletionZshLive runs the zsh script's _tlsactl in zsh with words
// and CURRENT set as zsh's completion system sets them, so the script's
// word handling and tlsactl's candidates are real; compsys's output
// functions (_describe, _files), which need a live line editor, print what
// they are given instead.
func TestCompletionZshLive(t *testing.T) {
	zsh := testbed.Require(t, "zsh", "zsh")
	bin := buildTlsactlTags(t, "") // the shared build
	script, err := exec.Command(bin, "completion", "zsh").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "_tlsactl")
	if err := os.WriteFile(f, script, 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) []string {
		t.Helper()
		prog := `compdef() { :; }; source $1; shift
_describe() { print -rl -- "${(@P)2}"; }
_files() { print -r -- FILES; }
words=(tlsactl "$@"); CURRENT=${#words}; _tlsactl`
		cmd := exec.Command(zsh, append([]string{"-f", "-c", prog, "zsh", f}, words...)...)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("zsh _tlsactl %v: %v\n%s", words, err, out)
		}
		return strings.Fields(string(out))
	}
	has := func(got []string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !contains(got, w) {
				t.Errorf("zsh completions %v lack %q", got, w)
			}
		}
	}
	has(complete(""), "rollover", "migration", "completion", "version", "man")
	has(complete("rollover", ""), "plan", "start", "provide", "run", "status", "abort")
	has(complete("rollover", "plan", "--ho"), "--host")
	has(complete("completion", ""), "bash", "zsh", "fish")
}
