/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <inttypes.h>
#include <sys/socket.h>
#include <sys/un.h>
#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "address.h"
#include "device-config.h"
#include "fd-store.h"
#include "fileio.h"
#include "log.h"
#include "loop.h"
#include "handover.h"
#include "json-read.h"
#include "metrics.h"
#include "server.h"
#include "source.h"
#include "state.h"

/* Exit statuses: documented in seedbed-device(8). */
enum {
        EXIT_OK = 0,
        EXIT_ERROR = 1,
        EXIT_USAGE = 2,
        EXIT_CONFIG = 3,
};

typedef struct Listener {
        ListenAddress address;
        bool have_address; /* ours to remove on exit: not systemd's */
        Transport transport;
        bool metrics;
        bool control;
        bool systemd;      /* passed by seedbed-device.socket: it passes it again */
        bool predecessor;  /* the instance we replace made it */
        int fd;
        LoopIo *io;
        usec_t paused_until; /* out of fds: accepting again then */
} Listener;

/* Where --replace looks for the running instance without --control. */
#define DEFAULT_CONTROL "unix:/run/seedbed/control.sock"

static const char *arg_config = NULL;
static DeviceConfig arg_cfg;
static bool arg_print_capabilities = false;
static bool arg_replace = false;
static char *arg_control = NULL;
/* Handed over to a successor: its sockets now, not ours to remove. */
static bool handed_over = false;
/* The predecessor let go (GO): its sockets are ours to remove now.  Until
 * then they are still its own. */
static bool took_over = false;
static int arg_vhost_fd = -EBADF;
/* Started for one front-end on a connected --fd: its session is ours. */
static bool arg_exit_when_alone = false;
/* Command-line values replace the file's. */
static ConfStringList arg_egd, arg_vhost_user;
static char *arg_metrics = NULL;
static ConfStringList arg_sources;
static char *arg_rate = NULL, *arg_host_rate = NULL;
static long long arg_burst = -1, arg_host_burst = -1;

static Server server;
static Listener *listeners;
static Loop *main_loop;
static size_t n_listeners;

/* Sockets passed by systemd or a predecessor, matched to configured
 * addresses by path. */
typedef struct Inherited {
        int fd;
        char *name;
        struct sockaddr_storage sa;
        socklen_t sa_len;
        bool used;
        char *address; /* a predecessor's own socket: ours to remove now */
        bool systemd;  /* from the socket unit, not a predecessor */
} Inherited;
static Inherited *inherited;
static size_t n_inherited;

static Inherited *find_inherited(const struct sockaddr_storage *sa, socklen_t sa_len) {
        for (size_t i = 0; i < n_inherited; i++) {
                Inherited *in = &inherited[i];
                if (!in->used && in->sa_len == sa_len && sa_len > 0 && memcmp(&in->sa, sa, sa_len) == 0)
                        return in;
        }
        return NULL;
}

static int take_inherited(const ListenAddress *a, bool *ret_owned, bool *ret_systemd) {
        Inherited *in = find_inherited(&a->sa, a->sa_len);

        if (!in)
                return -EBADF;
        in->used = true;
        *ret_owned = in->address;
        *ret_systemd = in->systemd;
        return in->fd;
}

static int add_inherited(int fd, const char *name, const char *address, bool systemd) {
        Inherited *v = realloc(inherited, (n_inherited + 1) * sizeof *v), *in;

        if (!v)
                return -ENOMEM;
        inherited = v;
        in = &inherited[n_inherited];
        *in = (Inherited) { .fd = fd, .sa_len = sizeof in->sa, .systemd = systemd };
        in->name = name ? strdup(name) : NULL;
        in->address = address ? strdup(address) : NULL;
        if ((name && !in->name) || (address && !in->address)) {
                free(in->name);
                free(in->address);
                return -ENOMEM;
        }
        if (getsockname(fd, (struct sockaddr *) &in->sa, &in->sa_len) < 0)
                in->sa_len = 0;
        (void) fd_set_nonblock(fd);
        /* A predecessor's copy of a socket systemd passes us itself. */
        if (!systemd && find_inherited(&in->sa, in->sa_len)) {
                free(in->name);
                free(in->address);
                safe_close(fd);
                return 0;
        }
        n_inherited++;
        return 0;
}

static void help(void) {
        printf("Usage: seedbed-device [OPTIONS]\n"
               "\n"
               "Serves health-tested entropy to the virtio-rng devices of every VM on this\n"
               "host, over EGD (QEMU rng-egd) and vhost-user (vhost-user-rng-pci).\n"
               "\n"
               "  -c --config=FILE        Read FILE instead of %s/seedbed/device.yaml\n"
               "     --egd=ADDR           Serve EGD on unix:PATH or tcp:HOST:PORT (repeatable)\n"
               "     --vhost-user=PATH    Serve vhost-user-rng on a unix socket (repeatable)\n"
               "     --socket-path=PATH   The same, as QEMU's vhost-user back-ends spell it\n"
               "     --fd=FD              Serve vhost-user on an inherited socket (listening\n"
               "                          or connected)\n"
               "     --print-capabilities Print the vhost-user back-end capabilities and exit\n"
               "     --source=SOURCE      getrandom, hwrng, rdseed or device:PATH (repeatable;\n"
               "                          tried in order)\n"
               "     --rate=BYTES[/TIME]  Per-VM limit, e.g. 4096/1s (0: none)\n"
               "     --burst=BYTES        Per-VM burst (default: one period's worth)\n"
               "     --host-rate=BYTES[/TIME]  Host-wide budget shared fairly by asking VMs\n"
               "     --host-burst=BYTES   Host-wide burst\n"
               "     --metrics=ADDR       Serve Prometheus metrics on tcp:HOST:PORT or unix:PATH\n"
               "     --control=PATH       Accept a successor's --replace on this unix socket\n"
               "     --replace            Take over the running instance's sockets, connections\n"
               "                          and state through its control socket, then serve\n"
               "     --log-level=LEVEL    debug, info, notice, warning, err\n"
               "     --log-target=TARGET  auto, console, journal, kmsg\n"
               "  -h --help               Show this help\n"
               "     --version            Show the version\n"
               "\n"
               "See seedbed-device(8).\n",
               SYSCONFDIR);
}

