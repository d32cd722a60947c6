/* SPDX-License-Identifier: MIT */
#pragma once

/* Which machine this is, so that an image booted as a new instance gets
 * new SSH host keys instead of sharing them with every other copy.
 *
 * The identity is the SMBIOS system UUID (ROOT/sys/class/dmi/id/product_uuid,
 * set per VM by QEMU/libvirt/OpenStack) and the machine ID
 * (ROOT/etc/machine-id, made on first boot).  Either may be unknown: no
 * DMI on ARM or s390x, root-only sysfs file read by a user, an image
 * whose machine-id is empty or "uninitialized".  A value that is known
 * both in the record and now and differs means a new instance; a value
 * unknown on either side proves nothing, so it never does.
 *
 * The record, ROOT/var/lib/seedbed/ssh-keys.json, holds the identity
 * the keys were made for and what is known about each key (for people and
 * for 'status'):
 *   {
 *     "version": 1,
 *     "time": "2024-05-01T12:00:00Z",
 *     "instance": { "product_uuid_hmac": "<64 hex>" | null,
 *                   "product_uuid_key": "<16 hex>" | null,
 *                   "machine_id": "…" | null },
 *     "keys": [ { "type": "ed25519", "path": "/etc/ssh/ssh_host_ed25519_key",
 *                 "bits": 256, "fingerprint": "SHA256:…",
 *                 "created": "2024-05-01T12:00:00Z" | null,
 *                 "crng_ready": true | false | null,
 *                 "reason": "…" | null }, … ]
 *   }
 * "created" and "crng_ready" are null for keys the agent found in place
 * and did not make.  "reason" says why a key was replaced or adopted
 * (found in place with no record, and kept as this machine's), carried
 * over while it is kept; null for a key made where there was none.
 * Records written before it was added have none: null.
 *
 * The UUID itself is root-only in sysfs (0400) and the records are
 * world-readable, so they hold a keyed hash of it: HMAC-SHA256(key,
 * "seedbed instance product_uuid v1\0" || the lowercase UUID), with 32
 * random bytes in the root-only (0400) INSTANCE_KEY_FILE, made when a
 * record first needs it (instance-key.h).  Keyed, because SMBIOS UUIDs are
 * often guessable (Dell's 4c4c4544-… spell the service tag): a plain hash
 * could be reversed by trying them all.  A cloned disk takes the key along,
 * and so does everyone who has the image: its first boot, once both records
 * are compared with the image's key, makes a key of its own and writes both
 * again with it (instance_key_renew()).  "product_uuid_key" says which key
 * the hash was made with (instance_key_id(): it tells nothing of the key):
 * a hash made with a key that is gone or was replaced (unreadable, deleted,
 * not 32 bytes, open to others or another user's: instance_key_load())
 * cannot be compared, and must count as unknown rather than as another
 * UUID, or losing the key would make a record that is rewritten only for a
 * new instance (firstboot.json) call the same machine a new one.  The
 * current UUID is hashed with the key in place and compared with the
 * record's; with no key to compare with, the recorded UUID is unknown and
 * the machine-id decides (a notice says so).  Where it says this is the
 * instance, the firstboot run records the UUID again with the key in place
 * (made when there is none), so that a clone booted later is told apart by
 * its UUID again.  A record written before the UUID was hashed holds
 * "product_uuid" in the clear: it is compared as it is, and the next write
 * replaces it with the hash.  Neither record is rewritten at boot but for a
 * new instance, so the firstboot run that finds this instance done writes
 * both again (instance_state_heal()), only the UUID changed, or when it
 * cannot be hashed yet (no key, and none can be made: a CRNG not ready this
 * early in boot), leaves it as it is for a later boot.  A record written
 * for this instance behind the gate holds a UUID that is unknown, or that
 * cannot be hashed (on-timeout continue: a CRNG still not ready), as null,
 * never in the clear.
 *
 * While a replacement of keys found with no record is under way, the
 * record says so, between "instance" and "keys":
 *     "pending": "replace-unknown",
 *     "pending_reason": "found at the image's first boot: …",
 * written before any key is touched, with the keys listing only those
 * already made for this instance (none at first).  The decision to
 * replace rests on signs of a first boot that are gone once the
 * machine-id is committed: a run that stops half way (a key that fails,
 * a power cut, a gate that fails) would otherwise leave the next run to
 * adopt the image's keys.  The next run for the same instance finishes
 * it, whatever the machine-id says by then; the complete record has
 * neither field.  A reader that did not know them would take a pending
 * record for a complete one: no release of seedbed is such a reader.
 * "pending": "vm-fork" is the same for a replacement of every key after
 * the VM generation ID changed (seedbed-agent vm-fork): the keys it lists
 * were made after the change, and the others are still every clone's.
 * The next firstboot run finishes it, though the first boot is done.
 * A seedbed older than vm-fork reads such a record as not ours, and would
 * adopt the keys after the first boot: a downgrade loses the pending
 * replacement. */

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "instance-key.h"
#include "macro.h"

