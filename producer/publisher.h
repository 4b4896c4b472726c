/*
 * publisher — the intake's Kafka producer: idempotent, acks=all, keyed by
 * connection id, with a completion callback per record (G2: the HTTP answer
 * waits for it).
 *
 * Threads: publisher_send may be called from any thread; completions run on
 * the publisher's own poll thread, exactly once per accepted record (also
 * when the record fails or is purged at close). A fatal producer error
 * (e.g. idempotence broken) sets publisher_fatal(); the process should exit
 * and be restarted.
 */
#ifndef OAUTHQ_PRODUCER_PUBLISHER_H
#define OAUTHQ_PRODUCER_PUBLISHER_H

#include <stddef.h>

#include "common/config.h"
#include "common/err.h"

typedef struct publisher publisher_t;

/* Delivery outcome: cls ERRC_OK when Kafka acknowledged (acks=all); else
 * the class of the failure and a short reason (no record content). */
typedef void (*publisher_done_fn)(void *ud, errc cls, const char *reason, double latency_ms);

/* Create the producer; message_timeout_ms bounds each record's delivery. */
publisher_t *publisher_open(const config_t *c, int message_timeout_ms, err_t *e);

/* Enqueue one record; fn(ud, ...) runs later on the poll thread. On -1
 * (queue full: retriable; other: permanent) fn is never called. */
int publisher_send(publisher_t *p, const char *topic, const char *key, const char *value,
                   size_t vlen, const char *request_id, publisher_done_fn fn, void *ud, err_t *e);

/* Start-up check: topic has exactly OAUTHQ_TOPIC_PARTITIONS partitions
 * (kafka_check_partitions); ERRC_FATAL with the way out otherwise. */
int publisher_check_partitions(publisher_t *p, const config_t *c, const char *topic, int timeout_ms,
                               err_t *e);

/* 1 when the cluster answered a metadata request for topic in timeout_ms. */
int publisher_reachable(publisher_t *p, const char *topic, int timeout_ms);

/* 1 after a fatal producer error. */
int publisher_fatal(const publisher_t *p);

/* Flush for up to flush_ms, stop the poll thread and destroy. Records not
 * delivered by then complete with an error before this returns. */
void publisher_close(publisher_t *p, int flush_ms);

#endif
