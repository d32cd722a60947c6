/* SPDX-License-Identifier: MIT */
/* The split-ring walker (device/virtqueue.c) over guest memory the input
 * is: descriptor tables, available rings, indirect tables and indices
 * all come from a hostile guest.  Guest RAM here is a heap buffer of
 * exactly the input's size, split into one or two regions, so
 * AddressSanitizer sees any byte read or written outside it (a mapping
 * would hide a small overrun in its last page).
 *
 * Input: a header, then guest RAM (the rest).
 *   u8  ring size, log2 (mod 16: 1 to 32768)
 *   u8  flags: 1 indirect descriptors, 2 EVENT_IDX, 4 take the used
 *       index from memory first (a restarted ring), 8 the second region
 *       follows the first in guest-physical space (buffers may span the
 *       two), else it sits at 4 GiB
 *   u16 last available index   u16 used index
 *   u16 buffers per call (0: the ring's size)
 *   u16 bytes fill() gives before it runs dry (0: no end)
 *   u16 where the second region starts in RAM (0 or past the end: one)
 *   u32 descriptor table, available ring, used ring: front-end
 *       addresses, as offsets into RAM
 *   u8  calls to make (1 to 4)
 *
 * What must hold: no access outside guest RAM, and every call either
 * fails with a reason or does what it says: the indices move by the
 * buffers it served, a buffer gets at most VIRTQ_FILL_MAX bytes, and it
 * stops within its budget. */
#include <errno.h>

#include "fuzz.h"
#include "virtqueue.h"

#define HEADER_SIZE 25
/* Front-end addresses are not guest-physical ones: a mix-up shows. */
#define UVA_BASE UINT64_C(0x7f0000000000)
#define HIGH_GPA (UINT64_C(1) << 32)

static size_t budget_left;
static bool dry;

static size_t fill(void *userdata, uint8_t *buf, size_t n) {
        size_t k = dry ? MIN(n, budget_left) : n;

        /* Writes every byte it claims: ASan checks the range is RAM. */
        memset(buf, 0xa5, k);
        if (dry)
                budget_left -= k;
        return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        FuzzInput in = { .p = data, .left = size };
        GuestMemory mem = {};
        VirtQueue vq = {};
        uint8_t log2, flags, calls;
        uint16_t budget, fill_bytes, split;
        uint8_t *ram;
        size_t ram_size;
        int r;

        fuzz_setup();
        if (size < HEADER_SIZE)
                return 0;

        log2 = fuzz_u8(&in);
        flags = fuzz_u8(&in);
        vq.num = 1U << (log2 % 16);
        vq.indirect = flags & 1;
        vq.event_idx = flags & 2;
        vq.last_avail_idx = fuzz_u16(&in);
        vq.used_idx = fuzz_u16(&in);
        budget = fuzz_u16(&in);
        fill_bytes = fuzz_u16(&in);
        split = fuzz_u16(&in);
        vq.desc_uva = UVA_BASE + fuzz_u32(&in);
        vq.avail_uva = UVA_BASE + fuzz_u32(&in);
        vq.used_uva = UVA_BASE + fuzz_u32(&in);
        vq.have_addr = true;
        calls = 1 + fuzz_u8(&in) % 4;

        ram_size = in.left;
        if (ram_size == 0)
                return 0;
        /* A copy of exactly its size: the fill writes into it. */
        ram = malloc(ram_size);
        if (!ram)
                abort();
        memcpy(ram, in.p, ram_size);

        /* No mapping of our own: the regions point into the heap buffer. */
        if (split == 0 || split >= ram_size) {
                mem.regions[0] = (GuestRegion) { .gpa = 0, .size = ram_size, .uva = UVA_BASE, .fd = -EBADF,
                                                 .host = ram };
                mem.n = 1;
        } else {
                mem.regions[0] = (GuestRegion) { .gpa = 0, .size = split, .uva = UVA_BASE, .fd = -EBADF, .host = ram };
                mem.regions[1] = (GuestRegion) {
                        .gpa = flags & 8 ? split : HIGH_GPA,
                        .size = ram_size - split,
                        .uva = UVA_BASE + split,
                        .fd = -EBADF,
                        .host = ram + split,
                };
                mem.n = 2;
        }

        r = virtqueue_map(&vq, &mem);
        if (r < 0) {
                log_debug("fuzz: %s", vq.error);
                fuzz_check(r == -EFAULT && vq.error[0], "map failed with %d: '%s'", r, vq.error);
                goto out;
        }
        if (flags & 4)
                virtqueue_sync_used(&vq);

        dry = fill_bytes != 0;
        budget_left = fill_bytes;
        for (unsigned c = 0; c < calls; c++) {
                uint16_t avail_before = vq.last_avail_idx, used_before = vq.used_idx;
                unsigned want = budget ? budget : vq.num;
                VirtqRun run = { .served = UINT32_MAX };

                vq.error[0] = 0;
                r = virtqueue_process(&vq, &mem, want, fill, NULL, &run);
                if (r < 0) {
                        log_debug("fuzz: call %u failed: %s", c, vq.error);
                        fuzz_check((r == -EFAULT || r == -EBADMSG || r == -ELOOP) && vq.error[0],
                                   "failed with %d: '%s'", r, vq.error);
                        fuzz_check(run.served == UINT32_MAX, "a failed call wrote its result");
                        break;
                }
                fuzz_check(run.served <= want, "served %u buffers, the budget was %u", run.served, want);
                fuzz_check((uint16_t) (vq.last_avail_idx - avail_before) == run.served &&
                                   (uint16_t) (vq.used_idx - used_before) == run.served,
                           "served %u, the indices moved %u and %u", run.served,
                           (uint16_t) (vq.last_avail_idx - avail_before), (uint16_t) (vq.used_idx - used_before));
                fuzz_check(run.bytes <= (uint64_t) run.served * VIRTQ_FILL_MAX, "%llu bytes in %u buffers",
                           (unsigned long long) run.bytes, run.served);
                fuzz_check(!run.signal || run.served > 0, "a signal with nothing served");
                log_debug("fuzz: call %u served %u buffers with %llu bytes%s%s.", c, run.served,
                          (unsigned long long) run.bytes, run.starved ? ", starved" : "", run.more ? ", more" : "");
        }

out:
        free(ram);
        return 0;
}
