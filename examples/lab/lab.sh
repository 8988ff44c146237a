#!/usr/bin/env bash
# The tlsactl lab: DANE-safe ACME renewals, end to end, on this machine only.
#
# Starts Knot (a DNSSEC-signed zone lab.test that takes RFC 2136 updates), a
# validating Unbound, Postfix (mx.lab.test) and Pebble (an ACME test CA) on
# 127.0.0.1, in a temporary directory, then walks with the tlsactl CLI and
# Debian's lego through
#   1. a CA migration: the server moves from its self-made "lab CA" to Pebble;
#      the certificate is held back until the new CA's 2 1 1 has aged a TTL;
#   2. a renewal with a fresh key: deployed at once, the 3 1 1 replaced;
# checking DANE (tlsactl check) after each, and tears everything down.
# Nothing leaves the machine; the TLSA TTL is short (LAB_TTL, default 5 s).
#
# Run it from anywhere in the repository, as root (Postfix's master needs it):
#   sudo examples/lab/lab.sh
# Needs: go, and
#   apt-get install -y --no-install-recommends knot knot-dnsutils unbound postfix lego openssl
#   GOBIN=/usr/local/bin go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1
# LAB_KEEP=1 keeps the directory (logs, state, lego's files) for a look afterwards.
set -euo pipefail

cd "$(dirname "$0")/../.."
ttl="${LAB_TTL:-5}"
export PATH="$PATH:/usr/sbin:/sbin"

