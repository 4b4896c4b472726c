/* intake — see intake.h. */
#include "producer/intake.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "common/clock.h"
#include "common/apikeys.h"
#include "common/connmeta.h"
#include "common/crypto.h"
#include "common/ident.h"
#include "common/kafka.h"
#include "common/keyring.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/providers.h"
#include "common/records.h"
#include "common/sealed.h"
#include "producer/assets.h"
#include "producer/callback.h"
#include "common/httpd.h"
#include "producer/publisher.h"
#include "producer/query.h"
#include "producer/readmodel.h"
#include "producer/tokenview.h"

#define BIND_COOKIE        "oauthq_bind"
#define BIND_COOKIE_LEN    43          /* base64url of 32 random bytes */
#define META_COOKIE_PREFIX "oauthq_m_" /* + connection id: a session flow's metadata */
#define ALLOW_MAX          16

struct intake {
    config_t cfg;
    /* A request met an ERRC_FATAL error (random source, out of memory):
     * main sees it through intake_fatal and exits; any thread sets it. */
    atomic_int fatal;
    providers_t *providers;
    keyring_t *keys;
    apikeys_t *api_keys;  /* NULL: none configured, every server-side call refused */
    keyring_t *data_keys; /* OAUTHQ_DATA_KEYS_FILE; NULL: the token call is off */
    tokenview_t *tv;      /* the sealed tokens (NULL with data_keys) */
    publisher_t *pub;
    /* Set by intake_open once httpd_start returns, while httpd threads may
     * already serve /metrics: atomic, NULL until then. */
    httpd_t *_Atomic http;
    metrics_t *metrics;
    readmodel_t *rm;
    char topic_callbacks[256];
    char intake_id[64];
    int secure_cookie;
    int deadline_ms;
    char allow[ALLOW_MAX][512];
    int nallow;
    metric_counter *produced, *delivery_failed, *rejected;
    metric_histogram *produce_latency;
    metric_gauge *inflight;
    atomic_int closing;  /* intake_close began: token waits answer at once */
    pthread_mutex_t cmu; /* guards coalesce and coalesce_next */
    int cmu_init;
    struct coalesce_entry *coalesce; /* COALESCE_MAX, the refresh.v1 recently produced */
    int coalesce_next;
};

/* ---- responses ---------------------------------------------------------- */

static void count(intake_t *in, const char *route, int status)
{
    char labels[96];
    snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", route, status);
    metrics_counter_add(metrics_counter(in->metrics, "oauthq_http_requests_total",
                                        "HTTP requests by route and status", labels),
                        1);
}

