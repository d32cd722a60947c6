#!/bin/bash
# Sourced by the VM tests: boots the kernel a Debian 12 image boots
# (fetched once into the test cache) under QEMU with TCG, with a minimal
# initramfs that runs a test script as early as a real initramfs would.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86 is not installed"
[ -x /bin/busybox ] || skip "busybox-static is not installed"
command -v depmod >/dev/null || skip "kmod is not installed"

CACHE=${SEEDBED_TEST_CACHE:-${top_builddir:?}/test-cache}
KDIR=$CACHE/kernel
# Offline, or not on Debian: skipped (and failed where CI says strict).
"$top_srcdir/tests/vm/fetch-kernel.sh" "$KDIR" || skip "cannot fetch the guest kernel"

# use_kernel SUITE: boot that Debian release's kernel from now on (the
# default is this machine's release).
use_kernel() {
	KDIR=$CACHE/kernel-$1
	"$top_srcdir/tests/vm/fetch-kernel.sh" "$KDIR" "$1" || skip "cannot fetch the $1 kernel"
}

# The kernel must not get ready on its own: no trusted CPU or bootloader
# seed, so only the agent's sources can make it ready.
GUEST_CMDLINE="console=ttyS0 panic=-1 random.trust_cpu=off random.trust_bootloader=off"

# boot NAME SCRIPT APPEND [QEMU ARGS...]: boots a guest that runs SCRIPT;
# its kernel log lands in $T/NAME/serial.log, what SCRIPT left in
# /results in $T/NAME/ (test.log, test.status, ...).
boot() {
	local name=$1 script=$2 append=$3 out
	shift 3
	out=$T/$name
	mkdir -p "$out"
	bash "$top_srcdir/tests/vm/mkinitramfs.sh" "$out/initrd.gz" "$KDIR" "$AGENT" "$script" ||
		fail "$name: building the initramfs failed"
	timeout 300 qemu-system-x86_64 -accel tcg -m 512 -smp 1 -display none -monitor none -no-reboot \
		-serial "file:$out/serial.log" -serial "file:$out/results.b64" \
		-kernel "$KDIR/vmlinuz" -initrd "$out/initrd.gz" -append "$GUEST_CMDLINE $append" "$@" ||
		fail "$name: QEMU failed"
	tr -d '\r' <"$out/results.b64" | base64 -d | tar xf - -C "$out" ||
		{ tail -30 "$out/serial.log"; fail "$name: the guest left no results"; }
	echo "--- $name: guest output"
	cat "$out/test.log"
}
