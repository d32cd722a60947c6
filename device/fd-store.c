/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fd-store.h"
#include "log.h"
#include "macro.h"

typedef struct Entry {
        unsigned holders;     /* 0: a free slot, unless quarantined */
        bool quarantined;     /* released since the state was put: see fd_store_release() */
        FdKind kind;
        bool reg;             /* a regular file (memfd): one inode, one entry */
        int fd;               /* the fd it was stored from */
        dev_t dev;
        ino_t ino;
} Entry;

struct FdStore {
        Entry *entries;       /* indexed by id */
        size_t n_entries, free_hint;
        uint32_t *by_fd;      /* fd number -> id + 1; checked before use */
        size_t n_by_fd;
        uint32_t *quarantine; /* ids released since the state was put */
        size_t n_quarantine, alloc_quarantine;
        uint64_t state_gen;   /* the state in the store, 0: none */
        unsigned count;
        bool warned;
};

/* One datagram to $NOTIFY_SOCKET, as sd_pid_notify_with_fds() sends it:
 * a path, or an abstract address written with a leading '@'. */
static int notify(const char *msg, const int *fds, size_t n_fds) {
        const char *path = getenv("NOTIFY_SOCKET");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        union {
                struct cmsghdr h;
                uint8_t buf[CMSG_SPACE(sizeof(int) * 1)];
        } control = {};
        struct iovec iov = { .iov_base = (char *) msg, .iov_len = strlen(msg) };
        struct msghdr mh = {
                .msg_name = &sa,
                .msg_iov = &iov,
                .msg_iovlen = 1,
        };
        _cleanup_close_ int sock = -EBADF;
        size_t len;

        assert(n_fds <= 1);
        if (!path || !path[0])
                return -ENXIO;
        len = strlen(path);
        if (len >= sizeof sa.sun_path)
                return -EINVAL;
        memcpy(sa.sun_path, path, len);
        if (sa.sun_path[0] == '@')
                sa.sun_path[0] = 0;
        mh.msg_namelen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + (path[0] != '@'));
        if (n_fds > 0) {
                struct cmsghdr *c = &control.h;

                mh.msg_control = control.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        }
        sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (sock < 0)
                return -errno;
        /* A full queue is a manager that is busy: wait, it reads. */
        if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
                return -errno;
        return 0;
}

