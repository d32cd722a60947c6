#!/bin/bash
# install-purge.sh BASE DEBS_DIR WORK: installs seedbed's .debs into a copy
# of the Debian root BASE with "apt-get install ./….deb", as image builders
# do, checks what the packages did, removes them (cloud-init's drop-in must
# go, the records stay), purges them and checks that nothing of seedbed is
# left but what must outlive it.  Run by tests/pkg/packages.sh
# as root in a private mount namespace (unshare -m): the copy is an
# overlay on BASE (BASE is not written; WORK/upper holds every change),
# mounted with /proc, /sys and /dev for the chroot, all gone with the
# namespace.  No service starts (policy-rc.d; no systemd runs in a chroot).
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

base=$1 debs=$2 work=$3
root=$work/root
mkdir -p "$work/upper" "$work/ovl" "$root"
mount -t overlay overlay -o "lowerdir=$base,upperdir=$work/upper,workdir=$work/ovl" "$root" ||
	fail "cannot mount an overlay on '$base'"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
rm -f "$root/.done"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
# apt fetches what the base lacks of the packages' dependencies.
cp /etc/resolv.conf "$root/etc/resolv.conf"

in_root() {
	chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
}
# cloud_ssh: the ssh module's two keys as cloud-init reads them from the
# root's /etc/cloud/cloud.cfg.d (its own merge, later files winning), one
# JSON object; "none" where the base has no cloud-init.
cloud_ssh() {
	[ -e "$root/var/lib/dpkg/info/cloud-init.list" ] || { echo none; return; }
	in_root python3 -c 'import json
from cloudinit import util
c = util.read_conf_d("/etc/cloud/cloud.cfg.d")
print(json.dumps({k: c.get(k) for k in ("ssh_deletekeys", "ssh_genkeytypes")}))'
}
expect_cloud_ssh() {
	local got
	got=$(cloud_ssh 2>&1)
	[ "$got" = none ] && return
	[ "$got" = "$1" ] || fail "$2: cloud-init reads $got, expected $1"
	echo "$2: cloud-init reads $got"
}
# unit_state UNIT: "enabled", "disabled", ... as systemctl sees the root.
unit_state() {
	systemctl --root="$root" is-enabled "$1" 2>&1 || true
}
expect_state() {
	local got
	got=$(unit_state "$1")
	[ "$got" = "$2" ] || fail "$3: $1 is '$got', expected '$2'"
}

release=$(cat "$root/etc/debian_version")
pkgs=(seedbed-agent seedbed-device)
# The initramfs generator whose trigger interest processes
# update-initramfs: initramfs-tools, or dracut (seedbed-agent-dracut then
# goes in too).
if [ -e "$root/var/lib/dpkg/info/initramfs-tools.list" ]; then
	generator=initramfs-tools
elif [ -e "$root/var/lib/dpkg/info/dracut.list" ]; then
	generator=dracut
	pkgs+=(seedbed-agent-dracut)
else
	fail "the base (Debian $release) has neither initramfs-tools nor dracut"
fi
echo "Debian $release, $generator: ${pkgs[*]}"
# The trigger is what is checked here (the image tests check what the
# initramfs holds): the generator answers it without making an initramfs,
# which would take a minute under dracut.  initramfs-tools is told not to
# update (update-initramfs.conf); Debian's dracut makes one for each
# /boot/vmlinu[zx]-*, of which this copy has none.
if [ "$generator" = initramfs-tools ]; then
	sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$root/etc/initramfs-tools/update-initramfs.conf"
else
	rm -f "$root"/boot/vmlinu[zx]-*
fi

mkdir -p "$root/tmp/seedbed-debs"
files=()
for p in "${pkgs[@]}"; do
	set -- "$debs/${p}"_*.deb
	[ -e "$1" ] || fail "no $p package in '$debs'"
	cp "$1" "$root/tmp/seedbed-debs/"
	files+=("/tmp/seedbed-debs/${1##*/}")
done
t0=$SECONDS
in_root apt-get install -y --no-install-recommends "${files[@]}" >"$work/install.log" 2>&1 || {
	cat "$work/install.log"
	fail "apt-get install of ${pkgs[*]} failed"
}
rm -rf "$root/tmp/seedbed-debs"
echo "apt-get install: $((SECONDS - t0)) s"

