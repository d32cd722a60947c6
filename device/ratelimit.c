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

/* The share is rounded up: rounded down, it is 0 for everyone whenever
 * the host holds fewer bytes than there are askers, while ratelimit_wait()
 * says the bytes are there, and the caller would spin.  The share is not
 * a reservation: a VM that takes less (its own bucket is low, or it wants
 * little) leaves the rest in the host bucket for the others.  The rounds
 * that make this fair are the caller's; ratelimit.h says how. */
uint64_t ratelimit_take(RateLimit *rl, TokenBucket *vm, uint64_t want, unsigned asking, usec_t now) {
        uint64_t got;

        assert(rl);
        assert(vm);

        /* The caller may not have counted this VM yet; it is asking. */
        if (asking == 0)
                asking = 1;

        got = MIN(want, bucket_available(vm, now));

        if (!rl->host.unlimited) {
                uint64_t host = bucket_available(&rl->host, now);
                uint64_t share = host / asking + (host % asking != 0);

                got = MIN(got, share);
        }

        bucket_consume(vm, got);
        bucket_consume(&rl->host, got);
        return got;
}

usec_t ratelimit_wait(RateLimit *rl, TokenBucket *vm, uint64_t min_bytes, usec_t now) {
        assert(rl);
        assert(vm);

        return MAX(bucket_wait(vm, min_bytes, now), bucket_wait(&rl->host, min_bytes, now));
}
