/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "blocking-reader.h"
#include "fileio.h"

/* Shared by the thread and the consumer; the last one to let go frees it.
 * Each side touches only its own descriptors. */
struct BlockingReader {
        atomic_int refs;
        /* Set by the thread before it closes pipe_w, so the consumer that
         * reads end of file from the pipe finds it: errno of the failed
         * read, 0 for end of file. */
        atomic_int error;
        size_t chunk;
        int fd;     /* the thread's */
        int pipe_w; /* the thread's */
        int pipe_r; /* the consumer's */
};

static void blocking_reader_unref(BlockingReader *r) {
        if (atomic_fetch_sub(&r->refs, 1) == 1)
                free(r);
}

static void *blocking_reader_thread(void *userdata) {
        BlockingReader *r = userdata;
        uint8_t buf[BLOCKING_READER_CHUNK_MAX];
        int error = 0;

        for (;;) {
                ssize_t k = read(r->fd, buf, r->chunk);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                /* O_NONBLOCK came back on the shared file
                                 * description.  Nap rather than spin: the
                                 * hwrng has no poll(), which would call it
                                 * readable at once. */
                                (void) nanosleep(&(struct timespec) { .tv_nsec = 10 * 1000 * 1000 }, NULL);
                                continue;
                        }
                        error = errno;
                        break;
                }
                if (k == 0)
                        break;
                /* Blocks while the pipe is full: the thread reads ahead
                 * only as far as the pipe holds.  EPIPE once the consumer
                 * let go. */
                if (loop_write(r->pipe_w, buf, (size_t) k) < 0)
                        break;
                explicit_bzero(buf, (size_t) k);
        }
        explicit_bzero(buf, sizeof buf);
        atomic_store(&r->error, error);
        r->fd = safe_close(r->fd);
        r->pipe_w = safe_close(r->pipe_w);
        blocking_reader_unref(r);
        return NULL;
}

int blocking_reader_new(int fd, size_t chunk, size_t buffer, BlockingReader **ret) {
        _cleanup_close_ int dev = fd;
        BlockingReader *r;
        sigset_t all, saved;
        pthread_t t;
        int pipefd[2], flags, e;

        if (dev < 0 || chunk == 0 || !ret)
                return -EINVAL;
        flags = fcntl(dev, F_GETFL);
        if (flags < 0)
                return -errno;
        if ((flags & O_NONBLOCK) && fcntl(dev, F_SETFL, flags & ~O_NONBLOCK) < 0)
                return -errno;

        if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
                return -errno;
        /* Rounded up to a page by the kernel; a failure (beyond
         * pipe-max-size) leaves the default, which also works. */
        if (buffer > 0)
                (void) fcntl(pipefd[1], F_SETPIPE_SZ, (int) MIN(buffer, (size_t) INT32_MAX));
        /* The thread's end blocks, so that a full pipe parks it. */
        if (fcntl(pipefd[1], F_SETFL, 0) < 0) {
                e = -errno;
                goto fail_pipe;
        }

        r = calloc(1, sizeof *r);
        if (!r) {
                e = -ENOMEM;
                goto fail_pipe;
        }
        atomic_init(&r->refs, 2);
        atomic_init(&r->error, 0);
        r->chunk = MIN(chunk, (size_t) BLOCKING_READER_CHUNK_MAX);
        r->fd = dev;
        r->pipe_w = pipefd[1];
        r->pipe_r = pipefd[0];

        /* The thread takes no signal.  Callers read theirs from a
         * signalfd, which sees only signals that every thread blocks (one
         * left unblocked here would take SIGTERM's default action and end
         * the process); and a write to a pipe whose consumer let go must
         * fail with EPIPE, not raise SIGPIPE. */
        sigfillset(&all);
        (void) pthread_sigmask(SIG_SETMASK, &all, &saved);
        e = pthread_create(&t, NULL, blocking_reader_thread, r);
        (void) pthread_sigmask(SIG_SETMASK, &saved, NULL);
        if (e != 0) {
                free(r);
                e = -e;
                goto fail_pipe;
        }
        (void) pthread_detach(t);
        dev = -EBADF; /* the thread's now */
        *ret = r;
        return 0;

fail_pipe:
        safe_close(pipefd[0]);
        safe_close(pipefd[1]);
        return e;
}

int blocking_reader_fd(const BlockingReader *r) {
        return r->pipe_r;
}

ssize_t blocking_reader_read(BlockingReader *r, void *buf, size_t n) {
        ssize_t k;

        if (n == 0)
                return -EINVAL;
        k = read(r->pipe_r, buf, n);
        if (k < 0)
                return errno == EINTR ? -EAGAIN : -errno;
        /* The pipe ended: the thread stopped, and said why first. */
        if (k == 0)
                return -atomic_load(&r->error);
        return k;
}

BlockingReader *blocking_reader_free(BlockingReader *r) {
        if (!r)
                return NULL;
        /* A thread waiting for room in the pipe gets EPIPE now; one in
         * read() gets it after its read returns. */
        r->pipe_r = safe_close(r->pipe_r);
        blocking_reader_unref(r);
        return NULL;
}
