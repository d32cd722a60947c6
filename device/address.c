/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <stddef.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "address.h"
#include "macro.h"

int listen_address_parse(const char *s, ListenAddress *ret, const char **ret_error) {
        ListenAddress a = {};
        const char *rest;

        (void) snprintf(a.text, sizeof a.text, "%s", s);

        rest = startswith(s, "unix:");
        if (rest || s[0] == '/') {
                struct sockaddr_un *un = (struct sockaddr_un *) &a.sa;
                const char *path = rest ? rest : s;

                if (path[0] != '/')
                        return *ret_error = "a unix socket needs an absolute path", -EINVAL;
                if (strlen(path) >= sizeof un->sun_path)
                        return *ret_error = "the unix socket path is too long", -EINVAL;
                un->sun_family = AF_UNIX;
                strcpy(un->sun_path, path);
                a.family = AF_UNIX;
                a.sa_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
                *ret = a;
                return 0;
        }

        rest = startswith(s, "tcp:");
        if (rest) {
                char host[128];
                const char *port, *h = rest;
                size_t hl;
                char *end;
                unsigned long p;

                if (rest[0] == '[') {
                        const char *close = strchr(rest, ']');
                        if (!close || close[1] != ':')
                                return *ret_error = "expected tcp:[ADDRESS]:PORT", -EINVAL;
                        h = rest + 1;
                        hl = (size_t) (close - h);
                        port = close + 2;
                } else {
                        const char *colon = strrchr(rest, ':');
                        if (!colon)
                                return *ret_error = "expected tcp:HOST:PORT", -EINVAL;
                        hl = (size_t) (colon - rest);
                        port = colon + 1;
                }
                if (hl == 0 || hl >= sizeof host)
                        return *ret_error = "the host is empty or too long", -EINVAL;
                memcpy(host, h, hl);
                host[hl] = 0;

                errno = 0;
                p = strtoul(port, &end, 10);
                if (!port[0] || *end || errno || p == 0 || p > 65535)
                        return *ret_error = "the port must be 1..65535", -EINVAL;

                /* Numeric addresses only: a name would need the resolver,
                 * and a daemon's listen address should not depend on DNS. */
                struct sockaddr_in *in4 = (struct sockaddr_in *) &a.sa;
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &a.sa;
                if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
                        in4->sin_family = AF_INET;
                        in4->sin_port = htons((uint16_t) p);
                        a.family = AF_INET;
                        a.sa_len = sizeof *in4;
                } else if (streq(host, "localhost")) {
                        in4->sin_family = AF_INET;
                        in4->sin_port = htons((uint16_t) p);
                        in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                        a.family = AF_INET;
                        a.sa_len = sizeof *in4;
                } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
                        in6->sin6_family = AF_INET6;
                        in6->sin6_port = htons((uint16_t) p);
                        a.family = AF_INET6;
                        a.sa_len = sizeof *in6;
                } else
                        return *ret_error = "the host must be a numeric IPv4 or IPv6 address (or localhost)", -EINVAL;
                *ret = a;
                return 0;
        }

        return *ret_error = "expected unix:PATH, an absolute path, or tcp:HOST:PORT", -EINVAL;
}

int listen_address_open(const ListenAddress *a, int type, mode_t mode, gid_t gid, int *ret_fd) {
        _cleanup_close_ int fd = -EBADF;
        int one = 1;

        fd = socket(a->family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;

        if (a->family == AF_UNIX) {
                const struct sockaddr_un *un = (const struct sockaddr_un *) &a->sa;
                struct stat st;

                if (lstat(un->sun_path, &st) >= 0) {
                        _cleanup_close_ int probe = -EBADF;

                        if (!S_ISSOCK(st.st_mode))
                                return -EEXIST;
                        /* A socket someone still listens on is not stale. */
                        probe = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
                        if (probe >= 0 && connect(probe, (const struct sockaddr *) &a->sa, a->sa_len) >= 0)
                                return -EADDRINUSE;
                        (void) unlink(un->sun_path);
                }
        } else
                (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);

        if (bind(fd, (const struct sockaddr *) &a->sa, a->sa_len) < 0)
                return -errno;

        if (a->family == AF_UNIX) {
                const char *path = ((const struct sockaddr_un *) &a->sa)->sun_path;
                if (mode != 0 && chmod(path, mode) < 0)
                        return -errno;
                if (gid != (gid_t) -1 && chown(path, (uid_t) -1, gid) < 0)
                        return -errno;
        }

        if (listen(fd, SOMAXCONN) < 0)
                return -errno;

        *ret_fd = TAKE_FD(fd);
        return 0;
}

void listen_address_cleanup(const ListenAddress *a) {
        const struct sockaddr_un *un = (const struct sockaddr_un *) &a->sa;
        struct stat st;

        if (a->family == AF_UNIX && lstat(un->sun_path, &st) >= 0 && S_ISSOCK(st.st_mode))
                (void) unlink(un->sun_path);
}
