/*
 * httpd — the HTTP server of the intake (and the worker's metrics
 * listener): libmicrohttpd with an internal thread
 * pool, bounded everything, and suspend/resume with a deadline.
 *
 * Threads: MHD's pool threads run the handler and every on_wake callback;
 * a deadline thread wakes suspended requests whose time ran out; any thread
 * (e.g. Kafka's delivery-report thread) may call httpd_wake().
 * Ownership: an httpd_req is owned by httpd and reference counted; a holder
 * on another thread (a Kafka message in flight) takes a ref with
 * httpd_req_ref() and drops it with httpd_req_unref(), so a late delivery
 * report never touches freed memory. A handler must either respond
 * (httpd_respond*) or suspend (httpd_suspend) before returning.
 * MHD never times out suspended connections, so every suspension carries a
 * deadline: when it passes, on_wake runs with timed_out=1 and must answer.
 * Draining: from httpd_quiesce (or httpd_stop) on, httpd itself answers
 * every newly dispatched request 503 shutting_down with Connection: close;
 * handlers never see those and need not check.
 * Limits: total connections, connections per IP, per-connection memory
 * (URL + headers), request body bytes, number of suspended requests.
 */
#ifndef OAUTHQ_COMMON_HTTPD_H
#define OAUTHQ_COMMON_HTTPD_H

#include <stddef.h>

#include "common/err.h"

#define HTTPD_BODY_MAX    16384
#define HTTPD_HEADERS_MAX 12
#define HTTPD_URI_MAX     8192

typedef struct httpd httpd_t;
typedef struct httpd_req httpd_req;

/* Route a complete request (headers and body read). Runs on an MHD thread. */
typedef void (*httpd_handler)(void *app, httpd_req *req);

/* Continue a suspended request on an MHD thread; must respond. */
typedef void (*httpd_wake_fn)(void *app, httpd_req *req, int timed_out);

typedef struct {
    const char *listen;     /* host:port */
    int threads;            /* MHD thread pool size */
    int max_connections;    /* total */
    int per_ip_connections; /* per client address */
    int max_suspended;      /* requests waiting at once (in flight) */
    int idle_timeout_s;     /* idle keep-alive connections */
} httpd_opts;

/* Bind and start serving; ERRC_FATAL when the address cannot be used. */
httpd_t *httpd_start(const httpd_opts *o, httpd_handler h, void *app, err_t *e);

/* Stop accepting new connections and start draining (graceful shutdown, first step). */
void httpd_quiesce(httpd_t *d);

/* Number of requests currently suspended. */
int httpd_suspended(httpd_t *d);

/* Stop the server and free it; suspended requests are woken first. */
void httpd_stop(httpd_t *d);

/* Bound port (useful with port 0). */
int httpd_port(const httpd_t *d);

/* ---- request accessors (valid during handler / on_wake) ---------------- */
const char *httpd_method(const httpd_req *r);
const char *httpd_path(const httpd_req *r);
/* Raw query string after '?', not decoded ("" when none). */
const char *httpd_query(const httpd_req *r, size_t *len);
/* Header value (case-insensitive name) or NULL. */
const char *httpd_header(const httpd_req *r, const char *name);
/* Cookie value or NULL. */
const char *httpd_cookie(const httpd_req *r, const char *name);
/* Request body (NUL-terminated copy) and its length; 413 already sent by
 * httpd when it exceeded HTTPD_BODY_MAX, so handlers never see that. */
const char *httpd_body(const httpd_req *r, size_t *len);
/* 1 when the client prefers HTML (Accept names text/html before JSON). */
int httpd_wants_html(const httpd_req *r);
/* Per-request id (for logs and correlation). */
const char *httpd_request_id(const httpd_req *r);

/* ---- responding --------------------------------------------------------- */
/* Add a response header (copied; at most HTTPD_HEADERS_MAX). */
void httpd_add_header(httpd_req *r, const char *name, const char *value);
/* Queue the response; body copied. Exactly once per request. */
void httpd_respond(httpd_req *r, int status, const char *content_type, const char *body,
                   size_t len);

/* ---- suspension ---------------------------------------------------------- */
/* Suspend until httpd_wake() or timeout_ms; -1 when too many requests are
 * suspended already (the caller answers 503 at once). */
int httpd_suspend(httpd_req *r, int timeout_ms, httpd_wake_fn on_wake);
/* Wake a suspended request; any thread; idempotent; no-op once answered. */
void httpd_wake(httpd_req *r);
/* Reference counting for holders on other threads. */
void httpd_req_ref(httpd_req *r);
void httpd_req_unref(httpd_req *r);

/* Application data attached to the request, freed with free_fn when the
 * request's last reference goes. */
void httpd_set_data(httpd_req *r, void *data, void (*free_fn)(void *));
void *httpd_data(const httpd_req *r);

#endif
