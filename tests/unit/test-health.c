/* SPDX-License-Identifier: MIT */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "health.h"
#include "macro.h"

#define W HEALTH_APT_WINDOW

/* Feeds one byte at a time until the test fails or max bytes went in, and
 * returns the number of the failing sample counted since health_init()
 * (1-based), or 0 if none failed.  Every sample before it passed. */
static uint64_t feed_until_failure(HealthTest *t, const uint8_t *buf, size_t max, HealthResult *ret) {
        uint64_t start = t->samples;

        for (size_t i = 0; i < max; i++) {
                HealthResult r = health_feed(t, buf + i, 1);

                if (r != HEALTH_OK) {
                        *ret = r;
                        ck_assert_uint_eq(t->samples, start + i + 1);
                        return t->samples;
                }
        }
        *ret = HEALTH_OK;
        return 0;
}

/* A byte that is neither avoid nor prev, cycling through the alphabet so
 * that no other value builds up a count or a run of its own. */
static uint8_t other_byte(unsigned *cursor, uint8_t avoid, uint8_t prev) {
        for (;;) {
                uint8_t b = (uint8_t) (*cursor)++;

                if (b != avoid && b != prev)
                        return b;
        }
}

static void fill_random(uint8_t *buf, size_t n) {
        size_t done = 0;

        while (done < n) {
                ssize_t k = getrandom(buf + done, n - done, 0);

                if (k < 0 && errno == EINTR)
                        continue;
                ck_assert_msg(k > 0, "getrandom() failed: %s", strerror(errno));
                done += (size_t) k;
        }
}

/* ---- cutoffs ------------------------------------------------------------ */

/* RCT cutoffs at alpha = 2^-20.  SP 800-90B (January 2018) 4.4.1 works the
 * example H = 2 -> C = 1 + 20/2 = 11; Go's crypto/internal/entropy states
 * C = 41 for H = 0.5.  The rest follow from C = 1 + ceil(20/H) by hand. */
START_TEST(test_rct_published) {
        ck_assert_uint_eq(health_rct_cutoff(2.0, 20), 11);
        ck_assert_uint_eq(health_rct_cutoff(0.5, 20), 41);
        ck_assert_uint_eq(health_rct_cutoff(1.0, 20), 21);
        ck_assert_uint_eq(health_rct_cutoff(8.0, 20), 4); /* 1 + ceil(2.5) */
        ck_assert_uint_eq(health_rct_cutoff(8.0, 30), 5); /* 1 + ceil(3.75) */
        ck_assert_uint_eq(health_rct_cutoff(8.0, 40), 6); /* 1 + 5 exactly */
        ck_assert_uint_eq(health_rct_cutoff(7.3, 20), 4); /* 1 + ceil(2.74) */
}
END_TEST

/* Quotients that are integers on paper but land an ulp or two above one in
 * binary: a plain ceil() makes these one sample too lax. */
START_TEST(test_rct_exact_quotients) {
        ck_assert_uint_eq(health_rct_cutoff(0.7, 21), 31);  /* 21/0.7 = 30 */
        ck_assert_uint_eq(health_rct_cutoff(0.35, 21), 61); /* 21/0.35 = 60 */
        ck_assert_uint_eq(health_rct_cutoff(1.4, 21), 16);  /* 21/1.4 = 15 */
        ck_assert_uint_eq(health_rct_cutoff(0.1, 20), 201);
        ck_assert_uint_eq(health_rct_cutoff(20.0 / 3.0, 20), 4);
        ck_assert_uint_eq(health_rct_cutoff(6.4, 32), 6);
}
END_TEST

/* SP 800-90B (January 2018) 4.4.2, Table 2, the non-binary W = 512 column
 * at alpha = 2^-20: H = 0.5 -> 410, 1 -> 311, 2 -> 177, 4 -> 62, 8 -> 13.
 * Checked against two independent copies of the table: RIOT's
 * sys/include/entropy_source.h (entropy_source_test_prop_cutoff) and a
 * transcription of Table 2 that also lists the binary column (941, 840,
 * 748, 664, 589 for H = 0.2 .. 1.0, W = 1024); Go's crypto/internal/entropy
 * documents 410 for H = 0.5 and Nordic's nRF54 TRNG manual 13 for H = 8. */
