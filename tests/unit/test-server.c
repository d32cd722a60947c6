/* SPDX-License-Identifier: MIT */
/* The server: whose budget a peer draws from, and EGD sessions driven by
 * the real loop over a socketpair().  A request stays in its socket
 * until its answer is sent, so a device that dies meanwhile leaves it to
 * the next one: the tests look at the server's receive queue
 * (FIONREAD), "crash" a server by freeing it and starting another on the
 * same socket, and hand one over through its state. */
#include <check.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "egd.h"
#include "fileio.h"
#include "json.h"
#include "loop.h"
#include "macro.h"
#include "server.h"
#include "source.h"
#include "state.h"
#include "testmain.h"
#include "vhost-front.h"

static const struct {
        const char *cgroup;
        unsigned uid;
        const char *want;
} rows[] = {
        /* libvirt: the VM's scope, whatever sub-cgroup the thread is in. */
        { "/machine.slice/machine-qemu\\x2d1\\x2dweb.scope/libvirt/emulator", 64055,
          "cgroup:/machine.slice/machine-qemu\\x2d1\\x2dweb.scope" },
        { "/machine.slice/machine-qemu\\x2d1\\x2dweb.scope/libvirt/vcpu0", 64055,
          "cgroup:/machine.slice/machine-qemu\\x2d1\\x2dweb.scope" },
        { "/machine.slice/machine-qemu\\x2d2\\x2ddb.scope", 64055, "cgroup:/machine.slice/machine-qemu\\x2d2\\x2ddb.scope" },
        /* A name that merely starts like a scope is a cgroup like others. */
        { "/machine.slice/machine-x.scopey/a", 0, "cgroup:/machine.slice/machine-x.scopey/a" },
        /* Any other cgroup: a service, a user's session. */
        { "/system.slice/qemu-web.service", 0, "cgroup:/system.slice/qemu-web.service" },
        { "/user.slice/user-1000.slice/session-3.scope", 1000, "cgroup:/user.slice/user-1000.slice/session-3.scope" },
        /* The root cgroup is everybody's: the user decides. */
        { "/", 0, "uid:0" },
        { "/", 65534, "uid:65534" },
        { "", 1000, "uid:1000" },
        { NULL, 1000, "uid:1000" },
};

START_TEST(test_budget_key) {
        char buf[600];

        budget_key(rows[_i].cgroup, (uid_t) rows[_i].uid, buf, sizeof buf);
        ck_assert_str_eq(buf, rows[_i].want);
}
END_TEST

/* ---- EGD sessions ---- */

#define MSEC USEC_PER_MSEC

/* One "process": a loop and a server on it.  The client's end of the
 * socketpair is watched by the same loop, so the test reads answers as
 * they come while the server serves. */
static Loop *loop;
static Server srv;
static bool srv_up;
static SourceSet sources;
static unsigned fds_before;

static int cfd = -EBADF; /* the client's end */
static int sfd = -EBADF; /* the server's end (the server's to close) */
static int probe = -EBADF; /* the test's own copy of it, once the server's is unknown */
static LoopIo *cio;
static uint8_t sent[4096];
static size_t sent_len;
static uint8_t got[256 * 1024];
static size_t got_len;
static bool got_eof;
static int got_error; /* how the connection ended, if not by an EOF */
static char pid_text[32]; /* what get-pid answers: the server is this process */

static usec_t deadline;
static bool (*until)(void);

static usec_t test_prepare(void *userdata) {
        return MIN(srv_up ? server_next_wake(&srv) : USEC_INFINITY, deadline);
}

static void test_tick(usec_t now, void *userdata) {
        if (srv_up)
                server_tick(&srv, now);
        if (until && until())
                loop_exit(loop, 0);
        else if (now >= deadline)
                loop_exit(loop, -ETIMEDOUT);
}

static void on_client(LoopIo *io, int fd, uint32_t events, void *userdata) {
        ssize_t k;

        ck_assert_uint_lt(got_len, sizeof got);
        k = recv(fd, got + got_len, sizeof got - got_len, MSG_DONTWAIT);
        if (k > 0)
                got_len += (size_t) k;
        else if (k == 0 || errno != EAGAIN) {
                got_eof = true;
                got_error = k < 0 ? errno : 0;
                loop_io_free(cio);
                cio = NULL;
        }
}

