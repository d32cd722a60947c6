#!/bin/bash
# A Debian 13 cloud image as people build it: cloud-init and
# openssh-server from Debian (whose postinst left host keys in the
# image), seedbed-agent installed from its .deb, and seedbed-device from
# its .deb serving the guest's virtio-rng over EGD.  Booted with a NoCloud
# seed disk, as a cloud boots it.
#
#   1. cloud (first boot of the image): seedbed replaces the keys baked
#      into the image (they were not made for this instance) behind the
#      gate, before cloud-init's ssh module, which keeps them; ssh logs in
#      as the default user with the key user-data gave, checking the host
#      key against the console's block; every fingerprint block on the
#      console is sshd's; cloud-init is done without errors and made no key.
#   2. clone: the same disk with a new instance-id and SMBIOS UUID, and
#      user-data that gives an Ed25519 host key (ssh_keys): new keys from
#      seedbed, cloud-init's per-instance modules ran again and wrote the
#      given key over seedbed's; sshd serves it, the console says so, and
#      'seedbed-agent status' says another tool replaced that key.
#   3. clone2: the same disk and seed (cloud-init's instance-id kept) with
#      a new SMBIOS UUID: new keys from seedbed; cloud-init prints no block
#      (once per instance), seedbed-console.service prints them.
#   4. fork: clone2, with a VM generation ID, saved while it runs and
#      restored with another: new keys (Debian 13's 6.12 logs the line
#      the watcher acts on, and sends no uevent), announced on the
#      console, recorded in vm-forks.json.
#
# With SEEDBED_FIRSTBOOT_DEMO=1 (tools/demo) the first boot runs, then the
# same image without seedbed (cloud-init alone makes the keys) as a
# benchmark, and both are printed side by side.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, chroot, mkfs.ext4 -d)"
for cmd in qemu-system-x86_64 debootstrap dpkg-buildpackage cloud-localds ssh ssh-keyscan ssh-keygen python3 jq; do
	command -v "$cmd" >/dev/null || skip "$cmd is not installed"
done

DEMO=${SEEDBED_FIRSTBOOT_DEMO:-}
# shellcheck source=tests/vm/guest.sh
. "$top_srcdir/tests/vm/guest.sh"
build_image cloud image-cloud ${DEMO:+--plain}

# The host side from its package, as a hypervisor host installs it.
set -- "$IMG"/debs/seedbed-device_*.deb
[ -e "$1" ] || fail "no seedbed-device package"
DEVICE_DEB=$1
dpkg-deb -x "$1" "$T/device-pkg"
SEEDBED_DEVICE=$T/device-pkg/usr/bin/seedbed-device
[ -x "$SEEDBED_DEVICE" ] || fail "the seedbed-device package has no /usr/bin/seedbed-device"
export SEEDBED_DEVICE
# shellcheck source=tests/vm/host-device.sh
. "$top_srcdir/tests/vm/host-device.sh"
start_device host --egd "unix:$T/egd.sock"
# shellcheck disable=SC2054 # commas inside QEMU's option values
EGD_ARGS=(-chardev "socket,id=egd,path=$T/egd.sock" -object rng-egd,id=rng0,chardev=egd
	-device virtio-rng-pci,rng=rng0)

# Debian's cloud-init makes the default user "debian"; the key user-data
# gives it is the image's test key.  The kernel mounts the root read-only,
# as Debian's bootloader has it.
GUEST_USER=debian
# shellcheck disable=SC2034 # read by guest.sh's boot()
ROOT_MODE=ro

# seed NAME INSTANCE-ID [USER-DATA LINES]: a NoCloud seed disk (label
# cidata) in $T/NAME.seed.
seed() {
	local name=$1 iid=$2
	shift 2
	{
		echo '#cloud-config'
		echo 'ssh_authorized_keys:'
		echo "  - $(cat "$IMG/id_ed25519.pub")"
		printf '%s\n' "$@"
	} >"$T/$name.user-data"
	printf 'instance-id: %s\nlocal-hostname: seedbed-guest\n' "$iid" >"$T/$name.meta-data"
	cloud-localds "$T/$name.seed" "$T/$name.user-data" "$T/$name.meta-data" || fail "cloud-localds failed"
}

