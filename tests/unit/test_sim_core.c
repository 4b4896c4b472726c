/*
 * Unit tests of sim_core (the provider simulator's decisions, SPEC §7):
 * authorize, token exchange and reuse revocation, expiry by passed-in time,
 * client authentication (body, Basic RFC 6749 §2.3.1 and Stripe style),
 * PKCE S256 (RFC 7636 Appendix B vector), every sim_fault, deauthorize,
 * stats shape, eviction, routing and concurrent exchanges of one code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>

#include <cjson/cJSON.h>

#include "tests/sim/sim_core.h"

#define CID    "ca_test123"
#define SECRET "sk_secret_abcdef"
#define REDIR  "http://app.example/cb"
#define REDIRQ "http://app.example/cb2?x=1"
#define T0     1000000

static const char *const REDIRS[] = {REDIR, REDIRQ};
static const char REUSE[] = "This authorization code has already been used. All tokens issued "
                            "with this code have been revoked.";
/* RFC 7636 Appendix B (the verifier/challenge pair as published there). */
static const char RFC_VERIFIER[] = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
static const char RFC_CHALLENGE[] = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

static sim_core_t *mk(int with_redirects, int64_t ttl_ms, long latency, size_t max_codes)
{
    sim_core_opts o = {
        .client_id = CID,
        .client_secret = SECRET,
        .redirect_uris = with_redirects ? REDIRS : NULL,
        .n_redirect_uris = with_redirects ? 2 : 0,
        .code_ttl_ms = ttl_ms,
        .latency_ms = latency,
        .max_codes = max_codes,
    };
    err_t e;
    sim_core_t *c = sim_core_new(&o, &e);
    assert_non_null(c);
    return c;
}

static void req(sim_core_t *c, const char *method, const char *uri, const char *authz,
                const char *ctype, const char *body, int64_t now, sim_core_resp *r)
{
    sim_core_req rq = {
        .method = method,
        .uri = uri,
        .authorization = authz,
        .content_type = ctype,
        .body = body,
        .body_len = body ? strlen(body) : 0,
    };
    err_t e;
    assert_int_equal(sim_core_handle(c, &rq, now, r, &e), 0);
}

static void get(sim_core_t *c, const char *uri, int64_t now, sim_core_resp *r)
{
    req(c, "GET", uri, NULL, NULL, NULL, now, r);
}

static void post(sim_core_t *c, const char *path, const char *authz, const char *body, int64_t now,
                 sim_core_resp *r)
{
    req(c, "POST", path, authz, "application/x-www-form-urlencoded", body, now, r);
}

/* Value of query parameter name in a Location (raw, undecoded), or NULL. */
static char *loc_param(const char *loc, const char *name)
{
    const char *q = strchr(loc, '?');
    size_t nl = strlen(name);
    while (q) {
        q++;
        if (strncmp(q, name, nl) == 0 && q[nl] == '=') {
            const char *v = q + nl + 1;
            size_t n = strcspn(v, "&");
            char *out = malloc(n + 1);
            memcpy(out, v, n);
            out[n] = '\0';
            return out;
        }
        q = strchr(q, '&');
    }
    return NULL;
}

/* Authorize with extra query; returns the malloc'd code. */
static char *authorize(sim_core_t *c, const char *extra, int64_t now)
{
    char uri[1024];
    snprintf(uri, sizeof uri, "/oauth/authorize?response_type=code&client_id=" CID "&state=st%s",
             extra ? extra : "");
    sim_core_resp r;
    get(c, uri, now, &r);
    assert_int_equal(r.status, 302);
    assert_non_null(r.location);
    char *code = loc_param(r.location, "code");
    assert_non_null(code);
    sim_core_resp_free(&r);
    return code;
}

static void exchange(sim_core_t *c, const char *code, const char *extra, int64_t now,
                     sim_core_resp *r)
{
    char body[1024];
    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s&client_secret=" SECRET "%s",
             code, extra ? extra : "");
    post(c, "/oauth/token", NULL, body, now, r);
}

static void assert_error(const sim_core_resp *r, int status, const char *error, const char *desc)
{
    assert_int_equal(r->status, status);
    assert_string_equal(r->content_type, "application/json");
    assert_true(r->no_store);
    cJSON *j = cJSON_Parse(r->body);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "error")->valuestring, error);
    const cJSON *d = cJSON_GetObjectItem(j, "error_description");
    assert_true(cJSON_IsString(d));
    if (desc)
        assert_string_equal(d->valuestring, desc);
    cJSON_Delete(j);
}

