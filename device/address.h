/* SPDX-License-Identifier: MIT */
#pragma once

/* Listening addresses as users write them: "unix:PATH" or a bare
 * absolute path, "tcp:HOST:PORT" (HOST may be [v6]). */

#include <sys/socket.h>
#include <sys/types.h>

typedef struct ListenAddress {
        int family;                 /* AF_UNIX, AF_INET, AF_INET6 */
        struct sockaddr_storage sa;
        socklen_t sa_len;
        char text[256];             /* as given, for messages */
} ListenAddress;

/* -EINVAL with a static message in *ret_error for anything malformed. */
int listen_address_parse(const char *s, ListenAddress *ret, const char **ret_error);

/* A non-blocking, close-on-exec listening socket of type (SOCK_STREAM,
 * SOCK_SEQPACKET).  A stale unix socket
 * file (nobody listening) is replaced; anything else at the path is an
 * error.  mode applies to unix sockets (0 leaves the umask's). */
int listen_address_open(const ListenAddress *a, int type, mode_t mode, gid_t gid, int *ret_fd);

/* Removes the unix socket file, if it is one. */
void listen_address_cleanup(const ListenAddress *a);
