/* SPDX-License-Identifier: MIT */
/* The helpers of fuzz.h that are not inline. */
#include <dirent.h>
#include <stdarg.h>

#include "fuzz.h"

FILE *fuzz_stderr;

void fuzz_setup(void) {
        FILE *null;

        if (fuzz_stderr)
                return;
        fuzz_stderr = stderr;
        log_set_max_level(LOG_DEBUG);
        if (getenv("SEEDBED_FUZZ_LOG"))
                return;
        /* glibc's stderr is an ordinary variable that may be assigned
         * (glibc manual, "Standard Streams"): the code's log lines go to
         * /dev/null, fd 2 stays where it was. */
        null = fopen("/dev/null", "we");
        if (null)
                stderr = null;
}

void fuzz_fail_at(const char *file, int line, const char *what, const char *format, ...) {
        FILE *f = fuzz_stderr ?: stderr;
        va_list ap;

        fprintf(f, "%s:%d: ", file, line);
        if (what)
                fprintf(f, "'%s' does not hold: ", what);
        va_start(ap, format);
        vfprintf(f, format, ap);
        va_end(ap);
        fputc('\n', f);
        fflush(f);
        abort();
}

unsigned fuzz_count_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *e;
        unsigned n = 0;

        if (!d)
                fuzz_fail("cannot open /proc/self/fd: %m");
        while ((e = readdir(d)))
                if (e->d_name[0] != '.')
                        n++;
        closedir(d);
        return n - 1; /* the directory's own fd */
}
