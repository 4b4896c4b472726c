/*
 * connrec — the one decoder of each record the worker writes about a
 * connection for other processes to read: status.v1 (topic status; read by
 * the intake's read model and the webhook dispatcher) and dlq.v1 (topic
 * dlq; read by oauthqctl). The encoders are common/conn (conn_status_json,
 * conn_dlq_json); schema names are conn.h's STATUS_SCHEMA and DLQ_SCHEMA.
 * Decoding validates what readers rely on and fails with ERRC_PERMANENT
 * and a message naming the field. Pure and thread-safe.
 */
#ifndef OAUTHQ_COMMON_CONNREC_H
#define OAUTHQ_COMMON_CONNREC_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/conn.h"
#include "common/err.h"

#define CONNREC_VERSION_MAX 9e15 /* exact in a JSON double */

/* The fields of a status.v1 record that readers use. */
typedef struct {
    char id[CONN_ID_MAX];                /* 1..CONN_ID_MAX-1 bytes */
    char provider[RECORDS_PROVIDER_MAX]; /* may be "" */
    conn_status status;
    conn_phase phase;                  /* PHASE_NONE when null */
    conn_reason reason;                /* REASON_NONE when null */
    int64_t version;                   /* 1..CONNREC_VERSION_MAX */
    char updated_at[RECORDS_TIME_MAX]; /* as written */
    int64_t updated_at_ms;             /* 0 when not records_time_format's form */
    connmeta meta;                     /* "" when absent or invalid */
    char meta_error[ERR_MSG_MAX];      /* why meta was ignored; "" when valid/absent */
} connrec_status;

/* Parse and validate a status.v1 record into *out. Invalid platform
 * metadata does not fail the record (out->meta_error says why it was
 * dropped). When doc is non-NULL it receives the parsed object (caller
 * cJSON_Delete) on success, NULL otherwise. 0 or -1. */
int connrec_status_decode(const char *json, size_t len, connrec_status *out, cJSON **doc, err_t *e);

/* A dlq.v1 record; strings point into the cJSON object it came from (NULL
 * for a JSON null). */
typedef struct {
    const char *reason, *source_topic, *key, *original, *first_error, *last_error, *at;
    int64_t at_ms; /* `at` in unix ms */
    int64_t source_partition, source_offset;
    int attempts;
} connrec_dlq;

/* Validate a parsed dlq.v1 record and fill *out (pointers into rec, valid
 * while rec lives). 0 or -1. */
int connrec_dlq_from(const cJSON *rec, connrec_dlq *out, err_t *e);

#endif
