/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "blocking-reader.h"
#include "fileio.h"
#include "log.h"
#include "rdseed.h"
#include "seed-plan.h"
#include "seed.h"
#include "startup-test.h"

_Static_assert(_SOURCE_KIND_MAX <= SEED_PLAN_SOURCES_MAX, "every source fits in a plan");

/* When already ready, the initial seed may not hold the boot for long. */
#define INITIAL_SEED_BUDGET_USEC (1 * USEC_PER_SEC)
/* RNDADDENTROPY takes one buffer a call; keep each small. */
#define ADD_PIECE 512

static const char *const source_status_table[_SOURCE_STATUS_MAX] = {
        [SOURCE_NOT_TRIED] = "not-needed",
        [SOURCE_UNAVAILABLE] = "unavailable",
        [SOURCE_USED] = "used",
        [SOURCE_FAILED] = "failed",
        [SOURCE_ENDED] = "ended",
        [SOURCE_NO_DATA] = "no-data",
};

const char *source_status_to_string(SourceStatus s) {
        if (s < 0 || s >= _SOURCE_STATUS_MAX)
                return NULL;
        return source_status_table[s];
}

static const char *const seed_result_table[_SEED_RESULT_MAX] = {
        [SEED_RESULT_READY] = "ready",
        [SEED_RESULT_TIMEOUT] = "timeout",
        [SEED_RESULT_CONTINUED] = "continued",
        [SEED_RESULT_DENIED] = "permission-denied",
        [SEED_RESULT_ERROR] = "error",
};

const char *seed_result_to_string(SeedResult r) {
        if (r < 0 || r >= _SEED_RESULT_MAX)
                return NULL;
        return seed_result_table[r];
}

SeedResult seed_result_for(int r, const AgentConfig *c) {
        if (r >= 0)
                return SEED_RESULT_READY;
        if (r == -ETIMEDOUT)
                return c->on_timeout == ON_TIMEOUT_CONTINUE ? SEED_RESULT_CONTINUED : SEED_RESULT_TIMEOUT;
        if (r == -EPERM || r == -EACCES)
                return SEED_RESULT_DENIED;
        return SEED_RESULT_ERROR;
}

/* Shared by the kernel source and its thread, freed by whichever lets go
 * last: the thread may still be blocked when the gate is done with it,
 * and returns (or goes with the process) later. */
typedef struct KernelWaiter {
        atomic_int refs;
        Pool *pool;
        atomic_bool done;
        atomic_int result;
        usec_t started, finished;
} KernelWaiter;

typedef struct Source {
        SourceReport *report;
        bool active;
        /* Device sources: /dev/hwrng is read by a thread of its own
         * (blocking-reader.h says why), so the gate keeps its deadline
         * whatever the device does. */
        BlockingReader *reader;
        bool credit_ok;     /* the device may earn credit at all */
        /* For seed_plan(): when its turn began, its last step and what
         * it gave, the last step that earned credit. */
        usec_t turn, last_step, last_credit;
        SeedStep last;
        unsigned burst;
        HealthTest health;
        /* Bytes held back during the startup test (startup-test.h):
         * nothing is credited before it has passed. */
        uint8_t *pending;
        size_t n_pending, pending_size;
        KernelWaiter *waiter;
        bool thread_running;
        pthread_t thread;
} Source;

static void kernel_waiter_unref(KernelWaiter *w) {
        if (atomic_fetch_sub(&w->refs, 1) == 1)
                free(w);
}

static void *kernel_waiter_thread(void *userdata) {
        KernelWaiter *w = userdata;
        int r = w->pool->ops->wait_ready(w->pool);

        w->finished = now_usec(CLOCK_MONOTONIC);
        atomic_store(&w->result, r);
        atomic_store(&w->done, true);
        kernel_waiter_unref(w);
        return NULL;
}

static int source_fail(Source *s, SourceStatus status, const char *format, ...) _printf_(3, 4);
static int source_fail(Source *s, SourceStatus status, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(s->report->detail, sizeof s->report->detail, format, ap);
        va_end(ap);
        s->report->status = status;
        s->active = false;
        s->reader = blocking_reader_free(s->reader);
        /* Held-back bytes are dealt with in source_close(): dropped if
         * the health tests failed, mixed without credit otherwise. */
        return 0;
}

