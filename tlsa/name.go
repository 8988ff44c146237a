package tlsa

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"
)

// ErrBadName is wrapped by [OwnerName] errors.
var ErrBadName = errors.New("bad TLSA owner name")

// OwnerName returns the TLSA owner name for a service, "_<port>._<proto>.<host>."
// (RFC 6698 §3). port is a number from 1 to 65535 or "*", which gives
// "*._<proto>.<host>." as hash-slinger does. proto is tcp, udp or sctp.
// Non-ASCII host names are converted to their A-label (IDNA) form; ASCII names
// are kept exactly as given, case included. A trailing dot is added.
func OwnerName(port, proto, host string) (string, error) {
	if port != "*" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%w: port %q: want a number from 1 to 65535 or *", ErrBadName, port)
		}
		port = "_" + strconv.Itoa(n)
	}
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return "", fmt.Errorf("%w: protocol %q: want tcp, udp or sctp", ErrBadName, proto)
	}
	h, err := HostName(host)
	if err != nil {
		return "", err
	}
	return port + "._" + proto + "." + h, nil
}

// HostName checks a host name and returns it fully qualified (trailing dot),
// converting a non-ASCII name to its A-label form. It does not resolve it.
func HostName(host string) (string, error) {
	h := strings.TrimSpace(host)
	if h == "" {
		return "", fmt.Errorf("%w: empty host name", ErrBadName)
	}
	if !isASCII(h) {
		a, err := idna.Lookup.ToASCII(strings.TrimSuffix(h, "."))
		if err != nil {
			return "", fmt.Errorf("%w: host %q: %v", ErrBadName, host, err)
		}
		h = a
	}
	h = dns.Fqdn(h)
	if _, ok := dns.IsDomainName(h); !ok || h == "." || strings.ContainsFunc(h, badHostRune) {
		return "", fmt.Errorf("%w: host %q is not a valid DNS name", ErrBadName, host)
	}
	return h, nil
}

// badHostRune reports characters that have no place in a host name and would
// break or inject into a zone-file line: controls, white space, and / \ @ ; ( ) ".
func badHostRune(r rune) bool {
	return r <= ' ' || r == 0x7f || strings.ContainsRune("/\\@;()\"", r)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
