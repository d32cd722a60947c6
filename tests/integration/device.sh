#!/bin/bash
# seedbed-device on this machine: its command line and configuration
# errors, the whole EGD protocol over unix and TCP sockets, a client that
# sends garbage losing only its own connection, metrics that promtool
# accepts, a silent device source that stalls no read, socket activation,
# a clean exit that removes its sockets, and the units (systemd-analyze
# verify) with the group their hwrng source reads /dev/hwrng as.
# shellcheck source=tests/integration/lib.sh
. "${top_srcdir:?}/tests/integration/lib.sh"

DEVICE=${SEEDBED_DEVICE:-$top_builddir/seedbed-device}
CLIENT=(python3 "$top_srcdir/tests/integration/egd-client.py")
command -v python3 >/dev/null || skip "python3 is not installed"
command -v curl >/dev/null || skip "curl is not installed"

run 0 "$DEVICE" --help
expect_in "$T/out" "--egd=ADDR"
run 0 "$DEVICE" --version
run 0 "$DEVICE" --print-capabilities
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["type"] == "rng"' "$T/out" ||
	fail "--print-capabilities is not the JSON QEMU expects"
# The installed descriptor names the binary QEMU and libvirt should run.
desc=$top_builddir/device/50-seedbed-device.json
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["type"] == "rng" and d["binary"].endswith("/seedbed-device")' "$desc" ||
	fail "the vhost-user descriptor '$desc' is not valid"
run 2 "$DEVICE" --egd tcp:nowhere
expect_in "$T/err" "Invalid address 'tcp:nowhere'"
run 2 "$DEVICE" --vhost-user tcp:127.0.0.1:5000
expect_in "$T/err" "vhost-user needs a unix socket"
run 2 "$DEVICE" --rate lots
run 2 "$DEVICE" --source rdrand
run 2 "$DEVICE" --fd 999
run 2 "$DEVICE" stray

# Configuration errors: FILE:LINE:COL, status 3, nothing opened.
printf 'listen:\n  egd: [unix:%s/x.sock]\nrate:\n  vm-bytes: lots\n' "$T" >"$T/bad.yaml"
run 3 "$DEVICE" --config "$T/bad.yaml"
expect_in "$T/err" "$T/bad.yaml:4:13: 'rate.vm-bytes' must be a whole number, not 'lots'"
[ ! -e "$T/x.sock" ] || fail "a socket was created despite the bad configuration"
printf 'listen:\n  egd: unix:/x\n' >"$T/bad.yaml"
run 3 "$DEVICE" --config "$T/bad.yaml"
expect_in "$T/err" "$T/bad.yaml:2:8: 'listen.egd' must be a list such as [a, b], not a single value"
printf 'listen:\n  socket-mode: 0999\n' >"$T/bad.yaml"
run 3 "$DEVICE" --config "$T/bad.yaml"
expect_in "$T/err" "'listen.socket-mode' must be an octal file mode such as 0660, not '0999'"
printf 'listen:\n  egd: [unix:/tmp/ok.sock, tcp:localhost]\n' >"$T/bad.yaml"
run 3 "$DEVICE" --config "$T/bad.yaml"
expect_in "$T/err" "$T/bad.yaml:2:28: 'listen.egd' is invalid: 'tcp:localhost': expected tcp:HOST:PORT"
printf 'listen:\n  vhost-user: [tcp:127.0.0.1:5000]\n' >"$T/bad.yaml"
run 3 "$DEVICE" --config "$T/bad.yaml"
expect_in "$T/err" "$T/bad.yaml:2:16: 'listen.vhost-user' is invalid: 'tcp:127.0.0.1:5000': vhost-user needs a unix socket"
printf 'listen:\n  socket-group: no-such-group-here\n' >"$T/bad.yaml"
run 3 "$DEVICE" --config "$T/bad.yaml"
expect_in "$T/err" "$T/bad.yaml:2:17: 'listen.socket-group' is invalid: 'no-such-group-here': no such group on this host"
run 1 "$DEVICE" --config /dev/null
expect_in "$T/err" "Nothing to serve"

# A running device: EGD on unix and TCP, metrics on TCP.
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
egd_port=$(port)
metrics_port=$(port)
printf 'listen:\n  egd: [unix:%s/egd.sock, tcp:127.0.0.1:%s]\n  metrics: tcp:127.0.0.1:%s\n  socket-mode: "0600"\n' \
	"$T" "$egd_port" "$metrics_port" >"$T/device.yaml"
