#!/bin/bash
# The shipped shell scripts are shellcheck-clean and the man pages render
# without a single groff warning.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

command -v shellcheck >/dev/null || skip "shellcheck is not installed"
command -v groff >/dev/null || skip "groff is not installed"

cd "$top_srcdir"
mapfile -t scripts < <(grep -rlE '^#!/bin/(ba)?sh' tools tests .ci 2>/dev/null | sort)
[ ${#scripts[@]} -gt 0 ] || fail "no shell scripts found"
shellcheck -x "${scripts[@]}" || fail "shellcheck"

for page in man/*.[0-9]; do
	groff -man -Tutf8 -ww -z "$page" 2>"$T/groff" || fail "groff failed on $page"
	[ ! -s "$T/groff" ] || { cat "$T/groff"; fail "groff warnings in $page"; }
done
