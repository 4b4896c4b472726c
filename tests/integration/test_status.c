/*
 * Integration: the intake's read model and status API (SPEC §4, G4)
 * against the real broker. Status records are produced directly (as the
 * worker's transactions would) for ids minted with the test's state key.
 *  - latest version per id; out-of-order and duplicated records never move
 *    a version backwards;
 *  - ETag / If-None-Match → 304; forged id → 404; genuine id without a
 *    record → pending/awaiting_callback (version 0), or expired (version 1)
 *    past its state TTL, and then only when no callback for it waits
 *    unprocessed: an acknowledged callback behind a lagging worker keeps
 *    the flow pending until the worker's status lands;
 *  - ?wait long-poll returns on a change (woken by the read model, not at
 *    its deadline) and after its wait when nothing changes;
 *  - a restart resumes from the stored offsets (records read after the
 *    restart counted from /metrics); a deleted database is rebuilt;
 *  - a store that refuses a batch ends the intake (logged, non-zero exit)
 *    without storing offsets past it: after a restart the record is served.
 * Served documents are appended to var/test-logs/status-api-docs.jsonl for
 * the schema check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
#include <sqlite3.h>

#include "common/config.h"
#include "common/ident.h"
#include "common/kafka.h"
#include "common/keyring.h"
#include "common/log.h"
#include "tests/support/testfix.h"
#include "tests/support/testhttp.h"
#include "tests/support/testproc.h"

#define NIDS 200

static char g_dir[256], g_url[96], g_topic[256], g_db[600];
static char g_auth_ro[256], g_auth_wo[256]; /* Authorization headers */
static pid_t g_intake = -1;
static config_t g_cfg;
static keyring_t *g_keys;
static rd_kafka_t *g_prod;
static char g_ids[NIDS][IDENT_CONN_ID_MAX];

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static pid_t start_intake(void)
{
    char bin[TESTFIX_PATH_MAX], url[128];
    if (testfix_bin(bin, sizeof bin, "oauthq-intake") < 0)
        return -1;
    char *argv[] = {bin, NULL};
    pid_t pid = testfix_spawn(g_dir, "intake.log", argv);
    snprintf(url, sizeof url, "%s/healthz", g_url);
    if (pid < 0 || testproc_wait_http(url, 15000) != 0)
        return -1;
    /* Ready = Kafka reachable and the read model caught up. */
    snprintf(url, sizeof url, "%s/readyz", g_url);
    for (int i = 0; i < 150; i++) {
        testhttp_resp r;
        if (testhttp_do("GET", url, NULL, NULL, &r) == 0 && r.status == 200) {
            testhttp_resp_free(&r);
            return pid;
        }
        testhttp_resp_free(&r);
        usleep(100000);
    }
    return -1;
}

