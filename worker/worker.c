/* worker — see worker.h. */
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

static void set_fatal(worker_t *w, const char *fmt, const char *detail)
{
    if (atomic_load(&w->fatal))
        return;
    atomic_store(&w->fatal, 1);
    err_set(&w->fatal_err, ERRC_FATAL, fmt, detail);
}

static int provider_index(const worker_t *w, const char *name)
{
    for (size_t i = 0; i < providers_count(w->providers); i++)
        if (strcmp(providers_at(w->providers, i)->name, name) == 0)
            return (int)i;
    return -1;
}

/* Until when a provider's codes are held (0: not paused, or unknown provider). */
static int64_t paused_until(const worker_t *w, const char *provider)
{
    int pi = provider_index(w, provider);
    return pi >= 0 ? sched_paused_until(&w->sched, pi, now_ms()) : 0;
}

/* Write provider pi's pause state to partition p's changelog (all owned
 * partitions when p < 0) with the next transaction. */
/* The refresh rules of a provider (SPEC §5b); unknown: the safe side. */
static machine_refresh_policy refresh_policy(const worker_t *w, const char *provider)
{
    const provider_t *pv = providers_find(w->providers, provider);
    machine_refresh_policy rp = {pv ? pv->refresh_rotation : 1, pv ? pv->refresh_ahead_s : 0,
                                 w->cfg.refresh_skew_s};
    return rp;
}

static void pstate_mark(worker_t *w, int p, int pi)
{
    if (pi < 0 || pi >= PROVIDERS_MAX)
        return;
    for (int q = p < 0 ? 0 : p; q < (p < 0 ? w->nparts : p + 1) && q < MAX_PARTS; q++)
        if (w->parts[q].assigned || q == p)
            w->pstate_dirty[q][pi] = 1;
}

static const char *pstate_name(sched_pause_kind k)
{
    return k == SCHED_PAUSED_OPERATOR         ? "paused"
           : k == SCHED_PAUSED_INVALID_CLIENT ? "invalid_client"
                                              : "running";
}

/* Provider pi's current pause state as a provider_state.v1 record. */
static char *pstate_encode(const worker_t *w, int pi, err_t *e)
{
    records_provider_state r;
    memset(&r, 0, sizeof r);
    snprintf(r.provider, sizeof r.provider, "%s", providers_at(w->providers, (size_t)pi)->name);
    snprintf(r.state, sizeof r.state, "%s", pstate_name(w->sched.pause[pi]));
    r.until_ms = w->sched.pause[pi] == SCHED_PAUSED_INVALID_CLIENT ? w->sched.pause_until[pi] : 0;
    r.as_of_ms = w->sched.pause_as_of[pi];
    snprintf(r.by, sizeof r.by, "%s", w->instance_id);
    return records_provider_state_encode(&r, e);
}

/* After a partition's restore: the pause states its changelog holds (the
 * newest decision per provider wins across partitions). */
static int pstate_load(worker_t *w, int32_t p, err_t *e)
{
    for (size_t pi = 0; pi < providers_count(w->providers) && pi < PROVIDERS_MAX; pi++) {
        char key[RECORDS_PROVIDER_MAX + 16], *rec = NULL;
        int64_t version = 0;
        snprintf(key, sizeof key, "%s%s", RECORDS_PROVIDER_STATE_KEY_PREFIX,
                 providers_at(w->providers, pi)->name);
        int got = store_get(w->parts[p].store, key, &rec, &version, e);
        if (got < 0)
            return -1;
        if (!got)
            continue;
        records_provider_state r;
        err_t de = {0};
        int ok = records_provider_state_decode(rec, strlen(rec), &r, &de) == 0;
        free(rec);
        if (!ok) {
            /* Fail closed: an unreadable pause state holds the provider
             * until an operator resumes it. */
            log_kv(LOGL_ERROR, "provider_state_unreadable", "provider", key, "reason", de.msg,
                   "action", "paused until oauthqctl provider resume");
            sched_pause_set(&w->sched, (int)pi, SCHED_PAUSED_OPERATOR, 0, 1);
            continue;
        }
        sched_pause_kind k = strcmp(r.state, "paused") == 0           ? SCHED_PAUSED_OPERATOR
                             : strcmp(r.state, "invalid_client") == 0 ? SCHED_PAUSED_INVALID_CLIENT
                                                                      : SCHED_RUNNING;
        if (sched_pause_set(&w->sched, (int)pi, k, r.until_ms, r.as_of_ms) && k != SCHED_RUNNING)
            log_kv(LOGL_WARN, "provider_paused", "provider", r.provider, "reason",
                   k == SCHED_PAUSED_OPERATOR ? "operator (restored)"
                                              : "invalid_client (restored)");
    }
    return 0;
}

/* ---- batch working set ------------------------------------------------------ */

/* The key's live item. Orphans (their partition was revoked while their
 * request ran) never match: if the partition comes back, its work starts
 * from the committed state in the store, where the orphan's claim is an
 * open claim that takeover resolves (found by chaos: a worker stopped past
 * its session timeout got its partition back, and the orphan's stale state
 * shadowed the store forever). */
static item_t *item_find(worker_t *w, const char *id)
{
    for (size_t i = 0; i < w->nitems; i++)
        if (!w->items[i]->orphan && strcmp(w->items[i]->c->id, id) == 0)
            return w->items[i];
    return NULL;
}

static void item_free(item_t *it)
{
    crypto_wipe(it->code, sizeof it->code);
    crypto_wipe(it->verifier, sizeof it->verifier);
    crypto_wipe(it->rtoken, sizeof it->rtoken);
    crypto_wipe(&it->req.result, sizeof it->req.result);
    if (it->c)
        crypto_wipe(it->c, sizeof *it->c);
    free(it->c);
    free(it);
}

/* Get the key's live item, loading its state from the store (or a fresh
 * one). *fresh = 1: no state. A stored row that cannot be decoded fails
 * closed: NULL with ERRC_PERMANENT (the caller dead-letters the record). */
static item_t *item_get(worker_t *w, const char *id, const char *provider, int32_t partition,
                        int *fresh, err_t *e)
{
    item_t *it = item_find(w, id);
    *fresh = 0;
    if (it)
        return it;
    if (w->nitems == w->cap_items) {
        size_t nc = w->cap_items ? w->cap_items * 2 : 64;
        item_t **ni = realloc(w->items, nc * sizeof *ni);
        if (!ni) {
            err_set(e, ERRC_FATAL, "out of memory");
            return NULL;
        }
        w->items = ni;
        w->cap_items = nc;
    }
    it = calloc(1, sizeof *it);
    if (it)
        it->c = calloc(1, sizeof *it->c);
    if (!it || !it->c) {
        free(it);
        err_set(e, ERRC_FATAL, "out of memory");
        return NULL;
    }
    it->partition = partition;
    it->conn_offset = -1;
    it->slot = -1;
    char *rec = NULL;
    int64_t version = 0;
    store_t *st = partition >= 0 && partition < MAX_PARTS ? w->parts[partition].store : NULL;
    int got = st ? store_get(st, id, &rec, &version, e) : 0;
    if (got < 0) {
        item_free(it);
        return NULL;
    }
    if (got == 1) {
        err_t de = {0};
        int ok = conn_decode(rec, strlen(rec), it->c, &de) == 0;
        crypto_wipe(rec, strlen(rec));
        free(rec);
        if (!ok) {
            log_kv(LOGL_ERROR, "store_record_unreadable", "connection_id", id, "reason", de.msg);
            item_free(it);
            err_set(e, ERRC_PERMANENT, "stored state of the connection is unreadable (held)");
            return NULL;
        }
        it->pub_hash = conn_public_hash(it->c);
        it->pub_known = 1;
        it->pub_status = (int)it->c->status;
        it->pub_reason = (int)it->c->reason;
    } else {
        it->pub_status = (int)CONN_PENDING;
        conn_init(it->c, id, provider, now_ms());
        *fresh = 1;
    }
    w->items[w->nitems++] = it;
    return it;
}

/* Record what the state machine decided for an item. */
static void item_apply(item_t *it, machine_action a)
{
    if (a != MACHINE_UNCHANGED)
        it->changed = 1;
    if (a == MACHINE_EXCHANGE)
        it->exchange = 1;
}

/* Drop the live items nothing refers to any more (committed, not in
 * flight); all == 1 drops every item not held by curl. */
static void items_gc(worker_t *w, int all)
{
    size_t k = 0;
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = w->items[i];
        /* An orphan is never committed: it stays only while curl holds it. */
        int keep =
            it->inflight || (!all && !it->orphan &&
                             (it->changed || it->claimed_now || it->exchange || it->deauthorize));
        if (keep)
            w->items[k++] = it;
        else
            item_free(it);
    }
    w->nitems = k;
}

static void dlq_reset(worker_t *w)
{
    for (size_t i = 0; i < w->ndlq; i++)
        free(w->dlqs[i].value);
    w->ndlq = 0;
}

/* Queue a dead-letter record (key of key_len bytes, original may be NULL)
 * for the next transaction; event names the log line. */
static void dlq_push(worker_t *w, int32_t partition, int64_t offset, const char *key,
                     size_t key_len, const char *original, size_t orig_len, const char *reason,
                     const char *event)
{
    if (w->ndlq == w->cap_dlq) {
        size_t nc = w->cap_dlq ? w->cap_dlq * 2 : 16;
        dlq_t *nd = realloc(w->dlqs, nc * sizeof *nd);
        if (!nd) {
            /* Never drop it: the record's offset would commit without its
             * dead letter. Fatal stops the loop before any transaction. */
            set_fatal(w, "dead-letter record: %s", "out of memory");
            return;
        }
        w->dlqs = nd;
        w->cap_dlq = nc;
    }
    dlq_t *d = &w->dlqs[w->ndlq];
    d->value = conn_dlq_json(reason, w->t_callbacks, partition, offset, key, key_len, original,
                             orig_len, 1, reason, reason, now_ms(), NULL);
    if (!d->value) {
        set_fatal(w, "dead-letter record: %s", "out of memory");
        return;
    }
    d->len = strlen(d->value);
    d->partition = partition;
    size_t kn = key_len < sizeof d->key - 1 ? key_len : sizeof d->key - 1;
    memcpy(d->key, key ? key : "", key ? kn : 0);
    d->key[key ? kn : 0] = '\0';
    w->ndlq++;
    log_kv(LOGL_WARN, event, "reason", reason, "key", d->key);
}

/* A dead-letter record for key on partition (original may be NULL). */
static void add_dlq_raw(worker_t *w, int32_t partition, int64_t offset, const char *key,
                        const char *original, size_t orig_len, const char *reason)
{
    dlq_push(w, partition, offset, key, strlen(key), original, orig_len, reason, "record_to_dlq");
}

static void add_dlq(worker_t *w, const rd_kafka_message_t *m, const char *reason)
{
    dlq_push(w, m->partition, m->offset, m->key, m->key_len, m->payload, m->len, reason,
             "callback_to_dlq");
}

/* A usable key is a printable token short enough to be a connection id. */
static int key_usable(const rd_kafka_message_t *m)
{
    if (!m->key || m->key_len == 0 || m->key_len >= CONN_ID_MAX)
        return 0;
    for (size_t i = 0; i < m->key_len; i++) {
        char ch = ((const char *)m->key)[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return 0;
    }
    return 1;
}

/* ---- deciding -------------------------------------------------------------- */

/* item_get failed for message m: a key whose stored state cannot be read
 * is held (SPEC §6: fail closed) and the record dead-lettered, so the
 * partition keeps flowing; any other error is the caller's. */
static int held(worker_t *w, const rd_kafka_message_t *m, err_t *e)
{
    if (e->cls != ERRC_PERMANENT)
        return -1;
    add_dlq(w, m, e->msg);
    err_clear(e);
    return 0;
}

/* An operator's replay.v1 record: through the state machine, never a
 * second exchange of a definitively answered code. */
static int on_replay(worker_t *w, const rd_kafka_message_t *m, const char *key, err_t *e)
{
    records_replay rp;
    err_t de = {0};
    if (records_replay_decode(m->payload, m->len, &rp, &de) < 0 ||
        strcmp(rp.connection_id, key) != 0) {
        add_dlq(w, m, de.msg[0] ? de.msg : "replay: key is not its connection_id");
        return 0;
    }
    int fresh;
    item_t *it = item_get(w, key, "unknown", m->partition, &fresh, e);
    if (!it)
        return held(w, m, e);
    if (it->exchange || it->claimed_now || it->inflight)
        return 0; /* already being exchanged */
    machine_action a = machine_on_replay(it->c, fresh, paused_until(w, it->c->provider), now_ms());
    if (!fresh) /* an unknown id: nothing to record */
        item_apply(it, a);
    log_kv(LOGL_INFO, "replay", "connection_id", key, "requested_by", rp.requested_by, "result",
           a == MACHINE_EXCHANGE ? "exchange"
           : fresh               ? "unknown connection"
                                 : it->c->last_error);
    return 0;
}

/* Ids collected from a store iteration (the store cannot be re-entered
 * from its own callback: collect first, then act). */
typedef struct {
    char (*ids)[CONN_ID_MAX];
    size_t n, cap;
} id_list;

static int collect_id(const char *id, const char *record, int64_t version, void *ud)
{
    (void)record;
    (void)version;
    id_list *l = ud;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        char(*ni)[CONN_ID_MAX] = realloc(l->ids, nc * sizeof *ni);
        if (!ni)
            return 1;
        l->ids = ni;
        l->cap = nc;
    }
    snprintf(l->ids[l->n++], CONN_ID_MAX, "%s", id);
    return 0;
}

