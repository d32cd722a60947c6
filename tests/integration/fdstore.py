#!/usr/bin/env python3
"""Plays systemd's part for seedbed-device's file descriptor store, as
systemd does it (sd_notify(3), sd_listen_fds(3)): the test has no
systemd as PID 1.

fdstore.py STATEDIR COMMAND...: runs COMMAND with NOTIFY_SOCKET set,
keeps every fd it sends with FDSTORE=1 under its FDNAME (dropping those
it names in FDSTOREREMOVE=1), and on each line "restart" on stdin sends
it SIGTERM, waits for it (its exit status must be 0) and starts it again
with the stored fds as systemd passes them: from fd 3 on, LISTEN_FDS,
LISTEN_FDNAMES and LISTEN_PID set to the new process.  "kill" does the
same with SIGKILL.  Writes "pid N" to STATEDIR/pid after each start and
"ready N" to STATEDIR/ready once the new process said READY=1; "stop"
ends it.
"""
import array
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys

statedir, command = sys.argv[1], sys.argv[2:]
notify_path = os.path.join(statedir, "notify.sock")
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.bind(notify_path)
store = {}  # name -> [fd, ...], as systemd keeps them in order
proc = None
ready = 0


libc = ctypes.CDLL(None, use_errno=True)
SYS_kcmp, KCMP_FILE = 312, 0  # x86-64


def same_file(a, b):
    """The same open file, as systemd's same_fd() judges it (kcmp)."""
    pid = os.getpid()
    return libc.syscall(SYS_kcmp, pid, pid, KCMP_FILE, a, b) == 0


def start():
    global proc
    names, fds = [], []
    for name, lst in store.items():
        for fd in lst:
            names.append(name)
            fds.append(fd)

    def child():
        # Move the fds to 3.. in order, as systemd does.
        moved = [os.dup(fd) for fd in fds]
        for i, fd in enumerate(moved):
            os.dup2(fd, 3 + i)
            os.set_inheritable(3 + i, True)
            os.close(fd)
        if fds:
            os.environ["LISTEN_PID"] = str(os.getpid())
            os.environ["LISTEN_FDS"] = str(len(fds))
            os.environ["LISTEN_FDNAMES"] = ":".join(names)

    # The child's environment is set in child(): LISTEN_PID is its own
    # pid, known only after the fork.
    os.environ["NOTIFY_SOCKET"] = notify_path
    # As seedbed-device.service says: this manager keeps a store.
    os.environ["SEEDBED_FDSTORE"] = "1"
    for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(k, None)
    proc = subprocess.Popen(command, preexec_fn=child, close_fds=False)
    with open(os.path.join(statedir, "pid"), "w") as f:
        f.write("pid %d\n" % proc.pid)


def receive():
    global ready
    data, anc, _, _ = notify.recvmsg(4096, socket.CMSG_SPACE(253 * 4))
    fds = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(payload[: len(payload) - len(payload) % a.itemsize])
            fds.extend(a)
    fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
    if fields.get("FDSTORE") == "1":
        for fd in fds:
            # systemd keeps one fd of an open file it has already.
            if any(same_file(fd, kept) for lst in store.values() for kept in lst):
                os.close(fd)
            else:
                store.setdefault(fields.get("FDNAME", "stored"), []).append(fd)
            if fields.get("FDPOLL") != "0":
                sys.exit("FDSTORE=1 without FDPOLL=0: systemd would drop a socket that hangs up")
        fds = []
    if fields.get("FDSTOREREMOVE") == "1":
        for fd in store.pop(fields.get("FDNAME", "stored"), []):
            os.close(fd)
    if fields.get("READY") == "1":
        ready += 1
        with open(os.path.join(statedir, "ready"), "w") as f:
            f.write("ready %d\n" % ready)
    for fd in fds:
        os.close(fd)


start()
while True:
    r, _, _ = select.select([notify, sys.stdin], [], [])
    if notify in r:
        receive()
    if sys.stdin in r:
        line = sys.stdin.readline().strip()
        if line in ("restart", "kill"):
            proc.send_signal(signal.SIGTERM if line == "restart" else signal.SIGKILL)
            # What it sends while it stops still counts.
            while proc.poll() is None:
                r, _, _ = select.select([notify], [], [], 0.05)
                if r:
                    receive()
            while select.select([notify], [], [], 0)[0]:
                receive()
            if line == "restart" and proc.returncode != 0:
                sys.exit("the device exited %d on SIGTERM" % proc.returncode)
            start()
        elif line in ("stop", ""):
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            sys.exit(0)
