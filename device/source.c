/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <poll.h>
#include <sys/random.h>

#include "fileio.h"
#include "log.h"
#include "rdseed.h"
#include "source.h"

static const char *const source_type_table[_SOURCE_TYPE_MAX] = {
        [SOURCE_GETRANDOM] = "getrandom",
        [SOURCE_DEVICE] = "device",
        [SOURCE_RDSEED] = "rdseed",
};

SourceType source_type_from_string(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(source_type_table); i++)
                if (streq(s, source_type_table[i]))
                        return (SourceType) i;
        return _SOURCE_TYPE_INVALID;
}

const char *source_type_to_string(SourceType t) {
        if (t < 0 || t >= _SOURCE_TYPE_MAX)
                return NULL;
        return source_type_table[t];
}

/* Starts a thread on a duplicate of the file description opened at
 * start: after a read error the next thread goes on where the last one
 * stopped, so a file is never read twice, and it is the device that was
 * checked at start. */
static int source_reader_start(EntropySource *e) {
        int fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 3);

        if (fd < 0)
                return -errno;
        return blocking_reader_new(fd, SOURCE_DEVICE_CHUNK, SOURCE_DEVICE_BUFFER, &e->reader);
}

static void source_start(EntropySource *e) {
        (void) health_init(&e->health, e->min_entropy, SOURCE_ALPHA_LOG2);
        e->healthy = false;
        e->starting = true;
}

int source_set_add(SourceSet *s, SourceType type, const char *path, double min_entropy) {
        EntropySource e = { .type = type, .fd = -EBADF, .min_entropy = min_entropy }, *v;
        HealthTest probe;
        int r;

        if (health_init(&probe, min_entropy, SOURCE_ALPHA_LOG2) < 0)
                return -EINVAL;

        switch (type) {
        case SOURCE_GETRANDOM:
                (void) snprintf(e.name, sizeof e.name, "getrandom");
                break;
        case SOURCE_RDSEED:
                if (!rdseed_supported())
                        return -EOPNOTSUPP;
                (void) snprintf(e.name, sizeof e.name, "rdseed");
                break;
        case SOURCE_DEVICE:
                if (!path)
                        return -EINVAL;
                e.path = strdup(path);
                if (!e.path)
                        return -ENOMEM;
                /* O_NONBLOCK only so that opening a FIFO does not wait
                 * for a writer: the reader's thread does the waiting. */
                e.fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
                if (e.fd < 0) {
                        r = -errno;
                        free(e.path);
                        return r;
                }
                r = source_reader_start(&e);
                if (r < 0) {
                        safe_close(e.fd);
                        free(e.path);
                        return r;
                }
                (void) snprintf(e.name, sizeof e.name, "%s", path);
                break;
        default:
                return -EINVAL;
        }

        v = realloc(s->sources, (s->n + 1) * sizeof *v);
        if (!v) {
                blocking_reader_free(e.reader);
                safe_close(e.fd);
                free(e.path);
                return -ENOMEM;
        }
        s->sources = v;
        source_start(&e);
        s->sources[s->n++] = e;
        return 0;
}

void source_set_free(SourceSet *s) {
        for (size_t i = 0; i < s->n; i++) {
                /* A thread blocked in read() is let go, not waited for. */
                blocking_reader_free(s->sources[i].reader);
                safe_close(s->sources[i].fd);
                free(s->sources[i].path);
        }
        free(s->sources);
        if (s->cache)
                explicit_bzero(s->cache, SOURCE_CACHE_SIZE);
        free(s->cache);
        *s = (SourceSet) {};
}

/* Raw bytes from a source, untested.  0 means none now. */
static size_t source_raw(EntropySource *e, uint8_t *buf, size_t n) {
        ssize_t k;

        switch (e->type) {
        case SOURCE_GETRANDOM:
                /* GRND_NONBLOCK: on a host whose own CRNG is not ready we
                 * serve nothing rather than block every VM. */
                k = getrandom(buf, n, GRND_NONBLOCK);
                if (k < 0)
                        k = errno == EINTR ? -EAGAIN : -errno;
                break;
        case SOURCE_RDSEED:
                /* Dry for now: 0, and the next source is tried. */
                return rdseed_read(buf, n);
        case SOURCE_DEVICE:
                if (!e->reader)
                        return 0;
                k = blocking_reader_read(e->reader, buf, n);
                if (k == 0 || (k < 0 && k != -EAGAIN)) {
                        /* The thread stopped; the next one starts when
                         * the source is retried.  A character device
                         * never ends: end of file is an error too. */
                        e->reader = blocking_reader_free(e->reader);
                        if (k == 0)
                                k = -EIO;
                }
                break;
        default:
                return 0;
        }

        if (k == -EAGAIN)
                return 0;
        if (k < 0) {
                if (e->read_errors++ == 0)
                        log_warning_errno((int) k, "Entropy source '%s' failed to read: %m", e->name);
                /* Take it out like a failed test: it gets retried. */
                e->healthy = false;
                e->starting = false;
                e->retry_at = now_usec(CLOCK_MONOTONIC) + SOURCE_RETRY_USEC;
                return 0;
        }
        return (size_t) k;
}

static void source_fail(EntropySource *e, HealthResult h, usec_t now) {
        e->failures++;
        e->healthy = false;
        e->starting = false;
        e->retry_at = now + SOURCE_RETRY_USEC;
        log_warning("Entropy source '%s' failed the %s health test; out of service, retrying in %llu s.", e->name,
                    health_result_to_string(h), (unsigned long long) (SOURCE_RETRY_USEC / USEC_PER_SEC));
}

