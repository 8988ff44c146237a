package tlsa

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The differential test: tlsa.Match against OpenSSL's own DANE verifier
// (the code Postfix uses), run as `openssl s_client -dane_tlsa_domain …
// -dane_tlsa_rrdata …` against a Go TLS server on loopback that serves the
// generated chains, one per SNI name. Expected outcomes come from OpenSSL at
// test time; nothing here is hard-coded.

// diffCase is one generated case: a served chain, an RRset and the host name.
type diffCase struct {
	name    string
	served  []*tcert
	rrset   []Record
	host    string
	ordered bool // served leaf first, each certificate followed by its issuer
}

// osslOutcome is what s_client reported for a case.
type osslOutcome struct {
	matched  bool
	unusable bool   // "Failed to import any TLSA records": no usable record
	depth    int    // the depth OpenSSL reports for a match
	bareKey  bool   // matched via a "2 1 0" key that "signed the certificate"
	text     string // the lines that decided, for failure messages
}

// validity is a certificate's validity period relative to fixedNow.
type validity struct {
	name      string
	notBefore time.Duration
	notAfter  time.Duration
}

var (
	periodValid      = validity{"valid", -30 * 24 * time.Hour, 300 * 24 * time.Hour}
	periodExpired    = validity{"expired", -400 * 24 * time.Hour, -24 * time.Hour}
	periodNotYet     = validity{"not-yet-valid", 24 * time.Hour, 400 * 24 * time.Hour}
	periodEndsNow    = validity{"notAfter=now", -30 * 24 * time.Hour, 0}
	periodEndsNext   = validity{"notAfter=now+1s", -30 * 24 * time.Hour, time.Second}
	periodStartsNow  = validity{"notBefore=now", 0, 30 * 24 * time.Hour}
	periodStartsNext = validity{"notBefore=now+1s", time.Second, 30 * 24 * time.Hour}
)

func (v validity) apply(c *x509.Certificate) {
	c.NotBefore, c.NotAfter = fixedNow.Add(v.notBefore), fixedNow.Add(v.notAfter)
}

// diffGen builds certificates and cases. Keys are P-256 unless a spec says
// otherwise.
type diffGen struct {
	t     *testing.T
	cases []diffCase
}

func (g *diffGen) add(c diffCase) { g.cases = append(g.cases, c) }

// ca issues a CA certificate (self-signed when parent is nil).
func (g *diffGen) ca(cn string, parent *tcert, v validity, mods ...func(*x509.Certificate)) *tcert {
	tmpl := caTemplate(cn)
	v.apply(tmpl)
	for _, m := range mods {
		m(tmpl)
	}
	return issue(g.t, tmpl, parent, newKey(g.t))
}

// leaf issues a server certificate with the given CN and DNS names.
func (g *diffGen) leaf(cn string, dns []string, parent *tcert, v validity, mods ...func(*x509.Certificate)) *tcert {
	tmpl := leafTemplate(cn, dns...)
	v.apply(tmpl)
	for _, m := range mods {
		m(tmpl)
	}
	return issue(g.t, tmpl, parent, newKey(g.t))
}

func (g *diffGen) rec(c *tcert, u Usage, s Selector, mt MatchingType) Record {
	return recFor(g.t, c, u, s, mt)
}

// forms is every selector and matching type.
var forms = [][2]uint8{{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}, {1, 2}}

const diffHost = "mx.example.test"

// fewForms are the forms that behave differently for DANE-TA: a full
// certificate (usable when not served), a bare key, a digest.
var fewForms = [][2]uint8{{0, 0}, {1, 0}, {1, 1}}

// chainCases adds, for one chain (full: leaf first, root last) served as
// each of servedAs (index lists into full), a case per DANE-TA record of
// every CA in each of forms; with all, also the records that cannot match
// (DANE-TA of the leaf, DANE-EE of the CAs); with ee, the leaf's DANE-EE
// records.
func (g *diffGen) chainCases(label string, full []*tcert, servedAs [][]int, fs [][2]uint8, all, ee bool) {
	names := []string{"leaf", "int", "root"}
	if len(full) == 4 {
		names = []string{"leaf", "int2", "int1", "root"}
	}
	for si, idx := range servedAs {
		served := make([]*tcert, len(idx))
		for i, k := range idx {
			served[i] = full[k]
		}
		var sn []string
		for _, k := range idx {
			sn = append(sn, names[k])
		}
		for ci, c := range full {
			for _, f := range fs {
				for _, u := range []Usage{DANETA, DANEEE} {
					switch {
					case u == DANETA && ci > 0, all, u == DANEEE && ci == 0 && (ee || si == 0):
					default:
						continue
					}
					g.add(diffCase{
						name:    fmt.Sprintf("%s served[%s] %d %d %d %s", label, strings.Join(sn, ","), u, f[0], f[1], names[ci]),
						served:  served,
						rrset:   []Record{g.rec(c, u, Selector(f[0]), MatchingType(f[1]))},
						host:    diffHost,
						ordered: true,
					})
				}
			}
		}
	}
}