"$DEVICE" --config "$T/device.yaml" >"$T/device.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; [ -n "${SEEDBED_KEEP_TMP:-}" ] || rm -rf "$T"' EXIT
for _ in $(seq 100); do [ -S "$T/egd.sock" ] && break; sleep 0.05; done
[ -S "$T/egd.sock" ] || { cat "$T/device.log"; fail "the device did not start"; }
[ "$(stat -c %a "$T/egd.sock")" = 600 ] || fail "socket mode $(stat -c %a "$T/egd.sock"), configured 0600"

run 0 "${CLIENT[@]}" "$T/egd.sock" level pid read 64 nonblock 32 read 255 write 16 64 read 0 read 1
expect_in "$T/out" "pid $pid"
grep -qE '^level [1-9][0-9]*$' "$T/out" || fail "level: $(grep level "$T/out")"
grep -qE '^read 64 [0-9a-f]{128}$' "$T/out" || fail "read 64 did not return 64 bytes"
grep -qE '^read 255 [0-9a-f]{510}$' "$T/out" || fail "read 255 did not return 255 bytes"
expect_in "$T/out" "nonblock 32"
# A read of nothing is answered by nothing, and the next one still is.
grep -qE '^read 1 [0-9a-f]{2}$' "$T/out" || fail "the read after a zero-length read was not answered"
a=$(awk '$2 == 64 { print $3 }' "$T/out")
run 0 "${CLIENT[@]}" "127.0.0.1:$egd_port" read 64
b=$(awk '{ print $3 }' "$T/out")
[ "$a" != "$b" ] || fail "two reads returned the same bytes"

# Garbage closes that connection only; another one, opened before, still works.
python3 - "$T/egd.sock" <<'PY' || fail "a garbage-sending client disturbed another"
import socket, sys
good = socket.socket(socket.AF_UNIX); good.connect(sys.argv[1]); good.settimeout(10)
bad = socket.socket(socket.AF_UNIX); bad.connect(sys.argv[1]); bad.settimeout(10)
bad.sendall(b"\x09garbage")
assert bad.recv(1) == b"", "the garbage connection stayed open"
good.sendall(b"\x02\x10")
data = b""
while len(data) < 16:
    data += good.recv(16 - len(data))
PY
expect_in "$T/device.log" "unknown command byte"

curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$T/metrics" || fail "metrics not served"
if command -v promtool >/dev/null; then
	promtool check metrics <"$T/metrics" >"$T/promtool" 2>&1 || { cat "$T/promtool"; fail "promtool rejects the metrics"; }
elif [ -n "${SEEDBED_TESTS_STRICT:-}" ]; then
	fail "promtool is not installed"
fi
grep -qE '^seedbed_vm_bytes_total\{vm="pid:[0-9]+",transport="egd"\} [0-9]+$' "$T/metrics" || fail "no per-VM bytes"
grep -qE '^seedbed_vm_bytes_total\{vm="tcp:127.0.0.1",transport="egd"\} 64$' "$T/metrics" || fail "TCP client not counted"
grep -qE '^seedbed_protocol_errors_total\{transport="egd"\} 1$' "$T/metrics" || fail "protocol error not counted"
grep -qE '^seedbed_egd_received_bytes_total 16$' "$T/metrics" || fail "written bytes not counted"
grep -qE '^seedbed_source_healthy\{source="getrandom"\} 1$' "$T/metrics" || fail "source not healthy"
curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$metrics_port/other" | grep -q 404 || fail "unknown path not 404"

# A source path with a quote in it stays a valid label in the metrics.
head -c 65536 /dev/urandom >"$T/we\"ird"
mport=$(port)
"$DEVICE" --egd "unix:$T/q.sock" --source "device:$T/we\"ird" --metrics "tcp:127.0.0.1:$mport" >"$T/q.log" 2>&1 &
q=$!
for _ in $(seq 100); do [ -S "$T/q.sock" ] && break; sleep 0.05; done
curl -sf "http://127.0.0.1:$mport/metrics" >"$T/qmetrics" || fail "metrics not served (quoted source)"
kill -TERM "$q"
wait "$q" || true
grep -qF 'source="'"$T"'/we\"ird"' "$T/qmetrics" || fail "the quote in the source name is not escaped"
if command -v promtool >/dev/null; then
	promtool check metrics <"$T/qmetrics" >"$T/promtool" 2>&1 || { cat "$T/promtool"; fail "promtool rejects an escaped label"; }
fi

# A device source with nothing to give (an hwrng whose host stopped
# answering: a FIFO whose writer writes nothing) stalls nobody: its thread
# waits in read() and the next source serves.  Once it delivers, it passes
# its startup tests and serves first again.
mkfifo "$T/slow"
exec 7<>"$T/slow"
mport=$(port)
"$DEVICE" --egd "unix:$T/slow-src.sock" --source "device:$T/slow" --source getrandom \
	--rate 1000000/1s --burst 1000000 --host-rate 1000000/1s --host-burst 1000000 \
	--metrics "tcp:127.0.0.1:$mport" >"$T/slow-src.log" 2>&1 &
