/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <fcntl.h>
#include <libgen.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "atomic.h"
#include "fileio.h"
#include "instance.h"
#include "json-read.h"
#include "json.h"
#include "log.h"

/* The record is a few hundred bytes; anything larger is not ours. */
#define STATE_SIZE_MAX (64 * 1024)

static const char *const instance_change_table[_INSTANCE_CHANGE_MAX] = {
        [INSTANCE_SAME] = "same",
        [INSTANCE_NEW] = "new",
        [INSTANCE_UNKNOWN] = "unknown",
};

const char *instance_change_to_string(InstanceChange c) {
        if (c < 0 || c >= _INSTANCE_CHANGE_MAX)
                return NULL;
        return instance_change_table[c];
}

/* Copies n hex digits of s to out in lowercase; false on anything else. */
static bool hex_lower(const char *s, size_t n, char *out) {
        for (size_t i = 0; i < n; i++) {
                if (!isxdigit((unsigned char) s[i]))
                        return false;
                out[i] = (char) tolower((unsigned char) s[i]);
        }
        return true;
}

/* All digits one value: firmware that has no UUID to give reports
 * 00000000-… or FFFFFFFF-… (SMBIOS 2.6, 7.2.1), the same on every VM. */
static bool all_same_digit(const char *s, char d) {
        for (; *s; s++)
                if (*s != '-' && *s != d)
                        return false;
        return true;
}

bool instance_uuid_normalize(const char *s, char out[static 37]) {
        static const unsigned groups[] = { 8, 4, 4, 4, 12 };
        char buf[37];
        size_t p = 0;

        if (!s || strlen(s) != 36)
                return false;
        for (unsigned g = 0; g < ELEMENTSOF(groups); g++) {
                if (g > 0) {
                        if (s[p] != '-')
                                return false;
                        buf[p] = '-';
                        p++;
                }
                if (!hex_lower(s + p, groups[g], buf + p))
                        return false;
                p += groups[g];
        }
        buf[36] = 0;
        if (all_same_digit(buf, '0') || all_same_digit(buf, 'f'))
                return false;
        memcpy(out, buf, sizeof buf);
        return true;
}

bool instance_machine_id_normalize(const char *s, char out[static 33]) {
        char buf[33];

        /* "uninitialized" (systemd 247+) and an empty file both mean the
         * ID is made on this boot: it is not known yet. */
        if (!s || strlen(s) != 32 || !hex_lower(s, 32, buf))
                return false;
        buf[32] = 0;
        if (all_same_digit(buf, '0'))
                return false;
        memcpy(out, buf, sizeof buf);
        return true;
}

static void read_value(const char *root, const char *path, bool (*normalize)(const char *, char *), char *out) {
        _cleanup_free_ char *full = path_join_root(root, path), *line = NULL;
        int r;

        out[0] = 0;
        if (!full)
                return;
        r = read_one_line_file(full, &line);
        if (r < 0) {
                log_debug_errno(r, "Cannot read '%s', taking it as unknown: %m", full);
                return;
        }
        strstrip_trailing(line);
        if (!normalize(line, out)) {
                out[0] = 0;
                log_debug("'%s' holds no usable value, taking it as unknown.", full);
        }
}

void instance_id_read(const char *root, InstanceId *ret) {
        InstanceId id = {};

        /* Under --root both come from the tree: an image tool or a test
         * speaks about that system, not the one it runs on. */
        read_value(root, "/sys/class/dmi/id/product_uuid", instance_uuid_normalize, id.product_uuid);
        read_value(root, "/etc/machine-id", instance_machine_id_normalize, id.machine_id);
        *ret = id;
}

InstanceChange instance_compare(const InstanceId *recorded, const InstanceId *current) {
        bool compared = false;

        if (!recorded)
                return INSTANCE_UNKNOWN;
        if (recorded->product_uuid[0] && current->product_uuid[0]) {
                if (!streq(recorded->product_uuid, current->product_uuid))
                        return INSTANCE_NEW;
                compared = true;
        }
        if (recorded->machine_id[0] && current->machine_id[0]) {
                if (!streq(recorded->machine_id, current->machine_id))
                        return INSTANCE_NEW;
                compared = true;
        }
        return compared ? INSTANCE_SAME : INSTANCE_UNKNOWN;
}

static MachineIdFile machine_id_file_read(const char *root) {
        _cleanup_free_ char *path = path_join_root(root, "/etc/machine-id"), *line = NULL;
        char id[33];
        int r;

        if (!path)
                return MACHINE_ID_OTHER;
        r = read_one_line_file(path, &line);
        if (r == -ENOENT)
                return MACHINE_ID_MISSING;
        if (r < 0)
                return MACHINE_ID_OTHER;
        strstrip_trailing(line);
        if (line[strspn(line, " \t")] == 0)
                return MACHINE_ID_EMPTY;
        if (streq(line, "uninitialized"))
                return MACHINE_ID_UNINITIALIZED;
        return instance_machine_id_normalize(line, id) ? MACHINE_ID_SET : MACHINE_ID_OTHER;
}

