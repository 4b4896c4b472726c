/* Unit tests of common/connrec: status.v1 and dlq.v1 decode what
 * common/conn encodes (round trip) and reject what readers cannot use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/connrec.h"

static void test_status_round_trip(void **state)
{
    (void)state;
    conn_t *c = calloc(1, sizeof *c);
    assert_non_null(c);
    conn_init(c, "c1", "sim", 1795794541123);
    c->status = CONN_FAILED;
    c->reason = REASON_CODE_REJECTED;
    c->version = 7;
    c->updated_at_ms = 1795794542456;
    err_t e = {0};
    const char *meta = "{\"end_user\":{\"id\":\"u1\",\"email\":null,\"display_name\":null},"
                       "\"organization\":null,\"tags\":{}}";
    assert_int_equal(connmeta_parse(meta, strlen(meta), &c->meta, &e), 0);
    char *json = conn_status_json(c, &e);
    assert_non_null(json);
    connrec_status r;
    cJSON *doc = NULL;
    assert_int_equal(connrec_status_decode(json, strlen(json), &r, &doc, &e), 0);
    assert_string_equal(r.id, "c1");
    assert_string_equal(r.provider, "sim");
    assert_int_equal(r.status, CONN_FAILED);
    assert_int_equal(r.phase, PHASE_NONE);
    assert_int_equal(r.reason, REASON_CODE_REJECTED);
    assert_int_equal(r.version, 7);
    assert_int_equal(r.updated_at_ms, 1795794542456);
    assert_string_equal(r.meta.json, c->meta.json);
    assert_string_equal(r.meta_error, "");
    assert_non_null(doc);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(doc, "message"));
    cJSON_Delete(doc);
    free(json);
    /* Pending: the phase comes back, no reason. */
    c->status = CONN_PENDING;
    c->phase = PHASE_RETRYING;
    json = conn_status_json(c, &e);
    assert_int_equal(connrec_status_decode(json, strlen(json), &r, NULL, &e), 0);
    assert_int_equal(r.status, CONN_PENDING);
    assert_int_equal(r.phase, PHASE_RETRYING);
    assert_int_equal(r.reason, REASON_NONE);
    free(json);
    free(c);
}

static void test_status_rejects(void **state)
{
    (void)state;
    const char *base = "\"provider\":\"sim\",\"updated_at\":\"2026-01-01T00:00:05.000Z\"";
    const char *bad[] = {
        "not json",
        "[]",
        "{\"schema\":\"oauthq.connection.v1\",\"id\":\"c1\",\"status\":\"connected\","
        "\"version\":1,%s}",
        "{\"schema\":\"oauthq.status.v1\",\"id\":\"\",\"status\":\"connected\",\"version\":1,%s}",
        "{\"schema\":\"oauthq.status.v1\",\"id\":\"c1\",\"status\":\"happy\",\"version\":1,%s}",
        "{\"schema\":\"oauthq.status.v1\",\"id\":\"c1\",\"status\":\"connected\",\"version\":0,%s}",
        "{\"schema\":\"oauthq.status.v1\",\"id\":\"c1\",\"status\":\"connected\",\"version\":1.5,"
        "%s}",
        "{\"schema\":\"oauthq.status.v1\",\"id\":\"c1\",\"status\":\"pending\",\"phase\":\"x\","
        "\"version\":1,%s}",
        "{\"schema\":\"oauthq.status.v1\",\"id\":\"c1\",\"status\":\"failed\",\"reason\":3,"
        "\"version\":1,%s}",
        "{\"schema\":\"oauthq.status.v1\",\"id\":\"c1\",\"status\":\"connected\",\"version\":1,"
        "\"updated_at\":5}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, bad[i], base);
        connrec_status r;
        cJSON *doc = (cJSON *)1;
        err_t e = {0};
        assert_int_equal(connrec_status_decode(buf, strlen(buf), &r, &doc, &e), -1);
        assert_int_equal(e.cls, ERRC_PERMANENT);
        assert_null(doc);
    }
    /* Bad metadata drops the metadata, not the record. */
    char buf[512];
    snprintf(buf, sizeof buf,
             "{\"schema\":\"oauthq.status.v1\",\"id\":\"c1\",\"status\":\"connected\","
             "\"version\":2,%s,\"end_user\":{\"email\":\"x\"}}",
             base);
    connrec_status r;
    err_t e = {0};
    assert_int_equal(connrec_status_decode(buf, strlen(buf), &r, NULL, &e), 0);
    assert_string_equal(r.meta.json, "");
    assert_true(r.meta_error[0] != '\0');
}

static void test_dlq_round_trip_and_rejects(void **state)
{
    (void)state;
    err_t e = {0};
    const char *orig = "{\"schema\":\"oauthq.callback.v1\"}";
    char *json = conn_dlq_json("malformed callback", "oauthq.callbacks", 3, 42, "c1", 2, orig,
                               strlen(orig), 1, NULL, "bad json", 1795794541123, &e);
    assert_non_null(json);
    cJSON *o = cJSON_Parse(json);
    connrec_dlq d;
    assert_int_equal(connrec_dlq_from(o, &d, &e), 0);
    assert_string_equal(d.reason, "malformed callback");
    assert_string_equal(d.source_topic, "oauthq.callbacks");
    assert_int_equal(d.source_partition, 3);
    assert_int_equal(d.source_offset, 42);
    assert_string_equal(d.key, "c1");
    assert_string_equal(d.original, orig);
    assert_string_equal(d.first_error, "malformed callback");
    assert_string_equal(d.last_error, "bad json");
    assert_int_equal(d.attempts, 1);
    assert_int_equal(d.at_ms, 1795794541123);
    /* Each required member, removed or mistyped, fails the record. */
    const char *members[] = {"schema",   "reason", "source_topic", "partition", "offset",
                             "attempts", "at"};
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        cJSON *c = cJSON_Duplicate(o, 1);
        cJSON_ReplaceItemInObjectCaseSensitive(c, members[i], cJSON_CreateNumber(-1));
        assert_int_equal(connrec_dlq_from(c, &d, &e), -1);
        assert_int_equal(e.cls, ERRC_PERMANENT);
        cJSON_DeleteItemFromObjectCaseSensitive(c, members[i]);
        assert_int_equal(connrec_dlq_from(c, &d, &e), -1);
        cJSON_Delete(c);
    }
    cJSON_Delete(o);
    free(json);
    /* Null key and original are kept as NULL. */
    json = conn_dlq_json("r", "t", 0, 0, NULL, 0, NULL, 0, 2, "a", "b", 1000, &e);
    o = cJSON_Parse(json);
    assert_int_equal(connrec_dlq_from(o, &d, &e), 0);
    assert_null(d.key);
    assert_null(d.original);
    cJSON_Delete(o);
    free(json);
    assert_int_equal(connrec_dlq_from(NULL, &d, &e), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_round_trip),
        cmocka_unit_test(test_status_rejects),
        cmocka_unit_test(test_dlq_round_trip_and_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
