/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <libgen.h>
#include <libkmod.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>

#include "detect.h"
#include "fileio.h"
#include "log.h"

/* virtio device ID 4 is the entropy source (virtio spec 5.4). */
#define VIRTIO_ID_RNG "0x0004"
#define VIRTIO_DEVICES "/sys/bus/virtio/devices"
#define VIRTIO_RNG_DRIVER "/sys/bus/virtio/drivers/virtio_rng"
#define HWRNG_SYSFS "/sys/class/misc/hw_random"
#define POLL_INTERVAL_USEC (20 * USEC_PER_MSEC)

static int read_attr(const char *root, const char *path, char *buf, size_t size) {
        _cleanup_free_ char *p = path_join_root(root, path), *s = NULL;
        int r;

        if (!p)
                return -ENOMEM;
        r = read_one_line_file(p, &s);
        if (r < 0)
                return r;
        (void) snprintf(buf, size, "%s", strstrip_trailing(s));
        return 0;
}

int hwrng_read_current(const char *root, char *buf, size_t size) {
        int r = read_attr(root, HWRNG_SYSFS "/rng_current", buf, size);

        /* The core says "none" when no hwrng is registered. */
        if (r >= 0 && streq(buf, "none"))
                buf[0] = 0;
        return r;
}

/* The basename of the symlink at path, e.g. the driver or subsystem. */
static int link_basename(const char *path, char *buf, size_t size) {
        char target[PATH_MAX];
        ssize_t l = readlink(path, target, sizeof target - 1);

        if (l < 0)
                return -errno;
        target[l] = 0;
        (void) snprintf(buf, size, "%s", basename(target));
        return 0;
}

/* The transport is the bus of the virtio device's parent: a PCI function,
 * a platform device (virtio-mmio) or a channel-subsystem device (ccw). */
static void detect_transport(const char *devpath, char *buf, size_t size) {
        char real[PATH_MAX], sub[PATH_MAX], bus[64];

        (void) snprintf(buf, size, "unknown");
        if (!realpath(devpath, real))
                return;
        (void) snprintf(sub, sizeof sub, "%s/subsystem", dirname(real));
        if (link_basename(sub, bus, sizeof bus) < 0)
                return;
        if (streq(bus, "pci"))
                (void) snprintf(buf, size, "pci");
        else if (streq(bus, "platform"))
                (void) snprintf(buf, size, "mmio");
        else if (streq(bus, "ccw"))
                (void) snprintf(buf, size, "ccw");
}

static int find_virtio_rng(const char *root, VirtioRng *v) {
        _cleanup_free_ char *dir = path_join_root(root, VIRTIO_DEVICES);
        DIR *d;
        struct dirent *de;

        if (!dir)
                return -ENOMEM;
        d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : -errno; /* no virtio bus at all */

        while ((de = readdir(d))) {
                char path[PATH_MAX], id[32], rel[PATH_MAX];

                if (de->d_name[0] == '.')
                        continue;
                (void) snprintf(rel, sizeof rel, VIRTIO_DEVICES "/%s/device", de->d_name);
                if (read_attr(root, rel, id, sizeof id) < 0 || !streq(id, VIRTIO_ID_RNG))
                        continue;

                v->found = true;
                (void) snprintf(v->device, sizeof v->device, "%s", de->d_name);
                (void) snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                detect_transport(path, v->transport, sizeof v->transport);
                break;
        }
        closedir(d);
        return 0;
}

static void read_driver(const char *root, VirtioRng *v) {
        char rel[PATH_MAX];
        _cleanup_free_ char *p = NULL;

        v->driver[0] = 0;
        (void) snprintf(rel, sizeof rel, VIRTIO_DEVICES "/%s/driver", v->device);
        p = path_join_root(root, rel);
        if (p)
                (void) link_basename(p, v->driver, sizeof v->driver);
        v->bound = streq(v->driver, "virtio_rng");
}

