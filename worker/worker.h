/*
 * worker — oauthq-worker's processing loop (SPEC §6): exactly-once keyed
 * processing of callbacks with Kafka transactions and a SQLite state store
 * per partition restored from the compacted connections changelog.
 *
 * Design (why each guarantee holds):
 *  - A continuous pipeline, not a batch barrier. One loop consumes, decides
 *    each key's transition with the pure state machine (machine.h), claims,
 *    drives the token requests (curl multi, event-driven, one per key) and
 *    settles outcomes as they complete. Every OAUTHQ_WORKER_COMMIT_MS (and
 *    as soon as OAUTHQ_WORKER_COMMIT_GAP_MS after the previous one ended
 *    when a settle or a claim waits) one transaction carries the settles of finished exchanges, the
 * claims of new ones (state `exchanging`, sealed code, hash, attempt, claiming instance and claim
 * time), DLQ records and the positions of every owned partition. A hanging request holds only its
 * own key and its slot.
 *  - Claim before send. A token request leaves only after its claim
 *    committed, so a code is sent again only when the changelog says a
 *    claim was open: the next owner counts an unknown-outcome attempt and
 *    may retry within the code's deadline (G1's one allowed re-send); every
 *    other duplicate — same code, reloads, other intakes, replays,
 *    rebalances — meets the committed state first and is recorded.
 *  - Fencing and leases (G1 across zombies). Every transaction sends the
 *    consumer group metadata with the current positions, so a worker that
 *    lost its partitions (session timeout, SIGSTOP, GC pause) commits
 *    nothing once another member owns them. A claim is a lease: the request
 *    is handed to curl only if the lease (OAUTHQ_WORKER_LEASE_MS from the
 *    claim, monotonic clock) is still valid, else it is settled "not sent".
 *    Only what can start now is claimed (sched.h: free slots under the
 *    total concurrency and the provider's bulkhead). A new owner re-sends
 *    an open claim only after claim time + lease + exchange timeout +
 *    margin, scheduled as a retry, so a zombie's last request has ended.
 *  - The offsets commit with the work, so an acknowledged callback is
 *    either still unconsumed or part of a committed state that carries
 *    everything needed to finish it (G2).
 *  - The store lags, never leads: rows are written to SQLite only after the
 *    transaction that produced them committed. On assignment (recorded by
 *    the rebalance callback, served by the loop) the partitions' committed
 *    offsets are fetched first, as stable offsets (so a previous owner's
 *    transaction that already sent its offsets is over, committed or
 *    aborted, and its records are in the log), then a partition's store is
 *    brought up to date from the changelog, read_committed until the
 *    position reaches the high watermark taken then (many records per
 *    SQLite transaction); a store ahead of the topic is rebuilt;
 *    undecodable rows are kept as held placeholders (fail closed); the
 *    providers' pause states come back with it (provider_state.v1 rows);
 *    open claims are then resolved (takeover).
 *  - Provider pauses (operator, or invalid_client with one probe per
 *    OAUTHQ_WORKER_PROBE_INTERVAL_MS) are rules in sched.h and records in
 *    the changelog, so they survive restarts and rebalances.
 *  - connections, status and callbacks are co-partitioned explicitly: a
 *    key's records go to the partition its callback came from.
 *  - Retries are rows with retry_at in the store, served by the loop's
 *    timer; nothing sleeps on a partition.
 *  - Refresh (SPEC §5b) is the same keyed work: a refresh.v1 record (or a
 *    connected row's retry_at: a retry, a takeover's re-send, or the
 *    background refresh of refresh_ahead_s) is decided by the machine
 *    (coalesced while one is claimed or the token is fresh), claimed,
 *    sent as a refresh_token grant under the same lease and fencing, and
 *    settled with the new tokens sealed in the same record that drops the
 *    old refresh token. A change that leaves the public document as it
 *    was (a refresh, a recorded later code) writes only the connections
 *    record, so the frontend and the webhooks see no new version.
 * Failure classes: retriable Kafka errors are retried; an abortable
 * transaction error aborts, releases the round's claims (nothing was sent),
 * rewinds the consumer to the committed offsets (exit if that cannot be
 * confirmed) and redoes the work; a record that cannot be read or sealed
 * (poison) goes to the DLQ with a reason and the partition keeps flowing;
 * fatal or fenced errors end the process (exit 3), a supervisor restarts it.
 * Not covered: a provider that consumes a code and answers with a
 * definitive error; token-endpoint requests lost inside the provider; the
 * provider deauthorize call of a disconnect still runs synchronously in the
 * loop (bounded by the exchange timeout).
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
