#!/bin/bash
# The shipped shell scripts are shellcheck-clean and the man pages render
# without a single groff warning.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

command -v shellcheck >/dev/null || skip "shellcheck is not installed"
command -v groff >/dev/null || skip "groff is not installed"

cd "$top_srcdir"
mapfile -t scripts < <(grep -rlE '^#!/bin/(ba)?sh' tools tests .ci initramfs debian 2>/dev/null | sort)
[ ${#scripts[@]} -gt 0 ] || fail "no shell scripts found"
shellcheck -x "${scripts[@]}" || fail "shellcheck"

for page in man/*.[0-9]; do
	groff -man -Tutf8 -ww -z "$page" 2>"$T/groff" || fail "groff failed on $page"
	[ ! -s "$T/groff" ] || { cat "$T/groff"; fail "groff warnings in $page"; }
done

# The guest's units as installed, checked by systemd itself, with the
# agent's path pointed at this build (nothing is installed here).
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$T/units"
	agent=${SEEDBED_AGENT:-$top_builddir/seedbed-agent}
	for u in "$top_builddir/units/seedbed-seed.service" "$top_builddir/units/seedbed-firstboot.service" \
		"$top_builddir/units/seedbed-console.service" \
		"$top_srcdir/initramfs/dracut/90seedbed/seedbed-initrd-seed.service"; do
		sed -E "s|/[^ ']*/seedbed-agent|$agent|g" "$u" >"$T/units/$(basename "$u")"
	done
	(cd "$T/units" && systemd-analyze verify --man=no ./*.service) >"$T/verify" 2>&1 ||
		{ cat "$T/verify"; fail "systemd-analyze rejects the guest units"; }
	if grep -v -e "ssh.*\.service" -e "sshd-keygen" "$T/verify" | grep -q .; then
		cat "$T/verify"
		fail "systemd-analyze warns about the guest units"
	fi
fi
