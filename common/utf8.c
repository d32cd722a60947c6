/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "utf8.h"

size_t utf8_decode(const char *s, size_t n, uint32_t *ret) {
        const unsigned char *p = (const unsigned char *) s;
        uint32_t c, min;
        size_t len;

        if (n == 0)
                return 0;
        if (p[0] < 0x80) {
                *ret = p[0];
                return 1;
        }
        if ((p[0] & 0xe0) == 0xc0) {
                len = 2, c = p[0] & 0x1f, min = 0x80;
        } else if ((p[0] & 0xf0) == 0xe0) {
                len = 3, c = p[0] & 0x0f, min = 0x800;
        } else if ((p[0] & 0xf8) == 0xf0) {
                len = 4, c = p[0] & 0x07, min = 0x10000;
        } else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                c = c << 6 | (p[i] & 0x3f);
        }
        /* Overlong forms and surrogates are not UTF-8 (RFC 3629). */
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
                return 0;
        *ret = c;
        return len;
}

bool utf8_yaml_safe(uint32_t c) {
        /* YAML 1.1, 5.1: #x9 | #xA | #xD | [#x20-#x7E] | #x85 | [#xA0-#xD7FF]
         * | [#xE000-#xFFFD] | [#x10000-#x10FFFF]; libyaml also refuses
         * U+FEFF inside a document.  #x85, U+2028 and U+2029 are line
         * breaks (5.4), folded to a space in a quoted scalar. */
        if (c >= 0x20 && c <= 0x7e)
                return true;
        if (c >= 0xa0 && c <= 0xd7ff)
                return c != 0x2028 && c != 0x2029;
        if (c >= 0xe000 && c <= 0xfffd)
                return c != 0xfeff;
        return c >= 0x10000 && c <= 0x10ffff;
}

bool utf8_is_yaml_text(const char *s) {
        size_t n = strlen(s);

        while (n > 0) {
                uint32_t c;
                size_t k = utf8_decode(s, n, &c);

                if (k == 0 || !utf8_yaml_safe(c))
                        return false;
                s += k;
                n -= k;
        }
        return true;
}
