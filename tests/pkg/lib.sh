#!/bin/bash
# Sourced by build-debs.sh and build-rpms.sh: a clean copy of the source
# tree, a key for its state, and a cache of the packages built from each
# state, so that the test suite and its image tests build them once.
set -euo pipefail

pkg_name=$(basename "$0" .sh)
pkg_t0=$SECONDS
pkg_say() {
	echo "$pkg_name: [$((SECONDS - pkg_t0))s] $*"
}
pkg_die() {
	echo "$pkg_name: $*" >&2
	exit 1
}

# pkg_init OUT_DIR [SRC_DIR]: the source tree (by default the one this
# script is in) and the cache: the test suite's (SEEDBED_TEST_CACHE, or
# test-cache/ in the build tree, as the VM tests find it), else
# OUT_DIR/.cache.
pkg_init() {
	pkg_out=$1
	pkg_src=$(realpath "${2:-$(dirname "${BASH_SOURCE[0]}")/../..}")
	[ -f "$pkg_src/configure.ac" ] || pkg_die "$pkg_src is not a seedbed source tree"
	if [ -n "${SEEDBED_TEST_CACHE:-}" ]; then
		pkg_cache=$SEEDBED_TEST_CACHE/packages
	elif [ -n "${top_builddir:-}" ]; then
		pkg_cache=$top_builddir/test-cache/packages
	else
		pkg_cache=$pkg_out/.cache
	fi
	mkdir -p "$pkg_cache" "$pkg_out"
	pkg_cache=$(realpath "$pkg_cache")
}

# pkg_files: the source files of $pkg_src, NUL-separated paths relative to
# it, sorted.  A git checkout's are the files git tracks and those it
# would track (not ignored), as they are in the work tree; any other tree
# is an unpacked "make dist" tarball, all of whose files are sources.
# Either way without the build and install trees "make distcheck" makes
# inside it, and any other build tree at its top (told by config.status).
pkg_files() {
	local skip=(_build _inst autom4te.cache) d
	for d in "$pkg_src"/*/config.status; do
		[ -e "$d" ] || continue
		d=${d%/config.status}
		skip+=("${d##*/}")
	done
	{
		if command -v git >/dev/null &&
			[ "$(git -C "$pkg_src" rev-parse --show-toplevel 2>/dev/null)" = "$pkg_src" ]; then
			git -C "$pkg_src" ls-files -z --cached --others --exclude-standard
		else
			(cd "$pkg_src" && find . -path ./.git -prune -o -type f -print0) | sed -z 's|^\./||'
		fi
	} | (cd "$pkg_src" && while IFS= read -r -d '' f; do
		# Deleted but not yet staged: not in this state.
		[ -f "$f" ] || continue
		for d in "${skip[@]}"; do
			case $f in "$d"/*) continue 2 ;; esac
		done
		printf '%s\0' "$f"
	done) | sort -z -u
}

# pkg_host: what of the building machine goes into the packages or into
# how they were built: its release (another Debian builds other packages:
# unit directory, dependencies, debhelper's scripts), and whether the unit
# tests ran (DEB_BUILD_OPTIONS=nocheck, which build-debs.sh and
# build-rpms.sh pass on).
pkg_host() {
	local osr=/etc/os-release
	[ -e "$osr" ] || osr=/usr/lib/os-release
	# (A field may be absent: Debian testing has no VERSION_ID.)
	# shellcheck source=/dev/null
	(. "$osr" && printf 'host %s %s %s\n' "${ID:-}" "${VERSION_ID:-}" "${VERSION_CODENAME:-}")
	case " ${DEB_BUILD_OPTIONS:-} " in
	*" nocheck "*) echo "nocheck" ;;
	*) echo "check" ;;
	esac
}

# pkg_cached KIND BUILD_FN: leaves in $pkg_out the packages (*.KIND) built
# from this state of the source tree, calling "BUILD_FN SRC_COPY DEST" in
# a scratch directory (build from the clean copy SRC_COPY, put the
# packages in DEST) only when the cache has none.  The key is the host
# (pkg_host) and every source file's path, mode and contents, so that a
# cache made on another release or with other options is not taken.  One
# build at a time per KIND (flock):
# parallel callers wait for it rather than make their own.  The three
# states used last stay in the cache.
pkg_cached() {
	local kind=$1 build=$2 list key dir work st=0 old
	exec 8>"$pkg_cache/.lock-$kind"
	flock 8
	list=$(mktemp "$pkg_cache/files-$kind.XXXXXX")
	pkg_files >"$list"
	key=$({
		echo "$kind v2"
		pkg_host
		(cd "$pkg_src" && xargs -0 -r stat -c '%A %n' -- <"$list")
		(cd "$pkg_src" && xargs -0 -r sha256sum -- <"$list")
	} | sha256sum | cut -c1-16)
	dir=$pkg_cache/$kind-$key
	if [ -e "$dir/.done" ]; then
		rm -f "$list"
		pkg_say "cached (built from this state of $pkg_src before): $dir"
	else
		rm -rf "$dir" "$dir.tmp"
		mkdir "$dir.tmp"
		work=$(mktemp -d "$pkg_cache/work-$kind.XXXXXX")
		# Traversable by all, as a build tree is: a unit test runs a child
		# as nobody in a fake root inside it (test-sshkeys).
		chmod 0755 "$work"
		mkdir "$work/seedbed"
		tar -C "$pkg_src" --null -T "$list" -cf - | tar -C "$work/seedbed" -xf -
		rm -f "$list"
		pkg_say "building from $pkg_src (key $key, log $dir/build.log)"
		(cd "$work" && "$build" "$work/seedbed" "$dir.tmp") >"$dir.tmp/build.log" 2>&1 || st=$?
		rm -rf "$work"
		if [ "$st" -ne 0 ]; then
			tail -n 40 "$dir.tmp/build.log" >&2
			pkg_die "building the $kind packages failed (exit $st): see $dir.tmp/build.log"
		fi
		touch "$dir.tmp/.done"
		mv "$dir.tmp" "$dir"
		pkg_say "built in $((SECONDS - pkg_t0)) s"
	fi
	touch "$dir"
	find "$pkg_cache" -mindepth 1 -maxdepth 1 -type d -name "$kind-*" -printf '%T@ %p\n' |
		sort -rn | tail -n +4 | while read -r _ old; do
		rm -rf "$old"
	done
	find "$pkg_out" -maxdepth 1 -name "*.$kind" -delete
	cp "$dir"/*."$kind" "$pkg_out/"
	exec 8>&-
}

# pkg_env HOME COMMAND...: COMMAND in the clean environment of a package
# build: no MAKEFLAGS of the make that runs the tests, no test variables.
pkg_env() {
	local home=$1
	shift
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$home" LC_ALL=C.UTF-8 TZ=UTC "$@"
}
