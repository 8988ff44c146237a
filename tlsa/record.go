package tlsa

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Usage is the TLSA certificate usage field (RFC 6698 §2.1.1, RFC 7218 names).
type Usage uint8

// Certificate usages.
const (
	PKIXTA Usage = 0 // PKIX-TA: CA constraint, needs PKIX validation.
	PKIXEE Usage = 1 // PKIX-EE: service certificate constraint, needs PKIX validation.
	DANETA Usage = 2 // DANE-TA: trust anchor assertion.
	DANEEE Usage = 3 // DANE-EE: domain-issued certificate.
)

// String returns the RFC 7218 mnemonic, or the number for unknown values.
func (u Usage) String() string {
	switch u {
	case PKIXTA:
		return "PKIX-TA"
	case PKIXEE:
		return "PKIX-EE"
	case DANETA:
		return "DANE-TA"
	case DANEEE:
		return "DANE-EE"
	}
	return strconv.Itoa(int(u))
}

// Selector is the TLSA selector field (RFC 6698 §2.1.2).
type Selector uint8

// Selectors.
const (
	SelectorCert Selector = 0 // Full certificate (DER).
	SelectorSPKI Selector = 1 // SubjectPublicKeyInfo (DER).
)

// String returns the RFC 7218 mnemonic, or the number for unknown values.
func (s Selector) String() string {
	switch s {
	case SelectorCert:
		return "Cert"
	case SelectorSPKI:
		return "SPKI"
	}
	return strconv.Itoa(int(s))
}

// MatchingType is the TLSA matching type field (RFC 6698 §2.1.3).
type MatchingType uint8

// Matching types.
const (
	MatchFull   MatchingType = 0 // Exact match on the selected content.
	MatchSHA256 MatchingType = 1 // SHA-256 of the selected content.
	MatchSHA512 MatchingType = 2 // SHA-512 of the selected content.
)

// String returns the RFC 7218 mnemonic, or the number for unknown values.
func (m MatchingType) String() string {
	switch m {
	case MatchFull:
		return "Full"
	case MatchSHA256:
		return "SHA2-256"
	case MatchSHA512:
		return "SHA2-512"
	}
	return strconv.Itoa(int(m))
}

// digestLen returns the length a digest of this matching type must have, or 0
// when the matching type carries the full content (or is unknown).
func (m MatchingType) digestLen() int {
	switch m {
	case MatchSHA256:
		return 32
	case MatchSHA512:
		return 64
	}
	return 0
}

// Record is one TLSA RDATA: usage, selector, matching type and the
// certificate association data as raw bytes. A Record does not carry an
// owner name or TTL; see [RR] for that.
type Record struct {
	Usage        Usage
	Selector     Selector
	MatchingType MatchingType
	Data         []byte
}

// String returns the presentation form of the RDATA, "3 1 1 <lower-case hex>",
// which is also the form libdns providers carry in RR.Data.
func (r Record) String() string {
	return fmt.Sprintf("%d %d %d %s", r.Usage, r.Selector, r.MatchingType, hex.EncodeToString(r.Data))
}

// WireData returns the RDATA in wire format: three octets followed by the data.
func (r Record) WireData() []byte {
	b := make([]byte, 0, 3+len(r.Data))
	b = append(b, byte(r.Usage), byte(r.Selector), byte(r.MatchingType))
	return append(b, r.Data...)
}

// Equal reports whether two records have the same fields and data bytes.
// Hex case in the text they came from does not matter.
func (r Record) Equal(o Record) bool {
	return r.Usage == o.Usage && r.Selector == o.Selector && r.MatchingType == o.MatchingType &&
		bytes.Equal(r.Data, o.Data)
}

// ErrBadRecord is wrapped by every error that [ParseRecord] and [ParseZone]
// return for malformed TLSA text.
var ErrBadRecord = errors.New("malformed TLSA record")

// ParseRecord parses TLSA RDATA in presentation format, "3 1 1 ABCD…", with
// any hex case and whitespace inside the hex (as zone files allow), or in the
// RFC 3597 generic form `\# 35 030101…`. An optional leading "TLSA" or
// "IN TLSA" is accepted. It does not accept an owner name or TTL; use
// [ParseZone] for zone-file lines.
//
// Field values outside the defined ones (usage 4, matching type 3, …) parse
// fine: such records are unusable, not malformed (RFC 7671 §4).
func ParseRecord(s string) (Record, error) {
	f := strings.Fields(s)
	if len(f) >= 2 && strings.EqualFold(f[0], "IN") && strings.EqualFold(f[1], "TLSA") {
		f = f[2:]
	} else if len(f) >= 2 && strings.EqualFold(f[0], "IN") && strings.EqualFold(f[1], "TYPE52") {
		f = f[2:]
	} else if len(f) >= 1 && (strings.EqualFold(f[0], "TLSA") || strings.EqualFold(f[0], "TYPE52")) {
		f = f[1:]
	}
	if len(f) >= 1 && f[0] == `\#` {
		return parseGeneric(f[1:])
	}
	if len(f) < 4 {
		return Record{}, fmt.Errorf("%w %q: want \"<usage> <selector> <mtype> <hex>\", e.g. \"3 1 1 0123…\"", ErrBadRecord, s)
	}
	var nums [3]uint8
	for i, name := range []string{"usage", "selector", "matching type"} {
		n, err := strconv.ParseUint(f[i], 10, 8)
		if err != nil {
			return Record{}, fmt.Errorf("%w %q: %s %q is not a number from 0 to 255", ErrBadRecord, s, name, f[i])
		}
		nums[i] = uint8(n)
	}
	data, err := decodeHex(strings.Join(f[3:], ""))
	if err != nil {
		return Record{}, fmt.Errorf("%w %q: association data: %v", ErrBadRecord, s, err)
	}
	return Record{Usage(nums[0]), Selector(nums[1]), MatchingType(nums[2]), data}, nil
}

func parseGeneric(f []string) (Record, error) {
	if len(f) < 2 {
		return Record{}, fmt.Errorf("%w: generic form wants `\\# <length> <hex>`", ErrBadRecord)
	}
	n, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil {
		return Record{}, fmt.Errorf("%w: generic length %q is not a number", ErrBadRecord, f[0])
	}
	data, err := decodeHex(strings.Join(f[1:], ""))
	if err != nil {
		return Record{}, fmt.Errorf("%w: generic data: %v", ErrBadRecord, err)
	}
	if uint64(len(data)) != n {
		return Record{}, fmt.Errorf("%w: generic length says %d octets, data has %d", ErrBadRecord, n, len(data))
	}
	if len(data) < 4 {
		return Record{}, fmt.Errorf("%w: generic data has %d octets, TLSA needs at least 4", ErrBadRecord, len(data))
	}
	return Record{Usage(data[0]), Selector(data[1]), MatchingType(data[2]), data[3:]}, nil
}

func decodeHex(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("empty")
	}
	if len(s)%2 != 0 {
		return nil, fmt.Errorf("odd number of hex digits (%d)", len(s))
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, errors.New("not hexadecimal")
	}
	return b, nil
}
