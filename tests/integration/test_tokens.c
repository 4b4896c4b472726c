/*
 * Integration: GET /v1/connections/{id}/token (SPEC §5b) through the real
 * chain: simulator → worker (seals the tokens into the connections
 * changelog) → intake (token view from that changelog, opened only in the
 * request). Checks: a connected connection gives its token to a
 * tokens:read key, with Cache-Control: no-store and the expiry the provider
 * announced (--access-ttl); 401 without a key, 403 with a connections:read
 * key (nothing produced); 404 for a forged id; 409 for a pending or failed
 * connection; records of other schemas in the changelog (provider_state.v1
 * keyed "_provider.*", garbage) are skipped and a tombstone removes the
 * token; and that no token reaches the intake's or the worker's log (G5).
 * Refresh, the intake's side (SPEC §5b): a token expiring within
 * OAUTHQ_REFRESH_SKEW_S makes the call produce one refresh.v1 record
 * (connection_id, seen_version) and wait; the test plays the worker by
 * writing the next connection.v1 record itself (sealed with the data
 * keyring, version 100+ on an id the worker never saw, so the worker's own
 * records for it stay older): a new token answers the waiting call 200, a
 * failed record 409 reconnect_required, nothing within
 * OAUTHQ_TOKEN_REFRESH_WAIT_MS 503 refresh_pending, and 50 concurrent
 * callers get the same new token from ONE record. The connection.v1 and
 * refresh.v1 records of the run are appended to var/test-logs/ for the
 * JSON Schema check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>

#include "common/config.h"
#include "common/conn.h"
#include "common/ident.h"
#include "common/kafka.h"
#include "common/keyring.h"
#include "common/log.h"
#include "common/records.h"
#include "common/sealed.h"
#include "tests/support/testfix.h"
#include "tests/support/testhttp.h"
#include "tests/support/testkafka.h"
#include "tests/support/testproc.h"

#define MAX_TOKENS      16
#define REFRESH_WAIT_MS "4000"

static char g_dir[256], g_url[96], g_t_callbacks[256];
static char g_t_conn[256];
static char g_auth_tok[256], g_auth_ro[256];
static testfix_sim g_sims[2];
static pid_t g_worker = -1, g_intake = -1;
static pid_t g_intake1 = -1; /* the second intake of test_real_refresh_across_two_intakes */
static config_t g_cfg;
static keyring_t *g_keys, *g_data_keys;
static rd_kafka_t *g_prod;
static char *g_tokens[MAX_TOKENS]; /* every token served, for the log scan */
static int g_ntokens;

static int start_sim(int i, const char *access_ttl, const char *secret)
{
    char name[16];
    snprintf(name, sizeof name, "sim%d", i);
    const char *args[] = {"--access-ttl", access_ttl, NULL};
    return testfix_sim_start(&g_sims[i], g_dir, name, "ca_t", secret, args, NULL);
}

