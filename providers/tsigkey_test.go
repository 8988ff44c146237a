package providers_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/testbed"
	"github.com/tlsactl/tlsactl/providers"
)

// tsigKeygen runs the real tsig-keygen (bind9) and returns its output.
func tsigKeygen(t *testing.T, alg, name string) []byte {
	t.Helper()
	bin := testbed.Require(t, "tsig-keygen", "bind9")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-a", alg, name).Output()
	if err != nil {
		t.Fatalf("tsig-keygen -a %s %s: %v", alg, name, err)
	}
	return out
}

// secretOf returns the quoted secret of a key file, for the no-leak checks.
func secretOf(t *testing.T, b []byte) string {
	t.Helper()
	s := string(b)
	i := strings.Index(s, `secret "`)
	if i < 0 {
		t.Fatalf("no secret in %q", s)
	}
	s = s[i+len(`secret "`):]
	return s[:strings.IndexByte(s, '"')]
}

func TestParseTSIGKeyFileTsigKeygen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ alg, want string }{
		{"hmac-sha256", dns.HmacSHA256},
		{"hmac-sha512", dns.HmacSHA512},
		{"hmac-sha1", dns.HmacSHA1},
		{"hmac-sha384", dns.HmacSHA384},
		{"hmac-sha224", dns.HmacSHA224},
	} {
		out := tsigKeygen(t, tc.alg, "tlsactl-"+tc.alg)
		k, err := providers.ParseTSIGKeyFile(out)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.alg, err, out)
		}
		if k.Name != "tlsactl-"+tc.alg+"." || k.Algorithm != tc.want || k.Secret != secretOf(t, out) {
			t.Errorf("%s: got %s with secret of %d chars", tc.alg, k, len(k.Secret))
		}
		if strings.Contains(k.String(), k.Secret) || strings.Contains(fmt.Sprintf("%v %+v", k, &k), k.Secret) {
			t.Errorf("TSIGKey.String shows the secret")
		}
	}
	// hmac-md5 is what old setups use; miekg/dns signs with it, but the
	// parser only takes the SHA family.
	out := tsigKeygen(t, "hmac-md5", "old")
	_, err := providers.ParseTSIGKeyFile(out)
	if err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("hmac-md5: err = %v, want not supported", err)
	}
	if strings.Contains(err.Error(), secretOf(t, out)) {
		t.Fatalf("error contains the secret: %v", err)
	}
}