# every_block_is_sshd NAME: each fingerprint line of every block on the
# console (seedbed's, cloud-init's) is a key sshd serves: no stale block.
every_block_is_sshd() {
	local name=$1
	serial "$name" | awk '
		/-----BEGIN SSH HOST KEY FINGERPRINTS-----/ { inside = 1; next }
		/-----END SSH HOST KEY FINGERPRINTS-----/ { inside = 0; next }
		inside && match($0, /[0-9]+ SHA256:[^ ]+/) { print substr($0, RSTART, RLENGTH) }' |
		sort -u >"$T/$name.all-console-fp"
	awk '{ print $1, $2 }' "$T/$name.keyscan-fp" | sort -u >"$T/$name.served-fp"
	diff -u "$T/$name.served-fp" "$T/$name.all-console-fp" ||
		fail "$name: a fingerprint block on the console is not what sshd serves"
}

# cloud_collect NAME: what the guest says of itself.
cloud_collect() {
	local name=$1
	# cloud-init's last stage (keys to the console among it) is done.
	guest "$name" timeout "$WAIT_STEP" cloud-init status --wait >/dev/null 2>&1 || true
	st=0
	guest "$name" cloud-init status --long --format json >"$T/$name.cloud-init.json" || st=$?
	[ "$st" -eq 0 ] || { cat "$T/$name.cloud-init.json"; guest_failed "$name" "cloud-init status exited $st"; }
	[ "$(json "$T/$name.cloud-init.json" .status)" = "done" ] || fail "$name: cloud-init: $(cat "$T/$name.cloud-init.json")"
	[ "$(json "$T/$name.cloud-init.json" '.errors | length')" = 0 ] || fail "$name: cloud-init errors: $(json "$T/$name.cloud-init.json" .errors)"
	guest "$name" sudo -n seedbed-agent status --json >"$T/$name.record.json" || fail "$name: no seedbed record in the guest"
	guest "$name" sudo -n seedbed-agent status >"$T/$name.status" || true
	guest "$name" sudo -n cat /var/log/cloud-init.log >"$T/$name.cloud-init.log" || fail "$name: no cloud-init log"
	guest "$name" cat /var/lib/cloud/data/instance-id >"$T/$name.instance-id" || fail "$name: no cloud-init instance-id"
	guest "$name" systemctl show -p ActiveEnterTimestampMonotonic --value ssh.service >"$T/$name.sshd-us"
	no_ordering_cycle "$name"
}

# record_fp NAME: the fingerprints of the keys seedbed's record says it
# made in this boot.
record_fp() {
	rec "$1" '.ssh_keys[] | select(.action == "created" or .action == "replaced") | .fingerprint' | sort
}

# --- 1. The image's first boot. -----------------------------------------
seed cloud iid-seedbed-0001
boot cloud "$IMG/disk.img" 5eedbed0-0000-4000-8000-00000000c001 "" \
	-drive "file=$T/cloud.seed,format=raw,if=virtio,readonly=on" "${EGD_ARGS[@]}"
wait_ssh cloud
wait_console cloud '-----END SSH HOST KEY KEYS-----' "a host key block on the console"
verify_keys cloud
say "cloud: ssh logs in as $GUEST_USER with user-data's key, the host key checked against the console"
cloud_collect cloud
every_block_is_sshd cloud
[ "$(cat "$T/cloud.instance-id")" = iid-seedbed-0001 ] || fail "cloud: instance-id $(cat "$T/cloud.instance-id")"
# The keys sshd serves are the ones seedbed made behind the gate ...
[ "$(rec cloud '[.ssh_keys[] | select(.crng_ready)] | length')" = 3 ] || fail "cloud: keys $(rec cloud .ssh_keys)"
record_fp cloud >"$T/cloud.record-fp"
awk '{ print $2 }' "$T/cloud.keyscan-fp" | sort >"$T/cloud.served"
diff -u "$T/cloud.record-fp" "$T/cloud.served" || fail "cloud: sshd does not serve the keys seedbed recorded"
# ... in place of those baked into the image, and the record says why.
if grep -qFf <(awk '{ print $2 }' "$IMG/baked-keys.fp") "$T/cloud.served"; then
	fail "cloud: sshd serves a key baked into the image"
fi
[ "$(rec cloud '[.ssh_keys[] | select(.action == "replaced")] | length')" = 3 ] ||
	fail "cloud: the baked keys were not replaced: $(rec cloud .ssh_keys)"
reason=$(rec cloud '.ssh_keys[0].reason')
case $reason in
*first\ boot*) ;;
*) fail "cloud: the record does not say why the keys were replaced: $(rec cloud .ssh_keys)" ;;
esac
# ... and cloud-init made none.
if grep -F "'ssh-keygen', '-t'" "$T/cloud.cloud-init.log"; then
	fail "cloud: cloud-init generated host keys"
