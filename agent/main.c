/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>

#include "agent-config.h"
#include "atomic.h"
#include "detect.h"
#include "fileio.h"
#include "fork-record.h"
#include "log.h"
#include "pool.h"
#include "record.h"
#include "seed.h"
#include "instance.h"
#include "luks.h"
#include "sshd.h"
#include "sshkeys.h"
#include "systemctl.h"
#include "vm-fork-watch.h"

/* Exit statuses: documented in seedbed-agent(8), kept stable. */
enum {
        EXIT_READY = 0,
        EXIT_ERROR = 1,
        EXIT_USAGE = 2,
        EXIT_CONFIG = 3,
        EXIT_TIMEOUT = 4,
        EXIT_PERMISSION = 5,
        EXIT_NO_RECORD = 6,
        EXIT_REFUSED = 7, /* luks: a device held something and was left alone */
};

typedef enum Action {
        ACTION_SEED,
        ACTION_SSHKEYS,
        ACTION_LUKS,
        ACTION_FIRSTBOOT,
        ACTION_CONSOLE,
        ACTION_VM_FORK,
        ACTION_VM_FORK_WATCH,
        ACTION_STATUS,
        ACTION_CONFIG,
        _ACTION_MAX,
        _ACTION_INVALID = -EINVAL,
} Action;

