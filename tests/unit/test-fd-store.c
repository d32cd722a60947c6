/* SPDX-License-Identifier: MIT */
/* Keeping files in systemd's fd store while the device runs: what the
 * store is told, read from a notify socket of our own as systemd would
 * read it. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fd-store.h"
#include "macro.h"
#include "testmain.h"

static const struct {
        const char *name;
        int ret;
        FdKind kind;
        uint64_t n, gen;
} names[] = {
        { "seedbed-fd-0", 0, FD_KIND_NAMED, 0, 0 },
        { "seedbed-fd-4194303", 0, FD_KIND_NAMED, 4194303, 0 },
        { "seedbed-egd-17", 0, FD_KIND_EGD, 17, 0 },
        { "seedbed-state-2", 0, FD_KIND_STATE, 2, 0 },
        { "seedbed-dev-5-9", 0, FD_KIND_DEV, 5, 9 },
        /* Not ours, or not a name we give. */
        { "egd", -EINVAL, 0, 0, 0 },
        { "seedbed-fd-", -EINVAL, 0, 0, 0 },
        { "seedbed-fd-01", -EINVAL, 0, 0, 0 },
        { "seedbed-fd-1x", -EINVAL, 0, 0, 0 },
        { "seedbed-fd--1", -EINVAL, 0, 0, 0 },
        { "seedbed-fd-99999999999999999999999", -EINVAL, 0, 0, 0 },
        { "seedbed-dev-5", -EINVAL, 0, 0, 0 },
        { "seedbed-dev-5-", -EINVAL, 0, 0, 0 },
        { "seedbed-dev-5-9-1", -EINVAL, 0, 0, 0 },
        { "seedbed-state", -EINVAL, 0, 0, 0 }, /* the legacy state: main.c's */
        { "", -EINVAL, 0, 0, 0 },
};

START_TEST(test_parse_name) {
        FdKind kind = FD_KIND_NAMED;
        uint64_t n = 0, gen = 0;
        int r = fd_store_parse_name(names[_i].name, &kind, &n, &gen);

        ck_assert_msg(r == names[_i].ret, "%s: %d", names[_i].name, r);
        if (r < 0)
                return;
        ck_assert_int_eq(kind, names[_i].kind);
        ck_assert_uint_eq(n, names[_i].n);
        ck_assert_uint_eq(gen, names[_i].gen);
}
END_TEST

/* The manager's end: a datagram socket at $NOTIFY_SOCKET, an abstract
 * address (as systemd's own is, for a service in a container). */
static int manager = -EBADF;

static void setup(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char name[64];
        int len;

        len = snprintf(name, sizeof name, "@seedbed-test-fd-store-%d", (int) getpid());
        memcpy(sa.sun_path + 1, name + 1, (size_t) len - 1);
        manager = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(manager, 0);
        ck_assert_int_eq(bind(manager, (struct sockaddr *) &sa, (socklen_t) (offsetof(struct sockaddr_un, sun_path) + (size_t) len)), 0);
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", name, 1), 0);
}

static void teardown(void) {
        manager = safe_close(manager);
}

static const char *next_within(int *ret_fd, int timeout_ms);

/* The next message, "" if none came; *ret_fd the fd it carried (-1). */
static const char *next(int *ret_fd) {
        return next_within(ret_fd, 100);
}

static const char *next_within(int *ret_fd, int timeout_ms) {
        static char text[256];
        union {
                struct cmsghdr h;
                uint8_t buf[CMSG_SPACE(sizeof(int) * 4)];
        } control;
        struct iovec iov = { .iov_base = text, .iov_len = sizeof text - 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control };
        struct pollfd p = { .fd = manager, .events = POLLIN };
        ssize_t k;

        *ret_fd = -1;
        text[0] = 0;
        if (poll(&p, 1, timeout_ms) <= 0)
                return text;
        k = recvmsg(manager, &mh, MSG_CMSG_CLOEXEC);
        ck_assert_int_ge(k, 0);
        text[k] = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                        ck_assert_uint_eq(c->cmsg_len, CMSG_LEN(sizeof(int)));
                        memcpy(ret_fd, CMSG_DATA(c), sizeof(int));
                }
        return text;
}

static void expect(const char *want, bool with_fd) {
        int fd;
        const char *got = next(&fd);

        ck_assert_str_eq(got, want);
        ck_assert_msg((fd >= 0) == with_fd, "%s: fd %d", want, fd);
        if (fd >= 0)
                close(fd);
}

static void expect_prefix(const char *want) {
        int fd;
        const char *got = next(&fd);

        ck_assert_msg(strncmp(got, want, strlen(want)) == 0, "'%s' is not '%s…'", got, want);
        if (fd >= 0)
                close(fd);
}

