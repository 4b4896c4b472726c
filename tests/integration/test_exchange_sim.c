/*
 * Integration test of common/exchange over real HTTP against the provider
 * simulator (SPEC §3 G1, §7).
 *
 * Spawns $OAUTHQ_BUILD/oauthq-provider-sim (default build/) on free loopback
 * ports with a temporary secret file, gets codes from /oauth/authorize (with
 * sim_fault and PKCE as needed, never following the redirect) and exchanges
 * them through exchange_t, asserting the class of every outcome: success,
 * reuse, unknown code, wrong secret, Basic authentication (also with a secret
 * that needs RFC 6749 §2.3.1 encoding), redirect_uri for the oauth2 profile,
 * PKCE, 429, 500 before/after, cut after, hang, connection refused, latency
 * beyond the timeout, a mixed batch, the concurrency bound, and 40 concurrent
 * exchanges with one token request per code in the simulator's stats. Log
 * lines are captured and checked for codes, tokens and secrets at the end.
 * Every simulator started here is stopped by pid in the group teardown.
 * Single-threaded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "tests/support/testfix.h"
#include "tests/support/testhttp.h"
#include "common/exchange.h"

#define CID        "ca_itest"
#define SECRET     "sk_itest_secret_value"
#define ODD_SECRET "p@ss:w+rd/ x%&=y" /* needs form-urlencoding in Basic */
#define REDIR      "http://127.0.0.1:9/cb"
#define MAX_CODES  256
#define MAX_TOKENS 256
#define LOG_CAP    (4 * 1024 * 1024)
#define N_CONC     40

/* RFC 7636 Appendix B. */
static const char RFC_VERIFIER[] = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
static const char RFC_CHALLENGE[] = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

static char g_dir[256];
static char g_secret_path[300], g_odd_path[300];
static testfix_sim g_main;
static char *g_codes[MAX_CODES];
static size_t g_ncodes;
static char *g_tokens[MAX_TOKENS];
static size_t g_ntokens;

/* ---- helpers ------------------------------------------------------------ */

static const char *const SIM_ARGS[] = {"--redirect-uri", REDIR, NULL};

/* Start a simulator with secret file `secret_path` plus extra args (NULL-terminated). */
static int sim_start(testfix_sim *s, const char *name, const char *secret_path,
                     const char *const *extra)
{
    return testfix_sim_start(s, g_dir, name, CID, secret_path, SIM_ARGS, extra);
}

static void remember(char **arr, size_t *n, size_t max, const char *v)
{
    if (*n < max && v && *v)
        arr[(*n)++] = strdup(v);
}

/* A fresh code from the simulator's authorize endpoint (malloc'd). */
static char *authorize(const testfix_sim *s, const char *extra)
{
    char url[1024], tail[512];
    snprintf(tail, sizeof tail, "&state=x%s", extra ? extra : "");
    assert_int_equal(testfix_authorize_url(url, sizeof url, s->base, CID, REDIR, tail), 0);
    testhttp_resp r;
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 302);
    char *code = testfix_url_param(r.location, "code");
    assert_non_null(code);
    testhttp_resp_free(&r);
    remember(g_codes, &g_ncodes, MAX_CODES, code);
    return code;
}

static provider_t prov(const testfix_sim *s, provider_profile profile, provider_token_auth auth)
{
    provider_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "sim");
    p.profile = profile;
    snprintf(p.token_url, sizeof p.token_url, "%s/oauth/token", s ? s->base : "http://127.0.0.1:1");
    snprintf(p.client_id, sizeof p.client_id, CID);
    p.token_auth = auth;
    p.code_ttl_s = 300;
    return p;
}

