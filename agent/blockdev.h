/* SPDX-License-Identifier: MIT */
#pragma once

/* Block devices for LUKS volumes: naming them (a path or a tag), locking
 * them, and telling what is on them.  Nothing here formats anything; it
 * gathers the facts luks-decision.h decides on, and wipes when told to.
 *
 * Devices are the running machine's, never a --root tree's: tags are
 * evaluated on this system (an installer's target has no /dev of its
 * own, or a bind mount of the real one). */

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

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

/* What libblkid sees on a device. */
typedef enum BlockVerdict {
        BLOCK_EMPTY, /* no signature at all */
        BLOCK_LUKS2, /* a LUKS2 header and nothing else */
        BLOCK_OTHER, /* anything else, ambivalent results included */
        _BLOCK_VERDICT_MAX,
        _BLOCK_VERDICT_INVALID = -EINVAL,
} BlockVerdict;

/* The LUKS2 "subsystem" our headers carry (luks.h). */
#define BLOCKDEV_LUKS_SUBSYSTEM "seedbed"

typedef struct BlockProbe {
        BlockVerdict verdict;
        bool luks;       /* a LUKS header (any version) is among the signatures */
        bool ours;       /* one of them a LUKS2 header of ours, as libblkid reads it */
        char found[512]; /* for people: "ext4 filesystem (UUID …)", "" for nothing */
} BlockProbe;

/* Both chains (superblocks and partition tables) on fd, safe mode: an
 * ambivalent result is something, and then every signature is named.  A
 * damaged filesystem (bad checksum) still counts: it is someone's data. */
int blockdev_probe(int fd, BlockProbe *ret);

/* How much of each end blockdev_edges_zero() reads: LUKS2 headers,
 * filesystems' superblocks and partition tables live there, and so does
 * the start of whatever a database or a detached-header volume wrote. */
#define BLOCKDEV_EDGE_SIZE (1024 * 1024)

/* 1 when the first and the last BLOCKDEV_EDGE_SIZE bytes of fd (all of a
 * smaller device) read as zeros, 0 when any byte is not, or -errno.  A
 * device without signatures may still hold data nobody signed: plain
 * dm-crypt, LUKS with a detached header, a raw database. */
int blockdev_edges_zero(int fd);

/* Takes the BSD lock on the whole disk that fd's device is (or is a
 * partition of), as systemd's block device locking convention asks of a
 * tool that writes a partition table or a superblock: udev does not
 * probe a locked disk, and systemd's tools wait for it.  The disk's node
 * is found through sysfs (/dev/block/M:m, else its kernel name in /dev);
 * when a partition's disk has no node here, -ENODEV: a lock on the
 * partition alone would keep nobody away.  Waits up to timeout_usec for
 * another holder (saying so after a second) and returns the locking fd
 * with the disk's name in ret_disk, -EBUSY when the wait ran out, or
 * -errno.  flock() works on inodes: a node made with mknod outside
 * devtmpfs (some installers' chroots) does not meet udev's lock. */
int blockdev_lock_whole_disk(int fd, usec_t timeout_usec, char *ret_disk, size_t size);

/* Has the kernel read the partition table of the whole disk fd again:
 * 0 done (or it has none), 1 when one of its partitions is open
 * (mounted, or opened by anyone at all) so the kernel keeps them, or
 * -errno.  fd must be the file holding our exclusive claim: through any
 * other, the claim itself counts as a user.  Before a wipe, it says
 * whether a partition is in use; after one, it drops the partitions of
 * the table wiped, which would otherwise overlap the new header. */
int blockdev_reread_partitions(int fd);

/* Destroys every signature libblkid finds on fd (opened read-write),
 * superblocks and partition tables alike (a GPT's backup header at the
 * end of the disk included), the way cryptsetup's luksFormat does before
 * it writes a header: libcryptsetup's crypt_format() alone overwrites
 * only the first 16 MiB, and a stale backup GPT or RAID superblock at
 * the end would invite some tool to "repair" the disk over our header.
 * What was destroyed is listed in wiped.  Returns 1 when a partition
 * table was among it (see blockdev_reread_partitions()), 0, or -errno. */
int blockdev_wipe_signatures(int fd, char *wiped, size_t size);
