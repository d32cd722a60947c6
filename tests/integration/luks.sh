#!/bin/bash
# LUKS volumes on real loop devices with the real tools, through
# tests/helpers/luks-driver (agent/luks.c) until the agent's "luks" verb
# is wired: a blank device becomes LUKS2 that cryptsetup opens with the
# key file, a second run changes nothing, and a device carrying anything
# blkid can see is left byte for byte as it was unless wipe is set.
# Device-mapper may be missing (containers): then opening must fail
# cleanly and be recorded; the other cases use --no-open.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

DRIVER=${top_builddir:?}/tests/helpers/luks-driver
[ "$(id -u)" -eq 0 ] || skip "loop devices need root"
[ -x "$DRIVER" ] || skip "no $DRIVER"
for tool in losetup partx cryptsetup blkid mkfs.ext4 mkfs.xfs mkfs.vfat mkswap sfdisk pvcreate sha256sum python3; do
	command -v "$tool" >/dev/null || skip "no $tool"
done
[ -e /dev/loop-control ] || skip "no /dev/loop-control"

# Labels, partition and mapping names unique to this run (ext4 labels
# take 16 bytes): tags are looked up on the whole machine, and parallel
# runs must not see each other's.
ID=sb$$
HOLDER=
DRIVER_PID=
cleanup() {
	# A driver still waiting for a lock must not format after the test.
	[ -z "$DRIVER_PID" ] || kill "$DRIVER_PID" 2>/dev/null || true
	[ -z "$HOLDER" ] || kill "$HOLDER" 2>/dev/null || true
	[ ! -e "/dev/mapper/$ID-open" ] || cryptsetup close "$ID-open" || true
	detach_loops
	[ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

# attach FILE [-P]: a loop device for FILE, its partitions visible, in $DEV.
attach() {
	DEV=$(losetup -f --show ${2:+"$2"} "$1") || skip "no free loop device"
	LOOPS+=("$DEV")
	# losetup -P does not always get the partitions made before it
	# returns; partx does it now.
	[ -z "${2:-}" ] || partx -u "$DEV"
}

# image NAME SIZE: a sparse file.
image() {
	truncate -s "$2" "$T/$1.img"
	echo "$T/$1.img"
}

sum() {
	sha256sum <"$1" | cut -d' ' -f1
}

# field NAME: one line of the driver's output.
field() {
	sed -n "s/^$1: //p" "$T/out"
}

expect_field() {
	local got
	got=$(field "$1")
	[ "$got" = "$2" ] || { cat "$T/out" "$T/err"; fail "$1 is '$got', expected '$2'"; }
}

R=$T/root
mkdir -p "$R/etc"
cat >"$R/etc/crypttab" <<'EOF'
# <target> <source> <key> <options>
swap /dev/disk/by-partlabel/swap /dev/urandom swap,cipher=aes-xts-plain64

EOF
cp "$R/etc/crypttab" "$T/crypttab.orig"

# --- A blank device: formatted, the key opens it, crypttab has its line.
attach "$(image blank 64M)"
BLANK=$DEV
run 0 "$DRIVER" --root "$R" --device "$BLANK" --name data --label "$ID-data" --no-open
expect_field action formatted
expect_field found ""
expect_field key-file /etc/seedbed/keys/data.key
expect_field key-file-created yes
expect_field crypttab "done"
expect_field open skipped
# One call for the key file, one for the volume key.
expect_field random-calls 2
UUID=$(field uuid)
[ "$UUID" = "$(cryptsetup luksUUID "$BLANK")" ] || fail "uuid $UUID is not the header's"
cryptsetup luksDump "$BLANK" >"$T/dump"
expect_in "$T/dump" "Version:       	2"
expect_in "$T/dump" "Label:         	$ID-data"
expect_in "$T/dump" "Subsystem:     	seedbed"
expect_in "$T/dump" "cipher: aes-xts-plain64"
KEY=$R/etc/seedbed/keys/data.key
cryptsetup open --test-passphrase --key-file "$KEY" "$BLANK" || fail "the key file does not open the volume"
head -c 64 /dev/urandom >"$T/wrong.key"
if cryptsetup open --test-passphrase --key-file "$T/wrong.key" "$BLANK" 2>/dev/null; then
	fail "a random key opens the volume"
fi
[ "$(stat -c '%a %u %s' "$KEY")" = "400 0 64" ] || fail "key file: $(stat -c '%a %u %s' "$KEY")"
[ "$(stat -c '%a %u' "$R/etc/seedbed/keys")" = "700 0" ] || fail "key dir: $(stat -c '%a %u' "$R/etc/seedbed/keys")"
[ "$(ls -A "$R/etc/seedbed/keys")" = data.key ] || fail "left in the key dir: $(ls -A "$R/etc/seedbed/keys")"
[ "$(ls -A "$R/etc")" = "crypttab
seedbed" ] || fail "left in etc: $(ls -A "$R/etc")"
{ cat "$T/crypttab.orig"; echo "data UUID=$UUID /etc/seedbed/keys/data.key luks"; } >"$T/crypttab.want"
cmp "$T/crypttab.want" "$R/etc/crypttab" || { diff -u "$T/crypttab.want" "$R/etc/crypttab"; fail "crypttab"; }

# --- Again: already done, and nothing changes, on the disk or in the tree.
before_dev=$(sum "$BLANK") before_tab=$(sum "$R/etc/crypttab") before_key=$(sum "$KEY")
ino_tab=$(stat -c %i "$R/etc/crypttab")
run 0 "$DRIVER" --root "$R" --device "$BLANK" --name data --label "$ID-data" --no-open
expect_field action already-done
expect_field uuid "$UUID"
expect_field key-file-created no
expect_field crypttab already
expect_field random-calls 0
expect_in "$T/out" "found: crypto_LUKS version 2 (UUID $UUID, LABEL \"$ID-data\")"
[ "$(sum "$BLANK")" = "$before_dev" ] || fail "second run changed the device"
[ "$(sum "$R/etc/crypttab")" = "$before_tab" ] || fail "second run changed crypttab"
[ "$(stat -c %i "$R/etc/crypttab")" = "$ino_tab" ] || fail "second run rewrote crypttab"
[ "$(sum "$KEY")" = "$before_key" ] || fail "second run changed the key file"

# By its LUKS2 label too, and with the CRNG "not ready": no secret needed.
run 0 "$DRIVER" --root "$R" --device "LABEL=$ID-data" --name data --no-open --not-ready
expect_field action already-done
expect_field device "$BLANK"
# By its UUID, with the stale crypttab line of an earlier volume replaced.
sed -i "s|^data .*|data UUID=00000000-0000-0000-0000-000000000000 /etc/seedbed/keys/data.key luks|" "$R/etc/crypttab"
run 0 "$DRIVER" --root "$R" --device "UUID=$UUID" --name data --no-open
expect_field crypttab "done"
cmp "$T/crypttab.want" "$R/etc/crypttab" || {
	diff -u "$T/crypttab.want" "$R/etc/crypttab"
	fail "crypttab line not replaced"
}

# --- Opening: where device-mapper works it opens, where it does not
# (containers) the failure is recorded and the rest still done.
# (/dev/mapper/control may exist without the driver: ask the kernel.)
if grep -qw device-mapper /proc/misc; then
	run 0 "$DRIVER" --root "$R" --device "$BLANK" --name "$ID-open" --key-file /etc/seedbed/keys/data.key --no-crypttab
	expect_field open "done"
	[ -b "/dev/mapper/$ID-open" ] || fail "not opened"
	run 0 "$DRIVER" --root "$R" --device "$BLANK" --name "$ID-open" --key-file /etc/seedbed/keys/data.key --no-crypttab
	expect_field open already
	cryptsetup close "$ID-open"
else
	run 1 "$DRIVER" --root "$R" --device "$BLANK" --name data
	expect_field action already-done
	expect_field open failed
	expect_field crypttab already
	expect_in "$T/out" "error: Failed to open '$BLANK' as '/dev/mapper/data'"
fi
[ "$(sum "$BLANK")" = "$before_dev" ] || fail "opening changed the device"

# --- Our own volume is never wiped, even when its key file is not the
# one configured.
run 1 "$DRIVER" --root "$R" --device "$BLANK" --name other --wipe --no-open
expect_field action refused
expect_in "$T/out" "is a seedbed LUKS2 volume (UUID $UUID)"
expect_field random-calls 0
[ "$(sum "$BLANK")" = "$before_dev" ] || fail "wipe destroyed our own volume"
[ ! -e "$R/etc/seedbed/keys/other.key" ] || fail "key file made for a refused volume"

# --- Devices that carry something: refused, byte for byte unchanged,
# with a message naming what is there.
sig_image() {
	local kind=$1 img
	case $kind in
	xfs) img=$(image "$kind" 320M) ;; # mkfs.xfs refuses less than 300 MB
	*) img=$(image "$kind" 64M) ;;
	esac
	case $kind in
	ext4) mkfs.ext4 -q -L "$ID-ext4" "$img" ;;
	xfs) mkfs.xfs -q "$img" ;;
	vfat) mkfs.vfat "$img" >/dev/null ;;
	swap) mkswap "$img" >/dev/null 2>&1 ;;
	mbr) echo 'size=16M, type=83' | sfdisk -q --label dos "$img" ;;
	gpt) printf 'size=24M, name=%s\n' "$ID-gpt" | sfdisk -q --label gpt "$img" ;;
	# Two filesystems at once (blkid: "ambivalent result"): ext4, with
	# the xfs image's superblock in the first sector it leaves alone.
	ambivalent)
		mkfs.ext4 -q "$img"
		dd if="$T/xfs.img" of="$img" bs=512 count=1 conv=notrunc status=none ;;
	esac
	case $kind in
	mbr | gpt) attach "$img" -P ;;
	*) attach "$img" ;;
	esac
	case $kind in
	lvm)
		# No lvmetad, no udev, and no devices file that lists only
		# the machine's own disks.
		LVM_SUPPRESS_FD_WARNINGS=1 pvcreate -q \
			--config 'devices{use_devicesfile=0} activation{udev_sync=0 udev_rules=0}' "$DEV" >/dev/null ;;
	luks1)
		head -c 32 /dev/urandom >"$T/luks1.key"
		cryptsetup -q luksFormat --type luks1 --pbkdf-force-iterations 1000 --key-file "$T/luks1.key" "$DEV" ;;
	luks2)
		head -c 32 /dev/urandom >"$T/luks2.key"
		cryptsetup -q luksFormat --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$T/luks2.key" "$DEV" ;;
	esac
}

