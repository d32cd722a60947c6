/* SPDX-License-Identifier: MIT */
#pragma once

/* A throw-away directory tree standing in for / under --root: fake
 * sysfs, /dev/hwrng, /etc/seedbed.  Every test makes its own, so tests
 * run in parallel without sharing anything. */

#include <stddef.h>

/* mkdtemp() under $TMPDIR (or /tmp); aborts the test on failure. */
char *fakeroot_new(void);
/* rm -rf and free. */
void fakeroot_free(char *root);

/* Writes a file under root, creating its parents. */
void fakeroot_write(const char *root, const char *path, const char *content);
void fakeroot_write_bytes(const char *root, const char *path, const void *data, size_t n);
void fakeroot_symlink(const char *root, const char *path, const char *target);
void fakeroot_mkdir(const char *root, const char *path);
/* Reads a file under root (NULL if it does not exist); caller frees. */
char *fakeroot_read(const char *root, const char *path);
int fakeroot_exists(const char *root, const char *path);

/* A virtio device as the kernel lays it out: the device directory under
 * its transport's parent ("pci", "mmio", "ccw"), the bus link, and a
 * driver link when driver is not NULL. */
void fakeroot_add_virtio(const char *root, const char *name, const char *id, const char *transport,
                         const char *driver);
/* Binds an existing fake virtio device to a driver. */
void fakeroot_bind(const char *root, const char *name, const char *driver);

/* The hwrng core's sysfs files; quality < 0 leaves rng_quality out. */
void fakeroot_add_hwrng(const char *root, const char *available, const char *current, int quality);
