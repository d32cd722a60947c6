/* SPDX-License-Identifier: MIT */
/* The vhost-user back-end of one virtio-rng device, after QEMU's
 * docs/interop/vhost-user.rst.  Messages arrive on a non-blocking stream
 * socket, possibly in pieces; each is checked whole (size, file
 * descriptors, values) before anything changes.  Where the spec leaves
 * room, the choices are:
 *   - A request that breaks the protocol (bad size, missing or extra fds,
 *     bad values, a ring message for a queue we do not have) breaks the
 *     device: we log once, answer a NEED_REPLY with failure when
 *     REPLY_ACK was negotiated, and the caller closes the connection.
 *   - A request we do not implement is answered with failure when the
 *     front-end asked for an acknowledgement (it learns, and the stream
 *     stays in step since we read the whole message); without NEED_REPLY
 *     we cannot know whether it waits for a reply we cannot give, so the
 *     device breaks rather than leave it hanging.
 *   - SET_FEATURES may carry bits we did not offer: QEMU 7.2's
 *     vhost-user-rng passes the guest's acked features through unfiltered
 *     (VIRTIO_F_RING_RESET, for one).  Those are ignored, except the ones
 *     that would change what the ring means (packed layout, IOMMU
 *     addresses, dirty logging), which we cannot honour.
 *   - Ring configuration (SET_VRING_NUM, SET_VRING_BASE) is refused while
 *     the ring runs; QEMU stops it with GET_VRING_BASE first. */
#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>

#include "fdpass.h"
#include "fileio.h"
#include "log.h"
#include "vhost-user.h"
#include "virtqueue.h"

#define BIT(n) (UINT64_C(1) << (n))

/* Header flags. */
#define VHOST_USER_VERSION 0x1U
#define VHOST_USER_VERSION_MASK 0x3U
#define VHOST_USER_REPLY_MASK (0x1U << 2)
#define VHOST_USER_NEED_REPLY_MASK (0x1U << 3)

/* The u64 of SET_VRING_KICK/CALL/ERR. */
#define VHOST_USER_VRING_IDX_MASK UINT64_C(0xff)
#define VHOST_USER_VRING_NOFD_MASK BIT(8)

/* The protocol's limit for fds in one message (and SET_MEM_TABLE's for
 * regions). */
#define VHOST_USER_MAX_FDS 8U
#define VHOST_USER_MEM_TABLE_MAX 8U
/* The largest payload we accept.  Ours are at most a memory table of 8
 * regions (264 bytes); requests we do not implement may be larger (a
 * config space of 256 bytes, a crypto session of ~600), and are read
 * whole so that we can refuse them and stay in step. */
#define VHOST_USER_PAYLOAD_MAX 4096U

/* Virtio and vhost feature bits. */
#define VHOST_F_LOG_ALL 26
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#define VHOST_USER_F_PROTOCOL_FEATURES 30
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_F_ACCESS_PLATFORM 33
#define VIRTIO_F_RING_PACKED 34

/* Protocol feature bits. */
#define VHOST_USER_PROTOCOL_F_MQ 0
#define VHOST_USER_PROTOCOL_F_REPLY_ACK 3
#define VHOST_USER_PROTOCOL_F_CONFIG 9
#define VHOST_USER_PROTOCOL_F_RESET_DEVICE 13
#define VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS 15

static const uint64_t offered_features = BIT(VIRTIO_F_VERSION_1) | BIT(VIRTIO_RING_F_INDIRECT_DESC) |
                                         BIT(VIRTIO_RING_F_EVENT_IDX) | BIT(VHOST_USER_F_PROTOCOL_FEATURES);
/* Acked but never offered, and not safe to ignore. */
static const uint64_t refused_features = BIT(VHOST_F_LOG_ALL) | BIT(VIRTIO_F_ACCESS_PLATFORM) |
                                         BIT(VIRTIO_F_RING_PACKED);
/* No CONFIG: virtio-rng has no config space, and QEMU drops the bit for
 * devices without a config notifier (newer versions warn about it). */
static const uint64_t offered_protocol_features = BIT(VHOST_USER_PROTOCOL_F_MQ) |
                                                  BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
                                                  BIT(VHOST_USER_PROTOCOL_F_RESET_DEVICE) |
                                                  BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS);

typedef enum VhostUserRequest {
        VHOST_USER_NONE = 0,
        VHOST_USER_GET_FEATURES = 1,
        VHOST_USER_SET_FEATURES = 2,
        VHOST_USER_SET_OWNER = 3,
        VHOST_USER_RESET_OWNER = 4,
        VHOST_USER_SET_MEM_TABLE = 5,
        VHOST_USER_SET_LOG_BASE = 6,
        VHOST_USER_SET_LOG_FD = 7,
        VHOST_USER_SET_VRING_NUM = 8,
        VHOST_USER_SET_VRING_ADDR = 9,
        VHOST_USER_SET_VRING_BASE = 10,
        VHOST_USER_GET_VRING_BASE = 11,
        VHOST_USER_SET_VRING_KICK = 12,
        VHOST_USER_SET_VRING_CALL = 13,
        VHOST_USER_SET_VRING_ERR = 14,
        VHOST_USER_GET_PROTOCOL_FEATURES = 15,
        VHOST_USER_SET_PROTOCOL_FEATURES = 16,
        VHOST_USER_GET_QUEUE_NUM = 17,
        VHOST_USER_SET_VRING_ENABLE = 18,
        VHOST_USER_SEND_RARP = 19,
        VHOST_USER_NET_SET_MTU = 20,
        VHOST_USER_SET_BACKEND_REQ_FD = 21,
        VHOST_USER_IOTLB_MSG = 22,
        VHOST_USER_SET_VRING_ENDIAN = 23,
        VHOST_USER_GET_CONFIG = 24,
        VHOST_USER_SET_CONFIG = 25,
        VHOST_USER_CREATE_CRYPTO_SESSION = 26,
        VHOST_USER_CLOSE_CRYPTO_SESSION = 27,
        VHOST_USER_POSTCOPY_ADVISE = 28,
        VHOST_USER_POSTCOPY_LISTEN = 29,
        VHOST_USER_POSTCOPY_END = 30,
        VHOST_USER_GET_INFLIGHT_FD = 31,
        VHOST_USER_SET_INFLIGHT_FD = 32,
        VHOST_USER_GPU_SET_SOCKET = 33,
        VHOST_USER_RESET_DEVICE = 34,
        VHOST_USER_VRING_KICK = 35,
        VHOST_USER_GET_MAX_MEM_SLOTS = 36,
        VHOST_USER_ADD_MEM_REG = 37,
        VHOST_USER_REM_MEM_REG = 38,
        VHOST_USER_SET_STATUS = 39,
        VHOST_USER_GET_STATUS = 40,
        _VHOST_USER_REQUEST_MAX,
} VhostUserRequest;

