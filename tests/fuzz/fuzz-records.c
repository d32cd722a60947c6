/* SPDX-License-Identifier: MIT */
/* The agent's JSON records read back: common/json-read.c's parser and
 * copier, the status record's readers (agent/record.c: status, status
 * --json, whether keys were made, firstboot's "already done" rewrite) and
 * the instance record's (agent/instance.c, ssh-keys.json and
 * firstboot.json).  The input is the file.  The boot ID of this boot is
 * not for a fuzzer to guess: 00000000-0000-0000-0000-000000000000 in
 * the input stands for it, so a record can be "of this boot".
 *
 * What must hold: what the parser takes, the copier writes as JSON the
 * parser takes again, to the same copy; an instance record read and
 * written reads back to the same record; status --json prints JSON; a
 * record firstboot rewrote is still a record. */
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>

#include "fileio.h"
#include "fuzz.h"
#include "instance.h"
#include "json-read.h"
#include "json.h"
#include "record.h"

/* As the readers' own limits (record.c, instance.c). */
#define RECORD_SIZE_MAX (64 * 1024)
#define DEPTH_MAX 8
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
        check_firstboot();
        return 0;
}
