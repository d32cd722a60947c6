/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kcmp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "fd-store.h"
#include "log.h"
#include "macro.h"

/* Names are numbers never given twice (across restarts too: a start goes
 * on from the highest it was passed), so a state can never name another
 * file than the one it meant, however late it is read. */
typedef struct Entry {
        bool used;
        bool adopted;         /* passed by the previous instance, not held yet */
        bool typeless;        /* an anonymous inode (eventfd): compared by kcmp */
        FdKind kind;
        unsigned holders;
        uint64_t name;
        int fd;               /* the fd it was last held through (a hint) */
        int ref;              /* ours, for kcmp (typeless) and adopted files */
        dev_t dev;
        ino_t ino;
        uint32_t next;        /* hash chain: slot + 1 */
} Entry;

typedef struct Named {
        FdKind kind;
        uint64_t n, gen;
} Named;

struct FdStore {
        Entry *entries;       /* slots, reused; a slot is not a name */
        size_t n_entries, free_hint;
        uint32_t *buckets;    /* (dev, ino) -> slot + 1 */
        size_t n_buckets;
        uint32_t *by_fd;      /* fd number -> slot + 1; checked before use */
        size_t n_by_fd;
        uint32_t *anon;       /* slots of eventfds, in kcmp's order of their files */
        size_t n_anon, alloc_anon;
        Named *states;        /* adopted states, dropped once ours are there */
        size_t n_states;
        uint64_t next_name;
        uint64_t state_gen;   /* the process state in the store, if have_state */
        bool have_state;
        unsigned count, max;  /* in the store; $FDSTORE (0: not said) */
        bool warned;
};

/* One datagram to $NOTIFY_SOCKET, as sd_pid_notify_with_fds() sends it:
 * a path, or an abstract address written with a leading '@'. */
static int notify(const char *msg, int fd) {
        const char *path = getenv("NOTIFY_SOCKET");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        union {
                struct cmsghdr h;
                uint8_t buf[CMSG_SPACE(sizeof(int))];
        } control = {};
        struct iovec iov = { .iov_base = (char *) msg, .iov_len = strlen(msg) };
        struct msghdr mh = { .msg_name = &sa, .msg_iov = &iov, .msg_iovlen = 1 };
        _cleanup_close_ int sock = -EBADF;
        size_t len;

        if (!path || !path[0])
                return -ENXIO;
        len = strlen(path);
        if (len >= sizeof sa.sun_path)
                return -EINVAL;
        memcpy(sa.sun_path, path, len);
        if (sa.sun_path[0] == '@')
                sa.sun_path[0] = 0;
        mh.msg_namelen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + (path[0] != '@'));
        if (fd >= 0) {
                mh.msg_control = control.buf;
                mh.msg_controllen = sizeof control.buf;
                control.h.cmsg_level = SOL_SOCKET;
                control.h.cmsg_type = SCM_RIGHTS;
                control.h.cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(&control.h), &fd, sizeof fd);
        }
        sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (sock < 0)
                return -errno;
        /* A full queue is a manager that is busy: wait, it reads. */
        if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
                return -errno;
        return 0;
}

static const char *kind_prefix(FdKind kind) {
        switch (kind) {
        case FD_KIND_EGD:
                return FD_STORE_EGD_PREFIX;
        case FD_KIND_STATE:
                return FD_STORE_STATE_PREFIX;
        case FD_KIND_DEV:
                return FD_STORE_DEV_PREFIX;
        default:
                return FD_STORE_PREFIX;
        }
}

static void format_name(char *buf, size_t size, FdKind kind, uint64_t n, uint64_t gen) {
        if (kind == FD_KIND_DEV)
                (void) snprintf(buf, size, "%s%" PRIu64 "-%" PRIu64, kind_prefix(kind), n, gen);
        else
                (void) snprintf(buf, size, "%s%" PRIu64, kind_prefix(kind), n);
}

static int store(int fd, FdKind kind, uint64_t n, uint64_t gen) {
        char msg[128], name[64];

        format_name(name, sizeof name, kind, n, gen);
        /* FDPOLL=0: a guest that hangs up meanwhile stays stored until we
         * have closed its connection and said so. */
        (void) snprintf(msg, sizeof msg, "FDSTORE=1\nFDPOLL=0\nFDNAME=%s", name);
        return notify(msg, fd);
}

