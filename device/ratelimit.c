/* SPDX-License-Identifier: MIT */
#include <assert.h>

#include "ratelimit.h"

/* Rates are whole bytes per period and time is whole microseconds, so a
 * refill is elapsed * bytes_per_period / period.  That product overflows
 * 64 bits within the hour at rates people configure (10 GB/s is 3.6e19
 * byte-usec in an hour), and any product of two 64-bit values fits in
 * 128, so all of it is done there.  No floating point: a rate limiter
 * that rounds differently on every refill drifts, and one that drifts
 * upwards hands out bytes nobody allowed. */
__extension__ typedef unsigned __int128 uint128_t;

void bucket_init(TokenBucket *b, uint64_t bytes_per_period, usec_t period, uint64_t burst, usec_t now) {
        assert(b);

        /* A period of 0 with a rate is an infinite rate: treated as the
         * unlimited bucket it is rather than dividing by zero later. */
        if (bytes_per_period == 0 || period == 0) {
                *b = (TokenBucket) { .unlimited = true, .last = now };
                return;
        }

        if (burst == 0)
                burst = bytes_per_period;

        *b = (TokenBucket) {
                .bytes_per_period = bytes_per_period,
                .period = period,
                .burst = burst,
                .tokens = burst,
                .last = now,
        };
}

/* Brings tokens up to now.  The sub-byte part of each refill is kept in
 * frac (bytes * usec, always < period), so refilling in many small steps
 * yields exactly what one big step would: the callers refill on every
 * request, often microseconds apart, and dropping the remainder each time
 * would starve a slow bucket completely.  Invariant: tokens <= burst. */
static void bucket_refill(TokenBucket *b, usec_t now) {
        uint128_t total, add;

        /* A clock that reads earlier than last (a caller mixing clocks)
         * must not be paid for time it already counted: wait until it
         * passes last again. */
        if (now <= b->last)
                return;

        /* Cannot overflow: (2^64 - 1)^2 + period - 1 < 2^128. */
        total = (uint128_t) (now - b->last) * b->bytes_per_period + b->frac;
        add = total / b->period;

        if (add >= b->burst - b->tokens) {
                /* Full: the remainder goes too, since time spent full
                 * earns nothing, or a full bucket would carry credit
                 * beyond its burst. */
                b->tokens = b->burst;
                b->frac = 0;
        } else {
                b->tokens += (uint64_t) add;
                b->frac = (uint64_t) (total % b->period);
        }

        b->last = now;
}

uint64_t bucket_available(TokenBucket *b, usec_t now) {
        assert(b);

        if (b->unlimited)
                return UINT64_MAX;

        bucket_refill(b, now);
        return b->tokens;
}

/* Takes from the tokens as of the last refill, so callers ask
 * bucket_available() at the same now first, as ratelimit_take() does. */
void bucket_consume(TokenBucket *b, uint64_t n) {
        assert(b);

        if (b->unlimited)
                return;

        /* Taking more than is there is a caller's bug; clamping keeps it
         * from wrapping round to an almost endless supply. */
        b->tokens -= MIN(n, b->tokens);
}

usec_t bucket_wait(TokenBucket *b, uint64_t n, usec_t now) {
        uint128_t missing, wait;

        assert(b);

        if (b->unlimited)
                return 0;

        bucket_refill(b, now);

        /* The bucket never holds more than burst: asking for more would
         * wait forever, so the caller is woken when it is full instead
         * and takes what there is. */
        n = MIN(n, b->burst);
        if (b->tokens >= n)
                return 0;

        /* The smallest w with tokens + (w * rate + frac) / period >= n,
         * in whole bytes: w * rate >= (n - tokens) * period - frac, so w
         * is that divided by rate, rounded up.  Rounded down would wake
         * the caller a microsecond early to find nothing. */
        missing = (uint128_t) (n - b->tokens) * b->period - b->frac;
        wait = (missing + b->bytes_per_period - 1) / b->bytes_per_period;

        /* Refill counts from last, which is later than now only when the
         * clock went back; the time until last passes counts too. */
        if (now < b->last)
                wait += b->last - now;

        return wait >= USEC_INFINITY ? USEC_INFINITY : (usec_t) wait;
}

