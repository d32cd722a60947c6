/* SPDX-License-Identifier: MIT */
#pragma once

/* The "cpu" source: RDSEED, the x86 instruction that returns conditioned
 * output of the CPU's entropy source (unlike RDRAND, which is a DRBG the
 * kernel already uses when it trusts the CPU). */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

bool cpu_has_rdseed(void);

/* Fills up to n bytes; returns how many (RDSEED may run dry for a moment
 * under load: fewer bytes, never an error), or -EOPNOTSUPP. */
ssize_t cpu_read_rdseed(void *buf, size_t n);
