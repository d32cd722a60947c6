/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <limits.h>
#include <stddef.h>

#include "agent-config.h"
#include "fileio.h"
#include "luks.h"

static const char *const source_names[] = {
        [SOURCE_VIRTIO] = "virtio",
        [SOURCE_HWRNG] = "hwrng",
        [SOURCE_CPU] = "cpu",
        [SOURCE_KERNEL] = "kernel",
        NULL,
};

static const char *const on_timeout_names[] = {
        [ON_TIMEOUT_FAIL] = "fail",
        [ON_TIMEOUT_CONTINUE] = "continue",
        NULL,
};

static const char *const vm_fork_ssh_names[] = {
        [VM_FORK_SSH_REGENERATE] = "regenerate",
        [VM_FORK_SSH_KEEP] = "keep",
        NULL,
};

static const char *const ecdsa_bits_names[] = { "256", "384", "521", NULL };

static const char *const console_block_names[] = {
        [CONSOLE_FINGERPRINTS] = "fingerprints",
        [CONSOLE_KEYS] = "keys",
        NULL,
};

unsigned agent_config_ecdsa_bits(const AgentConfig *c) {
        return (unsigned) atoi(ecdsa_bits_names[c->ssh_ecdsa_bits]);
}

static int validate_absolute(const char *s, const char **ret_error) {
        if (s[0] != '/')
                return *ret_error = "must be an absolute path", -EINVAL;
        return 0;
}

/* A device-mapper name: what "cryptsetup open" and crypttab accept
 * without quoting. */
static int validate_dm_name(const char *s, const char **ret_error) {
        size_t l = strlen(s);

        if (l == 0 || l > 127)
                return *ret_error = "must be 1 to 127 characters", -EINVAL;
        if (strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-+") != l || s[0] == '.' ||
            s[0] == '-')
                return *ret_error = "must be letters, digits and _ . - + only, not starting with . or -", -EINVAL;
        return 0;
}

static const ConfItem volume_items[] = {
        { "device", CONF_STRING, offsetof(VolumeConfig, device), .validate = device_spec_validate },
        { "name", CONF_STRING, offsetof(VolumeConfig, name), .validate = validate_dm_name },
        { "key-file", CONF_STRING, offsetof(VolumeConfig, key_file), .validate = validate_absolute },
        { "label", CONF_STRING, offsetof(VolumeConfig, label) },
        { "wipe", CONF_BOOL, offsetof(VolumeConfig, wipe) },
        { "require-zeroes", CONF_BOOL, offsetof(VolumeConfig, require_zeroes) },
        { "crypttab", CONF_BOOL, offsetof(VolumeConfig, crypttab) },
        { "open", CONF_BOOL, offsetof(VolumeConfig, open) },
};

static void volume_init(void *e) {
        *(VolumeConfig *) e = (VolumeConfig) { .crypttab = true, .open = true, .require_zeroes = true };
}

static void volume_done(void *e) {
        VolumeConfig *v = e;

        free(v->device);
        free(v->name);
        free(v->key_file);
        free(v->label);
        *v = (VolumeConfig) {};
}

static int volume_check(const void *e, const void *earlier, unsigned n_earlier, const char **ret_error) {
        static char msg[256];
        const VolumeConfig *v = e, *prev = earlier;

        if (!v->device)
                return *ret_error = "'device' is required", -EINVAL;
        if (!v->name)
                return *ret_error = "'name' is required", -EINVAL;
        /* The name is the mapping, the crypttab line and the key file:
         * two volumes cannot share it. */
        for (unsigned i = 0; i < n_earlier; i++)
                if (streq(prev[i].name, v->name)) {
                        (void) snprintf(msg, sizeof msg, "another volume is named '%s' already (item %u)", v->name,
                                        i + 1);
                        return *ret_error = msg, -EINVAL;
                }
        return 0;
}

const char *source_kind_to_string(SourceKind k) {
        if (k < 0 || k >= _SOURCE_KIND_MAX)
                return NULL;
        return source_names[k];
}

/* Sections stay together and in this order: conf_dump() prints them as
 * nested YAML in table order. */
