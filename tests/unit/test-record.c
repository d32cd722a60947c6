/* SPDX-License-Identifier: MIT */
/* The record: written atomically, readable back by 'status' for people
 * and as JSON for installers, with strings from sysfs safely escaped. */
#include <sys/stat.h>

#include "fakeroot.h"
#include "fileio.h"
#include "race.h"
#include "record.h"
#include "testmain.h"

static char *root;
static AgentConfig c;
static VirtioRng v;
static SeedOutcome o;

static void setup(void) {
        root = fakeroot_new();
        agent_config_init(&c);
        v = (VirtioRng) { .found = true, .bound = true, .hwrng_node = true, .kernel_quality = 1024, .selected = true };
        strcpy(v.device, "virtio4");
        strcpy(v.transport, "mmio");
        strcpy(v.driver, "virtio_rng");
        strcpy(v.hwrng, "virtio_rng.0");
        strcpy(v.current_before, "tpm-rng-0");
        strcpy(v.current, "virtio_rng.0");
        o = (SeedOutcome) {
                .ready_at_start = false, .ready_before = false, .ready_after = true, .elapsed_usec = 15 * USEC_PER_MSEC,
                .ready_usec = 12 * USEC_PER_MSEC, .ready_boottime_usec = 1234 * USEC_PER_MSEC,
                .credited_bits = 512, .n_sources = 2,
        };
        o.sources[0] = (SourceReport) { .kind = SOURCE_VIRTIO, .status = SOURCE_USED, .bytes = 64, .mixed_bytes = 64,
                                        .credited_bits = 512, .quality = 1024, .min_entropy = 8, .rct_cutoff = 5,
                                        .apt_cutoff = 14 };
        strcpy(o.sources[0].detail, "virtio4 (mmio) as virtio_rng.0");
        o.sources[1] = (SourceReport) { .kind = SOURCE_KERNEL, .status = SOURCE_NOT_TRIED };
}

static void teardown(void) {
        fakeroot_free(root);
        root = NULL;
}

static char *record_file(void) {
        static char path[4096];
        snprintf(path, sizeof path, "%s" RECORD_SEED, root);
        return path;
}

static char *print(bool json, int *ret, bool *ready) {
        char *path, *out = NULL;
        size_t size = 0;
        FILE *f;

        ck_assert_int_ge(asprintf(&path, "%s" RECORD_SEED, root), 0);
        f = open_memstream(&out, &size);
        *ret = json ? record_print_json(path, root, f, ready, NULL) : record_print(path, root, f, ready, NULL);
        fclose(f);
        free(path);
        return out;
}

