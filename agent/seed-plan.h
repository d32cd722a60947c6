/* SPDX-License-Identifier: MIT */
#pragma once

/* The seeding loop's turn-taking, decided from what each source's steps
 * gave and when: which source starts its turn, which sources take a step
 * now, and how long the loop sleeps when none does.  No I/O and no clock
 * here, so every case is a row in a table test.
 *
 * Progress is credit, not bytes: bytes that earn nothing are still mixed
 * in, but they neither keep a later source from its turn nor keep the
 * loop from sleeping. */

#include <stdbool.h>

#include "macro.h"

/* The loop asks the pool whether it is ready at least this often, and
 * steps a source that made no progress at most this often. */
#define SEED_TICK_USEC (10 * USEC_PER_MSEC)
/* A source's slice: for this long after its turn begins, and after each
 * step that earned credit, a source keeps later ones from their turn.
 * The kernel's jitter seeding costs a second of CPU that a working
 * virtio device makes unnecessary, so it waits for the devices before
 * it; but only as long as they credit.  Out of its slice, a source whose
 * bytes earn nothing is read once a slice. */
#define SEED_SLICE_USEC (200 * USEC_PER_MSEC)

#define SEED_PLAN_SOURCES_MAX 32U

/* A source whose steps earn credit steps again at once, but at most this
 * many times in a row; then it waits a tick.  A device that always has
 * bytes must not keep the loop from sleeping, nor from asking the pool,
 * for as long as it delivers. */
#define SEED_BURST_MAX 64U

/* What one step of a source gave. */
typedef enum SeedStep {
        SEED_STEP_NOTHING,  /* nothing now (or it started, failed or ended) */
        SEED_STEP_MIXED,    /* bytes that earn no credit: mixed in only */
        SEED_STEP_CREDITED, /* bytes that earned credit, or that are held back
                             * to earn it once the startup tests pass */
} SeedStep;

/* What the loop knows of one source, in the configured order. */
typedef struct SeedPlanSource {
        bool active;        /* opened, and not failed, ended or unavailable */
        bool once;          /* one step starts it, then it runs by itself (the kernel source) */
        usec_t turn;        /* when its turn began; USEC_INFINITY: not yet */
        usec_t last_step;   /* when it last took a step; USEC_INFINITY: never */
        SeedStep last;      /* what that step gave */
        usec_t last_credit; /* when a step last gave SEED_STEP_CREDITED; USEC_INFINITY: never */
        unsigned burst;     /* steps in a row that gave SEED_STEP_CREDITED, at once (seed_plan_burst()) */
} SeedPlanSource;

typedef struct SeedPlan {
        int begin;      /* the source whose turn begins now, or -1 */
        unsigned step;  /* bit i: source i takes a step now, in order */
        usec_t wait;    /* when step is 0: sleep this long, then plan again */
} SeedPlan;

/* Plans the round at now for the n (at most SEED_PLAN_SOURCES_MAX)
 * sources s.  Sources take their turns in order: the first active one
 * at once, each next one when no active source whose turn has begun is
 * within its slice or earned credit in the last slice.  A source whose
 * turn has begun keeps it.  It steps again at once after a step that
 * earned credit, a tick later after SEED_BURST_MAX of them; a slice later after one that gave bytes without credit,
 * once it no longer holds the next turn; a tick later otherwise.  wait
 * is at most a tick, and 0 exactly when something steps. */
void seed_plan(const SeedPlanSource *s, unsigned n, usec_t now, SeedPlan *ret);

/* A source's burst after a step that gave what, burst being the one
 * before: one more credited step at once, or the first of a new burst
 * after the tick that ended a full one; 0 for a step without credit. */
unsigned seed_plan_burst(unsigned burst, SeedStep what);
