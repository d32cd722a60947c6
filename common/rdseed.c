/* SPDX-License-Identifier: MIT */
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) && defined(HAVE_CPUID_H)
#include <cpuid.h>
#endif

#include "macro.h"
#include "rdseed.h"

#if defined(__x86_64__) && defined(HAVE_CPUID_H)
/* Tries per 8-byte word before giving up for now, with a PAUSE between:
 * Intel's guidance for a drained conditioner is to retry a little, then
 * let the caller come back.  64 PAUSEs and failed RDSEEDs (AMD's cost
 * thousands of cycles each) are well under a millisecond. */
#define RDSEED_TRIES 64

static bool cpuid_rdseed(void) {
        unsigned a, b, c, d;

        if (__get_cpuid_max(0, NULL) < 7)
                return false;
        __cpuid_count(7, 0, a, b, c, d);
        return b & (1U << 18);
}

bool rdseed_supported(void) {
        /* CPUID traps to the hypervisor in a VM: ask once.  -1: not yet. */
        static atomic_int supported = -1;
        int s = atomic_load_explicit(&supported, memory_order_relaxed);

        if (s < 0) {
                s = cpuid_rdseed();
                atomic_store_explicit(&supported, s, memory_order_relaxed);
        }
        return s;
}

static bool rdseed64(unsigned long long *v) {
        unsigned char ok;

        __asm__ volatile("rdseed %0; setc %1" : "=r"(*v), "=qm"(ok) : : "cc");
        return ok;
}

size_t rdseed_read(void *buf, size_t n) {
        unsigned char *p = buf;
        size_t done = 0;

        /* Without it the instruction is #UD: SIGILL. */
        if (!rdseed_supported())
                return 0;

        while (done < n) {
                unsigned long long v;
                size_t k = MIN(sizeof v, n - done);
                bool ok = false;

                for (int i = 0; i < RDSEED_TRIES && !ok; i++) {
                        ok = rdseed64(&v);
                        if (!ok)
                                __builtin_ia32_pause();
                }
                if (!ok)
                        break;
                memcpy(p + done, &v, k);
                explicit_bzero(&v, sizeof v);
                done += k;
        }
        return done;
}
#else
bool rdseed_supported(void) {
        return false;
}

size_t rdseed_read(void *buf, size_t n) {
        return 0;
}
#endif
