/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <libssh/libssh.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "atomic.h"
#include "fileio.h"
#include "json.h"
#include "log.h"
#include "sshkeys.h"
#include "utf8.h"

/* Host key files are a few kilobytes (16384-bit RSA: 13 KiB). */
#define KEY_FILE_MAX (64 * 1024)
/* sshd refuses smaller RSA keys (RequiredRSASize, OpenSSH 9.1+;
 * SSH_RSA_MINIMUM_MODULUS_SIZE before). */
#define RSA_BITS_SSHD_MIN 1024U

const char *const host_key_type_names[_HOST_KEY_TYPE_MAX + 1] = {
        [HOST_KEY_ED25519] = "ed25519",
        [HOST_KEY_ECDSA] = "ecdsa",
        [HOST_KEY_RSA] = "rsa",
        [_HOST_KEY_TYPE_MAX] = NULL,
};

/* As ssh-keygen -l prints the type, in parentheses. */
static const char *const host_key_type_display[_HOST_KEY_TYPE_MAX] = {
        [HOST_KEY_ED25519] = "ED25519",
        [HOST_KEY_ECDSA] = "ECDSA",
        [HOST_KEY_RSA] = "RSA",
};

const char *host_key_type_to_string(HostKeyType t) {
        if (t < 0 || t >= _HOST_KEY_TYPE_MAX)
                return NULL;
        return host_key_type_names[t];
}

HostKeyType host_key_type_from_string(const char *s) {
        if (s)
                for (HostKeyType t = 0; t < _HOST_KEY_TYPE_MAX; t++)
                        if (streq(s, host_key_type_names[t]))
                                return t;
        return _HOST_KEY_TYPE_INVALID;
}

static const char *const ssh_key_action_table[_SSH_KEY_ACTION_MAX] = {
        [SSH_KEY_KEPT] = "kept",
        [SSH_KEY_REPAIRED] = "repaired",
        [SSH_KEY_CREATED] = "created",
        [SSH_KEY_REPLACED] = "replaced",
        [SSH_KEY_ADOPTED] = "adopted",
        [SSH_KEY_FAILED] = "failed",
};

const char *ssh_key_action_to_string(SshKeyAction a) {
        if (a < 0 || a >= _SSH_KEY_ACTION_MAX)
                return NULL;
        return ssh_key_action_table[a];
}

const char *const unknown_keys_policy_names[_UNKNOWN_KEYS_POLICY_MAX + 1] = {
        [UNKNOWN_KEYS_FIRST_BOOT] = "first-boot",
        [UNKNOWN_KEYS_ALWAYS] = "always",
        [UNKNOWN_KEYS_NEVER] = "never",
        NULL,
};

static const char *const ssh_key_on_disk_table[_SSH_KEY_ON_DISK_MAX] = {
        [SSH_KEY_ON_DISK_SAME] = "same",
        [SSH_KEY_ON_DISK_REPLACED] = "replaced-by-another-tool",
        [SSH_KEY_ON_DISK_MISSING] = "missing",
        [SSH_KEY_ON_DISK_UNKNOWN] = "unknown",
};

const char *ssh_key_on_disk_to_string(SshKeyOnDisk s) {
        if (s < 0 || s >= _SSH_KEY_ON_DISK_MAX)
                return NULL;
        return ssh_key_on_disk_table[s];
}

static void ssh_key_freep(ssh_key *k) {
        ssh_key_free(*k);
}
#define _cleanup_ssh_key_ _cleanup_(ssh_key_freep)

static void ssh_string_free_charp(char **s) {
        ssh_string_free_char(*s);
}
#define _cleanup_ssh_char_ _cleanup_(ssh_string_free_charp)

/* Key material must not outlive its use in freed heap memory. */
static void erase_string(char *s) {
        if (s)
                explicit_bzero(s, strlen(s));
}

static void erase_ssh_charp(char **s) {
        erase_string(*s);
        ssh_string_free_char(*s);
}
#define _cleanup_erase_ssh_char_ _cleanup_(erase_ssh_charp)

typedef struct SecretBuf {
        char *data;
        size_t size;
} SecretBuf;

static void secret_buf_done(SecretBuf *b) {
        if (b->data)
                explicit_bzero(b->data, b->size);
        free(b->data);
        *b = (SecretBuf) {};
}

/* Who owns the files and how open the private key is: decided once per
 * run from the tree being written. */
typedef struct KeyOwner {
        uid_t uid;          /* (uid_t) -1: leave as created */
        gid_t private_gid;  /* root, or ssh_keys */
        gid_t public_gid;
        mode_t private_mode;
        bool have_group;    /* ssh_keys found */
        gid_t group_gid;
} KeyOwner;

typedef struct Context {
        const SshKeysOptions *o;
        char *key_dir; /* as the guest sees it, no trailing '/' ("" for "/") */
        char *dir;     /* on this system: root + key_dir */
        KeyOwner owner;
        usec_t start;
} Context;

/* The group's GID from a group(5) file: name:password:GID:members. */
static int group_lookup(const char *path, const char *name, gid_t *ret) {
        _cleanup_free_ char *text = NULL;
        int r;

        r = read_full_file(path, 4 * 1024 * 1024, &text, NULL);
        if (r < 0)
                return r;
        for (char *line = text, *next; line && *line; line = next) {
                char *f[4] = {}, *p = line, *end;
                unsigned long gid;
                unsigned nf = 0;

                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                for (; nf < ELEMENTSOF(f) && p; nf++) {
                        f[nf] = p;
                        p = strchr(p, ':');
                        if (p)
                                *p++ = 0;
                }
                if (nf < 3 || !streq(f[0], name))
                        continue;
                errno = 0;
                gid = strtoul(f[2], &end, 10);
                if (errno != 0 || end == f[2] || *end || gid >= (unsigned long) (gid_t) -1)
                        continue;
                *ret = (gid_t) gid;
                return 0;
        }
        return -ENOENT;
}

/* The group is looked up in the tree's own /etc/group, never through NSS:
 * the files belong to that tree, whose GIDs may differ from the running
 * system's (an image tool under --root), and the initramfs has no NSS
 * modules.  A system group such as ssh_keys lives in /etc/group. */
static void owner_init(const char *root, KeyOwner *ret) {
        _cleanup_free_ char *path = path_join_root(root, "/etc/group");
        KeyOwner o = { .uid = 0, .private_gid = 0, .public_gid = 0, .private_mode = 0600 };
        int r;

        if (geteuid() != 0) {
                /* Not root (a test, an unprivileged image build): files
                 * belong to whoever runs us, and no group gets to read. */
                *ret = (KeyOwner) { .uid = (uid_t) -1, .private_gid = (gid_t) -1, .public_gid = (gid_t) -1,
                                    .private_mode = 0600 };
                return;
        }
        r = path ? group_lookup(path, SSHKEYS_GROUP, &o.group_gid) : -ENOMEM;
        if (r >= 0) {
                o.have_group = true;
                o.private_gid = o.group_gid;
                o.private_mode = 0640;
        } else if (r != -ENOENT)
                /* 0600 root:root is the safe side: sshd runs as root. */
                log_warning_errno(r, "Cannot read '%s', host keys will be 0600 root:root: %m", strna(path));
        *ret = o;
}

