/*
 * Integration: oauthq-worker against the real broker and the simulator.
 * Each guarantee is checked with the simulator's per-code token-request
 * counters (G1) and the committed status records (G2, G3), not log lines.
 *
 *  (a) duplicate storm: 500 connections, every callback produced 3 times,
 *      interleaved: exactly one token request per code, all connected,
 *      no grant revoked.
 *  (d) faults: 429, 500 before/after consuming, cut after consuming, hang
 *      and latency beyond the timeout, deny, invalid_client then a fixed
 *      configuration: the expected final statuses and reasons, and a second
 *      token request only after an unknown outcome.
 *  (e) a malformed record lands in the DLQ and the partition keeps flowing.
 *  (f) an answered code is never exchanged again: A rejected, an error
 *      callback, A again, then B: one token request for A (SPEC §5).
 *  (b) crash: kill -9 the worker repeatedly during 1,000 connections with
 *      the simulator at 100 ms: every connection ends final; a code with a
 *      second token request had an unknown-outcome attempt; no connected
 *      status for a revoked grant.
 *  (c) rebalance: two workers, one is killed; the survivor restores the
 *      partitions from the changelog and finishes with G1 intact.
 * Records read are appended to var/test-logs/{status,connection,dlq}-records.jsonl
 * for the JSON Schema check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>

#include "common/config.h"
#include "common/connmeta.h"
#include "common/crypto.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/records.h"
#include "common/conn.h"
#include "tests/support/testfix.h"
#include "tests/support/testhttp.h"
#include "tests/support/testkafka.h"
#include "tests/support/testproc.h"

#define MAXW 2

static char g_dir[256], g_build[TESTFIX_PATH_MAX];
static testfix_sim g_sim; /* sim, simbad, simbad2, simlate */
/* Refresh (SPEC §5b): two more simulators announcing expires_in 62 s, so a
 * token is stale (skew 60 s) two seconds after it was issued and fresh for
 * two seconds after a refresh. simr rotates refresh tokens, simnr does not
 * (provider "simnr" says refresh_rotation false). */
/* Background refresh (SPEC §5b refresh_ahead_s): a rotating simulator
 * announcing expires_in 10 s behind provider "simbg" (refresh_ahead_s 4),
 * so the worker renews a token 6 s after it was issued, unasked. */
static testfix_sim g_simr, g_simnr, g_simbg;
static char g_t_callbacks[256], g_t_status[256], g_t_conn[256], g_t_dlq[256];
static pid_t g_workers[MAXW] = {-1, -1};
static config_t g_cfg;
static rd_kafka_t *g_prod;
static long g_seq;
static int g_restarts;

/* providers.json: sim, simbad (a wrong secret, Basic), third (secret file
 * third_secret: simbad2 with another wrong one, or simlate), simr, simnr
 * and simbg (background refresh 4 s ahead). */
static int write_providers(const char *third, const char *third_secret)
{
    char secret[TESTFIX_PATH_MAX], bad[TESTFIX_PATH_MAX], other[TESTFIX_PATH_MAX];
    snprintf(secret, sizeof secret, "%s/secret", g_dir);
    snprintf(bad, sizeof bad, "%s/badsecret", g_dir);
    snprintf(other, sizeof other, "%s/%s", g_dir, third_secret);
    const char *basic = "client_secret_basic";
    const testfix_provider p[] = {
        {.name = "sim", .base = g_sim.base, .secret_file = secret, .deauthorize = 1},
        {.name = "simbad",
         .base = g_sim.base,
         .secret_file = bad,
         .token_auth = basic,
         .deauthorize = 1},
        {.name = third, .base = g_sim.base, .secret_file = other, .deauthorize = 1},
        {.name = "simr", .base = g_simr.base, .secret_file = secret},
        {.name = "simnr",
         .base = g_simnr.base,
         .secret_file = secret,
         .token_auth = basic,
         .no_refresh_rotation = 1},
        {.name = "simbg",
         .base = g_simbg.base,
         .secret_file = secret,
         .deauthorize = 1,
         .refresh_ahead_s = 4},
    };
    testfix_provider all[6];
    for (int i = 0; i < 6; i++) {
        all[i] = p[i];
        all[i].client_id = "ca_w";
    }
    return testfix_providers(g_dir, all, 6);
}

static pid_t start_worker(int idx)
{
    char data[300], inst[32], log[32], bin[TESTFIX_PATH_MAX];
    snprintf(data, sizeof data, "%s/worker%d", g_dir, idx);
    snprintf(inst, sizeof inst, "w%d", idx);
    snprintf(log, sizeof log, "worker%d.log", idx);
    if (testfix_bin(bin, sizeof bin, "oauthq-worker") < 0)
        return -1;
    setenv("OAUTHQ_DATA_DIR", data, 1);
    setenv("OAUTHQ_INSTANCE_ID", inst, 1);
    setenv("OAUTHQ_WORKER_LISTEN", "127.0.0.1:0", 1);
    char *argv[] = {bin, NULL};
    return testfix_spawn(g_dir, log, argv);
}

static void stop_worker(int idx)
{
    if (g_workers[idx] > 0)
        testproc_stop(g_workers[idx], 20000);
    g_workers[idx] = -1;
}

static int setup(void **state)
{
    (void)state;
    if (testfix_build(g_build, sizeof g_build) < 0 ||
        testfix_tmpdir(g_dir, sizeof g_dir, "worker") < 0 || testfix_test_logs() < 0)
        return -1;
    testfix_topic_prefix("worker", NULL, 0);
    setenv("OAUTHQ_TOPIC_PARTITIONS", "4", 1);
    setenv("OAUTHQ_LOG_FORMAT", "text", 1);
    setenv("OAUTHQ_EXCHANGE_TIMEOUT_MS", "1500", 1);
    setenv("OAUTHQ_EXCHANGE_CONNECT_TIMEOUT_MS", "1000", 1);
    setenv("OAUTHQ_WORKER_CONCURRENCY", "64", 1);
    setenv("OAUTHQ_WORKER_PROBE_INTERVAL_MS", "2000", 1);
    err_t e = {0};
    if (config_load(&g_cfg, NULL, &e) < 0 || kafka_topics_ensure(&g_cfg, &e) < 0) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    log_init("itest", "warn", "text", &e);
    config_topic(&g_cfg, "callbacks", g_t_callbacks, sizeof g_t_callbacks, &e);
    config_topic(&g_cfg, "status", g_t_status, sizeof g_t_status, &e);
    config_topic(&g_cfg, "connections", g_t_conn, sizeof g_t_conn, &e);
    config_topic(&g_cfg, "dlq", g_t_dlq, sizeof g_t_dlq, &e);

    char secret[TESTFIX_PATH_MAX];
    if (testfix_secret(g_dir, "secret", "sk_itest_worker_secret", secret, sizeof secret) < 0 ||
        testfix_secret(g_dir, "badsecret", "sk_wrong_secret_value", NULL, 0) < 0 ||
        testfix_secret(g_dir, "badsecret2", "sk_wrong_secret_value", NULL, 0) < 0 ||
        testfix_data_keys(g_dir, NULL, 0) < 0)
        return -1;
    static const char *const args[] = {"--latency-ms", "20", NULL};
    static const char *const rargs[] = {"--access-ttl", "62", NULL};
    static const char *const nrargs[] = {"--access-ttl", "62", "--no-refresh-rotation", NULL};
    static const char *const bgargs[] = {"--access-ttl", "10", NULL};
    if (testfix_sim_start(&g_sim, g_dir, "sim", "ca_w", secret, args, NULL) < 0 ||
        testfix_sim_start(&g_simr, g_dir, "simr", "ca_w", secret, args, rargs) < 0 ||
        testfix_sim_start(&g_simnr, g_dir, "simnr", "ca_w", secret, args, nrargs) < 0 ||
        testfix_sim_start(&g_simbg, g_dir, "simbg", "ca_w", secret, args, bgargs) < 0 ||
        write_providers("simbad2", "badsecret2") < 0)
        return -1;
    char errstr[256];
    rd_kafka_conf_t *pc = kafka_conf_producer(&g_cfg, NULL, &e);
    g_prod = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof errstr);
    if (!g_prod)
        return -1;
    g_workers[0] = start_worker(0);
    return g_workers[0] > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAXW; i++)
        stop_worker(i);
    testfix_sim_stop_all();
    if (g_prod)
        rd_kafka_destroy(g_prod);
    return testfix_tmpdir_remove(g_dir, "itest_worker");
}

/* Run oauthqctl with the test's environment; returns its exit code. */
static int ctl_cmd(const char *args)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s/oauthqctl' %s >/dev/null 2>&1", g_build, args);
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

/* ---- helpers ------------------------------------------------------------------ */

typedef struct {
    char id[64];
    char code[128];
    char hash[CRYPTO_SHA256_HEX];
    const char *provider;
} flow;

/* A code from the simulator's authorize endpoint (optionally faulted). */
static void new_code(flow *f, const char *provider, const char *fault)
{
    char url[512];
    const char *base = strcmp(provider, "simr") == 0    ? g_simr.base
                       : strcmp(provider, "simnr") == 0 ? g_simnr.base
                       : strcmp(provider, "simbg") == 0 ? g_simbg.base
                                                        : g_sim.base;
    /* "refresh:F" asks for a fault on the first refresh (sim_refresh_fault). */
    const char *param = fault ? "&sim_fault=" : "", *value = fault ? fault : "";
    const char *colon = fault ? strchr(fault, ':') : NULL;
    if (colon && strncmp(fault, "refresh:", 8) == 0) {
        param = "&sim_refresh_fault=";
        value = colon + 1;
    }
    snprintf(url, sizeof url,
             "%s/oauth/authorize?response_type=code&client_id=ca_w&redirect_uri=http%%3A%%2F%%2F"
             "127.0.0.1%%3A9%%2Fcb&state=s%s%s",
             base, param, value);
    testhttp_resp r;
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 302);
    const char *c = strstr(r.location, "code=");
    if (fault && strcmp(fault, "deny") == 0) {
        assert_null(c);
        f->code[0] = '\0';
    } else {
        assert_non_null(c);
        snprintf(f->code, sizeof f->code, "%.*s", (int)strcspn(c + 5, "&"), c + 5);
    }
    testhttp_resp_free(&r);
    crypto_sha256_hex(f->code, strlen(f->code), f->hash);
    snprintf(f->id, sizeof f->id, "conn-%ld-%06ld", (long)getpid(), ++g_seq);
    f->provider = provider;
}

static const char *g_meta; /* connmeta JSON for the next produce_cb, or NULL */

/* Produce the callback record for f as the intake would (acks=all). */
static void produce_cb(const flow *f, int error_kind)
{
    static records_callback rc;
    memset(&rc, 0, sizeof rc);
    if (g_meta) {
        err_t me = {0};
        assert_int_equal(connmeta_parse(g_meta, strlen(g_meta), &rc.meta, &me), 0);
    }
    snprintf(rc.connection_id, sizeof rc.connection_id, "%s", f->id);
    snprintf(rc.provider, sizeof rc.provider, "%s", f->provider);
    if (error_kind) {
        rc.kind = RECORDS_CB_ERROR;
        snprintf(rc.error, sizeof rc.error, "access_denied");
    } else {
        rc.kind = RECORDS_CB_CODE;
        snprintf(rc.code, sizeof rc.code, "%s", f->code);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rc.received_at_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    snprintf(rc.intake_id, sizeof rc.intake_id, "itest");
    snprintf(rc.request_id, sizeof rc.request_id, "r%ld", g_seq);
    char *json = records_callback_encode(&rc, NULL);
    assert_non_null(json);
    rd_kafka_resp_err_t err;
    do {
        err = rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_callbacks),
                                RD_KAFKA_V_KEY(f->id, strlen(f->id)),
                                RD_KAFKA_V_VALUE(json, strlen(json)),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(g_prod, 50);
    } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
    assert_int_equal(err, 0);
    free(json);
}

