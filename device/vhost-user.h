/* SPDX-License-Identifier: MIT */
#pragma once

/* The vhost-user back-end of one virtio-rng device (one VM), as QEMU's
 * docs/interop/vhost-user.rst specifies it for a device with one queue.
 * The engine owns no event loop: the caller watches the socket and the
 * kick eventfd and calls in, so a test drives it over a socketpair().
 * A peer that sends nonsense marks the device broken: it stops serving
 * that VM and nothing else; the process never crashes or trusts a guest
 * address it has not translated and bounds-checked. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state.h"

typedef struct VhostUserDev VhostUserDev;

typedef struct VhostUserOps {
        /* Gives up to n bytes of entropy for this VM now and returns how
         * many; 0 when none may be given (throttled, or no healthy
         * source): the buffer then stays in the ring until the caller
         * calls vhost_user_dev_process() again.  buf is guest memory:
         * write it, never read it back (the guest may change it).  Called
         * once per piece of a chained buffer, at most 64 KiB a buffer. */
        size_t (*fill)(void *userdata, uint8_t *buf, size_t n);
        /* The kick eventfd the caller should watch changed (SET_VRING_KICK,
         * ring stopped, reset): old_fd < 0 or new_fd < 0 for none.  The
         * engine owns both fds; old_fd is still open during the call and
         * closed right after, so take it out of any epoll set here (QEMU
         * holds another reference to the same eventfd, so closing ours
         * does not take it out of epoll).  Not called from
         * vhost_user_dev_free(): drop the watch before freeing. */
        void (*kick_changed)(void *userdata, int old_fd, int new_fd);
        /* The guest memory this device maps is about to change from
         * old_bytes to new_bytes (region sizes as the front-end gave
         * them).  Growing: return 0 to allow it, or -errno and a reason
         * in why to refuse it (the device then breaks with -EDQUOT and
         * logs only at debug level: the owner says why, as often as it
         * sees fit).  Shrinking, or
         * taking back a growth that then failed: the return is ignored.
         * NULL: any amount.  vhost_user_dev_free() does not call it; see
         * vhost_user_dev_mapped(). */
        int (*memory_changed)(void *userdata, uint64_t old_bytes, uint64_t new_bytes, char *why, size_t why_size);
} VhostUserOps;

typedef struct VhostUserStats {
        uint64_t bytes;    /* entropy written into guest buffers */
        uint64_t requests; /* buffers completed (used ring entries) */
        uint64_t messages; /* front-end messages handled */
} VhostUserStats;

/* Takes ownership of the connected socket (closed on failure too).  The
 * engine reads and writes it with MSG_DONTWAIT; its flags stay as they
 * are. */
int vhost_user_dev_new(int sock_fd, const VhostUserOps *ops, void *userdata, VhostUserDev **ret);
/* Closes the socket, unmaps guest memory, closes every fd. NULL is fine. */
VhostUserDev *vhost_user_dev_free(VhostUserDev *d);

/* At most this many memory regions: what GET_MAX_MEM_SLOTS answers and
 * ADD_MEM_REG may fill (a SET_MEM_TABLE carries at most 8).  1 to
 * VHOST_USER_MAX_REGIONS; that is also the default. */
#define VHOST_USER_MAX_REGIONS 32U
int vhost_user_dev_set_max_regions(VhostUserDev *d, unsigned n);

/* The guest memory the device maps now, in bytes as the front-end sized
 * its regions: for the owner's accounting when it frees the device. */
uint64_t vhost_user_dev_mapped(const VhostUserDev *d);

/* Names the device in log messages (the VM, or the socket path);
 * "fd N" until then. */
int vhost_user_dev_set_name(VhostUserDev *d, const char *name);

int vhost_user_dev_socket(const VhostUserDev *d);

/* The socket is readable: reads and handles one message (with its fds).
 * Never blocks: a message that has only partly arrived is kept and
 * completed on a later call (watch the socket level-triggered).
 * Returns 0, or <0 when the connection is over: -ECONNRESET when the
 * front-end hung up, -EPROTO (or another -errno) when it broke the
 * protocol; the reason is in vhost_user_dev_broken_reason(). */
int vhost_user_dev_handle_socket(VhostUserDev *d);

/* The kick eventfd fired, or entropy may be available again: drains the
 * kick, serves the available buffers it can fill, updates the used ring
 * and signals the call eventfd (honouring EVENT_IDX).  Returns 0, or <0
 * when the rings are broken (the device is then broken; close it). */
int vhost_user_dev_process(VhostUserDev *d);

/* Buffers are waiting that fill() could not serve (or the front-end
 * set no kick fd and wants the ring polled): call process() again after
 * a while.  When a call stops at its fairness budget with buffers left,
 * the engine writes the kick eventfd itself, so the loop comes back
 * without a timer. */
bool vhost_user_dev_pending(const VhostUserDev *d);

/* Writes what a successor needs to go on serving this front-end as if
 * nothing happened (state.h): the negotiated features, the memory
 * regions (their fds), the ring's configuration and our indices, the
 * eventfds, a message that has only partly arrived, the counters.  The
 * caller stops calling in after this: from here on the state is the
 * successor's.  A broken device has nothing to hand over: -EPROTO. */
int vhost_user_dev_save(const VhostUserDev *d, Json *j, StateFds *fds);

/* The device a predecessor saved at node, on its socket sock_fd (taken,
 * closed on failure too).  Memory is mapped again, the ring found where
 * it was, the kick fd handed to ops->kick_changed(), and the ring looked
 * at once (buffers posted meanwhile were kicked at the predecessor).
 * -EBADMSG (the reason in r->error) for a state it cannot take. */
int vhost_user_dev_restore(int sock_fd, const VhostUserOps *ops, void *userdata, StateReader *r, yaml_node_t *node,
                           VhostUserDev **ret);

/* The files the device holds (memory regions, eventfds, a half-received
 * message's fds), at most max of them, for keeping them in systemd's
 * store; the socket is not among them. */
#define VHOST_USER_FILES_MAX (VHOST_USER_MAX_REGIONS + 3 + 8)
size_t vhost_user_dev_files(const VhostUserDev *d, int *fds, size_t max);

/* After a restore from a state older than the ring (a crash: the state
 * was written when the device last changed, not when it last served):
 * takes the ring's position from the used index in guest memory, and
 * signals and looks at the ring once.  <0: the ring cannot be read (the
 * device is broken). */
int vhost_user_dev_resync(VhostUserDev *d);

bool vhost_user_dev_broken(const VhostUserDev *d);
const char *vhost_user_dev_broken_reason(const VhostUserDev *d);
const VhostUserStats *vhost_user_dev_stats(const VhostUserDev *d);
