#!/bin/bash
# build-debs.sh OUT_DIR [SRC_DIR]: seedbed's Debian packages, built from a
# clean copy of SRC_DIR (by default the tree this script is in) with
# "dpkg-buildpackage -us -uc -b", as a build daemon would, into OUT_DIR:
#   seedbed-agent_VERSION_ARCH.deb  seedbed-agent-dracut_VERSION_all.deb
#   seedbed-device_VERSION_ARCH.deb
# (and nothing else ending in .deb).  Built once per state of the source
# tree and cached (see tests/pkg/lib.sh); safe to call from parallel tests.
# DEB_BUILD_OPTIONS is passed on (nocheck skips the unit tests); debug
# symbol packages are not made.  Never writes into SRC_DIR.  Prints how
# long the build took; the build's log is in the cache, and its last lines
# on stderr when it fails.
set -euo pipefail
# shellcheck source=tests/pkg/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	pkg_die "usage: build-debs.sh OUT_DIR [SRC_DIR]"
fi
for cmd in dpkg-buildpackage dh; do
	command -v "$cmd" >/dev/null || pkg_die "$cmd is not installed (apt-get install dpkg-dev debhelper)"
done
pkg_init "$@"

build_debs() {
	local src=$1 dest=$2 opts
	opts="noddebs parallel=$(nproc)"
	case " ${DEB_BUILD_OPTIONS:-} " in
	*" nocheck "*) opts+=" nocheck" ;;
	esac
	echo "DEB_BUILD_OPTIONS=$opts"
	# (Called where set -e does not hold: every step returns its failure.)
	(cd "$src" && time pkg_env "$PWD/.." DEB_BUILD_OPTIONS="$opts" dpkg-buildpackage -us -uc -b) || return
	mv "$src"/../*.deb "$src"/../*.changes "$src"/../*.buildinfo "$dest/"
}
pkg_cached deb build_debs
