/*
 * conn — a connection's full state (SPEC §5), owned by the worker: one
 * writer per key. It travels as the connections.v1 record (the changelog
 * the worker restores from, secrets sealed) and its public projection is the
 * status.v1 document (what the frontend sees). dlq.v1 records carry
 * callbacks that could not be processed.
 *
 * Both records carry the platform's "end_user", "organization" and "tags"
 * when the flow came from a connect session (absent otherwise and in older
 * records). conn_t is a plain value (about 15 KiB: allocate it on the heap in
 * arrays). Codecs are pure and thread-safe. Sealed fields hold
 * common/sealed.h text, never plaintext.
 */
#ifndef OAUTHQ_COMMON_CONN_H
#define OAUTHQ_COMMON_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "common/connmeta.h"
#include "common/err.h"
#include "common/records.h"

#define CONN_SCHEMA       "oauthq.connection.v1"
#define STATUS_SCHEMA     "oauthq.status.v1"
#define DLQ_SCHEMA        "oauthq.dlq.v1"
#define CONN_ID_MAX       64
#define CONN_HASH_MAX     65
#define CONN_SEALED_SMALL 1024 /* sealed code or verifier */
#define CONN_SEALED_TOKEN 5600 /* sealed token (≤ 4096 bytes plain) */
#define CONN_ANSWERED_MAX 16   /* ended code chains remembered per connection */

typedef enum {
    CONN_PENDING,
    CONN_CONNECTED,
    CONN_FAILED,
    CONN_EXPIRED,
    CONN_DISCONNECTED,
} conn_status;

typedef enum {
    PHASE_NONE, /* final statuses */
    PHASE_AWAITING_CALLBACK,
    PHASE_QUEUED,
    PHASE_EXCHANGING,
    PHASE_RETRYING,
} conn_phase;

typedef enum {
    REASON_NONE,
    REASON_ACCESS_DENIED,
    REASON_INVALID_REQUEST,
    REASON_CODE_EXPIRED,
    REASON_CODE_REJECTED,
    REASON_RECONNECT_REQUIRED,
    REASON_PROVIDER_UNAVAILABLE,
    REASON_MISCONFIGURED,
    REASON_PROVIDER_ERROR,
    REASON_MALFORMED_CALLBACK,
} conn_reason;

typedef struct {
    char id[CONN_ID_MAX];
    char provider[33];
    conn_status status;
    conn_phase phase;
    conn_reason reason;
    int64_t version; /* +1 on every change; never moves back */
    int64_t created_at_ms, updated_at_ms;
    /* The active code chain (first code wins). The sealed code is kept
     * until the code is definitively answered, so a retry, a takeover or a
     * replay needs nothing else. */
    char code_hash[CONN_HASH_MAX]; /* sha256 hex of the active code */
    char code_sealed[CONN_SEALED_SMALL];
    char verifier_sealed[CONN_SEALED_SMALL];
    int64_t received_at_ms, deadline_ms;
    int attempts;          /* token requests sent for the active code */
    int unknown_outcomes;  /* of which the outcome was unknown */
    int claimed;           /* 1: a committed claim may have sent a request */
    char claimed_by[64];   /* lease: the claiming worker instance */
    int64_t claimed_at_ms; /* lease: wall-clock claim time (0: none) */
    int64_t retry_at_ms;   /* 0: none scheduled */
    char last_error[160];  /* operator-facing: "http 503", "invalid_client", ... */
    int ignored_codes;     /* later different codes, recorded and not exchanged */
    char last_ignored_hash[CONN_HASH_MAX];
    /* Result of a successful exchange. */
    char account_id[128];
    int livemode; /* -1 unknown */
    char scope[512];
    char token_type[32];
    int64_t expires_in;   /* -1 unknown */
    int64_t tokens_at_ms; /* wall time the tokens were obtained (expires_in counts from
                           * it); 0 unknown (older records) */
    char access_sealed[CONN_SEALED_TOKEN];
    char refresh_sealed[CONN_SEALED_TOKEN];
    char return_to[RECORDS_TEXT_MAX + 1];
    char callback_error[65]; /* provider's error code on an error callback */
    /* Hashes of the codes whose chain ended (a definitive answer, or the
     * chain failed otherwise), oldest first (SPEC §5): such a code is never
     * exchanged again, whatever callback came in between. Never cleared;
     * bounded: when full, the oldest leaves (codes live minutes, so a code
     * that old is dead at the provider anyway). */
    char answered[CONN_ANSWERED_MAX][CONN_HASH_MAX];
    int nanswered;
    connmeta meta; /* the platform's end_user/organization/tags (SPEC §4a); "" none */
    /* Refresh (SPEC §5b). While connected, `claimed`/`claimed_by`/
     * `claimed_at_ms` are the lease of a refresh_token grant and
     * `retry_at_ms` its next attempt (a retry or the background refresh). */
    int refresh_attempts; /* refresh requests sent in the current refresh chain */
    int refresh_unknown;  /* of which the outcome was unknown */
    int refreshes;        /* successful refreshes since connected */
    int refresh_failed;   /* failed (reconnect_required) by a refresh, not by a code */
} conn_t;

/* Names used in records and the status API. */
const char *conn_status_name(conn_status s);
const char *conn_phase_name(conn_phase p);   /* NULL for PHASE_NONE */
const char *conn_reason_name(conn_reason r); /* NULL for REASON_NONE */

/* The sentence shown to end users for this state (never provider text). */
const char *conn_message(const conn_t *c);

/* A fresh state for id/provider (pending, awaiting_callback, version 0). */
void conn_init(conn_t *c, const char *id, const char *provider, int64_t now_ms);

/* 1 when hash is in c's set of answered code hashes. */
int conn_answered(const conn_t *c, const char *hash);

/* Add hash to c's answered set (no-op when empty or present; the oldest
 * leaves when full). */
void conn_answer(conn_t *c, const char *hash);

/* A hash of what the status.v1 document shows (everything but version and
 * updated_at): equal hashes, nothing for the frontend or webhooks to learn,
 * so no status record is written (e.g. a refresh, a recorded later code). */
uint64_t conn_public_hash(const conn_t *c);

/* connections.v1 JSON (malloc'd; contains sealed secrets only). */
char *conn_encode(const conn_t *c, err_t *e);

/* Parse a connections.v1 record (strict; ERRC_PERMANENT on any defect). */
int conn_decode(const char *json, size_t len, conn_t *c, err_t *e);

/* status.v1 JSON: the public document of SPEC §5 (no secrets, no hashes). */
char *conn_status_json(const conn_t *c, err_t *e);

/* dlq.v1 JSON for an unprocessable record. */
char *conn_dlq_json(const char *reason, const char *topic, int32_t partition, int64_t offset,
                    const char *key, size_t key_len, const char *original, size_t orig_len,
                    int attempts, const char *first_error, const char *last_error, int64_t now_ms,
                    err_t *e);

#endif