fi
served=$(metric host 'seedbed_vm_bytes_total{vm="cloud",transport="egd"}')
[ "$served" -gt 0 ] || fail "cloud: the device's metrics count no bytes for the VM"
say "cloud: the baked keys were replaced by seedbed ($reason); cloud-init kept them; $served bytes over EGD"
# seedbed-device under a real systemd (257, the guest's): installed from
# its package, an EGD client reading without a pause while the service is
# restarted (systemctl restart) and killed (SIGKILL; Restart=on-failure
# starts it again).  Everything the connection needs is in systemd's fd
# store: the client never notices.
# shellcheck disable=SC2016 # the loops are expanded in the guest
device_under_systemd() {
	local name=$1 out pid0 pid1
	guest "$name" 'cat >/tmp/seedbed-device.deb' <"$DEVICE_DEB" || fail "$name: copying the device package"
	guest "$name" 'cat >/tmp/egd-reader.py' <"$top_srcdir/tests/integration/egd-reader.py" || fail "$name: copying"
	guest "$name" sudo -n dpkg -i /tmp/seedbed-device.deb >"$T/$name.device-install" 2>&1 ||
		{ cat "$T/$name.device-install"; fail "$name: dpkg -i seedbed-device"; }
	guest "$name" 'sudo -n sh -c "nohup python3 /tmp/egd-reader.py /run/seedbed/egd.sock /tmp/egd-stop >/tmp/egd-reader.out 2>&1 &"' ||
		fail "$name: starting the EGD client"
	guest "$name" 'for i in $(seq 100); do sudo -n systemctl -q is-active seedbed-device.service && exit 0; sleep 0.1; done; exit 1' ||
		fail "$name: seedbed-device.service did not start on the client's connection"
	pid0=$(guest "$name" systemctl show -p MainPID --value seedbed-device.service)
	guest "$name" sudo -n systemctl restart seedbed-device.service || fail "$name: systemctl restart"
	pid1=$(guest "$name" systemctl show -p MainPID --value seedbed-device.service)
	guest "$name" sudo -n systemctl kill -s KILL seedbed-device.service || fail "$name: systemctl kill"
	# Restart= waits RestartSec= (100 ms) before the new start.
	guest "$name" 'p='"$pid1"'; for i in $(seq 300); do n=$(systemctl show -p MainPID --value seedbed-device.service); [ "$n" != 0 ] && [ "$n" != "$p" ] && systemctl -q is-active seedbed-device.service && exit 0; sleep 0.1; done; exit 1' ||
		fail "$name: seedbed-device was not started again after SIGKILL"
	sleep 1
	guest "$name" 'sudo -n touch /tmp/egd-stop; for i in $(seq 100); do [ -s /tmp/egd-reader.out ] && break; sleep 0.1; done; cat /tmp/egd-reader.out' >"$T/$name.egd-reader" ||
		fail "$name: the EGD client"
	guest "$name" sudo -n journalctl -b -q --no-pager -u seedbed-device.service >"$T/$name.device-journal"
	out=$(cat "$T/$name.egd-reader")
	case $out in
	reads\ *\ longest\ *) ;;
	*) cat "$T/$name.device-journal"; fail "$name: the EGD client failed across a restart and a SIGKILL: $out" ;;
	esac
	awk -v l="${out##* }" 'BEGIN { exit !(l < 5) }' || fail "$name: the EGD client waited ${out##* } s for an answer"
	if ! grep -q 'Took over 1 of 1 connections' "$T/$name.device-journal" ||
		! grep -q 'Took up 1 EGD connections from their sockets' "$T/$name.device-journal"; then
		cat "$T/$name.device-journal"
		fail "$name: the connection was not taken up after both the restart and the SIGKILL"
	fi
	grep -q 'killed): EGD connections go on from their sockets' "$T/$name.device-journal" ||
		{ cat "$T/$name.device-journal"; fail "$name: no sign of the state written while it served"; }
	say "$name: seedbed-device under systemd $(guest "$name" systemctl --version | awk 'NR == 1 { print $2 }'): pid $pid0, restarted as $pid1, killed, started again; the EGD client ($out) never noticed"
}
device_under_systemd cloud

