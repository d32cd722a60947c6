/* SPDX-License-Identifier: MIT */
/* seedbed-device's benchmark: every figure beside its ceiling, measured
 * the same way in the same run on the same machine.
 *
 *   vhost-user: the engine serving a split ring posted by the test
 *   front-end, filled from the health-tested getrandom source, against
 *   raw getrandom() into the same guest buffers;
 *   EGD: 1 and 256 clients each keeping one 64-byte request outstanding
 *   (as QEMU's rng-egd does) against the real daemon, and the same
 *   clients against a trivial responder answering from a pre-filled
 *   buffer (the transport's ceiling);
 *   latency: one client's 64-byte request, one at a time, p50 and p99,
 *   against the trivial responder, and with 10,000 idle EGD connections
 *   (each a VM of its own that asked once: a budget and statistics each)
 *   and 1,000 idle vhost-user connections held open, against the same
 *   client alone (per request work must not grow with idle peers);
 *   memory: the daemon's resident and peak memory per idle connection,
 *   over those 10,000 and 1,000.
 *
 * Usage: bench-device PATH-TO-seedbed-device [SECONDS]
 * It prints a table; it does not pass or fail on speed. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <time.h>

#include <check.h>

#include "fileio.h"
#include "source.h"
#include "vhost-front.h"
#include "vhost-user.h"

static double seconds = 1.0;
/* Idle peers held open while one VM is measured. */
#define IDLE_EGD 10000U
#define IDLE_VHOST 1000U
static char dir[] = "/tmp/seedbed-bench.XXXXXX";

static double now_s(void) {
        return (double) now_usec(CLOCK_MONOTONIC) / USEC_PER_SEC;
}

static void die(const char *what) {
        perror(what);
        exit(EXIT_FAILURE);
}

/* vhost-user */

static SourceSet sources;
static VhostUserDev *dev;

static size_t fill_from_sources(void *userdata, uint8_t *buf, size_t n) {
        return source_set_read(&sources, buf, n, now_usec(CLOCK_MONOTONIC));
}

static void kick_changed(void *userdata, int old_fd, int new_fd) {
}

static const VhostUserOps ops = { .fill = fill_from_sources, .kick_changed = kick_changed };

static int pump(void *userdata) {
        return vhost_user_dev_handle_socket(dev);
}

typedef struct Rate {
        double bytes_per_s, requests_per_s;
} Rate;

/* The split ring as the guest's driver sees it (virtio 1.x, 2.7). */
struct vring_desc_le {
        uint64_t addr;
        uint32_t len;
        uint16_t flags;
        uint16_t next;
};

/* Posts num buffers of size bytes, kicks once, lets the engine serve
 * them and reaps the used ring, again and again for the measuring time.
 * The test front-end sets the device up; the loop itself touches the
 * ring directly, as a driver does, so that what is measured is the
 * device and not the test helper's bookkeeping. */