q=$!
for _ in $(seq 100); do [ -S "$T/slow-src.sock" ] && break; sleep 0.05; done
reads=()
for _ in $(seq 24); do reads+=(read 255); done
start=$SECONDS
run 0 timeout 10 "${CLIENT[@]}" "$T/slow-src.sock" "${reads[@]}"
[ $((SECONDS - start)) -le 3 ] || fail "a silent device source held up reads for $((SECONDS - start)) s"
[ "$(grep -c '^read 255 ' "$T/out")" -eq 24 ] || fail "reads with a silent device source went unanswered"
head -c 65536 /dev/urandom >&7
sleep 0.5
run 0 timeout 10 "${CLIENT[@]}" "$T/slow-src.sock" "${reads[@]}"
curl -sf "http://127.0.0.1:$mport/metrics" >"$T/slow-metrics" || fail "metrics not served (slow source)"
kill -TERM "$q"
wait "$q" || true
exec 7>&-
grep -qE '^seedbed_source_bytes_total\{source="'"$T"'/slow"\} [1-9][0-9]*$' "$T/slow-metrics" ||
	{ cat "$T/slow-src.log" "$T/slow-metrics"; fail "the device source served nothing once it delivered"; }
expect_in "$T/slow-src.log" "Entropy source '$T/slow' passed its startup tests and is in service."

# More than the queue's 64 pipelined requests in one write all get their
# answers, and a peer that shuts down its side still gets what it asked.
python3 - "$T/egd.sock" <<'PY' || fail "pipelined requests or a half-closed peer went unanswered"
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(10)
s.sendall(b"\x02\x01" * 100)
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
assert len(data) == 100, "got %d of 100 answers" % len(data)
PY

# The host budget is shared between VMs, not connections: a VM with eight
# connections gets no more than a VM with one, even when it gives each
# connection another -name (a name is a label, not an identity: budgets
# follow the peer's cgroup).  Each "VM" runs in a cgroup of its own.
CG=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
if [ -z "$CG" ] || ! mkdir "$CG/seedbed-$$-a" "$CG/seedbed-$$-b" 2>/dev/null; then
	skip "no writable cgroup2 hierarchy to put test VMs in"
fi
"$DEVICE" --egd "unix:$T/fair.sock" --host-rate 4096/1s --host-burst 256 >"$T/fair.log" 2>&1 &
fair=$!
for _ in $(seq 100); do [ -S "$T/fair.sock" ] && break; sleep 0.05; done
python3 - "$T/fair.sock" "$top_srcdir/tests/integration/egd-client.py" "$CG/seedbed-$$-a" "$CG/seedbed-$$-b" <<'PY' || { rmdir "$CG/seedbed-$$-a" "$CG/seedbed-$$-b"; fail "one VM's eight connections took more than its share"; }
import os, subprocess, sys, time
sock, client, cg_a, cg_b = sys.argv[1:5]
# Each client asks for 64 bytes 200 times, from its VM's cgroup.
def start(name, cgroup):
    def enter():
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    return subprocess.Popen(["python3", client, sock] + ["read", "64"] * 200 + ["-name", name],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=enter)
many = [start("many%d" % i, cg_a) for i in range(8)]
one = start("one", cg_b)
time.sleep(3)
for p in many + [one]:
    p.kill()
def got(p):
    return sum(int(line.split()[1]) for line in p.stdout.read().splitlines() if line.startswith("read"))
m, o = sum(got(p) for p in many), got(one)
for p in many + [one]:
    p.wait()
print("eight connections with eight names: %d bytes, one connection: %d bytes" % (m, o))
assert o > 0 and 0.6 < m / o < 1.6, "shares %d vs %d" % (m, o)
PY
rmdir "$CG/seedbed-$$-a" "$CG/seedbed-$$-b" || fail "the test's cgroups are still in use"
expect_in "$T/fair.log" "budget 'cgroup:/seedbed-$$-a'"
kill -TERM "$fair"
wait "$fair" || true

