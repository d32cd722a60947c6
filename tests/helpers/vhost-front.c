/* SPDX-License-Identifier: MIT */
#include <check.h>
#include <dirent.h>
#include <endian.h>
#include <inttypes.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "fdpass.h"
#include "macro.h"
#include "vhost-front.h"

#define HDR_SIZE 12U
#define MAX_SEND_FDS 16U

/* Made-up front-end addresses: the back-end must translate ring
 * addresses through them, so they must not equal anything else. */
#define LOW_UVA UINT64_C(0x7f1200000000)
#define HIGH_UVA UINT64_C(0x7f3400000000)

void vhost_front_init(VhostFront *f) {
        int sv[2];

        *f = (VhostFront) { .sock = -EBADF, .dev_sock = -EBADF, .mem_fd = -EBADF, .kick = -EBADF, .call = -EBADF };

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        f->sock = sv[0];
        f->dev_sock = sv[1];

        f->mem_fd = memfd_create("seedbed-test-guest-ram", MFD_CLOEXEC);
        ck_assert_int_ge(f->mem_fd, 0);
        ck_assert_int_eq(ftruncate(f->mem_fd, (off_t) VHOST_FRONT_MEM_SIZE), 0);
        f->mem = mmap(NULL, VHOST_FRONT_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->mem_fd, 0);
        ck_assert_ptr_ne(f->mem, MAP_FAILED);

        f->regions[0] = (VhostFrontRegion) {
                .gpa = VHOST_FRONT_LOW_GPA, .size = VHOST_FRONT_MEM_SIZE / 2, .uva = LOW_UVA, .offset = 0,
        };
        f->regions[1] = (VhostFrontRegion) {
                .gpa = VHOST_FRONT_HIGH_GPA,
                .size = VHOST_FRONT_MEM_SIZE / 2,
                .uva = HIGH_UVA,
                .offset = VHOST_FRONT_MEM_SIZE / 2,
        };
        f->n_regions = 2;

        f->kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        ck_assert_int_ge(f->kick, 0);
        f->call = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        ck_assert_int_ge(f->call, 0);

        vhost_front_ring_init(f, 4);
}

void vhost_front_done(VhostFront *f) {
        if (f->mem && f->mem != MAP_FAILED)
                (void) munmap(f->mem, VHOST_FRONT_MEM_SIZE);
        (void) safe_close(f->sock);
        (void) safe_close(f->dev_sock);
        (void) safe_close(f->mem_fd);
        (void) safe_close(f->kick);
        (void) safe_close(f->call);
        *f = (VhostFront) { .sock = -EBADF, .dev_sock = -EBADF, .mem_fd = -EBADF, .kick = -EBADF, .call = -EBADF };
}

int vhost_front_take_dev_socket(VhostFront *f) {
        return TAKE_FD(f->dev_sock);
}

void vhost_front_set_pump(VhostFront *f, int (*pump)(void *userdata), void *userdata) {
        f->pump = pump;
        f->pump_userdata = userdata;
}

