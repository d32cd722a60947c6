/* SPDX-License-Identifier: MIT */
/* The instance key and the UUID's keyed hash: the exact construction
 * (a vector computed apart from our code, with Python's hmac), a key file
 * only root reads (and owns), never one that is not 32 bytes, and two
 * writers that end up with one key. */
#include <dirent.h>
#include <sys/stat.h>

#include "atomic.h"
#include "fakeroot.h"
#include "instance-key.h"
#include "testmain.h"

#define UUID_A "4c4c4544-0037-3610-8056-b4c04f4b4e32"
#define UUID_B "4c4c4544-0037-3610-8056-b4c04f4b4e33"
/* python3: hmac.new(bytes(range(32)), b"seedbed instance product_uuid v1\0" + UUID_A, sha256) */
#define HMAC_A "aa680a29978b95f76b83689d670a49959c3e2e3b05dbccd0dac263ad86ab37da"
/* python3: hmac.new(bytes(range(32)), b"seedbed instance key id v1\0", sha256), 16 digits */
#define KEY_ID "44db8fef05cbd3df"

static char *root;

static void setup(void) {
        root = fakeroot_new();
}

static void teardown(void) {
        fakeroot_free(root);
        root = NULL;
}

static const char *key_path(void) {
        static char p[4096];

        snprintf(p, sizeof p, "%s%s", root, INSTANCE_KEY_FILE);
        return p;
}

static void counting_key(uint8_t key[static INSTANCE_KEY_SIZE]) {
        for (unsigned i = 0; i < INSTANCE_KEY_SIZE; i++)
                key[i] = (uint8_t) i;
}

START_TEST(test_hmac_vector) {
        uint8_t key[INSTANCE_KEY_SIZE];
        char h[INSTANCE_UUID_HMAC_HEX + 1], id[INSTANCE_KEY_ID_HEX + 1];

        counting_key(key);
        ck_assert_int_eq(instance_uuid_hmac(key, UUID_A, h), 0);
        ck_assert_str_eq(h, HMAC_A);
        ck_assert_int_eq(instance_key_id(key, id), 0);
        ck_assert_str_eq(id, KEY_ID);
        ck_assert_int_eq(instance_uuid_hmac(key, "", h), -EINVAL);
}
END_TEST

START_TEST(test_hmac_stable_and_distinct) {
        uint8_t key[INSTANCE_KEY_SIZE];
        char a1[INSTANCE_UUID_HMAC_HEX + 1], a2[INSTANCE_UUID_HMAC_HEX + 1], b[INSTANCE_UUID_HMAC_HEX + 1],
                other[INSTANCE_UUID_HMAC_HEX + 1], id1[INSTANCE_KEY_ID_HEX + 1], id2[INSTANCE_KEY_ID_HEX + 1];

        counting_key(key);
        ck_assert_int_eq(instance_uuid_hmac(key, UUID_A, a1), 0);
        ck_assert_int_eq(instance_uuid_hmac(key, UUID_A, a2), 0);
        ck_assert_str_eq(a1, a2);
        /* One digit of the UUID. */
        ck_assert_int_eq(instance_uuid_hmac(key, UUID_B, b), 0);
        ck_assert_str_ne(a1, b);
        /* Another key: another hash, and another ID. */
        ck_assert_int_eq(instance_key_id(key, id1), 0);
        key[31] ^= 1;
        ck_assert_int_eq(instance_uuid_hmac(key, UUID_A, other), 0);
        ck_assert_str_ne(a1, other);
        ck_assert_int_eq(instance_key_id(key, id2), 0);
        ck_assert_str_ne(id1, id2);
        ck_assert_uint_eq(strlen(a1), INSTANCE_UUID_HMAC_HEX);
        ck_assert_uint_eq(strspn(a1, "0123456789abcdef"), INSTANCE_UUID_HMAC_HEX);
}
END_TEST

START_TEST(test_key_load) {
        uint8_t key[INSTANCE_KEY_SIZE], want[INSTANCE_KEY_SIZE], big[INSTANCE_KEY_SIZE + 1] = {};

        ck_assert_int_eq(instance_key_load(key_path(), key), -ENOENT);
        /* Cut short, or longer: not a key, whatever its first bytes. */
        counting_key(want);
        fakeroot_write_bytes(root, INSTANCE_KEY_FILE, want, INSTANCE_KEY_SIZE - 1);
        ck_assert_int_eq(instance_key_load(key_path(), key), -EBADMSG);
        fakeroot_write_bytes(root, INSTANCE_KEY_FILE, big, sizeof big);
        ck_assert_int_eq(instance_key_load(key_path(), key), -EBADMSG);
        /* Never through a link. */
        ck_assert_int_eq(unlink(key_path()), 0);
        fakeroot_write_bytes(root, "/elsewhere", want, sizeof want);
        fakeroot_symlink(root, INSTANCE_KEY_FILE, "../../../elsewhere");
        ck_assert_int_eq(instance_key_load(key_path(), key), -EBADMSG);
        ck_assert_int_eq(unlink(key_path()), 0);

        fakeroot_write_bytes(root, INSTANCE_KEY_FILE, want, sizeof want);
        ck_assert_int_eq(chmod(key_path(), 0400), 0);
        ck_assert_int_eq(instance_key_load(key_path(), key), 0);
        ck_assert_mem_eq(key, want, sizeof want);
        ck_assert_int_eq(chmod(key_path(), 0600), 0);
        ck_assert_int_eq(instance_key_load(key_path(), key), 0);
}
END_TEST

/* A key others may read is known to them, and one another user owns may
 * be of their choosing: neither is a key, whatever its bytes. */
