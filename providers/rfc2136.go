package providers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/libdns/libdns"
	"github.com/libdns/rfc2136"
	"github.com/miekg/dns"
)

var _ Provider = (*rfc2136Provider)(nil)

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
			return &rfc2136Provider{&rfc2136.Provider{KeyName: k.Name, KeyAlg: k.Algorithm, Key: k.Secret, Server: withPort(server)}}, nil
		},
	}
}

// rfc2136Provider is github.com/libdns/rfc2136 with errors that name the
// server and the key (never the secret) and say when the server rejected the
// key: the library alone reports only "dns: bad authentication" or
// "response error code REFUSED".
type rfc2136Provider struct{ p *rfc2136.Provider }

func (r *rfc2136Provider) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	recs, err := r.p.GetRecords(ctx, zone)
	return recs, r.explain(err)
}

func (r *rfc2136Provider) SetRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	recs, err := r.p.SetRecords(ctx, zone, recs)
	return recs, r.explain(err)
}

func (r *rfc2136Provider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	recs, err := r.p.AppendRecords(ctx, zone, recs)
	return recs, r.explain(err)
}

func (r *rfc2136Provider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	recs, err := r.p.DeleteRecords(ctx, zone, recs)
	return recs, r.explain(err)
}

func (r *rfc2136Provider) explain(err error) error {
	if err == nil {
		return nil
	}
	hint := ""
	msg := err.Error()
	switch {
	case errors.Is(err, dns.ErrAuth), errors.Is(err, dns.ErrSig), errors.Is(err, dns.ErrNoSig), strings.Contains(msg, `"NOTAUTH"`):
		hint = " (the server rejected the TSIG key: wrong secret, a key name it does not know, or a clock off by more than 5 minutes)"
	case errors.Is(err, dns.ErrTime):
		hint = " (TSIG time check failed: the clocks differ by more than 5 minutes)"
	case strings.Contains(msg, `"REFUSED"`):
		hint = " (the server refused: the TSIG key is wrong or not allowed to change this zone, or the server is not the zone's primary)"
	}
	return fmt.Errorf("RFC 2136 server %s, TSIG key %s: %w%s", r.p.Server, strings.TrimSuffix(r.p.KeyName, "."), err, hint)
}