unsigned vhost_front_count_fds(void) {
        unsigned n = 0;
        struct dirent *de;
        DIR *d;

        d = opendir("/proc/self/fd");
        ck_assert_ptr_nonnull(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        (void) closedir(d);
        /* Less the one opendir() used. */
        return n - 1;
}

int vhost_front_send_bytes(VhostFront *f, const void *buf, size_t n, const int *fds, unsigned n_fds) {
        union {
                struct cmsghdr align;
                uint8_t buf[CMSG_SPACE(sizeof(int) * MAX_SEND_FDS)];
        } control = {};
        struct iovec iov = { .iov_base = (void *) buf, .iov_len = n };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t k;

        ck_assert_uint_le(n_fds, MAX_SEND_FDS);
        fdpass_attach(&mh, &control, fds, n_fds);

        k = sendmsg(f->sock, &mh, MSG_NOSIGNAL);
        if (k < 0)
                return -errno;
        return (size_t) k == n ? 0 : -EIO;
}

int vhost_front_send(VhostFront *f, uint32_t request, uint32_t flags, const void *payload, uint32_t size,
                     const int *fds, unsigned n_fds) {
        uint8_t buf[HDR_SIZE + 4096];
        uint32_t hdr[3] = { request, flags, size };

        ck_assert_uint_le(size, sizeof buf - HDR_SIZE);
        memcpy(buf, hdr, HDR_SIZE);
        if (size > 0)
                memcpy(buf + HDR_SIZE, payload, size);
        return vhost_front_send_bytes(f, buf, HDR_SIZE + size, fds, n_fds);
}

bool vhost_front_has_reply(VhostFront *f) {
        struct pollfd p = { .fd = f->sock, .events = POLLIN };

        return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

static int read_exact(int fd, void *buf, size_t n, int timeout_ms) {
        size_t got = 0;

        while (got < n) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t k;

                if (poll(&p, 1, timeout_ms) <= 0)
                        return -ETIMEDOUT;
                k = recv(fd, (uint8_t *) buf + got, n - got, MSG_DONTWAIT);
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        return -ECONNRESET;
                got += (size_t) k;
        }
        return 0;
}

int vhost_front_recv(VhostFront *f, uint32_t *ret_request, uint32_t *ret_flags, void *payload, uint32_t max,
                     uint32_t *ret_size, int timeout_ms) {
        uint32_t hdr[3];
        int r;

        r = read_exact(f->sock, hdr, HDR_SIZE, timeout_ms);
        if (r < 0)
                return r;
        if (hdr[2] > max)
                return -EMSGSIZE;
        r = read_exact(f->sock, payload, hdr[2], timeout_ms);
        if (r < 0)
                return r;
        *ret_request = hdr[0];
        *ret_flags = hdr[1];
        *ret_size = hdr[2];
        return 0;
}

static int pump(VhostFront *f) {
        f->pump_result = f->pump ? f->pump(f->pump_userdata) : 0;
        return f->pump_result;
}

/* Sends, lets the back-end run, and reads a reply of reply_size bytes
 * when one is expected. */
static int call(VhostFront *f, uint32_t request, uint32_t flags, const void *payload, uint32_t size, const int *fds,
                unsigned n_fds, void *reply, uint32_t reply_size) {
        uint32_t rq, rf, rs;
        uint8_t buf[64];
        int r, p;

        r = vhost_front_send(f, request, VU_FLAG_VERSION | flags, payload, size, fds, n_fds);
        if (r < 0)
                return r;
        p = pump(f);
        if (!reply)
                return p;

        /* In one thread the reply is there already, or never comes. */
        r = vhost_front_recv(f, &rq, &rf, buf, sizeof buf, &rs, f->pump ? 0 : 2000);
        if (r < 0)
                return p < 0 ? p : r;
        if (rq != request || rf != (VU_FLAG_VERSION | VU_FLAG_REPLY) || rs != reply_size)
                return -EBADMSG;
        memcpy(reply, buf, reply_size);
        return p;
}

static int call_acked(VhostFront *f, uint32_t request, bool need_reply, const void *payload, uint32_t size,
                      const int *fds, unsigned n_fds) {
        uint64_t ack = 0;
        int r;

        if (!need_reply)
                return call(f, request, 0, payload, size, fds, n_fds, NULL, 0);
        r = call(f, request, VU_FLAG_NEED_REPLY, payload, size, fds, n_fds, &ack, sizeof ack);
        if (r < 0)
                return r;
        return ack == 0 ? 0 : -EIO;
}

int vhost_front_get_u64(VhostFront *f, uint32_t request, uint64_t *ret) {
        return call(f, request, 0, NULL, 0, NULL, 0, ret, sizeof *ret);
}

int vhost_front_set_u64(VhostFront *f, uint32_t request, uint64_t v, bool need_reply) {
        return call_acked(f, request, need_reply, &v, sizeof v, NULL, 0);
}

int vhost_front_simple(VhostFront *f, uint32_t request, bool need_reply) {
        return call_acked(f, request, need_reply, NULL, 0, NULL, 0);
}

int vhost_front_set_state(VhostFront *f, uint32_t request, uint32_t index, uint32_t num, bool need_reply) {
        uint32_t s[2] = { index, num };

        return call_acked(f, request, need_reply, s, sizeof s, NULL, 0);
}

int vhost_front_get_vring_base(VhostFront *f, uint32_t *ret_num) {
        uint32_t s[2] = { 0, 0 }, reply[2];
        int r;

        r = call(f, VU_GET_VRING_BASE, 0, s, sizeof s, NULL, 0, reply, sizeof reply);
        if (r < 0)
                return r;
        if (reply[0] != 0)
                return -EBADMSG;
        *ret_num = reply[1];
        return 0;
}

static void put_region(uint8_t *p, const VhostFrontRegion *r) {
        uint64_t v[4] = { r->gpa, r->size, r->uva, r->offset };

        memcpy(p, v, sizeof v);
}

int vhost_front_set_mem_table(VhostFront *f, bool need_reply) {
        uint8_t buf[8 + 8 * 32] = {};
        uint32_t n = f->n_regions;
        int fds[8];

        ck_assert_uint_le(n, 8);
        memcpy(buf, &n, sizeof n);
        for (unsigned i = 0; i < n; i++) {
                put_region(buf + 8 + 32 * i, &f->regions[i]);
                fds[i] = f->mem_fd; /* QEMU too sends one fd per region */
        }
        return call_acked(f, VU_SET_MEM_TABLE, need_reply, buf, 8 + 32 * n, fds, n);
}

int vhost_front_add_mem_reg(VhostFront *f, int fd, const VhostFrontRegion *r, bool need_reply) {
        uint8_t buf[40] = {};

        put_region(buf + 8, r);
        return call_acked(f, VU_ADD_MEM_REG, need_reply, buf, sizeof buf, &fd, 1);
}

int vhost_front_rem_mem_reg(VhostFront *f, const VhostFrontRegion *r, bool need_reply) {
        uint8_t buf[40] = {};

        put_region(buf + 8, r);
        return call_acked(f, VU_REM_MEM_REG, need_reply, buf, sizeof buf, NULL, 0);
}

static uint64_t gpa_to_uva(VhostFront *f, uint64_t gpa) {
        for (unsigned i = 0; i < f->n_regions; i++) {
                const VhostFrontRegion *r = &f->regions[i];

                if (gpa >= r->gpa && gpa - r->gpa < r->size)
                        return r->uva + (gpa - r->gpa);
        }
        ck_abort_msg("guest address 0x%" PRIx64 " is in no region", gpa);
        return 0;
}

int vhost_front_set_vring_addr(VhostFront *f) {
        struct {
                uint32_t index, flags;
                uint64_t desc, used, avail, log;
        } a = {
                .desc = gpa_to_uva(f, VHOST_FRONT_DESC_GPA),
                .used = gpa_to_uva(f, VHOST_FRONT_USED_GPA),
                .avail = gpa_to_uva(f, VHOST_FRONT_AVAIL_GPA),
                .log = 0,
        };

        return call(f, VU_SET_VRING_ADDR, 0, &a, sizeof a, NULL, 0, NULL, 0);
}

int vhost_front_set_vring_fd(VhostFront *f, uint32_t request, int fd) {
        uint64_t v = 0;

        if (fd < 0)
                v |= VU_VRING_NOFD;
        return call(f, request, 0, &v, sizeof v, fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0, NULL, 0);
}

int vhost_front_connect(VhostFront *f, unsigned num, uint64_t want_features, uint64_t want_protocol) {
        uint64_t features = 0, protocol = 0, v;
        bool reply_ack;
        int masked, r;

        vhost_front_ring_init(f, num);

        /* vhost_user_backend_init() */
        r = vhost_front_get_u64(f, VU_GET_FEATURES, &features);
        if (r < 0)
                return r;
        if (features & VU_F_PROTOCOL_FEATURES) {
                r = vhost_front_get_u64(f, VU_GET_PROTOCOL_FEATURES, &protocol);
                if (r < 0)
                        return r;
                /* QEMU acks what it knows, less CONFIG for devices
                 * without a config notifier (vhost-user-rng). */
                protocol &= want_protocol & ~VU_PF_CONFIG;
                r = vhost_front_set_u64(f, VU_SET_PROTOCOL_FEATURES, protocol, false);
                if (r < 0)
                        return r;
                if (protocol & VU_PF_MQ) {
                        r = vhost_front_get_u64(f, VU_GET_QUEUE_NUM, &v);
                        if (r < 0)
                                return r;
                        if (v < 1)
                                return -EINVAL;
                }
                if (protocol & VU_PF_CONFIGURE_MEM_SLOTS) {
                        r = vhost_front_get_u64(f, VU_GET_MAX_MEM_SLOTS, &v);
                        if (r < 0)
                                return r;
                        if (v < f->n_regions)
                                return -EINVAL;
                }
        }
        reply_ack = protocol & VU_PF_REPLY_ACK;

        /* vhost_dev_init(): owner, features again, and the masked call
         * notifier of each queue. */
        r = vhost_front_simple(f, VU_SET_OWNER, false);
        if (r < 0)
                return r;
        r = vhost_front_get_u64(f, VU_GET_FEATURES, &v);
        if (r < 0)
                return r;
        masked = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        ck_assert_int_ge(masked, 0);
        r = vhost_front_set_vring_fd(f, VU_SET_VRING_CALL, masked);
        (void) safe_close(masked);
        if (r < 0)
                return r;

        /* vhost_dev_start() at DRIVER_OK. */
        v = want_features & features;
        if (features & VU_F_PROTOCOL_FEATURES)
                v |= VU_F_PROTOCOL_FEATURES;
        r = vhost_front_set_u64(f, VU_SET_FEATURES, v, false);
        if (r < 0)
                return r;
        if (protocol & VU_PF_CONFIGURE_MEM_SLOTS)
                for (unsigned i = 0; i < f->n_regions; i++) {
                        r = vhost_front_add_mem_reg(f, f->mem_fd, &f->regions[i], reply_ack);
                        if (r < 0)
                                return r;
                }
        else {
                r = vhost_front_set_mem_table(f, reply_ack);
                if (r < 0)
                        return r;
        }
        r = vhost_front_set_state(f, VU_SET_VRING_NUM, 0, num, false);
        if (r < 0)
                return r;
        r = vhost_front_set_state(f, VU_SET_VRING_BASE, 0, f->avail_idx, false);
        if (r < 0)
                return r;
        r = vhost_front_set_vring_addr(f);
        if (r < 0)
                return r;
        r = vhost_front_set_vring_fd(f, VU_SET_VRING_KICK, f->kick);
        if (r < 0)
                return r;
        if (features & VU_F_PROTOCOL_FEATURES) {
                r = vhost_front_set_state(f, VU_SET_VRING_ENABLE, 0, 1, false);
                if (r < 0)
                        return r;
        }
        /* vu_rng_start() unmasks: the guest's own notifier. */
        return vhost_front_set_vring_fd(f, VU_SET_VRING_CALL, f->call);
}

void vhost_front_ring_init(VhostFront *f, unsigned num) {
        ck_assert_uint_le(num, VHOST_FRONT_MAX_NUM);
        f->num = num;
        f->avail_idx = 0;
        f->last_used = 0;
        f->next_desc = 0;
        f->data_low = VHOST_FRONT_DATA_GPA;
        f->data_high = VHOST_FRONT_HIGH_GPA;
        memset(f->mem + VHOST_FRONT_DESC_GPA, 0, VHOST_FRONT_DATA_GPA - VHOST_FRONT_DESC_GPA);
}

void *vhost_front_ptr(VhostFront *f, uint64_t gpa, size_t len) {
        /* Our own view of the memfd, by the default layout. */
        for (unsigned i = 0; i < 2; i++) {
                const VhostFrontRegion *r = &f->regions[i];

                if (gpa >= r->gpa && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa))
                        return f->mem + r->offset + (gpa - r->gpa);
        }
        ck_abort_msg("guest address 0x%" PRIx64 "+%zu is not in guest RAM", gpa, len);
        return NULL;
}

