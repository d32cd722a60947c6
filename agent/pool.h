/* SPDX-License-Identifier: MIT */
#pragma once

/* The kernel's entropy pool, behind a small interface: the agent always
 * feeds the running kernel, and unit tests substitute a fake one (ready
 * after N credited bits, never ready, ...). */

#include <stddef.h>

typedef struct Pool Pool;

typedef struct PoolOps {
        /* >0 when the CRNG is ready (getrandom() would not block), 0 if
         * not, <0 on error. */
        int (*is_ready)(Pool *p);
        /* Mixes n bytes in and credits credit_bits of entropy for them.
         * -EPERM when crediting needs privileges we lack. */
        int (*add)(Pool *p, const void *buf, size_t n, unsigned credit_bits);
        /* Blocks until the CRNG is ready; NULL where there is no such
         * thing (then the "kernel" source is unavailable). */
        int (*wait_ready)(Pool *p);
        /* Makes the CRNG take its next key from the input pool now, with
         * what was just mixed in (RNDRESEEDCRNG, CAP_SYS_ADMIN): after a
         * VM fork.  -ENODATA while the CRNG is not ready. */
        int (*reseed)(Pool *p);
} PoolOps;

struct Pool {
        const PoolOps *ops;
};

/* The running kernel: getrandom(GRND_NONBLOCK) for readiness,
 * RNDADDENTROPY on /dev/random to credit (CAP_SYS_ADMIN), a plain write
 * to mix without credit (no privilege needed), RNDRESEEDCRNG to reseed
 * (Linux 4.17+; CAP_SYS_ADMIN). */
Pool *pool_kernel(void);
