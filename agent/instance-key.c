/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "atomic.h"
#include "fileio.h"
#include "instance-key.h"

#define UUID_LABEL "seedbed instance product_uuid v1"
#define KEY_ID_LABEL "seedbed instance key id v1"

static InstanceKeyRandomFn random_fn;

void instance_key_set_random(InstanceKeyRandomFn fn) {
        random_fn = fn;
}

/* The key is all that keeps a low-entropy UUID (Dell's come from the
 * service tag) from being guessed back from its hash: only bytes from a
 * ready CRNG, and no waiting for one in early boot. */
static int random_bytes(void *buf, size_t n) {
        ssize_t k;

        if (random_fn)
                return random_fn(buf, n);
        do
                k = getrandom(buf, n, GRND_NONBLOCK);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return -errno;
        return (size_t) k == n ? 0 : -EIO;
}

int instance_key_load(const char *path, uint8_t ret[static INSTANCE_KEY_SIZE]) {
        _cleanup_close_ int fd = -EBADF;
        uint8_t buf[INSTANCE_KEY_SIZE + 1];
        struct stat st;
        ssize_t k;

        /* Never through a link, nor waiting on a FIFO left in its place. */
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return errno == ELOOP ? -EBADMSG : -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        /* Whoever else may read it knows it, and whoever else owns it may
         * have chosen it (or may read it tomorrow): not a key to hash a
         * UUID that only we may read with.  Replaced, as any file that is
         * no key. */
        if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0077) != 0 ||
            st.st_size != INSTANCE_KEY_SIZE)
                return -EBADMSG;
        /* One byte more than a key, so a file that grew shows as one. */
        k = loop_read(fd, buf, sizeof buf);
        if (k == INSTANCE_KEY_SIZE)
                memcpy(ret, buf, INSTANCE_KEY_SIZE);
        explicit_bzero(buf, sizeof buf);
        if (k < 0)
                return (int) k;
        return k == INSTANCE_KEY_SIZE ? 0 : -EBADMSG;
}

int instance_key_make(const char *path, bool replace, uint8_t ret[static INSTANCE_KEY_SIZE]) {
        _cleanup_free_ char *dir = strdup(path);
        uint8_t key[INSTANCE_KEY_SIZE];
        int r;

        if (!dir)
                return -ENOMEM;
        r = random_bytes(key, sizeof key);
        if (r < 0) {
                explicit_bzero(key, sizeof key);
                return r;
        }

        r = mkdir_p(dirname(dir), 0755);
        if (r >= 0)
                r = atomic_write_file_locked(path, key, sizeof key, 0400, (uid_t) -1, (gid_t) -1, replace);
        explicit_bzero(key, sizeof key);
        /* Two agents at once: both go on with the key that won. */
        if (r < 0 && r != -EEXIST)
                return r;
        return instance_key_load(path, ret);
}

static int hmac_hex(const uint8_t key[static INSTANCE_KEY_SIZE], const char *label, const char *data,
                    char *ret, size_t n_hex) {
        /* The label with its NUL, so that no label is a prefix of another
         * label and its data. */
        uint8_t msg[128], md[EVP_MAX_MD_SIZE];
        size_t n_label = strlen(label) + 1, n_data = strlen(data);
        unsigned md_len = 0;

        if (n_label + n_data > sizeof msg || n_hex > 2 * 32)
                return -EINVAL;
        memcpy(msg, label, n_label);
        memcpy(msg + n_label, data, n_data);
        if (!HMAC(EVP_sha256(), key, INSTANCE_KEY_SIZE, msg, n_label + n_data, md, &md_len) || md_len != 32)
                return -EIO;
        for (size_t i = 0; i < n_hex / 2; i++)
                (void) snprintf(ret + 2 * i, 3, "%02x", md[i]);
        ret[n_hex] = 0;
        return 0;
}

int instance_uuid_hmac(const uint8_t key[static INSTANCE_KEY_SIZE], const char *uuid,
                       char ret[static INSTANCE_UUID_HMAC_HEX + 1]) {
        if (!uuid || !uuid[0])
                return -EINVAL;
        return hmac_hex(key, UUID_LABEL, uuid, ret, INSTANCE_UUID_HMAC_HEX);
}

int instance_key_id(const uint8_t key[static INSTANCE_KEY_SIZE], char ret[static INSTANCE_KEY_ID_HEX + 1]) {
        return hmac_hex(key, KEY_ID_LABEL, "", ret, INSTANCE_KEY_ID_HEX);
}
