/* SPDX-License-Identifier: MIT */
/* The EGD codec: every command parses to what a client meant, every
 * prefix of a request waits for more, malformed requests are refused with
 * a message that says which and why, pipelined requests come apart one at
 * a time, and the replies are the bytes a client expects. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "egd.h"
#include "macro.h"
#include "testmain.h"

/* What parse must leave alone when it does not succeed. */
static const EgdRequest sentinel = {
        .command = 0x7f, .length = 0x5a, .bits = 0xbeef, .data = (const uint8_t *) &sentinel,
};

static void assert_untouched(const EgdRequest *r) {
        ck_assert_int_eq(r->command, sentinel.command);
        ck_assert_uint_eq(r->length, sentinel.length);
        ck_assert_uint_eq(r->bits, sentinel.bits);
        ck_assert_ptr_eq(r->data, sentinel.data);
}

/* Parses a whole request that must take all n bytes. */
static EgdRequest parse_ok(const uint8_t *buf, size_t n) {
        EgdRequest r = sentinel;
        const char *error = NULL;

        ck_assert_int_eq(egd_parse(buf, n, &r, &error), (ssize_t) n);
        ck_assert_ptr_null(error);
        return r;
}

/* Every strict prefix of a complete request, the empty one included,
 * asks for more and leaves *ret and *ret_error alone. */
static void assert_prefixes_wait(const uint8_t *buf, size_t n) {
        for (size_t k = 0; k < n; k++) {
                EgdRequest r = sentinel;
                const char *error = NULL;

                ck_assert_msg(egd_parse(buf, k, &r, &error) == 0, "prefix of %zu of %zu bytes did not wait", k, n);
                ck_assert_ptr_null(error);
                assert_untouched(&r);
        }
}

static const char *parse_bad(const uint8_t *buf, size_t n) {
        EgdRequest r = sentinel;
        const char *error = NULL;

        ck_assert_int_eq(egd_parse(buf, n, &r, &error), -EBADMSG);
        ck_assert_ptr_nonnull(error);
        assert_untouched(&r);
        return error;
}

/* ---- commands ----------------------------------------------------------- */

START_TEST(test_get_level) {
        static const uint8_t req[] = { 0x00 };
        EgdRequest r = parse_ok(req, sizeof req);

        ck_assert_int_eq(r.command, EGD_GET_LEVEL);
        ck_assert_uint_eq(r.length, 0);
        ck_assert_uint_eq(r.bits, 0);
        ck_assert_ptr_null(r.data);
}
END_TEST

START_TEST(test_read_nonblocking) {
        static const uint8_t req[] = { 0x01, 0x20 };
        EgdRequest r = parse_ok(req, sizeof req);

        ck_assert_int_eq(r.command, EGD_READ_NONBLOCK);
        ck_assert_uint_eq(r.length, 32);
        ck_assert_ptr_null(r.data);
}
END_TEST

START_TEST(test_read_blocking) {
        /* What QEMU's rng-egd sends, up to its largest chunk. */
        for (unsigned nn = 1; nn <= 255; nn++) {
                uint8_t req[] = { 0x02, (uint8_t) nn };
                EgdRequest r = parse_ok(req, sizeof req);

                ck_assert_int_eq(r.command, EGD_READ_BLOCKING);
                ck_assert_uint_eq(r.length, nn);
                ck_assert_uint_eq(r.bits, 0);
                ck_assert_ptr_null(r.data);
        }
}
END_TEST

START_TEST(test_read_zero) {
        /* Harmless: parsed, and the caller replies MM = 0 or nothing. */
        static const uint8_t nb[] = { 0x01, 0x00 }, bl[] = { 0x02, 0x00 };
        EgdRequest r;

        r = parse_ok(nb, sizeof nb);
        ck_assert_int_eq(r.command, EGD_READ_NONBLOCK);
        ck_assert_uint_eq(r.length, 0);
        r = parse_ok(bl, sizeof bl);
        ck_assert_int_eq(r.command, EGD_READ_BLOCKING);
        ck_assert_uint_eq(r.length, 0);
}
END_TEST

