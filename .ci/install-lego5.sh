#!/usr/bin/env bash
# Installs lego v5.6.0 (the current major version of lego's CLI) as
# /usr/local/bin/lego5, beside Debian's lego 4.9.1 (/usr/bin/lego), for the
# Pebble end-to-end tests that run each lego version's hook contract.
#
# `go install github.com/go-acme/lego/v5@v5.6.0` is what an operator runs;
# here the Go module proxy refuses the zips of many of lego's hosted DNS
# provider SDKs and of gitlab.com/greyxor/slogor v1.7.1 (its log handler),
# so the same release source is built with lego's own `lego_dnslight` build
# tag plus one lego_dns_<code> tag per DNS provider wanted (lego_dnslight
# alone has none at all): dnsupdate (RFC 2136, v4's `rfc2136`), exec and
# manual, none of which needs a vendor SDK; and slogor v1.7.0. Nothing of
# lego is changed or committed.
set -euo pipefail
want=v5.6.0
if command -v lego5 >/dev/null && lego5 --version 2>/dev/null | grep -q "version ${want}" &&
  lego5 dnshelp 2>/dev/null | grep -q dnsupdate; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat > go.mod <<MOD
module lego5build

go 1.26

require github.com/go-acme/lego/v5 ${want}

replace gitlab.com/greyxor/slogor => gitlab.com/greyxor/slogor v1.7.0
MOD
GOFLAGS=-mod=mod go mod download github.com/go-acme/lego/v5
GOFLAGS=-mod=mod go build -trimpath -tags lego_dnslight,lego_dns_dnsupdate,lego_dns_exec,lego_dns_manual -o /usr/local/bin/lego5 github.com/go-acme/lego/v5
lego5 --version
lego5 dnshelp | grep -q dnsupdate
