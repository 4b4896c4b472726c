/* testkafka — see testkafka.h. Single-threaded; one consumer per call. */
#include "tests/support/testkafka.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "common/kafka.h"

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

long testkafka_read(const config_t *c, const char *topic, long min_records, int timeout_ms,
                    testkafka_fn fn, void *ud, err_t *e)
{
    char errstr[256];
    rd_kafka_conf_t *conf = kafka_conf_consumer(c, NULL, e);
    if (!conf)
        return -1;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return err_set(e, ERRC_FATAL, "consumer: %s", errstr);
    }
    long count = -1;
    long deadline = now_ms() + timeout_ms;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t mderr = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (mderr || md->topic_cnt != 1 || md->topics[0].err) {
        err_set(e, ERRC_RETRIABLE, "metadata for %s: %s", topic,
                rd_kafka_err2str(mderr ? mderr : md->topics[0].err));
        goto out;
    }
    int nparts = md->topics[0].partition_cnt;
    parts = rd_kafka_topic_partition_list_new(nparts);
    for (int i = 0; i < nparts; i++)
        rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t aerr = rd_kafka_assign(rk, parts);
    if (aerr) {
        err_set(e, kafka_errc(aerr), "assign %s: %s", topic, rd_kafka_err2str(aerr));
        goto out;
    }
    char *at_eof = calloc((size_t)nparts + 1, 1);
    int neof = 0;
    count = 0;
    int stop = 0;
    while (!stop && now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (m->partition >= 0 && m->partition < nparts && !at_eof[m->partition]) {
                at_eof[m->partition] = 1;
                neof++;
            }
        } else if (m->err) {
            /* Transient consumer errors are reported and reading goes on. */
        } else {
            if (m->partition >= 0 && m->partition < nparts && at_eof[m->partition]) {
                at_eof[m->partition] = 0; /* new data after EOF */
                neof--;
            }
            char *k = m->key ? strndup(m->key, m->key_len) : NULL;
            char *v = m->payload ? strndup(m->payload, m->len) : NULL;
            testkafka_record r = {m->partition, m->offset, k, m->key_len, v, m->len};
            count++;
            if (fn && fn(&r, ud))
                stop = 1;
            free(k);
            free(v);
        }
        rd_kafka_message_destroy(m);
        if (neof == nparts && count >= min_records)
            break;
    }
    free(at_eof);
out:
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return count;
}
