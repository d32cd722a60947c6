/* SPDX-License-Identifier: MIT */
/* Token buckets and the host-wide fair share: refills are exact however
 * finely they are sliced, waits are the shortest that work, nothing
 * overflows at real rates, and VMs asking together split the host budget
 * evenly over simulated time. */
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "macro.h"
#include "ratelimit.h"
#include "testmain.h"

#define SEC USEC_PER_SEC
#define MSEC USEC_PER_MSEC
#define TICK (10 * MSEC)

__extension__ typedef unsigned __int128 uint128_t;

/* Rates that divide evenly and ones that do not, slower and faster than a
 * byte per microsecond. */
static const struct {
        uint64_t bytes;
        usec_t period;
} rates[] = {
        { 1000, SEC },       { 12345, 1000003 },    { 7, 3 * SEC }, { 1, SEC },
        { 3000001, 7 },      { 10000000000ULL, SEC }, { 1, 1 },     { 999983, 1000 },
};

static void drain(TokenBucket *b, usec_t now) {
        bucket_consume(b, bucket_available(b, now));
        ck_assert_uint_eq(bucket_available(b, now), 0);
}

/* An empty bucket that will not reach its burst in the time a test runs. */
static void init_empty(TokenBucket *b, uint64_t bytes, usec_t period, usec_t now) {
        bucket_init(b, bytes, period, UINT64_MAX, now);
        drain(b, now);
}

static uint64_t expected_refill(uint64_t bytes, usec_t period, usec_t elapsed) {
        return (uint64_t) ((uint128_t) elapsed * bytes / period);
}

/* available() refills, so each look is taken on a copy. */
static uint64_t available_at(const TokenBucket *b, usec_t when) {
        TokenBucket c = *b;

        return bucket_available(&c, when);
}

static void assert_within_percent(uint64_t actual, uint64_t expected, unsigned percent) {
        uint64_t diff = actual > expected ? actual - expected : expected - actual;

        ck_assert_msg(diff * 100 <= expected * percent, "%" PRIu64 " is not within %u%% of %" PRIu64, actual,
                      percent, expected);
}

/* ---- buckets ------------------------------------------------------------ */

START_TEST(test_init_full) {
        TokenBucket b;

        /* burst 0 is one period's worth, and a new bucket is full. */
        bucket_init(&b, 1000, SEC, 0, 5 * SEC);
        ck_assert(!b.unlimited);
        ck_assert_uint_eq(b.burst, 1000);
        ck_assert_uint_eq(bucket_available(&b, 5 * SEC), 1000);

        bucket_init(&b, 1000, SEC, 64 * 1024, 0);
        ck_assert_uint_eq(bucket_available(&b, 0), 64 * 1024);
        /* Full stays full. */
        ck_assert_uint_eq(bucket_available(&b, 3600 * SEC), 64 * 1024);
}
END_TEST

START_TEST(test_consume_refill_cap) {
        TokenBucket b;

        bucket_init(&b, 1000, SEC, 0, 0);
        bucket_consume(&b, 600);
        ck_assert_uint_eq(bucket_available(&b, 0), 400);
        ck_assert_uint_eq(bucket_available(&b, 100 * MSEC), 500);
        ck_assert_uint_eq(bucket_available(&b, 100 * MSEC + 999), 500);
        ck_assert_uint_eq(bucket_available(&b, 101 * MSEC), 501);
        ck_assert_uint_eq(bucket_available(&b, 10 * SEC), 1000);
}
END_TEST

START_TEST(test_consume_clamps) {
        TokenBucket b;

        /* Taking too much empties the bucket; it does not wrap round. */
        bucket_init(&b, 1000, SEC, 0, 0);
        bucket_consume(&b, 5000);
        ck_assert_uint_eq(bucket_available(&b, 0), 0);
        bucket_consume(&b, UINT64_MAX);
        ck_assert_uint_eq(bucket_available(&b, 0), 0);
        ck_assert_uint_eq(bucket_available(&b, MSEC), 1);
}
END_TEST

