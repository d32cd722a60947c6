/* SPDX-License-Identifier: MIT */
#pragma once

/* /etc/crypttab editing for the volumes the agent creates.  A line is
 * "NAME DEVICE KEY-FILE OPTIONS" (crypttab(5)); the agent owns exactly one
 * line per volume name and nothing else: every other line, comment and
 * blank is kept byte for byte, in its place. */

#include <stdbool.h>
#include <stddef.h>

/* The text of the file with a line for name made right: the first line
 * for name is replaced in place (later lines for the same name are
 * dropped, since a name can be opened only once), or the line is
 * appended.  A line for name that already has this device and key file
 * and carries every option of ours is kept as it is, extra options and
 * all: they are the administrator's.  key_file NULL writes "none";
 * options NULL or "" leaves the field out.  Returns 1 and the new text
 * in ret (NUL-terminated, its length in ret_size) when something
 * changed, 0 with *ret untouched when nothing did, -EINVAL when a field
 * cannot be written as one crypttab word. */
int crypttab_edit(const char *text, size_t size, const char *name, const char *device, const char *key_file,
                  const char *options, char **ret, size_t *ret_size);

/* crypttab_edit() on the file at path (a missing file is empty), read
 * and written back under the directory's lock (atomic_update_file_locked())
 * only when it changed, keeping its mode
 * (0644 for a new file).  A symlink at path is refused (-ELOOP): under
 * --root it could point out of the tree.  Returns 1 written, 0 already
 * right, -errno. */
int crypttab_update(const char *path, const char *name, const char *device, const char *key_file,
                    const char *options);

/* Whether s can be one crypttab field: non-empty, no whitespace or
 * control characters, not starting a comment. */
bool crypttab_field_valid(const char *s);
