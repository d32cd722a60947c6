/* SPDX-License-Identifier: MIT */
/* The startup test both programs use (common/startup-test.h), as a table:
 * how many samples a source must pass before it is trusted, and where it
 * stands after a given stream of samples. */
#include <stdlib.h>

#include "macro.h"
#include "startup-test.h"
#include "testmain.h"

/* Samples that never fail either test: every byte differs from the one
 * before, and a window of 512 holds each value twice. */
static void feed_good(HealthTest *t, uint64_t n) {
        uint8_t buf[256];

        for (unsigned i = 0; i < sizeof buf; i++)
                buf[i] = (uint8_t) (t->samples + i);
        while (n > 0) {
                size_t k = (size_t) MIN(n, (uint64_t) sizeof buf);

                ck_assert_int_eq(health_feed(t, buf, k), HEALTH_OK);
                n -= k;
        }
}

static void feed_stuck(HealthTest *t, uint64_t n) {
        uint8_t b = 0x42;

        for (uint64_t i = 0; i < n; i++)
                (void) health_feed(t, &b, 1);
}

static const struct {
        const char *what;
        double h;       /* declared min-entropy per byte */
        unsigned alpha; /* -log2 of the false-positive probability */
        uint64_t samples;
} sample_rows[] = {
        /* The agent's defaults (virtio, cpu) and the device's. */
        { "agent, H = 8", 8, HEALTH_ALPHA_LOG2_DEFAULT, 1024 },
        { "agent hwrng default, H = 1", 1, HEALTH_ALPHA_LOG2_DEFAULT, 1024 },
        { "device default, H = 6, 2^-40", 6, 40, 1024 },
        /* Both cutoffs below 1024: the standard's minimum decides. */
        { "H = 0.5", 0.5, 30, 1024 },
        { "H = 0.1", 0.1, 30, 1024 },
        /* RCT cutoff 1 + ceil(30 / 0.03) = 1001: still the minimum. */
        { "H = 0.03", 0.03, 30, 1024 },
        /* 1 + ceil(30 / 0.029) = 1036: a stuck source must be able to
         * fail before it is trusted. */
        { "H = 0.029", 0.029, 30, 1036 },
        { "agent's lowest H, 0.01", 0.01, 30, 3001 },
        { "device's lowest H, 0.01, 2^-40", 0.01, 40, 4001 },
        { "H = 0.039 at 2^-40", 0.039, 40, 1027 },
        { "H = 0.04 at 2^-40", 0.04, 40, 1024 },
};

START_TEST(test_samples) {
        HealthTest t;

        ck_assert_int_eq(health_init(&t, sample_rows[_i].h, sample_rows[_i].alpha), 0);
        ck_assert_msg(startup_test_samples(&t) == sample_rows[_i].samples, "%s: %llu samples, expected %llu",
                      sample_rows[_i].what, (unsigned long long) startup_test_samples(&t),
                      (unsigned long long) sample_rows[_i].samples);
        /* Never fewer than SP 800-90B's 1024, never fewer than a stuck
         * source needs to fail. */
        ck_assert_uint_ge(startup_test_samples(&t), STARTUP_TEST_SAMPLES_MIN);
        ck_assert_uint_ge(startup_test_samples(&t), t.rct_cutoff);
        ck_assert_uint_ge(startup_test_samples(&t), t.apt_cutoff);
}
END_TEST

/* Whatever the declared entropy, a stuck source fails during its startup
 * test: it is never trusted. */
START_TEST(test_stuck_never_trusted) {
        HealthTest t;

        ck_assert_int_eq(health_init(&t, sample_rows[_i].h, sample_rows[_i].alpha), 0);
        feed_stuck(&t, startup_test_samples(&t));
        ck_assert_msg(startup_test_state(&t) == STARTUP_TEST_FAILED, "%s: a stuck source passed",
                      sample_rows[_i].what);
}
END_TEST

typedef enum Stream {
        GOOD,
        STUCK,
        GOOD_THEN_STUCK, /* good samples, then a stuck run long enough to fail */
} Stream;

static const struct {
        const char *what;
        double h;
        unsigned alpha;
        Stream stream;
        uint64_t n;
        StartupTestState state;
} state_rows[] = {
        { "nothing yet", 8, 30, GOOD, 0, STARTUP_TEST_RUNNING },
        { "one sample", 8, 30, GOOD, 1, STARTUP_TEST_RUNNING },
        /* What the agent held back before: max(5, 16) at H = 8. */
        { "16 samples", 8, 30, GOOD, 16, STARTUP_TEST_RUNNING },
        { "one short", 8, 30, GOOD, 1023, STARTUP_TEST_RUNNING },
        { "exactly 1024", 8, 30, GOOD, 1024, STARTUP_TEST_PASSED },
        { "past 1024", 8, 30, GOOD, 4096, STARTUP_TEST_PASSED },
        { "device: one short", 6, 40, GOOD, 1023, STARTUP_TEST_RUNNING },
        { "device: 1024", 6, 40, GOOD, 1024, STARTUP_TEST_PASSED },
        { "H = 0.01: 1024 is not enough", 0.01, 30, GOOD, 1024, STARTUP_TEST_RUNNING },
        { "H = 0.01: one short", 0.01, 30, GOOD, 3000, STARTUP_TEST_RUNNING },
        { "H = 0.01: 3001", 0.01, 30, GOOD, 3001, STARTUP_TEST_PASSED },
        { "stuck at H = 8", 8, 30, STUCK, 5, STARTUP_TEST_FAILED },
        { "stuck, one short of the RCT", 8, 30, STUCK, 4, STARTUP_TEST_RUNNING },
        { "stuck at H = 0.01", 0.01, 30, STUCK, 3001, STARTUP_TEST_FAILED },
        /* A failure after passing is a failure: the state is the tests'. */
        { "failed after passing", 8, 30, GOOD_THEN_STUCK, 2048, STARTUP_TEST_FAILED },
};

START_TEST(test_state) {
        HealthTest t;

        ck_assert_int_eq(health_init(&t, state_rows[_i].h, state_rows[_i].alpha), 0);
        switch (state_rows[_i].stream) {
        case GOOD:
                feed_good(&t, state_rows[_i].n);
                break;
        case STUCK:
                feed_stuck(&t, state_rows[_i].n);
                break;
        case GOOD_THEN_STUCK:
                feed_good(&t, state_rows[_i].n);
                ck_assert_int_eq(startup_test_state(&t), STARTUP_TEST_PASSED);
                feed_stuck(&t, t.rct_cutoff + 1);
                break;
        }
        ck_assert_msg(startup_test_state(&t) == state_rows[_i].state, "%s: state %d, expected %d",
                      state_rows[_i].what, (int) startup_test_state(&t), (int) state_rows[_i].state);
}
END_TEST

static Suite *startup_test_suite(void) {
        Suite *s = suite_create("startup-test");
        TCase *tc;

        tc = tcase_create("samples");
        tcase_add_loop_test(tc, test_samples, 0, ELEMENTSOF(sample_rows));
        tcase_add_loop_test(tc, test_stuck_never_trusted, 0, ELEMENTSOF(sample_rows));
        suite_add_tcase(s, tc);

        tc = tcase_create("state");
        tcase_add_loop_test(tc, test_state, 0, ELEMENTSOF(state_rows));
        suite_add_tcase(s, tc);

        return s;
}

TEST_MAIN(startup_test_suite)