static cJSON *stats(sim_core_t *c)
{
    sim_core_resp r;
    get(c, "/_sim/stats", T0, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    sim_core_resp_free(&r);
    return j;
}

static double num(const cJSON *o, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItem(o, a);
    if (b)
        x = cJSON_GetObjectItem(x, b);
    assert_true(cJSON_IsNumber(x));
    return x->valuedouble;
}

static const cJSON *code_stats(const cJSON *s, const char *code)
{
    char hex[65];
    assert_int_equal(sim_core_sha256_hex(code, strlen(code), hex), 0);
    return cJSON_GetObjectItem(cJSON_GetObjectItem(s, "codes"), hex);
}

/* ---- authorize ---------------------------------------------------------- */

static void test_authorize_issues_code(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    sim_core_resp r;
    get(c,
        "/oauth/authorize?response_type=code&client_id=" CID "&redirect_uri=http%3A%2F%2Fapp."
        "example%2Fcb&state=a+b%26c%3D&scope=read_write",
        T0, &r);
    assert_int_equal(r.status, 302);
    assert_true(r.no_store);
    assert_string_equal(r.event, "code_issued");
    assert_int_equal(strncmp(r.location, REDIR "?code=ac_", strlen(REDIR "?code=ac_")), 0);
    char *code = loc_param(r.location, "code");
    assert_true(strlen(code) >= 3 + 24);
    for (const char *p = code + 3; *p; p++)
        assert_true((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9'));
    char *state = loc_param(r.location, "state");
    assert_string_equal(state, "a%20b%26c%3D");
    char hex[65];
    sim_core_sha256_hex(code, strlen(code), hex);
    assert_string_equal(r.code_sha256, hex);
    free(state);
    free(code);
    sim_core_resp_free(&r);

    /* existing query keeps '?' and gets '&'; omitted redirect_uri → first registered */
    get(c,
        "/oauth/authorize?response_type=code&client_id=" CID
        "&redirect_uri=http%3A%2F%2Fapp.example%2Fcb2%3Fx%3D1&state=s",
        T0, &r);
    assert_int_equal(strncmp(r.location, REDIRQ "&code=ac_", strlen(REDIRQ "&code=ac_")), 0);
    sim_core_resp_free(&r);
    get(c, "/oauth/authorize?response_type=code&client_id=" CID, T0, &r);
    assert_int_equal(r.status, 302);
    assert_int_equal(strncmp(r.location, REDIR "?code=", strlen(REDIR "?code=")), 0);
    assert_null(strstr(r.location, "state="));
    sim_core_resp_free(&r);

    /* two codes differ */
    char *a = authorize(c, NULL, T0), *b = authorize(c, NULL, T0);
    assert_string_not_equal(a, b);
    free(a);
    free(b);
    sim_core_free(c);
}

static void test_authorize_errors(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    static const struct {
        const char *uri;
        const char *error;
    } cases[] = {
        {"/oauth/authorize?response_type=code&client_id=ca_other", "invalid_client"},
        {"/oauth/authorize?response_type=code", "invalid_request"},
        {"/oauth/authorize?client_id=" CID, "invalid_request"},
        {"/oauth/authorize?response_type=token&client_id=" CID, "unsupported_response_type"},
        {"/oauth/authorize?response_type=code&client_id=" CID
         "&redirect_uri=http%3A%2F%2Fevil.example%2Fcb",
         "invalid_request"},
        {"/oauth/authorize?response_type=code&client_id=" CID
         "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=plain",
         "invalid_request"},
        {"/oauth/authorize?response_type=code&client_id=" CID
         "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
         "invalid_request"},
        {"/oauth/authorize?response_type=code&client_id=" CID "&code_challenge=short"
         "&code_challenge_method=S256",
         "invalid_request"},
        {"/oauth/authorize?response_type=code&client_id=" CID "&code_challenge_method=S256",
         "invalid_request"},
        {"/oauth/authorize?response_type=code&client_id=" CID "&sim_fault=explode",
         "invalid_request"},
        {"/oauth/authorize?response_type=code&client_id=" CID "&sim_fault=latency:x",
         "invalid_request"},
        {"/oauth/authorize?response_type=code&client_id=" CID "&sim_deny=2", "invalid_request"},
        {"/oauth/authorize?response_type=code&client_id=" CID "&client_id=" CID, "invalid_request"},
        {"/oauth/authorize?response_type=code&client_id=" CID "&state=%zz", "invalid_request"},
        {"/oauth/authorize?response_type=code&client_id=" CID "&scope=admin", "invalid_scope"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sim_core_resp r;
        get(c, cases[i].uri, T0, &r);
        assert_null(r.location);
        assert_error(&r, 400, cases[i].error, NULL);
        sim_core_resp_free(&r);
    }
    sim_core_free(c);

    /* no registered URIs: any http(s) URI, nothing else, and one is required */
    c = mk(0, 0, 0, 0);
    sim_core_resp r;
    get(c,
        "/oauth/authorize?response_type=code&client_id=" CID
        "&redirect_uri=https%3A%2F%2Fanywhere.example%2Fx",
        T0, &r);
    assert_int_equal(r.status, 302);
    sim_core_resp_free(&r);
    get(c,
        "/oauth/authorize?response_type=code&client_id=" CID
        "&redirect_uri=ftp%3A%2F%2Fanywhere.example%2Fx",
        T0, &r);
    assert_error(&r, 400, "invalid_request", NULL);
    sim_core_resp_free(&r);
    get(c, "/oauth/authorize?response_type=code&client_id=" CID, T0, &r);
    assert_error(&r, 400, "invalid_request", NULL);
    sim_core_resp_free(&r);
    sim_core_free(c);
}

static void test_authorize_deny(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    const char *uris[] = {
        "/oauth/authorize?response_type=code&client_id=" CID "&state=xyz&sim_fault=deny",
        "/oauth/authorize?response_type=code&client_id=" CID "&state=xyz&sim_deny=1",
    };
    for (int i = 0; i < 2; i++) {
        sim_core_resp r;
        get(c, uris[i], T0, &r);
        assert_int_equal(r.status, 302);
        assert_string_equal(r.location, REDIR "?error=access_denied&error_description="
                                              "The+user+denied+your+request&state=xyz");
        assert_string_equal(r.code_sha256, "");
        sim_core_resp_free(&r);
    }
    cJSON *s = stats(c);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(s, "codes")), 0);
    cJSON_Delete(s);
    sim_core_free(c);
}

/* ---- token -------------------------------------------------------------- */

static void test_token_success_then_reuse_revokes(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    char *code = authorize(c, NULL, T0);
    sim_core_resp r;
    exchange(c, code, NULL, T0 + 10, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.action, SIM_CORE_ANSWER);
    assert_true(r.no_store);
    cJSON *j = cJSON_Parse(r.body);
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
    sim_core_resp_free(&r);

    cJSON *s = stats(c);
    assert_int_equal(num(s, "grants", "active"), 1);
    assert_int_equal(num(s, "grants", "revoked"), 0);
    assert_string_equal(cJSON_GetObjectItem(code_stats(s, code), "grant")->valuestring, "active");
    cJSON_Delete(s);

    exchange(c, code, NULL, T0 + 20, &r);
    assert_error(&r, 400, "invalid_grant", REUSE);
    assert_string_equal(r.event, "code_reused");
    sim_core_resp_free(&r);
    exchange(c, code, NULL, T0 + 30, &r); /* revoked once only */
    assert_error(&r, 400, "invalid_grant", REUSE);
    sim_core_resp_free(&r);

    s = stats(c);
    assert_int_equal(num(s, "token_requests", NULL), 3);
    assert_int_equal(num(s, "grants", "active"), 0);
    assert_int_equal(num(s, "grants", "revoked"), 1);
    const cJSON *cs = code_stats(s, code);
    assert_non_null(cs);
    assert_int_equal(num(cs, "token_requests", NULL), 3);
    assert_int_equal(num(cs, "last_status", NULL), 400);
    assert_string_equal(cJSON_GetObjectItem(cs, "grant")->valuestring, "revoked");
    assert_int_equal(num(cs, "after_consumed", NULL), 2); /* the two reuses */
    cJSON_Delete(s);
    free(code);
    sim_core_free(c);
}

static void test_token_unknown_code(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    sim_core_resp r;
    exchange(c, "ac_doesnotexist000000000000000000", NULL, T0, &r);
    assert_error(&r, 400, "invalid_grant", "Authorization code provided does not exist.");
    assert_null(strstr(r.body, "ac_doesnotexist"));
    sim_core_resp_free(&r);
    cJSON *s = stats(c);
    assert_int_equal(num(s, "token_requests", NULL), 1);
    const cJSON *cs = code_stats(s, "ac_doesnotexist000000000000000000");
    assert_non_null(cs);
    assert_int_equal(num(cs, "last_status", NULL), 400);
    cJSON_Delete(s);
    sim_core_free(c);
}

static void test_token_expiry(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 1000, 0, 0);
    char *a = authorize(c, NULL, T0), *b = authorize(c, NULL, T0);
    sim_core_resp r;
    exchange(c, a, NULL, T0 + 1000, &r); /* exactly at the TTL: still valid */
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);
    exchange(c, b, NULL, T0 + 1001, &r);
    assert_error(&r, 400, "invalid_grant", "This authorization code has expired.");
    sim_core_resp_free(&r);
    exchange(c, b, NULL, T0 + 5, &r); /* once expired, unusable for good */
    assert_error(&r, 400, "invalid_grant", "This authorization code has expired.");
    sim_core_resp_free(&r);
    /* reuse of a consumed code is reported (and revokes) even after expiry */
    exchange(c, a, NULL, T0 + 100000, &r);
    assert_error(&r, 400, "invalid_grant", REUSE);
    sim_core_resp_free(&r);
    cJSON *s = stats(c);
    assert_int_equal(num(s, "grants", "revoked"), 1);
    cJSON_Delete(s);
    free(a);
    free(b);
    sim_core_free(c);
}

