package config

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/tlsactl/tlsactl/internal/safefile"
	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/rollover/schedule"
	"github.com/tlsactl/tlsactl/tlsa"
)

// A migration file describes a scheduled CA migration of many hosts (see
// examples/migrations/pkio-2027.toml): which [[host]] entries of the
// configuration move, the new issuer set, the schedule and where the new
// certificates come from. LoadMigration reads it and resolves everything the
// engine needs, so that the stored rollover.MigrationSpec depends on neither
// the file nor the CA files afterwards.

// Source kinds of a migration's [source] table.
const (
	SourceDir  = "dir"  // <host>.pem and <host>.key appear in a directory
	SourceACME = "acme" // tlsactl orders each certificate itself (DNS-01)
	SourceHook = "hook" // material arrives through `tlsactl hook` or `rollover provide`
)

// Defaults of a migration file.
const (
	DefaultMaxParallel    = 1
	DefaultMaxFailures    = 1
	DefaultDeployEstimate = time.Minute
	defaultMargin         = time.Minute // as `tlsactl rollover` without a margin setting
	// maxRecordsPerName is where a TLSA RRset gets large enough that a
	// DNSSEC-signed answer risks UDP truncation (and a TCP retry) at
	// senders; beyond it LoadMigration warns.
	maxRecordsPerName = 12
	maxMigrationFile  = 1 << 20
	maxCAFile         = 8 << 20
)

// Migration is a migration file, checked and resolved against the
// configuration.
type Migration struct {
	// File is the absolute path of the migration file.
	File string
	Name string
	// Hosts are the configuration's [[host]] entries the migration moves,
	// in the order the hosts patterns name them (names FQDN, lower case).
	Hosts []*Host
	// NewCA is the new issuer set, duplicates dropped; NewCAFiles[i] is the
	// file NewCA[i] came from.
	NewCA      []*x509.Certificate
	NewCAFiles []string
	// NotBefore and Deadline are zero when not set.
	NotBefore, Deadline time.Time
	// Windows are the deploy windows (empty: any time).
	Windows schedule.Windows
	// WindowSpecs are the windows as written in the file.
	WindowSpecs    []string
	MaxParallel    int
	MaxFailures    int
	Canary         string // FQDN of the canary host, or ""
	TTL            uint32 // 0: each host's current TTL
	Margin         time.Duration
	DeployEstimate time.Duration
	// Poll is how soon a run looks again for a certificate that has not
	// arrived (0: the engine's default, one minute).
	Poll   time.Duration
	Source MigrationSource
}

// MigrationSource is the [source] table: where the new certificates come
// from. Paths are absolute.
type MigrationSource struct {
	Kind string // SourceDir, SourceACME or SourceHook
	// Dir (kind dir): <host>.pem (leaf first, then the new CA) and
	// <host>.key appear here, <host> without the trailing dot.
	Dir string
	// ACME (kind acme): the directory URL, the account e-mail, External
	// Account Binding credentials (files; never printed), extra roots for
	// the directory's HTTPS and the key type of new certificates.
	Directory   string
	Email       string
	EABKIDFile  string
	EABHMACFile string
	CAFile      string
	KeyType     string
}

// Keys of MigrationSource.Map (and so of rollover.MigrationSpec.Source).
const (
	srcKind, srcDir, srcDirectory, srcEmail   = "kind", "dir", "directory", "email"
	srcEABKID, srcEABHMAC, srcCAFile, srcKeyT = "eab_kid_file", "eab_hmac_file", "ca_file", "key_type"
)

// fields maps the keys of Map to the source's settings.
func (s *MigrationSource) fields() map[string]*string {
	return map[string]*string{srcKind: &s.Kind, srcDir: &s.Dir, srcDirectory: &s.Directory, srcEmail: &s.Email,
		srcEABKID: &s.EABKIDFile, srcEABHMAC: &s.EABHMACFile, srcCAFile: &s.CAFile, srcKeyT: &s.KeyType}
}

// Map returns the source as the string map rollover.MigrationSpec keeps;
// SourceFromMap reads it back.
func (s MigrationSource) Map() map[string]string {
	m := map[string]string{srcKind: s.Kind}
	for k, v := range s.fields() {
		if *v != "" {
			m[k] = *v
		}
	}
	return m
}

