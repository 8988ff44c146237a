package providers_test

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/providers"
	"github.com/tlsactl/tlsactl/tlsa"
)

func TestDiff(t *testing.T) {
	t.Parallel()
	a, b, c := rec(3, 1, 1, 1), rec(2, 1, 1, 2), rec(3, 1, 1, 3)
	// The same bytes parsed from upper-case hex are the same record.
	aUpper, err := tlsa.ParseRecord(strings.ToUpper(a.String()))
	if err != nil {
		t.Fatal(err)
	}
	sameFieldsOtherUsage := rec(2, 1, 1, 1)
	for _, tc := range []struct {
		name              string
		current, want     []tlsa.Record
		add, remove, keep []tlsa.Record
		empty             bool
	}{
		{name: "both empty", empty: true},
		{name: "create", want: []tlsa.Record{a, b}, add: []tlsa.Record{a, b}},
		{name: "delete all", current: []tlsa.Record{a, b}, remove: []tlsa.Record{a, b}},
		{name: "unchanged, other order", current: []tlsa.Record{a, b}, want: []tlsa.Record{b, a}, keep: []tlsa.Record{b, a}, empty: true},
		{name: "replace one", current: []tlsa.Record{a, b}, want: []tlsa.Record{c, b}, add: []tlsa.Record{c}, remove: []tlsa.Record{a}, keep: []tlsa.Record{b}},
		{name: "replace all", current: []tlsa.Record{a}, want: []tlsa.Record{c}, add: []tlsa.Record{c}, remove: []tlsa.Record{a}},
		{name: "hex case does not matter", current: []tlsa.Record{a}, want: []tlsa.Record{aUpper}, keep: []tlsa.Record{a}, empty: true},
		{name: "same data, other usage", current: []tlsa.Record{a}, want: []tlsa.Record{sameFieldsOtherUsage}, add: []tlsa.Record{sameFieldsOtherUsage}, remove: []tlsa.Record{a}},
		{name: "duplicates in want", want: []tlsa.Record{a, a, b}, add: []tlsa.Record{a, b}},
		{name: "duplicates in want, kept", current: []tlsa.Record{a}, want: []tlsa.Record{a, a}, keep: []tlsa.Record{a}, empty: true},
		{name: "duplicates in current", current: []tlsa.Record{a, a}, remove: []tlsa.Record{a}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := providers.Diff(tc.current, tc.want)
			check := func(what string, got, want []tlsa.Record) {
				t.Helper()
				if len(got) != len(want) {
					t.Errorf("%s = %q, want %q", what, recordStrings(got), recordStrings(want))
					return
				}
				for i := range got { // order follows the input
					if !got[i].Equal(want[i]) {
						t.Errorf("%s = %q, want %q", what, recordStrings(got), recordStrings(want))
						return
					}
				}
			}
			check("Add", got.Add, tc.add)
			check("Remove", got.Remove, tc.remove)
			check("Keep", got.Keep, tc.keep)
			if got.Empty() != tc.empty {
				t.Errorf("Empty() = %v, want %v", got.Empty(), tc.empty)
			}
		})
	}
}

