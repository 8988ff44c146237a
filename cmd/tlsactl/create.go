package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tlsactl/tlsactl/tlsa"
	"github.com/urfave/cli/v2"
)

// Flag names of the create command; hash-slinger's names where it has one.
const (
	flagCreate      = "create"
	flagPort        = "port"
	flagProtocol    = "protocol"
	flagUsage       = "usage"
	flagSelector    = "selector"
	flagMtype       = "mtype"
	flagOutput      = "output"
	flagCertificate = "certificate"
	flagPubkey      = "pubkey"
	flagPrivkey     = "privkey"
	flagCSR         = "csr"
	flagTTL         = "ttl"
	flagAllCAs      = "all-cas"
)

func createCreate() *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "print TLSA records for certificates, keys or CSRs (hash-slinger compatible)",
		ArgsUsage: "HOST",
		Description: `Computes TLSA records and prints them in hash-slinger's format. The NCSC
factsheet commands work unchanged with "python tlsa" replaced by "tlsactl create".
Nothing is read from the network and nothing is changed: create only prints.

POSITIONAL ARGUMENTS:
   HOST   the service host name, e.g. the MX host mail.example.nl; the record
          is printed for _<port>._<protocol>.HOST.

MATERIAL:
   --certificate FILE  a PEM or DER certificate or chain (leaf first); repeat it or use a
                       glob ('certs/*.pem') for one record per file, in order. With usage
                       3 or 1 the first certificate (the leaf) is used; with usage 2 or 0
                       the CA directly above the leaf (the first certificate when the file
                       holds CA certificates only), or every CA with --all-cas.
   --pubkey FILE       a public key (PEM "PUBLIC KEY" or DER).
   --privkey FILE      a private key; only its public key is used, so the record for the
                       NEXT key can be published before its certificate exists.
   --csr FILE          a certificate signing request; gives the same "x 1 x" record as the
                       certificate that will be issued from it.
   Keys and CSRs only have a public key: they need --selector 1.
   "-" reads standard input.

EXIT CODES:
   0   records printed
   2   bad input (missing or malformed file, encrypted key, wrong parameters); nothing printed

EXAMPLES:
   NCSC "2 1 1" record for the issuing CA:
      tlsactl create --port 25 --usage 2 --selector 1 --certificate CA.pem mail.example.nl
   NCSC "3 1 1" record for the server certificate:
      tlsactl create --port 25 --usage 3 --selector 1 --certificate server.pem mail.example.nl
   The next key's record, before any certificate exists (RFC 7671 §8.1):
      tlsactl create --privkey next-key.pem mail.example.nl
   Both text forms with a TTL, for a zone file:
      tlsactl create --output both --ttl 3600 --certificate fullchain.pem mail.example.nl`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: flagCreate, Aliases: []string{"c"}, Usage: "accepted and ignored, for hash-slinger compatibility"},
			&cli.StringFlag{Name: flagPort, Aliases: []string{"p"}, Value: "25", Usage: "service port, or '*' for a wildcard owner name"},
			&cli.StringFlag{Name: flagProtocol, Value: "tcp", Usage: "transport protocol: tcp, udp or sctp"},
			&cli.IntFlag{Name: flagUsage, Aliases: []string{"u"}, Value: 3, Usage: "certificate usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA (the CA), 3 DANE-EE (the server)"},
			&cli.IntFlag{Name: flagSelector, Aliases: []string{"s"}, Value: 1, Usage: "selector: 0 full certificate, 1 SubjectPublicKeyInfo"},
			&cli.IntFlag{Name: flagMtype, Aliases: []string{"m"}, Value: 1, Usage: "matching type: 0 exact, 1 SHA-256, 2 SHA-512"},
			&cli.StringFlag{Name: flagOutput, Aliases: []string{"o"}, Value: "rfc", Usage: "output: rfc (TLSA), generic (RFC 3597 TYPE52), both, or json"},
			&cli.StringSliceFlag{Name: flagCertificate, Usage: "certificate or chain `FILE` (PEM or DER; repeatable; globs allowed)"},
			&cli.StringSliceFlag{Name: flagPubkey, Usage: "public key `FILE` (repeatable)"},
			&cli.StringSliceFlag{Name: flagPrivkey, Usage: "private key `FILE`; only its public key is used (repeatable)"},
			&cli.StringSliceFlag{Name: flagCSR, Usage: "certificate signing request `FILE` (repeatable)"},
			&cli.Int64Flag{Name: flagTTL, Value: -1, Usage: "print this TTL in each line (default: no TTL, as hash-slinger)", DefaultText: "none"},
			&cli.BoolFlag{Name: flagAllCAs, Usage: "with usage 0 or 2: one record for every CA certificate in a chain file"},
		},
		Action: runCreate,
	}
}