static Rate bench_vhost(unsigned num, size_t size, bool raw) {
        VhostFront f;
        uint64_t gpa[256];
        uint8_t *ptr[256];
        struct vring_desc_le *desc;
        volatile uint16_t *avail_idx, *avail_ring, *used_idx;
        uint16_t next_avail = 0, last_used = 0;
        uint64_t requests = 0, one = 1;
        double start, elapsed;

        vhost_front_init(&f);
        if (vhost_user_dev_new(vhost_front_take_dev_socket(&f), &ops, NULL, &dev) < 0)
                die("vhost_user_dev_new");
        vhost_front_set_pump(&f, pump, NULL);
        if (vhost_front_connect(&f, num, VU_F_VERSION_1 | VU_F_RING_EVENT_IDX,
                                VU_PF_MQ | VU_PF_REPLY_ACK | VU_PF_CONFIGURE_MEM_SLOTS) < 0)
                die("vhost_front_connect");
        for (unsigned i = 0; i < num; i++) {
                gpa[i] = vhost_front_alloc(&f, size, true);
                ptr[i] = vhost_front_ptr(&f, gpa[i], size);
        }
        desc = vhost_front_ptr(&f, VHOST_FRONT_DESC_GPA, 16 * num);
        avail_idx = (uint16_t *) vhost_front_ptr(&f, VHOST_FRONT_AVAIL_GPA, 4 + 2 * num) + 1;
        avail_ring = avail_idx + 1;
        used_idx = (uint16_t *) vhost_front_ptr(&f, VHOST_FRONT_USED_GPA, 4 + 8 * num) + 1;
        /* One descriptor per buffer, written once: device-writable. */
        for (unsigned i = 0; i < num; i++)
                desc[i] = (struct vring_desc_le) { .addr = gpa[i], .len = (uint32_t) size, .flags = VQ_DESC_F_WRITE };

        start = now_s();
        do {
                for (unsigned batch = 0; batch < 64; batch++) {
                        if (raw) {
                                /* The ceiling: the same bytes, straight from
                                 * the kernel into the same guest buffers. */
                                for (unsigned i = 0; i < num; i++)
                                        if (getrandom(ptr[i], size, 0) != (ssize_t) size)
                                                die("getrandom");
                                requests += num;
                                continue;
                        }
                        for (unsigned i = 0; i < num; i++)
                                avail_ring[(uint16_t) (next_avail + i) % num] = (uint16_t) i;
                        next_avail += (uint16_t) num;
                        __atomic_store_n(avail_idx, next_avail, __ATOMIC_RELEASE);
                        if (write(f.kick, &one, sizeof one) != sizeof one)
                                die("kick");
                        /* The device serves a bounded amount per pass (it
                         * kicks itself for the rest): call it until every
                         * posted buffer is back, as the event loop would. */
                        for (unsigned pass = 0; last_used != next_avail; pass++) {
                                uint16_t u;

                                if (pass > num)
                                        die("the device stopped serving");
                                if (vhost_user_dev_process(dev) < 0)
                                        die("vhost_user_dev_process");
                                u = __atomic_load_n(used_idx, __ATOMIC_ACQUIRE);
                                requests += (uint16_t) (u - last_used);
                                last_used = u;
                        }
                }
                elapsed = now_s() - start;
        } while (elapsed < seconds);

        if (!raw && last_used != next_avail)
                die("the device left buffers unserved");
        dev = vhost_user_dev_free(dev);
        vhost_front_done(&f);
        return (Rate) { (double) requests * (double) size / elapsed, (double) requests / elapsed };
}

/* EGD */

static pid_t spawn(char *const argv[]) {
        pid_t pid = fork();

        if (pid < 0)
                die("fork");
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY);
                dup2(null, STDERR_FILENO);
                execv(argv[0], argv);
                _exit(127);
        }
        return pid;
}

static void wait_for_socket(const char *path) {
        for (int i = 0; i < 400; i++) {
                if (access(path, F_OK) == 0)
                        return;
                usleep(5000);
        }
        fprintf(stderr, "'%s' never appeared\n", path);
        exit(EXIT_FAILURE);
}

static int connect_unix(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                die("socket");
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                die("connect");
        return fd;
}

/* The transport's ceiling: answers every 2-byte request with 64 bytes
 * from a buffer filled once, on the same epoll loop shape as the daemon. */
static void trivial_responder(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        uint8_t answer[64 * 64];
        int l, ep;

        memset(answer, 0x5a, sizeof answer);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        l = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (l < 0 || bind(l, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(l, 1024) < 0)
                die("responder");
        ep = epoll_create1(EPOLL_CLOEXEC);
        epoll_ctl(ep, EPOLL_CTL_ADD, l, &(struct epoll_event) { .events = EPOLLIN, .data.fd = l });
        for (;;) {
                struct epoll_event ev[64];
                int n = epoll_wait(ep, ev, 64, -1);
                for (int i = 0; i < n; i++) {
                        int fd = ev[i].data.fd;
                        if (fd == l) {
                                int c;
                                while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
                                        epoll_ctl(ep, EPOLL_CTL_ADD, c,
                                                  &(struct epoll_event) { .events = EPOLLIN, .data.fd = c });
                                continue;
                        }
                        uint8_t req[128];
                        ssize_t k = recv(fd, req, sizeof req, MSG_DONTWAIT);
                        if (k <= 0) {
                                close(fd);
                                continue;
                        }
                        (void) send(fd, answer, (size_t) (k / 2) * 64, MSG_NOSIGNAL | MSG_DONTWAIT);
                }
        }
}

/* Clients each keep one 64-byte blocking read outstanding; returns
 * answered requests per second. */
static double bench_egd(const char *path, unsigned clients) {
        int *fd = calloc(clients, sizeof *fd);
        size_t *got = calloc(clients, sizeof *got);
        uint64_t done = 0;
        double start, elapsed;
        int ep = epoll_create1(EPOLL_CLOEXEC);

        if (!fd || !got || ep < 0)
                die("bench_egd");
        for (unsigned i = 0; i < clients; i++) {
                fd[i] = connect_unix(path);
                epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &(struct epoll_event) { .events = EPOLLIN, .data.u32 = i });
                if (send(fd[i], "\x02\x40", 2, MSG_NOSIGNAL) != 2)
                        die("send");
        }

        start = now_s();
        do {
                struct epoll_event ev[256];
                int n = epoll_wait(ep, ev, 256, 100);
                for (int e = 0; e < n; e++) {
                        unsigned i = ev[e].data.u32;
                        uint8_t buf[64];
                        ssize_t k = recv(fd[i], buf, 64 - got[i], MSG_DONTWAIT);
                        if (k <= 0)
                                continue;
                        got[i] += (size_t) k;
                        if (got[i] == 64) {
                                got[i] = 0;
                                done++;
                                if (send(fd[i], "\x02\x40", 2, MSG_NOSIGNAL) != 2)
                                        die("send");
                        }
                }
                elapsed = now_s() - start;
        } while (elapsed < seconds);

        for (unsigned i = 0; i < clients; i++)
                close(fd[i]);
        close(ep);
        free(fd);
        free(got);
        return (double) done / elapsed;
}