const ConfItem agent_config_items[] = {
        { "entropy.sources", CONF_ENUM_LIST, offsetof(AgentConfig, sources), .min = 1, .names = source_names },
        { "entropy.timeout", CONF_DURATION, offsetof(AgentConfig, timeout), .min = 0, .max = 3600 * USEC_PER_SEC },
        { "entropy.on-timeout", CONF_ENUM, offsetof(AgentConfig, on_timeout), .names = on_timeout_names },
        { "entropy.initial-seed", CONF_UINT, offsetof(AgentConfig, initial_seed), .min = 0, .max = 4096 },
        { "entropy.chunk", CONF_UINT, offsetof(AgentConfig, chunk), .min = 16, .max = 4096 },
        { "entropy.virtio.quality", CONF_UINT, offsetof(AgentConfig, src[SOURCE_VIRTIO].quality), .min = 0, .max = 1024 },
        { "entropy.virtio.min-entropy", CONF_DOUBLE, offsetof(AgentConfig, src[SOURCE_VIRTIO].min_entropy), .dmin = 0.01, .dmax = 8 },
        { "entropy.virtio.select", CONF_BOOL, offsetof(AgentConfig, virtio_select) },
        { "entropy.virtio.load-module", CONF_BOOL, offsetof(AgentConfig, virtio_load_module) },
        { "entropy.virtio.module-timeout", CONF_DURATION, offsetof(AgentConfig, virtio_module_timeout), .min = 0, .max = 600 * USEC_PER_SEC },
        { "entropy.hwrng.quality", CONF_UINT, offsetof(AgentConfig, src[SOURCE_HWRNG].quality), .min = 0, .max = 1024 },
        { "entropy.hwrng.min-entropy", CONF_DOUBLE, offsetof(AgentConfig, src[SOURCE_HWRNG].min_entropy), .dmin = 0.01, .dmax = 8 },
        { "entropy.cpu.quality", CONF_UINT, offsetof(AgentConfig, src[SOURCE_CPU].quality), .min = 0, .max = 1024 },
        { "entropy.cpu.min-entropy", CONF_DOUBLE, offsetof(AgentConfig, src[SOURCE_CPU].min_entropy), .dmin = 0.01, .dmax = 8 },
        { "ssh.key-types", CONF_ENUM_LIST, offsetof(AgentConfig, ssh_key_types), .min = 1, .names = host_key_type_names },
        { "ssh.rsa-bits", CONF_UINT, offsetof(AgentConfig, ssh_rsa_bits), .min = 2048, .max = 16384 },
        { "ssh.ecdsa-bits", CONF_ENUM, offsetof(AgentConfig, ssh_ecdsa_bits), .names = ecdsa_bits_names },
        { "ssh.console", CONF_ENUM_LIST, offsetof(AgentConfig, ssh_console), .min = 0, .names = console_block_names },
        { "ssh.key-dir", CONF_STRING, offsetof(AgentConfig, ssh_key_dir), .validate = validate_absolute },
        { "ssh.regenerate", CONF_BOOL, offsetof(AgentConfig, ssh_regenerate) },
        { "ssh.replace-unknown", CONF_ENUM, offsetof(AgentConfig, ssh_replace_unknown),
          .names = unknown_keys_policy_names },
        { "vm-fork.ssh", CONF_ENUM, offsetof(AgentConfig, vm_fork_ssh), .names = vm_fork_ssh_names },
        { "luks.volumes", CONF_SECTION_LIST, offsetof(AgentConfig, volumes), .max = VOLUMES_MAX, .sub = volume_items,
          .n_sub = ELEMENTSOF(volume_items), .elem_size = sizeof(VolumeConfig), .count_offset = offsetof(AgentConfig, n_volumes),
          .elem_init = volume_init, .elem_done = volume_done, .elem_check = volume_check },
};
const size_t agent_config_n_items = ELEMENTSOF(agent_config_items);

