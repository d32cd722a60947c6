#!/usr/bin/env python3
# Writes the binary seed inputs of the fuzz targets whose input is a
# structure (see the comment at the top of each target): the EGD streams,
# a vhost-user front-end's conversations, guest memory with rings.  The
# text seeds (configurations, records, command lines, device specs) are
# files in tests/fuzz/corpus/ as they are.  Run from anywhere:
#   python3 tests/fuzz/seeds.py
# It rewrites the files it owns (named *.bin) and leaves the others.
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name + ".bin"), "wb") as f:
        f.write(data)


# ---- EGD (device/egd.h): the parser's stream, and the session's (a
# first byte for the send size, then the stream).

QEMU = bytes([0x02, 0x40]) * 4
ALL = bytes([0x00, 0x01, 0x10, 0x02, 0x20, 0x03, 0x00, 0x10, 0x02, 0xAA, 0xBB, 0x04])
ZERO_READS = bytes([0x01, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00])
WRITE_FULL = bytes([0x03, 0x07, 0xF8, 0xFF]) + bytes(range(255))
OVERCLAIM = bytes([0x02, 0x08, 0x03, 0x00, 0x11, 0x02, 0xAA, 0xBB])
UNKNOWN = bytes([0x00, 0x04, 0x05, 0x02, 0x10])
PARTIAL = bytes([0x02, 0x10, 0x03, 0x00, 0x08, 0xFF, 0x01, 0x02])

for name, s in [("qemu", QEMU), ("all-commands", ALL), ("zero-reads", ZERO_READS),
                ("write-full", WRITE_FULL), ("overclaim", OVERCLAIM), ("unknown-command", UNKNOWN),
                ("partial-write", PARTIAL)]:
    write("egd", name, s)

write("egd-session", "qemu", bytes([0]) + QEMU)
write("egd-session", "all-commands-bytewise", bytes([1]) + ALL)
write("egd-session", "zero-reads", bytes([3]) + ZERO_READS)
write("egd-session", "write-full", bytes([7]) + WRITE_FULL + QEMU)
write("egd-session", "overclaim", bytes([0]) + QEMU + OVERCLAIM)
write("egd-session", "unknown-command", bytes([2]) + UNKNOWN)
write("egd-session", "partial-write", bytes([0]) + PARTIAL)
# More than the server queues and peeks at once: 200 reads of 255 bytes.
write("egd-session", "backpressure", bytes([0]) + bytes([0x02, 0xFF]) * 200)
write("egd-session", "pids-bytewise", bytes([1]) + bytes([0x04]) * 70)

# ---- vhost-user (fuzz-vhost-user.c): settings, then per message a
# control byte, memfd spec, header and payload.

GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE = 1, 2, 3, 4, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 16, 17, 18
SET_CONFIG, RESET_DEVICE, GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG = 25, 34, 36, 37, 38

F_INDIRECT, F_EVENT_IDX, F_PROTOCOL, F_VERSION_1 = 1 << 28, 1 << 29, 1 << 30, 1 << 32
PF_MQ, PF_REPLY_ACK, PF_RESET, PF_MEM_SLOTS = 1, 1 << 3, 1 << 13, 1 << 15
NEED_REPLY = 0x8
NOFD = 1 << 8

UVA = 0x7F0000000000
DESC, AVAIL, USED, BUF, INDIRECT = 0x100, 0x200, 0x300, 0x400, 0x900
NUM = 8
MEM_PAGES = 16  # 64 KiB


def ring_memory():
    """Guest RAM with a ring of 8: a single buffer, a chain of two, and
    an indirect table of two, posted in the available ring."""
    ram = bytearray(0xA00)

    def desc(table, i, addr, length, flags, nxt=0):
        struct.pack_into("<QIHH", ram, table + 16 * i, addr, length, flags, nxt)

    W, N, I = 2, 1, 4
    desc(DESC, 0, BUF, 64, W)
    desc(DESC, 1, BUF + 0x100, 32, W | N, 2)
    desc(DESC, 2, BUF + 0x200, 32, W)
    desc(DESC, 3, INDIRECT, 32, I)
    desc(INDIRECT, 0, BUF + 0x300, 16, W | N, 1)
    desc(INDIRECT, 1, BUF + 0x380, 16, W)
    struct.pack_into("<HH", ram, AVAIL, 0, 3)
    struct.pack_into("<HHHH", ram, AVAIL + 4, 0, 1, 3, 0)
    return bytes(ram)


