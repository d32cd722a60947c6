#!/bin/bash
# The gate on a real kernel that is not ready: the Debian 12 guest kernel
# under QEMU, booted with nothing trusted, the agent run from an initramfs.
# shellcheck source=tests/vm/lib.sh
. "${top_srcdir:?}/tests/vm/lib.sh"

cat >"$T/seed.sh" <<'SCRIPT'
seedbed-agent seed
echo $? >/results/exit
cp /run/seedbed/seed.json /results/
seedbed-agent status >/results/status.txt
SCRIPT

# 1. A virtio-rng device with no driver bound: the agent loads virtio_rng
#    through libkmod, as it must in an initramfs, and seeds from it.
boot virtio "$T/seed.sh" "" \
	-cpu qemu64 -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0
R=$T/virtio
rec=$R/seed.json
[ "$(cat "$R/exit")" = 0 ] || fail "virtio: exit $(cat "$R/exit")"
[ "$(json "$rec" .ready_before)" = false ] || fail "virtio: the guest kernel was ready before the agent"
[ "$(json "$rec" .ready_after)" = true ] || fail "virtio: not ready"
[ "$(json "$rec" .in_initrd)" = true ] || fail "virtio: not seen as an initramfs"
[ "$(json "$rec" .device.found)" = true ] || fail "virtio: no device"
[ "$(json "$rec" .device.transport)" = pci ] || fail "virtio: transport"
[ "$(json "$rec" .device.module_loaded)" = true ] || fail "virtio: virtio_rng was not loaded by the agent"
[ "$(json "$rec" .device.current)" = virtio_rng.0 ] || fail "virtio: current hwrng"
expect_in "$R/serial.log" "seedbed-agent["
expect_in "$R/serial.log" "loading virtio_rng"
expect_in "$R/status.txt" "Device: virtio0 on pci, driver virtio_rng, hwrng virtio_rng.0"
# Debian 12's kernel credits virtio_rng itself (quality 1000), so loading
# the driver may be all it takes; otherwise the agent's credit does it.
if [ "$(json "$rec" .ready_after_setup)" = true ]; then
	[ "$(json "$rec" .device.kernel_quality)" -gt 0 ] || fail "virtio: ready after setup, but the kernel does not credit"
	[ "$(json "$rec" .initial_seed)" = true ] || fail "virtio: no initial seed"
	expect_in "$R/status.txt" "once the driver was loaded: the kernel credits it"
else
	[ "$(json "$rec" '.sources[0].status')" = used ] || fail "virtio: source status"
	[ "$(json "$rec" '.sources[0].credited_bits')" -ge 256 ] || fail "virtio: credited too little"
	# The kernel logged readiness after the agent started seeding.
	grep -e "seeding it" -e "crng init done" "$R/serial.log" | head -2 | tail -1 | grep -q "crng init done" ||
		fail "virtio: 'crng init done' does not follow the agent's seeding"
fi

# 2. No device at all, default sources: the kernel source's blocking
#    getrandom() starts the kernel's own jitter seeding.
boot kernel "$T/seed.sh" "" -cpu qemu64
R=$T/kernel
rec=$R/seed.json
[ "$(cat "$R/exit")" = 0 ] || fail "kernel: exit $(cat "$R/exit")"
[ "$(json "$rec" .ready_after_setup)" = false ] || fail "kernel: ready before seeding"
[ "$(json "$rec" '.sources[0].status')" = unavailable ] || fail "kernel: virtio status"
[ "$(json "$rec" '.sources[0].detail')" = "no virtio-rng device" ] || fail "kernel: virtio detail"
[ "$(json "$rec" '.sources[1].status')" = used ] || fail "kernel: kernel source status"
[ "$(json "$rec" .credited_bits)" = 0 ] || fail "kernel: the agent credited something"
expect_in "$R/serial.log" "No virtio-rng device found"

