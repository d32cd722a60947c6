/* SPDX-License-Identifier: MIT */
#include <assert.h>

#include "macro.h"
#include "startup-test.h"

uint64_t startup_test_samples(const HealthTest *t) {
        assert(t);

        /* A stuck source fails the RCT at its rct_cutoff-th sample and the
         * APT by the apt_cutoff-th sample of its first window. */
        return MAX((uint64_t) STARTUP_TEST_SAMPLES_MIN, (uint64_t) MAX(t->rct_cutoff, t->apt_cutoff));
}

StartupTestState startup_test_state(const HealthTest *t) {
        assert(t);

        if (t->failed != HEALTH_OK)
                return STARTUP_TEST_FAILED;
        if (t->samples < startup_test_samples(t))
                return STARTUP_TEST_RUNNING;
        return STARTUP_TEST_PASSED;
}
