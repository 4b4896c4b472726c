/*
 * Integration test of oauthq-provider-sim over real HTTP (SPEC §7).
 *
 * Spawns $OAUTHQ_BUILD/oauthq-provider-sim (default build/) on free loopback
 * ports with a temporary secret file and drives it with libcurl: authorize,
 * exchange, reuse revocation, unknown code, client authentication (body and
 * Basic), PKCE, expiry, every sim_fault, deauthorize, --latency-ms, limits,
 * the refresh_token grant (rotation, family revocation on reuse, a refresh
 * fault, per-refresh-token stats, --access-ttl, --no-refresh-rotation),
 * argument errors, clean shutdown, and that neither the secret nor any code
 * reaches the simulator's log. Every simulator started here is stopped by pid
 * in the group teardown, also when a test failed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/evp.h>

#include "common/crypto.h"
#include "tests/support/testfix.h"
#include "tests/support/testhttp.h"
#include "tests/support/testproc.h"

#define CID       "ca_itest"
#define SECRET    "sk_itest_secret_value"
#define REDIR     "http://127.0.0.1:9/cb"
#define REDIR_E   "http%%3A%%2F%%2F127.0.0.1%%3A9%%2Fcb" /* printf format */
#define REDIRQ    "http://localhost/cb?x=1"
#define REDIRQ_E  "http%%3A%%2F%%2Flocalhost%%2Fcb%%3Fx%%3D1" /* printf format */
#define MAX_CODES 128

static const char REUSE[] = "This authorization code has already been used. All tokens issued "
                            "with this code have been revoked.";
/* RFC 7636 Appendix B. */
static const char RFC_VERIFIER[] = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
static const char RFC_CHALLENGE[] = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

static char g_dir[256];
static char g_secret_path[300];
static char g_bin[512];
static testfix_sim g_main;
static char *g_codes[MAX_CODES];
static size_t g_ncodes;

/* Every simulator here accepts both redirect URIs. */
static const char *const SIM_ARGS[] = {"--redirect-uri", REDIR, "--redirect-uri", REDIRQ, NULL};

/* Start a simulator with the standard arguments plus extra (NULL-terminated). */
static int sim_start(testfix_sim *s, const char *name, const char *const *extra)
{
    return testfix_sim_start(s, g_dir, name, CID, g_secret_path, SIM_ARGS, extra);
}

static void remember_code(const char *code)
{
    if (g_ncodes < MAX_CODES)
        g_codes[g_ncodes++] = strdup(code);
}

static char *authorize(const testfix_sim *s, const char *extra)
{
    char url[1024], tail[512];
    snprintf(tail, sizeof tail, "&state=st1%s", extra ? extra : "");
    assert_int_equal(testfix_authorize_url(url, sizeof url, s->base, CID, REDIR, tail), 0);
    testhttp_resp r;
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 302);
    assert_string_equal(r.cache_control, "no-store");
    assert_int_equal(strncmp(r.location, REDIR "?code=ac_", strlen(REDIR "?code=ac_")), 0);
    char *code = testfix_url_param(r.location, "code");
    char *state = testfix_url_param(r.location, "state");
    assert_non_null(code);
    assert_string_equal(state, "st1");
    free(state);
    testhttp_resp_free(&r);
    remember_code(code);
    return code;
}

static int exchange_t(const testfix_sim *s, const char *code, const char *extra,
                      const char *const *headers, long timeout_ms, testhttp_resp *r)
{
    char url[128], body[1024];
    snprintf(url, sizeof url, "%s/oauth/token", s->base);
    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s%s", code,
             extra ? extra : "&client_id=" CID "&client_secret=" SECRET);
    return testhttp_do_timeout("POST", url, headers, body, timeout_ms, r);
}

static void exchange(const testfix_sim *s, const char *code, const char *extra, testhttp_resp *r)
{
    assert_int_equal(exchange_t(s, code, extra, NULL, TESTHTTP_TIMEOUT_MS, r), 0);
}

static void assert_json_error(const testhttp_resp *r, long status, const char *error,
                              const char *desc)
{
    assert_int_equal(r->status, status);
    assert_string_equal(r->content_type, "application/json");
    assert_string_equal(r->cache_control, "no-store");
    cJSON *j = cJSON_Parse(r->body);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "error")->valuestring, error);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(j, "error_description")));
    if (desc)
        assert_string_equal(cJSON_GetObjectItem(j, "error_description")->valuestring, desc);
    cJSON_Delete(j);
}