// generate builds every case.
func (g *diffGen) generate() {
	// Root → intermediate → leaf, with each certificate in turn expired or
	// not yet valid; served without the root, with it, and leaf only.
	three := []validity{periodValid, periodExpired, periodNotYet}
	for depth := -1; depth < 3; depth++ {
		for _, bad := range three[1:] {
			if depth == -1 && bad != periodExpired {
				continue
			}
			vs := []validity{periodValid, periodValid, periodValid}
			label := "3-chain all valid"
			if depth >= 0 {
				vs[depth] = bad
				label = fmt.Sprintf("3-chain %s at depth %d", bad.name, depth)
			}
			root := g.ca("Diff Root", nil, vs[2])
			inter := g.ca("Diff Int", root, vs[1])
			leaf := g.leaf(diffHost, []string{diffHost}, inter, vs[0])
			g.chainCases(label, []*tcert{leaf, inter, root}, [][]int{{0, 1}, {0, 1, 2}, {0}}, forms, depth == -1, true)
		}
	}
	// Root → int1 → int2 → leaf, likewise.
	for depth := -1; depth < 4; depth++ {
		for _, bad := range three[1:] {
			if depth == -1 && bad != periodExpired {
				continue
			}
			vs := []validity{periodValid, periodValid, periodValid, periodValid}
			label := "4-chain all valid"
			if depth >= 0 {
				vs[depth] = bad
				label = fmt.Sprintf("4-chain %s at depth %d", bad.name, depth)
			}
			root := g.ca("Diff Root", nil, vs[3])
			i1 := g.ca("Diff Int1", root, vs[2])
			i2 := g.ca("Diff Int2", i1, vs[1])
			leaf := g.leaf(diffHost, []string{diffHost}, i2, vs[0])
			fs := forms
			if depth >= 0 {
				fs = fewForms // the other forms behave as in the 3-chain
			}
			g.chainCases(label, []*tcert{leaf, i2, i1, root}, [][]int{{0, 1, 2}, {0, 1, 2, 3}, {0, 1}}, fs, depth == -1, depth <= 0)
		}
	}
	// Validity boundaries (OpenSSL compares whole seconds; notAfter equal
	// to the time counts as expired).
	for _, b := range []validity{periodEndsNow, periodEndsNext, periodStartsNow, periodStartsNext} {
		for depth := 0; depth < 2; depth++ {
			vs := []validity{periodValid, periodValid, periodValid}
			vs[depth] = b
			root := g.ca("Diff Root", nil, vs[2])
			inter := g.ca("Diff Int", root, vs[1])
			leaf := g.leaf(diffHost, []string{diffHost}, inter, vs[0])
			g.few(fmt.Sprintf("boundary %s at depth %d", b.name, depth), leaf, inter, root)
		}
	}
	g.nameCases()
	g.constraintCases()
	g.algorithmCases()
	g.shapeCases()
	g.mixedCases()
}

// few adds the handful of records that tell the outcome for a variant of
// root → inter → leaf: 2 1 1 of the intermediate and of the root (served
// with and without the root), the root's 2 0 0 and 2 1 0 (not served), and
// the leaf's 3 1 1.
func (g *diffGen) few(label string, leaf, inter, root *tcert) {
	type rr struct {
		what   string
		rec    Record
		served []*tcert
	}
	for _, r := range []rr{
		{"2 1 1 int", g.rec(inter, 2, 1, 1), []*tcert{leaf, inter}},
		{"2 1 1 int, root served", g.rec(inter, 2, 1, 1), []*tcert{leaf, inter, root}},
		{"2 1 1 root served", g.rec(root, 2, 1, 1), []*tcert{leaf, inter, root}},
		{"2 0 0 root not served", g.rec(root, 2, 0, 0), []*tcert{leaf, inter}},
		{"2 1 0 root not served", g.rec(root, 2, 1, 0), []*tcert{leaf, inter}},
		{"2 0 0 int not served", g.rec(inter, 2, 0, 0), []*tcert{leaf}},
		{"3 1 1 leaf", g.rec(leaf, 3, 1, 1), []*tcert{leaf, inter}},
	} {
		g.add(diffCase{name: label + ": " + r.what, served: r.served, rrset: []Record{r.rec}, host: diffHost, ordered: true})
	}
}

