/*
 * exchange — see exchange.h. libcurl multi driven by exchange_run in the
 * caller's thread; our own FIFO bounds concurrency (so a queued request's
 * timeout starts only when it is started). Every transfer is a provhttp
 * request and so follows its wire rules: a fresh, non-reusable HTTP/1.1
 * connection (libcurl re-sends a request by itself when a *reused*
 * connection dies before any answer byte, which for a token POST would be a
 * second exchange of the same code, G1), no redirects, no Expect, a bounded
 * answer.
 *
 * Ownership: each queued/active request has an xfer that owns its provhttp
 * request (form body, header list with the Basic credentials, response
 * buffer, easy handle); provhttp wipes every secret-bearing buffer before
 * free. The
 * classifiers own nothing and allocate only cJSON's parse tree, whose strings
 * are wiped before it is deleted.
 *
 * Threads: an exchange_t belongs to one thread at a time; the classifiers are
 * reentrant.
 */
#include "common/exchange.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "common/crypto.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/provhttp.h"

#define WATCHDOG_SLACK 2000 /* ms beyond total_timeout before we abort a transfer ourselves */
#define POLL_SLICE_MS  200
#define MAX_CONCURRENT 4096
#define TIMEOUT_MAX_MS 600000
#define EXPIRES_IN_MAX 1000000000L

typedef struct xfer {
    exchange_req *req;
    provhttp_t *http; /* form body (code, secret, verifier), headers, answer, easy handle */
    int64_t started_ms;
    char code_id[LOG_CODE_ID_LEN + 1]; /* log_code_id of the code */
    int refresh;                       /* a refresh_token grant */
    int lease_refused;                 /* the pre-request check found send_by_mono_ms passed */
    struct xfer *next;
} xfer;

