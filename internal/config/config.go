// Package config reads tlsactl's configuration file: the validating resolver,
// the DNS provider and the MX hosts tlsactl manages. The format is TOML; see
// examples/tlsactl.toml. Secrets are never written in it: providers read
// them from files named here or from environment variables.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/miekg/dns"
)

// ErrConfig is wrapped by every error about the configuration file.
var ErrConfig = errors.New("configuration")

// Config is the whole file.
type Config struct {
	// Resolver is the validating resolver (host or host:port) used for
	// lookups, zone discovery and probes; empty: /etc/resolv.conf.
	Resolver string `toml:"resolver"`
	// Provider is the DNS provider that publishes TLSA records.
	Provider Provider `toml:"provider"`
	// Hosts are the MX hosts under management.
	Hosts []Host `toml:"host"`
	// StateDir holds rollover state and staged material (mode 0700);
	// default /var/lib/tlsactl. With a PostgreSQL State it is only the
	// local directory of files a runner keeps for itself (ACME accounts,
	// next keys); see StateLocal.
	StateDir string `toml:"state_dir"`
	// State is where rollover and migration state, staged material and
	// the ledgers live: a directory path (the same as state_dir) or a
	// PostgreSQL URL "postgres://user@host:port/db?sslmode=verify-full&…"
	// shared by several runners. Empty: state_dir.
	State string `toml:"state"`
	// StatePasswordFile is a file whose first line is the database
	// password (else $PGPASSWORD or ~/.pgpass); PostgreSQL only.
	StatePasswordFile string `toml:"state_password_file"`
	// StateKeyFile holds the 32-byte key (base64 or hex) that encrypts
	// staged private keys in the database; every runner has the same
	// file. Required with a PostgreSQL State.
	StateKeyFile string `toml:"state_key_file"`
	// StateLease is how long a runner's lock on a host or migration lasts
	// without renewal (PostgreSQL only); default 30s.
	StateLease Duration `toml:"state_lease"`
	// Runner names this runner in leases and histories; default
	// "<hostname>:<pid>".
	Runner string `toml:"runner"`
	// Margin is added to every TTL wait of a rollover; default 60s.
	Margin Duration `toml:"margin"`
}

// Duration is a time.Duration written as "60s" in the file.
type Duration struct{ time.Duration }

// UnmarshalText reads Go duration syntax ("90s", "5m").
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bad duration %q: want e.g. \"60s\" or \"5m\"", b)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	d.Duration = v
	return nil
}

// Provider names a providers.Factory and its plain settings. Every key other
// than "name" is passed to the provider as a setting (e.g. server,
// tsig_key_file, token_file).
type Provider struct {
	Name     string
	Settings map[string]string
}

// UnmarshalTOML reads the [provider] table: name plus free-form settings.
func (p *Provider) UnmarshalTOML(v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("[provider] must be a table")
	}
	p.Settings = map[string]string{}
	for k, val := range m {
		var s string
		switch x := val.(type) {
		case string:
			s = x
		case int64:
			s = fmt.Sprint(x)
		case bool:
			s = fmt.Sprint(x)
		default:
			return fmt.Errorf("[provider] %s: want a string, number or boolean", k)
		}
		if k == "name" {
			p.Name = s
		} else {
			p.Settings[k] = s
		}
	}
	return nil
}

// Host is one MX host.
type Host struct {
	Name string `toml:"name"` // e.g. "mail.example.nl"
	Port int    `toml:"port"` // SMTP port; 25 when zero
	Zone string `toml:"zone"` // the zone holding _25._tcp.<name>; discovered when empty
	TTL  int    `toml:"ttl"`  // TTL of published TLSA records; 3600 when zero
	// AuthServers, when set, are the authoritative servers ("host:port")
	// asked for propagation instead of the zone's NS set; AuthPort is the
	// NS set's port (53).
	AuthServers []string `toml:"auth_servers"`
	AuthPort    int      `toml:"auth_port"`
	// Deploy says how the certificate is installed on this host.
	Deploy Deploy `toml:"deploy"`
}

// Deploy is how a rollover installs a certificate on a host: files written
// atomically, then the reload command, then STARTTLS probes until served.
type Deploy struct {
	KeyFile       string   `toml:"key_file"`   // private key PEM
	ChainFile     string   `toml:"chain_file"` // full chain PEM, leaf first, up to the CA the 2 1 1 names
	CertFile      string   `toml:"cert_file"`  // optional: the leaf alone
	KeyMode       string   `toml:"key_mode"`   // octal, default "0600"
	CertMode      string   `toml:"cert_mode"`  // octal, default "0644"
	Owner         string   `toml:"owner"`      // optional chown
	Group         string   `toml:"group"`
	Reload        []string `toml:"reload"` // argv, e.g. ["postfix", "reload"]; no shell
	ReloadTimeout Duration `toml:"reload_timeout"`
	ProbeTimeout  Duration `toml:"probe_timeout"`
}

