/* SPDX-License-Identifier: MIT */
/* The vhost-user engine (device/vhost-user.c) fed a whole connection by
 * a front-end the input plays, over a socketpair(), as the server drives
 * it: each message is read and dispatched, the ring served when asked.
 * The fds a message claims are real ones made here (eventfds, or memfds
 * of a size and content the input gives), since the engine checks them.
 *
 * Input: one settings byte, then messages until it runs out:
 *   settings  bits 0-1: what fill() gives (0 all, 1 half, 2 nothing,
 *             3 all and nothing by turns); bits 2-4: the device's memory
 *             slots (0: the default); bit 5: a 1 MiB memory cap (else
 *             64 MiB), for the owner's refusal
 *   ctl       bits 0-3: fds sent with the message (past 8 is more than
 *             the protocol allows); bit 4: memfds (else eventfds); bit 5:
 *             the header is sent, and read, alone first; bit 6: serve the
 *             ring after the message, as a kick would; bit 7: hand the
 *             device over to a successor (save, free, restore) after the
 *             message, or between its header and payload when split
 *   memfd     with bit 4: a page count byte (size (n + 1) * 4 KiB), a
 *             16-bit length and that many bytes of content from offset 0
 *   header    request, flags, size: 32 bits each, native order
 *   payload   size bytes, or what is left of the input
 * When the input ends the front-end hangs up.
 *
 * What must hold: no crash, no fd of ours left open after the device is
 * freed, the memory the device says it maps is what it told the owner
 * (the caps rest on that), replies are replies to what was asked, and a
 * device that is not broken can always be handed over. */
#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "fdpass.h"
#include "fuzz.h"
#include "json.h"
#include "state.h"
#include "vhost-user.h"

#define PAGE 4096U
/* Memory files are at most this big: (255 + 1) pages. */
#define MEMFD_PAGES_MAX 256U
#define PAYLOAD_SEND_MAX 8192U
#define FDS_MAX 15U

static VhostUserDev *dev;
static int front = -EBADF;   /* the front-end's end of the socket */
static int kick = -EBADF;    /* the kick fd the engine told us to watch */
static uint64_t accounted;   /* what memory_changed() was told */
static uint64_t cap;
static unsigned fill_mode, fill_calls;

static size_t fill(void *userdata, uint8_t *buf, size_t n) {
        size_t k;

        fill_calls++;
        switch (fill_mode) {
        case 0:
                k = n;
                break;
        case 1:
                k = n / 2;
                break;
        case 2:
                k = 0;
                break;
        default:
                k = fill_calls % 2 ? n : 0;
        }
        memset(buf, 0x5a, k);
        return k;
}

static void kick_changed(void *userdata, int old_fd, int new_fd) {
        fuzz_check(old_fd == kick, "the old kick fd is %d, we watch %d", old_fd, kick);
        kick = new_fd;
}

static int memory_changed(void *userdata, uint64_t old_bytes, uint64_t new_bytes, char *why, size_t why_size) {
        fuzz_check(old_bytes == accounted, "the device says it mapped %llu bytes, it told us %llu",
                   (unsigned long long) old_bytes, (unsigned long long) accounted);
        if (new_bytes > old_bytes && new_bytes > cap) {
                (void) snprintf(why, why_size, "more than the cap");
                return -EDQUOT;
        }
        accounted = new_bytes;
        return 0;
}

static const VhostUserOps ops = {
        .fill = fill,
        .kick_changed = kick_changed,
        .memory_changed = memory_changed,
};

static void check_accounting(void) {
        fuzz_check(vhost_user_dev_mapped(dev) == accounted, "the device maps %llu bytes, it told us %llu",
                   (unsigned long long) vhost_user_dev_mapped(dev), (unsigned long long) accounted);
}

/* A successor takes the device over, as server.c's handover does: the
 * state and every fd it names change hands (dup()ed, as SCM_RIGHTS
 * would), the old device goes, the new one goes on. */
