#!/bin/bash
# Host keys seedbed did not make, with the real agent and the real
# OpenSSH: keys an image builder left (ssh-keygen, as openssh-server's
# postinst makes them) are replaced at the image's first boot and the
# record says why; on a machine that has booted before they are adopted,
# never replaced; ssh.replace-unknown turns either way.  A first boot
# that fails half way is finished by the next run, after the machine-id
# is committed.  Then 'status' compares every key the record lists with
# the disk, and says "replaced by another tool" for the one ssh-keygen
# overwrote, and for no other.
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

# --- The image's first boot, one key failing: the RSA key is a symbolic
# link, which the agent does not replace.  The decision is in the record,
# pending, with the two keys made; the machine-id is committed after that
# boot, so nothing says first boot any more, and the next run (the link
# put right) still replaces the image's RSA key and keeps the two made.
R=$T/first-failing
mkdir -p "$R/etc" "$T/elsewhere"
echo uninitialized >"$R/etc/machine-id"
bake "$R"
mv "$R/etc/ssh/ssh_host_rsa_key" "$T/elsewhere/"
ln -s "$T/elsewhere/ssh_host_rsa_key" "$R/etc/ssh/ssh_host_rsa_key"
fps "$R" >"$T/baked"
run 1 "$AGENT" --root "$R" --no-cmdline sshkeys
expect_in "$T/err" "is a symbolic link: not replacing it"
state=$R/var/lib/seedbed/ssh-keys.json
[ "$(json "$state" .pending)" = replace-unknown ] || fail "failing: the record is not pending: $(cat "$state")"
[ "$(json "$state" .pending_reason)" = "$FIRST_BOOT" ] || fail "failing: the pending reason: $(cat "$state")"
[ "$(json "$state" '[.keys[] | .type] | sort | join(",")')" = ecdsa,ed25519 ] ||
	fail "failing: the pending record does not list the keys made: $(json "$state" .keys)"
fps "$R" | grep -v '^rsa ' >"$T/made"
echo 0123456789abcdef0123456789abcdef >"$R/etc/machine-id"
rm "$R/etc/ssh/ssh_host_rsa_key"
cp -p "$T/elsewhere/ssh_host_rsa_key" "$R/etc/ssh/"
run 0 "$AGENT" --root "$R" --no-cmdline sshkeys
expect_in "$T/err" "An earlier run began to replace the SSH host keys"
! grep -qFf <(awk '{ print $2 }' "$T/baked") <(fps "$R") || fail "failing: a baked key survived"
fps "$R" | grep -v '^rsa ' | diff -u "$T/made" - || fail "failing: the keys made in the first run were replaced"
[ "$(json "$R/run/seedbed/seed.json" '.ssh_keys[] | select(.type == "rsa") | .action')" = replaced ] ||
	fail "failing: $(json "$R/run/seedbed/seed.json" .ssh_keys)"
[ "$(json "$R/run/seedbed/seed.json" '[.ssh_keys[] | select(.action == "adopted")] | length')" = 0 ] ||
	fail "failing: a key was adopted"
[ "$(json "$state" '[.keys[] | select(.reason == "'"$FIRST_BOOT"'")] | length')" = 3 ] ||
	fail "failing: the record does not say why: $(json "$state" .keys)"
[ "$(json "$state" .pending)" = null ] || fail "failing: the record is still pending"

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

# --- status, after a first boot that replaced the baked keys: every key
# in place is seedbed's as recorded.
R=$T/status
mkdir -p "$R/etc"
echo uninitialized >"$R/etc/machine-id"
bake "$R"
run 0 "$AGENT" --root "$R" --no-cmdline sshkeys
run 0 "$AGENT" --root "$R" status
[ "$(grep -c "replaced ($FIRST_BOOT)" "$T/out")" = 3 ] || fail "status does not list the three keys: $(cat "$T/out")"
! grep -q "another tool" "$T/out" || fail "status: a key in place said replaced by another tool"
run 0 "$AGENT" --root "$R" status --json
[ "$(json "$T/out" '[.ssh_keys[] | select(.on_disk == "same" and .on_disk_checked == "private-key")] | length')" = 3 ] ||
	fail "status --json: $(json "$T/out" .ssh_keys)"

