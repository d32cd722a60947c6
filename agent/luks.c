/* SPDX-License-Identifier: MIT */
#include <blkid.h>
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <libcryptsetup.h>
#include <libgen.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "crypttab.h"
#include "fileio.h"
#include "log.h"
#include "luks.h"

/* cryptsetup's own limit for a key file (--keyfile-size default). */
#define KEY_FILE_MAX (8 * 1024 * 1024)
/* LUKS2 stores the label in 48 bytes, NUL included. */
#define LUKS2_LABEL_MAX 47
/* The keyslot's passphrase is 512 random bits, not something a person
 * chose: a slow PBKDF protects nothing and costs every boot time and
 * (Argon2) memory a small guest may not have.  PBKDF2 at the minimum
 * libcryptsetup accepts, as systemd-cryptenroll does for its random keys.
 * A passphrase added later by hand gets cryptsetup's defaults. */
#define KEYSLOT_PBKDF_ITERATIONS 1000
/* A wipe loop that keeps finding signatures is not making progress. */
#define WIPE_MAX_SIGNATURES 64

static const char *const luks_action_table[_LUKS_ACTION_MAX] = {
        [LUKS_ACTION_FORMATTED] = "formatted",
        [LUKS_ACTION_ALREADY_DONE] = "already-done",
        [LUKS_ACTION_REFUSED] = "refused",
        [LUKS_ACTION_FAILED] = "failed",
        [LUKS_ACTION_NOT_FOUND] = "not-found",
};

const char *luks_action_to_string(LuksAction a) {
        if (a < 0 || a >= _LUKS_ACTION_MAX)
                return NULL;
        return luks_action_table[a];
}

static const char *const luks_step_table[_LUKS_STEP_MAX] = {
        [LUKS_STEP_SKIPPED] = "skipped",
        [LUKS_STEP_DONE] = "done",
        [LUKS_STEP_ALREADY] = "already",
        [LUKS_STEP_FAILED] = "failed",
};

const char *luks_step_to_string(LuksStep s) {
        if (s < 0 || s >= _LUKS_STEP_MAX)
                return NULL;
        return luks_step_table[s];
}

static const char *const device_spec_tag_table[_DEVICE_SPEC_KIND_MAX] = {
        [DEVICE_SPEC_PATH] = NULL,
        [DEVICE_SPEC_LABEL] = "LABEL",
        [DEVICE_SPEC_UUID] = "UUID",
        [DEVICE_SPEC_PARTLABEL] = "PARTLABEL",
        [DEVICE_SPEC_PARTUUID] = "PARTUUID",
};

const char *device_spec_kind_to_tag(DeviceSpecKind k) {
        if (k < 0 || k >= _DEVICE_SPEC_KIND_MAX)
                return NULL;
        return device_spec_tag_table[k];
}

static void crypt_freep(struct crypt_device **cd) {
        if (*cd)
                crypt_free(*cd);
}
#define _cleanup_crypt_free_ _cleanup_(crypt_freep)

static void blkid_free_probep(blkid_probe *pr) {
        if (*pr)
                blkid_free_probe(*pr);
}
#define _cleanup_blkid_probe_ _cleanup_(blkid_free_probep)

static void blkid_put_cachep(blkid_cache *c) {
        if (*c)
                blkid_put_cache(*c);
}

void luks_secret_erase(void *p, size_t n) {
        if (!p)
                return;
        explicit_bzero(p, n);
        free(p);
}

/* A secret with its size, erased when it goes out of scope. */
typedef struct Secret {
        void *data;
        size_t size;
} Secret;

static void secret_erasep(Secret *s) {
        luks_secret_erase(s->data, s->size);
        *s = (Secret) {};
}
#define _cleanup_secret_ _cleanup_(secret_erasep)

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

/* libcryptsetup says what went wrong only through its log callback.  The
 * first error since the last reset is the cause; what follows is mostly
 * consequences.  The agent calls libcryptsetup from one thread. */
static char crypt_error[256];

static void crypt_log_capture(int level, const char *msg, _unused_ void *userdata) {
        size_t l = strlen(msg);

        while (l > 0 && msg[l - 1] == '\n')
                l--;
        if (level == CRYPT_LOG_ERROR && !crypt_error[0]) {
                /* Some messages run over two lines; ours are one. */
                (void) snprintf(crypt_error, sizeof crypt_error, "%.*s", (int) l, msg);
                for (char *p = crypt_error; *p; p++)
                        if (*p == '\n')
                                *p = ' ';
        }
        log_debug("libcryptsetup: %.*s", (int) l, msg);
}

static void crypt_error_reset(void) {
        crypt_error[0] = 0;
        crypt_set_log_callback(NULL, crypt_log_capture, NULL);
}

