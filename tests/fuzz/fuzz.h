/* SPDX-License-Identifier: MIT */
#pragma once

/* What every fuzz target shares.  A target is one
 * LLVMFuzzerTestOneInput() over the real code, linked either with
 * libFuzzer (./configure --enable-fuzzing, "make fuzz") or with
 * replay.c, which runs it over the seed corpus and the regression inputs
 * in "make check".  A target checks more than "no crash": where the code
 * promises something (a parse is stable, a dump reads back, every fd is
 * closed) a broken promise aborts, so both drivers keep the input. */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The process's stderr before fuzz_setup() silenced the code's logging:
 * where a broken promise is reported. */
extern FILE *fuzz_stderr;

/* Every message the code logs is formatted (a format bug is a bug the
 * fuzzer should see) and written to /dev/null, unless SEEDBED_FUZZ_LOG
 * is set (to reproduce a crash).  Sanitizer reports and libFuzzer's own
 * lines do not go through stdio's stderr: they still reach fd 2.  Call
 * it first in every target; it does its work once. */
void fuzz_setup(void);

/* Reports a broken promise (what failed, if given, and why) and aborts,
 * so that libFuzzer keeps the input as a crash and the replay driver
 * fails. */
_noreturn_ _printf_(4, 5) void fuzz_fail_at(const char *file, int line, const char *what, const char *format, ...);

#define fuzz_fail(...) fuzz_fail_at(__FILE__, __LINE__, NULL, __VA_ARGS__)
#define fuzz_check(expr, ...)                                                   \
        do {                                                                    \
                if (!(expr))                                                    \
                        fuzz_fail_at(__FILE__, __LINE__, #expr, __VA_ARGS__);   \
        } while (0)

/* Structured input: fields taken from the front, zeros once it runs out
 * (libFuzzer shortens inputs; a short one is still a valid case). */
typedef struct FuzzInput {
        const uint8_t *p;
        size_t left;
} FuzzInput;

static inline size_t fuzz_take(FuzzInput *in, void *buf, size_t n) {
        size_t k = MIN(n, in->left);

        if (k > 0)
                memcpy(buf, in->p, k);
        if (k < n)
                memset((uint8_t *) buf + k, 0, n - k);
        in->p += k;
        in->left -= k;
        return k;
}

static inline uint8_t fuzz_u8(FuzzInput *in) {
        uint8_t v;
        (void) fuzz_take(in, &v, sizeof v);
        return v;
}

/* Little-endian, whatever the host. */
static inline uint16_t fuzz_u16(FuzzInput *in) {
        uint8_t b[2];
        (void) fuzz_take(in, b, sizeof b);
        return (uint16_t) (b[0] | b[1] << 8);
}

static inline uint32_t fuzz_u32(FuzzInput *in) {
        uint8_t b[4];
        (void) fuzz_take(in, b, sizeof b);
        return (uint32_t) b[0] | (uint32_t) b[1] << 8 | (uint32_t) b[2] << 16 | (uint32_t) b[3] << 24;
}

/* A NUL-terminated copy of the input, for parsers of C strings. */
static inline char *fuzz_strndup(const uint8_t *data, size_t size) {
        char *s = malloc(size + 1);

        if (!s)
                abort();
        if (size > 0)
                memcpy(s, data, size);
        s[size] = 0;
        return s;
}

/* The open fds of this process, to check that a target closed all it was
 * given.  (tests/helpers/vhost-front.h has one for Check tests: its
 * ck_assert() needs a running test.) */
unsigned fuzz_count_fds(void);
