/* SPDX-License-Identifier: MIT */
/* The reader that both programs use for /dev/hwrng, driven with pipes
 * the test writes to (or does not): its consumer end never blocks, its
 * thread costs nothing while it waits, the bytes arrive in order, end of
 * file and read errors reach the consumer, and letting go of a reader
 * whose thread is blocked neither waits nor leaks (run under ASan by the
 * sanitizer build). */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/random.h>
#include <time.h>

#include "blocking-reader.h"
#include "fileio.h"
#include "testmain.h"

/* Long enough for any thread on a loaded machine to get there; the tests
 * that wait this long pass as soon as what they wait for happens. */
#define WAIT_MSEC 5000

static usec_t cpu_usec(void) {
        struct timespec ts;

        ck_assert_int_eq(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts), 0);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / NSEC_PER_USEC;
}

/* Everything the reader hands over until it ends; returns the count and
 * puts the end (0 or -errno) in *ret_end. */
static size_t drain(BlockingReader *r, uint8_t *buf, size_t max, ssize_t *ret_end) {
        size_t got = 0;

        for (;;) {
                struct pollfd p = { .fd = blocking_reader_fd(r), .events = POLLIN };
                uint8_t scratch[1];
                ssize_t k = got < max ? blocking_reader_read(r, buf + got, max - got)
                                      : blocking_reader_read(r, scratch, sizeof scratch);

                if (k > 0) {
                        ck_assert_uint_lt(got, max);
                        got += (size_t) k;
                        continue;
                }
                if (k != -EAGAIN) {
                        *ret_end = k;
                        return got;
                }
                ck_assert_int_eq(poll(&p, 1, WAIT_MSEC), 1);
        }
}

/* Whether the other end of a pipe was closed: the reader's thread is
 * gone, since it closes its file when it exits. */
static bool peer_closed(int fd, int msec) {
        struct pollfd p = { .fd = fd };

        return poll(&p, 1, msec) == 1 && (p.revents & (POLLERR | POLLHUP));
}

START_TEST(test_bytes_in_order_then_end) {
        uint8_t data[20000], got[sizeof data];
        BlockingReader *r = NULL;
        int src[2];
        ssize_t end = 1;

        ck_assert_int_eq(getrandom(data, sizeof data, 0), (ssize_t) sizeof data);
        ck_assert_int_eq(pipe2(src, O_CLOEXEC), 0);
        /* Odd chunks, a pipe smaller than the data: the thread waits for
         * room several times over. */
        ck_assert_int_eq(blocking_reader_new(src[0], 333, 4096, &r), 0);
        {
                pid_t pid = fork();
                ck_assert_int_ge(pid, 0);
                if (pid == 0) {
                        (void) loop_write(src[1], data, sizeof data);
                        _exit(0);
                }
        }
        safe_close(src[1]);
        ck_assert_uint_eq(drain(r, got, sizeof got, &end), sizeof data);
        ck_assert_int_eq(end, 0);
        ck_assert_mem_eq(got, data, sizeof data);
        /* And it stays ended. */
        ck_assert_int_eq(blocking_reader_read(r, got, sizeof got), 0);
        blocking_reader_free(r);
}
END_TEST

