package outbound

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsactl/tlsactl/internal/dnsx"
)

// The fixtures under testdata/exim-*.txt are in the format of `exim -bP`,
// written for these tests (Exim cannot be installed beside Postfix on the
// test machine, so none was recorded from a running Exim). The format
// follows Exim's own printing code and documentation:
//   - src/readconf.c, print_ol(): "name = value" for strings, lists and
//     numbers (an unset string prints as "name ="), booleans as "name" or
//     "no_name";
//   - src/readconf.c, the driver branch of the -bP printing: `exim -bP transports` /
//     `exim -bP routers` print every driver after a blank line and a
//     "<name> <kind>:" header; `exim -bP transport NAME` prints one
//     driver's options without a header ("transport NAME not found" when
//     there is none);
//   - the Exim specification, chapter "The smtp transport" (hosts_try_dane,
//     hosts_require_dane, dnssec_request_domains, hosts_avoid_tls) and
//     chapter "The dnslookup router" (dnssec_request_domains); section
//     "DANE" of chapter "Encrypted SMTP connections": DANE needs
//     DNSSEC-secured MX, address and TLSA lookups, requested with
//     dnssec_request_domains.
// The option lists are abridged from the smtp transport's documented
// options, in the alphabetical order Exim prints them.

func readFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseEximBPSingleTransport(t *testing.T) {
	ds, err := ParseEximBP(readFixture(t, "exim-transport-remote_smtp-dane.txt"), "remote_smtp", "transport")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 {
		t.Fatalf("%d drivers", len(ds))
	}
	o := ds[0].Options
	for k, want := range map[string]string{"driver": "smtp", "hosts_try_dane": "*", "hosts_require_dane": "", "body_only": "true",
		"delivery_date_add": "false", "helo_data": "$primary_hostname", "dnssec_request_domains": "*"} {
		if got, ok := o[k]; !ok || got != want {
			t.Errorf("%s = %q (present %v), want %q", k, got, ok, want)
		}
	}
	if _, err := ParseEximBP("transport remote_smtp not found\n", "remote_smtp", "transport"); err == nil {
		t.Error("not found: no error")
	}
}

func TestEximAudit(t *testing.T) {
	find := func(fs []Finding, code, setting string) *Finding {
		for i := range fs {
			if fs[i].Code == code && fs[i].Setting == setting {
				return &fs[i]
			}
		}
		return nil
	}
	parse := func(name, driver, kind string) []EximDriver {
		ds, err := ParseEximBP(readFixture(t, name), driver, kind)
		if err != nil {
			t.Fatal(err)
		}
		return ds
	}

	// DANE on, DNSSEC requested, a smarthost router: enforced, one WARNING.
	fs := EvaluateExim(append(parse("exim-transport-remote_smtp-dane.txt", "remote_smtp", "transport"), parse("exim-routers.txt", "", "")...))
	if !Enforcing(fs) {
		t.Errorf("dane: not enforcing: %v", fs)
	}
	if f := find(fs, "exim-dane", "transport remote_smtp: hosts_try_dane"); f == nil || f.Severity != OK {
		t.Errorf("dane: %v", fs)
	}
	if f := find(fs, "exim-router-dnssec", "router dnslookup: dnssec_request_domains"); f == nil || f.Severity != OK {
		t.Errorf("router dnssec: %v", fs)
	}
	if f := find(fs, "exim-smarthost", "router smarthost: route_list"); f == nil || f.Severity != Warning || !strings.Contains(f.Value, "smarthost.example.net") {
		t.Errorf("smarthost: %v", fs)
	}

	// DANE off on remote_smtp, partial on another transport, no DNSSEC on the router.
	fs = EvaluateExim(append(parse("exim-transports-nodane.txt", "", ""), parse("exim-routers-nodnssec.txt", "", "")...))
	if Enforcing(fs) {
		t.Errorf("nodane: enforcing: %v", fs)
	}
	for _, w := range []struct {
		code, setting string
		sev           Severity
	}{
		{"exim-dane", "transport remote_smtp: hosts_try_dane", Critical},
		{"exim-transport-dnssec", "transport remote_smtp: dnssec_request_domains", Warning},
		{"exim-dane", "transport remote_smtp_partial: hosts_try_dane", Warning},
		{"exim-router-dnssec", "router dnslookup: dnssec_request_domains", Critical},
	} {
		f := find(fs, w.code, w.setting)
		if f == nil || f.Severity != w.sev {
			t.Errorf("missing %s %s %s in %v", w.sev, w.code, w.setting, fs)
			continue
		}
		if f.Fix == "" {
			t.Errorf("%s: no fix", f)
		}
	}
	for _, f := range fs {
		if strings.Contains(f.Setting, "address_pipe") || strings.Contains(f.Setting, "local_delivery") {
			t.Errorf("non-smtp transport audited: %s", f)
		}
	}

	// Require-DANE and avoid-TLS.
	fs = EvaluateExim([]EximDriver{{Name: "t", Kind: "transport", Options: map[string]string{"driver": "smtp", "hosts_require_dane": "<; *", "dnssec_request_domains": "*", "hosts_avoid_tls": "*"}}})
	if f := find(fs, "exim-dane", "transport t: hosts_require_dane"); f == nil || f.Severity != OK {
		t.Errorf("require: %v", fs)
	}
	if f := find(fs, "exim-avoid-tls", "transport t: hosts_avoid_tls"); f == nil || f.Severity != Critical {
		t.Errorf("avoid tls: %v", fs)
	}
	// No smtp transport at all: UNKNOWN.
	if fs := EvaluateExim(parse("exim-routers.txt", "", "")); find(fs, "exim-no-smtp-transport", "transports") == nil {
		t.Errorf("no transport: %v", fs)
	}
}

func TestCheckResolverPath(t *testing.T) {
	for addr, sev := range map[string]Severity{
		"127.0.0.1:53": OK, "127.53.1.2:53": OK, "[::1]:53": OK, "[::ffff:127.0.0.1]:53": OK,
		"192.0.2.53:53": Warning, "[2001:db8::53]:53": Warning, "resolver.example:53": Warning,
	} {
		f := CheckResolverPath(addr)
		if f.Severity != sev {
			t.Errorf("%s: %s, want %s", addr, f.Severity, sev)
		}
		if sev == Warning && !strings.Contains(f.Fix, "unbound") {
			t.Errorf("%s: fix %q does not name unbound", addr, f.Fix)
		}
	}
	if got := dnsx.ResolverAddr("127.0.0.1"); got != "127.0.0.1:53" {
		t.Errorf("ResolverAddr: %s", got)
	}
	if got := dnsx.ResolverAddr("::1"); got != "[::1]:53" {
		t.Errorf("ResolverAddr: %s", got)
	}
}
