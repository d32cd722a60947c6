/* SPDX-License-Identifier: MIT */
#pragma once

/* Just enough UTF-8 for text we write and read back: JSON records
 * (json.c) and configuration values (conf.c), both parsed by libyaml,
 * which refuses malformed UTF-8 and characters YAML does not allow, and
 * folds the ones it takes for line breaks. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes the sequence at s (n bytes left): returns its length and the
 * code point in *ret, or 0 for a byte that starts no valid sequence
 * (truncated, overlong, a surrogate, past U+10FFFF). */
size_t utf8_decode(const char *s, size_t n, uint32_t *ret);

/* Whether YAML takes c as it is inside a quoted scalar and gives it back
 * unchanged: printable (YAML 1.1's c-printable, without the byte order
 * mark), and neither a tab nor a line break (LF, CR, NEL, U+2028,
 * U+2029), which libyaml folds or would end a line with. */
bool utf8_yaml_safe(uint32_t c);

/* Whether s is one line of such text: what a configuration string may
 * hold, so that any value can be written back as YAML. */
bool utf8_is_yaml_text(const char *s);
