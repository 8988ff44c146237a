package testbed

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// PosttlsFinger runs Postfix's posttls-finger as an independent DANE
// verifier:
//
//	posttls-finger -c -l dane [extraArgs...] "[host]:port"
//
// posttls-finger resolves through the libc resolver, which cannot be pointed
// at a port, so it runs in a private mount namespace (`unshare -m`, needs
// root) with a temporary resolv.conf bind-mounted over /etc/resolv.conf that
// names resolverIP: an Unbound listening on resolverIP:53 (see
// UnboundConfig.Port53IP; use a distinct address per instance). The
// resolv.conf also says `options trust-ad`; Postfix 3.7 verified without it
// here (it asks for the AD bit itself), it is there for other libc setups.
//
// What the DNS must contain, found by experiment: "[host]" suppresses the MX
// lookup, so host needs an A record pointing at the server's address (the
// port comes from ":port", not from DNS), and the TLSA RRset must be at
// _<port>._tcp.<host> for the port actually dialled: a TLSA record only at
// _25._tcp.<host> is ignored (then PKIX name checks apply and fail with
// "hostname mismatch"). The zone must validate as secure through the resolver
// (AD bit), else TLSA is ignored. With "3 1 1" the certificate's names and
// chain are not checked.
//
// On success the output contains "Verified TLS connection". When the digest
// does not match it prints "num=65:no matching DANE TLSA records" and
// "Untrusted TLS connection", and still exits 0: callers must inspect the
// output; err reports only a failure to run it (or a non-zero exit).
func PosttlsFinger(ctx context.Context, resolverIP, host string, port int, extraArgs ...string) (string, error) {
	bin, err := Lookup("posttls-finger")
	if err != nil {
		return "", err
	}
	unshare, err := Lookup("unshare")
	if err != nil {
		return "", err
	}
	if net.ParseIP(resolverIP) == nil {
		return "", fmt.Errorf("testbed: posttls-finger: resolver %q is not an IP address", resolverIP)
	}
	f, err := os.CreateTemp("", "testbed-resolv-*.conf")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	_, err = fmt.Fprintf(f, "nameserver %s\noptions trust-ad edns0 attempts:2 timeout:2\n", resolverIP)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return "", err
	}
	args := []string{"-m", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`,
		f.Name(), bin, "-c", "-l", "dane"}
	args = append(args, extraArgs...)
	args = append(args, "["+host+"]:"+strconv.Itoa(port))
	out, err := exec.CommandContext(ctx, unshare, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("testbed: posttls-finger: %w: %s", err, tail(string(out), 2000))
	}
	return string(out), nil
}

// RequirePosttlsFinger skips (or, under CI=true, fails) the test unless
// posttls-finger and unshare are installed.
func RequirePosttlsFinger(tb testing.TB) {
	tb.Helper()
	Require(tb, "posttls-finger", "postfix")
	Require(tb, "unshare", "util-linux")
	RequireRoot(tb, "unshare -m and a port-53 resolver for posttls-finger")
}
