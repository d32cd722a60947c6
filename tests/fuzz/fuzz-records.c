/* SPDX-License-Identifier: MIT */
/* The agent's JSON records read back: common/json-read.c's parser and
 * copier, the status record's readers (agent/record.c: status, status
 * --json, whether keys were made, firstboot's "already done" rewrite) and
 * the instance record's (agent/instance.c, ssh-keys.json and
 * firstboot.json) and the record of VM generation changes
 * (agent/fork-record.c, vm-forks.json).  The input is the file.  The boot ID of this boot is
 * not for a fuzzer to guess: 00000000-0000-0000-0000-000000000000 in
 * the input stands for it, so a record can be "of this boot".
 *
 * What must hold: what the parser takes, the copier writes as JSON the
 * parser takes again, to the same copy; an instance record read and
 * written reads back to the same record; status --json prints JSON; a
 * record firstboot rewrote is still a record; a record of VM generation
 * changes with an event appended reads back, keeps the events it had
 * (the oldest dropped past FORK_RECORD_EVENTS_MAX) and the new one, and
 * appending to it again keeps all of those. */
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>

#include "fileio.h"
#include "fork-record.h"
#include "fuzz.h"
#include "instance.h"
#include "json-read.h"
#include "json.h"
#include "record.h"

/* As the readers' own limits (record.c, instance.c). */
#define RECORD_SIZE_MAX (64 * 1024)
#define DEPTH_MAX 8
#define FORK_RECORD_SIZE_MAX (1024 * 1024)
#define FORK_RECORD_DEPTH_MAX 6
#define BOOT_ID_PLACEHOLDER "00000000-0000-0000-0000-000000000000"

static char *dir, *record, *copy, *root;
static char boot_id[64];

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static void cleanup(void) {
        if (dir)
                (void) nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *path, const void *data, size_t size) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        fuzz_check(fd >= 0 && loop_write(fd, data, size) == 0, "cannot write '%s': %m", path);
}

static void setup_once(void) {
        _cleanup_free_ char *id = NULL, *tmpl = NULL;
        char *keydir;

        if (dir)
                return;
        fuzz_setup();
        if (read_one_line_file("/proc/sys/kernel/random/boot_id", &id) < 0 || strlen(id) != strlen(BOOT_ID_PLACEHOLDER))
                fuzz_fail("cannot read this boot's ID");
        strcpy(boot_id, id);

        if (asprintf(&tmpl, "%s/seedbed-fuzz-records-XXXXXX", getenv("TMPDIR") ?: "/tmp") < 0 || !mkdtemp(tmpl))
                fuzz_fail("cannot make a temporary directory: %m");
        dir = TAKE_PTR(tmpl);
        atexit(cleanup);
        if (asprintf(&record, "%s/seed.json", dir) < 0 || asprintf(&copy, "%s/copy.json", dir) < 0 ||
            asprintf(&root, "%s/root", dir) < 0 || asprintf(&keydir, "%s/root/etc/ssh", dir) < 0)
                abort();
        /* A root whose host keys a record may name: one that is no key,
         * one whose public half alone is there. */
        if (mkdir_p(keydir, 0755) < 0)
                fuzz_fail("cannot make '%s': %m", keydir);
        free(keydir);
        if (asprintf(&keydir, "%s/root/etc/ssh/ssh_host_rsa_key", dir) < 0)
                abort();
        write_file(keydir, "not a key\n", 10);
        free(keydir);
        if (asprintf(&keydir, "%s/root/etc/ssh/ssh_host_ecdsa_key.pub", dir) < 0)
                abort();
        write_file(keydir, "ecdsa-sha2-nistp256 AAAA comment\n", 33);
        free(keydir);
}

/* json_copy() of a parsed document, as the records' writers use it. */
static char *copy_of(const char *text, size_t size) {
        yaml_document_t doc;
        Json j = {};
        char *out;

        if (json_object_parse(text, size, DEPTH_MAX, &doc) < 0)
                return NULL;
        json_copy(&j, NULL, &doc, yaml_document_get_root_node(&doc));
        yaml_document_delete(&doc);
        fuzz_check(json_finish(&j, &out, NULL) == 0, "the copy failed");
        return out;
}

static void check_json_copy(const char *text, size_t size) {
        _cleanup_free_ char *once = copy_of(text, size), *twice = NULL;

        if (!once)
                return;
        twice = copy_of(once, strlen(once));
        fuzz_check(twice, "the copy is not JSON the parser takes:\n%s", once);
        fuzz_check(streq(once, twice), "a copy of the copy differs:\n%s---\n%s", once, twice);
}

static void check_instance(void) {
        _cleanup_free_ char *once = NULL, *twice = NULL;
        InstanceState s, back;
        size_t len;

        if (instance_state_load(record, &s) < 0)
                return;
        /* A fixed time: "now" would differ between the two. */
        fuzz_check(instance_state_format(&s, 1700000000, &once, &len) == 0, "cannot format a record it read");
        instance_state_done(&s);
        write_file(copy, once, len);
        fuzz_check(instance_state_load(copy, &back) == 0, "a record it wrote does not read back:\n%s", once);
        fuzz_check(instance_state_format(&back, 1700000000, &twice, NULL) == 0, "cannot format it again");
        instance_state_done(&back);
        fuzz_check(streq(once, twice), "a record read back as another:\n%s---\n%s", once, twice);
}

