/* SPDX-License-Identifier: MIT */
#pragma once

/* The agent's configuration (agent/agent-config.c) for the targets that read
 * it: from a file (fuzz-agent-config.c), from the kernel command line
 * (fuzz-cmdline.c). */

#include "agent-config.h"
#include "fuzz-config.h"

static inline void *fuzz_agent_new(void) {
        AgentConfig *c = calloc(1, sizeof *c);

        if (!c)
                abort();
        agent_config_init(c);
        return c;
}

static inline void fuzz_agent_free(void *c) {
        agent_config_done(c);
        free(c);
}

static inline FuzzConfig fuzz_agent_config(void) {
        return (FuzzConfig) {
                .items = agent_config_items,
                .n_items = agent_config_n_items,
                .new_target = fuzz_agent_new,
                .free_target = fuzz_agent_free,
        };
}