/* ---- the host budget, shared fairly ---- */

void ratelimit_init(RateLimit *rl, uint64_t bytes_per_period, usec_t period, uint64_t burst, usec_t now) {
        *rl = (RateLimit) {};
        bucket_init(&rl->host, bytes_per_period, period, burst, now);
}

void rate_vm_init(RateVm *vm, uint64_t bytes_per_period, usec_t period, uint64_t burst, usec_t now) {
        *vm = (RateVm) {};
        bucket_init(&vm->bucket, bytes_per_period, period, burst, now);
}

static void asking_unlink(RateLimit *rl, RateVm *vm) {
        if (!vm->asking)
                return;
        if (vm->ask_prev)
                vm->ask_prev->ask_next = vm->ask_next;
        else
                rl->ask_oldest = vm->ask_next;
        if (vm->ask_next)
                vm->ask_next->ask_prev = vm->ask_prev;
        else
                rl->ask_newest = vm->ask_prev;
        vm->ask_prev = vm->ask_next = NULL;
        vm->asking = false;
        rl->n_asking--;
}

void rate_vm_unlink(RateLimit *rl, RateVm *vm) {
        asking_unlink(rl, vm);
}

static void asking_mark(RateLimit *rl, RateVm *vm, usec_t now);

/* The asking VMs are kept in the order they last asked: those that asked
 * too long ago are at the old end, so counting costs what expires, not
 * what is idle (a host may hold thousands of idle connections).  One
 * told to wait longer than that is still asking: it goes back to the new
 * end, once a window while it waits. */
unsigned ratelimit_asking(RateLimit *rl, usec_t now) {
        while (rl->ask_oldest && rl->ask_oldest->last_ask + RATE_ASKING_USEC <= now) {
                RateVm *vm = rl->ask_oldest;

                if (vm->ask_until > now)
                        asking_mark(rl, vm, now);
                else
                        asking_unlink(rl, vm);
        }
        return rl->n_asking;
}

static void asking_mark(RateLimit *rl, RateVm *vm, usec_t now) {
        asking_unlink(rl, vm);
        vm->last_ask = now;
        vm->ask_prev = rl->ask_newest;
        if (rl->ask_newest)
                rl->ask_newest->ask_next = vm;
        else
                rl->ask_oldest = vm;
        rl->ask_newest = vm;
        vm->asking = true;
        rl->n_asking++;
}

/* The VM's share of the host budget at now: it earns host rate / n (the
 * VMs asking) from when it last earned, up to the host burst / n (and
 * never less than RATE_SHARE_MIN, so it can always make a step).  Whole
 * bytes only: the time for a part byte is kept by not moving share_last
 * past it. */
static uint64_t share_cap(const TokenBucket *h, unsigned n);

static void share_refill(const TokenBucket *h, RateVm *vm, unsigned n, usec_t now) {
        uint64_t cap = share_cap(h, n);
        uint128_t add;

        if (!vm->earning || vm->share_last > now) {
                vm->share = cap;
                vm->share_last = now;
                vm->earning = true;
                return;
        }
        add = (uint128_t) (now - vm->share_last) * h->bytes_per_period / ((uint128_t) h->period * n);
        if (vm->share + add >= cap) {
                vm->share = cap;
                vm->share_last = now;
        } else if (add > 0) {
                vm->share += (uint64_t) add;
                vm->share_last += (usec_t) (add * h->period * n / h->bytes_per_period);
        }
}

