#!/bin/bash
# Sourced by the integration tests: the agent under test, a private
# temporary directory per test, and small assertions.  Exit 77 = skip.
# shellcheck disable=SC2034 # AGENT is for the tests that source this
set -euo pipefail

AGENT=${SEEDBED_AGENT:-$top_builddir/seedbed-agent}
T=$(mktemp -d "${TMPDIR:-/tmp}/seedbed-it.XXXXXX")
# SEEDBED_KEEP_TMP=1 keeps it for a look after a failure.
trap '[ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"' EXIT

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# CI sets SEEDBED_TESTS_STRICT: there, a test that cannot run has failed.
skip() {
	if [ -n "${SEEDBED_TESTS_STRICT:-}" ]; then
		fail "cannot run, and SEEDBED_TESTS_STRICT is set: $*"
	fi
	echo "SKIP: $*" >&2
	exit 77
}

# detach_loops: the loop devices the test attached, listed in LOOPS (its
# cleanup calls this).
LOOPS=()
detach_loops() {
	local l
	for l in "${LOOPS[@]}"; do
		losetup -d "$l" 2>/dev/null || echo "warning: could not detach $l" >&2
	done
}

# run EXPECTED_STATUS CMD...: runs CMD, stdout to $T/out, stderr to $T/err.
run() {
	local want=$1 got=0
	shift
	"$@" >"$T/out" 2>"$T/err" || got=$?
	if [ "$got" -ne "$want" ]; then
		echo "--- stdout"; cat "$T/out"; echo "--- stderr"; cat "$T/err"
		fail "'$*' exited $got, expected $want"
	fi
}

# expect_in FILE TEXT: FILE contains TEXT literally.
expect_in() {
	grep -qF -- "$2" "$1" || {
		echo "--- $1"; cat "$1"
		fail "'$1' does not contain '$2'"
	}
}

# wait_line FILE TEXT PID SECONDS: until FILE holds TEXT, as long as PID
# runs, for at most SECONDS; then whether it does.
wait_line() {
	local file=$1 text=$2 pid=$3 i
	for ((i = 0; i < $4 * 100; i++)); do
		! grep -qF -- "$text" "$file" || return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.01
	done
	grep -qF -- "$text" "$file"
}

# json FILE FILTER: one value from a JSON file ("null" when absent).
# Called in $(...), so a failure must also make the comparison fail.
json() {
	jq -r "$2" "$1" || {
		echo "FAIL: jq '$2' on '$1' failed" >&2
		echo "<jq failed>"
	}
}

# A fake tree with one virtio-rng device bound on TRANSPORT and a
# /dev/hwrng regular file holding DATA_FILE.
make_fake_virtio() {
	local root=$1 transport=$2 data=$3 parent bus
	case $transport in
	pci) parent=sys/devices/pci0000:00/0000:00:04.0 bus=../../../bus/pci ;;
	mmio) parent=sys/devices/platform/LNRO0005:00 bus=../../../bus/platform ;;
	ccw) parent=sys/devices/css0/0.0.0000/0.0.0001 bus=../../../../bus/ccw ;;
	esac
	mkdir -p "$root/$parent/virtio7" "$root/sys/bus/virtio/devices" "$root/sys/bus/virtio/drivers/virtio_rng" \
		"$root/sys/class/misc/hw_random" "$root/dev"
	ln -s "$bus" "$root/$parent/subsystem"
	echo 0x0004 >"$root/$parent/virtio7/device"
	ln -s "../../../${parent#sys/}/virtio7" "$root/sys/bus/virtio/devices/virtio7"
	ln -s ../../../../bus/virtio/drivers/virtio_rng "$root/$parent/virtio7/driver"
	echo "virtio_rng.0" >"$root/sys/class/misc/hw_random/rng_available"
	echo "virtio_rng.0" >"$root/sys/class/misc/hw_random/rng_current"
	echo 1024 >"$root/sys/class/misc/hw_random/rng_quality"
	cp "$data" "$root/dev/hwrng"
}

# uuid_private ROOT UUID: the SMBIOS UUID, root-only in sysfs, stands in no
# file under ROOT/var/lib/seedbed that others may read (in either case, with
# or without its dashes), there is such a file (a record), and the key the
# records hash it with is root's alone.
uuid_private() {
	local root=$1 uuid=$2 f n=0
	[ "$(stat -c '%a %U' "$root/var/lib/seedbed/instance-key")" = "400 root" ] ||
		fail "instance-key: $(stat -c '%a %U' "$root/var/lib/seedbed/instance-key")"
	while IFS= read -r -d '' f; do
		n=$((n + 1))
		! grep -qiF -e "$uuid" -e "${uuid//-/}" "$f" || fail "'$f' ($(stat -c %a "$f")) holds the SMBIOS UUID"
	done < <(find "$root/var/lib/seedbed" -type f -perm -o=r -print0)
	[ "$n" -gt 0 ] || fail "no world-readable record under '$root/var/lib/seedbed'"
}

# uuid_hash ROOT UUID: "HMAC KEY_ID", what a record holds for UUID hashed
# with ROOT's instance key, computed apart from our code.
uuid_hash() {
	python3 - "$1/var/lib/seedbed/instance-key" "$2" <<'PY'
import hashlib, hmac, sys
key = open(sys.argv[1], "rb").read()
print(hmac.new(key, b"seedbed instance product_uuid v1\0" + sys.argv[2].encode(), hashlib.sha256).hexdigest(),
      hmac.new(key, b"seedbed instance key id v1\0", hashlib.sha256).hexdigest()[:16])
PY
}

# records_hash ROOT UUID: both records hold UUID hashed with ROOT's key.
records_hash() {
	local root=$1 uuid=$2 f want
	want=$(uuid_hash "$root" "$uuid") || fail "no instance key to check the records with"
	for f in firstboot.json ssh-keys.json; do
		[ "$(json "$root/var/lib/seedbed/$f" '.instance.product_uuid_hmac + " " + .instance.product_uuid_key')" = \
			"$want" ] || fail "$f does not hold the UUID hashed with the instance key: $(cat "$root/var/lib/seedbed/$f")"
	done
}

# more_than BYTES: what the test's bytes_total says, once it says more
# than BYTES (up to 30 s: a loaded machine serves late, never not at all).
more_than() {
	local now
	for _ in $(seq 600); do
		now=$(bytes_total)
		[ -n "$now" ] && [ "$now" -gt "$1" ] && break
		sleep 0.05
	done
	echo "$now"
}
