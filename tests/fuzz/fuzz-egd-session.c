/* SPDX-License-Identifier: MIT */
/* A whole EGD connection to the real server (device/server.c) on the
 * real loop, over a socketpair(): the bytes go in as the input says, the
 * client shuts its side, and the server must answer and close.
 *
 * Input: one byte, then the client's stream.  The byte is how many bytes
 * each send() carries (0: all at once), the loop running in between, so
 * requests arrive cut at every place a network could cut them.
 *
 * What must hold, whatever the stream: the connection ends (the server
 * closes it: a client that shut its side is answered and let go); the
 * answers are, in order, exactly what the requests before the first bad
 * byte ask for (a get-pid is this process's pid, a read the bytes asked
 * for); a stream with no bad byte gets every answer in full; nothing is
 * left open. */
#include <errno.h>
#include <sys/socket.h>
#include <time.h>

#include "egd.h"
#include "fileio.h"
#include "fuzz.h"
#include "loop.h"
#include "server.h"
#include "source.h"

/* More than a few peeks' worth (EGD_PEEK_MAX): backpressure and
 * resumption are part of the session. */
#define STREAM_MAX (32 * 1024)
/* The longest answer stream STREAM_MAX bytes of requests can ask for. */
#define ANSWERS_MAX (STREAM_MAX * 128 + 4096)
/* No session of STREAM_MAX bytes takes this long, unless it hangs. */
#define SESSION_TIMEOUT_USEC (5 * USEC_PER_SEC)

static Loop *loop;
static Server server;
static SourceSet sources;
static char pid_text[32];

static int cfd = -EBADF;
static LoopIo *cio;
static const uint8_t *to_send;
static size_t to_send_len, chunk;
static bool shut;
static uint8_t *got;
static size_t got_len;
static bool got_end;
static usec_t deadline;

static void setup_once(void) {
        RateConfig unlimited = {};

        if (loop)
                return;
        fuzz_setup();
        /* getrandom() as the only source: always healthy, never waits, so
         * every read is answered (a throttled read is the rate limit's
         * business, tested in test-server). */
        if (source_set_add(&sources, SOURCE_GETRANDOM, NULL, 6) < 0 ||
            source_set_start(&sources, now_usec(CLOCK_MONOTONIC)) != 1 || loop_new(&loop) < 0 ||
            server_init(&server, loop, &sources, &unlimited, &unlimited, NULL) < 0)
                fuzz_fail("cannot set up the server");
        (void) snprintf(pid_text, sizeof pid_text, "%ld", (long) getpid());
        got = malloc(ANSWERS_MAX);
        if (!got)
                abort();
}

static void send_some(void) {
        while (to_send_len > 0) {
                size_t n = chunk ? MIN(chunk, to_send_len) : to_send_len;
                ssize_t k = send(cfd, to_send, n, MSG_NOSIGNAL | MSG_DONTWAIT);

                if (k < 0) {
                        if (errno == EAGAIN)
                                return;
                        /* The server closed on a bad byte: the rest is moot. */
                        to_send_len = 0;
                        break;
                }
                to_send += k;
                to_send_len -= (size_t) k;
                if (chunk)
                        return; /* one piece per turn of the loop */
        }
        if (!shut) {
                (void) shutdown(cfd, SHUT_WR);
                shut = true;
        }
}

static void on_client(LoopIo *io, int fd, uint32_t events, void *userdata) {
        for (;;) {
                ssize_t k;

                fuzz_check(got_len < ANSWERS_MAX, "more answers than any request stream asks for");
                k = recv(fd, got + got_len, ANSWERS_MAX - got_len, MSG_DONTWAIT);
                if (k > 0) {
                        got_len += (size_t) k;
                        continue;
                }
                if (k < 0 && errno == EAGAIN)
                        return;
                /* The end, or a reset after a bad byte (the server does not
                 * read what follows it). */
                got_end = true;
                loop_io_free(cio);
                cio = NULL;
                loop_exit(loop, 0);
                return;
        }
}