func TestLibdnsRecords(t *testing.T) {
	t.Parallel()
	a, b := rec(3, 1, 1, 0xab), rec(2, 0, 1, 0xcd)
	for _, tc := range []struct {
		owner, zone string
		wantName    string
		wantErr     string
	}{
		{owner: "example.test.", zone: "example.test.", wantName: "@"},
		{owner: "example.test", zone: "example.test", wantName: "@"},
		{owner: "_25._tcp.mail.example.test.", zone: "example.test.", wantName: "_25._tcp.mail"},
		{owner: "_25._tcp.mail.example.test", zone: "example.test", wantName: "_25._tcp.mail"},
		{owner: "_25._tcp.mail.sub.example.test.", zone: "sub.example.test.", wantName: "_25._tcp.mail"},
		{owner: "_25._tcp.MAIL.Example.TEST.", zone: "example.test.", wantName: "_25._tcp.mail"},
		{owner: "_25._tcp.mail.example.test.", zone: "EXAMPLE.test", wantName: "_25._tcp.mail"},
		{owner: "_25._tcp.mail.example.test.", zone: "other.test.", wantErr: "not in zone"},
		{owner: "_25._tcp.mail.badexample.test.", zone: "example.test.", wantErr: "not in zone"},
		{owner: "example.test.", zone: "mail.example.test.", wantErr: "not in zone"},
	} {
		t.Run(tc.owner+"@"+tc.zone, func(t *testing.T) {
			set := providers.RRSet{Owner: tc.owner, TTL: 300 * time.Second, Records: []tlsa.Record{a, b}}
			got, err := providers.LibdnsRecords(set, tc.zone)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := []libdns.RR{
				{Name: tc.wantName, TTL: 300 * time.Second, Type: "TLSA", Data: "3 1 1 " + strings.Repeat("ab", 32)},
				{Name: tc.wantName, TTL: 300 * time.Second, Type: "TLSA", Data: "2 0 1 " + strings.Repeat("cd", 32)},
			}
			if len(got) != len(want) {
				t.Fatalf("got %d records, want %d", len(got), len(want))
			}
			for i := range got {
				if got[i].RR() != want[i] {
					t.Errorf("record %d = %+v, want %+v", i, got[i].RR(), want[i])
				}
				// The name must turn back into the owner (what the rfc2136
				// adapter does before sending).
				if abs := libdns.AbsoluteName(got[i].RR().Name, dns.Fqdn(tc.zone)); !strings.EqualFold(abs, dns.Fqdn(tc.owner)) {
					t.Errorf("AbsoluteName(%q) = %q, want %q", got[i].RR().Name, abs, tc.owner)
				}
			}
		})
	}
	empty, err := providers.LibdnsRecords(providers.RRSet{Owner: "x.example.test."}, "example.test.")
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty RRset: %v, %v", empty, err)
	}
}

