package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// DefaultStateDir is the state directory when neither state nor state_dir
// is set.
const DefaultStateDir = "/var/lib/tlsactl"

// DefaultStateLease is the lease of a runner's lock when state_lease is
// not set.
const DefaultStateLease = 30 * time.Second

// minStateLease bounds state_lease from below: renewals every third of it
// must fit in a database round trip.
const minStateLease = time.Second

// IsPostgresURL reports whether a state location is a PostgreSQL URL
// (postgres:// or postgresql://) rather than a directory path. It does not
// check the rest of the URL.
func IsPostgresURL(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

// StateLocation is where the state lives: state, else state_dir, else
// DefaultStateDir. It is a directory path or a PostgreSQL URL (see
// IsPostgresURL).
func (c *Config) StateLocation() string {
	switch {
	case c.State != "":
		return c.State
	case c.StateDir != "":
		return c.StateDir
	}
	return DefaultStateDir
}

// StateLocal is the directory of the files a runner keeps for itself
// (ACME accounts, next keys): the state directory, or with a PostgreSQL
// state, state_dir (default DefaultStateDir).
func (c *Config) StateLocal() string {
	if loc := c.StateLocation(); !IsPostgresURL(loc) {
		return loc
	}
	if c.StateDir != "" {
		return c.StateDir
	}
	return DefaultStateDir
}

// Lease is state_lease, or DefaultStateLease when unset.
func (c *Config) Lease() time.Duration {
	if c.StateLease.Duration > 0 {
		return c.StateLease.Duration
	}
	return DefaultStateLease
}

// runnerName is what a runner may be called: it shows in histories and
// the database's application_name (at most 63 bytes there).
var runnerName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,47}$`)

// checkState validates the state keys: state a path or a postgres URL, not
// contradicting state_dir; a PostgreSQL state with state_key_file; the
// lease and the runner name. It reads no file.
func (c *Config) checkState(source string) error {
	if c.Runner != "" && !runnerName.MatchString(c.Runner) {
		return fmt.Errorf("%w: %s: runner %q: use at most 48 letters, digits and . _ : @ - (e.g. \"mx-runner-1\")", ErrConfig, source, c.Runner)
	}
	if d := c.StateLease.Duration; d != 0 && d < minStateLease {
		return fmt.Errorf("%w: %s: state_lease %s is too short: use at least %s (default %s)", ErrConfig, source, d, minStateLease, DefaultStateLease)
	}
	if c.State == "" {
		return nil
	}
	if !IsPostgresURL(c.State) {
		if strings.Contains(c.State, "://") {
			return fmt.Errorf("%w: %s: state %q: want a directory path or a postgres:// URL", ErrConfig, source, redactURL(c.State))
		}
		if c.StateDir != "" && filepath.Clean(c.StateDir) != filepath.Clean(c.State) {
			return fmt.Errorf("%w: %s: state = %q and state_dir = %q name two state directories: keep one of them", ErrConfig, source, c.State, c.StateDir)
		}
		return nil
	}
	if _, err := ParseStateURL(c.State); err != nil {
		return fmt.Errorf("%w: %s: state: %v", ErrConfig, source, err)
	}
	if c.StateKeyFile == "" {
		return fmt.Errorf("%w: %s: state is a PostgreSQL database but state_key_file is not set: every runner needs the same key file to encrypt staged private keys (openssl rand -base64 32 > /etc/tlsactl/state.key; chmod 600 /etc/tlsactl/state.key)", ErrConfig, source)
	}
	return nil
}

// checkStateSecret refuses a database password written in the state URL of
// a configuration file that others than its owner may read.
func (c *Config) checkStateSecret(path string) error {
	if !IsPostgresURL(c.State) {
		return nil
	}
	u, err := ParseStateURL(c.State)
	if err != nil || !URLHasPassword(u) {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: %s: state holds the database password but the file has mode %04o (others can read it): remove the password from the URL and use state_password_file = \"/path\" (mode 0600) or $PGPASSWORD", ErrConfig, path, fi.Mode().Perm())
	}
	return nil
}

// ParseStateURL parses a PostgreSQL state URL: scheme postgres or
// postgresql, a host, and a database name. Errors never contain the
// password.
func ParseStateURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: want postgres://user@host:port/database?sslmode=verify-full", redactURL(s))
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, fmt.Errorf("%s: want scheme postgres://", redactURL(s))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%s names no host: want postgres://user@host:port/database", redactURL(s))
	}
	if strings.Trim(u.Path, "/") == "" {
		return nil, fmt.Errorf("%s names no database: want postgres://user@host:port/database", redactURL(s))
	}
	return u, nil
}

// URLHasPassword reports whether a parsed state URL carries a password, in
// its user information or as a password= parameter.
func URLHasPassword(u *url.URL) bool {
	if _, ok := u.User.Password(); ok {
		return true
	}
	return u.Query().Has("password")
}

// RedactURL returns s with any password (user information or password=
// parameter) replaced by "xxxxx", for messages and logs; a string that is
// not a URL is returned with everything after "://" cut.
func RedactURL(s string) string { return redactURL(s) }

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if i := strings.Index(s, "://"); i >= 0 {
			return s[:i+3] + "…"
		}
		return s
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
