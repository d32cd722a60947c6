/* SPDX-License-Identifier: MIT */
/* The agent's configuration: defaults, /etc/seedbed with drop-ins,
 * --config, and the kernel command line, each bad input named by place. */
#include "agent-config.h"
#include "fakeroot.h"
#include "testmain.h"

static char *root;
static AgentConfig c;
static char error[1024];

static void setup(void) {
        root = fakeroot_new();
        agent_config_init(&c);
}

static void teardown(void) {
        agent_config_done(&c);
        fakeroot_free(root);
        root = NULL;
}

static int load(const char *config_file, bool cmdline, bool initrd) {
        AgentConfigLoad how = { .root = root, .config_file = config_file, .use_cmdline = cmdline, .in_initrd = initrd };
        agent_config_done(&c);
        agent_config_init(&c);
        return agent_config_load(&c, &how, NULL, error, sizeof error);
}

static char *rooted(const char *path) {
        char *p;
        ck_assert_int_ge(asprintf(&p, "%s%s", root, path), 0);
        return p;
}

START_TEST(test_ssh_and_luks) {
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml",
                       "ssh:\n  key-types: [ed25519]\n  console: []\n  regenerate: true\n  ecdsa-bits: 384\n"
                       "luks:\n  volumes:\n"
                       "    - device: PARTLABEL=data\n      name: data\n"
                       "    - device: /dev/vdc\n      name: scratch\n      key-file: /root/scratch.key\n"
                       "      open: false\n      crypttab: false\n      label: scratch\n");
        ck_assert_int_eq(load(NULL, true, false), 0);
        ck_assert_uint_eq(c.ssh_key_types.n, 1);
        ck_assert_int_eq(c.ssh_key_types.items[0], HOST_KEY_ED25519);
        ck_assert_uint_eq(c.ssh_console.n, 0);
        ck_assert(c.ssh_regenerate);
        ck_assert_uint_eq(agent_config_ecdsa_bits(&c), 384);
        ck_assert_uint_eq(c.n_volumes, 2);
        ck_assert_str_eq(c.volumes[0].device, "PARTLABEL=data");
        ck_assert_ptr_null(c.volumes[0].key_file);
        ck_assert(c.volumes[0].open && c.volumes[0].crypttab && !c.volumes[0].wipe);
        ck_assert_str_eq(c.volumes[1].key_file, "/root/scratch.key");
        ck_assert(!c.volumes[1].open && !c.volumes[1].crypttab);
        ck_assert_str_eq(c.volumes[1].label, "scratch");
}
END_TEST

/* ssh.key-types holds HostKeyType values, in the order given, which
 * sshkeys takes as they are. */
START_TEST(test_key_types) {
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml", "ssh:\n  key-types: [rsa, ed25519]\n");
        ck_assert_int_eq(load(NULL, true, false), 0);
        ck_assert_uint_eq(c.ssh_key_types.n, 2);
        ck_assert_int_eq(c.ssh_key_types.items[0], HOST_KEY_RSA);
        ck_assert_int_eq(c.ssh_key_types.items[1], HOST_KEY_ED25519);
        for (HostKeyType t = 0; t < _HOST_KEY_TYPE_MAX; t++)
                ck_assert_int_eq(host_key_type_from_string(host_key_type_names[t]), t);
        ck_assert_ptr_null(host_key_type_names[_HOST_KEY_TYPE_MAX]);
}
END_TEST

