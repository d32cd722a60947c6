#!/bin/bash
# build-image.sh [--profile lab|cloud] [--plain] CACHE_DIR SRC_DIR OUT_DIR: a real
# Debian guest image made with the distribution's own tools, with seedbed
# installed from its Debian packages (built from SRC_DIR by
# tests/pkg/build-debs.sh) with "apt-get install ./….deb" in the image's
# chroot, as image builders (debos, vmdb2, mkosi, virt-customize) do.
#
#   lab    Debian 12 (bookworm): seedbed-agent and seedbed-agent-dracut, a
#          generic dracut initramfs with the seedbed module (no --add), and
#          beside it the one initramfs-tools' mkinitramfs makes; no SSH host
#          keys, an empty machine-id; a LUKS volume "data" configured on
#          /dev/vdb.  OUT_DIR also gets data.img (a blank 64 MiB disk),
#          initrd-itools.img, and root logs in (password "seedbed", and
#          OUT_DIR/id_ed25519).
#   cloud  Debian 13 (trixie) as a cloud image is: cloud-init,
#          openssh-server with the host keys its postinst made left in
#          place (as an image builder that forgets them ships it), sudo,
#          seedbed-agent and no seedbed configuration; the initramfs is the
#          one initramfs-tools' trigger made when the package went in.
#          The machine-id is empty.  OUT_DIR also gets baked-keys.fp (the
#          fingerprints of the keys left in the image).  Log in as the
#          default user cloud-init makes, with the key user-data gives.
#          With --plain, also disk-plain.img and initrd-plain.img: the same
#          image before seedbed went in (the demo's benchmark).
#
# Both leave in OUT_DIR: disk.img (ext4 root, LABEL=seedroot, no partition
# table), vmlinuz, initrd.img, version, id_ed25519 (a key to log in
# with), debs/ (the packages installed), root/ (the tree disk.img was
# made from).  The debootstrapped base with the distribution's packages
# (the slow part, a few minutes) is cached in CACHE_DIR, keyed by suite,
# mirror and package lists.  Needs root (debootstrap, chroot, mkfs.ext4 -d
# keeps owners), no mounts outside a private mount namespace.  Safe to
# call from parallel tests.
set -euo pipefail

profile=lab plain=
while [ $# -gt 3 ]; do
	case $1 in
	--profile) profile=$2; shift 2 ;;
	--plain) plain=1; shift ;;
	*) break ;;
	esac
done
cache=$1 src=$2 out=$3
case $profile in
lab)
	suite=bookworm
	# The base: what the image's boot and seedbed's agent need (the
	# agent's libraries come with cryptsetup, kmod and openssh-server
	# but are named so that a change of those packages' dependencies
	# cannot drop them).
	base_pkgs=systemd,systemd-sysv,udev,dbus,openssh-server,cryptsetup,kmod,libblkid1,libcryptsetup12,libkmod2,libssh-4,libyaml-0-2,e2fsprogs,iproute2
	# Installed with apt in the chroot, with /proc, /sys and /dev
	# mounted: apt picks dracut for linux-image-amd64's
	# "initramfs-tools | linux-initramfs-tool" (debootstrap would take
	# the first alternative).  initramfs-tools-core beside it (no kernel
	# hook: dracut stays the image's generator) makes the initramfs-tools
	# image too.
	apt_pkgs="dracut linux-image-amd64 initramfs-tools-core"
	seedbed_debs="seedbed-agent seedbed-agent-dracut"
	;;
cloud)
	suite=trixie
	base_pkgs=systemd,systemd-sysv,udev,dbus,kmod,e2fsprogs,iproute2,ca-certificates
	# debootstrap's --include cannot resolve some virtual dependencies
	# (cloud-init's python3-cryptography), apt in the chroot can.  The
	# agent's libraries are in the cached base, so that installing its
	# package needs no download.
	apt_pkgs="linux-image-amd64 initramfs-tools cloud-init openssh-server sudo"
	apt_pkgs+=" libblkid1 libcryptsetup12 libkmod2 libssh-4 libyaml-0-2"
	seedbed_debs="seedbed-agent"
	;;