START_TEST(test_write_and_status) {
        RecordInput in = { .path = record_file(), .config = &c, .virtio = &v, .outcome = &o, .result = SEED_RESULT_READY };
        char *text, *out;
        bool ready = false;
        int r;

        ck_assert_int_eq(record_write(&in), 0);
        text = fakeroot_read(root, RECORD_SEED);
        ck_assert_ptr_nonnull(text);
        ck_assert_ptr_nonnull(strstr(text, "\"result\": \"ready\""));
        ck_assert_ptr_nonnull(strstr(text, "\"ready_before\": false,\n  \"ready_after_setup\": false,\n  \"ready_after\": true,"));
        ck_assert_ptr_nonnull(strstr(text, "\"ready_ms\": 12,"));
        ck_assert_ptr_nonnull(strstr(text, "\"ready_uptime_ms\": 1234,"));
        ck_assert_ptr_nonnull(strstr(text, "\"transport\": \"mmio\""));
        ck_assert_ptr_nonnull(strstr(text, "\"current_before\": \"tpm-rng-0\""));
        ck_assert_ptr_nonnull(strstr(text, "\"credited_bits\": 512"));
        ck_assert_ptr_nonnull(strstr(text, "\"status\": \"not-needed\""));

        out = print(false, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert(ready);
        ck_assert_ptr_nonnull(strstr(out, "CRNG: ready (seeded: 512 bits credited, ready after 12 ms)\n"));
        ck_assert_ptr_nonnull(strstr(out, "Device: virtio4 on mmio, driver virtio_rng, hwrng virtio_rng.0 (selected by seedbed)\n"));
        ck_assert_ptr_nonnull(strstr(out, "Sources: virtio  used        64 bytes read, 512 bits credited, health ok"));
        ck_assert_ptr_nonnull(strstr(out, "kernel  not-needed  0 bytes read, 0 bits credited\n"));
        free(out);

        out = print(true, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert_str_eq(out, text);
        free(out);
        free(text);
}
END_TEST

START_TEST(test_not_ready) {
        RecordInput in = { .path = record_file(), .config = &c, .virtio = &v, .outcome = &o, .result = SEED_RESULT_TIMEOUT };
        char *out;
        bool ready = true;
        int r;

        o.ready_after = false;
        o.ready_usec = USEC_INFINITY;
        o.ready_boottime_usec = USEC_INFINITY;
        o.timed_out = true;
        v = (VirtioRng) { .kernel_quality = -1 };
        ck_assert_int_eq(record_write(&in), 0);
        out = print(false, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert(!ready);
        ck_assert_ptr_nonnull(strstr(out, "CRNG: NOT ready\n"));
        ck_assert_ptr_nonnull(strstr(out, "Result: timeout\n"));
        ck_assert_ptr_nonnull(strstr(out, "Device: no virtio-rng device\n"));
        free(out);
        out = fakeroot_read(root, RECORD_SEED);
        ck_assert_ptr_nonnull(strstr(out, "\"ready_ms\": null,"));
        ck_assert_ptr_nonnull(strstr(out, "\"kernel_quality\": null,"));
        free(out);
}
END_TEST

/* The hwrng name as read from sysfs: written as the JSON text written,
 * shown by status as the text shown; status --json takes it too. */
static void check_current(const char *name, const char *written, const char *shown) {
        RecordInput in = { .path = record_file(), .config = &c, .virtio = &v, .outcome = &o, .result = SEED_RESULT_READY };
        char *text, *want, *out;
        bool ready;
        int r;

        strcpy(v.current, name);
        ck_assert_int_eq(record_write(&in), 0);
        text = fakeroot_read(root, RECORD_SEED);
        ck_assert_int_ge(asprintf(&want, "\"current\": \"%s\"", written), 0);
        ck_assert_msg(strstr(text, want), "'%s' not in:\n%s", want, text);
        free(want);
        free(text);
        out = print(false, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert_int_ge(asprintf(&want, "hwrng: %s is current", shown), 0);
        ck_assert_msg(strstr(out, want), "'%s' not in:\n%s", want, out);
        free(want);
        free(out);
        out = print(true, &r, &ready);
        ck_assert_int_eq(r, 0);
        free(out);
}

START_TEST(test_escaping) {
        /* A name read from sysfs with quotes and control bytes in it:
         * control bytes never reach the terminal raw. */
        check_current("evil\"\n\x01\\", "evil\\\"\\n\\u0001\\\\", "evil\"??\\");

        /* What YAML would fold or refuse is escaped, and a byte that is
         * not UTF-8 is replaced: the record still reads back. */
        check_current("a\xe2\x80\xa8" "b\xc2\x85" "c\xff" "d\xc3\xa9", "a\\u2028b\\u0085c\\ufffdd\xc3\xa9",
                      "a?b?c\xef\xbf\xbd" "d\xc3\xa9");

        /* C1 controls read back from their \u escapes as characters:
         * U+009B is CSI to a terminal, U+0085 a line break.  Neither
         * reaches it; what is printable, é included, does. */
        check_current("a\xc2\x85" "b\xc2\x9b" "31mc\xc3\xa9", "a\\u0085b\\u009b31mc\xc3\xa9", "a?b?31mc\xc3\xa9");
}
END_TEST

START_TEST(test_missing_and_garbage) {
        char *out;
        bool ready;
        int r;

        out = print(false, &r, &ready);
        ck_assert_int_eq(r, -ENOENT);
        free(out);

        fakeroot_write(root, RECORD_SEED, "{\"hello\": [1, 2}\n");
        out = print(false, &r, &ready);
        ck_assert_int_eq(r, -EBADMSG);
        free(out);
        out = print(true, &r, &ready);
        ck_assert_int_eq(r, -EBADMSG);
        free(out);

        /* Valid JSON that is not a record, or not this version of it. */
        fakeroot_write(root, RECORD_SEED, "{\"hello\": 1}\n");
        out = print(true, &r, &ready);
        ck_assert_int_eq(r, -EBADMSG);
        free(out);
        fakeroot_write(root, RECORD_SEED, "{\"version\": 2, \"result\": \"ready\", \"ready_after\": true}\n");
        out = print(false, &r, &ready);
        ck_assert_int_eq(r, -EBADMSG);
        free(out);
        /* YAML that libyaml reads but is no JSON object. */
        fakeroot_write(root, RECORD_SEED, "version: 1\nresult: ready\nready_after: true\n");
        out = print(true, &r, &ready);
        ck_assert_int_eq(r, -EBADMSG);
        free(out);
}
END_TEST

START_TEST(test_hostile_files) {
        char path[4096], *out;
        bool ready;
        int r;

        snprintf(path, sizeof path, "%s" RECORD_SEED, root);
        fakeroot_mkdir(root, RECORD_DIR);

        /* Deep nesting: refused before libyaml sees it. */
        {
                char deep[4096] = "{\"version\": 1, \"result\": \"ready\", \"x\": ";
                size_t l = strlen(deep);
                for (int i = 0; i < 1000; i++)
                        deep[l++] = '[';
                deep[l] = 0;
                fakeroot_write(root, RECORD_SEED, deep);
                out = print(false, &r, &ready);
                ck_assert_int_eq(r, -EBADMSG);
                free(out);
        }

        /* YAML's anchors and aliases are no JSON: a record that contains
         * itself sent status --json into endless recursion, nested
         * aliases into copying 10^9 nodes.  Nor may a quote hide the
         * nesting from the check. */
        {
                static const char *const hostile[] = {
                        "{\"version\": 1, \"result\": \"ready\", \"ssh_keys\": [], \"a\": &x [1, *x]}\n",
                        "{\"version\": 1, \"result\": \"ready\", \"a\": !!str x}\n",
                        "{\"version\": 1, \"result\": \"ready\", 'a\"': [[[[[[[[[[[[1]]]]]]]]]]]]}\n",
                        "{\"version\": 1, \"result\": \"ready\", \"a\": x\"y\", \"b\": \"[[[[[[[[[[[[\"}\n",
                };

                for (size_t i = 0; i < ELEMENTSOF(hostile); i++) {
                        fakeroot_write(root, RECORD_SEED, hostile[i]);
                        out = print(true, &r, &ready);
                        ck_assert_int_eq(r, -EBADMSG);
                        free(out);
                }
        }

        /* A FIFO in its place must not block status. */
        ck_assert_int_eq(unlink(path), 0);
        ck_assert_int_eq(mkfifo(path, 0600), 0);
        out = print(true, &r, &ready);
        ck_assert_int_eq(r, -EBADMSG);
        free(out);

        /* Nor a link to something else. */
        ck_assert_int_eq(unlink(path), 0);
        ck_assert_int_eq(symlink("/etc/passwd", path), 0);
        out = print(true, &r, &ready);
        ck_assert_int_eq(r, -EBADMSG);
        free(out);

        /* Nor a huge file. */
        ck_assert_int_eq(unlink(path), 0);
        {
                char *big = malloc(128 * 1024);
                ck_assert_ptr_nonnull(big);
                memset(big, ' ', 128 * 1024);
                big[0] = '{';
                fakeroot_write_bytes(root, RECORD_SEED, big, 128 * 1024);
                free(big);
        }
        out = print(false, &r, &ready);
        ck_assert_int_eq(r, -EBADMSG);
        free(out);
}
END_TEST

/* Only JSON's shape is read: YAML's "[k: v]" is a mapping inside the
 * list that no bracket counts, and its copy, written "[{...}]", was one
 * level deeper than the check allowed: seedbed refused records it had
 * written.  What follows the object, or closers that do not match, were
 * let through as well.  Everything json.c writes still reads. */
START_TEST(test_json_shape) {
        static const char *const refused[] = {
                "{\"version\": 1, \"result\": \"ready\", \"x\": [\"k\": 1]}\n",
                "{\"version\": 1, \"result\": \"ready\", \"x\": [a: b]}\n",
                "{\"version\": 1, \"result\": \"ready\", \"x\": [[{\"k\": [\"a\": 1]}]]}\n",
                "{\"version\": 1, \"result\": \"ready\", \"x\": {\"a\": 1]}\n",
                "{\"version\": 1, \"result\": \"ready\", \"x\": [1}]\n",
                "{\"version\": 1, \"result\": \"ready\"}\n]]]\n",
                "{\"version\": 1, \"result\": \"ready\"} {\"a\": 1}\n",
                "{\"version\": 1, \"result\": \"ready\"}\n---\n",
                "{\"version\": 1, \"result\": \"ready\"\n",
        };
        char *out;
        bool ready;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(refused); i++) {
                fakeroot_write(root, RECORD_SEED, refused[i]);
                out = print(true, &r, &ready);
                ck_assert_msg(r == -EBADMSG, "taken: %s", refused[i]);
                free(out);
        }

        /* All json.c writes: objects in lists, empty ones, brackets and
         * escapes inside strings, every kind of scalar, blanks after. */
        fakeroot_write(root, RECORD_SEED,
                       "{\n  \"version\": 1,\n  \"result\": \"ready\",\n  \"ready_after\": true,\n"
                       "  \"x\": [\n    {\n      \"k\": [[], {}, -1.5e3, null, false, \"a]}:[\\\"\\\\\"]\n    }\n  ],\n"
                       "  \"e\": {}\n}\n\n");
        out = print(true, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert(ready);
        ck_assert_ptr_nonnull(strstr(out, "\"k\": [[], {}, -1.5e3, null, false, \"a]}:[\\\"\\\\\"]"));
        free(out);
}
END_TEST

START_TEST(test_stale) {
        char path[4096], *out = NULL;
        size_t size = 0;
        bool ready = true, stale = false;
        FILE *f;

        /* A record kept from another boot says nothing about this one. */
        snprintf(path, sizeof path, "%s" RECORD_SEED, root);
        fakeroot_write(root, RECORD_SEED,
                       "{\"version\": 1, \"boot_id\": \"00000000-0000-0000-0000-000000000000\", "
                       "\"result\": \"ready\", \"ready_after\": true}\n");
        f = open_memstream(&out, &size);
        ck_assert_int_eq(record_print(path, root, f, &ready, &stale), 0);
        fclose(f);
        ck_assert(stale);
        ck_assert(!ready);
        ck_assert_ptr_nonnull(strstr(out, "Boot: an earlier one"));
        free(out);
}
END_TEST


/* The initramfs seeds, then firstboot in the real root replaces the
 * record: the timeline keeps when the agent first ran and when the CRNG
 * was first seen ready, and adds when the keys were written. */
START_TEST(test_timeline_carried) {
        RecordInput in = { .path = record_file(), .config = &c, .virtio = &v, .outcome = &o, .result = SEED_RESULT_READY,
                           .in_initrd = true, .command = "seed", .start_boottime_usec = 800 * USEC_PER_MSEC };
        SshKeyResult keys[2] = {
                { .type = HOST_KEY_ED25519, .action = SSH_KEY_CREATED, .at_usec = 5000 * USEC_PER_MSEC },
                { .type = HOST_KEY_RSA, .action = SSH_KEY_CREATED, .at_usec = 7000 * USEC_PER_MSEC },
        };
        char *text, *out;
        bool ready;
        int r;

        ck_assert_int_eq(record_write(&in), 0);

        o.ready_at_start = o.ready_before = true;
        o.ready_boottime_usec = 20001 * USEC_PER_MSEC;
        in = (RecordInput) { .path = record_file(), .config = &c, .virtio = &v, .outcome = &o,
                             .result = SEED_RESULT_READY, .command = "firstboot", .firstboot = "done",
                             .keys = keys, .n_keys = 2, .have_keys = true,
                             .start_boottime_usec = 20000 * USEC_PER_MSEC };
        ck_assert_int_eq(record_write(&in), 0);
        text = fakeroot_read(root, RECORD_SEED);
        ck_assert_ptr_nonnull(strstr(text, "\"agent_start_ms\": 800,\n    \"agent_start_in_initrd\": true,\n"
                                           "    \"crng_ready_ms\": 1234,\n    \"crng_ready_in_initrd\": true,\n"
                                           "    \"ssh_keys_ms\": 27000,\n    \"luks_ms\": null,"));
        ck_assert_ptr_nonnull(strstr(text, "\"command\": \"seed\",\n        \"in_initrd\": true,\n"
                                           "        \"result\": \"ready\",\n        \"start_ms\": 800,"));
        ck_assert_ptr_nonnull(strstr(text, "\"command\": \"firstboot\",\n        \"in_initrd\": false,"));
        free(text);

        /* The next boot: firstboot has nothing to do and says so; what
         * the seed found stays. */
        ck_assert_int_eq(record_mark_firstboot_done(record_file(), false, 30000 * USEC_PER_MSEC), 0);
        text = fakeroot_read(root, RECORD_SEED);
        ck_assert_ptr_nonnull(strstr(text, "\"firstboot\": \"already-done\""));
        ck_assert_ptr_nonnull(strstr(text, "\"result\": \"already-done\",\n        \"start_ms\": 30000,"));
        ck_assert_ptr_nonnull(strstr(text, "\"credited_bits\": 512,"));
        ck_assert_ptr_nonnull(strstr(text, "\"ssh_keys_ms\": 27000,"));
        ck_assert_ptr_nonnull(strstr(text, "\"min_entropy\": 8,"));
        free(text);
        out = print(false, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert(ready);
        ck_assert_ptr_nonnull(strstr(out, "First boot: already done for this instance"));
        ck_assert_ptr_nonnull(strstr(out, "Timeline: agent started at 0.800 s (initramfs), CRNG ready at 1.234 s "
                                          "(initramfs), SSH host keys written at 27.000 s (since the kernel started)\n"));
        free(out);
}
END_TEST

/* A run killed between making its temporary file and the rename left it
 * in /run/seedbed; nothing but the next write of the record removes it. */
START_TEST(test_killed_writer_cleaned) {
        RecordInput in = { .path = record_file(), .config = &c, .virtio = &v, .outcome = &o, .result = SEED_RESULT_READY };
        static const char *const stale = RECORD_SEED ".0123456789abcdef.tmp";

        fakeroot_write(root, stale, "{\n  \"version\": 1,\n  \"ti");
        ck_assert_int_eq(record_write(&in), 0);
        ck_assert(!fakeroot_exists(root, stale));

        fakeroot_write(root, stale, "{\n  \"version\": 1,\n  \"ti");
        ck_assert_int_eq(record_mark_firstboot_done(record_file(), false, 0), 0);
        ck_assert(!fakeroot_exists(root, stale));
        ck_assert(fakeroot_exists(root, RECORD_SEED));
}
END_TEST

static const char *this_boot_id(void) {
        static char *id;

        if (!id)
                ck_assert_int_ge(read_one_line_file("/proc/sys/kernel/random/boot_id", &id), 0);
        return id;
}

/* What an earlier record holds is data, not trusted: odd values are not
 * carried as if they were times, and the copy is JSON again. */
START_TEST(test_timeline_hostile) {
        RecordInput in = { .path = record_file(), .config = &c, .virtio = &v, .outcome = &o, .result = SEED_RESULT_READY,
                           .start_boottime_usec = 5000 * USEC_PER_MSEC };
        char *text, *id = NULL;

        ck_assert_int_ge(asprintf(&id, "{\"version\": 1, \"result\": \"ready\", \"boot_id\": \"%s\", "
                                       "\"odd\": nope, \"boot\": {\"agent_start_ms\": -5, \"crng_ready_ms\": \"12\", "
                                       "\"ssh_keys_ms\": 99999999999999999999999, \"runs\": {\"x\": 1}}}\n",
                                  this_boot_id()), 0);
        fakeroot_write(root, RECORD_SEED, id);
        free(id);
        ck_assert_int_eq(record_mark_firstboot_done(record_file(), false, 5000 * USEC_PER_MSEC), 0);
        text = fakeroot_read(root, RECORD_SEED);
        ck_assert_ptr_nonnull(strstr(text, "\"odd\": \"nope\""));
        ck_assert_ptr_nonnull(strstr(text, "\"agent_start_ms\": 5000,"));
        ck_assert_ptr_nonnull(strstr(text, "\"crng_ready_ms\": 12,")); /* a quoted number is still one */
        ck_assert_ptr_nonnull(strstr(text, "\"ssh_keys_ms\": null,"));
        free(text);

        /* Another boot's record is not carried; nor is it marked. */
        fakeroot_write(root, RECORD_SEED,
                       "{\"version\": 1, \"boot_id\": \"00000000-0000-0000-0000-000000000000\", \"result\": \"ready\", "
                       "\"boot\": {\"agent_start_ms\": 1}}\n");
        ck_assert_int_eq(record_mark_firstboot_done(record_file(), false, 1), -ENOENT);
        ck_assert_int_eq(record_write(&in), 0);
        text = fakeroot_read(root, RECORD_SEED);
        ck_assert_ptr_nonnull(strstr(text, "\"agent_start_ms\": 5000,"));
        free(text);
}
END_TEST

/* status checks each key the record lists against the disk now: one
 * another tool replaced (cloud-init writing user-data's ssh_keys) or
 * removed is never shown as seedbed's. */
START_TEST(test_status_keys) {
        static const HostKeyType types[] = { HOST_KEY_ED25519, HOST_KEY_ECDSA };
        SshKeysOptions ko = { .root = root, .types = types, .n_types = 2, .crng_ready = true };
        RecordInput in = { .path = record_file(), .config = &c, .virtio = &v, .outcome = &o, .result = SEED_RESULT_READY,
                           .command = "sshkeys", .have_keys = true };
        SshKeyResult keys[2], other[1];
        char *out, *text, *line;
        size_t n;
        bool ready;
        int r;

        ck_assert_int_eq(sshkeys_ensure(&ko, keys, &n), 0);
        keys[1].action = SSH_KEY_REPLACED;
        keys[1].reason = SSHKEYS_REASON_FIRST_BOOT;
        in.keys = keys;
        in.n_keys = n;
        ck_assert_int_eq(record_write(&in), 0);
        text = fakeroot_read(root, RECORD_SEED);
        ck_assert_ptr_nonnull(strstr(text, "\"action\": \"replaced\",\n      \"reason\": \"" SSHKEYS_REASON_FIRST_BOOT "\","));
        ck_assert_ptr_nonnull(strstr(text, "\"action\": \"created\",\n      \"reason\": null,"));

        /* All in place. */
        out = print(false, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert_int_ge(asprintf(&line, "    SSH keys: ed25519 %s created\n"
                                         "              ecdsa   %s replaced (" SSHKEYS_REASON_FIRST_BOOT ")\n",
                                  keys[0].fingerprint, keys[1].fingerprint), 0);
        ck_assert_ptr_nonnull(strstr(out, line));
        free(line);
        free(out);
        out = print(true, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert_ptr_nonnull(strstr(out, "\"on_disk\": \"same\",\n      \"on_disk_fingerprint\": \"SHA256:"));
        ck_assert_ptr_nonnull(strstr(out, "\"on_disk_checked\": \"private-key\""));
        ck_assert_ptr_null(strstr(out, "replaced-by-another-tool"));
        free(out);

        /* Another tool's key in place of the ECDSA one. */
        ko.types = &types[1];
        ko.n_types = 1;
        ko.replace = true;
        ck_assert_int_eq(sshkeys_ensure(&ko, other, &n), 0);
        out = print(false, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert_int_ge(asprintf(&line, "    SSH keys: ed25519 %s created\n"
                                         "              ecdsa   replaced by another tool: now %s (seedbed's %s, "
                                         "replaced, is gone)\n",
                                  keys[0].fingerprint, other[0].fingerprint, keys[1].fingerprint), 0);
        ck_assert_ptr_nonnull(strstr(out, line));
        free(line);
        free(out);
        out = print(true, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert_int_ge(asprintf(&line, "\"on_disk\": \"replaced-by-another-tool\",\n"
                                         "      \"on_disk_fingerprint\": \"%s\",\n"
                                         "      \"on_disk_checked\": \"private-key\"\n",
                                  other[0].fingerprint), 0);
        ck_assert_ptr_nonnull(strstr(out, line));
        free(line);
        /* The rest is the record's, as it was: up to the keys, byte for
         * byte. */
        ck_assert_int_eq(strncmp(out, text, (size_t) (strstr(text, "\"ssh_keys\"") - text)), 0);
        ck_assert_ptr_nonnull(strstr(out, "\"min_entropy\": 8,"));
        free(out);

        /* Gone. */
        ck_assert_int_ge(asprintf(&line, "%s%s", root, keys[0].path), 0);
        ck_assert_int_eq(unlink(line), 0);
        free(line);
        out = print(false, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert_int_ge(asprintf(&line, "    SSH keys: ed25519 missing: seedbed's %s (created) is no longer on disk\n",
                                  keys[0].fingerprint), 0);
        ck_assert_ptr_nonnull(strstr(out, line));
        free(line);
        free(out);
        out = print(true, &r, &ready);
        ck_assert_ptr_nonnull(strstr(out, "\"on_disk\": \"missing\",\n      \"on_disk_fingerprint\": null,\n"
                                          "      \"on_disk_checked\": \"private-key\""));
        free(out);
        free(text);
        ssh_key_results_done(keys, 2);
        ssh_key_results_done(other, 1);
}
END_TEST

/* A record is data: what it says of on_disk is not taken over, and a
 * path that names no host key file is not read. */
START_TEST(test_status_keys_hostile) {
        char *text, *out;
        bool ready;
        int r;

        ck_assert_int_ge(asprintf(&text, "{\"version\": 1, \"result\": \"ready\", \"boot_id\": \"%s\", "
                                         "\"ssh_keys\": [{\"type\": \"rsa\", \"action\": \"created\", "
                                         "\"path\": \"/etc/ssh/ssh_host_rsa_key\", \"fingerprint\": \"SHA256:x\", "
                                         "\"on_disk\": \"same\", \"on_disk_x\": 1}, "
                                         "{\"type\": \"x\", \"path\": \"/etc/shadow\", \"fingerprint\": \"SHA256:y\"}, "
                                         "{\"type\": \"x\", \"path\": \"/etc/ssh/../ssh_host_x_key\", "
                                         "\"fingerprint\": \"SHA256:z\"}, 7]}\n",
                                  this_boot_id()), 0);
        fakeroot_write(root, RECORD_SEED, text);
        free(text);
        out = print(true, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert_ptr_nonnull(strstr(out, "\"fingerprint\": \"SHA256:x\",\n      \"on_disk\": \"missing\","));
        ck_assert_ptr_null(strstr(out, "on_disk_x"));
        ck_assert_ptr_nonnull(strstr(out, "\"fingerprint\": \"SHA256:y\",\n      \"on_disk\": null,"));
        ck_assert_ptr_nonnull(strstr(out, "\"fingerprint\": \"SHA256:z\",\n      \"on_disk\": null,"));
        ck_assert_ptr_nonnull(strstr(out, "    7\n"));
        free(out);
        out = print(false, &r, &ready);
        ck_assert_int_eq(r, 0);
        ck_assert_ptr_nonnull(strstr(out, "    SSH keys: rsa     missing: seedbed's SHA256:x (created) is no longer on disk\n"
                                          "              x       SHA256:y n/a (not checked: the record names no host key "
                                          "file)\n"));
        free(out);
}
END_TEST

static int write_as(unsigned who, void *userdata) {
        RecordInput in = *(const RecordInput *) userdata;

        in.command = who == 0 ? "sshkeys" : "luks";
        return record_write(&in);
}

/* Two agents at once (sshkeys and luks units side by side): the record
 * each replaces is read under the lock, so both runs are in the boot's
 * list afterwards, whichever wrote last. */
START_TEST(test_two_writers_both_kept) {
        RecordInput in = { .path = record_file(), .config = &c, .virtio = &v, .outcome = &o,
                           .result = SEED_RESULT_READY, .command = "seed", .start_boottime_usec = 800 * USEC_PER_MSEC };

        for (unsigned round = 0; round < 8; round++) {
                char *text;

                in.command = "seed";
                ck_assert_int_eq(record_write(&in), 0);
                race_two(write_as, &in);
                text = fakeroot_read(root, RECORD_SEED);
                ck_assert_ptr_nonnull(strstr(text, "\"command\": \"seed\","));
                ck_assert_ptr_nonnull(strstr(text, "\"command\": \"sshkeys\","));
                ck_assert_ptr_nonnull(strstr(text, "\"command\": \"luks\","));
                free(text);
                ck_assert_int_eq(unlink(record_file()), 0);
        }
}
END_TEST

static Suite *record_suite(void) {
        Suite *s = suite_create("record");
        TCase *tc = tcase_create("record");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_write_and_status);
        tcase_add_test(tc, test_not_ready);
        tcase_add_test(tc, test_escaping);
        tcase_add_test(tc, test_missing_and_garbage);
        tcase_add_test(tc, test_hostile_files);
        tcase_add_test(tc, test_json_shape);
        tcase_add_test(tc, test_stale);
        tcase_add_test(tc, test_timeline_carried);
        tcase_add_test(tc, test_killed_writer_cleaned);
        tcase_add_test(tc, test_two_writers_both_kept);
        tcase_add_test(tc, test_timeline_hostile);
        tcase_add_test(tc, test_status_keys);
        tcase_add_test(tc, test_status_keys_hostile);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(record_suite)
