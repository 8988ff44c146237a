package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// manFiles returns the page names every visible command and subcommand of
// the CLI definition should get, each with its command.
func manFiles() map[string]*cli.Command {
	app := newApp(nil, io.Discard, io.Discard)
	files := map[string]*cli.Command{"tlsactl.1": nil}
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden {
				continue
			}
			files[prefix+"-"+c.Name+".1"] = c
			walk(prefix+"-"+c.Name, c.Subcommands)
		}
	}
	walk("tlsactl", app.Commands)
	return files
}

func TestManPages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man1")
	if out, errOut, code := runCLI(t, "", "man", "--dir", dir); code != 0 || out != "" || errOut != "" {
		t.Fatalf("man --dir: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	want := manFiles()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	var wantNames []string
	for n := range want {
		wantNames = append(wantNames, n)
	}
	slices.Sort(wantNames)
	if !slices.Equal(got, wantNames) {
		t.Fatalf("pages:\n got %v\nwant %v", got, wantNames)
	}
	for _, must := range []string{"tlsactl-rollover-run.1", "tlsactl-migration-start.1", "tlsactl-check-outbound.1", "tlsactl-completion-bash.1"} {
		if _, ok := want[must]; !ok {
			t.Errorf("no page %s expected: the command tree changed?", must)
		}
	}

	for name, c := range want {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		page := string(b)
		title := strings.ToUpper(strings.TrimSuffix(name, ".1"))
		for _, s := range []string{".TH " + roffArg(title) + " 1 ", ".SH NAME\n", ".SH SYNOPSIS\n", ".SH DESCRIPTION\n", ".SH OPTIONS\n", ".SH SEE ALSO\n"} {
			if !strings.Contains(page, s) {
				t.Errorf("%s: no %q", name, s)
			}
		}
		if c == nil {
			continue
		}
		// Every section of the description (EXIT CODES, EXAMPLES, …) is a
		// section of the page.
		_, secs := splitDescription(c.Description)
		for _, s := range secs {
			if !strings.Contains(page, ".SH "+roffArg(s.title)+"\n") {
				t.Errorf("%s: no section %q", name, s.title)
			}
		}
		for _, f := range c.Flags {
			if !strings.Contains(page, `\fB\-\-`+roffText(f.Names()[0])) {
				t.Errorf("%s: flag --%s missing", name, f.Names()[0])
			}
		}
		for _, l := range strings.Split(strings.TrimSuffix(page, "\n"), "\n") {
			if strings.TrimSpace(l) == "" {
				t.Errorf("%s: blank line in roff source", name)
				break
			}
		}
	}
	for _, name := range []string{"tlsactl-check.1", "tlsactl-rollover.1", "tlsactl-migration.1"} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if !strings.Contains(string(b), `.SH "EXIT CODES`) {
			t.Errorf("%s: no EXIT CODES section", name)
		}
	}
	for _, name := range []string{"tlsactl-check.1", "tlsactl-migration.1", "tlsactl-create.1"} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if !strings.Contains(string(b), `.SH "EXAMPLES"`) {
			t.Errorf("%s: no EXAMPLES section", name)
		}
	}

	lintMan(t, dir, wantNames)

	// Without --dir: the top page on stdout, the same as tlsactl.1.
	out, errOut, code := runCLI(t, "", "man")
	top, _ := os.ReadFile(filepath.Join(dir, "tlsactl.1"))
	if code != 0 || errOut != "" || out != string(top) {
		t.Errorf("man: exit %d, stderr %q, stdout equal to tlsactl.1: %v", code, errOut, out == string(top))
	}
	if _, _, code := runCLI(t, "", "man", "extra"); code != exitBadInput {
		t.Errorf("man extra: exit %d, want %d", code, exitBadInput)
	}
}

