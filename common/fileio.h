/* SPDX-License-Identifier: MIT */
#pragma once

/* File and fd helpers.  All return 0 (or a count) or -errno. */

#include <sys/types.h>
#include <time.h>

#include "macro.h"

/* Reads a whole file, at most max bytes (-EFBIG beyond), NUL-terminated. */
int read_full_file(const char *path, size_t max, char **ret, size_t *ret_size);

/* Reads a whole file that must be a regular file of at most max bytes,
 * without following a link or waiting on a FIFO someone left at the path:
 * for records a less privileged process could plant.  -EBADMSG for a
 * link, anything but a regular file, or a larger one. */
int read_regular_file(const char *path, size_t max, char **ret, size_t *ret_size);

/* Reads the first line of a small file (sysfs attributes), without the
 * newline. */
int read_one_line_file(const char *path, char **ret);

/* The running boot's ID (/proc/sys/kernel/random/boot_id). */
int read_boot_id(char **ret);

/* Writes s to an existing file such as a sysfs attribute, in one write(). */
int write_string_file(const char *path, const char *s);

/* Replacing a file so that a crash leaves the old one or the whole new
 * one: atomic_write_file() in atomic.h. */

/* read()/write() until n bytes moved; loop_read returns the count read,
 * which is less than n only at end of file. */
ssize_t loop_read(int fd, void *buf, size_t n);
int loop_write(int fd, const void *buf, size_t n);

/* mkdir -p: creates missing parents with mode; existing ones are fine. */
int mkdir_p(const char *path, mode_t mode);

/* Joins a root prefix and an absolute path; root NULL or "/" gives the
 * path itself.  Returns NULL on allocation failure. */
char *path_join_root(const char *root, const char *path);

/* Whether the tree at root (NULL: /) is an initramfs: systemd's and
 * dracut's have /etc/initrd-release (the os-release(5) convention);
 * initramfs-tools' has none, but its /scripts/functions and
 * /conf/initramfs.conf, which no real root has. */
bool in_initrd_at(const char *root);

/* Microseconds on the given clock. */
usec_t now_usec(clockid_t clock);

/* Trims trailing whitespace in place and returns s. */
char *strstrip_trailing(char *s);

/* A string split at whitespace into a NULL-terminated array; -ENOMEM. */
int strv_split_whitespace(const char *s, char ***ret);
size_t strv_length(char *const *l);
bool strv_contains(char *const *l, const char *s);

/* Sets O_NONBLOCK on an fd handed to us (inherited sockets). */
int fd_set_nonblock(int fd);