uint64_t vhost_front_alloc(VhostFront *f, size_t size, bool high) {
        uint64_t *next = high ? &f->data_high : &f->data_low;
        uint64_t gpa = *next;

        memset(vhost_front_ptr(f, gpa, size), 0, size);
        *next += (size + 15) & ~(size_t) 15;
        return gpa;
}

void vhost_front_write_desc(VhostFront *f, uint64_t table_gpa, unsigned i, uint64_t addr, uint32_t len,
                            uint16_t flags, uint16_t next) {
        struct {
                uint64_t addr;
                uint32_t len;
                uint16_t flags, next;
        } d = { htole64(addr), htole32(len), htole16(flags), htole16(next) };

        memcpy(vhost_front_ptr(f, table_gpa + 16 * (uint64_t) i, sizeof d), &d, sizeof d);
}

static uint16_t *avail_field(VhostFront *f, unsigned i) {
        /* flags, idx, ring[num], used_event */
        return vhost_front_ptr(f, VHOST_FRONT_AVAIL_GPA + 2 * (uint64_t) i, 2);
}

void vhost_front_set_avail_idx(VhostFront *f, uint16_t idx) {
        __atomic_store_n(avail_field(f, 1), htole16(idx), __ATOMIC_RELEASE);
        f->avail_idx = idx;
}

