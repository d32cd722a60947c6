#!/bin/bash
# seedbed-device restarted by systemd with a file descriptor store
# (FileDescriptorStoreMax=): every connection is in the store while it is
# open, the state beside it, and the next start takes them back from
# LISTEN_FDS/LISTEN_FDNAMES.  systemd's side is played by fdstore.py
# exactly as sd_notify(3) and sd_listen_fds(3) specify it (no systemd is
# PID 1 here).  An EGD client reading without a pause through three
# restarts and a SIGKILL never notices; the metrics go on from where they
# were (after the SIGKILL, from the state written at most a second
# before).
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

DEVICE=${SEEDBED_DEVICE:-$top_builddir/seedbed-device}
command -v python3 >/dev/null || skip "python3 is not installed"
command -v curl >/dev/null || skip "curl is not installed"
"$DEVICE" --version >/dev/null || fail "no device"

exec 7> >(python3 "$top_srcdir/tests/integration/fdstore.py" "$T" "$DEVICE" --egd "unix:$T/egd.sock" \
	--vhost-user "$T/vhost.sock" --metrics "unix:$T/metrics.sock" >"$T/systemd.log" 2>&1)
cleanup() {
	echo stop >&7 2>/dev/null || true
	exec 7>&-
	[ -z "${CLIENT:-}" ] || kill "$CLIENT" 2>/dev/null || true
	[ -z "${FRONT:-}" ] || kill "$FRONT" 2>/dev/null || true
	wait 2>/dev/null || true
	[ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

metric() {
	curl -sf --unix-socket "$T/metrics.sock" http://localhost/metrics | awk -v m="$1" '$1 == m { print $2 }'
}
wait_ready() { # wait_ready N: the Nth start said READY=1
	for _ in $(seq 600); do grep -qx "ready $1" "$T/ready" 2>/dev/null && return 0; sleep 0.05; done
	cat "$T/systemd.log"
	fail "start $1 did not say READY=1"
}
wait_ready 1

python3 "$top_srcdir/tests/integration/egd-reader.py" "$T/egd.sock" "$T/stop" >"$T/client" &
CLIENT=$!
# A vhost-user front-end whose two memory regions are one file, as QEMU's
# RAM split around the PCI hole is: systemd stores that file once.
python3 "$top_srcdir/tests/integration/vhost-hostile.py" "$T/vhost.sock" 1 2 64M >"$T/front" 2>&1 &
FRONT=$!
for _ in $(seq 200); do [ -s "$T/front" ] && break; sleep 0.05; done
[ "$(head -1 "$T/front")" = "accepted 1 refused 0" ] || fail "the front-end: $(cat "$T/front")"
bytes_total() { metric 'seedbed_vm_bytes_total{vm="pid:'"$CLIENT"'",transport="egd"}'; }
for _ in $(seq 100); do [ -n "$(bytes_total)" ] && break; sleep 0.05; done

for round in 2 3 4; do
	sleep 0.3
	before=$(bytes_total)
	echo restart >&7
	wait_ready "$round"
	after=$(more_than "$before")
	echo "restart $((round - 1)): served $before -> $after bytes"
	if [ -z "$after" ] || [ "$after" -le "$before" ]; then
		fail "restart $((round - 1)): the metrics did not go on ($before -> '$after')"
	fi
done
# A crash: SIGKILL, and systemd's Restart= starts it again with what the
# store holds.  The state is the one written while it served.
# The counters written a second before are the floor.
early=$(bytes_total)
sleep 1.2
before=$(bytes_total)
echo kill >&7
wait_ready 5
# Read at once: what the new instance took up, before it served much.
restored=$(bytes_total)
after=$(more_than "$restored")
echo "SIGKILL: served $early (1.2 s before) / $before -> $restored taken up -> $after bytes"
if [ -z "$restored" ] || [ "$restored" -lt "$early" ]; then
	fail "SIGKILL: the metrics went back further than a second ($early -> '$restored')"
fi
[ -n "$after" ] || fail "SIGKILL: the EGD client was not served again"
[ "$(metric 'seedbed_connections_total{transport="egd"}')" = 1 ] || fail "the connection was counted again"
[ "$(grep -c "Took over 2 of 2 connections" "$T/systemd.log")" = 3 ] ||
	{ cat "$T/systemd.log"; fail "not both connections taken up at each restart"; }
if ! grep -q "Took up 1 of 1 vhost-user devices" "$T/systemd.log" ||
	! grep -q "Took up 1 EGD connections from their sockets" "$T/systemd.log"; then
	cat "$T/systemd.log"
	fail "not both connections taken up after the SIGKILL"
fi
kill -USR1 "$FRONT"
for _ in $(seq 200); do grep -q '^alive' "$T/front" && break; sleep 0.05; done
[ "$(grep '^alive' "$T/front")" = "alive 1" ] || fail "the vhost-user front-end lost its device: $(cat "$T/front")"

touch "$T/stop"
wait "$CLIENT" || fail "the client failed: $(cat "$T/client")"
CLIENT=
echo "EGD client: $(cat "$T/client")"
longest=$(awk '{ print $4 }' "$T/client")
awk -v l="$longest" 'BEGIN { exit !(l < 2) }' || fail "the client waited $longest s for an answer"