/* A provider.v1 record (oauthqctl provider pause|resume). Every partition
 * carries a copy, so every worker sees one; handling is idempotent. */
static int on_provider(worker_t *w, const rd_kafka_message_t *m, err_t *e)
{
    records_provider pr;
    err_t de = {0};
    if (records_provider_decode(m->payload, m->len, &pr, &de) < 0) {
        add_dlq(w, m, de.msg);
        return 0;
    }
    int pi = provider_index(w, pr.provider);
    if (pi < 0) {
        add_dlq(w, m, "provider record: unknown provider");
        return 0;
    }
    const provider_t *pv = providers_at(w->providers, (size_t)pi);
    int64_t now = now_ms();
    /* Every partition's changelog keeps the provider's state (a copy of
     * the record reaches each partition): a restarted or newly assigned
     * worker restores it (SPEC §5). */
    pstate_mark(w, m->partition, pi);
    if (pr.pause) {
        if (sched_pause_set(&w->sched, pi, SCHED_PAUSED_OPERATOR, 0, pr.requested_at_ms))
            log_kv(LOGL_WARN, "provider_paused", "provider", pv->name, "by", pr.requested_by,
                   "reason", "operator");
        return 0;
    }
    /* Resume: the configuration was fixed — read the secret again. */
    char secret[sizeof w->secrets[0]];
    if (providers_client_secret(pv, secret, sizeof secret, NULL, &de) < 0) {
        log_kv(LOGL_ERROR, "provider_resume_secret_unreadable", "provider", pv->name, "reason",
               de.msg);
    } else {
        memcpy(w->secrets[pi], secret, sizeof secret);
    }
    crypto_wipe(secret, sizeof secret);
    int was_paused = w->sched.pause[pi] != SCHED_RUNNING;
    if (!sched_pause_set(&w->sched, pi, SCHED_RUNNING, 0, pr.requested_at_ms))
        return 0; /* a newer decision is already in force */
    log_kv(LOGL_INFO, "provider_resumed", "provider", pv->name, "by", pr.requested_by);
    if (!was_paused)
        return 0;
    /* Held codes of this provider are exchanged now (those past their
     * deadline end as code_expired in machine_on_due). */
    for (int p = 0; p < w->nparts; p++) {
        if (!w->parts[p].store)
            continue;
        id_list l = {NULL, 0, 0};
        if (store_due(w->parts[p].store, INT64_MAX / 2, 10000, collect_id, &l, e) < 0) {
            free(l.ids);
            return -1;
        }
        for (size_t i = 0; i < l.n; i++) {
            int fresh;
            item_t *it = item_get(w, l.ids[i], "unknown", p, &fresh, e);
            if (!it && e->cls == ERRC_PERMANENT) {
                err_clear(e);
                continue;
            }
            if (!it) {
                free(l.ids);
                return -1;
            }
            if (fresh || it->exchange || strcmp(it->c->provider, pv->name) != 0 ||
                it->c->phase != PHASE_RETRYING)
                continue;
            it->c->retry_at_ms = now;
            item_apply(it, machine_on_due(it->c, 0, now));
        }
        free(l.ids);
    }
    return 0;
}

/* A disconnect.v1 record (DELETE /v1/connections/{id}). */
static int on_disconnect(worker_t *w, const rd_kafka_message_t *m, const char *key, err_t *e)
{
    records_replay d;
    err_t de = {0};
    if (records_disconnect_decode(m->payload, m->len, &d, &de) < 0 ||
        strcmp(d.connection_id, key) != 0) {
        add_dlq(w, m, de.msg[0] ? de.msg : "disconnect: key is not its connection_id");
        return 0;
    }
    int fresh;
    item_t *it = item_get(w, key, "unknown", m->partition, &fresh, e);
    if (!it)
        return held(w, m, e);
    machine_action a = machine_on_disconnect(it->c, fresh, now_ms());
    if (a == MACHINE_CHANGED)
        it->changed = 1;
    if (a == MACHINE_DEAUTHORIZE)
        it->deauthorize = 1;
    return 0;
}

/* A refresh.v1 record (SPEC §5b): the token API found the access token
 * stale. Coalesced by the state machine: one refresh per connection at a
 * time, none while the committed token is fresh. Carries no secret. */
static int on_refresh(worker_t *w, const rd_kafka_message_t *m, const char *key, err_t *e)
{
    records_refresh rr;
    err_t de = {0};
    if (records_refresh_decode(m->payload, m->len, &rr, &de) < 0 ||
        strcmp(rr.connection_id, key) != 0) {
        add_dlq(w, m, de.msg[0] ? de.msg : "refresh: key is not its connection_id");
        return 0;
    }
    int fresh;
    item_t *it = item_get(w, key, rr.provider, m->partition, &fresh, e);
    if (!it)
        return held(w, m, e);
    machine_action a = MACHINE_UNCHANGED;
    const char *result = "coalesced";
    if (fresh || strcmp(it->c->provider, rr.provider) != 0) {
        result = fresh ? "unknown connection" : "provider mismatch";
    } else if (it->exchange || it->claimed_now || it->inflight) {
        result = "coalesced: in flight";
    } else {
        machine_refresh_policy rp = refresh_policy(w, it->c->provider);
        a = machine_on_refresh_request(it->c, 0, &rp, paused_until(w, it->c->provider), now_ms());
        item_apply(it, a);
        result = a == MACHINE_EXCHANGE             ? "refresh"
                 : a == MACHINE_CHANGED            ? it->c->last_error
                 : it->c->status != CONN_CONNECTED ? "not connected"
                 : it->c->claimed                  ? "coalesced: in flight"
                                                   : "coalesced: fresh or scheduled";
    }
    char seen[24];
    snprintf(seen, sizeof seen, "%lld", (long long)rr.seen_version);
    char labels[48];
    snprintf(labels, sizeof labels, "result=\"%s\"",
             a == MACHINE_EXCHANGE  ? "refresh"
             : a == MACHINE_CHANGED ? "changed"
                                    : "coalesced");
    metrics_counter_add(metrics_counter(w->metrics, "oauthq_worker_refresh_requests_total",
                                        "refresh.v1 requests by what they caused", labels),
                        1);
    log_kv(LOGL_INFO, "refresh_request", "connection_id", key, "seen_version", seen, "result",
           result, "request_id", rr.request_id);
    if (fresh)
        items_gc(w, 0);
    return 0;
}

/* A session.v1 record (SPEC §4a, §4b): the intake created this connection.
 * A fresh connection waits for its callback until the session's expiry
 * plus OAUTHQ_SESSION_EXPIRY_MARGIN_MS, then the due scan makes it
 * `expired` (machine_on_due). Known connections are left alone: a replayed
 * or late session record changes nothing. Carries no secret. */
static int on_session(worker_t *w, const rd_kafka_message_t *m, const char *key, err_t *e)
{
    static __thread records_session s; /* ~3 KiB: off the loop's stack */
    err_t de = {0};
    if (records_session_decode(m->payload, m->len, &s, &de) < 0 ||
        strcmp(s.connection_id, key) != 0) {
        add_dlq(w, m, de.msg[0] ? de.msg : "session: key is not its connection_id");
        return 0;
    }
    if (provider_index(w, s.provider) < 0) {
        char why[64];
        snprintf(why, sizeof why, "unknown_provider: %.32s", s.provider);
        add_dlq(w, m, why);
        return 0;
    }
    int fresh;
    item_t *it = item_get(w, key, s.provider, m->partition, &fresh, e);
    if (!it)
        return held(w, m, e);
    machine_action a =
        machine_on_session(it->c, fresh, &s, w->cfg.session_expiry_margin_ms, now_ms());
    item_apply(it, a);
    log_kv(LOGL_INFO, "session_recorded", "connection_id", key, "result",
           a == MACHINE_UNCHANGED ? "known already" : "awaiting callback", "request_id",
           s.request_id);
    if (a == MACHINE_UNCHANGED && fresh)
        items_gc(w, 0);
    return 0;
}

/* Revoke at the provider for the items that asked, before the claim
 * transaction commits their offsets: a crash in between re-consumes the
 * request and revokes again, which providers treat as already done. */
static int deauthorize_items(worker_t *w, err_t *e)
{
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = w->items[i];
        if (!it->deauthorize)
            continue;
        it->deauthorize = 0;
        const provider_t *pv = providers_find(w->providers, it->c->provider);
        int pi = provider_index(w, it->c->provider);
        char acc[SEALED_PLAIN_MAX + 1] = "", ref[SEALED_PLAIN_MAX + 1] = "";
        deauth_result r;
        memset(&r, 0, sizeof r);
        if (!pv) {
            r.cls = DEAUTH_MISCONFIGURED;
            snprintf(r.detail, sizeof r.detail, "provider not configured");
        } else if ((it->c->access_sealed[0] &&
                    sealed_open(w->data_keys, it->c->id, "access_token", it->c->access_sealed, acc,
                                sizeof acc, e) < 0) ||
                   (it->c->refresh_sealed[0] &&
                    sealed_open(w->data_keys, it->c->id, "refresh_token", it->c->refresh_sealed,
                                ref, sizeof ref, e) < 0)) {
            crypto_wipe(acc, sizeof acc);
            crypto_wipe(ref, sizeof ref);
            return -1;
        } else if (deauth_run(pv, w->secrets[pi], it->c->account_id, acc, ref,
                              w->cfg.exchange_timeout_ms, &r, e) < 0) {
            r.cls = DEAUTH_FAILED;
            snprintf(r.detail, sizeof r.detail, "%.150s", e->msg);
            err_clear(e);
        }
        crypto_wipe(acc, sizeof acc);
        crypto_wipe(ref, sizeof ref);
        if (machine_on_deauthorized(it->c, r.cls == DEAUTH_DONE, r.detail, now_ms()) !=
            MACHINE_UNCHANGED)
            it->changed = 1;
        log_kv(LOGL_INFO, "disconnect", "connection_id", it->c->id, "outcome",
               deauth_class_name(r.cls), "detail", r.detail, "status",
               conn_status_name(it->c->status));
    }
    return 0;
}

