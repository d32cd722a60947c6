#!/bin/bash
# seedbed-device's caps, against the real daemon: a hostile vhost-user
# front-end maps as much guest memory, and opens as many connections, as
# it can.  Each cap (limits.* in device.yaml) refuses it with a logged
# reason and a metric, and every other VM (another cgroup) goes on being
# served: it still connects, maps, and reads over EGD.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

DEVICE=${SEEDBED_DEVICE:-$top_builddir/seedbed-device}
HOSTILE=(python3 "$top_srcdir/tests/integration/vhost-hostile.py")
CLIENT=(python3 "$top_srcdir/tests/integration/egd-client.py")
command -v python3 >/dev/null || skip "python3 is not installed"
command -v curl >/dev/null || skip "curl is not installed"
[ "$(id -u)" -eq 0 ] || skip "putting test VMs in cgroups needs root"

# Each test VM runs in a cgroup of its own: that is what tells VMs apart.
CG=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
VMS=$CG/seedbed-$$
if [ -z "$CG" ] || ! mkdir "$VMS" 2>/dev/null; then
	skip "no writable cgroup2 hierarchy to put test VMs in"
fi
PIDS=()
cleanup() {
	local p d
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	for d in "$VMS"/*/; do
		[ -d "$d" ] || continue
		# Whatever a test VM left running goes with its cgroup.
		while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$d/cgroup.procs"
		for _ in $(seq 100); do rmdir "$d" 2>/dev/null && break; sleep 0.05; done
	done
	rmdir "$VMS" || echo "warning: could not remove $VMS" >&2
	[ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

# vm NAME CMD...: runs CMD in VM NAME's cgroup.
vm() {
	local dir=$VMS/$1
	shift
	mkdir -p "$dir"
	exec sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir" "$@"
}

# hostile NAME CONNECTIONS REGIONS SIZE: a hostile VM in the background,
# holding what it got; its summary in $T/NAME.
hostile() {
	local name=$1
	shift
	(vm "$name" "${HOSTILE[@]}" "$T/vhost.sock" "$@") >"$T/$name" 2>"$T/$name.err" &
	PIDS+=($!)
	HOSTILE_PID=$!
	for _ in $(seq 600); do [ -s "$T/$name" ] && break; sleep 0.05; done
	[ -s "$T/$name" ] || { cat "$T/$name.err"; fail "$name: the hostile front-end did not finish"; }
}

metric() {
	curl -sf "http://127.0.0.1:$metrics_port/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
metrics_port=$port
cat >"$T/device.yaml" <<YAML
listen:
  egd: [unix:$T/egd.sock]
  vhost-user: [unix:$T/vhost.sock]
  metrics: tcp:127.0.0.1:$metrics_port
limits:
  vm-connections: 4
  device-memory: 4T
  vm-memory: 8T
  memory: 12T
YAML
"$DEVICE" --config "$T/device.yaml" >"$T/device.log" 2>&1 &
DEVICE_PID=$!
PIDS+=("$DEVICE_PID")
for _ in $(seq 100); do [ -S "$T/vhost.sock" ] && [ -S "$T/egd.sock" ] && break; sleep 0.05; done
[ -S "$T/vhost.sock" ] || { cat "$T/device.log"; fail "the device did not start"; }

# One device asking for more than limits.device-memory: refused.
hostile big 1 8 640G
[ "$(cat "$T/big")" = "accepted 0 refused 1" ] || fail "big: $(cat "$T/big")"
expect_in "$T/device.log" "more than limits.device-memory (4398046511104 bytes) for one device"
[ "$(metric 'seedbed_refused_total{reason="device-memory"}')" = 1 ] || fail "device-memory refusals not counted"

# VM a maps 4 TiB a connection: two fit its 8 TiB, the rest are refused.
hostile a 4 8 512G
A_PID=$HOSTILE_PID
[ "$(cat "$T/a")" = "accepted 2 refused 2" ] || fail "a: $(cat "$T/a")"
expect_in "$T/device.log" "would map 13194139533312 bytes, more than limits.vm-memory (8796093022208)"
[ "$(metric seedbed_guest_memory_mapped_bytes)" = 8796093022208 ] || fail "mapped: $(metric seedbed_guest_memory_mapped_bytes)"

# VM b opens connections without end: four are its share.
hostile b 10 0 0
[ "$(cat "$T/b")" = "accepted 4 refused 6" ] || fail "b: $(cat "$T/b")"
expect_in "$T/device.log" "holds 4 connections already (limits.vm-connections)"
[ "$(metric 'seedbed_refused_total{reason="vm-connections"}')" = 6 ] || fail "vm-connections refusals not counted"

# Every other VM is still served: c maps 4 TiB (all VMs now hold the
# process's 12 TiB), and reads over EGD.
hostile c 1 8 512G
[ "$(cat "$T/c")" = "accepted 1 refused 0" ] || fail "c: $(cat "$T/c")"
run 0 bash -c "$(declare -f vm); VMS=$VMS; vm c ${CLIENT[*]} $T/egd.sock read 32"
grep -qE '^read 32 [0-9a-f]{64}$' "$T/out" || fail "c: EGD read while the hostile VMs hold their caps"

# The process is full: d's 1 GiB is refused, until a hostile VM goes.
hostile d 1 1 1G
[ "$(cat "$T/d")" = "accepted 0 refused 1" ] || fail "d: $(cat "$T/d")"
expect_in "$T/device.log" "more than limits.memory (13194139533312)"
kill "$A_PID"
for _ in $(seq 100); do [ "$(metric seedbed_guest_memory_mapped_bytes)" = 4398046511104 ] && break; sleep 0.05; done
[ "$(metric seedbed_guest_memory_mapped_bytes)" = 4398046511104 ] || fail "a's memory was not released"
hostile d2 1 1 1G
[ "$(cat "$T/d2")" = "accepted 1 refused 0" ] || fail "d2: $(cat "$T/d2")"

kill -0 "$DEVICE_PID" || fail "the device died"