START_TEST(test_full_earns_nothing) {
        TokenBucket b;

        /* Ten seconds spent full are not credit for later. */
        bucket_init(&b, 1000, SEC, 0, 0);
        ck_assert_uint_eq(bucket_available(&b, 10 * SEC), 1000);
        bucket_consume(&b, 1000);
        ck_assert_uint_eq(bucket_available(&b, 10 * SEC + MSEC), 1);
        ck_assert_uint_eq(bucket_available(&b, 10 * SEC + 500 * MSEC), 500);

        /* Nor is a part byte carried into being full: half a byte in at
         * 1.5 ms, full at 10 s, emptied, and 0.5 ms later still empty. */
        bucket_init(&b, 1000, SEC, 0, 0);
        drain(&b, 0);
        ck_assert_uint_eq(bucket_available(&b, 1500), 1);
        ck_assert_uint_eq(bucket_available(&b, 10 * SEC), 1000);
        bucket_consume(&b, 1000);
        ck_assert_uint_eq(bucket_available(&b, 10 * SEC + 500), 0);
        ck_assert_uint_eq(bucket_available(&b, 10 * SEC + 1000), 1);
}
END_TEST

START_TEST(test_unlimited) {
        TokenBucket b;
        RateLimit rl;

        bucket_init(&b, 0, SEC, 100, 0);
        ck_assert(b.unlimited);
        ck_assert_uint_eq(bucket_available(&b, 0), UINT64_MAX);
        bucket_consume(&b, UINT64_MAX);
        ck_assert_uint_eq(bucket_available(&b, 0), UINT64_MAX);
        ck_assert_uint_eq(bucket_wait(&b, UINT64_MAX, 0), 0);

        /* A rate with no period is an infinite rate. */
        bucket_init(&b, 1000, 0, 0, 0);
        ck_assert(b.unlimited);
        ck_assert_uint_eq(bucket_available(&b, 0), UINT64_MAX);

        /* Both unlimited: anything goes, at once. */
        bucket_init(&rl.host, 0, 0, 0, 0);
        ck_assert_uint_eq(ratelimit_take(&rl, &b, UINT64_MAX, 100, 0), UINT64_MAX);
        ck_assert_uint_eq(ratelimit_wait(&rl, &b, UINT64_MAX, 0), 0);
}
END_TEST

START_TEST(test_clock_backwards) {
        TokenBucket b;
        usec_t w;

        bucket_init(&b, 1000, SEC, 0, 0);
        drain(&b, 10 * SEC);
        /* An earlier reading refunds nothing and moves nothing back. */
        ck_assert_uint_eq(bucket_available(&b, 5 * SEC), 0);
        ck_assert_uint_eq(bucket_available(&b, 10 * SEC), 0);
        ck_assert_uint_eq(bucket_available(&b, 10 * SEC + MSEC), 1);

        /* The wait counted from the earlier reading includes the gap:
         * 5.001 s to get back to last, 1 ms more for the second byte. */
        w = bucket_wait(&b, 2, 5 * SEC);
        ck_assert_uint_eq(w, 5 * SEC + 2 * MSEC);
        ck_assert_uint_eq(available_at(&b, 5 * SEC + w), 2);
        ck_assert_uint_eq(available_at(&b, 5 * SEC + w - 1), 1);
}
END_TEST

/* ---- exact arithmetic --------------------------------------------------- */

START_TEST(test_small_steps_exact) {
        /* The brief's case: 1 us refills over 10 s give exactly what one
         * 10 s refill gives, remainder included. */
        for (size_t i = 0; i < 3; i++) {
                TokenBucket fine, coarse;

                init_empty(&fine, rates[i].bytes, rates[i].period, 0);
                coarse = fine;
                for (usec_t t = 1; t <= 10 * SEC; t++)
                        (void) bucket_available(&fine, t);
                ck_assert_uint_eq(bucket_available(&coarse, 10 * SEC), fine.tokens);
                ck_assert_uint_eq(fine.frac, coarse.frac);
                ck_assert_uint_eq(fine.tokens, expected_refill(rates[i].bytes, rates[i].period, 10 * SEC));
        }
}
END_TEST