static int on_message(worker_t *w, const rd_kafka_message_t *m, err_t *e)
{
    char key[CONN_ID_MAX] = "";
    int usable = key_usable(m);
    if (usable) {
        memcpy(key, m->key, m->key_len);
        key[m->key_len] = '\0';
    }
    /* Dispatch on the record's schema (one parse; callbacks fall through). */
    char schema[40] = "";
    if (m->payload)
        records_schema_of(m->payload, m->len, schema, sizeof schema);
    if (strcmp(schema, RECORDS_PROVIDER_SCHEMA) == 0)
        return on_provider(w, m, e);
    if (usable && strcmp(schema, RECORDS_REPLAY_SCHEMA) == 0)
        return on_replay(w, m, key, e);
    if (usable && strcmp(schema, RECORDS_DISCONNECT_SCHEMA) == 0)
        return on_disconnect(w, m, key, e);
    if (usable && strcmp(schema, RECORDS_REFRESH_SCHEMA) == 0)
        return on_refresh(w, m, key, e);
    if (usable && strcmp(schema, RECORDS_SESSION_SCHEMA) == 0)
        return on_session(w, m, key, e);
    records_callback cb;
    err_t de = {0};
    const char *reason = NULL;
    char why[ERR_MSG_MAX + 32];
    if (!m->payload) {
        reason = "empty record";
    } else if (records_callback_decode(m->payload, m->len, &cb, &de) < 0) {
        snprintf(why, sizeof why, "malformed_callback: %s", de.msg);
        reason = why;
    } else if (!usable || strcmp(cb.connection_id, key) != 0) {
        reason = "key_mismatch: record key is not its connection_id";
    } else if (provider_index(w, cb.provider) < 0) {
        snprintf(why, sizeof why, "unknown_provider: %.32s", cb.provider);
        reason = why;
    }
    if (reason) {
        add_dlq(w, m, reason);
        if (usable) {
            int fresh;
            item_t *it = item_get(w, key, "unknown", m->partition, &fresh, e);
            if (!it) {
                crypto_wipe(&cb, sizeof cb);
                if (e->cls != ERRC_PERMANENT)
                    return -1;
                err_clear(e); /* held; the record is already dead-lettered */
                return 0;
            }
            if (machine_on_malformed(it->c, fresh, now_ms()) != MACHINE_UNCHANGED)
                it->changed = 1;
        }
        crypto_wipe(&cb, sizeof cb);
        return 0;
    }
    const provider_t *pv = providers_find(w->providers, cb.provider);
    int fresh;
    item_t *it = item_get(w, key, cb.provider, m->partition, &fresh, e);
    if (!it) {
        crypto_wipe(&cb, sizeof cb);
        return held(w, m, e);
    }
    if (strcmp(it->c->provider, cb.provider) != 0) {
        if (provider_index(w, it->c->provider) >= 0) {
            /* The state token named the provider; a record that names
             * another one is not from our intake. */
            add_dlq(w, m, "provider_mismatch: record names another provider");
            crypto_wipe(&cb, sizeof cb);
            return 0;
        }
        /* State created by an earlier malformed record: adopt it. */
        snprintf(it->c->provider, sizeof it->c->provider, "%s", cb.provider);
    }
    char hash[CRYPTO_SHA256_HEX] = "";
    char code_sealed[CONN_SEALED_SMALL] = "", ver_sealed[CONN_SEALED_SMALL] = "";
    if (cb.kind == RECORDS_CB_CODE) {
        crypto_sha256_hex(cb.code, strlen(cb.code), hash);
        int dup = !fresh && strcmp(it->c->code_hash, hash) == 0;
        if (!dup && (sealed_seal(w->data_keys, key, "code", cb.code, strlen(cb.code), code_sealed,
                                 sizeof code_sealed, e) < 0 ||
                     (cb.code_verifier[0] && sealed_seal(w->data_keys, key, "code_verifier",
                                                         cb.code_verifier, strlen(cb.code_verifier),
                                                         ver_sealed, sizeof ver_sealed, e) < 0))) {
            crypto_wipe(&cb, sizeof cb);
            return -1;
        }
    }
    char request_id[RECORDS_ID_MAX]; /* correlation with the intake's logs */
    snprintf(request_id, sizeof request_id, "%s", cb.request_id);
    machine_action a = machine_on_callback(it->c, fresh, &cb, hash, code_sealed, ver_sealed,
                                           pv->code_ttl_s, now_ms());
    int is_code = cb.kind == RECORDS_CB_CODE;
    crypto_wipe(&cb, sizeof cb);                       /* holds the code: nothing below reads cb */
    int64_t paused = paused_until(w, it->c->provider); /* cb is wiped by now */
    if (a == MACHINE_EXCHANGE && paused > now_ms()) {
        machine_hold(it->c, paused, now_ms()); /* paused: held, not sent */
        a = MACHINE_CHANGED;
    }
    item_apply(it, a);
    char cid[LOG_CODE_ID_LEN + 1];
    if (a == MACHINE_UNCHANGED || (is_code && !it->exchange && !fresh))
        log_kv(LOGL_INFO, "callback_not_exchanged", "connection_id", key, "code_sha256",
               log_code_id(hash, cid), "status", conn_status_name(it->c->status), "request_id",
               request_id);
    return 0;
}

/* The wall time T (0: none yet) such that every callbacks record of
 * partition p appended before T has gone through on_message at this
 * worker's current position (parts[p].next_offset: moves back on a rewind,
 * so a rewind closes the gate again). A session expires only at a due time
 * before T: a callback acknowledged before its expiry that still waits
 * behind a lagging or restarted worker is handled first (SPEC §5: expired
 * is final). Two phases as the intake's settling: sample the end offset at
 * t, confirm t once the position reached it. At most one sample per
 * partition per second, taken only while a session is due (a bounded
 * metadata call to the broker on the loop; 1 s at most). */
static int64_t callbacks_handled_before(worker_t *w, int32_t p)
{
    if (p < 0 || p >= MAX_PARTS || !w->parts[p].assigned)
        return 0;
    struct cb_probe *s = &w->probe[p];
    int64_t pos = w->parts[p].next_offset;
    if (s->hi > 0 && pos >= s->hi) { /* the sample is reached: confirmed */
        s->ok_t_ms = s->t_ms;
        s->ok_hi = s->hi;
        s->hi = 0;
    }
    if (s->hi <= 0 && mono_ms() >= s->next_mono) {
        int64_t t = now_ms(), lo = 0, hi = 0;
        err_t e = {0};
        int tmo = w->cfg.kafka_timeout_ms < 1000 ? w->cfg.kafka_timeout_ms : 1000;
        s->next_mono = mono_ms() + 1000;
        if (kafka_watermarks(w->hwm, w->t_callbacks, p, &lo, &hi, tmo, &e) == 0) {
            if (pos >= 0 && pos >= hi) {
                s->ok_t_ms = t;
                s->ok_hi = hi;
            } else {
                s->t_ms = t;
                s->hi = hi > 0 ? hi : 1;
            }
        }
    }
    return pos >= 0 && pos >= s->ok_hi ? s->ok_t_ms : 0;
}

/* Due work (scheduled retries, deferred codes, lease-expired takeovers)
 * of the owned partitions, per provider, no more than its free in-flight
 * slots: claim only what can start now. */
static int collect_due(worker_t *w, int64_t now, err_t *e)
{
    for (size_t pi = 0; pi < providers_count(w->providers); pi++) {
        const char *name = providers_at(w->providers, pi)->name;
        int want = sched_free(&w->sched, (int)pi);
        /* Paused by invalid_client and at its probe time: one code goes
         * (the probe), the rest wait for its answer (issue 14, defect 6);
         * while paused every due code is held or expires at its deadline. */
        int allow = sched_claimable(&w->sched, (int)pi, now);
        int64_t paused = sched_paused_until(&w->sched, (int)pi, now);
        for (size_t i = 0; i < w->nitems; i++)
            if (w->items[i]->exchange && strcmp(w->items[i]->c->provider, name) == 0) {
                want--;
                allow--;
            }
        for (int p = 0; p < w->nparts && want > 0; p++) {
            if (!w->parts[p].store || !w->parts[p].assigned)
                continue;
            id_list l = {NULL, 0, 0};
            if (store_due_provider(w->parts[p].store, name, now, want + DUE_PER_PART, collect_id,
                                   &l, e) < 0) {
                free(l.ids);
                return -1;
            }
            for (size_t i = 0; i < l.n && want > 0; i++) {
                int fresh;
                item_t *it = item_get(w, l.ids[i], "unknown", p, &fresh, e);
                if (!it && e->cls == ERRC_PERMANENT) {
                    err_clear(e);
                    continue;
                }
                if (!it) {
                    free(l.ids);
                    return -1;
                }
                if (fresh || it->exchange || it->claimed_now || it->inflight)
                    continue;
                if (it->c->status == CONN_PENDING && it->c->phase == PHASE_AWAITING_CALLBACK &&
                    callbacks_handled_before(w, p) < it->c->retry_at_ms)
                    continue; /* a session: its callback may still be queued behind */
                if (paused <= now && allow <= 0 &&
                    (it->c->status == CONN_CONNECTED || now < it->c->deadline_ms))
                    continue; /* waits for the probe's answer */
                machine_action a = machine_on_due(it->c, paused, now);
                item_apply(it, a);
                if (a == MACHINE_EXCHANGE) {
                    want--;
                    allow--;
                }
            }
            free(l.ids);
        }
    }
    return 0;
}

/* ---- transactions ---------------------------------------------------------------- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    int64_t *slot = m->_private;
    if (slot && !m->err)
        *slot = m->offset;
}

/* Classify a transactional API error: 1 retry the call, 2 abort the
 * transaction, 3 fatal. */
static int txn_error_kind(rd_kafka_error_t *err)
{
    if (rd_kafka_error_is_fatal(err))
        return 3;
    if (rd_kafka_error_txn_requires_abort(err))
        return 2;
    if (rd_kafka_error_is_retriable(err))
        return 1;
    return 3;
}

