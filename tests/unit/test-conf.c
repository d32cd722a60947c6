/* SPDX-License-Identifier: MIT */
/* The generic configuration parser: every kind of bad input is rejected
 * with the place it stands in, as FILE:LINE:COL. */
#include <stddef.h>

#include "conf.h"
#include "testmain.h"

typedef struct Vol {
        char *device;
        char *name;
        bool wipe;
} Vol;

typedef struct T {
        bool flag;
        unsigned count;
        usec_t wait;
        double ratio;
        int color;
        ConfEnumList colors;
        char *name;
        Vol vols[3];
        unsigned n_vols;
} T;

static const ConfItem vol_items[] = {
        { "device", CONF_STRING, offsetof(Vol, device) },
        { "name", CONF_STRING, offsetof(Vol, name) },
        { "wipe", CONF_BOOL, offsetof(Vol, wipe) },
};

static void vol_init(void *e) {
        *(Vol *) e = (Vol) {};
}

static void vol_done(void *e) {
        Vol *v = e;
        free(v->device);
        free(v->name);
}

static int vol_check(const void *e, const void *earlier, unsigned n_earlier, const char **ret_error) {
        const Vol *v = e, *prev = earlier;
        if (!v->device)
                return *ret_error = "'device' is required", -EINVAL;
        if (!v->name)
                return *ret_error = "'name' is required", -EINVAL;
        for (unsigned i = 0; i < n_earlier; i++)
                if (streq(prev[i].name, v->name))
                        return *ret_error = "the name of an earlier item", -EINVAL;
        return 0;
}

static const char *const color_names[] = { "red", "green", "blue", NULL };

static const ConfItem items[] = {
        { "a.flag", CONF_BOOL, offsetof(T, flag) },
        { "a.count", CONF_UINT, offsetof(T, count), .min = 1, .max = 100 },
        { "a.wait", CONF_DURATION, offsetof(T, wait), .min = 0, .max = 60 * USEC_PER_SEC },
        { "a.ratio", CONF_DOUBLE, offsetof(T, ratio), .dmin = 0.5, .dmax = 8 },
        { "a.b.color", CONF_ENUM, offsetof(T, color), .names = color_names },
        { "a.b.colors", CONF_ENUM_LIST, offsetof(T, colors), .min = 1, .names = color_names },
        { "name", CONF_STRING, offsetof(T, name) },
        { "vols", CONF_SECTION_LIST, offsetof(T, vols), .max = 3, .sub = vol_items, .n_sub = ELEMENTSOF(vol_items),
          .elem_size = sizeof(Vol), .count_offset = offsetof(T, n_vols), .elem_init = vol_init, .elem_done = vol_done,
          .elem_check = vol_check },
};

static T t;
static ConfParser p;

static void setup(void) {
        t = (T) { .count = 7, .wait = 5 * USEC_PER_SEC, .ratio = 1, .color = 2 };
        ck_assert_int_eq(conf_parser_init(&p, items, ELEMENTSOF(items), &t), 0);
}

static void teardown(void) {
        conf_section_list_clear(&items[ELEMENTSOF(items) - 1], &t);
        conf_parser_done(&p);
        free(t.name);
}

static int load(const char *yaml) {
        return conf_load_yaml_buffer(&p, "test.yaml", yaml, strlen(yaml));
}

/* The input is rejected with exactly this message, and nothing in t
 * changed that the good keys before it did not set. */
static void expect_error(const char *yaml, const char *message) {
        T before = t;

        ck_assert_int_eq(load(yaml), -EBADMSG);
        ck_assert_str_eq(p.error, message);
        ck_assert_int_eq(t.count, before.count);
}

START_TEST(test_good_file) {
        ck_assert_int_eq(load("# comment\n"
                              "a:\n"
                              "  flag: yes\n"
                              "  count: 42\n"
                              "  wait: 1500ms\n"
                              "  ratio: 6.5\n"
                              "  b:\n"
                              "    color: green\n"
                              "    colors: [blue, red]\n"
                              "name: \"hello world\"\n"),
                         0);
        ck_assert(t.flag);
        ck_assert_uint_eq(t.count, 42);
        ck_assert_uint_eq(t.wait, 1500 * USEC_PER_MSEC);
        ck_assert_double_eq(t.ratio, 6.5);
        ck_assert_int_eq(t.color, 1);
        ck_assert_uint_eq(t.colors.n, 2);
        ck_assert_int_eq(t.colors.items[0], 2);
        ck_assert_int_eq(t.colors.items[1], 0);
        ck_assert_str_eq(t.name, "hello world");
        ck_assert_str_eq(p.origins[1], "test.yaml:4:10");
}
END_TEST

