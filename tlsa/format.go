package tlsa

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// RR is a TLSA resource record: an owner name, an optional TTL and the RDATA.
type RR struct {
	Name   string // fully qualified owner name, e.g. "_25._tcp.mail.example.nl."
	TTL    uint32 // only printed when HasTTL is set
	HasTTL bool
	Record
}

// Format names an output format for records.
type Format string

// Output formats, as hash-slinger's --output names them, plus JSON.
const (
	FormatRFC     Format = "rfc"     // _25._tcp.host. IN TLSA 3 1 1 <hex>
	FormatGeneric Format = "generic" // _25._tcp.host. IN TYPE52 \# 35 030101<hex> (RFC 3597)
	FormatBoth    Format = "both"    // the rfc line, then the generic line
	FormatJSON    Format = "json"    // one JSON object per record
)

// ParseFormat checks a format name.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case FormatRFC, FormatGeneric, FormatBoth, FormatJSON:
		return f, nil
	}
	return "", fmt.Errorf("unknown output format %q: want rfc, generic, both or json", s)
}

func (rr RR) prefix() string {
	if rr.HasTTL {
		return rr.Name + " " + strconv.FormatUint(uint64(rr.TTL), 10) + " IN "
	}
	return rr.Name + " IN "
}

// RFC returns the record in TLSA presentation format, exactly as hash-slinger
// prints it: "<name> IN TLSA <u> <s> <m> <lower-case hex>", with the TTL
// between name and class when HasTTL is set.
func (rr RR) RFC() string {
	return rr.prefix() + "TLSA " + rr.Record.String()
}

// Generic returns the record in RFC 3597 generic form, exactly as hash-slinger
// prints it: `<name> IN TYPE52 \# <len> <hex of the whole RDATA>`.
func (rr RR) Generic() string {
	w := rr.WireData()
	return rr.prefix() + `TYPE52 \# ` + strconv.Itoa(len(w)) + " " + hex.EncodeToString(w)
}

// Lines returns the record as text lines in format f; JSON gives one line.
func (rr RR) Lines(f Format) ([]string, error) {
	switch f {
	case FormatRFC, "":
		return []string{rr.RFC()}, nil
	case FormatGeneric:
		return []string{rr.Generic()}, nil
	case FormatBoth:
		return []string{rr.RFC(), rr.Generic()}, nil
	case FormatJSON:
		b, err := json.Marshal(rr)
		if err != nil {
			return nil, err
		}
		return []string{string(b)}, nil
	}
	return nil, fmt.Errorf("unknown output format %q", f)
}

type rrJSON struct {
	Name         string  `json:"name"`
	TTL          *uint32 `json:"ttl,omitempty"`
	Usage        uint8   `json:"usage"`
	Selector     uint8   `json:"selector"`
	MatchingType uint8   `json:"matching_type"`
	Data         string  `json:"data"`
	RDATA        string  `json:"rdata"`
	RFC          string  `json:"rfc"`
	Generic      string  `json:"generic"`
}

// MarshalJSON encodes the record with its fields, hex data, and both text forms.
func (rr RR) MarshalJSON() ([]byte, error) {
	j := rrJSON{
		Name: rr.Name, Usage: uint8(rr.Usage), Selector: uint8(rr.Selector), MatchingType: uint8(rr.MatchingType),
		Data: hex.EncodeToString(rr.Data), RDATA: rr.Record.String(), RFC: rr.RFC(), Generic: rr.Generic(),
	}
	if rr.HasTTL {
		ttl := rr.TTL
		j.TTL = &ttl
	}
	return json.Marshal(j)
}
