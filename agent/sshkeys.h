/* SPDX-License-Identifier: MIT */
#pragma once

/* SSH host keys: made with libssh once the CRNG gate has passed, written
 * so that a crash leaves no half key, kept when they are already there
 * and sound, replaced all together for a new instance, and shown on the
 * console the way cloud-init shows them, so the tools that read
 * cloud-init's console blocks read ours.
 *
 * Files, in ROOT/KEY_DIR (KEY_DIR default /etc/ssh, whatever our prefix,
 * because that is where sshd looks):
 *   ssh_host_TYPE_key      0600 root:root, or 0640 root:ssh_keys where the
 *                          tree's /etc/group has ssh_keys (Fedora/RHEL)
 *   ssh_host_TYPE_key.pub  0644 root:root, "ALGO BASE64[ COMMENT]\n"
 * Upstream sshd refuses a group-readable host key ("UNPROTECTED PRIVATE
 * KEY FILE"); only the distributions that create the ssh_keys group patch
 * it to accept that group, so its presence is what allows 0640.
 * Private keys are OpenSSH format where libssh can write it (Ed25519 with
 * libssh 0.10; all types with 0.11+), else PKCS#8 PEM (RSA, ECDSA with
 * 0.10); sshd and ssh-keygen read both.
 *
 * The private key is written before the public one.  A crash between them
 * leaves a private key with no .pub (or with the old one): the next run
 * finds the private key sound and writes the .pub from it. */

#include <stdbool.h>
#include <stddef.h>

#include "instance.h"
#include "macro.h"

#define SSHKEYS_KEY_DIR "/etc/ssh"
#define SSHKEYS_RSA_BITS_DEFAULT 3072U
#define SSHKEYS_RSA_BITS_MIN 2048U
#define SSHKEYS_RSA_BITS_MAX 16384U
#define SSHKEYS_ECDSA_BITS_DEFAULT 256U
/* The group that may read host keys on Fedora and RHEL (sshd-keygen). */
#define SSHKEYS_GROUP "ssh_keys"

typedef enum HostKeyType {
        HOST_KEY_ED25519,
        HOST_KEY_ECDSA,
        HOST_KEY_RSA,
        _HOST_KEY_TYPE_MAX,
        _HOST_KEY_TYPE_INVALID = -EINVAL,
} HostKeyType;

/* "ed25519", "ecdsa", "rsa": the TYPE in ssh_host_TYPE_key and the
 * names in ssh.key-types, whose list holds HostKeyType values.  Indexed
 * by HostKeyType, NULL-terminated (for conf.h). */
extern const char *const host_key_type_names[_HOST_KEY_TYPE_MAX + 1];

const char *host_key_type_to_string(HostKeyType t);
HostKeyType host_key_type_from_string(const char *s);

typedef enum SshKeyAction {
        SSH_KEY_KEPT,     /* sound key and matching .pub already there */
        SSH_KEY_REPAIRED, /* sound private key; .pub missing or wrong, rewritten from it */
        SSH_KEY_CREATED,  /* there was none */
        SSH_KEY_REPLACED, /* replace was asked, or the old file was not a sound key */
        SSH_KEY_ADOPTED,  /* sound key and .pub there that no record vouches for, kept as
                           * this machine's (SshKeysOptions.adopt) */
        SSH_KEY_FAILED,   /* see error */
        _SSH_KEY_ACTION_MAX,
} SshKeyAction;

/* "kept", "repaired", "created", "replaced", "adopted", "failed": for
 * logs and records. */
const char *ssh_key_action_to_string(SshKeyAction a);

/* ssh.replace-unknown: what becomes of host keys found in place when no
 * record of ours says they were made for this instance. */
typedef enum UnknownKeysPolicy {
        UNKNOWN_KEYS_FIRST_BOOT, /* replaced at the image's first boot, adopted after */
        UNKNOWN_KEYS_ALWAYS,     /* replaced */
        UNKNOWN_KEYS_NEVER,      /* adopted */
        _UNKNOWN_KEYS_POLICY_MAX,
        _UNKNOWN_KEYS_POLICY_INVALID = -EINVAL,
} UnknownKeysPolicy;

/* "first-boot", "always", "never", and a NULL after them: the names the
 * configuration accepts. */
extern const char *const unknown_keys_policy_names[_UNKNOWN_KEYS_POLICY_MAX + 1];