void vhost_front_publish(VhostFront *f, uint16_t head) {
        *avail_field(f, 2 + f->avail_idx % f->num) = htole16(head);
        vhost_front_set_avail_idx(f, (uint16_t) (f->avail_idx + 1));
}

uint16_t vhost_front_post(VhostFront *f, const VhostFrontSeg *segs, unsigned n, bool indirect) {
        uint16_t head = f->next_desc % f->num;

        ck_assert_uint_gt(n, 0);
        if (indirect) {
                uint64_t table = vhost_front_alloc(f, 16 * n, false);

                for (unsigned i = 0; i < n; i++)
                        vhost_front_write_desc(f, table, i, segs[i].gpa, segs[i].len,
                                               (segs[i].readable ? 0 : VQ_DESC_F_WRITE) |
                                                       (i + 1 < n ? VQ_DESC_F_NEXT : 0),
                                               (uint16_t) (i + 1 < n ? i + 1 : 0));
                vhost_front_write_desc(f, VHOST_FRONT_DESC_GPA, head, table, 16 * n, VQ_DESC_F_INDIRECT, 0);
                f->next_desc++;
        } else {
                ck_assert_uint_le(n, f->num);
                for (unsigned i = 0; i < n; i++) {
                        uint16_t d = (uint16_t) ((head + i) % f->num), next = (uint16_t) ((head + i + 1) % f->num);

                        vhost_front_write_desc(f, VHOST_FRONT_DESC_GPA, d, segs[i].gpa, segs[i].len,
                                               (segs[i].readable ? 0 : VQ_DESC_F_WRITE) |
                                                       (i + 1 < n ? VQ_DESC_F_NEXT : 0),
                                               i + 1 < n ? next : 0);
                }
                f->next_desc += n;
        }
        vhost_front_publish(f, head);
        return head;
}