START_TEST(test_uneven_steps_exact) {
        /* Steps of every size from 1 to 997 us, over every rate: still
         * floor(elapsed * rate / period) at every step. */
        for (size_t i = 0; i < ELEMENTSOF(rates); i++) {
                TokenBucket b;
                usec_t t = 0, step = 1;

                init_empty(&b, rates[i].bytes, rates[i].period, 0);
                while (t < 10 * SEC) {
                        t += step;
                        step = step % 997 + 1;
                        ck_assert_uint_eq(bucket_available(&b, t),
                                          expected_refill(rates[i].bytes, rates[i].period, t));
                        ck_assert_uint_lt(b.frac, rates[i].period);
                }
        }
}
END_TEST

START_TEST(test_consume_keeps_remainder) {
        TokenBucket b;

        /* 1 byte per 3 us, taken as soon as it is there: 10 s still
         * yields every one of the 3333333 bytes. */
        uint64_t total = 0;

        init_empty(&b, 1, 3, 0);
        for (usec_t t = 1; t <= 10 * SEC; t++) {
                uint64_t n = bucket_available(&b, t);

                bucket_consume(&b, n);
                total += n;
        }
        ck_assert_uint_eq(total, 10 * SEC / 3);
}
END_TEST

/* Checks that w = bucket_wait(n) is the smallest wait that works. */
static void assert_wait_exact(const TokenBucket *b, uint64_t n, usec_t now) {
        TokenBucket c = *b;
        usec_t w = bucket_wait(&c, n, now);
        uint64_t want = MIN(n, b->burst);

        ck_assert_uint_ne(w, USEC_INFINITY);
        ck_assert_msg(available_at(b, now + w) >= want, "after %" PRIu64 " us: fewer than %" PRIu64, w, want);
        if (w > 0)
                ck_assert_msg(available_at(b, now + w - 1) < want, "%" PRIu64 " us is not the shortest wait", w);
        else
                ck_assert_uint_ge(available_at(b, now), want);
}

START_TEST(test_wait_exact) {
        static const uint64_t sizes[] = { 0, 1, 2, 3, 7, 64, 255, 256, 1000, 4096, 65536, 1000001 };

        for (size_t i = 0; i < ELEMENTSOF(rates); i++)
                for (usec_t start = 0; start < 50; start += 7)
                        for (size_t j = 0; j < ELEMENTSOF(sizes); j++) {
                                TokenBucket b;

                                /* Empty, then part of a byte (or some
                                 * bytes) in: frac is not 0. */
                                bucket_init(&b, rates[i].bytes, rates[i].period, 2000000, 0);
                                drain(&b, 0);
                                (void) bucket_available(&b, start);
                                assert_wait_exact(&b, sizes[j], start);
                        }
}
END_TEST

START_TEST(test_wait_caps_at_burst) {
        TokenBucket b;

        /* More than the bucket holds: woken when it is full. */
        bucket_init(&b, 1000, SEC, 0, 0);
        drain(&b, 0);
        ck_assert_uint_eq(bucket_wait(&b, 5000, 0), SEC);
        ck_assert_uint_eq(bucket_wait(&b, UINT64_MAX, 0), SEC);
        assert_wait_exact(&b, UINT64_MAX, 0);
        ck_assert_uint_eq(bucket_wait(&b, 0, 0), 0);
        ck_assert_uint_eq(bucket_wait(&b, 500, 0), 500 * MSEC);
        ck_assert_uint_eq(bucket_wait(&b, 500, 400 * MSEC), 100 * MSEC);
        ck_assert_uint_eq(bucket_wait(&b, 500, 500 * MSEC), 0);
}
END_TEST

