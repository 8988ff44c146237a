#!/usr/bin/env bash
# Audit-scale benchmark of `tlsactl check` (issue 14): N mail domains
# dI.bench.test, each with a DNSSEC-signed MX naming one of N/RATIO MX hosts,
# each host on its own
# loopback address 127.0.x.y with A + TLSA (3 1 1, 2 1 1) and a STARTTLS server
# that waits DELAY (default 100ms) before every reply (greeting, EHLO,
# STARTTLS, ...) to emulate a network round trip. Knot + validating Unbound
# are local (bench/checkbed).
#
# For each N: ONE `tlsactl check` call over all N domains with its default
# concurrency (--domains-from FILE when `tlsactl check --help` offers it, else
# the domains as positional arguments), wall time and peak RSS by
# /usr/bin/time; then, on the same bed, posttls-finger -c -l dane DOMAIN:PORT
# run 16-way in parallel (xargs -P16) in one `unshare -m` namespace whose
# /etc/resolv.conf names the bed's Unbound on 127.53.x.y:53. posttls-finger
# runs over at most PF_SAMPLE domains (default 1000); above that its wall time
# is extrapolated linearly (marked "~" and "(extrapolated)"). tlsactl runs
# first, on a cold resolver cache; posttls-finger then gets a warm one.
#
# Two shapes run by default (RATIOS="5 1"): 5 domains per MX host (1,000
# domains over 200 hosts, 10,000 over 2,000), as many domains share a hosting
# provider's MX, where one probe per host serves several domains; and 1 domain
# per host (10,000 hosts), the worst case for a checker, where only
# concurrency helps (issue 14's 13.8 s / 2.7x baseline is this shape).
#
# Needs root (unshare -m, port 53), posttls-finger, unbound, knotd, python3.
#
#   bench/audit.sh                 # 1000 10000
#   TLSACTL=/path/to/tlsactl bench/audit.sh   # a prebuilt binary instead of ./cmd/tlsactl
#   RATIOS=1 DELAY=100ms PF_SAMPLE=500 bench/audit.sh 1000
#
# Targets (issue 14): 10,000 domains <= 60 s on 2 cores at 100 ms per reply,
# <= 300 MB RSS, >= 10x posttls-finger 16-way.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)
read -r -a ratios <<<"${RATIOS:-5 1}"
DELAY=${DELAY:-100ms}
PF_SAMPLE=${PF_SAMPLE:-1000}
PF_PAR=${PF_PAR:-16}
for c in go python3 unshare posttls-finger; do
  command -v "$c" >/dev/null || [ -x "/usr/sbin/$c" ] || { echo "bench/audit.sh: $c not found" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench/audit.sh: needs root (unshare -m, a port-53 resolver for posttls-finger)" >&2; exit 2; }
pf=$(command -v posttls-finger || echo /usr/sbin/posttls-finger)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
out=bench/out
mkdir -p "$out"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
if [ -n "${TLSACTL:-}" ]; then cp "$TLSACTL" "$bin/tlsactl"; else go build -o "$bin/tlsactl" ./cmd/tlsactl; fi
go build -o "$bin/checkbed" ./bench/checkbed
# (help captured first: grep -q under pipefail would fail on tlsactl's SIGPIPE)
help=$("$bin/tlsactl" check --help 2>&1 || true)
case "$help" in *--domains-from*) mode=domains-from ;; *) mode=positional ;; esac

