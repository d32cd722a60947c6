/* SPDX-License-Identifier: MIT */
/* Token buckets and the host-wide fair share: refills are exact however
 * finely they are sliced, waits are the shortest that work, nothing
 * overflows at real rates, and VMs asking together split the host budget
 * evenly over simulated time. */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
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

/* bucket_available() refills, so each look is taken on a copy. */
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
        RateVm vm;
        usec_t w;

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
        ratelimit_init(&rl, 0, 0, 0, 0);
        rate_vm_init(&vm, 0, 0, 0, 0);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 0, &w), UINT64_MAX);
        ck_assert_uint_eq(w, 0);
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

/* ---- the host budget, shared the way seedbed-device shares it ---- */

/* Callers per VM: VM v has callers[v] connections, each asking for all it
 * can get once per tick, in an order that rotates.  got[v] sums a VM's
 * bytes over duration. */
static void run_ticks(RateLimit *rl, RateVm *vms, const unsigned *callers, unsigned n, usec_t *now,
                      usec_t duration, uint64_t *got) {
        for (usec_t end = *now + duration; *now < end;) {
                unsigned total = 0, turn = (unsigned) (*now / TICK);

                *now += TICK;
                for (unsigned v = 0; v < n; v++)
                        total += callers[v];
                for (unsigned i = 0; i < total; i++) {
                        unsigned k = (i + turn) % total, v = 0;
                        usec_t w;

                        while (k >= callers[v])
                                k -= callers[v++];
                        got[v] += ratelimit_take(rl, &vms[v], UINT64_MAX, *now, &w);
                }
        }
}

static void vms_init(RateVm *vms, unsigned n, uint64_t bytes, usec_t period) {
        for (unsigned v = 0; v < n; v++)
                rate_vm_init(&vms[v], bytes, period, 0, 0);
}

/* A VM with eight connections gets what a VM with one gets: the share is
 * the VM's, not the connection's. */
START_TEST(test_vms_not_connections) {
        static const unsigned callers[] = { 8, 1 };
        uint64_t got[2] = {};
        RateVm vms[2];
        RateLimit rl;
        usec_t now = 0;

        ratelimit_init(&rl, 4096, SEC, 256, 0);
        vms_init(vms, 2, 0, 0);
        run_ticks(&rl, vms, callers, 2, &now, 20 * SEC, got);
        ck_assert_msg(got[0] + got[1] <= 4096 * 20 + 256, "the host budget was exceeded: %" PRIu64, got[0] + got[1]);
        assert_within_percent(got[0], got[1], 10);
        assert_within_percent(got[0] + got[1], 4096 * 20, 5);
}
END_TEST

/* VMs asking together split the host rate evenly, however many. */
START_TEST(test_many_vms_even) {
        static const unsigned callers[MAX_VMS] = { 1, 1, 1, 1, 1, 1, 1, 1 };
        uint64_t got[MAX_VMS] = {};
        RateVm vms[MAX_VMS];
        RateLimit rl;
        usec_t now = 0;

        ratelimit_init(&rl, 80000, SEC, 0, 0);
        vms_init(vms, MAX_VMS, 0, 0);
        /* The first to ask takes the host's burst while alone; from then
         * on they share. */
        run_ticks(&rl, vms, callers, MAX_VMS, &now, SEC, got);
        memset(got, 0, sizeof got);
        run_ticks(&rl, vms, callers, MAX_VMS, &now, 10 * SEC, got);
        for (unsigned v = 1; v < MAX_VMS; v++)
                assert_within_percent(got[v], got[0], 5);
        assert_within_percent(got[0], 100000, 10);
}
END_TEST

/* A VM whose own limit is below its share takes what it may; the others
 * share the rest of the host's rate between them: none of it is lost. */
START_TEST(test_vm_limit_below_share) {
        static const unsigned callers[] = { 1, 1, 1 };
        uint64_t got[3] = {};
        RateVm vms[3];
        RateLimit rl;
        usec_t now = 0;

        ratelimit_init(&rl, 3000, SEC, 0, 0);
        vms_init(vms, 3, 0, 0);
        rate_vm_init(&vms[0], 100, SEC, 0, 0);
        run_ticks(&rl, vms, callers, 3, &now, SEC, got);
        memset(got, 0, sizeof got);
        run_ticks(&rl, vms, callers, 3, &now, 30 * SEC, got);
        assert_within_percent(got[0], 100 * 30, 5);
        assert_within_percent(got[1], got[2], 10);
        assert_within_percent(got[1] + got[2], (3000 - 100) * 30, 5);
}
END_TEST

