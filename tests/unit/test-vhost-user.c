/* SPDX-License-Identifier: MIT */
/* The vhost-user engine against a front-end that plays QEMU and the guest
 * driver: negotiation, memory tables, the ring with single, chained and
 * indirect buffers, notifications both ways, and front-ends and guests
 * that break the rules.  Every test checks that no fd leaked. */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "macro.h"
#include "testmain.h"
#include "vhost-front.h"
#include "vhost-user.h"

#define FEATURES_ALL (VU_F_VERSION_1 | VU_F_RING_INDIRECT_DESC | VU_F_RING_EVENT_IDX)
#define PROTOCOL_ALL (VU_PF_MQ | VU_PF_REPLY_ACK | VU_PF_RESET_DEVICE | VU_PF_CONFIGURE_MEM_SLOTS | VU_PF_CONFIG)
#define PROTOCOL_MEM_TABLE (VU_PF_MQ | VU_PF_REPLY_ACK | VU_PF_RESET_DEVICE)

static VhostFront f;
static VhostUserDev *dev;
static unsigned fds_before;

/* Deterministic "entropy": byte number pos of the stream is fill_byte(pos),
 * so a test knows which bytes must have landed where. */
static uint64_t fill_pos;
static size_t fill_budget;
static unsigned fill_calls;
static int kick_watched;
static unsigned kick_changes;

static uint8_t fill_byte(uint64_t pos) {
        return (uint8_t) ((pos * UINT64_C(0x9e3779b97f4a7c15)) >> 56);
}

static size_t test_fill(void *userdata, uint8_t *buf, size_t n) {
        size_t k = MIN(n, fill_budget);

        for (size_t i = 0; i < k; i++)
                buf[i] = fill_byte(fill_pos++);
        fill_budget -= k;
        fill_calls++;
        return k;
}

static void test_kick_changed(void *userdata, int old_fd, int new_fd) {
        /* The engine promises old_fd is still open here. */
        if (old_fd >= 0)
                ck_assert_int_ge(fcntl(old_fd, F_GETFD), 0);
        ck_assert_int_eq(old_fd, kick_watched);
        kick_watched = new_fd;
        kick_changes++;
}

/* The owner's view of the guest memory mapped, and its cap. */
static uint64_t mapped_seen, memory_cap;
static unsigned memory_refusals;

static int test_memory_changed(void *userdata, uint64_t old_bytes, uint64_t new_bytes, char *why, size_t why_size) {
        ck_assert_uint_eq(old_bytes, mapped_seen);
        if (new_bytes > old_bytes && new_bytes > memory_cap) {
                memory_refusals++;
                (void) snprintf(why, why_size, "over the test's cap");
                return -ENOMEM;
        }
        mapped_seen = new_bytes;
        return 0;
}

static const VhostUserOps ops = {
        .fill = test_fill,
        .kick_changed = test_kick_changed,
        .memory_changed = test_memory_changed,
};

static int pump_dev(void *userdata) {
        return vhost_user_dev_handle_socket(dev);
}

static void setup(void) {
        fds_before = vhost_front_count_fds();
        fill_pos = 0;
        fill_budget = SIZE_MAX;
        fill_calls = 0;
        kick_watched = -EBADF;
        kick_changes = 0;
        mapped_seen = 0;
        memory_cap = UINT64_MAX;
        memory_refusals = 0;

        vhost_front_init(&f);
        ck_assert_int_eq(vhost_user_dev_new(vhost_front_take_dev_socket(&f), &ops, NULL, &dev), 0);
        ck_assert_int_eq(vhost_user_dev_set_name(dev, "test-vm"), 0);
        vhost_front_set_pump(&f, pump_dev, NULL);
}

static void teardown(void) {
        dev = vhost_user_dev_free(dev);
        vhost_front_done(&f);
        ck_assert_uint_eq(vhost_front_count_fds(), fds_before);
}

static void connect_ok(unsigned num, uint64_t features, uint64_t protocol) {
        ck_assert_int_eq(vhost_front_connect(&f, num, features, protocol), 0);
        ck_assert(!vhost_user_dev_broken(dev));
        ck_assert_int_ge(kick_watched, 0);
}

static void check_bytes(uint64_t gpa, uint32_t len, uint64_t pos) {
        const uint8_t *p = vhost_front_ptr(&f, gpa, len);

        for (uint32_t i = 0; i < len; i++)
                ck_assert_msg(p[i] == fill_byte(pos + i), "byte %u at 0x%" PRIx64 " is 0x%02x, expected 0x%02x", i,
                              gpa, p[i], fill_byte(pos + i));
}

static void check_zero(uint64_t gpa, uint32_t len) {
        const uint8_t *p = vhost_front_ptr(&f, gpa, len);

        for (uint32_t i = 0; i < len; i++)
                ck_assert_msg(p[i] == 0, "byte %u at 0x%" PRIx64 " was written", i, gpa);
}

static void check_used(uint16_t id, uint32_t len) {
        uint32_t uid, ulen;

        ck_assert(vhost_front_pop_used(&f, &uid, &ulen));
        ck_assert_uint_eq(uid, id);
        ck_assert_uint_eq(ulen, len);
}

static void check_no_used(void) {
        uint32_t uid, ulen;

        ck_assert(!vhost_front_pop_used(&f, &uid, &ulen));
}

static void check_broken(int r, const char *needle) {
        const char *reason = vhost_user_dev_broken_reason(dev);

        ck_assert_int_lt(r, 0);
        ck_assert(vhost_user_dev_broken(dev));
        ck_assert_ptr_nonnull(reason);
        ck_assert_msg(strstr(reason, needle), "reason '%s' does not mention '%s'", reason, needle);
        /* Broken stays broken, whatever comes next. */
        ck_assert_int_lt(vhost_user_dev_process(dev), 0);
        ck_assert_int_lt(vhost_user_dev_handle_socket(dev), 0);
        ck_assert(!vhost_user_dev_pending(dev));
}

/* Posts one writable buffer and serves it. */
static uint16_t serve_one(uint64_t gpa, uint32_t len) {
        VhostFrontSeg s = { .gpa = gpa, .len = len };
        uint16_t head = vhost_front_post(&f, &s, 1, false);

        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        return head;
}

/* ---- negotiation ---- */

START_TEST(test_features) {
        uint64_t v;

        ck_assert_int_eq(vhost_front_get_u64(&f, VU_GET_FEATURES, &v), 0);
        ck_assert_uint_eq(v, VU_F_VERSION_1 | VU_F_RING_INDIRECT_DESC | VU_F_RING_EVENT_IDX | VU_F_PROTOCOL_FEATURES);

        ck_assert_int_eq(vhost_front_get_u64(&f, VU_GET_PROTOCOL_FEATURES, &v), 0);
        ck_assert_uint_eq(v & (VU_PF_MQ | VU_PF_REPLY_ACK | VU_PF_RESET_DEVICE | VU_PF_CONFIGURE_MEM_SLOTS),
                          VU_PF_MQ | VU_PF_REPLY_ACK | VU_PF_RESET_DEVICE | VU_PF_CONFIGURE_MEM_SLOTS);
        /* virtio-rng has no config space. */
        ck_assert_uint_eq(v & VU_PF_CONFIG, 0);
        ck_assert_int_eq(vhost_front_set_u64(&f, VU_SET_PROTOCOL_FEATURES, v, false), 0);

        ck_assert_int_eq(vhost_front_get_u64(&f, VU_GET_QUEUE_NUM, &v), 0);
        ck_assert_uint_eq(v, 1);
        ck_assert_int_eq(vhost_front_get_u64(&f, VU_GET_MAX_MEM_SLOTS, &v), 0);
        ck_assert_uint_ge(v, 8);

        /* QEMU 7.2 passes the guest's features through, including ones we
         * never offered (RING_RESET): ignored, not fatal. */
        ck_assert_int_eq(vhost_front_set_u64(&f, VU_SET_FEATURES,
                                             VU_F_VERSION_1 | VU_F_RING_EVENT_IDX | VU_F_PROTOCOL_FEATURES |
                                                     VU_F_RING_RESET,
                                             false),
                         0);
        ck_assert(!vhost_user_dev_broken(dev));
        ck_assert_uint_eq(vhost_user_dev_stats(dev)->messages, 6);
}
END_TEST