/* The reasons results and records give, exactly (tests and installers
 * match them). */
#define SSHKEYS_REASON_ASKED "replacement asked for"
#define SSHKEYS_REASON_NEW_INSTANCE "made for another instance: the SMBIOS UUID or machine-id changed"
#define SSHKEYS_REASON_FIRST_BOOT "found at the image's first boot: not made for this instance"
#define SSHKEYS_REASON_UNKNOWN_ALWAYS "found with no seedbed record (ssh.replace-unknown: always)"
#define SSHKEYS_REASON_ADOPTED \
        "found with no seedbed record on a machine that has booted before: adopted as this machine's key"
#define SSHKEYS_REASON_ADOPTED_NEVER "found with no seedbed record: adopted as this machine's key (ssh.replace-unknown: never)"
#define SSHKEYS_REASON_VM_FORK \
        "made anew: the VM generation ID changed, the running VM was restored from a snapshot or cloned"
/* A pending record whose reason is none of ours (written by another
 * version). */
#define SSHKEYS_REASON_PENDING "found with no seedbed record: their replacement was begun in an earlier run"

/* What becomes of the keys found in place. */
typedef enum SshKeysExisting {
        SSH_KEYS_KEEP,            /* a record vouches for them: sound ones are kept */
        SSH_KEYS_ADOPT,           /* nothing vouches for them; sound ones are kept, as adopted */
        SSH_KEYS_REPLACE,         /* every one is replaced */
        SSH_KEYS_REPLACE_UNKNOWN, /* nothing vouches for them, and they are replaced: the decision
                                   * is recorded (pending) before a key is touched, and holds until
                                   * every key is replaced; keys the pending record lists were made
                                   * by it, and are kept */
        SSH_KEYS_REPLACE_FORK,    /* the VM generation changed: every one is replaced, even those a
                                   * pending record lists (made before this change), the decision
                                   * recorded first as for SSH_KEYS_REPLACE_UNKNOWN */
} SshKeysExisting;

typedef struct SshKeysFacts {
        bool fork;                /* the VM generation ID changed (seedbed-agent vm-fork) */
        bool replace;             /* asked for (ssh.regenerate) */
        bool record;              /* a record may vouch for the keys: one was read, or
                                   * could not be read for a reason that proves nothing */
        InstanceChange change;    /* this instance against the record */
        UnknownKeysPolicy policy;
        bool first_boot;          /* first_boot_decide(); only looked at without a record */
        bool pending;             /* the record read is pending (INSTANCE_PENDING_REPLACE_UNKNOWN) */
        const char *pending_reason; /* its reason (static); NULL: SSHKEYS_REASON_PENDING */
} SshKeysFacts;

/* The decision sshkeys_ensure_instance() acts on, from what it observed;
 * *ret_reason (static, NULL with SSH_KEYS_KEEP) says why.  A pending
 * record for this instance (or one not known to be another) is finished
 * whatever the policy and the first boot's signs say now. */
SshKeysExisting sshkeys_decide(const SshKeysFacts *f, const char **ret_reason);

typedef struct SshKeysOptions {
        const char *root;            /* NULL or "/": this system */
        const char *key_dir;         /* absolute, as the guest sees it; NULL: SSHKEYS_KEY_DIR */
        const HostKeyType *types;    /* each at most once */
        size_t n_types;
        unsigned rsa_bits;           /* 0: SSHKEYS_RSA_BITS_DEFAULT */
        unsigned ecdsa_bits;         /* 256, 384 or 521; 0: 256 */
        const char *comment;         /* for new .pub files; NULL: none, as for sshd's
                                      * own keys ssh-keygen -l then says "no comment" */
        bool replace;                /* regenerate every key (new instance, or asked) */
        bool adopt;                  /* sound keys found are not known to be ours: each is
                                      * SSH_KEY_ADOPTED instead of SSH_KEY_KEPT */
        const char *reason;          /* why replace or adopt, for results and logs (static);
                                      * NULL: SSHKEYS_REASON_ASKED */
        UnknownKeysPolicy unknown;   /* sshkeys_ensure_instance(): keys no record vouches for */
        bool fork;                   /* sshkeys_ensure_instance(): the VM generation ID changed,
                                      * every key is replaced (SSH_KEYS_REPLACE_FORK) */
        const InstanceState *vouched; /* with replace: keys it lists (the same path and
                                      * fingerprint) are kept all the same; NULL: none */
        bool crng_ready;             /* what the gate found, recorded with new keys */
        usec_t start_usec;           /* CLOCK_MONOTONIC origin of at_usec; 0: the call */
} SshKeysOptions;

