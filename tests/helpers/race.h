/* SPDX-License-Identifier: MIT */
#pragma once

/* Two writers at once: each in a child of its own, released together,
 * with every atomic write held open a while (atomic.h's fault hook
 * sleeps before the temporary file is made) so that the other reads
 * the file while the first is still writing it, unless a lock keeps
 * it out. */

/* Runs fn(0, userdata) and fn(1, userdata) in two forked children at
 * once; asserts that both returned >= 0. */
void race_two(int (*fn)(unsigned who, void *userdata), void *userdata);