/* A client that does not read leaves its answers to the server's
 * buffers. */
static void watch_client(bool on) {
        if (on && !cio && !got_eof)
                ck_assert_int_eq(loop_add_io(loop, cfd, EPOLLIN, on_client, NULL, &cio), 0);
        else if (!on && cio) {
                loop_io_free(cio);
                cio = NULL;
        }
}

/* Runs the loop until cond() holds (true) or timeout passed (false). */
static bool run_until(bool (*cond)(void), usec_t timeout) {
        int r;

        until = cond;
        deadline = now_usec(CLOCK_MONOTONIC) + timeout;
        r = loop_run(loop);
        until = NULL;
        return r == 0;
}

static void run_for(usec_t t) {
        ck_assert(!run_until(NULL, t));
}

/* A VM budget of bytes per period with burst; the host's unlimited. */
static void start_process(uint64_t bytes, usec_t period, uint64_t burst) {
        RateConfig vm = { .bytes = bytes, .period = period, .burst = burst }, host = {};

        ck_assert_ptr_null(loop);
        ck_assert_int_eq(loop_new(&loop), 0);
        loop_set_hooks(loop, test_prepare, test_tick, NULL);
        ck_assert_int_eq(server_init(&srv, loop, &sources, &vm, &host, NULL), 0);
        srv_up = true;
        watch_client(true);
}

/* Frees the server and its loop: they read nothing more on the way. */
static void stop_process(void) {
        watch_client(false);
        if (srv_up)
                server_done(&srv);
        srv_up = false;
        loop = loop_free(loop);
}

static void connect_client(uint64_t bytes, usec_t period, uint64_t burst) {
        start_process(bytes, period, burst);
        ck_assert_int_eq(server_add_client(&srv, TRANSPORT_EGD, sfd), 0);
}

static void setup(void) {
        int sv[2];

        fds_before = vhost_front_count_fds();
        sources = (SourceSet) {};
        ck_assert_int_eq(source_set_add(&sources, SOURCE_GETRANDOM, NULL, 6), 0);
        ck_assert_uint_eq(source_set_start(&sources, now_usec(CLOCK_MONOTONIC)), 1);
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        cfd = sv[0];
        sfd = sv[1];
        sent_len = got_len = 0;
        got_eof = false;
        got_error = 0;
        (void) snprintf(pid_text, sizeof pid_text, "%ld", (long) getpid());
}

static void teardown(void) {
        if (loop)
                stop_process();
        cfd = safe_close(cfd);
        probe = safe_close(probe);
        source_set_free(&sources);
        ck_assert_uint_eq(vhost_front_count_fds(), fds_before);
}

static void send_bytes(const void *p, size_t n) {
        ck_assert_uint_le(sent_len + n, sizeof sent);
        ck_assert_int_eq(send(cfd, p, n, MSG_NOSIGNAL), (ssize_t) n);
        memcpy(sent + sent_len, p, n);
        sent_len += n;
}

/* Request bytes in the server's receive queue, not consumed. */
static int server_inq(void) {
        int n;

        ck_assert_int_eq(ioctl(probe >= 0 ? probe : sfd, FIONREAD, &n), 0);
        return n;
}

static usec_t cpu_usec(void) {
        struct timespec ts;

        ck_assert_int_eq(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts), 0);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

/* Walks the answers in got to the requests in sent[0, n): the bytes they
 * take, or -1 while some are missing.  Each answer must have its shape:
 * a level in whole bytes, a count no larger than asked, this process's
 * pid. */
