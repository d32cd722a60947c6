/* SPDX-License-Identifier: MIT */
/* The fuzz targets' main() when libFuzzer is not there: runs
 * LLVMFuzzerTestOneInput() once on every file named, or in a directory
 * named, on the command line.  With no arguments, on the target's seed
 * corpus and regression inputs in the source tree
 * ($top_srcdir/tests/fuzz/{corpus,regressions}/NAME, NAME from the
 * program's name without "fuzz-"): that is the test "make check" runs.
 * Each input is given in a buffer of its exact size, so AddressSanitizer
 * (--enable-sanitizers) sees a read past its end as libFuzzer's would. */
#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>

#include "fileio.h"
#include "fuzz.h"

/* libFuzzer's default -max_len is 4096; our seeds are smaller, a
 * regression input may be larger. */
#define REPLAY_FILE_MAX (1024 * 1024)

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static unsigned replayed;

static int replay_file(const char *path) {
        _cleanup_free_ char *text = NULL;
        uint8_t *exact;
        size_t size;
        int r;

        r = read_full_file(path, REPLAY_FILE_MAX, &text, &size);
        if (r < 0) {
                fprintf(stderr, "Cannot read '%s': %s\n", path, strerror(-r));
                return r;
        }
        exact = malloc(MAX(size, (size_t) 1));
        if (!exact)
                return -ENOMEM;
        memcpy(exact, text, size);

        /* Named first: a crash's log says which input it was. */
        printf("%s (%zu bytes)\n", path, size);
        fflush(stdout);
        (void) LLVMFuzzerTestOneInput(exact, size);
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
                fprintf(stderr, "Cannot find '%s': %m\n", path);
                return -errno;
        }
        if (!S_ISDIR(st.st_mode))
                return replay_file(path);

        /* In name order, so that every run replays the same sequence. */
        n = scandir(path, &names, is_seed, alphasort);
        if (n < 0) {
                fprintf(stderr, "Cannot list '%s': %m\n", path);
                return -errno;
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
                }
        }
        if (r < 0)
                return EXIT_FAILURE;
        printf("%u inputs replayed without a crash.\n", replayed);
        return EXIT_SUCCESS;
}