START_TEST(test_block_list_and_empty) {
        ck_assert_int_eq(load("a:\n  b:\n    colors:\n      - green\n      - blue\n"), 0);
        ck_assert_uint_eq(t.colors.n, 2);
        ck_assert_int_eq(t.colors.items[0], 1);
        /* Empty files, comments only and an empty section set nothing. */
        ck_assert_int_eq(load(""), 0);
        ck_assert_int_eq(load("# nothing\n"), 0);
        ck_assert_int_eq(load("---\n"), 0);
        ck_assert_int_eq(load("a:\n"), 0);
        ck_assert_uint_eq(t.count, 7);
}
END_TEST

START_TEST(test_durations) {
        static const struct {
                const char *s;
                usec_t v;
        } good[] = {
                { "30", 30 * USEC_PER_SEC }, { "30s", 30 * USEC_PER_SEC }, { "2min", 120 * USEC_PER_SEC }, { "3m", 180 * USEC_PER_SEC },
                { "250ms", 250 * USEC_PER_MSEC }, { "7us", 7 }, { "1h", 3600 * USEC_PER_SEC },
        };
        static const char *const bad[] = { "", "s", "-1s", "1 fortnight", "1.5s", " 3s", "0x10" };
        char buf[32];
        usec_t v;

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                ck_assert_int_eq(conf_parse_duration(good[i].s, &v), 0);
                ck_assert_uint_eq(v, good[i].v);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                ck_assert_int_lt(conf_parse_duration(bad[i], &v), 0);
        ck_assert_int_eq(conf_parse_duration("99999999999999999999s", &v), -ERANGE);

        conf_format_duration(30 * USEC_PER_SEC, buf, sizeof buf);
        ck_assert_str_eq(buf, "30s");
        conf_format_duration(120 * USEC_PER_SEC, buf, sizeof buf);
        ck_assert_str_eq(buf, "2min");
        conf_format_duration(1500 * USEC_PER_MSEC, buf, sizeof buf);
        ck_assert_str_eq(buf, "1500ms");
        conf_format_duration(0, buf, sizeof buf);
        ck_assert_str_eq(buf, "0s");
}
END_TEST

START_TEST(test_sizes) {
        static const struct {
                const char *s;
                uint64_t v;
        } good[] = {
                { "0", 0 }, { "4096", 4096 }, { "4096B", 4096 }, { "64K", 65536 }, { "64KiB", 65536 },
                { "512M", UINT64_C(512) << 20 }, { "4G", UINT64_C(4) << 30 }, { "4T", UINT64_C(4) << 40 },
                { "8 TiB", UINT64_C(8) << 40 },
        };
        static const char *const bad[] = { "", "T", "-1", "1.5G", "4P", "4t", " 4G", "0x10", "4Gi" };
        char buf[32];
        uint64_t v;

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                ck_assert_int_eq(conf_parse_size(good[i].s, &v), 0);
                ck_assert_uint_eq(v, good[i].v);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                ck_assert_msg(conf_parse_size(bad[i], &v) < 0, "'%s' parsed", bad[i]);
        ck_assert_int_eq(conf_parse_size("16777216T", &v), -ERANGE);

        conf_format_size(UINT64_C(4) << 40, buf, sizeof buf);
        ck_assert_str_eq(buf, "4T");
        conf_format_size(UINT64_C(1536) << 20, buf, sizeof buf);
        ck_assert_str_eq(buf, "1536M");
        conf_format_size(1000, buf, sizeof buf);
        ck_assert_str_eq(buf, "1000");
        conf_format_size(0, buf, sizeof buf);
        ck_assert_str_eq(buf, "0");
}
END_TEST

START_TEST(test_unknown_keys) {
        expect_error("a:\n  flag: true\n  colour: red\n", "test.yaml:3:3: unknown key 'a.colour'");
        expect_error("b: 1\n", "test.yaml:1:1: unknown key 'b'");
        /* Dotted keys would sidestep the duplicate check. */
        expect_error("a:\n  count: 5\na.count: 6\n", "test.yaml:3:1: key 'a.count' contains '.': nest it under its section instead");
        expect_error("a:\n  b:\n    shade: red\n", "test.yaml:3:5: unknown key 'a.b.shade'");
}
END_TEST