static cJSON *stats(const testfix_sim *s)
{
    return testfix_sim_stats(s->base);
}

/* ---- setup ------------------------------------------------------------- */

static int group_setup(void **st)
{
    (void)st;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (testfix_bin(g_bin, sizeof g_bin, "oauthq-provider-sim") < 0 ||
        testfix_tmpdir(g_dir, sizeof g_dir, "sim") < 0 ||
        testfix_secret(g_dir, "secret", SECRET, g_secret_path, sizeof g_secret_path) < 0)
        return -1;
    return sim_start(&g_main, "main", NULL);
}

static int group_teardown(void **st)
{
    (void)st;
    testfix_sim_stop_all();
    for (size_t i = 0; i < g_ncodes; i++)
        free(g_codes[i]);
    g_ncodes = 0;
    testfix_tmpdir_remove(g_dir, "itest_sim_http");
    curl_global_cleanup();
    return 0;
}

/* ---- tests -------------------------------------------------------------- */

static void test_authorize_redirects(void **st)
{
    (void)st;
    char *code = authorize(&g_main, NULL);
    assert_true(strlen(code) >= 27);
    free(code);

    char url[512];
    testhttp_resp r;
    snprintf(url, sizeof url,
             "%s/oauth/authorize?response_type=code&client_id=" CID "&redirect_uri=" REDIRQ_E
             "&state=a%%2Bb%%20c",
             g_main.base);
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 302);
    assert_int_equal(strncmp(r.location, REDIRQ "&code=ac_", strlen(REDIRQ "&code=ac_")), 0);
    assert_non_null(strstr(r.location, "&state=a%2Bb%20c"));
    char *c2 = testfix_url_param(r.location, "code");
    remember_code(c2);
    free(c2);
    testhttp_resp_free(&r);

    snprintf(url, sizeof url,
             "%s/oauth/authorize?response_type=code&client_id=" CID
             "&redirect_uri=http%%3A%%2F%%2Fevil.example%%2Fcb&state=s",
             g_main.base);
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_json_error(&r, 400, "invalid_request", NULL);
    assert_string_equal(r.location, "");
    testhttp_resp_free(&r);

    snprintf(url, sizeof url,
             "%s/oauth/authorize?response_type=code&client_id=ca_unknown&redirect_uri=" REDIR_E,
             g_main.base);
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_json_error(&r, 400, "invalid_client", NULL);
    testhttp_resp_free(&r);

    snprintf(url, sizeof url,
             "%s/oauth/authorize?response_type=code&client_id=" CID "&redirect_uri=" REDIR_E
             "&code_challenge=%s&code_challenge_method=plain",
             g_main.base, RFC_CHALLENGE);
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_json_error(&r, 400, "invalid_request", NULL);
    testhttp_resp_free(&r);
}

static void test_exchange_then_reuse_revokes(void **st)
{
    (void)st;
    testfix_sim s;
    assert_int_equal(sim_start(&s, "reuse", NULL), 0);
    char *code = authorize(&s, NULL);
    testhttp_resp r;
    exchange(&s, code, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "application/json");
    assert_string_equal(r.cache_control, "no-store");
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    assert_int_equal(strncmp(cJSON_GetObjectItem(j, "access_token")->valuestring, "sk_test_", 8),
                     0);
    assert_int_equal(strncmp(cJSON_GetObjectItem(j, "refresh_token")->valuestring, "rt_", 3), 0);
    assert_string_equal(cJSON_GetObjectItem(j, "token_type")->valuestring, "bearer");
    assert_string_equal(cJSON_GetObjectItem(j, "scope")->valuestring, "read_write");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "livemode")));
    assert_int_equal(strncmp(cJSON_GetObjectItem(j, "stripe_user_id")->valuestring, "acct_", 5), 0);
    assert_int_equal(
        strncmp(cJSON_GetObjectItem(j, "stripe_publishable_key")->valuestring, "pk_test_", 8), 0);
    cJSON_Delete(j);
    testhttp_resp_free(&r);

    cJSON *stt = stats(&s);
    assert_int_equal(testfix_sim_grants(stt, "active"), 1);
    assert_int_equal(testfix_sim_grants(stt, "revoked"), 0);
    cJSON_Delete(stt);

    exchange(&s, code, NULL, &r);
    assert_json_error(&r, 400, "invalid_grant", REUSE);
    testhttp_resp_free(&r);

    stt = stats(&s);
    assert_int_equal((long)cJSON_GetObjectItem(stt, "token_requests")->valuedouble, 2);
    assert_int_equal(testfix_sim_grants(stt, "active"), 0);
    assert_int_equal(testfix_sim_grants(stt, "revoked"), 1);
    assert_int_equal(testfix_sim_code_num(stt, code, "token_requests"), 2);
    assert_int_equal(testfix_sim_code_num(stt, code, "last_status"), 400);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(stt, "codes")), 1);
    cJSON_Delete(stt);
    free(code);
    assert_int_equal(testfix_sim_stop(&s), 0); /* SIGTERM → clean exit 0 */
}

