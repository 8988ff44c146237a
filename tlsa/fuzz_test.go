package tlsa

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

func fuzzSingleLine(t *testing.T, err error) {
	if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
		t.Fatalf("multi-line error: %q", err)
	}
}

func FuzzParseMaterial(f *testing.F) {
	golden, err := os.ReadFile("testdata/golden/mail.example.nl.crt.pem")
	if err != nil {
		f.Fatal(err)
	}
	p := newPKI(f)
	f.Add(golden)
	f.Add(bytes.ReplaceAll(golden, []byte("\n"), []byte("\r\n")))
	f.Add(golden[:len(golden)/2])
	f.Add(append(golden[:200:200], golden...))
	f.Add(p.leaf.der)
	f.Add(p.inter.cert.RawSubjectPublicKeyInfo)
	f.Add(append(p.leaf.pem(), p.inter.pem()...))
	f.Add([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN TRUSTED CERTIFICATE-----\nMAA=\n-----END TRUSTED CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Add([]byte(" \n"))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := ParseMaterial("fuzz", data)
		if err != nil {
			if ms != nil {
				t.Fatalf("partial result with error %v", err)
			}
			var me *MaterialError
			if !errors.As(err, &me) || !strings.HasPrefix(err.Error(), "fuzz: ") {
				t.Fatalf("error is not a MaterialError naming the source: %v", err)
			}
			if !errors.Is(err, ErrNoMaterial) && !errors.Is(err, ErrEncrypted) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			fuzzSingleLine(t, err)
			return
		}
		if len(ms) == 0 {
			t.Fatal("no material and no error")
		}
		for _, m := range ms {
			if m.Kind < KindCertificate || m.Kind > KindCSR || len(m.SPKI) == 0 {
				t.Fatalf("bad material %+v", m)
			}
			if (m.Certificate != nil) != (m.Kind == KindCertificate) {
				t.Fatalf("Certificate set for kind %v", m.Kind)
			}
			r, err := Compute(m, DANEEE, SelectorSPKI, MatchSHA256)
			if err != nil || len(r.Data) != 32 {
				t.Fatalf("Compute 3 1 1: %v", err)
			}
			_, err = Compute(m, DANEEE, SelectorCert, MatchSHA256)
			if (err == nil) != (m.Kind == KindCertificate) {
				t.Fatalf("Compute 3 0 1 on %v: %v", m.Kind, err)
			}
		}
	})
}

func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"3 1 1 " + d32, "3 1 1 " + strings.ToUpper(d32), "IN TLSA 2 0 1 ab cd", "TLSA 3 1 2 00",
		`\# 35 030101` + d32, `IN TYPE52 \# 4 030101ff`, `\# 3 030101`, "256 1 1 00", "3 1 1 abc", "3 1 1", "",
		"4 2 3 ab", "003 1 1 ab", "3\t1\n1 a b", "\u00a03 1 1 ab",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRecord(s)
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("error does not wrap ErrBadRecord: %v", err)
			}
			fuzzSingleLine(t, err)
			return
		}
		if len(r.Data) == 0 {
			t.Fatalf("empty association data from %q", s)
		}
		back, err := ParseRecord(r.String())
		if err != nil || !back.Equal(r) {
			t.Fatalf("%q -> %v -> %v, %v", s, r, back, err)
		}
		w := r.WireData()
		gen := `\# ` + strconv.Itoa(len(w)) + " " + hex.EncodeToString(w)
		back, err = ParseRecord(gen)
		if err != nil || !back.Equal(r) {
			t.Fatalf("generic %q -> %v, %v", gen, back, err)
		}
	})
}

