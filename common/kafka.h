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

/* An assign-only consumer (kafka_conf_consumer without a group) with settings of its own:
 * NULL or a NULL-terminated list of key, value pairs applied after the defaults; `what` names
 * it in the error. NULL + ERRC_FATAL (a bad setting names its key). The caller destroys it. */
rd_kafka_t *kafka_consumer_new(const config_t *c, const char *const *settings, const char *what,
                               err_t *e);

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

/* The topics of SPEC §2, in creation order: the one table that
 * kafka_topics_ensure creates from and `oauthqctl topics describe` checks
 * against. */
typedef struct {
    const char *suffix;         /* KAFKA_TOPIC_* */
    const char *policy;         /* cleanup.policy */
    long long min_retention_ms; /* retention.ms at creation, the least accepted; 0: compacted */
} kafka_topic_spec;

#define KAFKA_TOPICS         5
#define KAFKA_RETENTION_7D   604800000LL
#define KAFKA_RETENTION_14D  1209600000LL
#define KAFKA_TOMBSTONE_KEEP "86400000" /* delete.retention.ms of compacted topics: 1 d */

extern const kafka_topic_spec kafka_topic_specs[KAFKA_TOPICS];

/* min.insync.replicas for a replication factor: 2 from 3 replicas on, else 1. */
int kafka_min_isr(int replication);

/* An Admin API client (a producer handle from kafka_conf_admin that never auto-creates
 * topics); the caller destroys it. NULL + ERRC_FATAL. */
rd_kafka_t *kafka_admin_new(const config_t *c, err_t *e);

/* Partition count of topic from one metadata request (bounded by timeout_ms; never creates
 * the topic): 0, or -1 with ERRC_RETRIABLE (broker unreachable, timeout), ERRC_FATAL, or
 * ERRC_PERMANENT (the topic does not exist, has no partitions or an error). */
int kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms, int *n, err_t *e);

/* One record handed over by kafka_scan; the pointers live until the callback returns. */
typedef struct {
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* Kafka record timestamp, -1 when unknown */
    const char *key;      /* NUL-terminated copy, NULL for a null key */
    size_t key_len;
    const char *value; /* NUL-terminated copy, NULL for a tombstone */
    size_t value_len;
} kafka_rec;

/* Per record: 0 go on, 1 stop (not an error), -1 fail the scan (ERRC_PERMANENT "stopped by
 * caller"; the callback keeps its own reason). */
typedef int (*kafka_scan_fn)(const kafka_rec *r, void *ud);

typedef struct {
    int32_t partition;    /* < 0: every partition from the beginning; else this one ... */
    int64_t start_offset; /* ... from this offset */
    long min_records;     /* past the end, keep waiting (up to timeout_ms) for this many */
    int idle_ms;          /* no record and no end for this long: ERRC_RETRIABLE */
    int timeout_ms;       /* overall bound (> 0) */
} kafka_scan_opts;

/* The one bounded topic reader (oauthqctl, tests, tools): an assign-only read_committed
 * consumer (no group, no commits, never creates the topic) reads until every chosen partition
 * reached its end (partition EOF; re-armed when newer records arrive) and min_records were
 * handed over, or the callback stops it, or timeout_ms passed at the end (fewer records is not
 * an error: the caller judges the count). Returns the number of records handed over, or -1: a
 * missing topic or partition ERRC_PERMANENT; an unreachable broker, idle_ms without progress or
 * timeout_ms before the end ERRC_RETRIABLE. Single-threaded; one consumer per call. */
long kafka_scan(const config_t *c, const char *topic, const kafka_scan_opts *o, kafka_scan_fn fn,
                void *ud, err_t *e);

/* The partition of a record keyed by connection id: the hash of
 * librdkafka's default partitioner (consistent_random: crc32 % count), so
 * existing records keep their partition, taken over `partitions` =
 * OAUTHQ_TOPIC_PARTITIONS, never over the topic's live count. Every
 * producer of keyed callbacks (intake, oauthqctl) routes with it: an added
 * partition can never move a connection's callbacks away from its state
 * (docs/operations.md, "Scaling partitions"). */
