/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <sys/stat.h>
#include <sys/timex.h>
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

/* Gives id the hash of its UUID, with the key at path (NULL: out of
 * memory), made when make and there is none, or the file there is no key.
 * 0 also when the UUID is unknown: there is nothing to hash. */
static int uuid_hash(const char *path, bool make, InstanceId *id) {
        uint8_t key[INSTANCE_KEY_SIZE];
        int r;

        if (!id->product_uuid[0])
                return 0;
        if (!path)
                return -ENOMEM;
        r = instance_key_load(path, key);
        if (r == -EBADMSG && make)
                log_notice("'%s' is not an instance key (%u bytes in a regular file that only its owner, this "
                           "user, may read): replacing it; a UUID recorded with it counts as unknown.",
                           path, INSTANCE_KEY_SIZE);
        if ((r == -ENOENT || r == -EBADMSG) && make)
                r = instance_key_make(path, r == -EBADMSG, key);
        if (r >= 0)
                r = instance_uuid_hmac(key, id->product_uuid, id->product_uuid_hmac);
        if (r >= 0)
                r = instance_key_id(key, id->product_uuid_key);
        explicit_bzero(key, sizeof key);
        if (r < 0) {
                id->product_uuid_hmac[0] = id->product_uuid_key[0] = 0;
                return r;
        }
        return 0;
}

void instance_id_read(const char *root, InstanceId *ret) {
        _cleanup_free_ char *key = path_join_root(root, INSTANCE_KEY_FILE);
        InstanceId id = {};
        int r;

        /* Under --root both come from the tree: an image tool or a test
         * speaks about that system, not the one it runs on. */
        read_value(root, "/sys/class/dmi/id/product_uuid", instance_uuid_normalize, id.product_uuid);
        read_value(root, "/etc/machine-id", instance_machine_id_normalize, id.machine_id);
        /* Said where it matters: when a record's hash is compared. */
        r = uuid_hash(key, false, &id);
        if (r < 0)
                log_debug_errno(r, "Cannot hash the SMBIOS UUID with the instance key '%s', taking its hash "
                                "as unknown: %m", strna(key));
        *ret = id;
}

int instance_key_renew(const char *root) {
        _cleanup_free_ char *path = path_join_root(root, INSTANCE_KEY_FILE);
        uint8_t key[INSTANCE_KEY_SIZE];
        int r;

        if (!path)
                return -ENOMEM;
        r = instance_key_make(path, true, key);
        explicit_bzero(key, sizeof key);
        return r;
}

/* What the UUIDs compare as. */
typedef enum UuidCheck {
        UUID_EQUAL,
        UUID_DIFFERENT,
        UUID_UNKNOWN,   /* on either side */
        UUID_UNCHECKED, /* the record's hash was made with another key than the one in place, or
                         * none is there now to hash the current UUID with */
} UuidCheck;

static UuidCheck uuid_check(const InstanceId *recorded, const InstanceId *current) {
        if (!current->product_uuid[0])
                return UUID_UNKNOWN;
        /* A record from before the UUID was hashed. */
        if (recorded->product_uuid[0])
                return streq(recorded->product_uuid, current->product_uuid) ? UUID_EQUAL : UUID_DIFFERENT;
        if (!recorded->product_uuid_hmac[0])
                return UUID_UNKNOWN;
        if (!current->product_uuid_hmac[0] || !streq(recorded->product_uuid_key, current->product_uuid_key))
                return UUID_UNCHECKED;
        return streq(recorded->product_uuid_hmac, current->product_uuid_hmac) ? UUID_EQUAL : UUID_DIFFERENT;
}

InstanceChange instance_compare(const InstanceId *recorded, const InstanceId *current, bool *ret_uuid_unchecked) {
        bool compared = false;
        UuidCheck u = recorded ? uuid_check(recorded, current) : UUID_UNKNOWN;

        if (ret_uuid_unchecked)
                *ret_uuid_unchecked = u == UUID_UNCHECKED;
        if (!recorded)
                return INSTANCE_UNKNOWN;
        if (u == UUID_DIFFERENT)
                return INSTANCE_NEW;
        if (u == UUID_EQUAL)
                compared = true;
        if (recorded->machine_id[0] && current->machine_id[0]) {
                if (!streq(recorded->machine_id, current->machine_id))
                        return INSTANCE_NEW;
                compared = true;
        }
        return compared ? INSTANCE_SAME : INSTANCE_UNKNOWN;
}