static int setup(void **state)
{
    (void)state;
    if (testfix_tmpdir(g_dir, sizeof g_dir, "tokens") < 0)
        return -1;
    char path[TESTFIX_PATH_MAX], secret[TESTFIX_PATH_MAX];
    testfix_topic_prefix("tokens", NULL, 0);
    setenv("OAUTHQ_TOPIC_PARTITIONS", "3", 1);
    setenv("OAUTHQ_LOG_FORMAT", "text", 1);
    setenv("OAUTHQ_LOG_LEVEL", "debug", 1); /* the most a log could leak */
    err_t e = {0};
    if (config_load(&g_cfg, NULL, &e) < 0 || kafka_topics_ensure(&g_cfg, &e) < 0)
        return -1;
    log_init("itest", "warn", "text", &e);
    config_topic(&g_cfg, "callbacks", g_t_callbacks, sizeof g_t_callbacks, &e);
    config_topic(&g_cfg, "connections", g_t_conn, sizeof g_t_conn, &e);

    if (testfix_state_keys(g_dir, path, sizeof path) < 0)
        return -1;
    g_keys = keyring_load(path, &e);
    if (testfix_data_keys(g_dir, path, sizeof path) < 0)
        return -1;
    g_data_keys = keyring_load(path, &e);
    setenv("OAUTHQ_TOKEN_REFRESH_WAIT_MS", REFRESH_WAIT_MS, 1);
    if (testfix_secret(g_dir, "secret", "sk_itest_tokens_secret", secret, sizeof secret) < 0)
        return -1;
    testfix_api_key keys[] = {{.name = "tok", .scopes = "tokens:read"},
                              {.name = "ro", .scopes = "connections:read"}};
    if (testfix_api_keys(g_dir, keys, 2) < 0)
        return -1;
    snprintf(g_auth_tok, sizeof g_auth_tok, "%s", keys[0].auth);
    snprintf(g_auth_ro, sizeof g_auth_ro, "%s", keys[1].auth);
    /* sim 0: access tokens live an hour; sim 1: 62 s, so a token is inside
     * the 60 s skew two seconds after it was issued (and fresh for two
     * seconds after a refresh). */
    if (start_sim(0, "3600", secret) < 0 || start_sim(1, "62", secret) < 0)
        return -1;
    const testfix_provider prov[] = {
        {.name = "sim", .base = g_sims[0].base, .client_id = "ca_t", .secret_file = secret},
        {.name = "simshort", .base = g_sims[1].base, .client_id = "ca_t", .secret_file = secret},
    };
    if (testfix_providers(g_dir, prov, 2) < 0)
        return -1;

    char bin[TESTFIX_PATH_MAX], data[300];
    if (testfix_bin(bin, sizeof bin, "oauthq-worker") < 0)
        return -1;
    snprintf(data, sizeof data, "%s/worker", g_dir);
    setenv("OAUTHQ_DATA_DIR", data, 1);
    setenv("OAUTHQ_INSTANCE_ID", "w0", 1);
    setenv("OAUTHQ_WORKER_LISTEN", "127.0.0.1:0", 1);
    char *wargv[] = {bin, NULL};
    g_worker = testfix_spawn(g_dir, "worker.log", wargv);

    testfix_addr a;
    if (testfix_addr_new(&a) < 0)
        return -1;
    char url[160];
    snprintf(g_url, sizeof g_url, "%s", a.url);
    setenv("OAUTHQ_LISTEN", a.listen, 1);
    setenv("OAUTHQ_PUBLIC_URL", g_url, 1);
    snprintf(data, sizeof data, "%s/intake", g_dir);
    setenv("OAUTHQ_DATA_DIR", data, 1);
    setenv("OAUTHQ_INSTANCE_ID", "i0", 1);
    if (testfix_bin(bin, sizeof bin, "oauthq-intake") < 0)
        return -1;
    char *iargv[] = {bin, NULL};
    g_intake = testfix_spawn(g_dir, "intake.log", iargv);
    snprintf(url, sizeof url, "%s/healthz", g_url);
    if (g_worker < 0 || g_intake < 0 || testproc_wait_http(url, 15000) != 0)
        return -1;
    char errstr[256];
    g_prod = rd_kafka_new(RD_KAFKA_PRODUCER, kafka_conf_producer(&g_cfg, NULL, &e), errstr,
                          sizeof errstr);
    return g_prod && g_keys && g_data_keys ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (g_intake > 0)
        testproc_stop(g_intake, 15000);
    if (g_intake1 > 0)
        testproc_stop(g_intake1, 15000);
    if (g_worker > 0)
        testproc_stop(g_worker, 20000);
    testfix_sim_stop_all();
    if (g_prod)
        rd_kafka_destroy(g_prod);
    keyring_free(g_keys);
    keyring_free(g_data_keys);
    for (int i = 0; i < g_ntokens; i++)
        free(g_tokens[i]);
    return testfix_tmpdir_remove(g_dir, "itest_tokens");
}

/* ---- helpers ------------------------------------------------------------------ */

/* A code from sim i (optionally with a sim_fault), as the browser would get it. */
static void new_code(int i, const char *fault, char *code, size_t cap)
{
    char url[512], tail[128];
    snprintf(tail, sizeof tail, "&state=s%s%s", fault ? "&sim_fault=" : "", fault ? fault : "");
    assert_int_equal(testfix_authorize_url(url, sizeof url, g_sims[i].base, "ca_t",
                                           "http://127.0.0.1:9/cb", tail),
                     0);
    testhttp_resp r;
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 302);
    const char *c = strstr(r.location, "code=");
    code[0] = '\0';
    if (c)
        snprintf(code, cap, "%.*s", (int)strcspn(c + 5, "&"), c + 5);
    testhttp_resp_free(&r);
}

/* A genuine connection id whose callback (code, or an error when code is
 * "") the intake would have produced. */
static void produce_cb(char id[IDENT_CONN_ID_MAX], const char *provider, const char *code)
{
    err_t e = {0};
    assert_int_equal(ident_conn_new(g_keys, time(NULL), id, &e), 0);
    static records_callback rc;
    memset(&rc, 0, sizeof rc);
    snprintf(rc.connection_id, sizeof rc.connection_id, "%s", id);
    snprintf(rc.provider, sizeof rc.provider, "%s", provider);
    if (code[0]) {
        rc.kind = RECORDS_CB_CODE;
        snprintf(rc.code, sizeof rc.code, "%s", code);
    } else {
        rc.kind = RECORDS_CB_ERROR;
        snprintf(rc.error, sizeof rc.error, "access_denied");
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rc.received_at_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    snprintf(rc.intake_id, sizeof rc.intake_id, "itest");
    snprintf(rc.request_id, sizeof rc.request_id, "r-tokens");
    char *json = records_callback_encode(&rc, NULL);
    assert_non_null(json);
    assert_int_equal(rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_callbacks),
                                       RD_KAFKA_V_KEY(id, strlen(id)),
                                       RD_KAFKA_V_VALUE(json, strlen(json)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    free(json);
    assert_int_equal(rd_kafka_flush(g_prod, 30000), 0);
}

/* Append a 200 token answer to var/test-logs/token-api-docs.jsonl for the
 * OpenAPI check, the token itself replaced (test logs keep no token). */
static void save_token_doc(const char *body)
{
    cJSON *o = cJSON_Parse(body);
    assert_non_null(o);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(o, "access_token")));
    cJSON_ReplaceItemInObject(o, "access_token", cJSON_CreateString("redacted"));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    assert_int_equal(testfix_test_logs(), 0);
    FILE *f = fopen("var/test-logs/token-api-docs.jsonl", "a");
    if (f) {
        fprintf(f, "%s\n", s);
        fclose(f);
    }
    free(s);
}

