/* SPDX-License-Identifier: MIT */
#pragma once

/* Reading our JSON records back: JSON is YAML's flow style, so libyaml
 * (which the configuration uses already) parses them.  Only a small,
 * regular, shallow file that is a JSON object is parsed at all. */

#include <stddef.h>
#include <yaml.h>

#include "json.h"

/* Loads the record at path into *ret_doc (the caller deletes it) and, if
 * ret_text is given, the exact text that was parsed.  -ENOENT when there
 * is none, -EBADMSG when it is not a record (see read_regular_file() and
 * json_object_text_ok()), or its top level is not an object. */
int json_record_load(const char *path, size_t max_size, unsigned max_depth, yaml_document_t *ret_doc, char **ret_text,
                     size_t *ret_size);

/* Parses text (size bytes, NUL-terminated) as json_record_load() does. */
int json_object_parse(const char *text, size_t size, unsigned max_depth, yaml_document_t *ret_doc);

/* The member key of the object map, or NULL. */
yaml_node_t *json_get(yaml_document_t *doc, yaml_node_t *map, const char *key);
/* Writes node n (from a document json_record_load() made) to j as member
 * key: records carry parts of the record they replace.  A plain scalar
 * that is not a JSON number, true, false or null is written as a string,
 * so the output is JSON whatever the input held. */
void json_copy(Json *j, const char *key, yaml_document_t *doc, yaml_node_t *n);

/* A member's text; absent, not a scalar, or JSON null give NULL. */
const char *json_get_str(yaml_document_t *doc, yaml_node_t *map, const char *key);