START_TEST(test_large_rates) {
        const uint64_t rate = 10ULL * 1000 * 1000 * 1000; /* 10 GB/s */
        const usec_t hour = 3600 * SEC;
        TokenBucket fine, coarse;

        /* An hour at 10 GB/s is 3.6e19 byte-usec, past 2^64. */
        init_empty(&coarse, rate, SEC, 0);
        fine = coarse;
        ck_assert_uint_eq(bucket_wait(&coarse, 3600 * rate, 0), hour);
        ck_assert_uint_eq(bucket_available(&coarse, hour), 3600 * rate);
        for (usec_t t = MSEC; t <= hour; t += MSEC)
                (void) bucket_available(&fine, t);
        ck_assert_uint_eq(fine.tokens, 3600 * rate);
        ck_assert_uint_eq(fine.frac, coarse.frac);

        /* The default burst caps it at one period's worth. */
        bucket_init(&coarse, rate, SEC, 0, 0);
        drain(&coarse, 0);
        ck_assert_uint_eq(bucket_available(&coarse, hour), rate);
}
END_TEST

START_TEST(test_extreme_values) {
        TokenBucket b;

        /* The largest everything: 2^64 - 1 bytes per us. */
        init_empty(&b, UINT64_MAX, 1, 0);
        ck_assert_uint_eq(bucket_wait(&b, UINT64_MAX, 0), 1);
        ck_assert_uint_eq(bucket_available(&b, 1), UINT64_MAX);
        drain(&b, 1);
        ck_assert_uint_eq(bucket_available(&b, UINT64_MAX), UINT64_MAX);

        /* The longest period over the longest time: exactly the rate. */
        init_empty(&b, UINT64_MAX - 1, UINT64_MAX, 0);
        ck_assert_uint_eq(bucket_available(&b, UINT64_MAX), UINT64_MAX - 1);

        /* A wait that does not fit in a usec_t says so: one byte per
         * 2^63 - 1 us makes the second byte the last one that fits. */
        init_empty(&b, 1, UINT64_MAX / 2, 0);
        ck_assert_uint_eq(bucket_wait(&b, 1, 0), UINT64_MAX / 2);
        ck_assert_uint_eq(bucket_wait(&b, 2, 0), UINT64_MAX - 1);
        ck_assert_uint_eq(bucket_wait(&b, 3, 0), USEC_INFINITY);
}
END_TEST

/* ---- fair share --------------------------------------------------------- */

#define MAX_VMS 8U

/* One round per tick, served the way ratelimit.h asks callers to: the
 * first n_asking VMs each ask for all they can get, those whose own bucket
 * allows least go first (so what they leave of their share is split among
 * the rest), VMs that allow the same take turns at going first, and each
 * is told how many are still to be served this round, itself included. */
static void run_ticks(RateLimit *rl, TokenBucket *vms, unsigned n_asking, usec_t *now, usec_t duration,
                      uint64_t *got) {
        ck_assert_uint_le(n_asking, MAX_VMS);

        for (usec_t end = *now + duration; *now < end;) {
                unsigned order[MAX_VMS], tmp[MAX_VMS];
                uint64_t allows[MAX_VMS], round;

                *now += TICK;
                round = *now / TICK;
                for (unsigned v = 0; v < n_asking; v++) {
                        allows[v] = bucket_available(&vms[v], *now);
                        order[v] = v;
                }
                for (unsigned i = 1; i < n_asking; i++)
                        for (unsigned j = i; j > 0 && allows[order[j - 1]] > allows[order[j]]; j--) {
                                unsigned t = order[j];

                                order[j] = order[j - 1];
                                order[j - 1] = t;
                        }
                for (unsigned i = 0, k; i < n_asking; i = k) {
                        for (k = i + 1; k < n_asking && allows[order[k]] == allows[order[i]]; k++)
                                ;
                        for (unsigned j = i; j < k; j++)
                                tmp[j] = order[i + (j - i + round) % (k - i)];
                        memcpy(order + i, tmp + i, (k - i) * sizeof order[0]);
                }
                for (unsigned i = 0; i < n_asking; i++)
                        got[order[i]] += ratelimit_take(rl, &vms[order[i]], UINT64_MAX, n_asking - i, *now);
        }
}

START_TEST(test_share_rounds_up) {
        RateLimit rl;
        TokenBucket vm;

        bucket_init(&rl.host, 10, SEC, 0, 0);
        bucket_init(&vm, 0, 0, 0, 0);
        /* 10 between 4: 3, and then a quarter of what is left. */
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 4, 0), 3);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 4, 0), 2);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 4, 0), 2);
        /* Fewer bytes than askers: still one each, never 0 for all. */
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 4, 0), 1);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 4, 0), 1);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 4, 0), 1);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 4, 0), 0);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 0, 1, 10 * SEC), 0);
}
END_TEST

