/* SPDX-License-Identifier: MIT */
/* Whose budget a peer draws from: only what the kernel attests. */
#include <check.h>

#include "macro.h"
#include "server.h"
#include "testmain.h"

static const struct {
        const char *cgroup;
        unsigned uid;
        const char *want;
} rows[] = {
        /* libvirt: the VM's scope, whatever sub-cgroup the thread is in. */
        { "/machine.slice/machine-qemu\\x2d1\\x2dweb.scope/libvirt/emulator", 64055,
          "cgroup:/machine.slice/machine-qemu\\x2d1\\x2dweb.scope" },
        { "/machine.slice/machine-qemu\\x2d1\\x2dweb.scope/libvirt/vcpu0", 64055,
          "cgroup:/machine.slice/machine-qemu\\x2d1\\x2dweb.scope" },
        { "/machine.slice/machine-qemu\\x2d2\\x2ddb.scope", 64055, "cgroup:/machine.slice/machine-qemu\\x2d2\\x2ddb.scope" },
        /* A name that merely starts like a scope is a cgroup like others. */
        { "/machine.slice/machine-x.scopey/a", 0, "cgroup:/machine.slice/machine-x.scopey/a" },
        /* Any other cgroup: a service, a user's session. */
        { "/system.slice/qemu-web.service", 0, "cgroup:/system.slice/qemu-web.service" },
        { "/user.slice/user-1000.slice/session-3.scope", 1000, "cgroup:/user.slice/user-1000.slice/session-3.scope" },
        /* The root cgroup is everybody's: the user decides. */
        { "/", 0, "uid:0" },
        { "/", 65534, "uid:65534" },
        { "", 1000, "uid:1000" },
        { NULL, 1000, "uid:1000" },
};

START_TEST(test_budget_key) {
        char buf[600];

        budget_key(rows[_i].cgroup, (uid_t) rows[_i].uid, buf, sizeof buf);
        ck_assert_str_eq(buf, rows[_i].want);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("server");
        TCase *tc = tcase_create("budget-key");

        tcase_add_loop_test(tc, test_budget_key, 0, (int) ELEMENTSOF(rows));
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(suite)