void instance_notice_uuid_unchecked(const char *root, const char *path, const InstanceId *current) {
        _cleanup_free_ char *key = path_join_root(root, INSTANCE_KEY_FILE);

        log_notice("'%s' holds the SMBIOS UUID hashed with an instance key that is %s ('%s'): taking the recorded "
                   "UUID as unknown, the machine-id decides.",
                   path, current->product_uuid_hmac[0] ? "not the one in place now" : "missing or unreadable",
                   strna(key));
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

/* mountinfo(5) writes a space, tab, newline or backslash in a path as
 * \ooo. */
static void unescape_octal(char *s) {
        char *w = s;

        for (const char *p = s; *p;)
                if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
                    p[3] <= '7') {
                        *w++ = (char) ((p[1] - '0') << 6 | (p[2] - '0') << 3 | (p[3] - '0'));
                        p += 4;
                } else
                        *w++ = *p++;
        *w = 0;
}

int mountinfo_fstype(const char *mountinfo, const char *mount_point, char **ret) {
        _cleanup_free_ char *copy = strdup(mountinfo), *found = NULL;
        char *save = NULL;

        if (!copy)
                return -ENOMEM;
        /* "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL…] - FSTYPE
         * SOURCE SUPER_OPTIONS", in the order of mounting. */
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *mp = NULL, *fstype = NULL, *fsave = NULL;
                bool separator = false;
                unsigned i = 0;

                for (char *f = strtok_r(line, " ", &fsave); f && !fstype; f = strtok_r(NULL, " ", &fsave), i++)
                        if (i == 4)
                                mp = f;
                        else if (separator)
                                fstype = f;
                        else if (i >= 6 && streq(f, "-"))
                                separator = true;
                if (!mp || !fstype)
                        continue;
                unescape_octal(mp);
                if (!streq(mp, mount_point))
                        continue;
                free(found);
                found = strdup(fstype);
                if (!found)
                        return -ENOMEM;
        }
        if (!found)
                return -ENOENT;
        *ret = TAKE_PTR(found);
        return 0;
}

/* Whether the word at p starts with key and '=', as PID 1 reads the
 * command line: '-' and '_' alike in keys. */
static bool cmdline_word_sets(const char *p, const char *key) {
        for (; *key; p++, key++) {
                char a = *p == '-' ? '_' : *p, b = *key == '-' ? '_' : *key;

                if (a != b)
                        return false;
        }
        return *p == '=';
}

static bool cmdline_sets(const char *cmdline, const char *key) {
        for (const char *p = cmdline; p && *p; p += strcspn(p, " \t\n")) {
                p += strspn(p, " \t\n");
                if (*p == '"')
                        p++;
                if (cmdline_word_sets(p, key))
                        return true;
        }
        return false;
}

bool first_boot_id_given(const char *cmdline) {
        return cmdline_sets(cmdline, "systemd.machine_id");
}

bool first_boot_transient_mount(const char *fstype, const char *cmdline, bool container) {
        /* systemd-machine-id-commit accepts the same two (a "temporary
         * file system") as the transient ID it writes to the file. */
        if (!fstype || !(streq(fstype, "tmpfs") || streq(fstype, "ramfs")))
                return false;
        /* PID 1 reads the system.machine_id credential only for a file
         * holding no ID, as it makes one then: that is a first boot.  The
         * command line's ID it takes without looking at the file. */
        return !container && !first_boot_id_given(cmdline);
}

bool first_boot_written_this_boot(usec_t mtime, usec_t boot_start, usec_t now, bool regular, bool clock_trusted) {
        return regular && clock_trusted && mtime >= boot_start && mtime <= now;
}

/* Whether the wall clock's times from earlier boots compare with this
 * one's: the kernel set it from a real-time clock at boot (hctosys), or
 * it is synchronised now.  Without either it started at systemd's build
 * time (or 1970) in every boot, and a file PID 1 wrote early in an
 * earlier boot looks written in this one. */
static bool clock_trusted(const char *prefix) {
        _cleanup_free_ char *dir = path_join_root(prefix, "/sys/class/rtc");
        struct timex tx = {};
        bool trusted = false;
        DIR *d;

        if (!prefix && adjtimex(&tx) >= 0 && !(tx.status & STA_UNSYNC))
                return true;
        d = dir ? opendir(dir) : NULL;
        if (!d)
                return false;
        for (struct dirent *de; !trusted && (de = readdir(d));) {
                _cleanup_free_ char *path = NULL, *line = NULL;

                if (!startswith(de->d_name, "rtc") || asprintf(&path, "%s/%s/hctosys", dir, de->d_name) < 0)
                        continue;
                trusted = read_one_line_file(path, &line) >= 0 && streq(line, "1");
        }
        closedir(d);
        return trusted;
}