START_TEST(test_features_refused) {
        /* A packed ring would be read as a split one: refuse. */
        check_broken(vhost_front_set_u64(&f, VU_SET_FEATURES, VU_F_VERSION_1 | VU_F_RING_PACKED, false),
                     "VHOST_USER_SET_FEATURES");
}
END_TEST

START_TEST(test_protocol_features_refused) {
        check_broken(vhost_front_set_u64(&f, VU_SET_PROTOCOL_FEATURES, VU_PF_CONFIG, false), "did not offer");
}
END_TEST

START_TEST(test_qemu_sequence) {
        /* Everything QEMU 7.2 sends up to a running ring, on both memory
         * paths. */
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        ck_assert_uint_eq(vhost_user_dev_stats(dev)->messages, 17);
        ck_assert(!vhost_front_has_reply(&f));
}
END_TEST

START_TEST(test_qemu_sequence_mem_table) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_MEM_TABLE);
        ck_assert_uint_eq(vhost_user_dev_stats(dev)->messages, 15);
        ck_assert(!vhost_front_has_reply(&f));
}
END_TEST

START_TEST(test_reply_ack) {
        uint32_t s[2] = { 0, 3 }, rq, rf, rs;
        uint64_t ack;

        /* Before REPLY_ACK is agreed, NEED_REPLY means nothing. */
        ck_assert_int_eq(vhost_front_send(&f, VU_SET_OWNER, VU_FLAG_VERSION | VU_FLAG_NEED_REPLY, NULL, 0, NULL, 0),
                         0);
        ck_assert_int_eq(vhost_user_dev_handle_socket(dev), 0);
        ck_assert(!vhost_front_has_reply(&f));

        ck_assert_int_eq(vhost_front_set_u64(&f, VU_SET_PROTOCOL_FEATURES, VU_PF_REPLY_ACK, false), 0);
        ck_assert_int_eq(vhost_front_simple(&f, VU_SET_OWNER, true), 0);
        ck_assert_int_eq(vhost_front_set_state(&f, VU_SET_VRING_NUM, 0, 8, true), 0);
        /* Requests with replies of their own get no extra ack. */
        ck_assert_int_eq(vhost_front_send(&f, VU_GET_FEATURES, VU_FLAG_VERSION | VU_FLAG_NEED_REPLY, NULL, 0, NULL, 0),
                         0);
        ck_assert_int_eq(vhost_user_dev_handle_socket(dev), 0);
        ck_assert_int_eq(vhost_front_recv(&f, &rq, &rf, &ack, sizeof ack, &rs, 0), 0);
        ck_assert(!vhost_front_has_reply(&f));

        /* A request that breaks the device is still answered: failure. */
        ck_assert_int_eq(vhost_front_send(&f, VU_SET_VRING_NUM, VU_FLAG_VERSION | VU_FLAG_NEED_REPLY, s, sizeof s,
                                          NULL, 0),
                         0);
        check_broken(vhost_user_dev_handle_socket(dev), "not a power of 2");
        ck_assert_int_eq(vhost_front_recv(&f, &rq, &rf, &ack, sizeof ack, &rs, 0), 0);
        ck_assert_uint_eq(rq, VU_SET_VRING_NUM);
        ck_assert_uint_eq(rf, VU_FLAG_VERSION | VU_FLAG_REPLY);
        ck_assert_uint_eq(rs, sizeof ack);
        ck_assert_uint_ne(ack, 0);
}
END_TEST

START_TEST(test_unsupported_acked) {
        uint8_t config[12 + 8] = {};
        uint32_t rq, rf, rs;
        uint64_t ack, v;

        ck_assert_int_eq(vhost_front_set_u64(&f, VU_SET_PROTOCOL_FEATURES, VU_PF_REPLY_ACK, false), 0);
        /* Refused, and the connection goes on. */
        ck_assert_int_eq(vhost_front_send(&f, VU_SET_CONFIG, VU_FLAG_VERSION | VU_FLAG_NEED_REPLY, config,
                                          sizeof config, NULL, 0),
                         0);
        ck_assert_int_eq(vhost_user_dev_handle_socket(dev), 0);
        ck_assert_int_eq(vhost_front_recv(&f, &rq, &rf, &ack, sizeof ack, &rs, 0), 0);
        ck_assert_uint_eq(rq, VU_SET_CONFIG);
        ck_assert_uint_ne(ack, 0);
        ck_assert(!vhost_user_dev_broken(dev));
        ck_assert_int_eq(vhost_front_get_u64(&f, VU_GET_FEATURES, &v), 0);
}
END_TEST

START_TEST(test_unsupported_breaks) {
        check_broken(vhost_front_simple(&f, 99, false), "request 99");
}
END_TEST

START_TEST(test_unsupported_with_fd) {
        uint64_t log[2] = { 4096, 0 };
        int fd = eventfd(0, EFD_CLOEXEC);

        /* SET_LOG_BASE carries an fd we never use: closed all the same. */
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(vhost_front_send(&f, VU_SET_LOG_BASE, VU_FLAG_VERSION, log, sizeof log, &fd, 1), 0);
        (void) close(fd);
        check_broken(vhost_user_dev_handle_socket(dev), "VHOST_USER_SET_LOG_BASE");
}
END_TEST

START_TEST(test_message_in_pieces) {
        uint32_t hdr[3] = { VU_GET_FEATURES, VU_FLAG_VERSION, 0 }, rq, rf, rs;
        uint64_t v;

        /* A message may arrive in pieces: nothing happens until it is whole. */
        ck_assert_int_eq(vhost_front_send_bytes(&f, hdr, 5, NULL, 0), 0);
        ck_assert_int_eq(vhost_user_dev_handle_socket(dev), 0);
        ck_assert(!vhost_front_has_reply(&f));
        ck_assert_int_eq(vhost_front_send_bytes(&f, (uint8_t *) hdr + 5, 7, NULL, 0), 0);
        ck_assert_int_eq(vhost_user_dev_handle_socket(dev), 0);
        ck_assert_int_eq(vhost_front_recv(&f, &rq, &rf, &v, sizeof v, &rs, 0), 0);
        ck_assert_uint_eq(rq, VU_GET_FEATURES);
        ck_assert(v & VU_F_PROTOCOL_FEATURES);
        /* Nothing there: not an error. */
        ck_assert_int_eq(vhost_user_dev_handle_socket(dev), 0);
}
END_TEST

/* ---- memory ---- */

START_TEST(test_set_mem_table) {
        uint64_t low, high, pos;
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_MEM_TABLE);

        /* The high region starts 1 MiB into the memfd (mmap_offset). */
        high = vhost_front_alloc(&f, 64, true);
        pos = fill_pos;
        head = serve_one(high, 64);
        check_used(head, 64);
        check_bytes(high, 64, pos);

        low = vhost_front_alloc(&f, 64, false);
        pos = fill_pos;
        head = serve_one(low, 64);
        check_used(head, 64);
        check_bytes(low, 64, pos);
}
END_TEST

START_TEST(test_mem_table_replaced) {
        uint64_t high;

        connect_ok(4, FEATURES_ALL, PROTOCOL_MEM_TABLE);
        /* SET_MEM_TABLE replaces the whole table: the high region is gone. */
        f.n_regions = 1;
        ck_assert_int_eq(vhost_front_set_mem_table(&f, true), 0);

        high = vhost_front_alloc(&f, 64, true);
        (void) vhost_front_post(&f, &(VhostFrontSeg) { .gpa = high, .len = 64 }, 1, false);
        check_broken(vhost_user_dev_process(dev), "not in guest memory");
}
END_TEST