static int parse_rate(const char *s, unsigned *ret_bytes, usec_t *ret_period) {
        const char *slash = strchr(s, '/');
        _cleanup_free_ char *num = strndup(s, slash ? (size_t) (slash - s) : strlen(s));
        unsigned long long v;
        usec_t period = USEC_PER_SEC;
        char *end;

        if (!num)
                return -ENOMEM;
        errno = 0;
        v = strtoull(num, &end, 10);
        if (!num[0] || *end || errno || num[0] == '-' || v > (1ULL << 30))
                return -EINVAL;
        if (slash && (conf_parse_duration(slash + 1, &period) < 0 || period < USEC_PER_MSEC || period > 3600 * USEC_PER_SEC))
                return -EINVAL;
        *ret_bytes = (unsigned) v;
        *ret_period = period;
        return 0;
}

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_EGD = 0x100,
                ARG_VHOST_USER,
                ARG_SOCKET_PATH,
                ARG_FD,
                ARG_PRINT_CAPABILITIES,
                ARG_SOURCE,
                ARG_RATE,
                ARG_BURST,
                ARG_HOST_RATE,
                ARG_HOST_BURST,
                ARG_METRICS,
                ARG_CONTROL,
                ARG_REPLACE,
                ARG_LOG_LEVEL,
                ARG_LOG_TARGET,
                ARG_VERSION,
        };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "egd", required_argument, NULL, ARG_EGD },
                { "vhost-user", required_argument, NULL, ARG_VHOST_USER },
                { "socket-path", required_argument, NULL, ARG_SOCKET_PATH },
                { "fd", required_argument, NULL, ARG_FD },
                { "print-capabilities", no_argument, NULL, ARG_PRINT_CAPABILITIES },
                { "source", required_argument, NULL, ARG_SOURCE },
                { "rate", required_argument, NULL, ARG_RATE },
                { "burst", required_argument, NULL, ARG_BURST },
                { "host-rate", required_argument, NULL, ARG_HOST_RATE },
                { "host-burst", required_argument, NULL, ARG_HOST_BURST },
                { "metrics", required_argument, NULL, ARG_METRICS },
                { "control", required_argument, NULL, ARG_CONTROL },
                { "replace", no_argument, NULL, ARG_REPLACE },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "log-target", required_argument, NULL, ARG_LOG_TARGET },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_EGD:
                case ARG_VHOST_USER:
                case ARG_SOCKET_PATH: {
                        ListenAddress a;
                        const char *error;
                        if (listen_address_parse(optarg, &a, &error) < 0)
                                return log_error_errno(EINVAL, "Invalid address '%s': %s.", optarg, error);
                        if (c != ARG_EGD && a.family != AF_UNIX)
                                return log_error_errno(EINVAL, "vhost-user needs a unix socket, not '%s'.", optarg);
                        r = conf_string_list_add(c == ARG_EGD ? &arg_egd : &arg_vhost_user, optarg);
                        if (r < 0)
                                return log_error_errno(r, "Too many listening addresses.");
                        break;
                }
                case ARG_FD: {
                        char *end;
                        long fd;
                        errno = 0;
                        fd = strtol(optarg, &end, 10);
                        if (!optarg[0] || *end || errno || fd < 0 || fd > INT32_MAX || fcntl(fd, F_GETFD) < 0)
                                return log_error_errno(EINVAL, "--fd needs an open file descriptor, not '%s'.", optarg);
                        arg_vhost_fd = (int) fd;
                        break;
                }
                case ARG_PRINT_CAPABILITIES:
                        arg_print_capabilities = true;
                        break;
                case ARG_SOURCE:
                        if (!startswith(optarg, "device:") && !streq(optarg, "getrandom") && !streq(optarg, "hwrng") &&
                            !streq(optarg, "rdseed"))
                                return log_error_errno(EINVAL, "Unknown source '%s': getrandom, hwrng, rdseed or device:PATH.",
                                                       optarg);
                        r = conf_string_list_add(&arg_sources, optarg);
                        if (r < 0)
                                return log_error_errno(r, "Too many sources.");
                        break;
                case ARG_RATE:
                case ARG_HOST_RATE: {
                        unsigned b;
                        usec_t p;
                        if (parse_rate(optarg, &b, &p) < 0)
                                return log_error_errno(EINVAL, "Invalid rate '%s': BYTES or BYTES/TIME such as 4096/1s.",
                                                       optarg);
                        free(c == ARG_RATE ? arg_rate : arg_host_rate);
                        if (c == ARG_RATE)
                                arg_rate = strdup(optarg);
                        else
                                arg_host_rate = strdup(optarg);
                        break;
                }
                case ARG_BURST:
                case ARG_HOST_BURST: {
                        char *end;
                        long long v;
                        errno = 0;
                        v = strtoll(optarg, &end, 10);
                        if (!optarg[0] || *end || errno || v < 0 || v > (1LL << 30))
                                return log_error_errno(EINVAL, "Invalid burst '%s': a number of bytes.", optarg);
                        *(c == ARG_BURST ? &arg_burst : &arg_host_burst) = v;
                        break;
                }
                case ARG_METRICS: {
                        ListenAddress a;
                        const char *error;
                        if (listen_address_parse(optarg, &a, &error) < 0)
                                return log_error_errno(EINVAL, "Invalid metrics address '%s': %s.", optarg, error);
                        free(arg_metrics);
                        arg_metrics = strdup(optarg);
                        break;
                }
                case ARG_CONTROL: {
                        ListenAddress a;
                        const char *error;
                        if (listen_address_parse(optarg, &a, &error) < 0 || a.family != AF_UNIX)
                                return log_error_errno(EINVAL, "Invalid control socket '%s': a unix socket path.", optarg);
                        free(arg_control);
                        arg_control = strdup(optarg);
                        break;
                }
                case ARG_REPLACE:
                        arg_replace = true;
                        break;
                case ARG_LOG_LEVEL:
                        r = log_set_max_level_from_string(optarg);
                        if (r < 0)
                                return r;
                        break;
                case ARG_LOG_TARGET:
                        r = log_set_target_from_string(optarg);
                        if (r < 0)
                                return r;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("seedbed-device %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        return -EINVAL;
                }
        }
        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument '%s'; see 'seedbed-device --help'.", argv[optind]);
        return 1;
}

