/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "fdpass.h"
#include "macro.h"

void fdpass_attach(struct msghdr *mh, void *control, const int *fds, size_t n) {
        struct cmsghdr *c;

        if (n == 0)
                return;
        mh->msg_control = control;
        mh->msg_controllen = FDPASS_CONTROL_SIZE(n);
        c = CMSG_FIRSTHDR(mh);
        /* Never NULL: msg_controllen holds a header. */
        if (!c)
                return;
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
}

bool fdpass_collect(struct msghdr *mh, int *fds, size_t max, size_t *n) {
        bool ok = !(mh->msg_flags & MSG_CTRUNC);

        for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
                size_t k;

                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < k; i++) {
                        int fd;

                        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                        if (fds && *n < max)
                                fds[(*n)++] = fd;
                        else {
                                (void) safe_close(fd);
                                ok = false;
                        }
                }
        }
        return ok;
}
