/* SPDX-License-Identifier: MIT */
/* The seeding loop against a fake pool and fake /dev/hwrng files: it
 * stops when the pool is ready, gives up at the deadline under either
 * policy, and never credits a source that fails its health tests. */
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "fakepool.h"
#include "fakeroot.h"
#include "fileio.h"
#include "seed-plan.h"
#include "seed.h"
#include "startup-test.h"
#include "testmain.h"

static char *root;
static AgentConfig c;
static VirtioRng v;
static FakePool pool;
/* What the CPU source read, and whether the pool had got any of it
 * before a startup test's worth was read. */
static size_t cpu_read_bytes;
static bool cpu_mixed_early;


static void setup(void) {
        root = fakeroot_new();
        agent_config_init(&c);
        v = (VirtioRng) {
                .found = true, .bound = true, .hwrng_node = true, .kernel_quality = 0,
        };
        strcpy(v.device, "virtio0");
        strcpy(v.transport, "pci");
        strcpy(v.driver, "virtio_rng");
        strcpy(v.hwrng, "virtio_rng.0");
        strcpy(v.current, "virtio_rng.0");
        cpu_read_bytes = 0;
        cpu_mixed_early = false;
}

static void teardown(void) {
        fakeroot_free(root);
        root = NULL;
}

static void hwrng_random(size_t n) {
        uint8_t *b = malloc(n);
        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(getrandom(b, n, 0), (ssize_t) n);
        fakeroot_write_bytes(root, "/dev/hwrng", b, n);
        free(b);
}

static void hwrng_stuck(size_t n) {
        uint8_t *b = malloc(n);
        ck_assert_ptr_nonnull(b);
        memset(b, 0x42, n);
        fakeroot_write_bytes(root, "/dev/hwrng", b, n);
        free(b);
}

static ssize_t cpu_good(void *buf, size_t n) {
        if (cpu_read_bytes < STARTUP_TEST_SAMPLES_MIN && pool.mixed_bytes > 0)
                cpu_mixed_early = true;
        cpu_read_bytes += n;
        return getrandom(buf, n, 0);
}

static int run(SeedOutcome *o) {
        SeedContext ctx = { .config = &c, .root = root, .pool = &pool.pool, .virtio = &v, .cpu_read = cpu_good,
                            .ready_at_start = -1, .credit_files = true };
        return seed_run(&ctx, o);
}

static void sources(unsigned n, const SourceKind *k) {
        c.sources.n = n;
        for (unsigned i = 0; i < n; i++)
                c.sources.items[i] = (int) k[i];
}

/* What every outcome must satisfy: the pool got exactly what the
 * sources say they gave it, credited at their quality. */
static void check_accounting(const SeedOutcome *o) {
        uint64_t credited = 0, mixed = 0;

        for (unsigned i = 0; i < o->n_sources; i++) {
                const SourceReport *s = &o->sources[i];
                credited += s->credited_bits;
                mixed += s->mixed_bytes;
                ck_assert_uint_le(s->mixed_bytes, s->bytes);
                /* Only what reached the pool earns credit, at its quality;
                 * a failing chunk never reaches it. */
                if (s->kind != SOURCE_KERNEL && s->credited_bits > 0)
                        ck_assert_uint_eq(s->credited_bits, s->mixed_bytes * 8 * s->quality / 1024);
        }
        ck_assert_uint_eq(credited, o->credited_bits);
        ck_assert_uint_eq(credited, pool.credited_bits);
        ck_assert_uint_eq(mixed, pool.mixed_bytes);
}

START_TEST(test_ready_after_bits) {
        SeedOutcome o;

        hwrng_random(4096);
        fake_pool_init(&pool, 256);
        /* The kernel source is there but must not be started. */
        fake_pool_enable_wait(&pool, 10000);
        ck_assert_int_eq(run(&o), 0);
        ck_assert(!o.ready_before);
        ck_assert(o.ready_after);
        ck_assert(!o.timed_out);
        ck_assert_uint_ge(o.credited_bits, 256);
        ck_assert_uint_ne(o.ready_usec, USEC_INFINITY);
        ck_assert_int_eq(o.sources[0].status, SOURCE_USED);
        ck_assert_int_eq(o.sources[0].health, HEALTH_OK);
        /* Ready once the startup test passed: its 1024 bytes, held back
         * until then, earn full credit at once. */
        ck_assert_uint_eq(o.sources[0].bytes, STARTUP_TEST_SAMPLES_MIN);
        ck_assert_uint_eq(o.sources[0].credited_bits, STARTUP_TEST_SAMPLES_MIN * 8);
        /* The kernel source was never needed. */
        ck_assert_int_eq(o.sources[1].status, SOURCE_NOT_TRIED);
        check_accounting(&o);
        ck_assert_int_eq(seed_result_for(0, &c), SEED_RESULT_READY);
}
END_TEST

