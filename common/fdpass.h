/* SPDX-License-Identifier: MIT */
#pragma once

/* File descriptors over unix sockets (SCM_RIGHTS): the one place that
 * packs and unpacks them, for vhost-user's messages, the device's
 * handover and the tests' front-end. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Room for n fds in a control buffer. */
#define FDPASS_CONTROL_SIZE(n) CMSG_SPACE(sizeof(int) * (n))

/* Attaches fds to mh, using control (FDPASS_CONTROL_SIZE(n) bytes, suitably
 * aligned: a union with struct cmsghdr).  n 0 attaches nothing. */
void fdpass_attach(struct msghdr *mh, void *control, const int *fds, size_t n);

/* Takes the fds a received mh carries into fds[*n..max): each beyond max
 * is closed.  false when any was closed so, or the kernel truncated the
 * control data (it closed those): the message cannot be trusted whole. */
bool fdpass_collect(struct msghdr *mh, int *fds, size_t max, size_t *n);
