/* SPDX-License-Identifier: MIT */
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "macro.h"
#include "virtqueue.h"

/* A chain is walked to its end (a loop must be found, not survived), but
 * only this many pieces of it are filled: a buffer may be used in part. */
#define VIRTQ_MAX_SEGS 64U
/* Descriptors one virtqueue_process() call may read before it stops
 * starting new buffers.  One chain can take a whole table (32768), so
 * this bounds the time a hostile guest can keep the event loop busy to
 * about two tables' worth, while an honest driver (one to three
 * descriptors a buffer) is only ever stopped by the buffer budget. */
#define VIRTQ_WORK_MAX VIRTQ_MAX_SIZE
/* Bytes one call may fill before it stops starting new buffers: with no
 * rate limit a guest could post 32768 buffers of 64 KiB over the same
 * pages and hold the loop for seconds; this keeps one call near a
 * millisecond, and the caller comes back (run.more). */
#define VIRTQ_BYTES_MAX (256U * 1024U)

static bool ranges_overlap(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size) {
        /* Both ends were checked not to wrap when the regions were mapped. */
        return a < b + b_size && b < a + a_size;
}

int guest_region_map(int fd, uint64_t gpa, uint64_t size, uint64_t uva, uint64_t mmap_offset, GuestRegion *ret) {
        uint64_t align, start, end;
        struct stat st;
        int keep;
        void *p;

        if (fd < 0)
                return -EBADF;
        if (size == 0 || gpa > UINT64_MAX - size || uva > UINT64_MAX - size || mmap_offset > UINT64_MAX - size)
                return -EINVAL;

        if (fstat(fd, &st) < 0)
                return -errno;
        /* memfd, tmpfs and hugetlbfs files are all regular files; only for
         * those does st_size say how much can be touched without SIGBUS. */
        if (!S_ISREG(st.st_mode))
                return -ENODEV;
        if (st.st_size < 0 || (uint64_t) st.st_size < mmap_offset + size)
                return -ENXIO;

        /* mmap() wants an offset aligned to the page size of the file
         * (hugetlbfs reports its huge page size in st_blksize); QEMU's
         * offsets are aligned, but the protocol does not say so. */
        align = (uint64_t) sysconf(_SC_PAGESIZE);
        if (st.st_blksize > 0 && (uint64_t) st.st_blksize > align &&
            ((uint64_t) st.st_blksize & ((uint64_t) st.st_blksize - 1)) == 0 &&
            (uint64_t) st.st_blksize <= (UINT64_C(1) << 30))
                align = (uint64_t) st.st_blksize;
        start = mmap_offset & ~(align - 1);
        end = mmap_offset + size;
        if (end > UINT64_MAX - (align - 1))
                return -EINVAL;
        end = (end + align - 1) & ~(align - 1);
        if (end - start > SIZE_MAX || start > (uint64_t) INT64_MAX)
                return -EINVAL;

        /* A copy of the fd goes with the mapping: a successor process is
         * handed the region by it (state.h). */
        keep = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (keep < 0)
                return -errno;
        p = mmap(NULL, (size_t) (end - start), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd,
                 (off_t) start);
        if (p == MAP_FAILED) {
                int e = errno;
                safe_close(keep);
                return -e;
        }
        /* Guest RAM does not belong in our core dumps. */
        (void) madvise(p, (size_t) (end - start), MADV_DONTDUMP);

        *ret = (GuestRegion) {
                .gpa = gpa,
                .size = size,
                .uva = uva,
                .mmap_offset = mmap_offset,
                .fd = keep,
                .map = p,
                .map_size = (size_t) (end - start),
                .host = (uint8_t *) p + (mmap_offset - start),
        };
        return 0;
}

void guest_region_unmap(GuestRegion *r) {
        /* Only a mapped region has an fd: a zeroed one's 0 is not it. */
        if (r->map) {
                (void) munmap(r->map, r->map_size);
                (void) safe_close(r->fd);
        }
        *r = (GuestRegion) {};
}

