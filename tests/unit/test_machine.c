/* Unit tests of worker/machine: every transition of SPEC §5 as a pure
 * function — first code wins, duplicates, sticky success, deadlines,
 * retries, unknown outcomes, reconnect_required, invalid_client pause,
 * takeover — and of common/conn's codecs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/conn.h"
#include "worker/machine.h"

#define T0  1800000000000LL
#define TTL 300

static records_callback code_cb(const char *code, int64_t at)
{
    records_callback cb;
    memset(&cb, 0, sizeof cb);
    snprintf(cb.connection_id, sizeof cb.connection_id, "conn1");
    snprintf(cb.provider, sizeof cb.provider, "stripe");
    cb.kind = RECORDS_CB_CODE;
    snprintf(cb.code, sizeof cb.code, "%s", code);
    cb.received_at_ms = at;
    return cb;
}

static records_callback error_cb(const char *error)
{
    records_callback cb = code_cb("", T0);
    cb.kind = RECORDS_CB_ERROR;
    cb.code[0] = '\0';
    snprintf(cb.error, sizeof cb.error, "%s", error);
    return cb;
}

static exchange_result outcome(exchange_class cls)
{
    exchange_result r;
    memset(&r, 0, sizeof r);
    r.cls = cls;
    r.livemode = -1;
    r.expires_in = -1;
    snprintf(r.detail, sizeof r.detail, "class %d", (int)cls);
    if (cls == EXCH_SUCCESS) {
        snprintf(r.account_id, sizeof r.account_id, "acct_1");
        r.livemode = 0;
        snprintf(r.scope, sizeof r.scope, "read_write");
    }
    if (cls == EXCH_REJECTED)
        snprintf(r.error, sizeof r.error, "invalid_grant");
    return r;
}

static conn_t *fresh(void)
{
    conn_t *c = calloc(1, sizeof *c);
    conn_init(c, "conn1", "stripe", T0);
    return c;
}

/* A connection with code "A" claimed and in flight. */
static conn_t *claimed_with_a(void)
{
    conn_t *c = fresh();
    records_callback cb = code_cb("A", T0);
    assert_int_equal(machine_on_callback(c, 1, &cb, "hashA", "sealedA", "", TTL, T0),
                     MACHINE_EXCHANGE);
    machine_claim(c, "w1", T0 + 1);
    return c;
}

static void test_first_code_exchanges_and_duplicates_do_not(void **state)
{
    (void)state;
    conn_t *c = fresh();
    records_callback cb = code_cb("A", T0);
    assert_int_equal(machine_on_callback(c, 1, &cb, "hashA", "sealedA", "", TTL, T0),
                     MACHINE_EXCHANGE);
    assert_int_equal(c->status, CONN_PENDING);
    assert_int_equal(c->phase, PHASE_QUEUED);
    assert_int_equal(c->deadline_ms, T0 + TTL * 1000);
    int64_t v = c->version;
    /* The same code again (reload, double click, other intake): nothing. */
    assert_int_equal(machine_on_callback(c, 0, &cb, "hashA", "sealedA", "", TTL, T0 + 5),
                     MACHINE_UNCHANGED);
    assert_int_equal(c->version, v);
    machine_claim(c, "w1", T0 + 6);
    assert_int_equal(c->phase, PHASE_EXCHANGING);
    assert_int_equal(c->attempts, 1);
    assert_true(c->claimed);
    assert_int_equal(machine_on_callback(c, 0, &cb, "hashA", "sealedA", "", TTL, T0 + 7),
                     MACHINE_UNCHANGED);
    /* A different code while in progress: recorded, not exchanged. */
    records_callback cb2 = code_cb("B", T0 + 8);
    assert_int_equal(machine_on_callback(c, 0, &cb2, "hashB", "sealedB", "", TTL, T0 + 8),
                     MACHINE_CHANGED);
    assert_int_equal(c->ignored_codes, 1);
    assert_string_equal(c->code_hash, "hashA");
    assert_string_equal(c->code_sealed, "sealedA");
    assert_int_equal(machine_on_callback(c, 0, &cb2, "hashB", "sealedB", "", TTL, T0 + 9),
                     MACHINE_UNCHANGED);
    free(c);
}

static void test_success_is_sticky(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a();
    exchange_result ok = outcome(EXCH_SUCCESS);
    int pause = 0;
    assert_int_equal(machine_on_result(c, &ok, "v1.d1.acc", "v1.d1.ref", NULL, T0 + 100, &pause),
                     MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_CONNECTED);
    assert_string_equal(c->account_id, "acct_1");
    assert_int_equal(c->tokens_at_ms, T0 + 100); /* expires_in counts from here (SPEC §5b) */
    {
        err_t e = {0};
        conn_t *d = calloc(1, sizeof *d);
        char *json = conn_encode(c, &e);
        assert_non_null(strstr(json, "\"tokens_at_ms\":"));
        assert_int_equal(conn_decode(json, strlen(json), d, &e), 0);
        assert_int_equal(d->tokens_at_ms, T0 + 100);
        free(json);
        free(d);
    }
    assert_string_equal(c->code_sealed, ""); /* the code is dropped once answered */
    assert_false(c->claimed);
    /* Nothing afterwards turns it into failed. */
    records_callback dup = code_cb("A", T0);
    assert_int_equal(machine_on_callback(c, 0, &dup, "hashA", "", "", TTL, T0 + 200),
                     MACHINE_UNCHANGED);
    records_callback other = code_cb("B", T0 + 300);
    assert_int_equal(machine_on_callback(c, 0, &other, "hashB", "sealedB", "", TTL, T0 + 300),
                     MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_CONNECTED);
    records_callback denied = error_cb("access_denied");
    machine_on_callback(c, 0, &denied, "", "", "", TTL, T0 + 400);
    assert_int_equal(c->status, CONN_CONNECTED);
    machine_on_malformed(c, 0, T0 + 500);
    assert_int_equal(c->status, CONN_CONNECTED);
    /* Late or stale exchange results cannot downgrade it either. */
    exchange_result bad = outcome(EXCH_REJECTED);
    assert_int_equal(machine_on_result(c, &bad, NULL, NULL, NULL, T0 + 600, &pause),
                     MACHINE_UNCHANGED);
    assert_int_equal(machine_on_takeover(c, 0, NULL, T0 + 700), MACHINE_UNCHANGED);
    assert_int_equal(machine_on_due(c, 0, T0 + 800), MACHINE_UNCHANGED);
    assert_int_equal(c->status, CONN_CONNECTED);
    free(c);
}

static void test_definitive_failures(void **state)
{
    (void)state;
    int pause = 0;
    struct {
        exchange_class cls;
        int expired;
        const char *error;
        conn_reason want;
    } rows[] = {
        {EXCH_REJECTED, 0, "invalid_grant", REASON_CODE_REJECTED},
        {EXCH_REJECTED, 1, "invalid_grant", REASON_CODE_EXPIRED},
        {EXCH_FAILED, 0, "invalid_request", REASON_PROVIDER_ERROR},
        {EXCH_FAILED, 0, "unauthorized_client", REASON_MISCONFIGURED},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        conn_t *c = claimed_with_a();
        exchange_result r = outcome(rows[i].cls);
        r.expired_hint = rows[i].expired;
        snprintf(r.error, sizeof r.error, "%s", rows[i].error);
        assert_int_equal(machine_on_result(c, &r, NULL, NULL, NULL, T0 + 10, &pause),
                         MACHINE_CHANGED);
        assert_int_equal(c->status, CONN_FAILED);
        assert_int_equal(c->reason, rows[i].want);
        assert_string_equal(c->code_sealed, "");
        assert_false(pause);
        free(c);
    }
}