/* The reason for a libcryptsetup failure: its own message if it gave
 * one, else the error code. */
static const char *crypt_reason(int r) {
        return crypt_error[0] ? crypt_error : strerror(abs(r));
}

static int crypt_open_device(const char *path, struct crypt_device **ret) {
        struct crypt_device *cd;
        int r;

        r = crypt_init(&cd, path);
        if (r < 0)
                return r;
        crypt_set_log_callback(cd, crypt_log_capture, NULL);
        *ret = cd;
        return 0;
}

/* ---- device specs ---- */

int device_spec_parse(const char *s, DeviceSpec *ret, const char **ret_error) {
        DeviceSpec spec = {};
        const char *eq, *value;
        size_t tag_len, l;

        if (!s || !s[0])
                return *ret_error = "is empty", -EINVAL;
        if (strlen(s) >= sizeof spec.value)
                return *ret_error = "is too long", -EINVAL;
        for (const char *p = s; *p; p++)
                if (iscntrl((unsigned char) *p))
                        return *ret_error = "contains control characters", -EINVAL;

        if (s[0] == '/') {
                spec.kind = DEVICE_SPEC_PATH;
                strcpy(spec.value, s);
                *ret = spec;
                return 0;
        }

        eq = strchr(s, '=');
        if (!eq)
                return *ret_error = "must be an absolute path (/dev/...) or LABEL=, UUID=, PARTLABEL=, PARTUUID=",
                       -EINVAL;
        tag_len = (size_t) (eq - s);
        spec.kind = _DEVICE_SPEC_KIND_INVALID;
        for (DeviceSpecKind k = 0; k < _DEVICE_SPEC_KIND_MAX; k++) {
                const char *t = device_spec_tag_table[k];
                if (t && strlen(t) == tag_len && strncmp(s, t, tag_len) == 0)
                        spec.kind = k;
        }
        if (spec.kind < 0)
                return *ret_error = "has an unknown tag (use LABEL=, UUID=, PARTLABEL=, PARTUUID= or an absolute path)",
                       -EINVAL;

        /* LABEL="my data", as blkid and fstab write it. */
        value = eq + 1;
        l = strlen(value);
        if (l >= 2 && value[0] == '"' && value[l - 1] == '"') {
                value++;
                l -= 2;
        }
        if (l == 0)
                return *ret_error = "has an empty value", -EINVAL;
        memcpy(spec.value, value, l);
        spec.value[l] = 0;

        *ret = spec;
        return 0;
}

int device_spec_validate(const char *s, const char **ret_error) {
        DeviceSpec spec;
        return device_spec_parse(s, &spec, ret_error);
}

static int resolve_path(const char *path, char **ret_path, char *error, size_t error_size) {
        char real[PATH_MAX];
        struct stat st;

        if (!realpath(path, real)) {
                if (errno == ENOENT || errno == ENOTDIR) {
                        (void) snprintf(error, error_size, "no device '%s'", path);
                        return -ENODEV;
                }
                int e = errno;
                (void) snprintf(error, error_size, "cannot resolve '%s': %s", path, strerror(e));
                return -e;
        }
        if (stat(real, &st) < 0) {
                int e = errno;
                (void) snprintf(error, error_size, "cannot stat '%s': %s", real, strerror(e));
                return -e;
        }
        if (!S_ISBLK(st.st_mode)) {
                (void) snprintf(error, error_size, "'%s' is not a block device", real);
                return -ENOTBLK;
        }
        *ret_path = strdup(real);
        return *ret_path ? 0 : -ENOMEM;
}

