/* ctl_scan — see ctl_scan.h. */
#include "ctl/ctl_scan.h"

#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "common/clock.h"
#include "common/kafka.h"
#include "common/log.h"
#include "ctl/ctl_out.h"

long ctl_scan_topic(const config_t *c, const char *topic, int32_t partition, int64_t start_offset,
                    ctl_scan_fn fn, void *ud, err_t *e)
{
    char errstr[256];
    rd_kafka_conf_t *conf = kafka_conf_consumer(c, NULL, e);
    if (!conf)
        return -1;
    if (kafka_conf_set(conf, "allow.auto.create.topics", "false", e) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return err_set(e, ERRC_FATAL, "consumer: %s", errstr);
    }
    long count = -1;
    int nparts = 0;
    rd_kafka_topic_partition_list_t *parts = NULL;
    char *at_eof = NULL;
    if (kafka_partition_count(rk, topic, c->kafka_timeout_ms, &nparts, e) < 0)
        goto out;
    if (partition >= nparts) {
        err_set(e, ERRC_PERMANENT, "topic %s has no partition %d (it has %d)", topic, partition,
                nparts);
        goto out;
    }
    parts = rd_kafka_topic_partition_list_new(nparts);
    for (int i = 0; i < nparts; i++)
        if (partition < 0 || i == partition)
            rd_kafka_topic_partition_list_add(parts, topic, i)->offset =
                partition < 0 ? RD_KAFKA_OFFSET_BEGINNING : start_offset;
    int want = parts->cnt;
    rd_kafka_resp_err_t aerr = rd_kafka_assign(rk, parts);
    if (aerr) {
        err_set(e, kafka_errc(aerr), "assign %s: %s", topic, rd_kafka_err2str(aerr));
        goto out;
    }
    at_eof = calloc((size_t)nparts, 1);
    if (!at_eof) {
        err_set(e, ERRC_RETRIABLE, "out of memory");
        goto out;
    }
    int neof = 0;
    long n = 0;
    int64_t idle_since = clock_mono_ms();
    while (neof < want) {
        if (clock_mono_ms() - idle_since > c->kafka_timeout_ms) {
            err_set(e, ERRC_RETRIABLE,
                    "reading %s: no progress in %d ms (%d of %d partitions read)", topic,
                    c->kafka_timeout_ms, neof, want);
            goto out;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        int stop = 0;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            idle_since = clock_mono_ms();
            if (m->partition >= 0 && m->partition < nparts && !at_eof[m->partition]) {
                at_eof[m->partition] = 1;
                neof++;
            }
        } else if (m->err) {
            /* Transient consumer errors: reported, reading goes on until
             * the idle bound. */
            log_kv(LOGL_DEBUG, "scan_error", "topic", topic, "error", rd_kafka_err2str(m->err));
        } else {
            idle_since = clock_mono_ms();
            char *k = m->key ? strndup(m->key, m->key_len) : NULL;
            char *v = m->payload ? strndup(m->payload, m->len) : NULL;
            if ((m->key && !k) || (m->payload && !v)) {
                free(k);
                free(v);
                rd_kafka_message_destroy(m);
                err_set(e, ERRC_RETRIABLE, "out of memory");
                goto out;
            }
            rd_kafka_timestamp_type_t tt;
            ctl_scan_rec r = {
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
