/* SPDX-License-Identifier: MIT */
#pragma once

/* What to do with a LUKS volume's device, decided from facts alone: what
 * libblkid saw, whether its edges read as zeros, what the LUKS header
 * says, whether the key file exists and opens it, and the volume's
 * settings.  No I/O here, so every case is a row in a table test. */

#include <errno.h>
#include <stdbool.h>

#include "blockdev.h"

typedef struct LuksFacts {
        BlockVerdict verdict;
        bool luks;           /* a LUKS header among the signatures */
        bool ours_signature; /* libblkid reads our subsystem mark in one */
        bool busy;           /* an exclusive open was refused: mounted or held */
        /* blockdev_edges_zero() for a device without signatures: 1 zeros,
         * 0 data, -errno could not tell.  Left 0 it counts as data. */
        int edges_zero;
        /* The header, when luks is set and libcryptsetup could read it. */
        bool header_read;
        bool header_ours;    /* our subsystem mark */
        unsigned keyslots;   /* in use */
        bool key_opens;      /* the key file opens a keyslot */
        bool key_file;       /* the key file exists */
        /* Settings; left false, the safe ones. */
        bool wipe;
        bool zeroes_optional; /* require-zeroes: false */
} LuksFacts;

typedef enum LuksDecision {
        LUKS_DECISION_ALREADY_DONE,      /* our volume: the key file opens it */
        LUKS_DECISION_FORMAT,            /* blank: format it */
        LUKS_DECISION_WIPE_AND_FORMAT,   /* something is there and wipe: true */
        LUKS_DECISION_RESUME,            /* our header with no keyslot: a format cut short */
        LUKS_DECISION_REFUSE_SIGNATURES, /* something libblkid names is there */
        LUKS_DECISION_REFUSE_DATA,       /* no signature, but its edges are not zeros */
        LUKS_DECISION_REFUSE_OURS,       /* our volume, and the key file does not open it */
        LUKS_DECISION_REFUSE_OURS_MIXED, /* our volume among other signatures */
        LUKS_DECISION_BUSY,              /* in use, and not as our volume */
        LUKS_DECISION_UNREADABLE,        /* a clean LUKS2 header libcryptsetup cannot read */
        LUKS_DECISION_UNKNOWN,           /* the edges could not be read: cannot tell */
        _LUKS_DECISION_MAX,
        _LUKS_DECISION_INVALID = -EINVAL,
} LuksDecision;

/* The decision for f.  Nothing is ever formatted that could hold
 * someone's data: our own volume is never wiped, even with wipe: true;
 * a device in use is never written; a device without signatures is
 * blank only when its edges read as zeros (unless zeroes_optional). */
LuksDecision luks_decide(const LuksFacts *f);

/* "already-done", "format", …, for logs and tests. */
const char *luks_decision_to_string(LuksDecision d);

/* Whether d writes to the device. */
bool luks_decision_writes(LuksDecision d);