static void hand_over(void) {
        _cleanup_(json_free) Json j = {};
        _cleanup_(state_fds_done) StateFds t = {};
        _cleanup_close_ int memfd = -EBADF;
        VhostUserDev *next = NULL;
        StateReader r;
        int sock, *fds, k;

        json_object_begin(&j, NULL);
        k = vhost_user_dev_save(dev, &j, &t);
        json_object_end(&j);
        if (k < 0) {
                fuzz_check(vhost_user_dev_broken(dev), "a device that is not broken cannot be saved: %s",
                           strerror(-k));
                return;
        }
        memfd = state_memfd(&j);
        fuzz_check(memfd >= 0, "no memfd for the state: %s", strerror(-memfd));
        fds = calloc(t.n + 1, sizeof *fds);
        if (!fds)
                abort();
        for (size_t i = 0; i < t.n; i++) {
                fds[i] = fcntl(t.fds[i], F_DUPFD_CLOEXEC, 3);
                fuzz_check(fds[i] >= 0, "dup(): %m");
        }
        sock = fcntl(vhost_user_dev_socket(dev), F_DUPFD_CLOEXEC, 3);
        fuzz_check(sock >= 0, "dup(): %m");

        /* The owner drops its watch before freeing (vhost-user.h). */
        kick = -EBADF;
        accounted -= vhost_user_dev_mapped(dev);
        dev = vhost_user_dev_free(dev);

        k = state_reader_open(&r, memfd, fds, t.n);
        fuzz_check(k == 0, "the state does not read back: %s", r.error);
        k = vhost_user_dev_restore(sock, &ops, NULL, &r, state_root(&r), &next);
        fuzz_check(k == 0, "the state is not taken up: %s", r.error);
        state_reader_done(&r);
        dev = next;
        accounted += vhost_user_dev_mapped(dev);
}

/* The replies the device sent since the last look: each a reply to the
 * request just sent, with a payload of a reply's size (a u64 or a ring
 * state: 8 bytes). */
static void drain_replies(uint32_t request) {
        uint8_t buf[4096];
        size_t len = 0;

        for (;;) {
                ssize_t k = recv(front, buf + len, sizeof buf - len, MSG_DONTWAIT);

                if (k <= 0)
                        break;
                len += (size_t) k;
                fuzz_check(len < sizeof buf, "more than %zu bytes of replies to one message", sizeof buf);
        }
        for (size_t off = 0; off < len;) {
                uint32_t h[3];

                fuzz_check(len - off >= sizeof h, "a reply cut short: %zu bytes", len - off);
                memcpy(h, buf + off, sizeof h);
                fuzz_check(h[0] == request && (h[1] & 0x7) == 0x5,
                           "a reply to request %u with flags 0x%x, for request %u", h[0], h[1], request);
                fuzz_check(h[2] == 8 && len - off >= sizeof h + h[2], "a reply of %u bytes (%zu arrived)", h[2],
                           len - off);
                off += sizeof h + h[2];
        }
}