static int produce(worker_t *w, const char *topic, int32_t partition, const char *key,
                   const char *value, size_t len, int64_t *offset_slot)
{
    rd_kafka_resp_err_t err;
    for (int i = 0; i < 100; i++) {
        err = rd_kafka_producev(w->producer, RD_KAFKA_V_TOPIC(topic),
                                RD_KAFKA_V_PARTITION(partition), RD_KAFKA_V_KEY(key, strlen(key)),
                                RD_KAFKA_V_VALUE((void *)(uintptr_t)value, len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_OPAQUE(offset_slot), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(w->producer, 50);
    }
    if (err) {
        log_kv(LOGL_ERROR, "produce_failed", "topic", topic, "reason", rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

/* Offsets of every owned partition (the current positions, changed or
 * not): sent with every transaction so the group coordinator fences a
 * worker that lost its partitions (SPEC §6). NULL when nothing is owned. */
static rd_kafka_topic_partition_list_t *current_offsets(worker_t *w)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (int p = 0; p < w->nparts; p++)
        if (w->parts[p].assigned && w->parts[p].next_offset >= 0)
            rd_kafka_topic_partition_list_add(l, w->t_callbacks, p)->offset =
                w->parts[p].next_offset;
    if (l->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(l);
        return NULL;
    }
    return l;
}

/* A committed transaction carried its record: when the status it shows
 * became final (or a different final status or reason), count it once in
 * oauthq_worker_final_total — whatever made it final: an exchange, a code
 * deadline (code_expired), a session's expiry (expired), a disconnect. */
static void count_final(worker_t *w, item_t *it)
{
    int st = (int)it->c->status, rs = (int)it->c->reason;
    int same = st == it->pub_status && rs == it->pub_reason;
    it->pub_status = st;
    it->pub_reason = rs;
    if (it->c->status == CONN_PENDING || same)
        return;
    char fl[96];
    snprintf(fl, sizeof fl, "status=\"%s\",reason=\"%s\"", conn_status_name(it->c->status),
             conn_reason_name(it->c->reason) ? conn_reason_name(it->c->reason) : "");
    metrics_counter_add(metrics_counter(w->metrics, "oauthq_worker_final_total",
                                        "Connections that reached a final status (committed)", fl),
                        1);
}

/* Produce the changed items' records and the DLQ records. */
static int produce_round(worker_t *w)
{
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = w->items[i];
        if (!it->changed || it->orphan)
            continue;
        it->conn_offset = -1;
        /* The status record only when the public document changed: a
         * refresh or a recorded later code tells the frontend nothing. */
        it->pub_next = conn_public_hash(it->c);
        int public = !it->pub_known || it->pub_next != it->pub_hash;
        char *conn = conn_encode(it->c, NULL);
        char *status = public ? conn_status_json(it->c, NULL) : NULL;
        int bad = !conn || (public && !status) ||
                  produce(w, w->t_connections, it->partition, it->c->id, conn, strlen(conn),
                          &it->conn_offset) < 0 ||
                  (public && produce(w, w->t_status, it->partition, it->c->id, status,
                                     strlen(status), NULL) < 0);
        if (conn)
            crypto_wipe(conn, strlen(conn));
        free(conn);
        free(status);
        if (bad)
            return -1;
    }
    for (int p = 0; p < w->nparts && p < MAX_PARTS; p++)
        for (size_t pi = 0; pi < providers_count(w->providers) && pi < PROVIDERS_MAX; pi++) {
            if (!w->pstate_dirty[p][pi] || !w->parts[p].assigned)
                continue;
            char key[RECORDS_PROVIDER_MAX + 16];
            snprintf(key, sizeof key, "%s%s", RECORDS_PROVIDER_STATE_KEY_PREFIX,
                     providers_at(w->providers, pi)->name);
            char *rec = pstate_encode(w, (int)pi, NULL);
            w->pstate_offset[p][pi] = -1;
            int bad = !rec || produce(w, w->t_connections, p, key, rec, strlen(rec),
                                      &w->pstate_offset[p][pi]) < 0;
            free(rec);
            if (bad)
                return -1;
        }
    for (size_t i = 0; i < w->ndlq; i++)
        if (produce(w, w->t_dlq, w->dlqs[i].partition, w->dlqs[i].key, w->dlqs[i].value,
                    w->dlqs[i].len, NULL) < 0)
            return -1;
    return 0;
}

typedef enum { TXN_COMMITTED = 0, TXN_ABORTED = -1, TXN_FATAL = -2 } txn_result;

/* Bench only (OAUTHQ_WORKER_BENCH_NO_TXN=1): the same records with a plain
 * idempotent producer, flushed, then a synchronous offset commit. No
 * exactly-once: it measures what transactions cost. */
static txn_result commit_plain(worker_t *w, rd_kafka_topic_partition_list_t *offsets)
{
    if (produce_round(w) < 0)
        return TXN_FATAL;
    rd_kafka_resp_err_t err = rd_kafka_flush(w->producer, TXN_TIMEOUT_MS);
    if (!err && offsets)
        err = rd_kafka_commit(w->consumer, offsets, 0);
    if (err) {
        set_fatal(w, "bench commit: %s", rd_kafka_err2str(err));
        return TXN_FATAL;
    }
    metrics_counter_add(w->m_committed, 1);
    return TXN_COMMITTED;
}

/* One transaction: the changed states (settles, claims, takeovers), the
 * DLQ records and the offsets of every owned partition, fenced by the
 * consumer's group metadata. */
static txn_result commit_txn(worker_t *w, rd_kafka_topic_partition_list_t *offsets)
{
    if (w->cfg.worker_bench_no_txn)
        return commit_plain(w, offsets);
    int64_t t0 = mono_us();
    rd_kafka_error_t *err = rd_kafka_begin_transaction(w->producer);
    if (err) {
        set_fatal(w, "begin_transaction: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
        return TXN_FATAL;
    }
    int failed = produce_round(w) < 0;
    int64_t t1 = mono_us(), t2 = t1;
    if (!failed) {
        rd_kafka_consumer_group_metadata_t *cgm = rd_kafka_consumer_group_metadata(w->consumer);
        for (int tries = 0; tries < 10; tries++) {
            err = rd_kafka_send_offsets_to_transaction(w->producer, offsets, cgm, TXN_TIMEOUT_MS);
            if (!err || txn_error_kind(err) != 1)
                break;
            rd_kafka_error_destroy(err);
            err = NULL;
        }
        rd_kafka_consumer_group_metadata_destroy(cgm);
        if (err) {
            int kind = txn_error_kind(err);
            log_kv(LOGL_WARN, "send_offsets_failed", "reason", rd_kafka_error_string(err));
            if (kind == 3) {
                set_fatal(w, "send_offsets_to_transaction: %s", rd_kafka_error_string(err));
                rd_kafka_error_destroy(err);
                return TXN_FATAL;
            }
            rd_kafka_error_destroy(err);
            failed = 1;
        }
    }
    if (!failed) {
        t2 = mono_us();
        for (int tries = 0; tries < 10; tries++) {
            err = rd_kafka_commit_transaction(w->producer, TXN_TIMEOUT_MS);
            if (!err || txn_error_kind(err) != 1)
                break;
            rd_kafka_error_destroy(err);
            err = NULL;
        }
        if (!err) {
            rd_kafka_poll(w->producer, 0); /* serve the remaining delivery reports */
            int64_t t3 = mono_us();
            metrics_histogram_observe(w->m_txn_s[0], (double)(t1 - t0) / 1e6);
            metrics_histogram_observe(w->m_txn_s[1], (double)(t2 - t1) / 1e6);
            metrics_histogram_observe(w->m_txn_s[2], (double)(t3 - t2) / 1e6);
            metrics_histogram_observe(w->m_txn_s[3], (double)(t3 - t0) / 1e6);
            metrics_counter_add(w->m_committed, 1);
            return TXN_COMMITTED;
        }
        int kind = txn_error_kind(err);
        log_kv(LOGL_WARN, "commit_failed", "reason", rd_kafka_error_string(err));
        if (kind == 3) {
            set_fatal(w, "commit_transaction: %s", rd_kafka_error_string(err));
            rd_kafka_error_destroy(err);
            return TXN_FATAL;
        }
        rd_kafka_error_destroy(err);
    }
    err = rd_kafka_abort_transaction(w->producer, TXN_TIMEOUT_MS);
    if (err) {
        set_fatal(w, "abort_transaction: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
        return TXN_FATAL;
    }
    log_kv(LOGL_WARN, "transaction_aborted");
    metrics_counter_add(w->m_aborted, 1);
    return TXN_ABORTED;
}

/* After a commit: write the committed states into the partition stores,
 * with the changelog offsets of their records. */
static int apply_to_stores(worker_t *w, err_t *e)
{
    size_t cap = w->nitems ? w->nitems : 1;
    store_row *rows = calloc(cap, sizeof *rows);
    char **recs = calloc(cap, sizeof *recs);
    if (!rows || !recs) {
        free(rows);
        free(recs);
        return err_set(e, ERRC_FATAL, "out of memory");
    }
    int rc = 0;
    for (int p = 0; p < w->nparts && rc == 0; p++) {
        if (!w->parts[p].store)
            continue;
        size_t n = 0;
        int64_t max_off = -1;
        for (size_t i = 0; i < w->nitems; i++) {
            item_t *it = w->items[i];
            if (it->partition != p || !it->changed || it->orphan)
                continue;
            recs[n] = conn_encode(it->c, e);
            if (!recs[n]) {
                rc = -1;
                break;
            }
            rows[n] = (store_row){it->c->id,
                                  it->c->version,
                                  conn_status_name(it->c->status),
                                  conn_phase_name(it->c->phase),
                                  it->c->provider,
                                  it->c->retry_at_ms,
                                  it->c->claimed,
                                  recs[n],
                                  it->c->updated_at_ms};
            if (it->conn_offset > max_off)
                max_off = it->conn_offset;
            n++;
        }
        /* The provider pause states written in this transaction (their
         * version only grows, so the store keeps the newest). */
        char pkeys[PROVIDERS_MAX][RECORDS_PROVIDER_MAX + 16];
        for (size_t pi = 0; rc == 0 && pi < providers_count(w->providers) && pi < PROVIDERS_MAX;
             pi++) {
            if (!w->pstate_dirty[p][pi] || !w->parts[p].assigned)
                continue;
            if (n == cap) {
                size_t nc = cap * 2;
                store_row *nr = realloc(rows, nc * sizeof *rows);
                if (nr)
                    rows = nr;
                char **ns = nr ? realloc(recs, nc * sizeof *recs) : NULL;
                if (ns)
                    recs = ns;
                if (!nr || !ns) {
                    rc = err_set(e, ERRC_FATAL, "out of memory");
                    break;
                }
                cap = nc;
            }
            snprintf(pkeys[pi], sizeof pkeys[pi], "%s%s", RECORDS_PROVIDER_STATE_KEY_PREFIX,
                     providers_at(w->providers, pi)->name);
            if (!(recs[n] = pstate_encode(w, (int)pi, e))) {
                rc = -1;
                break;
            }
            int64_t v = w->pstate_offset[p][pi]; /* its changelog offset: only grows */
            rows[n] =
                (store_row){pkeys[pi], v, "control", NULL,    providers_at(w->providers, pi)->name,
                            0,         0, recs[n],   now_ms()};
            if (v > max_off)
                max_off = v;
            n++;
        }
        if (rc == 0 && n > 0) {
            int64_t applied = store_applied_offset(w->parts[p].store);
            if (store_apply(w->parts[p].store, rows, n, max_off > applied ? max_off : applied, e) <
                0)
                rc = -1;
        }
        for (size_t i = 0; i < n; i++) {
            crypto_wipe(recs[i], strlen(recs[i]));
            free(recs[i]);
        }
    }
    free(rows);
    free(recs);
    return rc;
}

/* Seek the consumer back to the committed offsets of its assignment; a
 * rewind that cannot be confirmed ends the process (SPEC §6). */
static int rewind_consumer(worker_t *w, err_t *e)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(w->consumer, &a) || !a)
        return err_set(e, ERRC_FATAL, "rewind: no assignment to rewind");
    rd_kafka_resp_err_t cerr = rd_kafka_committed(w->consumer, a, w->cfg.kafka_timeout_ms);
    if (cerr) {
        rd_kafka_topic_partition_list_destroy(a);
        return err_set(e, ERRC_FATAL, "rewind: committed offsets: %s", rd_kafka_err2str(cerr));
    }
    for (int i = 0; i < a->cnt; i++) {
        int32_t p = a->elems[i].partition;
        if (a->elems[i].offset < 0)
            a->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        else if (p >= 0 && p < MAX_PARTS)
            w->parts[p].next_offset = a->elems[i].offset;
    }
    rd_kafka_error_t *err = rd_kafka_seek_partitions(w->consumer, a, w->cfg.kafka_timeout_ms);
    int bad = err != NULL;
    for (int i = 0; !bad && i < a->cnt; i++)
        bad = a->elems[i].err != 0;
    if (err)
        rd_kafka_error_destroy(err);
    rd_kafka_topic_partition_list_destroy(a);
    if (bad)
        return err_set(e, ERRC_FATAL, "rewind: seek to the committed offsets failed");
    log_kv(LOGL_WARN, "consumer_rewound");
    return 0;
}

/* ---- the exchange pipeline ------------------------------------------------------------ */

/* Give a claimed item's slot back without an answer (never sent); a probe
 * that never left lets the next one go. */
static void release_slot(worker_t *w, item_t *it)
{
    sched_release(&w->sched, it->slot);
    if (it->probe) {
        int pi = provider_index(w, it->c->provider);
        sched_probe_done(&w->sched, pi, -1, now_ms(), w->cfg.worker_probe_interval_ms);
        it->probe = 0;
    }
}

/* Claim what the machine wants exchanged, as far as slots allow; the rest
 * is deferred (queued, due at once) so nothing waits claimed. */
static void claim_items(worker_t *w)
{
    int64_t now = now_ms();
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = w->items[i];
        if (!it->exchange)
            continue;
        it->exchange = 0;
        it->changed = 1;
        int pi = provider_index(w, it->c->provider);
        if (pi < 0) {
            /* No provider to send it to (configuration changed): a
             * definitive failure, never a crash loop. */
            machine_on_unconfigured(it->c, now);
            continue;
        }
        if (w->revoke_pending || sched_claimable(&w->sched, pi, now) <= 0 ||
            !sched_take(&w->sched, pi)) {
            machine_defer(it->c, now);
            continue;
        }
        it->probe = sched_claim_note(&w->sched, pi, now);
        if (it->probe) {
            /* The probe uses the secret as it is now on disk: fixing the
             * file is enough, no resume needed. */
            char secret[sizeof w->secrets[0]];
            err_t se = {0};
            if (providers_client_secret(providers_at(w->providers, (size_t)pi), secret,
                                        sizeof secret, NULL, &se) == 0)
                memcpy(w->secrets[pi], secret, sizeof secret);
            crypto_wipe(secret, sizeof secret);
            log_kv(LOGL_WARN, "provider_probe", "provider", it->c->provider, "connection_id",
                   it->c->id, "reason", "invalid_client pause: one code probes the credentials");
        }
        machine_claim(it->c, w->instance_id, now);
        it->slot = pi;
        it->claimed_now = 1;
        it->claim_mono_ms = mono_ms();
    }
    /* The allowance for the next round is set after this one claimed, so
     * the loop's read budget (read_budget) and the next claim round see
     * the same one. Set before claiming (as it was), the budget read with
     * the previous round's allowance often found fewer slots at the claim:
     * half the records read in the worker bench were deferred (written as
     * queued, read back by the due scan: two more records each way). */
    for (size_t pi = 0; pi < providers_count(w->providers) && pi < PROVIDERS_MAX; pi++) {
        sched_set_ahead(&w->sched, (int)pi, AHEAD_FACTOR * w->done_cycle[pi]);
        w->done_cycle[pi] = 0;
    }
}

static void record_outcome(worker_t *w, item_t *it, const exchange_result *r)
{
    char labels[64];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", exchange_class_name(r->cls));
    metrics_counter_add(metrics_counter(w->metrics, "oauthq_worker_exchanges_total",
                                        "Token requests by outcome class", labels),
                        1);
    if (r->cls == EXCH_UNKNOWN)
        metrics_counter_add(w->m_unknown, 1);
    if (it->refresh) {
        char rl[64];
        snprintf(rl, sizeof rl, "outcome=\"%s\"", exchange_class_name(r->cls));
        metrics_counter_add(metrics_counter(w->metrics, "oauthq_worker_refreshes_total",
                                            "Refresh requests sent, by outcome class", rl),
                            1);
        log_kv(LOGL_INFO, "refresh_done", "connection_id", it->c->id, "outcome",
               exchange_class_name(r->cls), "detail", r->detail, "status",
               conn_status_name(it->c->status));
        return;
    }
    if (it->c->phase == PHASE_RETRYING)
        metrics_counter_add(w->m_retries, 1);
    char cid[LOG_CODE_ID_LEN + 1];
    log_kv(LOGL_INFO, "exchange_done", "connection_id", it->c->id, "code_sha256",
           log_code_id(it->c->code_hash, cid), "outcome", exchange_class_name(r->cls), "detail",
           r->detail, "status", conn_status_name(it->c->status));
}

/* A request finished (curl's done callback, on the loop's thread): settle
 * its outcome into the state; it commits with the next transaction. */
static void on_exchange_done(exchange_req *req, void *ud)
{
    worker_t *w = ud;
    item_t *it = req->ud;
    exchange_result *r = &req->result;
    it->inflight = 0;
    metrics_histogram_observe(w->m_exchange_s, (double)(mono_ms() - it->claim_mono_ms) / 1000.0);
    if (it->slot >= 0 && it->slot < PROVIDERS_MAX)
        w->done_cycle[it->slot]++;
    sched_release(&w->sched, it->slot);
    it->slot = -1;
    crypto_wipe(it->code, sizeof it->code);
    crypto_wipe(it->verifier, sizeof it->verifier);
    crypto_wipe(it->rtoken, sizeof it->rtoken);
    if (it->orphan) {
        /* Its partition went away: the new owner resolves the claim. */
        log_kv(LOGL_WARN, "exchange_result_dropped", "connection_id", it->c->id, "reason",
               "partition no longer owned");
        crypto_wipe(r, sizeof *r);
        return;
    }
    int64_t now = now_ms();
    if (r->not_sent) {
        /* Stopped between the handoff and the send: curl refused to send
         * past the lease (the next owner may already have sent it). */
        metrics_counter_add(w->m_not_sent, 1);
        log_kv(LOGL_WARN, "claim_not_sent", "connection_id", it->c->id, "reason", r->detail);
        if (it->probe) {
            it->probe = 0;
            sched_probe_done(&w->sched, provider_index(w, it->c->provider), -1, now,
                             w->cfg.worker_probe_interval_ms);
        }
        machine_not_sent(it->c, "not sent: lease expired", now);
        it->changed = 1;
        it->settled = 1;
        crypto_wipe(r, sizeof *r);
        return;
    }
    char acc[CONN_SEALED_TOKEN] = "", ref[CONN_SEALED_TOKEN] = "";
    err_t e = {0};
    if (r->cls == EXCH_SUCCESS &&
        (sealed_seal(w->data_keys, it->c->id, "access_token", r->access_token,
                     strlen(r->access_token), acc, sizeof acc, &e) < 0 ||
         (r->refresh_token[0] &&
          sealed_seal(w->data_keys, it->c->id, "refresh_token", r->refresh_token,
                      strlen(r->refresh_token), ref, sizeof ref, &e) < 0))) {
        /* The claim stays open in the changelog: the next owner counts an
         * unknown outcome. */
        set_fatal(w, "sealing tokens: %s", e.msg);
        crypto_wipe(r, sizeof *r);
        return;
    }
    int pause = 0;
    machine_refresh_policy rp = refresh_policy(w, it->c->provider);
    machine_on_result(it->c, r, acc, ref, &rp, now, &pause);
    crypto_wipe(acc, sizeof acc);
    crypto_wipe(ref, sizeof ref);
    it->changed = 1;
    it->settled = 1;
    record_outcome(w, it, r);
    int pi = provider_index(w, it->c->provider);
    if (pause && it->c->status == CONN_PENDING && it->c->retry_at_ms > now &&
        it->c->retry_at_ms > now + w->cfg.worker_probe_interval_ms)
        /* Held with the others: due again at the next probe time (the
         * machine's default re-probe delay is MACHINE_PAUSE_MS). */
        it->c->retry_at_ms = now + w->cfg.worker_probe_interval_ms;
    if (it->probe) {
        it->probe = 0;
        int was = pi >= 0 && w->sched.pause[pi] == SCHED_PAUSED_INVALID_CLIENT;
        sched_probe_done(&w->sched, pi, pause, now, w->cfg.worker_probe_interval_ms);
        if (was && w->sched.pause[pi] == SCHED_RUNNING) {
            log_kv(LOGL_INFO, "provider_resumed", "provider", it->c->provider, "by",
                   "probe: the credentials work again; held codes follow");
            pstate_mark(w, -1, pi);
        }
    } else if (pause && pi >= 0 &&
               sched_pause_set(&w->sched, pi, SCHED_PAUSED_INVALID_CLIENT,
                               now + w->cfg.worker_probe_interval_ms, now)) {
        pstate_mark(w, -1, pi);
    }
    if (pause)
        log_kv(LOGL_ERROR, "provider_paused", "provider", it->c->provider, "reason",
               "invalid_client: fix the client credentials; codes are held (one probes "
               "every interval) until their deadline");
    crypto_wipe(r->access_token, sizeof r->access_token);
    crypto_wipe(r->refresh_token, sizeof r->refresh_token);
}

/* A committed claim that will not be sent: settled as "not sent" in the
 * next transaction (a settle: kept across an abort). */
static void claim_not_sent(worker_t *w, item_t *it, const char *why, int64_t now)
{
    metrics_counter_add(w->m_not_sent, 1);
    log_kv(LOGL_WARN, "claim_not_sent", "connection_id", it->c->id, "reason", why);
    release_slot(w, it);
    it->slot = -1;
    machine_not_sent(it->c, "not sent: lease expired", now);
    it->changed = 1;
    it->settled = 1;
}

/* Hand one committed claim to the exchange driver, which sends it as
 * soon as its provider has a free slot, within its lease. */
static void start_one(worker_t *w, item_t *it)
{
    int64_t now = now_ms();
    const provider_t *pv = providers_at(w->providers, (size_t)it->slot);
    err_t e = {0};
    it->refresh = it->c->status == CONN_CONNECTED;
    if (it->refresh) {
        if (sealed_open(w->data_keys, it->c->id, "refresh_token", it->c->refresh_sealed, it->rtoken,
                        sizeof it->rtoken, &e) < 0) {
            add_dlq_raw(w, it->partition, -1, it->c->id, NULL, 0,
                        "unsealable: refresh token sealed with an unknown data key");
            release_slot(w, it);
            it->slot = -1;
            machine_on_refresh_unusable(it->c, "refresh token unsealable", now);
            it->changed = 1;
            it->settled = 1;
            return;
        }
    } else if (sealed_open(w->data_keys, it->c->id, "code", it->c->code_sealed, it->code,
                           sizeof it->code, &e) < 0 ||
               (it->c->verifier_sealed[0] &&
                sealed_open(w->data_keys, it->c->id, "code_verifier", it->c->verifier_sealed,
                            it->verifier, sizeof it->verifier, &e) < 0)) {
        /* Poison: sealed with a key no longer in the keyring. */
        add_dlq_raw(w, it->partition, -1, it->c->id, NULL, 0,
                    "unsealable: code sealed with an unknown data key");
        release_slot(w, it);
        it->slot = -1;
        machine_on_unsealable(it->c, now);
        it->changed = 1;
        it->settled = 1;
        return;
    }
    memset(&it->req, 0, sizeof it->req);
    it->req.provider = pv;
    it->req.client_secret = w->secrets[it->slot];
    it->req.code = it->refresh ? NULL : it->code;
    it->req.refresh_token = it->refresh ? it->rtoken : NULL;
    it->req.code_verifier = it->refresh ? NULL : it->verifier;
    it->req.redirect_uri = w->redirect_uri;
    it->req.send_by_mono_ms = it->claim_mono_ms + w->cfg.worker_lease_ms;
    it->req.lane = it->slot;
    it->req.ud = it;
    int rc = exchange_start(w->x, &it->req, &e);
    if (rc == 0) {
        it->inflight = 1;
        metrics_histogram_observe(w->m_claim_wait_s,
                                  (double)(mono_ms() - it->claim_mono_ms) / 1000.0);
        return;
    }
    if (rc == 1) { /* finished at once, nothing sent */
        it->inflight = 1;
        on_exchange_done(&it->req, w);
        return;
    }
    release_slot(w, it);
    it->slot = -1;
    crypto_wipe(it->code, sizeof it->code);
    crypto_wipe(it->verifier, sizeof it->verifier);
    crypto_wipe(it->rtoken, sizeof it->rtoken);
    log_kv(LOGL_ERROR, "claim_not_sent", "connection_id", it->c->id, "reason", e.msg);
    if (e.cls == ERRC_PERMANENT && it->refresh)
        machine_on_refresh_unusable(it->c, "refresh token cannot be sent", now);
    else if (e.cls == ERRC_PERMANENT)
        machine_on_unconfigured(it->c, now);
    else
        machine_not_sent(it->c, "not sent: no transfer slot", now);
    it->changed = 1;
    it->settled = 1;
}

/* After the claim committed: hand each claimed request over, but only
 * while its lease holds (checked on the monotonic clock right before; the
 * driver checks again before it starts one that waited for a slot, and
 * curl's pre-request callback right before the bytes leave). */
static void start_claimed(worker_t *w)
{
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = w->items[i];
        if (!it->claimed_now)
            continue;
        it->claimed_now = 0;
        if (!sched_lease_valid(it->claim_mono_ms, mono_ms(), w->cfg.worker_lease_ms)) {
            claim_not_sent(w, it, "lease expired before the request could leave", now_ms());
            continue;
        }
        start_one(w, it);
    }
}

/* Is anything waiting for a transaction? */
static int work_pending(const worker_t *w)
{
    if (w->ndlq > 0 || w->offsets_dirty)
        return 1;
    for (int p = 0; p < w->nparts && p < MAX_PARTS; p++)
        for (size_t pi = 0; pi < PROVIDERS_MAX; pi++)
            if (w->pstate_dirty[p][pi] && w->parts[p].assigned)
                return 1;
    for (size_t i = 0; i < w->nitems; i++)
        if (w->items[i]->changed && !w->items[i]->orphan)
            return 1;
    return 0;
}

/* Live items at most: a poll's worth beside every claim the scheduler
 * allows (twice the concurrency with the claims ahead). */
static size_t live_max(const worker_t *w)
{
    return (size_t)w->cfg.worker_batch + 2 * (size_t)w->cfg.worker_concurrency;
}

/* Work a user or a free slot waits for: a settle, or a claim to make; or a
 * full working set, which only a transaction empties. */
static int urgent_work(const worker_t *w)
{
    if (w->nitems >= live_max(w))
        return 1;
    for (size_t i = 0; i < w->nitems; i++) {
        const item_t *it = w->items[i];
        if (!it->orphan && ((it->settled && it->changed) || it->exchange))
            return 1;
    }
    return 0;
}

/* How many records the loop may read now. Read ahead only what can be
 * claimed (the claim room less the decided exchanges not yet claimed):
 * a backlog past the concurrency stays in Kafka, which is the queue,
 * instead of being copied into the store as "queued" records that cost
 * a transaction each way and come back through the due scan. With no
 * room at all a trickle still goes (duplicates, disconnects and refresh
 * requests need no slot; the rebalance callbacks run from the poll). */
static size_t read_budget(worker_t *w, size_t cap, int active)
{
    /* The working set is bounded too (an item is about 36 KB): records that
     * need no slot (sessions, duplicates) would otherwise pile up between
     * two transactions; a full set makes the next commit urgent. */
    if (w->nitems >= live_max(w))
        return 0;
    size_t live_room = live_max(w) - w->nitems;
    if (cap > live_room)
        cap = live_room;
    long room = sched_total_free(&w->sched);
    for (size_t i = 0; i < w->nitems && room > 0; i++)
        if (w->items[i]->exchange)
            room--;
    if (room >= (long)cap)
        return cap;
    if (room > 0)
        return (size_t)room;
    int64_t now = mono_ms();
    if (active == 0 || now - w->last_trickle_mono >= MAX_WAIT_MS) {
        w->last_trickle_mono = now;
        return TRICKLE < cap ? TRICKLE : cap;
    }
    return 0;
}

/* How long the loop may block before a transaction is due. */
static int commit_wait_ms(const worker_t *w, int pending, int max_wait_ms)
{
    int wait = sched_wait_ms(w->last_commit_mono, mono_ms(), w->cfg.worker_commit_ms, pending,
                             max_wait_ms);
    if (wait > 0 && urgent_work(w)) {
        int64_t left = w->last_commit_end_mono + w->cfg.worker_commit_gap_ms - mono_ms();
        if (left < wait)
            wait = left > 0 ? (int)left : 0;
    }
    return wait;
}

/* One commit round: revoke what asked, claim, commit, then start the
 * claimed requests. Returns 0, or -1 on a fatal error (e filled). */
static int commit_round(worker_t *w, err_t *e)
{
    if (deauthorize_items(w, e) < 0)
        return -1;
    claim_items(w);
    if (!work_pending(w))
        return 0;
    rd_kafka_topic_partition_list_t *offsets = current_offsets(w);
    if (!offsets) {
        /* Nothing owned: nothing may be committed (the partitions' new
         * owners resolve any open claim). */
        for (size_t i = 0; i < w->nitems; i++) {
            item_t *it = w->items[i];
            it->orphan = 1;
            if (it->claimed_now) { /* never sent */
                release_slot(w, it);
                it->slot = -1;
                it->claimed_now = 0;
            }
        }
        dlq_reset(w);
        items_gc(w, 1);
        return 0;
    }
    metrics_counter_add(w->m_dlq, w->ndlq);
    /* The cadence runs start to start: a transaction every commit_ms, or
     * back to back when one takes longer, never commit_ms + its duration. */
    w->last_commit_mono = mono_ms();
    txn_result t = commit_txn(w, offsets);
    w->last_commit_end_mono = mono_ms();
    rd_kafka_topic_partition_list_destroy(offsets);
    if (t == TXN_FATAL) {
        *e = w->fatal_err;
        return -1;
    }
    if (t == TXN_ABORTED) {
        /* Nothing of it happened: release the claims, forget the decided
         * states (the store holds the committed ones) and re-consume from
         * the committed offsets; settles of requests that ran are kept for
         * the next transaction. */
        for (size_t i = 0; i < w->nitems; i++) {
            item_t *it = w->items[i];
            if (it->claimed_now) {
                release_slot(w, it);
                it->slot = -1;
                it->claimed_now = 0;
                it->changed = 0;
            } else if (!it->settled && !it->inflight) {
                it->changed = 0;
            }
            it->exchange = 0;
            it->deauthorize = 0;
        }
        dlq_reset(w);
        items_gc(w, 0);
        return rewind_consumer(w, e);
    }
    if (apply_to_stores(w, e) < 0)
        return -1;
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = w->items[i];
        if (it->changed && !it->orphan) {
            it->pub_hash = it->pub_next; /* what the status topic now shows */
            it->pub_known = 1;
            count_final(w, it);
        }
        it->changed = 0;
        it->settled = 0;
    }
    dlq_reset(w);
    memset(w->pstate_dirty, 0, sizeof w->pstate_dirty);
    w->offsets_dirty = 0;
    start_claimed(w); /* may settle at once (changed again: next round) */
    items_gc(w, 0);
    return 0;
}