static void test_token_request_errors(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    char *code = authorize(c, NULL, T0);
    char body[512];
    sim_core_resp r;

    snprintf(body, sizeof body, "code=%s&client_secret=" SECRET, code);
    post(c, "/oauth/token", NULL, body, T0, &r);
    assert_error(&r, 400, "invalid_request", "Missing required param: grant_type.");
    sim_core_resp_free(&r);

    snprintf(body, sizeof body, "grant_type=password&code=%s&client_secret=" SECRET, code);
    post(c, "/oauth/token", NULL, body, T0, &r);
    assert_error(&r, 400, "unsupported_grant_type", NULL);
    sim_core_resp_free(&r);

    post(c, "/oauth/token", NULL, "grant_type=authorization_code&client_secret=" SECRET, T0, &r);
    assert_error(&r, 400, "invalid_request", "Missing required param: code.");
    sim_core_resp_free(&r);

    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s&code=%s", code, code);
    post(c, "/oauth/token", NULL, body, T0, &r);
    assert_error(&r, 400, "invalid_request", NULL);
    sim_core_resp_free(&r);

    post(c, "/oauth/token", NULL, "grant_type=authorization_code&code=%4", T0, &r);
    assert_error(&r, 400, "invalid_request", NULL);
    sim_core_resp_free(&r);

    post(c, "/oauth/token", NULL, "grant_type=authorization_code&code=a%00b", T0, &r);
    assert_error(&r, 400, "invalid_request", NULL);
    sim_core_resp_free(&r);

    char many[1024] = "";
    for (int i = 0; i < 40; i++) {
        char p[16];
        snprintf(p, sizeof p, "p%d=x&", i);
        strcat(many, p);
    }
    post(c, "/oauth/token", NULL, many, T0, &r);
    assert_error(&r, 400, "invalid_request", NULL);
    sim_core_resp_free(&r);

    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s&client_secret=" SECRET,
             code);
    req(c, "POST", "/oauth/token", NULL, "application/json", body, T0, &r);
    assert_error(&r, 400, "invalid_request", NULL);
    sim_core_resp_free(&r);

    /* none of the above consumed the code; content type with charset is fine */
    req(c, "POST", "/oauth/token", NULL, "application/x-www-form-urlencoded; charset=utf-8", body,
        T0, &r);
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);
    free(code);
    sim_core_free(c);
}

static void test_client_auth(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    char *code = authorize(c, NULL, T0);
    char body[512];
    sim_core_resp r;

    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s&client_secret=wrong", code);
    post(c, "/oauth/token", NULL, body, T0, &r);
    assert_error(&r, 401, "invalid_client", NULL);
    assert_false(r.www_authenticate);
    sim_core_resp_free(&r);

    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s", code);
    post(c, "/oauth/token", NULL, body, T0, &r);
    assert_error(&r, 401, "invalid_client", NULL);
    sim_core_resp_free(&r);

    snprintf(body, sizeof body,
             "grant_type=authorization_code&code=%s&client_id=ca_other&client_secret=" SECRET,
             code);
    post(c, "/oauth/token", NULL, body, T0, &r);
    assert_error(&r, 401, "invalid_client", NULL);
    sim_core_resp_free(&r);

    /* Basic with a wrong secret: 401 + WWW-Authenticate */
    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s", code);
    post(c, "/oauth/token", "Basic Y2FfdGVzdDEyMzp3cm9uZw==", body, T0, &r); /* ca_test123:wrong */
    assert_error(&r, 401, "invalid_client", NULL);
    assert_true(r.www_authenticate);
    sim_core_resp_free(&r);

    post(c, "/oauth/token", "Bearer abc", body, T0, &r);
    assert_error(&r, 401, "invalid_client", NULL);
    sim_core_resp_free(&r);

    /* Basic and body secret together */
    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s&client_secret=" SECRET,
             code);
    post(c, "/oauth/token", "Basic Y2FfdGVzdDEyMzpza19zZWNyZXRfYWJjZGVm", body, T0, &r);
    assert_error(&r, 400, "invalid_request", NULL);
    sim_core_resp_free(&r);

    /* RFC 6749 Basic: base64("ca_test123:sk_secret_abcdef") */
    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s&client_id=" CID, code);
    post(c, "/oauth/token", "Basic Y2FfdGVzdDEyMzpza19zZWNyZXRfYWJjZGVm", body, T0, &r);
    assert_int_equal(r.status, 200);
    assert_false(r.www_authenticate);
    sim_core_resp_free(&r);

    /* Stripe style Basic: base64("sk_secret_abcdef:") */
    char *code2 = authorize(c, NULL, T0);
    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s", code2);
    post(c, "/oauth/token", "basic c2tfc2VjcmV0X2FiY2RlZjo=", body, T0, &r);
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);

    /* failed attempts were counted against the code */
    cJSON *s = stats(c);
    assert_int_equal(num(code_stats(s, code), "token_requests", NULL), 7);
    assert_int_equal(num(code_stats(s, code), "last_status", NULL), 200);
    cJSON_Delete(s);
    free(code);
    free(code2);
    sim_core_free(c);
}