/* Config file, then the command line on top. */
static int load_config(void) {
        _cleanup_free_ char *path = NULL;
        ConfParser p;
        int r;

        r = device_config_init(&arg_cfg);
        if (r < 0)
                return log_oom();
        r = conf_parser_init(&p, device_config_items, device_config_n_items, &arg_cfg);
        if (r < 0)
                return log_oom();

        path = strdup(arg_config ?: SYSCONFDIR "/seedbed/device.yaml");
        if (!path) {
                conf_parser_done(&p);
                return log_oom();
        }
        r = conf_load_yaml_file(&p, path);
        if (r == -ENOENT && !arg_config)
                r = 0;
        if (r < 0) {
                if (p.error[0])
                        log_error("%s", p.error);
                else
                        log_error_errno(r, "%s: cannot read: %m", path);
        }
        conf_parser_done(&p);
        if (r < 0)
                return r;

        /* Addresses on the command line add to the file's (the unit
         * passes the socket unit's paths; listen.* can add more). */
        for (unsigned k = 0; k < 2; k++) {
                ConfStringList *from = k == 0 ? &arg_egd : &arg_vhost_user,
                               *to = k == 0 ? &arg_cfg.egd : &arg_cfg.vhost_user;
                for (unsigned i = 0; i < from->n; i++) {
                        bool dup = false;
                        for (unsigned j = 0; j < to->n && !dup; j++)
                                dup = streq(to->items[j], from->items[i]);
                        if (!dup && conf_string_list_add(to, from->items[i]) < 0)
                                return log_error_errno(E2BIG, "Too many listening addresses (at most %d).", CONF_LIST_MAX);
                }
        }
        if (arg_metrics) {
                free(arg_cfg.metrics);
                arg_cfg.metrics = TAKE_PTR(arg_metrics);
        }
        if (arg_control) {
                free(arg_cfg.control);
                arg_cfg.control = TAKE_PTR(arg_control);
        }
        if (arg_rate)
                (void) parse_rate(arg_rate, &arg_cfg.vm_bytes, &arg_cfg.vm_period);
        if (arg_host_rate)
                (void) parse_rate(arg_host_rate, &arg_cfg.host_bytes, &arg_cfg.host_period);
        if (arg_burst >= 0)
                arg_cfg.vm_burst = (unsigned) arg_burst;
        if (arg_host_burst >= 0)
                arg_cfg.host_burst = (unsigned) arg_host_burst;

        return 0;
}

static int open_sources(SourceSet *set) {
        int r;

        if (arg_sources.n > 0) {
                for (unsigned i = 0; i < arg_sources.n; i++) {
                        const char *s = arg_sources.items[i], *dev = startswith(s, "device:");
                        if (dev)
                                r = source_set_add(set, SOURCE_DEVICE, dev, arg_cfg.min_entropy);
                        else if (streq(s, "hwrng"))
                                r = source_set_add(set, SOURCE_DEVICE, arg_cfg.hwrng_path, arg_cfg.min_entropy);
                        else
                                r = source_set_add(set, source_type_from_string(s), NULL, arg_cfg.min_entropy);
                        if (r < 0)
                                return log_error_errno(r, "Cannot use entropy source '%s': %m", s);
                }
                return 0;
        }

        for (unsigned i = 0; i < arg_cfg.sources.n; i++) {
                switch (arg_cfg.sources.items[i]) {
                case DEVICE_SOURCE_GETRANDOM:
                        r = source_set_add(set, SOURCE_GETRANDOM, NULL, arg_cfg.min_entropy);
                        break;
                case DEVICE_SOURCE_HWRNG:
                        r = source_set_add(set, SOURCE_DEVICE, arg_cfg.hwrng_path, arg_cfg.min_entropy);
                        break;
                default:
                        r = source_set_add(set, SOURCE_RDSEED, NULL, arg_cfg.min_entropy);
                        break;
                }
                if (r < 0)
                        return log_error_errno(r, "Cannot use entropy source '%s': %m",
                                               device_source_names[arg_cfg.sources.items[i]]);
        }
        return 0;
}

static void update_status(void) {
#ifdef HAVE_SYSTEMD
        (void) sd_notifyf(false, "STATUS=Serving %u EGD and %u vhost-user connections.",
                          server.n_clients[TRANSPORT_EGD], server.n_clients[TRANSPORT_VHOST_USER]);
#endif
}

static void on_accept(LoopIo *io, int fd, uint32_t events, void *userdata) {
        Listener *l = userdata;

        for (;;) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                int r;

                if (cfd < 0) {
                        if (errno == EMFILE || errno == ENFILE) {
                                /* The pending connection keeps the socket
                                 * readable: stop watching it for a moment
                                 * rather than spin and flood the log. */
                                log_warning_errno(errno, "Out of file descriptors; not accepting for a second: %m");
                                l->paused_until = now_usec(CLOCK_MONOTONIC) + USEC_PER_SEC;
                                (void) loop_io_set_events(io, 0);
                        } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(errno, "Failed to accept a connection, ignoring: %m");
                        return;
                }
                r = server_add_client(&server, l->transport, cfd);
                /* -EDQUOT: refused for a cap, logged (sparingly) there. */
                if (r < 0 && r != -EDQUOT)
                        log_warning_errno(r, "Failed to set up a %s connection, dropped it: %m",
                                          transport_to_string(l->transport));
                update_status();
        }
}

static int add_listener(const char *text, Transport t, bool metrics, bool control, int inherited_fd,
                        const char *owned_address) {
        Listener *v = realloc(listeners, (n_listeners + 1) * sizeof *v), *l;
        gid_t gid = (gid_t) -1;
        const char *error;
        int r;

        if (!v)
                return log_oom();
        listeners = v;
        l = &listeners[n_listeners];
        *l = (Listener) { .transport = t, .metrics = metrics, .control = control, .fd = inherited_fd };

        /* A predecessor's socket not in our configuration: still ours to
         * serve, and to remove when we stop, if it is bound where the
         * state says (we remove files as root). */
        if (inherited_fd >= 0 && owned_address && listen_address_parse(owned_address, &l->address, &error) >= 0) {
                struct sockaddr_storage sa;
                socklen_t sl = sizeof sa;

                if (getsockname(inherited_fd, (struct sockaddr *) &sa, &sl) >= 0 && sl == l->address.sa_len &&
                    memcmp(&sa, &l->address.sa, sl) == 0) {
                        l->have_address = true;
                        l->predecessor = true;
                }
        }

        if (inherited_fd < 0) {
                bool owned = false, systemd = false;

                r = listen_address_parse(text, &l->address, &error);
                if (r < 0)
                        return log_error_errno(r, "Invalid address '%s': %s.", text, error);
                /* systemd already listens there (seedbed-device.socket),
                 * or the instance we replace did. */
                l->fd = take_inherited(&l->address, &owned, &systemd);
                if (l->fd >= 0) {
                        l->have_address = owned;
                        l->predecessor = owned;
                        l->systemd = systemd;
                        n_listeners++;
                        return 0;
                }
                if (arg_cfg.socket_group && arg_cfg.socket_group[0]) {
                        struct group *g = getgrnam(arg_cfg.socket_group);
                        if (!g)
                                return log_error_errno(ENOENT, "Unknown group '%s' for the sockets.", arg_cfg.socket_group);
                        gid = g->gr_gid;
                }
                /* The control socket hands over every VM's memory: root
                 * (and our own user) only, whatever the other sockets'
                 * mode and group. */
                r = listen_address_open(&l->address, control ? SOCK_SEQPACKET : SOCK_STREAM,
                                        control ? 0600 : (mode_t) arg_cfg.socket_mode, control ? (gid_t) -1 : gid,
                                        &l->fd);
                if (r < 0)
                        return log_error_errno(r, "Cannot listen on '%s': %m", text);
                l->have_address = true;
        }
        n_listeners++;
        return 0;
}

static MetricsServer *metrics;

static const char *listener_kind(const Listener *l) {
        return l->control ? "control" : l->metrics ? "metrics" : transport_to_string(l->transport);
}