START_TEST(test_apt_table2) {
        ck_assert_uint_eq(health_apt_cutoff(0.5, 20), 410);
        ck_assert_uint_eq(health_apt_cutoff(1.0, 20), 311);
        ck_assert_uint_eq(health_apt_cutoff(2.0, 20), 177);
        ck_assert_uint_eq(health_apt_cutoff(4.0, 20), 62);
        ck_assert_uint_eq(health_apt_cutoff(8.0, 20), 13);
}
END_TEST

/* Points off the published table.  H = 1 at alpha = 2^-30 is 325, the
 * value wolfSSL's and jitterentropy's APTs use for W = 512 (wolfSSL
 * spells out 1 + CRITBINOM(512, 0.5, 1 - 2^-30)).  The others were computed
 * independently with 50-digit arithmetic (mpmath), summing the exact
 * binomial tail. */
START_TEST(test_apt_computed) {
        ck_assert_uint_eq(health_apt_cutoff(1.0, 30), 325);

        ck_assert_uint_eq(health_apt_cutoff(3.0, 20), 103);
        ck_assert_uint_eq(health_apt_cutoff(5.0, 20), 39);
        ck_assert_uint_eq(health_apt_cutoff(6.0, 20), 25);
        ck_assert_uint_eq(health_apt_cutoff(7.0, 20), 18);
        ck_assert_uint_eq(health_apt_cutoff(4.0, 30), 71);
        ck_assert_uint_eq(health_apt_cutoff(8.0, 30), 16);
        ck_assert_uint_eq(health_apt_cutoff(0.5, 40), 432);
        ck_assert_uint_eq(health_apt_cutoff(2.0, 40), 201);
        ck_assert_uint_eq(health_apt_cutoff(8.0, 40), 19);
}
END_TEST

/* A smaller alpha can only push a cutoff up, and a lower entropy claim
 * too: anything else would be a rounding artefact, not statistics. */
START_TEST(test_monotonic) {
        static const double hs[] = { 0.05, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.3, 4.0, 6.0, 7.9, 8.0 };

        for (size_t i = 0; i < ELEMENTSOF(hs); i++) {
                for (unsigned a = 20; a < 40; a++) {
                        ck_assert_uint_le(health_apt_cutoff(hs[i], a), health_apt_cutoff(hs[i], a + 1));
                        ck_assert_uint_le(health_rct_cutoff(hs[i], a), health_rct_cutoff(hs[i], a + 1));
                }
                if (i > 0)
                        for (unsigned a = 20; a <= 40; a += 10) {
                                ck_assert_uint_ge(health_apt_cutoff(hs[i - 1], a), health_apt_cutoff(hs[i], a));
                                ck_assert_uint_ge(health_rct_cutoff(hs[i - 1], a), health_rct_cutoff(hs[i], a));
                        }
        }

        ck_assert_uint_lt(health_apt_cutoff(8.0, 20), health_apt_cutoff(8.0, 30));
        ck_assert_uint_lt(health_apt_cutoff(8.0, 30), health_apt_cutoff(8.0, 40));
        ck_assert_uint_lt(health_apt_cutoff(1.0, 30), health_apt_cutoff(1.0, 40));
}
END_TEST

/* At H = 0.01 even a window of one value is likelier than 2^-20; the
 * cutoff stays at W so the APT can still fire, and here it fires before
 * the RCT (whose cutoff is 2001). */
START_TEST(test_apt_cap) {
        uint8_t buf[W * 2];
        HealthTest t;
        HealthResult r;

        ck_assert_uint_eq(health_apt_cutoff(0.01, 20), W);
        ck_assert_uint_eq(health_rct_cutoff(0.01, 20), 2001);

        memset(buf, 0x42, sizeof(buf));
        ck_assert_int_eq(health_init(&t, 0.01, 20), 0);
        ck_assert_uint_eq(feed_until_failure(&t, buf, sizeof(buf), &r), W);
        ck_assert_int_eq(r, HEALTH_FAIL_APT);
}
END_TEST