/* Time until the share holds min_bytes, at the rate it earns now. */
static usec_t share_wait(const TokenBucket *h, const RateVm *vm, unsigned n, uint64_t min_bytes) {
        if (vm->share >= min_bytes)
                return 0;
        return (usec_t) (((uint128_t) (min_bytes - vm->share) * h->period * n + h->bytes_per_period - 1) /
                         h->bytes_per_period);
}

/* What a share may hold: the host's burst / n, at least a step. */
static uint64_t share_cap(const TokenBucket *h, unsigned n) {
        return MAX(h->burst / n, (uint64_t) RATE_SHARE_MIN);
}

uint64_t ratelimit_take(RateLimit *rl, RateVm *vm, uint64_t want, usec_t now, usec_t *ret_wait) {
        TokenBucket *h = &rl->host;
        uint64_t step = MIN(want, (uint64_t) RATE_SHARE_MIN), own, allowed;
        bool held_by_own;
        unsigned n;

        *ret_wait = 0;
        if (want == 0)
                return 0;
        own = bucket_available(&vm->bucket, now);
        /* A VM its own bucket holds back does not compete for the host's:
         * counted, it would earn a share it cannot use, and every other
         * share would be smaller by what it leaves. */
        held_by_own = own < MIN(step, vm->bucket.unlimited ? step : vm->bucket.burst);
        if (!held_by_own)
                asking_mark(rl, vm, now);
        n = MAX(ratelimit_asking(rl, now), 1U);

        allowed = MIN(want, own);
        if (!h->unlimited) {
                uint64_t host = bucket_available(h, now), spare;

                share_refill(h, vm, n, now);
                /* What the host bucket holds beyond half its burst nobody
                 * used: any VM may borrow it, or a VM that asks less than
                 * its share would leave the host's rate unused. */
                spare = host > h->burst / 2 ? host - h->burst / 2 : 0;
                allowed = MIN(allowed, MIN(MAX(vm->share, spare), host));
        }
        if (allowed == 0) {
                usec_t w = bucket_wait(&vm->bucket, step, now);

                if (!h->unlimited && !held_by_own && w != USEC_INFINITY) {
                        usec_t wh = bucket_wait(h, step, now), ws = share_wait(h, vm, n, step);

                        w = wh == USEC_INFINITY ? wh : MAX(w, MAX(wh, ws));
                        /* Waiting for its share it still competes: counted
                         * until it asks again, or its share would be
                         * handed to the others while it waits.  Another
                         * of its connections served meanwhile does not
                         * end that. */
                        if (w != USEC_INFINITY)
                                vm->ask_until = MAX(vm->ask_until, now + w);
                }
                *ret_wait = w == USEC_INFINITY ? w : MAX(w, (usec_t) 1);
                return 0;
        }
        bucket_consume(&vm->bucket, allowed);
        if (!h->unlimited) {
                bucket_consume(h, allowed);
                vm->share -= MIN(vm->share, allowed);
        }
        return allowed;
}

bool rate_vm_idle(RateLimit *rl, RateVm *vm, usec_t now) {
        const TokenBucket *h = &rl->host;

        if (!vm->bucket.unlimited && bucket_available(&vm->bucket, now) < vm->bucket.burst)
                return false;
        if (h->unlimited || !vm->earning)
                return true;
        share_refill(h, vm, MAX(ratelimit_asking(rl, now), 1U), now);
        return vm->share >= share_cap(h, MAX(rl->n_asking, 1U));
}

static void bucket_refund(TokenBucket *b, uint64_t n) {
        if (!b->unlimited)
                b->tokens = MIN(b->burst, b->tokens + n);
}

void ratelimit_refund(RateLimit *rl, RateVm *vm, uint64_t n) {
        bucket_refund(&vm->bucket, n);
        if (!rl->host.unlimited) {
                bucket_refund(&rl->host, n);
                vm->share = MIN(vm->share + n, share_cap(&rl->host, MAX(rl->n_asking, 1U)));
        }
}
