/* SPDX-License-Identifier: MIT */
#pragma once

/* Strict, table-driven configuration for both programs.  A table of items
 * (dotted keys such as "entropy.timeout", a type, where the value lives in
 * the caller's struct, its range) is applied to YAML files (read with
 * libyaml) and to KEY=VALUE strings from the kernel command line.
 * Everything that is not in the table, of the wrong shape or out of range
 * is an error naming FILE:LINE:COL; the caller logs it and does nothing. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "macro.h"

#define CONF_LIST_MAX 16

typedef enum ConfType {
        CONF_BOOL,      /* bool */
        CONF_UINT,      /* unsigned, min..max */
        CONF_DURATION,  /* usec_t, min..max in usec; "30s", "500ms", "2min" */
        CONF_SIZE,      /* uint64_t bytes, min..max; "4096", "512M", "4T" (powers of 1024) */
        CONF_DOUBLE,    /* double, dmin..dmax */
        CONF_ENUM,      /* int, an index into names */
        CONF_ENUM_LIST, /* ConfEnumList: distinct names, in order */
        CONF_STRING,    /* char *, owned by the caller's struct */
        CONF_STRING_LIST, /* ConfStringList */
        CONF_MODE,      /* mode_t (as unsigned), octal such as "0660", at most 07777 */
        CONF_SECTION_LIST, /* a list of sections: an array of elements, see below */
} ConfType;

/* A list of enum values: the order is meaningful (sources are tried in it). */
typedef struct ConfEnumList {
        unsigned n;
        int items[CONF_LIST_MAX];
} ConfEnumList;

/* A list of strings (addresses, paths), owned by the caller's struct. */
typedef struct ConfStringList {
        unsigned n;
        char *items[CONF_LIST_MAX];
} ConfStringList;

void conf_string_list_clear(ConfStringList *l);
/* Adds a copy; -E2BIG past CONF_LIST_MAX. */
int conf_string_list_add(ConfStringList *l, const char *s);

typedef struct ConfItem {
        const char *key;
        ConfType type;
        size_t offset;
        uint64_t min, max;
        double dmin, dmax;
        const char *const *names; /* NULL-terminated, for CONF_ENUM(_LIST) */
        /* For CONF_STRING(_LIST): checks one value; <0 with a static
         * message in *ret_error rejects it, at its FILE:LINE:COL. */
        int (*validate)(const char *value, const char **ret_error);

        /* CONF_SECTION_LIST: each list item is a section parsed with the
         * items in sub (keys relative to the item) into one element of
         * the array at offset; the count (unsigned) is at count_offset,
         * at most max elements.  elem_init sets an element's defaults,
         * elem_done frees what it owns, elem_check (optional) rejects an
         * item as a whole (a required key missing, a name an earlier item
         * of the same list has: earlier[0..n_earlier)) with a message
         * that stays valid until the next call. */
        const struct ConfItem *sub;
        size_t n_sub;
        size_t elem_size;
        size_t count_offset;
        void (*elem_init)(void *elem);
        void (*elem_done)(void *elem);
        int (*elem_check)(const void *elem, const void *earlier, unsigned n_earlier, const char **ret_error);
} ConfItem;

typedef struct ConfParser {
        const ConfItem *items;
        size_t n_items;
        void *target;

        /* Where each item was last set ("FILE:LINE:COL"); NULL = default. */
        char **origins;

        /* The last error, "FILE:LINE:COL: message", for the caller to log. */
        char error[512];

        bool dry_run; /* checking a file before applying it */
} ConfParser;

int conf_parser_init(ConfParser *p, const ConfItem *items, size_t n_items, void *target);
void conf_parser_done(ConfParser *p);

/* Applies a YAML file.  -ENOENT if it does not exist (p->error empty);
 * -EBADMSG for anything wrong in it (p->error says what and where);
 * other -errno for I/O. */
int conf_load_yaml_file(ConfParser *p, const char *path);

/* The same for a file already in memory; path names it in errors. */
int conf_load_yaml_buffer(ConfParser *p, const char *path, const char *buf, size_t size);

/* Applies one KEY=VALUE; where names it ("/proc/cmdline:1:40").  Lists
 * are comma-separated.  -EBADMSG with p->error set. */
int conf_set(ConfParser *p, const char *key, const char *value, const char *where);

/* Prints the effective configuration as YAML, each value set by a file
 * or the command line followed by a comment naming where. */
void conf_dump(const ConfParser *p, FILE *f);

/* Frees what the elements of a CONF_SECTION_LIST own and empties it. */
void conf_section_list_clear(const ConfItem *item, void *target);

int conf_parse_duration(const char *s, usec_t *ret);
/* "30s", "1min", "500ms": the largest unit that represents d exactly. */
void conf_format_duration(usec_t d, char *buf, size_t size);
int conf_parse_bool(const char *s, bool *ret);
/* "4096", "64K", "512M", "4G", "2T" (K = 1024, as in systemd's sizes;
 * "KiB" … "TiB" too). */
int conf_parse_size(const char *s, uint64_t *ret);
/* The largest unit that represents n exactly: "4T", "512M", "100". */
void conf_format_size(uint64_t n, char *buf, size_t size);
