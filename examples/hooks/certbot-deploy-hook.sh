#!/bin/sh
# certbot deploy hook: hand a renewed lineage to tlsactl, which deploys it only
# when the published TLSA records cover it (DANE never breaks).
#
#   certbot certonly -d mx.example.nl ... --deploy-hook /usr/local/lib/tlsactl/certbot-deploy-hook.sh
#   certbot renew [--reuse-key] --deploy-hook /usr/local/lib/tlsactl/certbot-deploy-hook.sh
# or install it as /etc/letsencrypt/renewal-hooks/deploy/tlsactl.sh (certbot
# stores --deploy-hook in the renewal configuration; its timer runs it again).
# certbot certonly --csr runs no deploy hook: see certbot-csr.sh.
#
# certbot sets RENEWED_LINEAGE (the live/<name> directory: fullchain.pem,
# privkey.pem, cert.pem, chain.pem) and RENEWED_DOMAINS; tlsactl reads them.
#   TLSACTL          the tlsactl binary            (default: tlsactl on PATH)
#   TLSACTL_CONFIG   the tlsactl configuration     (default: /etc/tlsactl/tlsactl.toml)
#
# Exit status: 0 when the certificate is deployed (or nothing had to change);
# non-zero when tlsactl holds it back (a new CA whose "2 1 1" must first age a
# TTL); `tlsactl rollover run` (examples/systemd) deploys it later. certbot
# only logs a hook's exit status ("reported error code 75") and exits 0. Do not let
# another deploy hook (e.g. `postfix reload` on the new files) run before it:
# point Postfix at tlsactl's deploy files, not at certbot's live/ directory.
set -eu
exec "${TLSACTL:-tlsactl}" hook certbot --config "${TLSACTL_CONFIG:-/etc/tlsactl/tlsactl.toml}"
