/* SPDX-License-Identifier: MIT */
#pragma once

/* The record of a run, /run/seedbed/seed.json: what the gate found and
 * did, for people (seedbed-agent status) and for installers that parse
 * it (status --json).  Its fields are documented in seedbed-agent(8) and
 * kept stable; new ones may be added. */

#include <stdio.h>

#include "agent-config.h"
#include "detect.h"
#include "seed.h"
#include "luks.h"
#include "sshkeys.h"

#define RECORD_VERSION 1
#define RECORD_DIR RUNSTATEDIR "/seedbed"
#define RECORD_SEED RECORD_DIR "/seed.json"

typedef struct RecordInput {
        char *path; /* where it goes */
        bool in_initrd;
        const AgentConfig *config;
        const VirtioRng *virtio;
        const SeedOutcome *outcome;
        SeedResult result;
        const char *command;          /* "seed", "sshkeys", ... */
        const SshKeyResult *keys;     /* sshkeys: what became of each key */
        size_t n_keys;
        bool have_keys;
        const LuksResult *volumes;    /* luks: what became of each volume */
        size_t n_volumes;
        bool have_volumes;
        const char *firstboot;        /* firstboot: "done", "incomplete" */
        usec_t start_boottime_usec;   /* CLOCK_BOOTTIME at the command's start; 0: unknown */
} RecordInput;

/* Builds the JSON text. */
int record_format(const RecordInput *in, char **ret, size_t *ret_len);

/* Writes it atomically to in->path, creating the directory.  The record
 * of an earlier command in this boot at that path (the initramfs's seed,
 * say) is replaced, and its boot timeline carried over. */
int record_write(const RecordInput *in);

/* firstboot with nothing to do: marks the record of this boot (if there
 * is one) "firstboot": "already-done" and adds the run to its timeline;
 * the rest is kept as the gate's command left it.  -ENOENT when there is
 * no record of this boot. */
int record_mark_firstboot_done(const char *path, bool in_initrd, usec_t start_boottime_usec);

/* Whether the record of this boot at path lists an SSH host key that
 * was created or replaced.  -ENOENT when there is no record of this boot,
 * -EBADMSG when the file is not a record. */
int record_ssh_keys_made(const char *path, bool *ret);

/* Prints a record for people.  -ENOENT when there is none, -EBADMSG when
 * it is not a record (not a regular file, too large, not our JSON).
 * ret_ready says whether it records a ready CRNG in this boot; ret_stale
 * that it comes from another boot.  The SSH host keys it lists are
 * compared with the files under root (NULL: /) now: a key another tool
 * replaced is said to be so (sshkeys_check_on_disk()). */
int record_print(const char *path, const char *root, FILE *f, bool *ret_ready, bool *ret_stale);

/* Checks that the file is a record and copies what was checked to f
 * (status --json), each SSH host key it lists with what is on disk now
 * added ("on_disk", "on_disk_fingerprint", "on_disk_checked"); a record
 * that lists none is copied byte for byte. */
int record_print_json(const char *path, const char *root, FILE *f, bool *ret_ready, bool *ret_stale);
