/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libcryptsetup.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/fs.h>

#include "crypttab.h"
#include "fileio.h"
#include "log.h"
#include "luks-decision.h"
#include "luks.h"

/* LUKS2 stores the label in 48 bytes, NUL included. */
#define LUKS2_LABEL_MAX 47
/* The keyslot's passphrase is 512 random bits, not something a person
 * chose: a slow PBKDF protects nothing and costs every boot time and
 * (Argon2) memory a small guest may not have.  PBKDF2 at the minimum
 * libcryptsetup accepts, as systemd-cryptenroll does for its random keys.
 * A passphrase added later by hand gets cryptsetup's defaults. */
#define KEYSLOT_PBKDF_ITERATIONS 1000
/* How long another holder of the disk's lock may keep us waiting: udev
 * probes under a shared lock for milliseconds, a partitioner for longer. */
#define LOCK_TIMEOUT_USEC (30 * USEC_PER_SEC)

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

static void crypt_freep(struct crypt_device **cd) {
        if (*cd)
                crypt_free(*cd);
}
#define _cleanup_crypt_free_ _cleanup_(crypt_freep)

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

/* ---- libcryptsetup ---- */

/* Where LUKS2 data starts by default, as cryptsetup luksFormat places
 * it: two copies of the metadata, then the keyslots area. */
#define LUKS_HEADER_AREA (UINT64_C(16) << 20)
/* The smallest device worth a volume: the header area and 1 MiB. */
#define LUKS_DEVICE_MIN (LUKS_HEADER_AREA + (UINT64_C(1) << 20))
/* How much of a device inspection copies: both metadata copies (at most
 * 4 MiB each) and our keyslots area.  Beyond reads as zeros. */
#define LUKS_INSPECT_COPY LUKS_HEADER_AREA

/* /proc/self/fd/N: how libcryptsetup, which opens devices by path, is
 * given one we hold open, or a memfd. */
static void fd_path(int fd, char buf[static 32]) {
        (void) snprintf(buf, 32, "/proc/self/fd/%d", fd);
}

/* Copies n bytes at offset from one fd to the other, at the same offset. */
static int copy_range(int from, int to, uint64_t offset, uint64_t n) {
        _cleanup_free_ uint8_t *buf = NULL;
        const size_t chunk = 1024 * 1024;

        buf = malloc(chunk);
        if (!buf)
                return -ENOMEM;
        while (n > 0) {
                size_t k = (size_t) MIN(n, (uint64_t) chunk);
                ssize_t got = pread(from, buf, k, (off_t) offset);

                if (got < 0)
                        return -errno;
                if ((size_t) got != k)
                        return -EIO;
                for (size_t done = 0; done < k;) {
                        ssize_t w = pwrite(to, buf + done, k - done, (off_t) (offset + done));
                        if (w < 0)
                                return -errno;
                        done += (size_t) w;
                }
                offset += k;
                n -= k;
        }
        return 0;
}

/* A memfd of size bytes (sparse). */
static int memfd_sized(const char *name, uint64_t size) {
        _cleanup_close_ int fd = memfd_create(name, MFD_CLOEXEC);

        if (fd < 0)
                return -errno;
        if (ftruncate(fd, (off_t) size) < 0)
                return -errno;
        return TAKE_FD(fd);
}

static int write_and_sync(int from, int to, uint64_t offset, uint64_t n) {
        int r = copy_range(from, to, offset, n);

        if (r < 0)
                return r;
        return fsync(to) < 0 ? -errno : 0;
}

/* Writes the LUKS2 header and keyslot 0 to the device open as fd (ours,
 * read-write, while our exclusive fd holds it): our volume key (never one
 * libcryptsetup reads from /dev/urandom on its own), the key file's bytes
 * as passphrase.  libcryptsetup never opens the device: it builds the
 * header in a memfd, as for a detached header whose data starts after
 * the header area, and we write it, so no one else can claim the device
 * between our last probe and our last write.  In the order a crash can
 * live with: the header without a keyslot first (a format cut short,
 * which the next run recognises and redoes), then the keyslots area,
 * then the header that names the keyslot.  *ret_written says whether
 * anything reached the device. */
