/* SPDX-License-Identifier: MIT */
/* The kernel command line, as the agent reads /proc/cmdline: the
 * seedbed.* and rd.seedbed.* words (agent/agent-config.c) and whether PID 1 is
 * given the machine ID (agent/instance.c).
 *
 * Input: one byte (bit 0: in an initramfs, where rd.seedbed.* counts
 * too), then the command line.
 *
 * What must hold: a refused line says where and why; a taken one leaves
 * a configuration whose dump reads back to the same configuration; a
 * word is found wherever it stands, quoted or not. */
#include "fuzz-config-agent.h"
#include "instance.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const FuzzConfig agent = fuzz_agent_config();
        _cleanup_free_ char *line = NULL, *with_id = NULL;
        AgentConfig *c;
        bool in_initrd;
        ConfParser p;
        int r;

        fuzz_setup();
        if (size < 1)
                return 0;
        in_initrd = data[0] & 1;
        /* What the kernel gives ends at its first NUL. */
        line = fuzz_strndup(data + 1, size - 1);

        c = fuzz_agent_new();
        if (conf_parser_init(&p, agent.items, agent.n_items, c) < 0)
                abort();
        r = agent_config_apply_cmdline(&p, line, "/proc/cmdline", in_initrd);
        if (r < 0)
                fuzz_check(r == -EBADMSG && startswith(p.error, "/proc/cmdline:1:"), "refused with %d, '%s'", r,
                           p.error);
        else
                fuzz_config_check_dump(&agent, c, &p);
        conf_parser_done(&p);
        fuzz_agent_free(c);

        /* The machine ID given on the line, wherever the line already was. */
        (void) first_boot_id_given(line);
        if (asprintf(&with_id, "%s systemd.machine_id=0123456789abcdef0123456789abcdef", line) < 0)
                abort();
        fuzz_check(first_boot_id_given(with_id) || strchr(line, '"'),
                   "systemd.machine_id= at the end of '%s' is not seen", line);
        return 0;
}
