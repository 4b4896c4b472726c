/*
 * deauth — see deauth.h. One blocking provhttp transfer per deauth_run, in
 * the caller's thread, with provhttp's wire rules (fresh non-reusable
 * HTTP/1.1 connection, no redirects, bounded answer), bounded by the caller's
 * timeout (connect and total).
 *
 * Ownership: deauth_run owns the provhttp request: the form body (token or
 * account id, maybe the client secret), the header list (maybe Basic
 * credentials) and the response; provhttp wipes each before it is freed. The classifier owns
 * nothing and allocates only cJSON's parse tree, whose strings are wiped before it is deleted.
 *
 * Classification (deauth_classify_http; stripe = profiles stripe and sim):
 *   2xx                                              DONE (RFC 7009: also unknown tokens)
 *   429                                              RETRY, retry_after ≥ 1
 *   408, 5xx, status outside 200..599                RETRY
 *   3xx                                              MISCONFIGURED (deauthorize_url redirects)
 *   4xx error=invalid_client, stripe, 400/401, description contains
 *       "not connected" (any case)                   DONE (already disconnected)
 *   4xx error=invalid_client / incorrect_client_credentials otherwise  MISCONFIGURED
 *   4xx error=invalid_token, oauth2                  DONE (token already unusable; Google)
 *   4xx error=server_error / temporarily_unavailable RETRY
 *   4xx any other error code                         FAILED (401: MISCONFIGURED)
 *   401 without a parseable error                    MISCONFIGURED (RFC 6749 §5.2)
 *   404, 405 without a parseable error               MISCONFIGURED (wrong deauthorize_url)
 *   other 4xx without a parseable error              FAILED
 * Transport: a URL curl cannot use → MISCONFIGURED; anything else (refused,
 * DNS, TLS, timeout, cut) → RETRY, revocation being idempotent.
 */
#include "worker/deauth.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "common/crypto.h"
#include "common/log.h"
#include "common/provhttp.h"

#define ERROR_MAX 64

/* ---- small helpers ------------------------------------------------------ */

static void result_reset(deauth_result *out)
{
    memset(out, 0, sizeof *out);
}

static int stripe_like(const provider_t *pv)
{
    return pv && (pv->profile == PROVIDER_PROFILE_STRIPE || pv->profile == PROVIDER_PROFILE_SIM);
}

const char *deauth_class_name(deauth_class c)
{
    switch (c) {
    case DEAUTH_DONE:
        return "done";
    case DEAUTH_RETRY:
        return "retry";
    case DEAUTH_MISCONFIGURED:
        return "misconfigured";
    case DEAUTH_FAILED:
        return "failed";
    }
    return "?";
}

/* ---- the pure classifier ------------------------------------------------ */

/* The "error" member when it is a short identifier ([A-Za-z0-9_.-]), else NULL. */
static const char *error_code(const cJSON *j)
{
    const cJSON *it = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
    if (!cJSON_IsString(it) || !it->valuestring)
        return NULL;
    const char *s = it->valuestring;
    size_t n = strlen(s);
    if (n == 0 || n >= ERROR_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '_' || c == '.' || c == '-'))
            return NULL;
    }
    return s;
}

typedef struct {
    const char *error;
    deauth_class cls;
} error_map;

/* RFC 6749 §5.2 and RFC 7009 §2.2.1 codes (before the profile-specific rules). */
static const error_map ERRORS[] = {
    {"invalid_client", DEAUTH_MISCONFIGURED},
    {"incorrect_client_credentials", DEAUTH_MISCONFIGURED},
    {"invalid_request", DEAUTH_FAILED},
    {"unauthorized_client", DEAUTH_FAILED},
    {"unsupported_token_type", DEAUTH_FAILED},
    {"invalid_token", DEAUTH_FAILED},
    {"invalid_grant", DEAUTH_FAILED},
    {"access_denied", DEAUTH_FAILED},
    {"invalid_scope", DEAUTH_FAILED},
    {"server_error", DEAUTH_RETRY},
    {"temporarily_unavailable", DEAUTH_RETRY},
};

static const error_map *error_lookup(const char *err)
{
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++)
        if (strcmp(ERRORS[i].error, err) == 0)
            return &ERRORS[i];
    return NULL;
}

/* Stripe's answer for an account that is not (or no longer) connected to us. */
static int says_not_connected(const cJSON *j)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "error_description");
    return cJSON_IsString(d) && d->valuestring && strcasestr(d->valuestring, "not connected");
}

