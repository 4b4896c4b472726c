/*
 * exchange — see exchange.h. libcurl multi driven by exchange_run in the
 * caller's thread; our own FIFO bounds concurrency (so a queued request's
 * timeout starts only when it is started). Every transfer uses a fresh,
 * non-reusable HTTP/1.1 connection: libcurl re-sends a request by itself when
 * a *reused* connection dies before any answer byte, which for a token POST
 * would be a second exchange of the same code (G1).
 *
 * Ownership: each queued/active request has an xfer that owns the form body,
 * the header list (with the Basic credentials), the response buffer and the
 * easy handle; all secret-bearing buffers are wiped before free. The
 * classifiers own nothing and allocate only cJSON's parse tree, whose strings
 * are wiped before it is deleted.
 *
 * Threads: an exchange_t belongs to one thread at a time; the classifiers are
 * reentrant.
 */
#include "worker/exchange.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "common/crypto.h"
#include "common/log.h"

#define RESP_INITIAL     4096
#define WATCHDOG_SLACK   2000 /* ms beyond total_timeout before we abort a transfer ourselves */
#define POLL_SLICE_MS    200
#define MAX_CONCURRENT   4096
#define TIMEOUT_MAX_MS   600000
#define RETRY_AFTER_HDR  32
#define EXPIRES_IN_MAX   1000000000L
#define CODE_HASH_PREFIX 12

typedef struct xfer {
    exchange_req *req;
    CURL *h;
    struct curl_slist *hdrs;
    char *body; /* form body: code, secret, verifier */
    size_t body_len;
    char *resp; /* response bytes, ≤ EXCHANGE_BODY_MAX */
    size_t resp_len, resp_cap;
    int overflow;
    char retry_after[RETRY_AFTER_HDR];
    int64_t started_ms;
    char code_hash[CODE_HASH_PREFIX + 1];
    struct xfer *next;
} xfer;

struct exchange {
    CURLM *m;
    int max_concurrent, connect_ms, total_ms;
    xfer *head, *tail; /* queued, not started */
    xfer **active;     /* [max_concurrent] */
    int n_active;
};

/* ---- small helpers ------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wipe_str(char *s)
{
    if (s)
        crypto_wipe(s, strlen(s));
}

static void result_reset(exchange_result *out)
{
    crypto_wipe(out, sizeof *out);
    out->expires_in = -1;
    out->livemode = -1;
}

/* Wipe the token fields of a result that is not a success. */
static void result_wipe_tokens(exchange_result *out)
{
    crypto_wipe(out->access_token, sizeof out->access_token);
    crypto_wipe(out->refresh_token, sizeof out->refresh_token);
    out->token_type[0] = '\0';
    out->scope[0] = '\0';
    out->account_id[0] = '\0';
    out->expires_in = -1;
    out->livemode = -1;
}

const char *exchange_class_name(exchange_class c)
{
    switch (c) {
    case EXCH_SUCCESS:
        return "success";
    case EXCH_REJECTED:
        return "rejected";
    case EXCH_MISCONFIGURED:
        return "misconfigured";
    case EXCH_FAILED:
        return "failed";
    case EXCH_RETRY_SAFE:
        return "retry_safe";
    case EXCH_UNKNOWN:
        return "unknown";
    }
    return "?";
}

/* ---- pure classifiers --------------------------------------------------- */

/* Retry-After in delta-seconds form: 0..EXCHANGE_RETRY_AFTER_MAX, or -1. */
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
    return n > EXCHANGE_RETRY_AFTER_MAX ? EXCHANGE_RETRY_AFTER_MAX : (int)n;
}

/* Copy a JSON string into out[cap] when it is non-empty, fits, and every byte is in
 * [lo, hi] (or, with ident, in [A-Za-z0-9_.-]). 0 on success, -1 otherwise (out = ""). */
static int copy_checked(const cJSON *it, char *out, size_t cap, unsigned char lo, unsigned char hi,
                        int ident)
{
    out[0] = '\0';
    if (!cJSON_IsString(it) || !it->valuestring)
        return -1;
    const char *s = it->valuestring;
    size_t n = strlen(s);
    if (n == 0 || n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (ident ? !(isalnum(c) || c == '_' || c == '.' || c == '-') : (c < lo || c > hi))
            return -1;
    }
    memcpy(out, s, n + 1);
    return 0;
}

