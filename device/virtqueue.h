/* SPDX-License-Identifier: MIT */
#pragma once

/* Guest memory as a vhost-user front-end shares it, and the split
 * virtqueue of a virtio-rng device on top of it (virtio 1.x, 2.7).
 *
 * Everything in guest memory is written by a guest we do not trust and
 * may change while we look at it: every address and length goes through
 * guest_memory_*() and is checked against the regions, each descriptor
 * is copied out once and then only the copy is used, and a ring that
 * points outside memory, loops or breaks a rule of the spec gives an
 * error with a message saying where, never a crash. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* SET_MEM_TABLE carries at most 8; ADD_MEM_REG may add up to this many. */
#define GUEST_MEMORY_MAX_REGIONS 32U
/* The largest split ring the spec allows. */
#define VIRTQ_MAX_SIZE 32768U
/* The most one buffer gets per call: virtio-rng lets the device use less
 * than the whole buffer, and a guest posting a 4 GiB buffer must not
 * hold the event loop while we fill it. */
#define VIRTQ_FILL_MAX (64U * 1024U)

#define VIRTQ_DESC_F_NEXT 1U
#define VIRTQ_DESC_F_WRITE 2U
#define VIRTQ_DESC_F_INDIRECT 4U
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1U
#define VIRTQ_USED_F_NO_NOTIFY 1U

/* The layouts in guest memory: little-endian (virtio 1.x), in the
 * alignments of 2.7 (descriptor table 16, available ring 2, used ring 4). */
typedef struct VirtqDesc {
        uint64_t addr;
        uint32_t len;
        uint16_t flags;
        uint16_t next;
} VirtqDesc;

typedef struct VirtqAvail {
        uint16_t flags;
        uint16_t idx;
        uint16_t ring[]; /* [num], then used_event */
} VirtqAvail;

typedef struct VirtqUsedElem {
        uint32_t id;
        uint32_t len;
} VirtqUsedElem;

typedef struct VirtqUsed {
        uint16_t flags;
        uint16_t idx;
        VirtqUsedElem ring[]; /* [num], then avail_event */
} VirtqUsed;

static inline size_t virtq_desc_size(unsigned num) {
        return 16 * (size_t) num;
}
/* Both with their event fields, which a 1.x driver always allocates. */
static inline size_t virtq_avail_size(unsigned num) {
        return 6 + 2 * (size_t) num;
}
static inline size_t virtq_used_size(unsigned num) {
        return 6 + 8 * (size_t) num;
}

/* One region of guest RAM, mapped from the fd the front-end sent. */
typedef struct GuestRegion {
        uint64_t gpa;         /* guest physical address of its start */
        uint64_t size;
        uint64_t uva;         /* the front-end's address of its start */
        uint64_t mmap_offset; /* where it starts in the fd */
        int fd;               /* the memory file (ours, a dup), while mapped */
        void *map;            /* our mapping, from an aligned offset */
        size_t map_size;
        uint8_t *host;        /* gpa maps here */
} GuestRegion;

typedef struct GuestMemory {
        GuestRegion regions[GUEST_MEMORY_MAX_REGIONS];
        unsigned n;
} GuestMemory;

/* Maps size bytes of fd from mmap_offset, shared and writable.  Checks
 * the arithmetic and that the file is a regular file long enough, since
 * touching a mapping past the end of its file is SIGBUS.  Does not take
 * fd (the mapping outlives it).  -EINVAL for a nonsensical region,
 * -EBADF/-ENODEV for an fd that is not a memory file. */
int guest_region_map(int fd, uint64_t gpa, uint64_t size, uint64_t uva, uint64_t mmap_offset, GuestRegion *ret);
void guest_region_unmap(GuestRegion *r);

/* Adds a mapped region (taking its mapping); -EEXIST when it overlaps
 * another in guest-physical or front-end address space, -E2BIG when
 * full.  On error the caller still owns r. */
int guest_memory_add(GuestMemory *m, GuestRegion *r);
/* Removes and unmaps the region with exactly these addresses and size;
 * -ENOENT if there is none. */
int guest_memory_remove(GuestMemory *m, uint64_t gpa, uint64_t size, uint64_t uva);
/* Unmaps everything. */
void guest_memory_clear(GuestMemory *m);

/* Where guest-physical gpa is, and how many of the len bytes from there
 * are contiguous in that one region (*ret_len, at least 1); NULL when
 * gpa is in no region or len is 0. */
void *guest_memory_gpa(const GuestMemory *m, uint64_t gpa, uint64_t len, uint64_t *ret_len);
/* The whole of [uva, uva+len) in one region, or NULL. */
void *guest_memory_uva(const GuestMemory *m, uint64_t uva, uint64_t len);

typedef size_t (*VirtqFill)(void *userdata, uint8_t *buf, size_t n);

typedef struct VirtQueue {
        /* What the front-end configured. */
        unsigned num;            /* 0 until SET_VRING_NUM */
        bool have_addr;
        uint64_t desc_uva, avail_uva, used_uva;
        bool indirect;           /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
        bool event_idx;          /* VIRTIO_RING_F_EVENT_IDX negotiated */

        /* Our side of the ring. */
        uint16_t last_avail_idx; /* next available entry to take */
        uint16_t used_idx;       /* next used entry to write */
        uint16_t signalled_used; /* used_idx when we last signalled */
        bool signalled_used_valid;

        /* The rings in our address space; invalid after the memory table
         * changed, until virtqueue_map() runs again. */
        bool mapped;
        VirtqDesc *desc;
        VirtqAvail *avail;
        VirtqUsed *used;

        /* Why the last call failed, for the caller to log once. */
        char error[192];
} VirtQueue;

/* What one virtqueue_process() call did. */
typedef struct VirtqRun {
        unsigned served;   /* buffers completed */
        uint64_t bytes;    /* bytes written into them */
        bool starved;      /* fill() gave nothing: a buffer waits */
        bool more;         /* stopped at the budget with buffers left */
        bool signal;       /* the driver wants an interrupt now */
} VirtqRun;

/* Forgets everything the front-end configured (SET_VRING_NUM onwards). */
void virtqueue_reset(VirtQueue *vq);

/* Translates the ring addresses through the regions and checks their
 * size and alignment.  -EFAULT (message in vq->error) when they do not
 * lie in guest memory. */
int virtqueue_map(VirtQueue *vq, const GuestMemory *m);

/* Reads the driver's used index, for a ring that starts (the driver may
 * have used entries from an earlier life of the device). */
void virtqueue_sync_used(VirtQueue *vq);

/* Serves up to budget available buffers with fill(): writes the bytes,
 * adds used entries, publishes them, tells the driver when to kick next
 * (EVENT_IDX), and says whether it wants an interrupt.  A buffer fill()
 * can give nothing for stays in the ring.  Returns 0, or -errno with the
 * reason in vq->error when the driver broke the ring's rules (-EFAULT,
 * -EBADMSG, -ELOOP): the ring cannot be trusted any more. */
int virtqueue_process(VirtQueue *vq, const GuestMemory *m, unsigned budget, VirtqFill fill, void *userdata,
                      VirtqRun *ret);
