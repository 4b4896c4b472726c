/*
 * Integration test of worker/deauth over real HTTP (SPEC §4 DELETE
 * /v1/connections/{id}, §7 POST /oauth/deauthorize).
 *
 * Spawns $OAUTHQ_BUILD/oauthq-provider-sim (default build/) on a free loopback
 * port with a temporary secret file, obtains grants the way a provider does
 * (GET /oauth/authorize without following the redirect, then a direct POST
 * /oauth/token for the stripe_user_id) and disconnects them with deauth_run:
 * confirmed (the simulator's grants.deauthorized and active move), a second
 * disconnect of the same account (Stripe's 401 "not connected" → DONE), an
 * account never issued, a wrong client secret (MISCONFIGURED, grant still
 * active), and a closed port (RETRY). A one-shot loopback listener in a
 * thread captures the exact wire form of the Stripe request and of RFC 7009
 * revocations (Basic and client_secret_post), and, never answering, shows the
 * timeout bound. Log lines are captured and checked for tokens, secrets and
 * account ids at the end. Every simulator started here is stopped by pid in
 * the group teardown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "tests/support/testfix.h"
#include "tests/support/testhttp.h"
#include "worker/deauth.h"

#define CID      "ca_itest_deauth"
#define SECRET   "sk_itest_deauth_secret"
#define REDIR    "http://127.0.0.1:9/cb"
#define MAX_KEEP 64
#define LOG_CAP  (1024 * 1024)
#define RAW_MAX  16384

static char g_dir[256];
static char g_secret_path[300];
static testfix_sim g_main;
static char *g_keep[MAX_KEEP]; /* tokens and account ids that must never be logged */
static size_t g_nkeep;

/* ---- helpers ------------------------------------------------------------ */

static void keep(const char *v)
{
    if (g_nkeep < MAX_KEEP && v && *v)
        g_keep[g_nkeep++] = strdup(v);
}

/* A new grant at the simulator: its stripe_user_id into acct[cap] (tokens kept for the log
 * check). */
static void connect_account(const testfix_sim *s, char *acct, size_t cap)
{
    char url[512];
    assert_int_equal(
        testfix_authorize_url(url, sizeof url, s->base, CID, REDIR, "&scope=read_write&state=x"),
        0);
    testhttp_resp r;
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 302);
    char *code = testfix_url_param(r.location, "code");
    assert_non_null(code);
    testhttp_resp_free(&r);

    char body[1024];
    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s&client_secret=" SECRET,
             code);
    free(code);
    snprintf(url, sizeof url, "%s/oauth/token", s->base);
    assert_int_equal(testhttp_do("POST", url, NULL, body, &r), 0);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "stripe_user_id");
    assert_true(cJSON_IsString(id));
    assert_int_equal(strncmp(id->valuestring, "acct_", 5), 0);
    assert_true(strlen(id->valuestring) < cap);
    snprintf(acct, cap, "%s", id->valuestring);
    keep(acct);
    keep(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "access_token")));
    keep(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "refresh_token")));
    cJSON_Delete(j);
    testhttp_resp_free(&r);
}

static long grants(const testfix_sim *s, const char *k)
{
    cJSON *st = testfix_sim_stats(s->base);
    long n = testfix_sim_grants(st, k);
    cJSON_Delete(st);
    return n;
}

static provider_t prov(provider_profile profile, provider_token_auth auth, const char *url)
{
    provider_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "simprov");
    p.profile = profile;
    snprintf(p.token_url, sizeof p.token_url, "http://127.0.0.1:1/oauth/token");
    snprintf(p.deauthorize_url, sizeof p.deauthorize_url, "%s", url);
    snprintf(p.client_id, sizeof p.client_id, CID);
    p.token_auth = auth;
    p.code_ttl_s = 300;
    return p;
}

static provider_t sim_prov(const testfix_sim *s)
{
    char url[128];
    snprintf(url, sizeof url, "%s/oauth/deauthorize", s->base);
    return prov(PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST, url);
}