/* Whether path (the machine-id PID 1 writes when it makes the ID,
 * cloud-init's semaphores) was written in this boot.  The boot's start in wall-clock time is taken now (as
 * /proc/stat's btime is), so a clock set backwards since then still
 * compares right.  A clock stepped forwards between the write and now
 * hides the write: then the machine counts as one that booted before, the
 * side that changes nothing.  lstat(): a link into /run is not the file
 * its writer wrote; the mtime, which chmod, chown and a relabel leave alone. */
bool file_written_this_boot(const char *prefix, const char *path) {
        struct stat st;
        usec_t now, boot_start, mtime;

        if (lstat(path, &st) < 0)
                return false;
        now = now_usec(CLOCK_REALTIME);
        boot_start = now - now_usec(CLOCK_BOOTTIME);
        mtime = (usec_t) st.st_mtim.tv_sec * USEC_PER_SEC + (usec_t) st.st_mtim.tv_nsec / 1000;
        return first_boot_written_this_boot(mtime, boot_start, now, S_ISREG(st.st_mode), clock_trusted(prefix));
}

static bool in_container(const char *prefix) {
        _cleanup_free_ char *flag = path_join_root(prefix, "/run/systemd/container");
        const char *e = prefix ? NULL : getenv("container");

        if (e && e[0])
                return true;
        return flag && access(flag, F_OK) >= 0;
}

/* The type of what is mounted over /etc/machine-id: 1 with *ret_fstype,
 * 0 when nothing is, -errno when that cannot be told. */
static int machine_id_mount(const char *prefix, char **ret_fstype) {
        _cleanup_free_ char *path = path_join_root(prefix, "/proc/self/mountinfo"), *mountinfo = NULL;
        int r;

        if (!path)
                return -ENOMEM;
        /* A host with many containers has many mounts. */
        r = read_full_file(path, 16 * 1024 * 1024, &mountinfo, NULL);
        if (r < 0)
                return log_debug_errno(r, "Cannot read '%s', taking no sign of a first boot from "
                                       "/etc/machine-id's mount or time: %m", path);
        r = mountinfo_fstype(mountinfo, "/etc/machine-id", ret_fstype);
        return r == -ENOENT ? 0 : r < 0 ? r : 1;
}

void first_boot_facts_read_system(const char *prefix, FirstBootFacts *ret) {
        _cleanup_free_ char *flag = path_join_root(prefix, "/run/systemd/first-boot"),
                            *mid = path_join_root(prefix, "/etc/machine-id"), *fstype = NULL,
                            *cmdline_path = path_join_root(prefix, "/proc/cmdline"), *cmdline = NULL;
        int mounted = machine_id_mount(prefix, &fstype);
        bool container = in_container(prefix), readable;

        /* A command line we cannot read may hold the ID. */
        readable = cmdline_path && read_full_file(cmdline_path, 64 * 1024, &cmdline, NULL) >= 0;
        *ret = (FirstBootFacts) {
                .this_system = true,
                .flag = flag && access(flag, F_OK) >= 0,
                .machine_id_transient = mounted > 0 && readable &&
                                        first_boot_transient_mount(fstype, cmdline, container),
                /* Under a mount the file seen is not the one PID 1 writes
                 * in place: the ID it mounted, from /run, is new on every
                 * boot that mounts one.  The exclusions of the mount hold
                 * for the time too: PID 1 rewrites a writable file with
                 * the command line's ID on every boot, and a container's
                 * file is younger than the host's boot, whose clock
                 * (CLOCK_BOOTTIME) a container shares. */
                .machine_id_this_boot = mounted == 0 && mid && readable && !container &&
                                        !first_boot_id_given(cmdline) && file_written_this_boot(prefix, mid),
                .machine_id = machine_id_file_read(prefix),
        };
}

void first_boot_facts_read(const char *root, FirstBootFacts *ret) {
        /* Under --root (an installer writing a target) this system's /run
         * and mounts say nothing about the tree. */
        if (!root || streq(root, "/")) {
                first_boot_facts_read_system(NULL, ret);
                return;
        }
        *ret = (FirstBootFacts) { .machine_id = machine_id_file_read(root) };
}