static const char *const action_table[_ACTION_MAX] = {
        [ACTION_SEED] = "seed",
        [ACTION_SSHKEYS] = "sshkeys",
        [ACTION_LUKS] = "luks",
        [ACTION_FIRSTBOOT] = "firstboot",
        [ACTION_CONSOLE] = "console",
        [ACTION_VM_FORK] = "vm-fork",
        [ACTION_VM_FORK_WATCH] = "vm-fork-watch",
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
               "  sshkeys          Pass the gate, then make the SSH host keys\n"
               "  luks             Pass the gate, then set up the LUKS volumes\n"
               "  firstboot        seed, sshkeys and luks, once per instance\n"
               "  console          Print the host key blocks that cloud-init did not print\n"
               "                   for the keys made in this boot\n"
               "  vm-fork          After a VM generation change: reseed the kernel with\n"
               "                   fresh entropy, make new SSH host keys, reload sshd\n"
               "  vm-fork-watch    Start seedbed-vm-fork.service for each VM generation\n"
               "                   change the kernel logs (kernels without its uevent)\n"
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
        return in_initrd_at(arg_root);
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
static int run_gate_reseed(const AgentConfig *c, usec_t start, uint64_t reseed_bits, Gate *g);

static int run_gate(const AgentConfig *c, usec_t start, Gate *g) {
        return run_gate_reseed(c, start, 0, g);
}

/* run_gate(); with reseed_bits, as seedbed-agent vm-fork runs it: the
 * CRNG is ready, and gets that many bits of fresh entropy and a reseed
 * (SeedContext.reseed_bits).  What cannot be had in time is no reason to
 * stop there: the kernel reseeded with the new generation ID already,
 * and the keys every clone shares are worse than keys made now. */
static int run_gate_reseed(const AgentConfig *c, usec_t start, uint64_t reseed_bits, Gate *g) {
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
                .reseed_bits = reseed_bits,
        };
        g->r = seed_run(&sctx, &g->outcome);
        g->result = seed_result_for(g->r, c);

        if (reseed_bits > 0 && g->outcome.ready_before) {
                uint64_t bits = g->outcome.credited_bits, bytes = 0;

                for (unsigned i = 0; i < g->outcome.n_sources; i++)
                        bytes += g->outcome.sources[i].mixed_bytes;

                g->outcome.ready_after = true;
                g->result = g->r == -EPERM || g->r == -EACCES ? SEED_RESULT_DENIED : SEED_RESULT_READY;
                if (g->result == SEED_RESULT_DENIED) {
                        log_error_errno(g->r, "The kernel refused our entropy: %m. Run as root (CAP_SYS_ADMIN).");
                        return EXIT_PERMISSION;
                }
                if (g->r >= 0)
                        log_info("The kernel's random number generator was reseeded with %llu bytes of fresh "
                                 "entropy (%llu bits credited) in %llu ms.", (unsigned long long) bytes,
                                 (unsigned long long) bits,
                                 (unsigned long long) (g->outcome.elapsed_usec / USEC_PER_MSEC));
                else
                        log_warning("Only %llu of %llu bits of fresh entropy were credited (%s); the kernel's random "
                                    "number generator was %sreseeded with what there was and the new generation ID. "
                                    "Going on.", (unsigned long long) bits, (unsigned long long) reseed_bits,
                                    g->r == -ETIMEDOUT ? "entropy.timeout passed" :
                                    g->r == -ENODATA   ? "no source left" : strerror(-g->r),
                                    g->outcome.reseeded ? "" : "not ");
                return EXIT_READY;
        }

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

/* When this command started, since the kernel did: the boot timeline in
 * the record. */
static usec_t start_boottime;

typedef struct RecordExtras {
        const SshKeyResult *keys;
        size_t n_keys;
        const LuksResult *volumes;
        size_t n_volumes;
        bool have_keys, have_volumes;
        const char *firstboot;
} RecordExtras;

static int write_record_full(const AgentConfig *c, const Gate *g, const char *command, const RecordExtras *x) {
        RecordInput rec = {
                .path = record_path(),
                .in_initrd = in_initrd(),
                .config = c,
                .virtio = &g->virtio,
                .outcome = &g->outcome,
                .result = g->result,
                .command = command,
                .keys = x->keys,
                .n_keys = x->n_keys,
                .have_keys = x->have_keys,
                .volumes = x->volumes,
                .n_volumes = x->n_volumes,
                .have_volumes = x->have_volumes,
                .firstboot = x->firstboot,
                .start_boottime_usec = start_boottime,
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
        if (write_record_full(&c, &g, "seed", &(RecordExtras) {}) < 0 && status == EXIT_READY)
                return EXIT_ERROR;
        return status;
}

/* cloud-init's generator leaves this flag when cloud-init runs in this
 * boot.  Its cc_keys_to_console then prints the host key blocks at the
 * end of the boot, after every tool that writes keys (user-data's
 * ssh_keys: are written after ours): a block of ours printed before could
 * go stale, and no reader of the console can tell a stale block from a
 * current one.
 * Under --root the target's cloud-init is not running. */
#define CLOUD_INIT_ENABLED_FLAG "/run/cloud-init/enabled"
/* cloud-init's per-instance semaphore of cc_keys_to_console, written when
 * the module runs. */
#define CLOUD_INIT_KEYS_TO_CONSOLE_SEM LOCALSTATEDIR "/lib/cloud/instance/sem/config_keys_to_console"

static bool cloud_init_prints_keys(void) {
        if (arg_root && !streq(arg_root, "/"))
                return false;
        return access(CLOUD_INIT_ENABLED_FLAG, F_OK) >= 0;
}

/* The blocks ssh.console selects. */
static void console_blocks(const AgentConfig *c, bool *ret_fingerprints, bool *ret_keys) {
        bool fp = false, keys = false;

        for (unsigned i = 0; i < c->ssh_console.n; i++) {
                fp = fp || c->ssh_console.items[i] == CONSOLE_FINGERPRINTS;
                keys = keys || c->ssh_console.items[i] == CONSOLE_KEYS;
        }
        *ret_fingerprints = fp;
        *ret_keys = keys;
}

/* The configuration's ssh section as sshkeys options; types needs room
 * for every type. */
static SshKeysOptions ssh_keys_options(const AgentConfig *c, HostKeyType *types) {
        for (unsigned i = 0; i < c->ssh_key_types.n; i++)
                types[i] = (HostKeyType) c->ssh_key_types.items[i];

        return (SshKeysOptions) {
                .root = arg_root,
                .key_dir = c->ssh_key_dir,
                .types = types,
                .n_types = c->ssh_key_types.n,
                .rsa_bits = c->ssh_rsa_bits,
                .ecdsa_bits = agent_config_ecdsa_bits(c),
                .replace = c->ssh_regenerate,
                .unknown = c->ssh_replace_unknown,
        };
}

/* The gate failed: no key is made, but a decision to replace the keys in
 * place (the image's first boot) is recorded, since its signs are gone
 * once the machine-id is committed after this boot. */
static void record_ssh_decision(const AgentConfig *c) {
        HostKeyType types[_HOST_KEY_TYPE_MAX];
        SshKeysOptions o = ssh_keys_options(c, types);

        (void) sshkeys_record_decision(&o);
}

/* The configured host keys, behind the gate.  A new instance (its
 * SMBIOS UUID or machine-id changed since the keys were made: a cloned
 * disk) or ssh.regenerate replaces them all.  Returns how many failed,
 * or -errno. */
static int make_ssh_keys(const AgentConfig *c, const Gate *g, usec_t start, SshKeyResult *ret, size_t *ret_n) {
        _cleanup_free_ char *console = NULL;
        HostKeyType types[_HOST_KEY_TYPE_MAX];
        SshKeysOptions o = ssh_keys_options(c, types);
        int failed;

        o.crng_ready = g->outcome.ready_after;
        o.start_usec = start;
        failed = sshkeys_ensure_instance(&o, ret, ret_n, NULL);
        if (failed < 0)
                return failed;

        /* The blocks cloud consoles parse to fill known_hosts. */
        bool fp, keys;
        console_blocks(c, &fp, &keys);
        if ((fp || keys) && cloud_init_prints_keys()) {
                log_info("cloud-init runs in this boot: its keys-to-console module prints the host key blocks "
                         "once every tool has written its keys (or seedbed-console.service, where it does not "
                         "run in this boot).");
                return failed;
        }
        if ((fp || keys) && sshkeys_format_console(ret, *ret_n, fp, keys, &console) >= 0) {
                fputs(console, stdout);
                fflush(stdout);
        }
        return failed;
}

static int do_sshkeys(void) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        SshKeyResult keys[_HOST_KEY_TYPE_MAX] = {};
        usec_t start = now_usec(CLOCK_MONOTONIC);
        size_t n = 0;
        Gate g = {};
        int status, r;

        if (load_config(&c, NULL) < 0)
                return EXIT_CONFIG;
        if (check_root("sshkeys") < 0)
                return EXIT_PERMISSION;

        status = run_gate(&c, start, &g);
        if (status != EXIT_READY) {
                /* Fail closed: no key from a pool that is not ready. */
                log_error("No SSH host key was created.");
                record_ssh_decision(&c);
                (void) write_record_full(&c, &g, "sshkeys", &(RecordExtras) {});
                return status;
        }

        r = make_ssh_keys(&c, &g, start, keys, &n);
        if (write_record_full(&c, &g, "sshkeys", &(RecordExtras) { .keys = keys, .n_keys = n, .have_keys = true }) < 0 &&
            r == 0)
                r = -EIO;
        ssh_key_results_done(keys, n);
        return r == 0 ? EXIT_READY : EXIT_ERROR;
}

/* Every configured volume, one after the other: a volume that fails or
 * is refused does not stop the others.  Returns 0, 1 when one was refused
 * (something was on its device), or -errno for the first other failure. */
static int setup_volumes(const AgentConfig *c, const Gate *g, bool gate_passed, LuksResult *ret) {
        int result = 0;

        LuksOptions o = {
                .root = arg_root,
                /* On-timeout continue is the configuration's explicit
                 * word that secrets may be made all the same. */
                .crng_ready = gate_passed,
        };
        for (unsigned i = 0; i < c->n_volumes; i++) {
                const VolumeConfig *vc = &c->volumes[i];
                LuksVolume v;
                int r;

                /* Names are unique: the configuration refuses a repeat. */
                luks_volume_init(&v);
                v.device = vc->device;
                v.name = vc->name;
                v.key_file = vc->key_file;
                v.label = vc->label;
                v.wipe = vc->wipe;
                v.require_zeroes = vc->require_zeroes;
                v.crypttab = vc->crypttab;
                v.open = vc->open;
                r = luks_volume_setup(&o, &v, &ret[i]);
                if (r == -EEXIST && result == 0)
                        result = 1;
                else if (r < 0 && r != -EEXIST && result <= 0)
                        result = result ?: r;
        }
        return result;
}

static int do_luks(void) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        LuksResult volumes[VOLUMES_MAX] = {};
        usec_t start = now_usec(CLOCK_MONOTONIC);
        Gate g = {};
        int status, r;

        if (load_config(&c, NULL) < 0)
                return EXIT_CONFIG;
        if (check_root("luks") < 0)
                return EXIT_PERMISSION;
        if (c.n_volumes == 0)
                log_info("No LUKS volumes are configured (luks.volumes).");

        status = run_gate(&c, start, &g);
        if (status != EXIT_READY) {
                log_error("No LUKS volume was set up.");
                (void) write_record_full(&c, &g, "luks", &(RecordExtras) {});
                return status;
        }

        r = setup_volumes(&c, &g, true, volumes);
        RecordExtras x = { .volumes = volumes, .n_volumes = c.n_volumes, .have_volumes = true };
        if (write_record_full(&c, &g, "luks", &x) < 0 && r == 0)
                r = -EIO;
        return r == 0 ? EXIT_READY : r == 1 ? EXIT_REFUSED : EXIT_ERROR;
}