static int make_fd(bool memfd, size_t size, const uint8_t *content, size_t len) {
        int fd;

        if (!memfd) {
                fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                fuzz_check(fd >= 0, "eventfd(): %m");
                return fd;
        }
        fd = memfd_create("guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        fuzz_check(fd >= 0, "memfd_create(): %m");
        fuzz_check(ftruncate(fd, (off_t) size) == 0, "ftruncate(): %m");
        if (len > 0)
                fuzz_check(pwrite(fd, content, len, 0) == (ssize_t) len, "pwrite(): %m");
        /* As QEMU's memory-backend-memfd: its size cannot change under a
         * mapping (a shrink would be SIGBUS, which the engine survives,
         * but that is a test of its own). */
        (void) fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
        return fd;
}

static void send_piece(const void *buf, size_t len, const int *fds, unsigned n_fds) {
        union {
                struct cmsghdr align;
                uint8_t buf[FDPASS_CONTROL_SIZE(FDS_MAX)];
        } control;
        struct iovec iov = { .iov_base = (void *) buf, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t k;

        fdpass_attach(&mh, &control, fds, n_fds);
        /* A message and its fds fit in any socket buffer: the engine reads
         * one message per call and we read the replies after each. */
        k = sendmsg(front, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        fuzz_check(k == (ssize_t) len || (k < 0 && errno == EPIPE), "sendmsg() of %zu bytes: %zd, %m", len, k);
}

/* Lets the device read what was sent, as the loop would on EPOLLIN.
 * Returns false when the connection is over. */
static bool pump(void) {
        for (int i = 0; i < 4; i++) {
                int queued = 0, r;

                r = vhost_user_dev_handle_socket(dev);
                check_accounting();
                if (r < 0) {
                        fuzz_check(vhost_user_dev_broken(dev) && vhost_user_dev_broken_reason(dev),
                                   "failed with %d and no reason", r);
                        return false;
                }
                if (ioctl(vhost_user_dev_socket(dev), FIONREAD, &queued) < 0 || queued == 0)
                        break;
        }
        return true;
}

static bool process(void) {
        int r = vhost_user_dev_process(dev);

        check_accounting();
        if (r < 0) {
                fuzz_check(vhost_user_dev_broken(dev), "the ring failed with %d, the device is not broken", r);
                return false;
        }
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        FuzzInput in = { .p = data, .left = size };
        unsigned fds_before, slots;
        uint8_t settings;
        int sv[2];
        bool alive = true;

        fuzz_setup();
        fds_before = fuzz_count_fds();

        settings = fuzz_u8(&in);
        fill_mode = settings & 3;
        fill_calls = 0;
        slots = (settings >> 2) & 7;
        cap = settings & 0x20 ? UINT64_C(1) << 20 : UINT64_C(64) << 20;
        accounted = 0;
        kick = -EBADF;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                fuzz_fail("socketpair(): %m");
        front = sv[0];
        fuzz_check(vhost_user_dev_new(sv[1], &ops, NULL, &dev) == 0, "no device");
        if (slots)
                fuzz_check(vhost_user_dev_set_max_regions(dev, slots) == 0, "%u slots refused", slots);

        while (alive && in.left > 0) {
                uint8_t ctl = fuzz_u8(&in), msg[12 + PAYLOAD_SEND_MAX];
                unsigned n_fds = ctl & 0xf;
                bool memfd = ctl & 0x10, split = ctl & 0x20, serve = ctl & 0x40, handover = ctl & 0x80, mid;
                int fds[FDS_MAX];
                uint32_t request, payload;
                size_t len, content_len = 0, memfd_size = 0;
                const uint8_t *content = NULL;

                if (memfd && n_fds > 0) {
                        memfd_size = (fuzz_u8(&in) + 1U) * PAGE;
                        content_len = fuzz_u16(&in);
                        content_len = MIN(content_len, MIN(memfd_size, in.left));
                        content = in.p;
                        in.p += content_len;
                        in.left -= content_len;
                }
                len = fuzz_take(&in, msg, 12);
                memcpy(&request, msg, sizeof request);
                memcpy(&payload, msg + 8, sizeof payload);
                if (len == 12) {
                        size_t p = MIN((size_t) payload, MIN(in.left, (size_t) PAYLOAD_SEND_MAX));
                        len += fuzz_take(&in, msg + 12, p);
                }

                for (unsigned i = 0; i < n_fds; i++)
                        fds[i] = make_fd(memfd, memfd_size, content, content_len);

                /* Split only where there is a payload to split off. */
                mid = split && len > 12;
                if (mid) {
                        send_piece(msg, 12, fds, n_fds);
                        alive = pump();
                        drain_replies(request);
                        if (alive && handover)
                                hand_over();
                        if (alive) {
                                send_piece(msg + 12, len - 12, NULL, 0);
                                alive = pump();
                        }
                } else {
                        send_piece(msg, len, fds, n_fds);
                        alive = pump();
                }
                /* Ours are copies: the device holds what it kept. */
                for (unsigned i = 0; i < n_fds; i++)
                        safe_close(fds[i]);
                drain_replies(request);
                if (alive && handover && !mid)
                        hand_over();
                if (alive && (serve || vhost_user_dev_pending(dev)))
                        alive = process();
        }

        /* The front-end hangs up: the device says so, or it had broken. */
        front = safe_close(front);
        if (alive && !vhost_user_dev_broken(dev)) {
                int r = vhost_user_dev_handle_socket(dev);
                fuzz_check(r < 0, "a closed connection read as %d", r);
        }
        log_debug("fuzz: %llu messages, %llu buffers served with %llu bytes.",
                  (unsigned long long) vhost_user_dev_stats(dev)->messages,
                  (unsigned long long) vhost_user_dev_stats(dev)->requests,
                  (unsigned long long) vhost_user_dev_stats(dev)->bytes);
        kick = -EBADF;
        dev = vhost_user_dev_free(dev);
        fuzz_check(fuzz_count_fds() == fds_before, "%u fds open, %u before", fuzz_count_fds(), fds_before);
        return 0;
}