START_TEST(test_take_consumes_both) {
        RateLimit rl;
        TokenBucket vm;

        bucket_init(&rl.host, 1000, SEC, 0, 0);
        bucket_init(&vm, 300, SEC, 0, 0);
        /* Limited by what it wants, then by its own bucket, then by the
         * host's share. */
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 100, 2, 0), 100);
        ck_assert_uint_eq(bucket_available(&vm, 0), 200);
        ck_assert_uint_eq(bucket_available(&rl.host, 0), 900);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 1000, 2, 0), 200);
        ck_assert_uint_eq(bucket_available(&vm, 0), 0);
        ck_assert_uint_eq(bucket_available(&rl.host, 0), 700);
        bucket_init(&vm, 0, 0, 0, 0);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 1000, 2, 0), 350);
        ck_assert_uint_eq(bucket_available(&rl.host, 0), 350);
}
END_TEST

START_TEST(test_asking_zero) {
        RateLimit a, b;
        TokenBucket va, vb;

        bucket_init(&a.host, 1000, SEC, 0, 0);
        bucket_init(&va, 0, 0, 0, 0);
        b = a;
        vb = va;
        ck_assert_uint_eq(ratelimit_take(&a, &va, UINT64_MAX, 0, 0), 1000);
        ck_assert_uint_eq(ratelimit_take(&b, &vb, UINT64_MAX, 1, 0), 1000);
        ck_assert_uint_eq(ratelimit_take(&a, &va, UINT64_MAX, 0, 333 * MSEC), 333);
        ck_assert_uint_eq(ratelimit_take(&b, &vb, UINT64_MAX, 1, 333 * MSEC), 333);
}
END_TEST

START_TEST(test_host_unlimited) {
        RateLimit rl;
        TokenBucket vm;

        /* Only the VM's own bucket counts, however many are asking. */
        bucket_init(&rl.host, 0, 0, 0, 0);
        bucket_init(&vm, 500, SEC, 0, 0);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 1000, 0), 500);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 1000, 0), 0);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 1000, 100 * MSEC), 50);
        ck_assert_uint_eq(ratelimit_wait(&rl, &vm, 50, 100 * MSEC), 100 * MSEC);
}
END_TEST

START_TEST(test_rotation_fair) {
        RateLimit rl;
        TokenBucket vms[4];
        uint64_t got[4] = {}, sum = 0;
        usec_t now = 0;

        /* 1000 B/s between 4 unlimited VMs for 10 s, in 10 ms ticks:
         * 10 bytes a tick, 2500 each. */
        bucket_init(&rl.host, 1000, SEC, 0, 0);
        drain(&rl.host, 0);
        for (unsigned i = 0; i < 4; i++)
                bucket_init(&vms[i], 0, 0, 0, 0);
        run_ticks(&rl, vms, 4, &now, 10 * SEC, got);
        for (unsigned i = 0; i < 4; i++) {
                assert_within_percent(got[i], 2500, 1);
                sum += got[i];
        }
        /* Nothing invented, nothing lost: the host's 10000 bytes are
         * either handed out or still in its bucket. */
        ck_assert_uint_eq(sum + bucket_available(&rl.host, now), 10000);
}
END_TEST

START_TEST(test_small_vm_limit) {
        RateLimit rl;
        TokenBucket vms[4];
        uint64_t got[4] = {}, sum = 0;
        usec_t now = 0;

        /* VM 0 is held to 100 B/s; the other three share the 900 left. */
        bucket_init(&rl.host, 1000, SEC, 0, 0);
        drain(&rl.host, 0);
        bucket_init(&vms[0], 100, SEC, 0, 0);
        drain(&vms[0], 0);
        for (unsigned i = 1; i < 4; i++)
                bucket_init(&vms[i], 0, 0, 0, 0);
        run_ticks(&rl, vms, 4, &now, 10 * SEC, got);
        ck_assert_uint_eq(got[0], 1000);
        for (unsigned i = 1; i < 4; i++)
                assert_within_percent(got[i], 3000, 1);
        for (unsigned i = 0; i < 4; i++)
                sum += got[i];
        ck_assert_uint_eq(sum + bucket_available(&rl.host, now), 10000);
}
END_TEST