/* GET the token of id with the given Authorization header line (or NULL). */
static void get_token(const char *id, const char *auth, testhttp_resp *r)
{
    char url[256];
    snprintf(url, sizeof url, "%s/v1/connections/%s/token", g_url, id);
    const char *hdrs[] = {auth, NULL};
    assert_int_equal(testhttp_do("GET", url, auth ? hdrs : NULL, NULL, r), 0);
}

/* Wait until the public status of id is want (bounded, 30 s). */
static void await_status(const char *id, const char *want)
{
    char url[256];
    snprintf(url, sizeof url, "%s/v1/connections/%s", g_url, id);
    for (int i = 0; i < 300; i++) {
        testhttp_resp r;
        assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
        cJSON *o = r.status == 200 ? cJSON_Parse(r.body) : NULL;
        const cJSON *s = cJSON_GetObjectItem(o, "status");
        int done = cJSON_IsString(s) && strcmp(s->valuestring, want) == 0;
        cJSON_Delete(o);
        testhttp_resp_free(&r);
        if (done)
            return;
        usleep(100000);
    }
    fail_msg("connection %s never became %s", id, want);
}

/* GET the token until it is not 409/503 "unavailable" any more (the token
 * view may trail the status read model by a moment); bounded, 10 s. */
static void get_token_settled(const char *id, testhttp_resp *r)
{
    for (int i = 0; i < 100; i++) {
        get_token(id, g_auth_tok, r);
        int waiting = r->status == 409 || (r->status == 503 && strstr(r->body, "\"unavailable\""));
        if (!waiting)
            return;
        testhttp_resp_free(r);
        usleep(100000);
    }
    get_token(id, g_auth_tok, r);
}

static const char *json_str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int64_t callbacks_end(void)
{
    int64_t sum = 0;
    err_t e = {0};
    for (int p = 0; p < 3; p++) {
        int64_t lo = 0, hi = 0;
        assert_int_equal(kafka_watermarks(g_prod, g_t_callbacks, p, &lo, &hi, 10000, &e), 0);
        sum += hi;
    }
    return sum;
}

/* A sample of the intake's /metrics (-1 when absent). */
static long metric(const char *name)
{
    char url[128];
    snprintf(url, sizeof url, "%s/metrics", g_url);
    testhttp_resp r;
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    char needle[160];
    snprintf(needle, sizeof needle, "\n%s ", name);
    const char *p = strstr(r.body, needle);
    long v = p ? atol(p + strlen(needle)) : -1;
    testhttp_resp_free(&r);
    return v;
}

static void assert_error(const testhttp_resp *r, long status, const char *code)
{
    assert_int_equal(r->status, status);
    cJSON *o = cJSON_Parse(r->body);
    assert_non_null(o);
    assert_string_equal(json_str(o, "error"), code);
    assert_null(cJSON_GetObjectItem(o, "access_token"));
    cJSON_Delete(o);
}

/* ---- tests --------------------------------------------------------------------- */

static void test_connected_gives_token_refused_without_scope(void **state)
{
    (void)state;
    char code[128], id[IDENT_CONN_ID_MAX];
    new_code(0, NULL, code, sizeof code);
    produce_cb(id, "sim", code);
    await_status(id, "connected");

    testhttp_resp r;
    get_token_settled(id, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.cache_control, "no-store");
    save_token_doc(r.body);
    assert_non_null(strstr(r.headers, "Pragma: no-cache"));
    cJSON *o = cJSON_Parse(r.body);
    assert_non_null(o);
    const char *at = json_str(o, "access_token");
    assert_non_null(at);
    assert_int_equal(strncmp(at, "sk_test_", 8), 0); /* the plaintext the simulator issued */
    assert_string_equal(json_str(o, "token_type"), "bearer");
    assert_string_equal(json_str(o, "scope"), "read_write");
    const char *exp = json_str(o, "expires_at");
    assert_non_null(exp);
    int64_t exp_ms = 0;
    assert_int_equal(records_time_parse(exp, &exp_ms), 0);
    int64_t now = (int64_t)time(NULL) * 1000;
    assert_true(exp_ms > now + 3000 * 1000 && exp_ms <= now + 3601 * 1000);
    assert_null(cJSON_GetObjectItem(o, "refresh_token")); /* never leaves oauthq */
    if (g_ntokens < MAX_TOKENS)
        g_tokens[g_ntokens++] = strdup(at);
    cJSON_Delete(o);
    testhttp_resp_free(&r);

    /* Refused without a key or with the wrong scope; nothing produced. */
    int64_t before = callbacks_end();
    get_token(id, NULL, &r);
    assert_error(&r, 401, "unauthorized");
    assert_non_null(strstr(r.headers, "WWW-Authenticate: Bearer"));
    testhttp_resp_free(&r);
    get_token(id, "Authorization: Bearer oq_tok_AAAAAAAAAAAAAAAAAAAAAAAA", &r);
    assert_error(&r, 401, "unauthorized");
    testhttp_resp_free(&r);
    get_token(id, g_auth_ro, &r);
    assert_error(&r, 403, "insufficient_scope");
    assert_non_null(strstr(r.body, "tokens:read"));
    testhttp_resp_free(&r);
    char url[256];
    snprintf(url, sizeof url, "%s/v1/connections/%s/token", g_url, id);
    const char *hdrs[] = {g_auth_tok, NULL};
    assert_int_equal(testhttp_do("POST", url, hdrs, "", &r), 0);
    assert_int_equal(r.status, 405);
    testhttp_resp_free(&r);
    assert_int_equal(callbacks_end(), before);

    /* A forged id is unknown. */
    char forged[IDENT_CONN_ID_MAX];
    snprintf(forged, sizeof forged, "%s", id);
    forged[strlen(forged) - 1] = forged[strlen(forged) - 1] == 'A' ? 'B' : 'A';
    get_token(forged, g_auth_tok, &r);
    assert_error(&r, 404, "not_found");
    testhttp_resp_free(&r);
}

