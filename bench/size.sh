#!/usr/bin/env bash
# Binary size of tlsactl (issue 12, item 6): the default build (every DNS
# provider, embedded ACME, PostgreSQL state) and the minimal RFC 2136-only
# build (-tags nohosted,noacme,nopostgres), each as the Debian package builds
# it (-trimpath -ldflags='-s -w': no symbol table, no DWARF) and as a plain
# `go build`. Prints one line per build: bytes, MiB, tags, flags.
#
#   bench/size.sh              # builds into a temporary directory, removed afterwards
#   KEEP=/tmp/sizes bench/size.sh   # keep the four binaries there
set -euo pipefail
cd "$(dirname "$0")/.."

out="${KEEP:-$(mktemp -d)}"
mkdir -p "$out"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$out"' EXIT

minimal="nohosted,noacme,nopostgres"
printf '%-10s %12s %9s  %-28s %s\n' build bytes MiB tags flags
for build in default minimal; do
  tags=""
  [ "$build" = minimal ] && tags="$minimal"
  for flavour in package plain; do
    bin="$out/tlsactl-$build-$flavour"
    flags=()
    [ "$flavour" = package ] && flags=(-trimpath "-ldflags=-s -w")
    go build -tags="$tags" "${flags[@]}" -o "$bin" ./cmd/tlsactl
    bytes=$(stat -c %s "$bin")
    printf '%-10s %12d %9.1f  %-28s %s\n' "$build" "$bytes" "$(awk -v b="$bytes" 'BEGIN { print b / 1048576 }')" \
      "${tags:-(none)}" "${flags[*]:-(none)}"
  done
done
