/* SPDX-License-Identifier: MIT */
/* SSH host keys in a fake root: the files sshd needs with the modes it
 * wants, no half key and no temporary file whatever step fails or
 * crashes, sound keys kept and broken ones replaced, the instance record,
 * and the console blocks byte for byte as cloud-init prints them. */
#include <dirent.h>
#include <fcntl.h>
#include <libssh/libssh.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "atomic.h"
#include "fakeroot.h"
#include "fileio.h"
#include "instance.h"
#include "sshkeys.h"
#include "testmain.h"

static char *root;

/* RSA keys take long to make: the smallest we allow, except where the
 * size is what is tested. */
static const HostKeyType all_types[] = { HOST_KEY_ED25519, HOST_KEY_ECDSA, HOST_KEY_RSA };
static const HostKeyType ed25519_only[] = { HOST_KEY_ED25519 };
static const HostKeyType two_types[] = { HOST_KEY_ED25519, HOST_KEY_ECDSA };

static void setup(void) {
        root = fakeroot_new();
}

static void teardown(void) {
        atomic_set_fault_hook(NULL, NULL);
        instance_key_set_random(NULL);
        fakeroot_free(root);
        root = NULL;
}

static SshKeysOptions options(const HostKeyType *types, size_t n) {
        return (SshKeysOptions) { .root = root, .types = types, .n_types = n, .rsa_bits = 2048, .crng_ready = true };
}

/* A path under the fake root; the strings rotate through a ring, enough
 * for the few one call takes. */
static const char *full(const char *path) {
        static char ring[4][4096];
        static unsigned next;
        char *p = ring[next++ % ELEMENTSOF(ring)];

        snprintf(p, sizeof ring[0], "%s%s", root, path);
        return p;
}

static void stat_file(const char *path, struct stat *st) {
        ck_assert_int_eq(lstat(full(path), st), 0);
}

/* The private key as sshd would load it: libssh reads it. */
static ssh_key load_private(const char *path) {
        ssh_key key = NULL;

        if (ssh_pki_import_privkey_file(full(path), NULL, NULL, NULL, &key) != SSH_OK)
                key = NULL;
        return key;
}

static char *fingerprint_of(ssh_key key) {
        unsigned char *hash;
        size_t hlen;
        char *fp, *s;

        ck_assert_int_eq(ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen), 0);
        fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
        ssh_clean_pubkey_hash(&hash);
        s = strdup(fp);
        ssh_string_free_char(fp);
        return s;
}

/* The fingerprint of the private key file, NULL when there is none;
 * a file that is there but does not load fails the test. */
static char *private_fingerprint(HostKeyType t) {
        char path[128];
        ssh_key key;
        char *fp;

        snprintf(path, sizeof path, "/etc/ssh/ssh_host_%s_key", host_key_type_to_string(t));
        if (!fakeroot_exists(root, path))
                return NULL;
        key = load_private(path);
        ck_assert_msg(key, "'%s' exists but is not a complete key", path);
        fp = fingerprint_of(key);
        ssh_key_free(key);
        return fp;
}

static char *public_fingerprint(HostKeyType t) {
        char path[128];
        ssh_key key = NULL;
        char *fp;

        snprintf(path, sizeof path, "/etc/ssh/ssh_host_%s_key.pub", host_key_type_to_string(t));
        if (!fakeroot_exists(root, path))
                return NULL;
        ck_assert_int_eq(ssh_pki_import_pubkey_file(full(path), &key), SSH_OK);
        fp = fingerprint_of(key);
        ssh_key_free(key);
        return fp;
}

static unsigned count_temp_files(void) {
        unsigned n = 0;
        DIR *d = opendir(full("/etc/ssh"));

        if (!d)
                return 0;
        for (struct dirent *de; (de = readdir(d));)
                if (strstr(de->d_name, ".tmp"))
                        n++;
        closedir(d);
        return n;
}

/* After anything at all: each private key is complete or absent; a .pub
 * exists only beside its private key (written first), and is its public
 * half, never another key's; strict: every .pub is there. */
static void check_consistent(const HostKeyType *types, size_t n, bool strict) {
        for (size_t i = 0; i < n; i++) {
                char *priv = private_fingerprint(types[i]), *pub = public_fingerprint(types[i]);

                if (pub) {
                        ck_assert_ptr_nonnull(priv);
                        ck_assert_str_eq(priv, pub);
                }
                if (strict)
                        ck_assert_ptr_nonnull(pub);
                free(priv);
                free(pub);
        }
}

static void results_check_ok(const SshKeyResult *r, size_t n, SshKeyAction action) {
        for (size_t i = 0; i < n; i++) {
                char *fp = private_fingerprint(r[i].type);

                ck_assert_int_eq(r[i].error, 0);
                ck_assert_int_eq(r[i].action, action);
                ck_assert_ptr_nonnull(r[i].fingerprint);
                ck_assert_ptr_nonnull(fp);
                ck_assert_str_eq(r[i].fingerprint, fp);
                free(fp);
        }
}

START_TEST(test_create_files) {
        SshKeysOptions o = options(all_types, ELEMENTSOF(all_types));
        SshKeyResult r[_HOST_KEY_TYPE_MAX];
        static const char *const algo[] = { "ssh-ed25519 ", "ecdsa-sha2-nistp256 ", "ssh-rsa " };
        static const unsigned bits[] = { 256, 256, 2048 };
        size_t n;

        o.start_usec = now_usec(CLOCK_MONOTONIC);
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert_uint_eq(n, 3);
        results_check_ok(r, n, SSH_KEY_CREATED);
        check_consistent(all_types, 3, true);
        ck_assert_uint_eq(count_temp_files(), 0);

        for (size_t i = 0; i < n; i++) {
                char want[128], *text;
                struct stat st;

                ck_assert_int_eq(r[i].type, all_types[i]);
                /* Paths as the guest sees them, not under the root. */
                snprintf(want, sizeof want, "/etc/ssh/ssh_host_%s_key", host_key_type_to_string(r[i].type));
                ck_assert_str_eq(r[i].path, want);
                strcat(want, ".pub");
                ck_assert_str_eq(r[i].pub_path, want);
                ck_assert_uint_eq(r[i].bits, bits[i]);
                ck_assert(startswith(r[i].fingerprint, "SHA256:"));
                /* 32 bytes of SHA-256 are 43 base64 characters unpadded. */
                ck_assert_uint_eq(strlen(r[i].fingerprint), 7 + 43);
                ck_assert(startswith(r[i].public_key, algo[i]));
                ck_assert_ptr_null(r[i].comment);
                ck_assert(r[i].crng_ready);
                ck_assert_uint_lt(r[i].at_usec, 600 * USEC_PER_SEC);
                if (i > 0)
                        ck_assert_uint_ge(r[i].at_usec, r[i - 1].at_usec);

                /* .pub: exactly the line and a newline. */
                text = fakeroot_read(root, r[i].pub_path);
                ck_assert_ptr_nonnull(text);
                ck_assert_uint_eq(strlen(text), strlen(r[i].public_key) + 1);
                ck_assert(startswith(text, r[i].public_key));
                ck_assert_int_eq(text[strlen(text) - 1], '\n');
                free(text);

                /* Modes are exact whatever the umask. */
                stat_file(r[i].path, &st);
                ck_assert(S_ISREG(st.st_mode));
                ck_assert_uint_eq(st.st_mode & 07777, 0600);
                if (geteuid() == 0) {
                        ck_assert_uint_eq(st.st_uid, 0);
                        ck_assert_uint_eq(st.st_gid, 0);
                }
                stat_file(r[i].pub_path, &st);
                ck_assert_uint_eq(st.st_mode & 07777, 0644);
                if (geteuid() == 0) {
                        ck_assert_uint_eq(st.st_uid, 0);
                        ck_assert_uint_eq(st.st_gid, 0);
                }

                /* Ed25519 in OpenSSH's format; the others in whatever
                 * this libssh writes (PEM with 0.10), which loaded above. */
                text = fakeroot_read(root, r[i].path);
                ck_assert_ptr_nonnull(text);
                if (r[i].type == HOST_KEY_ED25519)
                        ck_assert(startswith(text, "-----BEGIN OPENSSH PRIVATE KEY-----\n"));
                else
                        ck_assert(startswith(text, "-----BEGIN "));
                ck_assert_int_eq(text[strlen(text) - 1], '\n');
                free(text);
        }
        ssh_key_results_done(r, n);
}
END_TEST

START_TEST(test_umask_ignored) {
        SshKeysOptions o = options(ed25519_only, 1);
        SshKeyResult r[1];
        struct stat st;
        mode_t old;
        size_t n;

        /* The directory exists: a umask this tight would make new
         * directories unusable to anyone but root. */
        fakeroot_mkdir(root, "/etc/ssh");
        old = umask(0777);
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        (void) umask(old);
        stat_file("/etc/ssh/ssh_host_ed25519_key", &st);
        ck_assert_uint_eq(st.st_mode & 07777, 0600);
        stat_file("/etc/ssh/ssh_host_ed25519_key.pub", &st);
        ck_assert_uint_eq(st.st_mode & 07777, 0644);
        ssh_key_results_done(r, n);
}
END_TEST

START_TEST(test_group_ssh_keys) {
        SshKeysOptions o = options(ed25519_only, 1);
        SshKeyResult r[1];
        struct stat st;
        size_t n;

        if (geteuid() != 0)
                return; /* giving files to a group needs root */
        /* The tree's group file, not the running system's. */
        fakeroot_write(root, "/etc/group", "root:x:0:\nbroken line\nssh:x:12:\nssh_keys:x:4242:\nusers:x:100:\n");
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        stat_file("/etc/ssh/ssh_host_ed25519_key", &st);
        ck_assert_uint_eq(st.st_mode & 07777, 0640);
        ck_assert_uint_eq(st.st_uid, 0);
        ck_assert_uint_eq(st.st_gid, 4242);
        stat_file("/etc/ssh/ssh_host_ed25519_key.pub", &st);
        ck_assert_uint_eq(st.st_mode & 07777, 0644);
        ck_assert_uint_eq(st.st_gid, 0);
        ssh_key_results_done(r, n);

        /* Without the group: root only. */
        fakeroot_free(root);
        root = fakeroot_new();
        o.root = root;
        fakeroot_write(root, "/etc/group", "root:x:0:\nssh_keysx:x:4243:\n");
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        stat_file("/etc/ssh/ssh_host_ed25519_key", &st);
        ck_assert_uint_eq(st.st_mode & 07777, 0600);
        ck_assert_uint_eq(st.st_gid, 0);
        ssh_key_results_done(r, n);
}
END_TEST

START_TEST(test_key_dir_comment_bits) {
        SshKeysOptions o = options(two_types, 2);
        SshKeyResult r[2];
        char *text, *line;
        size_t n;

        o.key_dir = "/srv/keys/";
        o.comment = "root@seedbed test";
        o.ecdsa_bits = 384;
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert_str_eq(r[0].path, "/srv/keys/ssh_host_ed25519_key");
        ck_assert_str_eq(r[1].pub_path, "/srv/keys/ssh_host_ecdsa_key.pub");
        ck_assert_uint_eq(r[1].bits, 384);
        ck_assert(startswith(r[1].public_key, "ecdsa-sha2-nistp384 "));
        ck_assert_str_eq(r[0].comment, "root@seedbed test");
        text = fakeroot_read(root, "/srv/keys/ssh_host_ed25519_key.pub");
        ck_assert_ptr_nonnull(strstr(text, " root@seedbed test\n"));
        free(text);
        ck_assert_int_eq(sshkeys_fingerprint_line(&r[1], &line), 0);
        ck_assert(startswith(line, "384 SHA256:"));
        ck_assert_ptr_nonnull(strstr(line, " root@seedbed test (ECDSA)"));
        free(line);
        ck_assert(!fakeroot_exists(root, "/etc/ssh"));
        ssh_key_results_done(r, n);
}
END_TEST

START_TEST(test_options_invalid) {
        static const HostKeyType dup[] = { HOST_KEY_RSA, HOST_KEY_RSA };
        static const HostKeyType bad[] = { (HostKeyType) 7 };
        SshKeysOptions o;
        SshKeyResult r[3];
        size_t n;

        o = options(dup, 2);
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), -EINVAL);
        o = options(bad, 1);
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), -EINVAL);
        o = options(all_types, 3);
        o.rsa_bits = 1024;
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), -EINVAL);
        o.rsa_bits = 0;
        o.ecdsa_bits = 255;
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), -EINVAL);
        o.ecdsa_bits = 0;
        o.key_dir = "etc/ssh";
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), -EINVAL);
        o.key_dir = NULL;
        o.comment = "two\nlines";
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), -EINVAL);
        o.comment = "#hash";
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), -EINVAL);
        ck_assert(!fakeroot_exists(root, "/etc/ssh"));

        ck_assert_int_eq(host_key_type_from_string("ecdsa"), HOST_KEY_ECDSA);
        ck_assert_int_eq(host_key_type_from_string("dsa"), -EINVAL);
        ck_assert_str_eq(ssh_key_action_to_string(SSH_KEY_REPAIRED), "repaired");
}
END_TEST

/* Fault injection: fail or crash at one step of one file. */
typedef struct Fault {
        AtomicStep step;
        const char *suffix; /* "_key" or "_key.pub" */
        int crash_at;       /* >= 0: _exit() at this call of the hook instead */
        int calls;
        bool hit;
} Fault;

#define CRASHED 42

static bool endswith(const char *s, const char *suffix) {
        size_t a = strlen(s), b = strlen(suffix);
        return a >= b && streq(s + a - b, suffix);
}

static int fault_hook(AtomicStep step, const char *path, void *userdata) {
        Fault *f = userdata;

        if (f->crash_at >= 0) {
                if (f->calls++ == f->crash_at)
                        _exit(CRASHED);
                return 0;
        }
        if (step != f->step || !endswith(path, f->suffix))
                return 0;
        f->hit = true;
        return -EIO;
}

START_TEST(test_fail_each_step) {
        static const char *const suffixes[] = { "_key", "_key.pub" };

        for (unsigned s = 0; s < ELEMENTSOF(suffixes); s++)
                for (AtomicStep step = 0; step < _ATOMIC_STEP_MAX; step++) {
                        SshKeysOptions o;
                        SshKeyResult r[2];
                        Fault f = { .step = step, .suffix = suffixes[s], .crash_at = -1 };
                        bool private_in_place;
                        char *fp;
                        size_t n;

                        /* Only root gives files away. */
                        if (step == ATOMIC_FCHOWN && geteuid() != 0)
                                continue;

                        fakeroot_free(root);
                        root = fakeroot_new();
                        o = options(two_types, 2);

                        atomic_set_fault_hook(fault_hook, &f);
                        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 2);
                        atomic_set_fault_hook(NULL, NULL);
                        ck_assert_msg(f.hit, "step %s not reached", atomic_step_to_string(step));
                        ck_assert_int_eq(r[0].action, SSH_KEY_FAILED);
                        ck_assert_int_eq(r[0].error, -EIO);
                        ck_assert_ptr_null(r[0].fingerprint);
                        ssh_key_results_done(r, n);

                        /* No half key, no temporary file. */
                        check_consistent(two_types, 2, false);
                        ck_assert_uint_eq(count_temp_files(), 0);
                        /* Once renamed, the private key stays: a failing
                         * fsync of the directory comes after. */
                        private_in_place = s == 1 || step == ATOMIC_FSYNC_DIR;
                        ck_assert_int_eq(fakeroot_exists(root, "/etc/ssh/ssh_host_ed25519_key"), private_in_place);
                        ck_assert_int_eq(fakeroot_exists(root, "/etc/ssh/ssh_host_ed25519_key.pub"),
                                         s == 1 && step == ATOMIC_FSYNC_DIR);

                        /* The next run completes the pair, keeping a
                         * private key that made it. */
                        fp = private_fingerprint(HOST_KEY_ED25519);
                        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
                        ck_assert_int_eq(r[0].action,
                                         !private_in_place ? SSH_KEY_CREATED
                                         : s == 1 && step == ATOMIC_FSYNC_DIR ? SSH_KEY_KEPT
                                                                             : SSH_KEY_REPAIRED);
                        if (fp)
                                ck_assert_str_eq(r[0].fingerprint, fp);
                        free(fp);
                        check_consistent(two_types, 2, true);
                        ck_assert_uint_eq(count_temp_files(), 0);
                        ssh_key_results_done(r, n);
                }
}
END_TEST

