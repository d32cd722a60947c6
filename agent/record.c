/* SPDX-License-Identifier: MIT */
#include <libgen.h>
#include <limits.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <yaml.h>

#include "atomic.h"
#include "fileio.h"
#include "json-read.h"
#include "json.h"
#include "record.h"

static void json_ms(Json *j, const char *key, usec_t u) {
        if (u == USEC_INFINITY)
                json_null(j, key);
        else
                json_uint(j, key, u / USEC_PER_MSEC);
}

static void json_nonempty(Json *j, const char *key, const char *s) {
        json_string(j, key, s && s[0] ? s : NULL);
}

int record_format(const RecordInput *in, char **ret, size_t *ret_len) {
        const SeedOutcome *o = in->outcome;
        const VirtioRng *v = in->virtio;
        char when[64] = "", boot_id[64] = "";
        _cleanup_free_ char *b = NULL;
        struct utsname u;
        struct tm tm;
        time_t t = time(NULL);
        Json j = {};

        /* The kernel is always the running one, even under --root. */
        (void) uname(&u);
        if (gmtime_r(&t, &tm))
                (void) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (read_one_line_file("/proc/sys/kernel/random/boot_id", &b) >= 0)
                (void) snprintf(boot_id, sizeof boot_id, "%s", b);

        json_object_begin(&j, NULL);
        json_uint(&j, "version", RECORD_VERSION);
        json_string(&j, "agent", PACKAGE_VERSION);
        json_string(&j, "kernel", u.release);
        json_nonempty(&j, "boot_id", boot_id);
        json_string(&j, "time", when);
        json_string(&j, "command", in->command ?: "seed");
        json_bool(&j, "in_initrd", in->in_initrd);
        json_string(&j, "result", seed_result_to_string(in->result));
        json_bool(&j, "ready_before", o->ready_at_start);
        json_bool(&j, "ready_after_setup", o->ready_before);
        json_bool(&j, "ready_after", o->ready_after);
        json_bool(&j, "initial_seed", o->initial_seed);
        json_uint(&j, "credited_bits", o->credited_bits);
        json_ms(&j, "elapsed_ms", o->elapsed_usec);
        json_ms(&j, "ready_ms", o->ready_usec);
        json_ms(&j, "ready_uptime_ms", o->ready_boottime_usec);
        json_ms(&j, "timeout_ms", in->config->timeout);
        json_string(&j, "on_timeout", in->config->on_timeout == ON_TIMEOUT_FAIL ? "fail" : "continue");

        json_object_begin(&j, "device");
        json_bool(&j, "found", v->found);
        json_nonempty(&j, "name", v->device);
        json_nonempty(&j, "transport", v->found ? v->transport : NULL);
        json_nonempty(&j, "driver", v->driver);
        json_nonempty(&j, "hwrng", v->hwrng);
        json_nonempty(&j, "current_before", v->current_before);
        json_nonempty(&j, "current", v->current);
        json_bool(&j, "selected", v->selected);
        json_bool(&j, "module_loaded", v->module_loaded);
        json_bool(&j, "bound_by_agent", v->bound_by_us);
        if (v->kernel_quality >= 0)
                json_uint(&j, "kernel_quality", (uint64_t) v->kernel_quality);
        else
                json_null(&j, "kernel_quality");
        json_ms(&j, "driver_wait_ms", v->wait_usec);
        json_object_end(&j);

        json_array_begin(&j, "sources");
        for (unsigned i = 0; i < o->n_sources; i++) {
                const SourceReport *s = &o->sources[i];

                json_object_begin(&j, NULL);
                json_string(&j, "name", source_kind_to_string(s->kind));
                json_string(&j, "status", source_status_to_string(s->status));
                json_nonempty(&j, "detail", s->detail);
                json_uint(&j, "bytes", s->bytes);
                json_uint(&j, "mixed_bytes", s->mixed_bytes);
                json_uint(&j, "credited_bits", s->credited_bits);
                json_uint(&j, "quality", s->quality);
                if (s->kind != SOURCE_KERNEL) {
                        json_double(&j, "min_entropy", s->min_entropy);
                        json_string(&j, "health", health_result_to_string(s->health));
                        json_uint(&j, "rct_cutoff", s->rct_cutoff);
                        json_uint(&j, "apt_cutoff", s->apt_cutoff);
                        json_bool(&j, "kernel_credit_off", s->kernel_credit_off);
                } else
                        json_ms(&j, "wait_ms", s->wait_usec);
                json_object_end(&j);
        }
        json_array_end(&j);

        if (in->have_keys) {
                json_array_begin(&j, "ssh_keys");
                for (size_t i = 0; i < in->n_keys; i++) {
                        const SshKeyResult *k = &in->keys[i];

                        json_object_begin(&j, NULL);
                        json_string(&j, "type", host_key_type_to_string(k->type));
                        json_string(&j, "action", ssh_key_action_to_string(k->action));
                        json_string(&j, "path", k->path);
                        json_string(&j, "fingerprint", k->fingerprint);
                        json_uint(&j, "bits", k->bits);
                        json_bool(&j, "crng_ready", k->crng_ready);
                        json_ms(&j, "at_ms", k->at_usec);
                        if (k->action == SSH_KEY_FAILED)
                                json_string(&j, "error", k->reason ?: strerror(-k->error));
                        json_object_end(&j);
                }
                json_array_end(&j);
        }

        if (in->have_volumes) {
                json_array_begin(&j, "luks_volumes");
                for (size_t i = 0; i < in->n_volumes; i++) {
                        const LuksResult *vol = &in->volumes[i];

                        json_object_begin(&j, NULL);
                        json_string(&j, "name", vol->name);
                        json_string(&j, "device", vol->spec);
                        json_nonempty(&j, "resolved", vol->device);
                        json_nonempty(&j, "found", vol->found);
                        json_nonempty(&j, "wiped", vol->wiped);
                        json_string(&j, "action", luks_action_to_string(vol->action));
                        json_nonempty(&j, "uuid", vol->uuid);
                        json_nonempty(&j, "key_file", vol->key_file);
                        json_bool(&j, "key_file_created", vol->key_file_created);
                        json_string(&j, "open", luks_step_to_string(vol->open));
                        json_string(&j, "crypttab", luks_step_to_string(vol->crypttab));
                        json_nonempty(&j, "error", vol->error);
                        json_object_end(&j);
                }
                json_array_end(&j);
        }
        if (in->firstboot)
                json_string(&j, "firstboot", in->firstboot);
        json_object_end(&j);

        return json_finish(&j, ret, ret_len);
}

