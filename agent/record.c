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
#include "utf8.h"

static void json_ms(Json *j, const char *key, usec_t u) {
        if (u == USEC_INFINITY)
                json_null(j, key);
        else
                json_uint(j, key, u / USEC_PER_MSEC);
}

static void json_nonempty(Json *j, const char *key, const char *s) {
        json_string(j, key, s && s[0] ? s : NULL);
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

/* The boot's timeline.  The initramfs's seed, the real root's seed and
 * firstboot each replace the record of this boot; the timeline keeps what
 * the earlier ones saw (the CRNG was ready in the initramfs, long before
 * firstboot's gate found it ready), and the runs that saw it. */
#define RUNS_MAX 16

typedef struct Timeline {
        /* CLOCK_BOOTTIME, the time since the kernel started; USEC_INFINITY
         * for not (yet) */
        usec_t agent_start, crng_ready, ssh_keys, luks;
        bool agent_start_in_initrd, crng_ready_in_initrd;
} Timeline;

typedef struct Run {
        const char *command, *result;
        bool in_initrd;
        usec_t start, end;
} Run;

static usec_t ms_get(yaml_document_t *d, yaml_node_t *map, const char *key) {
        const char *v = json_get_str(d, map, key);
        unsigned long long ms;
        char *end;

        if (!v || !(*v >= '0' && *v <= '9'))
                return USEC_INFINITY;
        errno = 0;
        ms = strtoull(v, &end, 10);
        if (errno != 0 || *end || ms > UINT64_MAX / USEC_PER_MSEC / 2)
                return USEC_INFINITY;
        return (usec_t) ms * USEC_PER_MSEC;
}

static void timeline_earliest(usec_t *at, bool *in_initrd, usec_t other, bool other_in_initrd) {
        if (other < *at) {
                *at = other;
                *in_initrd = other_in_initrd;
        }
}

/* This run's timeline, merged with the earlier record's "boot" (NULL
 * for none): the earliest start and readiness, the latest keys and
 * volumes made. */
static void timeline_build(const RecordInput *in, yaml_document_t *d, yaml_node_t *earlier, Timeline *ret) {
        const SeedOutcome *o = in->outcome;
        Timeline t = {
                .agent_start = in->start_boottime_usec ?: USEC_INFINITY,
                .agent_start_in_initrd = in->in_initrd,
                .crng_ready = o ? o->ready_boottime_usec : USEC_INFINITY,
                .crng_ready_in_initrd = in->in_initrd,
                .ssh_keys = USEC_INFINITY,
                .luks = USEC_INFINITY,
        };

        for (size_t i = 0; in->start_boottime_usec && i < in->n_keys; i++) {
                const SshKeyResult *k = &in->keys[i];
                if ((k->action == SSH_KEY_CREATED || k->action == SSH_KEY_REPLACED || k->action == SSH_KEY_REPAIRED) &&
                    (t.ssh_keys == USEC_INFINITY || in->start_boottime_usec + k->at_usec > t.ssh_keys))
                        t.ssh_keys = in->start_boottime_usec + k->at_usec;
        }
        for (size_t i = 0; i < in->n_volumes; i++)
                if (in->volumes[i].action == LUKS_ACTION_FORMATTED)
                        t.luks = now_usec(CLOCK_BOOTTIME);

        if (earlier && earlier->type == YAML_MAPPING_NODE) {
                timeline_earliest(&t.agent_start, &t.agent_start_in_initrd, ms_get(d, earlier, "agent_start_ms"),
                                  streq_ptr(json_get_str(d, earlier, "agent_start_in_initrd"), "true"));
                timeline_earliest(&t.crng_ready, &t.crng_ready_in_initrd, ms_get(d, earlier, "crng_ready_ms"),
                                  streq_ptr(json_get_str(d, earlier, "crng_ready_in_initrd"), "true"));
                if (t.ssh_keys == USEC_INFINITY)
                        t.ssh_keys = ms_get(d, earlier, "ssh_keys_ms");
                if (t.luks == USEC_INFINITY)
                        t.luks = ms_get(d, earlier, "luks_ms");
        }
        *ret = t;
}

static void json_boot(Json *j, const Timeline *t, yaml_document_t *d, yaml_node_t *earlier, const Run *run) {
        yaml_node_t *runs = d ? json_get(d, earlier, "runs") : NULL;

        json_object_begin(j, "boot");
        json_ms(j, "agent_start_ms", t->agent_start);
        json_bool(j, "agent_start_in_initrd", t->agent_start != USEC_INFINITY && t->agent_start_in_initrd);
        json_ms(j, "crng_ready_ms", t->crng_ready);
        json_bool(j, "crng_ready_in_initrd", t->crng_ready != USEC_INFINITY && t->crng_ready_in_initrd);
        json_ms(j, "ssh_keys_ms", t->ssh_keys);
        json_ms(j, "luks_ms", t->luks);
        json_array_begin(j, "runs");
        if (runs && runs->type == YAML_SEQUENCE_NODE) {
                yaml_node_item_t *i = runs->data.sequence.items.start, *top = runs->data.sequence.items.top;
                /* The most recent ones: a boot that loops on the agent
                 * must not grow its record without bound. */
                if (top - i > RUNS_MAX - 1)
                        i = top - (RUNS_MAX - 1);
                for (; i < top; i++)
                        json_copy(j, NULL, d, yaml_document_get_node(d, *i));
        }
        json_object_begin(j, NULL);
        json_string(j, "command", run->command);
        json_bool(j, "in_initrd", run->in_initrd);
        json_string(j, "result", run->result);
        json_ms(j, "start_ms", run->start);
        json_ms(j, "end_ms", run->end);
        json_object_end(j);
        json_array_end(j);
        json_object_end(j);
}

static char *boot_id_now(void) {
        char *b = NULL;
        (void) read_boot_id(&b);
        return b;
}

/* The record at path if it is ours and from this boot. */
static int record_load_this_boot(const char *path, Record *ret) {
        _cleanup_free_ char *now = boot_id_now();
        int r = record_load(path, ret);

        if (r < 0)
                return r;
        if (!now || !streq_ptr(json_get_str(&ret->doc, ret->root, "boot_id"), now) ||
            !streq_ptr(json_get_str(&ret->doc, ret->root, "version"), "1")) {
                record_done(ret);
                *ret = (Record) {};
                return -ENOENT;
        }
        return 0;
}

static int record_format_after(const RecordInput *in, Record *earlier, char **ret, size_t *ret_len);

int record_format(const RecordInput *in, char **ret, size_t *ret_len) {
        return record_format_after(in, NULL, ret, ret_len);
}

/* earlier: the record of this boot being replaced, or NULL. */
static int record_format_after(const RecordInput *in, Record *earlier, char **ret, size_t *ret_len) {
        const SeedOutcome *o = in->outcome;
        const VirtioRng *v = in->virtio;
        char when[64] = "", boot_id[64] = "";
        _cleanup_free_ char *b = NULL;
        struct utsname u;
        Json j = {};

        /* The kernel is always the running one, even under --root. */
        (void) uname(&u);
        json_format_time(time(NULL), when, sizeof when);
        if (read_boot_id(&b) >= 0)
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
                        json_string(&j, "reason", k->reason);
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

        yaml_document_t *d = earlier ? &earlier->doc : NULL;
        yaml_node_t *eb = earlier ? json_get(d, earlier->root, "boot") : NULL;
        Timeline tl;
        Run run = {
                .command = in->command ?: "seed",
                .result = seed_result_to_string(in->result),
                .in_initrd = in->in_initrd,
                .start = in->start_boottime_usec ?: USEC_INFINITY,
                .end = now_usec(CLOCK_BOOTTIME),
        };
        timeline_build(in, d, eb, &tl);
        json_boot(&j, &tl, d, eb, &run);
        json_object_end(&j);

        return json_finish(&j, ret, ret_len);
}

/* atomic_update_file_locked()'s edit for record_write(): the record this
 * run replaces is read under the lock, so that the runs and times another
 * agent wrote a moment ago are carried over, not lost. */
static int record_edit(const char *path, char **ret, size_t *ret_size, mode_t *mode, void *userdata) {
        const RecordInput *in = userdata;
        Record earlier = {};
        int r;

        /* Anything else there (none, another boot's, not ours) is simply
         * replaced. */
        r = record_load_this_boot(path, &earlier);
        r = record_format_after(in, r >= 0 ? &earlier : NULL, ret, ret_size);
        record_done(&earlier);
        return r < 0 ? r : 1;
}

int record_write(const RecordInput *in) {
        _cleanup_free_ char *dir = strdup(in->path);
        int r;

        if (!dir)
                return -ENOMEM;
        r = mkdir_p(dirname(dir), 0755);
        if (r < 0)
                return r;
        r = atomic_update_file_locked(in->path, record_edit, (void *) in, 0644, (uid_t) -1, (gid_t) -1);
        return r < 0 ? r : 0;
}

int record_ssh_keys_made(const char *path, bool *ret) {
        Record rec = {};
        yaml_node_t *keys;
        bool made = false;
        int r;

        r = record_load_this_boot(path, &rec);
        if (r < 0)
                return r;
        keys = json_get(&rec.doc, rec.root, "ssh_keys");
        for (yaml_node_item_t *i = keys && keys->type == YAML_SEQUENCE_NODE ? keys->data.sequence.items.start : NULL;
             i && i < keys->data.sequence.items.top && !made; i++) {
                const char *action = json_get_str(&rec.doc, yaml_document_get_node(&rec.doc, *i), "action");

                made = streq_ptr(action, "created") || streq_ptr(action, "replaced");
        }
        record_done(&rec);
        *ret = made;
        return 0;
}

/* atomic_update_file_locked()'s edit for record_mark_firstboot_done();
 * userdata is the RecordInput with this run's start. */
static int record_edit_firstboot_done(const char *path, char **ret, size_t *ret_size, mode_t *mode,
                                      void *userdata) {
        const RecordInput *none = userdata;
        Record rec = {};
        yaml_node_t *eb;
        Timeline t;
        Run run = {
                .command = "firstboot",
                .result = "already-done",
                .in_initrd = none->in_initrd,
                .start = none->start_boottime_usec ?: USEC_INFINITY,
                .end = now_usec(CLOCK_BOOTTIME),
        };
        Json j = {};
        int r;

        r = record_load_this_boot(path, &rec);
        if (r < 0)
                return r;
        eb = json_get(&rec.doc, rec.root, "boot");
        timeline_build(none, &rec.doc, eb, &t);

        json_object_begin(&j, NULL);
        for (yaml_node_pair_t *p = rec.root->data.mapping.pairs.start; p < rec.root->data.mapping.pairs.top; p++) {
                yaml_node_t *k = yaml_document_get_node(&rec.doc, p->key);
                const char *key = k && k->type == YAML_SCALAR_NODE ? (const char *) k->data.scalar.value : NULL;
                if (key && !streq(key, "boot") && !streq(key, "firstboot"))
                        json_copy(&j, key, &rec.doc, yaml_document_get_node(&rec.doc, p->value));
        }
        json_string(&j, "firstboot", "already-done");
        json_boot(&j, &t, &rec.doc, eb, &run);
        json_object_end(&j);
        record_done(&rec);

        r = json_finish(&j, ret, ret_size);
        return r < 0 ? r : 1;
}

int record_mark_firstboot_done(const char *path, bool in_initrd, usec_t start_boottime_usec) {
        RecordInput none = { .start_boottime_usec = start_boottime_usec, .in_initrd = in_initrd };

        int r;

        /* No mkdir: without a record there is nothing to mark (-ENOENT). */
        r = atomic_update_file_locked(path, record_edit_firstboot_done, &none, 0644, (uid_t) -1, (gid_t) -1);
        return r < 0 ? r : 0;
}

/* The same for printing to a terminal: a planted record must not send
 * escape sequences, so control characters show as '?': C0 and DEL, and
 * C1 too (U+009B is CSI to a terminal that takes UTF-8, and "\u009b" in
 * the JSON reads back as it), as does a byte that is not UTF-8.  The
 * copies rotate through a ring, enough for every value one status line
 * prints. */
static const char *sstr(yaml_document_t *doc, yaml_node_t *map, const char *key) {
        static char ring[16][256];
        static unsigned next;
        const char *v = json_get_str(doc, map, key);
        size_t n, o = 0;
        char *out;

        if (!v)
                return NULL;
        out = ring[next++ % ELEMENTSOF(ring)];
        n = strlen(v);
        while (n > 0) {
                uint32_t c;
                size_t k = utf8_decode(v, n, &c);

                /* Whole characters only: a cut one would be no UTF-8. */
                if (o + MAX(k, (size_t) 1) > sizeof ring[0] - 1)
                        break;
                if (k == 0 || !utf8_yaml_safe(c)) {
                        out[o++] = '?';
                        k = MAX(k, (size_t) 1);
                } else {
                        memcpy(out + o, v, k);
                        o += k;
                }
                v += k;
                n -= k;
        }
        out[o] = 0;
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
        stale = boot && read_boot_id(&now) >= 0 && !streq(now, boot);
        if (ret_ready)
                *ret_ready = !stale && bool_get(&rec->doc, rec->root, "ready_after");
        if (ret_stale)
                *ret_stale = stale;
        return 0;
}

/* A key the record lists, against what is on disk now.  -ENOENT when
 * there is nothing to check (a failed key; an entry that names no host
 * key file: status reads only those, whatever a record says). */
static int key_check(const char *root, yaml_document_t *d, yaml_node_t *k, SshKeyDiskCheck *ret) {
        const char *path = json_get_str(d, k, "path"), *fp = json_get_str(d, k, "fingerprint"), *name;

        if (!path || !fp || path[0] != '/' || strstr(path, "/../"))
                return -ENOENT;
        name = strrchr(path, '/') + 1;
        if (!startswith(name, "ssh_host_") || strlen(name) < 4 || !streq(name + strlen(name) - 4, "_key"))
                return -ENOENT;
        return sshkeys_check_on_disk(root, path, fp, ret);
}

/* The record's ssh_keys with what is on disk now added to each key:
 * "on_disk", "on_disk_fingerprint", "on_disk_checked". */
static int json_ssh_keys(Json *j, const char *root, yaml_document_t *d, yaml_node_t *keys) {
        json_array_begin(j, "ssh_keys");
        for (yaml_node_item_t *i = keys->data.sequence.items.start; i < keys->data.sequence.items.top; i++) {
                yaml_node_t *k = yaml_document_get_node(d, *i);
                SshKeyDiskCheck c = {};
                int r;

                if (!k || k->type != YAML_MAPPING_NODE) {
                        json_copy(j, NULL, d, k);
                        continue;
                }
                json_object_begin(j, NULL);
                for (yaml_node_pair_t *p = k->data.mapping.pairs.start; p < k->data.mapping.pairs.top; p++) {
                        yaml_node_t *key = yaml_document_get_node(d, p->key);
                        const char *name = key && key->type == YAML_SCALAR_NODE ? (const char *) key->data.scalar.value
                                                                                : NULL;
                        /* Ours to say now, not the file's. */
                        if (name && !startswith(name, "on_disk"))
                                json_copy(j, name, d, yaml_document_get_node(d, p->value));
                }
                r = key_check(root, d, k, &c);
                if (r == -ENOMEM)
                        return r;
                json_string(j, "on_disk", r >= 0 ? ssh_key_on_disk_to_string(c.state) : NULL);
                json_string(j, "on_disk_fingerprint", r >= 0 ? c.fingerprint : NULL);
                json_string(j, "on_disk_checked", r < 0 || c.state == SSH_KEY_ON_DISK_UNKNOWN ? NULL
                                                  : c.public_only                            ? "public-key"
                                                                                             : "private-key");
                ssh_key_disk_check_done(&c);
                json_object_end(j);
        }
        json_array_end(j);
        return 0;
}

int record_print_json(const char *path, const char *root, FILE *f, bool *ret_ready, bool *ret_stale) {
        _cleanup_free_ char *text = NULL;
        yaml_node_t *keys;
        Record rec = {};
        Json j = {};
        size_t len;
        int r;

        r = record_load(path, &rec);
        if (r >= 0)
                r = record_check(&rec, ret_ready, ret_stale);
        if (r < 0) {
                record_done(&rec);
                return r;
        }
        keys = json_get(&rec.doc, rec.root, "ssh_keys");
        if (!keys || keys->type != YAML_SEQUENCE_NODE) {
                /* The bytes that were checked, not a second read of the file. */
                (void) fwrite(rec.text, 1, rec.size, f);
                record_done(&rec);
                return 0;
        }

        /* Keys listed are checked now: the record must not vouch for a
         * key another tool (cloud-init's ssh_keys, an admin) has put in
         * its place since. */
        json_object_begin(&j, NULL);
        for (yaml_node_pair_t *p = rec.root->data.mapping.pairs.start; p < rec.root->data.mapping.pairs.top && r >= 0;
             p++) {
                yaml_node_t *k = yaml_document_get_node(&rec.doc, p->key);
                const char *key = k && k->type == YAML_SCALAR_NODE ? (const char *) k->data.scalar.value : NULL;

                if (!key)
                        continue;
                if (streq(key, "ssh_keys"))
                        r = json_ssh_keys(&j, root, &rec.doc, keys);
                else
                        json_copy(&j, key, &rec.doc, yaml_document_get_node(&rec.doc, p->value));
        }
        json_object_end(&j);
        record_done(&rec);
        if (r < 0) {
                json_free(&j);
                return r;
        }
        r = json_finish(&j, &text, &len);
        if (r < 0)
                return r;
        (void) fwrite(text, 1, len, f);
        return 0;
}

/* "Timeline: agent 0.812 s (initramfs), CRNG ready 1.030 s (initramfs),
 * SSH host keys 25.210 s": since the kernel started. */
static void print_timeline(FILE *f, yaml_document_t *d, yaml_node_t *boot) {
        static const struct {
                const char *key, *label, *initrd_key;
        } steps[] = {
                { "agent_start_ms", "agent started", "agent_start_in_initrd" },
                { "crng_ready_ms", "CRNG ready", "crng_ready_in_initrd" },
                { "ssh_keys_ms", "SSH host keys written", NULL },
                { "luks_ms", "LUKS volumes formatted", NULL },
        };
        const char *sep = "    Timeline: ";

        for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
                usec_t at = ms_get(d, boot, steps[i].key);
                if (at == USEC_INFINITY)
                        continue;
                fprintf(f, "%s%s at %llu.%03llu s%s", sep, steps[i].label, (unsigned long long) (at / USEC_PER_SEC),
                        (unsigned long long) (at % USEC_PER_SEC / USEC_PER_MSEC),
                        steps[i].initrd_key && bool_get(d, boot, steps[i].initrd_key) ? " (initramfs)" : "");
                sep = ", ";
        }
        if (!streq(sep, "    Timeline: "))
                fputs(" (since the kernel started)\n", f);
}