declare -A expect=(
	[ext4]="ext4 filesystem (UUID "
	[xfs]="xfs filesystem (UUID "
	[vfat]="vfat filesystem (UUID "
	[swap]="swap (UUID "
	[mbr]="dos partition table"
	[gpt]="gpt partition table (PTUUID "
	[lvm]="LVM2_member (UUID "
	[luks1]="crypto_LUKS version 1 (UUID "
	[luks2]="crypto_LUKS version 2 (UUID "
	[ambivalent]="ambivalent signatures: xfs filesystem (UUID "
)
declare -A devs
for kind in ext4 xfs vfat swap mbr gpt lvm luks1 luks2 ambivalent; do
	sig_image "$kind"
	devs[$kind]=$DEV
	before=$(sum "$DEV")
	run 1 "$DRIVER" --root "$R" --device "$DEV" --name "$kind" --no-open
	expect_field action refused
	expect_in "$T/out" "found: ${expect[$kind]}"
	expect_in "$T/out" "error: '$DEV' is not blank: ${expect[$kind]}"
	expect_field random-calls 0
	expect_field crypttab skipped
	[ "$(sum "$DEV")" = "$before" ] || fail "$kind: the device changed"
	[ ! -e "$R/etc/seedbed/keys/$kind.key" ] || fail "$kind: a key file was made"