/* virtio_rng registers itself with the hwrng core as "virtio_rng.N". */
static bool find_virtio_hwrng(const char *root, char *buf, size_t size) {
        char avail[1024];
        _cleanup_strv_free_ char **l = NULL;

        if (read_attr(root, HWRNG_SYSFS "/rng_available", avail, sizeof avail) < 0)
                return false;
        if (strv_split_whitespace(avail, &l) < 0)
                return false;
        for (char **i = l; *i; i++)
                if (startswith(*i, "virtio_rng.")) {
                        (void) snprintf(buf, size, "%s", *i);
                        return true;
                }
        return false;
}

static int load_module_kmod(const char *root, const char *module, void *userdata) {
        struct kmod_ctx *ctx;
        struct kmod_list *list = NULL, *i;
        int r;

        ctx = kmod_new(NULL, NULL);
        if (!ctx)
                return -ENOMEM;
        r = kmod_module_new_from_lookup(ctx, module, &list);
        if (r >= 0 && !list)
                r = -ENOENT;
        kmod_list_foreach(i, list) {
                struct kmod_module *m = kmod_module_get_module(i);
                /* A built-in or already loaded module is fine: the device
                 * may just be unbound. */
                r = kmod_module_probe_insert_module(m, 0, NULL, NULL, NULL, NULL);
                kmod_module_unref(m);
                if (r < 0)
                        break;
        }
        kmod_module_unref_list(list);
        kmod_unref(ctx);
        return r < 0 ? r : 0;
}

static void sleep_usec(usec_t u) {
        struct timespec ts = { .tv_sec = (time_t) (u / USEC_PER_SEC), .tv_nsec = (long) (u % USEC_PER_SEC) * 1000 };
        (void) nanosleep(&ts, NULL);
}

/* The driver may be loaded while this device stays unbound (it was
 * unbound by hand, or probing raced); binding it explicitly is cheap. */
static int bind_device(const char *root, const VirtioRng *v) {
        _cleanup_free_ char *p = path_join_root(root, VIRTIO_RNG_DRIVER "/bind");

        if (!p)
                return -ENOMEM;
        return write_string_file(p, v->device);
}

static int bring_up_driver(const DetectContext *ctx, VirtioRng *v) {
        usec_t start = now_usec(CLOCK_MONOTONIC), deadline = start + ctx->module_timeout;
        bool tried_bind = false;
        int r;

        if (!ctx->load_module) {
                log_warning("virtio-rng device '%s' is not serving as an hwrng and entropy.virtio.load-module is off.",
                            v->device);
                return 0;
        }
        /* Under --root the tree is not this kernel's: loading a module
         * into the running kernel for it would be wrong. */
        if (!ctx->load_module_fn && ctx->root) {
                log_warning("virtio-rng device '%s' under '%s' has no driver; not loading modules under --root.",
                            v->device, ctx->root);
                return 0;
        }

        log_info("virtio-rng device '%s' is not serving as an hwrng, loading virtio_rng.", v->device);
        r = (ctx->load_module_fn ?: load_module_kmod)(ctx->root, "virtio_rng", ctx->userdata);
        if (r < 0)
                return log_error_errno(r, "Failed to load module 'virtio_rng': %m");
        v->module_loaded = true;

        for (;;) {
                read_driver(ctx->root, v);
                if (v->bound && find_virtio_hwrng(ctx->root, v->hwrng, sizeof v->hwrng))
                        break;
                if (!v->bound && !v->driver[0] && !tried_bind) {
                        _cleanup_free_ char *drv = path_join_root(ctx->root, VIRTIO_RNG_DRIVER);
                        if (drv && access(drv, F_OK) >= 0) {
                                tried_bind = true;
                                r = bind_device(ctx->root, v);
                                if (r < 0)
                                        log_debug_errno(r, "Failed to bind '%s' to virtio_rng, ignoring: %m", v->device);
                                else
                                        v->bound_by_us = true;
                        }
                }
                if (now_usec(CLOCK_MONOTONIC) >= deadline) {
                        v->wait_usec = now_usec(CLOCK_MONOTONIC) - start;
                        log_warning("virtio-rng device '%s' is still not bound to virtio_rng after %llu ms, giving up on it.",
                                    v->device, (unsigned long long) (v->wait_usec / USEC_PER_MSEC));
                        return -ETIMEDOUT;
                }
                sleep_usec(POLL_INTERVAL_USEC);
        }
        v->wait_usec = now_usec(CLOCK_MONOTONIC) - start;
        return 0;
}