/* The whole state for a successor, in a memfd; fds gets what it names.
 * final: written as we stop (a handover, SIGTERM); otherwise while we
 * serve on, for a successor after a crash. */
static int save_state(StateFds *fds, bool fdstore, bool final) {
        _cleanup_(json_free) Json j = {};
        int r;

        json_object_begin(&j, NULL);
        json_uint(&j, "version", STATE_VERSION);
        json_uint(&j, "pid", (uint64_t) getpid());
        json_bool(&j, "final", final);
        json_array_begin(&j, "listeners");
        for (size_t i = 0; i < n_listeners; i++) {
                const Listener *l = &listeners[i];

                /* systemd passes its sockets to the next start itself. */
                if (fdstore && l->systemd)
                        continue;
                json_object_begin(&j, NULL);
                json_string(&j, "kind", listener_kind(l));
                state_write_fd(&j, fds, "fd", l->metrics ? metrics_server_fd(metrics) : l->fd);
                /* Ours to remove on exit: the successor's now. */
                json_string(&j, "address", l->have_address ? l->address.text : NULL);
                json_object_end(&j);
        }
        json_array_end(&j);
        json_object_begin(&j, "server");
        /* Kept in the store while we serve, connections are in their
         * devices' own states; on a handover or at SIGTERM, all here. */
        r = server_save(&server, &j, fds, final);
        json_object_end(&j);
        if (r < 0)
                return r;
        json_object_end(&j);
        return state_memfd(&j);
}

/* A connection on the control socket, until its request has arrived:
 * the guests are served meanwhile (a peer that says nothing costs one
 * fd, not a pause).  At most CONTROL_PENDING_MAX wait. */
#define CONTROL_PENDING_MAX 4
typedef struct ControlConn {
        int fd;
        LoopIo *io;
        struct ucred cred;
} ControlConn;
static ControlConn control_pending[CONTROL_PENDING_MAX];

static void control_conn_close(ControlConn *c) {
        loop_io_free(c->io);
        safe_close(c->fd);
        *c = (ControlConn) { .fd = -EBADF };
}

/* The request is there: hand everything over, and exit once the
 * successor serves, or serve on if it does not. */
static void on_control_request(LoopIo *io, int fd, uint32_t events, void *userdata) {
        ControlConn *c = userdata;
        _cleanup_close_ int memfd = -EBADF;
        _cleanup_(state_fds_done) StateFds fds = {};
        struct timeval tv = { .tv_sec = HANDOVER_TIMEOUT_USEC / USEC_PER_SEC };
        pid_t pid = c->cred.pid;
        unsigned version;
        int r;

        r = handover_read_request(fd, &version);
        if (r < 0) {
                log_warning_errno(r, "A handover request on the control socket was not one, ignoring: %m");
                return control_conn_close(c);
        }
        if (version < STATE_VERSION) {
                char reason[160];

                (void) snprintf(reason, sizeof reason,
                                "this instance writes state version %u; the new binary reads up to version %u",
                                STATE_VERSION, version);
                log_warning("Refused a handover to pid %d: %s.", (int) pid, reason);
                handover_refuse(fd, reason);
                return control_conn_close(c);
        }
        /* From here on one exchange, waited for: blocking, but a
         * successor that stops reading must not hold us forever. */
        (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

        memfd = save_state(&fds, false, true);
        if (memfd < 0) {
                log_warning_errno(memfd, "Failed to write the state for pid %d: %m; serving on.", (int) pid);
                handover_refuse(fd, "the running instance could not write its state");
                return control_conn_close(c);
        }
        log_info("Handing over %u connections to pid %d.",
                 server.n_clients[TRANSPORT_EGD] + server.n_clients[TRANSPORT_VHOST_USER], (int) pid);
        r = handover_send(fd, pid, memfd, fds.fds, fds.n);
        control_conn_close(c);
        if (r < 0) {
                log_warning_errno(r, "The successor (pid %d) did not take over: %m; serving on.", (int) pid);
                return;
        }
        log_info("pid %d serves now; exiting.", (int) pid);
        handed_over = true;
        loop_exit(main_loop, EXIT_OK);
}

static void on_control(LoopIo *io, int fd, uint32_t events, void *userdata) {
        _cleanup_close_ int conn = -EBADF;
        struct ucred cred = {};
        socklen_t cl = sizeof cred;
        ControlConn *c = NULL;

        conn = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (conn < 0)
                return;
        /* The socket's mode keeps others out; this too. */
        if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
                log_warning_errno(errno, "Refused a handover: no peer credentials: %m");
                return;
        }
        if (cred.uid != 0 && cred.uid != geteuid()) {
                log_warning("Refused a handover to uid %u: only root may replace this instance.", (unsigned) cred.uid);
                return;
        }
        for (size_t i = 0; i < CONTROL_PENDING_MAX && !c; i++)
                if (control_pending[i].fd < 0 || !control_pending[i].io)
                        c = &control_pending[i];
        if (!c) {
                /* The oldest gives way. */
                c = &control_pending[0];
                control_conn_close(c);
        }
        *c = (ControlConn) { .fd = TAKE_FD(conn), .cred = cred };
        if (loop_add_io(main_loop, c->fd, EPOLLIN, on_control_request, c, &c->io) < 0)
                control_conn_close(c);
}

/* A vhost-user device's own state from systemd's store. */
typedef struct DevState {
        uint64_t socket; /* its socket's name */
        uint64_t gen;
        int fd;
} DevState;

static void adopt_egd(StateReader *r, const FdKind *kinds);

/* Takes up a predecessor's state: its listening sockets become inherited
 * ones (matched to the configuration as systemd's are), its connections
 * the server's.  fds (n_fds, owned from here on) are what it names: by
 * index, or with names (owned too) by name.  From systemd's store also
 * kinds (which are EGD connections) and the devices' states. */
