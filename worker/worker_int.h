/*
 * worker_int — what the worker's files share (internal: only the worker/ sources
 * include it; the public API is worker.h).
 *
 * The worker is one loop thread (worker_run) over one struct worker; its
 * concerns live one per file, all operating on that struct:
 *   worker.c      lifecycle (open, close) and the loop itself
 *   items.c       the working set: live items (one per key) and dead letters
 *   decide.c      consumed records and due work through the state machine
 *   pipeline.c    claims, leases, handing requests to curl, settles, the
 *                 commit round and the loop's read and wait budgets
 *   txn.c         Kafka transactions, the stores after a commit, rewinds
 *   partitions.c  assignment, restore, takeover, revocation, drain
 *   pauses.c      provider pause states in the changelog
 *   observe.c     metrics, lag and the HTTP listener
 * Pure rules live in machine.c (state transitions) and sched.c (slots,
 * leases, cadence), both unit-tested without Kafka.
 *
 * Threads: everything here runs on the loop's thread, except what the
 * listener's threads read (w->ready, w->fatal: atomics; metrics: lock-free)
 * and the delivery callback (run from rd_kafka_poll on the loop's thread).
 * Names shared between the files carry the wk_ prefix; the rest is static.
 */
#ifndef OAUTHQ_WORKER_WORKER_INT_H
#define OAUTHQ_WORKER_WORKER_INT_H
#include "worker/worker.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "common/clock.h"
#include "common/crypto.h"
#include "common/httpd.h"
#include "common/metrics.h"
#include "common/kafka.h"
#include "common/keyring.h"
#include "common/log.h"
#include "common/providers.h"
#include "common/records.h"
#include "common/sealed.h"
#include "common/conn.h"
#include "worker/deauth.h"
#include "common/exchange.h"
#include "worker/machine.h"
#include "worker/sched.h"
#include "worker/store.h"

#define MAX_PARTS       256
#define DUE_PER_PART    64
#define TXN_TIMEOUT_MS  30000
#define RESTORE_BATCH   2000 /* changelog records per SQLite transaction */
#define RESTORE_POKE    1000 /* records between two wake-ups of the restorer's fetcher */
#define RESTORE_POKE_MS 500  /* bound of one wake-up (a watermark query) */
#define MAX_WAIT_MS     50
#define TRICKLE         16 /* records read per MAX_WAIT_MS while no claim is possible */
/* Claims ahead of the free slots: this many times the requests that finished during the last
 * commit cycle (at most the provider's limit; see sched.h). A claim made now reaches the driver
 * only after its transaction, and the next claims one cycle later: the slots that free over
 * both must find claims waiting, and the cycle's count trails the wire's true rate. */
#define AHEAD_FACTOR 4

typedef struct {
    store_t *store;
    int assigned;        /* ours: consumed, and its offsets go into every transaction */
    int64_t next_offset; /* callbacks offset to commit (last processed + 1); -1 unknown */
} part_t;

/* One key's live work. An item lives from the record or due row that
 * touched it until its state committed and no request of it is in
 * flight; items are heap-allocated so curl may hold pointers into them. */
typedef struct {
    conn_t *c;
    int32_t partition;
    int changed;     /* state to write in the next transaction */
    int exchange;    /* the machine asked for an exchange (claim pending a slot) */
    int claimed_now; /* claimed in the open transaction: start once it commits */
    int inflight;    /* handed to curl, result pending */
    int settled;     /* result applied, its transaction not yet committed */
    int slot;        /* provider index whose claim this holds, -1 none */
    int orphan;      /* its partition went away: never committed by us */
    int deauthorize; /* revoke at the provider before the next commit */
    int probe;       /* the one request that probes a provider paused by invalid_client */
    int refresh;     /* its request is a refresh_token grant (SPEC §5b), not a code */
    /* The public document last written to the status topic (conn_public_hash):
     * a change that leaves it equal writes the connections record only. */
    uint64_t pub_hash, pub_next;
    int pub_known;
    /* The status and reason that document showed: a committed change to a
     * different final pair counts in oauthq_worker_final_total once. */
    int pub_status, pub_reason;
    int64_t claim_mono_ms;
    int64_t conn_offset; /* set by the delivery report of its connections record */
    exchange_req req;
    char code[RECORDS_CODE_MAX + 1];
    char verifier[RECORDS_VERIFIER_MAX + 1];
    char rtoken[EXCHANGE_TOKEN_MAX + 1]; /* the opened refresh token while in flight */
} item_t;

typedef struct {
    char *value;
    size_t len;
    char key[CONN_ID_MAX];
    int32_t partition;
} dlq_t;