static void test_not_connected_is_409(void **state)
{
    (void)state;
    /* A genuine id without any record yet (pending). */
    char id[IDENT_CONN_ID_MAX];
    err_t e = {0};
    assert_int_equal(ident_conn_new(g_keys, time(NULL), id, &e), 0);
    testhttp_resp r;
    get_token(id, g_auth_tok, &r);
    assert_error(&r, 409, "not_connected");
    testhttp_resp_free(&r);
    /* A failed one (the user denied). */
    char failed[IDENT_CONN_ID_MAX];
    long applied = metric("oauthq_tokenview_records_applied_total");
    produce_cb(failed, "sim", "");
    await_status(failed, "failed");
    /* The token view applied the record of the same transaction (a row
     * with status failed, not merely an absent one). */
    for (int i = 0; i < 100 && metric("oauthq_tokenview_records_applied_total") <= applied; i++)
        usleep(100000);
    assert_true(metric("oauthq_tokenview_records_applied_total") > applied);
    get_token(failed, g_auth_tok, &r);
    assert_error(&r, 409, "not_connected");
    testhttp_resp_free(&r);
}

static void produce_conn(const char *key, const char *value)
{
    assert_int_equal(rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_conn),
                                       RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE((void *)value, value ? strlen(value) : 0),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    assert_int_equal(rd_kafka_flush(g_prod, 30000), 0);
}

static void test_view_skips_foreign_records_and_tombstones(void **state)
{
    (void)state;
    /* A provider_state.v1 record (a provider no connection uses) and
     * garbage in the changelog: skipped, the view keeps flowing. */
    produce_conn("_provider.nosuch",
                 "{\"schema\":\"oauthq.provider_state.v1\",\"provider\":\"nosuch\"}");
    produce_conn("garbage", "not json");
    char code[128], id[IDENT_CONN_ID_MAX];
    new_code(0, NULL, code, sizeof code);
    produce_cb(id, "sim", code);
    await_status(id, "connected");
    testhttp_resp r;
    get_token_settled(id, &r);
    assert_int_equal(r.status, 200);
    save_token_doc(r.body);
    cJSON *o = cJSON_Parse(r.body);
    if (g_ntokens < MAX_TOKENS)
        g_tokens[g_ntokens++] = strdup(json_str(o, "access_token"));
    cJSON_Delete(o);
    testhttp_resp_free(&r);
    /* A tombstone (the connection is gone): its token is no longer served. */
    produce_conn(id, NULL);
    long status = 200;
    for (int i = 0; i < 100 && status == 200; i++) {
        get_token(id, g_auth_tok, &r);
        status = r.status;
        testhttp_resp_free(&r);
        if (status == 200)
            usleep(100000);
    }
    assert_int_equal(status, 409);
}

/* ---- refresh: the intake's side, the test plays the worker --------------------- */

/* Write connection.v1 of id as the worker would: version, status
 * (CONN_CONNECTED with the sealed access token `plain` obtained now and
 * living expires_in s, or CONN_FAILED reconnect_required without tokens). */
static void write_conn(const char *id, int64_t version, conn_status status, const char *plain,
                       int64_t expires_in)
{
    conn_t *c = calloc(1, sizeof *c);
    assert_non_null(c);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    conn_init(c, id, "simshort", now);
    c->status = status;
    c->phase = PHASE_NONE;
    c->version = version;
    c->livemode = -1;
    c->expires_in = -1;
    err_t e = {0};
    if (status == CONN_CONNECTED) {
        snprintf(c->token_type, sizeof c->token_type, "bearer");
        snprintf(c->scope, sizeof c->scope, "read_write");
        c->tokens_at_ms = now;
        c->expires_in = expires_in;
        assert_int_equal(sealed_seal(g_data_keys, id, "access_token", plain, strlen(plain),
                                     c->access_sealed, sizeof c->access_sealed, &e),
                         0);
    } else {
        c->reason = REASON_RECONNECT_REQUIRED;
    }
    char *json = conn_encode(c, &e);
    free(c);
    assert_non_null(json);
    produce_conn(id, json);
    free(json);
}

/* A genuine id the worker never saw, connected at version 100 with a
 * token expiring in 30 s (inside the 60 s skew), applied by the view. */
static void stale_conn(char id[IDENT_CONN_ID_MAX], char *token, size_t cap)
{
    err_t e = {0};
    assert_int_equal(ident_conn_new(g_keys, time(NULL), id, &e), 0);
    snprintf(token, cap, "at_old_%.20s", id + 20);
    long applied = metric("oauthq_tokenview_records_applied_total");
    write_conn(id, 100, CONN_CONNECTED, token, 30);
    for (int i = 0; i < 100 && metric("oauthq_tokenview_records_applied_total") <= applied; i++)
        usleep(100000);
    assert_true(metric("oauthq_tokenview_records_applied_total") > applied);
}

