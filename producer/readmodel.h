/*
 * readmodel — the intake's view of connection statuses (SPEC §4, G4).
 *
 * A thread consumes every partition of the status topic (assign, no group,
 * read_committed) and applies the records to a SQLite file (WAL) together
 * with the next offset per partition in one transaction: restarts resume,
 * a deleted file is rebuilt from the compacted topic, and a version never
 * moves backwards (an older or duplicated record is skipped). The stored
 * offsets never pass what committed: a batch the store keeps refusing
 * (bounded retries) stops the thread and sets readmodel_fatal(), and the
 * process must exit (a restart resumes from the committed offsets). After each
 * commit it wakes the HTTP requests long-polling the ids that changed.
 * The public document (readmodel_get) never holds the platform's metadata;
 * readmodel_get_platform and readmodel_list add it (SPEC §4a).
 *
 * Threads: readmodel_open/close on the main thread; the apply and settle
 * threads are internal; readmodel_get/watch/unwatch/caught_up from any thread (reads use
 * their own SQLite connection under a mutex; waiters under another).
 */
#ifndef OAUTHQ_PRODUCER_READMODEL_H
#define OAUTHQ_PRODUCER_READMODEL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/config.h"
#include "common/err.h"
#include "common/metrics.h"
#include "common/httpd.h"

#define READMODEL_WAITERS_MAX 10000

typedef struct readmodel readmodel_t;

/* Open (create) the database under cfg->data_dir and start the thread. */
readmodel_t *readmodel_open(const config_t *cfg, metrics_t *m, err_t *e);

/* Stop the thread and close. */
void readmodel_close(readmodel_t *rm);

/* The API document for id (malloc'd) and its version: 1 found, 0 absent,
 * -1 error. */
int readmodel_get(readmodel_t *rm, const char *id, char **doc, int64_t *version, err_t *e);

/* The platform view for id (SPEC §4a: the document plus end_user,
 * organization, tags), as readmodel_get. */
int readmodel_get_platform(readmodel_t *rm, const char *id, char **doc, int64_t *version, err_t *e);

#define READMODEL_PAGE_MAX 200

typedef struct {
    const char *end_user_id, *organization_id, *provider, *status; /* NULL: any */
    const char *after_id; /* cursor: ids greater than this; NULL from the start */
    int limit;            /* 1..READMODEL_PAGE_MAX */
} readmodel_filter;

/* The platform's list: platform views matching f, in id order, appended to
 * the JSON array items; next[] gets the id to continue after ("" at the
 * end). Returns the number of items or -1. */
int readmodel_list(readmodel_t *rm, const readmodel_filter *f, cJSON *items, char *next,
                   size_t next_cap, err_t *e);

/* Wake `req` (httpd_wake) when id's version changes; takes a request ref.
 * -1 when READMODEL_WAITERS_MAX are waiting already, the id is longer than
 * WAITERS_ID_MAX - 1 or memory ran out (producer/waiters). */
int readmodel_watch(readmodel_t *rm, const char *id, httpd_req *req);

/* Forget req's watch if still registered (after a timeout). */
void readmodel_unwatch(readmodel_t *rm, httpd_req *req);

/* Wake every waiting request (shutdown); they stay registered until their
 * handler calls readmodel_unwatch. */
void readmodel_wake_all(readmodel_t *rm);

/* 1 after a store failure the read model could not get past: exit. */
int readmodel_fatal(const readmodel_t *rm);

/* Settling (SPEC §4: `expired` only when no callback was acknowledged):
 * the wall time T (ms, this host's clock; 0 until the first) such that
 * every callback appended to the callbacks topic partition of id before T
 * has been processed by the worker group (it committed past it, in the
 * same transaction as the status records) and those records are applied
 * here. A flow whose state expired (plus the HTTP deadline and a clock
 * allowance) before T and that has no record never will. Sampled by the
 * read model's settle thread every 500 ms; stalls while the worker lags. */
int64_t readmodel_settled_ms(readmodel_t *rm, const char *id);

/* 1 once every partition reached the end offset seen at start. */
int readmodel_caught_up(readmodel_t *rm);

#endif