START_TEST(test_wrong_types) {
        expect_error("a:\n  count: [1, 2]\n", "test.yaml:2:10: 'a.count' must be a single value, not a list");
        expect_error("a:\n  count:\n    x: 1\n", "test.yaml:3:5: 'a.count' must be a single value, not a section of keys");
        expect_error("a: 5\n", "test.yaml:1:4: 'a' must be a section of keys, not a single value");
        expect_error("a:\n  b:\n    colors: red\n", "test.yaml:3:13: 'a.b.colors' must be a list such as [a, b], not a single value");
        expect_error("a:\n  count: lots\n", "test.yaml:2:10: 'a.count' must be a whole number, not 'lots'");
        expect_error("a:\n  count: -3\n", "test.yaml:2:10: 'a.count' must be a whole number, not '-3'");
        expect_error("a:\n  flag: maybe\n", "test.yaml:2:9: 'a.flag' must be true or false, not 'maybe'");
        expect_error("a:\n  wait: soon\n", "test.yaml:2:9: 'a.wait' must be a duration such as 30s, 500ms or 2min, not 'soon'");
        expect_error("a:\n  ratio: high\n", "test.yaml:2:10: 'a.ratio' must be a number, not 'high'");
        expect_error("a:\n  b:\n    color: purple\n", "test.yaml:3:12: 'a.b.color' must be one of red, green, blue, not 'purple'");
        expect_error("a:\n  b:\n    colors: [red, mauve]\n", "test.yaml:3:19: 'a.b.colors' items must be among red, green, blue, not 'mauve'");
        expect_error("a:\n  b:\n    colors: [[red]]\n", "test.yaml:3:14: 'a.b.colors' items must be names, not a list");
        expect_error("a:\n  count:\n", "test.yaml:2:9: 'a.count' needs a value");
        expect_error("a:\n  wait: !!binary 5s\n", "test.yaml:2:9: 'a.wait' has a tag this file cannot use: 'tag:yaml.org,2002:binary'");
        expect_error("a:\n  count: !mine 5\n", "test.yaml:2:10: 'a.count' has a tag this file cannot use: '!mine'");
        /* The core tags only say what the value is anyway. */
        ck_assert_int_eq(load("a:\n  count: !!int 5\n  flag: !!bool true\n"), 0);
        ck_assert_uint_eq(t.count, 5);
        expect_error("[1, 2]\n", "test.yaml:1:1: the file must be a section of keys, not a list");
        expect_error("? [a]\n: 1\n", "test.yaml:1:3: keys must be plain names, not a list");
}
END_TEST

START_TEST(test_out_of_range) {
        expect_error("a:\n  count: 0\n", "test.yaml:2:10: 'a.count' is out of range: 0 (allowed 1..100)");
        expect_error("a:\n  count: 101\n", "test.yaml:2:10: 'a.count' is out of range: 101 (allowed 1..100)");
        expect_error("a:\n  count: 99999999999999999999999\n",
                     "test.yaml:2:10: 'a.count' is out of range: 99999999999999999999999 (allowed 1..100)");
        expect_error("a:\n  wait: 2min\n", "test.yaml:2:9: 'a.wait' is out of range: 2min (allowed 0s..1min)");
        expect_error("a:\n  ratio: 9\n", "test.yaml:2:10: 'a.ratio' is out of range: 9 (allowed 0.5..8)");
        expect_error("a:\n  ratio: nan\n", "test.yaml:2:10: 'a.ratio' must be a number, not 'nan'");
        expect_error("a:\n  ratio: 0x1p2\n", "test.yaml:2:10: 'a.ratio' must be a number, not '0x1p2'");
}
END_TEST

START_TEST(test_malformed) {
        expect_error("a:\n  count: 5\n bad\n", "test.yaml:3:2: invalid YAML: did not find expected key while parsing a block mapping");
        expect_error("a: [1, 2\n", "test.yaml:2:1: invalid YAML: did not find expected ',' or ']' while parsing a flow sequence");
        expect_error("a:\n\tcount: 5\n", "test.yaml:2:1: invalid YAML: found character that cannot start any token while scanning for the next token");
        expect_error("a:\n  count: 5\n  count: 6\n", "test.yaml:3:3: duplicate key 'count'");
        expect_error("a:\n  count: 5\n---\na:\n  count: 6\n", "test.yaml:4:1: only one YAML document is allowed in a file");
        ck_assert_int_eq(conf_load_yaml_buffer(&p, "bin.yaml", "a:\0\1", 4), -EBADMSG);
        ck_assert_str_eq(p.error, "bin.yaml: not a text file (contains a NUL byte)");
        expect_error("a:\n  b:\n    colors: [red, red]\n", "test.yaml:3:19: 'a.b.colors' lists 'red' twice");
        expect_error("a:\n  b:\n    colors: []\n", "test.yaml:3:13: 'a.b.colors' must not be empty");
}
END_TEST