/* Overwrite every string value of a parse tree (tokens live there). */
static void json_wipe(cJSON *j)
{
    for (cJSON *it = j; it; it = it->next) {
        if (it->valuestring)
            wipe_str(it->valuestring);
        if (it->child)
            json_wipe(it->child);
    }
}

typedef struct {
    const char *error;
    exchange_class cls;
} error_map;

/* RFC 6749 §5.2 codes, plus GitHub's spellings (it answers them with 200). */
static const error_map ERRORS[] = {
    {"invalid_grant", EXCH_REJECTED},        {"bad_verification_code", EXCH_REJECTED},
    {"invalid_client", EXCH_MISCONFIGURED},  {"incorrect_client_credentials", EXCH_MISCONFIGURED},
    {"invalid_request", EXCH_FAILED},        {"unauthorized_client", EXCH_FAILED},
    {"unsupported_grant_type", EXCH_FAILED}, {"invalid_scope", EXCH_FAILED},
    {"redirect_uri_mismatch", EXCH_FAILED},  {"access_denied", EXCH_FAILED},
    {"server_error", EXCH_UNKNOWN},          {"temporarily_unavailable", EXCH_UNKNOWN},
};

static const error_map *error_lookup(const char *err)
{
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++)
        if (strcmp(ERRORS[i].error, err) == 0)
            return &ERRORS[i];
    return NULL;
}

/* Apply a known error code from a parsed object; 0 when one applied, -1 otherwise.
 * out->error is filled whenever the error field is well-formed. */
static int apply_error(const cJSON *j, long status, exchange_result *out)
{
    if (!j || copy_checked(cJSON_GetObjectItemCaseSensitive(j, "error"), out->error,
                           sizeof out->error, 0, 0, 1) != 0)
        return -1;
    const error_map *m = error_lookup(out->error);
    if (!m)
        return -1;
    out->cls = m->cls;
    if (m->cls == EXCH_REJECTED) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "error_description");
        if (cJSON_IsString(d) && d->valuestring && strcasestr(d->valuestring, "expired"))
            out->expired_hint = 1;
    }
    /* Only fixed strings from ERRORS reach detail. */
    snprintf(out->detail, sizeof out->detail, "http %ld %s%s", status, m->error,
             out->expired_hint ? " (expired)" : "");
    return 0;
}

/* Parse a success body into out; 0 when it has a usable access_token. Sets *dropped when an
 * optional refresh_token was present but unusable. */
static int parse_tokens(const provider_t *pv, const cJSON *j, exchange_result *out, int *dropped)
{
    *dropped = 0;
    if (!j || copy_checked(cJSON_GetObjectItemCaseSensitive(j, "access_token"), out->access_token,
                           sizeof out->access_token, 0x20, 0x7e, 0) != 0)
        return -1;
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(j, "refresh_token");
    if (rt && !cJSON_IsNull(rt) &&
        copy_checked(rt, out->refresh_token, sizeof out->refresh_token, 0x20, 0x7e, 0) != 0)
        *dropped = 1;
    copy_checked(cJSON_GetObjectItemCaseSensitive(j, "token_type"), out->token_type,
                 sizeof out->token_type, 0x21, 0x7e, 0);
    copy_checked(cJSON_GetObjectItemCaseSensitive(j, "scope"), out->scope, sizeof out->scope, 0x20,
                 0x7e, 0);
    const cJSON *ei = cJSON_GetObjectItemCaseSensitive(j, "expires_in");
    if (cJSON_IsNumber(ei) && isfinite(ei->valuedouble) && ei->valuedouble >= 0 &&
        ei->valuedouble <= (double)EXPIRES_IN_MAX) {
        out->expires_in = (long)ei->valuedouble;
    } else if (cJSON_IsString(ei) && ei->valuestring) {
        const char *s = ei->valuestring; /* some providers send a numeric string */
        size_t n = strspn(s, "0123456789");
        if (n > 0 && n <= 9 && s[n] == '\0')
            out->expires_in = strtol(s, NULL, 10);
    }
    if (pv && (pv->profile == PROVIDER_PROFILE_STRIPE || pv->profile == PROVIDER_PROFILE_SIM)) {
        copy_checked(cJSON_GetObjectItemCaseSensitive(j, "stripe_user_id"), out->account_id,
                     sizeof out->account_id, 0, 0, 1);
        const cJSON *lm = cJSON_GetObjectItemCaseSensitive(j, "livemode");
        if (cJSON_IsBool(lm))
            out->livemode = cJSON_IsTrue(lm) ? 1 : 0;
    }
    return 0;
}