def msg(request, payload=b"", flags=0x1, ctl=0, fds=0, memfd=None):
    out = bytes([ctl | fds | (0x10 if memfd is not None else 0)])
    if memfd is not None:
        pages, content = memfd
        out += bytes([pages - 1]) + struct.pack("<H", len(content)) + content
    return out + struct.pack("=III", request, flags, len(payload)) + payload


def u64(v):
    return struct.pack("=Q", v)


def state(index, num):
    return struct.pack("=II", index, num)


def region(gpa, size, uva, offset):
    return struct.pack("=QQQQ", gpa, size, uva, offset)


def mem_table(*regions):
    return struct.pack("=II", len(regions), 0) + b"".join(regions)


def vring_addr(desc, used, avail):
    return struct.pack("=IIQQQQ", 0, 0, desc, used, avail, 0)


RAM = (MEM_PAGES, ring_memory())
SIZE = MEM_PAGES * 4096


def negotiation(features=F_VERSION_1 | F_INDIRECT | F_EVENT_IDX | F_PROTOCOL,
                protocol=PF_MQ | PF_REPLY_ACK | PF_RESET | PF_MEM_SLOTS, ctl=0):
    m = msg(GET_FEATURES, ctl=ctl)
    if features & F_PROTOCOL:
        m += msg(GET_PROTOCOL_FEATURES, ctl=ctl)
        m += msg(SET_PROTOCOL_FEATURES, u64(protocol), ctl=ctl)
        m += msg(GET_QUEUE_NUM, ctl=ctl)
        m += msg(GET_MAX_MEM_SLOTS, ctl=ctl)
    m += msg(SET_OWNER, ctl=ctl)
    m += msg(SET_FEATURES, u64(features), ctl=ctl)
    return m


def ring_setup(ctl=0, table=None, enable=True):
    m = table if table is not None else msg(SET_MEM_TABLE, mem_table(region(0, SIZE, UVA, 0)), fds=1, memfd=RAM,
                                            ctl=ctl)
    m += msg(SET_VRING_NUM, state(0, NUM), ctl=ctl)
    m += msg(SET_VRING_BASE, state(0, 0), ctl=ctl)
    m += msg(SET_VRING_ADDR, vring_addr(UVA + DESC, UVA + USED, UVA + AVAIL), ctl=ctl)
    m += msg(SET_VRING_KICK, u64(0), fds=1, ctl=ctl)
    m += msg(SET_VRING_CALL, u64(0), fds=1, ctl=ctl)
    m += msg(SET_VRING_ERR, u64(0), fds=1, ctl=ctl)
    if enable:
        m += msg(SET_VRING_ENABLE, state(0, 1), ctl=ctl | 0x40)
    return m


# QEMU 7.2's vhost-user-rng, start to stop.
write("vhost-user", "qemu-7.2", bytes([0]) + negotiation() + ring_setup() + msg(GET_VRING_BASE, state(0, 0)))
# Before 7.2: no PROTOCOL_FEATURES, the ring runs from its kick.
write("vhost-user", "qemu-old", bytes([0]) + negotiation(features=F_VERSION_1 | F_INDIRECT) + ring_setup(enable=False) +
      msg(GET_FEATURES, ctl=0x40) +
      msg(GET_VRING_BASE, state(0, 0), ctl=0x40))
# Every message cut after its header, handed over in the middle.
write("vhost-user", "split-handover", bytes([1]) + negotiation(ctl=0xA0) + ring_setup(ctl=0xA0) +
      msg(GET_VRING_BASE, state(0, 0), ctl=0x80))
