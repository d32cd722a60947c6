/* SPDX-License-Identifier: MIT */
#pragma once

/* The device's state as one process hands it to the next (an upgrade, a
 * restart): a JSON document and the file descriptors it names.  Each
 * module writes and reads its own part (server.c its connections,
 * vhost-user.c a device's negotiation, memory and ring); this file is
 * what they share: the table of fds a document refers to by index, and
 * reading values back with a message that names what was wrong.
 *
 * The document says which version of the format it is (STATE_VERSION).
 * A newer binary reads every older version; a document of a version it
 * does not know, or one it cannot read, is refused as a whole, and the
 * successor serves fresh (guests reconnect) rather than half-restored. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "json.h"
#include "macro.h"

/* 2: EGD requests stay in their socket until answered; the state says
 * how many of its bytes it holds already (server.c, save_egd()).  A
 * reader of 1 alone would answer those again. */
#define STATE_VERSION 2
/* The most a state document may take: 10,000 connections of a few
 * hundred bytes each, with room. */
#define STATE_SIZE_MAX (64U * 1024 * 1024)

/* The fds a document being written refers to, borrowed: they stay their
 * owners' and are sent as they are. */
typedef struct StateFds {
        int *fds;
        size_t n, alloc;
        /* Set: fds are named by what this returns (the name of a file
         * kept in systemd's store, see fd-store.h), not collected. */
        int (*resolve)(void *userdata, int fd, uint64_t *ret_id);
        void *userdata;
} StateFds;

/* Writes fd's index in the table as member key, or null for fd < 0.  A
 * memory file already in the table (the same open file) gets its index:
 * systemd's fd store keeps one of two such fds. */
void state_write_fd(Json *j, StateFds *t, const char *key, int fd);
void state_fds_done(StateFds *t);

/* Writes n bytes as lowercase hex. */
void state_write_hex(Json *j, const char *key, const void *data, size_t n);

/* Writes the finished document j into a new sealed memfd: the fd, or
 * -errno. */
int state_memfd(Json *j);

typedef struct StateReader {
        yaml_document_t doc;
        bool have_doc;
        int *fds;          /* received */
        bool *taken;       /* which of them a document named */
        uint64_t *names;   /* set: a document names fds[i] names[i] (ascending) */
        size_t n_fds;
        bool borrowed;     /* fds, taken and names are another reader's */
        char error[256];   /* the first thing that was wrong */
} StateReader;

/* Parses the document in memfd; fds (n_fds of them, owned by the reader
 * from now on) are what its indexes refer to.  0, or -EBADMSG with the
 * reason in r->error. */
int state_reader_open(StateReader *r, int memfd, int *fds, size_t n_fds);
/* Parses another document naming the fds of fds_of (which must outlive
 * this reader). */
int state_reader_open_with(StateReader *r, int memfd, const StateReader *fds_of);
/* Closes the fds nobody took, frees the document. */
void state_reader_done(StateReader *r);

yaml_node_t *state_root(StateReader *r);

/* Members of the object map.  Each returns 0, or -EBADMSG after saying
 * in r->error what (key) was missing or wrong, so a caller can stop at
 * the first error and report r->error. */
int state_get_u64(StateReader *r, yaml_node_t *map, const char *key, uint64_t max, uint64_t *ret);
int state_get_bool(StateReader *r, yaml_node_t *map, const char *key, bool *ret);
/* A string member (not null); the pointer lives as long as the reader. */
int state_get_str(StateReader *r, yaml_node_t *map, const char *key, const char **ret);
/* Hex into buf: at most max bytes. */
int state_get_hex(StateReader *r, yaml_node_t *map, const char *key, void *buf, size_t max, size_t *ret_n);
/* A copy of the fd the member names (the caller owns it); null gives
 * -EBADF in *ret.  An index out of range is wrong; one named twice
 * (the same open file, see state_write_fd()) gives two copies. */
int state_take_fd(StateReader *r, yaml_node_t *map, const char *key, int *ret);
/* The same for an index. */
int state_dup_fd(StateReader *r, uint64_t i, const char *what, int *ret);
/* Item i of an array, a number up to max. */
int state_item_u64(StateReader *r, yaml_node_t *array, size_t i, uint64_t max, uint64_t *ret);
/* An object member. */
int state_get_object(StateReader *r, yaml_node_t *map, const char *key, yaml_node_t **ret);
/* An array member: its items, for indexing with state_item(). */
int state_get_array(StateReader *r, yaml_node_t *map, const char *key, yaml_node_t **ret, size_t *ret_n);
yaml_node_t *state_item(StateReader *r, yaml_node_t *array, size_t i);

/* Says what was wrong (printf), if nothing was said yet; -EBADMSG. */
int state_error(StateReader *r, const char *format, ...) _printf_(2, 3);
