#!/bin/bash
# The first boot of a real Debian 12 image with seedbed-agent and
# seedbed-agent-dracut installed from their .debs, as a hypervisor host
# runs it: seedbed-device on the host serves the guest's virtio-rng, the
# agent seeds the kernel in the image's dracut initramfs, and the SSH host
# keys and a LUKS2 volume are made in the real root before sshd starts.
#
#   1. first boot (EGD): the initramfs seeded; the console's fingerprint
#      block equals what ssh-keyscan gets from the running sshd, and ssh
#      logs in checking the host key against the console's key block; the
#      second disk is LUKS2 and open; the device counted bytes for the VM.
#   2. the same image again, with a VM generation ID (QEMU's vmgenid, G1):
#      the same keys, the volume untouched and open (crypttab), the record
#      says "already-done".  Then the running VM is saved (QMP migrate to
#      a file) and restored three times, each in a new QEMU with the disks
#      as they were: with the generation IDs G2 and G3 it serves new host
#      keys (ssh-keyscan), different from each other and from the
#      original, the ones its console's new blocks show, and its records
#      say why; with G1 it keeps the original keys.  The data on the LUKS
#      volume is intact in each.
#   3. a clone with another SMBIOS UUID, over vhost-user, booted with the
#      initramfs initramfs-tools makes: seeded in its init-top, new keys,
#      the volume kept (crypttab opened it before firstboot ran).
#   4. a fresh copy with no virtio-rng device and entropy.on-timeout fail:
#      no key, the failure on the console, ssh.service failed.
#
# Then the first boot's timeline and the verified fingerprints.  With
# SEEDBED_FIRSTBOOT_DEMO=1 only the first boot runs.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, chroot, mkfs.ext4 -d)"
for cmd in qemu-system-x86_64 debootstrap ssh ssh-keyscan ssh-keygen cryptsetup debugfs python3 jq; do
	command -v "$cmd" >/dev/null || skip "$cmd is not installed"
done
# shellcheck source=tests/vm/host-device.sh
. "$top_srcdir/tests/vm/host-device.sh"

DEMO=${SEEDBED_FIRSTBOOT_DEMO:-}
# shellcheck source=tests/vm/guest.sh
. "$top_srcdir/tests/vm/guest.sh"
build_image lab image
# A copy as it was shipped, for the boot without an rng device.
cp --sparse=always "$IMG/disk.img" "$T/pristine.img"

# One seedbed-device for every guest on this host, as in production: EGD
# and vhost-user side by side.
start_device host --egd "unix:$T/egd.sock" --vhost-user "$T/vhost.sock"
# shellcheck disable=SC2054 # commas inside QEMU's option values
EGD_ARGS=(-chardev "socket,id=egd,path=$T/egd.sock" -object rng-egd,id=rng0,chardev=egd
	-device virtio-rng-pci,rng=rng0)
# shellcheck disable=SC2054
VHOST_ARGS=(-object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem
	-chardev "socket,id=vu,path=$T/vhost.sock" -device vhost-user-rng-pci,chardev=vu)

# collect NAME: what the guest says of itself, into $T/NAME.*.
collect() {
	local name=$1
	guest "$name" seedbed-agent status --json >"$T/$name.record.json" || fail "$name: no record in the guest"
	guest "$name" seedbed-agent status >"$T/$name.status" || true
	guest "$name" systemctl show -p ActiveEnterTimestampMonotonic --value ssh.service >"$T/$name.sshd-us"
	guest "$name" systemctl is-active ssh.service seedbed-firstboot.service >"$T/$name.units" ||
		{ cat "$T/$name.units"; fail "$name: ssh.service or seedbed-firstboot.service is not active"; }
	guest "$name" cryptsetup status data >"$T/$name.luks" || fail "$name: the LUKS volume 'data' is not open"
	no_ordering_cycle "$name"
}