static void drop(FdKind kind, uint64_t n, uint64_t gen) {
        char msg[128], name[64];

        format_name(name, sizeof name, kind, n, gen);
        (void) snprintf(msg, sizeof msg, "FDSTOREREMOVE=1\nFDNAME=%s", name);
        (void) notify(msg, -EBADF);
}

int fd_store_new(FdStore **ret) {
        const char *max = getenv("FDSTORE");
        FdStore *s;

        if (!getenv("NOTIFY_SOCKET"))
                return -ENXIO;
        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        if (max)
                s->max = (unsigned) MIN(strtoul(max, NULL, 10), (unsigned long) UINT_MAX);
        s->next_name = 0;
        *ret = s;
        return 0;
}

FdStore *fd_store_free(FdStore *s) {
        if (!s)
                return NULL;
        /* What is in the store stays there: that is its point. */
        for (size_t i = 0; i < s->n_entries; i++)
                safe_close(s->entries[i].ref);
        free(s->entries);
        free(s->buckets);
        free(s->by_fd);
        free(s->anon);
        free(s->states);
        free(s);
        return NULL;
}

static size_t bucket_of(const FdStore *s, dev_t dev, ino_t ino) {
        uint64_t h = ((uint64_t) ino ^ ((uint64_t) dev << 32)) * 0x9e3779b97f4a7c15ULL;
        return (size_t) (h >> 32) & (s->n_buckets - 1);
}

static int rehash(FdStore *s, size_t n) {
        uint32_t *b = calloc(n, sizeof *b);

        if (!b)
                return -ENOMEM;
        free(s->buckets);
        s->buckets = b;
        s->n_buckets = n;
        for (size_t i = 0; i < s->n_entries; i++) {
                Entry *e = &s->entries[i];
                size_t k;

                if (!e->used || e->typeless)
                        continue;
                k = bucket_of(s, e->dev, e->ino);
                e->next = s->buckets[k];
                s->buckets[k] = (uint32_t) i + 1;
        }
        return 0;
}

/* kcmp()'s order of two open files: <0, 0, >0. */
static int file_order(int a, int b) {
        long r = syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a, b);
        return r == 0 ? 0 : r == 1 ? -1 : 1;
}

/* Where fd's file is, or would go, in the eventfd index: every eventfd
 * is the one anonymous inode, so an inode says nothing; kcmp() orders
 * the files themselves, so a lookup costs log n calls, not n. */