# CONFIGURE_MEM_SLOTS: the table region by region, one removed again.
slots = (msg(ADD_MEM_REG, u64(0) + region(0, SIZE, UVA, 0), fds=1, memfd=RAM) +
         msg(ADD_MEM_REG, u64(0) + region(1 << 32, 4096, UVA + (1 << 30), 0), fds=1, memfd=(1, b"")))
write("vhost-user", "mem-slots", bytes([0x08]) + negotiation() + ring_setup(table=slots) +
      msg(REM_MEM_REG, u64(0) + region(1 << 32, 4096, UVA + (1 << 30), 0)) +
      msg(RESET_DEVICE, ctl=0x40) + msg(RESET_OWNER))
# The owner's cap refuses the memory (settings bit 5: 1 MiB).
write("vhost-user", "over-cap", bytes([0x20]) + negotiation() +
      msg(SET_MEM_TABLE, mem_table(region(0, 2 << 20, UVA, 0)), fds=1, memfd=(256, b"")))
# Hostile or unsupported: NEED_REPLY for a request we refuse, too many
# fds, a reply flag, a wrong version, a payload too large.
write("vhost-user", "unsupported-acked", bytes([0]) + negotiation() +
      msg(SET_CONFIG, bytes(12), flags=0x1 | NEED_REPLY) + msg(GET_FEATURES))
write("vhost-user", "too-many-fds", bytes([0]) + msg(GET_FEATURES, fds=9))
write("vhost-user", "reply-flag", bytes([0]) + msg(GET_FEATURES, flags=0x5))
write("vhost-user", "bad-version", bytes([0]) + msg(GET_FEATURES, flags=0x2))
write("vhost-user", "huge-payload", bytes([0]) + struct.pack("=BIII", 0, SET_MEM_TABLE, 1, 1 << 20))
write("vhost-user", "no-fd-kick", bytes([0x03]) + negotiation(features=F_VERSION_1) +
      msg(SET_MEM_TABLE, mem_table(region(0, SIZE, UVA, 0)), fds=1, memfd=RAM) +
      msg(SET_VRING_NUM, state(0, NUM)) + msg(SET_VRING_ADDR, vring_addr(UVA + DESC, UVA + USED, UVA + AVAIL)) +
      msg(SET_VRING_KICK, u64(NOFD), ctl=0x40) + msg(GET_FEATURES, ctl=0x40))

# ---- virtqueue (fuzz-virtqueue.c): a header, then guest RAM.


def vq(ram, log2=3, flags=0, last_avail=0, used_idx=0, budget=0, fill=0, split=0,
       desc=DESC, avail=AVAIL, used=USED, calls=1):
    return struct.pack("<BBHHHHHIIIB", log2, flags, last_avail, used_idx, budget, fill, split, desc, avail,
                       used, calls - 1) + ram


RING = ring_memory()
write("virtqueue", "three-buffers", vq(RING, flags=1))
write("virtqueue", "event-idx", vq(RING, flags=1 | 2, calls=2))
write("virtqueue", "restart", vq(RING, flags=1 | 4, last_avail=0, used_idx=0))
write("virtqueue", "two-regions", vq(RING, flags=1 | 8, split=0x480))
write("virtqueue", "far-region", vq(RING, flags=1, split=0x480))
write("virtqueue", "budget-one", vq(RING, flags=1, budget=1, calls=4))
write("virtqueue", "dry-source", vq(RING, flags=3, fill=40, calls=3))
write("virtqueue", "no-indirect", vq(RING, flags=0))
loop = bytearray(RING)
struct.pack_into("<QIHH", loop, DESC, BUF, 16, 2 | 1, 0)
write("virtqueue", "loop", vq(bytes(loop), flags=1))
readable = bytearray(RING)
struct.pack_into("<QIHH", readable, DESC, BUF, 16, 0, 0)
write("virtqueue", "readable", vq(bytes(readable), flags=1))
jump = bytearray(RING)
struct.pack_into("<HH", jump, AVAIL, 0, 100)
write("virtqueue", "avail-jump", vq(bytes(jump), flags=1))
write("virtqueue", "largest-ring", vq(RING, log2=15))