START_TEST(test_fail_during_replace) {
        for (AtomicStep step = 0; step < _ATOMIC_STEP_MAX; step++) {
                SshKeysOptions o = options(ed25519_only, 1);
                Fault f = { .step = step, .suffix = "_key", .crash_at = -1 };
                SshKeyResult r[1];
                char *old, *now;
                size_t n;

                if (step == ATOMIC_FCHOWN && geteuid() != 0)
                        continue;
                ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
                old = strdup(r[0].fingerprint);
                ssh_key_results_done(r, n);

                o.replace = true;
                atomic_set_fault_hook(fault_hook, &f);
                ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 1);
                atomic_set_fault_hook(NULL, NULL);
                ssh_key_results_done(r, n);
                ck_assert_uint_eq(count_temp_files(), 0);

                /* The old key whole, or (past the rename) the new one,
                 * and no .pub: the old one went first, so that the new
                 * private key never sits beside it. */
                now = private_fingerprint(HOST_KEY_ED25519);
                ck_assert_ptr_nonnull(now);
                ck_assert_int_eq(streq(now, old), step != ATOMIC_FSYNC_DIR);
                free(now);
                ck_assert(!fakeroot_exists(root, "/etc/ssh/ssh_host_ed25519_key.pub"));
                check_consistent(ed25519_only, 1, false);

                /* The next run writes the .pub from the private key. */
                o.replace = false;
                ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
                ck_assert_int_eq(r[0].action, SSH_KEY_REPAIRED);
                check_consistent(ed25519_only, 1, true);
                ssh_key_results_done(r, n);
                free(old);
        }
}
END_TEST

/* Runs sshkeys_ensure() (instance: sshkeys_ensure_instance()) in a child
 * that crashes (the process ends, no cleanup runs) at the at-th step of
 * writing a file.  False when it went through with no crash. */
static bool run_crashing(const SshKeysOptions *o, bool instance, int at) {
        SshKeyResult r[_HOST_KEY_TYPE_MAX];
        int status;
        size_t n;
        pid_t pid;

        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                Fault f = { .crash_at = at };

                atomic_set_fault_hook(fault_hook, &f);
                _exit((instance ? sshkeys_ensure_instance(o, r, &n, NULL) : sshkeys_ensure(o, r, &n)) == 0 ? 0 : 1);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFEXITED(status));
        if (WEXITSTATUS(status) == 0)
                return false;
        ck_assert_int_eq(WEXITSTATUS(status), CRASHED);
        ck_assert_int_lt(at, 100);
        return true;
}

/* A crash at every step in turn: what is left is no key or a complete
 * one, and the next run removes the leftovers and completes every pair. */
static void crash_everywhere(bool replace) {
        unsigned temp_left = 0, repaired = 0;

        for (int at = 0;; at++) {
                SshKeysOptions o = options(two_types, 2);
                SshKeyResult r[2];
                size_t n;

                fakeroot_free(root);
                root = fakeroot_new();
                o.root = root;
                if (replace) {
                        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
                        ssh_key_results_done(r, n);
                        o.replace = true;
                }
                if (!run_crashing(&o, false, at))
                        break; /* every step passed without a crash */

                /* Replacing too, a .pub is its private key's (the
                 * old .pub goes before the new key comes). */
                check_consistent(two_types, 2, false);
                temp_left += count_temp_files();

                o.replace = false;
                ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
                for (size_t i = 0; i < n; i++) {
                        if (r[i].action == SSH_KEY_REPAIRED)
                                repaired++;
                        /* Replacing: each key is the old one or a new one,
                         * never none. */
                        ck_assert(!replace || r[i].action != SSH_KEY_CREATED);
                }
                ssh_key_results_done(r, n);
                check_consistent(two_types, 2, true);
                ck_assert_uint_eq(count_temp_files(), 0);
        }
        /* The crashes did hit between open and rename, and between the
         * private and the public key. */
        ck_assert_uint_gt(temp_left, 0);
        ck_assert_uint_gt(repaired, 0);
}

START_TEST(test_crash_each_step) {
        crash_everywhere(false);
}
END_TEST

START_TEST(test_crash_each_step_replace) {
        crash_everywhere(true);
}
END_TEST

START_TEST(test_stale_temp_files) {
        SshKeysOptions o = options(ed25519_only, 1);
        SshKeyResult r[1];
        size_t n;

        fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key.0123456789abcdef.tmp", "half a key");
        fakeroot_write(root, "/etc/ssh/ssh_host_rsa_key.pub.fedcba9876543210.tmp", "half a key");
        /* The other naming scheme of ours (seedbed 0.1's key files). */
        fakeroot_write(root, "/etc/ssh/.ssh_host_ecdsa_key.123.456.tmp", "half a key");
        /* Not ours: another name, or not our pattern. */
        fakeroot_write(root, "/etc/ssh/sshd_config.0123456789abcdef.tmp", "x");
        fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key.tmp", "x");
        fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key.0123456789ABCDEF.tmp", "x");
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert(!fakeroot_exists(root, "/etc/ssh/ssh_host_ed25519_key.0123456789abcdef.tmp"));
        ck_assert(!fakeroot_exists(root, "/etc/ssh/ssh_host_rsa_key.pub.fedcba9876543210.tmp"));
        ck_assert(!fakeroot_exists(root, "/etc/ssh/.ssh_host_ecdsa_key.123.456.tmp"));
        ck_assert(fakeroot_exists(root, "/etc/ssh/sshd_config.0123456789abcdef.tmp"));
        ck_assert(fakeroot_exists(root, "/etc/ssh/ssh_host_ed25519_key.tmp"));
        ck_assert(fakeroot_exists(root, "/etc/ssh/ssh_host_ed25519_key.0123456789ABCDEF.tmp"));
        ssh_key_results_done(r, n);

        ck_assert(atomic_is_temp_name("a.0123456789abcdef.tmp", "a"));
        ck_assert(!atomic_is_temp_name("a.0123456789abcdef.tmpx", "a"));
        ck_assert(!atomic_is_temp_name("a.0123456789abcde.tmp", "a"));
        ck_assert(!atomic_is_temp_name("ab.0123456789abcdef.tmp", "a"));
}
END_TEST

START_TEST(test_second_run_keeps) {
        SshKeysOptions o = options(all_types, 3);
        SshKeyResult a[3], b[3];
        struct stat st1, st2;
        size_t n;

        ck_assert_int_eq(sshkeys_ensure(&o, a, &n), 0);
        stat_file("/etc/ssh/ssh_host_rsa_key", &st1);
        o.crng_ready = false;
        ck_assert_int_eq(sshkeys_ensure(&o, b, &n), 0);
        results_check_ok(b, n, SSH_KEY_KEPT);
        for (size_t i = 0; i < n; i++) {
                ck_assert_str_eq(a[i].fingerprint, b[i].fingerprint);
                ck_assert_str_eq(a[i].public_key, b[i].public_key);
                ck_assert_uint_eq(a[i].bits, b[i].bits);
                /* Not made in this run: nothing to say about the CRNG. */
                ck_assert(!b[i].crng_ready);
        }
        /* Not even rewritten. */
        stat_file("/etc/ssh/ssh_host_rsa_key", &st2);
        ck_assert_uint_eq(st1.st_ino, st2.st_ino);
        ssh_key_results_done(a, n);
        ssh_key_results_done(b, n);
}
END_TEST

START_TEST(test_replace_changes_all) {
        SshKeysOptions o = options(all_types, 3);
        SshKeyResult a[3], b[3];
        size_t n;

        ck_assert_int_eq(sshkeys_ensure(&o, a, &n), 0);
        o.replace = true;
        ck_assert_int_eq(sshkeys_ensure(&o, b, &n), 0);
        results_check_ok(b, n, SSH_KEY_REPLACED);
        for (size_t i = 0; i < n; i++) {
                ck_assert_str_ne(a[i].fingerprint, b[i].fingerprint);
                ck_assert_str_ne(a[i].public_key, b[i].public_key);
        }
        check_consistent(all_types, 3, true);
        ck_assert_uint_eq(count_temp_files(), 0);
        ssh_key_results_done(a, n);
        ssh_key_results_done(b, n);
}
END_TEST

START_TEST(test_invalid_replaced) {
        static const char *const garbage[] = {
                "",
                "not a key\n",
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
                "\0\1\2",
        };
        SshKeysOptions o = options(two_types, 2);
        SshKeyResult r[2];
        char *ecdsa;
        size_t n;

        for (unsigned i = 0; i < ELEMENTSOF(garbage); i++) {
                fakeroot_write_bytes(root, "/etc/ssh/ssh_host_ed25519_key", garbage[i],
                                     i == 3 ? 3 : strlen(garbage[i]));
                fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA\n");
                ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
                ck_assert_int_eq(r[0].action, SSH_KEY_REPLACED);
                ck_assert_ptr_nonnull(r[0].reason);
                ck_assert_int_eq(r[1].action, i == 0 ? SSH_KEY_CREATED : SSH_KEY_KEPT);
                check_consistent(two_types, 2, true);
                ssh_key_results_done(r, n);
        }

        /* A sound key of another type in the Ed25519 file. */
        ecdsa = fakeroot_read(root, "/etc/ssh/ssh_host_ecdsa_key");
        fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key", ecdsa);
        free(ecdsa);
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert_int_eq(r[0].action, SSH_KEY_REPLACED);
        ck_assert_str_eq(r[0].reason, "a key of another type");
        check_consistent(two_types, 2, true);
        ssh_key_results_done(r, n);

        /* A directory cannot be replaced: failed, said so, the other key made. */
        fakeroot_free(root);
        root = fakeroot_new();
        o.root = root;
        fakeroot_mkdir(root, "/etc/ssh/ssh_host_ed25519_key");
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 1);
        ck_assert_int_eq(r[0].action, SSH_KEY_FAILED);
        ck_assert_int_eq(r[1].action, SSH_KEY_CREATED);
        ck_assert_uint_eq(count_temp_files(), 0);
        ssh_key_results_done(r, n);
}
END_TEST

START_TEST(test_pub_repaired) {
        SshKeysOptions o = options(two_types, 2);
        SshKeyResult a[2], r[2];
        char *other, *text;
        size_t n;

        ck_assert_int_eq(sshkeys_ensure(&o, a, &n), 0);

        /* Missing. */
        ck_assert_int_eq(unlink(full("/etc/ssh/ssh_host_ed25519_key.pub")), 0);
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert_int_eq(r[0].action, SSH_KEY_REPAIRED);
        ck_assert_str_eq(r[0].fingerprint, a[0].fingerprint);
        ck_assert_str_eq(r[0].public_key, a[0].public_key);
        ck_assert_int_eq(r[1].action, SSH_KEY_KEPT);
        ssh_key_results_done(r, n);

        /* Another key's .pub, of another type. */
        other = fakeroot_read(root, "/etc/ssh/ssh_host_ecdsa_key.pub");
        fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key.pub", other);
        free(other);
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert_int_eq(r[0].action, SSH_KEY_REPAIRED);
        ck_assert_str_eq(r[0].reason, "of another type");
        ssh_key_results_done(r, n);

        /* The same type, another key. */
        fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key.pub",
                       "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN1QGRrf9x9Ltwt66JswT8zOUSXH2krqkCB9BWlpEbT\n");
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert_int_eq(r[0].action, SSH_KEY_REPAIRED);
        ck_assert_str_eq(r[0].reason, "not the private key's public half");
        ssh_key_results_done(r, n);

        /* An escape sequence for the console: in C0, in C1 (CSI as
         * U+009B), or a byte that is not UTF-8. */
        static const char *const escapes[] = { "\033[2J", "\xc2\x9b" "2J", "\x9b" "2J" };
        for (size_t i = 0; i < ELEMENTSOF(escapes); i++) {
                ck_assert_int_ge(asprintf(&text, "%s %s\n", a[0].public_key, escapes[i]), 0);
                fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key.pub", text);
                free(text);
                ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
                ck_assert_msg(r[0].action == SSH_KEY_REPAIRED, "escape %zu", i);
                ck_assert_str_eq(r[0].public_key, a[0].public_key);
                ssh_key_results_done(r, n);
        }
        /* A comment in UTF-8 is no escape. */
        ck_assert_int_ge(asprintf(&text, "%s root@h\xc3\xb6st\n", a[0].public_key), 0);
        fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key.pub", text);
        free(text);
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert_int_eq(r[0].action, SSH_KEY_KEPT);
        ssh_key_results_done(r, n);

        /* Someone's comment on the right key stays. */
        ck_assert_int_ge(asprintf(&text, "%s  admin@host\n", a[0].public_key), 0);
        fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key.pub", text);
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert_int_eq(r[0].action, SSH_KEY_KEPT);
        ck_assert_str_eq(r[0].comment, "admin@host");
        text[strlen(text) - 1] = 0;
        ck_assert_str_eq(r[0].public_key, text);
        free(text);
        ssh_key_results_done(r, n);
        ssh_key_results_done(a, 2);
}
END_TEST

START_TEST(test_mode_tightened) {
        SshKeysOptions o = options(ed25519_only, 1);
        SshKeyResult r[1];
        struct stat st;
        size_t n;

        if (geteuid() != 0)
                return;
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ssh_key_results_done(r, n);
        ck_assert_int_eq(chmod(full("/etc/ssh/ssh_host_ed25519_key"), 0644), 0);
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert_int_eq(r[0].action, SSH_KEY_KEPT);
        stat_file("/etc/ssh/ssh_host_ed25519_key", &st);
        ck_assert_uint_eq(st.st_mode & 07777, 0600);
        ssh_key_results_done(r, n);
}
END_TEST

START_TEST(test_symlink_left_alone) {
        SshKeysOptions o = options(ed25519_only, 1);
        SshKeyResult r[1];
        struct stat st;
        char *text;
        size_t n;

        /* A link to a sound key elsewhere is kept; to garbage, it is an
         * error and neither the link nor its target is touched. */
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ssh_key_results_done(r, n);
        ck_assert_int_eq(rename(full("/etc/ssh/ssh_host_ed25519_key"), full("/etc/ssh/real")), 0);
        fakeroot_symlink(root, "/etc/ssh/ssh_host_ed25519_key", "real");
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert_int_eq(r[0].action, SSH_KEY_KEPT);
        ssh_key_results_done(r, n);

        fakeroot_write(root, "/etc/ssh/real", "garbage");
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 1);
        ck_assert_int_eq(r[0].action, SSH_KEY_FAILED);
        ck_assert_int_eq(r[0].error, -ELOOP);
        stat_file("/etc/ssh/ssh_host_ed25519_key", &st);
        ck_assert(S_ISLNK(st.st_mode));
        text = fakeroot_read(root, "/etc/ssh/real");
        ck_assert_str_eq(text, "garbage");
        free(text);
        ssh_key_results_done(r, n);
}
END_TEST

#define UUID_A "4c4c4544-0037-3610-8056-b4c04f4b4e32"
#define UUID_B "4c4c4544-0037-3610-8056-b4c04f4b4e33"
#define MID_A "0123456789abcdef0123456789abcdef"
#define MID_B "fedcba9876543210fedcba9876543210"
/* A hash and a key ID as a record holds them (any hex will do here). */
#define HMAC_A "aa680a29978b95f76b83689d670a49959c3e2e3b05dbccd0dac263ad86ab37da"
#define KEY_ID_A "44db8fef05cbd3df"

