package providers

import (
	"fmt"

	"github.com/libdns/rfc2136"
)

var _ Provider = (*rfc2136.Provider)(nil)

// rfc2136Factory builds RFC 2136 providers (dynamic updates signed with TSIG)
// for BIND, Knot, PowerDNS and most self-hosted DNS.
func rfc2136Factory() Factory {
	return Factory{
		Name: "rfc2136",
		Doc: `server         primary server HOST:PORT that takes updates ($TLSACTL_RFC2136_SERVER)
tsig_key_file  BIND-style key file as written by tsig-keygen / taken by nsupdate -k ($TLSACTL_TSIG_KEY_FILE)`,
		New: func(s Settings) (Provider, error) {
			server := s.Get("server", "TLSACTL_RFC2136_SERVER")
			if server == "" {
				return nil, fmt.Errorf("%w: missing server (HOST:PORT of the primary that takes updates)", ErrConfig)
			}
			keyFile := s.Get("tsig_key_file", "TLSACTL_TSIG_KEY_FILE")
			if keyFile == "" {
				return nil, fmt.Errorf("%w: missing tsig_key_file (the file tsig-keygen writes)", ErrConfig)
			}
			rf := s.ReadFile
			if rf == nil {
				rf = readFile
			}
			b, err := rf(keyFile)
			if err != nil {
				return nil, fmt.Errorf("%w: reading TSIG key %s: %v", ErrConfig, keyFile, unwrapPath(err))
			}
			k, err := ParseTSIGKeyFile(b)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrConfig, keyFile, err)
			}
			return &rfc2136.Provider{KeyName: k.Name, KeyAlg: k.Algorithm, Key: k.Secret, Server: withPort(server)}, nil
		},
	}
}