START_TEST(test_add_rem_mem_reg) {
        VhostFrontRegion extra = {
                .gpa = UINT64_C(0x200000000), .size = 64 * 1024, .uva = UINT64_C(0x7f5600000000), .offset = 0,
        };
        VhostFrontSeg s = { .gpa = extra.gpa + 0x100, .len = 64 };
        uint8_t *p;
        uint64_t pos;
        uint16_t head;
        int fd;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);

        /* Hot-plugged memory: a region from another memfd. */
        fd = memfd_create("seedbed-test-dimm", MFD_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(ftruncate(fd, (off_t) extra.size), 0);
        p = mmap(NULL, extra.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ck_assert_ptr_ne(p, MAP_FAILED);
        ck_assert_int_eq(vhost_front_add_mem_reg(&f, fd, &extra, true), 0);
        (void) close(fd);

        pos = fill_pos;
        head = vhost_front_post(&f, &s, 1, false);
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        check_used(head, 64);
        for (unsigned i = 0; i < 64; i++)
                ck_assert_uint_eq(p[0x100 + i], fill_byte(pos + i));

        /* Unplugged: a buffer there is outside guest memory now. */
        ck_assert_int_eq(vhost_front_rem_mem_reg(&f, &extra, true), 0);
        (void) vhost_front_post(&f, &s, 1, false);
        check_broken(vhost_user_dev_process(dev), "not in guest memory");
        (void) munmap(p, extra.size);
}
END_TEST

/* The owner hears of every change to the mapped total, before a growth. */
START_TEST(test_memory_accounting) {
        VhostFrontRegion extra = { .gpa = UINT64_C(0x200000000), .size = 64 * 1024, .uva = 0x7f5600000000, .offset = 0 };
        uint64_t table = f.regions[0].size + f.regions[1].size;
        int fd;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        ck_assert_uint_eq(vhost_user_dev_mapped(dev), table);
        ck_assert_uint_eq(mapped_seen, table);

        fd = memfd_create("seedbed-test-dimm", MFD_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(ftruncate(fd, (off_t) extra.size), 0);
        ck_assert_int_eq(vhost_front_add_mem_reg(&f, fd, &extra, true), 0);
        (void) close(fd);
        ck_assert_uint_eq(vhost_user_dev_mapped(dev), table + extra.size);
        ck_assert_uint_eq(mapped_seen, table + extra.size);

        ck_assert_int_eq(vhost_front_rem_mem_reg(&f, &extra, true), 0);
        ck_assert_uint_eq(vhost_user_dev_mapped(dev), table);
        ck_assert_uint_eq(mapped_seen, table);

        /* A new table replaces the old one's count, not adds to it. */
        ck_assert_int_eq(vhost_front_set_mem_table(&f, true), 0);
        ck_assert_uint_eq(mapped_seen, table);
        ck_assert(!vhost_user_dev_broken(dev));
}
END_TEST

/* Refused before anything is mapped: the device breaks, nothing counts. */
START_TEST(test_memory_refused) {
        uint64_t v;

        memory_cap = f.regions[0].size;
        ck_assert_int_eq(vhost_front_get_u64(&f, VU_GET_FEATURES, &v), 0);
        check_broken(vhost_front_set_mem_table(&f, true), "over the test's cap");
        ck_assert_uint_eq(memory_refusals, 1);
        ck_assert_uint_eq(vhost_user_dev_mapped(dev), 0);
        ck_assert_uint_eq(mapped_seen, 0);
}
END_TEST

/* A region past the device's cap on regions breaks it. */
START_TEST(test_max_regions) {
        VhostFrontRegion extra = { .gpa = UINT64_C(0x200000000), .size = 4096, .uva = 0x7f5600000000, .offset = 0 };
        uint64_t v;

        ck_assert_int_eq(vhost_user_dev_set_max_regions(dev, 0), -EINVAL);
        ck_assert_int_eq(vhost_user_dev_set_max_regions(dev, VHOST_USER_MAX_REGIONS + 1), -EINVAL);
        ck_assert_int_eq(vhost_user_dev_set_max_regions(dev, 2), 0);
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        ck_assert_int_eq(vhost_front_get_u64(&f, VU_GET_MAX_MEM_SLOTS, &v), 0);
        ck_assert_uint_eq(v, 2);
        check_broken(vhost_front_add_mem_reg(&f, f.mem_fd, &extra, true), "more than the 2 memory slots");
        ck_assert_uint_eq(mapped_seen, f.regions[0].size + f.regions[1].size);
}
END_TEST

/* What a successor process does with a device: the state and every fd
 * it names change hands (here: dup()ed, as SCM_RIGHTS would), the old
 * device goes, and the new one serves the same ring on, mid-stream. */
static void hand_over(void) {
        _cleanup_(json_free) Json j = {};
        _cleanup_(state_fds_done) StateFds t = {};
        StateReader r;
        int memfd, sock, *fds;
        VhostUserDev *next = NULL;

        json_object_begin(&j, NULL);
        ck_assert_int_eq(vhost_user_dev_save(dev, &j, &t), 0);
        json_object_end(&j);
        memfd = state_memfd(&j);
        ck_assert_int_ge(memfd, 0);
        fds = calloc(t.n + 1, sizeof *fds);
        ck_assert_ptr_nonnull(fds);
        for (size_t i = 0; i < t.n; i++) {
                fds[i] = fcntl(t.fds[i], F_DUPFD_CLOEXEC, 3);
                ck_assert_int_ge(fds[i], 0);
        }
        sock = fcntl(vhost_user_dev_socket(dev), F_DUPFD_CLOEXEC, 3);
        ck_assert_int_ge(sock, 0);

        /* The owner drops its watch before freeing (vhost-user.h). */
        kick_watched = -EBADF;
        dev = vhost_user_dev_free(dev);

        ck_assert_int_eq(state_reader_open(&r, memfd, fds, t.n), 0);
        ck_assert_int_eq(vhost_user_dev_restore(sock, &ops, NULL, &r, state_root(&r), &next), 0);
        state_reader_done(&r);
        (void) close(memfd);
        dev = next;
        ck_assert_int_ge(kick_watched, 0);
}

START_TEST(test_hand_over) {
        uint64_t table = f.regions[0].size + f.regions[1].size;
        uint64_t gpa, pos;
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        for (unsigned i = 0; i < 3; i++) {
                gpa = vhost_front_alloc(&f, 64, i % 2);
                pos = fill_pos;
                head = serve_one(gpa, 64);
                check_used(head, 64);
                check_bytes(gpa, 64, pos);
        }
        /* A buffer posted and kicked, not yet served: the successor
         * finds it. */
        gpa = vhost_front_alloc(&f, 64, false);
        head = vhost_front_post(&f, &(VhostFrontSeg) { .gpa = gpa, .len = 64 }, 1, false);
        vhost_front_kick(&f);

        hand_over();
        ck_assert_uint_eq(vhost_user_dev_mapped(dev), table);
        ck_assert_uint_eq(vhost_user_dev_stats(dev)->requests, 3);
        pos = fill_pos;
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        check_used(head, 64);
        check_bytes(gpa, 64, pos);

        /* Around the 4-entry ring and on, and messages still work. */
        for (unsigned i = 0; i < 6; i++) {
                gpa = vhost_front_alloc(&f, 64, i % 2);
                pos = fill_pos;
                head = serve_one(gpa, 64);
                check_used(head, 64);
                check_bytes(gpa, 64, pos);
        }
        ck_assert_uint_eq(vhost_user_dev_stats(dev)->requests, 10);
        ck_assert_int_eq(vhost_front_set_mem_table(&f, true), 0);
        ck_assert(!vhost_user_dev_broken(dev));
}
END_TEST

/* A message cut in two by the handover: its first half goes with the
 * state, the second is read from the socket by the successor. */
START_TEST(test_hand_over_partial_message) {
        uint8_t msg[12] = { 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0 }; /* GET_FEATURES, version 1 */
        uint32_t request, flags, size;
        uint64_t v;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        ck_assert_int_eq(vhost_front_send_bytes(&f, msg, 5, NULL, 0), 0);
        ck_assert_int_eq(vhost_user_dev_handle_socket(dev), 0);
        hand_over();
        ck_assert_int_eq(vhost_front_send_bytes(&f, msg + 5, 7, NULL, 0), 0);
        ck_assert_int_eq(vhost_user_dev_handle_socket(dev), 0);
        ck_assert_int_eq(vhost_front_recv(&f, &request, &flags, &v, sizeof v, &size, 1000), 0);
        ck_assert_uint_eq(size, sizeof v);
        ck_assert_uint_eq(request, 1);
        ck_assert(v & VU_F_VERSION_1);
}
END_TEST

/* A state that is not whole is refused, and nothing leaks. */
START_TEST(test_hand_over_bad_state) {
        static const char *const docs[] = {
                "{}",
                "{\"features\": 1, \"protocol_features\": 0, \"max_regions\": 0}",
                "{\"features\": 1, \"protocol_features\": 0, \"max_regions\": 8, \"regions\": [{\"gpa\": 0, "
                "\"size\": 4096, \"uva\": 0, \"mmap_offset\": 0, \"fd\": 7}]}",
        };

        for (size_t i = 0; i < ELEMENTSOF(docs); i++) {
                int memfd = memfd_create("state", MFD_CLOEXEC), sock = fcntl(f.sock, F_DUPFD_CLOEXEC, 3);
                VhostUserDev *d = NULL;
                StateReader r;

                ck_assert_int_ge(memfd, 0);
                ck_assert_int_eq(write(memfd, docs[i], strlen(docs[i])), (ssize_t) strlen(docs[i]));
                ck_assert_int_eq(state_reader_open(&r, memfd, NULL, 0), 0);
                ck_assert_int_eq(vhost_user_dev_restore(sock, &ops, NULL, &r, state_root(&r), &d), -EBADMSG);
                ck_assert_msg(r.error[0], "no reason for document %zu", i);
                ck_assert_ptr_null(d);
                state_reader_done(&r);
                (void) close(memfd);
        }
}
END_TEST

START_TEST(test_rem_mem_reg_unknown) {
        VhostFrontRegion nowhere = { .gpa = UINT64_C(0x300000000), .size = 4096, .uva = 0x1000, .offset = 0 };

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        check_broken(vhost_front_rem_mem_reg(&f, &nowhere, true), "no region");
}
END_TEST

START_TEST(test_add_mem_reg_overlap) {
        VhostFrontRegion r = f.regions[0];

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        r.uva += UINT64_C(1) << 40;
        check_broken(vhost_front_add_mem_reg(&f, f.mem_fd, &r, true), "overlaps");
}
END_TEST

START_TEST(test_mem_ring_follows_regions) {
        uint64_t gpa, pos;
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        /* The region with the ring goes away and comes back (QEMU replaces
         * regions this way): the ring waits, then works. */
        ck_assert_int_eq(vhost_front_rem_mem_reg(&f, &f.regions[0], true), 0);
        gpa = vhost_front_alloc(&f, 64, true);
        pos = fill_pos;
        head = serve_one(gpa, 64);
        check_no_used();
        ck_assert(!vhost_user_dev_broken(dev));
        ck_assert_int_eq(vhost_front_add_mem_reg(&f, f.mem_fd, &f.regions[0], true), 0);
        /* It kicked itself to serve what waited. */
        ck_assert(vhost_front_kick_pending(&f));
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        check_used(head, 64);
        check_bytes(gpa, 64, pos);
}
END_TEST

/* ---- the ring ---- */

START_TEST(test_single_buffers) {
        connect_ok(4, VU_F_VERSION_1 | VU_F_RING_INDIRECT_DESC, PROTOCOL_ALL);

        /* As the Linux driver does: one 64-byte buffer at a time, here
         * around a 4-entry ring (QEMU's size for vhost-user-rng) twice. */
        for (unsigned i = 0; i < 10; i++) {
                uint64_t gpa = vhost_front_alloc(&f, 64, i % 2), pos = fill_pos;
                uint16_t head;

                head = serve_one(gpa, 64);
                check_used(head, 64);
                check_bytes(gpa, 64, pos);
                ck_assert_uint_eq(vhost_front_calls(&f), 1);
                ck_assert(!vhost_user_dev_pending(dev));
        }
        ck_assert_uint_eq(vhost_user_dev_stats(dev)->requests, 10);
        ck_assert_uint_eq(vhost_user_dev_stats(dev)->bytes, 640);
}
END_TEST

START_TEST(test_many_at_once) {
        uint64_t gpa[8], pos = fill_pos;
        uint16_t head[8];

        connect_ok(8, VU_F_VERSION_1, PROTOCOL_ALL);
        for (unsigned i = 0; i < 8; i++) {
                VhostFrontSeg s = { .gpa = gpa[i] = vhost_front_alloc(&f, 32, false), .len = 32 };
                head[i] = vhost_front_post(&f, &s, 1, false);
        }
        vhost_front_kick(&f);
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        /* The kick was taken; all eight served in order, one interrupt. */
        ck_assert(!vhost_front_kick_pending(&f));
        for (unsigned i = 0; i < 8; i++) {
                check_used(head[i], 32);
                check_bytes(gpa[i], 32, pos + 32 * i);
        }
        ck_assert_uint_eq(vhost_front_calls(&f), 1);
}
END_TEST

static void chain_test(bool indirect) {
        VhostFrontSeg s[3];
        uint64_t pos = fill_pos;
        uint16_t head;

        connect_ok(4, VU_F_VERSION_1 | VU_F_RING_INDIRECT_DESC, PROTOCOL_ALL);
        s[0] = (VhostFrontSeg) { .gpa = vhost_front_alloc(&f, 16, false), .len = 16 };
        s[1] = (VhostFrontSeg) { .gpa = vhost_front_alloc(&f, 100, true), .len = 100 };
        s[2] = (VhostFrontSeg) { .gpa = vhost_front_alloc(&f, 32, false), .len = 32 };
        head = vhost_front_post(&f, s, 3, indirect);
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        check_used(head, 148);
        check_bytes(s[0].gpa, 16, pos);
        check_bytes(s[1].gpa, 100, pos + 16);
        check_bytes(s[2].gpa, 32, pos + 116);
        ck_assert_uint_eq(vhost_front_calls(&f), 1);
}

START_TEST(test_chained) {
        chain_test(false);
}
END_TEST

START_TEST(test_indirect) {
        chain_test(true);
}
END_TEST

START_TEST(test_indirect_not_negotiated) {
        VhostFrontSeg s;

        connect_ok(4, VU_F_VERSION_1, PROTOCOL_ALL);
        s = (VhostFrontSeg) { .gpa = vhost_front_alloc(&f, 64, false), .len = 64 };
        (void) vhost_front_post(&f, &s, 1, true);
        check_broken(vhost_user_dev_process(dev), "INDIRECT_DESC was not negotiated");
        check_zero(s.gpa, 64);
}
END_TEST

START_TEST(test_partial_fill) {
        uint64_t gpa, pos;
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        /* virtio-rng: the device may use less than the whole buffer. */
        fill_budget = 10;
        gpa = vhost_front_alloc(&f, 64, false);
        pos = fill_pos;
        head = serve_one(gpa, 64);
        check_used(head, 10);
        check_bytes(gpa, 10, pos);
        check_zero(gpa + 10, 54);
        ck_assert(!vhost_user_dev_pending(dev));
}
END_TEST

START_TEST(test_fill_zero_pending) {
        uint64_t gpa, pos;
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        /* Throttled: the buffer stays in the ring, nobody is told. */
        fill_budget = 0;
        gpa = vhost_front_alloc(&f, 64, false);
        pos = fill_pos;
        head = serve_one(gpa, 64);
        check_no_used();
        ck_assert_uint_eq(vhost_front_calls(&f), 0);
        ck_assert(vhost_user_dev_pending(dev));
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        ck_assert(vhost_user_dev_pending(dev));
        check_no_used();

        /* Entropy again: the retry serves it. */
        fill_budget = SIZE_MAX;
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        check_used(head, 64);
        check_bytes(gpa, 64, pos);
        ck_assert_uint_eq(vhost_front_calls(&f), 1);
        ck_assert(!vhost_user_dev_pending(dev));
}
END_TEST

START_TEST(test_zero_length_buffer) {
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        /* Nothing fits in it; given back rather than left to block the ring. */
        head = serve_one(vhost_front_alloc(&f, 16, false), 0);
        check_used(head, 0);
        ck_assert_uint_eq(fill_calls, 0);
        ck_assert(!vhost_user_dev_pending(dev));
}
END_TEST

START_TEST(test_big_buffer_capped) {
        uint64_t gpa;
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        /* A 512 KiB buffer gets at most 64 KiB per request. */
        gpa = vhost_front_alloc(&f, 512 * 1024, true);
        head = serve_one(gpa, 512 * 1024);
        check_used(head, 64 * 1024);
        check_zero(gpa + 64 * 1024, 1024);
}
END_TEST

START_TEST(test_work_budget) {
        uint64_t gpa;

        connect_ok(256, FEATURES_ALL, PROTOCOL_ALL);
        /* 256 buffers, each a chain through the whole table (1 byte a
         * descriptor): 65536 descriptors, twice what one call may read. */
        gpa = vhost_front_alloc(&f, 256, false);
        for (unsigned i = 0; i < 256; i++)
                vhost_front_write_desc(&f, VHOST_FRONT_DESC_GPA, i, gpa + i, 1,
                                       VQ_DESC_F_WRITE | (i < 255 ? VQ_DESC_F_NEXT : 0), (uint16_t) (i + 1));
        for (unsigned i = 0; i < 256; i++)
                vhost_front_publish(&f, 0);

        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        ck_assert_uint_eq(vhost_front_used_idx(&f), 128);
        /* It comes back by itself, as for a kick; nothing to retry later. */
        ck_assert(vhost_front_kick_pending(&f));
        ck_assert(!vhost_user_dev_pending(dev));
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        ck_assert_uint_eq(vhost_front_used_idx(&f), 256);
        ck_assert(!vhost_front_kick_pending(&f));
        /* Each got the first 64 pieces of its chain. */
        check_used(0, 64);
        ck_assert_uint_eq(vhost_user_dev_stats(dev)->bytes, 256 * 64);
}
END_TEST

START_TEST(test_event_idx) {
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);

        /* The first completion always interrupts. */
        head = serve_one(vhost_front_alloc(&f, 64, false), 64);
        check_used(head, 64);
        ck_assert_uint_eq(vhost_front_calls(&f), 1);
        /* And the device asks for a kick at the next entry. */
        ck_assert_uint_eq(vhost_front_avail_event(&f), 1);

        /* The driver wants an interrupt only after its 5th used entry. */
        vhost_front_set_used_event(&f, 4);
        head = serve_one(vhost_front_alloc(&f, 64, false), 64);
        check_used(head, 64);
        ck_assert_uint_eq(vhost_front_calls(&f), 0);
        ck_assert_uint_eq(vhost_front_avail_event(&f), 2);

        /* Now after the next one. */
        vhost_front_set_used_event(&f, 2);
        head = serve_one(vhost_front_alloc(&f, 64, false), 64);
        check_used(head, 64);
        ck_assert_uint_eq(vhost_front_calls(&f), 1);
}
END_TEST

START_TEST(test_no_interrupt_flag) {
        uint16_t head;

        connect_ok(4, VU_F_VERSION_1, PROTOCOL_ALL);
        /* Without EVENT_IDX the driver can only switch interrupts off. */
        vhost_front_set_avail_flags(&f, 1);
        head = serve_one(vhost_front_alloc(&f, 64, false), 64);
        check_used(head, 64);
        ck_assert_uint_eq(vhost_front_calls(&f), 0);

        vhost_front_set_avail_flags(&f, 0);
        head = serve_one(vhost_front_alloc(&f, 64, false), 64);
        check_used(head, 64);
        ck_assert_uint_eq(vhost_front_calls(&f), 1);
}
END_TEST

/* What QEMU sends to start a ring again. */
static void restart_ring(uint16_t base) {
        ck_assert_int_eq(vhost_front_set_state(&f, VU_SET_VRING_NUM, 0, f.num, false), 0);
        ck_assert_int_eq(vhost_front_set_state(&f, VU_SET_VRING_BASE, 0, base, false), 0);
        ck_assert_int_eq(vhost_front_set_vring_addr(&f), 0);
        ck_assert_int_eq(vhost_front_set_vring_fd(&f, VU_SET_VRING_KICK, f.kick), 0);
        ck_assert_int_eq(vhost_front_set_state(&f, VU_SET_VRING_ENABLE, 0, 1, false), 0);
        ck_assert_int_eq(vhost_front_set_vring_fd(&f, VU_SET_VRING_CALL, f.call), 0);
}

START_TEST(test_get_vring_base) {
        uint64_t gpa, pos;
        uint32_t base;
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        for (unsigned i = 0; i < 3; i++) {
                head = serve_one(vhost_front_alloc(&f, 64, false), 64);
                check_used(head, 64);
        }

        /* Stops the ring and says where to resume. */
        ck_assert_int_eq(vhost_front_get_vring_base(&f, &base), 0);
        ck_assert_uint_eq(base, 3);
        ck_assert_int_lt(kick_watched, 0);

        gpa = vhost_front_alloc(&f, 64, false);
        pos = fill_pos;
        head = serve_one(gpa, 64);
        check_no_used();
        ck_assert(!vhost_user_dev_pending(dev));
        /* A stopped ring's configuration may change. */
        restart_ring((uint16_t) base);
        ck_assert_int_ge(kick_watched, 0);
        /* The buffer that waited is served on the ring's own kick. */
        ck_assert(vhost_front_kick_pending(&f));
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        check_used(head, 64);
        check_bytes(gpa, 64, pos);
}
END_TEST

START_TEST(test_enable_gates_ring) {
        uint64_t gpa, pos;
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        ck_assert_int_eq(vhost_front_set_state(&f, VU_SET_VRING_ENABLE, 0, 0, false), 0);

        /* Disabled: buffers wait. */
        gpa = vhost_front_alloc(&f, 64, false);
        pos = fill_pos;
        head = serve_one(gpa, 64);
        check_no_used();
        ck_assert(!vhost_front_kick_pending(&f));

        ck_assert_int_eq(vhost_front_set_state(&f, VU_SET_VRING_ENABLE, 0, 1, false), 0);
        ck_assert(vhost_front_kick_pending(&f));
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        check_used(head, 64);
        check_bytes(gpa, 64, pos);
}
END_TEST

START_TEST(test_without_protocol_features) {
        uint64_t v, gpa, pos;
        uint16_t head;

        /* Older QEMU never acks PROTOCOL_FEATURES for vhost-user-rng nor
         * sends SET_VRING_ENABLE: the ring runs once it has a kick fd. */
        vhost_front_ring_init(&f, 4);
        ck_assert_int_eq(vhost_front_get_u64(&f, VU_GET_FEATURES, &v), 0);
        ck_assert_int_eq(vhost_front_simple(&f, VU_SET_OWNER, false), 0);
        ck_assert_int_eq(vhost_front_set_u64(&f, VU_SET_FEATURES, VU_F_VERSION_1, false), 0);
        ck_assert_int_eq(vhost_front_set_mem_table(&f, false), 0);
        ck_assert_int_eq(vhost_front_set_state(&f, VU_SET_VRING_NUM, 0, 4, false), 0);
        ck_assert_int_eq(vhost_front_set_state(&f, VU_SET_VRING_BASE, 0, 0, false), 0);
        ck_assert_int_eq(vhost_front_set_vring_addr(&f), 0);
        ck_assert_int_eq(vhost_front_set_vring_fd(&f, VU_SET_VRING_CALL, f.call), 0);

        gpa = vhost_front_alloc(&f, 64, false);
        pos = fill_pos;
        head = serve_one(gpa, 64);
        check_no_used();

        ck_assert_int_eq(vhost_front_set_vring_fd(&f, VU_SET_VRING_KICK, f.kick), 0);
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        check_used(head, 64);
        check_bytes(gpa, 64, pos);
        ck_assert_uint_eq(vhost_front_calls(&f), 1);
}
END_TEST

START_TEST(test_reset_device) {
        uint64_t gpa, pos;
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        head = serve_one(vhost_front_alloc(&f, 64, false), 64);
        check_used(head, 64);

        ck_assert_int_eq(vhost_front_simple(&f, VU_RESET_DEVICE, true), 0);
        ck_assert_int_lt(kick_watched, 0);

        /* The guest driver starts over on a fresh ring; the memory table
         * stays, as QEMU expects. */
        vhost_front_ring_init(&f, 4);
        gpa = vhost_front_alloc(&f, 64, false);
        pos = fill_pos;
        head = serve_one(gpa, 64);
        check_no_used();
        ck_assert_int_eq(vhost_front_set_u64(&f, VU_SET_FEATURES, FEATURES_ALL | VU_F_PROTOCOL_FEATURES, false), 0);
        restart_ring(0);
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        check_used(head, 64);
        check_bytes(gpa, 64, pos);
}
END_TEST

START_TEST(test_reset_owner) {
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        /* Deprecated; taken to disable the ring, not to end the session. */
        ck_assert_int_eq(vhost_front_simple(&f, VU_RESET_OWNER, true), 0);
        ck_assert_int_lt(kick_watched, 0);
        head = serve_one(vhost_front_alloc(&f, 64, false), 64);
        check_no_used();
        restart_ring(0);
        ck_assert_int_eq(vhost_user_dev_process(dev), 0);
        check_used(head, 64);
}
END_TEST

START_TEST(test_polled_ring) {
        uint16_t head;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        /* No kick fd: the front-end wants the ring polled. */
        ck_assert_int_eq(vhost_front_set_vring_fd(&f, VU_SET_VRING_KICK, -1), 0);
        ck_assert_int_lt(kick_watched, 0);
        ck_assert(vhost_user_dev_pending(dev));
        head = serve_one(vhost_front_alloc(&f, 64, false), 64);
        check_used(head, 64);
        ck_assert(vhost_user_dev_pending(dev));
}
END_TEST

START_TEST(test_vring_num_max) {
        ck_assert_int_eq(vhost_front_set_state(&f, VU_SET_VRING_NUM, 0, 32768, false), 0);
        ck_assert(!vhost_user_dev_broken(dev));
}
END_TEST

/* ---- hostile guests ---- */

/* A hand-made descriptor 0 as the only available buffer. */
static void post_raw(uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
        vhost_front_write_desc(&f, VHOST_FRONT_DESC_GPA, 0, addr, len, flags, next);
        vhost_front_publish(&f, 0);
}

START_TEST(test_desc_outside_memory) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        /* 2 GiB: between the regions. */
        post_raw(UINT64_C(0x80000000), 64, VQ_DESC_F_WRITE, 0);
        check_broken(vhost_user_dev_process(dev), "not in guest memory");
}
END_TEST