int record_write(const RecordInput *in) {
        _cleanup_free_ char *dir = strdup(in->path), *text = NULL;
        size_t len;
        int r;

        if (!dir)
                return -ENOMEM;
        r = record_format(in, &text, &len);
        if (r < 0)
                return r;
        r = mkdir_p(dirname(dir), 0755);
        if (r < 0)
                return r;
        return atomic_write_file(in->path, text, len, 0644, (uid_t) -1, (gid_t) -1);
}

/* Reading: JSON is YAML's flow style, so libyaml reads our records too. */

/* A record is a few kilobytes; status must not be made to chew on
 * megabytes, nor on the deep nesting libyaml parses in quadratic time. */
#define RECORD_SIZE_MAX (64 * 1024)
#define RECORD_DEPTH_MAX 8

typedef struct Record {
        yaml_document_t doc;
        yaml_node_t *root;
        bool loaded;
        char *text; /* exactly what was parsed, for status --json */
        size_t size;
} Record;

static void record_done(Record *r) {
        if (r->loaded)
                yaml_document_delete(&r->doc);
        free(r->text);
}

static int record_load(const char *path, Record *ret) {
        int r = json_record_load(path, RECORD_SIZE_MAX, RECORD_DEPTH_MAX, &ret->doc, &ret->text, &ret->size);

        if (r < 0)
                return r;
        ret->loaded = true;
        ret->root = yaml_document_get_root_node(&ret->doc);
        return 0;
}


/* The same for printing to a terminal: a planted record must not send
 * escape sequences, so control bytes show as '?'.  The copies rotate
 * through a ring, enough for every value one status line prints. */
static const char *sstr(yaml_document_t *doc, yaml_node_t *map, const char *key) {
        static char ring[16][256];
        static unsigned next;
        const char *v = json_get_str(doc, map, key);
        char *out;
        size_t i;

        if (!v)
                return NULL;
        out = ring[next++ % ELEMENTSOF(ring)];
        for (i = 0; v[i] && i < sizeof ring[0] - 1; i++)
                out[i] = ((unsigned char) v[i] < 0x20 || v[i] == 0x7f) ? '?' : v[i];
        out[i] = 0;
        return out;
}

static bool bool_get(yaml_document_t *doc, yaml_node_t *map, const char *key) {
        return streq_ptr(json_get_str(doc, map, key), "true");
}

/* ready: the record says the CRNG was ready; stale: it was written in
 * another boot (a --record file kept across reboots), so says nothing
 * about this one. */
