/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "log.h"
#include "luks-keyfile.h"

/* cryptsetup's own limit for a key file (--keyfile-size default). */
#define KEY_FILE_MAX (8 * 1024 * 1024)

void luks_secret_erase(void *p, size_t n) {
        if (!p)
                return;
        explicit_bzero(p, n);
        free(p);
}

void secret_erasep(Secret *s) {
        luks_secret_erase(s->data, s->size);
        *s = (Secret) {};
}

int luks_random_blocking(void *buf, size_t n, _unused_ void *userdata) {
        uint8_t *p = buf;

        while (n > 0) {
                ssize_t k = getrandom(p, n, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

static int key_file_read(int fd, const char *path, void **ret, size_t *ret_size) {
        _cleanup_secret_ Secret s = {};
        struct stat st;
        ssize_t k;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADF;
        if (st.st_size <= 0)
                return -ENODATA;
        if (st.st_size > KEY_FILE_MAX)
                return -EFBIG;
        /* Somebody else's key file could be somebody else's key. */
        if (st.st_uid != geteuid())
                return -EPERM;
        if (st.st_mode & 0077)
                log_warning("Key file '%s' is readable by group or others (mode %04o); the volume's key may be "
                            "known to others.", path, (unsigned) (st.st_mode & 07777));

        /* One buffer of the final size: realloc() would leave copies of
         * the key in freed memory. */
        s.size = (size_t) st.st_size;
        s.data = malloc(s.size);
        if (!s.data)
                return -ENOMEM;
        k = loop_read(fd, s.data, s.size);
        if (k < 0)
                return (int) k;
        if ((size_t) k != s.size)
                return -EIO; /* changed under us */

        *ret = TAKE_PTR(s.data);
        *ret_size = s.size;
        s.size = 0;
        return 0;
}

/* Creates name in dir_fd with LUKS_KEY_FILE_SIZE random bytes, never
 * replacing a file: -EEXIST when one appeared meanwhile. */
static int key_file_create_at(int dir_fd, const char *name, LuksRandomFn get_random, void *userdata,
                              void **ret, size_t *ret_size) {
        _cleanup_secret_ Secret s = {};
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r;

        s.size = LUKS_KEY_FILE_SIZE;
        s.data = malloc(s.size);
        if (!s.data)
                return -ENOMEM;
        r = get_random(s.data, s.size, userdata);
        if (r < 0)
                return r;

        /* The directory is ours and 0700: the name need not be secret,
         * and O_EXCL makes a stale or planted one an error. */
        for (unsigned attempt = 0;; attempt++) {
                free(tmp);
                if (asprintf(&tmp, ".%s.%d.%llu.tmp", name, (int) getpid(),
                             (unsigned long long) now_usec(CLOCK_MONOTONIC) + attempt) < 0) {
                        tmp = NULL;
                        return -ENOMEM;
                }
                fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0400);
                if (fd >= 0)
                        break;
                if (errno != EEXIST || attempt >= 16)
                        return -errno;
        }

        /* The umask must not decide a secret's mode. */
        if (fchmod(fd, 0400) < 0)
                goto fail_errno;
        r = loop_write(fd, s.data, s.size);
        if (r < 0)
                goto fail;
        if (fsync(fd) < 0)
                goto fail_errno;
        fd = safe_close(fd);

        /* Never over an existing key: it may be the only way into a
         * volume.  RENAME_NOREPLACE, or link() on file systems that lack
         * it (both fail with EEXIST). */
        if (renameat2(dir_fd, tmp, dir_fd, name, RENAME_NOREPLACE) < 0) {
                if (errno != EINVAL && errno != ENOSYS)
                        goto fail_errno;
                if (linkat(dir_fd, tmp, dir_fd, name, 0) < 0)
                        goto fail_errno;
                (void) unlinkat(dir_fd, tmp, 0);
        }
        if (fsync(dir_fd) < 0)
                return -errno;

        *ret = TAKE_PTR(s.data);
        *ret_size = s.size;
        s.size = 0;
        return 0;

fail_errno:
        r = -errno;
fail:
        (void) unlinkat(dir_fd, tmp, 0);
        return r;
}

/* A crash between creating a temporary key file and renaming it leaves
 * ".NAME.<pid>.<usec>.tmp" behind: key bytes no volume uses.  Removed
 * before a new key is made. */
static void key_file_remove_stale(int dir_fd, const char *name) {
        _cleanup_free_ char *prefix = NULL;
        struct dirent *de;
        int fd;
        DIR *d;

        if (asprintf(&prefix, ".%s.", name) < 0)
                return;
        fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return;
        d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return;
        }
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);

                if (startswith(de->d_name, prefix) && l > 4 && streq(de->d_name + l - 4, ".tmp") &&
                    unlinkat(dir_fd, de->d_name, 0) >= 0)
                        log_debug("Removed stale temporary key file '%s'.", de->d_name);
        }
        closedir(d);
}

int luks_key_file_load(const char *path, bool create, LuksRandomFn get_random, void *userdata, void **ret,
                       size_t *ret_size) {
        _cleanup_free_ char *dir = NULL, *parent = NULL, *base = NULL;
        _cleanup_close_ int fd = -EBADF, dir_fd = -EBADF;
        bool created_dir = false;
        struct stat st;
        int r;

        /* No symlinks: under --root one could point out of the tree. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd >= 0)
                return key_file_read(fd, path, ret, ret_size);
        if (errno != ENOENT)
                return -errno;
        if (!create)
                return -ENOENT;

        dir = strdup(path);
        base = strdup(path);
        if (!dir || !base)
                return -ENOMEM;
        (void) dirname(dir);
        parent = strdup(dir);
        if (!parent)
                return -ENOMEM;
        r = mkdir_p(dirname(parent), 0755);
        if (r < 0)
                return r;
        if (mkdir(dir, 0700) >= 0)
                created_dir = true;
        else if (errno != EEXIST)
                return -errno;

        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (dir_fd < 0)
                return -errno;
        if (fstat(dir_fd, &st) < 0)
                return -errno;
        /* Whoever owns the directory can swap the key under us. */
        if (st.st_uid != geteuid())
                return -EPERM;
        if (created_dir) {
                if (fchmod(dir_fd, 0700) < 0)
                        return -errno;
        } else if (st.st_mode & 0077)
                /* Not ours to tighten: it could be /etc.  The key file
                 * itself is 0400. */
                log_notice("Key directory '%s' is accessible to group or others (mode %04o).", dir,
                           (unsigned) (st.st_mode & 07777));
        if (created_dir) {
                /* The new directory's entry must survive a crash too. */
                _cleanup_close_ int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (pfd >= 0)
                        (void) fsync(pfd);
        }

        key_file_remove_stale(dir_fd, basename(base));
        r = key_file_create_at(dir_fd, basename(base), get_random ?: luks_random_blocking, userdata, ret, ret_size);
        if (r == -EEXIST) {
                /* Another writer won; its key is the key. */
                fd = openat(dir_fd, basename(base), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
                if (fd < 0)
                        return -errno;
                return key_file_read(fd, path, ret, ret_size);
        }
        if (r < 0)
                return r;
        return 1;
}

const char *luks_key_file_strerror(int r) {
        switch (r) {
        case -EBADF:
                return "not a regular file";
        case -ENODATA:
                return "empty";
        case -EFBIG:
                return "larger than 8 MiB";
        case -EPERM:
                return "not owned by us (file or directory)";
        case -ELOOP:
                return "a symlink";
        default:
                return strerror(abs(r));
        }
}
