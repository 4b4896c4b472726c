/* Unit tests of the webhook dispatcher's pure parts: Standard Webhooks
 * signatures (webhooks/sign.h) against the specification's published test
 * vector, the secret file, and the delivery rules and record codec
 * (common/delivery.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/delivery.h"
#include "webhooks/dispatcher.h"
#include "webhooks/sign.h"

/* The Standard Webhooks test vector (reference libraries' tests). */
#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID     "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS     1614265330
#define VEC_BODY   "{\"test\": 2432232314}"
#define VEC_SIG    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static void test_sign_vector(void **state)
{
    (void)state;
    sign_keys_t k;
    err_t e = {0};
    assert_int_equal(sign_keys_parse(VEC_SECRET "\n", strlen(VEC_SECRET) + 1, "t", &k, &e), 0);
    assert_int_equal(k.n, 1);
    char sig[SIGN_ONE_MAX];
    assert_int_equal(sign_one(k.key[0], k.len[0], VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), sig),
                     0);
    assert_string_equal(sig, VEC_SIG);
    /* Any change of id, timestamp or body changes the signature. */
    sign_one(k.key[0], k.len[0], VEC_ID, VEC_TS + 1, VEC_BODY, strlen(VEC_BODY), sig);
    assert_string_not_equal(sig, VEC_SIG);
    sign_one(k.key[0], k.len[0], "msg_other", VEC_TS, VEC_BODY, strlen(VEC_BODY), sig);
    assert_string_not_equal(sig, VEC_SIG);
    sign_one(k.key[0], k.len[0], VEC_ID, VEC_TS, "{\"test\": 2432232315}", strlen(VEC_BODY), sig);
    assert_string_not_equal(sig, VEC_SIG);
    sign_keys_wipe(&k);
}

/* Rotation: every secret signs, the header lists them space-separated. */
static void test_sign_rotation(void **state)
{
    (void)state;
    const char *file = "# rotation: new first\n"
                       "whsec_c2Vjb25kLXNlY3JldC1rZXktMTIzNDU2Nzg=\r\n"
                       "\n  " VEC_SECRET "  \n";
    sign_keys_t k;
    err_t e = {0};
    assert_int_equal(sign_keys_parse(file, strlen(file), "t", &k, &e), 0);
    assert_int_equal(k.n, 2);
    char h[SIGN_HEADER_MAX];
    assert_int_equal(sign_header(&k, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), h), 0);
    const char *sp = strchr(h, ' ');
    assert_non_null(sp);
    assert_string_equal(sp + 1, VEC_SIG);
    assert_int_equal(strncmp(h, "v1,", 3), 0);
    assert_null(strchr(sp + 1, ' '));
    sign_keys_wipe(&k);
}

static void test_sign_bad_files(void **state)
{
    (void)state;
    sign_keys_t k;
    err_t e = {0};
    const char *bad[] = {
        "",                           /* no secret */
        "# only a comment\n",         /* no secret */
        "MfKQ9r8GKYqrTwjUPD8ILPZI\n", /* no prefix */
        "whsec_\n",                   /* empty */
        "whsec_c2hvcnQ=\n",           /* 5 bytes: too short */
        "whsec_!!!notbase64!!!!!!!!!!\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(sign_keys_parse(bad[i], strlen(bad[i]), "secrets", &k, &e), -1);
        assert_int_equal(e.cls, ERRC_FATAL);
        /* The message names the file and line, never the value. */
        assert_null(strstr(e.msg, "c2hvcnQ"));
        assert_null(strstr(e.msg, "MfKQ"));
    }
}

static void test_url_check(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(dispatcher_url_check("https://hooks.example.com/oauthq", &e), 0);
    assert_int_equal(dispatcher_url_check("http://127.0.0.1:9999/hook?x=1", &e), 0);
    const char *bad[] = {"ftp://example.com/",
                         "file:///etc/passwd",
                         "example.com/hook",
                         "https://",
                         "http:///path",
                         "https://user:pw@example.com/",
                         "https://exa mple.com/",
                         "https://example.com/\n",
                         "gopher://x/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(dispatcher_url_check(bad[i], &e), -1);
        assert_int_equal(e.cls, ERRC_FATAL);
    }
}

