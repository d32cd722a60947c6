/* SPDX-License-Identifier: MIT */
#pragma once

/* The device's entropy sources: getrandom(), a character device such as
 * /dev/hwrng, RDSEED.  Every byte served passes the SP 800-90B health
 * tests of its source first.  A source that fails is taken out; when no
 * healthy source is left, reads return nothing (callers keep their
 * requests waiting) until one is re-admitted after passing a fresh
 * startup test.  Reads never block: a device is read by a thread of its
 * own (blocking-reader.h), and the loop takes only what it has read. */

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blocking-reader.h"
#include "health.h"
#include "startup-test.h"
#include "macro.h"

typedef enum SourceType {
        SOURCE_GETRANDOM,
        SOURCE_DEVICE,
        SOURCE_RDSEED,
        _SOURCE_TYPE_MAX,
        _SOURCE_TYPE_INVALID = -EINVAL,
} SourceType;

/* How long a failed source stays out before it is tested again.  A
 * perfect source still fails once per ~4 GiB at alpha 2^-30 (health.h):
 * losing it for good would be wrong, serving it at once would be too. */
#define SOURCE_RETRY_USEC (10 * USEC_PER_SEC)
/* The device tests gigabytes, not the agent's kilobytes: at 2^-30 a
 * perfect source failed the RCT every few GiB (seen in the benchmark, at
 * 500 MB/s).  2^-40, the smallest alpha SP 800-90B allows, with the
 * default declared 6 bits a byte, puts the RCT cutoff at 8 (a false
 * alarm once per 2^56 bytes) and still stops a stuck source at its 8th
 * byte. */
#define SOURCE_ALPHA_LOG2 40U
/* A device's thread reads this much at a time.  The hwrng core returns a
 * read only once it is whole (rng_dev_read() loops over the driver's
 * 32- or 64-byte reads), so a slow device hands over what it has made
 * sooner in small chunks; a fast one costs a system call per chunk. */
#define SOURCE_DEVICE_CHUNK 512U
/* What a device's thread reads ahead: one default Linux pipe. */
#define SOURCE_DEVICE_BUFFER (64U * 1024U)
/* source_set_start() waits this long, in all, for devices' startup
 * samples; a device slower than that is tested as its bytes come. */
#define SOURCE_START_WAIT_USEC (1 * USEC_PER_SEC)

typedef struct EntropySource {
        SourceType type;
        char name[PATH_MAX];   /* "getrandom", "rdseed", or the device path */
        char *path;          /* SOURCE_DEVICE */
        int fd;              /* SOURCE_DEVICE, as opened at start; never read here */
        BlockingReader *reader; /* SOURCE_DEVICE: its thread reads a duplicate of fd */
        double min_entropy;
        HealthTest health;
        bool healthy;        /* in service */
        bool starting;       /* in its startup test (startup-test.h), whose
                              * samples are discarded, never served */
        usec_t retry_at;     /* out of service until then */
        uint64_t bytes;      /* served */
        uint64_t failures;   /* health-test failures */
        uint64_t read_errors;
} EntropySource;

/* Small requests (a guest's 64-byte buffers, EGD's reads) are served
 * from tested bytes read ahead in one block: one system call and one
 * health-test pass per block instead of per request.  Larger ones are
 * read straight into the caller's buffer. */
#define SOURCE_CACHE_SIZE 4096

typedef struct SourceSet {
        EntropySource *sources;
        size_t n;
        uint8_t *cache;
        size_t cache_off, cache_len;
        size_t cache_source; /* which source filled it, for its byte count */
} SourceSet;

SourceType source_type_from_string(const char *s);
const char *source_type_to_string(SourceType t);

/* Adds a source; for SOURCE_DEVICE path names the device.  Opening
 * happens here, so a missing device is reported at startup. */
int source_set_add(SourceSet *s, SourceType type, const char *path, double min_entropy);
void source_set_free(SourceSet *s);

/* Fills up to n bytes from the first healthy source that has bytes now,
 * in configured order.  Returns the count; 0 when nothing may be served
 * now.  Bytes of a chunk that fails its health test are wiped, never
 * returned. */
size_t source_set_read(SourceSet *s, uint8_t *buf, size_t n, usec_t now);

/* Runs every source's startup tests now, so the first VM is served at
 * once and "get level" tells the truth from the start; waits up to
 * SOURCE_START_WAIT_USEC for devices' threads to read their samples.
 * Returns how many sources are in service. */
size_t source_set_start(SourceSet *s, usec_t now);

/* The earliest time a source comes back for testing, or USEC_INFINITY. */
usec_t source_set_next_retry(const SourceSet *s);
bool source_set_any_healthy(const SourceSet *s);