/* Classify a 4xx (other than 408/429) from its parsed body j (may be NULL). */
static void classify_4xx(const provider_t *pv, long status, const cJSON *j, deauth_result *out)
{
    const char *err = error_code(j);
    const error_map *m = err ? error_lookup(err) : NULL;
    if (m) {
        /* Only fixed strings from ERRORS reach detail. */
        out->cls = m->cls;
        const char *note = "";
        if (strcmp(m->error, "invalid_client") == 0 && stripe_like(pv) &&
            (status == 400 || status == 401) && says_not_connected(j)) {
            out->cls = DEAUTH_DONE;
            note = " (not connected)";
        } else if (strcmp(m->error, "invalid_token") == 0 && pv &&
                   pv->profile == PROVIDER_PROFILE_OAUTH2) {
            out->cls = DEAUTH_DONE;
            note = " (token already invalid)";
        }
        snprintf(out->detail, sizeof out->detail, "http %ld %s%s", status, m->error, note);
        return;
    }
    if (err) {
        out->cls = status == 401 ? DEAUTH_MISCONFIGURED : DEAUTH_FAILED;
        snprintf(out->detail, sizeof out->detail, "http %ld unrecognised error", status);
    } else if (status == 401) {
        out->cls = DEAUTH_MISCONFIGURED; /* RFC 6749 §5.2: failed client authentication */
        snprintf(out->detail, sizeof out->detail, "http 401 unparseable error");
    } else if (status == 404 || status == 405) {
        out->cls = DEAUTH_MISCONFIGURED;
        snprintf(out->detail, sizeof out->detail, "http %ld (check deauthorize_url)", status);
    } else {
        out->cls = DEAUTH_FAILED;
        snprintf(out->detail, sizeof out->detail, "http %ld unparseable error", status);
    }
}

void deauth_classify_http(const provider_t *pv, long status, const char *body, size_t len,
                          const char *retry_after, deauth_result *out)
{
    result_reset(out);
    out->http_status = status;
    out->retry_after_s = provhttp_retry_after_s(status, retry_after, DEAUTH_RETRY_AFTER_MAX);

    if (status == 429) {
        out->cls = DEAUTH_RETRY;
        snprintf(out->detail, sizeof out->detail, "http 429 retry-after %d", out->retry_after_s);
        return;
    }
    if (status < 200 || status > 599) {
        out->cls = DEAUTH_RETRY;
        snprintf(out->detail, sizeof out->detail, "http %ld unexpected status", status);
        return;
    }
    if (status < 300) {
        out->cls = DEAUTH_DONE; /* RFC 7009 §2.2: the body is ignored */
        snprintf(out->detail, sizeof out->detail, "http %ld", status);
        return;
    }
    if (status < 400) {
        out->cls = DEAUTH_MISCONFIGURED; /* redirects are not followed: fix the URL */
        snprintf(out->detail, sizeof out->detail, "http %ld redirect (check deauthorize_url)",
                 status);
        return;
    }
    if (status >= 500 || status == 408) {
        out->cls = DEAUTH_RETRY;
        snprintf(out->detail, sizeof out->detail, "http %ld", status);
        return;
    }

    cJSON *j = provhttp_json_object(body, len, DEAUTH_BODY_MAX);
    classify_4xx(pv, status, j, out);
    provhttp_json_free(j);
}

/* ---- transport ---------------------------------------------------------- */

static void classify_transport(int curl_code, deauth_result *out)
{
    result_reset(out);
    const char *what;
    switch (curl_code) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
        out->cls = DEAUTH_MISCONFIGURED; /* nothing was sent: fix the configuration */
        snprintf(out->detail, sizeof out->detail, "curl %d bad deauthorize_url", curl_code);
        return;
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
        what = "resolve failed";
        break;
    case CURLE_COULDNT_CONNECT:
        what = "connect failed";
        break;
    case CURLE_OPERATION_TIMEDOUT:
        what = "timeout";
        break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        what = "tls failed";
        break;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_WEIRD_SERVER_REPLY:
        what = "connection failed";
        break;
    case CURLE_OUT_OF_MEMORY:
        what = "out of memory";
        break;
    default:
        what = "error";
        break;
    }
    out->cls = DEAUTH_RETRY; /* revocation is idempotent: sending it again is harmless */
    snprintf(out->detail, sizeof out->detail, "curl %d %s", curl_code, what);
}

/* ---- request building --------------------------------------------------- */

static int field_ok(const char *s, size_t max)
{
    return s && s[0] && strnlen(s, max + 1) <= max;
}

/* The request (body, headers) for pv; NULL when out of memory. */
static provhttp_t *build_request(const provider_t *pv, const char *secret, const char *account_id,
                                 const char *token, int is_refresh)
{
    int stripe = stripe_like(pv);
    int basic = stripe || pv->token_auth == PROVIDER_AUTH_BASIC;
    provhttp_t *p = provhttp_new(pv->deauthorize_url, DEAUTH_BODY_MAX);
    if (!p)
        return NULL;
    int ok;
    if (stripe) {
        ok = provhttp_form(p, "client_id", pv->client_id) == 0 &&
             provhttp_form(p, "stripe_user_id", account_id) == 0;
    } else {
        ok =
            provhttp_form(p, "token", token) == 0 &&
            provhttp_form(p, "token_type_hint", is_refresh ? "refresh_token" : "access_token") == 0;
        if (ok && !basic)
            ok = provhttp_form(p, "client_id", pv->client_id) == 0 &&
                 provhttp_form(p, "client_secret", secret) == 0;
    }
    /* Stripe: the secret key as user, empty password (`curl -u sk_…:`). */
    if (ok && basic)
        ok = (stripe ? provhttp_basic(p, secret, "") : provhttp_basic(p, pv->client_id, secret)) ==
             0;
    if (!ok) {
        provhttp_free(p);
        return NULL;
    }
    return p;
}

