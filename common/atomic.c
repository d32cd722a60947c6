/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <sys/file.h>
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

/* Opens a new temporary file for name (relative to dir_fd) beside it:
 * "NAME.<16 hex>.tmp". */
static int open_temp(int dir_fd, const char *name, char **ret_tmp) {
        _cleanup_free_ char *tmp = NULL;
        int fd, r;

        r = fault(ATOMIC_OPEN, name);
        if (r < 0)
                return r;

        for (unsigned attempt = 0;; attempt++) {
                free(tmp);
                if (asprintf(&tmp, "%s.%016llx.tmp", name, temp_suffix()) < 0) {
                        tmp = NULL;
                        return -ENOMEM;
                }
                /* 0600 whatever the final mode: nobody else may open it
                 * while it is ours, and the umask can only narrow it. */
                fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
                if (fd >= 0)
                        break;
                if (errno != EEXIST || attempt >= 16)
                        return -errno;
        }
        *ret_tmp = TAKE_PTR(tmp);
        return fd;
}

/* rename(), or with replace false a rename that fails with EEXIST where
 * name exists: RENAME_NOREPLACE, or link() on file systems that lack it. */
static int rename_temp(int dir_fd, const char *tmp, const char *name, bool replace) {
        if (replace)
                return renameat(dir_fd, tmp, dir_fd, name) < 0 ? -errno : 0;
        if (renameat2(dir_fd, tmp, dir_fd, name, RENAME_NOREPLACE) >= 0)
                return 0;
        if (errno != EINVAL && errno != ENOSYS)
                return -errno;
        if (linkat(dir_fd, tmp, dir_fd, name, 0) < 0)
                return -errno;
        (void) unlinkat(dir_fd, tmp, 0);
        return 0;
}

/* name is relative to dir_fd; with dir_fd AT_FDCWD it is the path, and
 * its directory is opened to be fsync()ed. */
static int write_file(int dir_fd, const char *name, const void *data, size_t n, mode_t mode, uid_t uid, gid_t gid,
                      bool replace) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r;

        fd = open_temp(dir_fd, name, &tmp);
        if (fd < 0)
                return fd;

        /* Owner first, then mode: chown() may clear mode bits, and both
         * come before the data, so the secret is never readable by anyone
         * the final file would not let read it. */
        if (uid != (uid_t) -1 || gid != (gid_t) -1) {
                r = fault(ATOMIC_FCHOWN, name);
                if (r < 0)
                        goto fail;
                if (fchown(fd, uid, gid) < 0)
                        goto fail_errno;
        }
        r = fault(ATOMIC_FCHMOD, name);
        if (r < 0)
                goto fail;
        if (fchmod(fd, mode) < 0)
                goto fail_errno;

        r = fault(ATOMIC_WRITE, name);
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
        r = fault(ATOMIC_FSYNC, name);
        if (r < 0)
                goto fail;
        if (fsync(fd) < 0)
                goto fail_errno;
        fd = safe_close(fd);

        r = fault(ATOMIC_RENAME, name);
        if (r < 0)
                goto fail;
        r = rename_temp(dir_fd, tmp, name, replace);
        if (r < 0)
                goto fail;

        /* The rename is durable only once the directory is; after this
         * point the complete file is in place whatever we return. */
        if (dir_fd == AT_FDCWD)
                return fsync_directory_of(name);
        r = fault(ATOMIC_FSYNC_DIR, name);
        if (r < 0)
                return r;
        return fsync(dir_fd) < 0 ? -errno : 0;

fail_errno:
        r = -errno;
fail:
        (void) unlinkat(dir_fd, tmp, 0);
        return r;
}

int atomic_write_file(const char *path, const void *data, size_t n, mode_t mode, uid_t uid, gid_t gid) {
        return write_file(AT_FDCWD, path, data, n, mode, uid, gid, true);
}

int atomic_create_file_at(int dir_fd, const char *name, const void *data, size_t n, mode_t mode, uid_t uid,
                          gid_t gid) {
        if (dir_fd < 0 || !name || strchr(name, '/'))
                return -EINVAL;
        return write_file(dir_fd, name, data, n, mode, uid, gid, false);
}

/* Opens path's directory, takes its exclusive flock() (released when the
 * returned fd is closed) and removes the temporary files of path that a
 * killed writer left: every locked writer starts here.  *ret_name points
 * into *ret_buf, which the caller frees. */