#define FIRSTBOOT_STATE LOCALSTATEDIR "/lib/seedbed/firstboot.json"

/* One record of this instance, s as read from path, written again with
 * the UUID hashed where it holds it in the clear, or a hash no key in
 * place can check (instance_state_heal()).  This runs before the gate: a
 * key that cannot be made yet is made on a later boot, and the record
 * stays as it is until then. */
static void heal_record(const char *path, const InstanceState *s, const InstanceId *id) {
        _cleanup_free_ char *key = path_join_root(arg_root, INSTANCE_KEY_FILE);
        int r = instance_state_heal(arg_root, path, s, id);

        if (r > 0)
                log_info("Wrote '%s' again with the SMBIOS UUID hashed with the instance key '%s'.", path,
                         strna(key));
        else if (r == -EAGAIN)
                log_notice("The kernel's random number generator is not ready to make the instance key: '%s' is "
                           "left as it is until a later boot.", path);
        else if (r < 0)
                log_warning_errno(r, "Failed to write '%s' again with the SMBIOS UUID hashed, leaving it as it is "
                                  "until a later boot: %m", path);
}

/* Records from before the UUID was hashed hold it in the clear, records
 * whose key is lost hold a hash that counts as unknown, and neither is
 * rewritten at boot but for a new instance: the runs that find this
 * instance done heal both, firstboot.json (done, as read from path) and
 * ssh-keys.json. */
