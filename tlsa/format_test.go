package tlsa

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// Expected A-labels were checked with Python: "mäil.example.nl".encode("idna").
func TestOwnerName(t *testing.T) {
	tests := []struct {
		port, proto, host string
		want              string // "" means an error
	}{
		{"25", "tcp", "mail.example.nl", "_25._tcp.mail.example.nl."},
		{"25", "tcp", "mail.example.nl.", "_25._tcp.mail.example.nl."},
		{"465", "tcp", "smtp.example.com", "_465._tcp.smtp.example.com."},
		{"443", "udp", "example.org", "_443._udp.example.org."},
		{"5061", "sctp", "sip.example.org", "_5061._sctp.sip.example.org."},
		{"1", "tcp", "a.nl", "_1._tcp.a.nl."},
		{"65535", "tcp", "a.nl", "_65535._tcp.a.nl."},
		{"*", "tcp", "mail.example.nl", "*._tcp.mail.example.nl."},
		{"25", "tcp", "  mail.example.nl  ", "_25._tcp.mail.example.nl."},
		{"25", "tcp", "Mail.Example.NL", "_25._tcp.Mail.Example.NL."}, // ASCII kept as given
		{"25", "tcp", "mäil.example.nl", "_25._tcp.xn--mil-qla.example.nl."},
		{"25", "tcp", "mäil.example.nl.", "_25._tcp.xn--mil-qla.example.nl."},
		{"25", "tcp", "bücher.例え.jp", "_25._tcp.xn--bcher-kva.xn--r8jz45g.jp."},
		{"25", "tcp", "xn--mil-qla.example.nl", "_25._tcp.xn--mil-qla.example.nl."},
		{"25", "tcp", "localhost", "_25._tcp.localhost."},
		// errors
		{"0", "tcp", "a.nl", ""},
		{"65536", "tcp", "a.nl", ""},
		{"-1", "tcp", "a.nl", ""},
		{"", "tcp", "a.nl", ""},
		{"smtp", "tcp", "a.nl", ""},
		{"2 5", "tcp", "a.nl", ""},
		{"**", "tcp", "a.nl", ""},
		{"25", "TCP2", "a.nl", ""},
		{"25", "", "a.nl", ""},
		{"25", "http", "a.nl", ""},
		{"25", "tcp", "", ""},
		{"25", "tcp", "   ", ""},
		{"25", "tcp", ".", ""},
		{"25", "tcp", "a..nl", ""},
		{"25", "tcp", "mail example.nl", ""},
		{"25", "tcp", "mail/example.nl", ""},
		{"25", "tcp", "user@example.nl", ""},
		{"25", "tcp", `a\.b.nl`, ""},
		{"25", "tcp", strings.Repeat("a", 64) + ".nl", ""},
		{"25", "tcp", strings.Repeat("abcdefghi.", 26) + "nl", ""},
		// characters that would break or inject into a zone-file line
		{"25", "tcp", "mail.example.nl\n_25._tcp.evil.nl. IN TLSA 3 1 1 00", ""},
		{"25", "tcp", "mail.example.nl;x", ""},
		{"25", "tcp", "mail(.example.nl", ""},
		{"25", "tcp", "a\x00b.nl", ""},
		{"25", "tcp", `a"b.nl`, ""},
		{"25", "tcp", "ma\u00adil..nl", ""},
	}
	for _, tc := range tests {
		got, err := OwnerName(tc.port, tc.proto, tc.host)
		if tc.want == "" {
			if err == nil || !errors.Is(err, ErrBadName) {
				t.Errorf("OwnerName(%q, %q, %q) = %q, %v; want ErrBadName", tc.port, tc.proto, tc.host, got, err)
			}
			singleLine(t, err)
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("OwnerName(%q, %q, %q) = %q, %v; want %q", tc.port, tc.proto, tc.host, got, err, tc.want)
		}
	}
}

func TestHostName(t *testing.T) {
	for in, want := range map[string]string{"mail.example.nl": "mail.example.nl.", "mäil.example.nl": "xn--mil-qla.example.nl.", "MÄIL.example.nl": "xn--mil-qla.example.nl."} {
		got, err := HostName(in)
		if err != nil || got != want {
			t.Errorf("HostName(%q) = %q, %v; want %q", in, got, err, want)
		}
		if again, err := HostName(got); err != nil || again != got {
			t.Errorf("HostName not idempotent: %q -> %q, %v", got, again, err)
		}
	}
}

var sampleDigest = "4f50702b3babc76a8cbcbf5da0c26ecb9a9fa452b63366ec4f70c68166d3aef8"

func sampleRR(ttl bool) RR {
	d, _ := hex.DecodeString(sampleDigest)
	return RR{Name: "_25._tcp.mail.example.nl.", TTL: 3600, HasTTL: ttl, Record: Record{3, 1, 1, d}}
}