# Another tool (cloud-init writing user-data's ssh_keys, an admin) puts its
# own ECDSA key in place.
rm "$R/etc/ssh/ssh_host_ecdsa_key" "$R/etc/ssh/ssh_host_ecdsa_key.pub"
ssh-keygen -q -t ecdsa -N '' -C root@cloud-init -f "$R/etc/ssh/ssh_host_ecdsa_key" </dev/null
other=$(ssh-keygen -l -f "$R/etc/ssh/ssh_host_ecdsa_key" | awk '{ print $2 }')
ours=$(json "$R/run/seedbed/seed.json" '.ssh_keys[] | select(.type == "ecdsa") | .fingerprint')

check_status() { # check_status WHO CHECKED: the verdicts, as WHO sees them
	local who=$1 checked=$2 out=$T/status.$1
	[ "$(grep -c 'replaced by another tool' "$out")" = 1 ] || fail "$who: status: $(cat "$out")"
	grep -q "^              ecdsa   replaced by another tool: now $other (seedbed's $ours, replaced, is gone)$" "$out" ||
		fail "$who: status does not name the ECDSA key as replaced by another tool: $(cat "$out")"
	# Seedbed's old fingerprint is never shown as if it were in place.
	! grep -q "ecdsa   $ours" "$out" || fail "$who: status shows the replaced key as seedbed's"
	[ "$(json "$out.json" '.ssh_keys[] | select(.type == "ecdsa") | .on_disk')" = replaced-by-another-tool ] ||
		fail "$who: status --json: $(json "$out.json" .ssh_keys)"
	[ "$(json "$out.json" '.ssh_keys[] | select(.type == "ecdsa") | .on_disk_fingerprint')" = "$other" ] ||
		fail "$who: status --json does not give the key now in place"
	[ "$(json "$out.json" '[.ssh_keys[] | select(.type != "ecdsa" and .on_disk == "same")] | length')" = 2 ] ||
		fail "$who: status --json: the other keys: $(json "$out.json" .ssh_keys)"
	[ "$(json "$out.json" '[.ssh_keys[] | select(.on_disk_checked == "'"$checked"'")] | length')" = 3 ] ||
		fail "$who: status --json did not check the ${checked}s"
}
run 0 "$AGENT" --root "$R" status
cp "$T/out" "$T/status.root"
run 0 "$AGENT" --root "$R" status --json
cp "$T/out" "$T/status.root.json"
check_status root private-key

# As a user, who cannot read the private keys: the .pub files stand in,
# and status says so.
if [ -n "$(find "$AGENT" -perm -o=x)" ] && setpriv --reuid=65534 --regid=65534 --clear-groups true 2>/dev/null; then
	chmod 0755 "$T"
	as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
	run 0 as_nobody "$AGENT" --root "$R" status
	cp "$T/out" "$T/status.nobody"
	expect_in "$T/out" "(private keys are root's: compared their .pub files)"
	run 0 as_nobody "$AGENT" --root "$R" status --json
	cp "$T/out" "$T/status.nobody.json"
	check_status nobody public-key
fi

# Gone altogether.
rm "$R/etc/ssh/ssh_host_rsa_key"
run 0 "$AGENT" --root "$R" status
ours=$(json "$R/run/seedbed/seed.json" '.ssh_keys[] | select(.type == "rsa") | .fingerprint')
expect_in "$T/out" "rsa     missing: seedbed's $ours (replaced) is no longer on disk"
run 0 "$AGENT" --root "$R" status --json
[ "$(json "$T/out" '.ssh_keys[] | select(.type == "rsa") | .on_disk')" = missing ] || fail "status --json: rsa not missing"
