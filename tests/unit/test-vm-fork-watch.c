/* SPDX-License-Identifier: MIT */
/* The kernel log's records, as /dev/kmsg gives them, and the one line of
 * a VM generation change among them. */
#include <sys/socket.h>
#include <unistd.h>

#include "testmain.h"
#include "vm-fork-watch.h"

START_TEST(test_parse_table) {
        static const struct {
                const char *text;
                int r;
                bool fork;
                uint64_t seq;
                usec_t usec;
                const char *message;
        } table[] = {
                { "5,1234,115116128,-;random: crng reseeded due to virtual machine fork\n", 0, true, 1234, 115116128,
                  VM_FORK_KMSG_MESSAGE },
                /* Newer kernels add fields after the flags; continuation
                 * lines follow the message. */
                { "5,7,9,-,caller=T1;random: crng reseeded due to virtual machine fork\n SUBSYSTEM=acpi\n", 0, true, 7,
                  9, VM_FORK_KMSG_MESSAGE },
                { "5,7,9;random: crng reseeded due to virtual machine fork", 0, true, 7, 9, VM_FORK_KMSG_MESSAGE },
                /* Another line, or the same text longer or shorter. */
                { "6,1,2,-;random: crng init done\n", 0, false, 1, 2, "random: crng init done" },
                { "5,1,2,-;random: crng reseeded due to virtual machine fork!\n", 0, false, 1, 2, NULL },
                { "5,1,2,-;random: crng reseeded due to virtual machine\n", 0, false, 1, 2, NULL },
                /* Written to /dev/kmsg by a process: the user facility. */
                { "13,1,2,-;random: crng reseeded due to virtual machine fork\n", 0, false, 1, 2, NULL },
                /* Not records. */
                { "", -EBADMSG },
                { "random: crng reseeded due to virtual machine fork\n", -EBADMSG },
                { "5,x,2,-;m\n", -EBADMSG },
                { "5,1,,-;m\n", -EBADMSG },
                { "5,99999999999999999999,2,-;m\n", -EBADMSG },
                { "5;m\n", -EBADMSG },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                KmsgRecord r;
                int k = kmsg_record_parse(table[i].text, strlen(table[i].text), &r);

                ck_assert_msg(k == table[i].r, "row %zu: %d", i, k);
                if (k < 0)
                        continue;
                ck_assert_msg(kmsg_record_is_vm_fork(&r) == table[i].fork, "row %zu", i);
                ck_assert_uint_eq(r.seq, table[i].seq);
                ck_assert_uint_eq(r.usec, table[i].usec);
                if (table[i].message) {
                        ck_assert_uint_eq(r.message_len, strlen(table[i].message));
                        ck_assert(memcmp(r.message, table[i].message, r.message_len) == 0);
                }
        }
}
END_TEST

/* Which changes the watcher acts on: each fork line once, those after
 * the last it acted on in this boot. */
START_TEST(test_acts_table) {
        static const struct {
                const char *text;
                bool have_last;
                uint64_t last;
                bool acts;
        } table[] = {
                { "5,3,30,-;" VM_FORK_KMSG_MESSAGE, false, 0, true },
                { "5,3,30,-;" VM_FORK_KMSG_MESSAGE, true, 2, true },
                { "5,3,30,-;" VM_FORK_KMSG_MESSAGE, true, 3, false },
                { "5,3,30,-;" VM_FORK_KMSG_MESSAGE, true, 9, false },
                { "5,0,30,-;" VM_FORK_KMSG_MESSAGE, false, 0, true },
                { "6,4,40,-;random: crng init done", false, 0, false },
                { "13,4,40,-;" VM_FORK_KMSG_MESSAGE, false, 0, false },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                KmsgRecord r;

                ck_assert_int_eq(kmsg_record_parse(table[i].text, strlen(table[i].text), &r), 0);
                ck_assert_msg(vm_fork_watch_acts(&r, table[i].have_last, table[i].last) == table[i].acts, "row %zu", i);
        }
}
END_TEST

typedef struct Seen {
        unsigned n;
        uint64_t seq[8];
} Seen;

static int seen_fork(const KmsgRecord *r, void *userdata) {
        Seen *s = userdata;

        ck_assert_uint_lt(s->n, ELEMENTSOF(s->seq));
        s->seq[s->n++] = r->seq;
        return s->n == 1 ? -EIO : 0; /* a failure is logged, the watch goes on */
}

/* The watch itself, over a socket that hands over one record per read as
 * /dev/kmsg does: each fork line after the last one acted on is acted on
 * once, every other record is not, and the end of input ends it. */
START_TEST(test_watch) {
        static const char *const records[] = {
                "5,2,20,-;" VM_FORK_KMSG_MESSAGE "\n", /* acted on before this start */
                "6,3,10,-;random: crng init done\n",
                "5,4,20,-;not a fork\n",
                "5,5,30,-;" VM_FORK_KMSG_MESSAGE "\n",
                "13,6,40,-;" VM_FORK_KMSG_MESSAGE "\n",
                "garbage",
                "5,5,30,-;" VM_FORK_KMSG_MESSAGE "\n", /* the same record again */
                "5,8,50,-;" VM_FORK_KMSG_MESSAGE "\n",
        };
        int sv[2];
        Seen seen = {};

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        for (size_t i = 0; i < ELEMENTSOF(records); i++)
                ck_assert_int_eq(write(sv[1], records[i], strlen(records[i])), (ssize_t) strlen(records[i]));
        close(sv[1]);
        ck_assert_int_eq(vm_fork_watch(sv[0], true, 2, seen_fork, &seen), 0);
        ck_assert_uint_eq(seen.n, 2);
        ck_assert_uint_eq(seen.seq[0], 5);
        ck_assert_uint_eq(seen.seq[1], 8);
        close(sv[0]);
}
END_TEST

static Suite *vm_fork_watch_suite(void) {
        Suite *s = suite_create("vm-fork-watch");
        TCase *tc = tcase_create("kmsg");

        tcase_add_test(tc, test_parse_table);
        tcase_add_test(tc, test_acts_table);
        tcase_add_test(tc, test_watch);
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(vm_fork_watch_suite)