START_TEST(test_quality_scales_credit) {
        SeedOutcome o;

        /* A quarter credit: the startup test's 1024 bytes earn 2048 bits,
         * each 64-byte chunk after it 128; 3000 bits take 8 more chunks. */
        hwrng_random(4096);
        c.src[SOURCE_VIRTIO].quality = 256;
        fake_pool_init(&pool, 3000);
        ck_assert_int_eq(run(&o), 0);
        ck_assert_uint_eq(o.sources[0].credited_bits, 3072);
        ck_assert_uint_eq(o.sources[0].mixed_bytes, 1536);
        check_accounting(&o);
}
END_TEST

START_TEST(test_timeout_policies) {
        SeedOutcome o;

        hwrng_random(4096);
        fake_pool_init(&pool, FAKE_POOL_NEVER);
        c.timeout = 300 * USEC_PER_MSEC;
        ck_assert_int_eq(run(&o), -ETIMEDOUT);
        ck_assert(o.timed_out);
        ck_assert(!o.ready_after);
        ck_assert_uint_eq(o.ready_usec, USEC_INFINITY);
        ck_assert_uint_ge(o.elapsed_usec, 300 * USEC_PER_MSEC);
        /* The 4 KiB file was read to its end and all of it credited. */
        ck_assert_int_eq(o.sources[0].status, SOURCE_ENDED);
        ck_assert_uint_eq(o.sources[0].mixed_bytes, 4096);
        check_accounting(&o);

        c.on_timeout = ON_TIMEOUT_FAIL;
        ck_assert_int_eq(seed_result_for(-ETIMEDOUT, &c), SEED_RESULT_TIMEOUT);
        c.on_timeout = ON_TIMEOUT_CONTINUE;
        ck_assert_int_eq(seed_result_for(-ETIMEDOUT, &c), SEED_RESULT_CONTINUED);
        ck_assert_int_eq(seed_result_for(-EPERM, &c), SEED_RESULT_DENIED);
}
END_TEST

START_TEST(test_timeout_zero) {
        SeedOutcome o;

        fake_pool_init(&pool, FAKE_POOL_NEVER);
        v.found = false;
        c.timeout = 0;
        ck_assert_int_eq(run(&o), -ETIMEDOUT);
        ck_assert_uint_lt(o.elapsed_usec, 100 * USEC_PER_MSEC);
        ck_assert_int_eq(o.sources[0].status, SOURCE_UNAVAILABLE);
        ck_assert_str_eq(o.sources[0].detail, "no virtio-rng device");
}
END_TEST

START_TEST(test_stuck_source_never_credited) {
        static const SourceKind k[] = { SOURCE_VIRTIO, SOURCE_CPU };
        SeedOutcome o;

        char *q;

        hwrng_stuck(4096);
        fakeroot_write(root, "/sys/class/misc/hw_random/rng_quality", "1000\n");
        sources(2, k);
        fake_pool_init(&pool, 256);
        ck_assert_int_eq(run(&o), 0);
        ck_assert_int_eq(o.sources[0].status, SOURCE_FAILED);
        ck_assert_int_eq(o.sources[0].health, HEALTH_FAIL_RCT);
        ck_assert_uint_eq(o.sources[0].mixed_bytes, 0);
        ck_assert_uint_eq(o.sources[0].credited_bits, 0);
        ck_assert_ptr_nonnull(strstr(o.sources[0].detail, "repetition-count"));
        /* The kernel no longer credits the failed device either. */
        ck_assert(o.sources[0].kernel_credit_off);
        q = fakeroot_read(root, "/sys/class/misc/hw_random/rng_quality");
        ck_assert_str_eq(q, "0");
        free(q);
        /* RDSEED made it ready instead. */
        ck_assert_int_eq(o.sources[1].status, SOURCE_USED);
        ck_assert_uint_ge(o.sources[1].credited_bits, 256);
        check_accounting(&o);
}
END_TEST

START_TEST(test_source_goes_bad) {
        uint8_t b[4096];
        SeedOutcome o;

        /* 1 KiB of good bytes, then the device sticks: what came before
         * keeps its credit, the failing chunk and all after it none. */
        ck_assert_int_eq(getrandom(b, 1024, 0), 1024);
        memset(b + 1024, 0x42, sizeof b - 1024);
        fakeroot_write_bytes(root, "/dev/hwrng", b, sizeof b);
        c.timeout = 300 * USEC_PER_MSEC;
        fake_pool_init(&pool, FAKE_POOL_NEVER);
        ck_assert_int_eq(run(&o), -ETIMEDOUT);
        ck_assert_int_eq(o.sources[0].status, SOURCE_FAILED);
        ck_assert_int_eq(o.sources[0].health, HEALTH_FAIL_RCT);
        ck_assert_uint_eq(o.sources[0].mixed_bytes, 1024);
        ck_assert_uint_eq(o.sources[0].credited_bits, 1024 * 8);
        ck_assert_uint_eq(o.sources[0].bytes, 1024 + 64);
        check_accounting(&o);
}
END_TEST