START_TEST(test_write) {
        uint8_t req[4 + 255];
        EgdRequest r;

        /* 0x0102 = 258 bits in 255 bytes; the bit count is big-endian. */
        req[0] = 0x03;
        req[1] = 0x01;
        req[2] = 0x02;
        req[3] = 255;
        for (unsigned i = 0; i < 255; i++)
                req[4 + i] = (uint8_t) (i ^ 0xa5);
        r = parse_ok(req, sizeof req);
        ck_assert_int_eq(r.command, EGD_WRITE);
        ck_assert_uint_eq(r.bits, 258);
        ck_assert_uint_eq(r.length, 255);
        /* The data is the caller's buffer, not a copy. */
        ck_assert_ptr_eq(r.data, req + 4);
        ck_assert_mem_eq(r.data, req + 4, 255);
}
END_TEST

START_TEST(test_write_full_claim) {
        /* Exactly 8 bits per byte is the most a write may claim. */
        uint8_t req[4 + 255] = { 0x03, 0x07, 0xf8, 255 };
        EgdRequest r = parse_ok(req, sizeof req);

        ck_assert_uint_eq(r.bits, 2040);
        ck_assert_uint_eq(r.length, 255);

        /* And zero bits is a valid claim for any amount of data. */
        req[1] = req[2] = 0;
        r = parse_ok(req, sizeof req);
        ck_assert_uint_eq(r.bits, 0);
}
END_TEST

START_TEST(test_write_empty) {
        static const uint8_t req[] = { 0x03, 0x00, 0x00, 0x00 };
        EgdRequest r = parse_ok(req, sizeof req);

        ck_assert_int_eq(r.command, EGD_WRITE);
        ck_assert_uint_eq(r.bits, 0);
        ck_assert_uint_eq(r.length, 0);
        ck_assert_ptr_eq(r.data, req + 4);
}
END_TEST

START_TEST(test_get_pid) {
        static const uint8_t req[] = { 0x04 };
        EgdRequest r = parse_ok(req, sizeof req);

        ck_assert_int_eq(r.command, EGD_GET_PID);
        ck_assert_uint_eq(r.length, 0);
        ck_assert_ptr_null(r.data);
}
END_TEST

START_TEST(test_error_optional) {
        static const uint8_t req[] = { 0x05 };
        EgdRequest r = sentinel;

        ck_assert_int_eq(egd_parse(req, sizeof req, &r, NULL), -EBADMSG);
        assert_untouched(&r);
        ck_assert_int_eq(egd_parse(NULL, 0, &r, NULL), 0);
}
END_TEST

/* ---- partial requests --------------------------------------------------- */

START_TEST(test_prefixes) {
        static const uint8_t level[] = { 0x00 }, pid[] = { 0x04 };
        static const uint8_t nb[] = { 0x01, 0x10 }, bl[] = { 0x02, 0xff };
        static const uint8_t nb0[] = { 0x01, 0x00 }, bl0[] = { 0x02, 0x00 };
        static const uint8_t w0[] = { 0x03, 0x00, 0x00, 0x00 };
        static const uint8_t w3[] = { 0x03, 0x00, 0x18, 0x03, 0xaa, 0xbb, 0xcc };

        assert_prefixes_wait(level, sizeof level);
        assert_prefixes_wait(pid, sizeof pid);
        assert_prefixes_wait(nb, sizeof nb);
        assert_prefixes_wait(bl, sizeof bl);
        assert_prefixes_wait(nb0, sizeof nb0);
        assert_prefixes_wait(bl0, sizeof bl0);
        assert_prefixes_wait(w0, sizeof w0);
        assert_prefixes_wait(w3, sizeof w3);
        (void) parse_ok(w3, sizeof w3);
}
END_TEST