static void test_parse_basic(void **st)
{
    (void)st;
    char u[64], p[64];
    /* base64("ca%3Ax+y:p%25w%2B") → "ca:x y" / "p%w+" (RFC 6749 §2.3.1 decoding) */
    assert_int_equal(
        sim_core_parse_basic("Basic Y2ElM0F4K3k6cCUyNXclMkI=", u, sizeof u, p, sizeof p), 0);
    assert_string_equal(u, "ca:x y");
    assert_string_equal(p, "p%w+");
    assert_int_equal(sim_core_parse_basic("Basic dXNlcjo=", u, sizeof u, p, sizeof p), 0);
    assert_string_equal(u, "user");
    assert_string_equal(p, "");
    assert_int_equal(sim_core_parse_basic("Basic   dTpw  ", u, sizeof u, p, sizeof p), 0);
    assert_string_equal(u, "u");
    assert_string_equal(p, "p");
    assert_int_equal(sim_core_parse_basic("Basic dXNlcg==", u, sizeof u, p, sizeof p), -1);
    assert_int_equal(sim_core_parse_basic("Basic dXNlcjo", u, sizeof u, p, sizeof p), -1);
    assert_int_equal(sim_core_parse_basic("Basic d=Nlcjo=", u, sizeof u, p, sizeof p), -1);
    assert_int_equal(sim_core_parse_basic("Basic !!!!", u, sizeof u, p, sizeof p), -1);
    assert_int_equal(sim_core_parse_basic("Bearer dXNlcjo=", u, sizeof u, p, sizeof p), -1);
    assert_int_equal(sim_core_parse_basic("Basicx dXNlcjo=", u, sizeof u, p, sizeof p), -1);
    assert_int_equal(sim_core_parse_basic("Basic ", u, sizeof u, p, sizeof p), -1);
    assert_int_equal(sim_core_parse_basic(NULL, u, sizeof u, p, sizeof p), -1);
    /* user longer than its buffer */
    assert_int_equal(sim_core_parse_basic("Basic YWFhYWFhYWE6cA==", u, 4, p, sizeof p), -1);
    /* bad escape in the decoded user */
    assert_int_equal(sim_core_parse_basic("Basic YSV6OmI=", u, sizeof u, p, sizeof p), -1);
}

static void test_pkce(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    char extra[256];
    snprintf(extra, sizeof extra, "&code_challenge=%s&code_challenge_method=S256", RFC_CHALLENGE);
    char *code = authorize(c, extra, T0);
    sim_core_resp r;

    exchange(c, code, NULL, T0, &r);
    assert_error(&r, 400, "invalid_grant", "Missing required param: code_verifier.");
    sim_core_resp_free(&r);
    exchange(c, code, "&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX", T0, &r);
    assert_error(&r, 400, "invalid_grant", NULL);
    sim_core_resp_free(&r);
    exchange(c, code, "&code_verifier=short", T0, &r);
    assert_error(&r, 400, "invalid_grant", NULL);
    sim_core_resp_free(&r);

    /* failures did not consume the code */
    char ok[128];
    snprintf(ok, sizeof ok, "&code_verifier=%s", RFC_VERIFIER);
    exchange(c, code, ok, T0, &r);
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);

    /* verifier for a code issued without challenge: refused (RFC 9700 §2.1.1) */
    char *plain = authorize(c, NULL, T0);
    exchange(c, plain, ok, T0, &r);
    assert_error(&r, 400, "invalid_grant", NULL);
    sim_core_resp_free(&r);
    exchange(c, plain, NULL, T0, &r);
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);
    free(plain);
    free(code);
    sim_core_free(c);
}

static void test_redirect_uri_binding(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    char *code = authorize(c, "&redirect_uri=http%3A%2F%2Fapp.example%2Fcb2%3Fx%3D1", T0);
    sim_core_resp r;
    exchange(c, code, "&redirect_uri=http%3A%2F%2Fapp.example%2Fcb", T0, &r);
    assert_error(&r, 400, "invalid_grant", NULL);
    sim_core_resp_free(&r);
    exchange(c, code, "&redirect_uri=http%3A%2F%2Fapp.example%2Fcb2%3Fx%3D1", T0, &r);
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);
    free(code);

    code = authorize(c, "&redirect_uri=http%3A%2F%2Fapp.example%2Fcb2%3Fx%3D1", T0);
    exchange(c, code, NULL, T0, &r); /* omitted at token: fine (Stripe does not take it) */
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);
    free(code);

    code = authorize(c, NULL, T0); /* not sent: optional, must match the default if given */
    exchange(c, code, "&redirect_uri=http%3A%2F%2Fapp.example%2Fcb", T0, &r);
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);
    free(code);
    sim_core_free(c);
}

/* ---- faults ------------------------------------------------------------- */

static void test_parse_fault(void **st)
{
    (void)st;
    sim_core_fault f;
    long ms;
    static const struct {
        const char *s;
        sim_core_fault f;
        long ms;
    } ok[] = {
        {"deny", SIM_FAULT_DENY, 0},
        {"429", SIM_FAULT_429, 0},
        {"500_before", SIM_FAULT_500_BEFORE, 0},
        {"500_after", SIM_FAULT_500_AFTER, 0},
        {"cut_after", SIM_FAULT_CUT_AFTER, 0},
        {"hang", SIM_FAULT_HANG, 0},
        {"latency:0", SIM_FAULT_LATENCY, 0},
        {"latency:250", SIM_FAULT_LATENCY, 250},
        {"latency:600000", SIM_FAULT_LATENCY, 600000},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(sim_core_parse_fault(ok[i].s, &f, &ms), 0);
        assert_int_equal(f, ok[i].f);
        assert_int_equal(ms, ok[i].ms);
    }
    const char *bad[] = {
        "",    "Deny", "latency", "latency:",        "latency:-1", "latency:1x", "latency:600001",
        "500", "cut",  "hang ",   "latency:99999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(sim_core_parse_fault(bad[i], &f, &ms), -1);
    assert_int_equal(sim_core_parse_fault(NULL, &f, &ms), -1);
}

static void test_fault_before(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    sim_core_resp r;
    char *a = authorize(c, "&sim_fault=429", T0);
    exchange(c, a, NULL, T0, &r);
    assert_error(&r, 429, "rate_limit", NULL);
    assert_int_equal(r.retry_after_s, 1);
    sim_core_resp_free(&r);
    exchange(c, a, NULL, T0, &r); /* code stayed unused; fault only once */
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);

    char *b = authorize(c, "&sim_fault=500_before", T0);
    exchange(c, b, NULL, T0, &r);
    assert_error(&r, 500, "api_error", NULL);
    sim_core_resp_free(&r);
    exchange(c, b, NULL, T0, &r);
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);

    char *h = authorize(c, "&sim_fault=hang", T0);
    exchange(c, h, NULL, T0, &r);
    assert_int_equal(r.action, SIM_CORE_HANG);
    sim_core_resp_free(&r);
    cJSON *s = stats(c);
    assert_int_equal(num(code_stats(s, h), "last_status", NULL), 0);
    assert_int_equal(num(s, "grants", "active"), 2);
    cJSON_Delete(s);
    exchange(c, h, NULL, T0, &r);
    assert_int_equal(r.action, SIM_CORE_ANSWER);
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);

    s = stats(c);
    assert_int_equal(num(code_stats(s, a), "token_requests", NULL), 2);
    assert_int_equal(num(code_stats(s, a), "last_status", NULL), 200);
    assert_int_equal(num(s, "grants", "active"), 3);
    assert_int_equal(num(s, "grants", "revoked"), 0);
    cJSON_Delete(s);
    free(a);
    free(b);
    free(h);
    sim_core_free(c);
}

