/* SPDX-License-Identifier: MIT */
#pragma once

/* Our open files in systemd's file descriptor store, kept there while we
 * run rather than handed over when we stop: a process that is killed
 * (SIGKILL, a crash, the OOM killer) takes no guest's connection with it.
 * The next start gets every file back in LISTEN_FDS and reads what they
 * are from the newest state the store holds.
 *
 * Each file is stored once under "seedbed-fd-ID" or, for an EGD
 * connection (which a successor can take up from its socket alone),
 * "seedbed-egd-ID"; the state as "seedbed-state-GEN".  systemd keeps one
 * copy of an open file however often it is sent (sd_notify(3)), so this
 * module keeps one entry per file and counts its holders: two guest
 * memory regions on one memfd are one entry, removed from the store only
 * when neither needs it.
 *
 * The protocol is sd_notify(3)'s: datagrams to $NOTIFY_SOCKET with
 * FDSTORE=1, FDNAME=, FDPOLL=0 and FDSTOREREMOVE=1. */

#include <stdbool.h>
#include <stdint.h>

#define FD_STORE_PREFIX "seedbed-fd-"
#define FD_STORE_EGD_PREFIX "seedbed-egd-"
#define FD_STORE_STATE_PREFIX "seedbed-state-"

typedef enum FdKind {
        FD_KIND_NAMED, /* the state says what it is */
        FD_KIND_EGD,   /* an EGD connection */
} FdKind;

typedef struct FdStore FdStore;

/* A store that sends to $NOTIFY_SOCKET. */
int fd_store_new(FdStore **ret);
FdStore *fd_store_free(FdStore *s);

/* Keeps fd's file in the store and counts one more holder; its id in
 * *ret_id.  The same file held again (through this or another fd of
 * ours) is the same entry.  -errno when systemd did not take it: the
 * file then survives a stop, not a crash. */
int fd_store_hold(FdStore *s, int fd, FdKind kind, uint32_t *ret_id);
/* One holder fewer; the entry leaves the store with its last.  Its id
 * is given to another file only after the next fd_store_put_state(): the
 * state in the store may name it still. */
void fd_store_release(FdStore *s, uint32_t id);

/* The id under which fd's file is stored, for a state that names it;
 * -ENOENT when nobody holds it. */
int fd_store_id_for_state(FdStore *s, int fd, uint32_t *ret_id);

/* Stores memfd as the newest state, then drops the one before. */
int fd_store_put_state(FdStore *s, int memfd);

/* Entries in the store, the state's included: for the logs. */
unsigned fd_store_count(const FdStore *s);

/* "seedbed-fd-ID", "seedbed-egd-ID" or "seedbed-state-GEN": the kind
 * (state: *ret_state), the number; -EINVAL for any other name. */
int fd_store_parse_name(const char *name, FdKind *ret_kind, bool *ret_state, uint64_t *ret_n);