static void heal_records(const char *path, const InstanceState *done, const InstanceId *id) {
        _cleanup_free_ char *ssh_path = path_join_root(arg_root, INSTANCE_STATE_FILE);
        InstanceState s;
        int r;

        heal_record(path, done, id);
        if (!ssh_path) {
                (void) log_oom();
                return;
        }
        /* One that cannot be read is sshkeys' to report, and to replace. */
        r = instance_state_load(ssh_path, &s);
        if (r < 0) {
                if (r != -ENOENT)
                        log_debug_errno(r, "Cannot read '%s', leaving it as it is: %m", ssh_path);
                return;
        }
        heal_record(ssh_path, &s, id);
        instance_state_done(&s);
}

/* A first boot done: a key of this instance's own, not the one its image
 * came with (instance_key_renew()), made only now that both records have
 * been compared with the old one (here, and in sshkeys) and are to be
 * written: ssh-keys.json again, and firstboot.json from id after. */
static void renew_instance_key(InstanceId *id) {
        _cleanup_free_ char *ssh_path = path_join_root(arg_root, INSTANCE_STATE_FILE),
                            *key = path_join_root(arg_root, INSTANCE_KEY_FILE);
        InstanceId was, now;
        int r;

        if (!ssh_path || !key) {
                (void) log_oom();
                return;
        }
        instance_id_read(arg_root, &was);
        r = instance_key_renew(arg_root);
        if (r < 0) {
                log_warning_errno(r, "Failed to make a new instance key '%s', keeping the one in place: %m", key);
                return;
        }
        instance_id_read(arg_root, &now);
        r = instance_state_rekey(ssh_path, &was, &now);
        if (r < 0)
                log_warning_errno(r, "Failed to write '%s' again with the new instance key '%s', ignoring: %m",
                                  ssh_path, key);
        /* Hashed again, with the new key, when firstboot.json is saved. */
        id->product_uuid_hmac[0] = id->product_uuid_key[0] = 0;
}

/* Whether ssh-keys.json says a replacement of every key after a VM
 * generation change began and did not finish (a reset, a crash). */
static bool fork_replacement_pending(void) {
        _cleanup_free_ char *p = path_join_root(arg_root, INSTANCE_STATE_FILE);
        InstanceState s = {};
        bool pending;

        if (!p || instance_state_load(p, &s) < 0)
                return false;
        pending = streq_ptr(s.pending, INSTANCE_PENDING_VM_FORK);
        instance_state_done(&s);
        return pending;
}

/* The firstboot run of the boot after one: the keys made after the change
 * are kept, the others (every clone's) replaced; the first boot itself
 * stays done, and the volumes are not looked at. */
static int finish_fork_replacement(const AgentConfig *c, usec_t start) {
        SshKeyResult keys[_HOST_KEY_TYPE_MAX] = {};
        size_t n = 0;
        Gate g = {};
        int status, r;

        log_notice("A replacement of the SSH host keys after a VM generation change did not finish: finishing it.");
        status = run_gate(c, start, &g);
        if (status != EXIT_READY) {
                log_error("No SSH host key was replaced.");
                (void) write_record_full(c, &g, "firstboot", &(RecordExtras) { .firstboot = "already-done" });
                return status;
        }
        r = make_ssh_keys(c, &g, start, keys, &n);
        if (write_record_full(c, &g, "firstboot",
                              &(RecordExtras) { .keys = keys, .n_keys = n, .have_keys = true,
                                                .firstboot = "already-done" }) < 0 &&
            r == 0)
                r = -EIO;
        ssh_key_results_done(keys, n);
        return r == 0 ? EXIT_READY : EXIT_ERROR;
}

