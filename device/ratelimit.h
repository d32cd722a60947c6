/* SPDX-License-Identifier: MIT */
#pragma once

/* Rate limits without sleeping: per-VM token buckets inside an optional
 * host-wide budget that is shared fairly between the VMs that are asking.
 * This module owns budgets and fairness.  Callers ask how much they may
 * take now; what they cannot take waits in their queue (EGD) or their
 * ring (vhost-user) until the time ratelimit_take() said. */

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

/* A VM asking in the last RATE_ASKING_USEC counts as asking: a guest
 * with one request in flight is between requests most of the time. */
#define RATE_ASKING_USEC (200 * USEC_PER_MSEC)
/* The least a share holds, so a VM can always make a 64-byte step. */
#define RATE_SHARE_MIN 64

/* One VM's budget: its own bucket, and its share of the host's.  Every
 * connection of the VM (EGD and vhost-user alike) draws from it, so a VM
 * with eight connections gets what a VM with one gets. */
typedef struct RateVm {
        TokenBucket bucket;
        uint64_t share;      /* of the host budget, earned and not taken */
        usec_t share_last;   /* when it last earned */
        bool earning;        /* share and share_last mean something */
        usec_t last_ask;     /* when it last asked: the list's order */
        usec_t ask_until;    /* counted until then at least: told to wait */
        struct RateVm *ask_prev, *ask_next;
        bool asking;         /* in the host's list of asking VMs */
} RateVm;

/* The host-wide budget and the VMs asking for it. */
typedef struct RateLimit {
        TokenBucket host;
        RateVm *ask_oldest, *ask_newest;
        unsigned n_asking;
} RateLimit;

/* Buckets as bucket_init() makes them: 0 bytes is no limit. */
void ratelimit_init(RateLimit *rl, uint64_t bytes_per_period, usec_t period, uint64_t burst, usec_t now);
void rate_vm_init(RateVm *vm, uint64_t bytes_per_period, usec_t period, uint64_t burst, usec_t now);
/* Before a VM's budget goes away. */
void rate_vm_unlink(RateLimit *rl, RateVm *vm);

/* How many VMs asked within RATE_ASKING_USEC of now.  Costs what expired
 * since the last call, not the number of VMs. */
unsigned ratelimit_asking(RateLimit *rl, usec_t now);

/* How much vm may take of want bytes now, and takes it: at most what its
 * own bucket holds, and with a host budget, at most its share of it.
 * The host budget is shared between VMs, not connections, and without
 * rounds: each VM asking earns host rate / VMs asking into a share of its
 * own (up to host burst / VMs asking), so none can starve another however
 * often it asks.  A VM its own bucket holds back is not counted; one
 * waiting for its share is, until it asks again; what the host bucket
 * holds beyond half its burst any VM may borrow (what nobody used).  0 when nothing may be taken now; *ret_wait then says
 * how long until a step (64 bytes, or want if less; a full bucket if it
 * holds less) may be. */
uint64_t ratelimit_take(RateLimit *rl, RateVm *vm, uint64_t want, usec_t now, usec_t *ret_wait);

/* Gives back n bytes taken and not served (a source had less). */
void ratelimit_refund(RateLimit *rl, RateVm *vm, uint64_t n);

/* A budget no different from a new one: its bucket full and its share
 * at its cap.  Only such a budget may be forgotten, or connecting anew
 * would buy a fresh burst. */
bool rate_vm_idle(RateLimit *rl, RateVm *vm, usec_t now);
