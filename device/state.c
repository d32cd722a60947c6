/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kcmp.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "json-read.h"
#include "state.h"

/* The same open file, as systemd's fd store would judge it (kcmp()): it
 * keeps one of two such fds, and a state that named both would miss one
 * when it comes back. */
static bool same_file(int a, int b) {
        struct stat sa, sb;

        if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0 || sa.st_dev != sb.st_dev || sa.st_ino != sb.st_ino)
                return false;
        return syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a, b) == 0;
}

void state_write_fd(Json *j, StateFds *t, const char *key, int fd) {
        struct stat st;

        if (fd < 0) {
                json_null(j, key);
                return;
        }
        if (t->resolve) {
                uint64_t id;

                if (t->resolve(t->userdata, fd, &id) < 0)
                        j->failed = true;
                else
                        json_uint(j, key, id);
                return;
        }
        /* Guest memory is sent once per region, often the same file for
         * several: those are the ones that repeat (eventfds and sockets
         * never do, and comparing each of thousands with all others would
         * cost more than it saves). */
        if (fstat(fd, &st) >= 0 && S_ISREG(st.st_mode))
                for (size_t i = 0; i < t->n; i++)
                        if (same_file(t->fds[i], fd)) {
                                json_uint(j, key, i);
                                return;
                        }
        if (t->n == t->alloc) {
                size_t a = MAX(t->alloc * 2, (size_t) 64);
                int *p = realloc(t->fds, a * sizeof *p);
                if (!p) {
                        j->failed = true;
                        return;
                }
                t->fds = p;
                t->alloc = a;
        }
        t->fds[t->n] = fd;
        json_uint(j, key, t->n++);
}

void state_fds_done(StateFds *t) {
        free(t->fds);
        *t = (StateFds) {};
}

void state_write_hex(Json *j, const char *key, const void *data, size_t n) {
        static const char digits[] = "0123456789abcdef";
        _cleanup_free_ char *s = malloc(2 * n + 1);
        const uint8_t *p = data;

        if (!s) {
                j->failed = true;
                return;
        }
        for (size_t i = 0; i < n; i++) {
                s[2 * i] = digits[p[i] >> 4];
                s[2 * i + 1] = digits[p[i] & 15];
        }
        s[2 * n] = 0;
        json_string(j, key, s);
}

int state_memfd(Json *j) {
        _cleanup_free_ char *text = NULL;
        _cleanup_close_ int fd = -EBADF;
        size_t len;
        int r;

        r = json_finish(j, &text, &len);
        if (r < 0)
                return r;
        if (len > STATE_SIZE_MAX)
                return -EFBIG;
        fd = memfd_create("seedbed-device-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        r = loop_write(fd, text, len);
        if (r < 0)
                return r;
        /* The successor reads what we wrote, and nothing can change it. */
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
                return -errno;
        return TAKE_FD(fd);
}

int state_error(StateReader *r, const char *format, ...) {
        va_list ap;

        if (r->error[0])
                return -EBADMSG;
        va_start(ap, format);
        (void) vsnprintf(r->error, sizeof r->error, format, ap);
        va_end(ap);
        return -EBADMSG;
}

static int read_doc(StateReader *r, int memfd) {
        _cleanup_free_ char *text = NULL;
        struct stat st;
        ssize_t got;
        int k;

        if (fstat(memfd, &st) < 0)
                return state_error(r, "the state cannot be read (%s)", strerror(errno));
        if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t) st.st_size > STATE_SIZE_MAX)
                return state_error(r, "the state is not a file of 1 byte to %u bytes", STATE_SIZE_MAX);
        text = malloc((size_t) st.st_size + 1);
        if (!text)
                return -ENOMEM;
        got = pread(memfd, text, (size_t) st.st_size, 0);
        if (got != st.st_size)
                return state_error(r, "the state cannot be read whole");
        text[got] = 0;
        k = json_object_parse(text, (size_t) got, JSON_DEPTH_MAX, &r->doc);
        if (k < 0)
                return state_error(r, "the state is not a JSON object (%s)", strerror(-k));
        r->have_doc = true;
        return 0;
}

int state_reader_open(StateReader *r, int memfd, int *fds, size_t n_fds) {
        *r = (StateReader) { .fds = fds, .n_fds = n_fds, .taken = calloc(MAX(n_fds, (size_t) 1), sizeof(bool)) };
        if (!r->taken) {
                for (size_t i = 0; i < n_fds; i++)
                        safe_close(fds[i]);
                free(fds);
                *r = (StateReader) {};
                return -ENOMEM;
        }
        return read_doc(r, memfd);
}

int state_reader_open_with(StateReader *r, int memfd, const StateReader *fds_of) {
        *r = (StateReader) { .fds = fds_of->fds, .taken = fds_of->taken, .names = fds_of->names,
                             .n_fds = fds_of->n_fds, .borrowed = true };
        return read_doc(r, memfd);
}

void state_reader_done(StateReader *r) {
        if (r->borrowed) {
                if (r->have_doc)
                        yaml_document_delete(&r->doc);
                *r = (StateReader) {};
                return;
        }
        for (size_t i = 0; i < r->n_fds; i++)
                safe_close(r->fds[i]);
        free(r->fds);
        free(r->taken);
        free(r->names);
        if (r->have_doc)
                yaml_document_delete(&r->doc);
        *r = (StateReader) {};
}

yaml_node_t *state_root(StateReader *r) {
        return r->have_doc ? yaml_document_get_root_node(&r->doc) : NULL;
}

