/*
 * Integration: the oauthqctl binary against the real broker, with its own
 * topic prefix. The binary is run from $OAUTHQ_BUILD (default build) with
 * popen; its --json output is parsed and checked field by field, and every
 * output is searched for the secrets the records carry.
 *
 *  topics: create, then describe --json shows the five topics and no drift
 *          (exit 0); a larger OAUTHQ_TOPIC_PARTITIONS is drift (exit 2).
 *  status: the highest version of a connections.v1 record wins; sealed
 *          fields print only "sealed"/"none"; unknown id exits 2; an
 *          unreachable broker exits 1.
 *  dlq:    list never prints `original`; --reason filters; show redacts
 *          the code inside `original` (JSON and truncated).
 *  replay: replay ID produces replay.v1 records records_replay_decode
 *          accepts; replay --dlq --dry-run produces nothing; replay --dlq
 *          re-produces the original bytes unchanged under the same key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>

#include "common/clock.h"
#include "common/config.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/records.h"
#include "tests/support/testfix.h"
#include "tests/support/testkafka.h"
#include "common/conn.h"

#define OUT_MAX (1 << 20)

static char g_build[TESTFIX_PATH_MAX];
static char g_t_callbacks[256], g_t_conn[256], g_t_dlq[256];
static char g_id[64], g_dlq_id[64], g_dlq_bad_id[64];
static config_t g_cfg;
static rd_kafka_t *g_prod;
static char *g_out;
static char *g_dlq_original; /* the callback record put in the DLQ */

#define CODE_SECRET     "ac_ITESTcodeSECRETvalue42"
#define VERIFIER_SECRET "ITESTverifierSECRETdBjftJeZ4CVP"

/* Run "[env] oauthqctl ARGS" (args are fixed test strings), stdout into
 * g_out; returns the exit code. */
static int ctl(const char *env, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s/oauthqctl %s 2>>var/test-logs/itest_ctl-stderr.log",
             env ? env : "", g_build, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(g_out, 1, OUT_MAX - 1, p);
    g_out[n] = '\0';
    int st = pclose(p);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void no_secrets(const char *text)
{
    if (strstr(text, CODE_SECRET) || strstr(text, VERIFIER_SECRET) || strstr(text, "SEALED") ||
        strstr(text, "v1.d1."))
        fail_msg("secret printed:\n%s", text);
}

static void produce(const char *topic, const char *key, const char *value)
{
    rd_kafka_resp_err_t err =
        rd_kafka_producev(g_prod, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                          RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    assert_int_equal(err, 0);
    assert_int_equal(rd_kafka_flush(g_prod, 20000), 0);
}

static int setup(void **state)
{
    (void)state;
    if (testfix_build(g_build, sizeof g_build) < 0 || testfix_test_logs() < 0)
        return -1;
    testfix_topic_prefix("ctl", NULL, 0);
    setenv("OAUTHQ_TOPIC_PARTITIONS", "3", 1);
    setenv("OAUTHQ_TOPIC_REPLICATION", "1", 1);
    setenv("OAUTHQ_LOG_FORMAT", "text", 1);
    setenv("OAUTHQ_LOG_LEVEL", "warn", 1);
    unsetenv("USER");
    err_t e = {0};
    if (config_load(&g_cfg, NULL, &e) < 0) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    log_init("itest", "warn", "text", &e);
    config_topic(&g_cfg, KAFKA_TOPIC_CALLBACKS, g_t_callbacks, sizeof g_t_callbacks, &e);
    config_topic(&g_cfg, KAFKA_TOPIC_CONNECTIONS, g_t_conn, sizeof g_t_conn, &e);
    config_topic(&g_cfg, KAFKA_TOPIC_DLQ, g_t_dlq, sizeof g_t_dlq, &e);
    snprintf(g_id, sizeof g_id, "conn-ctl-%ld-1", (long)getpid());
    snprintf(g_dlq_id, sizeof g_dlq_id, "conn-ctl-%ld-dlq", (long)getpid());
    snprintf(g_dlq_bad_id, sizeof g_dlq_bad_id, "conn-ctl-%ld-bad", (long)getpid());
    g_out = malloc(OUT_MAX);
    char errstr[256];
    rd_kafka_conf_t *pc = kafka_conf_producer(&g_cfg, NULL, &e);
    g_prod = pc ? rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof errstr) : NULL;
    return g_out && g_prod ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (g_prod)
        rd_kafka_destroy(g_prod);
    free(g_out);
    free(g_dlq_original);
    return 0;
}

static const cJSON *get(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v)
        fail_msg("field %s missing", k);
    return v;
}