# --- Installed. ----------------------------------------------------------
expect_state seedbed-seed.service enabled "after install"
expect_state seedbed-firstboot.service enabled "after install"
expect_state seedbed-console.service enabled "after install"
expect_state seedbed-vm-fork-watch.service enabled "after install"
# Started by the watcher and udev, never enabled.
expect_state seedbed-vm-fork.service static "after install"
[ -e "$root/usr/lib/udev/rules.d/61-seedbed-vm-fork.rules" ] || [ -e "$root/lib/udev/rules.d/61-seedbed-vm-fork.rules" ] ||
	fail "no 61-seedbed-vm-fork.rules after install"
expect_state seedbed-device.socket enabled "after install"
# Socket-activated: not enabled by itself.
expect_state seedbed-device.service disabled "after install"
[ -x "$root/usr/share/initramfs-tools/hooks/seedbed" ] || fail "no initramfs-tools hook after install"
[ -x "$root/usr/share/initramfs-tools/scripts/init-top/seedbed" ] || fail "no init-top script after install"
# cloud-init's drop-in: a symlink (no conffile) to the file in /usr/share.
dropin=/etc/cloud/cloud.cfg.d/90_seedbed.cfg
[ -L "$root$dropin" ] || fail "after install: $dropin is no symlink"
in_root test -s "$dropin" || fail "after install: $dropin does not lead to a file"
! grep -q -x "$dropin" "$root/var/lib/dpkg/info/seedbed-agent.conffiles" 2>/dev/null ||
	fail "after install: $dropin is a conffile"
expect_cloud_ssh '{"ssh_deletekeys": false, "ssh_genkeytypes": []}' "after install"
# An administrator's later file wins, as the drop-in's comment says.
printf 'ssh_genkeytypes: [ed25519]\n' >"$root/etc/cloud/cloud.cfg.d/99_local.cfg"
expect_cloud_ssh '{"ssh_deletekeys": false, "ssh_genkeytypes": ["ed25519"]}' "with 99_local.cfg"
rm "$root/etc/cloud/cloud.cfg.d/99_local.cfg"
expect_in "$work/install.log" "Processing triggers for $generator "
[ "$generator" != dracut ] || [ -x "$root/usr/lib/dracut/modules.d/90seedbed/module-setup.sh" ] ||
	fail "no dracut module after install"
# The presets say the same as the maintainer scripts did, for image builders
# that run "systemctl preset-all" (mkosi): on Debian, which disables no
# unit by default, the socket-activated service too.
units=(seedbed-seed.service seedbed-firstboot.service seedbed-console.service seedbed-vm-fork-watch.service
	seedbed-device.socket seedbed-device.service)
systemctl --root="$root" -q disable "${units[@]}"
expect_state seedbed-seed.service disabled "before preset"
systemctl --root="$root" -q preset "${units[@]}" || fail "systemctl preset failed"
expect_state seedbed-seed.service enabled "after preset"
expect_state seedbed-firstboot.service enabled "after preset"
expect_state seedbed-console.service enabled "after preset"
expect_state seedbed-vm-fork-watch.service enabled "after preset"
expect_state seedbed-device.socket enabled "after preset"
expect_state seedbed-device.service disabled "after preset"

# What the agent leaves on a machine where it ran: its records (purged
# with it), and what must outlive the package: a LUKS key file (the
# volume cannot be opened without it) and the SSH host keys.
mkdir -p "$root/var/lib/seedbed" "$root/etc/seedbed/keys" "$root/etc/ssh"
echo '{"version": 1}' >"$root/var/lib/seedbed/firstboot.json"
echo "key of the volume" >"$root/etc/seedbed/keys/data.key"
chmod 0400 "$root/etc/seedbed/keys/data.key"
[ -e "$root/etc/ssh/ssh_host_ed25519_key" ] || echo "a host key" >"$root/etc/ssh/ssh_host_ed25519_key"
kept=$(cd "$root" && sha256sum etc/seedbed/keys/data.key etc/ssh/ssh_host_ed25519_key)