func TestParseTSIGKeyFile(t *testing.T) {
	t.Parallel()
	const sec = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM0NQ=="
	const sec2 = "b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItMDEyMw=="
	for _, tc := range []struct {
		name, in  string
		wantName  string
		wantAlg   string
		wantSec   string
		wantErr   string
		forbidden []string // must not appear in the error
	}{
		{name: "plain", in: `key "k1" { algorithm hmac-sha256; secret "` + sec + `"; };`,
			wantName: "k1.", wantAlg: dns.HmacSHA256, wantSec: sec},
		{name: "comments of every style", in: "# a comment with key \"x\" {\n// another; secret \"" + sec2 + "\";\n/* block\nkey \"y\" { */\nkey \"k1\" { // trailing\n\talgorithm hmac-sha256; # hash\n\t/* inline */ secret \"" + sec + "\";\n};\n",
			wantName: "k1.", wantAlg: dns.HmacSHA256, wantSec: sec},
		{name: "multiple keys: the first wins", in: "key \"first\" {\n\talgorithm hmac-sha512;\n\tsecret \"" + sec + "\";\n};\nkey \"second\" {\n\talgorithm hmac-sha256;\n\tsecret \"" + sec2 + "\";\n};\n",
			wantName: "first.", wantAlg: dns.HmacSHA512, wantSec: sec},
		{name: "secret before algorithm, upper case, FQDN name", in: `key "k1.example." { secret "` + sec + `"; algorithm HMAC-SHA256; };`,
			wantName: "k1.example.", wantAlg: dns.HmacSHA256, wantSec: sec},
		{name: "other clauses around", in: "options { directory \"/x\"; };\nkey k1 {\nalgorithm \"hmac-sha256\";\nsecret \"" + sec + "\";\n};\nzone \"z\" { type primary; };",
			wantName: "k1.", wantAlg: dns.HmacSHA256, wantSec: sec},
		{name: "missing secret", in: `key "k1" { algorithm hmac-sha256; };`, wantErr: "has no secret"},
		{name: "empty secret", in: `key "k1" { algorithm hmac-sha256; secret ""; };`, wantErr: "has no secret"},
		{name: "missing algorithm", in: `key "k1" { secret "` + sec + `"; };`, wantErr: "has no algorithm", forbidden: []string{sec}},
		{name: "bad base64", in: `key "k1" { algorithm hmac-sha256; secret "not*base64!` + sec + `"; };`, wantErr: "not valid base64", forbidden: []string{sec, "not*base64!"}},
		{name: "unterminated secret", in: "key \"k1\" { algorithm hmac-sha256; secret \"" + sec + "\n};\n", wantErr: "not valid base64", forbidden: []string{sec}},
		{name: "unsupported algorithm", in: `key "k1" { algorithm hmac-md5; secret "` + sec + `"; };`, wantErr: "not supported", forbidden: []string{sec}},
		{name: "gss-tsig", in: `key "k1" { algorithm gss-tsig; secret "` + sec + `"; };`, wantErr: "not supported", forbidden: []string{sec}},
		{name: "bare secret, no key clause", in: sec + "\n", wantErr: "no key clause found", forbidden: []string{sec}},
		{name: "empty file", in: "", wantErr: "no key clause found"},
		{name: "only a comment", in: "# key \"k1\" { algorithm hmac-sha256; secret \"" + sec + "\"; };\n", wantErr: "no key clause found", forbidden: []string{sec}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := providers.ParseTSIGKeyFile([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("no error; got %s", k)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				for _, f := range append(tc.forbidden, sec, sec2) {
					if strings.Contains(err.Error(), f) {
						t.Fatalf("error contains %q: %v", f, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Name != tc.wantName || k.Algorithm != tc.wantAlg || k.Secret != tc.wantSec {
				t.Fatalf("got %s secret %q, want %s %s secret %q", k, k.Secret, tc.wantName, tc.wantAlg, tc.wantSec)
			}
		})
	}
}

// TestRFC2136Settings: the factory reads the key only from a file and never
// puts the secret into an error.
func TestRFC2136Settings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := testbed.NewTSIGKey("settings-key")
	good := filepath.Join(dir, "good.key")
	if err := key.WriteBINDKeyFile(good); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte(strings.Replace(key.BINDKeyFile(), "hmac-sha256", "hmac-md5", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open.key")
	if err := os.WriteFile(open, []byte(key.BINDKeyFile()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil { // past the umask
		t.Fatal(err)
	}
	noEnv := func(string) string { return "" }
	for _, tc := range []struct {
		name    string
		s       providers.Settings
		wantErr string
	}{
		{"key file readable by others", providers.Settings{Values: map[string]string{"server": "127.0.0.1", "tsig_key_file": open}, Env: noEnv}, "chmod 600 " + open},
		{"ok", providers.Settings{Values: map[string]string{"server": "127.0.0.1", "tsig_key_file": good}, Env: noEnv}, ""},
		{"ok from env", providers.Settings{Env: func(k string) string {
			return map[string]string{"TLSACTL_RFC2136_SERVER": "127.0.0.1:5353", "TLSACTL_TSIG_KEY_FILE": good}[k]
		}}, ""},
		{"missing server", providers.Settings{Values: map[string]string{"tsig_key_file": good}, Env: noEnv}, "missing server"},
		{"missing key file setting", providers.Settings{Values: map[string]string{"server": "127.0.0.1"}, Env: noEnv}, "missing tsig_key_file"},
		{"key file absent", providers.Settings{Values: map[string]string{"server": "127.0.0.1", "tsig_key_file": filepath.Join(dir, "nope")}, Env: noEnv}, "no such file"},
		{"bad key file", providers.Settings{Values: map[string]string{"server": "127.0.0.1", "tsig_key_file": bad}, Env: noEnv}, "not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := providers.New("rfc2136", tc.s)
			if tc.wantErr == "" {
				if err != nil || p == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, providers.ErrConfig) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want ErrConfig with %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), key.Secret) {
				t.Fatalf("error contains the secret: %v", err)
			}
		})
	}
}
