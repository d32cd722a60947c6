#!/bin/bash
# Crash trials: the real seedbed-agent, under --root in a scratch tree and
# with LUKS volumes on loop devices (formatted, never opened: no
# device-mapper needed), killed with SIGKILL at a random moment of its run:
# the delay is drawn uniformly over the run's duration (the median of
# three complete runs, measured first), a tenth of it before and three
# tenths after (runs vary), so kills land before the start, at every
# step, and after the end.  What each kill leaves is read with the tools
# people use (ssh-keygen, cryptsetup, blkid, jq, openssl, find) and is
#   nothing   none of what the command makes is there;
#   old       the set that was there before, byte for byte;
#   new       the complete new set: every file sound, the records
#             vouching for exactly what is on disk;
#   between   every file whole and sound, the set part made: one key new
#             and the next not yet, a private key whose .pub is not
#             written yet, a LUKS key file whose device is not formatted
#             yet or carries our header without its keyslot yet, a record
#             still pending or hashed with the instance key just replaced.
#             Files are written one at a time, so a set of several cannot
#             appear at once: these are the states the next run finishes;
#   bad       anything else: a partial, empty or wrong-mode key or record,
#             a .pub that is not its private key's public half, a key file
#             without a volume it can become the key of, a volume whose
#             key file is lost or does not open it, a record vouching for a
#             key that is not on disk, an old ssh-keys.json of this
#             instance beside keys that changed, a file none of these
#             (nor the template) accounts for, a device holding data
#             written.
# So the invariant checked, as seedbed-agent(8) states it under "Crash
# safety": each file is old or new, whole, with its mode; the set as a
# whole may be part made, and converges on the next run; a LUKS key file
# may precede its header (by design: the format needs the key first).
# After each kill the command runs again, uncut, and must complete: the
# new set (or the old one where nothing is to change) and no temporary
# file left.  Per operation the counts are printed, the between states by
# kind (part:KIND, a trial may show several) so that what was hit is seen.
#
# CRASH_TRIALS (default 100) trials per operation; CRASH_OPS picks
# operations (sshkeys luks firstboot records); CRASH_SEED repeats the
# draw of delays.  Host keys are Ed25519 and ECDSA, and every tenth
# sshkeys trial adds RSA at 2048 bits, the least the agent makes: at its
# default 3072 bits RSA alone would take most of the test's time, and its
# files are written as the others are.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "loop devices and host keys need root"
for tool in ssh-keygen cryptsetup losetup blkid blockdev jq openssl od sha256sum cmp; do
	command -v "$tool" >/dev/null || skip "no $tool"
done
[ -e /dev/loop-control ] || skip "no /dev/loop-control"

TRIALS=${CRASH_TRIALS:-100}
OPS=${CRASH_OPS:-sshkeys luks firstboot records}
SEED=${CRASH_SEED:-$$}
RANDOM=$SEED
# LUKS labels are seen machine-wide: unique to this run.
ID=sb$$
UUID_A=4c4c4544-0000-1000-8000-00000000000a
UUID_B=4c4c4544-0000-1000-8000-00000000000b
MACHINE_ID=0123456789abcdef0123456789abcdef
echo "crash-trials: $TRIALS trials per operation (CRASH_TRIALS), seed $SEED (CRASH_SEED)"

declare -A SIZE
trap 'detach_loops; [ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"' EXIT

# loop NAME SIZE [random]: a loop device over a new image, in $DEV.
loop() {
	if [ "${3:-}" = random ]; then
		head -c "$2" /dev/urandom >"$T/$1.img"
	else
		truncate -s "$2" "$T/$1.img"
	fi
	DEV=$(losetup -f --show "$T/$1.img") || skip "no free loop device"
	LOOPS+=("$DEV")
	SIZE[$DEV]=$(blockdev --getsize64 "$DEV")
}

# zero DEV: all zeros again, fast where the loop device can punch holes
# in its image.
zero() {
	blkdiscard -f "$1" 2>/dev/null ||
		dd if=/dev/zero of="$1" bs=1M count=$((SIZE[$1] >> 20)) oflag=direct status=none
}

# keep DEV, unchanged DEV: a copy of what DEV holds, and whether it still
# does (cmp stops at the first difference, and hashes nothing).
keep() {
	dd if="$1" of="$T/kept${1//\//-}" bs=1M status=none
}
unchanged() {
	cmp -s "$1" "$T/kept${1//\//-}"
}

now_us() {
	echo "${EPOCHREALTIME/./}"
}

# ---- what is on disk: one pass of find and of sha256sum per look, since
# every process costs (jq some 40 ms, python some 200 ms on a busy CI
# machine, and a trial looks twice)