START_TEST(test_biased_source_never_credited) {
        uint8_t b[4096];
        SeedOutcome o;

        /* 90% one value, never more than nine in a row: only the
         * adaptive proportion test can see it. */
        for (size_t i = 0; i < sizeof b; i++)
                b[i] = i % 10 == 9 ? (uint8_t) (i / 10) : 'A';
        fakeroot_write_bytes(root, "/dev/hwrng", b, sizeof b);
        c.src[SOURCE_VIRTIO].min_entropy = 1;
        c.timeout = 300 * USEC_PER_MSEC;
        fake_pool_init(&pool, FAKE_POOL_NEVER);
        ck_assert_int_eq(run(&o), -ETIMEDOUT);
        ck_assert_int_eq(o.sources[0].status, SOURCE_FAILED);
        ck_assert_int_eq(o.sources[0].health, HEALTH_FAIL_APT);
        ck_assert_uint_eq(o.sources[0].credited_bits, 0);
        ck_assert_uint_eq(pool.mixed_bytes, 0);
        check_accounting(&o);
}
END_TEST

START_TEST(test_startup_hold_back) {
        SeedOutcome o;

        /* At H = 1 (alpha 2^-30) the cutoffs, 31 and 325, are below SP
         * 800-90B's 1024 startup samples, as the device's are: nothing is
         * credited before 1024 bytes passed, so 8 bits take sixteen
         * 64-byte chunks, given to the pool at once (in two 512-byte
         * pieces). */
        hwrng_random(4096);
        c.src[SOURCE_VIRTIO].min_entropy = 1;
        fake_pool_init(&pool, 8);
        ck_assert_int_eq(run(&o), 0);
        ck_assert_uint_eq(o.sources[0].apt_cutoff, 325);
        ck_assert_uint_eq(o.sources[0].bytes, 1024);
        ck_assert_uint_eq(o.sources[0].mixed_bytes, 1024);
        ck_assert_uint_eq(o.sources[0].credited_bits, 8192);
        ck_assert_uint_eq(pool.adds, 2);
        check_accounting(&o);

        /* At H = 0.01 the RCT needs 3001 identical bytes to fail: that
         * many are held back, so a stuck source never earns credit. */
        hwrng_random(4096);
        c.src[SOURCE_VIRTIO].min_entropy = 0.01;
        fake_pool_init(&pool, 8);
        ck_assert_int_eq(run(&o), 0);
        ck_assert_uint_eq(o.sources[0].rct_cutoff, 3001);
        ck_assert_uint_eq(o.sources[0].bytes, 3008); /* 47 chunks */
        ck_assert_uint_eq(o.sources[0].mixed_bytes, 3008);
        ck_assert_uint_eq(o.sources[0].credited_bits, 3008 * 8);
        check_accounting(&o);
}
END_TEST

START_TEST(test_already_ready) {
        SeedOutcome o;

        hwrng_random(4096);
        fake_pool_init(&pool, 256);
        pool.ready_at_start = true;
        ck_assert_int_eq(run(&o), 0);
        ck_assert(o.ready_at_start && o.ready_before && o.ready_after);
        ck_assert(o.initial_seed);
        ck_assert_uint_eq(o.sources[0].mixed_bytes, 64);
        ck_assert_uint_eq(o.credited_bits, 0);
        ck_assert_uint_eq(pool.credited_bits, 0);
        ck_assert_uint_eq(pool.mixed_bytes, 64);
        check_accounting(&o);

        /* A stuck device's sample is not even mixed in. */
        hwrng_stuck(4096);
        fake_pool_init(&pool, 256);
        pool.ready_at_start = true;
        ck_assert_int_eq(run(&o), 0);
        ck_assert(!o.initial_seed);
        ck_assert_int_eq(o.sources[0].status, SOURCE_FAILED);
        ck_assert_uint_eq(pool.mixed_bytes, 0);
}
END_TEST

static int run_reseed(SeedOutcome *o, uint64_t bits) {
        SeedContext ctx = { .config = &c, .root = root, .pool = &pool.pool, .virtio = &v, .cpu_read = cpu_good,
                            .ready_at_start = -1, .credit_files = true, .reseed_bits = bits };
        return seed_run(&ctx, o);
}

/* After a VM fork: the pool is ready, yet the gate is passed only once
 * the device credited the bits asked for, and the CRNG is reseeded after
 * them, not before; the kernel source, which a ready pool cannot wait
 * for, is not started. */
START_TEST(test_reseed_after_fork) {
        SeedOutcome o;

        hwrng_random(8192);
        fake_pool_init(&pool, 256);
        fake_pool_enable_wait(&pool, 10000);
        pool.ready_at_start = true;
        ck_assert_int_eq(run_reseed(&o, 256), 0);
        ck_assert(o.ready_before && o.ready_after && !o.timed_out);
        ck_assert(!o.initial_seed);
        ck_assert(o.reseeded);
        ck_assert_uint_eq(pool.reseeds, 1);
        ck_assert_uint_ge(pool.credited_at_reseed, 256);
        ck_assert_uint_eq(pool.credited_at_reseed, pool.credited_bits);
        ck_assert_int_eq(o.sources[0].status, SOURCE_USED);
        ck_assert_int_eq(o.sources[1].status, SOURCE_NOT_TRIED);
        check_accounting(&o);
}
END_TEST

