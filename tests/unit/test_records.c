/* Unit tests of common/records: callback.v1 round trip, strict decoding
 * (unknown fields, types, kinds, lengths) and the time format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/records.h"

static records_callback sample(void)
{
    records_callback r;
    memset(&r, 0, sizeof r);
    snprintf(r.connection_id, sizeof r.connection_id,
             "AQAAAABrCaZuOgz4zZkTnhZw8fhEH6HftfPb9UrXkJiSZJHEaDQn6wk");
    snprintf(r.provider, sizeof r.provider, "stripe");
    r.kind = RECORDS_CB_CODE;
    snprintf(r.code, sizeof r.code, "ac_123");
    snprintf(r.code_verifier, sizeof r.code_verifier,
             "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
    snprintf(r.scope, sizeof r.scope, "read_write");
    r.received_at_ms = 1795794541123;
    snprintf(r.intake_id, sizeof r.intake_id, "intake-a");
    snprintf(r.request_id, sizeof r.request_id, "r1");
    return r;
}

static void test_round_trip(void **state)
{
    (void)state;
    records_callback a = sample(), b;
    err_t e = {0};
    char *json = records_callback_encode(&a, &e);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"schema\":\"oauthq.callback.v1\""));
    assert_non_null(strstr(json, "\"received_at\":\"2026-11-27T"));
    assert_int_equal(records_callback_decode(json, strlen(json), &b, &e), 0);
    assert_string_equal(b.connection_id, a.connection_id);
    assert_string_equal(b.code, "ac_123");
    assert_string_equal(b.code_verifier, a.code_verifier);
    assert_int_equal(b.received_at_ms, a.received_at_ms);
    assert_int_equal(b.kind, RECORDS_CB_CODE);
    free(json);

    a.kind = RECORDS_CB_ERROR;
    snprintf(a.error, sizeof a.error, "access_denied");
    snprintf(a.error_description, sizeof a.error_description, "The user denied");
    json = records_callback_encode(&a, &e);
    assert_null(strstr(json, "ac_123")); /* error records carry no code */
    assert_int_equal(records_callback_decode(json, strlen(json), &b, &e), 0);
    assert_int_equal(b.kind, RECORDS_CB_ERROR);
    assert_string_equal(b.error_description, "The user denied");
    free(json);
}

static void test_decode_rejections(void **state)
{
    (void)state;
    const char *base = "\"connection_id\":\"c1\",\"provider\":\"p\",\"received_at\":"
                       "\"2026-11-27T15:49:02.096Z\",\"intake_id\":\"i\",\"request_id\":\"r\"";
    char buf[1024];
    const char *bad[] = {
        "{\"schema\":\"oauthq.callback.v2\",\"kind\":\"code\",\"code\":\"x\",%s}",
        "{\"schema\":\"oauthq.callback.v1\",\"kind\":\"code\",%s}",
        "{\"schema\":\"oauthq.callback.v1\",\"kind\":\"maybe\",\"code\":\"x\",%s}",
        "{\"schema\":\"oauthq.callback.v1\",\"kind\":\"code\",\"code\":1,%s}",
        "{\"schema\":\"oauthq.callback.v1\",\"kind\":\"code\",\"code\":\"x\",\"error\":\"e\",%s}",
        "{\"schema\":\"oauthq.callback.v1\",\"kind\":\"error\",\"code\":\"x\",\"error\":\"e\",%s}",
        "{\"schema\":\"oauthq.callback.v1\",\"kind\":\"code\",\"code\":\"x\",\"extra\":1,%s}",
        "{\"schema\":\"oauthq.callback.v1\",\"kind\":\"code\",\"code\":\"x\\n\",%s}",
        "[%s]",
    };
    err_t e = {0};
    records_callback r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, bad[i], base);
        err_clear(&e);
        assert_int_equal(records_callback_decode(buf, strlen(buf), &r, &e), -1);
        assert_int_equal(e.cls, ERRC_PERMANENT);
    }
    assert_int_equal(records_callback_decode("not json", 8, &r, &e), -1);
    snprintf(buf, sizeof buf,
             "{\"schema\":\"oauthq.callback.v1\",\"kind\":\"code\",\"code\":\"x\",%s}", base);
    assert_int_equal(records_callback_decode(buf, strlen(buf), &r, &e), 0);
}