# scan ROOT: FILE[path] "TYPE MODE OWNER SIZE" (find's %y %m %U:%G %s) of
# everything under ROOT, SUM[path] the sha256 of every regular file but
# the fake sysfs; paths as the tree sees them ("/etc/ssh/…").
declare -A FILE SUM
scan() {
	local line p info
	FILE=() SUM=()
	# find's lines have a tab, sha256sum's none (nor do our paths).
	while IFS= read -r line; do
		if [[ $line == *$'\t'* ]]; then
			IFS=$'\t' read -r p info <<<"$line"
			FILE[/$p]=$info
		else
			read -r info p <<<"$line"
			SUM[${p#"$1"}]=$info
		fi
	done < <(find "$1" -mindepth 1 -printf '%P\t%y %m %U:%G %s\n' -type f ! -path "$1/sys/*" -exec sha256sum {} +)
}

# The templates' sums: OLD["SCENARIO|path"].
declare -A OLD
scan_template() {
	local p
	scan "$T/tpl-$1"
	for p in "${!SUM[@]}"; do
		OLD[$1|$p]=${SUM[$p]}
	done
}

# What each trial finds: the items of its set, each none (not there, nor
# before), old, new, part (sound, between old and new; KIND says how) or
# same (must not change, and did not), and what is wrong (a file that was
# there before and is gone is lost: nothing of ours removes one).
ITEMS=()
BADS=()
PARTS=()
item() {
	ITEMS+=("$1=$2")
	[ "$2" != part ] || PARTS+=("${3:?part of what kind}")
}
bad() {
	BADS+=("$*")
}

# The set from its items, in STATE: nothing, old, new or between; for
# between, KINDS says which (the items' part kinds, mixed-keys where host
# keys are some new and some not, mixed where other items are).
set_state() {
	local i s all_none=true all_old=true all_new=true key_new=false key_not=false
	for i in "${ITEMS[@]}"; do
		s=${i#*=}
		[ "$s" = none ] || all_none=false
		[ "$s" = old ] || [ "$s" = same ] || [ "$s" = none ] || all_old=false
		[ "$s" = new ] || [ "$s" = same ] || all_new=false
		case ${i%%=*}=$s in
		ed25519=new | ecdsa=new | rsa=new) key_new=true ;;
		ed25519=* | ecdsa=* | rsa=*) key_not=true ;;
		esac
	done
	KINDS=("${PARTS[@]}")
	if $all_none; then
		STATE=nothing
	elif $all_old; then
		STATE=old
	elif $all_new; then
		STATE=new
	else
		STATE=between
		! $key_new || ! $key_not || KINDS+=(mixed-keys)
		[ ${#KINDS[@]} -gt 0 ] || KINDS=(mixed)
	fi
}

# has PATH, is PATH "TYPE MODE OWNER" [SIZE], is_old PATH: facts of the
# trial's tree (R) against the scenario's template (S).
has() {
	[ -n "${FILE[$1]:-}" ]
}
is() {
	local f=${FILE[$1]:-missing}
	if [ $# -eq 3 ]; then [ "$f" = "$2 $3" ]; else [ "${f% *}" = "$2" ]; fi
}
is_old() {
	[ -n "${SUM[$1]:-}" ] && [ "${SUM[$1]}" = "${OLD[$S|$1]:-}" ]
}
was() {
	[ -e "$T/tpl-$S$1" ] || [ -L "$T/tpl-$S$1" ]
}

# temp_files: what a kill left between creating a temporary file and
# renaming it is a regular file of root's that nobody else may write, and
# that nobody else may read where it holds a secret (a private key, a key
# file, the instance key).
TEMPS=()
temp_files() {
	local p open type m owner
	TEMPS=()
	for p in "${!FILE[@]}"; do
		case $p in
		*.tmp) ;;
		*) continue ;;
		esac
		TEMPS+=("$p")
		case ${p##*/} in
		*.pub.*.tmp | *.json.*.tmp | crypttab.*.tmp) open=022 ;;
		*) open=077 ;;
		esac
		read -r type m owner _ <<<"${FILE[$p]}"
		if [ "$type $owner" != "f 0:0" ] || [ $((0$m & open)) -ne 0 ]; then
			bad "temporary file '$p' is ${FILE[$p]}"
		fi
	done
}

# ssh_key TYPE: one host key, its private file and its .pub.  Its
# public half, as ssh-keygen derives it, goes to $T/derived; what
# ssh-keygen said of a private key's bytes is kept (DERIVED), since a
# trial looks twice and the rerun mostly keeps the keys.
declare -A DERIVED FINGERPRINT
ssh_key() {
	local t=$1 k=/etc/ssh/ssh_host_$1_key p=/etc/ssh/ssh_host_$1_key.pub algo blob dalgo dblob
	if ! has "$k" && ! has "$p"; then
		if was "$k"; then bad "$t: the key was lost"; else item "$t" none; fi
		return
	fi
	if has "$k"; then
		is "$k" "f 600 0:0" || { bad "$t: the private key is ${FILE[$k]}"; return; }
		if [ -z "${DERIVED[${SUM[$k]}]:-}" ]; then
			ssh-keygen -y -f "$R$k" >"$T/pub.$t" 2>"$T/keygen.err" ||
				{ bad "$t: the private key (${FILE[$k]##* } bytes) is unreadable: $(cat "$T/keygen.err")"; return; }
			read -r dalgo dblob _ <"$T/pub.$t"
			DERIVED[${SUM[$k]}]="$dalgo $dblob"
		fi
		read -r dalgo dblob <<<"${DERIVED[${SUM[$k]}]}"
		echo "$dalgo $dblob" >>"$T/derived"
	else
		bad "$t: a .pub ($(is_old "$p" && echo old || echo new)) without its private key"
		return
	fi
	if has "$p"; then
		is "$p" "f 644 0:0" || { bad "$t: the .pub is ${FILE[$p]}"; return; }
		read -r algo blob _ <"$R$p" || true
		[ "$algo $blob" = "$dalgo $dblob" ] ||
			{ bad "$t: the .pub is not the private key's public half (private key $(is_old "$k" && echo old ||
				echo new), .pub $(is_old "$p" && echo old || echo new), ${FILE[$p]##* } bytes)"; return; }
	fi
	if is_old "$k"; then
		# A key being replaced loses its .pub first.
		if has "$p"; then item "$t" old; else item "$t" part "$t-old-no-pub"; fi
	elif has "$p"; then
		item "$t" new
	else
		item "$t" part "$t-no-pub" # the private key is written first: the next run writes its .pub
	fi
}

# hmac KEY_HEX LABEL DATA: HMAC-SHA256 of LABEL, a NUL and DATA, in hex,
# by openssl, in HMAC (lib.sh's uuid_hash() with Python is too slow to
# run a few hundred times).
hmac() {
	printf '%s\0%s' "$2" "$3" >"$T/hmac.in"
	HMAC=$(openssl dgst -sha256 -mac HMAC -macopt "hexkey:$1" -r "$T/hmac.in")
	HMAC=${HMAC%% *}
}

# instance MACHINE_ID HMAC KEY_ID UUID: what a record's "instance" says
# of the tree's, in INST: current (the UUID hashed with the key in place,
# the machine-id), rekey (hashed with a key no longer in place, which the
# next run hashes again), other (another instance), or what is wrong.
# The hashes of each key are kept: INST is no $(...) away.
declare -A HASHED
instance() {
	local mid=$1 hmac=$2 key_id=$3 uuid=$4 key=/var/lib/seedbed/instance-key ours hex
	INST="the UUID in the clear"
	[ -z "$uuid" ] || return 0
	INST=other
	! [[ $MID =~ ^[0-9a-f]{32}$ ]] || [ "$mid" = "$MID" ] || return 0
	INST="no UUID hash"
	[ -n "$hmac" ] || return 0
	INST="a UUID hash, and no instance key"
	has "$key" || return 0
	INST="an instance key that is ${FILE[$key]}"
	is "$key" "f 400 0:0" 32 || return 0
	# By key and UUID: the trees of the scenarios differ in their UUID.
	if [ -z "${HASHED[${SUM[$key]}|$UUID]:-}" ]; then
		hex=$(od -An -tx1 -v "$R$key")
		hex=${hex//[$' \n']/}
		hmac "$hex" 'seedbed instance key id v1' ''
		ours=${HMAC:0:16}
		hmac "$hex" 'seedbed instance product_uuid v1' "$UUID"
		HASHED[${SUM[$key]}|$UUID]="$ours $HMAC"
	fi
	ours=${HASHED[${SUM[$key]}|$UUID]}
	if [ "$key_id" != "${ours% *}" ]; then
		INST=rekey
	elif [ "$hmac" != "${ours#* }" ]; then
		INST=other
	else
		INST=current
	fi
}

# record PATH FILTER: a record is absent (none), old (byte for byte), or
# complete JSON, 0644, of which FILTER's output lands in $T/record (ok);
# else what is wrong; in REC.
record() {
	if ! has "$1"; then
		if was "$1"; then REC=lost; else REC=none; fi
	elif is_old "$1"; then
		REC=old
	elif ! is "$1" "f 644 0:0"; then
		REC=${FILE[$1]}
	elif ! jq -r "select(.version == 1) | $2" "$R$1" >"$T/record" 2>/dev/null || [ ! -s "$T/record" ]; then
		REC="not a complete record (${FILE[$1]##* } bytes)"
	else
		REC=ok
	fi
}

INSTANCE='(.instance | [.machine_id, .product_uuid_hmac, .product_uuid_key, .product_uuid] | map(. // "") | join("|"))'

# ssh_record TYPES...: ssh-keys.json vouches for keys on disk only, and
# when complete for every configured key, for this instance.
ssh_record() {
	local f=/var/lib/seedbed/ssh-keys.json s inst t fp mid hmac key_id uuid pending line
	record "$f" "$INSTANCE, (.pending // \"complete\"), (.keys[] | \"\(.type) \(.fingerprint)\")"
	s=$REC
	case $s in
	none) item ssh-keys.json none; return ;;
	old) ssh_record_old "$@"; return ;;
	ok) ;;
	*) bad "ssh-keys.json: $s"; return ;;
	esac
	local -a lines=()
	{
		IFS='|' read -r mid hmac key_id uuid
		read -r pending
		mapfile -t lines
	} <"$T/record"
	instance "$mid" "$hmac" "$key_id" "$uuid"
	inst=$INST
	case $inst in
	current | rekey) ;;
	*) bad "ssh-keys.json is new and says $inst"; return ;;
	esac
	# The fingerprints of the keys on disk, as ssh-keygen prints them
	# ("256 SHA256:… no comment (ED25519)"), by type.
	local -A on_disk=() listed=()
	local -a keys=()
	local j=0 missing=false
	mapfile -t keys <"$T/derived"
	for t in "${keys[@]}"; do
		[ -n "${FINGERPRINT[$t]:-}" ] || missing=true
	done
	# One call for all, in their order; the next look knows them.
	if $missing; then
		while read -r _ fp line; do
			line=${line##*(}
			FINGERPRINT[${keys[j]}]="${line%)} $fp"
			j=$((j + 1))
		done < <(ssh-keygen -l -f "$T/derived")
	fi
	for t in "${keys[@]}"; do
		read -r line fp <<<"${FINGERPRINT[$t]}"
		on_disk[${line,,}]=$fp
	done
	for line in "${lines[@]}"; do
		read -r t fp <<<"$line"
		[ "$fp" = "${on_disk[$t]:-}" ] ||
			{ bad "ssh-keys.json vouches for $t $fp, and the disk holds '${on_disk[$t]:-nothing}'"; return; }
		[ -z "${listed[$t]:-}" ] || { bad "ssh-keys.json lists $t twice"; return; }
		listed[$t]=$fp
	done
	if [ "$pending" != complete ]; then
		item ssh-keys.json part pending-record
		return
	elif [ "$inst" = rekey ]; then
		item ssh-keys.json part rekey-record
		return
	fi
	for t in "$@"; do
		[ -n "${listed[$t]:-}" ] || { bad "ssh-keys.json is complete and does not list $t"; return; }
	done
	item ssh-keys.json new
}