// nameCases varies the leaf's names and the reference name.
func (g *diffGen) nameCases() {
	root := g.ca("Names Root", nil, periodValid)
	inter := g.ca("Names Int", root, periodValid)
	leaves := []struct {
		cn  string
		dns []string
	}{
		{"mx.example.test", []string{"mx.example.test"}},
		{"mx.example.test", []string{"*.example.test"}},
		{"other.test", []string{"other.test"}},
		{"x", []string{"other.test", "MX.Example.TEST"}},
		{"x", []string{"*.test"}},
		{"x", []string{"*.*.test"}},
		{"x", []string{"*.mx.example.test"}},
		{"x", []string{"*"}},
		{"x", []string{"-mx.example.test"}},
		{"mx.example.test", nil},
		{"*.example.test", nil},
		{"MX.EXAMPLE.TEST", nil},
		{"", nil},
		{"mx.example.test", []string{"other.test"}},
		{"x", []string{"xn--mx-0ja.example.test", "*.xn--mx-0ja.test"}},
	}
	// No partial wildcards ("m*.example.test"): Postfix sets
	// X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, s_client has no option for it
	// and accepts them; tlsa follows Postfix (TestMatch covers them).
	refs := []string{"mx.example.test", "MX.example.test", "a.mx.example.test", "example.test", "mx.test", "other.test", "xn--mx-0ja.example.test", "a.xn--mx-0ja.test"}
	for _, l := range leaves {
		leaf := g.leaf(l.cn, l.dns, inter, periodValid)
		label := fmt.Sprintf("names CN=%q SAN=%q", l.cn, l.dns)
		for _, ref := range refs {
			g.add(diffCase{name: label + " host " + ref + ": 2 1 1 int", served: []*tcert{leaf, inter}, rrset: []Record{g.rec(inter, 2, 1, 1)}, host: ref, ordered: true})
		}
		g.add(diffCase{name: label + ": 2 0 0 root not served", served: []*tcert{leaf, inter}, rrset: []Record{g.rec(root, 2, 0, 0)}, host: diffHost, ordered: true})
		g.add(diffCase{name: label + ": 3 1 1 leaf, host other.test", served: []*tcert{leaf, inter}, rrset: []Record{g.rec(leaf, 3, 1, 1)}, host: "other.test", ordered: true})
	}
}

// oidUnknownExt is a private-arc extension no verifier understands.
var oidUnknownExt = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}