#define REQ(r) [r] = #r
static const char *const request_table[_VHOST_USER_REQUEST_MAX] = {
        REQ(VHOST_USER_NONE),
        REQ(VHOST_USER_GET_FEATURES),
        REQ(VHOST_USER_SET_FEATURES),
        REQ(VHOST_USER_SET_OWNER),
        REQ(VHOST_USER_RESET_OWNER),
        REQ(VHOST_USER_SET_MEM_TABLE),
        REQ(VHOST_USER_SET_LOG_BASE),
        REQ(VHOST_USER_SET_LOG_FD),
        REQ(VHOST_USER_SET_VRING_NUM),
        REQ(VHOST_USER_SET_VRING_ADDR),
        REQ(VHOST_USER_SET_VRING_BASE),
        REQ(VHOST_USER_GET_VRING_BASE),
        REQ(VHOST_USER_SET_VRING_KICK),
        REQ(VHOST_USER_SET_VRING_CALL),
        REQ(VHOST_USER_SET_VRING_ERR),
        REQ(VHOST_USER_GET_PROTOCOL_FEATURES),
        REQ(VHOST_USER_SET_PROTOCOL_FEATURES),
        REQ(VHOST_USER_GET_QUEUE_NUM),
        REQ(VHOST_USER_SET_VRING_ENABLE),
        REQ(VHOST_USER_SEND_RARP),
        REQ(VHOST_USER_NET_SET_MTU),
        REQ(VHOST_USER_SET_BACKEND_REQ_FD),
        REQ(VHOST_USER_IOTLB_MSG),
        REQ(VHOST_USER_SET_VRING_ENDIAN),
        REQ(VHOST_USER_GET_CONFIG),
        REQ(VHOST_USER_SET_CONFIG),
        REQ(VHOST_USER_CREATE_CRYPTO_SESSION),
        REQ(VHOST_USER_CLOSE_CRYPTO_SESSION),
        REQ(VHOST_USER_POSTCOPY_ADVISE),
        REQ(VHOST_USER_POSTCOPY_LISTEN),
        REQ(VHOST_USER_POSTCOPY_END),
        REQ(VHOST_USER_GET_INFLIGHT_FD),
        REQ(VHOST_USER_SET_INFLIGHT_FD),
        REQ(VHOST_USER_GPU_SET_SOCKET),
        REQ(VHOST_USER_RESET_DEVICE),
        REQ(VHOST_USER_VRING_KICK),
        REQ(VHOST_USER_GET_MAX_MEM_SLOTS),
        REQ(VHOST_USER_ADD_MEM_REG),
        REQ(VHOST_USER_REM_MEM_REG),
        REQ(VHOST_USER_SET_STATUS),
        REQ(VHOST_USER_GET_STATUS),
};
#undef REQ

/* The wire layouts: native byte order, no padding the compiler could
 * add (checked below). */
typedef struct VhostUserHeader {
        uint32_t request;
        uint32_t flags;
        uint32_t size;
} VhostUserHeader;

typedef struct VhostUserVringState {
        uint32_t index;
        uint32_t num;
} VhostUserVringState;

typedef struct VhostUserVringAddr {
        uint32_t index;
        uint32_t flags;
        uint64_t desc;
        uint64_t used;
        uint64_t avail;
        uint64_t log;
} VhostUserVringAddr;

typedef struct VhostUserRegion {
        uint64_t guest_phys_addr;
        uint64_t memory_size;
        uint64_t userspace_addr;
        uint64_t mmap_offset;
} VhostUserRegion;

typedef struct VhostUserMemRegMsg {
        uint64_t padding;
        VhostUserRegion region;
} VhostUserMemRegMsg;

#define VHOST_USER_HDR_SIZE sizeof(VhostUserHeader)
#define VHOST_USER_MEM_TABLE_HDR_SIZE 8U

_Static_assert(sizeof(VhostUserHeader) == 12, "header layout");
_Static_assert(sizeof(VhostUserVringState) == 8, "vring state layout");
_Static_assert(sizeof(VhostUserVringAddr) == 40, "vring address layout");
_Static_assert(sizeof(VhostUserRegion) == 32, "memory region layout");
_Static_assert(sizeof(VhostUserMemRegMsg) == 40, "single memory region layout");
_Static_assert(VHOST_USER_MAX_REGIONS <= GUEST_MEMORY_MAX_REGIONS, "regions we may be asked to hold");

struct VhostUserDev {
        int fd;
        const VhostUserOps *ops;
        void *userdata;
        char *name;

        /* The message being received: it may arrive in pieces. */
        uint8_t rx[VHOST_USER_HDR_SIZE + VHOST_USER_PAYLOAD_MAX];
        size_t rx_got;
        VhostUserHeader rx_hdr; /* valid once rx_got >= VHOST_USER_HDR_SIZE */
        int rx_fds[VHOST_USER_MAX_FDS];
        unsigned rx_n_fds;

        uint64_t features;          /* SET_FEATURES, as sent */
        uint64_t protocol_features; /* SET_PROTOCOL_FEATURES */

        GuestMemory mem;
        uint64_t mapped;       /* the sum of mem's region sizes */
        unsigned max_regions;
        VirtQueue vq;
        int kick_fd;
        int call_fd;
        int err_fd;
        bool started;  /* has a kick fd (or polls), not stopped since */
        bool enabled;  /* SET_VRING_ENABLE; see ring_enabled() */
        bool pending;

        bool broken;
        int broken_error;
        char broken_reason[256];
        VhostUserStats stats;
};

/* A received message, as the handlers see it.  A handler takes the fds
 * it keeps (TAKE_FD); the dispatcher closes the rest on every path. */
typedef struct Msg {
        uint32_t request;
        uint32_t flags;
        uint32_t size;
        const uint8_t *payload;
        int *fds;
        unsigned n_fds;
} Msg;

/* A handler's return: it sent the reply itself. */
#define REPLIED 1

static const char *request_to_string(uint32_t request) {
        return request < ELEMENTSOF(request_table) ? request_table[request] : NULL;
}

static const char *dev_name(const VhostUserDev *d) {
        return d->name ?: "?";
}

/* The one place a device breaks: remembers why, logs it once, and tells
 * the front-end through the error eventfd when it gave us one (QEMU logs
 * "vhost vring error"). */
_printf_(4, 5) static int dev_fail(VhostUserDev *d, const char *what, int error, const char *format, ...) {
        char reason[sizeof d->broken_reason - 64];
        va_list ap;

        if (d->broken)
                return d->broken_error;

        errno = abs(error); /* for %m */
        va_start(ap, format);
        (void) vsnprintf(reason, sizeof reason, format, ap);
        va_end(ap);

        (void) snprintf(d->broken_reason, sizeof d->broken_reason, "%s: %s", what, reason);
        d->broken = true;
        d->broken_error = error < 0 ? error : -EPROTO;
        log_warning("vhost-user device of %s: %s; serving this front-end no more.", dev_name(d), d->broken_reason);

        if (d->err_fd >= 0) {
                uint64_t one = 1;
                (void) !write(d->err_fd, &one, sizeof one);
        }
        return d->broken_error;
}

/* The owner refused what the front-end asked for (a cap): the device
 * breaks as for a fault, but the owner logs it (sparingly: a peer may
 * retry in a loop) and the error is -EDQUOT, not -EPROTO. */
static int dev_refuse(VhostUserDev *d, const char *what, const char *reason) {
        if (d->broken)
                return d->broken_error;
        (void) snprintf(d->broken_reason, sizeof d->broken_reason, "%s: %s", what, reason);
        d->broken = true;
        d->broken_error = -EDQUOT;
        log_debug("vhost-user device of %s: %s; serving this front-end no more.", dev_name(d), d->broken_reason);
        return d->broken_error;
}

static int dev_hangup(VhostUserDev *d) {
        /* Not a fault: QEMU closes the socket when the VM goes away.  The
         * caller says so at the level it sees fit. */
        (void) snprintf(d->broken_reason, sizeof d->broken_reason, "front-end closed the connection");
        d->broken = true;
        d->broken_error = -ECONNRESET;
        log_debug("vhost-user device of %s: front-end closed the connection.", dev_name(d));
        return d->broken_error;
}

/* What a message is called in messages: its name, or its number. */
static const char *msg_what(const Msg *m, char buf[static 32]) {
        const char *s = request_to_string(m->request);

        if (s)
                return s;
        (void) snprintf(buf, 32, "request %" PRIu32, m->request);
        return buf;
}

#define FAIL(d, m, error, ...)                                          \
        ({                                                              \
                char _b_[32];                                           \
                dev_fail(d, msg_what(m, _b_), error, __VA_ARGS__);      \
        })

static bool ring_enabled(const VhostUserDev *d) {
        /* vhost-user.rst, "Ring states": without PROTOCOL_FEATURES a ring
         * is enabled as it starts (QEMU before 7.2 never acked the bit for
         * vhost-user-rng, and never sends SET_VRING_ENABLE); with it, the
         * ring waits for SET_VRING_ENABLE. */
        return d->enabled || !(d->features & BIT(VHOST_USER_F_PROTOCOL_FEATURES));
}

static bool ring_running(const VhostUserDev *d) {
        return d->started && ring_enabled(d) && d->vq.num > 0 && d->vq.have_addr;
}

