/* SPDX-License-Identifier: MIT */
#pragma once

/* The agent's configuration: built-in defaults, then
 * /etc/seedbed/seedbed.yaml and the .yaml files in seedbed.yaml.d/ (or
 * --config FILE), then seedbed.KEY=VALUE (and rd.seedbed.KEY=VALUE in an initramfs) from
 * the kernel command line.  All of it is read and checked before the agent
 * does anything. */

#include "conf.h"
#include "sshkeys.h"

typedef enum SourceKind {
        SOURCE_VIRTIO, /* /dev/hwrng while the virtio one is current */
        SOURCE_HWRNG,  /* /dev/hwrng while another device is current */
        SOURCE_CPU,    /* RDSEED */
        SOURCE_KERNEL, /* a blocking getrandom(): the kernel's own jitter seeding */
        _SOURCE_KIND_MAX,
} SourceKind;

typedef enum OnTimeout {
        ON_TIMEOUT_FAIL,
        ON_TIMEOUT_CONTINUE,
        _ON_TIMEOUT_MAX,
} OnTimeout;

typedef enum ConsoleBlock {
        CONSOLE_FINGERPRINTS,
        CONSOLE_KEYS,
        _CONSOLE_BLOCK_MAX,
} ConsoleBlock;

/* vm-fork.ssh: what becomes of the SSH host keys when the VM generation
 * ID changes (a running VM restored from a snapshot, or cloned). */
typedef enum VmForkSsh {
        VM_FORK_SSH_REGENERATE,
        VM_FORK_SSH_KEEP,
        _VM_FORK_SSH_MAX,
} VmForkSsh;

/* One entry of luks.volumes. */
typedef struct VolumeConfig {
        char *device;   /* a path, LABEL=, UUID=, PARTLABEL=, PARTUUID= */
        char *name;     /* the mapping name, /dev/mapper/NAME */
        char *key_file; /* NULL: /etc/seedbed/keys/NAME.key */
        char *label;    /* LUKS2 label, or NULL */
        bool wipe;
        bool require_zeroes;
        bool crypttab;
        bool open;
} VolumeConfig;

#define VOLUMES_MAX 16

typedef struct SourceConfig {
        unsigned quality;   /* bits credited per 1024 bits read */
        double min_entropy; /* declared per byte, for the health tests */
} SourceConfig;

typedef struct AgentConfig {
        ConfEnumList sources;
        usec_t timeout;
        OnTimeout on_timeout;
        unsigned initial_seed; /* bytes mixed without credit when already ready */
        unsigned chunk;        /* bytes per read */

        SourceConfig src[_SOURCE_KIND_MAX];
        bool virtio_select;
        bool virtio_load_module;
        usec_t virtio_module_timeout;

        ConfEnumList ssh_key_types;  /* HostKeyType values */
        unsigned ssh_rsa_bits;
        int ssh_ecdsa_bits;      /* index into 256, 384, 521 */
        ConfEnumList ssh_console;
        char *ssh_key_dir;       /* NULL: /etc/ssh */
        bool ssh_regenerate;
        UnknownKeysPolicy ssh_replace_unknown;

        VmForkSsh vm_fork_ssh;

        VolumeConfig volumes[VOLUMES_MAX];
        unsigned n_volumes;
} AgentConfig;

unsigned agent_config_ecdsa_bits(const AgentConfig *c);

const char *source_kind_to_string(SourceKind k);

/* Defaults: a useful agent needs no file at all.  Nothing is allocated:
 * NULL strings mean their documented defaults. */
void agent_config_init(AgentConfig *c);
/* Frees what loading the configuration allocated. */
void agent_config_done(AgentConfig *c);

typedef struct AgentConfigLoad {
        const char *root;        /* --root, or NULL */
        const char *config_file; /* --config, or NULL for /etc/seedbed */
        bool use_cmdline;        /* apply the kernel command line */
        bool in_initrd;          /* rd.seedbed.* applies too */
} AgentConfigLoad;

/* Loads everything in order.  -EBADMSG when any input is wrong, with the
 * message ("FILE:LINE:COL: ...") in error; the config is then unusable.
 * When dump is non-NULL the effective configuration is printed there. */
int agent_config_load(AgentConfig *c, const AgentConfigLoad *how, FILE *dump, char *error, size_t error_size);

/* Applies seedbed.* words of a kernel command line (exported for tests). */
int agent_config_apply_cmdline(ConfParser *p, const char *cmdline, const char *where, bool in_initrd);

/* The item table, for tests and conf_parser_init(). */
extern const ConfItem agent_config_items[];
extern const size_t agent_config_n_items;
