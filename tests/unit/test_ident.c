/* Unit tests of common/ident: connection ids and state tokens (round trip,
 * every-byte tamper, expiry, unknown key id, rotation), PKCE derivation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/crypto.h"
#include "common/ident.h"
#include "common/keyring.h"

#define K1 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
#define K2 "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8"

static keyring_t *ring(const char *json)
{
    err_t e = {0};
    keyring_t *k = keyring_parse(json, strlen(json), "test", &e);
    assert_non_null(k);
    return k;
}

static keyring_t *ring_k1(void)
{
    return ring("{\"active\":\"k1\",\"keys\":{\"k1\":\"" K1 "\"}}");
}

static void test_conn_id_round_trip_and_forgery(void **state)
{
    (void)state;
    keyring_t *k = ring_k1();
    err_t e = {0};
    char id[IDENT_CONN_ID_MAX], id2[IDENT_CONN_ID_MAX];
    assert_int_equal(ident_conn_new(k, 1700000000, id, &e), 0);
    assert_int_equal(strlen(id), IDENT_CONN_ID_LEN);
    assert_int_equal(ident_conn_new(k, 1700000000, id2, &e), 0);
    assert_string_not_equal(id, id2); /* 128 random bits each */
    int64_t created = 0;
    assert_int_equal(ident_conn_verify(k, id, &created), IDENT_OK);
    assert_int_equal(created, 1700000000);
    /* Change any character: never verifies. */
    for (size_t i = 0; i < IDENT_CONN_ID_LEN; i++) {
        char t[IDENT_CONN_ID_MAX];
        memcpy(t, id, sizeof t);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        assert_int_not_equal(ident_conn_verify(k, t, &created), IDENT_OK);
    }
    assert_int_equal(ident_conn_verify(k, "short", &created), IDENT_MALFORMED);
    assert_int_equal(ident_conn_verify(k, "", &created), IDENT_MALFORMED);
    /* Another keyring did not mint it. */
    keyring_t *other = ring("{\"active\":\"k2\",\"keys\":{\"k2\":\"" K2 "\"}}");
    assert_int_equal(ident_conn_verify(other, id, &created), IDENT_BAD_MAC);
    /* After rotation (k2 active, k1 still listed) old ids still verify. */
    keyring_t *rot = ring("{\"active\":\"k2\",\"keys\":{\"k1\":\"" K1 "\",\"k2\":\"" K2 "\"}}");
    assert_int_equal(ident_conn_verify(rot, id, &created), IDENT_OK);
    keyring_free(k);
    keyring_free(other);
    keyring_free(rot);
}

static ident_state sample(const keyring_t *k)
{
    ident_state st;
    memset(&st, 0, sizeof st);
    err_t e = {0};
    assert_int_equal(ident_conn_new(k, 1000, st.conn_id, &e), 0);
    snprintf(st.provider, sizeof st.provider, "stripe");
    st.expires_at = 1600;
    st.has_binding = 1;
    ident_binding_hash("cookie-value-123", 16, st.binding);
    snprintf(st.return_to, sizeof st.return_to, "https://app.example/settings");
    return st;
}

static void test_state_round_trip(void **state)
{
    (void)state;
    keyring_t *k = ring_k1();
    ident_state st = sample(k), got;
    char tok[IDENT_STATE_MAX];
    err_t e = {0};
    assert_int_equal(ident_state_issue(k, &st, tok, sizeof tok, &e), 0);
    assert_int_equal(strncmp(tok, "1.k1.", 5), 0);
    assert_int_equal(ident_state_verify(k, tok, strlen(tok), 1599, &got), IDENT_OK);
    assert_string_equal(got.conn_id, st.conn_id);
    assert_string_equal(got.provider, "stripe");
    assert_int_equal(got.expires_at, 1600);
    assert_true(got.has_binding);
    assert_memory_equal(got.binding, st.binding, 32);
    assert_string_equal(got.return_to, st.return_to);
    assert_string_equal(got.kid, "k1");
    /* Characters that are URL-safe only: usable in a query unescaped. */
    assert_int_equal(
        strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."),
        strlen(tok));
    /* No binding, no return_to (server-side flow). */
    st.has_binding = 0;
    st.return_to[0] = '\0';
    assert_int_equal(ident_state_issue(k, &st, tok, sizeof tok, &e), 0);
    assert_int_equal(ident_state_verify(k, tok, strlen(tok), 1000, &got), IDENT_OK);
    assert_false(got.has_binding);
    assert_string_equal(got.return_to, "");
    keyring_free(k);
}

