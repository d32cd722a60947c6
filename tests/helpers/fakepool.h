/* SPDX-License-Identifier: MIT */
#pragma once

/* A kernel pool for tests: it becomes ready after a given number of
 * credited bits (or never), counts what it is given, and can refuse
 * credit as an unprivileged caller would see. */

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "pool.h"

#define FAKE_POOL_NEVER UINT64_MAX

typedef struct FakePool {
        Pool pool;
        uint64_t ready_after_bits; /* FAKE_POOL_NEVER: never by credit */
        bool ready_at_start;
        int add_error;             /* returned by add() for credited input */
        unsigned wait_ms;          /* wait_ready() makes it ready after this */

        uint64_t credited_bits;
        uint64_t mixed_bytes;
        uint64_t adds;
        atomic_bool jitter_ready;
        unsigned reseeds;
        uint64_t credited_at_reseed; /* credited_bits at the last reseed */
} FakePool;

/* Without wait_ready(): the "kernel" source is unavailable. */
void fake_pool_init(FakePool *p, uint64_t ready_after_bits);
/* Offers wait_ready(), which makes the pool ready after wait_ms, as the
 * kernel's own jitter seeding does. */
void fake_pool_enable_wait(FakePool *p, unsigned wait_ms);
