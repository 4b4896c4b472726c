/* Unit tests of worker/deauth: the pure classifier as a table over profile (stripe, sim,
 * oauth2) × HTTP status × body × Retry-After, hostile bodies, that `detail` never carries a
 * token, secret, account id or the provider's error_description, and deauth_run's local
 * decisions (no endpoint, no token, bad arguments, a URL curl cannot use) including that its
 * log line names only provider, class and status. Single-threaded; no network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/providers.h"
#include "worker/deauth.h"

/* Markers that must never reach detail or logs. */
#define TOKMARK  "ZZTOKZZ"
#define DESCMARK "ZZDESCZZ"
#define SECMARK  "ZZSECZZ"
#define ACCT     "acct_ZZACCTZZ"

static provider_t g_stripe, g_sim, g_oauth2, g_oauth2_post;
static char g_log[16384];
static size_t g_log_len;

static void on_log(const char *line, void *ud)
{
    (void)ud;
    size_t n = strlen(line);
    if (g_log_len + n + 2 > sizeof g_log)
        return;
    memcpy(g_log + g_log_len, line, n);
    g_log_len += n;
    g_log[g_log_len++] = '\n';
    g_log[g_log_len] = '\0';
}

static int setup(void **st)
{
    (void)st;
    memset(&g_stripe, 0, sizeof g_stripe);
    snprintf(g_stripe.name, sizeof g_stripe.name, "stripe");
    g_stripe.profile = PROVIDER_PROFILE_STRIPE;
    snprintf(g_stripe.token_url, sizeof g_stripe.token_url,
             "https://connect.stripe.com/oauth/token");
    snprintf(g_stripe.deauthorize_url, sizeof g_stripe.deauthorize_url,
             "https://connect.stripe.com/oauth/deauthorize");
    snprintf(g_stripe.client_id, sizeof g_stripe.client_id, "ca_123");
    g_stripe.token_auth = PROVIDER_AUTH_POST;
    g_stripe.code_ttl_s = 300;
    g_sim = g_stripe;
    snprintf(g_sim.name, sizeof g_sim.name, "sim");
    g_sim.profile = PROVIDER_PROFILE_SIM;
    g_oauth2 = g_stripe;
    snprintf(g_oauth2.name, sizeof g_oauth2.name, "google");
    g_oauth2.profile = PROVIDER_PROFILE_OAUTH2;
    g_oauth2.token_auth = PROVIDER_AUTH_BASIC;
    snprintf(g_oauth2.deauthorize_url, sizeof g_oauth2.deauthorize_url,
             "https://oauth2.example/revoke");
    g_oauth2_post = g_oauth2;
    g_oauth2_post.token_auth = PROVIDER_AUTH_POST;
    log_set_sink(on_log, NULL);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    log_set_sink(NULL, NULL);
    return 0;
}