static int restore_state(int memfd, int *fds, uint64_t *names, size_t n_fds, const FdKind *kinds,
                         const DevState *devs, size_t n_devs) {
        _cleanup_(state_reader_done) StateReader reader = {};
        yaml_node_t *root, *list, *srv, *final;
        bool exact = true;
        uint64_t version;
        size_t n = 0, n_dev = 0;
        int r;

        r = state_reader_open(&reader, memfd, fds, n_fds);
        if (reader.fds)
                reader.names = names; /* the reader's to free */
        else
                free(names);
        root = state_root(&reader);
        if (r >= 0)
                r = state_get_u64(&reader, root, "version", UINT32_MAX, &version);
        if (r >= 0 && (version == 0 || version > STATE_VERSION_READ))
                r = state_error(&reader, "state version %" PRIu64 " is newer than this binary reads (%u)", version,
                                STATE_VERSION_READ);
        if (r >= 0)
                r = state_get_array(&reader, root, "listeners", &list, &n);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                yaml_node_t *it = state_item(&reader, list, i);
                const char *kind, *address;
                int fd;

                r = state_get_str(&reader, it, "kind", &kind);
                if (r >= 0)
                        r = state_take_fd(&reader, it, "fd", &fd);
                if (r < 0)
                        break;
                address = json_get_str(&reader.doc, it, "address");
                r = add_inherited(fd, kind, address, false);
                if (r < 0)
                        safe_close(fd);
        }
        if (r >= 0)
                r = state_get_object(&reader, root, "server", &srv);
        /* Before version 2 every state was written as its writer stopped. */
        final = r >= 0 ? json_get(&reader.doc, root, "final") : NULL;
        exact = !final || final->type != YAML_SCALAR_NODE || !streq((const char *) final->data.scalar.value, "false");
        if (r >= 0 && !exact)
                log_info("The state was written while the previous instance served (it did not stop, it was "
                         "killed): EGD connections go on from their sockets, vhost-user rings from guest memory.");
        if (r >= 0)
                r = server_restore(&server, &reader, srv, exact);
        /* Each device from its own state (a final state had them all). */
        for (size_t i = 0; r >= 0 && !exact && i < n_devs; i++) {
                _cleanup_(state_reader_done) StateReader dev = {};
                int k = state_reader_open_with(&dev, devs[i].fd, &reader);

                if (k >= 0)
                        k = server_restore_device(&server, &dev, state_root(&dev));
                if (k < 0)
                        log_warning("Could not take up a vhost-user device: %s; it is closed.",
                                    dev.error[0] ? dev.error : strerror(-k));
                else
                        n_dev++;
        }
        if (n_devs > 0 && !exact)
                log_info("Took up %zu of %zu vhost-user devices.", n_dev, n_devs);
        /* EGD connections the state does not name are served from their
         * sockets, whatever became of it. */
        if (kinds)
                adopt_egd(&reader, kinds);
        if (r < 0)
                return log_error_errno(r, "Cannot take up the state of the previous instance: %s",
                                       reader.error[0] ? reader.error : strerror(-r));
        return 0;
}

/* --replace: takes the state of the instance on the control socket.
 * 1 taken (*ret_conn: tell it when we serve), 0 none runs there, <0
 * failed (it serves on). */
static int take_over(int *ret_conn) {
        const char *path = arg_cfg.control ?: DEFAULT_CONTROL;
        _cleanup_close_ int conn = -EBADF, memfd = -EBADF;
        ListenAddress a;
        const char *error_text;
        char error[256] = "";
        size_t n_fds = 0;
        int *fds = NULL;
        int r;

        if (listen_address_parse(path, &a, &error_text) < 0)
                return log_error_errno(EINVAL, "Invalid control socket '%s': %s.", path, error_text);
        r = handover_request(((const struct sockaddr_un *) &a.sa)->sun_path, &conn, &memfd, &fds, &n_fds, error,
                             sizeof error);
        if (r == -ENOENT || r == -ECONNREFUSED) {
                log_notice("No instance listens on '%s'; starting fresh.", path);
                return 0;
        }
        if (r == -EPROTO)
                return log_error_errno(r, "The running instance refused the handover: %s", error);
        if (r < 0)
                return log_error_errno(r, "Failed to take over through '%s': %m", path);
        r = restore_state(memfd, fds, NULL, n_fds, NULL, NULL, 0);
        if (r < 0)
                return log_error_errno(r, "Not taking over; the running instance serves on.");
        *ret_conn = TAKE_FD(conn);
        return 1;
}

/* ---- systemd's file descriptor store ----
 *
 * Under systemd every file a guest's connection needs is in the service's
 * fd store (FileDescriptorStoreMax= in the unit) from the moment we have
 * it: each socket, each vhost-user device's memory and eventfds (see
 * fd-store.h, and server.c for when they are stored), and beside them
 * each device's own state, written after each of its messages, and the
 * process's (listeners, budgets, counters) at most once a second; a
 * complete one on SIGTERM.  So the next start (systemctl restart, an
 * upgrade's restart, or Restart= after a crash or SIGKILL) gets them all
 * back in LISTEN_FDS / LISTEN_FDNAMES beside the socket unit's sockets,
 * with their names, which it keeps.  After a crash, EGD connections carry
 * on from their sockets (a request leaves the socket only once answered,
 * see server.c), vhost-user rings from guest memory. */
#define FDSTORE_LEGACY_STATE "seedbed-state" /* before version 2: at SIGTERM only */
#define STORE_COUNTERS_USEC USEC_PER_SEC

static FdStore *store;
static bool drop_legacy_state;
static uint64_t store_activity;
static usec_t store_written_at;

static bool fdstore_wanted(void) {
#ifdef HAVE_SYSTEMD
        const char *max = getenv("FDSTORE"), *ours = getenv("SEEDBED_FDSTORE");

        /* systemd 254 and later say how many the store takes; earlier
         * ones do not, and a unit without a store drops what it is sent:
         * the unit says so (Environment=SEEDBED_FDSTORE=1). */
        if (!getenv("NOTIFY_SOCKET"))
                return false;
        if (max)
                return strtoul(max, NULL, 10) > 0;
        return streq_ptr(ours, "1");
#else
        return false;
#endif
}

/* The process's state for the store: the files it names are there. */
static int store_write_state(bool final) {
        _cleanup_(state_fds_done) StateFds fds = { .resolve = server_store_resolve, .userdata = &server };
        _cleanup_close_ int memfd = -EBADF;
        int r;

        memfd = save_state(&fds, true, final);
        if (memfd < 0)
                return memfd;
        r = fd_store_put_state(store, memfd);
        if (r < 0)
                return r;
        store_activity = server.activity;
        store_written_at = now_usec(CLOCK_MONOTONIC);
        return 0;
}

/* From here on everything is kept in the store as it comes. */
static int store_start(void) {
        int r;

        if (!store) {
                r = fd_store_new(&store);
                if (r < 0)
                        return log_error_errno(r, "Cannot use systemd's fd store: %m");
        }
        for (size_t i = 0; i < n_listeners; i++) {
                const Listener *l = &listeners[i];
                uint32_t id;

                /* systemd passes the socket unit's sockets itself. */
                if (l->systemd)
                        continue;
                r = fd_store_hold(store, l->metrics ? metrics_server_fd(metrics) : l->fd, FD_KIND_NAMED, &id);
                if (r < 0)
                        return log_error_errno(r, "Cannot keep a listening socket in systemd's fd store: %m");
        }
        server.store = store;
        server_store_all(&server);
        r = store_write_state(false);
        if (r < 0)
                return log_error_errno(r, "Cannot keep the state in systemd's fd store: %m");
        /* Ours are there: what the previous instance stored and nobody
         * took up, its states included, goes. */
        fd_store_adopted_done(store);
        if (drop_legacy_state)
                (void) sd_notify(false, "FDSTOREREMOVE=1\nFDNAME=" FDSTORE_LEGACY_STATE);
        drop_legacy_state = false;
        log_info("Keeping %u files in systemd's fd store: a restart or a crash closes no guest's connection.",
                 fd_store_count(store));
        return 0;
}