int device_spec_resolve(const DeviceSpec *spec, char **ret_path, char *error, size_t error_size) {
        _cleanup_(blkid_put_cachep) blkid_cache cache = NULL;
        _cleanup_free_ char *found = NULL;
        const char *tag = device_spec_kind_to_tag(spec->kind);
        char others[512] = "";
        blkid_dev_iterate iter;
        blkid_dev dev;
        unsigned n = 0;

        if (spec->kind == DEVICE_SPEC_PATH)
                return resolve_path(spec->value, ret_path, error, error_size);
        if (!tag)
                return -EINVAL;

        /* A private cache that is never written: the machine's
         * /run/blkid is not ours to change, least of all under --root,
         * and a fresh scan cannot be stale. */
        if (blkid_get_cache(&cache, "/dev/null") < 0)
                return -ENOMEM;

        found = blkid_evaluate_tag(tag, spec->value, &cache);
        if (!found) {
                (void) snprintf(error, error_size, "no device with %s=%s", tag, spec->value);
                return -ENODEV;
        }

        /* blkid_evaluate_tag() takes the first udev link or scan hit.
         * Images cloned from one template share labels and UUIDs: a
         * second device with the tag makes the spec ambiguous, and
         * picking one could format the wrong disk. */
        (void) blkid_probe_all(cache);
        iter = blkid_dev_iterate_begin(cache);
        if (iter) {
                (void) blkid_dev_set_search(iter, tag, spec->value);
                while (blkid_dev_next(iter, &dev) == 0) {
                        const char *name = blkid_dev_devname(dev);
                        char real[PATH_MAX], real_found[PATH_MAX];

                        /* The same device under another name is no rival. */
                        if (name && realpath(name, real) && realpath(found, real_found) &&
                            streq(real, real_found))
                                continue;
                        n++;
                        if (name) {
                                size_t l = strlen(others);
                                (void) snprintf(others + l, sizeof others - l, "%s'%s'", l ? ", " : "", name);
                        }
                }
                blkid_dev_iterate_end(iter);
        }
        if (n > 0) {
                (void) snprintf(error, error_size, "%s=%s is ambiguous: '%s' and %s carry it", tag, spec->value,
                                found, others);
                return -ENOTUNIQ;
        }

        return resolve_path(found, ret_path, error, error_size);
}

/* ---- probing ---- */

typedef enum ProbeVerdict {
        PROBE_EMPTY,
        PROBE_LUKS2, /* a LUKS2 header and nothing else */
        PROBE_OTHER,
} ProbeVerdict;

static void append(char *buf, size_t size, const char *format, ...) _printf_(3, 4);
static void append(char *buf, size_t size, const char *format, ...) {
        size_t l = strlen(buf);
        va_list ap;

        if (l >= size - 1)
                return;
        va_start(ap, format);
        (void) vsnprintf(buf + l, size - l, format, ap);
        va_end(ap);
}

/* Labels come from the disk: no control characters into our logs. */
static void append_clean(char *buf, size_t size, const char *s) {
        size_t l = strlen(buf);

        for (; *s && l + 1 < size; s++)
                buf[l++] = iscntrl((unsigned char) *s) ? '?' : *s;
        buf[l] = 0;
}

static const char *lookup(blkid_probe pr, const char *name) {
        const char *v = NULL;

        if (blkid_probe_lookup_value(pr, name, &v, NULL) < 0)
                return NULL;
        return v;
}

/* "ext4 filesystem (UUID ..., LABEL "...")", "crypto_LUKS version 1
 * (UUID ...)", "LVM2_member (UUID ...)", "swap (UUID ...)". */
static void describe_superblock(blkid_probe pr, char *buf, size_t size) {
        const char *type = lookup(pr, "TYPE"), *usage = lookup(pr, "USAGE"), *version = lookup(pr, "VERSION"),
                   *uuid = lookup(pr, "UUID"), *label = lookup(pr, "LABEL");
        bool paren = false;

        if (!type)
                return;
        if (buf[0])
                append(buf, size, ", ");
        append_clean(buf, size, type);
        if (streq_ptr(usage, "filesystem"))
                append(buf, size, " filesystem");
        else if (version && streq_ptr(usage, "crypto"))
                append(buf, size, " version %s", version);
        if (uuid) {
                append(buf, size, " (UUID ");
                append_clean(buf, size, uuid);
                paren = true;
        }
        if (label && label[0]) {
                append(buf, size, "%sLABEL \"", paren ? ", " : " (");
                append_clean(buf, size, label);
                append(buf, size, "\"");
                paren = true;
        }
        if (blkid_probe_has_value(pr, "SBBADCSUM")) {
                append(buf, size, "%sbad checksum", paren ? ", " : " (");
                paren = true;
        }
        if (paren)
                append(buf, size, ")");
}

/* "gpt partition table (PTUUID ...)", "dos partition table". */
static void describe_partitions(blkid_probe pr, char *buf, size_t size) {
        const char *type = lookup(pr, "PTTYPE"), *uuid = lookup(pr, "PTUUID");

        if (!type)
                return;
        if (buf[0])
                append(buf, size, ", ");
        append_clean(buf, size, type);
        append(buf, size, " partition table");
        if (uuid) {
                append(buf, size, " (PTUUID ");
                append_clean(buf, size, uuid);
                append(buf, size, ")");
        }
}

/* A probe on fd with one or both chains, asking for everything that
 * tells a person what is there, and for the magic offsets a wipe needs.
 * A damaged filesystem (bad superblock checksum) is still someone's data:
 * it counts.  GPT counts even behind a broken protective MBR. */