static void assert_cls(const deauth_result *r, deauth_class want)
{
    if (r->cls != want)
        fail_msg("class %s (%s), want %s", deauth_class_name(r->cls), r->detail,
                 deauth_class_name(want));
}

/* ---- a one-shot loopback listener --------------------------------------- */

typedef struct {
    int lfd, port;
    const char *answer; /* full HTTP response, or NULL: never answer (hold until the peer goes) */
    char req[RAW_MAX + 1];
    size_t req_len;
    pthread_t th;
} raw_srv;

/* Is a complete request (headers plus Content-Length bytes) in buf? */
static int request_complete(const char *buf, size_t len)
{
    const char *end = strstr(buf, "\r\n\r\n");
    if (!end)
        return 0;
    size_t hdr = (size_t)(end - buf) + 4;
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    long want = cl && cl < end ? strtol(cl + 17, NULL, 10) : 0;
    return len >= hdr + (size_t)want;
}

static void *raw_main(void *arg)
{
    raw_srv *s = arg;
    struct pollfd p = {.fd = s->lfd, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1)
        return NULL;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    int64_t deadline = clock_mono_ms() + 10000;
    while (!request_complete(s->req, s->req_len) && s->req_len < RAW_MAX &&
           clock_mono_ms() < deadline) {
        struct pollfd c = {.fd = fd, .events = POLLIN};
        if (poll(&c, 1, 200) != 1)
            continue;
        ssize_t n = recv(fd, s->req + s->req_len, RAW_MAX - s->req_len, 0);
        if (n <= 0)
            break;
        s->req_len += (size_t)n;
        s->req[s->req_len] = '\0';
    }
    if (s->answer) {
        ssize_t w = send(fd, s->answer, strlen(s->answer), MSG_NOSIGNAL);
        (void)w;
    } else {
        char sink[256];
        while (clock_mono_ms() < deadline) { /* hold the connection until the client gives up */
            struct pollfd c = {.fd = fd, .events = POLLIN};
            if (poll(&c, 1, 200) == 1 && recv(fd, sink, sizeof sink, 0) <= 0)
                break;
        }
    }
    close(fd);
    return NULL;
}

static void raw_start(raw_srv *s, const char *answer)
{
    memset(s, 0, sizeof *s);
    s->answer = answer;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->lfd, 4), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, raw_main, s), 0);
}

static void raw_join(raw_srv *s)
{
    pthread_join(s->th, NULL);
    close(s->lfd);
}

/* The body of the captured request (after the blank line). */
static const char *raw_body(const raw_srv *s)
{
    const char *end = strstr(s->req, "\r\n\r\n");
    assert_non_null(end);
    return end + 4;
}

static void b64(const char *in, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;
    const unsigned char *u = (const unsigned char *)in;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)u[i] << 16 | (i + 1 < n ? (unsigned)u[i + 1] << 8 : 0) |
                     (i + 2 < n ? u[i + 2] : 0);
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

