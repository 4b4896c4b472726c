/* Unit tests of the platform's connection metadata (common/connmeta), the
 * connect session token (common/ident: round trip, every-byte tamper,
 * expiry, no confusion with a state) and the metadata in the callback and
 * connection records (round trip; older records without it still decode). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/connmeta.h"
#include "common/ident.h"
#include "common/keyring.h"
#include "common/records.h"
#include "common/conn.h"

#define K1 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"

static const char META[] = "{\"end_user\":{\"id\":\"u_1\",\"email\":\"a@example.com\"},"
                           "\"organization\":{\"id\":\"org_1\"},\"tags\":{\"plan\":\"pro\"}}";

static int from_text(const char *json, connmeta *m, err_t *e)
{
    cJSON *o = cJSON_Parse(json);
    assert_non_null(o);
    int rc = connmeta_from(o, 1, m, e);
    cJSON_Delete(o);
    return rc;
}

static void test_validation(void **state)
{
    (void)state;
    connmeta m;
    err_t e = {0};
    assert_int_equal(from_text(META, &m, &e), 0);
    /* Canonical: every member present, absent ones null. */
    assert_non_null(strstr(m.json, "\"display_name\":null"));
    char eu[CONNMETA_ID_MAX + 1], org[CONNMETA_ID_MAX + 1];
    connmeta_ids(&m, eu, org);
    assert_string_equal(eu, "u_1");
    assert_string_equal(org, "org_1");
    connmeta back;
    assert_int_equal(connmeta_parse(m.json, strlen(m.json), &back, &e), 0);
    assert_string_equal(back.json, m.json);
    static const char *bad[] = {
        "{}",
        "{\"end_user\":{}}",
        "{\"end_user\":{\"id\":\"\"}}",
        "{\"end_user\":{\"id\":1}}",
        "{\"end_user\":{\"id\":\"u\",\"email\":\"x\"}}",
        "{\"end_user\":{\"id\":\"u\",\"x\":\"y\"}}",
        "{\"end_user\":{\"id\":\"a\\u0001b\"}}",
        "{\"organization\":{\"id\":\"o\"}}",
        "{\"end_user\":{\"id\":\"u\"},\"organization\":{\"display_name\":\"n\"}}",
        "{\"end_user\":{\"id\":\"u\"},\"tags\":[]}",
        "{\"end_user\":{\"id\":\"u\"},\"tags\":{\"k\":true}}",
        "{\"end_user\":{\"id\":\"u\"},\"tags\":{\"a b\":\"v\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e = (err_t){0};
        if (from_text(bad[i], &m, &e) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_int_equal(e.cls, ERRC_PERMANENT);
    }
    /* Bounds: 16 tags fine, 17 not; an id of 128 fine, 129 not; the total. */
    char big[8192];
    int n = snprintf(big, sizeof big, "{\"end_user\":{\"id\":\"u\"},\"tags\":{");
    for (int i = 0; i < 17; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "%s\"k%d\":\"v\"", i ? "," : "", i);
    snprintf(big + n, sizeof big - (size_t)n, "}}");
    assert_int_equal(from_text(big, &m, &e), -1);
    snprintf(big, sizeof big, "{\"end_user\":{\"id\":\"%0128d\"}}", 0);
    assert_int_equal(from_text(big, &m, &e), 0);
    snprintf(big, sizeof big, "{\"end_user\":{\"id\":\"%0129d\"}}", 0);
    assert_int_equal(from_text(big, &m, &e), -1);
    n = snprintf(big, sizeof big, "{\"end_user\":{\"id\":\"u\"},\"tags\":{");
    for (int i = 0; i < 16; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "%s\"k%d\":\"%0200d\"", i ? "," : "", i, 0);
    snprintf(big + n, sizeof big - (size_t)n, "}}");
    assert_int_equal(from_text(big, &m, &e), -1); /* > CONNMETA_JSON_MAX in total */
    assert_non_null(strstr(e.msg, "too large"));
    /* Not required and absent: no metadata. */
    cJSON *o = cJSON_Parse("{\"x\":1}");
    assert_int_equal(connmeta_from(o, 0, &m, &e), 0);
    assert_string_equal(m.json, "");
    cJSON_Delete(o);
}

