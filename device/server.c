/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "egd.h"
#include "fileio.h"
#include "json-read.h"
#include "log.h"
#include "server.h"
#include "state.h"
#include "vhost-user.h"

/* EGD requests a connection may have queued; QEMU keeps a handful at
 * most.  Past this we stop reading the socket (backpressure), we do not
 * drop the connection. */
#define EGD_QUEUE_MAX 64
/* Unsent reply bytes past which we stop serving a client that does not
 * read: its own buffer, not the process's memory, absorbs its slowness. */
#define EGD_OUT_MAX (64 * 1024)
/* Enough for a few pipelined requests (the longest is 259 bytes). */
#define EGD_IN_SIZE 1024
/* The most of a connection's input that may sit in its socket taken up
 * but not consumed (see struct Client): every peek copies all of it
 * again, so it stays small.  Past it we stop peeking (backpressure, like
 * EGD_QUEUE_MAX). */
#define EGD_PEEK_MAX 4096
/* Answers waiting to be sent whose requests are still in the socket;
 * past this the newest mark stands for more than one answer. */
#define EGD_MARKS_MAX 64
/* Peeks one run of a connection may make before the others' turn: with
 * edge-triggered epoll no new event comes for what is left, so the
 * connection is tried again from the waiting list. */
#define EGD_PEEKS_PER_RUN 4
/* How long a disconnected VM's statistics stay in the metrics. */
#define STATS_KEEP_USEC (3600 * USEC_PER_SEC)
/* When sources had nothing (an hwrng still busy), try again this soon. */
#define STARVED_RETRY_USEC (10 * USEC_PER_MSEC)

typedef struct EgdPending {
        uint8_t command;
        uint8_t left;  /* bytes still owed (blocking read) */
        uint16_t size; /* the request's bytes in the input */
} EgdPending;

/* Once the output has been handed to send() up to out_end, the input up
 * to in_end is answered and may leave the socket. */
typedef struct EgdMark {
        uint64_t out_end;
        uint64_t in_end;
} EgdMark;

struct Client {
        Server *server;
        Transport transport;
        int fd;
        LoopIo *io;
        VmStats *stats;
        char peer[160];
        VmLimit *limit; /* the VM's bucket, shared with its other connections */

        bool waiting;          /* throttled or starved: wake_at says when to retry */
        usec_t wake_at;
        Client *wait_prev, *wait_next; /* in the server's waiting list */
        uint64_t served_tick;  /* the tick that last tried it */
        usec_t throttled_since;

        Client *prev, *next;

        /* EGD.  A request stays in the socket's receive queue until its
         * answer, and every earlier one, has been handed to send(): input
         * is peeked (MSG_PEEK) and consumed only then.  A process killed
         * meanwhile leaves its requests to whoever takes the socket up
         * next (systemd's fd store keeps it), where a request consumed
         * and never answered would leave QEMU waiting for its bytes
         * forever.  Positions count the connection's bytes since this
         * process took it up. */
        bool peer_shut;   /* EPOLLRDHUP: nothing more will arrive */
        bool read_closed; /* ... and all of it is peeked: answer, then close */
        bool maybe_more;  /* the receive queue may hold bytes not peeked yet */
        uint64_t consumed; /* input taken out of the socket */
        uint64_t peeked;   /* input seen; consumed + what in, queue and marks stand for */
        uint64_t done_in;  /* input up to the end of the last request completed */
        uint8_t in[EGD_IN_SIZE]; /* peeked, not parsed: the in_len bytes before peeked */
        size_t in_len;
        EgdPending queue[EGD_QUEUE_MAX]; /* every request parsed and not completed, in order */
        unsigned q_head, q_len;
        uint8_t *out;
        size_t out_len, out_alloc;
        uint64_t out_sent; /* output handed to send() */
        EgdMark marks[EGD_MARKS_MAX];
        unsigned m_head, m_len;

        /* Kept in s->store: the socket, and a device's files. */
        bool stored;
        uint32_t store_id;
        uint32_t *file_ids;     /* VHOST_USER_FILES_MAX, for a device */
        size_t n_file_ids;
        uint32_t *old_ids;      /* let go of, still named by its state in the store */
        size_t n_old_ids, alloc_old_ids;
        bool files_stored;      /* all of them: a state can name the device */
        uint64_t dev_gen;       /* its state's, in the store (0: none) */
        usec_t state_window;    /* see client_store_files() */
        unsigned state_writes;
        bool state_pending;     /* its state waits for the next second */
        bool unstorable_logged;

        /* vhost-user */
        VhostUserDev *dev;
        LoopIo *kick_io;
        uint64_t vhost_requests; /* the engine's count already added to stats */
};

static const char *const transport_table[_TRANSPORT_MAX] = {
        [TRANSPORT_EGD] = "egd",
        [TRANSPORT_VHOST_USER] = "vhost-user",
};

const char *transport_to_string(Transport t) {
        if (t < 0 || t >= _TRANSPORT_MAX)
                return NULL;
        return transport_table[t];
}

static const char *const refusal_reason_table[_REFUSED_MAX] = {
        [REFUSED_CONNECTIONS] = "connections",
        [REFUSED_VM_CONNECTIONS] = "vm-connections",
        [REFUSED_DEVICE_MEMORY] = "device-memory",
        [REFUSED_VM_MEMORY] = "vm-memory",
        [REFUSED_MEMORY] = "memory",
};

const char *refusal_reason_to_string(RefusalReason r) {
        if (r < 0 || r >= _REFUSED_MAX)
                return NULL;
        return refusal_reason_table[r];
}

int server_init(Server *s, Loop *loop, SourceSet *sources, const RateConfig *vm, const RateConfig *host,
                const ServerCaps *caps) {
        usec_t now = now_usec(CLOCK_MONOTONIC);

        *s = (Server) { .loop = loop, .sources = sources, .vm_rate = *vm, .caps = caps ? *caps : (ServerCaps) {} };
        ratelimit_init(&s->rl, host->bytes, host->period, host->burst, now);
        return 0;
}

static void client_free(Client *c);

void server_done(Server *s) {
        while (s->clients)
                client_free(s->clients);
        while (s->stats) {
                VmStats *v = s->stats;
                s->stats = v->next;
                free(v->name);
                free(v);
        }
        while (s->limits) {
                VmLimit *l = s->limits;
                s->limits = l->next;
                rate_vm_unlink(&s->rl, &l->rate);
                free(l->key);
                free(l);
        }
}

/* QEMU's -name: "guest=NAME,debug-threads=on" (libvirt) or "NAME,...". */
static bool qemu_name_from_pid(pid_t pid, char *buf, size_t size) {
        char path[64];
        _cleanup_free_ char *cmdline = NULL;
        size_t len;

        (void) snprintf(path, sizeof path, "/proc/%d/cmdline", (int) pid);
        if (read_full_file(path, 256 * 1024, &cmdline, &len) < 0)
                return false;
        for (size_t i = 0; i < len;) {
                const char *arg = cmdline + i;
                size_t l = strlen(arg);

                if ((streq(arg, "-name") || streq(arg, "--name")) && i + l + 1 < len) {
                        const char *v = arg + l + 1, *g = startswith(v, "guest=");
                        size_t n;

                        if (g)
                                v = g;
                        n = strcspn(v, ",");
                        if (n == 0)
                                return false;
                        (void) snprintf(buf, size, "%.*s", (int) MIN(n, (size_t) 128), v);
                        /* A label value must stay printable: it goes into
                         * logs and the metrics text. */
                        for (char *p = buf; *p; p++)
                                if ((unsigned char) *p < 0x20 || *p == '"' || *p == '\\' || (unsigned char) *p >= 0x7f)
                                        *p = '_';
                        return true;
                }
                i += l + 1;
        }
        return false;
}

/* Names the VM behind a connection: QEMU's -name through SO_PEERCRED for
 * unix sockets, else the peer's pid or address. */