static void set_kick(VhostUserDev *d, int fd) {
        int old = d->kick_fd;

        if (old < 0 && fd < 0)
                return;
        /* Before the close: the caller must take the old fd out of its
         * epoll set while it is still open (QEMU holds the other end, so
         * closing ours would not remove it). */
        if (d->ops && d->ops->kick_changed)
                d->ops->kick_changed(d->userdata, old, fd);
        d->kick_fd = fd;
        (void) safe_close(old);
}

/* Wakes the caller's loop as the guest would, so that buffers that were
 * already in the ring get served: after the ring starts or is enabled,
 * after the memory table changed, or when one process() call left work. */
static void self_kick(VhostUserDev *d) {
        uint64_t one = 1;

        if (d->kick_fd >= 0)
                (void) !write(d->kick_fd, &one, sizeof one);
}

static void signal_call(VhostUserDev *d) {
        uint64_t one = 1;

        /* EAGAIN means the counter is full: the guest has an interrupt
         * coming anyway. */
        if (d->call_fd >= 0)
                (void) !write(d->call_fd, &one, sizeof one);
}

/* vhost-user.rst: the back-end stops the ring on GET_VRING_BASE.  Like
 * libvhost-user we let go of both eventfds; QEMU sends new ones when it
 * starts the ring again. */
static void ring_stop(VhostUserDev *d) {
        set_kick(d, -EBADF);
        d->call_fd = safe_close(d->call_fd);
        d->started = false;
        d->pending = false;
}

static void remap_ring(VhostUserDev *d) {
        d->vq.mapped = false;
        if (d->vq.num == 0 || !d->vq.have_addr)
                return;
        /* A failure is not final: QEMU replaces a region with REM_MEM_REG
         * and ADD_MEM_REG, and the ring may be in it.  process() waits
         * until it maps again. */
        if (virtqueue_map(&d->vq, &d->mem) < 0) {
                log_debug("vhost-user device of %s: ring not in guest memory for now: %s", dev_name(d), d->vq.error);
                return;
        }
        if (ring_running(d))
                self_kick(d);
}

static int send_reply(VhostUserDev *d, const Msg *m, const void *payload, uint32_t size) {
        uint8_t buf[VHOST_USER_HDR_SIZE + sizeof(VhostUserVringState) + sizeof(uint64_t)];
        VhostUserHeader h = {
                .request = m->request,
                .flags = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK,
                .size = size,
        };
        ssize_t n;

        assert(size <= sizeof buf - sizeof h);
        memcpy(buf, &h, sizeof h);
        memcpy(buf + sizeof h, payload, size);

        /* Non-blocking: a front-end that does not read its replies must
         * not stall every other VM.  A reply this small fits in any
         * socket buffer that is being read. */
        do
                n = send(d->fd, buf, sizeof h + size, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
                int r = -errno;
                return FAIL(d, m, r, "sending the reply failed: %m");
        }
        if ((size_t) n != sizeof h + size)
                return FAIL(d, m, -EPROTO, "reply cut short (%zd of %zu bytes)", n, sizeof h + size);
        return REPLIED;
}

static int reply_u64(VhostUserDev *d, const Msg *m, uint64_t v) {
        return send_reply(d, m, &v, sizeof v);
}

static bool wants_ack(const VhostUserDev *d, const Msg *m) {
        /* NEED_REPLY means something only once REPLY_ACK was agreed. */
        return (m->flags & VHOST_USER_NEED_REPLY_MASK) &&
               (d->protocol_features & BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK));
}

static int expect(VhostUserDev *d, const Msg *m, uint32_t size, unsigned n_fds) {
        if (m->size != size)
                return FAIL(d, m, -EPROTO, "payload of %" PRIu32 " bytes, expected %" PRIu32, m->size, size);
        if (m->n_fds != n_fds)
                return FAIL(d, m, -EPROTO, "%u file descriptors, expected %u", m->n_fds, n_fds);
        return 0;
}

static uint64_t payload_u64(const Msg *m) {
        uint64_t v;

        memcpy(&v, m->payload, sizeof v);
        return v;
}

/* The vring messages: state or u64 payloads that name a queue; we have
 * queue 0 only. */
static int get_state(VhostUserDev *d, const Msg *m, VhostUserVringState *ret) {
        int r;

        r = expect(d, m, sizeof *ret, 0);
        if (r < 0)
                return r;
        memcpy(ret, m->payload, sizeof *ret);
        if (ret->index != 0)
                return FAIL(d, m, -EPROTO, "queue %" PRIu32 ", but virtio-rng has only queue 0", ret->index);
        return 0;
}

static int on_get_features(VhostUserDev *d, Msg *m) {
        int r;

        r = expect(d, m, 0, 0);
        if (r < 0)
                return r;
        return reply_u64(d, m, offered_features);
}

static int on_set_features(VhostUserDev *d, Msg *m) {
        uint64_t v, ignored;
        int r;

        r = expect(d, m, sizeof v, 0);
        if (r < 0)
                return r;
        v = payload_u64(m);

        if (v & refused_features)
                return FAIL(d, m, -EPROTO,
                            "features 0x%" PRIx64 " include 0x%" PRIx64
                            " (packed ring, IOMMU addresses or dirty logging), which we did not offer",
                            v, v & refused_features);
        ignored = v & ~offered_features;
        if (ignored)
                log_debug("vhost-user device of %s: ignoring acked features 0x%" PRIx64 " we did not offer.", dev_name(d),
                          ignored);

        d->features = v;
        d->vq.indirect = v & BIT(VIRTIO_RING_F_INDIRECT_DESC);
        d->vq.event_idx = v & BIT(VIRTIO_RING_F_EVENT_IDX);
        d->vq.signalled_used_valid = false;
        return 0;
}

static int on_get_protocol_features(VhostUserDev *d, Msg *m) {
        int r;

        r = expect(d, m, 0, 0);
        if (r < 0)
                return r;
        return reply_u64(d, m, offered_protocol_features);
}

static int on_set_protocol_features(VhostUserDev *d, Msg *m) {
        uint64_t v;
        int r;

        r = expect(d, m, sizeof v, 0);
        if (r < 0)
                return r;
        v = payload_u64(m);
        /* The front-end acks a subset of what we offered; anything else
         * would be a feature whose messages we do not understand. */
        if (v & ~offered_protocol_features)
                return FAIL(d, m, -EPROTO, "protocol features 0x%" PRIx64 " include 0x%" PRIx64 " we did not offer",
                            v, v & ~offered_protocol_features);
        d->protocol_features = v;
        return 0;
}

static int on_get_queue_num(VhostUserDev *d, Msg *m) {
        int r;

        r = expect(d, m, 0, 0);
        if (r < 0)
                return r;
        return reply_u64(d, m, 1);
}

static int on_set_owner(VhostUserDev *d, Msg *m) {
        /* One connection is one session: nothing to remember. */
        return expect(d, m, 0, 0);
}

static int on_reset_owner(VhostUserDev *d, Msg *m) {
        int r;

        r = expect(d, m, 0, 0);
        if (r < 0)
                return r;
        /* Deprecated; the spec recommends ignoring it or disabling the
         * rings, not dropping the session. */
        ring_stop(d);
        d->enabled = false;
        return 0;
}

static int on_reset_device(VhostUserDev *d, Msg *m) {
        int r;

        r = expect(d, m, 0, 0);
        if (r < 0)
                return r;
        /* Back to the state of a new connection, except what the session
         * keeps: protocol features (negotiated once, at connect) and the
         * memory table (QEMU's CONFIGURE_MEM_SLOTS path only sends the
         * regions it thinks we lack). */
        ring_stop(d);
        d->err_fd = safe_close(d->err_fd);
        virtqueue_reset(&d->vq);
        d->enabled = false;
        d->features = 0;
        return 0;
}

/* Asks the owner before the mapped total grows to new_total; the old
 * total stays counted until memory_commit(). */
static int memory_reserve(VhostUserDev *d, Msg *m, uint64_t new_total) {
        char why[160] = "";
        int r;

        if (!d->ops->memory_changed || new_total <= d->mapped)
                return 0;
        r = d->ops->memory_changed(d->userdata, d->mapped, new_total, why, sizeof why);
        if (r < 0) {
                char b[32];
                return dev_refuse(d, msg_what(m, b), why[0] ? why : "refused");
        }
        return 0;
}