static void test_session_token(void **state)
{
    (void)state;
    err_t e = {0};
    const char *kj = "{\"active\":\"k1\",\"keys\":{\"k1\":\"" K1 "\"}}";
    keyring_t *k = keyring_parse(kj, strlen(kj), "t", &e);
    assert_non_null(k);
    ident_session s, out;
    memset(&s, 0, sizeof s);
    assert_int_equal(ident_conn_new(k, 1700000000, s.conn_id, &e), 0);
    snprintf(s.provider, sizeof s.provider, "sim");
    snprintf(s.return_to, sizeof s.return_to, "https://app.example/done");
    s.expires_at = 1700000600;
    assert_int_equal(from_text(META, &s.meta, &e), 0);
    char tok[IDENT_SESSION_MAX];
    assert_int_equal(ident_session_issue(k, &s, tok, sizeof tok, &e), 0);
    assert_int_equal(strncmp(tok, "s1.k1.", 6), 0);
    assert_int_equal(ident_session_verify(k, tok, strlen(tok), 1700000000, &out), IDENT_OK);
    assert_string_equal(out.conn_id, s.conn_id);
    assert_string_equal(out.provider, "sim");
    assert_string_equal(out.return_to, s.return_to);
    assert_string_equal(out.meta.json, s.meta.json);
    assert_int_equal(ident_session_verify(k, tok, strlen(tok), 1700000601, &out), IDENT_EXPIRED);
    /* Every byte matters. */
    size_t n = strlen(tok);
    for (size_t i = 0; i < n; i++) {
        char t[IDENT_SESSION_MAX];
        memcpy(t, tok, n + 1);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        assert_int_not_equal(ident_session_verify(k, t, n, 1700000000, &out), IDENT_OK);
    }
    /* A state is not a session and a session is not a state. */
    ident_state st, sto;
    memset(&st, 0, sizeof st);
    memcpy(st.conn_id, s.conn_id, sizeof st.conn_id);
    snprintf(st.provider, sizeof st.provider, "sim");
    st.expires_at = 1700000600;
    char stok[IDENT_STATE_MAX];
    assert_int_equal(ident_state_issue(k, &st, stok, sizeof stok, &e), 0);
    assert_int_not_equal(ident_session_verify(k, stok, strlen(stok), 1700000000, &out), IDENT_OK);
    assert_int_not_equal(ident_state_verify(k, tok, strlen(tok), 1700000000, &sto), IDENT_OK);
    char forged[IDENT_SESSION_MAX];
    snprintf(forged, sizeof forged, "1%s", tok + 2); /* "1.k1...": session MAC as a state */
    assert_int_not_equal(ident_state_verify(k, forged, strlen(forged), 1700000000, &sto), IDENT_OK);
    /* The state carries the metadata hash through. */
    st.has_meta = 1;
    memset(st.meta_hash, 7, sizeof st.meta_hash);
    assert_int_equal(ident_state_issue(k, &st, stok, sizeof stok, &e), 0);
    assert_int_equal(ident_state_verify(k, stok, strlen(stok), 1700000000, &sto), IDENT_OK);
    assert_int_equal(sto.has_meta, 1);
    assert_memory_equal(sto.meta_hash, st.meta_hash, 32);
    keyring_free(k);
}

static void test_records_carry_metadata(void **state)
{
    (void)state;
    err_t e = {0};
    static records_callback cb, back;
    memset(&cb, 0, sizeof cb);
    snprintf(cb.connection_id, sizeof cb.connection_id, "c1");
    snprintf(cb.provider, sizeof cb.provider, "sim");
    cb.kind = RECORDS_CB_CODE;
    snprintf(cb.code, sizeof cb.code, "ac_1");
    cb.received_at_ms = 1700000000000;
    snprintf(cb.intake_id, sizeof cb.intake_id, "i");
    snprintf(cb.request_id, sizeof cb.request_id, "r");
    assert_int_equal(from_text(META, &cb.meta, &e), 0);
    char *json = records_callback_encode(&cb, &e);
    assert_non_null(strstr(json, "\"end_user\":{\"id\":\"u_1\""));
    assert_int_equal(records_callback_decode(json, strlen(json), &back, &e), 0);
    assert_string_equal(back.meta.json, cb.meta.json);
    free(json);
    /* An older record (no metadata) decodes with none. */
    cb.meta.json[0] = '\0';
    json = records_callback_encode(&cb, &e);
    assert_null(strstr(json, "end_user"));
    assert_int_equal(records_callback_decode(json, strlen(json), &back, &e), 0);
    assert_string_equal(back.meta.json, "");
    free(json);

    /* The connection record and the status record. */
    static conn_t c, c2;
    conn_init(&c, "c1", "sim", 1700000000000);
    assert_int_equal(from_text(META, &c.meta, &e), 0);
    json = conn_encode(&c, &e);
    assert_int_equal(conn_decode(json, strlen(json), &c2, &e), 0);
    assert_string_equal(c2.meta.json, c.meta.json);
    free(json);
    json = conn_status_json(&c, &e);
    assert_non_null(strstr(json, "\"organization\":{\"id\":\"org_1\""));
    free(json);
    c.meta.json[0] = '\0';
    json = conn_encode(&c, &e);
    assert_null(strstr(json, "end_user"));
    assert_int_equal(conn_decode(json, strlen(json), &c2, &e), 0);
    assert_string_equal(c2.meta.json, "");
    free(json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_session_token),
        cmocka_unit_test(test_records_carry_metadata),
    };
    return cmocka_run_group_tests_name("unit_connmeta", tests, NULL, NULL);
}