func TestSettingsSecret(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-VALUE-that-must-not-leak"
	files := map[string]string{
		"/etc/tlsactl/token":       secret + "\n",
		"/etc/tlsactl/token-env":   "  " + secret + "-from-env-file\r\n",
		"/etc/tlsactl/empty":       " \n\t\n",
		"/etc/tlsactl/other-token": "other",
	}
	readFile := func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name    string
		s       providers.Settings
		envName string
		want    string
		wantErr string
	}{
		{name: "file setting", s: providers.Settings{Values: map[string]string{"token_file": "/etc/tlsactl/token"}},
			envName: "DESEC_TOKEN", want: secret},
		{name: "env", s: providers.Settings{Env: env(map[string]string{"DESEC_TOKEN": secret})},
			envName: "DESEC_TOKEN", want: secret},
		{name: "env _FILE, trimmed", s: providers.Settings{Env: env(map[string]string{"DESEC_TOKEN_FILE": "/etc/tlsactl/token-env"})},
			envName: "DESEC_TOKEN", want: secret + "-from-env-file"},
		{name: "file setting beats env", s: providers.Settings{Values: map[string]string{"token_file": "/etc/tlsactl/token"},
			Env: env(map[string]string{"DESEC_TOKEN": "other", "DESEC_TOKEN_FILE": "/etc/tlsactl/other-token"})},
			envName: "DESEC_TOKEN", want: secret},
		{name: "env _FILE beats env", s: providers.Settings{Env: env(map[string]string{"DESEC_TOKEN": "other", "DESEC_TOKEN_FILE": "/etc/tlsactl/token"})},
			envName: "DESEC_TOKEN", want: secret},
		{name: "plain value refused", s: providers.Settings{Values: map[string]string{"token": secret}, Env: env(map[string]string{"DESEC_TOKEN": "other"})},
			envName: "DESEC_TOKEN", wantErr: "must not be written in the configuration"},
		{name: "plain empty value refused", s: providers.Settings{Values: map[string]string{"token": ""}},
			envName: "DESEC_TOKEN", wantErr: "must not be written in the configuration"},
		{name: "empty file", s: providers.Settings{Values: map[string]string{"token_file": "/etc/tlsactl/empty"}},
			envName: "DESEC_TOKEN", wantErr: "/etc/tlsactl/empty (for token) is empty"},
		{name: "empty env _FILE", s: providers.Settings{Env: env(map[string]string{"DESEC_TOKEN_FILE": "/etc/tlsactl/empty", "DESEC_TOKEN": secret})},
			envName: "DESEC_TOKEN", wantErr: "is empty"},
		{name: "absent file", s: providers.Settings{Values: map[string]string{"token_file": "/etc/tlsactl/nope"}},
			envName: "DESEC_TOKEN", wantErr: "reading /etc/tlsactl/nope for token: file does not exist"},
		{name: "missing", s: providers.Settings{Env: env(nil)},
			envName: "DESEC_TOKEN", wantErr: "missing token: set token_file in the configuration, or $DESEC_TOKEN or $DESEC_TOKEN_FILE"},
		{name: "missing, no env variable", s: providers.Settings{Env: env(map[string]string{"_FILE": "/etc/tlsactl/token"})},
			envName: "", wantErr: "missing token: set token_file in the configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.s.ReadFile = readFile
			got, err := tc.s.Secret("token", tc.envName)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("no error, got a secret of %d bytes", len(got))
				}
				if !errors.Is(err, providers.ErrConfig) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrConfig with %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "other") {
					t.Fatalf("error contains a secret: %v", err)
				}
				if tc.envName == "" && strings.Contains(err.Error(), "$") {
					t.Errorf("error names an empty environment variable: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Secret = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestSettingsGet: plain settings come from Values, else from the
// environment.
func TestSettingsGet(t *testing.T) {
	t.Parallel()
	s := providers.Settings{
		Values: map[string]string{"server": "ns1.example.test:53"},
		Env:    func(k string) string { return map[string]string{"SERVER": "env", "OTHER": "from-env"}[k] },
	}
	for _, tc := range []struct{ key, env, want string }{
		{"server", "SERVER", "ns1.example.test:53"},
		{"other", "OTHER", "from-env"},
		{"other", "", ""},
		{"none", "NONE", ""},
	} {
		if got := s.Get(tc.key, tc.env); got != tc.want {
			t.Errorf("Get(%q, %q) = %q, want %q", tc.key, tc.env, got, tc.want)
		}
	}
}

// records is a libdns.RecordGetter that returns a fixed zone.
type records []libdns.Record

func (r records) GetRecords(_ context.Context, zone string) ([]libdns.Record, error) {
	if zone != "example.test." {
		return nil, errors.New("no such zone")
	}
	return r, nil
}

func TestGetOwner(t *testing.T) {
	ctx := context.Background()
	ee := rec(3, 1, 1, 0xaa)
	zone := records{
		libdns.RR{Name: "_25._tcp.mail", TTL: time.Hour, Type: "TLSA", Data: ee.String()},
		libdns.RR{Name: "_25._tcp.mail", TTL: time.Hour, Type: "RRSIG", Data: "TLSA 13 5 3600 …"},
		libdns.RR{Name: "_25._tcp.mx", TTL: time.Minute, Type: "CNAME", Data: "_Dane.Example.ORG."},
		libdns.RR{Name: "_25._tcp.smtp", TTL: time.Minute, Type: "CNAME", Data: "_dane.example.org"}, // hosted API style
		libdns.RR{Name: "_25._tcp.bad", Type: "TLSA", Data: "3 1 1 zz"},
	}
	for _, tc := range []struct {
		owner string
		n     int
		cname string
	}{
		{"_25._tcp.MAIL.example.test", 1, ""},
		{"_25._tcp.mx.example.test.", 0, "_dane.example.org."},
		{"_25._tcp.smtp.example.test.", 0, "_dane.example.org."},
		{"_25._tcp.none.example.test.", 0, ""},
	} {
		set, cname, err := providers.GetOwner(ctx, zone, "example.test", tc.owner)
		if err != nil || len(set.Records) != tc.n || cname != tc.cname || set.Owner != strings.ToLower(dns.Fqdn(tc.owner)) {
			t.Errorf("GetOwner(%s) = %+v, %q, %v; want %d records, CNAME %q", tc.owner, set, cname, err, tc.n, tc.cname)
		}
	}
	if set, err := providers.GetTLSA(ctx, zone, "example.test.", "_25._tcp.mail.example.test."); err != nil ||
		len(set.Records) != 1 || !set.Records[0].Equal(ee) || set.TTL != time.Hour {
		t.Errorf("GetTLSA = %+v, %v", set, err)
	}
	for what, owner := range map[string]string{"unparsable TLSA": "_25._tcp.bad.example.test.", "outside the zone": "_25._tcp.mail.other.test."} {
		if _, _, err := providers.GetOwner(ctx, zone, "example.test.", owner); err == nil {
			t.Errorf("%s: no error", what)
		}
	}
	if _, _, err := providers.GetOwner(ctx, zone, "other.test.", "_25._tcp.mail.other.test."); err == nil ||
		!strings.Contains(err.Error(), "reading zone other.test.: no such zone") {
		t.Errorf("unreadable zone: err = %v", err)
	}
}
