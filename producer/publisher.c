/* publisher — see publisher.h. */
#include "producer/publisher.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "common/clock.h"
#include "common/kafka.h"
#include "common/log.h"

struct publisher {
    rd_kafka_t *rk;
    int partitions; /* OAUTHQ_TOPIC_PARTITIONS: keys route over this count */
    pthread_t poller;
    atomic_int stop;
    atomic_int fatal;
};

typedef struct {
    publisher_done_fn fn;
    void *ud;
    int64_t sent_us; /* monotonic */
} completion;

/* Poll thread: delivery reports. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    completion *c = m->_private;
    if (!c)
        return;
    double lat = (double)(clock_mono_us() - c->sent_us) / 1000.0; /* ms */
    if (m->err)
        c->fn(c->ud, kafka_errc(m->err) == ERRC_FATAL ? ERRC_FATAL : ERRC_RETRIABLE,
              rd_kafka_err2str(m->err), lat);
    else
        c->fn(c->ud, ERRC_OK, "", lat);
    free(c);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    publisher_t *p = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_fatal_error(rk, why, sizeof why);
        log_kv(LOGL_ERROR, "producer_fatal", "reason", why);
        atomic_store(&p->fatal, 1);
        return;
    }
    log_kv(LOGL_WARN, "producer_error", "code", rd_kafka_err2name((rd_kafka_resp_err_t)err),
           "reason", reason);
}

static void *poll_main(void *arg)
{
    publisher_t *p = arg;
    while (!atomic_load(&p->stop))
        rd_kafka_poll(p->rk, 50);
    return NULL;
}

publisher_t *publisher_open(const config_t *c, int message_timeout_ms, err_t *e)
{
    publisher_t *p = calloc(1, sizeof *p);
    if (!p) {
        err_set(e, ERRC_FATAL, "out of memory");
        return NULL;
    }
    p->partitions = c->topic_partitions;
    rd_kafka_conf_t *conf = kafka_conf_producer(c, NULL, e);
    char tmo[24], errstr[256];
    snprintf(tmo, sizeof tmo, "%d", message_timeout_ms);
    if (!conf || kafka_conf_set(conf, "message.timeout.ms", tmo, e) < 0 ||
        kafka_conf_set(conf, "queue.buffering.max.messages", "100000", e) < 0) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        free(p);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        free(p);
        err_set(e, ERRC_FATAL, "kafka producer: %s", errstr);
        return NULL;
    }
    if (pthread_create(&p->poller, NULL, poll_main, p) != 0) {
        rd_kafka_destroy(p->rk);
        free(p);
        err_set(e, ERRC_FATAL, "cannot start producer poll thread");
        return NULL;
    }
    return p;
}

int publisher_send(publisher_t *p, const char *topic, const char *key, const char *value,
                   size_t vlen, const char *request_id, publisher_done_fn fn, void *ud, err_t *e)
{
    if (atomic_load(&p->fatal))
        return err_set(e, ERRC_FATAL, "producer is in a fatal state");
    completion *c = malloc(sizeof *c);
    if (!c)
        return err_set(e, ERRC_FATAL, "out of memory");
    c->fn = fn;
    c->ud = ud;
    c->sent_us = clock_mono_us();
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic),
        RD_KAFKA_V_PARTITION(kafka_partition_for(key, strlen(key), p->partitions)),
        RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *)(uintptr_t)value, vlen),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADER("request_id", request_id, -1),
        RD_KAFKA_V_OPAQUE(c), RD_KAFKA_V_END);
    if (err) {
        free(c);
        errc cls = kafka_errc(err);
        return err_set(e, cls == ERRC_OK ? ERRC_PERMANENT : cls, "produce to %s: %s", topic,
                       rd_kafka_err2str(err));
    }
    return 0;
}

int publisher_check_partitions(publisher_t *p, const config_t *c, const char *topic, int timeout_ms,
                               err_t *e)
{
    return kafka_check_partitions(p->rk, c, topic, timeout_ms, e);
}

int publisher_reachable(publisher_t *p, const char *topic, int timeout_ms)
{
    int n = 0;
    return kafka_partition_count(p->rk, topic, timeout_ms, &n, NULL) == 0;
}

int publisher_fatal(const publisher_t *p)
{
    return atomic_load(&p->fatal);
}

void publisher_close(publisher_t *p, int flush_ms)
{
    if (!p)
        return;
    rd_kafka_resp_err_t err = rd_kafka_flush(p->rk, flush_ms);
    if (err)
        log_kv(LOGL_WARN, "producer_flush_incomplete", "reason", rd_kafka_err2str(err));
    /* Fail whatever is left so every completion runs exactly once. */
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(p->rk, 0);
    atomic_store(&p->stop, 1);
    pthread_join(p->poller, NULL);
    rd_kafka_poll(p->rk, 100); /* serve purged reports on this thread */
    rd_kafka_destroy(p->rk);
    free(p);
}
