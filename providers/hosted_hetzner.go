//go:build !nohosted

package providers

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/libdns/hetzner"
	"github.com/libdns/libdns"
)

var (
	_ Provider = (*hetzner.Provider)(nil)
	_ Provider = (*hetznerRRsets)(nil)
)

// hetznerFactory builds Hetzner DNS providers (the dns.hetzner.com API v1,
// header Auth-API-Token). github.com/libdns/hetzner v1.0.0 matches existing
// records by name and type only: its SetRecords writes every wanted TLSA
// value over the same record (two values leave one) and its DeleteRecords may
// delete a TLSA record other than the one asked for. The factory therefore
// returns [hetznerRRsets], which keeps the library's client but sets and
// deletes records by their id.
func hetznerFactory() Factory {
	return Factory{
		Name: "hetzner",
		Doc: `api_token_file  file holding the Hetzner DNS Console API token ($HETZNER_API_TOKEN_FILE; or the token itself in $HETZNER_API_TOKEN)
note            speaks the dns.hetzner.com API; records are added and deleted one at a time, not atomically`,
		New: func(s Settings) (Provider, error) {
			token, err := s.Secret("api_token", "HETZNER_API_TOKEN")
			if err != nil {
				return nil, err
			}
			return &hetznerRRsets{Provider: hetzner.New(token), client: hetzner.NewClient(token)}, nil
		},
	}
}

// hetznerRRsets is github.com/libdns/hetzner with RRset semantics for
// SetRecords and value-exact DeleteRecords, using the library's own client.
// It also turns the library's panic on a zone the account does not have
// (an index out of range) into an error.
type hetznerRRsets struct {
	*hetzner.Provider
	client *hetzner.Client
}

func recoverHetzner(zone string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("hetzner: zone %s: not found in the account (the library failed: %v)", zone, r)
	}
}

// GetRecords lists the zone's records.
func (h *hetznerRRsets) GetRecords(ctx context.Context, zone string) (recs []libdns.Record, err error) {
	defer recoverHetzner(zone, &err)
	return h.Provider.GetRecords(ctx, zone)
}

// AppendRecords adds records (one POST /records each).
func (h *hetznerRRsets) AppendRecords(ctx context.Context, zone string, records []libdns.Record) (recs []libdns.Record, err error) {
	defer recoverHetzner(zone, &err)
	return h.Provider.AppendRecords(ctx, zone, records)
}

// SetRecords makes each (name, type) RRset in records exactly the given
// values: it adds missing values, updates changed TTLs, and then deletes the
// values that are not wanted.
func (h *hetznerRRsets) SetRecords(ctx context.Context, zone string, records []libdns.Record) (out []libdns.Record, err error) {
	defer recoverHetzner(zone, &err)
	z := strings.TrimSuffix(zone, ".")
	all, err := h.client.GetAllRecords(ctx, z)
	if err != nil {
		return nil, err
	}
	type key struct{ name, typ string }
	want := map[key]bool{}
	for _, r := range records {
		rr := r.RR()
		want[key{hetznerName(rr.Name, zone), rr.Type}] = true
	}
	used := map[string]bool{}
	for _, r := range records {
		rr := r.RR()
		name := hetznerName(rr.Name, zone)
		rec := hetzner.Record{Type: rr.Type, Name: name, Value: rr.Data, TTL: int(rr.TTL / time.Second)}
		var done hetzner.Record
		found := false
		for _, e := range all {
			if used[e.ID] || !strings.EqualFold(e.Name, name) || e.Type != rr.Type || e.Value != rr.Data {
				continue
			}
			found, used[e.ID] = true, true
			done = e
			if e.TTL != rec.TTL {
				rec.ID = e.ID
				if done, err = h.client.UpdateRecord(ctx, z, rec); err != nil {
					return out, err
				}
			}
			break
		}
		if !found {
			if done, err = h.client.CreateRecord(ctx, z, rec); err != nil {
				return out, err
			}
		}
		p, err := done.Parse(zone)
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
	for _, e := range all {
		if used[e.ID] || !want[key{hetznerName(e.Name, zone), e.Type}] {
			continue
		}
		if err := h.client.DeleteRecord(ctx, e.ID); err != nil {
			return out, err
		}
	}
	return out, nil
}

// DeleteRecords deletes the records that match name, type and, when given,
// value and TTL. Records that do not exist are ignored.
func (h *hetznerRRsets) DeleteRecords(ctx context.Context, zone string, records []libdns.Record) (out []libdns.Record, err error) {
	defer recoverHetzner(zone, &err)
	all, err := h.client.GetAllRecords(ctx, strings.TrimSuffix(zone, "."))
	if err != nil {
		return nil, err
	}
	gone := map[string]bool{}
	for _, r := range records {
		rr := r.RR()
		name := hetznerName(rr.Name, zone)
		for _, e := range all {
			if gone[e.ID] || !strings.EqualFold(e.Name, name) || (rr.Type != "" && e.Type != rr.Type) ||
				(rr.Data != "" && e.Value != rr.Data) || (rr.TTL != 0 && time.Duration(e.TTL)*time.Second != rr.TTL) {
				continue
			}
			if err := h.client.DeleteRecord(ctx, e.ID); err != nil {
				return out, err
			}
			gone[e.ID] = true
			p, err := e.Parse(zone)
			if err != nil {
				return out, err
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// hetznerName is a record name as the Hetzner API holds it: relative to the
// zone, "@" for the apex.
func hetznerName(name, zone string) string {
	n := libdns.RelativeName(name, zone)
	if n == "" {
		return "@"
	}
	return n
}
