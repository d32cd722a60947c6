/* SPDX-License-Identifier: MIT */
/* RDSEED as both programs read it (common/rdseed.h): on a CPU that has
 * it, reads give bytes that pass the health tests and differ from read
 * to read; without it, reads give nothing and never fault. */
#include <stdlib.h>
#include <string.h>

#include "health.h"
#include "rdseed.h"
#include "testmain.h"

START_TEST(test_read) {
        uint8_t a[4096], b[4096];
        size_t got = 0, k;
        HealthTest t;

        if (!rdseed_supported()) {
                ck_assert_uint_eq(rdseed_read(a, sizeof a), 0);
                return;
        }

        /* It may run dry for a moment: come back until the buffer is full. */
        for (int i = 0; i < 10000 && got < sizeof a; i++)
                got += rdseed_read(a + got, sizeof a - got);
        ck_assert_uint_eq(got, sizeof a);
        ck_assert_int_eq(health_init(&t, 8, HEALTH_ALPHA_LOG2_DEFAULT), 0);
        ck_assert_int_eq(health_feed(&t, a, sizeof a), HEALTH_OK);

        /* Lengths that are no multiple of its 8-byte word. */
        memset(b, 0, sizeof b);
        for (int i = 0; i < 10000 && (k = rdseed_read(b, 13)) == 0; i++)
                ;
        ck_assert_uint_eq(k, 13);
        ck_assert_mem_ne(a, b, 13);
        for (size_t i = 13; i < sizeof b; i++)
                ck_assert_uint_eq(b[i], 0);
}
END_TEST

START_TEST(test_nothing) {
        ck_assert_uint_eq(rdseed_read(NULL, 0), 0);
        /* Asked twice, the same answer. */
        ck_assert(rdseed_supported() == rdseed_supported());
}
END_TEST

static Suite *rdseed_suite(void) {
        Suite *s = suite_create("rdseed");
        TCase *tc = tcase_create("read");

        tcase_add_test(tc, test_read);
        tcase_add_test(tc, test_nothing);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(rdseed_suite)
