#!/bin/bash
# Shared by tools/demo and tools/check: installs the Debian packages the
# build and the tests need (only those missing), and builds out of tree.
set -euo pipefail

# shellcheck disable=SC2034 # top is for the scripts that source this
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Everything the build and the test suite use, by Debian package name.
PACKAGES=(
	build-essential autoconf automake pkg-config
	libyaml-dev libblkid-dev libssh-dev libcryptsetup-dev libssl-dev libkmod-dev libsystemd-dev
	check
	jq xz-utils groff-base shellcheck openssl
	qemu-system-x86 busybox-static cpio kmod
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
	python3 curl prometheus systemd
	openssh-server openssh-client
	cryptsetup-bin xfsprogs dosfstools lvm2 fdisk util-linux
	debootstrap e2fsprogs
	dpkg-dev debhelper lintian rpm cloud-image-utils
	clang libclang-rt-dev
)

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "These Debian packages are missing; run this as root to install them: ${missing[*]}" >&2
		exit 1
	fi
	echo "==> Installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# The tests need sshd's and promtool's binaries, not an SSH server or
	# a Prometheus listening on this machine: Debian's policy-rc.d keeps
	# the packages' services from starting, and they are disabled after.
	local policy=/usr/sbin/policy-rc.d ours=false
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		ours=true
	fi
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
		[ "$ours" = false ] || rm -f "$policy"
		exit 1
	}
	[ "$ours" = false ] || rm -f "$policy"
	for p in "${missing[@]}"; do
		case $p in
		openssh-server) disable_service ssh.service ;;
		prometheus) disable_service prometheus.service ;;
		esac
	done
}

disable_service() {
	command -v systemctl >/dev/null || return 0
	systemctl disable --now "$1" >/dev/null 2>&1 || true
	echo "    ($1 was installed for the tests only: it is disabled)"
}

# build DIR [configure options...]: configures DIR when it is new or was
# configured with other options than these (DIR/configure.args records
# them), then makes.
build() {
	local dir=$1 args again=false
	shift
	if [ ! -x "$top/configure" ]; then
		echo "==> autoreconf"
		(cd "$top" && autoreconf -fi)
	fi
	mkdir -p "$dir"
	args=$(printf '%s\n' --enable-werror "$@")
	if [ ! -f "$dir/Makefile" ] || [ "$(cat "$dir/configure.args" 2>/dev/null)" != "$args" ]; then
		[ ! -f "$dir/Makefile" ] || again=true
		# Gone until configure has succeeded: a failed run is retried.
		rm -f "$dir/configure.args"
		echo "==> configure $*"
		(cd "$dir" && "$top/configure" --enable-werror "$@" >configure.out) || {
			cat "$dir/configure.out"
			exit 1
		}
		printf '%s\n' "$args" >"$dir/configure.args"
		# make rebuilds nothing for new flags (the sanitizers', say), but
		# every object depends on config.h (-include): all are rebuilt.
		if [ "$again" = true ]; then
			touch "$dir/config.h"
		fi
		# The summary: what was found.
		sed -n '/^        seedbed /,$p' "$dir/configure.out"
	fi
	echo "==> make ($dir)"
	make -C "$dir" -j"$(nproc)" >/dev/null
}
