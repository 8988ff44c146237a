//go:build !nohosted

package providers

import (
	"github.com/libdns/desec"
)

var _ Provider = (*desec.Provider)(nil)

// desecFactory builds deSEC (desec.io) providers. github.com/libdns/desec
// writes whole RRsets with one bulk PUT /api/v1/domains/{zone}/rrsets/
// ("records": ["3 1 1 <hex>"]), so SetRecords replaces a TLSA RRset
// atomically. deSEC's minimum TTL is 3600: the adapter raises lower TTLs.
func desecFactory() Factory {
	return Factory{
		Name: "desec",
		Doc: `token_file  file holding the deSEC API token, without token-management permission ($DESEC_TOKEN_FILE; or the token itself in $DESEC_TOKEN)
note        TTLs below 3600 s are raised to 3600, deSEC's minimum`,
		New: func(s Settings) (Provider, error) {
			token, err := s.Secret("token", "DESEC_TOKEN")
			if err != nil {
				return nil, err
			}
			return &desec.Provider{Token: token}, nil
		},
	}
}
