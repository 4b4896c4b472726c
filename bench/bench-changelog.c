/*
 * bench-changelog — fill a connections changelog for the restore
 * benchmark of SPEC §9: N distinct connected connections, each a
 * connections.v1 record encoded with the worker's own codec (common/conn.c)
 * with a genuine connection id (common/ident, OAUTHQ_STATE_KEY_FILE) and
 * sealed access and refresh tokens (common/sealed, OAUTHQ_DATA_KEYS_FILE),
 * keyed by connection id with the product's producer settings, so the
 * worker restores exactly what it would have written itself.
 *
 *   bench-changelog TOPIC --count N
 *
 * Prints one JSON line: {"records", "seconds", "per_s", "record_bytes"}.
 * Exit 0 when every record was acknowledged, 1 otherwise, 2 on usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "common/config.h"
#include "common/crypto.h"
#include "common/ident.h"
#include "common/kafka.h"
#include "common/keyring.h"
#include "common/log.h"
#include "common/sealed.h"
#include "common/conn.h"

static long g_acked, g_failed;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        g_failed++;
    else
        g_acked++;
}

/* A connection as the worker leaves it after a successful exchange. */
static char *make_conn(conn_t *c, const keyring_t *ids, const keyring_t *data, uint64_t *rng,
                       int64_t now, err_t *e)
{
    char id[IDENT_CONN_ID_MAX], code[40], tok[48];
    if (ident_conn_new(ids, now / 1000, id, e) < 0)
        return NULL;
    conn_init(c, id, "sim", now - 1200);
    c->status = CONN_CONNECTED;
    c->phase = PHASE_NONE;
    c->version = 3;
    c->updated_at_ms = now;
    bench_rand_b64url(rng, code, 32);
    crypto_sha256_hex(code, strlen(code), c->code_hash);
    c->received_at_ms = now - 1100;
    c->deadline_ms = c->received_at_ms + 300000;
    c->attempts = 1;
    /* (claimed_by / claimed_at_ms, the lease of the exchange, stay unset:
     * a field of the new worker pipeline only.) */
    memcpy(c->account_id, "acct_", 5);
    bench_rand_b64url(rng, c->account_id + 5, 16);
    c->livemode = 0;
    snprintf(c->scope, sizeof c->scope, "read_write");
    snprintf(c->token_type, sizeof c->token_type, "bearer");
    memcpy(tok, "sk_test_", 8);
    bench_rand_b64url(rng, tok + 8, 32);
    if (sealed_seal(data, id, "access_token", tok, strlen(tok), c->access_sealed,
                    sizeof c->access_sealed, e) < 0)
        return NULL;
    memcpy(tok, "rt_", 3);
    bench_rand_b64url(rng, tok + 3, 32);
    if (sealed_seal(data, id, "refresh_token", tok, strlen(tok), c->refresh_sealed,
                    sizeof c->refresh_sealed, e) < 0)
        return NULL;
    return conn_encode(c, e);
}

int main(int argc, char **argv)
{
    const char *topic = NULL;
    long count = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            if (bench_parse_long(argv[++i], 1, 100000000, &count) < 0)
                goto usage;
        } else if (strcmp(argv[i], "--help") == 0) {
            puts("usage: bench-changelog TOPIC --count N");
            return 0;
        } else if (argv[i][0] != '-' && !topic) {
            topic = argv[i];
        } else {
            goto usage;
        }
    }
    if (!topic || count <= 0)
        goto usage;

    err_t e = {0};
    config_t cfg;
    if (config_load(&cfg, NULL, &e) < 0 || log_init("bench-changelog", "warn", "text", &e) < 0) {
        fprintf(stderr, "bench-changelog: %s\n", e.msg);
        return 1;
    }
    keyring_t *ids = keyring_load(cfg.state_key_file, &e);
    keyring_t *data = ids ? keyring_load(cfg.data_keys_file, &e) : NULL;
    if (!ids || !data) {
        fprintf(stderr, "bench-changelog: keyring: %s\n", e.msg);
        return 1;
    }
    char errstr[256];
    rd_kafka_conf_t *conf = kafka_conf_producer(&cfg, NULL, &e);
    /* Bigger batches than the intake: this is a bulk load, not a latency path. */
    if (!conf || kafka_conf_set(conf, "linger.ms", "50", &e) < 0 ||
        kafka_conf_set(conf, "batch.size", "1000000", &e) < 0 ||
        kafka_conf_set(conf, "queue.buffering.max.messages", "200000", &e) < 0 ||
        kafka_conf_set(conf, "queue.buffering.max.kbytes", "262144", &e) < 0) {
        fprintf(stderr, "bench-changelog: %s\n", e.msg);
        return 1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        fprintf(stderr, "bench-changelog: %s\n", errstr);
        return 1;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    conn_t *c = malloc(sizeof *c);
    uint64_t rng = 0;
    size_t bytes = 0;
    double t0 = bench_mono_ms();
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    int64_t now = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000;
    int fail = !c;
    for (long i = 0; i < count && !fail; i++) {
        char *json = make_conn(c, ids, data, &rng, now + i / 1000, &e);
        if (!json) {
            fprintf(stderr, "bench-changelog: %s\n", e.msg);
            fail = 1;
            break;
        }
        size_t n = strlen(json);
        bytes += n;
        while (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_FREE, json, n, c->id,
                                strlen(c->id), NULL) < 0) {
            if (rd_kafka_last_error() != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "bench-changelog: produce: %s\n",
                        rd_kafka_err2str(rd_kafka_last_error()));
                free(json);
                fail = 1;
                break;
            }
            rd_kafka_poll(rk, 10);
        }
        if (i % 1000 == 0)
            rd_kafka_poll(rk, 0);
    }
    if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail = 1;
    double secs = (bench_mono_ms() - t0) / 1000.0;
    printf("{\"records\": %ld, \"seconds\": %.2f, \"per_s\": %.0f, \"record_bytes\": %zu}\n",
           g_acked, secs, secs > 0 ? (double)g_acked / secs : 0,
           g_acked ? bytes / (size_t)g_acked : 0);
    if (c)
        crypto_wipe(c, sizeof *c);
    free(c);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    keyring_free(ids);
    keyring_free(data);
    return fail || g_failed || g_acked != count ? 1 : 0;
usage:
    fprintf(stderr, "usage: bench-changelog TOPIC --count N (see --help)\n");
    return 2;
}
