/* kafka — see kafka.h. Functions are stateless and thread-safe. */
#include "common/kafka.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crypto.h"
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
        (txn_id && kafka_conf_set(conf, "transaction.timeout.ms", txn_timeout, e) < 0) ||
        /* A transaction that starts right after the previous commit finds
         * the coordinator still writing that commit's markers and is told
         * CONCURRENT_TRANSACTIONS; librdkafka retries AddOffsetsToTxn after
         * retry.backoff.ms (default 100 ms). 10 ms: send_offsets took
         * 8-11 ms on average in the worker bench, 5-6 ms with it. */
        (txn_id && kafka_conf_set(conf, "retry.backoff.ms", "10", e) < 0)) {
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

rd_kafka_t *kafka_consumer_new(const config_t *c, const char *const *settings, const char *what,
                               err_t *e)
{
    char errstr[256];
    rd_kafka_conf_t *conf = kafka_conf_consumer(c, NULL, e);
    if (!conf)
        return NULL;
    for (int i = 0; settings && settings[i] && i < 64; i += 2) {
        if (!settings[i + 1]) {
            rd_kafka_conf_destroy(conf);
            err_set(e, ERRC_FATAL, "%s: setting %s has no value", what, settings[i]);
            return NULL;
        }
        if (kafka_conf_set(conf, settings[i], settings[i + 1], e) < 0) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        err_set(e, ERRC_FATAL, "%s: %s", what, errstr);
    }
    return rk;
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
    int64_t t0 = clock_mono_ms();
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, topic, partition, lo, hi, timeout_ms);
        if (!err)
            return 0;
        int64_t spent = clock_mono_ms() - t0;
        if (kafka_errc(err) != ERRC_RETRIABLE || spent >= timeout_ms)
            return err_set(e, kafka_errc(err), "watermarks of %s[%d]: %s", topic, partition,
                           rd_kafka_err2str(err));
        struct timespec pause = {0, 200 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

/* SPEC §2: callbacks delete ≥ 7 d, connections and status compacted,
 * dlq delete ≥ 14 d. */
const kafka_topic_spec kafka_topic_specs[KAFKA_TOPICS] = {
    {KAFKA_TOPIC_CALLBACKS, "delete", KAFKA_RETENTION_7D},
    {KAFKA_TOPIC_CONNECTIONS, "compact", 0},
    {KAFKA_TOPIC_STATUS, "compact", 0},
    {KAFKA_TOPIC_DLQ, "delete", KAFKA_RETENTION_14D},
    /* webhook delivery states (§4b) */
    {KAFKA_TOPIC_WEBHOOKS, "compact", 0},
};

int kafka_min_isr(int replication)
{
    return replication >= 3 ? 2 : 1;
}

rd_kafka_t *kafka_admin_new(const config_t *c, err_t *e)
{
    char errstr[256];
    rd_kafka_conf_t *conf = kafka_conf_admin(c, e);
    if (!conf)
        return NULL;
    if (kafka_conf_set(conf, "allow.auto.create.topics", "false", e) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        err_set(e, ERRC_FATAL, "kafka admin client: %s", errstr);
    }
    return rk;
}

int kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms, int *n, err_t *e)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt)
        return err_set(e, ERRC_PERMANENT, "topic %s: bad name", topic);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (err)
        return err_set(e, kafka_errc(err) == ERRC_FATAL ? ERRC_FATAL : ERRC_RETRIABLE,
                       "metadata for %s: %s", topic, rd_kafka_err2str(err));
    int rc = 0;
    if (md->topic_cnt != 1 || md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        (!md->topics[0].err && md->topics[0].partition_cnt == 0))
        rc = err_set(e, ERRC_PERMANENT, "topic %s does not exist (oauthqctl topics create)", topic);
    else if (md->topics[0].err)
        rc = err_set(e, kafka_errc(md->topics[0].err) == ERRC_FATAL ? ERRC_FATAL : ERRC_PERMANENT,
                     "metadata for %s: %s", topic, rd_kafka_err2str(md->topics[0].err));
    else
        *n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return rc;
}