*)
	echo "build-image: unknown profile '$profile' (lab, cloud)" >&2
	exit 2
	;;
esac

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
key=$(printf '%s\n' "$profile" "$suite" "$mirror" "$base_pkgs" "$apt_pkgs" "v2" | sha256sum | cut -c1-16)
base=$cache/root-$key
if [ ! -e "$base/.done" ]; then
	for old in "$cache"/root-*; do
		[ -e "$old" ] && rm -rf --one-file-system "$old"
	done
	tmp=$base.tmp
	rm -rf --one-file-system "$tmp"
	step "debootstrap $suite from $mirror"
	# In a private mount namespace: debootstrap mounts /proc and /sys in
	# the target, and a killed build must not leave them on the host.
	if ! unshare -m --propagation private -- debootstrap --variant=minbase --include="$base_pkgs" \
		"$suite" "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1; then
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
	step "apt-get install $apt_pkgs"
	# shellcheck disable=SC2086 # a list of package names
	in_chroot "$tmp" apt-get install -y -q --no-install-recommends $apt_pkgs >"$cache/apt.log" 2>&1 ||
		die "installing $apt_pkgs failed: see $cache/apt.log"
	in_chroot "$tmp" apt-get clean
	rm -f "$tmp/usr/sbin/policy-rc.d" "$tmp/etc/resolv.conf"
	# lab: the initramfs the kernel's postinst made is replaced per
	# build.  cloud: seedbed's package updates it through the trigger.
	[ "$profile" != lab ] || rm -f "$tmp"/boot/initrd.img-*
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

# As image builders leave it: no machine-id (empty: the first boot makes
# one).
empty_machine_id() {
	: >"$root/etc/machine-id"
	rm -f "$root/var/lib/dbus/machine-id"
}

# mkimage FILE: the ext4 root file system of the tree, as it is now.
mkimage() {
	rm -f "$1"
	mkfs.ext4 -q -F -L seedroot -d "$root" "$1" 3G >"$out/mkfs.log" 2>&1 ||
		die "mkfs.ext4 failed: see $out/mkfs.log"
}

step "configure the image"
echo seedbed-guest >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tseedbed-guest\n' >"$root/etc/hosts"
echo 'LABEL=seedroot / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
rm -f "$out/id_ed25519" "$out/id_ed25519.pub"
ssh-keygen -q -t ed25519 -N '' -C seedbed-test -f "$out/id_ed25519"
kver=$(basename "$(ls -d "$root"/lib/modules/*)")
echo "$kver" >"$out/version"

if [ "$profile" = cloud ]; then
	# cloud-init's network configuration is rendered for systemd-networkd,
	# as in Debian's cloud images.
	systemctl --root="$root" -q enable systemd-networkd.service
	# The keys openssh-server's postinst made stay, as an image builder
	# who forgot them ships them.
	set -- "$root"/etc/ssh/ssh_host_*_key.pub
	[ -e "$1" ] || die "openssh-server left no host keys in the image"
	for f in "$@"; do ssh-keygen -l -f "$f"; done | awk '{ print $1, $2, $NF }' | sort >"$out/baked-keys.fp"
	# No NoCloud seed is looked for anywhere but the seed disk.
	printf 'datasource_list: [ NoCloud, None ]\n' >"$root/etc/cloud/cloud.cfg.d/90_test_datasource.cfg"
	empty_machine_id
	if [ -n "$plain" ]; then
		# The same image without seedbed, for the demo's benchmark:
		# cloud-init alone makes the keys.
		step "mkfs.ext4 (without seedbed)"
		cp "$root/boot/initrd.img-$kver" "$out/initrd-plain.img"
		mkimage "$out/disk-plain.img"
	fi
fi

# The packages, built once per state of the source tree (cached).
step "seedbed's Debian packages"
bash "$src/tests/pkg/build-debs.sh" "$out/debs" >"$out/build-debs.log" 2>&1 ||
	die "building the packages failed: see $out/build-debs.log"
