/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdio.h>

#include "egd.h"
#include "macro.h"

/* The request sizes below are the whole protocol: egd 0.9 (whose source
 * every later server copies), ekeyd and QEMU's rng-egd agree on them.
 * There is no framing beyond them, so a byte we cannot place makes the
 * rest of the stream meaningless: nothing after it can be resynchronised. */
#define EGD_WRITE_HEADER 4U /* 0x03 MM LL NN */

static const char *const egd_command_table[] = {
        [EGD_GET_LEVEL] = "get-level",
        [EGD_READ_NONBLOCK] = "read-nonblocking",
        [EGD_READ_BLOCKING] = "read-blocking",
        [EGD_WRITE] = "write-entropy",
        [EGD_GET_PID] = "get-pid",
};

const char *egd_command_to_string(int command) {
        if (command < 0 || (size_t) command >= ELEMENTSOF(egd_command_table))
                return NULL;
        return egd_command_table[command];
}

static ssize_t parse_error(const char **ret_error, const char *message) {
        if (ret_error)
                *ret_error = message;
        return -EBADMSG;
}

ssize_t egd_parse(const uint8_t *buf, size_t n, EgdRequest *ret, const char **ret_error) {
        EgdRequest r = {};
        size_t size;

        assert(buf || n == 0);
        assert(ret);

        if (n == 0)
                return 0;

        r.command = (EgdCommand) buf[0];
        switch (r.command) {

        case EGD_GET_LEVEL:
        case EGD_GET_PID:
                size = 1;
                break;

        case EGD_READ_NONBLOCK:
        case EGD_READ_BLOCKING:
                if (n < 2)
                        return 0;
                /* NN = 0 is legal and harmless: the reply is MM = 0 for
                 * the non-blocking read and nothing at all for the
                 * blocking one.  Rejecting it would cut off a client for
                 * asking for nothing, which no server we know of does. */
                r.length = buf[1];
                size = 2;
                break;

        case EGD_WRITE:
                if (n < EGD_WRITE_HEADER)
                        return 0;
                r.bits = (uint16_t) (buf[1] << 8 | buf[2]);
                r.length = buf[3];
                /* Decided on the header alone, before the data arrives:
                 * no data can make 8 * NN bits hold more, so there is no
                 * point waiting for up to 255 more bytes of a lie.  A
                 * peer that overclaims is one we would otherwise credit
                 * for entropy it never gave. */
                if (r.bits > 8U * r.length)
                        return parse_error(ret_error, "write-entropy: claims more entropy than it carries");
                if (n < EGD_WRITE_HEADER + r.length)
                        return 0;
                /* Points into buf even when NN = 0 (one past the header),
                 * so callers may memcpy() from it without a NULL check. */
                r.data = buf + EGD_WRITE_HEADER;
                size = EGD_WRITE_HEADER + r.length;
                break;

        default:
                return parse_error(ret_error, "unknown command byte (not 0x00 to 0x04)");
        }

        *ret = r;
        return (ssize_t) size;
}

size_t egd_encode_level(uint32_t bits, uint8_t out[4]) {
        assert(out);

        out[0] = (uint8_t) (bits >> 24);
        out[1] = (uint8_t) (bits >> 16);
        out[2] = (uint8_t) (bits >> 8);
        out[3] = (uint8_t) bits;
        return 4;
}

size_t egd_encode_pid(long pid, uint8_t *out, size_t size) {
        /* Room for any long in decimal: 19 digits, a sign and a NUL. */
        char digits[32];
        int k;

        assert(out || size == 0);

        /* Formatted as is, sign included: ekeyd answers "-1" when it has
         * no pid to give, and clients only print the string. */
        k = snprintf(digits, sizeof digits, "%ld", pid);
        assert(k > 0 && (size_t) k < sizeof digits);

        /* Nothing is written unless all of it fits: a truncated pid with
         * a length byte that promises more would desynchronise the
         * client's stream. */
        if (size < 1 + (size_t) k)
                return 0;

        out[0] = (uint8_t) k;
        memcpy(out + 1, digits, (size_t) k);
        return 1 + (size_t) k;
}