/* Before the loop waits: the counters and the device states that waited
 * go to the store within a second.  When next, or USEC_INFINITY. */
static usec_t store_refresh(usec_t now) {
        int r;

        if (!store || (server.activity == store_activity && server.n_state_pending == 0))
                return USEC_INFINITY;
        if (now < store_written_at + STORE_COUNTERS_USEC)
                return store_written_at + STORE_COUNTERS_USEC;
        server_store_pending(&server);
        r = store_write_state(false);
        if (r < 0) {
                static usec_t warned;
                if (now >= warned + 60 * USEC_PER_SEC) {
                        log_warning_errno(r, "Failed to write the state to systemd's fd store: %m; "
                                          "a crash now would lose the counters since.");
                        warned = now;
                }
                /* Tried again in a second, not in a spin. */
                store_written_at = now;
        }
        return USEC_INFINITY;
}

/* EGD connections among a predecessor's files that no state named: a
 * successor needs nothing but the socket to serve them. */
static void adopt_egd(StateReader *r, const FdKind *kinds) {
        unsigned n = 0;

        for (size_t i = 0; i < r->n_fds; i++) {
                if (kinds[i] != FD_KIND_EGD || r->fds[i] < 0 || r->taken[i])
                        continue;
                if (server_adopt_egd(&server, TAKE_FD(r->fds[i])) >= 0)
                        n++;
        }
        if (n > 0)
                log_info("Took up %u EGD connections from their sockets.", n);
}

typedef struct Passed {
        uint64_t name;
        FdKind kind;
        int fd;
} Passed;

static int passed_cmp(const void *a, const void *b) {
        uint64_t x = ((const Passed *) a)->name, y = ((const Passed *) b)->name;
        return x < y ? -1 : x > y;
}

/* A file of ours the store passed: the store keeps it under its name
 * (store set), and the caller gets a copy to take up; or, with no store
 * to keep it, it leaves the store and the caller gets it. */
static int pass_on(const char *name, int fd) {
        int copy;

        if (!store) {
                char msg[300];

                (void) snprintf(msg, sizeof msg, "FDSTOREREMOVE=1\nFDNAME=%s", name);
                (void) sd_notify(false, msg);
                return fd;
        }
        copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (copy < 0 || fd_store_adopt(store, name, fd) < 0) {
                safe_close(copy);
                return -EBADF;
        }
        return copy;
}

/* The sockets systemd passed, and what it kept for us: 1 when a state
 * was taken up, 0 when there was none or it could not be read (we serve
 * fresh; EGD connections go on from their sockets), <0 on failure. */
static int take_systemd_fds(void) {
#ifdef HAVE_SYSTEMD
        _cleanup_free_ Passed *passed = NULL;
        _cleanup_free_ DevState *devs = NULL;
        _cleanup_free_ int *fds = NULL;
        _cleanup_free_ uint64_t *names_by_fd = NULL;
        _cleanup_free_ FdKind *kinds = NULL;
        char **names = NULL;
        int state = -EBADF, n, r = 0;
        uint64_t state_gen = 0;
        size_t n_passed = 0, n_devs = 0;
        bool legacy = false;

        n = sd_listen_fds_with_names(true, &names);
        if (n < 0)
                return log_error_errno(n, "Failed to take the sockets systemd passed: %m");
        if (fdstore_wanted() && fd_store_new(&store) < 0)
                store = NULL;
        passed = calloc((size_t) MAX(n, 1), sizeof *passed);
        devs = calloc((size_t) MAX(n, 1), sizeof *devs);
        if (!passed || !devs)
                r = -ENOMEM;
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names ? names[i] : NULL;
                uint64_t k, gen;
                FdKind kind;

                if (r < 0) {
                        safe_close(fd);
                        continue;
                }
                if (streq_ptr(name, FDSTORE_LEGACY_STATE)) {
                        /* The previous release's, written at SIGTERM; its
                         * fds are "seedbed-fd-INDEX".  Out of the store
                         * once ours is in (store_start()). */
                        safe_close(state);
                        state = fd;
                        legacy = true;
                        if (store)
                                drop_legacy_state = true;
                        else
                                (void) sd_notify(false, "FDSTOREREMOVE=1\nFDNAME=" FDSTORE_LEGACY_STATE);
                        continue;
                }
                if (fd_store_parse_name(name, &kind, &k, &gen) < 0) {
                        /* The socket unit's. */
                        r = add_inherited(fd, name, NULL, true);
                        if (r < 0)
                                safe_close(fd);
                        continue;
                }
                fd = pass_on(name, fd);
                if (fd < 0)
                        continue;
                if (kind == FD_KIND_STATE) {
                        if (!legacy && (state < 0 || k > state_gen)) {
                                safe_close(state);
                                state = fd;
                                state_gen = k;
                        } else
                                safe_close(fd);
                } else if (kind == FD_KIND_DEV) {
                        size_t j;
                        for (j = 0; j < n_devs && devs[j].socket != k; j++)
                                ;
                        if (j == n_devs)
                                devs[n_devs++] = (DevState) { .socket = k, .gen = gen, .fd = fd };
                        else if (gen > devs[j].gen) {
                                safe_close(devs[j].fd);
                                devs[j] = (DevState) { .socket = k, .gen = gen, .fd = fd };
                        } else
                                safe_close(fd);
                } else
                        passed[n_passed++] = (Passed) { .name = k, .kind = kind, .fd = fd };
        }
        for (int i = 0; names && i < n; i++)
                free(names[i]);
        free(names);
        qsort(passed, n_passed, sizeof *passed, passed_cmp);
        if (r >= 0) {
                fds = calloc(MAX(n_passed, (size_t) 1), sizeof *fds);
                names_by_fd = calloc(MAX(n_passed, (size_t) 1), sizeof *names_by_fd);
                kinds = calloc(MAX(n_passed, (size_t) 1), sizeof *kinds);
                if (!fds || !names_by_fd || !kinds)
                        r = -ENOMEM;
        }
        for (size_t i = 0; i < n_passed; i++) {
                if (r < 0 || (i > 0 && passed[i].name == passed[i - 1].name)) {
                        safe_close(passed[i].fd);
                        passed[i].fd = -EBADF;
                }
                if (r >= 0) {
                        fds[i] = passed[i].fd;
                        names_by_fd[i] = passed[i].name;
                        kinds[i] = passed[i].kind;
                }
        }
        if (r < 0) {
                safe_close(state);
                for (size_t i = 0; i < n_devs; i++)
                        safe_close(devs[i].fd);
                return log_oom();
        }
        if (state < 0) {
                /* Killed before it wrote a state: what can be served from
                 * its socket alone is. */
                StateReader none = { .fds = fds, .n_fds = n_passed, .taken = calloc(MAX(n_passed, (size_t) 1), sizeof(bool)) };
                if (none.taken)
                        adopt_egd(&none, kinds);
                free(none.taken);
                for (size_t i = 0; i < n_passed; i++)
                        safe_close(fds[i]);
                for (size_t i = 0; i < n_devs; i++)
                        safe_close(devs[i].fd);
                return 0;
        }
        r = restore_state(state, TAKE_PTR(fds), TAKE_PTR(names_by_fd), n_passed, kinds, devs, n_devs);
        safe_close(state);
        for (size_t i = 0; i < n_devs; i++)
                safe_close(devs[i].fd);
        if (r < 0) {
                log_warning("Serving fresh: the vhost-user connections of the previous instance close.");
                return 0;
        }
        log_info("Took up the state systemd kept from the previous instance.");
        return 1;
