/*
 * Integration: the Kafka foundation against the real local broker.
 * Needs OAUTHQ_KAFKA_BOOTSTRAP (scripts/run-tests starts the broker).
 * Each run uses its own topic prefix so reruns never see old records.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/kafka.h"
#include "common/log.h"
#include "tests/support/testkafka.h"

static config_t cfg;

static int setup(void **state)
{
    (void)state;
    err_t e = {0};
    if (config_load(&cfg, NULL, &e) < 0) {
        fprintf(stderr, "config: %s\n", e.msg);
        return -1;
    }
    snprintf(cfg.topic_prefix, sizeof cfg.topic_prefix, "itest%ld-%ld.", (long)getpid(),
             (long)time(NULL));
    cfg.topic_partitions = 3;
    log_init("itest", "warn", "text", &e);
    return 0;
}

static void topic(const char *suffix, char *out, size_t cap)
{
    err_t e = {0};
    assert_int_equal(config_topic(&cfg, suffix, out, cap, &e), 0);
}

/* DescribeConfigs: value of one config of one topic. */
static void topic_config(const char *name, const char *key, char *out, size_t cap)
{
    err_t e = {0};
    char errstr[256];
    out[0] = '\0';
    rd_kafka_conf_t *conf = kafka_conf_admin(&cfg, &e);
    assert_non_null(conf);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name);
    rd_kafka_DescribeConfigs(rk, &res, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 10000);
    assert_non_null(ev);
    assert_int_equal(rd_kafka_event_error(ev), 0);
    size_t nres = 0;
    const rd_kafka_ConfigResource_t **rs =
        rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &nres);
    assert_int_equal(nres, 1);
    size_t ncfg = 0;
    const rd_kafka_ConfigEntry_t **ents = rd_kafka_ConfigResource_configs(rs[0], &ncfg);
    for (size_t i = 0; i < ncfg; i++)
        if (strcmp(rd_kafka_ConfigEntry_name(ents[i]), key) == 0 &&
            rd_kafka_ConfigEntry_value(ents[i]))
            snprintf(out, cap, "%s", rd_kafka_ConfigEntry_value(ents[i]));
    rd_kafka_event_destroy(ev);
    rd_kafka_ConfigResource_destroy(res);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

static void test_topics_created_idempotently(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(kafka_topics_ensure(&cfg, &e), 0);
    /* A second run finds them all existing and is still fine. */
    assert_int_equal(kafka_topics_ensure(&cfg, &e), 0);
    char name[256], val[64];
    topic(KAFKA_TOPIC_CONNECTIONS, name, sizeof name);
    topic_config(name, "cleanup.policy", val, sizeof val);
    assert_string_equal(val, "compact");
    topic(KAFKA_TOPIC_STATUS, name, sizeof name);
    topic_config(name, "cleanup.policy", val, sizeof val);
    assert_string_equal(val, "compact");
    topic(KAFKA_TOPIC_CALLBACKS, name, sizeof name);
    topic_config(name, "cleanup.policy", val, sizeof val);
    assert_string_equal(val, "delete");
    topic_config(name, "retention.ms", val, sizeof val);
    assert_true(atol(val) >= 7L * 24 * 3600 * 1000);
    topic(KAFKA_TOPIC_DLQ, name, sizeof name);
    topic_config(name, "retention.ms", val, sizeof val);
    assert_true(atol(val) >= 14L * 24 * 3600 * 1000);
}

typedef struct {
    int reports;
    rd_kafka_resp_err_t err;
} dr_state;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    dr_state *s = opaque;
    s->reports++;
    s->err = m->err;
}

typedef struct {
    const char *want_key;
    int found, other;
    char value[256];
} find_state;

static int find_key(const testkafka_record *r, void *ud)
{
    find_state *f = ud;
    if (r->key && strcmp(r->key, f->want_key) == 0) {
        f->found++;
        snprintf(f->value, sizeof f->value, "%s", r->value ? r->value : "");
    } else {
        f->other++;
    }
    return 0;
}

