#!/bin/bash
# Every class of bad configuration stops the agent with status 3 and a
# FILE:LINE:COL message, before it does anything: no record is written and
# the fake tree's hwrng selection is untouched.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

R=$T/root
head -c 4096 /dev/urandom >"$T/random"
make_fake_virtio "$R" pci "$T/random"
echo "tpm-rng-0 virtio_rng.0" >"$R/sys/class/misc/hw_random/rng_available"
echo "tpm-rng-0" >"$R/sys/class/misc/hw_random/rng_current"
mkdir -p "$R/etc/seedbed/seedbed.yaml.d" "$R/proc"
CONF=$R/etc/seedbed/seedbed.yaml

# check_bad WHAT EXPECTED-MESSAGE: seed refuses to run, names the place.
check_bad() {
	run 3 "$AGENT" --root "$R" seed
	expect_in "$T/err" "$2"
	expect_in "$T/err" "nothing was done"
	[ ! -e "$R/run" ] || fail "$1: something was written under $R/run"
	[ "$(cat "$R/sys/class/misc/hw_random/rng_current")" = "tpm-rng-0" ] || fail "$1: rng_current was changed"
	# config --dump fails the same way.
	run 3 "$AGENT" --root "$R" config --dump
	expect_in "$T/err" "$2"
}

printf 'entropy:\n  timeout: 5s\n  colour: red\n' >"$CONF"
check_bad "unknown key" "$CONF:3:3: unknown key 'entropy.colour'"

printf 'entropy:\n  sources: virtio\n' >"$CONF"
check_bad "wrong type" "$CONF:2:12: 'entropy.sources' must be a list such as [a, b], not a single value"

printf 'entropy:\n  timeout: [1, 2]\n' >"$CONF"
check_bad "wrong type" "$CONF:2:12: 'entropy.timeout' must be a single value, not a list"

printf 'entropy:\n  virtio:\n    select: perhaps\n' >"$CONF"
check_bad "wrong type" "$CONF:3:13: 'entropy.virtio.select' must be true or false, not 'perhaps'"

printf 'luks:\n  volumes:\n    - {device: /dev/vdb, name: data}\n    - {device: /dev/vdc, name: data}\n' >"$CONF"
check_bad "duplicate volume name" "$CONF:4:7: 'luks.volumes' item: another volume is named 'data' already (item 1)"

printf 'entropy:\n  timeout: 2h\n' >"$CONF"
check_bad "out of range" "$CONF:2:12: 'entropy.timeout' is out of range: 2h (allowed 0s..1h)"

printf 'entropy:\n  virtio:\n    min-entropy: 9\n' >"$CONF"
check_bad "out of range" "$CONF:3:18: 'entropy.virtio.min-entropy' is out of range: 9 (allowed 0.01..8)"

printf 'entropy:\n  timeout: 5s\n   on-timeout: fail\n' >"$CONF"
check_bad "malformed" "$CONF:3:14: invalid YAML: mapping values are not allowed in this context"

printf 'entropy: {timeout: 5s\n' >"$CONF"
check_bad "malformed" "$CONF:2:1: invalid YAML: did not find expected ',' or '}' while parsing a flow mapping"

printf 'entropy:\n  timeout: 5s\n' >"$CONF"
printf 'entropy:\n  on-timeout: maybe\n' >"$R/etc/seedbed/seedbed.yaml.d/90-bad.yaml"
check_bad "bad drop-in" "$R/etc/seedbed/seedbed.yaml.d/90-bad.yaml:2:15: 'entropy.on-timeout' must be one of fail, continue, not 'maybe'"
rm "$R/etc/seedbed/seedbed.yaml.d/90-bad.yaml"

echo "root=/dev/vda1 seedbed.entropy.sources=virtio,,kernel" >"$R/proc/cmdline"
check_bad "bad kernel command line" "$R/proc/cmdline:1:16: 'entropy.sources' has an empty item"
rm "$R/proc/cmdline"

run 3 "$AGENT" --root "$R" --config "$T/does-not-exist.yaml" seed
expect_in "$T/err" "$T/does-not-exist.yaml: cannot read: No such file or directory"
[ ! -e "$R/run" ] || fail "missing --config file: something was written"

# And a good file does run (as root), which proves the tree above was usable.
if [ "$(id -u)" -eq 0 ]; then
	run 0 "$AGENT" --root "$R" seed
	[ -e "$R/run/seedbed/seed.json" ] || fail "no record after a good run"
fi