long kafka_scan(const config_t *c, const char *topic, const kafka_scan_opts *o, kafka_scan_fn fn,
                void *ud, err_t *e)
{
    static const char *const settings[] = {"allow.auto.create.topics", "false", NULL};
    rd_kafka_t *rk = kafka_consumer_new(c, settings, "consumer", e);
    if (!rk)
        return -1;
    long count = -1;
    int nparts = 0;
    rd_kafka_topic_partition_list_t *parts = NULL;
    char *at_eof = NULL;
    int64_t deadline = clock_mono_ms() + o->timeout_ms;
    if (kafka_partition_count(rk, topic, o->idle_ms, &nparts, e) < 0)
        goto out;
    if (o->partition >= nparts) {
        err_set(e, ERRC_PERMANENT, "topic %s has no partition %d (it has %d)", topic, o->partition,
                nparts);
        goto out;
    }
    parts = rd_kafka_topic_partition_list_new(nparts);
    for (int i = 0; i < nparts; i++)
        if (o->partition < 0 || i == o->partition)
            rd_kafka_topic_partition_list_add(parts, topic, i)->offset =
                o->partition < 0 ? RD_KAFKA_OFFSET_BEGINNING : o->start_offset;
    int want = parts->cnt;
    rd_kafka_resp_err_t aerr = rd_kafka_assign(rk, parts);
    if (aerr) {
        err_set(e, kafka_errc(aerr), "assign %s: %s", topic, rd_kafka_err2str(aerr));
        goto out;
    }
    at_eof = calloc((size_t)nparts, 1);
    if (!at_eof) {
        err_set(e, ERRC_FATAL, "out of memory");
        goto out;
    }
    int neof = 0;
    long n = 0;
    int64_t idle_since = clock_mono_ms();
    while (!(neof == want && n >= o->min_records)) {
        if (clock_mono_ms() >= deadline && neof == want)
            break; /* at the end, fewer than min_records: the caller judges the count */
        if (clock_mono_ms() >= deadline) {
            err_set(e, ERRC_RETRIABLE, "reading %s: not at the end after %d ms", topic,
                    o->timeout_ms);
            goto out;
        }
        if (neof < want && clock_mono_ms() - idle_since > o->idle_ms) {
            err_set(e, ERRC_RETRIABLE,
                    "reading %s: no progress in %d ms (%d of %d partitions read)", topic,
                    o->idle_ms, neof, want);
            goto out;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        int in_range = m->partition >= 0 && m->partition < nparts;
        int stop = 0;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            idle_since = clock_mono_ms();
            if (in_range && !at_eof[m->partition]) {
                at_eof[m->partition] = 1;
                neof++;
            }
        } else if (m->err) {
            /* Transient consumer errors: reported, reading goes on until a bound. */
            log_kv(LOGL_DEBUG, "scan_error", "topic", topic, "error", rd_kafka_err2str(m->err));
        } else {
            idle_since = clock_mono_ms();
            if (in_range && at_eof[m->partition]) {
                at_eof[m->partition] = 0; /* newer records after the end seen */
                neof--;
            }
            char *k = m->key ? strndup(m->key, m->key_len) : NULL;
            char *v = m->payload ? strndup(m->payload, m->len) : NULL;
            if ((m->key && !k) || (m->payload && !v)) {
                free(k);
                free(v);
                rd_kafka_message_destroy(m);
                err_set(e, ERRC_FATAL, "out of memory");
                goto out;
            }
            rd_kafka_timestamp_type_t tt;
            kafka_rec r = {
                m->partition, m->offset, rd_kafka_message_timestamp(m, &tt), k, m->key_len, v,
                m->len};
            n++;
            int rc = fn ? fn(&r, ud) : 0;
            free(k);
            free(v);
            if (rc < 0) {
                rd_kafka_message_destroy(m);
                err_set(e, ERRC_PERMANENT, "stopped by caller");
                goto out;
            }
            stop = rc > 0;
        }
        rd_kafka_message_destroy(m);
        if (stop)
            break;
    }
    count = n;
out:
    free(at_eof);
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return count;
}