static enum ssh_keytypes_e libssh_type(const Context *c, HostKeyType t) {
        switch (t) {
        case HOST_KEY_ED25519:
                return SSH_KEYTYPE_ED25519;
        case HOST_KEY_RSA:
                return SSH_KEYTYPE_RSA;
        case HOST_KEY_ECDSA:
                switch (c->o->ecdsa_bits) {
                case 384:
                        return SSH_KEYTYPE_ECDSA_P384;
                case 521:
                        return SSH_KEYTYPE_ECDSA_P521;
                default:
                        return SSH_KEYTYPE_ECDSA_P256;
                }
        default:
                return SSH_KEYTYPE_UNKNOWN;
        }
}

static HostKeyType host_key_type_of(ssh_key key) {
        switch (ssh_key_type(key)) {
        case SSH_KEYTYPE_ED25519:
                return HOST_KEY_ED25519;
        case SSH_KEYTYPE_ECDSA_P256:
        case SSH_KEYTYPE_ECDSA_P384:
        case SSH_KEYTYPE_ECDSA_P521:
                return HOST_KEY_ECDSA;
        case SSH_KEYTYPE_RSA:
                return HOST_KEY_RSA;
        default:
                return _HOST_KEY_TYPE_INVALID;
        }
}

static int base64_value(char ch) {
        if (ch >= 'A' && ch <= 'Z')
                return ch - 'A';
        if (ch >= 'a' && ch <= 'z')
                return ch - 'a' + 26;
        if (ch >= '0' && ch <= '9')
                return ch - '0' + 52;
        if (ch == '+')
                return 62;
        if (ch == '/')
                return 63;
        return -1;
}

/* Standard base64 with padding, as in .pub files. */
static int base64_decode(const char *s, uint8_t **ret, size_t *ret_size) {
        size_t l = strlen(s), n = 0;
        uint32_t acc = 0;
        unsigned bits = 0;
        uint8_t *out;

        if (l % 4 != 0)
                return -EBADMSG;
        while (l > 0 && s[l - 1] == '=')
                l--;
        if (strlen(s) - l > 2)
                return -EBADMSG;
        out = malloc(l * 3 / 4 + 1);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < l; i++) {
                int v = base64_value(s[i]);

                if (v < 0) {
                        free(out);
                        return -EBADMSG;
                }
                acc = (acc << 6) | (uint32_t) v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[n++] = (uint8_t) (acc >> bits);
                }
        }
        *ret = out;
        *ret_size = n;
        return 0;
}

/* One SSH wire-format string (RFC 4251 5): a 32-bit length, then bytes. */
static int wire_string(const uint8_t **p, size_t *left, const uint8_t **ret, size_t *ret_len) {
        uint32_t l;

        if (*left < 4)
                return -EBADMSG;
        l = (uint32_t) (*p)[0] << 24 | (uint32_t) (*p)[1] << 16 | (uint32_t) (*p)[2] << 8 | (*p)[3];
        if (l > *left - 4)
                return -EBADMSG;
        *ret = *p + 4;
        *ret_len = l;
        *p += 4 + l;
        *left -= 4 + l;
        return 0;
}

/* libssh 0.10 has no ssh_key_size(): the modulus from the public blob
 * ("ssh-rsa", e, n), counted as ssh-keygen does (BN_num_bits). */
static int rsa_bits(ssh_key key, unsigned *ret) {
        _cleanup_ssh_char_ char *b64 = NULL;
        _cleanup_free_ uint8_t *blob = NULL;
        const uint8_t *p, *s;
        size_t size, left, l;
        unsigned bits;
        int r;

        if (ssh_pki_export_pubkey_base64(key, &b64) != SSH_OK)
                return -EIO;
        r = base64_decode(b64, &blob, &size);
        if (r < 0)
                return r;
        p = blob;
        left = size;
        for (unsigned i = 0; i < 3; i++) {
                r = wire_string(&p, &left, &s, &l);
                if (r < 0)
                        return r;
        }
        /* s, l: the modulus, a positive mpint: skip its leading zeros. */
        while (l > 0 && s[0] == 0)
                s++, l--;
        if (l == 0)
                return -EBADMSG;
        bits = (unsigned) (l - 1) * 8;
        for (uint8_t b = s[0]; b; b >>= 1)
                bits++;
        *ret = bits;
        return 0;
}

static int key_bits(ssh_key key, unsigned *ret) {
        switch (ssh_key_type(key)) {
        case SSH_KEYTYPE_ED25519:
        case SSH_KEYTYPE_ECDSA_P256:
                *ret = 256;
                return 0;
        case SSH_KEYTYPE_ECDSA_P384:
                *ret = 384;
                return 0;
        case SSH_KEYTYPE_ECDSA_P521:
                *ret = 521;
                return 0;
        case SSH_KEYTYPE_RSA:
                return rsa_bits(key, ret);
        default:
                return -EOPNOTSUPP;
        }
}

static int key_fingerprint(ssh_key key, char **ret) {
        unsigned char *hash = NULL;
        size_t hlen = 0;
        char *fp, *s;

        /* "SHA256:" and base64 without padding: ssh-keygen's default. */
        if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) < 0)
                return -EIO;
        fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
        ssh_clean_pubkey_hash(&hash);
        if (!fp)
                return -ENOMEM;
        s = strdup(fp);
        ssh_string_free_char(fp);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* The .pub line for a key: "ALGO BASE64[ COMMENT]". */
