/* SPDX-License-Identifier: MIT */
#pragma once

/* LUKS volumes made at first boot: a blank device becomes LUKS2 with a
 * new key file, opened and listed in /etc/crypttab.  Nothing is lost:
 * a device that carries any signature libblkid can see (a filesystem, a
 * partition table, a RAID or LVM member, another LUKS header) is left
 * untouched unless the volume says wipe: true, and a device that is
 * already this volume counts as done, so every run may repeat the last.
 *
 * Paths under --root: the key file and /etc/crypttab live in the tree
 * being prepared and are prefixed with the root; the paths written into
 * crypttab are the tree's own (/etc/seedbed/keys/NAME.key), as the booted
 * system sees them.  Block devices are the running machine's, as the
 * entropy pool is: a device path is used as given and tags are evaluated
 * on this system, never inside the root (an installer's target has no
 * /dev of its own, or a bind mount of the real one).  LABEL= and UUID=
 * name what is on a device (a LUKS2 label or UUID once formatted), so a
 * blank device is found by path, PARTLABEL= or PARTUUID=.
 *
 * Already done: a clean LUKS2 header that the key file opens.  Its header
 * is never rewritten (a changed label is only reported).  A LUKS2 header
 * of ours (subsystem "seedbed") is never wiped, even with wipe: true;
 * one without any keyslot, with its key file present, is a format cut
 * short and is formatted again.
 *
 * wipe: true destroys every signature libblkid finds (superblocks and
 * partition tables, a GPT's backup header included) before formatting,
 * as cryptsetup luksFormat does; libcryptsetup's crypt_format() alone
 * would overwrite only the first 16 MiB. */

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#define LUKS_KEY_DIR "/etc/seedbed/keys"
#define LUKS_CRYPTTAB "/etc/crypttab"
/* The key file is the passphrase of keyslot 0: 512 random bits, as
 * systemd-cryptenroll's generated keys. */
#define LUKS_KEY_FILE_SIZE 64
/* aes-xts-plain64 with two 256-bit AES keys. */
#define LUKS_VOLUME_KEY_SIZE 64
/* Marks the LUKS2 headers we write (the header's "subsystem"), so that a
 * format cut short between header and keyslot is recognised as ours. */
#define LUKS_SUBSYSTEM "seedbed"

typedef enum DeviceSpecKind {
        DEVICE_SPEC_PATH,
        DEVICE_SPEC_LABEL,
        DEVICE_SPEC_UUID,
        DEVICE_SPEC_PARTLABEL,
        DEVICE_SPEC_PARTUUID,
        _DEVICE_SPEC_KIND_MAX,
        _DEVICE_SPEC_KIND_INVALID = -EINVAL,
} DeviceSpecKind;

/* A parsed "device:" value: the path, or the tag's value without quotes. */
typedef struct DeviceSpec {
        DeviceSpecKind kind;
        char value[PATH_MAX];
} DeviceSpec;

/* The tag name as libblkid and crypttab write it ("PARTLABEL"); NULL for
 * a path. */
const char *device_spec_kind_to_tag(DeviceSpecKind k);

/* Parses an absolute path or TAG=VALUE (LABEL, UUID, PARTLABEL, PARTUUID;
 * the value may be in double quotes, as blkid accepts it).  -EINVAL with
 * a static reason in ret_error for anything else: "LABEL=", "FOO=bar",
 * "vdb".  Fits ConfItem.validate. */
int device_spec_parse(const char *s, DeviceSpec *ret, const char **ret_error);
int device_spec_validate(const char *s, const char **ret_error);

/* The block device a spec names, on the running system (never under a
 * root).  A path is taken as given, symlinks resolved.  A tag is looked
 * up with blkid_evaluate_tag() (udev's /dev/disk/by-* links, else a
 * scan), then checked against a full scan: -ENOTUNIQ when two devices
 * carry it (cloned images share labels and UUIDs, and guessing would
 * format the wrong one).  -ENODEV when nothing has it, -ENOTBLK when the
 * path is not a block device.  A message for people goes to error. */
int device_spec_resolve(const DeviceSpec *spec, char **ret_path, char *error, size_t error_size);

/* One entry of luks.volumes; strings are borrowed. */
typedef struct LuksVolume {
        const char *device;   /* a path, LABEL=, UUID=, PARTLABEL=, PARTUUID= */
        const char *name;     /* /dev/mapper/NAME and the crypttab name */
        const char *key_file; /* in the tree; NULL: LUKS_KEY_DIR/NAME.key */
        const char *label;    /* LUKS2 label, or NULL */
        bool wipe;            /* may destroy what the probe finds */
        bool crypttab;        /* make sure /etc/crypttab has its line */
        bool open;            /* activate /dev/mapper/NAME */
} LuksVolume;