# ssh_record_old TYPES...: the ssh-keys.json of before, still in place.
# While it is, no key may have changed unless it speaks of another
# instance (or of an instance key no longer there): keys of this instance
# are replaced only through a pending record written first.
ssh_record_old() {
	local f=/var/lib/seedbed/ssh-keys.json t mid hmac key_id uuid changed=
	for t in "$@"; do
		for f in "/etc/ssh/ssh_host_${t}_key" "/etc/ssh/ssh_host_${t}_key.pub"; do
			if has "$f" && ! is_old "$f"; then changed=$f; fi
		done
	done
	f=/var/lib/seedbed/ssh-keys.json
	if [ -n "$changed" ]; then
		jq -r "$INSTANCE" "$R$f" >"$T/record" 2>/dev/null || { bad "ssh-keys.json (old) is unreadable"; return; }
		IFS='|' read -r mid hmac key_id uuid <"$T/record"
		instance "$mid" "$hmac" "$key_id" "$uuid"
		case $INST in
		other | rekey) ;;
		*) bad "ssh-keys.json is old and says $INST, and '$changed' changed"; return ;;
		esac
	fi
	item ssh-keys.json old
}

# ssh_items TYPES...: the host keys and ssh-keys.json.
ssh_items() {
	local t
	: >"$T/derived"
	for t in "$@"; do
		ssh_key "$t"
	done
	ssh_record "$@"
}

