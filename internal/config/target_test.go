package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostTOML is one [[host]] with a deploy section; empty fields are left out.
type hostTOML struct {
	name                  string
	port                  int
	key, chain, cert      string
	reload                string // one argv word per space; "" is "postfix reload"
	keyMode, owner, group string
}

func (h hostTOML) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[[host]]\nname = %q\n", h.name)
	if h.port != 0 {
		fmt.Fprintf(&b, "port = %d\n", h.port)
	}
	if h.key == "" && h.chain == "" {
		return b.String()
	}
	b.WriteString("[host.deploy]\n")
	for _, kv := range [][2]string{{"key_file", h.key}, {"chain_file", h.chain}, {"cert_file", h.cert},
		{"key_mode", h.keyMode}, {"owner", h.owner}, {"group", h.group}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, "%s = %q\n", kv[0], kv[1])
		}
	}
	reload := h.reload
	if reload == "" {
		reload = "postfix reload"
	}
	fmt.Fprintf(&b, "reload = [")
	for i, w := range strings.Fields(reload) {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", w)
	}
	b.WriteString("]\n")
	return b.String()
}

func TestDeployTargets(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, f := range []string{"key.pem", "chain.pem", "key2.pem", "chain2.pem", "cert.pem", "combined.pem"} {
		if err := os.WriteFile(p(f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// live/ is a symbolic link to the directory, link.pem to chain.pem,
	// keylink.pem to key.pem; new.pem exists in neither.
	for link, to := range map[string]string{"live": dir, "link.pem": "chain.pem", "keylink.pem": "key.pem"} {
		if err := os.Symlink(to, p(link)); err != nil {
			t.Fatal(err)
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, p("chain.pem"))
	if err != nil {
		t.Fatal(err)
	}

	mx1 := hostTOML{name: "mx1.example.nl", key: p("key.pem"), chain: p("chain.pem")}
	mx2 := hostTOML{name: "mx2.example.nl", key: p("key.pem"), chain: p("chain.pem")}
	other := hostTOML{name: "mx3.example.nl", key: p("key2.pem"), chain: p("chain2.pem")}
	nodeploy := hostTOML{name: "mx4.example.nl"}
	with := func(h hostTOML, f func(*hostTOML)) hostTOML { f(&h); return h }

	tests := []struct {
		name  string
		hosts []hostTOML
		// want: "" accepts; else the error contains it.
		want string
		// peers: for an accepted configuration, SharedTarget of each host
		// (by name[:port]) as the names it returns.
		peers map[string][]string
	}{
		{name: "shared all", hosts: []hostTOML{mx1, other, mx2, nodeploy},
			peers: map[string][]string{"mx1": {"mx2.example.nl.:25"}, "mx2": {"mx1.example.nl.:25"}, "mx3": nil, "mx4": nil}},
		{name: "shared all with cert_file and combined file", hosts: []hostTOML{
			with(mx1, func(h *hostTOML) { h.key, h.chain, h.cert = p("combined.pem"), p("combined.pem"), p("cert.pem") }),
			with(mx2, func(h *hostTOML) { h.key, h.chain, h.cert = p("combined.pem"), p("combined.pem"), p("cert.pem") }),
		}, peers: map[string][]string{"mx1": {"mx2.example.nl.:25"}}},
		{name: "same host on two ports", hosts: []hostTOML{
			with(mx1, func(h *hostTOML) { h.port = 25 }), with(mx1, func(h *hostTOML) { h.port = 587 }),
		}, peers: map[string][]string{"mx1:25": {"mx1.example.nl.:587"}, "mx1:587": {"mx1.example.nl.:25"}}},
		{name: "separate files", hosts: []hostTOML{mx1, other},
			peers: map[string][]string{"mx1": nil, "mx3": nil}},
		{name: "shared via symlink", hosts: []hostTOML{mx1,
			with(mx2, func(h *hostTOML) { h.key, h.chain = p("keylink.pem"), p("link.pem") })},
			peers: map[string][]string{"mx1": {"mx2.example.nl.:25"}}},
		{name: "shared via relative and unclean paths", hosts: []hostTOML{mx1,
			with(mx2, func(h *hostTOML) { h.key, h.chain = dir+"/./sub/../key.pem", rel })},
			peers: map[string][]string{"mx2": {"mx1.example.nl.:25"}}},

		{name: "shared chain only", hosts: []hostTOML{mx1, with(mx2, func(h *hostTOML) { h.key = p("key2.pem") })},
			want: "[[host]] mx1.example.nl and mx2.example.nl share " + p("chain.pem") + " as chain_file but not key_file: " +
				"hosts that share certificate files must share all of them (one deploy target), or use separate files"},
		{name: "shared key only", hosts: []hostTOML{mx1, with(mx2, func(h *hostTOML) { h.chain = p("chain2.pem") })},
			want: "share " + p("key.pem") + " as key_file but not chain_file: hosts that share"},
		{name: "shared chain via symlink", hosts: []hostTOML{mx1,
			with(mx2, func(h *hostTOML) { h.key, h.chain = p("key2.pem"), p("link.pem") })},
			want: "share " + p("chain.pem") + " (mx2.example.nl: " + p("link.pem") + ", the same file) as chain_file but not key_file"},
		{name: "shared via symlinked directory, file not there yet", hosts: []hostTOML{
			with(mx1, func(h *hostTOML) { h.chain = p("new.pem") }),
			with(mx2, func(h *hostTOML) { h.key, h.chain = p("key2.pem"), filepath.Join(dir, "live", "new.pem") })},
			want: "as chain_file but not key_file"},
		{name: "cert_file on one host only", hosts: []hostTOML{mx1, with(mx2, func(h *hostTOML) { h.cert = p("cert.pem") })},
			want: "as key_file but not cert_file"},
		{name: "file in different roles", hosts: []hostTOML{mx1,
			with(mx2, func(h *hostTOML) { h.key, h.chain = p("key2.pem"), p("key.pem") })},
			want: "share " + p("key.pem") + " as key_file of mx1.example.nl and chain_file of mx2.example.nl: hosts that share"},
		{name: "different reload", hosts: []hostTOML{mx1, with(mx2, func(h *hostTOML) { h.reload = "systemctl reload postfix" })},
			want: "share " + p("key.pem") + " but not the reload command ([\"postfix\" \"reload\"] and [\"systemctl\" \"reload\" \"postfix\"])"},
		{name: "different key mode", hosts: []hostTOML{with(mx1, func(h *hostTOML) { h.keyMode = "600" }),
			with(mx2, func(h *hostTOML) { h.keyMode = "0640" })},
			want: "but not the key_mode (\"600\" and \"0640\")"},
		{name: "default and explicit mode agree", hosts: []hostTOML{mx1, with(mx2, func(h *hostTOML) { h.keyMode = "0600" })},
			peers: map[string][]string{"mx1": {"mx2.example.nl.:25"}}},
		{name: "different owner", hosts: []hostTOML{mx1, with(mx2, func(h *hostTOML) { h.owner = "postfix" })},
			want: "but not the owner and group"},
		{name: "same name, two ports, partial", hosts: []hostTOML{
			with(mx1, func(h *hostTOML) { h.port = 25 }), with(mx1, func(h *hostTOML) { h.port = 587; h.key = p("key2.pem") })},
			want: "[[host]] mx1.example.nl port 25 and mx1.example.nl port 587 share"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var text strings.Builder
			for _, h := range tc.hosts {
				text.WriteString(h.String())
			}
			c, err := Parse([]byte(text.String()), "cfg.toml")
			if tc.want != "" {
				if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v\nwant one containing %q", err, tc.want)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("not one line: %q", err)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, text.String())
			}
			for who, want := range tc.peers {
				hname, port := who, 0
				if i := strings.IndexByte(who, ':'); i >= 0 {
					hname = who[:i]
					fmt.Sscan(who[i+1:], &port)
				}
				h := c.Host(hname+".example.nl", port)
				if h == nil {
					t.Fatalf("no host %s", who)
				}
				var got []string
				for _, o := range c.SharedTarget(h) {
					got = append(got, fmt.Sprintf("%s:%d", o.Name, o.Port))
				}
				if strings.Join(got, " ") != strings.Join(want, " ") {
					t.Errorf("SharedTarget(%s) = %v, want %v", who, got, want)
				}
				// A copy of the host gives the same answer.
				cp := *h
				if n := len(c.SharedTarget(&cp)); n != len(want) {
					t.Errorf("SharedTarget(copy of %s): %d hosts, want %d", who, n, len(want))
				}
			}
		})
	}
}

// TestSharedTargetOrder: peers come in configuration order, and the
// returned pointers are the configuration's hosts.
func TestSharedTargetOrder(t *testing.T) {
	dir := t.TempDir()
	key, chain := filepath.Join(dir, "k.pem"), filepath.Join(dir, "c.pem")
	var text strings.Builder
	for _, n := range []string{"c", "a", "d", "b"} {
		text.WriteString(hostTOML{name: n + ".example.nl", key: key, chain: chain}.String())
	}
	c, err := Parse([]byte(text.String()), "cfg.toml")
	if err != nil {
		t.Fatal(err)
	}
	got := c.SharedTarget(&c.Hosts[2])
	if len(got) != 3 || got[0] != &c.Hosts[0] || got[1] != &c.Hosts[1] || got[2] != &c.Hosts[3] {
		t.Fatalf("got %v", got)
	}
	if c.SharedTarget(nil) != nil {
		t.Error("SharedTarget(nil) not empty")
	}
}
