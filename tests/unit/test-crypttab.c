/* SPDX-License-Identifier: MIT */
/* /etc/crypttab editing: one line per volume name, made right in place or
 * appended; every other byte of the file kept; a file already right is
 * not rewritten; the write is atomic and leaves nothing behind. */
#include <dirent.h>
#include <sys/stat.h>

#include "crypttab.h"
#include "fakeroot.h"
#include "fileio.h"
#include "race.h"
#include "testmain.h"

#define LINE "data UUID=1111 /etc/seedbed/keys/data.key luks\n"

static char *root;
static char *path;

static void setup(void) {
        root = fakeroot_new();
        path = path_join_root(root, "/etc/crypttab");
        ck_assert_ptr_nonnull(path);
}

static void teardown(void) {
        free(path);
        path = NULL;
        fakeroot_free(root);
        root = NULL;
}

static int update(const char *name, const char *device) {
        return crypttab_update(path, name, device, "/etc/seedbed/keys/data.key", "luks");
}

static void expect_file(const char *want) {
        char *got = fakeroot_read(root, "/etc/crypttab");
        ck_assert_ptr_nonnull(got);
        ck_assert_str_eq(got, want);
        free(got);
}

/* Only the file itself in /etc: no temporary file survives a write. */
static void expect_alone(void) {
        char *etc = path_join_root(root, "/etc");
        struct dirent *de;
        unsigned n = 0;
        DIR *d;

        d = opendir(etc);
        ck_assert_ptr_nonnull(d);
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                ck_assert_str_eq(de->d_name, "crypttab");
                n++;
        }
        closedir(d);
        free(etc);
        ck_assert_uint_eq(n, 1);
}

/* The pure edit, for exact text checks without files. */
static char *edit(const char *text, const char *name, const char *device, const char *key, const char *options,
                  int want) {
        char *out = NULL;
        size_t n = 0;

        ck_assert_int_eq(crypttab_edit(text, strlen(text), name, device, key, options, &out, &n), want);
        if (want <= 0) {
                ck_assert_ptr_null(out);
                return NULL;
        }
        ck_assert_uint_eq(n, strlen(out));
        return out;
}

START_TEST(test_new_file) {
        struct stat st;

        /* No /etc at all: a tree being prepared under --root. */
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        expect_file(LINE);
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0644);
        expect_alone();
}
END_TEST

START_TEST(test_empty_file) {
        fakeroot_write(root, "/etc/crypttab", "");
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        expect_file(LINE);
}
END_TEST

START_TEST(test_append_keeps_everything) {
        static const char old[] =
                "# /etc/crypttab: mappings for encrypted partitions.\n"
                "#\n"
                "# <name>\t<device>\t<key>\t<options>\n"
                "\n"
                "swap\t/dev/disk/by-partlabel/swap\t/dev/urandom\tswap,cipher=aes-xts-plain64\n"
                "   home   UUID=abcd   none   luks,discard   \n"
                "\n";
        char want[sizeof old + sizeof LINE];

        fakeroot_write(root, "/etc/crypttab", old);
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        snprintf(want, sizeof want, "%s%s", old, LINE);
        expect_file(want);
        expect_alone();
}
END_TEST

START_TEST(test_append_after_unterminated_line) {
        fakeroot_write(root, "/etc/crypttab", "home UUID=abcd none luks");
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        expect_file("home UUID=abcd none luks\n" LINE);
}
END_TEST

START_TEST(test_replace_in_place) {
        fakeroot_write(root, "/etc/crypttab",
                       "# first\n"
                       "data UUID=0000 /etc/seedbed/keys/data.key luks\n"
                       "home UUID=abcd none luks\n");
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        expect_file("# first\n" LINE "home UUID=abcd none luks\n");
        /* Another name is another line. */
        ck_assert_int_eq(update("data2", "UUID=2222"), 1);
        expect_file("# first\n" LINE "home UUID=abcd none luks\n"
                    "data2 UUID=2222 /etc/seedbed/keys/data.key luks\n");
}
END_TEST

START_TEST(test_replace_unterminated_last_line) {
        fakeroot_write(root, "/etc/crypttab", "home UUID=abcd none luks\ndata /dev/vdb none");
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        expect_file("home UUID=abcd none luks\n" LINE);
}
END_TEST

START_TEST(test_duplicates_dropped) {
        fakeroot_write(root, "/etc/crypttab",
                       "data /dev/vdb none\n"
                       "home UUID=abcd none luks\n"
                       "\tdata /dev/vdc none luks\n"
                       "data\n");
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        expect_file(LINE "home UUID=abcd none luks\n");
        /* The same holds when the first one was already right. */
        fakeroot_write(root, "/etc/crypttab", LINE "home UUID=abcd none luks\n" "data /dev/vdc none\n");
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        expect_file(LINE "home UUID=abcd none luks\n");
}
END_TEST

