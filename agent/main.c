/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <limits.h>

#include "config.h"
#include "detect.h"
#include "fileio.h"
#include "log.h"
#include "pool.h"
#include "record.h"
#include "seed.h"

/* Exit statuses: documented in seedbed-agent(8), kept stable. */
enum {
        EXIT_READY = 0,
        EXIT_ERROR = 1,
        EXIT_USAGE = 2,
        EXIT_CONFIG = 3,
        EXIT_TIMEOUT = 4,
        EXIT_PERMISSION = 5,
        EXIT_NO_RECORD = 6,
};

typedef enum Action {
        ACTION_SEED,
        ACTION_STATUS,
        ACTION_CONFIG,
        _ACTION_MAX,
        _ACTION_INVALID = -EINVAL,
} Action;

static const char *const action_table[_ACTION_MAX] = {
        [ACTION_SEED] = "seed",
        [ACTION_STATUS] = "status",
        [ACTION_CONFIG] = "config",
};

static Action arg_action = _ACTION_INVALID;
static const char *arg_root = NULL;
static const char *arg_config = NULL;
static const char *arg_record = NULL;
static bool arg_cmdline = true;
static bool arg_json = false;
static bool arg_dump = false;

static void help(void) {
        printf("Usage: seedbed-agent [OPTIONS] COMMAND\n"
               "\n"
               "Seeds the kernel's random number generator from the host's virtio-rng\n"
               "device and holds back until it is ready.\n"
               "\n"
               "Commands:\n"
               "  seed             Seed the kernel and wait for its CRNG to be ready\n"
               "  status [--json]  Show the record of the last seed run\n"
               "  config --dump    Print the effective configuration\n"
               "\n"
               "Options:\n"
               "  -c --config=FILE  Read FILE instead of %s/seedbed/seedbed.yaml and\n"
               "                    its seedbed.yaml.d/ drop-ins\n"
               "     --root=DIR     Read sysfs, /dev, /etc, /proc/cmdline and write /run\n"
               "                    under DIR (images, tests); the kernel pool is always\n"
               "                    the running kernel's, and no module is loaded\n"
               "     --no-cmdline   Ignore seedbed.* options on the kernel command line\n"
               "     --record=FILE  Write (seed) or read (status) the record here instead\n"
               "                    of %s\n"
               "     --json         With status: print the record as JSON\n"
               "     --dump         With config: print the configuration\n"
               "     --log-level=LEVEL   debug, info, notice, warning, err\n"
               "     --log-target=TARGET auto, console, journal, kmsg\n"
               "  -h --help         Show this help\n"
               "     --version      Show the version\n"
               "\n"
               "See seedbed-agent(8) and seedbed.yaml(5).\n",
               SYSCONFDIR, RECORD_SEED);
}

/* <0 error, 0 exit now, >0 go on. */
static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_ROOT = 0x100,
                ARG_NO_CMDLINE,
                ARG_RECORD,
                ARG_JSON,
                ARG_DUMP,
                ARG_LOG_LEVEL,
                ARG_LOG_TARGET,
                ARG_VERSION,
        };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "root", required_argument, NULL, ARG_ROOT },
                { "no-cmdline", no_argument, NULL, ARG_NO_CMDLINE },
                { "record", required_argument, NULL, ARG_RECORD },
                { "json", no_argument, NULL, ARG_JSON },
                { "dump", no_argument, NULL, ARG_DUMP },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "log-target", required_argument, NULL, ARG_LOG_TARGET },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        int c, r;

        /* getopt permutes, so options may follow the command
         * ("status --json"), as users type them. */
        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_ROOT:
                        if (optarg[0] != '/')
                                return log_error_errno(EINVAL, "--root needs an absolute path, not '%s'.", optarg);
                        arg_root = optarg;
                        break;
                case ARG_NO_CMDLINE:
                        arg_cmdline = false;
                        break;
                case ARG_RECORD:
                        arg_record = optarg;
                        break;
                case ARG_JSON:
                        arg_json = true;
                        break;
                case ARG_DUMP:
                        arg_dump = true;
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
                        printf("seedbed-agent %s\n", PACKAGE_VERSION);
                        return 0;
                case '?':
                        return -EINVAL;
                default:
                        return -EINVAL;
                }
        }

        if (optind >= argc)
                return log_error_errno(EINVAL, "No command given; see 'seedbed-agent --help'.");
        for (size_t i = 0; i < ELEMENTSOF(action_table); i++)
                if (streq(argv[optind], action_table[i]))
                        arg_action = (Action) i;
        if (arg_action < 0)
                return log_error_errno(EINVAL, "Unknown command '%s'; see 'seedbed-agent --help'.", argv[optind]);
        if (optind + 1 < argc)
                return log_error_errno(EINVAL, "Unexpected argument '%s' after '%s'.", argv[optind + 1], argv[optind]);

        if (arg_record && arg_action == ACTION_CONFIG)
                return log_error_errno(EINVAL, "--record goes with 'seed' or 'status'.");
        if (arg_json && arg_action != ACTION_STATUS)
                return log_error_errno(EINVAL, "--json goes with 'status'.");
        if (arg_dump && arg_action != ACTION_CONFIG)
                return log_error_errno(EINVAL, "--dump goes with 'config'.");
        if (arg_action == ACTION_CONFIG && !arg_dump)
                return log_error_errno(EINVAL, "'config' needs --dump.");
        return 1;
}

