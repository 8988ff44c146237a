package main

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture is the material shared by the tests in this file.
type fixture struct {
	pki
	encKey  string // encrypted PKCS#8 EC key
	eeHash  string // hex SHA-256 of the leaf's SPKI
	taHash  string // hex SHA-256 of the CA's SPKI
	dataDir string // bad files
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	needOpenSSL(t)
	f := fixture{pki: makePKI(t, keyAlgs[1])}
	f.encKey = filepath.Join(f.dir, "enc.key")
	openssl(t, f.dir, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256", "-pass", "pass:x", "-out", "enc.key")
	f.eeHash = spkiSHA256(t, f.leaf)
	f.taHash = spkiSHA256(t, f.ca)
	f.dataDir = t.TempDir()
	return f
}

// spkiSHA256 computes the 3 1 1 / 2 1 1 data of a PEM certificate file
// independently of the tlsa package.
func spkiSHA256(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(h[:])
}

// write creates name in dir with content and returns its path.
func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadInput(t *testing.T) {
	f := newFixture(t)
	d := f.dataDir
	leafPEM, err := os.ReadFile(f.leaf)
	if err != nil {
		t.Fatal(err)
	}
	empty := write(t, d, "empty.pem", "")
	blank := write(t, d, "blank.pem", " \n\t\r\n  \n")
	truncated := write(t, d, "truncated.pem", string(leafPEM[:len(leafPEM)/2]))
	garbage := write(t, d, "garbage.bin", "\x00\x01\x02\xff\xfe binary junk \x80\x81\x82\x83\x84\x85\x86\x87")
	huge := filepath.Join(d, "huge.pem")
	if err := os.WriteFile(huge, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, 50<<20); err != nil { // sparse: no 50 MB written
		t.Fatal(err)
	}
	dir := filepath.Join(d, "certs.d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(d, "missing.pem")
	brokenRRSet := write(t, d, "broken.rrset", "3 1 1 "+f.eeHash[:10]+"zz"+f.eeHash[12:]+"\n")

	cert := []string{"--certificate", f.leaf}
	cases := []struct {
		name string
		args []string
		want string // stderr must contain this: the file or flag at fault
	}{
		{"empty file", []string{"create", "--certificate", empty, "mail.example.nl"}, empty},
		{"whitespace file", []string{"create", "--certificate", blank, "mail.example.nl"}, blank},
		{"truncated PEM", []string{"create", "--certificate", truncated, "mail.example.nl"}, truncated},
		{"garbage bytes", []string{"create", "--certificate", garbage, "mail.example.nl"}, garbage},
		{"50 MB file", []string{"create", "--certificate", huge, "mail.example.nl"}, huge},
		{"directory", []string{"create", "--certificate", dir, "mail.example.nl"}, dir},
		{"missing file", []string{"create", "--certificate", missing, "mail.example.nl"}, missing},
		{"missing file, HOST first", []string{"create", "mail.example.nl", "--certificate", missing}, missing},
		{"private key with selector 0", []string{"create", "--selector", "0", "--privkey", f.leafKey, "mail.example.nl"}, f.leafKey},
		{"private key as certificate", []string{"create", "--certificate", f.leafKey, "mail.example.nl"}, f.leafKey},
		{"encrypted key", []string{"create", "--privkey", f.encKey, "mail.example.nl"}, f.encKey},
		{"CSR as certificate", []string{"create", "--certificate", f.leafCSR, "mail.example.nl"}, f.leafCSR},
		{"CSR with selector 0", []string{"create", "--selector", "0", "--csr", f.leafCSR, "mail.example.nl"}, f.leafCSR},
		{"usage 7", append([]string{"create", "--usage", "7", "mail.example.nl"}, cert...), "--usage"},
		{"selector 2", append([]string{"create", "--selector", "2", "mail.example.nl"}, cert...), "--selector"},
		{"mtype 9", append([]string{"create", "--mtype", "9", "mail.example.nl"}, cert...), "--mtype"},
		{"negative mtype", append([]string{"create", "--mtype", "-1", "mail.example.nl"}, cert...), "--mtype"},
		{"port 0", append([]string{"create", "--port", "0", "mail.example.nl"}, cert...), "port"},
		{"port 65536", append([]string{"create", "--port", "65536", "mail.example.nl"}, cert...), "port"},
		{"protocol xyz", append([]string{"create", "--protocol", "xyz", "mail.example.nl"}, cert...), "protocol"},
		{"output xml", append([]string{"create", "--output", "xml", "mail.example.nl"}, cert...), "output"},
		{"ttl too large", append([]string{"create", "--ttl", "4294967296", "mail.example.nl"}, cert...), "--ttl"},
		{"no HOST", append([]string{"create"}, cert...), "HOST"},
		{"two HOSTs", append([]string{"create", "mail.example.nl", "mx2.example.nl"}, cert...), "HOST"},
		{"bad HOST", append([]string{"create", "mail example;nl"}, cert...), "host"},
		{"no material", []string{"create", "mail.example.nl"}, "--certificate"},
		{"glob without match", []string{"create", "--certificate", filepath.Join(d, "nothing-*.pem"), "mail.example.nl"}, "nothing-*.pem"},
		{"unknown flag", append([]string{"create", "--bogus", "mail.example.nl"}, cert...), "bogus"},
		{"unknown command", []string{"frobnicate"}, "frobnicate"},
		{"malformed --record", []string{"match", "--chain", f.chain, "--host", "mail.example.nl", "--record", "3 1 1 xyz"}, "--record"},
		{"short --record", []string{"match", "--chain", f.chain, "--host", "mail.example.nl", "--record", "3 1"}, "--record"},
		{"--rrset broken hex", []string{"match", "--chain", f.chain, "--host", "mail.example.nl", "--rrset", brokenRRSet}, brokenRRSet},
		{"--rrset missing", []string{"match", "--chain", f.chain, "--host", "mail.example.nl", "--rrset", missing}, missing},
		{"chain holds only a key", []string{"match", "--chain", f.leafKey, "--host", "mail.example.nl", "--record", "3 1 1 " + f.eeHash}, f.leafKey},
		{"chain empty", []string{"match", "--chain", empty, "--host", "mail.example.nl", "--record", "3 1 1 " + f.eeHash}, empty},
		{"match no records", []string{"match", "--chain", f.chain, "--host", "mail.example.nl"}, "--record"},
		{"match bad --time", []string{"match", "--chain", f.chain, "--host", "mail.example.nl", "--record", "3 1 1 " + f.eeHash, "--time", "tomorrow"}, "--time"},
		{"match positional", []string{"match", "--chain", f.chain, "--host", "mail.example.nl", "--record", "3 1 1 " + f.eeHash, "extra"}, "extra"},
		{"match without --chain/--host", []string{"match", "--record", "3 1 1 " + f.eeHash}, "chain"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runCLI(t, "", c.args...)
			if code != exitBadInput {
				t.Errorf("exit %d, want %d", code, exitBadInput)
			}
			if stdout != "" {
				t.Errorf("stdout not empty: %q", stdout)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") || !strings.HasPrefix(stderr, "tlsactl: ") {
				t.Errorf("stderr is not one \"tlsactl: \" line: %q", stderr)
			}
			if !strings.Contains(stderr, c.want) {
				t.Errorf("stderr %q does not name %q", stderr, c.want)
			}
			for _, bad := range []string{"panic", "goroutine"} {
				if strings.Contains(stderr, bad) {
					t.Errorf("stderr mentions %q: %q", bad, stderr)
				}
			}
		})
	}
}

// TestBadStdin: "-" reads standard input, with the same error rules.
func TestBadStdin(t *testing.T) {
	for _, c := range []struct{ name, stdin string }{
		{"empty", ""},
		{"garbage", "not a certificate at all\n"},
		{"truncated", "-----BEGIN CERTIFICATE-----\nMIIB\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, c.stdin, "create", "--certificate", "-", "mail.example.nl")
			if code != exitBadInput || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "tlsactl: ") {
				t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
		})
	}
}

