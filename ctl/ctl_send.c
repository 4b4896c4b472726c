/* ctl_send — see ctl_send.h. */
#include "ctl/ctl_send.h"

#include <stdio.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "common/kafka.h"

#define COPIES_MAX 1024

typedef struct {
    int done;
    rd_kafka_resp_err_t err;
} report;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    report *r = m->_private;
    if (r) {
        r->done = 1;
        r->err = m->err;
    }
}

long ctl_send(const config_t *c, const char *topic, const char *key, const char *value,
              int every_partition, err_t *e)
{
    char errstr[256], tmo[16];
    rd_kafka_conf_t *conf = kafka_conf_producer(c, NULL, e);
    if (!conf)
        return -1;
    snprintf(tmo, sizeof tmo, "%d", c->produce_timeout_ms);
    if (kafka_conf_set(conf, "message.timeout.ms", tmo, e) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return err_set(e, ERRC_FATAL, "kafka producer: %s", errstr);
    }
    static report reports[COPIES_MAX];
    int copies = 1;
    long rc = -1;
    if (every_partition) {
        if (kafka_partition_count(rk, topic, c->kafka_timeout_ms, &copies, e) < 0)
            goto out;
        if (copies < 1 || copies > COPIES_MAX) {
            err_set(e, ERRC_PERMANENT, "%s has %d partitions", topic, copies);
            goto out;
        }
    }
    memset(reports, 0, sizeof reports);
    for (int p = 0; p < copies; p++) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic),
            RD_KAFKA_V_PARTITION(
                every_partition ? p : kafka_partition_for(key, strlen(key), c->topic_partitions)),
            RD_KAFKA_V_KEY(key, strlen(key)),
            RD_KAFKA_V_VALUE((void *)(uintptr_t)value, strlen(value)),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&reports[p]),
            RD_KAFKA_V_END);
        if (err) {
            reports[p].done = 1;
            reports[p].err = err;
        }
    }
    rd_kafka_flush(rk, c->produce_timeout_ms + 2000);
    long acked = 0;
    int noted = 0;
    for (int p = 0; p < copies; p++) {
        if (reports[p].done && !reports[p].err) {
            acked++;
        } else if (!noted) {
            err_set(e, ERRC_RETRIABLE, "producing to %s: %s", topic,
                    reports[p].done ? rd_kafka_err2str(reports[p].err) : "not acknowledged");
            noted = 1;
        }
    }
    if (acked == copies)
        rc = acked;
out:
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(rk, 1000);
    rd_kafka_destroy(rk);
    return rc;
}