int guest_memory_add(GuestMemory *m, GuestRegion *r) {
        if (m->n >= GUEST_MEMORY_MAX_REGIONS)
                return -E2BIG;

        /* Two regions claiming one address would make translation depend
         * on their order; no front-end sends that. */
        for (unsigned i = 0; i < m->n; i++) {
                const GuestRegion *e = &m->regions[i];

                if (ranges_overlap(r->gpa, r->size, e->gpa, e->size) ||
                    ranges_overlap(r->uva, r->size, e->uva, e->size))
                        return -EEXIST;
        }

        m->regions[m->n++] = *r;
        *r = (GuestRegion) {};
        return 0;
}

int guest_memory_remove(GuestMemory *m, uint64_t gpa, uint64_t size, uint64_t uva) {
        for (unsigned i = 0; i < m->n; i++) {
                GuestRegion *e = &m->regions[i];

                if (e->gpa != gpa || e->size != size || e->uva != uva)
                        continue;

                guest_region_unmap(e);
                memmove(e, e + 1, (m->n - i - 1) * sizeof *e);
                m->n--;
                m->regions[m->n] = (GuestRegion) {};
                return 0;
        }
        return -ENOENT;
}

void guest_memory_clear(GuestMemory *m) {
        for (unsigned i = 0; i < m->n; i++)
                guest_region_unmap(&m->regions[i]);
        m->n = 0;
}

void *guest_memory_gpa(const GuestMemory *m, uint64_t gpa, uint64_t len, uint64_t *ret_len) {
        if (len == 0)
                return NULL;

        for (unsigned i = 0; i < m->n; i++) {
                const GuestRegion *r = &m->regions[i];
                uint64_t off;

                /* Written so that nothing can wrap: gpa - r->gpa only when
                 * gpa >= r->gpa. */
                if (gpa < r->gpa)
                        continue;
                off = gpa - r->gpa;
                if (off >= r->size)
                        continue;

                *ret_len = MIN(len, r->size - off);
                return r->host + off;
        }
        return NULL;
}

void *guest_memory_uva(const GuestMemory *m, uint64_t uva, uint64_t len) {
        if (len == 0)
                return NULL;

        for (unsigned i = 0; i < m->n; i++) {
                const GuestRegion *r = &m->regions[i];
                uint64_t off;

                if (uva < r->uva)
                        continue;
                off = uva - r->uva;
                if (off >= r->size || len > r->size - off)
                        continue;
                return r->host + off;
        }
        return NULL;
}

_printf_(3, 4) static int vq_error(VirtQueue *vq, int error, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(vq->error, sizeof vq->error, format, ap);
        va_end(ap);
        return error;
}

void virtqueue_reset(VirtQueue *vq) {
        *vq = (VirtQueue) {};
}

int virtqueue_map(VirtQueue *vq, const GuestMemory *m) {
        void *desc, *avail, *used;

        vq->mapped = false;
        if (vq->num == 0 || !vq->have_addr)
                return vq_error(vq, -EINVAL, "ring is not configured");

        desc = guest_memory_uva(m, vq->desc_uva, virtq_desc_size(vq->num));
        if (!desc)
                return vq_error(vq, -EFAULT, "descriptor table 0x%" PRIx64 "+%zu is not in guest memory",
                                vq->desc_uva, virtq_desc_size(vq->num));
        avail = guest_memory_uva(m, vq->avail_uva, virtq_avail_size(vq->num));
        if (!avail)
                return vq_error(vq, -EFAULT, "available ring 0x%" PRIx64 "+%zu is not in guest memory",
                                vq->avail_uva, virtq_avail_size(vq->num));
        used = guest_memory_uva(m, vq->used_uva, virtq_used_size(vq->num));
        if (!used)
                return vq_error(vq, -EFAULT, "used ring 0x%" PRIx64 "+%zu is not in guest memory", vq->used_uva,
                                virtq_used_size(vq->num));

        /* The spec's alignments (2.7); the index fields are accessed
         * atomically, which needs at least their natural alignment. */
        if ((uintptr_t) desc % 16 != 0 || (uintptr_t) avail % 2 != 0 || (uintptr_t) used % 4 != 0)
                return vq_error(vq, -EFAULT,
                                "ring addresses are misaligned (descriptors 0x%" PRIx64 ", available 0x%" PRIx64
                                ", used 0x%" PRIx64 ")",
                                vq->desc_uva, vq->avail_uva, vq->used_uva);

        vq->desc = desc;
        vq->avail = avail;
        vq->used = used;
        vq->mapped = true;
        return 0;
}

