/* Unit tests of common/apikeys: the keys file (strict validation, errors
 * naming the file and kid), the Bearer parser, checks (unknown kid, wrong
 * secret, scopes, rotation with two keys), generation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/apikeys.h"
#include "common/crypto.h"

/* Two keys of a rotation: "old" with both connection scopes, "new" write only. */
#define KEY_OLD "oq_old_0123456789abcdefABCDEF-_xyz"
#define KEY_NEW "oq_new1_ZZZZZZZZZZZZZZZZZZZZZZZZ"

static apikeys_t *two_keys(void)
{
    char h_old[65], h_new[65], json[1024];
    crypto_sha256_hex(KEY_OLD, strlen(KEY_OLD), h_old);
    crypto_sha256_hex(KEY_NEW, strlen(KEY_NEW), h_new);
    snprintf(json, sizeof json,
             "{\"keys\": {\"old\": {\"sha256\": \"%s\", \"scopes\": [\"connections:write\", "
             "\"connections:read\"]}, \"new1\": {\"sha256\": \"%s\", \"scopes\": "
             "[\"connections:write\"]}}}",
             h_old, h_new);
    err_t e = {0};
    apikeys_t *k = apikeys_parse(json, strlen(json), "keys.json", &e);
    assert_non_null(k);
    assert_int_equal(apikeys_count(k), 2);
    return k;
}

static void test_check(void **state)
{
    (void)state;
    apikeys_t *k = two_keys();
    char kid[APIKEYS_KID_MAX];
    unsigned rw = APIKEYS_CONNECTIONS_WRITE | APIKEYS_CONNECTIONS_READ;
    assert_int_equal(apikeys_check(k, "Bearer " KEY_OLD, rw, kid), APIKEYS_OK);
    assert_string_equal(kid, "old");
    assert_int_equal(apikeys_check(k, "bearer   " KEY_OLD, APIKEYS_CONNECTIONS_READ, kid),
                     APIKEYS_OK);
    /* Rotation: both keys work at once. */
    assert_int_equal(apikeys_check(k, "Bearer " KEY_NEW, APIKEYS_CONNECTIONS_WRITE, kid),
                     APIKEYS_OK);
    assert_string_equal(kid, "new1");
    /* Scopes. */
    assert_int_equal(apikeys_check(k, "Bearer " KEY_NEW, APIKEYS_CONNECTIONS_READ, kid),
                     APIKEYS_FORBIDDEN);
    assert_int_equal(apikeys_check(k, "Bearer " KEY_OLD, APIKEYS_TOKENS_READ, NULL),
                     APIKEYS_FORBIDDEN);
    /* Missing, malformed, unknown. */
    assert_int_equal(apikeys_check(k, NULL, rw, kid), APIKEYS_MISSING);
    assert_int_equal(apikeys_check(k, "Basic b3E6", rw, kid), APIKEYS_MALFORMED);
    assert_int_equal(apikeys_check(k, KEY_OLD, rw, kid), APIKEYS_MALFORMED);
    assert_int_equal(apikeys_check(k, "Bearer " KEY_OLD " ", rw, kid), APIKEYS_MALFORMED);
    /* Right kid, one character of the secret changed. */
    assert_int_equal(apikeys_check(k, "Bearer oq_old_0123456789abcdefABCDEF-_xyZ", rw, kid),
                     APIKEYS_UNKNOWN);
    /* Another kid's secret under this kid. */
    assert_int_equal(apikeys_check(k, "Bearer oq_old_ZZZZZZZZZZZZZZZZZZZZZZZZ", rw, kid),
                     APIKEYS_UNKNOWN);
    assert_int_equal(apikeys_check(k, "Bearer oq_gone_0123456789abcdefABCDEF", rw, kid),
                     APIKEYS_UNKNOWN);
    assert_string_equal(kid, "gone"); /* named in the refusal's log line */
    assert_int_equal(apikeys_check(k, "Basic b3E6", rw, kid), APIKEYS_MALFORMED);
    assert_string_equal(kid, "");
    /* No keys configured: nothing passes. */
    assert_int_equal(apikeys_check(NULL, "Bearer " KEY_OLD, rw, kid), APIKEYS_UNKNOWN);
    apikeys_free(k);
}