static void test_unknown_code(void **st)
{
    (void)st;
    testhttp_resp r;
    exchange(&g_main, "ac_NoSuchCode0000000000000000000", NULL, &r);
    assert_json_error(&r, 400, "invalid_grant", "Authorization code provided does not exist.");
    assert_null(strstr(r.body, "NoSuchCode"));
    testhttp_resp_free(&r);
    cJSON *stt = stats(&g_main);
    assert_int_equal(
        testfix_sim_code_num(stt, "ac_NoSuchCode0000000000000000000", "token_requests"), 1);
    cJSON_Delete(stt);
}

static void test_client_auth(void **st)
{
    (void)st;
    char *code = authorize(&g_main, NULL);
    testhttp_resp r;
    exchange(&g_main, code, "&client_id=" CID "&client_secret=wrong_secret", &r);
    assert_json_error(&r, 401, "invalid_client", NULL);
    assert_null(strstr(r.body, "wrong_secret"));
    testhttp_resp_free(&r);

    const char *bad[] = {"Authorization: Basic Y2FfaXRlc3Q6bm9wZQ==", NULL}; /* ca_itest:nope */
    assert_int_equal(exchange_t(&g_main, code, "", bad, TESTHTTP_TIMEOUT_MS, &r), 0);
    assert_json_error(&r, 401, "invalid_client", NULL);
    assert_non_null(strstr(r.www_authenticate, "Basic"));
    testhttp_resp_free(&r);

    /* client_secret_basic, RFC 6749 §2.3.1 */
    unsigned char b64[128];
    EVP_EncodeBlock(b64, (const unsigned char *)CID ":" SECRET, (int)strlen(CID ":" SECRET));
    char hdr[200];
    snprintf(hdr, sizeof hdr, "Authorization: Basic %s", (const char *)b64);
    const char *good[] = {hdr, NULL};
    assert_int_equal(exchange_t(&g_main, code, "", good, TESTHTTP_TIMEOUT_MS, &r), 0);
    assert_int_equal(r.status, 200);
    testhttp_resp_free(&r);
    free(code);
}

static void test_pkce(void **st)
{
    (void)st;
    char extra[160], ok[128];
    snprintf(extra, sizeof extra, "&code_challenge=%s&code_challenge_method=S256", RFC_CHALLENGE);
    snprintf(ok, sizeof ok, "&client_secret=" SECRET "&code_verifier=%s", RFC_VERIFIER);
    char *code = authorize(&g_main, extra);
    testhttp_resp r;
    exchange(&g_main, code, NULL, &r); /* verifier missing */
    assert_json_error(&r, 400, "invalid_grant", NULL);
    testhttp_resp_free(&r);
    exchange(&g_main, code,
             "&client_secret=" SECRET "&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
             &r);
    assert_json_error(&r, 400, "invalid_grant", NULL);
    testhttp_resp_free(&r);
    exchange(&g_main, code, ok, &r); /* failures did not consume the code */
    assert_int_equal(r.status, 200);
    testhttp_resp_free(&r);
    free(code);
}

static void test_expiry(void **st)
{
    (void)st;
    testfix_sim s;
    const char *extra[] = {"--code-ttl", "1", NULL};
    assert_int_equal(sim_start(&s, "ttl", extra), 0);
    char *fresh = authorize(&s, NULL);
    char *old = authorize(&s, NULL);
    testhttp_resp r;
    exchange(&s, fresh, NULL, &r);
    assert_int_equal(r.status, 200);
    testhttp_resp_free(&r);
    struct timespec ts = {1, 200000000L};
    nanosleep(&ts, NULL);
    exchange(&s, old, NULL, &r);
    assert_json_error(&r, 400, "invalid_grant", "This authorization code has expired.");
    testhttp_resp_free(&r);
    free(fresh);
    free(old);
    assert_int_equal(testfix_sim_stop(&s), 0);
}