START_TEST(test_err_fd_signalled) {
        eventfd_t v = 0;
        int err;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        err = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        ck_assert_int_ge(err, 0);
        ck_assert_int_eq(vhost_front_set_vring_fd(&f, VU_SET_VRING_ERR, err), 0);
        /* Giving up on the ring is reported where QEMU listens for it. */
        post_raw(UINT64_C(0x80000000), 64, VQ_DESC_F_WRITE, 0);
        check_broken(vhost_user_dev_process(dev), "not in guest memory");
        ck_assert_int_eq(eventfd_read(err, &v), 0);
        ck_assert_uint_eq(v, 1);
        (void) close(err);
}
END_TEST

START_TEST(test_desc_past_region_end) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        /* Starts in the low region, ends 48 bytes past it. */
        post_raw(f.regions[0].size - 16, 64, VQ_DESC_F_WRITE, 0);
        check_broken(vhost_user_dev_process(dev), "not in guest memory");
        check_zero(f.regions[0].size - 16, 16);
}
END_TEST

START_TEST(test_desc_wraps) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        post_raw(UINT64_MAX - 8, 64, VQ_DESC_F_WRITE, 0);
        check_broken(vhost_user_dev_process(dev), "wraps");
}
END_TEST

START_TEST(test_desc_huge_len) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        post_raw(VHOST_FRONT_HIGH_GPA, UINT32_MAX, VQ_DESC_F_WRITE, 0);
        check_broken(vhost_user_dev_process(dev), "not in guest memory");
}
END_TEST