static ssize_t answers_len(size_t n) {
        size_t off = 0, at = 0;

        while (off < n) {
                EgdRequest r;
                ssize_t k = egd_parse(sent + off, n - off, &r, NULL);
                size_t need = 0;

                ck_assert_int_ge(k, 0);
                if (k == 0)
                        break; /* a request cut short: no answer */
                off += (size_t) k;
                switch (r.command) {
                case EGD_GET_LEVEL:
                        need = 4;
                        break;
                case EGD_READ_BLOCKING:
                        need = r.length;
                        break;
                case EGD_READ_NONBLOCK:
                case EGD_GET_PID:
                        if (at >= got_len)
                                return -1;
                        need = 1 + (size_t) got[at];
                        break;
                case EGD_WRITE:
                        break;
                }
                if (at + need > got_len)
                        return -1;
                if (r.command == EGD_GET_LEVEL)
                        ck_assert_uint_eq(got[at + 3] % 8, 0);
                if (r.command == EGD_READ_NONBLOCK)
                        ck_assert_uint_le(got[at], r.length);
                if (r.command == EGD_GET_PID) {
                        ck_assert_uint_eq(got[at], strlen(pid_text));
                        ck_assert(memcmp(got + at + 1, pid_text, got[at]) == 0);
                }
                at += need;
        }
        return (ssize_t) at;
}

static bool all_answered(void) {
        return answers_len(sent_len) >= 0;
}

static size_t prefix_len;
static bool prefix_answered(void) {
        return answers_len(prefix_len) >= 0;
}

static size_t want_got;
static bool got_enough(void) {
        return got_len >= want_got;
}

static bool got_closed(void) {
        return got_eof;
}

/* Every request got its answer, exactly: nothing more comes, and
 * nothing is left in the socket. */
static void check_all_answered(void) {
        size_t n;

        ck_assert(run_until(all_answered, 10 * USEC_PER_SEC));
        n = got_len;
        run_for(200 * MSEC);
        ck_assert_uint_eq(got_len, n);
        ck_assert_int_eq(answers_len(sent_len), (ssize_t) got_len);
        ck_assert_int_eq(server_inq(), 0);
}

static uint64_t vm_requests(void) {
        uint64_t n = 0;

        for (const VmStats *v = srv.stats; v; v = v->next)
                n += v->requests;
        return n;
}

/* A throttled request waits in the socket, not in the device: it leaves
 * the socket when its answer has been sent. */
START_TEST(test_throttled_request_stays_in_socket) {
        connect_client(64, USEC_PER_SEC, 64);
        send_bytes("\x02\x40\x02\x40", 4);

        want_got = 64;
        ck_assert(run_until(got_enough, 2 * USEC_PER_SEC));
        /* The bucket is empty: the second waits about a second. */
        run_for(100 * MSEC);
        ck_assert_uint_eq(got_len, 64);
        ck_assert_int_eq(server_inq(), 2);

        want_got = 128;
        ck_assert(run_until(got_enough, 3 * USEC_PER_SEC));
        ck_assert_int_eq(server_inq(), 0);
        check_all_answered();
        ck_assert_uint_eq(got_len, 128);
}
END_TEST

/* Every kind of request pipelined in one write, a throttled read among
 * them: answers in order, each once; while the read waits, it and every
 * request behind it are still in the socket. */
START_TEST(test_pipelined_mixed) {
        static const uint8_t head[] = {
                0x02, 0x05,                               /* 5 bytes */
                0x02, 0x00,                               /* nothing */
                0x01, 0x08,                               /* 08 and 8 bytes */
                0x00,                                     /* level */
                0x04,                                     /* pid */
                0x03, 0x00, 0x10, 0x04, 0xaa, 0xbb, 0xcc, 0xdd, /* write: nothing */
        };
        static const uint8_t tail[] = {
                0x02, 0x80,             /* 128 bytes: more than the bucket holds */
                0x01, 0x00,             /* 00 */
                0x03, 0x00, 0x00, 0x00, /* an empty write: nothing */
                0x01, 0x04,             /* MM <= 4 and MM bytes */
                0x02, 0x03,             /* 3 bytes */
                0x00,                   /* level */
        };
        uint8_t all[sizeof head + sizeof tail];

        /* 128 bytes a second: the 128-byte read waits about half a
         * second for what the first ones left of the burst. */
        connect_client(64, 500 * MSEC, 64);
        memcpy(all, head, sizeof head);
        memcpy(all + sizeof head, tail, sizeof tail);
        send_bytes(all, sizeof all);

        prefix_len = sizeof head;
        ck_assert(run_until(prefix_answered, 2 * USEC_PER_SEC));
        run_for(50 * MSEC);
        ck_assert_uint_lt(got_len, (size_t) answers_len(prefix_len) + 128);
        ck_assert_int_eq(server_inq(), (int) sizeof tail);

        check_all_answered();
        ck_assert_uint_eq(vm_requests(), 10); /* writes are no requests */
        ck_assert_uint_eq(srv.egd_bytes_received, 4);
        ck_assert_uint_eq(srv.n_clients[TRANSPORT_EGD], 1);
}
END_TEST