static int lock_directory_of(const char *path, char **ret_buf, const char **ret_name) {
        _cleanup_free_ char *dir = strdup(path), *name = strdup(path);
        _cleanup_close_ int dir_fd = -EBADF;
        const char *base;

        if (!dir || !name)
                return -ENOMEM;
        base = basename(name);
        if (!base[0] || strchr(base, '/') || streq(base, ".") || streq(base, ".."))
                return -EINVAL;
        dir_fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0)
                return -errno;
        if (flock(dir_fd, LOCK_EX) < 0)
                return -errno;
        /* Failing to remove them is no reason not to write. */
        (void) atomic_remove_temp_files(dir_fd, &base, 1);
        *ret_name = base;
        *ret_buf = TAKE_PTR(name);
        return TAKE_FD(dir_fd);
}

int atomic_write_file_locked(const char *path, const void *data, size_t n, mode_t mode, uid_t uid, gid_t gid,
                             bool replace) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_close_ int dir_fd = -EBADF;
        const char *base;

        dir_fd = lock_directory_of(path, &buf, &base);
        if (dir_fd < 0)
                return dir_fd;
        return write_file(dir_fd, base, data, n, mode, uid, gid, replace);
}

int atomic_update_file_locked(const char *path, AtomicEditFn edit, void *userdata, mode_t mode, uid_t uid,
                              gid_t gid) {
        _cleanup_free_ char *buf = NULL, *data = NULL;
        _cleanup_close_ int dir_fd = -EBADF;
        const char *base;
        size_t n = 0;
        int r;

        if (!edit)
                return -EINVAL;
        dir_fd = lock_directory_of(path, &buf, &base);
        if (dir_fd < 0)
                return dir_fd;
        /* The read happens under the lock too: read before it, another
         * writer's change made in between would be written over. */
        r = edit(path, &data, &n, &mode, userdata);
        if (r <= 0)
                return r;
        r = write_file(dir_fd, base, data, n, mode, uid, gid, true);
        return r < 0 ? r : 1;
}

/* "TARGET.<16 hex>.tmp", as open_temp() names them. */
static bool is_temp_name(const char *name, const char *target) {
        const char *p = startswith(name, target);

        if (!p || *p != '.')
                return false;
        p++;
        for (unsigned i = 0; i < 16; i++, p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return streq(p, ".tmp");
}

/* Skips one or more decimal digits. */
static const char *skip_digits(const char *p) {
        const char *start = p;

        while (*p >= '0' && *p <= '9')
                p++;
        return p > start ? p : NULL;
}

/* ".TARGET.<pid>.<usec>.tmp": how seedbed 0.1 named a LUKS key file
 * while writing it, before its key files were written here too. */
static bool is_legacy_temp_name(const char *name, const char *target) {
        const char *p;

        if (name[0] != '.')
                return false;
        p = startswith(name + 1, target);
        if (!p || *p != '.')
                return false;
        p = skip_digits(p + 1);
        if (!p || *p != '.')
                return false;
        p = skip_digits(p + 1);
        return p && streq(p, ".tmp");
}

bool atomic_is_temp_name(const char *name, const char *target) {
        return is_temp_name(name, target) || is_legacy_temp_name(name, target);
}

int atomic_remove_temp_files(int dir_fd, const char *const *targets, size_t n_targets) {
        _cleanup_close_ int fd = -EBADF;
        int removed = 0, r = 0;
        DIR *d;

        if (dir_fd < 0 || (!targets && n_targets > 0))
                return -EINVAL;
        /* A descriptor of its own: closedir() closes the one it reads. */
        fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d)
                return -errno;
        fd = -EBADF;

        for (struct dirent *de; (de = readdir(d));) {
                bool ours = false;
                struct stat st;

                for (size_t i = 0; i < n_targets && !ours; i++)
                        ours = atomic_is_temp_name(de->d_name, targets[i]);
                /* Only files: nothing of ours is a link or a directory. */
                if (!ours || fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                        continue;
                if (unlinkat(dir_fd, de->d_name, 0) < 0) {
                        if (r == 0 && errno != ENOENT)
                                r = -errno;
                } else
                        removed++;
        }
        closedir(d);
        return r < 0 ? r : removed;
}
