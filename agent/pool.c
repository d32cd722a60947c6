/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <sys/random.h>

#include "fileio.h"
#include "pool.h"

static int kernel_is_ready(Pool *p) {
        uint8_t b;

        /* The one readiness signal that works on every kernel: on 5.18+
         * entropy_avail is capped at 256 and says nothing about it. */
        for (;;) {
                if (getrandom(&b, 1, GRND_NONBLOCK) >= 0)
                        return 1;
                if (errno == EAGAIN)
                        return 0;
                if (errno != EINTR)
                        return -errno;
        }
}

static int kernel_add(Pool *p, const void *buf, size_t n, unsigned credit_bits) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (n > 4096)
                return -EINVAL;

        if (credit_bits == 0) {
                /* Writing to /dev/urandom mixes without credit and needs
                 * no privilege: the initial seed works for any user. */
                fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC | O_NOCTTY);
                if (fd < 0)
                        return -errno;
                return loop_write(fd, buf, n);
        }

        /* struct rand_pool_info ends in a flexible array: the request is
         * the header followed by the bytes, in one aligned buffer. */
        union {
                struct rand_pool_info info;
                uint8_t bytes[sizeof(struct rand_pool_info) + 4096];
        } req = {};

        if (credit_bits > n * 8)
                return -EINVAL;
        req.info.entropy_count = (int) credit_bits;
        req.info.buf_size = (int) n;
        memcpy(req.bytes + sizeof(struct rand_pool_info), buf, n);

        fd = open("/dev/random", O_WRONLY | O_CLOEXEC | O_NOCTTY);
        r = fd < 0 || ioctl(fd, RNDADDENTROPY, &req) < 0 ? -errno : 0;

        /* The request held pool input: don't leave it on the stack. */
        explicit_bzero(&req, sizeof req);
        return r;
}

static int kernel_wait_ready(Pool *p) {
        uint8_t b;

        /* Blocking here is the point: on 5.4+ kernels a blocked
         * getrandom() runs the kernel's jitter-entropy seeding. */
        while (getrandom(&b, 1, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

static int kernel_reseed(Pool *p) {
        _cleanup_close_ int fd = open("/dev/random", O_WRONLY | O_CLOEXEC | O_NOCTTY);

        if (fd < 0)
                return -errno;
        /* Since 5.18 the kernel reseeds from the input pool whatever its
         * entropy count says; before, only once it held enough credit,
         * which the caller has just given it. */
        if (ioctl(fd, RNDRESEEDCRNG) < 0)
                return -errno;
        return 0;
}

static const PoolOps kernel_ops = {
        .is_ready = kernel_is_ready,
        .add = kernel_add,
        .wait_ready = kernel_wait_ready,
        .reseed = kernel_reseed,
};

static Pool kernel_pool = { .ops = &kernel_ops };

Pool *pool_kernel(void) {
        return &kernel_pool;
}