/* Guest memory changes under us: every field is read once, with an
 * atomic access where the driver publishes with a barrier. */
static uint16_t avail_idx_acquire(const VirtQueue *vq) {
        return le16toh(__atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE));
}

static uint16_t avail_entry(const VirtQueue *vq, unsigned i) {
        return le16toh(__atomic_load_n(&vq->avail->ring[i], __ATOMIC_RELAXED));
}

static uint16_t used_event(const VirtQueue *vq) {
        return le16toh(__atomic_load_n(&vq->avail->ring[vq->num], __ATOMIC_RELAXED));
}

static void set_avail_event(VirtQueue *vq, uint16_t v) {
        uint16_t *p = (uint16_t *) &vq->used->ring[vq->num];

        __atomic_store_n(p, htole16(v), __ATOMIC_RELAXED);
}

void virtqueue_sync_used(VirtQueue *vq) {
        if (!vq->mapped)
                return;
        vq->used_idx = le16toh(__atomic_load_n(&vq->used->idx, __ATOMIC_RELAXED));
        vq->signalled_used_valid = false;
}

static void desc_read(const uint8_t *table, unsigned i, VirtqDesc *ret) {
        VirtqDesc d;

        /* Indirect tables need no alignment: copy rather than cast. */
        memcpy(&d, table + (size_t) i * sizeof d, sizeof d);
        *ret = (VirtqDesc) {
                .addr = le64toh(d.addr),
                .len = le32toh(d.len),
                .flags = le16toh(d.flags),
                .next = le16toh(d.next),
        };
}

typedef struct Seg {
        uint8_t *p;
        size_t len;
} Seg;

typedef struct Chain {
        Seg segs[VIRTQ_MAX_SEGS];
        unsigned n_segs;
        uint64_t want;     /* bytes in segs */
        unsigned visited;  /* descriptors read */
} Chain;

/* Walks the chain from head: every descriptor device-writable, every
 * buffer inside guest memory, no loops, indirect tables only where the
 * spec allows them.  Collects where to write, up to VIRTQ_FILL_MAX. */