START_TEST(test_key_load_owner_mode) {
        static const mode_t loose[] = { 0644, 0640, 0604, 0410, 0401 };
        uint8_t key[INSTANCE_KEY_SIZE], want[INSTANCE_KEY_SIZE];

        counting_key(want);
        fakeroot_write_bytes(root, INSTANCE_KEY_FILE, want, sizeof want);
        for (unsigned i = 0; i < ELEMENTSOF(loose); i++) {
                ck_assert_int_eq(chmod(key_path(), loose[i]), 0);
                ck_assert_msg(instance_key_load(key_path(), key) == -EBADMSG, "a key file of mode %04o was read",
                              (unsigned) loose[i]);
        }
        ck_assert_int_eq(chmod(key_path(), 0400), 0);
        ck_assert_int_eq(instance_key_load(key_path(), key), 0);

        /* Only root can give a file away. */
        if (geteuid() != 0)
                return;
        ck_assert_int_eq(chown(key_path(), 65534, 65534), 0);
        ck_assert_int_eq(instance_key_load(key_path(), key), -EBADMSG);
        ck_assert_int_eq(chown(key_path(), 0, 65534), 0);
        ck_assert_int_eq(instance_key_load(key_path(), key), 0);
}
END_TEST

static unsigned count_temp_files(void) {
        char dir[4096];
        unsigned n = 0;
        DIR *d;

        snprintf(dir, sizeof dir, "%s%s", root, LOCALSTATEDIR "/lib/seedbed");
        d = opendir(dir);
        ck_assert_ptr_nonnull(d);
        for (struct dirent *de; (de = readdir(d));)
                n += atomic_is_temp_name(de->d_name, "instance-key");
        closedir(d);
        return n;
}

START_TEST(test_key_make) {
        uint8_t key[INSTANCE_KEY_SIZE], again[INSTANCE_KEY_SIZE], loaded[INSTANCE_KEY_SIZE],
                zero[INSTANCE_KEY_SIZE] = {}, replaced[INSTANCE_KEY_SIZE];
        struct stat st;

        /* Made with its directory; only root reads it. */
        ck_assert_int_eq(instance_key_make(key_path(), false, key), 0);
        ck_assert_int_eq(lstat(key_path(), &st), 0);
        ck_assert(S_ISREG(st.st_mode));
        ck_assert_uint_eq(st.st_mode & 07777, 0400);
        ck_assert_int_eq(st.st_size, INSTANCE_KEY_SIZE);
        ck_assert_int_eq(instance_key_load(key_path(), loaded), 0);
        ck_assert_mem_eq(key, loaded, sizeof key);
        ck_assert(memcmp(key, zero, sizeof key) != 0);

        /* Another writer made it first: its key, not a second one. */
        ck_assert_int_eq(instance_key_make(key_path(), false, again), 0);
        ck_assert_mem_eq(key, again, sizeof key);
        ck_assert_uint_eq(count_temp_files(), 0);

        /* Asked to replace (the file was no key): a new one. */
        ck_assert_int_eq(instance_key_make(key_path(), true, replaced), 0);
        ck_assert(memcmp(key, replaced, sizeof key) != 0);
        ck_assert_int_eq(instance_key_load(key_path(), loaded), 0);
        ck_assert_mem_eq(replaced, loaded, sizeof key);
        ck_assert_int_eq(lstat(key_path(), &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0400);
}
END_TEST

/* A run killed between making its temporary file and the rename left it
 * (0600, part of a key); nothing but the next write of the key removes
 * it. */
START_TEST(test_killed_writer_cleaned) {
        uint8_t key[INSTANCE_KEY_SIZE];
        char stale[4096];

        snprintf(stale, sizeof stale, "%s.0123456789abcdef.tmp", INSTANCE_KEY_FILE);
        fakeroot_write(root, stale, "half");
        ck_assert_int_eq(instance_key_make(key_path(), false, key), 0);
        ck_assert(!fakeroot_exists(root, stale));
        fakeroot_write(root, stale, "half");
        ck_assert_int_eq(instance_key_make(key_path(), true, key), 0);
        ck_assert(!fakeroot_exists(root, stale));
        ck_assert_uint_eq(count_temp_files(), 0);
}
END_TEST

/* What instance_key_make() stands on: never over a file that is there,
 * unless asked to replace it. */
START_TEST(test_atomic_create) {
        char path[4096], *text;

        snprintf(path, sizeof path, "%s/file", root);
        ck_assert_int_eq(atomic_write_file_locked(path, "first", 5, 0644, (uid_t) -1, (gid_t) -1, false), 0);
        ck_assert_int_eq(atomic_write_file_locked(path, "second", 6, 0644, (uid_t) -1, (gid_t) -1, false), -EEXIST);
        text = fakeroot_read(root, "/file");
        ck_assert_str_eq(text, "first");
        free(text);
        ck_assert_int_eq(atomic_write_file_locked(path, "third", 5, 0644, (uid_t) -1, (gid_t) -1, true), 0);
        text = fakeroot_read(root, "/file");
        ck_assert_str_eq(text, "third");
        free(text);
}
END_TEST

static Suite *instance_key_suite(void) {
        Suite *s = suite_create("instance-key");
        TCase *tc;

        tc = tcase_create("hmac");
        tcase_add_test(tc, test_hmac_vector);
        tcase_add_test(tc, test_hmac_stable_and_distinct);
        suite_add_tcase(s, tc);

        tc = tcase_create("file");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_key_load);
        tcase_add_test(tc, test_key_load_owner_mode);
        tcase_add_test(tc, test_key_make);
        tcase_add_test(tc, test_killed_writer_cleaned);
        tcase_add_test(tc, test_atomic_create);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(instance_key_suite)