static void source_unavailable(Source *s, const char *why, const char *name) {
        s->report->status = SOURCE_UNAVAILABLE;
        if (name)
                (void) snprintf(s->report->detail, sizeof s->report->detail, "%s '%s'", why, name);
        else
                (void) snprintf(s->report->detail, sizeof s->report->detail, "%s", why);
        s->active = false;
}

static int open_hwrng(const SeedContext *ctx, Source *s) {
        _cleanup_free_ char *p = path_join_root(ctx->root, "/dev/hwrng");
        _cleanup_close_ int dev = -EBADF;
        struct stat st;

        if (!p)
                return -ENOMEM;
        dev = open(p, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (dev < 0)
                return -errno;
        if (fstat(dev, &st) < 0)
                return -errno;
        /* Only the kernel's hwrng character device (misc 10:183) earns
         * credit; anything else (a file under --root, say) is mixed in
         * at most.  Tests with a fake pool may allow files. */
        s->credit_ok = ctx->credit_files ||
                       (S_ISCHR(st.st_mode) && major(st.st_rdev) == 10 && minor(st.st_rdev) == 183);

        /* A pipe of one page: the thread reads at most a few chunks ahead
         * of what the gate takes, so little of the host's entropy is
         * wasted. */
        return blocking_reader_new(TAKE_FD(dev), ctx->config->chunk, 4096, &s->reader);
}

/* Decides whether a source can run at all, and opens it. */
static int source_open(const SeedContext *ctx, Source *s) {
        const VirtioRng *v = ctx->virtio;
        const SourceConfig *sc = &ctx->config->src[s->report->kind];
        int r;

        s->active = true;
        s->credit_ok = true;
        if (s->report->kind != SOURCE_KERNEL)
                s->report->quality = sc->quality;
        s->report->min_entropy = sc->min_entropy;

        r = health_init(&s->health, sc->min_entropy, HEALTH_ALPHA_LOG2_DEFAULT);
        if (r < 0)
                return r;
        s->report->rct_cutoff = s->health.rct_cutoff;
        s->report->apt_cutoff = s->health.apt_cutoff;

        switch (s->report->kind) {
        case SOURCE_VIRTIO:
                if (!v->found)
                        return source_unavailable(s, "no virtio-rng device", NULL), 0;
                if (!v->bound || !v->hwrng[0])
                        return source_unavailable(s, "not bound to virtio_rng: device", v->device), 0;
                if (!streq(v->current, v->hwrng))
                        return source_unavailable(s, "not the current hwrng, which is", v->current), 0;
                if (!v->hwrng_node)
                        return source_unavailable(s, "no /dev/hwrng", NULL), 0;
                (void) snprintf(s->report->detail, sizeof s->report->detail, "%s (%s) as %s", v->device,
                                v->transport, v->hwrng);
                break;
        case SOURCE_HWRNG:
                if (!v->current[0])
                        return source_unavailable(s, "no hwrng is registered", NULL), 0;
                if (v->hwrng[0] && streq(v->current, v->hwrng))
                        return source_unavailable(s, "the current hwrng is the virtio one:", v->current), 0;
                if (!v->hwrng_node)
                        return source_unavailable(s, "no /dev/hwrng", NULL), 0;
                (void) snprintf(s->report->detail, sizeof s->report->detail, "%s", v->current);
                break;
        case SOURCE_CPU:
                if (!ctx->cpu_read && !rdseed_supported())
                        return source_unavailable(s, "the CPU has no RDSEED", NULL), 0;
                (void) snprintf(s->report->detail, sizeof s->report->detail, "RDSEED");
                return 0;
        case SOURCE_KERNEL:
                if (!ctx->pool->ops->wait_ready)
                        return source_unavailable(s, "the pool cannot be waited for", NULL), 0;
                (void) snprintf(s->report->detail, sizeof s->report->detail, "getrandom() jitter seeding");
                return 0;
        default:
                return -EINVAL;
        }

        r = open_hwrng(ctx, s);
        if (r < 0) {
                errno = -r;
                return source_fail(s, SOURCE_FAILED, "cannot open /dev/hwrng: %m");
        }
        if (!s->credit_ok && !ctx->no_credit && s->report->quality > 0) {
                log_warning("'/dev/hwrng' is not the kernel's hwrng device; its bytes are mixed in without credit.");
                (void) strncat(s->report->detail, "; not a character device: no credit",
                               sizeof s->report->detail - strlen(s->report->detail) - 1);
        }
        return 0;
}

/* Whether what s gives the pool earns credit: at quality 0, or without
 * the right to credit, its bytes are only mixed in. */
static bool source_earns(const SeedContext *ctx, const Source *s) {
        return s->credit_ok && !ctx->no_credit && s->report->quality > 0;
}

static int pool_add_credited(const SeedContext *ctx, Source *s, const uint8_t *buf, size_t n) {
        SourceReport *rep = s->report;
        bool credit = source_earns(ctx, s);

        for (size_t o = 0; o < n; o += ADD_PIECE) {
                size_t l = MIN((size_t) ADD_PIECE, n - o);
                /* bytes * 8 * quality / 1024, as the hwrng core credits. */
                unsigned bits = credit ? (unsigned) ((uint64_t) l * 8 * rep->quality / 1024) : 0;
                int r = ctx->pool->ops->add(ctx->pool, buf + o, l, bits);
                if (r < 0)
                        return r;
                rep->mixed_bytes += l;
                rep->credited_bits += bits;
        }
        return 0;
}

/* Bytes now, -EAGAIN for none yet, 0 at end of file, or -errno. */
static ssize_t source_read(const SeedContext *ctx, Source *s, uint8_t *buf, size_t n) {
        if (s->report->kind == SOURCE_CPU)
                return ctx->cpu_read ? ctx->cpu_read(buf, n) : (ssize_t) rdseed_read(buf, n);
        return blocking_reader_read(s->reader, buf, n);
}

/* Holds n more bytes back.  The buffer grows without realloc(), which
 * would leave copies of them in freed memory. */
static int source_hold(Source *s, const uint8_t *buf, size_t n) {
        if (s->n_pending + n > s->pending_size) {
                /* Room for the whole startup test and a step past it. */
                size_t size = MAX(s->n_pending + n, (size_t) startup_test_samples(&s->health) + n);
                uint8_t *p = malloc(size);

                if (!p)
                        return -ENOMEM;
                if (s->pending) {
                        memcpy(p, s->pending, s->n_pending);
                        explicit_bzero(s->pending, s->n_pending);
                        free(s->pending);
                }
                s->pending = p;
                s->pending_size = size;
        }
        memcpy(s->pending + s->n_pending, buf, n);
        s->n_pending += n;
        return 0;
}

/* Tests the bytes, then gives them to the pool.  With credit, they are
 * held back until the startup test has passed, since nothing may be
 * credited before it; without (a source that earns none, or the kernel
 * source's bytes), they are mixed in at once: there is nothing to hold
 * them back for, and a source that fails a test is dropped all the same.
 * Returns the bytes taken (0 if the source had none now), or -errno from
 * the pool, which stops the gate. */
static ssize_t source_take(const SeedContext *ctx, Source *s, const uint8_t *buf, size_t n, bool credit) {
        HealthResult h;
        int r;

        s->report->bytes += n;
        h = health_feed(&s->health, buf, n);
        if (h != HEALTH_OK) {
                s->report->health = h;
                /* The kernel's own fill thread credits the current hwrng
                 * too: a device we found failing must not make the kernel
                 * ready behind our back. */
                if (s->report->kind == SOURCE_VIRTIO || s->report->kind == SOURCE_HWRNG) {
                        _cleanup_free_ char *q = path_join_root(ctx->root, "/sys/class/misc/hw_random/rng_quality");
                        int w = q ? write_string_file(q, "0") : -ENOMEM;
                        if (w < 0)
                                log_warning_errno(w, "Failed to stop the kernel crediting the failed hwrng: %m");
                        else
                                s->report->kernel_credit_off = true;
                }
                log_warning("Source '%s' failed the %s health test after %llu bytes, dropping it; none of its bytes since "
                            "its last good chunk are used.",
                            source_kind_to_string(s->report->kind), health_result_to_string(h),
                            (unsigned long long) s->report->bytes);
                source_fail(s, SOURCE_FAILED, "failed the %s health test after %llu bytes",
                            health_result_to_string(h), (unsigned long long) s->report->bytes);
                return (ssize_t) n;
        }
        s->report->status = SOURCE_USED;

        if (!credit) {
                r = ctx->pool->ops->add(ctx->pool, buf, n, 0);
                if (r < 0)
                        return r;
                s->report->mixed_bytes += n;
                return (ssize_t) n;
        }

        if (startup_test_state(&s->health) == STARTUP_TEST_RUNNING || s->n_pending > 0) {
                r = source_hold(s, buf, n);
                if (r < 0)
                        return r;
                if (startup_test_state(&s->health) == STARTUP_TEST_RUNNING)
                        return (ssize_t) n;

                r = pool_add_credited(ctx, s, s->pending, s->n_pending);
                explicit_bzero(s->pending, s->n_pending);
                s->n_pending = 0;
                return r < 0 ? r : (ssize_t) n;
        }

        r = pool_add_credited(ctx, s, buf, n);
        return r < 0 ? r : (ssize_t) n;
}

/* One step: the kernel source starts its thread, a device source does
 * one non-blocking read.  Returns what it gave (a SeedStep), or -errno
 * from the pool. */
static int source_step(const SeedContext *ctx, Source *s) {
        uint8_t buf[4096];
        size_t want = MIN((size_t) ctx->config->chunk, sizeof buf);
        uint64_t credited = s->report->credited_bits;
        size_t pending = s->n_pending;
        ssize_t k, r;

        if (s->report->kind == SOURCE_KERNEL) {
                if (!s->waiter) {
                        s->waiter = calloc(1, sizeof *s->waiter);
                        if (!s->waiter)
                                return -ENOMEM;
                        atomic_init(&s->waiter->refs, 2);
                        s->waiter->pool = ctx->pool;
                        s->waiter->started = now_usec(CLOCK_MONOTONIC);
                        r = pthread_create(&s->thread, NULL, kernel_waiter_thread, s->waiter);
                        if (r != 0) {
                                s->waiter = mfree(s->waiter);
                                errno = (int) r;
                                return source_fail(s, SOURCE_FAILED, "cannot start a thread: %m");
                        }
                        s->thread_running = true;
                        s->report->status = SOURCE_USED;
                        log_debug("Blocking in getrandom() in a thread to start the kernel's own seeding.");
                }
                return SEED_STEP_NOTHING;
        }

        k = source_read(ctx, s, buf, want);
        if (k == -EAGAIN || k == -EWOULDBLOCK) {
                if (s->report->status == SOURCE_NOT_TRIED)
                        s->report->status = SOURCE_NO_DATA;
                return SEED_STEP_NOTHING;
        }
        if (k < 0) {
                errno = (int) -k;
                return source_fail(s, SOURCE_FAILED, "read failed: %m");
        }
        if (k == 0) {
                if (s->report->kind == SOURCE_CPU) {
                        if (s->report->status == SOURCE_NOT_TRIED)
                                s->report->status = SOURCE_NO_DATA;
                        return SEED_STEP_NOTHING; /* RDSEED ran dry for now */
                }
                return source_fail(s, SOURCE_ENDED, "the device stopped delivering after %llu bytes",
                                   (unsigned long long) s->report->bytes);
        }

        r = source_take(ctx, s, buf, (size_t) k, source_earns(ctx, s));
        explicit_bzero(buf, (size_t) k);
        if (r < 0)
                return (int) r;
        if (s->report->credited_bits > credited || (s->n_pending > pending && source_earns(ctx, s)))
                return SEED_STEP_CREDITED;
        /* Mixed in without credit; or dropped with the source, when they
         * failed a health test. */
        return SEED_STEP_MIXED;
}

static void source_close(const SeedContext *ctx, Source *s) {
        /* A thread still blocked in read() is let go, not waited for. */
        s->reader = blocking_reader_free(s->reader);

        /* Bytes still held back passed every test so far, just not enough
         * of them to earn credit: they may still be mixed in, for free. */
        if (s->n_pending > 0 && s->report->health == HEALTH_OK &&
            ctx->pool->ops->add(ctx->pool, s->pending, s->n_pending, 0) >= 0)
                s->report->mixed_bytes += s->n_pending;
        if (s->pending)
                explicit_bzero(s->pending, s->n_pending);
        s->pending = mfree(s->pending);
        s->n_pending = s->pending_size = 0;

        if (s->thread_running) {
                if (atomic_load(&s->waiter->done)) {
                        int r = atomic_load(&s->waiter->result);

                        (void) pthread_join(s->thread, NULL);
                        s->report->wait_usec = s->waiter->finished - s->waiter->started;
                        if (r < 0) {
                                errno = -r;
                                (void) snprintf(s->report->detail, sizeof s->report->detail, "getrandom() failed: %m");
                                s->report->status = SOURCE_FAILED;
                        }
                } else {
                        /* Still blocked in getrandom(): it cannot be
                         * cancelled; it returns when the pool is ready or
                         * goes with the process. */
                        s->report->wait_usec = now_usec(CLOCK_MONOTONIC) - s->waiter->started;
                        (void) pthread_detach(s->thread);
                }
                kernel_waiter_unref(s->waiter);
                s->thread_running = false;
                s->waiter = NULL;
        }
}

static void log_progress(const SeedContext *ctx, Source *src, unsigned n, usec_t now, usec_t deadline) {
        char line[512];
        size_t o = 0;

        for (unsigned i = 0; i < n && o < sizeof line; i++) {
                const SourceReport *r = src[i].report;
                int k;

                if (!src[i].active)
                        continue;
                if (r->kind == SOURCE_KERNEL)
                        k = snprintf(line + o, sizeof line - o, "%skernel seeding itself", o ? ", " : "");
                else
                        k = snprintf(line + o, sizeof line - o, "%s%s %llu bits credited", o ? ", " : "",
                                     source_kind_to_string(r->kind), (unsigned long long) r->credited_bits);
                if (k > 0)
                        o += (size_t) k;
        }
        if (o == 0)
                (void) snprintf(line, sizeof line, "no source left");

        log_console_status("Waiting for the kernel's random number generator: %s, %llu s left.", line,
                    (unsigned long long) ((deadline - now + USEC_PER_SEC - 1) / USEC_PER_SEC));
}

/* Already ready: mix a sample from the first device source into the pool
 * without credit, so even a ready kernel gets something from the host. */
static int initial_seed(const SeedContext *ctx, Source *src, unsigned n, SeedOutcome *ret) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + MIN(ctx->config->timeout, INITIAL_SEED_BUDGET_USEC);

        for (unsigned i = 0; i < n; i++) {
                Source *s = &src[i];
                uint8_t buf[4096];
                size_t want = MIN((size_t) ctx->config->initial_seed, sizeof buf), got = 0;
                int r;

                if (s->report->kind == SOURCE_KERNEL || want == 0)
                        continue;
                r = source_open(ctx, s);
                if (r < 0)
                        return r;
                if (!s->active)
                        continue;

                while (got < want && s->active) {
                        ssize_t k = source_read(ctx, s, buf + got, want - got);
                        if (k == -EAGAIN || k == -EWOULDBLOCK || k == 0) {
                                if (now_usec(CLOCK_MONOTONIC) >= deadline || (k == 0 && s->report->kind != SOURCE_CPU))
                                        break;
                                (void) nanosleep(&(struct timespec) { .tv_nsec = SEED_TICK_USEC * 1000 }, NULL);
                                continue;
                        }
                        if (k < 0) {
                                errno = (int) -k;
                                source_fail(s, SOURCE_FAILED, "read failed: %m");
                                break;
                        }
                        got += (size_t) k;
                }
                if (got > 0 && s->active) {
                        ssize_t k = source_take(ctx, s, buf, got, false);
                        explicit_bzero(buf, got);
                        if (k < 0)
                                return (int) k;
                }
                if (s->report->mixed_bytes > 0) {
                        ret->initial_seed = true;
                        return 0;
                }
        }
        return 0;
}