void exchange_classify_http(const provider_t *pv, long status, const char *body, size_t len,
                            const char *retry_after, exchange_result *out)
{
    result_reset(out);
    out->http_status = status;
    int ra = parse_retry_after(retry_after);
    if (ra >= 0)
        out->retry_after_s = ra;
    if (!body)
        len = 0;

    if (status == 429) {
        out->cls = EXCH_RETRY_SAFE;
        if (out->retry_after_s < 1)
            out->retry_after_s = 1;
        snprintf(out->detail, sizeof out->detail, "http 429 retry-after %d", out->retry_after_s);
        return;
    }
    if (status < 200 || status > 599) {
        out->cls = EXCH_UNKNOWN;
        snprintf(out->detail, sizeof out->detail, "http %ld unexpected status", status);
        return;
    }
    if (status >= 500) {
        out->cls = EXCH_UNKNOWN;
        snprintf(out->detail, sizeof out->detail, "http %ld", status);
        return;
    }
    if (status >= 300 && status < 400) {
        out->cls = EXCH_FAILED; /* a token endpoint that redirects is misconfigured */
        snprintf(out->detail, sizeof out->detail, "http %ld", status);
        return;
    }
    if (status == 408) {
        out->cls = EXCH_UNKNOWN; /* request timeout: we cannot tell what the server read */
        snprintf(out->detail, sizeof out->detail, "http 408");
        return;
    }

    cJSON *j = NULL;
    /* A NUL byte is never valid JSON text, and cJSON would silently cut a string at it. */
    if (len > 0 && len <= EXCHANGE_BODY_MAX && !memchr(body, '\0', len)) {
        j = cJSON_ParseWithLength(body, len);
        if (j && !cJSON_IsObject(j)) {
            json_wipe(j);
            cJSON_Delete(j);
            j = NULL;
        }
    }

    if (status < 300) {
        int dropped = 0;
        if (parse_tokens(pv, j, out, &dropped) == 0) {
            out->cls = EXCH_SUCCESS;
            out->error[0] = '\0';
            snprintf(out->detail, sizeof out->detail, "http %ld%s", status,
                     dropped ? " refresh_token unusable" : "");
        } else {
            result_wipe_tokens(out);
            if (apply_error(j, status, out) != 0) {
                out->cls = EXCH_UNKNOWN; /* the code may be spent */
                snprintf(out->detail, sizeof out->detail, "http %ld %s", status,
                         j ? "without access_token" : "unparseable body");
            }
        }
    } else if (apply_error(j, status, out) != 0) {
        if (status == 401 && !out->error[0]) {
            out->cls = EXCH_MISCONFIGURED; /* §5.2: 401 answers failed client authentication */
            snprintf(out->detail, sizeof out->detail, "http 401 unparseable error");
        } else {
            out->cls = EXCH_FAILED;
            snprintf(out->detail, sizeof out->detail, "http %ld %s", status,
                     out->error[0] ? "unrecognised error" : "unparseable error");
        }
    }
    if (j) {
        json_wipe(j);
        cJSON_Delete(j);
    }
}

static const char *curl_short(int c)
{
    switch (c) {
    case CURLE_UNSUPPORTED_PROTOCOL:
        return "unsupported protocol";
    case CURLE_URL_MALFORMAT:
        return "bad token_url";
    case CURLE_NOT_BUILT_IN:
        return "not built in";
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "proxy resolve failed";
    case CURLE_COULDNT_RESOLVE_HOST:
        return "resolve failed";
    case CURLE_COULDNT_CONNECT:
        return "connect failed";
    case CURLE_WEIRD_SERVER_REPLY:
        return "weird server reply";
    case CURLE_PARTIAL_FILE:
        return "partial answer";
    case CURLE_WRITE_ERROR:
        return "answer aborted";
    case CURLE_OUT_OF_MEMORY:
        return "out of memory";
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_SSL_CONNECT_ERROR:
        return "tls handshake failed";
    case CURLE_GOT_NOTHING:
        return "no answer";
    case CURLE_SEND_ERROR:
        return "send error";
    case CURLE_RECV_ERROR:
        return "recv error";
    case CURLE_PEER_FAILED_VERIFICATION:
        return "tls verify failed";
    case CURLE_FILESIZE_EXCEEDED:
        return "answer too large";
    default:
        return "error";
    }
}