START_TEST(test_invalid) {
        static const double bad_h[] = { 0.0, -0.0, -1.0, 8.5, 8.0000001, NAN, INFINITY, -INFINITY };
        HealthTest t, sentinel;

        memset(&sentinel, 0xa5, sizeof(sentinel));

        for (size_t i = 0; i < ELEMENTSOF(bad_h); i++) {
                t = sentinel;
                ck_assert_int_eq(health_init(&t, bad_h[i], 20), -EINVAL);
                ck_assert_mem_eq(&t, &sentinel, sizeof(t)); /* not written on failure */
                ck_assert_uint_eq(health_rct_cutoff(bad_h[i], 20), 0);
                ck_assert_uint_eq(health_apt_cutoff(bad_h[i], 20), 0);
        }

        t = sentinel;
        ck_assert_int_eq(health_init(&t, 8.0, 19), -EINVAL);
        ck_assert_int_eq(health_init(&t, 8.0, 41), -EINVAL);
        ck_assert_int_eq(health_init(&t, 8.0, 0), -EINVAL);
        ck_assert_mem_eq(&t, &sentinel, sizeof(t));
        ck_assert_uint_eq(health_rct_cutoff(8.0, 19), 0);
        ck_assert_uint_eq(health_apt_cutoff(8.0, 41), 0);

        /* the edges themselves are valid */
        ck_assert_int_eq(health_init(&t, 8.0, 20), 0);
        ck_assert_int_eq(health_init(&t, 8.0, 40), 0);
        ck_assert_int_eq(health_init(&t, 1e-6, 40), 0);
        ck_assert_int_eq(health_init(&t, 8.0, HEALTH_ALPHA_LOG2_DEFAULT), 0);
        ck_assert_uint_eq(t.rct_cutoff, 5);
        ck_assert_uint_eq(t.apt_cutoff, 16);
        ck_assert_uint_eq(t.samples, 0);
        ck_assert_int_eq(t.failed, HEALTH_OK);
}
END_TEST

/* ---- rct ---------------------------------------------------------------- */

static const struct {
        double h;
        unsigned alpha_log2;
        unsigned rct_cutoff;
} stuck_params[] = {
        { 8.0, 20, 4 },
        { 8.0, 30, 5 },
        { 8.0, 40, 6 },
        { 1.0, 20, 21 },
        { 0.5, 20, 41 },
        { 0.5, 40, 81 },
};

/* A stuck source is the failure the RCT exists for: the C-th copy in a row
 * fails, not one sample earlier or later, whichever byte it is stuck on
 * (0 included, which is also the initial state's "previous" byte). */
START_TEST(test_rct_stuck) {
        uint8_t buf[256];
        HealthTest t;
        HealthResult r;
        unsigned c = stuck_params[_i].rct_cutoff;

        for (unsigned v = 0; v < 256; v += 0x55) {
                memset(buf, v, sizeof(buf));

                ck_assert_int_eq(health_init(&t, stuck_params[_i].h, stuck_params[_i].alpha_log2), 0);
                ck_assert_uint_eq(t.rct_cutoff, c);
                ck_assert_uint_eq(feed_until_failure(&t, buf, sizeof(buf), &r), c);
                ck_assert_int_eq(r, HEALTH_FAIL_RCT);

                /* the same in a single call: it stops at the failing sample */
                ck_assert_int_eq(health_init(&t, stuck_params[_i].h, stuck_params[_i].alpha_log2), 0);
                ck_assert_int_eq(health_feed(&t, buf, sizeof(buf)), HEALTH_FAIL_RCT);
                ck_assert_uint_eq(t.samples, c);
        }
}
END_TEST

/* Runs of C - 1 copies are what an honest source produces now and then;
 * they must pass however long it goes on, and across call boundaries. */
START_TEST(test_rct_below_cutoff) {
        static uint8_t buf[20 * 3000]; /* whole runs of C - 1 = 20 */
        unsigned cursor = 1;
        uint8_t prev = 0;
        HealthTest t;
        size_t i = 0;

        ck_assert_int_eq(health_init(&t, 1.0, 20), 0);
        ck_assert_uint_eq(t.rct_cutoff, 21);

        while (i < sizeof(buf)) {
                uint8_t v = other_byte(&cursor, prev, prev);

                for (unsigned k = 0; k < t.rct_cutoff - 1 && i < sizeof(buf); k++)
                        buf[i++] = v;
                prev = v;
        }

        for (size_t off = 0, step = 1; off < sizeof(buf); off += step, step = step * 3 % 1021 + 1)
                ck_assert_int_eq(health_feed(&t, buf + off, MIN(step, sizeof(buf) - off)), HEALTH_OK);
        ck_assert_uint_eq(t.samples, sizeof(buf));

        /* one more copy of the last value makes the run C long */
        ck_assert_int_eq(health_feed(&t, &prev, 1), HEALTH_FAIL_RCT);
        ck_assert_uint_eq(t.samples, sizeof(buf) + 1);
}
END_TEST

/* A source that recovers is still not trusted: whatever comes after a
 * failure, the answer stays the failure and nothing more is counted. */
