/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <fcntl.h>
#include <libgen.h>
#include <sys/stat.h>

#include "crypttab.h"
#include "atomic.h"
#include "fileio.h"

/* crypttab(5) is read by systemd-cryptsetup-generator and by Debian's
 * cryptdisks; neither needs it large.  Anything bigger is not ours to
 * rewrite. */
#define CRYPTTAB_MAX (1024 * 1024)

bool crypttab_field_valid(const char *s) {
        if (!s || s[0] == 0 || s[0] == '#')
                return false;
        /* Neither parser knows quoting: one word, printable. */
        for (const char *p = s; *p; p++)
                if (isspace((unsigned char) *p) || iscntrl((unsigned char) *p))
                        return false;
        return true;
}

static bool is_blank(char c) {
        /* Not strchr(" \t\r", c): it finds the terminator for a NUL
         * byte, which made "\0data ..." an entry for "data", replaced. */
        return c == ' ' || c == '\t' || c == '\r';
}

/* Up to max whitespace-separated fields of one line (without its end),
 * as pointers and lengths into it.  Returns the number found. */
static size_t split_fields(const char *line, size_t len, const char **f, size_t *fl, size_t max) {
        size_t n = 0, i = 0;

        while (n < max) {
                while (i < len && is_blank(line[i]))
                        i++;
                if (i >= len)
                        break;
                f[n] = line + i;
                while (i < len && !is_blank(line[i]))
                        i++;
                fl[n] = (size_t) (line + i - f[n]);
                n++;
        }
        return n;
}

static bool field_eq(const char *f, size_t fl, const char *s) {
        return fl == strlen(s) && memcmp(f, s, fl) == 0;
}

/* Every comma-separated option of want appears in the field have. */
static bool options_include(const char *have, size_t hl, const char *want) {
        while (*want) {
                size_t wl = strcspn(want, ","), i = 0;
                bool found = false;

                while (wl > 0 && i <= hl) {
                        size_t ol = 0;

                        while (i + ol < hl && have[i + ol] != ',')
                                ol++;
                        if (ol == wl && memcmp(have + i, want, wl) == 0) {
                                found = true;
                                break;
                        }
                        i += ol + 1;
                }
                if (wl > 0 && !found)
                        return false;
                want += wl;
                if (*want == ',')
                        want++;
        }
        return true;
}

/* The line is a crypttab entry (not blank, not a comment) for name. */
static bool line_is_for(const char *line, size_t len, const char *name) {
        const char *f[1];
        size_t fl[1];

        if (split_fields(line, len, f, fl, 1) < 1 || f[0][0] == '#')
                return false;
        return field_eq(f[0], fl[0], name);
}

/* Whether an existing entry for name already says what we would: same
 * device and key file, and at least our options. */
static bool line_is_current(const char *line, size_t len, const char *device, const char *key_file,
                            const char *options) {
        const char *f[5];
        size_t fl[5], n;

        n = split_fields(line, len, f, fl, ELEMENTSOF(f));
        if (n < 3 || n > 4)
                return false;
        if (!field_eq(f[1], fl[1], device) || !field_eq(f[2], fl[2], key_file))
                return false;
        if (!options || !options[0])
                return true;
        return n == 4 && options_include(f[3], fl[3], options);
}

typedef struct Buf {
        char *data;
        size_t size, alloc;
} Buf;

static int buf_put(Buf *b, const char *s, size_t n) {
        if (b->alloc - b->size < n + 1) {
                size_t a = MAX(b->alloc * 2, b->size + n + 1);
                char *p = realloc(b->data, a);

                if (!p)
                        return -ENOMEM;
                b->data = p;
                b->alloc = a;
        }
        memcpy(b->data + b->size, s, n);
        b->size += n;
        b->data[b->size] = 0;
        return 0;
}

