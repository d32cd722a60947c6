#!/bin/bash
# Host keys seedbed did not make, with the real agent and the real
# OpenSSH: keys an image builder left (ssh-keygen, as openssh-server's
# postinst makes them) are replaced at the image's first boot and the
# record says why; on a machine that has booted before they are adopted,
# never replaced; ssh.replace-unknown turns either way.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "sshkeys runs as root"
command -v ssh-keygen >/dev/null || skip "ssh-keygen is not installed (openssh-client)"
command -v jq >/dev/null || skip "jq is not installed"

FIRST_BOOT="found at the image's first boot: not made for this instance"
ADOPTED="found with no seedbed record on a machine that has booted before: adopted as this machine's key"
ALWAYS="found with no seedbed record (ssh.replace-unknown: always)"
NEVER="found with no seedbed record: adopted as this machine's key (ssh.replace-unknown: never)"

# bake ROOT: host keys as an image builder leaves them, and no record.
bake() {
	local t
	mkdir -p "$1/etc/ssh"
	for t in ed25519 ecdsa rsa; do
		ssh-keygen -q -t "$t" -N '' -C root@image-builder -f "$1/etc/ssh/ssh_host_${t}_key" </dev/null
	done
}

# fps ROOT: "TYPE SHA256:..." of each key file, as ssh-keygen reads it.
fps() {
	local t
	for t in ed25519 ecdsa rsa; do
		echo "$t $(ssh-keygen -l -f "$1/etc/ssh/ssh_host_${t}_key" | awk '{ print $2 }')"
	done
}

# expect_keys ROOT ACTION REASON: each key's action and reason, in the
# boot's record and (but for its action) in the instance record.
expect_keys() {
	local rec=$1/run/seedbed/seed.json state=$1/var/lib/seedbed/ssh-keys.json
	[ "$(json "$rec" '[.ssh_keys[] | select(.action == "'"$2"'" and .reason == "'"$3"'")] | length')" = 3 ] ||
		fail "$1: not three keys $2 with reason '$3': $(json "$rec" .ssh_keys)"
	[ "$(json "$state" '[.keys[] | select(.reason == "'"$3"'")] | length')" = 3 ] ||
		fail "$1: the instance record does not say why: $(json "$state" .keys)"
	# Both records list the keys now on disk.
	fps "$1" | awk '{ print $2 }' | sort >"$T/disk.fp"
	json "$rec" '.ssh_keys[].fingerprint' | sort | diff -u "$T/disk.fp" - || fail "$1: seed.json's fingerprints"
	json "$state" '.keys[].fingerprint' | sort | diff -u "$T/disk.fp" - || fail "$1: ssh-keys.json's fingerprints"
}

# --- The image's first boot: machine-id not made yet, keys baked in.
for id in uninitialized empty missing; do
	R=$T/first-$id
	mkdir -p "$R/etc"
	case $id in
	uninitialized) echo uninitialized >"$R/etc/machine-id" ;;
	empty) : >"$R/etc/machine-id" ;;
	missing) ;;
	esac
	bake "$R"
	fps "$R" >"$T/baked"
	run 0 "$AGENT" --root "$R" --no-cmdline sshkeys
	fps "$R" >"$T/now"
	# Not one baked key is left.
	! grep -qFf <(awk '{ print $2 }' "$T/baked") "$T/now" || fail "$id: a baked key survived the first boot"
	expect_keys "$R" replaced "$FIRST_BOOT"
	expect_in "$T/err" "Replaced SSH host key '/etc/ssh/ssh_host_rsa_key' ($FIRST_BOOT)"
	[ "$(json "$R/var/lib/seedbed/ssh-keys.json" '[.keys[] | select(.created != null and .crng_ready)] | length')" = 3 ] ||
		fail "$id: the new keys are not recorded as made behind the gate"
	# The console block shows the new keys, as ssh-keygen reads them.
	sed -n '/BEGIN SSH HOST KEY FINGERPRINTS/,/END SSH HOST KEY FINGERPRINTS/p' "$T/out" | grep -v -- ----- |
		awk '{ print $2 }' | sort >"$T/console"
	awk '{ print $2 }' "$T/now" | sort | diff -u - "$T/console" || fail "$id: the console block shows other keys"

	# The next run (the machine-id still not committed) keeps them: the
	# record vouches for them now.
	run 0 "$AGENT" --root "$R" --no-cmdline sshkeys
	fps "$R" | diff -u "$T/now" - || fail "$id: the second run changed the keys"
	[ "$(json "$R/run/seedbed/seed.json" '[.ssh_keys[] | select(.action == "kept")] | length')" = 3 ] ||
		fail "$id: second run: $(json "$R/run/seedbed/seed.json" .ssh_keys)"
done

# --- seedbed installed on a running server: adopted, the same keys.
R=$T/running
mkdir -p "$R/etc"
echo 0123456789abcdef0123456789abcdef >"$R/etc/machine-id"
bake "$R"
fps "$R" >"$T/baked"
run 0 "$AGENT" --root "$R" --no-cmdline sshkeys
fps "$R" | diff -u "$T/baked" - || fail "a running server's keys were changed"
expect_keys "$R" adopted "$ADOPTED"
expect_in "$T/err" "Adopted SSH host key '/etc/ssh/ssh_host_ed25519_key' ($ADOPTED)"
[ "$(json "$R/var/lib/seedbed/ssh-keys.json" '[.keys[] | select(.created == null and .crng_ready == null)] | length')" = 3 ] ||
	fail "adopted keys recorded as made by seedbed"
# The baked comment stays: they are the server's own files.
expect_in "$T/out" " root@image-builder (ED25519)"

# --- ssh.replace-unknown: always, from the file, on that running server.
R=$T/always
mkdir -p "$R/etc/seedbed"
echo 0123456789abcdef0123456789abcdef >"$R/etc/machine-id"
printf 'ssh:\n  replace-unknown: always\n' >"$R/etc/seedbed/seedbed.yaml"
bake "$R"
fps "$R" >"$T/baked"
run 0 "$AGENT" --root "$R" --no-cmdline sshkeys
! grep -qFf <(awk '{ print $2 }' "$T/baked") <(fps "$R") || fail "always: a baked key survived"
expect_keys "$R" replaced "$ALWAYS"

# --- ssh.replace-unknown=never on the (tree's) kernel command line, at a
# first boot.
R=$T/never
mkdir -p "$R/etc" "$R/proc"
echo uninitialized >"$R/etc/machine-id"
echo "ro quiet seedbed.ssh.replace-unknown=never" >"$R/proc/cmdline"
bake "$R"
fps "$R" >"$T/baked"
run 0 "$AGENT" --root "$R" sshkeys
fps "$R" | diff -u "$T/baked" - || fail "never: the keys were changed"
expect_keys "$R" adopted "$NEVER"