START_TEST(test_desc_loop) {
        uint64_t gpa;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        gpa = vhost_front_alloc(&f, 64, false);
        vhost_front_write_desc(&f, VHOST_FRONT_DESC_GPA, 1, gpa + 32, 32, VQ_DESC_F_WRITE | VQ_DESC_F_NEXT, 0);
        post_raw(gpa, 32, VQ_DESC_F_WRITE | VQ_DESC_F_NEXT, 1);
        check_broken(vhost_user_dev_process(dev), "loop");
}
END_TEST

START_TEST(test_desc_self_loop_big_ring) {
        connect_ok(256, FEATURES_ALL, PROTOCOL_ALL);
        post_raw(vhost_front_alloc(&f, 64, false), 64, VQ_DESC_F_WRITE | VQ_DESC_F_NEXT, 0);
        check_broken(vhost_user_dev_process(dev), "loop");
}
END_TEST

START_TEST(test_desc_next_out_of_range) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        post_raw(vhost_front_alloc(&f, 64, false), 64, VQ_DESC_F_WRITE | VQ_DESC_F_NEXT, 7);
        check_broken(vhost_user_dev_process(dev), "beyond the table");
}
END_TEST

START_TEST(test_readable_desc) {
        VhostFrontSeg s[2];

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        s[0] = (VhostFrontSeg) { .gpa = vhost_front_alloc(&f, 64, false), .len = 64 };
        s[1] = (VhostFrontSeg) { .gpa = vhost_front_alloc(&f, 64, false), .len = 64, .readable = true };
        (void) vhost_front_post(&f, s, 2, false);
        check_broken(vhost_user_dev_process(dev), "device-readable");
        /* Found before anything was written. */
        check_zero(s[0].gpa, 64);
}
END_TEST

