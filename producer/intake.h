/*
 * intake — the oauthq-intake application (SPEC §4): routes, checks and the
 * publish-before-acknowledge rule (G2), on top of httpd and publisher.
 *
 * Routes (handle() in intake.c is the list; HEAD wherever GET):
 * - the browser's: GET /oauth/start, GET /oauth/callback (SPEC §4);
 * - the platform API (API keys, SPEC §4a): POST and GET /v1/connections
 *   (create a connect session / list), GET and DELETE /v1/connections/{id}
 *   (status / disconnect), GET /v1/connections/{id}/token (SPEC §5b);
 *   another method on one of these paths, or on the browser's, answers 405;
 * - pages: GET /connect/{id} (status page), GET /static/oauthq-status.js,
 *   GET / (demo page, OAUTHQ_DEMO=1 only): another method answers 404;
 * - GET /healthz, /readyz, /metrics (any method is answered as GET).
 * Everything else answers 404.
 * Owns its config copy, providers, state keyring, producer, HTTP server and
 * metrics. intake_open/intake_close run on the main thread; requests run
 * on httpd's threads and delivery reports on the publisher's thread.
 */
#ifndef OAUTHQ_PRODUCER_INTAKE_H
#define OAUTHQ_PRODUCER_INTAKE_H

#include "common/config.h"
#include "common/err.h"

typedef struct intake intake_t;

/* Load providers and keys, start the producer and the HTTP server.
 * Configuration problems are ERRC_FATAL naming the variable or file. */
intake_t *intake_open(const config_t *c, err_t *e);

/* 1 when the producer or the read model hit a fatal error: the process
 * must exit. */
int intake_fatal(const intake_t *in);

/* Graceful shutdown: stop accepting, let in-flight callbacks finish (their
 * records delivered and answered, or 503 at their deadline), flush the
 * producer, stop. Bounded by the HTTP deadline plus flush_ms. */
void intake_close(intake_t *in, int flush_ms);

#endif
