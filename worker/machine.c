/* machine — see machine.h. Pure. */
#include "worker/machine.h"

#include <stdio.h>
#include <string.h>

static void touch(conn_t *c, int64_t now_ms)
{
    c->version++;
    c->updated_at_ms = now_ms;
}

static int in_progress(const conn_t *c)
{
    return c->status == CONN_PENDING &&
           (c->phase == PHASE_QUEUED || c->phase == PHASE_EXCHANGING || c->phase == PHASE_RETRYING);
}

/* The code chain ended definitively: the code is no longer needed, and
 * its hash joins the answered set (never exchanged again, SPEC §5). */
static void drop_code(conn_t *c)
{
    conn_answer(c, c->code_hash);
    memset(c->code_sealed, 0, sizeof c->code_sealed);
    memset(c->verifier_sealed, 0, sizeof c->verifier_sealed);
    c->claimed = 0;
    c->retry_at_ms = 0;
}

static void fail(conn_t *c, conn_reason reason)
{
    c->status = CONN_FAILED;
    c->phase = PHASE_NONE;
    c->reason = reason;
    drop_code(c);
}

/* When the background refresher should renew c's token (0: never): the
 * provider's refresh_ahead_s before expiry, but not before half the
 * token's lifetime (a lifetime shorter than the lead would loop). */
static int64_t background_at(const conn_t *c, const machine_refresh_policy *rp)
{
    if (!rp || rp->ahead_s <= 0 || !c->refresh_sealed[0] || c->expires_in <= 0 ||
        c->tokens_at_ms <= 0)
        return 0;
    int64_t life = c->expires_in * 1000;
    int64_t at = c->tokens_at_ms + life - (int64_t)rp->ahead_s * 1000;
    int64_t half = c->tokens_at_ms + life / 2;
    return at > half ? at : half;
}

/* A refresh ended the connection: the tokens are shredded (the latest
 * changelog record carries no secret) and the platform must reconnect. */
static void fail_refresh(conn_t *c, const char *why)
{
    c->status = CONN_FAILED;
    c->phase = PHASE_NONE;
    c->reason = REASON_RECONNECT_REQUIRED;
    c->refresh_failed = 1;
    c->claimed = 0;
    c->retry_at_ms = 0;
    memset(c->access_sealed, 0, sizeof c->access_sealed);
    memset(c->refresh_sealed, 0, sizeof c->refresh_sealed);
    snprintf(c->last_error, sizeof c->last_error, "%s", why);
}

/* Another refresh attempt after delay_ms, or give up the chain (the
 * connection stays connected; the next request starts a new chain). */
static void retry_refresh(conn_t *c, int64_t delay_ms, const machine_refresh_policy *rp,
                          int64_t now_ms)
{
    c->claimed = 0;
    if (c->refresh_attempts >= MACHINE_REFRESH_ATTEMPTS) {
        char why[sizeof c->last_error];
        snprintf(why, sizeof why, "refresh gave up after %d attempts: %.100s", c->refresh_attempts,
                 c->last_error);
        snprintf(c->last_error, sizeof c->last_error, "%s", why);
        c->refresh_attempts = 0;
        c->refresh_unknown = 0;
        int64_t bg = background_at(c, rp);
        c->retry_at_ms = bg > now_ms ? bg : 0;
        return;
    }
    c->retry_at_ms = now_ms + delay_ms;
}

