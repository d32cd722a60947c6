/* SPDX-License-Identifier: MIT */
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

bool vm_fork_watch_acts(const KmsgRecord *r, bool have_last, uint64_t last) {
        return kmsg_record_is_vm_fork(r) && (!have_last || r->seq > last);
}

int vm_fork_watch(int fd, bool have_last, uint64_t last, int (*on_fork)(const KmsgRecord *r, void *userdata),
                  void *userdata) {
        /* A record is at most 8 KiB less its header (printk's limit);
         * a shorter buffer makes read() fail with EINVAL. */
        char buf[8192 + 512];

        for (;;) {
                ssize_t k = read(fd, buf, sizeof buf);
                KmsgRecord r;

                if (k < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (k < 0 && errno == EPIPE) {
                        log_warning("Kernel log records were overwritten before they were read: a VM generation "
                                    "change among them would be missed.");
                        continue;
                }
                if (k < 0)
                        return log_error_errno(errno, "Failed to read the kernel log: %m");
                if (k == 0)
                        return 0;
                if (kmsg_record_parse(buf, (size_t) k, &r) < 0 || !vm_fork_watch_acts(&r, have_last, last))
                        continue;
                have_last = true;
                last = r.seq;
                int q = on_fork(&r, userdata);
                if (q < 0)
                        log_error_errno(q, "Failed to act on the VM generation change (kernel log record %" PRIu64
                                        "): %m", r.seq);
        }
}
