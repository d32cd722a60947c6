#!/bin/bash
# seedbed-agent's first-boot commands on this machine, against a fake
# tree (--root) and a real loop device: keys and a LUKS volume are made
# once, a second run changes nothing, and a new instance UUID regenerates
# the keys but leaves the volume (and its data) alone.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root"
command -v cryptsetup >/dev/null || skip "cryptsetup is not installed"
command -v ssh-keygen >/dev/null || skip "ssh-keygen is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
losetup -f >/dev/null 2>&1 || skip "no loop devices"

R=$T/root
S=$R/var/lib/seedbed
mkdir -p "$R/etc/seedbed" "$R/sys/class/dmi/id"
echo "4c4c4544-0000-1000-8000-000000000001" >"$R/sys/class/dmi/id/product_uuid"
echo "0123456789abcdef0123456789abcdef" >"$R/etc/machine-id"
truncate -s 32M "$T/disk.img"
LOOP=$(losetup -f --show "$T/disk.img")
trap 'losetup -d "$LOOP" 2>/dev/null; [ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"' EXIT
cat >"$R/etc/seedbed/seedbed.yaml" <<YAML
ssh:
  key-types: [ed25519, ecdsa]
luks:
  volumes:
    - device: $LOOP
      name: data
      label: seedbed-test
      open: false
YAML

fingerprints() { for f in "$R"/etc/ssh/ssh_host_*_key.pub; do ssh-keygen -l -f "$f"; done | sort; }

run 0 "$AGENT" --root "$R" firstboot
rec=$R/run/seedbed/seed.json
[ "$(json "$rec" .command)" = firstboot ] || fail "record command"
# firstboot.json is world-readable and the UUID root-only: it holds the
# UUID's keyed hash (so do the other records there).
uuid_private "$R" 4c4c4544-0000-1000-8000-000000000001
[ "$(stat -c %a "$R/var/lib/seedbed/firstboot.json")" = 644 ] || fail "firstboot.json is not 0644"
[ "$(json "$R/var/lib/seedbed/firstboot.json" .instance.product_uuid)" = null ] || fail "the UUID in the clear"
json "$R/var/lib/seedbed/firstboot.json" .instance.product_uuid_hmac | grep -qxE '[0-9a-f]{64}' ||
	fail "no hash of the product UUID in firstboot.json"
! grep -qiF 4c4c4544-0000-1000-8000-000000000001 "$T/out" "$rec" || fail "the UUID is printed or in the record"
[ "$(json "$rec" .firstboot)" = "done" ] || fail "firstboot $(json "$rec" .firstboot)"
[ "$(json "$rec" '.ssh_keys | length')" = 2 ] || fail "two keys expected"
[ "$(json "$rec" '.luks_volumes[0].action')" = formatted ] || fail "volume $(json "$rec" '.luks_volumes[0].action')"
# The console blocks carry exactly what ssh-keygen says of the files.
sed -n '/BEGIN SSH HOST KEY FINGERPRINTS/,/END SSH HOST KEY FINGERPRINTS/p' "$T/out" | grep -v -- ----- | sort >"$T/console"
fingerprints >"$T/files"
diff -u "$T/files" "$T/console" || fail "the console fingerprints differ from ssh-keygen's"
# The volume opens with its key file, and crypttab names it.
cryptsetup luksDump "$LOOP" | grep -q "^Version:.*2" || fail "not LUKS2"
cryptsetup luksDump "$LOOP" | grep -q "seedbed-test" || fail "label missing"
cryptsetup open --test-passphrase --key-file "$R/etc/seedbed/keys/data.key" "$LOOP" || fail "the key file does not open the volume"
uuid=$(cryptsetup luksUUID "$LOOP")
grep -qx "data UUID=$uuid /etc/seedbed/keys/data.key luks" "$R/etc/crypttab" || fail "crypttab: $(cat "$R/etc/crypttab")"
[ "$(stat -c %a "$R/etc/seedbed/keys/data.key")" = 400 ] || fail "key file mode"

# Same instance: nothing changes, and it says so.
sum=$(sha256sum <"$T/disk.img")
cp "$R/etc/crypttab" "$T/crypttab.before"
run 0 "$AGENT" --root "$R" firstboot
expect_in "$T/err" "already done for this instance"
[ "$(json "$rec" .firstboot)" = already-done ] || fail "the record says firstboot $(json "$rec" .firstboot)"
[ "$(json "$rec" '.boot.runs[-1].command + " " + .boot.runs[-1].result')" = "firstboot already-done" ] ||
	fail "the record's last run: $(json "$rec" '.boot.runs[-1]')"
