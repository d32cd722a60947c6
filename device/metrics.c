/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <sys/socket.h>

#include "fileio.h"
#include "log.h"
#include "metrics.h"

/* A request line and headers; anything longer is not a scraper. */
#define HTTP_REQUEST_MAX 4096
/* Scrapers that connect and say nothing are dropped at the next scrape
 * of another client past this many. */
#define HTTP_CONNECTIONS_MAX 16

typedef struct Buf {
        char *p;
        size_t len, alloc;
        bool failed;
} Buf;

static void buf_printf(Buf *b, const char *format, ...) _printf_(2, 3);
static void buf_printf(Buf *b, const char *format, ...) {
        va_list ap;
        int l;

        if (b->failed)
                return;
        for (;;) {
                size_t room = b->alloc - b->len;
                va_start(ap, format);
                l = vsnprintf(b->p ? b->p + b->len : NULL, room, format, ap);
                va_end(ap);
                if (l < 0) {
                        b->failed = true;
                        return;
                }
                if ((size_t) l < room) {
                        b->len += (size_t) l;
                        return;
                }
                size_t a = MAX(b->alloc * 2, b->len + (size_t) l + 1);
                char *p = realloc(b->p, MAX(a, (size_t) 4096));
                if (!p) {
                        b->failed = true;
                        return;
                }
                b->p = p;
                b->alloc = MAX(a, (size_t) 4096);
        }
}

/* A label value as the exposition format wants it: backslash, quote and
 * newline escaped.  Source names are paths from the configuration. */
static const char *label(const char *v, char *buf, size_t size) {
        size_t o = 0;

        for (; *v && o + 3 < size; v++) {
                if (*v == '\\' || *v == '"') {
                        buf[o++] = '\\';
                        buf[o++] = *v;
                } else if (*v == '\n') {
                        buf[o++] = '\\';
                        buf[o++] = 'n';
                } else
                        buf[o++] = *v;
        }
        buf[o] = 0;
        return buf;
}