# --- Removed. ------------------------------------------------------------
# cloud-init must make and delete host keys again on the next instance,
# since seedbed no longer makes them: the drop-in goes with the package.
# The records stay until purge, the keys always.
t0=$SECONDS
in_root apt-get remove -y "${pkgs[@]}" >"$work/remove.log" 2>&1 || {
	cat "$work/remove.log"
	fail "apt-get remove ${pkgs[*]} failed"
}
echo "apt-get remove: $((SECONDS - t0)) s"
if [ -e "$root$dropin" ] || [ -L "$root$dropin" ]; then
	fail "after remove: $dropin is still there"
fi
[ ! -e "$root/usr/share/seedbed" ] || fail "after remove: /usr/share/seedbed is still there"
expect_cloud_ssh '{"ssh_deletekeys": null, "ssh_genkeytypes": null}' "after remove"
[ -s "$root/var/lib/seedbed/firstboot.json" ] || fail "after remove: the records are gone"
(cd "$root" && sha256sum -c --quiet <<<"$kept") || fail "after remove: a key file changed or is gone"
# The initramfs is made again without seedbed (on remove: purge has no
# files left to remove, so it activates no trigger).
expect_in "$work/remove.log" "Processing triggers for $generator "
# shellcheck disable=SC2016 # dpkg-query's fields, not the shell's
status=$(in_root dpkg-query -W -f '${db:Status-Abbrev}' seedbed-agent)
[ "$status" = "rc " ] || fail "after remove: seedbed-agent is '$status', expected 'rc ' (config-files)"

# The purge of the records honours DPKG_ROOT (dpkg --root with the scripts
# run outside the root): another root's records go, this root's stay.
mkdir -p "$root/tmp/dpkg-root/var/lib/seedbed"
echo '{"version": 1}' >"$root/tmp/dpkg-root/var/lib/seedbed/firstboot.json"
in_root env DPKG_ROOT=/tmp/dpkg-root sh /var/lib/dpkg/info/seedbed-agent.postrm purge >"$work/postrm.log" 2>&1 ||
	{ cat "$work/postrm.log"; fail "seedbed-agent's postrm purge with DPKG_ROOT failed"; }
[ ! -e "$root/tmp/dpkg-root/var/lib/seedbed" ] || fail "postrm purge with DPKG_ROOT: its records are still there"
[ -s "$root/var/lib/seedbed/firstboot.json" ] || fail "postrm purge with DPKG_ROOT: removed the root's records"
rm -rf "$root/tmp/dpkg-root"

# --- Purged. -------------------------------------------------------------
t0=$SECONDS
in_root apt-get purge -y "${pkgs[@]}" >"$work/purge.log" 2>&1 || {
	cat "$work/purge.log"
	fail "apt-get purge ${pkgs[*]} failed"
}
echo "apt-get purge: $((SECONDS - t0)) s"
for u in "${units[@]}"; do
	case $(unit_state "$u") in
	enabled* | static | linked* | masked* | alias | indirect | generated | transient | disabled)
		fail "after purge: $u is '$(unit_state "$u")'"
		;;
	esac
done
[ ! -e "$root/var/lib/seedbed" ] || fail "after purge: /var/lib/seedbed is still there"
(cd "$root" && sha256sum -c --quiet <<<"$kept") || fail "after purge: a key file changed or is gone"
# shellcheck disable=SC2016 # dpkg-query's fields, not the shell's
if in_root dpkg-query -W -f '${Package} ${db:Status-Abbrev}\n' 'seedbed*' >"$work/dpkg-query" 2>/dev/null; then
	if grep -v ' un *$' "$work/dpkg-query" | grep -q .; then
		cat "$work/dpkg-query"
		fail "after purge: dpkg still knows seedbed's packages"
	fi
fi
# Everything the install and the purge changed is in the overlay's upper
# layer: no path of seedbed's may be left there but the key file, its
# directories, and the package managers' logs.
find "$work/upper" -mindepth 1 -printf '/%P\n' | grep seedbed |
	grep -v -x -e /etc/seedbed -e /etc/seedbed/keys -e /etc/seedbed/keys/data.key >"$work/left" || true
if [ -s "$work/left" ]; then
	cat "$work/left"
	fail "after purge: seedbed's files are left"
fi
# Nor any enabled-unit symlink pointing at a unit of seedbed's.
find "$work/upper/etc/systemd" -type l -lname '*seedbed*' -printf '/%P\n' >"$work/links" 2>/dev/null || true
[ ! -s "$work/links" ] || { cat "$work/links"; fail "after purge: unit symlinks are left"; }
echo "install and purge: ok"
