#!/usr/bin/env bash
# The NCSC procedure's records for one MX host, from the bundled example
# material (examples/pki: public certificates only), then an offline check
# that the served chain matches them.
#
#   bash examples/create-and-match.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/tlsactl
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./cmd/tlsactl

echo "# 2 1 1: the issuing CA (NCSC factsheet: python tlsa --create --port 25 --usage 2 --selector 1 --certificate CA.pem)"
"$bin" create --port 25 --usage 2 --selector 1 --certificate examples/pki/issuing-ca.pem mail.example.nl
echo "# 3 1 1: the server certificate"
"$bin" create --port 25 --usage 3 --selector 1 --certificate examples/pki/mail.example.nl.pem mail.example.nl
echo "# both records, zone-file ready with a TTL, in RFC 3597 form as well"
"$bin" create --output both --ttl 3600 --certificate examples/pki/fullchain.pem mail.example.nl
"$bin" create --output both --ttl 3600 --usage 2 --certificate examples/pki/fullchain.pem mail.example.nl

echo "# does the chain Postfix serves (fullchain.pem) match the RRset?"
"$bin" match --chain examples/pki/fullchain.pem --host mail.example.nl --rrset examples/mail.example.nl.tlsa