done
cmp -s "$T/crypttab.want" "$R/etc/crypttab" || fail "a refused volume changed crypttab"

# A partition of the GPT disk is blank: it is formatted, found by its
# name, and the disk's table is left alone.
GPT=${devs[gpt]}
table_before=$(head -c 1M "$GPT" | sha256sum)
run 0 "$DRIVER" --root "$R" --device "PARTLABEL=$ID-gpt" --name part --no-open
expect_field action formatted
expect_field device "${GPT}p1"
[ "$(head -c 1M "$GPT" | sha256sum)" = "$table_before" ] || fail "the partition table changed"
cryptsetup open --test-passphrase --key-file "$R/etc/seedbed/keys/part.key" "${GPT}p1" || fail "partition key"

# --- wipe: true formats over what is there, and leaves no signature
# behind (not even the GPT's backup header at the end of the disk).
run 0 "$DRIVER" --root "$R" --device "${devs[ext4]}" --name wiped --wipe --no-open
expect_field action formatted
expect_in "$T/out" "wiped: ext4 filesystem (UUID "
[ "$(blkid -p -o value -s TYPE "${devs[ext4]}")" = crypto_LUKS ] || fail "ext4: not LUKS after the wipe"
if wipefs -n -O TYPE --noheadings "${devs[ext4]}" | grep -qv crypto_LUKS; then
	fail "ext4: signatures left"