static void identify_peer(int fd, char *name, size_t name_size, char *peer, size_t peer_size) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        struct ucred cred;
        socklen_t cl = sizeof cred;

        if (getpeername(fd, (struct sockaddr *) &ss, &sl) >= 0 && (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
                char addr[INET6_ADDRSTRLEN] = "?";
                unsigned port;

                if (ss.ss_family == AF_INET) {
                        struct sockaddr_in *in = (struct sockaddr_in *) &ss;
                        (void) inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr);
                        port = ntohs(in->sin_port);
                } else {
                        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;
                        (void) inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr);
                        port = ntohs(in6->sin6_port);
                }
                /* A TCP peer's port changes with every connection; the
                 * address is what identifies the host it comes from. */
                if (ss.ss_family == AF_INET6) {
                        (void) snprintf(name, name_size, "tcp:[%s]", addr);
                        (void) snprintf(peer, peer_size, "tcp:[%s]:%u", addr, port);
                } else {
                        (void) snprintf(name, name_size, "tcp:%s", addr);
                        (void) snprintf(peer, peer_size, "tcp:%s:%u", addr, port);
                }
                return;
        }

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) >= 0 && cred.pid > 0) {
                if (!qemu_name_from_pid(cred.pid, name, name_size))
                        (void) snprintf(name, name_size, "pid:%d", (int) cred.pid);
                (void) snprintf(peer, peer_size, "'%s' (pid %d)", name, (int) cred.pid);
                return;
        }

        (void) snprintf(name, name_size, "unknown");
        (void) snprintf(peer, peer_size, "an unidentified peer");
}

static VmStats *stats_for(Server *s, const char *name, Transport t) {
        VmStats *v;

        for (v = s->stats; v; v = v->next)
                if (v->transport == t && streq(v->name, name))
                        return v;
        v = calloc(1, sizeof *v);
        if (!v)
                return NULL;
        v->name = strdup(name);
        if (!v->name) {
                free(v);
                return NULL;
        }
        v->transport = t;
        v->next = s->stats;
        s->stats = v;
        return v;
}

/* The cgroup a process runs in, from /proc/PID/cgroup: the unified
 * hierarchy's path ("0::PATH"), or on a hybrid host, where everything
 * sits in the unified root, systemd's own ("N:name=systemd:PATH"). */
static bool peer_cgroup(pid_t pid, char *buf, size_t size) {
        _cleanup_free_ char *text = NULL;
        const char *unified = NULL, *named = NULL;
        char path[64];

        (void) snprintf(path, sizeof path, "/proc/%d/cgroup", (int) pid);
        if (read_full_file(path, 64 * 1024, &text, NULL) < 0)
                return false;
        for (char *line = text, *next; line && *line; line = next) {
                const char *colon;

                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                if (startswith(line, "0::"))
                        unified = line + 3;
                else if ((colon = strstr(line, ":name=systemd:")))
                        named = colon + strlen(":name=systemd:");
        }
        if (unified && !streq(unified, "/"))
                (void) snprintf(buf, size, "%s", unified);
        else if (named)
                (void) snprintf(buf, size, "%s", named);
        else if (unified)
                (void) snprintf(buf, size, "%s", unified);
        else
                return false;
        return true;
}

/* Whose budget a connection draws from: only what the kernel attests,
 * never what the peer says of itself (its -name is a metrics label; a
 * budget per name would give every new name a fresh burst and another
 * fair share).  A libvirt VM's scope under machine.slice (its QEMU's
 * threads sit in sub-cgroups of it: libvirt/emulator, libvirt/vcpu0);
 * else any cgroup but the root, which every process outside systemd
 * shares; else the peer's user.  Pure, for the table test. */
void budget_key(const char *cgroup, uid_t uid, char *buf, size_t size) {
        const char *scope;

        if (cgroup && (scope = strstr(cgroup, "/machine.slice/"))) {
                const char *end = strstr(scope, ".scope");

                if (end && (end[6] == '/' || end[6] == 0)) {
                        (void) snprintf(buf, size, "cgroup:%.*s", (int) (end + 6 - cgroup), cgroup);
                        return;
                }
        }
        if (cgroup && cgroup[0] && !streq(cgroup, "/")) {
                (void) snprintf(buf, size, "cgroup:%s", cgroup);
                return;
        }
        (void) snprintf(buf, size, "uid:%u", (unsigned) uid);
}

/* The budget key of the peer on fd: its cgroup and user over a unix
 * socket; a TCP peer's address (name is "tcp:ADDR"). */
static void limit_key(int fd, const char *name, char *buf, size_t size) {
        struct ucred cred;
        socklen_t cl = sizeof cred;
        char cgroup[512];

        if (startswith(name, "tcp:")) {
                (void) snprintf(buf, size, "%s", name);
                return;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
                /* Nothing attested: every such peer shares one budget. */
                (void) snprintf(buf, size, "unknown");
                return;
        }
        budget_key(cred.pid > 0 && peer_cgroup(cred.pid, cgroup, sizeof cgroup) ? cgroup : NULL, cred.uid, buf,
                   size);
}

static VmLimit *limit_for(Server *s, const char *key) {
        VmLimit *l;

        for (l = s->limits; l; l = l->next)
                if (streq(l->key, key))
                        return l;
        l = calloc(1, sizeof *l);
        if (!l)
                return NULL;
        l->key = strdup(key);
        if (!l->key) {
                free(l);
                return NULL;
        }
        rate_vm_init(&l->rate, s->vm_rate.bytes, s->vm_rate.period, s->vm_rate.burst, now_usec(CLOCK_MONOTONIC));
        l->next = s->limits;
        if (s->limits)
                s->limits->prev = l;
        s->limits = l;
        return l;
}

/* A budget nobody uses any more that has refilled to its burst is the
 * same as a new one: drop it, so names that come and go (pid:N, tcp:ADDR)
 * do not pile up. */
static void limit_release(Server *s, VmLimit *l) {
        if (!l || --l->connections > 0)
                return;
        if (!rate_vm_idle(&s->rl, &l->rate, now_usec(CLOCK_MONOTONIC)))
                return; /* dropped later, once like new: see sweep() */
        rate_vm_unlink(&s->rl, &l->rate);
        if (l->prev)
                l->prev->next = l->next;
        else
                s->limits = l->next;
        if (l->next)
                l->next->prev = l->prev;
        free(l->key);
        free(l);
}

/* Waiting clients are in a list of their own: the loop's hooks look at
 * them alone, so a request costs the same with ten thousand idle
 * connections as with none. */
static void client_set_waiting(Client *c, bool waiting, usec_t wake_at) {
        Server *s = c->server;

        if (waiting && !c->waiting) {
                s->n_waiting++;
                c->wait_prev = s->waiting_tail;
                c->wait_next = NULL;
                if (s->waiting_tail)
                        s->waiting_tail->wait_next = c;
                else
                        s->waiting_head = c;
                s->waiting_tail = c;
        } else if (!waiting && c->waiting) {
                s->n_waiting--;
                if (c->wait_prev)
                        c->wait_prev->wait_next = c->wait_next;
                else
                        s->waiting_head = c->wait_next;
                if (c->wait_next)
                        c->wait_next->wait_prev = c->wait_prev;
                else
                        s->waiting_tail = c->wait_prev;
                c->wait_prev = c->wait_next = NULL;
        }
        c->waiting = waiting;
        c->wake_at = wake_at;
}

/* ---- systemd's store (fd-store.h) ----
 *
 * The socket is stored once, for as long as the connection is open.  A
 * vhost-user device's files and its own state are stored after every
 * message it sent: its new files first, then the state that names them,
 * then the files it let go, so a crash at any point finds a state whose
 * files are all there. */

/* A front-end that sends message after message must not make systemd
 * (which compares each new file with every one it keeps) or us write its
 * state for each: past STATE_WRITES_BURST in a window its state reaches
 * the store with the counters, within a second (its own crash safety is
 * what it risks).  A device's setup takes a few dozen. */
#define STATE_WRITES_BURST 64
#define STATE_WRITES_WINDOW_USEC (10 * USEC_PER_SEC)

static void save_client(Json *j, const Client *c, StateFds *fds, int *ret);

static void client_put_state(Client *c) {
        Server *s = c->server;
        _cleanup_(state_fds_done) StateFds fds = { .resolve = server_store_resolve, .userdata = s };
        _cleanup_(json_free) Json j = {};
        _cleanup_close_ int memfd = -EBADF;
        int r = 0;

        c->state_pending = false;
        if (!c->stored)
                return;
        /* What the state in the store names goes only once a state that
         * does not is there (or none is). */
#define RELEASE_OLD()                                                   \
        do {                                                            \
                for (size_t _i = 0; _i < c->n_old_ids; _i++)            \
                        fd_store_release(s->store, c->old_ids[_i]);     \
                c->n_old_ids = 0;                                       \
        } while (0)
        if (!c->files_stored || vhost_user_dev_broken(c->dev)) {
                /* A state that names what the device no longer holds
                 * would only fail later: none. */
                if (c->dev_gen > 0)
                        (void) fd_store_put_device(s->store, c->store_id, &c->dev_gen, -EBADF);
                RELEASE_OLD();
                if (!c->unstorable_logged && !vhost_user_dev_broken(c->dev))
                        log_notice("%s: a file of its device is not one systemd's store may keep (its memory not "
                                   "a memfd or a file on tmpfs?): it is lost if this process is killed.",
                                   c->peer);
                c->unstorable_logged = true;
                return;
        }
        json_object_begin(&j, NULL);
        json_uint(&j, "version", STATE_VERSION);
        save_client(&j, c, &fds, &r);
        json_object_end(&j);
        memfd = r < 0 ? r : state_memfd(&j);
        if (memfd >= 0)
                r = fd_store_put_device(s->store, c->store_id, &c->dev_gen, memfd);
        if (memfd >= 0 && r >= 0) {
                RELEASE_OLD();
                return;
        }
        /* The old state would name files that are gone: none, and the
         * device is lost after a crash (it is said once). */
        if (c->dev_gen > 0)
                (void) fd_store_put_device(s->store, c->store_id, &c->dev_gen, -EBADF);
        RELEASE_OLD();
        log_warning_errno(memfd < 0 ? memfd : r,
                          "Failed to keep the state of %s in systemd's store: %m; it is lost if this process "
                          "is killed.", c->peer);
#undef RELEASE_OLD
}

