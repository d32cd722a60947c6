/* SPDX-License-Identifier: MIT */
/* The LUKS volume's "device:" value (agent/blockdev.c) and the crypttab
 * the agent edits for it (agent/crypttab.c).
 *
 * Input: the device spec, a newline, then an /etc/crypttab.
 *
 * What must hold: a spec is taken or refused with a reason, validate()
 * agrees with parse(), a taken one names a path as given or a tag's
 * non-empty value, and written back as TAG=VALUE it names the same; an
 * edit of the crypttab keeps every line that is not for our volume byte
 * for byte and in order, leaves exactly one line for it, naming our
 * device and key file, and the same edit again changes nothing. */
#include <ctype.h>

#include "blockdev.h"
#include "crypttab.h"
#include "fuzz.h"

static void check_spec(const char *s) {
        const char *why = NULL, *why2 = NULL;
        DeviceSpec spec, again;
        const char *tag;
        char *text;
        int r;

        r = device_spec_parse(s, &spec, &why);
        fuzz_check(device_spec_validate(s, &why2) == r, "validate() and parse() disagree on '%s'", s);
        if (r < 0) {
                fuzz_check(r == -EINVAL && why && *why, "'%s' refused with %d and no reason", s, r);
                return;
        }
        fuzz_check(spec.kind >= 0 && spec.kind < _DEVICE_SPEC_KIND_MAX, "kind %d", spec.kind);
        fuzz_check(spec.value[0] && strlen(spec.value) < sizeof spec.value, "an empty or unterminated value");
        for (const char *p = spec.value; *p; p++)
                fuzz_check(!iscntrl((unsigned char) *p), "a control character in '%s'", spec.value);

        tag = device_spec_kind_to_tag(spec.kind);
        if (!tag) {
                fuzz_check(spec.kind == DEVICE_SPEC_PATH && streq(spec.value, s), "path '%s' from '%s'", spec.value,
                           s);
                return;
        }
        /* TAG=VALUE names the same device again (quoted when the value
         * itself is quoted, as blkid would take it). */
        if (asprintf(&text, spec.value[0] == '"' && spec.value[strlen(spec.value) - 1] == '"' ? "%s=\"%s\"" : "%s=%s",
                     tag, spec.value) < 0)
                abort();
        fuzz_check(device_spec_parse(text, &again, &why) == 0 && again.kind == spec.kind &&
                           streq(again.value, spec.value),
                   "'%s' from '%s' does not name it again", text, s);
        free(text);
}

#define NAME "data"
#define KEY_FILE "/etc/seedbed/keys/data.key"

/* The next line of text (without its '\n') at *pos, or false at the end. */
static bool next_line(const char *text, size_t size, size_t *pos, const char **ret, size_t *ret_len) {
        const char *nl;

        if (*pos >= size)
                return false;
        nl = memchr(text + *pos, '\n', size - *pos);
        *ret = text + *pos;
        *ret_len = nl ? (size_t) (nl - *ret) : size - *pos;
        *pos += *ret_len + (nl ? 1 : 0);
        return true;
}

/* Field i (from 0) of a line, split on blanks as crypttab(5) and
 * systemd-cryptsetup do; written here anew rather than taken from
 * crypttab.c, so that one mistake is not checked against itself. */
static bool line_field(const char *l, size_t len, unsigned i, const char **ret, size_t *ret_len) {
        size_t p = 0;

        for (;;) {
                size_t start;

                while (p < len && (l[p] == ' ' || l[p] == '\t' || l[p] == '\r'))
                        p++;
                if (p >= len)
                        return false;
                start = p;
                while (p < len && l[p] != ' ' && l[p] != '\t' && l[p] != '\r')
                        p++;
                if (i-- == 0) {
                        *ret = l + start;
                        *ret_len = p - start;
                        return true;
                }
        }
}

static bool field_is(const char *l, size_t len, unsigned i, const char *want) {
        const char *f;
        size_t fl;

        return line_field(l, len, i, &f, &fl) && fl == strlen(want) && memcmp(f, want, fl) == 0;
}

/* The administrator's lines are theirs: every line of before that is
 * not an entry for our volume is in after, byte for byte and in the
 * same order, with nothing else between them but one entry for ours. */
static void check_kept(const char *before, size_t before_size, const char *after, size_t after_size,
                       const char *device) {
        size_t bp = 0, ap = 0, ours = 0;
        const char *b = NULL, *a = NULL;
        size_t bl = 0, al = 0;

        for (;;) {
                bool more_b;

                do
                        more_b = next_line(before, before_size, &bp, &b, &bl);
                while (more_b && field_is(b, bl, 0, NAME));
                for (;;) {
                        if (!next_line(after, after_size, &ap, &a, &al)) {
                                a = NULL;
                                break;
                        }
                        if (!field_is(a, al, 0, NAME))
                                break;
                        ours++;
                        fuzz_check(field_is(a, al, 1, device) && field_is(a, al, 2, KEY_FILE),
                                   "our line '%.*s' names another device or key file", (int) al, a);
                }
                if (!more_b) {
                        fuzz_check(!a, "a line was added: '%.*s'", (int) al, a);
                        break;
                }
                fuzz_check(a, "the line '%.*s' was dropped", (int) bl, b);
                fuzz_check(al == bl && memcmp(a, b, bl) == 0, "the line '%.*s' became '%.*s'", (int) bl, b,
                           (int) al, a);
        }
        fuzz_check(ours == 1, "%zu lines for our volume", ours);
}

static void check_crypttab(const char *text, size_t size, const char *device) {
        _cleanup_free_ char *once = NULL, *twice = NULL;
        size_t once_size = 0, twice_size = 0;
        int r;

        r = crypttab_edit(text, size, NAME, device, KEY_FILE, "luks", &once, &once_size);
        fuzz_check(r >= 0 || r == -EINVAL, "crypttab_edit() failed with %d", r);
        if (r < 0)
                return;
        if (r == 0) {
                once = fuzz_strndup((const uint8_t *) text, size);
                once_size = size;
        }
        check_kept(text, size, once, once_size, device);
        r = crypttab_edit(once, once_size, NAME, device, KEY_FILE, "luks", &twice, &twice_size);
        fuzz_check(r == 0, "a second edit changed the crypttab again (%d):\n%s---\n%s", r, once, strempty(twice));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t spec_len = nl ? (size_t) (nl - data) : size;
        _cleanup_free_ char *spec = NULL, *rest = NULL;
        size_t rest_size;

        fuzz_setup();
        spec = fuzz_strndup(data, spec_len);
        check_spec(spec);

        /* The rest as the file, in a buffer of its size (not a string):
         * a read past its end is ASan's to see.  The spec is the device
         * field when it is one word. */
        rest_size = nl ? size - spec_len - 1 : 0;
        rest = malloc(MAX(rest_size, (size_t) 1));
        if (!rest)
                abort();
        if (rest_size > 0)
                memcpy(rest, nl + 1, rest_size);
        check_crypttab(rest, rest_size, crypttab_field_valid(spec) ? spec : "UUID=0a1b2c3d-0000-4000-8000-000000000001");
        return 0;
}
