#!/bin/bash
# Sourced by the VM tests that put seedbed-device behind their guests'
# virtio-rng: start it, stop it, read its metrics.  Needs $T and fail()
# from tests/integration/lib.sh.

DEVICE=${SEEDBED_DEVICE:-${top_builddir:?}/seedbed-device}
command -v curl >/dev/null || skip "curl is not installed"

# start_device NAME ARGS...: runs the device in the background with its
# metrics on $T/NAME.metrics; its log in $T/NAME.device.log.  Waits until
# it listens (up to 60 s: the sources' startup tests run first, and this
# machine may be busy with guests).
start_device() {
	local name=$1
	shift
	"$DEVICE" --metrics "unix:$T/$name.metrics" "$@" >"$T/$name.device.log" 2>&1 &
	DEVICE_PID=$!
	for _ in $(seq 1200); do
		[ -S "$T/$name.metrics" ] && return 0
		kill -0 "$DEVICE_PID" 2>/dev/null || break
		sleep 0.05
	done
	cat "$T/$name.device.log"
	fail "$name: seedbed-device did not listen within 60 s"
}

# stop_device: SIGTERM, as systemd stops it; it must exit 0.
stop_device() {
	kill "$DEVICE_PID"
	wait "$DEVICE_PID" || fail "seedbed-device exited $? on SIGTERM"
	DEVICE_PID=
}

# metric NAME FILTER: the value of the sample whose line starts with
# FILTER, from a scrape now; 0 if there is none.
metric() {
	curl -s --unix-socket "$T/$1.metrics" http://localhost/metrics >"$T/$1.scrape" || fail "$1: metrics not served"
	awk -v f="$2" 'index($0, f) == 1 { print $2; found = 1 } END { if (!found) print 0 }' "$T/$1.scrape"
}

# Guests that read without a pause, for the tests that change things
# under them (restarts, migration).  reading_initrd: $T/initrd.gz, whose
# guest reads 1 KiB of /dev/hwrng every 0.2 s for as long as it runs and
# says "tick N UPTIME" on its console.
reading_initrd() {
	cat >"$T/read.sh" <<'SCRIPT'
modprobe virtio_rng
# The kernel's own hwrng thread would compete with us for the device.
echo 0 >/sys/class/misc/hw_random/rng_quality 2>/dev/null
i=0
while :; do
	head -c 1024 /dev/hwrng >/dev/null
	i=$((i + 1))
	read -r up _ </proc/uptime
	echo "tick $i $up" >/dev/ttyS0
	sleep 0.2
done
SCRIPT
	bash "${top_srcdir:?}/tests/vm/mkinitramfs.sh" "$T/initrd.gz" "$KDIR" "$AGENT" "$T/read.sh" ||
		fail "building the initramfs"
}

# ticks NAME: how many reads the guest with console $T/NAME.log reported.
ticks() {
	local n
	n=$(grep -c '^tick ' "$T/$1.log" 2>/dev/null)
	echo "${n:-0}"
}

# The guests in the background (GUESTS+=($!)) and the device go with the
# test: trap guests_cleanup EXIT.
GUESTS=()
guests_cleanup() {
	local p
	for p in "${GUESTS[@]}" ${DEVICE_PID:+"$DEVICE_PID"}; do kill "$p" 2>/dev/null || true; done
	for p in "${GUESTS[@]}" ${DEVICE_PID:+"$DEVICE_PID"}; do wait "$p" 2>/dev/null || true; done
	[ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"
}