void agent_config_init(AgentConfig *c) {
        *c = (AgentConfig) {
                .sources = { .n = 2, .items = { SOURCE_VIRTIO, SOURCE_KERNEL } },
                .timeout = 30 * USEC_PER_SEC,
                .on_timeout = ON_TIMEOUT_FAIL,
                .initial_seed = 64,
                .chunk = 64,
                /* The host's virtio-rng backend serves conditioned output
                 * (getrandom or a tested hwrng): full credit.  An unknown
                 * hwrng (a TPM, a chipset RNG) earns none unless the image
                 * builder vouches for it. */
                .src[SOURCE_VIRTIO] = { .quality = 1024, .min_entropy = 8 },
                .src[SOURCE_HWRNG] = { .quality = 0, .min_entropy = 1 },
                /* RDSEED is off unless listed; listing it is the vouching. */
                .src[SOURCE_CPU] = { .quality = 1024, .min_entropy = 8 },
                .src[SOURCE_KERNEL] = { .quality = 0, .min_entropy = 8 },
                .virtio_select = true,
                .virtio_load_module = true,
                .virtio_module_timeout = 5 * USEC_PER_SEC,
                /* ECDSA P-256 and RSA 3072, as OpenSSH's own ssh-keygen -A makes them. */
                .ssh_key_types = { .n = 3, .items = { HOST_KEY_ED25519, HOST_KEY_ECDSA, HOST_KEY_RSA } },
                .ssh_rsa_bits = 3072,
                .ssh_ecdsa_bits = 0,
                .ssh_console = { .n = 2, .items = { CONSOLE_FINGERPRINTS, CONSOLE_KEYS } },
                /* Keys an image builder left are replaced on the image's
                 * first boot; a running server's are never changed unasked. */
                .ssh_replace_unknown = UNKNOWN_KEYS_FIRST_BOOT,
                /* A clone that keeps its snapshot's keys shares them with
                 * every other clone of it. */
                .vm_fork_ssh = VM_FORK_SSH_REGENERATE,
        };
}

void agent_config_done(AgentConfig *c) {
        for (size_t i = 0; i < agent_config_n_items; i++)
                if (agent_config_items[i].type == CONF_SECTION_LIST)
                        conf_section_list_clear(&agent_config_items[i], c);
        c->ssh_key_dir = mfree(c->ssh_key_dir);
}

/* Splits a kernel command line into words as the kernel does (blanks
 * separate, double quotes group) and applies each seedbed.KEY=VALUE. */