/* The device's files and state, after a message (or at the start). */
static void client_store_files(Client *c) {
        Server *s = c->server;
        int fds[VHOST_USER_FILES_MAX];
        uint32_t ids[VHOST_USER_FILES_MAX], old[VHOST_USER_FILES_MAX];
        size_t n, k = 0, n_old;
        usec_t now;

        if (!s->store || !c->dev || !c->stored)
                return;
        if (!c->file_ids) {
                c->file_ids = calloc(VHOST_USER_FILES_MAX, sizeof *c->file_ids);
                if (!c->file_ids)
                        return;
        }
        n = vhost_user_dev_files(c->dev, fds, ELEMENTSOF(fds));
        for (size_t i = 0; i < n; i++)
                if (fd_store_hold(s->store, fds[i], FD_KIND_NAMED, &ids[k]) >= 0)
                        k++;
        n_old = c->n_file_ids;
        memcpy(old, c->file_ids, n_old * sizeof *old);
        memcpy(c->file_ids, ids, k * sizeof *ids);
        c->n_file_ids = k;
        c->files_stored = k == n;
        /* Let go of once the next state is in the store. */
        if (c->n_old_ids + n_old > c->alloc_old_ids) {
                size_t a = MAX(c->n_old_ids + n_old, 2 * c->alloc_old_ids);
                uint32_t *p = realloc(c->old_ids, a * sizeof *p);
                if (!p) {
                        /* Its state names them: none then. */
                        if (c->dev_gen > 0)
                                (void) fd_store_put_device(s->store, c->store_id, &c->dev_gen, -EBADF);
                        for (size_t i = 0; i < n_old; i++)
                                fd_store_release(s->store, old[i]);
                        n_old = 0;
                } else {
                        c->old_ids = p;
                        c->alloc_old_ids = a;
                }
        }
        if (n_old > 0)
                memcpy(c->old_ids + c->n_old_ids, old, n_old * sizeof *old);
        c->n_old_ids += n_old;

        now = now_usec(CLOCK_MONOTONIC);
        if (now >= c->state_window + STATE_WRITES_WINDOW_USEC) {
                c->state_window = now;
                c->state_writes = 0;
        }
        /* A front-end that changes its files faster than its state may
         * be written would pile them up: past a few sets, written now. */
        if (c->state_writes < STATE_WRITES_BURST || c->n_old_ids > 4 * VHOST_USER_FILES_MAX) {
                c->state_writes++;
                if (c->state_pending)
                        s->n_state_pending--;
                client_put_state(c);
        } else if (!c->state_pending) {
                c->state_pending = true;
                s->n_state_pending++;
        }
}

static void client_store(Client *c) {
        Server *s = c->server;

        if (!s->store)
                return;
        if (!c->stored)
                c->stored = fd_store_hold(s->store, c->fd, c->dev ? FD_KIND_NAMED : FD_KIND_EGD, &c->store_id) >= 0;
        client_store_files(c);
}

static void client_unstore(Client *c) {
        Server *s = c->server;

        if (!s->store || !c->stored)
                return;
        if (c->state_pending)
                s->n_state_pending--;
        c->state_pending = false;
        if (c->dev_gen > 0)
                (void) fd_store_put_device(s->store, c->store_id, &c->dev_gen, -EBADF);
        for (size_t i = 0; i < c->n_file_ids; i++)
                fd_store_release(s->store, c->file_ids[i]);
        c->n_file_ids = 0;
        for (size_t i = 0; i < c->n_old_ids; i++)
                fd_store_release(s->store, c->old_ids[i]);
        c->n_old_ids = 0;
        fd_store_release(s->store, c->store_id);
        c->stored = false;
}

/* Whether every file the device holds now is in the store (a message
 * that has only partly arrived holds fds that are not). */
static bool client_files_stored(const Client *c) {
        int fds[VHOST_USER_FILES_MAX];
        size_t n = vhost_user_dev_files(c->dev, fds, ELEMENTSOF(fds));
        uint32_t id;

        for (size_t i = 0; i < n; i++)
                if (fd_store_id_for_state(c->server->store, fds[i], &id) < 0)
                        return false;
        return true;
}

void server_store_all(Server *s) {
        for (Client *c = s->clients; c; c = c->next)
                client_store(c);
}

void server_unstore_all(Server *s) {
        for (Client *c = s->clients; c; c = c->next)
                client_unstore(c);
}

void server_store_pending(Server *s) {
        if (!s->store || s->n_state_pending == 0)
                return;
        for (Client *c = s->clients; c; c = c->next)
                if (c->state_pending) {
                        s->n_state_pending--;
                        client_put_state(c);
                }
}

int server_store_resolve(void *userdata, int fd, uint64_t *ret_id) {
        Server *s = userdata;
        uint32_t id;
        int r;

        r = fd_store_id_for_state(s->store, fd, &id);
        if (r < 0)
                return r;
        *ret_id = fd_store_name(s->store, id);
        return 0;
}

static void client_free(Client *c) {
        Server *s;

        if (!c)
                return;
        s = c->server;
        client_set_waiting(c, false, 0);
        if (c->prev)
                c->prev->next = c->next;
        else
                s->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->n_clients[c->transport]--;
        s->activity++;
        if (c->stats)
                c->stats->connections--;

        client_unstore(c);
        free(c->file_ids);
        free(c->old_ids);
        loop_io_free(c->io);
        loop_io_free(c->kick_io);
        if (c->dev) {
                uint64_t m = vhost_user_dev_mapped(c->dev);

                s->mapped -= m;
                if (c->limit)
                        c->limit->mapped -= m;
        }
        limit_release(s, c->limit);
        if (c->dev)
                vhost_user_dev_free(c->dev); /* closes the socket */
        else
                safe_close(c->fd);
        free(c->out);
        free(c);
}

static void client_close(Client *c, bool protocol_error, const char *why) {
        if (protocol_error) {
                c->server->protocol_errors[c->transport]++;
                log_warning("Closing %s connection from %s: %s.", transport_to_string(c->transport), c->peer, why);
        } else
                log_info("%s connection from %s closed: %s.", transport_to_string(c->transport), c->peer, why);
        client_free(c);
}

/* Entropy for one client, now, under its limits.  0 means "not now": with
 * wait set, the client is marked to be tried again when tokens return or
 * a source may have bytes. */
static size_t server_fill(Client *c, uint8_t *buf, size_t n, bool wait) {
        Server *s = c->server;
        usec_t now = now_usec(CLOCK_MONOTONIC), w;
        uint64_t allowed;
        size_t got = 0;

        if (n == 0)
                return 0;
        allowed = ratelimit_take(&s->rl, &c->limit->rate, n, now, &w);
        if (allowed == 0) {
                if (wait) {
                        if (c->throttled_since == 0)
                                c->throttled_since = now;
                        client_set_waiting(c, true, w == USEC_INFINITY ? USEC_INFINITY : now + w);
                }
                return 0;
        }

        /* Sources fill a private buffer and are tested there; only then
         * are the bytes copied out.  buf may be guest memory, which the
         * guest can rewrite between our write and our test (feeding the
         * shared source's health state, or failing it for every VM) and a
         * hostile front-end can unmap (EFAULT is not the source's fault).
         * An hwrng may give less than asked: take what it has. */
        while (got < allowed) {
                uint8_t bounce[SOURCE_CACHE_SIZE];
                size_t k = source_set_read(s->sources, bounce, MIN((size_t) allowed - got, sizeof bounce), now);
                if (k == 0)
                        break;
                memcpy(buf + got, bounce, k);
                explicit_bzero(bounce, k);
                got += k;
        }
        if (got < allowed)
                ratelimit_refund(&s->rl, &c->limit->rate, allowed - got);

        if (c->throttled_since != 0) {
                c->stats->throttled_usec += now - c->throttled_since;
                c->throttled_since = 0;
        }
        if (got == 0) {
                if (wait)
                        client_set_waiting(c, true,
                                           MIN(now + STARVED_RETRY_USEC, source_set_next_retry(s->sources)));
                return 0;
        }
        c->stats->bytes += got;
        c->stats->last_seen = now;
        s->activity++;
        return got;
}

