#!/bin/sh
# lego hook: hand a new or renewed certificate to tlsactl, which deploys it only
# when the published TLSA records cover it (DANE never breaks). One script for
# both lego versions: tlsactl tells their hook environments apart.
#
# lego v5 (one command, `run`, for the first certificate and every renewal;
# the flags come after it; the RFC 2136 provider is `dnsupdate`, DNSUPDATE_*):
#   lego run --dns dnsupdate --domains mx.example.nl … --deploy-hook /usr/local/lib/tlsactl/lego-hook.sh
# lego v4 (e.g. Debian 12's 4.9.1; global flags, then `run` or `renew`):
#   lego --dns rfc2136 --domains mx.example.nl … run   --run-hook   /usr/local/lib/tlsactl/lego-hook.sh
#   lego --dns rfc2136 --domains mx.example.nl … renew --renew-hook /usr/local/lib/tlsactl/lego-hook.sh
#
# lego splits the hook command at blanks and passes no arguments: configure
# this script through the environment (or edit the defaults below).
#   TLSACTL          the tlsactl binary            (default: tlsactl on PATH)
#   TLSACTL_CONFIG   the tlsactl configuration     (default: /etc/tlsactl/tlsactl.toml)
# lego v5 sets LEGO_HOOK_CERT_PATH, LEGO_HOOK_CERT_KEY_PATH,
# LEGO_HOOK_ISSUER_CERT_PATH and LEGO_HOOK_CERT_DOMAINS; lego v4 sets
# LEGO_CERT_DOMAIN, LEGO_CERT_PATH, LEGO_CERT_KEY_PATH (and, in versions newer
# than 4.9.1, LEGO_ISSUER_CERT_PATH). tlsactl reads them.
#
# Exit status: 0 when the certificate is deployed (or nothing had to change);
# non-zero when tlsactl holds it back, e.g. a certificate from a new CA whose
# "2 1 1" must first age a TTL in every cache. Then the rollover is recorded and
# `tlsactl rollover run` (the systemd timer in examples/systemd) deploys it later.
# Either lego then exits 1 (it keeps the certificate it stored).
set -eu
exec "${TLSACTL:-tlsactl}" hook lego --config "${TLSACTL_CONFIG:-/etc/tlsactl/tlsactl.toml}"
