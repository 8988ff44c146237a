package tlsa

import (
	"bufio"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// oracle holds association data computed by openssl for one input file,
// indexed by [selector][mtype], as lower-case hex.
type oracle [2][3]string

// certOracle runs openssl on a certificate PEM file.
func certOracle(t *testing.T, dir, crt string) oracle {
	var o oracle
	// selector 0, mtype 0: openssl x509 -in C -outform DER   (hex of the DER bytes)
	o[0][0] = hex.EncodeToString(sh(t, dir, "openssl x509 -in "+crt+" -outform DER"))
	// selector 0, mtype 1: openssl x509 -in C -outform DER | openssl dgst -sha256 -r
	o[0][1] = dgst(t, sh(t, dir, "openssl x509 -in "+crt+" -outform DER | openssl dgst -sha256 -r"))
	// selector 0, mtype 2: openssl x509 -in C -outform DER | openssl dgst -sha512 -r
	o[0][2] = dgst(t, sh(t, dir, "openssl x509 -in "+crt+" -outform DER | openssl dgst -sha512 -r"))
	// selector 1, mtype 0: openssl x509 -in C -noout -pubkey | openssl pkey -pubin -outform DER
	o[1][0] = hex.EncodeToString(sh(t, dir, "openssl x509 -in "+crt+" -noout -pubkey | openssl pkey -pubin -outform DER"))
	// selector 1, mtype 1: openssl x509 -in C -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r
	o[1][1] = dgst(t, sh(t, dir, "openssl x509 -in "+crt+" -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r"))
	// selector 1, mtype 2: openssl x509 -in C -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha512 -r
	o[1][2] = dgst(t, sh(t, dir, "openssl x509 -in "+crt+" -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha512 -r"))
	return o
}

// spkiOracle runs openssl on a private key or CSR; only selector 1 is defined.
func spkiOracle(t *testing.T, dir, pubkeyCmd string) [3]string {
	var o [3]string
	// key: openssl pkey -in K -pubout -outform DER [| openssl dgst -sha256 -r | -sha512 -r]
	// CSR: openssl req -in R -noout -pubkey | openssl pkey -pubin -outform DER [| openssl dgst ...]
	o[0] = hex.EncodeToString(sh(t, dir, pubkeyCmd))
	o[1] = dgst(t, sh(t, dir, pubkeyCmd+" | openssl dgst -sha256 -r"))
	o[2] = dgst(t, sh(t, dir, pubkeyCmd+" | openssl dgst -sha512 -r"))
	return o
}

// TestComputeOpenSSLOracle compares Compute with openssl for every usage,
// selector and matching type, for certificates, private keys and CSRs of
// RSA 2048/4096, ECDSA P-256/P-384 and Ed25519.
func TestComputeOpenSSLOracle(t *testing.T) {
	dir := opensslKit(t)
	for _, k := range osKinds {
		t.Run(k.name, func(t *testing.T) {
			crt, key, csr := k.name+".crt.pem", k.name+".key.pem", k.name+".csr.pem"
			co := certOracle(t, dir, crt)
			ko := spkiOracle(t, dir, "openssl pkey -in "+key+" -pubout -outform DER")
			ro := spkiOracle(t, dir, "openssl req -in "+csr+" -noout -pubkey | openssl pkey -pubin -outform DER")

			read := func(f string) Material {
				b, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				return parseOne(t, f, b)
			}
			cm, km, rm := read(crt), read(key), read(csr)
			for kind, m := range map[Kind]Material{KindCertificate: cm, KindPrivateKey: km, KindCSR: rm} {
				if m.Kind != kind {
					t.Errorf("kind %v, want %v", m.Kind, kind)
				}
			}
			for u := Usage(0); u <= 3; u++ {
				for s := Selector(0); s <= 1; s++ {
					for mt := MatchingType(0); mt <= 2; mt++ {
						r := compute(t, cm, u, s, mt)
						if got := hexOf(r); got != co[s][mt] {
							t.Errorf("cert %d %d %d = %s, openssl %s", u, s, mt, got, co[s][mt])
						}
						if r.Usage != u || r.Selector != s || r.MatchingType != mt {
							t.Errorf("cert %d %d %d: record fields %v", u, s, mt, r)
						}
						for name, m := range map[string]Material{"key": km, "csr": rm} {
							want := ko
							if name == "csr" {
								want = ro
							}
							r, err := Compute(m, u, s, mt)
							if s == SelectorCert {
								if !errors.Is(err, ErrNeedsCertificate) {
									t.Errorf("%s %d %d %d: err %v, want ErrNeedsCertificate", name, u, s, mt, err)
								}
								continue
							}
							if err != nil {
								t.Fatalf("%s %d %d %d: %v", name, u, s, mt, err)
							}
							if got := hexOf(r); got != want[mt] {
								t.Errorf("%s %d %d %d = %s, openssl %s", name, u, s, mt, got, want[mt])
							}
						}
					}
				}
			}
			// The key, the CSR, the self-signed certificate and the
			// certificate a CA issued from the CSR share one SPKI.
			if co[1] != ko || ko != ro {
				t.Errorf("openssl SPKI digests differ between cert, key and CSR")
			}
			im := read(k.name + ".issued.pem")
			if got := hexOf(compute(t, im, 3, 1, 1)); got != ro[1] {
				t.Errorf("issued cert 3 1 1 = %s, CSR 3 1 1 %s", got, ro[1])
			}
		})
	}
}

// TestComputeHashSlingerOracle checks 3 1 1 and 2 0 2 lines against
// hash-slinger's `tlsa --create` for every openssl kind.
func TestComputeHashSlingerOracle(t *testing.T) {
	if _, err := exec.LookPath("tlsa"); err != nil {
		skipOrFail(t, "hash-slinger not installed: apt-get install -y hash-slinger")
	}
	dir := opensslKit(t)
	for _, k := range osKinds {
		t.Run(k.name, func(t *testing.T) {
			crt := k.name + ".crt.pem"
			b, err := os.ReadFile(filepath.Join(dir, crt))
			if err != nil {
				t.Fatal(err)
			}
			m := parseOne(t, crt, b)
			for _, p := range [][3]int{{3, 1, 1}, {2, 0, 2}} {
				// tlsa --create --certificate C --port 25 --usage U --selector S --mtype M --output generic mail.example.nl
				cmd := "tlsa --create --certificate " + crt + " --port 25 --usage " + strconv.Itoa(p[0]) +
					" --selector " + strconv.Itoa(p[1]) + " --mtype " + strconv.Itoa(p[2]) + " --output generic mail.example.nl"
				want := lastRecordLine(t, sh(t, dir, cmd))
				rr := RR{Name: "_25._tcp.mail.example.nl.", Record: compute(t, m, Usage(p[0]), Selector(p[1]), MatchingType(p[2]))}
				if got := rr.Generic(); got != want {
					t.Errorf("%v:\n got %s\nwant %s", p, got, want)
				}
			}
		})
	}
}

func lastRecordLine(t *testing.T, out []byte) string {
	t.Helper()
	var last string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "_") || strings.HasPrefix(l, "*.") {
			last = l
		}
	}
	if last == "" {
		t.Fatalf("no record line in %q", out)
	}
	return last
}

