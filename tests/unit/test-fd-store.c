/* SPDX-License-Identifier: MIT */
/* Keeping files in systemd's fd store while the device runs: what the
 * store is told, read from a notify socket of our own as systemd would
 * read it. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
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
        bool state;
        uint64_t n;
} names[] = {
        { "seedbed-fd-0", 0, FD_KIND_NAMED, false, 0 },
        { "seedbed-fd-4194303", 0, FD_KIND_NAMED, false, 4194303 },
        { "seedbed-egd-17", 0, FD_KIND_EGD, false, 17 },
        { "seedbed-state-2", 0, FD_KIND_NAMED, true, 2 },
        /* Not ours, or not a name we give. */
        { "egd", -EINVAL, 0, false, 0 },
        { "seedbed-fd-", -EINVAL, 0, false, 0 },
        { "seedbed-fd-01", -EINVAL, 0, false, 0 },
        { "seedbed-fd-1x", -EINVAL, 0, false, 0 },
        { "seedbed-fd--1", -EINVAL, 0, false, 0 },
        { "seedbed-fd-99999999999999999999999", -EINVAL, 0, false, 0 },
        { "seedbed-state", -EINVAL, 0, false, 0 }, /* the legacy state: main.c's */
        { "", -EINVAL, 0, false, 0 },
};

START_TEST(test_parse_name) {
        FdKind kind = FD_KIND_NAMED;
        bool state = false;
        uint64_t n = 0;
        int r = fd_store_parse_name(names[_i].name, &kind, &state, &n);

        ck_assert_msg(r == names[_i].ret, "%s: %d", names[_i].name, r);
        if (r < 0)
                return;
        ck_assert_int_eq(kind, names[_i].kind);
        ck_assert_int_eq(state, names[_i].state);
        ck_assert_uint_eq(n, names[_i].n);
}
END_TEST

/* The manager's end: a datagram socket at $NOTIFY_SOCKET. */
static int manager = -EBADF;
static char dir[64];

static void setup(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        (void) snprintf(dir, sizeof dir, "%s/test-fd-store.XXXXXX", getenv("TMPDIR") ?: "/tmp");
        ck_assert_ptr_nonnull(mkdtemp(dir));
        (void) snprintf(sa.sun_path, sizeof sa.sun_path, "%s/notify", dir);
        manager = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(manager, 0);
        ck_assert_int_eq(bind(manager, (struct sockaddr *) &sa, sizeof sa), 0);
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", sa.sun_path, 1), 0);
}

static void teardown(void) {
        char path[64];

        (void) snprintf(path, sizeof path, "%s/notify", dir);
        (void) unlink(path);
        (void) rmdir(dir);
        manager = safe_close(manager);
}

/* The next message, "" if none came; *ret_fd the fd it carried (-1). */
static const char *next(int *ret_fd) {
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
        if (poll(&p, 1, 100) <= 0)
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

START_TEST(test_no_manager) {
        FdStore *s = NULL;

        ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);
        ck_assert_int_eq(fd_store_new(&s), -ENXIO);
}
END_TEST

START_TEST(test_one_entry_per_file) {
        FdStore *s = NULL;
        uint32_t a, b, c, id;
        int mem, mem2, ev;

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
        int sv[2];
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

        /* The freed id is not given again while the state in the store
         * may name it ... */
        ev = eventfd(0, EFD_CLOEXEC);
        ck_assert_int_eq(fd_store_hold(s, ev, FD_KIND_NAMED, &id), 0);
        ck_assert_uint_eq(id, 2);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-fd-2", true);
        fd_store_release(s, id);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-fd-2", false);
        close(ev);
        /* ... only once a newer one is there. */
        int m = memfd_create("state", MFD_CLOEXEC);
        ck_assert_int_eq(fd_store_put_state(s, m), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-state-1", true);
        close(m);
        /* An eventfd that takes the number of one gone is not mistaken
         * for it (they share one inode). */
        ev = eventfd(0, EFD_CLOEXEC);
        ck_assert_int_eq(fd_store_hold(s, ev, FD_KIND_NAMED, &id), 0);
        ck_assert_uint_eq(id, 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-fd-0", true);
        fd_store_release(s, id);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-fd-0", false);
        close(ev);
        ev = eventfd(0, EFD_CLOEXEC);
        ck_assert_int_eq(fd_store_id_for_state(s, ev, &id), -ENOENT);
        close(ev);

        fd_store_release(s, c);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-egd-1", false);
        ck_assert_uint_eq(fd_store_count(s), 1); /* the state */
        close(sv[0]);
        close(sv[1]);
        fd_store_free(s);
}
END_TEST

START_TEST(test_state) {
        FdStore *s = NULL;
        int m1 = memfd_create("state", MFD_CLOEXEC), m2 = memfd_create("state", MFD_CLOEXEC);

        ck_assert_int_eq(fd_store_new(&s), 0);
        ck_assert_int_eq(fd_store_put_state(s, m1), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-state-1", true);
        /* The newest first, then the one before goes: a crash between the
         * two leaves two, and the next start takes the newest. */
        ck_assert_int_eq(fd_store_put_state(s, m2), 0);
        expect("FDSTORE=1\nFDPOLL=0\nFDNAME=seedbed-state-2", true);
        expect("FDSTOREREMOVE=1\nFDNAME=seedbed-state-1", false);
        ck_assert_uint_eq(fd_store_count(s), 1);
        close(m1);
        close(m2);
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
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(suite)
