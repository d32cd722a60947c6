/* SPDX-License-Identifier: MIT */
#pragma once

/* One Check suite per test program; main() returns EXIT_SUCCESS or
 * EXIT_FAILURE, never a count.  CK_FORK=no runs it under a debugger. */

#include <check.h>
#include <stdlib.h>

#define TEST_MAIN(suite_fn)                                             \
        int main(void) {                                                \
                SRunner *sr = srunner_create(suite_fn());               \
                int failed;                                             \
                srunner_run_all(sr, CK_ENV);                            \
                failed = srunner_ntests_failed(sr);                     \
                srunner_free(sr);                                       \
                return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;       \
        }
