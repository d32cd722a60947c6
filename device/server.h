/* SPDX-License-Identifier: MIT */
#pragma once

/* The device's clients: every VM connection, EGD or vhost-user, with its
 * token bucket, its queue of requests and its statistics.  The server
 * hands out entropy from the health-tested sources under the rate limits
 * and wakes throttled VMs from the loop's prepare/tick hooks, so a VM
 * that waits never holds up the loop or another VM. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "fd-store.h"
#include "loop.h"
#include "ratelimit.h"
#include "source.h"
#include "state.h"

typedef enum Transport {
        TRANSPORT_EGD,
        TRANSPORT_VHOST_USER,
        _TRANSPORT_MAX,
} Transport;

const char *transport_to_string(Transport t);

/* Per VM and transport; kept after the VM disconnects, so counters only
 * grow, as Prometheus expects. */
typedef struct VmStats {
        char *name;
        Transport transport;
        uint64_t bytes;
        uint64_t requests;
        usec_t throttled_usec;
        unsigned connections;
        usec_t last_seen;      /* last connected or served */
        struct VmStats *next;
} VmStats;

/* A VM's token bucket, by name: shared by all its connections, EGD and
 * vhost-user alike, and kept across reconnects, so neither a second
 * device nor reconnecting buys a VM a second budget or a fresh burst. */
typedef struct VmLimit {
        char *key;             /* cgroup:PATH, uid:UID, tcp:ADDR (see budget_key()) */
        RateVm rate;           /* its bucket and its share of the host budget */
        unsigned connections;
        uint64_t mapped;       /* guest memory its vhost-user devices map */
        struct VmLimit *prev, *next;
} VmLimit;

typedef struct RateConfig {
        uint64_t bytes;  /* per period; 0 = unlimited */
        usec_t period;
        uint64_t burst;  /* 0 = one period's worth */
} RateConfig;

/* What one VM, or all of them, may hold of this shared process; 0 is
 * no cap.  A VM is a budget key (see budget_key()). */
typedef struct ServerCaps {
        unsigned connections;    /* all transports together */
        unsigned vm_connections;
        uint64_t device_memory;  /* guest memory one vhost-user device maps */
        uint64_t vm_memory;      /* … all of one VM's devices */
        uint64_t memory;         /* … every device of the process */
        unsigned device_regions; /* memory regions of one device */
} ServerCaps;

/* Why a connection or a mapping was refused, for the metrics. */
typedef enum RefusalReason {
        REFUSED_CONNECTIONS,
        REFUSED_VM_CONNECTIONS,
        REFUSED_DEVICE_MEMORY,
        REFUSED_VM_MEMORY,
        REFUSED_MEMORY,
        _REFUSED_MAX,
} RefusalReason;

const char *refusal_reason_to_string(RefusalReason r);

typedef struct Client Client;

typedef struct Server {
        Loop *loop;
        SourceSet *sources;
        RateLimit rl;
        RateConfig vm_rate;
        ServerCaps caps;
        uint64_t mapped;        /* guest memory all devices map */
        uint64_t refused[_REFUSED_MAX];
        usec_t refused_logged[_REFUSED_MAX]; /* when a refusal was last logged */
        unsigned refused_quiet[_REFUSED_MAX]; /* refusals not logged since */

        Client *clients;
        unsigned n_clients[_TRANSPORT_MAX];
        unsigned n_waiting;     /* clients waiting */
        Client *waiting_head, *waiting_tail;
        uint64_t tick;
        usec_t sweep_at;        /* when statistics and budgets are next swept */
        VmStats *stats;
        VmLimit *limits;

        /* Set: every connection's socket and every file a vhost-user
         * device holds are kept in systemd's store while they are open
         * (fd-store.h) with each device's own state; activity grows with
         * every request served, for the process's state (the counters). */
        FdStore *store;
        unsigned n_state_pending; /* devices whose state waits a second */
        uint64_t activity;

        uint64_t connections_total[_TRANSPORT_MAX];
        uint64_t protocol_errors[_TRANSPORT_MAX];
        uint64_t egd_bytes_received; /* 0x03 writes: counted, never served */
} Server;

/* caps NULL: no caps. */
int server_init(Server *s, Loop *loop, SourceSet *sources, const RateConfig *vm, const RateConfig *host,
                const ServerCaps *caps);
void server_done(Server *s);

/* The budget key for a peer in cgroup (NULL: unknown) running as uid:
 * "cgroup:/machine.slice/machine-qemu\x2d1\x2dweb.scope" for a libvirt
 * VM (its sub-cgroups cut off), "cgroup:PATH" for any other cgroup but
 * the root, else "uid:UID". */
void budget_key(const char *cgroup, uid_t uid, char *buf, size_t size);

/* Takes a connected socket (accepted, or handed over with --fd). */
int server_add_client(Server *s, Transport t, int fd);

/* Writes the server's state for a successor (state.h): counters,
 * budgets, statistics and, with clients, every connection with what it
 * was in the middle of (EGD requests read and not answered, answers not
 * sent, a vhost-user device's whole negotiation and ring).  For a
 * handover the caller stops the loop before, and never serves again
 * after, unless the successor fails.  Without clients: the state kept in
 * systemd's store while we serve, beside each device's own. */
int server_save(const Server *s, Json *j, StateFds *fds, bool clients);

/* Takes up what a predecessor saved at root.  exact: it saved it when it
 * stopped.  Otherwise the state was written while it ran on (systemd's
 * store after a crash): EGD connections start afresh from their sockets
 * (the requests not answered are still in them), vhost-user rings from
 * the used index in guest memory (see vhost_user_dev_resync()).  Returns
 * how many connections it serves now (one that cannot be taken over is closed and
 * logged, the others go on), or -EBADMSG (r->error) when the counters,
 * budgets or statistics cannot be read. */
int server_restore(Server *s, StateReader *r, yaml_node_t *root, bool exact);

/* Keeps every connection's files in s->store from now on. */
void server_store_all(Server *s);
/* Takes them out again (the store is given up). */
void server_unstore_all(Server *s);
/* Writes the device states that waited (see server.c), once a second. */
void server_store_pending(Server *s);

/* An EGD connection a predecessor had, taken up from its socket (not a
 * new connection for the counters). */
int server_adopt_egd(Server *s, int fd);

/* Takes up a device a predecessor kept in systemd's store, from its own
 * state (root) written as it served: see server_restore(). */
int server_restore_device(Server *s, StateReader *r, yaml_node_t *root);

/* A StateFds resolver naming files by their name in s->store. */
int server_store_resolve(void *userdata, int fd, uint64_t *ret_id);

/* Loop hooks: when throttled VMs must be tried again, and trying them. */
usec_t server_next_wake(Server *s);
void server_tick(Server *s, usec_t now);
