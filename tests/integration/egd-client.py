#!/usr/bin/env python3
"""A scripted EGD client for the device's integration tests.

egd-client.py SOCKET COMMAND...: connects to a unix (path) or TCP
(HOST:PORT) socket and runs each COMMAND, printing one line per answer:
  level            0x00 -> "level BITS"
  read N           0x02 N -> "read N HEX" (blocking read, exactly N bytes)
  nonblock N       0x01 N -> "nonblock M"
  pid              0x04 -> "pid PID"
  write N BITS     0x03 ... -> no answer
  garbage          0x07 -> "closed" once the device hangs up
"""
import socket
import struct
import sys


def connect(addr):
    if addr.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(addr)
    else:
        host, port = addr.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    s.settimeout(10)
    return s


def recv_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError("the device closed the connection")
        data += chunk
    return data


def main():
    s = connect(sys.argv[1])
    args = sys.argv[2:]
    # "-name VM" anywhere: ignored here, but the device reads it from our
    # command line, as it reads QEMU's, to name us.
    while "-name" in args:
        i = args.index("-name")
        del args[i:i + 2]
    i = 0
    while i < len(args):
        cmd = args[i]
        i += 1
        if cmd == "level":
            s.sendall(b"\x00")
            print("level", struct.unpack(">I", recv_exactly(s, 4))[0])
        elif cmd == "read":
            n = int(args[i])
            i += 1
            s.sendall(bytes([0x02, n]))
            print("read", n, recv_exactly(s, n).hex())
        elif cmd == "nonblock":
            n = int(args[i])
            i += 1
            s.sendall(bytes([0x01, n]))
            m = recv_exactly(s, 1)[0]
            recv_exactly(s, m)
            print("nonblock", m)
        elif cmd == "pid":
            s.sendall(b"\x04")
            m = recv_exactly(s, 1)[0]
            print("pid", recv_exactly(s, m).decode())
        elif cmd == "write":
            n, bits = int(args[i]), int(args[i + 1])
            i += 2
            s.sendall(bytes([0x03]) + struct.pack(">H", bits) + bytes([n]) + b"\x55" * n)
        elif cmd == "garbage":
            s.sendall(b"\x07")
            try:
                closed = s.recv(1) == b""
            except ConnectionResetError:
                closed = True
            print("closed" if closed else "open")
        else:
            raise SystemExit("unknown command " + cmd)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
