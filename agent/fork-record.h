/* SPDX-License-Identifier: MIT */
#pragma once

/* The record of VM generation changes, LOCALSTATEDIR/lib/seedbed/
 * vm-forks.json: one entry for each change seedbed-agent vm-fork acted
 * on, oldest first, the last FORK_RECORD_EVENTS_MAX kept.  The keys'
 * own record (ssh-keys.json) says why each key was made; this one keeps
 * what that one forgets: the keys each change replaced.
 *   {
 *     "version": 1,
 *     "events": [ {
 *         "time": "2026-11-30T12:00:00Z",
 *         "boot_id": "…",          the boot the VM was in when its snapshot was
 *                                   taken: a restored VM goes on in it
 *         "uptime_ms": 123456,     CLOCK_BOOTTIME, which goes on from the snapshot's
 *         "crng_ready": true,
 *         "credited_bits": 8192,   fresh entropy given to the pool before the reseed
 *         "reseeded": true,        RNDRESEEDCRNG done after it
 *         "ssh": "regenerate" | "keep",        vm-fork.ssh
 *         "result": "regenerated" | "kept" | "incomplete",
 *         "keys": [ { "type": "ed25519", "previous": "SHA256:…" | null,
 *                     "new": "SHA256:…" | null }, … ],
 *         "sshd": "reloaded ssh.service" | "not running" | "…"
 *     }, … ]
 *   } */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define FORK_RECORD_FILE LOCALSTATEDIR "/lib/seedbed/vm-forks.json"
#define FORK_RECORD_EVENTS_MAX 32

typedef struct ForkKey {
        const char *type;
        const char *previous; /* fingerprint before; NULL: none, or unreadable */
        const char *now;      /* after; NULL likewise */
} ForkKey;

typedef struct ForkEvent {
        time_t time;
        const char *boot_id; /* NULL: unknown */
        uint64_t uptime_ms;
        bool crng_ready;
        uint64_t credited_bits;
        bool reseeded;
        const char *ssh;     /* "regenerate", "keep" */
        const char *result;  /* "regenerated", "kept", "incomplete" */
        const ForkKey *keys;
        size_t n_keys;
        const char *sshd;    /* what became of the running sshd; NULL: nothing was asked */
} ForkEvent;

/* Builds the record's text: the events of the record at path (none when
 * there is none, or it is not ours: the caller was told why through
 * *ret_kept < 0) and e after them, the oldest dropped beyond
 * FORK_RECORD_EVENTS_MAX.  *ret_kept: how many earlier events were kept,
 * or -errno from reading the old record (-ENOENT: none). */
int fork_record_format(const char *path, const ForkEvent *e, char **ret, size_t *ret_len, int *ret_kept);

/* Appends e to the record at path, atomically (0644), creating its
 * directory.  An old record that is not ours is replaced, with a warning. */
int fork_record_append(const char *path, const ForkEvent *e);
