#!/usr/bin/env bash
# Usage: build-busybox.sh VERSION SHA256 OUT
# Builds busybox from its upstream source, as Debian's archive keeps it (busybox_VERSION.orig.tar.bz2),
# with upstream's default configuration, statically linked: the e2e busybox image is the official busybox
# image, whose ash passes on environment variables that are not shell names (data-1, set by EnvFrom specs)
# and whose messages specs compare ("/bin/sh: can't create /file: Read-only file system"). Debian's
# busybox-static builds drop such variables. tc is left out: it does not build against this kernel's headers.
set -euo pipefail
version=$1 sum=$2 out=$(realpath -m "$3")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
url=http://deb.debian.org/debian/pool/main/b/busybox/busybox_$version.orig.tar.bz2
curl -fsSL --retry 3 -o "$tmp/src.tar.bz2" "$url"
echo "$sum  $tmp/src.tar.bz2" | sha256sum -c --quiet - || { echo "$url: unexpected sha256" >&2; exit 1; }
tar -C "$tmp" -xjf "$tmp/src.tar.bz2"
cd "$tmp/busybox-$version"
make defconfig >/dev/null
sed -i 's/^# CONFIG_STATIC is not set/CONFIG_STATIC=y/; s/^CONFIG_TC=y/# CONFIG_TC is not set/' .config
make -j"$(nproc)" >build.log 2>&1 || { tail -30 build.log >&2; exit 1; }
install -D -m 0755 busybox "$out"
