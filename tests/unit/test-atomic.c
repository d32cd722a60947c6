/* SPDX-License-Identifier: MIT */
/* common/atomic.h: the names of our temporary files, the removal of those
 * a crash left, files made in a directory held open, and files written
 * under their directory's lock. */
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "atomic.h"
#include "fakeroot.h"
#include "fileio.h"
#include "macro.h"
#include "testmain.h"

static char *root;

static void setup(void) {
        root = fakeroot_new();
}

static void teardown(void) {
        fakeroot_free(root);
        root = NULL;
}

static const struct {
        const char *name;
        const char *target;
        bool ours;
} name_rows[] = {
        { "key.0123456789abcdef.tmp", "key", true },
        { "key.pub.fedcba9876543210.tmp", "key.pub", true },
        /* seedbed 0.1's LUKS key files: ".NAME.<pid>.<usec>.tmp". */
        { ".data.key.123.456.tmp", "data.key", true },
        { ".data.key.1.99999999999.tmp", "data.key", true },
        /* Another target's, or not quite the pattern. */
        { "key.pub.0123456789abcdef.tmp", "key", false },
        { "keys.0123456789abcdef.tmp", "key", false },
        { "key.0123456789ABCDEF.tmp", "key", false },
        { "key.0123456789abcde.tmp", "key", false },
        { "key.0123456789abcdef.tmpx", "key", false },
        { "key.tmp", "key", false },
        { "key", "key", false },
        { ".other.key.123.456.tmp", "data.key", false },
        { ".data.key..456.tmp", "data.key", false },
        { ".data.key.123.tmp", "data.key", false },
        { ".data.key.12a.456.tmp", "data.key", false },
        { "data.key.123.456.tmp", "data.key", false },
        { ".data.key.0123456789abcdef.tmp", "data.key", false },
};

START_TEST(test_names) {
        ck_assert_msg(atomic_is_temp_name(name_rows[_i].name, name_rows[_i].target) == name_rows[_i].ours,
                      "'%s' for '%s': expected %s", name_rows[_i].name, name_rows[_i].target,
                      name_rows[_i].ours ? "ours" : "not ours");
}
END_TEST

static int open_root(const char *path) {
        char *p;
        int fd;

        ck_assert_int_ge(asprintf(&p, "%s%s", root, path), 0);
        fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        free(p);
        return fd;
}

START_TEST(test_remove) {
        static const char *const targets[] = { "a", "b.pub" };
        int fd;

        fakeroot_write(root, "/d/a", "the file itself");
        fakeroot_write(root, "/d/a.0123456789abcdef.tmp", "half");
        fakeroot_write(root, "/d/a.fedcba9876543210.tmp", "half");
        fakeroot_write(root, "/d/b.pub.0123456789abcdef.tmp", "half");
        fakeroot_write(root, "/d/.a.77.1234.tmp", "half, named as seedbed 0.1 did");
        /* Not ours: no target's, a link or a directory under our name. */
        fakeroot_write(root, "/d/c.0123456789abcdef.tmp", "x");
        fakeroot_write(root, "/elsewhere", "x");
        fakeroot_symlink(root, "/d/a.1111111111111111.tmp", "../elsewhere");
        fakeroot_mkdir(root, "/d/a.2222222222222222.tmp");

        fd = open_root("/d");
        ck_assert_int_eq(atomic_remove_temp_files(fd, targets, ELEMENTSOF(targets)), 4);
        ck_assert(fakeroot_exists(root, "/d/a"));
        ck_assert(!fakeroot_exists(root, "/d/a.0123456789abcdef.tmp"));
        ck_assert(!fakeroot_exists(root, "/d/a.fedcba9876543210.tmp"));
        ck_assert(!fakeroot_exists(root, "/d/b.pub.0123456789abcdef.tmp"));
        ck_assert(!fakeroot_exists(root, "/d/.a.77.1234.tmp"));
        ck_assert(fakeroot_exists(root, "/d/c.0123456789abcdef.tmp"));
        ck_assert(fakeroot_exists(root, "/d/a.2222222222222222.tmp"));
        ck_assert(fakeroot_exists(root, "/elsewhere"));
        /* Nothing left: nothing removed. */
        ck_assert_int_eq(atomic_remove_temp_files(fd, targets, ELEMENTSOF(targets)), 0);
        ck_assert_int_eq(atomic_remove_temp_files(-EBADF, targets, 1), -EINVAL);
        close(fd);
}
END_TEST

/* Entries in dir other than "." and "..". */
static unsigned entries(int dir_fd) {
        DIR *d = fdopendir(fcntl(dir_fd, F_DUPFD_CLOEXEC, 3));
        unsigned n = 0;

        ck_assert_ptr_nonnull(d);
        rewinddir(d);
        for (struct dirent *de; (de = readdir(d));)
                n += !streq(de->d_name, ".") && !streq(de->d_name, "..");
        closedir(d);
        return n;
}