/* A reservation that did not happen: back to what is mapped. */
static void memory_release(VhostUserDev *d, uint64_t reserved) {
        if (d->ops->memory_changed && reserved > d->mapped)
                (void) d->ops->memory_changed(d->userdata, reserved, d->mapped, NULL, 0);
}

/* The mapping now holds total bytes; a growth was reserved already. */
static void memory_commit(VhostUserDev *d, uint64_t total) {
        if (d->ops->memory_changed && total < d->mapped)
                (void) d->ops->memory_changed(d->userdata, d->mapped, total, NULL, 0);
        d->mapped = total;
}

static int map_region(VhostUserDev *d, const Msg *m, const VhostUserRegion *reg, int fd, GuestRegion *ret) {
        int r;

        r = guest_region_map(fd, reg->guest_phys_addr, reg->memory_size, reg->userspace_addr, reg->mmap_offset, ret);
        if (r == -EINVAL)
                return FAIL(d, m, -EPROTO,
                            "region at guest 0x%" PRIx64 " of 0x%" PRIx64 " bytes (offset 0x%" PRIx64
                            ") is empty or wraps around",
                            reg->guest_phys_addr, reg->memory_size, reg->mmap_offset);
        if (r == -ENODEV || r == -EBADF)
                return FAIL(d, m, -EPROTO, "region at guest 0x%" PRIx64 " comes with an fd that is not a memory file",
                            reg->guest_phys_addr);
        if (r == -ENXIO)
                return FAIL(d, m, -EPROTO,
                            "region at guest 0x%" PRIx64 " (offset 0x%" PRIx64 ", 0x%" PRIx64
                            " bytes) goes past the end of its file",
                            reg->guest_phys_addr, reg->mmap_offset, reg->memory_size);
        if (r < 0)
                return FAIL(d, m, r, "mapping the region at guest 0x%" PRIx64 " failed: %m", reg->guest_phys_addr);
        return 0;
}

static int on_set_mem_table(VhostUserDev *d, Msg *m) {
        GuestMemory new = {};
        uint64_t total = 0;
        uint32_t n;
        int r;

        if (m->size < VHOST_USER_MEM_TABLE_HDR_SIZE)
                return FAIL(d, m, -EPROTO, "payload of %" PRIu32 " bytes is too short for a memory table", m->size);
        memcpy(&n, m->payload, sizeof n);
        if (n > VHOST_USER_MEM_TABLE_MAX)
                return FAIL(d, m, -EPROTO, "%" PRIu32 " regions, at most %u allowed", n, VHOST_USER_MEM_TABLE_MAX);
        r = expect(d, m, VHOST_USER_MEM_TABLE_HDR_SIZE + n * (uint32_t) sizeof(VhostUserRegion), n);
        if (r < 0)
                return r;
        if (n > d->max_regions)
                return FAIL(d, m, -EPROTO, "%" PRIu32 " regions, more than the %u allowed", n, d->max_regions);

        /* The caps come before any mmap(): mapping is what a hostile
         * front-end would exhaust the shared address space with. */
        for (uint32_t i = 0; i < n; i++) {
                VhostUserRegion reg;

                memcpy(&reg, m->payload + VHOST_USER_MEM_TABLE_HDR_SIZE + i * sizeof reg, sizeof reg);
                if (reg.memory_size > UINT64_MAX - total)
                        return FAIL(d, m, -EPROTO, "the regions' sizes add up past 2^64 bytes");
                total += reg.memory_size;
        }
        r = memory_reserve(d, m, total);
        if (r < 0)
                return r;

        /* All or nothing: the old table stays until every new region is
         * mapped and consistent. */
        for (uint32_t i = 0; i < n; i++) {
                VhostUserRegion reg;
                GuestRegion g;

                memcpy(&reg, m->payload + VHOST_USER_MEM_TABLE_HDR_SIZE + i * sizeof reg, sizeof reg);
                r = map_region(d, m, &reg, m->fds[i], &g);
                if (r < 0)
                        goto fail;
                r = guest_memory_add(&new, &g);
                if (r < 0) {
                        guest_region_unmap(&g);
                        r = FAIL(d, m, -EPROTO, "region %" PRIu32 " at guest 0x%" PRIx64 " overlaps another", i,
                                 reg.guest_phys_addr);
                        goto fail;
                }
        }

        /* The mappings keep the memory; the fds are closed by our caller. */
        guest_memory_clear(&d->mem);
        d->mem = new;
        memory_commit(d, total);
        remap_ring(d);
        return 0;

fail:
        guest_memory_clear(&new);
        memory_release(d, total);
        return r;
}

static int on_get_max_mem_slots(VhostUserDev *d, Msg *m) {
        int r;

        r = expect(d, m, 0, 0);
        if (r < 0)
                return r;
        return reply_u64(d, m, d->max_regions);
}

static int on_add_mem_reg(VhostUserDev *d, Msg *m) {
        VhostUserMemRegMsg p;
        GuestRegion g;
        int r;

        r = expect(d, m, sizeof p, 1);
        if (r < 0)
                return r;
        memcpy(&p, m->payload, sizeof p);

        if (d->mem.n >= d->max_regions)
                return FAIL(d, m, -EPROTO, "more than the %u memory slots we offered", d->max_regions);
        if (p.region.memory_size > UINT64_MAX - d->mapped)
                return FAIL(d, m, -EPROTO, "the regions' sizes add up past 2^64 bytes");
        r = memory_reserve(d, m, d->mapped + p.region.memory_size);
        if (r < 0)
                return r;
        r = map_region(d, m, &p.region, m->fds[0], &g);
        if (r < 0) {
                memory_release(d, d->mapped + p.region.memory_size);
                return r;
        }
        r = guest_memory_add(&d->mem, &g);
        if (r < 0) {
                guest_region_unmap(&g);
                memory_release(d, d->mapped + p.region.memory_size);
                return FAIL(d, m, -EPROTO, "region at guest 0x%" PRIx64 " overlaps one we have",
                            p.region.guest_phys_addr);
        }
        memory_commit(d, d->mapped + p.region.memory_size);
        remap_ring(d);
        return 0;
}

static int on_rem_mem_reg(VhostUserDev *d, Msg *m) {
        VhostUserMemRegMsg p;
        int r;

        /* "No file descriptors SHOULD be passed ... the back-end MAY accept
         * messages with one file descriptor", and must close it. */
        if (m->n_fds > 1)
                return FAIL(d, m, -EPROTO, "%u file descriptors, expected at most 1", m->n_fds);
        r = expect(d, m, sizeof p, m->n_fds);
        if (r < 0)
                return r;
        memcpy(&p, m->payload, sizeof p);

        r = guest_memory_remove(&d->mem, p.region.guest_phys_addr, p.region.memory_size, p.region.userspace_addr);
        if (r < 0)
                return FAIL(d, m, -EPROTO,
                            "no region at guest 0x%" PRIx64 ", user 0x%" PRIx64 ", 0x%" PRIx64 " bytes to remove",
                            p.region.guest_phys_addr, p.region.userspace_addr, p.region.memory_size);
        /* It was counted when added: no underflow. */
        memory_commit(d, d->mapped - p.region.memory_size);
        remap_ring(d);
        return 0;
}

static int on_set_vring_num(VhostUserDev *d, Msg *m) {
        VhostUserVringState s;
        int r;

        r = get_state(d, m, &s);
        if (r < 0)
                return r;
        if (d->started)
                return FAIL(d, m, -EPROTO, "queue size changed while the ring runs");
        /* Split rings have power-of-2 sizes up to 32768 (2.7). */
        if (s.num == 0 || s.num > VIRTQ_MAX_SIZE || (s.num & (s.num - 1)) != 0)
                return FAIL(d, m, -EPROTO, "queue size %" PRIu32 " is not a power of 2 from 1 to %u", s.num,
                            VIRTQ_MAX_SIZE);
        d->vq.num = s.num;
        d->vq.mapped = false;
        return 0;
}

