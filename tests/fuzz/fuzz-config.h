/* SPDX-License-Identifier: MIT */
#pragma once

/* What the agent's and the device's configuration targets share: both
 * are tables over common/conf.c, and both promise the same things. */

#include "conf.h"
#include "fuzz.h"

typedef struct FuzzConfig {
        const ConfItem *items;
        size_t n_items;
        void *(*new_target)(void); /* defaults */
        void (*free_target)(void *target);
} FuzzConfig;

/* The dump of target (conf_dump()), with the origin comments if p is
 * given, else without. */
static inline char *fuzz_config_dump(const FuzzConfig *cfg, void *target, const ConfParser *p) {
        ConfParser plain = { .items = cfg->items, .n_items = cfg->n_items, .target = target };
        char *text = NULL;
        size_t size = 0;
        FILE *f;

        if (!p) {
                plain.origins = calloc(cfg->n_items, sizeof(char *));
                if (!plain.origins)
                        abort();
                p = &plain;
        }
        f = open_memstream(&text, &size);
        if (!f)
                abort();
        conf_dump(p, f);
        if (fclose(f) != 0)
                abort();
        free(plain.origins);
        return text;
}

/* Whether two targets of the table hold the same values: what the dump
 * promises (it may print a value in another form, never another value). */
static inline bool fuzz_config_equal(const ConfItem *items, size_t n_items, const void *a, const void *b) {
        for (size_t i = 0; i < n_items; i++) {
                const ConfItem *it = &items[i];
                const uint8_t *fa = (const uint8_t *) a + it->offset, *fb = (const uint8_t *) b + it->offset;

                switch (it->type) {
                case CONF_BOOL:
                        if (*(const bool *) fa != *(const bool *) fb)
                                return false;
                        break;
                case CONF_UINT:
                case CONF_MODE:
                        if (*(const unsigned *) fa != *(const unsigned *) fb)
                                return false;
                        break;
                case CONF_DURATION:
                case CONF_SIZE:
                        if (*(const uint64_t *) fa != *(const uint64_t *) fb)
                                return false;
                        break;
                case CONF_DOUBLE:
                        if (*(const double *) fa != *(const double *) fb)
                                return false;
                        break;
                case CONF_ENUM:
                        if (*(const int *) fa != *(const int *) fb)
                                return false;
                        break;
                case CONF_ENUM_LIST:
                        if (memcmp(fa, fb, sizeof(ConfEnumList)) != 0)
                                return false;
                        break;
                case CONF_STRING:
                        if (!streq_ptr(*(char *const *) fa, *(char *const *) fb))
                                return false;
                        break;
                case CONF_STRING_LIST: {
                        const ConfStringList *la = (const void *) fa, *lb = (const void *) fb;
                        if (la->n != lb->n)
                                return false;
                        for (unsigned k = 0; k < la->n; k++)
                                if (!streq(la->items[k], lb->items[k]))
                                        return false;
                        break;
                }
                case CONF_SECTION_LIST: {
                        unsigned na = *(const unsigned *) ((const uint8_t *) a + it->count_offset),
                                 nb = *(const unsigned *) ((const uint8_t *) b + it->count_offset);
                        if (na != nb)
                                return false;
                        for (unsigned k = 0; k < na; k++)
                                if (!fuzz_config_equal(it->sub, it->n_sub, fa + k * it->elem_size, fb + k * it->elem_size))
                                        return false;
                        break;
                }
                }
        }
        return true;
}

/* dump (of target, as text) read into the defaults is target again. */
static inline void fuzz_config_check_reads_back(const FuzzConfig *cfg, void *target, const char *text,
                                                const char *dump) {
        _cleanup_free_ char *again = NULL;
        void *back = cfg->new_target();
        ConfParser q;
        int r;

        if (conf_parser_init(&q, cfg->items, cfg->n_items, back) < 0)
                abort();
        r = conf_load_yaml_buffer(&q, "dump.yaml", dump, strlen(dump));
        fuzz_check(r == 0, "the dump does not read back: %s\n--- dump:\n%s", q.error, dump);
        again = fuzz_config_dump(cfg, back, NULL);
        fuzz_check(streq(text, again) && fuzz_config_equal(cfg->items, cfg->n_items, target, back),
                   "the dump reads back as another configuration:\n--- dump:\n%s--- read back:\n%s", dump, again);
        conf_parser_done(&q);
        cfg->free_target(back);
}

/* A configuration that was taken: its dump is YAML that reads back, into
 * the defaults, as the same configuration; with the comments that say
 * where each value came from (config --dump) too. */
static inline void fuzz_config_check_dump(const FuzzConfig *cfg, void *target, const ConfParser *p) {
        _cleanup_free_ char *text = fuzz_config_dump(cfg, target, NULL), *with_origins = NULL;

        fuzz_config_check_reads_back(cfg, target, text, text);
        with_origins = fuzz_config_dump(cfg, target, p);
        fuzz_config_check_reads_back(cfg, target, text, with_origins);
}

/* The input as a configuration file. */
static inline void fuzz_config_file(const FuzzConfig *cfg, const uint8_t *data, size_t size) {
        _cleanup_free_ char *before = NULL, *after = NULL;
        void *target = cfg->new_target();
        ConfParser p;
        int r;

        if (conf_parser_init(&p, cfg->items, cfg->n_items, target) < 0)
                abort();
        before = fuzz_config_dump(cfg, target, NULL);

        r = conf_load_yaml_buffer(&p, "fuzz.yaml", (const char *) data, size);
        if (r < 0) {
                fuzz_check(r == -EBADMSG && startswith(p.error, "fuzz.yaml") && strlen(p.error) > strlen("fuzz.yaml: "),
                           "refused with %d, '%s'", r, p.error);
                after = fuzz_config_dump(cfg, target, NULL);
                fuzz_check(streq(before, after), "a refused file changed the configuration (%s)", p.error);
        } else
                fuzz_config_check_dump(cfg, target, &p);

        conf_parser_done(&p);
        cfg->free_target(target);
}
