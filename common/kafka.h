/*
 * kafka — the one place that builds librdkafka configurations, classifies
 * librdkafka errors into the err convention, and names the topics.
 *
 * Every client in oauthq (intake producer, worker transactional producer and
 * consumer, read-model consumer, admin) gets its rd_kafka_conf_t from here,
 * so delivery guarantees are set once: producers are idempotent with
 * acks=all; consumers are read_committed with auto commit off.
 * The returned conf is owned by the caller until passed to rd_kafka_new().
 */
#ifndef OAUTHQ_COMMON_KAFKA_H
#define OAUTHQ_COMMON_KAFKA_H

#include <librdkafka/rdkafka.h>

#include "common/config.h"
#include "common/err.h"

/* Topic suffixes (SPEC §2); full names are config_topic(c, suffix). */
#define KAFKA_TOPIC_CALLBACKS   "callbacks"
#define KAFKA_TOPIC_CONNECTIONS "connections"
#define KAFKA_TOPIC_STATUS      "status"
#define KAFKA_TOPIC_DLQ         "dlq"
#define KAFKA_TOPIC_WEBHOOKS    "webhooks"

/* transaction.timeout.ms of every transactional producer: how long an
 * open transaction of a dead producer can hold back the last stable offset
 * and its pending offset commits. */
#define KAFKA_TRANSACTION_TIMEOUT_MS 60000

/* Set one property; failure is ERRC_FATAL naming the key (never the value). */
int kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, err_t *e);

/* Idempotent producer, acks=all; transactional when txn_id is non-NULL. */
rd_kafka_conf_t *kafka_conf_producer(const config_t *c, const char *txn_id, err_t *e);

/* read_committed consumer, no auto commit, eager range assignment, reading
 * from the earliest offset; group_id NULL for assign()-only consumers. */
rd_kafka_conf_t *kafka_conf_consumer(const config_t *c, const char *group_id, err_t *e);

/* Client for the Admin API (topic creation, metadata). */
rd_kafka_conf_t *kafka_conf_admin(const config_t *c, err_t *e);

/* Class of a response code: transport/timeouts/leader moves are retriable,
 * fencing and authorization are fatal, the rest permanent. */
errc kafka_errc(rd_kafka_resp_err_t err);

/* Class of an rd_kafka_error_t (transactional API): fatal when is_fatal,
 * retriable when is_retriable or txn_requires_abort, else permanent.
 * Callers check rd_kafka_error_txn_requires_abort() to choose abort. */
errc kafka_error_errc(const rd_kafka_error_t *error);

/* Low/high watermarks of topic[partition], retrying retriable errors (a
 * leader election just after topic creation) for up to timeout_ms. */
int kafka_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t *lo, int64_t *hi,
                     int timeout_ms, err_t *e);

/* Create callbacks, connections (compact), status (compact), dlq and webhooks
 * (compact) with the
 * configured partitions/replication; existing topics are accepted. */
int kafka_topics_ensure(const config_t *c, err_t *e);

#endif