START_TEST(test_two_limited_vms) {
        RateLimit rl;
        TokenBucket vms[4];
        uint64_t got[4] = {};
        usec_t now = 0;

        /* 100 and 200 B/s for two of them: the other two split the 700
         * left, 350 B/s each. */
        bucket_init(&rl.host, 1000, SEC, 0, 0);
        drain(&rl.host, 0);
        bucket_init(&vms[0], 100, SEC, 0, 0);
        drain(&vms[0], 0);
        bucket_init(&vms[1], 200, SEC, 0, 0);
        drain(&vms[1], 0);
        bucket_init(&vms[2], 0, 0, 0, 0);
        bucket_init(&vms[3], 0, 0, 0, 0);
        run_ticks(&rl, vms, 4, &now, 10 * SEC, got);
        ck_assert_uint_eq(got[0], 1000);
        ck_assert_uint_eq(got[1], 2000);
        assert_within_percent(got[2], 3500, 1);
        assert_within_percent(got[3], 3500, 1);
}
END_TEST

START_TEST(test_limit_above_share) {
        RateLimit rl;
        TokenBucket vms[4];
        uint64_t got[4] = {};
        usec_t now = 0;

        /* A limit above the fair share does not buy more than it: at
         * 100 kB/s between four, 40 kB/s allowed is still 25 kB/s. */
        bucket_init(&rl.host, 100000, SEC, 0, 0);
        drain(&rl.host, 0);
        bucket_init(&vms[0], 40000, SEC, 0, 0);
        drain(&vms[0], 0);
        for (unsigned i = 1; i < 4; i++)
                bucket_init(&vms[i], 0, 0, 0, 0);
        run_ticks(&rl, vms, 4, &now, 10 * SEC, got);
        for (unsigned i = 0; i < 4; i++)
                assert_within_percent(got[i], 250000, 1);
}
END_TEST

START_TEST(test_many_vms_large_budget) {
        RateLimit rl;
        TokenBucket vms[MAX_VMS];
        uint64_t got[MAX_VMS] = {}, sum = 0;
        usec_t now = 0;

        /* 1 GB/s between eight, one held to 1 MB/s: the other seven get
         * 999 MB/s / 7 each, and the arithmetic holds at that size. */
        bucket_init(&rl.host, 1000000000, SEC, 0, 0);
        drain(&rl.host, 0);
        bucket_init(&vms[0], 1000000, SEC, 0, 0);
        drain(&vms[0], 0);
        for (unsigned i = 1; i < MAX_VMS; i++)
                bucket_init(&vms[i], 0, 0, 0, 0);
        run_ticks(&rl, vms, MAX_VMS, &now, 10 * SEC, got);
        ck_assert_uint_eq(got[0], 10000000);
        for (unsigned i = 1; i < MAX_VMS; i++)
                assert_within_percent(got[i], 9990000000ULL / 7, 1);
        for (unsigned i = 0; i < MAX_VMS; i++)
                sum += got[i];
        ck_assert_uint_eq(sum + bucket_available(&rl.host, now), 10000000000ULL);
}
END_TEST

START_TEST(test_alone_whole_budget) {
        RateLimit rl;
        TokenBucket vm;
        uint64_t got = 0;
        usec_t now = 0;

        /* Alone, a VM gets the host's burst at the first tick (the bucket
         * was full, so those 10 ms earn nothing) and then all of its rate:
         * 10 bytes in each of the other 999 ticks. */
        bucket_init(&rl.host, 1000, SEC, 0, 0);
        bucket_init(&vm, 0, 0, 0, 0);
        run_ticks(&rl, &vm, 1, &now, 10 * SEC, &got);
        ck_assert_uint_eq(got, 1000 + 999 * 10);
        ck_assert_uint_eq(bucket_available(&rl.host, now), 0);
}
END_TEST