// constraintCases varies CA constraints, purposes, name constraints and
// critical extensions on root → inter → leaf.
func (g *diffGen) constraintCases() {
	type mod = func(*x509.Certificate)
	notCA := func(c *x509.Certificate) { c.IsCA = false }
	noBC := func(c *x509.Certificate) { c.BasicConstraintsValid, c.IsCA = false, false }
	kuNoSign := func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }
	noKU := func(c *x509.Certificate) { c.KeyUsage = 0 }
	pathLen0 := func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 0, true }
	eku := func(us ...x509.ExtKeyUsage) mod { return func(c *x509.Certificate) { c.ExtKeyUsage = us } }
	ku := func(k x509.KeyUsage) mod { return func(c *x509.Certificate) { c.KeyUsage = k } }
	permit := func(d ...string) mod { return func(c *x509.Certificate) { c.PermittedDNSDomains = d } }
	exclude := func(d ...string) mod { return func(c *x509.Certificate) { c.ExcludedDNSDomains = d } }
	critical := func(c *x509.Certificate) {
		c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: oidUnknownExt, Critical: true, Value: []byte{5, 0}})
	}
	nonCritical := func(c *x509.Certificate) {
		c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: oidUnknownExt, Value: []byte{5, 0}})
	}
	variants := []struct {
		name              string
		root, inter, leaf []mod
		leafCN            string
		leafDNS           []string
	}{
		{name: "int CA:FALSE", inter: []mod{notCA}},
		{name: "int without basic constraints, certSign", inter: []mod{noBC}},
		{name: "int key usage without certSign", inter: []mod{kuNoSign}},
		{name: "int without key usage", inter: []mod{noKU}},
		{name: "root CA:FALSE", root: []mod{notCA}},
		{name: "root without basic constraints", root: []mod{noBC}},
		{name: "root pathlen 0", root: []mod{pathLen0}},
		{name: "int pathlen 0", inter: []mod{pathLen0}},
		{name: "leaf EKU clientAuth", leaf: []mod{eku(x509.ExtKeyUsageClientAuth)}},
		{name: "leaf EKU any", leaf: []mod{eku(x509.ExtKeyUsageAny)}},
		{name: "leaf without EKU", leaf: []mod{eku()}},
		{name: "leaf EKU clientAuth+serverAuth", leaf: []mod{eku(x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth)}},
		{name: "int EKU clientAuth", inter: []mod{eku(x509.ExtKeyUsageClientAuth)}},
		{name: "int EKU serverAuth", inter: []mod{eku(x509.ExtKeyUsageServerAuth)}},
		{name: "root EKU clientAuth", root: []mod{eku(x509.ExtKeyUsageClientAuth)}},
		{name: "leaf KU keyAgreement", leaf: []mod{ku(x509.KeyUsageKeyAgreement)}},
		{name: "leaf KU certSign", leaf: []mod{ku(x509.KeyUsageCertSign)}},
		{name: "leaf without KU", leaf: []mod{ku(0)}},
		{name: "int permits example.test", inter: []mod{permit("example.test")}},
		{name: "int permits .example.test", inter: []mod{permit(".example.test")}},
		{name: "int permits other.test", inter: []mod{permit("other.test")}},
		{name: "int permits ample.test", inter: []mod{permit("ample.test")}},
		{name: "int excludes mx.example.test", inter: []mod{exclude("mx.example.test")}},
		{name: "root permits other.test", root: []mod{permit("other.test")}},
		{name: "int permits other.test, CN-only leaf", inter: []mod{permit("other.test")}, leafCN: diffHost, leafDNS: []string{}},
		{name: "int permits example.test, CN-only leaf", inter: []mod{permit("example.test")}, leafCN: diffHost, leafDNS: []string{}},
		{name: "critical unknown extension on int", inter: []mod{critical}},
		{name: "critical unknown extension on root", root: []mod{critical}},
		{name: "critical unknown extension on leaf", leaf: []mod{critical}},
		{name: "non-critical unknown extension on int", inter: []mod{nonCritical}},
	}
	for _, v := range variants {
		root := g.ca("Cons Root", nil, periodValid, v.root...)
		inter := g.ca("Cons Int", root, periodValid, v.inter...)
		cn, dns := diffHost, []string{diffHost}
		if v.leafCN != "" {
			cn, dns = v.leafCN, v.leafDNS
		}
		leaf := g.leaf(cn, dns, inter, periodValid, v.leaf...)
		g.few(v.name, leaf, inter, root)
	}
	// Root → int1 → int2 → leaf with path lengths.
	for _, v := range []struct {
		name     string
		root, i1 []mod
	}{
		{"4-chain root pathlen 1", []mod{func(c *x509.Certificate) { c.MaxPathLen = 1 }}, nil},
		{"4-chain root pathlen 2", []mod{func(c *x509.Certificate) { c.MaxPathLen = 2 }}, nil},
		{"4-chain int1 pathlen 0", nil, []mod{pathLen0}},
	} {
		root := g.ca("Len Root", nil, periodValid, v.root...)
		i1 := g.ca("Len Int1", root, periodValid, v.i1...)
		i2 := g.ca("Len Int2", i1, periodValid)
		leaf := g.leaf(diffHost, []string{diffHost}, i2, periodValid)
		full := []*tcert{leaf, i2, i1, root}
		for k, c := range full[1:] {
			for _, f := range [][2]uint8{{1, 1}, {0, 0}} {
				g.add(diffCase{name: fmt.Sprintf("%s: 2 %d %d depth %d", v.name, f[0], f[1], k+1), served: full, rrset: []Record{g.rec(c, 2, Selector(f[0]), MatchingType(f[1]))}, host: diffHost, ordered: true})
			}
		}
	}
}

// algorithmCases uses RSA, RSA-PSS, P-384 and Ed25519 keys and signatures.
func (g *diffGen) algorithmCases() {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		g.t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		g.t.Fatal(err)
	}
	_, edk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		g.t.Fatal(err)
	}
	mk := func(tmpl *x509.Certificate, parent *tcert, key crypto.Signer, alg x509.SignatureAlgorithm) *tcert {
		tmpl.SignatureAlgorithm = alg
		return issue(g.t, tmpl, parent, key)
	}
	for _, pss := range []bool{false, true} {
		alg, label := x509.SHA256WithRSA, "RSA root, P-384 int, Ed25519 leaf"
		if pss {
			alg, label = x509.SHA256WithRSAPSS, "RSA-PSS root, P-384 int, Ed25519 leaf"
		}
		root := mk(caTemplate("Alg Root"), nil, rk, alg)
		inter := mk(caTemplate("Alg Int"), root, ek, alg)
		leaf := mk(leafTemplate(diffHost, diffHost), inter, edk, x509.ECDSAWithSHA384)
		g.chainCases(label, []*tcert{leaf, inter, root}, [][]int{{0, 1}, {0, 1, 2}}, forms, false, !pss)
	}
}

