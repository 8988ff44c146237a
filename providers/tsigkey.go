package providers

import (
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/tlsactl/tlsactl/internal/safefile"
	"net"
	"strings"

	"github.com/miekg/dns"
)

// TSIGKey is a TSIG key as read from a BIND-style key file. Secret is the
// base64 secret; never print it.
type TSIGKey struct {
	Name      string // FQDN
	Algorithm string // e.g. "hmac-sha256."
	Secret    string
}

// String names the key without its secret.
func (k TSIGKey) String() string { return fmt.Sprintf("TSIG key %s (%s)", k.Name, k.Algorithm) }

// ParseTSIGKeyFile reads the first key clause of a BIND-style key file, as
// `tsig-keygen NAME` writes it and `nsupdate -k` takes it:
//
//	key "name" {
//		algorithm hmac-sha256;
//		secret "base64…";
//	};
//
// Errors never contain the secret.
func ParseTSIGKeyFile(b []byte) (TSIGKey, error) {
	toks := tokenize(string(b))
	var k TSIGKey
	for i := 0; i < len(toks); i++ {
		if toks[i] != "key" || i+2 >= len(toks) || toks[i+2] != "{" {
			continue
		}
		k.Name = dns.Fqdn(strings.Trim(toks[i+1], `"`))
		for j := i + 3; j < len(toks) && toks[j] != "}"; j++ {
			switch toks[j] {
			case "algorithm":
				if j+1 < len(toks) {
					k.Algorithm = dns.Fqdn(strings.ToLower(strings.Trim(toks[j+1], `"`)))
				}
			case "secret":
				if j+1 < len(toks) {
					k.Secret = strings.Trim(toks[j+1], `"`)
				}
			}
		}
		break
	}
	switch {
	case k.Name == "":
		return k, errors.New(`no key clause found; want a file like tsig-keygen writes: key "name" { algorithm hmac-sha256; secret "…"; };`)
	case k.Secret == "":
		return k, fmt.Errorf("key %s has no secret", k.Name)
	case k.Algorithm == "":
		return k, fmt.Errorf("key %s has no algorithm", k.Name)
	}
	if _, err := base64.StdEncoding.DecodeString(k.Secret); err != nil {
		return k, fmt.Errorf("key %s: the secret is not valid base64", k.Name)
	}
	switch k.Algorithm {
	case dns.HmacSHA1, dns.HmacSHA224, dns.HmacSHA256, dns.HmacSHA384, dns.HmacSHA512:
	default:
		return k, fmt.Errorf("key %s: algorithm %s is not supported (use hmac-sha256)", k.Name, k.Algorithm)
	}
	return k, nil
}

// tokenize splits a named.conf-style text into words, quoted strings and the
// punctuation { } ;, dropping comments (#, //, /* */).
func tokenize(s string) []string {
	var out []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '#' || (c == '/' && i+1 < len(s) && s[i+1] == '/'):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				return out
			}
			i += end + 4
		case c == '"':
			end := strings.IndexByte(s[i+1:], '"')
			if end < 0 {
				return append(out, s[i:])
			}
			out = append(out, s[i:i+end+2])
			i += end + 2
		case c == '{' || c == '}' || c == ';':
			out = append(out, string(c))
			i++
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n{};\"", rune(s[j])) {
				j++
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out
}

// readFile reads a TSIG key file, refusing one that others can read.
func readFile(path string) ([]byte, error) { return safefile.ReadPrivate(path) }

// withPort adds the DNS port 53 to a server address without one.
func withPort(server string) string {
	if _, _, err := net.SplitHostPort(server); err == nil {
		return server
	}
	return net.JoinHostPort(strings.Trim(server, "[]"), "53")
}
