package outbound

import (
	"context"
	"fmt"
	"strings"
)

// EximDriver is one router or transport as `exim -bP` prints it.
type EximDriver struct {
	Name    string
	Kind    string // "router" or "transport"
	Options map[string]string
}

// ParseEximBP parses the output of `exim -bP routers` / `exim -bP
// transports` (every driver, each introduced by a "<name> <kind>:" line
// after an empty line) or of `exim -bP transport NAME` / `exim -bP router
// NAME` (one driver's options, without a header; give name and kind for
// it). The option lines are those of Exim's readconf.c print_ol: "name =
// value" (an unset string prints as "name =") and booleans as "name" or
// "no_name".
func ParseEximBP(out, name, kind string) ([]EximDriver, error) {
	var ds []EximDriver
	var cur *EximDriver
	if name != "" {
		ds = append(ds, EximDriver{Name: name, Kind: kind, Options: map[string]string{}})
		cur = &ds[0]
	}
	for _, raw := range strings.Split(out, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" {
			continue
		}
		if strings.HasSuffix(line, " not found") && (strings.HasPrefix(line, "transport ") || strings.HasPrefix(line, "router ")) {
			return nil, fmt.Errorf("exim: %s", line)
		}
		if h, ok := strings.CutSuffix(line, ":"); ok && !strings.Contains(line, "=") {
			if f := strings.Fields(h); len(f) == 2 && (f[1] == "router" || f[1] == "transport") {
				ds = append(ds, EximDriver{Name: f[0], Kind: f[1], Options: map[string]string{}})
				cur = &ds[len(ds)-1]
				continue
			}
		}
		if cur == nil {
			continue // main options before the first driver, or noise
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			cur.Options[strings.TrimSpace(k)] = strings.TrimSpace(v)
			continue
		}
		if b, ok := strings.CutPrefix(line, "no_"); ok {
			cur.Options[b] = "false"
		} else {
			cur.Options[line] = "true"
		}
	}
	if len(ds) == 0 {
		return nil, fmt.Errorf("exim: no router or transport in the -bP output")
	}
	return ds, nil
}

// EximConfig says how to ask Exim for its settings.
type EximConfig struct {
	// Binary is exim (or Debian's exim4); empty: exim, then exim4.
	Binary string
	// ConfigFile, when set, is passed as -C FILE.
	ConfigFile string
}

// FindExim finds the Exim binary with FindBinary: exim, else Debian's exim4.
func FindExim() (string, error) {
	if bin, err := FindBinary("exim"); err == nil {
		return bin, nil
	}
	return FindBinary("exim4")
}

// AuditExim runs `exim -bP routers` and `exim -bP transports` and evaluates
// the drivers.
func AuditExim(ctx context.Context, cfg EximConfig) []Finding {
	bin := cfg.Binary
	if bin == "" {
		var err error
		if bin, err = FindExim(); err != nil {
			return []Finding{{Severity: Unknown, Code: "exim-bp", Setting: "exim", Message: "exim not found", Fix: "give --exim-binary PATH"}}
		}
	}
	var drivers []EximDriver
	for _, kind := range []string{"routers", "transports"} {
		args := []string{"-bP", kind}
		if cfg.ConfigFile != "" {
			args = append([]string{"-C", cfg.ConfigFile}, args...)
		}
		out, err := runTool(ctx, bin, args...)
		var ds []EximDriver
		if err == nil {
			ds, err = ParseEximBP(out, "", "")
		}
		if err != nil {
			return []Finding{{Severity: Unknown, Code: "exim-bp", Setting: "exim -bP " + kind,
				Message: "cannot read the Exim configuration: " + oneLine(err.Error()), Fix: "run as root or as the Exim user"}}
		}
		drivers = append(drivers, ds...)
	}
	return EvaluateExim(drivers)
}