int kafka_topics_ensure(const config_t *c, err_t *e)
{
    char errstr[256];
    rd_kafka_t *rk = kafka_admin_new(c, e);
    if (!rk)
        return -1;
    int rc = -1;
    rd_kafka_NewTopic_t *nts[KAFKA_TOPICS] = {0};
    char names[KAFKA_TOPICS][256];
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_event_t *ev = NULL;
    rd_kafka_AdminOptions_set_request_timeout(opts, c->kafka_timeout_ms, errstr, sizeof errstr);
    rd_kafka_AdminOptions_set_operation_timeout(opts, c->kafka_timeout_ms, errstr, sizeof errstr);
    char min_isr[8];
    snprintf(min_isr, sizeof min_isr, "%d", kafka_min_isr(c->topic_replication));
    for (size_t i = 0; i < KAFKA_TOPICS; i++) {
        const kafka_topic_spec *ts = &kafka_topic_specs[i];
        char *name = names[i];
        if (config_topic(c, ts->suffix, name, sizeof names[i], e) < 0)
            goto out;
        nts[i] = rd_kafka_NewTopic_new(name, c->topic_partitions, c->topic_replication, errstr,
                                       sizeof errstr);
        if (!nts[i]) {
            err_set(e, ERRC_FATAL, "topic %s: %s", name, errstr);
            goto out;
        }
        rd_kafka_NewTopic_set_config(nts[i], "cleanup.policy", ts->policy);
        rd_kafka_NewTopic_set_config(nts[i], "min.insync.replicas", min_isr);
        if (ts->min_retention_ms) {
            char ret[24];
            snprintf(ret, sizeof ret, "%lld", ts->min_retention_ms);
            rd_kafka_NewTopic_set_config(nts[i], "retention.ms", ret);
        } else {
            /* Compacted changelogs: tombstones kept a day for slow readers. */
            rd_kafka_NewTopic_set_config(nts[i], "delete.retention.ms", KAFKA_TOMBSTONE_KEEP);
        }
    }
    rd_kafka_CreateTopics(rk, nts, KAFKA_TOPICS, opts, q);
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
    /* Created is not yet visible: a process started right after this
     * returns must find every topic in its first metadata answer. */
    for (size_t i = 0; i < KAFKA_TOPICS; i++) {
        int parts = 0;
        if (kafka_wait_topic(rk, names[i], c->kafka_timeout_ms, KAFKA_TOPIC_WAIT_MS, &parts, e) <
            0) {
            err_wrap(e, "topic created but not visible");
            goto out;
        }
    }
    rc = 0;
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    for (size_t i = 0; i < KAFKA_TOPICS; i++)
        if (nts[i])
            rd_kafka_NewTopic_destroy(nts[i]);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

int32_t kafka_partition_for(const char *key, size_t len, int partitions)
{
    if (partitions < 1)
        return RD_KAFKA_PARTITION_UA;
    return rd_kafka_msg_partitioner_consistent_random(NULL, key, len, partitions, NULL, NULL);
}

/* One metadata answer for topic: 1 when it lists the topic with partitions
 * that all have a leader (*n set), 0 when the topic is not (yet) there or a
 * partition has no leader yet, -1 on any other error (e filled). */
static int topic_visible(rd_kafka_t *rk, const char *topic, int timeout_ms, int *n, err_t *e)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt)
        return err_set(e, ERRC_PERMANENT, "topic %s: bad name", topic);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
        err_set(e, ERRC_PERMANENT, "topic %s does not exist (oauthqctl topics create)", topic);
        return 0;
    }
    if (err)
        return err_set(e, kafka_errc(err) == ERRC_FATAL ? ERRC_FATAL : ERRC_RETRIABLE,
                       "metadata for %s: %s", topic, rd_kafka_err2str(err));
    int rc = 0;
    const struct rd_kafka_metadata_topic *t = md->topic_cnt == 1 ? &md->topics[0] : NULL;
    if (!t || t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        t->err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE || (!t->err && t->partition_cnt == 0)) {
        err_set(e, ERRC_PERMANENT, "topic %s does not exist (oauthqctl topics create)", topic);
    } else if (t->err) {
        rc = err_set(e, kafka_errc(t->err) == ERRC_FATAL ? ERRC_FATAL : ERRC_PERMANENT,
                     "metadata for %s: %s", topic, rd_kafka_err2str(t->err));
    } else {
        rc = 1;
        for (int i = 0; i < t->partition_cnt; i++)
            if (t->partitions[i].leader < 0) {
                err_set(e, ERRC_RETRIABLE, "topic %s: partition %d has no leader yet", topic,
                        t->partitions[i].id);
                rc = 0;
            }
        if (rc == 1)
            *n = t->partition_cnt;
    }
    rd_kafka_metadata_destroy(md);
    return rc;
}