/* A device that fails its health tests gives nothing to reseed with: the
 * gate ends at once (no source left), and the CRNG is still reseeded,
 * with nothing credited. */
START_TEST(test_reseed_no_source) {
        SeedOutcome o;

        hwrng_stuck(8192);
        fake_pool_init(&pool, 256);
        pool.ready_at_start = true;
        c.timeout = 30 * USEC_PER_SEC;
        ck_assert_int_eq(run_reseed(&o, 256), -ENODATA);
        ck_assert(!o.timed_out);
        ck_assert_uint_lt(o.elapsed_usec, 10 * USEC_PER_SEC);
        ck_assert_int_eq(o.sources[0].status, SOURCE_FAILED);
        ck_assert_uint_eq(pool.credited_bits, 0);
        ck_assert_uint_eq(pool.reseeds, 1);
        check_accounting(&o);

        /* A source at quality 0 earns no credit: its bytes count, and
         * the reseed comes once it gave the bits' worth, not at the
         * deadline. */
        hwrng_random(1 << 20);
        fake_pool_init(&pool, 256);
        pool.ready_at_start = true;
        c.src[SOURCE_VIRTIO].quality = 0;
        c.timeout = 30 * USEC_PER_SEC;
        ck_assert_int_eq(run_reseed(&o, 256), 0);
        ck_assert(!o.timed_out);
        ck_assert_uint_lt(o.elapsed_usec, 10 * USEC_PER_SEC);
        ck_assert_uint_eq(pool.credited_bits, 0);
        ck_assert_uint_ge(pool.mixed_bytes, 256 / 8);
        ck_assert_uint_eq(pool.reseeds, 1);
        ck_assert(o.reseeded);
        check_accounting(&o);

        /* A device that ends at once: no source is left to wait for. */
        hwrng_random(0);
        fake_pool_init(&pool, 256);
        pool.ready_at_start = true;
        c.src[SOURCE_VIRTIO].quality = 1024;
        c.timeout = 300 * USEC_PER_MSEC;
        ck_assert_int_eq(run_reseed(&o, 256), -ENODATA);
        ck_assert_uint_eq(pool.reseeds, 1);
        check_accounting(&o);
}
END_TEST

START_TEST(test_kernel_source) {
        SeedOutcome o;

        /* No virtio device: the kernel's own seeding gets it ready. */
        v = (VirtioRng) {};
        fake_pool_init(&pool, FAKE_POOL_NEVER);
        fake_pool_enable_wait(&pool, 50);
        ck_assert_int_eq(run(&o), 0);
        ck_assert_int_eq(o.sources[0].status, SOURCE_UNAVAILABLE);
        ck_assert_int_eq(o.sources[1].status, SOURCE_USED);
        ck_assert_uint_eq(o.sources[1].credited_bits, 0);
        ck_assert_uint_ge(o.sources[1].wait_usec, 40 * USEC_PER_MSEC);
        ck_assert_uint_ge(o.ready_usec, 40 * USEC_PER_MSEC);
        check_accounting(&o);
}
END_TEST

START_TEST(test_permission_denied) {
        SeedOutcome o;

        hwrng_random(4096);
        fake_pool_init(&pool, 256);
        pool.add_error = -EPERM;
        ck_assert_int_eq(run(&o), -EPERM);
        ck_assert(!o.ready_after);
        ck_assert_uint_eq(pool.credited_bits, 0);
}
END_TEST

START_TEST(test_other_hwrng) {
        static const SourceKind k[] = { SOURCE_VIRTIO, SOURCE_HWRNG };
        SeedOutcome o;

        /* select: false left a TPM current; the hwrng source reads it at
         * its own quality, none by default, and virtio is unavailable. */
        hwrng_random(4096);
        strcpy(v.current, "tpm-rng-0");
        sources(2, k);
        c.timeout = 200 * USEC_PER_MSEC;
        fake_pool_init(&pool, 256);
        ck_assert_int_eq(run(&o), -ETIMEDOUT);
        ck_assert_int_eq(o.sources[0].status, SOURCE_UNAVAILABLE);
        /* Bytes that earn nothing are taken a chunk a tick, not as fast
         * as the device gives them: 200 ms do not reach the end of 4 KiB.
         * All that was read is mixed in. */
        ck_assert_int_eq(o.sources[1].status, SOURCE_USED);
        ck_assert_uint_gt(o.sources[1].bytes, 0);
        ck_assert_uint_lt(o.sources[1].bytes, 4096);
        ck_assert_uint_eq(o.sources[1].mixed_bytes, o.sources[1].bytes);
        ck_assert_uint_eq(o.sources[1].credited_bits, 0);
        check_accounting(&o);

        /* Vouched for at half credit: its startup test's 1024 bytes are
         * held back, then earn 4096 bits at once. */
        c.src[SOURCE_HWRNG].quality = 512;
        fake_pool_init(&pool, 256);
        ck_assert_int_eq(run(&o), 0);
        ck_assert_uint_eq(o.sources[1].credited_bits, 4096);
        check_accounting(&o);
}
END_TEST

