/*
 * machine — the connection state machine of SPEC §5 as pure functions.
 *
 * Each function takes the current state, an event and the time, mutates the
 * state in place and says what the worker must do next. No I/O, no clock,
 * no randomness: the unit tests drive every transition. A function that
 * changes the state bumps `version` and `updated_at_ms`; one that leaves the
 * state untouched (an exact duplicate) returns MACHINE_UNCHANGED so nothing
 * is produced.
 *
 * The rules it encodes:
 *  - The first code for a connection wins; the same code again changes
 *    nothing; a different code while connected or in progress is recorded
 *    (counted) and never exchanged.
 *  - Success is sticky (G3): nothing after `connected` leads to `failed`.
 *  - A failed connection may start a new chain with a new code; a code
 *    whose chain ended (conn_t.answered, never cleared: not by an error
 *    callback, not by a later chain) is never exchanged again.
 *  - Retries are scheduled (retry_at_ms), never slept on, and end at the
 *    code's deadline (received_at + provider code_ttl).
 *  - An invalid_grant after an unknown-outcome attempt is
 *    reconnect_required, never "code already used" (code_rejected).
 *  - invalid_client holds the code (pending/retrying) for a fixed
 *    configuration, until its deadline.
 *  - A claim found open at takeover is an attempt of unknown outcome.
 *  - Refresh (SPEC §5b) runs through the same claim/settle path while the
 *    connection is connected: requests coalesce (one refresh per
 *    connection at a time, none while the token is fresh); an unknown
 *    outcome is re-sent only when the provider does not rotate refresh
 *    tokens, otherwise the connection fails reconnect_required, as on
 *    invalid_grant; a rotated refresh token replaces the old one in the
 *    same state change, so a rotated-out token is never sent.
 */
#ifndef OAUTHQ_WORKER_MACHINE_H
#define OAUTHQ_WORKER_MACHINE_H

#include <stdint.h>

#include "common/records.h"
#include "common/conn.h"
#include "common/exchange.h"

#define MACHINE_BACKOFF_BASE_MS  1000
#define MACHINE_BACKOFF_MAX_MS   30000
#define MACHINE_PAUSE_MS         30000 /* invalid_client re-probe interval */
#define MACHINE_REFRESH_ATTEMPTS 5     /* refresh requests per chain before giving up */

/* The provider's refresh rules, from its profile and the worker's config. */
typedef struct {
    int rotation; /* refresh tokens are rotated: an unknown outcome is never re-sent */
    int ahead_s;  /* background refresh this long before expiry; 0: on demand only */
    int skew_s;   /* a token expiring within this many seconds is stale */
} machine_refresh_policy;

typedef enum {
    MACHINE_UNCHANGED = 0, /* nothing to write */
    MACHINE_CHANGED,       /* write the new state (connections + status) */
    MACHINE_EXCHANGE,      /* state changed: claim and exchange the active code */
    MACHINE_DEAUTHORIZE,   /* revoke at the provider, then machine_on_deauthorized */
} machine_action;

/* A decoded callback arrived. `fresh` is 1 when `c` was just conn_init'ed
 * (no earlier state). code_sealed/verifier_sealed are the sealed forms of
 * the callback's code and PKCE verifier ("" when none); code_hash its
 * sha256 hex. */
machine_action machine_on_callback(conn_t *c, int fresh, const records_callback *cb,
                                   const char *code_hash, const char *code_sealed,
                                   const char *verifier_sealed, int code_ttl_s, int64_t now_ms);

/* A record for this key was malformed (its key is a usable connection id):
 * fails a connection that has nothing better, never a connected one. */
machine_action machine_on_malformed(conn_t *c, int fresh, int64_t now_ms);

/* A session.v1 record (the intake created the connection). Only a fresh
 * connection takes it: pending/awaiting_callback with the session's
 * metadata, return_to and creation time, due at expires_at + margin_ms
 * (machine_on_due then makes it expired). Anything already known about
 * the connection (a callback came first, a replayed session, a final
 * status) is left untouched: MACHINE_UNCHANGED. */
machine_action machine_on_session(conn_t *c, int fresh, const records_session *s, int64_t margin_ms,
                                  int64_t now_ms);

/* The provider is paused: hold a queued code instead of exchanging it;
 * due again when the pause ends or at the code's deadline. */
void machine_hold(conn_t *c, int64_t paused_until_ms, int64_t now_ms);

/* Take the claim before a request leaves: phase exchanging, attempt+1,
 * the lease (claiming instance, wall-clock claim time). */
void machine_claim(conn_t *c, const char *instance, int64_t now_ms);

/* A committed claim whose request never left (its lease ran out before it
 * could be handed to curl, or the partition went away): the attempt does
 * not count, the code is due again at once. */
