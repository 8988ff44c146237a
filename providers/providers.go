// Package providers changes TLSA records through DNS providers behind the
// github.com/libdns/libdns interfaces: RFC 2136 (BIND, Knot, PowerDNS and most
// self-hosted DNS) and hosted APIs. It also finds the zone of a name, its
// authoritative servers, and waits until every one of them serves a TLSA
// RRset (propagation).
//
// Credentials live only in a provider's settings: they come from files or
// environment variables ([Settings.Secret]), never from plain configuration
// values or flags, and are never printed, logged or stored in state.
package providers

import (
	"errors"
	"fmt"
	"github.com/tlsactl/tlsactl/internal/safefile"
	"os"
	"sort"
	"strings"

	"github.com/libdns/libdns"
)

// Provider is what tlsactl needs of a DNS provider: read, replace, add and
// delete records of a zone (the libdns interfaces).
type Provider interface {
	libdns.RecordGetter
	libdns.RecordSetter
	libdns.RecordAppender
	libdns.RecordDeleter
}

// Errors callers branch on.
var (
	// ErrUnknownProvider: no provider of that name is registered.
	ErrUnknownProvider = errors.New("unknown DNS provider")
	// ErrConfig: a provider setting or credential is missing or invalid.
	ErrConfig = errors.New("provider configuration")
	// ErrNotBuilt: the provider exists in the default build but this binary
	// was built without it (go build -tags nohosted: RFC 2136 only).
	ErrNotBuilt = errors.New("DNS provider not in this build")
)

// Settings configure one provider. Values holds plain settings from the
// config file or flags (e.g. "server"); secrets are read only through
// [Settings.Secret]. Env and ReadFile default to os.Getenv and os.ReadFile;
// tests replace them.
type Settings struct {
	Values   map[string]string
	Env      func(string) string
	ReadFile func(string) ([]byte, error)
}

// Get returns a plain setting: Values[key], else the environment variable env
// (when env is not ""), else "".
func (s Settings) Get(key, env string) string {
	if v := s.Values[key]; v != "" {
		return v
	}
	if env != "" {
		return s.env(env)
	}
	return ""
}

func (s Settings) env(name string) string {
	if s.Env != nil {
		return s.Env(name)
	}
	return os.Getenv(name)
}

// Secret returns a credential: the trimmed content of the file named by the
// setting "<key>_file" (or the environment variable "<env>_FILE"), else the
// environment variable env. A secret given as a plain value (Values[key]) is
// refused, so it cannot land in a config file that others read or in shell
// history. The error never contains the secret.
func (s Settings) Secret(key, env string) (string, error) {
	if _, ok := s.Values[key]; ok {
		orEnv := ""
		if env != "" {
			orEnv = " or in $" + env
		}
		return "", fmt.Errorf("%w: %q must not be written in the configuration: put it in a file (%s_file = \"/etc/tlsactl/%s\", mode 0600)%s", ErrConfig, key, key, key, orEnv)
	}
	path := s.Values[key+"_file"]
	if path == "" && env != "" {
		path = s.env(env + "_FILE")
	}
	if path != "" {
		rf := s.ReadFile
		if rf == nil {
			// A secret readable by others is refused, as OpenSSH refuses
			// such a private key: the error says the chmod to run.
			rf = safefile.ReadPrivate
		}
		b, err := rf(path)
		if err != nil {
			return "", fmt.Errorf("%w: reading %s for %s: %v", ErrConfig, path, key, unwrapPath(err))
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%w: %s (for %s) is empty", ErrConfig, path, key)
		}
		return v, nil
	}
	if env != "" {
		if v := s.env(env); v != "" {
			return v, nil
		}
	}
	if env == "" {
		return "", fmt.Errorf("%w: missing %s: set %s_file in the configuration", ErrConfig, key, key)
	}
	return "", fmt.Errorf("%w: missing %s: set %s_file in the configuration, or $%s or $%s_FILE", ErrConfig, key, key, env, env)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Factory builds one kind of provider from settings.
type Factory struct {
	Name string
	// Doc lists the settings and environment variables the provider reads,
	// one per line, for --help and the README.
	Doc string
	New func(Settings) (Provider, error)
}

// Factories returns every registered provider, sorted by name. It builds the
// list on each call: there is no package-level mutable registry.
func Factories() []Factory {
	fs := []Factory{rfc2136Factory()}
	fs = append(fs, hostedFactories()...)
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	return fs
}

// New builds the provider called name from settings.
func New(name string, s Settings) (Provider, error) {
	for _, f := range Factories() {
		if f.Name == name {
			p, err := f.New(s)
			if err != nil {
				return nil, fmt.Errorf("provider %s: %w", name, err)
			}
			return p, nil
		}
	}
	for _, o := range omittedProviders() {
		if o == name {
			return nil, fmt.Errorf("provider %q: %w: built without hosted DNS providers (-tags nohosted); use rfc2136, or a build without -tags nohosted", name, ErrNotBuilt)
		}
	}
	var names []string
	for _, f := range Factories() {
		names = append(names, f.Name)
	}
	return nil, fmt.Errorf("%w %q: known providers are %s", ErrUnknownProvider, name, strings.Join(names, ", "))
}
