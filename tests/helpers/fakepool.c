/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <time.h>

#include "fakepool.h"

static int fake_is_ready(Pool *pool) {
        FakePool *p = (FakePool *) pool;

        return p->ready_at_start || atomic_load(&p->jitter_ready) ||
               (p->ready_after_bits != FAKE_POOL_NEVER && p->credited_bits >= p->ready_after_bits);
}

static int fake_add(Pool *pool, const void *buf, size_t n, unsigned credit_bits) {
        FakePool *p = (FakePool *) pool;

        if (credit_bits > 0 && p->add_error)
                return p->add_error;
        p->adds++;
        p->mixed_bytes += n;
        p->credited_bits += credit_bits;
        return 0;
}

static int fake_wait_ready(Pool *pool) {
        FakePool *p = (FakePool *) pool;
        struct timespec ts = { .tv_sec = p->wait_ms / 1000, .tv_nsec = (long) (p->wait_ms % 1000) * 1000000L };

        (void) nanosleep(&ts, NULL);
        atomic_store(&p->jitter_ready, true);
        return 0;
}

static int fake_reseed(Pool *pool) {
        FakePool *p = (FakePool *) pool;

        if (!fake_is_ready(pool))
                return -ENODATA;
        p->reseeds++;
        p->credited_at_reseed = p->credited_bits;
        return 0;
}

static const PoolOps fake_ops = {
        .is_ready = fake_is_ready,
        .add = fake_add,
        .wait_ready = fake_wait_ready,
        .reseed = fake_reseed,
};

static const PoolOps fake_ops_nowait = {
        .is_ready = fake_is_ready,
        .add = fake_add,
        .reseed = fake_reseed,
};

void fake_pool_init(FakePool *p, uint64_t ready_after_bits) {
        *p = (FakePool) { .ready_after_bits = ready_after_bits };
        p->pool.ops = &fake_ops_nowait;
}

void fake_pool_enable_wait(FakePool *p, unsigned wait_ms) {
        p->wait_ms = wait_ms;
        p->pool.ops = &fake_ops;
}
