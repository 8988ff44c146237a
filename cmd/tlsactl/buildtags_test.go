package main

import (
	"bytes"
	"debug/buildinfo"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// minimalTags is the RFC 2136-only build of README's install section.
const minimalTags = "nohosted,noacme,nopostgres"

// TestMinimalBuild builds tlsactl once with -tags nohosted,noacme,nopostgres
// and checks that the binary links none of the hosted providers' client
// libraries, lego or pgx, that it still runs, and that a configuration
// naming what it left out is refused with a message saying which tag did it.
func TestMinimalBuild(t *testing.T) {
	t.Parallel()
	bin := buildTlsactlTags(t, minimalTags)
	dir := t.TempDir()

	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range bi.Deps {
		for _, left := range []string{
			"github.com/libdns/desec", "github.com/libdns/gandi", "github.com/libdns/hetzner",
			"github.com/libdns/ovh", "github.com/libdns/route53", "github.com/libdns/transip",
			"github.com/aws/", "github.com/go-acme/lego", "github.com/jackc/pgx",
		} {
			if strings.HasPrefix(dep.Path, left) {
				t.Errorf("the minimal binary links %s %s", dep.Path, dep.Version)
			}
		}
	}

	tsig := filepath.Join(dir, "tsig.key")
	token := filepath.Join(dir, "token")
	for _, f := range []struct{ path, text string }{
		{tsig, "key \"tlsactl\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=\";\n};\n"},
		{token, "not-a-real-token\n"},
	} {
		if err := os.WriteFile(f.path, []byte(f.text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	desecCfg := filepath.Join(dir, "desec.toml")
	if err := os.WriteFile(desecCfg, []byte("resolver = \"127.0.0.1:1\"\nstate_dir = \""+filepath.Join(dir, "state")+
		"\"\n[provider]\nname = \"desec\"\ntoken_file = \""+token+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pgCfg := filepath.Join(dir, "pg.toml")
	if err := os.WriteFile(pgCfg, []byte("state = \"postgres://tlsactl@127.0.0.1:1/tlsactl\"\nstate_key_file = \""+
		filepath.Join(dir, "state.key")+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	record := "3 1 1 " + strings.Repeat("ab", 32)
	const noHosted = "built without hosted DNS providers (-tags nohosted)"
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		want     []string // in stdout+stderr
		mustNot  []string
		noStderr bool
	}{
		{name: "version", args: []string{"--version"}, code: 0, want: []string{"tlsactl "}, noStderr: true},
		{name: "publish help lists rfc2136 only", args: []string{"publish", "--help"}, code: 0,
			want: []string{"rfc2136"}, mustNot: []string{"desec", "route53"}},
		{name: "hosted provider in the config", code: 2,
			args: []string{"publish", "--config", desecCfg, "--host", "mail.example.nl", "--add", "--record", record, "--dry-run"},
			want: []string{noHosted, `"desec"`, "use rfc2136"}, mustNot: []string{"not-a-real-token"}},
		{name: "hosted provider on the command line", code: 2,
			args: []string{"publish", "--provider", "route53", "--host", "mail.example.nl", "--add", "--record", record, "--dry-run"},
			want: []string{noHosted, `"route53"`}},
		{name: "unknown provider stays unknown", code: 2,
			args: []string{"publish", "--provider", "nosuch", "--host", "mail.example.nl", "--add", "--record", record, "--dry-run"},
			want: []string{`unknown DNS provider "nosuch": known providers are rfc2136`}, mustNot: []string{"nohosted"}},
		{name: "acme renew", code: 2,
			args: []string{"acme", "renew", "--host", "mail.example.nl", "--directory", "https://127.0.0.1:1/dir"},
			want: []string{"built without embedded ACME (-tags noacme)", "tlsactl hook"}},
		{name: "postgres state", code: 2, args: []string{"rollover", "status", "--config", pgCfg},
			want: []string{"built without PostgreSQL support (-tags nopostgres)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			all := stdout.String() + stderr.String()
			if code != tc.code {
				t.Errorf("exit %d, want %d\n%s", code, tc.code, all)
			}
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("output lacks %q:\n%s", w, all)
				}
			}
			for _, w := range tc.mustNot {
				if strings.Contains(all, w) {
					t.Errorf("output contains %q:\n%s", w, all)
				}
			}
			if tc.noStderr && stderr.Len() > 0 {
				t.Errorf("stderr: %s", stderr.String())
			}
			if tc.code != 0 && strings.Count(strings.TrimSpace(stderr.String()), "\n") > 0 {
				t.Errorf("the refusal is more than one line:\n%s", stderr.String())
			}
		})
	}
}