static const char *status_rec(const char *status, int version, const char *extra)
{
    static char buf[2048];
    snprintf(
        buf, sizeof buf,
        "{\"schema\":\"oauthq.status.v1\",\"id\":\"c1\",\"provider\":\"sim\",\"status\":\"%s\","
        "\"phase\":null,\"reason\":null,\"message\":\"ok\",\"account\":null,\"attempts\":1,"
        "\"created_at\":\"2026-01-01T00:00:00Z\",\"updated_at\":\"2026-01-01T00:00:05Z\","
        "\"version\":%d%s}",
        status, version, extra ? extra : "");
    return buf;
}

static void test_event_from_status(void **state)
{
    (void)state;
    char id[DELIVERY_ID_MAX], type[DELIVERY_TYPE_MAX];
    int64_t v = 0;
    char *body = NULL;
    err_t e = {0};
    const char *r = status_rec("connected", 3,
                               ",\"end_user\":{\"id\":\"u1\",\"email\":\"a@b.c\"},"
                               "\"organization\":{\"id\":\"o1\"},\"tags\":{\"plan\":\"pro\"},"
                               "\"internal\":\"not for webhooks\"");
    assert_int_equal(delivery_event_from_status(r, strlen(r), id, &v, type, &body, &e), 1);
    assert_string_equal(id, "c1");
    assert_int_equal(v, 3);
    assert_string_equal(type, "connection.connected");
    assert_non_null(strstr(body, "{\"type\":\"connection.connected\",\"timestamp\":"
                                 "\"2026-01-01T00:00:05Z\",\"data\":{\"id\":\"c1\""));
    assert_non_null(strstr(body, "\"end_user\":{\"id\":\"u1\",\"email\":\"a@b.c\"}"));
    assert_non_null(strstr(body, "\"organization\":{\"id\":\"o1\"}"));
    assert_non_null(strstr(body, "\"tags\":{\"plan\":\"pro\"}"));
    assert_null(strstr(body, "internal"));
    assert_null(strstr(body, "\"schema\""));
    free(body);
    /* Without the platform metadata: still a webhook, without those keys. */
    r = status_rec("disconnected", 4, NULL);
    assert_int_equal(delivery_event_from_status(r, strlen(r), id, &v, type, &body, &e), 1);
    assert_string_equal(type, "connection.disconnected");
    assert_null(strstr(body, "end_user"));
    free(body);
    r = status_rec("failed", 2, NULL);
    assert_int_equal(delivery_event_from_status(r, strlen(r), id, &v, type, &body, &e), 1);
    assert_string_equal(type, "connection.failed");
    free(body);
    /* A refresh's failure (SPEC §5b): its own type; the marker stays out. */
    r = status_rec("failed", 9, ",\"failed_during\":\"refresh\"");
    assert_int_equal(delivery_event_from_status(r, strlen(r), id, &v, type, &body, &e), 1);
    assert_string_equal(type, "connection.refresh_failed");
    assert_non_null(strstr(body, "{\"type\":\"connection.refresh_failed\""));
    assert_null(strstr(body, "failed_during"));
    free(body);
    r = status_rec("pending", 1, NULL);
    assert_int_equal(delivery_event_from_status(r, strlen(r), id, &v, type, &body, &e), 0);
    assert_null(body);
    const char *bad[] = {
        "not json", "{\"schema\":\"oauthq.connection.v1\"}", "[]",
        "{\"schema\":\"oauthq.status.v1\",\"id\":\"c1\",\"status\":\"connected\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(
            delivery_event_from_status(bad[i], strlen(bad[i]), id, &v, type, &body, &e), -1);
        assert_int_equal(e.cls, ERRC_PERMANENT);
    }
}

static const delivery_policy pol = {1000, 60000, 3600000};