static int on_set_vring_addr(VhostUserDev *d, Msg *m) {
        VhostUserVringAddr a;
        int r;

        r = expect(d, m, sizeof a, 0);
        if (r < 0)
                return r;
        memcpy(&a, m->payload, sizeof a);
        if (a.index != 0)
                return FAIL(d, m, -EPROTO, "queue %" PRIu32 ", but virtio-rng has only queue 0", a.index);
        if (d->vq.num == 0)
                return FAIL(d, m, -EPROTO, "ring addresses before SET_VRING_NUM");

        /* Front-end addresses, translated through the regions' user
         * addresses.  The log address is for dirty logging, which we do
         * not offer. */
        d->vq.desc_uva = a.desc;
        d->vq.avail_uva = a.avail;
        d->vq.used_uva = a.used;
        d->vq.have_addr = true;
        r = virtqueue_map(&d->vq, &d->mem);
        if (r < 0)
                return FAIL(d, m, -EPROTO, "%s", d->vq.error);
        /* The driver's used index is where a (re)starting ring carries on. */
        if (!d->started)
                virtqueue_sync_used(&d->vq);
        return 0;
}

static int on_set_vring_base(VhostUserDev *d, Msg *m) {
        VhostUserVringState s;
        int r;

        r = get_state(d, m, &s);
        if (r < 0)
                return r;
        if (d->started)
                return FAIL(d, m, -EPROTO, "ring base changed while the ring runs");
        if (s.num > UINT16_MAX)
                return FAIL(d, m, -EPROTO, "base %" PRIu32 " is not a 16-bit ring index", s.num);
        d->vq.last_avail_idx = (uint16_t) s.num;
        d->vq.signalled_used_valid = false;
        return 0;
}

static int on_get_vring_base(VhostUserDev *d, Msg *m) {
        VhostUserVringState s;
        int r;

        r = get_state(d, m, &s);
        if (r < 0)
                return r;
        /* Every buffer we took is already in the used ring, so the
         * available index is all the front-end needs to resume. */
        ring_stop(d);
        s.num = d->vq.last_avail_idx;
        return send_reply(d, m, &s, sizeof s);
}

/* Whether fd is an eventfd, by the name the kernel gives its anonymous
 * inode ("anon_inode:[eventfd]" in /proc/self/fd). */
static bool fd_is_eventfd(int fd) {
        char path[64], target[64];
        ssize_t l;

        (void) snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        l = readlink(path, target, sizeof target - 1);
        if (l < 0)
                return false;
        target[l] = 0;
        return streq(target, "anon_inode:[eventfd]");
}

/* SET_VRING_KICK, CALL and ERR: a u64 with the queue and a "no fd" bit,
 * and the fd unless that bit is set.  Puts the fd taken from m in
 * *ret_fd, or -EBADF for none; <0 when the message is wrong. */
static int get_vring_fd(VhostUserDev *d, Msg *m, int *ret_fd) {
        uint64_t v;
        int r;

        *ret_fd = -EBADF;
        r = expect(d, m, sizeof v, m->n_fds);
        if (r < 0)
                return r;
        v = payload_u64(m);
        if (v & ~(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK))
                return FAIL(d, m, -EPROTO, "unknown bits in 0x%" PRIx64, v);
        if ((v & VHOST_USER_VRING_IDX_MASK) != 0)
                return FAIL(d, m, -EPROTO, "queue %" PRIu64 ", but virtio-rng has only queue 0",
                            v & VHOST_USER_VRING_IDX_MASK);
        if (v & VHOST_USER_VRING_NOFD_MASK) {
                if (m->n_fds != 0)
                        return FAIL(d, m, -EPROTO, "%u file descriptors with the no-fd flag set", m->n_fds);
                return 0;
        }
        if (m->n_fds != 1)
                return FAIL(d, m, -EPROTO, "%u file descriptors, expected 1", m->n_fds);
        /* Kick, call and err are eventfds.  Anything else could block our
         * writes (a pipe nobody reads stalls every VM) or read as always
         * ready (a socket at end of file spins the loop). */
        if (!fd_is_eventfd(m->fds[0]))
                return FAIL(d, m, -EPROTO, "the file descriptor is not an eventfd");
        if (fd_set_nonblock(m->fds[0]) < 0)
                return FAIL(d, m, -EPROTO, "cannot make the eventfd non-blocking");
        *ret_fd = TAKE_FD(m->fds[0]);
        return 0;
}

static int on_set_vring_kick(VhostUserDev *d, Msg *m) {
        int fd, r;

        r = get_vring_fd(d, m, &fd);
        if (r < 0)
                return r;
        /* process() drains the kick even when it was not signalled (a
         * retry after throttling); that must not block.  QEMU's eventfds
         * are non-blocking already. */
        if (fd >= 0) {
                int fl = fcntl(fd, F_GETFL);

                if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
                        r = -errno;
                        (void) safe_close(fd);
                        return FAIL(d, m, r, "cannot make the kick fd non-blocking: %m");
                }
        }
        set_kick(d, fd);

        /* The ring starts here.  With no fd the front-end wants us to poll;
         * vhost_user_dev_pending() then stays true. */
        d->started = true;
        d->vq.signalled_used_valid = false;
        if (d->vq.have_addr && !d->vq.mapped)
                remap_ring(d);
        /* Buffers posted before the ring started (a restart, or a guest
         * that kicked while the ring was stopped) get no second kick. */
        if (ring_running(d))
                self_kick(d);
        return 0;
}

/* The message's fd (or none) replaces the one in slot. */
static int replace_vring_fd(VhostUserDev *d, Msg *m, int *slot) {
        int fd, r;

        r = get_vring_fd(d, m, &fd);
        if (r < 0)
                return r;
        (void) safe_close(*slot);
        *slot = fd;
        return 0;
}

static int on_set_vring_call(VhostUserDev *d, Msg *m) {
        return replace_vring_fd(d, m, &d->call_fd);
}

static int on_set_vring_err(VhostUserDev *d, Msg *m) {
        /* Kept only to tell QEMU when we give up on the device. */
        return replace_vring_fd(d, m, &d->err_fd);
}

static int on_set_vring_enable(VhostUserDev *d, Msg *m) {
        VhostUserVringState s;
        bool was;
        int r;

        r = get_state(d, m, &s);
        if (r < 0)
                return r;
        if (s.num > 1)
                return FAIL(d, m, -EPROTO, "enable value %" PRIu32 " is neither 0 nor 1", s.num);

        was = ring_running(d);
        d->enabled = s.num;
        /* QEMU 7.2 enables the ring last, after the kick fd; a buffer the
         * guest posted meanwhile has been kicked already. */
        if (!was && ring_running(d))
                self_kick(d);
        return 0;
}

static int on_unsupported(VhostUserDev *d, Msg *m) {
        char b[32];

        if (wants_ack(d, m)) {
                log_debug("vhost-user device of %s: %s is not supported, replying with failure.", dev_name(d),
                          msg_what(m, b));
                return -EOPNOTSUPP;
        }
        return FAIL(d, m, -EPROTO, "not supported, and the front-end may be waiting for a reply we cannot give");
}

static int dispatch_one(VhostUserDev *d, Msg *m) {
        switch (m->request) {
        case VHOST_USER_GET_FEATURES:
                return on_get_features(d, m);
        case VHOST_USER_SET_FEATURES:
                return on_set_features(d, m);
        case VHOST_USER_SET_OWNER:
                return on_set_owner(d, m);
        case VHOST_USER_RESET_OWNER:
                return on_reset_owner(d, m);
        case VHOST_USER_SET_MEM_TABLE:
                return on_set_mem_table(d, m);
        case VHOST_USER_SET_VRING_NUM:
                return on_set_vring_num(d, m);
        case VHOST_USER_SET_VRING_ADDR:
                return on_set_vring_addr(d, m);
        case VHOST_USER_SET_VRING_BASE:
                return on_set_vring_base(d, m);
        case VHOST_USER_GET_VRING_BASE:
                return on_get_vring_base(d, m);
        case VHOST_USER_SET_VRING_KICK:
                return on_set_vring_kick(d, m);
        case VHOST_USER_SET_VRING_CALL:
                return on_set_vring_call(d, m);
        case VHOST_USER_SET_VRING_ERR:
                return on_set_vring_err(d, m);
        case VHOST_USER_GET_PROTOCOL_FEATURES:
                return on_get_protocol_features(d, m);
        case VHOST_USER_SET_PROTOCOL_FEATURES:
                return on_set_protocol_features(d, m);
        case VHOST_USER_GET_QUEUE_NUM:
                return on_get_queue_num(d, m);
        case VHOST_USER_SET_VRING_ENABLE:
                return on_set_vring_enable(d, m);
        case VHOST_USER_RESET_DEVICE:
                return on_reset_device(d, m);
        case VHOST_USER_GET_MAX_MEM_SLOTS:
                return on_get_max_mem_slots(d, m);
        case VHOST_USER_ADD_MEM_REG:
                return on_add_mem_reg(d, m);
        case VHOST_USER_REM_MEM_REG:
                return on_rem_mem_reg(d, m);
        default:
                return on_unsupported(d, m);
        }
}