func FuzzParseRRSet(f *testing.F) {
	for _, s := range []string{
		"3 1 1 " + d32 + "\n2 1 1 " + d32,
		"# c\n; c\n\n3 1 1 " + d32,
		"_25._tcp.a.nl. IN TLSA 3 1 1 " + d32,
		"$ORIGIN a.nl.\n$TTL 60\n_25._tcp IN TLSA ( 3 1 1\n ab ; c\n cd )\n",
		"a.nl. IN A 192.0.2.1",
		"3 1 1 zz", "", "\n\n", `\# 4 03010100`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		recs, err := ParseRRSet(s, "fuzz")
		if err != nil {
			if !errors.Is(err, ErrBadRecord) || !strings.HasPrefix(err.Error(), "fuzz") {
				t.Fatalf("error does not wrap ErrBadRecord and name the source: %v", err)
			}
			fuzzSingleLine(t, err)
			return
		}
		if len(recs) == 0 {
			t.Fatal("no records and no error")
		}
		for _, r := range recs {
			back, err := ParseRecord(r.String())
			if err != nil || !back.Equal(r) {
				t.Fatalf("%v does not round-trip: %v, %v", r, back, err)
			}
		}
	})
}

func FuzzParseZone(f *testing.F) {
	for _, s := range []string{
		"_25._tcp.mail.example.nl. 3600 IN TLSA 3 1 1 " + d32,
		"$ORIGIN example.nl.\n$TTL 60\n_25._tcp.mail IN TLSA ( 3 1 1\n ab ; c\n cd )\nmail IN A 192.0.2.1\n",
		`a.nl. IN TYPE52 \# 35 030101` + d32,
		`a.nl. IN TYPE52 \# 3 030101`,
		"a.nl. IN TLSA 3 1 1 zz", "a.nl. IN TLSA 3 1 1 abc", "( ", "$INCLUDE /etc/passwd\n", "",
	} {
		f.Add(s, "")
		f.Add(s, "example.nl")
	}
	f.Fuzz(func(t *testing.T, s, origin string) {
		rrs, err := ParseZone(s, origin, "fuzz")
		if err != nil {
			if !errors.Is(err, ErrBadRecord) || !strings.HasPrefix(err.Error(), "fuzz") {
				t.Fatalf("error does not wrap ErrBadRecord and name the source: %v", err)
			}
			return
		}
		for _, rr := range rrs {
			if len(rr.Data) == 0 || !rr.HasTTL {
				t.Fatalf("bad RR %+v", rr)
			}
			for _, l := range []string{rr.RFC(), rr.Generic()} {
				back, err := ParseZone(l, "", "again")
				if err != nil || len(back) != 1 || !back[0].Record.Equal(rr.Record) || back[0].TTL != rr.TTL || !strings.EqualFold(back[0].Name, rr.Name) {
					t.Fatalf("%q does not parse back: %+v, %v", l, back, err)
				}
			}
		}
	})
}

func FuzzOwnerName(f *testing.F) {
	for _, s := range [][3]string{
		{"25", "tcp", "mail.example.nl"}, {"*", "udp", "a.nl."}, {"0", "tcp", "a.nl"}, {"65536", "sctp", "a.nl"},
		{"25", "tcp", "mäil.example.nl"}, {"25", "tcp", "a\nb"}, {"+25", "tcp", "a..b"}, {"25", "tcp", "xn--zz.nl"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, port, proto, host string) {
		o, err := OwnerName(port, proto, host)
		if err != nil {
			if !errors.Is(err, ErrBadName) {
				t.Fatalf("error does not wrap ErrBadName: %v", err)
			}
			fuzzSingleLine(t, err)
			return
		}
		if !strings.HasSuffix(o, ".") || !strings.Contains(o, "._"+proto+".") || !(strings.HasPrefix(o, "_") || strings.HasPrefix(o, "*.")) {
			t.Fatalf("OwnerName(%q, %q, %q) = %q", port, proto, host, o)
		}
		if strings.ContainsFunc(o, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			t.Fatalf("owner %q has space, control or non-ASCII characters", o)
		}
		// The owner must be one zone-file token that names exactly this RR.
		rr := RR{Name: o, Record: Record{3, 1, 1, make([]byte, 32)}}
		back, err := ParseZone(rr.RFC(), "", "owner")
		if err != nil || len(back) != 1 || !strings.EqualFold(back[0].Name, o) {
			t.Fatalf("owner %q does not survive a zone file: %+v, %v", o, back, err)
		}
		if h, err := HostName(strings.SplitN(o, ".", 3)[2]); err != nil || !strings.HasSuffix(o, h) {
			t.Fatalf("host part of %q is not a host name: %q, %v", o, h, err)
		}
	})
}