run 0 "$AGENT" --root "$R" status
expect_in "$T/out" "First boot: already done for this instance"
! grep -qiF 4c4c4544-0000-1000-8000-000000000001 "$T/out" "$T/err" || fail "status prints the UUID"
[ "$(sha256sum <"$T/disk.img")" = "$sum" ] || fail "the disk changed on the second run"
cmp -s "$T/crypttab.before" "$R/etc/crypttab" || fail "crypttab changed on the second run"
fingerprints | diff -u "$T/files" - || fail "keys changed on the second run"

# The luks command alone on the same volume: already done.
run 0 "$AGENT" --root "$R" luks
[ "$(json "$rec" '.luks_volumes[0].action')" = already-done ] || fail "luks: $(json "$rec" '.luks_volumes[0].action')"

# A clone: another SMBIOS UUID.  New keys; the volume (data) stays.
records_hash "$R" 4c4c4544-0000-1000-8000-000000000001
cp "$S/instance-key" "$T/image-key"
image_key=$(json "$S/firstboot.json" .instance.product_uuid_key)
echo "4c4c4544-0000-1000-8000-000000000002" >"$R/sys/class/dmi/id/product_uuid"
run 0 "$AGENT" --root "$R" firstboot
fingerprints >"$T/files2"
if grep -qFf <(awk '{ print $2 }' "$T/files") "$T/files2"; then
	fail "a new instance kept a key"
fi
[ "$(json "$rec" '.luks_volumes[0].action')" = already-done ] || fail "the clone re-formatted the volume"
[ "$(cryptsetup luksUUID "$LOOP")" = "$uuid" ] || fail "the volume changed"
[ "$(json "$rec" .firstboot)" = "done" ] || fail "the clone: firstboot $(json "$rec" .firstboot)"
uuid_private "$R" 4c4c4544-0000-1000-8000-000000000002
# Its own instance key: the image's came with it, and anyone who has the
# image could test guesses of the clone's UUID against its records (and
# the key's ID would link the clones).  Both records are hashed with it.
! cmp -s "$T/image-key" "$S/instance-key" || fail "the clone kept the image's instance key"
for f in firstboot.json ssh-keys.json; do
	[ "$(json "$S/$f" .instance.product_uuid_key)" != "$image_key" ] || fail "$f: the image's key ID"
done
records_hash "$R" 4c4c4544-0000-1000-8000-000000000002
[ "$(json "$S/ssh-keys.json" '[.keys[].fingerprint] | sort | join(" ")')" = \
	"$(awk '{ print $2 }' "$T/files2" | sort | tr '\n' ' ' | sed 's/ $//')" ] || fail "ssh-keys.json lost the new keys"
cp "$S/ssh-keys.json" "$T/ssh-keys.json"
run 0 "$AGENT" --root "$R" firstboot
expect_in "$T/err" "already done for this instance"
fingerprints | diff -u "$T/files2" - || fail "the clone's keys changed on its second boot"
cmp -s "$T/ssh-keys.json" "$S/ssh-keys.json" || fail "ssh-keys.json was written again on the clone's second boot"
! grep -q "instance key" "$T/err" || fail "the clone's records do not hold up against its key: $(cat "$T/err")"

# Records from before the UUID was hashed: still this instance, and the
# run that finds it takes the UUID out of both (nothing else rewrites them
# at boot), with everything else in them as it was.
old_time=2021-02-03T04:05:06Z
printf '{"version": 1, "time": "%s", "instance": {"product_uuid": "%s", "machine_id": "%s"}}\n' \
	"$old_time" 4c4c4544-0000-1000-8000-000000000002 0123456789abcdef0123456789abcdef >"$S/firstboot.json"
jq --arg t "$old_time" '.time = $t | .instance = { product_uuid: "4c4c4544-0000-1000-8000-000000000002",
	machine_id: .instance.machine_id }' "$S/ssh-keys.json" >"$T/old.json"
