#!/bin/bash
# seedbed's packages, as a distribution builds them: the .debs from a
# clean copy of the source with dpkg-buildpackage, and lintian finds no
# error in them; the .rpms from seedbed.spec with rpmbuild; both install
# the same files; and, in a copy of the Debian base of the image tests
# (tests/vm/build-image.sh), "apt-get install ./….deb" enables the guest's
# units and the host's socket and runs the initramfs trigger, and
# "apt-get purge" leaves nothing of seedbed's but the key files.
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

# --- The .debs and lintian. ----------------------------------------------
say "dpkg-buildpackage (tests/pkg/build-debs.sh)"
bash "$top_srcdir/tests/pkg/build-debs.sh" "$T/debs" || fail "building the .debs failed"
for p in seedbed-agent seedbed-agent-dracut seedbed-device; do
	set -- "$T/debs/${p}_"*.deb
	[ -e "$1" ] || fail "no $p .deb"
	[ $# -eq 1 ] || fail "expected one $p .deb, found: $*"
done

say "lintian"
# Errors fail; warnings and notes are shown (each one left is justified in
# debian/README.source).
st=0
# (Its temporary files, which it leaves behind, in $T.)
mkdir "$T/lintian-tmp"
TMPDIR=$T/lintian-tmp lintian --fail-on error "$T"/debs/*.deb >"$T/lintian" 2>&1 || st=$?
grep -v '^running with root privileges' "$T/lintian" || true
[ "$st" -eq 0 ] || fail "lintian reports errors (exit $st)"

# --- The .rpms. ----------------------------------------------------------
say "rpmbuild -bb --nodeps (tests/pkg/build-rpms.sh)"
bash "$top_srcdir/tests/pkg/build-rpms.sh" "$T/rpms" || fail "building the .rpms failed"

# --- The same files in both. ---------------------------------------------
# deb_files FILE, rpm_files FILE: "MODE PATH" of each file and symlink a
# package installs (not directories: a .deb lists every parent, an .rpm
# what it owns), put alike:
#  - units: Debian 12's /lib/systemd/system is /usr/lib/systemd/system (the
#    %{_unitdir} of Fedora and of Debian 13);
#  - man pages are compressed by dh_compress and Fedora's brp-compress, not
#    by Debian's rpm: compared without .gz;
#  - documentation follows each distribution's rules (Debian's copyright
#    and changelog.Debian.gz, rpm's %license and %doc): not compared;
#  - /usr/lib/.build-id (rpm's links to the ELF files) and
#    /usr/share/lintian (Debian's lintian overrides) have no counterpart
#    in the other: not compared.
normalize() {
	sed -E -e 's|^([^ ]+) \./|\1 /|' -e 's| /lib/systemd/system/| /usr/lib/systemd/system/|' \
		-e 's|^([^ ]+ /usr/share/man/.*)\.gz$|\1|' |
		grep -v -E ' /usr/share/(doc|licenses|lintian)/| /usr/lib/\.build-id/' | sort
}
deb_files() {
	dpkg-deb --fsys-tarfile "$1" | tar -tvf - | awk '$1 !~ /^d/ { print $1, $6 }' | normalize
}
rpm_files() {
	rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$1" | awk '$1 !~ /^d/' | normalize
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
# --no-stop-on-upgrade), and the host's service is never started or
# restarted by its package (socket-activated; a restart would stall its
# vhost-user guests).
dpkg-deb --ctrl-tarfile "$T/debs/seedbed-agent_"*.deb | tar -xOf - --wildcards './*inst' './*rm' >"$T/agent.scripts"
! grep -n 'deb-systemd-invoke' "$T/agent.scripts" || fail "seedbed-agent's maintainer scripts start or stop units"
dpkg-deb --ctrl-tarfile "$T/debs/seedbed-device_"*.deb | tar -xOf - ./postinst >"$T/device.postinst"
! grep -n -E 'deb-systemd-invoke .*seedbed-device\.service' "$T/device.postinst" ||
	fail "seedbed-device's postinst starts or restarts seedbed-device.service"
expect_in "$T/device.postinst" "deb-systemd-invoke start 'seedbed-device.socket'"

# --- Install and purge in the image tests' Debian bases. -----------------
[ "$(id -u)" -eq 0 ] || skip "install and purge need root (chroot, mount)"
command -v unshare >/dev/null || skip "unshare is not installed"
bases=0
for done in "$CACHE"/image*/root-*/.done; do
	[ -e "$done" ] || continue
	base=${done%/.done}
	bases=$((bases + 1))
	say "apt-get install, apt-get purge in a copy of ${base#"$CACHE"/}"
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
