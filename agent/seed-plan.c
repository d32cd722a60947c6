/* SPDX-License-Identifier: MIT */
#include "seed-plan.h"

/* Until when s holds later sources back: the end of its slice, or of a
 * slice after its last progress.  0 when it does not. */
static usec_t progress_end(const SeedPlanSource *s) {
        usec_t end;

        if (!s->active || s->turn == USEC_INFINITY)
                return 0;
        end = s->turn + SEED_SLICE_USEC;
        if (s->last_credit != USEC_INFINITY)
                end = MAX(end, s->last_credit + SEED_SLICE_USEC);
        return end;
}

/* When s, whose turn has begun, takes its next step; USEC_INFINITY for
 * never. */
static usec_t next_step(const SeedPlanSource *s, usec_t now) {
        if (!s->active || s->turn == USEC_INFINITY)
                return USEC_INFINITY;
        if (s->last_step == USEC_INFINITY)
                return now;
        if (s->once)
                return USEC_INFINITY;
        switch (s->last) {
        case SEED_STEP_CREDITED:
                /* More may be there right away; but a tick's pause after
                 * a full burst, so the loop sleeps and asks the pool. */
                return s->burst >= SEED_BURST_MAX ? s->last_step + SEED_TICK_USEC : now;
        case SEED_STEP_MIXED:
                /* Bytes that count for nothing: a tick apart during its
                 * slice, a slice apart after, so that a source that only
                 * mixes bytes in costs neither CPU nor the device's time. */
                return s->last_step + (progress_end(s) > now ? SEED_TICK_USEC : SEED_SLICE_USEC);
        default:
                /* Nothing now: asking again costs one non-blocking read,
                 * and a device that wakes up is heard within a tick. */
                return s->last_step + SEED_TICK_USEC;
        }
}

void seed_plan(const SeedPlanSource *s, unsigned n, usec_t now, SeedPlan *ret) {
        SeedPlan p = { .begin = -1, .wait = SEED_TICK_USEC };
        usec_t held = 0, next = USEC_INFINITY;
        int waiting = -1;

        n = MIN(n, SEED_PLAN_SOURCES_MAX);
        for (unsigned i = 0; i < n; i++) {
                usec_t end = progress_end(&s[i]);

                if (end > now)
                        held = MAX(held, end);
                if (waiting < 0 && s[i].active && s[i].turn == USEC_INFINITY)
                        waiting = (int) i;
        }

        /* Nobody holds a turn that still counts: the next source's begins. */
        if (waiting >= 0 && held == 0)
                p.begin = waiting;

        for (unsigned i = 0; i < n; i++) {
                usec_t t = (int) i == p.begin ? now : next_step(&s[i], now);

                if (t <= now)
                        p.step |= 1U << i;
                else
                        next = MIN(next, t);
        }

        if (p.step == 0) {
                /* Wake for the next step or the next turn, and at least
                 * every tick to ask the pool. */
                if (next != USEC_INFINITY)
                        p.wait = MIN(p.wait, next - now);
                if (waiting >= 0)
                        p.wait = MIN(p.wait, held - now);
        } else
                p.wait = 0;

        *ret = p;
}

unsigned seed_plan_burst(unsigned burst, SeedStep what) {
        if (what != SEED_STEP_CREDITED)
                return 0;
        return burst >= SEED_BURST_MAX ? 1 : burst + 1;
}
