/* SPDX-License-Identifier: MIT */
/* Detection over fake sysfs trees laid out as each virtio transport lays
 * them out: the device is found by ID, its transport named, an unbound
 * device gets its driver, and the virtio hwrng is made current. */
#include "detect.h"
#include "fakeroot.h"
#include "testmain.h"

static char *root;

static void setup(void) {
        root = fakeroot_new();
        fakeroot_write(root, "/dev/hwrng", "");
}

static void teardown(void) {
        fakeroot_free(root);
        root = NULL;
}

static int detect(bool select, VirtioRng *v) {
        DetectContext ctx = { .root = root, .select = select, .load_module = true, .module_timeout = 2 * USEC_PER_SEC };
        return detect_virtio_rng(&ctx, v);
}

static void check_found(const char *transport) {
        VirtioRng v;

        /* Other virtio devices come first and must be skipped. */
        fakeroot_add_virtio(root, "virtio0", "0x0001", transport, "virtio_net");
        fakeroot_add_virtio(root, "virtio1", "0x0002", transport, "virtio_blk");
        fakeroot_add_virtio(root, "virtio2", "0x0004", transport, "virtio_rng");
        fakeroot_add_hwrng(root, "virtio_rng.0 \n", "virtio_rng.0\n", 1024);

        ck_assert_int_eq(detect(true, &v), 0);
        ck_assert(v.found);
        ck_assert_str_eq(v.device, "virtio2");
        ck_assert_str_eq(v.transport, transport);
        ck_assert(v.bound);
        ck_assert_str_eq(v.driver, "virtio_rng");
        ck_assert_str_eq(v.hwrng, "virtio_rng.0");
        ck_assert_str_eq(v.current, "virtio_rng.0");
        ck_assert(!v.selected);
        ck_assert(!v.module_loaded);
        ck_assert_int_eq(v.kernel_quality, 1024);
        ck_assert(v.hwrng_node);
}

START_TEST(test_pci) {
        check_found("pci");
}
END_TEST

START_TEST(test_mmio) {
        check_found("mmio");
}
END_TEST

START_TEST(test_ccw) {
        check_found("ccw");
}
END_TEST

START_TEST(test_none) {
        VirtioRng v;

        /* No virtio bus at all (a bare-metal machine, a non-virtio VM). */
        ck_assert_int_eq(detect(true, &v), 0);
        ck_assert(!v.found);
        ck_assert_str_eq(v.transport, "none");
        ck_assert_str_eq(v.current, "");

        /* A virtio bus without an entropy device. */
        fakeroot_add_virtio(root, "virtio0", "0x0001", "pci", "virtio_net");
        ck_assert_int_eq(detect(true, &v), 0);
        ck_assert(!v.found);
}
END_TEST

static unsigned loads;

/* What the kernel does when virtio_rng is loaded: bind the device and
 * register the hwrng with the core. */
static int fake_load(const char *r, const char *module, void *userdata) {
        ck_assert_str_eq(module, "virtio_rng");
        loads++;
        fakeroot_bind(r, "virtio3", "virtio_rng");
        fakeroot_add_hwrng(r, "virtio_rng.0\n", "virtio_rng.0\n", -1);
        fakeroot_write(r, "/sys/module/rng_core/parameters/default_quality", "0\n");
        return 0;
}

START_TEST(test_unbound) {
        DetectContext ctx = { .root = root, .select = true, .load_module = true, .module_timeout = 2 * USEC_PER_SEC,
                              .load_module_fn = fake_load };
        VirtioRng v;

        fakeroot_add_virtio(root, "virtio3", "0x0004", "mmio", NULL);
        loads = 0;
        ck_assert_int_eq(detect_virtio_rng(&ctx, &v), 0);
        ck_assert_uint_eq(loads, 1);
        ck_assert(v.found);
        ck_assert(v.module_loaded);
        ck_assert(v.bound);
        ck_assert_str_eq(v.hwrng, "virtio_rng.0");
        ck_assert_str_eq(v.current, "virtio_rng.0");
        /* No rng_quality (an older kernel): the module parameter decides. */
        ck_assert_int_eq(v.kernel_quality, 0);
}
END_TEST

static int fake_load_nothing(const char *r, const char *module, void *userdata) {
        loads++;
        return 0;
}

