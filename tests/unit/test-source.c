/* SPDX-License-Identifier: MIT */
/* The device's sources fail closed: a source that fails its health tests
 * serves nothing (not even the failing chunk), the next healthy source
 * takes over, and with none left nothing at all is served.  A device that
 * has nothing to give (a FIFO nobody writes) stalls no read. */
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "fakeroot.h"
#include "fileio.h"
#include "rdseed.h"
#include "source.h"
#include "testmain.h"

static char *root;

static void setup(void) {
        root = fakeroot_new();
}

static void teardown(void) {
        fakeroot_free(root);
        root = NULL;
}

static char *device_file(const char *name, uint8_t fill, size_t n, bool random) {
        uint8_t *b = malloc(n);
        char *path;

        ck_assert_ptr_nonnull(b);
        if (random)
                ck_assert_int_eq(getrandom(b, n, 0), (ssize_t) n);
        else
                memset(b, fill, n);
        fakeroot_write_bytes(root, name, b, n);
        free(b);
        ck_assert_int_ge(asprintf(&path, "%s%s", root, name), 0);
        return path;
}

/* A device's thread fills its pipe in the background: wait until it
 * holds n bytes, so that reads see what reading the file itself gave. */
static void wait_buffered(const EntropySource *e, size_t n) {
        for (int i = 0; i < 500; i++) {
                int avail = 0;

                ck_assert_int_eq(ioctl(blocking_reader_fd(e->reader), FIONREAD, &avail), 0);
                if ((size_t) avail >= n)
                        return;
                (void) poll(NULL, 0, 10);
        }
        ck_abort_msg("the reader did not read %zu bytes ahead", n);
}

static bool all_zero(const uint8_t *b, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (b[i])
                        return false;
        return true;
}

START_TEST(test_getrandom_serves) {
        SourceSet s = {};
        uint8_t buf[4096];

        ck_assert_int_eq(source_set_add(&s, SOURCE_GETRANDOM, NULL, 8), 0);
        ck_assert(!source_set_any_healthy(&s));
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 0), sizeof buf);
        ck_assert(source_set_any_healthy(&s));
        ck_assert_uint_eq(s.sources[0].bytes, sizeof buf);
        ck_assert(!all_zero(buf, sizeof buf));
        source_set_free(&s);
}
END_TEST

START_TEST(test_stuck_device_fails_closed) {
        char *stuck = device_file("/dev/stuck", 0x42, 65536, false);
        SourceSet s = {};
        uint8_t buf[256];

        /* Fails during its startup tests: nothing is ever served. */
        ck_assert_int_eq(source_set_add(&s, SOURCE_DEVICE, stuck, 8), 0);
        wait_buffered(&s.sources[0], STARTUP_TEST_SAMPLES_MIN);
        memset(buf, 0xaa, sizeof buf);
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 1000), 0);
        ck_assert(!s.sources[0].healthy);
        ck_assert_uint_eq(s.sources[0].failures, 1);
        ck_assert_uint_eq(s.sources[0].bytes, 0);
        /* Out until its retry time; reading again serves nothing. */
        ck_assert_uint_eq(source_set_next_retry(&s), 1000 + SOURCE_RETRY_USEC);
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 2000), 0);
        ck_assert_uint_eq(s.sources[0].failures, 1);
        source_set_free(&s);
        free(stuck);
}
END_TEST