START_TEST(test_instance_read) {
        InstanceId id;

        instance_id_read(root, &id);
        ck_assert_str_eq(id.product_uuid, "");
        ck_assert_str_eq(id.machine_id, "");

        /* Some firmware reports upper case. */
        fakeroot_write(root, "/sys/class/dmi/id/product_uuid", "4C4C4544-0037-3610-8056-B4C04F4B4E32\n");
        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        instance_id_read(root, &id);
        ck_assert_str_eq(id.product_uuid, UUID_A);
        ck_assert_str_eq(id.machine_id, MID_A);

        /* Not set: the same on every VM, or made later in this boot. */
        fakeroot_write(root, "/sys/class/dmi/id/product_uuid", "00000000-0000-0000-0000-000000000000\n");
        fakeroot_write(root, "/etc/machine-id", "uninitialized\n");
        instance_id_read(root, &id);
        ck_assert_str_eq(id.product_uuid, "");
        ck_assert_str_eq(id.machine_id, "");
        fakeroot_write(root, "/sys/class/dmi/id/product_uuid", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF");
        fakeroot_write(root, "/etc/machine-id", "");
        instance_id_read(root, &id);
        ck_assert_str_eq(id.product_uuid, "");
        ck_assert_str_eq(id.machine_id, "");
        fakeroot_write(root, "/sys/class/dmi/id/product_uuid", "4c4c4544-0037-3610-8056b4c04f4b4e32x");
        fakeroot_write(root, "/etc/machine-id", "0123456789abcdef0123456789abcdeg\n");
        instance_id_read(root, &id);
        ck_assert_str_eq(id.product_uuid, "");
        ck_assert_str_eq(id.machine_id, "");

        /* Unreadable (as for a user): unknown, not an error. */
        if (geteuid() != 0) {
                fakeroot_write(root, "/sys/class/dmi/id/product_uuid", UUID_A);
                ck_assert_int_eq(chmod(full("/sys/class/dmi/id/product_uuid"), 0), 0);
                instance_id_read(root, &id);
                ck_assert_str_eq(id.product_uuid, "");
        }
}
END_TEST

static InstanceId iid(const char *uuid, const char *mid) {
        InstanceId id = {};
        snprintf(id.product_uuid, sizeof id.product_uuid, "%s", uuid);
        snprintf(id.machine_id, sizeof id.machine_id, "%s", mid);
        return id;
}

START_TEST(test_instance_compare) {
        InstanceId a = iid(UUID_A, MID_A), b;

        ck_assert_int_eq(instance_compare(NULL, &a, NULL), INSTANCE_UNKNOWN);
        ck_assert_int_eq(instance_compare(&a, &a, NULL), INSTANCE_SAME);
        /* The VM's UUID changed: a clone on a new VM. */
        b = iid(UUID_B, MID_A);
        ck_assert_int_eq(instance_compare(&a, &b, NULL), INSTANCE_NEW);
        /* The machine ID changed: the image booted again from scratch. */
        b = iid(UUID_A, MID_B);
        ck_assert_int_eq(instance_compare(&a, &b, NULL), INSTANCE_NEW);
        /* Unknown before, known now: proves nothing. */
        b = iid("", "");
        ck_assert_int_eq(instance_compare(&b, &a, NULL), INSTANCE_UNKNOWN);
        ck_assert_int_eq(instance_compare(&a, &b, NULL), INSTANCE_UNKNOWN);
        b = iid("", MID_A);
        ck_assert_int_eq(instance_compare(&b, &a, NULL), INSTANCE_SAME);
        b = iid(UUID_B, "");
        ck_assert_int_eq(instance_compare(&b, &a, NULL), INSTANCE_NEW);
        b = iid("", MID_B);
        ck_assert_int_eq(instance_compare(&b, &a, NULL), INSTANCE_NEW);
        ck_assert_str_eq(instance_change_to_string(INSTANCE_NEW), "new");
}
END_TEST

START_TEST(test_state_roundtrip) {
        InstanceState s = { .id = iid("", "") }, l;
        char path[4096], *text;
        size_t len;

        snprintf(s.id.product_uuid_hmac, sizeof s.id.product_uuid_hmac, "%s", HMAC_A);
        snprintf(s.id.product_uuid_key, sizeof s.id.product_uuid_key, "%s", KEY_ID_A);
        snprintf(path, sizeof path, "%s%s", root, INSTANCE_STATE_FILE);
        ck_assert_int_eq(instance_state_load(path, &l), -ENOENT);
        s.n_keys = 2;
        s.keys[0] = (InstanceKey) { .type = (char *) "ed25519", .path = (char *) "/etc/ssh/ssh_host_ed25519_key",
                                    .bits = 256, .fingerprint = (char *) "SHA256:abc",
                                    .created = (char *) "2024-05-01T12:00:00Z", .crng_ready = 1 };
        s.keys[1] = (InstanceKey) { .type = (char *) "rsa", .path = (char *) "/etc/ssh/ssh_host_rsa_key",
                                    .bits = 3072, .fingerprint = (char *) "SHA256:def", .crng_ready = -1,
                                    .reason = (char *) SSHKEYS_REASON_ADOPTED };
        ck_assert_int_eq(instance_state_format(&s, 1714564800, &text, &len), 0);
        ck_assert_str_eq(text, "{\n"
                               "  \"version\": 1,\n"
                               "  \"time\": \"2024-05-01T12:00:00Z\",\n"
                               "  \"instance\": {\n"
                               "    \"product_uuid_hmac\": \"" HMAC_A "\",\n"
                               "    \"product_uuid_key\": \"" KEY_ID_A "\",\n"
                               "    \"machine_id\": null\n"
                               "  },\n"
                               "  \"keys\": [\n"
                               "    {\n"
                               "      \"type\": \"ed25519\",\n"
                               "      \"path\": \"/etc/ssh/ssh_host_ed25519_key\",\n"
                               "      \"bits\": 256,\n"
                               "      \"fingerprint\": \"SHA256:abc\",\n"
                               "      \"created\": \"2024-05-01T12:00:00Z\",\n"
                               "      \"crng_ready\": true,\n"
                               "      \"reason\": null\n"
                               "    },\n"
                               "    {\n"
                               "      \"type\": \"rsa\",\n"
                               "      \"path\": \"/etc/ssh/ssh_host_rsa_key\",\n"
                               "      \"bits\": 3072,\n"
                               "      \"fingerprint\": \"SHA256:def\",\n"
                               "      \"created\": null,\n"
                               "      \"crng_ready\": null,\n"
                               "      \"reason\": \"" SSHKEYS_REASON_ADOPTED "\"\n"
                               "    }\n"
                               "  ]\n"
                               "}\n");
        free(text);

        ck_assert_int_eq(instance_state_save(root, path, &s), 0);
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_str_eq(l.id.product_uuid, "");
        ck_assert_str_eq(l.id.product_uuid_hmac, HMAC_A);
        ck_assert_str_eq(l.id.product_uuid_key, KEY_ID_A);
        ck_assert_str_eq(l.id.machine_id, "");
        /* Nothing to hash: no key made. */
        ck_assert(!fakeroot_exists(root, INSTANCE_KEY_FILE));
        ck_assert_uint_eq(l.n_keys, 2);
        ck_assert_str_eq(l.keys[0].fingerprint, "SHA256:abc");
        ck_assert_str_eq(l.keys[0].created, "2024-05-01T12:00:00Z");
        ck_assert_int_eq(l.keys[0].crng_ready, 1);
        ck_assert_uint_eq(l.keys[1].bits, 3072);
        ck_assert_ptr_null(l.keys[1].created);
        ck_assert_int_eq(l.keys[1].crng_ready, -1);
        ck_assert_ptr_null(l.keys[0].reason);
        ck_assert_str_eq(l.keys[1].reason, SSHKEYS_REASON_ADOPTED);
        ck_assert_ptr_eq(instance_state_find_key(&l, "SHA256:def"), &l.keys[1]);
        ck_assert_ptr_null(instance_state_find_key(&l, "SHA256:xyz"));
        instance_state_done(&l);

        /* Not ours: nothing half loaded. */
        static const char *const bad[] = {
                "", "[]", "{\"version\": 2, \"instance\": {}}", "{\"version\": 1}",
                "{\"version\": 1, \"instance\": {\"machine_id\": \"nope\"}}",
                "{\"version\": 1, \"instance\": {\"product_uuid\": \"nope\"}}",
                /* A hash without the key's ID, or not 64 lowercase hex digits. */
                "{\"version\": 1, \"instance\": {\"product_uuid_hmac\": \"" HMAC_A "\"}}",
                "{\"version\": 1, \"instance\": {\"product_uuid_key\": \"" KEY_ID_A "\"}}",
                "{\"version\": 1, \"instance\": {\"product_uuid_hmac\": \"" UUID_A "\", "
                "\"product_uuid_key\": \"" KEY_ID_A "\"}}",
                "{\"version\": 1, \"instance\": {\"product_uuid_hmac\": "
                "\"AA680A29978B95F76B83689D670A49959C3E2E3B05DBCCD0DAC263AD86AB37DA\", "
                "\"product_uuid_key\": \"" KEY_ID_A "\"}}",
                "{\"version\": 1, \"instance\": {}, \"keys\": [{\"type\": \"rsa\"}]}",
                "{\"version\": 1, \"instance\": {}, \"keys\": [[[[[[[[[[1]]]]]]]]]]}",
                "{\"version\": 1, \"instance\": {}, \"keys\": [{\"type\": \"rsa\", \"fingerprint\": \"SHA256:x\", "
                "\"bits\": 1, \"crng_ready\": \"maybe\"}]}",
        };
        for (unsigned i = 0; i < ELEMENTSOF(bad); i++) {
                fakeroot_write(root, INSTANCE_STATE_FILE, bad[i]);
                ck_assert_int_eq(instance_state_load(path, &l), -EBADMSG);
        }
        fakeroot_write(root, INSTANCE_STATE_FILE, "{\"version\": 1, \"instance\": {}}");
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_uint_eq(l.n_keys, 0);
        ck_assert_ptr_null(l.pending);
        ck_assert_int_eq(l.time, 0);
        instance_state_done(&l);

        /* Its time is read back, and written again as it was; one in
         * another form is not known (a save writes its own). */
        fakeroot_write(root, INSTANCE_STATE_FILE,
                       "{\"version\": 1, \"time\": \"2024-05-01T12:00:00Z\", \"instance\": {}}");
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_int_eq(l.time, 1714564800);
        ck_assert_int_eq(instance_state_format(&l, 0, &text, &len), 0);
        ck_assert_ptr_nonnull(strstr(text, "\"time\": \"2024-05-01T12:00:00Z\""));
        free(text);
        instance_state_done(&l);
        fakeroot_write(root, INSTANCE_STATE_FILE,
                       "{\"version\": 1, \"time\": \"2024-05-01 12:00\", \"instance\": {}}");
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_int_eq(l.time, 0);
        instance_state_done(&l);
}
END_TEST

/* A replacement under way: said between the instance and the keys, and
 * only then; a reader that knows no "pending" reads the rest as ever. */
START_TEST(test_state_pending) {
        InstanceState s = { .id = iid("", MID_A), .pending = (char *) INSTANCE_PENDING_REPLACE_UNKNOWN,
                            .pending_reason = (char *) SSHKEYS_REASON_FIRST_BOOT },
                      l;
        char path[4096], *text;
        size_t len;

        snprintf(path, sizeof path, "%s%s", root, INSTANCE_STATE_FILE);
        ck_assert_int_eq(instance_state_format(&s, 1714564800, &text, &len), 0);
        ck_assert_str_eq(text, "{\n"
                               "  \"version\": 1,\n"
                               "  \"time\": \"2024-05-01T12:00:00Z\",\n"
                               "  \"instance\": {\n"
                               "    \"product_uuid_hmac\": null,\n"
                               "    \"product_uuid_key\": null,\n"
                               "    \"machine_id\": \"" MID_A "\"\n"
                               "  },\n"
                               "  \"pending\": \"replace-unknown\",\n"
                               "  \"pending_reason\": \"" SSHKEYS_REASON_FIRST_BOOT "\",\n"
                               "  \"keys\": []\n"
                               "}\n");
        free(text);
        ck_assert_int_eq(instance_state_save(root, path, &s), 0);
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_str_eq(l.pending, INSTANCE_PENDING_REPLACE_UNKNOWN);
        ck_assert_str_eq(l.pending_reason, SSHKEYS_REASON_FIRST_BOOT);
        ck_assert_str_eq(l.id.machine_id, MID_A);
        ck_assert_uint_eq(l.n_keys, 0);
        instance_state_done(&l);

        /* No reason given: still pending. */
        fakeroot_write(root, INSTANCE_STATE_FILE,
                       "{\"version\": 1, \"instance\": {}, \"pending\": \"replace-unknown\", \"keys\": []}");
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_str_eq(l.pending, INSTANCE_PENDING_REPLACE_UNKNOWN);
        ck_assert_ptr_null(l.pending_reason);
        instance_state_done(&l);
        /* A reason with nothing pending is no reason. */
        fakeroot_write(root, INSTANCE_STATE_FILE, "{\"version\": 1, \"instance\": {}, \"pending\": null, "
                                                  "\"pending_reason\": \"x\"}");
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_ptr_null(l.pending);
        ck_assert_ptr_null(l.pending_reason);
        instance_state_done(&l);
        /* A replacement after a VM generation change. */
        fakeroot_write(root, INSTANCE_STATE_FILE, "{\"version\": 1, \"instance\": {}, \"pending\": \"vm-fork\", "
                                                  "\"pending_reason\": \"" SSHKEYS_REASON_VM_FORK "\"}");
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_str_eq(l.pending, INSTANCE_PENDING_VM_FORK);
        ck_assert_str_eq(l.pending_reason, SSHKEYS_REASON_VM_FORK);
        instance_state_done(&l);
        /* Something pending we do not know how to finish is not ours. */
        fakeroot_write(root, INSTANCE_STATE_FILE, "{\"version\": 1, \"instance\": {}, \"pending\": \"rotate\"}");
        ck_assert_int_eq(instance_state_load(path, &l), -EBADMSG);
}
END_TEST

/* A run killed between making its temporary file and the rename left it
 * in /var/lib/seedbed; nothing but the next write of the record removes
 * it. */
START_TEST(test_state_killed_writer_cleaned) {
        InstanceState s = { .id = iid("", MID_A) };
        static const char *const stale = INSTANCE_STATE_FILE ".0123456789abcdef.tmp";
        char path[4096];

        snprintf(path, sizeof path, "%s%s", root, INSTANCE_STATE_FILE);
        fakeroot_write(root, stale, "{\"version\": 1, \"ti");
        ck_assert_int_eq(instance_state_save(root, path, &s), 0);
        ck_assert(!fakeroot_exists(root, stale));
        ck_assert(fakeroot_exists(root, INSTANCE_STATE_FILE));
}
END_TEST

START_TEST(test_state_build) {
        SshKeysOptions o = options(two_types, 2);
        InstanceId id = iid(UUID_A, MID_A);
        InstanceState first, second;
        SshKeyResult r[2];
        size_t n;

        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ck_assert_int_eq(sshkeys_state_build(NULL, &id, r, n, &first), 0);
        ck_assert_uint_eq(first.n_keys, 2);
        ck_assert_str_eq(first.keys[1].type, "ecdsa");
        ck_assert_str_eq(first.keys[1].fingerprint, r[1].fingerprint);
        ck_assert_int_eq(first.keys[1].crng_ready, 1);
        ck_assert_ptr_nonnull(first.keys[1].created);
        ssh_key_results_done(r, n);

        /* Kept keys carry what the record knew about them; an unknown
         * kept key says nothing. */
        o.crng_ready = false;
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        free(first.keys[0].fingerprint);
        first.keys[0].fingerprint = strdup("SHA256:other");
        ck_assert_int_eq(sshkeys_state_build(&first, &id, r, n, &second), 0);
        ck_assert_int_eq(second.keys[0].crng_ready, -1);
        ck_assert_ptr_null(second.keys[0].created);
        ck_assert_int_eq(second.keys[1].crng_ready, 1);
        ck_assert_str_eq(second.keys[1].created, first.keys[1].created);
        ck_assert_str_eq(second.id.machine_id, MID_A);
        instance_state_done(&second);

        /* Failed keys are left out. */
        r[0].action = SSH_KEY_FAILED;
        ck_assert_int_eq(sshkeys_state_build(&first, &id, r, n, &second), 0);
        ck_assert_uint_eq(second.n_keys, 1);
        ck_assert_str_eq(second.keys[0].type, "ecdsa");
        instance_state_done(&second);
        instance_state_done(&first);
        ssh_key_results_done(r, n);
}
END_TEST

/* The record is world-readable (0644) and the SMBIOS UUID root-only
 * (0400): an unprivileged reader of the record must not learn it. */
#define UUID_A_UPPER "4C4C4544-0037-3610-8056-B4C04F4B4E32"

static void state_path(char path[static 4096]) {
        snprintf(path, 4096, "%s%s", root, INSTANCE_STATE_FILE);
}

/* The record holds the UUID in no form a reader could match. */
static void check_no_uuid(const char *uuid) {
        char *text = fakeroot_read(root, INSTANCE_STATE_FILE), bare[33];
        size_t n = 0;

        ck_assert_ptr_nonnull(text);
        for (const char *p = uuid; *p; p++)
                if (*p != '-')
                        bare[n++] = *p;
        bare[n] = 0;
        ck_assert_msg(!strcasestr(text, uuid) && !strcasestr(text, bare), "the UUID is in the record: %s", text);
        free(text);
}

static void set_uuid(const char *uuid) {
        fakeroot_write(root, "/sys/class/dmi/id/product_uuid", uuid);
}

START_TEST(test_state_uuid_hashed) {
        InstanceState s = {}, l;
        InstanceId now;
        bool unchecked;
        char path[4096], first[INSTANCE_UUID_HMAC_HEX + 1];
        struct stat st;

        state_path(path);
        set_uuid(UUID_A_UPPER "\n");
        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        instance_id_read(root, &s.id);
        /* No key yet: it is made for the first record, not to read one. */
        ck_assert_str_eq(s.id.product_uuid, UUID_A);
        ck_assert_str_eq(s.id.product_uuid_hmac, "");
        ck_assert(!fakeroot_exists(root, INSTANCE_KEY_FILE));

        ck_assert_int_eq(instance_state_save(root, path, &s), 0);
        ck_assert_int_eq(lstat(full(INSTANCE_KEY_FILE), &st), 0);
        ck_assert(S_ISREG(st.st_mode));
        ck_assert_uint_eq(st.st_mode & 07777, 0400);
        ck_assert_int_eq(st.st_size, INSTANCE_KEY_SIZE);
        check_no_uuid(UUID_A);

        /* Read back: the hash of this UUID with this key, the same instance. */
        instance_id_read(root, &now);
        ck_assert_uint_eq(strlen(now.product_uuid_hmac), INSTANCE_UUID_HMAC_HEX);
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_str_eq(l.id.product_uuid, "");
        ck_assert_str_eq(l.id.product_uuid_hmac, now.product_uuid_hmac);
        ck_assert_str_eq(l.id.product_uuid_key, now.product_uuid_key);
        ck_assert_int_eq(instance_compare(&l.id, &now, &unchecked), INSTANCE_SAME);
        ck_assert(!unchecked);
        snprintf(first, sizeof first, "%s", l.id.product_uuid_hmac);
        instance_state_done(&l);

        /* Stable: the next record, with the same key, holds the same hash. */
        s = (InstanceState) { .id = iid(UUID_A, MID_A) };
        ck_assert_int_eq(instance_state_save(root, path, &s), 0);
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_str_eq(l.id.product_uuid_hmac, first);

        /* Another UUID, the same machine-id: a new instance. */
        set_uuid(UUID_B "\n");
        instance_id_read(root, &now);
        ck_assert_str_ne(now.product_uuid_hmac, first);
        ck_assert_str_eq(now.product_uuid_key, l.id.product_uuid_key);
        ck_assert_int_eq(instance_compare(&l.id, &now, NULL), INSTANCE_NEW);
        instance_state_done(&l);
}
END_TEST

/* A record written before the UUID was hashed is still understood, and
 * the next write takes the UUID out of it. */
START_TEST(test_state_old_record) {
        InstanceState l;
        InstanceId now, other;
        char path[4096];

        state_path(path);
        set_uuid(UUID_A "\n");
        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        fakeroot_write(root, INSTANCE_STATE_FILE,
                       "{\"version\": 1, \"instance\": {\"product_uuid\": \"" UUID_A "\", \"machine_id\": \"" MID_A
                       "\"}, \"keys\": []}");
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_str_eq(l.id.product_uuid, UUID_A);
        ck_assert_str_eq(l.id.product_uuid_hmac, "");

        /* Compared in the clear, key or none. */
        instance_id_read(root, &now);
        ck_assert_int_eq(instance_compare(&l.id, &now, NULL), INSTANCE_SAME);
        other = iid(UUID_B, MID_A);
        ck_assert_int_eq(instance_compare(&l.id, &other, NULL), INSTANCE_NEW);

        /* Written again as it was: the UUID goes in hashed. */
        ck_assert_int_eq(instance_state_save(root, path, &l), 0);
        instance_state_done(&l);
        check_no_uuid(UUID_A);
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_str_eq(l.id.product_uuid, "");
        instance_id_read(root, &now);
        ck_assert_str_eq(l.id.product_uuid_hmac, now.product_uuid_hmac);
        ck_assert_int_eq(instance_compare(&l.id, &now, NULL), INSTANCE_SAME);
        ck_assert_int_eq(instance_compare(&l.id, &other, NULL), INSTANCE_SAME); /* no hash: the machine-id decides */
        instance_state_done(&l);
}
END_TEST

/* No key to compare with (deleted, unreadable, replaced): the recorded
 * UUID is unknown and the machine-id decides; never a new instance for
 * that alone. */
START_TEST(test_state_key_missing) {
        InstanceState s = {}, l;
        InstanceId now;
        char path[4096];
        struct stat st;
        bool unchecked;

        state_path(path);
        set_uuid(UUID_A "\n");
        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        instance_id_read(root, &s.id);
        ck_assert_int_eq(instance_state_save(root, path, &s), 0);
        ck_assert_int_eq(instance_state_load(path, &l), 0);

        ck_assert_int_eq(unlink(full(INSTANCE_KEY_FILE)), 0);
        instance_id_read(root, &now);
        ck_assert_str_eq(now.product_uuid, UUID_A);
        ck_assert_str_eq(now.product_uuid_hmac, "");
        /* Reading makes none. */
        ck_assert(!fakeroot_exists(root, INSTANCE_KEY_FILE));
        ck_assert_int_eq(instance_compare(&l.id, &now, &unchecked), INSTANCE_SAME);
        ck_assert(unchecked);
        /* Nothing tells another UUID from this one now... */
        set_uuid(UUID_B "\n");
        instance_id_read(root, &now);
        ck_assert_int_eq(instance_compare(&l.id, &now, NULL), INSTANCE_SAME);
        /* ...but the machine-id does. */
        snprintf(now.machine_id, sizeof now.machine_id, "%s", MID_B);
        ck_assert_int_eq(instance_compare(&l.id, &now, NULL), INSTANCE_NEW);

        /* The next write makes a new key: the old hash still proves
         * nothing, rather than another UUID. */
        set_uuid(UUID_A "\n");
        s = (InstanceState) { .id = iid(UUID_A, MID_A) };
        snprintf(path, sizeof path, "%s/other.json", root);
        ck_assert_int_eq(instance_state_save(root, path, &s), 0);
        ck_assert(fakeroot_exists(root, INSTANCE_KEY_FILE));
        instance_id_read(root, &now);
        ck_assert_str_ne(now.product_uuid_hmac, "");
        ck_assert_str_ne(now.product_uuid_key, l.id.product_uuid_key);
        ck_assert_int_eq(instance_compare(&l.id, &now, &unchecked), INSTANCE_SAME);
        ck_assert(unchecked);
        snprintf(now.machine_id, sizeof now.machine_id, "%s", MID_B);
        ck_assert_int_eq(instance_compare(&l.id, &now, &unchecked), INSTANCE_NEW);
        ck_assert(unchecked);
        instance_state_done(&l);

        /* A file that is no key (cut short, or 32 bytes anyone may read):
         * none, to read; replaced, to write. */
        for (unsigned i = 0; i < 2; i++) {
                char *old = i == 0 ? strdup("short") : fakeroot_read(root, INSTANCE_KEY_FILE), *text;

                ck_assert_ptr_nonnull(old);
                fakeroot_write_bytes(root, INSTANCE_KEY_FILE, old, i == 0 ? 5 : INSTANCE_KEY_SIZE);
                ck_assert_int_eq(chmod(full(INSTANCE_KEY_FILE), 0644), 0);
                instance_id_read(root, &now);
                ck_assert_str_eq(now.product_uuid_hmac, "");
                ck_assert_int_eq(instance_state_save(root, path, &s), 0);
                ck_assert_int_eq(lstat(full(INSTANCE_KEY_FILE), &st), 0);
                ck_assert_int_eq(st.st_size, INSTANCE_KEY_SIZE);
                ck_assert_uint_eq(st.st_mode & 07777, 0400);
                text = fakeroot_read(root, INSTANCE_KEY_FILE);
                ck_assert(memcmp(text, old, 5) != 0);
                free(text);
                free(old);
                ck_assert_int_eq(instance_state_load(path, &l), 0);
                ck_assert_uint_eq(strlen(l.id.product_uuid_hmac), INSTANCE_UUID_HMAC_HEX);
                instance_state_done(&l);
        }

        /* Unknown now: recorded as null, with no key made for it. */
        ck_assert_int_eq(unlink(full(INSTANCE_KEY_FILE)), 0);
        s = (InstanceState) { .id = iid("", MID_A) };
        ck_assert_int_eq(instance_state_save(root, path, &s), 0);
        ck_assert(!fakeroot_exists(root, INSTANCE_KEY_FILE));
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_str_eq(l.id.product_uuid_hmac, "");
        instance_state_done(&l);
}
END_TEST

/* The kernel's CRNG early in boot, before it is ready. */
static int random_not_ready(_unused_ void *buf, _unused_ size_t n) {
        return -EAGAIN;
}

#define OLD_TIME "2021-02-03T04:05:06Z"
#define OLD_RECORD                                                                                      \
        "{\"version\": 1, \"time\": \"" OLD_TIME "\", \"instance\": {\"product_uuid\": \"" UUID_A \
        "\", \"machine_id\": \"" MID_A "\"}, \"keys\": []}"

/* The boot that finds this instance done writes a record from before the
 * UUID was hashed again, hashed; with no key to hash it with (and none to
 * be made: the CRNG is not ready before the gate), it leaves the record
 * as it is for a later boot, never the UUID replaced with null. */
START_TEST(test_state_heal) {
        InstanceState l, h;
        InstanceId now;
        char path[4096], *text;

        state_path(path);
        set_uuid(UUID_A "\n");
        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        fakeroot_write(root, INSTANCE_STATE_FILE, OLD_RECORD);
        instance_id_read(root, &now);
        ck_assert_int_eq(instance_state_load(path, &l), 0);

        instance_key_set_random(random_not_ready);
        ck_assert_int_eq(instance_state_heal(root, path, &l, &now), -EAGAIN);
        text = fakeroot_read(root, INSTANCE_STATE_FILE);
        ck_assert_str_eq(text, OLD_RECORD);
        free(text);
        ck_assert(!fakeroot_exists(root, INSTANCE_KEY_FILE));

        /* A later boot: the hash, and the record's time as it was. */
        instance_key_set_random(NULL);
        ck_assert_int_eq(instance_state_heal(root, path, &l, &now), 1);
        instance_state_done(&l);
        check_no_uuid(UUID_A);
        instance_id_read(root, &now);
        ck_assert_int_eq(instance_state_load(path, &h), 0);
        ck_assert_str_eq(h.id.product_uuid_hmac, now.product_uuid_hmac);
        ck_assert_str_eq(h.id.product_uuid_key, now.product_uuid_key);
        ck_assert_str_eq(h.id.machine_id, MID_A);
        ck_assert_int_eq(h.time, 1612325106);
        /* Nothing left to do. */
        ck_assert_int_eq(instance_state_heal(root, path, &h, &now), 0);
        instance_state_done(&h);

        /* The key lost, then another in its place: the recorded hash
         * cannot be checked, the machine-id says this is the instance, and
         * its UUID is hashed again with the key in place (made when there
         * is none, and only when it can be). */
        for (unsigned i = 0; i < 2; i++) {
                InstanceId other;

                ck_assert_int_eq(unlink(full(INSTANCE_KEY_FILE)), 0);
                if (i == 1) {
                        /* Another record's write makes another key. */
                        InstanceState o = { .id = iid(UUID_B, MID_B) };

                        ck_assert_int_eq(instance_state_save(root, full("/other.json"), &o), 0);
                }
                instance_id_read(root, &now);
                ck_assert_int_eq(instance_state_load(path, &l), 0);
                ck_assert_int_eq(instance_compare(&l.id, &now, NULL), INSTANCE_SAME);
                if (i == 0) {
                        instance_key_set_random(random_not_ready);
                        ck_assert_int_eq(instance_state_heal(root, path, &l, &now), -EAGAIN);
                        ck_assert(!fakeroot_exists(root, INSTANCE_KEY_FILE));
                        instance_key_set_random(NULL);
                }
                ck_assert_int_eq(instance_state_heal(root, path, &l, &now), 1);
                instance_state_done(&l);
                instance_id_read(root, &now);
                ck_assert_int_eq(instance_state_load(path, &l), 0);
                ck_assert_str_eq(l.id.product_uuid_hmac, now.product_uuid_hmac);
                ck_assert_str_eq(l.id.product_uuid_key, now.product_uuid_key);
                ck_assert_int_eq(l.time, 1612325106);
                /* Told apart again: another UUID is another instance. */
                set_uuid(UUID_B "\n");
                instance_id_read(root, &other);
                set_uuid(UUID_A "\n");
                ck_assert_int_eq(instance_compare(&l.id, &other, NULL), INSTANCE_NEW);
                instance_state_done(&l);
        }

        /* Unknown where it was recorded (null): recorded now. */
        fakeroot_write(root, INSTANCE_STATE_FILE, "{\"version\": 1, \"instance\": {\"product_uuid_hmac\": null, "
                                                  "\"product_uuid_key\": null, \"machine_id\": \"" MID_A "\"}}");
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_int_eq(instance_state_heal(root, path, &l, &now), 1);
        instance_state_done(&l);
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_str_eq(l.id.product_uuid_hmac, now.product_uuid_hmac);
        instance_state_done(&l);
        /* Not when the machine-id does not say it is the same instance. */
        fakeroot_write(root, INSTANCE_STATE_FILE, "{\"version\": 1, \"instance\": {\"product_uuid_hmac\": null, "
                                                  "\"product_uuid_key\": null, \"machine_id\": null}}");
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        ck_assert_int_eq(instance_compare(&l.id, &now, NULL), INSTANCE_UNKNOWN);
        ck_assert_int_eq(instance_state_heal(root, path, &l, &now), 0);
        instance_state_done(&l);

        /* Another instance's record is not this one's to rewrite. */
        fakeroot_write(root, INSTANCE_STATE_FILE, OLD_RECORD);
        ck_assert_int_eq(instance_state_load(path, &l), 0);
        set_uuid(UUID_B "\n");
        instance_id_read(root, &now);
        ck_assert_int_eq(instance_state_heal(root, path, &l, &now), 0);
        instance_state_done(&l);
        text = fakeroot_read(root, INSTANCE_STATE_FILE);
        ck_assert_str_eq(text, OLD_RECORD);
        free(text);
}
END_TEST

/* One sshkeys_ensure_instance() of the Ed25519 key: what it found the
 * instance to be, what it did, and the key's fingerprint after. */
static char *ensure_ed25519(InstanceChange change, SshKeyAction action) {
        SshKeysOptions o = options(ed25519_only, 1);
        InstanceChange c;
        SshKeyResult r[1];
        size_t n;

        ck_assert_int_eq(sshkeys_ensure_instance(&o, r, &n, &c), 0);
        ck_assert_int_eq(c, change);
        ck_assert_int_eq(r[0].action, action);
        ssh_key_results_done(r, n);
        return private_fingerprint(HOST_KEY_ED25519);
}

/* A first boot done gets a key of its own: the record just written for
 * this instance is hashed again with it; one of another instance is not
 * (it must still tell that one apart), and with the CRNG not ready the
 * old key stays. */
START_TEST(test_key_renew) {
        InstanceState before, after;
        InstanceId was, now;
        char path[4096], *fp, *old_key, *text;

        state_path(path);
        set_uuid(UUID_A "\n");
        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        fp = ensure_ed25519(INSTANCE_UNKNOWN, SSH_KEY_CREATED);
        free(fp);
        ck_assert_int_eq(instance_state_load(path, &before), 0);
        old_key = fakeroot_read(root, INSTANCE_KEY_FILE);

        instance_key_set_random(random_not_ready);
        ck_assert_int_eq(instance_key_renew(root), -EAGAIN);
        text = fakeroot_read(root, INSTANCE_KEY_FILE);
        ck_assert_mem_eq(text, old_key, INSTANCE_KEY_SIZE);
        free(text);
        instance_key_set_random(NULL);

        instance_id_read(root, &was);
        ck_assert_int_eq(instance_key_renew(root), 0);
        text = fakeroot_read(root, INSTANCE_KEY_FILE);
        ck_assert(memcmp(text, old_key, INSTANCE_KEY_SIZE) != 0);
        free(text);
        instance_id_read(root, &now);
        ck_assert_str_ne(now.product_uuid_key, was.product_uuid_key);
        ck_assert_int_eq(instance_state_rekey(path, &was, &now), 1);
        ck_assert_int_eq(instance_state_load(path, &after), 0);
        ck_assert_str_eq(after.id.product_uuid_hmac, now.product_uuid_hmac);
        ck_assert_str_eq(after.id.product_uuid_key, now.product_uuid_key);
        ck_assert_int_eq(instance_compare(&after.id, &now, NULL), INSTANCE_SAME);
        ck_assert_int_eq(after.time, before.time);
        ck_assert_uint_eq(after.n_keys, 1);
        ck_assert_str_eq(after.keys[0].fingerprint, before.keys[0].fingerprint);
        instance_state_done(&before);
        instance_state_done(&after);

        /* The record is another instance's: left as it is. */
        set_uuid(UUID_B "\n");
        instance_id_read(root, &was);
        ck_assert_int_eq(instance_key_renew(root), 0);
        instance_id_read(root, &now);
        text = fakeroot_read(root, INSTANCE_STATE_FILE);
        ck_assert_int_eq(instance_state_rekey(path, &was, &now), 0);
        fp = fakeroot_read(root, INSTANCE_STATE_FILE);
        ck_assert_str_eq(fp, text);
        free(fp);
        free(text);
        free(old_key);
}
END_TEST

/* The whole run: a lost instance key replaces no host key, and the
 * record is written again with a new one. */
START_TEST(test_instance_key_lost_keeps_keys) {
        InstanceState s;
        char path[4096], *before, *after;

        state_path(path);
        set_uuid(UUID_A_UPPER "\n");
        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        before = ensure_ed25519(INSTANCE_UNKNOWN, SSH_KEY_CREATED);
        check_no_uuid(UUID_A);

        ck_assert_int_eq(unlink(full(INSTANCE_KEY_FILE)), 0);
        after = ensure_ed25519(INSTANCE_SAME, SSH_KEY_KEPT);
        ck_assert_str_eq(before, after);
        free(after);
        check_no_uuid(UUID_A);
        ck_assert(fakeroot_exists(root, INSTANCE_KEY_FILE));
        ck_assert_int_eq(instance_state_load(path, &s), 0);
        ck_assert_uint_eq(strlen(s.id.product_uuid_hmac), INSTANCE_UUID_HMAC_HEX);
        instance_state_done(&s);

        /* With the new key the UUID counts again: a clone gets new keys. */
        set_uuid(UUID_B "\n");
        after = ensure_ed25519(INSTANCE_NEW, SSH_KEY_REPLACED);
        ck_assert_str_ne(before, after);
        free(after);
        free(before);
        check_no_uuid(UUID_B);
}
END_TEST

/* Made once with ssh-keygen (OpenSSH 9.2): "-C ''" leaves a blank after
 * the key, which cat shows and ssh-keygen -l reads as no comment. */
#define FIXED_ED25519_PRIVATE                                                    \
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"                                  \
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n" \
        "QyNTUxOQAAACAjdUBka3/cfS7cLeuibME/MzlElx9pK6pAgfQVpaRG0wAAAIiuKo9JriqP\n" \
        "SQAAAAtzc2gtZWQyNTUxOQAAACAjdUBka3/cfS7cLeuibME/MzlElx9pK6pAgfQVpaRG0w\n" \
        "AAAEBogwWOrxNxeto9j73lX7DNKl05qjIf+j3sPgECcxXRzSN1QGRrf9x9Ltwt66JswT8z\n" \
        "OUSXH2krqkCB9BWlpEbTAAAAAAECAwQF\n"                                    \
        "-----END OPENSSH PRIVATE KEY-----\n"
#define FIXED_ED25519_PUB "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN1QGRrf9x9Ltwt66JswT8zOUSXH2krqkCB9BWlpEbT "
#define FIXED_ECDSA_PRIVATE                                                      \
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"                                  \
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS\n" \
        "1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQSguOyLn44V6CV4Ba8g2wmkMUZcOAbT\n" \
        "7KoIZr0wYkAPHr6W7ekgP6BEzd1EE4U/E/LTmh1qlkfCb1YGLBw065u3AAAAqGJ5L9tieS\n" \
        "/bAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKC47IufjhXoJXgF\n" \
        "ryDbCaQxRlw4BtPsqghmvTBiQA8evpbt6SA/oETN3UQThT8T8tOaHWqWR8JvVgYsHDTrm7\n" \
        "cAAAAgYDps74/R6DANnHv+05zEEes0LsCqVSIhivJcpXJxJBsAAAAMcm9vdEBleGFtcGxl\n" \
        "AQIDBA==\n"                                                             \
        "-----END OPENSSH PRIVATE KEY-----\n"
#define FIXED_ECDSA_PUB                                                                                   \
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKC47IufjhXoJXgFryDbCaQxRlw4" \
        "BtPsqghmvTBiQA8evpbt6SA/oETN3UQThT8T8tOaHWqWR8JvVgYsHDTrm7c= root@example"

/* What cloud-init's write-ssh-key-fingerprints prints for these two keys
 * (its fingerprint lines are ssh-keygen -l's, checked against OpenSSH). */
#define FIXED_FINGERPRINTS                                                      \
        "#############################################################\n"       \
        "-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"                           \
        "256 SHA256:esZ0lyTGpx20ci49gjkx2ovsjfBRiENXb8csB4HgPNs root@example (ECDSA)\n" \
        "256 SHA256:ihdAplCnTAXjoJbiWICaLhKqbp+VOEkP9VmjxV/ycn0 no comment (ED25519)\n" \
        "-----END SSH HOST KEY FINGERPRINTS-----\n"                             \
        "#############################################################\n"
#define FIXED_KEYS                                                              \
        "-----BEGIN SSH HOST KEY KEYS-----\n"                                   \
        FIXED_ECDSA_PUB "\n"                                                    \
        FIXED_ED25519_PUB "\n"                                                  \
        "-----END SSH HOST KEY KEYS-----\n"

static void write_fixed_keys(void) {
        fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key", FIXED_ED25519_PRIVATE);
        fakeroot_write(root, "/etc/ssh/ssh_host_ed25519_key.pub", FIXED_ED25519_PUB "\n");
        fakeroot_write(root, "/etc/ssh/ssh_host_ecdsa_key", FIXED_ECDSA_PRIVATE);
        fakeroot_write(root, "/etc/ssh/ssh_host_ecdsa_key.pub", FIXED_ECDSA_PUB "\n");
}

START_TEST(test_console_format) {
        SshKeysOptions o = options(two_types, 2);
        SshKeyResult r[2];
        char *text;
        size_t n;

        write_fixed_keys();
        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        results_check_ok(r, n, SSH_KEY_KEPT);

        ck_assert_int_eq(sshkeys_format_console(r, n, true, true, &text), 0);
        ck_assert_str_eq(text, FIXED_FINGERPRINTS FIXED_KEYS);
        free(text);
        ck_assert_int_eq(sshkeys_format_console(r, n, true, false, &text), 0);
        ck_assert_str_eq(text, FIXED_FINGERPRINTS);
        free(text);
        ck_assert_int_eq(sshkeys_format_console(r, n, false, true, &text), 0);
        ck_assert_str_eq(text, FIXED_KEYS);
        free(text);
        ck_assert_int_eq(sshkeys_format_console(r, n, false, false, &text), 0);
        ck_assert_str_eq(text, "");
        free(text);

        /* A failed key is left out; with none left, no empty blocks. */
        r[1].action = SSH_KEY_FAILED;
        ck_assert_int_eq(sshkeys_format_console(r, n, true, false, &text), 0);
        ck_assert_str_eq(text, "#############################################################\n"
                               "-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
                               "256 SHA256:ihdAplCnTAXjoJbiWICaLhKqbp+VOEkP9VmjxV/ycn0 no comment (ED25519)\n"
                               "-----END SSH HOST KEY FINGERPRINTS-----\n"
                               "#############################################################\n");
        free(text);
        r[0].action = SSH_KEY_FAILED;
        ck_assert_int_eq(sshkeys_format_console(r, n, true, true, &text), 0);
        ck_assert_str_eq(text, "");
        free(text);
        ck_assert_int_eq(sshkeys_format_console(NULL, 0, true, true, &text), 0);
        ck_assert_str_eq(text, "");
        free(text);
        ssh_key_results_done(r, n);
}
END_TEST

/* The first boot, from what is observed: under --root only the file
 * speaks; on this system systemd's flag and its mount over the file too. */
START_TEST(test_first_boot_decide) {
        static const struct {
                bool this_system, flag, transient;
                MachineIdFile file;
                bool want;
                bool this_boot; /* last: most rows leave it false */
        } table[] = {
                /* --root: the tree's file alone. */
                { false, false, false, MACHINE_ID_MISSING, true },
                { false, false, false, MACHINE_ID_EMPTY, true },
                { false, false, false, MACHINE_ID_UNINITIALIZED, true },
                { false, false, false, MACHINE_ID_SET, false },
                { false, false, false, MACHINE_ID_OTHER, false },
                /* The host's /run and mounts never count for a tree. */
                { false, true, true, MACHINE_ID_SET, false },
                /* This system: systemd has mounted a transient ID over an
                 * empty or "uninitialized" file, so the file reads as set. */
                { true, true, true, MACHINE_ID_SET, true },
                { true, false, true, MACHINE_ID_SET, true },
                { true, true, false, MACHINE_ID_SET, true },
                { true, false, false, MACHINE_ID_SET, false },
                { true, false, false, MACHINE_ID_OTHER, false },
                { true, false, false, MACHINE_ID_MISSING, true },
                { true, false, false, MACHINE_ID_EMPTY, true },
                { true, false, false, MACHINE_ID_UNINITIALIZED, true },
                /* PID 1 wrote the ID into an empty file on a root that
                 * was read-write from the start: set, but in this boot. */
                { true, false, false, MACHINE_ID_SET, true, true },
                { false, false, false, MACHINE_ID_SET, false, true },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                FirstBootFacts f = { .this_system = table[i].this_system, .flag = table[i].flag,
                                     .machine_id_transient = table[i].transient,
                                     .machine_id_this_boot = table[i].this_boot, .machine_id = table[i].file };

                ck_assert_msg(first_boot_decide(&f) == table[i].want, "row %zu", i);
        }
}
END_TEST

START_TEST(test_first_boot_facts) {
        static const struct {
                const char *content; /* NULL: no file */
                MachineIdFile want;
        } table[] = {
                { NULL, MACHINE_ID_MISSING },
                { "", MACHINE_ID_EMPTY },
                { "\n", MACHINE_ID_EMPTY },
                { "uninitialized\n", MACHINE_ID_UNINITIALIZED },
                { "uninitialized", MACHINE_ID_UNINITIALIZED },
                { MID_A "\n", MACHINE_ID_SET },
                { "0123456789ABCDEF0123456789ABCDEF\n", MACHINE_ID_SET },
                { "00000000000000000000000000000000\n", MACHINE_ID_OTHER },
                { "not an id\n", MACHINE_ID_OTHER },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                FirstBootFacts f;

                (void) unlink(full("/etc/machine-id"));
                if (table[i].content)
                        fakeroot_write(root, "/etc/machine-id", table[i].content);
                first_boot_facts_read(root, &f);
                ck_assert_msg(f.machine_id == table[i].want, "row %zu: %d", i, f.machine_id);
                /* Under a root, nothing of this system is looked at. */
                ck_assert(!f.this_system && !f.flag && !f.machine_id_transient && !f.machine_id_this_boot);
        }
}
END_TEST

/* Which file system is mounted over a path, as /proc/self/mountinfo
 * says: the last mount there hides the ones before. */
START_TEST(test_mountinfo_fstype) {
#define MI_ROOT "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n"
#define MI_RUN "25 22 0:23 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=402016k,mode=755\n"
#define MI_TRANSIENT "31 22 0:23 /machine-id /etc/machine-id ro,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755\n"
#define MI_PERSIST "32 22 252:2 /state/etc/machine-id /etc/machine-id rw,relatime shared:9 - btrfs /dev/vda2 rw\n"
        static const struct {
                const char *text, *mount_point;
                int ret;
                const char *want;
        } table[] = {
                /* systemd's transient ID, from the tmpfs on /run. */
                { MI_ROOT MI_RUN MI_TRANSIENT, "/etc/machine-id", 0, "tmpfs" },
                /* Impermanence: a bind from persistent storage. */
                { MI_ROOT MI_PERSIST, "/etc/machine-id", 0, "btrfs" },
                /* Stacked: the one on top. */
                { MI_ROOT MI_RUN MI_TRANSIENT MI_PERSIST, "/etc/machine-id", 0, "btrfs" },
                { MI_ROOT MI_PERSIST MI_RUN MI_TRANSIENT, "/etc/machine-id", 0, "tmpfs" },
                { MI_ROOT MI_RUN, "/etc/machine-id", -ENOENT, NULL },
                { MI_ROOT MI_RUN, "/run", 0, "tmpfs" },
                { "", "/etc/machine-id", -ENOENT, NULL },
                /* No optional fields, or several. */
                { "31 22 0:23 /machine-id /etc/machine-id ro - ramfs ramfs rw\n", "/etc/machine-id", 0, "ramfs" },
                { "31 22 0:23 / /etc/machine-id ro shared:5 master:1 propagate_from:1 - xfs /dev/sdb rw",
                  "/etc/machine-id", 0, "xfs" },
                /* Paths are escaped; a longer one is another. */
                { "40 22 0:23 / /etc/machine\\040id ro - tmpfs tmpfs rw\n", "/etc/machine id", 0, "tmpfs" },
                { "40 22 0:23 / /etc/machine\\040id ro - tmpfs tmpfs rw\n", "/etc/machine-id", -ENOENT, NULL },
                { "41 22 0:23 / /etc/machine-id.d ro - tmpfs tmpfs rw\n", "/etc/machine-id", -ENOENT, NULL },
                /* Lines too short to be mounts are passed over. */
                { "31 22 0:23 /machine-id /etc/machine-id\n31 22 0:23 / /etc/machine-id ro -\n" MI_PERSIST,
                  "/etc/machine-id", 0, "btrfs" },
                { "31 22 0:23 /machine-id /etc/machine-id ro shared:5\n", "/etc/machine-id", -ENOENT, NULL },
        };
#undef MI_ROOT
#undef MI_RUN
#undef MI_TRANSIENT
#undef MI_PERSIST

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char *fstype = NULL;

                ck_assert_msg(mountinfo_fstype(table[i].text, table[i].mount_point, &fstype) == table[i].ret,
                              "row %zu", i);
                if (table[i].want)
                        ck_assert_str_eq(fstype, table[i].want);
                else
                        ck_assert_ptr_null(fstype);
                free(fstype);
        }
}
END_TEST