START_TEST(test_silent_device) {
        char *fifo;
        int keep;
        SeedOutcome o;

        /* A device that never has data (a host that stopped serving):
         * the non-blocking reads must not hang past the deadline. */
        ck_assert_int_ge(asprintf(&fifo, "%s/dev/hwrng", root), 0);
        fakeroot_mkdir(root, "/dev");
        ck_assert_int_eq(mkfifo(fifo, 0600), 0);
        keep = open(fifo, O_RDWR | O_CLOEXEC);
        ck_assert_int_ge(keep, 0);
        c.timeout = 300 * USEC_PER_MSEC;
        fake_pool_init(&pool, FAKE_POOL_NEVER);
        ck_assert_int_eq(run(&o), -ETIMEDOUT);
        ck_assert_uint_lt(o.elapsed_usec, 2 * USEC_PER_SEC);
        ck_assert_int_eq(o.sources[0].status, SOURCE_NO_DATA);
        ck_assert_uint_eq(o.sources[0].bytes, 0);
        close(keep);
        free(fifo);
}
END_TEST

START_TEST(test_held_back_mixed_at_end) {
        SeedOutcome o;

        /* The device ends before the tests have seen enough samples to
         * give credit: its bytes are mixed in, uncredited. */
        hwrng_random(128);
        c.src[SOURCE_VIRTIO].min_entropy = 1;
        c.timeout = 200 * USEC_PER_MSEC;
        fake_pool_init(&pool, FAKE_POOL_NEVER);
        ck_assert_int_eq(run(&o), -ETIMEDOUT);
        ck_assert_int_eq(o.sources[0].status, SOURCE_ENDED);
        ck_assert_uint_eq(o.sources[0].mixed_bytes, 128);
        ck_assert_uint_eq(o.sources[0].credited_bits, 0);
        check_accounting(&o);
}
END_TEST

/* seed_plan() as a table.  Times are in ms; the shorthands are sources
 * as the loop sees them. */
#define MS(x) ((usec_t) (x) * USEC_PER_MSEC)
#define NEVER USEC_INFINITY
#define TICK SEED_TICK_USEC
#define SLICE_MS (SEED_SLICE_USEC / USEC_PER_MSEC)
/* Active, its turn not begun. */
#define WAITING { .active = true, .turn = NEVER, .last_step = NEVER, .last_credit = NEVER }
#define KERNEL_WAITING { .active = true, .once = true, .turn = NEVER, .last_step = NEVER, .last_credit = NEVER }
/* Unavailable, failed or ended. */
#define GONE { .turn = NEVER, .last_step = NEVER, .last_credit = NEVER }
/* Turn began at t; its last step, at l, gave bytes that earned nothing,
 * as every one before. */
#define MIXED(t, l) { .active = true, .turn = MS(t), .last_step = MS(l), .last = SEED_STEP_MIXED, .last_credit = NEVER }
/* The same, but the last step had nothing to give. */
#define IDLE(t, l) { .active = true, .turn = MS(t), .last_step = MS(l), .last_credit = NEVER }
/* Turn began at t; its last step, at l, earned credit. */
#define CREDITED(t, l) \
        { .active = true, .turn = MS(t), .last_step = MS(l), .last = SEED_STEP_CREDITED, .last_credit = MS(l) }
/* The same, its last step the nth in a row that earned credit at once. */
#define BURST(t, l, n) \
        { .active = true, .turn = MS(t), .last_step = MS(l), .last = SEED_STEP_CREDITED, .last_credit = MS(l), \
          .burst = (n) }
/* Turn began at t; its last step, at l, gave what; credit last at cr. */
#define EARNED(t, l, cr, what) \
        { .active = true, .turn = MS(t), .last_step = MS(l), .last = what, .last_credit = MS(cr) }
#define KERNEL_STARTED(t) { .active = true, .once = true, .turn = MS(t), .last_step = MS(t), .last_credit = NEVER }

