// Package prometheus_test checks the Prometheus and Grafana examples:
// tlsactl-alerts.yml with the real promtool (check rules, and its unit tests
// in tlsactl-alerts.test.yml), prometheus.yml with promtool check config, and
// that every PromQL query of examples/grafana/tlsactl-dashboard.json uses
// only the metric names tlsactl exposes.
package prometheus_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
)

// promtool runs promtool with args in this directory and fails the test on
// a non-zero exit, showing its output.
func promtool(t *testing.T, args ...string) {
	t.Helper()
	bin := testbed.Require(t, "promtool", "prometheus")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func TestAlertRulesCheck(t *testing.T) {
	promtool(t, "check", "rules", "tlsactl-alerts.yml")
}

func TestAlertRulesUnitTests(t *testing.T) {
	promtool(t, "test", "rules", "tlsactl-alerts.test.yml")
}

func TestPrometheusConfig(t *testing.T) {
	promtool(t, "check", "config", "prometheus.yml")
}

// TestAlertRulesCovered checks that the unit tests exercise every alert of
// the rule file (promtool itself does not care).
func TestAlertRulesCovered(t *testing.T) {
	rules := alertNames(t, "tlsactl-alerts.yml", `(?m)^\s*- alert:\s*(\w+)\s*$`)
	tested := alertNames(t, "tlsactl-alerts.test.yml", `(?m)^\s*alertname:\s*(\w+)\s*$`)
	if len(rules) == 0 {
		t.Fatal("no alerts found in tlsactl-alerts.yml")
	}
	for name := range rules {
		if !tested[name] {
			t.Errorf("alert %s has no test in tlsactl-alerts.test.yml", name)
		}
	}
	for name := range tested {
		if !rules[name] {
			t.Errorf("tlsactl-alerts.test.yml tests %s, which tlsactl-alerts.yml does not define", name)
		}
	}
}

func alertNames(t *testing.T, file, pattern string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(pattern).FindAllStringSubmatch(string(b), -1) {
		names[m[1]] = true
	}
	return names
}

// metrics are the metric names tlsactl exposes (tlsactl serve, tlsactl check
// --prometheus, --metrics-file): the only ones the dashboard may query.
var metrics = map[string]bool{
	"tlsactl_host_status":                  true,
	"tlsactl_tlsa_matching_records":        true,
	"tlsactl_tlsa_usable_records":          true,
	"tlsactl_certificate_expiry_days":      true,
	"tlsactl_dane_break_days":              true,
	"tlsactl_dane_single_record_days":      true,
	"tlsactl_tlsa_dnssec_bogus":            true,
	"tlsactl_check_success":                true,
	"tlsactl_check_duration_seconds":       true,
	"tlsactl_last_check_timestamp_seconds": true,
	"tlsactl_domain_mx_dnssec_secure":      true,
	"probe_success":                        true,
	"probe_duration_seconds":               true,
	"tlsactl_migration_hosts":              true,
	"tlsactl_migration_failures":           true,
	"tlsactl_migration_max_failures":       true,
	"tlsactl_migration_deadline_seconds":   true,
	"tlsactl_migration_status":             true,
}

// promqlWords are the PromQL keywords; promqlFuncs the functions and
// aggregation operators a query may call.
var (
	promqlWords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true}
	promqlFuncs = map[string]bool{}
)

func init() {
	for _, f := range strings.Fields(`sum min max avg count count_values group stddev stdvar topk bottomk quantile
		abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week day_of_year
		days_in_month delta deriv exp floor histogram_quantile holt_winters hour idelta increase irate label_join
		label_replace ln log2 log10 minute month predict_linear rate resets round scalar sgn sort sort_desc sqrt
		time timestamp vector year avg_over_time min_over_time max_over_time sum_over_time count_over_time
		quantile_over_time stddev_over_time stdvar_over_time last_over_time present_over_time`) {
		promqlFuncs[f] = true
	}
}

var (
	reString     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	reMatchers   = regexp.MustCompile(`\{[^{}]*\}`)
	reRange      = regexp.MustCompile(`\[[^\[\]]*\]`)
	reLabelList  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	reVariable   = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	reLabelVals  = regexp.MustCompile(`\blabel_values\(\s*([^,()]*(?:\{[^}]*\})?)\s*(?:,\s*\w+\s*)?\)`)
	reToken      = regexp.MustCompile(`[0-9][0-9a-zA-Z_.]*|[a-zA-Z_:][a-zA-Z0-9_:]*`)
	reCallFollow = regexp.MustCompile(`^\s*\(`)
)