static void test_idempotent_produce_then_read_committed(void **state)
{
    (void)state;
    err_t e = {0};
    char errstr[256], name[256];
    topic(KAFKA_TOPIC_CALLBACKS, name, sizeof name);
    dr_state dr = {0, 0};
    rd_kafka_conf_t *conf = kafka_conf_producer(&cfg, NULL, &e);
    assert_non_null(conf);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, &dr);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(p);
    const char *key = "conn-abc";
    const char *val = "{\"schema\":\"test.v1\",\"n\":1}";
    assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(name), RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE((void *)val, strlen(val)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    for (int i = 0; i < 100 && dr.reports == 0; i++)
        rd_kafka_poll(p, 100);
    assert_int_equal(dr.reports, 1);
    assert_int_equal(dr.err, 0);
    assert_int_equal(rd_kafka_flush(p, 5000), 0);
    rd_kafka_destroy(p);

    find_state f = {key, 0, 0, ""};
    long n = testkafka_read(&cfg, name, 1, 15000, find_key, &f, &e);
    assert_true(n >= 1);
    assert_int_equal(f.found, 1);
    assert_string_equal(f.value, val);
}

static void txn_ok(rd_kafka_error_t *err)
{
    if (err) {
        fprintf(stderr, "txn error: %s\n", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
        fail();
    }
}

/* The consumer config must be read_committed: an aborted transaction's
 * record is never seen, a committed one is. */
static void test_read_committed_hides_aborted(void **state)
{
    (void)state;
    err_t e = {0};
    char errstr[256], name[256], txnid[96];
    topic(KAFKA_TOPIC_STATUS, name, sizeof name);
    snprintf(txnid, sizeof txnid, "%stxn-test", cfg.topic_prefix);
    rd_kafka_conf_t *conf = kafka_conf_producer(&cfg, txnid, &e);
    assert_non_null(conf);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(p);
    txn_ok(rd_kafka_init_transactions(p, 30000));

    txn_ok(rd_kafka_begin_transaction(p));
    assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(name), RD_KAFKA_V_KEY("k-aborted", 9),
                                       RD_KAFKA_V_VALUE("aborted", 7),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    assert_int_equal(rd_kafka_flush(p, 10000), 0);
    txn_ok(rd_kafka_abort_transaction(p, 10000));

    txn_ok(rd_kafka_begin_transaction(p));
    assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(name), RD_KAFKA_V_KEY("k-committed", 11),
                                       RD_KAFKA_V_VALUE("committed", 9),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    txn_ok(rd_kafka_commit_transaction(p, 10000));
    rd_kafka_destroy(p);

    find_state f = {"k-committed", 0, 0, ""};
    long n = testkafka_read(&cfg, name, 1, 15000, find_key, &f, &e);
    assert_int_equal(n, 1); /* exactly the committed record, not the aborted one */
    assert_int_equal(f.found, 1);
    assert_int_equal(f.other, 0);
    assert_string_equal(f.value, "committed");
}

static void test_unreachable_broker_is_retriable(void **state)
{
    (void)state;
    config_t bad = cfg;
    snprintf(bad.kafka_bootstrap, sizeof bad.kafka_bootstrap, "127.0.0.1:1");
    bad.kafka_timeout_ms = 1500;
    err_t e = {0};
    assert_int_equal(kafka_topics_ensure(&bad, &e), -1);
    assert_int_equal(e.cls, ERRC_RETRIABLE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topics_created_idempotently),
        cmocka_unit_test(test_idempotent_produce_then_read_committed),
        cmocka_unit_test(test_read_committed_hides_aborted),
        cmocka_unit_test(test_unreachable_broker_is_retriable),
    };
    return cmocka_run_group_tests_name("integration_kafka", tests, setup, NULL);
}
