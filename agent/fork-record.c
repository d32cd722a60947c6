/* SPDX-License-Identifier: MIT */
#include <libgen.h>

#include "atomic.h"
#include "fileio.h"
#include "fork-record.h"
#include "json-read.h"
#include "log.h"

#define FORK_RECORD_SIZE_MAX (1024 * 1024)
#define FORK_RECORD_DEPTH_MAX 6

/* The old record's events, as its sequence node, or NULL. */
static yaml_node_t *old_events(yaml_document_t *doc) {
        yaml_node_t *root = yaml_document_get_root_node(doc), *events;

        if (!root || root->type != YAML_MAPPING_NODE || !streq_ptr(json_get_str(doc, root, "version"), "1"))
                return NULL;
        events = json_get(doc, root, "events");
        return events && events->type == YAML_SEQUENCE_NODE ? events : NULL;
}

static void event_write(Json *j, const ForkEvent *e) {
        char when[JSON_TIME_MAX];

        json_format_time(e->time, when, sizeof when);
        json_object_begin(j, NULL);
        json_string(j, "time", when[0] ? when : NULL);
        json_string(j, "boot_id", e->boot_id);
        json_uint(j, "uptime_ms", e->uptime_ms);
        json_bool(j, "crng_ready", e->crng_ready);
        json_uint(j, "credited_bits", e->credited_bits);
        json_bool(j, "reseeded", e->reseeded);
        json_string(j, "ssh", e->ssh);
        json_string(j, "result", e->result);
        json_array_begin(j, "keys");
        for (size_t i = 0; i < e->n_keys; i++) {
                json_object_begin(j, NULL);
                json_string(j, "type", e->keys[i].type);
                json_string(j, "previous", e->keys[i].previous);
                json_string(j, "new", e->keys[i].now);
                json_object_end(j);
        }
        json_array_end(j);
        json_string(j, "sshd", e->sshd);
        json_object_end(j);
}

int fork_record_format(const char *path, const ForkEvent *e, char **ret, size_t *ret_len, int *ret_kept) {
        yaml_document_t doc;
        yaml_node_t *events = NULL;
        bool loaded;
        int r, kept = 0;
        Json j = {};

        r = json_record_load(path, FORK_RECORD_SIZE_MAX, FORK_RECORD_DEPTH_MAX, &doc, NULL, NULL);
        if (r == -ENOMEM)
                return r;
        loaded = r >= 0;
        if (loaded) {
                events = old_events(&doc);
                if (!events)
                        r = -EBADMSG;
        }

        json_object_begin(&j, NULL);
        json_uint(&j, "version", 1);
        json_array_begin(&j, "events");
        if (events) {
                yaml_node_item_t *start = events->data.sequence.items.start, *top = events->data.sequence.items.top;

                /* Room for the new one. */
                if (top - start > FORK_RECORD_EVENTS_MAX - 1)
                        start = top - (FORK_RECORD_EVENTS_MAX - 1);
                for (yaml_node_item_t *i = start; i < top; i++) {
                        yaml_node_t *n = yaml_document_get_node(&doc, *i);

                        /* Only objects: anything else was not written by us. */
                        if (!n || n->type != YAML_MAPPING_NODE)
                                continue;
                        json_copy(&j, NULL, &doc, n);
                        kept++;
                }
        }
        event_write(&j, e);
        json_array_end(&j);
        json_object_end(&j);
        if (loaded)
                yaml_document_delete(&doc);

        *ret_kept = r < 0 ? r : kept;
        return json_finish(&j, ret, ret_len);
}

int fork_record_append(const char *path, const ForkEvent *e) {
        _cleanup_free_ char *text = NULL, *dir = strdup(path);
        size_t len;
        int r, kept;

        if (!dir)
                return -ENOMEM;
        r = fork_record_format(path, e, &text, &len, &kept);
        if (r < 0)
                return r;
        if (kept == -EBADMSG)
                log_warning("'%s' is not a seedbed record of VM generation changes: replacing it.", path);
        else if (kept < 0 && kept != -ENOENT)
                log_warning_errno(kept, "Failed to read '%s', writing it anew: %m", path);
        r = mkdir_p(dirname(dir), 0755);
        if (r < 0)
                return r;
        return atomic_write_file_locked(path, text, len, 0644, (uid_t) -1, (gid_t) -1, true);
}