START_TEST(test_set) {
        ck_assert_int_eq(conf_set(&p, "a.count", "12", "cmdline:1:5"), 0);
        ck_assert_uint_eq(t.count, 12);
        ck_assert_str_eq(p.origins[1], "cmdline:1:5");
        ck_assert_int_eq(conf_set(&p, "a.b.colors", "green,red", "cmdline:1:20"), 0);
        ck_assert_uint_eq(t.colors.n, 2);
        ck_assert_int_eq(t.colors.items[0], 1);

        ck_assert_int_eq(conf_set(&p, "a.nope", "1", "cmdline:1:9"), -EBADMSG);
        ck_assert_str_eq(p.error, "cmdline:1:9: unknown key 'a.nope'");
        ck_assert_int_eq(conf_set(&p, "a.b", "1", "cmdline:1:9"), -EBADMSG);
        ck_assert_str_eq(p.error, "cmdline:1:9: 'a.b' is a section, not a value");
        ck_assert_int_eq(conf_set(&p, "a.count", "", "cmdline:1:9"), -EBADMSG);
        ck_assert_str_eq(p.error, "cmdline:1:9: 'a.count' needs a value");
        ck_assert_int_eq(conf_set(&p, "a.b.colors", "red,,blue", "cmdline:1:9"), -EBADMSG);
        ck_assert_str_eq(p.error, "cmdline:1:9: 'a.b.colors' has an empty item");
        ck_assert_uint_eq(t.count, 12);
}
END_TEST

START_TEST(test_dump) {
        char *out = NULL;
        size_t size = 0;
        FILE *f;

        ck_assert_int_eq(load("a:\n  count: 9\n"), 0);
        f = open_memstream(&out, &size);
        ck_assert_ptr_nonnull(f);
        conf_dump(&p, f);
        fclose(f);
        ck_assert_str_eq(out, "a:\n"
                              "  flag: false\n"
                              "  count: 9  # test.yaml:2:10\n"
                              "  wait: 5s\n"
                              "  ratio: 1\n"
                              "  b:\n"
                              "    color: blue\n"
                              "    colors: []\n"
                              "name: ~\n"
                              "vols: []\n");
        free(out);
}
END_TEST

/* The dump is YAML that reads back as the same values: strings that
 * would read as something else are quoted, doubles keep their digits,
 * nothing is cut short; and a string YAML cannot hold is refused. */
START_TEST(test_dump_reads_back) {
        char *out = NULL, *long_name;
        size_t size = 0;
        FILE *f;

        ck_assert_int_eq(load("name: \"a # b: [c] \\\" d\"\na:\n  ratio: 1.2345678901\n"), 0);
        f = open_memstream(&out, &size);
        conf_dump(&p, f);
        fclose(f);
        ck_assert_ptr_nonnull(strstr(out, "  ratio: 1.2345678901  # "));
        ck_assert_ptr_nonnull(strstr(out, "name: \"a # b: [c] \\\" d\"  # "));
        free(out);

        ck_assert_int_eq(load("name: \"~\"\n"), 0);
        ck_assert_str_eq(t.name, "~");
        f = open_memstream(&out, &size);
        conf_dump(&p, f);
        fclose(f);
        ck_assert_ptr_nonnull(strstr(out, "name: \"~\"  # "));
        free(out);

        long_name = malloc(1001);
        ck_assert_ptr_nonnull(long_name);
        memset(long_name, 'x', 1000);
        long_name[1000] = 0;
        ck_assert_int_eq(conf_set(&p, "name", long_name, "cmdline:1:1"), 0);
        f = open_memstream(&out, &size);
        conf_dump(&p, f);
        fclose(f);
        ck_assert_ptr_nonnull(strstr(out, long_name));
        free(out);
        free(long_name);

        ck_assert_int_eq(conf_set(&p, "name", "/etc/\xff", "cmdline:1:1"), -EBADMSG);
        ck_assert_str_eq(p.error, "cmdline:1:1: 'name' must be one line of printable UTF-8 text");
        expect_error("name: \"a\\tb\"\n", "test.yaml:1:7: 'name' must be one line of printable UTF-8 text");
        expect_error("name: \"a\\Lb\"\n", "test.yaml:1:7: 'name' must be one line of printable UTF-8 text");
}
END_TEST

