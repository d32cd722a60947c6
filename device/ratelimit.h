/* SPDX-License-Identifier: MIT */
#pragma once

/* Rate limits without sleeping: per-VM token buckets inside an optional
 * host-wide budget that is shared fairly between the VMs that are asking.
 * Callers ask how much they may take now; what they cannot take waits in
 * their queue (EGD) or their ring (vhost-user) until a timer the caller
 * sets from ratelimit_wait() fires. */

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

typedef struct TokenBucket {
        bool unlimited;
        uint64_t bytes_per_period;
        usec_t period;
        uint64_t burst;   /* most tokens it can hold */
        uint64_t tokens;  /* whole bytes */
        uint64_t frac;    /* sub-byte remainder, in bytes*usec units */
        usec_t last;      /* when tokens was last brought up to date */
} TokenBucket;

/* bytes_per_period == 0 (or period == 0) means unlimited.  Starts full
 * (a VM's first-boot burst is what it needs most).  burst 0 means one
 * period's worth. */
void bucket_init(TokenBucket *b, uint64_t bytes_per_period, usec_t period, uint64_t burst, usec_t now);
/* Tokens available at now (refills first).  UINT64_MAX when unlimited. */
uint64_t bucket_available(TokenBucket *b, usec_t now);
/* Takes n tokens, at most what is there; ask bucket_available() at the
 * same now first, so that they are up to date. */
void bucket_consume(TokenBucket *b, uint64_t n);
/* Time from now until n tokens (at most burst) are available: the
 * smallest wait after which bucket_available() says so, 0 if it already
 * does, USEC_INFINITY if it does not fit. */
usec_t bucket_wait(TokenBucket *b, uint64_t n, usec_t now);

/* The host-wide budget and the fair share of it. */
typedef struct RateLimit {
        TokenBucket host;
} RateLimit;

/* How much a VM with bucket vm may take now of want bytes, when asking
 * VMs (including this one) compete for the host budget: at most
 * host-available / asking, rounded up, so every asking VM gets its turn
 * and none can starve another.  Consumes from both buckets.  asking 0
 * counts as 1; with an unlimited host only the VM's own bucket limits it.
 * The share is of what the host has now, so it is fair only when callers
 * serve in rounds: each VM takes once per round, asking counts the VMs
 * not yet served in this round (this one included, so the last takes
 * what is left), the VMs whose own bucket allows least go first (what
 * they leave is then split among the rest), and the order of the others
 * rotates between rounds.  A VM that takes again in the same round gets
 * a share of the remainder again: repeated, that drains the host. */
uint64_t ratelimit_take(RateLimit *rl, TokenBucket *vm, uint64_t want, unsigned asking, usec_t now);

/* When to try again for a VM that got less than it wanted: the later of
 * its own bucket and the host budget having min_bytes. */
usec_t ratelimit_wait(RateLimit *rl, TokenBucket *vm, uint64_t min_bytes, usec_t now);
