#!/bin/bash
# Runs inside the clean root that packaging/test-deb.sh prepares (chroot):
# installs the .deb given as $1 with dpkg -i and checks the result, then
# dpkg -r and dpkg -P. Every failure prints one line saying what is wrong.
set -euo pipefail
deb="$1"
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
# want_stat PATH OWNER:GROUP MODE
want_stat() {
  local got
  got="$(stat -c '%U:%G %a' "$1" 2>/dev/null)" || { fail "$1 missing"; return; }
  [ "$got" = "$2 $3" ] && ok "$1 $got" || fail "$1 is $got, want $2 $3"
}

dpkg-deb -f "$deb" Depends | grep -qw adduser || fail "Depends lacks adduser (postinst runs it)"
getent passwd tlsactl >/dev/null && fail "the clean root already has a tlsactl user"

echo "== dpkg -i"
dpkg -i "$deb"
dpkg-query -W -f='${Status}\n' tlsactl | grep -q "install ok installed" || fail "tlsactl not 'install ok installed'"

echo "== program, man pages, completion"
version="$(tlsactl --version)" || fail "tlsactl --version failed"
echo "$version"
# The binary's version (Go's VCS stamping) names the commit the package's does.
dver="$(dpkg-query -W -f='${Version}' tlsactl)"
case "$dver" in
  *git*) want="$(echo "$dver" | sed -E 's/.*\.([0-9a-f]{12}).*/\1/')" ;;
  *) want="v$dver" ;;
esac
case "$version" in
  "tlsactl "*"$want"*) ok "tlsactl --version names $want, as the package version $dver does" ;;
  *) fail "tlsactl --version does not name $want (package version $dver): $version" ;;
esac
[ "$(command -v tlsactl)" = /usr/bin/tlsactl ] || fail "tlsactl is $(command -v tlsactl), want /usr/bin/tlsactl"
man -w tlsactl >/dev/null && ok "man -w tlsactl: $(man -w tlsactl)" || fail "man -w tlsactl finds no page"
man -w tlsactl-rollover-run >/dev/null || fail "no man page for tlsactl-rollover-run"
for f in /usr/share/bash-completion/completions/tlsactl /usr/share/zsh/vendor-completions/_tlsactl \
  /usr/share/fish/vendor_completions.d/tlsactl.fish; do
  [ -s "$f" ] && ok "$f" || fail "completion $f missing or empty"
done
bash -c 'source /usr/share/bash-completion/completions/tlsactl' || fail "the bash completion does not load"

echo "== user, state directory, configuration"
getent passwd tlsactl >/dev/null || fail "no tlsactl user"
getent group tlsactl >/dev/null || fail "no tlsactl group"
uid="$(id -u tlsactl)"
[ "$uid" -lt 1000 ] && ok "tlsactl is a system user (uid $uid)" || fail "tlsactl has uid $uid: not a system user"
case "$(getent passwd tlsactl | cut -d: -f7)" in */nologin | /bin/false) ok "tlsactl has no login shell" ;; *) fail "tlsactl has a login shell" ;; esac
want_stat /var/lib/tlsactl tlsactl:tlsactl 700
want_stat /etc/tlsactl root:tlsactl 750
want_stat /etc/tlsactl/tlsactl.toml root:tlsactl 640
grep -qx /etc/tlsactl/tlsactl.toml /var/lib/dpkg/info/tlsactl.conffiles || fail "/etc/tlsactl/tlsactl.toml is not a conffile"
su -s /bin/sh tlsactl -c 'test -r /etc/tlsactl/tlsactl.toml' || fail "user tlsactl cannot read its configuration"
su -s /bin/sh nobody -c 'test ! -r /etc/tlsactl/tlsactl.toml' || fail "user nobody can read /etc/tlsactl/tlsactl.toml"
su -s /bin/sh tlsactl -c 'touch /var/lib/tlsactl/.probe && rm /var/lib/tlsactl/.probe' || fail "user tlsactl cannot write /var/lib/tlsactl"

echo "== systemd units"
units=(tlsactl-check.service tlsactl-check.timer tlsactl-rollover.service tlsactl-rollover.timer tlsactl-serve.service)
paths=()
for u in "${units[@]}"; do
  p="/lib/systemd/system/$u"
  [ -f "$p" ] || { fail "$p missing"; continue; }
  paths+=("$p")
  case "$u" in *.service)
    grep -qx 'User=tlsactl' "$p" || fail "$u does not run as User=tlsactl"
    grep -q '^ExecStart=/usr/bin/tlsactl ' "$p" || fail "$u does not start /usr/bin/tlsactl"
    ;;
  esac
  [ -e "/etc/systemd/system/timers.target.wants/$u" ] || [ -e "/etc/systemd/system/multi-user.target.wants/$u" ] &&
    fail "$u was enabled by the installation (the administrator enables it after editing the configuration)"
done
if out="$(systemd-analyze verify "${paths[@]}" 2>&1)"; then
  [ -z "$out" ] && ok "systemd-analyze verify: ${#paths[@]} units, no findings" || { echo "$out"; fail "systemd-analyze verify printed findings"; }
else
  echo "$out"
  fail "systemd-analyze verify failed"
fi
for u in tlsactl-check.service tlsactl-rollover.service tlsactl-serve.service; do
  score="$(systemd-analyze security --offline=true "/lib/systemd/system/$u" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: //p')"
  echo "systemd-analyze security $u: ${score:-?}"
done

echo "== dpkg -r"
echo '{"plan":"renew"}' >/var/lib/tlsactl/state-probe.json
chown tlsactl:tlsactl /var/lib/tlsactl/state-probe.json
echo 'key "tlsactl" {};' >/etc/tlsactl/tsig.key # a secret the administrator added
dpkg -r tlsactl
for p in /usr/bin/tlsactl /lib/systemd/system/tlsactl-rollover.service /usr/share/man/man1/tlsactl.1.gz \
  /usr/share/bash-completion/completions/tlsactl; do
  [ -e "$p" ] && fail "$p still there after dpkg -r"
done
[ -f /etc/tlsactl/tlsactl.toml ] && ok "dpkg -r keeps the conffile" || fail "dpkg -r removed the conffile"
[ -f /var/lib/tlsactl/state-probe.json ] && ok "dpkg -r keeps the state" || fail "dpkg -r removed the state"
getent passwd tlsactl >/dev/null || fail "dpkg -r removed the user"

echo "== dpkg -P"
dpkg -P tlsactl
[ -e /etc/tlsactl/tlsactl.toml ] && fail "/etc/tlsactl/tlsactl.toml still there after purge"
[ -e /var/lib/tlsactl ] && fail "/var/lib/tlsactl still there after purge"
[ -f /etc/tlsactl/tsig.key ] && ok "purge keeps a file the administrator added" || fail "purge removed /etc/tlsactl/tsig.key"
dpkg-statoverride --list | grep -q tlsactl && fail "permission overrides left after purge: $(dpkg-statoverride --list | grep tlsactl)"
getent passwd tlsactl >/dev/null && ok "purge keeps the tlsactl user (Debian policy: its uid may still own files)" || fail "purge removed the user"
dpkg-query -W -f='${Status}\n' tlsactl 2>/dev/null | grep -q "not-installed" || [ -z "$(dpkg-query -W -f='${Status}' tlsactl 2>/dev/null)" ] || fail "dpkg still knows tlsactl after purge"

if [ "$fails" -gt 0 ]; then
  echo "checks-in-root.sh: $fails check(s) failed" >&2
  exit 1
fi
echo "checks-in-root.sh: all checks passed"