// shapeCases covers chains served out of order, with extra or impostor
// certificates, a renewed intermediate and self-signed leaves.
func (g *diffGen) shapeCases() {
	root := g.ca("Shape Root", nil, periodValid)
	inter := g.ca("Shape Int", root, periodValid)
	leaf := g.leaf(diffHost, []string{diffHost}, inter, periodValid)
	other := g.ca("Shape Other", nil, periodValid)
	impostor := g.ca("Shape Int", root, periodValid) // same name, other key
	add := func(name string, ordered bool, served []*tcert, recs ...Record) {
		g.add(diffCase{name: "shape " + name, served: served, rrset: recs, host: diffHost, ordered: ordered})
	}
	for _, f := range [][2]uint8{{1, 1}, {0, 1}, {0, 0}, {1, 0}} {
		s, m := Selector(f[0]), MatchingType(f[1])
		form := fmt.Sprintf("%d %d", s, m)
		add("out of order [leaf root int]: 2 "+form+" int", false, []*tcert{leaf, root, inter}, g.rec(inter, 2, s, m))
		add("out of order [leaf root int]: 2 "+form+" root", false, []*tcert{leaf, root, inter}, g.rec(root, 2, s, m))
		add("extra CA served: 2 "+form+" other", true, []*tcert{leaf, inter, other}, g.rec(other, 2, s, m))
		add("impostor int served: 2 "+form+" impostor", true, []*tcert{leaf, impostor}, g.rec(impostor, 2, s, m))
		add("impostor int served: 2 "+form+" root", true, []*tcert{leaf, impostor, root}, g.rec(root, 2, s, m))
		add("impostor and int served: 2 "+form+" int", false, []*tcert{leaf, impostor, inter}, g.rec(inter, 2, s, m))
		add("root served, int missing: 2 "+form+" root", false, []*tcert{leaf, root}, g.rec(root, 2, s, m))
	}
	// A renewed intermediate: same name and key in three certificates,
	// expired, valid and not yet valid (OpenSSL takes the first issuer valid
	// now, else the one that expires last).
	k := newKey(g.t)
	var ren []*tcert
	for _, v := range []validity{periodExpired, periodValid, periodNotYet} {
		tmpl := caTemplate("Renewed Int")
		v.apply(tmpl)
		ren = append(ren, issue(g.t, tmpl, root, k))
	}
	rleaf := g.leaf(diffHost, []string{diffHost}, ren[1], periodValid)
	renName := []string{"expired", "valid", "not-yet-valid"}
	for _, f := range [][2]uint8{{0, 1}, {1, 1}} {
		s, m := Selector(f[0]), MatchingType(f[1])
		for _, order := range [][]int{{0, 1}, {1, 0}, {0}, {2, 1}, {1, 2}, {2, 0}, {0, 2}, {2}} {
			served := []*tcert{rleaf}
			var names []string
			for _, o := range order {
				served = append(served, ren[o])
				names = append(names, renName[o])
			}
			for ri, r := range ren {
				add(fmt.Sprintf("renewed int served [%s]: 2 %d %d %s", strings.Join(names, ","), s, m, renName[ri]), false, served, g.rec(r, 2, s, m))
			}
		}
	}
	// Digest algorithm agility (RFC 7671 §9): per usage and selector only
	// the strongest digest counts.
	for _, a := range []struct {
		name string
		recs []Record
	}{
		{"2 1 2 other + 2 1 1 int", []Record{g.rec(other, 2, 1, 2), g.rec(inter, 2, 1, 1)}},
		{"2 1 1 int + 2 1 2 int", []Record{g.rec(inter, 2, 1, 1), g.rec(inter, 2, 1, 2)}},
		{"2 1 2 other + 2 0 1 int", []Record{g.rec(other, 2, 1, 2), g.rec(inter, 2, 0, 1)}},
		{"2 1 2 other + 2 1 0 int", []Record{g.rec(other, 2, 1, 2), g.rec(inter, 2, 1, 0)}},
		{"2 1 2 other + 3 1 1 leaf", []Record{g.rec(other, 2, 1, 2), g.rec(leaf, 3, 1, 1)}},
		{"3 1 2 other + 3 1 1 leaf", []Record{g.rec(other, 3, 1, 2), g.rec(leaf, 3, 1, 1)}},
		{"3 0 2 other + 3 1 1 leaf", []Record{g.rec(other, 3, 0, 2), g.rec(leaf, 3, 1, 1)}},
		{"3 1 2 other + 3 1 0 leaf", []Record{g.rec(other, 3, 1, 2), g.rec(leaf, 3, 1, 0)}},
		{"3 1 2 short + 3 1 1 leaf", []Record{{3, 1, 2, g.rec(leaf, 3, 1, 1).Data}, g.rec(leaf, 3, 1, 1)}},
		{"0 1 2 root + 2 1 1 int", []Record{g.rec(root, 0, 1, 2), g.rec(inter, 2, 1, 1)}},
		{"1 1 2 leaf + 3 1 1 leaf", []Record{g.rec(leaf, 1, 1, 2), g.rec(leaf, 3, 1, 1)}},
	} {
		add("agility "+a.name, true, []*tcert{leaf, inter}, a.recs...)
	}
	// RRsets without a usable record (RFC 7672 §2.2), and PKIX usages,
	// which OpenSSL loads but which cannot match without a PKIX trust store
	// (and are unusable for SMTP, RFC 7672 §3.1.3).
	d := g.rec(leaf, 3, 1, 1).Data
	for _, u := range []struct {
		name string
		recs []Record
	}{
		{"3 1 1 of 31 octets", []Record{{3, 1, 1, d[:31]}}},
		{"2 1 0 not a key", []Record{{2, 1, 0, []byte{0x30, 0x00}}}},
		{"2 0 0 not a certificate, 4 1 1", []Record{{2, 0, 0, []byte{0x30, 0x03, 1, 2, 3}}, {4, 1, 1, d}}},
		{"3 2 1, 3 1 3", []Record{{3, 2, 1, d}, {3, 1, 3, d}}},
		{"3 1 0 with trailing data", []Record{{3, 1, 0, append(bytes.Clone(leaf.cert.RawSubjectPublicKeyInfo), 0)}}},
		{"0 1 1 root, 1 1 1 leaf", []Record{g.rec(root, 0, 1, 1), g.rec(leaf, 1, 1, 1)}},
	} {
		add("unusable "+u.name, true, []*tcert{leaf, inter, root}, u.recs...)
	}
	// A leaf whose signature is damaged.
	bad := *leaf
	bad.der = bytes.Clone(leaf.der)
	bad.der[len(bad.der)-3] ^= 0x55
	bc, err := x509.ParseCertificate(bad.der)
	if err != nil {
		g.t.Fatal(err)
	}
	bad.cert = bc
	add("damaged leaf signature: 2 1 1 int", true, []*tcert{&bad, inter}, g.rec(inter, 2, 1, 1))
	add("damaged leaf signature: 3 0 1 leaf", true, []*tcert{&bad, inter}, recFor(g.t, &bad, 3, 0, 1))
	// Self-signed leaves, with a key usage for TLS only and with certSign.
	for _, kus := range []x509.KeyUsage{x509.KeyUsageDigitalSignature, x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign} {
		tmpl := leafTemplate(diffHost, diffHost)
		tmpl.KeyUsage = kus
		self := issue(g.t, tmpl, nil, newKey(g.t))
		for _, f := range forms {
			s, m := Selector(f[0]), MatchingType(f[1])
			add(fmt.Sprintf("self-signed leaf (KU %#x): 2 %d %d self", kus, s, m), true, []*tcert{self}, g.rec(self, 2, s, m))
		}
		add(fmt.Sprintf("self-signed leaf (KU %#x): 3 1 1 self", kus), true, []*tcert{self}, g.rec(self, 3, 1, 1))
	}
}