typedef struct SshKeyResult {
        HostKeyType type;
        SshKeyAction action;
        int error;            /* -errno when action is SSH_KEY_FAILED */
        const char *reason;   /* why replaced, adopted, repaired or failed; static, or NULL */
        char *path;           /* the private key, as the guest sees it */
        char *pub_path;
        unsigned bits;        /* as ssh-keygen -l prints them */
        char *fingerprint;    /* "SHA256:" and unpadded base64, as ssh-keygen -l */
        char *public_key;     /* the .pub file's line, without the newline */
        char *comment;        /* the .pub's comment as ssh-keygen -l reads it; NULL: none */
        bool crng_ready;      /* generated in this run while the CRNG was ready */
        usec_t at_usec;       /* when it was in place, since start_usec */
} SshKeyResult;

/* Puts every configured key in place, one after the other, each written
 * atomically.  ret needs room for n_types results, in the order of
 * types; they are written whenever the return value is >= 0.  Returns
 * the number of keys that could not be put in place (each logged, with
 * action SSH_KEY_FAILED), or -errno when none could be tried: -EINVAL
 * for bad options, -ENOMEM, or the key directory cannot be created.
 * Nothing here waits for the CRNG: the caller has passed the gate (and
 * OpenSSL's own getrandom() blocks until it is ready regardless). */
int sshkeys_ensure(const SshKeysOptions *o, SshKeyResult *ret, size_t *ret_n);

/* sshkeys_ensure() for this instance, as seedbed-agent runs it: every key
 * is replaced (as if o->replace) when the instance (SMBIOS UUID,
 * machine-id; instance_id_read() under o->root) is not the one
 * INSTANCE_STATE_FILE under o->root records, and a complete set is
 * recorded there.  With no record (or one that is not ours: malformed,
 * not a regular file), the keys found in place were not made here for
 * this instance: o->unknown and first_boot_decide() say whether they are
 * replaced or adopted (sshkeys_decide()).  A record that cannot be read
 * for another reason (I/O) proves nothing either way: the keys stay.
 * A decision to replace keys no record vouches for is recorded first, as
 * pending (instance.h), and a run that does not finish it records the
 * keys it made; the next run finishes it.
 * *ret_change (may be NULL) says what the instance was.
 * Returns as sshkeys_ensure(); a failure to save the record is logged,
 * not returned (the keys are in place; the next run replaces nothing). */
int sshkeys_ensure_instance(const SshKeysOptions *o, SshKeyResult *ret, size_t *ret_n, InstanceChange *ret_change);

/* Decides as sshkeys_ensure_instance() would and, when that is to replace
 * keys no record vouches for, or every key after a fork (o->fork),
 * records the decision as pending, touching no key: for a run that makes
 * none (the gate failed) at an image's first boot, whose signs are gone
 * once the machine-id is committed, or after a fork, which nothing
 * but this run saw.  Returns 1
 * when it recorded one, 0 when there was nothing to record (or it was
 * already), -EINVAL for bad options, or -errno (logged). */
int sshkeys_record_decision(const SshKeysOptions *o);

/* What is on disk now at a key a record lists. */
typedef enum SshKeyOnDisk {
        SSH_KEY_ON_DISK_SAME,     /* the recorded key */
        SSH_KEY_ON_DISK_REPLACED, /* another key, or a file that is no key: another tool's */
        SSH_KEY_ON_DISK_MISSING,  /* no private key */
        SSH_KEY_ON_DISK_UNKNOWN,  /* could not be read */
        _SSH_KEY_ON_DISK_MAX,
} SshKeyOnDisk;

/* "same", "replaced-by-another-tool", "missing", "unknown". */
const char *ssh_key_on_disk_to_string(SshKeyOnDisk s);

typedef struct SshKeyDiskCheck {
        SshKeyOnDisk state;
        char *fingerprint; /* of the key there now; NULL when none was read */
        bool public_only;  /* the private key is not ours to read: its .pub was compared */
        int error;         /* -errno with SSH_KEY_ON_DISK_UNKNOWN */
} SshKeyDiskCheck;

