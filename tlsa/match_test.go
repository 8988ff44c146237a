package tlsa

import (
	"crypto/x509"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	p := newPKI(t)
	other := issue(t, caTemplate("Other CA"), nil, newKey(t))

	expiredTmpl := leafTemplate("mail.example.nl", "mail.example.nl")
	expiredTmpl.NotBefore, expiredTmpl.NotAfter = fixedNow.AddDate(-1, 0, 0), fixedNow.AddDate(0, 0, -1)
	expiredLeaf := issue(t, expiredTmpl, p.inter, newKey(t))
	notYetTmpl := leafTemplate("mail.example.nl", "mail.example.nl")
	notYetTmpl.NotBefore = fixedNow.AddDate(0, 0, 1)
	notYetLeaf := issue(t, notYetTmpl, p.inter, newKey(t))
	wildLeaf := issue(t, leafTemplate("wild", "*.example.nl"), p.inter, newKey(t))
	cnOnlyLeaf := issue(t, leafTemplate("mail.example.nl"), p.inter, newKey(t))
	foreignLeaf := issue(t, leafTemplate("mail.example.nl", "mail.example.nl"), other, newKey(t))
	rootLeaf := issue(t, leafTemplate("mail.example.nl", "mail.example.nl"), p.root, newKey(t))
	expInterTmpl := caTemplate("Expired Intermediate")
	expInterTmpl.NotAfter = fixedNow.AddDate(0, 0, -1)
	expInter := issue(t, expInterTmpl, p.root, newKey(t))
	leafOfExpInter := issue(t, leafTemplate("mail.example.nl", "mail.example.nl"), expInter, newKey(t))

	served2 := certs(p.leaf, p.inter)
	served3 := certs(p.leaf, p.inter, p.root)
	host := []string{"mail.example.nl"}

	upper, err := ParseRecord("2 1 1 " + strings.ToUpper(hexOf(recFor(t, p.inter, 2, 1, 1))))
	if err != nil {
		t.Fatal(err)
	}
	short := recFor(t, p.leaf, 3, 1, 1)
	short.Data = short.Data[:31]
	long512 := recFor(t, p.leaf, 3, 1, 2)
	long512.Data = append(long512.Data, 0)
	otherKey := recFor(t, other, 2, 1, 0)
	garbageKey := Record{2, 1, 0, []byte{0x30, 0x00}}

	tests := []struct {
		name    string
		chain   []*x509.Certificate
		rec     Record
		names   []string
		usable  bool
		matched bool
		reason  Reason
		depth   int
	}{
		// DANE-EE
		{"3 1 1 leaf", served2, recFor(t, p.leaf, 3, 1, 1), host, true, true, ReasonMatched, 0},
		{"3 0 1 leaf", served2, recFor(t, p.leaf, 3, 0, 1), host, true, true, ReasonMatched, 0},
		{"3 1 2 leaf", served2, recFor(t, p.leaf, 3, 1, 2), host, true, true, ReasonMatched, 0},
		{"3 0 0 leaf", served2, recFor(t, p.leaf, 3, 0, 0), host, true, true, ReasonMatched, 0},
		{"3 1 1 expired leaf", certs(expiredLeaf, p.inter), recFor(t, expiredLeaf, 3, 1, 1), host, true, true, ReasonMatched, 0},
		{"3 1 1 not-yet-valid leaf", certs(notYetLeaf), recFor(t, notYetLeaf, 3, 1, 1), host, true, true, ReasonMatched, 0},
		{"3 1 1 name mismatch", served2, recFor(t, p.leaf, 3, 1, 1), []string{"other.example.org"}, true, true, ReasonMatched, 0},
		{"3 1 1 no names", served2, recFor(t, p.leaf, 3, 1, 1), nil, true, true, ReasonMatched, 0},
		{"3 1 1 leaf signed by unknown CA", certs(foreignLeaf), recFor(t, foreignLeaf, 3, 1, 1), host, true, true, ReasonMatched, 0},
		{"3 1 1 of the intermediate", served2, recFor(t, p.inter, 3, 1, 1), host, true, false, ReasonDigestDiffers, -1},
		{"3 1 1 other key", served2, recFor(t, other, 3, 1, 1), host, true, false, ReasonDigestDiffers, -1},
		{"upper-case parsed 3 1 1", served2, mustParse(t, "3 1 1 "+strings.ToUpper(hexOf(recFor(t, p.leaf, 3, 1, 1)))), host, true, true, ReasonMatched, 0},

		// DANE-TA
		{"2 1 1 intermediate served", served2, recFor(t, p.inter, 2, 1, 1), host, true, true, ReasonMatched, 1},
		{"2 0 1 intermediate", served2, recFor(t, p.inter, 2, 0, 1), host, true, true, ReasonMatched, 1},
		{"2 1 2 intermediate", served2, recFor(t, p.inter, 2, 1, 2), host, true, true, ReasonMatched, 1},
		{"2 0 2 intermediate", served2, recFor(t, p.inter, 2, 0, 2), host, true, true, ReasonMatched, 1},
		{"2 0 0 intermediate", served2, recFor(t, p.inter, 2, 0, 0), host, true, true, ReasonMatched, 1},
		{"2 1 0 intermediate", served2, recFor(t, p.inter, 2, 1, 0), host, true, true, ReasonMatched, 1},
		{"upper-case parsed 2 1 1", served2, upper, host, true, true, ReasonMatched, 1},
		{"2 1 1 second name matches", served2, recFor(t, p.inter, 2, 1, 1), []string{"mx.example.com", "MAIL.example.nl."}, true, true, ReasonMatched, 1},
		{"2 1 1 wrong name", served2, recFor(t, p.inter, 2, 1, 1), []string{"other.example.nl"}, true, false, ReasonNameMismatch, 1},
		{"2 1 1 no names", served2, recFor(t, p.inter, 2, 1, 1), nil, true, false, ReasonNameMismatch, 1},
		{"2 1 1 wildcard SAN", certs(wildLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, true, ReasonMatched, 1},
		{"2 1 1 wildcard one label only", certs(wildLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), []string{"a.mail.example.nl"}, true, false, ReasonNameMismatch, 1},
		{"2 1 1 wildcard not the apex", certs(wildLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), []string{"example.nl"}, true, false, ReasonNameMismatch, 1},
		{"2 1 1 CN fallback without SAN", certs(cnOnlyLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, true, ReasonMatched, 1},
		{"2 1 1 CN fallback wrong name", certs(cnOnlyLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), []string{"x.example.nl"}, true, false, ReasonNameMismatch, 1},
		{"2 1 1 CA absent from chain", served2, recFor(t, other, 2, 1, 1), host, true, false, ReasonTANotInChain, -1},
		{"2 1 1 root not served", served2, recFor(t, p.root, 2, 1, 1), host, true, false, ReasonTANotInChain, -1},
		{"2 0 1 root not served", served2, recFor(t, p.root, 2, 0, 1), host, true, false, ReasonTANotInChain, -1},
		{"2 1 1 root served", served3, recFor(t, p.root, 2, 1, 1), host, true, true, ReasonMatched, 2},
		{"2 1 0 root not served: bare key", served2, recFor(t, p.root, 2, 1, 0), host, true, true, ReasonMatched, 2},
		{"2 1 0 root key, leaf alone", certs(rootLeaf), recFor(t, p.root, 2, 1, 0), host, true, true, ReasonMatched, 1},
		{"2 1 0 root key, wrong name", served2, recFor(t, p.root, 2, 1, 0), []string{"x.example.nl"}, true, false, ReasonNameMismatch, 2},
		{"2 1 0 root key, expired intermediate", certs(leafOfExpInter, expInter), recFor(t, p.root, 2, 1, 0), host, true, false, ReasonExpired, 2},
		{"2 1 0 unrelated key", served2, otherKey, host, true, false, ReasonTANotInChain, -1},
		{"2 1 0 not a key", served2, garbageKey, host, true, false, ReasonTANotInChain, -1},
		{"2 1 1 of the leaf itself", certs(p.leaf), recFor(t, p.leaf, 2, 1, 1), host, true, false, ReasonTANotInChain, -1},
		{"2 1 1 expired leaf", certs(expiredLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, false, ReasonExpired, 1},
		{"2 1 1 not-yet-valid leaf", certs(notYetLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, false, ReasonExpired, 1},
		{"2 1 1 expired intermediate", certs(leafOfExpInter, expInter, p.root), recFor(t, p.root, 2, 1, 1), host, true, false, ReasonExpired, 2},
		{"2 1 1 leaf signed by another CA", certs(foreignLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, false, ReasonChainNotVerified, 1},
		{"2 1 1 root served, intermediate missing", certs(p.leaf, p.root), recFor(t, p.root, 2, 1, 1), host, true, false, ReasonChainNotVerified, 1},

		// Unusable records
		{"0 1 1", served3, recFor(t, p.root, 0, 1, 1), host, false, false, ReasonUsageUnusable, -1},
		{"1 1 1", served2, recFor(t, p.leaf, 1, 1, 1), host, false, false, ReasonUsageUnusable, -1},
		{"4 1 1", served2, withUsage(recFor(t, p.leaf, 3, 1, 1), 4), host, false, false, ReasonUnknownUsage, -1},
		{"3 2 1", served2, Record{3, 2, 1, recFor(t, p.leaf, 3, 1, 1).Data}, host, false, false, ReasonUnknownSelector, -1},
		{"3 1 3", served2, Record{3, 1, 3, recFor(t, p.leaf, 3, 1, 1).Data}, host, false, false, ReasonUnknownMatchingType, -1},
		{"2 1 3", served2, Record{2, 1, 3, recFor(t, p.inter, 2, 1, 1).Data}, host, false, false, ReasonUnknownMatchingType, -1},
		{"3 1 1 31 octets", served2, short, host, false, false, ReasonBadDigestLength, -1},
		{"3 1 2 65 octets", served2, long512, host, false, false, ReasonBadDigestLength, -1},
		{"2 1 1 64 octets", served2, Record{2, 1, 1, recFor(t, p.inter, 2, 1, 2).Data}, host, false, false, ReasonBadDigestLength, -1},

		// No chain
		{"3 1 1 empty chain", nil, recFor(t, p.leaf, 3, 1, 1), host, true, false, ReasonNoChain, -1},
		{"2 1 0 empty chain", []*x509.Certificate{}, recFor(t, p.root, 2, 1, 0), host, true, false, ReasonNoChain, -1},
		{"1 1 1 empty chain", nil, recFor(t, p.leaf, 1, 1, 1), host, false, false, ReasonUsageUnusable, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Match(tc.chain, []Record{tc.rec}, MatchOptions{Names: tc.names, Now: fixedNow})
			if len(res.Verdicts) != 1 {
				t.Fatalf("%d verdicts", len(res.Verdicts))
			}
			v := res.Verdicts[0]
			if v.Usable != tc.usable || v.Matched != tc.matched || v.Reason != tc.reason || v.Depth != tc.depth {
				t.Errorf("got usable=%v matched=%v reason=%s depth=%d; want %v %v %s %d (%s)",
					v.Usable, v.Matched, v.Reason, v.Depth, tc.usable, tc.matched, tc.reason, tc.depth, v.Detail)
			}
			if !v.Record.Equal(tc.rec) {
				t.Errorf("verdict record %v, want %v", v.Record, tc.rec)
			}
			if v.Detail == "" || strings.ContainsAny(v.Detail, "\r\n") {
				t.Errorf("detail %q: want one non-empty line", v.Detail)
			}
			if v.Matched && !v.Usable {
				t.Error("matched but not usable")
			}
			if res.Matched() != tc.matched {
				t.Errorf("Result.Matched() = %v", res.Matched())
			}
		})
	}
}

func mustParse(t *testing.T, s string) Record {
	t.Helper()
	r, err := ParseRecord(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func withUsage(r Record, u Usage) Record {
	r.Usage = u
	return r
}

func TestMatchRRSet(t *testing.T) {
	p := newPKI(t)
	next := issue(t, leafTemplate("mail.example.nl", "mail.example.nl"), p.inter, newKey(t)) // the key of the next rollover
	chain := certs(p.leaf, p.inter)
	opts := MatchOptions{Names: []string{"mail.example.nl"}, Now: fixedNow}
	cur, nxt := recFor(t, p.leaf, 3, 1, 1), recFor(t, next, 3, 1, 1)
	ta := recFor(t, p.inter, 2, 1, 1)
	pkix := recFor(t, p.root, 0, 1, 1)
	bad := Record{3, 1, 1, []byte{1, 2, 3}}

	tests := []struct {
		name                   string
		chain                  []*x509.Certificate
		rrset                  []Record
		matched, usable, count int
		reasons                []Reason
	}{
		{"current+next, current served", chain, []Record{cur, nxt}, 1, 2, 2, []Reason{ReasonMatched, ReasonDigestDiffers}},
		{"next+current, current served", chain, []Record{nxt, cur}, 1, 2, 2, []Reason{ReasonDigestDiffers, ReasonMatched}},
		{"current+next, next served", certs(next, p.inter), []Record{cur, nxt}, 1, 2, 2, []Reason{ReasonDigestDiffers, ReasonMatched}},
		{"3 1 1 + 2 1 1 both match", chain, []Record{cur, ta}, 2, 2, 2, []Reason{ReasonMatched, ReasonMatched}},
		{"only next published", chain, []Record{nxt}, 0, 1, 1, []Reason{ReasonDigestDiffers}},
		{"unusable + bad length", chain, []Record{pkix, bad}, 0, 0, 2, []Reason{ReasonUsageUnusable, ReasonBadDigestLength}},
		{"unusable + match", chain, []Record{pkix, cur}, 1, 1, 2, []Reason{ReasonUsageUnusable, ReasonMatched}},
		{"empty rrset", chain, nil, 0, 0, 0, nil},
		{"no chain", nil, []Record{cur, pkix}, 0, 1, 2, []Reason{ReasonNoChain, ReasonUsageUnusable}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Match(tc.chain, tc.rrset, opts)
			if res.MatchedCount() != tc.matched || res.UsableCount() != tc.usable || len(res.Verdicts) != tc.count {
				t.Errorf("matched %d usable %d verdicts %d; want %d %d %d", res.MatchedCount(), res.UsableCount(), len(res.Verdicts), tc.matched, tc.usable, tc.count)
			}
			if res.Matched() != (tc.matched > 0) {
				t.Errorf("Matched() = %v", res.Matched())
			}
			for i, want := range tc.reasons {
				if res.Verdicts[i].Reason != want || !res.Verdicts[i].Record.Equal(tc.rrset[i]) {
					t.Errorf("verdict %d: %s for %v, want %s", i, res.Verdicts[i].Reason, res.Verdicts[i].Record, want)
				}
			}
		})
	}
}

// TestMatchOpenSSLChain matches a chain built by openssl (the kit's CA signed
// each CSR) under DANE-EE and DANE-TA.
func TestMatchOpenSSLChain(t *testing.T) {
	for _, k := range []string{"rsa2048", "p384", "ed25519"} {
		leaf := parseOne(t, k, readKit(t, k+".issued.pem"))
		ca := parseOne(t, "ca", readKit(t, "ca.crt.pem"))
		chain := []*x509.Certificate{leaf.Certificate, ca.Certificate}
		rrset := []Record{compute(t, leaf, 3, 1, 1), compute(t, ca, 2, 1, 1), compute(t, ca, 2, 0, 2)}
		// openssl x509 -req without extensions gives a v1 leaf with no SAN: the CN is checked.
		res := Match(chain, rrset, MatchOptions{Names: []string{"mail.example.nl"}})
		if res.MatchedCount() != 3 {
			for _, v := range res.Verdicts {
				t.Logf("%v: %s %s", v.Record, v.Reason, v.Detail)
			}
			t.Errorf("%s: matched %d of 3", k, res.MatchedCount())
		}
	}
}