static void test_topics_create_and_describe(void **state)
{
    (void)state;
    assert_int_equal(ctl(NULL, "topics create"), 0);
    assert_int_equal(ctl(NULL, "topics describe --json"), 0);
    cJSON *doc = cJSON_Parse(g_out);
    assert_non_null(doc);
    assert_int_equal(cJSON_GetArraySize(get(doc, "drift")), 0);
    const cJSON *ts = get(doc, "topics");
    assert_int_equal(cJSON_GetArraySize(ts), 5);
    const char *policy[] = {"delete", "compact", "compact", "delete", "compact"};
    const char *suffix[] = {"callbacks", "connections", "status", "dlq", "webhooks"};
    for (int i = 0; i < 5; i++) {
        const cJSON *t = cJSON_GetArrayItem(ts, i);
        assert_string_equal(get(t, "topic")->valuestring, suffix[i]);
        assert_true(cJSON_IsTrue(get(t, "exists")));
        assert_int_equal((int)get(t, "partitions")->valuedouble, 3);
        assert_int_equal((int)get(t, "replication")->valuedouble, 1);
        assert_string_equal(get(t, "cleanup_policy")->valuestring, policy[i]);
        assert_int_equal((int)get(t, "min_insync_replicas")->valuedouble, 1);
    }
    assert_true(get(cJSON_GetArrayItem(ts, 3), "retention_ms")->valuedouble >= 1209600000.0);
    cJSON_Delete(doc);
    /* The human table names every topic. */
    assert_int_equal(ctl(NULL, "topics describe"), 0);
    assert_non_null(strstr(g_out, "no drift"));
    /* Configured for fewer partitions than exist (partitions were added):
     * keys route over the configured count, drift on the three keyed topics. */
    assert_int_equal(ctl("OAUTHQ_TOPIC_PARTITIONS=2", "topics describe --json"), 2);
    assert_non_null(strstr(g_out, "partitions_above_config"));
    /* Configured for more partitions than exist: drift, exit 2. */
    assert_int_equal(ctl("OAUTHQ_TOPIC_PARTITIONS=6", "topics describe --json"), 2);
    doc = cJSON_Parse(g_out);
    assert_non_null(doc);
    const cJSON *dr = get(doc, "drift");
    assert_int_equal(cJSON_GetArraySize(dr), 5);
    assert_string_equal(get(cJSON_GetArrayItem(dr, 0), "kind")->valuestring,
                        "partitions_below_config");
    cJSON_Delete(doc);
}

static void produce_conn(int64_t version, const char *last_error)
{
    conn_t *c = calloc(1, sizeof *c);
    assert_non_null(c);
    conn_init(c, g_id, "sim", clock_wall_ms() - 5000);
    c->status = CONN_PENDING;
    c->phase = PHASE_RETRYING;
    c->version = version;
    c->updated_at_ms = clock_wall_ms();
    snprintf(c->code_hash, sizeof c->code_hash, "%s",
             "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90");
    snprintf(c->code_sealed, sizeof c->code_sealed, "v1.d1.CODESEALEDxxxx");
    snprintf(c->verifier_sealed, sizeof c->verifier_sealed, "v1.d1.VERIFIERSEALEDxxxx");
    snprintf(c->access_sealed, sizeof c->access_sealed, "v1.d1.ACCESSSEALEDxxxx");
    snprintf(c->refresh_sealed, sizeof c->refresh_sealed, "v1.d1.REFRESHSEALEDxxxx");
    c->received_at_ms = clock_wall_ms() - 4000;
    c->deadline_ms = c->received_at_ms + 300000;
    c->attempts = (int)version;
    c->unknown_outcomes = 1;
    c->claimed = 1;
    c->retry_at_ms = clock_wall_ms() + 2000;
    snprintf(c->last_error, sizeof c->last_error, "%s", last_error);
    c->ignored_codes = 2;
    snprintf(c->account_id, sizeof c->account_id, "acct_itest");
    char *json = conn_encode(c, NULL);
    assert_non_null(json);
    produce(g_t_conn, g_id, json);
    free(json);
    free(c);
}