// createRequest is the parsed create command line.
type createRequest struct {
	owner    string
	usage    tlsa.Usage
	selector tlsa.Selector
	mtype    tlsa.MatchingType
	format   tlsa.Format
	ttl      int64
	allCAs   bool
}

func runCreate(c *cli.Context) error {
	if c.NArg() != 1 {
		return badInput(fmt.Errorf("create needs exactly one HOST argument, got %d (e.g. tlsactl create --certificate server.pem mail.example.nl)", c.NArg()))
	}
	req, err := parseCreateFlags(c)
	if err != nil {
		return badInput(err)
	}
	certs, err := expandPaths(c.StringSlice(flagCertificate))
	if err != nil {
		return badInput(err)
	}
	sources := []struct {
		paths []string
		kind  tlsa.Kind
	}{
		{certs, tlsa.KindCertificate},
		{c.StringSlice(flagPubkey), tlsa.KindPublicKey},
		{c.StringSlice(flagPrivkey), tlsa.KindPrivateKey},
		{c.StringSlice(flagCSR), tlsa.KindCSR},
	}
	var rrs []tlsa.RR
	n := 0
	for _, src := range sources {
		for _, p := range src.paths {
			n++
			data, err := readInput(p, c.App.Reader)
			if err != nil {
				return badInput(err)
			}
			got, warns, err := recordsFor(p, data, src.kind, req)
			if err != nil {
				return badInput(err)
			}
			for _, w := range warns {
				fmt.Fprintf(c.App.ErrWriter, "tlsactl: warning: %s\n", w)
			}
			rrs = append(rrs, got...)
		}
	}
	if n == 0 {
		return badInput(errors.New("no material: give --certificate, --pubkey, --privkey or --csr (tlsactl never fetches a certificate from the network in create)"))
	}
	// Everything is computed before anything is printed: no partial output.
	return printRecords(c.App.Writer, rrs, req.format)
}

func parseCreateFlags(c *cli.Context) (createRequest, error) {
	var req createRequest
	owner, err := tlsa.OwnerName(c.String(flagPort), c.String(flagProtocol), c.Args().First())
	if err != nil {
		return req, err
	}
	req.owner = owner
	u, err := fieldValue("usage", c.Int(flagUsage), 3)
	if err != nil {
		return req, err
	}
	s, err := fieldValue("selector", c.Int(flagSelector), 1)
	if err != nil {
		return req, err
	}
	m, err := fieldValue("mtype", c.Int(flagMtype), 2)
	if err != nil {
		return req, err
	}
	req.usage, req.selector, req.mtype = tlsa.Usage(u), tlsa.Selector(s), tlsa.MatchingType(m)
	if req.format, err = tlsa.ParseFormat(c.String(flagOutput)); err != nil {
		return req, err
	}
	req.ttl = c.Int64(flagTTL)
	if req.ttl < -1 || req.ttl > 2147483647 {
		return req, fmt.Errorf("--ttl %d: want 0 to 2147483647 seconds (RFC 2181 §8)", req.ttl)
	}
	req.allCAs = c.Bool(flagAllCAs)
	return req, nil
}

// fieldValue range-checks an int flag before narrowing it to a TLSA field.
func fieldValue(name string, v, max int) (uint8, error) {
	if v < 0 || v > max {
		return 0, fmt.Errorf("--%s %d: want a number from 0 to %d", name, v, max)
	}
	return uint8(v), nil
}

// recordsFor turns one file into its records under req. It also returns
// warnings about material that is probably not what the user meant.
func recordsFor(path string, data []byte, kind tlsa.Kind, req createRequest) ([]tlsa.RR, []string, error) {
	ms, err := tlsa.ParseMaterial(path, data)
	if err != nil {
		return nil, nil, err
	}
	var picked []tlsa.Material
	var warns []string
	if kind == tlsa.KindCertificate {
		picked, warns, err = pickCertificates(path, ms, req)
		if err != nil {
			return nil, nil, err
		}
	} else {
		m, err := firstOfKind(path, ms, kind)
		if err != nil {
			return nil, nil, err
		}
		picked = []tlsa.Material{m}
	}
	var out []tlsa.RR
	for _, m := range picked {
		r, err := tlsa.Compute(m, req.usage, req.selector, req.mtype)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		rr := tlsa.RR{Name: req.owner, Record: r}
		if req.ttl >= 0 {
			rr.TTL, rr.HasTTL = uint32(req.ttl), true
		}
		out = append(out, rr)
	}
	return out, warns, nil
}