START_TEST(test_silent_source_costs_nothing) {
        BlockingReader *r = NULL;
        struct pollfd p;
        int src[2], probe;
        uint8_t buf[64];
        usec_t t0, cpu0;

        /* O_NONBLOCK on the source, as the device opens it: the reader
         * makes it blocking, or its thread would spin on EAGAIN. */
        ck_assert_int_eq(pipe2(src, O_CLOEXEC | O_NONBLOCK), 0);
        probe = fcntl(src[0], F_DUPFD_CLOEXEC, 3);
        ck_assert_int_ge(probe, 0);
        ck_assert_int_eq(blocking_reader_new(src[0], 64, 4096, &r), 0);
        ck_assert_int_eq(fcntl(probe, F_GETFL) & O_NONBLOCK, 0);
        ck_assert(fcntl(blocking_reader_fd(r), F_GETFL) & O_NONBLOCK);
        ck_assert(fcntl(blocking_reader_fd(r), F_GETFD) & FD_CLOEXEC);

        /* The consumer is answered at once, and nothing wakes it. */
        t0 = now_usec(CLOCK_MONOTONIC);
        ck_assert_int_eq(blocking_reader_read(r, buf, sizeof buf), -EAGAIN);
        ck_assert_uint_lt(now_usec(CLOCK_MONOTONIC) - t0, 100 * USEC_PER_MSEC);
        cpu0 = cpu_usec();
        p = (struct pollfd) { .fd = blocking_reader_fd(r), .events = POLLIN };
        ck_assert_int_eq(poll(&p, 1, 300), 0);
        /* Waiting 300 ms cost the whole process (the thread too) next to
         * nothing: it sleeps in read(). */
        ck_assert_uint_lt(cpu_usec() - cpu0, 30 * USEC_PER_MSEC);

        /* The first byte that comes is handed on. */
        ck_assert_int_eq(write(src[1], "x", 1), 1);
        ck_assert_int_eq(poll(&p, 1, WAIT_MSEC), 1);
        ck_assert_int_eq(blocking_reader_read(r, buf, sizeof buf), 1);
        ck_assert_int_eq(buf[0], 'x');

        blocking_reader_free(r);
        safe_close(src[1]);
        safe_close(probe);
}
END_TEST

START_TEST(test_read_error_surfaces) {
        BlockingReader *r = NULL;
        uint8_t buf[16];
        ssize_t end = 1;
        int dir;

        /* read() on a directory fails with EISDIR. */
        dir = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ck_assert_int_ge(dir, 0);
        ck_assert_int_eq(blocking_reader_new(dir, 16, 4096, &r), 0);
        ck_assert_uint_eq(drain(r, buf, sizeof buf, &end), 0);
        ck_assert_int_eq(end, -EISDIR);
        blocking_reader_free(r);
}
END_TEST

START_TEST(test_abandoned_while_in_read) {
        BlockingReader *r = NULL;
        int src[2];

        /* The thread is blocked in read() when the consumer lets go: that
         * returns at once, and the thread leaves when its read returns
         * (it closes the source, which the writer sees). */
        ck_assert_int_eq(pipe2(src, O_CLOEXEC), 0);
        ck_assert_int_eq(blocking_reader_new(src[0], 64, 4096, &r), 0);
        (void) poll(NULL, 0, 50);
        ck_assert_ptr_null(blocking_reader_free(r));
        ck_assert(!peer_closed(src[1], 100));
        ck_assert_int_eq(write(src[1], "late", 4), 4);
        ck_assert(peer_closed(src[1], WAIT_MSEC));
        safe_close(src[1]);
}
END_TEST

START_TEST(test_abandoned_while_pipe_full) {
        uint8_t data[16384] = {};
        BlockingReader *r = NULL;
        int src[2];

        /* More than the reader's pipe holds: its thread waits for room
         * when the consumer lets go, and leaves on EPIPE (no SIGPIPE
         * kills the process). */
        ck_assert_int_eq(pipe2(src, O_CLOEXEC), 0);
        ck_assert_int_eq(fcntl(src[1], F_SETPIPE_SZ, 65536), 65536);
        ck_assert_int_eq(write(src[1], data, sizeof data), (ssize_t) sizeof data);
        ck_assert_int_eq(blocking_reader_new(src[0], 1024, 4096, &r), 0);
        (void) poll(NULL, 0, 50);
        blocking_reader_free(r);
        ck_assert(peer_closed(src[1], WAIT_MSEC));
        safe_close(src[1]);
}
END_TEST