static machine_action refresh_result(conn_t *c, const exchange_result *r, const char *access_sealed,
                                     const char *refresh_sealed, const machine_refresh_policy *rp,
                                     int64_t now_ms, int *pause_provider)
{
    int rotation = rp ? rp->rotation : 1;
    snprintf(c->last_error, sizeof c->last_error, "%s", r->cls == EXCH_SUCCESS ? "" : r->detail);
    switch (r->cls) {
    case EXCH_SUCCESS:
        c->claimed = 0;
        snprintf(c->access_sealed, sizeof c->access_sealed, "%s",
                 access_sealed ? access_sealed : "");
        /* A rotated token replaces the old one in this very change; without
         * one in the answer the old one stays valid (RFC 6749 §6). */
        if (refresh_sealed && refresh_sealed[0])
            snprintf(c->refresh_sealed, sizeof c->refresh_sealed, "%s", refresh_sealed);
        if (r->scope[0])
            snprintf(c->scope, sizeof c->scope, "%s", r->scope);
        if (r->token_type[0])
            snprintf(c->token_type, sizeof c->token_type, "%s", r->token_type);
        c->expires_in = r->expires_in;
        c->tokens_at_ms = now_ms;
        c->refreshes++;
        c->refresh_attempts = 0;
        c->refresh_unknown = 0;
        c->retry_at_ms = background_at(c, rp);
        break;
    case EXCH_REJECTED:
        fail_refresh(c, c->refresh_unknown > 0
                            ? "refresh rejected after an unknown outcome: invalid_grant"
                            : "refresh rejected: invalid_grant");
        break;
    case EXCH_FAILED:
        fail_refresh(c, "refresh failed definitively");
        break;
    case EXCH_MISCONFIGURED:
        *pause_provider = 1;
        retry_refresh(c, MACHINE_PAUSE_MS, rp, now_ms);
        break;
    case EXCH_RETRY_SAFE: {
        int64_t d = machine_backoff_ms(c->refresh_attempts);
        if ((int64_t)r->retry_after_s * 1000 > d)
            d = (int64_t)r->retry_after_s * 1000;
        retry_refresh(c, d, rp, now_ms);
        break;
    }
    case EXCH_UNKNOWN:
        c->refresh_unknown++;
        /* The provider may have rotated the token: a second use would be
         * reuse, which revokes the family (RFC 9700 §4.14.2). */
        if (rotation)
            fail_refresh(c, "refresh outcome unknown and the provider rotates refresh tokens");
        else
            retry_refresh(c, machine_backoff_ms(c->refresh_attempts), rp, now_ms);
        break;
    }
    touch(c, now_ms);
    return MACHINE_CHANGED;
}

int machine_token_stale(const conn_t *c, int skew_s, int64_t now_ms)
{
    if (c->expires_in < 0)
        return 0; /* no lifetime announced: does not expire */
    if (c->tokens_at_ms <= 0)
        return 1;
    return c->tokens_at_ms + c->expires_in * 1000 <= now_ms + (int64_t)skew_s * 1000;
}

machine_action machine_on_refresh_request(conn_t *c, int fresh, const machine_refresh_policy *rp,
                                          int64_t paused_until_ms, int64_t now_ms)
{
    if (fresh || c->status != CONN_CONNECTED || c->claimed)
        return MACHINE_UNCHANGED; /* nothing to refresh, or one is in flight */
    if (!machine_token_stale(c, rp ? rp->skew_s : 0, now_ms))
        return MACHINE_UNCHANGED; /* already fresh (refreshed since the caller looked) */
    if (c->retry_at_ms > now_ms && c->refresh_attempts > 0)
        return MACHINE_UNCHANGED; /* a retry of this chain is scheduled */
    if (!c->refresh_sealed[0]) {
        fail_refresh(c, "access token expired and the provider gave no refresh token");
        touch(c, now_ms);
        return MACHINE_CHANGED;
    }
    if (paused_until_ms > now_ms) {
        if (c->retry_at_ms == paused_until_ms)
            return MACHINE_UNCHANGED;
        c->retry_at_ms = paused_until_ms;
        snprintf(c->last_error, sizeof c->last_error, "refresh held: provider paused");
        touch(c, now_ms);
        return MACHINE_CHANGED;
    }
    return MACHINE_EXCHANGE;
}

machine_action machine_on_refresh_unusable(conn_t *c, const char *why, int64_t now_ms)
{
    if (c->status != CONN_CONNECTED)
        return MACHINE_UNCHANGED;
    fail_refresh(c, why);
    touch(c, now_ms);
    return MACHINE_CHANGED;
}