static void flush_prod(void)
{
    assert_int_equal(rd_kafka_flush(g_prod, 30000), 0);
}

/* Latest status per id, from the status topic. */
typedef struct {
    char id[64];
    char status[16];
    char reason[32];
    long version;
} st_entry;

#define ST_MAX 4096
static st_entry g_st[ST_MAX];
static int g_nst;

static st_entry *st_find(const char *id, int create)
{
    for (int i = 0; i < g_nst; i++)
        if (strcmp(g_st[i].id, id) == 0)
            return &g_st[i];
    if (!create || g_nst == ST_MAX)
        return NULL;
    memset(&g_st[g_nst], 0, sizeof g_st[0]);
    snprintf(g_st[g_nst].id, sizeof g_st[0].id, "%s", id);
    g_st[g_nst].version = -1;
    return &g_st[g_nst++];
}

static int on_status(const testkafka_record *r, void *ud)
{
    FILE *out = ud;
    if (!r->value || !r->key)
        return 0;
    if (out)
        fprintf(out, "%s\n", r->value);
    cJSON *o = cJSON_Parse(r->value);
    const cJSON *v = cJSON_GetObjectItem(o, "version");
    const cJSON *s = cJSON_GetObjectItem(o, "status");
    const cJSON *re = cJSON_GetObjectItem(o, "reason");
    st_entry *e = st_find(r->key, 1);
    if (e && cJSON_IsNumber(v) && cJSON_IsString(s) && (long)v->valuedouble > e->version) {
        e->version = (long)v->valuedouble;
        snprintf(e->status, sizeof e->status, "%s", s->valuestring);
        snprintf(e->reason, sizeof e->reason, "%s", cJSON_IsString(re) ? re->valuestring : "");
    }
    cJSON_Delete(o);
    return 0;
}

static void read_statuses(int save)
{
    g_nst = 0;
    err_t e = {0};
    FILE *out = save ? fopen("var/test-logs/status-records.jsonl", "a") : NULL;
    testkafka_read(&g_cfg, g_t_status, 0, 20000, on_status, out, &e);
    if (out)
        fclose(out);
}

static int is_final(const st_entry *e)
{
    return e && e->status[0] && strcmp(e->status, "pending") != 0;
}

/* Wait (bounded) until every flow has a final status. Restarts a worker
 * that exited (a supervisor's job). */
static void wait_final(const flow *fl, int n, int timeout_s)
{
    int done = 0;
    for (int t = 0; t < timeout_s * 2 && !done; t++) {
        read_statuses(0);
        done = 1;
        for (int i = 0; i < n && done; i++)
            if (!is_final(st_find(fl[i].id, 0)))
                done = 0;
        if (!done)
            usleep(500000);
    }
    read_statuses(1);
    for (int i = 0; i < n; i++) {
        st_entry *e = st_find(fl[i].id, 0);
        if (!is_final(e))
            fprintf(stderr, "not final: %s status=%s\n", fl[i].id, e ? e->status : "(none)");
        assert_true(is_final(e));
    }
}

/* Simulator stats: token requests for a code hash, grants. */
static cJSON *sim_stats_at(const char *base)
{
    return testfix_sim_stats(base);
}

static cJSON *sim_stats(void)
{
    return sim_stats_at(g_sim.base);
}

static int token_requests(const cJSON *stats, const char *hash)
{
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(stats, "codes"), hash);
    const cJSON *n = cJSON_GetObjectItem(c, "token_requests");
    return cJSON_IsNumber(n) ? (int)n->valuedouble : 0;
}

static int grants(const cJSON *stats, const char *which)
{
    return (int)cJSON_GetObjectItem(cJSON_GetObjectItem(stats, "grants"), which)->valuedouble;
}

/* Latest connections record per id: unknown_outcomes (for the G1 bound). */
typedef struct {
    const char *id;
    int unknown;
    long version;
    int found;
} conn_probe;

static int on_conn(const testkafka_record *r, void *ud)
{
    conn_probe *p = ud;
    if (!r->key || !r->value || strcmp(r->key, p->id) != 0)
        return 0;
    cJSON *o = cJSON_Parse(r->value);
    long v = (long)cJSON_GetObjectItem(o, "version")->valuedouble;
    if (v > p->version) {
        p->version = v;
        p->unknown = (int)cJSON_GetObjectItem(o, "unknown_outcomes")->valuedouble;
        p->found = 1;
    }
    cJSON_Delete(o);
    return 0;
}

/* The port of worker idx's listener, from its worker_listening log line;
 * waits (bounded) for the line: the worker logs it once it started. */
static int worker_port(int idx)
{
    char log[320], line[1024];
    snprintf(log, sizeof log, "%s/worker%d.log", g_dir, idx);
    for (int i = 0; i < 300; i++) {
        int port = 0;
        FILE *f = fopen(log, "r");
        while (f && fgets(line, sizeof line, f)) {
            const char *p = strstr(line, "worker_listening");
            if (p && strstr(p, "port="))
                port = atoi(strstr(p, "port=") + 5);
        }
        if (f)
            fclose(f);
        if (port > 0)
            return port;
        usleep(100000);
    }
    fail_msg("no worker_listening line in %s", log);
    return 0;
}

/* The value of one series (name with labels, as printed) in the worker's
 * /metrics; fails when the series is missing, unless missing_ok (then 0: a
 * labelled series appears at its first count). With body, the scrape is
 * kept there (freed by the caller). */