typedef struct {
    const char *id;
    long n;
    records_refresh last;
    FILE *save; /* NULL: do not save */
} refresh_scan;

static int scan_refresh(const testkafka_record *r, void *ud)
{
    refresh_scan *s = ud;
    if (!r->value || !strstr(r->value, "\"schema\":\"oauthq.refresh.v1\""))
        return 0;
    if (s->save)
        fprintf(s->save, "%s\n", r->value);
    records_refresh rr;
    err_t e = {0};
    assert_int_equal(records_refresh_decode(r->value, r->value_len, &rr, &e), 0);
    if (s->id && strcmp(rr.connection_id, s->id) == 0) {
        assert_non_null(r->key);
        assert_string_equal(r->key, s->id); /* keyed by connection: its partition */
        s->last = rr;
        s->n++;
    }
    return 0;
}

/* The refresh.v1 records of id in the callbacks topic. */
static long refresh_records(const char *id, records_refresh *last)
{
    refresh_scan s;
    memset(&s, 0, sizeof s);
    s.id = id;
    err_t e = {0};
    assert_true(testkafka_read(&g_cfg, g_t_callbacks, 1, 10000, scan_refresh, &s, &e) >= 0);
    if (last)
        *last = s.last;
    return s.n;
}

/* Wait (bounded, 10 s) until the intake produced a refresh.v1 for id. */
static void await_refresh_record(const char *id, records_refresh *last)
{
    for (int i = 0; i < 50; i++) {
        if (refresh_records(id, last) > 0)
            return;
        usleep(200000);
    }
    fail_msg("no refresh.v1 record for %s", id);
}

typedef struct {
    const char *id;
    const char *base; /* the intake to ask; NULL: the first one (g_url) */
    testhttp_resp resp;
    int rc;
    atomic_int done;
} token_call;

static void *token_call_main(void *arg)
{
    token_call *c = arg;
    char url[256];
    snprintf(url, sizeof url, "%s/v1/connections/%s/token", c->base ? c->base : g_url, c->id);
    const char *hdrs[] = {g_auth_tok, NULL};
    c->rc = testhttp_do_timeout("GET", url, hdrs, NULL, 30000, &c->resp);
    atomic_store(&c->done, 1);
    return NULL;
}

static void remember_token(const char *body)
{
    cJSON *o = cJSON_Parse(body);
    const char *at = json_str(o, "access_token");
    if (at && g_ntokens < MAX_TOKENS)
        g_tokens[g_ntokens++] = strdup(at);
    cJSON_Delete(o);
}

static void assert_token(const testhttp_resp *r, const char *want)
{
    assert_int_equal(r->status, 200);
    cJSON *o = cJSON_Parse(r->body);
    assert_non_null(o);
    assert_string_equal(json_str(o, "access_token"), want);
    cJSON_Delete(o);
}

static void test_expiring_token_is_refreshed(void **state)
{
    (void)state;
    char id[IDENT_CONN_ID_MAX], old_tok[64], new_tok[64];
    stale_conn(id, old_tok, sizeof old_tok);
    static token_call c;
    memset(&c, 0, sizeof c);
    c.id = id;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, token_call_main, &c), 0);
    records_refresh rr;
    await_refresh_record(id, &rr);
    assert_string_equal(rr.connection_id, id);
    assert_int_equal(rr.seen_version, 100);
    assert_string_equal(rr.provider, "simshort");
    assert_string_equal(rr.intake_id, "i0");
    assert_true(rr.request_id[0] != '\0');
    assert_int_equal(atomic_load(&c.done), 0); /* the call waits for the refresh */
    /* The worker's answer: a later version with a fresh token. */
    snprintf(new_tok, sizeof new_tok, "at_new_%.20s", id + 20);
    write_conn(id, 101, CONN_CONNECTED, new_tok, 3600);
    pthread_join(t, NULL);
    assert_int_equal(c.rc, 0);
    assert_token(&c.resp, new_tok);
    save_token_doc(c.resp.body);
    remember_token(c.resp.body);
    testhttp_resp_free(&c.resp);
    assert_int_equal(refresh_records(id, NULL), 1);
    if (g_ntokens < MAX_TOKENS)
        g_tokens[g_ntokens++] = strdup(old_tok);
}

#define CALLERS 50