/* A device killed while it holds requests: a new one started on the same
 * socket with nothing else (as a store of fds outside the process would
 * give it back) answers every request the old one had not, and none it
 * had. */
START_TEST(test_crash_loses_nothing) {
        static const uint8_t later[] = {
                0x02, 0x40, 0x02, 0x40, 0x00, 0x04, 0x02, 0x00, 0x03, 0x00, 0x08, 0x01, 0x55, 0x02, 0x20,
        };
        int kept;

        connect_client(64, USEC_PER_SEC, 128);
        send_bytes("\x02\x40\x02\x40", 4);
        send_bytes(later, sizeof later);

        /* The burst answers two; the third waits a second. */
        want_got = 128;
        ck_assert(run_until(got_enough, 2 * USEC_PER_SEC));
        run_for(50 * MSEC);
        ck_assert_uint_eq(got_len, 128);
        ck_assert_int_eq(server_inq(), (int) sizeof later);

        /* The socket outlives the process; nothing else does. */
        kept = fcntl(sfd, F_DUPFD_CLOEXEC, 3);
        ck_assert_int_ge(kept, 0);
        stop_process();
        sfd = kept;
        connect_client(64, USEC_PER_SEC, 256);

        check_all_answered();
        ck_assert_uint_eq(got_len, 128 + 64 + 64 + 4 + 1 + strlen(pid_text) + 32);
}
END_TEST

/* A client that shuts down its side after its requests gets every
 * answer, a request cut short gets none, and then the connection is
 * closed.  _i: 0 shuts down with the requests, 1 while the device waits
 * to answer them (EPOLLRDHUP alone, the requests peeked before). */
START_TEST(test_shutdown_after_requests) {
        connect_client(64, 500 * MSEC, 16);
        send_bytes("\x02\x10\x00\x02\x20\x04\x02", 7);
        if (_i == 1) {
                want_got = 16 + 4;
                ck_assert(run_until(got_enough, 2 * USEC_PER_SEC));
                ck_assert_int_eq(server_inq(), 4);
        }
        ck_assert_int_eq(shutdown(cfd, SHUT_WR), 0);

        ck_assert(run_until(got_closed, 5 * USEC_PER_SEC));
        /* Closed, not reset: a reset loses answers on their way. */
        ck_assert_int_eq(got_error, 0);
        ck_assert_uint_eq(got_len, 16 + 4 + 32 + 1 + strlen(pid_text));
        ck_assert_int_eq(answers_len(sent_len), (ssize_t) got_len);
        ck_assert_uint_eq(srv.n_clients[TRANSPORT_EGD], 0);
}
END_TEST

/* Garbage closes the connection, in order: what it sent is consumed
 * first, so the peer sees its end, not a reset. */
START_TEST(test_garbage_closes) {
        connect_client(0, 0, 0);
        send_bytes("\x02\x04\x09garbage", 10);
        ck_assert(run_until(got_closed, 2 * USEC_PER_SEC));
        ck_assert_int_eq(got_error, 0);
        ck_assert_uint_eq(srv.protocol_errors[TRANSPORT_EGD], 1);
        ck_assert_uint_eq(srv.n_clients[TRANSPORT_EGD], 0);
}
END_TEST

/* Requests left in the socket keep it readable, and a peer that shut
 * down its side keeps EPOLLRDHUP up: a device waiting to answer must not
 * spin on either. */
