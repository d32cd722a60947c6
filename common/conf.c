/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <yaml.h>

#include "conf.h"
#include "fileio.h"
#include "utf8.h"

/* A configuration file is a few kilobytes; anything far larger is a
 * mistake (the wrong path), not a configuration. */
#define CONF_FILE_MAX (1024 * 1024)

static int conf_error(ConfParser *p, const char *where, const char *format, ...) _printf_(3, 4);
static int conf_error(ConfParser *p, const char *where, const char *format, ...) {
        va_list ap;
        int l;

        l = snprintf(p->error, sizeof p->error, "%s: ", where);
        if (l < 0 || (size_t) l >= sizeof p->error)
                l = 0;
        va_start(ap, format);
        (void) vsnprintf(p->error + l, sizeof p->error - (size_t) l, format, ap);
        va_end(ap);
        return -EBADMSG;
}

int conf_parser_init(ConfParser *p, const ConfItem *items, size_t n_items, void *target) {
        *p = (ConfParser) {
                .items = items,
                .n_items = n_items,
                .target = target,
        };
        p->origins = calloc(n_items, sizeof(char *));
        if (!p->origins)
                return -ENOMEM;
        return 0;
}

void conf_parser_done(ConfParser *p) {
        if (p->origins)
                for (size_t i = 0; i < p->n_items; i++)
                        free(p->origins[i]);
        free(p->origins);
        p->origins = NULL;
}

static const ConfItem *conf_find(const ConfParser *p, const char *key) {
        for (size_t i = 0; i < p->n_items; i++)
                if (streq(p->items[i].key, key))
                        return &p->items[i];
        return NULL;
}

/* Is key a section, i.e. the prefix of some item's key? */
static bool conf_is_section(const ConfParser *p, const char *key) {
        size_t l = strlen(key);

        for (size_t i = 0; i < p->n_items; i++)
                if (strncmp(p->items[i].key, key, l) == 0 && p->items[i].key[l] == '.')
                        return true;
        return false;
}

