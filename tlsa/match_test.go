package tlsa

import (
	"crypto/x509"
	"fmt"
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

	// Trust anchors whose own dates are out: only a self-signed one counts
	// (OpenSSL checks the dates of a self-signed top certificate only).
	expRootTmpl := caTemplate("Expired Root")
	expRootTmpl.NotAfter = fixedNow.AddDate(0, 0, -1)
	expRoot := issue(t, expRootTmpl, nil, newKey(t))
	interOfExpRoot := issue(t, caTemplate("Intermediate of Expired Root"), expRoot, newKey(t))
	leafOfExpRoot := issue(t, leafTemplate("mail.example.nl", "mail.example.nl"), interOfExpRoot, newKey(t))
	notYetInterTmpl := caTemplate("Not Yet Valid Intermediate")
	notYetInterTmpl.NotBefore = fixedNow.AddDate(0, 0, 1)
	notYetInter := issue(t, notYetInterTmpl, p.root, newKey(t))
	leafOfNotYetInter := issue(t, leafTemplate("mail.example.nl", "mail.example.nl"), notYetInter, newKey(t))
	// OpenSSL's second-resolution boundaries: notAfter == now is expired.
	endsNowTmpl := leafTemplate("mail.example.nl", "mail.example.nl")
	endsNowTmpl.NotAfter = fixedNow
	endsNowLeaf := issue(t, endsNowTmpl, p.inter, newKey(t))
	startsNowTmpl := leafTemplate("mail.example.nl", "mail.example.nl")
	startsNowTmpl.NotBefore = fixedNow
	startsNowLeaf := issue(t, startsNowTmpl, p.inter, newKey(t))
	// CA constraints and purposes.
	notCATmpl := caTemplate("Not A CA")
	notCATmpl.IsCA = false
	notCA := issue(t, notCATmpl, p.root, newKey(t))
	leafOfNotCA := issue(t, leafTemplate("mail.example.nl", "mail.example.nl"), notCA, newKey(t))
	len0Tmpl := caTemplate("Path Length 0 Root")
	len0Tmpl.MaxPathLen, len0Tmpl.MaxPathLenZero = 0, true
	len0Root := issue(t, len0Tmpl, nil, newKey(t))
	interOfLen0 := issue(t, caTemplate("Intermediate of Path Length 0"), len0Root, newKey(t))
	leafOfLen0 := issue(t, leafTemplate("mail.example.nl", "mail.example.nl"), interOfLen0, newKey(t))
	clientTmpl := leafTemplate("mail.example.nl", "mail.example.nl")
	clientTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	clientLeaf := issue(t, clientTmpl, p.inter, newKey(t))
	ncTmpl := caTemplate("Constrained Intermediate")
	ncTmpl.PermittedDNSDomains = []string{"example.org"}
	ncInter := issue(t, ncTmpl, p.root, newKey(t))
	leafOfNC := issue(t, leafTemplate("mail.example.nl", "mail.example.nl"), ncInter, newKey(t))
	// Names.
	partialLeaf := issue(t, leafTemplate("partial", "m*.example.nl"), p.inter, newKey(t))
	tldWildLeaf := issue(t, leafTemplate("tld", "*.nl"), p.inter, newKey(t))
	cnWildLeaf := issue(t, leafTemplate("*.example.nl"), p.inter, newKey(t))
	selfLeaf := issue(t, leafTemplate("mail.example.nl", "mail.example.nl"), nil, newKey(t))
	trailing := recFor(t, p.leaf, 3, 1, 0)
	trailing.Data = append(trailing.Data, 0)

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
		{"2 1 0 not a key", served2, garbageKey, host, false, false, ReasonMalformedData, -1},
		{"2 1 1 of the leaf itself", certs(p.leaf), recFor(t, p.leaf, 2, 1, 1), host, true, false, ReasonTANotInChain, -1},
		{"2 1 1 expired leaf", certs(expiredLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, false, ReasonExpired, 1},
		{"2 1 1 not-yet-valid leaf", certs(notYetLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, false, ReasonNotYetValid, 1},
		{"2 1 1 leaf notAfter now", certs(endsNowLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, false, ReasonExpired, 1},
		{"2 1 1 leaf notBefore now", certs(startsNowLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, true, ReasonMatched, 1},
		{"2 1 1 expired intermediate as TA", certs(leafOfExpInter, expInter), recFor(t, expInter, 2, 1, 1), host, true, true, ReasonMatched, 1},
		{"2 0 1 expired intermediate as TA, root served", certs(leafOfExpInter, expInter, p.root), recFor(t, expInter, 2, 0, 1), host, true, true, ReasonMatched, 1},
		{"2 1 1 not-yet-valid intermediate as TA", certs(leafOfNotYetInter, notYetInter), recFor(t, notYetInter, 2, 1, 1), host, true, true, ReasonMatched, 1},
		{"2 1 1 not-yet-valid intermediate below root", certs(leafOfNotYetInter, notYetInter, p.root), recFor(t, p.root, 2, 1, 1), host, true, false, ReasonNotYetValid, 2},
		{"2 1 1 expired self-signed root as TA", certs(leafOfExpRoot, interOfExpRoot, expRoot), recFor(t, expRoot, 2, 1, 1), host, true, false, ReasonExpired, 2},
		{"2 1 1 intermediate below an expired root", certs(leafOfExpRoot, interOfExpRoot, expRoot), recFor(t, interOfExpRoot, 2, 1, 1), host, true, true, ReasonMatched, 1},
		{"2 0 0 expired root not served", certs(leafOfExpRoot, interOfExpRoot), recFor(t, expRoot, 2, 0, 0), host, true, false, ReasonExpired, 2},
		{"2 1 0 expired root key not served", certs(leafOfExpRoot, interOfExpRoot), recFor(t, expRoot, 2, 1, 0), host, true, true, ReasonMatched, 2},
		{"2 1 1 expired intermediate", certs(leafOfExpInter, expInter, p.root), recFor(t, p.root, 2, 1, 1), host, true, false, ReasonExpired, 2},
		{"2 1 1 leaf signed by another CA", certs(foreignLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, false, ReasonChainNotVerified, 1},
		{"2 1 1 root served, intermediate missing", certs(p.leaf, p.root), recFor(t, p.root, 2, 1, 1), host, true, false, ReasonChainNotVerified, 1},
		{"2 1 1 chain served out of order", certs(p.leaf, p.root, p.inter), recFor(t, p.root, 2, 1, 1), host, true, true, ReasonMatched, 1},
		{"2 0 0 root not served", served2, recFor(t, p.root, 2, 0, 0), host, true, true, ReasonMatched, 2},
		{"2 0 0 root not served, leaf alone", certs(rootLeaf), recFor(t, p.root, 2, 0, 0), host, true, true, ReasonMatched, 1},
		{"2 0 0 intermediate not served", certs(p.leaf), recFor(t, p.inter, 2, 0, 0), host, true, true, ReasonMatched, 1},
		{"2 0 0 root not served, wrong name", served2, recFor(t, p.root, 2, 0, 0), []string{"x.example.nl"}, true, false, ReasonNameMismatch, 2},
		{"2 0 0 root not served, expired intermediate", certs(leafOfExpInter, expInter), recFor(t, p.root, 2, 0, 0), host, true, false, ReasonExpired, 2},
		{"2 0 0 unrelated CA not served", served2, recFor(t, other, 2, 0, 0), host, true, false, ReasonTANotInChain, -1},
		{"2 1 2 root not served", served2, recFor(t, p.root, 2, 1, 2), host, true, false, ReasonTANotInChain, -1},
		{"2 0 0 not a certificate", served2, Record{2, 0, 0, []byte{0x30, 0x03, 1, 2, 3}}, host, false, false, ReasonMalformedData, -1},
		{"3 1 0 trailing data", served2, trailing, host, false, false, ReasonMalformedData, -1},
		{"2 1 0 self-signed leaf's own key", certs(selfLeaf), recFor(t, selfLeaf, 2, 1, 0), host, true, true, ReasonMatched, 1},
		{"2 1 1 intermediate CA:FALSE", certs(leafOfNotCA, notCA), recFor(t, notCA, 2, 1, 1), host, true, false, ReasonChainNotVerified, 1},
		{"2 1 1 root over CA:FALSE intermediate", certs(leafOfNotCA, notCA, p.root), recFor(t, p.root, 2, 1, 1), host, true, false, ReasonChainNotVerified, 2},
		{"2 1 1 root with path length 0", certs(leafOfLen0, interOfLen0, len0Root), recFor(t, len0Root, 2, 1, 1), host, true, false, ReasonChainNotVerified, 2},
		{"2 1 1 intermediate under path length 0", certs(leafOfLen0, interOfLen0, len0Root), recFor(t, interOfLen0, 2, 1, 1), host, true, true, ReasonMatched, 1},
		{"2 1 1 leaf for clientAuth only", certs(clientLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, false, ReasonChainNotVerified, 1},
		{"3 1 1 leaf for clientAuth only", certs(clientLeaf, p.inter), recFor(t, clientLeaf, 3, 1, 1), host, true, true, ReasonMatched, 0},
		{"2 1 1 name outside name constraints", certs(leafOfNC, ncInter), recFor(t, ncInter, 2, 1, 1), host, true, false, ReasonChainNotVerified, 1},
		{"2 1 1 partial wildcard", certs(partialLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, false, ReasonNameMismatch, 1},
		{"2 1 1 wildcard over a TLD", certs(tldWildLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), []string{"example.nl"}, true, false, ReasonNameMismatch, 1},
		{"2 1 1 wildcard CN without SAN", certs(cnWildLeaf, p.inter), recFor(t, p.inter, 2, 1, 1), host, true, true, ReasonMatched, 1},

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
			// A trust anchor taken from the record (not served) warns.
			wantWarn := tc.rec.Usage == DANETA && tc.depth > 0 && tc.depth == len(tc.chain)
			if (v.Warning != "") != wantWarn || (wantWarn && !strings.Contains(v.Warning, "RFC 7672 §3.1.2")) {
				t.Errorf("warning %q, want one: %v", v.Warning, wantWarn)
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
		// Digest algorithm agility (RFC 7671 §9): only the strongest digest
		// of a usage and selector counts, matching or not.
		{"2 1 2 unserved + 2 1 1 served", chain, []Record{recFor(t, p.root, 2, 1, 2), ta}, 0, 1, 2, []Reason{ReasonTANotInChain, ReasonWeakerDigest}},
		{"2 1 1 + 2 1 2 same CA", chain, []Record{ta, recFor(t, p.inter, 2, 1, 2)}, 1, 1, 2, []Reason{ReasonWeakerDigest, ReasonMatched}},
		{"2 1 2 unserved + 2 0 1 served", chain, []Record{recFor(t, p.root, 2, 1, 2), recFor(t, p.inter, 2, 0, 1)}, 1, 2, 2, []Reason{ReasonTANotInChain, ReasonMatched}},
		{"3 1 2 next + 3 1 1 current", chain, []Record{recFor(t, next, 3, 1, 2), cur}, 0, 1, 2, []Reason{ReasonDigestDiffers, ReasonWeakerDigest}},
		{"3 1 2 of bad length + 3 1 1", chain, []Record{{3, 1, 2, cur.Data}, cur}, 1, 1, 2, []Reason{ReasonBadDigestLength, ReasonMatched}},
		{"2 1 2 + 3 1 1: other usage", chain, []Record{recFor(t, p.root, 2, 1, 2), cur}, 1, 2, 2, []Reason{ReasonTANotInChain, ReasonMatched}},
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

// TestMatchDetails checks verdict texts: digests shortened just enough to
// tell them apart, with the place where they differ; empty subjects named
// as such; names without a trailing dot; the warning for a trust anchor that
// is not served.
func TestMatchDetails(t *testing.T) {
	p := newPKI(t)
	chain := certs(p.leaf, p.inter)
	opts := MatchOptions{Names: []string{"mail.example.nl."}, Now: fixedNow}
	one := func(chain []*x509.Certificate, r Record, opts MatchOptions) Verdict {
		t.Helper()
		return Match(chain, []Record{r}, opts).Verdicts[0]
	}
	// A 3 1 1 that agrees with the leaf's digest in its first 10 octets.
	near := recFor(t, p.leaf, 3, 1, 1)
	near.Data[10] ^= 0x0f
	leafHex := hexOf(recFor(t, p.leaf, 3, 1, 1))
	v := one(chain, near, opts)
	want := fmt.Sprintf("has SHA2-256(SPKI) %s…, the record has %s… (first difference at hex digit 22)", leafHex[:22], hexOf(near)[:22])
	if !strings.Contains(v.Detail, want) {
		t.Errorf("near digest: %q\nwant it to contain %q", v.Detail, want)
	}
	// A digest that differs at once still shows 8 hex digits.
	far := recFor(t, p.leaf, 3, 1, 1)
	far.Data[0] ^= 0xf0
	if v := one(chain, far, opts); !strings.Contains(v.Detail, leafHex[:8]+"…, the record has "+hexOf(far)[:8]+"… (first difference at hex digit 1)") {
		t.Errorf("far digest: %q", v.Detail)
	}
	// A 2 1 1 close to the served intermediate's digest.
	ta := recFor(t, p.inter, 2, 1, 1)
	ta.Data[15] ^= 0x01
	if v := one(chain, ta, opts); v.Reason != ReasonTANotInChain || !strings.Contains(v.Detail, " "+hexOf(ta)[:32]+"…;") {
		t.Errorf("2 1 1 near the served CA: %s %q", v.Reason, v.Detail)
	}
	// Full values of different lengths say so.
	other := recFor(t, p.inter, 3, 0, 0)
	lens := fmt.Sprintf("; %d octets against %d)", len(other.Data), len(p.leaf.der))
	if v := one(chain, other, opts); (len(other.Data) != len(p.leaf.der)) != strings.HasSuffix(v.Detail, lens) {
		t.Errorf("lengths: %q", v.Detail)
	}
	// Empty subject.
	anon := issue(t, leafTemplate("", "mail.example.nl"), p.inter, newKey(t))
	if v := one(certs(anon, p.inter), recFor(t, p.leaf, 3, 1, 1), opts); !strings.Contains(v.Detail, "leaf ((empty subject))") {
		t.Errorf("empty subject: %q", v.Detail)
	}
	// Names without the trailing dot.
	v = one(chain, recFor(t, p.inter, 2, 1, 1), MatchOptions{Names: []string{"mx.example.org.", "MX.example.com."}, Now: fixedNow})
	if v.Reason != ReasonNameMismatch || !strings.Contains(v.Detail, "do not include mx.example.org or MX.example.com") {
		t.Errorf("names: %q", v.Detail)
	}
	v = one(chain, recFor(t, p.inter, 2, 1, 1), opts)
	if !v.Matched || !strings.HasSuffix(v.Detail, "leaf name mail.example.nl") || v.Warning != "" {
		t.Errorf("matched: %+v", v)
	}
	// 2 0 0 of a TA not served: matched with the RFC 7672 warning.
	v = one(chain, recFor(t, p.root, 2, 0, 0), opts)
	if !v.Matched || v.Depth != 2 || !strings.Contains(v.Warning, "RFC 7672 §3.1.2") || !strings.Contains(v.Detail, "CN=Test Root, not served") {
		t.Errorf("2 0 0 not served: %+v", v)
	}
	// Every detail and warning is one line.
	for _, r := range []Record{near, far, ta, recFor(t, p.root, 2, 1, 0), recFor(t, p.leaf, 2, 1, 1), {2, 0, 0, []byte{1}}} {
		v := one(chain, r, opts)
		if strings.ContainsAny(v.Detail+v.Warning, "\r\n") || strings.Contains(v.Detail, "nl.") {
			t.Errorf("%v: %q %q", r, v.Detail, v.Warning)
		}
	}
}

// TestEqualWildcard checks host name matching against OpenSSL's rules with
// X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS (as Postfix sets it).
func TestEqualWildcard(t *testing.T) {
	for _, tc := range []struct {
		pattern, host string
		want          bool
	}{
		{"mail.example.nl", "mail.example.nl", true},
		{"MAIL.Example.NL", "mail.example.nl", true},
		{"mail.example.nl", "mail.example.nl.", false}, // callers strip the dot
		{"*.example.nl", "mail.example.nl", true},
		{"*.example.nl", "MAIL.EXAMPLE.NL", true},
		{"*.example.nl", "example.nl", false},
		{"*.example.nl", ".example.nl", false},
		{"*.example.nl", "a.mail.example.nl", false},
		{"*.example.nl", "*.example.nl", true}, // a literal star, as OpenSSL
		{"*.example.nl", "xn--bcher-kva.example.nl", true},
		{"*.nl", "example.nl", false},               // two labels after the star needed
		{"*.nl", "*.nl", true},                      // then compared literally
		{"m*.example.nl", "mail.example.nl", false}, // partial wildcards are literal
		{"*l.example.nl", "mail.example.nl", false},
		{"m*l.example.nl", "mail.example.nl", false},
		{"*.*.example.nl", "a.b.example.nl", false},
		{"a.*.example.nl", "a.b.example.nl", false},
		{"xn--*.example.nl", "xn--a.example.nl", false},
		{"*.example-.nl", "a.example-.nl", false},
		{"*.-example.nl", "a.-example.nl", false},
		{"*.example..nl", "a.example..nl", false},
		{"*.example.nl.", "a.example.nl.", false},
		{"*.example.nl", "a_b.example.nl", false},
		{"*.example.nl", "a-b.example.nl", true},
		{"mail.example.nl\x00", "mail.example.nl\x00", false},
		{"", "", true},
	} {
		if got := equalWildcard(tc.pattern, tc.host); got != tc.want {
			t.Errorf("equalWildcard(%q, %q) = %v, want %v", tc.pattern, tc.host, got, tc.want)
		}
	}
}
