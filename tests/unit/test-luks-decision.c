/* SPDX-License-Identifier: MIT */
/* luks_decide() as a table: every fact that can keep a device from being
 * formatted, alone and in the combinations that matter. */
#include <check.h>

#include "luks-decision.h"
#include "macro.h"
#include "testmain.h"

/* Shorthands for the rows. */
#define EMPTY .verdict = BLOCK_EMPTY
#define LUKS2 .verdict = BLOCK_LUKS2, .luks = true
#define OTHER .verdict = BLOCK_OTHER
#define OTHER_WITH_LUKS .verdict = BLOCK_OTHER, .luks = true
#define ZEROS .edges_zero = 1
#define DATA .edges_zero = 0
#define UNREAD .edges_zero = -5
#define READ .header_read = true
#define OURS .header_read = true, .header_ours = true
#define STRICT .require_zeroes = true

static const struct {
        const char *what;
        LuksFacts facts;
        LuksDecision want;
} rows[] = {
        /* Blank or not. */
        { "zeros, no signature", { EMPTY, ZEROS, STRICT }, LUKS_DECISION_FORMAT },
        { "random data, no signature", { EMPTY, DATA, STRICT }, LUKS_DECISION_REFUSE_DATA },
        { "random data, wipe", { EMPTY, DATA, STRICT, .wipe = true }, LUKS_DECISION_FORMAT },
        { "random data, require-zeroes off", { EMPTY, DATA }, LUKS_DECISION_FORMAT },
        { "edges unreadable", { EMPTY, UNREAD, STRICT }, LUKS_DECISION_UNKNOWN },
        { "edges unreadable, require-zeroes off", { EMPTY, UNREAD }, LUKS_DECISION_FORMAT },
        { "a filesystem", { OTHER, STRICT }, LUKS_DECISION_REFUSE_SIGNATURES },
        { "a filesystem, wipe", { OTHER, STRICT, .wipe = true }, LUKS_DECISION_WIPE_AND_FORMAT },
        { "a filesystem, zeros elsewhere, require-zeroes off", { OTHER, ZEROS }, LUKS_DECISION_REFUSE_SIGNATURES },

        /* In use. */
        { "held, no signature", { EMPTY, ZEROS, STRICT, .busy = true }, LUKS_DECISION_BUSY },
        { "held, wipe", { OTHER, STRICT, .busy = true, .wipe = true }, LUKS_DECISION_BUSY },
        { "held, our volume opened from crypttab", { LUKS2, OURS, .keyslots = 1, .key_file = true, .key_opens = true,
                                                      .busy = true },
          LUKS_DECISION_ALREADY_DONE },

        /* LUKS headers. */
        { "ours, the key opens it", { LUKS2, OURS, .keyslots = 1, .key_file = true, .key_opens = true },
          LUKS_DECISION_ALREADY_DONE },
        { "someone's LUKS2, our key happens to open it", { LUKS2, READ, .keyslots = 1, .key_file = true,
                                                            .key_opens = true },
          LUKS_DECISION_ALREADY_DONE },
        { "ours, key file missing", { LUKS2, OURS, .keyslots = 1 }, LUKS_DECISION_REFUSE_OURS },
        { "ours, key file missing, wipe", { LUKS2, OURS, .keyslots = 1, .wipe = true }, LUKS_DECISION_REFUSE_OURS },
        { "ours, the key does not open it", { LUKS2, OURS, .keyslots = 1, .key_file = true },
          LUKS_DECISION_REFUSE_OURS },
        { "ours, no keyslot, key file there", { LUKS2, OURS, .key_file = true }, LUKS_DECISION_RESUME },
        { "ours, no keyslot, no key file", { LUKS2, OURS }, LUKS_DECISION_REFUSE_OURS },
        { "ours, no keyslot, key file there, held", { LUKS2, OURS, .key_file = true, .busy = true },
          LUKS_DECISION_REFUSE_OURS },
        { "ours among other signatures", { OTHER_WITH_LUKS, OURS, .keyslots = 1, .key_file = true, .key_opens = true },
          LUKS_DECISION_REFUSE_OURS_MIXED },
        { "ours among other signatures, wipe", { OTHER_WITH_LUKS, OURS, .keyslots = 1, .wipe = true },
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
        const LuksFacts *f = &rows[_i].facts;
        LuksDecision got = luks_decide(f);

        ck_assert_msg(got == rows[_i].want, "%s: got %s, want %s", rows[_i].what, luks_decision_to_string(got),
                      luks_decision_to_string(rows[_i].want));
}
END_TEST

/* Only the format decisions write, and every decision has a name. */
START_TEST(test_writes) {
        for (LuksDecision d = 0; d < _LUKS_DECISION_MAX; d++) {
                ck_assert_ptr_nonnull(luks_decision_to_string(d));
                ck_assert_int_eq(luks_decision_writes(d),
                                 d == LUKS_DECISION_FORMAT || d == LUKS_DECISION_WIPE_AND_FORMAT ||
                                         d == LUKS_DECISION_RESUME);
        }
        ck_assert_ptr_null(luks_decision_to_string(_LUKS_DECISION_MAX));
}
END_TEST

/* Whatever the other facts, a refusal stays a refusal when only wipe
 * or require_zeroes change — except where they are meant to. */
START_TEST(test_never_formats_held_or_ours) {
        for (unsigned bits = 0; bits < 1u << 9; bits++) {
                LuksFacts f = {
                        .verdict = bits & 3 ? (bits & 1 ? BLOCK_LUKS2 : BLOCK_OTHER) : BLOCK_EMPTY,
                        .luks = bits & 1,
                        .busy = bits & 4,
                        .edges_zero = bits & 8 ? 1 : 0,
                        .header_read = bits & 16,
                        .header_ours = bits & 32,
                        .key_file = bits & 64,
                        .key_opens = false,
                        .keyslots = bits & 128 ? 1 : 0,
                        .wipe = bits & 256,
                        .require_zeroes = true,
                };
                LuksDecision d = luks_decide(&f);

                if (f.busy)
                        ck_assert_msg(!luks_decision_writes(d), "held device written (bits %#x)", bits);
                if (f.luks && f.header_read && f.header_ours && f.keyslots > 0)
                        ck_assert_msg(!luks_decision_writes(d), "our volume written (bits %#x)", bits);
        }
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("luks-decision");
        TCase *tc = tcase_create("decide");

        tcase_add_loop_test(tc, test_table, 0, (int) ELEMENTSOF(rows));
        tcase_add_test(tc, test_writes);
        tcase_add_test(tc, test_never_formats_held_or_ours);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(suite)