static int luks_format(int fd, const void *volume_key, const Secret *key, const char *label, char *uuid,
                       size_t uuid_size, bool *ret_written) {
        _cleanup_crypt_free_ struct crypt_device *cd = NULL;
        _cleanup_close_ int mfd = -EBADF;
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
                .data_alignment = LUKS_HEADER_AREA / 512,
        };
        char header[32], data[32];
        uint64_t metadata, keyslots;
        int r;

        *ret_written = false;
        mfd = memfd_sized("seedbed-luks-header", LUKS_HEADER_AREA);
        if (mfd < 0)
                return mfd;
        fd_path(mfd, header);
        fd_path(fd, data);
        r = crypt_init_data_device(&cd, header, data);
        if (r < 0)
                return r;
        crypt_set_log_callback(cd, crypt_log_capture, NULL);
        r = crypt_format(cd, CRYPT_LUKS2, "aes", "xts-plain64", NULL, volume_key, LUKS_VOLUME_KEY_SIZE, &params);
        if (r < 0)
                return r;
        r = crypt_get_metadata_size(cd, &metadata, &keyslots);
        if (r < 0)
                return r;
        /* Both metadata copies, and the keyslots after them: the header
         * area the data offset leaves, exactly. */
        if (2 * metadata + keyslots != LUKS_HEADER_AREA || crypt_get_data_offset(cd) * 512 != LUKS_HEADER_AREA)
                return -EBADMSG;

        r = write_and_sync(mfd, fd, 0, 2 * metadata);
        *ret_written = true;
        if (r < 0)
                return r;
        r = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, volume_key, LUKS_VOLUME_KEY_SIZE, key->data,
                                            key->size);
        if (r < 0)
                return r;
        r = write_and_sync(mfd, fd, 2 * metadata, keyslots);
        if (r < 0)
                return r;
        r = write_and_sync(mfd, fd, 0, 2 * metadata);
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

/* Reads the LUKS header (either version) of the device open as fd and,
 * on LUKS2, tries the key (key->data NULL: no key file).  From a copy in
 * a memfd: libcryptsetup repairs a damaged header from its other copy as
 * it loads it, and a device we refuse must stay as it was.  Trying needs
 * no device-mapper: crypt_activate_by_passphrase() with no name only
 * unlocks a keyslot. */
