package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "examples", "tlsactl.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Provider.Name != "rfc2136" || c.Provider.Settings["server"] != "ns1.example.nl:53" || c.Provider.Settings["tsig_key_file"] == "" {
		t.Errorf("provider %+v", c.Provider)
	}
	h := c.Host("MAIL.example.nl", 25)
	if h == nil || h.Zone != "example.nl." || h.TTL != 3600 {
		t.Errorf("host %+v", h)
	}
	if !h.Deploy.Configured() || h.Deploy.Reload[0] != "postfix" || h.Deploy.ProbeTimeout.Minutes() != 2 || c.Margin.Seconds() != 60 || c.StateDir == "" {
		t.Errorf("deploy/rollover settings %+v %v %q", h.Deploy, c.Margin, c.StateDir)
	}
	if h2 := c.Host("mail2.example.nl.", 0); h2 == nil || h2.Port != 25 || h2.TTL != 3600 || h2.Zone != "" {
		t.Errorf("defaults not applied: %+v", h2)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"syntax", "resolver = \n", "cfg.toml:1"},
		{"unknown key", "resolvr = \"x\"\n", "unknown key(s) resolvr"},
		{"host without name", "[[host]]\nport = 25\n", "has no name"},
		{"bad port", "[[host]]\nname = \"a.example\"\nport = 70000\n", "port 70000"},
		{"not in zone", "[[host]]\nname = \"a.example.nl\"\nzone = \"example.com\"\n", "not in zone"},
		{"duplicate", "[[host]]\nname = \"a.example\"\n[[host]]\nname = \"A.example.\"\n", "listed twice"},
		{"secret inline", "[provider]\nname = \"desec\"\ntoken = \"s3cr3t-value\"\n", "must not be written"},
		{"bearer token inline", "[provider]\nname = \"gandi\"\nbearer_token = \"s3cr3t-value\"\n", "bearer_token must not"},
		{"aws key inline", "[provider]\nname = \"route53\"\naccess_key_id = \"s3cr3t-value\"\n", "access_key_id must not"},
		{"ovh app key inline", "[provider]\nname = \"ovh\"\napplication_key = \"s3cr3t-value\"\n", "application_key must not"},
		{"deploy incomplete", "[[host]]\nname = \"a.example\"\n[host.deploy]\nkey_file = \"/k\"\n", "needs key_file, chain_file and reload"},
		{"bad mode", "[[host]]\nname = \"a.example\"\n[host.deploy]\nkey_file = \"/k\"\nchain_file = \"/c\"\nreload = [\"true\"]\nkey_mode = \"rw\"\n", "not octal"},
		{"bad duration", "margin = \"soon\"\n", "bad duration"},
		{"provider not a table", "provider = \"x\"\n", "[provider]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text), "cfg.toml")
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3t-value") {
				t.Errorf("error leaks the secret: %v", err)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("error %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("resolver = \"127.0.0.1\"\n[provider]\nname = \"rfc2136\"\n[[host]]\nname = \"mail.example.nl\"\n"))
	f.Add([]byte("[[host]]\nname = \"x\"\nport = -1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, "fuzz")
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error does not wrap ErrConfig: %v", err)
			}
			return
		}
		for _, h := range c.Hosts {
			if h.Port < 1 || h.Port > 65535 || h.TTL < 0 || !strings.HasSuffix(h.Name, ".") {
				t.Fatalf("invalid host accepted: %+v", h)
			}
		}
	})
}
