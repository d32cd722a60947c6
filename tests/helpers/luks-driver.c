/* SPDX-License-Identifier: MIT */
/* Drives agent/luks.c for tests/integration/luks.sh until the agent's
 * "luks" verb is wired: one volume per run, the result as "key: value"
 * lines on stdout.  Exit 0 when the volume is ours and every step asked
 * for succeeded, 1 otherwise, 2 on bad usage.
 *
 *   luks-driver [--root DIR] --device SPEC --name NAME [--key-file PATH]
 *               [--label LABEL] [--wipe] [--no-crypttab] [--no-open]
 *               [--no-require-zeroes] [--not-ready]
 */
#include <getopt.h>

#include "log.h"
#include "luks.h"

static unsigned random_calls;

/* Counts calls, so the test can see that refusing made no secret. */
static int counting_random(void *buf, size_t n, void *userdata) {
        random_calls++;
        return luks_random_blocking(buf, n, userdata);
}

int main(int argc, char *argv[]) {
        enum { ARG_ROOT = 0x100, ARG_DEVICE, ARG_NAME, ARG_KEY_FILE, ARG_LABEL, ARG_WIPE, ARG_NO_CRYPTTAB,
               ARG_NO_OPEN, ARG_NO_REQUIRE_ZEROES, ARG_NOT_READY };
        static const struct option options[] = {
                { "root", required_argument, NULL, ARG_ROOT },
                { "device", required_argument, NULL, ARG_DEVICE },
                { "name", required_argument, NULL, ARG_NAME },
                { "key-file", required_argument, NULL, ARG_KEY_FILE },
                { "label", required_argument, NULL, ARG_LABEL },
                { "wipe", no_argument, NULL, ARG_WIPE },
                { "no-crypttab", no_argument, NULL, ARG_NO_CRYPTTAB },
                { "no-open", no_argument, NULL, ARG_NO_OPEN },
                { "no-require-zeroes", no_argument, NULL, ARG_NO_REQUIRE_ZEROES },
                { "not-ready", no_argument, NULL, ARG_NOT_READY },
                {}
        };
        LuksOptions o = { .crng_ready = true, .random = counting_random };
        LuksResult res;
        LuksVolume v;
        int c, r;

        log_setup("luks-driver");
        luks_volume_init(&v);
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case ARG_ROOT:
                        o.root = optarg;
                        break;
                case ARG_DEVICE:
                        v.device = optarg;
                        break;
                case ARG_NAME:
                        v.name = optarg;
                        break;
                case ARG_KEY_FILE:
                        v.key_file = optarg;
                        break;
                case ARG_LABEL:
                        v.label = optarg;
                        break;
                case ARG_WIPE:
                        v.wipe = true;
                        break;
                case ARG_NO_CRYPTTAB:
                        v.crypttab = false;
                        break;
                case ARG_NO_OPEN:
                        v.open = false;
                        break;
                case ARG_NO_REQUIRE_ZEROES:
                        v.require_zeroes = false;
                        break;
                case ARG_NOT_READY:
                        o.crng_ready = false;
                        break;
                default:
                        return 2;
                }
        if (optind < argc || !v.device || !v.name) {
                fprintf(stderr, "usage: %s [--root DIR] --device SPEC --name NAME [options]\n", argv[0]);
                return 2;
        }

        r = luks_volume_setup(&o, &v, &res);

        printf("spec: %s\n", res.spec);
        printf("name: %s\n", res.name);
        printf("device: %s\n", res.device);
        printf("found: %s\n", res.found);
        printf("wiped: %s\n", res.wiped);
        printf("action: %s\n", luks_action_to_string(res.action));
        printf("uuid: %s\n", res.uuid);
        printf("key-file: %s\n", res.key_file);
        printf("key-file-created: %s\n", yes_no(res.key_file_created));
        printf("open: %s\n", luks_step_to_string(res.open));
        printf("crypttab: %s\n", luks_step_to_string(res.crypttab));
        printf("error: %s\n", res.error);
        printf("random-calls: %u\n", random_calls);
        printf("result: %d\n", r);
        return r < 0 ? 1 : 0;
}