/* Only systemd's own transient ID is a sign of a first boot: a mount that
 * is there on every boot of a server is not. */
START_TEST(test_first_boot_transient_mount) {
#define CMDLINE_ID "0123456789abcdef0123456789abcdef"
        static const struct {
                const char *fstype, *cmdline;
                bool container, want;
        } table[] = {
                { "tmpfs", "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro quiet", false, true },
                { "ramfs", "ro", false, true },
                { "tmpfs", NULL, false, true },
                { "tmpfs", "", false, true },
                /* Not mounted, or a bind from persistent storage. */
                { NULL, "ro", false, false },
                { "ext4", "ro", false, false },
                { "btrfs", "ro", false, false },
                { "xfs", "ro", false, false },
                { "overlay", "ro", false, false },
                /* PID 1 is handed the ID: it mounts it on every boot of a
                 * root that is read-only at its start. */
                { "tmpfs", "ro systemd.machine_id=" CMDLINE_ID, false, false },
                { "tmpfs", "systemd.machine_id=" CMDLINE_ID " ro", false, false },
                { "tmpfs", "ro systemd.machine-id=" CMDLINE_ID, false, false },
                { "tmpfs", "ro \"systemd.machine_id=" CMDLINE_ID "\"", false, false },
                { "tmpfs", "ro\tsystemd.machine_id=firmware\n", false, false },
                /* Other keys: the initrd's, a longer one, no value. */
                { "tmpfs", "ro rd.systemd.machine_id=" CMDLINE_ID, false, true },
                { "tmpfs", "ro systemd.machine_idx=1", false, true },
                { "tmpfs", "ro systemd.machine_id", false, true },
                { "tmpfs", "ro xsystemd.machine_id=1", false, true },
                /* A container's manager mounts what it likes. */
                { "tmpfs", "ro", true, false },
        };
#undef CMDLINE_ID

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                ck_assert_msg(first_boot_transient_mount(table[i].fstype, table[i].cmdline, table[i].container) ==
                                      table[i].want,
                              "row %zu", i);
}
END_TEST