START_TEST(test_no_manager) {
        FdStore *s = NULL;

        ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);
        ck_assert_int_eq(fd_store_new(&s), -ENXIO);
}
END_TEST

START_TEST(test_one_entry_per_file) {
        FdStore *s = NULL;
        uint32_t a, b, c, id, e1, e2;
        int mem, mem2, ev, ev2, other, sv[2];

        ck_assert_int_eq(fd_store_new(&s), 0);
        /* Two regions of guest memory on one memfd: stored once. */
        mem = memfd_create("guest-ram", MFD_CLOEXEC);
        ck_assert_int_ge(mem, 0);
        mem2 = fcntl(mem, F_DUPFD_CLOEXEC, 3);
        ck_assert_int_eq(fd_store_hold(s, mem, FD_KIND_NAMED, &a), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-fd-0", true);
        ck_assert_int_eq(fd_store_hold(s, mem2, FD_KIND_NAMED, &b), 0);
        ck_assert_uint_eq(a, b);
        expect("", false);
        ck_assert_int_eq(fd_store_id_for_state(s, mem2, &id), 0);
        ck_assert_uint_eq(id, a);

        /* An EGD connection: a name a successor can take up alone. */
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(fd_store_hold(s, sv[0], FD_KIND_EGD, &c), 0);
        ck_assert_uint_ne(c, a);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-egd-1", true);
        ck_assert_uint_eq(fd_store_count(s), 2);

        /* The first holder goes: the file stays, for the second. */
        fd_store_release(s, a);
        close(mem);
        expect("", false);
        ck_assert_int_eq(fd_store_id_for_state(s, mem2, &id), 0);
        fd_store_release(s, b);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-fd-0", false);
        ck_assert_int_eq(fd_store_id_for_state(s, mem2, &id), -ENOENT);
        close(mem2);

        /* A call eventfd sent again (a new fd on the same file) is the
         * same entry: systemd would drop the second copy silently, and
         * the first would leave with the old fd.  Another eventfd (one
         * anonymous inode for all) is another. */
        ev = eventfd(0, EFD_CLOEXEC);
        ck_assert_int_eq(fd_store_hold(s, ev, FD_KIND_NAMED, &e1), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-fd-2", true);
        ev2 = fcntl(ev, F_DUPFD_CLOEXEC, 3);
        ck_assert_int_eq(fd_store_hold(s, ev2, FD_KIND_NAMED, &e2), 0);
        ck_assert_uint_eq(e1, e2);
        expect("", false);
        fd_store_release(s, e1);
        close(ev);
        other = eventfd(0, EFD_CLOEXEC); /* likely ev's number */
        ck_assert_int_eq(fd_store_id_for_state(s, other, &id), -ENOENT);
        ck_assert_int_eq(fd_store_id_for_state(s, ev2, &id), 0);
        ck_assert_uint_eq(fd_store_name(s, id), 2);
        fd_store_release(s, e2);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-fd-2", false);
        /* Names are never given again, the slot is. */
        ck_assert_int_eq(fd_store_hold(s, other, FD_KIND_NAMED, &id), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-fd-3", true);
        fd_store_release(s, id);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-fd-3", false);
        close(other);
        close(ev2);

        /* Only what a successor may take: not a pipe, not a file on a
         * file system that could block us. */
        int p[2];
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_eq(fd_store_hold(s, p[0], FD_KIND_NAMED, &id), -EMEDIUMTYPE);
        close(p[0]);
        close(p[1]);
        expect("", false);

        fd_store_release(s, c);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-egd-1", false);
        ck_assert_uint_eq(fd_store_count(s), 0);
        close(sv[0]);
        close(sv[1]);
        fd_store_free(s);
}
END_TEST

START_TEST(test_state) {
        FdStore *s = NULL;
        int m1 = memfd_create("state", MFD_CLOEXEC), m2 = memfd_create("state", MFD_CLOEXEC);
        int d1 = memfd_create("dev", MFD_CLOEXEC), d2 = memfd_create("dev", MFD_CLOEXEC), sv[2];
        uint64_t gen = 0;
        uint32_t sock;

        ck_assert_int_eq(fd_store_new(&s), 0);
        ck_assert_int_eq(fd_store_put_state(s, m1), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-state-0", true);
        /* The newest first, then the one before goes: a crash between the
         * two leaves two, and the next start takes the newest. */
        ck_assert_int_eq(fd_store_put_state(s, m2), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-state-1", true);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-state-0", false);

        /* A device's own state, named after its socket. */
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(fd_store_hold(s, sv[0], FD_KIND_NAMED, &sock), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-fd-2", true);
        ck_assert_int_eq(fd_store_put_device(s, sock, &gen, d1), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-dev-2-3", true);
        ck_assert_uint_eq(gen, 3);
        ck_assert_int_eq(fd_store_put_device(s, sock, &gen, d2), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-dev-2-4", true);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-dev-2-3", false);
        ck_assert_uint_eq(fd_store_count(s), 3);
        ck_assert_int_eq(fd_store_put_device(s, sock, &gen, -EBADF), 0);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-dev-2-4", false);
        ck_assert_uint_eq(gen, 0);
        fd_store_release(s, sock);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-fd-2", false);
        ck_assert_uint_eq(fd_store_count(s), 1);
        close(m1);
        close(m2);
        close(d1);
        close(d2);
        close(sv[0]);
        close(sv[1]);
        fd_store_free(s);
}
END_TEST

/* The next start: the files keep their names, names go on from the
 * highest, what nobody takes up leaves with the old states. */
START_TEST(test_adopt) {
        FdStore *s = NULL;
        int sv[2], mem = memfd_create("guest-ram", MFD_CLOEXEC), ev = eventfd(0, EFD_CLOEXEC);
        int st = memfd_create("state", MFD_CLOEXEC), gone = eventfd(0, EFD_CLOEXEC);
        uint32_t id;

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(fd_store_new(&s), 0);
        /* As LISTEN_FDS passes them: the store keeps these. */
        ck_assert_int_eq(fd_store_adopt(s, "seedbed-egd-7", fcntl(sv[0], F_DUPFD_CLOEXEC, 3)), 0);
        ck_assert_int_eq(fd_store_adopt(s, "seedbed-fd-9", fcntl(mem, F_DUPFD_CLOEXEC, 3)), 0);
        ck_assert_int_eq(fd_store_adopt(s, "seedbed-fd-12", fcntl(ev, F_DUPFD_CLOEXEC, 3)), 0);
        ck_assert_int_eq(fd_store_adopt(s, "seedbed-fd-4", gone), 0);
        ck_assert_int_eq(fd_store_adopt(s, "seedbed-state-30", st), 0);
        ck_assert_int_eq(fd_store_adopt(s, "nonsense", eventfd(0, EFD_CLOEXEC)), -EINVAL);
        expect("", false);
        /* Not a file we keep (a pipe): out of the store, not counted. */
        int p[2];
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_eq(fd_store_adopt(s, "seedbed-fd-40", p[0]), 0);
        close(p[1]);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-fd-40", false);
        ck_assert_uint_eq(fd_store_count(s), 5);

        /* Held through other fds on the same files: no message. */
        ck_assert_int_eq(fd_store_hold(s, sv[0], FD_KIND_EGD, &id), 0);
        ck_assert_uint_eq(fd_store_name(s, id), 7);
        ck_assert_int_eq(fd_store_hold(s, mem, FD_KIND_NAMED, &id), 0);
        ck_assert_uint_eq(fd_store_name(s, id), 9);
        ck_assert_int_eq(fd_store_hold(s, ev, FD_KIND_NAMED, &id), 0);
        ck_assert_uint_eq(fd_store_name(s, id), 12);
        expect("", false);
        /* A new file gets a name past every one passed. */
        int fresh = eventfd(0, EFD_CLOEXEC);
        ck_assert_int_eq(fd_store_hold(s, fresh, FD_KIND_NAMED, &id), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-fd-41", true);

        fd_store_adopted_done(s);
        /* Not taken up, and the old state: out of the store. */
        const char *m1 = NULL, *m2 = NULL;
        int fd;
        char first[128];
        m1 = next(&fd);
        snprintf(first, sizeof first, "%s", m1);
        m2 = next(&fd);
        ck_assert_str_eq(first, "FDSTOREREMOVE=1\nFDNAME=seedbed-fd-4");
        ck_assert_str_eq(m2, "FDSTOREREMOVE=1\nFDNAME=seedbed-state-30");
        expect("", false);
        ck_assert_uint_eq(fd_store_count(s), 4);
        close(sv[0]);
        close(sv[1]);
        close(mem);
        close(ev);
        close(fresh);
        fd_store_free(s);
}
END_TEST

/* Thousands of eventfds (three a VM): found by their files in kcmp()'s
 * order, a few calls each, and never taken for one another. */
START_TEST(test_many_eventfds) {
        enum { N = 3000 };
        static int ev[N], again[N];
        static uint32_t ids[N];
        FdStore *s = NULL;
        struct rlimit rl;
        uint32_t id;
        int fd, got = 0;

        ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
        rl.rlim_cur = MIN(rl.rlim_max, (rlim_t) 4 * N + 64);
        (void) setrlimit(RLIMIT_NOFILE, &rl);
        ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
        if (rl.rlim_cur < (rlim_t) 4 * N + 64)
                return; /* a hard limit this low: nothing to learn here */
        ck_assert_int_eq(fd_store_new(&s), 0);
        for (int i = 0; i < N; i++) {
                ev[i] = eventfd(0, EFD_CLOEXEC);
                ck_assert_int_ge(ev[i], 0);
                ck_assert_int_eq(fd_store_hold(s, ev[i], FD_KIND_NAMED, &ids[i]), 0);
                /* The manager reads as it goes, as systemd does. */
                while (next_within(&fd, 0)[0]) {
                        got++;
                        close(fd);
                }
        }
        ck_assert_int_eq(got, N);
        /* Each sent again (a new fd on the same file): the same entry. */
        for (int i = 0; i < N; i++) {
                again[i] = fcntl(ev[i], F_DUPFD_CLOEXEC, 3);
                ck_assert_int_eq(fd_store_hold(s, again[i], FD_KIND_NAMED, &id), 0);
                ck_assert_uint_eq(id, ids[i]);
        }
        expect("", false);
        /* Half go; the others are still themselves. */
        for (int i = 0; i < N; i += 2) {
                fd_store_release(s, ids[i]);
                fd_store_release(s, ids[i]);
                close(ev[i]);
                close(again[i]);
                while (next_within(&fd, 0)[0])
                        got++;
        }
        ck_assert_int_eq(got, N + N / 2);
        for (int i = 1; i < N; i += 2) {
                ck_assert_int_eq(fd_store_id_for_state(s, again[i], &id), 0);
                ck_assert_uint_eq(id, ids[i]);
        }
        ck_assert_uint_eq(fd_store_count(s), N / 2);
        for (int i = 1; i < N; i += 2) {
                close(ev[i]);
                close(again[i]);
        }
        fd_store_free(s);
}
END_TEST

/* $FDSTORE (systemd 254 and later): files stop short of it, so the
 * states that name them still fit. */
START_TEST(test_limit) {
        FdStore *s = NULL;
        int ev[8], m = memfd_create("state", MFD_CLOEXEC);
        uint32_t id;
        unsigned held = 0;

        ck_assert_int_eq(setenv("FDSTORE", "8", 1), 0);
        ck_assert_int_eq(fd_store_new(&s), 0);
        ck_assert_int_eq(unsetenv("FDSTORE"), 0);
        for (int i = 0; i < 8; i++) {
                ev[i] = eventfd(0, EFD_CLOEXEC);
                if (fd_store_hold(s, ev[i], FD_KIND_NAMED, &id) == 0) {
                        held++;
                        expect_prefix("FDSTORE=1");
                } else
                        ck_assert_int_eq(fd_store_hold(s, ev[i], FD_KIND_NAMED, &id), -ENOSPC);
        }
        ck_assert_uint_eq(held, 7);
        /* A first state must leave a slot to be replaced through: with
         * seven files in eight slots there is none. */
        ck_assert_int_eq(fd_store_put_state(s, m), -ENOSPC);
        expect("", false);
        close(ev[0]);
        fd_store_release(s, 0);
        expect_prefix("FDSTOREREMOVE=1");
        ck_assert_int_eq(fd_store_put_state(s, m), 0);
        expect_prefix("FDSTORE=1");
        /* Replaced through the free slot, again and again. */
        ck_assert_int_eq(fd_store_put_state(s, m), 0);
        expect_prefix("FDSTORE=1");
        expect_prefix("FDSTOREREMOVE=1");
        ck_assert_uint_eq(fd_store_count(s), 7);
        for (int i = 1; i < 8; i++)
                close(ev[i]);
        close(m);
        fd_store_free(s);
}
END_TEST

/* An adopted file keeps the name it was stored under, whatever it is
 * held as: removed under another, it would stay in the store. */
START_TEST(test_adopted_kind) {
        FdStore *s = NULL;
        int sv[2];
        uint32_t id;

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(fd_store_new(&s), 0);
        ck_assert_int_eq(fd_store_adopt(s, "seedbed-fd-3", fcntl(sv[0], F_DUPFD_CLOEXEC, 3)), 0);
        ck_assert_int_eq(fd_store_hold(s, sv[0], FD_KIND_EGD, &id), 0);
        expect("", false);
        fd_store_release(s, id);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-fd-3", false);
        close(sv[0]);
        close(sv[1]);
        fd_store_free(s);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("fd-store");
        TCase *tc = tcase_create("names");

        tcase_add_loop_test(tc, test_parse_name, 0, (int) ELEMENTSOF(names));
        suite_add_tcase(s, tc);
        tc = tcase_create("store");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_no_manager);
        tcase_add_test(tc, test_one_entry_per_file);
        tcase_add_test(tc, test_state);
        tcase_add_test(tc, test_adopt);
        tcase_add_test(tc, test_many_eventfds);
        tcase_add_test(tc, test_limit);
        tcase_add_test(tc, test_adopted_kind);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(suite)