/* EGD */

/* Peeked prefixes and consumed requests land here and are dropped: the
 * loop runs one handler at a time. */
static uint8_t egd_scratch[EGD_PEEK_MAX];

static int egd_out_append(Client *c, const void *data, size_t n) {
        if (c->out_len + n > c->out_alloc) {
                size_t a = MAX(c->out_alloc * 2, c->out_len + n);
                uint8_t *p = realloc(c->out, a);
                if (!p)
                        return -ENOMEM;
                c->out = p;
                c->out_alloc = a;
        }
        memcpy(c->out + c->out_len, data, n);
        c->out_len += n;
        return 0;
}

/* Room to take more input: a free slot in the queue, room in in, a
 * client that takes its answers, and little enough in the socket that
 * the next peek stays cheap. */
static bool egd_can_take(const Client *c) {
        return !c->read_closed && c->q_len < EGD_QUEUE_MAX && c->in_len < sizeof c->in && c->out_len < EGD_OUT_MAX &&
               c->peeked - c->consumed < EGD_PEEK_MAX;
}

static void egd_update_events(Client *c) {
        uint32_t ev = EPOLLET;

        /* Edge-triggered: the unconsumed requests keep the socket
         * readable, level-triggered would wake us for them forever (and
         * for EPOLLRDHUP once the peer shut its side).  An edge comes with
         * every arrival, and the mask given to epoll_ctl() reports what is
         * there already. */
        if (!c->peer_shut && egd_can_take(c))
                ev |= EPOLLIN | EPOLLRDHUP;
        else if (!c->read_closed)
                /* What arrives while we do not watch brings no edge. */
                c->maybe_more = true;
        if (c->out_len > 0)
                ev |= EPOLLOUT;
        (void) loop_io_set_events(c->io, ev);
}

/* Copies what arrived since the last peek to in.  There is no peeking
 * from an offset (SO_PEEK_OFF is not there for TCP on Debian 12's
 * kernel), so the unconsumed prefix is peeked again, into the scratch
 * buffer: EGD_PEEK_MAX bounds it.  Returns the bytes added, 0 with no
 * room or nothing new, -ENODATA when the socket holds less than we took
 * of it (nobody else reads it: never), or -errno. */
static ssize_t egd_peek(Client *c) {
        size_t skip = (size_t) (c->peeked - c->consumed);
        size_t want = MIN(sizeof c->in - c->in_len, EGD_PEEK_MAX - skip);
        struct iovec iov[2] = {
                { .iov_base = egd_scratch, .iov_len = skip },
                { .iov_base = c->in + c->in_len, .iov_len = want },
        };
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = ELEMENTSOF(iov) };
        bool eof = false;
        ssize_t k;

        if (want == 0)
                return 0;
        k = recvmsg(c->fd, &mh, MSG_PEEK | MSG_DONTWAIT);
        if (k < 0) {
                if (errno == EINTR)
                        return 0;
                if (errno != EAGAIN)
                        return -errno;
                k = 0;
        } else
                eof = k == 0;
        if ((size_t) k < skip)
                return -ENODATA;

        c->in_len += (size_t) k - skip;
        c->peeked += (size_t) k - skip;
        if ((size_t) k < skip + want) {
                /* All there is for now: the next arrival brings an edge.
                 * After EPOLLRDHUP it is all there will be. */
                c->maybe_more = false;
                if (eof || c->peer_shut)
                        c->read_closed = true;
        }
        return (ssize_t) ((size_t) k - skip);
}

/* Takes the input up to upto out of the socket. */
static int egd_consume(Client *c, uint64_t upto) {
        while (c->consumed < upto) {
                ssize_t k = recv(c->fd, egd_scratch, (size_t) MIN(upto - c->consumed, (uint64_t) sizeof egd_scratch),
                                 MSG_DONTWAIT);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno != EAGAIN)
                        return -errno;
                if (k <= 0)
                        return -ENODATA; /* peeked, and gone: see egd_peek() */
                c->consumed += (size_t) k;
        }
        return 0;
}

/* Consumes the requests whose answers are all sent (and those before
 * them, answered or not, which are all done). */
static int egd_release(Client *c) {
        uint64_t upto = c->consumed;

        while (c->m_len > 0 && c->marks[c->m_head].out_end <= c->out_sent) {
                upto = MAX(upto, c->marks[c->m_head].in_end);
                c->m_head = (c->m_head + 1) % EGD_MARKS_MAX;
                c->m_len--;
        }
        return egd_consume(c, upto);
}

/* The request that ends at in_end is completed: its answer, if any, is
 * the end of out. */
static void egd_mark(Client *c, uint64_t in_end) {
        uint64_t out_end = c->out_sent + c->out_len;
        EgdMark *last = c->m_len > 0 ? &c->marks[(c->m_head + c->m_len - 1) % EGD_MARKS_MAX] : NULL;

        /* With nothing answered since the last mark (a write, a read of 0
         * bytes), or no room for another, the last mark moves on: its
         * requests are consumed later, once the newer answer is sent,
         * which risks nothing but answering them again after a crash. */
        if (last && (last->out_end == out_end || c->m_len == EGD_MARKS_MAX)) {
                *last = (EgdMark) { .out_end = out_end, .in_end = in_end };
                return;
        }
        c->marks[(c->m_head + c->m_len) % EGD_MARKS_MAX] = (EgdMark) { .out_end = out_end, .in_end = in_end };
        c->m_len++;
}

/* Sends what is buffered, and consumes what it answers.  <0: the
 * connection is gone. */
static int egd_flush(Client *c) {
        int r;

        while (c->out_len > 0) {
                ssize_t k = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        return -errno;
                }
                memmove(c->out, c->out + k, c->out_len - (size_t) k);
                c->out_len -= (size_t) k;
                c->out_sent += (size_t) k;
                /* Consumed at once: a process that dies between the two
                 * leaves requests whose answers went out in the socket,
                 * and they are answered twice.  That costs nothing with
                 * QEMU's rng-egd (it only sends 0x02, whose answer is
                 * bare random bytes it counts against what it asked for:
                 * extra ones are more entropy for its next requests); a
                 * lost request would cost a guest its reads for good. */
                r = egd_release(c);
                if (r < 0)
                        return r;
        }
        /* Requests with no answer, after ones already sent. */
        r = egd_release(c);
        if (r < 0)
                return r;
        /* An idle connection holds no reply buffer. */
        if (c->out_len == 0 && c->out_alloc > 4096) {
                c->out = mfree(c->out);
                c->out_alloc = 0;
        }
        return 0;
}

/* Answers queued requests in order, as far as entropy and the client's
 * own reading allow. */
static int egd_serve(Client *c) {
        int r;

        while (c->q_len > 0 && c->out_len < EGD_OUT_MAX) {
                EgdPending *p = &c->queue[c->q_head];
                uint8_t buf[256 + 4];
                size_t k;

                switch (p->command) {
                case EGD_READ_BLOCKING:
                        /* A read of 0 bytes is answered by nothing at all. */
                        if (p->left == 0)
                                break;
                        k = server_fill(c, buf, p->left, true);
                        if (k == 0)
                                goto done;
                        r = egd_out_append(c, buf, k);
                        explicit_bzero(buf, k);
                        if (r < 0)
                                return r;
                        p->left -= (uint8_t) k;
                        if (p->left > 0)
                                continue;
                        break;
                case EGD_READ_NONBLOCK:
                        k = p->left > 0 ? server_fill(c, buf + 1, p->left, false) : 0;
                        buf[0] = (uint8_t) k;
                        r = egd_out_append(c, buf, k + 1);
                        explicit_bzero(buf, k + 1);
                        if (r < 0)
                                return r;
                        break;
                case EGD_GET_LEVEL: {
                        uint64_t avail = bucket_available(&c->limit->rate.bucket, now_usec(CLOCK_MONOTONIC));
                        uint32_t bits;
                        if (!source_set_any_healthy(c->server->sources))
                                avail = 0;
                        bits = (uint32_t) MIN(avail, (uint64_t) UINT32_MAX / 8) * 8;
                        r = egd_out_append(c, buf, egd_encode_level(bits, buf));
                        if (r < 0)
                                return r;
                        break;
                }
                case EGD_GET_PID:
                        r = egd_out_append(c, buf, egd_encode_pid((long) getpid(), buf, sizeof buf));
                        if (r < 0)
                                return r;
                        break;
                default:
                        /* A write: counted when parsed, never answered.
                         * It is queued only to be consumed in its turn. */
                        break;
                }

                if (p->command != EGD_WRITE)
                        c->stats->requests++;
                c->done_in += p->size;
                egd_mark(c, c->done_in);
                c->q_head = (c->q_head + 1) % EGD_QUEUE_MAX;
                c->q_len--;
        }
        if (c->q_len == 0)
                client_set_waiting(c, false, 0);
done:
        return egd_flush(c);
}

