package tlsa

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"
)

func BenchmarkParseMaterialAndCompute(b *testing.B) {
	ec := issue(b, leafTemplate("mail.example.nl", "mail.example.nl"), nil, newKey(b))
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	rs := issue(b, leafTemplate("mail.example.nl", "mail.example.nl"), nil, rk)
	for _, bc := range []struct {
		name string
		pem  []byte
	}{{"ECDSA-P256", ec.pem()}, {"RSA-2048", rs.pem()}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ms, err := ParseMaterial("bench", bc.pem)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Compute(ms[0], DANEEE, SelectorSPKI, MatchSHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMatch(b *testing.B) {
	p := newPKI(b)
	next := issue(b, leafTemplate("mail.example.nl", "mail.example.nl"), p.inter, newKey(b))
	chain := certs(p.leaf, p.inter)
	opts := MatchOptions{Names: []string{"mail.example.nl"}, Now: fixedNow}
	for _, bc := range []struct {
		name  string
		rrset []Record
	}{
		{"3-1-1-current+next", []Record{recFor(b, next, 3, 1, 1), recFor(b, p.leaf, 3, 1, 1)}},
		{"3-1-1+2-1-1", []Record{recFor(b, p.leaf, 3, 1, 1), recFor(b, p.inter, 2, 1, 1)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if res := Match(chain, bc.rrset, opts); res.MatchedCount() == 0 {
					b.Fatal("no match")
				}
			}
		})
	}
}
