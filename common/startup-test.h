/* SPDX-License-Identifier: MIT */
#pragma once

/* Startup testing, SP 800-90B section 4.3: nothing a source gives is
 * used until the continuous health tests (health.h) have passed over at
 * least 1024 consecutive samples of it.  Both programs decide here: the
 * device before a source enters service, at start and each time it comes
 * back; the agent before a source's bytes earn credit.  What happens to
 * the samples tested meanwhile is each program's choice (the standard
 * allows either): the device discards them, the agent gives them to the
 * pool with their credit once the test has passed. */

#include <stdint.h>

#include "health.h"

/* SP 800-90B 4.3: startup tests run over at least 1024 samples. */
#define STARTUP_TEST_SAMPLES_MIN 1024U

typedef enum StartupTestState {
        STARTUP_TEST_RUNNING, /* fewer samples passed than the test needs */
        STARTUP_TEST_PASSED,  /* the source is trusted */
        STARTUP_TEST_FAILED,  /* a health test failed: nothing it gave is used */
} StartupTestState;

/* How many samples a source with these health tests must pass before it
 * is trusted: STARTUP_TEST_SAMPLES_MIN, or the repetition count cutoff
 * when a low declared min-entropy puts it higher, so that a stuck source
 * always fails before it is trusted (the adaptive proportion cutoff is
 * at most one window, 512). */
uint64_t startup_test_samples(const HealthTest *t);

/* Where a source stands, from its health tests alone. */
StartupTestState startup_test_state(const HealthTest *t);