// promqlMetrics returns the metric names expr selects, and the identifiers
// it uses that are neither a metric of tlsactl nor PromQL. It is a lexical
// check, not a parser: strings, label matchers, ranges and label lists are
// dropped first, then every identifier is a keyword, a call or a metric.
func promqlMetrics(expr string) (names, unknown []string) {
	s := reLabelVals.ReplaceAllString(expr, "$1") // Grafana: label_values(metric, label)
	s = reVariable.ReplaceAllString(s, "1")
	s = reString.ReplaceAllString(s, `""`)
	s = reMatchers.ReplaceAllString(s, "")
	s = reRange.ReplaceAllString(s, "")
	s = reLabelList.ReplaceAllString(s, "")
	for _, loc := range reToken.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		switch {
		case tok[0] >= '0' && tok[0] <= '9', promqlWords[tok]:
		case reCallFollow.MatchString(s[loc[1]:]):
			if !promqlFuncs[tok] {
				unknown = append(unknown, tok+"()")
			}
		case metrics[tok]:
			names = append(names, tok)
		default:
			unknown = append(unknown, tok)
		}
	}
	return names, unknown
}

func TestPromqlMetrics(t *testing.T) {
	for expr, want := range map[string]string{
		`count(tlsactl_host_status{host=~"$host"} == 2) or vector(0)`:                               "tlsactl_host_status",
		`time() - tlsactl_last_check_timestamp_seconds{host=~"${host}"} > 2700`:                     "tlsactl_last_check_timestamp_seconds",
		`sum by (migration, phase) (tlsactl_migration_hosts{phase!~"done|x"}) and on(migration) up`: "tlsactl_migration_hosts !up",
		`rate(probe_duration_seconds[$__rate_interval]) offset 1h`:                                  "probe_duration_seconds",
		`label_values(tlsactl_host_status, host)`:                                                   "tlsactl_host_status",
		`tlsactl_host_statuss`:  "!tlsactl_host_statuss",
		`nofunc(probe_success)`: "probe_success !nofunc()",
	} {
		names, unknown := promqlMetrics(expr)
		got := strings.Join(names, " ")
		for _, u := range unknown {
			got += " !" + u
		}
		if strings.TrimSpace(got) != want {
			t.Errorf("promqlMetrics(%q) = %q, want %q", expr, strings.TrimSpace(got), want)
		}
	}
}

// TestGrafanaDashboard checks that the dashboard is valid JSON with panels,
// and that every query (panel targets and template variables) selects at
// least one metric and only metrics tlsactl exposes.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../grafana/tlsactl-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string            `json:"title"`
		UID        string            `json:"uid"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("tlsactl-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard without title, uid or panels")
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	exprs := map[string]string{} // expr → where
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if s, ok := c.(string); ok && k == "expr" {
					exprs[s] = path
				}
				walk(path+"."+k, c)
			}
		case []any:
			for _, c := range v {
				walk(path+"[]", c)
			}
		}
	}
	walk("", doc)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q) != nil {
			json.Unmarshal(v.Query, &q.Query) // older dashboards: a plain string
		}
		if q.Query == "" {
			t.Errorf("template variable %s: no query", v.Name)
			continue
		}
		exprs[q.Query] = "templating." + v.Name
	}
	if len(exprs) < 10 {
		t.Fatalf("only %d PromQL queries in the dashboard", len(exprs))
	}
	used := map[string]bool{}
	for expr, where := range exprs {
		names, unknown := promqlMetrics(expr)
		if len(names) == 0 {
			t.Errorf("%s: %q selects no tlsactl metric", where, expr)
		}
		if len(unknown) > 0 {
			t.Errorf("%s: %q uses %v: not a tlsactl metric nor PromQL", where, expr, unknown)
		}
		for _, n := range names {
			used[n] = true
		}
	}
	var unused []string
	for n := range metrics {
		if !used[n] {
			unused = append(unused, n)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("the dashboard shows no panel for %v", unused)
	}
}