START_TEST(test_defaults) {
        ck_assert_int_eq(load(NULL, true, false), 0);
        ck_assert_uint_eq(c.ssh_key_types.n, 3);
        ck_assert_int_eq(c.ssh_key_types.items[0], HOST_KEY_ED25519);
        ck_assert_int_eq(c.ssh_key_types.items[1], HOST_KEY_ECDSA);
        ck_assert_int_eq(c.ssh_key_types.items[2], HOST_KEY_RSA);
        ck_assert_uint_eq(c.ssh_rsa_bits, 3072);
        ck_assert_uint_eq(agent_config_ecdsa_bits(&c), 256);
        ck_assert_uint_eq(c.ssh_console.n, 2);
        ck_assert_uint_eq(c.n_volumes, 0);
        ck_assert_uint_eq(c.sources.n, 2);
        ck_assert_int_eq(c.sources.items[0], SOURCE_VIRTIO);
        ck_assert_int_eq(c.sources.items[1], SOURCE_KERNEL);
        ck_assert_uint_eq(c.timeout, 30 * USEC_PER_SEC);
        ck_assert_int_eq(c.on_timeout, ON_TIMEOUT_FAIL);
        ck_assert_uint_eq(c.src[SOURCE_VIRTIO].quality, 1024);
        ck_assert_uint_eq(c.src[SOURCE_HWRNG].quality, 0);
        ck_assert(c.virtio_select);
        ck_assert_int_eq(c.ssh_replace_unknown, UNKNOWN_KEYS_FIRST_BOOT);
}
END_TEST

/* ssh.replace-unknown: each value from a file, the kernel command line
 * over it, a wrong one named by place, and the dump. */
START_TEST(test_replace_unknown) {
        AgentConfigLoad how = { .root = root, .use_cmdline = true };
        char *expect, *out = NULL;
        size_t size = 0;
        FILE *f;

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml", "ssh:\n  replace-unknown: never\n");
        ck_assert_int_eq(load(NULL, true, false), 0);
        ck_assert_int_eq(c.ssh_replace_unknown, UNKNOWN_KEYS_NEVER);
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml", "ssh:\n  replace-unknown: first-boot\n");
        ck_assert_int_eq(load(NULL, true, false), 0);
        ck_assert_int_eq(c.ssh_replace_unknown, UNKNOWN_KEYS_FIRST_BOOT);

        fakeroot_write(root, "/proc/cmdline", "ro seedbed.ssh.replace-unknown=always\n");
        ck_assert_int_eq(load(NULL, true, false), 0);
        ck_assert_int_eq(c.ssh_replace_unknown, UNKNOWN_KEYS_ALWAYS);
        ck_assert_int_eq(load(NULL, false, false), 0);
        ck_assert_int_eq(c.ssh_replace_unknown, UNKNOWN_KEYS_FIRST_BOOT);

        f = open_memstream(&out, &size);
        agent_config_done(&c);
        agent_config_init(&c);
        ck_assert_int_eq(agent_config_load(&c, &how, f, error, sizeof error), 0);
        fclose(f);
        ck_assert_int_ge(asprintf(&expect, "\n  regenerate: false\n  replace-unknown: always  # %s/proc/cmdline:1:4\n",
                                  root), 0);
        ck_assert_ptr_nonnull(strstr(out, expect));
        free(expect);
        free(out);

        fakeroot_write(root, "/proc/cmdline", "seedbed.ssh.replace-unknown=sometimes\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_int_ge(asprintf(&expect, "%s/proc/cmdline:1:1: 'ssh.replace-unknown' must be one of first-boot, "
                                           "always, never, not 'sometimes'", root), 0);
        ck_assert_str_eq(error, expect);
        free(expect);

        fakeroot_write(root, "/proc/cmdline", "");
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/50-bad.yaml", "ssh:\n  replace-unknown: [always]\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "50-bad.yaml:2:20: "));
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/50-bad.yaml", "ssh:\n  replace-unknown: yes\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "50-bad.yaml:2:20: 'ssh.replace-unknown' must be one of first-boot, "
                                            "always, never, not 'yes'"));
}
END_TEST