int conf_parse_bool(const char *s, bool *ret) {
        static const char *const yes[] = { "true", "yes", "on", "1" };
        static const char *const no[] = { "false", "no", "off", "0" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(s, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
                if (strcasecmp(s, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}

static int parse_u64(const char *s, uint64_t *ret) {
        unsigned long long v;
        char *end;

        /* strtoull() accepts "-1" and leading blanks; a count must not. */
        if (!isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end != 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* A number and a unit, as in systemd's time spans and sizes.  The
 * first entries of a table are the ones format_scaled() prints. */
typedef struct Unit {
        const char *suffix;
        uint64_t scale;
        bool print; /* the name used when printing this scale */
} Unit;

static const Unit duration_units[] = {
        { "h", 3600 * USEC_PER_SEC, true },
        { "min", 60 * USEC_PER_SEC, true },
        { "m", 60 * USEC_PER_SEC, false },
        { "s", USEC_PER_SEC, true },
        { "sec", USEC_PER_SEC, false },
        { "ms", USEC_PER_MSEC, true },
        { "us", 1, true },
        /* A bare number is seconds. */
        { "", USEC_PER_SEC, false },
};

static const Unit size_units[] = {
        { "T", UINT64_C(1) << 40, true },
        { "TiB", UINT64_C(1) << 40, false },
        { "G", UINT64_C(1) << 30, true },
        { "GiB", UINT64_C(1) << 30, false },
        { "M", UINT64_C(1) << 20, true },
        { "MiB", UINT64_C(1) << 20, false },
        { "K", UINT64_C(1) << 10, true },
        { "KiB", UINT64_C(1) << 10, false },
        { "B", 1, false },
        { "", 1, true },
};

static int parse_scaled(const char *s, const Unit *units, size_t n_units, uint64_t *ret) {
        unsigned long long v;
        const char *unit;
        char *end;

        if (!isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        unit = end;
        while (*unit == ' ')
                unit++;
        for (size_t i = 0; i < n_units; i++)
                if (streq(unit, units[i].suffix)) {
                        if (v > UINT64_MAX / units[i].scale)
                                return -ERANGE;
                        *ret = v * units[i].scale;
                        return 0;
                }
        return -EINVAL;
}

/* The largest printed unit that represents v exactly; zero in zero_unit. */
static void format_scaled(uint64_t v, const Unit *units, size_t n_units, const char *zero_unit, char *buf,
                          size_t size) {
        if (v == 0) {
                (void) snprintf(buf, size, "0%s", zero_unit);
                return;
        }
        for (size_t i = 0; i < n_units; i++)
                if (units[i].print && v % units[i].scale == 0) {
                        (void) snprintf(buf, size, "%llu%s", (unsigned long long) (v / units[i].scale),
                                        units[i].suffix);
                        return;
                }
        (void) snprintf(buf, size, "%llu", (unsigned long long) v);
}

int conf_parse_duration(const char *s, usec_t *ret) {
        return parse_scaled(s, duration_units, ELEMENTSOF(duration_units), ret);
}

void conf_format_duration(usec_t d, char *buf, size_t size) {
        format_scaled(d, duration_units, ELEMENTSOF(duration_units), "s", buf, size);
}

int conf_parse_size(const char *s, uint64_t *ret) {
        return parse_scaled(s, size_units, ELEMENTSOF(size_units), ret);
}

void conf_format_size(uint64_t n, char *buf, size_t size) {
        format_scaled(n, size_units, ELEMENTSOF(size_units), "", buf, size);
}

static int enum_from_string(const ConfItem *item, const char *s) {
        for (int i = 0; item->names[i]; i++)
                if (streq(item->names[i], s))
                        return i;
        return -EINVAL;
}

static void enum_names_joined(const ConfItem *item, char *buf, size_t size) {
        size_t l = 0;

        buf[0] = 0;
        for (int i = 0; item->names[i] && l < size; i++) {
                int k = snprintf(buf + l, size - l, "%s%s", i > 0 ? ", " : "", item->names[i]);
                if (k < 0)
                        break;
                l += (size_t) k;
        }
}

static void *conf_field(const ConfParser *p, const ConfItem *item) {
        return (uint8_t *) p->target + item->offset;
}

static int conf_record_origin(ConfParser *p, const ConfItem *item, const char *where) {
        size_t i = (size_t) (item - p->items);
        char *o;

        if (p->dry_run)
                return 0;
        o = strdup(where);

        if (!o)
                return -ENOMEM;
        free(p->origins[i]);
        p->origins[i] = o;
        return 0;
}

/* One scalar value for a scalar item: parsed, range-checked, stored. */
static int conf_set_scalar(ConfParser *p, const ConfItem *item, const char *value, const char *where) {
        union {
                bool b;
                unsigned u;
                usec_t d;
                uint64_t z;
                double x;
                int e;
        } scratch;
        /* A dry run parses and checks into scratch space. */
        void *field = p->dry_run ? (void *) &scratch : conf_field(p, item);
        char range[64], names[256];

        if (value[0] == 0)
                return conf_error(p, where, "'%s' needs a value", item->key);

        switch (item->type) {
        case CONF_BOOL: {
                bool b;
                if (conf_parse_bool(value, &b) < 0)
                        return conf_error(p, where, "'%s' must be true or false, not '%s'", item->key, value);
                *(bool *) field = b;
                break;
        }
        case CONF_UINT: {
                uint64_t v;
                int r = parse_u64(value, &v);
                if (r == -EINVAL)
                        return conf_error(p, where, "'%s' must be a whole number, not '%s'", item->key, value);
                if (r < 0 || v < item->min || v > item->max)
                        return conf_error(p, where, "'%s' is out of range: %s (allowed %llu..%llu)", item->key,
                                          value, (unsigned long long) item->min, (unsigned long long) item->max);
                *(unsigned *) field = (unsigned) v;
                break;
        }
        case CONF_DURATION:
        case CONF_SIZE: {
                bool duration = item->type == CONF_DURATION;
                char lo[32], hi[32];
                uint64_t v;
                int r = duration ? conf_parse_duration(value, &v) : conf_parse_size(value, &v);
                if (r == -EINVAL)
                        return conf_error(p, where, "'%s' must be %s, not '%s'", item->key,
                                          duration ? "a duration such as 30s, 500ms or 2min"
                                                   : "a size such as 4096, 512M or 4T",
                                          value);
                (duration ? conf_format_duration : conf_format_size)(item->min, lo, sizeof lo);
                (duration ? conf_format_duration : conf_format_size)(item->max, hi, sizeof hi);
                if (r < 0 || v < item->min || v > item->max)
                        return conf_error(p, where, "'%s' is out of range: %s (allowed %s..%s)", item->key, value,
                                          lo, hi);
                if (duration)
                        *(usec_t *) field = v;
                else
                        *(uint64_t *) field = v;
                break;
        }
        case CONF_DOUBLE: {
                char *end;
                double v;
                errno = 0;
                v = strtod(value, &end);
                /* Decimal only: strtod() would also take "0x1p3" and "inf". */
                if (*end != 0 || end == value || strspn(value, "0123456789.eE+-") != strlen(value))
                        return conf_error(p, where, "'%s' must be a number, not '%s'", item->key, value);
                if (errno == ERANGE || !isfinite(v) || v < item->dmin || v > item->dmax) {
                        (void) snprintf(range, sizeof range, "%g..%g", item->dmin, item->dmax);
                        return conf_error(p, where, "'%s' is out of range: %s (allowed %s)", item->key, value,
                                          range);
                }
                *(double *) field = v;
                break;
        }
        case CONF_ENUM: {
                int v = enum_from_string(item, value);
                if (v < 0) {
                        enum_names_joined(item, names, sizeof names);
                        return conf_error(p, where, "'%s' must be one of %s, not '%s'", item->key, names, value);
                }
                *(int *) field = v;
                break;
        }
        case CONF_MODE: {
                char *end;
                unsigned long v;
                errno = 0;
                v = strtoul(value, &end, 8);
                if (!isdigit((unsigned char) value[0]) || *end != 0 || errno != 0 || v > 07777)
                        return conf_error(p, where, "'%s' must be an octal file mode such as 0660, not '%s'",
                                          item->key, value);
                *(unsigned *) field = (unsigned) v;
                break;
        }
        case CONF_STRING: {
                char *s, **fp = field;
                const char *why;
                if (!utf8_is_yaml_text(value))
                        return conf_error(p, where, "'%s' must be one line of printable UTF-8 text", item->key);
                if (item->validate && item->validate(value, &why) < 0)
                        return conf_error(p, where, "'%s' is invalid: '%s': %s", item->key, value, why);
                if (p->dry_run)
                        break;
                s = strdup(value);
                if (!s)
                        return -ENOMEM;
                free(*fp);
                *fp = s;
                break;
        }
        case CONF_ENUM_LIST:
        case CONF_STRING_LIST:
        case CONF_SECTION_LIST:
        default:
                return -EINVAL;
        }

        return conf_record_origin(p, item, where);
}

/* Adds one name to a list being built; duplicates are a mistake (each
 * source is tried once), so they are reported rather than folded. */
static int conf_list_add(ConfParser *p, const ConfItem *item, ConfEnumList *l, const char *value, const char *where) {
        char names[256];
        int v;

        if (value[0] == 0)
                return conf_error(p, where, "'%s' has an empty item", item->key);
        v = enum_from_string(item, value);
        if (v < 0) {
                enum_names_joined(item, names, sizeof names);
                return conf_error(p, where, "'%s' items must be among %s, not '%s'", item->key, names, value);
        }
        for (unsigned i = 0; i < l->n; i++)
                if (l->items[i] == v)
                        return conf_error(p, where, "'%s' lists '%s' twice", item->key, value);
        if (l->n >= CONF_LIST_MAX)
                return conf_error(p, where, "'%s' has too many items (at most %d)", item->key, CONF_LIST_MAX);
        l->items[l->n++] = v;
        return 0;
}

void conf_string_list_clear(ConfStringList *l) {
        for (unsigned i = 0; i < l->n; i++)
                free(l->items[i]);
        *l = (ConfStringList) {};
}

int conf_string_list_add(ConfStringList *l, const char *s) {
        char *c;

        if (l->n >= CONF_LIST_MAX)
                return -E2BIG;
        c = strdup(s);
        if (!c)
                return -ENOMEM;
        l->items[l->n++] = c;
        return 0;
}

int conf_set(ConfParser *p, const char *key, const char *value, const char *where) {
        const ConfItem *item;

        p->error[0] = 0;
        item = conf_find(p, key);
        if (!item) {
                if (conf_is_section(p, key))
                        return conf_error(p, where, "'%s' is a section, not a value", key);
                return conf_error(p, where, "unknown key '%s'", key);
        }
        if (item->type == CONF_SECTION_LIST)
                return conf_error(p, where, "'%s' is a list of sections: it can be set in a file only", key);

        if (item->type == CONF_STRING_LIST) {
                ConfStringList l = {}, *field = conf_field(p, item);
                const char *s = value;
                int r = 0;

                for (;;) {
                        size_t n = strcspn(s, ",");
                        _cleanup_free_ char *one = strndup(s, n);

                        const char *why;

                        if (!one)
                                r = -ENOMEM;
                        else if (n == 0)
                                r = conf_error(p, where, "'%s' has an empty item", key);
                        else if (!utf8_is_yaml_text(one))
                                r = conf_error(p, where, "'%s' items must be one line of printable UTF-8 text", key);
                        else if (item->validate && item->validate(one, &why) < 0)
                                r = conf_error(p, where, "'%s' is invalid: '%s': %s", key, one, why);
                        else if (conf_string_list_add(&l, one) < 0)
                                r = conf_error(p, where, "'%s' has too many items (at most %d)", key, CONF_LIST_MAX);
                        if (r < 0 || s[n] == 0)
                                break;
                        s += n + 1;
                }
                if (r < 0 || p->dry_run) {
                        conf_string_list_clear(&l);
                        return r;
                }
                conf_string_list_clear(field);
                *field = l;
                return conf_record_origin(p, item, where);
        }

        if (item->type == CONF_ENUM_LIST) {
                ConfEnumList l = {};
                const char *s = value;

                /* "sources=" with nothing is an empty list: not allowed,
                 * since nothing could ever seed the pool. */
                for (;;) {
                        size_t n = strcspn(s, ",");
                        char buf[64];
                        int r;

                        if (n >= sizeof buf)
                                return conf_error(p, where, "'%s' has an item that is too long", key);
                        memcpy(buf, s, n);
                        buf[n] = 0;
                        r = conf_list_add(p, item, &l, buf, where);
                        if (r < 0)
                                return r;
                        if (s[n] == 0)
                                break;
                        s += n + 1;
                }
                *(ConfEnumList *) conf_field(p, item) = l;
                return conf_record_origin(p, item, where);
        }

        return conf_set_scalar(p, item, value, where);
}

static void mark_where(char *buf, size_t size, const char *path, yaml_mark_t m) {
        /* libyaml counts from 0; editors and compilers count from 1. */
        (void) snprintf(buf, size, "%s:%zu:%zu", path, m.line + 1, m.column + 1);
}

static const char *node_kind(const yaml_node_t *n) {
        switch (n->type) {
        case YAML_SCALAR_NODE:
                return "a single value";
        case YAML_SEQUENCE_NODE:
                return "a list";
        case YAML_MAPPING_NODE:
                return "a section of keys";
        default:
                return "nothing";
        }
}

static bool scalar_is_null(const yaml_node_t *n) {
        const char *s = (const char *) n->data.scalar.value;

        if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
                return false;
        return s[0] == 0 || streq(s, "~") || streq(s, "null") || streq(s, "Null") || streq(s, "NULL");
}

static int conf_apply_node(ConfParser *p, yaml_document_t *doc, const char *path, const char *key,
                           yaml_mark_t key_mark, yaml_node_t *node);
static int conf_apply_mapping(ConfParser *p, yaml_document_t *doc, const char *path, const char *prefix,
                              yaml_node_t *map);

static int conf_apply_mapping(ConfParser *p, yaml_document_t *doc, const char *path, const char *prefix,
                              yaml_node_t *map) {
        char where[PATH_MAX + 64];

        for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
                yaml_node_t *k = yaml_document_get_node(doc, pair->key);
                yaml_node_t *v = yaml_document_get_node(doc, pair->value);
                _cleanup_free_ char *full = NULL;
                int r;

                mark_where(where, sizeof where, path, k->start_mark);
                if (k->type != YAML_SCALAR_NODE)
                        return conf_error(p, where, "keys must be plain names, not %s", node_kind(k));
                /* "entropy.timeout: 5s" would dodge the duplicate check
                 * against a nested "entropy: {timeout: ...}". */
                if (strchr((const char *) k->data.scalar.value, '.'))
                        return conf_error(p, where, "key '%s' contains '.': nest it under its section instead",
                                          (const char *) k->data.scalar.value);

                /* libyaml keeps duplicate keys; a second 'timeout:' in one
                 * file is almost always an editing mistake. */
                for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pair; q++) {
                        yaml_node_t *qk = yaml_document_get_node(doc, q->key);
                        if (qk->type == YAML_SCALAR_NODE &&
                            streq((const char *) qk->data.scalar.value, (const char *) k->data.scalar.value))
                                return conf_error(p, where, "duplicate key '%s'", (const char *) k->data.scalar.value);
                }

                if (asprintf(&full, "%s%s%s", prefix, prefix[0] ? "." : "", (const char *) k->data.scalar.value) < 0) {
                        full = NULL;
                        return -ENOMEM;
                }
                r = conf_apply_node(p, doc, path, full, k->start_mark, v);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Tags that say what the value already is; "!!binary 5s" or a local
 * "!thing" would be silently read as a plain string. */
static bool tag_ok(const yaml_node_t *n) {
        static const char *const core[] = {
                "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:seq",
                "tag:yaml.org,2002:map",
        };

        if (!n->tag)
                return true;
        for (size_t i = 0; i < ELEMENTSOF(core); i++)
                if (streq((const char *) n->tag, core[i]))
                        return true;
        return false;
}

void conf_section_list_clear(const ConfItem *item, void *target) {
        uint8_t *base = (uint8_t *) target + item->offset;
        unsigned *count = (unsigned *) ((uint8_t *) target + item->count_offset);

        for (unsigned i = 0; i < *count; i++)
                if (item->elem_done)
                        item->elem_done(base + i * item->elem_size);
        *count = 0;
}

/* A list of sections: every item checked on a scratch element first (a
 * bad item changes nothing), then the list is replaced as a whole, as
 * other lists are. */
static int conf_apply_section_list(ConfParser *p, yaml_document_t *doc, const char *path, const char *key,
                                   const ConfItem *item, yaml_node_t *node) {
        char where[PATH_MAX + 64];
        unsigned n = 0;
        _cleanup_free_ uint8_t *elems = NULL;
        int r = 0;

        mark_where(where, sizeof where, path, node->start_mark);
        if (node->type == YAML_SCALAR_NODE && scalar_is_null(node))
                ; /* "volumes:" with nothing: an empty list */
        else if (node->type != YAML_SEQUENCE_NODE)
                return conf_error(p, where, "'%s' must be a list of sections (\"- key: value\" items), not %s", key,
                                  node_kind(node));
        else {
                size_t count = (size_t) (node->data.sequence.items.top - node->data.sequence.items.start);

                if (count > item->max)
                        return conf_error(p, where, "'%s' has %zu items, at most %llu are allowed", key, count,
                                          (unsigned long long) item->max);
                elems = calloc(MAX(count, (size_t) 1), item->elem_size);
                if (!elems)
                        return -ENOMEM;

                for (yaml_node_item_t *i = node->data.sequence.items.start; i < node->data.sequence.items.top; i++) {
                        yaml_node_t *e = yaml_document_get_node(doc, *i);
                        void *elem = elems + n * item->elem_size;
                        ConfParser sub;
                        const char *why;

                        mark_where(where, sizeof where, path, e->start_mark);
                        if (e->type != YAML_MAPPING_NODE) {
                                r = conf_error(p, where, "'%s' items must be sections of keys, not %s", key,
                                               node_kind(e));
                                break;
                        }
                        if (item->elem_init)
                                item->elem_init(elem);
                        n++;
                        r = conf_parser_init(&sub, item->sub, item->n_sub, elem);
                        if (r < 0)
                                break;
                        r = conf_apply_mapping(&sub, doc, path, "", e);
                        if (r < 0)
                                (void) snprintf(p->error, sizeof p->error, "%s", sub.error);
                        conf_parser_done(&sub);
                        if (r < 0)
                                break;
                        if (item->elem_check && item->elem_check(elem, elems, n - 1, &why) < 0) {
                                r = conf_error(p, where, "'%s' item: %s", key, why);
                                break;
                        }
                }
        }

        if (r < 0 || p->dry_run) {
                for (unsigned i = 0; i < n; i++)
                        if (item->elem_done)
                                item->elem_done(elems + i * item->elem_size);
                return r;
        }

        conf_section_list_clear(item, p->target);
        if (n > 0)
                memcpy((uint8_t *) p->target + item->offset, elems, n * item->elem_size);
        *(unsigned *) ((uint8_t *) p->target + item->count_offset) = n;
        mark_where(where, sizeof where, path, node->start_mark);
        return conf_record_origin(p, item, where);
}

static int conf_apply_node(ConfParser *p, yaml_document_t *doc, const char *path, const char *key,
                           yaml_mark_t key_mark, yaml_node_t *node) {
        char where[PATH_MAX + 64];
        const ConfItem *item;

        if (!tag_ok(node)) {
                mark_where(where, sizeof where, path, node->start_mark);
                return conf_error(p, where, "'%s' has a tag this file cannot use: '%s'", key, (const char *) node->tag);
        }

        item = conf_find(p, key);
        if (!item && !conf_is_section(p, key)) {
                /* Point at the key, not its value: the key is what is wrong. */
                mark_where(where, sizeof where, path, key_mark);
                return conf_error(p, where, "unknown key '%s'", key);
        }

        mark_where(where, sizeof where, path, node->start_mark);
        if (!item) {
                if (node->type == YAML_SCALAR_NODE && scalar_is_null(node))
                        return 0; /* "entropy:" with nothing under it */
                if (node->type != YAML_MAPPING_NODE)
                        return conf_error(p, where, "'%s' must be a section of keys, not %s", key, node_kind(node));
                return conf_apply_mapping(p, doc, path, key, node);
        }

        if (item->type == CONF_SECTION_LIST)
                return conf_apply_section_list(p, doc, path, key, item, node);

        if (item->type == CONF_STRING_LIST) {
                ConfStringList l = {}, *field = conf_field(p, item);
                int r = 0;

                /* An empty list is allowed here: "egd: []" turns it off. */
                if (node->type != YAML_SEQUENCE_NODE)
                        return conf_error(p, where, "'%s' must be a list such as [a, b], not %s", key,
                                          node_kind(node));
                for (yaml_node_item_t *i = node->data.sequence.items.start; i < node->data.sequence.items.top && r >= 0; i++) {
                        yaml_node_t *e = yaml_document_get_node(doc, *i);
                        char ewhere[PATH_MAX + 64];

                        const char *why;

                        mark_where(ewhere, sizeof ewhere, path, e->start_mark);
                        if (e->type != YAML_SCALAR_NODE || scalar_is_null(e) || e->data.scalar.length == 0)
                                r = conf_error(p, ewhere, "'%s' items must be non-empty strings", key);
                        else if (!utf8_is_yaml_text((const char *) e->data.scalar.value))
                                r = conf_error(p, ewhere, "'%s' items must be one line of printable UTF-8 text", key);
                        else if (item->validate && item->validate((const char *) e->data.scalar.value, &why) < 0)
                                r = conf_error(p, ewhere, "'%s' is invalid: '%s': %s", key,
                                               (const char *) e->data.scalar.value, why);
                        else if (conf_string_list_add(&l, (const char *) e->data.scalar.value) < 0)
                                r = conf_error(p, ewhere, "'%s' has too many items (at most %d)", key, CONF_LIST_MAX);
                }
                if (r < 0 || p->dry_run) {
                        conf_string_list_clear(&l);
                        return r;
                }
                conf_string_list_clear(field);
                *field = l;
                return conf_record_origin(p, item, where);
        }

        if (item->type == CONF_ENUM_LIST) {
                ConfEnumList l = {};

                if (node->type != YAML_SEQUENCE_NODE)
                        return conf_error(p, where, "'%s' must be a list such as [a, b], not %s", key,
                                          node_kind(node));
                for (yaml_node_item_t *i = node->data.sequence.items.start; i < node->data.sequence.items.top; i++) {
                        yaml_node_t *e = yaml_document_get_node(doc, *i);
                        char ewhere[PATH_MAX + 64];
                        int r;

                        mark_where(ewhere, sizeof ewhere, path, e->start_mark);
                        if (e->type != YAML_SCALAR_NODE)
                                return conf_error(p, ewhere, "'%s' items must be names, not %s", key, node_kind(e));
                        r = conf_list_add(p, item, &l, (const char *) e->data.scalar.value, ewhere);
                        if (r < 0)
                                return r;
                }
                /* .min is the fewest items the list may have. */
                if (l.n < item->min)
                        return conf_error(p, where, "'%s' must not be empty", key);
                if (!p->dry_run)
                        *(ConfEnumList *) conf_field(p, item) = l;
                return conf_record_origin(p, item, where);
        }

        if (node->type != YAML_SCALAR_NODE)
                return conf_error(p, where, "'%s' must be a single value, not %s", key, node_kind(node));
        if (scalar_is_null(node)) {
                /* A string may be unset ("~"): back to its default, which
                 * is how conf_dump() prints an unset one. */
                if (item->type != CONF_STRING)
                        return conf_error(p, where, "'%s' needs a value", key);
                if (!p->dry_run) {
                        char **fp = conf_field(p, item);
                        *fp = mfree(*fp);
                }
                return conf_record_origin(p, item, where);
        }
        return conf_set_scalar(p, item, (const char *) node->data.scalar.value, where);
}

int conf_load_yaml_buffer(ConfParser *p, const char *path, const char *buf, size_t size) {
        yaml_parser_t parser;
        yaml_document_t doc, extra;
        yaml_node_t *root;
        char where[PATH_MAX + 64];
        int r = 0;

        p->error[0] = 0;

        /* libyaml stops at a NUL; a binary file must not parse as empty. */
        if (memchr(buf, 0, size))
                return conf_error(p, path, "not a text file (contains a NUL byte)");

        if (!yaml_parser_initialize(&parser))
                return -ENOMEM;
        yaml_parser_set_input_string(&parser, (const unsigned char *) buf, size);

        if (!yaml_parser_load(&parser, &doc)) {
                yaml_mark_t m = parser.problem_mark;
                mark_where(where, sizeof where, path, m);
                r = conf_error(p, where, "invalid YAML: %s%s%s", strempty(parser.problem),
                               parser.context ? " " : "", strempty(parser.context));
                yaml_parser_delete(&parser);
                return r;
        }

        root = yaml_document_get_root_node(&doc);
        if (root) {
                /* A second document would be silently ignored: refuse it. */
                if (!yaml_parser_load(&parser, &extra)) {
                        mark_where(where, sizeof where, path, parser.problem_mark);
                        r = conf_error(p, where, "invalid YAML: %s", strempty(parser.problem));
                } else {
                        yaml_node_t *eroot = yaml_document_get_root_node(&extra);
                        if (eroot) {
                                mark_where(where, sizeof where, path, eroot->start_mark);
                                r = conf_error(p, where, "only one YAML document is allowed in a file");
                        }
                        yaml_document_delete(&extra);
                }

                if (r >= 0) {
                        if (root->type == YAML_SCALAR_NODE && scalar_is_null(root))
                                ; /* a file with just "---" or "~" sets nothing */
                        else if (root->type != YAML_MAPPING_NODE) {
                                mark_where(where, sizeof where, path, root->start_mark);
                                r = conf_error(p, where, "the file must be a section of keys, not %s",
                                               node_kind(root));
                        } else {
                                /* Check the whole file before applying any
                                 * of it: a bad file changes nothing. */
                                p->dry_run = true;
                                r = conf_apply_mapping(p, &doc, path, "", root);
                                p->dry_run = false;
                                if (r >= 0)
                                        r = conf_apply_mapping(p, &doc, path, "", root);
                        }
                }
        }

        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
        return r;
}

int conf_load_yaml_file(ConfParser *p, const char *path) {
        _cleanup_free_ char *buf = NULL;
        size_t size;
        int r;

        p->error[0] = 0;
        r = read_full_file(path, CONF_FILE_MAX, &buf, &size);
        if (r == -EFBIG)
                return conf_error(p, path, "file is larger than %d bytes", CONF_FILE_MAX);
        if (r == -EISDIR)
                return conf_error(p, path, "is a directory, not a file");
        if (r < 0)
                return r;
        return conf_load_yaml_buffer(p, path, buf, size);
}

/* Whether s reads back as itself written plain, in a block or in a flow
 * sequence: what a file's author writes unquoted (a path, LABEL=x,
 * unix:/run/x.sock).  No indicator first, no blank, no flow indicator,
 * no ": " or " #", and not a null. */
static bool plain_ok(const char *s) {
        if (!s[0] || strchr("-?:,[]{}#&*!|>'\"%@`~", s[0]) || streq(s, "null") || streq(s, "Null") ||
            streq(s, "NULL"))
                return false;
        for (const char *c = s; *c; c++) {
                if (isalnum((unsigned char) *c) || strchr("/._+=@%-", *c))
                        continue;
                /* "unix:/run/x", not "a:" nor "a: b" nor "a:[". */
                if (*c == ':' && (isalnum((unsigned char) c[1]) || c[1] == '/'))
                        continue;
                return false;
        }
        return true;
}

/* A string as YAML: plain when it reads back so, else double-quoted.
 * Values are one line of text YAML takes as it is (conf_set_scalar()
 * refuses others), so only '"' and '\\' need escaping. */
static void conf_print_string(FILE *f, const char *s) {
        if (plain_ok(s)) {
                fputs(s, f);
                return;
        }
        fputc('"', f);
        for (; *s; s++) {
                if (*s == '"' || *s == '\\')
                        fputc('\\', f);
                fputc(*s, f);
        }
        fputc('"', f);
}

/* "%g" with as many digits as v needs to read back as itself. */
static void conf_print_double(FILE *f, double v) {
        char buf[64];

        for (int precision = 6; precision <= 17; precision++) {
                (void) snprintf(buf, sizeof buf, "%.*g", precision, v);
                if (strtod(buf, NULL) == v)
                        break;
        }
        fputs(buf, f);
}

static void conf_print_value(const ConfParser *p, const ConfItem *item, FILE *f) {
        const void *field = (const uint8_t *) p->target + item->offset;
        char buf[64];

        switch (item->type) {
        case CONF_BOOL:
                fputs(*(const bool *) field ? "true" : "false", f);
                break;
        case CONF_UINT:
                fprintf(f, "%u", *(const unsigned *) field);
                break;
        case CONF_DURATION:
                conf_format_duration(*(const usec_t *) field, buf, sizeof buf);
                fputs(buf, f);
                break;
        case CONF_SIZE:
                conf_format_size(*(const uint64_t *) field, buf, sizeof buf);
                fputs(buf, f);
                break;
        case CONF_DOUBLE:
                conf_print_double(f, *(const double *) field);
                break;
        case CONF_ENUM:
                fputs(item->names[*(const int *) field], f);
                break;
        case CONF_ENUM_LIST: {
                const ConfEnumList *l = field;
                fputc('[', f);
                for (unsigned i = 0; i < l->n; i++)
                        fprintf(f, "%s%s", i ? ", " : "", item->names[l->items[i]]);
                fputc(']', f);
                break;
        }
        case CONF_STRING: {
                const char *s = *(char *const *) field;
                if (s)
                        conf_print_string(f, s);
                else
                        fputc('~', f);
                break;
        }
        case CONF_MODE:
                fprintf(f, "\"%04o\"", *(const unsigned *) field);
                break;
        case CONF_SECTION_LIST:
                fputs("[...]", f); /* conf_dump() prints these itself */
                break;
        case CONF_STRING_LIST: {
                const ConfStringList *l = field;
                fputc('[', f);
                for (unsigned i = 0; i < l->n; i++) {
                        if (i > 0)
                                fputs(", ", f);
                        conf_print_string(f, l->items[i]);
                }
                fputc(']', f);
                break;
        }
        }
}

/* "volumes:" then each element's keys as a "- " item, one level deeper. */
static void conf_dump_section_list(const ConfParser *p, const ConfItem *item, FILE *f, size_t depth,
                                   const char *leaf, const char *origin) {
        const uint8_t *base = (const uint8_t *) p->target + item->offset;
        unsigned n = *(const unsigned *) ((const uint8_t *) p->target + item->count_offset);
        ConfParser sub = { .items = item->sub, .n_items = item->n_sub };

        fprintf(f, "%*s%s:%s", (int) (2 * depth), "", leaf, n == 0 ? " []" : "");
        if (origin)
                fprintf(f, "  # %s", origin);
        fputc('\n', f);
        for (unsigned e = 0; e < n; e++) {
                sub.target = (void *) (base + e * item->elem_size);
                for (size_t k = 0; k < item->n_sub; k++) {
                        fprintf(f, "%*s%s%s: ", (int) (2 * depth + 2), "", k == 0 ? "- " : "  ", item->sub[k].key);
                        conf_print_value(&sub, &item->sub[k], f);
                        fputc('\n', f);
                }
        }
}

void conf_dump(const ConfParser *p, FILE *f) {
        const char *prev = "";

        for (size_t i = 0; i < p->n_items; i++) {
                const char *key = p->items[i].key, *leaf, *dot;
                size_t common = 0, depth = 0;

                /* Length of the section path shared with the previous key. */
                for (size_t j = 0; key[j] && key[j] == prev[j]; j++)
                        if (key[j] == '.')
                                common = j + 1;

                /* Open the sections this key enters, indenting two spaces a level. */
                for (const char *s = key; (dot = strchr(s, '.')); s = dot + 1) {
                        if ((size_t) (dot - key) >= common)
                                fprintf(f, "%*s%.*s:\n", (int) (2 * depth), "", (int) (dot - s), s);
                        depth++;
                }
                leaf = strrchr(key, '.');
                leaf = leaf ? leaf + 1 : key;

                if (p->items[i].type == CONF_SECTION_LIST) {
                        conf_dump_section_list(p, &p->items[i], f, depth, leaf, p->origins[i]);
                        prev = key;
                        continue;
                }
                fprintf(f, "%*s%s: ", (int) (2 * depth), "", leaf);
                conf_print_value(p, &p->items[i], f);
                if (p->origins[i])
                        fprintf(f, "  # %s", p->origins[i]);
                fputc('\n', f);
                prev = key;
        }
}
