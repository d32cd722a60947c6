/* SPDX-License-Identifier: MIT */
/* Drives the SSH host key library against a tree, as 'seedbed-agent
 * sshkeys' does (sshkeys_ensure_instance()): the instance check, the
 * keys, the record, the console blocks.  The integration test checks what it leaves with the real
 * OpenSSH.  stdout: the console blocks; stderr: the log and one line
 * per key, "key TYPE ACTION FINGERPRINT", and "instance CHANGE". */
#include <getopt.h>
#include <limits.h>

#include "fileio.h"
#include "instance.h"
#include "log.h"
#include "sshkeys.h"

static const char *arg_root = NULL;
static const char *arg_key_dir = NULL;
static const char *arg_comment = NULL;
static HostKeyType arg_types[_HOST_KEY_TYPE_MAX] = { HOST_KEY_ED25519, HOST_KEY_ECDSA, HOST_KEY_RSA };
static size_t arg_n_types = 3;
static unsigned arg_rsa_bits = 0;
static unsigned arg_ecdsa_bits = 0;
static bool arg_replace = false;
static bool arg_fingerprints = true;
static bool arg_keys = true;

static void help(void) {
        printf("Usage: sshkeys-driver --root=DIR [OPTIONS]\n"
               "\n"
               "Makes or keeps the SSH host keys under DIR and prints the console blocks.\n"
               "\n"
               "     --root=DIR         The tree (required)\n"
               "     --key-dir=DIR      Where the keys are, as the tree sees it (%s)\n"
               "     --types=LIST       Comma-separated: ed25519,ecdsa,rsa\n"
               "     --rsa-bits=N       RSA size (%u)\n"
               "     --ecdsa-bits=N     256, 384 or 521\n"
               "     --comment=TEXT     Comment for new .pub files\n"
               "     --replace          Replace every key\n"
               "     --no-fingerprints  Leave out the fingerprint block\n"
               "     --no-keys          Leave out the keys block\n"
               "  -h --help\n",
               SSHKEYS_KEY_DIR, SSHKEYS_RSA_BITS_DEFAULT);
}

static int parse_types(const char *s) {
        _cleanup_free_ char *copy = strdup(s);
        char *save = NULL;

        if (!copy)
                return log_oom();
        arg_n_types = 0;
        for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
                HostKeyType t = host_key_type_from_string(w);

                if (t < 0 || arg_n_types >= ELEMENTSOF(arg_types))
                        return log_error_errno(EINVAL, "Bad key type list '%s'.", s);
                arg_types[arg_n_types++] = t;
        }
        return 0;
}

static int parse_unsigned(const char *s, unsigned *ret) {
        unsigned long v;
        char *end;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || end == s || *end || v > UINT_MAX)
                return log_error_errno(EINVAL, "Not a number: '%s'.", s);
        *ret = (unsigned) v;
        return 0;
}

/* <0 error, 0 exit now, >0 go on. */
static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_ROOT = 0x100,
                ARG_KEY_DIR,
                ARG_TYPES,
                ARG_RSA_BITS,
                ARG_ECDSA_BITS,
                ARG_COMMENT,
                ARG_REPLACE,
                ARG_NO_FINGERPRINTS,
                ARG_NO_KEYS,
        };
        static const struct option options[] = {
                { "root", required_argument, NULL, ARG_ROOT },
                { "key-dir", required_argument, NULL, ARG_KEY_DIR },
                { "types", required_argument, NULL, ARG_TYPES },
                { "rsa-bits", required_argument, NULL, ARG_RSA_BITS },
                { "ecdsa-bits", required_argument, NULL, ARG_ECDSA_BITS },
                { "comment", required_argument, NULL, ARG_COMMENT },
                { "replace", no_argument, NULL, ARG_REPLACE },
                { "no-fingerprints", no_argument, NULL, ARG_NO_FINGERPRINTS },
                { "no-keys", no_argument, NULL, ARG_NO_KEYS },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case ARG_ROOT:
                        arg_root = optarg;
                        break;
                case ARG_KEY_DIR:
                        arg_key_dir = optarg;
                        break;
                case ARG_TYPES:
                        r = parse_types(optarg);
                        if (r < 0)
                                return r;
                        break;
                case ARG_RSA_BITS:
                        r = parse_unsigned(optarg, &arg_rsa_bits);
                        if (r < 0)
                                return r;
                        break;
                case ARG_ECDSA_BITS:
                        r = parse_unsigned(optarg, &arg_ecdsa_bits);
                        if (r < 0)
                                return r;
                        break;
                case ARG_COMMENT:
                        arg_comment = optarg;
                        break;
                case ARG_REPLACE:
                        arg_replace = true;
                        break;
                case ARG_NO_FINGERPRINTS:
                        arg_fingerprints = false;
                        break;
                case ARG_NO_KEYS:
                        arg_keys = false;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return -EINVAL;
                }
        }
        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument '%s'.", argv[optind]);
        if (!arg_root || arg_root[0] != '/')
                return log_error_errno(EINVAL, "--root=DIR with an absolute path is required.");
        return 1;
}

static int run(int argc, char *argv[]) {
        SshKeyResult results[_HOST_KEY_TYPE_MAX] = {};
        _cleanup_free_ char *console = NULL;
        InstanceChange change = INSTANCE_UNKNOWN;
        SshKeysOptions o;
        size_t n = 0;
        int r, failed;

        log_setup("sshkeys-driver");
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;

        o = (SshKeysOptions) {
                .root = arg_root,
                .key_dir = arg_key_dir,
                .types = arg_types,
                .n_types = arg_n_types,
                .rsa_bits = arg_rsa_bits,
                .ecdsa_bits = arg_ecdsa_bits,
                .comment = arg_comment,
                .replace = arg_replace,
                .crng_ready = true,
        };
        /* The agent's own instance handling, not a copy of it. */
        failed = sshkeys_ensure_instance(&o, results, &n, &change);
        fprintf(stderr, "instance %s\n", instance_change_to_string(change));
        if (failed < 0)
                return failed;
        for (size_t i = 0; i < n; i++)
                fprintf(stderr, "key %s %s %s\n", host_key_type_to_string(results[i].type),
                        ssh_key_action_to_string(results[i].action), strna(results[i].fingerprint));

        if (sshkeys_format_console(results, n, arg_fingerprints, arg_keys, &console) >= 0)
                fputs(console, stdout);
        ssh_key_results_done(results, n);
        return failed > 0 ? -EIO : 0;
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
