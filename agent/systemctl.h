/* SPDX-License-Identifier: MIT */
#pragma once

/* Asking the service manager for something: systemctl, at the path the
 * build was configured with (SYSTEMCTL), its output left to ours. */

/* Runs systemctl with args (args[0] is "systemctl"; NULL-terminated).
 * Returns its exit status, or -errno when it could not run or was
 * killed. */
int systemctl_run(const char *const *args);