static void test_status_latest_version_no_secrets(void **state)
{
    (void)state;
    produce_conn(1, "http 503");
    produce_conn(3, "timeout");
    produce_conn(2, "stale"); /* a lower version written later never wins */
    char args[128];
    snprintf(args, sizeof args, "status %s --json", g_id);
    assert_int_equal(ctl(NULL, args), 0);
    no_secrets(g_out);
    cJSON *doc = cJSON_Parse(g_out);
    assert_non_null(doc);
    assert_string_equal(get(doc, "id")->valuestring, g_id);
    assert_string_equal(get(doc, "provider")->valuestring, "sim");
    assert_string_equal(get(doc, "status")->valuestring, "pending");
    assert_string_equal(get(doc, "phase")->valuestring, "retrying");
    assert_true(cJSON_IsNull(get(doc, "reason")));
    assert_int_equal((int)get(doc, "version")->valuedouble, 3);
    assert_int_equal((int)get(doc, "attempts")->valuedouble, 3);
    assert_int_equal((int)get(doc, "unknown_outcomes")->valuedouble, 1);
    assert_true(cJSON_IsTrue(get(doc, "claimed")));
    assert_true(cJSON_IsString(get(doc, "retry_at")));
    assert_true(cJSON_IsString(get(doc, "deadline")));
    assert_true(cJSON_IsString(get(doc, "updated_at")));
    assert_string_equal(get(doc, "last_error")->valuestring, "timeout");
    assert_string_equal(get(doc, "code_sha256_prefix")->valuestring, "a1b2c3d4e5f6");
    assert_int_equal((int)get(doc, "ignored_codes")->valuedouble, 2);
    assert_string_equal(get(doc, "account_id")->valuestring, "acct_itest");
    assert_string_equal(get(doc, "code_sealed")->valuestring, "sealed");
    assert_string_equal(get(doc, "verifier_sealed")->valuestring, "sealed");
    assert_string_equal(get(doc, "access_token_sealed")->valuestring, "sealed");
    assert_string_equal(get(doc, "refresh_token_sealed")->valuestring, "sealed");
    cJSON_Delete(doc);
    snprintf(args, sizeof args, "status %s", g_id);
    assert_int_equal(ctl(NULL, args), 0);
    no_secrets(g_out);
    assert_non_null(strstr(g_out, "a1b2c3d4e5f6"));
    assert_int_equal(ctl(NULL, "status no-such-connection --json"), 2);
    assert_int_equal(ctl(NULL, "status"), 2);
    assert_int_equal(ctl(NULL, "status --bogus x"), 2);
    assert_int_equal(
        ctl("OAUTHQ_KAFKA_BOOTSTRAP=127.0.0.1:1 OAUTHQ_KAFKA_TIMEOUT_MS=1500", "status x"), 1);
    assert_int_equal(ctl("OAUTHQ_TOPIC_PARTITIONS=zero", "status x"), 3);
}