// mixedCases draws RRsets of one to four records, usable and unusable, for
// a few chains, with a fixed seed (reproducible; the outcomes still come
// from OpenSSL).
func (g *diffGen) mixedCases() {
	rng := mrand.New(mrand.NewPCG(15, 7672))
	root := g.ca("Mixed Root", nil, periodValid)
	inter := g.ca("Mixed Int", root, periodValid)
	expInter := g.ca("Mixed Int Expired", root, periodExpired)
	other := g.ca("Mixed Other", nil, periodValid)
	leaf := g.leaf(diffHost, []string{diffHost}, inter, periodValid)
	expLeaf := g.leaf(diffHost, []string{diffHost}, inter, periodExpired)
	wrongName := g.leaf("other.test", []string{"other.test"}, inter, periodValid)
	underExp := g.leaf(diffHost, []string{diffHost}, expInter, periodValid)
	chains := [][]*tcert{{leaf, inter}, {leaf, inter, root}, {expLeaf, inter}, {wrongName, inter}, {underExp, expInter}, {underExp, expInter, root}, {leaf}}
	for _, ch := range chains {
		var pool []Record
		for _, c := range append(append([]*tcert{}, ch...), root, inter, expInter, other) {
			for _, f := range forms {
				pool = append(pool, g.rec(c, DANETA, Selector(f[0]), MatchingType(f[1])), g.rec(c, DANEEE, Selector(f[0]), MatchingType(f[1])))
			}
		}
		d := g.rec(ch[0], 3, 1, 1).Data
		pool = append(pool,
			Record{3, 1, 1, d[:31]},                      // bad digest length
			Record{2, 1, 2, d},                           // 32 octets for SHA-512
			Record{2, 0, 0, []byte{0x30, 0x03, 1, 2, 3}}, // not a certificate
			Record{2, 1, 0, []byte{0x30, 0x00}},          // not a key
			Record{3, 1, 0, append(bytes.Clone(ch[0].cert.RawSubjectPublicKeyInfo), 0)}, // trailing data
			Record{3, 0, 0, ch[0].der[:len(ch[0].der)-1]},                               // truncated
			Record{4, 1, 1, d}, Record{3, 2, 1, d}, Record{3, 1, 3, d}, Record{255, 1, 1, d},
			g.rec(root, 0, 1, 1), g.rec(ch[0], 1, 1, 1), g.rec(inter, 0, 0, 1),
		)
		for n := 0; n < 16; n++ {
			k := 1 + rng.IntN(4)
			var rs []Record
			var what []string
			for range k {
				r := pool[rng.IntN(len(pool))]
				rs = append(rs, r)
				what = append(what, abbrev(r.String(), 14))
			}
			g.add(diffCase{name: fmt.Sprintf("mixed %s served %d: {%s}", subject(ch[0].cert), len(ch), strings.Join(what, "; ")), served: ch, rrset: rs, host: diffHost, ordered: true})
		}
	}
}

