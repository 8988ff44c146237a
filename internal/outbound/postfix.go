package outbound

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// PostfixConfig says how to ask Postfix for its settings.
type PostfixConfig struct {
	// ConfigDir, when set, is passed as `postconf -c DIR` (and `postmap
	// -c DIR`): a non-default instance.
	ConfigDir string
	// Postconf and Postmap are the binaries; empty: looked up on PATH,
	// then /usr/sbin and /sbin.
	Postconf, Postmap string
}

// MasterParam is one `-o name=value` of a master.cf service, as `postconf -P`
// prints it: "service/type/name = value".
type MasterParam struct {
	Service, Type, Name, Value string
}

// PostfixSettings is what postconf reports: main.cf with every default
// (`postconf -x`, $name expanded) and the master.cf overrides (`postconf -P
// -x`).
type PostfixSettings struct {
	Main   map[string]string
	Master []MasterParam
}

// MapEntry is one key and value of a lookup table.
type MapEntry struct {
	Key, Value string
}

// MapReader returns every entry of the table "type:name" (e.g.
// "texthash:/etc/postfix/tls_policy"). ErrMapNotAuditable means the type
// cannot be listed (mysql:, ldap:, …).
type MapReader func(ctx context.Context, typ, name string) ([]MapEntry, error)

// ErrMapNotAuditable is returned by a MapReader for table types it cannot list.
var ErrMapNotAuditable = errors.New("table type cannot be listed")

// FindBinary finds name on PATH, then in /usr/sbin and /sbin (where Debian
// puts postconf and exim4, often not on a cron job's PATH).
func FindBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH, /usr/sbin or /sbin", name)
}

func (c PostfixConfig) bin(name, set string) (string, error) {
	if set != "" {
		return set, nil
	}
	return FindBinary(name)
}

func (c PostfixConfig) args(args ...string) []string {
	if c.ConfigDir != "" {
		return append([]string{"-c", c.ConfigDir}, args...)
	}
	return args
}

func runTool(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	// postconf reports a missing main.cf as "fatal" on stderr, yet some
	// versions exit 0 after a fatal in a pipeline; treat it as an error.
	if strings.Contains(errb.String(), ": fatal: ") {
		return out.String(), fmt.Errorf("%s %s: %s", filepath.Base(bin), strings.Join(args, " "), strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// ReadPostfix runs `postconf -x` and `postconf -P -x` (with -c DIR when
// configured).
func ReadPostfix(ctx context.Context, cfg PostfixConfig) (PostfixSettings, error) {
	var s PostfixSettings
	bin, err := cfg.bin("postconf", cfg.Postconf)
	if err != nil {
		return s, err
	}
	out, err := runTool(ctx, bin, cfg.args("-x")...)
	if err != nil {
		return s, err
	}
	s.Main = parsePostconf(out)
	if len(s.Main) == 0 {
		return s, fmt.Errorf("postconf printed no parameters")
	}
	out, err = runTool(ctx, bin, cfg.args("-P", "-x")...)
	if err != nil {
		return s, err
	}
	for k, v := range parsePostconf(out) {
		parts := strings.SplitN(k, "/", 3)
		if len(parts) == 3 {
			s.Master = append(s.Master, MasterParam{Service: parts[0], Type: parts[1], Name: parts[2], Value: v})
		}
	}
	slices.SortFunc(s.Master, func(a, b MasterParam) int {
		return strings.Compare(a.Service+"/"+a.Type+"/"+a.Name, b.Service+"/"+b.Type+"/"+b.Name)
	})
	return s, nil
}

// parsePostconf reads "name = value" lines.
func parsePostconf(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		name, value, ok := strings.Cut(line, " =")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			continue
		}
		m[name] = strings.TrimSpace(value)
	}
	return m
}

// DefaultMapReader lists texthash: tables by reading the source file (the
// format of postmap(1): "key whitespace value", "#" comments, indented
// continuation lines) and hash:, btree:, lmdb:, cdb:, dbm: and sdbm: tables
// with `postmap -s` (with -c DIR when configured). inline:{…} is parsed.
// "proxy:" is looked through.
func (c PostfixConfig) DefaultMapReader() MapReader {
	return func(ctx context.Context, typ, name string) ([]MapEntry, error) {
		switch typ {
		case "texthash":
			b, err := os.ReadFile(name)
			if err != nil {
				return nil, err
			}
			return parseTable(string(b)), nil
		case "inline":
			return parseInline(name)
		case "hash", "btree", "lmdb", "cdb", "dbm", "sdbm":
			bin, err := c.bin("postmap", c.Postmap)
			if err != nil {
				return nil, err
			}
			out, err := runTool(ctx, bin, c.args("-s", typ+":"+name)...)
			if err != nil {
				return nil, err
			}
			return parseTable(out), nil
		}
		return nil, ErrMapNotAuditable
	}
}

// parseTable reads postmap(1) source format (also what `postmap -s` prints).
func parseTable(text string) []MapEntry {
	var es []MapEntry
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(es) > 0 {
				es[len(es)-1].Value = strings.TrimSpace(es[len(es)-1].Value + " " + trimmed)
			}
			continue
		}
		key, value, _ := strings.Cut(strings.Join(strings.Fields(trimmed), " "), " ")
		es = append(es, MapEntry{Key: key, Value: value})
	}
	return es
}