static int probe_new(int fd, bool superblocks, bool partitions, blkid_probe *ret) {
        blkid_probe pr;

        pr = blkid_new_probe();
        if (!pr)
                return -ENOMEM;
        errno = 0;
        if (blkid_probe_set_device(pr, fd, 0, 0) < 0) {
                blkid_free_probe(pr);
                return errno > 0 ? -errno : -EIO;
        }
        (void) blkid_probe_enable_superblocks(pr, superblocks);
        (void) blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID |
                                                         BLKID_SUBLKS_USAGE | BLKID_SUBLKS_VERSION |
                                                         BLKID_SUBLKS_MAGIC | BLKID_SUBLKS_BADCSUM);
        (void) blkid_probe_enable_partitions(pr, partitions);
        (void) blkid_probe_set_partitions_flags(pr, BLKID_PARTS_FORCE_GPT | BLKID_PARTS_MAGIC);
        *ret = pr;
        return 0;
}

/* What is on the device, described in found.  Both chains, safe mode:
 * an ambivalent result (two filesystems' signatures) is something, and
 * then every signature is named.  ret_luks says whether a LUKS header is
 * among them, clean or not. */
static int probe_device(int fd, ProbeVerdict *ret, bool *ret_luks, char *found, size_t size) {
        _cleanup_blkid_probe_ blkid_probe pr = NULL;
        int r;

        found[0] = 0;
        *ret_luks = false;
        r = probe_new(fd, true, true, &pr);
        if (r < 0)
                return r;

        r = blkid_do_safeprobe(pr);
        if (r == 1) {
                *ret = PROBE_EMPTY;
                return 0;
        }
        if (r == 0) {
                const char *type = lookup(pr, "TYPE"), *version = lookup(pr, "VERSION");

                describe_partitions(pr, found, size);
                describe_superblock(pr, found, size);
                *ret_luks = streq_ptr(type, "crypto_LUKS");
                *ret = streq_ptr(type, "crypto_LUKS") && streq_ptr(version, "2") && !lookup(pr, "PTTYPE")
                               ? PROBE_LUKS2
                               : PROBE_OTHER;
                return 0;
        }
        if (r == -2) {
                _cleanup_blkid_probe_ blkid_probe sb = NULL, pt = NULL;
                char list[512] = "";

                /* Safe mode stops at "more than one"; walk each chain
                 * alone to name them all. */
                r = probe_new(fd, true, false, &sb);
                if (r < 0)
                        return r;
                for (unsigned i = 0; i < WIPE_MAX_SIGNATURES && blkid_do_probe(sb) == 0; i++) {
                        describe_superblock(sb, list, sizeof list);
                        if (streq_ptr(lookup(sb, "TYPE"), "crypto_LUKS"))
                                *ret_luks = true;
                }
                r = probe_new(fd, false, true, &pt);
                if (r < 0)
                        return r;
                if (blkid_do_safeprobe(pt) == 0)
                        describe_partitions(pt, list, sizeof list);
                append(found, size, "ambivalent signatures: %s", list);
                *ret = PROBE_OTHER;
                return 0;
        }
        return -EIO;
}

/* Destroys every signature libblkid finds, superblocks and partition
 * tables alike (a GPT's backup header at the end of the disk included),
 * the way cryptsetup's own luksFormat does before it writes a header.
 * The library's crypt_format() would only overwrite the first 16 MiB:
 * a stale backup GPT or a RAID superblock at the end would survive and
 * invite some tool to "repair" the disk over our header later.  What was
 * wiped is listed in wiped. */
static int wipe_signatures(const char *path, char *wiped, size_t size) {
        _cleanup_close_ int fd = -EBADF;
        bool partition_table = false;
        int r;

        fd = open(path, O_RDWR | O_CLOEXEC | O_EXCL | O_NOCTTY);
        if (fd < 0)
                return -errno;

        for (int chain = 0; chain < 2; chain++) {
                _cleanup_blkid_probe_ blkid_probe pr = NULL;
                unsigned n = 0;

                r = probe_new(fd, chain == 0, chain == 1, &pr);
                if (r < 0)
                        return r;
                for (;;) {
                        char one[256] = "";

                        r = blkid_do_probe(pr);
                        if (r == 1)
                                break;
                        if (r < 0)
                                return -EIO;
                        if (++n > WIPE_MAX_SIGNATURES)
                                return -ELOOP;

                        if (chain == 0)
                                describe_superblock(pr, one, sizeof one);
                        else {
                                describe_partitions(pr, one, sizeof one);
                                partition_table = true;
                        }
                        /* Moves the probe back a step, so the next
                         * blkid_do_probe() sees what this one hid (a GPT's
                         * backup once the primary is gone). */
                        errno = 0;
                        if (blkid_do_wipe(pr, false) < 0)
                                return errno > 0 ? -errno : -EIO;
                        if (!strstr(wiped, one))
                                append(wiped, size, "%s%s", wiped[0] ? ", " : "", one);
                }
        }

        if (fsync(fd) < 0)
                return -errno;
        /* The kernel still has the partitions of a table we wiped; a stale
         * /dev/vdb1 written to later would land inside the new volume.  Not
         * every device has partitions (EINVAL): nothing to drop then. */
        if (partition_table && ioctl(fd, BLKRRPART) < 0)
                log_debug_errno(errno, "Re-reading the partition table of '%s' failed, ignoring: %m", path);
        return 0;
}