static int record_check(Record *rec, bool *ret_ready, bool *ret_stale) {
        const char *version = json_get_str(&rec->doc, rec->root, "version"), *boot = json_get_str(&rec->doc, rec->root, "boot_id");
        _cleanup_free_ char *now = NULL;
        bool stale;

        if (!streq_ptr(version, "1") || !json_get_str(&rec->doc, rec->root, "result"))
                return -EBADMSG;
        stale = boot && read_one_line_file("/proc/sys/kernel/random/boot_id", &now) >= 0 && !streq(now, boot);
        if (ret_ready)
                *ret_ready = !stale && bool_get(&rec->doc, rec->root, "ready_after");
        if (ret_stale)
                *ret_stale = stale;
        return 0;
}

int record_print_json(const char *path, FILE *f, bool *ret_ready, bool *ret_stale) {
        Record rec = {};
        int r;

        r = record_load(path, &rec);
        if (r >= 0)
                r = record_check(&rec, ret_ready, ret_stale);
        /* The bytes that were checked, not a second read of the file. */
        if (r >= 0)
                (void) fwrite(rec.text, 1, rec.size, f);
        record_done(&rec);
        return r;
}

int record_print(const char *path, FILE *f, bool *ret_ready, bool *ret_stale) {
        Record rec = {};
        yaml_document_t *d = &rec.doc;
        yaml_node_t *dev, *sources;
        const char *ready_ms;
        bool ready, stale;
        int r;

        r = record_load(path, &rec);
        if (r >= 0)
                r = record_check(&rec, &ready, &stale);
        if (r < 0) {
                record_done(&rec);
                return r;
        }

        ready_ms = sstr(d, rec.root, "ready_ms");
        fprintf(f, "        CRNG: %s", ready ? "ready" : "NOT ready");
        if (bool_get(d, rec.root, "ready_after_setup"))
                fprintf(f, " (%s; %s)",
                        bool_get(d, rec.root, "ready_before") ? "already at start"
                                                              : "once the driver was loaded: the kernel credits it",
                        bool_get(d, rec.root, "initial_seed") ? "a host sample was mixed in without credit"
                                                              : "no host sample was available");
        else if (ready)
                fprintf(f, " (seeded: %s bits credited, ready after %s ms)", strna(sstr(d, rec.root, "credited_bits")),
                        strna(ready_ms));
        fputc('\n', f);
        fprintf(f, "      Result: %s\n", strna(sstr(d, rec.root, "result")));
        if (stale)
                fprintf(f, "        Boot: an earlier one (boot ID %s): this record says nothing about now\n",
                        strna(sstr(d, rec.root, "boot_id")));
        fprintf(f, "      Kernel: %s%s\n", strna(sstr(d, rec.root, "kernel")),
                bool_get(d, rec.root, "in_initrd") ? " (in the initramfs)" : "");
        fprintf(f, "        Time: %s (took %s ms, timeout %s ms, on-timeout %s)\n", strna(sstr(d, rec.root, "time")),
                strna(sstr(d, rec.root, "elapsed_ms")), strna(sstr(d, rec.root, "timeout_ms")),
                strna(sstr(d, rec.root, "on_timeout")));

        dev = json_get(d, rec.root, "device");
        if (bool_get(d, dev, "found"))
                fprintf(f, "      Device: %s on %s, driver %s, hwrng %s%s\n", strna(sstr(d, dev, "name")),
                        strna(sstr(d, dev, "transport")), sstr(d, dev, "driver") ?: "none",
                        strna(sstr(d, dev, "hwrng")),
                        bool_get(d, dev, "selected") ? " (selected by seedbed)" : "");
        else
                fprintf(f, "      Device: no virtio-rng device\n");
        if (sstr(d, dev, "current"))
                fprintf(f, "       hwrng: %s is current, kernel credits quality %s/1024\n",
                        sstr(d, dev, "current"), strna(sstr(d, dev, "kernel_quality")));

        sources = json_get(d, rec.root, "sources");
        if (sources && sources->type == YAML_SEQUENCE_NODE) {
                const char *label = "     Sources:";
                for (yaml_node_item_t *i = sources->data.sequence.items.start; i < sources->data.sequence.items.top; i++) {
                        yaml_node_t *s = yaml_document_get_node(d, *i);
                        const char *detail = sstr(d, s, "detail"), *health = sstr(d, s, "health");

                        fprintf(f, "%s %-7s %-11s %s bytes read, %s bits credited", label, strna(sstr(d, s, "name")),
                                strna(sstr(d, s, "status")), strna(sstr(d, s, "bytes")),
                                strna(sstr(d, s, "credited_bits")));
                        if (health && !streq_ptr(sstr(d, s, "bytes"), "0"))
                                fprintf(f, ", health %s", health);
                        if (detail)
                                fprintf(f, " (%s)", detail);
                        fputc('\n', f);
                        label = "             ";
                }
        }

        record_done(&rec);
        if (ret_ready)
                *ret_ready = ready;
        if (ret_stale)
                *ret_stale = stale;
        return 0;
}