#else
        return 0;
#endif
}

static int setup_listeners(Loop *loop, MetricsServer **ret_metrics) {
        int r;

        for (unsigned i = 0; i < arg_cfg.egd.n; i++) {
                r = add_listener(arg_cfg.egd.items[i], TRANSPORT_EGD, false, false, -EBADF, NULL);
                if (r < 0)
                        return r;
        }
        for (unsigned i = 0; i < arg_cfg.vhost_user.n; i++) {
                r = add_listener(arg_cfg.vhost_user.items[i], TRANSPORT_VHOST_USER, false, false, -EBADF, NULL);
                if (r < 0)
                        return r;
        }
        if (arg_cfg.metrics) {
                r = add_listener(arg_cfg.metrics, TRANSPORT_EGD, true, false, -EBADF, NULL);
                if (r < 0)
                        return r;
        }
        if (arg_cfg.control) {
                r = add_listener(arg_cfg.control, TRANSPORT_EGD, false, true, -EBADF, NULL);
                if (r < 0)
                        return r;
        }

        if (arg_vhost_fd >= 0) {
                int listening = 0;
                socklen_t sl = sizeof listening;

                (void) fd_set_nonblock(arg_vhost_fd);
                /* libvirt hands a listening socket, QEMU's own helpers a
                 * connected one: take either. */
                if (getsockopt(arg_vhost_fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &sl) >= 0 && listening) {
                        r = add_listener("--fd", TRANSPORT_VHOST_USER, false, false, arg_vhost_fd, NULL);
                        if (r < 0)
                                return r;
                } else {
                        r = server_add_client(&server, TRANSPORT_VHOST_USER, arg_vhost_fd);
                        if (r < 0)
                                return log_error_errno(r, "Cannot serve vhost-user on --fd=%d: %m", arg_vhost_fd);
                        /* QEMU's helper convention: one process per device. */
                        arg_exit_when_alone = n_listeners == 0;
                }
        }

        /* Passed sockets no address claimed: FileDescriptorName= says
         * what they are for. */
        for (size_t i = 0; i < n_inherited; i++) {
                Inherited *in = &inherited[i];
                const char *name = strempty(in->name);

                if (in->used)
                        continue;
                in->used = true;
                r = 0;
                if (streq(name, "egd"))
                        r = add_listener(name, TRANSPORT_EGD, false, false, in->fd, in->address);
                else if (streq(name, "vhost-user"))
                        r = add_listener(name, TRANSPORT_VHOST_USER, false, false, in->fd, in->address);
                else if (streq(name, "metrics"))
                        r = add_listener(name, TRANSPORT_EGD, true, false, in->fd, in->address);
                else if (streq(name, "control"))
                        r = add_listener(name, TRANSPORT_EGD, false, true, in->fd, in->address);
                else
                        r = log_error_errno(EINVAL, "A socket passed by systemd ('%s') matches no configured address "
                                            "and has no FileDescriptorName= of egd, vhost-user, metrics or control.",
                                            name);
                if (r < 0)
                        return r;
                listeners[n_listeners - 1].systemd = in->systemd;
        }

        if (n_listeners == 0 && arg_vhost_fd < 0)
                return log_error_errno(EINVAL, "Nothing to serve: give --egd or --vhost-user, set listen.egd or "
                                       "listen.vhost-user in %s, or start through seedbed-device.socket.",
                                       arg_config ?: SYSCONFDIR "/seedbed/device.yaml");

        for (size_t i = 0; i < n_listeners; i++) {
                Listener *l = &listeners[i];
                if (l->metrics && *ret_metrics)
                        return log_error_errno(EINVAL, "More than one metrics socket: give one.");
                if (l->metrics) {
                        r = metrics_server_new(loop, &server, l->fd, ret_metrics);
                        l->fd = -EBADF; /* the metrics server owns it */
                } else
                        r = loop_add_io(loop, l->fd, EPOLLIN, l->control ? on_control : on_accept, l, &l->io);
                if (r < 0)
                        return log_error_errno(r, "Failed to watch a listening socket: %m");
                log_info("Serving %s on %s.",
                         l->metrics ? "metrics" : l->control ? "handovers" : transport_to_string(l->transport),
                         l->have_address ? l->address.text : "an inherited socket");
        }
        return 0;
}

static void on_signal(LoopIo *io, int fd, uint32_t events, void *userdata) {
        struct signalfd_siginfo si;
        int sig;

        if (read(fd, &si, sizeof si) != sizeof si)
                return;
        sig = (int) si.ssi_signo;
        /* Nothing is reloaded yet; a daemon must not die of a HUP. */
        if (sig == SIGHUP) {
                log_info("Received SIGHUP: nothing to reload, ignoring.");
                return;
        }
        if (sig == SIGTERM && store) {
                int r = store_write_state(true);
                if (r >= 0)
                        log_info("Received SIGTERM: the state and %u connections are in systemd's store for the "
                                 "next start; exiting.",
                                 server.n_clients[TRANSPORT_EGD] + server.n_clients[TRANSPORT_VHOST_USER]);
                else
                        log_warning_errno(r, "Failed to write the final state to systemd's store: %m; the next "
                                          "start takes up the one written before, as after a crash.");
                loop_exit(userdata, EXIT_OK);
                return;
        }
        log_info("Received signal %d, exiting.", sig);
        loop_exit(userdata, EXIT_OK);
}