#define INSTANCE_STATE_FILE LOCALSTATEDIR "/lib/seedbed/ssh-keys.json"
#define INSTANCE_STATE_VERSION 1
#define INSTANCE_KEYS_MAX 8

typedef struct InstanceId {
        /* lowercase 8-4-4-4-12; "" when unknown.  Read from the machine, or
         * from a record written before it was hashed; never written. */
        char product_uuid[37];
        /* instance_uuid_hmac() of the UUID, and instance_key_id() of the
         * key it was made with; "" when not known (no key, or a record
         * that holds the UUID in the clear or not at all). */
        char product_uuid_hmac[INSTANCE_UUID_HMAC_HEX + 1];
        char product_uuid_key[INSTANCE_KEY_ID_HEX + 1];
        char machine_id[33]; /* 32 lowercase hex digits; "" when unknown */
} InstanceId;

typedef enum InstanceChange {
        INSTANCE_SAME,    /* every value known both times is equal, and one is */
        INSTANCE_NEW,     /* a value known both times differs */
        INSTANCE_UNKNOWN, /* no record, or no value known both times */
        _INSTANCE_CHANGE_MAX,
} InstanceChange;

/* "same", "new", "unknown". */
const char *instance_change_to_string(InstanceChange c);

/* Reads the identity under root (NULL or "/": this system), and hashes
 * the UUID with the instance key under root when there is one (it is not
 * made here).  Values that are absent, unreadable or not well-formed are
 * left unknown; never fails. */
void instance_id_read(const char *root, InstanceId *ret);

/* Replaces the instance key under root with a new one, atomically.  For
 * a first boot done: a clone's key came with its image, so that anyone
 * who has the image could test guesses of the clone's UUID against its
 * world-readable records (and the key's ID would link the clones).  Every
 * record hashed with the old key is to be written again after, or its
 * UUID counts as unknown.  -EAGAIN when the CRNG is not ready; on failure
 * the old key stays. */
int instance_key_renew(const char *root);

/* Normalises one value as instance_id_read() does; false when it does
 * not count as known (malformed, all zeros, all ones, "uninitialized"). */
bool instance_uuid_normalize(const char *s, char out[static 37]);
bool instance_machine_id_normalize(const char *s, char out[static 33]);

/* Whether current is a new instance compared with the record: the UUIDs
 * in the clear where the record has it so, else their hashes where both
 * were made with the same key.  *ret_uuid_unchecked (may be NULL): the
 * record's hash was made with another key than the one in place, or none
 * is there to hash the current UUID with, so the recorded UUID counted as
 * unknown.  Says nothing: the caller, which decides, says so
 * (instance_notice_uuid_unchecked()). */
InstanceChange instance_compare(const InstanceId *recorded, const InstanceId *current, bool *ret_uuid_unchecked);

/* The notice for a record at path whose UUID counted as unknown for want
 * of its key (instance_compare()), naming the key under root. */
void instance_notice_uuid_unchecked(const char *root, const char *path, const InstanceId *current);

/* What /etc/machine-id holds. */
typedef enum MachineIdFile {
        MACHINE_ID_MISSING,
        MACHINE_ID_EMPTY,
        MACHINE_ID_UNINITIALIZED, /* "uninitialized": systemd 247+ writes it, image builders too */
        MACHINE_ID_SET,           /* a valid ID */
        MACHINE_ID_OTHER,         /* anything else, or unreadable */
        _MACHINE_ID_FILE_MAX,
} MachineIdFile;

/* What is observed of the system's first boot (first_boot_facts_read()). */
typedef struct FirstBootFacts {
        bool this_system;          /* root NULL or "/": /run and the mounts speak for the tree */
        bool flag;                 /* /run/systemd/first-boot exists */
        bool machine_id_transient; /* systemd's transient ID is mounted over /etc/machine-id
                                    * (first_boot_transient_mount()) */
        bool machine_id_this_boot; /* /etc/machine-id, with nothing mounted over it, was
                                    * written in this boot (first_boot_written_this_boot()) */
        MachineIdFile machine_id;
} FirstBootFacts;

/* Observes the facts under root; never fails (what cannot be read is
 * not there).  Under a root only its /etc/machine-id speaks. */
void first_boot_facts_read(const char *root, FirstBootFacts *ret);

/* The running system's facts, as first_boot_facts_read(NULL) observes
 * them, with every file read under prefix (NULL: /): /run/systemd,
 * /proc/self/mountinfo, /proc/cmdline, /sys/class/rtc and
 * /etc/machine-id.  Only without a prefix are $container and the kernel's
 * clock synchronisation looked at.  For tests. */
void first_boot_facts_read_system(const char *prefix, FirstBootFacts *ret);

/* The type of the file system mounted at mount_point, from the text of
 * /proc/self/mountinfo: the last mount there, which hides the ones
 * before it.  -ENOENT when nothing is mounted there, -ENOMEM. */
int mountinfo_fstype(const char *mountinfo, const char *mount_point, char **ret);

/* Whether the kernel command line (cmdline may be NULL) gives PID 1 the
 * machine ID (systemd.machine_id=): then the file is rewritten, or a
 * transient one mounted, on every boot, and neither is a sign of a first
 * boot. */
