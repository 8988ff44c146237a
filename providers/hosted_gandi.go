//go:build !nohosted

package providers

import (
	"context"
	"strings"

	"github.com/libdns/gandi"
	"github.com/libdns/libdns"
)

var (
	_ Provider = (*gandi.Provider)(nil)
	_ Provider = (*gandiRRsets)(nil)
)

// gandiFactory builds Gandi LiveDNS providers (api.gandi.net/v5/livedns,
// "Authorization: Bearer" with a personal access token). LiveDNS holds
// RRsets (rrset_values) and github.com/libdns/gandi v1.1.0 writes them with
// PUT …/records/{name}/{type}, but its SetRecords only adds values and never
// removes old ones; the factory returns [gandiRRsets], which then deletes the
// values that are not wanted.
func gandiFactory() Factory {
	return Factory{
		Name: "gandi",
		Doc: `token_file  file holding a Gandi personal access token with LiveDNS rights ($GANDI_BEARER_TOKEN_FILE; or the token itself in $GANDI_BEARER_TOKEN)
note        a changed RRset is written in two PUTs (add new values, then drop old ones), not atomically`,
		New: func(s Settings) (Provider, error) {
			token, err := s.Secret("token", "GANDI_BEARER_TOKEN")
			if err != nil {
				return nil, err
			}
			return &gandiRRsets{Provider: &gandi.Provider{BearerToken: token}}, nil
		},
	}
}

// gandiRRsets is github.com/libdns/gandi with RRset semantics for
// SetRecords: each (name, type) RRset in the records ends up holding exactly
// the given values. New values are added first, so the RRset is never empty
// in between.
type gandiRRsets struct {
	*gandi.Provider
}

// SetRecords adds the missing values of each RRset, then deletes the others.
func (g *gandiRRsets) SetRecords(ctx context.Context, zone string, records []libdns.Record) ([]libdns.Record, error) {
	current, err := g.Provider.GetRecords(ctx, zone)
	if err != nil {
		return nil, err
	}
	out, err := g.Provider.SetRecords(ctx, zone, records)
	if err != nil {
		return out, err
	}
	var stale []libdns.Record
	for _, c := range current {
		cr := c.RR()
		inSet, wanted := false, false
		for _, r := range records {
			rr := r.RR()
			if strings.EqualFold(gandiName(rr.Name), gandiName(cr.Name)) && strings.EqualFold(rr.Type, cr.Type) {
				inSet = true
				if rr.Data == cr.Data {
					wanted = true
				}
			}
		}
		if inSet && !wanted {
			stale = append(stale, cr)
		}
	}
	if len(stale) > 0 {
		if _, err := g.Provider.DeleteRecords(ctx, zone, stale); err != nil {
			return out, err
		}
	}
	return out, nil
}

func gandiName(n string) string {
	if n == "" {
		return "@"
	}
	return n
}
