/* Unit tests of common/crypto and common/keyring against published vectors:
 * RFC 4231 (HMAC-SHA256), RFC 7636 Appendix B (PKCE S256), the GCM
 * specification's AES-256 test case 14, RFC 4648 base64url. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/crypto.h"
#include "common/keyring.h"
#include "common/sealed.h"

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static void test_sha256_and_hmac_vectors(void **state)
{
    (void)state;
    char h[CRYPTO_SHA256_HEX];
    crypto_sha256_hex("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    uint8_t mac[32];
    char mh[65];
    /* RFC 4231 test case 2 */
    crypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac);
    hex(mac, 32, mh);
    assert_string_equal(mh, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* RFC 4231 test case 1 */
    uint8_t key[20];
    memset(key, 0x0b, sizeof key);
    crypto_hmac_sha256(key, sizeof key, "Hi There", 8, mac);
    hex(mac, 32, mh);
    assert_string_equal(mh, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

static void test_pkce_rfc7636_appendix_b(void **state)
{
    (void)state;
    const char *verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    char challenge[44];
    crypto_pkce_s256(verifier, strlen(verifier), challenge);
    assert_string_equal(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

static void test_b64url(void **state)
{
    (void)state;
    char out[64];
    uint8_t back[64];
    /* RFC 4648 §10 vectors, unpadded */
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *want[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        assert_int_equal(crypto_b64url_encode(in[i], strlen(in[i]), out, sizeof out),
                         (long)strlen(want[i]));
        assert_string_equal(out, want[i]);
        assert_int_equal(crypto_b64url_decode(out, strlen(out), back, sizeof back),
                         (long)strlen(in[i]));
        assert_memory_equal(back, in[i], strlen(in[i]));
    }
    uint8_t bytes[] = {0xfb, 0xff, 0xfe};
    crypto_b64url_encode(bytes, 3, out, sizeof out);
    assert_string_equal(out, "-__-");
    assert_int_equal(crypto_b64url_decode("Zg==", 4, back, sizeof back), -1); /* padding */
    assert_int_equal(crypto_b64url_decode("Zh", 2, back, sizeof back), -1);   /* non-canonical */
    assert_int_equal(crypto_b64url_decode("Z", 1, back, sizeof back), -1);
    assert_int_equal(crypto_b64url_decode("+/", 2, back, sizeof back), -1);
    assert_int_equal(crypto_b64url_encode("foobar", 6, out, 8), -1); /* needs 9 */
    assert_int_equal(crypto_b64url_decode("Zm9vYmFy", 8, back, 5), -1);
    assert_int_equal(crypto_b64_decode_any("Zm9vYmE=\n", 9, back, sizeof back), 5);
}

static void test_gcm_vector_and_tamper(void **state)
{
    (void)state;
    /* GCM spec test case 14: K = 0^256, IV = 0^96, P = 0^128. */
    uint8_t key[32] = {0};
    uint8_t in[12 + 16 + 16] = {0};
    const uint8_t ct[16] = {0xce, 0xa7, 0x40, 0x3d, 0x4d, 0x60, 0x6b, 0x6e,
                            0x07, 0x4e, 0xc5, 0xd3, 0xba, 0xf3, 0x9d, 0x18};
    const uint8_t tag[16] = {0xd0, 0xd1, 0xc8, 0xa7, 0x99, 0x99, 0x6b, 0xf0,
                             0x26, 0x5b, 0x98, 0xb5, 0xd4, 0x8a, 0xb9, 0x19};
    memcpy(in + 12, ct, 16);
    memcpy(in + 28, tag, 16);
    uint8_t out[64];
    err_t e = {0};
    assert_int_equal(crypto_gcm_open(key, NULL, 0, in, sizeof in, out, sizeof out, &e), 16);
    uint8_t zero[16] = {0};
    assert_memory_equal(out, zero, 16);

    /* Seal/open round trip with AAD; every altered byte and a wrong AAD
     * or key fails authentication. */
    uint8_t k2[32];
    memset(k2, 7, sizeof k2);
    const char *msg = "sk_test_secret_access_token";
    uint8_t sealed[128];
    long n =
        crypto_gcm_seal(k2, "conn1|access_token", 18, msg, strlen(msg), sealed, sizeof sealed, &e);
    assert_int_equal(n, (long)strlen(msg) + 28);
    assert_int_equal(
        crypto_gcm_open(k2, "conn1|access_token", 18, sealed, (size_t)n, out, sizeof out, &e),
        (long)strlen(msg));
    assert_memory_equal(out, msg, strlen(msg));
    for (long i = 0; i < n; i++) {
        sealed[i] ^= 0x01;
        assert_int_equal(
            crypto_gcm_open(k2, "conn1|access_token", 18, sealed, (size_t)n, out, sizeof out, &e),
            -1);
        sealed[i] ^= 0x01;
    }
    assert_int_equal(
        crypto_gcm_open(k2, "conn2|access_token", 18, sealed, (size_t)n, out, sizeof out, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_int_equal(
        crypto_gcm_open(key, "conn1|access_token", 18, sealed, (size_t)n, out, sizeof out, &e), -1);
    /* Nonces are random: sealing twice differs. */
    uint8_t sealed2[128];
    crypto_gcm_seal(k2, "a", 1, msg, strlen(msg), sealed2, sizeof sealed2, &e);
    assert_memory_not_equal(sealed, sealed2, 12);
}

static void test_ct_equal(void **state)
{
    (void)state;
    assert_true(crypto_ct_equal("abcd", "abcd", 4));
    assert_false(crypto_ct_equal("abcd", "abce", 4));
}

#define K1 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"  /* bytes 0..31 */
#define K2 "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=" /* bytes 32..63, padded */

static void test_keyring_parse(void **state)
{
    (void)state;
    err_t e = {0};
    const char *ok = "{\"active\":\"k2\",\"keys\":{\"k1\":\"" K1 "\",\"k2\":\"" K2 "\"}}";
    keyring_t *k = keyring_parse(ok, strlen(ok), "keys.json", &e);
    assert_non_null(k);
    assert_string_equal(keyring_active_kid(k), "k2");
    assert_int_equal(keyring_active_key(k)[0], 32);
    assert_int_equal(keyring_find(k, "k1")[31], 31);
    assert_null(keyring_find(k, "k3"));
    assert_int_equal(keyring_count(k), 2);
    keyring_free(k);

    const char *bad[] = {
        "{\"active\":\"k3\",\"keys\":{\"k1\":\"" K1 "\"}}",  /* active missing */
        "{\"active\":\"k1\",\"keys\":{\"k1\":\"AAEC\"}}",    /* short key */
        "{\"active\":\"k1\",\"keys\":{\"k 1\":\"" K1 "\"}}", /* bad kid */
        "{\"active\":\"k1\",\"keys\":{}}",
        "{\"active\":\"k1\",\"keys\":{\"k1\":\"" K1 "\"},\"extra\":1}",
        "[1]",
        "{",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        assert_null(keyring_parse(bad[i], strlen(bad[i]), "keys.json", &e));
        assert_int_equal(e.cls, ERRC_FATAL);
        assert_non_null(strstr(e.msg, "keys.json"));
        assert_null(strstr(e.msg, "AAECAwQF")); /* never key material */
    }
}

static void test_sealed_round_trip_tamper_rotation(void **state)
{
    (void)state;
    err_t e = {0};
    const char *j1 = "{\"active\":\"d1\",\"keys\":{\"d1\":\"" K1 "\"}}";
    const char *j2 = "{\"active\":\"d2\",\"keys\":{\"d1\":\"" K1 "\",\"d2\":\"" K2 "\"}}";
    const char *j3 = "{\"active\":\"d2\",\"keys\":{\"d2\":\"" K2 "\"}}";
    keyring_t *k1 = keyring_parse(j1, strlen(j1), "k1", &e);
    keyring_t *k2 = keyring_parse(j2, strlen(j2), "k2", &e);
    keyring_t *k3 = keyring_parse(j3, strlen(j3), "k3", &e);
    assert_non_null(k1);
    assert_non_null(k2);
    assert_non_null(k3);
    char text[SEALED_TEXT_MAX], out[256];
    const char *tok = "sk_test_abcdef123456";
    assert_int_equal(
        sealed_seal(k1, "conn1", "access_token", tok, strlen(tok), text, sizeof text, &e), 0);
    assert_int_equal(strncmp(text, "v1.d1.", 6), 0);
    assert_null(strstr(text, "sk_test"));
    assert_int_equal(sealed_open(k1, "conn1", "access_token", text, out, sizeof out, &e),
                     (long)strlen(tok));
    assert_string_equal(out, tok);
    /* AAD binds connection and field. */
    assert_int_equal(sealed_open(k1, "conn2", "access_token", text, out, sizeof out, &e), -1);
    assert_int_equal(sealed_open(k1, "conn1", "refresh_token", text, out, sizeof out, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    /* Tamper any character of the payload. */
    for (size_t i = 6; i < strlen(text); i++) {
        char t[SEALED_TEXT_MAX];
        memcpy(t, text, sizeof t);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        assert_int_equal(sealed_open(k1, "conn1", "access_token", t, out, sizeof out, &e), -1);
    }
    /* Rotation: d2 active, d1 kept: old values open, new ones use d2. */
    assert_int_equal(sealed_open(k2, "conn1", "access_token", text, out, sizeof out, &e),
                     (long)strlen(tok));
    char text2[SEALED_TEXT_MAX];
    assert_int_equal(
        sealed_seal(k2, "conn1", "access_token", tok, strlen(tok), text2, sizeof text2, &e), 0);
    assert_int_equal(strncmp(text2, "v1.d2.", 6), 0);
    /* A keyring without d1 cannot open old values: fatal (a key is missing). */
    assert_int_equal(sealed_open(k3, "conn1", "access_token", text, out, sizeof out, &e), -1);
    assert_int_equal(e.cls, ERRC_FATAL);
    keyring_free(k1);
    keyring_free(k2);
    keyring_free(k3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_and_hmac_vectors),
        cmocka_unit_test(test_pkce_rfc7636_appendix_b),
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_gcm_vector_and_tamper),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_keyring_parse),
        cmocka_unit_test(test_sealed_round_trip_tamper_rotation),
    };
    return cmocka_run_group_tests_name("unit_crypto", tests, NULL, NULL);
}