# shellcheck disable=SC2016 # expanded in the guest
[ -z "$DEMO" ] || guest cloud 'echo "    $(id -un)@$(hostname): logged in over ssh, cloud-init $(cloud-init --version 2>&1 | cut -d" " -f2)"' >"$T/cloud.login"
poweroff cloud

if [ -n "$DEMO" ]; then
	# --- The benchmark: the same image without seedbed. -------------
	# Debian's cloud-init deletes the baked keys and makes its own with
	# ssh-keygen; the rng device is there all the same.
	seed plain iid-seedbed-plain
	INITRD=$IMG/initrd-plain.img boot plain "$IMG/disk-plain.img" 5eedbed0-0000-4000-8000-00000000c0b1 "" \
		-drive "file=$T/plain.seed,format=raw,if=virtio,readonly=on" "${EGD_ARGS[@]}"
	wait_ssh plain
	wait_console plain '-----END SSH HOST KEY KEYS-----' "cloud-init's host key block on the console"
	verify_keys plain
	guest plain systemctl show -p ActiveEnterTimestampMonotonic --value ssh.service >"$T/plain.sshd-us"
	poweroff plain
	stop_device
	report cloud
	echo
	echo "Logged in as cloud-init's default user with the key user-data gave, the host key checked against the console:"
	cat "$T/cloud.login"
	echo
	echo "Benchmark, one run, the same Debian 13 image and host, kernel start to sshd listening on its first boot:"
	printf '  %8.3f s  seedbed owns the host keys (made behind the entropy gate, written at %.3f s)\n' \
		"$(($(cat "$T/cloud.sshd-us") / 1000))e-3" "$(rec cloud .boot.ssh_keys_ms)e-3"
	printf '  %8.3f s  cloud-init alone (ssh-keygen, no gate; seedbed not installed)\n' \
		"$(($(cat "$T/plain.sshd-us") / 1000))e-3"
	exit 0
fi

# --- 2. A clone: new instance-id, new SMBIOS UUID, a host key in user-data.
ssh-keygen -q -t ed25519 -N '' -C user-data -f "$T/given_ed25519"
seed clone iid-seedbed-0002 'ssh_keys:' '  ed25519_private: |' \
	"$(sed 's/^/    /' "$T/given_ed25519")" "  ed25519_public: $(cat "$T/given_ed25519.pub")"
boot clone "$IMG/disk.img" 5eedbed0-0000-4000-8000-00000000c002 "" \
	-drive "file=$T/clone.seed,format=raw,if=virtio,readonly=on" "${EGD_ARGS[@]}"
wait_ssh clone
wait_console clone '-----END SSH HOST KEY KEYS-----' "a host key block on the console"
verify_keys clone
cloud_collect clone
every_block_is_sshd clone
[ "$(cat "$T/clone.instance-id")" = iid-seedbed-0002 ] || fail "clone: cloud-init's instance-id is $(cat "$T/clone.instance-id")"
guest clone test -e /var/lib/cloud/instances/iid-seedbed-0002/sem/config_ssh ||
	fail "clone: cloud-init's per-instance ssh module did not run for the new instance"
awk '{ print $2 }' "$T/clone.keyscan-fp" | sort >"$T/clone.served"
if grep -qFf "$T/cloud.served" "$T/clone.served"; then
	fail "clone: a key of the first instance survived"
fi
given=$(ssh-keygen -l -f "$T/given_ed25519.pub" | awk '{ print $2 }')
grep -qxF "$given" "$T/clone.served" || fail "clone: sshd does not serve the Ed25519 key user-data gave"
[ "$(rec clone '[.ssh_keys[] | select(.action == "replaced")] | length')" = 3 ] ||
	fail "clone: seedbed did not replace the keys: $(rec clone .ssh_keys)"
# status never claims the key cloud-init wrote over seedbed's.
grep -q 'replaced by another tool' "$T/clone.status" || {
	cat "$T/clone.status"
	fail "clone: status does not say another tool replaced the Ed25519 key"
}
[ "$(rec clone '[.ssh_keys[] | select(.on_disk == "replaced-by-another-tool")] | .[].type')" = ed25519 ] ||
	fail "clone: status --json: $(rec clone .ssh_keys)"
# cloud-init printed this instance's blocks, so seedbed printed none.
wait_console clone "No SSH host key block printed: cloud-init's keys-to-console module printed them in this boot" \
	"seedbed-console.service leaving the blocks to cloud-init"
say "clone: new keys from seedbed, cloud-init ran per instance again and wrote user-data's Ed25519 key; status says so"
poweroff clone

