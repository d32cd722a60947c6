/* SPDX-License-Identifier: MIT */
#pragma once

/* seedbed-device's configuration: built-in defaults, then
 * /etc/seedbed/device.yaml (or --config FILE), then the command line.
 * Checked in full before anything is opened, with the agent's strict
 * FILE:LINE:COL errors. */

#include "conf.h"

typedef enum DeviceSourceKind {
        DEVICE_SOURCE_GETRANDOM,
        DEVICE_SOURCE_HWRNG,
        DEVICE_SOURCE_RDSEED,
        _DEVICE_SOURCE_KIND_MAX,
} DeviceSourceKind;

typedef struct DeviceConfig {
        ConfStringList egd;
        ConfStringList vhost_user;
        char *metrics;
        char *control;
        unsigned socket_mode;
        char *socket_group;

        ConfEnumList sources;
        char *hwrng_path;
        double min_entropy;

        unsigned vm_bytes;
        usec_t vm_period;
        unsigned vm_burst;
        unsigned host_bytes;
        usec_t host_period;
        unsigned host_burst;

        /* Caps: what one VM, or all of them, may hold of this process. */
        unsigned max_connections;
        unsigned max_vm_connections;
        uint64_t max_device_memory;
        uint64_t max_vm_memory;
        uint64_t max_memory;
        unsigned max_device_regions;
} DeviceConfig;

int device_config_init(DeviceConfig *c);
void device_config_done(DeviceConfig *c);

extern const ConfItem device_config_items[];
extern const size_t device_config_n_items;
extern const char *const device_source_names[];