static int dispatch(VhostUserDev *d) {
        Msg m = {
                .request = d->rx_hdr.request,
                .flags = d->rx_hdr.flags,
                .size = d->rx_hdr.size,
                .payload = d->rx + VHOST_USER_HDR_SIZE,
                .fds = d->rx_fds,
                .n_fds = d->rx_n_fds,
        };
        char b[32];
        int r;

        d->stats.messages++;
        log_debug("vhost-user device of %s: %s, %" PRIu32 " bytes, %u fds%s", dev_name(d), msg_what(&m, b), m.size, m.n_fds,
                  m.flags & VHOST_USER_NEED_REPLY_MASK ? ", needs reply" : "");

        r = dispatch_one(d, &m);

        /* REPLY_ACK: every request that has no reply of its own is
         * answered 0 for success, non-zero for failure, even when the
         * failure breaks the device (so QEMU says why it stops). */
        if (r != REPLIED && wants_ack(d, &m))
                (void) reply_u64(d, &m, r < 0 ? 1 : 0);

        return d->broken ? d->broken_error : 0;
}

static void rx_reset(VhostUserDev *d) {
        for (unsigned i = 0; i < d->rx_n_fds; i++)
                d->rx_fds[i] = safe_close(d->rx_fds[i]);
        d->rx_n_fds = 0;
        d->rx_got = 0;
        d->rx_hdr = (VhostUserHeader) {};
}

/* Keeps the fds that came with this piece of the message; returns false
 * when there were more than a message may carry (the kernel closes what
 * did not fit our buffer, we close what we got). */
static bool rx_take_fds(VhostUserDev *d, struct msghdr *mh) {
        size_t n = d->rx_n_fds;
        bool ok = fdpass_collect(mh, d->rx_fds, VHOST_USER_MAX_FDS, &n);

        d->rx_n_fds = (unsigned) n;
        return ok;
}

static const char *rx_what(const VhostUserDev *d, char buf[static 32]) {
        Msg m = { .request = d->rx_hdr.request };

        if (d->rx_got < VHOST_USER_HDR_SIZE)
                return "message";
        return msg_what(&m, buf);
}

static int rx_header(VhostUserDev *d) {
        char b[32];

        if ((d->rx_hdr.flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION)
                return dev_fail(d, rx_what(d, b), -EPROTO, "protocol version %" PRIu32 ", expected %u",
                                d->rx_hdr.flags & VHOST_USER_VERSION_MASK, VHOST_USER_VERSION);
        if (d->rx_hdr.flags & VHOST_USER_REPLY_MASK)
                return dev_fail(d, rx_what(d, b), -EPROTO, "a request with the reply flag set");
        /* Bound the length before reading the payload. */
        if (d->rx_hdr.size > VHOST_USER_PAYLOAD_MAX)
                return dev_fail(d, rx_what(d, b), -EPROTO, "payload of %" PRIu32 " bytes, at most %u allowed",
                                d->rx_hdr.size, VHOST_USER_PAYLOAD_MAX);
        return 0;
}

/* Reads what has arrived of the current message, never past its end (the
 * fds of the next one must stay with it).  Returns 1 when the message is
 * complete, 0 when the rest has not arrived, <0 when the connection is
 * over. */
static int rx_step(VhostUserDev *d) {
        for (;;) {
                union {
                        struct cmsghdr align;
                        uint8_t buf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
                } control;
                struct iovec iov;
                struct msghdr mh = {
                        .msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = &control,
                        .msg_controllen = sizeof control,
                };
                size_t want;
                bool fds_ok;
                ssize_t n;
                char b[32];
                int r;

                if (d->rx_got < VHOST_USER_HDR_SIZE)
                        want = VHOST_USER_HDR_SIZE - d->rx_got;
                else
                        want = VHOST_USER_HDR_SIZE + d->rx_hdr.size - d->rx_got;
                if (want == 0)
                        return 1;

                iov = (struct iovec) { .iov_base = d->rx + d->rx_got, .iov_len = want };
                n = recvmsg(d->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return 0;
                        if (errno != ECONNRESET) {
                                r = -errno;
                                return dev_fail(d, rx_what(d, b), r, "reading from the socket failed: %m");
                        }
                        n = 0;
                }

                /* Keep (or close) the fds first, whatever happens next. */
                fds_ok = rx_take_fds(d, &mh);

                if (n == 0) {
                        if (d->rx_got == 0 && d->rx_n_fds == 0)
                                return dev_hangup(d);
                        return dev_fail(d, rx_what(d, b), -EPROTO,
                                        "connection closed in the middle of a message (%zu bytes of it arrived)",
                                        d->rx_got);
                }

                d->rx_got += (size_t) n;
                if (d->rx_got == VHOST_USER_HDR_SIZE)
                        memcpy(&d->rx_hdr, d->rx, sizeof d->rx_hdr);
                if (!fds_ok)
                        return dev_fail(d, rx_what(d, b), -EPROTO, "more than %u file descriptors",
                                        VHOST_USER_MAX_FDS);
                if (d->rx_got == VHOST_USER_HDR_SIZE) {
                        r = rx_header(d);
                        if (r < 0)
                                return r;
                }
        }
}

/* Guest memory belongs to the front-end: one that shrinks the file behind
 * a region after we mapped it turns our next access there into SIGBUS.
 * That must break this device, not kill the process serving every VM, so
 * accesses to guest memory run under a jump buffer the handler returns
 * to.  A SIGBUS anywhere else is a real fault and kills as it would. */
static __thread sigjmp_buf *guest_access;

static void sigbus_handler(int sig, siginfo_t *si, void *uc) {
        if (guest_access)
                siglongjmp(*guest_access, 1);
        (void) signal(SIGBUS, SIG_DFL);
        (void) raise(SIGBUS);
}

static void install_sigbus_handler(void) {
        static bool installed;
        struct sigaction sa = { .sa_sigaction = sigbus_handler, .sa_flags = SA_SIGINFO | SA_NODEFER };

        if (installed)
                return;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGBUS, &sa, NULL) >= 0)
                installed = true;
}

int vhost_user_dev_new(int sock_fd, const VhostUserOps *ops, void *userdata, VhostUserDev **ret) {
        _cleanup_close_ int fd = sock_fd;
        VhostUserDev *d;

        if (fd < 0 || !ret)
                return -EINVAL;
        install_sigbus_handler();

        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        if (asprintf(&d->name, "socket fd %d", fd) < 0) {
                free(d);
                return -ENOMEM;
        }

        d->fd = TAKE_FD(fd);
        d->ops = ops;
        d->userdata = userdata;
        d->kick_fd = d->call_fd = d->err_fd = -EBADF;
        d->max_regions = VHOST_USER_MAX_REGIONS;
        *ret = d;
        return 0;
}

int vhost_user_dev_set_name(VhostUserDev *d, const char *name) {
        char *s;

        s = strdup(name);
        if (!s)
                return -ENOMEM;
        free(d->name);
        d->name = s;
        return 0;
}

/* ---- handing over to a successor ---- */