static void test_concurrent_callers_share_one_refresh(void **state)
{
    (void)state;
    char id[IDENT_CONN_ID_MAX], old_tok[64], new_tok[64];
    stale_conn(id, old_tok, sizeof old_tok);
    long coalesced = metric("oauthq_token_refresh_requests_total{outcome=\"coalesced\"}");
    static token_call c[CALLERS];
    pthread_t t[CALLERS];
    memset(c, 0, sizeof c);
    for (int i = 0; i < CALLERS; i++) {
        c[i].id = id;
        assert_int_equal(pthread_create(&t[i], NULL, token_call_main, &c[i]), 0);
    }
    await_refresh_record(id, NULL);
    /* Let the callers arrive (each either coalesced or, if it came late,
     * served the new token directly). */
    long now_coalesced = coalesced;
    for (int i = 0; i < 30 && now_coalesced - (coalesced < 0 ? 0 : coalesced) < CALLERS - 1; i++) {
        usleep(100000);
        now_coalesced = metric("oauthq_token_refresh_requests_total{outcome=\"coalesced\"}");
    }
    snprintf(new_tok, sizeof new_tok, "at_new_%.20s", id + 20);
    write_conn(id, 101, CONN_CONNECTED, new_tok, 3600);
    for (int i = 0; i < CALLERS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].rc, 0);
        assert_token(&c[i].resp, new_tok);
        testhttp_resp_free(&c[i].resp);
    }
    assert_int_equal(refresh_records(id, NULL), 1);
    assert_int_equal(now_coalesced - (coalesced < 0 ? 0 : coalesced), CALLERS - 1);
    if (g_ntokens < MAX_TOKENS - 1) {
        g_tokens[g_ntokens++] = strdup(old_tok);
        g_tokens[g_ntokens++] = strdup(new_tok);
    }
}

/* The whole chain, no stand-in (SPEC §5b): a real connection at the
 * simulator whose token went stale; 50 concurrent token calls through the
 * intake → the worker refreshes ONCE at the provider (its per-refresh-token
 * counter) and every caller gets the same new token. */
static void test_real_refresh_end_to_end(void **state)
{
    (void)state;
    char code[128], id[IDENT_CONN_ID_MAX];
    new_code(1, NULL, code, sizeof code);
    produce_cb(id, "simshort", code);
    await_status(id, "connected");
    testhttp_resp r;
    get_token_settled(id, &r);
    assert_int_equal(r.status, 200);
    cJSON *o = cJSON_Parse(r.body);
    char first[256];
    snprintf(first, sizeof first, "%s", json_str(o, "access_token"));
    cJSON_Delete(o);
    testhttp_resp_free(&r);
    usleep(2300 * 1000); /* now within the skew */
    static token_call c[CALLERS];
    pthread_t t[CALLERS];
    memset(c, 0, sizeof c);
    for (int i = 0; i < CALLERS; i++) {
        c[i].id = id;
        assert_int_equal(pthread_create(&t[i], NULL, token_call_main, &c[i]), 0);
    }
    char fresh[256] = "";
    for (int i = 0; i < CALLERS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].rc, 0);
        if (c[i].resp.status != 200)
            fail_msg("caller %d: %ld %s", i, c[i].resp.status, c[i].resp.body);
        cJSON *j = cJSON_Parse(c[i].resp.body);
        const char *at = json_str(j, "access_token");
        assert_non_null(at);
        assert_string_not_equal(at, first);
        if (!fresh[0])
            snprintf(fresh, sizeof fresh, "%s", at);
        assert_string_equal(at, fresh); /* all 50 share the one refresh */
        cJSON_Delete(j);
        testhttp_resp_free(&c[i].resp);
    }
    cJSON *st = testfix_sim_stats(g_sims[1].base);
    const cJSON *rt = cJSON_GetObjectItem(st, "refresh_tokens");
    int tokens = 0, requests = 0;
    for (const cJSON *it = rt ? rt->child : NULL; it; it = it->next) {
        tokens++;
        requests += (int)cJSON_GetObjectItem(it, "requests")->valuedouble;
    }
    assert_int_equal(tokens, 1);
    assert_int_equal(requests, 1);
    cJSON_Delete(st);
    if (g_ntokens < MAX_TOKENS - 1) {
        g_tokens[g_ntokens++] = strdup(first);
        g_tokens[g_ntokens++] = strdup(fresh);
    }
}

/* refresh_tokens of sim i's stats: how many tokens were presented, the most
 * requests any one got, and the sum. */
static void sim_refresh_counts(int i, int *tokens, int *max, int *sum)
{
    char url[128];
    snprintf(url, sizeof url, "%s/_sim/stats", g_sims[i].base);
    testhttp_resp r;
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    cJSON *st = cJSON_Parse(r.body);
    testhttp_resp_free(&r);
    assert_non_null(st);
    *tokens = *max = *sum = 0;
    const cJSON *rt = cJSON_GetObjectItem(st, "refresh_tokens");
    for (const cJSON *it = rt ? rt->child : NULL; it; it = it->next) {
        int n = (int)cJSON_GetObjectItem(it, "requests")->valuedouble;
        (*tokens)++;
        *sum += n;
        if (n > *max)
            *max = n;
    }
    cJSON_Delete(st);
}

/* A second intake on the same topics (its own port, data directory and
 * instance id "i1"); its base URL goes to url. The first intake's
 * environment is put back afterwards. */
