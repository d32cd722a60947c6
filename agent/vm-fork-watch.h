/* SPDX-License-Identifier: MIT */
#pragma once

/* Telling a VM generation change on every kernel that reseeds on one.
 * Linux 5.18 and later reseed the CRNG when the VM generation ID changes
 * and say so in the kernel log; only some also send the uevent
 * NEW_VMGENID=1 that the udev rule acts on (added in 2023, taken out
 * again: neither Debian 12's 6.1 nor Debian 13's 6.12 sends it, as
 * restored VMs show).  The generation ID itself is not exposed to user
 * space, so the log line is the one sign those kernels give: the watcher
 * reads /dev/kmsg and restarts seedbed-vm-fork.service for each such line
 * of this boot it has not acted on yet (it keeps the last one's sequence
 * number in /run, which a restored VM gets back with the kernel's log:
 * a change before the watcher first started in the boot is acted on
 * too).  Where both come, each restarts the unit, milliseconds apart:
 * the second kills a run that has just begun. */

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

/* Where the watcher keeps the sequence number of the last change it
 * acted on in this boot. */
#define VM_FORK_WATCH_STATE RUNSTATEDIR "/seedbed/vm-fork-watch.seq"

/* Whether the watcher acts on record r: a change it has not acted on
 * (have_last false: none in this boot yet; else a sequence number after
 * last). */
bool vm_fork_watch_acts(const KmsgRecord *r, bool have_last, uint64_t last);

/* Reads records from fd (/dev/kmsg, from the oldest the kernel still
 * holds) until it fails, calling on_fork for each VM generation change
 * vm_fork_watch_acts() takes, after which that one is the last; a failing
 * on_fork is logged, and the watch goes on.  Records the kernel overwrote
 * before they were read (EPIPE) are skipped, with a warning: a change may
 * have been among them.  Returns -errno from read(), or 0 at end of file
 * (not /dev/kmsg). */
int vm_fork_watch(int fd, bool have_last, uint64_t last, int (*on_fork)(const KmsgRecord *r, void *userdata),
                  void *userdata);
