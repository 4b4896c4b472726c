/* Unit tests of common/exchange: the pure outcome classifiers (a table over
 * HTTP status × body × Retry-After and over curl codes × sent/not sent),
 * token parsing for Stripe and generic OAuth 2 bodies, hostile bodies, that
 * `detail` never carries a token or the provider's error_description, and
 * exchange_add's input checks. Single-threaded; no network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "common/providers.h"
#include "common/exchange.h"

/* Markers that must never reach detail: tokens and descriptions use them. */
#define TOKMARK  "ZZTOKZZ"
#define DESCMARK "ZZDESCZZ"

static provider_t g_stripe, g_oauth2;

static int setup(void **st)
{
    (void)st;
    memset(&g_stripe, 0, sizeof g_stripe);
    snprintf(g_stripe.name, sizeof g_stripe.name, "stripe");
    g_stripe.profile = PROVIDER_PROFILE_STRIPE;
    snprintf(g_stripe.token_url, sizeof g_stripe.token_url,
             "https://connect.stripe.com/oauth/token");
    snprintf(g_stripe.client_id, sizeof g_stripe.client_id, "ca_123");
    g_stripe.token_auth = PROVIDER_AUTH_POST;
    g_stripe.code_ttl_s = 300;
    g_oauth2 = g_stripe;
    snprintf(g_oauth2.name, sizeof g_oauth2.name, "google");
    g_oauth2.profile = PROVIDER_PROFILE_OAUTH2;
    g_oauth2.token_auth = PROVIDER_AUTH_BASIC;
    return 0;
}