MARKER="seedbed: data on the LUKS volume, written at the first boot"

# --- 1. First boot, entropy over EGD. -----------------------------------
UUID1=5eedbed0-0000-4000-8000-000000000001
boot first "$IMG/disk.img" "$UUID1" "" -drive "file=$IMG/data.img,format=raw,if=virtio" "${EGD_ARGS[@]}"
wait_ssh first
verify_keys first
collect first
say "first: the console's fingerprints are sshd's; ssh trusts the console's keys"

# The initramfs seeded: its run is the first of this boot's record, and
# the CRNG was ready there.
on_console first 'seedbed-initrd-seed.service' || guest_failed first "the initramfs did not run seedbed"
[ "$(rec first '.boot.runs[0].command + " " + (.boot.runs[0].in_initrd | tostring)')" = "seed true" ] ||
	fail "first: the boot's first run: $(rec first '.boot.runs[0]')"
[ "$(rec first .boot.crng_ready_in_initrd)" = true ] || fail "first: the CRNG was not ready in the initramfs"
[ "$(rec first .device.transport)" = pci ] || fail "first: device $(rec first .device)"
[ "$(rec first .firstboot)" = "done" ] || fail "first: firstboot $(rec first .firstboot)"
[ "$(rec first '[.ssh_keys[] | select(.action == "created" and .crng_ready)] | length')" = 3 ] ||
	fail "first: keys $(rec first .ssh_keys)"
[ "$(rec first '.luks_volumes[0].action + " " + .luks_volumes[0].open + " " + .luks_volumes[0].crypttab')" = \
	"formatted done done" ] || fail "first: volume $(rec first .luks_volumes)"
grep -q 'type: *LUKS2' "$T/first.luks" || fail "first: $(cat "$T/first.luks")"
on_console first 'Started ssh.service' || guest_failed first "no 'Started ssh.service' on the console"
# The keys were written before sshd started.
sshd_ms=$(($(cat "$T/first.sshd-us") / 1000))
keys_ms=$(rec first .boot.ssh_keys_ms)
[ "$keys_ms" -lt "$sshd_ms" ] || fail "first: keys at $keys_ms ms, sshd at $sshd_ms ms"
served=$(metric host 'seedbed_vm_bytes_total{vm="first",transport="egd"}')
[ "$served" -gt 0 ] || fail "first: the device's metrics count no bytes for the VM"
say "first: seedbed-device served $served bytes to it over EGD"
# Data on the volume, for the restored VMs to find.
guest first "printf '%s' '$MARKER' | dd of=/dev/mapper/data conv=fsync status=none" || fail "first: writing the volume"
poweroff first
cryptsetup luksDump "$IMG/data.img" >"$T/first.luksdump" || fail "first: data.img has no LUKS header"
grep -q '^Version:[[:space:]]*2$' "$T/first.luksdump" || fail "first: not LUKS2: $(head -5 "$T/first.luksdump")"
grep -q '^Label:[[:space:]]*seedbed-data$' "$T/first.luksdump" || fail "first: label: $(head -5 "$T/first.luksdump")"
[ "$(cryptsetup luksUUID "$IMG/data.img")" = "$(rec first '.luks_volumes[0].uuid')" ] ||
	fail "first: the volume's UUID is not the recorded one"
say "first: data.img holds the LUKS2 volume $(rec first '.luks_volumes[0].uuid')"

