/*
 * ctl_dlq — `oauthqctl dlq list|show`: what is in the dead-letter topic.
 *
 * dlq.v1 records (written by common/conn.h conn_dlq_json, decoded by
 * common/connrec) carry the original bytes of
 * an unprocessable record, which may hold an authorization code or PKCE
 * verifier. `list` never prints `original`; `show` prints one record in
 * full with every secret-named value inside `original` ("code",
 * "code_verifier", "*token*", "*secret*", "state"... the log redaction
 * rule, log_key_is_secret) replaced by "[REDACTED]" — structurally when
 * original parses as JSON, and by a textual scrub of `"key": value` and
 * `key=value` patterns otherwise (a truncated record still hides its code).
 * Reading is ctl_scan (bounded, read_committed). The parsing, filtering and
 * redaction functions are pure.
 */
#ifndef OAUTHQ_CTL_CTL_DLQ_H
#define OAUTHQ_CTL_CTL_DLQ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "common/config.h"
#include "common/err.h"
#include "ctl/ctl_out.h"

#define CTL_REDACTED      "[REDACTED]"
#define CTL_DLQ_LIMIT_DEF 1000L

/* One dlq.v1 record; strings point into the parsed record (NULL = null). */
typedef struct {
    int32_t partition; /* position in the dlq topic */
    int64_t offset;
    const char *reason, *source_topic, *key, *original, *first_error, *last_error, *at;
    int64_t at_ms; /* 0 when `at` is not a readable time */
    int64_t source_partition, source_offset;
    int attempts;
} ctl_dlq_entry;

/* Filter of list and replay --dlq: since_ms 0 and reason_prefix "" or NULL
 * match everything; limit 0 is unlimited. */
typedef struct {
    int64_t since_ms;
    const char *reason_prefix;
    long limit;
} ctl_dlq_filter;

/* Per matching record; return 1 to stop, 0 to go on, -1 to fail. */
typedef int (*ctl_dlq_fn)(const ctl_dlq_entry *d, void *ud);

/* Fill d from a parsed dlq.v1 record (connrec_dlq_from; partition/offset
 * left as they are); -1 when rec is not a valid dlq.v1 object. Pure. */
int ctl_dlq_entry_from(const cJSON *rec, ctl_dlq_entry *d);

/* Does d pass the filter's since and reason prefix (not the limit)? */
int ctl_dlq_match(const ctl_dlq_entry *d, const ctl_dlq_filter *f);

/* A copy of original[0..len) with secret values replaced by CTL_REDACTED
 * (malloc'd, NUL-terminated; NULL only when out of memory). Pure. */
char *ctl_dlq_redact(const char *original, size_t len);

/* Scan the dlq topic; fn gets each matching record until the limit.
 * *unreadable (may be NULL) counts records that are not dlq.v1. Returns the
 * number of matches handed to fn, -1 on error. */
long ctl_dlq_scan(const config_t *c, const ctl_dlq_filter *f, ctl_dlq_fn fn, void *ud,
                  long *unreadable, err_t *e);

/* `dlq` command: argv[0] is "list" or "show". */
int ctl_dlq_run(const ctl_ctx *cx, int argc, char **argv, err_t *e);

/* Help text of `dlq`. */
void ctl_dlq_help(FILE *out);

#endif
