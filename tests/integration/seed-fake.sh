#!/bin/bash
# 'seed' on fake trees (--root) with the running kernel's pool: the device
# is found on each transport, another hwrng is replaced by the virtio one,
# and a stuck device's bytes never reach the pool.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "seed needs root"
# With --root only the device is fake; the pool is this kernel's.  A
# kernel that is not ready yet would be credited with fake bytes.
head -c1 /dev/random >/dev/null

head -c 4096 /dev/urandom >"$T/random"
for transport in pci mmio ccw; do
	R=$T/$transport
	make_fake_virtio "$R" "$transport" "$T/random"
	run 0 "$AGENT" --root "$R" seed
	rec=$R/run/seedbed/seed.json
	[ "$(json "$rec" .device.found)" = true ] || fail "$transport: device not found"
	[ "$(json "$rec" .device.name)" = virtio7 ] || fail "$transport: wrong device"
	[ "$(json "$rec" .device.transport)" = "$transport" ] || fail "$transport: transport $(json "$rec" .device.transport)"
	[ "$(json "$rec" .result)" = ready ] || fail "$transport: not ready"
	# This kernel is ready: only the initial seed, without credit.
	[ "$(json "$rec" .ready_before)" = true ] || fail "$transport: the running kernel was not ready"
	[ "$(json "$rec" .initial_seed)" = true ] || fail "$transport: no initial seed"
	[ "$(json "$rec" '.sources[0].mixed_bytes')" = 64 ] || fail "$transport: initial seed size"
	[ "$(json "$rec" .credited_bits)" = 0 ] || fail "$transport: credit given to a ready kernel"
	run 0 "$AGENT" --root "$R" status
	expect_in "$T/out" "Device: virtio7 on $transport, driver virtio_rng, hwrng virtio_rng.0"
done

# Another hwrng current: the virtio one is selected, unless told not to.
R=$T/select
make_fake_virtio "$R" pci "$T/random"
echo "tpm-rng-0 virtio_rng.0" >"$R/sys/class/misc/hw_random/rng_available"
echo "tpm-rng-0" >"$R/sys/class/misc/hw_random/rng_current"
mkdir -p "$R/proc"
echo "seedbed.entropy.virtio.select=false" >"$R/proc/cmdline"
run 0 "$AGENT" --root "$R" seed
[ "$(cat "$R/sys/class/misc/hw_random/rng_current")" = tpm-rng-0 ] || fail "select=false changed rng_current"
[ "$(json "$R/run/seedbed/seed.json" '.sources[0].status')" = unavailable ] || fail "virtio used while not current"
rm "$R/proc/cmdline"
run 0 "$AGENT" --root "$R" seed
[ "$(cat "$R/sys/class/misc/hw_random/rng_current")" = virtio_rng.0 ] || fail "virtio hwrng not selected"
[ "$(json "$R/run/seedbed/seed.json" .device.selected)" = true ] || fail "record does not say selected"
[ "$(json "$R/run/seedbed/seed.json" .device.current_before)" = tpm-rng-0 ] || fail "record lost current_before"

# A device that repeats one byte fails its health test: nothing mixed.
R=$T/stuck
head -c 4096 /dev/zero | tr '\0' 'B' >"$T/stuck.bin"
make_fake_virtio "$R" mmio "$T/stuck.bin"
run 0 "$AGENT" --root "$R" seed
rec=$R/run/seedbed/seed.json
[ "$(json "$rec" '.sources[0].status')" = failed ] || fail "stuck source not failed"
[ "$(json "$rec" '.sources[0].health')" = repetition-count ] || fail "stuck source: $(json "$rec" '.sources[0].health')"
[ "$(json "$rec" '.sources[0].mixed_bytes')" = 0 ] || fail "stuck source's bytes were mixed in"
[ "$(json "$rec" .initial_seed)" = false ] || fail "initial seed claimed from a stuck source"

# No device at all: said so, and the gate still reports the kernel ready.
R=$T/none
mkdir -p "$R/sys/class/misc/hw_random"
run 0 "$AGENT" --root "$R" seed
expect_in "$T/err" "No virtio-rng device found"
[ "$(json "$R/run/seedbed/seed.json" .device.found)" = false ] || fail "found a device in an empty tree"
[ "$(json "$R/run/seedbed/seed.json" '.sources[0].detail')" = "no virtio-rng device" ] || fail "detail"

# --record writes where told and nowhere else.
run 0 "$AGENT" --root "$R" --record "$T/elsewhere/rec.json" seed
[ -s "$T/elsewhere/rec.json" ] || fail "--record was not written"
run 0 "$AGENT" --record "$T/elsewhere/rec.json" status --json
cmp -s "$T/out" "$T/elsewhere/rec.json" || fail "status --json differs from the record"
