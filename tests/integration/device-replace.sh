#!/bin/bash
# seedbed-device --replace on this machine: an EGD client reads without
# a pause while the device is replaced three times; it never notices
# (its longest wait is printed), every old instance exits 0, the
# metrics go on from where they were, and the last instance removes the
# sockets when it stops.  A successor that fails leaves the running
# instance serving; --replace with nothing running starts fresh.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

DEVICE=${SEEDBED_DEVICE:-$top_builddir/seedbed-device}
command -v python3 >/dev/null || skip "python3 is not installed"
command -v curl >/dev/null || skip "curl is not installed"

PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	[ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

ARGS=(--egd "unix:$T/egd.sock" --metrics "unix:$T/metrics.sock" --control "$T/control.sock")
metric() {
	curl -sf --unix-socket "$T/metrics.sock" http://localhost/metrics | awk -v m="$1" '$1 == m { print $2 }'
}

# Nothing runs: --replace starts fresh.
"$DEVICE" "${ARGS[@]}" --replace >"$T/d0.log" 2>&1 &
pid=$!
PIDS+=("$pid")
for _ in $(seq 100); do [ -S "$T/control.sock" ] && break; sleep 0.05; done
[ -S "$T/control.sock" ] || { cat "$T/d0.log"; fail "the device did not start"; }
expect_in "$T/d0.log" "No instance listens on '$T/control.sock'; starting fresh."

python3 "$top_srcdir/tests/integration/egd-reader.py" "$T/egd.sock" "$T/stop" >"$T/client" &
CLIENT=$!
PIDS+=("$CLIENT")

bytes_total() { metric 'seedbed_vm_bytes_total{vm="pid:'"$CLIENT"'",transport="egd"}'; }
for _ in $(seq 100); do [ -n "$(bytes_total)" ] && break; sleep 0.05; done
for round in 1 2 3; do
	sleep 0.3
	before=$(bytes_total)
	"$DEVICE" "${ARGS[@]}" --replace >"$T/d$round.log" 2>&1 &
	new=$!
	PIDS+=("$new")
	wait "$pid" || fail "round $round: the replaced instance exited $?"
	expect_in "$T/d$((round - 1)).log" "serves now; exiting."
	expect_in "$T/d$round.log" "Took over 1 of 1 connections."
	pid=$new
	after=$(more_than "$before")
	if [ -z "$after" ] || [ "$after" -le "$before" ]; then
		fail "round $round: served bytes went from $before to '$after'"
	fi
done
[ "$(metric 'seedbed_connections_total{transport="egd"}')" = 1 ] || fail "the connection was counted again"

# A successor that asks and then goes away: the instance serves on.
python3 - "$T/control.sock" <<'PY' || fail "the fake successor"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.send(b"HANDOVER 2")
s.recv(64)
s.close()
PY
for _ in $(seq 100); do grep -q "did not take over" "$T/d3.log" && break; sleep 0.05; done
expect_in "$T/d3.log" "did not take over"
kill -0 "$pid" || fail "the instance died when its successor failed"
# ask_handover VERSION: a successor that asks for state VERSION and
# prints the answer ("closed" for none).
ask_handover() {
	python3 - "$T/control.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.send(b"HANDOVER " + sys.argv[2].encode())
print(s.recv(256).decode() or "closed")
PY
}
# A successor that reads state version 1 only is refused: it would not
# know that the EGD requests in the state are still in their sockets,
# and answer them twice.
ask_handover 1 >"$T/refused-v1" || fail "the version 1 successor"
expect_in "$T/refused-v1" "REFUSED this instance writes state version 2"
kill -0 "$pid" || fail "the instance died when it refused a successor"
# Nonsense on the control socket (version 0 does not exist) is ignored.
ask_handover 0 >"$T/refused" || fail "the old successor"
expect_in "$T/refused" "closed"
expect_in "$T/d3.log" "A handover request on the control socket was not one, ignoring"
before=$(bytes_total)
[ "$(more_than "$before")" -gt "$before" ] || fail "the client was not served after the failed handovers"

# A successor that takes everything up and then fails (here: a metrics
# address it cannot bind) must leave the running instance's sockets and
# connections as they were: it serves on, reachable.
run 1 "$DEVICE" "${ARGS[@]/unix:$T\/metrics.sock/unix:$T/nowhere/metrics.sock}" --replace
expect_in "$T/err" "Cannot listen on 'unix:$T/nowhere/metrics.sock'"
for s in egd.sock metrics.sock control.sock; do
	[ -S "$T/$s" ] || fail "a failed successor removed $s"
done
run 0 python3 "$top_srcdir/tests/integration/egd-client.py" "$T/egd.sock" read 16
kill -0 "$pid" || fail "the instance died when its successor failed"

touch "$T/stop"
wait "$CLIENT" || fail "the client failed: $(cat "$T/client")"
echo "EGD client: $(cat "$T/client")"
longest=$(awk '{ print $4 }' "$T/client")
awk -v l="$longest" 'BEGIN { exit !(l < 2) }' || fail "the client waited $longest s for an answer"

kill -TERM "$pid"
wait "$pid" || fail "the last instance exited $? on SIGTERM"
for s in egd.sock metrics.sock control.sock; do
	[ ! -e "$T/$s" ] || fail "$s was left behind"
done

# Throttled clients with requests queued across three handovers: each
# gets exactly the bytes it asked for, no answer twice (the old instance
# serves nothing once it handed over), and its stream stays in step (a
# GET_PID answer at the end parses).
"$DEVICE" "${ARGS[@]}" --rate 32000/1s --burst 2048 >"$T/t0.log" 2>&1 &
pid=$!
PIDS+=("$pid")
for _ in $(seq 100); do [ -S "$T/control.sock" ] && break; sleep 0.05; done
python3 - "$T/egd.sock" >"$T/throttled" <<'PY' &
import socket, sys, threading
path, results = sys.argv[1], []
def client():
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(60)
    for _ in range(20):
        s.sendall(b"\x02\x40")
        data = b""
        while len(data) < 64:
            chunk = s.recv(64 - len(data))
            assert chunk, "closed"
            data += chunk
    s.sendall(b"\x04")
    n = s.recv(1)[0]
    pid = b""
    while len(pid) < n:
        pid += s.recv(n - len(pid))
    results.append(pid.isdigit() and n < 12)
threads = [threading.Thread(target=client) for _ in range(50)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("in step %d of 50" % sum(results))
PY
THROTTLED=$!
for round in 1 2 3; do
	sleep 0.4
	"$DEVICE" "${ARGS[@]}" --rate 32000/1s --burst 2048 --replace >"$T/t$round.log" 2>&1 &
	new=$!
	PIDS+=("$new")
	wait "$pid" || fail "throttled round $round: the replaced instance exited $?"
	pid=$new
done
wait "$THROTTLED" || fail "the throttled clients failed"
[ "$(cat "$T/throttled")" = "in step 50 of 50" ] || fail "throttled clients: $(cat "$T/throttled")"
kill -TERM "$pid"
wait "$pid" || fail "the last instance exited $?"