static int setup(void **state)
{
    (void)state;
    if (testfix_tmpdir(g_dir, sizeof g_dir, "status") < 0)
        return -1;
    char path[TESTFIX_PATH_MAX], secret[TESTFIX_PATH_MAX];
    testfix_topic_prefix("status", NULL, 0);
    setenv("OAUTHQ_TOPIC_PARTITIONS", "3", 1);
    setenv("OAUTHQ_LOG_FORMAT", "text", 1);
    setenv("OAUTHQ_STATE_TTL_S", "600", 1);
    setenv("OAUTHQ_DATA_DIR", g_dir, 1);
    err_t e = {0};
    if (config_load(&g_cfg, NULL, &e) < 0 || kafka_topics_ensure(&g_cfg, &e) < 0)
        return -1;
    log_init("itest", "warn", "text", &e);
    config_topic(&g_cfg, "status", g_topic, sizeof g_topic, &e);
    snprintf(g_db, sizeof g_db, "%s/intake-readmodel-%s.db", g_dir, g_topic);
    if (testfix_state_keys(g_dir, path, sizeof path) < 0)
        return -1;
    g_keys = keyring_load(path, &e);
    /* A provider nobody answers for: these tests never exchange a code. */
    const testfix_provider prov = {
        .name = "sim", .base = "http://127.0.0.1:9", .client_id = "ca_s", .secret_file = secret};
    if (testfix_secret(g_dir, "secret", "sk_status_secret_value", secret, sizeof secret) < 0 ||
        testfix_providers(g_dir, &prov, 1) < 0)
        return -1;
    unsetenv("OAUTHQ_OPEN_START"); /* test_closed_by_default: the default */
    /* API keys: read-only and write-only (test_platform_view_and_list). */
    testfix_api_key keys[] = {{.name = "ro", .scopes = "connections:read"},
                              {.name = "wo", .scopes = "connections:write"}};
    if (testfix_api_keys(g_dir, keys, 2) < 0)
        return -1;
    snprintf(g_auth_ro, sizeof g_auth_ro, "%s", keys[0].auth);
    snprintf(g_auth_wo, sizeof g_auth_wo, "%s", keys[1].auth);
    testfix_addr a;
    if (testfix_addr_new(&a) < 0)
        return -1;
    snprintf(g_url, sizeof g_url, "%s", a.url);
    setenv("OAUTHQ_LISTEN", a.listen, 1);
    setenv("OAUTHQ_PUBLIC_URL", g_url, 1);
    char errstr[256];
    g_prod = rd_kafka_new(RD_KAFKA_PRODUCER, kafka_conf_producer(&g_cfg, NULL, &e), errstr,
                          sizeof errstr);
    for (int i = 0; i < NIDS; i++)
        ident_conn_new(g_keys, time(NULL), g_ids[i], &e);
    g_intake = start_intake();
    return g_intake > 0 && g_prod && g_keys ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (g_intake > 0)
        testproc_stop(g_intake, 15000);
    if (g_prod)
        rd_kafka_destroy(g_prod);
    keyring_free(g_keys);
    return testfix_tmpdir_remove(g_dir, "itest_status");
}

/* A status record as the worker writes it; meta (end_user, organization,
 * tags members, without braces) or NULL. */
static void produce_status_meta(const char *id, int version, const char *status, const char *meta)
{
    char doc[2048];
    int n = snprintf(
        doc, sizeof doc,
        "{\"schema\":\"oauthq.status.v1\",\"id\":\"%s\",\"provider\":\"sim\",\"status\":\"%s\","
        "\"phase\":%s,\"reason\":null,\"message\":\"Test message.\",\"account\":null,"
        "\"attempts\":%d,\"created_at\":\"2026-11-27T10:00:00.000Z\",\"updated_at\":"
        "\"2026-11-27T10:00:00.000Z\",\"version\":%d%s%s}",
        id, status, strcmp(status, "pending") == 0 ? "\"exchanging\"" : "null", version, version,
        meta ? "," : "", meta ? meta : "");
    assert_int_equal(rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_topic),
                                       RD_KAFKA_V_KEY(id, strlen(id)),
                                       RD_KAFKA_V_VALUE(doc, (size_t)n),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
}

static void produce_status(const char *id, int version, const char *status)
{
    produce_status_meta(id, version, status, NULL);
}

static void flush(void)
{
    assert_int_equal(rd_kafka_flush(g_prod, 10000), 0);
}

/* GET the status; returns HTTP status, fills version (or -1) and doc. */
static long get_doc(const char *id, const char *inm, int wait_s, long *version, double *ms)
{
    char url[256], hdr[64];
    snprintf(url, sizeof url, "%s/v1/connections/%s%s", g_url, id, wait_s ? "?wait=" : "");
    if (wait_s)
        snprintf(url + strlen(url), sizeof url - strlen(url), "%d", wait_s);
    snprintf(hdr, sizeof hdr, "If-None-Match: %s", inm ? inm : "");
    const char *hdrs[] = {hdr, NULL};
    testhttp_resp r;
    double t0 = now_ms();
    assert_int_equal(testhttp_do_timeout("GET", url, inm ? hdrs : NULL, NULL, 40000, &r), 0);
    if (ms)
        *ms = now_ms() - t0;
    long st = r.status;
    *version = -1;
    if (st == 200) {
        cJSON *o = cJSON_Parse(r.body);
        *version = (long)cJSON_GetObjectItem(o, "version")->valuedouble;
        const char *etag = strstr(r.headers, "ETag: \"");
        assert_non_null(etag);
        assert_int_equal(atol(etag + 7), *version);
        FILE *f = fopen("var/test-logs/status-api-docs.jsonl", "a");
        if (f) {
            fprintf(f, "%s\n", r.body);
            fclose(f);
        }
        cJSON_Delete(o);
    }
    testhttp_resp_free(&r);
    return st;
}