int vhost_user_dev_save(const VhostUserDev *d, Json *j, StateFds *fds) {
        if (d->broken)
                return -EPROTO;

        json_uint(j, "features", d->features);
        json_uint(j, "protocol_features", d->protocol_features);
        json_uint(j, "max_regions", d->max_regions);
        json_array_begin(j, "regions");
        for (unsigned i = 0; i < d->mem.n; i++) {
                const GuestRegion *g = &d->mem.regions[i];

                json_object_begin(j, NULL);
                json_uint(j, "gpa", g->gpa);
                json_uint(j, "size", g->size);
                json_uint(j, "uva", g->uva);
                json_uint(j, "mmap_offset", g->mmap_offset);
                state_write_fd(j, fds, "fd", g->fd);
                json_object_end(j);
        }
        json_array_end(j);

        json_object_begin(j, "ring");
        json_uint(j, "num", d->vq.num);
        json_bool(j, "have_addr", d->vq.have_addr);
        json_uint(j, "desc", d->vq.desc_uva);
        json_uint(j, "avail", d->vq.avail_uva);
        json_uint(j, "used", d->vq.used_uva);
        json_uint(j, "last_avail_idx", d->vq.last_avail_idx);
        json_uint(j, "used_idx", d->vq.used_idx);
        json_uint(j, "signalled_used", d->vq.signalled_used);
        json_bool(j, "signalled_used_valid", d->vq.signalled_used_valid);
        json_bool(j, "started", d->started);
        json_bool(j, "enabled", d->enabled);
        state_write_fd(j, fds, "kick", d->kick_fd);
        state_write_fd(j, fds, "call", d->call_fd);
        state_write_fd(j, fds, "err", d->err_fd);
        json_object_end(j);

        /* A message that has only partly arrived: the rest is in the
         * socket, for the successor to read. */
        json_object_begin(j, "rx");
        state_write_hex(j, "bytes", d->rx, d->rx_got);
        json_array_begin(j, "fds");
        for (unsigned i = 0; i < d->rx_n_fds; i++)
                state_write_fd(j, fds, NULL, d->rx_fds[i]);
        json_array_end(j);
        json_object_end(j);

        json_object_begin(j, "stats");
        json_uint(j, "bytes", d->stats.bytes);
        json_uint(j, "requests", d->stats.requests);
        json_uint(j, "messages", d->stats.messages);
        json_object_end(j);
        return 0;
}

static int restore_regions(VhostUserDev *d, StateReader *r, yaml_node_t *node) {
        yaml_node_t *regions;
        size_t n;
        int k;

        k = state_get_array(r, node, "regions", &regions, &n);
        if (k < 0)
                return k;
        if (n > d->max_regions)
                return state_error(r, "%zu memory regions, more than the %u the device allows", n, d->max_regions);
        for (size_t i = 0; i < n; i++) {
                yaml_node_t *it = state_item(r, regions, i);
                uint64_t gpa, size, uva, offset;
                _cleanup_close_ int fd = -EBADF;
                GuestRegion g;

                if (state_get_u64(r, it, "gpa", UINT64_MAX, &gpa) < 0 ||
                    state_get_u64(r, it, "size", UINT64_MAX, &size) < 0 ||
                    state_get_u64(r, it, "uva", UINT64_MAX, &uva) < 0 ||
                    state_get_u64(r, it, "mmap_offset", UINT64_MAX, &offset) < 0 ||
                    state_take_fd(r, it, "fd", &fd) < 0)
                        return -EBADMSG;
                k = guest_region_map(fd, gpa, size, uva, offset, &g);
                if (k < 0)
                        return state_error(r, "memory region %zu at guest 0x%" PRIx64 " cannot be mapped again: %s", i,
                                           gpa, strerror(-k));
                if (guest_memory_add(&d->mem, &g) < 0) {
                        guest_region_unmap(&g);
                        return state_error(r, "memory region %zu at guest 0x%" PRIx64 " overlaps another", i, gpa);
                }
                d->mapped += size;
        }
        return 0;
}

static int restore_ring(VhostUserDev *d, StateReader *r, yaml_node_t *node) {
        uint64_t num, desc, avail, used, last_avail, used_idx, signalled;
        bool have_addr, signalled_valid, started, enabled;
        _cleanup_close_ int kick = -EBADF;
        yaml_node_t *ring;

        if (state_get_object(r, node, "ring", &ring) < 0 ||
            state_get_u64(r, ring, "num", VIRTQ_MAX_SIZE, &num) < 0 ||
            state_get_bool(r, ring, "have_addr", &have_addr) < 0 ||
            state_get_u64(r, ring, "desc", UINT64_MAX, &desc) < 0 ||
            state_get_u64(r, ring, "avail", UINT64_MAX, &avail) < 0 ||
            state_get_u64(r, ring, "used", UINT64_MAX, &used) < 0 ||
            state_get_u64(r, ring, "last_avail_idx", UINT16_MAX, &last_avail) < 0 ||
            state_get_u64(r, ring, "used_idx", UINT16_MAX, &used_idx) < 0 ||
            state_get_u64(r, ring, "signalled_used", UINT16_MAX, &signalled) < 0 ||
            state_get_bool(r, ring, "signalled_used_valid", &signalled_valid) < 0 ||
            state_get_bool(r, ring, "started", &started) < 0 || state_get_bool(r, ring, "enabled", &enabled) < 0 ||
            state_take_fd(r, ring, "kick", &kick) < 0 || state_take_fd(r, ring, "call", &d->call_fd) < 0 ||
            state_take_fd(r, ring, "err", &d->err_fd) < 0)
                return -EBADMSG;
        /* A ring size the protocol allows: a power of two (SET_VRING_NUM
         * checked it at the predecessor). */
        if (num & (num - 1))
                return state_error(r, "ring size %" PRIu64 " is not a power of two", num);

        d->vq.num = (unsigned) num;
        d->vq.have_addr = have_addr;
        d->vq.desc_uva = desc;
        d->vq.avail_uva = avail;
        d->vq.used_uva = used;
        d->vq.indirect = d->features & BIT(VIRTIO_RING_F_INDIRECT_DESC);
        d->vq.event_idx = d->features & BIT(VIRTIO_RING_F_EVENT_IDX);
        d->vq.last_avail_idx = (uint16_t) last_avail;
        d->vq.used_idx = (uint16_t) used_idx;
        d->vq.signalled_used = (uint16_t) signalled;
        d->vq.signalled_used_valid = signalled_valid;
        d->started = started;
        d->enabled = enabled;
        /* process() drains the kick without waiting for it. */
        if (kick >= 0 && fcntl(kick, F_SETFL, fcntl(kick, F_GETFL) | O_NONBLOCK) < 0)
                return state_error(r, "the kick fd cannot be made non-blocking: %s", strerror(errno));
        set_kick(d, TAKE_FD(kick));
        remap_ring(d);
        return 0;
}

static int restore_rx(VhostUserDev *d, StateReader *r, yaml_node_t *node) {
        yaml_node_t *rx, *fds;
        size_t n, n_fds;

        if (state_get_object(r, node, "rx", &rx) < 0 || state_get_hex(r, rx, "bytes", d->rx, sizeof d->rx, &n) < 0 || state_get_array(r, rx, "fds", &fds, &n_fds) < 0)
                return -EBADMSG;
        if (n_fds > VHOST_USER_MAX_FDS)
                return state_error(r, "a message with %zu fds", n_fds);
        d->rx_got = n;
        if (n >= VHOST_USER_HDR_SIZE) {
                memcpy(&d->rx_hdr, d->rx, sizeof d->rx_hdr);
                if (VHOST_USER_HDR_SIZE + d->rx_hdr.size < n || d->rx_hdr.size > VHOST_USER_PAYLOAD_MAX)
                        return state_error(r, "a partial message longer than its header says");
        }
        for (size_t i = 0; i < n_fds; i++) {
                uint64_t idx;

                int fd;

                if (state_item_u64(r, fds, i, SIZE_MAX, &idx) < 0 || state_dup_fd(r, idx, "rx.fds", &fd) < 0)
                        return -EBADMSG;
                d->rx_fds[d->rx_n_fds++] = fd;
        }
        return 0;
}

