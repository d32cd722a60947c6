/* SPDX-License-Identifier: MIT */
/* The parts of agent/luks.c that need no block device: device specs
 * parsed and checked, paths resolved, volumes with bad settings or no
 * device stopped before any secret is made, and key files created the
 * way secrets must be (0400 in 0700, never replacing one).  Formatting
 * real devices is tests/integration/luks.sh. */
#include <dirent.h>
#include <sys/stat.h>

#include "fakeroot.h"
#include "fileio.h"
#include "luks.h"
#include "testmain.h"

static char *root;
static unsigned random_calls;
static uint8_t random_last[LUKS_KEY_FILE_SIZE];

static void setup(void) {
        root = fakeroot_new();
        random_calls = 0;
}

static void teardown(void) {
        fakeroot_free(root);
        root = NULL;
}

/* Counts calls and remembers the bytes, so a test can see the key file
 * holds exactly them. */
static int counting_random(void *buf, size_t n, void *userdata) {
        uint8_t *p = buf;

        random_calls++;
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t) (0x5a ^ (i * 7) ^ random_calls);
        if (n <= sizeof random_last)
                memcpy(random_last, buf, n);
        if (userdata)
                return *(int *) userdata;
        return 0;
}

/* ---- parse ---- */

static void parse_ok(const char *s, DeviceSpecKind kind, const char *value) {
        const char *why = NULL;
        DeviceSpec spec;

        ck_assert_int_eq(device_spec_parse(s, &spec, &why), 0);
        ck_assert_ptr_null(why);
        ck_assert_int_eq(spec.kind, kind);
        ck_assert_str_eq(spec.value, value);
        ck_assert_int_eq(device_spec_validate(s, &why), 0);
}

static void parse_bad(const char *s, const char *reason) {
        const char *why = NULL;
        DeviceSpec spec;

        ck_assert_int_eq(device_spec_parse(s, &spec, &why), -EINVAL);
        ck_assert_ptr_nonnull(why);
        ck_assert_msg(strstr(why, reason), "'%s': '%s' does not say '%s'", strempty(s), why, reason);
}

START_TEST(test_parse_paths) {
        parse_ok("/dev/vdb", DEVICE_SPEC_PATH, "/dev/vdb");
        parse_ok("/dev/disk/by-id/virtio-data", DEVICE_SPEC_PATH, "/dev/disk/by-id/virtio-data");
        /* A path may hold "=": it is a path first. */
        parse_ok("/dev/disk/by-path/pci-0000:00:05.0=x", DEVICE_SPEC_PATH, "/dev/disk/by-path/pci-0000:00:05.0=x");
}
END_TEST

START_TEST(test_parse_tags) {
        parse_ok("LABEL=data", DEVICE_SPEC_LABEL, "data");
        parse_ok("UUID=0a1b2c3d-0000-4000-8000-000000000001", DEVICE_SPEC_UUID, "0a1b2c3d-0000-4000-8000-000000000001");
        parse_ok("PARTLABEL=data", DEVICE_SPEC_PARTLABEL, "data");
        parse_ok("PARTUUID=5b2e4f4e-01", DEVICE_SPEC_PARTUUID, "5b2e4f4e-01");
        /* As blkid and fstab write them; the quotes are not the value. */
        parse_ok("LABEL=\"my data\"", DEVICE_SPEC_LABEL, "my data");
        parse_ok("PARTLABEL=a=b", DEVICE_SPEC_PARTLABEL, "a=b");
        /* A lone quote is part of the value. */
        parse_ok("LABEL=\"x", DEVICE_SPEC_LABEL, "\"x");

        ck_assert_str_eq(device_spec_kind_to_tag(DEVICE_SPEC_PARTUUID), "PARTUUID");
        ck_assert_ptr_null(device_spec_kind_to_tag(DEVICE_SPEC_PATH));
        ck_assert_ptr_null(device_spec_kind_to_tag(_DEVICE_SPEC_KIND_MAX));
}
END_TEST

START_TEST(test_parse_invalid) {
        char longer[PATH_MAX + 8];

        parse_bad(NULL, "is empty");
        parse_bad("", "is empty");
        parse_bad("LABEL=", "has an empty value");
        parse_bad("UUID=\"\"", "has an empty value");
        parse_bad("PARTUUID=", "has an empty value");
        parse_bad("FOO=bar", "unknown tag");
        parse_bad("label=data", "unknown tag");
        parse_bad("=data", "unknown tag");
        parse_bad("ID=virtio-data", "unknown tag");
        parse_bad("vdb", "must be an absolute path");
        parse_bad("dev/vdb", "must be an absolute path");
        parse_bad("./vdb", "must be an absolute path");
        parse_bad("LABEL=da\nta", "control characters");
        parse_bad("/dev/vdb\t", "control characters");

        memset(longer, 'a', sizeof longer - 1);
        longer[0] = '/';
        longer[sizeof longer - 1] = 0;
        parse_bad(longer, "too long");
}
END_TEST