static const struct {
        const char *what;
        unsigned n;
        SeedPlanSource src[3];
        usec_t now;
        int begin;
        unsigned step;
        usec_t wait;
} plan_rows[] = {
        /* Turns begin in order. */
        { "the first source begins at once", 2, { WAITING, KERNEL_WAITING }, 0, 0, 1, 0 },
        { "an unavailable first source: the next begins", 2, { GONE, KERNEL_WAITING }, 0, 1, 2, 0 },
        { "no source at all: ask the pool every tick", 2, { GONE, GONE }, MS(5), -1, 0, TICK },
        { "a source that failed holds nothing back", 2,
          { { .turn = 0, .last_step = MS(100), .last = SEED_STEP_CREDITED, .last_credit = MS(100) }, KERNEL_WAITING },
          MS(100), 1, 2, 0 },

        /* A source's slice. */
        { "in its slice, bytes without credit: a tick apart", 2, { MIXED(0, 0), KERNEL_WAITING }, MS(5), -1, 0, MS(5) },
        { "in its slice, a tick later: it steps", 2, { MIXED(0, 0), KERNEL_WAITING }, MS(10), -1, 1, 0 },
        { "its slice about to end: wake for the next turn", 2, { MIXED(0, 195), KERNEL_WAITING }, MS(196), -1, 0,
          MS(4) },
        /* The bug this loop once had: bytes without credit kept the
         * kernel source from ever starting, and the loop from sleeping. */
        { "its slice over, bytes without credit: the kernel's turn", 2, { MIXED(0, 195), KERNEL_WAITING }, MS(200), 1,
          2, 0 },
        { "its slice over, bytes without credit: a slice apart", 2, { MIXED(0, 200), KERNEL_STARTED(200) }, MS(300), -1,
          0, TICK },
        { "its slice over, bytes without credit: a slice later it steps", 2, { MIXED(0, 200), KERNEL_STARTED(200) },
          MS(400), -1, 1, 0 },
        { "its slice over, nothing to give: the kernel's turn", 2, { IDLE(0, 195), KERNEL_WAITING }, MS(200), 1, 2, 0 },
        { "nothing to give: a tick apart after its slice too", 2, { IDLE(0, 300), KERNEL_STARTED(200) }, MS(305), -1, 0,
          MS(5) },
        { "nothing to give, a tick later: it steps", 2, { IDLE(0, 300), KERNEL_STARTED(200) }, MS(310), -1, 1, 0 },

        /* Credit is progress. */
        { "its last step earned credit: again at once", 2, { CREDITED(0, 100), KERNEL_WAITING }, MS(100), -1, 1, 0 },
        { "a full burst of credit: a tick's pause", 2, { BURST(0, 100, SEED_BURST_MAX), KERNEL_WAITING }, MS(100), -1,
          0, TICK },
        { "a full burst of credit, a tick later: it steps", 2, { BURST(0, 100, SEED_BURST_MAX), KERNEL_WAITING },
          MS(110), -1, 1, 0 },
        { "a burst not yet full: again at once", 2, { BURST(0, 100, SEED_BURST_MAX - 1), KERNEL_WAITING }, MS(100),
          -1, 1, 0 },
        { "credit in the last slice holds the next turn", 2, { EARNED(0, 300, 250, SEED_STEP_NOTHING), KERNEL_WAITING },
          MS(305), -1, 0, MS(5) },
        { "credit in the last slice: a step a tick", 2, { EARNED(0, 300, 250, SEED_STEP_NOTHING), KERNEL_WAITING },
          MS(310), -1, 1, 0 },
        { "no credit for a slice: the next turn", 2, { EARNED(0, 445, 250, SEED_STEP_NOTHING), KERNEL_WAITING },
          MS(450), 1, 2, 0 },
        { "credit stopped, bytes without credit go on: the next turn", 2,
          { EARNED(0, 440, 250, SEED_STEP_MIXED), KERNEL_WAITING }, MS(450), 1, 2, 0 },

        /* The kernel source. */
        { "a started kernel source takes no more steps", 2, { GONE, KERNEL_STARTED(0) }, MS(1000), -1, 0, TICK },
        { "the kernel's slice holds a later source", 2, { KERNEL_STARTED(0), WAITING }, MS(100), -1, 0, TICK },
        { "the kernel's slice about to end", 2, { KERNEL_STARTED(0), WAITING }, MS(195), -1, 0, MS(5) },
        { "the kernel's slice over: the next turn", 2, { KERNEL_STARTED(0), WAITING }, MS(200), 1, 2, 0 },

        /* Turns once begun are kept; the order decides who is next. */
        { "an earlier source credits again: the later keeps its turn", 2, { CREDITED(0, 500), MIXED(300, 300) },
          MS(500), -1, 3, 0 },
        { "a later source's credit holds the third back", 3,
          { MIXED(0, 400), EARNED(200, 440, 400, SEED_STEP_NOTHING), KERNEL_WAITING }, MS(450), -1, 2, 0 },
        { "the first waiting source in order is next", 3, { MIXED(0, 400), WAITING, KERNEL_WAITING }, MS(410), 1, 2,
          0 },
};

/* A burst counts the credited steps in a row and starts again after the
 * pause a full one earns; anything but credit ends it. */
START_TEST(test_plan_burst) {
        ck_assert_uint_eq(seed_plan_burst(0, SEED_STEP_CREDITED), 1);
        ck_assert_uint_eq(seed_plan_burst(SEED_BURST_MAX - 1, SEED_STEP_CREDITED), SEED_BURST_MAX);
        ck_assert_uint_eq(seed_plan_burst(SEED_BURST_MAX, SEED_STEP_CREDITED), 1);
        ck_assert_uint_eq(seed_plan_burst(5, SEED_STEP_MIXED), 0);
        ck_assert_uint_eq(seed_plan_burst(5, SEED_STEP_NOTHING), 0);
}
END_TEST