START_TEST(test_prefixes_write_every_length) {
        uint8_t req[4 + 255];

        /* Every data length, with a full claim: each of the 4 + NN
         * prefixes waits, the whole request parses. */
        for (unsigned nn = 0; nn <= 255; nn++) {
                unsigned bits = 8 * nn;
                EgdRequest r;

                req[0] = 0x03;
                req[1] = (uint8_t) (bits >> 8);
                req[2] = (uint8_t) bits;
                req[3] = (uint8_t) nn;
                memset(req + 4, (int) nn, nn);
                assert_prefixes_wait(req, 4 + nn);
                r = parse_ok(req, 4 + nn);
                ck_assert_uint_eq(r.bits, bits);
                ck_assert_uint_eq(r.length, nn);
        }
}
END_TEST

/* ---- malformed requests ------------------------------------------------- */

START_TEST(test_unknown_commands) {
        for (unsigned c = 0x05; c <= 0xff; c++) {
                uint8_t req[] = { (uint8_t) c, 0x02, 0x10 };
                const char *error;

                /* Refused from the command byte alone: nothing that
                 * follows could make it valid. */
                error = parse_bad(req, 1);
                ck_assert_ptr_nonnull(strstr(error, "unknown command"));
                error = parse_bad(req, sizeof req);
                ck_assert_ptr_nonnull(strstr(error, "unknown command"));
        }
}
END_TEST

START_TEST(test_write_overclaim) {
        uint8_t req[4 + 255];

        /* One bit more than the data can hold, for every length: refused
         * as soon as the header is in, and still with all the data. */
        for (unsigned nn = 0; nn <= 255; nn++) {
                unsigned bits = 8 * nn + 1;
                const char *error;

                req[0] = 0x03;
                req[1] = (uint8_t) (bits >> 8);
                req[2] = (uint8_t) bits;
                req[3] = (uint8_t) nn;
                memset(req + 4, 0x5a, nn);

                /* Shorter than the header: nothing to judge yet. */
                assert_prefixes_wait(req, 4);
                for (size_t k = 4; k <= 4 + nn; k++) {
                        error = parse_bad(req, k);
                        ck_assert_str_eq(error, "write-entropy: claims more entropy than it carries");
                }
        }
}
END_TEST

START_TEST(test_write_overclaim_extremes) {
        static const uint8_t no_data[] = { 0x03, 0x00, 0x01, 0x00 };
        static const uint8_t max_bits[] = { 0x03, 0xff, 0xff, 0x01, 0x00 };
        /* Little-endian 8 bits would be 0x0800 = 2048 > 8: the byte order
         * matters to the verdict. */
        static const uint8_t swapped[] = { 0x03, 0x08, 0x00, 0x01, 0x00 };
        static const uint8_t right[] = { 0x03, 0x00, 0x08, 0x01, 0x00 };

        (void) parse_bad(no_data, sizeof no_data);
        (void) parse_bad(max_bits, sizeof max_bits);
        (void) parse_bad(swapped, sizeof swapped);
        ck_assert_uint_eq(parse_ok(right, sizeof right).bits, 8);
}
END_TEST

START_TEST(test_error_messages_static) {
        static const uint8_t unknown[] = { 0x42 }, over[] = { 0x03, 0x00, 0x09, 0x01 };
        const char *a, *b;

        /* The same string every time: callers may keep the pointer. */
        a = parse_bad(unknown, sizeof unknown);
        b = parse_bad(unknown, sizeof unknown);
        ck_assert_ptr_eq(a, b);
        a = parse_bad(over, sizeof over);
        b = parse_bad(over, sizeof over);
        ck_assert_ptr_eq(a, b);
        /* The message names the command it is about. */
        ck_assert_ptr_nonnull(strstr(a, egd_command_to_string(EGD_WRITE)));
}
END_TEST

/* ---- pipelining --------------------------------------------------------- */