# firstboot_record: firstboot.json says this instance is done.
firstboot_record() {
	local s mid hmac key_id uuid
	record /var/lib/seedbed/firstboot.json "$INSTANCE"
	s=$REC
	case $s in
	none | old) item firstboot.json "$s"; return ;;
	ok) ;;
	*) bad "firstboot.json: $s"; return ;;
	esac
	IFS='|' read -r mid hmac key_id uuid <"$T/record"
	instance "$mid" "$hmac" "$key_id" "$uuid"
	case $INST in
	current) item firstboot.json new ;;
	rekey) item firstboot.json part rekey-record ;;
	*) bad "firstboot.json is new and says $INST" ;;
	esac
}

# instance_key: absent, the old one, or a new sound one.
instance_key() {
	local k=/var/lib/seedbed/instance-key
	if ! has "$k"; then
		if was "$k"; then bad "instance-key was lost"; else item instance-key none; fi
	elif ! is "$k" "f 400 0:0" 32; then
		bad "instance-key is ${FILE[$k]}"
	elif is_old "$k"; then
		item instance-key old
	else
		item instance-key new
	fi
}

# seed_record COMMAND [item]: the run's record, /run/seedbed/seed.json:
# SEED_STATE none, old or new (then SEED_FIRSTBOOT and SEED_RUNS say what
# it holds), an item of the set with "item".
seed_record() {
	local s cmd
	SEED_STATE=bad
	record /run/seedbed/seed.json '[.command, (.firstboot // ""), (.boot.runs | length)] | join("|")'
	s=$REC
	case $s in
	none | old) ;;
	ok)
		IFS='|' read -r cmd SEED_FIRSTBOOT SEED_RUNS <"$T/record"
		[ "$cmd" = "$1" ] || { bad "seed.json is new and says command '$cmd'"; return; }
		s=new ;;
	*) bad "seed.json: $s"; return ;;
	esac
	SEED_STATE=$s
	[ -z "${2:-}" ] || item seed.json "$s"
}