static usec_t prepare(void *userdata) {
        /* A piece left to send: go round at once. */
        if (to_send_len > 0 || !shut)
                return 0;
        return MIN(server_next_wake(&server), deadline);
}

static void tick(usec_t now, void *userdata) {
        server_tick(&server, now);
        send_some();
        if (now >= deadline)
                loop_exit(loop, -ETIMEDOUT);
}

/* Walks the requests and the answers together: each answer in its
 * place and of its size, none missing from a clean stream (no bad byte). */
static void check_answers(const uint8_t *req, size_t n) {
        size_t off = 0, pos = 0, pid_len = strlen(pid_text);
        bool clean = true, short_of = false;

        while (off < n) {
                EgdRequest r;
                ssize_t k = egd_parse(req + off, n - off, &r, NULL);
                size_t want = 0;

                if (k <= 0) {
                        clean = k == 0;
                        break;
                }
                off += (size_t) k;

                switch (r.command) {
                case EGD_GET_LEVEL:
                        want = 4;
                        break;
                case EGD_READ_NONBLOCK:
                        /* MM, then MM bytes: at least the MM. */
                        want = pos < got_len ? 1U + got[pos] : 1;
                        fuzz_check(pos >= got_len || got[pos] <= r.length,
                                   "a non-blocking read of %u answered with %u bytes", r.length, got[pos]);
                        break;
                case EGD_READ_BLOCKING:
                        want = r.length;
                        break;
                case EGD_GET_PID:
                        want = 1 + pid_len;
                        fuzz_check(pos >= got_len || got[pos] == pid_len, "a pid of %u digits", got[pos]);
                        fuzz_check(got_len - pos < want || memcmp(got + pos + 1, pid_text, pid_len) == 0,
                                   "get-pid is not this process's pid");
                        break;
                case EGD_WRITE:
                        break;
                }
                /* An answer missing or cut short is only for a connection
                 * closed on a bad byte: its unsent answers go with it. */
                if (got_len - pos < want) {
                        short_of = true;
                        pos = got_len;
                } else
                        pos += want;
        }
        fuzz_check(pos == got_len, "%zu bytes of answers more than the requests ask for", got_len - pos);
        fuzz_check(!clean || !short_of, "a stream without a bad byte lost answers (%zu bytes arrived)", got_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        unsigned fds_before;
        int sv[2], r;

        setup_once();
        if (size < 1)
                return 0;
        fds_before = fuzz_count_fds();

        chunk = data[0];
        to_send = data + 1;
        to_send_len = MIN(size - 1, (size_t) STREAM_MAX);
        shut = false;
        got_len = 0;
        got_end = false;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                fuzz_fail("socketpair(): %m");
        cfd = sv[0];
        if (server_add_client(&server, TRANSPORT_EGD, sv[1]) < 0)
                fuzz_fail("the server refused the connection");
        if (loop_add_io(loop, cfd, EPOLLIN | EPOLLRDHUP, on_client, NULL, &cio) < 0)
                fuzz_fail("cannot watch the client");
        loop_set_hooks(loop, prepare, tick, NULL);

        deadline = now_usec(CLOCK_MONOTONIC) + SESSION_TIMEOUT_USEC;
        send_some();
        r = loop_run(loop);
        fuzz_check(r == 0 && got_end, "the connection is still open after %llu s",
                   (unsigned long long) (SESSION_TIMEOUT_USEC / USEC_PER_SEC));

        check_answers(data + 1, MIN(size - 1, (size_t) STREAM_MAX));

        cfd = safe_close(cfd);
        fuzz_check(server.n_clients[TRANSPORT_EGD] == 0, "the server still holds the connection");
        fuzz_check(fuzz_count_fds() == fds_before, "%u fds open, %u before", fuzz_count_fds(), fds_before);
        return 0;
}
