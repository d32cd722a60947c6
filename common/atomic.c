/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <libgen.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "atomic.h"
#include "fileio.h"

#ifndef GRND_INSECURE
#define GRND_INSECURE 0x0004
#endif

static AtomicFaultHook fault_hook;
static void *fault_userdata;

static const char *const atomic_step_table[_ATOMIC_STEP_MAX] = {
        [ATOMIC_OPEN] = "open",
        [ATOMIC_FCHOWN] = "fchown",
        [ATOMIC_FCHMOD] = "fchmod",
        [ATOMIC_WRITE] = "write",
        [ATOMIC_FSYNC] = "fsync",
        [ATOMIC_RENAME] = "rename",
        [ATOMIC_FSYNC_DIR] = "fsync-dir",
};

const char *atomic_step_to_string(AtomicStep s) {
        if (s < 0 || s >= _ATOMIC_STEP_MAX)
                return NULL;
        return atomic_step_table[s];
}

void atomic_set_fault_hook(AtomicFaultHook hook, void *userdata) {
        fault_hook = hook;
        fault_userdata = userdata;
}

static int fault(AtomicStep step, const char *path) {
        return fault_hook ? fault_hook(step, path, fault_userdata) : 0;
}

static int fsync_directory_of(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (!copy)
                return -ENOMEM;
        r = fault(ATOMIC_FSYNC_DIR, path);
        if (r < 0)
                return r;
        fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

/* The suffix needs no secrecy, and the agent writes exactly when the CRNG
 * may not be ready: never a blocking read.  O_EXCL makes clashes safe. */
static unsigned long long temp_suffix(void) {
        unsigned long long x;

        if (getrandom(&x, sizeof x, GRND_INSECURE) != sizeof x &&
            getrandom(&x, sizeof x, GRND_NONBLOCK) != sizeof x)
                x = (unsigned long long) now_usec(CLOCK_MONOTONIC) ^ ((unsigned long long) getpid() << 32);
        return x;
}

static int open_temp(const char *path, char **ret_tmp) {
        _cleanup_free_ char *tmp = NULL;
        int fd, r;

        r = fault(ATOMIC_OPEN, path);
        if (r < 0)
                return r;

        for (unsigned attempt = 0;; attempt++) {
                free(tmp);
                if (asprintf(&tmp, "%s.%016llx.tmp", path, temp_suffix()) < 0) {
                        tmp = NULL;
                        return -ENOMEM;
                }
                /* 0600 whatever the final mode: nobody else may open it
                 * while it is ours, and the umask can only narrow it. */
                fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
                if (fd >= 0)
                        break;
                if (errno != EEXIST || attempt >= 16)
                        return -errno;
        }
        *ret_tmp = TAKE_PTR(tmp);
        return fd;
}

/* rename(), or with replace false a rename that fails with EEXIST where
 * path exists: RENAME_NOREPLACE, or link() on file systems that lack it. */
static int rename_temp(const char *tmp, const char *path, bool replace) {
        if (replace)
                return rename(tmp, path) < 0 ? -errno : 0;
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) >= 0)
                return 0;
        if (errno != EINVAL && errno != ENOSYS)
                return -errno;
        if (link(tmp, path) < 0)
                return -errno;
        (void) unlink(tmp);
        return 0;
}

static int write_file(const char *path, const void *data, size_t n, mode_t mode, uid_t uid, gid_t gid,
                      bool replace) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r;

        fd = open_temp(path, &tmp);
        if (fd < 0)
                return fd;

        /* Owner first, then mode: chown() may clear mode bits, and both
         * come before the data, so the secret is never readable by anyone
         * the final file would not let read it. */
        if (uid != (uid_t) -1 || gid != (gid_t) -1) {
                r = fault(ATOMIC_FCHOWN, path);
                if (r < 0)
                        goto fail;
                if (fchown(fd, uid, gid) < 0)
                        goto fail_errno;
        }
        r = fault(ATOMIC_FCHMOD, path);
        if (r < 0)
                goto fail;
        if (fchmod(fd, mode) < 0)
                goto fail_errno;

        r = fault(ATOMIC_WRITE, path);
        if (r < 0) {
                /* A disk that fills up stops a write half way. */
                (void) loop_write(fd, data, n / 2);
                goto fail;
        }
        r = loop_write(fd, data, n);
        if (r < 0)
                goto fail;

        /* The data must be on disk before the name points at it: after a
         * crash, rename() without fsync() can leave an empty file. */
        r = fault(ATOMIC_FSYNC, path);
        if (r < 0)
                goto fail;
        if (fsync(fd) < 0)
                goto fail_errno;
        fd = safe_close(fd);

        r = fault(ATOMIC_RENAME, path);
        if (r < 0)
                goto fail;
        r = rename_temp(tmp, path, replace);
        if (r < 0)
                goto fail;

        /* The rename is durable only once the directory is; after this
         * point the complete file is in place whatever we return. */
        return fsync_directory_of(path);

fail_errno:
        r = -errno;
fail:
        (void) unlink(tmp);
        return r;
}

int atomic_write_file(const char *path, const void *data, size_t n, mode_t mode, uid_t uid, gid_t gid) {
        return write_file(path, data, n, mode, uid, gid, true);
}

int atomic_create_file(const char *path, const void *data, size_t n, mode_t mode, uid_t uid, gid_t gid) {
        return write_file(path, data, n, mode, uid, gid, false);
}

bool atomic_is_temp_name(const char *name, const char *target) {
        const char *p = startswith(name, target);

        if (!p || *p != '.')
                return false;
        p++;
        for (unsigned i = 0; i < 16; i++, p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return streq(p, ".tmp");
}
