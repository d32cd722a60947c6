/* SPDX-License-Identifier: MIT */
#pragma once

/* Finding the host's virtio-rng device and making it the guest's hwrng.
 * Works from sysfs alone, so it is the same on every virtio transport
 * (PCI, MMIO, CCW) and runs against fake trees under --root. */

#include <stdbool.h>

#include "macro.h"

#define HWRNG_NAME_MAX 64

typedef struct VirtioRng {
        bool found;                           /* a virtio device with ID 4 */
        char device[HWRNG_NAME_MAX];          /* "virtio4" */
        char transport[16];                   /* "pci", "mmio", "ccw", "unknown" */
        char driver[HWRNG_NAME_MAX];          /* bound driver, "" if none */
        bool bound;                           /* bound to virtio_rng */
        bool module_loaded;                   /* we loaded virtio_rng */
        bool bound_by_us;                     /* we wrote to the driver's bind file */
        char hwrng[HWRNG_NAME_MAX];           /* "virtio_rng.0" in rng_available */
        char current_before[HWRNG_NAME_MAX];  /* rng_current as found */
        char current[HWRNG_NAME_MAX];         /* rng_current now */
        bool selected;                        /* we made the virtio one current */
        int kernel_quality;                   /* rng_quality of the current hwrng, -1 unknown */
        bool hwrng_node;                      /* /dev/hwrng exists */
        usec_t wait_usec;                     /* spent waiting for the driver */
} VirtioRng;

typedef struct DetectContext {
        const char *root;
        bool select;
        bool load_module;
        usec_t module_timeout;
        /* Loads a kernel module; NULL means libkmod on the running kernel.
         * Tests put a function here that binds a driver in a fake tree. */
        int (*load_module_fn)(const char *root, const char *module, void *userdata);
        void *userdata;
} DetectContext;

/* Scans sysfs, loads and binds the driver if needed (waiting up to
 * module_timeout), selects the virtio hwrng if another is current.
 * "No device" is not an error (ret->found is false); errors are -errno
 * from sysfs and the module loader, with ret filled as far as it got. */
int detect_virtio_rng(const DetectContext *ctx, VirtioRng *ret);

/* The hwrng core's current device ("" for none) and the names available. */
int hwrng_read_current(const char *root, char *buf, size_t size);