func TestMatchExitCodes(t *testing.T) {
	f := newFixture(t)
	zero := strings.Repeat("00", 32)
	cases := []struct {
		name     string
		records  []string
		wantCode int
		matched  int
		usable   int
		lines    []string // prefixes of the text output's lines
	}{
		{"3 1 1 matches", []string{"3 1 1 " + f.eeHash}, 0, 1, 1, []string{"MATCH    3 1 1 ", "OK: all 1 usable record(s) match mail.example.nl"}},
		{"2 1 1 matches", []string{"2 1 1 " + f.taHash}, 0, 1, 1, []string{"MATCH    2 1 1 ", "OK: all 1 usable record(s) match mail.example.nl"}},
		{"one of two matches", []string{"3 1 1 " + zero, "2 1 1 " + f.taHash}, 0, 1, 2,
			[]string{"NO-MATCH 3 1 1 ", "MATCH    2 1 1 ", "OK: 1 of 2 usable record(s) match mail.example.nl"}},
		{"upper-case hex matches", []string{"3 1 1 " + strings.ToUpper(f.eeHash)}, 0, 1, 1, []string{"MATCH    3 1 1 ", "OK: "}},
		{"none matches", []string{"3 1 1 " + zero, "2 1 1 " + f.eeHash}, 1, 0, 2,
			[]string{"NO-MATCH 3 1 1 ", "NO-MATCH 2 1 1 ", "FAIL: none of 2 usable record(s) matches mail.example.nl (2 record(s) in all)"}},
		{"only unusable", []string{"1 1 1 " + f.eeHash, "3 1 7 00"}, 1, 0, 0,
			[]string{"UNUSABLE 1 1 1 ", "UNUSABLE 3 1 7 00", "FAIL: none of the 2 record(s) is usable for SMTP: senders then use mandatory TLS without authentication (RFC 7672 §2.2); publish a 3 1 1 and a 2 1 1 for mail.example.nl"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"match", "--chain", f.chain, "--host", "mail.example.nl"}
			for _, r := range c.records {
				args = append(args, "--record", r)
			}
			stdout, stderr, code := runCLI(t, "", args...)
			if code != c.wantCode || stderr != "" {
				t.Fatalf("exit %d (want %d), stderr %q", code, c.wantCode, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			if len(lines) != len(c.lines) {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(c.lines), stdout)
			}
			for i, l := range lines {
				if !strings.HasPrefix(l, c.lines[i]) {
					t.Errorf("line %d = %q, want prefix %q", i+1, l, c.lines[i])
				}
			}

			// The same check as JSON: same exit code, and the fields agree.
			stdout, stderr, code = runCLI(t, "", append(args, "--json")...)
			if code != c.wantCode || stderr != "" {
				t.Fatalf("--json: exit %d (want %d), stderr %q", code, c.wantCode, stderr)
			}
			var got matchJSONOut
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatalf("--json output does not parse: %v\n%s", err, stdout)
			}
			if got.Host != "mail.example.nl." || got.Matched != (c.wantCode == 0) || got.MatchedCount != c.matched || got.UsableCount != c.usable {
				t.Errorf("host %q matched %v matched_count %d usable_count %d; want mail.example.nl. %v %d %d",
					got.Host, got.Matched, got.MatchedCount, got.UsableCount, c.wantCode == 0, c.matched, c.usable)
			}
			if len(got.Chain) != 2 {
				t.Fatalf("chain has %d certificates, want 2", len(got.Chain))
			}
			if got.Chain[0].IsCA || !got.Chain[1].IsCA || got.Chain[0].SPKISHA256 != f.eeHash || got.Chain[1].SPKISHA256 != f.taHash {
				t.Errorf("chain = %+v", got.Chain)
			}
			if got.Chain[0].Subject != "CN=mail.example.nl" || len(got.Chain[0].DNSNames) != 1 || got.Chain[0].DNSNames[0] != "mail.example.nl" {
				t.Errorf("leaf summary = %+v", got.Chain[0])
			}
			if len(got.Verdicts) != len(c.records) {
				t.Fatalf("%d verdicts, want %d", len(got.Verdicts), len(c.records))
			}
			n := 0
			for i, v := range got.Verdicts {
				if !strings.EqualFold(v.Record, c.records[i]) {
					t.Errorf("verdict %d record %q, want %q", i, v.Record, c.records[i])
				}
				if v.Matched {
					n++
					if v.Reason != "matched" || !v.Usable {
						t.Errorf("verdict %d: matched with reason %q usable %v", i, v.Reason, v.Usable)
					}
				} else if v.Reason == "" || v.Reason == "matched" || v.Detail == "" {
					t.Errorf("verdict %d: not matched, reason %q detail %q", i, v.Reason, v.Detail)
				}
			}
			if n != c.matched {
				t.Errorf("%d verdicts matched, want %d", n, c.matched)
			}
		})
	}
}

