#!/bin/bash
# build-rpms.sh OUT_DIR [SRC_DIR]: seedbed's RPM packages from seedbed.spec,
# built with "rpmbuild -bb --nodeps" (the build dependencies are Fedora's
# names, which a Debian machine cannot check) from a tarball of a clean
# copy of SRC_DIR (by default the tree this script is in), into OUT_DIR:
#   seedbed-agent-VERSION.ARCH.rpm  seedbed-agent-dracut-VERSION.noarch.rpm
#   seedbed-device-VERSION.ARCH.rpm
# (no debuginfo packages).  Built once per state of the source tree and
# cached, as build-debs.sh does; %check (the unit tests) is skipped when
# DEB_BUILD_OPTIONS has nocheck.  Prints how long the build took.
set -euo pipefail
# shellcheck source=tests/pkg/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	pkg_die "usage: build-rpms.sh OUT_DIR [SRC_DIR]"
fi
command -v rpmbuild >/dev/null || pkg_die "rpmbuild is not installed (apt-get install rpm)"
pkg_init "$@"

build_rpms() {
	local src=$1 dest=$2 top version args=()
	top=$(realpath "$src/..")/rpmbuild
	version=$(sed -n 's/^Version:[[:space:]]*//p' "$src/seedbed.spec")
	# (Called where set -e does not hold: every step returns its failure.)
	[ -n "$version" ] || return
	mkdir -p "$top/SOURCES" || return
	mv "$src" "$top/seedbed-$version" || return
	tar -C "$top" -cJf "$top/SOURCES/seedbed-$version.tar.xz" "seedbed-$version" || return
	case " ${DEB_BUILD_OPTIONS:-} " in
	*" nocheck "*) args+=(--nocheck) ;;
	esac
	time pkg_env "$top" rpmbuild -bb --nodeps "${args[@]}" --define "_topdir $top" \
		--define "debug_package %{nil}" "$top/seedbed-$version/seedbed.spec" || return
	find "$top/RPMS" -name '*.rpm' -exec mv -t "$dest/" {} +
}
pkg_cached rpm build_rpms