/* One exchange through its own exchange_t; the result is copied to *out. */
static void exchange1(const provider_t *pv, const char *secret, const char *code,
                      const char *verifier, const char *redirect, int total_ms,
                      exchange_result *out)
{
    err_t e = {0};
    exchange_t *x = exchange_new(4, 2000, total_ms, &e);
    assert_non_null(x);
    exchange_req q = {.provider = pv,
                      .client_secret = secret,
                      .code = code,
                      .code_verifier = verifier,
                      .redirect_uri = redirect};
    assert_int_equal(exchange_add(x, &q, &e), 0);
    assert_int_equal(exchange_run(x), 1);
    *out = q.result;
    remember(g_tokens, &g_ntokens, MAX_TOKENS, q.result.access_token);
    remember(g_tokens, &g_ntokens, MAX_TOKENS, q.result.refresh_token);
    exchange_free(x);
}

static cJSON *stats(const testfix_sim *s)
{
    return testfix_sim_stats(s->base);
}

static void assert_cls(const exchange_result *r, exchange_class want)
{
    if (r->cls != want)
        fail_msg("class %s (%s), want %s", exchange_class_name(r->cls), r->detail,
                 exchange_class_name(want));
}

/* ---- setup -------------------------------------------------------------- */

static int group_setup(void **st)
{
    (void)st;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (testfix_log_capture(LOG_CAP) < 0)
        return -1;
    if (testfix_tmpdir(g_dir, sizeof g_dir, "exch") < 0 ||
        testfix_secret(g_dir, "secret", SECRET, g_secret_path, sizeof g_secret_path) < 0 ||
        testfix_secret(g_dir, "odd_secret", ODD_SECRET, g_odd_path, sizeof g_odd_path) < 0)
        return -1;
    return sim_start(&g_main, "main", g_secret_path, NULL);
}

static int group_teardown(void **st)
{
    (void)st;
    testfix_sim_stop_all();
    for (size_t i = 0; i < g_ncodes; i++)
        free(g_codes[i]);
    for (size_t i = 0; i < g_ntokens; i++) {
        crypto_wipe(g_tokens[i], strlen(g_tokens[i]));
        free(g_tokens[i]);
    }
    g_ncodes = g_ntokens = 0;
    testfix_log_capture_end();
    testfix_tmpdir_remove(g_dir, "itest_exchange_sim");
    curl_global_cleanup();
    return 0;
}

/* ---- tests -------------------------------------------------------------- */

static void test_success_then_reuse(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    char *code = authorize(&g_main, NULL);
    exchange_result r;
    exchange1(&pv, SECRET, code, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_SUCCESS);
    assert_int_equal(r.http_status, 200);
    assert_int_equal(strncmp(r.access_token, "sk_test_", 8), 0);
    assert_int_equal(strncmp(r.refresh_token, "rt_", 3), 0);
    assert_string_equal(r.token_type, "bearer");
    assert_string_equal(r.scope, "read_write");
    assert_int_equal(strncmp(r.account_id, "acct_", 5), 0);
    assert_int_equal(r.livemode, 0);
    assert_string_equal(r.error, "");
    assert_null(strstr(r.detail, r.access_token));

    cJSON *before = stats(&g_main);
    assert_int_equal(testfix_sim_code_num(before, code, "token_requests"), 1);

    /* The same code again: the Stripe reuse error, and the grant revoked (G1's reason). */
    exchange1(&pv, SECRET, code, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_REJECTED);
    assert_int_equal(r.http_status, 400);
    assert_string_equal(r.error, "invalid_grant");
    assert_int_equal(r.expired_hint, 0);
    assert_string_equal(r.access_token, "");
    assert_null(strstr(r.detail, "already been used"));
    cJSON *after = stats(&g_main);
    assert_int_equal(testfix_sim_code_num(after, code, "token_requests"), 2);
    assert_int_equal(testfix_sim_grants(after, "revoked"),
                     testfix_sim_grants(before, "revoked") + 1);
    cJSON_Delete(before);
    cJSON_Delete(after);
    free(code);
}

/* A request handed to curl whose send deadline (the claim's lease) passed
 * before curl got to send it — a worker stopped between the handoff and its
 * next perform — is aborted unsent: RETRY_SAFE/not_sent and the provider saw
 * nothing. Without the pre-request check the code would be sent late. */