static void test_unknown_then_invalid_grant_is_reconnect_required(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a();
    exchange_result unk = outcome(EXCH_UNKNOWN);
    int pause = 0;
    assert_int_equal(machine_on_result(c, &unk, NULL, NULL, NULL, T0 + 10, &pause),
                     MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_PENDING);
    assert_int_equal(c->phase, PHASE_RETRYING);
    assert_int_equal(c->unknown_outcomes, 1);
    assert_int_equal(c->retry_at_ms, T0 + 10 + machine_backoff_ms(1));
    assert_string_equal(c->code_sealed, "sealedA"); /* kept for the retry */
    /* Not yet due. */
    assert_int_equal(machine_on_due(c, 0, T0 + 11), MACHINE_UNCHANGED);
    assert_int_equal(machine_on_due(c, 0, c->retry_at_ms), MACHINE_EXCHANGE);
    machine_claim(c, "w1", c->retry_at_ms);
    assert_int_equal(c->attempts, 2);
    exchange_result rej = outcome(EXCH_REJECTED);
    machine_on_result(c, &rej, NULL, NULL, NULL, T0 + 5000, &pause);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(c->reason, REASON_RECONNECT_REQUIRED); /* never code_rejected */
    free(c);
}

static void test_retry_safe_uses_retry_after_and_deadline(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a();
    exchange_result r = outcome(EXCH_RETRY_SAFE);
    r.retry_after_s = 7;
    int pause = 0;
    machine_on_result(c, &r, NULL, NULL, NULL, T0 + 10, &pause);
    assert_int_equal(c->phase, PHASE_RETRYING);
    assert_int_equal(c->retry_at_ms, T0 + 10 + 7000);
    assert_int_equal(c->unknown_outcomes, 0); /* the code is known unused */
    /* Due after the deadline: the code expired. */
    assert_int_equal(machine_on_due(c, 0, T0 + TTL * 1000), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(c->reason, REASON_CODE_EXPIRED);
    free(c);
    /* A retry that would land past the deadline ends the chain now. */
    c = claimed_with_a();
    r.retry_after_s = TTL + 10;
    machine_on_result(c, &r, NULL, NULL, NULL, T0 + 10, &pause);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(c->reason, REASON_PROVIDER_UNAVAILABLE);
    free(c);
    assert_int_equal(machine_backoff_ms(1), 1000);
    assert_int_equal(machine_backoff_ms(3), 4000);
    assert_int_equal(machine_backoff_ms(50), MACHINE_BACKOFF_MAX_MS);
}

static void test_invalid_client_pauses_and_holds(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a();
    exchange_result r = outcome(EXCH_MISCONFIGURED);
    int pause = 0;
    machine_on_result(c, &r, NULL, NULL, NULL, T0 + 10, &pause);
    assert_true(pause);
    assert_int_equal(c->status, CONN_PENDING); /* held, not failed */
    assert_int_equal(c->phase, PHASE_RETRYING);
    assert_string_equal(c->code_sealed, "sealedA");
    /* Due while the provider is still paused: pushed to the pause end. */
    assert_int_equal(machine_on_due(c, T0 + 60000, c->retry_at_ms), MACHINE_CHANGED);
    assert_int_equal(c->retry_at_ms, T0 + 60000);
    /* A queued code while paused is held, not exchanged. */
    conn_t *q = fresh();
    records_callback qcb = code_cb("Q", T0);
    assert_int_equal(machine_on_callback(q, 1, &qcb, "hashQ", "sealedQ", "", TTL, T0),
                     MACHINE_EXCHANGE);
    machine_hold(q, INT64_MAX / 2, T0 + 1);
    assert_int_equal(q->phase, PHASE_RETRYING);
    assert_int_equal(q->retry_at_ms, q->deadline_ms);
    assert_int_equal(q->status, CONN_PENDING);
    free(q);
    /* Pause lifted (configuration fixed): exchanged. */
    assert_int_equal(machine_on_due(c, 0, T0 + 60000), MACHINE_EXCHANGE);
    /* Paused past the code's deadline (a manual pause): held until the
     * deadline, then code_expired — never failed early. */
    c->retry_at_ms = T0 + 100000;
    assert_int_equal(machine_on_due(c, INT64_MAX / 2, T0 + 100000), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_PENDING);
    assert_int_equal(c->retry_at_ms, c->deadline_ms);
    assert_int_equal(machine_on_due(c, INT64_MAX / 2, c->deadline_ms), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(c->reason, REASON_CODE_EXPIRED);
    free(c);
}

/* The worker's pause helpers: a resume makes a held code due now (or
 * code_expired past its deadline), the probe interval caps a held code's
 * retry time, and a malformed record's state adopts its provider. */
static void test_resume_probe_and_adopt(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a();
    exchange_result r = outcome(EXCH_MISCONFIGURED);
    int pause = 0;
    machine_on_result(c, &r, NULL, NULL, NULL, T0 + 10, &pause);
    assert_true(pause);
    int64_t held = c->retry_at_ms;
    assert_true(held > T0 + 1000);
    machine_due_by(c, T0 + 1000); /* earlier: taken */
    assert_int_equal(c->retry_at_ms, T0 + 1000);
    machine_due_by(c, T0 + 5000); /* later: kept */
    assert_int_equal(c->retry_at_ms, T0 + 1000);
    assert_int_equal(machine_on_resume(c, T0 + 20), MACHINE_EXCHANGE);
    machine_claim(c, "w1", T0 + 21);
    /* Not held (exchanging): a resume changes nothing. */
    assert_int_equal(machine_on_resume(c, T0 + 22), MACHINE_UNCHANGED);
    free(c);
    /* Held past its deadline: the resume ends it code_expired. */
    conn_t *q = fresh();
    records_callback qcb = code_cb("Q", T0);
    assert_int_equal(machine_on_callback(q, 1, &qcb, "hashQ", "sealedQ", "", TTL, T0),
                     MACHINE_EXCHANGE);
    machine_hold(q, INT64_MAX / 2, T0 + 1);
    assert_int_equal(machine_on_resume(q, q->deadline_ms + 1), MACHINE_CHANGED);
    assert_int_equal(q->status, CONN_FAILED);
    assert_int_equal(q->reason, REASON_CODE_EXPIRED);
    machine_adopt_provider(q, "stripe");
    assert_string_equal(q->provider, "stripe");
    free(q);
}

static void test_takeover_resolves_claims_as_unknown(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a();
    assert_int_equal(machine_on_takeover(c, 0, NULL, T0 + 50), MACHINE_CHANGED);
    assert_int_equal(c->unknown_outcomes, 1);
    assert_false(c->claimed);
    assert_int_equal(c->phase, PHASE_RETRYING);
    assert_int_equal(machine_on_due(c, 0, T0 + 50), MACHINE_EXCHANGE);
    assert_int_equal(machine_on_takeover(c, 0, NULL, T0 + 51),
                     MACHINE_UNCHANGED); /* no open claim */
    free(c);
    c = claimed_with_a();
    assert_int_equal(machine_on_takeover(c, 0, NULL, T0 + TTL * 1000), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(c->reason, REASON_PROVIDER_UNAVAILABLE);
    free(c);
}

/* Lease (SPEC §6): a new owner waits until claim time + hold before it
 * re-sends; a duplicate meanwhile is not exchanged; never earlier. */
static void test_takeover_waits_for_the_lease(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a();
    int64_t claimed_at = c->claimed_at_ms;
    assert_string_equal(c->claimed_by, "w1");
    assert_int_equal(machine_on_takeover(c, 22000, NULL, claimed_at + 100), MACHINE_CHANGED);
    assert_int_equal(c->retry_at_ms, claimed_at + 22000);
    assert_int_equal(machine_on_due(c, 0, claimed_at + 21999), MACHINE_UNCHANGED);
    assert_int_equal(machine_on_due(c, 0, claimed_at + 22000), MACHINE_EXCHANGE);
    free(c);
    /* Taken over long after the lease: due at once. */
    c = claimed_with_a();
    claimed_at = c->claimed_at_ms;
    assert_int_equal(machine_on_takeover(c, 1000, NULL, claimed_at + 5000), MACHINE_CHANGED);
    assert_int_equal(c->retry_at_ms, claimed_at + 5000);
    free(c);
}

/* A claim whose request never left: the attempt does not count and the
 * code is due again at once, without an unknown outcome. */
static void test_not_sent_and_defer(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a();
    int att = c->attempts;
    assert_int_equal(machine_not_sent(c, "lease expired", T0 + 60), MACHINE_CHANGED);
    assert_false(c->claimed);
    assert_int_equal(c->attempts, att - 1);
    assert_int_equal(c->unknown_outcomes, 0);
    assert_int_equal(machine_not_sent(c, "x", T0 + 61), MACHINE_UNCHANGED);
    assert_int_equal(machine_on_due(c, 0, T0 + 61), MACHINE_EXCHANGE);
    machine_defer(c, T0 + 62);
    assert_int_equal(c->phase, PHASE_QUEUED);
    assert_int_equal(machine_on_due(c, 0, T0 + 62), MACHINE_EXCHANGE);
    free(c);
}

static void test_failed_connection_may_start_a_new_chain(void **state)
{
    (void)state;
    conn_t *c = fresh();
    records_callback denied = error_cb("access_denied");
    assert_int_equal(machine_on_callback(c, 1, &denied, "", "", "", TTL, T0), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(c->reason, REASON_ACCESS_DENIED);
    assert_int_equal(machine_on_callback(c, 0, &denied, "", "", "", TTL, T0 + 1),
                     MACHINE_UNCHANGED);
    records_callback cb = code_cb("A", T0 + 10);
    assert_int_equal(machine_on_callback(c, 0, &cb, "hashA", "sealedA", "", TTL, T0 + 10),
                     MACHINE_EXCHANGE);
    assert_int_equal(c->status, CONN_PENDING);
    assert_int_equal(c->reason, REASON_NONE);
    /* Error callback reasons. */
    const char *errs[] = {"server_error", "invalid_scope", "unauthorized_client"};
    conn_reason want[] = {REASON_PROVIDER_UNAVAILABLE, REASON_INVALID_REQUEST,
                          REASON_MISCONFIGURED};
    for (int i = 0; i < 3; i++) {
        conn_t *d = fresh();
        records_callback e = error_cb(errs[i]);
        machine_on_callback(d, 1, &e, "", "", "", TTL, T0);
        assert_int_equal(d->reason, want[i]);
        free(d);
    }
    /* A code that arrives already past its deadline fails as expired. */
    conn_t *late = fresh();
    records_callback old = code_cb("Z", T0 - TTL * 1000 - 1);
    assert_int_equal(machine_on_callback(late, 1, &old, "hashZ", "sealedZ", "", TTL, T0),
                     MACHINE_CHANGED);
    assert_int_equal(late->reason, REASON_CODE_EXPIRED);
    free(late);
    free(c);
}

/* SPEC §5: a code hash that got a definitive answer is never exchanged
 * again, not after an error callback (which once cleared the chain's
 * hash: A → rejected → ?error=access_denied → A exchanged A again), not
 * after a later chain, not after the record went through the changelog. */
static void test_answered_codes_are_never_exchanged_again(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a(), *d = calloc(1, sizeof *d);
    exchange_result rej = outcome(EXCH_REJECTED);
    int pause;
    assert_int_equal(machine_on_result(c, &rej, NULL, NULL, NULL, T0 + 2, &pause), MACHINE_CHANGED);
    assert_int_equal(c->reason, REASON_CODE_REJECTED);
    assert_true(conn_answered(c, "hashA"));
    records_callback denied = error_cb("access_denied");
    assert_int_equal(machine_on_callback(c, 0, &denied, "", "", "", TTL, T0 + 3), MACHINE_CHANGED);
    assert_int_equal(c->reason, REASON_ACCESS_DENIED);
    records_callback a = code_cb("A", T0 + 4);
    int64_t v = c->version;
    assert_int_equal(machine_on_callback(c, 0, &a, "hashA", "sealedA", "", TTL, T0 + 4),
                     MACHINE_UNCHANGED);
    assert_int_equal(c->version, v);
    assert_int_equal(c->status, CONN_FAILED);
    /* A new code still starts a new chain; once it is answered, neither
     * code is exchanged again. */
    records_callback b = code_cb("B", T0 + 5);
    assert_int_equal(machine_on_callback(c, 0, &b, "hashB", "sealedB", "", TTL, T0 + 5),
                     MACHINE_EXCHANGE);
    machine_claim(c, "w1", T0 + 6);
    assert_int_equal(machine_on_result(c, &rej, NULL, NULL, NULL, T0 + 7, &pause), MACHINE_CHANGED);
    assert_int_equal(machine_on_callback(c, 0, &a, "hashA", "sealedA", "", TTL, T0 + 8),
                     MACHINE_UNCHANGED);
    /* The set survives the changelog (encode, decode). */
    err_t e = {0};
    char *json = conn_encode(c, &e);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"answered_sha256\":[\"hashA\",\"hashB\"]"));
    assert_int_equal(conn_decode(json, strlen(json), d, &e), 0);
    char *again = conn_encode(d, &e);
    assert_string_equal(again, json);
    free(again);
    assert_int_equal(machine_on_callback(d, 0, &denied, "", "", "", TTL, T0 + 9), MACHINE_CHANGED);
    assert_int_equal(machine_on_callback(d, 0, &b, "hashB", "sealedB", "", TTL, T0 + 9),
                     MACHINE_UNCHANGED);
    /* A record of an older worker (no answered_sha256) still decodes. */
    char *at = strstr(json, ",\"answered_sha256\"");
    assert_non_null(at);
    snprintf(at, strlen(at) + 1, "}");
    assert_int_equal(conn_decode(json, strlen(json), d, &e), 0);
    assert_int_equal(d->nanswered, 0);
    free(json);
    assert_int_equal(
        conn_decode("{\"schema\":\"oauthq.connection.v1\",\"answered_sha256\":3}", 52, d, &e), -1);
    /* Bounded: the oldest leaves. */
    conn_t *m = fresh();
    char h[16];
    for (int i = 0; i < CONN_ANSWERED_MAX + 4; i++) {
        snprintf(h, sizeof h, "h%d", i);
        conn_answer(m, h);
        conn_answer(m, h); /* present: no second entry */
    }
    assert_int_equal(m->nanswered, CONN_ANSWERED_MAX);
    assert_false(conn_answered(m, "h3"));
    assert_true(conn_answered(m, "h4"));
    snprintf(h, sizeof h, "h%d", CONN_ANSWERED_MAX + 3);
    assert_true(conn_answered(m, h));
    free(m);
    free(c);
    free(d);
}

static void test_malformed(void **state)
{
    (void)state;
    conn_t *c = fresh();
    assert_int_equal(machine_on_malformed(c, 1, T0), MACHINE_CHANGED);
    assert_int_equal(c->reason, REASON_MALFORMED_CALLBACK);
    free(c);
    c = claimed_with_a();
    assert_int_equal(machine_on_malformed(c, 0, T0 + 5), MACHINE_UNCHANGED);
    free(c);
}

static void test_versions_only_move_forward(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a();
    int64_t v = c->version;
    exchange_result unk = outcome(EXCH_UNKNOWN);
    int pause;
    machine_on_result(c, &unk, NULL, NULL, NULL, T0 + 10, &pause);
    assert_true(c->version > v);
    v = c->version;
    machine_on_due(c, 0, c->retry_at_ms);
    machine_claim(c, "w1", T0 + 2000);
    assert_true(c->version > v);
    free(c);
}

static void test_replay(void **state)
{
    (void)state;
    int pause;
    /* Retrying with the code kept: exchanged now (not at its retry_at). */
    conn_t *c = claimed_with_a();
    exchange_result unk = outcome(EXCH_UNKNOWN);
    machine_on_result(c, &unk, NULL, NULL, NULL, T0 + 10, &pause);
    assert_true(c->retry_at_ms > T0 + 20);
    assert_int_equal(machine_on_replay(c, 0, 0, T0 + 20), MACHINE_EXCHANGE);
    /* Provider paused: deferred, recorded. */
    assert_int_equal(machine_on_replay(c, 0, T0 + 60000, T0 + 21), MACHINE_CHANGED);
    assert_string_equal(c->last_error, "replay deferred: provider paused");
    /* In flight: ignored. */
    machine_claim(c, "w1", T0 + 30);
    assert_int_equal(machine_on_replay(c, 0, 0, T0 + 31), MACHINE_CHANGED);
    assert_non_null(strstr(c->last_error, "in flight"));
    /* Connected: never exchanged again. */
    exchange_result ok = outcome(EXCH_SUCCESS);
    machine_on_result(c, &ok, "a", "r", NULL, T0 + 40, &pause);
    assert_int_equal(machine_on_replay(c, 0, 0, T0 + 50), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_CONNECTED);
    assert_int_equal(machine_on_replay(c, 0, 0, T0 + 51), MACHINE_UNCHANGED);
    free(c);
    /* Failed definitively: never exchanged again. */
    c = claimed_with_a();
    exchange_result rej = outcome(EXCH_REJECTED);
    machine_on_result(c, &rej, NULL, NULL, NULL, T0 + 10, &pause);
    assert_int_equal(machine_on_replay(c, 0, 0, T0 + 20), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(c->reason, REASON_CODE_REJECTED);
    free(c);
    /* Past the deadline: expired, not exchanged. */
    c = claimed_with_a();
    machine_on_result(c, &unk, NULL, NULL, NULL, T0 + 10, &pause);
    assert_int_equal(machine_on_replay(c, 0, 0, T0 + TTL * 1000 + 1), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_FAILED);
    free(c);
    /* Unknown id. */
    c = fresh();
    assert_int_equal(machine_on_replay(c, 1, 0, T0), MACHINE_UNCHANGED);
    free(c);
}

static void test_disconnect(void **state)
{
    (void)state;
    int pause;
    conn_t *c = claimed_with_a();
    exchange_result ok = outcome(EXCH_SUCCESS);
    machine_on_result(c, &ok, "v1.d1.acc", "v1.d1.ref", NULL, T0 + 10, &pause);
    assert_int_equal(machine_on_disconnect(c, 0, T0 + 20), MACHINE_DEAUTHORIZE);
    /* Provider unreachable: still connected, explained. */
    assert_int_equal(machine_on_deauthorized(c, 0, "http 503", T0 + 21), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_CONNECTED);
    assert_string_equal(c->access_sealed, "v1.d1.acc");
    assert_non_null(strstr(c->last_error, "http 503"));
    /* Done: disconnected, tokens shredded; idempotent afterwards. */
    assert_int_equal(machine_on_deauthorized(c, 1, "", T0 + 22), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_DISCONNECTED);
    assert_string_equal(c->access_sealed, "");
    assert_string_equal(c->refresh_sealed, "");
    assert_int_equal(machine_on_disconnect(c, 0, T0 + 23), MACHINE_UNCHANGED);
    /* Disconnected never exchanges a later code. */
    records_callback cb = code_cb("Z", T0 + 30);
    assert_int_equal(machine_on_callback(c, 0, &cb, "hashZ", "sealedZ", "", TTL, T0 + 30),
                     MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_DISCONNECTED);
    free(c);
    c = claimed_with_a();
    assert_int_equal(machine_on_disconnect(c, 0, T0 + 5), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_PENDING);
    assert_int_equal(machine_on_disconnect(c, 1, T0 + 5), MACHINE_UNCHANGED);
    free(c);
}

static void test_codecs(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a(), *d = calloc(1, sizeof *d);
    exchange_result ok = outcome(EXCH_SUCCESS);
    int pause;
    machine_on_result(c, &ok, "v1.d1.acc", "v1.d1.ref", NULL, T0 + 100, &pause);
    err_t e = {0};
    char *json = conn_encode(c, &e);
    assert_non_null(json);
    assert_int_equal(conn_decode(json, strlen(json), d, &e), 0);
    assert_memory_equal(c, d, sizeof *c);
    free(json);
    char *st = conn_status_json(c, &e);
    assert_non_null(strstr(st, "\"status\":\"connected\""));
    assert_non_null(strstr(st, "\"account\":{\"id\":\"acct_1\""));
    assert_null(strstr(st, "v1.d1.acc")); /* no secrets in the public document */
    assert_null(strstr(st, "hashA"));
    free(st);
    assert_int_equal(conn_decode("{\"schema\":\"oauthq.connection.v1\"}", 33, d, &e), -1);
    assert_int_equal(conn_decode("[]", 2, d, &e), -1);
    char *dl = conn_dlq_json("malformed_callback", "t", 1, 42, "k\x01", 2, "{bad", 4, 1, NULL, NULL,
                             T0, &e);
    assert_non_null(strstr(dl, "\"key\":\"k?\""));
    free(dl);
    free(c);
    free(d);
}

/* conn_decode looks members up through its own index (common/conn.c,
 * fields_*): the same answer as cJSON's lookup, whatever the member count
 * or order: the first of duplicate members counts, every field survives,
 * and a record with more members than the index holds is decoded the same. */
static char *with_members(const char *json, const char *front, const char *back)
{
    size_t n = strlen(json) + strlen(front) + strlen(back) + 1;
    char *out = malloc(n);
    assert_non_null(out);
    snprintf(out, n, "{%s%.*s%s}", front, (int)(strlen(json) - 2), json + 1, back);
    return out;
}

static void test_codec_member_lookup(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a(), *d = calloc(1, sizeof *d);
    exchange_result ok = outcome(EXCH_SUCCESS);
    int pause;
    machine_on_result(c, &ok, "v1.d1.acc", "v1.d1.ref", NULL, T0 + 100, &pause);
    err_t e = {0};
    char *json = conn_encode(c, &e);
    assert_non_null(json);
    /* Duplicates: the first wins, as in cJSON. */
    char *dup = with_members(json, "\"status\":\"bogus\",", "");
    assert_int_equal(conn_decode(dup, strlen(dup), d, &e), -1);
    free(dup);
    dup = with_members(json, "", ",\"status\":\"bogus\",\"version\":\"x\"");
    assert_int_equal(conn_decode(dup, strlen(dup), d, &e), 0);
    assert_memory_equal(c, d, sizeof *c);
    free(dup);
    /* Unknown members, up to and past what the index holds: same result,
     * and a bad known member among them is still refused. */
    for (int count = 10; count <= 200; count += 19) {
        char extra[200 * 24] = "", *p = extra;
        for (int i = 0; i < count; i++)
            p += snprintf(p, sizeof extra - (size_t)(p - extra), "\"x_%d\":%d,", i, i);
        char *many = with_members(json, extra, "");
        memset(d, 0x5a, sizeof *d);
        assert_int_equal(conn_decode(many, strlen(many), d, &e), 0);
        assert_memory_equal(c, d, sizeof *c);
        free(many);
        char *bad = with_members(json, extra, "");
        char *v = strstr(bad, "\"claimed\":");
        assert_non_null(v);
        v += strlen("\"claimed\":"); /* true or false -> 7 and blanks */
        size_t vl = strspn(v, "truefals");
        assert_true(vl >= 4);
        memset(v, ' ', vl);
        v[0] = '7';
        assert_int_equal(conn_decode(bad, strlen(bad), d, &e), -1);
        free(bad);
    }
    free(json);
    free(c);
    free(d);
}

/* ---- refresh (SPEC §5b) -------------------------------------------------- */

static const machine_refresh_policy ROTATING = {1, 0, 60}, STABLE = {0, 0, 60};

/* Connected at T0 + 10 with access "acc0" and refresh "ref0" living 3600 s. */
static conn_t *connected(const machine_refresh_policy *rp)
{
    conn_t *c = claimed_with_a();
    exchange_result ok = outcome(EXCH_SUCCESS);
    ok.expires_in = 3600;
    int pause = 0;
    assert_int_equal(machine_on_result(c, &ok, "acc0", "ref0", rp, T0 + 10, &pause),
                     MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_CONNECTED);
    return c;
}

#define EXPIRED (T0 + 10 + 3600 * 1000)

static void test_refresh_request_coalesces(void **state)
{
    (void)state;
    conn_t *c = connected(&ROTATING);
    /* Fresh token: nothing to do, whatever the caller saw. */
    assert_false(machine_token_stale(c, 60, T0 + 1000));
    assert_int_equal(machine_on_refresh_request(c, 0, &ROTATING, 0, T0 + 1000), MACHINE_UNCHANGED);
    /* Within the skew: stale, one refresh is claimed... */
    assert_true(machine_token_stale(c, 60, EXPIRED - 59000));
    assert_int_equal(machine_on_refresh_request(c, 0, &ROTATING, 0, EXPIRED - 59000),
                     MACHINE_EXCHANGE);
    int64_t v = c->version;
    machine_claim(c, "w1", EXPIRED - 59000);
    assert_true(c->claimed);
    assert_int_equal(c->refresh_attempts, 1);
    assert_int_equal(c->status, CONN_CONNECTED); /* the public status does not move */
    assert_int_equal(c->phase, PHASE_NONE);
    assert_int_equal(c->attempts, 1); /* the code's attempts stay as they were */
    assert_true(c->version > v);
    /* ...and every further request coalesces into it. */
    for (int i = 0; i < 50; i++)
        assert_int_equal(machine_on_refresh_request(c, 0, &ROTATING, 0, EXPIRED),
                         MACHINE_UNCHANGED);
    /* Success: the rotated token replaces the old one in the same change. */
    exchange_result ok = outcome(EXCH_SUCCESS);
    ok.expires_in = 3600;
    snprintf(ok.scope, sizeof ok.scope, "%s", "");
    int pause = 0;
    assert_int_equal(machine_on_result(c, &ok, "acc1", "ref1", &ROTATING, EXPIRED, &pause),
                     MACHINE_CHANGED);
    assert_string_equal(c->access_sealed, "acc1");
    assert_string_equal(c->refresh_sealed, "ref1");
    assert_string_equal(c->scope, "read_write"); /* kept when the answer has none */
    assert_false(c->claimed);
    assert_int_equal(c->refreshes, 1);
    assert_int_equal(c->refresh_attempts, 0);
    assert_int_equal(c->tokens_at_ms, EXPIRED);
    assert_int_equal(c->retry_at_ms, 0); /* no background refresh configured */
    assert_int_equal(machine_on_refresh_request(c, 0, &ROTATING, 0, EXPIRED + 1),
                     MACHINE_UNCHANGED);
    /* No refresh token in an answer: the old one stays (RFC 6749 §6). */
    assert_int_equal(machine_on_refresh_request(c, 0, &ROTATING, 0, EXPIRED + 3600 * 1000),
                     MACHINE_EXCHANGE);
    machine_claim(c, "w1", EXPIRED + 3600 * 1000);
    assert_int_equal(
        machine_on_result(c, &ok, "acc2", "", &ROTATING, EXPIRED + 3600 * 1000, &pause),
        MACHINE_CHANGED);
    assert_string_equal(c->refresh_sealed, "ref1");
    /* Not connected, or no state: nothing. */
    conn_t *p = claimed_with_a();
    assert_int_equal(machine_on_refresh_request(p, 0, &ROTATING, 0, EXPIRED), MACHINE_UNCHANGED);
    assert_int_equal(machine_on_refresh_request(p, 1, &ROTATING, 0, EXPIRED), MACHINE_UNCHANGED);
    free(p);
    free(c);
}

static void test_refresh_unknown_outcome_rules(void **state)
{
    (void)state;
    int pause = 0;
    exchange_result unk = outcome(EXCH_UNKNOWN);
    /* Rotating: never a second use; reconnect_required, tokens shredded. */
    conn_t *c = connected(&ROTATING);
    assert_int_equal(machine_on_refresh_request(c, 0, &ROTATING, 0, EXPIRED), MACHINE_EXCHANGE);
    machine_claim(c, "w1", EXPIRED);
    assert_int_equal(machine_on_result(c, &unk, NULL, NULL, &ROTATING, EXPIRED + 5, &pause),
                     MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(c->reason, REASON_RECONNECT_REQUIRED);
    assert_true(c->refresh_failed);
    assert_string_equal(c->access_sealed, "");
    assert_string_equal(c->refresh_sealed, "");
    assert_int_equal(c->refresh_attempts, 1);
    assert_int_equal(machine_on_due(c, 0, EXPIRED + 100000), MACHINE_UNCHANGED);
    assert_int_equal(machine_on_refresh_request(c, 0, &ROTATING, 0, EXPIRED + 9),
                     MACHINE_UNCHANGED);
    /* The status record marks it for the refresh_failed webhook. */
    char *s = conn_status_json(c, NULL);
    assert_non_null(strstr(s, "\"failed_during\":\"refresh\""));
    free(s);
    /* A new code for the same connection reconnects it. */
    records_callback b = code_cb("B", EXPIRED + 10);
    assert_int_equal(machine_on_callback(c, 0, &b, "hashB", "sealedB", "", TTL, EXPIRED + 10),
                     MACHINE_EXCHANGE);
    assert_false(c->refresh_failed);
    free(c);

    /* Not rotating (Stripe): counted and re-sent after a backoff. */
    c = connected(&STABLE);
    machine_on_refresh_request(c, 0, &STABLE, 0, EXPIRED);
    machine_claim(c, "w1", EXPIRED);
    machine_on_result(c, &unk, NULL, NULL, &STABLE, EXPIRED + 5, &pause);
    assert_int_equal(c->status, CONN_CONNECTED);
    assert_int_equal(c->refresh_unknown, 1);
    assert_int_equal(c->retry_at_ms, EXPIRED + 5 + machine_backoff_ms(1));
    assert_string_equal(c->refresh_sealed, "ref0");
    /* Requests meanwhile wait for the scheduled retry. */
    assert_int_equal(machine_on_refresh_request(c, 0, &STABLE, 0, EXPIRED + 6), MACHINE_UNCHANGED);
    assert_int_equal(machine_on_due(c, 0, EXPIRED + 6), MACHINE_UNCHANGED);
    assert_int_equal(machine_on_due(c, 0, c->retry_at_ms), MACHINE_EXCHANGE);
    /* Bounded: after MACHINE_REFRESH_ATTEMPTS the chain gives up, connected. */
    int64_t t = c->retry_at_ms;
    machine_claim(c, "w1", t);
    for (int i = 2; i <= MACHINE_REFRESH_ATTEMPTS; i++) {
        machine_on_result(c, &unk, NULL, NULL, &STABLE, t, &pause);
        if (i == MACHINE_REFRESH_ATTEMPTS)
            break;
        t = c->retry_at_ms;
        assert_int_equal(machine_on_due(c, 0, t), MACHINE_EXCHANGE);
        machine_claim(c, "w1", t);
    }
    machine_on_result(c, &unk, NULL, NULL, &STABLE, t, &pause);
    assert_int_equal(c->status, CONN_CONNECTED);
    assert_int_equal(c->retry_at_ms, 0);
    assert_int_equal(c->refresh_attempts, 0);
    assert_non_null(strstr(c->last_error, "refresh gave up"));
    /* A later request starts a new chain. */
    assert_int_equal(machine_on_refresh_request(c, 0, &STABLE, 0, t + 1), MACHINE_EXCHANGE);
    free(c);
}

static void test_refresh_definitive_and_takeover(void **state)
{
    (void)state;
    int pause = 0;
    /* invalid_grant: reconnect_required whatever the rotation. */
    conn_t *c = connected(&STABLE);
    machine_on_refresh_request(c, 0, &STABLE, 0, EXPIRED);
    machine_claim(c, "w1", EXPIRED);
    exchange_result rej = outcome(EXCH_REJECTED);
    machine_on_result(c, &rej, NULL, NULL, &STABLE, EXPIRED + 1, &pause);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(c->reason, REASON_RECONNECT_REQUIRED);
    assert_true(c->refresh_failed);
    free(c);
    /* 429: re-sent after Retry-After (the token was not used). */
    c = connected(&ROTATING);
    machine_on_refresh_request(c, 0, &ROTATING, 0, EXPIRED);
    machine_claim(c, "w1", EXPIRED);
    exchange_result busy = outcome(EXCH_RETRY_SAFE);
    busy.retry_after_s = 7;
    machine_on_result(c, &busy, NULL, NULL, &ROTATING, EXPIRED, &pause);
    assert_int_equal(c->status, CONN_CONNECTED);
    assert_int_equal(c->retry_at_ms, EXPIRED + 7000);
    /* Not sent (lease ran out before curl): does not count, due at once. */
    assert_int_equal(machine_on_due(c, 0, EXPIRED + 7000), MACHINE_EXCHANGE);
    machine_claim(c, "w1", EXPIRED + 7000);
    assert_int_equal(c->refresh_attempts, 2);
    assert_int_equal(machine_not_sent(c, "not sent", EXPIRED + 7001), MACHINE_CHANGED);
    assert_int_equal(c->refresh_attempts, 1);
    assert_false(c->claimed);
    assert_int_equal(c->retry_at_ms, EXPIRED + 7001);
    /* Takeover of an open refresh claim: rotating → reconnect_required. */
    machine_claim(c, "w1", EXPIRED + 7002);
    assert_int_equal(machine_on_takeover(c, 22000, &ROTATING, EXPIRED + 8000), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(c->reason, REASON_RECONNECT_REQUIRED);
    free(c);
    /* ...not rotating: re-sent only after claim + hold. */
    c = connected(&STABLE);
    machine_on_refresh_request(c, 0, &STABLE, 0, EXPIRED);
    machine_claim(c, "w1", EXPIRED);
    assert_int_equal(machine_on_takeover(c, 22000, &STABLE, EXPIRED + 100), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_CONNECTED);
    assert_int_equal(c->refresh_unknown, 1);
    assert_int_equal(c->retry_at_ms, EXPIRED + 22000);
    assert_int_equal(machine_on_due(c, 0, EXPIRED + 21999), MACHINE_UNCHANGED);
    assert_int_equal(machine_on_due(c, 0, EXPIRED + 22000), MACHINE_EXCHANGE);
    free(c);
    /* Paused provider: the refresh waits for the end of the pause. */
    c = connected(&STABLE);
    assert_int_equal(machine_on_refresh_request(c, 0, &STABLE, EXPIRED + 5000, EXPIRED),
                     MACHINE_CHANGED);
    assert_int_equal(c->retry_at_ms, EXPIRED + 5000);
    assert_int_equal(machine_on_due(c, 0, EXPIRED + 5000), MACHINE_EXCHANGE);
    free(c);
    /* A stale token without a refresh token: reconnect_required. */
    c = claimed_with_a();
    exchange_result ok = outcome(EXCH_SUCCESS);
    ok.expires_in = 60;
    machine_on_result(c, &ok, "acc0", "", &STABLE, T0 + 10, &pause);
    assert_int_equal(machine_on_refresh_request(c, 0, &STABLE, 0, T0 + 10), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(c->reason, REASON_RECONNECT_REQUIRED);
    free(c);
    /* A token without a lifetime never goes stale. */
    c = claimed_with_a();
    ok.expires_in = -1;
    machine_on_result(c, &ok, "acc0", "ref0", &STABLE, T0 + 10, &pause);
    assert_false(machine_token_stale(c, 60, T0 + 10 + 365LL * 86400 * 1000));
    free(c);
}

static void test_background_refresh_schedule(void **state)
{
    (void)state;
    const machine_refresh_policy ahead = {1, 300, 60};
    conn_t *c = connected(&ahead);
    /* Due 300 s before the 3600 s expiry. */
    assert_int_equal(c->retry_at_ms, T0 + 10 + 3300 * 1000);
    assert_int_equal(machine_on_due(c, 0, c->retry_at_ms - 1), MACHINE_UNCHANGED);
    assert_int_equal(machine_on_due(c, 0, c->retry_at_ms), MACHINE_EXCHANGE);
    machine_claim(c, "w1", T0 + 3310 * 1000);
    exchange_result ok = outcome(EXCH_SUCCESS);
    ok.expires_in = 400; /* shorter than twice the lead: not before half its life */
    int pause = 0;
    machine_on_result(c, &ok, "acc1", "ref1", &ahead, T0 + 3310 * 1000, &pause);
    assert_int_equal(c->retry_at_ms, T0 + 3310 * 1000 + 200 * 1000);
    free(c);
}

/* connection.v1 as it would be with member k set to v (NULL: removed); caller frees. */
static char *conn_json_with(const conn_t *c, const char *k, cJSON *v)
{
    err_t e = {0};
    char *json = conn_encode(c, &e);
    assert_non_null(json);
    cJSON *o = cJSON_Parse(json);
    free(json);
    assert_non_null(o);
    cJSON_DeleteItemFromObjectCaseSensitive(o, k);
    if (v)
        cJSON_AddItemToObject(o, k, v);
    char *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

/* conn_decode's counters and the fields older workers did not write: absent optional ones
 * restore as 0, bad values and absent required ones are refused (ERRC_PERMANENT). */
static void test_conn_decode_optional_and_required_fields(void **state)
{
    (void)state;
    conn_t *c = claimed_with_a(), *d = calloc(1, sizeof *d);
    c->tokens_at_ms = T0 + 5;
    c->refresh_attempts = 2;
    c->refresh_unknown = 1;
    c->refreshes = 4;
    c->attempts = 3;
    c->ignored_codes = 1;
    err_t e = {0};
    static const char *const optional[] = {"tokens_at_ms", "claimed_at_ms", "refresh_attempts",
                                           "refresh_unknown_outcomes", "refreshes"};
    for (size_t i = 0; i < sizeof optional / sizeof optional[0]; i++) {
        char *j = conn_json_with(c, optional[i], NULL);
        assert_int_equal(conn_decode(j, strlen(j), d, &e), 0);
        free(j);
        int64_t got = i == 0   ? d->tokens_at_ms
                      : i == 1 ? d->claimed_at_ms
                      : i == 2 ? d->refresh_attempts
                      : i == 3 ? d->refresh_unknown
                               : d->refreshes;
        assert_int_equal(got, 0);
        assert_int_equal(d->attempts, 3); /* the rest restored */
        assert_int_equal(d->refreshes, i == 4 ? 0 : 4);
        /* Present, they are checked like every number. */
        j = conn_json_with(c, optional[i], cJSON_CreateString("7"));
        memset(&e, 0, sizeof e);
        assert_int_equal(conn_decode(j, strlen(j), d, &e), -1);
        assert_int_equal(e.cls, ERRC_PERMANENT);
        assert_non_null(strstr(e.msg, optional[i]));
        free(j);
    }
    static const char *const required[] = {"attempts", "unknown_outcomes", "ignored_codes"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        char *j = conn_json_with(c, required[i], NULL);
        memset(&e, 0, sizeof e);
        assert_int_equal(conn_decode(j, strlen(j), d, &e), -1);
        assert_non_null(strstr(e.msg, required[i]));
        free(j);
        j = conn_json_with(c, required[i], cJSON_CreateNumber(2e9)); /* not an int */
        assert_int_equal(conn_decode(j, strlen(j), d, &e), -1);
        free(j);
    }
    /* Refresh counters are never negative. */
    char *j = conn_json_with(c, "refreshes", cJSON_CreateNumber(-1));
    assert_int_equal(conn_decode(j, strlen(j), d, &e), -1);
    free(j);
    j = conn_json_with(c, "refresh_attempts", cJSON_CreateNumber(9));
    assert_int_equal(conn_decode(j, strlen(j), d, &e), 0);
    assert_int_equal(d->refresh_attempts, 9);
    assert_int_equal(d->refresh_unknown, 1);
    assert_int_equal(d->attempts, 3);
    assert_int_equal(d->ignored_codes, 1);
    assert_int_equal(d->tokens_at_ms, T0 + 5);
    assert_int_equal(d->claimed_at_ms, c->claimed_at_ms);
    free(j);
    free(c);
    free(d);
}

/* ---- connect sessions (session.v1) and connection.expired -------------------- */

#define MARGIN 30000

static records_session session_rec(int64_t created, int64_t expires)
{
    records_session s;
    memset(&s, 0, sizeof s);
    snprintf(s.connection_id, sizeof s.connection_id, "conn1");
    snprintf(s.provider, sizeof s.provider, "stripe");
    snprintf(s.return_to, sizeof s.return_to, "https://app.example/done");
    snprintf(s.meta.json, sizeof s.meta.json, "%s",
             "{\"end_user\":{\"id\":\"u1\",\"email\":null,\"display_name\":null},"
             "\"organization\":null,\"tags\":{}}");
    s.created_at_ms = created;
    s.expires_at_ms = expires;
    return s;
}

/* A session seeds pending/awaiting_callback (metadata, return_to, created_at
 * from the session) due at expiry + margin; not before, and then expired,
 * exactly once (a second due changes nothing). */
static void test_session_due_expires(void **state)
{
    (void)state;
    conn_t *c = fresh();
    records_session s = session_rec(T0 - 5000, T0 + 600000);
    assert_int_equal(machine_on_session(c, 1, &s, MARGIN, T0), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_PENDING);
    assert_int_equal(c->phase, PHASE_AWAITING_CALLBACK);
    assert_int_equal(c->version, 1);
    assert_int_equal(c->created_at_ms, T0 - 5000);
    assert_int_equal(c->retry_at_ms, T0 + 600000 + MARGIN);
    assert_string_equal(c->return_to, "https://app.example/done");
    assert_non_null(strstr(c->meta.json, "\"u1\""));
    /* Not due yet: nothing. The expiry itself is not enough (the margin). */
    assert_int_equal(machine_on_due(c, 0, T0 + 600000), MACHINE_UNCHANGED);
    assert_int_equal(c->status, CONN_PENDING);
    /* Due, no callback: final expired; paused providers do not matter. */
    assert_int_equal(machine_on_due(c, T0 + 10000000, T0 + 600000 + MARGIN), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_EXPIRED);
    assert_int_equal(c->phase, PHASE_NONE);
    assert_int_equal(c->reason, REASON_NONE);
    assert_int_equal(c->retry_at_ms, 0);
    assert_int_equal(c->version, 2);
    assert_int_equal(machine_on_due(c, 0, T0 + 700000 + MARGIN), MACHINE_UNCHANGED);
    assert_int_equal(c->version, 2);
    /* The public document says expired with the fixed message. */
    char *doc = conn_status_json(c, NULL);
    assert_non_null(doc);
    assert_non_null(strstr(doc, "\"status\":\"expired\""));
    assert_non_null(strstr(doc, "expired before it was completed"));
    free(doc);
    /* A replayed session record changes nothing, not even the version. */
    assert_int_equal(machine_on_session(c, 0, &s, MARGIN, T0 + 800000), MACHINE_UNCHANGED);
    assert_int_equal(c->status, CONN_EXPIRED);
    assert_int_equal(c->version, 2);
    free(c);
}

/* Session, then its callback before the expiry: the normal exchange; the
 * expiry timer is gone, so the due scan never expires it, and success is
 * sticky (a late session record changes nothing). */
static void test_session_then_callback(void **state)
{
    (void)state;
    conn_t *c = fresh();
    records_session s = session_rec(T0, T0 + 600000);
    assert_int_equal(machine_on_session(c, 1, &s, MARGIN, T0), MACHINE_CHANGED);
    records_callback cb = code_cb("A", T0 + 1000);
    assert_int_equal(machine_on_callback(c, 0, &cb, "hashA", "sealedA", "", TTL, T0 + 1000),
                     MACHINE_EXCHANGE);
    assert_int_equal(c->status, CONN_PENDING);
    assert_int_equal(c->phase, PHASE_QUEUED);
    assert_int_equal(c->retry_at_ms, 0);
    assert_int_equal(c->created_at_ms, T0);
    assert_string_equal(c->return_to, "https://app.example/done");
    assert_non_null(strstr(c->meta.json, "\"u1\""));
    machine_claim(c, "w1", T0 + 1001);
    exchange_result r = outcome(EXCH_SUCCESS);
    int pause = 0;
    assert_int_equal(machine_on_result(c, &r, "acc", "ref", NULL, T0 + 1100, &pause),
                     MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_CONNECTED);
    int64_t v = c->version;
    assert_int_equal(machine_on_due(c, 0, T0 + 600000 + MARGIN + 1), MACHINE_UNCHANGED);
    assert_int_equal(machine_on_session(c, 0, &s, MARGIN, T0 + 700000), MACHINE_UNCHANGED);
    assert_int_equal(c->status, CONN_CONNECTED);
    assert_int_equal(c->version, v);
    free(c);

    /* An error callback (access_denied) before the expiry: failed, not
     * expired later. */
    c = fresh();
    assert_int_equal(machine_on_session(c, 1, &s, MARGIN, T0), MACHINE_CHANGED);
    records_callback ecb = error_cb("access_denied");
    assert_int_equal(machine_on_callback(c, 0, &ecb, "", "", "", TTL, T0 + 1000), MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_FAILED);
    assert_int_equal(machine_on_due(c, 0, T0 + 600000 + MARGIN + 1), MACHINE_UNCHANGED);
    assert_int_equal(c->status, CONN_FAILED);
    free(c);
}

/* The callback was consumed first (a session record is late or replayed):
 * the session changes nothing, whatever the state — in progress,
 * retrying, connected, disconnected — and no expiry is ever scheduled. */
static void test_session_after_state_changes_nothing(void **state)
{
    (void)state;
    records_session s = session_rec(T0 - 1000, T0 + 600000);
    conn_t *c = claimed_with_a(); /* exchanging */
    conn_t before = *c;
    assert_int_equal(machine_on_session(c, 0, &s, MARGIN, T0 + 2), MACHINE_UNCHANGED);
    assert_memory_equal(c, &before, sizeof before);
    exchange_result r = outcome(EXCH_SUCCESS);
    int pause = 0;
    assert_int_equal(machine_on_result(c, &r, "acc", "ref", NULL, T0 + 10, &pause),
                     MACHINE_CHANGED);
    assert_int_equal(c->status, CONN_CONNECTED);
    before = *c;
    assert_int_equal(machine_on_session(c, 0, &s, MARGIN, T0 + 20), MACHINE_UNCHANGED);
    assert_memory_equal(c, &before, sizeof before);
    /* G3: connected stays connected past the session's expiry. */
    assert_int_equal(machine_on_due(c, 0, T0 + 600000 + MARGIN + 1), MACHINE_UNCHANGED);
    assert_int_equal(c->status, CONN_CONNECTED);
    assert_int_equal(machine_on_deauthorized(c, 1, "", T0 + 30), MACHINE_CHANGED);
    before = *c;
    assert_int_equal(machine_on_session(c, 0, &s, MARGIN, T0 + 40), MACHINE_UNCHANGED);
    assert_memory_equal(c, &before, sizeof before);
    free(c);

    /* Retrying after a 503 (a queued code's chain): untouched, not expired. */
    c = claimed_with_a();
    r = outcome(EXCH_RETRY_SAFE);
    assert_int_equal(machine_on_result(c, &r, NULL, NULL, NULL, T0 + 10, &pause), MACHINE_CHANGED);
    assert_int_equal(c->phase, PHASE_RETRYING);
    before = *c;
    assert_int_equal(machine_on_session(c, 0, &s, MARGIN, T0 + 20), MACHINE_UNCHANGED);
    assert_memory_equal(c, &before, sizeof before);
    free(c);
}

/* The session record survives the changelog: what restore reads back is
 * still awaiting its callback with the same due time, and expires alike. */
static void test_session_state_round_trips(void **state)
{
    (void)state;
    conn_t *c = fresh();
    records_session s = session_rec(T0, T0 + 600000);
    assert_int_equal(machine_on_session(c, 1, &s, MARGIN, T0), MACHINE_CHANGED);
    char *j = conn_encode(c, NULL);
    assert_non_null(j);
    conn_t *back = calloc(1, sizeof *back);
    assert_int_equal(conn_decode(j, strlen(j), back, NULL), 0);
    free(j);
    assert_int_equal(back->status, CONN_PENDING);
    assert_int_equal(back->phase, PHASE_AWAITING_CALLBACK);
    assert_int_equal(back->retry_at_ms, T0 + 600000 + MARGIN);
    assert_string_equal(back->meta.json, c->meta.json);
    assert_int_equal(machine_on_due(back, 0, T0 + 600000 + MARGIN), MACHINE_CHANGED);
    assert_int_equal(back->status, CONN_EXPIRED);
    free(back);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_code_exchanges_and_duplicates_do_not),
        cmocka_unit_test(test_success_is_sticky),
        cmocka_unit_test(test_definitive_failures),
        cmocka_unit_test(test_unknown_then_invalid_grant_is_reconnect_required),
        cmocka_unit_test(test_retry_safe_uses_retry_after_and_deadline),
        cmocka_unit_test(test_invalid_client_pauses_and_holds),
        cmocka_unit_test(test_resume_probe_and_adopt),
        cmocka_unit_test(test_takeover_resolves_claims_as_unknown),
        cmocka_unit_test(test_takeover_waits_for_the_lease),
        cmocka_unit_test(test_not_sent_and_defer),
        cmocka_unit_test(test_failed_connection_may_start_a_new_chain),
        cmocka_unit_test(test_answered_codes_are_never_exchanged_again),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_versions_only_move_forward),
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_disconnect),
        cmocka_unit_test(test_codecs),
        cmocka_unit_test(test_codec_member_lookup),
        cmocka_unit_test(test_refresh_request_coalesces),
        cmocka_unit_test(test_refresh_unknown_outcome_rules),
        cmocka_unit_test(test_refresh_definitive_and_takeover),
        cmocka_unit_test(test_background_refresh_schedule),
        cmocka_unit_test(test_conn_decode_optional_and_required_fields),
        cmocka_unit_test(test_session_due_expires),
        cmocka_unit_test(test_session_then_callback),
        cmocka_unit_test(test_session_after_state_changes_nothing),
        cmocka_unit_test(test_session_state_round_trips),
    };
    return cmocka_run_group_tests_name("unit_machine", tests, NULL, NULL);
}
