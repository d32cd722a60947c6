/* SPDX-License-Identifier: MIT */
#pragma once

/* Small macros every file uses: cleanup attributes in the systemd style,
 * so that error paths release what they hold without goto ladders. */

#include <errno.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))
#define _pure_ __attribute__((pure))
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)
/* For a hot loop the compiler should vectorise even at -O2: gcc does
 * at -O3; clang has no per-function optimize attribute (and vectorises
 * at -O2). */
#ifdef __clang__
#define _optimize_vectorise_
#else
#define _optimize_vectorise_ __attribute__((optimize("O3")))
#endif

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Takes ownership: returns the value and leaves the variable empty, so
 * the cleanup handler of the old owner does nothing. */
#define TAKE_PTR(p)                             \
        ({                                      \
                __typeof__(p) _p_ = (p);        \
                (p) = NULL;                     \
                _p_;                            \
        })
#define TAKE_FD(fd)                             \
        ({                                      \
                int _fd_ = (fd);                \
                (fd) = -EBADF;                  \
                _fd_;                           \
        })

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Closes and returns -EBADF, so "fd = safe_close(fd)" leaves it empty.
 * Errors from close() are ignored: the fd is gone either way. */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}
static inline void closep(int *fd) {
        (void) safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f) {
        if (*f)
                (void) fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* A NULL-terminated array of strings, freed with everything in it. */
static inline char **strv_free(char **l) {
        if (l)
                for (char **i = l; *i; i++)
                        free(*i);
        free(l);
        return NULL;
}
static inline void strv_freep(char ***l) {
        strv_free(*l);
}
#define _cleanup_strv_free_ _cleanup_(strv_freep)

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}
static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return streq(a, b);
}
static inline const char *strempty(const char *s) {
        return s ? s : "";
}
static inline const char *strna(const char *s) {
        return s ? s : "n/a";
}
static inline const char *yes_no(bool b) {
        return b ? "yes" : "no";
}

/* Returns the rest of s after prefix, or NULL if s does not start with it. */
static inline const char *startswith(const char *s, const char *prefix) {
        size_t l = strlen(prefix);
        return strncmp(s, prefix, l) == 0 ? s + l : NULL;
}

/* errno as a negative return, never 0: some libc paths leave errno unset. */
static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

#define USEC_PER_SEC 1000000ULL
#define USEC_PER_MSEC 1000ULL
#define MSEC_PER_SEC 1000ULL
#define NSEC_PER_USEC 1000ULL
typedef uint64_t usec_t;
#define USEC_INFINITY ((usec_t) UINT64_MAX)

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}
