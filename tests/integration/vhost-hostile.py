#!/usr/bin/env python3
"""A vhost-user front-end that asks for as much as it can, for the device's
caps tests.

vhost-hostile.py SOCKET CONNECTIONS REGIONS REGION_SIZE: opens CONNECTIONS
connections one after the other and keeps them open.  On each it offers a
memory table of REGIONS regions of REGION_SIZE bytes (suffix K, M, G or
T), all from one sparse memfd (nothing is ever touched, so nothing is
allocated), then asks GET_FEATURES: an answer means the device kept the
connection, end of file means it refused it (at accept, or by breaking the
device over the table).  With REGIONS 0 it only asks GET_FEATURES.
Prints "accepted N refused M" and then holds what it has until killed;
on SIGUSR1 it asks GET_FEATURES again on every connection it holds and
prints "alive N": how many the device still serves.
"""
import os
import signal
import socket
import struct
import sys
import time

VHOST_USER_GET_FEATURES = 1
VHOST_USER_SET_MEM_TABLE = 5
VERSION = 0x1


def size(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)


def kept(s):
    """GET_FEATURES answered: the connection is still served."""
    s.settimeout(10)
    try:
        s.sendall(struct.pack("<III", VHOST_USER_GET_FEATURES, VERSION, 0))
        reply = s.recv(20)
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        return False
    return len(reply) == 20


def main():
    path, connections, regions, region_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), size(sys.argv[4])
    mem = os.memfd_create("hostile-guest-ram")
    os.ftruncate(mem, max(regions, 1) * region_size)
    held, accepted, refused = [], 0, 0
    for _ in range(connections):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            if regions:
                payload = struct.pack("<II", regions, 0)
                for i in range(regions):
                    # Guest addresses and front-end addresses that never
                    # overlap; offsets into the one file.
                    payload += struct.pack("<QQQQ", i * region_size, region_size, (1 << 46) + i * region_size,
                                           i * region_size)
                header = struct.pack("<III", VHOST_USER_SET_MEM_TABLE, VERSION, len(payload))
                socket.send_fds(s, [header + payload], [mem] * regions)
            ok = kept(s)
        except (ConnectionResetError, BrokenPipeError):
            ok = False
        if ok:
            accepted += 1
            held.append(s)
        else:
            refused += 1
            s.close()
    print("accepted %d refused %d" % (accepted, refused), flush=True)
    signal.signal(signal.SIGUSR1, lambda *_: print("alive %d" % sum(kept(s) for s in held), flush=True))
    while True:
        time.sleep(3600)


main()
