/*
 * query — strict parser of an application/x-www-form-urlencoded string (a
 * URL query or a form body), for untrusted input.
 *
 * Decodes %XX and '+', and refuses rather than guesses: a parameter named
 * twice, more than QUERY_MAX_PARAMS parameters, a bad %-escape, a decoded
 * NUL byte, a name outside [A-Za-z0-9_.-] or longer than 32 bytes, or more
 * than QUERY_MAX_BYTES in total. Values are decoded into the query_t's own
 * buffer (no allocation); query_t is a plain value owned by the caller.
 */
#ifndef OAUTHQ_PRODUCER_QUERY_H
#define OAUTHQ_PRODUCER_QUERY_H

#include <stddef.h>

#include "common/err.h"

#define QUERY_MAX_PARAMS 16
#define QUERY_MAX_BYTES  4096
#define QUERY_NAME_MAX   33

typedef struct {
    char name[QUERY_NAME_MAX];
    const char *value; /* into query_t.buf, NUL-terminated */
    size_t len;
} query_param;

typedef struct {
    size_t n;
    query_param p[QUERY_MAX_PARAMS];
    char buf[QUERY_MAX_BYTES + QUERY_MAX_PARAMS];
} query_t;

/* Parse qs[len] (without the leading '?'); errors are ERRC_PERMANENT with
 * a message naming the parameter, never its value. */
int query_parse(const char *qs, size_t len, query_t *q, err_t *e);

/* Percent-encode `in` for a query value (RFC 3986 unreserved kept) into
 * out[cap]; returns the length or -1 when it does not fit. */
long query_escape(const char *in, char *out, size_t cap);

/* Value of `name` (and its length), or NULL when absent. */
const char *query_get(const query_t *q, const char *name, size_t *len);

#endif