static void test_fault_deny(void **st)
{
    (void)st;
    char url[512];
    snprintf(url, sizeof url,
             "%s/oauth/authorize?response_type=code&client_id=" CID "&redirect_uri=" REDIR_E
             "&state=st9&sim_fault=deny",
             g_main.base);
    testhttp_resp r;
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 302);
    assert_string_equal(r.location, REDIR "?error=access_denied&error_description="
                                          "The+user+denied+your+request&state=st9");
    testhttp_resp_free(&r);
}

static void test_fault_latency(void **st)
{
    (void)st;
    char *code = authorize(&g_main, "&sim_fault=latency:300");
    testhttp_resp r;
    exchange(&g_main, code, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.elapsed_ms >= 290);
    testhttp_resp_free(&r);
    free(code);
}

static void test_fault_429(void **st)
{
    (void)st;
    char *code = authorize(&g_main, "&sim_fault=429");
    testhttp_resp r;
    exchange(&g_main, code, NULL, &r);
    assert_json_error(&r, 429, "rate_limit", NULL);
    assert_string_equal(r.retry_after, "1");
    testhttp_resp_free(&r);
    exchange(&g_main, code, NULL, &r);
    assert_int_equal(r.status, 200);
    testhttp_resp_free(&r);
    cJSON *stt = stats(&g_main);
    assert_int_equal(testfix_sim_code_num(stt, code, "token_requests"), 2);
    assert_int_equal(testfix_sim_code_num(stt, code, "last_status"), 200);
    cJSON_Delete(stt);
    free(code);
}

static void test_fault_500_before(void **st)
{
    (void)st;
    char *code = authorize(&g_main, "&sim_fault=500_before");
    testhttp_resp r;
    exchange(&g_main, code, NULL, &r);
    assert_json_error(&r, 500, "api_error", NULL);
    testhttp_resp_free(&r);
    exchange(&g_main, code, NULL, &r);
    assert_int_equal(r.status, 200);
    testhttp_resp_free(&r);
    free(code);
}

static void test_fault_500_after(void **st)
{
    (void)st;
    cJSON *before = stats(&g_main);
    char *code = authorize(&g_main, "&sim_fault=500_after");
    testhttp_resp r;
    exchange(&g_main, code, NULL, &r);
    assert_json_error(&r, 500, "api_error", NULL);
    testhttp_resp_free(&r);
    cJSON *mid = stats(&g_main);
    assert_int_equal(testfix_sim_grants(mid, "active"), testfix_sim_grants(before, "active") + 1);
    exchange(&g_main, code, NULL, &r);
    assert_json_error(&r, 400, "invalid_grant", REUSE);
    testhttp_resp_free(&r);
    cJSON *after = stats(&g_main);
    assert_int_equal(testfix_sim_grants(after, "active"), testfix_sim_grants(before, "active"));
    assert_int_equal(testfix_sim_grants(after, "revoked"),
                     testfix_sim_grants(before, "revoked") + 1);
    cJSON_Delete(before);
    cJSON_Delete(mid);
    cJSON_Delete(after);
    free(code);
}

static void test_fault_cut_after(void **st)
{
    (void)st;
    cJSON *before = stats(&g_main);
    char *code = authorize(&g_main, "&sim_fault=cut_after");
    testhttp_resp r;
    assert_int_equal(exchange_t(&g_main, code, NULL, NULL, 5000, &r), -1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.curl_code, CURLE_GOT_NOTHING);
    testhttp_resp_free(&r);
    cJSON *mid = stats(&g_main);
    assert_int_equal(testfix_sim_grants(mid, "active"), testfix_sim_grants(before, "active") + 1);
    assert_int_equal(testfix_sim_code_num(mid, code, "last_status"), 0);
    exchange(&g_main, code, NULL, &r);
    assert_json_error(&r, 400, "invalid_grant", REUSE);
    testhttp_resp_free(&r);
    cJSON *after = stats(&g_main);
    assert_int_equal(testfix_sim_grants(after, "active"), testfix_sim_grants(before, "active"));
    assert_int_equal(testfix_sim_grants(after, "revoked"),
                     testfix_sim_grants(before, "revoked") + 1);
    assert_int_equal(testfix_sim_code_num(after, code, "token_requests"), 2);
    cJSON_Delete(before);
    cJSON_Delete(mid);
    cJSON_Delete(after);
    free(code);
}