START_TEST(test_failing_chunk_wiped_and_next_source) {
        SourceSet s = {};
        uint8_t *data = malloc(16384), buf[2048];
        char *path;
        size_t k;

        /* Good bytes for the startup tests and one large read, then a
         * stuck run.  Large reads go straight to the caller. */
        ck_assert_int_eq(getrandom(data, 1024 + 2048, 0), 1024 + 2048);
        memset(data + 1024 + 2048, 0x42, 16384 - 1024 - 2048);
        fakeroot_write_bytes(root, "/dev/flaky", data, 16384);
        ck_assert_int_ge(asprintf(&path, "%s/dev/flaky", root), 0);

        ck_assert_int_eq(source_set_add(&s, SOURCE_DEVICE, path, 8), 0);
        ck_assert_int_eq(source_set_add(&s, SOURCE_GETRANDOM, NULL, 8), 0);
        wait_buffered(&s.sources[0], 16384);

        k = source_set_read(&s, buf, sizeof buf, 0);
        ck_assert_uint_eq(k, sizeof buf);
        ck_assert_mem_eq(buf, data + 1024, sizeof buf);
        ck_assert_uint_eq(s.sources[0].bytes, sizeof buf);

        /* The stuck chunk fails: none of it comes back, getrandom serves. */
        k = source_set_read(&s, buf, sizeof buf, 0);
        ck_assert_uint_eq(k, sizeof buf);
        ck_assert(!s.sources[0].healthy);
        ck_assert_uint_eq(s.sources[0].failures, 1);
        ck_assert_uint_eq(s.sources[0].bytes, sizeof buf);
        ck_assert_uint_eq(s.sources[1].bytes, sizeof buf);
        /* What arrived is getrandom()'s, not the stuck run: random bytes
         * hold about eight 0x42 in 2048, the stuck chunk 2048. */
        {
                unsigned n42 = 0;
                for (size_t i = 0; i < sizeof buf; i++)
                        n42 += buf[i] == 0x42;
                ck_assert_uint_lt(n42, 64);
        }
        source_set_free(&s);
        free(path);
        free(data);
}
END_TEST

START_TEST(test_cached_chunk_all_or_nothing) {
        SourceSet s = {};
        uint8_t *data = malloc(16384), buf[64];
        char *path;

        /* Small reads are served from a tested read-ahead block.  A block
         * that fails is dropped whole: not even its good start is served. */
        ck_assert_int_eq(getrandom(data, 1024 + 100, 0), 1024 + 100);
        memset(data + 1024 + 100, 0x42, 16384 - 1024 - 100);
        fakeroot_write_bytes(root, "/dev/flaky", data, 16384);
        ck_assert_int_ge(asprintf(&path, "%s/dev/flaky", root), 0);
        ck_assert_int_eq(source_set_add(&s, SOURCE_DEVICE, path, 8), 0);
        ck_assert_int_eq(source_set_add(&s, SOURCE_GETRANDOM, NULL, 8), 0);
        wait_buffered(&s.sources[0], 16384);

        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 0), sizeof buf);
        ck_assert(memcmp(buf, data + 1024, sizeof buf) != 0);
        ck_assert_uint_eq(s.sources[0].failures, 1);
        ck_assert_uint_eq(s.sources[0].bytes, 0);
        ck_assert_uint_eq(s.sources[1].bytes, sizeof buf);

        /* Later small reads come from the same block, each byte once. */
        {
                uint8_t again[64];
                ck_assert_uint_eq(source_set_read(&s, again, sizeof again, 0), sizeof again);
                ck_assert(memcmp(again, buf, sizeof buf) != 0);
                ck_assert_uint_eq(s.sources[1].bytes, 2 * sizeof buf);
        }
        source_set_free(&s);
        free(path);
        free(data);
}
END_TEST

START_TEST(test_retry_after_failure) {
        SourceSet s = {};
        uint8_t buf[64];
        char *path = device_file("/dev/stuck", 0x42, 4096, false);

        ck_assert_int_eq(source_set_add(&s, SOURCE_DEVICE, path, 8), 0);
        wait_buffered(&s.sources[0], 4096);
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 0), 0);
        ck_assert_uint_eq(s.sources[0].failures, 1);

        /* Replace the device's contents with good bytes: after the retry
         * time it passes fresh startup tests and serves again. */
        source_set_free(&s);
        free(path);
        path = device_file("/dev/good", 0, 4096, true);
        ck_assert_int_eq(source_set_add(&s, SOURCE_DEVICE, path, 8), 0);
        wait_buffered(&s.sources[0], 4096);
        s.sources[0].healthy = false;
        s.sources[0].starting = false;
        s.sources[0].retry_at = 5 * USEC_PER_SEC;
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 4 * USEC_PER_SEC), 0);
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 5 * USEC_PER_SEC), sizeof buf);
        ck_assert(s.sources[0].healthy);
        source_set_free(&s);
        free(path);
}
END_TEST

