/* SPDX-License-Identifier: MIT */
/* The device's configuration file (device/device-config.c over common/conf.c
 * and libyaml): the input is a device.yaml.
 *
 * What must hold: a file that is refused says where and why and changes
 * nothing; a file that is taken leaves a configuration whose dump
 * (conf_dump(), as the agent's "config --dump" prints its own) is YAML
 * that reads back to the same configuration. */
#include "device-config.h"
#include "fuzz-config.h"

static void *device_new(void) {
        DeviceConfig *c = calloc(1, sizeof *c);

        if (!c || device_config_init(c) < 0)
                abort();
        return c;
}

static void device_free(void *c) {
        device_config_done(c);
        free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const FuzzConfig device = {
                .items = device_config_items,
                .n_items = device_config_n_items,
                .new_target = device_new,
                .free_target = device_free,
        };

        fuzz_setup();
        fuzz_config_file(&device, data, size);
        return 0;
}