static void test_send_deadline_passed_is_not_sent(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    char *code = authorize(&g_main, NULL);
    cJSON *before = stats(&g_main);
    err_t e = {0};
    exchange_t *x = exchange_new(4, 2000, 5000, &e);
    assert_non_null(x);
    exchange_req q = {.provider = &pv, .client_secret = SECRET, .code = code};
    q.send_by_mono_ms = clock_mono_ms() + 200;
    assert_int_equal(exchange_add(x, &q, &e), 0);
    usleep(400000); /* "stopped": the deadline passes before the first perform */
    assert_int_equal(exchange_run(x), 1);
    assert_cls(&q.result, EXCH_RETRY_SAFE);
    assert_int_equal(q.result.not_sent, 1);
    exchange_free(x);
    cJSON *after = stats(&g_main);
    /* Nothing reached the provider (a code never asked for is not listed). */
    assert_true(cJSON_GetObjectItem(after, "token_requests")->valuedouble ==
                cJSON_GetObjectItem(before, "token_requests")->valuedouble);
    char hex[CRYPTO_SHA256_HEX];
    crypto_sha256_hex(code, strlen(code), hex);
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(after, "codes"), hex));
    cJSON_Delete(after);
    cJSON_Delete(before);
    /* Within its deadline the same code goes out normally. */
    x = exchange_new(4, 2000, 5000, &e);
    exchange_req q2 = {.provider = &pv, .client_secret = SECRET, .code = code};
    q2.send_by_mono_ms = clock_mono_ms() + 5000;
    assert_int_equal(exchange_add(x, &q2, &e), 0);
    assert_int_equal(exchange_run(x), 1);
    assert_cls(&q2.result, EXCH_SUCCESS);
    assert_int_equal(q2.result.not_sent, 0);
    remember(g_tokens, &g_ntokens, MAX_TOKENS, q2.result.access_token);
    remember(g_tokens, &g_ntokens, MAX_TOKENS, q2.result.refresh_token);
    exchange_free(x);
    free(code);
}

/* Driver mode (exchange_spawn): the requests run while the caller does
 * something else (the worker blocks in a transaction), and every done
 * callback runs on the caller's thread. Without the driver nothing moves
 * between two exchange_perform calls: the sleep below would find nothing
 * finished. */
typedef struct {
    pthread_t caller;
    int reported, wrong_thread;
} driver_ctx;

static void driver_done_cb(exchange_req *req, void *ud)
{
    driver_ctx *c = ud;
    (void)req;
    c->reported++;
    if (!pthread_equal(pthread_self(), c->caller))
        c->wrong_thread++;
}