/* Parses what was peeked into the queue.  <0 for garbage. */
static int egd_parse_input(Client *c, const char **ret_error) {
        size_t off = 0;

        while (off < c->in_len && c->q_len < EGD_QUEUE_MAX) {
                EgdRequest req;
                ssize_t k = egd_parse(c->in + off, c->in_len - off, &req, ret_error);

                if (k < 0)
                        return (int) k;
                if (k == 0)
                        break;
                off += (size_t) k;

                /* A write is accepted and counted; a guest-facing device
                 * never hands out what a client wrote.  It takes a place
                 * in the queue all the same: consumed before the requests
                 * ahead of it are answered, it would take them along. */
                if (req.command == EGD_WRITE)
                        c->server->egd_bytes_received += req.length;
                c->queue[(c->q_head + c->q_len) % EGD_QUEUE_MAX] = (EgdPending) {
                        .command = (uint8_t) req.command,
                        .left = req.command == EGD_WRITE ? 0 : req.length,
                        .size = (uint16_t) k,
                };
                c->q_len++;
        }
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
        return 0;
}

/* Why a connection broke, for the log: -ENODATA is ours (egd_peek()). */
static const char *egd_strerror(int r) {
        return r == -ENODATA ? "its socket holds less than the device took of it" : strerror(-r);
}

/* Closes a connection we read no more of.  What it peeked is consumed
 * first: a socket closed with unread input is reset (unix and TCP alike),
 * and a reset loses the peer the answers still on their way to it. */
static void egd_close(Client *c, bool protocol_error, const char *why) {
        (void) egd_consume(c, c->peeked);
        client_close(c, protocol_error, why);
}

/* Peeks, parses and answers as far as possible: input left in the socket
 * while there was no room is taken up as soon as there is.  Closes the
 * client when it is done or broke the protocol; returns false then. */
static bool egd_run(Client *c) {
        const char *error = NULL;
        unsigned peeks = 0;
        int r;

        for (;;) {
                uint64_t peeked = c->peeked, consumed = c->consumed;
                size_t in_before = c->in_len;
                unsigned q_before = c->q_len;

                if (c->maybe_more && peeks < EGD_PEEKS_PER_RUN && egd_can_take(c)) {
                        ssize_t k = egd_peek(c);

                        peeks++;
                        if (k < 0) {
                                client_close(c, false, egd_strerror((int) k));
                                return false;
                        }
                }
                r = egd_parse_input(c, &error);
                if (r < 0) {
                        egd_close(c, true, error);
                        return false;
                }
                r = egd_serve(c);
                if (r < 0) {
                        client_close(c, false, egd_strerror(r));
                        return false;
                }
                /* Round again while anything moved: serving may have made
                 * room for input still waiting. */
                if (c->peeked == peeked && c->consumed == consumed && c->in_len == in_before && c->q_len >= q_before)
                        break;
        }

        /* A peer that shut down its side gets every answer first. */
        if (c->read_closed && c->q_len == 0 && c->out_len == 0) {
                egd_close(c, false, "the peer hung up");
                return false;
        }
        /* More input than this run took: no edge will say so again. */
        if (c->maybe_more && egd_can_take(c) && !c->waiting)
                client_set_waiting(c, true, now_usec(CLOCK_MONOTONIC));
        egd_update_events(c);
        return true;
}

static void egd_io(LoopIo *io, int fd, uint32_t events, void *userdata) {
        Client *c = userdata;

        /* Both ways shut (or an error): nothing can be answered any more. */
        if (events & (EPOLLHUP | EPOLLERR))
                return client_close(c, false, "the peer hung up");
        /* A peek cannot tell the end of the input while requests are
         * left in the socket: EPOLLRDHUP does. */
        if (events & EPOLLRDHUP)
                c->peer_shut = true;
        if ((events & (EPOLLIN | EPOLLRDHUP)) && !c->read_closed)
                c->maybe_more = true;

        (void) egd_run(c);
}

/* vhost-user */

static size_t vhost_fill(void *userdata, uint8_t *buf, size_t n) {
        return server_fill(userdata, buf, n, true);
}

/* Serves the ring; the engine counts completed buffers, we add them to
 * the VM's requests.  <0: the device is broken and the client gone. */
static int vhost_process(Client *c) {
        int r = vhost_user_dev_process(c->dev);
        uint64_t done = vhost_user_dev_stats(c->dev)->requests;

        c->stats->requests += done - c->vhost_requests;
        c->vhost_requests = done;
        if (r < 0) {
                client_close(c, true, vhost_user_dev_broken_reason(c->dev) ?: strerror(-r));
                return r;
        }
        /* A ring with no kick eventfd must be polled; a throttled or
         * starved one already has its wake-up time. */
        if (vhost_user_dev_pending(c->dev) && !c->waiting)
                client_set_waiting(c, true, now_usec(CLOCK_MONOTONIC) + STARVED_RETRY_USEC);
        return 0;
}

static void vhost_kick_io(LoopIo *io, int fd, uint32_t events, void *userdata) {
        (void) vhost_process(userdata);
}

static void vhost_kick_changed(void *userdata, int old_fd, int new_fd) {
        Client *c = userdata;

        loop_io_free(c->kick_io);
        c->kick_io = NULL;
        if (new_fd >= 0 && loop_add_io(c->server->loop, new_fd, EPOLLIN, vhost_kick_io, c, &c->kick_io) < 0)
                log_warning("Cannot watch the kick eventfd of %s; its ring will only be served on other events.",
                            c->peer);
}

/* A refusal is logged at most every 10 s per reason, with the count of
 * those not logged since: a peer that retries in a loop must not flood
 * the journal.  Counted always. */
#define REFUSAL_LOG_INTERVAL_USEC (10 * USEC_PER_SEC)

static void refusal(Server *s, RefusalReason reason, const char *peer, const char *why) {
        usec_t now = now_usec(CLOCK_MONOTONIC);

        s->refused[reason]++;
        if (s->refused_logged[reason] != 0 && now - s->refused_logged[reason] < REFUSAL_LOG_INTERVAL_USEC) {
                s->refused_quiet[reason]++;
                return;
        }
        if (s->refused_quiet[reason] > 0)
                log_warning("Refused %s: %s (and %u more refusals for limits.%s since the last message).", peer, why,
                            s->refused_quiet[reason], refusal_reason_to_string(reason));
        else
                log_warning("Refused %s: %s.", peer, why);
        s->refused_logged[reason] = now;
        s->refused_quiet[reason] = 0;
}

/* The caps on guest memory, checked before the engine maps anything. */
static int vhost_memory_changed(void *userdata, uint64_t old_bytes, uint64_t new_bytes, char *why, size_t why_size) {
        Client *c = userdata;
        Server *s = c->server;
        const ServerCaps *caps = &s->caps;
        RefusalReason reason;
        uint64_t grow;

        if (new_bytes <= old_bytes) {
                s->mapped -= old_bytes - new_bytes;
                c->limit->mapped -= old_bytes - new_bytes;
                return 0;
        }
        grow = new_bytes - old_bytes;
        if (caps->device_memory && new_bytes > caps->device_memory) {
                reason = REFUSED_DEVICE_MEMORY;
                (void) snprintf(why, why_size, "more than limits.device-memory (%" PRIu64 " bytes) for one device",
                                caps->device_memory);
        } else if (caps->vm_memory && c->limit->mapped + grow > caps->vm_memory) {
                reason = REFUSED_VM_MEMORY;
                (void) snprintf(why, why_size,
                                "its VM ('%s') would map %" PRIu64 " bytes, more than limits.vm-memory (%" PRIu64 ")",
                                c->limit->key, c->limit->mapped + grow, caps->vm_memory);
        } else if (caps->memory && s->mapped + grow > caps->memory) {
                reason = REFUSED_MEMORY;
                (void) snprintf(why, why_size,
                                "all VMs would map %" PRIu64 " bytes, more than limits.memory (%" PRIu64 ")",
                                s->mapped + grow, caps->memory);
        } else {
                s->mapped += grow;
                c->limit->mapped += grow;
                return 0;
        }
        refusal(s, reason, c->peer, why);
        return -EDQUOT;
}

