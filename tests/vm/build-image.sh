#!/bin/bash
# build-image.sh CACHE_DIR SRC_DIR OUT_DIR: a real Debian 12 guest image
# made with the distribution's own tools, with seedbed built from SRC_DIR
# as a distribution package builds it (--prefix=/usr --sysconfdir=/etc
# --localstatedir=/var) and installed with "make install DESTDIR=", as an
# image builder would ship it: no SSH host keys, an empty machine-id, a
# generic dracut initramfs with the seedbed module.  Leaves in OUT_DIR:
#   disk.img     ext4 root file system (LABEL=seedroot), no partition table
#   data.img     a blank 64 MiB disk for LUKS (the guest's /dev/vdb)
#   vmlinuz, initrd.img, version   the image's kernel and (dracut) initramfs
#   initrd-itools.img   the same made by initramfs-tools' mkinitramfs
#   id_ed25519   a key that logs in as root (and root's password: seedbed)
#   root/        the tree disk.img was made from
# The image's /etc/seedbed/seedbed.yaml makes a LUKS volume "data" on
# /dev/vdb; the rest is seedbed's defaults (the kernel command line
# overrides them per boot).
# The debootstrapped root (the slow part, a few minutes) is cached in
# CACHE_DIR, keyed by the suite, mirror and package lists, and so is the
# build tree.  Needs root (debootstrap, chroot, mkfs.ext4 -d keeps
# owners), no mounts outside a private mount namespace.  Safe to call
# from parallel tests.
set -euo pipefail

cache=$1 src=$2 out=$3
suite=bookworm
# The base: what the image's boot and seedbed's agent need (the agent's
# libraries come with cryptsetup, kmod and openssh-server but are named
# so that a change of those packages' dependencies cannot drop them).
base_pkgs=systemd,systemd-sysv,udev,dbus,openssh-server,cryptsetup,kmod,libblkid1,libcryptsetup12,libkmod2,libssh-4,libyaml-0-2,e2fsprogs,iproute2
# Installed with apt in the chroot, with /proc, /sys and /dev mounted:
# apt picks dracut for linux-image-amd64's "initramfs-tools |
# linux-initramfs-tool" (debootstrap would take the first alternative).
# initramfs-tools-core beside it (no kernel hook: dracut stays the
# image's generator) makes the initramfs-tools image too.
kernel_pkgs="dracut linux-image-amd64 initramfs-tools-core"

