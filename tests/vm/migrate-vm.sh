#!/bin/bash
# A guest served over EGD, live-migrated while it reads: QEMU's QMP
# 'migrate' moves it from one QEMU process to another on this machine
# (TCP on 127.0.0.1), the destination connects to the device with a new
# EGD connection, and the guest goes on reading there.  The device's
# accounting follows the VM: its bytes go on under the same name (QEMU's
# -name) and the same budget (the destination runs as the same user, in
# the same cgroup).  vhost-user-rng cannot migrate (QEMU marks it
# unmigratable): seedbed-device(8) says so.
# shellcheck source=tests/vm/lib.sh
. "${top_srcdir:?}/tests/vm/lib.sh"
# shellcheck source=tests/vm/host-device.sh
. "$top_srcdir/tests/vm/host-device.sh"
# shellcheck source=tests/vm/qmp.sh
. "$top_srcdir/tests/vm/qmp.sh"

trap guests_cleanup EXIT

reading_initrd
start_device mig --egd "unix:$T/egd.sock"

# qemu NAME ARGS...: the same machine on both sides, as migration needs.
qemu() {
	local name=$1
	shift
	qemu-system-x86_64 -accel tcg -m 512 -smp 1 -display none -monitor none -no-reboot -cpu qemu64 \
		-name guest=mig-guest -serial "file:$T/$name.log" -qmp "unix:$T/$name.qmp,server=on,wait=off" \
		-kernel "$KDIR/vmlinuz" -initrd "$T/initrd.gz" -append "$GUEST_CMDLINE" \
		-chardev "socket,id=egd,path=$T/egd.sock,reconnect=1" -object rng-egd,id=rng0,chardev=egd \
		-device virtio-rng-pci,rng=rng0 "$@" 2>"$T/$name.qemu" &
	GUESTS+=($!)
}

wait_ticks() { # wait_ticks NAME N: until NAME's console has N ticks
	for _ in $(seq 1800); do
		[ "$(ticks "$1")" -ge "$2" ] && return 0
		sleep 0.5
	done
	tail -5 "$T/$1.log"
	fail "$1: fewer than $2 reads within 900 s"
}
served() { metric mig 'seedbed_vm_bytes_total{vm="mig-guest",transport="egd"}'; }

qemu src
wait_ticks src 5
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
qemu dst -incoming "tcp:127.0.0.1:$port"
# The destination listens once QMP says it waits for the migration.
for _ in $(seq 600); do
	qmp dst query-status 2>/dev/null | grep -q '"inmigrate"' && break
	sleep 0.1
done
qmp dst query-status | grep -q '"inmigrate"' || fail "the destination does not wait for the migration"
last=$(tr -d '\r' <"$T/src.log" | awk '$1 == "tick" { n = $2 } END { print n }')
qmp src migrate "{\"uri\": \"tcp:127.0.0.1:$port\"}" >/dev/null || fail "QMP migrate"
for _ in $(seq 1200); do
	status=$(qmp_field src query-migrate status)
	case $status in completed | failed | cancelled) break ;; esac
	sleep 0.5
done
[ "$status" = completed ] || fail "the migration ended '$status'"
# A migrated source stays paused: it quits, or it is killed.
qmp src quit >/dev/null 2>&1 || kill "${GUESTS[0]}" 2>/dev/null || true
wait "${GUESTS[0]}" 2>/dev/null || true
unset 'GUESTS[0]'
# The source's connection is gone: what the device serves from here on
# is the destination's, counted under the guest's name.
for _ in $(seq 100); do
	[ "$(metric mig 'seedbed_vm_connections{vm="mig-guest",transport="egd"}')" = 1 ] && break
	sleep 0.1
done
[ "$(metric mig 'seedbed_vm_connections{vm="mig-guest",transport="egd"}')" = 1 ] ||
	fail "mig-guest does not have exactly one connection after the source quit"
mid=$(served)
mid_ticks=$(ticks dst)
echo "migrated after tick $last; the device had served $mid bytes to mig-guest"

# The guest goes on at the destination: its ticks continue from where
# they were (the same guest, not a new boot).
wait_ticks dst $((mid_ticks + 5))
first=$(tr -d '\r' <"$T/dst.log" | awk '$1 == "tick" { print $2; exit }')
echo "the destination's first tick: $first"
[ "$first" -gt "$last" ] || fail "the destination started over ($first after $last)"
after=$(served)
echo "the device served $after bytes to mig-guest after"
# Five more reads of 1 KiB at the destination, all through the device (the
# first may have been served in part before mid).
[ "$((after - mid))" -ge $((4 * 1024)) ] || fail "the device's accounting did not follow the VM ($mid -> $after)"
[ "$(metric mig 'seedbed_connections_total{transport="egd"}')" -ge 2 ] || fail "the destination did not connect"
for name in src dst; do
	if grep -qiE 'error|fail' "$T/$name.qemu"; then
		cat "$T/$name.qemu"
		fail "$name: QEMU reported an error"
	fi
done
stop_device