static yaml_node_t *scalar(StateReader *r, yaml_node_t *map, const char *key) {
        yaml_node_t *n = json_get(&r->doc, map, key);

        if (!n || n->type != YAML_SCALAR_NODE) {
                state_error(r, "'%s' is missing or not a value", key);
                return NULL;
        }
        return n;
}

int state_get_u64(StateReader *r, yaml_node_t *map, const char *key, uint64_t max, uint64_t *ret) {
        yaml_node_t *n = scalar(r, map, key);
        const char *s;
        char *end;
        unsigned long long v;

        if (!n)
                return -EBADMSG;
        s = (const char *) n->data.scalar.value;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (!s[0] || *end || s[0] == '-' || errno == ERANGE || v > max)
                return state_error(r, "'%s' is not a number up to %" PRIu64 ": '%.32s'", key, max, s);
        *ret = v;
        return 0;
}

int state_get_bool(StateReader *r, yaml_node_t *map, const char *key, bool *ret) {
        yaml_node_t *n = scalar(r, map, key);
        const char *s;

        if (!n)
                return -EBADMSG;
        s = (const char *) n->data.scalar.value;
        if (!streq(s, "true") && !streq(s, "false"))
                return state_error(r, "'%s' is not true or false", key);
        *ret = streq(s, "true");
        return 0;
}

int state_get_str(StateReader *r, yaml_node_t *map, const char *key, const char **ret) {
        yaml_node_t *n = json_get(&r->doc, map, key);
        const char *s = json_get_str(&r->doc, map, key);

        /* An empty string is a string: hex of nothing. */
        if (n && n->type == YAML_SCALAR_NODE && n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
                s = (const char *) n->data.scalar.value;
        if (!s)
                return state_error(r, "'%s' is missing or not a string", key);
        *ret = s;
        return 0;
}

static int unhex(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int state_get_hex(StateReader *r, yaml_node_t *map, const char *key, void *buf, size_t max, size_t *ret_n) {
        const char *s = NULL;
        uint8_t *p = buf;
        size_t l;
        int k;

        k = state_get_str(r, map, key, &s);
        if (k < 0)
                return k;
        l = strlen(s);
        if (l % 2 || l / 2 > max)
                return state_error(r, "'%s' is not hex of at most %zu bytes", key, max);
        for (size_t i = 0; i < l / 2; i++) {
                int hi = unhex(s[2 * i]), lo = unhex(s[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return state_error(r, "'%s' is not hex", key);
                p[i] = (uint8_t) (hi << 4 | lo);
        }
        *ret_n = l / 2;
        return 0;
}

int state_take_fd(StateReader *r, yaml_node_t *map, const char *key, int *ret) {
        yaml_node_t *n = json_get(&r->doc, map, key);
        uint64_t i;
        int k;

        if (n && n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            streq((const char *) n->data.scalar.value, "null")) {
                *ret = -EBADF; /* none */
                return 0;
        }
        k = state_get_u64(r, map, key, SIZE_MAX, &i);
        if (k < 0)
                return k;
        return state_dup_fd(r, i, key, ret);
}

static int by_name(const void *key, const void *item) {
        uint64_t a = *(const uint64_t *) key, b = *(const uint64_t *) item;
        return a < b ? -1 : a > b;
}

int state_dup_fd(StateReader *r, uint64_t i, const char *what, int *ret) {
        int fd;

        /* Names (systemd's store): the index is where the name is. */
        if (r->names) {
                const uint64_t *p = bsearch(&i, r->names, r->n_fds, sizeof *r->names, by_name);
                if (!p)
                        return state_error(r, "'%s' names fd %" PRIu64 ", which is not there", what, i);
                i = (uint64_t) (p - r->names);
        }

        if (i >= r->n_fds || r->fds[i] < 0)
                return state_error(r, "'%s' names fd %" PRIu64 ", which is not there", what, i);
        /* A copy: one fd may stand for several (state_write_fd()). */
        fd = fcntl(r->fds[i], F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return state_error(r, "'%s': cannot copy fd %" PRIu64 ": %s", what, i, strerror(errno));
        r->taken[i] = true;
        *ret = fd;
        return 0;
}

int state_get_object(StateReader *r, yaml_node_t *map, const char *key, yaml_node_t **ret) {
        yaml_node_t *n = json_get(&r->doc, map, key);

        if (!n || n->type != YAML_MAPPING_NODE)
                return state_error(r, "'%s' is missing or not an object", key);
        *ret = n;
        return 0;
}

int state_get_array(StateReader *r, yaml_node_t *map, const char *key, yaml_node_t **ret, size_t *ret_n) {
        yaml_node_t *n = json_get(&r->doc, map, key);

        if (!n || n->type != YAML_SEQUENCE_NODE)
                return state_error(r, "'%s' is missing or not an array", key);
        *ret = n;
        *ret_n = (size_t) (n->data.sequence.items.top - n->data.sequence.items.start);
        return 0;
}

int state_item_u64(StateReader *r, yaml_node_t *array, size_t i, uint64_t max, uint64_t *ret) {
        yaml_node_t *n = state_item(r, array, i);
        const char *s;
        unsigned long long v;
        char *end;

        if (!n || n->type != YAML_SCALAR_NODE)
                return state_error(r, "item %zu is not a value", i);
        s = (const char *) n->data.scalar.value;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (!s[0] || *end || s[0] == '-' || errno == ERANGE || v > max)
                return state_error(r, "item %zu is not a number up to %" PRIu64, i, max);
        *ret = v;
        return 0;
}

yaml_node_t *state_item(StateReader *r, yaml_node_t *array, size_t i) {
        return yaml_document_get_node(&r->doc, array->data.sequence.items.start[i]);
}