int fd_store_new(FdStore **ret) {
        FdStore *s;

        if (!getenv("NOTIFY_SOCKET"))
                return -ENXIO;
        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static void remove_name(const char *prefix, uint64_t n) {
        char msg[96];

        (void) snprintf(msg, sizeof msg, "FDSTOREREMOVE=1\nFDNAME=%s%" PRIu64, prefix, n);
        (void) notify(msg, NULL, 0);
}

FdStore *fd_store_free(FdStore *s) {
        if (!s)
                return NULL;
        /* What is in the store stays there: that is its point. */
        free(s->entries);
        free(s->by_fd);
        free(s->quarantine);
        free(s);
        return NULL;
}

static const char *kind_prefix(FdKind kind) {
        return kind == FD_KIND_EGD ? FD_STORE_EGD_PREFIX : FD_STORE_PREFIX;
}

/* The entry fd is held as, if any: the map says where to look, the
 * inode (and for anything but a regular file, the fd number) that it is
 * still the same file. */
static int lookup(FdStore *s, int fd, const struct stat *st) {
        uint32_t k;
        Entry *e;

        if (fd < 0 || (size_t) fd >= s->n_by_fd || s->by_fd[fd] == 0)
                return -ENOENT;
        k = s->by_fd[fd] - 1;
        if (k >= s->n_entries)
                return -ENOENT;
        e = &s->entries[k];
        if (e->holders == 0 || e->dev != st->st_dev || e->ino != st->st_ino || (!e->reg && e->fd != fd))
                return -ENOENT;
        return (int) k;
}

static int map_fd(FdStore *s, int fd, uint32_t id) {
        if ((size_t) fd >= s->n_by_fd) {
                size_t n = MAX((size_t) fd + 1, s->n_by_fd * 2);
                uint32_t *p = realloc(s->by_fd, n * sizeof *p);

                if (!p)
                        return -ENOMEM;
                memset(p + s->n_by_fd, 0, (n - s->n_by_fd) * sizeof *p);
                s->by_fd = p;
                s->n_by_fd = n;
        }
        s->by_fd[fd] = id + 1;
        return 0;
}

static int new_entry(FdStore *s, int fd, const struct stat *st, FdKind kind, uint32_t *ret_id) {
        char msg[96];
        size_t k;
        Entry *e;
        int r;

        for (k = s->free_hint; k < s->n_entries; k++)
                if (s->entries[k].holders == 0 && !s->entries[k].quarantined)
                        break;
        if (k == s->n_entries) {
                size_t n = MAX((size_t) 64, s->n_entries * 2);
                Entry *p;

                if (n > UINT32_MAX - 1)
                        return -ENOSPC;
                p = realloc(s->entries, n * sizeof *p);
                if (!p)
                        return -ENOMEM;
                memset(p + s->n_entries, 0, (n - s->n_entries) * sizeof *p);
                s->entries = p;
                s->n_entries = n;
        }
        r = map_fd(s, fd, (uint32_t) k);
        if (r < 0)
                return r;
        /* FDPOLL=0: a guest that hangs up meanwhile stays stored until we
         * have closed its connection and said so, or a state could name
         * a file the store dropped. */
        (void) snprintf(msg, sizeof msg, "FDSTORE=1\nFDPOLL=0\nFDNAME=%s%zu", kind_prefix(kind), k);
        r = notify(msg, &fd, 1);
        if (r < 0) {
                if (!s->warned)
                        log_warning_errno(r, "Failed to keep a file in systemd's store (FileDescriptorStoreMax=): %m; "
                                          "its guest loses the connection if this process is killed.");
                s->warned = true;
                return r;
        }
        e = &s->entries[k];
        *e = (Entry) { .holders = 1, .kind = kind, .reg = S_ISREG(st->st_mode), .fd = fd, .dev = st->st_dev, .ino = st->st_ino };
        s->free_hint = k + 1;
        s->count++;
        *ret_id = (uint32_t) k;
        return 0;
}

int fd_store_hold(FdStore *s, int fd, FdKind kind, uint32_t *ret_id) {
        struct stat st;
        int k;

        assert(s);
        if (fstat(fd, &st) < 0)
                return -errno;
        k = lookup(s, fd, &st);
        /* A memfd is one inode: another fd of ours on it is the entry
         * (systemd would keep only one of the two). */
        if (k < 0 && S_ISREG(st.st_mode))
                for (size_t i = 0; i < s->n_entries; i++) {
                        Entry *e = &s->entries[i];
                        if (e->holders > 0 && e->reg && e->dev == st.st_dev && e->ino == st.st_ino) {
                                if (map_fd(s, fd, (uint32_t) i) < 0)
                                        return -ENOMEM;
                                k = (int) i;
                                break;
                        }
                }
        if (k < 0)
                return new_entry(s, fd, &st, kind, ret_id);
        s->entries[k].holders++;
        *ret_id = (uint32_t) k;
        return 0;
}

void fd_store_release(FdStore *s, uint32_t id) {
        Entry *e;

        if (!s || id >= s->n_entries || s->entries[id].holders == 0)
                return;
        e = &s->entries[id];
        if (--e->holders > 0)
                return;
        remove_name(kind_prefix(e->kind), id);
        /* The state in the store may still name this id: given to another
         * file before a newer state is put, a successor after a crash
         * would take that file for this one (another VM's memory for this
         * device's).  Free once no state names it. */
        *e = (Entry) { .quarantined = true };
        s->count--;
        if (s->n_quarantine == s->alloc_quarantine) {
                size_t a = MAX((size_t) 16, s->alloc_quarantine * 2);
                uint32_t *p = realloc(s->quarantine, a * sizeof *p);
                if (!p)
                        return; /* never given again: safe, if wasteful */
                s->quarantine = p;
                s->alloc_quarantine = a;
        }
        s->quarantine[s->n_quarantine++] = id;
}

int fd_store_id_for_state(FdStore *s, int fd, uint32_t *ret_id) {
        struct stat st;
        int k;

        if (fstat(fd, &st) < 0)
                return -errno;
        k = lookup(s, fd, &st);
        if (k < 0)
                return k;
        *ret_id = (uint32_t) k;
        return 0;
}

int fd_store_put_state(FdStore *s, int memfd) {
        char msg[96];
        int r;

        (void) snprintf(msg, sizeof msg, "FDSTORE=1\nFDPOLL=0\nFDNAME=" FD_STORE_STATE_PREFIX "%" PRIu64,
                        s->state_gen + 1);
        r = notify(msg, &memfd, 1);
        if (r < 0)
                return r; /* the store keeps the state before */
        if (s->state_gen > 0)
                remove_name(FD_STORE_STATE_PREFIX, s->state_gen);
        else
                s->count++;
        s->state_gen++;
        for (size_t i = 0; i < s->n_quarantine; i++) {
                uint32_t id = s->quarantine[i];
                s->entries[id].quarantined = false;
                s->free_hint = MIN(s->free_hint, (size_t) id);
        }
        s->n_quarantine = 0;
        return 0;
}

unsigned fd_store_count(const FdStore *s) {
        return s ? s->count : 0;
}

int fd_store_parse_name(const char *name, FdKind *ret_kind, bool *ret_state, uint64_t *ret_n) {
        static const struct {
                const char *prefix;
                FdKind kind;
                bool state;
        } table[] = {
                { FD_STORE_PREFIX, FD_KIND_NAMED, false },
                { FD_STORE_EGD_PREFIX, FD_KIND_EGD, false },
                { FD_STORE_STATE_PREFIX, FD_KIND_NAMED, true },
        };

        if (!name)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                size_t len = strlen(table[i].prefix);
                const char *p = name + len;
                uint64_t n = 0;

                if (strncmp(name, table[i].prefix, len) != 0)
                        continue;
                if (*p < '0' || *p > '9' || (p[0] == '0' && p[1]))
                        return -EINVAL;
                for (; *p >= '0' && *p <= '9'; p++) {
                        if (n > (UINT64_MAX - 9) / 10)
                                return -EINVAL;
                        n = n * 10 + (uint64_t) (*p - '0');
                }
                if (*p)
                        return -EINVAL;
                *ret_kind = table[i].kind;
                *ret_state = table[i].state;
                *ret_n = n;
                return 0;
        }
        return -EINVAL;
}