static void html_escape(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '&':
            rep = "&amp;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        }
        if (rep) {
            size_t n = strlen(rep);
            memcpy(out + o, rep, n);
            o += n;
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
}

/* The error page's only style, allowed by hash (no 'unsafe-inline'). */
static const char ERROR_STYLE[] =
    "body{font-family:system-ui,sans-serif;max-width:36em;margin:2em auto;padding:0 1em}";
static char error_csp[160];

static void error_csp_init(void)
{
    char h[80];
    assets_csp_hash(ERROR_STYLE, strlen(ERROR_STYLE), h, sizeof h);
    snprintf(error_csp, sizeof error_csp,
             "default-src 'none'; style-src %s; base-uri 'none'; frame-ancestors 'none'", h);
}

/* A 4xx/5xx answer: JSON {"error","message"}, or a small HTML page for
 * browsers. `message` is a fixed sentence, safe to show. */
static void fail(intake_t *in, httpd_req *r, const char *route, int status, const char *code,
                 const char *message)
{
    count(in, route, status);
    if (httpd_wants_html(r)) {
        char esc[512], page[2048];
        html_escape(message, esc, sizeof esc);
        int n = snprintf(page, sizeof page,
                         "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                         "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
                         "<title>oauthq: %s</title><style>%s</style></head><body><h1>Something "
                         "went wrong</h1><p>%s</p><p><small>error: %s</small></p></body></html>",
                         code, ERROR_STYLE, esc, code);
        httpd_add_header(r, "Content-Security-Policy", error_csp);
        httpd_respond(r, status, "text/html; charset=utf-8", page, (size_t)n);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", code);
    cJSON_AddStringToObject(o, "message", message);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    httpd_respond(r, status, "application/json", s ? s : "{}", s ? strlen(s) : 2);
    free(s);
}

/* Answer a failed step by its error's class (common/err.h): permanent is
 * the caller's 400 (code, message), retriable 503 + Retry-After, fatal
 * 500 and the process ends (intake_fatal): a broken random source or no
 * memory is not the client's fault. */
static void fail_by_class(intake_t *in, httpd_req *r, const char *route, const err_t *e,
                          const char *code, const char *message)
{
    if (e->cls == ERRC_PERMANENT)
        return fail(in, r, route, 400, code, message);
    if (e->cls == ERRC_RETRIABLE) {
        httpd_add_header(r, "Retry-After", "2");
        return fail(in, r, route, 503, "unavailable", "Please retry in a moment.");
    }
    log_kv(LOGL_ERROR, "intake_fatal_error", "route", route, "reason", e->msg);
    atomic_store(&in->fatal, 1);
    fail(in, r, route, 500, "internal", "Internal error.");
}

static void respond_json(intake_t *in, httpd_req *r, const char *route, int status, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    count(in, route, status);
    httpd_respond(r, status, "application/json", s ? s : "{}", s ? strlen(s) : 2);
    free(s);
}

/* G7: a server-side call needs a key with every scope in `need`. 0 when
 * it has one; otherwise answers 401 (no, malformed or unknown key, with
 * WWW-Authenticate: Bearer, RFC 6750 §3) or 403 (scope) and returns -1,
 * before anything is parsed or produced. */
static int authorize(intake_t *in, httpd_req *r, const char *route, unsigned need)
{
    char kid[APIKEYS_KID_MAX];
    apikeys_result ar = apikeys_check(in->api_keys, httpd_header(r, "Authorization"), need, kid);
    if (ar == APIKEYS_OK)
        return 0;
    log_kv(LOGL_INFO, "api_key_refused", "route", route, "reason",
           ar == APIKEYS_MISSING     ? "missing"
           : ar == APIKEYS_MALFORMED ? "malformed"
           : ar == APIKEYS_UNKNOWN   ? "unknown"
                                     : "scope",
           "kid", kid, "request_id", httpd_request_id(r));
    if (ar == APIKEYS_FORBIDDEN) {
        fail(in, r, route, 403, "insufficient_scope",
             need & APIKEYS_CONNECTIONS_WRITE ? "This API key lacks the connections:write scope."
             : need & APIKEYS_TOKENS_READ     ? "This API key lacks the tokens:read scope."
                                              : "This API key lacks the connections:read scope.");
        return -1;
    }
    httpd_add_header(r, "WWW-Authenticate",
                     ar == APIKEYS_MISSING ? "Bearer realm=\"oauthq\""
                                           : "Bearer realm=\"oauthq\", error=\"invalid_token\"");
    fail(in, r, route, 401, "unauthorized",
         ar == APIKEYS_MISSING
             ? "This call needs an API key: Authorization: Bearer oq_<kid>_<secret>."
             : "The API key is malformed, unknown or revoked.");
    return -1;
}

/* ---- records the answer waits for ------------------------------------------- */

typedef struct {
    intake_t *in;
    httpd_req *req;
    char conn_id[IDENT_CONN_ID_MAX];
    char code_hash[LOG_CODE_ID_LEN + 1];
    int json;
    int disconnect; /* a DELETE /v1/connections/{id}, not a callback */
    /* The record's fate: cls and reason are written once, by the
     * publisher's thread (or by the request thread when the send failed),
     * then done is set with release order. The httpd thread may run the
     * wake at the deadline or at shutdown while the delivery report is
     * still on its way (no httpd mutex orders that case), so it loads done
     * with acquire order and reads cls and reason only when it saw 1. */
    atomic_int done;
    int clear_meta; /* a session flow: expire its metadata cookie with the answer */
    errc cls;
    char reason[ERR_MSG_MAX];
    /* A session.v1 record (SESSION_CREATE: POST /v1/connections, SESSION_START:
     * an open GET /oauth/start): the answer waits for Kafka like a callback's,
     * so the platform (or the browser) goes on only once the session is
     * durable. Owned by the request; sent by the wake on the httpd thread. */
    int session;
    cJSON *created;    /* SESSION_CREATE: the 201 body */
    char *location;    /* SESSION_START: the provider's authorize URL */
    char *bind_cookie; /* SESSION_START: the Set-Cookie of the browser binding */
} pending_cb;

enum { SESSION_NONE, SESSION_CREATE, SESSION_START };

static void pending_free(void *v)
{
    pending_cb *p = v;
    if (!p)
        return;
    cJSON_Delete(p->created);
    free(p->location);
    free(p->bind_cookie);
    free(p);
}

static void produce_session(intake_t *in, httpd_req *r, pending_cb *p, const char *conn_id,
                            const char *provider, const char *return_to, int64_t created_s,
                            int64_t expires_s, const connmeta *meta);

/* ---- start a flow --------------------------------------------------------- */

/* return_to must start with an allowlisted prefix at a boundary, so
 * "https://app.example" does not admit "https://app.example.evil". */
static int return_to_allowed(const intake_t *in, const char *url)
{
    for (int i = 0; i < in->nallow; i++) {
        size_t n = strlen(in->allow[i]);
        if (strncmp(url, in->allow[i], n) != 0)
            continue;
        char next = url[n];
        if (in->allow[i][n - 1] == '/' || next == '\0' || next == '/' || next == '?' || next == '#')
            return 1;
    }
    return 0;
}

typedef struct {
    char conn_id[IDENT_CONN_ID_MAX];
    char state[IDENT_STATE_MAX];
    char authorize_url[4096];
    int64_t expires_at;
} started_flow;

/* Sign st (conn id, provider, expiry, binding, return_to, metadata hash
 * filled in by the caller) and build the provider's authorize URL. */
static int start_flow(intake_t *in, const provider_t *pv, const ident_state *st, started_flow *f,
                      err_t *e)
{
    if (ident_state_issue(in->keys, st, f->state, sizeof f->state, e) < 0)
        return -1;
    memcpy(f->conn_id, st->conn_id, sizeof f->conn_id);
    f->expires_at = st->expires_at;

    char redirect[CONFIG_PATH_MAX + 32], enc_redirect[3 * sizeof redirect], enc_client[800],
        enc_scope[800];
    snprintf(redirect, sizeof redirect, "%s/oauth/callback", in->cfg.public_url);
    if (query_escape(redirect, enc_redirect, sizeof enc_redirect) < 0 ||
        query_escape(pv->client_id, enc_client, sizeof enc_client) < 0 ||
        query_escape(pv->scope, enc_scope, sizeof enc_scope) < 0)
        return err_set(e, ERRC_PERMANENT, "authorize URL parameters too long");
    int n =
        snprintf(f->authorize_url, sizeof f->authorize_url,
                 "%s%cresponse_type=code&client_id=%s&redirect_uri=%s&state=%s", pv->authorize_url,
                 strchr(pv->authorize_url, '?') ? '&' : '?', enc_client, enc_redirect, f->state);
    if (pv->scope[0] && n > 0 && (size_t)n < sizeof f->authorize_url)
        n += snprintf(f->authorize_url + n, sizeof f->authorize_url - (size_t)n, "&scope=%s",
                      enc_scope);
    if (pv->pkce && n > 0 && (size_t)n < sizeof f->authorize_url) {
        char verifier[IDENT_PKCE_VERIFIER], challenge[44];
        ident_pkce_verifier(in->keys, keyring_active_kid(in->keys), f->conn_id, verifier);
        crypto_pkce_s256(verifier, strlen(verifier), challenge);
        crypto_wipe(verifier, sizeof verifier);
        n += snprintf(f->authorize_url + n, sizeof f->authorize_url - (size_t)n,
                      "&code_challenge=%s&code_challenge_method=S256", challenge);
    }
    if (n < 0 || (size_t)n >= sizeof f->authorize_url)
        return err_set(e, ERRC_PERMANENT, "authorize URL too long");
    return 0;
}

static int cookie_ok(const char *v)
{
    if (!v || strlen(v) != BIND_COOKIE_LEN)
        return 0;
    uint8_t raw[33];
    return crypto_b64url_decode(v, BIND_COOKIE_LEN, raw, sizeof raw) == 32;
}

/* The cookie that carries a session flow's metadata from the start to the
 * callback in the same browser (its hash is in the state). */
static void meta_cookie_name(const char *conn_id, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s", META_COOKIE_PREFIX, conn_id);
}

static void route_start(intake_t *in, httpd_req *r)
{
    query_t q;
    err_t e = {0};
    size_t qlen;
    const char *qs = httpd_query(r, &qlen);
    if (query_parse(qs, qlen, &q, &e) < 0)
        return fail(in, r, "start", 400, "invalid_request", "The request parameters are invalid.");
    int64_t now = clock_wall_ms() / 1000;
    ident_state st;
    memset(&st, 0, sizeof st);
    const char *token = query_get(&q, "session", NULL);
    const provider_t *pv = NULL;
    static __thread ident_session sess; /* ~3 KiB: off the MHD thread's stack */
    if (token) {
        /* A connect session (SPEC §4a): made by the platform's backend. */
        if (query_get(&q, "provider", NULL) || query_get(&q, "return_to", NULL))
            return fail(in, r, "start", 400, "invalid_request",
                        "A session start takes no other parameters.");
        ident_result vr = ident_session_verify(in->keys, token, strlen(token), now, &sess);
        if (vr == IDENT_EXPIRED)
            return fail(in, r, "start", 400, "session_expired",
                        "This connection link expired. Go back to the application and start the "
                        "connection again.");
        if (vr != IDENT_OK) {
            log_kv(LOGL_INFO, "session_rejected", "reason", ident_result_name(vr), "request_id",
                   httpd_request_id(r));
            return fail(in, r, "start", 400, "invalid_session",
                        "This connection link is not valid. Go back to the application and start "
                        "the connection again.");
        }
        pv = providers_find(in->providers, sess.provider);
        if (!pv)
            return fail(in, r, "start", 400, "unknown_provider",
                        "This provider is not configured.");
        snprintf(st.conn_id, sizeof st.conn_id, "%s", sess.conn_id);
        snprintf(st.return_to, sizeof st.return_to, "%s", sess.return_to);
        st.expires_at = sess.expires_at;
        if (sess.meta.json[0]) {
            st.has_meta = 1;
            crypto_sha256(sess.meta.json, strlen(sess.meta.json), st.meta_hash);
        }
    } else {
        if (!in->cfg.open_start)
            return fail(in, r, "start", 403, "open_start_disabled",
                        "Connections are started by the application you came from. Go back to it "
                        "and start the connection again.");
        const char *name = query_get(&q, "provider", NULL);
        pv = name ? providers_find(in->providers, name) : NULL;
        if (!pv)
            return fail(in, r, "start", 400, "unknown_provider", "Unknown or missing provider.");
        const char *return_to = query_get(&q, "return_to", NULL);
        if (return_to && !return_to_allowed(in, return_to))
            return fail(in, r, "start", 400, "return_to_not_allowed",
                        "The return address is not allowed.");
        if (ident_conn_new(in->keys, now, st.conn_id, &e) < 0)
            return fail_by_class(in, r, "start", &e, "invalid_request",
                                 "The flow could not be started.");
        if (return_to)
            snprintf(st.return_to, sizeof st.return_to, "%s", return_to);
        st.expires_at = now + in->cfg.state_ttl_s;
    }
    snprintf(st.provider, sizeof st.provider, "%s", pv->name);

    /* Browser binding (RFC 9700 §4.7): a random value in an HttpOnly
     * cookie, its hash inside the state. One cookie serves every flow this
     * browser starts, so parallel tabs work. */
    char cookie[BIND_COOKIE_LEN + 1];
    const char *have = httpd_cookie(r, BIND_COOKIE);
    if (cookie_ok(have)) {
        snprintf(cookie, sizeof cookie, "%s", have);
    } else {
        uint8_t raw[32];
        if (crypto_random(raw, sizeof raw, &e) < 0)
            return fail_by_class(in, r, "start", &e, "invalid_request",
                                 "The flow could not be started.");
        crypto_b64url_encode(raw, sizeof raw, cookie, sizeof cookie);
    }
    ident_binding_hash(cookie, strlen(cookie), st.binding);
    st.has_binding = 1;
    started_flow f;
    if (start_flow(in, pv, &st, &f, &e) < 0)
        return fail_by_class(in, r, "start", &e, "invalid_request",
                             "The flow could not be started.");
    int max_age = (int)(st.expires_at - now > 0 ? st.expires_at - now : 1);
    char setc[256];
    snprintf(setc, sizeof setc, "%s=%s; Path=/oauth; Max-Age=%d; HttpOnly; SameSite=Lax%s",
             BIND_COOKIE, cookie, in->cfg.state_ttl_s, in->secure_cookie ? "; Secure" : "");
    if (!token) {
        /* An open start made this connection: the worker learns of it now
         * (session.v1), so a flow that never comes back ends `expired`. The
         * browser goes on once Kafka acknowledged it (one produce round
         * trip), like a callback. */
        pending_cb *p = calloc(1, sizeof *p);
        if (p) {
            p->session = SESSION_START;
            p->location = strdup(f.authorize_url);
            p->bind_cookie = strdup(setc);
        }
        if (!p || !p->location || !p->bind_cookie) {
            pending_free(p);
            httpd_add_header(r, "Retry-After", "2");
            return fail(in, r, "start", 503, "unavailable", "Please retry in a moment.");
        }
        return produce_session(in, r, p, st.conn_id, pv->name, st.return_to, now, st.expires_at,
                               NULL);
    }
    httpd_add_header(r, "Set-Cookie", setc);
    if (st.has_meta) {
        /* The metadata rides to the callback in this browser, not through
         * the provider; the state's hash of it makes it tamper-evident. */
        static __thread char metac[CONNMETA_JSON_MAX * 4 / 3 + 256];
        char name[sizeof META_COOKIE_PREFIX + IDENT_CONN_ID_MAX];
        meta_cookie_name(st.conn_id, name, sizeof name);
        int n = snprintf(metac, sizeof metac, "%s=", name);
        long m = crypto_b64url_encode(sess.meta.json, strlen(sess.meta.json), metac + n,
                                      sizeof metac - (size_t)n);
        if (m < 0)
            return fail(in, r, "start", 500, "internal", "Internal error.");
        snprintf(metac + n + m, sizeof metac - (size_t)(n + m),
                 "; Path=/oauth/callback; Max-Age=%d; HttpOnly; SameSite=Lax%s", max_age,
                 in->secure_cookie ? "; Secure" : "");
        httpd_add_header(r, "Set-Cookie", metac);
    }
    httpd_add_header(r, "Location", f.authorize_url);
    count(in, "start", 302);
    log_kv(LOGL_INFO, "flow_started", "connection_id", f.conn_id, "provider", pv->name,
           "request_id", httpd_request_id(r), "binding", "cookie", "session", token ? "yes" : "no");
    httpd_respond(r, 302, "text/plain", "", 0);
}

/* POST /v1/connections (connections:write): a connect session for one of
 * the platform's users; the browser opens start_url. The session is the
 * signed token itself; a session.v1 record tells the worker of it (so a
 * flow that never comes back ends `expired`), and the 201 waits for Kafka's
 * acknowledgement (503 + Retry-After otherwise, nothing handed out). */
static void route_create(intake_t *in, httpd_req *r)
{
    if (authorize(in, r, "connections_create", APIKEYS_CONNECTIONS_WRITE) < 0)
        return;
    size_t len;
    const char *body = httpd_body(r, &len);
    cJSON *o = cJSON_ParseWithLength(body, len);
    const char *name = NULL, *return_to = NULL, *bad = NULL;
    if (!cJSON_IsObject(o))
        bad = "Body must be a JSON object {\"provider\", \"end_user\": {\"id\"}, ...}.";
    for (const cJSON *it = bad ? NULL : o->child; it && !bad; it = it->next) {
        if (strcmp(it->string, "provider") == 0 && cJSON_IsString(it))
            name = it->valuestring;
        else if (strcmp(it->string, "return_to") == 0 && cJSON_IsString(it))
            return_to = it->valuestring;
        else if (!(strcmp(it->string, "return_to") == 0 && cJSON_IsNull(it)) &&
                 !connmeta_is_member(it->string))
            bad = "Unknown or mistyped member: use provider, return_to, end_user, organization, "
                  "tags.";
    }
    if (bad) {
        cJSON_Delete(o);
        return fail(in, r, "connections_create", 400, "invalid_request", bad);
    }
    static __thread ident_session sess; /* ~3 KiB: off the MHD thread's stack */
    memset(&sess, 0, sizeof sess);
    err_t e = {0};
    if (connmeta_from(o, 1, &sess.meta, &e) < 0) {
        cJSON_Delete(o);
        return fail(in, r, "connections_create", 400, "invalid_request", e.msg);
    }
    const provider_t *pv = name ? providers_find(in->providers, name) : NULL;
    int return_ok = !return_to || return_to_allowed(in, return_to);
    if (pv)
        snprintf(sess.provider, sizeof sess.provider, "%s", pv->name);
    if (return_to && strlen(return_to) < sizeof sess.return_to)
        snprintf(sess.return_to, sizeof sess.return_to, "%s", return_to);
    cJSON_Delete(o);
    if (!pv)
        return fail(in, r, "connections_create", 400, "unknown_provider",
                    "Unknown or missing provider.");
    if (!return_ok || (return_to && !sess.return_to[0]))
        return fail(in, r, "connections_create", 400, "return_to_not_allowed",
                    "The return address is not allowed.");
    int64_t now = clock_wall_ms() / 1000;
    sess.expires_at = now + in->cfg.state_ttl_s;
    static __thread char token[IDENT_SESSION_MAX];
    if (ident_conn_new(in->keys, now, sess.conn_id, &e) < 0 ||
        ident_session_issue(in->keys, &sess, token, sizeof token, &e) < 0)
        return fail_by_class(in, r, "connections_create", &e, "invalid_request",
                             "The connection could not be created.");
    char status_url[CONFIG_PATH_MAX + 96], ts[RECORDS_TIME_MAX];
    static __thread char start_url[CONFIG_PATH_MAX + IDENT_SESSION_MAX + 32];
    snprintf(status_url, sizeof status_url, "%s/v1/connections/%s", in->cfg.public_url,
             sess.conn_id);
    snprintf(start_url, sizeof start_url, "%s/oauth/start?session=%s", in->cfg.public_url, token);
    records_time_format(sess.expires_at * 1000, ts);
    pending_cb *p = calloc(1, sizeof *p);
    cJSON *out = p ? cJSON_CreateObject() : NULL;
    if (!out) {
        free(p);
        httpd_add_header(r, "Retry-After", "2");
        return fail(in, r, "connections_create", 503, "unavailable", "Please retry in a moment.");
    }
    cJSON_AddStringToObject(out, "id", sess.conn_id);
    cJSON_AddStringToObject(out, "start_url", start_url);
    cJSON_AddStringToObject(out, "status_url", status_url);
    cJSON_AddStringToObject(out, "expires_at", ts);
    p->session = SESSION_CREATE;
    p->created = out;
    /* The 201 waits for Kafka: once the platform holds the id, the worker
     * knows the connection and will say connected, failed or expired. */
    produce_session(in, r, p, sess.conn_id, pv->name, sess.return_to, now, sess.expires_at,
                    &sess.meta);
}

/* ---- the callback: publish, then acknowledge ------------------------------- */

/* Publish the outcome (any thread; once per record). */
static void pending_settle(pending_cb *p, errc cls, const char *reason)
{
    p->cls = cls;
    snprintf(p->reason, sizeof p->reason, "%s", reason);
    atomic_store_explicit(&p->done, 1, memory_order_release);
}

/* Publisher thread: the record's fate is known. */
static void on_delivered(void *ud, errc cls, const char *reason, double latency_ms)
{
    pending_cb *p = ud;
    pending_settle(p, cls, reason);
    metrics_histogram_observe(p->in->produce_latency, latency_ms / 1000.0);
    if (cls == ERRC_OK)
        metrics_counter_add(p->in->produced, 1);
    else
        metrics_counter_add(p->in->delivery_failed, 1);
    httpd_req *req = p->req;
    httpd_wake(req);
    httpd_req_unref(req); /* the ref taken for the in-flight record */
}

/* Publisher thread: a session.v1 record's fate is known (counted apart
 * from callbacks, whose metrics the benchmarks read). */
static void on_session_delivered(void *ud, errc cls, const char *reason, double latency_ms)
{
    pending_cb *p = ud;
    (void)latency_ms;
    pending_settle(p, cls, reason);
    metrics_counter_add(
        metrics_counter(p->in->metrics, "oauthq_sessions_produced_total",
                        "session.v1 records by delivery outcome",
                        cls == ERRC_OK ? "outcome=\"acked\"" : "outcome=\"failed\""),
        1);
    httpd_req *req = p->req;
    httpd_wake(req);
    httpd_req_unref(req);
}

/* httpd thread: the session record was acknowledged (answer what the
 * route prepared) or not (503 + Retry-After: nothing was created that the
 * caller learnt of; the id is never handed out). */
static void session_wake(intake_t *in, httpd_req *r, pending_cb *p, int acked, int timed_out)
{
    const char *route = p->session == SESSION_CREATE ? "connections_create" : "start";
    if (!acked) {
        log_kv(LOGL_WARN, "session_not_acknowledged", "connection_id", p->conn_id, "request_id",
               httpd_request_id(r), "reason",
               atomic_load_explicit(&p->done, memory_order_acquire)
                   ? p->reason
                   : (timed_out ? "deadline" : "unknown"));
        httpd_add_header(r, "Retry-After", "2");
        return fail(in, r, route, 503, "unavailable",
                    p->session == SESSION_CREATE
                        ? "The connection could not be recorded; retry in a moment."
                        : "We could not start the connection just now. Please retry in a moment.");
    }
    if (p->session == SESSION_CREATE) {
        cJSON *out = p->created;
        p->created = NULL;
        const cJSON *su = cJSON_GetObjectItemCaseSensitive(out, "status_url");
        if (cJSON_IsString(su))
            httpd_add_header(r, "Location", su->valuestring);
        log_kv(LOGL_INFO, "session_created", "connection_id", p->conn_id, "request_id",
               httpd_request_id(r));
        return respond_json(in, r, "connections_create", 201, out);
    }
    httpd_add_header(r, "Set-Cookie", p->bind_cookie);
    httpd_add_header(r, "Location", p->location);
    count(in, "start", 302);
    log_kv(LOGL_INFO, "flow_started", "connection_id", p->conn_id, "request_id",
           httpd_request_id(r), "binding", "cookie", "session", "no");
    httpd_respond(r, 302, "text/plain", "", 0);
}

static void on_callback_wake(void *app, httpd_req *r, int timed_out);

/* Produce the session.v1 of a connection this request created (times in
 * unix seconds, as the id and the state carry them; meta NULL: none) and
 * answer from the wake once Kafka acknowledged it (p: calloc'd by the
 * caller with session and its answer set; owned by the request from here
 * on). Kafka down: 503, nothing handed out. */
static void produce_session(intake_t *in, httpd_req *r, pending_cb *p, const char *conn_id,
                            const char *provider, const char *return_to, int64_t created_s,
                            int64_t expires_s, const connmeta *meta)
{
    static __thread records_session rec; /* ~3 KiB: off the MHD thread's stack */
    records_session *s = &rec;
    memset(s, 0, sizeof *s);
    snprintf(s->connection_id, sizeof s->connection_id, "%s", conn_id);
    snprintf(s->provider, sizeof s->provider, "%s", provider);
    snprintf(s->return_to, sizeof s->return_to, "%s", return_to);
    s->created_at_ms = created_s * 1000;
    s->expires_at_ms = expires_s * 1000;
    snprintf(s->intake_id, sizeof s->intake_id, "%s", in->intake_id);
    snprintf(s->request_id, sizeof s->request_id, "%s", httpd_request_id(r));
    if (meta)
        s->meta = *meta;
    err_t e = {0};
    const char *route = p->session == SESSION_CREATE ? "connections_create" : "start";
    p->in = in;
    p->req = r;
    snprintf(p->conn_id, sizeof p->conn_id, "%.*s", (int)sizeof p->conn_id - 1, conn_id);
    httpd_set_data(r, p, pending_free);
    char *json = records_session_encode(s, &e);
    if (!json) {
        httpd_add_header(r, "Retry-After", "2");
        return fail(in, r, route, 503, "unavailable", "Please retry in a moment.");
    }
    if (httpd_suspend(r, in->deadline_ms, on_callback_wake) < 0) {
        free(json);
        httpd_add_header(r, "Retry-After", "1");
        return fail(in, r, route, 503, "busy", "Too many requests at once; please retry.");
    }
    httpd_req_ref(r);
    if (publisher_send(in->pub, in->topic_callbacks, s->connection_id, json, strlen(json),
                       httpd_request_id(r), on_session_delivered, p, &e) < 0) {
        pending_settle(p, e.cls, e.msg);
        httpd_wake(r);
        httpd_req_unref(r);
    }
    free(json);
}

/* httpd thread, after the wake or the deadline. */
static void on_callback_wake(void *app, httpd_req *r, int timed_out)
{
    intake_t *in = app;
    pending_cb *p = httpd_data(r);
    int done = atomic_load_explicit(&p->done, memory_order_acquire);
    int acked = done && p->cls == ERRC_OK; /* cls only once done was seen */
    if (p->session)
        return session_wake(in, r, p, acked, timed_out);
    if (p->disconnect) {
        if (!acked) {
            httpd_add_header(r, "Retry-After", "2");
            return fail(in, r, "disconnect", 503, "unavailable",
                        "The disconnect could not be recorded; retry in a moment.");
        }
        char status_url[CONFIG_PATH_MAX + 96];
        snprintf(status_url, sizeof status_url, "%s/v1/connections/%s", in->cfg.public_url,
                 p->conn_id);
        log_kv(LOGL_INFO, "disconnect_requested", "connection_id", p->conn_id, "request_id",
               httpd_request_id(r));
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", p->conn_id);
        cJSON_AddStringToObject(o, "status_url", status_url);
        cJSON_AddStringToObject(o, "status", "disconnect_requested");
        return respond_json(in, r, "disconnect", 202, o);
    }
    if (!acked) {
        /* Not acknowledged by Kafka (yet): the code is unused as far as we
         * know, so the user can retry the same redirect. */
        log_kv(LOGL_WARN, "callback_not_acknowledged", "connection_id", p->conn_id, "code_sha256",
               p->code_hash, "request_id", httpd_request_id(r), "reason",
               done ? p->reason : (timed_out ? "deadline" : "unknown"));
        httpd_add_header(r, "Retry-After", "2");
        return fail(in, r, "callback", 503, "unavailable",
                    "We could not record the sign-in just now. Please retry in a moment.");
    }
    if (p->clear_meta) {
        char name[sizeof META_COOKIE_PREFIX + IDENT_CONN_ID_MAX], clear[256];
        meta_cookie_name(p->conn_id, name, sizeof name);
        snprintf(clear, sizeof clear,
                 "%s=; Path=/oauth/callback; Max-Age=0; HttpOnly; SameSite=Lax%s", name,
                 in->secure_cookie ? "; Secure" : "");
        httpd_add_header(r, "Set-Cookie", clear);
    }
    char loc[IDENT_CONN_ID_MAX + 16];
    snprintf(loc, sizeof loc, "/connect/%s", p->conn_id);
    log_kv(LOGL_INFO, "callback_accepted", "connection_id", p->conn_id, "code_sha256", p->code_hash,
           "request_id", httpd_request_id(r));
    if (p->json) {
        char status_url[CONFIG_PATH_MAX + 96];
        snprintf(status_url, sizeof status_url, "%s/v1/connections/%s", in->cfg.public_url,
                 p->conn_id);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", p->conn_id);
        cJSON_AddStringToObject(o, "status_url", status_url);
        return respond_json(in, r, "callback", 202, o);
    }
    httpd_add_header(r, "Location", loc);
    count(in, "callback", 303);
    httpd_respond(r, 303, "text/plain", "", 0);
}

/* A session flow's metadata from its cookie, checked against the hash the
 * state carries (constant time). 0 and *m filled, or -1. */
static int meta_from_cookie(httpd_req *r, const ident_state *st, connmeta *m)
{
    char name[sizeof META_COOKIE_PREFIX + IDENT_CONN_ID_MAX];
    meta_cookie_name(st->conn_id, name, sizeof name);
    const char *v = httpd_cookie(r, name);
    static __thread uint8_t raw[CONNMETA_JSON_MAX + 4];
    long n = v && strlen(v) <= crypto_b64url_len(CONNMETA_JSON_MAX)
                 ? crypto_b64url_decode(v, strlen(v), raw, sizeof raw - 1)
                 : -1;
    if (n <= 0)
        return -1;
    uint8_t h[32];
    crypto_sha256(raw, (size_t)n, h);
    err_t e = {0};
    if (!crypto_ct_equal(h, st->meta_hash, 32) ||
        connmeta_parse((const char *)raw, (size_t)n, m, &e) < 0)
        return -1;
    return 0;
}

static void route_callback(intake_t *in, httpd_req *r)
{
    size_t qlen;
    const char *qs = httpd_query(r, &qlen);
    callback_params cp;
    err_t e = {0};
    if (callback_parse(qs, qlen, &cp, &e) < 0) {
        metrics_counter_add(in->rejected, 1);
        log_kv(LOGL_INFO, "callback_rejected", "reason", e.msg, "request_id", httpd_request_id(r));
        crypto_wipe(&cp, sizeof cp);
        return fail(in, r, "callback", 400, "invalid_request",
                    "This sign-in response is malformed. Start the connection again.");
    }
    ident_state st;
    ident_result vr =
        ident_state_verify(in->keys, cp.state, strlen(cp.state), clock_wall_ms() / 1000, &st);
    const provider_t *pv = vr == IDENT_OK ? providers_find(in->providers, st.provider) : NULL;
    const char *why = NULL, *code = NULL, *msg = NULL;
    if (vr == IDENT_EXPIRED) {
        why = "state_expired", code = "state_expired";
        msg = "This sign-in took too long and expired. Start the connection again.";
    } else if (vr != IDENT_OK) {
        why = ident_result_name(vr), code = "invalid_state";
        msg = "This sign-in response was not started here. Start the connection again.";
    } else if (!pv) {
        why = "unknown_provider", code = "unknown_provider";
        msg = "This provider is not configured.";
    } else if (st.has_binding) {
        const char *ck = httpd_cookie(r, BIND_COOKIE);
        uint8_t h[32];
        if (ck)
            ident_binding_hash(ck, strlen(ck), h);
        if (!ck || !crypto_ct_equal(h, st.binding, 32)) {
            why = "browser_mismatch", code = "browser_mismatch";
            msg = "This sign-in was started in another browser. Start the connection again "
                  "here.";
        }
    }
    static __thread connmeta meta;
    meta.json[0] = '\0';
    if (!why && st.has_meta && meta_from_cookie(r, &st, &meta) < 0) {
        /* The flow came from a session in another browser (or the cookie
         * was lost or altered): its metadata is not here. */
        why = "metadata_mismatch", code = "browser_mismatch";
        msg = "This sign-in was started in another browser. Start the connection again here.";
    }
    if (!why && pv && pv->issuer[0] && (!cp.has_iss || strcmp(cp.iss, pv->issuer) != 0)) {
        /* RFC 9207: the response must name the issuer we sent the user to
         * (mix-up defence). */
        why = "issuer_mismatch", code = "issuer_mismatch";
        msg = "This sign-in response came from an unexpected issuer.";
    }
    if (why) {
        metrics_counter_add(in->rejected, 1);
        log_kv(LOGL_INFO, "callback_rejected", "reason", why, "connection_id",
               vr == IDENT_OK || vr == IDENT_EXPIRED ? st.conn_id : "", "request_id",
               httpd_request_id(r));
        crypto_wipe(&cp, sizeof cp);
        return fail(in, r, "callback", 400, code, msg);
    }

    records_callback rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.connection_id, sizeof rec.connection_id, "%s", st.conn_id);
    snprintf(rec.provider, sizeof rec.provider, "%s", pv->name);
    rec.kind = cp.kind == CALLBACK_CODE ? RECORDS_CB_CODE : RECORDS_CB_ERROR;
    memcpy(rec.code, cp.code, sizeof rec.code);
    if (cp.kind == CALLBACK_CODE && pv->pkce)
        ident_pkce_verifier(in->keys, st.kid, st.conn_id, rec.code_verifier);
    snprintf(rec.error, sizeof rec.error, "%s", cp.error);
    snprintf(rec.error_description, sizeof rec.error_description, "%s", cp.error_description);
    snprintf(rec.iss, sizeof rec.iss, "%s", cp.iss);
    snprintf(rec.scope, sizeof rec.scope, "%s", cp.scope);
    snprintf(rec.return_to, sizeof rec.return_to, "%s", st.return_to);
    rec.received_at_ms = clock_wall_ms();
    snprintf(rec.intake_id, sizeof rec.intake_id, "%s", in->intake_id);
    snprintf(rec.request_id, sizeof rec.request_id, "%s", httpd_request_id(r));
    rec.meta = meta;
    char *json = records_callback_encode(&rec, &e);

    pending_cb *p = calloc(1, sizeof *p);
    if (!json || !p) {
        free(p);
        free(json);
        crypto_wipe(&rec, sizeof rec);
        crypto_wipe(&cp, sizeof cp);
        httpd_add_header(r, "Retry-After", "2");
        return fail(in, r, "callback", 503, "unavailable", "Please retry in a moment.");
    }
    p->in = in;
    p->req = r;
    p->json = !httpd_wants_html(r) && httpd_header(r, "Accept") &&
              strstr(httpd_header(r, "Accept"), "application/json");
    snprintf(p->conn_id, sizeof p->conn_id, "%s", st.conn_id);
    p->clear_meta = st.has_meta;
    if (cp.kind == CALLBACK_CODE) {
        char full[CRYPTO_SHA256_HEX];
        crypto_sha256_hex(cp.code, strlen(cp.code), full);
        log_code_id(full, p->code_hash);
    } else {
        log_code_id(NULL, p->code_hash);
    }
    httpd_set_data(r, p, free);

    /* Suspend first, then produce: a delivery report that arrives at once
     * must find the request suspended, or its wake would be lost. */
    if (httpd_suspend(r, in->deadline_ms, on_callback_wake) < 0) {
        crypto_wipe(json, strlen(json));
        free(json);
        crypto_wipe(&rec, sizeof rec);
        crypto_wipe(&cp, sizeof cp);
        httpd_add_header(r, "Retry-After", "1");
        return fail(in, r, "callback", 503, "busy", "Too many sign-ins at once; please retry.");
    }
    httpd_req_ref(r);
    if (publisher_send(in->pub, in->topic_callbacks, st.conn_id, json, strlen(json),
                       httpd_request_id(r), on_delivered, p, &e) < 0) {
        pending_settle(p, e.cls, e.msg);
        metrics_counter_add(in->delivery_failed, 1);
        httpd_wake(r);
        httpd_req_unref(r);
    }
    crypto_wipe(json, strlen(json));
    free(json);
    crypto_wipe(&rec, sizeof rec);
    crypto_wipe(&cp, sizeof cp);
}

/* DELETE /v1/connections/{id}: record the request in Kafka (the worker
 * revokes at the provider and answers with status disconnected); 202 once
 * Kafka acknowledged it. Needs a connections:write key (G7, checked by the
 * router before the id). */
static void route_disconnect(intake_t *in, httpd_req *r, const char *id)
{
    records_replay d;
    err_t e = {0};
    memset(&d, 0, sizeof d);
    snprintf(d.connection_id, sizeof d.connection_id, "%s", id);
    d.requested_at_ms = clock_wall_ms();
    snprintf(d.requested_by, sizeof d.requested_by, "%s", httpd_request_id(r));
    char *json = records_disconnect_encode(&d, &e);
    pending_cb *p = calloc(1, sizeof *p);
    if (!json || !p) {
        free(json);
        free(p);
        httpd_add_header(r, "Retry-After", "2");
        return fail(in, r, "disconnect", 503, "unavailable", "Please retry in a moment.");
    }
    p->in = in;
    p->req = r;
    p->disconnect = 1;
    snprintf(p->conn_id, sizeof p->conn_id, "%s", id);
    httpd_set_data(r, p, free);
    if (httpd_suspend(r, in->deadline_ms, on_callback_wake) < 0) {
        free(json);
        httpd_add_header(r, "Retry-After", "1");
        return fail(in, r, "disconnect", 503, "busy", "Too many requests at once; please retry.");
    }
    httpd_req_ref(r);
    if (publisher_send(in->pub, in->topic_callbacks, id, json, strlen(json), httpd_request_id(r),
                       on_delivered, p, &e) < 0) {
        pending_settle(p, e.cls, e.msg);
        httpd_wake(r);
        httpd_req_unref(r);
    }
    free(json);
}

/* ---- status: API, page, snippet ---------------------------------------------- */

/* The connection id of "/prefix/{id}" when genuine (MAC verified), else
 * NULL; *created_at gets its creation time. */
static const char *path_id(intake_t *in, const char *path, const char *prefix, char *out,
                           size_t cap, int64_t *created_at)
{
    size_t n = strlen(prefix);
    if (strncmp(path, prefix, n) != 0)
        return NULL;
    const char *id = path + n;
    if (strlen(id) >= cap || ident_conn_verify(in->keys, id, created_at) != IDENT_OK)
        return NULL;
    snprintf(out, cap, "%s", id);
    return out;
}

/* Versions of the documents of a genuine id the worker has not written
 * about: pending/awaiting_callback is 0, expired is 1 (distinct, so a
 * long-poll holding "0" learns of the expiry). `expired` is final: it is
 * served only once no callback for the id can exist unseen. The state
 * expired, plus the HTTP deadline (no callback is acknowledged later,
 * and none appended later than its delivery bound) and a clock allowance
 * between intakes, before the moment the read model is settled to (every
 * callback appended before it processed by the worker, its status applied
 * here: readmodel_settled_ms). Any intake decides alike from Kafka alone.
 * Until then the flow stays pending: an acknowledged callback may still
 * be queued behind a lagging worker, and `expired` would later flip. */
#define SYNTH_EXPIRED_VERSION 1
#define EXPIRY_CLOCK_SKEW_MS  5000

static int synthetic_expired(intake_t *in, const char *id, int64_t created_at)
{
    int64_t final_at =
        (created_at + in->cfg.state_ttl_s) * 1000 + in->deadline_ms + EXPIRY_CLOCK_SKEW_MS;
    return clock_wall_ms() >= final_at && readmodel_settled_ms(in->rm, id) >= final_at;
}

static char *synthetic_doc(const char *id, int64_t created_at, int expired)
{
    char ts[RECORDS_TIME_MAX];
    records_time_format(created_at * 1000, ts);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddNullToObject(o, "provider");
    cJSON_AddStringToObject(o, "status", expired ? "expired" : "pending");
    if (expired)
        cJSON_AddNullToObject(o, "phase");
    else
        cJSON_AddStringToObject(o, "phase", "awaiting_callback");
    cJSON_AddNullToObject(o, "reason");
    cJSON_AddStringToObject(o, "message",
                            expired ? "This connection attempt expired before it was completed. "
                                      "Please connect again."
                                    : "Waiting for you to approve the connection with the "
                                      "provider.");
    cJSON_AddNullToObject(o, "account");
    cJSON_AddNumberToObject(o, "attempts", 0);
    cJSON_AddStringToObject(o, "created_at", ts);
    cJSON_AddStringToObject(o, "updated_at", ts);
    cJSON_AddNumberToObject(o, "version", expired ? SYNTH_EXPIRED_VERSION : 0);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

typedef struct {
    char id[IDENT_CONN_ID_MAX];
    int64_t created_at;
    int64_t seen_version; /* the version the client already has */
    int platform;         /* a connections:read key asked: the platform view */
} status_wait;

/* Answer with the current document (200), or 304 when the client's
 * version is still current. */
static void answer_status(intake_t *in, httpd_req *r, const char *id, int64_t created_at,
                          int64_t client_version, int platform)
{
    char *doc = NULL;
    int64_t version = 0;
    err_t e = {0};
    int got = platform ? readmodel_get_platform(in->rm, id, &doc, &version, &e)
                       : readmodel_get(in->rm, id, &doc, &version, &e);
    if (got < 0) {
        httpd_add_header(r, "Retry-After", "1");
        return fail(in, r, "status", 503, "unavailable", "Status temporarily unavailable.");
    }
    if (got == 0) {
        int expired = synthetic_expired(in, id, created_at);
        version = expired ? SYNTH_EXPIRED_VERSION : 0;
        doc = synthetic_doc(id, created_at, expired);
        if (platform && doc) {
            /* No record yet: the metadata travels with the flow, so the
             * platform view has none to show before the callback. */
            cJSON *o = cJSON_Parse(doc);
            connmeta none = {{0}};
            connmeta_add_view(o, &none);
            free(doc);
            doc = o ? cJSON_PrintUnformatted(o) : NULL;
            cJSON_Delete(o);
        }
    }
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", (long long)version);
    httpd_add_header(r, "ETag", etag);
    if (client_version == version) {
        free(doc);
        count(in, "status", 304);
        return httpd_respond(r, 304, NULL, "", 0);
    }
    count(in, "status", 200);
    httpd_respond(r, 200, "application/json", doc ? doc : "{}", doc ? strlen(doc) : 2);
    free(doc);
}

static void on_status_wake(void *app, httpd_req *r, int timed_out)
{
    intake_t *in = app;
    status_wait *w = httpd_data(r);
    (void)timed_out;
    readmodel_unwatch(in->rm, r);
    answer_status(in, r, w->id, w->created_at, w->seen_version, w->platform);
}

/* If-None-Match: "N" → N, else -1. */
static int64_t client_version(const httpd_req *r)
{
    const char *inm = httpd_header(r, "If-None-Match");
    if (!inm)
        return -1;
    while (*inm == ' ' || *inm == 'W' || *inm == '/')
        inm++;
    if (*inm != '"')
        return -1;
    char *end = NULL;
    long long v = strtoll(inm + 1, &end, 10);
    return end && *end == '"' && v >= 0 ? (int64_t)v : -1;
}

static void route_status(intake_t *in, httpd_req *r)
{
    /* With a key this is the platform's call (connections:read); a bad key
     * is refused rather than silently served the public document. */
    int platform = httpd_header(r, "Authorization") != NULL;
    if (platform && authorize(in, r, "status", APIKEYS_CONNECTIONS_READ) < 0)
        return;
    char id[IDENT_CONN_ID_MAX];
    int64_t created_at = 0;
    if (!path_id(in, httpd_path(r), "/v1/connections/", id, sizeof id, &created_at))
        return fail(in, r, "status", 404, "not_found", "No such connection.");
    query_t q;
    err_t e = {0};
    size_t qlen;
    const char *qs = httpd_query(r, &qlen);
    int wait_s = 0;
    if (query_parse(qs, qlen, &q, &e) < 0)
        return fail(in, r, "status", 400, "invalid_request", "Invalid query.");
    const char *w = query_get(&q, "wait", NULL);
    if (w) {
        char *end = NULL;
        long v = strtol(w, &end, 10);
        if (!*w || *end || v < 0 || v > in->cfg.status_max_wait_s)
            return fail(in, r, "status", 400, "invalid_request",
                        "wait must be an integer number of seconds from 0 to 30.");
        wait_s = (int)v;
    }
    int64_t seen = client_version(r);
    if (wait_s == 0 || seen < 0)
        return answer_status(in, r, id, created_at, seen, platform);
    /* Long-poll: suspend, register, then re-check, so a change that lands
     * between the check and the registration still wakes us. */
    status_wait *sw = calloc(1, sizeof *sw);
    if (!sw)
        return answer_status(in, r, id, created_at, seen, platform);
    snprintf(sw->id, sizeof sw->id, "%s", id);
    sw->platform = platform;
    sw->created_at = created_at;
    sw->seen_version = seen;
    httpd_set_data(r, sw, free);
    if (httpd_suspend(r, wait_s * 1000, on_status_wake) < 0) {
        httpd_add_header(r, "Retry-After", "2");
        return fail(in, r, "status", 429, "too_many_waiters",
                    "Too many status requests are waiting; retry shortly.");
    }
    if (readmodel_watch(in->rm, id, r) < 0) {
        httpd_add_header(r, "Retry-After", "2");
        httpd_wake(r); /* answers at once from on_status_wake */
        return;
    }
    char *doc = NULL;
    int64_t version = 0; /* no record yet: the synthetic document's version */
    int got = readmodel_get(in->rm, id, &doc, &version, &e);
    if (got == 0 && synthetic_expired(in, id, created_at))
        version = SYNTH_EXPIRED_VERSION;
    if (got < 0 || version != seen)
        httpd_wake(r);
    free(doc);
}

/* Cursor of the list: base64url of the last id returned (opaque to
 * clients). */
#define LIST_DEFAULT_LIMIT 50

static int cursor_decode(const char *c, char *id, size_t cap)
{
    size_t n = strlen(c);
    if (n == 0 || n > crypto_b64url_len(IDENT_CONN_ID_MAX - 1))
        return -1;
    long got = crypto_b64url_decode(c, n, (uint8_t *)id, cap - 1);
    if (got <= 0)
        return -1;
    id[got] = '\0';
    for (long i = 0; i < got; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
              (id[i] >= '0' && id[i] <= '9') || id[i] == '-' || id[i] == '_'))
            return -1;
    return 0;
}

/* GET /v1/connections (connections:read): the platform's connections from
 * the read model, filtered, in pages of at most READMODEL_PAGE_MAX. */
static void route_list(intake_t *in, httpd_req *r)
{
    if (authorize(in, r, "connections_list", APIKEYS_CONNECTIONS_READ) < 0)
        return;
    query_t q;
    err_t e = {0};
    size_t qlen;
    const char *qs = httpd_query(r, &qlen);
    if (query_parse(qs, qlen, &q, &e) < 0)
        return fail(in, r, "connections_list", 400, "invalid_request", "Invalid query.");
    static const char *const known[] = {"end_user_id", "organization_id", "provider",
                                        "status",      "limit",           "cursor"};
    for (size_t i = 0; i < q.n; i++) {
        int ok = 0;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            ok |= strcmp(q.p[i].name, known[k]) == 0;
        if (!ok)
            return fail(in, r, "connections_list", 400, "invalid_request",
                        "Unknown query parameter: use end_user_id, organization_id, provider, "
                        "status, limit, cursor.");
    }
    readmodel_filter f = {query_get(&q, "end_user_id", NULL),
                          query_get(&q, "organization_id", NULL),
                          query_get(&q, "provider", NULL),
                          query_get(&q, "status", NULL),
                          NULL,
                          LIST_DEFAULT_LIMIT};
    const char *st = f.status;
    if (st && strcmp(st, "pending") != 0 && strcmp(st, "connected") != 0 &&
        strcmp(st, "failed") != 0 && strcmp(st, "expired") != 0 && strcmp(st, "disconnected") != 0)
        return fail(in, r, "connections_list", 400, "invalid_request",
                    "status must be pending, connected, failed, expired or disconnected.");
    const char *lim = query_get(&q, "limit", NULL);
    if (lim) {
        char *end = NULL;
        long v = strtol(lim, &end, 10);
        if (!*lim || *end || v < 1 || v > READMODEL_PAGE_MAX)
            return fail(in, r, "connections_list", 400, "invalid_request",
                        "limit must be an integer from 1 to 200.");
        f.limit = (int)v;
    }
    char after[IDENT_CONN_ID_MAX];
    const char *cur = query_get(&q, "cursor", NULL);
    if (cur) {
        if (cursor_decode(cur, after, sizeof after) < 0)
            return fail(in, r, "connections_list", 400, "invalid_cursor",
                        "cursor must be a next_cursor value from a previous page.");
        f.after_id = after;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(out, "data");
    char next[IDENT_CONN_ID_MAX];
    if (readmodel_list(in->rm, &f, items, next, sizeof next, &e) < 0) {
        cJSON_Delete(out);
        httpd_add_header(r, "Retry-After", "1");
        return fail(in, r, "connections_list", 503, "unavailable",
                    "The list is temporarily unavailable.");
    }
    if (next[0]) {
        char c[128];
        crypto_b64url_encode(next, strlen(next), c, sizeof c);
        cJSON_AddStringToObject(out, "next_cursor", c);
    } else {
        cJSON_AddNullToObject(out, "next_cursor");
    }
    respond_json(in, r, "connections_list", 200, out);
}

static void serve_asset(intake_t *in, httpd_req *r, const char *route, const char *name)
{
    const asset *a = assets_find(name);
    if (!a)
        return fail(in, r, route, 404, "not_found", "No such page.");
    httpd_add_header(r, "Content-Security-Policy", a->csp);
    count(in, route, 200);
    httpd_respond(r, 200, a->content_type, a->data, a->len);
}

static void route_page(intake_t *in, httpd_req *r)
{
    char id[IDENT_CONN_ID_MAX];
    int64_t created_at;
    if (!path_id(in, httpd_path(r), "/connect/", id, sizeof id, &created_at))
        return fail(in, r, "page", 404, "not_found", "No such connection.");
    serve_asset(in, r, "page", "connect.html");
}

/* ---- health and metrics ----------------------------------------------------------- */

static void route_readyz(intake_t *in, httpd_req *r)
{
    int kafka =
        !publisher_fatal(in->pub) && publisher_reachable(in->pub, in->topic_callbacks, 2000);
    int caught_up = readmodel_caught_up(in->rm);
    int ok = kafka && caught_up;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", ok ? "ready" : "not_ready");
    cJSON_AddBoolToObject(o, "kafka", kafka);
    cJSON_AddBoolToObject(o, "read_model_caught_up", caught_up);
    respond_json(in, r, "readyz", ok ? 200 : 503, o);
}

static void route_metrics(intake_t *in, httpd_req *r)
{
    httpd_t *http = in->http;
    if (http)
        metrics_gauge_set(in->inflight, httpd_suspended(http));
    char *text = NULL;
    size_t len = 0;
    err_t e = {0};
    if (metrics_render(in->metrics, &text, &len, &e) < 0)
        return fail(in, r, "metrics", 500, "internal", "Metrics unavailable.");
    count(in, "metrics", 200);
    httpd_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

/* ---- tokens for the platform (SPEC §5b) ----------------------------------- */

#define TOKEN_SUFFIX        "/token"
#define TOKEN_RETRY_AFTER_S "30"
#define REFRESH_RETRY_AFTER "2"
#define COALESCE_MAX        4096

/* Coalescing (an optimisation: the worker coalesces too, correctness does
 * not depend on it): at most one refresh.v1 per (id, seen_version) per
 * intake within the wait bound. A ring of the last COALESCE_MAX records
 * produced (the oldest is overwritten), scanned linearly: only calls that
 * found a stale token look. Guarded by in->cmu; any httpd or publisher
 * thread. */
typedef struct coalesce_entry {
    char id[IDENT_CONN_ID_MAX];
    int64_t seen_version;
    int64_t at_ms; /* monotonic; 0: free */
} coalesce_entry;

/* A token call waiting for a refresh. The publisher's thread writes done
 * (release) after cls; the httpd thread reads cls only once it saw done. */
typedef struct {
    intake_t *in;
    httpd_req *req;
    char id[IDENT_CONN_ID_MAX];
    int64_t seen_version;
    uint8_t seen_sealed[32]; /* sha256 of the stale sealed token */
    int64_t deadline_mono_ms;
    char request_id[RECORDS_ID_MAX];
    int produced; /* this request produced the refresh.v1 record */
    int overflow; /* the token view's waiter table was full: 429 */
    atomic_int done;
    errc cls;
} token_wait;

/* 1: the caller produces the refresh.v1 of (id, seen); 0: this intake
 * produced one within the wait bound (coalesced: just wait). */
static int coalesce_claim(intake_t *in, const char *id, int64_t seen, int64_t now)
{
    int produce = 1;
    pthread_mutex_lock(&in->cmu);
    for (int i = 0; i < COALESCE_MAX && produce; i++) {
        const coalesce_entry *c = &in->coalesce[i];
        if (c->at_ms && c->seen_version == seen && now - c->at_ms < in->cfg.token_refresh_wait_ms &&
            strcmp(c->id, id) == 0)
            produce = 0;
    }
    if (produce) {
        coalesce_entry *c = &in->coalesce[in->coalesce_next];
        in->coalesce_next = (in->coalesce_next + 1) % COALESCE_MAX;
        snprintf(c->id, sizeof c->id, "%s", id);
        c->seen_version = seen;
        c->at_ms = now;
    }
    pthread_mutex_unlock(&in->cmu);
    return produce;
}

/* The record of (id, seen) was not acknowledged: the next caller asks again. */
static void coalesce_forget(intake_t *in, const char *id, int64_t seen)
{
    pthread_mutex_lock(&in->cmu);
    for (int i = 0; i < COALESCE_MAX; i++) {
        coalesce_entry *c = &in->coalesce[i];
        if (c->at_ms && c->seen_version == seen && strcmp(c->id, id) == 0)
            c->at_ms = 0;
    }
    pthread_mutex_unlock(&in->cmu);
}

static void count_refresh(intake_t *in, const char *outcome)
{
    char labels[48];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", outcome);
    metrics_counter_add(metrics_counter(in->metrics, "oauthq_token_refresh_requests_total",
                                        "refresh.v1 records the token call asked for, by outcome",
                                        labels),
                        1);
}

/* Expired, or expiring within OAUTHQ_REFRESH_SKEW_S (-1: never expires). */
static int token_stale(const intake_t *in, const tokenview_row *row, int64_t now_ms)
{
    return row->expires_at_ms >= 0 &&
           row->expires_at_ms <= now_ms + (int64_t)in->cfg.refresh_skew_s * 1000;
}

/* 200 with the access token of row, opened here (never logged; the
 * plaintext buffers are cleansed). */
static void answer_token(intake_t *in, httpd_req *r, const char *id, const tokenview_row *row)
{
    static _Thread_local char plain[SEALED_PLAIN_MAX + 1];
    err_t e = {0};
    long n =
        sealed_open(in->data_keys, id, "access_token", row->access_sealed, plain, sizeof plain, &e);
    if (n < 0) {
        log_kv(LOGL_ERROR, "token_unsealable", "connection_id", id, "reason", e.msg, "request_id",
               httpd_request_id(r));
        return fail(in, r, "token", 500, "internal", "The token could not be read.");
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "access_token", plain);
    OPENSSL_cleanse(plain, sizeof plain);
    cJSON_AddStringToObject(o, "token_type", row->token_type[0] ? row->token_type : "bearer");
    if (row->expires_at_ms > 0) {
        char ts[RECORDS_TIME_MAX];
        records_time_format(row->expires_at_ms, ts);
        cJSON_AddStringToObject(o, "expires_at", ts);
    } else {
        cJSON_AddNullToObject(o, "expires_at");
    }
    if (row->scope[0])
        cJSON_AddStringToObject(o, "scope", row->scope);
    else
        cJSON_AddNullToObject(o, "scope");
    char *s = cJSON_PrintUnformatted(o);
    /* The token lives in the cJSON tree too: wipe its copy before freeing. */
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(o, "access_token");
    if (at && at->valuestring)
        OPENSSL_cleanse(at->valuestring, strlen(at->valuestring));
    cJSON_Delete(o);
    if (!s)
        return fail(in, r, "token", 500, "internal", "Out of memory.");
    httpd_add_header(r, "Cache-Control", "no-store");
    httpd_add_header(r, "Pragma", "no-cache");
    count(in, "token", 200);
    httpd_respond(r, 200, "application/json", s, strlen(s));
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

/* 1 when row (got: tokenview_get's answer) ends w's wait: the row is gone
 * or not connected any more, or it is a later version with a different,
 * unexpired token. A later record with the same token (the worker's
 * refresh claim, another field) does not: the wait goes on. */
static int refresh_over(const token_wait *w, int got, const tokenview_row *row)
{
    if (got != 1 || strcmp(row->status, "connected") != 0 || !row->access_sealed[0])
        return 1;
    if (row->version <= w->seen_version)
        return 0;
    uint8_t h[CRYPTO_SHA256_LEN];
    crypto_sha256(row->access_sealed, strlen(row->access_sealed), h);
    return memcmp(h, w->seen_sealed, sizeof h) != 0 &&
           (row->expires_at_ms < 0 || row->expires_at_ms > clock_wall_ms());
}

/* Publisher thread: the refresh.v1 record's fate. */
static void on_refresh_delivered(void *ud, errc cls, const char *reason, double latency_ms)
{
    token_wait *w = ud;
    intake_t *in = w->in;
    httpd_req *req = w->req;
    (void)latency_ms;
    w->cls = cls;
    atomic_store_explicit(&w->done, 1, memory_order_release);
    char seen[24];
    snprintf(seen, sizeof seen, "%lld", (long long)w->seen_version);
    if (cls == ERRC_OK) {
        count_refresh(in, "produced");
        log_kv(LOGL_INFO, "token_refresh_requested", "connection_id", w->id, "seen_version", seen,
               "request_id", w->request_id);
    } else {
        coalesce_forget(in, w->id, w->seen_version);
        count_refresh(in, "failed");
        metrics_counter_add(in->delivery_failed, 1);
        log_kv(LOGL_WARN, "token_refresh_not_acknowledged", "connection_id", w->id, "seen_version",
               seen, "request_id", w->request_id, "reason", reason);
        httpd_wake(req); /* answers 503 unavailable */
    }
    httpd_req_unref(req); /* the ref taken for the in-flight record */
}

/* Produce the refresh.v1 of w (acks=all, keyed by the connection id, the
 * callbacks topic: the partition of its codes); the request stays
 * suspended. A record that cannot be sent wakes it with the failure. */
static void produce_refresh(intake_t *in, httpd_req *r, token_wait *w, const char *provider)
{
    records_refresh rr;
    err_t e = {0};
    memset(&rr, 0, sizeof rr);
    snprintf(rr.connection_id, sizeof rr.connection_id, "%s", w->id);
    snprintf(rr.provider, sizeof rr.provider, "%s", provider);
    rr.seen_version = w->seen_version;
    rr.requested_at_ms = clock_wall_ms();
    snprintf(rr.intake_id, sizeof rr.intake_id, "%s", in->intake_id);
    snprintf(rr.request_id, sizeof rr.request_id, "%s", w->request_id);
    char *json = records_refresh_encode(&rr, &e);
    w->produced = 1;
    httpd_req_ref(r);
    if (!json || publisher_send(in->pub, in->topic_callbacks, w->id, json, strlen(json),
                                w->request_id, on_refresh_delivered, w, &e) < 0) {
        coalesce_forget(in, w->id, w->seen_version);
        count_refresh(in, "failed");
        metrics_counter_add(in->delivery_failed, 1);
        w->cls = e.cls != ERRC_OK ? e.cls : ERRC_RETRIABLE;
        atomic_store_explicit(&w->done, 1, memory_order_release);
        httpd_wake(r);
        httpd_req_unref(r);
    }
    free(json);
}

static void on_token_wake(void *app, httpd_req *r, int timed_out);

/* Watch id in the token view, then re-check (a record committed between
 * the caller's look and the registration still ends the wait). Called
 * with r suspended. */
static void watch_and_recheck(intake_t *in, httpd_req *r, token_wait *w)
{
    if (tokenview_watch(in->tv, w->id, r) < 0) {
        w->overflow = 1;
        httpd_wake(r); /* answers 429 from on_token_wake */
        return;
    }
    static _Thread_local tokenview_row row;
    err_t e = {0};
    int got = tokenview_get(in->tv, w->id, &row, &e);
    if (refresh_over(w, got, &row))
        httpd_wake(r);
}

/* httpd thread: a record of the id committed, the record failed, the
 * deadline passed, or shutdown. Answers, or waits on for the rest of the
 * bound when the record that woke it did not end the wait. */
static void on_token_wake(void *app, httpd_req *r, int timed_out)
{
    intake_t *in = app;
    token_wait *w = httpd_data(r);
    tokenview_unwatch(in->tv, r);
    if (w->overflow) {
        httpd_add_header(r, "Retry-After", REFRESH_RETRY_AFTER);
        return fail(in, r, "token", 429, "too_many_waiters",
                    "Too many token requests are waiting for a refresh; retry shortly.");
    }
    if (w->produced && atomic_load_explicit(&w->done, memory_order_acquire) && w->cls != ERRC_OK) {
        httpd_add_header(r, "Retry-After", "1");
        return fail(in, r, "token", 503, "unavailable",
                    "The refresh could not be requested just now; retry in a moment.");
    }
    static _Thread_local tokenview_row row;
    err_t e = {0};
    int got = tokenview_get(in->tv, w->id, &row, &e);
    if (got < 0) {
        httpd_add_header(r, "Retry-After", "1");
        return fail(in, r, "token", 503, "unavailable", "Tokens temporarily unavailable.");
    }
    if (got == 0 || strcmp(row.status, "connected") != 0 || !row.access_sealed[0]) {
        if (got == 1 && strcmp(row.status, "failed") == 0)
            return fail(in, r, "token", 409, "reconnect_required",
                        "The provider would not refresh this connection's token: the user has to "
                        "connect again.");
        return fail(in, r, "token", 409, "not_connected",
                    "This connection is not connected: it has no token to give.");
    }
    if (refresh_over(w, got, &row))
        return answer_token(in, r, w->id, &row);
    int64_t left = w->deadline_mono_ms - clock_mono_ms();
    if (timed_out || left <= 0 || atomic_load(&in->closing) ||
        httpd_suspend(r, (int)left, on_token_wake) < 0) {
        httpd_add_header(r, "Retry-After", REFRESH_RETRY_AFTER);
        return fail(in, r, "token", 503, "refresh_pending",
                    "The access token is being refreshed and the refresh has not finished yet; "
                    "retry in a moment.");
    }
    watch_and_recheck(in, r, w);
}

/* GET /v1/connections/{id}/token (tokens:read): the access token of a
 * connected connection, opened from the token view's sealed copy in this
 * request only. A token expired or expiring within OAUTHQ_REFRESH_SKEW_S
 * is refreshed (SPEC §5b): the call produces a refresh.v1 record (one per
 * id and seen version within the wait bound: coalesce_claim) and waits,
 * suspended, for the token view to hold a later version with a new token
 * (200), a failed one (409 reconnect_required) or none connected (409
 * not_connected); past OAUTHQ_TOKEN_REFRESH_WAIT_MS 503 refresh_pending. */
static void route_token(intake_t *in, httpd_req *r, const char *path)
{
    if (authorize(in, r, "token", APIKEYS_TOKENS_READ) < 0)
        return;
    size_t plen = strlen(path), slen = strlen(TOKEN_SUFFIX);
    char idpath[16 + IDENT_CONN_ID_MAX], id[IDENT_CONN_ID_MAX];
    int64_t created_at = 0;
    if (plen <= 16 + slen || plen - slen >= sizeof idpath)
        return fail(in, r, "token", 404, "not_found", "No such connection.");
    memcpy(idpath, path, plen - slen);
    idpath[plen - slen] = '\0';
    if (!path_id(in, idpath, "/v1/connections/", id, sizeof id, &created_at))
        return fail(in, r, "token", 404, "not_found", "No such connection.");
    if (!in->tv) {
        httpd_add_header(r, "Retry-After", TOKEN_RETRY_AFTER_S);
        return fail(in, r, "token", 503, "tokens_not_configured",
                    "This intake has no OAUTHQ_DATA_KEYS_FILE: it cannot serve tokens.");
    }
    static _Thread_local tokenview_row row;
    err_t e = {0};
    int got = tokenview_get(in->tv, id, &row, &e);
    /* Before the view caught up a row may be stale (a token since rotated
     * out or a connection since disconnected): serve nothing from it. */
    if (got < 0 || !tokenview_caught_up(in->tv)) {
        httpd_add_header(r, "Retry-After", "1");
        return fail(in, r, "token", 503, "unavailable", "Tokens temporarily unavailable.");
    }
    if (got == 0 || strcmp(row.status, "connected") != 0 || !row.access_sealed[0])
        return fail(in, r, "token", 409, "not_connected",
                    "This connection is not connected: it has no token to give.");
    if (!token_stale(in, &row, clock_wall_ms()))
        return answer_token(in, r, id, &row);

    token_wait *w = calloc(1, sizeof *w);
    if (!w) {
        httpd_add_header(r, "Retry-After", "1");
        return fail(in, r, "token", 503, "unavailable", "Tokens temporarily unavailable.");
    }
    w->in = in;
    w->req = r;
    snprintf(w->id, sizeof w->id, "%s", id);
    snprintf(w->request_id, sizeof w->request_id, "%s", httpd_request_id(r));
    w->seen_version = row.version;
    crypto_sha256(row.access_sealed, strlen(row.access_sealed), w->seen_sealed);
    w->deadline_mono_ms = clock_mono_ms() + in->cfg.token_refresh_wait_ms;
    char provider[sizeof row.provider];
    snprintf(provider, sizeof provider, "%s", row.provider);
    httpd_set_data(r, w, free);
    if (httpd_suspend(r, in->cfg.token_refresh_wait_ms, on_token_wake) < 0) {
        httpd_add_header(r, "Retry-After", REFRESH_RETRY_AFTER);
        return fail(in, r, "token", 429, "too_many_waiters",
                    "Too many requests are waiting; retry shortly.");
    }
    /* Register before producing: the worker's answer may commit before
     * publisher_send returns. */
    if (tokenview_watch(in->tv, id, r) < 0) {
        w->overflow = 1;
        httpd_wake(r);
        return;
    }
    if (coalesce_claim(in, id, w->seen_version, clock_mono_ms()))
        produce_refresh(in, r, w, provider);
    else
        count_refresh(in, "coalesced");
    got = tokenview_get(in->tv, id, &row, &e);
    if (refresh_over(w, got, &row))
        httpd_wake(r);
}

static void handle(void *app, httpd_req *r)
{
    intake_t *in = app;
    const char *m = httpd_method(r), *path = httpd_path(r);
    int get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
    if (strcmp(path, "/oauth/callback") == 0) {
        if (!get)
            return fail(in, r, "callback", 405, "method_not_allowed", "Use GET.");
        return route_callback(in, r);
    }
    if (strcmp(path, "/oauth/start") == 0) {
        if (!get)
            return fail(in, r, "start", 405, "method_not_allowed", "Use GET.");
        return route_start(in, r);
    }
    if (strcmp(path, "/v1/connections") == 0) {
        if (get)
            return route_list(in, r);
        if (strcmp(m, "POST") != 0)
            return fail(in, r, "connections_create", 405, "method_not_allowed", "Use POST or GET.");
        return route_create(in, r);
    }
    if (strncmp(path, "/v1/connections/", 16) == 0) {
        size_t pl = strlen(path);
        if (pl > 16 + 6 && strcmp(path + pl - 6, TOKEN_SUFFIX) == 0) {
            if (!get)
                return fail(in, r, "token", 405, "method_not_allowed", "Use GET.");
            return route_token(in, r, path);
        }
        if (strcmp(m, "DELETE") == 0) {
            if (authorize(in, r, "disconnect", APIKEYS_CONNECTIONS_WRITE) < 0)
                return;
            char id[IDENT_CONN_ID_MAX];
            int64_t created_at;
            if (!path_id(in, path, "/v1/connections/", id, sizeof id, &created_at))
                return fail(in, r, "disconnect", 404, "not_found", "No such connection.");
            return route_disconnect(in, r, id);
        }
        if (!get)
            return fail(in, r, "status", 405, "method_not_allowed", "Use GET or DELETE.");
        return route_status(in, r);
    }
    if (strncmp(path, "/connect/", 9) == 0 && get)
        return route_page(in, r);
    if (strcmp(path, "/static/oauthq-status.js") == 0 && get)
        return serve_asset(in, r, "static", "oauthq-status.js");
    if (strcmp(path, "/") == 0 && get && in->cfg.demo)
        return serve_asset(in, r, "demo", "demo.html");
    if (strcmp(path, "/healthz") == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "status", "ok");
        return respond_json(in, r, "healthz", 200, o);
    }
    if (strcmp(path, "/readyz") == 0)
        return route_readyz(in, r);
    if (strcmp(path, "/metrics") == 0)
        return route_metrics(in, r);
    fail(in, r, "other", 404, "not_found", "No such page.");
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static int parse_allowlist(intake_t *in, err_t *e)
{
    char buf[sizeof in->cfg.return_to_allowlist];
    snprintf(buf, sizeof buf, "%s", in->cfg.return_to_allowlist);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t n = strlen(tok);
        while (n > 0 && tok[n - 1] == ' ')
            tok[--n] = '\0';
        if (n == 0)
            continue;
        if (in->nallow == ALLOW_MAX || n >= sizeof in->allow[0] ||
            (strncmp(tok, "https://", 8) != 0 && strncmp(tok, "http://", 7) != 0) ||
            !strchr(tok + (tok[4] == 's' ? 8 : 7), '/') /* origin must end with a path */)
            return err_set(e, ERRC_FATAL,
                           "OAUTHQ_RETURN_TO_ALLOWLIST: entry '%.64s' must be an http(s) URL "
                           "with a path (e.g. https://app.example/), at most %d entries",
                           tok, ALLOW_MAX);
        snprintf(in->allow[in->nallow++], sizeof in->allow[0], "%s", tok);
    }
    return 0;
}

intake_t *intake_open(const config_t *c, err_t *e)
{
    intake_t *in = calloc(1, sizeof *in);
    if (!in) {
        err_set(e, ERRC_FATAL, "out of memory");
        return NULL;
    }
    in->cfg = *c;
    in->deadline_ms = c->produce_timeout_ms + 2000;
    pthread_mutex_init(&in->cmu, NULL);
    in->cmu_init = 1;
    in->coalesce = calloc(COALESCE_MAX, sizeof *in->coalesce);
    if (!in->coalesce) {
        err_set(e, ERRC_FATAL, "out of memory");
        goto fail;
    }
    in->secure_cookie = strncmp(c->public_url, "https://", 8) == 0;
    if (c->instance_id[0])
        snprintf(in->intake_id, sizeof in->intake_id, "%s", c->instance_id);
    else {
        char host[32] = "host";
        gethostname(host, sizeof host - 1);
        snprintf(in->intake_id, sizeof in->intake_id, "intake-%.31s-%ld", host, (long)getpid());
    }
    if (parse_allowlist(in, e) < 0)
        goto fail;
    if (!c->providers_file[0]) {
        err_set(e, ERRC_FATAL, "OAUTHQ_PROVIDERS_FILE is not set");
        goto fail;
    }
    in->providers = providers_load(c->providers_file, e);
    if (!in->providers)
        goto fail;
    in->keys = keyring_load(c->state_key_file, e);
    if (!in->keys) {
        err_wrap(e, "OAUTHQ_STATE_KEY_FILE");
        goto fail;
    }
    if (c->api_keys_file[0]) {
        in->api_keys = apikeys_load(c->api_keys_file, e);
        if (!in->api_keys) {
            err_wrap(e, "OAUTHQ_API_KEYS_FILE");
            goto fail;
        }
    } else {
        log_kv(LOGL_WARN, "api_keys_not_configured", "effect",
               "every server-side call (create, disconnect, list) is refused with 401");
    }
    if (c->data_keys_file[0]) {
        in->data_keys = keyring_load(c->data_keys_file, e);
        if (!in->data_keys) {
            err_wrap(e, "OAUTHQ_DATA_KEYS_FILE");
            goto fail;
        }
    } else {
        log_kv(LOGL_WARN, "data_keys_not_configured", "effect",
               "GET /v1/connections/{id}/token answers 503 tokens_not_configured");
    }
    if (config_topic(c, KAFKA_TOPIC_CALLBACKS, in->topic_callbacks, sizeof in->topic_callbacks, e) <
        0)
        goto fail;
    in->metrics = metrics_new();
    if (!in->metrics) {
        err_set(e, ERRC_FATAL, "out of memory");
        goto fail;
    }
    static const double lat_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,   0.25,   0.5,   1,    2.5,   5};
    in->produced = metrics_counter(in->metrics, "oauthq_callbacks_produced_total",
                                   "Callback records acknowledged by Kafka", NULL);
    in->delivery_failed = metrics_counter(in->metrics, "oauthq_delivery_failures_total",
                                          "Callback records Kafka did not acknowledge", NULL);
    in->rejected = metrics_counter(in->metrics, "oauthq_callbacks_rejected_total",
                                   "Callbacks refused with 400 (nothing produced)", NULL);
    in->produce_latency = metrics_histogram(in->metrics, "oauthq_produce_latency_seconds",
                                            "Time from produce to Kafka acknowledgement", NULL,
                                            lat_bounds, sizeof lat_bounds / sizeof lat_bounds[0]);
    in->inflight = metrics_gauge(in->metrics, "oauthq_http_inflight_callbacks",
                                 "Callbacks waiting for Kafka's acknowledgement", NULL);
    assets_init();
    error_csp_init();
    in->rm = readmodel_open(c, in->metrics, e);
    if (!in->rm)
        goto fail;
    if (in->data_keys) {
        in->tv = tokenview_open(c, in->metrics, e);
        if (!in->tv)
            goto fail;
    }
    in->pub = publisher_open(c, c->produce_timeout_ms, e);
    if (!in->pub ||
        publisher_check_partitions(in->pub, c, in->topic_callbacks, c->kafka_timeout_ms, e) < 0)
        goto fail;
    httpd_opts ho = {c->listen,      c->http_threads,      c->http_max_connections,
                     c->http_per_ip, c->http_max_inflight, 30};
    in->http = httpd_start(&ho, handle, in, e);
    if (!in->http)
        goto fail;
    log_kv(LOGL_INFO, "intake_listening", "listen", c->listen, "public_url", c->public_url,
           "intake_id", in->intake_id, "topic", in->topic_callbacks);
    return in;
fail:
    intake_close(in, 0);
    return NULL;
}

int intake_fatal(const intake_t *in)
{
    return atomic_load(&in->fatal) || (in->pub && publisher_fatal(in->pub)) ||
           readmodel_fatal(in->rm) || tokenview_fatal(in->tv);
}

void intake_close(intake_t *in, int flush_ms)
{
    if (!in)
        return;
    if (in->http) {
        httpd_quiesce(in->http);
        /* Long-polls answer at once with what they have; in-flight
         * callbacks end by delivery or by their own deadline. */
        atomic_store(&in->closing, 1);
        if (in->rm)
            readmodel_wake_all(in->rm);
        if (in->tv)
            tokenview_wake_all(in->tv);
        for (int i = 0; i < (in->deadline_ms + 1000) / 20 && httpd_suspended(in->http) > 0; i++) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (in->pub)
        publisher_close(in->pub, flush_ms);
    if (in->http)
        httpd_stop(in->http);
    tokenview_close(in->tv);
    readmodel_close(in->rm);
    metrics_free(in->metrics);
    keyring_free(in->data_keys);
    keyring_free(in->keys);
    apikeys_free(in->api_keys);
    providers_free(in->providers);
    free(in->coalesce);
    if (in->cmu_init)
        pthread_mutex_destroy(&in->cmu);
    free(in);
}
