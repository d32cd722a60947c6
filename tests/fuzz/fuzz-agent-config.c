/* SPDX-License-Identifier: MIT */
/* The agent's configuration file (agent/agent-config.c over common/conf.c and
 * libyaml): the input is a seedbed.yaml.
 *
 * What must hold: a file that is refused says where and why and changes
 * nothing; a file that is taken leaves a configuration whose dump
 * ("seedbed-agent config --dump": YAML in the layout of seedbed.yaml(5))
 * reads back to the same configuration. */
#include "fuzz-config-agent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const FuzzConfig agent = fuzz_agent_config();

        fuzz_setup();
        fuzz_config_file(&agent, data, size);
        return 0;
}