/* Written in this boot: between its start and now, by a clock that
 * compares across boots, a regular file. */
START_TEST(test_first_boot_written_this_boot) {
#define BOOT ((usec_t) 1714564800 * USEC_PER_SEC)
#define NOW (BOOT + 60 * USEC_PER_SEC)
        static const struct {
                usec_t mtime;
                bool regular, trusted, want;
        } table[] = {
                { BOOT + 2 * USEC_PER_SEC, true, true, true },
                { BOOT, true, true, true },
                { NOW, true, true, true },
                /* Before this boot. */
                { BOOT - 1, true, true, false },
                { BOOT - 86400 * USEC_PER_SEC, true, true, false },
                { 0, true, true, false },
                /* In the future: another boot's clock ran ahead. */
                { NOW + 1, true, true, false },
                { NOW + 86400 * USEC_PER_SEC, true, true, false },
                /* A link (into /run), or anything but a file. */
                { BOOT + 2 * USEC_PER_SEC, false, true, false },
                /* No RTC and not synchronised: every boot's clock starts
                 * at the same time. */
                { BOOT + 2 * USEC_PER_SEC, true, false, false },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                ck_assert_msg(first_boot_written_this_boot(table[i].mtime, BOOT, NOW, table[i].regular,
                                                           table[i].trusted) == table[i].want,
                              "row %zu", i);
#undef BOOT
#undef NOW
}
END_TEST

static void set_mtime(const char *path, usec_t t) {
        struct timespec ts[2] = {
                { .tv_sec = (time_t) (t / USEC_PER_SEC), .tv_nsec = (long) (t % USEC_PER_SEC) * 1000 },
                { .tv_sec = (time_t) (t / USEC_PER_SEC), .tv_nsec = (long) (t % USEC_PER_SEC) * 1000 },
        };

        ck_assert_int_eq(utimensat(AT_FDCWD, full(path), ts, AT_SYMLINK_NOFOLLOW), 0);
}

#define MOUNTINFO_ROOT "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"

/* The running system's facts, from a tree laid out as / is. */
START_TEST(test_first_boot_facts_system) {
        usec_t now = now_usec(CLOCK_REALTIME), boot = now - now_usec(CLOCK_BOOTTIME);
        FirstBootFacts f;

        /* PID 1 wrote the ID into an empty file on a root read-write from
         * the start: the file's time alone says so. */
        fakeroot_write(root, "/proc/self/mountinfo", MOUNTINFO_ROOT);
        fakeroot_write(root, "/proc/cmdline", "root=/dev/vda1 rw quiet\n");
        fakeroot_write(root, "/sys/class/rtc/rtc0/hctosys", "1\n");
        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        first_boot_facts_read_system(root, &f);
        ck_assert(f.this_system);
        ck_assert(!f.flag);
        ck_assert(!f.machine_id_transient);
        ck_assert(f.machine_id_this_boot);
        ck_assert_int_eq(f.machine_id, MACHINE_ID_SET);
        ck_assert(first_boot_decide(&f));

        /* Written long before, and chmod()ed (a relabel, a chown) in this
         * boot: not this boot's. */
        set_mtime("/etc/machine-id", boot - 86400 * USEC_PER_SEC);
        ck_assert_int_eq(chmod(full("/etc/machine-id"), 0400), 0);
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_this_boot);
        ck_assert(!first_boot_decide(&f));
        /* Nor in the future. */
        set_mtime("/etc/machine-id", now + 86400 * USEC_PER_SEC);
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_this_boot);
        /* Nor a link to a file written now. */
        ck_assert_int_eq(unlink(full("/etc/machine-id")), 0);
        fakeroot_write(root, "/run/machine-id", MID_A "\n");
        fakeroot_symlink(root, "/etc/machine-id", "../run/machine-id");
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_this_boot);
        /* Nor written now by a clock that came from no RTC. */
        ck_assert_int_eq(unlink(full("/etc/machine-id")), 0);
        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        first_boot_facts_read_system(root, &f);
        ck_assert(f.machine_id_this_boot);
        fakeroot_write(root, "/sys/class/rtc/rtc0/hctosys", "0\n");
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_this_boot);
        fakeroot_write(root, "/sys/class/rtc/rtc1/hctosys", "1\n");
        first_boot_facts_read_system(root, &f);
        ck_assert(f.machine_id_this_boot);
        /* Nor when the command line gives PID 1 the ID (it rewrites a
         * writable file with it on every boot), in a container (its file
         * is younger than the host's boot, whose clock it shares), or
         * when the command line cannot be read (it may give the ID). */
        fakeroot_write(root, "/proc/cmdline", "root=/dev/vda1 rw systemd.machine_id=" MID_A "\n");
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_this_boot);
        ck_assert(!first_boot_decide(&f));
        fakeroot_write(root, "/proc/cmdline", "root=/dev/vda1 rw quiet\n");
        fakeroot_write(root, "/run/systemd/container", "podman\n");
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_this_boot);
        ck_assert(!first_boot_decide(&f));
        ck_assert_int_eq(unlink(full("/run/systemd/container")), 0);
        ck_assert_int_eq(unlink(full("/proc/cmdline")), 0);
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_this_boot);
        fakeroot_write(root, "/proc/cmdline", "root=/dev/vda1 rw quiet\n");
        first_boot_facts_read_system(root, &f);
        ck_assert(f.machine_id_this_boot);
        /* Nor when the mounts cannot be read: a mount may hide it. */
        ck_assert_int_eq(unlink(full("/proc/self/mountinfo")), 0);
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_this_boot);
        ck_assert(!first_boot_decide(&f));

        /* systemd's transient ID, from /run: a first boot.  Then the file
         * seen is the one mounted, made in this boot: its time is not the
         * sign. */
        fakeroot_write(root, "/proc/self/mountinfo",
                       MOUNTINFO_ROOT "31 22 0:23 /machine-id /etc/machine-id ro shared:5 - tmpfs tmpfs rw\n");
        fakeroot_write(root, "/proc/cmdline", "root=/dev/vda1 ro quiet\n");
        first_boot_facts_read_system(root, &f);
        ck_assert(f.machine_id_transient);
        ck_assert(!f.machine_id_this_boot);
        ck_assert(first_boot_decide(&f));

        /* The ID on the command line, a container, persistent storage
         * bound over the file: mounted on every boot, all of them new. */
        fakeroot_write(root, "/proc/cmdline", "ro systemd.machine_id=" MID_A "\n");
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_transient);
        ck_assert(!f.machine_id_this_boot);
        ck_assert(!first_boot_decide(&f));
        fakeroot_write(root, "/proc/cmdline", "ro\n");
        fakeroot_write(root, "/run/systemd/container", "podman\n");
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_transient);
        ck_assert(!first_boot_decide(&f));
        ck_assert_int_eq(unlink(full("/run/systemd/container")), 0);
        first_boot_facts_read_system(root, &f);
        ck_assert(f.machine_id_transient);
        /* A command line that cannot be read may hold the ID. */
        ck_assert_int_eq(unlink(full("/proc/cmdline")), 0);
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_transient);
        fakeroot_write(root, "/proc/cmdline", "ro\n");
        fakeroot_write(root, "/proc/self/mountinfo",
                       MOUNTINFO_ROOT "32 22 252:2 /persist/machine-id /etc/machine-id rw shared:9 - ext4 /dev/vda2 rw\n");
        first_boot_facts_read_system(root, &f);
        ck_assert(!f.machine_id_transient);
        ck_assert(!f.machine_id_this_boot);
        ck_assert(!first_boot_decide(&f));

        /* systemd's flag. */
        fakeroot_write(root, "/run/systemd/first-boot", "");
        first_boot_facts_read_system(root, &f);
        ck_assert(f.flag);
        ck_assert(first_boot_decide(&f));
}
END_TEST