# volume DEV NAME: the key file and the device: none (no key file, the
# device all zeros), part (a key file, the device still all zeros or
# carrying our header without a keyslot), new (a LUKS2 volume of ours the
# key file opens; VOLUME_UUID is its UUID).  The header is read from a
# copy of the device's first 16 MiB: libcryptsetup repairs one header
# copy from the other as it loads them, and the next run must find the
# state as the kill left it.
volume() {
	local dev=$1 name=$2 key=/etc/seedbed/keys/$2.key type slots size=${SIZE[$1]}
	VOLUME_UUID=
	if has "$key"; then
		is "$key" "f 400 0:0" 64 || { bad "$name: the key file is ${FILE[$key]}"; return; }
	elif was "$key"; then
		bad "$name: the key file was lost"
		return
	fi
	if has /etc/seedbed/keys; then
		is /etc/seedbed/keys "d 700 0:0" || { bad "$name: the key directory is ${FILE[/etc/seedbed/keys]}"; return; }
	fi
	type=$(blkid -p -o value -s TYPE "$dev" || true)
	case $type in
	"")
		cmp -s -n "$size" "$dev" /dev/zero ||
			{ bad "$name: no signature on the device, and not zeros: $(cmp -n "$size" "$dev" /dev/zero 2>&1 | head -n 1)"; return; }
		# The key file comes first, by design: the format needs it.
		if has "$key"; then item "$name" part luks-keyfile-blank; else item "$name" none; fi
		return ;;
	crypto_LUKS) ;;
	*) bad "$name: '$type' on the device"; return ;;
	esac
	dd if="$dev" of="$T/hdr.img" bs=1M count=16 status=none
	truncate -s "$size" "$T/hdr.img"
	cryptsetup luksDump "$T/hdr.img" >"$T/dump" 2>&1 || { bad "$name: cryptsetup cannot read the header: $(cat "$T/dump")"; return; }
	if ! grep -q '^Version:.*2$' "$T/dump" || ! grep -q '^Subsystem:.*seedbed$' "$T/dump"; then
		bad "$name: a LUKS header that is not our LUKS2: $(head -n 12 "$T/dump")"
		return
	fi
	has "$key" || { bad "$name: our LUKS2 header, and no key file"; return; }
	slots=$(sed -n '/^Keyslots:/,/^Tokens:/p' "$T/dump" | grep -cE '^  [0-9]+: ' || true)
	if [ "$slots" = 0 ]; then
		item "$name" part luks-noslot # the format stopped before its keyslot: redone with this key file
		return
	fi
	cryptsetup open --test-passphrase --key-file "$R$key" "$T/hdr.img" 2>"$T/open.err" ||
		{ bad "$name: a volume with $slots keyslot(s) its key file does not open: $(cat "$T/open.err")"; return; }
	VOLUME_UUID=$(sed -n 's/^UUID:[[:space:]]*//p' "$T/dump")
	item "$name" new
}