static void assert_detail_clean(const deauth_result *r)
{
    assert_true(strlen(r->detail) > 0);
    assert_true(strlen(r->detail) < sizeof r->detail);
    assert_null(strstr(r->detail, TOKMARK));
    assert_null(strstr(r->detail, DESCMARK));
    assert_null(strstr(r->detail, SECMARK));
    assert_null(strstr(r->detail, "acct_"));
    assert_null(strstr(r->detail, "connected to"));
    for (const char *p = r->detail; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
}

/* ---- the HTTP table ------------------------------------------------------ */

enum { P_STRIPE = 1, P_SIM = 2, P_OAUTH2 = 4, P_ALL = 7, P_STRIPES = 3 };

typedef struct {
    int profiles; /* P_* mask: the row holds for each of these */
    long status;
    const char *body;
    const char *retry_after;
    deauth_class cls;
    int retry_after_s;  /* expected */
    const char *detail; /* expected detail, NULL: not checked */
} http_row;

#define ERRBODY(err, desc) "{\"error\":\"" err "\",\"error_description\":\"" desc "\"}"
#define NOT_CONNECTED                                                                              \
    "This application is not connected to stripe account " ACCT ", or that account does not "      \
    "exist. " DESCMARK

static const http_row HTTP_ROWS[] = {
    /* 2xx → DONE, whatever the body (RFC 7009 §2.2: unknown tokens are 200 too) */
    {P_ALL, 200, "{\"stripe_user_id\":\"" ACCT "\"}", NULL, DEAUTH_DONE, 0, "http 200"},
    {P_ALL, 200, "", NULL, DEAUTH_DONE, 0, "http 200"},
    {P_ALL, 204, "", NULL, DEAUTH_DONE, 0, "http 204"},
    {P_ALL, 200, ERRBODY("invalid_client", DESCMARK), NULL, DEAUTH_DONE, 0, "http 200"},
    {P_ALL, 200, "<html>" TOKMARK, NULL, DEAUTH_DONE, 0, "http 200"},
    /* Stripe: invalid_client "not connected" → DONE (already disconnected) */
    {P_STRIPES, 401, ERRBODY("invalid_client", NOT_CONNECTED), NULL, DEAUTH_DONE, 0,
     "http 401 invalid_client (not connected)"},
    {P_STRIPES, 400, ERRBODY("invalid_client", NOT_CONNECTED), NULL, DEAUTH_DONE, 0,
     "http 400 invalid_client (not connected)"},
    {P_STRIPES, 401, ERRBODY("invalid_client", "application NOT CONNECTED " DESCMARK), NULL,
     DEAUTH_DONE, 0, NULL},
    {P_STRIPES, 401, ERRBODY("invalid_client", "Not Connected"), NULL, DEAUTH_DONE, 0, NULL},
    /* ... but only for invalid_client on 400/401 */
    {P_STRIPES, 403, ERRBODY("invalid_client", NOT_CONNECTED), NULL, DEAUTH_MISCONFIGURED, 0,
     "http 403 invalid_client"},
    {P_STRIPES, 400, ERRBODY("invalid_request", NOT_CONNECTED), NULL, DEAUTH_FAILED, 0,
     "http 400 invalid_request"},
    {P_STRIPES, 401, "{\"error\":\"invalid_client\",\"error_description\":7}", NULL,
     DEAUTH_MISCONFIGURED, 0, NULL},
    {P_STRIPES, 401, "{\"error\":\"invalid_client\",\"not connected\":\"x\"}", NULL,
     DEAUTH_MISCONFIGURED, 0, NULL},
    {P_STRIPES, 401, "{\"error\":\"invalid_client\",\"error_description\":\"connected\"}", NULL,
     DEAUTH_MISCONFIGURED, 0, NULL},
    /* oauth2 has no "not connected" rule: invalid_client is always our credentials */
    {P_OAUTH2, 401, ERRBODY("invalid_client", NOT_CONNECTED), NULL, DEAUTH_MISCONFIGURED, 0,
     "http 401 invalid_client"},
    /* other invalid_client → MISCONFIGURED */
    {P_ALL, 401, ERRBODY("invalid_client", "Invalid client credentials. " DESCMARK), NULL,
     DEAUTH_MISCONFIGURED, 0, "http 401 invalid_client"},
    {P_ALL, 400, ERRBODY("invalid_client", DESCMARK), NULL, DEAUTH_MISCONFIGURED, 0,
     "http 400 invalid_client"},
    {P_ALL, 401, "{\"error\":\"invalid_client\"}", NULL, DEAUTH_MISCONFIGURED, 0, NULL},
    {P_ALL, 401, ERRBODY("incorrect_client_credentials", DESCMARK), NULL, DEAUTH_MISCONFIGURED, 0,
     "http 401 incorrect_client_credentials"},
    /* invalid_token: oauth2 → DONE (token already unusable, Google's answer); Stripe: FAILED */
    {P_OAUTH2, 400, ERRBODY("invalid_token", "Token expired or revoked " DESCMARK), NULL,
     DEAUTH_DONE, 0, "http 400 invalid_token (token already invalid)"},
    {P_STRIPES, 400, ERRBODY("invalid_token", DESCMARK), NULL, DEAUTH_FAILED, 0,
     "http 400 invalid_token"},
    /* other errors → FAILED */
    {P_ALL, 400, ERRBODY("invalid_request", "Missing required param: x. " DESCMARK), NULL,
     DEAUTH_FAILED, 0, "http 400 invalid_request"},
    {P_ALL, 400, ERRBODY("unsupported_token_type", DESCMARK), NULL, DEAUTH_FAILED, 0,
     "http 400 unsupported_token_type"},
    {P_ALL, 400, ERRBODY("unauthorized_client", DESCMARK), NULL, DEAUTH_FAILED, 0, NULL},
    {P_ALL, 400, ERRBODY("invalid_grant", DESCMARK), NULL, DEAUTH_FAILED, 0, NULL},
    {P_ALL, 403, ERRBODY("access_denied", DESCMARK), NULL, DEAUTH_FAILED, 0, NULL},
    {P_ALL, 400, ERRBODY("made_up_" TOKMARK, DESCMARK), NULL, DEAUTH_FAILED, 0,
     "http 400 unrecognised error"},
    {P_ALL, 401, ERRBODY("made_up", DESCMARK), NULL, DEAUTH_MISCONFIGURED, 0,
     "http 401 unrecognised error"},
    /* provider-side trouble spelled as an error code → RETRY */
    {P_ALL, 400, ERRBODY("server_error", DESCMARK), NULL, DEAUTH_RETRY, 0, NULL},
    {P_ALL, 400, ERRBODY("temporarily_unavailable", DESCMARK), NULL, DEAUTH_RETRY, 0, NULL},
    /* 4xx we cannot parse */
    {P_ALL, 400, "{\"error\":\"has space " DESCMARK "\"}", NULL, DEAUTH_FAILED, 0,
     "http 400 unparseable error"},
    {P_ALL, 400, "{\"error\":{\"type\":\"invalid_request_error\"}}", NULL, DEAUTH_FAILED, 0, NULL},
    {P_ALL, 400, "[\"invalid_client\"]", NULL, DEAUTH_FAILED, 0, NULL},
    {P_ALL, 400, "<html>" DESCMARK "</html>", NULL, DEAUTH_FAILED, 0, "http 400 unparseable error"},
    {P_ALL, 403, "Forbidden", NULL, DEAUTH_FAILED, 0, "http 403 unparseable error"},
    {P_ALL, 422, "{}", NULL, DEAUTH_FAILED, 0, NULL},
    {P_ALL, 401, "", NULL, DEAUTH_MISCONFIGURED, 0, "http 401 unparseable error"},
    {P_ALL, 404, "{\"error\":{\"message\":\"Unrecognized request URL\"}}", NULL,
     DEAUTH_MISCONFIGURED, 0, "http 404 (check deauthorize_url)"},
    {P_ALL, 405, "", NULL, DEAUTH_MISCONFIGURED, 0, "http 405 (check deauthorize_url)"},
    /* 3xx: never followed; the configured URL is wrong */
    {P_ALL, 301, "", NULL, DEAUTH_MISCONFIGURED, 0, "http 301 redirect (check deauthorize_url)"},
    {P_ALL, 302, "{}", NULL, DEAUTH_MISCONFIGURED, 0, NULL},
    /* 408, 429, 5xx → RETRY, with Retry-After (429: at least 1, cap 3600) */
    {P_ALL, 408, "", NULL, DEAUTH_RETRY, 0, "http 408"},
    {P_ALL, 429, ERRBODY("rate_limit", DESCMARK), "7", DEAUTH_RETRY, 7, "http 429 retry-after 7"},
    {P_ALL, 429, "", NULL, DEAUTH_RETRY, 1, "http 429 retry-after 1"},
    {P_ALL, 429, "", "0", DEAUTH_RETRY, 1, NULL},
    {P_ALL, 429, "", " 120 ", DEAUTH_RETRY, 120, NULL},
    {P_ALL, 429, "", "99999", DEAUTH_RETRY, 3600, NULL},
    {P_ALL, 429, "", "99999999999999", DEAUTH_RETRY, 1, NULL},
    {P_ALL, 429, "", "Wed, 21 Oct 2015 07:28:00 GMT", DEAUTH_RETRY, 1, NULL},
    {P_ALL, 500, ERRBODY("invalid_client", DESCMARK), NULL, DEAUTH_RETRY, 0, "http 500"},
    {P_ALL, 502, "<html>bad gateway</html>", NULL, DEAUTH_RETRY, 0, "http 502"},
    {P_ALL, 503, "", "30", DEAUTH_RETRY, 30, "http 503"},
    /* statuses that are not a final HTTP answer → RETRY */
    {P_ALL, 0, "", NULL, DEAUTH_RETRY, 0, "http 0 unexpected status"},
    {P_ALL, 100, "", NULL, DEAUTH_RETRY, 0, NULL},
    {P_ALL, 700, "", NULL, DEAUTH_RETRY, 0, NULL},
    {P_ALL, -1, "", NULL, DEAUTH_RETRY, 0, NULL},
};

static void check_row(const provider_t *pv, size_t i, const http_row *row)
{
    deauth_result r;
    memset(&r, 0x5a, sizeof r); /* the classifier must reset everything */
    deauth_classify_http(pv, row->status, row->body, strlen(row->body), row->retry_after, &r);
    if (r.cls != row->cls)
        fail_msg("row %zu %s (http %ld %.50s): class %s, want %s", i, pv->name, row->status,
                 row->body, deauth_class_name(r.cls), deauth_class_name(row->cls));
    assert_int_equal(r.http_status, row->status);
    assert_int_equal(r.retry_after_s, row->retry_after_s);
    if (row->detail && strcmp(r.detail, row->detail) != 0)
        fail_msg("row %zu %s: detail \"%s\", want \"%s\"", i, pv->name, r.detail, row->detail);
    assert_detail_clean(&r);
}

static void test_http_table(void **st)
{
    (void)st;
    size_t checked = 0;
    for (size_t i = 0; i < sizeof HTTP_ROWS / sizeof HTTP_ROWS[0]; i++) {
        const http_row *row = &HTTP_ROWS[i];
        if (row->profiles & P_STRIPE) {
            check_row(&g_stripe, i, row);
            checked++;
        }
        if (row->profiles & P_SIM) {
            check_row(&g_sim, i, row);
            checked++;
        }
        if (row->profiles & P_OAUTH2) {
            check_row(&g_oauth2, i, row);
            check_row(&g_oauth2_post, i, row);
            checked += 2;
        }
    }
    assert_true(checked > 150);
}

/* The exact text the simulator (and Stripe) answers for an unknown account. */
static void test_stripe_not_connected_exact(void **st)
{
    (void)st;
    static const char body[] =
        "{\"error\":\"invalid_client\",\"error_description\":\"This application is not "
        "connected to stripe account acct_1AbCdEf, or that account does not exist.\"}";
    deauth_result r;
    deauth_classify_http(&g_stripe, 401, body, strlen(body), NULL, &r);
    assert_int_equal(r.cls, DEAUTH_DONE);
    assert_null(strstr(r.detail, "acct_1AbCdEf"));
    deauth_classify_http(NULL, 401, body, strlen(body), NULL, &r); /* no profile: not Stripe */
    assert_int_equal(r.cls, DEAUTH_MISCONFIGURED);
}

static void test_hostile_bodies(void **st)
{
    (void)st;
    deauth_result r;
    /* NULL body with a length, a NUL inside the JSON, deep nesting, an oversized body. */
    deauth_classify_http(&g_stripe, 401, NULL, 100, NULL, &r);
    assert_int_equal(r.cls, DEAUTH_MISCONFIGURED);
    static const char nul[] = "{\"error\":\"invalid_client\",\"error_description\":\"not "
                              "connected\0\"}";
    deauth_classify_http(&g_stripe, 401, nul, sizeof nul - 1, NULL, &r);
    assert_int_equal(r.cls, DEAUTH_MISCONFIGURED);
    assert_string_equal(r.detail, "http 401 unparseable error");
    char *deep = malloc(20001);
    assert_non_null(deep);
    memset(deep, '[', 10000);
    memset(deep + 10000, ']', 10000);
    deep[20000] = '\0';
    deauth_classify_http(&g_oauth2, 400, deep, 20000, NULL, &r);
    assert_int_equal(r.cls, DEAUTH_FAILED);
    free(deep);
    size_t big = DEAUTH_BODY_MAX + 10;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    snprintf(huge, big + 1, "%s", ERRBODY("invalid_client", NOT_CONNECTED));
    size_t used = strlen(huge);
    memset(huge + used, ' ', big - used);
    huge[big] = '\0';
    deauth_classify_http(&g_stripe, 401, huge, big, NULL, &r); /* too long: not parsed */
    assert_int_equal(r.cls, DEAUTH_MISCONFIGURED);
    deauth_classify_http(&g_stripe, 401, huge, DEAUTH_BODY_MAX, NULL, &r);
    assert_int_equal(r.cls, DEAUTH_DONE);
    free(huge);
    /* Invalid UTF-8 and control bytes in the description. */
    static const char ctl[] =
        "{\"error\":\"invalid_client\",\"error_description\":\"\xff\x01 not connected\"}";
    deauth_classify_http(&g_sim, 401, ctl, sizeof ctl - 1, NULL, &r);
    assert_int_equal(r.cls, DEAUTH_DONE);
    assert_detail_clean(&r);
}

static void test_class_names(void **st)
{
    (void)st;
    assert_string_equal(deauth_class_name(DEAUTH_DONE), "done");
    assert_string_equal(deauth_class_name(DEAUTH_RETRY), "retry");
    assert_string_equal(deauth_class_name(DEAUTH_MISCONFIGURED), "misconfigured");
    assert_string_equal(deauth_class_name(DEAUTH_FAILED), "failed");
    assert_string_equal(deauth_class_name((deauth_class)42), "?");
}

/* ---- deauth_run without a network --------------------------------------- */

static void assert_log_clean(void)
{
    assert_null(strstr(g_log, TOKMARK));
    assert_null(strstr(g_log, SECMARK));
    assert_null(strstr(g_log, "ZZACCTZZ"));
    assert_null(strstr(g_log, DESCMARK));
}

static void test_run_no_endpoint(void **st)
{
    (void)st;
    err_t e = {0};
    deauth_result r;
    g_log_len = 0;
    g_log[0] = '\0';
    provider_t pv = g_oauth2;
    pv.deauthorize_url[0] = '\0';
    assert_int_equal(
        deauth_run(&pv, "sk_" SECMARK, NULL, "at_" TOKMARK, "rt_" TOKMARK, 1000, &r, &e), 0);
    assert_int_equal(r.cls, DEAUTH_DONE);
    assert_string_equal(r.detail, "no deauthorize endpoint configured");
    assert_int_equal(r.http_status, 0);

    pv = g_stripe;
    pv.deauthorize_url[0] = '\0';
    assert_int_equal(deauth_run(&pv, "sk_" SECMARK, ACCT, NULL, NULL, 1000, &r, &e), 0);
    assert_int_equal(r.cls, DEAUTH_MISCONFIGURED);
    assert_string_equal(r.detail, "no deauthorize_url configured");
    pv = g_sim;
    pv.deauthorize_url[0] = '\0';
    assert_int_equal(deauth_run(&pv, "sk_" SECMARK, ACCT, NULL, NULL, 1000, &r, &e), 0);
    assert_int_equal(r.cls, DEAUTH_MISCONFIGURED);

    /* One log line per decision, with provider, class and status only. */
    assert_non_null(strstr(g_log, "provider_deauthorize"));
    assert_non_null(strstr(g_log, "misconfigured"));
    assert_non_null(strstr(g_log, "google"));
    assert_log_clean();
}

static void test_run_argument_checks(void **st)
{
    (void)st;
    err_t e = {0};
    deauth_result r;
    g_log_len = 0;
    g_log[0] = '\0';
    assert_int_equal(deauth_run(NULL, "sk", ACCT, NULL, NULL, 1000, &r, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_int_equal(r.cls, DEAUTH_FAILED);
    /* Stripe needs the account id. */
    assert_int_equal(deauth_run(&g_stripe, "sk_" SECMARK, NULL, NULL, NULL, 1000, &r, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_null(strstr(e.msg, SECMARK));
    assert_int_equal(deauth_run(&g_sim, "sk_" SECMARK, "", NULL, NULL, 1000, &r, &e), -1);
    /* Timeouts out of range. */
    assert_int_equal(deauth_run(&g_stripe, "sk_" SECMARK, ACCT, NULL, NULL, 0, &r, &e), -1);
    assert_int_equal(
        deauth_run(&g_stripe, "sk_" SECMARK, ACCT, NULL, NULL, DEAUTH_TIMEOUT_MAX_MS + 1, &r, &e),
        -1);
    /* NULL out is tolerated. */
    assert_int_equal(deauth_run(NULL, NULL, NULL, NULL, NULL, 1000, NULL, &e), -1);
    /* A token that is too long is refused, not sent, not echoed. */
    char *longtok = malloc(DEAUTH_FIELD_MAX + 2);
    assert_non_null(longtok);
    memset(longtok, 'Z', DEAUTH_FIELD_MAX + 1);
    longtok[DEAUTH_FIELD_MAX + 1] = '\0';
    assert_int_equal(deauth_run(&g_oauth2, "sk_" SECMARK, NULL, NULL, longtok, 1000, &r, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_null(strstr(e.msg, "ZZZ"));
    free(longtok);
    /* oauth2 without any token: nothing to revoke, nothing sent. */
    assert_int_equal(deauth_run(&g_oauth2, "sk_" SECMARK, NULL, "", NULL, 1000, &r, &e), 0);
    assert_int_equal(r.cls, DEAUTH_DONE);
    assert_string_equal(r.detail, "no token held: nothing to revoke");
    /* A missing client secret or client_id is the operator's to fix. */
    assert_int_equal(deauth_run(&g_stripe, "", ACCT, NULL, NULL, 1000, &r, &e), 0);
    assert_int_equal(r.cls, DEAUTH_MISCONFIGURED);
    assert_int_equal(deauth_run(&g_oauth2, NULL, NULL, "at_" TOKMARK, NULL, 1000, &r, &e), 0);
    assert_int_equal(r.cls, DEAUTH_MISCONFIGURED);
    provider_t pv = g_stripe;
    pv.client_id[0] = '\0';
    assert_int_equal(deauth_run(&pv, "sk_" SECMARK, ACCT, NULL, NULL, 1000, &r, &e), 0);
    assert_int_equal(r.cls, DEAUTH_MISCONFIGURED);
    assert_string_equal(r.detail, "no client_id configured");
    assert_log_clean();
}

/* A deauthorize URL curl cannot use: nothing is sent, the configuration is wrong. */
static void test_run_bad_url(void **st)
{
    (void)st;
    err_t e = {0};
    deauth_result r;
    g_log_len = 0;
    g_log[0] = '\0';
    provider_t pv = g_stripe;
    snprintf(pv.deauthorize_url, sizeof pv.deauthorize_url, "gopher://example.invalid/deauth");
    assert_int_equal(deauth_run(&pv, "sk_" SECMARK, ACCT, NULL, NULL, 2000, &r, &e), 0);
    assert_int_equal(r.cls, DEAUTH_MISCONFIGURED);
    assert_int_equal(r.http_status, 0);
    assert_detail_clean(&r);
    pv = g_oauth2;
    snprintf(pv.deauthorize_url, sizeof pv.deauthorize_url, "http://[::1");
    assert_int_equal(
        deauth_run(&pv, "sk_" SECMARK, NULL, "at_" TOKMARK, "rt_" TOKMARK, 2000, &r, &e), 0);
    assert_int_equal(r.cls, DEAUTH_MISCONFIGURED);
    assert_detail_clean(&r);
    assert_non_null(strstr(g_log, "\"http_status\":\"0\""));
    assert_log_clean();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_table),      cmocka_unit_test(test_stripe_not_connected_exact),
        cmocka_unit_test(test_hostile_bodies),  cmocka_unit_test(test_class_names),
        cmocka_unit_test(test_run_no_endpoint), cmocka_unit_test(test_run_argument_checks),
        cmocka_unit_test(test_run_bad_url),
    };
    return cmocka_run_group_tests_name("unit_deauth", tests, setup, teardown);
}