/* ---- partitions: restore and takeover ---------------------------------------------- */

/* Apply a batch of restored rows; the batch's strings are freed. */
static int restore_flush(store_t *st, store_row *rows, char **recs, size_t *n, int64_t last_off,
                         err_t *e)
{
    int rc = 0;
    if (*n > 0 || last_off > store_applied_offset(st))
        rc = store_apply(st, rows, *n, last_off, e) < 0 ? -1 : 0;
    for (size_t i = 0; i < *n; i++) {
        crypto_wipe(recs[i], strlen(recs[i]));
        free(recs[i]);
        free((char *)rows[i].id);
        free((char *)rows[i].provider);
    }
    *n = 0;
    return rc;
}

/* Wake the restorer's fetcher. librdkafka 2.0 stops fetching a partition
 * whose queue is over queued.max.messages.kbytes and looks at it again
 * only when its broker thread wakes up: on a request, else after up to a
 * second (2.1 added fetch.queue.backoff.ms for this). With the small
 * queue the restorer has (worker_open) that second was most of a restore
 * (measured: 1M records in 193 s instead of 45 s); any request to the
 * partition's leader wakes that thread, so a watermark query every
 * RESTORE_POKE records, and whenever the queue ran dry, keeps the fetches
 * coming. Its answer is not used (the restore's end is the high watermark
 * of the read_uncommitted handle, taken at assignment). */