START_TEST(test_main_and_dropins) {
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml",
                       "entropy:\n  timeout: 10s\n  sources: [virtio, cpu, kernel]\n  on-timeout: continue\n");
        /* Drop-ins apply in name order, after the main file. */
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/20-late.yaml", "entropy:\n  timeout: 20s\n");
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/10-early.yaml", "entropy:\n  timeout: 15s\n  chunk: 128\n");
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/30-ignored.conf", "this is not yaml: [\n");
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/.hidden.yaml", "nonsense: 1\n");

        ck_assert_int_eq(load(NULL, true, false), 0);
        ck_assert_uint_eq(c.timeout, 20 * USEC_PER_SEC);
        ck_assert_uint_eq(c.chunk, 128);
        ck_assert_uint_eq(c.sources.n, 3);
        ck_assert_int_eq(c.sources.items[1], SOURCE_CPU);
        ck_assert_int_eq(c.on_timeout, ON_TIMEOUT_CONTINUE);
}
END_TEST

START_TEST(test_config_file_replaces_etc) {
        char *other = rooted("/other.yaml");

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml", "entropy:\n  timeout: 10s\n");
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/x.yaml", "entropy:\n  chunk: 32\n");
        fakeroot_write(root, "/other.yaml", "entropy:\n  on-timeout: continue\n");
        ck_assert_int_eq(load(other, false, false), 0);
        ck_assert_uint_eq(c.timeout, 30 * USEC_PER_SEC);
        ck_assert_uint_eq(c.chunk, 64);
        ck_assert_int_eq(c.on_timeout, ON_TIMEOUT_CONTINUE);

        /* A --config file that does not exist is an error, not defaults. */
        free(other);
        other = rooted("/missing.yaml");
        ck_assert_int_eq(load(other, false, false), -ENOENT);
        ck_assert_ptr_nonnull(strstr(error, "missing.yaml: cannot read: No such file or directory"));
        free(other);
}
END_TEST

START_TEST(test_cmdline) {
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml", "entropy:\n  timeout: 10s\n");
        fakeroot_write(root, "/proc/cmdline",
                       "BOOT_IMAGE=/vmlinuz root=/dev/vda1 seedbed.entropy.timeout=3s quiet "
                       "seedbed.entropy.sources=kernel,virtio rd.seedbed.entropy.timeout=1s "
                       "seedbed.entropy.virtio.select=\"false\" -- seedbed.entropy.timeout=99s\n");

        ck_assert_int_eq(load(NULL, true, false), 0);
        /* Words after "--" are init's. */
        ck_assert_uint_eq(c.timeout, 3 * USEC_PER_SEC);
        ck_assert_uint_eq(c.sources.n, 2);
        ck_assert_int_eq(c.sources.items[0], SOURCE_KERNEL);
        ck_assert(!c.virtio_select);

        /* In an initramfs rd.seedbed.* applies too, and wins. */
        ck_assert_int_eq(load(NULL, true, true), 0);
        ck_assert_uint_eq(c.timeout, 1 * USEC_PER_SEC);

        /* --no-cmdline leaves only the files. */
        ck_assert_int_eq(load(NULL, false, false), 0);
        ck_assert_uint_eq(c.timeout, 10 * USEC_PER_SEC);
}
END_TEST

