#!/usr/bin/env bash
# Builds the Debian package of tlsactl into dist/:
#   the binary (CGO_ENABLED=0 go build -trimpath -ldflags='-s -w'; its version
#   comes from git through Go's VCS stamping: a tag vX.Y.Z, else a pseudo
#   version, "+dirty" for a modified work tree), the man pages
#   (tlsactl man --dir), bash/zsh/fish completion (tlsactl completion),
#   the systemd units of examples/systemd with ExecStart=/usr/bin/tlsactl,
#   then `go tool nfpm pkg --packager deb` (nfpm pinned in go.mod).
# The Debian version: X.Y.Z for a tag vX.Y.Z on HEAD, X.Y.Z+gitN.<rev> N
# commits after it, 0.0.0~gitYYYYMMDD.<rev> without any tag; "+dirty" is not
# a valid Debian version part, so a modified tree gets ".dirty" appended.
#
#   bash packaging/build.sh                       # dist/tlsactl_<version>_<arch>.deb
#   TAGS=nohosted,noacme,nopostgres bash packaging/build.sh   # the minimal build (RFC 2136 only)
#   GOARCH=arm64 bash packaging/build.sh          # man pages and completion then come from a host build
# Prints the path of the package on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

TAGS="${TAGS:-}"
GOARCH="${GOARCH:-$(go env GOARCH)}"
stage=dist/stage
rm -rf "$stage"
mkdir -p "$stage/man" "$stage/completion" "$stage/systemd"

# Debian version from git.
rev="$(git rev-parse --short=12 HEAD)"
if tag="$(git describe --tags --match 'v[0-9]*' --abbrev=0 2>/dev/null)"; then
  n="$(git rev-list --count "$tag..HEAD")"
  version="${tag#v}"
  [ "$n" = 0 ] || version="$version+git$n.$rev"
else
  version="0.0.0~git$(TZ=UTC git show -s --format=%cd --date=format-local:%Y%m%d HEAD).$rev"
fi
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || version="$version.dirty"
# Reproducible file times inside the package: the commit's time.
SOURCE_DATE_EPOCH="$(git show -s --format=%ct HEAD)"
export SOURCE_DATE_EPOCH

# -buildvcs=true: the version `tlsactl --version` prints comes from git
# (a GOFLAGS=-buildvcs=false in the environment would make it "(devel)").
CGO_ENABLED=0 GOOS=linux GOARCH="$GOARCH" go build -buildvcs=true -trimpath -ldflags='-s -w' -tags="$TAGS" \
  -o "$stage/tlsactl" ./cmd/tlsactl

# Man pages and completion need a binary that runs here.
gen="$stage/tlsactl"
if [ "$GOARCH" != "$(go env GOHOSTARCH)" ]; then
  gen="$stage/tlsactl-host"
  CGO_ENABLED=0 go build -trimpath -tags="$TAGS" -o "$gen" ./cmd/tlsactl
fi
"$gen" man --dir "$stage/man"
gzip -9n "$stage"/man/*.1
for sh in bash zsh fish; do
  "$gen" completion "$sh" >"$stage/completion/tlsactl.$sh"
done
[ "$gen" = "$stage/tlsactl" ] || rm -f "$gen"

for u in examples/systemd/*.service examples/systemd/*.timer; do
  sed 's#/usr/local/bin/tlsactl#/usr/bin/tlsactl#g' "$u" >"$stage/systemd/$(basename "$u")"
done

case "$GOARCH" in
  386) arch=i386 ;;
  arm) arch=armhf ;;
  *) arch="$GOARCH" ;;
esac
export TLSACTL_DEB_VERSION="$version" TLSACTL_DEB_ARCH="$arch"
deb="dist/tlsactl_${version}_${arch}.deb"
rm -f "$deb"
go tool nfpm pkg --config packaging/nfpm.yaml --packager deb --target "$deb" >&2
ls -l "$deb" >&2
echo "$deb"
