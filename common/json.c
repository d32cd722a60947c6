/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "utf8.h"

static void json_append(Json *j, const char *s, size_t n) {
        if (j->failed)
                return;
        if (j->len + n + 1 > j->alloc) {
                size_t a = j->alloc ? j->alloc : 1024;
                char *p;

                while (a < j->len + n + 1)
                        a *= 2;
                p = realloc(j->buf, a);
                if (!p) {
                        j->failed = true;
                        return;
                }
                j->buf = p;
                j->alloc = a;
        }
        memcpy(j->buf + j->len, s, n);
        j->len += n;
        j->buf[j->len] = 0;
}

static void json_appendf(Json *j, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void json_appendf(Json *j, const char *format, ...) {
        char buf[128];
        va_list ap;
        int l;

        va_start(ap, format);
        l = vsnprintf(buf, sizeof buf, format, ap);
        va_end(ap);
        if (l < 0 || (size_t) l >= sizeof buf) {
                j->failed = true;
                return;
        }
        json_append(j, buf, (size_t) l);
}

/* Records are read back with libyaml (json-read.h): what YAML would not
 * take as it is, or would fold (C1 controls, U+2028, a byte order mark),
 * is escaped, so a record reads back as written.  A byte that is not
 * UTF-8 (a hostile sysfs name) becomes U+FFFD: JSON is UTF-8. */
static void json_quoted(Json *j, const char *s) {
        size_t n = strlen(s);

        json_append(j, "\"", 1);
        while (n > 0) {
                uint32_t c;
                size_t k = utf8_decode(s, n, &c);

                if (k == 0) {
                        json_append(j, "\\ufffd", 6);
                        k = 1;
                } else if (c == '"')
                        json_append(j, "\\\"", 2);
                else if (c == '\\')
                        json_append(j, "\\\\", 2);
                else if (c == '\n')
                        json_append(j, "\\n", 2);
                else if (c == '\t')
                        json_append(j, "\\t", 2);
                else if (!utf8_yaml_safe(c))
                        /* Control bytes and DEL too: a record read from a
                         * hostile sysfs name stays one line. */
                        json_appendf(j, "\\u%04" PRIx32, c);
                else
                        json_append(j, s, k);
                s += k;
                n -= k;
        }
        json_append(j, "\"", 1);
}

/* The comma, newline and indentation before a member, and its name. */
static void json_member(Json *j, const char *key) {
        if (j->depth > 0) {
                if (!j->first[j->depth])
                        json_append(j, ",", 1);
                j->first[j->depth] = false;
                json_append(j, "\n", 1);
                for (unsigned i = 0; i < j->depth; i++)
                        json_append(j, "  ", 2);
        }
        if (key) {
                json_quoted(j, key);
                json_append(j, ": ", 2);
        }
}

static void json_open(Json *j, const char *key, char c) {
        json_member(j, key);
        json_append(j, &c, 1);
        if (j->depth + 1 >= JSON_DEPTH_MAX) {
                j->failed = true;
                return;
        }
        j->first[++j->depth] = true;
}

static void json_close(Json *j, char c) {
        bool empty;

        if (j->depth == 0) {
                j->failed = true;
                return;
        }
        empty = j->first[j->depth];
        j->depth--;
        if (!empty) {
                json_append(j, "\n", 1);
                for (unsigned i = 0; i < j->depth; i++)
                        json_append(j, "  ", 2);
        }
        json_append(j, &c, 1);
}

void json_object_begin(Json *j, const char *key) {
        json_open(j, key, '{');
}
void json_object_end(Json *j) {
        json_close(j, '}');
}
void json_array_begin(Json *j, const char *key) {
        json_open(j, key, '[');
}
void json_array_end(Json *j) {
        json_close(j, ']');
}

void json_string(Json *j, const char *key, const char *value) {
        json_member(j, key);
        if (value)
                json_quoted(j, value);
        else
                json_append(j, "null", 4);
}

void json_uint(Json *j, const char *key, uint64_t value) {
        json_member(j, key);
        json_appendf(j, "%" PRIu64, value);
}

void json_int(Json *j, const char *key, int64_t value) {
        json_member(j, key);
        json_appendf(j, "%" PRId64, value);
}

void json_double(Json *j, const char *key, double value) {
        json_member(j, key);
        if (isfinite(value))
                json_appendf(j, "%.6g", value);
        else
                json_append(j, "null", 4); /* JSON has no NaN or infinity */
}

void json_bool(Json *j, const char *key, bool value) {
        json_member(j, key);
        json_append(j, value ? "true" : "false", value ? 4 : 5);
}

void json_null(Json *j, const char *key) {
        json_member(j, key);
        json_append(j, "null", 4);
}

void json_raw(Json *j, const char *key, const char *text) {
        json_member(j, key);
        json_append(j, text, strlen(text));
}

int json_finish(Json *j, char **ret, size_t *ret_len) {
        if (j->depth != 0)
                j->failed = true;
        json_append(j, "\n", 1);
        if (j->failed) {
                json_free(j);
                return -ENOMEM;
        }
        *ret = j->buf;
        if (ret_len)
                *ret_len = j->len;
        *j = (Json) {};
        return 0;
}

void json_free(Json *j) {
        free(j->buf);
        *j = (Json) {};
}

bool json_object_text_ok(const char *s, size_t n, unsigned max_depth) {
        /* The open containers, innermost at bit depth-1: set for '['. */
        uint64_t in_array = 0;
        unsigned depth = 0;
        bool closed = false;
        char prev = 0; /* the last character outside strings, blanks aside */

        if (max_depth > 64)
                max_depth = 64; /* what in_array holds; records are far shallower */

        if (n == 0 || s[0] != '{' || memchr(s, 0, n))
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];

                if (c == '"') {
                        /* A string starts where a value or a key may: one
                         * inside a plain word would put its end, and
                         * what follows, out of step with libyaml. */
                        if (!prev || !strchr("{[,:", prev))
                                return false;
                        for (i++; i < n && s[i] != '"'; i++)
                                if (s[i] == '\\')
                                        i++;
                        if (i >= n)
                                return false;
                        prev = c;
                        continue;
                }
                if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
                        continue;
                /* libyaml reads one document and stops: what follows the
                 * object would be ignored, or a second document. */
                if (closed)
                        return false;
                if (c == '[' || c == '{') {
                        if (depth >= max_depth)
                                return false;
                        if (c == '[')
                                in_array |= UINT64_C(1) << depth;
                        else
                                in_array &= ~(UINT64_C(1) << depth);
                        depth++;
                } else if (c == ']' || c == '}') {
                        /* Only the closer of the innermost container: a
                         * count alone takes "[}" and closers past the end. */
                        if (depth == 0 || !!(in_array & (UINT64_C(1) << (depth - 1))) != (c == ']'))
                                return false;
                        if (--depth == 0)
                                closed = true;
                } else if (c == ':' && (in_array & (UINT64_C(1) << (depth - 1))))
                        /* YAML reads "[k: v]" as a list holding the mapping
                         * {k: v}, a level of nesting no bracket counts: its
                         * copy is written as "[{...}]", one level deeper,
                         * and then refused.  JSON has no ':' in an array. */
                        return false;
                else if (c != ',' && c != ':' && c != '-' && c != '+' && c != '.' &&
                         !(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z'))
                        /* No anchor (&), alias (*), tag (!), single quote,
                         * comment or block scalar: none is JSON. */
                        return false;
                prev = c;
        }
        /* An object never closed is no record (libyaml would take it). */
        return closed;
}

void json_format_time(time_t t, char *buf, size_t size) {
        struct tm tm;

        buf[0] = 0;
        if (gmtime_r(&t, &tm))
                (void) strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}