static void test_driver_thread(void **st)
{
    (void)st;
    enum { N = 6 };
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    char *codes[N];
    static exchange_req q[N];
    memset(q, 0, sizeof q);
    err_t e = {0};
    exchange_t *x = exchange_new(N / 2, 2000, 5000, &e);
    assert_non_null(x);
    assert_int_equal(exchange_spawn(x, &e), 0);
    assert_int_equal(exchange_spawn(x, &e), -1); /* once */
    for (int i = 0; i < N; i++) {
        codes[i] = authorize(&g_main, NULL);
        q[i] = (exchange_req){.provider = &pv, .client_secret = SECRET, .code = codes[i]};
        q[i].send_by_mono_ms = clock_mono_ms() + 5000;
        assert_int_equal(exchange_start(x, &q[i], &e), 0);
    }
    /* Twice the concurrency may be handed over: the rest waits for slots. */
    assert_int_equal(exchange_active(x), N);
    exchange_req extra = {.provider = &pv, .client_secret = SECRET, .code = codes[0]};
    assert_int_equal(exchange_start(x, &extra, &e), -1);
    assert_int_equal(e.cls, ERRC_RETRIABLE);
    usleep(1500000); /* the caller is busy: the driver finishes them meanwhile */
    driver_ctx c = {pthread_self(), 0, 0};
    assert_int_equal(exchange_perform(x, 0, driver_done_cb, &c), N);
    assert_int_equal(c.reported, N);
    assert_int_equal(c.wrong_thread, 0);
    assert_int_equal(exchange_active(x), 0);
    assert_int_equal(exchange_waiting(x), 0);
    cJSON *stt = stats(&g_main);
    for (int i = 0; i < N; i++) {
        assert_cls(&q[i].result, EXCH_SUCCESS);
        assert_int_equal(testfix_sim_code_num(stt, codes[i], "token_requests"), 1);
        remember(g_tokens, &g_ntokens, MAX_TOKENS, q[i].result.access_token);
        remember(g_tokens, &g_ntokens, MAX_TOKENS, q[i].result.refresh_token);
        crypto_wipe(&q[i].result, sizeof q[i].result);
    }
    cJSON_Delete(stt);
    /* A lease that lapsed before the driver got to it: not sent. */
    char *late = authorize(&g_main, NULL);
    exchange_req ql = {.provider = &pv, .client_secret = SECRET, .code = late};
    ql.send_by_mono_ms = clock_mono_ms() - 1;
    assert_int_equal(exchange_start(x, &ql, &e), 0);
    c.reported = 0;
    for (int i = 0; i < 100 && c.reported == 0; i++)
        exchange_perform(x, 50, driver_done_cb, &c);
    assert_int_equal(c.reported, 1);
    assert_cls(&ql.result, EXCH_RETRY_SAFE);
    assert_int_equal(ql.result.not_sent, 1);
    stt = stats(&g_main);
    char hex[CRYPTO_SHA256_HEX];
    crypto_sha256_hex(late, strlen(late), hex);
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(stt, "codes"), hex));
    cJSON_Delete(stt);
    /* Freed with a request still handed over: no leak, no crash (ASan). */
    char *left = authorize(&g_main, NULL);
    exchange_req qf = {.provider = &pv, .client_secret = SECRET, .code = left};
    assert_int_equal(exchange_start(x, &qf, &e), 0);
    exchange_free(x);
    for (int i = 0; i < N; i++)
        free(codes[i]);
    free(late);
    free(left);
}

/* Lanes: a lane's limit holds on the wire (its other requests wait), and
 * cancelling the waiting ones sends none of them — the worker does this
 * when its partitions are revoked. */