int64_t machine_backoff_ms(int attempts)
{
    if (attempts < 1)
        attempts = 1;
    int64_t ms = MACHINE_BACKOFF_BASE_MS;
    for (int i = 1; i < attempts && ms < MACHINE_BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < MACHINE_BACKOFF_MAX_MS ? ms : MACHINE_BACKOFF_MAX_MS;
}

static conn_reason reason_for_callback_error(const char *error)
{
    if (strcmp(error, "access_denied") == 0)
        return REASON_ACCESS_DENIED;
    if (strcmp(error, "unauthorized_client") == 0)
        return REASON_MISCONFIGURED;
    if (strcmp(error, "server_error") == 0 || strcmp(error, "temporarily_unavailable") == 0)
        return REASON_PROVIDER_UNAVAILABLE;
    if (strcmp(error, "invalid_request") == 0 || strcmp(error, "invalid_scope") == 0 ||
        strcmp(error, "unsupported_response_type") == 0)
        return REASON_INVALID_REQUEST;
    return REASON_PROVIDER_ERROR;
}

/* Record (not exchange) a later callback: sticky success, first code wins. */
static machine_action record_ignored(conn_t *c, const char *code_hash, int64_t now_ms)
{
    if (code_hash && code_hash[0] && strcmp(code_hash, c->last_ignored_hash) == 0)
        return MACHINE_UNCHANGED; /* the same ignored code again */
    c->ignored_codes++;
    snprintf(c->last_ignored_hash, sizeof c->last_ignored_hash, "%s", code_hash ? code_hash : "");
    touch(c, now_ms);
    return MACHINE_CHANGED;
}

machine_action machine_on_callback(conn_t *c, int fresh, const records_callback *cb,
                                   const char *code_hash, const char *code_sealed,
                                   const char *verifier_sealed, int code_ttl_s, int64_t now_ms)
{
    int is_code = cb->kind == RECORDS_CB_CODE;
    if (!fresh && is_code && c->code_hash[0] && strcmp(c->code_hash, code_hash) == 0)
        return MACHINE_UNCHANGED; /* duplicate of the active code: never re-exchanged */
    if (!fresh && is_code && conn_answered(c, code_hash))
        return MACHINE_UNCHANGED; /* an answered code, whatever came since: never again */
    if (!fresh && (c->status == CONN_CONNECTED || c->status == CONN_DISCONNECTED || in_progress(c)))
        return record_ignored(c, is_code ? code_hash : "", now_ms);
    if (fresh && cb->return_to[0])
        snprintf(c->return_to, sizeof c->return_to, "%s", cb->return_to);
    if (cb->meta.json[0] && (fresh || !c->meta.json[0]))
        c->meta = cb->meta; /* the platform's end_user/organization/tags (SPEC §4a) */
    if (!is_code) {
        if (!fresh && c->status == CONN_FAILED && strcmp(c->callback_error, cb->error) == 0 &&
            !c->code_hash[0])
            return MACHINE_UNCHANGED; /* the same error redirect again */
        snprintf(c->callback_error, sizeof c->callback_error, "%s", cb->error);
        conn_answer(c, c->code_hash); /* the set outlives the chain's hash */
        c->code_hash[0] = '\0';
        c->attempts = 0;
        c->unknown_outcomes = 0;
        fail(c, reason_for_callback_error(cb->error));
        touch(c, now_ms);
        return MACHINE_CHANGED;
    }
    /* A new code chain: fresh, failed or expired connections. */
    snprintf(c->code_hash, sizeof c->code_hash, "%s", code_hash);
    snprintf(c->code_sealed, sizeof c->code_sealed, "%s", code_sealed);
    snprintf(c->verifier_sealed, sizeof c->verifier_sealed, "%s",
             verifier_sealed ? verifier_sealed : "");
    c->received_at_ms = cb->received_at_ms;
    c->deadline_ms = cb->received_at_ms + (int64_t)code_ttl_s * 1000;
    c->attempts = 0;
    c->unknown_outcomes = 0;
    c->claimed = 0;
    c->retry_at_ms = 0;
    c->last_error[0] = '\0';
    c->callback_error[0] = '\0';
    c->refresh_failed = 0;
    c->refresh_attempts = 0;
    c->refresh_unknown = 0;
    c->status = CONN_PENDING;
    c->phase = PHASE_QUEUED;
    c->reason = REASON_NONE;
    touch(c, now_ms);
    if (now_ms >= c->deadline_ms) {
        fail(c, REASON_CODE_EXPIRED);
        return MACHINE_CHANGED;
    }
    return MACHINE_EXCHANGE;
}

machine_action machine_on_session(conn_t *c, int fresh, const records_session *s, int64_t margin_ms,
                                  int64_t now_ms)
{
    if (!fresh)
        return MACHINE_UNCHANGED; /* known already: never a downgrade, replays are no-ops */
    c->status = CONN_PENDING;
    c->phase = PHASE_AWAITING_CALLBACK;
    if (s->created_at_ms > 0)
        c->created_at_ms = s->created_at_ms;
    if (s->return_to[0])
        snprintf(c->return_to, sizeof c->return_to, "%s", s->return_to);
    if (s->meta.json[0])
        c->meta = s->meta;
    int64_t at = s->expires_at_ms + (margin_ms > 0 ? margin_ms : 0);
    c->retry_at_ms = at > 0 ? at : 1;
    touch(c, now_ms);
    return MACHINE_CHANGED;
}

machine_action machine_on_malformed(conn_t *c, int fresh, int64_t now_ms)
{
    if (!fresh && c->status != CONN_PENDING)
        return MACHINE_UNCHANGED; /* connected stays connected (G3) */
    if (!fresh && in_progress(c))
        return MACHINE_UNCHANGED; /* a code is being exchanged: let it finish */
    fail(c, REASON_MALFORMED_CALLBACK);
    touch(c, now_ms);
    return MACHINE_CHANGED;
}

void machine_hold(conn_t *c, int64_t paused_until_ms, int64_t now_ms)
{
    c->phase = PHASE_RETRYING;
    c->retry_at_ms = paused_until_ms < c->deadline_ms ? paused_until_ms : c->deadline_ms;
    snprintf(c->last_error, sizeof c->last_error, "held: provider paused");
    touch(c, now_ms);
}

machine_action machine_on_resume(conn_t *c, int64_t now_ms)
{
    if (c->phase != PHASE_RETRYING) /* a held code, or a held refresh of a connected one */
        return MACHINE_UNCHANGED;
    c->retry_at_ms = now_ms;
    return machine_on_due(c, 0, now_ms);
}

void machine_due_by(conn_t *c, int64_t due_ms)
{
    if (c->status == CONN_PENDING && c->retry_at_ms > due_ms)
        c->retry_at_ms = due_ms;
}

void machine_adopt_provider(conn_t *c, const char *provider)
{
    snprintf(c->provider, sizeof c->provider, "%s", provider);
}

void machine_claim(conn_t *c, const char *instance, int64_t now_ms)
{
    if (c->status == CONN_CONNECTED)
        c->refresh_attempts++; /* a refresh: the public status does not change */
    else {
        c->phase = PHASE_EXCHANGING;
        c->attempts++;
    }
    c->claimed = 1;
    snprintf(c->claimed_by, sizeof c->claimed_by, "%s", instance ? instance : "");
    c->claimed_at_ms = now_ms;
    c->retry_at_ms = 0;
    touch(c, now_ms);
}

machine_action machine_not_sent(conn_t *c, const char *why, int64_t now_ms)
{
    if (c->status == CONN_CONNECTED && c->claimed) {
        c->claimed = 0;
        if (c->refresh_attempts > 0)
            c->refresh_attempts--;
        snprintf(c->last_error, sizeof c->last_error, "%s", why ? why : "not sent");
        c->retry_at_ms = now_ms > 0 ? now_ms : 1;
        touch(c, now_ms);
        return MACHINE_CHANGED;
    }
    if (c->status != CONN_PENDING || !c->claimed)
        return MACHINE_UNCHANGED;
    c->claimed = 0;
    if (c->attempts > 0)
        c->attempts--; /* nothing left: the attempt does not count */
    snprintf(c->last_error, sizeof c->last_error, "%s", why ? why : "not sent");
    c->phase = PHASE_RETRYING;
    c->retry_at_ms = now_ms < c->deadline_ms ? now_ms : c->deadline_ms;
    touch(c, now_ms);
    return MACHINE_CHANGED;
}

void machine_defer(conn_t *c, int64_t now_ms)
{
    if (c->status == CONN_CONNECTED) { /* a refresh waiting for a slot */
        c->retry_at_ms = now_ms > 0 ? now_ms : 1;
        touch(c, now_ms);
        return;
    }
    c->phase = PHASE_QUEUED;
    c->retry_at_ms = now_ms < c->deadline_ms ? now_ms : c->deadline_ms;
    if (c->retry_at_ms <= 0)
        c->retry_at_ms = 1;
    touch(c, now_ms);
}

/* Schedule another attempt, or end the chain when the deadline forbids. */
static void retry_or_fail(conn_t *c, int64_t delay_ms, conn_reason at_deadline, int64_t now_ms)
{
    c->claimed = 0;
    int64_t at = now_ms + delay_ms;
    if (at >= c->deadline_ms) {
        fail(c, at_deadline);
        return;
    }
    c->status = CONN_PENDING;
    c->phase = PHASE_RETRYING;
    c->retry_at_ms = at;
}

machine_action machine_on_result(conn_t *c, const exchange_result *r, const char *access_sealed,
                                 const char *refresh_sealed, const machine_refresh_policy *rp,
                                 int64_t now_ms, int *pause_provider)
{
    *pause_provider = 0;
    if (c->status == CONN_CONNECTED && c->claimed)
        return refresh_result(c, r, access_sealed, refresh_sealed, rp, now_ms, pause_provider);
    if (c->status != CONN_PENDING || !c->claimed)
        return MACHINE_UNCHANGED; /* a stale result: the chain already ended */
    snprintf(c->last_error, sizeof c->last_error, "%s", r->cls == EXCH_SUCCESS ? "" : r->detail);
    switch (r->cls) {
    case EXCH_SUCCESS:
        c->status = CONN_CONNECTED;
        c->phase = PHASE_NONE;
        c->reason = REASON_NONE;
        drop_code(c);
        snprintf(c->access_sealed, sizeof c->access_sealed, "%s",
                 access_sealed ? access_sealed : "");
        snprintf(c->refresh_sealed, sizeof c->refresh_sealed, "%s",
                 refresh_sealed ? refresh_sealed : "");
        snprintf(c->account_id, sizeof c->account_id, "%s", r->account_id);
        c->livemode = r->livemode;
        snprintf(c->scope, sizeof c->scope, "%s", r->scope);
        snprintf(c->token_type, sizeof c->token_type, "%s", r->token_type);
        c->expires_in = r->expires_in;
        c->tokens_at_ms = now_ms;
        c->refreshes = 0;
        c->retry_at_ms = background_at(c, rp);
        break;
    case EXCH_REJECTED:
        /* After an unknown outcome the first attempt may have succeeded
         * and this invalid_grant be our own reuse: the user must reconnect,
         * and must not read "code already used". */
        fail(c, c->unknown_outcomes > 0 ? REASON_RECONNECT_REQUIRED
                : r->expired_hint       ? REASON_CODE_EXPIRED
                                        : REASON_CODE_REJECTED);
        break;
    case EXCH_MISCONFIGURED:
        *pause_provider = 1;
        retry_or_fail(c, MACHINE_PAUSE_MS, REASON_CODE_EXPIRED, now_ms);
        break;
    case EXCH_FAILED:
        fail(c, strcmp(r->error, "unauthorized_client") == 0 ? REASON_MISCONFIGURED
                                                             : REASON_PROVIDER_ERROR);
        break;
    case EXCH_RETRY_SAFE: {
        int64_t d = machine_backoff_ms(c->attempts);
        if ((int64_t)r->retry_after_s * 1000 > d)
            d = (int64_t)r->retry_after_s * 1000;
        retry_or_fail(c, d, REASON_PROVIDER_UNAVAILABLE, now_ms);
        break;
    }
    case EXCH_UNKNOWN:
        c->unknown_outcomes++;
        retry_or_fail(c, machine_backoff_ms(c->attempts), REASON_PROVIDER_UNAVAILABLE, now_ms);
        break;
    }
    touch(c, now_ms);
    return MACHINE_CHANGED;
}

machine_action machine_on_due(conn_t *c, int64_t paused_until_ms, int64_t now_ms)
{
    if (c->status == CONN_CONNECTED) {
        /* A refresh retry, a takeover's re-send or the background refresh. */
        if (c->claimed || c->retry_at_ms == 0 || c->retry_at_ms > now_ms)
            return MACHINE_UNCHANGED;
        if (!c->refresh_sealed[0]) {
            c->retry_at_ms = 0; /* nothing to refresh with */
            touch(c, now_ms);
            return MACHINE_CHANGED;
        }
        if (paused_until_ms > now_ms) {
            c->retry_at_ms = paused_until_ms;
            touch(c, now_ms);
            return MACHINE_CHANGED;
        }
        return MACHINE_EXCHANGE;
    }
    if (c->status == CONN_PENDING && c->phase == PHASE_AWAITING_CALLBACK && !c->claimed &&
        c->retry_at_ms > 0 && c->retry_at_ms <= now_ms) {
        /* A session whose flow never came back (SPEC §4b connection.expired). */
        c->status = CONN_EXPIRED;
        c->phase = PHASE_NONE;
        c->reason = REASON_NONE;
        c->retry_at_ms = 0;
        touch(c, now_ms);
        return MACHINE_CHANGED;
    }
    if (c->status != CONN_PENDING || (c->phase != PHASE_RETRYING && c->phase != PHASE_QUEUED) ||
        c->claimed || c->retry_at_ms == 0 || c->retry_at_ms > now_ms)
        return MACHINE_UNCHANGED;
    if (now_ms >= c->deadline_ms) {
        fail(c, c->unknown_outcomes > 0 ? REASON_PROVIDER_UNAVAILABLE : REASON_CODE_EXPIRED);
        touch(c, now_ms);
        return MACHINE_CHANGED;
    }
    if (paused_until_ms > now_ms) {
        /* Held while the provider is paused: due again when the pause ends
         * or at the code's deadline, whichever comes first (then it
         * expires), so a long manual pause never fails codes early. */
        int64_t at = paused_until_ms < c->deadline_ms ? paused_until_ms : c->deadline_ms;
        if (at == c->retry_at_ms)
            return MACHINE_UNCHANGED;
        c->retry_at_ms = at;
        touch(c, now_ms);
        return MACHINE_CHANGED;
    }
    return MACHINE_EXCHANGE;
}

int64_t machine_resend_at(const conn_t *c, int64_t hold_ms)
{
    /* A claim without a recorded time (older record): count from now. */
    return c->claimed_at_ms > 0 ? c->claimed_at_ms + hold_ms : 0;
}

machine_action machine_on_takeover(conn_t *c, int64_t hold_ms, const machine_refresh_policy *rp,
                                   int64_t now_ms)
{
    if (c->status == CONN_CONNECTED && c->claimed) {
        /* An open refresh claim: the old owner may have used the refresh
         * token. Rotating providers: never a second use. */
        c->refresh_unknown++;
        c->claimed = 0;
        if (!rp || rp->rotation) {
            fail_refresh(c, "refresh claim open at takeover and the provider rotates refresh "
                            "tokens");
        } else {
            snprintf(c->last_error, sizeof c->last_error, "refresh claim open at takeover");
            int64_t at = machine_resend_at(c, hold_ms);
            if (at == 0)
                at = now_ms + hold_ms;
            c->retry_at_ms = at > now_ms ? at : now_ms;
        }
        touch(c, now_ms);
        return MACHINE_CHANGED;
    }
    if (c->status != CONN_PENDING || !c->claimed)
        return MACHINE_UNCHANGED;
    /* The previous owner may have sent the request, or may still send it
     * while its lease runs: an unknown outcome, re-sent only once the
     * lease, the exchange timeout and the margin have all passed. */
    c->unknown_outcomes++;
    snprintf(c->last_error, sizeof c->last_error, "claim open at takeover");
    c->claimed = 0;
    int64_t at = machine_resend_at(c, hold_ms);
    if (at == 0)
        at = now_ms + hold_ms;
    if (at < now_ms)
        at = now_ms;
    if (at >= c->deadline_ms) {
        fail(c, REASON_PROVIDER_UNAVAILABLE);
    } else {
        c->phase = PHASE_RETRYING;
        c->retry_at_ms = at;
    }
    touch(c, now_ms);
    return MACHINE_CHANGED;
}

machine_action machine_on_replay(conn_t *c, int fresh, int64_t paused_until_ms, int64_t now_ms)
{
    if (fresh)
        return MACHINE_UNCHANGED; /* nothing known about it: nothing to replay */
    const char *why = NULL;
    if (c->status == CONN_CONNECTED)
        why = "replay ignored: already connected";
    else if (c->status != CONN_PENDING)
        why = "replay ignored: the code was definitively answered or never arrived";
    else if (c->claimed || c->phase == PHASE_EXCHANGING)
        why = "replay ignored: an exchange is in flight";
    else if (!c->code_sealed[0])
        why = "replay ignored: no code to exchange";
    if (why) {
        if (strcmp(c->last_error, why) == 0)
            return MACHINE_UNCHANGED;
        snprintf(c->last_error, sizeof c->last_error, "%s", why);
        touch(c, now_ms);
        return MACHINE_CHANGED;
    }
    if (now_ms >= c->deadline_ms) {
        fail(c, c->unknown_outcomes > 0 ? REASON_PROVIDER_UNAVAILABLE : REASON_CODE_EXPIRED);
        touch(c, now_ms);
        return MACHINE_CHANGED;
    }
    if (paused_until_ms > now_ms) {
        snprintf(c->last_error, sizeof c->last_error, "replay deferred: provider paused");
        touch(c, now_ms);
        return MACHINE_CHANGED;
    }
    /* Queued or retrying with the code kept: exchange it now. */
    c->phase = PHASE_RETRYING;
    c->retry_at_ms = now_ms;
    return machine_on_due(c, 0, now_ms);
}

machine_action machine_on_disconnect(conn_t *c, int fresh, int64_t now_ms)
{
    if (fresh || c->status == CONN_DISCONNECTED)
        return MACHINE_UNCHANGED;
    if (c->status == CONN_CONNECTED)
        return MACHINE_DEAUTHORIZE;
    const char *why = "disconnect ignored: the connection is not connected";
    if (strcmp(c->last_error, why) == 0)
        return MACHINE_UNCHANGED;
    snprintf(c->last_error, sizeof c->last_error, "%s", why);
    touch(c, now_ms);
    return MACHINE_CHANGED;
}

machine_action machine_on_deauthorized(conn_t *c, int done, const char *detail, int64_t now_ms)
{
    if (c->status != CONN_CONNECTED)
        return MACHINE_UNCHANGED;
    if (done) {
        c->status = CONN_DISCONNECTED;
        c->phase = PHASE_NONE;
        c->reason = REASON_NONE;
        /* Shred: the latest changelog record carries no secret any more. */
        memset(c->access_sealed, 0, sizeof c->access_sealed);
        memset(c->refresh_sealed, 0, sizeof c->refresh_sealed);
        c->last_error[0] = '\0';
        c->claimed = 0; /* a refresh in flight is moot now */
        c->retry_at_ms = 0;
    } else {
        snprintf(c->last_error, sizeof c->last_error, "disconnect failed: %s", detail);
    }
    touch(c, now_ms);
    return MACHINE_CHANGED;
}

/* A pending connection this deployment cannot exchange: failed as
 * misconfigured, with the operator-facing why. */
static machine_action fail_misconfigured(conn_t *c, const char *why, int64_t now_ms)
{
    if (c->status != CONN_PENDING)
        return MACHINE_UNCHANGED;
    snprintf(c->last_error, sizeof c->last_error, "%s", why);
    fail(c, REASON_MISCONFIGURED);
    touch(c, now_ms);
    return MACHINE_CHANGED;
}

machine_action machine_on_unconfigured(conn_t *c, int64_t now_ms)
{
    return fail_misconfigured(c, "provider not configured", now_ms);
}

machine_action machine_on_unsealable(conn_t *c, int64_t now_ms)
{
    return fail_misconfigured(c, "code sealed with an unknown data key", now_ms);
}
