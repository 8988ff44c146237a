package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// hash-slinger's tlsa is the oracle for create: the same flags must give the
// same record line, byte for byte.

// needHashSlinger returns the path of hash-slinger's tlsa. Under CI=true a
// missing binary fails the test, elsewhere it skips it.
func needHashSlinger(t *testing.T) string {
	t.Helper()
	needOpenSSL(t)
	p, err := exec.LookPath("tlsa")
	if err != nil {
		msg := "hash-slinger's tlsa not found; apt-get install -y hash-slinger"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// hashSlinger runs `tlsa --create args…` in dir and returns its record lines
// (those starting with "_25._tcp."), each ending in a newline. It drops the
// "Got a certificate…"/"Using certificate…" chatter.
func hashSlinger(t *testing.T, bin, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--create"}, args...)...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader("") // never answer an interactive question
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tlsa --create %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var b strings.Builder
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "_25._tcp.") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	if b.Len() == 0 {
		t.Fatalf("tlsa --create %s printed no record line:\n%s", strings.Join(args, " "), out)
	}
	return b.String()
}

func TestCreateMatchesHashSlinger(t *testing.T) {
	bin := needHashSlinger(t)
	type tc struct {
		alg              string
		usage, sel, mt   int
		output, certFile string
	}
	var cases []tc
	// 4 key types × usages 2,3 × selectors 0,1 × mtypes 0,1,2 = 48 calls;
	// the output alternates so that every (u, s, m) is seen as rfc and as
	// generic, on two key types each.
	pkis := map[string]pki{}
	for ai, alg := range keyAlgs {
		p := makePKI(t, alg)
		pkis[alg.name] = p
		for _, u := range []int{2, 3} {
			for s := 0; s <= 1; s++ {
				for m := 0; m <= 2; m++ {
					out := "rfc"
					if (ai+u+s+m)%2 == 1 {
						out = "generic"
					}
					f := p.leaf
					if u == 2 {
						f = p.ca
					}
					cases = append(cases, tc{alg.name, u, s, m, out, f})
				}
			}
		}
	}
	// Usages 0 (CA file) and 1 (leaf): a few cheap extra calls.
	p := pkis["p256"]
	cases = append(cases,
		tc{"p256", 0, 1, 1, "rfc", p.ca},
		tc{"p256", 0, 0, 2, "generic", p.ca},
		tc{"p256", 1, 1, 1, "generic", p.leaf},
		tc{"p256", 1, 0, 0, "rfc", p.leaf},
	)
	if len(cases) > 60 {
		t.Fatalf("%d hash-slinger calls: keep the matrix at 60 or fewer", len(cases))
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s/%d%d%d/%s", c.alg, c.usage, c.sel, c.mt, c.output)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			args := []string{"--port", "25", "--usage", strconv.Itoa(c.usage), "--selector", strconv.Itoa(c.sel),
				"--mtype", strconv.Itoa(c.mt), "--output", c.output, "--certificate", c.certFile, "mail.example.nl"}
			want := hashSlinger(t, bin, filepath.Dir(c.certFile), args...)
			got, stderr, code := runCLI(t, "", append([]string{"create"}, args...)...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			if got != want {
				t.Errorf("tlsactl create %s\n got %q\nwant %q (hash-slinger)", strings.Join(args, " "), got, want)
			}
			prefix := fmt.Sprintf("_25._tcp.mail.example.nl. IN TLSA %d %d %d ", c.usage, c.sel, c.mt)
			if c.output == "generic" {
				prefix = `_25._tcp.mail.example.nl. IN TYPE52 \# `
			}
			if strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, prefix) {
				t.Errorf("got %q, want one line starting %q", got, prefix)
			}
		})
	}
}

// TestNCSCFactsheetCommands runs the two commands of the NCSC DANE factsheet
// literally, with "python tlsa" replaced by "tlsactl create", in a directory
// holding CA.pem and server.pem.
func TestNCSCFactsheetCommands(t *testing.T) {
	bin := needHashSlinger(t)
	p := makePKI(t, keyAlgs[0]) // RSA 2048, the common case
	dir := t.TempDir()
	for src, dst := range map[string]string{p.ca: "CA.pem", p.leaf: "server.pem"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	for _, c := range []struct {
		cmd, wantRDATA string
	}{
		{"--port 25 --usage 2 --selector 1 --certificate CA.pem mail.example.nl", "2 1 1 "},
		{"--port 25 --usage 3 --selector 1 --certificate server.pem mail.example.nl", "3 1 1 "},
	} {
		t.Run(c.wantRDATA[:5], func(t *testing.T) {
			args := strings.Fields(c.cmd)
			want := hashSlinger(t, bin, dir, args...)
			got, stderr, code := runCLI(t, "", append([]string{"create"}, args...)...)
			if code != 0 || stderr != "" {
				t.Fatalf("tlsactl create %s: exit %d, stderr %q", c.cmd, code, stderr)
			}
			if got != want {
				t.Errorf("tlsactl create %s\n got %q\nwant %q (hash-slinger)", c.cmd, got, want)
			}
			if !strings.HasPrefix(got, "_25._tcp.mail.example.nl. IN TLSA "+c.wantRDATA) || len(got) != len("_25._tcp.mail.example.nl. IN TLSA 3 1 1 ")+64+1 {
				t.Errorf("got %q, want one %s<sha256> line", got, c.wantRDATA)
			}
		})
	}
}
