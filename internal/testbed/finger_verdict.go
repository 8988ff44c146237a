package testbed

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// FingerVerdict is what a posttls-finger -l dane run says a DANE sender
// (Postfix with smtp_tls_security_level = dane) does with a host, read from
// its log lines. See DANEFinger.
type FingerVerdict string

// The verdicts, from the lines posttls-finger (Postfix 3.7) prints; found by
// experiment in this bed.
const (
	// FingerVerified: "Matched DANE … at depth N" and "Verified TLS
	// connection established": the server is DANE-authenticated.
	FingerVerified FingerVerdict = "verified"
	// FingerDANEInsecureMX: "Matched DANE …" and "Trusted TLS connection
	// established": DANE authenticated the MX host, but the MX RRset that
	// named it was insecure, so Postfix logs the peer as trusted, not
	// verified (smtp_tls_dane_insecure_mx_policy = dane, RFC 7672 §2.2.1).
	FingerDANEInsecureMX FingerVerdict = "dane-insecure-mx"
	// FingerDANEFailed: usable TLSA records were in force and the chain did
	// not match them ("server certificate verification failed …: num=65:no
	// matching DANE TLSA records", "… certificate has expired"), then
	// "Untrusted TLS connection established". Postfix's smtp client defers.
	FingerDANEFailed FingerVerdict = "dane-failed"
	// FingerNoUsableTLSA: "no usable TLSA records found, resorting to
	// "secure"". Secure TLSA records exist, all unusable. posttls-finger
	// then checks the chain against public CAs (and, with none configured,
	// says "Untrusted"); Postfix's smtp client instead does mandatory TLS
	// without authentication ("all TLSA records unusable, fallback to
	// unauthenticated TLS", RFC 7672 §2.2).
	FingerNoUsableTLSA FingerVerdict = "no-usable-tlsa"
	// FingerNoTLSA: "no TLSA records found, resorting to "secure"": no
	// TLSA RRset was used, because none exists, it is insecure, or the
	// host's address records are insecure and the lookup was skipped (RFC
	// 7672 §2.2.2; -f forces it). Postfix's smtp client does opportunistic
	// TLS.
	FingerNoTLSA FingerVerdict = "no-tlsa"
	// FingerNoSTARTTLS: the EHLO reply did not offer STARTTLS while a
	// secure TLSA RRset was in force (usable or not): Postfix's smtp client
	// requires TLS then and defers.
	FingerNoSTARTTLS FingerVerdict = "no-starttls"
	// FingerPlaintext: no STARTTLS and no TLSA in force: Postfix's smtp
	// client delivers without TLS.
	FingerPlaintext FingerVerdict = "plaintext"
	// FingerLookupFailed: "Destination address lookup failed" (a bogus
	// zone: the validating resolver answered SERVFAIL). Postfix defers.
	FingerLookupFailed FingerVerdict = "lookup-failed"
	// FingerUnknown: none of the above could be read from the output.
	FingerUnknown FingerVerdict = "unknown"
)

// FingerResult is a parsed posttls-finger run.
type FingerResult struct {
	Verdict FingerVerdict
	// Summary is the first word of the "… TLS connection established" line:
	// "Verified", "Trusted", "Untrusted" or "Anonymous"; "" without TLS.
	Summary string
	Output  string
}

// HostDest is posttls-finger's destination for one host without MX lookup:
// "[host]:port".
func HostDest(host string, port int) string { return "[" + host + "]:" + strconv.Itoa(port) }

// DomainDest is posttls-finger's destination for a mail domain: its MX
// hosts, each on port: "domain:port".
func DomainDest(domain string, port int) string { return domain + ":" + strconv.Itoa(port) }

// DANEFinger runs posttls-finger like PosttlsFinger, but verbose (-v, which
// logs the "resorting to "secure"" decisions) and with SMTP chat logging (no
// -c, so a missing STARTTLS shows), and parses the verdict:
//
//	posttls-finger -v -l dane [extraArgs...] dest
//
// dest is HostDest or DomainDest. It needs root (a private mount namespace),
// like PosttlsFinger.
func DANEFinger(ctx context.Context, resolverIP, dest string, extraArgs ...string) (*FingerResult, error) {
	bin, err := Lookup("posttls-finger")
	if err != nil {
		return nil, err
	}
	unshare, err := Lookup("unshare")
	if err != nil {
		return nil, err
	}
	if net.ParseIP(resolverIP) == nil {
		return nil, fmt.Errorf("testbed: posttls-finger: resolver %q is not an IP address", resolverIP)
	}
	f, err := os.CreateTemp("", "testbed-resolv-*.conf")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	_, err = fmt.Fprintf(f, "nameserver %s\noptions trust-ad edns0 attempts:2 timeout:2\n", resolverIP)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return nil, err
	}
	args := []string{"-m", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`,
		f.Name(), bin, "-v", "-l", "dane"}
	args = append(args, extraArgs...)
	args = append(args, dest)
	out, err := exec.CommandContext(ctx, unshare, args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("testbed: posttls-finger: %w: %s", err, tail(string(out), 2000))
	}
	return ParseFinger(string(out)), nil
}

// ParseFinger reads the verdict from posttls-finger -v -l dane output.
func ParseFinger(out string) *FingerResult {
	r := &FingerResult{Output: out, Verdict: FingerUnknown}
	var noTLSA, noUsable, daneMatched, daneFailed, lookupFailed, ehlo, starttls bool
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(line, `no usable TLSA records found, resorting to "secure"`):
			noUsable = true
		case strings.Contains(line, `no TLSA records found, resorting to "secure"`):
			noTLSA = true
		case strings.Contains(line, "Matched DANE "):
			daneMatched = true
		case strings.Contains(line, "server certificate verification failed for"),
			strings.Contains(line, "CA certificate verification failed for"):
			// Only under DANE: without TLSA the line is "certificate
			// verification failed for …: untrusted issuer".
			daneFailed = true
		case strings.Contains(line, "Destination address lookup failed"):
			lookupFailed = true
		case strings.Contains(line, "TLS connection established to "):
			if i := strings.Index(line, "posttls-finger: "); i >= 0 {
				line = line[i+len("posttls-finger: "):]
			}
			r.Summary, _, _ = strings.Cut(strings.TrimSpace(line), " ")
		}
		// Chat log: "posttls-finger: < 250-STARTTLS" (the EHLO reply).
		if _, reply, ok := strings.Cut(line, "posttls-finger: < 250"); ok {
			ehlo = true
			if kw := strings.Fields(strings.TrimLeft(reply, "- ")); len(kw) > 0 && strings.EqualFold(kw[0], "STARTTLS") {
				starttls = true
			}
		}
	}
	switch {
	case lookupFailed:
		r.Verdict = FingerLookupFailed
	case r.Summary == "" && ehlo && !starttls && noTLSA:
		r.Verdict = FingerPlaintext
	case r.Summary == "" && ehlo && !starttls:
		r.Verdict = FingerNoSTARTTLS
	case r.Summary == "":
		// No TLS and no recognisable reason.
	case noUsable:
		r.Verdict = FingerNoUsableTLSA
	case noTLSA:
		r.Verdict = FingerNoTLSA
	case r.Summary == "Verified" && daneMatched:
		r.Verdict = FingerVerified
	case r.Summary == "Trusted" && daneMatched:
		r.Verdict = FingerDANEInsecureMX
	case daneFailed && r.Summary != "Verified":
		r.Verdict = FingerDANEFailed
	}
	return r
}
