/*
 * bench-produce — the raw librdkafka produce rate the intake is compared
 * with (SPEC §9): callback.v1 records of the size the intake writes,
 * produced with the intake's own producer configuration (idempotent,
 * acks=all, the same linger and compression, from common/kafka.c).
 *
 *   bench-produce TOPIC [--seconds S] [--window N]
 *
 * --window N   at most N records awaiting their acknowledgement: a closed
 *              loop like N HTTP clients each waiting for its answer (the
 *              intake at N connections). 0: unbounded, the producer's
 *              own pipelining (the broker's ceiling). Default 64.
 * --seconds S  measured interval after a one-record warm-up (default 5).
 *
 * Every record is a distinct callback.v1 record built with the project's
 * codec (fresh connection id, code and request id), so compression sees
 * what it sees in production. Prints one JSON line: {"records", "seconds",
 * "per_s", "record_bytes", "p50_ms", "p99_ms", "errors", "window"}.
 * Exit 0 when measured, 1 on errors. Uses the OAUTHQ_* environment.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "common/config.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/records.h"

typedef struct {
    long outstanding, acked, errors;
    double t_end;
    bench_samples lat;
} run_state;

static run_state g_run;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    double *sent = m->_private;
    double now = bench_mono_ms();
    g_run.outstanding--;
    if (m->err)
        g_run.errors++;
    else if (now <= g_run.t_end) {
        g_run.acked++;
        if (sent)
            bench_samples_add(&g_run.lat, now - *sent);
    }
    free(sent);
}

/* A distinct callback record (as the intake encodes it) and its key. */
static char *make_record(uint64_t *rng, long seq, char *key, size_t keycap, err_t *e)
{
    records_callback rec;
    memset(&rec, 0, sizeof rec);
    bench_rand_b64url(rng, rec.connection_id, 55);
    snprintf(key, keycap, "%s", rec.connection_id);
    snprintf(rec.provider, sizeof rec.provider, "sim");
    rec.kind = RECORDS_CB_CODE;
    memcpy(rec.code, "ac_", 3);
    bench_rand_b64url(rng, rec.code + 3, 32);
    rec.received_at_ms = 1796278513665LL + seq;
    snprintf(rec.intake_id, sizeof rec.intake_id, "intake-vm-%d", 4242);
    snprintf(rec.request_id, sizeof rec.request_id, "%08" PRIx64 "%08lx",
             (uint64_t)(bench_rand(rng) & 0xffffffffULL), (unsigned long)seq & 0xffffffffUL);
    return records_callback_encode(&rec, e);
}

static int produce_one(rd_kafka_topic_t *rkt, uint64_t *rng, long seq, size_t *bytes, int timed,
                       err_t *e)
{
    char key[64];
    char *json = make_record(rng, seq, key, sizeof key, e);
    if (!json)
        return -1;
    double *sent = timed ? malloc(sizeof *sent) : NULL;
    if (sent)
        *sent = bench_mono_ms();
    *bytes = strlen(json);
    int rc = rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_FREE, json, *bytes, key,
                              strlen(key), sent);
    if (rc < 0) {
        free(json);
        free(sent);
        return rd_kafka_last_error() == RD_KAFKA_RESP_ERR__QUEUE_FULL ? 1 : -1;
    }
    g_run.outstanding++;
    return 0;
}

int main(int argc, char **argv)
{
    const char *topic = NULL;
    long seconds = 5, window = 64;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            if (bench_parse_long(argv[++i], 1, 3600, &seconds) < 0)
                goto usage;
        } else if (strcmp(argv[i], "--window") == 0 && i + 1 < argc) {
            if (bench_parse_long(argv[++i], 0, 1000000, &window) < 0)
                goto usage;
        } else if (strcmp(argv[i], "--help") == 0) {
            puts("usage: bench-produce TOPIC [--seconds S] [--window N]");
            return 0;
        } else if (argv[i][0] != '-' && !topic) {
            topic = argv[i];
        } else {
            goto usage;
        }
    }
    if (!topic)
        goto usage;

    err_t e = {0};
    config_t cfg;
    if (config_load(&cfg, NULL, &e) < 0 || log_init("bench-produce", "warn", "text", &e) < 0) {
        fprintf(stderr, "bench-produce: %s\n", e.msg);
        return 1;
    }
    /* The intake's producer (producer/publisher.c): common settings plus
     * its message timeout and queue size. */
    char tmo[24], errstr[256];
    snprintf(tmo, sizeof tmo, "%d", cfg.produce_timeout_ms);
    rd_kafka_conf_t *conf = kafka_conf_producer(&cfg, NULL, &e);
    if (!conf || kafka_conf_set(conf, "message.timeout.ms", tmo, &e) < 0 ||
        kafka_conf_set(conf, "queue.buffering.max.messages", "100000", &e) < 0) {
        fprintf(stderr, "bench-produce: %s\n", e.msg);
        return 1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        fprintf(stderr, "bench-produce: %s\n", errstr);
        return 1;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    uint64_t rng = 0;
    size_t bytes = 0;
    long seq = 0;

    /* Warm-up: connections, metadata and the idempotent producer id. */
    g_run.t_end = 0;
    if (produce_one(rkt, &rng, seq++, &bytes, 0, &e) != 0 ||
        rd_kafka_flush(rk, 15000) != RD_KAFKA_RESP_ERR_NO_ERROR || g_run.errors) {
        fprintf(stderr, "bench-produce: warm-up record not acknowledged on %s\n", topic);
        return 1;
    }
    double t0 = bench_mono_ms();
    g_run.t_end = t0 + (double)seconds * 1000.0;
    int fail = 0;
    while (!fail && bench_mono_ms() < g_run.t_end) {
        while (window == 0 || g_run.outstanding < window) {
            int rc = produce_one(rkt, &rng, seq++, &bytes, 1, &e);
            if (rc < 0)
                fail = 1;
            if (rc != 0)
                break;
            if (window == 0 && seq % 1000 == 0)
                break; /* serve delivery reports now and then */
        }
        rd_kafka_poll(rk, window == 0 ? 0 : 1);
    }
    rd_kafka_flush(rk, 15000);
    double p50 = bench_percentile(&g_run.lat, 50), p99 = bench_percentile(&g_run.lat, 99);
    printf("{\"records\": %ld, \"seconds\": %ld, \"per_s\": %.0f, \"record_bytes\": %zu, "
           "\"p50_ms\": %.2f, \"p99_ms\": %.2f, \"errors\": %ld, \"window\": %ld}\n",
           g_run.acked, seconds, (double)g_run.acked / (double)seconds, bytes, p50, p99,
           g_run.errors, window);
    bench_samples_free(&g_run.lat);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return fail || g_run.errors || g_run.acked == 0 ? 1 : 0;
usage:
    fprintf(stderr, "usage: bench-produce TOPIC [--seconds S] [--window N] (see --help)\n");
    return 2;
}