static void test_driver_lanes_and_cancel(void **st)
{
    (void)st;
    testfix_sim s;
    const char *lat[] = {"--latency-ms", "300", NULL};
    assert_int_equal(sim_start(&s, "lanes", g_secret_path, lat), 0);
    provider_t pv = prov(&s, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    err_t e = {0};
    exchange_t *x = exchange_new(4, 2000, 5000, &e);
    assert_non_null(x);
    int limits[2] = {1, 4};
    assert_int_equal(exchange_set_lanes(x, 2, limits, &e), 0);
    assert_int_equal(exchange_spawn(x, &e), 0);
    assert_int_equal(exchange_set_lanes(x, 2, limits, &e), -1); /* before the driver only */
    enum { N = 3 };
    char *codes[N];
    static exchange_req q[N];
    memset(q, 0, sizeof q);
    for (int i = 0; i < N; i++) {
        codes[i] = authorize(&s, NULL);
        q[i] = (exchange_req){.provider = &pv, .client_secret = SECRET, .code = codes[i]};
        q[i].send_by_mono_ms = clock_mono_ms() + 5000;
        q[i].lane = 0; /* limit 1: one on the wire, two waiting */
        assert_int_equal(exchange_start(x, &q[i], &e), 0);
    }
    for (int i = 0; i < 200 && exchange_waiting(x) != N - 1; i++)
        usleep(5000);
    assert_int_equal(exchange_waiting(x), N - 1); /* the first answers after 300 ms */
    exchange_cancel_waiting(x);
    driver_ctx c = {pthread_self(), 0, 0};
    for (int i = 0; i < 100 && c.reported < N; i++)
        exchange_perform(x, 50, driver_done_cb, &c);
    assert_int_equal(c.reported, N);
    int sent = 0, unsent = 0;
    for (int i = 0; i < N; i++) {
        if (q[i].result.cls == EXCH_SUCCESS) {
            sent++;
            remember(g_tokens, &g_ntokens, MAX_TOKENS, q[i].result.access_token);
            remember(g_tokens, &g_ntokens, MAX_TOKENS, q[i].result.refresh_token);
        } else if (q[i].result.cls == EXCH_RETRY_SAFE && q[i].result.not_sent) {
            unsent++;
        }
        crypto_wipe(&q[i].result, sizeof q[i].result);
    }
    assert_int_equal(sent, 1);
    assert_int_equal(unsent, N - 1);
    cJSON *stt = stats(&s);
    assert_int_equal((long)cJSON_GetObjectItem(stt, "token_requests")->valuedouble, 1);
    cJSON_Delete(stt);
    exchange_free(x);
    testfix_sim_stop(&s);
    for (int i = 0; i < N; i++)
        free(codes[i]);
}

static void test_unknown_code(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    exchange_result r;
    exchange1(&pv, SECRET, "ac_NoSuchCode0000000000000000000", NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_REJECTED);
    assert_string_equal(r.error, "invalid_grant");
    assert_string_equal(r.detail, "http 400 invalid_grant");
}

static void test_wrong_secret(void **st)
{
    (void)st;
    char *code = authorize(&g_main, NULL);
    exchange_result r;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    exchange1(&pv, "sk_wrong_secret_value", code, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_MISCONFIGURED);
    assert_int_equal(r.http_status, 401);
    assert_string_equal(r.error, "invalid_client");
    pv.token_auth = PROVIDER_AUTH_BASIC;
    exchange1(&pv, "sk_wrong_secret_value", code, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_MISCONFIGURED);
    /* The code was not consumed by either attempt. */
    pv.token_auth = PROVIDER_AUTH_POST;
    exchange1(&pv, SECRET, code, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_SUCCESS);
    free(code);
}

static void test_client_secret_basic(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_BASIC);
    char *code = authorize(&g_main, NULL);
    exchange_result r;
    exchange1(&pv, SECRET, code, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_SUCCESS);
    free(code);

    /* A secret with ':', '+', '/', ' ', '%', '&', '=': RFC 6749 §2.3.1 encoding (Basic) and
     * form encoding (post) both have to be right for the simulator to accept it. */
    testfix_sim s;
    assert_int_equal(sim_start(&s, "odd", g_odd_path, NULL), 0);
    provider_t pb = prov(&s, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_BASIC);
    provider_t pp = prov(&s, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    char *c1 = authorize(&s, NULL);
    char *c2 = authorize(&s, NULL);
    exchange1(&pb, ODD_SECRET, c1, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_SUCCESS);
    exchange1(&pp, ODD_SECRET, c2, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_SUCCESS);
    free(c1);
    free(c2);
    testfix_sim_stop(&s);
}

static void test_oauth2_sends_redirect_uri(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_OAUTH2, PROVIDER_AUTH_POST);
    char *code = authorize(&g_main, NULL);
    exchange_result r;
    /* A different redirect_uri is refused (and does not consume the code): proof it is sent. */
    exchange1(&pv, SECRET, code, NULL, "http://127.0.0.1:9/other", 5000, &r);
    assert_cls(&r, EXCH_REJECTED);
    exchange1(&pv, SECRET, code, NULL, REDIR, 5000, &r);
    assert_cls(&r, EXCH_SUCCESS);
    assert_string_equal(r.account_id, ""); /* generic oauth2: no Stripe fields */
    assert_int_equal(r.livemode, -1);
    free(code);
}