// diffServer serves each distinct chain under its own SNI name.
type diffServer struct {
	addr  string
	names map[string]string // chain key → SNI name
}

func chainKey(served []*tcert) string {
	var b strings.Builder
	for _, c := range served {
		b.Write(c.der)
	}
	return b.String()
}

func startDiffServer(t *testing.T, cases []diffCase) *diffServer {
	t.Helper()
	s := &diffServer{names: map[string]string{}}
	byName := map[string]*tls.Certificate{}
	for _, c := range cases {
		k := chainKey(c.served)
		if _, ok := s.names[k]; ok {
			continue
		}
		name := fmt.Sprintf("c%d.diff.test", len(s.names))
		s.names[k] = name
		tc := &tls.Certificate{PrivateKey: c.served[0].key}
		for _, sc := range c.served {
			tc.Certificate = append(tc.Certificate, sc.der)
		}
		byName[name] = tc
	}
	cfg := &tls.Config{
		GetCertificate: func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c, ok := byName[hi.ServerName]; ok {
				return c, nil
			}
			return nil, fmt.Errorf("no chain for %q", hi.ServerName)
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(30 * time.Second))
				tc := tls.Server(conn, cfg)
				if tc.Handshake() == nil {
					// Wait for the client's close so that it reads the
					// whole handshake before the connection goes.
					var b [256]byte
					for {
						if _, err := tc.Read(b[:]); err != nil {
							break
						}
					}
				}
			}()
		}
	}()
	s.addr = ln.Addr().String()
	return s
}

var (
	daneLine  = regexp.MustCompile(`DANE TLSA \d+ \d+ \d+ \S+ (matched TA certificate|matched EE certificate|signed the certificate) at depth (\d+)`)
	errorLine = regexp.MustCompile(`(?m)^verify error:.*$`)
)