# crypttab NAME: crypttab keeps its lines, and the volume's line is
# there (new, naming VOLUME_UUID) or not yet (none).
crypttab() {
	local f=/etc/crypttab name=$1 line lines=() old=()
	if is_old "$f" || { ! has "$f" && ! was "$f"; }; then
		item crypttab none
		return
	fi
	has "$f" || { bad "crypttab was lost"; return; }
	is "$f" "f 644 0:0" || { bad "crypttab is ${FILE[$f]}"; return; }
	mapfile -t lines <"$R$f"
	! was "$f" || mapfile -t old <"$T/tpl-$S$f"
	[ "${lines[*]:0:${#old[@]}}" = "${old[*]}" ] || { bad "crypttab's lines changed: ${lines[*]}"; return; }
	line=${lines[*]:${#old[@]}}
	if [ -z "$line" ]; then
		item crypttab none
	elif [ -n "$VOLUME_UUID" ] && [ "$line" = "$name UUID=$VOLUME_UUID /etc/seedbed/keys/$name.key luks" ]; then
		item crypttab new
	else
		bad "crypttab: '$line' (volume UUID '${VOLUME_UUID:-none}')"
	fi
}

# ---- scenarios: a template tree, the command, the exit status of a
# complete run, the state a complete run leaves; SCENARIO_prepare (its
# devices, where it has some) and SCENARIO_check (the items).
declare -A CMD STATUS FINAL
scenario() {
	CMD[$1]=$2 STATUS[$1]=$3 FINAL[$1]=$4
}

# What each command may make, beyond its template (the items its
# scenarios check, and the run's records), as patterns of paths.
declare -A MAKES=(
	[seed]='/run/seedbed/seed.json'
	[sshkeys]='/run/seedbed/seed.json /var/lib/seedbed/ssh-keys.json /var/lib/seedbed/instance-key
		/etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub'
	[luks]='/run/seedbed/seed.json /etc/seedbed/keys/*.key /etc/crypttab'
)
MAKES[firstboot]="${MAKES[sshkeys]} ${MAKES[luks]} /var/lib/seedbed/firstboot.json"

# unexpected: a regular file that is neither in the template, nor one
# the command makes, nor a temporary file (temp_files() looks at those).
unexpected() {
	local p pat ok
	for p in "${!FILE[@]}"; do
		[[ ${FILE[$p]} == "f "* ]] || continue
		[[ $p != *.tmp ]] || continue
		! was "$p" || continue
		ok=false
		for pat in ${MAKES[${CMD[$S]}]}; do
			# shellcheck disable=SC2053 # a pattern, on purpose
			if [[ $p == $pat ]]; then ok=true; break; fi
		done
		$ok || bad "a file nothing accounts for: '$p' (${FILE[$p]})"
	done
}

# base DIR UUID: a tree with an SMBIOS UUID and a machine-id.
base() {
	mkdir -p "$1/etc/seedbed" "$1/sys/class/dmi/id"
	echo "$2" >"$1/sys/class/dmi/id/product_uuid"
	echo "$MACHINE_ID" >"$1/etc/machine-id"
}

# sshkeys: the first boot (nothing to new), a clone (another UUID: old
# keys to new), an image's first boot with keys made by its builder
# (replaced, through a pending record), and RSA.
scenario sshkeys_fresh sshkeys 0 new
scenario sshkeys_clone sshkeys 0 new
scenario sshkeys_image sshkeys 0 new
scenario sshkeys_rsa sshkeys 0 new
sshkeys_fresh_check() {
	ssh_items ed25519 ecdsa
	seed_record sshkeys
}
sshkeys_clone_check() { sshkeys_fresh_check; }
sshkeys_image_check() { sshkeys_fresh_check; }
sshkeys_rsa_check() {
	ssh_items ed25519 ecdsa rsa
	seed_record sshkeys
}

setup_sshkeys() {
	local t
	base "$T/tpl-sshkeys_fresh" "$UUID_A"
	printf 'ssh:\n  key-types: [ed25519, ecdsa]\n' >"$T/tpl-sshkeys_fresh/etc/seedbed/seedbed.yaml"
	cp -a "$T/tpl-sshkeys_fresh" "$T/tpl-sshkeys_rsa"
	printf 'ssh:\n  key-types: [ed25519, ecdsa, rsa]\n  rsa-bits: 2048\n' >"$T/tpl-sshkeys_rsa/etc/seedbed/seedbed.yaml"

	cp -a "$T/tpl-sshkeys_fresh" "$T/tpl-sshkeys_clone"
	run 0 "$AGENT" --root "$T/tpl-sshkeys_clone" sshkeys
	echo "$UUID_B" >"$T/tpl-sshkeys_clone/sys/class/dmi/id/product_uuid"

	cp -a "$T/tpl-sshkeys_fresh" "$T/tpl-sshkeys_image"
	echo uninitialized >"$T/tpl-sshkeys_image/etc/machine-id"
	mkdir -p "$T/tpl-sshkeys_image/etc/ssh"
	for t in ed25519 ecdsa; do
		ssh-keygen -q -t "$t" -N '' -C image-builder -f "$T/tpl-sshkeys_image/etc/ssh/ssh_host_${t}_key"
	done
}

# luks: a blank device (nothing to new) and a volume made before (old,
# and stays), each configured after a device of random bytes, which is
# refused and left byte for byte.
scenario luks_fresh luks 7 new
scenario luks_done luks 7 old
luks_fresh_prepare() {
	zero "$BLANK"
}
luks_fresh_check() {
	volume "$BLANK" data
	crypttab data
	raw_untouched
	seed_record luks
}
luks_done_check() {
	unchanged "$KEPT" || bad "the volume made before was written"
	is_old /etc/seedbed/keys/kept.key || bad "kept: the key file changed: ${FILE[/etc/seedbed/keys/kept.key]:-missing}"
	is_old /etc/crypttab || bad "crypttab changed"
	item kept same
	raw_untouched
	seed_record luks
}

raw_untouched() {
	unchanged "$RAW" || bad "the device of random bytes was written"
	! has /etc/seedbed/keys/raw.key || bad "a key file was made for the device of random bytes"
}

luks_config() {
	printf 'luks:\n  volumes:\n    - device: %s\n      name: raw\n      open: false\n' "$RAW"
	printf '    - device: %s\n      name: %s\n      label: %s\n      open: false\n' "$1" "$2" "$ID-$2"
}

setup_luks() {
	loop raw 4M random
	RAW=$DEV
	keep "$RAW"
	[ -n "${BLANK:-}" ] || { loop blank 18M; BLANK=$DEV; }
	loop kept 18M
	KEPT=$DEV

	base "$T/tpl-luks_fresh" "$UUID_A"
	printf '# <target> <source> <key> <options>\nswap /dev/disk/by-partlabel/swap /dev/urandom swap\n' \
		>"$T/tpl-luks_fresh/etc/crypttab"
	cp -a "$T/tpl-luks_fresh" "$T/tpl-luks_done"
	luks_config "$BLANK" data >"$T/tpl-luks_fresh/etc/seedbed/seedbed.yaml"
	luks_config "$KEPT" kept >"$T/tpl-luks_done/etc/seedbed/seedbed.yaml"
	run 7 "$AGENT" --root "$T/tpl-luks_done" luks
	keep "$KEPT"
}

# firstboot: keys, a volume and the records, from nothing; and a clone of
# an instance done: new keys and records, a new instance key, the volume
# kept.
scenario firstboot_fresh firstboot 0 new
scenario firstboot_clone firstboot 0 new
firstboot_fresh_prepare() {
	zero "$BLANK"
}
firstboot_fresh_check() {
	ssh_items ed25519 ecdsa
	volume "$BLANK" data
	crypttab data
	instance_key
	firstboot_record
	seed_record firstboot
}
firstboot_clone_check() {
	ssh_items ed25519 ecdsa
	unchanged "$FBDONE" || bad "the volume of the instance cloned was written"
	is_old /etc/seedbed/keys/data.key || bad "the volume's key file changed: ${FILE[/etc/seedbed/keys/data.key]:-missing}"
	is_old /etc/crypttab || bad "crypttab changed"
	item data same
	instance_key
	firstboot_record
	seed_record firstboot
}

firstboot_config() {
	printf 'ssh:\n  key-types: [ed25519, ecdsa]\nluks:\n  volumes:\n'
	printf '    - device: %s\n      name: data\n      label: %s\n      open: false\n' "$1" "$ID-fb"
}

setup_firstboot() {
	[ -n "${BLANK:-}" ] || { loop blank 18M; BLANK=$DEV; }
	loop fbdone 18M
	FBDONE=$DEV
	base "$T/tpl-firstboot_fresh" "$UUID_A"
	cp -a "$T/tpl-firstboot_fresh" "$T/tpl-firstboot_clone"
	firstboot_config "$BLANK" >"$T/tpl-firstboot_fresh/etc/seedbed/seedbed.yaml"
	firstboot_config "$FBDONE" >"$T/tpl-firstboot_clone/etc/seedbed/seedbed.yaml"
	run 0 "$AGENT" --root "$T/tpl-firstboot_clone" firstboot
	echo "$UUID_B" >"$T/tpl-firstboot_clone/sys/class/dmi/id/product_uuid"
	keep "$FBDONE"
}

# records: seed.json written again over an earlier one of this boot (its
# timeline carried over); and the records of an instance done from
# before the UUID was hashed, healed by firstboot: the instance key made,
# firstboot.json and ssh-keys.json written again, seed.json marked.
scenario records_seed seed 0 new
scenario records_heal firstboot 0 new
records_seed_check() {
	seed_record seed item
	[ "$SEED_STATE" != new ] || [ "$SEED_RUNS" -gt "$TPL_RUNS" ] || bad "seed.json lost the boot's earlier runs"
}
records_heal_check() {
	local f s mid hmac key_id uuid rest
	instance_key
	for f in firstboot.json ssh-keys.json; do
		record "/var/lib/seedbed/$f" "$INSTANCE, (del(.instance) | tojson)"
		s=$REC
		case $s in
		old) item "$f" old ;;
		ok)
			{ IFS='|' read -r mid hmac key_id uuid; read -r rest; } <"$T/record"
			instance "$mid" "$hmac" "$key_id" "$uuid"
			[ "$INST" = current ] || { bad "$f is new and says $INST"; continue; }
			[ "$rest" = "${HEALED_REST[$f]}" ] || { bad "$f changed beyond its UUID: $rest"; continue; }
			item "$f" new ;;
		*) bad "$f: $s" ;;
		esac
	done
	# The mark of firstboot keeps the gate's command.
	seed_record seed item
	[ "$SEED_STATE" != new ] || [ "$SEED_FIRSTBOOT" = already-done ] ||
		bad "seed.json is new and says firstboot '$SEED_FIRSTBOOT'"
}

