#!/bin/bash
# The agent on this machine, no fakes: the build machines are VMs with a
# virtio-rng device, so it must find that device, read it through the real
# /dev/hwrng, feed the real kernel, and record numbers that add up.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "seed needs root"
dev=
for d in /sys/bus/virtio/devices/*; do
	[ "$(cat "$d/device" 2>/dev/null)" = 0x0004 ] && dev=$(basename "$d") && break
done
[ -n "$dev" ] || skip "this machine has no virtio-rng device"
case $(basename "$(readlink -f "$(dirname "$(readlink -f "/sys/bus/virtio/devices/$dev")")/subsystem")") in
pci) transport=pci ;;
platform) transport=mmio ;;
ccw) transport=ccw ;;
*) transport=unknown ;;
esac

# The record goes to our directory so that the suite writes nothing
# outside its tree; everything else is the machine's own.
rec=$T/seed.json
run 0 "$AGENT" --record "$rec" seed
cat "$T/err"

[ "$(json "$rec" .version)" = 1 ] || fail "record version"
[ "$(json "$rec" .result)" = ready ] || fail "result is $(json "$rec" .result)"
[ "$(json "$rec" .ready_after)" = true ] || fail "not ready after"
[ "$(json "$rec" .kernel)" = "$(uname -r)" ] || fail "kernel release"
[ "$(json "$rec" .boot_id)" = "$(cat /proc/sys/kernel/random/boot_id)" ] || fail "boot id"
[ "$(json "$rec" .device.found)" = true ] || fail "the virtio-rng device '$dev' was not found"
[ "$(json "$rec" .device.name)" = "$dev" ] || fail "found $(json "$rec" .device.name), not $dev"
[ "$(json "$rec" .device.transport)" = "$transport" ] || fail "transport $(json "$rec" .device.transport), not $transport"
[ "$(json "$rec" .device.driver)" = virtio_rng ] || fail "driver"
hwrng=$(json "$rec" .device.hwrng)
case $hwrng in virtio_rng.*) ;; *) fail "hwrng '$hwrng'" ;; esac
[ "$(json "$rec" .device.current)" = "$(cat /sys/class/misc/hw_random/rng_current)" ] || fail "current hwrng"
[ "$(json "$rec" .device.current)" = "$hwrng" ] || fail "the virtio hwrng is not current"
[ "$(json "$rec" '.sources[0].name')" = virtio ] || fail "first source"

# The numbers add up.
sum=$(jq '[.sources[].credited_bits] | add' "$rec")
[ "$sum" = "$(json "$rec" .credited_bits)" ] || fail "sources credit $sum, total says $(json "$rec" .credited_bits)"
jq -e '.sources | all(.mixed_bytes <= .bytes)' "$rec" >/dev/null || fail "a source mixed more than it read"
if [ "$(json "$rec" .ready_after_setup)" = true ]; then
	# Ready before seeding: nothing may have been credited.
	jq -e '.sources | all(.credited_bits == 0)' "$rec" >/dev/null || fail "credit given to a ready kernel"
else
	jq -e '.sources | all(.name == "kernel" or .credited_bits == ((.mixed_bytes * 8 * .quality / 1024) | floor))' \
		"$rec" >/dev/null || fail "credit is not bytes*8*quality/1024"
fi
jq -e '.ready_ms <= .elapsed_ms' "$rec" >/dev/null || fail "ready after the end"
if [ "$(json "$rec" .ready_before)" = true ]; then
	# The usual case on a machine that has been up a while.
	[ "$(json "$rec" .credited_bits)" = 0 ] || fail "credit given to a ready kernel"
	[ "$(json "$rec" .initial_seed)" = true ] || fail "no initial seed from the real device"
	[ "$(json "$rec" '.sources[0].status')" = used ] || fail "virtio source $(json "$rec" '.sources[0].status')"
	[ "$(json "$rec" '.sources[0].mixed_bytes')" = 64 ] || fail "initial seed size"
	[ "$(json "$rec" '.sources[0].health')" = ok ] || fail "the real device failed its health test"
else
	[ "$(json "$rec" .credited_bits)" -ge 256 ] || fail "ready with less than 256 bits credited"
fi

run 0 "$AGENT" --record "$rec" status
expect_in "$T/out" "CRNG: ready"
expect_in "$T/out" "Device: $dev on $transport, driver virtio_rng, hwrng $hwrng"
run 0 "$AGENT" --record "$rec" status --json
cmp -s "$T/out" "$rec" || fail "status --json is not the record"