START_TEST(test_silent_device_stalls_nothing) {
        SourceSet s = {};
        uint8_t data[4096], buf[64];
        usec_t t0, waited;
        char *fifo;
        int keep;
        size_t k = 0;

        /* A device that has nothing to give (an hwrng whose host stopped
         * answering) and getrandom after it.  The FIFO keeps a writer, as
         * a device keeps its driver: reads wait, they do not end. */
        fakeroot_mkdir(root, "/dev");
        ck_assert_int_ge(asprintf(&fifo, "%s/dev/slow", root), 0);
        ck_assert_int_eq(mkfifo(fifo, 0600), 0);
        keep = open(fifo, O_RDWR | O_CLOEXEC);
        ck_assert_int_ge(keep, 0);
        ck_assert_int_eq(source_set_add(&s, SOURCE_DEVICE, fifo, 8), 0);
        ck_assert_int_eq(source_set_add(&s, SOURCE_GETRANDOM, NULL, 8), 0);

        /* The start waits for the device a while, then goes on. */
        t0 = now_usec(CLOCK_MONOTONIC);
        ck_assert_uint_eq(source_set_start(&s, 0), 1);
        waited = now_usec(CLOCK_MONOTONIC) - t0;
        ck_assert_uint_ge(waited, SOURCE_START_WAIT_USEC);
        ck_assert_uint_lt(waited, SOURCE_START_WAIT_USEC + USEC_PER_SEC);

        /* Reads are answered at once, by the next source. */
        t0 = now_usec(CLOCK_MONOTONIC);
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 0), sizeof buf);
        ck_assert_uint_lt(now_usec(CLOCK_MONOTONIC) - t0, 100 * USEC_PER_MSEC);
        ck_assert(!s.sources[0].healthy);
        ck_assert_uint_eq(s.sources[0].failures + s.sources[0].read_errors, 0);
        ck_assert_uint_eq(s.sources[1].bytes, sizeof buf);

        /* When the device delivers, it passes its startup tests and is
         * first again: a new block is read from it once the one read ahead
         * from getrandom is used up. */
        ck_assert_int_eq(getrandom(data, sizeof data, 0), (ssize_t) sizeof data);
        ck_assert_int_eq(write(keep, data, sizeof data), (ssize_t) sizeof data);
        for (int i = 0; i < 500 && s.sources[0].bytes == 0; i++) {
                k = source_set_read(&s, buf, sizeof buf, 0);
                ck_assert_uint_eq(k, sizeof buf);
                if (s.sources[0].bytes == 0)
                        (void) poll(NULL, 0, 10);
        }
        ck_assert(s.sources[0].healthy);
        ck_assert_uint_eq(s.sources[0].bytes, sizeof buf);
        ck_assert_mem_eq(buf, data + STARTUP_TEST_SAMPLES_MIN, sizeof buf);

        source_set_free(&s);
        close(keep);
        free(fifo);
}
END_TEST

START_TEST(test_device_end_not_read_again) {
        SourceSet s = {};
        uint8_t data[2048], buf[2048];
        char *path;
        usec_t retry;

        /* A file ends; a character device never does, so its end counts
         * as a read error and the source is retried later, on the same
         * file description: a file's bytes are never served twice. */
        ck_assert_int_eq(getrandom(data, sizeof data, 0), (ssize_t) sizeof data);
        fakeroot_write_bytes(root, "/dev/short", data, sizeof data);
        ck_assert_int_ge(asprintf(&path, "%s/dev/short", root), 0);
        ck_assert_int_eq(source_set_add(&s, SOURCE_DEVICE, path, 8), 0);
        ck_assert_uint_eq(source_set_start(&s, 0), 1);
        wait_buffered(&s.sources[0], sizeof data - STARTUP_TEST_SAMPLES_MIN);
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 0), sizeof data - STARTUP_TEST_SAMPLES_MIN);
        ck_assert_mem_eq(buf, data + STARTUP_TEST_SAMPLES_MIN, sizeof data - STARTUP_TEST_SAMPLES_MIN);

        /* The reader's thread met end of file (the pipe is empty and
         * closed): a read error, logged once. */
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 0), 0);
        ck_assert(!s.sources[0].healthy);
        ck_assert_uint_eq(s.sources[0].read_errors, 1);
        retry = source_set_next_retry(&s);
        ck_assert_uint_ne(retry, USEC_INFINITY);

        /* Retried: a new thread reads on from where the last one ended,
         * and meets the end again. */
        for (int i = 0; i < 500 && s.sources[0].read_errors == 1; i++) {
                ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, retry), 0);
                (void) poll(NULL, 0, 10);
        }
        ck_assert_uint_eq(s.sources[0].read_errors, 2);
        ck_assert_uint_eq(s.sources[0].bytes, sizeof data - STARTUP_TEST_SAMPLES_MIN);
        source_set_free(&s);
        free(path);
}
END_TEST

