/*
 * tokenview — the intake's copy of the sealed tokens (SPEC §5b, G5).
 *
 * GET /v1/connections/{id}/token needs a connection's access token, and the
 * status topic must never carry tokens: so the intake materialises, from
 * the worker's compacted `connections` changelog (read_committed, every
 * partition assigned, no group), the latest sealed access token, its type,
 * scope and expiry per connection into its own SQLite file, with the next
 * offset per partition in the same transaction (a restart resumes, a
 * deleted file is rebuilt from the topic, a version never moves back). The
 * tokens stay sealed here (common/sealed): only the request that serves one
 * opens it. Records that are not connection.v1 (provider_state.v1 records
 * keyed "_provider.*" share the topic) are skipped; a tombstone deletes
 * the row. A batch the store keeps refusing stops the thread and sets
 * tokenview_fatal(): the process must exit. After each commit the apply
 * thread wakes (httpd_wake) the requests watching the ids that changed: a
 * token call waiting for a refresh (SPEC §5b).
 *
 * Threads: open/close on the main thread; one internal apply thread;
 * tokenview_get/watch/unwatch/wake_all/caught_up/fatal from any thread
 * (reads under a mutex, waiters under another).
 */
#ifndef OAUTHQ_PRODUCER_TOKENVIEW_H
#define OAUTHQ_PRODUCER_TOKENVIEW_H

#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "common/httpd.h"
#include "common/metrics.h"

#define TOKENVIEW_SEALED_MAX  5600
#define TOKENVIEW_WAITERS_MAX 10000

typedef struct tokenview tokenview_t;

typedef struct {
    char status[16]; /* "connected", "failed", ... */
    char provider[33];
    char token_type[32];
    char scope[512];
    char access_sealed[TOKENVIEW_SEALED_MAX]; /* sealed text, "" none */
    /* Wall ms the access token expires at; -1: the provider gave no
     * lifetime (does not expire); 0: a lifetime from an unknown start
     * (record of an older worker): treat as expired. */
    int64_t expires_at_ms;
    int64_t version;
} tokenview_row;

/* Open (create) the database under cfg->data_dir and start the thread. */
tokenview_t *tokenview_open(const config_t *cfg, metrics_t *m, err_t *e);

/* Stop the thread and close; NULL is a no-op. */
void tokenview_close(tokenview_t *tv);

/* The row of id into *out: 1 found, 0 absent, -1 error (retriable). */
int tokenview_get(tokenview_t *tv, const char *id, tokenview_row *out, err_t *e);

/* Wake `req` (httpd_wake) once a record of id committed (upsert or
 * tombstone); takes a request ref until woken or unwatched. -1 when
 * TOKENVIEW_WAITERS_MAX are waiting already or out of memory. */
int tokenview_watch(tokenview_t *tv, const char *id, httpd_req *req);

/* Forget req's watch if still registered (drops its ref). */
void tokenview_unwatch(tokenview_t *tv, httpd_req *req);

/* Wake every watching request (shutdown); they stay registered until
 * their handler calls tokenview_unwatch. */
void tokenview_wake_all(tokenview_t *tv);

/* 1 once every partition reached the end offset seen at start. */
int tokenview_caught_up(tokenview_t *tv);

/* 1 after a store failure the view could not get past: exit. */
int tokenview_fatal(const tokenview_t *tv);

#endif