START_TEST(test_share_follows_asking) {
        RateLimit rl;
        TokenBucket vms[4];
        uint64_t got[4] = {};
        usec_t now = 0;

        /* 5 s with four asking, then 5 s with two: the idle VMs' share is
         * not held for them. */
        bucket_init(&rl.host, 1000, SEC, 0, 0);
        drain(&rl.host, 0);
        for (unsigned i = 0; i < 4; i++)
                bucket_init(&vms[i], 0, 0, 0, 0);
        run_ticks(&rl, vms, 4, &now, 5 * SEC, got);
        run_ticks(&rl, vms, 2, &now, 5 * SEC, got);
        assert_within_percent(got[0], 1250 + 2500, 1);
        assert_within_percent(got[1], 1250 + 2500, 1);
        assert_within_percent(got[2], 1250, 1);
        assert_within_percent(got[3], 1250, 1);
}
END_TEST

START_TEST(test_wait_later_of_two) {
        RateLimit rl;
        TokenBucket vm;

        bucket_init(&rl.host, 1000, SEC, 0, 0);
        drain(&rl.host, 0);
        bucket_init(&vm, 100, SEC, 0, 0);
        drain(&vm, 0);

        /* 50 bytes: 50 ms for the host, 500 ms for the VM. */
        ck_assert_uint_eq(bucket_wait(&rl.host, 50, 0), 50 * MSEC);
        ck_assert_uint_eq(bucket_wait(&vm, 50, 0), 500 * MSEC);
        ck_assert_uint_eq(ratelimit_wait(&rl, &vm, 50, 0), 500 * MSEC);

        /* Now the host is the slow one. */
        bucket_init(&rl.host, 10, SEC, 0, 0);
        drain(&rl.host, 0);
        ck_assert_uint_eq(ratelimit_wait(&rl, &vm, 10, 0), SEC);
        ck_assert_uint_eq(ratelimit_wait(&rl, &vm, 5, 0), 500 * MSEC);

        /* Either already there: 0; and both bounded by their bursts. */
        ck_assert_uint_eq(ratelimit_wait(&rl, &vm, 0, 0), 0);
        ck_assert_uint_eq(ratelimit_wait(&rl, &vm, UINT64_MAX, 0), SEC);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 10, 1, SEC), 10);
}
END_TEST

static Suite *ratelimit_suite(void) {
        Suite *s = suite_create("ratelimit");
        TCase *tc;

        tc = tcase_create("bucket");
        tcase_add_test(tc, test_init_full);
        tcase_add_test(tc, test_consume_refill_cap);
        tcase_add_test(tc, test_consume_clamps);
        tcase_add_test(tc, test_full_earns_nothing);
        tcase_add_test(tc, test_unlimited);
        tcase_add_test(tc, test_clock_backwards);
        suite_add_tcase(s, tc);

        tc = tcase_create("exact");
        /* Tens of millions of refills; slow under the sanitizers. */
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_small_steps_exact);
        tcase_add_test(tc, test_uneven_steps_exact);
        tcase_add_test(tc, test_consume_keeps_remainder);
        tcase_add_test(tc, test_wait_exact);
        tcase_add_test(tc, test_wait_caps_at_burst);
        tcase_add_test(tc, test_large_rates);
        tcase_add_test(tc, test_extreme_values);
        suite_add_tcase(s, tc);

        tc = tcase_create("fair-share");
        tcase_add_test(tc, test_share_rounds_up);
        tcase_add_test(tc, test_take_consumes_both);
        tcase_add_test(tc, test_asking_zero);
        tcase_add_test(tc, test_host_unlimited);
        tcase_add_test(tc, test_rotation_fair);
        tcase_add_test(tc, test_small_vm_limit);
        tcase_add_test(tc, test_two_limited_vms);
        tcase_add_test(tc, test_limit_above_share);
        tcase_add_test(tc, test_many_vms_large_budget);
        tcase_add_test(tc, test_alone_whole_budget);
        tcase_add_test(tc, test_share_follows_asking);
        tcase_add_test(tc, test_wait_later_of_two);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(ratelimit_suite)