START_TEST(test_unchanged_not_rewritten) {
        struct stat a, b;

        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        ck_assert_int_eq(stat(path, &a), 0);
        ck_assert_int_eq(update("data", "UUID=1111"), 0);
        ck_assert_int_eq(stat(path, &b), 0);
        /* Not even the same bytes written again: same inode. */
        ck_assert_uint_eq(a.st_ino, b.st_ino);
        expect_file(LINE);
}
END_TEST

START_TEST(test_admin_options_kept) {
        static const char tuned[] = "data\tUUID=1111  /etc/seedbed/keys/data.key\tdiscard,luks,no-read-workqueue\n";
        struct stat a, b;

        /* Same device and key, our option among theirs: theirs to keep,
         * down to the tabs. */
        fakeroot_write(root, "/etc/crypttab", tuned);
        ck_assert_int_eq(stat(path, &a), 0);
        ck_assert_int_eq(update("data", "UUID=1111"), 0);
        ck_assert_int_eq(stat(path, &b), 0);
        ck_assert_uint_eq(a.st_ino, b.st_ino);
        expect_file(tuned);

        /* Without "luks" it is not our line any more. */
        fakeroot_write(root, "/etc/crypttab", "data UUID=1111 /etc/seedbed/keys/data.key discard\n");
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        expect_file(LINE);
        /* "luks" as part of another option does not count. */
        fakeroot_write(root, "/etc/crypttab", "data UUID=1111 /etc/seedbed/keys/data.key luks2,noluks\n");
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        expect_file(LINE);
        /* Another key file or device: replaced. */
        fakeroot_write(root, "/etc/crypttab", "data UUID=1111 /root/other.key luks\n");
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        expect_file(LINE);
}
END_TEST

START_TEST(test_comments_not_matched) {
        static const char old[] = "# data UUID=0000 /etc/seedbed/keys/data.key luks\n"
                                  "  #data commented with indent\n"
                                  "#data\n";
        char *out;

        out = edit(old, "data", "UUID=1111", "/etc/seedbed/keys/data.key", "luks", 1);
        ck_assert_str_eq(out, "# data UUID=0000 /etc/seedbed/keys/data.key luks\n"
                              "  #data commented with indent\n"
                              "#data\n" LINE);
        free(out);
}
END_TEST

START_TEST(test_odd_lines_kept) {
        /* Lines no parser would accept, CRLF endings, a name that merely
         * starts like ours, bytes that are not text: all someone else's. */
        static const char old[] = "garbage\n"
                                  "data2 /dev/vdb\n"
                                  "dataX\r\n"
                                  "   \t  \n"
                                  "home UUID=abcd none luks\r\n"
                                  "\xff\xfe binary \x01\n";
        char *out, want[sizeof old + sizeof LINE];

        out = edit(old, "data", "UUID=1111", "/etc/seedbed/keys/data.key", "luks", 1);
        snprintf(want, sizeof want, "%s%s", old, LINE);
        ck_assert_str_eq(out, want);
        free(out);

        /* A line for our name with CRLF is ours: replaced, with our ending. */
        out = edit("a b c\r\ndata /dev/vdb none\r\nz y x\r\n", "data", "UUID=1111", "/etc/seedbed/keys/data.key",
                   "luks", 1);
        ck_assert_str_eq(out, "a b c\r\n" LINE "z y x\r\n");
        free(out);
}
END_TEST

START_TEST(test_fields) {
        char *out;

        /* No key file is "none"; no options leaves the field out. */
        out = edit("", "data", "/dev/vdb", NULL, NULL, 1);
        ck_assert_str_eq(out, "data /dev/vdb none\n");
        free(out);
        out = edit("", "data", "/dev/vdb", "none", "", 1);
        ck_assert_str_eq(out, "data /dev/vdb none\n");
        free(out);
        /* Such a line is right when it has no options or any. */
        edit("data /dev/vdb none\n", "data", "/dev/vdb", NULL, NULL, 0);
        edit("data /dev/vdb none discard\n", "data", "/dev/vdb", NULL, NULL, 0);
        /* Several options: all of them must be there, in any order. */
        edit("data /dev/vdb none discard,luks\n", "data", "/dev/vdb", NULL, "luks,discard", 0);
        out = edit("data /dev/vdb none luks\n", "data", "/dev/vdb", NULL, "luks,discard", 1);
        ck_assert_str_eq(out, "data /dev/vdb none luks,discard\n");
        free(out);

        /* Fields crypttab cannot hold as one word. */
        edit("", "my data", "/dev/vdb", NULL, NULL, -EINVAL);
        edit("", "", "/dev/vdb", NULL, NULL, -EINVAL);
        edit("", "#data", "/dev/vdb", NULL, NULL, -EINVAL);
        edit("", "data", "/dev/v db", NULL, NULL, -EINVAL);
        edit("", "data", "/dev/vdb", "/etc/my key", NULL, -EINVAL);
        edit("", "data", "/dev/vdb", NULL, "luks, discard", -EINVAL);
        edit("", "data", "/dev/vdb\n", NULL, NULL, -EINVAL);
        ck_assert(!crypttab_field_valid(NULL));
        ck_assert(crypttab_field_valid("UUID=1111"));
}
END_TEST