START_TEST(test_indirect_loop) {
        uint64_t table, gpa;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        table = vhost_front_alloc(&f, 32, false);
        gpa = vhost_front_alloc(&f, 64, false);
        vhost_front_write_desc(&f, table, 0, gpa, 32, VQ_DESC_F_WRITE | VQ_DESC_F_NEXT, 1);
        vhost_front_write_desc(&f, table, 1, gpa + 32, 32, VQ_DESC_F_WRITE | VQ_DESC_F_NEXT, 0);
        post_raw(table, 32, VQ_DESC_F_INDIRECT, 0);
        check_broken(vhost_user_dev_process(dev), "loop");
}
END_TEST

START_TEST(test_indirect_nested) {
        uint64_t table;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        table = vhost_front_alloc(&f, 16, false);
        /* The table points at itself. */
        vhost_front_write_desc(&f, table, 0, table, 16, VQ_DESC_F_INDIRECT, 0);
        post_raw(table, 16, VQ_DESC_F_INDIRECT, 0);
        check_broken(vhost_user_dev_process(dev), "inside an indirect table");
}
END_TEST

START_TEST(test_indirect_bad_len) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        post_raw(vhost_front_alloc(&f, 64, false), 20, VQ_DESC_F_INDIRECT, 0);
        check_broken(vhost_user_dev_process(dev), "not 1 to 32768 descriptors");
}
END_TEST

START_TEST(test_indirect_with_next) {
        uint64_t table, gpa;

        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        table = vhost_front_alloc(&f, 16, false);
        gpa = vhost_front_alloc(&f, 64, false);
        vhost_front_write_desc(&f, table, 0, gpa, 64, VQ_DESC_F_WRITE, 0);
        post_raw(table, 16, VQ_DESC_F_INDIRECT | VQ_DESC_F_NEXT, 1);
        check_broken(vhost_user_dev_process(dev), "NEXT");
}
END_TEST

START_TEST(test_indirect_table_outside) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        post_raw(UINT64_C(0x80000000), 64, VQ_DESC_F_INDIRECT, 0);
        check_broken(vhost_user_dev_process(dev), "not in guest memory");
}
END_TEST

START_TEST(test_avail_idx_jump) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        vhost_front_set_avail_idx(&f, 5);
        check_broken(vhost_user_dev_process(dev), "more than the 4 entries");
}
END_TEST