START_TEST(test_startup_samples_low_entropy) {
        SourceSet s = {};
        uint8_t data[8192], buf[256];
        char *path;

        /* Declared at 0.01 bits a byte, a stuck source fails the RCT only
         * at its 4001st byte (alpha 2^-40): the startup test takes that
         * many, not 1024, and the first byte served is the next one. */
        ck_assert_int_eq(getrandom(data, sizeof data, 0), (ssize_t) sizeof data);
        fakeroot_write_bytes(root, "/dev/low", data, sizeof data);
        ck_assert_int_ge(asprintf(&path, "%s/dev/low", root), 0);
        ck_assert_int_eq(source_set_add(&s, SOURCE_DEVICE, path, 0.01), 0);
        ck_assert_uint_eq(startup_test_samples(&s.sources[0].health), 4001);
        wait_buffered(&s.sources[0], sizeof data);
        ck_assert_uint_eq(source_set_start(&s, 0), 1);
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 0), sizeof buf);
        ck_assert_mem_eq(buf, data + 4001, sizeof buf);
        source_set_free(&s);
        free(path);
}
END_TEST

START_TEST(test_rdseed_source) {
        SourceSet s = {};
        uint8_t buf[256];
        size_t k = 0;

        /* The device's rdseed source reads through common/rdseed.h: on a
         * CPU without it the source cannot be added. */
        if (!rdseed_supported()) {
                ck_assert_int_eq(source_set_add(&s, SOURCE_RDSEED, NULL, 8), -EOPNOTSUPP);
                return;
        }
        ck_assert_int_eq(source_set_add(&s, SOURCE_RDSEED, NULL, 8), 0);
        for (int i = 0; i < 1000 && k == 0; i++)
                k = source_set_read(&s, buf, sizeof buf, 0);
        ck_assert_uint_gt(k, 0);
        ck_assert(s.sources[0].healthy);
        ck_assert_uint_ge(s.sources[0].health.samples, STARTUP_TEST_SAMPLES_MIN + k);
        source_set_free(&s);
}
END_TEST

START_TEST(test_bad_sources) {
        SourceSet s = {};

        ck_assert_int_eq(source_set_add(&s, SOURCE_DEVICE, "/nonexistent/hwrng", 8), -ENOENT);
        ck_assert_int_eq(source_set_add(&s, SOURCE_GETRANDOM, NULL, 0), -EINVAL);
        ck_assert_int_eq(source_set_add(&s, SOURCE_GETRANDOM, NULL, 9), -EINVAL);
        ck_assert_uint_eq(s.n, 0);
        ck_assert_int_eq(source_type_from_string("getrandom"), SOURCE_GETRANDOM);
        ck_assert_int_lt(source_type_from_string("rdrand"), 0);
        source_set_free(&s);
}
END_TEST

static Suite *source_suite(void) {
        Suite *s = suite_create("source");
        TCase *tc = tcase_create("fail-closed");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_getrandom_serves);
        tcase_add_test(tc, test_stuck_device_fails_closed);
        tcase_add_test(tc, test_failing_chunk_wiped_and_next_source);
        tcase_add_test(tc, test_cached_chunk_all_or_nothing);
        tcase_add_test(tc, test_retry_after_failure);
        tcase_add_test(tc, test_bad_sources);
        tcase_add_test(tc, test_rdseed_source);
        suite_add_tcase(s, tc);

        tc = tcase_create("blocking-devices");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_silent_device_stalls_nothing);
        tcase_add_test(tc, test_device_end_not_read_again);
        tcase_add_test(tc, test_startup_samples_low_entropy);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(source_suite)
