/* SPDX-License-Identifier: MIT */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>

#include "fakeroot.h"
#include "fileio.h"

char *fakeroot_new(void) {
        const char *tmp = getenv("TMPDIR");
        char *p;

        ck_assert_int_ge(asprintf(&p, "%s/seedbed-test.XXXXXX", tmp ? tmp : "/tmp"), 0);
        ck_assert_ptr_nonnull(mkdtemp(p));
        return p;
}

static int rm_one(const char *path, _unused_ const struct stat *st, _unused_ int flag, _unused_ struct FTW *ftw) {
        return remove(path);
}

void fakeroot_free(char *root) {
        if (!root)
                return;
        (void) nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        free(root);
}

static char *full(const char *root, const char *path) {
        char *p = path_join_root(root, path);
        ck_assert_ptr_nonnull(p);
        return p;
}

static void make_parent(const char *p) {
        char *copy = strdup(p);
        ck_assert_ptr_nonnull(copy);
        ck_assert_int_eq(mkdir_p(dirname(copy), 0755), 0);
        free(copy);
}

void fakeroot_write_bytes(const char *root, const char *path, const void *data, size_t n) {
        char *p = full(root, path);
        int fd;

        make_parent(p);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(loop_write(fd, data, n), 0);
        close(fd);
        free(p);
}

void fakeroot_write(const char *root, const char *path, const char *content) {
        fakeroot_write_bytes(root, path, content, strlen(content));
}

void fakeroot_symlink(const char *root, const char *path, const char *target) {
        char *p = full(root, path), old[PATH_MAX];
        ssize_t l;

        make_parent(p);
        /* Devices under one parent share its subsystem link. */
        l = readlink(p, old, sizeof old - 1);
        if (l >= 0) {
                old[l] = 0;
                ck_assert_str_eq(old, target);
        } else
                ck_assert_int_eq(symlink(target, p), 0);
        free(p);
}

void fakeroot_mkdir(const char *root, const char *path) {
        char *p = full(root, path);
        ck_assert_int_eq(mkdir_p(p, 0755), 0);
        free(p);
}

char *fakeroot_read(const char *root, const char *path) {
        char *p = full(root, path), *s = NULL;

        if (read_full_file(p, 1024 * 1024, &s, NULL) < 0)
                s = NULL;
        free(p);
        return s;
}

int fakeroot_exists(const char *root, const char *path) {
        char *p = full(root, path);
        int r = access(p, F_OK) == 0;
        free(p);
        return r;
}

/* Where each transport puts the virtio device, as the kernel does:
 * under a PCI function, a platform device, or a ccw subchannel device. */
static void transport_parent(const char *transport, char *buf, size_t size, const char **bus_link) {
        if (strcmp(transport, "pci") == 0) {
                snprintf(buf, size, "/sys/devices/pci0000:00/0000:00:05.0");
                *bus_link = "../../../bus/pci";
        } else if (strcmp(transport, "mmio") == 0) {
                snprintf(buf, size, "/sys/devices/platform/LNRO0005:00");
                *bus_link = "../../../bus/platform";
        } else {
                snprintf(buf, size, "/sys/devices/css0/0.0.0000/0.0.0001");
                *bus_link = "../../../../bus/ccw";
        }
}

void fakeroot_add_virtio(const char *root, const char *name, const char *id, const char *transport,
                         const char *driver) {
        char parent[PATH_MAX], dev[PATH_MAX], link[PATH_MAX], target[PATH_MAX], attr[PATH_MAX];
        const char *bus_link;

        transport_parent(transport, parent, sizeof parent, &bus_link);
        snprintf(dev, sizeof dev, "%s/%s", parent, name);
        snprintf(attr, sizeof attr, "%s/device", dev);
        fakeroot_write(root, attr, id);
        fakeroot_write(root, "/sys/bus/virtio/.keep", "");
        snprintf(link, sizeof link, "%s/subsystem", parent);
        fakeroot_symlink(root, link, bus_link);

        /* /sys/bus/virtio/devices/NAME -> ../../../devices/... */
        snprintf(link, sizeof link, "/sys/bus/virtio/devices/%s", name);
        snprintf(target, sizeof target, "../../..%s", dev + strlen("/sys"));
        fakeroot_symlink(root, link, target);

        if (driver)
                fakeroot_bind(root, name, driver);
}

void fakeroot_bind(const char *root, const char *name, const char *driver) {
        char link[PATH_MAX], target[PATH_MAX];

        snprintf(link, sizeof link, "/sys/bus/virtio/drivers/%s", driver);
        fakeroot_mkdir(root, link);
        /* The link goes in the real device directory; through the bus
         * link is the same place. */
        snprintf(link, sizeof link, "/sys/bus/virtio/devices/%s/driver", name);
        snprintf(target, sizeof target, "../../../../bus/virtio/drivers/%s", driver);
        fakeroot_symlink(root, link, target);
}

void fakeroot_add_hwrng(const char *root, const char *available, const char *current, int quality) {
        char buf[64];

        fakeroot_write(root, "/sys/class/misc/hw_random/rng_available", available);
        fakeroot_write(root, "/sys/class/misc/hw_random/rng_current", current);
        if (quality >= 0) {
                snprintf(buf, sizeof buf, "%d\n", quality);
                fakeroot_write(root, "/sys/class/misc/hw_random/rng_quality", buf);
        }
}