/* "    SSH keys: ed25519 SHA256:… created", one line per key, each
 * checked against the disk: a key no longer there or replaced is never
 * shown as seedbed's. */
static int print_ssh_keys(FILE *f, const char *root, yaml_document_t *d, yaml_node_t *keys) {
        const char *label = "    SSH keys:";
        bool public_only = false;

        for (yaml_node_item_t *i = keys->data.sequence.items.start; i < keys->data.sequence.items.top; i++) {
                yaml_node_t *k = yaml_document_get_node(d, *i);
                const char *action, *fp, *reason;
                SshKeyDiskCheck c = {};
                int r;

                if (!k || k->type != YAML_MAPPING_NODE)
                        continue;
                action = strna(sstr(d, k, "action"));
                fp = strna(sstr(d, k, "fingerprint"));
                reason = sstr(d, k, "reason");
                fprintf(f, "%s %-7s ", label, strna(sstr(d, k, "type")));
                label = "             ";

                if (streq(action, "failed")) {
                        fprintf(f, "failed: %s\n", sstr(d, k, "error") ?: reason ?: "no reason recorded");
                        continue;
                }
                r = key_check(root, d, k, &c);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        fprintf(f, "%s %s (not checked: the record names no host key file)\n", fp, action);
                else
                        switch (c.state) {
                        case SSH_KEY_ON_DISK_SAME:
                                fprintf(f, "%s %s", fp, action);
                                if (reason)
                                        fprintf(f, " (%s)", reason);
                                fputc('\n', f);
                                public_only = public_only || c.public_only;
                                break;
                        case SSH_KEY_ON_DISK_REPLACED:
                                fprintf(f, "replaced by another tool: now %s (seedbed's %s, %s, is gone)\n",
                                        c.fingerprint ?: "a file that is no key seedbed reads", fp, action);
                                public_only = public_only || c.public_only;
                                break;
                        case SSH_KEY_ON_DISK_MISSING:
                                fprintf(f, "missing: seedbed's %s (%s) is no longer on disk\n", fp, action);
                                break;
                        default:
                                fprintf(f, "%s %s (not checked on disk: %s)\n", fp, action, strerror(-c.error));
                        }
                ssh_key_disk_check_done(&c);
        }
        if (public_only)
                fputs("              (private keys are root's: compared their .pub files)\n", f);
        return 0;
}

int record_print(const char *path, const char *root, FILE *f, bool *ret_ready, bool *ret_stale) {
        Record rec = {};
        yaml_document_t *d = &rec.doc;
        yaml_node_t *dev, *sources, *keys;
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

        keys = json_get(d, rec.root, "ssh_keys");
        if (keys && keys->type == YAML_SEQUENCE_NODE) {
                r = print_ssh_keys(f, root, d, keys);
                if (r < 0) {
                        record_done(&rec);
                        return r;
                }
        }

        if (sstr(d, rec.root, "firstboot")) {
                const char *fb = sstr(d, rec.root, "firstboot");
                fprintf(f, "  First boot: %s\n",
                        streq(fb, "done")           ? "done in this boot"
                        : streq(fb, "already-done") ? "already done for this instance (nothing made in this boot)"
                        : streq(fb, "incomplete")   ? "incomplete: it is tried again on the next boot"
                                                    : fb);
        }
        print_timeline(f, d, json_get(d, rec.root, "boot"));

        record_done(&rec);
        if (ret_ready)
                *ret_ready = ready;
        if (ret_stale)
                *ret_stale = stale;
        return 0;
}