static int chain_walk(VirtQueue *vq, const GuestMemory *m, uint16_t head, Chain *c) {
        const uint8_t *table = (const uint8_t *) vq->desc;
        unsigned size = vq->num, i = head, seen = 0;
        const char *where = "";

        *c = (Chain) {};

        if (head >= vq->num)
                return vq_error(vq, -EBADMSG, "available entry %u names descriptor %u, beyond the %u of the table",
                                vq->last_avail_idx, head, vq->num);

        for (;;) {
                VirtqDesc d;

                /* A chain longer than its table must visit a descriptor
                 * twice: a loop, which would otherwise spin forever. */
                if (++seen > size)
                        return vq_error(vq, -ELOOP, "chain from head %u is longer than its %stable of %u: a loop", head,
                                        where, size);
                c->visited++;
                desc_read(table, i, &d);

                if (d.flags & VIRTQ_DESC_F_INDIRECT) {
                        uint64_t got = 0;

                        if (!vq->indirect)
                                return vq_error(vq, -EBADMSG,
                                                "%sdescriptor %u is indirect, but VIRTIO_RING_F_INDIRECT_DESC was not "
                                                "negotiated",
                                                where, i);
                        if (*where)
                                return vq_error(vq, -EBADMSG, "indirect descriptor %u inside an indirect table", i);
                        /* QEMU and the kernel's vhost look for the flag on the
                         * head only; so do we. */
                        if (seen != 1)
                                return vq_error(vq, -EBADMSG, "indirect descriptor %u is not the head of its chain", i);
                        if (d.flags & VIRTQ_DESC_F_NEXT)
                                return vq_error(vq, -EBADMSG, "indirect descriptor %u also has NEXT set", i);
                        if (d.len == 0 || d.len % sizeof(VirtqDesc) != 0 || d.len / sizeof(VirtqDesc) > VIRTQ_MAX_SIZE)
                                return vq_error(vq, -EBADMSG,
                                                "indirect descriptor %u: a table of %" PRIu32
                                                " bytes is not 1 to 32768 descriptors",
                                                i, d.len);
                        /* The table is read in place, so it must lie in one region. */
                        table = guest_memory_gpa(m, d.addr, d.len, &got);
                        if (!table || got != d.len)
                                return vq_error(vq, -EFAULT,
                                                "indirect descriptor %u: table 0x%" PRIx64 "+%" PRIu32
                                                " is not in guest memory",
                                                i, d.addr, d.len);

                        size = d.len / sizeof(VirtqDesc);
                        i = 0;
                        seen = 0;
                        where = "indirect ";
                        continue;
                }

                /* 5.4.6.1: the driver MUST NOT place driver-readable buffers
                 * into the queue.  Ignoring one would hide a confused driver. */
                if (!(d.flags & VIRTQ_DESC_F_WRITE))
                        return vq_error(vq, -EBADMSG,
                                        "%sdescriptor %u in the chain from head %u is device-readable; entropy "
                                        "requests are writable buffers",
                                        where, i, head);

                if (d.len > 0) {
                        uint64_t addr = d.addr, left = d.len;

                        if (d.len - 1 > UINT64_MAX - d.addr)
                                return vq_error(vq, -EFAULT,
                                                "%sdescriptor %u: buffer 0x%" PRIx64 "+%" PRIu32
                                                " wraps around the address space",
                                                where, i, d.addr, d.len);

                        /* Every byte must be in guest memory, even the ones we
                         * will not fill; a buffer may span adjacent regions. */
                        while (left > 0) {
                                uint64_t n = 0;
                                uint8_t *p = guest_memory_gpa(m, addr, left, &n);

                                if (!p)
                                        return vq_error(vq, -EFAULT,
                                                        "%sdescriptor %u: buffer 0x%" PRIx64 "+%" PRIu32
                                                        " is not in guest memory (0x%" PRIx64 " is in no region)",
                                                        where, i, d.addr, d.len, addr);

                                if (c->want < VIRTQ_FILL_MAX && c->n_segs < VIRTQ_MAX_SEGS) {
                                        size_t take = (size_t) MIN(n, VIRTQ_FILL_MAX - c->want);

                                        c->segs[c->n_segs++] = (Seg) { .p = p, .len = take };
                                        c->want += take;
                                }
                                addr += n;
                                left -= n;
                        }
                }

                if (!(d.flags & VIRTQ_DESC_F_NEXT))
                        return 0;
                if (d.next >= size)
                        return vq_error(vq, -EBADMSG, "%sdescriptor %u: next %u is beyond the table of %u", where, i,
                                        d.next, size);
                i = d.next;
        }
}

static uint64_t chain_fill(const Chain *c, VirtqFill fill, void *userdata) {
        uint64_t total = 0;

        for (unsigned k = 0; k < c->n_segs; k++) {
                size_t got = fill(userdata, c->segs[k].p, c->segs[k].len);

                /* Never trust a count past what was asked for. */
                got = MIN(got, c->segs[k].len);
                total += got;
                if (got < c->segs[k].len)
                        break;
        }
        return total;
}

