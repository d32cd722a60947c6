/* SPDX-License-Identifier: MIT */
/* luks_decide() as a table: every fact that can keep a device from being
 * formatted, alone and in the combinations that matter; and, over every
 * combination of facts, the rules that keep data safe. */
#include <check.h>

#include "luks-decision.h"
#include "macro.h"
#include "testmain.h"

/* Shorthands for the rows.  Facts left out are the cautious ones: edges
 * that hold data, require-zeroes on, no wipe. */
#define EMPTY .verdict = BLOCK_EMPTY
#define LUKS2 .verdict = BLOCK_LUKS2, .luks = true
#define OTHER .verdict = BLOCK_OTHER
#define OTHER_WITH_LUKS .verdict = BLOCK_OTHER, .luks = true
#define ZEROS .edges_zero = 1
#define UNREAD .edges_zero = -EIO
#define READ .header_read = true
#define OURS .header_read = true, .header_ours = true
#define MARKED .ours_signature = true
#define LAX .zeroes_optional = true
#define DONE .keyslots = 1, .key_file = true, .key_opens = true

static const struct {
        const char *what;
        LuksFacts facts;
        LuksDecision want;
} rows[] = {
        /* Blank or not. */
        { "zeros, no signature", { EMPTY, ZEROS }, LUKS_DECISION_FORMAT },
        { "random data, no signature", { EMPTY }, LUKS_DECISION_REFUSE_DATA },
        { "random data, wipe", { EMPTY, .wipe = true }, LUKS_DECISION_FORMAT },
        { "random data, require-zeroes off", { EMPTY, LAX }, LUKS_DECISION_FORMAT },
        { "edges unreadable", { EMPTY, UNREAD }, LUKS_DECISION_UNKNOWN },
        { "edges unreadable, require-zeroes off", { EMPTY, UNREAD, LAX }, LUKS_DECISION_FORMAT },
        { "a filesystem", { OTHER }, LUKS_DECISION_REFUSE_SIGNATURES },
        { "a filesystem, wipe", { OTHER, .wipe = true }, LUKS_DECISION_WIPE_AND_FORMAT },
        { "a filesystem, require-zeroes off", { OTHER, ZEROS, LAX }, LUKS_DECISION_REFUSE_SIGNATURES },

        /* In use. */
        { "held, no signature", { EMPTY, ZEROS, .busy = true }, LUKS_DECISION_BUSY },
        { "held, wipe", { OTHER, .busy = true, .wipe = true }, LUKS_DECISION_BUSY },
        { "held, our volume opened from crypttab", { LUKS2, OURS, DONE, .busy = true }, LUKS_DECISION_ALREADY_DONE },
        { "held, someone's LUKS2", { LUKS2, READ, .keyslots = 2, .busy = true }, LUKS_DECISION_BUSY },
        { "held, a LUKS2 header libcryptsetup cannot read", { LUKS2, .busy = true }, LUKS_DECISION_UNREADABLE },
        { "held, ours among other signatures", { OTHER_WITH_LUKS, OURS, DONE, .busy = true },
          LUKS_DECISION_REFUSE_OURS_MIXED },
        { "held, ours, no keyslot, key file there", { LUKS2, OURS, .key_file = true, .busy = true },
          LUKS_DECISION_BUSY },

        /* LUKS headers. */
        { "ours, the key opens it", { LUKS2, OURS, DONE }, LUKS_DECISION_ALREADY_DONE },
        { "someone's LUKS2, our key happens to open it", { LUKS2, READ, DONE }, LUKS_DECISION_ALREADY_DONE },
        { "ours, key file missing", { LUKS2, OURS, .keyslots = 1 }, LUKS_DECISION_REFUSE_OURS },
        { "ours, key file missing, wipe", { LUKS2, OURS, .keyslots = 1, .wipe = true }, LUKS_DECISION_REFUSE_OURS },
        { "ours, the key does not open it", { LUKS2, OURS, .keyslots = 1, .key_file = true },
          LUKS_DECISION_REFUSE_OURS },
        { "ours, no keyslot, key file there", { LUKS2, OURS, .key_file = true }, LUKS_DECISION_RESUME },
        { "ours, no keyslot, key file there, wipe", { LUKS2, OURS, .key_file = true, .wipe = true },
          LUKS_DECISION_RESUME },
        { "ours, no keyslot, no key file", { LUKS2, OURS }, LUKS_DECISION_REFUSE_OURS },
        { "ours among other signatures", { OTHER_WITH_LUKS, OURS, DONE }, LUKS_DECISION_REFUSE_OURS_MIXED },
        { "ours among other signatures, wipe", { OTHER_WITH_LUKS, OURS, .keyslots = 1, .wipe = true },
          LUKS_DECISION_REFUSE_OURS_MIXED },
        /* cryptsetup repair may save it: libblkid's word that it is ours
         * is enough. */
        { "ours by libblkid, header unreadable", { LUKS2, MARKED }, LUKS_DECISION_REFUSE_OURS },
        { "ours by libblkid among others, header unreadable, wipe", { OTHER_WITH_LUKS, MARKED, .wipe = true },
          LUKS_DECISION_REFUSE_OURS_MIXED },
        { "someone's LUKS2", { LUKS2, READ, .keyslots = 2 }, LUKS_DECISION_REFUSE_SIGNATURES },
        { "someone's LUKS2, wipe", { LUKS2, READ, .keyslots = 2, .wipe = true }, LUKS_DECISION_WIPE_AND_FORMAT },
        { "LUKS1 (never ours)", { OTHER_WITH_LUKS, READ }, LUKS_DECISION_REFUSE_SIGNATURES },
        { "a LUKS2 header libcryptsetup cannot read", { LUKS2 }, LUKS_DECISION_UNREADABLE },
        { "a LUKS2 header libcryptsetup cannot read, wipe", { LUKS2, .wipe = true }, LUKS_DECISION_UNREADABLE },
        { "an unreadable LUKS header among others, wipe", { OTHER_WITH_LUKS, .wipe = true },
          LUKS_DECISION_WIPE_AND_FORMAT },
};