# A throttled VM waits without costing the device CPU: one client asks
# for 1 KiB at 64 B/s for two seconds; the daemon must stay near idle.
"$DEVICE" --egd "unix:$T/slow.sock" --rate 64/1s --burst 64 >"$T/slow.log" 2>&1 &
slow=$!
for _ in $(seq 100); do [ -S "$T/slow.sock" ] && break; sleep 0.05; done
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
before=$(cpu "$slow")
timeout 2 "${CLIENT[@]}" "$T/slow.sock" read 255 read 255 read 255 read 255 >/dev/null 2>&1 || true
after=$(cpu "$slow")
kill -HUP "$slow"
sleep 0.2
kill -0 "$slow" 2>/dev/null || fail "SIGHUP killed the device"
kill -TERM "$slow"
wait "$slow" || true
ticks=$((after - before))
[ "$ticks" -le 20 ] || fail "a throttled client cost the device $ticks clock ticks of CPU in 2 s"
expect_in "$T/slow.log" "Received SIGHUP: nothing to reload, ignoring."

kill -TERM "$pid"
wait "$pid" || fail "the device exited $? on SIGTERM"
[ ! -e "$T/egd.sock" ] || fail "the EGD socket was left behind"
expect_in "$T/device.log" "Received signal 15, exiting."

# Socket activation: systemd's socket is used, matched by its path.
if command -v systemd-socket-activate >/dev/null; then
	systemd-socket-activate -l "$T/act.sock" "$DEVICE" --egd "unix:$T/act.sock" >"$T/act.log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do [ -S "$T/act.sock" ] && break; sleep 0.05; done
	run 0 "${CLIENT[@]}" "$T/act.sock" read 32
	grep -qE '^read 32 [0-9a-f]{64}$' "$T/out" || fail "socket-activated read"
	expect_in "$T/act.log" "Serving egd on an inherited socket."
	kill -TERM "$pid"
	wait "$pid" || true
elif [ -n "${SEEDBED_TESTS_STRICT:-}" ]; then
	fail "systemd-socket-activate is not installed"
fi

# The units as installed, checked by systemd itself (with ExecStart
# pointing at this build's binary, since none is installed).
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$T/units"
	cp "$top_srcdir/units/seedbed-device.socket" "$T/units/"
	sed "s|^ExecStart=[^ ]*|ExecStart=$DEVICE|" "$top_builddir/units/seedbed-device.service" >"$T/units/seedbed-device.service"
	(cd "$T/units" && systemd-analyze verify --man=no seedbed-device.socket seedbed-device.service) >"$T/verify" 2>&1 ||
		{ cat "$T/verify"; fail "systemd-analyze rejects the units"; }
	[ ! -s "$T/verify" ] || { cat "$T/verify"; fail "systemd-analyze warns about the units"; }
fi
# The hwrng source under the unit's dynamic user: the udev rule gives
# /dev/hwrng to the group the unit joins, and the sysusers.d file makes
# that group (here in a scratch root: systemd-sysusers writes files owned
# by root).
group=$(sed -n 's/^SupplementaryGroups=//p' "$top_builddir/units/seedbed-device.service")
[ "$group" = seedbed-hwrng ] || fail "the unit joins group '$group', not seedbed-hwrng"
grep -qxF "SUBSYSTEM==\"misc\", KERNEL==\"hw_random\", GROUP=\"$group\", MODE=\"0640\"" \
	"$top_srcdir/units/udev/60-seedbed-device.rules" || fail "the udev rule does not give /dev/hwrng to group '$group'"
if command -v systemd-sysusers >/dev/null && [ "$(id -u)" -eq 0 ]; then
	mkdir -p "$T/sysroot/etc"
	systemd-sysusers --root="$T/sysroot" "$top_srcdir/units/sysusers.d/seedbed-device.conf" >"$T/sysusers" 2>&1 ||
		{ cat "$T/sysusers"; fail "systemd-sysusers rejects seedbed-device.conf"; }
	grep -q "^$group:x:[0-9]*:\$" "$T/sysroot/etc/group" || fail "systemd-sysusers made no group '$group'"
elif [ -n "${SEEDBED_TESTS_STRICT:-}" ]; then
	fail "systemd-sysusers is not installed, or this is not root"
fi

# QEMU's back-end convention: started for one front-end on a connected
# --fd, the device serves it and exits when it hangs up.
python3 - "$DEVICE" <<'PY' || fail "--fd with a connected socket"
import os, socket, subprocess, sys
ours, theirs = socket.socketpair()
p = subprocess.Popen([sys.argv[1], "--fd", str(theirs.fileno())], pass_fds=[theirs.fileno()],
                     stderr=subprocess.DEVNULL)
theirs.close()
# VHOST_USER_GET_FEATURES: request 1, flags version 1, size 0
ours.sendall((1).to_bytes(4, "little") + (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
reply = ours.recv(64)
assert len(reply) == 20 and int.from_bytes(reply[4:8], "little") & 0x4, "no GET_FEATURES reply"
ours.close()
assert p.wait(timeout=10) == 0, "the device did not exit when its front-end left"
PY
