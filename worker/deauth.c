/*
 * deauth — see deauth.h. One libcurl easy transfer per deauth_run, in the
 * caller's thread, on a fresh non-reusable HTTP/1.1 connection, bounded by
 * the caller's timeout (connect and total).
 *
 * Ownership: deauth_run owns the form body (token or account id, maybe the
 * client secret), the header list (maybe Basic credentials) and the response
 * buffer; each is wiped before it is freed. The classifier owns nothing and
 * allocates only cJSON's parse tree, whose strings are wiped before it is
 * deleted.
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

#define RETRY_AFTER_HDR 32
#define ERROR_MAX       64

typedef struct {
    char resp[DEAUTH_BODY_MAX + 1];
    size_t resp_len;
    int overflow;
    char retry_after[RETRY_AFTER_HDR];
} xfer;

/* ---- small helpers ------------------------------------------------------ */

static void result_reset(deauth_result *out)
{
    memset(out, 0, sizeof *out);
}

static void wipe_str(char *s)
{
    if (s)
        crypto_wipe(s, strlen(s));
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

/* Retry-After in delta-seconds form: 0..DEAUTH_RETRY_AFTER_MAX, or -1. */
static int parse_retry_after(const char *v)
{
    if (!v)
        return -1;
    while (*v == ' ' || *v == '\t')
        v++;
    long n = 0;
    int digits = 0;
    while (*v >= '0' && *v <= '9') {
        if (++digits > 10)
            return -1;
        n = n * 10 + (*v - '0');
        v++;
    }
    while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
        v++;
    if (digits == 0 || *v != '\0')
        return -1;
    return n > DEAUTH_RETRY_AFTER_MAX ? DEAUTH_RETRY_AFTER_MAX : (int)n;
}

/* Overwrite every string value of a parse tree. */
static void json_wipe(cJSON *j)
{
    for (cJSON *it = j; it; it = it->next) {
        if (it->valuestring)
            wipe_str(it->valuestring);
        if (it->child)
            json_wipe(it->child);
    }
}

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
    int ra = parse_retry_after(retry_after);
    if (ra >= 0)
        out->retry_after_s = ra;
    if (!body)
        len = 0;

    if (status == 429) {
        out->cls = DEAUTH_RETRY;
        if (out->retry_after_s < 1)
            out->retry_after_s = 1;
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

    cJSON *j = NULL;
    /* A NUL byte is never valid JSON text, and cJSON would silently cut a string at it. */
    if (len > 0 && len <= DEAUTH_BODY_MAX && !memchr(body, '\0', len)) {
        j = cJSON_ParseWithLength(body, len);
        if (j && !cJSON_IsObject(j)) {
            json_wipe(j);
            cJSON_Delete(j);
            j = NULL;
        }
    }
    classify_4xx(pv, status, j, out);
    if (j) {
        json_wipe(j);
        cJSON_Delete(j);
    }
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

/* Append s form-urlencoded (application/x-www-form-urlencoded, space as '+'). */
static void form_enc(char *buf, size_t *len, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            buf[(*len)++] = (char)*p;
        } else if (*p == ' ') {
            buf[(*len)++] = '+';
        } else {
            buf[(*len)++] = '%';
            buf[(*len)++] = hex[*p >> 4];
            buf[(*len)++] = hex[*p & 15];
        }
    }
    buf[*len] = '\0';
}

static void raw_app(char *buf, size_t *len, const char *s)
{
    size_t n = strlen(s);
    memcpy(buf + *len, s, n + 1);
    *len += n;
}

