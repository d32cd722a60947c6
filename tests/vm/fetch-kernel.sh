#!/bin/bash
# fetch-kernel.sh DIR [SUITE]: puts the kernel of Debian's
# linux-image-amd64 into DIR: DIR/vmlinuz, DIR/modules/ (lib/modules/
# VERSION) and DIR/version.  Without SUITE it is the one this machine's
# apt sources name (on Debian 12: the kernel a Debian 12 cloud image
# boots); with SUITE (say bullseye) it comes from that release, through
# a private apt state under DIR, leaving the machine's own untouched.
# Cached: a second call with the kernel already there does nothing.
# Safe to call from parallel tests.
set -euo pipefail

dir=$1
suite=${2:-}
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9

[ -s "$dir/version" ] && [ -s "$dir/vmlinuz" ] && exit 0

apt_opts=()
if [ -n "$suite" ]; then
	# The same mirror as the machine's, another release.
	mirror=$({ cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } |
		awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i } /^deb / { print ($2 ~ /^\[/) ? $3 : $2 }' |
		awk '/\/debian\/?$/ { print; exit }')
	mirror=${mirror:-http://deb.debian.org/debian}
	mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$dir/apt/sources.list"
	apt_opts=(-o "Dir::Etc::SourceList=$dir/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache" -o Debug::NoLocking=1)
	apt-get "${apt_opts[@]}" -q update >/dev/null 2>&1 || {
		echo "fetch-kernel: cannot read the $suite package lists from $mirror" >&2
		exit 1
	}
fi

pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$pkg" ]; then
	echo "fetch-kernel: cannot resolve linux-image-amd64 (run 'apt-get update' first)" >&2
	exit 1
fi

tmp=$(mktemp -d "$dir/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get "${apt_opts[@]}" download -q "$pkg" >/dev/null 2>&1) || {
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