/* --record, or the record's place under --root. */
static char *record_path(void) {
        return arg_record ? strdup(arg_record) : path_join_root(arg_root, RECORD_SEED);
}

static bool in_initrd(void) {
        _cleanup_free_ char *p = path_join_root(arg_root, "/etc/initrd-release");
        return p && access(p, F_OK) >= 0;
}

static int load_config(AgentConfig *c, FILE *dump) {
        AgentConfigLoad how = {
                .root = arg_root,
                .config_file = arg_config,
                .use_cmdline = arg_cmdline,
                .in_initrd = in_initrd(),
        };
        char error[1024];
        int r;

        agent_config_init(c);
        r = agent_config_load(c, &how, dump, error, sizeof error);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0) {
                log_error("%s", error);
                log_error("Configuration is invalid; nothing was done.");
                return r;
        }
        return 0;
}

static int exit_status_for(int r) {
        switch (r) {
        case -EPERM:
        case -EACCES:
                return EXIT_PERMISSION;
        case -ETIMEDOUT:
                return EXIT_TIMEOUT;
        default:
                return r < 0 ? EXIT_ERROR : EXIT_READY;
        }
}

/* The gate as every command runs it: device setup, then seeding. */
typedef struct Gate {
        VirtioRng virtio;
        SeedOutcome outcome;
        SeedResult result;
        int r;
} Gate;

/* Runs the gate and logs its outcome.  Returns the exit status it calls
 * for: EXIT_READY when what follows may go on (ready, or not ready with
 * on-timeout: continue). */
static int run_gate(const AgentConfig *c, usec_t start, Gate *g) {
        int r, ready;

        /* Before device setup: loading virtio_rng alone makes a kernel
         * that credits it ready, and the record should say which it was. */
        ready = pool_kernel()->ops->is_ready(pool_kernel());

        DetectContext dctx = {
                .root = arg_root,
                .select = c->virtio_select,
                .load_module = c->virtio_load_module,
                .module_timeout = c->virtio_module_timeout,
        };
        r = detect_virtio_rng(&dctx, &g->virtio);
        if (r < 0)
                log_warning_errno(r, "Setting up the virtio-rng device failed, going on with the other sources: %m");
        else if (!g->virtio.found)
                log_info("No virtio-rng device found; going on with the other sources.");
        else
                log_debug("virtio-rng device '%s' on %s, hwrng '%s'.", g->virtio.device, g->virtio.transport,
                          g->virtio.hwrng);

        SeedContext sctx = {
                .config = c,
                .root = arg_root,
                .pool = pool_kernel(),
                .virtio = &g->virtio,
                .progress = true,
                /* Under --root the device is fake and the pool is real. */
                .no_credit = arg_root != NULL,
                .start_usec = start,
                .ready_at_start = ready,
        };
        g->r = seed_run(&sctx, &g->outcome);
        g->result = seed_result_for(g->r, c);

        switch (g->result) {
        case SEED_RESULT_READY:
                if (!g->outcome.ready_before)
                        log_info("The kernel's random number generator is ready: %llu bits credited in %llu ms.",
                                 (unsigned long long) g->outcome.credited_bits,
                                 (unsigned long long) (g->outcome.ready_usec / USEC_PER_MSEC));
                return EXIT_READY;
        case SEED_RESULT_CONTINUED:
                log_warning("The kernel's random number generator is still not ready after %llu s; going on "
                            "(entropy.on-timeout: continue).",
                            (unsigned long long) (c->timeout / USEC_PER_SEC));
                return EXIT_READY;
        case SEED_RESULT_TIMEOUT:
                log_error("The kernel's random number generator is still not ready after %llu s; failing "
                          "(entropy.on-timeout: fail).",
                          (unsigned long long) (c->timeout / USEC_PER_SEC));
                return EXIT_TIMEOUT;
        case SEED_RESULT_DENIED:
                log_error_errno(g->r, "The kernel refused our entropy credit: %m. Run as root (CAP_SYS_ADMIN).");
                return EXIT_PERMISSION;
        default:
                return exit_status_for(g->r);
        }
}