fi
cryptsetup open --test-passphrase --key-file "$R/etc/seedbed/keys/wiped.key" "${devs[ext4]}" || fail "wiped: key"

run 0 "$DRIVER" --root "$R" --device "$GPT" --name wipedgpt --wipe --no-open
expect_field action formatted
expect_in "$T/out" "wiped: gpt partition table"
[ "$(grep -c 'EFI PART' "$GPT" || true)" = 0 ] || fail "a GPT header survived the wipe"
[ ! -e "${GPT}p1" ] || fail "the kernel still shows the wiped disk's partition"
[ "$(blkid -p -o value -s TYPE "$GPT")" = crypto_LUKS ] || fail "gpt: not LUKS after the wipe"

# --- Two devices with one label: ambiguous, neither touched.
attach "$(image twin1 64M)"
TWIN1=$DEV
attach "$(image twin2 64M)"
TWIN2=$DEV
mkfs.ext4 -q -L "$ID-twin" "$TWIN1"
mkfs.ext4 -q -L "$ID-twin" "$TWIN2"
t1=$(sum "$TWIN1") t2=$(sum "$TWIN2")
run 1 "$DRIVER" --root "$R" --device "LABEL=$ID-twin" --name twin --wipe --no-open
expect_field action refused
expect_in "$T/out" "is ambiguous"
[ "$(sum "$TWIN1")" = "$t1" ] || fail "an ambiguous spec touched a device"
[ "$(sum "$TWIN2")" = "$t2" ] || fail "an ambiguous spec touched a device"

# --- Nothing with the tag: not found.
run 1 "$DRIVER" --root "$R" --device "PARTLABEL=$ID-none" --name none --no-open
expect_field action not-found
expect_in "$T/out" "error: no device with PARTLABEL=$ID-none"

# --- The gate has not passed: no key, no format.
attach "$(image unready 64M)"
before=$(sum "$DEV")
run 1 "$DRIVER" --root "$R" --device "$DEV" --name unready --no-open --not-ready
expect_field action failed
expect_field random-calls 0
expect_in "$T/out" "not ready"
[ ! -e "$R/etc/seedbed/keys/unready.key" ] || fail "a key file was made before the gate"
[ "$(sum "$DEV")" = "$before" ] || fail "formatted before the gate"

# hold DEV: opened exclusively by another process, as a mount or an
# open mapping holds it, until release.
hold() {
	rm -f "$T/held"
	python3 -c 'import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL)
open(sys.argv[2], "w").close()
time.sleep(60)' "$1" "$T/held" &
	HOLDER=$!
	for _ in $(seq 100); do [ -e "$T/held" ] && break; sleep 0.05; done
	[ -e "$T/held" ] || fail "the holder did not start"
}
release() {
	kill "$HOLDER"
	wait "$HOLDER" 2>/dev/null || true
	HOLDER=
}