// TestGolden checks the committed certificate against the values recorded in
// testdata/golden/mail.example.nl.tlsa (see the commands in its header).
func TestGolden(t *testing.T) {
	pemData, err := os.ReadFile("testdata/golden/mail.example.nl.crt.pem")
	if err != nil {
		t.Fatal(err)
	}
	m := parseOne(t, "golden", pemData)
	f, err := os.Open("testdata/golden/mail.example.nl.tlsa")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var nsel, nline int
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		kind, rest, _ := strings.Cut(l, " ")
		switch kind {
		case "sel":
			f := strings.Fields(rest)
			s, _ := strconv.Atoi(f[0])
			mt, _ := strconv.Atoi(f[1])
			for u := Usage(0); u <= 3; u++ {
				if got := hexOf(compute(t, m, u, Selector(s), MatchingType(mt))); got != f[2] {
					t.Errorf("%d %d %d = %s, golden %s", u, s, mt, got, f[2])
				}
			}
			nsel++
		case "rfc", "generic":
			f := strings.SplitN(rest, " ", 5)
			n := func(i int) int { v, _ := strconv.Atoi(f[i]); return v }
			owner, err := OwnerName(f[0], "tcp", "mail.example.nl")
			if err != nil {
				t.Fatal(err)
			}
			rr := RR{Name: owner, Record: compute(t, m, Usage(n(1)), Selector(n(2)), MatchingType(n(3)))}
			got := rr.RFC()
			if kind == "generic" {
				got = rr.Generic()
			}
			if got != f[4] {
				t.Errorf("%s %s:\n got %s\nwant %s", kind, strings.Join(f[:4], " "), got, f[4])
			}
			// The hash-slinger line parses back to the same record.
			rrs, err := ParseZone(f[4], "", "golden")
			if err != nil || len(rrs) != 1 || !rrs[0].Record.Equal(rr.Record) || rrs[0].Name != owner {
				t.Errorf("ParseZone(%s) = %v, %v", kind, rrs, err)
			}
			nline++
		default:
			t.Fatalf("bad golden line %q", l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if nsel != 6 || nline != 10 {
		t.Fatalf("golden file has %d sel and %d rfc/generic lines, want 6 and 10", nsel, nline)
	}
}