/* ---- key files ---- */

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

/* ---- libcryptsetup ---- */

/* Writes the LUKS2 header and keyslot 0: our volume key (never one
 * libcryptsetup reads from /dev/urandom on its own), the key file's
 * bytes as passphrase. */
static int luks_format(const char *device, const void *volume_key, const Secret *key, const char *label,
                       char *uuid, size_t uuid_size) {
        _cleanup_crypt_free_ struct crypt_device *cd = NULL;
        struct crypt_pbkdf_type pbkdf = {
                .type = CRYPT_KDF_PBKDF2,
                .hash = "sha512",
                .iterations = KEYSLOT_PBKDF_ITERATIONS,
                .flags = CRYPT_PBKDF_NO_BENCHMARK,
        };
        struct crypt_params_luks2 params = {
                .pbkdf = &pbkdf,
                .label = label,
                .subsystem = LUKS_SUBSYSTEM,
        };
        int r;

        r = crypt_open_device(device, &cd);
        if (r < 0)
                return r;
        r = crypt_format(cd, CRYPT_LUKS2, "aes", "xts-plain64", NULL, volume_key, LUKS_VOLUME_KEY_SIZE, &params);
        if (r < 0)
                return r;
        r = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, volume_key, LUKS_VOLUME_KEY_SIZE, key->data,
                                            key->size);
        if (r < 0)
                return r;
        (void) snprintf(uuid, uuid_size, "%s", strempty(crypt_get_uuid(cd)));
        return 0;
}

typedef struct LuksHeader {
        bool luks2;
        char uuid[40];
        char label[LUKS2_LABEL_MAX + 1];
        bool ours;        /* our subsystem mark */
        unsigned keyslots; /* in use */
        bool opens;       /* the key file opens a keyslot */
} LuksHeader;

/* Reads a LUKS header (either version) and, on LUKS2, tries the key (key
 * NULL: no key file).  Trying needs no device-mapper:
 * crypt_activate_by_passphrase() with no name only unlocks a keyslot. */
static int luks_inspect(const char *device, const Secret *key, LuksHeader *ret) {
        _cleanup_crypt_free_ struct crypt_device *cd = NULL;
        LuksHeader h = {};
        int r, max;

        r = crypt_open_device(device, &cd);
        if (r < 0)
                return r;
        r = crypt_load(cd, NULL, NULL);
        if (r < 0)
                return r;
        h.luks2 = streq_ptr(crypt_get_type(cd), CRYPT_LUKS2);
        (void) snprintf(h.uuid, sizeof h.uuid, "%s", strempty(crypt_get_uuid(cd)));
        if (!h.luks2) {
                /* LUKS1 has no label or subsystem: never ours. */
                *ret = h;
                return 0;
        }
        (void) snprintf(h.label, sizeof h.label, "%s", strempty(crypt_get_label(cd)));
        h.ours = streq_ptr(crypt_get_subsystem(cd), LUKS_SUBSYSTEM);
        max = crypt_keyslot_max(CRYPT_LUKS2);
        for (int i = 0; i < max; i++) {
                crypt_keyslot_info k = crypt_keyslot_status(cd, i);
                if (k == CRYPT_SLOT_ACTIVE || k == CRYPT_SLOT_ACTIVE_LAST || k == CRYPT_SLOT_UNBOUND)
                        h.keyslots++;
        }
        if (key && key->data) {
                r = crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT, key->data, key->size, 0);
                if (r >= 0)
                        h.opens = true;
                /* -EPERM: no keyslot takes this key; -ENOENT: there
                 * is no keyslot to try. */
                else if (r != -EPERM && r != -ENOENT)
                        return r;
        }
        *ret = h;
        return 0;
}

/* /dev/mapper/NAME for the volume: LUKS_STEP_ALREADY when it is active
 * on this volume, -EEXIST when the name is taken by another. */
