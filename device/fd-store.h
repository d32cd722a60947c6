/* SPDX-License-Identifier: MIT */
#pragma once

/* Our open files in systemd's file descriptor store, kept there while we
 * run rather than handed over when we stop: a process that is killed
 * (SIGKILL, a crash, the OOM killer) takes no guest's connection with it.
 * The next start gets every file back in LISTEN_FDS, with the names it
 * had (it keeps them), and reads what they are from the states the store
 * holds.
 *
 * Each file is stored once under "seedbed-fd-N" or, for an EGD
 * connection (which a successor can take up from its socket alone),
 * "seedbed-egd-N".  The process's state is "seedbed-state-N", each
 * vhost-user device's "seedbed-dev-SOCKET-N" (SOCKET its socket's N), so
 * a device's change costs one small write, not one of every VM.  N is
 * never given twice, across restarts too: a state cannot name another
 * file than the one it meant, however late it is read.
 *
 * systemd keeps one copy of an open file however often it is sent, and
 * drops the second silently (sd_notify(3)): so this module keeps one
 * entry per file and counts its holders.  Two guest memory regions on
 * one memfd, or a call eventfd a front-end sends again, are one entry,
 * in the store until neither holder needs it.  Sockets and memfds are
 * known by their inode, eventfds (one anonymous inode for all) by their
 * file, in kcmp()'s order.
 *
 * The protocol is sd_notify(3)'s: datagrams to $NOTIFY_SOCKET with
 * FDSTORE=1, FDNAME=, FDPOLL=0 and FDSTOREREMOVE=1. */

#include <stdbool.h>
#include <stdint.h>

#define FD_STORE_PREFIX "seedbed-fd-"
#define FD_STORE_EGD_PREFIX "seedbed-egd-"
#define FD_STORE_STATE_PREFIX "seedbed-state-"
#define FD_STORE_DEV_PREFIX "seedbed-dev-"

typedef enum FdKind {
        FD_KIND_NAMED, /* a state says what it is */
        FD_KIND_EGD,   /* an EGD connection */
        FD_KIND_STATE, /* the process's state */
        FD_KIND_DEV,   /* a vhost-user device's state */
} FdKind;

typedef struct FdStore FdStore;

/* A store that sends to $NOTIFY_SOCKET; -ENXIO without one.  When
 * systemd says how many the store takes ($FDSTORE, 254 and later), files
 * stop at seven eighths of it and the rest is for states. */
int fd_store_new(FdStore **ret);
FdStore *fd_store_free(FdStore *s);

/* A file the store passed us (fd, from LISTEN_FDS, taken) under name: it
 * keeps its name (and the kind the name says) for whoever holds the same
 * file next.  Those nobody held by fd_store_adopted_done(), and the
 * states passed, leave the store then.  -EINVAL for a name that is not
 * one of ours. */
int fd_store_adopt(FdStore *s, const char *name, int fd);
void fd_store_adopted_done(FdStore *s);

/* Keeps fd's file in the store and counts one more holder; its id in
 * *ret_id.  Only files a successor can take safely are kept: sockets,
 * eventfds, and memory that can be sealed (memfd, tmpfs); anything else
 * (a file on a network or FUSE mount that could block us and systemd)
 * is -EMEDIUMTYPE.  -ENOSPC past $FDSTORE. */
int fd_store_hold(FdStore *s, int fd, FdKind kind, uint32_t *ret_id);
/* One holder fewer; with the last, the file leaves the store.  A holder
 * lets go only once no state in the store names the file (server.c). */
void fd_store_release(FdStore *s, uint32_t id);

/* The id of fd's file, held; -ENOENT when nobody holds it. */
int fd_store_id_for_state(FdStore *s, int fd, uint32_t *ret_id);
/* The name (the number in "seedbed-fd-N") of the file with id: what a
 * state says. */
uint64_t fd_store_name(const FdStore *s, uint32_t id);

/* Stores memfd as the newest process state, then drops the one before;
 * -ENOSPC when the store has no room for both (the old one stays). */
int fd_store_put_state(FdStore *s, int memfd);
/* Stores memfd as the newest state of the device whose socket is dev_id,
 * drops the one before; memfd < 0 drops its state (the device is gone).
 * *gen is the device's, 0 at first. */
int fd_store_put_device(FdStore *s, uint32_t dev_id, uint64_t *gen, int memfd);

/* Takes everything out of the store that is still in it (device states
 * are their holders' to drop first): for a process that cannot keep
 * the store up to date, so a next start finds nothing stale. */
void fd_store_clear(FdStore *s);

/* Entries in the store, states included: for the logs. */
unsigned fd_store_count(const FdStore *s);

/* Parses one of our names: "seedbed-fd-ID", "seedbed-egd-ID",
 * "seedbed-state-GEN" (*ret_n = GEN), "seedbed-dev-ID-GEN" (*ret_n = ID,
 * *ret_gen = GEN).  -EINVAL for any other name. */
int fd_store_parse_name(const char *name, FdKind *ret_kind, uint64_t *ret_n, uint64_t *ret_gen);
