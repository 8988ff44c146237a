package tlsa

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// ParseZone reads TLSA records from zone-file text: full lines with owner,
// optional TTL and class ("_25._tcp.mail.example.nl. 3600 IN TLSA 3 1 1 …"),
// parentheses, comments, $ORIGIN and $TTL, and RFC 3597 TYPE52 lines. Records
// of other types are ignored. origin (may be "") qualifies relative names;
// source names the input in errors. An input with no TLSA record yields an
// empty slice and no error.
func ParseZone(text, origin, source string) ([]RR, error) {
	if origin != "" {
		origin = dns.Fqdn(origin)
	}
	zp := dns.NewZoneParser(strings.NewReader(text), origin, source)
	zp.SetDefaultTTL(3600)
	var out []RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		t, isTLSA := rr.(*dns.TLSA)
		if !isTLSA {
			continue
		}
		data, err := decodeHex(t.Certificate)
		if err != nil {
			return nil, fmt.Errorf("%s: %w at %s: association data: %v", source, ErrBadRecord, t.Hdr.Name, err)
		}
		out = append(out, RR{
			Name: t.Hdr.Name, TTL: t.Hdr.Ttl, HasTTL: true,
			Record: Record{Usage(t.Usage), Selector(t.Selector), MatchingType(t.MatchingType), data},
		})
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", source, ErrBadRecord, err)
	}
	return out, nil
}

// ParseRRSet reads a TLSA RRset from text that is either one bare record per
// line ("3 1 1 abcd…", '#' or ';' comments and blank lines allowed) or a
// zone-file fragment (see [ParseZone]). Which one is decided by the first
// record line: bare when it starts with a digit, "IN", "TLSA", "TYPE52" or
// `\#` (forms [ParseRecord] takes). It returns the records in
// input order, and an error naming the line for any malformed record or when
// no record is found.
func ParseRRSet(text, source string) ([]Record, error) {
	var recs []Record
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";") {
			continue
		}
		if len(recs) == 0 && !bareLine(l) {
			return parseZoneRecords(text, source)
		}
		r, err := ParseRecord(l)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", source, line, err)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", source, ErrBadRecord, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%s: %w: no TLSA record found", source, ErrBadRecord)
	}
	return recs, nil
}

// bareLine reports whether l starts like RDATA rather than a zone-file line.
func bareLine(l string) bool {
	if l[0] >= '0' && l[0] <= '9' {
		return true
	}
	first := strings.ToUpper(strings.Fields(l)[0])
	return first == "IN" || first == "TLSA" || first == "TYPE52" || first == `\#`
}

func parseZoneRecords(text, source string) ([]Record, error) {
	rrs, err := ParseZone(text, "", source)
	if err != nil {
		return nil, err
	}
	if len(rrs) == 0 {
		return nil, fmt.Errorf("%s: %w: no TLSA record found", source, ErrBadRecord)
	}
	recs := make([]Record, len(rrs))
	for i, rr := range rrs {
		recs[i] = rr.Record
	}
	return recs, nil
}