/* CURLOPT_PREREQFUNCTION: the last moment before the request is written. */
static int prereq(void *clientp, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    xfer *t = clientp;
    if (t->req->send_by_mono_ms > 0 && clock_mono_ms() > t->req->send_by_mono_ms) {
        t->lease_refused = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

struct exchange {
    CURLM *m;
    int max_concurrent, connect_ms, total_ms;
    xfer *head, *tail; /* queued, not started */
    xfer **active;     /* [max_concurrent]; the driver's (the caller's without one) */
    int n_active;
    /* Driver mode (exchange_spawn): one thread owns the multi handle and
     * drives every transfer the moment its socket is ready, so requests
     * leave and answers are read while the caller is busy elsewhere (the
     * worker blocks in its transactions). The caller hands requests over
     * through `in` and collects finished ones from `done`; mu guards both
     * and stop; cv wakes a caller waiting in exchange_perform. */
    int threaded;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    xfer *in_head, *in_tail;     /* handed over, not yet seen by the driver (mu) */
    xfer *pend_head, *pend_tail; /* the driver's: waiting for a slot, in hand-over order */
    exchange_req **done;         /* [max_outstanding] finished, not yet reported (mu) */
    exchange_req **reporting;    /* [max_outstanding] the caller's copy while it reports */
    int ndone;                   /* mu */
    int stop, cancel;            /* mu */
    int max_outstanding;         /* handed over at most (waiting + on the wire) */
    atomic_int outstanding;      /* handed over and not yet reported */
    atomic_int queued;           /* handed over, waiting for a slot */
    /* Lanes (exchange_set_lanes): per-provider in-flight limits the driver
     * keeps when it starts waiting requests; lane_active is the driver's. */
    int nlanes;
    int lane_limit[EXCHANGE_LANES_MAX];
    int lane_active[EXCHANGE_LANES_MAX];
};

/* ---- small helpers ------------------------------------------------------ */

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
    out->retry_after_s = provhttp_retry_after_s(status, retry_after, EXCHANGE_RETRY_AFTER_MAX);

    if (status == 429) {
        out->cls = EXCH_RETRY_SAFE;
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

    cJSON *j = provhttp_json_object(body, len, EXCHANGE_BODY_MAX);

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
    provhttp_json_free(j);
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

static int field_ok(const char *s, size_t max)
{
    return s && s[0] && strnlen(s, max + 1) <= max;
}

static void xfer_free(xfer *t)
{
    if (!t)
        return;
    provhttp_free(t->http);
    crypto_wipe(t, sizeof *t);
    free(t);
}

/* Build the form body and headers of req into a new xfer; NULL + e. */
static xfer *xfer_build(const exchange_req *req, err_t *e)
{
    const provider_t *pv = req->provider;
    int basic = pv->token_auth == PROVIDER_AUTH_BASIC;
    int pkce = req->code_verifier && req->code_verifier[0];
    xfer *t = calloc(1, sizeof *t);
    provhttp_t *p = t ? provhttp_new(pv->token_url, EXCHANGE_BODY_MAX) : NULL;
    if (p) {
        t->http = p;
        int refresh = req->refresh_token && req->refresh_token[0];
        int ok = refresh ? provhttp_form(p, "grant_type", "refresh_token") == 0 &&
                               provhttp_form(p, "refresh_token", req->refresh_token) == 0
                         : provhttp_form(p, "grant_type", "authorization_code") == 0 &&
                               provhttp_form(p, "code", req->code) == 0;
        if (ok && !refresh && pv->profile == PROVIDER_PROFILE_OAUTH2)
            ok = provhttp_form(p, "redirect_uri", req->redirect_uri) == 0;
        if (ok && !refresh && pkce)
            ok = provhttp_form(p, "code_verifier", req->code_verifier) == 0;
        if (ok && !basic)
            ok = provhttp_form(p, "client_id", pv->client_id) == 0 &&
                 provhttp_form(p, "client_secret", req->client_secret) == 0;
        if (ok && basic)
            ok = provhttp_basic(p, pv->client_id, req->client_secret) == 0;
        if (!ok)
            p = NULL;
    }
    if (!p) {
        xfer_free(t);
        err_set(e, ERRC_FATAL, "exchange: out of memory");
        return NULL;
    }
    if (req->refresh_token && req->refresh_token[0]) {
        log_code_id(NULL, t->code_id); /* a refresh: no code (the worker logs the connection) */
        t->refresh = 1;
    } else {
        char hex[CRYPTO_SHA256_HEX];
        crypto_sha256_hex(req->code, strlen(req->code), hex);
        log_code_id(hex, t->code_id);
    }
    t->req = (exchange_req *)req;
    return t;
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
    if (req->refresh_token && req->refresh_token[0]) {
        if (!field_ok(req->refresh_token, EXCHANGE_TOKEN_MAX))
            return err_set(e, ERRC_PERMANENT, "exchange: refresh token longer than %d bytes",
                           EXCHANGE_TOKEN_MAX);
    } else if (!field_ok(req->code, EXCHANGE_CODE_MAX)) {
        return err_set(e, ERRC_PERMANENT, "exchange: code missing or longer than %d bytes",
                       EXCHANGE_CODE_MAX);
    }
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
    if (!h)
        return 0;
    long reqsize = 0;
    curl_off_t pre = 0;
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &reqsize);
    curl_easy_getinfo(h, CURLINFO_PRETRANSFER_TIME_T, &pre);
    return reqsize > 0 || pre > 0;
}

static void finish(exchange_t *x, xfer *t, int curl_code, int forced)
{
    exchange_result *r = &t->req->result;
    long status = provhttp_status(t->http);
    size_t len = 0;
    const char *body = provhttp_body(t->http, &len);
    const char *ra = provhttp_retry_after(t->http);
    int too_large = provhttp_too_large(t->http, curl_code);
    if (t->lease_refused) {
        result_reset(r);
        r->cls = EXCH_RETRY_SAFE;
        r->not_sent = 1;
        snprintf(r->detail, sizeof r->detail, "not sent: the claim's lease ran out before send");
    } else if (curl_code == CURLE_OK && status > 0) {
        exchange_classify_http(t->req->provider, status, body, len, ra, r);
    } else if (too_large && status >= 300 && status != 408) {
        /* Too large but the status says no tokens: classify what we have. */
        exchange_classify_http(t->req->provider, status, body, len, ra, r);
    } else if (too_large) {
        result_reset(r);
        r->cls = EXCH_UNKNOWN;
        r->http_status = status;
        snprintf(r->detail, sizeof r->detail, "http %ld answer larger than %d bytes", status,
                 EXCHANGE_BODY_MAX);
    } else {
        exchange_classify_transport(curl_code == CURLE_OK ? CURLE_WEIRD_SERVER_REPLY : curl_code,
                                    request_sent(provhttp_easy(t->http)), r);
        r->http_status = status;
        if (forced)
            snprintf(r->detail, sizeof r->detail, "no answer within %d ms (aborted) %s",
                     x->total_ms, r->cls == EXCH_UNKNOWN ? "after send" : "before send");
    }
    provhttp_wipe_body(t->http);

    char st[24], ms[24];
    snprintf(st, sizeof st, "%ld", r->http_status);
    snprintf(ms, sizeof ms, "%lld", (long long)(clock_mono_ms() - t->started_ms));
    log_kv(r->cls == EXCH_SUCCESS ? LOGL_INFO : LOGL_WARN, "token_exchange", "provider",
           t->req->provider->name, "class", exchange_class_name(r->cls), "http_status", st,
           "detail", r->detail, "grant", t->refresh ? "refresh_token" : "authorization_code",
           "code_sha256", t->code_id, "elapsed_ms", ms);
}

/* Start t; on a local failure it is finished at once (nothing was sent). */
static int start(exchange_t *x, xfer *t)
{
    t->started_ms = clock_mono_ms();
    CURL *h = NULL;
    if (provhttp_prepare(t->http, x->connect_ms, x->total_ms, t) == 0 &&
        (h = provhttp_easy(t->http)) != NULL &&
        curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, prereq) == CURLE_OK &&
        curl_easy_setopt(h, CURLOPT_PREREQDATA, t) == CURLE_OK &&
        curl_multi_add_handle(x->m, h) == CURLM_OK) {
        x->active[x->n_active++] = t;
        int lane = t->req->lane;
        if (lane >= 0 && lane < x->nlanes)
            x->lane_active[lane]++;
        return 0;
    }
    finish(x, t, CURLE_OUT_OF_MEMORY, 0);
    xfer_free(t);
    return -1;
}

static void retire(exchange_t *x, xfer *t, int curl_code, int forced)
{
    finish(x, t, curl_code, forced);
    curl_multi_remove_handle(x->m, provhttp_easy(t->http));
    for (int i = 0; i < x->n_active; i++)
        if (x->active[i] == t) {
            x->active[i] = x->active[--x->n_active];
            int lane = t->req->lane;
            if (lane >= 0 && lane < x->nlanes && x->lane_active[lane] > 0)
                x->lane_active[lane]--;
            break;
        }
    xfer_free(t);
}

int exchange_start(exchange_t *x, exchange_req *req, err_t *e)
{
    int active = exchange_active(x);
    if (x && active >= (x->threaded ? x->max_outstanding : x->max_concurrent))
        return err_set(e, ERRC_RETRIABLE, "exchange: %d transfers already active", active);
    xfer *t = prepare(x, req, e);
    if (!t)
        return -1;
    if (!x->threaded)
        return start(x, t) == 0 ? 0 : 1; /* 1: finished at once, nothing sent */
    /* The driver starts it as soon as a slot of its lane is free, never
     * past its send deadline; curl's pre-request callback checks that
     * deadline again right before the bytes leave. */
    atomic_fetch_add(&x->outstanding, 1);
    atomic_fetch_add(&x->queued, 1);
    pthread_mutex_lock(&x->mu);
    if (x->in_tail)
        x->in_tail->next = t;
    else
        x->in_head = t;
    x->in_tail = t;
    pthread_mutex_unlock(&x->mu);
    curl_multi_wakeup(x->m);
    return 0;
}

/* Drive the multi handle: wait at most wait_ms for socket activity, retire
 * what finished (and what outlived the watchdog) and pass each to done.
 * Runs on the thread that owns the multi handle. */
static int drive(exchange_t *x, int wait_ms, exchange_done_fn done, void *ud)
{
    if (x->n_active == 0)
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
    int64_t now = clock_mono_ms();
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

/* Driver thread: a finished request goes to the caller's done list. */
static void driver_done(exchange_req *req, void *ud)
{
    exchange_t *x = ud;
    pthread_mutex_lock(&x->mu);
    if (x->ndone < x->max_outstanding) /* outstanding <= max_outstanding: always */
        x->done[x->ndone++] = req;
    pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

/* Driver: end a waiting request unsent (its lease ran out, or the caller
 * cancelled what waits): RETRY_SAFE / not_sent, reported like any other. */
static void end_unsent(exchange_t *x, xfer *t, const char *why)
{
    exchange_req *req = t->req;
    t->started_ms = clock_mono_ms();
    t->lease_refused = 1;
    finish(x, t, CURLE_OK, 0);
    snprintf(req->result.detail, sizeof req->result.detail, "not sent: %s", why);
    xfer_free(t);
    atomic_fetch_sub(&x->queued, 1);
    driver_done(req, x);
}

/* Driver: start waiting requests in hand-over order as far as the total
 * and their lane allow; a request whose send deadline (the claim's lease)
 * passed is never started. */
static void start_pending(exchange_t *x, int cancel)
{
    xfer *keep_head = NULL, *keep_tail = NULL;
    int64_t now = clock_mono_ms();
    for (xfer *t = x->pend_head, *n; t; t = n) {
        n = t->next;
        t->next = NULL;
        int lane = t->req->lane;
        int lane_ok = lane < 0 || lane >= x->nlanes || x->lane_active[lane] < x->lane_limit[lane];
        if (cancel) {
            end_unsent(x, t, "cancelled before a slot was free (partitions revoked)");
        } else if (t->req->send_by_mono_ms > 0 && now > t->req->send_by_mono_ms) {
            end_unsent(x, t, "the claim's lease ran out before a slot was free");
        } else if (x->n_active < x->max_concurrent && lane_ok) {
            exchange_req *req = t->req;
            atomic_fetch_sub(&x->queued, 1);
            if (start(x, t) != 0) /* finished at once, nothing sent (t freed) */
                driver_done(req, x);
        } else {
            if (keep_tail)
                keep_tail->next = t;
            else
                keep_head = t;
            keep_tail = t;
        }
    }
    x->pend_head = keep_head;
    x->pend_tail = keep_tail;
}

/* The driver thread: take what was handed over, start what fits, drive,
 * report; until exchange_free stops it. curl_multi_wakeup cuts its wait
 * short. */
static void *driver(void *arg)
{
    exchange_t *x = arg;
    for (;;) {
        pthread_mutex_lock(&x->mu);
        int stop = x->stop, cancel = x->cancel;
        x->cancel = 0;
        xfer *in = x->in_head, *in_tail = x->in_tail;
        x->in_head = x->in_tail = NULL;
        pthread_mutex_unlock(&x->mu);
        if (in) {
            if (x->pend_tail)
                x->pend_tail->next = in;
            else
                x->pend_head = in;
            x->pend_tail = in_tail;
        }
        if (stop)
            break; /* what waits is exchange_free's to free */
        start_pending(x, cancel);
        /* Wait shorter while requests wait for a slot with a deadline. */
        int wait = x->pend_head ? 20 : POLL_SLICE_MS;
        if (x->n_active == 0)
            curl_multi_poll(x->m, NULL, 0, wait, NULL);
        else
            drive(x, wait, driver_done, x);
    }
    return NULL;
}

int exchange_spawn(exchange_t *x, err_t *e)
{
    if (!x || x->threaded)
        return err_set(e, ERRC_FATAL, "exchange: no client, or its driver already runs");
    /* Up to one concurrency's worth may wait beside the one on the wire
     * (the worker's claims ahead of the free slots). */
    x->max_outstanding = 2 * x->max_concurrent;
    x->done = calloc((size_t)x->max_outstanding, sizeof *x->done);
    x->reporting = calloc((size_t)x->max_outstanding, sizeof *x->reporting);
    if (!x->done || !x->reporting) {
        free(x->done);
        free(x->reporting);
        x->done = x->reporting = NULL;
        return err_set(e, ERRC_FATAL, "exchange: out of memory");
    }
    pthread_mutex_init(&x->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&x->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&x->th, NULL, driver, x);
    if (rc != 0) {
        pthread_cond_destroy(&x->cv);
        pthread_mutex_destroy(&x->mu);
        return err_set(e, ERRC_FATAL, "exchange: cannot start the driver thread (%d)", rc);
    }
    x->threaded = 1;
    return 0;
}

int exchange_perform(exchange_t *x, int wait_ms, exchange_done_fn done, void *ud)
{
    if (!x)
        return 0;
    if (!x->threaded)
        return x->n_active ? drive(x, wait_ms, done, ud) : 0;
    if (atomic_load(&x->outstanding) == 0)
        return 0;
    pthread_mutex_lock(&x->mu);
    if (x->ndone == 0 && wait_ms > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        while (x->ndone == 0 && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&x->cv, &x->mu, &ts);
    }
    int n = x->ndone;
    memcpy(x->reporting, x->done, (size_t)n * sizeof *x->done);
    x->ndone = 0;
    pthread_mutex_unlock(&x->mu);
    atomic_fetch_sub(&x->outstanding, n);
    for (int i = 0; i < n; i++)
        if (done)
            done(x->reporting[i], ud);
    return n;
}

int exchange_run(exchange_t *x)
{
    if (!x || x->threaded)
        return 0; /* a driver runs the transfers: exchange_perform reports them */
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
        done += drive(x, POLL_SLICE_MS, NULL, NULL);
    }
    return done;
}

int exchange_set_lanes(exchange_t *x, int n, const int *limits, err_t *e)
{
    if (!x || x->threaded || n < 0 || n > EXCHANGE_LANES_MAX || (n > 0 && !limits))
        return err_set(e, ERRC_FATAL, "exchange: lanes 0..%d, set before exchange_spawn",
                       EXCHANGE_LANES_MAX);
    for (int i = 0; i < n; i++)
        x->lane_limit[i] = limits[i] > 0 ? limits[i] : 1;
    x->nlanes = n;
    return 0;
}

void exchange_cancel_waiting(exchange_t *x)
{
    if (!x || !x->threaded)
        return;
    pthread_mutex_lock(&x->mu);
    x->cancel = 1;
    pthread_mutex_unlock(&x->mu);
    curl_multi_wakeup(x->m);
}

int exchange_waiting(const exchange_t *x)
{
    return x && x->threaded ? atomic_load(&((exchange_t *)x)->queued) : 0;
}

int exchange_active(const exchange_t *x)
{
    if (!x)
        return 0;
    return x->threaded ? atomic_load(&((exchange_t *)x)->outstanding) : x->n_active;
}

void exchange_free(exchange_t *x)
{
    if (!x)
        return;
    if (x->threaded) {
        pthread_mutex_lock(&x->mu);
        x->stop = 1;
        pthread_mutex_unlock(&x->mu);
        curl_multi_wakeup(x->m);
        pthread_join(x->th, NULL);
        for (xfer *t = x->pend_head, *n; t; t = n) {
            n = t->next;
            xfer_free(t);
        }
        for (xfer *t = x->in_head, *n; t; t = n) {
            n = t->next;
            xfer_free(t);
        }
        pthread_cond_destroy(&x->cv);
        pthread_mutex_destroy(&x->mu);
        free(x->done);
        free(x->reporting);
    }
    for (int i = 0; i < x->n_active; i++) {
        curl_multi_remove_handle(x->m, provhttp_easy(x->active[i]->http));
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