declare -A HEALED_REST
setup_records() {
	local f
	base "$T/tpl-records_seed" "$UUID_A"
	printf 'ssh:\n  key-types: [ed25519]\n' >"$T/tpl-records_seed/etc/seedbed/seedbed.yaml"
	cp -a "$T/tpl-records_seed" "$T/tpl-records_heal"
	run 0 "$AGENT" --root "$T/tpl-records_seed" seed
	TPL_RUNS=$(jq '.boot.runs | length' "$T/tpl-records_seed/run/seedbed/seed.json")

	run 0 "$AGENT" --root "$T/tpl-records_heal" firstboot
	run 0 "$AGENT" --root "$T/tpl-records_heal" seed
	for f in firstboot.json ssh-keys.json; do
		jq --arg u "$UUID_A" '.instance = { product_uuid: $u, machine_id: .instance.machine_id }' \
			"$T/tpl-records_heal/var/lib/seedbed/$f" >"$T/rec.json"
		cp "$T/rec.json" "$T/tpl-records_heal/var/lib/seedbed/$f"
		HEALED_REST[$f]=$(jq -r 'del(.instance) | tojson' "$T/rec.json")
	done
	rm "$T/tpl-records_heal/var/lib/seedbed/instance-key"
}

# ---- trials

# kill_after US CMD...: runs CMD and kills it US microseconds after its
# start (0: at once, before it has run); KILLED says whether the kill
# came before it ended.  The wait is bash's own read with a timeout on a
# FIFO nobody writes: sleep(1) would add its start, some milliseconds on
# a busy machine, to runs of a few tens of them.
mkfifo "$T/never"
kill_after() {
	local us=$1 pid st=0 secs
	shift
	"$@" >"$T/kill.out" 2>"$T/kill.err" &
	pid=$!
	printf -v secs '%d.%06d' $((us / 1000000)) $((us % 1000000))
	[ "$us" -le 0 ] || read -r -t "$secs" _ <>"$T/never" || true
	kill -KILL "$pid" 2>/dev/null || true
	# (Quietly: bash would report the kill.)
	wait "$pid" 2>/dev/null || st=$?
	KILLED=false
	[ "$st" -ne 137 ] || KILLED=true
}

# trial_root: the trial's tree R, a copy of scenario S's template, and
# its devices prepared.
trial_root() {
	rm -rf "$R"
	cp -a "$T/tpl-$S" "$R"
	! declare -F "${S}_prepare" >/dev/null || "${S}_prepare"
}

# check: ITEMS and BADS of the tree R.
check() {
	ITEMS=() BADS=()
	scan "$R"
	read -r MID <"$R/etc/machine-id"
	read -r UUID <"$R/sys/class/dmi/id/product_uuid"
	PARTS=()
	temp_files
	"${S}_check"
	unexpected
}

