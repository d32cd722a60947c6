/* SPDX-License-Identifier: MIT */
#pragma once

/* A LUKS volume's key file: the passphrase of its keyslot 0, made once
 * and never replaced (it may be the only way into the volume), and the
 * erasing of secrets held in memory. */

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

/* The key file is the passphrase of keyslot 0: 512 random bits, as
 * systemd-cryptenroll's generated keys. */
#define LUKS_KEY_FILE_SIZE 64

/* Random bytes for secrets; 0 or -errno. */
typedef int (*LuksRandomFn)(void *buf, size_t n, void *userdata);

/* The default LuksRandomFn: getrandom() until n bytes, blocking (behind
 * the gate it returns at once; were it not, waiting beats a guessable
 * key).  userdata is ignored. */
int luks_random_blocking(void *buf, size_t n, void *userdata);

/* explicit_bzero() and free(). */
void luks_secret_erase(void *p, size_t n);

/* A secret with its size, erased when it goes out of scope. */
typedef struct Secret {
        void *data;
        size_t size;
} Secret;

void secret_erasep(Secret *s);
#define _cleanup_secret_ _cleanup_(secret_erasep)

/* A volume's key file at path (the full path, root included).  An
 * existing one is read: a regular file of 1 byte to 8 MiB (cryptsetup's
 * limit) owned by us, never through a symlink.  A missing one is made
 * when create is set: LUKS_KEY_FILE_SIZE bytes from get_random (NULL:
 * getrandom()), mode 0400, in a directory made 0700 if it is missing
 * (an existing one must be ours; its mode is left alone), written under
 * an O_EXCL temporary name, fsync()ed, renamed without replacing and the
 * directory fsync()ed: a crash leaves no key or the whole key.  Either
 * way the temporary files a killed run left beside it are removed: call
 * it only under the volume's disk lock.  The bytes go to ret (erase them with luks_secret_erase()).  Returns 1
 * created, 0 read, -ENOENT missing and !create, -ENODATA empty, -EFBIG,
 * -EBADF not a regular file, -ELOOP a symlink, -EPERM not ours. */
int luks_key_file_load(const char *path, bool create, LuksRandomFn get_random, void *userdata, void **ret,
                       size_t *ret_size);

/* Why luks_key_file_load() failed, in words. */
const char *luks_key_file_strerror(int r);