/* seed, sshkeys and luks, once per instance: /var/lib/seedbed records the
 * instance it was done for, so a second boot of it does nothing, and a
 * clone (another SMBIOS UUID or machine-id) does it all again. */
static int do_firstboot(void) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        _cleanup_free_ char *state_path = NULL;
        SshKeyResult keys[_HOST_KEY_TYPE_MAX] = {};
        LuksResult volumes[VOLUMES_MAX] = {};
        usec_t start = now_usec(CLOCK_MONOTONIC);
        InstanceState done = {};
        InstanceId id;
        size_t n_keys = 0;
        Gate g = {};
        int status, rk, rv, r;

        if (load_config(&c, NULL) < 0)
                return EXIT_CONFIG;
        if (check_root("firstboot") < 0)
                return EXIT_PERMISSION;

        state_path = path_join_root(arg_root, FIRSTBOOT_STATE);
        if (!state_path)
                return log_oom(), EXIT_ERROR;
        instance_id_read(arg_root, &id);
        r = instance_state_load(state_path, &done);
        if (r >= 0) {
                bool unchecked;
                InstanceChange change = instance_compare(&done.id, &id, &unchecked);

                if (unchecked)
                        instance_notice_uuid_unchecked(arg_root, state_path, &id);
                if (change != INSTANCE_NEW)
                        heal_records(state_path, &done, &id);
                instance_state_done(&done);
                if (change != INSTANCE_NEW && fork_replacement_pending())
                        return finish_fork_replacement(&c, start);
                if (change != INSTANCE_NEW) {
                        _cleanup_free_ char *rec = record_path();
                        log_info("First boot was already done for this instance ('%s'); nothing to do.", state_path);
                        /* Said in this boot's record too, for status and
                         * installers; there may be none (no seed ran). */
                        r = rec ? record_mark_firstboot_done(rec, in_initrd(), start_boottime) : -ENOMEM;
                        if (r < 0 && r != -ENOENT)
                                log_warning_errno(r, "Failed to update the record '%s': %m", strna(rec));
                        return EXIT_READY;
                }
                log_notice("This is a new instance of the image: doing its first boot.");
        } else if (r != -ENOENT)
                log_warning_errno(r, "Ignoring the unreadable '%s': %m", state_path);

        status = run_gate(&c, start, &g);
        if (status != EXIT_READY) {
                log_error("Nothing was created: no SSH host key, no LUKS volume.");
                record_ssh_decision(&c);
                RecordExtras x = { .firstboot = "incomplete" };
                (void) write_record_full(&c, &g, "firstboot", &x);
                return status;
        }

        rk = make_ssh_keys(&c, &g, start, keys, &n_keys);
        rv = setup_volumes(&c, &g, true, volumes);

        RecordExtras x = {
                .keys = keys,
                .n_keys = n_keys,
                .have_keys = true,
                .volumes = volumes,
                .n_volumes = c.n_volumes,
                .have_volumes = true,
                .firstboot = rk == 0 && rv == 0 ? "done" : "incomplete",
        };
        r = write_record_full(&c, &g, "firstboot", &x);
        ssh_key_results_done(keys, n_keys);

        /* Done only when everything is: what failed is tried again on the
         * next boot (keys and volumes already in place are kept). */
        if (rk == 0 && rv == 0) {
                InstanceState now = {};
                int w;

                renew_instance_key(&id);
                /* Behind the gate: a UUID with no key to hash it with (the
                 * CRNG still not ready, on-timeout continue) goes in as
                 * null, and the machine-id decides. */
                now.id = id;
                w = instance_state_save(arg_root, state_path, &now);
                if (w < 0)
                        return log_error_errno(w, "Failed to write '%s': %m", state_path), EXIT_ERROR;
                log_info("First boot done for this instance.");
        }
        if (rk != 0 || rv < 0 || r < 0)
                return EXIT_ERROR;
        return rv == 1 ? EXIT_REFUSED : EXIT_READY;
}

#define VM_FORK_UNIT "seedbed-vm-fork.service"

/* What a fork's fresh entropy must credit before the reseed: a whole
 * CRNG key's worth (the startup test's 1024 samples at full credit give
 * more). */
#define VM_FORK_RESEED_BITS 256U

/* The fingerprints of results, into keys (which borrows their strings):
 * previous from before, now from after (either may be NULL). */
