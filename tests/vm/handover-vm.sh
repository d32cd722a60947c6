#!/bin/bash
# seedbed-device replaced under running guests: two QEMU guests (Debian
# 12's kernel) read /dev/hwrng without a pause, one over EGD (rng-egd),
# one over vhost-user (vhost-user-rng-pci), while the device is replaced
# three times with 'seedbed-device --replace', then, running as systemd
# runs it with its fd store, killed with SIGKILL once.  Both keep reading
# (each guest's longest gap between reads is printed and bounded), QEMU
# reports no error, every old instance exits 0, and the metrics go on
# counting from where they were.
# shellcheck source=tests/vm/lib.sh
. "${top_srcdir:?}/tests/vm/lib.sh"
# shellcheck source=tests/vm/host-device.sh
. "$top_srcdir/tests/vm/host-device.sh"

STORE_PID=
cleanup() {
	if [ -n "$STORE_PID" ]; then
		echo stop >&7 2>/dev/null || true
		exec 7>&-
		wait "$STORE_PID" 2>/dev/null || true
	fi
	guests_cleanup
}
trap cleanup EXIT

reading_initrd

ARGS=(--egd "unix:$T/egd.sock" --vhost-user "$T/vhost.sock" --control "$T/control.sock")
start_device ho "${ARGS[@]}"

# guest NAME ARGS...: a guest in the background, its console in $T/NAME.log.
guest() {
	local name=$1
	shift
	qemu-system-x86_64 -accel tcg -m 512 -smp 1 -display none -monitor none -no-reboot \
		-serial "file:$T/$name.log" -kernel "$KDIR/vmlinuz" -initrd "$T/initrd.gz" \
		-append "$GUEST_CMDLINE" -cpu qemu64 -name "guest=$name" "$@" 2>"$T/$name.qemu" &
	GUESTS+=($!)
}
guest egd-guest -chardev "socket,id=egd,path=$T/egd.sock,reconnect=1" -object rng-egd,id=rng0,chardev=egd \
	-device virtio-rng-pci,rng=rng0
guest vhost-guest -object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \
	-chardev "socket,id=vu,path=$T/vhost.sock" -device vhost-user-rng-pci,chardev=vu


# wait_ticks N: until both guests have read N more times than now (the
# guests boot under TCG: minutes on a slow machine).
wait_ticks() {
	local want_e want_v
	want_e=$(($(ticks egd-guest) + $1)) want_v=$(($(ticks vhost-guest) + $1))
	for _ in $(seq 1800); do
		[ "$(ticks egd-guest)" -ge "$want_e" ] && [ "$(ticks vhost-guest)" -ge "$want_v" ] && return 0
		for p in "${GUESTS[@]}"; do kill -0 "$p" 2>/dev/null || fail "a guest exited: $(cat "$T"/*.qemu)"; done
		sleep 0.5
	done
	tail -5 "$T/egd-guest.log" "$T/vhost-guest.log"
	fail "the guests did not read $1 more times within 900 s (egd $(ticks egd-guest), vhost $(ticks vhost-guest))"
}

served() { # served TRANSPORT: bytes the device counts for that guest
	metric ho "seedbed_vm_bytes_total{vm=\"$1-guest\",transport=\"$2\"}"
}

wait_ticks 5
for round in 1 2 3; do
	egd_before=$(served egd egd) vhost_before=$(served vhost vhost-user)
	old=$DEVICE_PID
	"$DEVICE" --metrics "unix:$T/ho.metrics" "${ARGS[@]}" --replace >"$T/ho.device.log.$round" 2>&1 &
	DEVICE_PID=$!
	wait "$old" || fail "round $round: the replaced instance exited $?"
	grep -q "Took over 2 of 2 connections" "$T/ho.device.log.$round" ||
		{ cat "$T/ho.device.log.$round"; fail "round $round: not both connections taken over"; }
	wait_ticks 5
	egd_after=$(served egd egd) vhost_after=$(served vhost vhost-user)
	echo "round $round: egd-guest served $egd_before -> $egd_after bytes, vhost-guest $vhost_before -> $vhost_after"
	if [ "$egd_after" -le "$egd_before" ] || [ "$vhost_after" -le "$vhost_before" ]; then
		fail "round $round: the metrics did not go on from where they were"
	fi
done

# Round 4: the instance systemd runs, with its file descriptor store
# (fdstore.py plays systemd as sd_notify(3) and sd_listen_fds(3) say; no
# systemd is PID 1 here).  It takes over like the others, keeps every
# connection and the guests' memory in the store, and is killed with
# SIGKILL: systemd's Restart= starts it again with what the store kept.
mkdir "$T/store"
old=$DEVICE_PID
exec 7> >(exec python3 "$top_srcdir/tests/integration/fdstore.py" "$T/store" "$DEVICE" --metrics "unix:$T/ho.metrics" \
	"${ARGS[@]}" --replace >"$T/store.log" 2>&1)
STORE_PID=$!
wait "$old" || fail "round 4: the replaced instance exited $?"
DEVICE_PID=
store_ready() { # store_ready N: the Nth start under the store said READY=1
	for _ in $(seq 1200); do grep -qx "ready $1" "$T/store/ready" 2>/dev/null && return 0; sleep 0.05; done
	cat "$T/store.log"
	fail "start $1 under the fd store did not say READY=1"
}
store_ready 1
wait_ticks 5
# What the counters say a second before the kill is their floor after it
# (the state is written again at most every second).
egd_floor=$(served egd egd) vhost_floor=$(served vhost vhost-user)
wait_ticks 5
e0=$(ticks egd-guest) v0=$(ticks vhost-guest)
echo kill >&7
store_ready 2
if ! grep -q "Took up 1 of 1 vhost-user devices" "$T/store.log" ||
	! grep -q "Took up 1 EGD connections from their sockets" "$T/store.log"; then
	cat "$T/store.log"
	fail "SIGKILL: not both connections taken up"
fi
wait_ticks 5
egd_after=$(served egd egd) vhost_after=$(served vhost vhost-user)
echo "SIGKILL: egd-guest served $egd_floor (a second before) -> $egd_after bytes, vhost-guest $vhost_floor -> $vhost_after;" \
	"reads since: egd $(($(ticks egd-guest) - e0)), vhost $(($(ticks vhost-guest) - v0))"
if [ "$egd_after" -le "$egd_floor" ] || [ "$vhost_after" -le "$vhost_floor" ]; then
	fail "SIGKILL: the metrics went back further than a second"
fi

# Longest gap between two reads, from each guest's own clock: three
# replacements and a SIGKILL.
for name in egd-guest vhost-guest; do
	gap=$(tr -d '\r' <"$T/$name.log" | awk '$1 == "tick" { if (prev != "" && $3 - prev > max) max = $3 - prev; prev = $3 } END { printf "%.1f", max }')
	echo "$name: $(ticks "$name") reads, longest gap ${gap} s"
	awk -v g="$gap" 'BEGIN { exit !(g < 20) }' || fail "$name: a gap of $gap s between two reads"
done
for name in egd-guest vhost-guest; do
	if grep -qiE 'error|fail' "$T/$name.qemu"; then
		cat "$T/$name.qemu"
		fail "$name: QEMU reported an error"
	fi
done
echo stop >&7
exec 7>&-
wait "$STORE_PID" || fail "the instance under the fd store exited $? on SIGTERM"
STORE_PID=
