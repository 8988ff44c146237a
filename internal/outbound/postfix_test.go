package outbound

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
)

// postfixDir writes a config dir for `postconf -c DIR`: main.cf with lines,
// master.cf with the smtp service line (plus -o overrides), and extra files.
func postfixDir(t *testing.T, main []string, smtpOpts string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	body := strings.Join(main, "\n") + "\n"
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		body = strings.ReplaceAll(body, "@"+name, p)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	master := "smtp      unix  -       -       n       -       -       smtp" + smtpOpts + "\nrelay     unix  -       -       n       -       -       smtp\n"
	if err := os.WriteFile(filepath.Join(dir, "master.cf"), []byte(master), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

var daneMain = []string{"smtp_tls_security_level = dane", "smtp_dns_support_level = dnssec"}

// TestPostfixAuditVariants runs the real postconf -c DIR (and postmap for
// hash: tables) on generated configuration directories.
func TestPostfixAuditVariants(t *testing.T) {
	testbed.Require(t, "postconf", "postfix")
	type want struct {
		code, setting string
		sev           Severity
	}
	cases := []struct {
		name     string
		main     []string
		smtpOpts string
		files    map[string]string
		postmap  string // file to run `postmap hash:` on
		enforced bool
		want     []want // findings that must be present
		notCodes []string
	}{
		{name: "dane", main: daneMain, enforced: true,
			want: []want{{"postfix-security-level", "smtp_tls_security_level", OK}, {"postfix-dns-support-level", "smtp_dns_support_level", OK}}},
		{name: "dane-only", main: []string{"smtp_tls_security_level = dane-only", "smtp_dns_support_level = dnssec"}, enforced: true,
			want: []want{{"postfix-security-level", "smtp_tls_security_level", OK}}},
		{name: "may", main: []string{"smtp_tls_security_level = may", "smtp_dns_support_level = dnssec"},
			want: []want{{"postfix-security-level", "smtp_tls_security_level", Critical}}},
		{name: "encrypt", main: []string{"smtp_tls_security_level = encrypt", "smtp_dns_support_level = dnssec"},
			want: []want{{"postfix-security-level", "smtp_tls_security_level", Critical}}},
		{name: "empty level, legacy smtp_use_tls", main: []string{"smtp_use_tls = yes", "smtp_dns_support_level = dnssec"},
			want: []want{{"postfix-security-level", "smtp_tls_security_level", Critical}}},
		{name: "dns support level missing", main: []string{"smtp_tls_security_level = dane"},
			want: []want{{"postfix-security-level", "smtp_tls_security_level", OK}, {"postfix-dns-support-level", "smtp_dns_support_level", Critical}}},
		{name: "dns support level enabled", main: []string{"smtp_tls_security_level = dane", "smtp_dns_support_level = enabled"},
			want: []want{{"postfix-dns-support-level", "smtp_dns_support_level", Critical}}},
		{name: "disable_dns_lookups = yes", main: []string{"smtp_tls_security_level = dane", "disable_dns_lookups = yes"},
			want: []want{{"postfix-disable-dns-lookups", "disable_dns_lookups", Critical}}, notCodes: []string{"postfix-dns-support-level"}},
		{name: "disable_dns_lookups = yes, ignored", main: append(daneMain, "disable_dns_lookups = yes"), enforced: true,
			want: []want{{"postfix-disable-dns-lookups", "disable_dns_lookups", Warning}}},
		{name: "smtp_host_lookup = native", main: append(daneMain, "smtp_host_lookup = native"),
			want: []want{{"postfix-host-lookup", "smtp_host_lookup", Critical}}},
		{name: "smtp_host_lookup = dns, native", main: append(daneMain, "smtp_host_lookup = dns, native"), enforced: true,
			notCodes: []string{"postfix-host-lookup"}},
		{name: "texthash policy map weakens one destination", enforced: true,
			main: append(daneMain, "smtp_tls_policy_maps = texthash:@tls_policy"),
			files: map[string]string{"tls_policy": "# exceptions\nlegacy.example may\n" +
				"strict.example dane-only\n" +
				"[relay.example]:587 encrypt\n  protocols=>=TLSv1.2\n" +
				".old.example none\n"},
			want: []want{
				{"postfix-policy-weakens", "smtp_tls_policy_maps texthash:@tls_policy: legacy.example", Warning},
				{"postfix-policy-weakens", "smtp_tls_policy_maps texthash:@tls_policy: [relay.example]:587", Warning},
				{"postfix-policy-weakens", "smtp_tls_policy_maps texthash:@tls_policy: .old.example", Warning},
			}},
		{name: "hash policy map (postmap -s)", enforced: true, postmap: "tls_policy",
			main:  append(daneMain, "smtp_tls_policy_maps = hash:@tls_policy"),
			files: map[string]string{"tls_policy": "legacy.example may\nstrict.example dane\n"},
			want:  []want{{"postfix-policy-weakens", "smtp_tls_policy_maps hash:@tls_policy: legacy.example", Warning}}},
		{name: "inline policy map", enforced: true,
			main: append(daneMain, "smtp_tls_policy_maps = inline:{ legacy.example = may, { strict.example = dane-only } }"),
			want: []want{{"postfix-policy-weakens", "smtp_tls_policy_maps inline:{ legacy.example = may, { strict.example = dane-only } }: legacy.example", Warning}}},
		{name: "unlistable policy map", enforced: true,
			main: append(daneMain, "smtp_tls_policy_maps = regexp:@tls_policy"), files: map[string]string{"tls_policy": "/./ may\n"},
			want: []want{{"postfix-policy-map-unreadable", "smtp_tls_policy_maps regexp:@tls_policy", Warning}}},
		{name: "master.cf override on smtp", main: daneMain, smtpOpts: " -o smtp_tls_security_level=may",
			want: []want{{"postfix-master-override", "master.cf smtp/unix: -o smtp_tls_security_level", Critical}}},
		{name: "relayhost", main: append(daneMain, "relayhost = [smarthost.example]:587"), enforced: true,
			want: []want{{"postfix-relayhost", "relayhost", Warning}}},
		{name: "transport map via relay", enforced: true,
			main:  append(daneMain, "transport_maps = texthash:@transport"),
			files: map[string]string{"transport": "partner.example smtp:[gw.partner.example]\nlocal.example local:\nbad.example error:nope\n"},
			want:  []want{{"postfix-transport-relay", "transport_maps texthash:@transport: partner.example", Warning}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := postfixDir(t, tc.main, tc.smtpOpts, tc.files)
			if tc.postmap != "" {
				postmap := testbed.Require(t, "postmap", "postfix")
				if out, err := exec.Command(postmap, "-c", dir, "hash:"+filepath.Join(dir, tc.postmap)).CombinedOutput(); err != nil {
					t.Fatalf("postmap: %v: %s", err, out)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			fs := AuditPostfix(ctx, PostfixConfig{ConfigDir: dir})
			var lines []string
			for _, f := range fs {
				lines = append(lines, f.String())
			}
			all := strings.Join(lines, "\n")
			if got := Enforcing(fs); got != tc.enforced {
				t.Errorf("Enforcing = %v, want %v\n%s", got, tc.enforced, all)
			}
			for _, w := range tc.want {
				setting := w.setting
				for name := range tc.files {
					setting = strings.ReplaceAll(setting, "@"+name, filepath.Join(dir, name))
				}
				ok := false
				for _, f := range fs {
					if f.Code == w.code && f.Setting == setting && f.Severity == w.sev {
						ok = true
						if f.Severity != OK && f.Fix == "" {
							t.Errorf("%s: no fix", f)
						}
					}
				}
				if !ok {
					t.Errorf("missing %s %s (%s)\n%s", w.sev, w.code, setting, all)
				}
			}
			for _, c := range tc.notCodes {
				for _, f := range fs {
					if f.Code == c {
						t.Errorf("unexpected %s", f)
					}
				}
			}
			// Non-weakening entries are not reported.
			for _, f := range fs {
				if strings.HasSuffix(f.Setting, "strict.example") {
					t.Errorf("dane entry reported: %s", f)
				}
				if strings.Contains(f.String(), "\n") {
					t.Errorf("finding spans lines: %q", f.String())
				}
			}
		})
	}
}

// TestPostfixAuditUnreadable: a directory without main.cf is UNKNOWN.
func TestPostfixAuditUnreadable(t *testing.T) {
	testbed.Require(t, "postconf", "postfix")
	fs := AuditPostfix(context.Background(), PostfixConfig{ConfigDir: filepath.Join(t.TempDir(), "missing")})
	if len(fs) != 1 || fs[0].Severity != Unknown || fs[0].Code != "postfix-postconf" {
		t.Fatalf("got %v", fs)
	}
}

func TestParseTableAndInline(t *testing.T) {
	es := parseTable("# c\n\nexample.org   may  ciphers=high\n   protocols=!SSLv2\n[x.example]:25\tdane\n")
	if len(es) != 2 || es[0].Key != "example.org" || es[0].Value != "may ciphers=high protocols=!SSLv2" || es[1].Value != "dane" {
		t.Fatalf("parseTable: %+v", es)
	}
	in, err := parseInline("{ a.example = may, { b.example = encrypt protocols=TLSv1.2 } , c.example=dane }")
	if err != nil || len(in) != 3 || in[1].Key != "b.example" || in[1].Value != "encrypt protocols=TLSv1.2" {
		t.Fatalf("parseInline: %+v %v", in, err)
	}
	if got := splitList("texthash:/a, hash:/b inline:{ x = y, z = w }"); len(got) != 3 || got[2] != "inline:{ x = y, z = w }" {
		t.Fatalf("splitList: %q", got)
	}
}