static void test_fault_hang(void **st)
{
    (void)st;
    char *code = authorize(&g_main, "&sim_fault=hang");
    testhttp_resp r;
    assert_int_equal(exchange_t(&g_main, code, NULL, NULL, 1000, &r), -1);
    assert_int_equal(r.curl_code, CURLE_OPERATION_TIMEDOUT);
    assert_true(r.elapsed_ms >= 900);
    testhttp_resp_free(&r);
    exchange(&g_main, code, NULL, &r); /* code unused */
    assert_int_equal(r.status, 200);
    testhttp_resp_free(&r);
    free(code);
}

static void test_deauthorize(void **st)
{
    (void)st;
    char *code = authorize(&g_main, NULL);
    testhttp_resp r;
    exchange(&g_main, code, NULL, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    char acct[64];
    snprintf(acct, sizeof acct, "%s", cJSON_GetObjectItem(j, "stripe_user_id")->valuestring);
    cJSON_Delete(j);
    testhttp_resp_free(&r);

    cJSON *before = stats(&g_main);
    char url[128], body[256];
    snprintf(url, sizeof url, "%s/oauth/deauthorize", g_main.base);
    snprintf(body, sizeof body, "client_id=" CID "&stripe_user_id=%s&client_secret=" SECRET, acct);
    assert_int_equal(testhttp_do("POST", url, NULL, body, &r), 0);
    assert_int_equal(r.status, 200);
    j = cJSON_Parse(r.body);
    assert_string_equal(cJSON_GetObjectItem(j, "stripe_user_id")->valuestring, acct);
    cJSON_Delete(j);
    testhttp_resp_free(&r);
    cJSON *after = stats(&g_main);
    assert_int_equal(testfix_sim_grants(after, "active"), testfix_sim_grants(before, "active") - 1);
    assert_int_equal(testfix_sim_grants(after, "deauthorized"),
                     testfix_sim_grants(before, "deauthorized") + 1);
    assert_int_equal(testhttp_do("POST", url, NULL, body, &r), 0);
    assert_json_error(&r, 401, "invalid_client", NULL);
    testhttp_resp_free(&r);
    cJSON_Delete(before);
    cJSON_Delete(after);
    free(code);
}

static void test_latency_flag(void **st)
{
    (void)st;
    testfix_sim s;
    const char *extra[] = {"--latency-ms", "200", NULL};
    assert_int_equal(sim_start(&s, "latency", extra), 0);
    char *code = authorize(&s, NULL);
    testhttp_resp r;
    exchange(&s, code, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.elapsed_ms >= 190);
    testhttp_resp_free(&r);
    free(code);
    assert_int_equal(testfix_sim_stop(&s), 0);
}

static void test_routes_and_limits(void **st)
{
    (void)st;
    char url[128];
    testhttp_resp r;
    snprintf(url, sizeof url, "%s/nope", g_main.base);
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_json_error(&r, 404, "not_found", NULL);
    testhttp_resp_free(&r);

    snprintf(url, sizeof url, "%s/oauth/token", g_main.base);
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_json_error(&r, 405, "method_not_allowed", NULL);
    assert_non_null(strstr(r.headers, "Allow: POST"));
    testhttp_resp_free(&r);

    size_t n = 20000;
    char *big = malloc(n + 1);
    memset(big, 'a', n);
    memcpy(big, "code=", 5);
    big[n] = '\0';
    assert_int_equal(testhttp_do("POST", url, NULL, big, &r), 0);
    assert_int_equal(r.status, 413);
    testhttp_resp_free(&r);
    free(big);

    const char *json[] = {"Content-Type: application/json", NULL};
    assert_int_equal(testhttp_do("POST", url, json, "{\"code\":\"x\"}", &r), 0);
    assert_json_error(&r, 400, "invalid_request", NULL);
    testhttp_resp_free(&r);
}

/* ---- refresh (SPEC §5b) ------------------------------------------------- */

static int refresh_t(const testfix_sim *s, const char *rt, long timeout_ms, testhttp_resp *r)
{
    char url[128], body[512];
    snprintf(url, sizeof url, "%s/oauth/token", s->base);
    snprintf(body, sizeof body,
             "grant_type=refresh_token&refresh_token=%s&client_id=" CID "&client_secret=" SECRET,
             rt);
    return testhttp_do_timeout("POST", url, NULL, body, timeout_ms, r);
}

/* The refresh token of a 200 token answer (malloc'd, remembered for the log scan). */
static char *rt_of(const testhttp_resp *r, long expires_in)
{
    assert_int_equal(r->status, 200);
    assert_string_equal(r->cache_control, "no-store");
    cJSON *j = cJSON_Parse(r->body);
    assert_non_null(j);
    const cJSON *ei = cJSON_GetObjectItem(j, "expires_in");
    if (expires_in > 0)
        assert_int_equal((long)ei->valuedouble, expires_in);
    else
        assert_null(ei);
    char *rt = strdup(cJSON_GetObjectItem(j, "refresh_token")->valuestring);
    remember_code(cJSON_GetObjectItem(j, "access_token")->valuestring);
    remember_code(rt);
    cJSON_Delete(j);
    return rt;
}

static char *connect_rt(const testfix_sim *s, const char *extra, long expires_in)
{
    char *code = authorize(s, extra);
    testhttp_resp r;
    exchange(s, code, NULL, &r);
    char *rt = rt_of(&r, expires_in);
    testhttp_resp_free(&r);
    free(code);
    return rt;
}

static long rt_requests(const cJSON *st, const char *rt)
{
    char hex[CRYPTO_SHA256_HEX];
    crypto_sha256_hex(rt, strlen(rt), hex);
    const cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "refresh_tokens"), hex);
    if (!e)
        return 0;
    assert_int_equal(cJSON_GetArraySize(e), 1);
    const cJSON *n = cJSON_GetObjectItem(e, "requests");
    assert_true(cJSON_IsNumber(n));
    return (long)n->valuedouble;
}