struct worker {
    config_t cfg;
    providers_t *providers;
    keyring_t *data_keys;
    char secrets[PROVIDERS_MAX][512];
    /* Provider pause states to write to the changelog (one record per
     * partition and provider; SPEC §5 pauses survive restarts and
     * rebalances). */
    unsigned char pstate_dirty[MAX_PARTS][PROVIDERS_MAX];
    int64_t pstate_offset[MAX_PARTS][PROVIDERS_MAX]; /* delivery report: its changelog offset,
                                                        the store row's version */
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    rd_kafka_t *restorer; /* assign-only reader of the changelog (read_committed) */
    rd_kafka_t *hwm;      /* read_uncommitted handle: high watermarks for restore */
    char t_callbacks[256], t_connections[256], t_status[256], t_dlq[256];
    char group_id[160], txn_id[160], instance_id[64], redirect_uri[CONFIG_PATH_MAX + 32];
    part_t parts[MAX_PARTS];
    int nparts;
    exchange_t *x;
    sched_t sched;
    /* Requests per provider that finished since the last claim round: the
     * slots expected to free while the next claim commits (sched_set_ahead). */
    int done_cycle[PROVIDERS_MAX];
    int64_t takeover_hold_ms;
    int64_t last_commit_mono, last_commit_end_mono; /* the last transaction's start and end */
    int64_t last_trickle_mono;                      /* the last read while no claim was possible */
    int offsets_dirty;
    /* Rebalances: the callback only records them; the loop does the work. */
    rd_kafka_topic_partition_list_t *assign_pending;
    int revoke_pending;
    int closing; /* worker_close: the rebalance callback unassigns inline */
    int64_t revoke_deadline_mono;
    atomic_int fatal; /* read by the listener threads (/readyz) */
    err_t fatal_err;
    /* observability (metrics are lock-free; the listener has its own threads) */
    metrics_t *metrics;
    httpd_t *http;
    atomic_int ready;
    metric_counter *m_batches, *m_committed, *m_aborted, *m_unknown, *m_retries, *m_dlq,
        *m_takeovers, *m_not_sent;
    metric_histogram *m_exchange_s, *m_restore_s, *m_claim_wait_s;
    metric_histogram *m_txn_s[4]; /* by phase: produce, send_offsets, commit, total */
    metric_gauge *m_lag, *m_inflight, *m_waiting;
    int64_t lag_checked_ms;
    /* live working set */
    item_t **items;
    size_t nitems, cap_items;
    dlq_t *dlqs;
    size_t ndlq, cap_dlq;
    /* Session expiry's gate (callbacks_handled_before), per partition. */
    struct cb_probe {
        int64_t ok_t_ms, ok_hi; /* confirmed: the records below ok_hi predate ok_t_ms */
        int64_t t_ms, hi;       /* pending sample; hi 0: none */
        int64_t next_mono;      /* no new sample before this */
    } probe[MAX_PARTS];
};

/* Wall clock (record times, code deadlines, retry_at, pauses) and the
 * monotonic one (leases, the commit cadence, durations). */
#define now_ms  clock_wall_ms
#define mono_ms clock_mono_ms
#define mono_us clock_mono_us

/* Ids collected from a store iteration (the store cannot be re-entered
 * from its own callback: collect first, then act). */
typedef struct {
    char (*ids)[CONN_ID_MAX];
    size_t n, cap;
} id_list;

typedef enum { TXN_COMMITTED = 0, TXN_ABORTED = -1, TXN_FATAL = -2 } txn_result;

/* ---- worker/items.c ---- */
/* Mark the worker fatal once (the first error wins); the loop stops before any further transaction.
 * Any thread. */
void wk_set_fatal(worker_t *w, const char *fmt, const char *detail);
/* Index of provider name in the providers file, or -1. */
int wk_provider_index(const worker_t *w, const char *name);
/* Until when a provider's codes are held (wall ms; 0: not paused, or unknown provider). */
int64_t wk_paused_until(const worker_t *w, const char *provider);
/* The refresh rules of a provider (SPEC §5b); an unknown provider gets the safe side. */
machine_refresh_policy wk_refresh_policy(const worker_t *w, const char *provider);
/* Wipe and free one item (its code, verifier, refresh token, result and state). */
void wk_item_free(item_t *it);
/* The key's live item, loaded from its partition's store or fresh (*fresh = 1); an undecodable
 * stored row: NULL + ERRC_PERMANENT (held). */
item_t *wk_item_get(worker_t *w, const char *id, const char *provider, int32_t partition,
                    int *fresh, err_t *e);
/* Record what the state machine decided for an item (changed / exchange wanted). */
void wk_item_apply(item_t *it, machine_action a);
/* Drop live items nothing refers to any more; all == 1 drops every item curl does not hold. */
void wk_items_gc(worker_t *w, int all);
/* Forget the queued dead letters (after a commit or abort). */
void wk_dlq_reset(worker_t *w);
/* Queue a dead letter for key on partition (original may be NULL) for the next transaction. */
void wk_add_dlq_raw(worker_t *w, int32_t partition, int64_t offset, const char *key,
                    const char *original, size_t orig_len, const char *reason);
/* Queue consumed record m as a dead letter with reason for the next transaction. */
void wk_add_dlq(worker_t *w, const rd_kafka_message_t *m, const char *reason);
/* store iteration callback: append id to the id_list ud (1 stops on out of memory). */
int wk_collect_id(const char *id, const char *record, int64_t version, void *ud);