void exchange_classify_transport(int curl_code, int request_sent, exchange_result *out)
{
    result_reset(out);
    switch (curl_code) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
        /* Nothing can have been sent to a URL curl cannot use: fix the configuration. */
        out->cls = EXCH_MISCONFIGURED;
        break;
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
        out->cls = EXCH_RETRY_SAFE; /* no connection, no request */
        break;
    default:
        /* Timeouts, cuts, TLS and everything else: it hinges on whether bytes left. */
        out->cls = request_sent ? EXCH_UNKNOWN : EXCH_RETRY_SAFE;
        break;
    }
    if (out->cls == EXCH_MISCONFIGURED)
        snprintf(out->detail, sizeof out->detail, "curl %d %s", curl_code, curl_short(curl_code));
    else
        snprintf(out->detail, sizeof out->detail, "curl %d %s %s", curl_code, curl_short(curl_code),
                 request_sent ? "after send" : "before send");
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

static void xfer_free(xfer *t)
{
    if (!t)
        return;
    if (t->h)
        curl_easy_cleanup(t->h);
    for (struct curl_slist *s = t->hdrs; s; s = s->next)
        wipe_str(s->data);
    curl_slist_free_all(t->hdrs);
    if (t->body) {
        crypto_wipe(t->body, t->body_len);
        free(t->body);
    }
    if (t->resp) {
        crypto_wipe(t->resp, t->resp_cap);
        free(t->resp);
    }
    crypto_wipe(t, sizeof *t);
    free(t);
}

/* Build the form body and headers of req into a new xfer; NULL + e. */
static xfer *xfer_build(const exchange_req *req, err_t *e)
{
    const provider_t *pv = req->provider;
    int basic = pv->token_auth == PROVIDER_AUTH_BASIC;
    int pkce = req->code_verifier && req->code_verifier[0];
    int send_redirect = pv->profile == PROVIDER_PROFILE_OAUTH2;
    size_t cap = 128 + 3 * strlen(req->code) + (pkce ? 3 * strlen(req->code_verifier) : 0) +
                 (send_redirect ? 3 * strlen(req->redirect_uri) : 0) +
                 (basic ? 0 : 3 * (strlen(pv->client_id) + strlen(req->client_secret)));
    xfer *t = calloc(1, sizeof *t);
    char *body = malloc(cap);
    if (!t || !body) {
        free(t);
        free(body);
        err_set(e, ERRC_FATAL, "exchange: out of memory");
        return NULL;
    }
    size_t n = 0;
    body[0] = '\0';
    raw_app(body, &n, "grant_type=authorization_code&code=");
    form_enc(body, &n, req->code);
    if (send_redirect) {
        raw_app(body, &n, "&redirect_uri=");
        form_enc(body, &n, req->redirect_uri);
    }
    if (pkce) {
        raw_app(body, &n, "&code_verifier=");
        form_enc(body, &n, req->code_verifier);
    }
    if (!basic) {
        raw_app(body, &n, "&client_id=");
        form_enc(body, &n, pv->client_id);
        raw_app(body, &n, "&client_secret=");
        form_enc(body, &n, req->client_secret);
    }
    t->body = body;
    t->body_len = n;

    int ok = 1;
    struct curl_slist *s;
    const char *fixed[] = {"Accept: application/json",
                           "Content-Type: application/x-www-form-urlencoded", "Expect:"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] && ok; i++) {
        s = curl_slist_append(t->hdrs, fixed[i]);
        if (s)
            t->hdrs = s;
        else
            ok = 0;
    }
    if (ok && basic) {
        /* RFC 6749 §2.3.1: form-urlencode id and secret, then "id:secret" in base64. */
        size_t plen = 3 * (strlen(pv->client_id) + strlen(req->client_secret)) + 2;
        size_t hlen = 32 + 4 * (plen / 3 + 1);
        char *pair = malloc(plen);
        char *hdr = malloc(hlen);
        if (pair && hdr) {
            size_t pn = 0, hn = 0;
            pair[0] = '\0';
            form_enc(pair, &pn, pv->client_id);
            raw_app(pair, &pn, ":");
            form_enc(pair, &pn, req->client_secret);
            raw_app(hdr, &hn, "Authorization: Basic ");
            b64_std((const unsigned char *)pair, pn, hdr + hn);
            s = curl_slist_append(t->hdrs, hdr);
            if (s)
                t->hdrs = s;
            else
                ok = 0;
            crypto_wipe(pair, plen);
            crypto_wipe(hdr, hlen);
        } else {
            ok = 0;
        }
        free(pair);
        free(hdr);
    }
    if (!ok) {
        xfer_free(t);
        err_set(e, ERRC_FATAL, "exchange: out of memory");
        return NULL;
    }
    uint8_t md[CRYPTO_SHA256_LEN];
    crypto_sha256(req->code, strlen(req->code), md);
    for (int i = 0; i < CODE_HASH_PREFIX / 2; i++)
        snprintf(t->code_hash + 2 * i, 3, "%02x", md[i]);
    t->req = (exchange_req *)req;
    return t;
}