static void test_dlq_list_and_show_redact(void **state)
{
    (void)state;
    records_callback rc;
    memset(&rc, 0, sizeof rc);
    snprintf(rc.connection_id, sizeof rc.connection_id, "%s", g_dlq_id);
    snprintf(rc.provider, sizeof rc.provider, "sim");
    rc.kind = RECORDS_CB_CODE;
    snprintf(rc.code, sizeof rc.code, "%s", CODE_SECRET);
    snprintf(rc.code_verifier, sizeof rc.code_verifier, "%s", VERIFIER_SECRET);
    rc.received_at_ms = clock_wall_ms();
    snprintf(rc.intake_id, sizeof rc.intake_id, "itest");
    snprintf(rc.request_id, sizeof rc.request_id, "r1");
    g_dlq_original = records_callback_encode(&rc, NULL);
    assert_non_null(g_dlq_original);
    char *d1 =
        conn_dlq_json("malformed record: itest", g_t_callbacks, 0, 5, g_dlq_id, strlen(g_dlq_id),
                      g_dlq_original, strlen(g_dlq_original), 1, NULL, NULL, clock_wall_ms(), NULL);
    assert_non_null(d1);
    produce(g_t_dlq, g_dlq_id, d1);
    free(d1);
    /* A truncated original (not JSON) that still holds the code. */
    char trunc[64];
    snprintf(trunc, sizeof trunc, "{\"code\":\"%s", CODE_SECRET);
    char *d2 =
        conn_dlq_json("unparseable: itest", g_t_callbacks, 1, 9, g_dlq_bad_id, strlen(g_dlq_bad_id),
                      trunc, strlen(trunc), 1, NULL, NULL, clock_wall_ms(), NULL);
    produce(g_t_dlq, g_dlq_bad_id, d2);
    free(d2);

    assert_int_equal(ctl(NULL, "dlq list --json"), 0);
    no_secrets(g_out);
    assert_null(strstr(g_out, "\"original\""));
    cJSON *doc = cJSON_Parse(g_out);
    assert_non_null(doc);
    assert_int_equal((int)get(doc, "count")->valuedouble, 2);
    const cJSON *recs = get(doc, "records");
    int32_t part[2] = {-1, -1};
    long off[2] = {-1, -1};
    for (int i = 0; i < 2; i++) {
        const cJSON *r = cJSON_GetArrayItem(recs, i);
        int which = strcmp(get(r, "key")->valuestring, g_dlq_id) == 0 ? 0 : 1;
        part[which] = (int32_t)get(r, "partition")->valuedouble;
        off[which] = (long)get(r, "offset")->valuedouble;
        assert_true(cJSON_IsString(get(r, "at")));
        assert_true(cJSON_IsString(get(r, "reason")));
    }
    assert_true(part[0] >= 0 && part[1] >= 0);
    cJSON_Delete(doc);

    assert_int_equal(ctl(NULL, "dlq list --reason malformed --json"), 0);
    doc = cJSON_Parse(g_out);
    assert_int_equal((int)get(doc, "count")->valuedouble, 1);
    cJSON_Delete(doc);
    assert_int_equal(ctl(NULL, "dlq list --since 2h --limit 1 --json"), 0);
    doc = cJSON_Parse(g_out);
    assert_int_equal((int)get(doc, "count")->valuedouble, 1);
    assert_true(cJSON_IsTrue(get(doc, "limit_reached")));
    cJSON_Delete(doc);
    assert_int_equal(ctl(NULL, "dlq list --since 2099-01-01T00:00:00Z --json"), 0);
    doc = cJSON_Parse(g_out);
    assert_int_equal((int)get(doc, "count")->valuedouble, 0);
    cJSON_Delete(doc);
    assert_int_equal(ctl(NULL, "dlq list"), 0);
    no_secrets(g_out);
    assert_non_null(strstr(g_out, g_dlq_id));

    char args[128];
    snprintf(args, sizeof args, "dlq show %d:%ld --json", part[0], off[0]);
    assert_int_equal(ctl(NULL, args), 0);
    no_secrets(g_out);
    doc = cJSON_Parse(g_out);
    assert_non_null(doc);
    const char *orig = get(doc, "original")->valuestring;
    assert_non_null(strstr(orig, "\"code\":\"[REDACTED]\""));
    assert_non_null(strstr(orig, "\"code_verifier\":\"[REDACTED]\""));
    assert_non_null(strstr(orig, g_dlq_id));
    assert_string_equal(get(doc, "reason")->valuestring, "malformed record: itest");
    assert_string_equal(get(doc, "source_topic")->valuestring, g_t_callbacks);
    assert_int_equal((int)get(doc, "dlq_offset")->valuedouble, (int)off[0]);
    cJSON_Delete(doc);
    snprintf(args, sizeof args, "dlq show %d:%ld", part[1], off[1]);
    assert_int_equal(ctl(NULL, args), 0);
    no_secrets(g_out);
    assert_non_null(strstr(g_out, "[REDACTED]"));
    snprintf(args, sizeof args, "dlq show %d:%ld", part[0], off[0] + 1000);
    assert_int_equal(ctl(NULL, args), 2);
    assert_int_equal(ctl(NULL, "dlq show nonsense"), 2);
}

typedef struct {
    const char *key;
    int replays;   /* replay.v1 records decoded for key */
    int originals; /* records equal to g_dlq_original */
    char by[RECORDS_ID_MAX], reason[RECORDS_TEXT_MAX + 1];
} cb_probe;

