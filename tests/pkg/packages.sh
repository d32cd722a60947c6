#!/bin/bash
# seedbed's packages, as a distribution builds them: the .debs from a
# clean copy of the source with dpkg-buildpackage, and lintian finds no
# error or warning in them; the .rpms from seedbed.spec with rpmbuild,
# whose scriptlets leave enabling to the presets; both install the same
# files; erasing the agent's .rpm takes cloud-init's drop-in with it; and,
# in a copy of each Debian base of the image tests (tests/vm/build-image.sh),
# "apt-get install ./….deb" enables the guest's units and the host's socket
# (as their presets do) and runs the initramfs trigger, "apt-get remove"
# takes the drop-in away but keeps the records, and "apt-get purge" leaves
# nothing of seedbed's but the key files.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

for cmd in dpkg-buildpackage dh lintian rpmbuild rpm; do
	command -v "$cmd" >/dev/null || skip "$cmd is not installed"
done
CACHE=${SEEDBED_TEST_CACHE:-$top_builddir/test-cache}
t0=$SECONDS
say() {
	printf '==> [%3ds] %s\n' $((SECONDS - t0)) "$*"
}

# One version everywhere: configure.ac, debian/changelog (less its Debian
# revision) and seedbed.spec.
version=$(sed -n 's/^AC_INIT(\[seedbed\], \[\([^]]*\)\].*/\1/p' "$top_srcdir/configure.ac")
deb_version=$(sed -n '1s/^seedbed (\([^)]*\)).*/\1/p' "$top_srcdir/debian/changelog")
rpm_version=$(sed -n 's/^Version:[[:space:]]*//p' "$top_srcdir/seedbed.spec")
if [ -z "$version" ] || [ "${deb_version%-*}" != "$version" ] || [ "$rpm_version" != "$version" ]; then
	fail "versions differ: configure.ac '$version', debian/changelog '$deb_version', seedbed.spec '$rpm_version'"
fi

# --- debian/rules. -------------------------------------------------------
# Only the targets that install units need systemd.pc: "debian/rules clean"
# works without the build dependencies, configure says what is missing.
norules() {
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL PKG_CONFIG_PATH= PKG_CONFIG_LIBDIR="$T/no-pc" \
		make -s -n -C "$top_srcdir" -f debian/rules "$@"
}
norules clean >"$T/rules-clean" 2>&1 || { cat "$T/rules-clean"; fail "debian/rules clean needs systemd.pc"; }
! norules override_dh_auto_configure >"$T/rules-configure" 2>&1 ||
	fail "debian/rules configures without a unit directory"
expect_in "$T/rules-configure" "pkg-config knows no systemdsystemunitdir"

