/* SPDX-License-Identifier: MIT */
#include <blkid.h>
#include <ctype.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "blockdev.h"
#include "fileio.h"
#include "log.h"
#include "macro.h"

/* A wipe loop that keeps finding signatures is not making progress. */
#define WIPE_MAX_SIGNATURES 64

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

static void blkid_free_probep(blkid_probe *pr) {
        if (*pr)
                blkid_free_probe(*pr);
}
#define _cleanup_blkid_probe_ _cleanup_(blkid_free_probep)

static void blkid_put_cachep(blkid_cache *c) {
        if (*c)
                blkid_put_cache(*c);
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

int blockdev_probe(int fd, BlockProbe *ret) {
        _cleanup_blkid_probe_ blkid_probe pr = NULL;
        BlockProbe p = {};
        int r;

        r = probe_new(fd, true, true, &pr);
        if (r < 0)
                return r;

        r = blkid_do_safeprobe(pr);
        if (r == 1) {
                *ret = (BlockProbe) { .verdict = BLOCK_EMPTY };
                return 0;
        }
        if (r == 0) {
                const char *type = lookup(pr, "TYPE"), *version = lookup(pr, "VERSION");

                describe_partitions(pr, p.found, sizeof p.found);
                describe_superblock(pr, p.found, sizeof p.found);
                p.luks = streq_ptr(type, "crypto_LUKS");
                p.ours = p.luks && streq_ptr(lookup(pr, "SUBSYSTEM"), BLOCKDEV_LUKS_SUBSYSTEM);
                p.verdict = p.luks && streq_ptr(version, "2") && !lookup(pr, "PTTYPE") ? BLOCK_LUKS2 : BLOCK_OTHER;
                *ret = p;
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
                        if (streq_ptr(lookup(sb, "TYPE"), "crypto_LUKS")) {
                                p.luks = true;
                                if (streq_ptr(lookup(sb, "SUBSYSTEM"), BLOCKDEV_LUKS_SUBSYSTEM))
                                        p.ours = true;
                        }
                }
                r = probe_new(fd, false, true, &pt);
                if (r < 0)
                        return r;
                if (blkid_do_safeprobe(pt) == 0)
                        describe_partitions(pt, list, sizeof list);
                append(p.found, sizeof p.found, "ambivalent signatures: %s", list);
                p.verdict = BLOCK_OTHER;
                *ret = p;
                return 0;
        }
        return -EIO;
}

/* ---- blank or not ---- */

static int read_all_zero(int fd, uint64_t offset, size_t n, uint8_t *buf) {
        ssize_t k = pread(fd, buf, n, (off_t) offset);

        if (k < 0)
                return -errno;
        if ((size_t) k != n)
                return -EIO; /* the device shrank under us */
        for (size_t i = 0; i < n; i++)
                if (buf[i])
                        return 0;
        return 1;
}

int blockdev_edges_zero(int fd) {
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t size;
        int r;

        if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                return -errno;
        buf = malloc(BLOCKDEV_EDGE_SIZE);
        if (!buf)
                return -ENOMEM;
        r = read_all_zero(fd, 0, size < BLOCKDEV_EDGE_SIZE ? (size_t) size : BLOCKDEV_EDGE_SIZE, buf);
        if (r <= 0 || size <= BLOCKDEV_EDGE_SIZE)
                return r;
        /* The tail, or what is left of a device under 2 MiB. */
        if (size < 2 * BLOCKDEV_EDGE_SIZE)
                return read_all_zero(fd, BLOCKDEV_EDGE_SIZE, (size_t) (size - BLOCKDEV_EDGE_SIZE), buf);
        return read_all_zero(fd, size - BLOCKDEV_EDGE_SIZE, BLOCKDEV_EDGE_SIZE, buf);
}

/* ---- locking ---- */

/* The whole disk that the partition dev is part of, from sysfs: 0 and
 * its number, or -ENOENT when dev is no partition. */
static int whole_disk_of(dev_t dev, dev_t *ret) {
        char path[128], buf[32];
        _cleanup_close_ int fd = -EBADF;
        unsigned maj, min;
        ssize_t k;

        (void) snprintf(path, sizeof path, "/sys/dev/block/%u:%u/partition", major(dev), minor(dev));
        if (access(path, F_OK) < 0)
                return errno == ENOENT ? -ENOENT : -errno;
        /* The kernel resolves ".." after the symlink: the disk's directory. */
        (void) snprintf(path, sizeof path, "/sys/dev/block/%u:%u/../dev", major(dev), minor(dev));
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        k = read(fd, buf, sizeof buf - 1);
        if (k <= 0)
                return k < 0 ? -errno : -ENODATA;
        buf[k] = 0;
        if (sscanf(buf, "%u:%u", &maj, &min) != 2)
                return -ENODATA;
        *ret = makedev(maj, min);
        return 0;
}