int crypttab_edit(const char *text, size_t size, const char *name, const char *device, const char *key_file,
                  const char *options, char **ret, size_t *ret_size) {
        _cleanup_free_ char *entry = NULL;
        Buf out = {};
        size_t matches = 0;
        bool current = false, replaced = false;
        int r;

        if (!key_file)
                key_file = "none";
        if (options && !options[0])
                options = NULL;
        if (!crypttab_field_valid(name) || !crypttab_field_valid(device) || !crypttab_field_valid(key_file) ||
            (options && !crypttab_field_valid(options)))
                return -EINVAL;

        /* Nothing to do when exactly one entry for name exists and it
         * already says it: the file is not rewritten at all. */
        for (size_t i = 0; i < size;) {
                const char *nl = memchr(text + i, '\n', size - i);
                size_t len = nl ? (size_t) (nl - (text + i)) : size - i;

                if (line_is_for(text + i, len, name)) {
                        matches++;
                        if (matches == 1)
                                current = line_is_current(text + i, len, device, key_file, options);
                }
                i += len + (nl ? 1 : 0);
        }
        if (matches == 1 && current)
                return 0;

        if (asprintf(&entry, "%s %s %s%s%s\n", name, device, key_file, options ? " " : "", strempty(options)) < 0)
                return -ENOMEM;

        for (size_t i = 0; i < size;) {
                const char *nl = memchr(text + i, '\n', size - i);
                size_t len = nl ? (size_t) (nl - (text + i)) : size - i;
                size_t full = len + (nl ? 1 : 0);

                if (!line_is_for(text + i, len, name))
                        r = buf_put(&out, text + i, full);
                else if (replaced)
                        r = 0; /* a second entry for the name: dropped */
                else {
                        replaced = true;
                        /* An entry that already says it keeps its bytes
                         * (and the administrator's extra options). */
                        if (current) {
                                r = buf_put(&out, text + i, len);
                                if (r >= 0)
                                        r = buf_put(&out, "\n", 1);
                        } else
                                r = buf_put(&out, entry, strlen(entry));
                }
                if (r < 0)
                        goto fail;
                i += full;
        }

        if (!replaced) {
                if (out.size > 0 && out.data[out.size - 1] != '\n') {
                        r = buf_put(&out, "\n", 1);
                        if (r < 0)
                                goto fail;
                }
                r = buf_put(&out, entry, strlen(entry));
                if (r < 0)
                        goto fail;
        }

        *ret = out.data;
        if (ret_size)
                *ret_size = out.size;
        return 1;

fail:
        free(out.data);
        return r;
}

typedef struct CrypttabLine {
        const char *name, *device, *key_file, *options;
} CrypttabLine;

/* atomic_update_file_locked()'s edit: reads the file under the lock, so
 * that another agent's line added since is kept. */
static int crypttab_edit_file(const char *path, char **ret, size_t *ret_size, mode_t *mode, void *userdata) {
        const CrypttabLine *l = userdata;
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        struct stat st;
        int r;

        if (lstat(path, &st) >= 0) {
                if (S_ISLNK(st.st_mode))
                        return -ELOOP;
                if (!S_ISREG(st.st_mode))
                        return -EBADF;
                *mode = st.st_mode & 07777;
                r = read_full_file(path, CRYPTTAB_MAX, &text, &size);
                if (r < 0)
                        return r;
        } else if (errno != ENOENT)
                return -errno;

        return crypttab_edit(text ?: "", size, l->name, l->device, l->key_file, l->options, ret, ret_size);
}

int crypttab_update(const char *path, const char *name, const char *device, const char *key_file,
                    const char *options) {
        _cleanup_free_ char *dir = strdup(path);
        CrypttabLine l = { name, device, key_file, options };
        int r;

        if (!dir)
                return -ENOMEM;
        /* A tree being prepared under --root may not have /etc yet. */
        r = mkdir_p(dirname(dir), 0755);
        if (r < 0)
                return r;
        /* Locked, and what a killed run left removed: nothing else would. */
        return atomic_update_file_locked(path, crypttab_edit_file, &l, 0644, (uid_t) -1, (gid_t) -1);
}