/* Whether path is the root of a mount (a file bind-mounted over it). */
static bool is_mount_root(const char *path, const char *parent) {
        struct statx sx, px;

        if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_BASIC_STATS, &sx) < 0)
                return false;
        if (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
                return sx.stx_attributes & STATX_ATTR_MOUNT_ROOT;
        /* Before Linux 5.8: systemd's transient ID comes from /run (a
         * tmpfs), so the file is on another device than its directory. */
        if (statx(AT_FDCWD, parent, AT_NO_AUTOMOUNT, STATX_BASIC_STATS, &px) < 0)
                return false;
        return sx.stx_dev_major != px.stx_dev_major || sx.stx_dev_minor != px.stx_dev_minor;
}

/* Whether path changed after the kernel started: its ctime against the
 * boot's start in wall-clock time, taken now (as /proc/stat's btime is),
 * so a clock set backwards since then still compares right.  A clock
 * stepped forwards between the write and now hides the write: then the
 * machine counts as one that booted before, the side that changes
 * nothing. */
static bool changed_this_boot(const char *path) {
        struct stat st;
        usec_t boot_start, ctime;

        if (stat(path, &st) < 0)
                return false;
        boot_start = now_usec(CLOCK_REALTIME) - now_usec(CLOCK_BOOTTIME);
        ctime = (usec_t) st.st_ctim.tv_sec * USEC_PER_SEC + (usec_t) st.st_ctim.tv_nsec / 1000;
        return ctime >= boot_start;
}

void first_boot_facts_read(const char *root, FirstBootFacts *ret) {
        FirstBootFacts f = {
                .this_system = !root || streq(root, "/"),
                .machine_id = machine_id_file_read(root),
        };

        /* Under --root (an installer writing a target) this system's /run
         * and mounts say nothing about the tree. */
        if (f.this_system) {
                f.flag = access("/run/systemd/first-boot", F_OK) >= 0;
                f.machine_id_mounted = is_mount_root("/etc/machine-id", "/etc");
                f.machine_id_this_boot = changed_this_boot("/etc/machine-id");
        }
        *ret = f;
}

/* systemd decides the same question in PID 1, and has changed its mind
 * across versions (machine-id(5), "FIRST BOOT SEMANTICS"):
 *  - a missing /etc/machine-id is a first boot in every version;
 *    "uninitialized" is one since 247 (older versions treat it as a
 *    malformed ID);
 *  - an empty file is not a first boot for ConditionFirstBoot= (units
 *    with it do not run, presets are not applied), but the ID is not
 *    committed either: systemd bind-mounts a transient one over the file
 *    and systemd-machine-id-commit.service writes it later;
 *  - PID 1 touches /run/systemd/first-boot when it decided on a first
 *    boot, and then writes "uninitialized" and mounts the transient ID
 *    over the file, so by the time we run the file itself reads as set.
 *  - an empty file on a root mounted read-write from the start (the
 *    kernel's "rw", not a bootloader's "ro"): PID 1 writes the new ID into
 *    it at once, before any unit runs, and leaves no other trace.
 * For host keys the question is whether the image has ever run as a
 * machine with an identity of its own.  Until an ID is committed it has
 * not, whatever systemd calls it: so the flag, the mount (seedbed-
 * firstboot.service runs before the commit), an ID written in this very
 * boot, and a file that holds no ID all count.  A file holding something else is not treated as a first
 * boot: systemd does not, and on this system the mount check sees the
 * ID it replaces it with. */
bool first_boot_decide(const FirstBootFacts *f) {
        if (f->this_system && (f->flag || f->machine_id_mounted || f->machine_id_this_boot))
                return true;
        switch (f->machine_id) {
        case MACHINE_ID_MISSING:
        case MACHINE_ID_EMPTY:
        case MACHINE_ID_UNINITIALIZED:
                return true;
        default:
                return false;
        }
}

void instance_state_done(InstanceState *s) {
        for (size_t i = 0; i < s->n_keys; i++) {
                InstanceKey *k = &s->keys[i];
                free(k->type);
                free(k->path);
                free(k->fingerprint);
                free(k->created);
                free(k->reason);
        }
        *s = (InstanceState) {};
}

const InstanceKey *instance_state_find_key(const InstanceState *s, const char *fingerprint) {
        if (!s || !fingerprint)
                return NULL;
        for (size_t i = 0; i < s->n_keys; i++)
                if (streq_ptr(s->keys[i].fingerprint, fingerprint))
                        return &s->keys[i];
        return NULL;
}

static void json_nonempty(Json *j, const char *key, const char *s) {
        json_string(j, key, s && s[0] ? s : NULL);
}