START_TEST(test_table) {
        LuksDecision got = luks_decide(&rows[_i].facts);

        ck_assert_msg(got == rows[_i].want, "%s: got %s, want %s", rows[_i].what, luks_decision_to_string(got),
                      luks_decision_to_string(rows[_i].want));
}
END_TEST

START_TEST(test_names) {
        for (LuksDecision d = 0; d < _LUKS_DECISION_MAX; d++)
                ck_assert_ptr_nonnull(luks_decision_to_string(d));
        ck_assert_ptr_null(luks_decision_to_string(_LUKS_DECISION_MAX));
        ck_assert(luks_decision_writes(LUKS_DECISION_FORMAT));
        ck_assert(luks_decision_writes(LUKS_DECISION_RESUME));
        ck_assert(!luks_decision_writes(LUKS_DECISION_ALREADY_DONE));
        ck_assert(!luks_decision_writes(LUKS_DECISION_REFUSE_DATA));
}
END_TEST

/* Every combination of facts (the header's only where there is a LUKS
 * signature, as luks.c gathers them): the rules that keep data safe. */
START_TEST(test_invariants) {
        static const BlockVerdict verdicts[] = { BLOCK_EMPTY, BLOCK_LUKS2, BLOCK_OTHER };
        static const int edges[] = { 1, 0, -EIO };

        for (unsigned v = 0; v < ELEMENTSOF(verdicts); v++)
                for (unsigned e = 0; e < ELEMENTSOF(edges); e++)
                        for (unsigned bits = 0; bits < 1u << 11; bits++) {
                                LuksFacts f = {
                                        .verdict = verdicts[v],
                                        .luks = verdicts[v] == BLOCK_LUKS2 || (bits & 1),
                                        .ours_signature = bits & 2,
                                        .busy = bits & 4,
                                        .edges_zero = verdicts[v] == BLOCK_EMPTY ? edges[e] : 0,
                                        .header_read = bits & 8,
                                        .header_ours = bits & 16,
                                        .keyslots = bits & 32 ? 1 : 0,
                                        .key_opens = bits & 64,
                                        .key_file = bits & 128,
                                        .wipe = bits & 256,
                                        .zeroes_optional = bits & 512,
                                };
                                LuksDecision d;
                                bool writes;

                                if (!f.luks && (f.ours_signature || (bits & 1024)))
                                        continue; /* no header facts without a LUKS signature */
                                if (!f.luks)
                                        f.header_read = f.header_ours = f.key_opens = false, f.keyslots = 0;
                                if (f.key_opens && !f.key_file)
                                        continue;
                                d = luks_decide(&f);
                                writes = luks_decision_writes(d);

                                /* A device in use is never written. */
                                ck_assert_msg(!(f.busy && writes), "held device written (%u/%u/%#x)", v, e, bits);
                                /* Nor a volume of ours that has a keyslot. */
                                ck_assert_msg(!(f.luks && (f.ours_signature || (f.header_read && f.header_ours)) &&
                                                f.keyslots > 0 && writes),
                                              "our volume written (%u/%u/%#x)", v, e, bits);
                                /* Without wipe, something libblkid names stays. */
                                ck_assert_msg(!(!f.wipe && f.verdict != BLOCK_EMPTY && writes &&
                                                d != LUKS_DECISION_RESUME),
                                              "signatures written over without wipe (%u/%u/%#x)", v, e, bits);
                                /* Without wipe or require-zeroes off, only zeros are blank. */
                                ck_assert_msg(!(!f.wipe && !f.zeroes_optional && f.verdict == BLOCK_EMPTY &&
                                                f.edges_zero != 1 && writes),
                                              "data with no signature written (%u/%u/%#x)", v, e, bits);
                        }
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("luks-decision");
        TCase *tc = tcase_create("decide");

        tcase_add_loop_test(tc, test_table, 0, (int) ELEMENTSOF(rows));
        tcase_add_test(tc, test_names);
        tcase_add_test(tc, test_invariants);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(suite)