static void restore_poke(worker_t *w, int32_t p)
{
    int64_t lo = 0, hi = 0;
    (void)rd_kafka_query_watermark_offsets(w->restorer, w->t_connections, p, &lo, &hi,
                                           RESTORE_POKE_MS);
}

static int reopen_empty_store(worker_t *w, int32_t p, err_t *e)
{
    char path[CONFIG_PATH_MAX + 320], aux[CONFIG_PATH_MAX + 340];
    if (store_path(w->cfg.data_dir, w->t_callbacks, p, path, sizeof path, e) < 0)
        return -1;
    store_close(w->parts[p].store);
    w->parts[p].store = NULL;
    unlink(path);
    snprintf(aux, sizeof aux, "%s-wal", path);
    unlink(aux);
    snprintf(aux, sizeof aux, "%s-shm", path);
    unlink(aux);
    w->parts[p].store = store_open(path, w->t_connections, p, e);
    return w->parts[p].store ? 0 : -1;
}

/* Bring partition p's store up to date from the changelog (SPEC §6):
 * read read_committed until the position reaches the high watermark taken
 * now (so transactions open at assignment are waited for, not skipped),
 * many records per SQLite transaction. A store ahead of the topic (topic
 * recreated) is rebuilt; an undecodable record holds its key. */
static int restore_partition(worker_t *w, int32_t p, err_t *e)
{
    int64_t lo = 0, hw = 0;
    if (kafka_watermarks(w->hwm, w->t_connections, p, &lo, &hw, w->cfg.kafka_timeout_ms, e) < 0)
        return -1;
    int64_t from = store_applied_offset(w->parts[p].store) + 1;
    if (from > hw) {
        char part[16];
        snprintf(part, sizeof part, "%d", p);
        log_kv(LOGL_WARN, "store_ahead_of_changelog", "partition", part, "action", "rebuild");
        if (reopen_empty_store(w, p, e) < 0)
            return -1;
        from = 0;
    }
    if (from < lo)
        from = lo;
    store_t *st = w->parts[p].store;
    double t0 = (double)mono_ms();
    long applied = 0;
    if (from < hw) {
        rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(tp, w->t_connections, p)->offset = from;
        rd_kafka_assign(w->restorer, tp);
        rd_kafka_topic_partition_list_destroy(tp);
        store_row *rows = calloc(RESTORE_BATCH, sizeof *rows);
        char **recs = calloc(RESTORE_BATCH, sizeof *recs);
        conn_t *c = calloc(1, sizeof *c);
        int bulk =
            rows && recs && c ? store_bulk(st, 1, e) : err_set(e, ERRC_FATAL, "out of memory");
        if (bulk < 0) {
            free(rows);
            free(recs);
            free(c);
            rd_kafka_assign(w->restorer, NULL);
            return -1;
        }
        size_t n = 0;
        int64_t pos = from, last = from - 1;
        int rc = 0;
        /* Bounded by the transaction timeout: a transaction still open
         * after that is the broker's to abort; waiting longer is fatal. */
        int64_t deadline = mono_ms() + KAFKA_TRANSACTION_TIMEOUT_MS + w->cfg.kafka_timeout_ms;
        long since_poke = 0;
        int64_t poked_at = 0;
        while (rc == 0 && pos < hw && mono_ms() < deadline) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(w->restorer, 10);
            /* (A dry queue pokes at most every 20 ms: while an open
             * transaction holds the restore back, nothing new comes.) */
            if (m ? ++since_poke >= RESTORE_POKE : mono_ms() - poked_at >= 20) {
                restore_poke(w, p);
                since_poke = 0;
                poked_at = mono_ms();
            }
            if (!m) {
                rd_kafka_topic_partition_list_t *q = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(q, w->t_connections, p);
                if (rd_kafka_position(w->restorer, q) == 0 && q->elems[0].offset > pos)
                    pos = q->elems[0].offset;
                rd_kafka_topic_partition_list_destroy(q);
                continue;
            }
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (m->offset > pos)
                    pos = m->offset; /* past control records and aborted data */
            } else if (m->err) {
                log_kv(LOGL_WARN, "restore_consumer_error", "reason", rd_kafka_message_errstr(m));
            } else {
                pos = m->offset + 1;
                last = m->offset;
                char kid[CONN_ID_MAX];
                size_t kn = m->key_len < sizeof kid - 1 ? m->key_len : sizeof kid - 1;
                memcpy(kid, m->key ? m->key : "", m->key ? kn : 0);
                kid[m->key ? kn : 0] = '\0';
                err_t de = {0};
                if (!m->payload) {
                    if (restore_flush(st, rows, recs, &n, m->offset - 1, e) < 0) {
                        rc = -1;
                    } else {
                        const char *ids[1] = {kid};
                        if (store_delete(st, ids, 1, m->offset, e) < 0)
                            rc = -1;
                    }
                } else if (strncmp(kid, RECORDS_PROVIDER_STATE_KEY_PREFIX,
                                   strlen(RECORDS_PROVIDER_STATE_KEY_PREFIX)) == 0) {
                    /* A provider's pause state (read by pstate_load once the
                     * partition is restored): its offset is its version. */
                    recs[n] = strndup(m->payload, m->len);
                    rows[n] = (store_row){strdup(kid),
                                          m->offset,
                                          "control",
                                          NULL,
                                          strdup(kid + strlen(RECORDS_PROVIDER_STATE_KEY_PREFIX)),
                                          0,
                                          0,
                                          recs[n],
                                          0};
                    n++;
                    if (!recs[n - 1] || !rows[n - 1].id || !rows[n - 1].provider) {
                        restore_flush(st, rows, recs, &n, store_applied_offset(st), e);
                        rc = err_set(e, ERRC_FATAL, "out of memory");
                    } else if (n == RESTORE_BATCH &&
                               restore_flush(st, rows, recs, &n, last, e) < 0) {
                        rc = -1;
                    }
                } else {
                    int ok = conn_decode(m->payload, m->len, c, &de) == 0;
                    if (!ok)
                        log_kv(LOGL_ERROR, "restore_record_unreadable", "connection_id", kid,
                               "reason", de.msg, "action", "held");
                    /* Undecodable: kept as it is, so the key is held (its
                     * reads fail closed) instead of looking fresh. */
                    recs[n] = strndup(m->payload, m->len);
                    rows[n] = (store_row){strdup(ok ? c->id : kid),
                                          ok ? c->version : INT64_MAX / 4,
                                          ok ? conn_status_name(c->status) : "pending",
                                          ok ? conn_phase_name(c->phase) : NULL,
                                          strdup(ok ? c->provider : "unknown"),
                                          ok ? c->retry_at_ms : 0,
                                          ok ? c->claimed : 0,
                                          recs[n],
                                          ok ? c->updated_at_ms : 0};
                    if (!recs[n] || !rows[n].id || !rows[n].provider) {
                        n++;
                        restore_flush(st, rows, recs, &n, store_applied_offset(st), e);
                        rc = err_set(e, ERRC_FATAL, "out of memory");
                    } else {
                        /* (c is overwritten by the next decode and
                         * wiped once at the end: it holds sealed
                         * values only, and a 15 KiB wipe per record
                         * was a measurable part of the restore.) */
                        n++;
                        applied++;
                        if (n == RESTORE_BATCH && restore_flush(st, rows, recs, &n, last, e) < 0)
                            rc = -1;
                    }
                }
            }
            rd_kafka_message_destroy(m);
        }
        if (rc == 0 && restore_flush(st, rows, recs, &n, last, e) < 0)
            rc = -1;
        err_t be = {0};
        if (store_bulk(st, 0, rc == 0 ? e : &be) < 0)
            rc = -1;
        free(rows);
        free(recs);
        crypto_wipe(c, sizeof *c);
        free(c);
        rd_kafka_assign(w->restorer, NULL);
        if (rc < 0)
            return -1;
        if (pos < hw)
            return err_set(e, ERRC_FATAL,
                           "restoring %s[%d]: position %lld never reached the high watermark "
                           "%lld taken at assignment",
                           w->t_connections, p, (long long)pos, (long long)hw);
    }
    metrics_histogram_observe(w->m_restore_s, ((double)mono_ms() - t0) / 1000.0);
    char part[16], nrec[24], ms[24];
    snprintf(part, sizeof part, "%d", p);
    snprintf(nrec, sizeof nrec, "%ld", applied);
    snprintf(ms, sizeof ms, "%.0f", (double)mono_ms() - t0);
    log_kv(LOGL_INFO, "partition_restored", "partition", part, "records", nrec, "ms", ms);
    return 0;
}

/* Resolve claims left open by the previous owner (or our own crash): the
 * states go into the live set and commit with the next transaction. */
static int takeover(worker_t *w, int32_t p, err_t *e)
{
    id_list l = {NULL, 0, 0};
    if (store_claimed(w->parts[p].store, collect_id, &l, e) < 0) {
        free(l.ids);
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < l.n; i++) {
        int fresh;
        item_t *it = item_get(w, l.ids[i], "unknown", p, &fresh, e);
        if (!it && e->cls == ERRC_PERMANENT) {
            err_clear(e);
            continue;
        }
        if (!it) {
            free(l.ids);
            return -1;
        }
        machine_refresh_policy rp = refresh_policy(w, it->c->provider);
        if (!fresh && !it->inflight &&
            machine_on_takeover(it->c, w->takeover_hold_ms, &rp, now_ms()) != MACHINE_UNCHANGED) {
            it->changed = 1;
            n++;
        }
    }
    free(l.ids);
    if (n == 0)
        return 0;
    char cnt[24];
    snprintf(cnt, sizeof cnt, "%zu", n);
    log_kv(LOGL_WARN, "open_claims_resolved", "count", cnt, "as",
           "unknown outcome (re-sent only after the old owner's lease and timeout)");
    metrics_counter_add(w->m_takeovers, n);
    return 0;
}

