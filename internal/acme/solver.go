package acme

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v5/challenge"
	"github.com/libdns/libdns"
	"github.com/miekg/dns"
	"github.com/tlsactl/tlsactl/internal/dnsx"
	"github.com/tlsactl/tlsactl/providers"
)

// Records is what the DNS-01 solver needs of a provider: add and delete
// records (the libdns interfaces; every providers.Provider has them).
type Records interface {
	libdns.RecordAppender
	libdns.RecordDeleter
}

// DNSSolver solves DNS-01 challenges through a libdns provider — the same
// provider configuration tlsactl writes TLSA records with. It implements
// lego v5's challenge.Provider and challenge.ProviderTimeout (lego hands
// Present and CleanUp the order's context).
//
// Present appends the TXT record _acme-challenge.<domain> with the
// challenge's value and waits until every authoritative server of the zone
// serves it, querying each one directly (not lego's propagation check,
// which asks the servers of the NS set on port 53 and a recursive resolver
// whose negative cache could hide the new record). CleanUp deletes exactly
// that TXT value; other TXT records at the name are left alone.
type DNSSolver struct {
	Provider Records
	// Zone holding the _acme-challenge names; "" finds it per name with
	// providers.FindZone through Resolver.
	Zone string
	// Resolver is the validating resolver for FindZone and the zone's NS set.
	Resolver *dnsx.Resolver
	// AuthServers ("ip:port") are servers the record must reach besides
	// the zone's NS set (providers.ServersFor), e.g. a hidden primary;
	// AuthPort is the NS set's port (53). Without a Resolver only
	// AuthServers are asked.
	AuthServers []string
	AuthPort    int
	// TTL of the TXT record (default 60 s).
	TTL time.Duration
	// PropagationTimeout bounds the wait for every server (default 2 min);
	// Interval is the time between polls (default 1 s).
	PropagationTimeout, Interval time.Duration
	// Logf, when set, reports each step.
	Logf func(format string, args ...any)

	mu      sync.Mutex
	present map[string]presented // by owner + value
}

var _ challenge.ProviderTimeout = (*DNSSolver)(nil)

type presented struct {
	zone string
	rec  libdns.TXT
}

// Value is the TXT value of a DNS-01 challenge for keyAuth (RFC 8555 §8.4):
// base64url(SHA-256(keyAuth)) without padding.
func Value(keyAuth string) string {
	h := sha256.Sum256([]byte(keyAuth))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// Owner is the challenge name of domain: _acme-challenge.<domain>. (FQDN,
// lower case; a wildcard's "*." is dropped).
func Owner(domain string) string {
	d := strings.TrimPrefix(strings.ToLower(strings.TrimSuffix(domain, ".")), "*.")
	return "_acme-challenge." + d + "."
}

func (s *DNSSolver) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

// Timeout tells lego how long to wait for propagation; Present waits itself,
// so lego's own check is switched off (see Obtain) and this bounds its loop.
func (s *DNSSolver) Timeout() (timeout, interval time.Duration) {
	return s.propagationTimeout() + 30*time.Second, 100 * time.Millisecond
}

func (s *DNSSolver) propagationTimeout() time.Duration {
	if s.PropagationTimeout > 0 {
		return s.PropagationTimeout
	}
	return 2 * time.Minute
}

func (s *DNSSolver) zoneOf(ctx context.Context, owner string) (string, error) {
	if s.Zone != "" {
		z := dns.CanonicalName(s.Zone)
		if !dns.IsSubDomain(z, owner) {
			return "", fmt.Errorf("%s is not in the configured zone %s", owner, z)
		}
		return z, nil
	}
	if s.Resolver == nil {
		return "", errors.New("acme: DNSSolver needs a Zone or a Resolver")
	}
	// The zone of the domain itself: asking for the challenge name, which
	// does not exist yet, would leave a negative answer (and NSEC records
	// that deny its siblings) in the resolver's cache.
	return providers.FindZone(ctx, s.Resolver, strings.TrimPrefix(owner, "_acme-challenge."))
}

// Present adds the challenge TXT record and waits until every authoritative
// server serves it (or ctx ends).
func (s *DNSSolver) Present(ctx context.Context, domain, _, keyAuth string) error {
	owner, value := Owner(domain), Value(keyAuth)
	zone, err := s.zoneOf(ctx, owner)
	if err != nil {
		return fmt.Errorf("zone of %s: %w", owner, err)
	}
	ttl := s.TTL
	if ttl <= 0 {
		ttl = time.Minute
	}
	rec := libdns.TXT{Name: libdns.RelativeName(owner, zone), TTL: ttl, Text: value}
	if _, err := s.Provider.AppendRecords(ctx, zone, []libdns.Record{rec}); err != nil {
		return fmt.Errorf("adding TXT %s in zone %s: %w", owner, zone, err)
	}
	s.mu.Lock()
	if s.present == nil {
		s.present = map[string]presented{}
	}
	s.present[owner+" "+value] = presented{zone: zone, rec: rec}
	s.mu.Unlock()
	s.logf("added TXT %s %q (zone %s)", owner, value, zone)

	servers, err := s.servers(ctx, zone)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := WaitTXT(ctx, servers, owner, value, s.Interval, s.propagationTimeout()); err != nil {
		return err
	}
	s.logf("TXT %s served by %d authoritative server(s) after %s", owner, len(servers), time.Since(start).Round(time.Millisecond))
	return nil
}

// CleanUp deletes exactly the TXT value Present added. It runs on after
// ctx ends (an order that timed out must not leave its record behind),
// bounded by the propagation timeout.
func (s *DNSSolver) CleanUp(ctx context.Context, domain, _, keyAuth string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.propagationTimeout())
	defer cancel()
	owner, value := Owner(domain), Value(keyAuth)
	s.mu.Lock()
	p, ok := s.present[owner+" "+value]
	delete(s.present, owner+" "+value)
	s.mu.Unlock()
	if !ok {
		zone, err := s.zoneOf(ctx, owner)
		if err != nil {
			return fmt.Errorf("zone of %s: %w", owner, err)
		}
		p = presented{zone: zone, rec: libdns.TXT{Name: libdns.RelativeName(owner, zone), TTL: s.TTL, Text: value}}
	}
	if _, err := s.Provider.DeleteRecords(ctx, p.zone, []libdns.Record{p.rec}); err != nil {
		return fmt.Errorf("deleting TXT %s in zone %s: %w", owner, p.zone, err)
	}
	s.logf("deleted TXT %s %q", owner, value)
	return nil
}