static const VhostUserOps vhost_ops = {
        .fill = vhost_fill,
        .kick_changed = vhost_kick_changed,
        .memory_changed = vhost_memory_changed,
};

static void vhost_io(LoopIo *io, int fd, uint32_t events, void *userdata) {
        Client *c = userdata;
        uint64_t messages = vhost_user_dev_stats(c->dev)->messages;
        int r;

        r = vhost_user_dev_handle_socket(c->dev);
        if (r == -ECONNRESET)
                return client_close(c, false, "the front-end hung up");
        if (r == -EDQUOT)
                return client_free(c); /* a cap: refusal() said so */
        if (r < 0)
                return client_close(c, true, vhost_user_dev_broken_reason(c->dev) ?: strerror(-r));
        /* A whole message may have changed what the device holds. */
        if (vhost_user_dev_stats(c->dev)->messages != messages)
                client_store_files(c);
        /* A message may have enabled a ring with buffers already posted. */
        (void) vhost_process(c);
}

static int add_client(Server *s, Transport t, int fd, bool adopted) {
        char name[160], key[600];
        Client *c;
        int r;

        c = calloc(1, sizeof *c);
        if (!c) {
                safe_close(fd);
                return -ENOMEM;
        }
        *c = (Client) { .server = s, .transport = t, .fd = fd };
        identify_peer(fd, name, sizeof name, c->peer, sizeof c->peer);
        limit_key(fd, name, key, sizeof key);

        /* The caps come first: a refused peer costs no statistics entry
         * and no budget (a budget with no connection is dropped once
         * full, see server_tick()). */
        c->limit = limit_for(s, key);
        if (!c->limit) {
                safe_close(fd);
                free(c);
                return -ENOMEM;
        }
        if (s->caps.connections && s->n_clients[TRANSPORT_EGD] + s->n_clients[TRANSPORT_VHOST_USER] >= s->caps.connections) {
                char why[128];

                (void) snprintf(why, sizeof why, "the device holds %u connections already (limits.connections)",
                                s->caps.connections);
                refusal(s, REFUSED_CONNECTIONS, c->peer, why);
                safe_close(fd);
                free(c);
                return -EDQUOT;
        }
        if (s->caps.vm_connections && c->limit->connections >= s->caps.vm_connections) {
                char why[768];

                (void) snprintf(why, sizeof why, "its VM ('%s') holds %u connections already (limits.vm-connections)",
                                key, s->caps.vm_connections);
                refusal(s, REFUSED_VM_CONNECTIONS, c->peer, why);
                safe_close(fd);
                free(c);
                return -EDQUOT;
        }
        c->stats = stats_for(s, name, t);
        if (!c->stats) {
                safe_close(fd);
                free(c);
                return -ENOMEM;
        }

        if (t == TRANSPORT_VHOST_USER) {
                /* On failure the engine has closed fd already. */
                r = vhost_user_dev_new(fd, &vhost_ops, c, &c->dev);
                if (r < 0) {
                        free(c);
                        return r;
                }
                (void) vhost_user_dev_set_name(c->dev, c->peer);
                if (s->caps.device_regions)
                        (void) vhost_user_dev_set_max_regions(c->dev, s->caps.device_regions);
                r = loop_add_io(s->loop, fd, EPOLLIN, vhost_io, c, &c->io);
        } else {
                /* A socket taken up after a crash may hold requests the
                 * dead process never consumed: epoll reports them at once. */
                c->maybe_more = true;
                r = loop_add_io(s->loop, fd, EPOLLIN | EPOLLRDHUP | EPOLLET, egd_io, c, &c->io);
        }
        if (r < 0) {
                if (c->dev)
                        vhost_user_dev_free(c->dev);
                else
                        safe_close(fd);
                free(c);
                return r;
        }

        c->next = s->clients;
        if (s->clients)
                s->clients->prev = c;
        s->clients = c;
        s->n_clients[t]++;
        s->activity++;
        if (!adopted)
                s->connections_total[t]++;
        c->stats->connections++;
        c->stats->last_seen = now_usec(CLOCK_MONOTONIC);
        c->limit->connections++;
        client_store(c);
        if (adopted)
                log_debug("Took up the %s connection from %s, budget '%s'.", transport_to_string(t), c->peer,
                          c->limit->key);
        else
                log_info("New %s connection from %s, budget '%s'.", transport_to_string(t), c->peer, c->limit->key);
        return 0;
}

int server_add_client(Server *s, Transport t, int fd) {
        return add_client(s, t, fd, false);
}

int server_adopt_egd(Server *s, int fd) {
        return add_client(s, TRANSPORT_EGD, fd, true);
}

/* ---- handing over to a successor ---- */

static void save_bucket(Json *j, const char *key, const TokenBucket *b) {
        json_object_begin(j, key);
        json_uint(j, "tokens", b->tokens);
        json_uint(j, "frac", b->frac);
        json_uint(j, "last", b->last);
        json_object_end(j);
}

/* The successor gets the socket with the requests not consumed yet still
 * in it: "unconsumed" says how many bytes at its head in, queue and out
 * already stand for (it peeks past them), and the marks, relative to the
 * unsent out and to that head, when it may consume them. */
static void save_egd(Json *j, const Client *c) {
        json_object_begin(j, "egd");
        json_bool(j, "read_closed", c->read_closed);
        json_uint(j, "unconsumed", c->peeked - c->consumed);
        state_write_hex(j, "in", c->in, c->in_len);
        json_array_begin(j, "queue");
        for (unsigned i = 0; i < c->q_len; i++) {
                const EgdPending *p = &c->queue[(c->q_head + i) % EGD_QUEUE_MAX];

                json_object_begin(j, NULL);
                json_uint(j, "command", p->command);
                json_uint(j, "left", p->left);
                json_uint(j, "size", p->size);
                json_object_end(j);
        }
        json_array_end(j);
        state_write_hex(j, "out", c->out, c->out_len);
        json_array_begin(j, "marks");
        for (unsigned i = 0; i < c->m_len; i++) {
                const EgdMark *m = &c->marks[(c->m_head + i) % EGD_MARKS_MAX];

                json_object_begin(j, NULL);
                json_uint(j, "out", m->out_end - c->out_sent);
                json_uint(j, "in", m->in_end - c->consumed);
                json_object_end(j);
        }
        json_array_end(j);
        json_object_end(j);
}

int server_save(const Server *s, Json *j, StateFds *fds, bool clients) {
        int r;

        json_array_begin(j, "connections_total");
        for (Transport t = 0; t < _TRANSPORT_MAX; t++)
                json_uint(j, NULL, s->connections_total[t]);
        json_array_end(j);
        json_array_begin(j, "protocol_errors");
        for (Transport t = 0; t < _TRANSPORT_MAX; t++)
                json_uint(j, NULL, s->protocol_errors[t]);
        json_array_end(j);
        json_array_begin(j, "refused");
        for (RefusalReason reason = 0; reason < _REFUSED_MAX; reason++)
                json_uint(j, NULL, s->refused[reason]);
        json_array_end(j);
        json_uint(j, "egd_bytes_received", s->egd_bytes_received);
        save_bucket(j, "host", &s->rl.host);

        json_array_begin(j, "limits");
        for (const VmLimit *l = s->limits; l; l = l->next) {
                json_object_begin(j, NULL);
                json_string(j, "key", l->key);
                save_bucket(j, "bucket", &l->rate.bucket);
                json_uint(j, "share", l->rate.share);
                json_uint(j, "share_last", l->rate.share_last);
                json_bool(j, "earning", l->rate.earning);
                json_uint(j, "last_ask", l->rate.last_ask);
                json_object_end(j);
        }
        json_array_end(j);

        json_array_begin(j, "stats");
        for (const VmStats *v = s->stats; v; v = v->next) {
                json_object_begin(j, NULL);
                json_string(j, "name", v->name);
                json_string(j, "transport", transport_to_string(v->transport));
                json_uint(j, "bytes", v->bytes);
                json_uint(j, "requests", v->requests);
                json_uint(j, "throttled_usec", v->throttled_usec);
                json_uint(j, "last_seen", v->last_seen);
                json_object_end(j);
        }
        json_array_end(j);

        json_array_begin(j, "clients");
        for (const Client *c = clients ? s->clients : NULL; c; c = c->next) {
                /* A broken device has nothing to hand over; it is closed
                 * with this process. */
                if (c->dev && vhost_user_dev_broken(c->dev))
                        continue;
                /* Written for the store: a connection it does not hold
                 * (systemd refused a file) is not named; it is lost with
                 * this process, the others are not. */
                if (fds->resolve && (!c->stored || (c->dev && !client_files_stored(c))))
                        continue;
                r = 0;
                json_object_begin(j, NULL);
                save_client(j, c, fds, &r);
                json_object_end(j);
                if (r < 0)
                        return r;
        }
        json_array_end(j);
        return j->failed ? -ENOMEM : 0;
}

