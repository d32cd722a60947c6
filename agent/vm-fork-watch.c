/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <inttypes.h>
#include <unistd.h>

#include "log.h"
#include "vm-fork-watch.h"

/* One unsigned decimal field ending at sep; advances *p past sep. */
static bool parse_field(const char **p, const char *end, char sep, uint64_t *ret) {
        uint64_t v = 0;
        const char *q = *p;

        if (q >= end || *q < '0' || *q > '9')
                return false;
        for (; q < end && *q >= '0' && *q <= '9'; q++) {
                if (v > (UINT64_MAX - 9) / 10)
                        return false;
                v = v * 10 + (uint64_t) (*q - '0');
        }
        if (q >= end || *q != sep)
                return false;
        *p = q + 1;
        *ret = v;
        return true;
}

int kmsg_record_parse(const char *buf, size_t n, KmsgRecord *ret) {
        const char *p = buf, *end = buf + n, *semi, *nl;
        uint64_t pri, seq, usec;

        semi = memchr(buf, ';', n);
        if (!semi)
                return -EBADMSG;
        if (!parse_field(&p, semi, ',', &pri) || !parse_field(&p, semi, ',', &seq))
                return -EBADMSG;
        /* USEC, then FLAGS (and what newer kernels add) up to the ';',
         * which we do not need. */
        if (!parse_field(&p, semi + 1, ',', &usec) && !parse_field(&p, semi + 1, ';', &usec))
                return -EBADMSG;
        nl = memchr(semi + 1, '\n', (size_t) (end - semi - 1));
        *ret = (KmsgRecord) {
                .facility = (unsigned) (pri >> 3),
                .seq = seq,
                .usec = usec,
                .message = semi + 1,
                .message_len = (size_t) ((nl ?: end) - (semi + 1)),
        };
        return 0;
}

bool kmsg_record_is_vm_fork(const KmsgRecord *r) {
        return r->facility == 0 && r->message_len == strlen(VM_FORK_KMSG_MESSAGE) &&
               memcmp(r->message, VM_FORK_KMSG_MESSAGE, r->message_len) == 0;
}

int kmsg_open_at_end(void) {
        int fd = open("/dev/kmsg", O_RDONLY | O_CLOEXEC | O_NOCTTY);

        if (fd < 0)
                return -errno;
        if (lseek(fd, 0, SEEK_END) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

int vm_fork_watch(int fd, int (*on_fork)(const KmsgRecord *r, void *userdata), void *userdata) {
        /* A record is at most 8 KiB less its header (printk's limit);
         * a shorter buffer makes read() fail with EINVAL. */
        char buf[8192 + 512];

        for (;;) {
                ssize_t k = read(fd, buf, sizeof buf);
                KmsgRecord r;

                if (k < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (k < 0 && errno == EPIPE) {
                        log_debug("Kernel log records were overwritten before they were read.");
                        continue;
                }
                if (k < 0)
                        return log_error_errno(errno, "Failed to read the kernel log: %m");
                if (k == 0)
                        return 0;
                if (kmsg_record_parse(buf, (size_t) k, &r) < 0 || !kmsg_record_is_vm_fork(&r))
                        continue;
                int q = on_fork(&r, userdata);
                if (q < 0)
                        log_error_errno(q, "Failed to act on the VM generation change (kernel log record %" PRIu64
                                        "): %m", r.seq);
        }
}