static void assert_detail_clean(const exchange_result *r)
{
    assert_true(strlen(r->detail) > 0);
    assert_true(strlen(r->detail) < sizeof r->detail);
    assert_null(strstr(r->detail, TOKMARK));
    assert_null(strstr(r->detail, DESCMARK));
    assert_null(strstr(r->detail, "ac_"));
    for (const char *p = r->detail; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
    if (r->cls != EXCH_SUCCESS) {
        assert_string_equal(r->access_token, "");
        assert_string_equal(r->refresh_token, "");
    }
}

/* ---- the HTTP table ------------------------------------------------------ */

typedef struct {
    long status;
    const char *body;
    const char *retry_after;
    exchange_class cls;
    const char *error;  /* expected error field */
    int expired_hint;   /* expected */
    int retry_after_s;  /* expected */
    const char *detail; /* expected detail, NULL: not checked */
} http_row;

static const char STRIPE_OK[] =
    "{\"access_token\":\"sk_test_" TOKMARK "\",\"livemode\":false,\"refresh_token\":\"rt_" TOKMARK
    "\",\"token_type\":\"bearer\",\"stripe_publishable_key\":\"pk_test_x\","
    "\"stripe_user_id\":\"acct_1AbC\",\"scope\":\"read_write\"}";

#define ERRBODY(err, desc) "{\"error\":\"" err "\",\"error_description\":\"" desc "\"}"

static const http_row HTTP_ROWS[] = {
    /* 2xx */
    {200, STRIPE_OK, NULL, EXCH_SUCCESS, "", 0, 0, "http 200"},
    {201, STRIPE_OK, NULL, EXCH_SUCCESS, "", 0, 0, "http 201"},
    {200, "{\"token_type\":\"bearer\"}", NULL, EXCH_UNKNOWN, "", 0, 0,
     "http 200 without access_token"},
    {200, "{\"access_token\":\"\"}", NULL, EXCH_UNKNOWN, "", 0, 0, NULL},
    {200, "{\"access_token\":12345}", NULL, EXCH_UNKNOWN, "", 0, 0, NULL},
    {200, "{\"access_token\":null}", NULL, EXCH_UNKNOWN, "", 0, 0, NULL},
    {200, "{\"access_token\":\"a\\u0001b\"}", NULL, EXCH_UNKNOWN, "", 0, 0, NULL},
    {200, "access_token=" TOKMARK "&token_type=bearer", NULL, EXCH_UNKNOWN, "", 0, 0,
     "http 200 unparseable body"},
    {200, "", NULL, EXCH_UNKNOWN, "", 0, 0, "http 200 unparseable body"},
    {200, "[\"access_token\"]", NULL, EXCH_UNKNOWN, "", 0, 0, NULL},
    {200, "{\"access_token\":\"" TOKMARK "\"", NULL, EXCH_UNKNOWN, "", 0, 0, NULL},
    {204, "", NULL, EXCH_UNKNOWN, "", 0, 0, NULL},
    /* 2xx carrying an error (GitHub answers its errors with 200) */
    {200, ERRBODY("bad_verification_code", "The code passed is incorrect or expired. " DESCMARK),
     NULL, EXCH_REJECTED, "bad_verification_code", 1, 0, NULL},
    {200, ERRBODY("incorrect_client_credentials", DESCMARK), NULL, EXCH_MISCONFIGURED,
     "incorrect_client_credentials", 0, 0, NULL},
    {200, ERRBODY("invalid_grant", DESCMARK), NULL, EXCH_REJECTED, "invalid_grant", 0, 0, NULL},
    {200, ERRBODY("made_up", DESCMARK), NULL, EXCH_UNKNOWN, "made_up", 0, 0, NULL},
    /* invalid_grant → REJECTED, expired hint from the description */
    {400,
     ERRBODY("invalid_grant", "This authorization code has already been used. All tokens issued "
                              "with this code have been revoked."),
     NULL, EXCH_REJECTED, "invalid_grant", 0, 0, "http 400 invalid_grant"},
    {400, ERRBODY("invalid_grant", "This authorization code has expired."), NULL, EXCH_REJECTED,
     "invalid_grant", 1, 0, "http 400 invalid_grant (expired)"},
    {400, ERRBODY("invalid_grant", "Code EXPIRED " DESCMARK), NULL, EXCH_REJECTED, "invalid_grant",
     1, 0, NULL},
    {400, "{\"error\":\"invalid_grant\"}", NULL, EXCH_REJECTED, "invalid_grant", 0, 0, NULL},
    {400, "{\"error\":\"invalid_grant\",\"error_description\":7}", NULL, EXCH_REJECTED,
     "invalid_grant", 0, 0, NULL},
    {401, ERRBODY("invalid_grant", DESCMARK), NULL, EXCH_REJECTED, "invalid_grant", 0, 0,
     "http 401 invalid_grant"},
    {400, ERRBODY("invalid_grant", "Authorization code provided does not exist."), NULL,
     EXCH_REJECTED, "invalid_grant", 0, 0, NULL},
    /* invalid_client → MISCONFIGURED whatever the status */
    {401, ERRBODY("invalid_client", "Invalid client credentials. " DESCMARK), NULL,
     EXCH_MISCONFIGURED, "invalid_client", 0, 0, "http 401 invalid_client"},
    {400, ERRBODY("invalid_client", DESCMARK), NULL, EXCH_MISCONFIGURED, "invalid_client", 0, 0,
     "http 400 invalid_client"},
    /* other RFC 6749 §5.2 errors → FAILED */
    {400, ERRBODY("invalid_request", DESCMARK), NULL, EXCH_FAILED, "invalid_request", 0, 0,
     "http 400 invalid_request"},
    {400, ERRBODY("unauthorized_client", DESCMARK), NULL, EXCH_FAILED, "unauthorized_client", 0, 0,
     NULL},
    {400, ERRBODY("unsupported_grant_type", DESCMARK), NULL, EXCH_FAILED, "unsupported_grant_type",
     0, 0, NULL},
    {400, ERRBODY("invalid_scope", DESCMARK), NULL, EXCH_FAILED, "invalid_scope", 0, 0, NULL},
    {400, ERRBODY("redirect_uri_mismatch", DESCMARK), NULL, EXCH_FAILED, "redirect_uri_mismatch", 0,
     0, NULL},
    /* provider-side trouble spelled as an error code → UNKNOWN */
    {400, ERRBODY("server_error", DESCMARK), NULL, EXCH_UNKNOWN, "server_error", 0, 0, NULL},
    {400, ERRBODY("temporarily_unavailable", DESCMARK), NULL, EXCH_UNKNOWN,
     "temporarily_unavailable", 0, 0, NULL},
    /* 4xx we cannot parse → FAILED (401: MISCONFIGURED) */
    {400, ERRBODY("something_else", DESCMARK), NULL, EXCH_FAILED, "something_else", 0, 0,
     "http 400 unrecognised error"},
    {400, "{\"error\":\"has space " DESCMARK "\"}", NULL, EXCH_FAILED, "", 0, 0,
     "http 400 unparseable error"},
    {400, "{\"error\":42}", NULL, EXCH_FAILED, "", 0, 0, NULL},
    {400, "<html>" DESCMARK "</html>", NULL, EXCH_FAILED, "", 0, 0, "http 400 unparseable error"},
    {403, "Forbidden", NULL, EXCH_FAILED, "", 0, 0, "http 403 unparseable error"},
    {404, "", NULL, EXCH_FAILED, "", 0, 0, "http 404 unparseable error"},
    {401, "", NULL, EXCH_MISCONFIGURED, "", 0, 0, "http 401 unparseable error"},
    {422, "{}", NULL, EXCH_FAILED, "", 0, 0, NULL},
    {408, "", NULL, EXCH_UNKNOWN, "", 0, 0, "http 408"},
    /* 3xx: a redirecting token endpoint is misconfigured; never followed */
    {302, "", NULL, EXCH_FAILED, "", 0, 0, "http 302"},
    {301, STRIPE_OK, NULL, EXCH_FAILED, "", 0, 0, "http 301"},
    {307, "", NULL, EXCH_FAILED, "", 0, 0, "http 307"},
    /* 429 → RETRY_SAFE with Retry-After (default 1, cap 3600) */
    {429, ERRBODY("rate_limit", DESCMARK), "1", EXCH_RETRY_SAFE, "", 0, 1,
     "http 429 retry-after 1"},
    {429, "", NULL, EXCH_RETRY_SAFE, "", 0, 1, "http 429 retry-after 1"},
    {429, "", " 120 ", EXCH_RETRY_SAFE, "", 0, 120, "http 429 retry-after 120"},
    {429, "", "99999", EXCH_RETRY_SAFE, "", 0, 3600, NULL},
    {429, "", "99999999999999", EXCH_RETRY_SAFE, "", 0, 1, NULL},
    {429, "", "Wed, 21 Oct 2015 07:28:00 GMT", EXCH_RETRY_SAFE, "", 0, 1, NULL},
    {429, "", "0", EXCH_RETRY_SAFE, "", 0, 1, NULL},
    {429, "", "-5", EXCH_RETRY_SAFE, "", 0, 1, NULL},
    /* 5xx → UNKNOWN (the code may be spent), whatever the body */
    {500, ERRBODY("api_error", DESCMARK), NULL, EXCH_UNKNOWN, "", 0, 0, "http 500"},
    {500, ERRBODY("invalid_grant", DESCMARK), NULL, EXCH_UNKNOWN, "", 0, 0, "http 500"},
    {502, "<html>bad gateway</html>", NULL, EXCH_UNKNOWN, "", 0, 0, "http 502"},
    {503, "", "30", EXCH_UNKNOWN, "", 0, 30, "http 503"},
    {504, STRIPE_OK, NULL, EXCH_UNKNOWN, "", 0, 0, "http 504"},
    /* statuses that are not a final HTTP answer */
    {0, "", NULL, EXCH_UNKNOWN, "", 0, 0, NULL},
    {100, "", NULL, EXCH_UNKNOWN, "", 0, 0, NULL},
    {700, STRIPE_OK, NULL, EXCH_UNKNOWN, "", 0, 0, NULL},
    {-1, "", NULL, EXCH_UNKNOWN, "", 0, 0, NULL},
};

static void test_http_table(void **st)
{
    (void)st;
    for (size_t i = 0; i < sizeof HTTP_ROWS / sizeof HTTP_ROWS[0]; i++) {
        const http_row *row = &HTTP_ROWS[i];
        exchange_result r;
        memset(&r, 0x5a, sizeof r); /* the classifier must reset everything */
        exchange_classify_http(&g_stripe, row->status, row->body, strlen(row->body),
                               row->retry_after, &r);
        if (r.cls != row->cls)
            fail_msg("row %zu (http %ld %.40s): class %s, want %s", i, row->status, row->body,
                     exchange_class_name(r.cls), exchange_class_name(row->cls));
        assert_int_equal(r.http_status, row->status);
        assert_string_equal(r.error, row->error);
        assert_int_equal(r.expired_hint, row->expired_hint);
        assert_int_equal(r.retry_after_s, row->retry_after_s);
        if (row->detail)
            assert_string_equal(r.detail, row->detail);
        assert_detail_clean(&r);
        if (r.cls != EXCH_SUCCESS) {
            assert_int_equal(r.expires_in, -1);
            assert_int_equal(r.livemode, -1);
            assert_string_equal(r.account_id, "");
        }
    }
}

/* ---- the transport table ------------------------------------------------- */

typedef struct {
    int code;
    int sent;
    exchange_class cls;
    const char *detail;
} transport_row;

static const transport_row TRANSPORT_ROWS[] = {
    {CURLE_COULDNT_CONNECT, 0, EXCH_RETRY_SAFE, "curl 7 connect failed before send"},
    {CURLE_COULDNT_CONNECT, 1, EXCH_RETRY_SAFE, NULL},
    {CURLE_COULDNT_RESOLVE_HOST, 0, EXCH_RETRY_SAFE, "curl 6 resolve failed before send"},
    {CURLE_COULDNT_RESOLVE_PROXY, 0, EXCH_RETRY_SAFE, NULL},
    {CURLE_OPERATION_TIMEDOUT, 0, EXCH_RETRY_SAFE, "curl 28 timeout before send"},
    {CURLE_OPERATION_TIMEDOUT, 1, EXCH_UNKNOWN, "curl 28 timeout after send"},
    {CURLE_GOT_NOTHING, 1, EXCH_UNKNOWN, "curl 52 no answer after send"},
    {CURLE_RECV_ERROR, 1, EXCH_UNKNOWN, "curl 56 recv error after send"},
    {CURLE_PARTIAL_FILE, 1, EXCH_UNKNOWN, "curl 18 partial answer after send"},
    {CURLE_SEND_ERROR, 1, EXCH_UNKNOWN, NULL},
    {CURLE_SEND_ERROR, 0, EXCH_RETRY_SAFE, NULL},
    {CURLE_WEIRD_SERVER_REPLY, 1, EXCH_UNKNOWN, NULL},
    {CURLE_WRITE_ERROR, 1, EXCH_UNKNOWN, NULL},
    {CURLE_FILESIZE_EXCEEDED, 1, EXCH_UNKNOWN, NULL},
    {CURLE_SSL_CONNECT_ERROR, 0, EXCH_RETRY_SAFE, "curl 35 tls handshake failed before send"},
    {CURLE_PEER_FAILED_VERIFICATION, 0, EXCH_RETRY_SAFE, NULL},
    {CURLE_OUT_OF_MEMORY, 0, EXCH_RETRY_SAFE, NULL},
    {CURLE_URL_MALFORMAT, 0, EXCH_MISCONFIGURED, "curl 3 bad token_url"},
    {CURLE_UNSUPPORTED_PROTOCOL, 0, EXCH_MISCONFIGURED, NULL},
    {9999, 1, EXCH_UNKNOWN, "curl 9999 error after send"},
    {9999, 0, EXCH_RETRY_SAFE, "curl 9999 error before send"},
};

static void test_transport_table(void **st)
{
    (void)st;
    for (size_t i = 0; i < sizeof TRANSPORT_ROWS / sizeof TRANSPORT_ROWS[0]; i++) {
        const transport_row *row = &TRANSPORT_ROWS[i];
        exchange_result r;
        memset(&r, 0x5a, sizeof r);
        exchange_classify_transport(row->code, row->sent, &r);
        if (r.cls != row->cls)
            fail_msg("row %zu (curl %d sent %d): class %s, want %s", i, row->code, row->sent,
                     exchange_class_name(r.cls), exchange_class_name(row->cls));
        assert_int_equal(r.http_status, 0);
        assert_int_equal(r.retry_after_s, 0);
        assert_string_equal(r.error, "");
        if (row->detail)
            assert_string_equal(r.detail, row->detail);
        assert_detail_clean(&r);
    }
}

/* ---- success parsing ---------------------------------------------------- */

static void test_stripe_success_fields(void **st)
{
    (void)st;
    exchange_result r;
    exchange_classify_http(&g_stripe, 200, STRIPE_OK, strlen(STRIPE_OK), NULL, &r);
    assert_int_equal(r.cls, EXCH_SUCCESS);
    assert_string_equal(r.access_token, "sk_test_" TOKMARK);
    assert_string_equal(r.refresh_token, "rt_" TOKMARK);
    assert_string_equal(r.token_type, "bearer");
    assert_string_equal(r.scope, "read_write");
    assert_string_equal(r.account_id, "acct_1AbC");
    assert_int_equal(r.livemode, 0);
    assert_int_equal(r.expires_in, -1);
    assert_string_equal(r.error, "");

    const char live[] = "{\"access_token\":\"sk_live_x\",\"livemode\":true,"
                        "\"stripe_user_id\":\"acct_9\",\"expires_in\":3600}";
    exchange_classify_http(&g_stripe, 200, live, strlen(live), NULL, &r);
    assert_int_equal(r.cls, EXCH_SUCCESS);
    assert_int_equal(r.livemode, 1);
    assert_int_equal(r.expires_in, 3600);
    assert_string_equal(r.refresh_token, "");
    assert_string_equal(r.token_type, "");

    /* The sim profile reads Stripe's fields too. */
    provider_t sim = g_stripe;
    sim.profile = PROVIDER_PROFILE_SIM;
    exchange_classify_http(&sim, 200, STRIPE_OK, strlen(STRIPE_OK), NULL, &r);
    assert_string_equal(r.account_id, "acct_1AbC");
    assert_int_equal(r.livemode, 0);

    /* An account id that is not an identifier is dropped, not copied. */
    const char odd[] = "{\"access_token\":\"t\",\"stripe_user_id\":\"acct x<script>\"}";
    exchange_classify_http(&g_stripe, 200, odd, strlen(odd), NULL, &r);
    assert_int_equal(r.cls, EXCH_SUCCESS);
    assert_string_equal(r.account_id, "");
}

static void test_oauth2_success_fields(void **st)
{
    (void)st;
    const char body[] = "{\"access_token\":\"ya29." TOKMARK "\",\"expires_in\":3599,"
                        "\"refresh_token\":\"1//0g" TOKMARK "\",\"scope\":\"openid email\","
                        "\"token_type\":\"Bearer\",\"id_token\":\"eyJ.x.y\","
                        "\"stripe_user_id\":\"acct_ignored\",\"livemode\":true}";
    exchange_result r;
    exchange_classify_http(&g_oauth2, 200, body, strlen(body), NULL, &r);
    assert_int_equal(r.cls, EXCH_SUCCESS);
    assert_string_equal(r.access_token, "ya29." TOKMARK);
    assert_string_equal(r.refresh_token, "1//0g" TOKMARK);
    assert_string_equal(r.scope, "openid email");
    assert_string_equal(r.token_type, "Bearer");
    assert_int_equal(r.expires_in, 3599);
    assert_string_equal(r.account_id, ""); /* Stripe fields only for stripe/sim */
    assert_int_equal(r.livemode, -1);
    assert_detail_clean(&r);

    /* expires_in as a numeric string (some providers), or nonsense. */
    const char s1[] = "{\"access_token\":\"a\",\"expires_in\":\"7200\"}";
    exchange_classify_http(&g_oauth2, 200, s1, strlen(s1), NULL, &r);
    assert_int_equal(r.expires_in, 7200);
    const char s2[] = "{\"access_token\":\"a\",\"expires_in\":-4}";
    exchange_classify_http(&g_oauth2, 200, s2, strlen(s2), NULL, &r);
    assert_int_equal(r.expires_in, -1);
    const char s3[] = "{\"access_token\":\"a\",\"expires_in\":1e300}";
    exchange_classify_http(&g_oauth2, 200, s3, strlen(s3), NULL, &r);
    assert_int_equal(r.expires_in, -1);
    const char s4[] = "{\"access_token\":\"a\",\"expires_in\":\"12x\",\"scope\":[\"a\"]}";
    exchange_classify_http(&g_oauth2, 200, s4, strlen(s4), NULL, &r);
    assert_int_equal(r.cls, EXCH_SUCCESS);
    assert_int_equal(r.expires_in, -1);
    assert_string_equal(r.scope, "");

    /* A NULL provider is tolerated (no Stripe fields). */
    exchange_classify_http(NULL, 200, STRIPE_OK, strlen(STRIPE_OK), NULL, &r);
    assert_int_equal(r.cls, EXCH_SUCCESS);
    assert_string_equal(r.account_id, "");
}

/* ---- hostile bodies ------------------------------------------------------ */

static char *json_with_string(const char *key, size_t n)
{
    char *b = malloc(n + 64);
    assert_non_null(b);
    int k = snprintf(b, 64, "{\"access_token\":\"ok\",\"%s\":\"", key);
    if (strcmp(key, "access_token") == 0)
        k = snprintf(b, 64, "{\"access_token\":\"");
    memset(b + k, 'T', n);
    strcpy(b + k + n, "\"}");
    return b;
}

static void test_oversized_and_garbage(void **st)
{
    (void)st;
    exchange_result r;

    /* An access_token that cannot be held whole: the code may be spent → UNKNOWN. */
    char *b = json_with_string("access_token", 5000);
    exchange_classify_http(&g_stripe, 200, b, strlen(b), NULL, &r);
    assert_int_equal(r.cls, EXCH_UNKNOWN);
    assert_detail_clean(&r);
    free(b);

    /* An unusable refresh_token does not throw the access token away. */
    b = json_with_string("refresh_token", 5000);
    exchange_classify_http(&g_stripe, 200, b, strlen(b), NULL, &r);
    assert_int_equal(r.cls, EXCH_SUCCESS);
    assert_string_equal(r.access_token, "ok");
    assert_string_equal(r.refresh_token, "");
    assert_string_equal(r.detail, "http 200 refresh_token unusable");
    free(b);

    /* Long scope / token_type are dropped, not truncated. */
    b = json_with_string("scope", 600);
    exchange_classify_http(&g_stripe, 200, b, strlen(b), NULL, &r);
    assert_int_equal(r.cls, EXCH_SUCCESS);
    assert_string_equal(r.scope, "");
    free(b);

    /* A body beyond EXCHANGE_BODY_MAX is never parsed. */
    size_t big = EXCHANGE_BODY_MAX + 10;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    int k = snprintf(huge, big, "{\"access_token\":\"x\",\"pad\":\"");
    memset(huge + k, 'p', big - (size_t)k - 2);
    memcpy(huge + big - 2, "\"}", 3);
    assert_int_equal(strlen(huge), big);
    exchange_classify_http(&g_stripe, 200, huge, big, NULL, &r);
    assert_int_equal(r.cls, EXCH_UNKNOWN);
    exchange_classify_http(&g_stripe, 400, huge, big, NULL, &r);
    assert_int_equal(r.cls, EXCH_FAILED);
    /* ... while the same shape exactly at the bound is. */
    k = snprintf(huge, big, "{\"access_token\":\"x\",\"pad\":\"");
    memset(huge + k, 'p', EXCHANGE_BODY_MAX - (size_t)k - 2);
    memcpy(huge + EXCHANGE_BODY_MAX - 2, "\"}", 3);
    exchange_classify_http(&g_stripe, 200, huge, EXCHANGE_BODY_MAX, NULL, &r);
    assert_int_equal(r.cls, EXCH_SUCCESS);
    free(huge);

    /* Deep nesting, binary garbage with NULs, a NULL body. */
    char deep[4000];
    memset(deep, '[', sizeof deep);
    exchange_classify_http(&g_stripe, 200, deep, sizeof deep, NULL, &r);
    assert_int_equal(r.cls, EXCH_UNKNOWN);
    char deepobj[6000];
    size_t n = 0;
    for (int i = 0; i < 900; i++)
        n += (size_t)snprintf(deepobj + n, sizeof deepobj - n, "{\"a\":");
    memcpy(deepobj + n, "1", 1);
    n += 1;
    for (int i = 0; i < 900 && n < sizeof deepobj; i++)
        deepobj[n++] = '}';
    exchange_classify_http(&g_stripe, 200, deepobj, n, NULL, &r);
    assert_int_equal(r.cls, EXCH_UNKNOWN);
    unsigned char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)(i * 37 + 11);
    exchange_classify_http(&g_stripe, 400, (const char *)bin, sizeof bin, NULL, &r);
    assert_int_equal(r.cls, EXCH_FAILED);
    const char nul[] = "{\"access_token\":\"ab\0cd\"}";
    exchange_classify_http(&g_stripe, 200, nul, sizeof nul - 1, NULL, &r);
    assert_int_equal(r.cls, EXCH_UNKNOWN);
    exchange_classify_http(&g_stripe, 200, NULL, 100, NULL, &r);
    assert_int_equal(r.cls, EXCH_UNKNOWN);
    /* Duplicate keys: the first wins (cJSON), and nothing breaks. */
    const char dup[] = "{\"error\":\"invalid_grant\",\"error\":\"invalid_client\"}";
    exchange_classify_http(&g_stripe, 400, dup, sizeof dup - 1, NULL, &r);
    assert_int_equal(r.cls, EXCH_REJECTED);
    /* Length is honoured: a body cut short of its closing brace is unparseable. */
    exchange_classify_http(&g_stripe, 200, STRIPE_OK, strlen(STRIPE_OK) - 1, NULL, &r);
    assert_int_equal(r.cls, EXCH_UNKNOWN);
}