/* Wait until id shows version v (bounded). */
static void await_version(const char *id, long want)
{
    long v = -1;
    for (int i = 0; i < 400 && v != want; i++) {
        get_doc(id, NULL, 0, &v, NULL);
        if (v != want)
            usleep(50000);
    }
    assert_int_equal(v, want);
}

static void test_latest_version_wins(void **state)
{
    (void)state;
    /* Every id: versions 1..3 in order, then 2 and 1 again, then 3 again. */
    for (int i = 0; i < NIDS; i++) {
        produce_status(g_ids[i], 1, "pending");
        produce_status(g_ids[i], 2, "pending");
        produce_status(g_ids[i], 3, "connected");
    }
    for (int i = 0; i < NIDS; i++) {
        produce_status(g_ids[i], 2, "pending");
        produce_status(g_ids[i], 1, "pending");
        produce_status(g_ids[i], 3, "connected");
    }
    flush();
    /* Each partition is consumed on its own; wait for every id (bounded). */
    for (int i = 0; i < NIDS; i++)
        await_version(g_ids[i], 3);
    for (int i = 0; i < NIDS; i++) {
        long v;
        assert_int_equal(get_doc(g_ids[i], NULL, 0, &v, NULL), 200);
        assert_int_equal(v, 3);
    }
}

static void test_etag_404_pending_expired(void **state)
{
    (void)state;
    long v;
    assert_int_equal(get_doc(g_ids[0], "\"3\"", 0, &v, NULL), 304);
    assert_int_equal(get_doc(g_ids[0], "\"2\"", 0, &v, NULL), 200);
    char forged[IDENT_CONN_ID_MAX];
    snprintf(forged, sizeof forged, "%s", g_ids[0]);
    forged[20] = forged[20] == 'A' ? 'B' : 'A';
    assert_int_equal(get_doc(forged, NULL, 0, &v, NULL), 404);
    assert_int_equal(get_doc("nonsense", NULL, 0, &v, NULL), 404);
    /* Genuine, no record yet: pending / awaiting_callback, version 0. */
    char fresh[IDENT_CONN_ID_MAX], old[IDENT_CONN_ID_MAX];
    err_t e = {0};
    ident_conn_new(g_keys, time(NULL), fresh, &e);
    ident_conn_new(g_keys, time(NULL) - 700, old, &e); /* past the 600 s state TTL */
    char url[256];
    testhttp_resp r;
    snprintf(url, sizeof url, "%s/v1/connections/%s", g_url, fresh);
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"status\":\"pending\""));
    assert_non_null(strstr(r.body, "\"phase\":\"awaiting_callback\""));
    assert_non_null(strstr(r.body, "\"version\":0"));
    testhttp_resp_free(&r);
    /* Past its state TTL with nothing on its callbacks partition: expired
     * (once the read model has settled past the expiry: bounded wait). */
    int expired = 0;
    snprintf(url, sizeof url, "%s/v1/connections/%s", g_url, old);
    for (int i = 0; i < 100 && !expired; i++) {
        assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
        expired = strstr(r.body, "\"status\":\"expired\"") != NULL;
        testhttp_resp_free(&r);
        if (!expired)
            usleep(100000);
    }
    assert_true(expired);
    snprintf(url, sizeof url, "%s/v1/connections/%s?wait=99", g_url, fresh);
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 400);
    testhttp_resp_free(&r);
}

