package tlsa

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

const d32 = "4f50702b3babc76a8cbcbf5da0c26ecb9a9fa452b63366ec4f70c68166d3aef8"

func TestParseRecord(t *testing.T) {
	want := Record{3, 1, 1, mustHex(d32)}
	tests := []struct {
		in   string
		want Record
	}{
		{"3 1 1 " + d32, want},
		{"3 1 1 " + strings.ToUpper(d32), want},
		{"3 1 1 " + strings.ToUpper(d32[:20]) + d32[20:], want},
		{"3 1 1 " + d32[:16] + " " + d32[16:32] + "\t" + d32[32:48] + "\n" + d32[48:], want},
		{"  3\t1  1   " + d32 + "  ", want},
		{"IN TLSA 3 1 1 " + d32, want},
		{"in tlsa 3 1 1 " + d32, want},
		{"TLSA 3 1 1 " + d32, want},
		{"IN TYPE52 3 1 1 " + d32, want},
		{`\# 35 030101` + d32, want},
		{`\# 35 030101` + strings.ToUpper(d32[:10]) + " " + d32[10:], want},
		{`IN TYPE52 \# 35 030101` + d32, want},
		{`TYPE52 \# 35 030101` + d32, want},
		{"003 01 001 " + d32, want},
		{"2 0 0 00", Record{2, 0, 0, []byte{0}}},
		// Undefined values parse: they are unusable, not malformed.
		{"4 2 3 ab", Record{4, 2, 3, []byte{0xab}}},
		{"255 255 255 ab", Record{255, 255, 255, []byte{0xab}}},
		{"3 1 1 abcd", Record{3, 1, 1, []byte{0xab, 0xcd}}},
		{`\# 4 ff0203ab`, Record{255, 2, 3, []byte{0xab}}},
	}
	for _, tc := range tests {
		got, err := ParseRecord(tc.in)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseRecord(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseRecordErrors(t *testing.T) {
	tests := []struct{ in, mention string }{
		{"", "want"},
		{"   ", "want"},
		{"3 1 1", "want"},
		{"IN TLSA", "want"},
		{"256 1 1 " + d32, "usage"},
		{"3 256 1 " + d32, "selector"},
		{"3 1 256 " + d32, "matching type"},
		{"-1 1 1 " + d32, "usage"},
		{"+3 1 1 " + d32, "usage"},
		{"x 1 1 " + d32, "usage"},
		{"0x3 1 1 " + d32, "usage"},
		{"3 1 1 " + d32[1:], "odd"},
		{"3 1 1 abc", "odd"},
		{"3 1 1 zz", "not hexadecimal"},
		{"3 1 1 0xab", "not hexadecimal"},
		{"3 1 1 ab;;cd", "not hexadecimal"},
		{`\# 34 030101` + d32, "35"},
		{`\# 36 030101` + d32, "35"},
		{`\# 35`, "generic"},
		{`\#`, "generic"},
		{`\# x 030101`, "not a number"},
		{`\# 3 030101`, "at least 4"},
		{`\# 0 `, "generic"},
		{`\# 4 0301010`, "odd"},
		{`\# 70000 03`, "not a number"},
		{"_25._tcp.mail.example.nl. IN TLSA 3 1 1 " + d32, ""},
		{"3 1 1 " + d32 + " ; comment", "not hexadecimal"},
	}
	for _, tc := range tests {
		r, err := ParseRecord(tc.in)
		if !errors.Is(err, ErrBadRecord) {
			t.Errorf("ParseRecord(%q) = %v, %v; want ErrBadRecord", tc.in, r, err)
			continue
		}
		singleLine(t, err)
		if !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("ParseRecord(%q): %q does not mention %q", tc.in, err, tc.mention)
		}
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestParseRRSet(t *testing.T) {
	a := Record{3, 1, 1, mustHex(d32)}
	b := Record{2, 1, 1, mustHex(strings.Repeat("ab", 32))}
	tests := []struct {
		name, in string
		want     []Record
	}{
		{"one bare", "3 1 1 " + d32, []Record{a}},
		{"bare with comments", "# current\n3 1 1 " + d32 + "\n\n; next\r\n  2 1 1 " + strings.Repeat("AB", 32) + "\r\n", []Record{a, b}},
		{"bare, later line with IN TLSA", "3 1 1 " + d32 + "\nIN TLSA 2 1 1 " + strings.Repeat("ab", 32), []Record{a, b}},
		{"bare generic second line", "3 1 1 " + d32 + "\n" + `\# 35 020101` + strings.Repeat("ab", 32), []Record{a, b}},
		{"zone", "_25._tcp.mail.example.nl. 3600 IN TLSA 3 1 1 " + d32 + "\n_25._tcp.mail.example.nl. 3600 IN TLSA 2 1 1 " + strings.Repeat("ab", 32) + "\n", []Record{a, b}},
		{"zone with comments first", "; rrset\n$TTL 300\n_25._tcp.mail.example.nl. IN TLSA 3 1 1 " + d32 + "\n", []Record{a}},
		{"zone mixed types", "mail.example.nl. IN A 192.0.2.1\n_25._tcp.mail.example.nl. IN TLSA ( 3 1 1\n " + d32[:32] + "\n " + d32[32:] + " )\n", []Record{a}},
	}
	for _, tc := range tests {
		got, err := ParseRRSet(tc.in, "in.txt")
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("%s: ParseRRSet = %v, %v", tc.name, got, err)
			continue
		}
		for i := range got {
			if !got[i].Equal(tc.want[i]) {
				t.Errorf("%s: record %d = %v, want %v", tc.name, i, got[i], tc.want[i])
			}
		}
	}
}

func TestParseRRSetErrors(t *testing.T) {
	tests := []struct{ name, in, mention string }{
		{"empty", "", "in.txt: "},
		{"only comments", "# nothing\n; here\n\n", "no TLSA record"},
		{"bad line 3", "3 1 1 " + d32 + "\n# c\n3 1 1 zz\n", "in.txt:3:"},
		{"bad line 1", "3 1 256 " + d32 + "\n", "in.txt:1:"},
		{"odd hex line 2", "3 1 1 " + d32 + "\n2 1 1 abc\n", "in.txt:2:"},
		{"zone without TLSA", "mail.example.nl. IN A 192.0.2.1\n", "no TLSA record"},
		{"zone bad hex", "_25._tcp.x.nl. IN TLSA 3 1 1 " + d32 + "\n_25._tcp.x.nl. IN TLSA 3 1 1 xyz\n", "in.txt"},
		{"zone garbage", "this is not a zone\n", "in.txt"},
	}
	for _, tc := range tests {
		got, err := ParseRRSet(tc.in, "in.txt")
		if !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: ParseRRSet = %v, %v; want ErrBadRecord", tc.name, got, err)
			continue
		}
		singleLine(t, err)
		if !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s: %q does not mention %q", tc.name, err, tc.mention)
		}
	}
}

func TestParseZone(t *testing.T) {
	zone := `$ORIGIN example.nl.
$TTL 600
; a comment line
@            IN SOA ns1 hostmaster 1 7200 3600 1209600 300
             IN NS  ns1
mail         IN A   192.0.2.25
             IN MX  10 mail
_25._tcp.mail IN TLSA 3 1 1 ` + strings.ToUpper(d32) + ` ; current key
_25._tcp.mail 300 IN TLSA ( 2 1 1
        ` + strings.Repeat("ab", 16) + ` ; first half
        ` + strings.Repeat("AB", 16) + ` )
_25._tcp.mail.example.nl. IN TYPE52 \# 35 030101` + d32 + `
$ORIGIN other.nl.
_465._tcp.smtp TLSA 3 0 2 ` + strings.Repeat("cd", 64) + `
_25._tcp.rel  IN TLSA 3 1 1 ` + d32 + `
`
	got, err := ParseZone(zone, "", "db.example.nl")
	if err != nil {
		t.Fatal(err)
	}
	want := []RR{
		{Name: "_25._tcp.mail.example.nl.", TTL: 600, HasTTL: true, Record: Record{3, 1, 1, mustHex(d32)}},
		{Name: "_25._tcp.mail.example.nl.", TTL: 300, HasTTL: true, Record: Record{2, 1, 1, mustHex(strings.Repeat("ab", 32))}},
		{Name: "_25._tcp.mail.example.nl.", TTL: 600, HasTTL: true, Record: Record{3, 1, 1, mustHex(d32)}},
		{Name: "_465._tcp.smtp.other.nl.", TTL: 600, HasTTL: true, Record: Record{3, 0, 2, mustHex(strings.Repeat("cd", 64))}},
		{Name: "_25._tcp.rel.other.nl.", TTL: 600, HasTTL: true, Record: Record{3, 1, 1, mustHex(d32)}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records: %v", len(got), got)
	}
	for i := range want {
		if got[i].Name != want[i].Name || got[i].TTL != want[i].TTL || !got[i].HasTTL || !got[i].Record.Equal(want[i].Record) {
			t.Errorf("record %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	// origin argument qualifies relative names; default TTL is 3600.
	got, err = ParseZone("_25._tcp.mail IN TLSA 3 1 1 "+d32, "example.nl", "x")
	if err != nil || len(got) != 1 || got[0].Name != "_25._tcp.mail.example.nl." || got[0].TTL != 3600 {
		t.Errorf("relative with origin: %+v, %v", got, err)
	}
	// No TLSA: empty, no error.
	got, err = ParseZone("mail.example.nl. IN A 192.0.2.1\n", "", "x")
	if err != nil || len(got) != 0 {
		t.Errorf("no TLSA: %v, %v", got, err)
	}
	// Output lines parse back.
	for _, rr := range want {
		for _, l := range []string{rr.RFC(), rr.Generic()} {
			back, err := ParseZone(l, "", "x")
			if err != nil || len(back) != 1 || back[0].Name != rr.Name || back[0].TTL != rr.TTL || !back[0].Record.Equal(rr.Record) {
				t.Errorf("round trip of %q: %+v, %v", l, back, err)
			}
		}
	}
}

func TestParseZoneErrors(t *testing.T) {
	tests := []struct{ name, in, mention string }{
		{"bad hex", "_25._tcp.x.nl. IN TLSA 3 1 1 zz\n", "_25._tcp.x.nl."},
		{"odd hex", "_25._tcp.x.nl. IN TLSA 3 1 1 abc\n", "odd"},
		{"usage 256", "a.nl. 1 IN TLSA 256 1 1 " + d32 + "\n", "line"},
		{"generic wrong length", "a.nl. IN TYPE52 \\# 36 030101" + d32 + "\n", "line"},
		{"generic too short", "a.nl. IN TYPE52 \\# 3 030101\n", "a.nl."},
		{"unbalanced paren", "a.nl. IN TLSA ( 3 1 1 " + d32 + "\n", "zone.txt"},
		{"error on line 3", "; c\na.nl. IN A 192.0.2.1\nb.nl. IN TLSA 3 x 1 00\n", "3"},
		{"missing data", "a.nl. IN TLSA 3 1 1\n", "zone.txt"},
	}
	for _, tc := range tests {
		got, err := ParseZone(tc.in, "", "zone.txt")
		if !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: ParseZone = %v, %v; want ErrBadRecord", tc.name, got, err)
			continue
		}
		singleLine(t, err)
		if !strings.HasPrefix(err.Error(), "zone.txt") || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s: %q does not name the source and %q", tc.name, err, tc.mention)
		}
	}
}