// SourceFromMap reads a source map written by MigrationSource.Map (a stored
// migration's Spec.Source). An unknown kind or key is an error.
func SourceFromMap(m map[string]string) (MigrationSource, error) {
	var s MigrationSource
	fields := s.fields()
	for k, v := range m {
		f, ok := fields[k]
		if !ok {
			return s, fmt.Errorf("certificate source: unknown setting %q (written by a newer tlsactl?)", k)
		}
		*f = v
	}
	switch s.Kind {
	case SourceDir:
		if s.Dir == "" {
			return s, errors.New("certificate source dir: no directory")
		}
	case SourceACME:
		if s.Directory == "" {
			return s, errors.New("certificate source acme: no directory URL")
		}
	case SourceHook, "":
		s.Kind = SourceHook
	default:
		return s, fmt.Errorf("certificate source: unknown kind %q", s.Kind)
	}
	return s, nil
}

// Spec returns the migration as the engine stores it: windows in their
// canonical form, the CA certificates as PEM, the source with absolute
// paths.
func (m *Migration) Spec() rollover.MigrationSpec {
	s := rollover.MigrationSpec{
		Name: m.Name, File: m.File, TTL: m.TTL,
		Margin: rollover.Duration(m.Margin), NotBefore: m.NotBefore, Deadline: m.Deadline,
		Windows: windowStrings(m.Windows), MaxParallel: m.MaxParallel, MaxFailures: m.MaxFailures,
		Canary: m.Canary, DeployEstimate: rollover.Duration(m.DeployEstimate), Poll: rollover.Duration(m.Poll), Source: m.Source.Map(),
	}
	for _, h := range m.Hosts {
		s.Hosts = append(s.Hosts, rollover.MigrationHost{Host: h.Name, Port: h.Port})
	}
	for _, c := range m.NewCA {
		s.NewCAPEM = append(s.NewCAPEM, string(pemCert(c)))
	}
	return s
}

// migrationFile is the file as written. Optional settings are pointers so
// that an explicit 0 is told from a missing key.
type migrationFile struct {
	Name           string           `toml:"name"`
	Hosts          []string         `toml:"hosts"`
	NewCA          []string         `toml:"new_ca"`
	NotBefore      *tomlTime        `toml:"not_before"`
	Deadline       *tomlTime        `toml:"deadline"`
	Windows        []string         `toml:"windows"`
	MaxParallel    *int64           `toml:"max_parallel"`
	MaxFailures    *int64           `toml:"max_failures"`
	Canary         string           `toml:"canary"`
	TTL            *int64           `toml:"ttl"`
	Margin         *Duration        `toml:"margin"`
	DeployEstimate *Duration        `toml:"deploy_estimate"`
	Poll           *Duration        `toml:"poll"`
	Source         *migrationSource `toml:"source"`
}

type migrationSource struct {
	Kind        string `toml:"kind"`
	Dir         string `toml:"dir"`
	Directory   string `toml:"directory"`
	Email       string `toml:"email"`
	EABKIDFile  string `toml:"eab_kid_file"`
	EABHMACFile string `toml:"eab_hmac_file"`
	CAFile      string `toml:"ca_file"`
	KeyType     string `toml:"key_type"`
}

