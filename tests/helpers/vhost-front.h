/* SPDX-License-Identifier: MIT */
#pragma once

/* A vhost-user front-end for tests: it plays QEMU's part, and the guest
 * driver's, over a socketpair().  Guest RAM is a memfd both sides map,
 * described to the back-end as two regions (one at guest address 0, one
 * at 4 GiB with an mmap offset, at unrelated front-end addresses).  The
 * helper lays out a split ring in it, posts buffers (single, chained,
 * indirect, or hand-made hostile ones) as a driver would, and reads back
 * the used ring and the call eventfd.
 *
 * The back-end runs in the same thread: after each message the helper
 * calls pump(), which lets it read the message (and reply) before the
 * helper looks for the reply.  Failures of the helper's own system calls
 * abort the test; what the back-end does is returned for the test to
 * check. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* vhost-user requests the tests use (docs/interop/vhost-user.rst). */
enum {
        VU_GET_FEATURES = 1,
        VU_SET_FEATURES = 2,
        VU_SET_OWNER = 3,
        VU_RESET_OWNER = 4,
        VU_SET_MEM_TABLE = 5,
        VU_SET_LOG_BASE = 6,
        VU_SET_VRING_NUM = 8,
        VU_SET_VRING_ADDR = 9,
        VU_SET_VRING_BASE = 10,
        VU_GET_VRING_BASE = 11,
        VU_SET_VRING_KICK = 12,
        VU_SET_VRING_CALL = 13,
        VU_SET_VRING_ERR = 14,
        VU_GET_PROTOCOL_FEATURES = 15,
        VU_SET_PROTOCOL_FEATURES = 16,
        VU_GET_QUEUE_NUM = 17,
        VU_SET_VRING_ENABLE = 18,
        VU_SET_CONFIG = 25,
        VU_RESET_DEVICE = 34,
        VU_GET_MAX_MEM_SLOTS = 36,
        VU_ADD_MEM_REG = 37,
        VU_REM_MEM_REG = 38,
};

#define VU_FLAG_VERSION 0x1U
#define VU_FLAG_REPLY 0x4U
#define VU_FLAG_NEED_REPLY 0x8U
#define VU_VRING_NOFD (UINT64_C(1) << 8)

#define VU_F_RING_INDIRECT_DESC (UINT64_C(1) << 28)
#define VU_F_RING_EVENT_IDX (UINT64_C(1) << 29)
#define VU_F_PROTOCOL_FEATURES (UINT64_C(1) << 30)
#define VU_F_VERSION_1 (UINT64_C(1) << 32)
#define VU_F_RING_PACKED (UINT64_C(1) << 34)
#define VU_F_RING_RESET (UINT64_C(1) << 40)

#define VU_PF_MQ (UINT64_C(1) << 0)
#define VU_PF_REPLY_ACK (UINT64_C(1) << 3)
#define VU_PF_CONFIG (UINT64_C(1) << 9)
#define VU_PF_RESET_DEVICE (UINT64_C(1) << 13)
#define VU_PF_CONFIGURE_MEM_SLOTS (UINT64_C(1) << 15)

#define VQ_DESC_F_NEXT 1U
#define VQ_DESC_F_WRITE 2U
#define VQ_DESC_F_INDIRECT 4U

/* Guest RAM: 2 MiB of memfd, as two 1 MiB regions. */
#define VHOST_FRONT_MEM_SIZE (UINT64_C(2) << 20)
#define VHOST_FRONT_LOW_GPA UINT64_C(0)
#define VHOST_FRONT_HIGH_GPA (UINT64_C(1) << 32)
/* Where the ring goes (in the low region), and the buffers after it. */
#define VHOST_FRONT_DESC_GPA UINT64_C(0x10000)
#define VHOST_FRONT_AVAIL_GPA UINT64_C(0x20000)
#define VHOST_FRONT_USED_GPA UINT64_C(0x30000)
#define VHOST_FRONT_DATA_GPA UINT64_C(0x40000)
#define VHOST_FRONT_MAX_NUM 1024U

typedef struct VhostFrontRegion {
        uint64_t gpa;
        uint64_t size;
        uint64_t uva;
        uint64_t offset; /* in the memfd */
} VhostFrontRegion;

/* One buffer of a chain or indirect table. */
typedef struct VhostFrontSeg {
        uint64_t gpa;
        uint32_t len;
        bool readable; /* a driver-readable buffer: not allowed for rng */
} VhostFrontSeg;

typedef struct VhostFront {
        int sock;     /* our end of the socketpair */
        int dev_sock; /* the back-end's end, until taken */
        int mem_fd;
        uint8_t *mem;
        VhostFrontRegion regions[2];
        unsigned n_regions;
        int kick; /* eventfds: the guest writes kick, reads call */
        int call;

        /* The ring, as the driver keeps it. */
        unsigned num;
        uint16_t avail_idx;  /* next available entry */
        uint16_t last_used;  /* used entries read */
        uint16_t next_desc;  /* descriptors handed out, modulo num */
        uint64_t data_low;   /* bump allocators for buffers */
        uint64_t data_high;

        int (*pump)(void *userdata);
        void *pump_userdata;
        int pump_result; /* of the last pump() */
} VhostFront;