static void test_pkce(void **st)
{
    (void)st;
    char extra[160];
    snprintf(extra, sizeof extra, "&code_challenge=%s&code_challenge_method=S256", RFC_CHALLENGE);
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    exchange_result r;
    char *ok = authorize(&g_main, extra);
    exchange1(&pv, SECRET, ok, RFC_VERIFIER, NULL, 5000, &r);
    assert_cls(&r, EXCH_SUCCESS);
    free(ok);

    char *bad = authorize(&g_main, extra);
    exchange1(&pv, SECRET, bad, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX", NULL, 5000, &r);
    assert_cls(&r, EXCH_REJECTED);
    assert_string_equal(r.error, "invalid_grant");
    exchange1(&pv, SECRET, bad, "", NULL, 5000, &r); /* "" = no PKCE: verifier missing */
    assert_cls(&r, EXCH_REJECTED);
    free(bad);
}

static void test_fault_429(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    char *code = authorize(&g_main, "&sim_fault=429");
    exchange_result r;
    exchange1(&pv, SECRET, code, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_RETRY_SAFE);
    assert_int_equal(r.http_status, 429);
    assert_int_equal(r.retry_after_s, 1);
    exchange1(&pv, SECRET, code, NULL, NULL, 5000, &r); /* code unused: retry succeeds */
    assert_cls(&r, EXCH_SUCCESS);
    free(code);
}

static void test_fault_500(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    exchange_result r;
    char *before = authorize(&g_main, "&sim_fault=500_before");
    exchange1(&pv, SECRET, before, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_UNKNOWN);
    assert_int_equal(r.http_status, 500);
    assert_string_equal(r.detail, "http 500");

    char *after = authorize(&g_main, "&sim_fault=500_after");
    exchange1(&pv, SECRET, after, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_UNKNOWN);
    assert_int_equal(r.http_status, 500);
    cJSON *s = stats(&g_main);
    assert_int_equal(testfix_sim_code_num(s, before, "token_requests"), 1);
    assert_int_equal(testfix_sim_code_num(s, after, "token_requests"), 1);
    cJSON_Delete(s);
    free(before);
    free(after);
}

static void test_fault_cut_after(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    char *code = authorize(&g_main, "&sim_fault=cut_after");
    exchange_result r;
    exchange1(&pv, SECRET, code, NULL, NULL, 5000, &r);
    assert_cls(&r, EXCH_UNKNOWN);
    assert_int_equal(r.http_status, 0);
    assert_non_null(strstr(r.detail, "after send"));
    /* Exactly one request reached the provider: libcurl did not re-send it by itself. */
    cJSON *s = stats(&g_main);
    assert_int_equal(testfix_sim_code_num(s, code, "token_requests"), 1);
    assert_int_equal(testfix_sim_code_num(s, code, "last_status"), 0);
    cJSON_Delete(s);
    free(code);
}

static void test_fault_hang(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    char *code = authorize(&g_main, "&sim_fault=hang");
    exchange_result r;
    int64_t t0 = clock_mono_ms();
    exchange1(&pv, SECRET, code, NULL, NULL, 800, &r);
    int64_t dt = clock_mono_ms() - t0;
    assert_cls(&r, EXCH_UNKNOWN);
    assert_int_equal(r.http_status, 0);
    assert_string_equal(r.detail, "curl 28 timeout after send");
    assert_true(dt >= 700);
    assert_true(dt < 3000);
    exchange1(&pv, SECRET, code, NULL, NULL, 5000, &r); /* hang left the code unused */
    assert_cls(&r, EXCH_SUCCESS);
    free(code);
}

static void test_latency_beyond_timeout(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    char *code = authorize(&g_main, "&sim_fault=latency:3000");
    exchange_result r;
    int64_t t0 = clock_mono_ms();
    exchange1(&pv, SECRET, code, NULL, NULL, 800, &r);
    assert_true(clock_mono_ms() - t0 < 2500);
    assert_cls(&r, EXCH_UNKNOWN);
    assert_non_null(strstr(r.detail, "timeout after send"));
    free(code);
}

static void test_connection_refused(void **st)
{
    (void)st;
    testfix_addr a; /* nobody listens there */
    assert_int_equal(testfix_addr_new(&a), 0);
    testfix_sim closed = {0};
    snprintf(closed.base, sizeof closed.base, "%s", a.url);
    provider_t pv = prov(&closed, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    exchange_result r;
    exchange1(&pv, SECRET, "ac_never_sent_000000000000000", NULL, NULL, 2000, &r);
    assert_cls(&r, EXCH_RETRY_SAFE);
    assert_int_equal(r.http_status, 0);
    assert_string_equal(r.detail, "curl 7 connect failed before send");
}

/* Sequential requests in one client: a cut after a previous answer on the same host must not
 * make libcurl re-send the code on a "dead reused connection" (it would, with keep-alive). */
static void test_no_silent_resend(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    char *first = authorize(&g_main, NULL);
    char *cut = authorize(&g_main, "&sim_fault=cut_after");
    err_t e = {0};
    exchange_t *x = exchange_new(1, 2000, 5000, &e);
    assert_non_null(x);
    exchange_req q1 = {.provider = &pv, .client_secret = SECRET, .code = first};
    exchange_req q2 = {.provider = &pv, .client_secret = SECRET, .code = cut};
    assert_int_equal(exchange_add(x, &q1, &e), 0);
    assert_int_equal(exchange_add(x, &q2, &e), 0);
    assert_int_equal(exchange_run(x), 2);
    assert_cls(&q1.result, EXCH_SUCCESS);
    remember(g_tokens, &g_ntokens, MAX_TOKENS, q1.result.access_token);
    assert_cls(&q2.result, EXCH_UNKNOWN);
    cJSON *s = stats(&g_main);
    assert_int_equal(testfix_sim_code_num(s, cut, "token_requests"), 1);
    cJSON_Delete(s);
    exchange_free(x);
    free(first);
    free(cut);
}

/* One run with every kind of outcome at once: each result lands in its own request. */
static void test_mixed_batch(void **st)
{
    (void)st;
    provider_t pv = prov(&g_main, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    testfix_addr a; /* nobody listens there */
    assert_int_equal(testfix_addr_new(&a), 0);
    testfix_sim closed = {0};
    snprintf(closed.base, sizeof closed.base, "%s", a.url);
    provider_t refused = prov(&closed, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    const char *faults[] = {NULL, "&sim_fault=429", "&sim_fault=cut_after", "&sim_fault=500_after",
                            NULL};
    const exchange_class want[] = {EXCH_SUCCESS, EXCH_RETRY_SAFE, EXCH_UNKNOWN,
                                   EXCH_UNKNOWN, EXCH_RETRY_SAFE, EXCH_REJECTED};
    char *codes[5];
    exchange_req q[6];
    memset(q, 0, sizeof q);
    err_t e = {0};
    exchange_t *x = exchange_new(8, 2000, 5000, &e);
    assert_non_null(x);
    for (int i = 0; i < 6; i++) {
        q[i].provider = i == 4 ? &refused : &pv;
        q[i].client_secret = SECRET;
        q[i].ud = (void *)(intptr_t)(i + 100);
        if (i < 5) {
            codes[i] = authorize(&g_main, faults[i]);
            q[i].code = codes[i];
        } else {
            q[i].code = "ac_NoSuchCode1111111111111111111";
        }
        assert_int_equal(exchange_add(x, &q[i], &e), 0);
    }
    assert_int_equal(exchange_run(x), 6);
    for (int i = 0; i < 6; i++) {
        assert_cls(&q[i].result, want[i]);
        assert_int_equal((intptr_t)q[i].ud, i + 100);
        remember(g_tokens, &g_ntokens, MAX_TOKENS, q[i].result.access_token);
    }
    exchange_free(x);
    for (int i = 0; i < 5; i++)
        free(codes[i]);
}

/* 40 exchanges at 200 ms latency in one run: concurrent, one request per code; and a small
 * max_concurrent really bounds the parallelism. */
static void test_concurrent(void **st)
{
    (void)st;
    testfix_sim s;
    const char *extra[] = {"--latency-ms", "200", NULL};
    assert_int_equal(sim_start(&s, "latency", g_secret_path, extra), 0);
    provider_t pv = prov(&s, PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST);
    char *codes[N_CONC];
    static exchange_req q[N_CONC];
    memset(q, 0, sizeof q);
    err_t e = {0};
    exchange_t *x = exchange_new(64, 2000, 5000, &e);
    assert_non_null(x);
    for (int i = 0; i < N_CONC; i++) {
        codes[i] = authorize(&s, NULL);
        q[i] = (exchange_req){.provider = &pv, .client_secret = SECRET, .code = codes[i]};
        assert_int_equal(exchange_add(x, &q[i], &e), 0);
    }
    int64_t t0 = clock_mono_ms();
    assert_int_equal(exchange_run(x), N_CONC);
    int64_t dt = clock_mono_ms() - t0;
    print_message("%d exchanges at 200 ms latency took %lld ms\n", N_CONC, (long long)dt);
    assert_true(dt >= 190);
    assert_true(dt < 4000);
    exchange_free(x);

    cJSON *stt = stats(&s);
    assert_int_equal((long)cJSON_GetObjectItem(stt, "token_requests")->valuedouble, N_CONC);
    assert_int_equal(testfix_sim_grants(stt, "active"), N_CONC);
    for (int i = 0; i < N_CONC; i++) {
        assert_cls(&q[i].result, EXCH_SUCCESS);
        remember(g_tokens, &g_ntokens, MAX_TOKENS, q[i].result.access_token);
        assert_int_equal(testfix_sim_code_num(stt, codes[i], "token_requests"), 1);
        assert_int_equal(testfix_sim_code_num(stt, codes[i], "last_status"), 200);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(q[i].result.access_token, q[j].result.access_token);
        crypto_wipe(&q[i].result, sizeof q[i].result);
    }
    cJSON_Delete(stt);

    /* max_concurrent 2, 6 requests: three waves of ≥ 200 ms. */
    x = exchange_new(2, 2000, 5000, &e);
    assert_non_null(x);
    for (int i = 0; i < 6; i++) {
        free(codes[i]);
        codes[i] = authorize(&s, NULL);
        q[i] = (exchange_req){.provider = &pv, .client_secret = SECRET, .code = codes[i]};
        assert_int_equal(exchange_add(x, &q[i], &e), 0);
    }
    t0 = clock_mono_ms();
    assert_int_equal(exchange_run(x), 6);
    dt = clock_mono_ms() - t0;
    assert_true(dt >= 590);
    for (int i = 0; i < 6; i++) {
        assert_cls(&q[i].result, EXCH_SUCCESS);
        crypto_wipe(&q[i].result, sizeof q[i].result);
    }
    exchange_free(x);
    for (int i = 0; i < N_CONC; i++)
        free(codes[i]);
    testfix_sim_stop(&s);
}

/* Last: the captured log lines name outcomes by code hash, never a code, token or secret. */
static void test_logs_clean(void **st)
{
    (void)st;
    assert_non_null(strstr(testfix_log_text(), "\"event\":\"token_exchange\""));
    assert_non_null(strstr(testfix_log_text(), "code_sha256"));
    assert_null(strstr(testfix_log_text(), SECRET));
    assert_null(strstr(testfix_log_text(), ODD_SECRET));
    assert_null(strstr(testfix_log_text(), RFC_VERIFIER));
    assert_null(strstr(testfix_log_text(), "already been used"));
    for (size_t i = 0; i < g_ncodes; i++)
        assert_null(strstr(testfix_log_text(), g_codes[i]));
    for (size_t i = 0; i < g_ntokens; i++)
        assert_null(strstr(testfix_log_text(), g_tokens[i]));
    assert_true(g_ncodes > 40);
    assert_true(g_ntokens > 40);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success_then_reuse),
        cmocka_unit_test(test_unknown_code),
        cmocka_unit_test(test_send_deadline_passed_is_not_sent),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_client_secret_basic),
        cmocka_unit_test(test_oauth2_sends_redirect_uri),
        cmocka_unit_test(test_pkce),
        cmocka_unit_test(test_fault_429),
        cmocka_unit_test(test_fault_500),
        cmocka_unit_test(test_fault_cut_after),
        cmocka_unit_test(test_fault_hang),
        cmocka_unit_test(test_latency_beyond_timeout),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_no_silent_resend),
        cmocka_unit_test(test_mixed_batch),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_driver_thread),
        cmocka_unit_test(test_driver_lanes_and_cancel),
        cmocka_unit_test(test_logs_clean),
    };
    return cmocka_run_group_tests_name("itest_exchange_sim", tests, group_setup, group_teardown);
}