static int pub_line(ssh_key key, const char *comment, char **ret) {
        _cleanup_ssh_char_ char *b64 = NULL;
        char *s;

        if (ssh_pki_export_pubkey_base64(key, &b64) != SSH_OK)
                return -EIO;
        if (asprintf(&s, "%s %s%s%s", ssh_key_type_to_char(ssh_key_type(key)), b64, comment ? " " : "",
                     strempty(comment)) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* Opens an existing key file (links followed) and reads it whole.
 * -ENOENT: none; -EBADMSG with a reason: something is there but it
 * cannot be a key file. */
static int read_key_file(const char *path, int *ret_fd, SecretBuf *ret, const char **ret_reason) {
        _cleanup_close_ int fd = -EBADF;
        SecretBuf b = {};
        struct stat st;
        ssize_t k;

        /* O_NONBLOCK: a FIFO planted in place of a key must not hang the
         * boot; fstat() then turns it away. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode)) {
                *ret_reason = "not a regular file";
                return -EBADMSG;
        }
        if (st.st_size == 0) {
                *ret_reason = "empty";
                return -EBADMSG;
        }
        if (st.st_size > KEY_FILE_MAX) {
                *ret_reason = "too large for a key";
                return -EBADMSG;
        }
        b.size = (size_t) st.st_size + 1;
        b.data = malloc(b.size);
        if (!b.data)
                return -ENOMEM;
        k = loop_read(fd, b.data, (size_t) st.st_size);
        if (k < 0) {
                secret_buf_done(&b);
                return (int) k;
        }
        b.data[k] = 0;
        if (memchr(b.data, 0, (size_t) k)) {
                secret_buf_done(&b);
                *ret_reason = "not text";
                return -EBADMSG;
        }
        if (ret_fd)
                *ret_fd = TAKE_FD(fd);
        *ret = b;
        return 0;
}

/* An existing private key we may keep: one libssh reads, of the type its
 * name says, that sshd will load. */
static int load_private(const char *path, HostKeyType t, ssh_key *ret, int *ret_fd, const char **ret_reason) {
        _cleanup_ssh_key_ ssh_key key = NULL;
        _cleanup_close_ int fd = -EBADF;
        SecretBuf b = {};
        unsigned bits;
        int r;

        r = read_key_file(path, &fd, &b, ret_reason);
        if (r < 0)
                return r;
        /* No passphrase and no prompt: sshd could not unlock it either. */
        r = ssh_pki_import_privkey_base64(b.data, NULL, NULL, NULL, &key);
        secret_buf_done(&b);
        if (r != SSH_OK) {
                *ret_reason = "not a private key without a passphrase";
                return -EBADMSG;
        }
        if (host_key_type_of(key) != t) {
                *ret_reason = "a key of another type";
                return -EBADMSG;
        }
        if (t == HOST_KEY_RSA && (key_bits(key, &bits) < 0 || bits < RSA_BITS_SSHD_MIN)) {
                *ret_reason = "an RSA key too small for sshd";
                return -EBADMSG;
        }
        *ret = TAKE_PTR(key);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Checks that the .pub holds this key, as one line "ALGO BASE64[ COMMENT]"
 * (read as ssh-keygen -l reads it).  Returns the line and the comment. */
static int check_pub(const char *path, ssh_key key, char **ret_line, char **ret_comment, const char **ret_reason) {
        _cleanup_ssh_char_ char *want = NULL;
        _cleanup_free_ char *line = NULL, *comment = NULL;
        const char *algo = ssh_key_type_to_char(ssh_key_type(key));
        SecretBuf b = {};
        size_t l, al, bl;
        char *p;
        int r;

        r = read_key_file(path, NULL, &b, ret_reason);
        if (r < 0)
                return r;
        l = strcspn(b.data, "\n");
        line = strndup(b.data, l);
        r = b.data[l] && b.data[l + 1 + strspn(b.data + l + 1, " \t\r\n")] ? -EBADMSG : 0;
        secret_buf_done(&b);
        if (!line)
                return -ENOMEM;
        if (r < 0) {
                *ret_reason = "longer than one line";
                return r;
        }
        /* The line goes to the console: no escape sequences, in C0 or
         * in C1 (U+009B is CSI to the Linux console in UTF-8 mode), and
         * no bytes that are not UTF-8, which a terminal may read as C1. */
        for (p = line; *p;) {
                uint32_t c = (unsigned char) *p;
                size_t len = c < 0x80 ? 1 : utf8_decode(p, strlen(p), &c);

                if (len == 0 || (c < 0x20 && c != '\t') || (c >= 0x7f && c < 0xa0)) {
                        *ret_reason = "holding control characters";
                        return -EBADMSG;
                }
                p += len;
        }

        if (ssh_pki_export_pubkey_base64(key, &want) != SSH_OK)
                return -EIO;
        /* The canonical encoding is unique, so the text must be ours. */
        p = line + strspn(line, " \t");
        al = strcspn(p, " \t");
        bl = strcspn(p + al + strspn(p + al, " \t"), " \t");
        if (al != strlen(algo) || strncmp(p, algo, al) != 0) {
                *ret_reason = "of another type";
                return -EBADMSG;
        }
        p += al + strspn(p + al, " \t");
        if (bl != strlen(want) || strncmp(p, want, bl) != 0) {
                *ret_reason = "not the private key's public half";
                return -EBADMSG;
        }
        p += bl + strspn(p + bl, " \t");
        if (*p && *p != '#') {
                comment = strdup(p);
                if (!comment)
                        return -ENOMEM;
        }
        *ret_line = TAKE_PTR(line);
        *ret_comment = TAKE_PTR(comment);
        return 0;
}

static int result_fill(SshKeyResult *res, ssh_key key, char *line, char *comment) {
        int r;

        res->public_key = line;
        res->comment = comment;
        r = key_bits(key, &res->bits);
        if (r < 0)
                return r;
        return key_fingerprint(key, &res->fingerprint);
}

static int write_private(const Context *c, const char *path, ssh_key key) {
        _cleanup_erase_ssh_char_ char *b64 = NULL;
        SecretBuf text = {};
        int r;

        /* OpenSSH's own format where this libssh can write it; 0.10 writes
         * RSA and ECDSA as PKCS#8 PEM, which sshd reads as well. */
#if LIBSSH_VERSION_INT >= SSH_VERSION_INT(0, 11, 0)
        r = ssh_pki_export_privkey_base64_format(key, NULL, NULL, NULL, &b64, SSH_FILE_FORMAT_OPENSSH);
#else
        r = ssh_pki_export_privkey_base64(key, NULL, NULL, NULL, &b64);
#endif
        if (r != SSH_OK || !b64)
                return -EIO;
        text.size = strlen(b64);
        text.data = malloc(text.size + 2);
        if (!text.data)
                return -ENOMEM;
        memcpy(text.data, b64, text.size);
        if (text.size == 0 || text.data[text.size - 1] != '\n')
                text.data[text.size++] = '\n';
        r = atomic_write_file(path, text.data, text.size, c->owner.private_mode, c->owner.uid, c->owner.private_gid);
        secret_buf_done(&text);
        return r;
}

static int write_pub(const Context *c, const char *path, const char *line) {
        _cleanup_free_ char *text = NULL;
        int l;

        l = asprintf(&text, "%s\n", line);
        if (l < 0)
                return -ENOMEM;
        return atomic_write_file(path, text, (size_t) l, 0644, c->owner.uid, c->owner.public_gid);
}

/* A kept private key must not be more open than one we would write:
 * sshd refuses keys others can read, and a group other than root or
 * ssh_keys has no business reading it. */
static void fix_private_mode(const Context *c, const char *path, int fd) {
        const KeyOwner *w = &c->owner;
        struct stat st;
        bool group_ok;

        if (w->uid == (uid_t) -1 || fstat(fd, &st) < 0)
                return;
        group_ok = st.st_gid == 0 || (w->have_group && st.st_gid == w->group_gid);
        if (st.st_uid == 0 && (st.st_mode & 07137) == 0 && (group_ok || (st.st_mode & 0040) == 0))
                return;
        if (fchown(fd, w->uid, w->private_gid) < 0 || fchmod(fd, w->private_mode) < 0) {
                log_warning_errno(errno, "Failed to tighten the permissions of '%s', ignoring: %m", path);
                return;
        }
        log_notice("'%s' was open to more than root%s; made it %04o.", path, w->have_group ? " and " SSHKEYS_GROUP : "",
                   (unsigned) w->private_mode);
}

static bool is_symlink(const char *path) {
        struct stat st;

        return lstat(path, &st) >= 0 && S_ISLNK(st.st_mode);
}

static usec_t since_start(const Context *c) {
        usec_t n = now_usec(CLOCK_MONOTONIC);
        return n > c->start ? n - c->start : 0;
}

static int keep_or_repair(const Context *c, SshKeyResult *res, ssh_key key, int fd, const char *priv,
                          const char *pub) {
        _cleanup_free_ char *line = NULL, *comment = NULL;
        const char *reason = NULL;
        int r;

        r = check_pub(pub, key, &line, &comment, &reason);
        if (r >= 0) {
                /* Through a link is storage someone else manages. */
                if (!is_symlink(priv))
                        fix_private_mode(c, res->path, fd);
                res->action = c->o->adopt ? SSH_KEY_ADOPTED : SSH_KEY_KEPT;
                if (!c->o->adopt)
                        log_debug("Keeping SSH host key '%s'.", res->path);
        } else if (r == -ENOENT || r == -EBADMSG) {
                /* The private key was written first: a crash between the
                 * two files, or an old .pub after a replacement, ends here. */
                res->reason = r == -ENOENT ? "missing" : reason;
                if (is_symlink(pub)) {
                        res->reason = "public key file is a symbolic link";
                        return log_error_errno(ELOOP, "'%s' is a symbolic link to no sound public key; not writing "
                                               "through it.", res->pub_path);
                }
                r = pub_line(key, c->o->comment, &line);
                if (r < 0)
                        return log_error_errno(r, "Failed to derive the public key of '%s': %m", res->path);
                if (c->o->comment) {
                        comment = strdup(c->o->comment);
                        if (!comment)
                                return log_oom();
                }
                r = write_pub(c, pub, line);
                if (r < 0)
                        return log_error_errno(r, "Failed to write '%s': %m", res->pub_path);
                res->action = SSH_KEY_REPAIRED;
                log_notice("'%s' was %s; wrote it again from '%s'.", res->pub_path, res->reason, res->path);
        } else
                return log_error_errno(r, "Failed to read '%s': %m", res->pub_path);

        /* A repaired key is adopted all the same: the record keeps why it
         * is this machine's key, the log above what became of its .pub. */
        if (c->o->adopt)
                res->reason = c->o->reason;
        r = result_fill(res, key, TAKE_PTR(line), TAKE_PTR(comment));
        if (r < 0)
                return log_error_errno(r, "Failed to read the key in '%s': %m", res->path);
        if (c->o->adopt)
                /* Never a running server's identity changed silently:
                 * people must be able to find what was decided. */
                log_notice("Adopted SSH host key '%s' (%s): %u %s.", res->path, strna(res->reason), res->bits,
                           res->fingerprint);
        return 0;
}

static int generate(const Context *c, SshKeyResult *res, HostKeyType t, const char *priv, const char *pub,
                    SshKeyAction action) {
        _cleanup_ssh_key_ ssh_key key = NULL;
        _cleanup_free_ char *line = NULL, *comment = NULL;
        unsigned bits = t == HOST_KEY_RSA ? c->o->rsa_bits : 0;
        int r;

        if (ssh_pki_generate(libssh_type(c, t), (int) bits, &key) != SSH_OK || !key)
                return log_error_errno(EIO, "libssh failed to generate a %s key for '%s'.",
                                       host_key_type_to_string(t), res->path);
        r = pub_line(key, c->o->comment, &line);
        if (r < 0)
                return log_error_errno(r, "Failed to export the public key for '%s': %m", res->path);
        if (c->o->comment) {
                comment = strdup(c->o->comment);
                if (!comment)
                        return log_oom();
        }

        /* Private first: whatever happens to the .pub, the next run can
         * derive it from a complete private key.  A .pub in place goes
         * before it: killed between the two, a replacement would leave
         * the new private key beside the old .pub, which every reader of
         * .pub files (ssh-keygen -l, cloud-init's console blocks) takes
         * for the key sshd serves.  A private key without its .pub is
         * what the next run repairs.  (ensure_one() turned links away.) */
        if (unlink(pub) < 0 && errno != ENOENT)
                return log_error_errno(errno, "Failed to remove the old '%s': %m", res->pub_path);
        r = write_private(c, priv, key);
        if (r < 0)
                return log_error_errno(r, "Failed to write '%s': %m", res->path);
        r = write_pub(c, pub, line);
        if (r < 0)
                return log_error_errno(r, "Failed to write '%s', the next run writes it from '%s': %m",
                                       res->pub_path, res->path);

        res->action = action;
        res->crng_ready = c->o->crng_ready;
        r = result_fill(res, key, TAKE_PTR(line), TAKE_PTR(comment));
        if (r < 0)
                return log_error_errno(r, "Failed to read back the key in '%s': %m", res->path);
        if (action == SSH_KEY_CREATED)
                log_info("Created SSH host key '%s': %u %s.", res->path, res->bits, res->fingerprint);
        else
                /* A host key's change is seen by every client: notice. */
                log_notice("Replaced SSH host key '%s' (%s): %u %s.", res->path, strna(res->reason), res->bits,
                           res->fingerprint);
        return 0;
}

/* In a replacement that an earlier run began and did not finish, the key
 * that run made (the pending record lists it: SshKeysOptions.vouched) is
 * this instance's already: clients may have seen it since.  Returns 1
 * when it is kept (res filled), 0 when it is to be replaced, -errno. */
static int keep_vouched(const Context *c, HostKeyType t, SshKeyResult *res, const char *priv, const char *pub) {
        _cleanup_ssh_key_ ssh_key key = NULL;
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *fp = NULL;
        const InstanceKey *k = NULL;
        const char *reason = NULL;
        int r;

        for (size_t i = 0; c->o->vouched && i < c->o->vouched->n_keys && !k; i++)
                if (streq_ptr(c->o->vouched->keys[i].path, res->path))
                        k = &c->o->vouched->keys[i];
        /* Anything but the sound key it lists is replaced, as the rest. */
        if (!k || load_private(priv, t, &key, &fd, &reason) < 0)
                return 0;
        r = key_fingerprint(key, &fp);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0 || !streq_ptr(fp, k->fingerprint))
                return 0;
        r = keep_or_repair(c, res, key, fd, priv, pub);
        return r < 0 ? r : 1;
}

static int ensure_one(const Context *c, HostKeyType t, SshKeyResult *res) {
        _cleanup_free_ char *priv = NULL, *pub = NULL;
        const char *name = host_key_type_to_string(t), *reason = NULL;
        bool existed = false;
        struct stat st;
        int r;

        if (asprintf(&res->path, "%s/ssh_host_%s_key", c->key_dir, name) < 0) {
                res->path = NULL;
                return log_oom();
        }
        if (asprintf(&res->pub_path, "%s.pub", res->path) < 0) {
                res->pub_path = NULL;
                return log_oom();
        }
        priv = path_join_root(c->o->root, res->path);
        pub = path_join_root(c->o->root, res->pub_path);
        if (!priv || !pub)
                return log_oom();

        if (lstat(priv, &st) >= 0)
                existed = true;
        else if (errno != ENOENT)
                return log_error_errno(errno, "Failed to look at '%s': %m", res->path);

        if (existed && c->o->replace) {
                r = keep_vouched(c, t, res, priv, pub);
                if (r != 0)
                        return r < 0 ? r : 0;
        }
        if (existed && !c->o->replace) {
                _cleanup_ssh_key_ ssh_key key = NULL;
                _cleanup_close_ int fd = -EBADF;

                r = load_private(priv, t, &key, &fd, &reason);
                if (r >= 0)
                        return keep_or_repair(c, res, key, fd, priv, pub);
                if (r == -ENOENT)
                        reason = "a dangling symbolic link";
                else if (r != -EBADMSG) {
                        res->reason = "unreadable";
                        return log_error_errno(r, "Failed to read '%s', leaving it alone: %m", res->path);
                }
                res->reason = reason;
                log_warning("'%s' is %s: replacing it with a new key.", res->path, reason);
        } else if (existed)
                res->reason = c->o->reason ?: SSHKEYS_REASON_ASKED;

        /* rename() would replace the link, not what it points to, and the
         * storage behind it is not ours to decide about. */
        if (existed && S_ISLNK(st.st_mode)) {
                res->reason = "a symbolic link";
                return log_error_errno(ELOOP, "'%s' is a symbolic link: not replacing it.", res->path);
        }
        if (is_symlink(pub)) {
                res->reason = "public key file is a symbolic link";
                return log_error_errno(ELOOP, "'%s' is a symbolic link: not replacing it.", res->pub_path);
        }
        return generate(c, res, t, priv, pub, existed ? SSH_KEY_REPLACED : SSH_KEY_CREATED);
}

/* Temporary files of ours that a crash left: they may hold a private
 * key, and nothing else would ever remove them.  Only with the key
 * directory's lock held: a file of this name may otherwise be another
 * agent's, being written. */
static void remove_stale_temp_files(int dir_fd, const char *dir) {
        char names[_HOST_KEY_TYPE_MAX * 2][64];
        const char *targets[_HOST_KEY_TYPE_MAX * 2];
        int r;

        for (HostKeyType t = 0; t < _HOST_KEY_TYPE_MAX; t++) {
                (void) snprintf(names[2 * t], sizeof names[0], "ssh_host_%s_key", host_key_type_to_string(t));
                (void) snprintf(names[2 * t + 1], sizeof names[0], "ssh_host_%s_key.pub", host_key_type_to_string(t));
                targets[2 * t] = names[2 * t];
                targets[2 * t + 1] = names[2 * t + 1];
        }
        r = atomic_remove_temp_files(dir_fd, targets, ELEMENTSOF(targets));
        if (r > 0)
                log_notice("Removed %d temporary key file(s) from '%s', left by an interrupted run.", r, dir);
        else if (r < 0)
                log_warning_errno(r, "Failed to remove temporary key files from '%s', ignoring: %m", dir);
}

static bool comment_valid(const char *s) {
        /* ssh-keygen -l skips leading blanks and takes '#' as no comment. */
        if (s[0] == ' ' || s[0] == '\t' || s[0] == '#')
                return false;
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

static int options_check(const SshKeysOptions *o) {
        bool seen[_HOST_KEY_TYPE_MAX] = {};

        if (o->n_types > _HOST_KEY_TYPE_MAX || (o->n_types > 0 && !o->types))
                return -EINVAL;
        for (size_t i = 0; i < o->n_types; i++) {
                if (o->types[i] < 0 || o->types[i] >= _HOST_KEY_TYPE_MAX || seen[o->types[i]])
                        return -EINVAL;
                seen[o->types[i]] = true;
        }
        if (o->rsa_bits != 0 && (o->rsa_bits < SSHKEYS_RSA_BITS_MIN || o->rsa_bits > SSHKEYS_RSA_BITS_MAX))
                return -EINVAL;
        if (o->ecdsa_bits != 0 && o->ecdsa_bits != 256 && o->ecdsa_bits != 384 && o->ecdsa_bits != 521)
                return -EINVAL;
        if (o->key_dir && o->key_dir[0] != '/')
                return -EINVAL;
        if (o->comment && !comment_valid(o->comment))
                return -EINVAL;
        if (o->unknown < 0 || o->unknown >= _UNKNOWN_KEYS_POLICY_MAX)
                return -EINVAL;
        return 0;
}

/* What is known stays for the record; a failed key shows no
 * fingerprint. */
static void result_failed(SshKeyResult *res, int error) {
        res->action = SSH_KEY_FAILED;
        res->error = error;
        res->bits = 0;
        res->crng_ready = false;
        res->fingerprint = mfree(res->fingerprint);
        res->public_key = mfree(res->public_key);
        res->comment = mfree(res->comment);
}

/* The key directory as the guest sees it, without a trailing '/' ("" for
 * "/"); NULL: out of memory. */
static char *key_dir_of(const SshKeysOptions *o) {
        char *key_dir = strdup(o->key_dir ?: SSHKEYS_KEY_DIR);

        for (size_t l = key_dir ? strlen(key_dir) : 0; l > 0 && key_dir[l - 1] == '/'; l--)
                key_dir[l - 1] = 0;
        return key_dir;
}

void ssh_key_results_done(SshKeyResult *r, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(r[i].path);
                free(r[i].pub_path);
                free(r[i].fingerprint);
                free(r[i].public_key);
                free(r[i].comment);
                r[i] = (SshKeyResult) {};
        }
}

int sshkeys_ensure(const SshKeysOptions *o, SshKeyResult *ret, size_t *ret_n) {
        SshKeyResult results[_HOST_KEY_TYPE_MAX] = {};
        SshKeysOptions opts;
        _cleanup_close_ int dir_fd = -EBADF;
        _cleanup_free_ char *key_dir = NULL, *dir = NULL;
        Context c;
        int r, failed = 0;

        if (!o || !ret || !ret_n)
                return -EINVAL;
        r = options_check(o);
        if (r < 0)
                return r;
        opts = *o;
        if (opts.rsa_bits == 0)
                opts.rsa_bits = SSHKEYS_RSA_BITS_DEFAULT;
        if (opts.ecdsa_bits == 0)
                opts.ecdsa_bits = SSHKEYS_ECDSA_BITS_DEFAULT;
        if (opts.comment && !opts.comment[0])
                opts.comment = NULL;
        if (opts.n_types == 0) {
                *ret_n = 0;
                return 0;
        }

        key_dir = key_dir_of(&opts);
        if (!key_dir)
                return -ENOMEM;
        dir = path_join_root(opts.root, key_dir[0] ? key_dir : "/");
        if (!dir)
                return -ENOMEM;

        c = (Context) { .o = &opts, .key_dir = key_dir, .dir = dir,
                        .start = opts.start_usec ?: now_usec(CLOCK_MONOTONIC) };
        owner_init(opts.root, &c.owner);

        r = mkdir_p(dir, 0755);
        if (r < 0)
                return log_error_errno(r, "Failed to create '%s': %m", dir);
        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0)
                return log_error_errno(errno, "Failed to open '%s': %m", dir);
        /* Two agents at once (a unit and an installer) would each write
         * keys and could pair one's .pub with the other's private key. */
        if (flock(dir_fd, LOCK_EX) < 0)
                log_warning_errno(errno, "Failed to lock '%s', going on without, leaving temporary files: %m", dir);
        else
                remove_stale_temp_files(dir_fd, dir);

        (void) ssh_init();
        for (size_t i = 0; i < opts.n_types; i++) {
                SshKeyResult *res = &results[i];

                *res = (SshKeyResult) { .type = opts.types[i] };
                r = ensure_one(&c, opts.types[i], res);
                if (r < 0) {
                        result_failed(res, r);
                        failed++;
                }
                res->at_usec = since_start(&c);
        }
        (void) ssh_finalize();

        memcpy(ret, results, opts.n_types * sizeof results[0]);
        *ret_n = opts.n_types;
        return failed;
}

int sshkeys_fingerprint_line(const SshKeyResult *r, char **ret) {
        char *s;

        if (!r->fingerprint || r->type < 0 || r->type >= _HOST_KEY_TYPE_MAX)
                return -EINVAL;
        if (asprintf(&s, "%u %s %s (%s)", r->bits, r->fingerprint, r->comment ?: "no comment",
                     host_key_type_display[r->type]) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static int by_pub_path(const void *a, const void *b) {
        const SshKeyResult *x = *(const SshKeyResult *const *) a, *y = *(const SshKeyResult *const *) b;
        return strcmp(x->pub_path, y->pub_path);
}

/* cloud-init's row of hashes around the fingerprint block. */
#define HASHES "#############################################################"

int sshkeys_format_console(const SshKeyResult *r, size_t n, bool fingerprints, bool keys, char **ret) {
        _cleanup_free_ const SshKeyResult **sorted = NULL;
        _cleanup_free_ char *buf = NULL;
        size_t m = 0, size = 0;
        FILE *f;
        int k = 0;

        sorted = calloc(n ?: 1, sizeof *sorted);
        if (!sorted)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (r[i].action != SSH_KEY_FAILED && r[i].fingerprint && r[i].public_key && r[i].pub_path)
                        sorted[m++] = &r[i];
        /* Its glob, ssh_host_*key.pub, lists them by name. */
        qsort(sorted, m, sizeof *sorted, by_pub_path);

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        if (fingerprints && m > 0) {
                fputs(HASHES "\n-----BEGIN SSH HOST KEY FINGERPRINTS-----\n", f);
                for (size_t i = 0; i < m && k >= 0; i++) {
                        _cleanup_free_ char *line = NULL;

                        k = sshkeys_fingerprint_line(sorted[i], &line);
                        if (k >= 0)
                                fprintf(f, "%s\n", line);
                }
                fputs("-----END SSH HOST KEY FINGERPRINTS-----\n" HASHES "\n", f);
        }
        if (keys && m > 0) {
                fputs("-----BEGIN SSH HOST KEY KEYS-----\n", f);
                for (size_t i = 0; i < m; i++)
                        fprintf(f, "%s\n", sorted[i]->public_key);
                fputs("-----END SSH HOST KEY KEYS-----\n", f);
        }
        if (fclose(f) != 0 || !buf)
                return -ENOMEM;
        if (k < 0)
                return k;
        *ret = TAKE_PTR(buf);
        return 0;
}

int sshkeys_state_build(const InstanceState *old, const InstanceId *id, const SshKeyResult *r, size_t n,
                        InstanceState *ret) {
        InstanceState s = { .id = *id };
        char now[JSON_TIME_MAX];

        json_format_time(time(NULL), now, sizeof now);

        for (size_t i = 0; i < n && s.n_keys < INSTANCE_KEYS_MAX; i++) {
                const InstanceKey *prev;
                const char *reason;
                InstanceKey *k = &s.keys[s.n_keys];
                bool made = r[i].action == SSH_KEY_CREATED || r[i].action == SSH_KEY_REPLACED;

                if (r[i].action == SSH_KEY_FAILED || !r[i].fingerprint)
                        continue;
                s.n_keys++;
                prev = made ? NULL : instance_state_find_key(old, r[i].fingerprint);
                k->bits = r[i].bits;
                k->crng_ready = made ? r[i].crng_ready : prev ? prev->crng_ready : -1;
                k->type = strdup(host_key_type_to_string(r[i].type));
                k->path = strdup(r[i].path);
                k->fingerprint = strdup(r[i].fingerprint);
                if (made)
                        k->created = strdup(now);
                else if (prev && prev->created)
                        k->created = strdup(prev->created);
                /* Why the key is this machine's stays with it while it is
                 * kept; a repair of its .pub changes nothing about that. */
                reason = made || r[i].action == SSH_KEY_ADOPTED || !prev ? r[i].reason : prev->reason;
                if (reason)
                        k->reason = strdup(reason);
                if (!k->type || !k->path || !k->fingerprint || ((made || (prev && prev->created)) && !k->created) ||
                    (reason && !k->reason)) {
                        instance_state_done(&s);
                        return -ENOMEM;
                }
        }
        *ret = s;
        return 0;
}

/* The public key of a .pub line, "ALGO BASE64[ COMMENT]". */
static int import_pub_line(const char *text, ssh_key *ret) {
        _cleanup_free_ char *algo = NULL, *b64 = NULL;
        const char *p = text + strspn(text, " \t");
        size_t al = strcspn(p, " \t\r\n"), bl;

        algo = strndup(p, al);
        p += al + strspn(p + al, " \t");
        bl = strcspn(p, " \t\r\n");
        b64 = strndup(p, bl);
        if (!algo || !b64)
                return -ENOMEM;
        if (ssh_pki_import_pubkey_base64(b64, ssh_key_type_from_name(algo), ret) != SSH_OK)
                return -EBADMSG;
        return 0;
}

/* sshd serves the public half of the private key: a tool that writes
 * only the private key (leaving our .pub) has replaced ours all the same,
 * so the private key is what is compared.  It is root's (0600), and
 * status serves unprivileged users too: for them the .pub, which every
 * tool we know writes along with the key (ssh-keygen, cloud-init's
 * ssh_keys), stands in, and the result says that is what was read. */
int sshkeys_check_on_disk(const char *root, const char *path, const char *fingerprint, SshKeyDiskCheck *ret) {
        _cleanup_free_ char *priv = NULL, *pub = NULL, *fp = NULL;
        _cleanup_ssh_key_ ssh_key key = NULL;
        SshKeyDiskCheck c = {};
        const char *reason = NULL;
        SecretBuf b = {};
        int r;

        priv = path_join_root(root, path);
        if (!priv || asprintf(&pub, "%s.pub", priv) < 0)
                return -ENOMEM;

        (void) ssh_init();
        r = read_key_file(priv, NULL, &b, &reason);
        if (r >= 0) {
                r = ssh_pki_import_privkey_base64(b.data, NULL, NULL, NULL, &key) == SSH_OK ? 0 : -EBADMSG;
                secret_buf_done(&b);
        } else if (r == -EACCES || r == -EPERM) {
                c.public_only = true;
                r = read_key_file(pub, NULL, &b, &reason);
                if (r == -ENOENT)
                        /* The key is there; what it is cannot be told. */
                        r = -EACCES;
                if (r >= 0) {
                        r = import_pub_line(b.data, &key);
                        secret_buf_done(&b);
                }
        }
        if (r >= 0)
                r = key_fingerprint(key, &fp);
        (void) ssh_finalize();

        if (r == -ENOMEM)
                return r;
        if (r >= 0)
                c.state = streq_ptr(fp, fingerprint) ? SSH_KEY_ON_DISK_SAME : SSH_KEY_ON_DISK_REPLACED;
        else if (r == -ENOENT)
                c.state = SSH_KEY_ON_DISK_MISSING;
        else if (r == -EBADMSG)
                /* Something that is no key we read: not the one we made. */
                c.state = SSH_KEY_ON_DISK_REPLACED;
        else {
                c.state = SSH_KEY_ON_DISK_UNKNOWN;
                c.error = r;
        }
        c.fingerprint = TAKE_PTR(fp);
        *ret = c;
        return 0;
}

void ssh_key_disk_check_done(SshKeyDiskCheck *c) {
        free(c->fingerprint);
        *c = (SshKeyDiskCheck) {};
}

SshKeysExisting sshkeys_decide(const SshKeysFacts *f, const char **ret_reason) {
        const char *reason = NULL;
        SshKeysExisting e;

        if (f->fork) {
                /* Whatever the record says: the keys it lists, complete
                 * or pending, are every clone's now. */
                e = SSH_KEYS_REPLACE_FORK;
                reason = SSHKEYS_REASON_VM_FORK;
        } else if (f->replace) {
                e = SSH_KEYS_REPLACE;
                reason = SSHKEYS_REASON_ASKED;
        } else if (f->record && f->change == INSTANCE_NEW) {
                e = SSH_KEYS_REPLACE;
                reason = SSHKEYS_REASON_NEW_INSTANCE;
        } else if (f->record && f->pending) {
                /* Decided in an earlier run, on signs that may be gone
                 * now (a committed machine-id): half the keys may be new
                 * already, and the rest the image's. */
                e = SSH_KEYS_REPLACE_UNKNOWN;
                reason = f->pending_reason ?: SSHKEYS_REASON_PENDING;
        } else if (f->record)
                e = SSH_KEYS_KEEP;
        else
                /* Nothing says the keys were made behind the gate for this
                 * instance: an image builder's, or another tool's. */
                switch (f->policy) {
                case UNKNOWN_KEYS_ALWAYS:
                        e = SSH_KEYS_REPLACE_UNKNOWN;
                        reason = SSHKEYS_REASON_UNKNOWN_ALWAYS;
                        break;
                case UNKNOWN_KEYS_NEVER:
                        e = SSH_KEYS_ADOPT;
                        reason = SSHKEYS_REASON_ADOPTED_NEVER;
                        break;
                default:
                        /* Before its first boot no client can have seen
                         * this machine's keys: replacing them costs
                         * nothing.  After it, they are a running server's
                         * identity, which only its owner may change. */
                        e = f->first_boot ? SSH_KEYS_REPLACE_UNKNOWN : SSH_KEYS_ADOPT;
                        reason = f->first_boot ? SSHKEYS_REASON_FIRST_BOOT : SSHKEYS_REASON_ADOPTED;
                }
        *ret_reason = reason;
        return e;
}

/* The reason a pending record gives, as the static string results carry:
 * one of ours, or SSHKEYS_REASON_PENDING for text another version wrote. */
static const char *pending_reason_static(const char *s) {
        static const char *const known[] = { SSHKEYS_REASON_FIRST_BOOT, SSHKEYS_REASON_UNKNOWN_ALWAYS,
                                             SSHKEYS_REASON_VM_FORK };

        for (size_t i = 0; s && i < ELEMENTSOF(known); i++)
                if (streq(s, known[i]))
                        return known[i];
        return NULL;
}

/* What sshkeys_ensure_instance() and sshkeys_record_decision() both
 * start from: the record, this instance and the decision. */
typedef struct InstanceDecision {
        const char *root; /* o->root, for the instance key */
        char *state_path;
        InstanceState old;
        bool loaded;       /* old was read */
        InstanceId id;
        SshKeysFacts facts;
        SshKeysExisting existing;
        const char *reason; /* static */
} InstanceDecision;

static void instance_decision_done(InstanceDecision *d) {
        free(d->state_path);
        instance_state_done(&d->old);
        *d = (InstanceDecision) {};
}

static int instance_decide(const SshKeysOptions *o, InstanceDecision *d) {
        bool unchecked;
        int r;

        *d = (InstanceDecision) { .root = o->root };
        r = options_check(o);
        if (r < 0)
                return r;
        d->state_path = path_join_root(o->root, INSTANCE_STATE_FILE);
        if (!d->state_path)
                return log_oom();
        instance_id_read(o->root, &d->id);
        r = instance_state_load(d->state_path, &d->old);
        /* We write the record atomically: one that is not a record of ours
         * was not left by us, and vouches for nothing, as none.  Failing
         * to read it (I/O) says nothing about what it holds. */
        if (r == -EBADMSG)
                log_warning("'%s' is not a seedbed record: taking the SSH host keys as unknown.", d->state_path);
        else if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Ignoring the unreadable record '%s': %m", d->state_path);
        d->loaded = r >= 0;
        d->facts = (SshKeysFacts) {
                .fork = o->fork,
                .replace = o->replace,
                .record = r >= 0 || (r != -ENOENT && r != -EBADMSG),
                .change = instance_compare(d->loaded ? &d->old.id : NULL, &d->id, &unchecked),
                .policy = o->unknown,
                .pending = d->loaded && d->old.pending,
                .pending_reason = d->loaded ? pending_reason_static(d->old.pending_reason) : NULL,
        };
        if (unchecked)
                instance_notice_uuid_unchecked(o->root, d->state_path, &d->id);
        if (!d->facts.record && d->facts.policy == UNKNOWN_KEYS_FIRST_BOOT) {
                FirstBootFacts fb;

                first_boot_facts_read(o->root, &fb);
                d->facts.first_boot = first_boot_decide(&fb);
        }
        d->existing = sshkeys_decide(&d->facts, &d->reason);
        return 0;
}

/* Saves the pending record: this instance, the decision, and the keys
 * already made for it (none, or those state lists; state may be NULL). */
static int save_pending(const InstanceDecision *d, InstanceState *state) {
        InstanceState empty = { .id = d->id };
        InstanceState *s = state ?: &empty;
        /* A replacement after a fork stays one until it is finished. */
        bool fork = d->existing == SSH_KEYS_REPLACE_FORK ||
                    (d->facts.pending && streq_ptr(d->old.pending, INSTANCE_PENDING_VM_FORK));
        int r;

        s->pending = strdup(fork ? INSTANCE_PENDING_VM_FORK : INSTANCE_PENDING_REPLACE_UNKNOWN);
        s->pending_reason = strdup(d->reason);
        r = s->pending && s->pending_reason ? instance_state_save(d->root, d->state_path, s) : -ENOMEM;
        if (!state)
                instance_state_done(&empty);
        return r;
}

int sshkeys_record_decision(const SshKeysOptions *o) {
        _cleanup_(instance_decision_done) InstanceDecision d = {};
        int r;

        r = instance_decide(o, &d);
        if (r < 0)
                return r;
        /* After a fork, whatever is pending: the keys it lists, if any,
         * were made before this change. */
        if (d.existing != SSH_KEYS_REPLACE_FORK && (d.existing != SSH_KEYS_REPLACE_UNKNOWN || d.facts.pending))
                return 0;
        r = save_pending(&d, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to record in '%s' that the SSH host keys are to be replaced: %m",
                                       d.state_path);
        log_notice("No SSH host key was made, but the keys in place are to be replaced (%s): recorded in '%s' "
                   "for the next run.", d.reason, d.state_path);
        return 1;
}

int sshkeys_ensure_instance(const SshKeysOptions *o, SshKeyResult *ret, size_t *ret_n, InstanceChange *ret_change) {
        _cleanup_(instance_decision_done) InstanceDecision d = {};
        InstanceState now = {};
        SshKeysOptions opts = *o;
        bool pending;
        int r, failed;

        r = instance_decide(o, &d);
        if (r < 0)
                return r;
        pending = d.existing == SSH_KEYS_REPLACE_UNKNOWN || d.existing == SSH_KEYS_REPLACE_FORK;
        if (d.existing == SSH_KEYS_REPLACE_FORK)
                log_notice("The VM generation ID changed (this running VM was restored from a snapshot or cloned): "
                           "replacing the SSH host keys.");
        else if (d.facts.record && d.facts.change == INSTANCE_NEW)
                log_notice("This is a new instance of the image (its UUID or machine-id changed): replacing the "
                           "SSH host keys.");
        else if (d.facts.pending)
                log_notice("An earlier run began to replace the SSH host keys found with no seedbed record (%s), "
                           "and did not finish: replacing the ones it did not make.", d.reason);
        else if (!d.facts.record)
                log_debug("No seedbed record vouches for the SSH host keys in place: %s any (ssh.replace-unknown: "
                          "%s%s).", pending ? "replacing" : "adopting", unknown_keys_policy_names[d.facts.policy],
                          d.facts.policy != UNKNOWN_KEYS_FIRST_BOOT ? ""
                          : d.facts.first_boot                      ? ", and this is the image's first boot"
                                                                    : ", and this machine has booted before");
        if (ret_change)
                *ret_change = d.facts.change;

        /* The decision first, then the keys: once the machine-id is
         * committed nothing else would say this was the first boot, and a
         * run that stops half way would leave the next to adopt the
         * image's keys.  Without it the keys are still replaced: better
         * than leaving the image's, though a run that stops now may
         * leave them to the next. */
        if (pending && (!d.facts.pending || d.existing == SSH_KEYS_REPLACE_FORK)) {
                r = save_pending(&d, NULL);
                if (r < 0)
                        log_error_errno(r, "Failed to record in '%s' that the SSH host keys are being replaced, "
                                        "going on: %m", d.state_path);
        }

        opts.replace = pending || d.existing == SSH_KEYS_REPLACE;
        opts.adopt = d.existing == SSH_KEYS_ADOPT;
        opts.reason = d.reason;
        /* Not for a new instance, nor when all are asked to be replaced,
         * nor after a fork (what a pending record lists was made before
         * it). */
        opts.vouched = d.existing == SSH_KEYS_REPLACE_UNKNOWN && d.facts.pending ? &d.old : NULL;
        failed = sshkeys_ensure(&opts, ret, ret_n);
        if (failed < 0)
                return log_error_errno(failed, "Cannot make SSH host keys: %m");

        /* Only a complete set is recorded as such: a key that failed in a
         * replacement may still be the old instance's (or the image's),
         * and must be replaced next time.  A pending replacement records
         * the keys it made, which the next run keeps. */
        if (failed > 0 && !pending)
                return failed;
        r = sshkeys_state_build(d.loaded ? &d.old : NULL, &d.id, ret, *ret_n, &now);
        if (r >= 0)
                r = failed > 0 ? save_pending(&d, &now) : instance_state_save(d.root, d.state_path, &now);
        if (r < 0)
                log_error_errno(r, "Failed to write '%s': %m", d.state_path);
        instance_state_done(&now);
        return failed;
}

SshConsoleDecision sshkeys_console_decide(const SshConsoleFacts *f) {
        if (!f->blocks)
                return SSH_CONSOLE_OFF;
        if (!f->cloud_init)
                return SSH_CONSOLE_PRINTED_BY_AGENT;
        if (!f->record)
                return SSH_CONSOLE_NO_RECORD;
        if (!f->keys_made)
                return SSH_CONSOLE_NO_NEW_KEYS;
        /* It runs after every key writer of cloud-init's: its blocks are
         * as current as ours would be. */
        if (f->cloud_init_printed)
                return SSH_CONSOLE_PRINTED_BY_CLOUD_INIT;
        return SSH_CONSOLE_PRINT;
}

static const char *const ssh_console_reason_table[_SSH_CONSOLE_DECISION_MAX] = {
        [SSH_CONSOLE_OFF] = "ssh.console selects no block",
        [SSH_CONSOLE_PRINTED_BY_AGENT] = "cloud-init does not run in this boot: the agent printed them when it made "
                                         "the keys",
        [SSH_CONSOLE_NO_RECORD] = "there is no seedbed record of this boot",
        [SSH_CONSOLE_NO_NEW_KEYS] = "seedbed made no host key in this boot",
        [SSH_CONSOLE_PRINTED_BY_CLOUD_INIT] = "cloud-init's keys-to-console module printed them in this boot",
};

const char *ssh_console_decision_reason(SshConsoleDecision d) {
        if (d < 0 || d >= _SSH_CONSOLE_DECISION_MAX)
                return NULL;
        return ssh_console_reason_table[d];
}

/* One configured key as it is on disk, for sshkeys_load(). */
static int load_one(const SshKeysOptions *o, const char *key_dir, HostKeyType t, SshKeyResult *res) {
        _cleanup_free_ char *priv = NULL, *pub = NULL, *line = NULL, *comment = NULL;
        _cleanup_ssh_key_ ssh_key key = NULL;
        _cleanup_close_ int fd = -EBADF;
        const char *reason = NULL;
        SecretBuf b = {};
        int r;

        if (asprintf(&res->path, "%s/ssh_host_%s_key", key_dir, host_key_type_to_string(t)) < 0) {
                res->path = NULL;
                return -ENOMEM;
        }
        if (asprintf(&res->pub_path, "%s.pub", res->path) < 0) {
                res->pub_path = NULL;
                return -ENOMEM;
        }
        priv = path_join_root(o->root, res->path);
        pub = path_join_root(o->root, res->pub_path);
        if (!priv || !pub)
                return -ENOMEM;

        r = load_private(priv, t, &key, &fd, &reason);
        if (r == -EACCES || r == -EPERM) {
                /* Not root: the .pub, which every key writer we know
                 * writes with the key, stands in. */
                r = read_key_file(pub, NULL, &b, &reason);
                if (r >= 0) {
                        r = import_pub_line(b.data, &key);
                        secret_buf_done(&b);
                }
                if (r >= 0 && host_key_type_of(key) != t)
                        r = -EBADMSG;
        }
        if (r < 0) {
                res->reason = r == -ENOENT ? "missing" : reason;
                return r;
        }
        r = check_pub(pub, key, &line, &comment, &reason);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                /* sshd serves the private key: its public half is shown. */
                log_warning("'%s' does not hold the key sshd serves (%s): showing the public half of '%s'.",
                            res->pub_path, r == -ENOENT ? "missing" : strna(reason), res->path);
                r = pub_line(key, NULL, &line);
                if (r < 0)
                        return r;
        }
        return result_fill(res, key, TAKE_PTR(line), TAKE_PTR(comment));
}

int sshkeys_load(const SshKeysOptions *o, SshKeyResult *ret, size_t *ret_n) {
        _cleanup_free_ char *key_dir = NULL;
        int r, failed = 0;

        if (!o || !ret || !ret_n)
                return -EINVAL;
        r = options_check(o);
        if (r < 0)
                return r;
        key_dir = key_dir_of(o);
        if (!key_dir)
                return -ENOMEM;

        (void) ssh_init();
        for (size_t i = 0; i < o->n_types; i++) {
                SshKeyResult *res = &ret[i];

                *res = (SshKeyResult) { .type = o->types[i], .action = SSH_KEY_KEPT };
                r = load_one(o, key_dir, o->types[i], res);
                if (r == -ENOMEM) {
                        ssh_key_results_done(ret, i + 1);
                        (void) ssh_finalize();
                        return r;
                }
                if (r < 0) {
                        result_failed(res, r);
                        failed++;
                }
        }
        (void) ssh_finalize();
        *ret_n = o->n_types;
        return failed;
}
