/* SPDX-License-Identifier: MIT */
/* The device's sources fail closed: a source that fails its health tests
 * serves nothing (not even the failing chunk), the next healthy source
 * takes over, and with none left nothing at all is served. */
#include <sys/random.h>

#include "fakeroot.h"
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
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 0), 0);
        ck_assert_uint_eq(s.sources[0].failures, 1);

        /* Replace the device's contents with good bytes: after the retry
         * time it passes fresh startup tests and serves again. */
        source_set_free(&s);
        free(path);
        path = device_file("/dev/good", 0, 4096, true);
        ck_assert_int_eq(source_set_add(&s, SOURCE_DEVICE, path, 8), 0);
        s.sources[0].healthy = false;
        s.sources[0].startup_left = 0;
        s.sources[0].retry_at = 5 * USEC_PER_SEC;
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 4 * USEC_PER_SEC), 0);
        ck_assert_uint_eq(source_set_read(&s, buf, sizeof buf, 5 * USEC_PER_SEC), sizeof buf);
        ck_assert(s.sources[0].healthy);
        source_set_free(&s);
        free(path);
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
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(source_suite)