/* Opens the block device node of disk: udev's /dev/block/M:m, else the
 * kernel's name for it in /dev (an initramfs or a container without
 * udev's links).  A node must be that very device: a flock on another
 * inode would protect nothing. */
static int open_disk_node(dev_t disk, char *ret_path, size_t size) {
        char path[PATH_MAX], line[256], name[128] = "";
        _cleanup_fclose_ FILE *f = NULL;
        struct stat st;
        int fd;

        (void) snprintf(path, sizeof path, "/dev/block/%u:%u", major(disk), minor(disk));
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                (void) snprintf(path, sizeof path, "/sys/dev/block/%u:%u/uevent", major(disk), minor(disk));
                f = fopen(path, "re");
                if (!f)
                        return -errno;
                while (fgets(line, sizeof line, f))
                        if (startswith(line, "DEVNAME=")) {
                                line[strcspn(line, "\n")] = 0;
                                (void) snprintf(name, sizeof name, "%s", line + 8);
                        }
                /* DEVNAME may have a directory: cciss/c0d0. */
                if (!name[0] || strstr(name, ".."))
                        return -ENODATA;
                (void) snprintf(path, sizeof path, "/dev/%s", name);
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (fd < 0)
                        return -errno;
        }
        if (fstat(fd, &st) < 0 || !S_ISBLK(st.st_mode) || st.st_rdev != disk) {
                safe_close(fd);
                return -ENODEV;
        }
        (void) snprintf(ret_path, size, "%s", path);
        return fd;
}

/* After this long without the lock, say that we wait: udev takes its
 * shared lock for every event, briefly, and that is no news. */
#define LOCK_QUIET_USEC (1 * USEC_PER_SEC)

int blockdev_lock_whole_disk(int fd, usec_t timeout_usec, char *ret_disk, size_t size) {
        _cleanup_close_ int lock_fd = -EBADF;
        char path[PATH_MAX];
        usec_t start, now;
        struct stat st;
        bool said = false;
        dev_t disk;
        int r;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISBLK(st.st_mode))
                return -ENOTBLK;

        /* A file of its own: a flock belongs to an open file description,
         * and one shared with fd (dup()) would end when fd is closed. */
        r = whole_disk_of(st.st_rdev, &disk);
        if (r == -ENOENT) {
                disk = st.st_rdev;
                (void) snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
                lock_fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (lock_fd < 0)
                        return -errno;
                (void) snprintf(path, sizeof path, "%u:%u", major(disk), minor(disk));
        } else if (r < 0)
                return r;
        else {
                /* A lock on the partition would not keep udev from
                 * probing the disk: no lock, no format. */
                lock_fd = open_disk_node(disk, path, sizeof path);
                if (lock_fd < 0)
                        return lock_fd == -ENOENT ? -ENODEV : lock_fd;
        }
        (void) snprintf(ret_disk, size, "%s", path);

        start = now_usec(CLOCK_MONOTONIC);
        while (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno != EWOULDBLOCK && errno != EINTR)
                        return -errno;
                now = now_usec(CLOCK_MONOTONIC);
                if (now - start >= timeout_usec)
                        return -EBUSY;
                if (!said && now - start >= LOCK_QUIET_USEC) {
                        log_info("Another program holds the lock on disk '%s'; waiting up to %llu s for it.", path,
                                 (unsigned long long) (timeout_usec / USEC_PER_SEC));
                        said = true;
                }
                (void) usleep(50 * 1000);
        }
        return TAKE_FD(lock_fd);
}

int blockdev_reread_partitions(int fd) {
        /* The kernel re-reads a disk's partition table only when none of
         * its partitions is open (by anyone, exclusively or not): EBUSY
         * says one is.  Asked through a file without the exclusive claim
         * it also says EBUSY for our own claim.  A device without
         * partitions says EINVAL. */
        if (ioctl(fd, BLKRRPART) >= 0 || errno == EINVAL)
                return 0;
        return errno == EBUSY ? 1 : -errno;
}

/* ---- wiping ---- */

int blockdev_wipe_signatures(int fd, char *wiped, size_t size) {
        bool partition_table = false;
        int r;

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
        return partition_table;
}
