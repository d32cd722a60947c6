/* SPDX-License-Identifier: MIT */
#pragma once

/* SP 800-90B section 4.4 continuous health tests, run on every byte a
 * source delivers before any of it is used.  Both programs use them: the
 * agent on what the guest's hwrng gives it, the device on what it serves. */

#include <stddef.h>
#include <stdint.h>

/* Window of the adaptive proportion test for non-binary (8-bit) samples,
 * SP 800-90B 4.4.2. */
#define HEALTH_APT_WINDOW 512U

/* Default false-positive probability per sample, as -log2(alpha).
 * 800-90B allows 2^-20 .. 2^-40.  At H = 8 the RCT cutoff is then 5: a
 * perfect source trips it once per ~4 GiB (2^-32 a byte).  That is
 * nothing for the agent, which reads kilobytes; the device, which serves
 * gigabytes, must re-admit a source after a failure rather than lose it. */
#define HEALTH_ALPHA_LOG2_DEFAULT 30U

typedef enum HealthResult {
        HEALTH_OK = 0,
        HEALTH_FAIL_RCT, /* repetition count test */
        HEALTH_FAIL_APT, /* adaptive proportion test */
} HealthResult;

typedef struct HealthTest {
        /* cutoffs, computed once from the declared min-entropy */
        unsigned rct_cutoff;
        unsigned apt_cutoff;

        /* repetition count state: rct_run is 0 before the first sample,
         * so the first sample always starts a run of 1 */
        uint8_t rct_last;
        unsigned rct_run;

        /* adaptive proportion state: apt_seen is the number of samples of
         * the current window seen so far; it starts at HEALTH_APT_WINDOW so
         * the very first sample opens a window */
        uint8_t apt_first;
        unsigned apt_count;
        unsigned apt_seen;

        HealthResult failed; /* sticky: once failed, stays failed */
        uint64_t samples;    /* samples tested, up to and including a failing one */
} HealthTest;

/* RCT cutoff C = 1 + ceil(alpha_log2 / H), SP 800-90B 4.4.1.
 * h_per_byte is the declared min-entropy per 8-bit sample, 0 < H <= 8.
 * Returns 0 for an H outside that range or alpha_log2 outside 20..40. */
unsigned health_rct_cutoff(double h_per_byte, unsigned alpha_log2);

/* APT cutoff C = 1 + CRITBINOM(W, 2^-H, 1 - alpha) for W = 512,
 * SP 800-90B 4.4.2: the smallest count that a source with the declared
 * min-entropy reaches in a window with probability at most alpha.  Capped
 * at W for an H so low that no count in a window is that unlikely.
 * Returns 0 for an H outside (0, 8] or alpha_log2 outside 20..40. */
unsigned health_apt_cutoff(double h_per_byte, unsigned alpha_log2);

/* Sets up a test for a source declared to have h_per_byte bits of
 * min-entropy per byte.  Returns 0 or -EINVAL for an H outside (0, 8] or
 * alpha_log2 outside 20..40; t is written only on success. */
int health_init(HealthTest *t, double h_per_byte, unsigned alpha_log2);

/* Runs both tests over n bytes.  Returns HEALTH_OK, or the first failure;
 * a failure is sticky and every later call returns it too, without
 * looking at (or counting) the new bytes. */
HealthResult health_feed(HealthTest *t, const void *buf, size_t n);

/* "ok", "repetition-count", "adaptive-proportion"; NULL for anything else. */
const char *health_result_to_string(HealthResult r);
