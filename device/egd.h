/* SPDX-License-Identifier: MIT */
#pragma once

/* The EGD (Entropy Gathering Daemon) protocol, as QEMU's rng-egd and
 * libvirt's <backend model='egd'> speak it.  A request is one command
 * byte and its arguments:
 *   0x00             get entropy level  -> 4-byte big-endian bit count
 *   0x01 NN          read, non-blocking -> MM, then MM bytes (MM <= NN)
 *   0x02 NN          read, blocking     -> NN bytes (what QEMU sends)
 *   0x03 MM LL NN .. write NN bytes claiming MMLL bits (big-endian) -> nothing
 *   0x04             get pid            -> MM, then MM ASCII digits
 * This file is the codec only: pure functions over buffers, no I/O. */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum EgdCommand {
        EGD_GET_LEVEL = 0x00,
        EGD_READ_NONBLOCK = 0x01,
        EGD_READ_BLOCKING = 0x02,
        EGD_WRITE = 0x03,
        EGD_GET_PID = 0x04,
} EgdCommand;

/* The longest request: a write's 4-byte header and 255 bytes. */
#define EGD_REQUEST_MAX 259

typedef struct EgdRequest {
        EgdCommand command;
        uint8_t length;       /* bytes asked for (reads), bytes carried (write) */
        uint16_t bits;        /* write: entropy the client claims */
        const uint8_t *data;  /* write: the bytes, inside the parsed buffer */
} EgdRequest;

/* Parses one request at the start of buf.  Returns the bytes it takes
 * (>0), 0 when buf holds only part of a request, or -EBADMSG for a
 * request that can never become valid, with a static message naming what
 * is wrong in *ret_error (which may be NULL).  *ret is written only on
 * success; a write's data points into buf.  Reads of 0 bytes are valid;
 * a write claiming more than 8 bits per byte is refused from its 4-byte
 * header alone, an unknown command byte from itself. */
ssize_t egd_parse(const uint8_t *buf, size_t n, EgdRequest *ret, const char **ret_error);

/* Reply encoders: write into out and return the length.  The pid reply
 * is MM and then the decimal digits, at most 1 + 20 bytes; it returns 0
 * and writes nothing if size is too small for all of it.  (A read's reply
 * is the caller's: MM then MM bytes, or NN bytes, at most 1 + 255.) */
size_t egd_encode_level(uint32_t bits, uint8_t out[4]);
size_t egd_encode_pid(long pid, uint8_t *out, size_t size);

/* "get-level", "read-nonblocking", ...; NULL for an unknown byte. */
const char *egd_command_to_string(int command);
