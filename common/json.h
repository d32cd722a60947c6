/* SPDX-License-Identifier: MIT */
#pragma once

/* A small JSON writer for records and status output: builds an indented
 * document in memory.  Allocation failures are remembered and reported
 * once by json_finish(), so callers need not check every call. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define JSON_DEPTH_MAX 16

typedef struct Json {
        char *buf;
        size_t len, alloc;
        unsigned depth;
        bool first[JSON_DEPTH_MAX]; /* nothing written yet at this level */
        bool failed;
} Json;

/* key is the member name inside an object, NULL inside an array or at
 * the top. */
void json_object_begin(Json *j, const char *key);
void json_object_end(Json *j);
void json_array_begin(Json *j, const char *key);
void json_array_end(Json *j);
void json_string(Json *j, const char *key, const char *value); /* NULL gives null */
void json_uint(Json *j, const char *key, uint64_t value);
void json_int(Json *j, const char *key, int64_t value);
void json_double(Json *j, const char *key, double value);
void json_bool(Json *j, const char *key, bool value);
void json_null(Json *j, const char *key);
/* A value that is already JSON text: a number, true, false or null (the
 * caller checks; json_copy() in json-read.h does). */
void json_raw(Json *j, const char *key, const char *text);

/* A time as every record writes it, in UTC: "YYYY-MM-DDThh:mm:ssZ"
 * (buf needs JSON_TIME_MAX bytes; "" if the time cannot be broken down). */
#define JSON_TIME_MAX 32
void json_format_time(time_t t, char *buf, size_t size);

/* Hands over the NUL-terminated text (ending in a newline); -ENOMEM if
 * anything failed.  The writer is empty afterwards either way. */
int json_finish(Json *j, char **ret, size_t *ret_len);

/* Whether text could be one of our JSON records, before a parser sees
 * it: one object and nothing after it but blanks, no NUL byte, brackets
 * (outside strings) that close in order and nest no deeper than
 * max_depth (at most 64), no ':' directly inside '[', and outside strings
 * nothing but JSON's punctuation, numbers and literals.  libyaml's parser recurses without a limit and
 * takes quadratic time on deep nesting; and libyaml takes YAML, whose
 * anchors and aliases make a document a graph: one that contains itself
 * sends a reader that walks it (json_copy()) into endless recursion, a
 * few hundred bytes of nested aliases make it copy 10^20 nodes. */
bool json_object_text_ok(const char *s, size_t n, unsigned max_depth);
void json_free(Json *j);