/* One connection's members, as restore_client() reads them. */
static void save_client(Json *j, const Client *c, StateFds *fds, int *ret) {
        *ret = 0;
        json_string(j, "transport", transport_to_string(c->transport));
        state_write_fd(j, fds, "fd", c->fd);
        json_string(j, "peer", c->peer);
        json_string(j, "stats", c->stats->name);
        json_string(j, "limit", c->limit->key);
        if (c->dev) {
                json_uint(j, "vhost_requests", c->vhost_requests);
                json_object_begin(j, "vhost");
                *ret = vhost_user_dev_save(c->dev, j, fds);
                json_object_end(j);
        } else
                save_egd(j, c);
        if (j->failed)
                *ret = -ENOMEM;
}

static Transport transport_from_string(const char *s) {
        for (Transport t = 0; t < _TRANSPORT_MAX; t++)
                if (streq(s, transport_table[t]))
                        return t;
        return _TRANSPORT_MAX;
}

static int restore_bucket(StateReader *r, yaml_node_t *map, const char *key, TokenBucket *b) {
        yaml_node_t *n;
        uint64_t tokens, frac, last;

        if (state_get_object(r, map, key, &n) < 0 || state_get_u64(r, n, "tokens", UINT64_MAX, &tokens) < 0 ||
            state_get_u64(r, n, "frac", UINT64_MAX, &frac) < 0 || state_get_u64(r, n, "last", UINT64_MAX, &last) < 0)
                return -EBADMSG;
        /* The configuration may have changed with the binary: the rate is
         * the new one, the level what the VM had (CLOCK_MONOTONIC is the
         * machine's, not the process's). */
        if (!b->unlimited) {
                b->tokens = MIN(tokens, b->burst);
                b->frac = frac;
                b->last = last;
        }
        return 0;
}

/* An array of counters; a newer predecessor's extra ones are dropped. */
static int restore_counter_array(StateReader *r, yaml_node_t *root, const char *key, uint64_t *v, size_t max) {
        yaml_node_t *a;
        size_t n;

        if (state_get_array(r, root, key, &a, &n) < 0)
                return -EBADMSG;
        for (size_t i = 0; i < n && i < max; i++)
                if (state_item_u64(r, a, i, UINT64_MAX, &v[i]) < 0)
                        return -EBADMSG;
        return 0;
}

static int restore_counters(Server *s, StateReader *r, yaml_node_t *root) {
        if (restore_counter_array(r, root, "connections_total", s->connections_total, _TRANSPORT_MAX) < 0 ||
            restore_counter_array(r, root, "protocol_errors", s->protocol_errors, _TRANSPORT_MAX) < 0 ||
            restore_counter_array(r, root, "refused", s->refused, _REFUSED_MAX) < 0)
                return -EBADMSG;
        if (state_get_u64(r, root, "egd_bytes_received", UINT64_MAX, &s->egd_bytes_received) < 0)
                return -EBADMSG;
        return restore_bucket(r, root, "host", &s->rl.host);
}

static int restore_limits(Server *s, StateReader *r, yaml_node_t *root) {
        yaml_node_t *a;
        size_t n;

        if (state_get_array(r, root, "limits", &a, &n) < 0)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                yaml_node_t *it = state_item(r, a, i);
                const char *key;
                VmLimit *l;

                if (state_get_str(r, it, "key", &key) < 0)
                        return -EBADMSG;
                l = limit_for(s, key);
                if (!l)
                        return -ENOMEM;
                /* Not asking until it asks: the asking list is this
                 * process's. */
                if (restore_bucket(r, it, "bucket", &l->rate.bucket) < 0 ||
                    state_get_u64(r, it, "share", UINT64_MAX, &l->rate.share) < 0 ||
                    state_get_u64(r, it, "share_last", UINT64_MAX, &l->rate.share_last) < 0 ||
                    state_get_u64(r, it, "last_ask", UINT64_MAX, &l->rate.last_ask) < 0)
                        return -EBADMSG;
                /* Added within version 1: a state without it meant the
                 * same by share_last 0 (not yet). */
                if (json_get(&r->doc, it, "earning")) {
                        if (state_get_bool(r, it, "earning", &l->rate.earning) < 0)
                                return -EBADMSG;
                } else
                        l->rate.earning = l->rate.share_last != 0;
        }
        return 0;
}

static int restore_stats(Server *s, StateReader *r, yaml_node_t *root) {
        yaml_node_t *a;
        size_t n;

        if (state_get_array(r, root, "stats", &a, &n) < 0)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                yaml_node_t *it = state_item(r, a, i);
                const char *name, *transport;
                Transport t;
                VmStats *v;

                if (state_get_str(r, it, "name", &name) < 0 || state_get_str(r, it, "transport", &transport) < 0)
                        return -EBADMSG;
                t = transport_from_string(transport);
                if (t == _TRANSPORT_MAX)
                        return state_error(r, "unknown transport '%.32s'", transport);
                v = stats_for(s, name, t);
                if (!v)
                        return -ENOMEM;
                if (state_get_u64(r, it, "bytes", UINT64_MAX, &v->bytes) < 0 ||
                    state_get_u64(r, it, "requests", UINT64_MAX, &v->requests) < 0 ||
                    state_get_u64(r, it, "throttled_usec", UINT64_MAX, &v->throttled_usec) < 0 ||
                    state_get_u64(r, it, "last_seen", UINT64_MAX, &v->last_seen) < 0)
                        return -EBADMSG;
        }
        return 0;
}

static int restore_egd(Client *c, StateReader *r, yaml_node_t *it) {
        yaml_node_t *egd, *queue, *marks;
        uint64_t unconsumed = 0, parsed;
        size_t n, n_marks = 0;
        bool peeking;

        if (state_get_object(r, it, "egd", &egd) < 0 || state_get_bool(r, egd, "read_closed", &c->read_closed) < 0 ||
            state_get_hex(r, egd, "in", c->in, sizeof c->in, &c->in_len) < 0 ||
            state_get_array(r, egd, "queue", &queue, &n) < 0)
                return -EBADMSG;
        /* Version 2 on: the predecessor left unanswered requests in the
         * socket. */
        peeking = json_get(&r->doc, egd, "unconsumed");
        if (peeking && state_get_u64(r, egd, "unconsumed", EGD_PEEK_MAX, &unconsumed) < 0)
                return -EBADMSG;
        if (n > EGD_QUEUE_MAX)
                return state_error(r, "%zu queued EGD requests, more than %u", n, EGD_QUEUE_MAX);
        parsed = c->in_len;
        for (size_t i = 0; i < n; i++) {
                yaml_node_t *q = state_item(r, queue, i);
                uint64_t command, left, size = 0;

                if (state_get_u64(r, q, "command", UINT8_MAX, &command) < 0 ||
                    state_get_u64(r, q, "left", UINT8_MAX, &left) < 0 ||
                    (peeking && state_get_u64(r, q, "size", EGD_REQUEST_MAX, &size) < 0))
                        return -EBADMSG;
                c->queue[i] = (EgdPending) {
                        .command = (uint8_t) command,
                        .left = (uint8_t) left,
                        .size = (uint16_t) size,
                };
                parsed += size;
        }
        c->q_head = 0;
        c->q_len = (unsigned) n;
        /* A version 1 predecessor consumed all it read: what the state
         * holds comes before anything in the socket. */
        c->consumed = peeking ? 0 : parsed;
        c->peeked = c->consumed + unconsumed;
        if (c->peeked < parsed)
                return state_error(r, "EGD requests of %" PRIu64 " bytes, of which the socket holds only %" PRIu64,
                                   parsed, unconsumed);
        c->done_in = c->peeked - parsed;
        c->peer_shut = c->read_closed;
        c->maybe_more = !c->read_closed;
        /* The unsent answer: at most what EGD_OUT_MAX let build up, and a
         * bit (one request's answer may cross it). */
        {
                _cleanup_free_ uint8_t *out = malloc(2 * EGD_OUT_MAX);
                size_t len;

                if (!out)
                        return -ENOMEM;
                if (state_get_hex(r, egd, "out", out, 2 * EGD_OUT_MAX, &len) < 0)
                        return -EBADMSG;
                if (len > 0 && egd_out_append(c, out, len) < 0)
                        return -ENOMEM;
                explicit_bzero(out, len);
        }
        if (peeking && state_get_array(r, egd, "marks", &marks, &n_marks) < 0)
                return -EBADMSG;
        if (n_marks > EGD_MARKS_MAX)
                return state_error(r, "%zu EGD answer marks, more than %u", n_marks, EGD_MARKS_MAX);
        for (size_t i = 0; i < n_marks; i++) {
                yaml_node_t *m = state_item(r, marks, i);
                uint64_t out, in;

                /* Each within what was answered, and after the one
                 * before: consuming past a request not yet answered would
                 * lose it. */
                if (state_get_u64(r, m, "out", c->out_len, &out) < 0 ||
                    state_get_u64(r, m, "in", c->done_in - c->consumed, &in) < 0)
                        return -EBADMSG;
                if (i > 0 && (out < c->marks[i - 1].out_end || c->consumed + in < c->marks[i - 1].in_end))
                        return state_error(r, "EGD answer mark %zu goes back", i);
                c->marks[i] = (EgdMark) { .out_end = out, .in_end = c->consumed + in };
        }
        c->m_head = 0;
        c->m_len = (unsigned) n_marks;
        /* Every request answered and not consumed has its mark: the last
         * one ends where they do.  Without it they would stay in the
         * socket until the next answer, and be answered again after a
         * crash. */
        if (peeking && (n_marks > 0 ? c->marks[n_marks - 1].in_end : c->consumed) != c->done_in)
                return state_error(r, "EGD answer marks that do not end with the requests answered");
        return 0;
}