// LoadMigration reads the migration file at path and resolves it against
// cfg: host patterns to [[host]] entries, CA files (relative to the
// migration file) to certificates, windows, defaults (margin: cfg's, else
// 60 s). The warnings are for things that work but deserve a look (a large
// RRset, a deadline already passed). Every error is one line that wraps
// ErrConfig and names the file, the key and the fix.
func LoadMigration(path string, cfg *Config) (*Migration, []string, error) {
	b, err := readRegular(path, maxMigrationFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return ParseMigration(b, path, cfg)
}

// ParseMigration is LoadMigration of the text b; path names the file in
// errors and relative paths in it are taken from path's directory.
func ParseMigration(b []byte, path string, cfg *Config) (*Migration, []string, error) {
	return parseMigration(b, path, cfg, time.Now())
}

func parseMigration(b []byte, file string, cfg *Config, now time.Time) (*Migration, []string, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		abs = filepath.Clean(file)
	}
	fail := func(key, format string, args ...any) error {
		if key != "" {
			return fmt.Errorf("%w: %s: %s: %s", ErrConfig, file, key, fmt.Sprintf(format, args...))
		}
		return fmt.Errorf("%w: %s: %s", ErrConfig, file, fmt.Sprintf(format, args...))
	}
	if cfg == nil {
		cfg = &Config{}
	}
	var f migrationFile
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, nil, fmt.Errorf("%w: %s:%d: %s", ErrConfig, file, pe.Position.Line, oneLine(pe.Message))
		}
		return nil, nil, fail("", "%s (see examples/migrations/pkio-2027.toml)", oneLine(strings.TrimPrefix(err.Error(), "toml: ")))
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, 0, len(und))
		for _, k := range und {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k == "source.eab_hmac" || k == "source.eab_kid" || k == "source.eab_hmac_key" {
				return nil, nil, fail(k, "credentials are never written in a migration file: put the value in a file (mode 0600) and name it with %s_file", strings.TrimSuffix(strings.TrimPrefix(k, "source."), "_key"))
			}
		}
		return nil, nil, fail("", "unknown key(s) %s (see examples/migrations/pkio-2027.toml)", strings.Join(keys, ", "))
	}
	rel := func(p string) string {
		if filepath.IsAbs(p) {
			return filepath.Clean(p)
		}
		return filepath.Join(filepath.Dir(abs), p)
	}

	m := &Migration{File: abs, Name: f.Name, Canary: f.Canary}
	if f.Name == "" {
		return nil, nil, fail("name", "missing: give the migration a name such as \"pkio-2027\" (lower-case letters, digits, '.', '-', '_')")
	}
	if rollover.CheckMigrationName(f.Name) != nil {
		return nil, nil, fail("name", "%q is not a valid name: use lower-case letters, digits, '.', '-' and '_', starting with a letter or digit, at most 64 characters", f.Name)
	}

	// Hosts: names or path.Match globs over the [[host]] names.
	if len(f.Hosts) == 0 {
		return nil, nil, fail("hosts", "missing or empty: list the [[host]] names of the configuration to migrate, or globs such as \"mx*.example.nl\"")
	}
	var warnings []string
	seenPattern := map[string]bool{}
	for _, p := range f.Hosts {
		pat := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(p), "."))
		if pat == "" {
			return nil, nil, fail("hosts", "an empty entry: remove it")
		}
		if seenPattern[pat] {
			return nil, nil, fail("hosts", "%q is listed twice: list each host once", p)
		}
		seenPattern[pat] = true
		var matched []*Host
		if strings.ContainsAny(pat, "*?[\\") {
			if _, err := path.Match(pat, ""); err != nil {
				return nil, nil, fail("hosts", "%q is not a valid pattern (%v): use * and ? as in \"mx*.example.nl\"", p, err)
			}
			for i := range cfg.Hosts {
				if ok, _ := path.Match(pat, strings.TrimSuffix(cfg.Hosts[i].Name, ".")); ok {
					matched = append(matched, &cfg.Hosts[i])
				}
			}
		} else {
			for i := range cfg.Hosts {
				if strings.TrimSuffix(cfg.Hosts[i].Name, ".") == pat {
					matched = append(matched, &cfg.Hosts[i])
				}
			}
		}
		if len(matched) == 0 {
			return nil, nil, fail("hosts", "%q matches no [[host]] of the configuration: add the host there first, or fix the name", p)
		}
		for _, h := range matched {
			if slices.ContainsFunc(m.Hosts, func(o *Host) bool { return o.Name == h.Name }) {
				if !slices.Contains(m.Hosts, h) {
					return nil, nil, fail("hosts", "%s has several [[host]] entries (ports %s): a migration moves a host name once; keep one entry for it in the configuration", bare(h.Name), portsOf(cfg, h.Name))
				}
				continue // named by two patterns: once is enough
			}
			m.Hosts = append(m.Hosts, h)
		}
	}

	// The new issuer set.
	if len(f.NewCA) == 0 {
		return nil, nil, fail("new_ca", "missing: list the new CA certificate files (PEM), e.g. [\"new-ca/*.pem\"]")
	}
	for _, p := range f.NewCA {
		if strings.TrimSpace(p) == "" {
			return nil, nil, fail("new_ca", "an empty entry: remove it")
		}
		files := []string{rel(p)}
		if strings.ContainsAny(p, "*?[") {
			if _, err := os.Stat(files[0]); err != nil {
				g, err := filepath.Glob(files[0])
				if err != nil {
					return nil, nil, fail("new_ca", "%q is not a valid pattern (%v)", p, err)
				}
				if len(g) == 0 {
					return nil, nil, fail("new_ca", "%q matches no file (paths are relative to %s): fix the pattern", p, filepath.Dir(abs))
				}
				sort.Strings(g)
				files = g
			}
		}
		for _, cf := range files {
			certs, err := readCAFile(cf)
			if err != nil {
				return nil, nil, fail("new_ca", "%v", err)
			}
			for _, c := range certs {
				if !c.IsCA {
					return nil, nil, fail("new_ca", "%s holds %s, which is not a CA certificate: list the issuing CA certificates only, not the leaf", cf, certName(c))
				}
				if now.After(c.NotAfter) {
					return nil, nil, fail("new_ca", "%s: CA certificate %s expired %s: get the current certificate from the CA", cf, certName(c), c.NotAfter.UTC().Format(time.RFC3339))
				}
				if slices.ContainsFunc(m.NewCA, func(o *x509.Certificate) bool { return bytes.Equal(o.Raw, c.Raw) }) {
					continue
				}
				m.NewCA = append(m.NewCA, c)
				m.NewCAFiles = append(m.NewCAFiles, cf)
			}
		}
	}
	if n := len(m.NewCA) + 2; n > maxRecordsPerName {
		warnings = append(warnings, fmt.Sprintf("%s: new_ca: %d CA certificates give each name %d records or more during the migration (a 2 1 1 each, beside the current 3 1 1 and old 2 1 1); more than %d make signed answers large (UDP truncation, TCP retries at senders): list only the intermediates that issue", file, len(m.NewCA), n, maxRecordsPerName))
	}

	// The schedule.
	for _, v := range []struct {
		key string
		in  *tomlTime
		out *time.Time
	}{{"not_before", f.NotBefore, &m.NotBefore}, {"deadline", f.Deadline, &m.Deadline}} {
		if v.in == nil {
			continue
		}
		t, err := v.in.instant()
		if err != nil {
			return nil, nil, fail(v.key, "%v, e.g. 2027-03-01T00:00:00+01:00", err)
		}
		*v.out = t
	}
	if !m.Deadline.IsZero() {
		if !m.NotBefore.IsZero() && !m.Deadline.After(m.NotBefore) {
			return nil, nil, fail("deadline", "%s is not after not_before %s: fix one of them", m.Deadline.Format(time.RFC3339), m.NotBefore.Format(time.RFC3339))
		}
		if now.After(m.Deadline) {
			warnings = append(warnings, fmt.Sprintf("%s: deadline: %s has passed", file, m.Deadline.Format(time.RFC3339)))
		}
	}
	if len(f.Windows) > 0 {
		ws, err := schedule.ParseAll(f.Windows)
		if err != nil {
			return nil, nil, fail("windows", "%s: write each as \"Mon-Fri 02:00-05:00 Europe/Amsterdam\"", oneLine(err.Error()))
		}
		m.Windows, m.WindowSpecs = ws, slices.Clone(f.Windows)
	}
	var err2 error
	if m.MaxParallel, err2 = atLeastOne(f.MaxParallel, DefaultMaxParallel); err2 != nil {
		return nil, nil, fail("max_parallel", "%v: how many hosts deploy at once", err2)
	}
	if m.MaxFailures, err2 = atLeastOne(f.MaxFailures, DefaultMaxFailures); err2 != nil {
		return nil, nil, fail("max_failures", "%v: after how many failed hosts the migration halts", err2)
	}
	if m.Canary != "" {
		c := strings.ToLower(strings.TrimSuffix(m.Canary, "."))
		i := slices.IndexFunc(m.Hosts, func(h *Host) bool { return bare(h.Name) == c })
		if i < 0 {
			return nil, nil, fail("canary", "%q is not one of the migration's hosts: name one of them, or remove canary", f.Canary)
		}
		m.Canary = m.Hosts[i].Name
	}
	if f.TTL != nil {
		if *f.TTL < 1 || *f.TTL > 2147483647 {
			return nil, nil, fail("ttl", "%d is out of range: give 1 to 2147483647 seconds, or leave it out for each host's current TTL", *f.TTL)
		}
		m.TTL = uint32(*f.TTL)
	}
	m.Margin = cfg.Margin.Duration
	if m.Margin == 0 {
		m.Margin = defaultMargin
	}
	if f.Margin != nil {
		m.Margin = f.Margin.Duration
	}
	m.DeployEstimate = DefaultDeployEstimate
	if f.DeployEstimate != nil {
		if f.DeployEstimate.Duration == 0 {
			return nil, nil, fail("deploy_estimate", "0 is not an estimate: give how long one deploy takes, e.g. \"2m\"")
		}
		m.DeployEstimate = f.DeployEstimate.Duration
	}
	if f.Poll != nil {
		if f.Poll.Duration < time.Second {
			return nil, nil, fail("poll", "give how often to look for certificates that have not arrived, at least \"1s\", e.g. \"1m\"")
		}
		m.Poll = f.Poll.Duration
	}

	// Where the certificates come from.
	if f.Source == nil || f.Source.Kind == "" {
		return nil, nil, fail("source.kind", "missing: add a [source] table with kind = \"dir\", \"acme\" or \"hook\"")
	}
	s := f.Source
	m.Source.Kind = s.Kind
	only := func(kind string, keys map[string]string) error {
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			if keys[k] != "" {
				return fail("source."+k, "is a setting of kind = %q, not of kind = %q: remove it", kindOf(k), kind)
			}
		}
		return nil
	}
	switch s.Kind {
	case SourceDir:
		if err := only(SourceDir, map[string]string{"directory": s.Directory, "email": s.Email, "eab_kid_file": s.EABKIDFile, "eab_hmac_file": s.EABHMACFile, "ca_file": s.CAFile, "key_type": s.KeyType}); err != nil {
			return nil, nil, err
		}
		if s.Dir == "" {
			return nil, nil, fail("source.dir", "missing: name the directory where <host>.pem and <host>.key appear (relative to this file)")
		}
		m.Source.Dir = rel(s.Dir)
		if st, err := os.Stat(m.Source.Dir); err != nil || !st.IsDir() {
			return nil, nil, fail("source.dir", "%s is not a directory: create it (mkdir -m 0700 %s) or fix the path", m.Source.Dir, m.Source.Dir)
		}
	case SourceACME:
		if err := only(SourceACME, map[string]string{"dir": s.Dir}); err != nil {
			return nil, nil, err
		}
		if s.Directory == "" {
			return nil, nil, fail("source.directory", "missing: give the ACME directory URL, e.g. \"https://acme-v02.api.letsencrypt.org/directory\"")
		}
		if u, err := url.Parse(s.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, nil, fail("source.directory", "%q is not an https:// URL: give the ACME directory URL", s.Directory)
		}
		m.Source.Directory, m.Source.Email = s.Directory, s.Email
		if (s.EABKIDFile == "") != (s.EABHMACFile == "") {
			return nil, nil, fail("source.eab_kid_file", "External Account Binding needs both eab_kid_file and eab_hmac_file (the key ID and the HMAC key the CA gave you)")
		}
		if s.EABKIDFile != "" {
			m.Source.EABKIDFile, m.Source.EABHMACFile = rel(s.EABKIDFile), rel(s.EABHMACFile)
			if _, err := readRegular(m.Source.EABKIDFile, safefile.MaxPrivateSize); err != nil {
				return nil, nil, fail("source.eab_kid_file", "%v", err)
			}
			if err := safefile.CheckPrivate(m.Source.EABHMACFile); err != nil {
				return nil, nil, fail("source.eab_hmac_file", "%v", oneLine(err.Error()))
			}
		}
		if s.CAFile != "" {
			m.Source.CAFile = rel(s.CAFile)
			if _, err := readRegular(m.Source.CAFile, maxCAFile); err != nil {
				return nil, nil, fail("source.ca_file", "%v", err)
			}
		}
		switch strings.ToLower(s.KeyType) {
		case "", "ec256", "ec384", "rsa2048", "rsa3072", "rsa4096":
			m.Source.KeyType = strings.ToLower(s.KeyType)
		default:
			return nil, nil, fail("source.key_type", "%q: want ec256, ec384, rsa2048, rsa3072 or rsa4096", s.KeyType)
		}
	case SourceHook:
		if err := only(SourceHook, map[string]string{"dir": s.Dir, "directory": s.Directory, "email": s.Email, "eab_kid_file": s.EABKIDFile, "eab_hmac_file": s.EABHMACFile, "ca_file": s.CAFile, "key_type": s.KeyType}); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fail("source.kind", "%q: want \"dir\", \"acme\" or \"hook\"", s.Kind)
	}
	return m, warnings, nil
}

