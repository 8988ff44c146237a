package outbound

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/tlsactl/tlsactl/internal/dnsx"
)

// Default test names for the real internet, both long-standing and widely
// used to test validating resolvers:
//   - internetsociety.org is DNSSEC-signed (a chain of trust from the root
//     through .org): a validating resolver sets AD on its answers;
//   - dnssec-failed.org is deliberately broken by Comcast ("provided for
//     exactly this purpose", DNSSEC Mastery 2nd ed., ch. 47): a validating
//     resolver answers SERVFAIL, and with +cd (checking disabled) it answers.
const (
	DefaultSignedName = "internetsociety.org"
	DefaultBogusName  = "dnssec-failed.org"
)

// ResolverConfig configures CheckResolver.
type ResolverConfig struct {
	// Addr is "host:port" or a bare host (port 53).
	Addr string
	// Signed and Bogus are the test names; empty means the defaults.
	Signed, Bogus string
	// Timeout bounds each query; zero means 5 s.
	Timeout time.Duration
}

// CheckResolver asks the resolver for the signed name (it must set AD) and
// the bogus name (it must answer SERVFAIL; the same query with CD must then
// answer, else the name's authority is unreachable and nothing is proven).
// It includes CheckResolverPath's finding.
func CheckResolver(ctx context.Context, cfg ResolverConfig) (ResolverReport, []Finding) {
	if cfg.Signed == "" {
		cfg.Signed = DefaultSignedName
	}
	if cfg.Bogus == "" {
		cfg.Bogus = DefaultBogusName
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	addr := dnsx.ResolverAddr(cfg.Addr)
	rep := ResolverReport{Addr: addr}
	var fs []Finding
	add := func(sev Severity, code, msg, fix string) {
		fs = append(fs, Finding{Severity: sev, Code: code, Setting: "resolver", Value: addr, Message: msg, Fix: fix})
	}
	const fixValidate = "make the resolver validate DNSSEC (Unbound validates by default: module-config: \"validator iterator\" with auto-trust-anchor-file), or run one on this host and list it as the first nameserver in /etc/resolv.conf"

	rep.Signed = probe(ctx, addr, cfg.Signed, false, cfg.Timeout)
	rep.Bogus = probe(ctx, addr, cfg.Bogus, false, cfg.Timeout)
	signedOK := rep.Signed.Error == "" && rep.Signed.AD && (rep.Signed.Rcode == "NOERROR" || rep.Signed.Rcode == "NXDOMAIN")
	switch {
	case rep.Signed.Error != "":
		add(Unknown, "resolver-unreachable", fmt.Sprintf("no answer for the signed name %s: %s", cfg.Signed, rep.Signed.Error), "check that the resolver runs and answers on "+addr)
	case rep.Signed.Rcode == "SERVFAIL":
		add(Unknown, "resolver-signed-servfail", fmt.Sprintf("SERVFAIL for the signed name %s: the resolver cannot resolve it (no upstream, or a broken trust anchor); nothing can be concluded", cfg.Signed), "check the resolver's upstream connectivity and trust anchor, or pick a reachable signed name with --signed")
	case rep.Signed.Rcode != "NOERROR" && rep.Signed.Rcode != "NXDOMAIN":
		add(Unknown, "resolver-signed-rcode", fmt.Sprintf("%s for the signed name %s", rep.Signed.Rcode, cfg.Signed), "check the resolver's access control (it must answer this host's recursive queries)")
	case !rep.Signed.AD:
		add(Critical, "resolver-no-ad", fmt.Sprintf("%s for the signed name %s without the AD bit: the resolver does not validate DNSSEC, so every TLSA record looks insecure and DANE never applies", rep.Signed.Rcode, cfg.Signed), fixValidate)
	default:
		add(OK, "resolver-signed-ad", fmt.Sprintf("the signed name %s is answered with the AD bit", cfg.Signed), "")
	}

	bogusOK := false
	switch {
	case rep.Bogus.Error != "":
		add(Unknown, "resolver-bogus-no-answer", fmt.Sprintf("no answer for the bogus name %s: %s", cfg.Bogus, rep.Bogus.Error), "check that the resolver answers on "+addr)
	case rep.Bogus.Rcode == "SERVFAIL":
		cd := probe(ctx, addr, cfg.Bogus, true, cfg.Timeout)
		rep.BogusCD = &cd
		if cd.Error == "" && (cd.Rcode == "NOERROR" || cd.Rcode == "NXDOMAIN") {
			bogusOK = true
			add(OK, "resolver-bogus-servfail", fmt.Sprintf("the bogus name %s is refused (SERVFAIL; with checking disabled it resolves)", cfg.Bogus), "")
		} else {
			add(Unknown, "resolver-bogus-unresolvable", fmt.Sprintf("SERVFAIL for the bogus name %s, but also with checking disabled (%s): its authority is unreachable, so the SERVFAIL proves nothing", cfg.Bogus, firstNonEmpty(cd.Error, cd.Rcode)), "pick a reachable bogus test name with --bogus")
		}
	case rep.Bogus.Rcode == "NOERROR" || rep.Bogus.Rcode == "NXDOMAIN":
		add(Critical, "resolver-accepts-bogus", fmt.Sprintf("%s for the bogus name %s: the resolver hands out data that fails DNSSEC validation, so a forged TLSA record (or none) would be accepted", rep.Bogus.Rcode, cfg.Bogus), fixValidate)
	default:
		add(Unknown, "resolver-bogus-rcode", fmt.Sprintf("%s for the bogus name %s", rep.Bogus.Rcode, cfg.Bogus), "check the resolver's access control")
	}
	rep.Validates = signedOK && bogusOK

	pf := CheckResolverPath(addr)
	rep.Loopback = pf.Severity == OK
	fs = append(fs, pf)
	return rep, fs
}

// CheckResolverPath judges the path to the resolver: loopback (127.0.0.0/8,
// ::1) is trusted; anything else is a WARNING, as the AD bit can be forged
// or stripped on the way.
func CheckResolverPath(addr string) Finding {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	f := Finding{Code: "resolver-path", Setting: "resolver", Value: addr}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	switch {
	case err != nil:
		f.Severity = Warning
		f.Message = fmt.Sprintf("the resolver %q is not an IP address; cannot tell whether the path to it is trusted", host)
	case ip.Unmap().IsLoopback():
		f.Severity = OK
		f.Message = "the resolver is on this host (loopback): the AD bit travels on a trusted path"
		return f
	default:
		f.Severity = Warning
		f.Message = fmt.Sprintf("the resolver %s is not on this host: its AD bit crosses the network unprotected and can be forged or stripped", ip)
	}
	f.Fix = "run a local validating resolver (apt-get install unbound; it listens on 127.0.0.1) and make \"nameserver 127.0.0.1\" the first line of /etc/resolv.conf"
	return f
}

// probe sends one recursive query (type A, RD, AD, DO; CD when cd) over UDP,
// retrying over TCP when truncated.
func probe(ctx context.Context, addr, name string, cd bool, timeout time.Duration) Probe {
	p := Probe{Name: dns.Fqdn(name)}
	if _, ok := dns.IsDomainName(p.Name); !ok {
		p.Error = "invalid domain name"
		return p
	}
	m := new(dns.Msg)
	m.SetQuestion(p.Name, dns.TypeA)
	m.RecursionDesired = true
	m.AuthenticatedData = true
	m.CheckingDisabled = cd
	m.SetEdns0(1232, true)
	ctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	c := &dns.Client{Net: "udp", UDPSize: 1232, Timeout: timeout}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, addr)
	}
	if err == nil && (len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, p.Name)) {
		err = errors.New("response does not match the question")
	}
	if err != nil {
		p.Error = err.Error()
		return p
	}
	p.Rcode = dns.RcodeToString[r.Rcode]
	if p.Rcode == "" {
		p.Rcode = fmt.Sprintf("RCODE%d", r.Rcode)
	}
	p.AD = r.AuthenticatedData
	return p
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