int32_t kafka_partition_for(const char *key, size_t len, int partitions);

/* How long `oauthqctl topics create` and a starting process wait for their
 * topics to appear in metadata answers (issue 14, defect 11: right after a
 * broker start or a create, a topic may be missing from an answer for a
 * moment). */
#define KAFKA_TOPIC_WAIT_MS 30000

/* Partition count of topic once a metadata answer lists it with a leader for
 * every partition, retried every 250 ms (one request bounded by timeout_ms)
 * for up to wait_ms while the topic is missing, a partition has no leader or
 * the broker does not answer; the first wait is logged (waiting_for_topic).
 * 0, or -1: ERRC_PERMANENT (still missing after wait_ms), ERRC_RETRIABLE
 * (no answer), ERRC_FATAL. */
int kafka_wait_topic(rd_kafka_t *rk, const char *topic, int timeout_ms, int wait_ms, int *n,
                     err_t *e);

/* ERRC_FATAL (naming the topic, both counts and the way out) unless topic
 * has exactly c->topic_partitions partitions, once it is visible
 * (kafka_wait_topic, KAFKA_TOPIC_WAIT_MS; still missing: ERRC_FATAL).
 * Start-up check of every process that routes or owns by key. */
int kafka_check_partitions(rd_kafka_t *rk, const config_t *c, const char *topic, int timeout_ms,
                           err_t *e);

/* 0 when the assigned partition p of topic is one of the nparts the process counted (and
 * checked) at start; else ERRC_FATAL with what the operator must know: partitions were added
 * to the topic while the process ran (librdkafka assigns them at the next rebalance), which
 * would move connections away from their state, so the process stops; a restart refuses the
 * changed count, and the way to another count is a new topic set (docs/operations.md,
 * "Scaling partitions"). The assignment check of the worker and the webhook dispatcher. */
int kafka_check_assigned(const char *topic, int32_t p, int nparts, err_t *e);

/* Create every topic of kafka_topic_specs with the configured partitions/replication and
 * kafka_min_isr; existing topics are accepted. */
int kafka_topics_ensure(const config_t *c, err_t *e);

/* Start of a transactional producer (the dispatcher and the worker):
 * rd_kafka_init_transactions, which fences older instances with the same
 * transactional.id, retried once a second while the error is retriable (the
 * transaction coordinator warming up) for at most budget_ms. 0, or -1 with
 * ERRC_FATAL (not retriable, or the budget spent). Blocks; start-up only. */
int kafka_init_transactions(rd_kafka_t *rk, int budget_ms, err_t *e);

/* A group consumer for transactional read-process-write (the dispatcher
 * and the worker): kafka_conf_consumer (read_committed, eager range, no
 * auto commit) in group group_id with the rebalance callback and opaque,
 * no partition EOF events, 6 s session / 1 s heartbeat (a dead member's
 * partitions move quickly), subscribed to topics[0..ntopics) with the
 * consumer queue as the poll queue. NULL with ERRC_FATAL on failure. */
rd_kafka_t *
kafka_group_consumer_new(const config_t *c, const char *group_id,
                         void (*rebalance_cb)(rd_kafka_t *, rd_kafka_resp_err_t,
                                              rd_kafka_topic_partition_list_t *, void *),
                         void *opaque, const char *const *topics, int ntopics, err_t *e);

/* This process's instance id (the tail of its transactional.id) into
 * out[cap]: `configured` when not "", else the one persisted in
 * data_dir/file, else a new random one, prefix + 12 base64url characters,
 * written there, so a restarted process keeps its transactional.id and
 * fences its own zombie (KIP-447). 0 or -1 (ERRC_FATAL, file not writable). */
int kafka_instance_id(const char *configured, const char *data_dir, const char *file,
                      const char *prefix, char *out, size_t cap, err_t *e);

#endif
