/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>

#include "health.h"
#include "macro.h"

/* 800-90B 4.4 asks for a false-positive probability between 2^-20 (the
 * value its tables use) and 2^-40; anything laxer stops a healthy source
 * too often, anything stricter stops noticing a failing one. */
#define ALPHA_LOG2_MIN 20U
#define ALPHA_LOG2_MAX 40U

/* The declared H is min-entropy per 8-bit sample, so 8 is all there is.
 * Written as !(a && b) so that NaN is rejected too. */
static bool params_valid(double h_per_byte, unsigned alpha_log2) {
        if (!(h_per_byte > 0 && h_per_byte <= 8))
                return false;
        return alpha_log2 >= ALPHA_LOG2_MIN && alpha_log2 <= ALPHA_LOG2_MAX;
}

unsigned health_rct_cutoff(double h_per_byte, unsigned alpha_log2) {
        double q, k;

        if (!params_valid(h_per_byte, alpha_log2))
                return 0;

        q = alpha_log2 / h_per_byte;

        /* Below H = 1e-8 or so the run length does not fit; a run that
         * long is never reached, so the largest count is as good. */
        if (q >= (double) (UINT_MAX - 1))
                return UINT_MAX;

        /* H comes from decimal configuration ("0.7", "6.4"), and binary
         * rounding can push a quotient that is exactly an integer on paper
         * (21 / 0.7 = 30) a few ulps above it, where ceil() would add a
         * whole extra sample to the cutoff.  Treat anything within a
         * relative 1e-9 of an integer as that integer: no meaningful
         * entropy claim is made to ten significant digits. */
        k = nearbyint(q);
        if (fabs(q - k) > q * 1e-9)
                k = ceil(q);

        return 1U + (unsigned) k;
}

/* The smallest c with P(X >= c) <= alpha for X ~ Binomial(W, 2^-H), which
 * is 1 + CRITBINOM(W, 2^-H, 1 - alpha): CRITBINOM(n, p, q) is the smallest
 * k with P(X <= k) >= q, and P(X <= k) >= 1 - alpha is P(X >= k + 1) <=
 * alpha.
 *
 * The tail is summed from X = W downwards instead of computing 1 - CDF: at
 * alpha = 2^-40 the CDF is 1 - 1e-12, and subtracting it from 1 would leave
 * only four significant digits.  Summing from the top adds small positive
 * terms, so the tail keeps full double precision all the way down.
 *
 * Each term is built in log space, since p^k underflows long before the
 * tail becomes interesting (2^-8 to the 512th is 2^-4096).  ln C(W, k) is
 * carried along by the ratio C(W, k-1) / C(W, k) = k / (W - k + 1), which
 * costs one log() per step and avoids lgamma()'s global signgam.
 *
 * This is the published formula, so the cutoffs match 800-90B's Table 2,
 * which is what an assessor checks.  Strictly, A is always its own first
 * count, so B - 1 ~ Binomial(W - 1, p) and a window of a uniform source
 * trips with P(Binomial(W - 1, p) >= C - 1), up to 3.5 alpha at H = 8
 * (public comment #10b on 800-90B proposes 2 + CRITBINOM(W - 1, ...)). */
static unsigned apt_cutoff_compute(double h_per_byte, unsigned alpha_log2) {
        const unsigned w = HEALTH_APT_WINDOW;
        const double alpha = ldexp(1.0, -(int) alpha_log2);
        /* ln p = -H ln 2 exactly; ln(1 - p) via expm1 stays accurate when
         * H is small and p is close to 1. */
        const double log_p = -h_per_byte * M_LN2;
        const double log_q = log(-expm1(log_p));
        double log_choose = 0; /* ln C(W, k), starting at C(W, W) = 1 */
        double tail = 0;       /* P(X >= k) once term k has been added */

        for (unsigned k = w;; k--) {
                tail += exp(log_choose + k * log_p + (w - k) * log_q);
                if (tail > alpha) {
                        /* Count k is too likely; k + 1 was not.  If even
                         * a whole window of one value is likelier than
                         * alpha, W + 1 would make a test that can never
                         * fail, which FIPS 140 implementation guidance
                         * forbids: fall back to W, the strictest cutoff
                         * that can still fire. */
                        return MIN(k + 1, w);
                }
                if (k == 0)
                        break;
                log_choose += log((double) k / (double) (w - k + 1));
        }

        /* P(X >= 0) = 1 > alpha, so the loop returns before here unless
         * rounding lost the whole distribution. */
        return w;
}

unsigned health_apt_cutoff(double h_per_byte, unsigned alpha_log2) {
        if (!params_valid(h_per_byte, alpha_log2))
                return 0;

        return apt_cutoff_compute(h_per_byte, alpha_log2);
}

int health_init(HealthTest *t, double h_per_byte, unsigned alpha_log2) {
        assert(t);

        if (!params_valid(h_per_byte, alpha_log2))
                return -EINVAL;

        *t = (HealthTest) {
                .rct_cutoff = health_rct_cutoff(h_per_byte, alpha_log2),
                .apt_cutoff = health_apt_cutoff(h_per_byte, alpha_log2),
                .apt_seen = HEALTH_APT_WINDOW,
                .failed = HEALTH_OK,
        };

        return 0;
}

/* This runs on every byte served, so the state lives in locals for the
 * loop and is written back once: bytes read through a uint8_t pointer may
 * alias *t, so counters kept in *t would go to memory on every sample. */
/* The tests exactly as the standard states them, one sample at a time:
 * the reference, and what runs wherever a fast block cannot rule out a
 * failure. */