START_TEST(test_rct_sticky) {
        uint8_t stuck[16], good[4096];
        HealthTest t;

        memset(stuck, 0x7f, sizeof(stuck));
        for (size_t i = 0; i < sizeof(good); i++)
                good[i] = (uint8_t) (i * 167 + 13);

        ck_assert_int_eq(health_init(&t, 8.0, 20), 0);
        ck_assert_int_eq(health_feed(&t, good, sizeof(good)), HEALTH_OK);
        ck_assert_int_eq(health_feed(&t, stuck, sizeof(stuck)), HEALTH_FAIL_RCT);
        ck_assert_uint_eq(t.samples, sizeof(good) + 4);

        for (int k = 0; k < 3; k++) {
                ck_assert_int_eq(health_feed(&t, good, sizeof(good)), HEALTH_FAIL_RCT);
                ck_assert_int_eq(health_feed(&t, good, 0), HEALTH_FAIL_RCT);
        }
        ck_assert_uint_eq(t.samples, sizeof(good) + 4);
        ck_assert_str_eq(health_result_to_string(t.failed), "repetition-count");
}
END_TEST

/* ---- apt ---------------------------------------------------------------- */

/* 90% one value, 10% others, as nine copies of A and one other byte:
 * at H = 1 the RCT needs 21 in a row and never sees more than 9, while A
 * fills 460 of every 512 samples against an APT cutoff of 311.  (At H = 8
 * such a source cannot dodge the RCT: with runs of at most 3, A can be at
 * most 75% of the stream.)  The window opens on A and the 311th A is sample
 * 34 * 10 + 5 = 345. */
START_TEST(test_apt_biased_pattern) {
        uint8_t buf[4 * W];
        unsigned cursor = 0;
        HealthTest t;
        HealthResult r;
        const uint8_t a = 0xc3;

        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = i % 10 == 9 ? other_byte(&cursor, a, a) : a;

        ck_assert_int_eq(health_init(&t, 1.0, 20), 0);
        ck_assert_uint_eq(t.apt_cutoff, 311);
        ck_assert_uint_eq(feed_until_failure(&t, buf, sizeof(buf), &r), 345);
        ck_assert_int_eq(r, HEALTH_FAIL_APT);
        ck_assert_str_eq(health_result_to_string(r), "adaptive-proportion");

        /* all at once gives the same answer at the same sample */
        ck_assert_int_eq(health_init(&t, 1.0, 20), 0);
        ck_assert_int_eq(health_feed(&t, buf, sizeof(buf)), HEALTH_FAIL_APT);
        ck_assert_uint_eq(t.samples, 345);
}
END_TEST

/* The same bias drawn from a fixed-seed generator rather than a pattern,
 * with runs of A cut short before the RCT would see them.  A window that
 * happens to open on one of the 10% others passes; the next one that opens
 * on A fails, so with this seed it is over within two windows. */
START_TEST(test_apt_biased_random) {
        uint8_t buf[8 * W];
        uint64_t s = 0x9e3779b97f4a7c15ULL;
        unsigned run = 0, cursor = 0;
        uint8_t prev = 0;
        HealthTest t;
        const uint8_t a = 0x3c;

        ck_assert_int_eq(health_init(&t, 1.0, 20), 0);

        for (size_t i = 0; i < sizeof(buf); i++) {
                s ^= s << 13, s ^= s >> 7, s ^= s << 17; /* xorshift64 */

                if (s % 10 != 0 && run < t.rct_cutoff - 1) {
                        buf[i] = a;
                        run++;
                } else {
                        buf[i] = other_byte(&cursor, a, prev);
                        run = 0;
                }
                prev = buf[i];
        }

        ck_assert_int_eq(health_feed(&t, buf, sizeof(buf)), HEALTH_FAIL_APT);
        ck_assert_uint_le(t.samples, 2 * W);
}
END_TEST

/* Builds a window whose first byte a comes back count times in all,
 * spread out so that neither it nor the filler ever repeats back to back. */
static void make_window(uint8_t *win, uint8_t a, unsigned count) {
        unsigned cursor = 0;

        for (unsigned i = 0; i < W; i++)
                win[i] = (i % 40 == 0 && i / 40 < count) ? a : other_byte(&cursor, a, i > 0 ? win[i - 1] : a);
}

/* At H = 8 the APT cutoff is 13 and A counts as its own first occurrence:
 * 12 per window passes for any number of windows, because each window
 * starts counting afresh; the 13th A in a window fails on that sample. */
