/*
 * delivery — the webhook deliveries of one connection (SPEC §4b): the
 * queue of its events in version order, the retry schedule of the head
 * event, the last outcomes, and the webhook.v1 record that persists all of
 * it in the compacted `webhooks` topic (key = connection id).
 *
 * Rules, all here so they are unit-tested without Kafka or HTTP:
 * - a final status (connected, failed, expired, disconnected) of a version
 *   above the last one taken becomes an event; anything else is ignored,
 *   so a re-consumed status record never enqueues twice;
 * - only the head event is attempted (per-connection order); the next one
 *   waits until the head is delivered (2xx) or failed for good;
 * - a failed attempt is retried after an exponential delay with jitter
 *   (delivery_backoff_ms) until retry_max_ms have passed since the first
 *   attempt; the attempt after that is the last, then the event is failed
 *   (kept with its body, so `oauthqctl webhooks replay` can send it again);
 * - 410 Gone holds the event (`gone`): it is not attempted again until a
 *   replay; the dispatcher stops every delivery while it holds one.
 * The event's body is fixed when it is enqueued, so every re-delivery sends
 * the same bytes under the same webhook-id "<connection id>_v<version>".
 *
 * delivery_conn is a plain value that owns its bodies (free them with
 * delivery_conn_clear); functions are pure and thread-safe.
 */
#ifndef OAUTHQ_COMMON_DELIVERY_H
#define OAUTHQ_COMMON_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define DELIVERY_SCHEMA        "oauthq.webhook.v1"
#define DELIVERY_REPLAY_SCHEMA "oauthq.webhook_replay.v1"
#define DELIVERY_ID_MAX        64
#define DELIVERY_TYPE_MAX      40
#define DELIVERY_WID_MAX       (DELIVERY_ID_MAX + 24) /* "<id>_v<version>" */
#define DELIVERY_ERROR_MAX     64
#define DELIVERY_EVENTS_MAX    8         /* pending events per connection */
#define DELIVERY_DONE_MAX      4         /* last outcomes kept per connection */
#define DELIVERY_BODY_MAX      16384     /* one webhook body */
#define DELIVERY_REPLAY_KEY    "replay/" /* key prefix of replay requests */

typedef struct {
    int64_t version;
    char type[DELIVERY_TYPE_MAX]; /* "connection.connected", ... */
    char *body;                   /* owned; the exact bytes POSTed */
    int attempts;
    int gone;                 /* 1: answered 410, held until a replay */
    int64_t created_ms;       /* enqueued */
    int64_t first_attempt_ms; /* 0: never attempted */
    int64_t next_attempt_ms;  /* due time of the next attempt */
    int last_http;            /* HTTP status of the last attempt, 0 none */
    char last_error[DELIVERY_ERROR_MAX];
} delivery_event;

typedef struct {
    int64_t version;
    char type[DELIVERY_TYPE_MAX];
    int failed; /* 0 delivered (2xx), 1 failed for good */
    int attempts;
    int64_t at_ms;
    int last_http;
    char last_error[DELIVERY_ERROR_MAX];
    char *body; /* owned; kept for failed events only (replay) */
} delivery_done;

typedef struct {
    char id[DELIVERY_ID_MAX];
    int64_t last_version; /* highest status version taken as an event */
    int64_t updated_ms;
    int nev;
    delivery_event ev[DELIVERY_EVENTS_MAX]; /* version order; ev[0] is the head */
    int ndone;
    delivery_done done[DELIVERY_DONE_MAX]; /* oldest first */
} delivery_conn;

typedef struct {
    int64_t base_ms;      /* first retry delay */
    int64_t cap_ms;       /* longest delay between two attempts */
    int64_t retry_max_ms; /* retry for this long after the first attempt */
} delivery_policy;

typedef enum {
    DELIVERY_RETRY,     /* scheduled again */
    DELIVERY_DELIVERED, /* 2xx: done */
    DELIVERY_FAILED,    /* retries exhausted: done, replayable */
    DELIVERY_GONE,      /* 410: held, the endpoint is gone */
} delivery_outcome;

/* The event a status.v1 record asks for. Returns 1 with *version, type and
 * a malloc'd body {"type","timestamp","data":<platform view>} (the status
 * document's fields, plus end_user, organization and tags when the record
 * has them); 0 when the status is not final (no event); -1 ERRC_PERMANENT
 * when the record is malformed or the body would exceed DELIVERY_BODY_MAX. */
int delivery_event_from_status(const char *json, size_t len, char id[DELIVERY_ID_MAX],
                               int64_t *version, char type[DELIVERY_TYPE_MAX], char **body,
                               err_t *e);

/* An empty state for id. */
void delivery_conn_init(delivery_conn *c, const char *id);

/* Free every body and reset to empty (the id is kept). */
void delivery_conn_clear(delivery_conn *c);

/* Take an event (body ownership passes to c). Returns 1 when queued, 0
 * when version ≤ last_version (already taken: body freed). A full queue
 * fails its oldest event ("queue_full", replayable) to make room. */
int delivery_enqueue(delivery_conn *c, int64_t version, const char *type, char *body,
                     int64_t now_ms);

/* The head event when it may be attempted now: not gone and due. */
delivery_event *delivery_due(delivery_conn *c, int64_t now_ms);

/* "<connection id>_v<version>" into out[DELIVERY_WID_MAX]. */
void delivery_webhook_id(const char *id, int64_t version, char out[DELIVERY_WID_MAX]);

/* Delay before attempt number attempts+1 after `attempts` failures:
 * base·2^(attempts-1) capped at cap, of which a random half (rnd) is
 * jitter: the result is in [d/2, d]. attempts ≥ 1. */
int64_t delivery_backoff_ms(const delivery_policy *p, int attempts, uint32_t rnd);

/* Apply the result of an attempt of the head event: http 2xx delivered,
 * 410 gone, anything else (http 0 = no answer; `error` names it, never a
 * response body) retried or, past the policy, failed. */
delivery_outcome delivery_result(delivery_conn *c, int http, const char *error, int64_t now_ms,
                                 const delivery_policy *p, uint32_t rnd);

/* Operator replay: events held by a 410 become due now; failed events
 * kept with their bodies are queued again (version order). Each gets a new
 * retry window. Returns how many events were made due. */
int delivery_replay(delivery_conn *c, int64_t now_ms);

/* 1 when the head event is held by a 410. */
int delivery_gone(const delivery_conn *c);

/* Oldest created_ms of a pending event, 0 when none. */
int64_t delivery_oldest_ms(const delivery_conn *c);

/* webhook.v1 JSON (malloc'd). */
char *delivery_encode(const delivery_conn *c, err_t *e);

/* Parse a webhook.v1 record into c (initialised here; strict:
 * ERRC_PERMANENT on any defect, c left empty). */
int delivery_decode(const char *json, size_t len, delivery_conn *c, err_t *e);

/* webhook_replay.v1 JSON for connection id ("*": every connection of the
 * partition it is written to). */
char *delivery_replay_encode(const char *id, int64_t now_ms, err_t *e);

/* Parse a webhook_replay.v1 record; the connection id (or "*") into id. */
int delivery_replay_decode(const char *json, size_t len, char id[DELIVERY_ID_MAX], err_t *e);

#endif