START_TEST(test_waiting_does_not_spin) {
        usec_t cpu, wall;

        connect_client(64, USEC_PER_SEC, 64);
        /* A request the device answers, one it holds about a second, and
         * the first byte of a third. */
        send_bytes("\x02\x40\x02\x40\x02", 5);
        want_got = 64;
        ck_assert(run_until(got_enough, 2 * USEC_PER_SEC));
        cpu = cpu_usec();
        wall = now_usec(CLOCK_MONOTONIC);
        want_got = 128;
        ck_assert(run_until(got_enough, 3 * USEC_PER_SEC));
        ck_assert_uint_ge(now_usec(CLOCK_MONOTONIC) - wall, 500 * MSEC);
        ck_assert_uint_lt(cpu_usec() - cpu, 200 * MSEC);
        ck_assert_int_eq(server_inq(), 1);

        /* The third made whole, and the peer's side shut while the device
         * waits to answer it. */
        send_bytes("\x40", 1);
        ck_assert_int_eq(shutdown(cfd, SHUT_WR), 0);
        cpu = cpu_usec();
        wall = now_usec(CLOCK_MONOTONIC);
        ck_assert(run_until(got_closed, 3 * USEC_PER_SEC));
        ck_assert_int_eq(got_error, 0);
        ck_assert_uint_ge(now_usec(CLOCK_MONOTONIC) - wall, 500 * MSEC);
        ck_assert_uint_lt(cpu_usec() - cpu, 200 * MSEC);
        ck_assert_uint_eq(got_len, 192);
}
END_TEST

/* A successor process: the server's state and every fd it names change
 * hands (dup()ed, as SCM_RIGHTS would), the old server goes, and a new
 * one takes the state up on a loop of its own. */
static void hand_over(void) {
        _cleanup_(json_free) Json j = {};
        _cleanup_(state_fds_done) StateFds t = {};
        StateReader r;
        int memfd, *fds;

        json_object_begin(&j, NULL);
        ck_assert_int_eq(server_save(&srv, &j, &t, true), 0);
        json_object_end(&j);
        memfd = state_memfd(&j);
        ck_assert_int_ge(memfd, 0);
        ck_assert_uint_eq(t.n, 1);
        fds = calloc(t.n, sizeof *fds);
        ck_assert_ptr_nonnull(fds);
        fds[0] = fcntl(t.fds[0], F_DUPFD_CLOEXEC, 3);
        ck_assert_int_ge(fds[0], 0);
        /* The successor's fd is its own: the test keeps one to look
         * into the socket with. */
        probe = fcntl(t.fds[0], F_DUPFD_CLOEXEC, 3);
        ck_assert_int_ge(probe, 0);
        stop_process();
        sfd = -EBADF;

        start_process(0, 0, 0);
        ck_assert_int_eq(state_reader_open(&r, memfd, fds, t.n), 0);
        ck_assert_int_eq(server_restore(&srv, &r, state_root(&r), true), 1);
        state_reader_done(&r);
        (void) close(memfd);
}