/* The defaults: crypttab and open on, wipe off. */
void luks_volume_init(LuksVolume *v);

/* Random bytes for secrets; 0 or -errno.  userdata from LuksOptions. */
typedef int (*LuksRandomFn)(void *buf, size_t n, void *userdata);

/* The default LuksRandomFn: getrandom() until n bytes, blocking (behind
 * the gate it returns at once; were it not, waiting beats a guessable
 * key).  userdata is ignored. */
int luks_random_blocking(void *buf, size_t n, void *userdata);

typedef struct LuksOptions {
        const char *root;       /* --root, or NULL */
        /* The gate's verdict that secrets may be made now: the CRNG is
         * ready, or the configuration explicitly goes on without it.
         * false: no key file and no volume key are created, and volumes
         * that would need them fail; already-done ones still proceed. */
        bool crng_ready;
        /* Source of the key file's and the volume key's bytes; NULL:
         * getrandom(…, 0), never libcryptsetup's own /dev/urandom read. */
        LuksRandomFn random;
        void *random_userdata;
} LuksOptions;

typedef enum LuksAction {
        LUKS_ACTION_FORMATTED,    /* was blank (or wiped): now our LUKS2 volume */
        LUKS_ACTION_ALREADY_DONE, /* is our LUKS2 volume: the key file opens it */
        LUKS_ACTION_REFUSED,      /* something is there: left untouched */
        LUKS_ACTION_FAILED,       /* could not check or format it */
        LUKS_ACTION_NOT_FOUND,    /* no device matches the spec */
        _LUKS_ACTION_MAX,
        _LUKS_ACTION_INVALID = -EINVAL,
} LuksAction;

/* The follow-up steps: crypttab line, activation. */
typedef enum LuksStep {
        LUKS_STEP_SKIPPED, /* not asked for, or the volume is not ours */
        LUKS_STEP_DONE,    /* done now */
        LUKS_STEP_ALREADY, /* was so already: line right, mapping active */
        LUKS_STEP_FAILED,
        _LUKS_STEP_MAX,
        _LUKS_STEP_INVALID = -EINVAL,
} LuksStep;

typedef struct LuksResult {
        char spec[PATH_MAX];    /* as configured */
        char name[128];
        char device[PATH_MAX];  /* the resolved block device, "" if none */
        char found[512];        /* what the probe saw, "" for nothing */
        char wiped[512];        /* what wipe: true destroyed, "" for nothing */
        LuksAction action;
        char uuid[40];          /* the LUKS UUID, for formatted and already-done */
        char key_file[PATH_MAX];/* in the tree, as crypttab names it */
        bool key_file_created;
        LuksStep open;
        LuksStep crypttab;
        char error[1024];       /* the first thing that went wrong, "" if none */
} LuksResult;

const char *luks_action_to_string(LuksAction a);
const char *luks_step_to_string(LuksStep s);

/* Makes the volume what v says, logs what it decided (callers only
 * record), and fills ret in every case.  Returns 0 when the volume is
 * ours and every step asked for succeeded; otherwise -errno:
 * -EEXIST refused (something is there), -ENODEV not found, -ENOTUNIQ an
 * ambiguous tag, -EBUSY device in use, -EAGAIN the CRNG gate has not
 * passed, or the failed step's error.  One volume's failure is its own:
 * the caller goes on with the next. */
int luks_volume_setup(const LuksOptions *o, const LuksVolume *v, LuksResult *ret);

/* A volume's key file at path (the full path, root included).  An
 * existing one is read: a regular file of 1 byte to 8 MiB (cryptsetup's
 * limit) owned by us, never through a symlink.  A missing one is made
 * when create is set: LUKS_KEY_FILE_SIZE bytes from get_random (NULL:
 * getrandom()), mode 0400, in a directory made 0700 if it is missing
 * (an existing one must be ours; its mode is left alone), written under
 * an O_EXCL temporary name, fsync()ed, renamed without replacing and the
 * directory fsync()ed: a crash leaves no key or the whole key.  The
 * bytes go to ret (erase them with luks_secret_erase()).  Returns 1
 * created, 0 read, -ENOENT missing and !create, -ENODATA empty, -EFBIG,
 * -EBADF not a regular file, -ELOOP a symlink, -EPERM not ours. */
int luks_key_file_load(const char *path, bool create, LuksRandomFn get_random, void *userdata, void **ret,
                       size_t *ret_size);

/* explicit_bzero() and free(). */
void luks_secret_erase(void *p, size_t n);