/* ---- worker/pauses.c ---- */
/* Write provider pi's pause state to partition p's changelog (every owned partition when p < 0)
 * with the next transaction. */
void wk_pstate_mark(worker_t *w, int p, int pi);
/* Provider pi's current pause state as a provider_state.v1 record (malloc'd), or NULL. */
char *wk_pstate_encode(const worker_t *w, int pi, err_t *e);
/* After partition p's restore: adopt the pause states its changelog holds (the newest decision
 * wins); an unreadable one pauses (fail closed). */
int wk_pstate_load(worker_t *w, int32_t p, err_t *e);

/* ---- worker/decide.c ---- */
/* Revoke at the provider for the items that asked (disconnect), before the transaction that commits
 * their offsets; -1 only on a fatal error. */
int wk_deauthorize_items(worker_t *w, err_t *e);
/* Decide one consumed callbacks-topic record (any schema) into the working set; poison goes to the
 * DLQ; -1 only on a fatal or retriable error (e). */
int wk_on_message(worker_t *w, const rd_kafka_message_t *m, err_t *e);
/* Bring due work (retries, deferred codes, takeovers, expiries) of the owned partitions into the
 * working set, at most the free slots per provider. */
int wk_collect_due(worker_t *w, int64_t now, err_t *e);

/* ---- worker/txn.c ---- */
/* Producer delivery callback: store the record's offset where its opaque points (connections
 * records: the store row's changelog offset). */
void wk_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
/* The positions of every owned partition (changed or not) for the next transaction; NULL when
 * nothing is owned. */
rd_kafka_topic_partition_list_t *wk_current_offsets(worker_t *w);
/* After a commit that carried it: count the item's newly final status once in
 * oauthq_worker_final_total. */
void wk_count_final(worker_t *w, item_t *it);
/* One transaction of the changed states, DLQ records, pause states and offsets, fenced by the group
 * metadata: committed, aborted (rewind and redo) or fatal. */
txn_result wk_commit_txn(worker_t *w, rd_kafka_topic_partition_list_t *offsets);
/* After a commit: write the committed states into the partition stores with their changelog
 * offsets. */
int wk_apply_to_stores(worker_t *w, err_t *e);
/* After an abort: seek the consumer back to its committed offsets; a rewind that cannot be
 * confirmed is ERRC_FATAL. */
int wk_rewind_consumer(worker_t *w, err_t *e);

/* ---- worker/pipeline.c ---- */
/* Give a claimed item's slot back without an answer (never sent); a probe that never left lets the
 * next one go. */
void wk_release_slot(worker_t *w, item_t *it);
/* exchange_perform callback (loop thread): settle a finished request's outcome into its item for
 * the next transaction. */
void wk_on_exchange_done(exchange_req *req, void *ud);
/* 1 when anything waits for a transaction (changed states, DLQ records, pause states, moved
 * offsets). */
int wk_work_pending(const worker_t *w);
/* 1 when a user or a free slot waits (a settle, a claim to make) or the working set is full. */
int wk_urgent_work(const worker_t *w);
/* How many records the loop may read now: what can be claimed, a trickle when nothing can, 0 when
 * the working set is full. */
size_t wk_read_budget(worker_t *w, size_t cap, int active);
/* How long the loop may block before the next transaction is due (0..max_wait_ms). */
int wk_commit_wait_ms(const worker_t *w, int pending, int max_wait_ms);
/* One round: revoke what asked, claim, commit, apply to the stores, hand the committed claims to
 * curl; 0, or -1 + e on a fatal error. */
int wk_commit_round(worker_t *w, err_t *e);

/* ---- worker/partitions.c ---- */
/* Close every partition store and forget the assignment. */
void wk_close_partitions(worker_t *w);
/* librdkafka rebalance callback: only records the change (no restore, no transaction); the loop
 * serves it. */
void wk_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                     rd_kafka_topic_partition_list_t *parts, void *opaque);
/* Serve a pending revocation: let requests finish (bounded), commit their settles, orphan the rest,
 * unassign; 0 also while still draining. */
int wk_serve_revoke(worker_t *w, err_t *e);
/* Stop requested: finish the requests in flight within the exchange timeout, commit, give the
 * partitions up. */
int wk_drain(worker_t *w, err_t *e);
/* Serve a pending assignment: committed offsets (stable), restore, pause states, takeover, then
 * assign and resume; -1 + e (fatal). */
int wk_serve_assign(worker_t *w, err_t *e);

/* ---- worker/observe.c ---- */
/* Refresh the consumer-lag gauge from cached watermarks, at most every 5 s. */
void wk_update_lag(worker_t *w);
/* Create the metrics and start the /metrics, /healthz, /readyz listener (when OAUTHQ_WORKER_LISTEN
 * is set). */
int wk_open_observability(worker_t *w, err_t *e);

#endif
