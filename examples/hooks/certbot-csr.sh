#!/bin/sh
# The next-key renewal with certbot (RFC 7671 §8.1, a fresh key every renewal
# and never an outage): obtain a certificate for the CSR that
# `tlsactl key next --host HOST` wrote, then hand it to tlsactl.
#
#   certbot-csr.sh mx.example.nl --manual --preferred-challenges dns \
#       --manual-auth-hook '/usr/local/lib/tlsactl/certbot-rfc2136-hook.sh add' \
#       --manual-cleanup-hook '/usr/local/lib/tlsactl/certbot-rfc2136-hook.sh delete'
#
# The arguments after HOST go to `certbot certonly --csr` (the authenticator and
# its options, --server, -m ...). certbot --csr writes no key, keeps no lineage
# (certbot renew does not renew it) and, in certbot 2.1 (Debian 12), runs no
# deploy hook: this script runs `tlsactl hook certbot` itself, with
# RENEWED_LINEAGE naming the directory of the new cert.pem, chain.pem and
# fullchain.pem; tlsactl takes the key from its state directory (the next key).
#   TLSACTL            the tlsactl binary            (default: tlsactl on PATH)
#   TLSACTL_CONFIG     the tlsactl configuration     (default: /etc/tlsactl/tlsactl.toml)
#   TLSACTL_STATE_DIR  tlsactl's state directory, with keys/HOST/next.csr
#                      (default: /var/lib/tlsactl; set it when the
#                      configuration names another state_dir; tlsactl reads
#                      it too)
#   CERTBOT            the certbot binary            (default: certbot on PATH)
#
# Exit status: tlsactl's. 0: deployed, the old 3 1 1 retired. 75: staged and
# held back until the next key's 3 1 1 has aged a TTL; `tlsactl rollover run`
# (the timer) deploys it. Other: nothing deployed; the files are kept and named.
# After the deploy, run `tlsactl key next --host HOST` for the renewal after.
set -eu
host=${1:?usage: $0 HOST [certbot certonly options]}
shift
host=$(printf '%s' "${host%.}" | tr '[:upper:]' '[:lower:]')
state=${TLSACTL_STATE_DIR:-/var/lib/tlsactl}
csr=$state/keys/$host/next.csr
[ -r "$csr" ] || {
	echo "$0: $csr is not readable: run 'tlsactl key next --host $host' first (or set TLSACTL_STATE_DIR)" >&2
	exit 2
}
# certbot --csr refuses to overwrite existing files: a new directory each run.
out=$(mktemp -d "${TMPDIR:-/tmp}/tlsactl-certbot-csr.XXXXXX")
"${CERTBOT:-certbot}" certonly --csr "$csr" \
	--cert-path "$out/cert.pem" --chain-path "$out/chain.pem" --fullchain-path "$out/fullchain.pem" "$@" || {
	status=$?
	rm -rf "$out"
	echo "$0: certbot certonly --csr $csr failed (exit $status)" >&2
	exit "$status"
}
status=0
RENEWED_LINEAGE=$out RENEWED_DOMAINS=$host "${TLSACTL:-tlsactl}" hook certbot \
	--config "${TLSACTL_CONFIG:-/etc/tlsactl/tlsactl.toml}" --host "$host" || status=$?
case $status in
0 | 75) rm -rf "$out" ;; # tlsactl has staged the certificate in its state directory
*) echo "$0: the new certificate was not handed over; its files are in $out" >&2 ;;
esac
exit "$status"