START_TEST(test_pipelined) {
        static const uint8_t stream[] = {
                0x02, 0x40,                         /* read-blocking 64 */
                0x00,                               /* get-level */
                0x03, 0x00, 0x10, 0x02, 0xde, 0xad, /* write 16 bits in 2 bytes */
                0x01, 0x00,                         /* read-nonblocking 0 */
                0x04,                               /* get-pid */
                0x02, 0x40,                         /* read-blocking 64 */
                0x03, 0x00, 0x00, 0x00,             /* empty write */
                0x02,                               /* the start of another read */
        };
        static const struct {
                EgdCommand command;
                size_t size;
                uint8_t length;
                uint16_t bits;
        } expect[] = {
                { EGD_READ_BLOCKING, 2, 64, 0 }, { EGD_GET_LEVEL, 1, 0, 0 },    { EGD_WRITE, 6, 2, 16 },
                { EGD_READ_NONBLOCK, 2, 0, 0 },  { EGD_GET_PID, 1, 0, 0 },      { EGD_READ_BLOCKING, 2, 64, 0 },
                { EGD_WRITE, 4, 0, 0 },
        };
        size_t off = 0;
        EgdRequest r = sentinel;

        for (size_t i = 0; i < ELEMENTSOF(expect); i++) {
                const char *error = NULL;
                ssize_t k = egd_parse(stream + off, sizeof stream - off, &r, &error);

                /* Exactly one request, never a byte of the next. */
                ck_assert_int_eq(k, (ssize_t) expect[i].size);
                ck_assert_int_eq(r.command, expect[i].command);
                ck_assert_uint_eq(r.length, expect[i].length);
                ck_assert_uint_eq(r.bits, expect[i].bits);
                if (r.command == EGD_WRITE)
                        ck_assert_ptr_eq(r.data, stream + off + 4);
                if (r.command == EGD_WRITE && r.length == 2)
                        ck_assert_mem_eq(r.data, ((const uint8_t[]) { 0xde, 0xad }), 2);
                off += (size_t) k;
        }

        /* The trailing half request waits for the rest. */
        r = sentinel;
        ck_assert_uint_eq(off, sizeof stream - 1);
        ck_assert_int_eq(egd_parse(stream + off, sizeof stream - off, &r, NULL), 0);
        assert_untouched(&r);
}
END_TEST

START_TEST(test_pipelined_then_garbage) {
        /* Good requests ahead of a bad one are still served: the error
         * comes only when parsing reaches it. */
        static const uint8_t stream[] = { 0x02, 0x10, 0x00, 0xff, 0x02, 0x10 };
        EgdRequest r;

        ck_assert_int_eq(egd_parse(stream, sizeof stream, &r, NULL), 2);
        ck_assert_int_eq(egd_parse(stream + 2, sizeof stream - 2, &r, NULL), 1);
        (void) parse_bad(stream + 3, sizeof stream - 3);
}
END_TEST

/* ---- replies ------------------------------------------------------------ */

START_TEST(test_encode_level) {
        uint8_t out[4];

        ck_assert_uint_eq(egd_encode_level(0x01020304, out), 4);
        ck_assert_mem_eq(out, ((const uint8_t[]) { 0x01, 0x02, 0x03, 0x04 }), 4);
        ck_assert_uint_eq(egd_encode_level(0, out), 4);
        ck_assert_mem_eq(out, ((const uint8_t[]) { 0, 0, 0, 0 }), 4);
        ck_assert_uint_eq(egd_encode_level(256, out), 4);
        ck_assert_mem_eq(out, ((const uint8_t[]) { 0, 0, 1, 0 }), 4);
        ck_assert_uint_eq(egd_encode_level(UINT32_MAX, out), 4);
        ck_assert_mem_eq(out, ((const uint8_t[]) { 0xff, 0xff, 0xff, 0xff }), 4);
}
END_TEST

static void assert_pid(long pid, const char *digits) {
        uint8_t out[64];
        size_t n = strlen(digits);

        memset(out, 0xee, sizeof out);
        ck_assert_uint_eq(egd_encode_pid(pid, out, sizeof out), 1 + n);
        ck_assert_uint_eq(out[0], n);
        ck_assert_mem_eq(out + 1, digits, n);
        /* No NUL or anything else after the digits. */
        ck_assert_uint_eq(out[1 + n], 0xee);
}