static void fork_keys(const SshKeyResult *before, size_t n_before, const SshKeyResult *after, size_t n_after,
                      const AgentConfig *c, ForkKey *keys, size_t *ret_n) {
        size_t n = 0;

        for (unsigned i = 0; i < c->ssh_key_types.n; i++) {
                HostKeyType t = (HostKeyType) c->ssh_key_types.items[i];
                ForkKey k = { .type = host_key_type_to_string(t) };

                for (size_t j = 0; j < n_before; j++)
                        if (before[j].type == t && before[j].action != SSH_KEY_FAILED)
                                k.previous = before[j].fingerprint;
                for (size_t j = 0; j < n_after; j++)
                        if (after[j].type == t && after[j].action != SSH_KEY_FAILED)
                                k.now = after[j].fingerprint;
                keys[n++] = k;
        }
        *ret_n = n;
}

/* seedbed-vm-fork.service, which the udev rule starts on the kernel's
 * uevent for a new VM generation ID: this running system was restored
 * from a snapshot or cloned while running, and every other restore of
 * that snapshot holds the same memory: the CRNG's state, the host keys,
 * anything made from them.  The kernel reseeded its CRNG with the new ID
 * already, a value the host picked and knows; fresh host entropy is
 * mixed in and the CRNG reseeded again, then (vm-fork.ssh) new host keys
 * are made as at the first boot, sshd reloaded to serve them, their
 * blocks printed and the change recorded.  LUKS volumes are left alone:
 * every clone holds the same data, under the same key, on its disk. */
static int do_vm_fork(void) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        _cleanup_free_ char *fork_path = NULL, *sshd = NULL, *boot_id = NULL, *console = NULL;
        SshKeyResult before[_HOST_KEY_TYPE_MAX] = {}, keys[_HOST_KEY_TYPE_MAX] = {};
        ForkKey fk[_HOST_KEY_TYPE_MAX] = {};
        HostKeyType types[_HOST_KEY_TYPE_MAX];
        usec_t start = now_usec(CLOCK_MONOTONIC);
        size_t n_before = 0, n = 0, n_fk = 0;
        const char *result;
        bool fp, kb, regenerate;
        Gate g = {};
        int status, failed = 0, r;

        if (load_config(&c, NULL) < 0)
                return EXIT_CONFIG;
        if (check_root("vm-fork") < 0)
                return EXIT_PERMISSION;
        fork_path = path_join_root(arg_root, FORK_RECORD_FILE);
        if (!fork_path)
                return log_oom(), EXIT_ERROR;
        regenerate = c.vm_fork_ssh == VM_FORK_SSH_REGENERATE;
        log_notice("The VM generation ID changed: this running system was restored from a snapshot or cloned. "
                   "Reseeding the kernel's random number generator%s.",
                   regenerate ? " and making new SSH host keys" : " (vm-fork.ssh: keep)");

        SshKeysOptions o = ssh_keys_options(&c, types);
        o.replace = false;
        o.fork = regenerate;

        status = run_gate_reseed(&c, start, VM_FORK_RESEED_BITS, &g);
        if (status != EXIT_READY) {
                log_error("No SSH host key was replaced.");
                /* The keys in place are every clone's: the next boot's
                 * firstboot replaces them. */
                if (regenerate)
                        (void) sshkeys_record_decision(&o);
                (void) write_record_full(&c, &g, "vm-fork", &(RecordExtras) {});
                return status;
        }

        r = sshkeys_load(&o, before, &n_before);
        if (r < 0) {
                if (regenerate)
                        (void) sshkeys_record_decision(&o);
                return log_error_errno(r, "Failed to read the SSH host keys: %m"), EXIT_ERROR;
        }

        if (regenerate) {
                o.crng_ready = g.outcome.ready_after;
                o.start_usec = start;
                failed = sshkeys_ensure_instance(&o, keys, &n, NULL);
                if (failed < 0) {
                        ssh_key_results_done(before, n_before);
                        (void) write_record_full(&c, &g, "vm-fork", &(RecordExtras) {});
                        return EXIT_ERROR;
                }
                /* sshd before the console: whoever reads the blocks from
                 * it may connect at once. */
                if (arg_root && !streq(arg_root, "/"))
                        log_info("Not reloading sshd: the keys are under --root.");
                else if (sshd_reload(&sshd) < 0)
                        /* It may serve the old keys, every clone's. */
                        failed = failed ?: 1;
                /* Printed whatever cloud-init does: its keys-to-console
                 * module runs once per instance, and it is the same
                 * instance. */
                console_blocks(&c, &fp, &kb);
                if ((fp || kb) && sshkeys_format_console(keys, n, fp, kb, &console) >= 0) {
                        fputs(console, stdout);
                        fflush(stdout);
                }
                result = failed == 0 ? "regenerated" : "incomplete";
        } else {
                log_notice("vm-fork.ssh is keep: the SSH host keys stay as they are, the same as every other clone's "
                           "of this VM.");
                result = "kept";
        }

        r = write_record_full(&c, &g, "vm-fork",
                              &(RecordExtras) { .keys = keys, .n_keys = n, .have_keys = regenerate });
        if (r < 0 && failed == 0)
                failed = 1;

        fork_keys(before, n_before, regenerate ? keys : before, regenerate ? n : n_before, &c, fk, &n_fk);
        (void) read_boot_id(&boot_id);
        ForkEvent e = {
                .time = time(NULL),
                .boot_id = boot_id,
                .uptime_ms = now_usec(CLOCK_BOOTTIME) / USEC_PER_MSEC,
                .crng_ready = g.outcome.ready_after,
                .credited_bits = g.outcome.credited_bits,
                .reseeded = g.outcome.reseeded,
                .ssh = regenerate ? "regenerate" : "keep",
                .result = result,
                .keys = fk,
                .n_keys = n_fk,
                .sshd = sshd,
        };
        r = fork_record_append(fork_path, &e);
        if (r < 0) {
                log_error_errno(r, "Failed to write '%s': %m", fork_path);
                failed = failed ?: 1;
        }
        ssh_key_results_done(before, n_before);
        ssh_key_results_done(keys, n);
        return failed == 0 ? EXIT_READY : EXIT_ERROR;
}