/* GET id; fills the status field (or "") and returns the version. */
static long get_status_of(const char *id, const char *inm, int wait_s, char *status, size_t cap,
                          long *http, double *ms)
{
    char url[256], hdr[64];
    snprintf(url, sizeof url, "%s/v1/connections/%s", g_url, id);
    if (wait_s)
        snprintf(url + strlen(url), sizeof url - strlen(url), "?wait=%d", wait_s);
    snprintf(hdr, sizeof hdr, "If-None-Match: %s", inm ? inm : "");
    const char *hdrs[] = {hdr, NULL};
    testhttp_resp r;
    double t0 = now_ms();
    assert_int_equal(testhttp_do_timeout("GET", url, inm ? hdrs : NULL, NULL, 40000, &r), 0);
    if (ms)
        *ms = now_ms() - t0;
    *http = r.status;
    status[0] = '\0';
    long v = -1;
    if (r.status == 200) {
        cJSON *o = cJSON_Parse(r.body);
        snprintf(status, cap, "%s", cJSON_GetObjectItem(o, "status")->valuestring);
        v = (long)cJSON_GetObjectItem(o, "version")->valuedouble;
        const char *etag = strstr(r.headers, "ETag: \"");
        assert_non_null(etag);
        assert_int_equal(atol(etag + 7), v);
        cJSON_Delete(o);
    }
    testhttp_resp_free(&r);
    return v;
}

/* Two ids created at `created` on different callbacks partitions. */
static void two_ids(int64_t created, char *a, char *b, int32_t *pa, int32_t *pb)
{
    err_t e = {0};
    for (int i = 0; i < 100; i++) {
        ident_conn_new(g_keys, created, a, &e);
        ident_conn_new(g_keys, created, b, &e);
        *pa = kafka_partition_for(a, strlen(a), g_cfg.topic_partitions);
        *pb = kafka_partition_for(b, strlen(b), g_cfg.topic_partitions);
        if (*pa != *pb)
            return;
    }
    fail_msg("no two ids on different partitions");
}

/* SPEC §4/§5: the synthetic `expired` (version 1) is distinct from the
 * synthetic `pending` (version 0), so a long-poll holding "0" learns of it
 * (both were "0": it waited and answered 304 forever); and `expired` is
 * final: a flow whose callback was acknowledged but not yet processed (a
 * worker lagging past the state TTL) stays pending and then shows what the
 * worker decided, never expired first (it showed expired, then connected). */
