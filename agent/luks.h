/* SPDX-License-Identifier: MIT */
#pragma once

/* LUKS volumes made at first boot: a blank device becomes LUKS2 with a
 * new key file, opened and listed in /etc/crypttab.  Nothing is lost:
 * a device counts as blank only when libblkid sees no signature on it
 * (no filesystem, partition table, RAID or LVM member, LUKS header) and
 * its first and last MiB read as zeros (require_zeroes; plain dm-crypt,
 * a detached-header LUKS volume or a raw database carry no signature).
 * Anything else is left untouched unless the volume says wipe: true, and
 * a device that is already this volume counts as done, so every run may
 * repeat the last.  The decision is luks-decision.h's.
 *
 * From the probe to the last write the device is held: one exclusive
 * fd (the kernel refuses it while the device is mounted or claimed, and
 * refuses others a mount or a claim while we hold it) and the whole disk
 * locked with flock(LOCK_EX), as systemd's block device locking
 * convention asks, so udev does not probe a half-written header.  Right
 * before the header is written the device is probed again.
 * libcryptsetup never opens the device: it reads a copy of the header
 * (its load would "repair" a damaged one on the device) and builds the
 * new one in memory, which we write: the header without a keyslot, the
 * keyslots area, the header with the keyslot, so a crash leaves a format
 * the next run recognises and redoes.  Data starts after a 16 MiB header
 * area, as with cryptsetup luksFormat; smaller devices are not used.
 *
 * Paths under --root: the key file and /etc/crypttab live in the tree
 * being prepared and are prefixed with the root; the paths written into
 * crypttab are the tree's own (/etc/seedbed/keys/NAME.key), as the booted
 * system sees them.  Block devices are the running machine's, as the
 * entropy pool is (blockdev.h).  LABEL= and UUID= name what is on a
 * device (a LUKS2 label or UUID once formatted), so a blank device is
 * found by path, PARTLABEL= or PARTUUID=.
 *
 * Already done: a clean LUKS2 header that the key file opens.  Its header
 * is never rewritten (a changed label is only reported).  A LUKS2 header
 * of ours (subsystem "seedbed") is never wiped, even with wipe: true;
 * one without any keyslot, with its key file present, is a format cut
 * short and is formatted again.
 *
 * wipe: true destroys every signature libblkid finds (blockdev.h) before
 * formatting, as cryptsetup luksFormat does. */

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "blockdev.h"
#include "luks-keyfile.h"

#define LUKS_KEY_DIR "/etc/seedbed/keys"
#define LUKS_CRYPTTAB "/etc/crypttab"
/* aes-xts-plain64 with two 256-bit AES keys. */
#define LUKS_VOLUME_KEY_SIZE 64
/* Marks the LUKS2 headers we write (the header's "subsystem"), so that a
 * format cut short between header and keyslot is recognised as ours. */
#define LUKS_SUBSYSTEM BLOCKDEV_LUKS_SUBSYSTEM

/* One entry of luks.volumes; strings are borrowed. */
typedef struct LuksVolume {
        const char *device;   /* a path, LABEL=, UUID=, PARTLABEL=, PARTUUID= */
        const char *name;     /* /dev/mapper/NAME and the crypttab name */
        const char *key_file; /* in the tree; NULL: LUKS_KEY_DIR/NAME.key */
        const char *label;    /* LUKS2 label, or NULL */
        bool wipe;            /* may destroy what the probe finds */
        bool require_zeroes;  /* blank needs zeros at both ends, not only no signature */
        bool crypttab;        /* make sure /etc/crypttab has its line */
        bool open;            /* activate /dev/mapper/NAME */
} LuksVolume;

/* The defaults: crypttab, open and require_zeroes on, wipe off. */
void luks_volume_init(LuksVolume *v);

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