// servers are the zone's NS set and the configured AuthServers (a hidden
// primary adds to the NS set; the CA asks the NS set), each address once.
func (s *DNSSolver) servers(ctx context.Context, zone string) ([]netip.AddrPort, error) {
	list, err := providers.ServersFor(ctx, s.Resolver, zone, s.AuthPort, s.AuthServers)
	if err != nil {
		return nil, fmt.Errorf("authoritative servers of %s: %w", zone, err)
	}
	var out []netip.AddrPort
	for _, a := range list {
		out = append(out, a.Addrs...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("authoritative servers of %s: none with an address", zone)
	}
	return out, nil
}

// WaitTXT polls every server (non-recursive queries, UDP then TCP on
// truncation) until each one answers owner TXT with value among the
// answer's TXT records, or timeout passes.
func WaitTXT(ctx context.Context, servers []netip.AddrPort, owner, value string, interval, timeout time.Duration) error {
	if interval <= 0 {
		interval = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pending := map[netip.AddrPort]string{}
	for _, s := range servers {
		pending[s] = "not asked yet"
	}
	for {
		for s := range pending {
			ok, why := HasTXT(ctx, s.String(), owner, value)
			if ok {
				delete(pending, s)
			} else {
				pending[s] = why
			}
		}
		if len(pending) == 0 {
			return nil
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			var lag []string
			for s, why := range pending {
				lag = append(lag, s.String()+": "+why)
			}
			return fmt.Errorf("TXT %s %q not served by every authoritative server within %s (%s)", owner, value, timeout, strings.Join(lag, "; "))
		case <-t.C:
		}
	}
}

// HasTXT asks server (ip:port) for owner TXT without recursion and reports
// whether value is among the answers, else why not.
func HasTXT(ctx context.Context, server, owner, value string) (bool, string) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(owner), dns.TypeTXT)
	m.RecursionDesired = false
	c := &dns.Client{Timeout: 3 * time.Second}
	resp, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return false, err.Error()
	}
	if resp.Rcode != dns.RcodeSuccess {
		return false, dns.RcodeToString[resp.Rcode]
	}
	n := 0
	for _, rr := range resp.Answer {
		if t, ok := rr.(*dns.TXT); ok && strings.EqualFold(t.Hdr.Name, dns.Fqdn(owner)) {
			n++
			if strings.Join(t.Txt, "") == value {
				return true, ""
			}
		}
	}
	return false, fmt.Sprintf("%d other TXT record(s)", n)
}