// matchJSONOut mirrors the documented JSON of match, decoded independently
// of the types that write it.
type matchJSONOut struct {
	Host         string `json:"host"`
	Matched      bool   `json:"matched"`
	MatchedCount int    `json:"matched_count"`
	UsableCount  int    `json:"usable_count"`
	Chain        []struct {
		Subject    string   `json:"subject"`
		Issuer     string   `json:"issuer"`
		DNSNames   []string `json:"dns_names"`
		IsCA       bool     `json:"is_ca"`
		NotBefore  string   `json:"not_before"`
		NotAfter   string   `json:"not_after"`
		SPKISHA256 string   `json:"spki_sha256"`
	} `json:"chain"`
	Verdicts []struct {
		Record  string `json:"record"`
		Usable  bool   `json:"usable"`
		Matched bool   `json:"matched"`
		Reason  string `json:"reason"`
		Detail  string `json:"detail"`
		Depth   int    `json:"depth"`
	} `json:"verdicts"`
}

// TestCreateJSON checks create --output json against independently computed data.
func TestCreateJSON(t *testing.T) {
	f := newFixture(t)
	stdout, stderr, code := runCLI(t, "", "create", "--output", "json", "--ttl", "3600", "--certificate", f.leaf, "--privkey", f.caKey, "mail.example.nl")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var rrs []struct {
		Name         string  `json:"name"`
		TTL          *uint32 `json:"ttl"`
		Usage        int     `json:"usage"`
		Selector     int     `json:"selector"`
		MatchingType int     `json:"matching_type"`
		Data         string  `json:"data"`
		RDATA        string  `json:"rdata"`
		RFC          string  `json:"rfc"`
		Generic      string  `json:"generic"`
	}
	if err := json.Unmarshal([]byte(stdout), &rrs); err != nil {
		t.Fatalf("output does not parse as a JSON array: %v\n%s", err, stdout)
	}
	if len(rrs) != 2 {
		t.Fatalf("%d records, want 2", len(rrs))
	}
	for i, want := range []string{f.eeHash, f.taHash} {
		r := rrs[i]
		if r.Name != "_25._tcp.mail.example.nl." || r.TTL == nil || *r.TTL != 3600 || r.Usage != 3 || r.Selector != 1 || r.MatchingType != 1 || r.Data != want {
			t.Errorf("record %d = %+v", i, r)
		}
		if r.RDATA != "3 1 1 "+want || r.RFC != "_25._tcp.mail.example.nl. 3600 IN TLSA 3 1 1 "+want ||
			r.Generic != `_25._tcp.mail.example.nl. 3600 IN TYPE52 \# 35 030101`+want {
			t.Errorf("record %d text forms = %q / %q / %q", i, r.RDATA, r.RFC, r.Generic)
		}
	}
}