static pid_t start_second_intake(char *url, size_t cap)
{
    char data[300], bin[TESTFIX_PATH_MAX], saved[4][300];
    const char *names[4] = {"OAUTHQ_LISTEN", "OAUTHQ_PUBLIC_URL", "OAUTHQ_DATA_DIR",
                            "OAUTHQ_INSTANCE_ID"};
    for (int i = 0; i < 4; i++)
        snprintf(saved[i], sizeof saved[i], "%s", getenv(names[i]) ? getenv(names[i]) : "");
    testfix_addr a;
    assert_int_equal(testfix_addr_new(&a), 0);
    snprintf(url, cap, "%s", a.url);
    snprintf(data, sizeof data, "%s/intake1", g_dir);
    setenv("OAUTHQ_LISTEN", a.listen, 1);
    setenv("OAUTHQ_PUBLIC_URL", url, 1);
    setenv("OAUTHQ_DATA_DIR", data, 1);
    setenv("OAUTHQ_INSTANCE_ID", "i1", 1);
    assert_int_equal(testfix_bin(bin, sizeof bin, "oauthq-intake"), 0);
    char *argv[] = {bin, NULL};
    pid_t pid = testfix_spawn(g_dir, "intake1.log", argv);
    for (int i = 0; i < 4; i++)
        setenv(names[i], saved[i], 1);
    assert_true(pid > 0);
    g_intake1 = pid; /* stopped by teardown should the test fail */
    char health[160];
    snprintf(health, sizeof health, "%s/healthz", url);
    assert_int_equal(testproc_wait_http(health, 15000), 0);
    return pid;
}

typedef struct {
    const char *id;
    int from[2]; /* refresh.v1 records of id produced by intake i0, i1 */
} intake_scan;

static int scan_intakes(const testkafka_record *r, void *ud)
{
    intake_scan *s = ud;
    if (!r->key || strcmp(r->key, s->id) != 0 || !r->value ||
        !strstr(r->value, "\"schema\":\"oauthq.refresh.v1\""))
        return 0;
    records_refresh rr;
    err_t e = {0};
    assert_int_equal(records_refresh_decode(r->value, r->value_len, &rr, &e), 0);
    if (strcmp(rr.intake_id, "i0") == 0)
        s->from[0]++;
    else if (strcmp(rr.intake_id, "i1") == 0)
        s->from[1]++;
    return 0;
}

/* The same through two intakes (SPEC §5b): a real connection whose token
 * went stale, 50 concurrent token calls split between two intake
 * processes on the same topics. Each intake asks the worker (a refresh.v1
 * record from each); the worker refreshes ONCE at the provider (the
 * simulator's per-refresh-token counter: one token, one request) and all 50
 * callers, on either intake, get the same new token. */
static void test_real_refresh_across_two_intakes(void **state)
{
    (void)state;
    char url1[96];
    g_intake1 = start_second_intake(url1, sizeof url1);
    /* Its token view caught up (503 unavailable before): a genuine id it
     * has no row for is 409 not_connected. */
    char probe[IDENT_CONN_ID_MAX];
    err_t e = {0};
    assert_int_equal(ident_conn_new(g_keys, time(NULL), probe, &e), 0);
    long pst = 0;
    for (int i = 0; i < 150 && pst != 409; i++) {
        char url[256];
        snprintf(url, sizeof url, "%s/v1/connections/%s/token", url1, probe);
        const char *hdrs[] = {g_auth_tok, NULL};
        testhttp_resp r;
        assert_int_equal(testhttp_do("GET", url, hdrs, NULL, &r), 0);
        pst = r.status;
        testhttp_resp_free(&r);
        if (pst != 409)
            usleep(100000);
    }
    assert_int_equal(pst, 409);

    int t0, m0, s0;
    sim_refresh_counts(1, &t0, &m0, &s0);
    char code[128], id[IDENT_CONN_ID_MAX];
    new_code(1, NULL, code, sizeof code);
    produce_cb(id, "simshort", code);
    await_status(id, "connected");
    testhttp_resp r;
    get_token_settled(id, &r);
    assert_int_equal(r.status, 200);
    cJSON *o = cJSON_Parse(r.body);
    char first[256];
    snprintf(first, sizeof first, "%s", json_str(o, "access_token"));
    cJSON_Delete(o);
    testhttp_resp_free(&r);
    usleep(2300 * 1000); /* now within the skew */
    static token_call c[CALLERS];
    pthread_t t[CALLERS];
    memset(c, 0, sizeof c);
    for (int i = 0; i < CALLERS; i++) {
        c[i].id = id;
        c[i].base = i % 2 ? url1 : NULL; /* interleaved: 25 callers on each intake */
        assert_int_equal(pthread_create(&t[i], NULL, token_call_main, &c[i]), 0);
    }
    char fresh[256] = "";
    for (int i = 0; i < CALLERS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].rc, 0);
        if (c[i].resp.status != 200)
            fail_msg("caller %d (intake i%d): %ld %s", i, i % 2, c[i].resp.status, c[i].resp.body);
        cJSON *j = cJSON_Parse(c[i].resp.body);
        const char *at = json_str(j, "access_token");
        assert_non_null(at);
        assert_string_not_equal(at, first);
        if (!fresh[0])
            snprintf(fresh, sizeof fresh, "%s", at);
        assert_string_equal(at, fresh); /* all 50, on both intakes, share the one refresh */
        cJSON_Delete(j);
        testhttp_resp_free(&c[i].resp);
    }
    usleep(1000 * 1000); /* let any stray second refresh show */
    int t1, m1, s1;
    sim_refresh_counts(1, &t1, &m1, &s1);
    fprintf(stderr, "two intakes: %d refresh tokens sent (%d requests) for 50 callers\n", t1 - t0,
            s1 - s0);
    assert_int_equal(t1 - t0, 1); /* the connection's refresh token, and no other */
    assert_int_equal(s1 - s0, 1); /* sent once */
    /* Both intakes asked: the worker coalesced the two into the one refresh. */
    intake_scan sc = {id, {0, 0}};
    assert_true(testkafka_read(&g_cfg, g_t_callbacks, 1, 10000, scan_intakes, &sc, &e) >= 0);
    fprintf(stderr, "two intakes: refresh.v1 records from i0 %d, from i1 %d\n", sc.from[0],
            sc.from[1]);
    assert_true(sc.from[0] >= 1);
    assert_true(sc.from[1] >= 1);
    testproc_stop(g_intake1, 15000);
    g_intake1 = -1;
    if (g_ntokens < MAX_TOKENS - 1) {
        g_tokens[g_ntokens++] = strdup(first);
        g_tokens[g_ntokens++] = strdup(fresh);
    }
}