static usec_t prepare(void *userdata) {
        static unsigned last = UINT_MAX;
        unsigned now_clients = server.n_clients[TRANSPORT_EGD] + server.n_clients[TRANSPORT_VHOST_USER];

        /* Connections come and go in many places; STATUS= follows here. */
        if (now_clients != last) {
                last = now_clients;
                update_status();
        }
        usec_t wake = USEC_INFINITY;
        for (size_t i = 0; i < n_listeners; i++) {
                Listener *l = &listeners[i];
                if (l->paused_until == 0 || !l->io)
                        continue;
                if (now_usec(CLOCK_MONOTONIC) >= l->paused_until) {
                        l->paused_until = 0;
                        (void) loop_io_set_events(l->io, EPOLLIN);
                } else
                        wake = MIN(wake, l->paused_until);
        }

        usec_t store_wake = store_refresh(now_usec(CLOCK_MONOTONIC));

        if (arg_exit_when_alone && now_clients == 0) {
                log_info("The front-end on --fd has gone; exiting.");
                loop_exit(userdata, EXIT_OK);
                return 0;
        }
        return MIN(MIN(wake, store_wake), server_next_wake(&server));
}

static void tick(usec_t now, void *userdata) {
        server_tick(&server, now);
}

static int run(int argc, char *argv[]) {
        _cleanup_close_ int sfd = -EBADF, predecessor = -EBADF;
        SourceSet sources = {};
        Loop *loop = NULL;
        sigset_t mask;
        int r;

        log_setup("seedbed-device");

        /* Every VM costs a few descriptors (a socket; kick, call and err
         * eventfds); the soft limit of 1024 would cap us at a few hundred. */
        {
                struct rlimit rl;
                if (getrlimit(RLIMIT_NOFILE, &rl) >= 0 && rl.rlim_cur < rl.rlim_max) {
                        rl.rlim_cur = rl.rlim_max;
                        (void) setrlimit(RLIMIT_NOFILE, &rl);
                }
        }
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : EXIT_OK;

        if (arg_print_capabilities) {
                /* docs/interop/vhost-user.json: the back-end's type and
                 * features, for QEMU and libvirt to match devices to it. */
                printf("{\n  \"type\": \"rng\",\n  \"features\": []\n}\n");
                return EXIT_OK;
        }

        if (load_config() < 0)
                return EXIT_CONFIG;

        r = open_sources(&sources);
        if (r < 0) {
                r = EXIT_ERROR;
                goto finish;
        }
        if (source_set_start(&sources, now_usec(CLOCK_MONOTONIC)) == 0)
                log_warning("No entropy source passed its startup tests yet; requests wait until one does.");

        if (loop_new(&loop) < 0) {
                (void) log_oom();
                r = EXIT_ERROR;
                goto finish;
        }

        main_loop = loop;
        for (size_t i = 0; i < CONTROL_PENDING_MAX; i++)
                control_pending[i] = (ControlConn) { .fd = -EBADF };
        RateConfig vm = { arg_cfg.vm_bytes, arg_cfg.vm_period, arg_cfg.vm_burst };
        RateConfig host = { arg_cfg.host_bytes, arg_cfg.host_period, arg_cfg.host_burst };
        ServerCaps caps = {
                .connections = arg_cfg.max_connections,
                .vm_connections = arg_cfg.max_vm_connections,
                .device_memory = arg_cfg.max_device_memory,
                .vm_memory = arg_cfg.max_vm_memory,
                .memory = arg_cfg.max_memory,
                .device_regions = arg_cfg.max_device_regions,
        };
        server_init(&server, loop, &sources, &vm, &host, &caps);

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        (void) sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) signal(SIGPIPE, SIG_IGN);
        sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (sfd < 0 || loop_add_io(loop, sfd, EPOLLIN, on_signal, loop, NULL) < 0) {
                log_error_errno(errno, "Failed to set up signal handling: %m");
                r = EXIT_ERROR;
                goto finish;
        }

        /* The sources are tested and running before we take anything up:
         * the guests' gap is the handover alone. */
        r = take_systemd_fds();
        if (r < 0) {
                r = EXIT_ERROR;
                goto finish;
        }
        if (r == 0 && arg_replace && take_over(&predecessor) < 0) {
                r = EXIT_ERROR;
                goto finish;
        }

        if (setup_listeners(loop, &metrics) < 0) {
                r = EXIT_ERROR;
                goto finish;
        }

        /* Without the store the guests are served all the same; only a
         * crash or restart would cost them their connections. */
        if (fdstore_wanted() && store_start() < 0) {
                log_warning("Serving without systemd's fd store: a restart or crash closes the guests' "
                            "connections.");
                /* A store we cannot keep up to date would hand the next
                 * start stale states: empty it. */
                if (store) {
                        server_unstore_all(&server);
                        fd_store_clear(store);
                }
                if (drop_legacy_state)
                        (void) sd_notify(false, "FDSTOREREMOVE=1\nFDNAME=" FDSTORE_LEGACY_STATE);
                drop_legacy_state = false;
                server.store = NULL;
                store = fd_store_free(store);
        }

        loop_set_hooks(loop, prepare, tick, loop);
        if (predecessor >= 0) {
                r = handover_ready(predecessor);
                if (r < 0) {
                        /* It may serve on: two instances must not. */
                        log_error_errno(r, "The instance we replace did not let go: %m; it serves on.");
                        r = EXIT_ERROR;
                        goto finish;
                }
                predecessor = safe_close(predecessor);
                took_over = true;
                log_info("Took over from the running instance.");
        }
#ifdef HAVE_SYSTEMD
        (void) sd_notify(false, "READY=1");
#endif
        update_status();
        r = loop_run(loop) < 0 ? EXIT_ERROR : EXIT_OK;

#ifdef HAVE_SYSTEMD
        (void) sd_notify(false, "STOPPING=1");
#endif
finish:
        for (size_t i = 0; i < CONTROL_PENDING_MAX; i++)
                if (control_pending[i].io)
                        control_conn_close(&control_pending[i]);
        /* What is in the store stays there for the next start, the socket
         * files it names too. */
        if (store)
                handed_over = true;
        server.store = NULL;
        store = fd_store_free(store);
        server_done(&server);
        metrics_server_free(metrics);
        for (size_t i = 0; i < n_listeners; i++) {
                loop_io_free(listeners[i].io);
                safe_close(listeners[i].fd);
                /* Only sockets we created are ours to remove: not once a
                 * successor serves on them, not while the instance we
                 * replace may still (we failed before it let go). */
                if (listeners[i].have_address && !handed_over && (!listeners[i].predecessor || took_over))
                        listen_address_cleanup(&listeners[i].address);
        }
        free(listeners);
        for (size_t i = 0; i < n_inherited; i++) {
                /* A predecessor's socket no listener took. */
                if (!inherited[i].used && inherited[i].address)
                        safe_close(inherited[i].fd);
                free(inherited[i].name);
                free(inherited[i].address);
        }
        free(inherited);
        loop_free(loop);
        source_set_free(&sources);
        device_config_done(&arg_cfg);
        conf_string_list_clear(&arg_egd);
        conf_string_list_clear(&arg_vhost_user);
        conf_string_list_clear(&arg_sources);
        free(arg_metrics);
        free(arg_rate);
        free(arg_host_rate);
        return r;
}

int main(int argc, char *argv[]) {
        return run(argc, argv);
}