debs=()
for p in $seedbed_debs; do
	set -- "$out/debs/${p}_"*.deb
	[ -e "$1" ] || die "build-debs.sh made no $p package"
	debs+=("/tmp/seedbed-debs/$(basename "$1")")
done

step "apt-get install ${debs[*]##*/}"
mkdir -p "$root/tmp/seedbed-debs"
cp "$out/debs/"*.deb "$root/tmp/seedbed-debs/"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
in_chroot "$root" apt-get install -y -q --no-install-recommends "${debs[@]}" >"$out/install.log" 2>&1 ||
	die "apt-get install of seedbed's packages failed: see $out/install.log"
rm -rf "$root/tmp/seedbed-debs" "$root/usr/sbin/policy-rc.d"
# What the packages must have done on their own: the agent and its units
# in place and enabled, the initramfs-tools hook installed.
[ -x "$root/usr/sbin/seedbed-agent" ] || die "the package put no /usr/sbin/seedbed-agent"
for u in seedbed-seed.service seedbed-firstboot.service; do
	[ "$(systemctl --root="$root" is-enabled "$u" 2>&1)" = enabled ] ||
		die "the package did not enable $u: $(systemctl --root="$root" is-enabled "$u" 2>&1)"
done
[ -x "$root/usr/share/initramfs-tools/hooks/seedbed" ] || die "the package put no initramfs-tools hook"
# (The drop-in is a link to /usr/share/seedbed: read through the chroot.)
if ! [ -L "$root/etc/cloud/cloud.cfg.d/90_seedbed.cfg" ] || ! chroot "$root" test -s /etc/cloud/cloud.cfg.d/90_seedbed.cfg; then
	die "the package put no cloud-init drop-in"
fi

if [ "$profile" = lab ]; then
	[ -d "$root/usr/lib/dracut/modules.d/90seedbed" ] || die "the package put no dracut module"
	# Networking for ssh: DHCP on the virtio NIC (QEMU's user network).
	mkdir -p "$root/etc/systemd/network"
	printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/80-dhcp.network"
	systemctl --root="$root" -q enable systemd-networkd.service ssh.service
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
	# Root logs in on the serial console (password "seedbed") and over
	# ssh with OUT_DIR/id_ed25519.
	echo root:seedbed | chroot "$root" /usr/sbin/chpasswd
	install -d -m 0700 "$root/root/.ssh"
	install -m 0600 "$out/id_ed25519.pub" "$root/root/.ssh/authorized_keys"

	step "dracut $kver"
	# A generic initramfs, as cloud images are built; no --add: the
	# seedbed module must come in on its own.
	in_chroot "$root" dracut -q --no-hostonly --force \
		"/boot/initrd.img-$kver" "$kver" >"$out/dracut.log" 2>&1 ||
		die "dracut failed: see $out/dracut.log"
	# (Not "lsinitrd | grep -q": grep's early exit fails lsinitrd, and
	# so the pipeline under pipefail.)
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
	mv "$root/boot/initrd.img-itools-$kver" "$out/initrd-itools.img"
	# As image builders leave it: no host keys.
	rm -f "$root"/etc/ssh/ssh_host_*
	rm -f "$out/data.img"
	truncate -s 64M "$out/data.img"
else
	# cloud: the initramfs is the one the package's trigger
	# (update-initramfs) made, with seedbed in it.
	listing=$(in_chroot "$root" lsinitramfs "/boot/initrd.img-$kver")
	case $listing in
	*scripts/init-top/seedbed*usr/sbin/seedbed-agent* | *usr/sbin/seedbed-agent*scripts/init-top/seedbed*) ;;
	*) die "installing seedbed-agent did not put seedbed into the image's initramfs (update-initramfs trigger)" ;;
	esac
fi

empty_machine_id

cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$out/initrd.img"

step "mkfs.ext4"
mkimage "$out/disk.img"
step "done: $out"
