/* SPDX-License-Identifier: MIT */
/* The seeding loop against a fake pool and fake /dev/hwrng files: it
 * stops when the pool is ready, gives up at the deadline under either
 * policy, and never credits a source that fails its health tests. */
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "fakepool.h"
#include "fakeroot.h"
#include "seed.h"
#include "testmain.h"

static char *root;
static AgentConfig c;
static VirtioRng v;
static FakePool pool;

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
        /* Ready after the first chunk: 64 bytes at full credit. */
        ck_assert_uint_eq(o.sources[0].bytes, 64);
        ck_assert_uint_eq(o.sources[0].credited_bits, 512);
        /* The kernel source was never needed. */
        ck_assert_int_eq(o.sources[1].status, SOURCE_NOT_TRIED);
        check_accounting(&o);
        ck_assert_int_eq(seed_result_for(0, &c), SEED_RESULT_READY);
}
END_TEST

START_TEST(test_quality_scales_credit) {
        SeedOutcome o;

        /* A quarter credit: 64 bytes earn 128 bits; 1000 bits take 8 chunks. */
        hwrng_random(4096);
        c.src[SOURCE_VIRTIO].quality = 256;
        fake_pool_init(&pool, 1000);
        ck_assert_int_eq(run(&o), 0);
        ck_assert_uint_eq(o.sources[0].credited_bits, 1024);
        ck_assert_uint_eq(o.sources[0].mixed_bytes, 512);
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

        /* At H = 1 (alpha 2^-30) the tests need 325 samples before they
         * can object: nothing is credited before, so 8 bits take six
         * 64-byte chunks, given to the pool at once. */
        hwrng_random(4096);
        c.src[SOURCE_VIRTIO].min_entropy = 1;
        fake_pool_init(&pool, 8);
        ck_assert_int_eq(run(&o), 0);
        ck_assert_uint_eq(o.sources[0].apt_cutoff, 325);
        ck_assert_uint_eq(o.sources[0].bytes, 384);
        ck_assert_uint_eq(o.sources[0].mixed_bytes, 384);
        ck_assert_uint_eq(pool.adds, 1);
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
        ck_assert_int_eq(o.sources[1].status, SOURCE_ENDED);
        ck_assert_uint_eq(o.sources[1].mixed_bytes, 4096);
        ck_assert_uint_eq(o.sources[1].credited_bits, 0);
        check_accounting(&o);

        /* Vouched for at half credit: its startup (325 samples at its
         * declared H = 1) is held back, then 384 bytes earn 1536 bits. */
        c.src[SOURCE_HWRNG].quality = 512;
        fake_pool_init(&pool, 256);
        ck_assert_int_eq(run(&o), 0);
        ck_assert_uint_eq(o.sources[1].credited_bits, 1536);
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