machine_action machine_not_sent(conn_t *c, const char *why, int64_t now_ms);

/* The provider was resumed (oauthqctl provider resume): a held code (or a
 * held refresh) is due now — exchanged, or code_expired past its deadline
 * (machine_on_due). Anything not retrying is left alone. */
machine_action machine_on_resume(conn_t *c, int64_t now_ms);

/* Held with the other codes of a provider paused by invalid_client: a
 * pending code scheduled after due_ms is due at due_ms (the next probe
 * time) instead. */
void machine_due_by(conn_t *c, int64_t due_ms);

/* State created by an earlier malformed record (its provider unknown)
 * takes the provider its first valid callback names. */
void machine_adopt_provider(conn_t *c, const char *provider);

/* The code should be exchanged but no in-flight slot is free for its
 * provider: recorded as queued and due at once (served by the due scan
 * when a slot frees), so the partition keeps flowing. */
void machine_defer(conn_t *c, int64_t now_ms);

/* When a new owner may re-send an open claim: claimed_at + hold_ms
 * (lease + exchange timeout + skew margin); 0 when the claim time is
 * unknown. */
int64_t machine_resend_at(const conn_t *c, int64_t hold_ms);

/* The exchange ended with outcome r. On success the caller passes the
 * sealed tokens. *pause_provider is set when the provider must be paused
 * (invalid_client). */
machine_action machine_on_result(conn_t *c, const exchange_result *r, const char *access_sealed,
                                 const char *refresh_sealed, const machine_refresh_policy *rp,
                                 int64_t now_ms, int *pause_provider);

/* A scheduled retry is due. paused_until_ms > now means the provider is
 * paused: the retry is pushed back (or the code expires). A session still
 * awaiting its callback at its due time becomes final `expired` (pauses do
 * not matter: nothing is sent). */
machine_action machine_on_due(conn_t *c, int64_t paused_until_ms, int64_t now_ms);

/* Takeover (or restart): resolve an open claim as an unknown-outcome
 * attempt, due no earlier than machine_resend_at(c, hold_ms) (the old
 * owner's request may still be in flight until then). Unchanged when no
 * claim is open. */
machine_action machine_on_takeover(conn_t *c, int64_t hold_ms, const machine_refresh_policy *rp,
                                   int64_t now_ms);

/* 1 when c's access token is expired or expires within skew_s (never for
 * a token without a lifetime; always for a lifetime of unknown start). */
int machine_token_stale(const conn_t *c, int skew_s, int64_t now_ms);

/* A refresh.v1 request (SPEC §5b). MACHINE_EXCHANGE: claim a refresh now.
 * Unchanged (coalesced) when not connected, a refresh is claimed or
 * scheduled, or the token is fresh. A stale token without a refresh token
 * fails the connection reconnect_required. Paused provider: scheduled for
 * the end of the pause. */
machine_action machine_on_refresh_request(conn_t *c, int fresh, const machine_refresh_policy *rp,
                                          int64_t paused_until_ms, int64_t now_ms);

/* An operator's replay (oauthqctl replay). Only a code never definitively
 * answered and still inside its deadline is exchanged (now, unless the
 * provider is paused); anything else is recorded in last_error as the
 * explanation, never a second exchange. `fresh`: no state for this id. */
machine_action machine_on_replay(conn_t *c, int fresh, int64_t paused_until_ms, int64_t now_ms);

/* A disconnect request (DELETE /v1/connections/{id}). Connected: the
 * caller revokes at the provider (idempotent) before committing; anything
 * else is recorded, and disconnected stays disconnected. */
machine_action machine_on_disconnect(conn_t *c, int fresh, int64_t now_ms);

/* The provider's answer to the revocation: done → disconnected with the
 * sealed tokens shredded; otherwise stays connected with last_error. */
machine_action machine_on_deauthorized(conn_t *c, int done, const char *detail, int64_t now_ms);

/* The code cannot be sent: its provider is no longer configured. A
 * definitive failure (misconfigured), never a crash loop; nothing was
 * sent. */
machine_action machine_on_unconfigured(conn_t *c, int64_t now_ms);

/* The stored code cannot be unsealed (its data key left the keyring): a
 * poison state, failed as misconfigured (the record is dead-lettered). */
machine_action machine_on_unsealable(conn_t *c, int64_t now_ms);

/* The refresh token cannot be used (unsealable: its data key left the
 * keyring): a connected connection fails reconnect_required; nothing was
 * sent. */
machine_action machine_on_refresh_unusable(conn_t *c, const char *why, int64_t now_ms);

/* Backoff before retry number `attempts` (1-based). */
int64_t machine_backoff_ms(int attempts);

#endif