static size_t anon_search(FdStore *s, int fd, bool *ret_found) {
        size_t lo = 0, hi = s->n_anon;

        *ret_found = false;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = file_order(fd, s->entries[s->anon[mid]].ref);

                if (c == 0) {
                        *ret_found = true;
                        return mid;
                }
                if (c < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return lo;
}

static void unhash(FdStore *s, size_t slot) {
        Entry *e = &s->entries[slot];
        uint32_t *p;

        if (e->typeless) {
                bool found;
                size_t i = anon_search(s, e->ref, &found);

                if (found) {
                        memmove(s->anon + i, s->anon + i + 1, (s->n_anon - i - 1) * sizeof *s->anon);
                        s->n_anon--;
                }
                return;
        }
        p = &s->buckets[bucket_of(s, e->dev, e->ino)];
        while (*p && *p != slot + 1)
                p = &s->entries[*p - 1].next;
        if (*p)
                *p = e->next;
}

/* A free slot, the table grown as needed; -errno. */
static int new_slot(FdStore *s, size_t *ret) {
        size_t k;

        for (k = s->free_hint; k < s->n_entries; k++)
                if (!s->entries[k].used)
                        break;
        if (k == s->n_entries) {
                size_t n = MAX((size_t) 64, s->n_entries * 2);
                Entry *p;

                if (n >= UINT32_MAX)
                        return -ENOSPC;
                p = realloc(s->entries, n * sizeof *p);
                if (!p)
                        return -ENOMEM;
                for (size_t i = s->n_entries; i < n; i++)
                        p[i] = (Entry) { .fd = -EBADF, .ref = -EBADF };
                s->entries = p;
                s->n_entries = n;
                /* At most two entries to a bucket on average. */
                if (rehash(s, n / 2) < 0)
                        return -ENOMEM;
        }
        s->free_hint = k + 1;
        *ret = k;
        return 0;
}

static int map_fd(FdStore *s, int fd, size_t slot) {
        if ((size_t) fd >= s->n_by_fd) {
                size_t n = MAX((size_t) fd + 1, s->n_by_fd * 2);
                uint32_t *p = realloc(s->by_fd, n * sizeof *p);

                if (!p)
                        return -ENOMEM;
                memset(p + s->n_by_fd, 0, (n - s->n_by_fd) * sizeof *p);
                s->by_fd = p;
                s->n_by_fd = n;
        }
        s->by_fd[fd] = (uint32_t) slot + 1;
        return 0;
}

/* What fd is, without touching a file system that could block (FUSE,
 * NFS): 0 with *st for what we keep, -EMEDIUMTYPE for anything else. */
static int examine(int fd, struct stat *st, bool *ret_typeless) {
        char path[64], target[64];
        ssize_t l;

        *ret_typeless = false;
        /* Sealable: a memfd (hugetlbfs ones too), or a file on tmpfs. */
        if (fcntl(fd, F_GET_SEALS) >= 0)
                return fstat(fd, st) < 0 ? -errno : 0;
        (void) snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        l = readlink(path, target, sizeof target - 1);
        if (l < 0)
                return -errno;
        target[l] = 0;
        if (strncmp(target, "socket:[", 8) == 0)
                return fstat(fd, st) < 0 ? -errno : 0;
        if (streq(target, "anon_inode:[eventfd]")) {
                /* Every eventfd is the one anonymous inode. */
                *ret_typeless = true;
                return fstat(fd, st) < 0 ? -errno : 0;
        }
        return -EMEDIUMTYPE;
}

/* The slot of the entry for fd's file, or -ENOENT. */
static int find(FdStore *s, int fd, const struct stat *st, bool typeless) {
        if ((size_t) fd < s->n_by_fd && s->by_fd[fd]) {
                size_t k = s->by_fd[fd] - 1;
                Entry *e = &s->entries[k];

                if (k < s->n_entries && e->used && e->dev == st->st_dev && e->ino == st->st_ino &&
                    (!typeless || (e->fd == fd && file_order(fd, e->ref) == 0)))
                        return (int) k;
        }
        if (typeless) {
                bool found;
                size_t i = anon_search(s, fd, &found);
                return found ? (int) s->anon[i] : -ENOENT;
        }
        if (s->n_buckets == 0)
                return -ENOENT;
        /* A memfd or a socket is its inode. */
        for (uint32_t k = s->buckets[bucket_of(s, st->st_dev, st->st_ino)]; k; k = s->entries[k - 1].next) {
                Entry *e = &s->entries[k - 1];

                if (e->dev == st->st_dev && e->ino == st->st_ino)
                        return (int) k - 1;
        }
        return -ENOENT;
}

static int insert(FdStore *s, size_t k, const struct stat *st) {
        Entry *e = &s->entries[k];
        size_t b;

        e->dev = st->st_dev;
        e->ino = st->st_ino;
        if (e->typeless) {
                bool found;
                size_t i;

                if (s->n_anon == s->alloc_anon) {
                        size_t a = MAX((size_t) 64, s->alloc_anon * 2);
                        uint32_t *p = realloc(s->anon, a * sizeof *p);
                        if (!p)
                                return -ENOMEM;
                        s->anon = p;
                        s->alloc_anon = a;
                }
                i = anon_search(s, e->ref, &found);
                memmove(s->anon + i + 1, s->anon + i, (s->n_anon - i) * sizeof *s->anon);
                s->anon[i] = (uint32_t) k;
                s->n_anon++;
                return 0;
        }
        b = bucket_of(s, st->st_dev, st->st_ino);
        e->next = s->buckets[b];
        s->buckets[b] = (uint32_t) k + 1;
        return 0;
}

int fd_store_hold(FdStore *s, int fd, FdKind kind, uint32_t *ret_id) {
        struct stat st;
        bool typeless;
        size_t k;
        Entry *e;
        int r;

        assert(s);
        r = examine(fd, &st, &typeless);
        if (r < 0)
                return r;
        r = find(s, fd, &st, typeless);
        if (r >= 0) {
                k = (size_t) r;
                e = &s->entries[k];
                if (map_fd(s, fd, k) < 0)
                        return -ENOMEM;
                e->fd = fd;
                e->holders++;
                /* Its name says its kind, as it was stored: removing it
                 * under another name would leave it in the store. */
                e->adopted = false;
                *ret_id = (uint32_t) k;
                return 0;
        }

        /* An eighth of the store stays for the states that name files. */
        if (s->max > 0 && s->count >= s->max - s->max / 8) {
                if (!s->warned)
                        log_warning("systemd's fd store is full (FileDescriptorStoreMax=%u): a connection from now "
                                    "on is lost if this process is killed.", s->max);
                s->warned = true;
                return -ENOSPC;
        }
        r = new_slot(s, &k);
        if (r < 0)
                return r;
        e = &s->entries[k];
        *e = (Entry) { .used = true, .typeless = typeless, .kind = kind, .holders = 1, .name = s->next_name,
                       .fd = fd, .ref = -EBADF };
        if (typeless) {
                e->ref = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (e->ref < 0) {
                        *e = (Entry) { .fd = -EBADF, .ref = -EBADF };
                        return -errno;
                }
        }
        r = map_fd(s, fd, k);
        if (r >= 0)
                r = insert(s, k, &st);
        if (r >= 0) {
                r = store(fd, kind, e->name, 0);
                if (r < 0)
                        unhash(s, k);
        }
        if (r < 0) {
                if (!s->warned)
                        log_warning_errno(r, "Failed to keep a file in systemd's store: %m; its guest loses the "
                                          "connection if this process is killed.");
                s->warned = true;
                safe_close(e->ref);
                *e = (Entry) { .fd = -EBADF, .ref = -EBADF };
                s->free_hint = MIN(s->free_hint, k);
                return r;
        }
        s->next_name++;
        s->count++;
        *ret_id = (uint32_t) k;
        return 0;
}

static void free_entry(FdStore *s, size_t k) {
        Entry *e = &s->entries[k];

        drop(e->kind, e->name, 0);
        unhash(s, k);
        safe_close(e->ref);
        *e = (Entry) { .fd = -EBADF, .ref = -EBADF };
        s->count--;
        s->free_hint = MIN(s->free_hint, k);
}

void fd_store_release(FdStore *s, uint32_t id) {
        if (!s || id >= s->n_entries || !s->entries[id].used || s->entries[id].holders == 0)
                return;
        /* Names are never given again: a state that still names this
         * one finds it gone, never another file in its place. */
        if (--s->entries[id].holders == 0)
                free_entry(s, id);
}

int fd_store_id_for_state(FdStore *s, int fd, uint32_t *ret_id) {
        struct stat st;
        bool typeless;
        int k;

        k = examine(fd, &st, &typeless);
        if (k < 0)
                return k;
        k = find(s, fd, &st, typeless);
        if (k < 0 || s->entries[k].holders == 0)
                return -ENOENT;
        *ret_id = (uint32_t) k;
        return 0;
}

uint64_t fd_store_name(const FdStore *s, uint32_t id) {
        return id < s->n_entries ? s->entries[id].name : UINT64_MAX;
}

/* Room for one more state: its predecessor leaves only after it is in,
 * so a first state leaves a slot free for replacing one. */
static bool state_room(const FdStore *s, bool first) {
        return s->max == 0 || s->count + (first ? 2 : 1) <= s->max;
}

int fd_store_put_state(FdStore *s, int memfd) {
        uint64_t gen = s->next_name++;
        int r;

        if (!state_room(s, !s->have_state))
                return -ENOSPC;

        r = store(memfd, FD_KIND_STATE, gen, 0);
        if (r < 0)
                return r; /* the store keeps the state before */
        if (s->have_state)
                drop(FD_KIND_STATE, s->state_gen, 0);
        else
                s->count++;
        s->state_gen = gen;
        s->have_state = true;
        return 0;
}

int fd_store_put_device(FdStore *s, uint32_t dev_id, uint64_t *gen, int memfd) {
        uint64_t name = fd_store_name(s, dev_id), g = s->next_name;
        int r;

        if (name == UINT64_MAX)
                return -ENOENT;
        if (memfd >= 0) {
                if (!state_room(s, *gen == 0))
                        return -ENOSPC;
                r = store(memfd, FD_KIND_DEV, name, g);
                if (r < 0)
                        return r;
                s->next_name++;
                s->count++;
                /* The previous instance's state of this device is
                 * superseded: out now, so a restart needs no room for
                 * two of every device. */
                for (size_t i = 0; i < s->n_states; i++)
                        if (s->states[i].kind == FD_KIND_DEV && s->states[i].n == name) {
                                drop(FD_KIND_DEV, name, s->states[i].gen);
                                s->count--;
                                s->states[i] = s->states[--s->n_states];
                                i--;
                        }
        }
        if (*gen > 0) {
                drop(FD_KIND_DEV, name, *gen);
                s->count--;
        }
        *gen = memfd >= 0 ? g : 0;
        return 0;
}

int fd_store_adopt(FdStore *s, const char *name, int fd) {
        _cleanup_close_ int owned = fd;
        struct stat st;
        FdKind kind;
        uint64_t n, gen;
        bool typeless;
        size_t k;
        int r;

        r = fd_store_parse_name(name, &kind, &n, &gen);
        if (r < 0)
                return r;
        s->next_name = MAX(s->next_name, MAX(n, gen) + 1);
        if (kind == FD_KIND_STATE || kind == FD_KIND_DEV) {
                Named *p = realloc(s->states, (s->n_states + 1) * sizeof *p);
                if (!p)
                        return -ENOMEM;
                s->states = p;
                /* The name is all we need: systemd keeps the file. */
                s->states[s->n_states++] = (Named) { .kind = kind, .n = n, .gen = gen };
                s->count++;
                return 0;
        }
        r = examine(fd, &st, &typeless);
        if (r < 0) {
                /* Not a file we store: out of the store. */
                drop(kind, n, 0);
                return 0;
        }
        r = new_slot(s, &k);
        if (r < 0)
                return r;
        /* An eventfd is found by its file (kcmp), so we keep one; a socket
         * or memfd by its inode, which systemd's copy keeps alive. */
        s->entries[k] = (Entry) { .used = true, .adopted = true, .typeless = typeless, .kind = kind, .name = n,
                                  .fd = -EBADF, .ref = typeless ? TAKE_FD(owned) : -EBADF };
        r = insert(s, k, &st);
        if (r < 0) {
                safe_close(s->entries[k].ref);
                s->entries[k] = (Entry) { .fd = -EBADF, .ref = -EBADF };
                s->free_hint = MIN(s->free_hint, k);
                return r;
        }
        s->count++;
        return 0;
}

void fd_store_adopted_done(FdStore *s) {
        for (size_t i = 0; i < s->n_entries; i++) {
                Entry *e = &s->entries[i];

                if (!e->used)
                        continue;
                if (e->adopted)
                        free_entry(s, i);
        }
        /* Ours are there now (store_start() put them first). */
        for (size_t i = 0; i < s->n_states; i++) {
                drop(s->states[i].kind, s->states[i].n, s->states[i].gen);
                s->count--;
        }
        s->states = mfree(s->states);
        s->n_states = 0;
}

void fd_store_clear(FdStore *s) {
        for (size_t i = 0; i < s->n_entries; i++)
                if (s->entries[i].used)
                        free_entry(s, i);
        if (s->have_state)
                drop(FD_KIND_STATE, s->state_gen, 0);
        s->have_state = false;
        for (size_t i = 0; i < s->n_states; i++)
                drop(s->states[i].kind, s->states[i].n, s->states[i].gen);
        s->states = mfree(s->states);
        s->n_states = 0;
        s->count = 0;
}

unsigned fd_store_count(const FdStore *s) {
        return s ? s->count : 0;
}

static int parse_number(const char **p, uint64_t *ret) {
        uint64_t n = 0;

        if (**p < '0' || **p > '9' || ((*p)[0] == '0' && (*p)[1] >= '0' && (*p)[1] <= '9'))
                return -EINVAL;
        for (; **p >= '0' && **p <= '9'; (*p)++) {
                if (n > (UINT64_MAX - 9) / 10)
                        return -EINVAL;
                n = n * 10 + (uint64_t) (**p - '0');
        }
        *ret = n;
        return 0;
}

int fd_store_parse_name(const char *name, FdKind *ret_kind, uint64_t *ret_n, uint64_t *ret_gen) {
        static const FdKind kinds[] = { FD_KIND_NAMED, FD_KIND_EGD, FD_KIND_STATE, FD_KIND_DEV };

        if (!name)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
                const char *prefix = kind_prefix(kinds[i]), *p = name + strlen(prefix);
                uint64_t n, gen = 0;

                if (strncmp(name, prefix, strlen(prefix)) != 0)
                        continue;
                if (parse_number(&p, &n) < 0)
                        return -EINVAL;
                if (kinds[i] == FD_KIND_DEV && (*p++ != '-' || parse_number(&p, &gen) < 0))
                        return -EINVAL;
                if (*p)
                        return -EINVAL;
                *ret_kind = kinds[i];
                *ret_n = n;
                *ret_gen = gen;
                return 0;
        }
        return -EINVAL;
}