START_TEST(test_create_at) {
        struct stat st;
        char *text;
        int fd;

        fakeroot_mkdir(root, "/keys");
        fd = open_root("/keys");
        (void) umask(0);
        ck_assert_int_eq(atomic_create_file_at(fd, "k", "secret", 6, 0400, (uid_t) -1, (gid_t) -1), 0);
        (void) umask(022);
        ck_assert_int_eq(fstatat(fd, "k", &st, AT_SYMLINK_NOFOLLOW), 0);
        ck_assert(S_ISREG(st.st_mode));
        ck_assert_uint_eq(st.st_mode & 07777, 0400);
        text = fakeroot_read(root, "/keys/k");
        ck_assert_str_eq(text, "secret");
        free(text);

        /* Never over an existing file, and nothing left behind. */
        ck_assert_int_eq(atomic_create_file_at(fd, "k", "other", 5, 0400, (uid_t) -1, (gid_t) -1), -EEXIST);
        text = fakeroot_read(root, "/keys/k");
        ck_assert_str_eq(text, "secret");
        free(text);
        ck_assert_uint_eq(entries(fd), 1);

        /* A name, not a path. */
        ck_assert_int_eq(atomic_create_file_at(fd, "../k", "x", 1, 0400, (uid_t) -1, (gid_t) -1), -EINVAL);
        ck_assert_int_eq(atomic_create_file_at(-EBADF, "k", "x", 1, 0400, (uid_t) -1, (gid_t) -1), -EINVAL);
        close(fd);
}
END_TEST

/* A killed writer's temporary files of the target go, with nobody else's;
 * the file is replaced or, without replace, never. */
START_TEST(test_write_locked) {
        char *path, *text;
        struct stat st;
        int fd;

        fakeroot_write(root, "/d/rec.json.0123456789abcdef.tmp", "{ \"half");
        fakeroot_write(root, "/d/.rec.json.77.1234.tmp", "half, named as seedbed 0.1 did");
        fakeroot_write(root, "/d/other.json.0123456789abcdef.tmp", "another file's, being written");
        ck_assert_int_ge(asprintf(&path, "%s/d/rec.json", root), 0);

        ck_assert_int_eq(atomic_write_file_locked(path, "one", 3, 0644, (uid_t) -1, (gid_t) -1, true), 0);
        ck_assert(!fakeroot_exists(root, "/d/rec.json.0123456789abcdef.tmp"));
        ck_assert(!fakeroot_exists(root, "/d/.rec.json.77.1234.tmp"));
        ck_assert(fakeroot_exists(root, "/d/other.json.0123456789abcdef.tmp"));
        fd = open_root("/d");
        ck_assert_uint_eq(entries(fd), 2);
        close(fd);
        ck_assert_int_eq(lstat(path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0644);

        ck_assert_int_eq(atomic_write_file_locked(path, "two", 3, 0644, (uid_t) -1, (gid_t) -1, true), 0);
        ck_assert_int_eq(atomic_write_file_locked(path, "three", 5, 0644, (uid_t) -1, (gid_t) -1, false), -EEXIST);
        text = fakeroot_read(root, "/d/rec.json");
        ck_assert_str_eq(text, "two");
        free(text);

        /* A directory that is not there, or no file name. */
        free(path);
        ck_assert_int_ge(asprintf(&path, "%s/none/rec.json", root), 0);
        ck_assert_int_eq(atomic_write_file_locked(path, "x", 1, 0644, (uid_t) -1, (gid_t) -1, true), -ENOENT);
        ck_assert_int_eq(atomic_write_file_locked("/", "x", 1, 0644, (uid_t) -1, (gid_t) -1, true), -EINVAL);
        free(path);
}
END_TEST

/* While another writer holds the directory's lock, its temporary file is
 * not taken for a killed writer's, and nothing is written. */
START_TEST(test_write_locked_waits) {
        char *path, *dir, *text;
        int fd, status;
        pid_t pid;

        fakeroot_write(root, "/d/rec.json", "old");
        fakeroot_write(root, "/d/rec.json.0123456789abcdef.tmp", "being written");
        ck_assert_int_ge(asprintf(&path, "%s/d/rec.json", root), 0);
        ck_assert_int_ge(asprintf(&dir, "%s/d", root), 0);
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(flock(fd, LOCK_EX), 0);

        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                /* The lock is the open file's: ours would hold it too. */
                close(fd);
                _exit(atomic_write_file_locked(path, "new", 3, 0644, (uid_t) -1, (gid_t) -1, true) == 0 ? 0 : 1);
        }
        usleep(200 * 1000);
        ck_assert_int_eq(waitpid(pid, &status, WNOHANG), 0);
        ck_assert(fakeroot_exists(root, "/d/rec.json.0123456789abcdef.tmp"));
        text = fakeroot_read(root, "/d/rec.json");
        ck_assert_str_eq(text, "old");
        free(text);

        /* Let go: it writes, and the file left is then stale. */
        close(fd);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        text = fakeroot_read(root, "/d/rec.json");
        ck_assert_str_eq(text, "new");
        free(text);
        ck_assert(!fakeroot_exists(root, "/d/rec.json.0123456789abcdef.tmp"));
        free(path);
        free(dir);
}
END_TEST

static Suite *atomic_suite(void) {
        Suite *s = suite_create("atomic");
        TCase *tc;

        tc = tcase_create("names");
        tcase_add_loop_test(tc, test_names, 0, ELEMENTSOF(name_rows));
        suite_add_tcase(s, tc);

        tc = tcase_create("files");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_remove);
        tcase_add_test(tc, test_create_at);
        tcase_add_test(tc, test_write_locked);
        tcase_add_test(tc, test_write_locked_waits);
        suite_add_tcase(s, tc);

        return s;
}

TEST_MAIN(atomic_suite)