# --- A device in use (held open exclusively, as a mount would): not touched.
UNREADY=$DEV
hold "$UNREADY"
run 1 "$DRIVER" --root "$R" --device "$UNREADY" --name busy --no-open
release
expect_field action failed
expect_in "$T/out" "is in use"
[ "$(sum "$UNREADY")" = "$before" ] || fail "a device in use was changed"

# --- Our own volume, held (crypttab opened it before firstboot ran, as on
# a clone's first boot): already done, read and not written.
before=$(sum "$BLANK")
hold "$BLANK"
run 0 "$DRIVER" --root "$R" --device "$BLANK" --name data --label "$ID-data" --no-open
release
expect_field action already-done
[ "$(sum "$BLANK")" = "$before" ] || fail "our volume, held, was changed"

# --- A format cut short: the key file written, our header without a
# keyslot.  Formatted again with that key file; without the key file the
# header is not recognisably ours and is left alone.
attach "$(image cut 64M)"
CUT=$DEV
head -c 32 /dev/urandom >"$T/cut.key"
cryptsetup -q luksFormat --type luks2 --subsystem seedbed --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
	--key-file "$T/cut.key" "$CUT"
cryptsetup -q luksErase "$CUT"
before=$(sum "$CUT")
run 1 "$DRIVER" --root "$R" --device "$CUT" --name cut --no-open
expect_field action refused
expect_in "$T/out" "(missing) cannot open"
[ "$(sum "$CUT")" = "$before" ] || fail "cut: changed without its key file"
install -m 0400 "$T/cut.key" "$R/etc/seedbed/keys/cut.key"
run 0 "$DRIVER" --root "$R" --device "$CUT" --name cut --no-open
expect_field action formatted
expect_field key-file-created no
expect_field random-calls 1
cryptsetup open --test-passphrase --key-file "$R/etc/seedbed/keys/cut.key" "$CUT" || fail "cut: key"

# Every volume has exactly one crypttab line, the other lines as they were.
for name in data part wiped wipedgpt cut; do
	[ "$(grep -c "^$name " "$R/etc/crypttab")" = 1 ] || fail "crypttab lines for $name"
done
head -n 3 "$R/etc/crypttab" | cmp -s - "$T/crypttab.orig" || fail "crypttab's own lines changed"
[ "$(wc -l <"$R/etc/crypttab")" = 8 ] || { cat "$R/etc/crypttab"; fail "crypttab line count"; }

# --- Data that carries no signature (plain dm-crypt, a detached-header
# LUKS volume, a raw database look like this): not blank, left byte for
# byte, no secret made.  Only the edges are read: a disk that is all
# random bytes, and one that is zeros but for its last MiB.
head -c 64M /dev/urandom >"$T/random.img"
attach "$T/random.img"
RANDOM_DEV=$DEV
before=$(sum "$RANDOM_DEV")
run 1 "$DRIVER" --root "$R" --device "$RANDOM_DEV" --name random --no-open --no-crypttab
expect_field action refused
expect_field found ""
expect_in "$T/out" "error: '$RANDOM_DEV' carries no signature, but its first or last MiB is not zeros"
expect_field random-calls 0
[ "$(sum "$RANDOM_DEV")" = "$before" ] || fail "random: the device changed"
[ ! -e "$R/etc/seedbed/keys/random.key" ] || fail "random: a key file was made"

img=$(image tail 64M)
head -c 4096 /dev/urandom | dd of="$img" bs=4096 seek=$((64 * 256 - 1)) conv=notrunc status=none
attach "$img"
before=$(sum "$DEV")
run 1 "$DRIVER" --root "$R" --device "$DEV" --name tail --no-open --no-crypttab
expect_field action refused
[ "$(sum "$DEV")" = "$before" ] || fail "tail: the device changed"

# The owner's word formats it: wipe: true, or require-zeroes: false.
run 0 "$DRIVER" --root "$R" --device "$DEV" --name tail --no-open --no-crypttab --no-require-zeroes
expect_field action formatted
cryptsetup open --test-passphrase --key-file "$R/etc/seedbed/keys/tail.key" "$DEV" || fail "tail: key"
run 0 "$DRIVER" --root "$R" --device "$RANDOM_DEV" --name random --no-open --no-crypttab --wipe
expect_field action formatted
cryptsetup open --test-passphrase --key-file "$R/etc/seedbed/keys/random.key" "$RANDOM_DEV" || fail "random: key"