static void test_state_tamper_every_byte(void **state)
{
    (void)state;
    keyring_t *k = ring_k1();
    ident_state st = sample(k), got;
    char tok[IDENT_STATE_MAX];
    err_t e = {0};
    assert_int_equal(ident_state_issue(k, &st, tok, sizeof tok, &e), 0);
    size_t n = strlen(tok);
    for (size_t i = 0; i < n; i++) {
        char t[IDENT_STATE_MAX];
        memcpy(t, tok, n + 1);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        assert_int_not_equal(ident_state_verify(k, t, n, 1000, &got), IDENT_OK);
    }
    /* Truncated and extended tokens. */
    for (size_t cut = 0; cut < n; cut++)
        assert_int_not_equal(ident_state_verify(k, tok, cut, 1000, &got), IDENT_OK);
    char longer[IDENT_STATE_MAX + 8];
    snprintf(longer, sizeof longer, "%sA", tok);
    assert_int_not_equal(ident_state_verify(k, longer, n + 1, 1000, &got), IDENT_OK);
    keyring_free(k);
}

static void test_state_expiry_and_keys(void **state)
{
    (void)state;
    keyring_t *k = ring_k1();
    ident_state st = sample(k), got;
    char tok[IDENT_STATE_MAX];
    err_t e = {0};
    assert_int_equal(ident_state_issue(k, &st, tok, sizeof tok, &e), 0);
    assert_int_equal(ident_state_verify(k, tok, strlen(tok), 1600, &got), IDENT_OK);
    assert_int_equal(ident_state_verify(k, tok, strlen(tok), 1601, &got), IDENT_EXPIRED);
    /* A keyring without k1 cannot verify it: unknown key id. */
    keyring_t *k2 = ring("{\"active\":\"k2\",\"keys\":{\"k2\":\"" K2 "\"}}");
    assert_int_equal(ident_state_verify(k2, tok, strlen(tok), 1000, &got), IDENT_UNKNOWN_KID);
    /* Same kid name, different key: bad MAC. */
    keyring_t *k1b = ring("{\"active\":\"k1\",\"keys\":{\"k1\":\"" K2 "\"}}");
    assert_int_equal(ident_state_verify(k1b, tok, strlen(tok), 1000, &got), IDENT_BAD_MAC);
    /* Rotation: old states verify while k1 is listed; new ones use k2. */
    keyring_t *rot = ring("{\"active\":\"k2\",\"keys\":{\"k1\":\"" K1 "\",\"k2\":\"" K2 "\"}}");
    assert_int_equal(ident_state_verify(rot, tok, strlen(tok), 1000, &got), IDENT_OK);
    assert_int_equal(ident_state_issue(rot, &st, tok, sizeof tok, &e), 0);
    assert_int_equal(strncmp(tok, "1.k2.", 5), 0);
    assert_string_equal(ident_result_name(IDENT_BAD_MAC), "bad_mac");
    keyring_free(k);
    keyring_free(k2);
    keyring_free(k1b);
    keyring_free(rot);
}

static void test_pkce_verifier_derivation(void **state)
{
    (void)state;
    keyring_t *k = ring_k1();
    char v1[IDENT_PKCE_VERIFIER], v2[IDENT_PKCE_VERIFIER], v3[IDENT_PKCE_VERIFIER];
    assert_int_equal(ident_pkce_verifier(k, "k1", "conn-a", v1), 0);
    assert_int_equal(ident_pkce_verifier(k, "k1", "conn-a", v2), 0);
    assert_int_equal(ident_pkce_verifier(k, "k1", "conn-b", v3), 0);
    assert_string_equal(v1, v2);      /* deterministic: start and callback agree */
    assert_string_not_equal(v1, v3);  /* per connection */
    assert_int_equal(strlen(v1), 43); /* RFC 7636: 43..128 unreserved chars */
    assert_int_equal(ident_pkce_verifier(k, "nope", "conn-a", v1), -1);
    keyring_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conn_id_round_trip_and_forgery),
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test(test_state_tamper_every_byte),
        cmocka_unit_test(test_state_expiry_and_keys),
        cmocka_unit_test(test_pkce_verifier_derivation),
    };
    return cmocka_run_group_tests_name("unit_ident", tests, NULL, NULL);
}
