#!/bin/bash
# seedbed-agent console, as seedbed-console.service runs it after
# cloud-init's last stage, in a fake root: it prints the blocks of the
# keys in place when this boot's record says seedbed made keys and
# cloud-init's keys-to-console semaphore is not from this boot (a clone
# that keeps its cloud-init instance-id, ssh.regenerate), with the
# fingerprints ssh-keygen reads from the files; nothing, and one line that
# says why, when the semaphore is from this boot, when no key was made in
# this boot, when the record is another boot's, or without cloud-init.
# It writes nothing.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "sshkeys runs as root"
command -v ssh-keygen >/dev/null || skip "ssh-keygen is not installed (openssh-client)"
[ -r /proc/sys/kernel/random/boot_id ] || skip "no boot_id: the record cannot be of this boot"

R=$T/root
SEM=$R/var/lib/cloud/instance/sem/config_keys_to_console
mkdir -p "$R/etc" "$R/run/cloud-init" "${SEM%/*}" "$R/sys/class/rtc/rtc0"
echo 0123456789abcdef0123456789abcdef >"$R/etc/machine-id"
# The tree's RTC set the clock at boot: the semaphore's time compares
# across boots (under --root its sys/class/rtc says so).
echo 1 >"$R/sys/class/rtc/rtc0/hctosys"

# fps: the fingerprints on disk, as ssh-keygen reads the private keys.
fps() {
	local t
	for t in ed25519 ecdsa rsa; do
		ssh-keygen -l -f "$R/etc/ssh/ssh_host_${t}_key" | awk '{ print $2 }'
	done | sort
}
# snapshot: every file under the root with its time, to show nothing moved.
snapshot() {
	find "$R" -printf '%p %T@ %s\n' | sort
}
# no_block REASON: the last run printed nothing and said why.
no_block() {
	[ ! -s "$T/out" ] || { cat "$T/out"; fail "a block was printed ($1)"; }
	expect_in "$T/err" "No SSH host key block printed: $1"
}

# This boot: the agent made the keys (cloud-init not running here: sshkeys
# printed its own blocks), and the record lists them created.
run 0 "$AGENT" --root "$R" --no-cmdline sshkeys
fps >"$T/disk"
touch "$R/run/cloud-init/enabled"

# cloud-init's semaphore from an earlier boot (the clone kept its
# instance-id): the blocks, of the keys on disk.
touch -d '2001-01-01 00:00' "$SEM"
snapshot >"$T/before"
run 0 "$AGENT" --root "$R" --no-cmdline console
snapshot | diff -u "$T/before" - || fail "console wrote to the tree"
expect_in "$T/err" "cloud-init printed no block for them"
[ "$(grep -c -- '-----BEGIN SSH HOST KEY FINGERPRINTS-----' "$T/out")" = 1 ] || fail "not one fingerprint block"
[ "$(grep -c -- '-----BEGIN SSH HOST KEY KEYS-----' "$T/out")" = 1 ] || fail "not one keys block"
sed -n '/BEGIN SSH HOST KEY FINGERPRINTS/,/END SSH HOST KEY FINGERPRINTS/p' "$T/out" | grep -v -- ----- |
	awk '{ print $2 }' | sort | diff -u "$T/disk" - || fail "the fingerprint block shows other keys"
# The keys block holds the .pub lines, each the key sshd serves.
sed -n '/BEGIN SSH HOST KEY KEYS/,/END SSH HOST KEY KEYS/p' "$T/out" | grep -v -- ----- >"$T/pubs"
ssh-keygen -l -f "$T/pubs" | awk '{ print $2 }' | sort | diff -u "$T/disk" - || fail "the keys block shows other keys"

# No semaphore at all (the module is off): the same.
rm "$SEM"
run 0 "$AGENT" --root "$R" --no-cmdline console
expect_in "$T/out" "-----BEGIN SSH HOST KEY FINGERPRINTS-----"

# ssh.console selects one block: only that one.
mkdir -p "$R/etc/seedbed"
printf 'ssh:\n  console: [keys]\n' >"$R/etc/seedbed/seedbed.yaml"
run 0 "$AGENT" --root "$R" --no-cmdline console
expect_in "$T/out" "-----BEGIN SSH HOST KEY KEYS-----"
! grep -q FINGERPRINTS "$T/out" || fail "ssh.console: [keys] printed the fingerprints"
printf 'ssh:\n  console: []\n' >"$R/etc/seedbed/seedbed.yaml"
run 0 "$AGENT" --root "$R" --no-cmdline console
no_block "ssh.console selects no block"
rm "$R/etc/seedbed/seedbed.yaml"

# The semaphore written in this boot: cloud-init printed them.
touch "$SEM"
run 0 "$AGENT" --root "$R" --no-cmdline console
no_block "cloud-init's keys-to-console module printed them in this boot"

# A semaphore from the future was written with a clock that ran ahead, in
# another boot: the blocks.
touch -d '@'$(($(date +%s) + 86400)) "$SEM"
run 0 "$AGENT" --root "$R" --no-cmdline console
expect_in "$T/out" "-----BEGIN SSH HOST KEY FINGERPRINTS-----"

# Without cloud-init in this boot, sshkeys printed them itself.
touch -d '2001-01-01 00:00' "$SEM"
rm "$R/run/cloud-init/enabled"
run 0 "$AGENT" --root "$R" --no-cmdline console
no_block "cloud-init does not run in this boot"
touch "$R/run/cloud-init/enabled"

# A later run in this boot that made none: the record lists them kept.
run 0 "$AGENT" --root "$R" --no-cmdline sshkeys
run 0 "$AGENT" --root "$R" --no-cmdline console
no_block "seedbed made no host key in this boot"

# ssh.regenerate: replaced in this boot, printed again.
printf 'ssh:\n  regenerate: true\n' >"$T/regenerate.yaml"
run 0 "$AGENT" --root "$R" --no-cmdline --config "$T/regenerate.yaml" sshkeys
fps >"$T/disk"
run 0 "$AGENT" --root "$R" --no-cmdline console
sed -n '/BEGIN SSH HOST KEY FINGERPRINTS/,/END SSH HOST KEY FINGERPRINTS/p' "$T/out" | grep -v -- ----- |
	awk '{ print $2 }' | sort | diff -u "$T/disk" - || fail "after ssh.regenerate: the block shows other keys"

# The record of another boot says nothing about this one.
sed -i 's/"boot_id": *"[^"]*"/"boot_id": "00000000-0000-0000-0000-000000000000"/' "$R/run/seedbed/seed.json"
run 0 "$AGENT" --root "$R" --no-cmdline console
no_block "there is no seedbed record of this boot"
rm "$R/run/seedbed/seed.json"
run 0 "$AGENT" --root "$R" --no-cmdline console
no_block "there is no seedbed record of this boot"

echo "console: blocks exactly when seedbed made keys and cloud-init printed none in this boot"