# measure: the median of three complete runs of scenario S, in
# microseconds, in MEASURED; each must leave the scenario's final state.
measure() {
	local i t0 st times=()
	for i in 1 2 3; do
		trial_root
		t0=$(now_us)
		st=0
		"$AGENT" --root "$R" "${CMD[$S]}" >"$T/out" 2>"$T/err" || st=$?
		times+=($(($(now_us) - t0)))
		[ "$st" -eq "${STATUS[$S]}" ] || { cat "$T/err"; fail "$S: a complete run exited $st"; }
		check
		[ ${#BADS[@]} -eq 0 ] || fail "$S: a complete run left: ${BADS[*]}"
		set_state
		[ "$STATE" = "${FINAL[$S]}" ] || fail "$S: a complete run left '$STATE': ${ITEMS[*]}"
	done
	MEASURED=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
}

# run_op OP SCENARIO...: CRASH_TRIALS trials, the scenarios in turn (a
# scenario named twice gets two turns).
run_op() {
	local op=$1 i d us state st started temps=0 killed=0 finished=0 rerun_bad=0 runs=""
	shift
	local -a scen=("$@")
	local -A dur count=([nothing]=0 [old]=0 [new]=0 [between]=0 [bad]=0) kinds=()
	local kind parts=""
	started=$(now_us)
	for S in $(printf '%s\n' "${scen[@]}" | sort -u); do
		scan_template "$S"
		measure
		dur[$S]=$MEASURED
		runs+=" $S $((MEASURED / 1000)) ms,"
	done
	for ((i = 0; i < TRIALS; i++)); do
		S=${scen[i % ${#scen[@]}]}
		d=${dur[$S]}
		# Uniform over [-d/10, 13d/10]: about one kill in fourteen
		# before the start, and some after the end.
		us=$(((RANDOM << 15 | RANDOM) % (d * 14 / 10 + 1) - d / 10))
		trial_root
		kill_after "$us" "$AGENT" --root "$R" "${CMD[$S]}"
		if $KILLED; then killed=$((killed + 1)); else finished=$((finished + 1)); fi
		check
		temps=$((temps + ${#TEMPS[@]}))
		if [ ${#BADS[@]} -gt 0 ]; then
			state=bad
			echo "FAIL: $op trial $i ($S, killed after $us us of ~$d us, $($KILLED && echo killed ||
				echo ended first)):" >&2
			printf '    %s\n' "${BADS[@]}" >&2
			# A look afterwards: SEEDBED_KEEP_TMP=1 keeps it.
			cp -a "$R" "$T/bad-$op-$i"
		else
			set_state
			state=$STATE
			if [ "$state" = between ]; then
				for kind in $(printf '%s\n' "${KINDS[@]}" | sort -u); do
					kinds[$kind]=$((${kinds[$kind]:-0} + 1))
				done
			fi
		fi
		count[$state]=$((count[$state] + 1))

		# The next run completes what the kill left.
		st=0
		"$AGENT" --root "$R" "${CMD[$S]}" >"$T/out" 2>"$T/err" || st=$?
		check
		set_state
		if [ "$st" -ne "${STATUS[$S]}" ] || [ ${#BADS[@]} -gt 0 ] || [ ${#TEMPS[@]} -gt 0 ] ||
			[ "$STATE" != "${FINAL[$S]}" ]; then
			rerun_bad=$((rerun_bad + 1))
			echo "FAIL: $op trial $i ($S, killed after $us us, state $state): the next run exited $st and left" \
				"'$STATE' (${ITEMS[*]}), temporary files: ${TEMPS[*]:-none}${BADS[*]:+; ${BADS[*]}}" >&2
			sed 's/^/    /' "$T/err" >&2
		fi
	done
	for kind in $(printf '%s\n' "${!kinds[@]}" | sort); do
		parts+="${parts:+, }part:$kind ${kinds[$kind]}"
	done
	echo "$op: $TRIALS trials: ${count[nothing]} nothing, ${count[old]} old, ${count[new]} new," \
		"${count[between]} between${parts:+ ($parts)}, ${count[bad]} bad;" \
		"$([ "$rerun_bad" -eq 0 ] && echo "every rerun completed" || echo "$rerun_bad reruns did not complete");" \
		"$killed killed mid-run, $finished ended first; $temps temporary files left by the kills, removed by" \
		"the reruns; $((($(now_us) - started) / 1000000)) s (complete runs:${runs%,})"
	[ "${count[bad]}" -eq 0 ] && [ "$rerun_bad" -eq 0 ] || FAILED+=("$op")
}

R=$T/r
FAILED=()
for op in $OPS; do
	case $op in
	sshkeys)
		setup_sshkeys
		run_op sshkeys sshkeys_fresh sshkeys_clone sshkeys_image sshkeys_fresh sshkeys_clone sshkeys_image \
			sshkeys_fresh sshkeys_clone sshkeys_image sshkeys_rsa ;;
	luks)
		setup_luks
		run_op luks luks_fresh luks_fresh luks_fresh luks_done ;;
	firstboot)
		setup_firstboot
		run_op firstboot firstboot_fresh firstboot_clone ;;
	records)
		setup_records
		run_op records records_seed records_heal ;;
	*) fail "unknown operation '$op' in CRASH_OPS" ;;
	esac
done
[ ${#FAILED[@]} -eq 0 ] || fail "crash trials failed for: ${FAILED[*]}"