/* ---- libcurl callbacks -------------------------------------------------- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    xfer *t = ud;
    size_t n = size * nmemb;
    if (n > EXCHANGE_BODY_MAX - t->resp_len) {
        t->overflow = 1;
        return 0; /* abort: CURLE_WRITE_ERROR */
    }
    if (t->resp_len + n + 1 > t->resp_cap) {
        size_t cap = t->resp_cap ? t->resp_cap : RESP_INITIAL;
        while (cap < t->resp_len + n + 1)
            cap *= 2;
        if (cap > EXCHANGE_BODY_MAX + 1)
            cap = EXCHANGE_BODY_MAX + 1;
        char *nb = malloc(cap); /* not realloc: the old copy must be wiped */
        if (!nb)
            return 0;
        if (t->resp) {
            memcpy(nb, t->resp, t->resp_len);
            crypto_wipe(t->resp, t->resp_cap);
            free(t->resp);
        }
        t->resp = nb;
        t->resp_cap = cap;
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

/* ---- the client --------------------------------------------------------- */

exchange_t *exchange_new(int max_concurrent, int connect_timeout_ms, int total_timeout_ms, err_t *e)
{
    if (max_concurrent < 1 || max_concurrent > MAX_CONCURRENT || connect_timeout_ms < 1 ||
        connect_timeout_ms > TIMEOUT_MAX_MS || total_timeout_ms < 1 ||
        total_timeout_ms > TIMEOUT_MAX_MS) {
        err_set(e, ERRC_FATAL, "exchange: bad limits (max_concurrent 1..%d, timeouts 1..%d ms)",
                MAX_CONCURRENT, TIMEOUT_MAX_MS);
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        err_set(e, ERRC_FATAL, "exchange: curl_global_init failed");
        return NULL;
    }
    exchange_t *x = calloc(1, sizeof *x);
    if (x)
        x->active = calloc((size_t)max_concurrent, sizeof *x->active);
    if (x && x->active)
        x->m = curl_multi_init();
    if (!x || !x->active || !x->m) {
        if (x)
            free(x->active);
        free(x);
        curl_global_cleanup();
        err_set(e, ERRC_FATAL, "exchange: out of memory");
        return NULL;
    }
    x->max_concurrent = max_concurrent;
    x->connect_ms = connect_timeout_ms;
    x->total_ms = total_timeout_ms;
    return x;
}

static xfer *prepare(exchange_t *x, exchange_req *req, err_t *e)
{
    if (!x || !req || !req->provider) {
        err_set(e, ERRC_PERMANENT, "exchange: no request or provider");
        return NULL;
    }
    if (exchange_check(req, e) < 0)
        return NULL;
    xfer *t = xfer_build(req, e);
    if (t)
        result_reset(&req->result);
    return t;
}

int exchange_add(exchange_t *x, exchange_req *req, err_t *e)
{
    xfer *t = prepare(x, req, e);
    if (!t)
        return -1;
    if (x->tail)
        x->tail->next = t;
    else
        x->head = t;
    x->tail = t;
    return 0;
}

int exchange_check(const exchange_req *req, err_t *e)
{
    if (!req || !req->provider)
        return err_set(e, ERRC_PERMANENT, "exchange: no request or provider");
    const provider_t *pv = req->provider;
    if (!pv->token_url[0] || !field_ok(pv->client_id, EXCHANGE_FIELD_MAX))
        return err_set(e, ERRC_PERMANENT, "exchange: provider %s has no token_url or client_id",
                       pv->name);
    if (!field_ok(req->code, EXCHANGE_CODE_MAX))
        return err_set(e, ERRC_PERMANENT, "exchange: code missing or longer than %d bytes",
                       EXCHANGE_CODE_MAX);
    if (!field_ok(req->client_secret, EXCHANGE_FIELD_MAX))
        return err_set(e, ERRC_PERMANENT, "exchange: client secret of %s missing or too long",
                       pv->name);
    if (req->code_verifier &&
        strnlen(req->code_verifier, EXCHANGE_FIELD_MAX + 1) > EXCHANGE_FIELD_MAX)
        return err_set(e, ERRC_PERMANENT, "exchange: code_verifier too long");
    if (pv->profile == PROVIDER_PROFILE_OAUTH2 && !field_ok(req->redirect_uri, EXCHANGE_FIELD_MAX))
        return err_set(e, ERRC_PERMANENT,
                       "exchange: provider %s (oauth2) needs a redirect_uri of at most %d bytes",
                       pv->name, EXCHANGE_FIELD_MAX);
    return 0;
}

/* Did any request byte possibly leave? Conservative: once the connection was ready to
 * transfer (pretransfer reached) we assume the provider may have read the request. */
static int request_sent(CURL *h)
{
    long reqsize = 0;
    curl_off_t pre = 0;
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &reqsize);
    curl_easy_getinfo(h, CURLINFO_PRETRANSFER_TIME_T, &pre);
    return reqsize > 0 || pre > 0;
}

