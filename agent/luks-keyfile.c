/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"
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
        int r;

        s.size = LUKS_KEY_FILE_SIZE;
        s.data = malloc(s.size);
        if (!s.data)
                return -ENOMEM;
        r = get_random(s.data, s.size, userdata);
        if (r < 0)
                return r;

        /* Never over an existing key: it may be the only way into a
         * volume.  Mode 0400 whatever the umask, set before the key is
         * written. */
        r = atomic_create_file_at(dir_fd, name, s.data, s.size, 0400, (uid_t) -1, (gid_t) -1);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(s.data);
        *ret_size = s.size;
        s.size = 0;
        return 0;
}

/* A crash between creating a temporary key file and renaming it left key
 * bytes that no volume uses, or (atomic.c's link() fallback, killed
 * before its unlink) a second name of the key itself.  Our caller holds
 * the volume's disk lock: no other writer of this key is at work.
 * dir_fd -EBADF: path's directory is opened here. */
static void remove_temp_key_files(int dir_fd, const char *path) {
        _cleanup_free_ char *dir = strdup(path), *name = strdup(path);
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (!dir || !name)
                return;
        if (dir_fd < 0) {
                fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0) {
                        log_debug_errno(errno, "Failed to open the directory of '%s', ignoring: %m", path);
                        return;
                }
                dir_fd = fd;
        }
        r = atomic_remove_temp_files(dir_fd, (const char *const[]) { basename(name) }, 1);
        if (r > 0)
                log_debug("Removed %d temporary key file(s) of '%s' left by an interrupted run.", r, path);
        else if (r < 0)
                log_debug_errno(r, "Failed to remove temporary key files of '%s', ignoring: %m", path);
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
        if (fd >= 0) {
                /* The key being there does not make its leftovers go. */
                remove_temp_key_files(-EBADF, path);
                return key_file_read(fd, path, ret, ret_size);
        }
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

        remove_temp_key_files(dir_fd, path);
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