/* SigBlk of the process's one other thread, from /proc. */
static uint64_t other_thread_sigblk(void) {
        DIR *d = opendir("/proc/self/task");
        uint64_t mask = 0;
        unsigned found = 0;
        struct dirent *de;

        ck_assert_ptr_nonnull(d);
        while ((de = readdir(d))) {
                char path[64], *status = NULL, *line;

                if (de->d_name[0] == '.' || (pid_t) atoi(de->d_name) == gettid())
                        continue;
                (void) snprintf(path, sizeof path, "/proc/self/task/%s/status", de->d_name);
                ck_assert_int_eq(read_full_file(path, 65536, &status, NULL), 0);
                line = strstr(status, "\nSigBlk:");
                ck_assert_ptr_nonnull(line);
                mask = strtoull(line + strlen("\nSigBlk:"), NULL, 16);
                free(status);
                found++;
        }
        closedir(d);
        ck_assert_uint_eq(found, 1);
        return mask;
}

START_TEST(test_thread_takes_no_signal) {
        BlockingReader *r = NULL;
        sigset_t ours, now;
        struct pollfd p;
        uint64_t mask;
        uint8_t b;
        int src[2];

        /* The device blocks SIGTERM only after its sources started, and
         * reads it from a signalfd: a reader thread that did not block it
         * would take its default action and end the process.  So the
         * caller here blocks nothing, as the device then does. */
        sigemptyset(&ours);
        sigaddset(&ours, SIGTERM);
        sigaddset(&ours, SIGINT);
        sigaddset(&ours, SIGHUP);
        sigaddset(&ours, SIGPIPE);
        ck_assert_int_eq(pthread_sigmask(SIG_UNBLOCK, &ours, NULL), 0);
        ck_assert_int_eq(pipe2(src, O_CLOEXEC), 0);
        ck_assert_int_eq(blocking_reader_new(src[0], 64, 4096, &r), 0);
        /* The caller's mask is left as it was. */
        ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &now), 0);
        ck_assert(!sigismember(&now, SIGTERM));
        /* A byte through it first: glibc starts a thread with every
         * signal blocked until it runs, and only then is its own mask in
         * place. */
        ck_assert_int_eq(write(src[1], "x", 1), 1);
        p = (struct pollfd) { .fd = blocking_reader_fd(r), .events = POLLIN };
        ck_assert_int_eq(poll(&p, 1, WAIT_MSEC), 1);
        ck_assert_int_eq(blocking_reader_read(r, &b, 1), 1);
        mask = other_thread_sigblk();
        ck_assert(mask & (UINT64_C(1) << (SIGTERM - 1)));
        ck_assert(mask & (UINT64_C(1) << (SIGINT - 1)));
        ck_assert(mask & (UINT64_C(1) << (SIGHUP - 1)));
        ck_assert(mask & (UINT64_C(1) << (SIGPIPE - 1)));
        blocking_reader_free(r);
        safe_close(src[1]);
}
END_TEST

START_TEST(test_bad_arguments) {
        BlockingReader *r = NULL;
        int src[2];

        ck_assert_int_eq(blocking_reader_new(-EBADF, 64, 4096, &r), -EINVAL);
        /* The fd is taken over on failure too. */
        ck_assert_int_eq(pipe2(src, O_CLOEXEC), 0);
        ck_assert_int_eq(blocking_reader_new(src[0], 0, 4096, &r), -EINVAL);
        ck_assert(peer_closed(src[1], 0));
        ck_assert_ptr_null(r);
        ck_assert_ptr_null(blocking_reader_free(NULL));
        safe_close(src[1]);
}
END_TEST

static Suite *blocking_reader_suite(void) {
        Suite *s = suite_create("blocking-reader");
        TCase *tc;

        tc = tcase_create("hand-over");
        tcase_add_test(tc, test_bytes_in_order_then_end);
        tcase_add_test(tc, test_silent_source_costs_nothing);
        tcase_add_test(tc, test_read_error_surfaces);
        suite_add_tcase(s, tc);

        tc = tcase_create("letting-go");
        tcase_add_test(tc, test_abandoned_while_in_read);
        tcase_add_test(tc, test_abandoned_while_pipe_full);
        tcase_add_test(tc, test_thread_takes_no_signal);
        tcase_add_test(tc, test_bad_arguments);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(blocking_reader_suite)