/* latency */

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

/* One client, one 64-byte request at a time: p50 and p99 in microseconds. */
static void bench_latency(const char *path, double *ret_p50, double *ret_p99) {
        enum { MAX_SAMPLES = 200000 };
        double *lat = calloc(MAX_SAMPLES, sizeof *lat), start;
        int fd = connect_unix(path);
        size_t n = 0;

        if (!lat)
                die("calloc");
        start = now_s();
        while (n < MAX_SAMPLES && now_s() - start < seconds) {
                uint8_t buf[64];
                size_t got = 0;
                double t0 = now_s();

                if (send(fd, "\x02\x40", 2, MSG_NOSIGNAL) != 2)
                        die("send");
                while (got < 64) {
                        ssize_t k = recv(fd, buf, 64 - got, 0);
                        if (k <= 0)
                                die("recv");
                        got += (size_t) k;
                }
                lat[n++] = (now_s() - t0) * 1e6;
        }
        close(fd);
        qsort(lat, n, sizeof *lat, cmp_double);
        *ret_p50 = lat[n / 2];
        *ret_p99 = lat[n * 99 / 100];
        free(lat);
}

/* memory */

static long status_kib(pid_t pid, const char *field) {
        char path[64], line[256];
        long v = -1;
        FILE *f;

        snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof line, f))
                if (strncmp(line, field, strlen(field)) == 0)
                        v = strtol(line + strlen(field), NULL, 10);
        fclose(f);
        return v;
}