#undef MOUNTINFO_ROOT

/* What becomes of the keys found in place, from everything observed. */
START_TEST(test_decide) {
        static const struct {
                bool replace, record;
                InstanceChange change;
                UnknownKeysPolicy policy;
                bool first_boot;
                SshKeysExisting want;
                const char *reason;
                bool pending;               /* last: most rows have none */
                const char *pending_reason;
                bool fork;
        } table[] = {
                /* A record vouches: unchanged behaviour, whatever the policy. */
                { false, true, INSTANCE_SAME, UNKNOWN_KEYS_ALWAYS, true, SSH_KEYS_KEEP, NULL },
                { false, true, INSTANCE_UNKNOWN, UNKNOWN_KEYS_FIRST_BOOT, true, SSH_KEYS_KEEP, NULL },
                { false, true, INSTANCE_NEW, UNKNOWN_KEYS_NEVER, false, SSH_KEYS_REPLACE,
                  SSHKEYS_REASON_NEW_INSTANCE },
                /* Asked for: always. */
                { true, true, INSTANCE_SAME, UNKNOWN_KEYS_NEVER, false, SSH_KEYS_REPLACE, SSHKEYS_REASON_ASKED },
                { true, false, INSTANCE_UNKNOWN, UNKNOWN_KEYS_NEVER, false, SSH_KEYS_REPLACE, SSHKEYS_REASON_ASKED },
                /* No record: the policy.  A replacement is recorded before
                 * it begins. */
                { false, false, INSTANCE_UNKNOWN, UNKNOWN_KEYS_FIRST_BOOT, true, SSH_KEYS_REPLACE_UNKNOWN,
                  SSHKEYS_REASON_FIRST_BOOT },
                { false, false, INSTANCE_UNKNOWN, UNKNOWN_KEYS_FIRST_BOOT, false, SSH_KEYS_ADOPT,
                  SSHKEYS_REASON_ADOPTED },
                { false, false, INSTANCE_UNKNOWN, UNKNOWN_KEYS_ALWAYS, false, SSH_KEYS_REPLACE_UNKNOWN,
                  SSHKEYS_REASON_UNKNOWN_ALWAYS },
                { false, false, INSTANCE_UNKNOWN, UNKNOWN_KEYS_ALWAYS, true, SSH_KEYS_REPLACE_UNKNOWN,
                  SSHKEYS_REASON_UNKNOWN_ALWAYS },
                { false, false, INSTANCE_UNKNOWN, UNKNOWN_KEYS_NEVER, true, SSH_KEYS_ADOPT,
                  SSHKEYS_REASON_ADOPTED_NEVER },
                { false, false, INSTANCE_UNKNOWN, UNKNOWN_KEYS_NEVER, false, SSH_KEYS_ADOPT,
                  SSHKEYS_REASON_ADOPTED_NEVER },
                /* A pending replacement of this instance (or of one not
                 * known to be another) is finished, with its reason,
                 * whatever the signs of a first boot and the policy say
                 * now. */
                { false, true, INSTANCE_SAME, UNKNOWN_KEYS_FIRST_BOOT, false, SSH_KEYS_REPLACE_UNKNOWN,
                  SSHKEYS_REASON_FIRST_BOOT, true, SSHKEYS_REASON_FIRST_BOOT },
                { false, true, INSTANCE_UNKNOWN, UNKNOWN_KEYS_FIRST_BOOT, false, SSH_KEYS_REPLACE_UNKNOWN,
                  SSHKEYS_REASON_FIRST_BOOT, true, SSHKEYS_REASON_FIRST_BOOT },
                { false, true, INSTANCE_SAME, UNKNOWN_KEYS_NEVER, false, SSH_KEYS_REPLACE_UNKNOWN,
                  SSHKEYS_REASON_UNKNOWN_ALWAYS, true, SSHKEYS_REASON_UNKNOWN_ALWAYS },
                { false, true, INSTANCE_SAME, UNKNOWN_KEYS_FIRST_BOOT, false, SSH_KEYS_REPLACE_UNKNOWN,
                  SSHKEYS_REASON_PENDING, true, NULL },
                /* Another instance, or all asked for: every key, the
                 * pending record's too. */
                { false, true, INSTANCE_NEW, UNKNOWN_KEYS_FIRST_BOOT, false, SSH_KEYS_REPLACE,
                  SSHKEYS_REASON_NEW_INSTANCE, true, SSHKEYS_REASON_FIRST_BOOT },
                { true, true, INSTANCE_SAME, UNKNOWN_KEYS_FIRST_BOOT, false, SSH_KEYS_REPLACE, SSHKEYS_REASON_ASKED,
                  true, SSHKEYS_REASON_FIRST_BOOT },
                /* A VM generation change: every key, with or without a
                 * record, pending (one begun before this change) or not,
                 * whatever else was asked. */
                { false, true, INSTANCE_SAME, UNKNOWN_KEYS_FIRST_BOOT, false, SSH_KEYS_REPLACE_FORK,
                  SSHKEYS_REASON_VM_FORK, false, NULL, true },
                { false, false, INSTANCE_UNKNOWN, UNKNOWN_KEYS_NEVER, false, SSH_KEYS_REPLACE_FORK,
                  SSHKEYS_REASON_VM_FORK, false, NULL, true },
                { true, true, INSTANCE_NEW, UNKNOWN_KEYS_FIRST_BOOT, false, SSH_KEYS_REPLACE_FORK,
                  SSHKEYS_REASON_VM_FORK, true, SSHKEYS_REASON_VM_FORK, true },
                /* One that did not finish is finished by the next run,
                 * keeping what it made after the change. */
                { false, true, INSTANCE_SAME, UNKNOWN_KEYS_NEVER, false, SSH_KEYS_REPLACE_UNKNOWN,
                  SSHKEYS_REASON_VM_FORK, true, SSHKEYS_REASON_VM_FORK },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                SshKeysFacts f = { .replace = table[i].replace, .record = table[i].record, .change = table[i].change,
                                   .policy = table[i].policy, .first_boot = table[i].first_boot,
                                   .pending = table[i].pending, .pending_reason = table[i].pending_reason,
                                   .fork = table[i].fork };
                const char *reason = "unset";

                ck_assert_msg(sshkeys_decide(&f, &reason) == table[i].want, "row %zu", i);
                if (table[i].reason)
                        ck_assert_str_eq(reason, table[i].reason);
                else
                        ck_assert_ptr_null(reason);
        }
}
END_TEST

/* seedbed-agent console prints only what cloud-init did not, for keys
 * made in this boot. */