// runOpenSSL runs s_client for one case.
func runOpenSSL(ctx context.Context, s *diffServer, c diffCase) (osslOutcome, error) {
	args := []string{"s_client", "-connect", s.addr, "-servername", s.names[chainKey(c.served)],
		"-dane_tlsa_domain", c.host, "-dane_ee_no_namechecks", "-verify_return_error",
		"-attime", strconv.FormatInt(fixedNow.Unix(), 10),
		"-no-CAfile", "-no-CApath", "-no-CAstore", "-brief"}
	for _, r := range c.rrset {
		args = append(args, "-dane_tlsa_rrdata", r.String())
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", args...)
	out, err := cmd.CombinedOutput()
	text := string(out)
	var o osslOutcome
	switch {
	case strings.Contains(text, "Failed to import any TLSA records"):
		o.unusable, o.text = true, "no usable TLSA record"
	case err == nil && strings.Contains(text, "Verification: OK"):
		o.matched = true
		m := daneLine.FindStringSubmatch(text)
		if m == nil {
			return o, fmt.Errorf("verified without a DANE TLSA line:\n%s", text)
		}
		o.depth, _ = strconv.Atoi(m[2])
		o.bareKey = m[1] == "signed the certificate"
		o.text = m[0]
	case errorLine.MatchString(text):
		o.text = errorLine.FindString(text)
	default:
		return o, fmt.Errorf("%v; output not understood:\n%s", err, text)
	}
	return o, nil
}

// TestDifferentialOpenSSL requires tlsa.Match to agree with OpenSSL's DANE
// verifier on match or no match for every generated case: chains of three
// and four certificates, DANE-TA and DANE-EE records in every selector and
// matching type, trust anchors served or not, certificates expired or not
// yet valid at each depth, validity boundaries, name and wildcard cases, CA
// constraints, purposes, name constraints, critical extensions, several key
// algorithms, odd chain shapes and mixed RRsets with unusable records. Where
// OpenSSL matches a single record it also checks the depth, and where OpenSSL
// finds no usable record, that tlsa finds none either.
func TestDifferentialOpenSSL(t *testing.T) {
	needOpenSSL(t)
	ver, err := exec.Command("openssl", "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	help, _ := exec.Command("openssl", "s_client", "-help").CombinedOutput()
	if !bytes.Contains(help, []byte("-dane_tlsa_rrdata")) {
		skipOrFail(t, fmt.Sprintf("%s: s_client has no DANE options (OpenSSL 1.1.0 or later needed)", bytes.TrimSpace(ver)))
	}
	// Cases where tlsa.Match knowingly decides otherwise than OpenSSL, by
	// case name, with the reason. Keep it empty.
	exceptions := map[string]string{}

	start := time.Now()
	g := &diffGen{t: t}
	g.generate()
	srv := startDiffServer(t, g.cases)
	gen := time.Since(start)

	outs := make([]osslOutcome, len(g.cases))
	errs := make([]error, len(g.cases))
	ctx := t.Context()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4) // two shared cores: s_client and the server share them
	for i := range g.cases {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			outs[i], errs[i] = runOpenSSL(ctx, srv, g.cases[i])
		}()
	}
	wg.Wait()

	var agreed, matched, unusable, excepted int
	for i, c := range g.cases {
		if errs[i] != nil {
			t.Errorf("%s: openssl: %v", c.name, errs[i])
			continue
		}
		o := outs[i]
		res := Match(certs(c.served...), c.rrset, MatchOptions{Names: []string{c.host}, Now: fixedNow})
		var problems []string
		if res.Matched() != o.matched {
			problems = append(problems, fmt.Sprintf("tlsa matched=%v, OpenSSL matched=%v", res.Matched(), o.matched))
		}
		if o.unusable && res.UsableCount() > 0 {
			problems = append(problems, fmt.Sprintf("OpenSSL found no usable record, tlsa %d", res.UsableCount()))
		}
		if o.matched && res.Matched() && len(c.rrset) == 1 && c.ordered {
			want := o.depth
			if o.bareKey {
				want++ // tlsa puts the bare key above the certificate it signed
			}
			if d := res.Verdicts[0].Depth; d != want {
				problems = append(problems, fmt.Sprintf("tlsa depth %d, OpenSSL %q", d, o.text))
			}
		}
		if len(problems) == 0 {
			agreed++
			if o.matched {
				matched++
			}
			if o.unusable {
				unusable++
			}
			continue
		}
		if why, ok := exceptions[c.name]; ok {
			excepted++
			t.Logf("%s: known difference (%s): %s", c.name, why, strings.Join(problems, "; "))
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %s\n  host %s, OpenSSL: %s\n  served:", c.name, strings.Join(problems, "; "), c.host, o.text)
		for k, sc := range c.served {
			fmt.Fprintf(&b, " [%d] %s (issuer %s, %s..%s)", k, subject(sc.cert), issuerName(sc.cert),
				sc.cert.NotBefore.UTC().Format(time.RFC3339), sc.cert.NotAfter.UTC().Format(time.RFC3339))
		}
		for _, v := range res.Verdicts {
			fmt.Fprintf(&b, "\n  tlsa %s: %s: %s", abbrev(v.Record.String(), 20), v.Reason, v.Detail)
		}
		t.Error(b.String())
	}
	t.Logf("%s: %d generated cases (%d chains), %d agreed with OpenSSL (%d matched, %d without a usable record), %d known differences; generation %v, total %v",
		bytes.TrimSpace(ver), len(g.cases), len(srv.names), agreed, matched, unusable, excepted, gen.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if len(g.cases) < 1000 {
		t.Errorf("only %d cases generated", len(g.cases))
	}
}