static void test_fault_after(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    sim_core_resp r;
    char *a = authorize(c, "&sim_fault=500_after", T0);
    exchange(c, a, NULL, T0, &r);
    assert_error(&r, 500, "api_error", NULL);
    sim_core_resp_free(&r);
    cJSON *s = stats(c);
    assert_int_equal(num(s, "grants", "active"), 1);
    assert_int_equal(num(code_stats(s, a), "last_status", NULL), 500);
    cJSON_Delete(s);
    exchange(c, a, NULL, T0, &r);
    assert_error(&r, 400, "invalid_grant", REUSE);
    sim_core_resp_free(&r);

    char *b = authorize(c, "&sim_fault=cut_after", T0);
    exchange(c, b, NULL, T0, &r);
    assert_int_equal(r.action, SIM_CORE_CUT);
    sim_core_resp_free(&r);
    s = stats(c);
    assert_int_equal(num(s, "grants", "active"), 1);
    assert_int_equal(num(s, "grants", "revoked"), 1);
    assert_int_equal(num(code_stats(s, b), "last_status", NULL), 0);
    cJSON_Delete(s);
    exchange(c, b, NULL, T0, &r);
    assert_int_equal(r.action, SIM_CORE_ANSWER);
    assert_error(&r, 400, "invalid_grant", REUSE);
    sim_core_resp_free(&r);
    s = stats(c);
    assert_int_equal(num(s, "grants", "active"), 0);
    assert_int_equal(num(s, "grants", "revoked"), 2);
    cJSON_Delete(s);
    free(a);
    free(b);
    sim_core_free(c);
}

static void test_latency(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 40, 0);
    sim_core_resp r;
    char *a = authorize(c, "&sim_fault=latency:250", T0);
    exchange(c, a, NULL, T0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.delay_ms, 290);
    sim_core_resp_free(&r);
    exchange(c, a, NULL, T0, &r);
    assert_int_equal(r.status, 400);
    assert_int_equal(r.delay_ms, 40);
    sim_core_resp_free(&r);
    get(c, "/_sim/stats", T0, &r);
    assert_int_equal(r.delay_ms, 0);
    sim_core_resp_free(&r);
    free(a);
    sim_core_free(c);
}

/* ---- deauthorize -------------------------------------------------------- */

static void test_deauthorize(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    char *code = authorize(c, NULL, T0);
    sim_core_resp r;
    exchange(c, code, NULL, T0, &r);
    cJSON *j = cJSON_Parse(r.body);
    char acct[64];
    snprintf(acct, sizeof acct, "%s", cJSON_GetObjectItem(j, "stripe_user_id")->valuestring);
    cJSON_Delete(j);
    sim_core_resp_free(&r);

    char body[256];
    snprintf(body, sizeof body, "stripe_user_id=%s&client_secret=" SECRET, acct);
    post(c, "/oauth/deauthorize", NULL, body, T0, &r);
    assert_error(&r, 400, "invalid_request", "Missing required param: client_id.");
    sim_core_resp_free(&r);

    snprintf(body, sizeof body, "client_id=" CID "&stripe_user_id=%s&client_secret=nope", acct);
    post(c, "/oauth/deauthorize", NULL, body, T0, &r);
    assert_error(&r, 401, "invalid_client", NULL);
    sim_core_resp_free(&r);

    post(c, "/oauth/deauthorize", NULL, "client_id=" CID "&client_secret=" SECRET, T0, &r);
    assert_error(&r, 400, "invalid_request", NULL);
    sim_core_resp_free(&r);

    /* Stripe style: secret as the Basic user */
    snprintf(body, sizeof body, "client_id=" CID "&stripe_user_id=%s", acct);
    post(c, "/oauth/deauthorize", "Basic c2tfc2VjcmV0X2FiY2RlZjo=", body, T0, &r);
    assert_int_equal(r.status, 200);
    j = cJSON_Parse(r.body);
    assert_string_equal(cJSON_GetObjectItem(j, "stripe_user_id")->valuestring, acct);
    assert_int_equal(cJSON_GetArraySize(j), 1);
    cJSON_Delete(j);
    sim_core_resp_free(&r);

    cJSON *s = stats(c);
    assert_int_equal(num(s, "grants", "active"), 0);
    assert_int_equal(num(s, "grants", "deauthorized"), 1);
    cJSON_Delete(s);

    snprintf(body, sizeof body, "client_id=" CID "&stripe_user_id=%s&client_secret=" SECRET, acct);
    post(c, "/oauth/deauthorize", NULL, body, T0, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "is not connected to stripe account"));
    sim_core_resp_free(&r);
    post(c, "/oauth/deauthorize", NULL,
         "client_id=" CID "&stripe_user_id=acct_nothere&client_secret=" SECRET, T0, &r);
    assert_error(&r, 401, "invalid_client",
                 "This application is not connected to stripe account acct_nothere, or that "
                 "account does not exist.");
    sim_core_resp_free(&r);

    /* reuse after deauthorize: reuse error, the grant stays deauthorized */
    exchange(c, code, NULL, T0, &r);
    assert_error(&r, 400, "invalid_grant", REUSE);
    sim_core_resp_free(&r);
    s = stats(c);
    assert_int_equal(num(s, "grants", "revoked"), 0);
    assert_int_equal(num(s, "grants", "deauthorized"), 1);
    cJSON_Delete(s);
    free(code);
    sim_core_free(c);
}

/* ---- stats, routing, limits --------------------------------------------- */

