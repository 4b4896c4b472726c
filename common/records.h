/*
 * records — codecs of the JSON records oauthq writes to Kafka, one per
 * schema in schemas/ (this file and the schema change together).
 *
 * callback.v1 (topic callbacks, key = connection id): what the intake saw
 * at /oauth/callback. Written by the intake, read by the worker. It carries
 * the authorization code (and the PKCE verifier) because the worker must
 * exchange it; the topic is internal and codes are single-use and
 * short-lived. A flow started from a connect session also carries the
 * platform's "end_user", "organization" and "tags" (common/connmeta; absent
 * in older records and open-start flows). Encoding never logs; decoding validates every field
 * against the same limits the intake enforces and classifies failures as ERRC_PERMANENT with a
 * reason fit for a DLQ record.
 */
#ifndef OAUTHQ_COMMON_RECORDS_H
#define OAUTHQ_COMMON_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "common/connmeta.h"
#include "common/err.h"

#define RECORDS_CALLBACK_SCHEMA "oauthq.callback.v1"
#define RECORDS_ID_MAX          64
#define RECORDS_PROVIDER_MAX    33
#define RECORDS_CODE_MAX        512
#define RECORDS_VERIFIER_MAX    128
#define RECORDS_TEXT_MAX        512
#define RECORDS_TIME_MAX        32

typedef enum { RECORDS_CB_CODE, RECORDS_CB_ERROR } records_cb_kind;

typedef struct {
    char connection_id[RECORDS_ID_MAX];
    char provider[RECORDS_PROVIDER_MAX];
    records_cb_kind kind;
    char code[RECORDS_CODE_MAX + 1];              /* kind == code */
    char code_verifier[RECORDS_VERIFIER_MAX + 1]; /* "" unless PKCE */
    char error[65];                               /* kind == error */
    char error_description[RECORDS_TEXT_MAX + 1]; /* operators only, never users */
    char iss[RECORDS_TEXT_MAX + 1];
    char scope[RECORDS_TEXT_MAX + 1];
    char return_to[RECORDS_TEXT_MAX + 1];
    int64_t received_at_ms; /* encoded as RFC 3339 UTC with milliseconds */
    char intake_id[RECORDS_ID_MAX];
    char request_id[RECORDS_ID_MAX];
    connmeta meta; /* end_user/organization/tags of a session's flow; optional */
} records_callback;

/* replay.v1 (topic callbacks, key = connection id): an operator asks the
 * worker to re-attempt a connection now. The worker answers through the
 * state machine: only a code that was never definitively answered and is
 * still inside its deadline is exchanged again; every other replay is
 * recorded with an explanation and changes nothing else. */
#define RECORDS_REPLAY_SCHEMA "oauthq.replay.v1"

typedef struct {
    char connection_id[RECORDS_ID_MAX];
    int64_t requested_at_ms;
    char requested_by[RECORDS_ID_MAX]; /* operator or tool name */
    char reason[RECORDS_TEXT_MAX + 1]; /* free text for the audit trail */
} records_replay;

/* JSON text of a replay record (malloc'd). */
char *records_replay_encode(const records_replay *r, err_t *e);

/* Parse and validate a replay.v1 record. */
int records_replay_decode(const char *json, size_t len, records_replay *out, err_t *e);

/* disconnect.v1 (topic callbacks, key = connection id): DELETE
 * /v1/connections/{id} asks the worker to revoke the connection at the
 * provider and shred its tokens. Same shape as replay.v1 (requested_by =
 * the intake's request id). */
#define RECORDS_DISCONNECT_SCHEMA "oauthq.disconnect.v1"

/* JSON text of a disconnect record (malloc'd); r as for replays. */
char *records_disconnect_encode(const records_replay *r, err_t *e);

/* Parse and validate a disconnect.v1 record. */
int records_disconnect_decode(const char *json, size_t len, records_replay *out, err_t *e);

/* provider.v1 (topic callbacks, one copy on EVERY partition so each worker
 * sees it; key "provider:NAME"): an operator pauses or resumes exchanges
 * for a provider. Resume also re-reads the provider's client secret, so a
 * fixed configuration takes effect without a restart. */
#define RECORDS_PROVIDER_SCHEMA "oauthq.provider.v1"

typedef struct {
    char provider[RECORDS_PROVIDER_MAX];
    int pause; /* 1 pause, 0 resume */
    int64_t requested_at_ms;
    char requested_by[RECORDS_ID_MAX];
} records_provider;

/* JSON text of a provider record (malloc'd). */
char *records_provider_encode(const records_provider *r, err_t *e);