static void close_partitions(worker_t *w)
{
    for (int p = 0; p < MAX_PARTS; p++) {
        if (w->parts[p].store)
            store_close(w->parts[p].store);
        w->parts[p].store = NULL;
        w->parts[p].assigned = 0;
        w->parts[p].next_offset = -1;
    }
}

/* The rebalance callback only records what changed (SPEC §6: no restore
 * and no transaction inside it); the loop does the work and then calls
 * rd_kafka_assign itself, which librdkafka waits for. */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    worker_t *w = opaque;
    atomic_store(&w->ready, 0);
    if (w->closing) { /* rd_kafka_consumer_close: the loop has drained */
        rd_kafka_assign(rk, NULL);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (w->assign_pending)
            rd_kafka_topic_partition_list_destroy(w->assign_pending);
        w->assign_pending = rd_kafka_topic_partition_list_copy(parts);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        log_kv(LOGL_INFO, "partitions_revoked", "lost",
               rd_kafka_assignment_lost(rk) ? "yes" : "no");
        w->revoke_pending = 1;
        w->revoke_deadline_mono = mono_ms() + w->cfg.exchange_timeout_ms + 2000;
        rd_kafka_pause_partitions(rk, parts);
        return;
    }
    rd_kafka_assign(rk, NULL);
}

/* A revocation: let the partitions' requests finish (bounded by the
 * exchange timeout), commit their settles, then give the partitions up.
 * Requests still running after the bound are orphaned: their results are
 * dropped and the new owner treats the claims as unknown outcomes. */
static int serve_revoke(worker_t *w, err_t *e)
{
    int lost = rd_kafka_assignment_lost(w->consumer);
    /* Nothing new leaves once the partitions go: requests still waiting
     * for a slot come back unsent and settle with the last transaction. */
    exchange_cancel_waiting(w->x);
    if (!lost && exchange_active(w->x) > 0 && mono_ms() < w->revoke_deadline_mono)
        return 0; /* keep driving the requests */
    if (!lost && commit_round(w, e) < 0)
        return -1;
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = w->items[i];
        it->orphan = 1;
        it->exchange = 0;
        it->changed = 0;
        it->deauthorize = 0;
        if (it->claimed_now) { /* never sent */
            release_slot(w, it);
            it->slot = -1;
            it->claimed_now = 0;
        }
    }
    dlq_reset(w);
    items_gc(w, 1);
    close_partitions(w);
    rd_kafka_assign(w->consumer, NULL);
    w->revoke_pending = 0;
    return 0;
}

/* Stop requested: the same as a revocation (finish the requests in flight
 * within the exchange timeout, commit their settles, give the partitions
 * up), so rd_kafka_consumer_close afterwards has nothing left to do. */
static int drain(worker_t *w, err_t *e)
{
    w->revoke_deadline_mono = mono_ms() + w->cfg.exchange_timeout_ms + 2000;
    w->revoke_pending = 1;
    for (int guard = 0; w->revoke_pending && !w->fatal && guard < 1000000; guard++) {
        if (serve_revoke(w, e) < 0)
            return -1;
        if (w->revoke_pending)
            exchange_perform(w->x, 5, on_exchange_done, w);
    }
    if (w->fatal) {
        *e = w->fatal_err;
        return -1;
    }
    return 0;
}

/* An assignment: restore and take over each partition, then start
 * consuming it from its committed offset. */
static int serve_assign(worker_t *w, err_t *e)
{
    rd_kafka_topic_partition_list_t *parts = w->assign_pending;
    w->assign_pending = NULL;
    int rc = 0;
    /* Where each partition resumes: its committed offset, else the start.
     * The fetch asks for stable offsets (KIP-447): a previous owner's open
     * transaction holds them back until it commits or aborts (a dead one:
     * until the broker aborts it), so the wait is bounded by the
     * transaction timeout, not the request timeout.
     * It comes BEFORE the restore: a paused owner (a zombie) may have sent
     * its offsets while its records still sat in its producer's queue;
     * when it resumes it commits them. Waiting for stable offsets first
     * means that transaction is over, so its records are below the high
     * watermark the restore then takes, and the store sees them. Restoring
     * first would miss them and decide from stale state (a version written
     * twice, found by the zombie test under load). */
    rd_kafka_resp_err_t cerr = rd_kafka_committed(
        w->consumer, parts, KAFKA_TRANSACTION_TIMEOUT_MS + w->cfg.kafka_timeout_ms);
    if (cerr)
        rc = err_set(e, ERRC_FATAL, "committed offsets: %s", rd_kafka_err2str(cerr));
    for (int i = 0; i < parts->cnt && rc == 0; i++) {
        int32_t p = parts->elems[i].partition;
        char path[CONFIG_PATH_MAX + 320];
        if (kafka_check_assigned(w->t_callbacks, p, w->nparts, e) < 0) {
            rc = -1;
            break;
        }
        if (p >= MAX_PARTS) {
            rc = err_set(e, ERRC_FATAL, "partition %d: at most %d partitions per worker", p,
                         MAX_PARTS);
            break;
        }
        if (store_path(w->cfg.data_dir, w->t_callbacks, p, path, sizeof path, e) < 0 ||
            !(w->parts[p].store = store_open(path, w->t_connections, p, e)) ||
            restore_partition(w, p, e) < 0 || pstate_load(w, p, e) < 0 || takeover(w, p, e) < 0) {
            err_wrap(e, "taking over a partition");
            rc = -1;
        }
    }
    for (int i = 0; i < parts->cnt && rc == 0; i++) {
        int32_t p = parts->elems[i].partition;
        int64_t off = parts->elems[i].offset, lo = 0, hi = 0;
        if (off < 0) {
            if (kafka_watermarks(w->hwm, w->t_callbacks, p, &lo, &hi, w->cfg.kafka_timeout_ms, e) <
                0) {
                rc = -1;
                break;
            }
            off = lo;
        }
        w->parts[p].next_offset = off;
        w->parts[p].assigned = 1;
    }
    if (rc == 0) {
        rd_kafka_resp_err_t aerr = rd_kafka_assign(w->consumer, parts);
        if (aerr)
            rc = err_set(e, ERRC_FATAL, "assign: %s", rd_kafka_err2str(aerr));
        /* The revocation paused the partitions it took away, and an
         * application pause outlives unassign/assign in librdkafka: a
         * partition owned again would stay paused forever. */
        else if ((aerr = rd_kafka_resume_partitions(w->consumer, parts)) != 0)
            rc = err_set(e, ERRC_FATAL, "resume: %s", rd_kafka_err2str(aerr));
    }
    if (rc == 0) {
        char n[16];
        snprintf(n, sizeof n, "%d", parts->cnt);
        log_kv(LOGL_INFO, "partitions_assigned", "count", n);
        atomic_store(&w->ready, 1);
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return rc;
}

/* ---- observability ------------------------------------------------------------------- */

/* Consumer lag: high watermark minus position over the assignment, from
 * librdkafka's cached watermarks (no request); refreshed every 5 s. */
static void update_lag(worker_t *w)
{
    int64_t now = now_ms();
    if (now - w->lag_checked_ms < 5000)
        return;
    w->lag_checked_ms = now;
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(w->consumer, &a) || !a)
        return;
    int64_t lag = 0;
    if (rd_kafka_position(w->consumer, a) == 0) {
        for (int i = 0; i < a->cnt; i++) {
            int64_t lo = 0, hi = 0;
            if (rd_kafka_get_watermark_offsets(w->consumer, a->elems[i].topic,
                                               a->elems[i].partition, &lo, &hi) == 0 &&
                a->elems[i].offset >= 0 && hi > a->elems[i].offset)
                lag += hi - a->elems[i].offset;
        }
    }
    rd_kafka_topic_partition_list_destroy(a);
    metrics_gauge_set(w->m_lag, lag);
}

/* Runs on the listener's threads: touches only atomics and metrics. */
static void handle_http(void *app, httpd_req *r)
{
    worker_t *w = app;
    const char *path = httpd_path(r);
    if (strcmp(path, "/metrics") == 0) {
        char *text = NULL;
        size_t len = 0;
        if (metrics_render(w->metrics, &text, &len, NULL) < 0)
            return httpd_respond(r, 500, "text/plain", "metrics unavailable\n", 20);
        httpd_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
    } else if (strcmp(path, "/healthz") == 0) {
        httpd_respond(r, 200, "application/json", "{\"status\":\"ok\"}", 15);
    } else if (strcmp(path, "/readyz") == 0) {
        int ok = atomic_load(&w->ready) && !atomic_load(&w->fatal);
        const char *b = ok ? "{\"status\":\"ready\"}" : "{\"status\":\"not_ready\"}";
        httpd_respond(r, ok ? 200 : 503, "application/json", b, strlen(b));
    } else {
        httpd_respond(r, 404, "application/json", "{\"error\":\"not_found\"}", 21);
    }
}

