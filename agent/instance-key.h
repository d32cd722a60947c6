/* SPDX-License-Identifier: MIT */
#pragma once

/* The instance key: what the records hash the SMBIOS UUID with, so that
 * the records can be world-readable while the UUID (root-only in sysfs)
 * is not.  Why it is keyed, and how the hash is compared: instance.h. */

#include <stdint.h>

#include "macro.h"

#define INSTANCE_KEY_FILE LOCALSTATEDIR "/lib/seedbed/instance-key"
#define INSTANCE_KEY_SIZE 32
/* HMAC-SHA256 in lowercase hex, and the key's ID (instance_key_id()). */
#define INSTANCE_UUID_HMAC_HEX 64
#define INSTANCE_KEY_ID_HEX 16

/* Reads the key at path.  -ENOENT when there is none, -EBADMSG when the
 * file is not one (a link, not a regular file, not INSTANCE_KEY_SIZE
 * bytes, owned by another user than the effective one, or open to group
 * or others in its mode), or -errno; ret is written only on success. */
int instance_key_load(const char *path, uint8_t ret[static INSTANCE_KEY_SIZE]);

/* Makes a new key at path (0400, atomically, its directory 0755), and
 * returns the one in place: another writer's when it made one first.
 * replace: over an existing file (one instance_key_load() refused).
 * -EAGAIN when the kernel's CRNG is not ready: never blocks, and never
 * makes a key of weaker bytes. */
int instance_key_make(const char *path, bool replace, uint8_t ret[static INSTANCE_KEY_SIZE]);

/* Where instance_key_make() takes its bytes, for tests: fills buf (0) or
 * fails as getrandom(GRND_NONBLOCK) would (-EAGAIN: the CRNG is not
 * ready).  NULL, as the program always has it: getrandom(). */
typedef int (*InstanceKeyRandomFn)(void *buf, size_t n);
void instance_key_set_random(InstanceKeyRandomFn fn);

/* HMAC-SHA256(key, "seedbed instance product_uuid v1\0" || uuid) in
 * lowercase hex; uuid is normalised (instance_uuid_normalize()).
 * -EINVAL for an empty uuid, -EIO when libcrypto fails. */
int instance_uuid_hmac(const uint8_t key[static INSTANCE_KEY_SIZE], const char *uuid,
                       char ret[static INSTANCE_UUID_HMAC_HEX + 1]);

/* Which key a hash was made with, recorded beside it: the first
 * INSTANCE_KEY_ID_HEX digits of HMAC-SHA256(key, "seedbed instance key
 * id v1\0").  It tells nothing of the key or the UUID. */
int instance_key_id(const uint8_t key[static INSTANCE_KEY_SIZE], char ret[static INSTANCE_KEY_ID_HEX + 1]);