static int check_avail_idx(VirtQueue *vq, uint16_t avail_idx) {
        /* The driver cannot have more buffers out than ring entries. */
        if ((uint16_t) (avail_idx - vq->last_avail_idx) > vq->num)
                return vq_error(vq, -EBADMSG,
                                "available index moved from %u to %u, more than the %u entries of the ring",
                                vq->last_avail_idx, avail_idx, vq->num);
        return 0;
}

/* 2.7.7.2 and 2.7.10: with EVENT_IDX the driver says at which used index
 * it wants an interrupt; without, it may turn them off with a flag. */
static bool need_signal(VirtQueue *vq) {
        uint16_t old, new, event;
        bool valid;

        /* The used index must be visible before we read what the driver
         * wants, or both sides can miss each other's update. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);

        if (!vq->event_idx)
                return !(le16toh(__atomic_load_n(&vq->avail->flags, __ATOMIC_RELAXED)) & VIRTQ_AVAIL_F_NO_INTERRUPT);

        old = vq->signalled_used;
        valid = vq->signalled_used_valid;
        new = vq->signalled_used = vq->used_idx;
        vq->signalled_used_valid = true;
        if (!valid)
                return true;

        event = used_event(vq);
        /* vring_need_event(): did used_event fall in (old, new]? */
        return (uint16_t) (new - event - 1) < (uint16_t) (new - old);
}

int virtqueue_process(VirtQueue *vq, const GuestMemory *m, unsigned budget, VirtqFill fill, void *userdata,
                      VirtqRun *ret) {
        VirtqRun run = {};
        unsigned work = 0;
        uint16_t avail_idx, again;
        int r;

        if (!vq->mapped)
                return vq_error(vq, -EFAULT, "ring is not mapped");

        avail_idx = avail_idx_acquire(vq);
        r = check_avail_idx(vq, avail_idx);
        if (r < 0)
                return r;

        for (;;) {
                while (vq->last_avail_idx != avail_idx) {
                        VirtqUsedElem e;
                        uint64_t got = 0;
                        uint16_t head;
                        Chain c;

                        if (run.served >= budget || work >= VIRTQ_WORK_MAX || run.bytes >= VIRTQ_BYTES_MAX) {
                                run.more = true;
                                goto publish;
                        }

                        head = avail_entry(vq, vq->last_avail_idx % vq->num);
                        r = chain_walk(vq, m, head, &c);
                        if (r < 0)
                                return r;
                        work += c.visited;

                        /* A chain of empty buffers cannot take a byte; give it
                         * back rather than let it block the ring. */
                        if (c.want > 0) {
                                got = chain_fill(&c, fill, userdata);
                                if (got == 0) {
                                        run.starved = true;
                                        goto publish;
                                }
                        }

                        e = (VirtqUsedElem) { .id = htole32(head), .len = htole32((uint32_t) got) };
                        memcpy(&vq->used->ring[vq->used_idx % vq->num], &e, sizeof e);
                        vq->used_idx++;
                        vq->last_avail_idx++;
                        run.served++;
                        run.bytes += got;
                }

                if (!vq->event_idx)
                        break;

                /* Ask for a kick when the driver adds the next buffer, then
                 * look once more: it may have added one after we read its
                 * index and before it could see avail_event. */
                set_avail_event(vq, vq->last_avail_idx);
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                again = avail_idx_acquire(vq);
                if (again == avail_idx)
                        break;
                avail_idx = again;
                r = check_avail_idx(vq, avail_idx);
                if (r < 0)
                        return r;
        }

publish:
        if (vq->event_idx)
                set_avail_event(vq, vq->last_avail_idx);
        if (run.served > 0) {
                /* The entries before the index that publishes them. */
                __atomic_store_n(&vq->used->idx, htole16(vq->used_idx), __ATOMIC_RELEASE);
                run.signal = need_signal(vq);
        }

        *ret = run;
        return 0;
}
