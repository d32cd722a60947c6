/* SPDX-License-Identifier: MIT */
#include <spawn.h>
#include <sys/wait.h>

#include "log.h"
#include "sshd.h"

extern char **environ;

/* Runs systemctl with args, its output left to ours (the journal).
 * Returns its exit status, or -errno when it could not run. */
static int systemctl(char *const *args) {
        pid_t pid;
        int r, st;

        r = posix_spawn(&pid, SYSTEMCTL, NULL, NULL, args, environ);
        if (r != 0)
                return -r;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (WIFEXITED(st))
                return WEXITSTATUS(st);
        return -ECHILD;
}

int sshd_reload(char **ret_what) {
        static const char *const units[] = { SSHD_UNITS };
        int r;

        *ret_what = NULL;
        for (size_t i = 0; i < ELEMENTSOF(units); i++) {
                char *active[] = { (char *) "systemctl", (char *) "--quiet", (char *) "is-active", (char *) units[i],
                                   NULL };
                char *reload[] = { (char *) "systemctl", (char *) "--no-ask-password", (char *) "try-reload-or-restart",
                                   (char *) units[i], NULL };

                r = systemctl(active);
                if (r < 0) {
                        if (asprintf(ret_what, "%s could not be run: %s", SYSTEMCTL, strerror(-r)) < 0)
                                *ret_what = NULL;
                        return log_error_errno(r, "Failed to run '%s': %m", SYSTEMCTL);
                }
                if (r != 0)
                        continue;
                r = systemctl(reload);
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
