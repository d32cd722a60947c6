#!/bin/bash
# fetch-kernel.sh DIR: puts the kernel of Debian's linux-image-amd64 (the
# one a Debian 12 cloud image boots) into DIR: DIR/vmlinuz, DIR/modules/
# (lib/modules/VERSION) and DIR/version.  Cached: a second call with the
# kernel already there does nothing.  Safe to call from parallel tests.
set -euo pipefail

dir=$1
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9

[ -s "$dir/version" ] && [ -s "$dir/vmlinuz" ] && exit 0

pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$pkg" ]; then
	echo "fetch-kernel: cannot resolve linux-image-amd64 (run 'apt-get update' first)" >&2
	exit 1
fi

tmp=$(mktemp -d "$dir/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || {
	echo "fetch-kernel: 'apt-get download $pkg' failed" >&2
	exit 1
}
dpkg-deb -x "$tmp"/*.deb "$tmp/x"
version=$(basename "$(ls -d "$tmp"/x/lib/modules/*)")
cp "$tmp/x/boot/vmlinuz-$version" "$dir/vmlinuz"
rm -rf "$dir/modules"
mkdir -p "$dir/modules/lib"
mv "$tmp/x/lib/modules" "$dir/modules/lib/"
echo "$version" >"$dir/version"
