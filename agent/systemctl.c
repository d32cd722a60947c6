/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <spawn.h>
#include <sys/wait.h>

#include "systemctl.h"

extern char **environ;

int systemctl_run(const char *const *args) {
        pid_t pid;
        int r, st;

        r = posix_spawn(&pid, SYSTEMCTL, NULL, NULL, (char *const *) args, environ);
        if (r != 0)
                return -r;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (WIFEXITED(st))
                return WEXITSTATUS(st);
        return -ECHILD;
}