static int on_callback(const testkafka_record *r, void *ud)
{
    cb_probe *p = ud;
    if (!r->key || !r->value || strcmp(r->key, p->key) != 0)
        return 0;
    records_replay rr;
    err_t e = {0};
    if (records_replay_decode(r->value, r->value_len, &rr, &e) == 0) {
        assert_string_equal(rr.connection_id, p->key);
        snprintf(p->by, sizeof p->by, "%s", rr.requested_by);
        snprintf(p->reason, sizeof p->reason, "%s", rr.reason);
        p->replays++;
    } else if (g_dlq_original && r->value_len == strlen(g_dlq_original) &&
               memcmp(r->value, g_dlq_original, r->value_len) == 0) {
        p->originals++;
    }
    return 0;
}

static cb_probe read_callbacks(const char *key, long min)
{
    cb_probe p = {key, 0, 0, "", ""};
    err_t e = {0};
    assert_true(testkafka_read(&g_cfg, g_t_callbacks, min, 20000, on_callback, &p, &e) >= 0);
    return p;
}

static void test_replay_ids(void **state)
{
    (void)state;
    char args[256];
    snprintf(args, sizeof args, "replay %s %s-b --reason 'itest replay' --json", g_id, g_id);
    assert_int_equal(ctl(NULL, args), 0);
    cJSON *doc = cJSON_Parse(g_out);
    assert_non_null(doc);
    const cJSON *rs = get(doc, "replays");
    assert_int_equal(cJSON_GetArraySize(rs), 2);
    const cJSON *r0 = cJSON_GetArrayItem(rs, 0);
    assert_string_equal(get(r0, "result")->valuestring, "sent");
    assert_string_equal(get(get(r0, "record"), "schema")->valuestring, "oauthq.replay.v1");
    cJSON_Delete(doc);
    cb_probe p = read_callbacks(g_id, 2);
    assert_int_equal(p.replays, 1);
    assert_string_equal(p.by, "oauthqctl");
    assert_string_equal(p.reason, "itest replay");
    assert_int_equal(ctl(NULL, "replay"), 2);
    assert_int_equal(ctl(NULL, "replay 'bad id'"), 2);
    assert_int_equal(ctl(NULL, "replay x --dry-run"), 2);
}

static void test_replay_dlq(void **state)
{
    (void)state;
    assert_int_equal(ctl(NULL, "replay --dlq --dry-run --json"), 0);
    no_secrets(g_out);
    cJSON *doc = cJSON_Parse(g_out);
    assert_non_null(doc);
    assert_true(cJSON_IsTrue(get(doc, "dry_run")));
    assert_int_equal((int)get(doc, "matched")->valuedouble, 2);
    assert_int_equal((int)get(doc, "would_replay")->valuedouble, 1);
    assert_int_equal((int)get(doc, "skipped")->valuedouble, 1);
    cJSON_Delete(doc);
    assert_int_equal(ctl(NULL, "replay --dlq --dry-run"), 0);
    no_secrets(g_out);
    assert_non_null(strstr(g_out, "would_replay"));
    /* Nothing was produced. */
    cb_probe p = read_callbacks(g_dlq_id, 0);
    assert_int_equal(p.originals, 0);

    assert_int_equal(ctl(NULL, "replay --dlq --reason malformed --json"), 0);
    no_secrets(g_out);
    doc = cJSON_Parse(g_out);
    assert_non_null(doc);
    assert_int_equal((int)get(doc, "replayed")->valuedouble, 1);
    const cJSON *r0 = cJSON_GetArrayItem(get(doc, "records"), 0);
    assert_string_equal(get(r0, "result")->valuestring, "sent");
    assert_string_equal(get(r0, "key")->valuestring, g_dlq_id);
    assert_string_equal(get(r0, "schema")->valuestring, "oauthq.callback.v1");
    cJSON_Delete(doc);
    p = read_callbacks(g_dlq_id, 3);
    assert_int_equal(p.originals, 1);
    assert_int_equal(ctl(NULL, "replay --dlq x"), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topics_create_and_describe),
        cmocka_unit_test(test_status_latest_version_no_secrets),
        cmocka_unit_test(test_dlq_list_and_show_redact),
        cmocka_unit_test(test_replay_ids),
        cmocka_unit_test(test_replay_dlq),
    };
    return cmocka_run_group_tests_name("integration_ctl", tests, setup, teardown);
}