/* systemd decides the same question in PID 1, and has changed its mind
 * across versions (machine-id(5), "FIRST BOOT SEMANTICS"):
 *  - a missing /etc/machine-id is a first boot in every version;
 *    "uninitialized" is one since 247 (older versions treat it as a
 *    malformed ID);
 *  - an empty file is not a first boot for ConditionFirstBoot= (units
 *    with it do not run, presets are not applied), but the ID is not
 *    committed either: on a root that is read-only at PID 1's start,
 *    systemd bind-mounts a transient one from /run over the file and
 *    systemd-machine-id-commit.service writes it later;
 *  - PID 1 touches /run/systemd/first-boot when it decided on a first
 *    boot, and then writes "uninitialized" and mounts the transient ID
 *    over the file, so by the time we run the file itself reads as set;
 *  - an empty file on a root mounted read-write from the start (the
 *    kernel's "rw", not a bootloader's "ro"): PID 1 writes the new ID into
 *    it at once, before any unit runs, and leaves no other trace.
 * For host keys the question is whether the image has ever run as a
 * machine with an identity of its own.  Until an ID is committed it has
 * not, whatever systemd calls it: so the flag, the transient mount
 * (seedbed-firstboot.service runs before the commit), an ID written in
 * this very boot, and a file that holds no ID all count.  A file holding
 * something else is not treated as a first boot: systemd does not, and
 * on this system the mount check sees the ID it replaces it with.
 *
 * Each sign must also hold on a server that has run for years, or its
 * identity is replaced the first time seedbed runs there.  So the mount
 * counts only as systemd's transient one: a tmpfs, not a bind mount from
 * persistent storage (impermanence setups keep the file elsewhere); not
 * with systemd.machine_id= on the command line, with which PID 1 mounts
 * one on every boot of a root read-only at its start; not in a container.
 * And the write counts only for a regular file with nothing mounted
 * over it, whose mtime (a chmod, a chown or a relabel change the ctime)
 * lies between the boot's start and now (in the future: written in
 * another boot, with a clock that ran ahead), on a clock that compares
 * across boots: first_boot_written_this_boot().  Where a sign is in
 * doubt the machine counts as one that booted before: its keys are
 * adopted, which changes nothing. */