/* One connection as the predecessor left it; on failure it is closed,
 * and the others go on. */
static int restore_client(Server *s, StateReader *r, yaml_node_t *it, bool exact) {
        const char *transport, *peer, *stats, *limit;
        _cleanup_close_ int fd = -EBADF;
        Client *c;
        Transport t;
        int k;

        if (state_get_str(r, it, "transport", &transport) < 0 || state_take_fd(r, it, "fd", &fd) < 0 ||
            state_get_str(r, it, "peer", &peer) < 0 || state_get_str(r, it, "stats", &stats) < 0 ||
            state_get_str(r, it, "limit", &limit) < 0)
                return -EBADMSG;
        t = transport_from_string(transport);
        if (t == _TRANSPORT_MAX || fd < 0)
                return state_error(r, "a connection of transport '%.32s' without a socket", transport);

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        *c = (Client) { .server = s, .transport = t, .fd = fd };
        (void) snprintf(c->peer, sizeof c->peer, "%s", peer);
        c->stats = stats_for(s, stats, t);
        c->limit = limit_for(s, limit);
        if (!c->stats || !c->limit) {
                free(c);
                return -ENOMEM;
        }
        /* Linked first: the engine's kick_changed() and client_free()
         * expect a client of the server. */
        c->next = s->clients;
        if (s->clients)
                s->clients->prev = c;
        s->clients = c;
        s->n_clients[t]++;
        c->stats->connections++;
        c->limit->connections++;

        if (t == TRANSPORT_VHOST_USER) {
                yaml_node_t *vhost;
                uint64_t seen;

                if (state_get_u64(r, it, "vhost_requests", UINT64_MAX, &seen) < 0 ||
                    state_get_object(r, it, "vhost", &vhost) < 0) {
                        k = -EBADMSG;
                        goto fail;
                }
                c->vhost_requests = seen;
                k = vhost_user_dev_restore(TAKE_FD(fd), &vhost_ops, c, r, vhost, &c->dev);
                if (k < 0) {
                        c->fd = -EBADF; /* the engine closed it */
                        goto fail;
                }
                (void) vhost_user_dev_set_name(c->dev, c->peer);
                /* This configuration's cap for what it maps from now on;
                 * what it maps already stays (the guest has it). */
                if (s->caps.device_regions)
                        (void) vhost_user_dev_set_max_regions(c->dev, s->caps.device_regions);
                c->limit->mapped += vhost_user_dev_mapped(c->dev);
                s->mapped += vhost_user_dev_mapped(c->dev);
                k = exact ? 0 : vhost_user_dev_resync(c->dev);
                if (k < 0)
                        (void) state_error(r, "%s", vhost_user_dev_broken_reason(c->dev) ?: strerror(-k));
                else
                        k = loop_add_io(s->loop, c->fd, EPOLLIN, vhost_io, c, &c->io);
        } else {
                fd = -EBADF; /* the client's now */
                /* Not exact: what it had read and not answered is still
                 * in the socket, what it had answered is not. */
                k = exact ? restore_egd(c, r, it) : 0;
                if (k >= 0)
                        k = loop_add_io(s->loop, c->fd, EPOLLET, egd_io, c, &c->io);
        }
        if (k < 0)
                goto fail;
        /* Nothing is served before the predecessor has let go (it waits,
         * and takes over again if we fail): the loop does it, a vhost
         * device's ring on its self-kick, EGD requests on this wake. */
        if (!c->dev) {
                egd_update_events(c);
                client_set_waiting(c, true, now_usec(CLOCK_MONOTONIC));
        }
        return 0;

fail:
        client_free(c);
        return k;
}

int server_restore_device(Server *s, StateReader *r, yaml_node_t *root) {
        return restore_client(s, r, root, false);
}

int server_restore(Server *s, StateReader *r, yaml_node_t *root, bool exact) {
        yaml_node_t *clients;
        size_t n, restored = 0;
        int k;

        k = restore_counters(s, r, root);
        if (k >= 0)
                k = restore_limits(s, r, root);
        if (k >= 0)
                k = restore_stats(s, r, root);
        if (k >= 0)
                k = state_get_array(r, root, "clients", &clients, &n);
        if (k < 0)
                return k;
        for (size_t i = 0; i < n; i++) {
                k = restore_client(s, r, state_item(r, clients, i), exact);
                if (k < 0) {
                        /* One connection lost is its VM's; the rest are
                         * served.  Say it, and go on. */
                        log_warning("Could not take over connection %zu: %s; it is closed.", i,
                                    r->error[0] ? r->error : strerror(-k));
                        r->error[0] = 0;
                        continue;
                }
                restored++;
        }
        log_info("Took over %zu of %zu connections.", restored, n);
        return (int) MIN(restored, (size_t) INT_MAX);
}

usec_t server_next_wake(Server *s) {
        usec_t t = s->sweep_at ? s->sweep_at : USEC_INFINITY;

        for (Client *c = s->waiting_head; c; c = c->wait_next)
                t = MIN(t, c->wake_at);
        return t;
}

/* Statistics of VMs gone for an hour, and budgets nobody uses, go every
 * SWEEP_USEC: often enough to bound memory, rarely enough that a request
 * never pays for walking every VM. */
#define SWEEP_USEC (10 * USEC_PER_SEC)

static void sweep(Server *s, usec_t now) {
        /* A VM gone for an hour takes its series with it: names like
         * pid:N come and go, and counters kept forever would grow the
         * metrics without bound.  Prometheus sees the series end. */
        for (VmStats **p = &s->stats; *p;) {
                VmStats *v = *p;
                if (v->connections == 0 && v->last_seen + STATS_KEEP_USEC < now) {
                        *p = v->next;
                        free(v->name);
                        free(v);
                } else
                        p = &v->next;
        }

        /* Budgets nobody uses, once refilled, go (limit_release()). */
        for (VmLimit *l = s->limits, *ln; l; l = ln) {
                ln = l->next;
                if (l->connections == 0) {
                        l->connections = 1;
                        limit_release(s, l);
                }
        }
}

void server_tick(Server *s, usec_t now) {
        Client *c, *next;

        if (s->sweep_at == 0 || now >= s->sweep_at) {
                sweep(s, now);
                s->sweep_at = now + SWEEP_USEC;
        }
        if (s->n_waiting == 0)
                return;

        /* Whoever is served first can take the most of a scarce host
         * bucket, so each tick starts with another waiting client: the
         * first moves to the end. */
        if (s->waiting_head && s->waiting_head->wait_next) {
                usec_t wake_at = s->waiting_head->wake_at;

                c = s->waiting_head;
                client_set_waiting(c, false, 0);
                client_set_waiting(c, true, wake_at);
        }

        /* Each at most once a tick: one that waits again goes to the end
         * of the list, where this loop would find it again. */
        s->tick++;
        for (c = s->waiting_head; c; c = next) {
                next = c->wait_next;
                if (c->served_tick == s->tick || c->wake_at > now)
                        continue;
                c->served_tick = s->tick;
                client_set_waiting(c, false, 0);
                if (c->transport == TRANSPORT_EGD)
                        (void) egd_run(c);
                else
                        (void) vhost_process(c);
        }
}
