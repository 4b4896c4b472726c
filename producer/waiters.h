/*
 * waiters — the suspended HTTP requests of the intake that wait for a change
 * of one id: the status long polls (readmodel) and the token refresh waits
 * (tokenview). A bounded hash table of (id, request) entries under one mutex.
 *
 * Ownership: the table is its creator's (waiters_new / waiters_free). Each
 * entry holds a reference on its request (httpd_req_ref), dropped when the
 * entry leaves: woken by id, unwatched by the handler, or freed with the
 * table. A request woken by waiters_wake_all stays in the table until its
 * handler unwatches it.
 *
 * Threads: every function may be called from any thread (httpd's request
 * threads watch and unwatch, the apply threads wake by id, the main thread
 * wakes all at shutdown); one mutex guards the table.
 */
#ifndef OAUTHQ_PRODUCER_WAITERS_H
#define OAUTHQ_PRODUCER_WAITERS_H

#include "common/httpd.h"

#define WAITERS_ID_MAX 64 /* an id's bytes, NUL included */

typedef struct waiters waiters_t;

/* A table of at most max entries; NULL when out of memory. */
waiters_t *waiters_new(int max);

/* Drop every entry (and its request reference) and the table; NULL ok. */
void waiters_free(waiters_t *ws);

/* req waits for id (takes a reference on req): 0, or -1 when max entries wait already, the id
 * does not fit WAITERS_ID_MAX or memory ran out. */
int waiters_watch(waiters_t *ws, const char *id, httpd_req *req);

/* Remove req's entry, if any (the handler, once it answered). */
void waiters_unwatch(waiters_t *ws, httpd_req *req);

/* Wake and remove every entry of id (after its change committed). */
void waiters_wake_id(waiters_t *ws, const char *id);

/* Wake every entry and keep it (shutdown: each handler answers and unwatches). */
void waiters_wake_all(waiters_t *ws);

/* Entries now. */
int waiters_count(waiters_t *ws);

#endif