{
  echo "# bench/audit.sh $(date -u +%FT%TZ) $(nproc) CPU(s), ${DELAY} per SMTP reply, input: $mode"
  printf '%-8s %-6s %-10s %-8s %-8s %-20s %-22s %-8s %s\n' domains hosts tlsactl_s RSS_MB cpu_s tlsactl_result "pf${PF_PAR}_s" speedup pf_verified
} | tee "$out/audit.txt"
for RATIO in "${ratios[@]}"; do
for n in "${sizes[@]}"; do
  hosts=$(( (n + RATIO - 1) / RATIO ))
  t=$n-r$RATIO # file tag
  coproc BED { "$bin/checkbed" -n "$hosts" -domains "$n" -delay "$DELAY" -port53 2>"$out/auditbed-$t.err"; }
  IFS= read -r ready <&"${BED[0]}" || { echo "checkbed failed:"; cat "$out/auditbed-$t.err"; exit 1; }
  j() { python3 -c "import json,sys;d=json.load(sys.stdin);$1" <<<"$ready"; }
  resolver=$(j 'print(d["resolver"])')
  r53=$(j 'print(d["resolver53"])')
  port=$(j 'print(d["port"])')
  j 'print("\n".join(x.rstrip(".") for x in d["domains"]))' > "$out/audit-domains-$t.txt"

  # tlsactl: one call over all N domains, its defaults.
  if [ "$mode" = domains-from ]; then
    targs=(--domains-from "$out/audit-domains-$t.txt")
  else
    mapfile -t targs < "$out/audit-domains-$t.txt"
  fi
  cmd=("$bin/tlsactl" check --resolver "$resolver" --port "$port")
  echo "+ tlsactl check --resolver $resolver --port $port $( [ "$mode" = domains-from ] && echo "--domains-from $out/audit-domains-$t.txt" || echo "<$n domains>" )" >&2
  set +e
  /usr/bin/time -f '%e %M %U %S' -o "$out/audit-time-$t.txt" "${cmd[@]}" "${targs[@]}" > "$out/audit-check-$t.txt" 2>"$out/audit-check-$t.err"
  code=$?
  set -e
  read -r wall rss usr sys < "$out/audit-time-$t.txt"
  summary=$(tail -n 1 "$out/audit-check-$t.txt" | cut -c1-60)
  result="exit$code"
  case "$summary" in OK:*) result="exit$code,OK" ;; esac

  # posttls-finger, PF_PAR-way, over the first min(N, PF_SAMPLE) domains.
  m=$(( n < PF_SAMPLE ? n : PF_SAMPLE ))
  head -n "$m" "$out/audit-domains-$t.txt" | sed "s/\$/:$port/" > "$out/audit-pf-in-$t.txt"
  printf 'nameserver %s\noptions trust-ad edns0 attempts:2 timeout:2\n' "$r53" > "$bin/resolv.conf"
  chmod 644 "$bin/resolv.conf"
  echo "+ unshare -m sh -c 'mount --bind resolv.conf /etc/resolv.conf && xargs -P$PF_PAR -n1 $pf -c -l dane' < <$m x DOMAIN:$port>" >&2
  set +e
  /usr/bin/time -f '%e %M' -o "$out/audit-pftime-$t.txt" unshare -m sh -c \
    'mount --bind "$0" /etc/resolv.conf && exec xargs -P"$1" -n1 "$2" -c -l dane' \
    "$bin/resolv.conf" "$PF_PAR" "$pf" < "$out/audit-pf-in-$t.txt" > "$out/audit-pf-$t.txt" 2>&1
  set -e
  read -r pfwall _ < "$out/audit-pftime-$t.txt"
  verified=$(grep -c 'Verified TLS connection' "$out/audit-pf-$t.txt" || true)
  if [ "$m" -lt "$n" ]; then
    pfest=$(awk "BEGIN{printf \"%.1f\", $pfwall*$n/$m}")
    pfcol="~$pfest($m:${pfwall}s)"
  else
    pfest=$pfwall
    pfcol=$pfwall
  fi
  printf '%-8s %-6s %-10s %-8s %-8s %-20s %-22s %-8s %s\n' "$n" "$hosts" "$wall" "$(awk "BEGIN{printf \"%.1f\", $rss/1024}")" \
    "$(awk "BEGIN{printf \"%.1f\", $usr+$sys}")" \
    "$result" "$pfcol" "$(awk "BEGIN{printf \"%.1fx\", $pfest/$wall}")" "$verified/$m" | tee -a "$out/audit.txt"
  [ "$m" -lt "$n" ] && echo "  (posttls-finger: $m of $n domains measured, wall time extrapolated linearly)" | tee -a "$out/audit.txt"
  exec {BED[1]}>&-
  wait "$BED_PID" || true
done
done