START_TEST(test_file_errors) {
        ck_assert_int_eq(conf_load_yaml_file(&p, "/nonexistent/seedbed.yaml"), -ENOENT);
        ck_assert_int_eq(conf_load_yaml_file(&p, "/"), -EBADMSG);
        ck_assert_str_eq(p.error, "/: is a directory, not a file");
}
END_TEST

START_TEST(test_section_list) {
        char *out = NULL;
        size_t size = 0;
        FILE *f;

        ck_assert_int_eq(load("vols:\n"
                              "  - device: /dev/vdb\n"
                              "    name: data\n"
                              "  - {device: \"LABEL=x\", name: logs, wipe: true}\n"),
                         0);
        ck_assert_uint_eq(t.n_vols, 2);
        ck_assert_str_eq(t.vols[0].device, "/dev/vdb");
        ck_assert_str_eq(t.vols[1].name, "logs");
        ck_assert(!t.vols[0].wipe && t.vols[1].wipe);

        f = open_memstream(&out, &size);
        conf_dump(&p, f);
        fclose(f);
        ck_assert_ptr_nonnull(strstr(out, "vols:  # test.yaml:2:3\n"
                                          "  - device: /dev/vdb\n"
                                          "    name: data\n"
                                          "    wipe: false\n"
                                          "  - device: LABEL=x\n"));
        free(out);

        /* A later file replaces the list as a whole. */
        ck_assert_int_eq(load("vols:\n  - device: /dev/vdc\n    name: c\n"), 0);
        ck_assert_uint_eq(t.n_vols, 1);
        ck_assert_str_eq(t.vols[0].device, "/dev/vdc");

        /* Bad items change nothing, and say where. */
        expect_error("vols:\n  - device: /dev/vdd\n", "test.yaml:2:5: 'vols' item: 'name' is required");
        expect_error("vols:\n  - device: /dev/vdd\n    name: d\n    size: 5\n", "test.yaml:4:5: unknown key 'size'");
        expect_error("vols:\n  - device: /dev/vdd\n    name: d\n    wipe: often\n",
                     "test.yaml:4:11: 'wipe' must be true or false, not 'often'");
        /* Checked against the items before it: the third repeats the first. */
        expect_error("vols:\n  - {device: a, name: a}\n  - {device: b, name: b}\n  - {device: c, name: a}\n",
                     "test.yaml:4:5: 'vols' item: the name of an earlier item");
        expect_error("vols: /dev/vdd\n", "test.yaml:1:7: 'vols' must be a list of sections (\"- key: value\" items), not a single value");
        expect_error("vols: [/dev/vdd]\n", "test.yaml:1:8: 'vols' items must be sections of keys, not a single value");
        expect_error("vols:\n - {device: a, name: a}\n - {device: b, name: b}\n - {device: c, name: c}\n - {device: d, name: d}\n",
                     "test.yaml:2:2: 'vols' has 4 items, at most 3 are allowed");
        ck_assert_uint_eq(t.n_vols, 1);
        ck_assert_str_eq(t.vols[0].device, "/dev/vdc");

        ck_assert_int_eq(conf_set(&p, "vols", "x", "cmdline:1:1"), -EBADMSG);
        ck_assert_str_eq(p.error, "cmdline:1:1: 'vols' is a list of sections: it can be set in a file only");
}
END_TEST

static Suite *conf_suite(void) {
        Suite *s = suite_create("conf");
        TCase *tc;

        tc = tcase_create("good");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_good_file);
        tcase_add_test(tc, test_block_list_and_empty);
        tcase_add_test(tc, test_durations);
        tcase_add_test(tc, test_sizes);
        tcase_add_test(tc, test_dump);
        tcase_add_test(tc, test_dump_reads_back);
        suite_add_tcase(s, tc);

        tc = tcase_create("bad");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_unknown_keys);
        tcase_add_test(tc, test_wrong_types);
        tcase_add_test(tc, test_out_of_range);
        tcase_add_test(tc, test_malformed);
        tcase_add_test(tc, test_file_errors);
        suite_add_tcase(s, tc);

        tc = tcase_create("set");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_set);
        tcase_add_test(tc, test_section_list);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(conf_suite)