static long worker_metric_at(int port, const char *series, testhttp_resp *body, int missing_ok)
{
    char url[128], needle[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    snprintf(needle, sizeof needle, "\n%s ", series);
    testhttp_resp r;
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    const char *m = strstr(r.body, needle);
    if (!m && !missing_ok)
        fail_msg("series %s missing from /metrics", series);
    long v = m ? atol(m + strlen(needle)) : 0;
    if (body)
        *body = r;
    else
        testhttp_resp_free(&r);
    return v;
}

static long worker_metric(int port, const char *series, testhttp_resp *body)
{
    return worker_metric_at(port, series, body, 0);
}

/* ---- tests ---------------------------------------------------------------------------- */

/* A connections row the restore test writes cut short (SPEC §6: an
 * undecodable row holds its key). */
#define UNDECODABLE_ROW "{\"schema\":\"oauthq.connection.v1\",\"id\":"

#define STORM       500
#define M_EXCHANGES "oauthq_worker_exchanges_total{outcome=\"success\"}"
#define M_COMMITTED "oauthq_worker_transactions_total{result=\"committed\"}"

static void test_duplicate_storm_one_request_per_code(void **state)
{
    (void)state;
    static flow fl[STORM];
    for (int i = 0; i < STORM; i++)
        new_code(&fl[i], "sim", NULL);
    cJSON *before = sim_stats();
    int revoked0 = grants(before, "revoked");
    cJSON_Delete(before);
    /* The counters before the storm: every series is registered at start
     * (at 0), so only a count that grew shows the storm's work. */
    int port = worker_port(0);
    long exchanges0 = worker_metric_at(port, M_EXCHANGES, NULL, 1); /* none yet: absent */
    long committed0 = worker_metric(port, M_COMMITTED, NULL);
    /* Three rounds, each in a different order, interleaving keys. */
    for (int round = 0; round < 3; round++)
        for (int k = 0; k < STORM; k++) {
            int i = round == 1 ? STORM - 1 - k : (k * 7 + round) % STORM;
            produce_cb(&fl[i], 0);
        }
    flush_prod();
    wait_final(fl, STORM, 120);
    cJSON *st = sim_stats();
    for (int i = 0; i < STORM; i++) {
        assert_int_equal(token_requests(st, fl[i].hash), 1); /* G1 */
        assert_string_equal(st_find(fl[i].id, 0)->status, "connected");
    }
    assert_int_equal(grants(st, "revoked"), revoked0);
    cJSON_Delete(st);

    /* The worker's listener: readiness, and the counters grew by the storm:
     * one successful exchange per code, its results committed. */
    char url[128];
    testhttp_resp r;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", port);
    assert_int_equal(testhttp_do("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    testhttp_resp_free(&r);
    long exchanges = worker_metric(port, M_EXCHANGES, NULL);
    long committed = worker_metric(port, M_COMMITTED, &r);
    fprintf(stderr, "exchanges %ld -> %ld, committed transactions %ld -> %ld\n", exchanges0,
            exchanges, committed0, committed);
    assert_true(exchanges - exchanges0 >= STORM);
    assert_true(committed > committed0);
    assert_null(strstr(r.body, "sk_itest")); /* no secret in metrics */
    testhttp_resp_free(&r);
}

typedef struct {
    const char *fault;
    const char *provider;
    const char *want_status;
    const char *want_reason;
    int min_requests, max_requests;
} fault_case;

static void test_faults(void **state)
{
    (void)state;
    static const fault_case cases[] = {
        {"429", "sim", "connected", "", 2, 2},
        {"500_before", "sim", "connected", "", 2, 2},
        {"500_after", "sim", "failed", "reconnect_required", 2, 2},
        {"cut_after", "sim", "failed", "reconnect_required", 2, 2},
        {"hang", "sim", "connected", "", 2, 2},
        {"latency:3000", "sim", "failed", "reconnect_required", 2, 2},
        {"deny", "sim", "failed", "access_denied", 0, 0},
    };
    enum { N = sizeof cases / sizeof cases[0] };
    flow fl[N];
    for (int i = 0; i < N; i++) {
        new_code(&fl[i], cases[i].provider, cases[i].fault);
        produce_cb(&fl[i], strcmp(cases[i].fault, "deny") == 0);
        produce_cb(&fl[i], strcmp(cases[i].fault, "deny") == 0); /* and a duplicate */
    }
    flush_prod();
    wait_final(fl, N, 90);
    cJSON *st = sim_stats();
    for (int i = 0; i < N; i++) {
        st_entry *e = st_find(fl[i].id, 0);
        int n = fl[i].code[0] ? token_requests(st, fl[i].hash) : 0;
        fprintf(stderr, "fault %-13s -> %s %s (token requests %d)\n", cases[i].fault, e->status,
                e->reason, n);
        assert_string_equal(e->status, cases[i].want_status);
        assert_string_equal(e->reason, cases[i].want_reason);
        assert_in_range(n, cases[i].min_requests, cases[i].max_requests);
        if (n > 1) {
            /* G1: a second request only after an unknown outcome — or a
             * 429, which says the code was not consumed. */
            conn_probe p = {fl[i].id, 0, -1, 0};
            err_t e2 = {0};
            testkafka_read(&g_cfg, g_t_conn, 0, 20000, on_conn, &p, &e2);
            assert_true(p.found);
            if (strcmp(cases[i].fault, "429") != 0)
                assert_true(p.unknown >= 1);
        }
    }
    cJSON_Delete(st);
}

/* Wait (bounded) until id's latest status is want. */
static st_entry *wait_status(const char *id, const char *want, const char *reason, int timeout_s)
{
    st_entry *e = NULL;
    for (int t = 0; t < timeout_s * 2; t++) {
        read_statuses(0);
        e = st_find(id, 0);
        if (e && strcmp(e->status, want) == 0 && (!reason || strcmp(e->reason, reason) == 0))
            return e;
        usleep(500000);
    }
    fprintf(stderr, "%s: status %s %s, wanted %s\n", id, e ? e->status : "(none)",
            e ? e->reason : "", want);
    fail();
    return NULL;
}

/* SPEC §5: a code hash that got a definitive answer is never exchanged
 * again, not after an error callback for the same connection (the error
 * once cleared the chain's hash, so A was sent a second time). */
static void test_answered_code_not_exchanged_after_error_callback(void **state)
{
    (void)state;
    flow a, b;
    new_code(&b, "sim", NULL);
    a = b;
    snprintf(a.code, sizeof a.code, "made-up-%ld-%ld", (long)getpid(), g_seq);
    crypto_sha256_hex(a.code, strlen(a.code), a.hash);
    produce_cb(&a, 0); /* unknown to the provider: invalid_grant, code_rejected */
    flush_prod();
    wait_status(a.id, "failed", "code_rejected", 60);
    produce_cb(&a, 1); /* ?error=access_denied with the same state */
    flush_prod();
    wait_status(a.id, "failed", "access_denied", 60);
    produce_cb(&a, 0); /* A again: answered, never re-sent */
    produce_cb(&b, 0); /* a new code, after it on the same key: exchanged */
    flush_prod();
    wait_status(b.id, "connected", "", 60);
    cJSON *st = sim_stats();
    assert_int_equal(token_requests(st, a.hash), 1);
    assert_int_equal(token_requests(st, b.hash), 1);
    cJSON_Delete(st);
}

/* A worker on topics whose partition count is not OAUTHQ_TOPIC_PARTITIONS
 * (partitions added to all three alike passed the old equal-count check,
 * and keys then remap away from their state) refuses to start. */
static void test_changed_partition_count_is_refused(void **state)
{
    (void)state;
    setenv("OAUTHQ_TOPIC_PARTITIONS", "8", 1);
    pid_t pid = start_worker(7);
    setenv("OAUTHQ_TOPIC_PARTITIONS", "4", 1);
    assert_true(pid > 0);
    int rc = testproc_wait_exit(pid, 60000);
    if (rc == -2)
        fail_msg("the worker started on 4 partitions with OAUTHQ_TOPIC_PARTITIONS=8");
    assert_true(rc > 0);
    char log[320], line[2048];
    snprintf(log, sizeof log, "%s/worker7.log", g_dir);
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, "must each have OAUTHQ_TOPIC_PARTITIONS=8") != NULL;
    fclose(f);
    assert_true(found);
}

static void test_invalid_client_holds_until_fixed(void **state)
{
    (void)state;
    flow f;
    new_code(&f, "simbad", NULL);
    produce_cb(&f, 0);
    flush_prod();
    /* Held, not failed: pending with the code kept. */
    int held = 0;
    for (int t = 0; t < 60 && !held; t++) {
        read_statuses(0);
        st_entry *e = st_find(f.id, 0);
        cJSON *st = sim_stats();
        held = e && strcmp(e->status, "pending") == 0 && token_requests(st, f.hash) >= 1;
        cJSON_Delete(st);
        if (!held)
            usleep(500000);
    }
    assert_true(held);
    /* Fix the configuration and resume the provider (no restart): the
     * worker re-reads the secret and exchanges the held code now. */
    assert_int_equal(testfix_secret(g_dir, "badsecret", "sk_itest_worker_secret", NULL, 0), 0);
    assert_int_equal(ctl_cmd("provider resume simbad"), 0);
    wait_final(&f, 1, 25); /* well before the 30 s automatic re-probe */
    assert_string_equal(st_find(f.id, 0)->status, "connected");
}

/* A manual pause holds new codes (no token request) until resume. */
static void test_manual_pause_and_resume(void **state)
{
    (void)state;
    assert_int_equal(ctl_cmd("provider pause sim"), 0);
    sleep(2); /* every partition's copy consumed */
    flow f;
    new_code(&f, "sim", NULL);
    produce_cb(&f, 0);
    flush_prod();
    sleep(3);
    read_statuses(0);
    st_entry *e = st_find(f.id, 0);
    assert_non_null(e);
    assert_string_equal(e->status, "pending");
    cJSON *st = sim_stats();
    assert_int_equal(token_requests(st, f.hash), 0); /* held, not sent */
    cJSON_Delete(st);
    assert_int_equal(ctl_cmd("provider resume sim"), 0);
    wait_final(&f, 1, 30);
    assert_string_equal(st_find(f.id, 0)->status, "connected");
    st = sim_stats();
    assert_int_equal(token_requests(st, f.hash), 1);
    cJSON_Delete(st);
}

/* Issue 14 defect 2: a pause survives a restart of every worker (the
 * state is in the changelog, not in memory). */
static void test_pause_survives_restart(void **state)
{
    (void)state;
    assert_int_equal(ctl_cmd("provider pause sim"), 0);
    sleep(2); /* every partition's copy consumed and committed */
    stop_worker(0);
    g_workers[0] = start_worker(0);
    assert_true(g_workers[0] > 0);
    flow f;
    new_code(&f, "sim", NULL);
    produce_cb(&f, 0);
    flush_prod();
    sleep(6); /* the new worker restored, took the partitions and consumed the code */
    read_statuses(0);
    st_entry *e = st_find(f.id, 0);
    assert_non_null(e);
    assert_string_equal(e->status, "pending");
    cJSON *st = sim_stats();
    assert_int_equal(token_requests(st, f.hash), 0); /* still paused: held, not sent */
    cJSON_Delete(st);
    assert_int_equal(ctl_cmd("provider resume sim"), 0);
    wait_final(&f, 1, 30);
    assert_string_equal(st_find(f.id, 0)->status, "connected");
    st = sim_stats();
    assert_int_equal(token_requests(st, f.hash), 1);
    cJSON_Delete(st);
}

/* Issue 14 defect 6: after invalid_client one held code probes per
 * interval (2 s here), never every held code at once, and the probe reads
 * the secret file again: fixing it releases every held code, no resume. */
static void test_invalid_client_probes_one_code(void **state)
{
    (void)state;
    enum { N = 6 };
    flow f[N];
    for (int i = 0; i < N; i++) {
        new_code(&f[i], "simbad2", NULL);
        produce_cb(&f[i], 0);
    }
    flush_prod();
    /* The first wave: each code got invalid_client at most once. */
    int total = 0, prev = -1;
    for (int t = 0; t < 40 && total != prev; t++) {
        usleep(500000);
        prev = total;
        cJSON *st = sim_stats();
        total = 0;
        for (int i = 0; i < N; i++)
            total += token_requests(st, f[i].hash);
        cJSON_Delete(st);
    }
    assert_true(total >= 1 && total <= N);
    /* 7 s paused: probes go one at a time (about one per 2 s). */
    int first = total, max_step = 0;
    for (int t = 0; t < 28; t++) {
        usleep(250000);
        cJSON *st = sim_stats();
        int now = 0;
        for (int i = 0; i < N; i++)
            now += token_requests(st, f[i].hash);
        cJSON_Delete(st);
        if (now - total > max_step)
            max_step = now - total;
        total = now;
    }
    fprintf(stderr, "invalid_client: first wave %d, probes in 7 s %d, largest step %d\n", first,
            total - first, max_step);
    assert_true(total - first >= 2); /* it does probe again */
    assert_true(total - first <= 5); /* one per interval, not every held code */
    assert_true(max_step <= 1);
    read_statuses(0);
    for (int i = 0; i < N; i++)
        assert_string_equal(st_find(f[i].id, 0)->status, "pending");
    /* Fix the secret file only: the next probe succeeds and the rest follow. */
    assert_int_equal(testfix_secret(g_dir, "badsecret2", "sk_itest_worker_secret", NULL, 0), 0);
    wait_final(f, N, 20);
    for (int i = 0; i < N; i++)
        assert_string_equal(st_find(f[i].id, 0)->status, "connected");
}

static int on_dlq(const testkafka_record *r, void *ud)
{
    int *n = ud;
    FILE *out = fopen("var/test-logs/dlq-records.jsonl", "a");
    if (out && r->value) {
        fprintf(out, "%s\n", r->value);
        fclose(out);
    } else if (out) {
        fclose(out);
    }
    if (r->value && strstr(r->value, "malformed_callback"))
        (*n)++;
    return 0;
}

/* The DLQ record's original bytes for a key (the "original" field). */
typedef struct {
    const char *id;
    char *out;
} dlq_find;

static int on_dlq_original(const testkafka_record *r, void *ud)
{
    dlq_find *f = ud;
    if (!r->key || !r->value || strcmp(r->key, f->id) != 0)
        return 0;
    cJSON *o = cJSON_Parse(r->value);
    const cJSON *orig = cJSON_GetObjectItem(o, "original");
    if (cJSON_IsString(orig))
        snprintf(f->out, 4096, "%s", orig->valuestring);
    cJSON_Delete(o);
    return 0;
}

static void test_malformed_record_goes_to_dlq_and_partition_flows(void **state)
{
    (void)state;
    flow bad, good;
    new_code(&good, "sim", NULL);
    snprintf(bad.id, sizeof bad.id, "%s", good.id); /* same key: same partition */
    const char *garbage = "{\"schema\":\"oauthq.callback.v1\",\"oops\":";
    assert_int_equal(rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_callbacks),
                                       RD_KAFKA_V_KEY(bad.id, strlen(bad.id)),
                                       RD_KAFKA_V_VALUE((void *)garbage, strlen(garbage)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    produce_cb(&good, 0); /* after the bad one, same partition */
    flush_prod();
    wait_final(&good, 1, 60);
    assert_string_equal(st_find(good.id, 0)->status, "connected");
    int n = 0;
    err_t e = {0};
    testkafka_read(&g_cfg, g_t_dlq, 1, 20000, on_dlq, &n, &e);
    assert_true(n >= 1);
}

static void produce_replay(const char *id)
{
    records_replay rp;
    memset(&rp, 0, sizeof rp);
    snprintf(rp.connection_id, sizeof rp.connection_id, "%s", id);
    rp.requested_at_ms = (int64_t)time(NULL) * 1000;
    snprintf(rp.requested_by, sizeof rp.requested_by, "itest");
    char *json = records_replay_encode(&rp, NULL);
    assert_non_null(json);
    assert_int_equal(rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_callbacks),
                                       RD_KAFKA_V_KEY(id, strlen(id)),
                                       RD_KAFKA_V_VALUE(json, strlen(json)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    free(json);
}

typedef struct {
    const char *id;
    char last_error[200];
    long version;
} last_error_probe;

static int on_last_error(const testkafka_record *r, void *ud)
{
    last_error_probe *p = ud;
    if (!r->key || !r->value || strcmp(r->key, p->id) != 0)
        return 0;
    cJSON *o = cJSON_Parse(r->value);
    long v = (long)cJSON_GetObjectItem(o, "version")->valuedouble;
    const cJSON *le = cJSON_GetObjectItem(o, "last_error");
    if (v > p->version) {
        p->version = v;
        snprintf(p->last_error, sizeof p->last_error, "%s",
                 cJSON_IsString(le) ? le->valuestring : "");
    }
    cJSON_Delete(o);
    return 0;
}

/* Wait (bounded) until id's latest connections record explains a replay. */
static void await_explanation(const char *id, const char *want)
{
    last_error_probe p = {id, "", -1};
    for (int i = 0; i < 60 && !strstr(p.last_error, want); i++) {
        err_t e = {0};
        p.version = -1;
        testkafka_read(&g_cfg, g_t_conn, 0, 20000, on_last_error, &p, &e);
        if (!strstr(p.last_error, want))
            usleep(500000);
    }
    assert_non_null(strstr(p.last_error, want));
}

/* Replays never exchange a definitively answered code (G1); a DLQ'd
 * callback whose code was never used is exchanged exactly once. */
static void test_replay(void **state)
{
    (void)state;
    flow ok, denied, late;
    new_code(&ok, "sim", NULL);
    new_code(&denied, "sim", "deny");
    produce_cb(&ok, 0);
    produce_cb(&denied, 1);
    flush_prod();
    wait_final(&ok, 1, 60);
    wait_final(&denied, 1, 60);
    produce_replay(ok.id);
    produce_replay(denied.id);
    flush_prod();
    await_explanation(ok.id, "already connected");
    await_explanation(denied.id, "definitively answered");
    cJSON *st = sim_stats();
    assert_int_equal(token_requests(st, ok.hash), 1);
    cJSON_Delete(st);
    read_statuses(0);
    assert_string_equal(st_find(ok.id, 0)->status, "connected");
    assert_string_equal(st_find(denied.id, 0)->status, "failed");

    /* A provider the worker does not know yet: the callback goes to the
     * DLQ, the code stays unused. */
    new_code(&late, "simlate", NULL);
    produce_cb(&late, 0);
    flush_prod();
    char original[4096] = "";
    dlq_find find = {late.id, original};
    for (int t = 0; t < 60; t++) {
        err_t e = {0};
        testkafka_read(&g_cfg, g_t_dlq, 0, 20000, on_dlq_original, &find, &e);
        if (find.out[0])
            break;
        usleep(500000);
    }
    assert_non_null(strstr(original, "simlate"));
    /* Fix the configuration, restart, replay the original record. */
    assert_int_equal(write_providers("simlate", "secret"), 0);
    stop_worker(0);
    g_workers[0] = start_worker(0);
    assert_true(g_workers[0] > 0);
    assert_int_equal(rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_callbacks),
                                       RD_KAFKA_V_KEY(late.id, strlen(late.id)),
                                       RD_KAFKA_V_VALUE(original, strlen(original)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    flush_prod();
    for (int t = 0; t < 120; t++) {
        read_statuses(0);
        st_entry *e = st_find(late.id, 0);
        if (e && strcmp(e->status, "connected") == 0)
            break;
        usleep(500000);
    }
    read_statuses(0);
    assert_string_equal(st_find(late.id, 0)->status, "connected");
    st = sim_stats();
    assert_int_equal(token_requests(st, late.hash), 1);
    cJSON_Delete(st);
}

typedef struct {
    const char *id;
    long version;
    int has_access, has_refresh;
    char status[16];
} token_probe;

static int on_tokens(const testkafka_record *r, void *ud)
{
    token_probe *p = ud;
    if (!r->key || !r->value || strcmp(r->key, p->id) != 0)
        return 0;
    cJSON *o = cJSON_Parse(r->value);
    long v = (long)cJSON_GetObjectItem(o, "version")->valuedouble;
    if (v > p->version) {
        p->version = v;
        p->has_access = cJSON_IsString(cJSON_GetObjectItem(o, "access_token_sealed"));
        p->has_refresh = cJSON_IsString(cJSON_GetObjectItem(o, "refresh_token_sealed"));
        snprintf(p->status, sizeof p->status, "%s", cJSON_GetObjectItem(o, "status")->valuestring);
    }
    cJSON_Delete(o);
    return 0;
}

/* Disconnect: the worker revokes at the provider and the latest
 * connections record carries no token any more. */
static void test_disconnect(void **state)
{
    (void)state;
    flow f;
    new_code(&f, "sim", NULL);
    produce_cb(&f, 0);
    flush_prod();
    wait_final(&f, 1, 60);
    assert_string_equal(st_find(f.id, 0)->status, "connected");
    cJSON *st = sim_stats();
    int deauth0 = grants(st, "deauthorized");
    cJSON_Delete(st);
    token_probe p = {f.id, -1, 0, 0, ""};
    err_t e = {0};
    testkafka_read(&g_cfg, g_t_conn, 0, 20000, on_tokens, &p, &e);
    assert_true(p.has_access); /* sealed tokens while connected */
    /* An operator with the data key can open them: the simulator's token. */
    char cmd[1200], line[8192] = "";
    snprintf(cmd, sizeof cmd, "'%s/oauthqctl' token %s --json 2>/dev/null", g_build, f.id);
    FILE *pp = popen(cmd, "r");
    assert_non_null(pp);
    assert_non_null(fgets(line, sizeof line, pp));
    assert_int_equal(pclose(pp), 0);
    assert_non_null(strstr(line, "\"access_token\":\"sk_test_"));
    records_replay d;
    memset(&d, 0, sizeof d);
    snprintf(d.connection_id, sizeof d.connection_id, "%s", f.id);
    d.requested_at_ms = (int64_t)time(NULL) * 1000;
    snprintf(d.requested_by, sizeof d.requested_by, "itest");
    char *json = records_disconnect_encode(&d, NULL);
    /* Twice (idempotent): as the intake would, and with oauthqctl. */
    assert_int_equal(rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_callbacks),
                                       RD_KAFKA_V_KEY(f.id, strlen(f.id)),
                                       RD_KAFKA_V_VALUE(json, strlen(json)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    free(json);
    flush_prod();
    char args[128];
    snprintf(args, sizeof args, "disconnect %s", f.id);
    assert_int_equal(ctl_cmd(args), 0);
    for (int t = 0; t < 60; t++) {
        read_statuses(0);
        if (strcmp(st_find(f.id, 0)->status, "disconnected") == 0)
            break;
        usleep(500000);
    }
    read_statuses(1);
    assert_string_equal(st_find(f.id, 0)->status, "disconnected");
    st = sim_stats();
    assert_int_equal(grants(st, "deauthorized"), deauth0 + 1);
    assert_int_equal(token_requests(st, f.hash), 1);
    cJSON_Delete(st);
    token_probe q = {f.id, -1, 1, 1, ""};
    testkafka_read(&g_cfg, g_t_conn, 0, 20000, on_tokens, &q, &e);
    assert_string_equal(q.status, "disconnected");
    assert_false(q.has_access); /* shredded from the changelog's latest record */
    assert_false(q.has_refresh);
}

#define CRASH_N 1000

static void test_crash_kill9_repeatedly(void **state)
{
    (void)state;
    static flow fl[CRASH_N];
    char fault[32];
    for (int i = 0; i < CRASH_N; i++) {
        /* 50–200 ms at the token endpoint, so kills land mid-exchange. */
        snprintf(fault, sizeof fault, "latency:%d", 50 + (i * 37) % 150);
        new_code(&fl[i], "sim", fault);
    }
    for (int i = 0; i < CRASH_N; i++) {
        produce_cb(&fl[i], 0);
        if (i % 3 == 0)
            produce_cb(&fl[i], 0);
    }
    flush_prod();
    /* Kill -9 at pseudo-random moments while the run is under way. */
    srand((unsigned)time(NULL));
    for (int k = 0; k < 4; k++) {
        usleep((useconds_t)(300000 + rand() % 1200000));
        kill(g_workers[0], SIGKILL);
        testproc_stop(g_workers[0], 5000);
        g_workers[0] = start_worker(0);
        assert_true(g_workers[0] > 0);
        g_restarts++;
    }
    wait_final(fl, CRASH_N, 240);
    cJSON *st = sim_stats();
    int multi = 0, connected = 0;
    for (int i = 0; i < CRASH_N; i++) {
        int n = token_requests(st, fl[i].hash);
        st_entry *e = st_find(fl[i].id, 0);
        assert_true(n >= 1);
        if (strcmp(e->status, "connected") == 0)
            connected++;
        if (n > 1) {
            multi++;
            conn_probe p = {fl[i].id, 0, -1, 0};
            err_t e2 = {0};
            testkafka_read(&g_cfg, g_t_conn, 0, 20000, on_conn, &p, &e2);
            assert_true(p.unknown >= 1);     /* re-sent only after an unknown outcome */
            assert_true(p.unknown >= n - 1); /* and at most once per unknown outcome */
            /* A second request meets a spent code: the sim revoked the grant,
             * so the status must not say connected (G3 / no lie). */
            assert_string_not_equal(e->status, "connected");
        }
    }
    fprintf(stderr,
            "crash run: %d connections, %d restarts, %d connected, %d codes re-sent "
            "after an unknown outcome\n",
            CRASH_N, g_restarts, connected, multi);
    cJSON_Delete(st);
}

static void test_rebalance_survivor_finishes(void **state)
{
    (void)state;
    g_workers[1] = start_worker(1);
    assert_true(g_workers[1] > 0);
    sleep(8); /* both in the group */
    static flow fl[300];
    for (int i = 0; i < 300; i++)
        new_code(&fl[i], "sim", "latency:400");
    for (int i = 0; i < 300; i++)
        produce_cb(&fl[i], 0);
    flush_prod();
    /* Kill the second worker while it has exchanges in flight. */
    sleep(1);
    kill(g_workers[1], SIGKILL);
    testproc_stop(g_workers[1], 5000);
    g_workers[1] = -1;
    for (int i = 0; i < 300; i += 2)
        produce_cb(&fl[i], 0); /* duplicates after the takeover */
    flush_prod();
    wait_final(fl, 300, 180);
    /* The survivor took the partitions over: it restored them from the
     * changelog (the records the dead worker committed). */
    char log[320], line[1024];
    snprintf(log, sizeof log, "%s/worker0.log", g_dir);
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    int restored = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "partition_restored") && !strstr(line, "records=0 "))
            restored++;
    fclose(f);
    assert_true(restored > 0);
    cJSON *st = sim_stats();
    int resent = 0;
    for (int i = 0; i < 300; i++) {
        int n = token_requests(st, fl[i].hash);
        st_entry *e = st_find(fl[i].id, 0);
        if (n > 1) {
            conn_probe p = {fl[i].id, 0, -1, 0};
            err_t e2 = {0};
            testkafka_read(&g_cfg, g_t_conn, 0, 20000, on_conn, &p, &e2);
            assert_true(p.unknown >= 1);
            assert_string_not_equal(e->status, "connected");
            resent++;
        } else {
            assert_int_equal(n, 1);
        }
    }
    fprintf(stderr,
            "rebalance: %d partitions restored with records, %d codes re-sent after an "
            "unknown outcome\n",
            restored, resent);
    cJSON_Delete(st);
}

/* Final status record's updated_at per flow (ISO-8601 UTC, milliseconds:
 * strings compare in time order). */
typedef struct {
    const flow *fl;
    int n;
    char (*at)[32];
} final_at_probe;

static int on_final_at(const testkafka_record *r, void *ud)
{
    final_at_probe *p = ud;
    if (!r->key || !r->value)
        return 0;
    for (int i = 0; i < p->n; i++) {
        if (strcmp(r->key, p->fl[i].id) != 0)
            continue;
        cJSON *o = cJSON_Parse(r->value);
        const cJSON *s = cJSON_GetObjectItem(o, "status");
        const cJSON *u = cJSON_GetObjectItem(o, "updated_at");
        if (!p->at[i][0] && cJSON_IsString(s) && strcmp(s->valuestring, "pending") != 0 &&
            cJSON_IsString(u))
            snprintf(p->at[i], sizeof p->at[i], "%s", u->valuestring);
        cJSON_Delete(o);
        break;
    }
    return 0;
}

/* SPEC §6: one hanging token request delays only its own connection. Codes
 * that hang until the exchange timeout are consumed first; connections that
 * arrive while they hang reach their final status before any of the
 * hanging ones does (a batch barrier would settle them after the hang). */
static void test_hanging_request_delays_only_its_connection(void **state)
{
    (void)state;
    static flow hang[4], quick[20];
    for (int i = 0; i < 4; i++)
        new_code(&hang[i], "sim", "hang");
    for (int i = 0; i < 20; i++)
        new_code(&quick[i], "sim", NULL);
    for (int i = 0; i < 4; i++)
        produce_cb(&hang[i], 0);
    flush_prod();
    usleep(300 * 1000); /* the hanging requests are in flight */
    for (int i = 0; i < 20; i++)
        produce_cb(&quick[i], 0);
    flush_prod();
    wait_final(quick, 20, 60);
    wait_final(hang, 4, 120);
    static char at_hang[4][32], at_quick[20][32];
    memset(at_hang, 0, sizeof at_hang);
    memset(at_quick, 0, sizeof at_quick);
    final_at_probe ph = {hang, 4, at_hang}, pq = {quick, 20, at_quick};
    err_t e = {0};
    testkafka_read(&g_cfg, g_t_status, 0, 20000, on_final_at, &ph, &e);
    testkafka_read(&g_cfg, g_t_status, 0, 20000, on_final_at, &pq, &e);
    const char *first_hang = NULL, *last_quick = NULL;
    for (int i = 0; i < 4; i++) {
        assert_true(at_hang[i][0]);
        if (!first_hang || strcmp(at_hang[i], first_hang) < 0)
            first_hang = at_hang[i];
    }
    for (int i = 0; i < 20; i++) {
        assert_true(at_quick[i][0]);
        if (!last_quick || strcmp(at_quick[i], last_quick) > 0)
            last_quick = at_quick[i];
    }
    fprintf(stderr, "hang: last quick final %s, first hanging final %s\n", last_quick, first_hang);
    assert_true(strcmp(last_quick, first_hang) < 0);
}

/* Versions per key in a topic only grow in offset order (G4); counts the
 * regressions among the given flows. */
typedef struct {
    const flow *fl;
    int n;
    long *last;
    int regressions;
} mono_probe;

static int on_mono(const testkafka_record *r, void *ud)
{
    mono_probe *p = ud;
    if (!r->key || !r->value)
        return 0;
    for (int i = 0; i < p->n; i++) {
        if (strcmp(r->key, p->fl[i].id) != 0)
            continue;
        cJSON *o = cJSON_Parse(r->value);
        const cJSON *v = cJSON_GetObjectItem(o, "version");
        if (cJSON_IsNumber(v)) {
            long ver = (long)v->valuedouble;
            if (ver <= p->last[i]) {
                fprintf(stderr, "version regression: %s %ld after %ld\n", r->key, ver, p->last[i]);
                p->regressions++;
            }
            p->last[i] = ver;
        }
        cJSON_Delete(o);
        break;
    }
    return 0;
}

static int version_regressions(const char *topic, const flow *fl, int n)
{
    long *last = calloc((size_t)n, sizeof *last);
    assert_non_null(last);
    for (int i = 0; i < n; i++)
        last[i] = -1;
    mono_probe p = {fl, n, last, 0};
    err_t e = {0};
    testkafka_read(&g_cfg, topic, 0, 20000, on_mono, &p, &e);
    free(last);
    return p.regressions;
}

/* G1 across a zombie: a worker stopped (SIGSTOP) longer than the session
 * timeout while it has requests in flight loses its partitions; the
 * survivor takes them over and re-sends open claims only after the lease,
 * the exchange timeout and the margin. When the zombie resumes it commits
 * nothing (every transaction is fenced by the group metadata) and sends
 * nothing whose lease ran out. Checked on the simulator's per-code
 * counters: a code requested twice must be an unknown outcome that did
 * not end connected; versions never regress in status or connections. */
static void test_zombie_paused_worker(void **state)
{
    (void)state;
    g_workers[1] = start_worker(1);
    assert_true(g_workers[1] > 0);
    sleep(8); /* both in the group */
    enum { NZ = 120 };
    static flow fl[NZ];
    for (int i = 0; i < NZ; i++)
        new_code(&fl[i], "sim", i % 2 ? "latency:3000" : "latency:200");
    for (int i = 0; i < NZ; i++)
        produce_cb(&fl[i], 0);
    flush_prod();
    sleep(1); /* requests in flight on both workers */
    pid_t z = g_workers[1];
    assert_int_equal(kill(z, SIGSTOP), 0);
    sleep(16); /* session timeout, takeover, the survivor's hold */
    for (int i = 0; i < NZ; i += 3)
        produce_cb(&fl[i], 0); /* duplicates while the zombie is stopped */
    flush_prod();
    assert_int_equal(kill(z, SIGCONT), 0);
    sleep(3); /* the zombie runs again: whatever it tries must change nothing */
    for (int i = 1; i < NZ; i += 3)
        produce_cb(&fl[i], 0);
    flush_prod();
    wait_final(fl, NZ, 180);
    stop_worker(1);
    cJSON *st = sim_stats();
    int resent = 0;
    for (int i = 0; i < NZ; i++) {
        int n = token_requests(st, fl[i].hash);
        st_entry *e = st_find(fl[i].id, 0);
        assert_non_null(e);
        assert_true(n >= 1);
        if (n > 1) {
            conn_probe p = {fl[i].id, 0, -1, 0};
            err_t e2 = {0};
            testkafka_read(&g_cfg, g_t_conn, 0, 20000, on_conn, &p, &e2);
            if (p.unknown < 1 || strcmp(e->status, "connected") == 0)
                fprintf(stderr, "zombie: %s sent %d times, unknown=%d, status=%s\n", fl[i].id, n,
                        p.unknown, e->status);
            assert_true(p.unknown >= 1);
            assert_string_not_equal(e->status, "connected");
            resent++;
        }
    }
    cJSON_Delete(st);
    assert_int_equal(version_regressions(g_t_status, fl, NZ), 0);
    assert_int_equal(version_regressions(g_t_conn, fl, NZ), 0);
    fprintf(stderr, "zombie: %d codes, %d re-sent after an unknown outcome\n", NZ, resent);
}

/* Two flows whose ids land on the same partition (x's); y is read after x,
 * so y's final status proves x's callback was consumed. */
static int32_t same_partition_pair(flow *x, flow *y)
{
    new_code(x, "sim", NULL);
    int32_t part =
        rd_kafka_msg_partitioner_consistent_random(NULL, x->id, strlen(x->id), 4, NULL, NULL);
    for (int i = 0; i < 200; i++) {
        new_code(y, "sim", NULL);
        if (rd_kafka_msg_partitioner_consistent_random(NULL, y->id, strlen(y->id), 4, NULL, NULL) ==
            part)
            break;
    }
    assert_int_equal(
        rd_kafka_msg_partitioner_consistent_random(NULL, y->id, strlen(y->id), 4, NULL, NULL),
        part);
    return part;
}

/* Produce, in tp's open transaction, x = connected (version 5, its code's
 * hash) to the connections and status topics of partition part. */
static void produce_connected(rd_kafka_t *tp, const flow *x, int32_t part, const char *account)
{
    err_t e = {0};
    conn_t *c = calloc(1, sizeof *c);
    assert_non_null(c);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    conn_init(c, x->id, "sim", (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    c->status = CONN_CONNECTED;
    c->phase = PHASE_NONE;
    c->version = 5;
    c->attempts = 1;
    snprintf(c->code_hash, sizeof c->code_hash, "%s", x->hash);
    snprintf(c->account_id, sizeof c->account_id, "%s", account);
    char *cj = conn_encode(c, &e);
    char *sj = conn_status_json(c, &e);
    assert_non_null(cj);
    assert_non_null(sj);
    assert_int_equal(rd_kafka_producev(tp, RD_KAFKA_V_TOPIC(g_t_conn), RD_KAFKA_V_PARTITION(part),
                                       RD_KAFKA_V_KEY(x->id, strlen(x->id)),
                                       RD_KAFKA_V_VALUE(cj, strlen(cj)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    assert_int_equal(rd_kafka_producev(tp, RD_KAFKA_V_TOPIC(g_t_status), RD_KAFKA_V_PARTITION(part),
                                       RD_KAFKA_V_KEY(x->id, strlen(x->id)),
                                       RD_KAFKA_V_VALUE(sj, strlen(sj)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    free(cj);
    free(sj);
    free(c);
}

/* SPEC §6 restore: a transaction still open on the changelog when a
 * partition is assigned is waited for, not skipped. A producer of the
 * test's own writes "X connected" in a transaction, the worker starts
 * (restoring), X's callback arrives, then the transaction commits: the
 * callback meets the committed connected state and its code is never sent.
 * A store that restored only to the last stable offset would find X fresh
 * and exchange it. */
static void test_restore_waits_for_open_transaction(void **state)
{
    (void)state;
    flow x, y;
    int32_t part = same_partition_pair(&x, &y);
    for (int i = 0; i < MAXW; i++)
        stop_worker(i); /* nobody owns the partitions now */

    err_t e = {0};
    char errstr[256];
    rd_kafka_conf_t *pc = kafka_conf_producer(&g_cfg, "itest-open-txn", &e);
    assert_non_null(pc);
    rd_kafka_t *tp = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof errstr);
    assert_non_null(tp);
    rd_kafka_error_t *err = rd_kafka_init_transactions(tp, 30000);
    assert_null(err);
    assert_null(rd_kafka_begin_transaction(tp));
    produce_connected(tp, &x, part, "acct_open_txn");
    assert_int_equal(rd_kafka_flush(tp, 30000), 0); /* written, not committed */

    g_workers[0] = start_worker(0);
    assert_true(g_workers[0] > 0);
    sleep(4); /* the worker is assigned and restoring behind the open transaction */
    produce_cb(&x, 0);
    produce_cb(&y, 0);
    flush_prod();
    sleep(1);
    err = rd_kafka_commit_transaction(tp, 30000);
    assert_null(err);
    rd_kafka_destroy(tp);

    wait_final(&y, 1, 120); /* the worker read past X's callback */
    wait_final(&x, 1, 10);
    cJSON *st = sim_stats();
    int nx = token_requests(st, x.hash), ny = token_requests(st, y.hash);
    cJSON_Delete(st);
    fprintf(stderr, "open transaction at assignment: X sent %d times, Y %d\n", nx, ny);
    assert_int_equal(nx, 0);
    assert_int_equal(ny, 1);
    assert_string_equal(st_find(x.id, 0)->status, "connected");
}

/* SPEC §6 restore, the rules of the changelog's rows: a row that cannot be
 * decoded holds its key (H: its callback's code is never sent, the key never
 * looks fresh) and a tombstone deletes (T was connected with this very code,
 * then deleted: its callback starts afresh and the code is exchanged once).
 * Y, on the same partition after both, proves their callbacks were read. */
static void test_restore_holds_unreadable_and_applies_tombstones(void **state)
{
    (void)state;
    flow h, t, y;
    int32_t part = same_partition_pair(&h, &t);
    for (int i = 0; i < 200; i++) {
        new_code(&y, "sim", NULL);
        if (rd_kafka_msg_partitioner_consistent_random(NULL, y.id, strlen(y.id), 4, NULL, NULL) ==
            part)
            break;
    }
    for (int i = 0; i < MAXW; i++)
        stop_worker(i); /* the next owner restores these rows */

    err_t e = {0};
    const char *garbage = UNDECODABLE_ROW;
    assert_int_equal(rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_conn),
                                       RD_KAFKA_V_PARTITION(part),
                                       RD_KAFKA_V_KEY(h.id, strlen(h.id)),
                                       RD_KAFKA_V_VALUE((void *)garbage, strlen(garbage)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    conn_t *c = calloc(1, sizeof *c);
    assert_non_null(c);
    conn_init(c, t.id, "sim", (int64_t)time(NULL) * 1000);
    c->status = CONN_CONNECTED;
    c->phase = PHASE_NONE;
    c->version = 5;
    c->attempts = 1;
    snprintf(c->code_hash, sizeof c->code_hash, "%s", t.hash);
    conn_answer(c, t.hash);
    char *cj = conn_encode(c, &e);
    assert_non_null(cj);
    assert_int_equal(
        rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_conn), RD_KAFKA_V_PARTITION(part),
                          RD_KAFKA_V_KEY(t.id, strlen(t.id)), RD_KAFKA_V_VALUE(cj, strlen(cj)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        0);
    free(cj);
    free(c);
    assert_int_equal(rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_conn),
                                       RD_KAFKA_V_PARTITION(part),
                                       RD_KAFKA_V_KEY(t.id, strlen(t.id)),
                                       RD_KAFKA_V_VALUE(NULL, 0), RD_KAFKA_V_END),
                     0);
    flush_prod();

    g_workers[0] = start_worker(0);
    assert_true(g_workers[0] > 0);
    produce_cb(&h, 0);
    produce_cb(&t, 0);
    produce_cb(&y, 0);
    flush_prod();
    wait_final(&y, 1, 120);
    wait_final(&t, 1, 30);
    cJSON *st = sim_stats();
    int nh = token_requests(st, h.hash), nt = token_requests(st, t.hash),
        ny = token_requests(st, y.hash);
    cJSON_Delete(st);
    fprintf(stderr, "restore rules: held %d, tombstoned %d, plain %d token requests\n", nh, nt, ny);
    assert_int_equal(nh, 0);
    assert_int_equal(nt, 1);
    assert_int_equal(ny, 1);
    assert_string_equal(st_find(t.id, 0)->status, "connected");
    const st_entry *hs = st_find(h.id, 0);
    assert_true(!hs || strcmp(hs->status, "connected") != 0);
}

/* A previous owner paused after sending its offsets but before its records
 * reached the broker (they sat in its producer's queue) commits them when
 * it resumes. The new owner must take its restore's high watermark only
 * after those offsets are stable, or it decides from a store without them.
 * Simulated with a transaction that sends the group's offsets, waits until
 * the worker is assigned, and only then produces X=connected and commits. */
static void test_restore_after_pending_offsets(void **state)
{
    (void)state;
    flow x, y;
    int32_t part = same_partition_pair(&x, &y);
    for (int i = 0; i < MAXW; i++)
        stop_worker(i);

    err_t e = {0};
    char errstr[256], group[300];
    snprintf(group, sizeof group, "%sworker", g_cfg.topic_prefix);
    /* Where the worker stopped: the callbacks partition's end (all read). */
    rd_kafka_conf_t *qc = kafka_conf_consumer(&g_cfg, NULL, &e);
    assert_non_null(qc);
    rd_kafka_t *q = rd_kafka_new(RD_KAFKA_CONSUMER, qc, errstr, sizeof errstr);
    assert_non_null(q);
    int64_t lo = 0, hi = 0;
    assert_int_equal(rd_kafka_query_watermark_offsets(q, g_t_callbacks, part, &lo, &hi, 10000), 0);
    rd_kafka_destroy(q);

    rd_kafka_conf_t *pc = kafka_conf_producer(&g_cfg, "itest-pending-offsets", &e);
    assert_non_null(pc);
    rd_kafka_t *tp = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof errstr);
    assert_non_null(tp);
    assert_null(rd_kafka_init_transactions(tp, 30000));
    assert_null(rd_kafka_begin_transaction(tp));
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(offs, g_t_callbacks, part)->offset = hi;
    rd_kafka_consumer_group_metadata_t *cgm = rd_kafka_consumer_group_metadata_new(group);
    assert_null(rd_kafka_send_offsets_to_transaction(tp, offs, cgm, 30000));
    rd_kafka_consumer_group_metadata_destroy(cgm);
    rd_kafka_topic_partition_list_destroy(offs);

    g_workers[0] = start_worker(0);
    assert_true(g_workers[0] > 0);
    sleep(5); /* assigned, waiting for the pending offsets */

    produce_connected(tp, &x, part, "acct_pending_offsets");
    assert_null(rd_kafka_commit_transaction(tp, 30000));
    rd_kafka_destroy(tp);

    produce_cb(&x, 0); /* a reload of X's callback: X is connected, nothing to send */
    produce_cb(&y, 0);
    flush_prod();
    wait_final(&y, 1, 120);
    wait_final(&x, 1, 10);
    cJSON *st = sim_stats();
    int nx = token_requests(st, x.hash), ny = token_requests(st, y.hash);
    cJSON_Delete(st);
    fprintf(stderr, "pending offsets at assignment: X sent %d times, Y %d\n", nx, ny);
    assert_int_equal(nx, 0);
    assert_int_equal(ny, 1);
    assert_string_equal(st_find(x.id, 0)->status, "connected");
}

/* Connections records to one file, the providers' pause states (same
 * topic, keys "_provider.NAME") to another: each has its own schema. */
static int save_record(const testkafka_record *r, void *ud)
{
    /* The restore test's deliberately cut row is not the worker's: it
     * stays out of the schema check (every other row must validate). */
    if (r->value && strcmp(r->value, UNDECODABLE_ROW) == 0)
        return 0;
    FILE **out = ud;
    int pstate = r->key && strncmp(r->key, RECORDS_PROVIDER_STATE_KEY_PREFIX,
                                   strlen(RECORDS_PROVIDER_STATE_KEY_PREFIX)) == 0;
    if (r->value)
        fprintf(out[pstate], "%s\n", r->value);
    return 0;
}

/* Last: every connections record of the run goes to the schema check. */
/* The last record of key `id` in topic, parsed (NULL when none). */
typedef struct {
    const char *id;
    char *last;
} last_probe;

static int on_last(const testkafka_record *r, void *ud)
{
    last_probe *p = ud;
    if (r->key && r->value && strcmp(r->key, p->id) == 0) {
        free(p->last);
        p->last = strdup(r->value);
    }
    return 0;
}

static cJSON *last_record(const char *topic, const char *id)
{
    last_probe p = {id, NULL};
    err_t e = {0};
    testkafka_read(&g_cfg, topic, 1, 20000, on_last, &p, &e);
    cJSON *o = p.last ? cJSON_Parse(p.last) : NULL;
    free(p.last);
    return o;
}

/* ---- refresh (SPEC §5b) ------------------------------------------------------------- */

/* Produce n refresh.v1 records for id as intakes would (seen_version v). */
static void produce_refresh(const char *id, const char *provider, long v, int n)
{
    for (int i = 0; i < n; i++) {
        records_refresh rr;
        memset(&rr, 0, sizeof rr);
        snprintf(rr.connection_id, sizeof rr.connection_id, "%s", id);
        snprintf(rr.provider, sizeof rr.provider, "%s", provider);
        rr.seen_version = v;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rr.requested_at_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        snprintf(rr.intake_id, sizeof rr.intake_id, "itest-%d", i % 2);
        snprintf(rr.request_id, sizeof rr.request_id, "rr%d", i);
        char *json = records_refresh_encode(&rr, NULL);
        assert_non_null(json);
        assert_int_equal(
            rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_callbacks),
                              RD_KAFKA_V_KEY(id, strlen(id)), RD_KAFKA_V_VALUE(json, strlen(json)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
            0);
        free(json);
    }
    flush_prod();
}

static long num_field(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : -1;
}

static const char *str_field(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* The last connections record of id once `field` reaches at least want
 * (or status is want_status), within timeout_s; NULL otherwise. */
static cJSON *await_conn(const char *id, const char *field, long want, const char *want_status,
                         int timeout_s)
{
    for (int i = 0; i < timeout_s * 4; i++) {
        cJSON *o = last_record(g_t_conn, id);
        if (o && ((field && num_field(o, field) >= want) ||
                  (want_status && strcmp(str_field(o, "status"), want_status) == 0)))
            return o;
        cJSON_Delete(o);
        usleep(250 * 1000);
    }
    return NULL;
}

/* refresh_tokens of a simulator's stats: how many tokens were presented,
 * the most requests any one got, and the sum. */
static void refresh_counts(const char *base, int *tokens, int *max, int *sum)
{
    cJSON *s = sim_stats_at(base);
    *tokens = *max = *sum = 0;
    const cJSON *rt = cJSON_GetObjectItem(s, "refresh_tokens");
    for (const cJSON *it = rt ? rt->child : NULL; it; it = it->next) {
        int n = (int)num_field(it, "requests");
        (*tokens)++;
        *sum += n;
        if (n > *max)
            *max = n;
    }
    cJSON_Delete(s);
}

/* A connected flow on provider (fault: "refresh:F" or NULL); returns its
 * last connections record. */
static cJSON *connect_flow(flow *f, const char *provider, const char *fault)
{
    new_code(f, provider, fault);
    produce_cb(f, 0);
    flush_prod();
    assert_non_null(wait_status(f->id, "connected", NULL, 20));
    cJSON *o = await_conn(f->id, NULL, 0, "connected", 20);
    assert_non_null(o);
    return o;
}

/* 50 concurrent requests (two "intakes") for one stale token: exactly one
 * refresh at the provider, the rotated token replaces the old one in the
 * same record, no status record (nothing public changed); a later refresh
 * sends the NEW refresh token, and the rotated-out one is never sent again
 * (per-token counters at the simulator: every token exactly once). */
static void test_refresh_coalesces_and_rotates(void **state)
{
    (void)state;
    flow f;
    cJSON *c0 = connect_flow(&f, "simr", NULL);
    long v0 = num_field(c0, "version");
    char acc0[CONN_SEALED_TOKEN], ref0[CONN_SEALED_TOKEN];
    snprintf(acc0, sizeof acc0, "%s", str_field(c0, "access_token_sealed"));
    snprintf(ref0, sizeof ref0, "%s", str_field(c0, "refresh_token_sealed"));
    assert_true(ref0[0] != '\0');
    cJSON_Delete(c0);
    st_entry *s0 = wait_status(f.id, "connected", NULL, 5);
    long sv0 = s0->version;
    usleep(2300 * 1000); /* stale: within 60 s of its 62 s lifetime */
    produce_refresh(f.id, "simr", v0, 50);
    cJSON *c1 = await_conn(f.id, "refreshes", 1, NULL, 20);
    assert_non_null(c1);
    assert_string_not_equal(str_field(c1, "access_token_sealed"), acc0);
    assert_string_not_equal(str_field(c1, "refresh_token_sealed"), ref0);
    assert_string_equal(str_field(c1, "status"), "connected");
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(c1, "claimed")));
    assert_true(num_field(c1, "version") > v0);
    cJSON_Delete(c1);
    usleep(1500 * 1000); /* let any stray second refresh show */
    int tokens, max, sum;
    refresh_counts(g_simr.base, &tokens, &max, &sum);
    assert_int_equal(tokens, 1);
    assert_int_equal(max, 1);
    cJSON *c = last_record(g_t_conn, f.id);
    assert_int_equal(num_field(c, "refreshes"), 1);
    cJSON_Delete(c);
    /* No status record for a refresh: the document did not change. */
    read_statuses(0);
    assert_int_equal(st_find(f.id, 0)->version, sv0);

    usleep(2300 * 1000);
    produce_refresh(f.id, "simr", v0 + 1, 3);
    cJSON *c2 = await_conn(f.id, "refreshes", 2, NULL, 20);
    assert_non_null(c2);
    cJSON_Delete(c2);
    usleep(1000 * 1000);
    refresh_counts(g_simr.base, &tokens, &max, &sum);
    assert_int_equal(tokens, 2); /* the first token, then the one it rotated to */
    assert_int_equal(max, 1);    /* neither was ever sent twice */
    cJSON *st = sim_stats_at(g_simr.base);
    assert_int_equal(grants(st, "revoked"), 0); /* no reuse, no family revocation */
    cJSON_Delete(st);
}

/* An unknown outcome (connection cut after the provider rotated) on a
 * rotating provider: exactly one send, then failed / reconnect_required,
 * tokens shredded, the status record marked for connection.refresh_failed. */
static void test_refresh_unknown_outcome_rotating_is_reconnect_required(void **state)
{
    (void)state;
    int t0, m0, s0;
    refresh_counts(g_simr.base, &t0, &m0, &s0);
    flow f;
    cJSON *c0 = connect_flow(&f, "simr", "refresh:cut_after");
    long v0 = num_field(c0, "version");
    cJSON_Delete(c0);
    usleep(2300 * 1000);
    produce_refresh(f.id, "simr", v0, 5);
    st_entry *s = wait_status(f.id, "failed", "reconnect_required", 20);
    assert_non_null(s);
    cJSON *c = last_record(g_t_conn, f.id);
    assert_string_equal(str_field(c, "access_token_sealed"), "");
    assert_string_equal(str_field(c, "refresh_token_sealed"), "");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(c, "refresh_failed")));
    cJSON_Delete(c);
    cJSON *st = last_record(g_t_status, f.id);
    assert_string_equal(str_field(st, "failed_during"), "refresh");
    cJSON_Delete(st);
    usleep(3000 * 1000); /* past a retry's backoff: still one send */
    int t1, m1, s1;
    refresh_counts(g_simr.base, &t1, &m1, &s1);
    assert_int_equal(t1 - t0, 1);
    assert_int_equal(s1 - s0, 1);
}

/* The same fault where refresh tokens are not rotated (Stripe-like): the
 * token is still good, so the unknown outcome is re-sent after a backoff and
 * the connection stays connected. */
static void test_refresh_unknown_outcome_not_rotating_is_resent(void **state)
{
    (void)state;
    flow f;
    cJSON *c0 = connect_flow(&f, "simnr", "refresh:500_after");
    long v0 = num_field(c0, "version");
    cJSON_Delete(c0);
    usleep(2300 * 1000);
    produce_refresh(f.id, "simnr", v0, 5);
    cJSON *c = await_conn(f.id, "refreshes", 1, NULL, 20);
    assert_non_null(c);
    assert_string_equal(str_field(c, "status"), "connected");
    cJSON_Delete(c);
    int tokens, max, sum;
    refresh_counts(g_simnr.base, &tokens, &max, &sum);
    assert_int_equal(tokens, 1);
    assert_int_equal(max, 2); /* the unknown outcome, then its one re-send */
}

/* refresh.v1 records of one key in the callbacks topic. */
typedef struct {
    const char *id;
    int n;
} refresh_probe;

static int on_refresh_record(const testkafka_record *r, void *ud)
{
    refresh_probe *p = ud;
    if (r->key && r->value && strcmp(r->key, p->id) == 0 &&
        strstr(r->value, "\"schema\":\"oauthq.refresh.v1\""))
        p->n++;
    return 0;
}

/* The background refresher (SPEC §5b "refresh_ahead_s"): a connection at a
 * provider that asks for it is renewed by the worker alone — nobody calls
 * the token API, no refresh.v1 record exists for it — before its access
 * token expires, again and again with the token each refresh rotated to:
 * every refresh token is sent exactly once, and the new tokens reach the
 * connections topic. A disconnect ends it. */
static void test_background_refresh_keeps_tokens_fresh(void **state)
{
    (void)state;
    flow f;
    cJSON *c0 = connect_flow(&f, "simbg", NULL);
    long r0 = num_field(c0, "refreshes");
    char acc0[CONN_SEALED_TOKEN], ref0[CONN_SEALED_TOKEN];
    snprintf(acc0, sizeof acc0, "%s", str_field(c0, "access_token_sealed"));
    snprintf(ref0, sizeof ref0, "%s", str_field(c0, "refresh_token_sealed"));
    assert_true(acc0[0] != '\0' && ref0[0] != '\0');
    cJSON_Delete(c0);
    /* Two renewals past what we saw (one every 6 s: 10 s lifetime, 4 s ahead). */
    cJSON *c = await_conn(f.id, "refreshes", r0 + 2, NULL, 30);
    assert_non_null(c);
    assert_string_equal(str_field(c, "status"), "connected");
    assert_string_not_equal(str_field(c, "access_token_sealed"), acc0);
    assert_string_not_equal(str_field(c, "refresh_token_sealed"), ref0);
    assert_true(num_field(c, "tokens_at_ms") > 0);
    if (!cJSON_IsTrue(cJSON_GetObjectItem(c, "claimed"))) { /* else: the next one is under way */
        /* The next renewal is scheduled before the new token expires. */
        long next = num_field(c, "retry_at_ms");
        assert_true(next > num_field(c, "tokens_at_ms"));
        assert_true(next < num_field(c, "tokens_at_ms") + num_field(c, "expires_in") * 1000);
    }
    cJSON_Delete(c);
    refresh_probe p = {f.id, 0};
    err_t e = {0};
    testkafka_read(&g_cfg, g_t_callbacks, 1, 20000, on_refresh_record, &p, &e);
    assert_int_equal(p.n, 0); /* nobody asked */

    /* Stop it: disconnected, nothing left to refresh. */
    records_replay d;
    memset(&d, 0, sizeof d);
    snprintf(d.connection_id, sizeof d.connection_id, "%s", f.id);
    d.requested_at_ms = (int64_t)time(NULL) * 1000;
    snprintf(d.requested_by, sizeof d.requested_by, "itest");
    char *json = records_disconnect_encode(&d, NULL);
    assert_non_null(json);
    assert_int_equal(rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(g_t_callbacks),
                                       RD_KAFKA_V_KEY(f.id, strlen(f.id)),
                                       RD_KAFKA_V_VALUE(json, strlen(json)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    free(json);
    flush_prod();
    assert_non_null(wait_status(f.id, "disconnected", NULL, 30));
    cJSON *fin = await_conn(f.id, NULL, 0, "disconnected", 10);
    assert_non_null(fin);
    long refreshes = num_field(fin, "refreshes");
    cJSON_Delete(fin);
    int tokens, max, sum, tokens2, max2, sum2;
    refresh_counts(g_simbg.base, &tokens, &max, &sum);
    sleep(7); /* past when the next renewal would have been due */
    refresh_counts(g_simbg.base, &tokens2, &max2, &sum2);
    fprintf(stderr, "background refresh: %ld refreshes, %d refresh tokens sent, at most %d times\n",
            refreshes, tokens2, max2);
    assert_int_equal(max2, 1); /* every refresh token exactly once */
    assert_int_equal(sum2, tokens2);
    assert_int_equal(tokens2, tokens); /* none after the disconnect */
    /* One request per refresh (one more if a refresh was in flight when
     * the disconnect settled: its answer is dropped). */
    assert_true(tokens2 >= refreshes && tokens2 <= refreshes + 1);
    cJSON *st = sim_stats_at(g_simbg.base);
    assert_int_equal(grants(st, "revoked"), 0); /* no reuse detected */
    cJSON_Delete(st);
}

/* kill -9 of the worker while a refresh is in flight at a rotating
 * provider (the claim committed, the request sent): the next owner finds
 * the open refresh claim and must not send the refresh token again — the
 * provider may already have rotated it — so the connection ends failed /
 * reconnect_required with exactly one request for that token. */
static void test_refresh_takeover_after_kill9_never_resends(void **state)
{
    (void)state;
    int t0, m0, s0;
    refresh_counts(g_simr.base, &t0, &m0, &s0);
    flow f;
    cJSON *c0 = connect_flow(&f, "simr", "refresh:latency:4000");
    long v0 = num_field(c0, "version");
    cJSON_Delete(c0);
    usleep(2300 * 1000);
    produce_refresh(f.id, "simr", v0, 2);
    /* Wait for the committed claim (the request leaves right after it). */
    cJSON *cl = NULL;
    for (int i = 0; i < 80 && !cl; i++) {
        cJSON *o = last_record(g_t_conn, f.id);
        if (o && cJSON_IsTrue(cJSON_GetObjectItem(o, "claimed")))
            cl = o;
        else
            cJSON_Delete(o);
        if (!cl)
            usleep(100 * 1000);
    }
    assert_non_null(cl);
    cJSON_Delete(cl);
    usleep(300 * 1000); /* in flight at the simulator (4 s) */
    kill(g_workers[0], SIGKILL);
    testproc_stop(g_workers[0], 5000);
    g_workers[0] = start_worker(0);
    assert_true(g_workers[0] > 0);
    g_restarts++;
    st_entry *s = wait_status(f.id, "failed", "reconnect_required", 60);
    assert_non_null(s);
    usleep(5000 * 1000); /* the killed request's answer, and any retry, are over */
    int t1, m1, s1;
    refresh_counts(g_simr.base, &t1, &m1, &s1);
    assert_int_equal(t1 - t0, 1);
    assert_int_equal(s1 - s0, 1); /* one use of the refresh token, never two */
    cJSON *st = last_record(g_t_status, f.id);
    assert_string_equal(str_field(st, "failed_during"), "refresh");
    cJSON_Delete(st);
}

/* The last connections record of id once its refresh claim is resolved (not
 * claimed any more), within timeout_s; NULL otherwise. */
static cJSON *await_unclaimed(const char *id, int timeout_s)
{
    for (int i = 0; i < timeout_s * 4; i++) {
        cJSON *o = last_record(g_t_conn, id);
        if (o && !cJSON_IsTrue(cJSON_GetObjectItem(o, "claimed")))
            return o;
        cJSON_Delete(o);
        usleep(250 * 1000);
    }
    return NULL;
}

/* G1 for a refresh across a zombie (SPEC §5b, §6): two workers; the owner
 * of the key's partition (A, whichever worker exchanged its code) commits
 * the refresh claim and its request reaches a rotating provider, which
 * rotates on arrival and answers 4 s later; A is SIGSTOPped at once and
 * stays stopped past the session timeout until the other worker (B) has
 * taken the partition over and decided the open claim; then A resumes with
 * the answer (the rotated token) waiting in its socket. The refresh token
 * is used once, never twice; the state B committed is the final one (A's
 * late settle appends nothing after it: its transaction is fenced by the
 * group metadata), and versions of the key never regress in the status or
 * connections topic. */
static void test_refresh_takeover_after_sigstop_never_resends(void **state)
{
    (void)state;
    /* An exchange timeout longer than the stop: A's request is still open
     * when it resumes, so it holds a successful answer, not a timeout. */
    for (int i = 0; i < MAXW; i++)
        stop_worker(i);
    setenv("OAUTHQ_EXCHANGE_TIMEOUT_MS", "60000", 1);
    for (int i = 0; i < MAXW; i++) {
        g_workers[i] = start_worker(i);
        assert_true(g_workers[i] > 0);
    }
    sleep(8); /* both in the group */
    int t0, m0, s0;
    refresh_counts(g_simr.base, &t0, &m0, &s0);
    flow f;
    cJSON *c0 = connect_flow(&f, "simr", "refresh:latency:4000");
    long v0 = num_field(c0, "version");
    char owner[32], ref0[CONN_SEALED_TOKEN];
    snprintf(owner, sizeof owner, "%s", str_field(c0, "claimed_by"));
    snprintf(ref0, sizeof ref0, "%s", str_field(c0, "refresh_token_sealed"));
    cJSON_Delete(c0);
    /* The worker that exchanged the code owns the key's partition: A. */
    assert_true(strcmp(owner, "w0") == 0 || strcmp(owner, "w1") == 0);
    int a = owner[1] - '0', b = 1 - a;
    usleep(2300 * 1000); /* stale: within 60 s of its 62 s lifetime */
    produce_refresh(f.id, "simr", v0, 2);
    /* The request reached the simulator (the claim committed before it
     * left): stop A while the answer is still 4 s away. */
    int t1 = t0, m1 = m0, s1 = s0;
    for (int i = 0; i < 400 && s1 == s0; i++) {
        refresh_counts(g_simr.base, &t1, &m1, &s1);
        if (s1 == s0)
            usleep(25 * 1000);
    }
    assert_int_equal(s1 - s0, 1);
    assert_int_equal(kill(g_workers[a], SIGSTOP), 0);
    cJSON *cl = last_record(g_t_conn, f.id);
    assert_non_null(cl);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cl, "claimed")));
    assert_string_equal(str_field(cl, "claimed_by"), owner);
    long vclaim = num_field(cl, "version");
    cJSON_Delete(cl);
    sleep(9); /* past the 6 s session timeout: B takes the partition over */
    /* B's decision on the open claim, committed while A is still stopped. */
    cJSON *d = await_unclaimed(f.id, 45);
    assert_non_null(d);
    long vd = num_field(d, "version");
    char dstatus[16];
    snprintf(dstatus, sizeof dstatus, "%s", str_field(d, "status"));
    fprintf(stderr, "refresh zombie: A=w%d, B=w%d decided %s at version %ld (claim %ld): %s\n", a,
            b, dstatus, vd, vclaim, str_field(d, "last_error"));
    assert_true(vd > vclaim);
    if (strcmp(dstatus, "connected") == 0) {
        /* Only if A's settle had committed before the stop: the rotated token. */
        assert_int_equal(num_field(d, "refreshes"), 1);
        assert_string_not_equal(str_field(d, "refresh_token_sealed"), ref0);
    } else {
        assert_string_equal(dstatus, "failed");
        assert_string_equal(str_field(d, "reason"), "reconnect_required");
        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(d, "refresh_failed")));
        assert_string_equal(str_field(d, "refresh_token_sealed"), "");
        cJSON *st = last_record(g_t_status, f.id);
        assert_string_equal(str_field(st, "status"), "failed");
        assert_string_equal(str_field(st, "failed_during"), "refresh");
        cJSON_Delete(st);
    }
    cJSON_Delete(d);
    assert_int_equal(kill(g_workers[a], SIGCONT), 0);
    sleep(6); /* A settles the answer it holds, is fenced, rejoins, maybe owns the key again */
    int t2, m2, s2;
    refresh_counts(g_simr.base, &t2, &m2, &s2);
    assert_int_equal(t2 - t0, 1);
    assert_int_equal(s2 - s0, 1); /* one use of the refresh token, never two */
    cJSON *fin = last_record(g_t_conn, f.id);
    assert_non_null(fin);
    if (num_field(fin, "version") != vd)
        fprintf(stderr, "refresh zombie: a record after B's decision: version %ld status %s\n",
                num_field(fin, "version"), str_field(fin, "status"));
    assert_int_equal(num_field(fin, "version"), vd); /* nothing appended after B's decision */
    assert_string_equal(str_field(fin, "status"), dstatus);
    cJSON_Delete(fin);
    assert_int_equal(version_regressions(g_t_status, &f, 1), 0);
    assert_int_equal(version_regressions(g_t_conn, &f, 1), 0);
    for (int i = 0; i < MAXW; i++)
        stop_worker(i);
    setenv("OAUTHQ_EXCHANGE_TIMEOUT_MS", "1500", 1);
    g_workers[0] = start_worker(0);
    assert_true(g_workers[0] > 0);
}

/* A worker stopped past its session timeout while a request hangs, then
 * given the same partition back (it is the only member): the request that
 * was in flight across the revocation is an orphan, and the returning
 * assignment must start from the committed state — the open claim is
 * resolved as an unknown outcome and re-sent after the hold — never stay
 * shadowed by the orphan's stale state (found by the chaos run: the
 * acknowledged callback never reached a final status). */
static void test_partition_back_after_pause_finishes_orphaned_claim(void **state)
{
    (void)state;
    stop_worker(0);
    setenv("OAUTHQ_EXCHANGE_TIMEOUT_MS", "15000", 1); /* the request outlives the pause */
    g_workers[0] = start_worker(0);
    assert_true(g_workers[0] > 0);
    flow f;
    new_code(&f, "sim", "hang");
    produce_cb(&f, 0);
    flush_prod();
    /* Wait for the committed claim, then stop the worker with it in flight. */
    int claimed = 0;
    for (int i = 0; i < 150 && !claimed; i++) {
        cJSON *o = last_record(g_t_conn, f.id);
        claimed = o && cJSON_IsTrue(cJSON_GetObjectItem(o, "claimed"));
        cJSON_Delete(o);
        if (!claimed)
            usleep(100 * 1000);
    }
    assert_true(claimed);
    assert_int_equal(kill(g_workers[0], SIGSTOP), 0);
    sleep(9); /* past the 6 s session timeout: the group drops it */
    assert_int_equal(kill(g_workers[0], SIGCONT), 0);
    st_entry *e = NULL;
    for (int i = 0; i < 90 && !e; i++) { /* bounded: hold 15 s + lease + margin */
        read_statuses(0);
        st_entry *s = st_find(f.id, 0);
        if (s && is_final(s))
            e = s;
        else
            sleep(1);
    }
    assert_non_null(e);
    conn_probe p = {f.id, 0, -1, 0};
    err_t e2 = {0};
    testkafka_read(&g_cfg, g_t_conn, 0, 20000, on_conn, &p, &e2);
    cJSON *st = sim_stats();
    int n = token_requests(st, f.hash);
    cJSON_Delete(st);
    assert_true(n >= 1);
    assert_true(n - 1 <= p.unknown); /* any re-send follows a counted unknown outcome */
    stop_worker(0);
    setenv("OAUTHQ_EXCHANGE_TIMEOUT_MS", "1500", 1);
    g_workers[0] = start_worker(0);
    assert_true(g_workers[0] > 0);
}

/* SPEC §4a: the platform's end_user/organization/tags of a session flow
 * travel from the callback record into the connection and status records
 * (and survive a later callback without them). */
static void test_metadata_travels(void **state)
{
    (void)state;
    flow f;
    new_code(&f, "sim", NULL);
    g_meta = "{\"end_user\":{\"id\":\"u_77\",\"email\":\"u77@example.com\",\"display_name\":null},"
             "\"organization\":{\"id\":\"org_9\",\"display_name\":\"Nine\"},"
             "\"tags\":{\"plan\":\"pro\"}}";
    produce_cb(&f, 0);
    g_meta = NULL;
    produce_cb(&f, 0); /* a duplicate without metadata changes nothing */
    flush_prod();
    wait_final(&f, 1, 60);
    const char *topics[] = {g_t_status, g_t_conn};
    for (int i = 0; i < 2; i++) {
        cJSON *o = last_record(topics[i], f.id);
        assert_non_null(o);
        const cJSON *eu = cJSON_GetObjectItem(o, "end_user");
        const cJSON *org = cJSON_GetObjectItem(o, "organization");
        const cJSON *tags = cJSON_GetObjectItem(o, "tags");
        assert_string_equal(cJSON_GetObjectItem(eu, "id")->valuestring, "u_77");
        assert_string_equal(cJSON_GetObjectItem(eu, "email")->valuestring, "u77@example.com");
        assert_string_equal(cJSON_GetObjectItem(org, "id")->valuestring, "org_9");
        assert_string_equal(cJSON_GetObjectItem(tags, "plan")->valuestring, "pro");
        assert_string_equal(cJSON_GetObjectItem(o, "status")->valuestring, "connected");
        cJSON_Delete(o);
    }
}

/* Last: every connections record of the run goes to the schema check. */
static void test_save_connection_records(void **state)
{
    (void)state;
    FILE *out[2] = {fopen("var/test-logs/connection-records.jsonl", "a"),
                    fopen("var/test-logs/provider-state-records.jsonl", "a")};
    assert_non_null(out[0]);
    assert_non_null(out[1]);
    err_t e = {0};
    long n = testkafka_read(&g_cfg, g_t_conn, 1, 30000, save_record, out, &e);
    fclose(out[0]);
    fclose(out[1]);
    assert_true(n > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_storm_one_request_per_code),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_malformed_record_goes_to_dlq_and_partition_flows),
        cmocka_unit_test(test_answered_code_not_exchanged_after_error_callback),
        cmocka_unit_test(test_changed_partition_count_is_refused),
        cmocka_unit_test(test_invalid_client_holds_until_fixed),
        cmocka_unit_test(test_manual_pause_and_resume),
        cmocka_unit_test(test_pause_survives_restart),
        cmocka_unit_test(test_invalid_client_probes_one_code),
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_disconnect),
        cmocka_unit_test(test_crash_kill9_repeatedly),
        cmocka_unit_test(test_hanging_request_delays_only_its_connection),
        cmocka_unit_test(test_rebalance_survivor_finishes),
        cmocka_unit_test(test_zombie_paused_worker),
        cmocka_unit_test(test_restore_waits_for_open_transaction),
        cmocka_unit_test(test_restore_after_pending_offsets),
        cmocka_unit_test(test_restore_holds_unreadable_and_applies_tombstones),
        cmocka_unit_test(test_refresh_coalesces_and_rotates),
        cmocka_unit_test(test_refresh_unknown_outcome_rotating_is_reconnect_required),
        cmocka_unit_test(test_refresh_unknown_outcome_not_rotating_is_resent),
        cmocka_unit_test(test_background_refresh_keeps_tokens_fresh),
        cmocka_unit_test(test_refresh_takeover_after_kill9_never_resends),
        cmocka_unit_test(test_refresh_takeover_after_sigstop_never_resends),
        cmocka_unit_test(test_partition_back_after_pause_finishes_orphaned_claim),
        cmocka_unit_test(test_metadata_travels),
        cmocka_unit_test(test_save_connection_records),
    };
    /* OAUTHQ_TEST_FILTER=pattern runs only the matching tests (debugging). */
    if (getenv("OAUTHQ_TEST_FILTER"))
        cmocka_set_test_filter(getenv("OAUTHQ_TEST_FILTER"));
    return cmocka_run_group_tests_name("integration_worker", tests, setup, teardown);
}