/* ---- the call ----------------------------------------------------------- */

static void log_result(const provider_t *pv, const deauth_result *r)
{
    char st[24];
    snprintf(st, sizeof st, "%ld", r->http_status);
    log_kv(r->cls == DEAUTH_DONE ? LOGL_INFO : LOGL_WARN, "provider_deauthorize", "provider",
           pv->name, "class", deauth_class_name(r->cls), "http_status", st);
}

/* Set out to a local decision (no request sent), log it, and return 0. */
static int decided(const provider_t *pv, deauth_class cls, const char *detail, deauth_result *out)
{
    result_reset(out);
    out->cls = cls;
    snprintf(out->detail, sizeof out->detail, "%s", detail);
    log_result(pv, out);
    return 0;
}

/* out FAILED with detail, e set; returns -1. */
static int refuse(deauth_result *out, err_t *e, errc cls, const char *msg)
{
    result_reset(out);
    out->cls = DEAUTH_FAILED;
    snprintf(out->detail, sizeof out->detail, "%s", msg);
    return err_set(e, cls, "deauth: %s", msg);
}

/* Perform the transfer and classify it into out. */
static void perform(const provider_t *pv, provhttp_t *p, int timeout_ms, deauth_result *out)
{
    if (provhttp_prepare(p, timeout_ms, timeout_ms, NULL) != 0) {
        classify_transport(CURLE_OUT_OF_MEMORY, out);
        return;
    }
    int rc = provhttp_perform(p);
    long status = provhttp_status(p);
    size_t len = 0;
    const char *body = provhttp_body(p, &len);
    const char *ra = provhttp_retry_after(p);
    if (rc == CURLE_OK && status > 0) {
        deauth_classify_http(pv, status, body, len, ra, out);
    } else if (provhttp_too_large(p, rc) && status > 0) {
        /* Too large to parse: the status alone decides. */
        deauth_classify_http(pv, status, NULL, 0, ra, out);
    } else {
        classify_transport(rc == CURLE_OK ? CURLE_WEIRD_SERVER_REPLY : rc, out);
        out->http_status = status;
    }
}

int deauth_run(const provider_t *pv, const char *client_secret, const char *account_id,
               const char *access_token, const char *refresh_token, int timeout_ms,
               deauth_result *out, err_t *e)
{
    deauth_result scratch;
    if (!out)
        out = &scratch;
    if (!pv)
        return refuse(out, e, ERRC_PERMANENT, "no provider");
    if (timeout_ms < 1 || timeout_ms > DEAUTH_TIMEOUT_MAX_MS)
        return refuse(out, e, ERRC_PERMANENT, "timeout out of range");
    int stripe = stripe_like(pv);
    const char *token = NULL;
    int is_refresh = 0;
    if (stripe) {
        if (!field_ok(account_id, DEAUTH_FIELD_MAX))
            return refuse(out, e, ERRC_PERMANENT, "account id missing or too long");
    } else if (refresh_token && refresh_token[0]) {
        token = refresh_token;
        is_refresh = 1;
    } else {
        token = access_token;
    }
    if (!pv->deauthorize_url[0])
        return decided(
            pv, stripe ? DEAUTH_MISCONFIGURED : DEAUTH_DONE,
            stripe ? "no deauthorize_url configured" : "no deauthorize endpoint configured", out);
    if (!stripe && !(token && token[0]))
        return decided(pv, DEAUTH_DONE, "no token held: nothing to revoke", out);
    if (!stripe && !field_ok(token, DEAUTH_FIELD_MAX))
        return refuse(out, e, ERRC_PERMANENT, "token too long");
    if (!field_ok(pv->client_id, DEAUTH_FIELD_MAX))
        return decided(pv, DEAUTH_MISCONFIGURED, "no client_id configured", out);
    if (!field_ok(client_secret, DEAUTH_FIELD_MAX))
        return decided(pv, DEAUTH_MISCONFIGURED, "client secret missing or too long", out);

    provhttp_t *p = build_request(pv, client_secret, account_id, token, is_refresh);
    if (!p)
        return refuse(out, e, ERRC_FATAL, "out of memory");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        provhttp_free(p);
        return refuse(out, e, ERRC_FATAL, "curl_global_init failed");
    }
    perform(pv, p, timeout_ms, out);
    provhttp_free(p);
    curl_global_cleanup();
    log_result(pv, out);
    return 0;
}