static int luks_activate(const char *device, const char *name, const char *uuid, const Secret *key,
                         LuksStep *ret_step) {
        _cleanup_crypt_free_ struct crypt_device *cd = NULL;
        crypt_status_info st;
        int r;

        st = crypt_status(NULL, name);
        if (st == CRYPT_ACTIVE || st == CRYPT_BUSY) {
                _cleanup_crypt_free_ struct crypt_device *active = NULL;

                r = crypt_init_by_name(&active, name);
                if (r < 0)
                        return r;
                if (!streq_ptr(crypt_get_uuid(active), uuid))
                        return -EEXIST;
                *ret_step = LUKS_STEP_ALREADY;
                return 0;
        }

        r = crypt_open_device(device, &cd);
        if (r < 0)
                return r;
        r = crypt_load(cd, CRYPT_LUKS2, NULL);
        if (r < 0)
                return r;
        r = crypt_activate_by_passphrase(cd, name, CRYPT_ANY_SLOT, key->data, key->size, 0);
        if (r < 0)
                return r;
        *ret_step = LUKS_STEP_DONE;
        return 0;
}

/* ---- one volume ---- */

void luks_volume_init(LuksVolume *v) {
        *v = (LuksVolume) { .crypttab = true, .open = true };
}

static void record_error(LuksResult *res, const char *msg) {
        if (!res->error[0])
                (void) snprintf(res->error, sizeof res->error, "%s", msg);
}

/* Records the decision, logs it once, and returns -abs(error).  The
 * format may use %m for error. */
static int volume_fail(LuksResult *res, LuksAction action, int error, const char *format, ...) _printf_(4, 5);
static int volume_fail(LuksResult *res, LuksAction action, int error, const char *format, ...) {
        char msg[sizeof res->error];
        va_list ap;

        errno = abs(error);
        va_start(ap, format);
        (void) vsnprintf(msg, sizeof msg, format, ap);
        va_end(ap);

        res->action = action;
        record_error(res, msg);
        return log_error_errno(error, "Volume '%s': %s", res->name, msg);
}

static int step_fail(LuksResult *res, LuksStep *step, int error, const char *format, ...) _printf_(4, 5);
static int step_fail(LuksResult *res, LuksStep *step, int error, const char *format, ...) {
        char msg[sizeof res->error];
        va_list ap;

        errno = abs(error);
        va_start(ap, format);
        (void) vsnprintf(msg, sizeof msg, format, ap);
        va_end(ap);

        *step = LUKS_STEP_FAILED;
        record_error(res, msg);
        return log_error_errno(error, "Volume '%s': %s", res->name, msg);
}

/* What "cryptsetup open" and crypttab accept without quoting; the config
 * checks the same, but the library must not trust its caller. */
static bool volume_name_valid(const char *s) {
        size_t l = s ? strlen(s) : 0;

        return l > 0 && l <= 127 &&
               strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-+") == l &&
               s[0] != '.' && s[0] != '-';
}

static bool label_valid(const char *s) {
        if (strlen(s) > LUKS2_LABEL_MAX)
                return false;
        for (; *s; s++)
                if (iscntrl((unsigned char) *s))
                        return false;
        return true;
}

