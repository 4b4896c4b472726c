/*
 * ctl_out — what every oauthqctl command shares: the context it runs in
 * (configuration, output streams, --json) and small output helpers.
 *
 * Commands write results to ctx->out (one JSON document with --json, a
 * table otherwise) and nothing else there; diagnostics go to ctx->errout
 * or the log (stderr). Single-threaded.
 */
#ifndef OAUTHQ_CTL_CTL_OUT_H
#define OAUTHQ_CTL_CTL_OUT_H

#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "common/config.h"
#include "common/err.h"

typedef struct {
    const config_t *cfg;
    FILE *out;    /* results */
    FILE *errout; /* diagnostics */
    int json;     /* --json given */
} ctl_ctx;

/* Print doc (pretty JSON + newline) to out; consumes nothing. Allocation
 * failure is ERRC_RETRIABLE. */
int ctl_out_json(FILE *out, const cJSON *doc, err_t *e);

/* Add unix ms as RFC 3339 UTC to obj under key; 0 or less adds null. */
void ctl_out_add_time(cJSON *obj, const char *key, int64_t ms);

/* String value of obj[key] for a table cell: strings as they are, numbers
 * and booleans as text, null/absent as "-". Writes into buf[cap]. */
const char *ctl_out_cell(const cJSON *obj, const char *key, char *buf, size_t cap);

#endif