// lintMan runs mandoc -T lint or groff -man -ww on each page, when one is
// installed, and fails on any warning.
func lintMan(t *testing.T, dir string, pages []string) {
	t.Helper()
	var linter []string
	if _, err := exec.LookPath("mandoc"); err == nil {
		linter = []string{"mandoc", "-T", "lint", "-W", "warning"}
	} else if _, err := exec.LookPath("groff"); err == nil {
		linter = []string{"groff", "-man", "-z", "-ww", "-T", "utf8"}
	} else {
		t.Log("neither mandoc nor groff on PATH: pages not linted")
		return
	}
	for _, p := range pages {
		var out bytes.Buffer
		cmd := exec.Command(linter[0], append(linter[1:], filepath.Join(dir, p))...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err != nil || out.Len() > 0 {
			t.Errorf("%s %s: %v\n%s", strings.Join(linter, " "), p, err, out.String())
		}
	}
}

func TestManRoffEscape(t *testing.T) {
	for in, want := range map[string]string{
		`.foo`:              `\&.foo`,
		`'bar`:              `\&'bar`,
		`a\b`:               `a\eb`,
		`--json`:            `\-\-json`,
		`RFC 7671 §8.1`:     `RFC 7671 \[u00A7]8.1`,
		`{"type":"host",…}`: `{"type":"host",\[u2026]}`,
		"mid .dot":          "mid .dot",
	} {
		if got := roffText(in); got != want {
			t.Errorf("roffText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := roffArg(`say "hi"`); got != `"say \(dqhi\(dq"` {
		t.Errorf("roffArg = %q", got)
	}
}

// TestHelpKeepsExamplesAndExitCodes: --help still shows the sections of the
// descriptions the man pages are made from.
func TestHelpKeepsExamplesAndExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"check", "--help"}, []string{"EXIT CODES", "EXAMPLES:", "tlsactl check example.nl"}},
		{[]string{"rollover", "--help"}, []string{"EXIT CODES:", "plan", "run"}},
		{[]string{"migration", "--help"}, []string{"EXIT CODES", "EXAMPLES:"}},
		{[]string{"rollover", "run", "--help"}, nil},
		{[]string{"version", "--help"}, []string{"EXIT CODES:", "EXAMPLES:", "--json"}},
		{[]string{"man", "--help"}, []string{"EXIT CODES:", "EXAMPLES:", "--dir DIR"}},
		{[]string{"completion", "--help"}, []string{"EXIT CODES:", "EXAMPLES:", "bash", "zsh", "fish"}},
		{[]string{"--help"}, []string{"version", "man", "completion", "--version"}},
	} {
		out, errOut, code := runCLI(t, "", tc.args...)
		if code != 0 || errOut != "" {
			t.Errorf("%v: exit %d, stderr %q", tc.args, code, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: no %q in\n%s", tc.args, w, out)
			}
		}
	}
}

// TestEveryCommandTeaches walks the whole command tree: every command an
// operator runs (a command with an action and no subcommands of its own)
// has EXAMPLES and EXIT CODES in its --help, so the man page of each has
// both sections too.
func TestEveryCommandTeaches(t *testing.T) {
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	var walk func(prefix, parent string, cmds []*cli.Command)
	n := 0
	walk = func(prefix, parent string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Name == "help" || c.Hidden {
				continue
			}
			name := strings.TrimSpace(prefix + " " + c.Name)
			if len(c.Subcommands) > 0 {
				walk(name, c.Description, c.Subcommands)
				if c.Action == nil {
					continue
				}
			}
			n++
			desc := c.Description
			if desc == "" { // a trivial leaf (completion bash) is taught by its parent
				desc = parent
			}
			for _, want := range []string{"\nEXAMPLES", "\nEXIT CODES"} {
				if !strings.Contains("\n"+desc, want) {
					t.Errorf("tlsactl %s --help: no %s section", name, strings.TrimSpace(want))
				}
			}
		}
	}
	walk("", "", app.Commands)
	if n < 25 {
		t.Errorf("walked %d commands, want every command (at least 25)", n)
	}
}
