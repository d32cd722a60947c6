/* SPDX-License-Identifier: MIT */
#pragma once

/* Reads a file that may block (/dev/hwrng, a FIFO) in a thread of its
 * own and hands the bytes over a small pipe whose other end never
 * blocks, so that an event loop or a deadline never waits on the device.
 *
 * O_NONBLOCK is no way around this for /dev/hwrng: the hwrng core's
 * rng_dev_read() takes reading_mutex before it looks at O_NONBLOCK, and
 * its own fill thread (hwrng_fillfn) holds that mutex across a blocking
 * read of the device, so a slow TPM or a virtio-rng whose host does not
 * answer stalls every reader.  A thread blocked in read() cannot be
 * interrupted either: the consumer lets go of it instead, and it exits
 * once its read returns, or goes with the process. */

#include <sys/types.h>

#include "macro.h"

typedef struct BlockingReader BlockingReader;

/* The largest chunk the thread reads at once. */
#define BLOCKING_READER_CHUNK_MAX 4096U

/* Starts a thread reading fd in chunks of at most chunk bytes (at most
 * BLOCKING_READER_CHUNK_MAX) into a pipe of about buffer bytes (0: the
 * system's default), which the thread keeps full and no fuller.  fd is
 * taken over in every case, and made blocking: the thread waits in
 * read(), it does not poll.  Returns 0 or -errno. */
int blocking_reader_new(int fd, size_t chunk, size_t buffer, BlockingReader **ret);

/* The consumer's end: non-blocking and close-on-exec, readable when bytes
 * wait or the thread has stopped.  Watch it with epoll or poll; read it
 * with blocking_reader_read(). */
int blocking_reader_fd(const BlockingReader *r);

/* Takes up to n (> 0) of the bytes read so far.  Returns the count, -EAGAIN
 * when none wait now, 0 once the thread met end of file, and the -errno
 * of its read once it failed. */
ssize_t blocking_reader_read(BlockingReader *r, void *buf, size_t n);

/* Lets go without waiting: the thread exits at its next hand-over, or
 * with the process if its read never returns.  Accepts NULL; returns
 * NULL. */
BlockingReader *blocking_reader_free(BlockingReader *r);

static inline void blocking_reader_freep(BlockingReader **r) {
        blocking_reader_free(*r);
}
#define _cleanup_blocking_reader_ _cleanup_(blocking_reader_freep)