bool first_boot_id_given(const char *cmdline);

/* Whether a mount of type fstype (NULL: none) over /etc/machine-id is
 * systemd's transient ID, which PID 1 mounts from /run only while no ID
 * can be written to the file: a tmpfs (or ramfs), not a bind from
 * persistent storage; not when the kernel command line (cmdline, NULL:
 * none) gives PID 1 the ID (systemd.machine_id=), with which it mounts
 * one on every boot of a root that is read-only at its start; not in a
 * container, whose manager may do so on every start. */
bool first_boot_transient_mount(const char *fstype, const char *cmdline, bool container);

/* Whether a file was written in this boot, from its mtime, the boot's
 * start and now (all CLOCK_REALTIME): only a regular file (not a link
 * into /run), only between the two (a time in the future was written
 * with a clock that ran ahead, in another boot), and only when the wall
 * clock can be compared across boots (clock_trusted: set from an RTC at
 * boot, or synchronised now). */
bool first_boot_written_this_boot(usec_t mtime, usec_t boot_start, usec_t now, bool regular, bool clock_trusted);

/* Whether the file at path (already under prefix) was written in this
 * boot, by first_boot_written_this_boot(), with the clock trusted as the
 * running system's (prefix NULL: an RTC that set it at boot, or
 * synchronised now) or, under a prefix, as its sys/class/rtc says. */
bool file_written_this_boot(const char *prefix, const char *path);

/* Whether this is the first boot of an image: the system has no
 * committed identity yet, so nothing in it was made for this machine. */
bool first_boot_decide(const FirstBootFacts *f);

typedef struct InstanceKey {
        char *type;        /* "ed25519", "ecdsa", "rsa" */
        char *path;        /* as the guest sees it */
        unsigned bits;
        char *fingerprint; /* "SHA256:…" */
        char *created;     /* UTC time we generated it; NULL: not ours, or not known */
        int crng_ready;    /* at generation: 1, 0, or -1 when not known */
        char *reason;      /* why it was replaced or adopted; NULL: none given */
} InstanceKey;

/* The "pending" values: keys found with no record are being replaced;
 * every key is being replaced because the VM generation ID changed. */
#define INSTANCE_PENDING_REPLACE_UNKNOWN "replace-unknown"
#define INSTANCE_PENDING_VM_FORK "vm-fork"

typedef struct InstanceState {
        InstanceId id;
        time_t time;          /* the record's "time"; 0: not known, or not yet written (a save
                               * writes the time of the save) */
        InstanceKey keys[INSTANCE_KEYS_MAX];
        size_t n_keys;
        char *pending;        /* INSTANCE_PENDING_*, or NULL: the record is complete */
        char *pending_reason; /* why they are replaced; NULL: not given */
} InstanceState;

/* Frees the strings; the struct may be reused after. */
void instance_state_done(InstanceState *s);

/* The key in s with this fingerprint, or NULL. */
const InstanceKey *instance_state_find_key(const InstanceState *s, const char *fingerprint);

/* Reads the record.  -ENOENT when there is none, -EBADMSG when it is not
 * one of ours (not a regular file, too large, malformed, a "pending" value
 * we do not know); ret is written only on success. */
int instance_state_load(const char *path, InstanceState *ret);

/* Builds the JSON text, with the time given in UTC (0: s->time, or now
 * when that is 0 too). */
int instance_state_format(const InstanceState *s, time_t when, char **ret, size_t *ret_len);

/* Writes the record atomically (0644), creating its directory.  A UUID
 * that s holds in the clear goes in as its hash, with the instance key
 * under root (made when there is none, or when the file there is no key);
 * as null when that cannot be done (logged).  Only for a record of what
 * was just done for this instance (keys made or kept, a first boot done),
 * behind the gate: a null there is a UUID not known, and the machine-id
 * decides until the record is written again.  Never to heal a record
 * (instance_state_heal()). */
int instance_state_save(const char *root, const char *path, const InstanceState *s);

/* After instance_key_renew(): writes the record at path again with now
 * (instance_id_read() after the renewal) when it records was (the same,
 * before it), nothing else in it changed; a record of anything else is
 * left as it is.  Returns 1 when it was written, 0 when it was not this
 * instance's (or there is none), or -errno. */
int instance_state_rekey(const char *path, const InstanceId *was, const InstanceId *now);

/* For the boots that write no record (the instance is not new): writes
 * the record at path (read into s) again with the UUID hashed, when it
 * holds it in the clear and current is not a new instance compared with
 * it; or with current's UUID hashed with the key in place (made when
 * there is none), when its own cannot be compared (a hash made with a key
 * that is lost or replaced, or null) and the machine-id says current is
 * the same instance.  Nothing else in it changes, its "time" neither.
 * Returns 1 when it
 * was written, 0 when there was nothing to do, or -errno, with the record
 * left as it was: -EAGAIN when the key is to be made and the CRNG is not
 * ready. */
int instance_state_heal(const char *root, const char *path, const InstanceState *s, const InstanceId *current);