static void test_expired_is_distinct_and_final(void **state)
{
    (void)state;
    char quiet[IDENT_CONN_ID_MAX], late[IDENT_CONN_ID_MAX], cbt[256], st[32];
    int32_t pq, pl;
    /* Their state expires in 2 s (TTL 600 s); final no earlier than the
     * HTTP deadline (5 s produce timeout + 2 s) and 5 s of clock allowance
     * later. */
    int64_t created = (int64_t)time(NULL) - 598;
    int64_t final_at = (created + 600 + 7 + 5) * 1000;
    two_ids(created, quiet, late, &pq, &pl);
    err_t e = {0};
    config_topic(&g_cfg, "callbacks", cbt, sizeof cbt, &e);
    /* An acknowledged callback for `late` (before its state expired),
     * which no worker processes until later. */
    const char *cb = "{\"schema\":\"oauthq.callback.v1\",\"note\":\"itest\"}";
    assert_int_equal(rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(cbt), RD_KAFKA_V_PARTITION(pl),
                                       RD_KAFKA_V_KEY(late, strlen(late)),
                                       RD_KAFKA_V_VALUE((void *)cb, strlen(cb)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    flush();
    /* late: pending all along, also well past the moment it would be final. */
    long http = 0, v = -1;
    struct timespec now;
    for (int i = 0; i < 400; i++) {
        v = get_status_of(late, NULL, 0, st, sizeof st, &http, NULL);
        assert_int_equal(http, 200);
        assert_string_equal(st, "pending");
        assert_int_equal(v, 0);
        clock_gettime(CLOCK_REALTIME, &now);
        if ((int64_t)now.tv_sec * 1000 > final_at + 3000)
            break;
        usleep(100000);
    }
    /* quiet: expired, version 1, and a long-poll from "0" answers it at once. */
    for (int i = 0; i < 100 && v != 1; i++) {
        v = get_status_of(quiet, NULL, 0, st, sizeof st, &http, NULL);
        if (v != 1)
            usleep(100000);
    }
    assert_int_equal(v, 1);
    assert_string_equal(st, "expired");
    double ms = 0;
    v = get_status_of(quiet, "\"0\"", 10, st, sizeof st, &http, &ms);
    assert_int_equal(http, 200);
    assert_int_equal(v, 1);
    assert_true(ms < 5000);
    assert_int_equal(get_status_of(quiet, "\"1\"", 0, st, sizeof st, &http, NULL), -1);
    assert_int_equal(http, 304);
    /* The worker catches up: its status record and, in the same
     * transaction, its offset commit; the flow shows what it decided. */
    produce_status(late, 1, "connected");
    flush();
    char group[128], errstr[256];
    snprintf(group, sizeof group, "%sworker", g_cfg.topic_prefix);
    rd_kafka_t *wk = rd_kafka_new(RD_KAFKA_CONSUMER, kafka_conf_consumer(&g_cfg, group, &e), errstr,
                                  sizeof errstr);
    assert_non_null(wk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, cbt, pl)->offset = 1;
    int64_t lo = 0, hi = 0;
    assert_int_equal(kafka_watermarks(wk, cbt, pl, &lo, &hi, 10000, &e), 0);
    l->elems[0].offset = hi;
    assert_int_equal(rd_kafka_commit(wk, l, 0), 0);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(wk);
    await_version(late, 1);
    v = get_status_of(late, NULL, 0, st, sizeof st, &http, NULL);
    assert_string_equal(st, "connected");
}

typedef struct {
    const char *id;
    long status, version;
    double ms, done_at;
} poll_arg;

static void *long_poll(void *a)
{
    poll_arg *p = a;
    p->status = get_doc(p->id, "\"3\"", 10, &p->version, &p->ms);
    p->done_at = now_ms();
    return NULL;
}

static void test_long_poll_wakes_on_change_and_times_out(void **state)
{
    (void)state;
    poll_arg p = {g_ids[1], 0, 0, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, long_poll, &p);
    usleep(500000); /* the poll is waiting */
    double t0 = now_ms();
    produce_status(g_ids[1], 4, "connected");
    flush();
    double acked = now_ms();
    pthread_join(th, NULL);
    assert_int_equal(p.status, 200);
    assert_int_equal(p.version, 4);
    double wake = p.done_at - acked;
    fprintf(stderr,
            "long-poll answered %.0f ms after the record was acknowledged (%.0f ms after "
            "produce)\n",
            wake, p.done_at - t0);
    /* Woken by the change, far before its 10 s wait. */
    assert_true(p.ms < 5000);
    /* Nothing changes: 304 after the wait. */
    long v;
    double ms;
    assert_int_equal(get_doc(g_ids[2], "\"3\"", 1, &v, &ms), 304);
    assert_true(ms >= 900);
}

static long metric(const char *name)
{
    char url[128];
    snprintf(url, sizeof url, "%s/metrics", g_url);
    testhttp_resp r;
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    /* The sample line, not the # HELP / # TYPE lines that name it too. */
    char needle[160];
    snprintf(needle, sizeof needle, "\n%s ", name);
    const char *p = strstr(r.body, needle);
    long v = p ? atol(p + strlen(needle)) : -1;
    testhttp_resp_free(&r);
    return v;
}

/* Default: no OAUTHQ_OPEN_START. A start without a connect session is
 * refused (403); an unknown key is refused (401), while the public status
 * stays open. */
static void test_closed_by_default(void **state)
{
    (void)state;
    char url[256];
    testhttp_resp r;
    const char *json[] = {"Accept: application/json", NULL};
    snprintf(url, sizeof url, "%s/oauth/start?provider=sim", g_url);
    assert_int_equal(testhttp_do("GET", url, json, NULL, &r), 0);
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(r.body, "open_start_disabled"));
    assert_string_equal(r.location, "");
    testhttp_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/connections", g_url);
    const char *auth[] = {"Accept: application/json",
                          "Authorization: Bearer oq_any_0123456789abcdef0123", NULL};
    assert_int_equal(testhttp_do("POST", url, auth, "{\"provider\":\"sim\"}", &r), 0);
    assert_int_equal(r.status, 401);
    assert_int_equal(strncmp(r.www_authenticate, "Bearer", 6), 0);
    testhttp_resp_free(&r);
}

/* GET url with optional headers; the parsed JSON body (or NULL) and status. */
static cJSON *get_json(const char *url, const char *h1, long *status)
{
    const char *hdrs[] = {"Accept: application/json", h1, NULL};
    testhttp_resp r;
    assert_int_equal(testhttp_do("GET", url, hdrs, NULL, &r), 0);
    *status = r.status;
    cJSON *o = cJSON_Parse(r.body);
    /* Platform views (single, or a list's items) for the OpenAPI check in
     * tests/integration/schemas.sh. */
    FILE *f = r.status == 200 && h1 ? fopen("var/test-logs/platform-view-docs.jsonl", "a") : NULL;
    if (f) {
        const cJSON *data = cJSON_GetObjectItem(o, "data");
        if (data) {
            for (const cJSON *it = data->child; it; it = it->next) {
                char *t = cJSON_PrintUnformatted(it);
                fprintf(f, "%s\n", t ? t : "");
                free(t);
            }
            FILE *l = fopen("var/test-logs/connection-list-docs.jsonl", "a");
            if (l) {
                fprintf(l, "%s\n", r.body);
                fclose(l);
            }
        } else {
            fprintf(f, "%s\n", r.body);
        }
        fclose(f);
    }
    testhttp_resp_free(&r);
    return o;
}

/* SPEC §4a: the platform view (with a connections:read key) carries
 * end_user/organization/tags, the public document never does; the list
 * filters by end user, organization, provider and status, in cursor pages. */
static void test_platform_view_and_list(void **state)
{
    (void)state;
    char alice[5][IDENT_CONN_ID_MAX], bob[2][IDENT_CONN_ID_MAX], url[512];
    err_t e = {0};
    const char *am = "\"end_user\":{\"id\":\"alice\",\"email\":null,\"display_name\":\"Alice\"},"
                     "\"organization\":%s,\"tags\":{\"plan\":\"pro\"}";
    for (int i = 0; i < 5; i++) {
        char meta[512];
        ident_conn_new(g_keys, time(NULL), alice[i], &e);
        snprintf(meta, sizeof meta, am, i < 2 ? "{\"id\":\"acme\",\"display_name\":null}" : "null");
        produce_status_meta(alice[i], 1, i == 0 ? "connected" : "pending", meta);
    }
    for (int i = 0; i < 2; i++) {
        ident_conn_new(g_keys, time(NULL), bob[i], &e);
        produce_status_meta(bob[i], 1, "connected",
                            "\"end_user\":{\"id\":\"bob\",\"email\":\"b@example.com\","
                            "\"display_name\":null},\"organization\":null,\"tags\":{}");
    }
    flush();
    for (int i = 0; i < 5; i++)
        await_version(alice[i], 1);
    await_version(bob[1], 1);

    long st;
    snprintf(url, sizeof url, "%s/v1/connections/%s", g_url, alice[0]);
    cJSON *o = get_json(url, NULL, &st); /* public: no metadata */
    assert_int_equal(st, 200);
    assert_null(cJSON_GetObjectItem(o, "end_user"));
    assert_null(cJSON_GetObjectItem(o, "tags"));
    cJSON_Delete(o);
    o = get_json(url, g_auth_ro, &st); /* platform view */
    assert_int_equal(st, 200);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "end_user"), "id")->valuestring,
                        "alice");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(o, "organization"), "id")->valuestring, "acme");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "tags"), "plan")->valuestring,
                        "pro");
    assert_string_equal(cJSON_GetObjectItem(o, "status")->valuestring, "connected");
    cJSON_Delete(o);
    o = get_json(url, g_auth_wo, &st); /* a key without connections:read */
    assert_int_equal(st, 403);
    cJSON_Delete(o);

    /* Alice's five connections in pages of two. */
    char seen[8][IDENT_CONN_ID_MAX], cursor[256] = "";
    int nseen = 0, pages = 0;
    do {
        snprintf(url, sizeof url, "%s/v1/connections?end_user_id=alice&limit=2%s%s", g_url,
                 cursor[0] ? "&cursor=" : "", cursor);
        o = get_json(url, g_auth_ro, &st);
        assert_int_equal(st, 200);
        const cJSON *data = cJSON_GetObjectItem(o, "data");
        assert_true(cJSON_GetArraySize(data) <= 2);
        for (const cJSON *it = data ? data->child : NULL; it; it = it->next) {
            assert_string_equal(
                cJSON_GetObjectItem(cJSON_GetObjectItem(it, "end_user"), "id")->valuestring,
                "alice");
            assert_true(nseen < 8);
            snprintf(seen[nseen++], sizeof seen[0], "%s",
                     cJSON_GetObjectItem(it, "id")->valuestring);
        }
        const cJSON *nc = cJSON_GetObjectItem(o, "next_cursor");
        if (cJSON_IsString(nc))
            snprintf(cursor, sizeof cursor, "%s", nc->valuestring);
        else
            cursor[0] = '\0';
        cJSON_Delete(o);
        pages++;
    } while (cursor[0] && pages < 10);
    assert_int_equal(nseen, 5);
    assert_int_equal(pages, 3);
    for (int i = 0; i < 5; i++) {
        int found = 0;
        for (int j = 0; j < nseen; j++)
            found += strcmp(seen[j], alice[i]) == 0;
        assert_int_equal(found, 1); /* each exactly once across pages */
    }
    struct {
        const char *q;
        int n;
    } filters[] = {
        {"end_user_id=alice&organization_id=acme", 2}, {"end_user_id=alice&status=connected", 1},
        {"end_user_id=bob&provider=sim", 2},           {"end_user_id=bob&provider=other", 0},
        {"organization_id=acme&status=pending", 1},
    };
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
        snprintf(url, sizeof url, "%s/v1/connections?%s", g_url, filters[i].q);
        o = get_json(url, g_auth_ro, &st);
        assert_int_equal(st, 200);
        if (cJSON_GetArraySize(cJSON_GetObjectItem(o, "data")) != filters[i].n)
            fail_msg("%s: %d items, want %d", filters[i].q,
                     cJSON_GetArraySize(cJSON_GetObjectItem(o, "data")), filters[i].n);
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "next_cursor")));
        cJSON_Delete(o);
    }
    const char *bad[] = {"limit=0", "limit=201", "cursor=%21%21", "status=bogus", "colour=red"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(url, sizeof url, "%s/v1/connections?%s", g_url, bad[i]);
        o = get_json(url, g_auth_ro, &st);
        if (st != 400)
            fail_msg("%s answered %ld, want 400", bad[i], st);
        cJSON_Delete(o);
    }
    snprintf(url, sizeof url, "%s/v1/connections", g_url);
    o = get_json(url, NULL, &st);
    assert_int_equal(st, 401);
    cJSON_Delete(o);
    o = get_json(url, g_auth_wo, &st);
    assert_int_equal(st, 403);
    cJSON_Delete(o);
    /* The platform view of a genuine id with no record yet: no metadata. */
    char fresh[IDENT_CONN_ID_MAX];
    ident_conn_new(g_keys, time(NULL), fresh, &e);
    snprintf(url, sizeof url, "%s/v1/connections/%s", g_url, fresh);
    o = get_json(url, g_auth_ro, &st);
    assert_int_equal(st, 200);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "end_user")));
    cJSON_Delete(o);
}