START_TEST(test_head_out_of_range) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        vhost_front_publish(&f, 9);
        check_broken(vhost_user_dev_process(dev), "beyond the 4 of the table");
}
END_TEST

/* ---- hostile front-ends ---- */

START_TEST(test_memory_shrunk_before_ring_setup) {
        /* SET_VRING_ADDR reads the used index from guest memory: a region
         * shrunk before it must break the device, not kill the process. */
        ck_assert_int_eq(vhost_front_simple(&f, VU_SET_OWNER, false), 0);
        ck_assert_int_eq(vhost_front_set_mem_table(&f, false), 0);
        vhost_front_ring_init(&f, 4);
        ck_assert_int_eq(ftruncate(f.mem_fd, 0), 0);
        ck_assert_int_eq(vhost_front_set_state(&f, VU_SET_VRING_NUM, 0, 4, false), 0);
        (void) vhost_front_set_vring_addr(&f);
        ck_assert(vhost_user_dev_broken(dev));
        ck_assert_ptr_nonnull(strstr(vhost_user_dev_broken_reason(dev), "SIGBUS"));
        ck_assert_int_eq(ftruncate(f.mem_fd, (off_t) VHOST_FRONT_MEM_SIZE), 0);
}
END_TEST

START_TEST(test_call_fd_not_eventfd) {
        int p[2];

        /* A pipe nobody reads as the call fd would block the loop on the
         * first interrupt: refused when it is handed over. */
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        (void) vhost_front_set_vring_fd(&f, VU_SET_VRING_CALL, p[1]);
        ck_assert(vhost_user_dev_broken(dev));
        ck_assert_ptr_nonnull(strstr(vhost_user_dev_broken_reason(dev), "not an eventfd"));
        close(p[0]);
        close(p[1]);
}
END_TEST

START_TEST(test_memory_shrunk_under_us) {
        uint64_t gpa;

        /* A front-end that shrinks the file behind guest memory after we
         * mapped it: our next access is a SIGBUS.  The device must break,
         * the process must live on. */
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        gpa = vhost_front_alloc(&f, 64, false);
        (void) vhost_front_post(&f, &(VhostFrontSeg) { .gpa = gpa, .len = 64 }, 1, false);
        ck_assert_int_eq(ftruncate(f.mem_fd, 0), 0);
        ck_assert_int_eq(vhost_user_dev_process(dev), -EFAULT);
        ck_assert(vhost_user_dev_broken(dev));
        ck_assert_ptr_nonnull(strstr(vhost_user_dev_broken_reason(dev), "SIGBUS"));
        /* Broken stays broken, without touching guest memory again. */
        ck_assert_int_eq(vhost_user_dev_process(dev), -EFAULT);
        /* Our mapping of it is gone too: the front-end's ring is not read. */
        ck_assert_int_eq(ftruncate(f.mem_fd, (off_t) VHOST_FRONT_MEM_SIZE), 0);
}
END_TEST


static const uint32_t bad_nums[] = { 0, 3, 100, 32769, 65536 };

START_TEST(test_vring_num_invalid) {
        check_broken(vhost_front_set_state(&f, VU_SET_VRING_NUM, 0, bad_nums[_i], false), "power of 2");
}
END_TEST

START_TEST(test_vring_index_invalid) {
        check_broken(vhost_front_set_state(&f, VU_SET_VRING_NUM, 1, 4, false), "only queue 0");
}
END_TEST

START_TEST(test_vring_num_while_running) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        check_broken(vhost_front_set_state(&f, VU_SET_VRING_NUM, 0, 8, false), "while the ring runs");
}
END_TEST

START_TEST(test_vring_addr_outside) {
        struct {
                uint32_t index, flags;
                uint64_t desc, used, avail, log;
        } a = { .desc = 0x1000, .used = 0x2000, .avail = 0x3000 };

        ck_assert_int_eq(vhost_front_set_mem_table(&f, false), 0);
        ck_assert_int_eq(vhost_front_set_state(&f, VU_SET_VRING_NUM, 0, 4, false), 0);
        ck_assert_int_eq(vhost_front_send(&f, VU_SET_VRING_ADDR, VU_FLAG_VERSION, &a, sizeof a, NULL, 0), 0);
        check_broken(vhost_user_dev_handle_socket(dev), "not in guest memory");
}
END_TEST

START_TEST(test_mem_table_missing_fds) {
        int fd = f.mem_fd;
        uint8_t buf[8 + 64] = { 2 };

        /* Two regions, one fd. */
        ck_assert_int_eq(vhost_front_send(&f, VU_SET_MEM_TABLE, VU_FLAG_VERSION, buf, sizeof buf, &fd, 1), 0);
        check_broken(vhost_user_dev_handle_socket(dev), "expected 2");
}
END_TEST

START_TEST(test_mem_table_extra_fds) {
        uint64_t buf[1 + 4] = { 1, f.regions[0].gpa, f.regions[0].size, f.regions[0].uva, 0 };
        int fds[2] = { f.mem_fd, f.mem_fd };

        /* One region, two fds. */
        ck_assert_int_eq(vhost_front_send(&f, VU_SET_MEM_TABLE, VU_FLAG_VERSION, buf, sizeof buf, fds, 2), 0);
        check_broken(vhost_user_dev_handle_socket(dev), "expected 1");
}
END_TEST

START_TEST(test_mem_table_too_many_regions) {
        uint8_t buf[8 + 9 * 32] = { 9 };

        ck_assert_int_eq(vhost_front_send(&f, VU_SET_MEM_TABLE, VU_FLAG_VERSION, buf, sizeof buf, NULL, 0), 0);
        check_broken(vhost_user_dev_handle_socket(dev), "at most 8");
}
END_TEST

START_TEST(test_mem_table_past_eof) {
        /* The file is 2 MiB; the region claims 4. */
        f.regions[0].size = 4 * VHOST_FRONT_MEM_SIZE;
        f.n_regions = 1;
        check_broken(vhost_front_set_mem_table(&f, false), "past the end of its file");
}
END_TEST

START_TEST(test_mem_table_not_memory) {
        int fd = eventfd(0, EFD_CLOEXEC);

        ck_assert_int_ge(fd, 0);
        f.n_regions = 1;
        check_broken(vhost_front_add_mem_reg(&f, fd, &f.regions[0], false), "not a memory file");
        (void) close(fd);
}
END_TEST

START_TEST(test_mem_table_wraps) {
        f.regions[0].gpa = UINT64_MAX - 4095;
        f.regions[0].size = 8192;
        f.n_regions = 1;
        check_broken(vhost_front_set_mem_table(&f, false), "wraps");
}
END_TEST

START_TEST(test_kick_missing_fd) {
        uint64_t v = 0;

        ck_assert_int_eq(vhost_front_send(&f, VU_SET_VRING_KICK, VU_FLAG_VERSION, &v, sizeof v, NULL, 0), 0);
        check_broken(vhost_user_dev_handle_socket(dev), "expected 1");
}
END_TEST

START_TEST(test_kick_two_fds) {
        int fds[2] = { f.kick, f.call };
        uint64_t v = 0;

        ck_assert_int_eq(vhost_front_send(&f, VU_SET_VRING_KICK, VU_FLAG_VERSION, &v, sizeof v, fds, 2), 0);
        check_broken(vhost_user_dev_handle_socket(dev), "expected 1");
}
END_TEST

START_TEST(test_kick_nofd_with_fd) {
        uint64_t v = VU_VRING_NOFD;

        ck_assert_int_eq(vhost_front_send(&f, VU_SET_VRING_CALL, VU_FLAG_VERSION, &v, sizeof v, &f.call, 1), 0);
        check_broken(vhost_user_dev_handle_socket(dev), "no-fd flag");
}
END_TEST