static void test_stats_shape(void **st)
{
    (void)st;
    char hex[65];
    assert_int_equal(sim_core_sha256_hex("abc", 3, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

    sim_core_t *c = mk(1, 0, 0, 0);
    cJSON *s = stats(c);
    assert_int_equal(cJSON_GetArraySize(s), 4);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(s, "refresh_tokens")), 0);
    assert_int_equal(num(s, "token_requests", NULL), 0);
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(s, "codes")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(s, "codes")), 0);
    assert_int_equal(num(s, "grants", "active"), 0);
    assert_int_equal(num(s, "grants", "revoked"), 0);
    cJSON_Delete(s);

    /* issued but never exchanged codes are not listed; requests without a code don't count */
    char *code = authorize(c, NULL, T0);
    sim_core_resp r;
    post(c, "/oauth/token", NULL, "grant_type=authorization_code&client_secret=" SECRET, T0, &r);
    sim_core_resp_free(&r);
    s = stats(c);
    assert_int_equal(num(s, "token_requests", NULL), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(s, "codes")), 0);
    cJSON_Delete(s);
    exchange(c, code, NULL, T0, &r);
    sim_core_resp_free(&r);
    s = stats(c);
    const cJSON *codes = cJSON_GetObjectItem(s, "codes");
    assert_int_equal(cJSON_GetArraySize(codes), 1);
    sim_core_sha256_hex(code, strlen(code), hex);
    assert_string_equal(codes->child->string, hex);
    /* token_requests, after_consumed, last_status, grant */
    assert_int_equal(cJSON_GetArraySize(codes->child), 4);
    cJSON_Delete(s);
    free(code);
    sim_core_free(c);
}

static void test_routing(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 0);
    sim_core_resp r;
    get(c, "/nope", T0, &r);
    assert_error(&r, 404, "not_found", NULL);
    sim_core_resp_free(&r);
    get(c, "/oauth/authorize/x?client_id=" CID, T0, &r);
    assert_int_equal(r.status, 404);
    sim_core_resp_free(&r);
    get(c, "/oauth/token", T0, &r);
    assert_error(&r, 405, "method_not_allowed", NULL);
    assert_string_equal(r.allow, "POST");
    sim_core_resp_free(&r);
    post(c, "/oauth/authorize", NULL, "", T0, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET");
    sim_core_resp_free(&r);
    req(c, "DELETE", "/_sim/stats", NULL, NULL, NULL, T0, &r);
    assert_int_equal(r.status, 405);
    sim_core_resp_free(&r);
    sim_core_free(c);

    err_t e;
    sim_core_opts bad = {.client_id = CID};
    assert_null(sim_core_new(&bad, &e));
    const char *const br[] = {"ftp://x/cb"};
    sim_core_opts bad2 = {
        .client_id = CID, .client_secret = SECRET, .redirect_uris = br, .n_redirect_uris = 1};
    assert_null(sim_core_new(&bad2, &e));
}

static void test_eviction(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 2);
    char *a = authorize(c, NULL, T0), *b = authorize(c, NULL, T0), *d = authorize(c, NULL, T0);
    sim_core_resp r;
    exchange(c, a, NULL, T0, &r); /* evicted: oldest */
    assert_error(&r, 400, "invalid_grant", "Authorization code provided does not exist.");
    sim_core_resp_free(&r);
    exchange(c, d, NULL, T0, &r);
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);
    free(a);
    free(b);
    free(d);
    sim_core_free(c);
}

/* ---- concurrency -------------------------------------------------------- */

typedef struct {
    sim_core_t *c;
    const char *code;
    int status;
} race_arg;

static void *race(void *p)
{
    race_arg *a = p;
    char body[256];
    snprintf(body, sizeof body, "grant_type=authorization_code&code=%s&client_secret=" SECRET,
             a->code);
    sim_core_req rq = {.method = "POST",
                       .uri = "/oauth/token",
                       .content_type = "application/x-www-form-urlencoded",
                       .body = body,
                       .body_len = strlen(body)};
    sim_core_resp r;
    err_t e;
    a->status = sim_core_handle(a->c, &rq, T0, &r, &e) == 0 ? r.status : -1;
    sim_core_resp_free(&r);
    return NULL;
}

static void test_concurrent_exchanges(void **st)
{
    (void)st;
    enum { N = 8 };
    sim_core_t *c = mk(1, 0, 0, 0);
    char *code = authorize(c, NULL, T0);
    pthread_t t[N];
    race_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (race_arg){c, code, 0};
        assert_int_equal(pthread_create(&t[i], NULL, race, &a[i]), 0);
    }
    int ok = 0, reused = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        ok += a[i].status == 200;
        reused += a[i].status == 400;
    }
    assert_int_equal(ok, 1);
    assert_int_equal(reused, N - 1);
    cJSON *s = stats(c);
    assert_int_equal(num(s, "token_requests", NULL), N);
    assert_int_equal(num(code_stats(s, code), "token_requests", NULL), N);
    assert_int_equal(num(s, "grants", "active"), 0);
    assert_int_equal(num(s, "grants", "revoked"), 1);
    cJSON_Delete(s);
    free(code);
    sim_core_free(c);
}

/* ---- refresh (RFC 6749 §6, RFC 9700 §4.14.2) ---------------------------- */

static sim_core_t *mk_refresh(int64_t access_ttl_ms, int no_rotation)
{
    sim_core_opts o = {
        .client_id = CID,
        .client_secret = SECRET,
        .redirect_uris = REDIRS,
        .n_redirect_uris = 2,
        .access_ttl_ms = access_ttl_ms,
        .no_refresh_rotation = no_rotation,
    };
    err_t e;
    sim_core_t *c = sim_core_new(&o, &e);
    assert_non_null(c);
    return c;
}

/* Exchange a fresh code (authorize extra); returns the malloc'd refresh token. */
static char *connect_rt(sim_core_t *c, const char *extra)
{
    char *code = authorize(c, extra, T0);
    sim_core_resp r;
    exchange(c, code, NULL, T0, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    char *rt = strdup(cJSON_GetObjectItem(j, "refresh_token")->valuestring);
    cJSON_Delete(j);
    sim_core_resp_free(&r);
    free(code);
    return rt;
}

static void refresh(sim_core_t *c, const char *rt, sim_core_resp *r)
{
    char body[512];
    snprintf(body, sizeof body, "grant_type=refresh_token&refresh_token=%s&client_secret=" SECRET,
             rt);
    post(c, "/oauth/token", NULL, body, T0, r);
}

/* The refresh token of a 200 answer (malloc'd). */
static char *rt_of(const sim_core_resp *r)
{
    assert_int_equal(r->status, 200);
    cJSON *j = cJSON_Parse(r->body);
    assert_non_null(j);
    assert_int_equal(strncmp(cJSON_GetObjectItem(j, "access_token")->valuestring, "sk_test_", 8),
                     0);
    assert_string_equal(cJSON_GetObjectItem(j, "token_type")->valuestring, "bearer");
    char *rt = strdup(cJSON_GetObjectItem(j, "refresh_token")->valuestring);
    cJSON_Delete(j);
    return rt;
}

static double rt_requests(sim_core_t *c, const char *rt)
{
    char hex[65];
    assert_int_equal(sim_core_sha256_hex(rt, strlen(rt), hex), 0);
    cJSON *s = stats(c);
    const cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(s, "refresh_tokens"), hex);
    double n = e ? num(e, "requests", NULL) : 0;
    if (e)
        assert_int_equal(cJSON_GetArraySize(e), 1);
    cJSON_Delete(s);
    return n;
}

