/* SPDX-License-Identifier: MIT */
/* The fuzz targets' main() when libFuzzer is not there: runs
 * LLVMFuzzerTestOneInput() once on every file named, or in a directory
 * named, on the command line.  With no arguments, on the target's seed
 * corpus and regression inputs in the source tree
 * ($top_srcdir/tests/fuzz/{corpus,regressions}/NAME, NAME from the
 * program's name without "fuzz-"): that is the test "make check" runs.
 * Each input is given in a buffer of its exact size, so AddressSanitizer
 * (--enable-sanitizers) sees a read past its end as libFuzzer's would.
 * An input that hangs fails the run, naming it, rather than blocking
 * make check. */
#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>

#include "fileio.h"
#include "fuzz.h"

/* libFuzzer's default -max_len is 4096; our seeds are smaller, a
 * regression input may be larger. */
#define REPLAY_FILE_MAX (1024 * 1024)
/* Every seed and regression input takes well under a second, even with
 * sanitizers; one that comes back as a hang must not stall make check
 * (automake's harness has no timeout).  SEEDBED_FUZZ_TIMEOUT=SECONDS
 * changes it, for the test of this. */
#define REPLAY_TIMEOUT_SEC 25

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static unsigned replayed;
static unsigned timeout_sec = REPLAY_TIMEOUT_SEC;
static char timeout_msg[64];
static const char *replaying; /* the input the alarm names */

/* The process's stderr: once a target called fuzz_setup(), stdio's
 * stderr is /dev/null, and the driver's own errors would vanish. */
static FILE *err(void) {
        return fuzz_stderr ?: stderr;
}

static void write_str(const char *s) {
        (void) !write(STDERR_FILENO, s, strlen(s));
}

/* Only async-signal-safe calls: the target may hang inside malloc.  fd 2
 * is the original stderr still (fuzz_setup() swaps stdio's stream only). */
static void on_alarm(int sig) {
        write_str("Timed out: '");
        write_str(replaying ?: "?");
        write_str(timeout_msg);
        _exit(EXIT_FAILURE);
}

static int replay_file(const char *path) {
        _cleanup_free_ char *text = NULL;
        uint8_t *exact;
        size_t size;
        int r;

        /* Reading is timed too: a FIFO named on the command line hangs. */
        replaying = path;
        alarm(timeout_sec);
        r = read_full_file(path, REPLAY_FILE_MAX, &text, &size);
        alarm(0);
        if (r < 0) {
                fprintf(err(), "Cannot read '%s': %s\n", path, strerror(-r));
                return r;
        }
        exact = malloc(MAX(size, (size_t) 1));
        if (!exact)
                return -ENOMEM;
        memcpy(exact, text, size);

        /* Named first: a crash's log says which input it was. */
        printf("%s (%zu bytes)\n", path, size);
        fflush(stdout);
        alarm(timeout_sec);
        (void) LLVMFuzzerTestOneInput(exact, size);
        alarm(0);
        replaying = NULL;
        free(exact);
        replayed++;
        return 0;
}

static int is_seed(const struct dirent *e) {
        /* .gitkeep and editors' files are no inputs. */
        return e->d_name[0] != '.';
}

static int replay_path(const char *path) {
        struct dirent **names;
        struct stat st;
        int n, r = 0;

        if (stat(path, &st) < 0) {
                r = -errno; /* before fprintf() may change it */
                fprintf(err(), "Cannot find '%s': %s\n", path, strerror(-r));
                return r;
        }
        if (!S_ISDIR(st.st_mode))
                return replay_file(path);

        /* In name order, so that every run replays the same sequence. */
        n = scandir(path, &names, is_seed, alphasort);
        if (n < 0) {
                r = -errno;
                fprintf(err(), "Cannot list '%s': %s\n", path, strerror(-r));
                return r;
        }
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *file = NULL;

                if (r >= 0 && asprintf(&file, "%s/%s", path, names[i]->d_name) < 0)
                        r = -ENOMEM;
                else if (r >= 0)
                        r = replay_file(file);
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char *argv[]) {
        const char *srcdir = getenv("top_srcdir") ?: ".", *name;
        char prog[PATH_MAX];
        int r = 0;

        if (LLVMFuzzerInitialize)
                (void) LLVMFuzzerInitialize(&argc, &argv);
        if (getenv("SEEDBED_FUZZ_TIMEOUT"))
                timeout_sec = MAX(atoi(getenv("SEEDBED_FUZZ_TIMEOUT")), 1);
        (void) snprintf(timeout_msg, sizeof timeout_msg, "' ran for more than %u s (a hang).\n", timeout_sec);
        if (sigaction(SIGALRM, &(struct sigaction) { .sa_handler = on_alarm }, NULL) < 0) {
                fprintf(err(), "Cannot catch SIGALRM: %m\n");
                return EXIT_FAILURE;
        }

        if (argc > 1) {
                for (int i = 1; i < argc && r >= 0; i++)
                        r = replay_path(argv[i]);
        } else {
                (void) snprintf(prog, sizeof prog, "%s", argv[0]);
                name = basename(prog);
                name = startswith(name, "fuzz-") ?: name;
                for (int i = 0; i < 2 && r >= 0; i++) {
                        _cleanup_free_ char *dir = NULL;

                        if (asprintf(&dir, "%s/tests/fuzz/%s/%s", srcdir, i == 0 ? "corpus" : "regressions",
                                     name) < 0)
                                return EXIT_FAILURE;
                        r = replay_path(dir);
                        /* A corpus lost (a bad EXTRA_DIST, a wrong
                         * top_srcdir) would make the test pass on nothing. */
                        if (r >= 0 && i == 0 && replayed == 0) {
                                fprintf(err(), "No inputs in '%s': a target needs a seed corpus.\n", dir);
                                r = -ENOENT;
                        }
                }
        }
        if (r < 0)
                return EXIT_FAILURE;
        printf("%u inputs replayed without a crash.\n", replayed);
        return EXIT_SUCCESS;
}