# 3. No source can help: progress on the console once a second, then the
#    policy decides: fail (status 4) or continue (status 0).
cat >"$T/timeout.sh" <<'SCRIPT'
seedbed-agent seed
echo $? >/results/exit-fail
cp /run/seedbed/seed.json /results/fail.json
# The secrets behind the gate: with on-timeout fail, none may be made.
seedbed-agent sshkeys
echo $? >/results/exit-sshkeys
find /etc -name 'ssh_host_*' >/results/keys-made
printf 'entropy:\n  on-timeout: continue\n' >/tmp/continue.yaml
seedbed-agent --config /tmp/continue.yaml seed
echo $? >/results/exit-continue
cp /run/seedbed/seed.json /results/continue.json
seedbed-agent status
echo $? >/results/exit-status
SCRIPT
boot timeout "$T/timeout.sh" "rd.seedbed.entropy.sources=virtio rd.seedbed.entropy.timeout=3s" -cpu qemu64
R=$T/timeout
[ "$(cat "$R/exit-fail")" = 4 ] || fail "timeout: on-timeout fail exited $(cat "$R/exit-fail")"
[ "$(json "$R/fail.json" .result)" = timeout ] || fail "timeout: result $(json "$R/fail.json" .result)"
[ "$(json "$R/fail.json" .ready_after)" = false ] || fail "timeout: ready after"
jq -e '.elapsed_ms >= 3000 and .elapsed_ms < 6000' "$R/fail.json" >/dev/null || fail "timeout: elapsed $(json "$R/fail.json" .elapsed_ms)"
[ "$(cat "$R/exit-sshkeys")" = 4 ] || fail "timeout: sshkeys exited $(cat "$R/exit-sshkeys") on an unready kernel"
[ ! -s "$R/keys-made" ] || fail "timeout: keys were made before the CRNG was ready: $(cat "$R/keys-made")"
[ "$(cat "$R/exit-continue")" = 0 ] || fail "timeout: on-timeout continue exited $(cat "$R/exit-continue")"
[ "$(json "$R/continue.json" .result)" = continued ] || fail "timeout: result $(json "$R/continue.json" .result)"
[ "$(cat "$R/exit-status")" = 4 ] || fail "timeout: status of a not-ready record exited $(cat "$R/exit-status")"
n=$(grep -c "Waiting for the kernel's random number generator: no source left, [0-9]* s left" "$R/serial.log" || true)
[ "$n" -ge 6 ] || fail "timeout: $n progress lines on the console, expected one a second"
expect_in "$R/serial.log" "still not ready after 3 s; failing (entropy.on-timeout: fail)"

# 4. A device whose host never answers (rng-egd on a null chardev): the
#    kernel's own fill thread blocks in the device holding the hwrng
#    core's lock, and the gate must still keep its deadline.
boot stall "$T/seed.sh" "rd.seedbed.entropy.sources=virtio rd.seedbed.entropy.timeout=3s" -cpu qemu64 \
	-chardev null,id=nothing -object rng-egd,id=rng0,chardev=nothing -device virtio-rng-pci,rng=rng0
R=$T/stall
rec=$R/seed.json
[ "$(cat "$R/exit")" = 4 ] || fail "stall: exit $(cat "$R/exit"), expected 4 at the deadline"
[ "$(json "$rec" .result)" = timeout ] || fail "stall: result $(json "$rec" .result)"
jq -e '.elapsed_ms >= 3000 and .elapsed_ms < 4500' "$rec" >/dev/null || fail "stall: elapsed $(json "$rec" .elapsed_ms) ms"
[ "$(json "$rec" '.sources[0].status')" = no-data ] || fail "stall: virtio source $(json "$rec" '.sources[0].status')"
[ "$(json "$rec" .device.found)" = true ] || fail "stall: device not found"
n=$(grep -c "Waiting for the kernel's random number generator: virtio 0 bits credited" "$R/serial.log" || true)
[ "$n" -ge 2 ] || fail "stall: $n progress lines"

# 5. Debian 11's kernel (5.10): rng-core is a module there too, loaded as
#    virtio_rng's dependency.
use_kernel bullseye
boot bullseye "$T/seed.sh" "" \
	-cpu qemu64 -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0
R=$T/bullseye
rec=$R/seed.json
[ "$(cat "$R/exit")" = 0 ] || fail "bullseye: exit $(cat "$R/exit")"
case $(json "$rec" .kernel) in 5.10.*) ;; *) fail "bullseye: booted $(json "$rec" .kernel)" ;; esac
[ "$(json "$rec" .ready_before)" = false ] || fail "bullseye: ready before"
[ "$(json "$rec" .ready_after)" = true ] || fail "bullseye: not ready"
[ "$(json "$rec" .device.module_loaded)" = true ] || fail "bullseye: virtio_rng not loaded"
[ "$(json "$rec" .device.current)" = virtio_rng.0 ] || fail "bullseye: current hwrng"
