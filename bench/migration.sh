#!/usr/bin/env bash
# Whole-process benchmark of a scheduled CA migration (issue 10): twenty MX
# hosts mx01…mx20 in two DNSSEC-signed zones on one Knot (RFC 2136 + TSIG),
# each on its own loopback address 127.25.R.n port 25 (eighteen Go STARTTLS
# servers that read their files on reload, two real Postfix instances), TLSA
# TTL 5 s, margin 1 s, a DANE probe every 250 ms on every host through the
# senders' Unbound. On ONE bed it measures
#   fleet: `tlsactl migration start` + `migration run --wait` moving all
#          twenty hosts to a new CA (max_parallel 4), start → last host done;
#   loop:  the same move once more with twenty single ca-migrations, one host
#          after another (`rollover start --plan ca-migration` + `provide` +
#          `rollover run --wait`).
# The bed is TestFleetMigrationBench in cmd/tlsactl/migration_e2e_test.go
# (it also asserts what TestFleetMigrationE2E asserts: zero probe and
# posttls-finger failures, final records, max_parallel, one UPDATE per zone).
#
# Target (issue 10): fleet ≤ TTL + margin + ⌈20/4⌉ × the longest deploy + 5 s,
# where a host's deploy is its slot, from "deploying" to done (the 3 1 1
# replaced and the old CA retired).
#
# Needs root (port 25, Postfix, unshare -m for posttls-finger), knotd,
# unbound, postfix, posttls-finger, bash. Writes bench/out/migration.txt.
#
#   bench/migration.sh            # one run
#   bench/migration.sh 3          # three runs
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
[ "$(id -u)" -eq 0 ] || { echo "bench/migration.sh: needs root (port 25, Postfix, unshare -m)" >&2; exit 2; }
for c in go knotd unbound postfix posttls-finger unshare bash; do
  command -v "$c" >/dev/null || [ -x "/usr/sbin/$c" ] || { echo "bench/migration.sh: $c not found" >&2; exit 2; }
done
out=bench/out
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Compile the test binary once (it builds tlsactl itself, with -tags failpoints).
go test -c -o "$tmp/tlsactl.test" ./cmd/tlsactl

echo "# bench/migration.sh $(date -u +%FT%TZ) $(nproc) CPU(s)" | tee "$out/migration.txt"
printf '%-4s %-9s %-9s %-7s %-13s %-12s %-10s %s\n' run fleet_s loop_s ratio deploy_max_s slot_max_s target_s within_target | tee -a "$out/migration.txt"
fail=0
for i in $(seq 1 "$runs"); do
  log="$out/migration-$i.log"
  set +e
  (cd cmd/tlsactl && CI=true TLSACTL_BENCH=1 "$tmp/tlsactl.test" -test.run '^TestFleetMigrationBench$' -test.v -test.count=1 -test.timeout 15m) >"$log" 2>&1
  code=$?
  set -e
  line=$(grep -o 'BENCH .*' "$log" | tail -1 || true)
  if [ -z "$line" ]; then
    echo "run $i: no BENCH line (exit $code); see $log" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  v() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  printf '%-4s %-9s %-9s %-7s %-13s %-12s %-10s %s\n' "$i" "$(v fleet_s)" "$(v loop_s)" "$(v ratio)" "$(v deploy_max_s)" \
    "$(v slot_max_s)" "$(v target_s)" "$(v within_target)" | tee -a "$out/migration.txt"
  echo "  $line" >> "$out/migration.txt"
  if [ "$code" -ne 0 ] || [ "$(v within_target)" != true ]; then
    echo "run $i: exit $code, within target: $(v within_target); see $log" >&2
    fail=1
  fi
done
exit "$fail"
