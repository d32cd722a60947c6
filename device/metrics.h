/* SPDX-License-Identifier: MIT */
#pragma once

/* Metrics in the Prometheus text exposition format (version 0.0.4),
 * served over plain HTTP on a configured address.  The names are
 * documented in seedbed-device(8) and kept stable. */

#include "loop.h"
#include "server.h"

/* The whole exposition, NUL-terminated. */
int metrics_format(const Server *s, char **ret, size_t *ret_len);

typedef struct MetricsServer MetricsServer;

/* Serves GET /metrics on the listening socket fd (owned from now on). */
int metrics_server_new(Loop *loop, const Server *s, int listen_fd, MetricsServer **ret);
MetricsServer *metrics_server_free(MetricsServer *m);
/* Its listening socket, for handing it to a successor. */
int metrics_server_fd(const MetricsServer *m);