static void family(Buf *b, const char *name, const char *type, const char *help) {
        buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int metrics_format(const Server *s, char **ret, size_t *ret_len) {
        char l[256];
        Buf b = {};

        family(&b, "seedbed_vm_bytes_total", "counter", "Entropy bytes served to the VM.");
        for (const VmStats *v = s->stats; v; v = v->next)
                buf_printf(&b, "seedbed_vm_bytes_total{vm=\"%s\",transport=\"%s\"} %llu\n", v->name,
                           transport_to_string(v->transport), (unsigned long long) v->bytes);
        family(&b, "seedbed_vm_requests_total", "counter",
               "Requests answered for the VM (EGD requests, vhost-user buffers).");
        for (const VmStats *v = s->stats; v; v = v->next)
                buf_printf(&b, "seedbed_vm_requests_total{vm=\"%s\",transport=\"%s\"} %llu\n", v->name,
                           transport_to_string(v->transport), (unsigned long long) v->requests);
        family(&b, "seedbed_vm_throttled_seconds_total", "counter",
               "Time the VM's requests waited for its rate limit or the host budget.");
        for (const VmStats *v = s->stats; v; v = v->next)
                buf_printf(&b, "seedbed_vm_throttled_seconds_total{vm=\"%s\",transport=\"%s\"} %.6f\n", v->name,
                           transport_to_string(v->transport), (double) v->throttled_usec / USEC_PER_SEC);
        family(&b, "seedbed_vm_connections", "gauge", "Open connections of the VM.");
        for (const VmStats *v = s->stats; v; v = v->next)
                buf_printf(&b, "seedbed_vm_connections{vm=\"%s\",transport=\"%s\"} %u\n", v->name,
                           transport_to_string(v->transport), v->connections);

        family(&b, "seedbed_source_bytes_total", "counter", "Bytes served from the entropy source.");
        for (size_t i = 0; i < s->sources->n; i++)
                buf_printf(&b, "seedbed_source_bytes_total{source=\"%s\"} %llu\n",
                           label(s->sources->sources[i].name, l, sizeof l),
                           (unsigned long long) s->sources->sources[i].bytes);
        family(&b, "seedbed_source_health_failures_total", "counter",
               "SP 800-90B health-test failures of the entropy source.");
        for (size_t i = 0; i < s->sources->n; i++)
                buf_printf(&b, "seedbed_source_health_failures_total{source=\"%s\"} %llu\n",
                           label(s->sources->sources[i].name, l, sizeof l),
                           (unsigned long long) s->sources->sources[i].failures);
        family(&b, "seedbed_source_healthy", "gauge", "1 while the entropy source is in service.");
        for (size_t i = 0; i < s->sources->n; i++)
                buf_printf(&b, "seedbed_source_healthy{source=\"%s\"} %d\n",
                           label(s->sources->sources[i].name, l, sizeof l), s->sources->sources[i].healthy ? 1 : 0);

        family(&b, "seedbed_connections", "gauge", "Open client connections.");
        for (Transport t = 0; t < _TRANSPORT_MAX; t++)
                buf_printf(&b, "seedbed_connections{transport=\"%s\"} %u\n", transport_to_string(t), s->n_clients[t]);
        family(&b, "seedbed_connections_total", "counter", "Client connections accepted.");
        for (Transport t = 0; t < _TRANSPORT_MAX; t++)
                buf_printf(&b, "seedbed_connections_total{transport=\"%s\"} %llu\n", transport_to_string(t),
                           (unsigned long long) s->connections_total[t]);
        family(&b, "seedbed_protocol_errors_total", "counter",
               "Connections closed because the peer broke the protocol.");
        for (Transport t = 0; t < _TRANSPORT_MAX; t++)
                buf_printf(&b, "seedbed_protocol_errors_total{transport=\"%s\"} %llu\n", transport_to_string(t),
                           (unsigned long long) s->protocol_errors[t]);
        family(&b, "seedbed_refused_total", "counter",
               "Connections and memory mappings refused for a cap (limits.REASON in device.yaml).");
        for (RefusalReason r = 0; r < _REFUSED_MAX; r++)
                buf_printf(&b, "seedbed_refused_total{reason=\"%s\"} %llu\n", refusal_reason_to_string(r),
                           (unsigned long long) s->refused[r]);
        family(&b, "seedbed_guest_memory_mapped_bytes", "gauge",
               "Guest memory the vhost-user devices map (as the front-ends sized their regions).");
        buf_printf(&b, "seedbed_guest_memory_mapped_bytes %llu\n", (unsigned long long) s->mapped);
        family(&b, "seedbed_egd_received_bytes_total", "counter",
               "Bytes EGD clients wrote to the device (counted, never served to guests).");
        buf_printf(&b, "seedbed_egd_received_bytes_total %llu\n", (unsigned long long) s->egd_bytes_received);

        if (b.failed) {
                free(b.p);
                return -ENOMEM;
        }
        *ret = b.p;
        *ret_len = b.len;
        return 0;
}

typedef struct HttpConn HttpConn;

struct MetricsServer {
        Loop *loop;
        const Server *server;
        int fd;
        LoopIo *io;
        HttpConn *conns;
        unsigned n_conns;
};

struct HttpConn {
        MetricsServer *m;
        int fd;
        LoopIo *io;
        char in[HTTP_REQUEST_MAX];
        size_t in_len;
        char *out;
        size_t out_len, out_off;
        HttpConn *next;
};

static void http_conn_free(HttpConn *h) {
        MetricsServer *m = h->m;

        for (HttpConn **p = &m->conns; *p; p = &(*p)->next)
                if (*p == h) {
                        *p = h->next;
                        break;
                }
        m->n_conns--;
        loop_io_free(h->io);
        safe_close(h->fd);
        free(h->out);
        free(h);
}

static int http_respond(HttpConn *h, const char *status, const char *type, const char *body, size_t body_len) {
        char head[256];
        int l = snprintf(head, sizeof head,
                         "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                         status, type, body_len);

        h->out = malloc((size_t) l + body_len);
        if (!h->out)
                return -ENOMEM;
        memcpy(h->out, head, (size_t) l);
        memcpy(h->out + l, body, body_len);
        h->out_len = (size_t) l + body_len;
        return loop_io_set_events(h->io, EPOLLOUT);
}

static void http_io(LoopIo *io, int fd, uint32_t events, void *userdata) {
        HttpConn *h = userdata;

        if (h->out) {
                ssize_t k = send(fd, h->out + h->out_off, h->out_len - h->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0 && errno != EAGAIN && errno != EINTR)
                        return http_conn_free(h);
                if (k > 0)
                        h->out_off += (size_t) k;
                if (h->out_off == h->out_len)
                        http_conn_free(h);
                return;
        }

        ssize_t k = recv(fd, h->in + h->in_len, sizeof h->in - 1 - h->in_len, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
                return http_conn_free(h);
        if (k < 0)
                return;
        h->in_len += (size_t) k;
        h->in[h->in_len] = 0;

        if (!strstr(h->in, "\r\n\r\n") && !strstr(h->in, "\n\n")) {
                if (h->in_len >= sizeof h->in - 1) {
                        static const char msg[] = "request too large\n";
                        if (http_respond(h, "431 Request Header Fields Too Large", "text/plain", msg, sizeof msg - 1) < 0)
                                http_conn_free(h);
                }
                return;
        }

        if (startswith(h->in, "GET /metrics ") || startswith(h->in, "GET / ")) {
                _cleanup_free_ char *body = NULL;
                size_t len;
                if (metrics_format(h->m->server, &body, &len) < 0 ||
                    http_respond(h, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, len) < 0)
                        http_conn_free(h);
        } else {
                static const char msg[] = "only GET /metrics is served here\n";
                if (http_respond(h, "404 Not Found", "text/plain", msg, sizeof msg - 1) < 0)
                        http_conn_free(h);
        }
}

static void metrics_accept(LoopIo *io, int fd, uint32_t events, void *userdata) {
        MetricsServer *m = userdata;
        HttpConn *h;
        int cfd;

        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
                return;
        /* A bounded number of scrapers; the oldest idle one makes room. */
        if (m->n_conns >= HTTP_CONNECTIONS_MAX) {
                HttpConn *last = m->conns;
                while (last && last->next)
                        last = last->next;
                if (last)
                        http_conn_free(last);
        }
        h = calloc(1, sizeof *h);
        if (!h) {
                safe_close(cfd);
                return;
        }
        *h = (HttpConn) { .m = m, .fd = cfd };
        if (loop_add_io(m->loop, cfd, EPOLLIN, http_io, h, &h->io) < 0) {
                safe_close(cfd);
                free(h);
                return;
        }
        h->next = m->conns;
        m->conns = h;
        m->n_conns++;
}

int metrics_server_new(Loop *loop, const Server *s, int listen_fd, MetricsServer **ret) {
        MetricsServer *m = calloc(1, sizeof *m);
        int r;

        if (!m) {
                safe_close(listen_fd);
                return -ENOMEM;
        }
        *m = (MetricsServer) { .loop = loop, .server = s, .fd = listen_fd };
        r = loop_add_io(loop, listen_fd, EPOLLIN, metrics_accept, m, &m->io);
        if (r < 0) {
                safe_close(listen_fd);
                free(m);
                return r;
        }
        *ret = m;
        return 0;
}

int metrics_server_fd(const MetricsServer *m) {
        return m->fd;
}

MetricsServer *metrics_server_free(MetricsServer *m) {
        if (!m)
                return NULL;
        while (m->conns)
                http_conn_free(m->conns);
        loop_io_free(m->io);
        safe_close(m->fd);
        free(m);
        return NULL;
}