static void check_status(void) {
        _cleanup_free_ char *out = NULL;
        size_t out_size = 0;
        bool ready, stale, made;
        yaml_document_t doc;
        FILE *f;
        int r;

        f = fopen("/dev/null", "we");
        if (!f)
                abort();
        (void) record_print(record, root, f, &ready, &stale);
        fclose(f);

        f = open_memstream(&out, &out_size);
        if (!f)
                abort();
        r = record_print_json(record, root, f, &ready, &stale);
        fclose(f);
        if (r >= 0) {
                /* Keys checked on disk add no nesting. */
                fuzz_check(json_object_parse(out, out_size, DEPTH_MAX, &doc) == 0, "status --json printed:\n%s", out);
                yaml_document_delete(&doc);
        }

        (void) record_ssh_keys_made(record, &made);
}

static void check_firstboot(void) {
        _cleanup_free_ char *text = NULL;
        yaml_document_t doc;
        size_t size;

        if (record_mark_firstboot_done(record, false, 0) < 0)
                return;
        fuzz_check(read_full_file(record, RECORD_SIZE_MAX * 2, &text, &size) == 0, "the rewrite is gone");
        fuzz_check(json_object_parse(text, size, DEPTH_MAX, &doc) == 0, "firstboot's rewrite is no record:\n%s", text);
        fuzz_check(streq_ptr(json_get_str(&doc, yaml_document_get_root_node(&doc), "firstboot"), "already-done"),
                   "firstboot's rewrite does not say so");
        yaml_document_delete(&doc);
}

/* The events of a record of VM generation changes, each as the copier
 * writes it, or NULL when the text is none. */
static char **fork_events(const char *text, size_t size, size_t *ret_n) {
        yaml_document_t doc;
        yaml_node_t *events;
        char **list;
        size_t n = 0;

        if (json_object_parse(text, size, FORK_RECORD_DEPTH_MAX, &doc) < 0)
                return NULL;
        events = json_get(&doc, yaml_document_get_root_node(&doc), "events");
        fuzz_check(events && events->type == YAML_SEQUENCE_NODE, "a record it wrote has no events:\n%s", text);
        list = calloc(events->data.sequence.items.top - events->data.sequence.items.start + 1, sizeof *list);
        if (!list)
                abort();
        for (yaml_node_item_t *i = events->data.sequence.items.start; i < events->data.sequence.items.top; i++) {
                Json j = {};

                json_copy(&j, "e", &doc, yaml_document_get_node(&doc, *i));
                fuzz_check(json_finish(&j, &list[n++], NULL) == 0, "cannot copy an event");
        }
        yaml_document_delete(&doc);
        *ret_n = n;
        return list;
}

static void free_list(char **list, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(list[i]);
        free(list);
}

static void check_fork_record(void) {
        static const ForkKey keys[] = {
                { .type = "ed25519", .previous = "SHA256:old", .now = "SHA256:new" },
                { .type = "rsa", .previous = NULL, .now = NULL },
        };
        static const ForkEvent e = {
                .time = 1700000000, .boot_id = BOOT_ID_PLACEHOLDER, .uptime_ms = 123456, .crng_ready = true,
                .credited_bits = 8192, .reseeded = true, .ssh = "regenerate", .result = "incomplete",
                .keys = keys, .n_keys = ELEMENTSOF(keys), .sshd = "not running",
        };
        _cleanup_free_ char *once = NULL, *twice = NULL;
        char **first, **second;
        size_t len, len2, n1, n2;
        int kept, kept2;

        fuzz_check(fork_record_format(record, &e, &once, &len, &kept) == 0, "cannot format a record of VM forks");
        /* Only an input near the size limit grows past it when copied. */
        if (len > FORK_RECORD_SIZE_MAX)
                return;
        first = fork_events(once, len, &n1);
        fuzz_check(first, "the record of VM forks it wrote does not read back:\n%s", once);
        fuzz_check(n1 == (size_t) MAX(kept, 0) + 1 && n1 <= FORK_RECORD_EVENTS_MAX,
                   "%zu events written, %d kept:\n%s", n1, kept, once);

        /* Appending again: all it had, the oldest dropped when full, and
         * the new one after them. */
        write_file(copy, once, len);
        fuzz_check(fork_record_format(copy, &e, &twice, &len2, &kept2) == 0, "cannot append to its own record");
        fuzz_check(kept2 == (int) MIN(n1, (size_t) FORK_RECORD_EVENTS_MAX - 1),
                   "%d of its own %zu events kept:\n%s", kept2, n1, once);
        second = fork_events(twice, len2, &n2);
        fuzz_check(second, "the record appended to does not read back:\n%s", twice);
        fuzz_check(n2 == (size_t) kept2 + 1, "%zu events after appending to %zu", n2, n1);
        for (size_t i = 0; i < (size_t) kept2; i++)
                fuzz_check(streq(second[i], first[n1 - kept2 + i]), "event %zu changed:\n%s---\n%s", i, once, twice);
        fuzz_check(streq(second[n2 - 1], first[n1 - 1]), "the new event differs:\n%s---\n%s", once, twice);
        free_list(first, n1);
        free_list(second, n2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *text = NULL;

        setup_once();
        if (size > RECORD_SIZE_MAX)
                return 0;
        text = fuzz_strndup(data, size);
        for (char *p = text; (p = memmem(p, size - (size_t) (p - text), BOOT_ID_PLACEHOLDER,
                                         strlen(BOOT_ID_PLACEHOLDER)));
             p += strlen(BOOT_ID_PLACEHOLDER))
                memcpy(p, boot_id, strlen(boot_id));

        check_json_copy(text, size);

        write_file(record, text, size);
        check_instance();
        check_status();
        check_fork_record();
        check_firstboot();
        return 0;
}
