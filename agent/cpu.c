/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#if defined(__x86_64__) && defined(HAVE_CPUID_H)
#include <cpuid.h>
#endif

#include "cpu.h"

#if defined(__x86_64__) && defined(HAVE_CPUID_H)
bool cpu_has_rdseed(void) {
        unsigned a, b, c, d;

        /* CPUID.(EAX=07H, ECX=0):EBX.RDSEED[bit 18] */
        if (__get_cpuid_max(0, NULL) < 7)
                return false;
        __cpuid_count(7, 0, a, b, c, d);
        return b & (1U << 18);
}

static bool rdseed64(unsigned long long *v) {
        unsigned char ok;

        __asm__ volatile("rdseed %0; setc %1" : "=r"(*v), "=qm"(ok) : : "cc");
        return ok;
}

ssize_t cpu_read_rdseed(void *buf, size_t n) {
        unsigned char *p = buf;
        size_t done = 0;

        if (!cpu_has_rdseed())
                return -EOPNOTSUPP;

        while (done < n) {
                unsigned long long v;
                bool ok = false;

                /* Intel's guidance: RDSEED may fail transiently when the
                 * conditioner is drained; retry a little, then return what
                 * we have and let the caller come back later. */
                for (int i = 0; i < 64 && !ok; i++) {
                        ok = rdseed64(&v);
                        if (!ok)
                                __builtin_ia32_pause();
                }
                if (!ok)
                        break;
                memcpy(p + done, &v, n - done < sizeof v ? n - done : sizeof v);
                done += n - done < sizeof v ? n - done : sizeof v;
        }
        return (ssize_t) done;
}
#else
bool cpu_has_rdseed(void) {
        return false;
}

ssize_t cpu_read_rdseed(void *buf, size_t n) {
        return -EOPNOTSUPP;
}
#endif