static unsigned count_fds(pid_t pid) {
        char path[64];
        unsigned n = 0;
        DIR *d;

        snprintf(path, sizeof path, "/proc/%d/fd", (int) pid);
        d = opendir(path);
        if (!d)
                return 0;
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

/* The daemon's resident and peak memory, in KiB, a moment after whatever
 * was asked of it. */
typedef struct Memory {
        long rss, hwm;
} Memory;

static Memory memory_now(pid_t pid) {
        usleep(100000);
        return (Memory) { status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:") };
}

/* What n connections added, per connection, in bytes. */
static void memory_per(Memory before, Memory after, unsigned n, double *ret_rss, double *ret_hwm) {
        *ret_rss = (double) (after.rss - before.rss) * 1024 / n;
        *ret_hwm = (double) (after.hwm - before.hwm) * 1024 / n;
}

/* Resident and peak memory per idle connection, over n connections, which
 * stay open (the caller closes them: *ret_fds). */
static void bench_idle(pid_t pid, const char *path, unsigned n, double *ret_rss, double *ret_hwm, int **ret_fds) {
        int *fd = calloc(n, sizeof *fd);
        Memory before;
        unsigned fds0;

        if (!fd)
                die("calloc");
        before = memory_now(pid);
        fds0 = count_fds(pid);
        for (unsigned i = 0; i < n; i++)
                fd[i] = connect_unix(path);
        /* Until the daemon has accepted them all. */
        for (int i = 0; i < 2000 && count_fds(pid) < fds0 + n; i++)
                usleep(5000);
        if (count_fds(pid) < fds0 + n)
                die("the daemon did not accept every idle connection");
        memory_per(before, memory_now(pid), n, ret_rss, ret_hwm);
        *ret_fds = fd;
}

/* n idle EGD peers over TCP, each from an address of its own in 127/8:
 * each is a VM of its own to the daemon (its budget is its address), and
 * each asks once for a byte before it falls silent, so the daemon holds
 * n budgets and n statistics, not one.  Memory as bench_idle(). */
static void bench_idle_vms(pid_t pid, int port, unsigned n, double *ret_rss, double *ret_hwm, int **ret_fds) {
        int *fd = calloc(n, sizeof *fd);
        Memory before;

        if (!fd)
                die("calloc");
        before = memory_now(pid);
        for (unsigned i = 0; i < n; i++) {
                struct sockaddr_in self = { .sin_family = AF_INET }, to = { .sin_family = AF_INET };
                uint8_t b;

                self.sin_addr.s_addr = htonl(0x7f000000u | ((1 + i / 250) << 8) | (1 + i % 250));
                to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                to.sin_port = htons((uint16_t) port);
                fd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd[i] < 0 || bind(fd[i], (struct sockaddr *) &self, sizeof self) < 0 ||
                    connect(fd[i], (struct sockaddr *) &to, sizeof to) < 0)
                        die("idle VM");
                /* A daemon that never answers fails the benchmark. */
                if (setsockopt(fd[i], SOL_SOCKET, SO_RCVTIMEO, &(struct timeval) { .tv_sec = 10 }, sizeof(struct timeval)) < 0)
                        die("SO_RCVTIMEO");
                if (send(fd[i], "\x02\x01", 2, MSG_NOSIGNAL) != 2 || recv(fd[i], &b, 1, 0) != 1)
                        die("idle VM's request");
        }
        memory_per(before, memory_now(pid), n, ret_rss, ret_hwm);
        *ret_fds = fd;
}

static void close_all(int *fd, unsigned n) {
        for (unsigned i = 0; i < n; i++)
                close(fd[i]);
        free(fd);
}

static void row(const char *what, const char *figure, const char *ceiling, double ratio, double target) {
        printf("%-28s %-24s %-30s %5.2f  >= %.2f  %s\n", what, figure, ceiling, ratio, target,
               ratio >= target ? "ok" : "MISSED");
}

static const char *daemon_path;

/* The test front-end reports its own failures through Check, so the
 * benchmark runs as one Check test (unforked): a broken run says where. */
START_TEST(bench) {
        char egd[256], vhost[256], trivial[256], config[256], tcp[64], a[64], b[64];
        int tcp_port;
        double rss, hwm, vrss, vhwm, p50, p99, t50, t99, i50, i99;
        int *idle_egd, *idle_vhost;
        pid_t daemon, responder;
        FILE *f;

        if (!mkdtemp(dir))
                die("mkdtemp");
        snprintf(egd, sizeof egd, "%s/egd.sock", dir);
        snprintf(vhost, sizeof vhost, "%s/vhost.sock", dir);
        snprintf(trivial, sizeof trivial, "%s/trivial.sock", dir);
        snprintf(config, sizeof config, "%s/device.yaml", dir);
        /* The idle VMs' EGD socket: a free port found by binding 0. */
        {
                struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                socklen_t sl = sizeof sa;
                int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

                if (s < 0 || bind(s, (struct sockaddr *) &sa, sizeof sa) < 0 ||
                    getsockname(s, (struct sockaddr *) &sa, &sl) < 0)
                        die("port");
                tcp_port = ntohs(sa.sin_port);
                close(s);
                snprintf(tcp, sizeof tcp, "tcp:127.0.0.1:%d", tcp_port);
        }
        /* The idle peers all come from this process: one VM to the
         * daemon, past its default cap of connections per VM. */
        f = fopen(config, "we");
        if (!f)
                die("config");
        fprintf(f, "limits:\n  vm-connections: %u\n", IDLE_EGD + IDLE_VHOST + 1024);
        fclose(f);

        /* The daemon's defaults: declared 6 bits a byte (see SOURCE_ALPHA_LOG2). */
        if (source_set_add(&sources, SOURCE_GETRANDOM, NULL, 6) < 0)
                die("source_set_add");
        (void) source_set_start(&sources, now_usec(CLOCK_MONOTONIC));

        printf("seedbed-device benchmark: %.1f s per figure, %ld CPUs\n\n", seconds, sysconf(_SC_NPROCESSORS_ONLN));
        printf("%-28s %-24s %-30s %5s  %-7s\n", "path", "figure", "ceiling (same run)", "ratio", "target");

        for (int pass = 0; pass < 2; pass++) {
                size_t size = pass == 0 ? 4096 : 64;
                unsigned num = pass == 0 ? 128 : 256;
                Rate dev_rate = bench_vhost(num, size, false), raw = bench_vhost(num, size, true);
                char what[64];

                snprintf(what, sizeof what, "vhost-user, %zu B buffers", size);
                snprintf(a, sizeof a, "%.0f MB/s, %.0fk req/s", dev_rate.bytes_per_s / 1e6, dev_rate.requests_per_s / 1e3);
                snprintf(b, sizeof b, "getrandom %.0f MB/s, %.0fk/s", raw.bytes_per_s / 1e6, raw.requests_per_s / 1e3);
                row(what, a, b, dev_rate.bytes_per_s / raw.bytes_per_s, size == 4096 ? 0.8 : 0.5);
        }

        {
                char a0[] = "--egd", a1[] = "--vhost-user", a2[] = "--config", a3[] = "--egd";
                daemon = spawn((char *[]) { (char *) daemon_path, a0, egd, a1, vhost, a2, config, a3, tcp, NULL });
        }
        responder = fork();
        if (responder == 0) {
                /* Check's SIGTERM handler kills the whole process group. */
                signal(SIGTERM, SIG_DFL);
                trivial_responder(trivial);
                _exit(0);
        }
        wait_for_socket(egd);
        wait_for_socket(vhost);
        wait_for_socket(trivial);

        for (int pass = 0; pass < 2; pass++) {
                unsigned clients = pass == 0 ? 1 : 256;
                double d = bench_egd(egd, clients), t = bench_egd(trivial, clients);
                char what[64];

                snprintf(what, sizeof what, "EGD, %u client%s, 64 B", clients, clients > 1 ? "s" : "");
                snprintf(a, sizeof a, "%.0fk req/s", d / 1e3);
                snprintf(b, sizeof b, "trivial responder %.0fk/s", t / 1e3);
                row(what, a, b, d / t, 0.7);
        }

        bench_latency(egd, &p50, &p99);
        bench_latency(trivial, &t50, &t99);
        snprintf(a, sizeof a, "p50 %.0f us, p99 %.0f us", p50, p99);
        snprintf(b, sizeof b, "trivial p50 %.0f, p99 %.0f", t50, t99);
        row("EGD latency, alone", a, b, t99 / p99, 0.2);

        bench_idle_vms(daemon, tcp_port, IDLE_EGD, &rss, &hwm, &idle_egd);
        bench_idle(daemon, vhost, IDLE_VHOST, &vrss, &vhwm, &idle_vhost);
        bench_latency(egd, &i50, &i99);
        snprintf(a, sizeof a, "p50 %.0f us, p99 %.0f us", i50, i99);
        snprintf(b, sizeof b, "alone p50 %.0f, p99 %.0f", p50, p99);
        row("EGD latency, 11,000 idle", a, b, p99 / i99, 0.5);
        close_all(idle_egd, IDLE_EGD);
        close_all(idle_vhost, IDLE_VHOST);

        printf("%-28s %-24s %-30s %5s  <= 16 KiB  %s\n", "idle EGD connection",
               (snprintf(a, sizeof a, "%.1f KiB (peak %.1f)", rss / 1024, hwm / 1024), a), "", "",
               MAX(rss, hwm) <= 16384 ? "ok" : "MISSED");
        printf("%-28s %-24s %-30s %5s  <= 16 KiB  %s\n", "idle vhost-user connection",
               (snprintf(b, sizeof b, "%.1f KiB (peak %.1f)", vrss / 1024, vhwm / 1024), b), "", "",
               MAX(vrss, vhwm) <= 16384 ? "ok" : "MISSED");

        kill(daemon, SIGTERM);
        kill(responder, SIGTERM);
        waitpid(daemon, NULL, 0);
        waitpid(responder, NULL, 0);
        unlink(trivial);
        rmdir(dir);
        source_set_free(&sources);
}
END_TEST

int main(int argc, char *argv[]) {
        Suite *s = suite_create("bench");
        TCase *tc = tcase_create("bench");
        SRunner *sr;
        int failed;

        if (argc < 2) {
                fprintf(stderr, "Usage: %s PATH-TO-seedbed-device [SECONDS]\n", argv[0]);
                return EXIT_FAILURE;
        }
        daemon_path = argv[1];
        if (argc > 2)
                seconds = atof(argv[2]);
        /* 11,000 idle peers, and the clients measured beside them. */
        {
                struct rlimit rl;
                if (getrlimit(RLIMIT_NOFILE, &rl) >= 0 && rl.rlim_cur < rl.rlim_max) {
                        rl.rlim_cur = rl.rlim_max;
                        (void) setrlimit(RLIMIT_NOFILE, &rl);
                }
        }
        signal(SIGPIPE, SIG_IGN);

        tcase_set_timeout(tc, 600);
        tcase_add_test(tc, bench);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_set_fork_status(sr, CK_NOFORK);
        srunner_run_all(sr, CK_SILENT);
        failed = srunner_ntests_failed(sr);
        if (failed) {
                TestResult **r = srunner_failures(sr);
                fprintf(stderr, "benchmark failed: %s:%d: %s\n", tr_lfile(r[0]), tr_lno(r[0]), tr_msg(r[0]));
                free(r);
        }
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