static void test_restart_resumes_and_rebuild(void **state)
{
    (void)state;
    assert_int_equal(testproc_stop(g_intake, 15000), 0);
    g_intake = start_intake();
    assert_true(g_intake > 0);
    /* Resumed from stored offsets: nothing old is read again. */
    assert_int_equal(metric("oauthq_readmodel_records_read_total"), 0);
    produce_status(g_ids[5], 7, "connected");
    flush();
    await_version(g_ids[5], 7);
    assert_true(metric("oauthq_readmodel_records_read_total") <= 2);
    /* Delete the database: rebuilt from the topic, latest versions. */
    assert_int_equal(testproc_stop(g_intake, 15000), 0);
    assert_int_equal(unlink(g_db), 0);
    char side[700];
    snprintf(side, sizeof side, "%s-wal", g_db);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", g_db);
    unlink(side);
    g_intake = start_intake();
    assert_true(g_intake > 0);
    long reread = metric("oauthq_readmodel_records_read_total");
    fprintf(stderr, "rebuild read %ld records\n", reread);
    assert_true(reread >= NIDS * 6);
    long v;
    get_doc(g_ids[5], NULL, 0, &v, NULL);
    assert_int_equal(v, 7);
    get_doc(g_ids[1], NULL, 0, &v, NULL);
    assert_int_equal(v, 4);
    get_doc(g_ids[NIDS - 1], NULL, 0, &v, NULL);
    assert_int_equal(v, 3);
}