static void test_time_format(void **state)
{
    (void)state;
    char s[RECORDS_TIME_MAX];
    records_time_format(0, s);
    assert_string_equal(s, "1970-01-01T00:00:00.000Z");
    records_time_format(1795794541123, s);
    int64_t ms = 0;
    assert_int_equal(records_time_parse(s, &ms), 0);
    assert_int_equal(ms, 1795794541123);
    assert_int_equal(records_time_parse("2026-11-27T15:49:02Z", &ms), -1);
    assert_int_equal(records_time_parse("2026-13-27T15:49:02.000Z", &ms), -1);
    assert_int_equal(records_time_parse("2026-11-27T15:49:02.000Zx", &ms), -1);
}

static void test_command_records(void **state)
{
    (void)state;
    err_t e = {0};
    records_replay r = {0}, back;
    snprintf(r.connection_id, sizeof r.connection_id, "conn1");
    r.requested_at_ms = 1795794541123;
    snprintf(r.requested_by, sizeof r.requested_by, "ops");
    char *j = records_replay_encode(&r, &e);
    assert_int_equal(records_replay_decode(j, strlen(j), &back, &e), 0);
    assert_string_equal(back.connection_id, "conn1");
    /* A replay is not a disconnect (schemas are checked). */
    assert_int_equal(records_disconnect_decode(j, strlen(j), &back, &e), -1);
    char schema[40];
    assert_int_equal(records_schema_of(j, strlen(j), schema, sizeof schema), 0);
    assert_string_equal(schema, "oauthq.replay.v1");
    free(j);
    j = records_disconnect_encode(&r, &e);
    assert_int_equal(records_disconnect_decode(j, strlen(j), &back, &e), 0);
    free(j);
    records_provider p = {0}, pb;
    snprintf(p.provider, sizeof p.provider, "stripe");
    p.pause = 1;
    p.requested_at_ms = 1795794541123;
    snprintf(p.requested_by, sizeof p.requested_by, "ops");
    j = records_provider_encode(&p, &e);
    assert_int_equal(records_provider_decode(j, strlen(j), &pb, &e), 0);
    assert_true(pb.pause);
    assert_string_equal(pb.provider, "stripe");
    free(j);
    const char *bad = "{\"schema\":\"oauthq.provider.v1\",\"provider\":\"s\",\"action\":"
                      "\"explode\",\"requested_at\":\"2026-11-27T15:49:02.096Z\","
                      "\"requested_by\":\"x\"}";
    assert_int_equal(records_provider_decode(bad, strlen(bad), &pb, &e), -1);
}

/* provider_state.v1: the worker's persisted pause (issue 14, defect 2). */
static void test_provider_state(void **state)
{
    (void)state;
    err_t e = {0};
    records_provider_state r = {0}, b;
    snprintf(r.provider, sizeof r.provider, "stripe");
    snprintf(r.state, sizeof r.state, "invalid_client");
    r.until_ms = 1795794571123;
    r.as_of_ms = 1795794541123;
    snprintf(r.by, sizeof r.by, "w1");
    char *j = records_provider_state_encode(&r, &e);
    assert_non_null(j);
    assert_int_equal(records_provider_state_decode(j, strlen(j), &b, &e), 0);
    assert_string_equal(b.provider, "stripe");
    assert_string_equal(b.state, "invalid_client");
    assert_true(b.until_ms == r.until_ms && b.as_of_ms == r.as_of_ms);
    free(j);
    /* Unknown fields are tolerated (a changelog record); bad states are not. */
    const char *extra = "{\"schema\":\"oauthq.provider_state.v1\",\"provider\":\"s\","
                        "\"state\":\"paused\",\"as_of\":\"2026-11-27T15:49:02.096Z\","
                        "\"by\":\"w\",\"later\":1}";
    assert_int_equal(records_provider_state_decode(extra, strlen(extra), &b, &e), 0);
    assert_int_equal(b.until_ms, 0);
    const char *bad = "{\"schema\":\"oauthq.provider_state.v1\",\"provider\":\"s\","
                      "\"state\":\"sleepy\",\"as_of\":\"2026-11-27T15:49:02.096Z\","
                      "\"by\":\"w\"}";
    assert_int_equal(records_provider_state_decode(bad, strlen(bad), &b, &e), -1);
    assert_int_equal(records_provider_state_decode("[]", 2, &b, &e), -1);
}