t0=$SECONDS
step() {
	echo "build-image: [$((SECONDS - t0))s] $*" >&2
}
die() {
	echo "build-image: $*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mkfs.ext4 -d)"
[ -x "$src/configure" ] || die "$src has no configure script (run autoreconf -fi there)"
src=$(realpath "$src")
for cmd in unshare chroot mkfs.ext4 ssh-keygen sha256sum curl; do
	command -v "$cmd" >/dev/null || die "$cmd is not installed"
done
if ! command -v debootstrap >/dev/null; then
	step "installing debootstrap"
	apt-get install -y -q debootstrap >/dev/null || die "cannot install debootstrap"
fi

# The same mirror as the machine's (as fetch-kernel.sh finds it).
mirror=$({ cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } |
	awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i } /^deb / { print ($2 ~ /^\[/) ? $3 : $2 }' |
	awk '/\/debian\/?$/ { print; exit }')
mirror=${mirror:-http://deb.debian.org/debian}

# in_chroot ROOT COMMAND...: runs COMMAND in ROOT with /proc, /sys and
# /dev mounted there, in a private mount namespace: the mounts vanish
# with the process, whatever happens to it.
in_chroot() {
	local root=$1
	shift
	# shellcheck disable=SC2016 # expanded by the inner shell
	unshare -m --propagation private -- /bin/sh -euc '
		root=$1
		shift
		mount -t proc proc "$root/proc"
		mount -t sysfs sysfs "$root/sys"
		mount --rbind /dev "$root/dev"
		exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
			DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
	' in_chroot "$root" "$@"
}

# --- The cached base root. ---------------------------------------------
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
key=$(printf '%s\n' "$suite" "$mirror" "$base_pkgs" "$kernel_pkgs" "v1" | sha256sum | cut -c1-16)
base=$cache/root-$key
if [ ! -e "$base/.done" ]; then
	for old in "$cache"/root-*; do
		[ -e "$old" ] && rm -rf --one-file-system "$old"
	done
	tmp=$base.tmp
	rm -rf --one-file-system "$tmp"
	step "debootstrap $suite from $mirror"
	if ! debootstrap --variant=minbase --include="$base_pkgs" "$suite" "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1; then
		# Offline is not a failure of the image (exit 77: the tests skip).
		if ! curl -fsS -o /dev/null --max-time 20 "$mirror/dists/$suite/Release"; then
			echo "build-image: cannot reach $mirror" >&2
			exit 77
		fi
		die "debootstrap failed: see $cache/debootstrap.log and $tmp/debootstrap/debootstrap.log"
	fi
	# No service starts in the chroot (policy-rc.d, 101: "not allowed").
	printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
	chmod 0755 "$tmp/usr/sbin/policy-rc.d"
	cp /etc/resolv.conf "$tmp/etc/resolv.conf"
	step "apt-get install $kernel_pkgs"
	# shellcheck disable=SC2086 # a list of package names
	in_chroot "$tmp" apt-get install -y -q --no-install-recommends $kernel_pkgs >"$cache/apt.log" 2>&1 ||
		die "installing $kernel_pkgs failed: see $cache/apt.log"
	in_chroot "$tmp" apt-get clean
	rm -f "$tmp/usr/sbin/policy-rc.d" "$tmp/etc/resolv.conf"
	# The initramfs the kernel's postinst made is replaced per build.
	rm -f "$tmp"/boot/initrd.img-*
	touch "$tmp/.done"
	mv "$tmp" "$base"
fi

# --- This build's image. -----------------------------------------------
step "copy $base"
mkdir -p "$out"
root=$out/root
rm -rf --one-file-system "$root"
cp -a --reflink=auto "$base" "$root"
rm -f "$root/.done"

# The build tree, kept between runs of the same source tree (make redoes
# what changed): this machine is Debian 12 too, so what links here links
# in the image.
build=$cache/build-$(printf '%s' "$src" | sha256sum | cut -c1-12)
mkdir -p "$build"
if [ ! -f "$build/Makefile" ]; then
	step "configure (--prefix=/usr)"
	(cd "$build" && "$src/configure" --prefix=/usr --sysconfdir=/etc --localstatedir=/var \
		>"$build/configure.out" 2>&1) || die "configure failed: see $build/configure.out"
fi
step "make"
make -s -C "$build" -j"$(nproc)" >"$build/make.log" 2>&1 || die "make failed: see $build/make.log"

step "make install"
make -s -C "$build" install DESTDIR="$(realpath "$root")" >"$out/install.log" 2>&1 ||
	die "make install failed: see $out/install.log"
[ -x "$root/usr/sbin/seedbed-agent" ] || die "make install put no /usr/sbin/seedbed-agent"
[ -d "$root/usr/lib/dracut/modules.d/90seedbed" ] || die "make install put no dracut module"
grep -q '^ExecStart=/usr/sbin/seedbed-agent firstboot$' "$root/usr/lib/systemd/system/seedbed-firstboot.service" ||
	die "seedbed-firstboot.service does not run /usr/sbin/seedbed-agent"

step "configure the image"
# Networking for ssh: DHCP on the virtio NIC (QEMU's user network).
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/80-dhcp.network"
systemctl --root="$root" -q enable systemd-networkd.service \
	seedbed-seed.service seedbed-firstboot.service ssh.service
# The second disk becomes the LUKS volume "data", opened at boot.
mkdir -p "$root/etc/seedbed"
cat >"$root/etc/seedbed/seedbed.yaml" <<'YAML'
# The test image's: a LUKS2 volume on the blank second disk.
luks:
  volumes:
    - device: /dev/vdb
      name: data
      label: seedbed-data
YAML
echo seedbed-guest >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tseedbed-guest\n' >"$root/etc/hosts"
echo 'LABEL=seedroot / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
# Root logs in on the serial console (password "seedbed") and over ssh
# with OUT_DIR/id_ed25519.
echo root:seedbed | chroot "$root" /usr/sbin/chpasswd
rm -f "$out/id_ed25519" "$out/id_ed25519.pub"
ssh-keygen -q -t ed25519 -N '' -C seedbed-test -f "$out/id_ed25519"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$out/id_ed25519.pub" "$root/root/.ssh/authorized_keys"

kver=$(basename "$(ls -d "$root"/lib/modules/*)")
echo "$kver" >"$out/version"
step "dracut $kver"
# A generic initramfs, as cloud images are built; no --add: the seedbed
# module must come in on its own.
in_chroot "$root" dracut -q --no-hostonly --force \
	"/boot/initrd.img-$kver" "$kver" >"$out/dracut.log" 2>&1 ||
	die "dracut failed: see $out/dracut.log"
# (Not "lsinitrd | grep -q": grep's early exit fails lsinitrd, and so
# the pipeline under pipefail.)
listing=$(in_chroot "$root" lsinitrd "/boot/initrd.img-$kver")
case $listing in
*usr/lib/systemd/system/seedbed-initrd-seed.service*) ;;
*) die "the initramfs has no seedbed-initrd-seed.service" ;;
esac
# The same image's initramfs as Debian's default generator makes it.
step "mkinitramfs $kver"
in_chroot "$root" mkinitramfs -o "/boot/initrd.img-itools-$kver" "$kver" >"$out/mkinitramfs.log" 2>&1 ||
	die "mkinitramfs failed: see $out/mkinitramfs.log"
listing=$(in_chroot "$root" lsinitramfs "/boot/initrd.img-itools-$kver")
case $listing in
*scripts/init-top/seedbed*usr/sbin/seedbed-agent* | *usr/sbin/seedbed-agent*scripts/init-top/seedbed*) ;;
*) die "the initramfs-tools initramfs has no seedbed-agent or init-top/seedbed" ;;
esac

# As image builders leave it: no host keys, no machine-id (empty: the
# first boot makes one and systemd sees a first boot).
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
mv "$root/boot/initrd.img-itools-$kver" "$out/initrd-itools.img"

step "mkfs.ext4"
rm -f "$out/disk.img" "$out/data.img"
mkfs.ext4 -q -F -L seedroot -d "$root" "$out/disk.img" 3G >"$out/mkfs.log" 2>&1 ||
	die "mkfs.ext4 failed: see $out/mkfs.log"
truncate -s 64M "$out/data.img"
step "done: $out"
