#!/bin/bash
# Sourced by the VM tests that drive QEMU through QMP: $T/NAME.qmp.

# qmp NAME COMMAND [ARGUMENTS-JSON]: the command's "return", as JSON; a
# QMP error fails with its description.  A wedged QEMU fails the call
# after 60 s instead of hanging the test.
qmp() {
	python3 - "$T/$1.qmp" "$2" "${3:-{\}}" <<'PY'
import json, socket, sys, time
for _ in range(200):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        break
    except OSError:
        time.sleep(0.05)
s.settimeout(60)
f = s.makefile("rw")
f.readline()
for cmd, args in (("qmp_capabilities", {}), (sys.argv[2], json.loads(sys.argv[3]))):
    f.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            break
    if "error" in r:
        sys.exit("%s: %s" % (cmd, r["error"]["desc"]))
print(json.dumps(r["return"]))
PY
}

# qmp_field NAME COMMAND FIELD: one member of the command's "return".
qmp_field() {
	qmp "$1" "$2" | python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], "none"))' "$3"
}
