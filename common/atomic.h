/* SPDX-License-Identifier: MIT */
#pragma once

/* Writing files that hold secrets: atomic_write_file() with an owner, and
 * with the owner and mode set before the first byte is written, so key
 * material never sits in a file that others may read.  A crash at any
 * point leaves the old file or the complete new one, plus at most a
 * temporary file that atomic_remove_temp_files() cleans up.
 *
 * Tests inject a failure at any step through a fault hook; the program
 * never sets one. */

#include <stdbool.h>
#include <sys/types.h>

typedef enum AtomicStep {
        ATOMIC_OPEN,      /* the O_EXCL temporary file */
        ATOMIC_FCHOWN,
        ATOMIC_FCHMOD,
        ATOMIC_WRITE,     /* fails after half the data, as ENOSPC would */
        ATOMIC_FSYNC,
        ATOMIC_RENAME,
        ATOMIC_FSYNC_DIR,
        _ATOMIC_STEP_MAX,
} AtomicStep;

/* "open", "fchown", …: for test messages. */
const char *atomic_step_to_string(AtomicStep s);

/* Called before each step with the final file's name as the writer was
 * given it: the path for atomic_write_file(), the name relative to the
 * directory fd for atomic_create_file_at(), atomic_write_file_locked()
 * and atomic_update_file_locked().  A negative errno return makes that
 * step fail with it.  NULL removes the hook. */
typedef int (*AtomicFaultHook)(AtomicStep step, const char *path, void *userdata);
void atomic_set_fault_hook(AtomicFaultHook hook, void *userdata);

/* Replaces path with data: a new O_EXCL temporary file beside it (created
 * 0600), given uid:gid and mode, written, fsync()ed, renamed over path,
 * and the directory fsync()ed.  uid or gid (uid_t) -1 leave that one as
 * created.  On failure the temporary file is removed; -errno. */
int atomic_write_file(const char *path, const void *data, size_t n, mode_t mode, uid_t uid, gid_t gid);

/* As atomic_write_file(), for name (no '/') in the directory dir_fd, so
 * that a directory checked once (its owner, its mode) is the one written
 * in, and never over an existing file: -EEXIST then.  For a file two
 * writers may make at once, where each must go on with the one that is
 * there (read it back) rather than replace it.  dir_fd itself is
 * fsync()ed. */
int atomic_create_file_at(int dir_fd, const char *name, const void *data, size_t n, mode_t mode, uid_t uid,
                          gid_t gid);

/* As atomic_write_file(), or with replace false never over an existing
 * path (-EEXIST, as atomic_create_file_at()), for a file that nothing
 * else cleans up after: the records in /run and /var/lib, the instance
 * key, crypttab.  Under an exclusive flock() of path's directory, taken
 * by every writer that comes through here, the temporary files of path
 * that a killed writer left are removed first (atomic_remove_temp_files());
 * the directory must exist. */
int atomic_write_file_locked(const char *path, const void *data, size_t n, mode_t mode, uid_t uid, gid_t gid,
                             bool replace);

/* Makes the new content of path from what it holds now (the callback
 * reads it, with its own rules for what may be there): >0 with *ret_data
 * (malloc()ed, freed by the caller) and *ret_size to write, and *mode,
 * which holds the mode asked for, changed if it should be; 0 to leave
 * the file as it is; or -errno, returned as it is. */
typedef int (*AtomicEditFn)(const char *path, char **ret_data, size_t *ret_size, mode_t *mode, void *userdata);

/* A read-modify-write of path under the same lock as
 * atomic_write_file_locked(), with the read inside it: two writers that
 * each add to the file (a crypttab line, a run to a record) both keep
 * their change.  Returns 1 written, 0 left as it was (edit said so), or
 * -errno. */
int atomic_update_file_locked(const char *path, AtomicEditFn edit, void *userdata, mode_t mode, uid_t uid,
                              gid_t gid);

/* Whether name (a directory entry) is one of our temporary files for the
 * file named target in the same directory: "TARGET.<16 hex>.tmp", or
 * ".TARGET.<pid>.<usec>.tmp" as seedbed 0.1 named its LUKS key files
 * while writing them. */
bool atomic_is_temp_name(const char *name, const char *target);

/* Removes what a crash between creating a temporary file and renaming it
 * left in the directory dir_fd: the regular files atomic_is_temp_name()
 * recognises for any of the n targets.  They may hold a private key, and
 * nothing else would ever remove them.  Call it only where no other
 * writer of those targets can be at work (under a lock): it would remove
 * that writer's file.  Returns how many were removed, or the first
 * -errno (the others are still tried). */
int atomic_remove_temp_files(int dir_fd, const char *const *targets, size_t n_targets);