static int open_observability(worker_t *w, err_t *e)
{
    w->metrics = metrics_new();
    if (!w->metrics)
        return err_set(e, ERRC_FATAL, "out of memory");
    static const double exch_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    static const double restore_bounds[] = {0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120};
    w->m_batches = metrics_counter(w->metrics, "oauthq_worker_batches_total",
                                   "Batches of callbacks processed", NULL);
    w->m_committed = metrics_counter(w->metrics, "oauthq_worker_transactions_total",
                                     "Kafka transactions", "result=\"committed\"");
    w->m_aborted = metrics_counter(w->metrics, "oauthq_worker_transactions_total",
                                   "Kafka transactions", "result=\"aborted\"");
    w->m_unknown = metrics_counter(w->metrics, "oauthq_worker_unknown_outcomes_total",
                                   "Token requests whose outcome was unknown", NULL);
    w->m_retries = metrics_counter(w->metrics, "oauthq_worker_retries_scheduled_total",
                                   "Retries scheduled in the state store", NULL);
    w->m_dlq = metrics_counter(w->metrics, "oauthq_worker_dlq_total",
                               "Records sent to the dead-letter topic", NULL);
    w->m_takeovers = metrics_counter(w->metrics, "oauthq_worker_claims_taken_over_total",
                                     "Open claims resolved as unknown outcomes at takeover", NULL);
    w->m_exchange_s = metrics_histogram(w->metrics, "oauthq_worker_exchange_seconds",
                                        "Time from claim to settle of one token request", NULL,
                                        exch_bounds, sizeof exch_bounds / sizeof exch_bounds[0]);
    static const double txn_bounds[] = {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5};
    static const char *const txn_phases[4] = {"produce", "send_offsets", "commit", "total"};
    /* The claim's cost in the slot's time: the claiming transaction and the
     * store update before the request may leave. */
    w->m_claim_wait_s = metrics_histogram(w->metrics, "oauthq_worker_claim_to_send_seconds",
                                          "Time from claim to the request handed to curl", NULL,
                                          txn_bounds, sizeof txn_bounds / sizeof txn_bounds[0]);
    for (int i = 0; i < 4; i++) {
        char lb[32];
        snprintf(lb, sizeof lb, "phase=\"%s\"", txn_phases[i]);
        w->m_txn_s[i] =
            metrics_histogram(w->metrics, "oauthq_worker_transaction_seconds",
                              "Duration of the worker's transactions (committed ones), by phase",
                              lb, txn_bounds, sizeof txn_bounds / sizeof txn_bounds[0]);
    }
    w->m_restore_s = metrics_histogram(
        w->metrics, "oauthq_worker_restore_seconds", "Time to bring a partition store up to date",
        NULL, restore_bounds, sizeof restore_bounds / sizeof restore_bounds[0]);
    w->m_not_sent =
        metrics_counter(w->metrics, "oauthq_worker_claims_not_sent_total",
                        "Claims whose lease ran out before the request could leave", NULL);
    w->m_waiting = metrics_gauge(w->metrics, "oauthq_worker_claims_waiting",
                                 "Committed claims waiting for an in-flight slot", NULL);
    w->m_inflight = metrics_gauge(w->metrics, "oauthq_worker_exchanges_in_flight",
                                  "Token requests handed to curl and not yet answered", NULL);
    w->m_lag = metrics_gauge(w->metrics, "oauthq_worker_consumer_lag",
                             "Callbacks not yet consumed on the assigned partitions", NULL);
    if (!w->cfg.worker_listen[0])
        return 0;
    httpd_opts o = {w->cfg.worker_listen, 1, 64, 64, 16, 10};
    w->http = httpd_start(&o, handle_http, w, e);
    if (!w->http)
        return err_wrap(e, "OAUTHQ_WORKER_LISTEN");
    char port[16];
    snprintf(port, sizeof port, "%d", httpd_port(w->http));
    log_kv(LOGL_INFO, "worker_listening", "listen", w->cfg.worker_listen, "port", port);
    return 0;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static int instance_id(worker_t *w, err_t *e)
{
    return kafka_instance_id(w->cfg.instance_id, w->cfg.data_dir, "worker.id", "w", w->instance_id,
                             sizeof w->instance_id, e);
}

static int partition_count(worker_t *w, const char *topic, err_t *e)
{
    int n = -1;
    if (kafka_wait_topic(w->restorer, topic, w->cfg.kafka_timeout_ms, KAFKA_TOPIC_WAIT_MS, &n, e) <
        0) {
        if (e->cls == ERRC_PERMANENT) /* no such topic: nothing to work on */
            e->cls = ERRC_FATAL;
        err_wrap(e, "run oauthqctl topics create");
        return -1;
    }
    return n;
}

/* An assign-only consumer (no group) with one setting of its own. */
/* An assign-only consumer; kv: NULL-terminated key, value pairs set over
 * kafka_conf_consumer's defaults. */
static rd_kafka_t *assign_consumer(const config_t *c, const char *const *kv, const char *what,
                                   err_t *e)
{
    char errstr[256];
    rd_kafka_conf_t *conf = kafka_conf_consumer(c, NULL, e);
    if (!conf)
        return NULL;
    for (size_t i = 0; kv[i] && kv[i + 1]; i += 2) {
        if (kafka_conf_set(conf, kv[i], kv[i + 1], e) < 0) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        err_set(e, ERRC_FATAL, "%s: %s", what, errstr);
    }
    return rk;
}

worker_t *worker_open(const config_t *c, err_t *e)
{
    worker_t *w = calloc(1, sizeof *w);
    char errstr[256];
    if (!w) {
        err_set(e, ERRC_FATAL, "out of memory");
        return NULL;
    }
    w->cfg = *c;
    snprintf(w->redirect_uri, sizeof w->redirect_uri, "%s/oauth/callback", c->public_url);
    if (config_topic(c, KAFKA_TOPIC_CALLBACKS, w->t_callbacks, sizeof w->t_callbacks, e) < 0 ||
        config_topic(c, KAFKA_TOPIC_CONNECTIONS, w->t_connections, sizeof w->t_connections, e) <
            0 ||
        config_topic(c, KAFKA_TOPIC_STATUS, w->t_status, sizeof w->t_status, e) < 0 ||
        config_topic(c, KAFKA_TOPIC_DLQ, w->t_dlq, sizeof w->t_dlq, e) < 0)
        goto fail;
    if (!c->providers_file[0]) {
        err_set(e, ERRC_FATAL, "OAUTHQ_PROVIDERS_FILE is not set");
        goto fail;
    }
    if (!(w->providers = providers_load(c->providers_file, e)))
        goto fail;
    for (size_t i = 0; i < providers_count(w->providers); i++)
        if (providers_client_secret(providers_at(w->providers, i), w->secrets[i],
                                    sizeof w->secrets[i], NULL, e) < 0)
            goto fail;
    if (!(w->data_keys = keyring_load(c->data_keys_file, e))) {
        err_wrap(e, "OAUTHQ_DATA_KEYS_FILE");
        goto fail;
    }
    if (instance_id(w, e) < 0 || open_observability(w, e) < 0)
        goto fail;
    snprintf(w->group_id, sizeof w->group_id, "%sworker", c->topic_prefix);
    snprintf(w->txn_id, sizeof w->txn_id, "%sworker-%s", c->topic_prefix, w->instance_id);
    if (!(w->x = exchange_new(c->worker_concurrency, c->exchange_connect_timeout_ms,
                              c->exchange_timeout_ms, e)))
        goto fail;
    {
        int limits[SCHED_PROVIDERS_MAX] = {0};
        size_t np = providers_count(w->providers);
        if (np > SCHED_PROVIDERS_MAX) {
            err_set(e, ERRC_FATAL, "more than %d providers", SCHED_PROVIDERS_MAX);
            goto fail;
        }
        for (size_t i = 0; i < np; i++)
            limits[i] = providers_at(w->providers, i)->max_in_flight;
        sched_init(&w->sched, c->worker_concurrency, (int)np, limits);
        /* The driver keeps the per-provider limits on the wire; the
         * scheduler bounds the claims (SPEC §6 bulkheads). */
        if (exchange_set_lanes(w->x, (int)np, w->sched.limit, e) < 0 || exchange_spawn(w->x, e) < 0)
            goto fail;
        sched_set_probe_timeout(&w->sched,
                                (int64_t)c->worker_lease_ms + c->exchange_timeout_ms + 1000);
        w->takeover_hold_ms = sched_takeover_hold_ms(c->worker_lease_ms, c->exchange_timeout_ms,
                                                     c->worker_takeover_margin_ms);
        w->last_commit_mono = -1;
        w->last_commit_end_mono = -1;
        for (int p = 0; p < MAX_PARTS; p++)
            w->parts[p].next_offset = -1;
    }

    /* The restorer reads to an end it knows: a fetch that finds nothing new
     * (only markers) must not wait the default 500 ms before answering.
     * Its prefetch is small: librdkafka's defaults queue up to 64 MiB
     * (queued.max.messages.kbytes) of records ahead of the restore, most
     * of the worker's memory while restoring (SPEC §9: worker ≤ 64 MB),
     * and a restore applies records far slower than a local fetch brings
     * them, so 4 MiB ahead plus one 1 MiB fetch in flight keeps it fed.
     * (max.partition.fetch.bytes is a soft limit: a larger record batch
     * still comes whole.) A full queue idles librdkafka 2.0's fetcher:
     * restore_poke wakes it. */
    static const char *const restorer_kv[] = {"fetch.wait.max.ms",
                                              "10",
                                              "queued.max.messages.kbytes",
                                              "4096",
                                              "queued.min.messages",
                                              "10000",
                                              "fetch.max.bytes",
                                              "1048576",
                                              "max.partition.fetch.bytes",
                                              "1048576",
                                              NULL};
    static const char *const hwm_kv[] = {"isolation.level", "read_uncommitted", NULL};
    if (!(w->restorer = assign_consumer(c, restorer_kv, "restore consumer", e)) ||
        !(w->hwm = assign_consumer(c, hwm_kv, "watermark client", e)))
        goto fail;
    int n1 = partition_count(w, w->t_callbacks, e);
    int n2 = n1 < 0 ? -1 : partition_count(w, w->t_connections, e);
    int n3 = n2 < 0 ? -1 : partition_count(w, w->t_status, e);
    if (n1 < 0 || n2 < 0 || n3 < 0)
        goto fail;
    if (n1 != n2 || n1 != n3 || n1 > MAX_PARTS || n1 != c->topic_partitions) {
        err_set(e, ERRC_FATAL,
                "topics %s, %s and %s must each have OAUTHQ_TOPIC_PARTITIONS=%d partitions (≤ "
                "%d): %d, %d, %d (a changed count sends callbacks away from their state: see "
                "docs/operations.md, Scaling partitions)",
                w->t_callbacks, w->t_connections, w->t_status, c->topic_partitions, MAX_PARTS, n1,
                n2, n3);
        goto fail;
    }
    w->nparts = n1;

    rd_kafka_conf_t *pc = kafka_conf_producer(c, c->worker_bench_no_txn ? NULL : w->txn_id, e);
    if (!pc)
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(pc, on_delivery);
    if (!(w->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof errstr))) {
        rd_kafka_conf_destroy(pc);
        err_set(e, ERRC_FATAL, "producer: %s", errstr);
        goto fail;
    }
    /* init_transactions fences older instances with our transactional.id;
     * retried while the broker (transaction coordinator) warms up. */
    if (c->worker_bench_no_txn)
        log_kv(LOGL_WARN, "bench_no_transactions", "warning",
               "OAUTHQ_WORKER_BENCH_NO_TXN=1: no exactly-once; for benchmarks only");
    if (!c->worker_bench_no_txn && kafka_init_transactions(w->producer, 60000, e) < 0)
        goto fail;

    const char *topics[] = {w->t_callbacks};
    if (!(w->consumer = kafka_group_consumer_new(c, w->group_id, on_rebalance, w, topics, 1, e)))
        goto fail;
    log_kv(LOGL_INFO, "worker_started", "instance_id", w->instance_id, "group", w->group_id,
           "transactional_id", w->txn_id, "topic", w->t_callbacks);
    return w;
fail:
    worker_close(w);
    return NULL;
}

/* The loop (SPEC §6): never waits for a token request. Each turn takes
 * what the consumer has (without blocking while requests are in flight),
 * decides it, drives curl, and every OAUTHQ_WORKER_COMMIT_MS commits the
 * settles, claims, DLQ records and offsets in one transaction. */
int worker_run(worker_t *w, volatile sig_atomic_t *stop, err_t *e)
{
    size_t cap = (size_t)w->cfg.worker_batch;
    int rc = 0;
    while (!*stop && rc == 0) {
        if (w->fatal) {
            *e = w->fatal_err;
            rc = -1;
            break;
        }
        if (w->revoke_pending) {
            if (serve_revoke(w, e) < 0) {
                rc = -1;
                break;
            }
        } else if (w->assign_pending) {
            if (serve_assign(w, e) < 0) {
                rc = -1;
                break;
            }
        }
        /* Settle what finished first (it piled up while the last
         * transaction ran): the slots it frees belong in this turn's read
         * budget, so the next claim round claims them. */
        if (exchange_active(w->x) > 0)
            exchange_perform(w->x, 0, on_exchange_done, w);
        int pending = work_pending(w);
        int active = exchange_active(w->x);
        int wait = commit_wait_ms(w, pending, MAX_WAIT_MS);
        /* Consumer first: block on it only when no request needs driving. */
        size_t budget = read_budget(w, cap, active);
        for (size_t n = 0; n < budget; n++) {
            rd_kafka_message_t *m =
                rd_kafka_consumer_poll(w->consumer, n == 0 && active == 0 ? wait : 0);
            if (!m)
                break;
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    log_kv(LOGL_WARN, "consumer_error", "reason", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                break;
            }
            int32_t p = m->partition;
            if (p < 0 || p >= w->nparts || !w->parts[p].assigned) {
                rd_kafka_message_destroy(m); /* not ours (any more) */
                continue;
            }
            int r = on_message(w, m, e);
            if (r == 0) {
                w->parts[p].next_offset = m->offset + 1;
                w->offsets_dirty = 1;
            }
            rd_kafka_message_destroy(m);
            if (r < 0) {
                rc = -1;
                break;
            }
            if (w->revoke_pending || w->assign_pending)
                break;
        }
        if (rc < 0 || w->fatal)
            continue;
        /* Drive the requests in flight; settle what finished. */
        active = exchange_active(w->x);
        if (active > 0) {
            int wt = commit_wait_ms(w, work_pending(w), 5);
            exchange_perform(w->x, wt, on_exchange_done, w);
        }
        metrics_gauge_set(w->m_inflight, exchange_active(w->x) - exchange_waiting(w->x));
        metrics_gauge_set(w->m_waiting, exchange_waiting(w->x));
        if (w->fatal)
            continue;
        if (!sched_commit_due_urgent(w->last_commit_mono, w->last_commit_end_mono, mono_ms(),
                                     w->cfg.worker_commit_ms, w->cfg.worker_commit_gap_ms,
                                     urgent_work(w)))
            continue;
        /* Scheduled work that is due, as far as slots are free. */
        if (collect_due(w, now_ms(), e) < 0) {
            rc = -1;
            break;
        }
        int any = work_pending(w);
        for (size_t i = 0; !any && i < w->nitems; i++)
            any = w->items[i]->exchange || w->items[i]->deauthorize;
        if (any) {
            metrics_counter_add(w->m_batches, 1);
            if (commit_round(w, e) < 0) {
                rc = -1;
                break;
            }
        } else {
            w->last_commit_mono = mono_ms();
        }
        update_lag(w);
    }
    if (rc == 0 && *stop)
        rc = drain(w, e);
    return rc;
}

void worker_close(worker_t *w)
{
    if (!w)
        return;
    if (w->http)
        httpd_stop(w->http);
    if (w->consumer) {
        w->closing = 1;
        rd_kafka_consumer_close(w->consumer);
        rd_kafka_destroy(w->consumer);
    }
    close_partitions(w);
    if (w->producer)
        rd_kafka_destroy(w->producer);
    if (w->restorer) {
        rd_kafka_consumer_close(w->restorer);
        rd_kafka_destroy(w->restorer);
    }
    exchange_free(w->x); /* before the items its transfers point into */
    for (size_t i = 0; i < w->nitems; i++)
        item_free(w->items[i]);
    free(w->items);
    dlq_reset(w);
    free(w->dlqs);
    if (w->assign_pending)
        rd_kafka_topic_partition_list_destroy(w->assign_pending);
    if (w->hwm)
        rd_kafka_destroy(w->hwm);
    keyring_free(w->data_keys);
    providers_free(w->providers);
    crypto_wipe(w->secrets, sizeof w->secrets);
    metrics_free(w->metrics);
    free(w);
}