static void finish(exchange_t *x, xfer *t, int curl_code, int forced)
{
    exchange_result *r = &t->req->result;
    long status = 0;
    if (t->h)
        curl_easy_getinfo(t->h, CURLINFO_RESPONSE_CODE, &status);
    if (curl_code == CURLE_OK && status > 0) {
        exchange_classify_http(t->req->provider, status, t->resp, t->resp_len,
                               t->retry_after[0] ? t->retry_after : NULL, r);
    } else if ((t->overflow || curl_code == CURLE_FILESIZE_EXCEEDED) && status >= 300 &&
               status != 408) {
        /* Too large but the status says no tokens: classify what we have. */
        exchange_classify_http(t->req->provider, status, t->resp, t->resp_len,
                               t->retry_after[0] ? t->retry_after : NULL, r);
    } else if (t->overflow || curl_code == CURLE_FILESIZE_EXCEEDED) {
        result_reset(r);
        r->cls = EXCH_UNKNOWN;
        r->http_status = status;
        snprintf(r->detail, sizeof r->detail, "http %ld answer larger than %d bytes", status,
                 EXCHANGE_BODY_MAX);
    } else {
        exchange_classify_transport(curl_code == CURLE_OK ? CURLE_WEIRD_SERVER_REPLY : curl_code,
                                    t->h ? request_sent(t->h) : 0, r);
        r->http_status = status;
        if (forced)
            snprintf(r->detail, sizeof r->detail, "no answer within %d ms (aborted) %s",
                     x->total_ms, r->cls == EXCH_UNKNOWN ? "after send" : "before send");
    }
    if (t->resp)
        crypto_wipe(t->resp, t->resp_cap);

    char st[24], ms[24];
    snprintf(st, sizeof st, "%ld", r->http_status);
    snprintf(ms, sizeof ms, "%lld", (long long)(mono_ms() - t->started_ms));
    log_kv(r->cls == EXCH_SUCCESS ? LOGL_INFO : LOGL_WARN, "token_exchange", "provider",
           t->req->provider->name, "class", exchange_class_name(r->cls), "http_status", st,
           "detail", r->detail, "code_sha256", t->code_hash, "elapsed_ms", ms);
}