static void test_order_and_dedupe(void **state)
{
    (void)state;
    delivery_conn c;
    delivery_conn_init(&c, "c1");
    assert_int_equal(delivery_enqueue(&c, 3, "connection.connected", strdup("b3"), 100), 1);
    assert_int_equal(delivery_enqueue(&c, 3, "connection.connected", strdup("b3"), 101), 0);
    assert_int_equal(delivery_enqueue(&c, 2, "connection.failed", strdup("b2"), 101), 0);
    assert_int_equal(delivery_enqueue(&c, 5, "connection.disconnected", strdup("b5"), 102), 1);
    /* Only the head is due; the next waits for it. */
    delivery_event *h = delivery_due(&c, 100);
    assert_non_null(h);
    assert_int_equal(h->version, 3);
    assert_int_equal(delivery_result(&c, 503, "http 503", 200, &pol, 0), DELIVERY_RETRY);
    assert_null(delivery_due(&c, 200)); /* head waits for its retry; v5 waits for the head */
    assert_int_equal(c.ev[0].next_attempt_ms, 200 + 500); /* rnd 0: half of the 1 s base */
    h = delivery_due(&c, 700);
    assert_non_null(h);
    assert_int_equal(h->version, 3);
    assert_int_equal(delivery_result(&c, 204, NULL, 800, &pol, 0), DELIVERY_DELIVERED);
    h = delivery_due(&c, 800);
    assert_non_null(h);
    assert_int_equal(h->version, 5);
    assert_int_equal(c.ndone, 1);
    assert_int_equal(c.done[0].version, 3);
    assert_int_equal(c.done[0].attempts, 2);
    assert_null(c.done[0].body); /* delivered: the body is not kept */
    char wid[DELIVERY_WID_MAX];
    delivery_webhook_id(c.id, 5, wid);
    assert_string_equal(wid, "c1_v5");
    delivery_conn_clear(&c);
}

static void test_backoff(void **state)
{
    (void)state;
    for (int a = 1; a < 40; a++) {
        int64_t full = 1000;
        for (int i = 1; i < a && full < 60000; i++)
            full *= 2;
        if (full > 60000)
            full = 60000;
        assert_int_equal(delivery_backoff_ms(&pol, a, 0), full - full / 2);
        assert_int_equal(
            delivery_backoff_ms(&pol, a, UINT32_MAX - (UINT32_MAX % (uint32_t)(full / 2 + 1))),
            full - full / 2);
        int64_t hi = delivery_backoff_ms(&pol, a, (uint32_t)(full / 2));
        assert_int_equal(hi, full);
    }
}

/* Retries go on until retry_max after the first attempt, then the event
 * fails, keeps its body and the next event moves up. */
static void test_retry_window_and_replay(void **state)
{
    (void)state;
    delivery_conn c;
    delivery_conn_init(&c, "c1");
    delivery_enqueue(&c, 2, "connection.connected", strdup("B2"), 0);
    delivery_enqueue(&c, 3, "connection.disconnected", strdup("B3"), 0);
    int64_t t = 0;
    int attempts = 0;
    delivery_outcome o;
    do {
        delivery_event *h = delivery_due(&c, t);
        assert_non_null(h);
        assert_int_equal(h->version, 2);
        o = delivery_result(&c, 0, "timeout", t, &pol, 12345);
        attempts++;
        if (o == DELIVERY_RETRY)
            t = c.ev[0].next_attempt_ms;
    } while (o == DELIVERY_RETRY && attempts < 1000);
    assert_int_equal(o, DELIVERY_FAILED);
    assert_true(t >= pol.retry_max_ms);
    assert_int_equal(c.ndone, 1);
    assert_int_equal(c.done[0].failed, 1);
    assert_string_equal(c.done[0].body, "B2");
    assert_int_equal(delivery_due(&c, t)->version, 3);
    /* Replay brings the failed event back ahead of v3 (version order). */
    assert_int_equal(delivery_replay(&c, t + 1), 2);
    assert_int_equal(c.nev, 2);
    assert_int_equal(c.ev[0].version, 2);
    assert_string_equal(c.ev[0].body, "B2");
    assert_int_equal(c.ndone, 0);
    assert_int_equal(delivery_result(&c, 200, NULL, t + 2, &pol, 0), DELIVERY_DELIVERED);
    delivery_conn_clear(&c);
}

static void test_gone_holds_until_replay(void **state)
{
    (void)state;
    delivery_conn c;
    delivery_conn_init(&c, "c1");
    delivery_enqueue(&c, 2, "connection.connected", strdup("B2"), 0);
    assert_int_equal(delivery_result(&c, 410, NULL, 10, &pol, 0), DELIVERY_GONE);
    assert_true(delivery_gone(&c));
    assert_null(delivery_due(&c, 1000000000));
    assert_int_equal(delivery_replay(&c, 20), 1);
    assert_false(delivery_gone(&c));
    assert_non_null(delivery_due(&c, 20));
    delivery_conn_clear(&c);
}

