package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStateKeys(t *testing.T) {
	tests := []struct {
		name, text string
		want       string // error substring; "" → accepted
		location   string
		local      string
		pg         bool
		lease      time.Duration
	}{
		{name: "default", text: "", location: DefaultStateDir, local: DefaultStateDir, lease: DefaultStateLease},
		{name: "state_dir only", text: "state_dir = \"/srv/t\"\n", location: "/srv/t", local: "/srv/t", lease: DefaultStateLease},
		{name: "state as a path", text: "state = \"/srv/t\"\n", location: "/srv/t", local: "/srv/t", lease: DefaultStateLease},
		{name: "state and state_dir the same", text: "state = \"/srv/t/\"\nstate_dir = \"/srv/t\"\n", location: "/srv/t/", local: "/srv/t/", lease: DefaultStateLease},
		{name: "postgres", text: "state = \"postgres://tlsactl@db.example.nl:5432/tlsactl?sslmode=verify-full&sslrootcert=/etc/tlsactl/db-ca.pem\"\nstate_key_file = \"/etc/tlsactl/state.key\"\nstate_lease = \"10s\"\nrunner = \"mx-runner-1\"\n",
			location: "postgres://tlsactl@db.example.nl:5432/tlsactl?sslmode=verify-full&sslrootcert=/etc/tlsactl/db-ca.pem", local: DefaultStateDir, pg: true, lease: 10 * time.Second},
		{name: "postgres with a local dir", text: "state = \"postgresql://db/tlsactl\"\nstate_dir = \"/var/lib/x\"\nstate_key_file = \"/k\"\n",
			location: "postgresql://db/tlsactl", local: "/var/lib/x", pg: true, lease: DefaultStateLease},
		{name: "two directories", text: "state = \"/a\"\nstate_dir = \"/b\"\n", want: "name two state directories"},
		{name: "postgres without key file", text: "state = \"postgres://tlsactl@db/tlsactl\"\n", want: "state_key_file is not set"},
		{name: "other scheme", text: "state = \"mysql://u:s3cr3t-value@db/x\"\n", want: "want a directory path or a postgres:// URL"},
		{name: "no database", text: "state = \"postgres://u:s3cr3t-value@db\"\nstate_key_file = \"/k\"\n", want: "names no database"},
		{name: "no host", text: "state = \"postgres:///tlsactl\"\nstate_key_file = \"/k\"\n", want: "names no host"},
		{name: "short lease", text: "state_lease = \"200ms\"\n", want: "state_lease 200ms is too short"},
		{name: "bad runner", text: "runner = \"a b\"\n", want: "runner \"a b\""},
		{name: "long runner", text: "runner = \"" + strings.Repeat("r", 49) + "\"\n", want: "at most 48"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.text), "cfg.toml")
			if tc.want != "" {
				if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one containing %q", err, tc.want)
				}
				if strings.Contains(err.Error(), "s3cr3t-value") {
					t.Errorf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.StateLocation(); got != tc.location {
				t.Errorf("StateLocation %q, want %q", got, tc.location)
			}
			if got := c.StateLocal(); got != tc.local {
				t.Errorf("StateLocal %q, want %q", got, tc.local)
			}
			if got := IsPostgresURL(c.StateLocation()); got != tc.pg {
				t.Errorf("IsPostgresURL %v, want %v", got, tc.pg)
			}
			if got := c.Lease(); got != tc.lease {
				t.Errorf("Lease %s, want %s", got, tc.lease)
			}
		})
	}
}

// TestStatePasswordInURL: a password in the state URL is accepted only in a
// configuration file nobody but its owner can read.
func TestStatePasswordInURL(t *testing.T) {
	tests := []struct {
		name string
		url  string
		mode os.FileMode
		ok   bool
	}{
		{"no password, 0644", "postgres://tlsactl@db/tlsactl", 0o644, true},
		{"password, 0600", "postgres://tlsactl:s3cr3t-value@db/tlsactl", 0o600, true},
		{"password, 0640", "postgres://tlsactl:s3cr3t-value@db/tlsactl", 0o640, false},
		{"password, 0644", "postgres://tlsactl:s3cr3t-value@db/tlsactl", 0o644, false},
		{"password parameter, 0604", "postgres://tlsactl@db/tlsactl?password=s3cr3t-value", 0o604, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "tlsactl.toml")
			text := "state = \"" + tc.url + "\"\nstate_key_file = \"/k\"\n"
			if err := os.WriteFile(p, []byte(text), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil { // past the umask
				t.Fatal(err)
			}
			_, err := Load(p)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "use state_password_file") {
				t.Fatalf("error %v, want a refusal naming state_password_file", err)
			}
			if strings.Contains(err.Error(), "s3cr3t-value") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://u@db:5432/x?sslmode=verify-full", "postgres://u@db:5432/x?sslmode=verify-full"},
		{"postgres://u:s3cr3t-value@db/x", "postgres://u:xxxxx@db/x"},
		{"postgres://u@db/x?password=s3cr3t-value", "postgres://u@db/x?password=xxxxx"},
		{"postgres://u:s3cr3t-value@db/x\x7f", "postgres://…"},
	}
	for _, tc := range tests {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestExampleHAConfigLoads(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "examples", "tlsactl-ha.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !IsPostgresURL(c.StateLocation()) || c.StateKeyFile == "" || c.StatePasswordFile == "" || c.Lease() != 30*time.Second ||
		c.Runner != "mx-runner-1" || c.StateLocal() != "/var/lib/tlsactl" || len(c.Hosts) != 2 {
		t.Errorf("HA example: %+v", c)
	}
}