int agent_config_apply_cmdline(ConfParser *p, const char *cmdline, const char *where_file, bool in_initrd) {
        /* Two passes so that in an initramfs rd.seedbed.* wins over
         * seedbed.* wherever they stand, as systemd treats rd. options. */
        for (int pass = 0; pass < (in_initrd ? 2 : 1); pass++) {
                const char *want = pass == 0 ? "seedbed." : "rd.seedbed.";
                const char *s = cmdline;

                for (;;) {
                        char word[4096], where[PATH_MAX + 32];
                        size_t n = 0, column;
                        bool quoted = false;
                        const char *key;
                        char *eq;
                        int r;

                        while (*s == ' ' || *s == '\t' || *s == '\n')
                                s++;
                        if (*s == 0)
                                break;
                        column = (size_t) (s - cmdline) + 1;

                        for (; *s && (quoted || (*s != ' ' && *s != '\t' && *s != '\n')); s++) {
                                if (*s == '"') {
                                        quoted = !quoted;
                                        continue;
                                }
                                if (n + 1 < sizeof word)
                                        word[n++] = *s;
                                else
                                        n = sizeof word; /* too long: flagged below */
                        }
                        if (n >= sizeof word) {
                                if (strncmp(cmdline + column - 1, want, strlen(want)) != 0)
                                        continue; /* not ours: ignore */
                                (void) snprintf(p->error, sizeof p->error, "%s:1:%zu: a %s word longer than %zu bytes",
                                                where_file, column, want, sizeof word - 1);
                                return -EBADMSG;
                        }
                        word[n] = 0;

                        /* What follows "--" is for init, not for us. */
                        if (streq(word, "--"))
                                break;
                        key = startswith(word, want);
                        if (!key)
                                continue;

                        (void) snprintf(where, sizeof where, "%s:1:%zu", where_file, column);
                        eq = strchr(word, '=');
                        if (!eq) {
                                (void) snprintf(p->error, sizeof p->error,
                                                "%s: '%s' needs a value: %sKEY=VALUE", where, word, want);
                                return -EBADMSG;
                        }
                        *eq = 0;
                        r = conf_set(p, key, eq + 1, where);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int load_dropins(ConfParser *p, const char *dir) {
        struct dirent **names = NULL;
        int n, r = 0;

        n = scandir(dir, &names, NULL, alphasort);
        if (n < 0)
                return errno == ENOENT ? 0 : -errno;

        for (int i = 0; i < n; i++) {
                const char *name = names[i]->d_name;
                size_t l = strlen(name);
                _cleanup_free_ char *path = NULL;

                if (r < 0 || name[0] == '.' || l < 6 || !streq(name + l - 5, ".yaml"))
                        continue;
                if (names[i]->d_type != DT_REG && names[i]->d_type != DT_LNK && names[i]->d_type != DT_UNKNOWN)
                        continue; /* a directory named *.yaml is not a drop-in */
                if (asprintf(&path, "%s/%s", dir, name) < 0) {
                        path = NULL;
                        r = -ENOMEM;
                        continue;
                }
                r = conf_load_yaml_file(p, path);
                if (r == -ENOENT) /* removed since scandir() */
                        r = 0;
        }

        for (int i = 0; i < n; i++)
                free(names[i]);
        free(names);
        return r;
}

int agent_config_load(AgentConfig *c, const AgentConfigLoad *how, FILE *dump, char *error, size_t error_size) {
        _cleanup_free_ char *main_file = NULL, *dropin_dir = NULL, *cmdline_path = NULL, *cmdline = NULL;
        ConfParser p;
        int r;

        error[0] = 0;
        r = conf_parser_init(&p, agent_config_items, agent_config_n_items, c);
        if (r < 0)
                return r;

        if (how->config_file) {
                r = conf_load_yaml_file(&p, how->config_file);
                if (r < 0 && !p.error[0])
                        (void) snprintf(p.error, sizeof p.error, "%s: cannot read: %s", how->config_file,
                                        strerror(-r));
        } else {
                main_file = path_join_root(how->root, SYSCONFDIR "/seedbed/seedbed.yaml");
                dropin_dir = path_join_root(how->root, SYSCONFDIR "/seedbed/seedbed.yaml.d");
                if (!main_file || !dropin_dir) {
                        r = -ENOMEM;
                        goto finish;
                }
                r = conf_load_yaml_file(&p, main_file);
                if (r == -ENOENT)
                        r = 0;
                else if (r < 0 && !p.error[0])
                        (void) snprintf(p.error, sizeof p.error, "%s: cannot read: %s", main_file, strerror(-r));
                if (r >= 0) {
                        r = load_dropins(&p, dropin_dir);
                        if (r < 0 && !p.error[0])
                                (void) snprintf(p.error, sizeof p.error, "%s: cannot read: %s", dropin_dir,
                                                strerror(-r));
                }
        }
        if (r < 0)
                goto finish;

        if (how->use_cmdline) {
                cmdline_path = path_join_root(how->root, "/proc/cmdline");
                if (!cmdline_path) {
                        r = -ENOMEM;
                        goto finish;
                }
                r = read_full_file(cmdline_path, 64 * 1024, &cmdline, NULL);
                if (r == -ENOENT)
                        r = 0; /* a --root tree without /proc */
                else if (r < 0)
                        (void) snprintf(p.error, sizeof p.error, "%s: cannot read: %s", cmdline_path, strerror(-r));
                else
                        r = agent_config_apply_cmdline(&p, cmdline, cmdline_path, how->in_initrd);
                if (r < 0)
                        goto finish;
        }

        if (dump)
                conf_dump(&p, dump);

finish:
        if (r < 0)
                (void) snprintf(error, error_size, "%s", p.error[0] ? p.error : strerror(-r));
        conf_parser_done(&p);
        return r;
}