START_TEST(test_console_decide) {
        static const struct {
                bool blocks, cloud_init, record, keys_made, cloud_init_printed;
                SshConsoleDecision want;
        } table[] = {
                /* Keys made, cloud-init's module did not run in this boot
                 * (a clone keeping its instance-id, ssh.regenerate, the
                 * module off): the only case that prints. */
                { true, true, true, true, false, SSH_CONSOLE_PRINT },
                /* It printed them, after every key writer. */
                { true, true, true, true, true, SSH_CONSOLE_PRINTED_BY_CLOUD_INIT },
                /* No key made in this boot: the blocks of earlier boots hold. */
                { true, true, true, false, false, SSH_CONSOLE_NO_NEW_KEYS },
                { true, true, true, false, true, SSH_CONSOLE_NO_NEW_KEYS },
                { true, true, false, false, false, SSH_CONSOLE_NO_RECORD },
                /* Without cloud-init the agent printed them itself. */
                { true, false, true, true, false, SSH_CONSOLE_PRINTED_BY_AGENT },
                { true, false, false, false, false, SSH_CONSOLE_PRINTED_BY_AGENT },
                /* ssh.console: [] wins over everything. */
                { false, true, true, true, false, SSH_CONSOLE_OFF },
                { false, false, false, false, false, SSH_CONSOLE_OFF },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                SshConsoleFacts f = { .blocks = table[i].blocks, .cloud_init = table[i].cloud_init,
                                      .record = table[i].record, .keys_made = table[i].keys_made,
                                      .cloud_init_printed = table[i].cloud_init_printed };
                SshConsoleDecision d = sshkeys_console_decide(&f);

                ck_assert_msg(d == table[i].want, "row %zu: %d", i, (int) d);
                if (d == SSH_CONSOLE_PRINT)
                        ck_assert_ptr_null(ssh_console_decision_reason(d));
                else
                        ck_assert_ptr_nonnull(ssh_console_decision_reason(d));
        }
}
END_TEST

/* The keys in place, read without a byte written: the same blocks as the
 * run that made them; a .pub another tool left stale shows what sshd
 * serves; a missing key fails alone. */