static void test_parse_bearer(void **state)
{
    (void)state;
    char kid[APIKEYS_KID_MAX];
    const char *key;
    size_t n;
    const char *h = "Bearer oq_abc_"
                    "0123456789abcdef";
    assert_int_equal(apikeys_parse_bearer(h, strlen(h), kid, &key, &n), 0);
    assert_string_equal(kid, "abc");
    assert_int_equal(n, strlen("oq_abc_0123456789abcdef"));
    assert_memory_equal(key, "oq_abc_0123456789abcdef", n);
    static const char *bad[] = {
        "",
        "Bearer",
        "Bearer ",
        "Bearer oq__0123456789abcdef",                  /* empty kid */
        "Bearer oq_ABC_0123456789abcdef",               /* kid upper case */
        "Bearer oq_abcdefghijklmnopq_0123456789abcdef", /* kid of 17 */
        "Bearer oq_abc_0123456789abcde",                /* secret of 15 */
        "Bearer oq_abc_0123456789abcdef!",              /* secret charset */
        "Bearer xq_abc_0123456789abcdef",
        "Bearer oq_abc",
        "Token oq_abc_0123456789abcdef",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(apikeys_parse_bearer(bad[i], strlen(bad[i]), kid, &key, &n), -1);
    /* kid of exactly 16 and a secret of 128 are fine; 129 is not. */
    char big[256];
    snprintf(big, sizeof big, "Bearer oq_abcdefghijklmnop_%0128d", 0);
    assert_int_equal(apikeys_parse_bearer(big, strlen(big), kid, &key, &n), 0);
    assert_string_equal(kid, "abcdefghijklmnop");
    snprintf(big, sizeof big, "Bearer oq_abcdefghijklmnop_%0129d", 0);
    assert_int_equal(apikeys_parse_bearer(big, strlen(big), kid, &key, &n), -1);
}

static void expect_error(const char *json, const char *needle)
{
    err_t e = {0};
    apikeys_t *k = apikeys_parse(json, strlen(json), "/etc/oauthq/keys.json", &e);
    assert_null(k);
    assert_int_equal(e.cls, ERRC_FATAL);
    if (!strstr(e.msg, "/etc/oauthq/keys.json") || !strstr(e.msg, needle))
        fail_msg("error \"%s\" should name the file and \"%s\"", e.msg, needle);
}

#define H64 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static void test_file_validation(void **state)
{
    (void)state;
    expect_error("[]", "not a JSON object");
    expect_error("{}", "keys");
    expect_error("{\"keys\": {}, \"extra\": 1}", "extra");
    expect_error("{\"keys\": {\"Bad\": {\"sha256\": \"" H64 "\", \"scopes\": []}}}", "Bad");
    expect_error("{\"keys\": {\"k1\": {\"sha256\": \"abc\", \"scopes\": []}}}", "k1");
    expect_error("{\"keys\": {\"k1\": {\"sha256\": \"" H64 "\"}}}", "k1");
    expect_error("{\"keys\": {\"k1\": {\"sha256\": \"" H64 "\", \"scopes\": [\"admin\"]}}}",
                 "admin");
    expect_error("{\"keys\": {\"k1\": {\"sha256\": \"" H64 "\", \"scopes\": [], \"x\": 1}}}", "k1");
    expect_error("{\"keys\": {\"k1\": {\"sha256\": \"" H64 "\", \"scopes\": []}, \"k1\": "
                 "{\"sha256\": \"" H64 "\", \"scopes\": []}}}",
                 "twice");
    expect_error("{\"keys\": {\"k1\": \"" H64 "\"}}", "k1");
    err_t e = {0};
    apikeys_t *k = apikeys_load("/nonexistent/keys.json", &e);
    assert_null(k);
    assert_non_null(strstr(e.msg, "/nonexistent/keys.json"));
    /* An empty key list is valid (every call refused). */
    const char *empty = "{\"keys\": {}}";
    k = apikeys_parse(empty, strlen(empty), "t", &e);
    assert_non_null(k);
    assert_int_equal(apikeys_count(k), 0);
    apikeys_free(k);
}

static void test_generate(void **state)
{
    (void)state;
    char key[APIKEYS_KEY_MAX], hex[65], key2[APIKEYS_KEY_MAX], hex2[65], json[512];
    err_t e = {0};
    assert_int_equal(apikeys_generate("prod1", key, hex, &e), 0);
    assert_int_equal(apikeys_generate("prod1", key2, hex2, &e), 0);
    assert_string_not_equal(key, key2);
    assert_int_equal(strncmp(key, "oq_prod1_", 9), 0);
    snprintf(json, sizeof json,
             "{\"keys\": {\"prod1\": {\"sha256\": \"%s\", \"scopes\": [\"tokens:read\"]}}}", hex);
    apikeys_t *k = apikeys_parse(json, strlen(json), "t", &e);
    assert_non_null(k);
    char hdr[APIKEYS_KEY_MAX + 8];
    snprintf(hdr, sizeof hdr, "Bearer %s", key);
    assert_int_equal(apikeys_check(k, hdr, APIKEYS_TOKENS_READ, NULL), APIKEYS_OK);
    snprintf(hdr, sizeof hdr, "Bearer %s", key2);
    assert_int_equal(apikeys_check(k, hdr, APIKEYS_TOKENS_READ, NULL), APIKEYS_UNKNOWN);
    apikeys_free(k);
    assert_int_equal(apikeys_generate("Prod", key, hex, &e), -1);
    assert_int_equal(apikeys_generate("", key, hex, &e), -1);
    assert_int_equal(apikeys_scope_bit("connections:read"), APIKEYS_CONNECTIONS_READ);
    assert_int_equal(apikeys_scope_bit("connections"), 0);
    assert_string_equal(apikeys_scope_name(APIKEYS_TOKENS_READ), "tokens:read");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_parse_bearer),
        cmocka_unit_test(test_file_validation),
        cmocka_unit_test(test_generate),
    };
    return cmocka_run_group_tests_name("unit_apikeys", tests, NULL, NULL);
}