static void test_refresh_rotation_and_reuse_revokes_family(void **st)
{
    (void)st;
    sim_core_t *c = mk_refresh(0, 0);
    char *rt0 = connect_rt(c, NULL);
    sim_core_resp r;
    refresh(c, rt0, &r);
    char *rt1 = rt_of(&r);
    assert_string_equal(r.event, "refresh_rotated");
    assert_string_not_equal(rt0, rt1);
    sim_core_resp_free(&r);
    refresh(c, rt1, &r);
    char *rt2 = rt_of(&r);
    sim_core_resp_free(&r);
    cJSON *s = stats(c);
    assert_int_equal(num(s, "grants", "active"), 1);
    assert_int_equal(num(s, "token_requests", NULL), 1); /* refreshes are not code requests */
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(s, "codes")), 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(s, "refresh_tokens")), 2);
    cJSON_Delete(s);

    /* a second use of the rotated-out rt1 is theft: the family is revoked... */
    refresh(c, rt1, &r);
    assert_error(&r, 400, "invalid_grant", NULL);
    assert_string_equal(r.event, "refresh_reused");
    sim_core_resp_free(&r);
    s = stats(c);
    assert_int_equal(num(s, "grants", "active"), 0);
    assert_int_equal(num(s, "grants", "revoked"), 1);
    cJSON_Delete(s);
    /* ...the newest refresh token included */
    refresh(c, rt2, &r);
    assert_error(&r, 400, "invalid_grant", NULL);
    assert_string_equal(r.event, "refresh_revoked");
    sim_core_resp_free(&r);
    assert_int_equal(rt_requests(c, rt0), 1);
    assert_int_equal(rt_requests(c, rt1), 2);
    assert_int_equal(rt_requests(c, rt2), 1);

    /* unknown and missing refresh tokens, codes presented as refresh tokens */
    refresh(c, "rt_nope", &r);
    assert_error(&r, 400, "invalid_grant", "Refresh token provided does not exist.");
    sim_core_resp_free(&r);
    assert_int_equal(rt_requests(c, "rt_nope"), 1);
    post(c, "/oauth/token", NULL, "grant_type=refresh_token&client_secret=" SECRET, T0, &r);
    assert_error(&r, 400, "invalid_request", "Missing required param: refresh_token.");
    sim_core_resp_free(&r);
    char *code = authorize(c, NULL, T0);
    refresh(c, code, &r);
    assert_error(&r, 400, "invalid_grant", "Refresh token provided does not exist.");
    sim_core_resp_free(&r);
    /* client authentication applies */
    char body[512];
    snprintf(body, sizeof body, "grant_type=refresh_token&refresh_token=%s&client_secret=bad", rt2);
    post(c, "/oauth/token", NULL, body, T0, &r);
    assert_int_equal(r.status, 401);
    sim_core_resp_free(&r);
    free(code);
    free(rt0);
    free(rt1);
    free(rt2);
    sim_core_free(c);
}

static void test_refresh_revoked_with_grant(void **st)
{
    (void)st;
    sim_core_t *c = mk_refresh(0, 0);
    /* code reuse revokes the grant and with it its refresh tokens */
    char *code = authorize(c, NULL, T0);
    sim_core_resp r;
    exchange(c, code, NULL, T0, &r);
    char *rt = rt_of(&r);
    cJSON *j = cJSON_Parse(r.body);
    char acct[64];
    snprintf(acct, sizeof acct, "%s", cJSON_GetObjectItem(j, "stripe_user_id")->valuestring);
    cJSON_Delete(j);
    sim_core_resp_free(&r);
    exchange(c, code, NULL, T0, &r);
    sim_core_resp_free(&r);
    refresh(c, rt, &r);
    assert_error(&r, 400, "invalid_grant", "This refresh token has been revoked.");
    sim_core_resp_free(&r);
    free(rt);
    free(code);
    /* deauthorize ends them too */
    rt = connect_rt(c, NULL);
    refresh(c, rt, &r);
    char *rt1 = rt_of(&r);
    j = cJSON_Parse(r.body);
    snprintf(acct, sizeof acct, "%s", cJSON_GetObjectItem(j, "stripe_user_id")->valuestring);
    cJSON_Delete(j);
    sim_core_resp_free(&r);
    char body[256];
    snprintf(body, sizeof body, "client_id=" CID "&client_secret=" SECRET "&stripe_user_id=%s",
             acct);
    post(c, "/oauth/deauthorize", NULL, body, T0, &r);
    assert_int_equal(r.status, 200);
    sim_core_resp_free(&r);
    refresh(c, rt1, &r);
    assert_error(&r, 400, "invalid_grant", "This refresh token has been revoked.");
    sim_core_resp_free(&r);
    free(rt);
    free(rt1);
    sim_core_free(c);
}

static void test_refresh_without_rotation(void **st)
{
    (void)st;
    sim_core_t *c = mk_refresh(0, 1);
    char *rt = connect_rt(c, NULL);
    for (int i = 0; i < 3; i++) {
        sim_core_resp r;
        refresh(c, rt, &r);
        char *again = rt_of(&r);
        assert_string_equal(again, rt);
        assert_string_equal(r.event, "refreshed");
        free(again);
        sim_core_resp_free(&r);
    }
    assert_int_equal(rt_requests(c, rt), 3);
    cJSON *s = stats(c);
    assert_int_equal(num(s, "grants", "active"), 1);
    assert_int_equal(num(s, "grants", "revoked"), 0);
    cJSON_Delete(s);
    free(rt);
    sim_core_free(c);
}

