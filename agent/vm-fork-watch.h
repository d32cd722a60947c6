/* SPDX-License-Identifier: MIT */
#pragma once

/* Telling a VM generation change on every kernel that reseeds on one.
 * Linux 5.18 and later reseed the CRNG when the VM generation ID changes
 * and say so in the kernel log; only later kernels also send the uevent
 * NEW_VMGENID=1 that the udev rule acts on (Debian 12's 6.1 does not, as
 * a restored VM shows).  The generation ID itself is not exposed to user
 * space, so the log line is the one sign those kernels give: the watcher
 * reads /dev/kmsg from its end and restarts seedbed-vm-fork.service for
 * each such line.  Where both come, the udev rule only starts the unit,
 * and the two converge on one run after the change: a start merges into
 * a run already under way, a restart begins it again. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* What add_vmfork_randomness() logs, after the "random: " of its pr_fmt. */
#define VM_FORK_KMSG_MESSAGE "random: crng reseeded due to virtual machine fork"

/* One /dev/kmsg record: "PRI,SEQ,USEC,FLAGS[,...];MESSAGE\n" and then
 * continuation lines (" KEY=VALUE\n"), which are not looked at. */
typedef struct KmsgRecord {
        unsigned facility;   /* 0: the kernel's own (user space may not log as it) */
        uint64_t seq;
        usec_t usec;         /* when it was logged, CLOCK_MONOTONIC */
        const char *message; /* points into the buffer; not NUL-terminated */
        size_t message_len;
} KmsgRecord;

/* Parses one record as read() returns it (n bytes, not NUL-terminated).
 * -EBADMSG when it is not one. */
int kmsg_record_parse(const char *buf, size_t n, KmsgRecord *ret);

/* Whether the record is the kernel's line for a VM generation change:
 * that text, from the kernel (facility 0: a write to /dev/kmsg is logged
 * as the user facility, whatever it asks for). */
bool kmsg_record_is_vm_fork(const KmsgRecord *r);

/* /dev/kmsg, read from its end: a change logged before the watcher
 * started was acted on by the one before it, or came before the system
 * could act (the initramfs, early boot).  The fd, or -errno. */
int kmsg_open_at_end(void);

/* Reads records from fd (/dev/kmsg, positioned where watching begins)
 * until it fails, calling on_fork for each VM generation change; a
 * failing on_fork is logged, and the watch goes on.  Records the kernel
 * overwrote before they were read (EPIPE) are skipped.  Returns -errno
 * from read(), or 0 at end of file (not /dev/kmsg). */
int vm_fork_watch(int fd, int (*on_fork)(const KmsgRecord *r, void *userdata), void *userdata);