work="$(mktemp -d /tmp/tlsactl-lab.XXXXXX)"
labbed_pid=""
cleanup() {
  local rc=$?
  exec 3>&- 2>/dev/null || true # closing labbed's stdin stops every server
  if [ -n "$labbed_pid" ]; then
    wait "$labbed_pid" 2>/dev/null || true
  fi
  if [ "${LAB_KEEP:-}" = 1 ]; then
    echo "kept $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

n=0
# step "description" command…: runs the command with its output in the log,
# prints "step N: description … ok", or the log and "FAILED" and stops.
step() {
  local what="$1"
  shift
  n=$((n + 1))
  printf 'step %d: %s … ' "$n" "$what"
  if "$@" >"$work/step-$n.log" 2>&1; then
    echo ok
    sed 's/^/    /' "$work/step-$n.log"
  else
    echo FAILED
    sed 's/^/    /' "$work/step-$n.log"
    exit 1
  fi
}

need() {
  local missing=()
  for b in go knotd keymgr unbound postfix lego pebble openssl; do
    command -v "$b" >/dev/null || missing+=("$b")
  done
  if [ "$(id -u)" != 0 ]; then
    echo "run the lab as root (Postfix's master daemon needs it)"
    return 1
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "missing: ${missing[*]}"
    echo "  apt-get install -y --no-install-recommends knot knot-dnsutils unbound postfix lego openssl"
    echo "  GOBIN=/usr/local/bin go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1"
    return 1
  fi
  go build -o "$work/bin/tlsactl" ./cmd/tlsactl
  go build -o "$work/bin/labbed" ./examples/lab/labbed
  echo "built tlsactl and labbed into $work/bin"
}

start_bed() {
  mkfifo "$work/labbed.in"
  "$work/bin/labbed" -dir "$work/bed" -ttl "$ttl" <"$work/labbed.in" >"$work/labbed.out" 2>&1 &
  labbed_pid=$!
  exec 3>"$work/labbed.in"
  for _ in $(seq 1 600); do
    if grep -q '^ready' "$work/labbed.out"; then
      # shellcheck disable=SC1091
      . "$work/bed/lab.env"
      echo "Knot $LAB_KNOT (zone $LAB_ZONE), Unbound $LAB_RESOLVER, Postfix $LAB_HOST on 127.0.0.1:$LAB_PORT"
      echo "Pebble $LAB_PEBBLE; tlsactl configuration $LAB_CONFIG (TLSA TTL ${LAB_TTL}s)"
      return 0
    fi
    if ! kill -0 "$labbed_pid" 2>/dev/null; then
      cat "$work/labbed.out"
      return 1
    fi
    sleep 0.2
  done
  echo "the servers did not come up in 2 minutes"
  cat "$work/labbed.out"
  return 1
}

tlsactl() { "$work/bin/tlsactl" "$@"; }

# lego against Pebble, DNS-01 through RFC 2136 into Knot (RFC2136_* come
# from lab.env), everything below $work/lego.
lego_() {
  mkdir -p "$work/lego"
  (cd "$work/lego" && LEGO_CA_CERTIFICATES="$LAB_PEBBLE_CA" lego --server "$LAB_PEBBLE" --accept-tos \
    --email lab@example.test --domains "$LAB_HOST" --dns rfc2136 --dns.resolvers "$LAB_LEGO_RESOLVER" \
    --dns.disable-cp --path "$work/lego" "$@")
}

# check: `tlsactl check` through the caching resolver must say OK. Right after
# a swap the resolver may still hold the previous RRset for up to a TTL: then
# only the 2 1 1 matches, DANE holds, and check says WARNING (exit 1); that is
# retried until the TTL has passed. CRITICAL (exit 2) fails at once.
check() {
  local deadline=$((SECONDS + LAB_TTL + 5)) rc
  while :; do
    rc=0
    # --warn-days 1 --critical-days 0: Pebble issues short-lived certificates
    # (a few days), which a real check would rightly call CRITICAL
    tlsactl check --resolver "$LAB_RESOLVER" --port "$LAB_PORT" --host "$LAB_HOST" --warn-days 1 --critical-days 0 >"$work/check.out" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then
      cat "$work/check.out"
      return 0
    fi
    if [ "$rc" != 1 ] || [ "$SECONDS" -ge "$deadline" ]; then
      cat "$work/check.out"
      return 1
    fi
    if [ -z "${warned:-}" ]; then
      warned=1
      echo "(cached RRset from before the swap, still valid through the other record:)"
      sed 's/^/  /' "$work/check.out"
    fi
    sleep 1
  done
}

tlsa_now() {
  tlsactl rollover status --config "$LAB_CONFIG" --host "$LAB_HOST" | grep 'current RRset' || true
}

issue_held_back() {
  local rc=0
  lego_ run --run-hook "$work/bin/tlsactl hook lego --config $LAB_CONFIG" >"$work/lego-run.log" 2>&1 || rc=$?
  grep -E '^(mx\.|tlsactl: )' "$work/lego-run.log" || true
  if [ "$rc" = 0 ] || ! grep -q 'held back' "$work/lego-run.log"; then
    echo "expected the hook to hold the certificate back (lego exit $rc):"
    cat "$work/lego-run.log"
    return 1
  fi
  echo "lego exit $rc: the hook holds the certificate back (Postfix keeps the lab CA's chain)"
}

new_ca_published() {
  local st
  st="$(tlsactl rollover status --config "$LAB_CONFIG" --host "$LAB_HOST")"
  echo "$st" | head -3
  # lab CA 2 1 1 + old 3 1 1 + Pebble's 2 1 1
  echo "$st" | grep -q 'ca-migration rollover, active' &&
    [ "$(echo "$st" | grep 'current RRset' | tr ',' '\n' | grep -c '2 1 1')" = 2 ]
}

deploy_after_ttl() {
  local t0=$SECONDS
  tlsactl rollover run --config "$LAB_CONFIG" --host "$LAB_HOST" --wait --timeout 5m
  echo "took $((SECONDS - t0)) s (TTL ${LAB_TTL} s)"
  tlsactl rollover status --config "$LAB_CONFIG" --host "$LAB_HOST" | grep -q 'ca-migration rollover, done'
  tlsa_now
}

serves_pebble() {
  openssl crl2pkcs7 -nocrl -certfile "$LAB_DEPLOY_CHAIN" | openssl pkcs7 -print_certs -noout | grep -i 'issuer' | head -1
  grep -q 'Pebble' <(openssl x509 -in "$LAB_DEPLOY_CHAIN" -noout -issuer)
}

renew_now() {
  local before after
  before="$(openssl x509 -in "$LAB_DEPLOY_CHAIN" -noout -pubkey | openssl sha256)"
  lego_ renew --days 100 --no-random-sleep --renew-hook "$work/bin/tlsactl hook lego --config $LAB_CONFIG" >"$work/lego-renew.log" 2>&1 || {
    cat "$work/lego-renew.log"
    return 1
  }
  grep -E 'renew rollover' "$work/lego-renew.log" || true
  after="$(openssl x509 -in "$LAB_DEPLOY_CHAIN" -noout -pubkey | openssl sha256)"
  [ "$before" != "$after" ] || { echo "the served key did not change"; return 1; }
  echo "served key changed; no TTL wait"
  tlsactl rollover status --config "$LAB_CONFIG" --host "$LAB_HOST" | grep -q 'renew rollover, done'
  tlsa_now
}

teardown() {
  exec 3>&-
  wait "$labbed_pid"
  labbed_pid=""
  echo "Knot, Unbound, Postfix and Pebble stopped"
}

step "build tlsactl and the lab bed" need
step "start Knot, Unbound, Postfix and Pebble on 127.0.0.1" start_bed
warned=""
step "check DANE before: lab CA chain, 3 1 1 + 2 1 1 published" check
step "lego issues a certificate from Pebble (DNS-01 via RFC 2136); the hook sees a new CA and holds it back" issue_held_back
step "publish new CA 2 1 1 beside the old records" new_ca_published
step "wait a TTL, deploy the Pebble certificate, retire the old records (rollover run --wait)" deploy_after_ttl
step "Postfix serves the Pebble chain" serves_pebble
warned=""
step "check DANE after the CA migration" check
step "lego renews with a fresh key; the hook deploys it and replaces the 3 1 1" renew_now
warned=""
step "check DANE after the renewal" check
step "tear down" teardown
echo "lab done: a CA migration and a renewal, DANE intact at every step"