int vhost_user_dev_restore(int sock_fd, const VhostUserOps *ops, void *userdata, StateReader *r, yaml_node_t *node,
                           VhostUserDev **ret) {
        VhostUserDev *d = NULL;
        uint64_t features, protocol, max_regions;
        yaml_node_t *stats;
        int k;

        k = vhost_user_dev_new(sock_fd, ops, userdata, &d);
        if (k < 0)
                return k;
        if (state_get_u64(r, node, "features", UINT64_MAX, &features) < 0 ||
            state_get_u64(r, node, "protocol_features", UINT64_MAX, &protocol) < 0 ||
            state_get_u64(r, node, "max_regions", VHOST_USER_MAX_REGIONS, &max_regions) < 0 || max_regions == 0) {
                k = state_error(r, "'max_regions' is 0");
                goto fail;
        }
        d->features = features;
        d->protocol_features = protocol;
        d->max_regions = (unsigned) max_regions;
        /* Growing memory the predecessor mapped is not a change the owner
         * is asked about: it accounts for vhost_user_dev_mapped(). */
        k = restore_regions(d, r, node);
        if (k >= 0)
                k = restore_ring(d, r, node);
        if (k >= 0)
                k = restore_rx(d, r, node);
        if (k < 0)
                goto fail;
        if (state_get_object(r, node, "stats", &stats) < 0 || state_get_u64(r, stats, "bytes", UINT64_MAX, &d->stats.bytes) < 0 ||
            state_get_u64(r, stats, "requests", UINT64_MAX, &d->stats.requests) < 0 ||
            state_get_u64(r, stats, "messages", UINT64_MAX, &d->stats.messages) < 0) {
                k = -EBADMSG;
                goto fail;
        }
        /* Buffers the guest posted while nobody served it. */
        if (ring_running(d))
                self_kick(d);
        *ret = d;
        return 0;

fail:
        /* Its kick fd is watched by now: the owner drops the watch. */
        set_kick(d, -EBADF);
        vhost_user_dev_free(d);
        return k < 0 ? k : -EBADMSG;
}

_Static_assert(VHOST_USER_FILES_MAX >= VHOST_USER_MAX_REGIONS + 3 + VHOST_USER_MAX_FDS, "room for every file");

size_t vhost_user_dev_files(const VhostUserDev *d, int *fds, size_t max) {
        size_t n = 0;

#define ADD(fd)                                 \
        do {                                    \
                if ((fd) >= 0 && n < max)       \
                        fds[n++] = (fd);        \
        } while (0)
        for (unsigned i = 0; i < d->mem.n; i++)
                ADD(d->mem.regions[i].fd);
        ADD(d->kick_fd);
        ADD(d->call_fd);
        ADD(d->err_fd);
        for (unsigned i = 0; i < d->rx_n_fds; i++)
                ADD(d->rx_fds[i]);
#undef ADD
        return n;
}

int vhost_user_dev_resync(VhostUserDev *d) {
        sigjmp_buf jb;

        if (d->broken || !d->vq.mapped)
                return 0;
        /* Guest memory the front-end may have shrunk meanwhile: this
         * device fails, not the process (and every VM with it). */
        if (sigsetjmp(jb, 1)) {
                guest_access = NULL;
                return dev_fail(d, "resync", -EFAULT,
                                "guest memory vanished under us (SIGBUS): the front-end shrank a region");
        }
        guest_access = &jb;
        /* Every buffer we take is used before the next is taken
         * (virtqueue_process()), so what the guest sees used is all
         * that was served: the rest is served again, never twice. */
        virtqueue_sync_used(&d->vq);
        guest_access = NULL;
        d->vq.last_avail_idx = d->vq.used_idx;
        /* A used index published just before the crash may never have
         * been signalled; an interrupt too many costs the guest a look. */
        signal_call(d);
        if (ring_running(d))
                self_kick(d);
        return 0;
}

int vhost_user_dev_set_max_regions(VhostUserDev *d, unsigned n) {
        if (n == 0 || n > VHOST_USER_MAX_REGIONS)
                return -EINVAL;
        d->max_regions = n;
        return 0;
}

uint64_t vhost_user_dev_mapped(const VhostUserDev *d) {
        return d->mapped;
}

VhostUserDev *vhost_user_dev_free(VhostUserDev *d) {
        if (!d)
                return NULL;

        /* No kick_changed() from here: the owner is going away, and has
         * dropped its watch already (see vhost-user.h). */
        (void) safe_close(d->kick_fd);
        (void) safe_close(d->call_fd);
        (void) safe_close(d->err_fd);
        rx_reset(d);
        guest_memory_clear(&d->mem);
        (void) safe_close(d->fd);
        free(d->name);
        free(d);
        return NULL;
}

int vhost_user_dev_socket(const VhostUserDev *d) {
        return d->fd;
}

int vhost_user_dev_handle_socket(VhostUserDev *d) {
        int r;

        if (d->broken)
                return d->broken_error;

        r = rx_step(d);
        if (r < 0) {
                rx_reset(d);
                return r;
        }
        if (r == 0)
                return 0;

        /* Some messages touch guest memory (SET_VRING_ADDR reads the used
         * index): under the same guard as ring processing. */
        {
                sigjmp_buf jb;

                if (sigsetjmp(jb, 1)) {
                        guest_access = NULL;
                        rx_reset(d);
                        return dev_fail(d, "message", -EFAULT,
                                        "guest memory vanished under us (SIGBUS): the front-end shrank a region");
                }
                guest_access = &jb;
                r = dispatch(d);
                guest_access = NULL;
        }
        rx_reset(d);
        return r;
}

static size_t fill_nothing(void *userdata, uint8_t *buf, size_t n) {
        return 0;
}

static void drain_kick(VhostUserDev *d) {
        uint64_t v;

        /* One read empties an eventfd; EAGAIN when it was empty. */
        if (d->kick_fd >= 0)
                (void) !read(d->kick_fd, &v, sizeof v);
}

int vhost_user_dev_process(VhostUserDev *d) {
        VirtqRun run;
        int r;

        if (d->broken)
                return d->broken_error;

        drain_kick(d);
        d->pending = false;
        if (!ring_running(d))
                return 0;
        if (!d->vq.mapped) {
                r = virtqueue_map(&d->vq, &d->mem);
                if (r < 0) {
                        /* See remap_ring(): the table may be half-way
                         * through a change; the next ADD_MEM_REG kicks us. */
                        log_debug("vhost-user device of %s: ring not in guest memory for now: %s", dev_name(d),
                                  d->vq.error);
                        return 0;
                }
        }

        /* At most a ring's worth per call, so that one busy VM cannot keep
         * the others waiting. */
        {
                sigjmp_buf jb;

                if (sigsetjmp(jb, 1)) {
                        guest_access = NULL;
                        return dev_fail(d, "requestq", -EFAULT,
                                        "guest memory vanished under us (SIGBUS): the front-end shrank a region");
                }
                guest_access = &jb;
                r = virtqueue_process(&d->vq, &d->mem, d->vq.num,
                                      d->ops && d->ops->fill ? d->ops->fill : fill_nothing, d->userdata, &run);
                guest_access = NULL;
        }
        if (r < 0)
                return dev_fail(d, "requestq", r, "%s", d->vq.error);

        d->stats.requests += run.served;
        d->stats.bytes += run.bytes;
        if (run.signal)
                signal_call(d);

        if (run.starved)
                d->pending = true;
        else if (run.more) {
                if (d->kick_fd >= 0)
                        self_kick(d);
                else
                        d->pending = true;
        }
        return 0;
}

bool vhost_user_dev_pending(const VhostUserDev *d) {
        if (d->broken)
                return false;
        /* A ring started without a kick fd is polled: always worth a look. */
        return d->pending || (ring_running(d) && d->kick_fd < 0);
}

bool vhost_user_dev_broken(const VhostUserDev *d) {
        return d->broken;
}

const char *vhost_user_dev_broken_reason(const VhostUserDev *d) {
        return d->broken ? d->broken_reason : NULL;
}

const VhostUserStats *vhost_user_dev_stats(const VhostUserDev *d) {
        return &d->stats;
}