// eximAll reports whether an Exim host or domain list matches everything:
// "*" (also with a "<;"-style separator change).
func eximAll(v string) bool {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "<") && len(v) >= 2 {
		v = strings.TrimSpace(v[2:])
	}
	for _, it := range strings.FieldsFunc(v, func(r rune) bool { return r == ':' || r == ';' || r == ' ' }) {
		if it == "*" {
			return true
		}
	}
	return false
}

// EvaluateExim applies the rules of the Exim specification (chapter "The
// smtp transport", section "DANE"; the dnslookup router's options): on
// every smtp transport hosts_try_dane (opportunistic) or hosts_require_dane
// (mandatory) must cover all hosts ("*"), and DNSSEC must be requested for
// the lookups (dnssec_request_domains = * on the dnslookup routers, where
// MX and address lookups happen, and on the transport); manualroute routers
// with a route_list relay mail through a smarthost.
func EvaluateExim(drivers []EximDriver) []Finding {
	var fs []Finding
	add := func(sev Severity, code, setting, value, msg, fix string) {
		fs = append(fs, Finding{Severity: sev, Code: code, Setting: setting, Value: value, Message: msg, Fix: fix})
	}
	smtpTransports := 0
	for _, d := range drivers {
		driver := d.Options["driver"]
		prefix := d.Kind + " " + d.Name + ": "
		switch {
		case d.Kind == "transport" && driver == "smtp":
			smtpTransports++
			try, req := d.Options["hosts_try_dane"], d.Options["hosts_require_dane"]
			switch {
			case eximAll(req):
				add(OK, "exim-dane", prefix+"hosts_require_dane", req, "mandatory DANE for every host (stricter than the mandate's opportunistic DANE)", "")
			case eximAll(try):
				add(OK, "exim-dane", prefix+"hosts_try_dane", try, "opportunistic DANE for every host: TLSA records are enforced where published", "")
			case try == "" && req == "":
				add(Critical, "exim-dane", prefix+"hosts_try_dane", "", "empty (and hosts_require_dane too): DANE is off, TLSA records are ignored",
					"set \"hosts_try_dane = *\" in the "+d.Name+" transport")
			default:
				add(Warning, "exim-dane", prefix+"hosts_try_dane", firstNonEmpty(try, req), "DANE only for the hosts listed, not for all", "set \"hosts_try_dane = *\" in the "+d.Name+" transport")
			}
			if v := d.Options["dnssec_request_domains"]; !eximAll(v) {
				add(Warning, "exim-transport-dnssec", prefix+"dnssec_request_domains", v, "the transport's own lookups (hosts from a manualroute router, TLSA) do not ask for DNSSEC for every domain", "set \"dnssec_request_domains = *\" in the "+d.Name+" transport")
			}
			if v := d.Options["hosts_avoid_tls"]; eximAll(v) {
				add(Critical, "exim-avoid-tls", prefix+"hosts_avoid_tls", v, "TLS is never used, so DANE cannot be", "remove hosts_avoid_tls from the "+d.Name+" transport")
			}
		case d.Kind == "router" && driver == "dnslookup":
			if v := d.Options["dnssec_request_domains"]; !eximAll(v) {
				add(Critical, "exim-router-dnssec", prefix+"dnssec_request_domains", v, "MX and address lookups do not ask for DNSSEC: the hosts never count as secure, so DANE never applies", "set \"dnssec_request_domains = *\" in the "+d.Name+" router")
			} else {
				add(OK, "exim-router-dnssec", prefix+"dnssec_request_domains", v, "MX and address lookups ask for DNSSEC", "")
			}
		case d.Kind == "router" && driver == "manualroute":
			if rl := firstNonEmpty(d.Options["route_list"], d.Options["route_data"]); rl != "" {
				add(Warning, "exim-smarthost", prefix+"route_list", rl, "mail routed here goes to a smarthost instead of the recipients' MX hosts: DANE toward the destination depends on that relay", "make sure the smarthost enforces DANE (run this check there)")
			}
		}
	}
	if smtpTransports == 0 {
		add(Unknown, "exim-no-smtp-transport", "transports", "", "no transport with driver = smtp found", "")
	}
	return fs
}
