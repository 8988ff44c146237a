#!/usr/bin/env bash
# Whole-process benchmark of `tlsactl check`: N MX hosts on loopback addresses
# 127.0.x.y in one DNSSEC-signed zone (Knot + validating Unbound, started by
# bench/checkbed), each with A + TLSA (3 1 1, 2 1 1) and a STARTTLS server,
# checked in ONE call. Measures wall time and peak RSS with /usr/bin/time for
# N = 100, 300, 1000 (override: bench/check.sh 100 1000 3000).
# Target (issue 3): 1,000 hosts in <= 10 s wall and <= 150 MB RSS on 2 cores,
# cost linear in hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 300 1000)
out=bench/out
mkdir -p "$out"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/tlsactl" ./cmd/tlsactl
go build -o "$bin/checkbed" ./bench/checkbed

printf '%-6s %-10s %-12s %-8s %s\n' hosts wall_s maxrss_MB status hosts/s | tee "$out/check.txt"
for n in "${sizes[@]}"; do
  coproc BED { "$bin/checkbed" -n "$n" -delay 0 2>"$out/checkbed-$n.err"; }
  IFS= read -r ready <&"${BED[0]}" || { echo "checkbed failed:"; cat "$out/checkbed-$n.err"; exit 1; }
  echo "$ready" > "$out/checkbed-$n.json"
  resolver=$(python3 -c 'import json,sys;print(json.load(sys.stdin)["resolver"])' <<<"$ready")
  port=$(python3 -c 'import json,sys;print(json.load(sys.stdin)["port"])' <<<"$ready")
  mapfile -t hosts < <(python3 -c 'import json,sys;[print("--host\n"+h) for h in json.load(sys.stdin)["hosts"]]' <<<"$ready")
  set +e
  /usr/bin/time -f '%e %M' -o "$out/time-$n.txt" "$bin/tlsactl" check --json --resolver "$resolver" --port "$port" \
    --concurrency 64 "${hosts[@]}" > "$out/check-$n.json"
  code=$?
  set -e
  read -r wall rss < "$out/time-$n.txt"
  status=$(python3 -c 'import json,sys;print(json.load(sys.stdin)["status"])' < "$out/check-$n.json")
  ok=$(python3 -c 'import json,sys;r=json.load(sys.stdin);print(sum(1 for h in r["hosts"] if h["status"]=="OK"))' < "$out/check-$n.json")
  printf '%-6s %-10s %-12s %-8s %s\n' "$n" "$wall" "$(awk "BEGIN{printf \"%.1f\", $rss/1024}")" "$status($ok ok)" \
    "$(awk "BEGIN{printf \"%.0f\", $n/$wall}")" | tee -a "$out/check.txt"
  exec {BED[1]}>&-
  wait "$BED_PID" || true
  if [ "$code" -ne 0 ]; then
    echo "tlsactl check exited $code for $n hosts; see $out/check-$n.json" >&2
    exit 1
  fi
done