/* Connections that ask when they were told to, as the server's do: waits
 * longer than the asking window (a slow host rate, several VMs) must not
 * let the VM with eight connections take more than one with one. */
START_TEST(test_waits_longer_than_asking) {
        enum { N_VMS = 4, N_CONNS = 11 };
        static const unsigned vm_of[N_CONNS] = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3 };
        usec_t next[N_CONNS] = {}, now = 0, end = 120 * SEC;
        uint64_t got[N_VMS] = {};
        RateVm vms[N_VMS];
        RateLimit rl;

        ratelimit_init(&rl, 1000, SEC, 0, 0);
        vms_init(vms, N_VMS, 0, 0);
        while (now < end) {
                unsigned c = 0;
                usec_t w;

                for (unsigned i = 1; i < N_CONNS; i++)
                        if (next[i] < next[c])
                                c = i;
                now = next[c];
                got[vm_of[c]] += ratelimit_take(&rl, &vms[vm_of[c]], 64, now, &w);
                /* Served: the guest asks again soon; throttled: when told. */
                next[c] = now + (w ? w : 10 * MSEC);
        }
        for (unsigned v = 1; v < N_VMS; v++)
                assert_within_percent(got[0], got[v], 25);
        assert_within_percent(got[0] + got[1] + got[2] + got[3], 1000 * 120, 10);
}
END_TEST

/* A budget is like new only with its bucket full and its share at its
 * cap: forgetting it earlier would hand a reconnecting VM a fresh burst. */
START_TEST(test_idle_only_when_like_new) {
        RateVm vm;
        RateLimit rl;
        usec_t w;

        ratelimit_init(&rl, 1000, SEC, 0, 0);
        rate_vm_init(&vm, 0, 0, 0, 0);
        ck_assert(rate_vm_idle(&rl, &vm, 0));
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 600, 0, &w), 600);
        ck_assert(!rate_vm_idle(&rl, &vm, 0));
        ck_assert(!rate_vm_idle(&rl, &vm, 300 * MSEC));
        ck_assert(rate_vm_idle(&rl, &vm, 2 * SEC));
}
END_TEST

/* A VM that stops asking stops counting 200 ms later: the one left gets
 * the whole host rate. */
START_TEST(test_asking_expires) {
        static const unsigned both[] = { 1, 1 }, one[] = { 1 };
        uint64_t got[2] = {}, alone[1] = {};
        RateVm vms[2];
        RateLimit rl;
        usec_t now = 0;

        ratelimit_init(&rl, 10000, SEC, 0, 0);
        vms_init(vms, 2, 0, 0);
        run_ticks(&rl, vms, both, 2, &now, 5 * SEC, got);
        ck_assert_uint_eq(ratelimit_asking(&rl, now), 2);
        /* Those told to wait count until they would ask again. */
        ck_assert_uint_eq(ratelimit_asking(&rl, now + SEC + RATE_ASKING_USEC), 0);
        run_ticks(&rl, vms, one, 1, &now, 10 * SEC, alone);
        ck_assert_uint_eq(ratelimit_asking(&rl, now), 1);
        assert_within_percent(alone[0], 10000 * 10, 10);
}
END_TEST

/* Counting asking VMs costs what expired, not what is idle: 10,000 VMs
 * that asked once long ago are gone from the count at the first look,
 * and each later count walks nothing. */
START_TEST(test_asking_idle_free) {
        enum { N = 10000 };
        RateVm *vms = calloc(N, sizeof *vms);
        RateLimit rl;
        usec_t w;

        ck_assert_ptr_nonnull(vms);
        ratelimit_init(&rl, 1000000, SEC, 0, 0);
        for (unsigned v = 0; v < N; v++) {
                rate_vm_init(&vms[v], 0, 0, 0, 0);
                (void) ratelimit_take(&rl, &vms[v], 1, v, &w);
        }
        ck_assert_uint_eq(ratelimit_asking(&rl, N), N);
        ck_assert_uint_eq(ratelimit_take(&rl, &vms[0], 1, 10 * SEC, &w), 1);
        ck_assert_uint_eq(ratelimit_asking(&rl, 10 * SEC), 1);
        ck_assert_ptr_eq(rl.ask_oldest, &vms[0]);
        ck_assert_ptr_eq(rl.ask_newest, &vms[0]);
        for (unsigned v = 0; v < N; v++)
                rate_vm_unlink(&rl, &vms[v]);
        ck_assert_uint_eq(rl.n_asking, 0);
        ck_assert_ptr_null(rl.ask_oldest);
        free(vms);
}
END_TEST