# --- 3. A clone that keeps its cloud-init instance-id (the same seed disk)
# but gets a new SMBIOS UUID: seedbed makes new keys, cloud-init runs no
# per-instance module and prints no block; seedbed-console.service does.
boot clone2 "$IMG/disk.img" 5eedbed0-0000-4000-8000-00000000c003 "" \
	-drive "file=$T/clone.seed,format=raw,if=virtio,readonly=on" "${EGD_ARGS[@]}" \
	-device vmgenid,guid=8a3b0e52-5eed-4bed-9000-00000000c0c1
wait_ssh clone2
wait_console clone2 '-----END SSH HOST KEY KEYS-----' "a host key block on the console"
verify_keys clone2
cloud_collect clone2
every_block_is_sshd clone2
[ "$(cat "$T/clone2.instance-id")" = iid-seedbed-0002 ] || fail "clone2: cloud-init's instance-id is $(cat "$T/clone2.instance-id")"
on_console clone2 'cloud-init printed no block for them: printing the keys in place now' ||
	guest_failed clone2 "the key blocks are not seedbed-console.service's"
[ "$(serial clone2 | grep -c -- '-----BEGIN SSH HOST KEY FINGERPRINTS-----')" = 1 ] ||
	guest_failed clone2 "not exactly one fingerprint block on the console"
[ "$(guest clone2 systemctl show -p Result --value seedbed-console.service)" = success ] ||
	fail "clone2: seedbed-console.service did not succeed"
awk '{ print $2 }' "$T/clone2.keyscan-fp" | sort >"$T/clone2.served"
if grep -qFf "$T/clone.served" "$T/clone2.served"; then
	fail "clone2: a key of the clone it was copied from survived"
fi
[ "$(rec clone2 '[.ssh_keys[] | select(.action == "replaced")] | length')" = 3 ] ||
	fail "clone2: seedbed did not replace the keys: $(rec clone2 .ssh_keys)"
say "clone2: same instance-id, new SMBIOS UUID: new keys, and seedbed printed their blocks after cloud-init's last stage"

# --- 4. clone2 saved while it runs and restored with another VM
# generation ID: Debian 13's kernel logs the change (it sends no uevent,
# as Debian 12's does not), and the watcher starts one run.
save_vm clone2 "$T/clone2.vmstate"
qemu-img create -q -f qcow2 -F raw -b "$IMG/disk.img" "$T/fork.qcow2" || fail "fork: qemu-img"
DISK_FORMAT=qcow2 boot fork "$T/fork.qcow2" 5eedbed0-0000-4000-8000-00000000c003 "" \
	-drive "file=$T/clone.seed,format=raw,if=virtio,readonly=on" "${EGD_ARGS[@]}" \
	-device vmgenid,guid=8a3b0e52-5eed-4bed-9000-00000000c0c2 -incoming "exec:cat $T/clone2.vmstate"
wait_new_keys fork "$T/clone2.served"
FORK_TIME=$FORK_SECONDS
wait_console fork '-----END SSH HOST KEY KEYS-----' "a host key block on the console"
verify_keys fork
guest fork sudo -n cat /var/lib/seedbed/vm-forks.json >"$T/fork.forks.json" || fail "fork: no vm-forks.json"
ssh-keygen -l -f "$T/fork.keyscan" | awk '{ print $2 }' | sort >"$T/fork.served"
json "$T/fork.forks.json" '.events[-1].keys[].new' | sort | diff -u "$T/fork.served" - ||
	fail "fork: vm-forks.json's last change is not the keys sshd serves"
[ "$(json "$T/fork.forks.json" '.events[-1].result + " " + .events[-1].sshd')" = "regenerated reloaded ssh.service" ] ||
	fail "fork: $(cat "$T/fork.forks.json")"
[ "$(json "$T/fork.forks.json" '.events | length')" = 1 ] || fail "fork: not one change recorded: $(cat "$T/fork.forks.json")"
guest fork sudo -n journalctl -b -q --no-pager -u seedbed-vm-fork-watch.service >"$T/fork.watch" || fail "fork: no journal"
expect_in "$T/fork.watch" "for a VM generation change"
say "fork: restored with a new generation ID, it serves new keys $FORK_TIME s after QEMU started"
qmp fork quit >/dev/null 2>&1 || true
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=
stop_device

echo
echo "The clone's 'seedbed-agent status':"
sed 's/^/  /' "$T/clone.status"