# --- The whole disk is locked (systemd's block device locking: udev, a
# partitioner): a blank partition of it waits, untouched, until the lock
# is released, and is formatted then.
img=$(image locked 64M)
printf 'size=24M, name=%s\n' "$ID-locked" | sfdisk -q --label gpt "$img"
attach "$img" -P
LOCKED=$DEV
[ -b "${LOCKED}p1" ] || fail "no partition on $LOCKED"
rm -f "$T/locked"
python3 -c 'import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.05)' "$LOCKED" "$T/locked" "$T/unlock" &
HOLDER=$!
for _ in $(seq 200); do [ -e "$T/locked" ] && break; sleep 0.05; done
[ -e "$T/locked" ] || fail "the lock holder did not start"
before=$(sum "${LOCKED}p1")
"$DRIVER" --root "$R" --device "${LOCKED}p1" --name locked --no-open --no-crypttab >"$T/out" 2>"$T/err" &
DRIVER_PID=$!
for _ in $(seq 400); do grep -q "holds the lock on disk" "$T/err" && break; sleep 0.05; done
expect_in "$T/err" "Another program holds the lock on disk '$LOCKED'; waiting up to 30 s for it."
[ "$(sum "${LOCKED}p1")" = "$before" ] || fail "locked: written while the disk was locked"
touch "$T/unlock"
wait "$HOLDER" || true
HOLDER=
wait "$DRIVER_PID" || { cat "$T/out" "$T/err"; fail "locked: the driver failed after the lock was released"; }
DRIVER_PID=
expect_field action formatted
cryptsetup open --test-passphrase --key-file "$R/etc/seedbed/keys/locked.key" "${LOCKED}p1" || fail "locked: key"

# --- A refused device stays as it was, even where libcryptsetup would
# "repair" it: a foreign LUKS2 volume whose primary header is damaged.
img=$(image damaged 64M)
attach "$img"
head -c 32 /dev/urandom >"$T/damaged.key"
cryptsetup -q luksFormat --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$T/damaged.key" "$DEV"
printf 'garbage' | dd of="$DEV" bs=1 seek=5000 conv=notrunc status=none
before=$(sum "$DEV")
run 1 "$DRIVER" --root "$R" --device "$DEV" --name damaged --no-open --no-crypttab
expect_field action refused
[ "$(sum "$DEV")" = "$before" ] || fail "damaged: a refused device was written"

# --- wipe: true on a disk whose partition someone has open: the kernel
# would keep that partition over the new keyslots; refused, untouched.
img=$(image openpart 64M)
printf 'size=24M, name=%s\n' "$ID-openpart" | sfdisk -q --label gpt "$img"
attach "$img" -P
OPENPART=$DEV
before=$(sum "$OPENPART")
exec 9<"${OPENPART}p1"
run 1 "$DRIVER" --root "$R" --device "$OPENPART" --name openpart --wipe --no-open --no-crypttab
exec 9<&-
expect_field action failed
expect_in "$T/out" "a partition of '$OPENPART' is in use"
expect_field random-calls 0
[ "$(sum "$OPENPART")" = "$before" ] || fail "openpart: the disk was written"
[ ! -e "$R/etc/seedbed/keys/openpart.key" ] || fail "openpart: a key file was made"

# --- Too small for a LUKS2 header and data: failed before any key file.
attach "$(image tiny 2M)"
run 1 "$DRIVER" --root "$R" --device "$DEV" --name tiny --no-open --no-crypttab
expect_in "$T/out" "less than a LUKS2 header area"
[ ! -e "$R/etc/seedbed/keys/tiny.key" ] || fail "tiny: a key file was made"

# The volumes formatted here are what cryptsetup luksFormat makes: the
# data starts after a 16 MiB header area.
[ "$(cryptsetup luksDump "$BLANK" | awk '$1 == "offset:" { print $2; exit }')" = 16777216 ] ||
	fail "the data offset is not 16 MiB: $(cryptsetup luksDump "$BLANK")"