static void *used_ptr(VhostFront *f, size_t off, size_t len) {
        return vhost_front_ptr(f, VHOST_FRONT_USED_GPA + off, len);
}

uint16_t vhost_front_used_idx(VhostFront *f) {
        return le16toh(__atomic_load_n((uint16_t *) used_ptr(f, 2, 2), __ATOMIC_ACQUIRE));
}

bool vhost_front_pop_used(VhostFront *f, uint32_t *ret_id, uint32_t *ret_len) {
        uint32_t e[2];

        if (vhost_front_used_idx(f) == f->last_used)
                return false;
        memcpy(e, used_ptr(f, 4 + 8 * (size_t) (f->last_used % f->num), 8), sizeof e);
        *ret_id = le32toh(e[0]);
        *ret_len = le32toh(e[1]);
        f->last_used++;
        return true;
}

void vhost_front_set_used_event(VhostFront *f, uint16_t v) {
        __atomic_store_n(avail_field(f, 2 + f->num), htole16(v), __ATOMIC_SEQ_CST);
}

uint16_t vhost_front_avail_event(VhostFront *f) {
        return le16toh(__atomic_load_n((uint16_t *) used_ptr(f, 4 + 8 * (size_t) f->num, 2), __ATOMIC_SEQ_CST));
}

void vhost_front_set_avail_flags(VhostFront *f, uint16_t flags) {
        __atomic_store_n(avail_field(f, 0), htole16(flags), __ATOMIC_SEQ_CST);
}

void vhost_front_kick(VhostFront *f) {
        ck_assert_int_eq(eventfd_write(f->kick, 1), 0);
}

uint64_t vhost_front_calls(VhostFront *f) {
        eventfd_t v;

        if (eventfd_read(f->call, &v) < 0) {
                ck_assert_int_eq(errno, EAGAIN);
                return 0;
        }
        return v;
}

bool vhost_front_kick_pending(VhostFront *f) {
        struct pollfd p = { .fd = f->kick, .events = POLLIN };

        return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}