// kindOf names the source kind a [source] key belongs to.
func kindOf(key string) string {
	if key == "dir" {
		return SourceDir
	}
	return SourceACME
}

// tomlTime is a TOML value that must be an instant: an offset date-time
// (2027-03-01T00:00:00+01:00) or a string in RFC 3339. Local dates and
// times are refused: a deadline must not depend on the machine's zone.
type tomlTime struct{ v any }

// UnmarshalTOML keeps the value; instant checks it, so that the error can
// name the key.
func (t *tomlTime) UnmarshalTOML(v any) error {
	t.v = v
	return nil
}

func (t *tomlTime) instant() (time.Time, error) {
	switch x := t.v.(type) {
	case time.Time:
		switch x.Location().String() {
		case "datetime-local":
			return time.Time{}, errors.New("a date and time with its UTC offset is needed (found a date-time without offset)")
		case "date-local":
			return time.Time{}, errors.New("a date and time with its UTC offset is needed (found a date without offset)")
		case "time-local":
			return time.Time{}, errors.New("a date and time with its UTC offset is needed (found a time of day)")
		}
		return x, nil
	case string:
		v, err := time.Parse(time.RFC3339, x)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not a date and time with its UTC offset", x)
		}
		return v, nil
	}
	return time.Time{}, fmt.Errorf("a date and time with its UTC offset is needed (found %s)", tomlKind(t.v))
}