static int read_kernel_quality(const char *root) {
        char buf[32];

        /* rng_quality is per device on newer kernels; before that, the
         * rng_core.default_quality parameter decides for all of them. */
        if (read_attr(root, HWRNG_SYSFS "/rng_quality", buf, sizeof buf) < 0 &&
            read_attr(root, "/sys/module/rng_core/parameters/default_quality", buf, sizeof buf) < 0)
                return -1;
        return atoi(buf);
}

int detect_virtio_rng(const DetectContext *ctx, VirtioRng *ret) {
        _cleanup_free_ char *node = NULL;
        int r;

        *ret = (VirtioRng) { .kernel_quality = -1 };
        (void) snprintf(ret->transport, sizeof ret->transport, "none");

        r = find_virtio_rng(ctx->root, ret);
        if (r < 0)
                return r;

        (void) hwrng_read_current(ctx->root, ret->current_before, sizeof ret->current_before);
        (void) snprintf(ret->current, sizeof ret->current, "%s", ret->current_before);

        if (ret->found) {
                read_driver(ctx->root, ret);
                if (!ret->bound || !find_virtio_hwrng(ctx->root, ret->hwrng, sizeof ret->hwrng)) {
                        r = bring_up_driver(ctx, ret);
                        if (r < 0) {
                                /* Still say what there is for the other sources. */
                                ret->kernel_quality = read_kernel_quality(ctx->root);
                                node = path_join_root(ctx->root, "/dev/hwrng");
                                ret->hwrng_node = node && access(node, F_OK) >= 0;
                                return r;
                        }
                        /* The core makes a new hwrng current by itself
                         * when it is the first or the best one. */
                        (void) hwrng_read_current(ctx->root, ret->current, sizeof ret->current);
                }
        }

        if (ret->hwrng[0] && streq(ret->current, ret->hwrng) && ctx->select) {
                /* Current already, but maybe only by the core's choice: a
                 * better-rated hwrng registering later (a TPM) would take
                 * over.  Writing the name pins it as the user's choice. */
                _cleanup_free_ char *p = path_join_root(ctx->root, HWRNG_SYSFS "/rng_current");
                if (!p)
                        return -ENOMEM;
                r = write_string_file(p, ret->hwrng);
                if (r < 0)
                        log_debug_errno(r, "Failed to pin hwrng '%s', ignoring: %m", ret->hwrng);
        } else if (ret->hwrng[0] && !streq(ret->current, ret->hwrng)) {
                if (ctx->select) {
                        _cleanup_free_ char *p = path_join_root(ctx->root, HWRNG_SYSFS "/rng_current");
                        if (!p)
                                return -ENOMEM;
                        r = write_string_file(p, ret->hwrng);
                        if (r < 0)
                                return log_error_errno(r, "Failed to select hwrng '%s' (current is '%s'): %m",
                                                       ret->hwrng, ret->current);
                        ret->selected = true;
                        log_info("Selected hwrng '%s' in place of '%s'.", ret->hwrng, ret->current);
                        (void) hwrng_read_current(ctx->root, ret->current, sizeof ret->current);
                } else
                        log_info("hwrng '%s' is current, not the virtio one ('%s'): entropy.virtio.select is off.",
                                 ret->current, ret->hwrng);
        }

        ret->kernel_quality = read_kernel_quality(ctx->root);
        node = path_join_root(ctx->root, "/dev/hwrng");
        ret->hwrng_node = node && access(node, F_OK) >= 0;
        return 0;
}