START_TEST(test_nine_fds) {
        int fds[9];
        uint64_t v = 0;

        /* One more than a message may carry: the kernel drops what does not
         * fit, the engine closes the rest. */
        for (unsigned i = 0; i < 9; i++) {
                fds[i] = eventfd(0, EFD_CLOEXEC);
                ck_assert_int_ge(fds[i], 0);
        }
        ck_assert_int_eq(vhost_front_send(&f, VU_SET_VRING_KICK, VU_FLAG_VERSION, &v, sizeof v, fds, 9), 0);
        for (unsigned i = 0; i < 9; i++)
                (void) close(fds[i]);
        check_broken(vhost_user_dev_handle_socket(dev), "more than 8 file descriptors");
}
END_TEST

START_TEST(test_payload_too_big) {
        uint32_t hdr[3] = { VU_SET_MEM_TABLE, VU_FLAG_VERSION, 100000 };

        /* Refused on the header alone: the payload is never read. */
        ck_assert_int_eq(vhost_front_send_bytes(&f, hdr, sizeof hdr, &f.mem_fd, 1), 0);
        check_broken(vhost_user_dev_handle_socket(dev), "at most 4096 allowed");
}
END_TEST

START_TEST(test_payload_wrong_size) {
        uint32_t num = 4;

        ck_assert_int_eq(vhost_front_send(&f, VU_SET_VRING_NUM, VU_FLAG_VERSION, &num, sizeof num, NULL, 0), 0);
        check_broken(vhost_user_dev_handle_socket(dev), "expected 8");
}
END_TEST

START_TEST(test_bad_version) {
        ck_assert_int_eq(vhost_front_send(&f, VU_GET_FEATURES, 0x2, NULL, 0, NULL, 0), 0);
        check_broken(vhost_user_dev_handle_socket(dev), "protocol version 2");
}
END_TEST

START_TEST(test_reply_flag_on_request) {
        ck_assert_int_eq(vhost_front_send(&f, VU_GET_FEATURES, VU_FLAG_VERSION | VU_FLAG_REPLY, NULL, 0, NULL, 0), 0);
        check_broken(vhost_user_dev_handle_socket(dev), "reply flag");
}
END_TEST

START_TEST(test_truncated_then_hangup) {
        uint32_t msg[4] = { VU_SET_VRING_NUM, VU_FLAG_VERSION, 8, 0 };

        /* Header and half the payload, with an fd, then the end. */
        ck_assert_int_eq(vhost_front_send_bytes(&f, msg, sizeof msg, &f.kick, 1), 0);
        ck_assert_int_eq(vhost_user_dev_handle_socket(dev), 0);
        ck_assert(!vhost_user_dev_broken(dev));
        f.sock = safe_close(f.sock);
        check_broken(vhost_user_dev_handle_socket(dev), "middle of a message");
        ck_assert_int_eq(vhost_user_dev_handle_socket(dev), -EPROTO);
}
END_TEST

START_TEST(test_hangup) {
        connect_ok(4, FEATURES_ALL, PROTOCOL_ALL);
        f.sock = safe_close(f.sock);
        check_broken(vhost_user_dev_handle_socket(dev), "closed the connection");
        ck_assert_int_eq(vhost_user_dev_handle_socket(dev), -ECONNRESET);
}
END_TEST

static Suite *vhost_user_suite(void) {
        Suite *s = suite_create("vhost-user");
        TCase *tc;

        tc = tcase_create("negotiation");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_features);
        tcase_add_test(tc, test_features_refused);
        tcase_add_test(tc, test_protocol_features_refused);
        tcase_add_test(tc, test_qemu_sequence);
        tcase_add_test(tc, test_qemu_sequence_mem_table);
        tcase_add_test(tc, test_reply_ack);
        tcase_add_test(tc, test_unsupported_acked);
        tcase_add_test(tc, test_unsupported_breaks);
        tcase_add_test(tc, test_unsupported_with_fd);
        tcase_add_test(tc, test_message_in_pieces);
        suite_add_tcase(s, tc);

        tc = tcase_create("memory");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_set_mem_table);
        tcase_add_test(tc, test_mem_table_replaced);
        tcase_add_test(tc, test_add_rem_mem_reg);
        tcase_add_test(tc, test_rem_mem_reg_unknown);
        tcase_add_test(tc, test_memory_accounting);
        tcase_add_test(tc, test_memory_refused);
        tcase_add_test(tc, test_max_regions);
        tcase_add_test(tc, test_hand_over);
        tcase_add_test(tc, test_hand_over_partial_message);
        tcase_add_test(tc, test_hand_over_bad_state);
        tcase_add_test(tc, test_add_mem_reg_overlap);
        tcase_add_test(tc, test_mem_ring_follows_regions);
        suite_add_tcase(s, tc);

        tc = tcase_create("ring");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_single_buffers);
        tcase_add_test(tc, test_many_at_once);
        tcase_add_test(tc, test_chained);
        tcase_add_test(tc, test_indirect);
        tcase_add_test(tc, test_indirect_not_negotiated);
        tcase_add_test(tc, test_partial_fill);
        tcase_add_test(tc, test_fill_zero_pending);
        tcase_add_test(tc, test_zero_length_buffer);
        tcase_add_test(tc, test_big_buffer_capped);
        tcase_add_test(tc, test_work_budget);
        tcase_add_test(tc, test_event_idx);
        tcase_add_test(tc, test_no_interrupt_flag);
        tcase_add_test(tc, test_get_vring_base);
        tcase_add_test(tc, test_enable_gates_ring);
        tcase_add_test(tc, test_without_protocol_features);
        tcase_add_test(tc, test_reset_device);
        tcase_add_test(tc, test_reset_owner);
        tcase_add_test(tc, test_polled_ring);
        tcase_add_test(tc, test_vring_num_max);
        suite_add_tcase(s, tc);

        tc = tcase_create("hostile-guest");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_desc_outside_memory);
        tcase_add_test(tc, test_err_fd_signalled);
        tcase_add_test(tc, test_desc_past_region_end);
        tcase_add_test(tc, test_desc_wraps);
        tcase_add_test(tc, test_desc_huge_len);
        tcase_add_test(tc, test_desc_loop);
        tcase_add_test(tc, test_desc_self_loop_big_ring);
        tcase_add_test(tc, test_desc_next_out_of_range);
        tcase_add_test(tc, test_readable_desc);
        tcase_add_test(tc, test_indirect_loop);
        tcase_add_test(tc, test_indirect_nested);
        tcase_add_test(tc, test_indirect_bad_len);
        tcase_add_test(tc, test_indirect_with_next);
        tcase_add_test(tc, test_indirect_table_outside);
        tcase_add_test(tc, test_avail_idx_jump);
        tcase_add_test(tc, test_head_out_of_range);
        suite_add_tcase(s, tc);

        tc = tcase_create("hostile-front-end");
        tcase_add_test(tc, test_memory_shrunk_under_us);
        tcase_add_test(tc, test_memory_shrunk_before_ring_setup);
        tcase_add_test(tc, test_call_fd_not_eventfd);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_loop_test(tc, test_vring_num_invalid, 0, ELEMENTSOF(bad_nums));
        tcase_add_test(tc, test_vring_index_invalid);
        tcase_add_test(tc, test_vring_num_while_running);
        tcase_add_test(tc, test_vring_addr_outside);
        tcase_add_test(tc, test_mem_table_missing_fds);
        tcase_add_test(tc, test_mem_table_extra_fds);
        tcase_add_test(tc, test_mem_table_too_many_regions);
        tcase_add_test(tc, test_mem_table_past_eof);
        tcase_add_test(tc, test_mem_table_not_memory);
        tcase_add_test(tc, test_mem_table_wraps);
        tcase_add_test(tc, test_kick_missing_fd);
        tcase_add_test(tc, test_kick_two_fds);
        tcase_add_test(tc, test_kick_nofd_with_fd);
        tcase_add_test(tc, test_nine_fds);
        tcase_add_test(tc, test_payload_too_big);
        tcase_add_test(tc, test_payload_wrong_size);
        tcase_add_test(tc, test_bad_version);
        tcase_add_test(tc, test_reply_flag_on_request);
        tcase_add_test(tc, test_truncated_then_hangup);
        tcase_add_test(tc, test_hangup);
        suite_add_tcase(s, tc);

        return s;
}

TEST_MAIN(vhost_user_suite)