static void test_no_refresh_in_time_is_503_refresh_pending(void **state)
{
    (void)state;
    char id[IDENT_CONN_ID_MAX], old_tok[64];
    stale_conn(id, old_tok, sizeof old_tok);
    testhttp_resp r;
    get_token(id, g_auth_tok, &r);
    assert_error(&r, 503, "refresh_pending");
    assert_true(r.retry_after[0] != '\0');
    assert_true(r.elapsed_ms >= atol(REFRESH_WAIT_MS) - 200);
    assert_null(strstr(r.body, old_tok));
    testhttp_resp_free(&r);
    assert_int_equal(refresh_records(id, NULL), 1);
}

static void test_failed_refresh_is_409_reconnect_required(void **state)
{
    (void)state;
    char id[IDENT_CONN_ID_MAX], old_tok[64];
    stale_conn(id, old_tok, sizeof old_tok);
    static token_call c;
    memset(&c, 0, sizeof c);
    c.id = id;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, token_call_main, &c), 0);
    await_refresh_record(id, NULL);
    write_conn(id, 101, CONN_FAILED, NULL, 0);
    pthread_join(t, NULL);
    assert_int_equal(c.rc, 0);
    assert_error(&c.resp, 409, "reconnect_required");
    testhttp_resp_free(&c.resp);
    /* The next call does not ask again: the connection is not connected. */
    testhttp_resp r;
    get_token(id, g_auth_tok, &r);
    assert_error(&r, 409, "not_connected");
    testhttp_resp_free(&r);
    assert_int_equal(refresh_records(id, NULL), 1);
}

static void test_save_refresh_records(void **state)
{
    (void)state;
    assert_int_equal(testfix_test_logs(), 0);
    FILE *out = fopen("var/test-logs/refresh-records.jsonl", "a");
    assert_non_null(out);
    refresh_scan s;
    memset(&s, 0, sizeof s);
    s.save = out;
    err_t e = {0};
    assert_true(testkafka_read(&g_cfg, g_t_callbacks, 1, 10000, scan_refresh, &s, &e) >= 0);
    fclose(out);
}

static int save_conn(const testkafka_record *r, void *ud)
{
    FILE *out = ud;
    if (r->value && strstr(r->value, "\"schema\":\"oauthq.connection.v1\""))
        fprintf(out, "%s\n", r->value);
    return 0;
}

static void test_save_connection_records(void **state)
{
    (void)state;
    assert_int_equal(testfix_test_logs(), 0);
    /* Its own file: test_worker appends to connection-records.jsonl at the
     * same time and stdio buffers would interleave mid-line. */
    FILE *out = fopen("var/test-logs/connection-records-tokens.jsonl", "a");
    assert_non_null(out);
    err_t e = {0};
    long n = testkafka_read(&g_cfg, g_t_conn, 4, 30000, save_conn, out, &e);
    fclose(out);
    assert_true(n >= 4);
}

/* Last: no token served reaches the intake's or the worker's log (G5). */
static void test_logs_have_no_tokens(void **state)
{
    (void)state;
    assert_true(g_ntokens > 0);
    const char *logs[] = {"intake", "worker", "intake1"};
    for (int l = 0; l < 3; l++) {
        char path[320];
        snprintf(path, sizeof path, "%s/%s.log", g_dir, logs[l]);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        static char buf[1 << 22];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        assert_true(n > 0);
        for (int i = 0; i < g_ntokens; i++)
            assert_null(strstr(buf, g_tokens[i]));
        assert_null(strstr(buf, "sk_test_"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connected_gives_token_refused_without_scope),
        cmocka_unit_test(test_not_connected_is_409),
        cmocka_unit_test(test_view_skips_foreign_records_and_tombstones),
        cmocka_unit_test(test_expiring_token_is_refreshed),
        cmocka_unit_test(test_concurrent_callers_share_one_refresh),
        cmocka_unit_test(test_real_refresh_end_to_end),
        cmocka_unit_test(test_real_refresh_across_two_intakes),
        cmocka_unit_test(test_no_refresh_in_time_is_503_refresh_pending),
        cmocka_unit_test(test_failed_refresh_is_409_reconnect_required),
        cmocka_unit_test(test_save_refresh_records),
        cmocka_unit_test(test_save_connection_records),
        cmocka_unit_test(test_logs_have_no_tokens),
    };
    if (getenv("OAUTHQ_TEST_FILTER"))
        cmocka_set_test_filter(getenv("OAUTHQ_TEST_FILTER"));
    if (getenv("OAUTHQ_TEST_SKIP"))
        cmocka_set_skip_filter(getenv("OAUTHQ_TEST_SKIP"));
    return cmocka_run_group_tests_name("tokens", tests, setup, teardown);
}
