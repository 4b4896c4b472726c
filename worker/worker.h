/*
 * worker — oauthq-worker's processing loop (SPEC §6): exactly-once keyed
 * processing of callbacks with Kafka transactions and a SQLite state store
 * per partition restored from the compacted connections changelog.
 *
 * Design (why each guarantee holds):
 *  - claim / exchange / settle. For a batch, the worker decides every
 *    key's transition with the pure state machine (machine.h), then commits
 *    ONE transaction (the claim) holding the new connections and status
 *    records — for keys about to be exchanged, state `exchanging` with the
 *    code (sealed), its hash and the attempt number — and the consumer
 *    offsets. Only after that commit does any token request leave (curl
 *    multi, concurrent across keys, one per key). A second transaction (the
 *    settle) records each outcome. So a code is sent again only when the
 *    changelog says a claim was open: after a crash or fencing between claim
 *    and settle the next owner finds `claimed`, counts an unknown-outcome
 *    attempt and may retry within the code's deadline (G1's one allowed
 *    re-send); every other duplicate — same code again, reloads, other
 *    intakes, replays, rebalances — meets the committed state first and is
 *    recorded, not exchanged.
 *  - The offsets commit with the claim, so an acknowledged callback is
 *    either still unconsumed or already part of a committed state that
 *    carries everything needed to finish it (G2).
 *  - The store lags, never leads: rows are written to SQLite only after the
 *    transaction that produced them committed, with the changelog offsets
 *    the delivery reports gave. On assignment, a partition's store is
 *    brought up to date from the changelog (read_committed) before the
 *    partition is consumed, and open claims are resolved (takeover).
 *  - connections, status and callbacks are co-partitioned explicitly: a
 *    key's records go to the partition its callback came from, so a
 *    partition's state moves with the partition.
 *  - Retries are rows with retry_at in the store, served by the loop's
 *    timer; nothing sleeps on a partition.
 * Failure classes: retriable Kafka errors are retried; an abortable
 * transaction error aborts, rewinds the consumer to the committed offsets
 * and drops the batch (the claim had not committed, so nothing was sent);
 * a settle that cannot commit is retried, then the process exits; fatal or
 * fenced errors end the process (exit 3) and a supervisor restarts it.
 * Not covered: a provider that consumes a code and answers with a
 * definitive error; token-endpoint requests lost inside the provider.
 *
 * Threads: everything runs on the caller's thread (worker_run); the
 * Kafka clients' internal threads never call back into worker state except
 * through the poll calls made from that thread.
 */
#ifndef OAUTHQ_WORKER_WORKER_H
#define OAUTHQ_WORKER_WORKER_H

#include <signal.h>

#include "common/config.h"
#include "common/err.h"

typedef struct worker worker_t;

/* Load configuration, keys and providers, create the Kafka clients and
 * initialise transactions (retried while the broker warms up). */
worker_t *worker_open(const config_t *c, err_t *e);

/* Run until *stop becomes non-zero (0) or a fatal error (-1, e filled). */
int worker_run(worker_t *w, volatile sig_atomic_t *stop, err_t *e);

/* Close the consumer (leaving the group) and free everything. */
void worker_close(worker_t *w);

#endif