// Configured reports whether the host has a deploy section.
func (d Deploy) Configured() bool { return d.KeyFile != "" || d.ChainFile != "" }

// Load reads and checks the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	c, err := Parse(b, path)
	if err != nil {
		return nil, err
	}
	if err := c.checkStateSecret(path); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse reads configuration text; source names it in errors. Besides each
// host's own settings it checks that hosts sharing certificate files share
// all of them (see SharedTarget); that check reads the file system to follow
// symbolic links.
func Parse(b []byte, source string) (*Config, error) {
	var c Config
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%w: %s:%d: %s", ErrConfig, source, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, source, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		var keys []string
		for _, k := range und {
			if len(k) > 0 && k[0] == "provider" {
				continue // free-form provider settings
			}
			keys = append(keys, k.String())
		}
		if len(keys) > 0 {
			sort.Strings(keys)
			return nil, fmt.Errorf("%w: %s: unknown key(s) %s (see examples/tlsactl.toml)", ErrConfig, source, strings.Join(keys, ", "))
		}
	}
	seen := map[string]bool{}
	for i := range c.Hosts {
		h := &c.Hosts[i]
		if h.Name == "" {
			return nil, fmt.Errorf("%w: %s: [[host]] number %d has no name", ErrConfig, source, i+1)
		}
		if _, ok := dns.IsDomainName(h.Name); !ok {
			return nil, fmt.Errorf("%w: %s: host %q is not a DNS name", ErrConfig, source, h.Name)
		}
		h.Name = strings.ToLower(dns.Fqdn(h.Name))
		if h.Zone != "" {
			h.Zone = strings.ToLower(dns.Fqdn(h.Zone))
			if !dns.IsSubDomain(h.Zone, h.Name) {
				return nil, fmt.Errorf("%w: %s: host %s is not in zone %s", ErrConfig, source, h.Name, h.Zone)
			}
		}
		if h.Port == 0 {
			h.Port = 25
		}
		if h.Port < 1 || h.Port > 65535 {
			return nil, fmt.Errorf("%w: %s: host %s: port %d out of range", ErrConfig, source, h.Name, h.Port)
		}
		if h.TTL == 0 {
			h.TTL = 3600
		}
		if h.TTL < 0 || h.TTL > 2147483647 {
			return nil, fmt.Errorf("%w: %s: host %s: ttl %d out of range", ErrConfig, source, h.Name, h.TTL)
		}
		if h.AuthPort == 0 {
			h.AuthPort = 53
		}
		if d := h.Deploy; d.Configured() {
			if d.KeyFile == "" || d.ChainFile == "" || len(d.Reload) == 0 {
				return nil, fmt.Errorf("%w: %s: host %s: [host.deploy] needs key_file, chain_file and reload", ErrConfig, source, h.Name)
			}
			for _, m := range []string{d.KeyMode, d.CertMode} {
				if m != "" {
					if _, err := strconv.ParseUint(m, 8, 32); err != nil {
						return nil, fmt.Errorf("%w: %s: host %s: mode %q is not octal (e.g. \"0640\")", ErrConfig, source, h.Name, m)
					}
				}
			}
		}
		key := fmt.Sprintf("%s:%d", h.Name, h.Port)
		if seen[key] {
			return nil, fmt.Errorf("%w: %s: host %s port %d is listed twice", ErrConfig, source, h.Name, h.Port)
		}
		seen[key] = true
	}
	if err := checkTargets(c.Hosts, source); err != nil {
		return nil, err
	}
	if err := c.checkState(source); err != nil {
		return nil, err
	}
	for _, k := range sortedKeys(c.Provider.Settings) {
		if isSecretKey(k) {
			return nil, fmt.Errorf("%w: %s: [provider] %s must not be written in the configuration file: use %s_file = \"/path\" (mode 0600) or the provider's environment variable", ErrConfig, source, k, k)
		}
	}
	return &c, nil
}

// isSecretKey reports provider settings that hold credentials by name: they
// must come from a file (<key>_file) or the environment, never from the file.
func isSecretKey(k string) bool {
	if strings.HasSuffix(k, "_file") {
		return false
	}
	for _, s := range []string{"key", "secret", "token", "password", "access_key_id", "private_key"} {
		if k == s || strings.HasSuffix(k, "_"+s) {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Host returns the configured host with name (any case, with or without the
// trailing dot) and port (0: any port), or nil.
func (c *Config) Host(name string, port int) *Host {
	name = strings.ToLower(dns.Fqdn(name))
	for i := range c.Hosts {
		if c.Hosts[i].Name == name && (port == 0 || c.Hosts[i].Port == port) {
			return &c.Hosts[i]
		}
	}
	return nil
}