/* Run sql on the read model file from the test's own connection. */
static void db_exec(const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(g_db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* 1 when file contains needle. */
static int file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return found;
}

/* The read model's SQLite refuses every write (a real failure: triggers
 * that abort): the intake must not move its offsets past the batch it
 * could not store (it once dropped the batch after 5 tries and committed
 * later offsets over it), and must end with a log line and a non-zero
 * exit. Once the store works again, a restart serves the record. */
static void test_store_failure_is_fatal_and_loses_nothing(void **state)
{
    (void)state;
    char id[IDENT_CONN_ID_MAX], log[300];
    err_t e = {0};
    ident_conn_new(g_keys, time(NULL), id, &e);
    snprintf(log, sizeof log, "%s/intake.log", g_dir);
    db_exec("CREATE TRIGGER itest_fail_insert BEFORE INSERT ON status "
            "BEGIN SELECT RAISE(ABORT, 'itest: store refuses writes'); END;"
            "CREATE TRIGGER itest_fail_update BEFORE UPDATE ON status "
            "BEGIN SELECT RAISE(ABORT, 'itest: store refuses writes'); END;");
    produce_status(id, 5, "connected");
    flush();
    int rc = testproc_wait_exit(g_intake, 30000);
    g_intake = -1;
    if (rc == -2)
        fail_msg("the intake kept running past a store failure");
    assert_true(rc > 0);
    assert_true(file_has(log, "readmodel_fatal"));
    db_exec("DROP TRIGGER itest_fail_insert; DROP TRIGGER itest_fail_update;");
    g_intake = start_intake();
    assert_true(g_intake > 0);
    await_version(id, 5);
}

int main(void)
{
    mkdir("var", 0755);
    mkdir("var/test-logs", 0755);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latest_version_wins),
        cmocka_unit_test(test_etag_404_pending_expired),
        cmocka_unit_test(test_long_poll_wakes_on_change_and_times_out),
        cmocka_unit_test(test_expired_is_distinct_and_final),
        cmocka_unit_test(test_closed_by_default),
        cmocka_unit_test(test_platform_view_and_list),
        cmocka_unit_test(test_restart_resumes_and_rebuild),
        cmocka_unit_test(test_store_failure_is_fatal_and_loses_nothing),
    };
    /* OAUTHQ_TEST_FILTER / OAUTHQ_TEST_SKIP: run or skip matching tests
     * (debugging; the TSan run skips the broker stop). */
    if (getenv("OAUTHQ_TEST_FILTER"))
        cmocka_set_test_filter(getenv("OAUTHQ_TEST_FILTER"));
    if (getenv("OAUTHQ_TEST_SKIP"))
        cmocka_set_skip_filter(getenv("OAUTHQ_TEST_SKIP"));
    return cmocka_run_group_tests_name("integration_status", tests, setup, teardown);
}