START_TEST(test_encode_pid) {
        assert_pid(1, "1");
        assert_pid(9, "9");
        assert_pid(10, "10");
        assert_pid(12345, "12345");
        assert_pid(4194304, "4194304"); /* the largest pid_max */
        assert_pid(-1, "-1");           /* ekeyd's "no pid" */
        assert_pid(LONG_MAX, sizeof(long) == 8 ? "9223372036854775807" : "2147483647");
        assert_pid(LONG_MIN, sizeof(long) == 8 ? "-9223372036854775808" : "-2147483648");
}
END_TEST

START_TEST(test_encode_pid_short_buffer) {
        uint8_t out[8];

        /* "12345" needs 6 bytes: 6 fits exactly, 5 or fewer write nothing. */
        memset(out, 0xee, sizeof out);
        for (size_t size = 0; size < 6; size++) {
                ck_assert_uint_eq(egd_encode_pid(12345, out, size), 0);
                for (size_t i = 0; i < sizeof out; i++)
                        ck_assert_uint_eq(out[i], 0xee);
        }
        ck_assert_uint_eq(egd_encode_pid(12345, NULL, 0), 0);
        ck_assert_uint_eq(egd_encode_pid(12345, out, 6), 6);
        ck_assert_mem_eq(out, "\x05" "12345", 6);
        ck_assert_uint_eq(out[6], 0xee);
}
END_TEST

START_TEST(test_command_names) {
        ck_assert_str_eq(egd_command_to_string(EGD_GET_LEVEL), "get-level");
        ck_assert_str_eq(egd_command_to_string(EGD_READ_NONBLOCK), "read-nonblocking");
        ck_assert_str_eq(egd_command_to_string(EGD_READ_BLOCKING), "read-blocking");
        ck_assert_str_eq(egd_command_to_string(EGD_WRITE), "write-entropy");
        ck_assert_str_eq(egd_command_to_string(EGD_GET_PID), "get-pid");
        ck_assert_ptr_null(egd_command_to_string(-1));
        ck_assert_ptr_null(egd_command_to_string(INT_MIN));
        ck_assert_ptr_null(egd_command_to_string(5));
        ck_assert_ptr_null(egd_command_to_string(0xff));
        ck_assert_ptr_null(egd_command_to_string(0x100));
        ck_assert_ptr_null(egd_command_to_string(INT_MAX));
}
END_TEST

static Suite *egd_suite(void) {
        Suite *s = suite_create("egd");
        TCase *tc;

        tc = tcase_create("commands");
        tcase_add_test(tc, test_get_level);
        tcase_add_test(tc, test_read_nonblocking);
        tcase_add_test(tc, test_read_blocking);
        tcase_add_test(tc, test_read_zero);
        tcase_add_test(tc, test_write);
        tcase_add_test(tc, test_write_full_claim);
        tcase_add_test(tc, test_write_empty);
        tcase_add_test(tc, test_get_pid);
        tcase_add_test(tc, test_error_optional);
        suite_add_tcase(s, tc);

        tc = tcase_create("partial");
        tcase_add_test(tc, test_prefixes);
        tcase_add_test(tc, test_prefixes_write_every_length);
        suite_add_tcase(s, tc);

        tc = tcase_create("malformed");
        tcase_add_test(tc, test_unknown_commands);
        tcase_add_test(tc, test_write_overclaim);
        tcase_add_test(tc, test_write_overclaim_extremes);
        tcase_add_test(tc, test_error_messages_static);
        suite_add_tcase(s, tc);

        tc = tcase_create("pipelined");
        tcase_add_test(tc, test_pipelined);
        tcase_add_test(tc, test_pipelined_then_garbage);
        suite_add_tcase(s, tc);

        tc = tcase_create("replies");
        tcase_add_test(tc, test_encode_level);
        tcase_add_test(tc, test_encode_pid);
        tcase_add_test(tc, test_encode_pid_short_buffer);
        tcase_add_test(tc, test_command_names);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(egd_suite)
