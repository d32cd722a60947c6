#!/bin/bash
# Sourced by the image tests (firstboot-vm.sh, cloud-vm.sh): boots a whole
# Debian image under QEMU (TCG) and waits for what a user waits for:
# sshd serving every host key, the console's fingerprint blocks, a login.
# Needs $T, fail() from tests/integration/lib.sh, and $IMG (vmlinuz,
# initrd.img, the ssh key in $IMG/id_ed25519).
#
# Every wait is for an event, with a deadline far beyond what the slowest
# machine seen needs (TCG three times slower than the README's figures:
# sshd 130 s after QEMU started, RSA-3072 65 s in the guest).  A guest that
# misses one prints the last 40 lines of its console.

# shellcheck source=tests/vm/qmp.sh
. "${top_srcdir:?}/tests/vm/qmp.sh"

CACHE=${SEEDBED_TEST_CACHE:-$top_builddir/test-cache}
IMG=$T/image

# Whatever a test leaves running is stopped when it exits.
cleanup() {
	[ -z "$QEMU_PID" ] || kill "$QEMU_PID" 2>/dev/null || true
	[ -z "${DEVICE_PID:-}" ] || kill "$DEVICE_PID" 2>/dev/null || true
	[ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

# build_image PROFILE CACHE_NAME [OPTIONS...]: tests/vm/build-image.sh's
# image of PROFILE into $IMG, its base cached in $CACHE/CACHE_NAME.
build_image() {
	local profile=$1 cache=$2 st=0
	shift 2
	say "building the $profile image from seedbed's packages (its base cached in $CACHE/$cache)"
	bash "${top_srcdir:?}/tests/vm/build-image.sh" --profile "$profile" "$@" "$CACHE/$cache" "$top_srcdir" "$IMG" || st=$?
	[ "$st" -ne 77 ] || skip "cannot reach the Debian mirror to build the image"
	[ "$st" -eq 0 ] || fail "building the image failed"
}

# Seconds from QEMU's start to sshd serving all its keys; and from a
# command to its outcome (a power-off, cloud-init's last stage).
WAIT_SSH=${SEEDBED_WAIT_SSH:-900}
WAIT_STEP=${SEEDBED_WAIT_STEP:-300}
QEMU_PID=
# The guest's account for ssh: root in the lab images, the distribution's
# default user in a cloud image.
GUEST_USER=root
# The key types sshd must serve before it counts as up.
KEY_TYPES=(ed25519 ecdsa rsa)

t0=$SECONDS
say() {
	printf '==> [%3ds] %s\n' $((SECONDS - t0)) "$*"
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# No trusted CPU or bootloader seed (TCG's qemu64 has no RDRAND anyway);
# systemd's status lines name the unit alone, so that 80 columns never cut
# "ssh.service" short.
GUEST_CMDLINE="console=ttyS0 panic=-1 random.trust_cpu=off random.trust_bootloader=off"
GUEST_CMDLINE+=" systemd.status_unit_format=name"

# How the kernel mounts the root: Debian's bootloader says "ro" (systemd
# remounts it as fstab says); the lab images boot "rw".
ROOT_MODE=rw

# boot NAME DISK UUID APPEND [QEMU ARGS...]: starts the guest in the
# background: its serial console in $T/NAME.serial, its sshd on
# 127.0.0.1:$PORT, QMP on $T/NAME.qmp.  The kernel and initramfs are
# $IMG's (or $INITRD); DISK is raw (or $DISK_FORMAT); more disks come in
# the QEMU arguments (drive).
boot() {
	local name=$1 disk=$2 uuid=$3 append=$4
	shift 4
	PORT=$(free_port)
	say "$name: booting (SMBIOS UUID $uuid, ssh on 127.0.0.1:$PORT)"
	qemu-system-x86_64 -accel tcg -cpu qemu64 -m 1024 -smp 1 -display none -monitor none -no-reboot \
		-name "guest=$name" -uuid "$uuid" \
		-serial "file:$T/$name.serial" -qmp "unix:$T/$name.qmp,server=on,wait=off" \
		-kernel "$IMG/vmlinuz" -initrd "${INITRD:-$IMG/initrd.img}" \
		-append "root=LABEL=seedroot $ROOT_MODE $GUEST_CMDLINE $append" \
		-drive "file=$disk,format=${DISK_FORMAT:-raw},if=virtio" \
		-netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-net-pci,netdev=net0 \
		"$@" >"$T/$name.qemu.log" 2>&1 &
	QEMU_PID=$!
	BOOTED=$SECONDS
}

# serial NAME: the console so far, without carriage returns and colours.
serial() {
	[ ! -e "$T/$1.serial" ] || tr -d '\r' <"$T/$1.serial" | sed 's/\x1b\[[0-9;]*m//g'
}

# on_console NAME TEXT: the console shows TEXT.  (Not "serial | grep -q":
# grep's early exit fails the pipeline under pipefail.)
on_console() {
	serial "$1" >"$T/$1.console"
	grep -qF -- "$2" "$T/$1.console"
}

guest_failed() { # guest_failed NAME WHAT
	echo "--- $1: the last of the console"
	serial "$1" | tail -40
	fail "$1: $2"
}

# alive NAME: QEMU still runs; else the guest failed.
alive() {
	kill -0 "$QEMU_PID" 2>/dev/null || guest_failed "$1" "QEMU exited: $(tail -3 "$T/$1.qemu.log")"
}

# wait_ssh NAME: until sshd serves every key type of KEY_TYPES through the
# forwarded port; the keys land in $T/NAME.keyscan.  ssh-keyscan makes
# one connection per type, and on a slow guest one of them may time out:
# an answer with fewer types is a retry, never the answer.
wait_ssh() {
	local name=$1 types got
	types=$(IFS=,; echo "${KEY_TYPES[*]}")
	while [ $((SECONDS - BOOTED)) -lt "$WAIT_SSH" ]; do
		alive "$name"
		! on_console "$name" 'Failed to start ssh.service' || guest_failed "$name" "ssh.service failed"
		ssh-keyscan -T 20 -p "$PORT" -t "$types" 127.0.0.1 >"$T/$name.keyscan" 2>/dev/null || true
		got=$(awk 'NF >= 3 { print $2 }' "$T/$name.keyscan" | sort -u | wc -l)
		if [ "$got" -eq "${#KEY_TYPES[@]}" ]; then
			say "$name: sshd serves all ${#KEY_TYPES[@]} host keys, $((SECONDS - BOOTED)) s after QEMU started"
			return 0
		fi
		[ "$got" -eq 0 ] || say "$name: sshd served $got of ${#KEY_TYPES[@]} key types; asking again"
		sleep 2
	done
	guest_failed "$name" "sshd did not serve its ${#KEY_TYPES[@]} host keys within $WAIT_SSH s"
}

# save_vm NAME FILE: the running guest saved to FILE as a snapshot is
# (QMP migrate to "exec:cat >FILE"), and its QEMU quit: FILE restores it
# in a new QEMU with the same devices, -incoming "exec:cat FILE".
save_vm() {
	local name=$1 file=$2 start=$SECONDS status
	say "$name: saving the running VM (QMP migrate to a file)"
	qmp "$name" migrate "$(python3 -c 'import json, sys; print(json.dumps({"uri": "exec:cat >" + sys.argv[1]}))' "$file")" \
		>/dev/null || fail "$name: QMP migrate"
	while :; do
		status=$(qmp_field "$name" query-migrate status)
		[ "$status" != completed ] || break
		[ "$status" != failed ] || fail "$name: saving failed"
		[ $((SECONDS - start)) -lt "$WAIT_STEP" ] || fail "$name: not saved within $WAIT_STEP s"
		sleep 1
	done
	qmp "$name" quit >/dev/null 2>&1 || true
	wait "$QEMU_PID" 2>/dev/null || true
	QEMU_PID=
	say "$name: saved ($(du -m "$file" | cut -f1) MiB) in $((SECONDS - start)) s"
}

# wait_new_keys NAME OLD: until sshd serves a whole set of KEY_TYPES none
# of which has a fingerprint listed in the file OLD (a set that mixes
# them is a retry); the keys land in $T/NAME.keyscan, the seconds since
# QEMU started in FORK_SECONDS.
wait_new_keys() {
	local name=$1 old=$2 types got
	types=$(IFS=,; echo "${KEY_TYPES[*]}")
	while :; do
		alive "$name"
		[ $((SECONDS - BOOTED)) -lt "$WAIT_SSH" ] ||
			guest_failed "$name" "sshd did not serve new host keys within $WAIT_SSH s of QEMU's start"
		ssh-keyscan -T 20 -p "$PORT" -t "$types" 127.0.0.1 >"$T/$name.keyscan" 2>/dev/null || true
		got=$(awk 'NF >= 3 { print $2 }' "$T/$name.keyscan" | sort -u | wc -l)
		if [ "$got" -eq "${#KEY_TYPES[@]}" ] &&
			! ssh-keygen -l -f "$T/$name.keyscan" | awk '{ print $2 }' | grep -qxFf "$old"; then
			break
		fi
		sleep 1
	done
	# shellcheck disable=SC2034 # for the test that sources this
	FORK_SECONDS=$((SECONDS - BOOTED))
	say "$name: sshd serves ${#KEY_TYPES[@]} new host keys, $FORK_SECONDS s after QEMU started"
}

# wait_console NAME TEXT WHAT: until the console shows TEXT (WHAT says
# what that is, for the failure).
wait_console() {
	local name=$1 text=$2 what=$3 start=$SECONDS
	until on_console "$name" "$text"; do
		alive "$name"
		[ $((SECONDS - start)) -lt "$WAIT_STEP" ] || guest_failed "$name" "$what did not happen within $WAIT_STEP s"
		sleep 1
	done
}

# console_block NAME WHAT: the lines of the console's last BEGIN/END SSH
# HOST KEY WHAT block, as a cloud console's parser reads them: the
# markers anywhere in a line, and whatever the line carries before the
# key text dropped.  journald puts "[  36.07] seedbed-agent[341]: " before
# the agent's lines, cloud-init's logger "<14>Nov 30 12:00:00 ec2: "
# before its fingerprints.
console_block() {
	serial "$1" | awk -v b="-----BEGIN SSH HOST KEY $2-----" -v e="-----END SSH HOST KEY $2-----" '
		index($0, b) { n = 0; inside = 1; next }
		index($0, e) { inside = 0; next }
		inside {
			line = $0
			# A key line: from its algorithm on; a fingerprint line:
			# from the bits before "SHA256:" on.
			if (match(line, /(ssh-|ecdsa-|sk-)[a-z0-9@.-]+ [A-Za-z0-9+\/=]+/))
				line = substr(line, RSTART)
			else if (match(line, /[0-9]+ SHA256:/))
				line = substr(line, RSTART)
			else
				next
			lines[n++] = line
		}
		END { for (i = 0; i < n; i++) print lines[i] }'
}

# fingerprints: "BITS SHA256:... (TYPE)" per key, sorted, from ssh-keygen
# -l output on stdin (the comment differs between the console and
# ssh-keyscan).
fingerprints() {
	awk 'NF >= 3 { print $1, $2, $NF }' | sort
}

# verify_keys NAME [ANNOUNCED]: the fingerprints of the console's last
# block on boot ANNOUNCED (default NAME: keys are announced once per
# instance, as cloud-init does) are the keys sshd serves now, and ssh logs
# in trusting only that console's key block.
verify_keys() {
	local name=$1 from=${2:-$1}
	console_block "$from" FINGERPRINTS | fingerprints >"$T/$name.console-fp"
	[ "$(wc -l <"$T/$name.console-fp")" -eq "${#KEY_TYPES[@]}" ] ||
		guest_failed "$from" "no fingerprint block of ${#KEY_TYPES[@]} keys on the console"
	ssh-keygen -l -f "$T/$name.keyscan" | fingerprints >"$T/$name.keyscan-fp"
	diff -u "$T/$name.console-fp" "$T/$name.keyscan-fp" ||
		fail "$name: sshd's keys are not the ones the console announced"
	console_block "$from" KEYS | awk -v h="[127.0.0.1]:$PORT" 'NF >= 2 { print h, $1, $2 }' >"$T/$name.known_hosts"
	[ -s "$T/$name.known_hosts" ] || guest_failed "$from" "no key block on the console"
	wait_login "$name"
}

# wait_login NAME: ssh logs in, the host key checked against the
# console's key block.  sshd answering does not mean the account is
# ready (cloud-init makes the default user in the same boot): retried
# until the step's deadline.
wait_login() {
	local name=$1 start=$SECONDS
	until guest "$name" true 2>"$T/$name.ssh-err"; do
		alive "$name"
		[ $((SECONDS - start)) -lt "$WAIT_STEP" ] ||
			guest_failed "$name" "ssh does not log in as $GUEST_USER with the console's host keys: $(cat "$T/$name.ssh-err")"
		sleep 3
	done
}

# guest NAME COMMAND...: runs COMMAND in the guest over ssh as
# GUEST_USER, the host key checked against the console's key block.
guest() {
	local name=$1
	shift
	ssh -q -p "$PORT" -i "$IMG/id_ed25519" -o BatchMode=yes -o ConnectTimeout=30 \
		-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$T/$name.known_hosts" "$GUEST_USER@127.0.0.1" "$@"
}

# no_ordering_cycle NAME: systemd found no ordering cycle in this boot.
# It breaks one by dropping a job, which a unit's Before=/After= (ours
# before cloud-init, the machine-id commit, sshd) could cause unnoticed.
no_ordering_cycle() {
	local name=$1 sudo=
	[ "$GUEST_USER" = root ] || sudo="sudo -n"
	# shellcheck disable=SC2086 # "sudo -n" or nothing
	guest "$name" $sudo journalctl -b -q --no-pager >"$T/$name.journal" || fail "$name: no journal"
	if grep -i -e 'ordering cycle' -e 'Job .* deleted to break' "$T/$name.journal"; then
		fail "$name: systemd broke an ordering cycle in this boot"
	fi
}

# poweroff NAME [ssh|qmp]: a clean shutdown; QEMU exits (-no-reboot).
poweroff() {
	local name=$1 start=$SECONDS
	if [ "${2:-ssh}" = ssh ] && [ "$GUEST_USER" = root ]; then
		guest "$name" systemctl poweroff || true
	elif [ "${2:-ssh}" = ssh ]; then
		guest "$name" sudo -n systemctl poweroff || true
	else
		qmp "$name" system_powerdown >/dev/null
	fi
	while kill -0 "$QEMU_PID" 2>/dev/null; do
		if [ $((SECONDS - start)) -ge "$WAIT_STEP" ]; then
			qmp "$name" quit >/dev/null || true
			guest_failed "$name" "did not power off within $WAIT_STEP s"
		fi
		sleep 0.5
	done
	wait "$QEMU_PID" || fail "$name: QEMU exited $?: $(cat "$T/$name.qemu.log")"
	QEMU_PID=
}

rec() { # rec NAME FILTER
	json "$T/$1.record.json" "$2"
}

# report NAME: what a user looks at after the first boot NAME: seedbed's
# part of the console, the guest's 'seedbed-agent status' ($T/NAME.status),
# the boot's timeline from the record ($T/NAME.record.json) and sshd's
# start ($T/NAME.sshd-us, monotonic microseconds), and the host keys as
# ssh-keyscan verified them.
report() {
	local name=$1 crng_kernel sshd_ms
	# In the order they happened: the kernel's own "crng init done"
	# (from the console) may come before the agent runs, when the
	# kernel credits the virtio-rng device itself.
	crng_kernel=$(serial "$name" | awk '/random: crng init done/ && !seen { seen = 1; sub(/^\[ */, ""); sub(/\].*/, ""); printf "%d", $1 * 1000 }')
	sshd_ms=$(($(cat "$T/$name.sshd-us") / 1000))
	where() { [ "$1" = true ] && echo " (initramfs)" || echo ""; }
	{
		printf '%s\tseedbed-agent started%s\n' "$(rec "$name" .boot.agent_start_ms)" "$(where "$(rec "$name" .boot.agent_start_in_initrd)")"
		[ -z "$crng_kernel" ] || printf '%s\tkernel: "random: crng init done"\n' "$crng_kernel"
		printf '%s\tCRNG ready, as seedbed saw it%s\n' "$(rec "$name" .boot.crng_ready_ms)" "$(where "$(rec "$name" .boot.crng_ready_in_initrd)")"
		printf '%s\tSSH host keys written\n' "$(rec "$name" .boot.ssh_keys_ms)"
		[ "$(rec "$name" '.boot.luks_ms // "null"')" = null ] ||
			printf '%s\tLUKS volume formatted\n' "$(rec "$name" .boot.luks_ms)"
		printf '%s\tsshd listening (ssh.service ready)\n' "$sshd_ms"
	} | sort -n >"$T/$name.timeline"
	echo
	echo "The guest's console, seedbed's part of its first boot (the key blocks left out):"
	# Up to the login prompt; awk reads on to the end all the same (an
	# early exit would kill serial's pipe with SIGPIPE, and cloud-init
	# writes on after the prompt).
	serial "$name" | awk '/ login: / { done = 1 }
		!done && /seedbed-(agent|initrd|seed|firstboot|console)|crng init done/ &&
		!/seedbed-agent\[[0-9]+\]: (ssh-|ecdsa-|[0-9]+ SHA256|#|-----)/ { print "  " $0 }'
	echo
	echo "The guest's 'seedbed-agent status' after its first boot:"
	sed 's/^/  /' "$T/$name.status"
	echo
	echo "First boot of the image, in the guest's time since the kernel started:"
	awk -F '\t' '{ printf "  %8.3f s  %s\n", $1 / 1000, $2 }' "$T/$name.timeline"
	echo
	echo "Host keys, as the console announced them and as ssh-keyscan verified them:"
	sed 's/^/  /' "$T/$name.keyscan-fp"
}
