#!/bin/bash
# seedbed-device serving real QEMU guests: the Debian 12 kernel reads
# 64 KiB from /dev/hwrng through rng-egd and through vhost-user-rng-pci,
# the device's metrics count them for that VM by name, and a per-VM rate
# limit holds within 10% as measured inside the guest.
# shellcheck source=tests/vm/lib.sh
. "${top_srcdir:?}/tests/vm/lib.sh"

# shellcheck source=tests/vm/host-device.sh
. "$top_srcdir/tests/vm/host-device.sh"

trap '[ -z "${DEVICE_PID:-}" ] || kill "$DEVICE_PID" 2>/dev/null || true; [ -z "${HOSTILE_PID:-}" ] || kill "$HOSTILE_PID" 2>/dev/null || true; [ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"' EXIT

# The guest reads 64 KiB from /dev/hwrng, as a user of the device would.
cat >"$T/read.sh" <<'SCRIPT'
modprobe virtio_rng
cat /sys/class/misc/hw_random/rng_current >/results/current
head -c 65536 /dev/hwrng >/results/data
SCRIPT

check_data() { # check_data NAME: the guest got 64 KiB that look random
	local f=$T/$1/data size packed
	size=$(stat -c %s "$f")
	[ "$size" = 65536 ] || fail "$1: the guest read $size bytes, not 65536"
	packed=$(gzip -9 -c "$f" | wc -c)
	[ "$packed" -gt 65000 ] || fail "$1: the guest's bytes compress to $packed: not random"
	[ "$(cat "$T/$1/current")" = virtio_rng.0 ] || fail "$1: hwrng $(cat "$T/$1/current")"
}

# 1. EGD: QEMU's rng-egd backend on a unix socket.
start_device egd --egd "unix:$T/egd.sock"
boot egd "$T/read.sh" "" -cpu qemu64 -name guest=egd-guest \
	-chardev "socket,id=egd,path=$T/egd.sock" -object rng-egd,id=rng0,chardev=egd \
	-device virtio-rng-pci,rng=rng0
check_data egd
served=$(metric egd 'seedbed_vm_bytes_total{vm="egd-guest",transport="egd"}')
[ "$served" -ge 65536 ] || fail "egd: metrics count $served bytes for egd-guest"
[ "$(metric egd 'seedbed_connections_total{transport="egd"}')" -ge 1 ] || fail "egd: no connection counted"
stop_device
[ ! -e "$T/egd.sock" ] || fail "egd: the socket was left behind"

# 2. vhost-user: guest RAM shared with the back-end through a memfd.
#    Before the guest starts, a hostile front-end in a cgroup of its own
#    (another VM, to the device) maps as much as it can over many
#    connections: it gets its VM's cap (limits.vm-memory, 8 TiB by
#    default) and is refused the rest, and the honest guest is served.
start_device vhost --vhost-user "$T/vhost.sock"
CG=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
HOSTILE_CG=$CG/seedbed-vm-$$
if [ -z "$CG" ] || ! mkdir "$HOSTILE_CG"; then
	skip "no writable cgroup2 hierarchy for the hostile front-end"
fi
sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$HOSTILE_CG" \
	python3 "$top_srcdir/tests/integration/vhost-hostile.py" "$T/vhost.sock" 8 8 512G >"$T/hostile" 2>&1 &
HOSTILE_PID=$!
for _ in $(seq 600); do [ -s "$T/hostile" ] && break; sleep 0.05; done
[ "$(cat "$T/hostile")" = "accepted 2 refused 6" ] || fail "hostile front-end: $(cat "$T/hostile")"
[ "$(metric vhost 'seedbed_refused_total{reason="vm-memory"}')" = 6 ] || fail "vhost: vm-memory refusals not counted"
boot vhost "$T/read.sh" "" -cpu qemu64 -name guest=vhost-guest \
	-object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \
	-chardev "socket,id=vu,path=$T/vhost.sock" -device vhost-user-rng-pci,chardev=vu
check_data vhost
served=$(metric vhost 'seedbed_vm_bytes_total{vm="vhost-guest",transport="vhost-user"}')
[ "$served" -ge 65536 ] || fail "vhost: metrics count $served bytes for vhost-guest"
[ "$(metric vhost 'seedbed_protocol_errors_total{transport="vhost-user"}')" = 0 ] || fail "vhost: protocol errors"
kill "$HOSTILE_PID"
wait "$HOSTILE_PID" 2>/dev/null || true
for _ in $(seq 100); do rmdir "$HOSTILE_CG" 2>/dev/null && break; sleep 0.05; done
stop_device

# 3. A per-VM limit of 8 KiB/s, measured by the guest over 48 KiB after
#    the initial burst is spent.
cat >"$T/rate.sh" <<'SCRIPT'
modprobe virtio_rng
# The kernel's own hwrng thread would share the limit with us.
echo 0 >/sys/class/misc/hw_random/rng_quality 2>/dev/null
head -c 8192 /dev/hwrng >/dev/null
read -r t0 _ </proc/uptime
head -c 49152 /dev/hwrng >/results/data
read -r t1 _ </proc/uptime
echo "$t0 $t1" >/results/times
SCRIPT
start_device rate --egd "unix:$T/rate.sock" --rate 8192/1s --burst 8192
boot rate "$T/rate.sh" "" -cpu qemu64 -name guest=rate-guest \
	-chardev "socket,id=egd,path=$T/rate.sock" -object rng-egd,id=rng0,chardev=egd \
	-device virtio-rng-pci,rng=rng0
read -r t0 t1 <"$T/rate/times"
rate=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", 49152 / (b - a) }')
echo "rate limit 8192 B/s, measured in the guest: $rate B/s"
if [ "$rate" -lt 7373 ] || [ "$rate" -gt 9012 ]; then
	fail "rate: $rate B/s is not within 10% of 8192"
fi
throttled=$(metric rate 'seedbed_vm_throttled_seconds_total{vm="rate-guest",transport="egd"}')
awk -v t="$throttled" 'BEGIN { exit !(t > 1) }' || fail "rate: throttled time $throttled"
stop_device