static void test_refresh_record(void **state)
{
    (void)state;
    err_t e = {0};
    records_refresh r = {0}, back;
    snprintf(r.connection_id, sizeof r.connection_id, "conn1");
    snprintf(r.provider, sizeof r.provider, "sim");
    r.seen_version = 7;
    r.requested_at_ms = 1795794541123;
    snprintf(r.intake_id, sizeof r.intake_id, "intake-1");
    snprintf(r.request_id, sizeof r.request_id, "req-9");
    char *j = records_refresh_encode(&r, &e);
    assert_non_null(j);
    assert_int_equal(records_refresh_decode(j, strlen(j), &back, &e), 0);
    assert_string_equal(back.connection_id, "conn1");
    assert_string_equal(back.provider, "sim");
    assert_int_equal(back.seen_version, 7);
    assert_int_equal(back.requested_at_ms, 1795794541123);
    assert_string_equal(back.request_id, "req-9");
    /* A refresh is not a replay (schemas are checked). */
    records_replay rp;
    assert_int_equal(records_replay_decode(j, strlen(j), &rp, &e), -1);
    free(j);
    static const char *const bad[] = {
        "{\"schema\":\"oauthq.refresh.v1\",\"connection_id\":\"c\",\"provider\":\"s\","
        "\"seen_version\":0,\"requested_at\":\"2026-11-27T15:49:02.096Z\",\"intake_id\":\"i\","
        "\"request_id\":\"r\"}",
        "{\"schema\":\"oauthq.refresh.v1\",\"connection_id\":\"c\",\"provider\":\"s\","
        "\"seen_version\":1.5,\"requested_at\":\"2026-11-27T15:49:02.096Z\",\"intake_id\":\"i\","
        "\"request_id\":\"r\"}",
        "{\"schema\":\"oauthq.refresh.v1\",\"connection_id\":\"c\",\"provider\":\"s\","
        "\"seen_version\":\"1\",\"requested_at\":\"2026-11-27T15:49:02.096Z\",\"intake_id\":\"i\","
        "\"request_id\":\"r\"}",
        "{\"schema\":\"oauthq.refresh.v1\",\"connection_id\":\"c\",\"provider\":\"s\","
        "\"seen_version\":1,\"requested_at\":\"2026-11-27T15:49:02.096Z\",\"intake_id\":\"i\","
        "\"request_id\":\"r\",\"refresh_token\":\"x\"}",
        "{\"schema\":\"oauthq.refresh.v1\",\"provider\":\"s\",\"seen_version\":1,"
        "\"requested_at\":\"2026-11-27T15:49:02.096Z\",\"intake_id\":\"i\",\"request_id\":\"r\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(records_refresh_decode(bad[i], strlen(bad[i]), &back, &e), -1);
}

/* ---- the opening every decoder shares (size, object, members, schema, timestamps) ---- */

typedef union {
    records_callback cb;
    records_replay rp;
    records_provider pv;
    records_provider_state ps;
    records_refresh rf;
} any_record;

typedef int (*decode_fn)(const char *json, size_t len, any_record *out, err_t *e);
static int dec_callback(const char *j, size_t n, any_record *o, err_t *e)
{
    return records_callback_decode(j, n, &o->cb, e);
}
static int dec_replay(const char *j, size_t n, any_record *o, err_t *e)
{
    return records_replay_decode(j, n, &o->rp, e);
}
static int dec_disconnect(const char *j, size_t n, any_record *o, err_t *e)
{
    return records_disconnect_decode(j, n, &o->rp, e);
}
static int dec_provider(const char *j, size_t n, any_record *o, err_t *e)
{
    return records_provider_decode(j, n, &o->pv, e);
}
static int dec_provider_state(const char *j, size_t n, any_record *o, err_t *e)
{
    return records_provider_state_decode(j, n, &o->ps, e);
}
static int dec_refresh(const char *j, size_t n, any_record *o, err_t *e)
{
    return records_refresh_decode(j, n, &o->rf, e);
}

/* s with the first `from` replaced by `to` (static buffer, one at a time). */
static const char *swap(const char *s, const char *from, const char *to)
{
    static char out[20000];
    const char *at = strstr(s, from);
    assert_non_null(at);
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    return out;
}

static void expect_reject(decode_fn dec, const char *json, size_t len, const char *why)
{
    any_record r;
    err_t e = {0};
    assert_int_equal(dec(json, len, &r, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    if (!strstr(e.msg, why))
        fail_msg("error \"%s\" does not say \"%s\"", e.msg, why);
}

static void test_decoders_share_one_opening(void **state)
{
    (void)state;
    err_t e = {0};
    records_callback cb = sample();
    records_replay rp = {0};
    snprintf(rp.connection_id, sizeof rp.connection_id, "c1");
    rp.requested_at_ms = 1795794541123;
    snprintf(rp.requested_by, sizeof rp.requested_by, "ops");
    records_provider pv = {0};
    snprintf(pv.provider, sizeof pv.provider, "stripe");
    pv.pause = 1;
    pv.requested_at_ms = 1795794541123;
    snprintf(pv.requested_by, sizeof pv.requested_by, "ops");
    records_provider_state ps = {0};
    snprintf(ps.provider, sizeof ps.provider, "stripe");
    snprintf(ps.state, sizeof ps.state, "paused");
    ps.as_of_ms = 1795794541123;
    snprintf(ps.by, sizeof ps.by, "w1");
    records_refresh rf = {0};
    snprintf(rf.connection_id, sizeof rf.connection_id, "c1");
    snprintf(rf.provider, sizeof rf.provider, "sim");
    rf.seen_version = 3;
    rf.requested_at_ms = 1795794541123;
    snprintf(rf.intake_id, sizeof rf.intake_id, "i1");
    snprintf(rf.request_id, sizeof rf.request_id, "r1");
    struct {
        decode_fn dec;
        char *json;
        const char *schema, *time_field;
        int strict; /* unknown members rejected */
    } t[] = {
        {dec_callback, records_callback_encode(&cb, &e), RECORDS_CALLBACK_SCHEMA, "received_at", 1},
        {dec_replay, records_replay_encode(&rp, &e), RECORDS_REPLAY_SCHEMA, "requested_at", 1},
        {dec_disconnect, records_disconnect_encode(&rp, &e), RECORDS_DISCONNECT_SCHEMA,
         "requested_at", 1},
        {dec_provider, records_provider_encode(&pv, &e), RECORDS_PROVIDER_SCHEMA, "requested_at",
         1},
        {dec_provider_state, records_provider_state_encode(&ps, &e), RECORDS_PROVIDER_STATE_SCHEMA,
         "as_of", 0},
        {dec_refresh, records_refresh_encode(&rf, &e), RECORDS_REFRESH_SCHEMA, "requested_at", 1},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        const char *j = t[i].json;
        assert_non_null(j);
        any_record r;
        assert_int_equal(t[i].dec(j, strlen(j), &r, &e), 0);
        /* Larger than 16 KiB (white space after the object): refused before parsing. */
        static char big[16400];
        snprintf(big, sizeof big, "%s%*s", j, (int)(sizeof big - 1 - strlen(j)), " ");
        expect_reject(t[i].dec, big, strlen(big), "larger than 16 KiB");
        expect_reject(t[i].dec, "[1]", 3, "not a JSON object");
        const char *other = swap(j, t[i].schema, "oauthq.other.v1");
        expect_reject(t[i].dec, other, strlen(other), t[i].schema);
        const char *noschema = swap(j, "\"schema\"", "\"schemata\"");
        expect_reject(t[i].dec, noschema, strlen(noschema),
                      t[i].strict ? "unknown field" : "schema");
        char from[80], to[80];
        snprintf(from, sizeof from, "\"%s\":\"2026-", t[i].time_field);
        snprintf(to, sizeof to, "\"%s\":\"1026-", t[i].time_field); /* before 1970 */
        const char *late = swap(j, from, to);
        expect_reject(t[i].dec, late, strlen(late), "not RFC 3339");
        const char *extra = swap(j, "{", "{\"zz_later\":1,");
        if (t[i].strict)
            expect_reject(t[i].dec, extra, strlen(extra), "unknown field zz_later");
        else
            assert_int_equal(t[i].dec(extra, strlen(extra), &r, &e), 0);
        free(t[i].json);
    }
    /* An optional timestamp may be present and empty (provider_state's until). */
    const char *empty_until = "{\"schema\":\"oauthq.provider_state.v1\",\"provider\":\"s\","
                              "\"state\":\"paused\",\"until\":\"\","
                              "\"as_of\":\"2026-11-27T15:49:02.096Z\",\"by\":\"w\"}";
    records_provider_state b;
    assert_int_equal(records_provider_state_decode(empty_until, strlen(empty_until), &b, &e), 0);
    assert_int_equal(b.until_ms, 0);
}

/* The encoders' bytes are fixed: schema first, members in the schema's order, times in
 * records_time_format (what the JSON Schemas and every reader were written against). */
static void test_encoded_bytes(void **state)
{
    (void)state;
    err_t e = {0};
    records_replay rp = {0};
    snprintf(rp.connection_id, sizeof rp.connection_id, "c");
    rp.requested_at_ms = 1;
    snprintf(rp.requested_by, sizeof rp.requested_by, "u");
    snprintf(rp.reason, sizeof rp.reason, "why");
    char *j = records_disconnect_encode(&rp, &e);
    assert_string_equal(j, "{\"schema\":\"oauthq.disconnect.v1\",\"connection_id\":\"c\","
                           "\"requested_at\":\"1970-01-01T00:00:00.001Z\",\"requested_by\":\"u\","
                           "\"reason\":\"why\"}");
    free(j);
    records_provider_state ps = {0};
    snprintf(ps.provider, sizeof ps.provider, "p");
    snprintf(ps.state, sizeof ps.state, "paused");
    ps.until_ms = 5;
    ps.as_of_ms = 3;
    snprintf(ps.by, sizeof ps.by, "w");
    j = records_provider_state_encode(&ps, &e);
    assert_string_equal(j, "{\"schema\":\"oauthq.provider_state.v1\",\"provider\":\"p\","
                           "\"state\":\"paused\",\"until\":\"1970-01-01T00:00:00.005Z\","
                           "\"as_of\":\"1970-01-01T00:00:00.003Z\",\"by\":\"w\"}");
    free(j);
    ps.until_ms = 0;
    j = records_provider_state_encode(&ps, &e);
    assert_null(strstr(j, "until"));
    free(j);
}

/* session.v1: round trip with and without the platform's metadata; strict
 * decoding (unknown fields such as a secret, bad times, expiry before
 * creation, another schema). */
static void test_session_record(void **state)
{
    (void)state;
    err_t e = {0};
    records_session r = {0}, back;
    snprintf(r.connection_id, sizeof r.connection_id, "conn1");
    snprintf(r.provider, sizeof r.provider, "sim");
    snprintf(r.return_to, sizeof r.return_to, "https://app.example/done");
    r.created_at_ms = 1795794541000;
    r.expires_at_ms = 1795795141000;
    snprintf(r.intake_id, sizeof r.intake_id, "intake-1");
    snprintf(r.request_id, sizeof r.request_id, "req-9");
    snprintf(r.meta.json, sizeof r.meta.json, "%s",
             "{\"end_user\":{\"id\":\"u1\",\"email\":null,\"display_name\":null},"
             "\"organization\":null,\"tags\":{\"plan\":\"pro\"}}");
    char *j = records_session_encode(&r, &e);
    assert_non_null(j);
    assert_int_equal(records_session_decode(j, strlen(j), &back, &e), 0);
    assert_string_equal(back.connection_id, "conn1");
    assert_string_equal(back.provider, "sim");
    assert_string_equal(back.return_to, "https://app.example/done");
    assert_int_equal(back.created_at_ms, 1795794541000);
    assert_int_equal(back.expires_at_ms, 1795795141000);
    assert_string_equal(back.intake_id, "intake-1");
    assert_non_null(strstr(back.meta.json, "\"u1\""));
    assert_non_null(strstr(back.meta.json, "\"plan\":\"pro\""));
    /* A session is neither a callback nor a refresh (schemas are checked). */
    records_callback cb;
    records_refresh rr;
    assert_int_equal(records_callback_decode(j, strlen(j), &cb, &e), -1);
    assert_int_equal(records_refresh_decode(j, strlen(j), &rr, &e), -1);
    char schema[40];
    assert_int_equal(records_schema_of(j, strlen(j), schema, sizeof schema), 0);
    assert_string_equal(schema, RECORDS_SESSION_SCHEMA);
    free(j);
    /* An open start: no metadata, no return_to. */
    r.meta.json[0] = '\0';
    r.return_to[0] = '\0';
    j = records_session_encode(&r, &e);
    assert_non_null(j);
    assert_null(strstr(j, "end_user"));
    assert_null(strstr(j, "return_to"));
    assert_int_equal(records_session_decode(j, strlen(j), &back, &e), 0);
    assert_string_equal(back.meta.json, "");
    free(j);
#define SESSION_OK                                                                                 \
    "\"connection_id\":\"c\",\"provider\":\"s\",\"intake_id\":\"i\",\"request_id\":\"r\""
    static const char *const bad[] = {
        "{\"schema\":\"oauthq.session.v1\"," SESSION_OK
        ",\"created_at\":\"2026-11-27T15:49:02.096Z\","
        "\"expires_at\":\"2026-11-27T15:39:02.096Z\"}",
        "{\"schema\":\"oauthq.session.v1\"," SESSION_OK
        ",\"created_at\":\"2026-11-27T15:49:02.096Z\","
        "\"expires_at\":\"tomorrow\"}",
        "{\"schema\":\"oauthq.session.v1\"," SESSION_OK
        ",\"created_at\":\"2026-11-27T15:49:02.096Z\"}",
        "{\"schema\":\"oauthq.session.v1\"," SESSION_OK
        ",\"created_at\":\"2026-11-27T15:49:02.096Z\","
        "\"expires_at\":\"2026-11-27T15:59:02.096Z\",\"code\":\"x\"}",
        "{\"schema\":\"oauthq.session.v1\"," SESSION_OK
        ",\"created_at\":\"2026-11-27T15:49:02.096Z\","
        "\"expires_at\":\"2026-11-27T15:59:02.096Z\",\"end_user\":{}}",
        "{\"schema\":\"oauthq.refresh.v1\"," SESSION_OK
        ",\"created_at\":\"2026-11-27T15:49:02.096Z\","
        "\"expires_at\":\"2026-11-27T15:59:02.096Z\"}",
        "{\"schema\":\"oauthq.session.v1\",\"provider\":\"s\",\"intake_id\":\"i\",\"request_id\":"
        "\"r\",\"created_at\":\"2026-11-27T15:49:02.096Z\",\"expires_at\":\"2026-11-27T15:59:02."
        "096Z\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(records_session_decode(bad[i], strlen(bad[i]), &back, &e), -1);
    const char *good = "{\"schema\":\"oauthq.session.v1\"," SESSION_OK
                       ",\"created_at\":\"2026-11-27T15:49:02.096Z\","
                       "\"expires_at\":\"2026-11-27T15:59:02.096Z\"}";
    assert_int_equal(records_session_decode(good, strlen(good), &back, &e), 0);
#undef SESSION_OK
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_decode_rejections),
        cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_command_records),
        cmocka_unit_test(test_provider_state),
        cmocka_unit_test(test_refresh_record),
        cmocka_unit_test(test_decoders_share_one_opening),
        cmocka_unit_test(test_encoded_bytes),
        cmocka_unit_test(test_session_record),
    };
    return cmocka_run_group_tests_name("unit_records", tests, NULL, NULL);
}
