/*
 * dispatcher — the webhook dispatcher's loop (SPEC §4b): consumes the
 * `status` topic in its own consumer group (read_committed, eager range
 * assignment), turns final statuses into signed deliveries (webhooks/sign,
 * common/delivery), POSTs them with curl multi (one in flight per
 * connection, at most OAUTHQ_WEBHOOK_CONCURRENCY in all, bounded timeouts,
 * no redirects, response bodies discarded unread), and persists every
 * connection's delivery state and schedule in the compacted `webhooks`
 * topic.
 *
 * Exactly-once bookkeeping, the worker's consume-transform-produce pattern:
 * the consumer subscribes to `status` and `webhooks` (co-partitioned: the
 * range assignor gives one member the same partition numbers of both), and
 * every OAUTHQ_WEBHOOK_COMMIT_MS one Kafka transaction carries the changed
 * webhook.v1 records (written to the partition number of their status
 * record) and the consumer offsets of both topics, with the group metadata
 * (fencing, KIP-447). On assignment each partition's states are restored
 * from `webhooks` (read_committed, up to the high watermark taken then)
 * before any record of it is processed. Replay requests
 * (webhook_replay.v1, written by `oauthqctl webhooks replay` to `webhooks`
 * under key "replay/<id>") are consumed in the same transactions.
 *
 * What a kill -9 can do: a delivery answered 2xx whose state had not yet
 * committed (at most one commit interval plus the request) is sent again
 * after the restart, with the same webhook-id and body; nothing whose 2xx
 * committed is sent again and nothing queued is lost.
 *
 * 410 Gone stops every delivery of this dispatcher (none is started while
 * a connection holds a gone event; new events keep being queued and
 * persisted), logs webhook_endpoint_gone at error level every minute and
 * sets oauthq_webhooks_endpoint_gone to 1, until `oauthqctl webhooks replay`
 * releases the held events.
 *
 * Single-threaded except the metrics listener (common/httpd, its own
 * threads, which read only metrics and atomics). Errors: Kafka transaction
 * failures of any kind end the run with ERRC_FATAL (the supervisor
 * restarts it; the restart restores the committed state).
 */
#ifndef OAUTHQ_WEBHOOKS_DISPATCHER_H
#define OAUTHQ_WEBHOOKS_DISPATCHER_H

#include <signal.h>

#include "common/config.h"
#include "common/err.h"

typedef struct dispatcher dispatcher_t;

/* Check the configuration (URL, secrets, topics), connect to Kafka and
 * subscribe. ERRC_FATAL on any problem, naming the variable. */
dispatcher_t *dispatcher_open(const config_t *c, err_t *e);

/* Run until *stop (then finish in-flight deliveries within the timeout and
 * commit) or a fatal error (-1). */
int dispatcher_run(dispatcher_t *d, volatile sig_atomic_t *stop, err_t *e);

/* Close Kafka clients and the listener; free everything. NULL is fine. */
void dispatcher_close(dispatcher_t *d);

/* Validate a webhook URL: http:// or https://, a host, no whitespace or
 * control characters, no user info. ERRC_FATAL naming OAUTHQ_WEBHOOK_URL. */
int dispatcher_url_check(const char *url, err_t *e);

#endif