static int write_gate_record(const AgentConfig *c, const Gate *g) {
        RecordInput rec = {
                .path = record_path(),
                .in_initrd = in_initrd(),
                .config = c,
                .virtio = &g->virtio,
                .outcome = &g->outcome,
                .result = g->result,
        };
        int r = rec.path ? record_write(&rec) : -ENOMEM;

        if (r < 0)
                log_error_errno(r, "Failed to write the record '%s': %m", strna(rec.path));
        free(rec.path);
        return r;
}

static int check_root(const char *command) {
        if (geteuid() == 0)
                return 0;
        log_error("seedbed-agent %s must run as root: it reads /dev/hwrng and credits the kernel's "
                  "entropy pool (CAP_SYS_ADMIN). Nothing was done.", command);
        return -EPERM;
}

static int do_seed(void) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        usec_t start = now_usec(CLOCK_MONOTONIC);
        Gate g = {};
        int status;

        if (load_config(&c, NULL) < 0)
                return EXIT_CONFIG;
        if (check_root("seed") < 0)
                return EXIT_PERMISSION;

        status = run_gate(&c, start, &g);
        if (write_gate_record(&c, &g) < 0 && status == EXIT_READY)
                return EXIT_ERROR;
        return status;
}

static int do_status(void) {
        _cleanup_free_ char *path = record_path();
        bool ready = false, stale = false;
        int r;

        if (!path)
                return log_oom(), EXIT_ERROR;
        r = arg_json ? record_print_json(path, stdout, &ready, &stale) : record_print(path, stdout, &ready, &stale);
        if (r == -ENOENT) {
                log_error("No record at '%s': 'seedbed-agent seed' has not completed in this boot.", path);
                return EXIT_NO_RECORD;
        }
        if (r == -EBADMSG) {
                log_error("'%s' is not a seedbed record.", path);
                return EXIT_ERROR;
        }
        if (r < 0) {
                log_error_errno(r, "Failed to read '%s': %m", path);
                return EXIT_ERROR;
        }
        if (stale) {
                log_error("'%s' was written in an earlier boot: there is no record of this one.", path);
                return EXIT_NO_RECORD;
        }
        return ready ? EXIT_READY : EXIT_TIMEOUT;
}

static int do_config(void) {
        _cleanup_(agent_config_done) AgentConfig c = {};

        if (load_config(&c, stdout) < 0)
                return EXIT_CONFIG;
        return EXIT_READY;
}

static int run(int argc, char *argv[]) {
        int r;

        log_setup("seedbed-agent");

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : EXIT_READY;

        switch (arg_action) {
        case ACTION_SEED:
                return do_seed();
        case ACTION_STATUS:
                return do_status();
        case ACTION_CONFIG:
                return do_config();
        default:
                return EXIT_USAGE;
        }
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);

        if (fflush(stdout) != 0 && r == EXIT_READY)
                r = EXIT_ERROR;
        return r;
}