/* Taking consumes the VM's bucket, the host's and the share; a refund
 * gives back to all three. */
START_TEST(test_take_and_refund) {
        RateVm vm;
        RateLimit rl;
        usec_t w;

        ratelimit_init(&rl, 1000, SEC, 0, 0);
        rate_vm_init(&vm, 300, SEC, 0, 0);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 100, 0, &w), 100);
        ck_assert_uint_eq(bucket_available(&vm.bucket, 0), 200);
        ck_assert_uint_eq(bucket_available(&rl.host, 0), 900);
        ck_assert_uint_eq(vm.share, 900);
        ratelimit_refund(&rl, &vm, 40);
        ck_assert_uint_eq(bucket_available(&vm.bucket, 0), 240);
        ck_assert_uint_eq(bucket_available(&rl.host, 0), 940);
        ck_assert_uint_eq(vm.share, 940);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 1000, 0, &w), 240);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 1000, 0, &w), 0);
        /* 64 bytes at 300 B/s. */
        ck_assert_uint_eq(w, (64 * SEC + 299) / 300);
}
END_TEST

/* With no host budget only the VM's own bucket limits it. */
START_TEST(test_host_unlimited) {
        RateVm vm;
        RateLimit rl;
        usec_t w;

        ratelimit_init(&rl, 0, 0, 0, 0);
        rate_vm_init(&vm, 500, SEC, 0, 0);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 0, &w), 500);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 0, &w), 0);
        ck_assert_uint_eq(w, (64 * SEC + 499) / 500);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 10, SEC, &w), 10);
        rate_vm_init(&vm, 0, 0, 0, 0);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, UINT64_MAX, 0, &w), UINT64_MAX);
}
END_TEST

/* The wait it gives is enough: after it, a step is there. */
START_TEST(test_wait_is_enough) {
        RateVm vms[2];
        RateLimit rl;
        usec_t now = 0, w;

        ratelimit_init(&rl, 1000, SEC, 200, 0);
        vms_init(vms, 2, 0, 0);
        while (ratelimit_take(&rl, &vms[0], UINT64_MAX, now, &w) > 0 ||
               ratelimit_take(&rl, &vms[1], UINT64_MAX, now, &w) > 0)
                ;
        for (unsigned i = 0, waits = 0; waits < 50; i++) {
                if (ratelimit_take(&rl, &vms[i % 2], 64, now, &w) > 0)
                        continue;
                waits++;
                ck_assert_uint_gt(w, 0);
                ck_assert_uint_ne(w, USEC_INFINITY);
                now += w;
                ck_assert_uint_gt(ratelimit_take(&rl, &vms[i % 2], 64, now, &w), 0);
        }
}
END_TEST

/* A bucket smaller than a step: the wait is for a full bucket, and then
 * what it holds is taken. */
START_TEST(test_wait_small_bucket) {
        RateVm vm;
        RateLimit rl;
        usec_t w;

        ratelimit_init(&rl, 0, 0, 0, 0);
        rate_vm_init(&vm, 10, SEC, 0, 0);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 10, 0, &w), 10);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 64, 0, &w), 0);
        ck_assert_uint_eq(w, SEC);
        ck_assert_uint_eq(ratelimit_take(&rl, &vm, 64, SEC, &w), 10);
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
        tcase_add_test(tc, test_vms_not_connections);
        tcase_add_test(tc, test_many_vms_even);
        tcase_add_test(tc, test_vm_limit_below_share);
        tcase_add_test(tc, test_waits_longer_than_asking);
        tcase_add_test(tc, test_idle_only_when_like_new);
        tcase_add_test(tc, test_asking_expires);
        tcase_add_test(tc, test_asking_idle_free);
        tcase_add_test(tc, test_take_and_refund);
        tcase_add_test(tc, test_host_unlimited);
        tcase_add_test(tc, test_wait_is_enough);
        tcase_add_test(tc, test_wait_small_bucket);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(ratelimit_suite)