/* ---- resolve ---- */

static int resolve(const char *s, char **ret, char *error, size_t size) {
        const char *why;
        DeviceSpec spec;

        ck_assert_int_eq(device_spec_parse(s, &spec, &why), 0);
        error[0] = 0;
        return device_spec_resolve(&spec, ret, error, size);
}

START_TEST(test_resolve_path) {
        char error[512], *p = NULL, *link, *file;
        struct stat st;

        ck_assert_int_eq(resolve("/dev/null", &p, error, sizeof error), -ENOTBLK);
        ck_assert_str_eq(error, "'/dev/null' is not a block device");
        ck_assert_ptr_null(p);

        file = path_join_root(root, "/image");
        fakeroot_write(root, "/image", "not a disk");
        ck_assert_int_eq(resolve(file, &p, error, sizeof error), -ENOTBLK);
        free(file);

        link = path_join_root(root, "/no/such/device");
        ck_assert_int_eq(resolve(link, &p, error, sizeof error), -ENODEV);
        ck_assert_ptr_nonnull(strstr(error, "no device '"));
        free(link);

        /* A link (as /dev/disk/by-id/...) is followed to the node. */
        if (stat("/dev/loop0", &st) == 0 && S_ISBLK(st.st_mode)) {
                link = path_join_root(root, "/dev/disk/by-id/virtio-data");
                fakeroot_symlink(root, "/dev/disk/by-id/virtio-data", "/dev/loop0");
                ck_assert_int_eq(resolve(link, &p, error, sizeof error), 0);
                ck_assert_str_eq(p, "/dev/loop0");
                free(p);
                free(link);
        }
}
END_TEST

START_TEST(test_resolve_tag_missing) {
        char error[512], spec[128], want[160], *p = NULL;

        /* Evaluated on this machine, which has no such label. */
        snprintf(spec, sizeof spec, "LABEL=seedbed-test-none-%d", (int) getpid());
        ck_assert_int_eq(resolve(spec, &p, error, sizeof error), -ENODEV);
        snprintf(want, sizeof want, "no device with %s", spec);
        ck_assert_str_eq(error, want);
        ck_assert_ptr_null(p);

        snprintf(spec, sizeof spec, "PARTUUID=00000000-seedbed-%d", (int) getpid());
        ck_assert_int_eq(resolve(spec, &p, error, sizeof error), -ENODEV);
}
END_TEST

/* ---- volumes stopped before anything is made ---- */

static int setup_volume(const LuksVolume *v, LuksResult *res) {
        LuksOptions o = { .root = root, .crng_ready = true, .random = counting_random };
        return luks_volume_setup(&o, v, res);
}

static void expect_nothing_made(void) {
        ck_assert_uint_eq(random_calls, 0);
        ck_assert(!fakeroot_exists(root, "/etc/seedbed"));
        ck_assert(!fakeroot_exists(root, "/etc/crypttab"));
}

START_TEST(test_volume_defaults) {
        LuksVolume v;

        luks_volume_init(&v);
        ck_assert(v.crypttab);
        ck_assert(v.open);
        ck_assert(!v.wipe);
        ck_assert_ptr_null(v.key_file);
        ck_assert_ptr_null(v.label);
}
END_TEST

START_TEST(test_volume_invalid) {
        LuksResult res;
        LuksVolume v;

        luks_volume_init(&v);
        v.device = "/dev/vdb";
        v.name = "my data";
        ck_assert_int_eq(setup_volume(&v, &res), -EINVAL);
        ck_assert_int_eq(res.action, LUKS_ACTION_FAILED);
        ck_assert_ptr_nonnull(strstr(res.error, "invalid name"));
        v.name = "-data";
        ck_assert_int_eq(setup_volume(&v, &res), -EINVAL);
        v.name = NULL;
        ck_assert_int_eq(setup_volume(&v, &res), -EINVAL);

        v.name = "data";
        v.key_file = "keys/data.key";
        ck_assert_int_eq(setup_volume(&v, &res), -EINVAL);
        ck_assert_str_eq(res.error, "key file 'keys/data.key' must be an absolute path without blanks.");
        v.key_file = "/etc/my keys/data.key";
        ck_assert_int_eq(setup_volume(&v, &res), -EINVAL);

        v.key_file = NULL;
        v.label = "a label that is longer than the forty-seven bytes LUKS2 has";
        ck_assert_int_eq(setup_volume(&v, &res), -EINVAL);
        ck_assert_ptr_nonnull(strstr(res.error, "at most 47 bytes"));

        v.label = NULL;
        v.device = "FOO=bar";
        ck_assert_int_eq(setup_volume(&v, &res), -EINVAL);
        ck_assert_str_eq(res.spec, "FOO=bar");
        ck_assert_ptr_nonnull(strstr(res.error, "device 'FOO=bar' has an unknown tag (use LABEL="));
        v.device = "LABEL=";
        ck_assert_int_eq(setup_volume(&v, &res), -EINVAL);
        ck_assert_str_eq(res.error, "device 'LABEL=' has an empty value.");

        expect_nothing_made();
}
END_TEST