static int luks_inspect(int fd, uint64_t device_size, const Secret *key, LuksHeader *ret) {
        _cleanup_crypt_free_ struct crypt_device *cd = NULL;
        _cleanup_close_ int mfd = -EBADF;
        LuksHeader h = {};
        char path[32];
        int r, max;

        mfd = memfd_sized("seedbed-luks-inspect", device_size);
        if (mfd < 0)
                return mfd;
        r = copy_range(fd, mfd, 0, MIN(device_size, LUKS_INSPECT_COPY));
        if (r < 0)
                return r;
        fd_path(mfd, path);
        r = crypt_open_device(path, &cd);
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
        if (key->data) {
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
        *v = (LuksVolume) { .crypttab = true, .open = true, .require_zeroes = true };
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

/* Opens the device for probing: exclusively, so the kernel refuses while
 * it is mounted, a swap area, a mapping's or a RAID's member, or held by
 * a partition in use, and read-only, so that closing it is no write for
 * udev to react to (a refused or already-done device must not cause a
 * "change" event).  A held device is opened without the claim, to see
 * whether it is its own volume opened already (a clone's boot, or any
 * boot before firstboot is done, opens it from crypttab first);
 * *ret_busy says so. */
static int open_device(const char *device, bool *ret_busy) {
        int fd;

        *ret_busy = false;
        fd = open(device, O_RDONLY | O_CLOEXEC | O_EXCL | O_NOCTTY);
        if (fd < 0 && errno == EBUSY) {
                *ret_busy = true;
                fd = open(device, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        }
        return fd < 0 ? -errno : fd;
}

/* The same device, read-write, for the writes: a second open file while
 * the first keeps the exclusive claim. */
static int reopen_rw(int fd) {
        char path[32];
        int rw;

        fd_path(fd, path);
        rw = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
        return rw < 0 ? -errno : rw;
}

/* The facts luks_decide() needs, from the device open as fd.  The key
 * file (if any) is loaded into key, for the header check and later use;
 * why the edges could not be read stays in edges_zero (-errno). */
static int gather_facts(const LuksVolume *v, const char *device, int fd, bool busy, uint64_t size,
                        const char *key_path, Secret *key, LuksResult *res, LuksFacts *ret_facts,
                        LuksHeader *ret_header) {
        LuksFacts f = { .busy = busy, .zeroes_optional = !v->require_zeroes, .wipe = v->wipe };
        LuksHeader h = {};
        BlockProbe probe;
        int r;

        r = blockdev_probe(fd, &probe);
        if (r < 0)
                return volume_fail(res, LUKS_ACTION_FAILED, r, "Failed to probe '%s': %m; not touching it.", device);
        (void) snprintf(res->found, sizeof res->found, "%s", probe.found);
        f.verdict = probe.verdict;
        f.luks = probe.luks;
        f.ours_signature = probe.ours;
        if (probe.verdict == BLOCK_EMPTY)
                f.edges_zero = blockdev_edges_zero(fd);

        if (probe.luks) {
                r = luks_key_file_load(key_path, false, NULL, NULL, &key->data, &key->size);
                if (r < 0 && r != -ENOENT)
                        return volume_fail(res, LUKS_ACTION_FAILED, r, "Cannot use key file '%s': %s.", key_path,
                                           luks_key_file_strerror(r));
                crypt_error_reset();
                r = luks_inspect(fd, size, key, &h);
                if (r < 0)
                        log_debug("Volume '%s': cannot read the LUKS header of '%s': %s", v->name, device,
                                  crypt_reason(r));
                else {
                        f.header_read = true;
                        f.header_ours = h.ours;
                        f.keyslots = h.keyslots;
                        f.key_opens = h.luks2 && h.opens;
                }
        }
        f.key_file = key->data;
        *ret_facts = f;
        *ret_header = h;
        return 0;
}

/* Says why the decision d keeps us from writing, and fails the volume. */
static int volume_refuse(const char *device, LuksDecision d, const LuksFacts *f, const LuksHeader *h,
                         LuksResult *res) {
        switch (d) {
        case LUKS_DECISION_REFUSE_SIGNATURES:
                return volume_fail(res, LUKS_ACTION_REFUSED, -EEXIST,
                                   "'%s' is not blank: %s; leaving it untouched (wipe: true would destroy it).",
                                   device, res->found);
        case LUKS_DECISION_REFUSE_DATA:
                return volume_fail(res, LUKS_ACTION_REFUSED, -EEXIST,
                                   "'%s' carries no signature, but its first or last MiB is not zeros: it may hold "
                                   "data (plain dm-crypt, LUKS with a detached header, a raw database)%s; leaving it "
                                   "untouched (wipe: true would destroy it, require-zeroes: false would format it).",
                                   device,
                                   f->key_file ? ", or a format of ours that stopped before its header was written "
                                                 "(its key file is there)"
                                               : "");
        case LUKS_DECISION_REFUSE_OURS_MIXED:
                return volume_fail(res, LUKS_ACTION_REFUSED, -EEXIST,
                                   "'%s' holds a seedbed LUKS2 volume%s%s%s among other signatures (%s); not touching "
                                   "it, even with wipe: true.",
                                   device, h->uuid[0] ? " (UUID " : "", h->uuid, h->uuid[0] ? ")" : "", res->found);
        case LUKS_DECISION_REFUSE_OURS:
                return volume_fail(res, LUKS_ACTION_REFUSED, -EEXIST,
                                   "'%s' is a seedbed LUKS2 volume%s%s%s that key file '%s' %s; not touching it, even "
                                   "with wipe: true.",
                                   device, h->uuid[0] ? " (UUID " : "", h->uuid, h->uuid[0] ? ")" : "", res->key_file,
                                   !f->header_read ? "cannot be checked against (libcryptsetup cannot read the header)"
                                   : f->key_file   ? "does not open"
                                                   : "(missing) cannot open");
        case LUKS_DECISION_BUSY:
                return volume_fail(res, LUKS_ACTION_FAILED, -EBUSY,
                                   "'%s' is in use (mounted, or held by another device or program); not touching it.",
                                   device);
        case LUKS_DECISION_UNREADABLE:
                return volume_fail(res, LUKS_ACTION_FAILED, -EIO, "Failed to read the LUKS2 header of '%s': %s",
                                   device, crypt_error[0] ? crypt_error : "unreadable");
        case LUKS_DECISION_UNKNOWN:
                errno = -f->edges_zero;
                return volume_fail(res, LUKS_ACTION_FAILED, f->edges_zero,
                                   "Failed to read the first and last MiB of '%s': %m; not touching it.", device);
        default:
                return volume_fail(res, LUKS_ACTION_FAILED, -EINVAL, "no reason to refuse '%s' (decision %s).",
                                   device, strna(luks_decision_to_string(d)));
        }
}

/* A key file made in this run for a volume that then got no header opens
 * nothing, and would later pass for the key of a format cut short. */
static void key_file_drop(const char *key_path, LuksResult *res) {
        if (!res->key_file_created)
                return;
        if (unlink(key_path) < 0)
                log_warning_errno(errno, "Volume '%s': failed to remove the unused key file '%s': %m", res->name,
                                  key_path);
        res->key_file_created = false;
}

int luks_volume_setup(const LuksOptions *o, const LuksVolume *v, LuksResult *ret) {
        _cleanup_free_ char *device = NULL, *key_path = NULL;
        _cleanup_secret_ Secret key = {}, volume_key = {};
        _cleanup_close_ int fd = -EBADF, rw = -EBADF, lock_fd = -EBADF;
        LuksRandomFn get_random = o->random ?: luks_random_blocking;
        LuksResult *res = ret;
        LuksDecision decision;
        LuksHeader header;
        BlockProbe probe;
        LuksFacts facts;
        char disk[PATH_MAX];
        const char *why;
        DeviceSpec spec;
        bool busy, written;
        uint64_t size;
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

        /* One exclusive fd from the first probe to the last write, and the
         * disk locked all along: what we decide on is what we write over,
         * and nobody claims it in between. */
        fd = open_device(device, &busy);
        if (fd < 0)
                return volume_fail(res, LUKS_ACTION_FAILED, fd, "Failed to open '%s': %m", device);
        if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                return volume_fail(res, LUKS_ACTION_FAILED, -errno, "Failed to get the size of '%s': %m", device);
        lock_fd = blockdev_lock_whole_disk(fd, LOCK_TIMEOUT_USEC, disk, sizeof disk);
        if (lock_fd == -EBUSY)
                return volume_fail(res, LUKS_ACTION_FAILED, lock_fd,
                                   "disk '%s' stayed locked by another program (a partitioner, udev) for %u s; not "
                                   "touching '%s'.",
                                   disk, (unsigned) (LOCK_TIMEOUT_USEC / USEC_PER_SEC), device);
        if (lock_fd == -ENODEV)
                return volume_fail(res, LUKS_ACTION_FAILED, lock_fd,
                                   "the disk '%s' is part of has no device node here to lock; not touching it.",
                                   device);
        if (lock_fd < 0)
                return volume_fail(res, LUKS_ACTION_FAILED, lock_fd, "Failed to lock the disk of '%s': %m", device);

        r = gather_facts(v, device, fd, busy, size, key_path, &key, res, &facts, &header);
        if (r < 0)
                return r;
        decision = luks_decide(&facts);
        log_debug("Volume '%s': '%s' found %s, decision %s.", v->name, device, res->found[0] ? res->found : "nothing",
                  luks_decision_to_string(decision));

        if (decision == LUKS_DECISION_ALREADY_DONE) {
                /* Activation claims the device: let go of it first. */
                fd = safe_close(fd);
                lock_fd = safe_close(lock_fd);
                res->action = LUKS_ACTION_ALREADY_DONE;
                (void) snprintf(res->uuid, sizeof res->uuid, "%s", header.uuid);
                log_info("Volume '%s': '%s' is already its LUKS2 volume (UUID %s).", v->name, device, res->uuid);
                /* The header of a volume in use is not rewritten for a
                 * setting that changed. */
                if (v->label && !streq(v->label, header.label))
                        log_notice("Volume '%s': its LUKS2 label is '%s', not '%s'; leaving it.", v->name,
                                   header.label, v->label);
                return volume_finish(o, v, device, &key, res);
        }
        if (!luks_decision_writes(decision))
                return volume_refuse(device, decision, &facts, &header, res);
        if (size < LUKS_DEVICE_MIN)
                return volume_fail(res, LUKS_ACTION_FAILED, -ENOSPC,
                                   "'%s' holds %" PRIu64 " bytes, less than a LUKS2 header area (16 MiB) and 1 MiB "
                                   "of data; not formatting it.",
                                   device, size);
        if (decision == LUKS_DECISION_RESUME)
                log_notice("Volume '%s': '%s' has a seedbed LUKS2 header without a keyslot (a format was "
                           "interrupted); formatting it again.", v->name, device);

        /* From here on secrets are made: only behind the gate. */
        if (!o->crng_ready)
                return volume_fail(res, LUKS_ACTION_FAILED, -EAGAIN,
                                   "the kernel's random number generator is not ready; not creating keys for '%s'.",
                                   device);

        rw = reopen_rw(fd);
        if (rw < 0)
                return volume_fail(res, LUKS_ACTION_FAILED, rw, "Failed to open '%s' for writing: %m", device);
        if (decision != LUKS_DECISION_FORMAT) {
                r = blockdev_reread_partitions(fd);
                if (r > 0)
                        return volume_fail(res, LUKS_ACTION_FAILED, -EBUSY,
                                           "a partition of '%s' is in use; not wiping the disk under it.", device);
                if (r < 0)
                        return volume_fail(res, LUKS_ACTION_FAILED, r,
                                           "Failed to check the partitions of '%s': %m; not touching it.", device);
        }

        /* Key file first: a crash after it leaves a key that opens nothing
         * and is used again next time; a header without a key it could
         * never be opened with. */
        if (!key.data) {
                r = luks_key_file_load(key_path, true, get_random, o->random_userdata, &key.data, &key.size);
                if (r < 0)
                        return volume_fail(res, LUKS_ACTION_FAILED, r, "Cannot create key file '%s': %s.", key_path,
                                           luks_key_file_strerror(r));
                res->key_file_created = r > 0;
                if (r > 0)
                        log_info("Volume '%s': created key file '%s'.", v->name, key_path);
        }

        volume_key.size = LUKS_VOLUME_KEY_SIZE;
        volume_key.data = malloc(volume_key.size);
        if (!volume_key.data)
                return log_oom();
        r = get_random(volume_key.data, volume_key.size, o->random_userdata);
        if (r < 0) {
                key_file_drop(key_path, res);
                return volume_fail(res, LUKS_ACTION_FAILED, r, "Failed to get random bytes for the volume key: %m");
        }

        if (decision != LUKS_DECISION_FORMAT) {
                r = blockdev_wipe_signatures(rw, res->wiped, sizeof res->wiped);
                if (r < 0) {
                        key_file_drop(key_path, res);
                        return volume_fail(res, LUKS_ACTION_FAILED, r, "Failed to wipe '%s': %m", device);
                }
                /* The kernel still has the partitions of the table wiped:
                 * a stale /dev/vdb1 written to later would land inside
                 * the new volume. */
                if (r > 0) {
                        r = blockdev_reread_partitions(fd);
                        if (r != 0) {
                                key_file_drop(key_path, res);
                                return volume_fail(res, LUKS_ACTION_FAILED, r > 0 ? -EBUSY : r,
                                                   "a partition of '%s' was opened during the wipe; not formatting "
                                                   "it.",
                                                   device);
                        }
                }
                if (decision == LUKS_DECISION_WIPE_AND_FORMAT)
                        log_notice("Volume '%s': wiped %s on '%s' (wipe: true).", v->name, res->wiped, device);
        }

        /* Once more, right before the header goes on: whatever wrote to
         * the device since (a writer that ignores the lock) shows here. */
        r = blockdev_probe(fd, &probe);
        if (r < 0) {
                key_file_drop(key_path, res);
                return volume_fail(res, LUKS_ACTION_FAILED, r, "Failed to probe '%s' again: %m; not touching it.",
                                   device);
        }
        if (probe.verdict != BLOCK_EMPTY) {
                key_file_drop(key_path, res);
                return volume_fail(res, LUKS_ACTION_REFUSED, -EEXIST,
                                   "'%s' changed while we held it: %s; not formatting it.", device, probe.found);
        }
        if (decision == LUKS_DECISION_FORMAT && !v->wipe && v->require_zeroes) {
                r = blockdev_edges_zero(fd);
                if (r < 0) {
                        key_file_drop(key_path, res);
                        return volume_fail(res, LUKS_ACTION_FAILED, r,
                                           "Failed to read the first and last MiB of '%s' again: %m; not touching it.",
                                           device);
                }
                if (r == 0) {
                        key_file_drop(key_path, res);
                        return volume_fail(res, LUKS_ACTION_REFUSED, -EEXIST,
                                           "'%s' changed while we held it: its first or last MiB is not zeros any "
                                           "more; not formatting it.",
                                           device);
                }
        }

        crypt_error_reset();
        r = luks_format(rw, volume_key.data, &key, v->label, res->uuid, sizeof res->uuid, &written);
        if (r < 0) {
                /* Once a header is on the device, its key file is what
                 * makes the next run finish the format. */
                if (!written)
                        key_file_drop(key_path, res);
                return volume_fail(res, LUKS_ACTION_FAILED, r, "Failed to format '%s': %s", device, crypt_reason(r));
        }
        res->action = LUKS_ACTION_FORMATTED;
        log_info("Volume '%s': formatted '%s' as LUKS2 (UUID %s).", v->name, device, res->uuid);

        /* Activation claims the device: let go of it first. */
        rw = safe_close(rw);
        fd = safe_close(fd);
        lock_fd = safe_close(lock_fd);
        return volume_finish(o, v, device, &key, res);
}
