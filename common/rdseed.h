/* SPDX-License-Identifier: MIT */
#pragma once

/* RDSEED, the x86 instruction that returns conditioned output of the
 * CPU's entropy source (unlike RDRAND, a DRBG the kernel already uses
 * when it trusts the CPU): the agent's "cpu" source and the device's
 * "rdseed" source. */

#include <stdbool.h>
#include <stddef.h>

/* Whether this CPU has RDSEED: CPUID.(EAX=07H, ECX=0):EBX[18].  Always
 * false off x86-64.  Asked once; the answer is kept. */
bool rdseed_supported(void);

/* Fills up to n bytes and returns how many: fewer when RDSEED runs dry
 * for a moment, as it does under load (never an error; come back
 * later), 0 on a CPU without it.  Gives up on a dry word after a few
 * microseconds, so that the device's event loop does not spin in it. */
size_t rdseed_read(void *buf, size_t n);