int kafka_wait_topic(rd_kafka_t *rk, const char *topic, int timeout_ms, int wait_ms, int *n,
                     err_t *e)
{
    int64_t start = clock_mono_ms(), deadline = start + (wait_ms > 0 ? wait_ms : 0);
    int logged = 0;
    for (;;) { /* bounded by the deadline */
        err_t we = {0};
        int rc = topic_visible(rk, topic, timeout_ms, n, &we);
        if (rc == 1) {
            if (logged) {
                char waited[24];
                snprintf(waited, sizeof waited, "%lld", (long long)(clock_mono_ms() - start));
                log_kv(LOGL_INFO, "topic_visible", "topic", topic, "waited_ms", waited);
            }
            return 0;
        }
        /* Not there yet (just created, or a partition without a leader)
         * or the broker not answering: wait; anything else is final. */
        if (rc < 0 && we.cls != ERRC_RETRIABLE) {
            if (e)
                *e = we;
            return -1;
        }
        if (clock_mono_ms() >= deadline) {
            if (e)
                *e = we;
            return err_wrap(e, "after waiting %d ms", wait_ms);
        }
        if (!logged) {
            char bound[24];
            snprintf(bound, sizeof bound, "%d", wait_ms);
            log_kv(LOGL_WARN, "waiting_for_topic", "topic", topic, "reason", we.msg, "wait_ms",
                   bound);
            logged = 1;
        }
        struct timespec pause = {0, 250 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

int kafka_check_partitions(rd_kafka_t *rk, const config_t *c, const char *topic, int timeout_ms,
                           err_t *e)
{
    int n = 0;
    if (kafka_wait_topic(rk, topic, timeout_ms, KAFKA_TOPIC_WAIT_MS, &n, e) < 0) {
        if (e && e->cls == ERRC_PERMANENT) /* no such topic: nothing to route to */
            e->cls = ERRC_FATAL;
        return -1;
    }
    if (n != c->topic_partitions)
        return err_set(e, ERRC_FATAL,
                       "%s has %d partitions but OAUTHQ_TOPIC_PARTITIONS is %d: connection ids "
                       "are placed on partitions by hash over that count, and another count "
                       "would send a connection's callbacks away from its state (see "
                       "docs/operations.md, Scaling partitions)",
                       topic, n, c->topic_partitions);
    return 0;
}

int kafka_check_assigned(const char *topic, int32_t p, int nparts, err_t *e)
{
    if (p >= 0 && p < nparts)
        return 0;
    /* Fits ERR_MSG_MAX with a 64-byte topic name: the way out must not be cut off. */
    return err_set(e, ERRC_FATAL,
                   "%.64s: partition %d assigned, the topic had %d at start: partitions were "
                   "added while running. Stopping; a restart refuses the new count "
                   "(docs/operations.md, Scaling partitions)",
                   topic, (int)p, nparts);
}

int kafka_init_transactions(rd_kafka_t *rk, int budget_ms, err_t *e)
{
    int64_t deadline = clock_mono_ms() + budget_ms;
    for (int attempt = 0; attempt < budget_ms / 1000 + 1; attempt++) {
        rd_kafka_error_t *err = rd_kafka_init_transactions(rk, 10000);
        if (!err)
            return 0;
        int retry = rd_kafka_error_is_retriable(err) && clock_mono_ms() < deadline;
        log_kv(LOGL_WARN, "init_transactions", "reason", rd_kafka_error_string(err), "retry",
               retry ? "yes" : "no");
        if (!retry) {
            err_set(e, ERRC_FATAL, "init_transactions: %s", rd_kafka_error_string(err));
            rd_kafka_error_destroy(err);
            return -1;
        }
        rd_kafka_error_destroy(err);
        sleep(1);
    }
    return err_set(e, ERRC_FATAL, "init_transactions: not done within %d ms", budget_ms);
}

rd_kafka_t *kafka_group_consumer_new(const config_t *c, const char *group_id,
                                     void (*rebalance_cb)(rd_kafka_t *, rd_kafka_resp_err_t,
                                                          rd_kafka_topic_partition_list_t *,
                                                          void *),
                                     void *opaque, const char *const *topics, int ntopics, err_t *e)
{
    char errstr[256];
    rd_kafka_conf_t *cc = kafka_conf_consumer(c, group_id, e);
    if (!cc)
        return NULL;
    rd_kafka_conf_set_rebalance_cb(cc, rebalance_cb);
    rd_kafka_conf_set_opaque(cc, opaque);
    /* Prefetch bounded to 16 MiB (librdkafka's default, 64 MiB, was most of
     * the worker's RSS with a backlog: the worker reads ahead only what it
     * can claim, so the rest waits in this queue). 16 MiB is still seconds
     * of work at the worker's rate, so the fetcher's idle time once the queue
     * is full (up to fetch.wait.max.ms in 2.0) never starves the loop. */
    if (kafka_conf_set(cc, "enable.partition.eof", "false", e) < 0 ||
        kafka_conf_set(cc, "queued.max.messages.kbytes", "16384", e) < 0 ||
        kafka_conf_set(cc, "max.poll.interval.ms", "300000", e) < 0 ||
        kafka_conf_set(cc, "session.timeout.ms", "6000", e) < 0 ||
        kafka_conf_set(cc, "heartbeat.interval.ms", "1000", e) < 0) {
        rd_kafka_conf_destroy(cc);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(cc);
        err_set(e, ERRC_FATAL, "consumer: %s", errstr);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(ntopics);
    for (int i = 0; i < ntopics; i++)
        rd_kafka_topic_partition_list_add(sub, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t serr = rd_kafka_subscribe(rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (serr) {
        err_set(e, ERRC_FATAL, "subscribe: %s", rd_kafka_err2str(serr));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

int kafka_instance_id(const char *configured, const char *data_dir, const char *file,
                      const char *prefix, char *out, size_t cap, err_t *e)
{
    if (configured && configured[0]) {
        snprintf(out, cap, "%s", configured);
        return 0;
    }
    char path[CONFIG_PATH_MAX + 64], buf[64];
    size_t n = 0;
    mkdir(data_dir, 0700);
    snprintf(path, sizeof path, "%s/%s", data_dir, file);
    if (config_read_file(path, buf, sizeof buf, &n, NULL) == 0 && n > 0) {
        buf[strcspn(buf, "\r\n")] = '\0';
        snprintf(out, cap, "%s", buf);
        return 0;
    }
    uint8_t raw[9];
    char id[16];
    if (crypto_random(raw, sizeof raw, e) < 0)
        return -1;
    crypto_b64url_encode(raw, sizeof raw, id, sizeof id);
    snprintf(out, cap, "%s%s", prefix, id);
    FILE *f = fopen(path, "w");
    if (!f)
        return err_set(e, ERRC_FATAL, "cannot write %s: %s", path, strerror(errno));
    fprintf(f, "%s\n", out);
    fclose(f);
    return 0;
}
