/* SPDX-License-Identifier: MIT */
#include "log.h"
#include "sshd.h"
#include "systemctl.h"

int sshd_reload(char **ret_what) {
        static const char *const units[] = { SSHD_UNITS };
        int r;

        *ret_what = NULL;
        for (size_t i = 0; i < ELEMENTSOF(units); i++) {
                const char *active[] = { "systemctl", "--quiet", "is-active", units[i], NULL };
                const char *reload[] = { "systemctl", "--no-ask-password", "try-reload-or-restart", units[i], NULL };

                r = systemctl_run(active);
                if (r < 0) {
                        if (asprintf(ret_what, "%s could not be run: %s", SYSTEMCTL, strerror(-r)) < 0)
                                *ret_what = NULL;
                        return log_error_errno(r, "Failed to run '%s': %m", SYSTEMCTL);
                }
                if (r != 0)
                        continue;
                r = systemctl_run(reload);
                if (r != 0) {
                        if (asprintf(ret_what, "reloading %s failed", units[i]) < 0)
                                *ret_what = NULL;
                        log_error("'systemctl try-reload-or-restart %s' failed%s: sshd may still serve the old host "
                                  "keys.", units[i], r > 0 ? "" : " to run");
                        return r > 0 ? -EIO : r;
                }
                if (asprintf(ret_what, "reloaded %s", units[i]) < 0)
                        *ret_what = NULL;
                log_info("%s reloaded: sshd serves the new host keys.", units[i]);
                return 1;
        }
        *ret_what = strdup("not running");
        log_info("No sshd service is running (%s, %s): the next sshd to start serves the new host keys.", units[0],
                 units[1]);
        return 0;
}
