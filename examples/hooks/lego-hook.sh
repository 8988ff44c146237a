#!/bin/sh
# lego hook: hand a new or renewed certificate to tlsactl, which deploys it only
# when the published TLSA records cover it (DANE never breaks).
#
#   lego --dns rfc2136 --domains mx.example.nl … run   --run-hook   /usr/local/lib/tlsactl/lego-hook.sh
#   lego --dns rfc2136 --domains mx.example.nl … renew --renew-hook /usr/local/lib/tlsactl/lego-hook.sh
#
# lego splits the hook command at blanks and passes no arguments: configure
# this script through the environment (or edit the defaults below).
#   TLSACTL          the tlsactl binary            (default: tlsactl on PATH)
#   TLSACTL_CONFIG   the tlsactl configuration     (default: /etc/tlsactl/tlsactl.toml)
# lego sets LEGO_CERT_DOMAIN, LEGO_CERT_PATH, LEGO_CERT_KEY_PATH (and, in newer
# versions, LEGO_ISSUER_CERT_PATH); tlsactl reads them.
#
# Exit status: 0 when the certificate is deployed (or nothing had to change);
# non-zero when tlsactl holds it back, e.g. a certificate from a new CA whose
# "2 1 1" must first age a TTL in every cache. Then the rollover is recorded and
# `tlsactl rollover run` (the systemd timer in examples/systemd) deploys it later.
set -eu
exec "${TLSACTL:-tlsactl}" hook lego --config "${TLSACTL_CONFIG:-/etc/tlsactl/tlsactl.toml}"