/* What the sources have given towards ctx->reseed_bits: their credit or,
 * for a source that earns none (quality 0, or nothing may be credited:
 * --root), its bytes' worth.  The CRNG is ready: what a fork needs is
 * input the clones do not share, and waiting out the timeout for credit
 * no source can earn would keep every clone on the keys they share. */
static bool reseed_done(const SeedContext *ctx, const Source *src, unsigned n) {
        uint64_t bits = 0;

        for (unsigned i = 0; i < n; i++)
                bits += source_earns(ctx, &src[i]) ? src[i].report->credited_bits : src[i].report->mixed_bytes * 8;
        return bits >= ctx->reseed_bits;
}

static bool any_active(const Source *src, unsigned n) {
        for (unsigned i = 0; i < n; i++)
                if (src[i].active)
                        return true;
        return false;
}

int seed_run(const SeedContext *ctx, SeedOutcome *ret) {
        const AgentConfig *c = ctx->config;
        usec_t start = ctx->start_usec ?: now_usec(CLOCK_MONOTONIC), now, deadline, next_progress;
        Source src[_SOURCE_KIND_MAX] = {};
        unsigned n = c->sources.n;
        bool reseed = ctx->reseed_bits > 0;
        int r, ready;

        *ret = (SeedOutcome) { .ready_usec = USEC_INFINITY, .ready_boottime_usec = USEC_INFINITY, .n_sources = n };
        for (unsigned i = 0; i < n; i++) {
                SourceKind k = (SourceKind) c->sources.items[i];
                HealthTest h;

                ret->sources[i].kind = k;
                ret->sources[i].quality = k == SOURCE_KERNEL ? 0 : c->src[k].quality;
                ret->sources[i].min_entropy = c->src[k].min_entropy;
                if (health_init(&h, c->src[k].min_entropy, HEALTH_ALPHA_LOG2_DEFAULT) >= 0) {
                        ret->sources[i].rct_cutoff = h.rct_cutoff;
                        ret->sources[i].apt_cutoff = h.apt_cutoff;
                }
                src[i].report = &ret->sources[i];
        }

        ready = ctx->pool->ops->is_ready(ctx->pool);
        if (ready < 0)
                return log_error_errno(ready, "Failed to ask the kernel whether its CRNG is ready: %m");
        ret->ready_before = ready > 0;
        ret->ready_at_start = ctx->ready_at_start >= 0 ? ctx->ready_at_start > 0 : ret->ready_before;

        if (ret->ready_before && !reseed) {
                r = initial_seed(ctx, src, n, ret);
                for (unsigned i = 0; i < n; i++)
                        source_close(ctx, &src[i]);
                now = now_usec(CLOCK_MONOTONIC);
                ret->ready_after = true;
                ret->ready_usec = 0;
                ret->elapsed_usec = now - start;
                ret->ready_boottime_usec = now_usec(CLOCK_BOOTTIME);
                if (r < 0)
                        return r == -EPERM ? r : log_error_errno(r, "Failed to mix the initial seed: %m");
                return 0;
        }

        if (!reseed)
                log_info("The kernel's random number generator is not ready yet; seeding it.");
        else
                log_info("Mixing %llu bits of fresh entropy into the kernel's pool, then reseeding its random "
                         "number generator.", (unsigned long long) ctx->reseed_bits);

        for (unsigned i = 0; i < n; i++) {
                if (reseed && ret->ready_before && src[i].report->kind == SOURCE_KERNEL)
                        /* Its getrandom() returns at once: nothing fresh. */
                        continue;
                r = source_open(ctx, &src[i]);
                if (r < 0)
                        goto finish;
                if (src[i].report->status == SOURCE_UNAVAILABLE)
                        log_info("Source '%s' is unavailable: %s.", source_kind_to_string(src[i].report->kind),
                                 src[i].report->detail);
        }

        /* The timeout is the boot's whole budget, counted from the
         * agent's start: waiting for the driver came out of it. */
        now = now_usec(CLOCK_MONOTONIC);
        deadline = start + c->timeout;
        next_progress = now + USEC_PER_SEC;

        for (unsigned i = 0; i < n; i++)
                src[i].turn = src[i].last_step = src[i].last_credit = USEC_INFINITY;

        for (bool first = true;; first = false) {
                SeedPlanSource plan_src[_SOURCE_KIND_MAX];
                SeedPlan plan;

                if (ready < 0) {
                        r = ready;
                        goto finish;
                }
                now = now_usec(CLOCK_MONOTONIC);
                if (ready > 0 && (!reseed || reseed_done(ctx, src, n))) {
                        ret->ready_after = true;
                        ret->ready_usec = now - start;
                        ret->ready_boottime_usec = now_usec(CLOCK_BOOTTIME);
                        r = 0;
                        break;
                }
                /* The first round always happens: with a timeout of 0 the
                 * first source still takes its one step. */
                if (now >= deadline && !first) {
                        ret->timed_out = true;
                        r = -ETIMEDOUT;
                        break;
                }
                if (reseed && !any_active(src, n)) {
                        r = -ENODATA;
                        break;
                }
                if (ctx->progress && now >= next_progress) {
                        log_progress(ctx, src, n, now, deadline);
                        next_progress = now + USEC_PER_SEC;
                }

                for (unsigned i = 0; i < n; i++)
                        plan_src[i] = (SeedPlanSource) {
                                .active = src[i].active,
                                .once = src[i].report->kind == SOURCE_KERNEL,
                                .turn = src[i].turn,
                                .last_step = src[i].last_step,
                                .last = src[i].last,
                                .last_credit = src[i].last_credit,
                                .burst = src[i].burst,
                        };
                seed_plan(plan_src, n, now, &plan);
                if (plan.begin >= 0) {
                        src[plan.begin].turn = now;
                        log_debug("Source '%s' takes its turn.", source_kind_to_string(src[plan.begin].report->kind));
                }

                if (plan.step == 0) {
                        /* Nothing earned credit and nothing is due: sleep
                         * rather than spin, and ask the pool again. */
                        usec_t nap = MIN(plan.wait, deadline > now ? deadline - now : 0);
                        (void) nanosleep(&(struct timespec) { .tv_sec = (time_t) (nap / USEC_PER_SEC),
                                                             .tv_nsec = (long) (nap % USEC_PER_SEC * NSEC_PER_USEC) },
                                         NULL);
                        ready = ctx->pool->ops->is_ready(ctx->pool);
                        continue;
                }

                for (unsigned i = 0; i < n; i++) {
                        int k;

                        if (!(plan.step & (1U << i)))
                                continue;
                        k = source_step(ctx, &src[i]);
                        if (k < 0) {
                                r = k;
                                goto finish;
                        }
                        src[i].last_step = now;
                        src[i].last = (SeedStep) k;
                        src[i].burst = seed_plan_burst(src[i].burst, (SeedStep) k);
                        if (k == SEED_STEP_CREDITED)
                                src[i].last_credit = now;
                        /* Ready after this step: later sources need not
                         * take theirs. */
                        ready = ctx->pool->ops->is_ready(ctx->pool);
                        if (ready < 0 || (ready > 0 && (!reseed || reseed_done(ctx, src, n))))
                                break;
                }
        }

finish:
        for (unsigned i = 0; i < n; i++) {
                source_close(ctx, &src[i]);
                ret->credited_bits += ret->sources[i].credited_bits;
        }
        /* After the sources are closed: what they held back is in the
         * pool by now too.  However seeding ended, a ready CRNG takes
         * what was mixed in at once rather than at its next reseed,
         * minutes away. */
        if (reseed && ctx->pool->ops->reseed && ctx->pool->ops->is_ready(ctx->pool) > 0) {
                int k = ctx->pool->ops->reseed(ctx->pool);
                if (k < 0)
                        log_warning_errno(k, "Failed to reseed the kernel's random number generator: %m");
                else
                        ret->reseeded = true;
                if (k < 0 && r >= 0)
                        r = k;
        }
        ret->elapsed_usec = now_usec(CLOCK_MONOTONIC) - start;
        if (r < 0 && r != -ETIMEDOUT && r != -ENODATA && r != -EPERM && r != -EACCES)
                log_error_errno(r, "Seeding failed: %m");
        return r;
}
