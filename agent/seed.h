/* SPDX-License-Identifier: MIT */
#pragma once

/* The gate: get entropy into the kernel pool until the CRNG is ready or
 * the deadline passes, and account for every byte. */

#include <stdint.h>
#include <sys/types.h>

#include "agent-config.h"
#include "detect.h"
#include "health.h"
#include "pool.h"

typedef enum SourceStatus {
        SOURCE_NOT_TRIED,   /* the pool was ready before its turn */
        SOURCE_UNAVAILABLE, /* no device, no RDSEED, ... */
        SOURCE_USED,        /* delivered bytes that went into the pool */
        SOURCE_FAILED,      /* failed a health test or a read: dropped */
        SOURCE_ENDED,       /* the device stopped delivering (end of file) */
        SOURCE_NO_DATA,     /* tried, but it had nothing to give before the end */
        _SOURCE_STATUS_MAX,
} SourceStatus;

typedef struct SourceReport {
        SourceKind kind;
        SourceStatus status;
        char detail[160];       /* why unavailable or failed; which device */
        uint64_t bytes;         /* read from the source */
        uint64_t mixed_bytes;   /* of those, given to the pool */
        uint64_t credited_bits; /* credited to the pool for them */
        unsigned quality;       /* per 1024 bits, as configured */
        double min_entropy;
        HealthResult health;
        unsigned rct_cutoff, apt_cutoff;
        usec_t wait_usec;       /* kernel: time blocked in getrandom() */
        bool kernel_credit_off; /* failed: we set the kernel's rng_quality to 0 */
} SourceReport;

typedef struct SeedOutcome {
        bool ready_at_start;    /* before the agent did anything */
        bool ready_before;      /* when seeding began, after device setup */
        bool ready_after;
        bool timed_out;
        bool initial_seed;      /* ready already: a sample was mixed in */
        usec_t elapsed_usec;    /* from the agent's start to return */
        usec_t ready_usec;      /* from the agent's start to ready; USEC_INFINITY if never */
        usec_t ready_boottime_usec; /* since the kernel booted, at ready; USEC_INFINITY if never */
        uint64_t credited_bits; /* all sources */
        bool reseeded;          /* reseed_bits: the CRNG was reseeded after them */
        unsigned n_sources;
        SourceReport sources[_SOURCE_KIND_MAX];
} SeedOutcome;

typedef struct SeedContext {
        const AgentConfig *config;
        const char *root;
        Pool *pool;
        const VirtioRng *virtio;
        /* The cpu source; NULL means RDSEED.  Returns bytes or -errno. */
        ssize_t (*cpu_read)(void *buf, size_t n);
        /* Progress lines once a second while waiting (tests turn it off). */
        bool progress;
        /* Never credit: the pool is the running kernel's but the tree is
         * not (--root), so nothing read from it may count. */
        bool no_credit;
        /* Let a /dev/hwrng that is not the kernel's character device earn
         * credit: only for tests with a fake pool. */
        bool credit_files;
        /* CLOCK_MONOTONIC at the agent's start; 0 means now. */
        usec_t start_usec;
        /* Readiness the caller saw at its start, before device setup
         * (loading virtio_rng alone makes kernels that credit it ready);
         * <0: not known, take it from when seeding begins. */
        int ready_at_start;
        /* After a VM fork the CRNG is ready, and its state is every
         * clone's: >0 means the gate is not passed before the sources
         * credited this many bits (those that earn no credit: gave this
         * many bits' worth of bytes), ready or not, and the CRNG is then
         * reseeded
         * with them (Pool.reseed), so that its next output owes nothing
         * to the state the clones share.  The kernel source cannot help
         * a pool that is ready, and is not started. */
        uint64_t reseed_bits;
} SeedContext;

typedef enum SeedResult {
        SEED_RESULT_READY,
        SEED_RESULT_TIMEOUT,   /* not ready at the deadline, on-timeout: fail */
        SEED_RESULT_CONTINUED, /* not ready at the deadline, on-timeout: continue */
        SEED_RESULT_DENIED,    /* the kernel refused our credit: not root */
        SEED_RESULT_ERROR,
        _SEED_RESULT_MAX,
} SeedResult;

const char *seed_result_to_string(SeedResult r);

/* What seed_run()'s return means under the configured policy. */
SeedResult seed_result_for(int r, const AgentConfig *c);

/* Runs the gate.  Returns 0 when the CRNG is ready (and, with
 * reseed_bits, reseeded with them), -ETIMEDOUT when the deadline passed
 * first, -ENODATA when with reseed_bits no source is left that could give
 * them, -EPERM when the kernel refused our credit (not root), other
 * -errno.  With reseed_bits the CRNG is reseeded with whatever was mixed
 * in, however it ends (ret->reseeded).  ret is filled in every case. */
int seed_run(const SeedContext *ctx, SeedOutcome *ret);

const char *source_status_to_string(SourceStatus s);