/* ---- API odds and ends --------------------------------------------------- */

static void test_class_names(void **st)
{
    (void)st;
    assert_string_equal(exchange_class_name(EXCH_SUCCESS), "success");
    assert_string_equal(exchange_class_name(EXCH_REJECTED), "rejected");
    assert_string_equal(exchange_class_name(EXCH_MISCONFIGURED), "misconfigured");
    assert_string_equal(exchange_class_name(EXCH_FAILED), "failed");
    assert_string_equal(exchange_class_name(EXCH_RETRY_SAFE), "retry_safe");
    assert_string_equal(exchange_class_name(EXCH_UNKNOWN), "unknown");
    assert_string_equal(exchange_class_name((exchange_class)42), "?");
}

static void test_new_and_add_checks(void **st)
{
    (void)st;
    err_t e = {0};
    assert_null(exchange_new(0, 1000, 1000, &e));
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_null(exchange_new(4, 0, 1000, &e));
    assert_null(exchange_new(4, 1000, -1, &e));
    exchange_t *x = exchange_new(4, 1000, 2000, &e);
    assert_non_null(x);
    assert_int_equal(exchange_run(x), 0); /* nothing queued */

    exchange_req q = {.provider = &g_stripe, .client_secret = "sk_secret_value", .code = "ac_1"};
    exchange_req bad = q;
    bad.code = "";
    assert_int_equal(exchange_add(x, &bad, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    bad.code = NULL;
    assert_int_equal(exchange_add(x, &bad, &e), -1);
    bad = q;
    bad.client_secret = NULL;
    assert_int_equal(exchange_add(x, &bad, &e), -1);
    assert_null(strstr(e.msg, "ac_1"));
    bad = q;
    bad.provider = NULL;
    assert_int_equal(exchange_add(x, &bad, &e), -1);
    char *longcode = malloc(EXCHANGE_CODE_MAX + 2);
    memset(longcode, 'c', EXCHANGE_CODE_MAX + 1);
    longcode[EXCHANGE_CODE_MAX + 1] = '\0';
    bad = q;
    bad.code = longcode;
    assert_int_equal(exchange_add(x, &bad, &e), -1);
    free(longcode);
    /* oauth2 needs a redirect_uri. */
    bad = q;
    bad.provider = &g_oauth2;
    assert_int_equal(exchange_add(x, &bad, &e), -1);
    assert_non_null(strstr(e.msg, "redirect_uri"));
    bad.redirect_uri = "https://app.example/cb";
    assert_int_equal(exchange_add(x, &bad, &e), 0);
    assert_int_equal(exchange_add(x, &q, &e), 0);
    /* Freed with requests still queued: no leak (ASan), results untouched. */
    exchange_free(x);
    exchange_free(NULL);
}

/* A token URL curl cannot use: nothing is sent, the provider's config is wrong. */
static void test_run_bad_url(void **st)
{
    (void)st;
    err_t e = {0};
    exchange_t *x = exchange_new(2, 1000, 2000, &e);
    assert_non_null(x);
    provider_t pv = g_stripe;
    snprintf(pv.token_url, sizeof pv.token_url, "gopher://example.invalid/token");
    exchange_req q = {.provider = &pv, .client_secret = "sk_secret_value", .code = "ac_1"};
    provider_t pv2 = g_stripe;
    snprintf(pv2.token_url, sizeof pv2.token_url, "http://[::1");
    exchange_req q2 = {.provider = &pv2, .client_secret = "sk_secret_value", .code = "ac_2"};
    assert_int_equal(exchange_add(x, &q, &e), 0);
    assert_int_equal(exchange_add(x, &q2, &e), 0);
    assert_int_equal(exchange_run(x), 2);
    assert_int_equal(q.result.cls, EXCH_MISCONFIGURED);
    assert_int_equal(q2.result.cls, EXCH_MISCONFIGURED);
    assert_int_equal(q.result.http_status, 0);
    exchange_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_table),
        cmocka_unit_test(test_transport_table),
        cmocka_unit_test(test_stripe_success_fields),
        cmocka_unit_test(test_oauth2_success_fields),
        cmocka_unit_test(test_oversized_and_garbage),
        cmocka_unit_test(test_class_names),
        cmocka_unit_test(test_new_and_add_checks),
        cmocka_unit_test(test_run_bad_url),
    };
    return cmocka_run_group_tests_name("unit_exchange", tests, setup, NULL);
}
