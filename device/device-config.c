/* SPDX-License-Identifier: MIT */
#include <grp.h>
#include <stddef.h>
#include <sys/socket.h>

#include "address.h"
#include "device-config.h"
#include "vhost-user.h"

static int validate_address(const char *s, const char **ret_error) {
        ListenAddress a;
        return listen_address_parse(s, &a, ret_error);
}

/* A unix address, or why: what says "needs a unix socket". */
static int validate_unix(const char *s, const char *what, const char **ret_error) {
        ListenAddress a;
        int r = listen_address_parse(s, &a, ret_error);

        if (r < 0)
                return r;
        if (a.family != AF_UNIX)
                return *ret_error = what, -EINVAL;
        return 0;
}

static int validate_unix_address(const char *s, const char **ret_error) {
        return validate_unix(s, "vhost-user needs a unix socket", ret_error);
}

static int validate_control_address(const char *s, const char **ret_error) {
        return validate_unix(s, "the control socket must be a unix socket", ret_error);
}

static int validate_group(const char *s, const char **ret_error) {
        if (s[0] && !getgrnam(s))
                return *ret_error = "no such group on this host", -ENOENT;
        return 0;
}

const char *const device_source_names[] = {
        [DEVICE_SOURCE_GETRANDOM] = "getrandom",
        [DEVICE_SOURCE_HWRNG] = "hwrng",
        [DEVICE_SOURCE_RDSEED] = "rdseed",
        NULL,
};

/* x86-64's user address space (47 bits): no cap on mappings above it
 * means anything. */
#define ADDRESS_SPACE (UINT64_C(1) << 47)

/* Rates are whole bytes; 1 GiB a period is far past any sane limit and
 * keeps the bucket arithmetic well inside 64 bits. */
#define RATE_MAX (1ULL << 30)

const ConfItem device_config_items[] = {
        { "listen.egd", CONF_STRING_LIST, offsetof(DeviceConfig, egd), .validate = validate_address },
        { "listen.vhost-user", CONF_STRING_LIST, offsetof(DeviceConfig, vhost_user), .validate = validate_unix_address },
        { "listen.metrics", CONF_STRING, offsetof(DeviceConfig, metrics), .validate = validate_address },
        { "listen.control", CONF_STRING, offsetof(DeviceConfig, control), .validate = validate_control_address },
        { "listen.socket-mode", CONF_MODE, offsetof(DeviceConfig, socket_mode) },
        { "listen.socket-group", CONF_STRING, offsetof(DeviceConfig, socket_group), .validate = validate_group },
        { "sources.use", CONF_ENUM_LIST, offsetof(DeviceConfig, sources), .names = device_source_names },
        { "sources.hwrng-path", CONF_STRING, offsetof(DeviceConfig, hwrng_path) },
        { "sources.min-entropy", CONF_DOUBLE, offsetof(DeviceConfig, min_entropy), .dmin = 0.01, .dmax = 8 },
        { "rate.vm-bytes", CONF_UINT, offsetof(DeviceConfig, vm_bytes), .min = 0, .max = RATE_MAX },
        { "rate.vm-period", CONF_DURATION, offsetof(DeviceConfig, vm_period), .min = USEC_PER_MSEC, .max = 3600 * USEC_PER_SEC },
        { "rate.vm-burst", CONF_UINT, offsetof(DeviceConfig, vm_burst), .min = 0, .max = RATE_MAX },
        { "rate.host-bytes", CONF_UINT, offsetof(DeviceConfig, host_bytes), .min = 0, .max = RATE_MAX },
        { "rate.host-period", CONF_DURATION, offsetof(DeviceConfig, host_period), .min = USEC_PER_MSEC, .max = 3600 * USEC_PER_SEC },
        { "rate.host-burst", CONF_UINT, offsetof(DeviceConfig, host_burst), .min = 0, .max = RATE_MAX },
        { "limits.connections", CONF_UINT, offsetof(DeviceConfig, max_connections), .min = 1, .max = 1000000 },
        { "limits.vm-connections", CONF_UINT, offsetof(DeviceConfig, max_vm_connections), .min = 1, .max = 1000000 },
        { "limits.device-memory", CONF_SIZE, offsetof(DeviceConfig, max_device_memory), .min = 1 << 20, .max = ADDRESS_SPACE },
        { "limits.vm-memory", CONF_SIZE, offsetof(DeviceConfig, max_vm_memory), .min = 1 << 20, .max = ADDRESS_SPACE },
        { "limits.memory", CONF_SIZE, offsetof(DeviceConfig, max_memory), .min = 1 << 20, .max = ADDRESS_SPACE },
        { "limits.device-regions", CONF_UINT, offsetof(DeviceConfig, max_device_regions), .min = 1, .max = VHOST_USER_MAX_REGIONS },
};
const size_t device_config_n_items = ELEMENTSOF(device_config_items);

int device_config_init(DeviceConfig *c) {
        *c = (DeviceConfig) {
                /* Only libvirt's QEMU (same user or group) may connect. */
                .socket_mode = 0660,
                .sources = { .n = 1, .items = { DEVICE_SOURCE_GETRANDOM } },
                /* Conservative for the health tests' sake (see
                 * SOURCE_ALPHA_LOG2): nothing is credited by the device. */
                .min_entropy = 6,
                .vm_period = USEC_PER_SEC,
                .host_period = USEC_PER_SEC,
                /* One process serves every VM: no VM may take what the
                 * others need.  Connections cost descriptors (a socket,
                 * three eventfds); mappings cost address space, of which
                 * a process has 128 TiB: half for all guests, 8 TiB for
                 * one VM (two devices on 4 TiB of RAM), 4 TiB a device. */
                .max_connections = 16384,
                .max_vm_connections = 256,
                .max_device_memory = UINT64_C(4) << 40,
                .max_vm_memory = UINT64_C(8) << 40,
                .max_memory = UINT64_C(64) << 40,
                .max_device_regions = VHOST_USER_MAX_REGIONS,
        };
        c->hwrng_path = strdup("/dev/hwrng");
        return c->hwrng_path ? 0 : -ENOMEM;
}

void device_config_done(DeviceConfig *c) {
        conf_string_list_clear(&c->egd);
        conf_string_list_clear(&c->vhost_user);
        free(c->metrics);
        free(c->control);
        free(c->socket_group);
        free(c->hwrng_path);
}