void vhost_front_init(VhostFront *f);
void vhost_front_done(VhostFront *f);
/* The back-end's end of the socketpair; the caller owns it now. */
int vhost_front_take_dev_socket(VhostFront *f);
void vhost_front_set_pump(VhostFront *f, int (*pump)(void *userdata), void *userdata);

/* Open fds of this process, from /proc/self/fd. */
unsigned vhost_front_count_fds(void);

/* Raw I/O.  send: one sendmsg() with fds (up to 16); send_bytes: any
 * bytes, for broken messages.  recv: the next message, waiting up to
 * timeout_ms; -ETIMEDOUT when none came. */
int vhost_front_send(VhostFront *f, uint32_t request, uint32_t flags, const void *payload, uint32_t size,
                     const int *fds, unsigned n_fds);
int vhost_front_send_bytes(VhostFront *f, const void *buf, size_t n, const int *fds, unsigned n_fds);
int vhost_front_recv(VhostFront *f, uint32_t *ret_request, uint32_t *ret_flags, void *payload, uint32_t max,
                     uint32_t *ret_size, int timeout_ms);
/* Whether a message waits on our end. */
bool vhost_front_has_reply(VhostFront *f);

/* Requests as QEMU sends them: send, pump, then read the reply where
 * there is one.  Return 0, the pump's error, -EIO for a REPLY_ACK
 * failure, or -EBADMSG for a reply of the wrong shape. */
int vhost_front_get_u64(VhostFront *f, uint32_t request, uint64_t *ret);
int vhost_front_set_u64(VhostFront *f, uint32_t request, uint64_t v, bool need_reply);
int vhost_front_simple(VhostFront *f, uint32_t request, bool need_reply); /* no payload */
int vhost_front_set_state(VhostFront *f, uint32_t request, uint32_t index, uint32_t num, bool need_reply);
int vhost_front_get_vring_base(VhostFront *f, uint32_t *ret_num);
/* SET_MEM_TABLE with f->regions, each with the memfd. */
int vhost_front_set_mem_table(VhostFront *f, bool need_reply);
int vhost_front_add_mem_reg(VhostFront *f, int fd, const VhostFrontRegion *r, bool need_reply);
int vhost_front_rem_mem_reg(VhostFront *f, const VhostFrontRegion *r, bool need_reply);
/* SET_VRING_ADDR with the ring's front-end addresses. */
int vhost_front_set_vring_addr(VhostFront *f);
/* SET_VRING_KICK/CALL/ERR with fd, or the no-fd flag for fd < 0. */
int vhost_front_set_vring_fd(VhostFront *f, uint32_t request, int fd);

/* What QEMU 7.2 sends for vhost-user-rng-pci, from connecting to the
 * guest's DRIVER_OK: features and protocol features (acking what both
 * sides know of want_protocol), queue number and memory slots, owner,
 * the call fd, then on start the features (want_features & offered, plus
 * PROTOCOL_FEATURES when it was offered), memory (SET_MEM_TABLE, or
 * ADD_MEM_REG per region with CONFIGURE_MEM_SLOTS), the ring (num, base,
 * addresses, kick, call) and SET_VRING_ENABLE.  Lays out a ring of num
 * entries first.  Returns 0 or the first failure. */
int vhost_front_connect(VhostFront *f, unsigned num, uint64_t want_features, uint64_t want_protocol);

/* The ring, from the driver's side. */
void vhost_front_ring_init(VhostFront *f, unsigned num);
/* Zeroed guest memory for a buffer, in the low or the high region. */
uint64_t vhost_front_alloc(VhostFront *f, size_t size, bool high);
/* Where a guest address is in our mapping; aborts outside guest RAM. */
void *vhost_front_ptr(VhostFront *f, uint64_t gpa, size_t len);
void vhost_front_write_desc(VhostFront *f, uint64_t table_gpa, unsigned i, uint64_t addr, uint32_t len,
                            uint16_t flags, uint16_t next);
/* Makes head available and publishes the new index (with a release
 * barrier, as a driver does). */
void vhost_front_publish(VhostFront *f, uint16_t head);
void vhost_front_set_avail_idx(VhostFront *f, uint16_t idx);
/* Posts segs as one chain of direct descriptors, or as one indirect
 * descriptor whose table (allocated here) holds them.  Returns the head. */
uint16_t vhost_front_post(VhostFront *f, const VhostFrontSeg *segs, unsigned n, bool indirect);
/* Pops the next used entry; false when the device has added none. */
bool vhost_front_pop_used(VhostFront *f, uint32_t *ret_id, uint32_t *ret_len);
uint16_t vhost_front_used_idx(VhostFront *f);
/* EVENT_IDX fields and the avail flags. */
void vhost_front_set_used_event(VhostFront *f, uint16_t v);
uint16_t vhost_front_avail_event(VhostFront *f);
void vhost_front_set_avail_flags(VhostFront *f, uint16_t flags);

/* The guest's notifications: kick the device; read (and clear) how many
 * interrupts the device sent; whether a kick waits unread. */
void vhost_front_kick(VhostFront *f);
uint64_t vhost_front_calls(VhostFront *f);
bool vhost_front_kick_pending(VhostFront *f);
