/* kafka — see kafka.h. Functions are stateless and thread-safe. */
#include "common/kafka.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

int kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, err_t *e)
{
    char errstr[256];
    if (rd_kafka_conf_set(conf, key, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        return err_set(e, ERRC_FATAL, "kafka config %s: %s", key, errstr);
    return 0;
}

/* librdkafka's own log lines go through our logger (they hold no secrets:
 * oauthq configures no SASL credentials in librdkafka). Runs on librdkafka
 * threads; log_kv is thread-safe. */
static void rk_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    log_level l = level <= 3   ? LOGL_ERROR
                  : level <= 4 ? LOGL_WARN
                  : level <= 6 ? LOGL_INFO
                               : LOGL_DEBUG;
    log_kv(l, "librdkafka", "facility", fac, "msg", buf);
}

static rd_kafka_conf_t *base(const config_t *c, err_t *e)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (kafka_conf_set(conf, "bootstrap.servers", c->kafka_bootstrap, e) < 0 ||
        kafka_conf_set(conf, "client.id", "oauthq", e) < 0 ||
        kafka_conf_set(conf, "socket.keepalive.enable", "true", e) < 0 ||
        /* Loopback and small clusters: do not hide a dead broker for long. */
        kafka_conf_set(conf, "reconnect.backoff.max.ms", "2000", e) < 0 ||
        kafka_conf_set(conf, "log.connection.close", "false", e) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, rk_log_cb);
    return conf;
}