# --- The .debs and lintian. ----------------------------------------------
say "dpkg-buildpackage (tests/pkg/build-debs.sh)"
bash "$top_srcdir/tests/pkg/build-debs.sh" "$T/debs" || fail "building the .debs failed"
for p in seedbed-agent seedbed-agent-dracut seedbed-device; do
	set -- "$T/debs/${p}_"*.deb
	[ -e "$1" ] || fail "no $p .deb"
	[ $# -eq 1 ] || fail "expected one $p .deb, found: $*"
done

say "lintian"
# Errors and warnings fail (the overrides in debian/ and README.source say
# why each overridden one stays); notes are shown.
st=0
# (Its temporary files, which it leaves behind, in $T.)
mkdir "$T/lintian-tmp"
TMPDIR=$T/lintian-tmp lintian --fail-on error,warning "$T"/debs/*.deb >"$T/lintian" 2>&1 || st=$?
grep -v '^running with root privileges' "$T/lintian" || true
[ "$st" -eq 0 ] || fail "lintian reports errors or warnings (exit $st)"

# --- The .rpms. ----------------------------------------------------------
say "rpmbuild -bb --nodeps (tests/pkg/build-rpms.sh)"
bash "$top_srcdir/tests/pkg/build-rpms.sh" "$T/rpms" || fail "building the .rpms failed"

# --- The same files in both. ---------------------------------------------
# deb_files FILE, rpm_files FILE: "MODE PATH" of each file and "MODE PATH
# -> TARGET" of each symlink a package installs (not directories: a .deb
# lists every parent, an .rpm what it owns), put alike:
#  - symlinks by the absolute path they lead to: cloud-init's drop-in is a
#    symlink from /etc/cloud/cloud.cfg.d to /usr/share/seedbed in both,
#    absolute in the .deb (dh_link, Debian policy 10.5) and relative in the
#    .rpm (rpmbuild warns of absolute ones);
#  - units and presets: Debian 12's /lib/systemd/system(-preset) is
#    /usr/lib/systemd/system(-preset) (%{_unitdir} and %{_presetdir} of
#    Fedora, and Debian 13's), and its /lib/udev/rules.d is
#    /usr/lib/udev/rules.d (%{_udevrulesdir});
#  - man pages are compressed by dh_compress and Fedora's brp-compress, not
#    by Debian's rpm: compared without .gz;
#  - documentation follows each distribution's rules (Debian's copyright
#    and changelog.Debian.gz, rpm's %license and %doc): not compared;
#  - /usr/lib/.build-id (rpm's links to the ELF files) and
#    /usr/share/lintian (Debian's lintian overrides) have no counterpart
#    in the other: not compared.
normalize() {
	absolute_links | sed -E -e 's|^([^ ]+) \./|\1 /|' -e 's| /lib/systemd/system(-preset)?/| /usr/lib/systemd/system\1/|' \
		-e 's| /lib/udev/rules\.d/| /usr/lib/udev/rules.d/|' \
		-e 's|^([^ ]+ /usr/share/man/.*)\.gz$|\1|' |
		grep -v -E ' /usr/share/(doc|licenses|lintian)/| /usr/lib/\.build-id/' | sort
}
# absolute_links: "MODE PATH -> TARGET" with a relative TARGET made
# absolute, as seen from PATH's directory (not following any link).
absolute_links() {
	local mode path arrow target
	while read -r mode path arrow target; do
		case $target in
		"") echo "$mode $path" ;;
		/*) echo "$mode $path $arrow $target" ;;
		*) echo "$mode $path $arrow $(realpath -s -m "$(dirname "${path#.}")/$target")" ;;
		esac
	done
}
deb_files() {
	dpkg-deb --fsys-tarfile "$1" | tar -tvf - |
		awk '$1 !~ /^d/ { print $1, $6 ($7 == "->" ? " -> " $8 : "") }' | normalize
}
rpm_files() {
	rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES} -> %{FILELINKTOS}\n]' "$1" |
		awk '$1 !~ /^d/' | sed 's/ -> $//' | normalize
}
for p in seedbed-agent seedbed-agent-dracut seedbed-device; do
	set -- "$T/rpms/$p-$version-"*.rpm
	[ -e "$1" ] || fail "no $p .rpm"
	[ $# -eq 1 ] || fail "expected one $p .rpm, found: $*"
	rpm_files "$1" >"$T/$p.rpm.list"
	deb_files "$T/debs/${p}_"*.deb >"$T/$p.deb.list"
	[ -s "$T/$p.deb.list" ] || fail "no files in the $p .deb"
	diff -u --label "$p.deb" --label "$p.rpm" "$T/$p.deb.list" "$T/$p.rpm.list" ||
		fail "$p: the .deb and the .rpm install different files"
	echo "$p: $(wc -l <"$T/$p.deb.list") files, the same in the .deb and the .rpm"
done

# The guest's units belong to boot: the agent's maintainer scripts never
# start, stop or restart one (dh_installsystemd --no-start
# --no-stop-on-upgrade), but for the watcher of VM generation changes, a
# daemon: started on installation, restarted after an upgrade, stopped on
# removal.  The host's service is never started by its package
# (socket-activated), and restarted on upgrade only if it runs: the
# guests' connections go through the fd store to the new binary.
dpkg-deb --ctrl-tarfile "$T/debs/seedbed-agent_"*.deb | tar -xOf - --wildcards './*inst' './*rm' >"$T/agent.scripts"
if grep -n 'deb-systemd-invoke' "$T/agent.scripts" | grep -v "seedbed-vm-fork-watch.service"; then
	fail "seedbed-agent's maintainer scripts start or stop units"
fi
expect_in "$T/agent.scripts" "_dh_action=restart"
expect_in "$T/agent.scripts" "deb-systemd-invoke \$_dh_action 'seedbed-vm-fork-watch.service'"
expect_in "$T/agent.scripts" "deb-systemd-invoke stop 'seedbed-vm-fork-watch.service'"
dpkg-deb --ctrl-tarfile "$T/debs/seedbed-device_"*.deb | tar -xOf - ./postinst >"$T/device.postinst"
! grep -n -E "deb-systemd-invoke (start|restart) .*seedbed-device\.service" "$T/device.postinst" ||
	fail "seedbed-device's postinst starts seedbed-device.service"
expect_in "$T/device.postinst" "deb-systemd-invoke try-restart seedbed-device.service"
# debhelper's own unconditional restart must not come back.
! grep -n "try-restart 'seedbed-device.service'" "$T/device.postinst" ||
	fail "seedbed-device's postinst restarts a daemon that may not hand its guests over"
expect_in "$T/device.postinst" "SEEDBED_FDSTORE=1"
expect_in "$T/device.postinst" "deb-systemd-invoke start 'seedbed-device.socket'"
# The .rpms enable nothing themselves: %systemd_post applies the presets.
for p in seedbed-agent seedbed-device; do
	rpm -qp --scripts "$T/rpms/$p-$version-"*.rpm >"$T/$p.rpm.scripts"
	! grep -n -E 'systemctl.* enable' "$T/$p.rpm.scripts" || fail "$p's .rpm enables units in its scriptlets"
	expect_in "$T/$p.rpm.scripts" "preset"
	# A macro rpm does not know stays in the scriptlet as text.
	! grep -n '%systemd' "$T/$p.rpm.scripts" || fail "$p's .rpm scriptlets hold an unexpanded macro"
done
expect_in "$T/seedbed-device.rpm.scripts" "try-restart seedbed-device.service"
expect_in "$T/seedbed-agent.rpm.scripts" "try-restart seedbed-vm-fork-watch.service"

[ "$(id -u)" -eq 0 ] || skip "install and purge need root (chroot, mount)"

# --- Erasing the agent's .rpm. --------------------------------------------
# Into an empty root, without scripts (this is no Fedora): what rpm itself
# does with the files.  The drop-in is no %config file, so erase removes it
# (an edited %config(noreplace) file would stay as .rpmsave).
say "rpm -i, rpm -e seedbed-agent in an empty root"
rr=$T/rpm-root
# (Its database in the root, not in the home directory that Debian's rpm
# defaults to; what it says, in a log.)
rpmq() {
	rpm --root "$rr" --dbpath /var/lib/rpm --nodeps --noscripts --notriggers "$@" >>"$T/rpm.log" 2>&1 ||
		{ cat "$T/rpm.log"; fail "rpm $1 failed"; }
}
rpmq -i "$T/rpms/seedbed-agent-$version-"*.rpm
dropin=etc/cloud/cloud.cfg.d/90_seedbed.cfg
# (The .rpm's link is relative: it leads to the file in the root.)
if [ ! -L "$rr/$dropin" ] || [ ! -s "$rr/$dropin" ]; then
	fail "rpm -i: /$dropin is no link to a file"
fi
echo "# edited" >>"$rr/$dropin"
rpmq -e seedbed-agent
if [ -e "$rr/$dropin" ] || [ -L "$rr/$dropin" ]; then
	fail "rpm -e left /$dropin"
fi
find "$rr" -path "$rr/var/lib/rpm" -prune -o ! -type d -printf '/%P\n' >"$T/rpm-left"
[ ! -s "$T/rpm-left" ] || { cat "$T/rpm-left"; fail "rpm -e left files of seedbed-agent"; }

# --- Install, remove and purge in the image tests' Debian bases. ---------
command -v unshare >/dev/null || skip "unshare is not installed"
bases=0
for done in "$CACHE"/image*/root-*/.done; do
	[ -e "$done" ] || continue
	base=${done%/.done}
	bases=$((bases + 1))
	say "apt-get install, remove, purge in a copy of ${base#"$CACHE"/}"
	# Shared with other readers; build-image.sh holds it alone while it
	# replaces a base.
	exec 9<"$(dirname "$base")/.lock"
	flock -s 9
	[ -e "$done" ] || continue
	unshare -m --propagation private -- bash "$top_srcdir/tests/pkg/install-purge.sh" \
		"$base" "$T/debs" "$T/chroot-$bases" || fail "install and purge in ${base#"$CACHE"/}"
	exec 9<&-
done
[ "$bases" -gt 0 ] ||
	skip "no Debian base in $CACHE/image*/ to install the packages into (made by the image tests, tests/vm/firstboot-vm.sh)"
say "done"