static void format_time(time_t t, char *buf, size_t size) {
        struct tm tm;

        buf[0] = 0;
        if (gmtime_r(&t, &tm))
                (void) strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int instance_state_format(const InstanceState *s, time_t when, char **ret, size_t *ret_len) {
        char now[64];
        Json j = {};

        format_time(when ? when : time(NULL), now, sizeof now);

        json_object_begin(&j, NULL);
        json_uint(&j, "version", INSTANCE_STATE_VERSION);
        json_string(&j, "time", now);
        json_object_begin(&j, "instance");
        json_nonempty(&j, "product_uuid", s->id.product_uuid);
        json_nonempty(&j, "machine_id", s->id.machine_id);
        json_object_end(&j);
        json_array_begin(&j, "keys");
        for (size_t i = 0; i < s->n_keys; i++) {
                const InstanceKey *k = &s->keys[i];

                json_object_begin(&j, NULL);
                json_string(&j, "type", k->type);
                json_string(&j, "path", k->path);
                json_uint(&j, "bits", k->bits);
                json_string(&j, "fingerprint", k->fingerprint);
                json_string(&j, "created", k->created);
                if (k->crng_ready < 0)
                        json_null(&j, "crng_ready");
                else
                        json_bool(&j, "crng_ready", k->crng_ready > 0);
                json_string(&j, "reason", k->reason);
                json_object_end(&j);
        }
        json_array_end(&j);
        json_object_end(&j);

        return json_finish(&j, ret, ret_len);
}

int instance_state_save(const char *path, const InstanceState *s) {
        _cleanup_free_ char *dir = strdup(path), *text = NULL;
        size_t len;
        int r;

        if (!dir)
                return -ENOMEM;
        r = instance_state_format(s, 0, &text, &len);
        if (r < 0)
                return r;
        r = mkdir_p(dirname(dir), 0755);
        if (r < 0)
                return r;
        return atomic_write_file(path, text, len, 0644, (uid_t) -1, (gid_t) -1);
}

/* Reading.  JSON is YAML's flow style, so libyaml reads the record as it
 * reads the seed record: only a small regular file, never through a link
 * or a FIFO someone left in its place (read_regular_file()). */


static int strdup_nonnull(const char *s, char **ret) {
        if (!s) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int state_parse_key(yaml_document_t *doc, yaml_node_t *n, InstanceKey *k) {
        const char *type = json_get_str(doc, n, "type"), *fp = json_get_str(doc, n, "fingerprint"),
                   *bits = json_get_str(doc, n, "bits"), *ready = json_get_str(doc, n, "crng_ready");
        unsigned long b;
        char *end;

        if (!type || !fp || !bits || !startswith(fp, "SHA256:"))
                return -EBADMSG;
        errno = 0;
        b = strtoul(bits, &end, 10);
        if (errno != 0 || *end || b > 65536)
                return -EBADMSG;
        k->bits = (unsigned) b;
        k->crng_ready = !ready ? -1 : streq(ready, "true") ? 1 : streq(ready, "false") ? 0 : -2;
        if (k->crng_ready == -2)
                return -EBADMSG;
        if (strdup_nonnull(type, &k->type) < 0 || strdup_nonnull(fp, &k->fingerprint) < 0 ||
            strdup_nonnull(json_get_str(doc, n, "path"), &k->path) < 0 ||
            strdup_nonnull(json_get_str(doc, n, "created"), &k->created) < 0 ||
            strdup_nonnull(json_get_str(doc, n, "reason"), &k->reason) < 0)
                return -ENOMEM;
        return 0;
}

static int state_parse(yaml_document_t *doc, InstanceState *s) {
        yaml_node_t *root = yaml_document_get_root_node(doc), *inst, *keys;
        const char *uuid, *mid;
        int r;

        if (!root || root->type != YAML_MAPPING_NODE)
                return -EBADMSG;
        if (!streq_ptr(json_get_str(doc, root, "version"), "1"))
                return -EBADMSG;

        /* A value we cannot read back is not one we wrote. */
        inst = json_get(doc, root, "instance");
        if (!inst || inst->type != YAML_MAPPING_NODE)
                return -EBADMSG;
        uuid = json_get_str(doc, inst, "product_uuid");
        mid = json_get_str(doc, inst, "machine_id");
        if (uuid && !instance_uuid_normalize(uuid, s->id.product_uuid))
                return -EBADMSG;
        if (mid && !instance_machine_id_normalize(mid, s->id.machine_id))
                return -EBADMSG;

        keys = json_get(doc, root, "keys");
        if (!keys)
                return 0;
        if (keys->type != YAML_SEQUENCE_NODE)
                return -EBADMSG;
        for (yaml_node_item_t *i = keys->data.sequence.items.start; i < keys->data.sequence.items.top; i++) {
                yaml_node_t *n = yaml_document_get_node(doc, *i);

                if (s->n_keys >= INSTANCE_KEYS_MAX || !n || n->type != YAML_MAPPING_NODE)
                        return -EBADMSG;
                r = state_parse_key(doc, n, &s->keys[s->n_keys]);
                /* Counted even when half filled, so that done() frees it. */
                s->n_keys++;
                if (r < 0)
                        return r;
        }
        return 0;
}

int instance_state_load(const char *path, InstanceState *ret) {
        InstanceState s = {};
        yaml_document_t doc;
        int r;

        /* Ours nests three deep. */
        r = json_record_load(path, STATE_SIZE_MAX, 8, &doc, NULL, NULL);
        if (r < 0)
                return r;

        r = state_parse(&doc, &s);
        yaml_document_delete(&doc);
        if (r < 0) {
                instance_state_done(&s);
                return r;
        }
        *ret = s;
        return 0;
}