START_TEST(test_cmdline_errors) {
        char *expect;

        fakeroot_write(root, "/proc/cmdline", "quiet seedbed.entropy.timeout=forever\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_int_ge(asprintf(&expect, "%s/proc/cmdline:1:7: 'entropy.timeout' must be a duration such as 30s, 500ms or 2min, not 'forever'", root), 0);
        ck_assert_str_eq(error, expect);
        free(expect);

        fakeroot_write(root, "/proc/cmdline", "seedbed.entropy.colour=red\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "/proc/cmdline:1:1: unknown key 'entropy.colour'"));

        fakeroot_write(root, "/proc/cmdline", "ro seedbed.entropy.timeout\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "/proc/cmdline:1:4: 'seedbed.entropy.timeout' needs a value: seedbed.KEY=VALUE"));

        /* rd.seedbed.* is not even looked at outside an initramfs. */
        fakeroot_write(root, "/proc/cmdline", "rd.seedbed.entropy.timeout=nonsense\n");
        ck_assert_int_eq(load(NULL, true, false), 0);
        ck_assert_int_eq(load(NULL, true, true), -EBADMSG);
}
END_TEST

START_TEST(test_file_errors) {
        char *expect;

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml", "entropy:\n  timeout: 10s\n");
        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/50-bad.yaml", "entropy:\n  virtio:\n    quality: 2048\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_int_ge(asprintf(&expect, "%s/etc/seedbed/seedbed.yaml.d/50-bad.yaml:3:14: 'entropy.virtio.quality' is out of range: 2048 (allowed 0..1024)", root), 0);
        ck_assert_str_eq(error, expect);
        free(expect);

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/50-bad.yaml", "entropy:\n  sources: [virtio, rdrand]\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "50-bad.yaml:2:21: 'entropy.sources' items must be among virtio, hwrng, cpu, kernel, not 'rdrand'"));

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/50-bad.yaml", "entropy:\n  on-timeout: shrug\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "50-bad.yaml:2:15: 'entropy.on-timeout' must be one of fail, continue, not 'shrug'"));

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/50-bad.yaml", "entropy:\n  timeout: 2h\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "50-bad.yaml:2:12: 'entropy.timeout' is out of range: 2h (allowed 0s..1h)"));

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/50-bad.yaml", "network:\n  dhcp: yes\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "50-bad.yaml:1:1: unknown key 'network'"));

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/50-bad.yaml", "ssh:\n  key-types: [rsa, dsa]\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "50-bad.yaml:2:20: 'ssh.key-types' items must be among ed25519, ecdsa, rsa, not 'dsa'"));

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/50-bad.yaml", "ssh:\n  rsa-bits: 1024\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "50-bad.yaml:2:13: 'ssh.rsa-bits' is out of range: 1024 (allowed 2048..16384)"));

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/50-bad.yaml",
                       "luks:\n  volumes:\n    - device: /dev/vdb\n      name: my/data\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "50-bad.yaml:4:13: 'name' is invalid: 'my/data': must be letters, digits"));

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml.d/50-bad.yaml", "luks:\n  volumes:\n    - name: data\n");
        ck_assert_int_eq(load(NULL, true, false), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(error, "50-bad.yaml:3:7: 'luks.volumes' item: 'device' is required"));
}
END_TEST

START_TEST(test_dump) {
        AgentConfigLoad how = { .root = root, .use_cmdline = true };
        char *out = NULL;
        size_t size = 0;
        FILE *f;

        fakeroot_write(root, "/etc/seedbed/seedbed.yaml", "entropy:\n  timeout: 10s\n");
        f = open_memstream(&out, &size);
        ck_assert_int_eq(agent_config_load(&c, &how, f, error, sizeof error), 0);
        fclose(f);
        ck_assert_ptr_nonnull(strstr(out, "entropy:\n  sources: [virtio, kernel]\n  timeout: 10s  # "));
        ck_assert_ptr_nonnull(strstr(out, "seedbed.yaml:2:12\n  on-timeout: fail\n"));
        ck_assert_ptr_nonnull(strstr(out, "\n  virtio:\n    quality: 1024\n"));
        free(out);
}
END_TEST

static Suite *config_suite(void) {
        Suite *s = suite_create("config");
        TCase *tc;

        tc = tcase_create("files");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_defaults);
        tcase_add_test(tc, test_ssh_and_luks);
        tcase_add_test(tc, test_key_types);
        tcase_add_test(tc, test_main_and_dropins);
        tcase_add_test(tc, test_config_file_replaces_etc);
        tcase_add_test(tc, test_file_errors);
        tcase_add_test(tc, test_dump);
        tcase_add_test(tc, test_replace_unknown);
        suite_add_tcase(s, tc);

        tc = tcase_create("cmdline");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_cmdline);
        tcase_add_test(tc, test_cmdline_errors);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(config_suite)