func tomlKind(v any) string {
	switch v.(type) {
	case int64:
		return "a number"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

// atLeastOne returns *v (def when nil), refusing values below 1.
func atLeastOne(v *int64, def int) (int, error) {
	if v == nil {
		return def, nil
	}
	if *v < 1 || *v > 1<<20 {
		return 0, fmt.Errorf("%d is out of range, want 1 or more", *v)
	}
	return int(*v), nil
}

// readRegular reads a regular file of at most limit bytes (no devices or
// pipes, which could block or never end).
func readRegular(p string, limit int64) ([]byte, error) {
	return safefile.ReadLimited(p, limit, true, "")
}

// readCAFile returns the certificates of a PEM (or DER) file; one without
// any is an error naming what it holds.
func readCAFile(p string) ([]*x509.Certificate, error) {
	b, err := readRegular(p, maxCAFile)
	if err != nil {
		return nil, err
	}
	ms, err := tlsa.ParseMaterial(p, b)
	if err != nil {
		return nil, errors.New(oneLine(err.Error()))
	}
	certs := tlsa.Certificates(ms)
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no certificate: give the new CA's certificate (PEM)", p)
	}
	return certs, nil
}

func certName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("%q", c.Subject.CommonName)
	}
	return fmt.Sprintf("%q", c.Subject.String())
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func portsOf(cfg *Config, name string) string {
	var ps []string
	for _, h := range cfg.Hosts {
		if h.Name == name {
			ps = append(ps, fmt.Sprint(h.Port))
		}
	}
	return strings.Join(ps, ", ")
}

func bare(name string) string { return strings.TrimSuffix(name, ".") }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// windowStrings returns the windows in their canonical form (which
// schedule.Parse reads back).
func windowStrings(ws schedule.Windows) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.String())
	}
	return out
}