static int restart_vm_fork(const KmsgRecord *r, void *userdata) {
        const char *const restart[] = { "systemctl", "--no-ask-password", "--no-block", "restart", VM_FORK_UNIT, NULL };
        char seq[32];
        int k = 0;

        log_notice("The kernel reseeded its random number generator for a VM generation change (at %llu.%06llu s): "
                   "restarting %s.", (unsigned long long) (r->usec / USEC_PER_SEC),
                   (unsigned long long) (r->usec % USEC_PER_SEC), VM_FORK_UNIT);
        /* PID 1 may be busy (a restore wakes everything at once): a few
         * tries before the change is given up on. */
        for (unsigned i = 0; i < 5; i++) {
                if (i > 0)
                        (void) nanosleep(&(struct timespec) { .tv_sec = 1 << (i - 1) }, NULL);
                k = systemctl_run(restart);
                if (k == 0)
                        break;
                log_warning("'systemctl restart %s' failed (%s); trying again.", VM_FORK_UNIT,
                            k > 0 ? "its exit status" : strerror(-k));
        }
        if (k != 0)
                return k > 0 ? -EIO : k;
        (void) snprintf(seq, sizeof seq, "%llu\n", (unsigned long long) r->seq);
        k = atomic_write_file_locked(VM_FORK_WATCH_STATE, seq, strlen(seq), 0644, (uid_t) -1, (gid_t) -1, true);
        if (k < 0)
                log_warning_errno(k, "Failed to write '%s': a restarted watcher acts on this change again: %m",
                                  VM_FORK_WATCH_STATE);
        return 0;
}

/* seedbed-vm-fork-watch.service: the kernel's log, for the line a VM
 * generation change leaves (vm-fork-watch.h says why). */