if [ -z "$DEMO" ]; then
	# The clone (3) starts from the disks as the first boot left them.
	cp --sparse=always "$IMG/disk.img" "$T/clone.img"
	cp --sparse=always "$IMG/data.img" "$T/clone-data.img"

	# --- 2. The same instance again, with a generation ID. ----------
	G1=8a3b0e52-5eed-4bed-9000-0000000000c1
	G2=8a3b0e52-5eed-4bed-9000-0000000000c2
	G3=8a3b0e52-5eed-4bed-9000-0000000000c3
	data_sum=$(sha256sum <"$IMG/data.img")
	boot again "$IMG/disk.img" "$UUID1" "" -drive "file=$IMG/data.img,format=raw,if=virtio" "${EGD_ARGS[@]}" \
		-device "vmgenid,guid=$G1"
	wait_ssh again
	verify_keys again first
	collect again
	if on_console again 'BEGIN SSH HOST KEY'; then
		fail "again: the keys were announced again: were they made again?"
	fi
	[ "$(rec again .firstboot)" = already-done ] || fail "again: firstboot $(rec again .firstboot)"
	on_console again 'First boot was already done for this instance' ||
		guest_failed again "the console does not say the first boot was done"
	[ "$(rec again '.ssh_keys // [] | length')" = 0 ] || fail "again: keys were touched: $(rec again .ssh_keys)"
	volume_sum=$(guest again "head -c 16M /dev/mapper/data | sha256sum") || fail "again: reading the volume"
	[ "$(guest again "head -c ${#MARKER} /dev/mapper/data")" = "$MARKER" ] || fail "again: the first boot's data is gone"
	say "again: same keys, volume untouched and opened by crypttab, record: already-done"

	# --- The running VM saved, and restored three times. ------------
	save_vm again "$T/again.vmstate"
	[ "$(sha256sum <"$IMG/data.img")" = "$data_sum" ] || fail "again: the volume changed"
	awk '{ print $2 }' "$T/again.keyscan-fp" >"$T/origin.fp"

	# restore NAME GUID: the saved VM in a new QEMU, on copies of the
	# disks as they were when it was saved (qcow2 over them), with the
	# generation ID GUID; the same devices in the same order.
	restore() {
		local name=$1 guid=$2
		qemu-img create -q -f qcow2 -F raw -b "$IMG/disk.img" "$T/$name.qcow2" || fail "$name: qemu-img"
		qemu-img create -q -f qcow2 -F raw -b "$IMG/data.img" "$T/$name-data.qcow2" || fail "$name: qemu-img"
		DISK_FORMAT=qcow2 boot "$name" "$T/$name.qcow2" "$UUID1" "" \
			-drive "file=$T/$name-data.qcow2,format=qcow2,if=virtio" "${EGD_ARGS[@]}" -device "vmgenid,guid=$guid" \
			-incoming "exec:cat $T/again.vmstate"
	}

	# forked NAME: the checks of a restore with a new generation ID.
	FORK_TIMES=()
	forked() {
		local name=$1 why="made anew: the VM generation ID changed, the running VM was restored from a snapshot or cloned"
		wait_new_keys "$name" "$T/origin.fp"
		FORK_TIMES+=("$name $FORK_SECONDS s")
		# The blocks come after the reload, through the journal.
		wait_console "$name" "-----END SSH HOST KEY KEYS-----" "a host key block"
		verify_keys "$name"
		ssh-keygen -l -f "$T/$name.keyscan" | awk '{ print $2 }' >"$T/$name.fp"
		guest "$name" seedbed-agent status --json >"$T/$name.record.json" || fail "$name: no record"
		[ "$(rec "$name" .command)" = vm-fork ] || fail "$name: the record's command: $(rec "$name" .command)"
		[ "$(rec "$name" '[.ssh_keys[] | select(.action == "replaced" and .reason == "'"$why"'" and .crng_ready)] | length')" = 3 ] ||
			fail "$name: keys $(rec "$name" .ssh_keys)"
		guest "$name" cat /var/lib/seedbed/vm-forks.json >"$T/$name.forks.json" || fail "$name: no vm-forks.json"
		[ "$(json "$T/$name.forks.json" '.events | length')" = 1 ] || fail "$name: $(cat "$T/$name.forks.json")"
		[ "$(json "$T/$name.forks.json" '.events[0] | .result + " " + (.reseeded | tostring) + " " + .sshd')" = \
			"regenerated true reloaded ssh.service" ] || fail "$name: $(cat "$T/$name.forks.json")"
		json "$T/$name.forks.json" '.events[0].keys[].previous' | sort | diff -u <(sort "$T/origin.fp") - ||
			fail "$name: vm-forks.json's previous keys are not the original's"
		guest "$name" cat /var/lib/seedbed/ssh-keys.json >"$T/$name.ssh-keys.json" || fail "$name: no ssh-keys.json"
		[ "$(json "$T/$name.ssh-keys.json" '[.keys[] | select(.reason == "'"$why"'")] | length')" = 3 ] ||
			fail "$name: ssh-keys.json: $(cat "$T/$name.ssh-keys.json")"
		# Debian 12's 6.1 sends no uevent: the kernel log's line, seen
		# by the watcher, started the run.
		guest "$name" journalctl -b -q --no-pager -u seedbed-vm-fork-watch.service >"$T/$name.watch" ||
			fail "$name: no journal"
		expect_in "$T/$name.watch" "for a VM generation change"
		volume_intact "$name"
		qmp "$name" quit >/dev/null 2>&1 || true
		wait "$QEMU_PID" 2>/dev/null || true
		QEMU_PID=
	}

	volume_intact() { # volume_intact NAME
		[ "$(guest "$1" "head -c 16M /dev/mapper/data | sha256sum")" = "$volume_sum" ] ||
			fail "$1: the LUKS volume's data is not the saved VM's"
	}

	restore g2 "$G2"
	forked g2
	restore g3 "$G3"
	forked g3
	if grep -qxFf "$T/g2.fp" "$T/g3.fp"; then
		fail "g3: a key of g2's: two restores share a host key"
	fi
	say "g2, g3: each serves host keys of its own, its console shows them, its records say why; the volume is intact"

	# The generation ID it was saved with: nothing changed, nothing is
	# done.  udev has handled every event once it settles.
	restore g1 "$G1"
	wait_ssh g1
	verify_keys g1 first
	ssh-keygen -l -f "$T/g1.keyscan" | awk '{ print $2 }' | sort | diff -u <(sort "$T/origin.fp") - ||
		fail "g1: restored with its own generation ID, it serves other keys"
	# The kernel acts on the ACPI notification as the VM resumes, long
	# before sshd answers: it logged no change, and nothing ran.
	guest g1 journalctl -k -b -q --no-pager >"$T/g1.kernel" || fail "g1: no kernel log"
	if grep -F "virtual machine fork" "$T/g1.kernel"; then
		fail "g1: the kernel saw a generation change"
	fi
	guest g1 udevadm settle || fail "g1: udevadm settle"
	[ "$(guest g1 systemctl show -p InactiveExitTimestampMonotonic --value seedbed-vm-fork.service)" = 0 ] ||
		fail "g1: seedbed-vm-fork.service ran"
	if guest g1 test -e /var/lib/seedbed/vm-forks.json; then
		fail "g1: a generation change was recorded"
	fi
	volume_intact g1
	qmp g1 quit >/dev/null 2>&1 || true
	wait "$QEMU_PID" 2>/dev/null || true
	QEMU_PID=
	[ "$(sha256sum <"$IMG/data.img")" = "$data_sum" ] || fail "the restores changed data.img"
	say "g1: restored with its own generation ID, it keeps the original keys; the volume is intact"

	# --- 3. A clone: another SMBIOS UUID, over vhost-user, and the
	# initramfs Debian's own generator (initramfs-tools) makes. ------
	INITRD=$IMG/initrd-itools.img boot clone "$T/clone.img" 5eedbed0-0000-4000-8000-000000000002 "" \
		-drive "file=$T/clone-data.img,format=raw,if=virtio" "${VHOST_ARGS[@]}"
	wait_ssh clone
	verify_keys clone
	collect clone
	[ "$(rec clone '.boot.runs[0].command + " " + (.boot.runs[0].in_initrd | tostring)')" = "seed true" ] ||
		fail "clone: initramfs-tools' init-top did not seed: $(rec clone '.boot.runs')"
	if grep -qFf <(awk '{ print $2 }' "$T/first.keyscan-fp") "$T/clone.keyscan-fp"; then
		fail "clone: a key of the original survived"
	fi
	[ "$(rec clone .firstboot)" = "done" ] || fail "clone: firstboot $(rec clone .firstboot)"
	[ "$(rec clone '[.ssh_keys[] | select(.action == "replaced")] | length')" = 3 ] ||
		fail "clone: keys $(rec clone .ssh_keys)"
	[ "$(rec clone '.luks_volumes[0].action')" = already-done ] || fail "clone: volume $(rec clone .luks_volumes)"
	served=$(metric host 'seedbed_vm_bytes_total{vm="clone",transport="vhost-user"}')
	[ "$served" -gt 0 ] || fail "clone: the device's metrics count no bytes for the VM over vhost-user"
	[ "$(metric host 'seedbed_protocol_errors_total{transport="vhost-user"}')" = 0 ] ||
		fail "clone: vhost-user protocol errors"
	poweroff clone
	say "clone: new keys, volume kept; seedbed-device served $served bytes over vhost-user"

	# --- 4. No rng device, on-timeout: fail. -------------------------
	# Only the host is trusted (sources: virtio; the default's "kernel"
	# source would wait for the kernel's own jitter seeding).  This
	# kernel seeds itself from CPU jitter as soon as any process blocks
	# in getrandom(), and on a first boot systemd-random-seed.service
	# (no seed file yet) does: masked here, the kernel stays unready
	# through the gates, as a kernel without that fallback would.
	truncate -s 64M "$T/norng-data.img"
	boot norng "$T/pristine.img" 5eedbed0-0000-4000-8000-000000000003 \
		"seedbed.entropy.sources=virtio seedbed.entropy.timeout=5s seedbed.entropy.on-timeout=fail systemd.mask=systemd-random-seed.service" \
		-drive "file=$T/norng-data.img,format=raw,if=virtio"
	while ! on_console norng 'Failed to start ssh.service'; do
		alive norng
		[ $((SECONDS - BOOTED)) -lt "$WAIT_SSH" ] || guest_failed norng "ssh.service did not fail within $WAIT_SSH s"
		sleep 2
	done
	on_console norng 'Nothing was created: no SSH host key, no LUKS volume' ||
		guest_failed norng "the console does not say that nothing was created"
	if [ -n "$(ssh-keyscan -T 5 -p "$PORT" 127.0.0.1 2>/dev/null)" ]; then
		fail "norng: an sshd answers"
	fi
	poweroff norng qmp
	debugfs -R 'ls /etc/ssh' "$T/pristine.img" >"$T/norng.etc-ssh" 2>/dev/null
	if grep -q ssh_host_ "$T/norng.etc-ssh"; then
		fail "norng: host keys were made: $(cat "$T/norng.etc-ssh")"
	fi
	debugfs -R 'stat /var/lib/seedbed/firstboot.json' "$T/pristine.img" >"$T/norng.firstboot" 2>&1
	if grep -q '^Inode:' "$T/norng.firstboot"; then
		fail "norng: the first boot was recorded as done"
	fi
	cmp -s -n 67108864 "$T/norng-data.img" /dev/zero || fail "norng: the data disk was written"
	say "norng: no key, no volume, ssh.service failed, and the console says why"
fi
stop_device

# --- The first boot's timeline and its keys. ----------------------------
report first
if [ -z "$DEMO" ]; then
	echo
	echo "From the restore of the saved VM (QEMU started with -incoming) to sshd serving its new host keys:"
	printf '  %s\n' "${FORK_TIMES[@]}"
fi