cp "$T/old.json" "$S/ssh-keys.json"
run 0 "$AGENT" --root "$R" firstboot
expect_in "$T/err" "already done for this instance"
uuid_private "$R" 4c4c4544-0000-1000-8000-000000000002
for f in firstboot.json ssh-keys.json; do
	json "$S/$f" .instance.product_uuid_hmac | grep -qxE '[0-9a-f]{64}' ||
		fail "the old $f was not rewritten with the UUID's hash"
	[ "$(json "$S/$f" .time)" = "$old_time" ] || fail "the old $f's time changed: $(json "$S/$f" .time)"
done
hash=$(json "$S/firstboot.json" .instance.product_uuid_hmac)
[ "$(json "$S/ssh-keys.json" .instance.product_uuid_hmac)" = "$hash" ] ||
	fail "the records hold different hashes of one UUID"
[ "$(jq -S 'del(.instance)' "$S/ssh-keys.json")" = "$(jq -S 'del(.instance)' "$T/old.json")" ] ||
	fail "ssh-keys.json changed beyond its UUID: $(cat "$S/ssh-keys.json")"
fingerprints | diff -u "$T/files2" - || fail "keys changed for an old record of this instance"

# The instance key lost, then another in its place: the records' UUID
# cannot be checked, the machine-id says this is the instance, and both
# records are hashed again with the key in place, once; later clones are
# told apart by their UUID again.
for case in lost other; do
	rm "$S/instance-key"
	[ "$case" = lost ] || { head -c 32 /dev/urandom >"$S/instance-key"; chmod 400 "$S/instance-key"; }
	run 0 "$AGENT" --root "$R" firstboot
	expect_in "$T/err" "already done for this instance"
	# Said once, where it is decided, naming the key under --root.
	expect_in "$T/err" "'$S/firstboot.json' holds the SMBIOS UUID hashed with an instance key"
	expect_in "$T/err" "('$S/instance-key'): taking the recorded UUID as unknown"
	[ "$(grep -c "taking the recorded UUID as unknown" "$T/err")" -eq 1 ] || fail "$case key: said more than once"
	records_hash "$R" 4c4c4544-0000-1000-8000-000000000002
	uuid_private "$R" 4c4c4544-0000-1000-8000-000000000002
	fingerprints | diff -u "$T/files2" - || fail "$case key: the host keys changed"
	run 0 "$AGENT" --root "$R" firstboot
	! grep -q "instance key" "$T/err" || fail "$case key: said again: $(cat "$T/err")"
done
echo "4c4c4544-0000-1000-8000-000000000003" >"$R/sys/class/dmi/id/product_uuid"
run 0 "$AGENT" --root "$R" firstboot
expect_in "$T/err" "new instance"
fingerprints >"$T/files3"
if grep -qFf <(awk '{ print $2 }' "$T/files2") "$T/files3"; then
	fail "a clone after a lost instance key kept a host key"
fi
records_hash "$R" 4c4c4544-0000-1000-8000-000000000003

# expect_refused IMAGE NAME MESSAGE: the luks command, given IMAGE's loop
# device as volume NAME, exits 7 saying MESSAGE, records the refusal,
# makes no key file and leaves every byte of IMAGE as it was.
LOOPS=("$LOOP")
trap 'losetup -d "${LOOPS[@]}" 2>/dev/null; [ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"' EXIT
expect_refused() {
	local img=$1 name=$2 message=$3 dev before
	dev=$(losetup -f --show "$img")
	LOOPS+=("$dev")
	before=$(sha256sum <"$img")
	printf 'luks:\n  volumes:\n    - device: %s\n      name: %s\n      open: false\n' "$dev" "$name" >"$T/$name.yaml"
	run 7 "$AGENT" --root "$R" --config "$T/$name.yaml" luks
	expect_in "$T/err" "$message"
	[ "$(json "$rec" '.luks_volumes[0].action')" = refused ] || fail "$name: not refused"
	[ "$(sha256sum <"$img")" = "$before" ] || fail "$name: the device was touched"
	[ ! -e "$R/etc/seedbed/keys/$name.key" ] || fail "$name: a key file was made"
}

# A device that holds a filesystem is refused, named, and left alone.
truncate -s 32M "$T/ext4.img"
mkfs.ext4 -q -F "$T/ext4.img"
expect_refused "$T/ext4.img" old "is not blank: ext4 filesystem"

# A device full of random bytes carries no signature but may hold data
# (plain dm-crypt, a raw database): refused all the same.
head -c 32M /dev/urandom >"$T/random.img"
expect_refused "$T/random.img" raw "its first or last MiB is not zeros"