/* Why a key-file error stops us, in words. */
static const char *key_file_reason(int r) {
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

/* The crypttab line and the mapping, for a volume that is ours. */
static int volume_finish(const LuksOptions *o, const LuksVolume *v, const char *device, const Secret *key,
                         LuksResult *res) {
        int r, ret = 0;

        if (v->crypttab) {
                _cleanup_free_ char *path = path_join_root(o->root, LUKS_CRYPTTAB), *dev = NULL;

                if (!path || asprintf(&dev, "UUID=%s", res->uuid) < 0)
                        return log_oom();
                r = crypttab_update(path, v->name, dev, res->key_file, "luks");
                if (r == -ELOOP)
                        ret = step_fail(res, &res->crypttab, r, "'%s' is a symlink; not changing it.", path);
                else if (r < 0)
                        ret = step_fail(res, &res->crypttab, r, "Failed to update '%s': %m", path);
                else {
                        res->crypttab = r > 0 ? LUKS_STEP_DONE : LUKS_STEP_ALREADY;
                        if (r > 0)
                                log_info("Volume '%s': '%s' has its line now.", v->name, path);
                }
        }

        if (v->open) {
                crypt_error_reset();
                r = luks_activate(device, v->name, res->uuid, key, &res->open);
                if (r == -EEXIST) {
                        r = step_fail(res, &res->open, r,
                                      "'/dev/mapper/%s' is active for another device; not opening '%s'.", v->name,
                                      device);
                        ret = ret < 0 ? ret : r;
                } else if (r < 0) {
                        r = step_fail(res, &res->open, r, "Failed to open '%s' as '/dev/mapper/%s': %s", device,
                                      v->name, crypt_reason(r));
                        ret = ret < 0 ? ret : r;
                } else if (res->open == LUKS_STEP_DONE)
                        log_info("Volume '%s': opened as '/dev/mapper/%s'.", v->name, v->name);
        }
        return ret;
}

int luks_volume_setup(const LuksOptions *o, const LuksVolume *v, LuksResult *ret) {
        _cleanup_free_ char *device = NULL, *key_path = NULL;
        _cleanup_secret_ Secret key = {}, volume_key = {};
        _cleanup_close_ int fd = -EBADF;
        LuksRandomFn get_random = o->random ?: luks_random_blocking;
        LuksResult *res = ret;
        ProbeVerdict verdict;
        bool wipe = false, interrupted = false, busy = false, luks;
        const char *why;
        DeviceSpec spec;
        int r;

        *res = (LuksResult) { .action = LUKS_ACTION_FAILED };
        (void) snprintf(res->spec, sizeof res->spec, "%s", strempty(v->device));
        (void) snprintf(res->name, sizeof res->name, "%s", strempty(v->name));

        if (!volume_name_valid(v->name))
                return volume_fail(res, LUKS_ACTION_FAILED, -EINVAL,
                                   "invalid name: use 1 to 127 letters, digits and _ . - +, not starting with . or -.");
        if (v->key_file)
                (void) snprintf(res->key_file, sizeof res->key_file, "%s", v->key_file);
        else
                (void) snprintf(res->key_file, sizeof res->key_file, LUKS_KEY_DIR "/%s.key", v->name);
        if (res->key_file[0] != '/' || !crypttab_field_valid(res->key_file))
                return volume_fail(res, LUKS_ACTION_FAILED, -EINVAL,
                                   "key file '%s' must be an absolute path without blanks.", res->key_file);
        if (v->label && !label_valid(v->label))
                return volume_fail(res, LUKS_ACTION_FAILED, -EINVAL,
                                   "label '%s' must be at most %d bytes, no control characters.", v->label,
                                   LUKS2_LABEL_MAX);
        r = device_spec_parse(v->device, &spec, &why);
        if (r < 0)
                return volume_fail(res, LUKS_ACTION_FAILED, r, "device '%s' %s.", strempty(v->device), why);

        key_path = path_join_root(o->root, res->key_file);
        if (!key_path)
                return log_oom();

        /* Which device. */
        {
                char error[sizeof res->error];

                r = device_spec_resolve(&spec, &device, error, sizeof error);
                if (r == -ENODEV)
                        return volume_fail(res, LUKS_ACTION_NOT_FOUND, r, "%s; skipping it.", error);
                if (r == -ENOTUNIQ)
                        return volume_fail(res, LUKS_ACTION_REFUSED, r, "%s; touching neither.", error);
                if (r < 0)
                        return volume_fail(res, LUKS_ACTION_FAILED, r, "%s.", error[0] ? error : strerror(-r));
        }
        (void) snprintf(res->device, sizeof res->device, "%s", device);

        /* What is on it.  O_EXCL: the kernel refuses while it is mounted,
         * a swap area, a mapping's or a RAID's member, or held by a
         * partition in use. */
        fd = open(device, O_RDONLY | O_CLOEXEC | O_EXCL | O_NOCTTY);
        if (fd < 0 && errno == EBUSY) {
                /* Held.  Only by its own volume, opened already, may it
                 * be: a clone's boot (or any boot before firstboot is
                 * done) opens it from crypttab first.  Read it to see,
                 * and write nothing unless it is. */
                busy = true;
                fd = open(device, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        }
        if (fd < 0)
                return volume_fail(res, LUKS_ACTION_FAILED, -errno, "Failed to open '%s': %m", device);
        r = probe_device(fd, &verdict, &luks, res->found, sizeof res->found);
        if (r < 0)
                return volume_fail(res, LUKS_ACTION_FAILED, r, "Failed to probe '%s': %m; not touching it.", device);
        /* libcryptsetup opens the device itself, exclusively. */
        fd = safe_close(fd);

        if (luks) {
                LuksHeader h = {};

                r = luks_key_file_load(key_path, false, NULL, NULL, &key.data, &key.size);
                if (r < 0 && r != -ENOENT)
                        return volume_fail(res, LUKS_ACTION_FAILED, r, "Cannot use key file '%s': %s.", key_path,
                                           key_file_reason(r));
                crypt_error_reset();
                r = luks_inspect(device, &key, &h);
                /* A clean LUKS header that libcryptsetup cannot read
                 * stops us; next to other signatures it is one of many. */
                if (r < 0 && verdict == PROBE_LUKS2)
                        return volume_fail(res, LUKS_ACTION_FAILED, r, "Failed to read the LUKS2 header of '%s': %s",
                                           device, crypt_reason(r));

                if (verdict == PROBE_LUKS2 && h.opens) {
                        res->action = LUKS_ACTION_ALREADY_DONE;
                        (void) snprintf(res->uuid, sizeof res->uuid, "%s", h.uuid);
                        log_info("Volume '%s': '%s' is already its LUKS2 volume (UUID %s).", v->name, device, h.uuid);
                        /* The header of a volume in use is not rewritten
                         * for a setting that changed. */
                        if (v->label && !streq(v->label, h.label))
                                log_notice("Volume '%s': its LUKS2 label is '%s', not '%s'; leaving it.", v->name,
                                           h.label, v->label);
                        return volume_finish(o, v, device, &key, res);
                }
                if (verdict == PROBE_LUKS2 && h.ours && h.keyslots == 0 && key.data) {
                        /* Our header, no keyslot, and the key file that a
                         * format writes before the header: a format cut
                         * short before its keyslot was written.  Nobody
                         * can have opened it, so nothing on it is lost. */
                        log_notice("Volume '%s': '%s' has a seedbed LUKS2 header without a keyslot (a format was "
                                   "interrupted); formatting it again.", v->name, device);
                        interrupted = true;
                } else if (h.ours && verdict != PROBE_LUKS2)
                        /* Never wipe our own volume, whatever the config
                         * says: a stray signature beside it, a key file
                         * moved or lost, is no reason to destroy what it
                         * protects. */
                        return volume_fail(res, LUKS_ACTION_REFUSED, -EEXIST,
                                           "'%s' holds a seedbed LUKS2 volume (UUID %s) among other signatures (%s); "
                                           "not touching it, even with wipe: true.",
                                           device, h.uuid, res->found);
                else if (h.ours)
                        return volume_fail(res, LUKS_ACTION_REFUSED, -EEXIST,
                                           "'%s' is a seedbed LUKS2 volume (UUID %s) that key file '%s' %s; not "
                                           "touching it, even with wipe: true.",
                                           device, h.uuid, res->key_file,
                                           key.data ? "does not open" : "(missing) cannot open");
        }

        if (busy)
                return volume_fail(res, LUKS_ACTION_FAILED, -EBUSY,
                                   "'%s' is in use (mounted, or held by another device or program); not touching it.",
                                   device);

        if (verdict != PROBE_EMPTY && !interrupted) {
                if (!v->wipe)
                        return volume_fail(res, LUKS_ACTION_REFUSED, -EEXIST,
                                           "'%s' is not blank: %s; leaving it untouched (wipe: true would destroy it).",
                                           device, res->found);
                wipe = true;
        }

        /* From here on secrets are made: only behind the gate. */
        if (!o->crng_ready)
                return volume_fail(res, LUKS_ACTION_FAILED, -EAGAIN,
                                   "the kernel's random number generator is not ready; not creating keys for '%s'.",
                                   device);

        /* Key file first: a crash after it leaves a key that opens nothing
         * and is used again next time; a header without a key it could
         * never be opened with. */
        if (!key.data) {
                r = luks_key_file_load(key_path, true, get_random, o->random_userdata, &key.data, &key.size);
                if (r < 0)
                        return volume_fail(res, LUKS_ACTION_FAILED, r, "Cannot create key file '%s': %s.", key_path,
                                           key_file_reason(r));
                res->key_file_created = r > 0;
                if (r > 0)
                        log_info("Volume '%s': created key file '%s'.", v->name, key_path);
        }

        volume_key.size = LUKS_VOLUME_KEY_SIZE;
        volume_key.data = malloc(volume_key.size);
        if (!volume_key.data)
                return log_oom();
        r = get_random(volume_key.data, volume_key.size, o->random_userdata);
        if (r < 0)
                return volume_fail(res, LUKS_ACTION_FAILED, r, "Failed to get random bytes for the volume key: %m");

        if (wipe || interrupted) {
                r = wipe_signatures(device, res->wiped, sizeof res->wiped);
                if (r < 0)
                        return volume_fail(res, LUKS_ACTION_FAILED, r, "Failed to wipe '%s': %m", device);
                if (wipe)
                        log_notice("Volume '%s': wiped %s on '%s' (wipe: true).", v->name, res->wiped, device);
        }

        crypt_error_reset();
        r = luks_format(device, volume_key.data, &key, v->label, res->uuid, sizeof res->uuid);
        if (r < 0)
                return volume_fail(res, LUKS_ACTION_FAILED, r, "Failed to format '%s': %s", device, crypt_reason(r));
        res->action = LUKS_ACTION_FORMATTED;
        log_info("Volume '%s': formatted '%s' as LUKS2 (UUID %s).", v->name, device, res->uuid);

        return volume_finish(o, v, device, &key, res);
}