rd_kafka_conf_t *kafka_conf_producer(const config_t *c, const char *txn_id, err_t *e)
{
    rd_kafka_conf_t *conf = base(c, e);
    if (!conf)
        return NULL;
    char txn_timeout[24];
    snprintf(txn_timeout, sizeof txn_timeout, "%d", KAFKA_TRANSACTION_TIMEOUT_MS);
    if (kafka_conf_set(conf, "enable.idempotence", "true", e) < 0 ||
        kafka_conf_set(conf, "acks", "all", e) < 0 ||
        kafka_conf_set(conf, "linger.ms", "2", e) < 0 ||
        kafka_conf_set(conf, "compression.type", "lz4", e) < 0 ||
        (txn_id && kafka_conf_set(conf, "transactional.id", txn_id, e) < 0) ||
        (txn_id && kafka_conf_set(conf, "transaction.timeout.ms", txn_timeout, e) < 0)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

rd_kafka_conf_t *kafka_conf_consumer(const config_t *c, const char *group_id, err_t *e)
{
    rd_kafka_conf_t *conf = base(c, e);
    if (!conf)
        return NULL;
    /* A group id is mandatory for librdkafka consumers even when only
     * assign() is used; such consumers never commit, so a per-process
     * throwaway id keeps them out of any real group. */
    char throwaway[64];
    snprintf(throwaway, sizeof throwaway, "oauthq-assign-%ld", (long)getpid());
    if (kafka_conf_set(conf, "group.id", group_id ? group_id : throwaway, e) < 0 ||
        kafka_conf_set(conf, "isolation.level", "read_committed", e) < 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", e) < 0 ||
        kafka_conf_set(conf, "enable.auto.offset.store", "false", e) < 0 ||
        kafka_conf_set(conf, "auto.offset.reset", "earliest", e) < 0 ||
        kafka_conf_set(conf, "partition.assignment.strategy", "range", e) < 0 ||
        kafka_conf_set(conf, "enable.partition.eof", "true", e) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

rd_kafka_conf_t *kafka_conf_admin(const config_t *c, err_t *e)
{
    return base(c, e);
}

errc kafka_errc(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return ERRC_OK;
    case RD_KAFKA_RESP_ERR__FENCED:
    case RD_KAFKA_RESP_ERR_PRODUCER_FENCED:
    case RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH:
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return ERRC_FATAL;
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR__RESOLVE:
    case RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS:
        return ERRC_RETRIABLE;
    default:
        return ERRC_PERMANENT;
    }
}

errc kafka_error_errc(const rd_kafka_error_t *error)
{
    if (!error)
        return ERRC_OK;
    if (rd_kafka_error_is_fatal(error))
        return ERRC_FATAL;
    if (rd_kafka_error_is_retriable(error) || rd_kafka_error_txn_requires_abort(error))
        return ERRC_RETRIABLE;
    return kafka_errc(rd_kafka_error_code(error));
}

int kafka_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t *lo, int64_t *hi,
                     int timeout_ms, err_t *e)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, topic, partition, lo, hi, timeout_ms);
        if (!err)
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long spent = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (kafka_errc(err) != ERRC_RETRIABLE || spent >= timeout_ms)
            return err_set(e, kafka_errc(err), "watermarks of %s[%d]: %s", topic, partition,
                           rd_kafka_err2str(err));
        struct timespec pause = {0, 200 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

typedef struct {
    const char *suffix;
    const char *policy;
    const char *retention_ms;
} topic_spec;

/* SPEC §2: callbacks delete ≥ 7 d, connections and status compacted,
 * dlq delete ≥ 14 d. */
static const topic_spec topic_specs[] = {
    {KAFKA_TOPIC_CALLBACKS, "delete", "604800000"},
    {KAFKA_TOPIC_CONNECTIONS, "compact", NULL},
    {KAFKA_TOPIC_STATUS, "compact", NULL},
    {KAFKA_TOPIC_DLQ, "delete", "1209600000"},
    /* webhook delivery states (§4b) */
    {KAFKA_TOPIC_WEBHOOKS, "compact", NULL},
};
#define NTOPICS (sizeof topic_specs / sizeof topic_specs[0])

int kafka_topics_ensure(const config_t *c, err_t *e)
{
    char errstr[256];
    rd_kafka_conf_t *conf = kafka_conf_admin(c, e);
    if (!conf)
        return -1;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return err_set(e, ERRC_FATAL, "kafka admin client: %s", errstr);
    }
    int rc = -1;
    rd_kafka_NewTopic_t *nts[NTOPICS] = {0};
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_event_t *ev = NULL;
    rd_kafka_AdminOptions_set_request_timeout(opts, c->kafka_timeout_ms, errstr, sizeof errstr);
    rd_kafka_AdminOptions_set_operation_timeout(opts, c->kafka_timeout_ms, errstr, sizeof errstr);
    char min_isr[8];
    snprintf(min_isr, sizeof min_isr, "%d", c->topic_replication >= 3 ? 2 : 1);
    for (size_t i = 0; i < NTOPICS; i++) {
        char name[256];
        if (config_topic(c, topic_specs[i].suffix, name, sizeof name, e) < 0)
            goto out;
        nts[i] = rd_kafka_NewTopic_new(name, c->topic_partitions, c->topic_replication, errstr,
                                       sizeof errstr);
        if (!nts[i]) {
            err_set(e, ERRC_FATAL, "topic %s: %s", name, errstr);
            goto out;
        }
        rd_kafka_NewTopic_set_config(nts[i], "cleanup.policy", topic_specs[i].policy);
        rd_kafka_NewTopic_set_config(nts[i], "min.insync.replicas", min_isr);
        if (topic_specs[i].retention_ms)
            rd_kafka_NewTopic_set_config(nts[i], "retention.ms", topic_specs[i].retention_ms);
        else
            /* Compacted changelogs: tombstones kept a day for slow readers. */
            rd_kafka_NewTopic_set_config(nts[i], "delete.retention.ms", "86400000");
    }
    rd_kafka_CreateTopics(rk, nts, NTOPICS, opts, q);
    ev = rd_kafka_queue_poll(q, c->kafka_timeout_ms + 2000);
    if (!ev) {
        err_set(e, ERRC_RETRIABLE, "creating topics: no answer from %s in %d ms",
                c->kafka_bootstrap, c->kafka_timeout_ms + 2000);
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        rd_kafka_resp_err_t code = rd_kafka_event_error(ev);
        err_set(e, kafka_errc(code), "creating topics: %s", rd_kafka_event_error_string(ev));
        goto out;
    }
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t **trs = rd_kafka_CreateTopics_result_topics(res, &n);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t te = rd_kafka_topic_result_error(trs[i]);
        if (te == RD_KAFKA_RESP_ERR_NO_ERROR) {
            log_kv(LOGL_INFO, "topic_created", "topic", rd_kafka_topic_result_name(trs[i]));
        } else if (te != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            err_set(e, kafka_errc(te), "creating topic %s: %s", rd_kafka_topic_result_name(trs[i]),
                    rd_kafka_topic_result_error_string(trs[i]));
            goto out;
        }
    }
    rc = 0;
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    for (size_t i = 0; i < NTOPICS; i++)
        if (nts[i])
            rd_kafka_NewTopic_destroy(nts[i]);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}