static void test_access_ttl(void **st)
{
    (void)st;
    sim_core_t *c = mk_refresh(1500, 0);
    char *code = authorize(c, NULL, T0);
    sim_core_resp r;
    exchange(c, code, NULL, T0, &r);
    cJSON *j = cJSON_Parse(r.body);
    assert_int_equal(num(j, "expires_in", NULL), 2); /* seconds, rounded up */
    char *rt = strdup(cJSON_GetObjectItem(j, "refresh_token")->valuestring);
    cJSON_Delete(j);
    sim_core_resp_free(&r);
    refresh(c, rt, &r);
    j = cJSON_Parse(r.body);
    assert_int_equal(num(j, "expires_in", NULL), 2);
    cJSON_Delete(j);
    sim_core_resp_free(&r);
    free(rt);
    free(code);
    sim_core_free(c);
    /* without a lifetime, no expires_in */
    c = mk_refresh(0, 0);
    code = authorize(c, NULL, T0);
    exchange(c, code, NULL, T0, &r);
    j = cJSON_Parse(r.body);
    assert_null(cJSON_GetObjectItem(j, "expires_in"));
    cJSON_Delete(j);
    sim_core_resp_free(&r);
    free(code);
    sim_core_free(c);
    sim_core_opts bad = {.client_id = CID, .client_secret = SECRET, .access_ttl_ms = -1};
    err_t e;
    assert_null(sim_core_new(&bad, &e));
}

static void test_refresh_faults(void **st)
{
    (void)st;
    sim_core_t *c = mk_refresh(0, 0);
    sim_core_resp r;
    get(c, "/oauth/authorize?response_type=code&client_id=" CID "&sim_refresh_fault=deny", T0, &r);
    assert_int_equal(r.status, 400);
    sim_core_resp_free(&r);
    get(c, "/oauth/authorize?response_type=code&client_id=" CID "&sim_refresh_fault=bogus", T0, &r);
    assert_int_equal(r.status, 400);
    sim_core_resp_free(&r);

    /* 500_before: not consumed, the retry rotates normally */
    char *rt = connect_rt(c, "&sim_refresh_fault=500_before"); /* the code exchange is normal */
    refresh(c, rt, &r);
    assert_error(&r, 500, "api_error", NULL);
    sim_core_resp_free(&r);
    refresh(c, rt, &r);
    char *rt1 = rt_of(&r);
    sim_core_resp_free(&r);
    refresh(c, rt1, &r); /* the fault does not travel to the rotated token */
    char *rt2 = rt_of(&r);
    sim_core_resp_free(&r);
    free(rt);
    free(rt1);
    free(rt2);

    /* cut_after: rotated out, answer lost; the blind re-send is reuse and revokes */
    rt = connect_rt(c, "&sim_refresh_fault=cut_after");
    refresh(c, rt, &r);
    assert_int_equal(r.action, SIM_CORE_CUT);
    sim_core_resp_free(&r);
    refresh(c, rt, &r);
    assert_error(&r, 400, "invalid_grant", NULL);
    assert_string_equal(r.event, "refresh_reused");
    sim_core_resp_free(&r);
    cJSON *s = stats(c);
    assert_int_equal(num(s, "grants", "revoked"), 1);
    cJSON_Delete(s);
    free(rt);

    /* 500_after likewise; 429 and hang leave the token unused */
    rt = connect_rt(c, "&sim_refresh_fault=500_after");
    refresh(c, rt, &r);
    assert_error(&r, 500, "api_error", NULL);
    sim_core_resp_free(&r);
    refresh(c, rt, &r);
    assert_string_equal(r.event, "refresh_reused");
    sim_core_resp_free(&r);
    free(rt);
    rt = connect_rt(c, "&sim_refresh_fault=429");
    refresh(c, rt, &r);
    assert_int_equal(r.status, 429);
    assert_int_equal(r.retry_after_s, 1);
    sim_core_resp_free(&r);
    refresh(c, rt, &r);
    rt1 = rt_of(&r);
    sim_core_resp_free(&r);
    free(rt1);
    free(rt);
    rt = connect_rt(c, "&sim_refresh_fault=hang");
    refresh(c, rt, &r);
    assert_int_equal(r.action, SIM_CORE_HANG);
    sim_core_resp_free(&r);
    refresh(c, rt, &r);
    rt1 = rt_of(&r);
    sim_core_resp_free(&r);
    free(rt1);
    free(rt);
    rt = connect_rt(c, "&sim_refresh_fault=latency:250");
    refresh(c, rt, &r);
    assert_int_equal(r.delay_ms, 250);
    sim_core_resp_free(&r);
    free(rt);
    s = stats(c);
    assert_int_equal(num(s, "grants", "revoked"), 2);
    cJSON_Delete(s);
    sim_core_free(c);
}

/* Refresh records count against max_codes without evicting the records in
 * use; an evicted grant ends its refresh tokens. */
static void test_refresh_eviction(void **st)
{
    (void)st;
    sim_core_t *c = mk(1, 0, 0, 2);
    char *rt = connect_rt(c, NULL); /* code + rt = 2 records */
    sim_core_resp r;
    refresh(c, rt, &r); /* minting rt1 evicts the grant (the oldest), never rt */
    char *rt1 = rt_of(&r);
    sim_core_resp_free(&r);
    refresh(c, rt1, &r);
    assert_error(&r, 400, "invalid_grant", "This refresh token has been revoked.");
    sim_core_resp_free(&r);
    free(rt);
    free(rt1);
    sim_core_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authorize_issues_code),
        cmocka_unit_test(test_authorize_errors),
        cmocka_unit_test(test_authorize_deny),
        cmocka_unit_test(test_token_success_then_reuse_revokes),
        cmocka_unit_test(test_token_unknown_code),
        cmocka_unit_test(test_token_expiry),
        cmocka_unit_test(test_token_request_errors),
        cmocka_unit_test(test_client_auth),
        cmocka_unit_test(test_parse_basic),
        cmocka_unit_test(test_pkce),
        cmocka_unit_test(test_redirect_uri_binding),
        cmocka_unit_test(test_parse_fault),
        cmocka_unit_test(test_fault_before),
        cmocka_unit_test(test_fault_after),
        cmocka_unit_test(test_latency),
        cmocka_unit_test(test_deauthorize),
        cmocka_unit_test(test_stats_shape),
        cmocka_unit_test(test_routing),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_concurrent_exchanges),
        cmocka_unit_test(test_refresh_rotation_and_reuse_revokes_family),
        cmocka_unit_test(test_refresh_revoked_with_grant),
        cmocka_unit_test(test_refresh_without_rotation),
        cmocka_unit_test(test_access_ttl),
        cmocka_unit_test(test_refresh_faults),
        cmocka_unit_test(test_refresh_eviction),
    };
    return cmocka_run_group_tests_name("sim_core", tests, NULL, NULL);
}