START_TEST(test_load) {
        SshKeysOptions o = options(all_types, 3);
        SshKeyResult made[3] = {}, now[3] = {};
        _cleanup_free_ char *want = NULL, *got = NULL, *pub = NULL, *pub_after = NULL;
        struct stat before, after;
        size_t n = 0, m = 0;

        ck_assert_int_eq(sshkeys_ensure(&o, made, &n), 0);
        ck_assert_int_eq(sshkeys_format_console(made, n, true, true, &want), 0);
        stat_file("/etc/ssh", &before);

        ck_assert_int_eq(sshkeys_load(&o, now, &m), 0);
        ck_assert_uint_eq(m, 3);
        for (size_t i = 0; i < m; i++)
                ck_assert_int_eq(now[i].action, SSH_KEY_KEPT);
        ck_assert_int_eq(sshkeys_format_console(now, m, true, true, &got), 0);
        ck_assert_str_eq(got, want);
        ssh_key_results_done(now, m);
        stat_file("/etc/ssh", &after);
        ck_assert_int_eq(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
        ck_assert_int_eq(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);

        /* The ECDSA .pub names the Ed25519 key; the RSA key is gone. */
        pub = fakeroot_read(root, "/etc/ssh/ssh_host_ed25519_key.pub");
        fakeroot_write(root, "/etc/ssh/ssh_host_ecdsa_key.pub", pub);
        ck_assert_int_eq(unlink(full("/etc/ssh/ssh_host_rsa_key")), 0);
        ck_assert_int_eq(sshkeys_load(&o, now, &m), 1);
        ck_assert_int_eq(now[1].action, SSH_KEY_KEPT);
        ck_assert_str_eq(now[1].fingerprint, made[1].fingerprint);
        ck_assert_str_eq(now[1].public_key, made[1].public_key);
        ck_assert_int_eq(now[2].action, SSH_KEY_FAILED);
        ck_assert_int_eq(now[2].error, -ENOENT);
        ck_assert_ptr_null(now[2].fingerprint);
        pub_after = fakeroot_read(root, "/etc/ssh/ssh_host_ecdsa_key.pub");
        ck_assert_str_eq(pub_after, pub);
        ck_assert(!fakeroot_exists(root, "/etc/ssh/ssh_host_rsa_key"));
        ssh_key_results_done(now, m);
        ssh_key_results_done(made, n);
}
END_TEST

/* Keys left in the tree as an image builder leaves them: sshkeys_ensure()
 * writes no record. */
static void bake_keys(void) {
        SshKeysOptions o = options(two_types, 2);
        SshKeyResult r[2];
        size_t n;

        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
        ssh_key_results_done(r, n);
}

static InstanceState load_state(void) {
        InstanceState s;
        char path[4096];

        snprintf(path, sizeof path, "%s%s", root, INSTANCE_STATE_FILE);
        ck_assert_int_eq(instance_state_load(path, &s), 0);
        return s;
}

/* One run of sshkeys_ensure_instance(), as seedbed-agent runs it, and
 * what it must leave: each key's action and reason, the keys on disk (the
 * ones there before when kept or adopted, others when made), and the
 * record, which keeps why a key is this machine's while it is kept. */
typedef struct UnknownStep {
        const char *machine_id; /* written first; NULL: as it is */
        UnknownKeysPolicy policy;
        SshKeyAction action;
        const char *reason; /* in the results (but for a kept key's) and the record */
} UnknownStep;

static void unknown_step(const UnknownStep *step) {
        SshKeysOptions o = options(two_types, 2);
        bool same = step->action == SSH_KEY_KEPT || step->action == SSH_KEY_ADOPTED;
        char *before[2] = { private_fingerprint(two_types[0]), private_fingerprint(two_types[1]) };
        SshKeyResult r[2];
        InstanceState s;
        size_t n;

        if (step->machine_id)
                fakeroot_write(root, "/etc/machine-id", step->machine_id);
        o.unknown = step->policy;
        ck_assert_int_eq(sshkeys_ensure_instance(&o, r, &n, NULL), 0);
        ck_assert_uint_eq(n, 2);
        check_consistent(two_types, 2, true);
        s = load_state();
        ck_assert_uint_eq(s.n_keys, 2);
        for (size_t i = 0; i < n; i++) {
                char *fp = private_fingerprint(r[i].type);

                ck_assert_int_eq(r[i].action, step->action);
                ck_assert_str_eq(r[i].fingerprint, fp);
                ck_assert_str_eq(s.keys[i].fingerprint, fp);
                ck_assert(streq_ptr(fp, before[i]) == same);
                /* A kept key's result has nothing to explain. */
                if (step->action == SSH_KEY_KEPT || !step->reason)
                        ck_assert_ptr_null(r[i].reason);
                else
                        ck_assert_str_eq(r[i].reason, step->reason);
                if (step->reason)
                        ck_assert_str_eq(s.keys[i].reason, step->reason);
                else
                        ck_assert_ptr_null(s.keys[i].reason);
                if (step->action == SSH_KEY_ADOPTED) {
                        /* Not ours: nothing known of how it was made. */
                        ck_assert_ptr_null(s.keys[i].created);
                        ck_assert_int_eq(s.keys[i].crng_ready, -1);
                } else if (!same) {
                        ck_assert_ptr_nonnull(s.keys[i].created);
                        ck_assert_int_eq(s.keys[i].crng_ready, 1);
                }
                free(fp);
                free(before[i]);
        }
        instance_state_done(&s);
        ssh_key_results_done(r, n);
}

/* Keys no record vouches for, from the tree an image builder or a
 * running server leaves to the runs that follow. */
START_TEST(test_unknown_keys) {
        static const struct {
                const char *machine_id; /* the tree's; NULL: none */
                bool baked;             /* host keys left in the tree */
                const char *record;     /* in place of the instance record; NULL: none */
                unsigned n_steps;
                UnknownStep steps[3];
        } table[] = {
                /* An image's first boot: the builder's keys are replaced,
                 * and the record says why, also once they are kept: at the
                 * next run, and once the ID is committed (a record vouches
                 * now, whatever the policy). */
#define FIRST_BOOT_STEPS                                                                           \
        {                                                                                          \
                { NULL, UNKNOWN_KEYS_FIRST_BOOT, SSH_KEY_REPLACED, SSHKEYS_REASON_FIRST_BOOT },    \
                { NULL, UNKNOWN_KEYS_FIRST_BOOT, SSH_KEY_KEPT, SSHKEYS_REASON_FIRST_BOOT },        \
                { MID_A "\n", UNKNOWN_KEYS_ALWAYS, SSH_KEY_KEPT, SSHKEYS_REASON_FIRST_BOOT },      \
        }
                { NULL, true, NULL, 3, FIRST_BOOT_STEPS },
                { "", true, NULL, 3, FIRST_BOOT_STEPS },
                { "\n", true, NULL, 3, FIRST_BOOT_STEPS },
                { "uninitialized\n", true, NULL, 3, FIRST_BOOT_STEPS },
#undef FIRST_BOOT_STEPS
                /* seedbed newly installed on a machine that has booted
                 * before: its keys are its identity, adopted, recorded as
                 * such; a new instance after that replaces them as any. */
                { MID_A "\n", true, NULL, 3, {
                        { NULL, UNKNOWN_KEYS_FIRST_BOOT, SSH_KEY_ADOPTED, SSHKEYS_REASON_ADOPTED },
                        { NULL, UNKNOWN_KEYS_FIRST_BOOT, SSH_KEY_KEPT, SSHKEYS_REASON_ADOPTED },
                        { MID_B "\n", UNKNOWN_KEYS_FIRST_BOOT, SSH_KEY_REPLACED, SSHKEYS_REASON_NEW_INSTANCE },
                } },
                /* The policy turns either way. */
                { "uninitialized\n", true, NULL, 1, {
                        { NULL, UNKNOWN_KEYS_NEVER, SSH_KEY_ADOPTED, SSHKEYS_REASON_ADOPTED_NEVER },
                } },
                { MID_A "\n", true, NULL, 1, {
                        { NULL, UNKNOWN_KEYS_ALWAYS, SSH_KEY_REPLACED, SSHKEYS_REASON_UNKNOWN_ALWAYS },
                } },
                /* No key there: made, with nothing to explain. */
                { NULL, false, NULL, 1, {
                        { NULL, UNKNOWN_KEYS_FIRST_BOOT, SSH_KEY_CREATED, NULL },
                } },
                /* A record that is not ours vouches for nothing, as none. */
                { MID_A "\n", true, "{\"version\": 7}", 1, {
                        { NULL, UNKNOWN_KEYS_FIRST_BOOT, SSH_KEY_ADOPTED, SSHKEYS_REASON_ADOPTED },
                } },
                { "", true, "not json", 1, {
                        { NULL, UNKNOWN_KEYS_FIRST_BOOT, SSH_KEY_REPLACED, SSHKEYS_REASON_FIRST_BOOT },
                } },
                /* Made with a record at a known ID, the file emptied again
                 * (an image made from this machine, say): the record still
                 * vouches, nothing known both times differs: unchanged. */
                { MID_A "\n", false, NULL, 2, {
                        { NULL, UNKNOWN_KEYS_FIRST_BOOT, SSH_KEY_CREATED, NULL },
                        { "", UNKNOWN_KEYS_ALWAYS, SSH_KEY_KEPT, NULL },
                } },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                fakeroot_free(root);
                root = fakeroot_new();
                if (table[i].machine_id)
                        fakeroot_write(root, "/etc/machine-id", table[i].machine_id);
                if (table[i].baked)
                        bake_keys();
                if (table[i].record)
                        fakeroot_write(root, INSTANCE_STATE_FILE, table[i].record);
                for (size_t j = 0; j < table[i].n_steps; j++)
                        unknown_step(&table[i].steps[j]);
        }
}
END_TEST

/* Adopted with a .pub to repair: the .pub is rewritten, the record still
 * says why the key is this machine's. */
START_TEST(test_unknown_adopted_repaired) {
        SshKeysOptions o = options(two_types, 2);
        SshKeyResult r[2];
        char *baked;
        size_t n;

        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        bake_keys();
        baked = private_fingerprint(HOST_KEY_ECDSA);
        ck_assert_int_eq(unlink(full("/etc/ssh/ssh_host_ecdsa_key.pub")), 0);
        ck_assert_int_eq(sshkeys_ensure_instance(&o, r, &n, NULL), 0);
        ck_assert_int_eq(r[0].action, SSH_KEY_ADOPTED);
        ck_assert_int_eq(r[1].action, SSH_KEY_REPAIRED);
        ck_assert_str_eq(r[1].reason, SSHKEYS_REASON_ADOPTED);
        ck_assert_str_eq(r[1].fingerprint, baked);
        check_consistent(two_types, 2, true);
        ssh_key_results_done(r, n);
        free(baked);
}
END_TEST

/* The image's first boot: the keys the builder left, and no record. */
static void first_boot_tree(char *ret_baked[static 2]) {
        fakeroot_write(root, "/etc/machine-id", "uninitialized\n");
        bake_keys();
        for (size_t i = 0; i < 2; i++)
                ret_baked[i] = private_fingerprint(two_types[i]);
}

/* The keys on disk are the image's still. */
static void check_baked(char *const baked[static 2]) {
        for (size_t i = 0; i < 2; i++) {
                char *fp = private_fingerprint(two_types[i]);

                ck_assert_str_eq(fp, baked[i]);
                free(fp);
        }
}

/* The record says a replacement is under way, why, and lists n keys. */
static InstanceState check_pending(const char *reason, size_t n) {
        InstanceState s = load_state();

        ck_assert_str_eq(s.pending, INSTANCE_PENDING_REPLACE_UNKNOWN);
        ck_assert_str_eq(s.pending_reason, reason);
        ck_assert_uint_eq(s.n_keys, n);
        return s;
}

/* After a replacement of the image's keys: none of them left, each key
 * made for this instance with the reason, none adopted, and a complete
 * record of them. */
static void check_replaced(char *const baked[static 2], const char *reason) {
        InstanceState s = load_state();

        check_consistent(two_types, 2, true);
        ck_assert_ptr_null(s.pending);
        ck_assert_ptr_null(s.pending_reason);
        ck_assert_uint_eq(s.n_keys, 2);
        for (size_t i = 0; i < 2; i++) {
                char *fp = private_fingerprint(two_types[i]);

                ck_assert_str_ne(fp, baked[i]);
                ck_assert_str_eq(s.keys[i].fingerprint, fp);
                ck_assert_str_eq(s.keys[i].reason, reason);
                ck_assert_ptr_nonnull(s.keys[i].created);
                ck_assert_int_eq(s.keys[i].crng_ready, 1);
                free(fp);
        }
        instance_state_done(&s);
}

/* The image's first boot, one key failing to be written: the decision is
 * recorded before any key is touched, and after the run with the keys it
 * made.  The machine-id is committed after that boot, so nothing says
 * first boot any more: the next run finishes the replacement all the
 * same, keeping the key already made (clients may have seen it), adopting
 * none of the image's. */
START_TEST(test_unknown_pending_fault) {
        for (size_t failing = 0; failing < 2; failing++) {
                SshKeysOptions o = options(two_types, 2);
                Fault f = { .step = ATOMIC_WRITE, .suffix = failing == 0 ? "_ed25519_key" : "_ecdsa_key",
                            .crash_at = -1 };
                size_t other = 1 - failing, n;
                char *baked[2], *made, *fp;
                SshKeyResult r[2];
                InstanceState s;

                fakeroot_free(root);
                root = fakeroot_new();
                o.root = root;
                first_boot_tree(baked);

                atomic_set_fault_hook(fault_hook, &f);
                ck_assert_int_eq(sshkeys_ensure_instance(&o, r, &n, NULL), 1);
                atomic_set_fault_hook(NULL, NULL);
                ck_assert(f.hit);
                ck_assert_int_eq(r[failing].action, SSH_KEY_FAILED);
                ck_assert_int_eq(r[other].action, SSH_KEY_REPLACED);
                made = strdup(r[other].fingerprint);
                ssh_key_results_done(r, n);
                fp = private_fingerprint(two_types[failing]);
                ck_assert_str_eq(fp, baked[failing]);
                free(fp);

                s = check_pending(SSHKEYS_REASON_FIRST_BOOT, 1);
                ck_assert_str_eq(s.keys[0].fingerprint, made);
                ck_assert_str_eq(s.keys[0].reason, SSHKEYS_REASON_FIRST_BOOT);
                instance_state_done(&s);

                /* systemd-machine-id-commit.service ran after the unit. */
                fakeroot_write(root, "/etc/machine-id", MID_A "\n");
                ck_assert_int_eq(sshkeys_ensure_instance(&o, r, &n, NULL), 0);
                ck_assert_int_eq(r[other].action, SSH_KEY_KEPT);
                ck_assert_str_eq(r[other].fingerprint, made);
                ck_assert_int_eq(r[failing].action, SSH_KEY_REPLACED);
                ck_assert_str_eq(r[failing].reason, SSHKEYS_REASON_FIRST_BOOT);
                ssh_key_results_done(r, n);
                check_replaced(baked, SSHKEYS_REASON_FIRST_BOOT);

                /* Complete: kept from now on. */
                ck_assert_int_eq(sshkeys_ensure_instance(&o, r, &n, NULL), 0);
                results_check_ok(r, n, SSH_KEY_KEPT);
                ssh_key_results_done(r, n);
                check_replaced(baked, SSHKEYS_REASON_FIRST_BOOT);
                free(made);
                free(baked[0]);
                free(baked[1]);
        }
}
END_TEST

/* A crash (a power cut) at every step of that first run in turn: no key
 * is touched before the decision is on disk, and once it is, the run
 * after the commit replaces every key of the image's. */
START_TEST(test_unknown_pending_crash) {
        unsigned recorded = 0;

        for (int at = 0;; at++) {
                SshKeysOptions o = options(two_types, 2);
                SshKeyResult r[2];
                char *baked[2];
                size_t n;

                fakeroot_free(root);
                root = fakeroot_new();
                o.root = root;
                first_boot_tree(baked);
                if (!run_crashing(&o, true, at)) {
                        free(baked[0]);
                        free(baked[1]);
                        break; /* every step passed without a crash */
                }

                if (!fakeroot_exists(root, INSTANCE_STATE_FILE))
                        /* Nothing recorded: nothing touched. */
                        check_baked(baked);
                else {
                        recorded++;
                        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
                        ck_assert_int_eq(sshkeys_ensure_instance(&o, r, &n, NULL), 0);
                        for (size_t i = 0; i < n; i++)
                                ck_assert_int_ne(r[i].action, SSH_KEY_ADOPTED);
                        ssh_key_results_done(r, n);
                        check_replaced(baked, SSHKEYS_REASON_FIRST_BOOT);
                }
                free(baked[0]);
                free(baked[1]);
        }
        /* The crashes after the record are most of them. */
        ck_assert_uint_gt(recorded, 10);
}
END_TEST

/* The gate failed at the image's first boot: no key is made, but the
 * decision is recorded, and the run after the commit replaces them. */
START_TEST(test_unknown_gate_failed) {
        SshKeysOptions o = options(two_types, 2);
        SshKeyResult r[2];
        char *baked[2];
        InstanceState s;
        size_t n;

        first_boot_tree(baked);
        ck_assert_int_eq(sshkeys_record_decision(&o), 1);
        check_baked(baked);
        s = check_pending(SSHKEYS_REASON_FIRST_BOOT, 0);
        instance_state_done(&s);
        /* Failing again: recorded already. */
        ck_assert_int_eq(sshkeys_record_decision(&o), 0);

        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        ck_assert_int_eq(sshkeys_ensure_instance(&o, r, &n, NULL), 0);
        for (size_t i = 0; i < n; i++) {
                ck_assert_int_eq(r[i].action, SSH_KEY_REPLACED);
                ck_assert_str_eq(r[i].reason, SSHKEYS_REASON_FIRST_BOOT);
        }
        ssh_key_results_done(r, n);
        check_replaced(baked, SSHKEYS_REASON_FIRST_BOOT);
        free(baked[0]);
        free(baked[1]);

        /* On a server that has booted before nothing is to be replaced,
         * and nothing is recorded; with always, it is. */
        fakeroot_free(root);
        root = fakeroot_new();
        o = options(two_types, 2);
        fakeroot_write(root, "/etc/machine-id", MID_A "\n");
        bake_keys();
        ck_assert_int_eq(sshkeys_record_decision(&o), 0);
        ck_assert(!fakeroot_exists(root, INSTANCE_STATE_FILE));
        o.unknown = UNKNOWN_KEYS_NEVER;
        ck_assert_int_eq(sshkeys_record_decision(&o), 0);
        ck_assert(!fakeroot_exists(root, INSTANCE_STATE_FILE));
        o.unknown = UNKNOWN_KEYS_ALWAYS;
        ck_assert_int_eq(sshkeys_record_decision(&o), 1);
        s = check_pending(SSHKEYS_REASON_UNKNOWN_ALWAYS, 0);
        instance_state_done(&s);
}
END_TEST

/* What a pending record's keys do not keep: another instance, all keys
 * asked for, or a key another tool put there since. */
START_TEST(test_unknown_pending_not_kept) {
        static const struct {
                const char *machine_id; /* after the first run */
                bool regenerate, swap;
                const char *reason;
        } table[] = {
                { MID_B "\n", false, false, SSHKEYS_REASON_NEW_INSTANCE },
                { MID_A "\n", true, false, SSHKEYS_REASON_ASKED },
                { MID_A "\n", false, true, SSHKEYS_REASON_UNKNOWN_ALWAYS },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                SshKeysOptions o = options(two_types, 2);
                Fault f = { .step = ATOMIC_WRITE, .suffix = "_ecdsa_key", .crash_at = -1 };
                char *baked[2], *made;
                SshKeyResult r[2];
                size_t n;

                fakeroot_free(root);
                root = fakeroot_new();
                o.root = root;
                fakeroot_write(root, "/etc/machine-id", MID_A "\n");
                bake_keys();
                for (size_t j = 0; j < 2; j++)
                        baked[j] = private_fingerprint(two_types[j]);
                /* Replaced at a first boot (always: the machine-id is
                 * known, so the record holds it), ECDSA failing. */
                o.unknown = UNKNOWN_KEYS_ALWAYS;
                atomic_set_fault_hook(fault_hook, &f);
                ck_assert_int_eq(sshkeys_ensure_instance(&o, r, &n, NULL), 1);
                atomic_set_fault_hook(NULL, NULL);
                made = strdup(r[0].fingerprint);
                ssh_key_results_done(r, n);

                fakeroot_write(root, "/etc/machine-id", table[i].machine_id);
                if (table[i].swap) {
                        /* Another tool's Ed25519 key, .pub and all. */
                        o.replace = true;
                        o.types = ed25519_only;
                        o.n_types = 1;
                        ck_assert_int_eq(sshkeys_ensure(&o, r, &n), 0);
                        ssh_key_results_done(r, n);
                        o = options(two_types, 2);
                }
                o.replace = table[i].regenerate;
                ck_assert_int_eq(sshkeys_ensure_instance(&o, r, &n, NULL), 0);
                ck_assert_int_eq(r[0].action, SSH_KEY_REPLACED);
                ck_assert_str_ne(r[0].fingerprint, made);
                ck_assert_int_eq(r[1].action, SSH_KEY_REPLACED);
                ck_assert_str_eq(r[0].reason, table[i].reason);
                ck_assert_str_eq(r[1].reason, table[i].reason);
                ssh_key_results_done(r, n);
                check_replaced(baked, table[i].reason);
                free(made);
                free(baked[0]);
                free(baked[1]);
        }
}
END_TEST

static void check_disk(const char *path, const char *fingerprint, SshKeyOnDisk want, const char *want_fp) {
        SshKeyDiskCheck c;

        ck_assert_int_eq(sshkeys_check_on_disk(root, path, fingerprint, &c), 0);
        ck_assert_msg(c.state == want, "'%s': %s", path, ssh_key_on_disk_to_string(c.state));
        if (want_fp)
                ck_assert_str_eq(c.fingerprint, want_fp);
        else
                ck_assert_ptr_null(c.fingerprint);
        ck_assert(!c.public_only || geteuid() != 0);
        ssh_key_disk_check_done(&c);
}

/* What status says of a recorded key: the private key is compared, so a
 * tool that replaced only it (leaving our .pub) is caught. */
START_TEST(test_check_on_disk) {
        SshKeysOptions o = options(two_types, 2);
        SshKeyResult a[2], b[2];
        char *pub;
        size_t n;

        ck_assert_int_eq(sshkeys_ensure(&o, a, &n), 0);
        check_disk(a[0].path, a[0].fingerprint, SSH_KEY_ON_DISK_SAME, a[0].fingerprint);
        check_disk(a[1].path, a[1].fingerprint, SSH_KEY_ON_DISK_SAME, a[1].fingerprint);

        /* Another key in place of the ECDSA one, .pub and all. */
        o.types = &two_types[1];
        o.n_types = 1;
        o.replace = true;
        ck_assert_int_eq(sshkeys_ensure(&o, b, &n), 0);
        check_disk(a[0].path, a[0].fingerprint, SSH_KEY_ON_DISK_SAME, a[0].fingerprint);
        check_disk(a[1].path, a[1].fingerprint, SSH_KEY_ON_DISK_REPLACED, b[0].fingerprint);

        /* Only the private key replaced: still not ours. */
        pub = fakeroot_read(root, "/etc/ssh/ssh_host_ecdsa_key.pub");
        fakeroot_write(root, "/etc/ssh/ssh_host_ecdsa_key.pub", a[1].public_key);
        check_disk(a[1].path, a[1].fingerprint, SSH_KEY_ON_DISK_REPLACED, b[0].fingerprint);
        fakeroot_write(root, "/etc/ssh/ssh_host_ecdsa_key.pub", pub);
        free(pub);

        /* Not a key at all, or gone. */
        fakeroot_write(root, "/etc/ssh/ssh_host_ecdsa_key", "garbage\n");
        check_disk(a[1].path, a[1].fingerprint, SSH_KEY_ON_DISK_REPLACED, NULL);
        ck_assert_int_eq(unlink(full("/etc/ssh/ssh_host_ecdsa_key")), 0);
        check_disk(a[1].path, a[1].fingerprint, SSH_KEY_ON_DISK_MISSING, NULL);
        fakeroot_symlink(root, "/etc/ssh/ssh_host_ecdsa_key", "/nowhere");
        check_disk(a[1].path, a[1].fingerprint, SSH_KEY_ON_DISK_MISSING, NULL);

        ssh_key_results_done(a, 2);
        ssh_key_results_done(b, 1);
}
END_TEST

/* Runs check(key) in a child process as nobody; ck_assert cannot report
 * from there, so check returns 0 or the number of what failed. */
static void as_nobody(int (*check)(const SshKeyResult *), const SshKeyResult *key) {
        int status;
        pid_t pid;

        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
                        _exit(100);
                _exit(check(key));
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: %d", status);
}

static int check_public_only(const SshKeyResult *key) {
        SshKeyDiskCheck c;
        int r = 0;

        if (sshkeys_check_on_disk(root, key->path, key->fingerprint, &c) < 0)
                return 1;
        if (c.state != SSH_KEY_ON_DISK_SAME || !c.public_only || !streq_ptr(c.fingerprint, key->fingerprint))
                r = 2;
        ssh_key_disk_check_done(&c);
        if (r == 0 && sshkeys_check_on_disk(root, key->path, "SHA256:other", &c) < 0)
                return 3;
        if (r == 0 && (c.state != SSH_KEY_ON_DISK_REPLACED || !c.public_only))
                r = 4;
        ssh_key_disk_check_done(&c);
        return r;
}

static int check_cannot_tell(const SshKeyResult *key) {
        SshKeyDiskCheck c;
        int r;

        if (sshkeys_check_on_disk(root, key->path, key->fingerprint, &c) < 0)
                return 1;
        r = c.state == SSH_KEY_ON_DISK_UNKNOWN && c.error == -EACCES && !c.fingerprint ? 0 : 2;
        ssh_key_disk_check_done(&c);
        return r;
}

/* As a user who cannot read the private key: its .pub stands in, and the
 * check says so; with no .pub, it cannot be told. */
START_TEST(test_check_on_disk_unprivileged) {
        SshKeysOptions o = options(ed25519_only, 1);
        SshKeyResult a[1];
        size_t n;

        if (geteuid() != 0)
                return; /* a user already: the keys are its own, readable */
        /* nobody must reach the tree, and TMPDIR may lie under a directory
         * only root enters (a checkout in /root): this one tree lives in
         * /tmp, which everyone may traverse; teardown removes it. */
        fakeroot_free(root);
        root = strdup("/tmp/seedbed-test.XXXXXX");
        ck_assert_ptr_nonnull(root);
        ck_assert_ptr_nonnull(mkdtemp(root));
        o = options(ed25519_only, 1);
        ck_assert_int_eq(sshkeys_ensure(&o, a, &n), 0);
        ck_assert_int_eq(chmod(root, 0755), 0);
        as_nobody(check_public_only, &a[0]);
        ck_assert_int_eq(unlink(full("/etc/ssh/ssh_host_ed25519_key.pub")), 0);
        as_nobody(check_cannot_tell, &a[0]);
        ssh_key_results_done(a, n);
}
END_TEST

static Suite *sshkeys_suite(void) {
        Suite *s = suite_create("sshkeys");
        TCase *tc;

        tc = tcase_create("files");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_create_files);
        tcase_add_test(tc, test_umask_ignored);
        tcase_add_test(tc, test_group_ssh_keys);
        tcase_add_test(tc, test_key_dir_comment_bits);
        tcase_add_test(tc, test_options_invalid);
        suite_add_tcase(s, tc);

        tc = tcase_create("atomic");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_fail_each_step);
        tcase_add_test(tc, test_fail_during_replace);
        tcase_add_test(tc, test_crash_each_step);
        tcase_add_test(tc, test_crash_each_step_replace);
        tcase_add_test(tc, test_stale_temp_files);
        suite_add_tcase(s, tc);

        tc = tcase_create("idempotence");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_second_run_keeps);
        tcase_add_test(tc, test_replace_changes_all);
        tcase_add_test(tc, test_invalid_replaced);
        tcase_add_test(tc, test_pub_repaired);
        tcase_add_test(tc, test_mode_tightened);
        tcase_add_test(tc, test_symlink_left_alone);
        suite_add_tcase(s, tc);

        tc = tcase_create("instance");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_instance_read);
        tcase_add_test(tc, test_instance_compare);
        tcase_add_test(tc, test_state_roundtrip);
        tcase_add_test(tc, test_state_pending);
        tcase_add_test(tc, test_state_killed_writer_cleaned);
        tcase_add_test(tc, test_state_build);
        tcase_add_test(tc, test_state_uuid_hashed);
        tcase_add_test(tc, test_state_old_record);
        tcase_add_test(tc, test_state_key_missing);
        tcase_add_test(tc, test_state_heal);
        tcase_add_test(tc, test_instance_key_lost_keeps_keys);
        tcase_add_test(tc, test_key_renew);
        suite_add_tcase(s, tc);

        tc = tcase_create("unknown");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_first_boot_decide);
        tcase_add_test(tc, test_first_boot_facts);
        tcase_add_test(tc, test_mountinfo_fstype);
        tcase_add_test(tc, test_first_boot_transient_mount);
        tcase_add_test(tc, test_first_boot_written_this_boot);
        tcase_add_test(tc, test_first_boot_facts_system);
        tcase_add_test(tc, test_decide);
        tcase_add_test(tc, test_unknown_keys);
        tcase_add_test(tc, test_unknown_adopted_repaired);
        tcase_add_test(tc, test_unknown_pending_fault);
        tcase_add_test(tc, test_unknown_pending_crash);
        tcase_add_test(tc, test_unknown_gate_failed);
        tcase_add_test(tc, test_unknown_pending_not_kept);
        suite_add_tcase(s, tc);

        tc = tcase_create("on-disk");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_check_on_disk);
        tcase_add_test(tc, test_check_on_disk_unprivileged);
        suite_add_tcase(s, tc);

        tc = tcase_create("console");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_console_format);
        tcase_add_test(tc, test_console_decide);
        tcase_add_test(tc, test_load);
        suite_add_tcase(s, tc);

        return s;
}

TEST_MAIN(sshkeys_suite)