START_TEST(test_mode_kept) {
        struct stat st;

        fakeroot_write(root, "/etc/crypttab", "home UUID=abcd none luks\n");
        ck_assert_int_eq(chmod(path, 0600), 0);
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0600);
        expect_alone();
}
END_TEST

/* A run killed between making its temporary file and the rename left it;
 * nothing but the next write of crypttab removes it. */
START_TEST(test_killed_writer_cleaned) {
        fakeroot_write(root, "/etc/crypttab", "home UUID=abcd none luks\n");
        fakeroot_write(root, "/etc/crypttab.0123456789abcdef.tmp", "home UUID=abcd none luks\nda");
        ck_assert_int_eq(update("data", "UUID=1111"), 1);
        expect_file("home UUID=abcd none luks\n" LINE);
        expect_alone();
}
END_TEST

static int add_one(unsigned who, void *userdata) {
        return update(who == 0 ? "alpha" : "beta", *(const char **) userdata);
}

/* Two agents formatting two volumes at once each add their line: the
 * file is read under the lock, so neither writes over the other's
 * (a lost line is a volume nobody unlocks at boot). */
START_TEST(test_two_writers_both_kept) {
        for (unsigned round = 0; round < 8; round++) {
                char dev[32], *text;
                const char *d = dev;

                snprintf(dev, sizeof dev, "UUID=%u", round);
                fakeroot_write(root, "/etc/crypttab", "# admin's\n");
                race_two(add_one, &d);
                text = fakeroot_read(root, "/etc/crypttab");
                ck_assert_ptr_nonnull(strstr(text, "alpha UUID="));
                ck_assert_ptr_nonnull(strstr(text, "beta UUID="));
                ck_assert_ptr_nonnull(strstr(text, "# admin's\n"));
                free(text);
                expect_alone();
        }
}
END_TEST

START_TEST(test_symlink_refused) {
        char *target;

        /* Under --root, an absolute link would lead out of the tree. */
        fakeroot_write(root, "/elsewhere/crypttab", "home UUID=abcd none luks\n");
        target = path_join_root(root, "/elsewhere/crypttab");
        fakeroot_symlink(root, "/etc/crypttab", target);
        ck_assert_int_eq(update("data", "UUID=1111"), -ELOOP);
        free(target);
        target = fakeroot_read(root, "/elsewhere/crypttab");
        ck_assert_str_eq(target, "home UUID=abcd none luks\n");
        free(target);
}
END_TEST

START_TEST(test_not_a_file) {
        fakeroot_mkdir(root, "/etc/crypttab");
        ck_assert_int_lt(update("data", "UUID=1111"), 0);
        ck_assert(fakeroot_exists(root, "/etc/crypttab"));
}
END_TEST

START_TEST(test_too_large) {
        char *big = malloc(2 * 1024 * 1024 + 1);

        ck_assert_ptr_nonnull(big);
        memset(big, '#', 2 * 1024 * 1024);
        big[2 * 1024 * 1024] = 0;
        fakeroot_write(root, "/etc/crypttab", big);
        ck_assert_int_eq(update("data", "UUID=1111"), -EFBIG);
        free(big);
}
END_TEST

static Suite *crypttab_suite(void) {
        Suite *s = suite_create("crypttab");
        TCase *tc;

        tc = tcase_create("append");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_new_file);
        tcase_add_test(tc, test_empty_file);
        tcase_add_test(tc, test_append_keeps_everything);
        tcase_add_test(tc, test_append_after_unterminated_line);
        suite_add_tcase(s, tc);

        tc = tcase_create("replace");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_replace_in_place);
        tcase_add_test(tc, test_replace_unterminated_last_line);
        tcase_add_test(tc, test_duplicates_dropped);
        tcase_add_test(tc, test_unchanged_not_rewritten);
        tcase_add_test(tc, test_admin_options_kept);
        suite_add_tcase(s, tc);

        tc = tcase_create("format");
        tcase_add_test(tc, test_comments_not_matched);
        tcase_add_test(tc, test_odd_lines_kept);
        tcase_add_test(tc, test_fields);
        suite_add_tcase(s, tc);

        tc = tcase_create("file");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_mode_kept);
        tcase_add_test(tc, test_killed_writer_cleaned);
        tcase_add_test(tc, test_two_writers_both_kept);
        tcase_add_test(tc, test_symlink_refused);
        tcase_add_test(tc, test_not_a_file);
        tcase_add_test(tc, test_too_large);
        suite_add_tcase(s, tc);

        return s;
}

TEST_MAIN(crypttab_suite)