START_TEST(test_apt_window) {
        uint8_t pass[W], fail[W];
        HealthTest t;
        HealthResult r;
        const uint8_t a = 0x5a;
        const unsigned windows = 64;

        ck_assert_int_eq(health_init(&t, 8.0, 20), 0);
        ck_assert_uint_eq(t.apt_cutoff, 13);

        make_window(pass, a, 12);
        make_window(fail, a, 13);

        for (unsigned k = 0; k < windows; k++)
                ck_assert_int_eq(health_feed(&t, pass, W), HEALTH_OK);

        /* the 13th A sits at offset 12 * 40 = 480 of the window */
        ck_assert_uint_eq(feed_until_failure(&t, fail, W, &r), (uint64_t) windows * W + 481);
        ck_assert_int_eq(r, HEALTH_FAIL_APT);
        ck_assert_int_eq(health_feed(&t, pass, W), HEALTH_FAIL_APT);
}
END_TEST

/* ---- real --------------------------------------------------------------- */

/* A good source must pass, but alpha in 800-90B is a per-sample (RCT) and
 * per-window (APT) false-positive rate, so how much data a test can feed
 * before it flakes is set by the cutoffs.  For uniform bytes and N bytes:
 *
 *   RCT: a run of C at a given place has probability 2^-8(C-1); union bound
 *        over the places a run can end: (N - C + 1) * 2^-8(C-1).
 *   APT: the 511 samples after A each equal A with probability 2^-8, so a
 *        window fails with P(Binomial(511, 2^-8) >= C - 1); times N/512.
 *
 *   alpha   C_rct  C_apt  P(window)  N        P(false positive)
 *   2^-40   6      19     4.7e-12    1 MiB    9.5e-7 + 9.7e-9  < 1e-6
 *   2^-30   5      16     3.2e-9     2 KiB    4.8e-7 + 1.3e-8  < 1e-6
 *   2^-20   4      13     1.2e-6     8 B      3.0e-7 + 0       < 1e-6
 *
 * 1 MiB at 2^-30 would flake once in 4000 runs (2.5e-4) and at 2^-20 once in
 * 15 (6.5e-2): that is the rate a real full-entropy source trips these
 * tests, not a defect here.  The three tests together flake with
 * probability under 2e-6. */
static const struct {
        unsigned alpha_log2;
        size_t size;
} real_params[] = {
        { 40, 1024 * 1024 },
        { 30, 2 * 1024 },
        { 20, 8 },
};

START_TEST(test_getrandom) {
        size_t n = real_params[_i].size;
        static uint8_t buf[1024 * 1024];
        HealthTest t;

        ck_assert_uint_le(n, sizeof(buf));
        fill_random(buf, n);

        ck_assert_int_eq(health_init(&t, 8.0, real_params[_i].alpha_log2), 0);

        /* in uneven pieces, so state crosses call boundaries everywhere */
        for (size_t off = 0, step = 1; off < n; off += step, step = step * 7 % 4093 + 1) {
                HealthResult r = health_feed(&t, buf + off, MIN(step, n - off));

                ck_assert_msg(r == HEALTH_OK, "%s test failed at sample %llu of %zu (alpha 2^-%u)",
                              health_result_to_string(r), (unsigned long long) t.samples, n,
                              real_params[_i].alpha_log2);
        }
        ck_assert_uint_eq(t.samples, n);
        ck_assert_str_eq(health_result_to_string(t.failed), "ok");
}
END_TEST

/* ---- names -------------------------------------------------------------- */

START_TEST(test_result_strings) {
        ck_assert_str_eq(health_result_to_string(HEALTH_OK), "ok");
        ck_assert_str_eq(health_result_to_string(HEALTH_FAIL_RCT), "repetition-count");
        ck_assert_str_eq(health_result_to_string(HEALTH_FAIL_APT), "adaptive-proportion");
        ck_assert_ptr_null(health_result_to_string((HealthResult) 3));
        ck_assert_ptr_null(health_result_to_string((HealthResult) -1));
}
END_TEST

/* health_feed() takes whole blocks through a vectorised path when it can
 * prove no sample fails, and one sample at a time otherwise.  Fed one
 * byte per call it always takes the second: both must agree exactly, on
 * data that fails early, late, by RCT, by APT, or never. */