func TestFormats(t *testing.T) {
	rfc := "_25._tcp.mail.example.nl. IN TLSA 3 1 1 " + sampleDigest
	gen := `_25._tcp.mail.example.nl. IN TYPE52 \# 35 030101` + sampleDigest
	rfcTTL := "_25._tcp.mail.example.nl. 3600 IN TLSA 3 1 1 " + sampleDigest
	genTTL := `_25._tcp.mail.example.nl. 3600 IN TYPE52 \# 35 030101` + sampleDigest
	tests := []struct {
		ttl  bool
		f    Format
		want []string
	}{
		{false, FormatRFC, []string{rfc}},
		{false, "", []string{rfc}},
		{false, FormatGeneric, []string{gen}},
		{false, FormatBoth, []string{rfc, gen}},
		{true, FormatRFC, []string{rfcTTL}},
		{true, FormatGeneric, []string{genTTL}},
		{true, FormatBoth, []string{rfcTTL, genTTL}},
	}
	for _, tc := range tests {
		got, err := sampleRR(tc.ttl).Lines(tc.f)
		if err != nil || strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("Lines(%q, ttl=%v) = %q, %v\nwant %q", tc.f, tc.ttl, got, err, tc.want)
		}
	}
	if got := sampleRR(false).RFC(); got != rfc {
		t.Errorf("RFC() = %q", got)
	}
	if got := sampleRR(true).Generic(); got != genTTL {
		t.Errorf("Generic() = %q", got)
	}
	if _, err := sampleRR(false).Lines("yaml"); err == nil {
		t.Error("Lines(yaml): no error")
	}
	// Generic length counts the three field octets: 3 + len(data).
	full := RR{Name: "x.", Record: Record{2, 0, 0, make([]byte, 300)}}
	if g := full.Generic(); !strings.Contains(g, `TYPE52 \# 303 020000`) {
		t.Errorf("Generic of 300-octet data: %q", g[:60])
	}
	// Upper-case input data is printed lower case.
	r, err := ParseRecord("3 1 1 " + strings.ToUpper(sampleDigest))
	if err != nil || (RR{Name: "_25._tcp.mail.example.nl.", Record: r}).RFC() != rfc {
		t.Errorf("upper-case record prints %v, %v", r, err)
	}
}

func TestFormatJSON(t *testing.T) {
	for _, ttl := range []bool{false, true} {
		lines, err := sampleRR(ttl).Lines(FormatJSON)
		if err != nil || len(lines) != 1 || strings.Contains(lines[0], "\n") {
			t.Fatalf("Lines(json) = %q, %v", lines, err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"name": "_25._tcp.mail.example.nl.", "usage": 3.0, "selector": 1.0, "matching_type": 1.0,
			"data": sampleDigest, "rdata": "3 1 1 " + sampleDigest,
			"rfc": sampleRR(ttl).RFC(), "generic": sampleRR(ttl).Generic(),
		}
		if ttl {
			want["ttl"] = 3600.0
		}
		if len(m) != len(want) {
			t.Errorf("ttl=%v: JSON keys %v, want %v", ttl, keys(m), keys(want))
		}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("ttl=%v: JSON %s = %v, want %v", ttl, k, m[k], v)
			}
		}
	}
	// A TTL of zero that is set is still printed.
	rr := sampleRR(true)
	rr.TTL = 0
	b, _ := json.Marshal(rr)
	if !strings.Contains(string(b), `"ttl":0`) {
		t.Errorf("HasTTL with TTL 0: %s", b)
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"rfc": FormatRFC, "RFC": FormatRFC, "generic": FormatGeneric, "Both": FormatBoth, "json": FormatJSON} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "text", "zone"} {
		if _, err := ParseFormat(in); err == nil {
			t.Errorf("ParseFormat(%q): no error", in)
		}
	}
}

func TestMnemonics(t *testing.T) {
	tests := []struct{ got, want string }{
		{PKIXTA.String(), "PKIX-TA"}, {PKIXEE.String(), "PKIX-EE"}, {DANETA.String(), "DANE-TA"}, {DANEEE.String(), "DANE-EE"}, {Usage(9).String(), "9"},
		{SelectorCert.String(), "Cert"}, {SelectorSPKI.String(), "SPKI"}, {Selector(2).String(), "2"},
		{MatchFull.String(), "Full"}, {MatchSHA256.String(), "SHA2-256"}, {MatchSHA512.String(), "SHA2-512"}, {MatchingType(3).String(), "3"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%q, want %q", tc.got, tc.want)
		}
	}
	r := Record{2, 1, 1, []byte{0xAB, 0x01}}
	if r.String() != "2 1 1 ab01" || hex.EncodeToString(r.WireData()) != "020101ab01" {
		t.Errorf("String %q WireData %x", r.String(), r.WireData())
	}
}
