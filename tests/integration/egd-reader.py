#!/usr/bin/env python3
"""An EGD client that never pauses, for the restart tests.

egd-reader.py SOCKET STOPFILE: asks the device at SOCKET for 32 bytes
every 10 ms until STOPFILE exists, then prints "reads N longest SECONDS":
how many answers came, and the longest it ever waited for one.  A
connection the device closes fails it.
"""
import os
import socket
import sys
import time

s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(30)
n, longest, last = 0, 0.0, time.monotonic()
while not os.path.exists(sys.argv[2]):
    s.sendall(b"\x02\x20")
    data = b""
    while len(data) < 32:
        chunk = s.recv(32 - len(data))
        assert chunk, "the device closed the connection"
        data += chunk
    now = time.monotonic()
    longest, last, n = max(longest, now - last), now, n + 1
    time.sleep(0.01)
print("reads %d longest %.3f" % (n, longest))