static const char OK_200[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: 2\r\nConnection: close\r\n\r\n{}";

/* ---- setup -------------------------------------------------------------- */

static int group_setup(void **st)
{
    (void)st;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (testfix_log_capture(LOG_CAP) < 0)
        return -1;
    static const char *const args[] = {"--redirect-uri", REDIR, NULL};
    if (testfix_tmpdir(g_dir, sizeof g_dir, "deauth") < 0 ||
        testfix_secret(g_dir, "secret", SECRET, g_secret_path, sizeof g_secret_path) < 0)
        return -1;
    return testfix_sim_start(&g_main, g_dir, "main", CID, g_secret_path, args, NULL);
}

static int group_teardown(void **st)
{
    (void)st;
    testfix_sim_stop_all();
    for (size_t i = 0; i < g_nkeep; i++) {
        crypto_wipe(g_keep[i], strlen(g_keep[i]));
        free(g_keep[i]);
    }
    g_nkeep = 0;
    testfix_log_capture_end();
    testfix_tmpdir_remove(g_dir, "itest_deauth_sim");
    curl_global_cleanup();
    return 0;
}

/* ---- tests against the simulator ---------------------------------------- */

/* Runs first: the simulator has deauthorized nothing before it. */
static void test_disconnect_then_again(void **st)
{
    (void)st;
    char acct[128];
    connect_account(&g_main, acct, sizeof acct);
    long active = grants(&g_main, "active");
    assert_true(active >= 1);
    assert_int_equal(grants(&g_main, "deauthorized"), 0);

    provider_t pv = sim_prov(&g_main);
    deauth_result r;
    err_t e = {0};
    assert_int_equal(deauth_run(&pv, SECRET, acct, NULL, NULL, 5000, &r, &e), 0);
    assert_cls(&r, DEAUTH_DONE);
    assert_int_equal(r.http_status, 200);
    assert_string_equal(r.detail, "http 200");
    assert_int_equal(grants(&g_main, "deauthorized"), 1);
    assert_int_equal(grants(&g_main, "active"), active - 1);

    /* Again: Stripe's 401 invalid_client "not connected" means already done. */
    assert_int_equal(deauth_run(&pv, SECRET, acct, NULL, NULL, 5000, &r, &e), 0);
    assert_cls(&r, DEAUTH_DONE);
    assert_int_equal(r.http_status, 401);
    assert_string_equal(r.detail, "http 401 invalid_client (not connected)");
    assert_null(strstr(r.detail, acct));
    assert_int_equal(grants(&g_main, "deauthorized"), 1);
    assert_int_equal(grants(&g_main, "active"), active - 1);
}

/* An account the simulator never issued is "not connected" as well. */
static void test_unknown_account(void **st)
{
    (void)st;
    provider_t pv = sim_prov(&g_main);
    deauth_result r;
    err_t e = {0};
    long before = grants(&g_main, "deauthorized");
    assert_int_equal(deauth_run(&pv, SECRET, "acct_neverissued1", NULL, NULL, 5000, &r, &e), 0);
    assert_cls(&r, DEAUTH_DONE);
    assert_int_equal(r.http_status, 401);
    assert_int_equal(grants(&g_main, "deauthorized"), before);
}

/* Our credentials rejected: MISCONFIGURED, and the grant stays active until fixed. */
static void test_wrong_secret(void **st)
{
    (void)st;
    char acct[128];
    connect_account(&g_main, acct, sizeof acct);
    long active = grants(&g_main, "active");
    long deauthorized = grants(&g_main, "deauthorized");
    provider_t pv = sim_prov(&g_main);
    deauth_result r;
    err_t e = {0};
    assert_int_equal(deauth_run(&pv, "sk_wrong_secret_value", acct, NULL, NULL, 5000, &r, &e), 0);
    assert_cls(&r, DEAUTH_MISCONFIGURED);
    assert_int_equal(r.http_status, 401);
    assert_string_equal(r.detail, "http 401 invalid_client");
    assert_int_equal(grants(&g_main, "active"), active);
    assert_int_equal(grants(&g_main, "deauthorized"), deauthorized);

    /* A wrong client_id in the body is our configuration too. */
    provider_t bad = pv;
    snprintf(bad.client_id, sizeof bad.client_id, "ca_someone_else");
    assert_int_equal(deauth_run(&bad, SECRET, acct, NULL, NULL, 5000, &r, &e), 0);
    assert_cls(&r, DEAUTH_MISCONFIGURED);
    assert_int_equal(grants(&g_main, "active"), active);

    /* Fixed secret: the disconnect goes through. */
    assert_int_equal(deauth_run(&pv, SECRET, acct, NULL, NULL, 5000, &r, &e), 0);
    assert_cls(&r, DEAUTH_DONE);
    assert_int_equal(r.http_status, 200);
    assert_int_equal(grants(&g_main, "active"), active - 1);
    assert_int_equal(grants(&g_main, "deauthorized"), deauthorized + 1);
}

/* The oauth2 profile against the Stripe-shaped simulator: its client auth (RFC 6749 §2.3.1
 * Basic and client_secret_post) is checked first, so a wrong secret is MISCONFIGURED either
 * way; with the right one the simulator refuses the RFC 7009 form (no stripe_user_id). */
static void test_oauth2_profile_against_sim(void **st)
{
    (void)st;
    char url[128];
    snprintf(url, sizeof url, "%s/oauth/deauthorize", g_main.base);
    deauth_result r;
    err_t e = {0};
    provider_t basic = prov(PROVIDER_PROFILE_OAUTH2, PROVIDER_AUTH_BASIC, url);
    provider_t post = prov(PROVIDER_PROFILE_OAUTH2, PROVIDER_AUTH_POST, url);
    assert_int_equal(
        deauth_run(&basic, "sk_wrong_secret_value", NULL, "at_x", "rt_x", 5000, &r, &e), 0);
    assert_cls(&r, DEAUTH_MISCONFIGURED);
    assert_int_equal(deauth_run(&post, "sk_wrong_secret_value", NULL, "at_x", "rt_x", 5000, &r, &e),
                     0);
    assert_cls(&r, DEAUTH_MISCONFIGURED);
    assert_int_equal(deauth_run(&post, SECRET, NULL, "at_x", "rt_x", 5000, &r, &e), 0);
    assert_cls(&r, DEAUTH_FAILED);
    assert_int_equal(r.http_status, 400);
    assert_string_equal(r.detail, "http 400 invalid_request");
}

/* Nothing listens: RETRY, no HTTP status. */
static void test_closed_port(void **st)
{
    (void)st;
    testfix_addr a; /* nobody listens there */
    assert_int_equal(testfix_addr_new(&a), 0);
    char url[128];
    snprintf(url, sizeof url, "%s/oauth/deauthorize", a.url);
    provider_t pv = prov(PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST, url);
    deauth_result r;
    err_t e = {0};
    assert_int_equal(deauth_run(&pv, SECRET, "acct_x", NULL, NULL, 3000, &r, &e), 0);
    assert_cls(&r, DEAUTH_RETRY);
    assert_int_equal(r.http_status, 0);
    assert_non_null(strstr(r.detail, "connect failed"));
}

/* ---- wire form against the loopback listener ---------------------------- */

static void test_stripe_wire_form(void **st)
{
    (void)st;
    raw_srv s;
    raw_start(&s, OK_200);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/oauth/deauthorize", s.port);
    provider_t pv = prov(PROVIDER_PROFILE_STRIPE, PROVIDER_AUTH_POST, url);
    deauth_result r;
    err_t e = {0};
    assert_int_equal(deauth_run(&pv, SECRET, "acct_1Wire", NULL, NULL, 5000, &r, &e), 0);
    raw_join(&s);
    assert_cls(&r, DEAUTH_DONE);
    static const char line1[] = "POST /oauth/deauthorize HTTP/1.1\r\n";
    assert_int_equal(strncmp(s.req, line1, sizeof line1 - 1), 0);
    char want[256], enc[128];
    b64(SECRET ":", enc); /* Stripe: the secret key as user, empty password */
    snprintf(want, sizeof want, "\r\nAuthorization: Basic %s\r\n", enc);
    assert_non_null(strstr(s.req, want));
    assert_non_null(strcasestr(s.req, "\r\nContent-Type: application/x-www-form-urlencoded"));
    assert_null(strcasestr(s.req, "\r\nExpect:"));
    assert_string_equal(raw_body(&s), "client_id=" CID "&stripe_user_id=acct_1Wire");
}

static void test_oauth2_wire_basic(void **st)
{
    (void)st;
    raw_srv s;
    raw_start(&s, OK_200);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/revoke", s.port);
    provider_t pv = prov(PROVIDER_PROFILE_OAUTH2, PROVIDER_AUTH_BASIC, url);
    deauth_result r;
    err_t e = {0};
    assert_int_equal(
        deauth_run(&pv, "p@ss:w rd", NULL, "at_wire_token", "rt_wire/token", 5000, &r, &e), 0);
    raw_join(&s);
    assert_cls(&r, DEAUTH_DONE);
    static const char line1[] = "POST /revoke HTTP/1.1\r\n";
    assert_int_equal(strncmp(s.req, line1, sizeof line1 - 1), 0);
    char want[256], enc[128];
    b64(CID ":p%40ss%3Aw+rd", enc); /* RFC 6749 §2.3.1: urlencoded id:secret */
    snprintf(want, sizeof want, "\r\nAuthorization: Basic %s\r\n", enc);
    assert_non_null(strstr(s.req, want));
    /* The refresh token is preferred (revoking it revokes its access tokens too). */
    assert_string_equal(raw_body(&s), "token=rt_wire%2Ftoken&token_type_hint=refresh_token");
}

static void test_oauth2_wire_post(void **st)
{
    (void)st;
    raw_srv s;
    raw_start(&s, OK_200);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/revoke", s.port);
    provider_t pv = prov(PROVIDER_PROFILE_OAUTH2, PROVIDER_AUTH_POST, url);
    deauth_result r;
    err_t e = {0};
    assert_int_equal(deauth_run(&pv, SECRET, NULL, "at_wire_token", "", 5000, &r, &e), 0);
    raw_join(&s);
    assert_cls(&r, DEAUTH_DONE);
    assert_null(strcasestr(s.req, "\r\nAuthorization:"));
    assert_string_equal(raw_body(&s),
                        "token=at_wire_token&token_type_hint=access_token&client_id=" CID
                        "&client_secret=" SECRET);
}

/* A provider that accepts the connection and never answers: RETRY within the bound. */
static void test_timeout_bound(void **st)
{
    (void)st;
    raw_srv s;
    raw_start(&s, NULL);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/oauth/deauthorize", s.port);
    provider_t pv = prov(PROVIDER_PROFILE_SIM, PROVIDER_AUTH_POST, url);
    deauth_result r;
    err_t e = {0};
    int64_t t0 = clock_mono_ms();
    assert_int_equal(deauth_run(&pv, SECRET, "acct_hang", NULL, NULL, 500, &r, &e), 0);
    int64_t took = clock_mono_ms() - t0;
    raw_join(&s);
    assert_cls(&r, DEAUTH_RETRY);
    assert_int_equal(r.http_status, 0);
    assert_non_null(strstr(r.detail, "timeout"));
    assert_true(took >= 400 && took < 3000);
}

/* A 503 with Retry-After from the provider: RETRY carrying the delay. */
static void test_retry_after(void **st)
{
    (void)st;
    raw_srv s;
    raw_start(&s, "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 42\r\n"
                  "Content-Length: 0\r\nConnection: close\r\n\r\n");
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/revoke", s.port);
    provider_t pv = prov(PROVIDER_PROFILE_OAUTH2, PROVIDER_AUTH_BASIC, url);
    deauth_result r;
    err_t e = {0};
    assert_int_equal(deauth_run(&pv, SECRET, NULL, "at_x", NULL, 5000, &r, &e), 0);
    raw_join(&s);
    assert_cls(&r, DEAUTH_RETRY);
    assert_int_equal(r.http_status, 503);
    assert_int_equal(r.retry_after_s, 42);
}

/* Runs last: nothing secret reached a log line, and each call logged provider/class/status. */
static void test_logs_clean(void **st)
{
    (void)st;
    assert_non_null(strstr(testfix_log_text(), "provider_deauthorize"));
    assert_null(strstr(testfix_log_text(), SECRET));
    assert_null(strstr(testfix_log_text(), "sk_wrong_secret_value"));
    assert_null(strstr(testfix_log_text(), "wire_token"));
    assert_null(strstr(testfix_log_text(), "acct_"));
    assert_null(strstr(testfix_log_text(), "not connected"));
    for (size_t i = 0; i < g_nkeep; i++)
        if (strstr(testfix_log_text(), g_keep[i]))
            fail_msg("a token or account id reached the log");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disconnect_then_again),
        cmocka_unit_test(test_unknown_account),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_oauth2_profile_against_sim),
        cmocka_unit_test(test_closed_port),
        cmocka_unit_test(test_stripe_wire_form),
        cmocka_unit_test(test_oauth2_wire_basic),
        cmocka_unit_test(test_oauth2_wire_post),
        cmocka_unit_test(test_timeout_bound),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_logs_clean),
    };
    return cmocka_run_group_tests_name("itest_deauth_sim", tests, group_setup, group_teardown);
}