START_TEST(test_unbound_timeout) {
        DetectContext ctx = { .root = root, .select = true, .load_module = true,
                              .module_timeout = 200 * USEC_PER_MSEC, .load_module_fn = fake_load_nothing };
        VirtioRng v;

        fakeroot_add_virtio(root, "virtio3", "0x0004", "pci", NULL);
        loads = 0;
        ck_assert_int_eq(detect_virtio_rng(&ctx, &v), -ETIMEDOUT);
        ck_assert_uint_eq(loads, 1);
        ck_assert(v.found);
        ck_assert(!v.bound);
        ck_assert_uint_ge(v.wait_usec, 200 * USEC_PER_MSEC);

        /* With loading off, nothing is loaded and nothing waited for. */
        ctx.load_module = false;
        loads = 0;
        ck_assert_int_eq(detect_virtio_rng(&ctx, &v), 0);
        ck_assert_uint_eq(loads, 0);
        ck_assert(v.found && !v.bound);
}
END_TEST

START_TEST(test_bind_when_driver_loaded) {
        DetectContext ctx = { .root = root, .select = true, .load_module = true,
                              .module_timeout = 200 * USEC_PER_MSEC, .load_module_fn = fake_load_nothing };
        VirtioRng v;
        char *bind;

        /* The driver is there but this device was unbound: we write its
         * name to the driver's bind file (a fake tree cannot react). */
        fakeroot_add_virtio(root, "virtio3", "0x0004", "pci", NULL);
        fakeroot_write(root, "/sys/bus/virtio/drivers/virtio_rng/bind", "");
        ck_assert_int_eq(detect_virtio_rng(&ctx, &v), -ETIMEDOUT);
        ck_assert(v.bound_by_us);
        bind = fakeroot_read(root, "/sys/bus/virtio/drivers/virtio_rng/bind");
        ck_assert_str_eq(bind, "virtio3");
        free(bind);
}
END_TEST

START_TEST(test_other_hwrng_current) {
        VirtioRng v;
        char *current;

        fakeroot_add_virtio(root, "virtio0", "0x0004", "pci", "virtio_rng");
        fakeroot_add_hwrng(root, "tpm-rng-0 virtio_rng.0\n", "tpm-rng-0\n", 0);

        /* select: false leaves the choice alone. */
        ck_assert_int_eq(detect(false, &v), 0);
        ck_assert(!v.selected);
        ck_assert_str_eq(v.current, "tpm-rng-0");
        current = fakeroot_read(root, "/sys/class/misc/hw_random/rng_current");
        ck_assert_str_eq(current, "tpm-rng-0\n");
        free(current);

        /* select: true makes the virtio one current. */
        ck_assert_int_eq(detect(true, &v), 0);
        ck_assert(v.selected);
        ck_assert_str_eq(v.current_before, "tpm-rng-0");
        ck_assert_str_eq(v.current, "virtio_rng.0");
        current = fakeroot_read(root, "/sys/class/misc/hw_random/rng_current");
        ck_assert_str_eq(current, "virtio_rng.0");
        free(current);
}
END_TEST

START_TEST(test_no_hwrng_registered) {
        VirtioRng v;

        fakeroot_add_virtio(root, "virtio0", "0x0001", "pci", "virtio_net");
        fakeroot_add_hwrng(root, "\n", "none\n", -1);
        ck_assert_int_eq(detect(true, &v), 0);
        ck_assert(!v.found);
        ck_assert_str_eq(v.current, "");
}
END_TEST

static Suite *detect_suite(void) {
        Suite *s = suite_create("detect");
        TCase *tc;

        tc = tcase_create("transports");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_pci);
        tcase_add_test(tc, test_mmio);
        tcase_add_test(tc, test_ccw);
        tcase_add_test(tc, test_none);
        suite_add_tcase(s, tc);

        tc = tcase_create("driver");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_unbound);
        tcase_add_test(tc, test_unbound_timeout);
        tcase_add_test(tc, test_bind_when_driver_loaded);
        suite_add_tcase(s, tc);

        tc = tcase_create("select");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_other_hwrng_current);
        tcase_add_test(tc, test_no_hwrng_registered);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(detect_suite)
