/* SPDX-License-Identifier: MIT */
#include <check.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atomic.h"
#include "race.h"

/* Long enough for the other child to have read the file and reached
 * the lock, short enough for a loop of rounds. */
#define RACE_HOLD_USEC (20 * 1000)

static int hold(AtomicStep step, const char *path, void *userdata) {
        (void) path;
        (void) userdata;
        if (step == ATOMIC_OPEN)
                (void) usleep(RACE_HOLD_USEC);
        return 0;
}

void race_two(int (*fn)(unsigned who, void *userdata), void *userdata) {
        pid_t pid[2];
        int go[2];

        ck_assert_int_eq(pipe(go), 0);
        for (unsigned who = 0; who < 2; who++) {
                pid[who] = fork();
                ck_assert_int_ge(pid[who], 0);
                if (pid[who] == 0) {
                        char c;

                        close(go[1]);
                        /* Released when the parent closes its end. */
                        (void) read(go[0], &c, 1);
                        atomic_set_fault_hook(hold, NULL);
                        _exit(fn(who, userdata) >= 0 ? 0 : 1);
                }
        }
        close(go[0]);
        close(go[1]);
        for (unsigned who = 0; who < 2; who++) {
                int status;

                ck_assert_int_eq(waitpid(pid[who], &status, 0), pid[who]);
                ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
}