// parseInline reads the name of an inline: table, "{ key=value, { key =
// value with, commas } }".
func parseInline(name string) ([]MapEntry, error) {
	s := strings.TrimSpace(name)
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return nil, fmt.Errorf("inline table %q: want {…}", name)
	}
	s = s[1 : len(s)-1]
	var items []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '{':
			depth++
		case '}':
			depth--
		case ',', ' ', '\t':
			if depth == 0 && r == ',' {
				items = append(items, s[start:i])
				start = i + 1
			}
		}
	}
	items = append(items, s[start:])
	var es []MapEntry
	for _, it := range items {
		it = strings.TrimSpace(it)
		it = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(it, "{"), "}"))
		if it == "" {
			continue
		}
		k, v, ok := strings.Cut(it, "=")
		if !ok {
			return nil, fmt.Errorf("inline table: %q is not key=value", it)
		}
		es = append(es, MapEntry{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v)})
	}
	return es, nil
}

// splitList splits a Postfix list (commas and/or whitespace).
func splitList(v string) []string {
	var out []string
	// inline:{ … } contains separators: keep braces together.
	depth, start := 0, -1
	for i, r := range v {
		sep := (r == ',' || r == ' ' || r == '\t' || r == '\n') && depth == 0
		switch r {
		case '{':
			depth++
		case '}':
			depth--
		}
		if sep {
			if start >= 0 {
				out = append(out, v[start:i])
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		out = append(out, v[start:])
	}
	return out
}

// splitMap splits "type:name", looking through proxy:.
func splitMap(spec string) (typ, name string) {
	spec = strings.TrimPrefix(spec, "proxy:")
	typ, name, _ = strings.Cut(spec, ":")
	return typ, name
}

// AuditPostfix reads the settings with postconf and evaluates them; the
// tables named by smtp_tls_policy_maps and transport_maps are read with
// cfg.DefaultMapReader.
func AuditPostfix(ctx context.Context, cfg PostfixConfig) []Finding {
	s, err := ReadPostfix(ctx, cfg)
	if err != nil {
		return []Finding{{Severity: Unknown, Code: "postfix-postconf", Setting: "postconf",
			Message: "cannot read the Postfix configuration: " + oneLine(err.Error()),
			Fix:     "install Postfix's postconf, run as a user that may read main.cf, or give --postfix-config DIR"}}
	}
	return EvaluatePostfix(ctx, s, cfg.DefaultMapReader())
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func postconfFix(name, value string) string {
	return fmt.Sprintf("postconf -e '%s = %s' && postfix reload", name, value)
}

// EvaluatePostfix applies the rules to settings. The rules, from the Postfix
// TLS_README ("Mandatory server certificate verification"/"DANE") and
// postconf(5):
//   - smtp_tls_security_level must be dane or dane-only; with an empty value
//     the obsolete smtp_enforce_tls/smtp_use_tls decide (encrypt/may/none);
//   - smtp_dns_support_level must be dnssec: otherwise the smtp client never
//     asks for DNSSEC status, and Postfix silently downgrades dane to may;
//     when it is empty, the obsolete disable_dns_lookups = yes switches DNS
//     off altogether;
//   - smtp_host_lookup must include dns (with "native" alone addresses come
//     from getaddrinfo, with no DNSSEC status);
//   - smtp_tls_policy_maps entries none, may or encrypt switch DANE off for
//     their destination;
//   - master.cf "-o" overrides of these settings on a service;
//   - relayhost, sender_dependent_relayhost_maps, a default_transport with a
//     next hop and transport_maps entries with a next hop route mail through
//     a relay, whose own DANE enforcement this host cannot see.
func EvaluatePostfix(ctx context.Context, s PostfixSettings, read MapReader) []Finding {
	var fs []Finding
	add := func(sev Severity, code, setting, value, msg, fix string) {
		fs = append(fs, Finding{Severity: sev, Code: code, Setting: setting, Value: value, Message: msg, Fix: fix})
	}
	get := func(n string) string { return strings.TrimSpace(s.Main[n]) }

	// 1. Security level.
	level := get("smtp_tls_security_level")
	shown := level
	if level == "" {
		switch {
		case yes(get("smtp_enforce_tls")):
			level = "encrypt"
		case yes(get("smtp_use_tls")):
			level = "may"
		default:
			level = "none"
		}
		shown = ""
	}
	switch level {
	case "dane":
		add(OK, "postfix-security-level", "smtp_tls_security_level", shown, "opportunistic DANE: TLSA records are enforced where published (DNSSEC-secure), TLS is opportunistic elsewhere", "")
	case "dane-only":
		add(OK, "postfix-security-level", "smtp_tls_security_level", shown, "mandatory DANE: every destination must publish usable TLSA records, mail to all others is deferred (stricter than the mandate's opportunistic DANE)", "")
	default:
		why := map[string]string{
			"none":    "TLS is off for outbound mail",
			"may":     "TLS is opportunistic and unauthenticated: TLSA records are ignored",
			"encrypt": "TLS is mandatory but unauthenticated: TLSA records are ignored",
			"verify":  "certificates are checked against the WebPKI (mandatory) instead of TLSA records",
			"secure":  "certificates are checked against the WebPKI (mandatory) instead of TLSA records",
		}[level]
		if why == "" {
			why = "not a DANE level: TLSA records are ignored"
		}
		if shown == "" {
			why = fmt.Sprintf("empty, so the obsolete smtp_enforce_tls/smtp_use_tls make it %q: %s", level, why)
		}
		add(Critical, "postfix-security-level", "smtp_tls_security_level", shown, "DANE is not enforced: "+why, postconfFix("smtp_tls_security_level", "dane"))
	}

	// 2. DNS support level and the obsolete disable_dns_lookups.
	dnsLevel := get("smtp_dns_support_level")
	switch {
	case dnsLevel == "dnssec":
		add(OK, "postfix-dns-support-level", "smtp_dns_support_level", dnsLevel, "the smtp client asks for DNSSEC status (AD bit) of MX, address and TLSA lookups", "")
		if yes(get("disable_dns_lookups")) {
			add(Warning, "postfix-disable-dns-lookups", "disable_dns_lookups", get("disable_dns_lookups"), "obsolete and ignored because smtp_dns_support_level is set; remove it before someone empties smtp_dns_support_level", "postconf -X disable_dns_lookups && postfix reload")
		}
	case dnsLevel == "" && yes(get("disable_dns_lookups")):
		add(Critical, "postfix-disable-dns-lookups", "disable_dns_lookups", get("disable_dns_lookups"), "DNS lookups are off (smtp_dns_support_level is empty, so this obsolete parameter decides): no MX, no DNSSEC, no TLSA, DANE cannot work", "postconf -X disable_dns_lookups && "+postconfFix("smtp_dns_support_level", "dnssec"))
	default:
		v := dnsLevel
		msg := "DANE is silently off: without dnssec the smtp client never asks for the AD bit, every TLSA lookup counts as insecure, and Postfix downgrades dane to may"
		if v == "" {
			msg = "empty (DNS without DNSSEC): " + msg
		}
		add(Critical, "postfix-dns-support-level", "smtp_dns_support_level", v, msg, postconfFix("smtp_dns_support_level", "dnssec"))
		if yes(get("disable_dns_lookups")) {
			add(Warning, "postfix-disable-dns-lookups", "disable_dns_lookups", get("disable_dns_lookups"), "obsolete; remove it", "postconf -X disable_dns_lookups && postfix reload")
		}
	}

	// 3. Host lookup method.
	hl := get("smtp_host_lookup")
	if hl != "" && !slices.Contains(splitList(hl), "dns") {
		add(Critical, "postfix-host-lookup", "smtp_host_lookup", hl, "addresses come from the system's getaddrinfo without DNSSEC status, so TLSA records of MX hosts are never used", postconfFix("smtp_host_lookup", "dns"))
	}

	// 4. Per-destination policy.
	if pm := get("smtp_tls_policy_maps"); pm != "" {
		fs = append(fs, auditPolicyMaps(ctx, pm, read)...)
	}

	// 5. master.cf overrides.
	primary := transportName(get("default_transport"))
	for _, p := range s.Master {
		setting := fmt.Sprintf("master.cf %s/%s: -o %s", p.Service, p.Type, p.Name)
		sev := Warning
		where := "mail that uses the " + p.Service + " service"
		if p.Service == primary {
			sev = Critical
			where = "all mail through default_transport (" + primary + ")"
		}
		fix := fmt.Sprintf("remove \"-o %s=%s\" from the %s service in master.cf (postconf -P -X '%s/%s/%s') && postfix reload", p.Name, p.Value, p.Service, p.Service, p.Type, p.Name)
		switch p.Name {
		case "smtp_tls_security_level":
			if p.Value != "dane" && p.Value != "dane-only" {
				add(sev, "postfix-master-override", setting, p.Value, "DANE is not enforced for "+where, fix)
			}
		case "smtp_dns_support_level":
			if p.Value != "dnssec" {
				add(sev, "postfix-master-override", setting, p.Value, "DANE is silently off for "+where, fix)
			}
		case "smtp_host_lookup":
			if !slices.Contains(splitList(p.Value), "dns") {
				add(sev, "postfix-master-override", setting, p.Value, "no DNSSEC status for addresses, so no DANE, for "+where, fix)
			}
		case "smtp_tls_policy_maps":
			if p.Value != "" {
				for _, f := range auditPolicyMaps(ctx, p.Value, read) {
					f.Setting = "master.cf " + p.Service + ": " + f.Setting
					fs = append(fs, f)
				}
			}
		case "disable_dns_lookups":
			if yes(p.Value) && dnsLevel == "" {
				add(sev, "postfix-master-override", setting, p.Value, "DNS lookups are off for "+where, fix)
			}
		}
	}

	// 6. Relays.
	const relayMsg = "mail goes to the relay %s instead of the recipients' MX hosts: DANE toward the final destination depends on that relay enforcing it"
	if r := get("relayhost"); r != "" {
		add(Warning, "postfix-relayhost", "relayhost", r, fmt.Sprintf(relayMsg, r), "make sure the relay enforces DANE (run this check there), or deliver directly: "+postconfFix("relayhost", ""))
	}
	if r := get("sender_dependent_relayhost_maps"); r != "" {
		add(Warning, "postfix-relayhost", "sender_dependent_relayhost_maps", r, "some senders' mail goes to relays listed here: DANE toward the final destination depends on those relays", "make sure each relay enforces DANE")
	}
	if _, hop, ok := strings.Cut(get("default_transport"), ":"); ok && hop != "" {
		add(Warning, "postfix-relayhost", "default_transport", get("default_transport"), fmt.Sprintf(relayMsg, hop), "make sure the relay enforces DANE, or "+postconfFix("default_transport", "smtp"))
	}
	if tm := get("transport_maps"); tm != "" {
		fs = append(fs, auditTransportMaps(ctx, tm, read)...)
	}
	return fs
}

func yes(v string) bool {
	v = strings.ToLower(strings.TrimSpace(v))
	return v == "yes" || v == "true" || v == "on" || v == "1"
}

// transportName returns the transport of "transport[:nexthop]".
func transportName(v string) string {
	t, _, _ := strings.Cut(strings.TrimSpace(v), ":")
	return t
}

func auditPolicyMaps(ctx context.Context, value string, read MapReader) []Finding {
	var fs []Finding
	for _, spec := range splitList(value) {
		typ, name := splitMap(spec)
		setting := "smtp_tls_policy_maps " + spec
		es, err := read(ctx, typ, name)
		if err != nil {
			msg := "cannot read this table: " + oneLine(err.Error()) + "; its entries may weaken DANE for some destinations"
			if errors.Is(err, ErrMapNotAuditable) {
				msg = "tables of type " + typ + " cannot be listed; check by hand that no entry sets none, may or encrypt"
			}
			fs = append(fs, Finding{Severity: Warning, Code: "postfix-policy-map-unreadable", Setting: setting, Message: msg,
				Fix: "use a texthash:, hash: or lmdb: table tlsactl can read, or check each entry by hand"})
			continue
		}
		for _, e := range es {
			lvl, _, _ := strings.Cut(e.Value, " ")
			switch lvl {
			case "none", "may", "encrypt":
				what := map[string]string{"none": "no TLS at all", "may": "unauthenticated opportunistic TLS", "encrypt": "mandatory TLS without authentication"}[lvl]
				fs = append(fs, Finding{Severity: Warning, Code: "postfix-policy-weakens", Setting: setting + ": " + e.Key, Value: e.Value,
					Message: "DANE is off for this destination (" + what + "): its TLSA records are ignored",
					Fix:     policyFix(typ, name, e.Key)})
			}
		}
	}
	return fs
}

func auditTransportMaps(ctx context.Context, value string, read MapReader) []Finding {
	var fs []Finding
	for _, spec := range splitList(value) {
		typ, name := splitMap(spec)
		setting := "transport_maps " + spec
		es, err := read(ctx, typ, name)
		if err != nil {
			if errors.Is(err, ErrMapNotAuditable) {
				continue // routing tables of other types are common (e.g. mysql:) and rarely relays
			}
			fs = append(fs, Finding{Severity: Warning, Code: "postfix-transport-map-unreadable", Setting: setting,
				Message: "cannot read this table: " + oneLine(err.Error())})
			continue
		}
		for _, e := range es {
			tr, hop, _ := strings.Cut(e.Value, ":")
			switch tr {
			case "error", "retry", "discard", "local", "virtual", "lmtp", "pipe":
				continue
			}
			if hop == "" {
				continue
			}
			fs = append(fs, Finding{Severity: Warning, Code: "postfix-transport-relay", Setting: setting + ": " + e.Key, Value: e.Value,
				Message: fmt.Sprintf("mail for %s goes to %s instead of its MX hosts: DANE toward the destination depends on that relay", e.Key, hop),
				Fix:     "make sure " + hop + " enforces DANE, or remove the entry in " + name})
		}
	}
	return fs
}

func policyFix(typ, name, key string) string {
	switch typ {
	case "inline":
		return fmt.Sprintf("change the entry to \"%s = dane\" or remove it from smtp_tls_policy_maps in main.cf, then postfix reload", key)
	case "texthash":
		return fmt.Sprintf("change the entry to \"%s dane\" or remove it in %s, then postfix reload", key, name)
	}
	return fmt.Sprintf("change the entry to \"%s dane\" or remove it in %s, then postmap %s:%s", key, name, typ, name)
}