START_TEST(test_plan_table) {
        SeedPlan p;

        seed_plan(plan_rows[_i].src, plan_rows[_i].n, plan_rows[_i].now, &p);
        ck_assert_msg(p.begin == plan_rows[_i].begin && p.step == plan_rows[_i].step && p.wait == plan_rows[_i].wait,
                      "%s: got begin %d, step %#x, wait %llu us; want %d, %#x, %llu us", plan_rows[_i].what, p.begin,
                      p.step, (unsigned long long) p.wait, plan_rows[_i].begin, plan_rows[_i].step,
                      (unsigned long long) plan_rows[_i].wait);
}
END_TEST

/* Over a grid of states of three sources: the loop either steps or
 * sleeps (at most a tick); a turn begins only for the first waiting
 * source; only sources whose turn has begun take steps, and one whose
 * last step earned credit always does. */
START_TEST(test_plan_invariants) {
        static const usec_t times[] = { NEVER, MS(0), MS(5), MS(150), MS(199), MS(200), MS(390), MS(400) };
        const usec_t now = MS(400);

        for (unsigned bits = 0; bits < 1u << 9; bits++)
                for (unsigned t = 0; t < ELEMENTSOF(times) * ELEMENTSOF(times); t++) {
                        SeedPlanSource s[3];
                        SeedPlan p;
                        int waiting = -1;

                        for (unsigned i = 0; i < 3; i++) {
                                bool begun = bits & (1u << (3 * i + 1));
                                usec_t last = begun ? times[(t + i) % ELEMENTSOF(times)] : NEVER;

                                s[i] = (SeedPlanSource) {
                                        .active = bits & (1u << (3 * i)),
                                        .once = i == 2,
                                        .turn = begun ? MS(0) : NEVER,
                                        .last_step = last,
                                        .last_credit = begun && (bits & (1u << (3 * i + 2))) ?
                                                               times[t / ELEMENTSOF(times)] :
                                                               NEVER,
                                };
                                if (s[i].last_credit != NEVER && (last == NEVER || s[i].last_credit > last))
                                        s[i].last_credit = last;
                                /* What the last step gave, consistent with
                                 * the times. */
                                if (last != NEVER)
                                        s[i].last = (SeedStep) ((bits + t + i) % 3);
                                if (s[i].last == SEED_STEP_CREDITED)
                                        s[i].last_credit = last;
                                if (waiting < 0 && s[i].active && s[i].turn == NEVER)
                                        waiting = (int) i;
                        }
                        seed_plan(s, 3, now, &p);

                        ck_assert_uint_le(p.wait, TICK);
                        ck_assert_msg((p.step == 0) == (p.wait > 0), "%#x/%u: step %#x, wait %llu", bits, t, p.step,
                                      (unsigned long long) p.wait);
                        ck_assert(p.begin == -1 || p.begin == waiting);
                        for (unsigned i = 0; i < 3; i++) {
                                if (p.step & (1u << i))
                                        ck_assert(s[i].active && (s[i].turn != NEVER || (int) i == p.begin));
                                /* Credit is followed up at once (a burst not
                                 * full: burst is 0 here). */
                                if (s[i].active && !s[i].once && s[i].last == SEED_STEP_CREDITED)
                                        ck_assert(p.step & (1u << i));
                        }
                }
}
END_TEST

/* The loop against the plan in simulated time, [a source that never
 * earns credit, kernel]: the kernel's turn comes after one slice, and
 * the first source takes a bounded number of steps while the loop
 * wakes at most once a tick. */
START_TEST(test_plan_simulated) {
        SeedPlanSource s[2] = { WAITING, KERNEL_WAITING };
        unsigned steps = 0, wakes = 0;
        usec_t now = 0, kernel = NEVER;

        while (now < 2 * USEC_PER_SEC) {
                SeedPlan p;

                seed_plan(s, 2, now, &p);
                if (p.begin >= 0)
                        s[p.begin].turn = now;
                if (p.step == 0) {
                        ck_assert_uint_gt(p.wait, 0);
                        now += p.wait;
                        wakes++;
                        continue;
                }
                for (unsigned i = 0; i < 2; i++)
                        if (p.step & (1u << i)) {
                                s[i].last_step = now;
                                s[i].last = i == 0 ? SEED_STEP_MIXED : SEED_STEP_NOTHING;
                                if (i == 1)
                                        kernel = now;
                                else
                                        steps++;
                        }
        }
        ck_assert_uint_eq(kernel, SEED_SLICE_USEC);
        /* A step a tick in its slice, then one a slice. */
        ck_assert_uint_eq(steps, SLICE_MS / 10 + (2000 - SLICE_MS) / SLICE_MS);
        ck_assert_uint_le(wakes, 2000 / 10 + 1);
}
END_TEST

static usec_t cpu_usec(void) {
        struct timespec ts;

        ck_assert_int_eq(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts), 0);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / NSEC_PER_USEC;
}