START_TEST(test_volume_not_found) {
        char spec[128];
        LuksResult res;
        LuksVolume v;

        luks_volume_init(&v);
        snprintf(spec, sizeof spec, "PARTLABEL=seedbed-test-none-%d", (int) getpid());
        v.device = spec;
        v.name = "data";
        ck_assert_int_eq(setup_volume(&v, &res), -ENODEV);
        ck_assert_int_eq(res.action, LUKS_ACTION_NOT_FOUND);
        ck_assert_str_eq(res.device, "");
        ck_assert_str_eq(res.key_file, "/etc/seedbed/keys/data.key");
        ck_assert_int_eq(res.open, LUKS_STEP_SKIPPED);
        ck_assert_int_eq(res.crypttab, LUKS_STEP_SKIPPED);
        ck_assert_ptr_nonnull(strstr(res.error, "no device with PARTLABEL=seedbed-test-none-"));
        expect_nothing_made();
}
END_TEST

START_TEST(test_volume_not_block) {
        char *file = path_join_root(root, "/disk.img");
        LuksResult res;
        LuksVolume v;

        /* An image file is not a device: libcryptsetup would attach a
         * loop device behind our back. */
        fakeroot_write(root, "/disk.img", "");
        luks_volume_init(&v);
        v.device = file;
        v.name = "data";
        v.key_file = "/keys/data.key";
        ck_assert_int_eq(setup_volume(&v, &res), -ENOTBLK);
        ck_assert_int_eq(res.action, LUKS_ACTION_FAILED);
        ck_assert_ptr_nonnull(strstr(res.error, "is not a block device"));
        ck_assert_str_eq(res.key_file, "/keys/data.key");
        expect_nothing_made();
        free(file);
}
END_TEST

START_TEST(test_strings) {
        ck_assert_str_eq(luks_action_to_string(LUKS_ACTION_FORMATTED), "formatted");
        ck_assert_str_eq(luks_action_to_string(LUKS_ACTION_ALREADY_DONE), "already-done");
        ck_assert_str_eq(luks_action_to_string(LUKS_ACTION_REFUSED), "refused");
        ck_assert_str_eq(luks_action_to_string(LUKS_ACTION_FAILED), "failed");
        ck_assert_str_eq(luks_action_to_string(LUKS_ACTION_NOT_FOUND), "not-found");
        ck_assert_ptr_null(luks_action_to_string(_LUKS_ACTION_MAX));
        ck_assert_str_eq(luks_step_to_string(LUKS_STEP_SKIPPED), "skipped");
        ck_assert_str_eq(luks_step_to_string(LUKS_STEP_DONE), "done");
        ck_assert_str_eq(luks_step_to_string(LUKS_STEP_ALREADY), "already");
        ck_assert_str_eq(luks_step_to_string(LUKS_STEP_FAILED), "failed");
        ck_assert_ptr_null(luks_step_to_string(-1));
}
END_TEST

/* ---- key files ---- */

static char *key_path(void) {
        char *p = path_join_root(root, "/etc/seedbed/keys/data.key");
        ck_assert_ptr_nonnull(p);
        return p;
}

static void expect_dir_holds_only(const char *dir, const char *name) {
        char *p = path_join_root(root, dir);
        struct dirent *de;
        unsigned n = 0;
        DIR *d = opendir(p);

        ck_assert_ptr_nonnull(d);
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (name)
                        ck_assert_str_eq(de->d_name, name);
                n++;
        }
        closedir(d);
        free(p);
        ck_assert_uint_eq(n, name ? 1 : 0);
}