static HealthResult feed_exact(HealthTest *t, const void *buf, size_t n) {
        const uint8_t *p = buf, *end;
        HealthResult r = HEALTH_OK;
        uint8_t rct_last, apt_first;
        unsigned rct_run, apt_count, apt_seen;
        unsigned rct_cutoff, apt_cutoff;

        assert(t);
        assert(buf || n == 0);

        if (t->failed != HEALTH_OK)
                return t->failed;
        if (n == 0)
                return HEALTH_OK;

        rct_last = t->rct_last;
        rct_run = t->rct_run;
        apt_first = t->apt_first;
        apt_count = t->apt_count;
        apt_seen = t->apt_seen;
        rct_cutoff = t->rct_cutoff;
        apt_cutoff = t->apt_cutoff;

        for (end = p + n; p < end; p++) {
                uint8_t x = *p;

                /* 4.4.1: B counts consecutive copies of A; a different
                 * sample becomes the new A with B = 1.  Before the first
                 * sample B is 0, so whatever A says, the first sample
                 * ends up with B = 1. */
                if (x == rct_last) {
                        if (_unlikely_(++rct_run >= rct_cutoff)) {
                                r = HEALTH_FAIL_RCT;
                                break;
                        }
                } else {
                        rct_last = x;
                        rct_run = 1;
                }

                /* 4.4.2: the first sample of each W-sample window is A and
                 * counts as its own first occurrence; the windows do not
                 * overlap, so after W samples the next one is a new A. */
                if (apt_seen == HEALTH_APT_WINDOW) {
                        apt_first = x;
                        apt_count = 1;
                        apt_seen = 1;
                } else {
                        apt_seen++;
                        if (x == apt_first && _unlikely_(++apt_count >= apt_cutoff)) {
                                r = HEALTH_FAIL_APT;
                                break;
                        }
                }
        }

        /* On failure p still points at the failing sample, which counts. */
        t->samples += (uint64_t) (p - (const uint8_t *) buf) + (r != HEALTH_OK);
        t->rct_last = rct_last;
        t->rct_run = rct_run;
        t->apt_first = apt_first;
        t->apt_count = apt_count;
        t->apt_seen = apt_seen;
        t->failed = r;

        return r;
}

static const char *const health_result_table[] = {
        [HEALTH_OK] = "ok",
        [HEALTH_FAIL_RCT] = "repetition-count",
        [HEALTH_FAIL_APT] = "adaptive-proportion",
};

const char *health_result_to_string(HealthResult r) {
        if ((unsigned) r >= ELEMENTSOF(health_result_table))
                return NULL;
        return health_result_table[r];
}

/* Blocks small enough that a failure inside one is rare in the fast
 * path's checks, large enough to amortise them. */
#define FAST_BLOCK 256

/* Runs a block through both tests with loops the compiler vectorises,
 * when it can prove that no sample of the block fails: then the result
 * and the state are exactly what feed_exact() would leave.  Returns false
 * (state untouched) when a failure is possible; feed_exact() decides.
 * The RCT cutoff is at least 1 + ceil(20 / 8) = 4, so a block with no
 * three equal bytes in a row cannot fail inside; only a run carried in
 * can, and that is checked apart.  On random data three in a row come
 * once in 2^16 positions: the exact loop runs for about 0.4% of blocks. */
_optimize_vectorise_
static bool feed_fast(HealthTest *t, const uint8_t *p, size_t m) {
        unsigned c = t->rct_cutoff, run, count = t->apt_count, seen = t->apt_seen;
        uint8_t first = t->apt_first, any = 0;
        size_t i, prefix, k;

        if (c < 4 || m < 3)
                return false;

        /* RCT: the run carried in, continued by the block's first bytes. */
        for (prefix = 0; prefix < m && p[prefix] == t->rct_last; prefix++)
                ;
        if (t->rct_run > 0 && t->rct_run + prefix >= c)
                return false;
        for (i = 0; i + 2 < m; i++)
                any |= (uint8_t) ((p[i] == p[i + 1]) & (p[i + 1] == p[i + 2]));
        if (any)
                return false;

        /* APT: count A in each window's part of the block. */
        for (i = 0; i < m;) {
                size_t seg;
                unsigned hits = 0;

                if (seen == HEALTH_APT_WINDOW) {
                        first = p[i++];
                        count = 1;
                        seen = 1;
                        continue;
                }
                seg = MIN(m - i, (size_t) (HEALTH_APT_WINDOW - seen));
                for (k = 0; k < seg; k++)
                        hits += p[i + k] == first;
                count += hits;
                seen += (unsigned) seg;
                i += seg;
                if (count >= t->apt_cutoff)
                        return false;
        }

        /* No failure: commit what the exact loop would have left. */
        if (prefix == m && t->rct_run > 0)
                run = t->rct_run + (unsigned) m;
        else {
                for (run = 1; run < m && p[m - 1 - run] == p[m - 1]; run++)
                        ;
        }
        t->rct_last = p[m - 1];
        t->rct_run = run;
        t->apt_first = first;
        t->apt_count = count;
        t->apt_seen = seen;
        t->samples += m;
        return true;
}

HealthResult health_feed(HealthTest *t, const void *buf, size_t n) {
        const uint8_t *p = buf;

        assert(t);
        assert(buf || n == 0);

        while (n > 0 && t->failed == HEALTH_OK) {
                size_t m = MIN(n, (size_t) FAST_BLOCK);

                if (!feed_fast(t, p, m))
                        (void) feed_exact(t, p, m);
                p += m;
                n -= m;
        }
        return t->failed;
}