START_TEST(test_uncredited_source_yields_to_kernel) {
        static const SourceKind k[] = { SOURCE_CPU, SOURCE_KERNEL };
        usec_t cpu, wall;
        SeedOutcome o;

        /* A first source that delivers all it is asked for and earns no
         * credit (quality 0, as hwrng's default): after its slice the
         * kernel's own seeding starts and gets the pool ready, while the
         * agent sleeps instead of mixing in bytes that count for nothing. */
        sources(2, k);
        c.src[SOURCE_CPU].quality = 0;
        c.timeout = 3 * USEC_PER_SEC;
        fake_pool_init(&pool, FAKE_POOL_NEVER);
        fake_pool_enable_wait(&pool, 500);

        cpu = cpu_usec();
        wall = now_usec(CLOCK_MONOTONIC);
        ck_assert_int_eq(run(&o), 0);
        cpu = cpu_usec() - cpu;
        wall = now_usec(CLOCK_MONOTONIC) - wall;

        ck_assert(o.ready_after);
        ck_assert(!o.timed_out);
        ck_assert_int_eq(o.sources[1].status, SOURCE_USED);
        ck_assert_uint_ge(o.sources[1].wait_usec, 400 * USEC_PER_MSEC);
        /* The kernel source waited for the first one's slice, not longer:
         * ready a slice and its 500 ms after the start, with 300 ms to
         * spare for a busy machine, where 2 s let it wait seconds more. */
        ck_assert_uint_lt(o.ready_usec, SEED_SLICE_USEC + 500 * USEC_PER_MSEC + 300 * USEC_PER_MSEC);
        /* The first source was used, without credit, and at a bounded
         * rate: a few dozen chunks in the run, not megabytes. */
        ck_assert_int_eq(o.sources[0].status, SOURCE_USED);
        ck_assert_uint_gt(o.sources[0].mixed_bytes, 0);
        ck_assert_uint_eq(o.sources[0].credited_bits, 0);
        ck_assert_uint_le(o.sources[0].mixed_bytes, 64 * c.chunk);
        /* Bytes that earn nothing are not held back for the startup
         * test, which only credit waits for: they were mixed in at once. */
        ck_assert(cpu_mixed_early);
        /* And no busy loop: the run mostly slept. */
        ck_assert_msg(cpu * 5 < wall, "%llu us of CPU in %llu us", (unsigned long long) cpu,
                      (unsigned long long) wall);
        check_accounting(&o);
}
END_TEST

START_TEST(test_uncredited_source_yields_to_device) {
        static const SourceKind k[] = { SOURCE_CPU, SOURCE_VIRTIO };
        SeedOutcome o;

        /* The same before a crediting device: the device gets its turn
         * after the first source's slice and makes the pool ready. */
        hwrng_random(4096);
        sources(2, k);
        c.src[SOURCE_CPU].quality = 0;
        c.timeout = 3 * USEC_PER_SEC;
        fake_pool_init(&pool, 256);
        ck_assert_int_eq(run(&o), 0);
        ck_assert_uint_lt(o.ready_usec, 2 * USEC_PER_SEC);
        ck_assert_int_eq(o.sources[0].status, SOURCE_USED);
        ck_assert_uint_eq(o.sources[0].credited_bits, 0);
        ck_assert_uint_le(o.sources[0].mixed_bytes, 64 * c.chunk);
        ck_assert_int_eq(o.sources[1].status, SOURCE_USED);
        ck_assert_uint_eq(o.sources[1].credited_bits, STARTUP_TEST_SAMPLES_MIN * 8);
        check_accounting(&o);
}
END_TEST

static Suite *seed_suite(void) {
        Suite *s = suite_create("seed");
        TCase *tc;

        tc = tcase_create("ready");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_ready_after_bits);
        tcase_add_test(tc, test_quality_scales_credit);
        tcase_add_test(tc, test_already_ready);
        tcase_add_test(tc, test_kernel_source);
        tcase_add_test(tc, test_other_hwrng);
        tcase_add_test(tc, test_reseed_after_fork);
        tcase_add_test(tc, test_reseed_no_source);
        suite_add_tcase(s, tc);

        tc = tcase_create("turns");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_uncredited_source_yields_to_kernel);
        tcase_add_test(tc, test_uncredited_source_yields_to_device);
        suite_add_tcase(s, tc);

        tc = tcase_create("plan");
        tcase_add_loop_test(tc, test_plan_table, 0, ELEMENTSOF(plan_rows));
        tcase_add_test(tc, test_plan_burst);
        tcase_add_test(tc, test_plan_invariants);
        tcase_add_test(tc, test_plan_simulated);
        suite_add_tcase(s, tc);

        tc = tcase_create("timeout");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_timeout_policies);
        tcase_add_test(tc, test_timeout_zero);
        tcase_add_test(tc, test_permission_denied);
        tcase_add_test(tc, test_silent_device);
        tcase_add_test(tc, test_held_back_mixed_at_end);
        suite_add_tcase(s, tc);

        tc = tcase_create("health");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_stuck_source_never_credited);
        tcase_add_test(tc, test_biased_source_never_credited);
        tcase_add_test(tc, test_source_goes_bad);
        tcase_add_test(tc, test_startup_hold_back);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(seed_suite)
