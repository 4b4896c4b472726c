/*
 * sim_http — the provider simulator's HTTP server (libmicrohttpd).
 *
 * Maps every request to sim_core_handle() and sends its answer. One thread
 * per connection (bounded by SIM_HTTP_MAX_CONNS), request bodies bounded by
 * SIM_HTTP_BODY_MAX (413 when Content-Length says more; a chunked body that
 * grows past it closes the connection), request-targets by SIM_HTTP_URI_MAX
 * (414). Delays (latency faults), cuts (connection closed without an answer)
 * and hangs (no answer until the client disconnects, the server stops, or
 * SIM_CORE_HANG_MAX_MS passes) happen here. One log line per request, with
 * the path only (never the query) and a code_sha256 prefix, never a code.
 */
#ifndef OAUTHQ_TESTS_SIM_HTTP_H
#define OAUTHQ_TESTS_SIM_HTTP_H

#include "common/err.h"
#include "tests/sim/sim_core.h"

#define SIM_HTTP_BODY_MAX  16384
#define SIM_HTTP_URI_MAX   8192
#define SIM_HTTP_MAX_CONNS 512

typedef struct sim_http sim_http_t;

/* Listen on "HOST:PORT" ("[v6]:PORT" too; port 0 = ephemeral) serving core,
 * which must outlive the server; NULL + e (ERRC_FATAL) on failure. */
sim_http_t *sim_http_start(sim_core_t *core, const char *listen, err_t *e);

/* The bound TCP port (useful with port 0). */
int sim_http_port(const sim_http_t *h);

/* Stop: wake delayed/hanging handlers, close connections, join threads, free.
 * NULL is a no-op. */
void sim_http_stop(sim_http_t *h);

#endif