/* Standard base64 with padding into out (NUL-terminated); out must hold 4*ceil(n/3)+1. */
static void b64_std(const unsigned char *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

static int field_ok(const char *s, size_t max)
{
    return s && s[0] && strnlen(s, max + 1) <= max;
}

/* "Authorization: Basic …" of user:pass, each form-urlencoded (RFC 6749 §2.3.1); pass may be ""
 * (Stripe's secret-as-user form). malloc'd, the caller wipes and frees it; NULL when out of
 * memory. */
static char *basic_header(const char *user, const char *pass)
{
    size_t plen = 3 * (strlen(user) + strlen(pass)) + 2;
    size_t hlen = 32 + 4 * (plen / 3 + 1);
    char *pair = malloc(plen);
    char *hdr = malloc(hlen);
    if (!pair || !hdr) {
        free(pair);
        free(hdr);
        return NULL;
    }
    size_t pn = 0, hn = 0;
    pair[0] = '\0';
    hdr[0] = '\0';
    form_enc(pair, &pn, user);
    raw_app(pair, &pn, ":");
    form_enc(pair, &pn, pass);
    raw_app(hdr, &hn, "Authorization: Basic ");
    b64_std((const unsigned char *)pair, pn, hdr + hn);
    crypto_wipe(pair, plen);
    free(pair);
    return hdr;
}

static void free_headers(struct curl_slist *h)
{
    for (struct curl_slist *s = h; s; s = s->next)
        wipe_str(s->data);
    curl_slist_free_all(h);
}

/* Append one header; 0 or -1 (list unchanged). */
static int add_header(struct curl_slist **list, const char *h)
{
    struct curl_slist *s = curl_slist_append(*list, h);
    if (!s)
        return -1;
    *list = s;
    return 0;
}

/* Body and headers of the request; 0, or -1 when out of memory (nothing to free). */
static int build_request(const provider_t *pv, const char *secret, const char *account_id,
                         const char *token, int is_refresh, char **body_out, size_t *body_len,
                         size_t *body_cap, struct curl_slist **hdrs_out)
{
    int stripe = stripe_like(pv);
    int basic = stripe || pv->token_auth == PROVIDER_AUTH_BASIC;
    size_t cap = 128 + 3 * strlen(pv->client_id) + 3 * (stripe ? strlen(account_id) : 0) +
                 3 * (stripe ? 0 : strlen(token)) + (basic ? 0 : 3 * strlen(secret));
    char *body = malloc(cap);
    if (!body)
        return -1;
    size_t n = 0;
    body[0] = '\0';
    if (stripe) {
        raw_app(body, &n, "client_id=");
        form_enc(body, &n, pv->client_id);
        raw_app(body, &n, "&stripe_user_id=");
        form_enc(body, &n, account_id);
    } else {
        raw_app(body, &n, "token=");
        form_enc(body, &n, token);
        raw_app(body, &n,
                is_refresh ? "&token_type_hint=refresh_token" : "&token_type_hint=access_token");
        if (!basic) {
            raw_app(body, &n, "&client_id=");
            form_enc(body, &n, pv->client_id);
            raw_app(body, &n, "&client_secret=");
            form_enc(body, &n, secret);
        }
    }

    struct curl_slist *hdrs = NULL;
    int ok = add_header(&hdrs, "Accept: application/json") == 0 &&
             add_header(&hdrs, "Content-Type: application/x-www-form-urlencoded") == 0 &&
             add_header(&hdrs, "Expect:") == 0;
    if (ok && basic) {
        /* Stripe: the secret key as user, empty password (`curl -u sk_…:`). */
        char *h = stripe ? basic_header(secret, "") : basic_header(pv->client_id, secret);
        ok = h && add_header(&hdrs, h) == 0;
        if (h) {
            wipe_str(h);
            free(h);
        }
    }
    if (!ok) {
        free_headers(hdrs);
        crypto_wipe(body, cap);
        free(body);
        return -1;
    }
    *body_out = body;
    *body_len = n;
    *body_cap = cap;
    *hdrs_out = hdrs;
    return 0;
}

/* ---- libcurl callbacks -------------------------------------------------- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    xfer *t = ud;
    size_t n = size * nmemb;
    if (n > DEAUTH_BODY_MAX - t->resp_len) {
        t->overflow = 1;
        return 0; /* abort: CURLE_WRITE_ERROR */
    }
    memcpy(t->resp + t->resp_len, ptr, n);
    t->resp_len += n;
    t->resp[t->resp_len] = '\0';
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    xfer *t = ud;
    size_t n = size * nmemb;
    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        t->retry_after[0] = '\0'; /* a new response (after 1xx) starts */
        return n;
    }
    static const char name[] = "retry-after:";
    size_t nl = sizeof name - 1;
    if (n > nl && strncasecmp(ptr, name, nl) == 0) {
        size_t vl = n - nl;
        if (vl >= sizeof t->retry_after)
            vl = sizeof t->retry_after - 1;
        memcpy(t->retry_after, ptr + nl, vl);
        t->retry_after[vl] = '\0';
    }
    return n;
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
static void perform(const provider_t *pv, const char *body, size_t body_len,
                    struct curl_slist *hdrs, int timeout_ms, xfer *t, deauth_result *out)
{
    CURL *h = curl_easy_init();
    int bad = !h;
    if (!bad) {
        bad |= curl_easy_setopt(h, CURLOPT_URL, pv->deauthorize_url) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_POST, 1L) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDS, body) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_USERAGENT, "oauthq-worker") != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, t) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_HEADERDATA, t) != CURLE_OK;
    }
    if (bad) {
        classify_transport(CURLE_OUT_OF_MEMORY, out);
        if (h)
            curl_easy_cleanup(h);
        return;
    }
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    const char *ra = t->retry_after[0] ? t->retry_after : NULL;
    if (rc == CURLE_OK && status > 0) {
        deauth_classify_http(pv, status, t->resp, t->resp_len, ra, out);
    } else if (t->overflow && status > 0) {
        /* Too large to parse: the status alone decides. */
        deauth_classify_http(pv, status, NULL, 0, ra, out);
    } else {
        classify_transport(rc == CURLE_OK ? CURLE_WEIRD_SERVER_REPLY : (int)rc, out);
        out->http_status = status;
    }
    curl_easy_cleanup(h);
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

    char *body = NULL;
    size_t body_len = 0, body_cap = 0;
    struct curl_slist *hdrs = NULL;
    if (build_request(pv, client_secret, account_id, token, is_refresh, &body, &body_len, &body_cap,
                      &hdrs) != 0)
        return refuse(out, e, ERRC_FATAL, "out of memory");
    xfer *t = calloc(1, sizeof *t);
    const char *fatal = !t ? "out of memory"
                        : curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK
                            ? "curl_global_init failed"
                            : NULL;
    if (fatal) {
        free(t);
        free_headers(hdrs);
        crypto_wipe(body, body_cap);
        free(body);
        return refuse(out, e, ERRC_FATAL, fatal);
    }
    perform(pv, body, body_len, hdrs, timeout_ms, t, out);
    curl_global_cleanup();
    crypto_wipe(t, sizeof *t);
    free(t);
    free_headers(hdrs);
    crypto_wipe(body, body_cap);
    free(body);
    log_result(pv, out);
    return 0;
}
