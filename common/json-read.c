/* SPDX-License-Identifier: MIT */
#include "fileio.h"
#include "json-read.h"
#include "json.h"

int json_object_parse(const char *text, size_t size, unsigned max_depth, yaml_document_t *ret_doc) {
        yaml_parser_t parser;
        yaml_document_t doc;
        yaml_node_t *root;
        int r;

        if (!json_object_text_ok(text, size, max_depth))
                return -EBADMSG;
        if (!yaml_parser_initialize(&parser))
                return -ENOMEM;
        yaml_parser_set_input_string(&parser, (const unsigned char *) text, size);
        r = yaml_parser_load(&parser, &doc) ? 0 : -EBADMSG;
        yaml_parser_delete(&parser);
        if (r < 0)
                return r;
        root = yaml_document_get_root_node(&doc);
        if (!root || root->type != YAML_MAPPING_NODE) {
                yaml_document_delete(&doc);
                return -EBADMSG;
        }
        *ret_doc = doc;
        return 0;
}

int json_record_load(const char *path, size_t max_size, unsigned max_depth, yaml_document_t *ret_doc, char **ret_text,
                     size_t *ret_size) {
        _cleanup_free_ char *text = NULL;
        size_t size;
        int r;

        r = read_regular_file(path, max_size, &text, &size);
        if (r < 0)
                return r;
        r = json_object_parse(text, size, max_depth, ret_doc);
        if (r < 0)
                return r;
        if (ret_text)
                *ret_text = TAKE_PTR(text);
        if (ret_size)
                *ret_size = size;
        return 0;
}

yaml_node_t *json_get(yaml_document_t *doc, yaml_node_t *map, const char *key) {
        if (!map || map->type != YAML_MAPPING_NODE)
                return NULL;
        for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
                yaml_node_t *k = yaml_document_get_node(doc, p->key);
                if (k && k->type == YAML_SCALAR_NODE && streq((const char *) k->data.scalar.value, key))
                        return yaml_document_get_node(doc, p->value);
        }
        return NULL;
}

const char *json_get_str(yaml_document_t *doc, yaml_node_t *map, const char *key) {
        yaml_node_t *n = json_get(doc, map, key);

        if (!n || n->type != YAML_SCALAR_NODE)
                return NULL;
        if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && streq((const char *) n->data.scalar.value, "null"))
                return NULL;
        return (const char *) n->data.scalar.value;
}

/* JSON's number grammar (RFC 8259): -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool json_number_ok(const char *s) {
        if (*s == '-')
                s++;
        if (*s == '0')
                s++;
        else if (*s >= '1' && *s <= '9')
                while (*s >= '0' && *s <= '9')
                        s++;
        else
                return false;
        if (*s == '.') {
                s++;
                if (!(*s >= '0' && *s <= '9'))
                        return false;
                while (*s >= '0' && *s <= '9')
                        s++;
        }
        if (*s == 'e' || *s == 'E') {
                s++;
                if (*s == '+' || *s == '-')
                        s++;
                if (!(*s >= '0' && *s <= '9'))
                        return false;
                while (*s >= '0' && *s <= '9')
                        s++;
        }
        return *s == 0;
}

void json_copy(Json *j, const char *key, yaml_document_t *doc, yaml_node_t *n) {
        if (!n) {
                json_null(j, key);
                return;
        }
        switch (n->type) {
        case YAML_MAPPING_NODE:
                json_object_begin(j, key);
                for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
                        yaml_node_t *k = yaml_document_get_node(doc, p->key);
                        if (k && k->type == YAML_SCALAR_NODE)
                                json_copy(j, (const char *) k->data.scalar.value, doc,
                                          yaml_document_get_node(doc, p->value));
                }
                json_object_end(j);
                break;
        case YAML_SEQUENCE_NODE:
                json_array_begin(j, key);
                for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++)
                        json_copy(j, NULL, doc, yaml_document_get_node(doc, *i));
                json_array_end(j);
                break;
        case YAML_SCALAR_NODE: {
                const char *v = (const char *) n->data.scalar.value;
                if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                    (streq(v, "null") || streq(v, "true") || streq(v, "false") || json_number_ok(v)))
                        json_raw(j, key, v);
                else
                        json_string(j, key, v);
                break;
        }
        default:
                json_null(j, key);
        }
}