static int do_vm_fork_watch(void) {
        _cleanup_free_ char *state = NULL;
        _cleanup_close_ int fd = -EBADF;
        unsigned long long last = 0;
        bool have_last = false;
        int r;

        if (arg_root && !streq(arg_root, "/"))
                return log_error_errno(EINVAL, "vm-fork-watch reads the running kernel's log: not with --root."),
                       EXIT_USAGE;
        r = mkdir_p(RECORD_DIR, 0755);
        if (r < 0)
                return log_error_errno(r, "Failed to create '%s': %m", RECORD_DIR), EXIT_ERROR;
        r = read_one_line_file(VM_FORK_WATCH_STATE, &state);
        if (r >= 0 && sscanf(state, "%llu", &last) == 1)
                have_last = true;
        else if (r != -ENOENT)
                log_warning("Ignoring '%s', which holds no sequence number: acting on every VM generation change "
                            "the kernel log holds.", VM_FORK_WATCH_STATE);
        /* From the oldest record the kernel holds: a change logged before
         * this start (early boot, the watcher restarted) counts too. */
        fd = open("/dev/kmsg", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return log_error_errno(errno, "Failed to open /dev/kmsg: %m"), exit_status_for(-errno);
        log_info("Watching the kernel log for VM generation changes.");
        r = vm_fork_watch(fd, have_last, last, restart_vm_fork, NULL);
        return r < 0 ? EXIT_ERROR : EXIT_READY;
}

/* seedbed-console.service, after cloud-init's last stage: the blocks of
 * the keys made in this boot that sshkeys left to cloud-init, where its
 * cc_keys_to_console did not run in this boot (it runs once per cloud-init
 * instance).  Read-only: the keys are shown as they are now, after every
 * key writer of the boot. */
static int do_console(void) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        _cleanup_free_ char *rec = NULL, *flag = NULL, *sem = NULL, *text = NULL;
        SshKeyResult keys[_HOST_KEY_TYPE_MAX] = {};
        HostKeyType types[_HOST_KEY_TYPE_MAX];
        SshConsoleFacts f = {};
        SshConsoleDecision d;
        bool fp, kb;
        size_t n = 0;
        int r;

        if (load_config(&c, NULL) < 0)
                return EXIT_CONFIG;

        rec = record_path();
        flag = path_join_root(arg_root, CLOUD_INIT_ENABLED_FLAG);
        sem = path_join_root(arg_root, CLOUD_INIT_KEYS_TO_CONSOLE_SEM);
        if (!rec || !flag || !sem)
                return log_oom(), EXIT_ERROR;

        console_blocks(&c, &fp, &kb);
        f.blocks = fp || kb;
        /* Under --root, the tree's flag (a test's): sshkeys there printed
         * its blocks itself, and a second print shows the same keys. */
        f.cloud_init = access(flag, F_OK) >= 0;
        r = record_ssh_keys_made(rec, &f.keys_made);
        if (r < 0 && r != -ENOENT && r != -EBADMSG)
                return log_error_errno(r, "Failed to read the record '%s': %m", rec), EXIT_ERROR;
        f.record = r >= 0;
        /* A clock that cannot be compared across boots counts as no
         * write in this boot: a block too many, never one too few. */
        f.cloud_init_printed = file_written_this_boot(arg_root, sem);

        d = sshkeys_console_decide(&f);
        if (d != SSH_CONSOLE_PRINT) {
                log_info("No SSH host key block printed: %s.", ssh_console_decision_reason(d));
                return EXIT_READY;
        }

        SshKeysOptions o = ssh_keys_options(&c, types);
        r = sshkeys_load(&o, keys, &n);
        if (r < 0)
                return log_error_errno(r, "Failed to read the SSH host keys: %m"), EXIT_ERROR;
        for (size_t i = 0; i < n; i++)
                if (keys[i].action == SSH_KEY_FAILED && keys[i].reason)
                        log_warning("SSH host key '%s' is not shown: %s.", keys[i].path, keys[i].reason);
                else if (keys[i].action == SSH_KEY_FAILED)
                        log_warning_errno(keys[i].error, "SSH host key '%s' is not shown: %m", keys[i].path);
        r = sshkeys_format_console(keys, n, fp, kb, &text);
        ssh_key_results_done(keys, n);
        if (r < 0)
                return log_error_errno(r, "Failed to format the SSH host key blocks: %m"), EXIT_ERROR;
        if (!text[0])
                return log_error("seedbed made SSH host keys in this boot, but none is in place to show."), EXIT_ERROR;
        log_info("seedbed made SSH host keys in this boot and cloud-init printed no block for them: printing "
                 "the keys in place now.");
        fputs(text, stdout);
        return EXIT_READY;
}

static int do_status(void) {
        _cleanup_free_ char *path = record_path();
        bool ready = false, stale = false;
        int r;

        if (!path)
                return log_oom(), EXIT_ERROR;
        r = arg_json ? record_print_json(path, arg_root, stdout, &ready, &stale)
                     : record_print(path, arg_root, stdout, &ready, &stale);
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
        case ACTION_SSHKEYS:
                return do_sshkeys();
        case ACTION_LUKS:
                return do_luks();
        case ACTION_FIRSTBOOT:
                return do_firstboot();
        case ACTION_CONSOLE:
                return do_console();
        case ACTION_VM_FORK:
                return do_vm_fork();
        case ACTION_VM_FORK_WATCH:
                return do_vm_fork_watch();
        case ACTION_STATUS:
                return do_status();
        case ACTION_CONFIG:
                return do_config();
        default:
                return EXIT_USAGE;
        }
}

int main(int argc, char *argv[]) {
        int r;

        start_boottime = now_usec(CLOCK_BOOTTIME);
        r = run(argc, argv);

        if (fflush(stdout) != 0 && r == EXIT_READY)
                r = EXIT_ERROR;
        return r;
}
