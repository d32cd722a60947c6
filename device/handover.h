/* SPDX-License-Identifier: MIT */
#pragma once

/* Handing a running seedbed-device's state to its successor over the
 * control socket (seedbed-device --replace).  The successor connects
 * (SOCK_SEQPACKET, unix, root only by the socket's mode) and says which
 * state version it reads; the running instance stops serving, writes
 * its state (state.h) and sends it with every fd it names, then waits
 * for the successor to say it serves, and exits 0.  Should the successor
 * fail or go quiet first, the running instance serves on as before:
 * nothing is lost but the time it waited.
 *
 * Messages, each one datagram:
 *   successor:  "HANDOVER <version>"
 *   instance:   "STATE <n>"   with the state memfd; n fds follow
 *               "FDS <k>"     with k of them, until n were sent
 *           or  "REFUSED <reason>"
 *   successor:  "READY"       it has taken everything up, serves nothing yet
 *   instance:   "GO"          it serves nothing any more, and exits
 *
 * Exactly one of the two serves at any time.  The instance serves on
 * only when the successor is gone before READY: it hung up (it failed),
 * or it did not say READY in time and the instance killed it.  Once it
 * sent GO it never serves again.  The successor serves once it got GO,
 * or when the instance hung up after READY without GO (it died: nobody
 * else serves). */

#include <stddef.h>

#include "macro.h"
#include "state.h"

/* The newest state version this binary reads (it reads every older). */
#define STATE_VERSION_READ STATE_VERSION

/* fds per message: the kernel's SCM_MAX_FD is 253. */
#define HANDOVER_FDS_PER_MESSAGE 250U
/* How long each side waits for the other's next message.  The successor
 * maps every guest's memory before it says it serves: allow for a busy
 * host with thousands of VMs. */
#define HANDOVER_TIMEOUT_USEC (60 * USEC_PER_SEC)

/* The successor's side: connects to path and takes the state.  0 with
 * the memfd and the fds (the caller owns all of them) and the connection
 * to answer on; -ENOENT / -ECONNREFUSED when no instance listens there
 * (start fresh), -EPROTO when it refused (reason in error), or -errno. */
int handover_request(const char *path, int *ret_conn, int *ret_memfd, int **ret_fds, size_t *ret_n_fds, char *error,
                     size_t error_size);

/* The successor's side, ready to serve: says READY and waits for GO.
 * 0: serve now; -errno: do not (the instance serves, or may). */
int handover_ready(int conn);

/* The running instance's side, on a connection accepted on the control
 * socket: reads the request, returns the version the successor reads
 * (>0), or -errno. */
int handover_read_request(int conn, unsigned *ret_version);

/* Sends the state memfd and fds to the successor (process pid), waits
 * for READY and answers GO: 0 when the successor serves (exit now,
 * serving nothing more), -errno when it is gone (serve on): it hung up,
 * or it was killed for not being ready within HANDOVER_TIMEOUT_USEC. */
int handover_send(int conn, pid_t pid, int memfd, const int *fds, size_t n_fds);

/* Tells the successor why not. */
void handover_refuse(int conn, const char *reason);