/* What the state says of the EGD connection, read back. */
static void saved_egd(uint64_t *ret_unconsumed, size_t *ret_queue, size_t *ret_marks, size_t *ret_out) {
        _cleanup_(json_free) Json j = {};
        _cleanup_(state_fds_done) StateFds t = {};
        yaml_node_t *clients, *egd, *a;
        uint8_t *out = malloc(256 * 1024);
        StateReader r;
        size_t n;
        int memfd;

        ck_assert_ptr_nonnull(out);
        json_object_begin(&j, NULL);
        ck_assert_int_eq(server_save(&srv, &j, &t, true), 0);
        json_object_end(&j);
        memfd = state_memfd(&j);
        ck_assert_int_ge(memfd, 0);
        ck_assert_int_eq(state_reader_open(&r, memfd, NULL, 0), 0);
        ck_assert_int_eq(state_get_array(&r, state_root(&r), "clients", &clients, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(state_get_object(&r, state_item(&r, clients, 0), "egd", &egd), 0);
        ck_assert_int_eq(state_get_u64(&r, egd, "unconsumed", UINT64_MAX, ret_unconsumed), 0);
        ck_assert_int_eq(state_get_array(&r, egd, "queue", &a, ret_queue), 0);
        ck_assert_int_eq(state_get_array(&r, egd, "marks", &a, ret_marks), 0);
        ck_assert_int_eq(state_get_hex(&r, egd, "out", out, 256 * 1024, ret_out), 0);
        state_reader_done(&r);
        (void) close(memfd);
        free(out);
}

/* Handed over mid-stream: the successor neither answers again what the
 * state holds nor loses what is still in the socket.  _i: 0 a client
 * that stopped reading (unsent answers, their requests still in the
 * socket, and more requests behind them), 1 a throttled one (requests
 * waiting, one cut short). */
START_TEST(test_hand_over) {
        uint64_t unconsumed;
        size_t queued, marks, out, expect;

        if (_i == 0) {
                uint8_t reqs[300 * 2 + 2];
                int small = 4096;

                connect_client(0, 0, 0);
                /* Little room in the socket: the answers pile up in the
                 * server. */
                ck_assert_int_eq(setsockopt(sfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
                for (size_t i = 0; i < 300; i++) {
                        reqs[2 * i] = 0x02;
                        reqs[2 * i + 1] = 0xff;
                }
                reqs[600] = 0x00;
                reqs[601] = 0x02;
                watch_client(false);
                send_bytes(reqs, sizeof reqs);
                run_for(200 * MSEC);
                saved_egd(&unconsumed, &queued, &marks, &out);
                ck_assert_uint_gt(out, 0);
                ck_assert_uint_gt(marks, 0);
                ck_assert_uint_gt(unconsumed, 0);
                ck_assert_int_ge(server_inq(), (int) unconsumed);
                expect = 300 * 255 + 4 + 16;
        } else {
                connect_client(64, USEC_PER_SEC, 64);
                send_bytes("\x02\x40\x02\x40\x00\x03\x00\x08\x01\x55\x04\x02", 12);
                want_got = 64;
                ck_assert(run_until(got_enough, 2 * USEC_PER_SEC));
                run_for(50 * MSEC);
                saved_egd(&unconsumed, &queued, &marks, &out);
                /* All but the first request, the last one cut short. */
                ck_assert_uint_eq(unconsumed, 10);
                ck_assert_uint_eq(queued, 4);
                ck_assert_uint_eq(out, 0);
                ck_assert_int_eq(server_inq(), 10);
                expect = 64 + 64 + 4 + 1 + strlen(pid_text) + 16;
        }

        hand_over();
        /* The request cut short, made whole after the handover. */
        send_bytes("\x10", 1);
        check_all_answered();
        ck_assert_uint_eq(got_len, expect);
}
END_TEST

/* A predecessor's state with one EGD connection, its socket fd 0, and
 * egd the members of its "egd" object. */
#define EGD_STATE(egd)                                                                                    \
        "{\"connections_total\": [1, 0], \"protocol_errors\": [0, 0], \"refused\": [0, 0, 0, 0, 0],"          \
        " \"egd_bytes_received\": 0, \"host\": {\"tokens\": 0, \"frac\": 0, \"last\": 0}, \"limits\": [],"  \
        " \"stats\": [], \"clients\": [{\"transport\": \"egd\", \"fd\": 0, \"peer\": \"a test\","               \
        " \"stats\": \"test\", \"limit\": \"test\", \"egd\": {\"read_closed\": false, " egd "}}]}"

/* A new process takes doc up with the server's socket: how many
 * connections it serves. */
static int take_up(const char *doc) {
        int memfd = memfd_create("state", MFD_CLOEXEC), *fds = calloc(1, sizeof *fds), n;
        StateReader r;

        ck_assert_int_ge(memfd, 0);
        ck_assert_ptr_nonnull(fds);
        ck_assert_int_eq(write(memfd, doc, strlen(doc)), (ssize_t) strlen(doc));
        fds[0] = TAKE_FD(sfd);
        start_process(0, 0, 0);
        ck_assert_int_eq(state_reader_open(&r, memfd, fds, 1), 0);
        n = server_restore(&srv, &r, state_root(&r), true);
        state_reader_done(&r);
        (void) close(memfd);
        return n;
}

/* A state from a version 1 predecessor, which consumed every request it
 * read: the bytes in the socket are all new to the successor. */
START_TEST(test_hand_over_from_version_1) {
        /* The rest of the request cut short ("02" in the state), and one
         * more. */
        ck_assert_int_eq(send(cfd, "\x10\x00", 2, MSG_NOSIGNAL), 2);
        probe = fcntl(sfd, F_DUPFD_CLOEXEC, 3);
        ck_assert_int_ge(probe, 0);
        ck_assert_int_eq(
                take_up(EGD_STATE("\"in\": \"02\", \"queue\": [{\"command\": 2, \"left\": 8}], \"out\": \"0102\"")), 1);

        /* The unsent 01 02, the queued 8 bytes, 16 bytes, a level. */
        want_got = 2 + 8 + 16 + 4;
        ck_assert(run_until(got_enough, 2 * USEC_PER_SEC));
        run_for(200 * MSEC);
        ck_assert_uint_eq(got_len, 2 + 8 + 16 + 4);
        ck_assert(memcmp(got, "\x01\x02", 2) == 0);
        ck_assert_int_eq(server_inq(), 0);
}
END_TEST

/* A version 2 state whose EGD part does not add up is refused for that
 * connection (closed), never taken up to consume requests it does not
 * hold or keep ones it answered. */
static const char *const bad_egd[] = {
        /* in and queue stand for more than the socket holds for them */
        "\"unconsumed\": 1, \"in\": \"0200\", \"queue\": [], \"out\": \"\", \"marks\": []",
        /* a request answered (2 of 4 bytes) with no mark to consume it */
        "\"unconsumed\": 4, \"in\": \"\", \"queue\": [{\"command\": 2, \"left\": 4, \"size\": 2}], \"out\": \"\","
        " \"marks\": []",
        /* a mark past the unsent answer */
        "\"unconsumed\": 2, \"in\": \"\", \"queue\": [], \"out\": \"00\", \"marks\": [{\"out\": 2, \"in\": 2}]",
        /* marks that go back */
        "\"unconsumed\": 4, \"in\": \"\", \"queue\": [], \"out\": \"0000\","
        " \"marks\": [{\"out\": 2, \"in\": 3}, {\"out\": 1, \"in\": 4}]",
        /* more than a peek may hold */
        "\"unconsumed\": 5000, \"in\": \"\", \"queue\": [], \"out\": \"\", \"marks\": []",
};

START_TEST(test_hand_over_bad_egd_state) {
        char doc[1024];

        (void) snprintf(doc, sizeof doc, EGD_STATE("%s"), bad_egd[_i]);
        ck_assert_int_eq(send(cfd, "\x02\x01\x02\x01", 4, MSG_NOSIGNAL), 4);
        ck_assert_int_eq(take_up(doc), 0);
        ck_assert_uint_eq(srv.n_clients[TRANSPORT_EGD], 0);
        /* Closed: the client sees its end. */
        ck_assert(run_until(got_closed, 2 * USEC_PER_SEC));
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("server");
        TCase *tc = tcase_create("budget-key");

        tcase_add_loop_test(tc, test_budget_key, 0, (int) ELEMENTSOF(rows));
        suite_add_tcase(s, tc);

        tc = tcase_create("egd");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_throttled_request_stays_in_socket);
        tcase_add_test(tc, test_pipelined_mixed);
        tcase_add_test(tc, test_crash_loses_nothing);
        tcase_add_loop_test(tc, test_shutdown_after_requests, 0, 2);
        tcase_add_test(tc, test_garbage_closes);
        tcase_add_test(tc, test_waiting_does_not_spin);
        tcase_add_loop_test(tc, test_hand_over, 0, 2);
        tcase_add_test(tc, test_hand_over_from_version_1);
        tcase_add_loop_test(tc, test_hand_over_bad_egd_state, 0, (int) ELEMENTSOF(bad_egd));
        suite_add_tcase(s, tc);
        return s;
}

TEST_MAIN(suite)
