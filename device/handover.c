/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdpass.h"
#include "fileio.h"
#include "handover.h"

/* One datagram of at most size-1 bytes (NUL-terminated in buf), with up
 * to max_fds fds appended to fds (*n_fds counts them), waiting at most
 * HANDOVER_TIMEOUT_USEC. */
static int recv_msg(int conn, char *buf, size_t size, int *fds, size_t max_fds, size_t *n_fds) {
        union {
                struct cmsghdr align;
                uint8_t buf[CMSG_SPACE(sizeof(int) * HANDOVER_FDS_PER_MESSAGE)];
        } control;
        struct iovec iov = { .iov_base = buf, .iov_len = size - 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control };
        struct pollfd p = { .fd = conn, .events = POLLIN };
        bool whole;
        ssize_t k;
        int r;

        do
                r = poll(&p, 1, (int) (HANDOVER_TIMEOUT_USEC / USEC_PER_MSEC));
        while (r < 0 && errno == EINTR);
        if (r < 0)
                return -errno;
        if (r == 0)
                return -ETIMEDOUT;
        k = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
        if (k < 0)
                return -errno;
        whole = fdpass_collect(&mh, fds, max_fds, n_fds);
        if (k == 0)
                return -ECONNRESET;
        if (!whole || (mh.msg_flags & MSG_TRUNC))
                return -EPROTO;
        buf[k] = 0;
        return 0;
}

static int send_msg(int conn, const char *text, const int *fds, size_t n_fds) {
        union {
                struct cmsghdr align;
                uint8_t buf[CMSG_SPACE(sizeof(int) * HANDOVER_FDS_PER_MESSAGE)];
        } control = {};
        struct iovec iov = { .iov_base = (void *) text, .iov_len = strlen(text) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

        if (n_fds > HANDOVER_FDS_PER_MESSAGE)
                return -E2BIG;
        fdpass_attach(&mh, &control, fds, n_fds);
        return sendmsg(conn, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

int handover_request(const char *path, int *ret_conn, int *ret_memfd, int **ret_fds, size_t *ret_n_fds, char *error,
                     size_t error_size) {
        _cleanup_close_ int conn = -EBADF, memfd = -EBADF;
        _cleanup_free_ int *fds = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char buf[256], hello[64];
        size_t got = 0, want, n = 0;
        unsigned long long total;
        int r, one[1];

        if (strlen(path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        conn = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (conn < 0)
                return -errno;
        if (connect(conn, (struct sockaddr *) &sa, sizeof sa) < 0)
                return -errno;
        /* What it sends we act on as root (sockets to remove, memory to
         * map): only root's, or our own user's. */
        {
                struct ucred cred;
                socklen_t cl = sizeof cred;

                if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
                        return -errno;
                if (cred.uid != 0 && cred.uid != geteuid()) {
                        (void) snprintf(error, error_size, "the control socket is uid %u's, not root's",
                                        (unsigned) cred.uid);
                        return -EPROTO;
                }
        }

        (void) snprintf(hello, sizeof hello, "HANDOVER %u", STATE_VERSION_READ);
        r = send_msg(conn, hello, NULL, 0);
        if (r < 0)
                return r;

        r = recv_msg(conn, buf, sizeof buf, one, 1, &got);
        if (r < 0) {
                if (got)
                        safe_close(one[0]);
                return r;
        }
        if (startswith(buf, "REFUSED ")) {
                if (got)
                        safe_close(one[0]);
                (void) snprintf(error, error_size, "%s", buf + 8);
                return -EPROTO;
        }
        if (sscanf(buf, "STATE %llu", &total) != 1 || got != 1 || total > 16 * 1024 * 1024) {
                if (got)
                        safe_close(one[0]);
                (void) snprintf(error, error_size, "unexpected answer '%.64s'", buf);
                return -EPROTO;
        }
        memfd = one[0];
        /* Sealed, so what we parse is what was sent, whatever happens to
         * the sender meanwhile. */
        {
                int seals = fcntl(memfd, F_GET_SEALS);
                if (seals < 0 || (seals & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)) !=
                                         (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)) {
                        (void) snprintf(error, error_size, "the state is not a sealed memfd");
                        return -EPROTO;
                }
        }
        fds = calloc(MAX(total, 1ULL), sizeof *fds);
        if (!fds)
                return -ENOMEM;
        while (n < total) {
                size_t before = n;
                unsigned long long k;

                want = MIN((size_t) total - n, (size_t) HANDOVER_FDS_PER_MESSAGE);
                r = recv_msg(conn, buf, sizeof buf, fds, (size_t) total, &n);
                if (r >= 0 && (sscanf(buf, "FDS %llu", &k) != 1 || k != n - before || n - before != want))
                        r = -EPROTO;
                if (r < 0) {
                        for (size_t i = 0; i < n; i++)
                                safe_close(fds[i]);
                        (void) snprintf(error, error_size, "the fds did not arrive whole");
                        return r;
                }
        }

        *ret_conn = TAKE_FD(conn);
        *ret_memfd = TAKE_FD(memfd);
        *ret_fds = TAKE_PTR(fds);
        *ret_n_fds = n;
        return 0;
}

int handover_ready(int conn) {
        char buf[64];
        int r;

        r = send_msg(conn, "READY", NULL, 0);
        if (r < 0)
                return r;
        r = recv_msg(conn, buf, sizeof buf, NULL, 0, &(size_t) { 0 });
        /* The instance hung up after our READY without a GO: it died, and
         * serves nothing. */
        if (r == -ECONNRESET)
                return 0;
        if (r < 0)
                return r;
        return streq(buf, "GO") ? 0 : -EPROTO;
}

int handover_read_request(int conn, unsigned *ret_version) {
        char buf[64];
        unsigned v;
        int r;

        r = recv_msg(conn, buf, sizeof buf, NULL, 0, &(size_t) { 0 });
        if (r < 0)
                return r;
        if (sscanf(buf, "HANDOVER %u", &v) != 1 || v == 0)
                return -EPROTO;
        *ret_version = v;
        return 0;
}

void handover_refuse(int conn, const char *reason) {
        char buf[256];

        (void) snprintf(buf, sizeof buf, "REFUSED %s", reason);
        (void) send_msg(conn, buf, NULL, 0);
}

int handover_send(int conn, pid_t pid, int memfd, const int *fds, size_t n_fds) {
        char buf[64];
        int r;

        (void) snprintf(buf, sizeof buf, "STATE %zu", n_fds);
        r = send_msg(conn, buf, &memfd, 1);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_fds; i += HANDOVER_FDS_PER_MESSAGE) {
                size_t k = MIN(n_fds - i, (size_t) HANDOVER_FDS_PER_MESSAGE);

                (void) snprintf(buf, sizeof buf, "FDS %zu", k);
                r = send_msg(conn, buf, fds + i, k);
                if (r < 0)
                        return r;
        }
        r = recv_msg(conn, buf, sizeof buf, NULL, 0, &(size_t) { 0 });
        if (r >= 0 && !streq(buf, "READY"))
                r = -EPROTO;
        if (r < 0) {
                /* Not ready in time, or talking nonsense: it must not
                 * serve what we serve on, and killed, it cannot.  One that
                 * hung up has failed and serves nothing (the protocol). */
                if (r != -ECONNRESET && pid > 0)
                        (void) kill(pid, SIGKILL);
                return r;
        }
        return send_msg(conn, "GO", NULL, 0);
}