func firstOfKind(path string, ms []tlsa.Material, kind tlsa.Kind) (tlsa.Material, error) {
	for _, m := range ms {
		if m.Kind == kind {
			return m, nil
		}
	}
	return tlsa.Material{}, fmt.Errorf("%s: no %s found (found %s); pass the file with %s", path, kind, kindsOf(ms), flagForKind(ms[0].Kind))
}

// flagForKind names the create flag that takes material of kind k.
func flagForKind(k tlsa.Kind) string {
	switch k {
	case tlsa.KindPublicKey:
		return "--" + flagPubkey
	case tlsa.KindPrivateKey:
		return "--" + flagPrivkey
	case tlsa.KindCSR:
		return "--" + flagCSR
	}
	return "--" + flagCertificate
}

func kindsOf(ms []tlsa.Material) string {
	seen := map[string]bool{}
	var names []string
	for _, m := range ms {
		if n := m.Kind.String(); !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

// pickCertificates chooses which certificates of a file get a record: the
// leaf for usages 1 and 3; for usages 0 and 2 the CA directly above the leaf
// (or every CA with --all-cas). A file that starts with a CA certificate has
// no leaf, so its first certificate is the CA closest to the leaf.
func pickCertificates(path string, ms []tlsa.Material, req createRequest) ([]tlsa.Material, []string, error) {
	var certs []tlsa.Material
	for _, m := range ms {
		if m.Kind == tlsa.KindCertificate {
			certs = append(certs, m)
		}
	}
	if len(certs) == 0 {
		return nil, nil, fmt.Errorf("%s: no certificate found (found %s); pass it with %s, which needs --selector 1",
			path, kindsOf(ms), flagForKind(ms[0].Kind))
	}
	var warns []string
	if req.usage == tlsa.DANEEE || req.usage == tlsa.PKIXEE {
		leaf := certs[0].Certificate
		if leaf.IsCA {
			warns = append(warns, fmt.Sprintf("%s: usage %d names the server certificate, but the first certificate (%s) is a CA; did you mean --usage 2?", path, req.usage, leaf.Subject))
		}
		return certs[:1], warns, nil
	}
	start := 1
	if certs[0].Certificate.IsCA || len(certs) == 1 {
		start = 0
	}
	if len(certs) == 1 && !certs[0].Certificate.IsCA {
		warns = append(warns, fmt.Sprintf("%s: usage %d names a CA, but %s is not a CA certificate; give the issuing CA (e.g. chain.pem) or use --usage 3", path, req.usage, certs[0].Certificate.Subject))
	}
	if req.allCAs {
		return certs[start:], warns, nil
	}
	return certs[start : start+1], warns, nil
}

// printRecords writes the records in the chosen format; JSON is one array.
func printRecords(w io.Writer, rrs []tlsa.RR, f tlsa.Format) error {
	if f == tlsa.FormatJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rrs)
	}
	var b strings.Builder
	for _, rr := range rrs {
		lines, err := rr.Lines(f)
		if err != nil {
			return err
		}
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// certSummary describes a certificate for JSON output.
type certSummary struct {
	Subject    string   `json:"subject"`
	Issuer     string   `json:"issuer"`
	DNSNames   []string `json:"dns_names,omitempty"`
	IsCA       bool     `json:"is_ca"`
	NotBefore  string   `json:"not_before"`
	NotAfter   string   `json:"not_after"`
	SPKISHA256 string   `json:"spki_sha256"`
}

func summarize(c *x509.Certificate) certSummary {
	r, _ := tlsa.Compute(tlsa.FromCertificate(c), tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	return certSummary{
		Subject: c.Subject.String(), Issuer: c.Issuer.String(), DNSNames: c.DNSNames, IsCA: c.IsCA,
		NotBefore: c.NotBefore.UTC().Format("2006-01-02T15:04:05Z"), NotAfter: c.NotAfter.UTC().Format("2006-01-02T15:04:05Z"),
		SPKISHA256: fmt.Sprintf("%x", r.Data),
	}
}
