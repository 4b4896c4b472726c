/*
 * err — the one error convention of oauthq.
 *
 * Every fallible function takes an `err_t *` as its last argument, returns
 * 0 on success and -1 on failure, and on failure fills the err_t with a
 * class and a short message that names the context (file, key, topic...).
 * Messages never contain secrets: callers pass names and hashes, not values.
 *
 * The class tells the caller what to do, and each caller maps it explicitly:
 *   ERRC_RETRIABLE  the same call may succeed later (broker down, timeout,
 *                   429). intake: 503 + Retry-After. worker: retry/backoff.
 *   ERRC_PERMANENT  this input or request is bad and will stay bad
 *                   (malformed record, bad parameter). intake: 400.
 *                   worker: failed status / DLQ.
 *   ERRC_FATAL      the process cannot go on safely (fenced producer, bad
 *                   configuration, out of memory). Log and exit non-zero;
 *                   a supervisor restarts the process.
 */
#ifndef OAUTHQ_COMMON_ERR_H
#define OAUTHQ_COMMON_ERR_H

#include <stddef.h>

#define ERR_MSG_MAX 256

typedef enum {
    ERRC_OK = 0,
    ERRC_RETRIABLE = 1,
    ERRC_PERMANENT = 2,
    ERRC_FATAL = 3,
} errc;

typedef struct {
    errc cls;
    char msg[ERR_MSG_MAX];
} err_t;

/* Set class and printf-style message (truncated to ERR_MSG_MAX); returns -1
 * so that `return err_set(e, ...)` reads naturally. `e` may be NULL. */
int err_set(err_t *e, errc cls, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefix the existing message with more context ("loading x: <old>"),
 * keeping the class; returns -1. `e` may be NULL. */
int err_wrap(err_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reset to ERRC_OK with an empty message. */
void err_clear(err_t *e);

/* "ok", "retriable", "permanent" or "fatal". */
const char *errc_name(errc cls);

#endif