bool first_boot_decide(const FirstBootFacts *f) {
        if (f->this_system && (f->flag || f->machine_id_transient || f->machine_id_this_boot))
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
        free(s->pending);
        free(s->pending_reason);
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

int instance_state_format(const InstanceState *s, time_t when, char **ret, size_t *ret_len) {
        char now[64];
        Json j = {};

        json_format_time(when ?: s->time ?: time(NULL), now, sizeof now);

        json_object_begin(&j, NULL);
        json_uint(&j, "version", INSTANCE_STATE_VERSION);
        json_string(&j, "time", now);
        json_object_begin(&j, "instance");
        /* Never the UUID itself: the record is world-readable. */
        json_nonempty(&j, "product_uuid_hmac", s->id.product_uuid_hmac);
        json_nonempty(&j, "product_uuid_key", s->id.product_uuid_hmac[0] ? s->id.product_uuid_key : NULL);
        json_nonempty(&j, "machine_id", s->id.machine_id);
        json_object_end(&j);
        /* Only while it is so: a complete record reads as it always did. */
        if (s->pending) {
                json_string(&j, "pending", s->pending);
                json_string(&j, "pending_reason", s->pending_reason);
        }
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

/* Writes s as it is: whatever it holds of the UUID is its hash. */
static int state_write(const char *path, const InstanceState *s) {
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
        return atomic_write_file_locked(path, text, len, 0644, (uid_t) -1, (gid_t) -1, true);
}

int instance_state_save(const char *root, const char *path, const InstanceState *s) {
        _cleanup_free_ char *key = path_join_root(root, INSTANCE_KEY_FILE);
        InstanceState hashed = *s; /* borrows s's strings, only to format */
        int r;

        if (!hashed.id.product_uuid_hmac[0]) {
                r = uuid_hash(key, true, &hashed.id);
                if (r == -EAGAIN)
                        log_notice("The kernel's random number generator is not ready to make the instance key "
                                   "'%s': recording the SMBIOS UUID in '%s' as unknown.", strna(key), path);
                else if (r < 0)
                        log_warning_errno(r, "Cannot hash the SMBIOS UUID with the instance key '%s', recording "
                                          "it in '%s' as unknown: %m", strna(key), path);
        }
        return state_write(path, &hashed);
}

int instance_state_rekey(const char *path, const InstanceId *was, const InstanceId *now) {
        InstanceState s;
        int r;

        /* A UUID not hashed with the new key would go in as null. */
        if (now->product_uuid[0] && !now->product_uuid_hmac[0])
                return -ENOKEY;
        r = instance_state_load(path, &s);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        /* Another instance's record (this run failed to replace it) must
         * keep telling it apart. */
        if (s.id.product_uuid[0] || instance_compare(&s.id, was, NULL) != INSTANCE_SAME) {
                instance_state_done(&s);
                return 0;
        }
        s.id = *now;
        r = state_write(path, &s);
        instance_state_done(&s);
        return r < 0 ? r : 1;
}

int instance_state_heal(const char *root, const char *path, const InstanceState *s, const InstanceId *current) {
        _cleanup_free_ char *key = path_join_root(root, INSTANCE_KEY_FILE);
        InstanceState hashed = *s; /* borrows s's strings, only to format */
        InstanceChange change = instance_compare(&s->id, current, NULL);
        int r;

        if (change == INSTANCE_NEW)
                return 0;
        /* A record from before the UUID was hashed gets that UUID hashed.
         * One whose UUID cannot be compared (its key is lost or replaced,
         * or it was not known) where the machine-id says this is the
         * instance gets its UUID now: left so, the UUID would never again
         * tell a clone apart. */
        if (!s->id.product_uuid[0]) {
                if (change != INSTANCE_SAME || !current->product_uuid[0] || uuid_check(&s->id, current) == UUID_EQUAL)
                        return 0;
                memcpy(hashed.id.product_uuid, current->product_uuid, sizeof hashed.id.product_uuid);
        }
        hashed.id.product_uuid_hmac[0] = hashed.id.product_uuid_key[0] = 0;
        /* Never null for a UUID the record holds: that would lose the
         * comparison for good, and this record is seldom written.  With
         * no key (none can be made before the CRNG is ready, and this
         * runs before the gate) it waits for a later boot. */
        r = uuid_hash(key, true, &hashed.id);
        if (r < 0)
                return r;
        r = state_write(path, &hashed);
        return r < 0 ? r : 1;
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

/* The record's "time", as json_format_time() writes it; 0 when it is absent
 * or in another form. */
static time_t parse_time(const char *s) {
        struct tm tm = {};
        const char *end;
        time_t t;

        if (!s)
                return 0;
        end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (!end || *end)
                return 0;
        t = timegm(&tm);
        return t > 0 ? t : 0;
}

/* Exactly n lowercase hex digits, copied to out. */
static bool parse_hex(const char *s, size_t n, char *out) {
        if (!s || strlen(s) != n || strspn(s, "0123456789abcdef") != n)
                return false;
        memcpy(out, s, n + 1);
        return true;
}

static int state_parse(yaml_document_t *doc, InstanceState *s) {
        yaml_node_t *root = yaml_document_get_root_node(doc), *inst, *keys;
        const char *uuid, *hmac, *hkey, *mid, *pending;
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
        hmac = json_get_str(doc, inst, "product_uuid_hmac");
        hkey = json_get_str(doc, inst, "product_uuid_key");
        mid = json_get_str(doc, inst, "machine_id");
        if (uuid && !instance_uuid_normalize(uuid, s->id.product_uuid))
                return -EBADMSG;
        /* A hash is written with the key's ID; one without it is not ours. */
        if ((hmac || hkey) && (!parse_hex(hmac, INSTANCE_UUID_HMAC_HEX, s->id.product_uuid_hmac) ||
                               !parse_hex(hkey, INSTANCE_KEY_ID_HEX, s->id.product_uuid_key)))
                return -EBADMSG;
        if (mid && !instance_machine_id_normalize(mid, s->id.machine_id))
                return -EBADMSG;
        s->time = parse_time(json_get_str(doc, root, "time"));
        pending = json_get_str(doc, root, "pending");
        if (pending && !streq(pending, INSTANCE_PENDING_REPLACE_UNKNOWN) && !streq(pending, INSTANCE_PENDING_VM_FORK))
                return -EBADMSG;
        if (strdup_nonnull(pending, &s->pending) < 0 ||
            strdup_nonnull(pending ? json_get_str(doc, root, "pending_reason") : NULL, &s->pending_reason) < 0)
                return -ENOMEM;

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
                /* Counted even when half filled, so that instance_state_done() frees it. */
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