/* Brings a source that is out back to testing once its time has come,
 * and runs its startup samples (discarded) through the tests. */
static bool source_ready(EntropySource *e, usec_t now) {
        uint8_t scratch[STARTUP_TEST_SAMPLES_MIN];

        if (e->healthy)
                return true;
        if (!e->starting) {
                if (now < e->retry_at)
                        return false;
                if (e->type == SOURCE_DEVICE && !e->reader) {
                        int r = source_reader_start(e);
                        if (r < 0) {
                                log_warning_errno(r, "Entropy source '%s' cannot start its reader, retrying in %llu s: %m",
                                                  e->name, (unsigned long long) (SOURCE_RETRY_USEC / USEC_PER_SEC));
                                e->retry_at = now + SOURCE_RETRY_USEC;
                                return false;
                        }
                }
                source_start(e);
        }

        while (startup_test_state(&e->health) == STARTUP_TEST_RUNNING) {
                uint64_t left = startup_test_samples(&e->health) - e->health.samples;
                size_t k = source_raw(e, scratch, (size_t) MIN(left, (uint64_t) sizeof scratch));
                HealthResult h;

                if (k == 0)
                        return false; /* try again on the next request */
                h = health_feed(&e->health, scratch, k);
                explicit_bzero(scratch, k);
                if (h != HEALTH_OK) {
                        source_fail(e, h, now);
                        return false;
                }
        }

        e->starting = false;
        e->healthy = true;
        log_info("Entropy source '%s' passed its startup tests and is in service.", e->name);
        return true;
}

/* Straight from the first healthy source into buf. */
static size_t source_set_read_direct(SourceSet *s, uint8_t *buf, size_t n, size_t *ret_index, usec_t now) {
        for (size_t i = 0; i < s->n; i++) {
                EntropySource *e = &s->sources[i];
                HealthResult h;
                size_t k;

                if (!source_ready(e, now))
                        continue;
                k = source_raw(e, buf, n);
                if (k == 0)
                        continue;
                h = health_feed(&e->health, buf, k);
                if (h != HEALTH_OK) {
                        /* Nothing of a failing chunk leaves the process. */
                        explicit_bzero(buf, k);
                        source_fail(e, h, now);
                        continue;
                }
                *ret_index = i;
                return k;
        }
        return 0;
}

size_t source_set_read(SourceSet *s, uint8_t *buf, size_t n, usec_t now) {
        size_t k, index;

        if (n == 0)
                return 0;
        if (n >= SOURCE_CACHE_SIZE / 2) {
                k = source_set_read_direct(s, buf, n, &index, now);
                if (k > 0)
                        s->sources[index].bytes += k;
                return k;
        }

        if (s->cache_off == s->cache_len) {
                if (!s->cache) {
                        s->cache = malloc(SOURCE_CACHE_SIZE);
                        if (!s->cache) {
                                /* Serve uncached rather than not at all. */
                                k = source_set_read_direct(s, buf, n, &index, now);
                                if (k > 0)
                                        s->sources[index].bytes += k;
                                return k;
                        }
                }
                s->cache_off = s->cache_len = 0;
                k = source_set_read_direct(s, s->cache, SOURCE_CACHE_SIZE, &index, now);
                if (k == 0)
                        return 0;
                s->cache_len = k;
                s->cache_source = index;
        }

        /* Advance first: if the copy faults (a guest buffer whose memory
         * vanished), the bytes are skipped, never served again elsewhere. */
        k = MIN(n, s->cache_len - s->cache_off);
        s->cache_off += k;
        memcpy(buf, s->cache + s->cache_off - k, k);
        /* Served bytes leave no copy behind. */
        explicit_bzero(s->cache + s->cache_off - k, k);
        if (s->cache_source < s->n)
                s->sources[s->cache_source].bytes += k;
        return k;
}

/* In its startup tests, waiting for its thread's bytes. */
static bool source_starting(const EntropySource *e) {
        return e->type == SOURCE_DEVICE && e->reader && e->starting;
}

size_t source_set_start(SourceSet *s, usec_t now) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + SOURCE_START_WAIT_USEC;
        size_t n = 0;

        for (size_t i = 0; i < s->n; i++) {
                EntropySource *e = &s->sources[i];

                /* Not yet in the event loop: waiting here delays nobody
                 * but the start, and only by as much as the deadline. */
                while (!source_ready(e, now) && source_starting(e)) {
                        usec_t t = now_usec(CLOCK_MONOTONIC);
                        struct pollfd p = { .fd = blocking_reader_fd(e->reader), .events = POLLIN };

                        if (t >= deadline)
                                break;
                        if (poll(&p, 1, (int) ((deadline - t + USEC_PER_MSEC - 1) / USEC_PER_MSEC)) < 0 && errno != EINTR)
                                break;
                }
                n += e->healthy;
        }
        return n;
}

usec_t source_set_next_retry(const SourceSet *s) {
        usec_t t = USEC_INFINITY;

        /* Only sources taken out wait for a time; one still in its
         * startup tests is tried on the next read. */
        for (size_t i = 0; i < s->n; i++)
                if (!s->sources[i].healthy && !s->sources[i].starting)
                        t = MIN(t, s->sources[i].retry_at);
        return t;
}

bool source_set_any_healthy(const SourceSet *s) {
        for (size_t i = 0; i < s->n; i++)
                if (s->sources[i].healthy)
                        return true;
        return false;
}