/* Parse and validate a provider.v1 record. */
int records_provider_decode(const char *json, size_t len, records_provider *out, err_t *e);

/* refresh.v1 (topic callbacks, key = connection id; SPEC §5b): a caller of
 * GET /v1/connections/{id}/token found the access token of connections
 * record version seen_version stale. The worker coalesces: one refresh per
 * connection at a time, and none when its committed state is already newer
 * than seen_version with a fresh token. Carries no secret. */
#define RECORDS_REFRESH_SCHEMA "oauthq.refresh.v1"

typedef struct {
    char connection_id[RECORDS_ID_MAX];
    char provider[RECORDS_PROVIDER_MAX];
    int64_t seen_version; /* >= 1 */
    int64_t requested_at_ms;
    char intake_id[RECORDS_ID_MAX];
    char request_id[RECORDS_ID_MAX];
} records_refresh;

/* JSON text of a refresh record (malloc'd); NULL on allocation failure. */
char *records_refresh_encode(const records_refresh *r, err_t *e);

/* Parse and validate a refresh.v1 record (strict, ERRC_PERMANENT). */
int records_refresh_decode(const char *json, size_t len, records_refresh *out, err_t *e);

/* session.v1 (topic callbacks, key = connection id; SPEC §4a, §4b): the
 * intake created a connection (POST /v1/connections, or an open
 * GET /oauth/start?provider=) whose flow may never come back. The worker
 * keeps it awaiting its callback and, when none arrived by expires_at (plus
 * its margin), makes it final `expired`. A session for a connection the
 * worker already knows changes nothing. Carries no secret. */
#define RECORDS_SESSION_SCHEMA "oauthq.session.v1"

typedef struct {
    char connection_id[RECORDS_ID_MAX];
    char provider[RECORDS_PROVIDER_MAX];
    char return_to[RECORDS_TEXT_MAX + 1]; /* "" none */
    int64_t created_at_ms;                /* encoded as RFC 3339 UTC with milliseconds */
    int64_t expires_at_ms;                /* the state's expiry: no callback is accepted later */
    char intake_id[RECORDS_ID_MAX];
    char request_id[RECORDS_ID_MAX];
    connmeta meta; /* end_user/organization/tags; "" for an open start */
} records_session;

/* JSON text of a session record (malloc'd); NULL on allocation failure. */
char *records_session_encode(const records_session *r, err_t *e);

/* Parse and validate a session.v1 record (strict, ERRC_PERMANENT). */
int records_session_decode(const char *json, size_t len, records_session *out, err_t *e);

/* The "schema" of a JSON record (into out[cap]); -1 when absent. Cheap
 * dispatch before a full decode. */
int records_schema_of(const char *json, size_t len, char *out, size_t cap);

/* JSON text of r (malloc'd, caller frees and should wipe: it holds the
 * code); NULL on allocation failure (ERRC_RETRIABLE). */
char *records_callback_encode(const records_callback *r, err_t *e);

/* Parse and validate a callback.v1 record. */
int records_callback_decode(const char *json, size_t len, records_callback *out, err_t *e);

/* Format unix milliseconds as "YYYY-MM-DDTHH:MM:SS.mmmZ". */
void records_time_format(int64_t ms, char out[RECORDS_TIME_MAX]);

/* Parse that exact format back; -1 when malformed. */
int records_time_parse(const char *s, int64_t *ms);

/* provider_state.v1 (topic connections, the worker's changelog; key
 * RECORDS_PROVIDER_STATE_KEY_PREFIX + provider name, one per partition):
 * whether the worker pauses exchanges for a provider, so a restarted or
 * newly assigned worker holds what the operator paused (an operator pause)
 * and probes before re-sending after invalid_client. Readers of the
 * changelog that look for connections skip keys with this prefix. */
#define RECORDS_PROVIDER_STATE_SCHEMA     "oauthq.provider_state.v1"
#define RECORDS_PROVIDER_STATE_KEY_PREFIX "_provider."

typedef struct {
    char provider[RECORDS_PROVIDER_MAX];
    char state[16];          /* running | paused | invalid_client */
    int64_t until_ms;        /* invalid_client: the next probe time; else 0 */
    int64_t as_of_ms;        /* when this state was decided (newest wins) */
    char by[RECORDS_ID_MAX]; /* operator name, or "worker" */
} records_provider_state;

/* JSON text of a provider_state record (malloc'd); NULL on allocation failure. */
char *records_provider_state_encode(const records_provider_state *r, err_t *e);

/* Parse a provider_state.v1 record (unknown fields tolerated: it is a changelog record). */
int records_provider_state_decode(const char *json, size_t len, records_provider_state *out,
                                  err_t *e);

#endif