static void test_queue_full(void **state)
{
    (void)state;
    delivery_conn c;
    delivery_conn_init(&c, "c1");
    for (int v = 1; v <= DELIVERY_EVENTS_MAX + 2; v++)
        assert_int_equal(delivery_enqueue(&c, v, "connection.failed", strdup("B"), v), 1);
    assert_int_equal(c.nev, DELIVERY_EVENTS_MAX);
    assert_int_equal(c.ev[0].version, 3);
    assert_int_equal(c.ndone, 2);
    assert_string_equal(c.done[0].last_error, "queue_full");
    assert_int_equal(c.done[0].failed, 1);
    delivery_conn_clear(&c);
}

static void test_codec_roundtrip(void **state)
{
    (void)state;
    delivery_conn c, d;
    delivery_conn_init(&c, "conn-1");
    delivery_enqueue(&c, 2, "connection.connected", strdup("{\"a\":\"\\\"q\\\"\"}"), 1000);
    delivery_result(&c, 200, NULL, 1500, &pol, 0);
    delivery_enqueue(&c, 4, "connection.disconnected", strdup("{\"b\":1}"), 2000);
    delivery_result(&c, 500, "http 500", 2500, &pol, 7);
    delivery_enqueue(&c, 6, "connection.failed", strdup("{\"c\":2}"), 3000);
    err_t e = {0};
    char *s = delivery_encode(&c, &e);
    assert_non_null(s);
    assert_int_equal(delivery_decode(s, strlen(s), &d, &e), 0);
    assert_string_equal(d.id, "conn-1");
    assert_int_equal(d.last_version, 6);
    assert_int_equal(d.nev, 2);
    assert_int_equal(d.ev[0].version, 4);
    assert_int_equal(d.ev[0].attempts, 1);
    assert_int_equal(d.ev[0].last_http, 500);
    assert_string_equal(d.ev[0].last_error, "http 500");
    assert_int_equal(d.ev[0].first_attempt_ms, 2500);
    assert_int_equal(d.ev[0].next_attempt_ms, c.ev[0].next_attempt_ms);
    assert_string_equal(d.ev[0].body, "{\"b\":1}");
    assert_int_equal(d.ndone, 1);
    assert_int_equal(d.done[0].failed, 0);
    assert_int_equal(d.done[0].last_http, 200);
    char *s2 = delivery_encode(&d, &e);
    assert_string_equal(s, s2);
    free(s2);
    delivery_conn_clear(&d); /* decode initialises: free what d owns first */
    /* Defects are refused, nothing half-loaded. */
    char *broken = strdup(s);
    char *p = strstr(broken, "\"pending\"");
    memcpy(p, "\"pendinx\"", 9);
    assert_int_equal(delivery_decode(broken, strlen(broken), &d, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_int_equal(d.nev, 0);
    free(broken);
    free(s);
    const char *bad =
        "{\"schema\":\"oauthq.webhook.v1\",\"connection_id\":\"x\",\"last_version\":1,"
        "\"updated_at_ms\":1,\"pending\":[{\"version\":2,\"type\":\"t\",\"state\":"
        "\"weird\",\"attempts\":0,\"created_at_ms\":0,\"first_attempt_at_ms\":0,"
        "\"next_attempt_at_ms\":0,\"last_http_status\":null,\"last_error\":null,"
        "\"body\":\"{}\"}],\"done\":[]}";
    assert_int_equal(delivery_decode(bad, strlen(bad), &d, &e), -1);
    delivery_conn_clear(&c);
    delivery_conn_clear(&d);
    char id[DELIVERY_ID_MAX];
    s = delivery_replay_encode("*", 5, &e);
    assert_int_equal(delivery_replay_decode(s, strlen(s), id, &e), 0);
    assert_string_equal(id, "*");
    free(s);
    assert_int_equal(delivery_replay_decode("{}", 2, id, &e), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_vector),
        cmocka_unit_test(test_sign_rotation),
        cmocka_unit_test(test_sign_bad_files),
        cmocka_unit_test(test_url_check),
        cmocka_unit_test(test_event_from_status),
        cmocka_unit_test(test_order_and_dedupe),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_retry_window_and_replay),
        cmocka_unit_test(test_gone_holds_until_replay),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_codec_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