/* Rotation, then a lost answer (cut_after on the first refresh): the blind
 * re-send of the rotated-out token revokes the family, the newest token too. */
static void test_refresh_rotation_and_reuse(void **st)
{
    (void)st;
    cJSON *before = stats(&g_main);
    char *rt0 = connect_rt(&g_main, NULL, 0);
    testhttp_resp r;
    assert_int_equal(refresh_t(&g_main, rt0, TESTHTTP_TIMEOUT_MS, &r), 0);
    char *rt1 = rt_of(&r, 0);
    testhttp_resp_free(&r);
    assert_string_not_equal(rt0, rt1);
    assert_int_equal(refresh_t(&g_main, rt1, TESTHTTP_TIMEOUT_MS, &r), 0);
    char *rt2 = rt_of(&r, 0);
    testhttp_resp_free(&r);
    assert_int_equal(refresh_t(&g_main, rt1, TESTHTTP_TIMEOUT_MS, &r), 0); /* reuse */
    assert_json_error(&r, 400, "invalid_grant", NULL);
    testhttp_resp_free(&r);
    assert_int_equal(refresh_t(&g_main, rt2, TESTHTTP_TIMEOUT_MS, &r), 0);
    assert_json_error(&r, 400, "invalid_grant", "This refresh token has been revoked.");
    testhttp_resp_free(&r);
    cJSON *mid = stats(&g_main);
    assert_int_equal(testfix_sim_grants(mid, "revoked"), testfix_sim_grants(before, "revoked") + 1);
    assert_int_equal(rt_requests(mid, rt0), 1);
    assert_int_equal(rt_requests(mid, rt1), 2);
    assert_int_equal(rt_requests(mid, rt2), 1);

    char *rf = connect_rt(&g_main, "&sim_refresh_fault=cut_after", 0);
    assert_int_equal(refresh_t(&g_main, rf, 5000, &r), -1);
    assert_int_equal(r.curl_code, CURLE_GOT_NOTHING);
    testhttp_resp_free(&r);
    assert_int_equal(refresh_t(&g_main, rf, TESTHTTP_TIMEOUT_MS, &r), 0);
    assert_json_error(&r, 400, "invalid_grant", NULL);
    testhttp_resp_free(&r);
    cJSON *after = stats(&g_main);
    assert_int_equal(testfix_sim_grants(after, "revoked"),
                     testfix_sim_grants(before, "revoked") + 2);
    assert_int_equal(testfix_sim_grants(after, "active"), testfix_sim_grants(before, "active"));
    assert_int_equal(rt_requests(after, rf), 2);
    cJSON_Delete(before);
    cJSON_Delete(mid);
    cJSON_Delete(after);
    free(rt0);
    free(rt1);
    free(rt2);
    free(rf);
}

