#!/bin/bash
# mkinitramfs.sh OUT KERNEL_DIR AGENT SCRIPT: a minimal initramfs for a
# test guest: busybox, the agent with the libraries it links, the virtio
# modules of the fetched kernel (with modules.dep, so libkmod can load
# virtio_rng as it would in a real initramfs), /etc/initrd-release, and
# SCRIPT run by /init.  The kernel's console is the first serial port;
# what SCRIPT leaves in /results comes out on the second one as a
# base64 tar, so no kernel message can interleave with it.
set -euo pipefail

out=$1 kdir=$2 agent=$3 script=$4
version=$(cat "$kdir/version")
root=$(mktemp -d "${TMPDIR:-/tmp}/initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,sbin,usr/sbin,etc,proc,sys,dev,run,tmp,lib64,results}
cp /bin/busybox "$root/bin/busybox"

# The agent and everything it links, at the same paths.
cp "$agent" "$root/usr/sbin/seedbed-agent"
ldd "$agent" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
	mkdir -p "$root$(dirname "$lib")"
	cp -L "$lib" "$root$lib"
done

# The virtio transports and the hwrng drivers (with rng-core, a module
# on older kernels), nothing else: the guest's kernel must load
# virtio_rng because the agent asked for it.
mdir=lib/modules/$version
mkdir -p "$root/$mdir/kernel"
(cd "$kdir/modules" && find "$mdir/kernel/drivers/virtio" "$mdir/kernel/drivers/char/hw_random" \
	-name '*.ko*' -print0 | cpio -0 -pdm --quiet "$root")
cp "$kdir/modules/$mdir"/modules.{order,builtin,builtin.modinfo} "$root/$mdir/" 2>/dev/null || true
depmod -b "$root" "$version"

echo 'NAME="seedbed test initramfs"' >"$root/etc/initrd-release"
install -m 0755 "$script" "$root/test.sh"
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
# The transport only, as a real initramfs's udev would find it; the
# device then sits on the virtio bus with no driver.
modprobe virtio_pci
sh /test.sh >/results/test.log 2>&1
echo $? >/results/test.status
(cd /results && tar cf - .) | base64 >/dev/ttyS1
# A clean power-off can hang for good: shutting down virtio_rng waits for
# the kernel's hwrng thread, which waits on a host that may never answer
# (the stall scenario).  If it has not happened in 20 s, reboot at once
# (QEMU runs with -no-reboot, so that ends it too); the results are out.
(sleep 20; echo b >/proc/sysrq-trigger) &
poweroff -f
INIT
chmod 0755 "$root/init"

(cd "$root" && find . -print0 | cpio -0 -o -H newc --quiet) | gzip -1 >"$out"
