/* SPDX-License-Identifier: MIT */
#include "luks-decision.h"

static const char *const luks_decision_table[_LUKS_DECISION_MAX] = {
        [LUKS_DECISION_ALREADY_DONE] = "already-done",
        [LUKS_DECISION_FORMAT] = "format",
        [LUKS_DECISION_WIPE_AND_FORMAT] = "wipe-and-format",
        [LUKS_DECISION_RESUME] = "resume",
        [LUKS_DECISION_REFUSE_SIGNATURES] = "refuse-signatures",
        [LUKS_DECISION_REFUSE_DATA] = "refuse-data",
        [LUKS_DECISION_REFUSE_OURS] = "refuse-ours",
        [LUKS_DECISION_REFUSE_OURS_MIXED] = "refuse-ours-mixed",
        [LUKS_DECISION_BUSY] = "busy",
        [LUKS_DECISION_UNREADABLE] = "unreadable",
        [LUKS_DECISION_UNKNOWN] = "unknown",
};

const char *luks_decision_to_string(LuksDecision d) {
        if (d < 0 || d >= _LUKS_DECISION_MAX)
                return NULL;
        return luks_decision_table[d];
}

bool luks_decision_writes(LuksDecision d) {
        return d == LUKS_DECISION_FORMAT || d == LUKS_DECISION_WIPE_AND_FORMAT || d == LUKS_DECISION_RESUME;
}

LuksDecision luks_decide(const LuksFacts *f) {
        bool ours = f->ours_signature || (f->header_read && f->header_ours);

        if (f->luks && f->header_read) {
                /* Done already: a clean LUKS2 header the key file opens.
                 * Also while in use: a later boot opened it from crypttab
                 * before we ran. */
                if (f->verdict == BLOCK_LUKS2 && f->key_opens)
                        return LUKS_DECISION_ALREADY_DONE;
                /* Our header, no keyslot, and the key file that a format
                 * writes before the header: the format was cut short
                 * before its keyslot.  Nobody can have opened it, so
                 * nothing on it is lost by formatting again — unless
                 * someone holds it now. */
                if (f->verdict == BLOCK_LUKS2 && f->header_ours && f->keyslots == 0 && f->key_file)
                        return f->busy ? LUKS_DECISION_BUSY : LUKS_DECISION_RESUME;
        }
        /* Never wipe our own volume, whatever the settings say: a stray
         * signature beside it, a key file moved or lost, a header
         * libcryptsetup cannot read (cryptsetup repair may), is no reason
         * to destroy what it protects. */
        if (f->luks && ours)
                return f->verdict == BLOCK_LUKS2 ? LUKS_DECISION_REFUSE_OURS : LUKS_DECISION_REFUSE_OURS_MIXED;
        /* A clean LUKS2 header libcryptsetup cannot read stops us; next
         * to other signatures it is one of many. */
        if (f->luks && !f->header_read && f->verdict == BLOCK_LUKS2)
                return LUKS_DECISION_UNREADABLE;

        if (f->busy)
                return LUKS_DECISION_BUSY;

        if (f->verdict != BLOCK_EMPTY)
                return f->wipe ? LUKS_DECISION_WIPE_AND_FORMAT : LUKS_DECISION_REFUSE_SIGNATURES;

        /* No signature: plain dm-crypt, a detached-header LUKS volume, a
         * raw database look like that too.  Zeros are what a new disk
         * reads as; wipe: true is the owner saying the data may go. */
        if (f->wipe || f->zeroes_optional)
                return LUKS_DECISION_FORMAT;
        if (f->edges_zero < 0)
                return LUKS_DECISION_UNKNOWN;
        return f->edges_zero > 0 ? LUKS_DECISION_FORMAT : LUKS_DECISION_REFUSE_DATA;
}
