#!/usr/bin/env bash
# Installs the tlsactl .deb into a clean Debian 12 root and checks what it
# installed, then removes and purges it and checks what is left.
#
# The clean root is `debootstrap --variant=minbase bookworm` plus the tools
# the checks need (systemd for systemd-analyze, man-db, adduser — adduser is
# the package's one dependency and minbase lacks it), cached under $CACHE
# (about 50 s to build, once). Every run uses it read-only: a private mount
# namespace (unshare -m) stacks an overlayfs with a scratch upper layer on
# it, so a run never changes the cache or the host and always starts clean.
# Inside the root (chroot): dpkg -i, then
#   tlsactl --version; man -w tlsactl; the bash, zsh and fish completions;
#   the tlsactl system user and group; /var/lib/tlsactl tlsactl:tlsactl 0700;
#   /etc/tlsactl root:tlsactl 0750; /etc/tlsactl/tlsactl.toml root:tlsactl
#   0640 and a conffile; systemd-analyze verify on every installed unit;
#   the units run as User=tlsactl and are not enabled;
#   dpkg -r: program, units and man pages gone, the conffile, the state and
#   the user kept; dpkg -P: the conffile, the state directory and the
#   permission overrides gone, the user kept (Debian policy), a file the
#   administrator added to /etc/tlsactl kept.
# Needs root, debootstrap (apt-get install debootstrap) and network access to
# a Debian mirror the first time.
#
#   bash packaging/test-deb.sh                      # the newest dist/tlsactl_*.deb
#   bash packaging/test-deb.sh dist/tlsactl_….deb
#   CACHE=/tmp/debroot MIRROR=http://deb.debian.org/debian bash packaging/test-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."

deb="${1:-$(ls -t dist/tlsactl_*.deb 2>/dev/null | head -1)}"
[ -n "$deb" ] && [ -f "$deb" ] || { echo "test-deb.sh: no .deb given and none in dist/: run packaging/build.sh first" >&2; exit 2; }
deb="$(realpath "$deb")"
[ "$(id -u)" = 0 ] || { echo "test-deb.sh: needs root (debootstrap, unshare -m, mount, chroot)" >&2; exit 2; }

MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
INCLUDE=systemd,man-db,adduser
CACHE="${CACHE:-/var/cache/tlsactl-test-deb}"
root="$CACHE/$SUITE-minbase-${INCLUDE//,/-}"

# The clean root, built once: into a temporary directory, renamed when
# debootstrap succeeded (a stamp file marks it complete).
if [ ! -f "$root/.tlsactl-root-complete" ]; then
  command -v debootstrap >/dev/null || { echo "test-deb.sh: debootstrap missing: apt-get install debootstrap" >&2; exit 2; }
  mkdir -p "$CACHE"
  tmp="$(mktemp -d "$CACHE/.build.XXXXXX")"
  echo "test-deb.sh: debootstrap --variant=minbase --include=$INCLUDE $SUITE into $root (once)"
  start=$SECONDS
  if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$MIRROR" >"$tmp.log" 2>&1; then
    tail -20 "$tmp.log" >&2
    echo "test-deb.sh: debootstrap failed (log: $tmp.log)" >&2
    rm -rf "$tmp"
    exit 1
  fi
  # No daemon may start inside the root.
  printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
  chmod 755 "$tmp/usr/sbin/policy-rc.d"
  touch "$tmp/.tlsactl-root-complete"
  rm -rf "$root" "$tmp.log"
  mv "$tmp" "$root"
  echo "test-deb.sh: clean root ready in $((SECONDS - start)) s"
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/tlsactl-test-deb.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/upper" "$scratch/work" "$scratch/merged"
cp "$deb" "$scratch/tlsactl.deb"
cp packaging/checks-in-root.sh "$scratch/checks-in-root.sh"

# In a private mount namespace: the overlay, /proc, the .deb and the checks
# bound in; everything is unmounted when the namespace ends.
unshare --mount --propagation private -- /bin/sh -euc '
  s="$1"; lower="$2"
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$s/upper,workdir=$s/work" "$s/merged"
  mount -t proc proc "$s/merged/proc"
  mkdir -p "$s/merged/tmp/pkg"
  mount --bind "$s" "$s/merged/tmp/pkg"
  exec chroot "$s/merged" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    /bin/bash /tmp/pkg/checks-in-root.sh /tmp/pkg/tlsactl.deb
' sh "$scratch" "$root"
echo "test-deb.sh: $(basename "$deb") installs, works, removes and purges cleanly in a fresh $SUITE root"