START_TEST(test_key_create) {
        char *path = key_path(), *dir = path_join_root(root, "/etc/seedbed/keys");
        void *key = NULL, *again = NULL;
        size_t n = 0, m = 0;
        struct stat st;
        mode_t old_umask;

        /* Neither a strict umask nor none at all decides the modes. */
        old_umask = umask(_i == 0 ? 0077 : 0);
        ck_assert_int_eq(luks_key_file_load(path, true, counting_random, NULL, &key, &n), 1);
        umask(old_umask);
        ck_assert_uint_eq(random_calls, 1);
        ck_assert_uint_eq(n, LUKS_KEY_FILE_SIZE);
        ck_assert_mem_eq(key, random_last, n);

        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0400);
        ck_assert_uint_eq(st.st_uid, geteuid());
        ck_assert_int_eq((int) st.st_size, LUKS_KEY_FILE_SIZE);
        ck_assert_int_eq(stat(dir, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0700);
        expect_dir_holds_only("/etc/seedbed/keys", "data.key");

        /* Loaded, not made again. */
        ck_assert_int_eq(luks_key_file_load(path, true, counting_random, NULL, &again, &m), 0);
        ck_assert_uint_eq(random_calls, 1);
        ck_assert_uint_eq(m, n);
        ck_assert_mem_eq(again, key, n);

        luks_secret_erase(key, n);
        luks_secret_erase(again, m);
        free(path);
        free(dir);
}
END_TEST

START_TEST(test_key_stale_temp_removed) {
        char *path = key_path();
        void *key = NULL;
        size_t n = 0;

        /* What a crash before the rename leaves, under the names every
         * atomic write uses and under those of seedbed 0.1's key files;
         * another key's are not this one's. */
        fakeroot_write(root, "/etc/seedbed/keys/data.key.0123456789abcdef.tmp", "half a key");
        fakeroot_write(root, "/etc/seedbed/keys/.data.key.123.456.tmp", "half a key");
        fakeroot_write(root, "/etc/seedbed/keys/other.key.0123456789abcdef.tmp", "x");
        fakeroot_write(root, "/etc/seedbed/keys/.other.key.123.456.tmp", "x");
        ck_assert_int_eq(luks_key_file_load(path, true, counting_random, NULL, &key, &n), 1);
        ck_assert(!fakeroot_exists(root, "/etc/seedbed/keys/data.key.0123456789abcdef.tmp"));
        ck_assert(!fakeroot_exists(root, "/etc/seedbed/keys/.data.key.123.456.tmp"));
        ck_assert(fakeroot_exists(root, "/etc/seedbed/keys/other.key.0123456789abcdef.tmp"));
        ck_assert(fakeroot_exists(root, "/etc/seedbed/keys/.other.key.123.456.tmp"));
        ck_assert(fakeroot_exists(root, "/etc/seedbed/keys/data.key"));
        luks_secret_erase(key, n);
        free(path);
}
END_TEST

/* A run killed in atomic.c's link() fallback, after the key's name was
 * made and before the temporary one was removed, left a second name of
 * the key: the next run, which finds the key there, removes it too. */
START_TEST(test_key_stale_temp_removed_existing) {
        char *path = key_path(), *tmp = path_join_root(root, "/etc/seedbed/keys/data.key.0123456789abcdef.tmp");
        void *key = NULL;
        size_t n = 0;

        fakeroot_write(root, "/etc/seedbed/keys/data.key", "provisioned key\n");
        ck_assert_int_eq(link(path, tmp), 0);
        ck_assert_int_eq(luks_key_file_load(path, false, counting_random, NULL, &key, &n), 0);
        ck_assert_mem_eq(key, "provisioned key\n", n);
        ck_assert(!fakeroot_exists(root, "/etc/seedbed/keys/data.key.0123456789abcdef.tmp"));
        ck_assert(fakeroot_exists(root, "/etc/seedbed/keys/data.key"));
        luks_secret_erase(key, n);
        free(tmp);
        free(path);
}
END_TEST

START_TEST(test_key_missing) {
        char *path = key_path();
        void *key = NULL;
        size_t n = 0;

        ck_assert_int_eq(luks_key_file_load(path, false, counting_random, NULL, &key, &n), -ENOENT);
        ck_assert_ptr_null(key);
        ck_assert_uint_eq(random_calls, 0);
        ck_assert(!fakeroot_exists(root, "/etc/seedbed"));
        free(path);
}
END_TEST