/* Start t; on a local failure it is finished at once (nothing was sent). */
static int start(exchange_t *x, xfer *t)
{
    t->started_ms = mono_ms();
    t->h = curl_easy_init();
    CURL *h = t->h;
    int bad = !h;
    if (!bad) {
        bad |= curl_easy_setopt(h, CURLOPT_URL, t->req->provider->token_url) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_POST, 1L) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDS, t->body) != CURLE_OK;
        bad |=
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->body_len) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->hdrs) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)x->connect_ms) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)x->total_ms) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)EXCHANGE_BODY_MAX) !=
               CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_USERAGENT, "oauthq-worker") != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, t) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_HEADERDATA, t) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_PRIVATE, (void *)t) != CURLE_OK;
    }
    if (!bad && curl_multi_add_handle(x->m, h) == CURLM_OK) {
        x->active[x->n_active++] = t;
        return 0;
    }
    finish(x, t, CURLE_OUT_OF_MEMORY, 0);
    xfer_free(t);
    return -1;
}

static void retire(exchange_t *x, xfer *t, int curl_code, int forced)
{
    finish(x, t, curl_code, forced);
    curl_multi_remove_handle(x->m, t->h);
    for (int i = 0; i < x->n_active; i++)
        if (x->active[i] == t) {
            x->active[i] = x->active[--x->n_active];
            break;
        }
    xfer_free(t);
}

int exchange_start(exchange_t *x, exchange_req *req, err_t *e)
{
    if (x && x->n_active >= x->max_concurrent)
        return err_set(e, ERRC_RETRIABLE, "exchange: %d transfers already active", x->n_active);
    xfer *t = prepare(x, req, e);
    if (!t)
        return -1;
    return start(x, t) == 0 ? 0 : 1; /* 1: finished at once, nothing sent */
}

int exchange_perform(exchange_t *x, int wait_ms, exchange_done_fn done, void *ud)
{
    if (!x || x->n_active == 0)
        return 0;
    int finished = 0;
    int running = 0;
    CURLMcode mc = curl_multi_perform(x->m, &running);
    if (mc == CURLM_OK && wait_ms > 0) {
        curl_multi_poll(x->m, NULL, 0, wait_ms, NULL);
        mc = curl_multi_perform(x->m, &running);
    }
    CURLMsg *msg;
    int left = 0;
    while ((msg = curl_multi_info_read(x->m, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        xfer *t = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (!t)
            continue;
        exchange_req *req = t->req;
        retire(x, t, (int)msg->data.result, 0);
        finished++;
        if (done)
            done(req, ud);
    }
    /* Watchdog (and multi failure): never past the bound. */
    int64_t now = mono_ms();
    for (int i = x->n_active - 1; i >= 0; i--) {
        xfer *t = x->active[i];
        if (mc != CURLM_OK || now - t->started_ms > (int64_t)x->total_ms + WATCHDOG_SLACK) {
            exchange_req *req = t->req;
            retire(x, t, CURLE_OPERATION_TIMEDOUT, 1);
            finished++;
            if (done)
                done(req, ud);
        }
    }
    return finished;
}

int exchange_run(exchange_t *x)
{
    if (!x)
        return 0;
    int done = 0;
    while (x->head || x->n_active > 0) {
        while (x->n_active < x->max_concurrent && x->head) {
            xfer *t = x->head;
            x->head = t->next;
            if (!x->head)
                x->tail = NULL;
            t->next = NULL;
            if (start(x, t) != 0)
                done++;
        }
        /* Bounded: exchange_perform's watchdog retires every transfer by
         * the total timeout. */
        done += exchange_perform(x, POLL_SLICE_MS, NULL, NULL);
    }
    return done;
}

int exchange_active(const exchange_t *x)
{
    return x ? x->n_active : 0;
}

void exchange_free(exchange_t *x)
{
    if (!x)
        return;
    for (int i = 0; i < x->n_active; i++) {
        curl_multi_remove_handle(x->m, x->active[i]->h);
        xfer_free(x->active[i]);
    }
    for (xfer *t = x->head, *n; t; t = n) {
        n = t->next;
        xfer_free(t);
    }
    curl_multi_cleanup(x->m);
    free(x->active);
    free(x);
    curl_global_cleanup();
}
