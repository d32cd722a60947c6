/* SPDX-License-Identifier: MIT */
/* The EGD codec (device/egd.c): the input is a client's byte stream,
 * parsed request after request as the server does.  Beyond not
 * crashing, the parser must be a function of the bytes alone, whatever
 * the reads cut them into: every shorter prefix of a request it accepts
 * is "incomplete" (0), never an error or another request; a request
 * takes what its command says it takes; an error is final. */
#include <errno.h>
#include <inttypes.h>

#include "egd.h"
#include "fuzz.h"

static void check_request(const uint8_t *buf, size_t n, ssize_t k, const EgdRequest *req) {
        fuzz_check(k >= 1 && (size_t) k <= n && k <= EGD_REQUEST_MAX, "took %zd of %zu bytes", k, n);
        fuzz_check(egd_command_to_string((int) req->command), "command 0x%02x has no name", (unsigned) req->command);
        fuzz_check(req->command == buf[0], "command 0x%02x from byte 0x%02x", (unsigned) req->command, buf[0]);

        switch (req->command) {
        case EGD_GET_LEVEL:
        case EGD_GET_PID:
                fuzz_check(k == 1, "took %zd bytes", k);
                break;
        case EGD_READ_NONBLOCK:
        case EGD_READ_BLOCKING:
                fuzz_check(k == 2 && req->length == buf[1], "took %zd bytes, length %u", k, req->length);
                break;
        case EGD_WRITE:
                fuzz_check(req->length == buf[3] && (size_t) k == 4U + req->length, "took %zd bytes, length %u", k,
                           req->length);
                fuzz_check(req->bits == (uint16_t) (buf[1] << 8 | buf[2]) && req->bits <= 8U * req->length,
                           "%u bits in %u bytes", req->bits, req->length);
                fuzz_check(req->data == buf + 4, "data not after the header");
                break;
        default:
                fuzz_fail("unknown command 0x%02x accepted", (unsigned) req->command);
        }

        /* Whatever a read cut the request into, the parser waits for the rest. */
        for (size_t m = 0; m < (size_t) k; m++) {
                EgdRequest part = { .command = 0xff };
                ssize_t l = egd_parse(buf, m, &part, NULL);

                fuzz_check(l == 0, "the first %zu bytes of a %zd-byte request give %zd", m, k, l);
                fuzz_check(part.command == 0xff, "an incomplete request wrote its result");
        }
}

static void check_encoders(FuzzInput *in) {
        uint8_t level[4], pid[32];
        uint32_t bits = fuzz_u32(in);
        long p = (long) ((uint64_t) fuzz_u32(in) << 32 | fuzz_u32(in));
        size_t room = fuzz_u8(in) % sizeof pid;
        char digits[32];
        size_t k;
        int d;

        fuzz_check(egd_encode_level(bits, level) == 4, "level is 4 bytes");
        fuzz_check(((uint32_t) level[0] << 24 | (uint32_t) level[1] << 16 | (uint32_t) level[2] << 8 | level[3]) == bits,
                   "level 0x%08" PRIx32 " encoded wrong", bits);

        d = snprintf(digits, sizeof digits, "%ld", p);
        memset(pid, 0xaa, sizeof pid);
        k = egd_encode_pid(p, pid, room);
        if (room < 1 + (size_t) d)
                fuzz_check(k == 0 && pid[0] == 0xaa, "pid %ld written into %zu bytes", p, room);
        else
                fuzz_check(k == 1 + (size_t) d && pid[0] == d && memcmp(pid + 1, digits, (size_t) d) == 0 &&
                                   (k == room || pid[k] == 0xaa),
                           "pid %ld encoded wrong in %zu bytes", p, room);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        FuzzInput in = { .p = data, .left = size };
        size_t off = 0;

        fuzz_setup();

        while (off < size) {
                const char *error = NULL;
                EgdRequest req = {};
                ssize_t k = egd_parse(data + off, size - off, &req, &error);

                if (k == 0) {
                        /* Incomplete: so is every shorter piece. */
                        for (size_t m = 0; m < size - off; m++)
                                fuzz_check(egd_parse(data + off, m, &req, NULL) == 0, "a prefix of %zu bytes", m);
                        break;
                }
                if (k < 0) {
                        fuzz_check(k == -EBADMSG && error && *error, "error %zd without a reason", k);
                        /* Final: decided at some length, and more bytes
                         * never undo it. */
                        for (size_t m = 0, first = SIZE_MAX; m <= size - off; m++) {
                                ssize_t l = egd_parse(data + off, m, &req, NULL);

                                if (l < 0 && first == SIZE_MAX)
                                        first = m;
                                fuzz_check(first == SIZE_MAX ? l == 0 : l == -EBADMSG,
                                           "%zu bytes give %zd, after an error at %zu", m, l, first);
                        }
                        break;
                }
                check_request(data + off, size - off, k, &req);
                off += (size_t) k;
        }

        check_encoders(&in);
        return 0;
}