/* Compares the key at path (the private key, as the guest sees it; under
 * root) with the fingerprint recorded for it.  Returns -ENOMEM, else 0
 * with *ret filled (free with ssh_key_disk_check_done()). */
int sshkeys_check_on_disk(const char *root, const char *path, const char *fingerprint, SshKeyDiskCheck *ret);
void ssh_key_disk_check_done(SshKeyDiskCheck *c);

/* Frees what the results hold and empties them. */
void ssh_key_results_done(SshKeyResult *r, size_t n);

/* The console blocks, byte for byte the lines cloud-init's
 * write-ssh-key-fingerprints prints: keys in the order of their .pub
 * file names (its shell glob), the fingerprint block with ssh-keygen -l
 * lines, the keys block with the .pub lines; a block with no key is left
 * out.  cloud-init sends the fingerprint block through "logger -s", which
 * puts a syslog header ("<14>May  1 12:00:00 cloud-init: ") in front of
 * each of its lines; that header is the logger's, not the format's, and
 * readers look for the markers anywhere in the line, so we do not fake
 * it.  Failed results are skipped.  *ret is "" when nothing is left. */
int sshkeys_format_console(const SshKeyResult *r, size_t n, bool fingerprints, bool keys, char **ret);

/* What seedbed-agent console observed in this boot. */
typedef struct SshConsoleFacts {
        bool blocks;             /* ssh.console selects a block */
        bool cloud_init;         /* cloud-init runs in this boot: sshkeys left the blocks to it */
        bool record;             /* there is a record of this boot */
        bool keys_made;          /* it lists a key created or replaced */
        bool cloud_init_printed; /* cloud-init's keys-to-console semaphore was written in this boot */
} SshConsoleFacts;

typedef enum SshConsoleDecision {
        SSH_CONSOLE_PRINT,
        SSH_CONSOLE_OFF,                /* ssh.console is empty */
        SSH_CONSOLE_PRINTED_BY_AGENT,   /* no cloud-init: sshkeys printed them itself */
        SSH_CONSOLE_NO_RECORD,
        SSH_CONSOLE_NO_NEW_KEYS,        /* the keys shown before still hold */
        SSH_CONSOLE_PRINTED_BY_CLOUD_INIT,
        _SSH_CONSOLE_DECISION_MAX,
} SshConsoleDecision;

/* Whether seedbed-agent console prints the blocks of the keys in place:
 * only when seedbed made keys in this boot and left their blocks to
 * cloud-init, whose keys-to-console module did not run in this boot (it
 * runs once per cloud-init instance: not for a clone that keeps its
 * instance-id, nor after ssh.regenerate). */
SshConsoleDecision sshkeys_console_decide(const SshConsoleFacts *f);

/* Why nothing is printed, for the log: "ssh.console is empty", ...;
 * NULL for SSH_CONSOLE_PRINT. */
const char *ssh_console_decision_reason(SshConsoleDecision d);

/* The configured keys as they are on disk, touching nothing: for each
 * type, the private key (or, where it is not ours to read, its .pub), as
 * sshd would serve it, with the .pub's line where it holds that key.
 * A key that is missing or unreadable is SSH_KEY_FAILED, with error; the
 * others SSH_KEY_KEPT.  ret needs room for o->n_types.  Returns the
 * number that failed, or -EINVAL, -ENOMEM. */
int sshkeys_load(const SshKeysOptions *o, SshKeyResult *ret, size_t *ret_n);

/* One ssh-keygen -l line for a result, without the newline:
 * "256 SHA256:… no comment (ED25519)". */
int sshkeys_fingerprint_line(const SshKeyResult *r, char **ret);

/* The record to save after a run: id, and each key in place, carrying
 * over "created" and "crng_ready" from old (may be NULL) for keys that
 * were kept.  Save it only when sshkeys_ensure() returned 0: a key that
 * failed during a replacement may still be the old instance's, and the
 * old record makes the next run replace it again.  (A replacement of keys
 * no record vouched for saves it as pending, failures and all: the keys
 * it lists are the ones made.) */
int sshkeys_state_build(const InstanceState *old, const InstanceId *id, const SshKeyResult *r, size_t n,
                        InstanceState *ret);