static void test_refresh_flags(void **st)
{
    (void)st;
    testfix_sim s;
    const char *extra[] = {"--access-ttl", "120", "--no-refresh-rotation", NULL};
    assert_int_equal(sim_start(&s, "norotation", extra), 0);
    char *rt = connect_rt(&s, NULL, 120);
    for (int i = 0; i < 3; i++) {
        testhttp_resp r;
        assert_int_equal(refresh_t(&s, rt, TESTHTTP_TIMEOUT_MS, &r), 0);
        char *again = rt_of(&r, 120);
        assert_string_equal(again, rt);
        free(again);
        testhttp_resp_free(&r);
    }
    cJSON *st2 = stats(&s);
    assert_int_equal(rt_requests(st2, rt), 3);
    assert_int_equal(testfix_sim_grants(st2, "revoked"), 0);
    assert_int_equal(testfix_sim_grants(st2, "active"), 1);
    cJSON_Delete(st2);
    free(rt);
    assert_int_equal(testfix_sim_stop(&s), 0);
}

static int run_status(const char *const *argv)
{
    pid_t pid = testfix_spawn(g_dir, "args.log", (char *const *)argv);
    assert_true(pid > 0);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_arguments(void **st)
{
    (void)st;
    const char *help[] = {g_bin, "--help", NULL};
    assert_int_equal(run_status(help), 0);
    const char *none[] = {g_bin, NULL};
    assert_int_equal(run_status(none), 2);
    const char *unknown[] = {g_bin, "--bogus", NULL};
    assert_int_equal(run_status(unknown), 2);
    const char *nosecret[] = {g_bin, "--listen", "127.0.0.1:0", "--client-id", CID, NULL};
    assert_int_equal(run_status(nosecret), 2);
    const char *missing_file[] = {g_bin,
                                  "--listen",
                                  "127.0.0.1:0",
                                  "--client-id",
                                  CID,
                                  "--client-secret-file",
                                  "/nonexistent/secret",
                                  NULL};
    assert_int_equal(run_status(missing_file), 2);
    const char *bad_ttl[] = {
        g_bin,         "--listen",   "127.0.0.1:0", "--client-id", CID, "--client-secret-file",
        g_secret_path, "--code-ttl", "0",           NULL};
    assert_int_equal(run_status(bad_ttl), 2);
    const char *bad_access_ttl[] = {
        g_bin,         "--listen",     "127.0.0.1:0", "--client-id", CID, "--client-secret-file",
        g_secret_path, "--access-ttl", "0",           NULL};
    assert_int_equal(run_status(bad_access_ttl), 2);
}

/* Last: nothing secret in the main simulator's log (G5). */
static void test_log_has_no_secrets(void **st)
{
    (void)st;
    FILE *f = fopen(g_main.log, "r");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "listening"));
    assert_non_null(strstr(buf, "code_sha256"));
    assert_null(strstr(buf, SECRET));
    for (size_t i = 0; i < g_ncodes; i++)
        assert_null(strstr(buf, g_codes[i]));
    assert_true(g_ncodes > 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authorize_redirects),
        cmocka_unit_test(test_exchange_then_reuse_revokes),
        cmocka_unit_test(test_unknown_code),
        cmocka_unit_test(test_client_auth),
        cmocka_unit_test(test_pkce),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_fault_deny),
        cmocka_unit_test(test_fault_latency),
        cmocka_unit_test(test_fault_429),
        cmocka_unit_test(test_fault_500_before),
        cmocka_unit_test(test_fault_500_after),
        cmocka_unit_test(test_fault_cut_after),
        cmocka_unit_test(test_fault_hang),
        cmocka_unit_test(test_deauthorize),
        cmocka_unit_test(test_latency_flag),
        cmocka_unit_test(test_routes_and_limits),
        cmocka_unit_test(test_refresh_rotation_and_reuse),
        cmocka_unit_test(test_refresh_flags),
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_log_has_no_secrets),
    };
    return cmocka_run_group_tests_name("sim_http", tests, group_setup, group_teardown);
}