START_TEST(test_fast_path_matches_exact) {
        static uint8_t buf[16384];
        uint64_t seed = 0x9e3779b97f4a7c15ULL;

        for (unsigned round = 0; round < 400; round++) {
                HealthTest whole, single;
                HealthResult rw, rs = HEALTH_OK;
                double h = round % 4 == 0 ? 8 : round % 4 == 1 ? 4 : round % 4 == 2 ? 2 : 6.5;
                size_t n = 1 + (round * 977) % sizeof buf;

                /* xorshift: random bytes, then a planted run or bias. */
                for (size_t i = 0; i < n; i++) {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        buf[i] = (uint8_t) seed;
                }
                if (round % 3 == 1) {
                        size_t at = (size_t) (seed % n), len = 2 + round % 7;
                        for (size_t i = at; i < n && i < at + len; i++)
                                buf[i] = 0x77;
                } else if (round % 3 == 2) {
                        size_t at = (size_t) (seed % n);
                        for (size_t i = at; i < n && i < at + 700; i += 1 + round % 3)
                                buf[i] = buf[at];
                }

                ck_assert_int_eq(health_init(&whole, h, 20 + round % 21), 0);
                single = whole;
                rw = health_feed(&whole, buf, n);
                for (size_t i = 0; i < n && rs == HEALTH_OK; i++)
                        rs = health_feed(&single, buf + i, 1);
                ck_assert_int_eq(rw, rs);
                ck_assert_uint_eq(whole.samples, single.samples);
                ck_assert_uint_eq(whole.rct_run, single.rct_run);
                ck_assert_uint_eq(whole.rct_last, single.rct_last);
                ck_assert_uint_eq(whole.apt_count, single.apt_count);
                ck_assert_uint_eq(whole.apt_seen, single.apt_seen);
                ck_assert_uint_eq(whole.apt_first, single.apt_first);
        }

        /* Runs of exactly cutoff-1 and cutoff bytes across every split of
         * a block boundary (the fast path works in 256-byte blocks). */
        for (unsigned len = 3; len <= 5; len++)
                for (unsigned before = 1; before < len; before++) {
                        HealthTest whole, single;
                        HealthResult rw, rs = HEALTH_OK;
                        size_t n = 1024;

                        for (size_t i = 0; i < n; i++)
                                buf[i] = (uint8_t) (i * 7 + (i >> 3)); /* no runs, no bias */
                        for (unsigned i = 0; i < len; i++)
                                buf[256 - before + i] = 0xee;
                        ck_assert_int_eq(health_init(&whole, 8, 20), 0); /* RCT cutoff 4 */
                        single = whole;
                        rw = health_feed(&whole, buf, n);
                        for (size_t i = 0; i < n && rs == HEALTH_OK; i++)
                                rs = health_feed(&single, buf + i, 1);
                        ck_assert_int_eq(rs, len >= 4 ? HEALTH_FAIL_RCT : HEALTH_OK);
                        ck_assert_int_eq(rw, rs);
                        ck_assert_uint_eq(whole.samples, single.samples);
                }
}
END_TEST

static Suite *health_suite(void) {
        Suite *s = suite_create("health");
        TCase *tc;

        tc = tcase_create("cutoffs");
        tcase_add_test(tc, test_rct_published);
        tcase_add_test(tc, test_rct_exact_quotients);
        tcase_add_test(tc, test_apt_table2);
        tcase_add_test(tc, test_apt_computed);
        tcase_add_test(tc, test_monotonic);
        tcase_add_test(tc, test_apt_cap);
        tcase_add_test(tc, test_invalid);
        suite_add_tcase(s, tc);

        tc = tcase_create("rct");
        tcase_add_loop_test(tc, test_rct_stuck, 0, ELEMENTSOF(stuck_params));
        tcase_add_test(tc, test_rct_below_cutoff);
        tcase_add_test(tc, test_rct_sticky);
        suite_add_tcase(s, tc);

        tc = tcase_create("apt");
        tcase_add_test(tc, test_apt_biased_pattern);
        tcase_add_test(tc, test_apt_biased_random);
        tcase_add_test(tc, test_apt_window);
        suite_add_tcase(s, tc);

        tc = tcase_create("real");
        tcase_add_loop_test(tc, test_getrandom, 0, ELEMENTSOF(real_params));
        suite_add_tcase(s, tc);

        tc = tcase_create("fast");
        tcase_add_test(tc, test_fast_path_matches_exact);
        suite_add_tcase(s, tc);

        tc = tcase_create("names");
        tcase_add_test(tc, test_result_strings);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        SRunner *sr = srunner_create(health_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);

        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