START_TEST(test_key_existing_kept) {
        char *path = key_path(), *dir = path_join_root(root, "/etc/seedbed/keys");
        void *key = NULL;
        size_t n = 0;
        struct stat st;

        /* Someone's key file, in a directory someone made 0755: used as
         * it is, and the directory is not ours to tighten. */
        fakeroot_write(root, "/etc/seedbed/keys/data.key", "provisioned key\n");
        ck_assert_int_eq(chmod(dir, 0755), 0);
        ck_assert_int_eq(luks_key_file_load(path, true, counting_random, NULL, &key, &n), 0);
        ck_assert_uint_eq(random_calls, 0);
        ck_assert_uint_eq(n, strlen("provisioned key\n"));
        ck_assert_mem_eq(key, "provisioned key\n", n);
        ck_assert_int_eq(stat(dir, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0755);
        luks_secret_erase(key, n);

        /* A new key file in that directory is still 0400. */
        free(path);
        path = path_join_root(root, "/etc/seedbed/keys/other.key");
        ck_assert_int_eq(luks_key_file_load(path, true, counting_random, NULL, &key, &n), 1);
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0400);
        luks_secret_erase(key, n);
        free(path);
        free(dir);
}
END_TEST

START_TEST(test_key_bad_files) {
        char *path = key_path(), *target;
        void *key = NULL;
        size_t n = 0;

        fakeroot_write(root, "/etc/seedbed/keys/data.key", "");
        ck_assert_int_eq(luks_key_file_load(path, true, counting_random, NULL, &key, &n), -ENODATA);
        ck_assert_int_eq(unlink(path), 0);

        /* A link could lead out of the tree, or to a key not ours. */
        fakeroot_write(root, "/elsewhere.key", "k");
        target = path_join_root(root, "/elsewhere.key");
        fakeroot_symlink(root, "/etc/seedbed/keys/data.key", target);
        ck_assert_int_eq(luks_key_file_load(path, true, counting_random, NULL, &key, &n), -ELOOP);
        ck_assert_int_eq(unlink(path), 0);
        free(target);

        fakeroot_mkdir(root, "/etc/seedbed/keys/data.key");
        ck_assert_int_eq(luks_key_file_load(path, true, counting_random, NULL, &key, &n), -EBADF);

        ck_assert_ptr_null(key);
        ck_assert_uint_eq(random_calls, 0);
        free(path);
}
END_TEST

START_TEST(test_key_random_fails) {
        char *path = key_path();
        int error = -EIO;
        void *key = NULL;
        size_t n = 0;

        /* No half key: nothing at all is left. */
        ck_assert_int_eq(luks_key_file_load(path, true, counting_random, &error, &key, &n), -EIO);
        ck_assert_ptr_null(key);
        expect_dir_holds_only("/etc/seedbed/keys", NULL);
        free(path);
}
END_TEST

START_TEST(test_key_symlinked_dir) {
        char *path = key_path(), *target;
        void *key = NULL;
        size_t n = 0;

        /* The key directory itself may not be a link either. */
        fakeroot_mkdir(root, "/elsewhere");
        fakeroot_mkdir(root, "/etc/seedbed");
        target = path_join_root(root, "/elsewhere");
        fakeroot_symlink(root, "/etc/seedbed/keys", target);
        ck_assert_int_lt(luks_key_file_load(path, true, counting_random, NULL, &key, &n), 0);
        ck_assert_ptr_null(key);
        expect_dir_holds_only("/elsewhere", NULL);
        free(target);
        free(path);
}
END_TEST

static Suite *luks_spec_suite(void) {
        Suite *s = suite_create("luks-spec");
        TCase *tc;

        tc = tcase_create("parse");
        tcase_add_test(tc, test_parse_paths);
        tcase_add_test(tc, test_parse_tags);
        tcase_add_test(tc, test_parse_invalid);
        suite_add_tcase(s, tc);

        tc = tcase_create("resolve");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_resolve_path);
        tcase_add_test(tc, test_resolve_tag_missing);
        suite_add_tcase(s, tc);

        tc = tcase_create("volume");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_volume_defaults);
        tcase_add_test(tc, test_volume_invalid);
        tcase_add_test(tc, test_volume_not_found);
        tcase_add_test(tc, test_volume_not_block);
        tcase_add_test(tc, test_strings);
        suite_add_tcase(s, tc);

        tc = tcase_create("key-file");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_loop_test(tc, test_key_create, 0, 2);
        tcase_add_test(tc, test_key_stale_temp_removed);
        tcase_add_test(tc, test_key_stale_temp_removed_existing);
        tcase_add_test(tc, test_key_missing);
        tcase_add_test(tc, test_key_existing_kept);
        tcase_add_test(tc, test_key_bad_files);
        tcase_add_test(tc, test_key_random_fails);
        tcase_add_test(tc, test_key_symlinked_dir);
        suite_add_tcase(s, tc);

        return s;
}

TEST_MAIN(luks_spec_suite)
