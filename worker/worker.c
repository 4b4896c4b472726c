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

#include "common/crypto.h"
#include "common/httpd.h"
#include "common/metrics.h"
#include "common/kafka.h"
#include "common/keyring.h"
#include "common/log.h"
#include "common/providers.h"
#include "common/records.h"
#include "common/sealed.h"
#include "worker/conn.h"
#include "worker/deauth.h"
#include "worker/exchange.h"
#include "worker/machine.h"
#include "worker/store.h"

#define MAX_PARTS      256
#define DUE_PER_PART   64
#define TXN_TIMEOUT_MS 30000
#define SETTLE_TRIES   5

typedef struct {
    store_t *store;
    int assigned;
} part_t;

/* One key's work in a batch. */
typedef struct {
    conn_t *c;
    int32_t partition;
    int changed;
    int exchange;
    int deauthorize;     /* revoke at the provider before the claim commits */
    int64_t conn_offset; /* set by the delivery report of its connections record */
    exchange_req req;
    char code[RECORDS_CODE_MAX + 1];
    char verifier[RECORDS_VERIFIER_MAX + 1];
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
    int64_t paused_until[PROVIDERS_MAX];
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    rd_kafka_t *restorer; /* assign-only reader of the changelog */
    char t_callbacks[256], t_connections[256], t_status[256], t_dlq[256];
    char group_id[160], txn_id[160], instance_id[64], redirect_uri[CONFIG_PATH_MAX + 32];
    part_t parts[MAX_PARTS];
    int nparts;
    exchange_t *x;
    atomic_int fatal; /* read by the listener threads (/readyz) */
    err_t fatal_err;
    /* observability (metrics are lock-free; the listener has its own threads) */
    metrics_t *metrics;
    httpd_t *http;
    atomic_int ready;
    metric_counter *m_batches, *m_committed, *m_aborted, *m_unknown, *m_retries, *m_dlq,
        *m_takeovers;
    metric_histogram *m_exchange_s, *m_restore_s;
    metric_gauge *m_lag;
    int64_t lag_checked_ms;
    /* batch state */
    item_t *items;
    size_t nitems, cap_items;
    dlq_t *dlqs;
    size_t ndlq, cap_dlq;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

/* Until when a provider is paused (0: not paused, or unknown provider). */
static int64_t paused_until(const worker_t *w, const char *provider)
{
    int pi = provider_index(w, provider);
    return pi >= 0 ? w->paused_until[pi] : 0;
}

/* ---- batch working set ------------------------------------------------------ */

static item_t *item_find(worker_t *w, const char *id)
{
    for (size_t i = 0; i < w->nitems; i++)
        if (strcmp(w->items[i].c->id, id) == 0)
            return &w->items[i];
    return NULL;
}

/* Get the key's item, loading its state from the store (or a fresh one). */
static item_t *item_get(worker_t *w, const char *id, const char *provider, int32_t partition,
                        int *fresh, err_t *e)
{
    item_t *it = item_find(w, id);
    *fresh = 0;
    if (it)
        return it;
    if (w->nitems == w->cap_items) {
        size_t nc = w->cap_items ? w->cap_items * 2 : 64;
        item_t *ni = realloc(w->items, nc * sizeof *ni);
        if (!ni) {
            err_set(e, ERRC_FATAL, "out of memory");
            return NULL;
        }
        w->items = ni;
        w->cap_items = nc;
    }
    it = &w->items[w->nitems];
    memset(it, 0, sizeof *it);
    it->c = calloc(1, sizeof *it->c);
    if (!it->c) {
        err_set(e, ERRC_FATAL, "out of memory");
        return NULL;
    }
    it->partition = partition;
    it->conn_offset = -1;
    char *rec = NULL;
    int64_t version = 0;
    store_t *st = partition >= 0 && partition < MAX_PARTS ? w->parts[partition].store : NULL;
    int got = st ? store_get(st, id, &rec, &version, e) : 0;
    if (got < 0) {
        free(it->c);
        return NULL;
    }
    if (got == 1 && conn_decode(rec, strlen(rec), it->c, e) == 0) {
        free(rec);
    } else {
        if (got == 1)
            log_kv(LOGL_ERROR, "store_record_unreadable", "connection_id", id, "reason", e->msg);
        free(rec);
        conn_init(it->c, id, provider, now_ms());
        *fresh = 1;
    }
    w->nitems++;
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

static void batch_reset(worker_t *w)
{
    for (size_t i = 0; i < w->nitems; i++) {
        crypto_wipe(w->items[i].code, sizeof w->items[i].code);
        crypto_wipe(w->items[i].verifier, sizeof w->items[i].verifier);
        crypto_wipe(&w->items[i].req.result, sizeof w->items[i].req.result);
        crypto_wipe(w->items[i].c, sizeof *w->items[i].c);
        free(w->items[i].c);
    }
    w->nitems = 0;
    for (size_t i = 0; i < w->ndlq; i++)
        free(w->dlqs[i].value);
    w->ndlq = 0;
}

static void add_dlq(worker_t *w, const rd_kafka_message_t *m, const char *reason)
{
    if (w->ndlq == w->cap_dlq) {
        size_t nc = w->cap_dlq ? w->cap_dlq * 2 : 16;
        dlq_t *nd = realloc(w->dlqs, nc * sizeof *nd);
        if (!nd)
            return;
        w->dlqs = nd;
        w->cap_dlq = nc;
    }
    dlq_t *d = &w->dlqs[w->ndlq];
    d->value = conn_dlq_json(reason, w->t_callbacks, m->partition, m->offset, m->key, m->key_len,
                             m->payload, m->len, 1, reason, reason, now_ms(), NULL);
    if (!d->value)
        return;
    d->len = strlen(d->value);
    d->partition = m->partition;
    size_t kn = m->key_len < sizeof d->key - 1 ? m->key_len : sizeof d->key - 1;
    memcpy(d->key, m->key ? m->key : "", m->key ? kn : 0);
    d->key[m->key ? kn : 0] = '\0';
    w->ndlq++;
    log_kv(LOGL_WARN, "callback_to_dlq", "reason", reason, "key", d->key);
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
        return -1;
    if (it->exchange)
        return 0; /* already being exchanged in this batch */
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
    if (pr.pause) {
        if (w->paused_until[pi] < INT64_MAX / 4)
            log_kv(LOGL_WARN, "provider_paused", "provider", pv->name, "by", pr.requested_by,
                   "reason", "operator");
        w->paused_until[pi] = INT64_MAX / 2;
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
    int was_paused = w->paused_until[pi] > now;
    w->paused_until[pi] = 0;
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
        return -1;
    machine_action a = machine_on_disconnect(it->c, fresh, now_ms());
    if (a == MACHINE_CHANGED)
        it->changed = 1;
    if (a == MACHINE_DEAUTHORIZE)
        it->deauthorize = 1;
    return 0;
}

/* Revoke at the provider for the items that asked, before the claim
 * transaction commits their offsets: a crash in between re-consumes the
 * request and revokes again, which providers treat as already done. */
static int deauthorize_items(worker_t *w, err_t *e)
{
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = &w->items[i];
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
            if (!it)
                return -1;
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
        return -1;
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
    if (a == MACHINE_UNCHANGED || (is_code && !it->exchange && !fresh))
        log_kv(LOGL_INFO, "callback_not_exchanged", "connection_id", key, "code_sha256",
               hash[0] ? hash + 52 : "-", "status", conn_status_name(it->c->status), "request_id",
               request_id);
    return 0;
}

/* Scheduled retries of partition p that are due now. */
static int collect_due(worker_t *w, int32_t p, int64_t now, err_t *e)
{
    id_list l = {NULL, 0, 0};
    if (store_due(w->parts[p].store, now, DUE_PER_PART, collect_id, &l, e) < 0) {
        free(l.ids);
        return -1;
    }
    for (size_t i = 0; i < l.n; i++) {
        int fresh;
        item_t *it = item_get(w, l.ids[i], "unknown", p, &fresh, e);
        if (!it) {
            free(l.ids);
            return -1;
        }
        if (fresh || it->exchange)
            continue;
        item_apply(it, machine_on_due(it->c, paused_until(w, it->c->provider), now));
    }
    free(l.ids);
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

/* Produce the changed items' records (and DLQ records and offsets when
 * given) in one transaction and commit. Returns 0 committed, -1 aborted
 * (abortable), -2 fatal. */
static int run_txn(worker_t *w, int only_exchanged, rd_kafka_topic_partition_list_t *offsets,
                   int with_dlq)
{
    rd_kafka_error_t *err = rd_kafka_begin_transaction(w->producer);
    if (err) {
        set_fatal(w, "begin_transaction: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
        return -2;
    }
    int failed = 0;
    for (size_t i = 0; i < w->nitems && !failed; i++) {
        item_t *it = &w->items[i];
        if (!it->changed || (only_exchanged && !it->exchange))
            continue;
        it->conn_offset = -1;
        char *conn = conn_encode(it->c, NULL);
        char *status = conn_status_json(it->c, NULL);
        if (!conn || !status ||
            produce(w, w->t_connections, it->partition, it->c->id, conn, strlen(conn),
                    &it->conn_offset) < 0 ||
            produce(w, w->t_status, it->partition, it->c->id, status, strlen(status), NULL) < 0)
            failed = 1;
        if (conn)
            crypto_wipe(conn, strlen(conn));
        free(conn);
        free(status);
    }
    for (size_t i = 0; with_dlq && i < w->ndlq && !failed; i++)
        if (produce(w, w->t_dlq, w->dlqs[i].partition, w->dlqs[i].key, w->dlqs[i].value,
                    w->dlqs[i].len, NULL) < 0)
            failed = 1;
    if (!failed && offsets && offsets->cnt > 0) {
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
                return -2;
            }
            rd_kafka_error_destroy(err);
            failed = 1;
        }
    }
    if (!failed) {
        for (int tries = 0; tries < 10; tries++) {
            err = rd_kafka_commit_transaction(w->producer, TXN_TIMEOUT_MS);
            if (!err || txn_error_kind(err) != 1)
                break;
            rd_kafka_error_destroy(err);
            err = NULL;
        }
        if (!err) {
            rd_kafka_poll(w->producer, 0); /* serve any remaining delivery reports */
            metrics_counter_add(w->m_committed, 1);
            return 0;
        }
        int kind = txn_error_kind(err);
        log_kv(LOGL_WARN, "commit_failed", "reason", rd_kafka_error_string(err));
        if (kind == 3) {
            set_fatal(w, "commit_transaction: %s", rd_kafka_error_string(err));
            rd_kafka_error_destroy(err);
            return -2;
        }
        rd_kafka_error_destroy(err);
    }
    err = rd_kafka_abort_transaction(w->producer, TXN_TIMEOUT_MS);
    if (err) {
        set_fatal(w, "abort_transaction: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
        return -2;
    }
    log_kv(LOGL_WARN, "transaction_aborted");
    metrics_counter_add(w->m_aborted, 1);
    return -1;
}

/* After a commit: write the committed states into the partition stores,
 * with the changelog offsets of their records. */
static int apply_to_stores(worker_t *w, int only_exchanged, err_t *e)
{
    for (int p = 0; p < w->nparts; p++) {
        if (!w->parts[p].store)
            continue;
        size_t n = 0;
        int64_t max_off = -1;
        store_row *rows = calloc(w->nitems ? w->nitems : 1, sizeof *rows);
        char **recs = calloc(w->nitems ? w->nitems : 1, sizeof *recs);
        if (!rows || !recs) {
            free(rows);
            free(recs);
            return err_set(e, ERRC_FATAL, "out of memory");
        }
        for (size_t i = 0; i < w->nitems; i++) {
            item_t *it = &w->items[i];
            if (it->partition != p || !it->changed || (only_exchanged && !it->exchange))
                continue;
            recs[n] = conn_encode(it->c, e);
            if (!recs[n])
                break;
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
        int rc = 0;
        if (n > 0) {
            int64_t applied = store_applied_offset(w->parts[p].store);
            rc = store_apply(w->parts[p].store, rows, n, max_off > applied ? max_off : applied, e);
        }
        for (size_t i = 0; i < n; i++) {
            crypto_wipe(recs[i], strlen(recs[i]));
            free(recs[i]);
        }
        free(rows);
        free(recs);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Seek the consumer back to the committed offsets of its assignment. */
static void rewind_consumer(worker_t *w)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(w->consumer, &a) || !a)
        return;
    if (rd_kafka_committed(w->consumer, a, 10000) == 0) {
        for (int i = 0; i < a->cnt; i++)
            if (a->elems[i].offset < 0)
                a->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_error_t *err = rd_kafka_seek_partitions(w->consumer, a, 10000);
        if (err)
            rd_kafka_error_destroy(err);
    }
    rd_kafka_topic_partition_list_destroy(a);
    log_kv(LOGL_WARN, "consumer_rewound");
}

/* ---- exchange ------------------------------------------------------------------------ */

static int exchange_items(worker_t *w, err_t *e)
{
    int queued = 0;
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = &w->items[i];
        if (!it->exchange)
            continue;
        const provider_t *pv = providers_find(w->providers, it->c->provider);
        int pi = provider_index(w, it->c->provider);
        if (sealed_open(w->data_keys, it->c->id, "code", it->c->code_sealed, it->code,
                        sizeof it->code, e) < 0)
            return -1;
        it->verifier[0] = '\0';
        if (it->c->verifier_sealed[0] &&
            sealed_open(w->data_keys, it->c->id, "code_verifier", it->c->verifier_sealed,
                        it->verifier, sizeof it->verifier, e) < 0)
            return -1;
        memset(&it->req, 0, sizeof it->req);
        it->req.provider = pv;
        it->req.client_secret = w->secrets[pi];
        it->req.code = it->code;
        it->req.code_verifier = it->verifier;
        it->req.redirect_uri = w->redirect_uri;
        it->req.ud = it;
        if (exchange_add(w->x, &it->req, e) < 0)
            return -1;
        queued++;
    }
    int64_t t0 = now_ms();
    if (queued)
        exchange_run(w->x);
    int64_t now = now_ms();
    if (queued)
        metrics_histogram_observe(w->m_exchange_s, (double)(now - t0) / 1000.0);
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = &w->items[i];
        if (!it->exchange)
            continue;
        crypto_wipe(it->code, sizeof it->code);
        crypto_wipe(it->verifier, sizeof it->verifier);
        exchange_result *r = &it->req.result;
        char acc[CONN_SEALED_TOKEN] = "", ref[CONN_SEALED_TOKEN] = "";
        if (r->cls == EXCH_SUCCESS) {
            if (sealed_seal(w->data_keys, it->c->id, "access_token", r->access_token,
                            strlen(r->access_token), acc, sizeof acc, e) < 0 ||
                (r->refresh_token[0] &&
                 sealed_seal(w->data_keys, it->c->id, "refresh_token", r->refresh_token,
                             strlen(r->refresh_token), ref, sizeof ref, e) < 0))
                return -1;
        }
        int pause = 0;
        machine_on_result(it->c, r, acc, ref, now, &pause);
        char labels[64];
        snprintf(labels, sizeof labels, "outcome=\"%s\"", exchange_class_name(r->cls));
        metrics_counter_add(metrics_counter(w->metrics, "oauthq_worker_exchanges_total",
                                            "Token requests by outcome class", labels),
                            1);
        if (r->cls == EXCH_UNKNOWN)
            metrics_counter_add(w->m_unknown, 1);
        if (it->c->phase == PHASE_RETRYING)
            metrics_counter_add(w->m_retries, 1);
        if (it->c->status != CONN_PENDING) {
            char fl[96];
            snprintf(fl, sizeof fl, "status=\"%s\",reason=\"%s\"", conn_status_name(it->c->status),
                     conn_reason_name(it->c->reason) ? conn_reason_name(it->c->reason) : "");
            metrics_counter_add(metrics_counter(w->metrics, "oauthq_worker_final_total",
                                                "Connections that reached a final status", fl),
                                1);
        }
        if (pause) {
            int pi = provider_index(w, it->c->provider);
            w->paused_until[pi] = now + MACHINE_PAUSE_MS;
            log_kv(LOGL_ERROR, "provider_paused", "provider", it->c->provider, "reason",
                   "invalid_client: fix the client credentials; codes are held until their "
                   "deadline");
        }
        log_kv(LOGL_INFO, "exchange_done", "connection_id", it->c->id, "code_sha256",
               it->c->code_hash[0] ? it->c->code_hash + 52 : "-", "outcome",
               exchange_class_name(r->cls), "detail", r->detail, "status",
               conn_status_name(it->c->status));
        crypto_wipe(r->access_token, sizeof r->access_token);
        crypto_wipe(r->refresh_token, sizeof r->refresh_token);
    }
    return 0;
}

/* ---- one batch ----------------------------------------------------------------------- */

static int process(worker_t *w, rd_kafka_message_t **msgs, size_t n, err_t *e)
{
    batch_reset(w);
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(8);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = msgs[i];
        if (m->err)
            continue;
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(offsets, w->t_callbacks, m->partition);
        if (!tp)
            tp = rd_kafka_topic_partition_list_add(offsets, w->t_callbacks, m->partition);
        if (m->offset + 1 > tp->offset)
            tp->offset = m->offset + 1;
        if (on_message(w, m, e) < 0) {
            rc = -1;
            goto out;
        }
    }
    /* Scheduled retries that are due. */
    int64_t now = now_ms();
    for (int p = 0; p < w->nparts; p++) {
        if (!w->parts[p].store)
            continue;
        if (collect_due(w, p, now, e) < 0) {
            rc = -1;
            goto out;
        }
    }
    if (deauthorize_items(w, e) < 0) {
        rc = -1;
        goto out;
    }
    int any = offsets->cnt > 0 || w->ndlq > 0;
    if (n > 0)
        metrics_counter_add(w->m_batches, 1);
    metrics_counter_add(w->m_dlq, w->ndlq);
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = &w->items[i];
        if (it->exchange) {
            machine_claim(it->c, now);
            if (!providers_find(w->providers, it->c->provider)) {
                /* No provider to send it to (configuration changed): a
                 * definitive failure, never a crash loop. */
                exchange_result r;
                memset(&r, 0, sizeof r);
                r.cls = EXCH_FAILED;
                snprintf(r.error, sizeof r.error, "unauthorized_client");
                snprintf(r.detail, sizeof r.detail, "provider not configured");
                int pause;
                machine_on_result(it->c, &r, NULL, NULL, now, &pause);
                it->exchange = 0;
            }
        }
        any |= it->changed;
    }
    if (!any)
        goto out;
    /* Claim: states (exchanging for the keys to exchange), DLQ records and
     * the consumer offsets, atomically. No request has left yet. */
    int t = run_txn(w, 0, offsets, 1);
    if (t == -2) {
        rc = -1;
        *e = w->fatal_err;
        goto out;
    }
    if (t == -1) {
        rewind_consumer(w);
        goto out;
    }
    if (apply_to_stores(w, 0, e) < 0) {
        rc = -1;
        goto out;
    }
    /* Exchange, then settle. */
    int nx = 0;
    for (size_t i = 0; i < w->nitems; i++)
        nx += w->items[i].exchange;
    if (nx == 0)
        goto out;
    if (exchange_items(w, e) < 0) {
        rc = -1;
        goto out;
    }
    for (int tries = 0;; tries++) {
        t = run_txn(w, 1, NULL, 0);
        if (t == 0)
            break;
        if (t == -2 || tries + 1 >= SETTLE_TRIES) {
            /* The claims stay open in the changelog: the next owner treats
             * them as unknown-outcome attempts. */
            err_set(e, ERRC_FATAL, "settle transaction failed: %s",
                    w->fatal ? w->fatal_err.msg : "aborted repeatedly");
            rc = -1;
            goto out;
        }
    }
    if (apply_to_stores(w, 1, e) < 0)
        rc = -1;
out:
    rd_kafka_topic_partition_list_destroy(offsets);
    batch_reset(w);
    return rc;
}

/* ---- partitions: restore and takeover ---------------------------------------------- */

static int restore_partition(worker_t *w, int32_t p, err_t *e)
{
    store_t *st = w->parts[p].store;
    int64_t from = store_applied_offset(st) + 1;
    int64_t lo = 0, hi = 0;
    if (kafka_watermarks(w->restorer, w->t_connections, p, &lo, &hi, w->cfg.kafka_timeout_ms, e) <
        0)
        return -1;
    if (from < lo)
        from = lo;
    double t0 = (double)now_ms();
    long applied = 0;
    if (from < hi) {
        rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(tp, w->t_connections, p)->offset = from;
        rd_kafka_assign(w->restorer, tp);
        rd_kafka_topic_partition_list_destroy(tp);
        int done = 0;
        int64_t deadline = now_ms() + 120000;
        while (!done && now_ms() < deadline) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(w->restorer, 200);
            if (!m)
                continue;
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                done = 1;
            } else if (!m->err) {
                conn_t *c = calloc(1, sizeof *c);
                err_t de = {0};
                if (!m->payload) {
                    char kid[CONN_ID_MAX];
                    size_t kn = m->key_len < sizeof kid - 1 ? m->key_len : sizeof kid - 1;
                    memcpy(kid, m->key, kn);
                    kid[kn] = '\0';
                    const char *ids[1] = {kid};
                    store_delete(st, ids, 1, m->offset, &de);
                } else if (c && conn_decode(m->payload, m->len, c, &de) == 0) {
                    char *rec = strndup(m->payload, m->len);
                    store_row row = {c->id,
                                     c->version,
                                     conn_status_name(c->status),
                                     conn_phase_name(c->phase),
                                     c->provider,
                                     c->retry_at_ms,
                                     c->claimed,
                                     rec,
                                     c->updated_at_ms};
                    if (store_apply(st, &row, 1, m->offset, &de) < 0)
                        log_kv(LOGL_ERROR, "restore_apply_failed", "reason", de.msg);
                    if (rec)
                        crypto_wipe(rec, strlen(rec));
                    free(rec);
                    applied++;
                } else {
                    log_kv(LOGL_ERROR, "restore_record_unreadable", "reason", de.msg);
                }
                if (c)
                    crypto_wipe(c, sizeof *c);
                free(c);
                if (m->offset + 1 >= hi)
                    done = 1;
            }
            rd_kafka_message_destroy(m);
        }
        rd_kafka_assign(w->restorer, NULL);
        if (!done)
            return err_set(e, ERRC_RETRIABLE, "restoring %s[%d]: not finished in 120 s",
                           w->t_connections, p);
    }
    metrics_histogram_observe(w->m_restore_s, ((double)now_ms() - t0) / 1000.0);
    char part[16], n[24], ms[24];
    snprintf(part, sizeof part, "%d", p);
    snprintf(n, sizeof n, "%ld", applied);
    snprintf(ms, sizeof ms, "%.0f", (double)now_ms() - t0);
    log_kv(LOGL_INFO, "partition_restored", "partition", part, "records", n, "ms", ms);
    return 0;
}

/* Resolve claims left open by the previous owner (or our own crash). */
static int takeover(worker_t *w, int32_t p, err_t *e)
{
    batch_reset(w);
    id_list l = {NULL, 0, 0};
    if (store_claimed(w->parts[p].store, collect_id, &l, e) < 0) {
        free(l.ids);
        return -1;
    }
    for (size_t i = 0; i < l.n; i++) {
        int fresh;
        item_t *it = item_get(w, l.ids[i], "unknown", p, &fresh, e);
        if (!it) {
            free(l.ids);
            return -1;
        }
        if (!fresh && machine_on_takeover(it->c, now_ms()) != MACHINE_UNCHANGED)
            it->changed = 1;
    }
    free(l.ids);
    if (w->nitems == 0)
        return 0;
    char n[24];
    snprintf(n, sizeof n, "%zu", w->nitems);
    log_kv(LOGL_WARN, "open_claims_resolved", "count", n, "as", "unknown outcome");
    metrics_counter_add(w->m_takeovers, w->nitems);
    int t = run_txn(w, 0, NULL, 0);
    int rc = t == 0 ? apply_to_stores(w, 0, e) : -1;
    if (t != 0)
        err_set(e, t == -2 ? ERRC_FATAL : ERRC_RETRIABLE, "takeover transaction failed");
    batch_reset(w);
    return rc;
}

static void close_partitions(worker_t *w)
{
    for (int p = 0; p < MAX_PARTS; p++) {
        if (w->parts[p].store)
            store_close(w->parts[p].store);
        w->parts[p].store = NULL;
        w->parts[p].assigned = 0;
    }
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    worker_t *w = opaque;
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        /* Called between batches (we only poll there): nothing in flight. */
        log_kv(LOGL_INFO, "partitions_revoked");
        atomic_store(&w->ready, 0);
        close_partitions(w);
        rd_kafka_assign(rk, NULL);
        return;
    }
    if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, NULL);
        return;
    }
    err_t e = {0};
    for (int i = 0; i < parts->cnt && !w->fatal; i++) {
        int32_t p = parts->elems[i].partition;
        if (p < 0 || p >= MAX_PARTS || p >= w->nparts) {
            set_fatal(w, "partition out of range: %s", parts->elems[i].topic);
            break;
        }
        char path[CONFIG_PATH_MAX + 320];
        if (store_path(w->cfg.data_dir, w->t_callbacks, p, path, sizeof path, &e) < 0 ||
            !(w->parts[p].store = store_open(path, w->t_connections, p, &e)) ||
            restore_partition(w, p, &e) < 0 || takeover(w, p, &e) < 0) {
            set_fatal(w, "taking over a partition: %s", e.msg);
            break;
        }
        w->parts[p].assigned = 1;
    }
    if (w->fatal) {
        rd_kafka_assign(rk, NULL);
        return;
    }
    char n[16];
    snprintf(n, sizeof n, "%d", parts->cnt);
    log_kv(LOGL_INFO, "partitions_assigned", "count", n);
    rd_kafka_assign(rk, parts);
    atomic_store(&w->ready, 1);
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
    w->m_exchange_s = metrics_histogram(w->metrics, "oauthq_worker_exchange_batch_seconds",
                                        "Time to run one batch of concurrent token requests", NULL,
                                        exch_bounds, sizeof exch_bounds / sizeof exch_bounds[0]);
    w->m_restore_s = metrics_histogram(
        w->metrics, "oauthq_worker_restore_seconds", "Time to bring a partition store up to date",
        NULL, restore_bounds, sizeof restore_bounds / sizeof restore_bounds[0]);
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
    if (w->cfg.instance_id[0]) {
        snprintf(w->instance_id, sizeof w->instance_id, "%s", w->cfg.instance_id);
        return 0;
    }
    /* Persisted once in the data dir: a restarted worker keeps its
     * transactional.id, so it fences its own zombie (KIP-447). */
    char path[CONFIG_PATH_MAX + 32];
    mkdir(w->cfg.data_dir, 0700);
    snprintf(path, sizeof path, "%s/worker.id", w->cfg.data_dir);
    char buf[64];
    size_t n = 0;
    if (config_read_file(path, buf, sizeof buf, &n, NULL) == 0 && n > 0) {
        buf[strcspn(buf, "\r\n")] = '\0';
        snprintf(w->instance_id, sizeof w->instance_id, "%s", buf);
        return 0;
    }
    uint8_t raw[9];
    if (crypto_random(raw, sizeof raw, e) < 0)
        return -1;
    char id[16];
    crypto_b64url_encode(raw, sizeof raw, id, sizeof id);
    snprintf(w->instance_id, sizeof w->instance_id, "w%s", id);
    FILE *f = fopen(path, "w");
    if (!f)
        return err_set(e, ERRC_FATAL, "cannot write %s: %s", path, strerror(errno));
    fprintf(f, "%s\n", w->instance_id);
    fclose(f);
    return 0;
}

static int partition_count(worker_t *w, const char *topic, err_t *e)
{
    rd_kafka_topic_t *t = rd_kafka_topic_new(w->restorer, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(w->restorer, 0, t, &md, w->cfg.kafka_timeout_ms);
    rd_kafka_topic_destroy(t);
    int n = -1;
    if (err)
        err_set(e, kafka_errc(err), "metadata of %s: %s", topic, rd_kafka_err2str(err));
    else if (md->topics[0].err)
        err_set(e, ERRC_FATAL, "topic %s: %s (run oauthqctl topics create)", topic,
                rd_kafka_err2str(md->topics[0].err));
    else
        n = md->topics[0].partition_cnt;
    if (md)
        rd_kafka_metadata_destroy(md);
    return n;
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

    rd_kafka_conf_t *rc = kafka_conf_consumer(c, NULL, e);
    if (!rc)
        goto fail;
    if (!(w->restorer = rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr, sizeof errstr))) {
        rd_kafka_conf_destroy(rc);
        err_set(e, ERRC_FATAL, "restore consumer: %s", errstr);
        goto fail;
    }
    int n1 = partition_count(w, w->t_callbacks, e);
    int n2 = n1 < 0 ? -1 : partition_count(w, w->t_connections, e);
    int n3 = n2 < 0 ? -1 : partition_count(w, w->t_status, e);
    if (n1 < 0 || n2 < 0 || n3 < 0)
        goto fail;
    if (n1 != n2 || n1 != n3 || n1 > MAX_PARTS) {
        err_set(e, ERRC_FATAL,
                "topics %s, %s and %s must have the same number of partitions (≤ %d): %d, %d, %d",
                w->t_callbacks, w->t_connections, w->t_status, MAX_PARTS, n1, n2, n3);
        goto fail;
    }
    w->nparts = n1;

    rd_kafka_conf_t *pc = kafka_conf_producer(c, w->txn_id, e);
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
    int64_t deadline = now_ms() + 60000;
    for (;;) {
        rd_kafka_error_t *err = rd_kafka_init_transactions(w->producer, 10000);
        if (!err)
            break;
        int retry = rd_kafka_error_is_retriable(err) && now_ms() < deadline;
        log_kv(LOGL_WARN, "init_transactions", "reason", rd_kafka_error_string(err), "retry",
               retry ? "yes" : "no");
        if (!retry) {
            err_set(e, ERRC_FATAL, "init_transactions: %s", rd_kafka_error_string(err));
            rd_kafka_error_destroy(err);
            goto fail;
        }
        rd_kafka_error_destroy(err);
        sleep(1);
    }

    rd_kafka_conf_t *cc = kafka_conf_consumer(c, w->group_id, e);
    if (!cc)
        goto fail;
    rd_kafka_conf_set_rebalance_cb(cc, on_rebalance);
    rd_kafka_conf_set_opaque(cc, w);
    if (kafka_conf_set(cc, "enable.partition.eof", "false", e) < 0 ||
        kafka_conf_set(cc, "max.poll.interval.ms", "300000", e) < 0 ||
        kafka_conf_set(cc, "session.timeout.ms", "6000", e) < 0 ||
        kafka_conf_set(cc, "heartbeat.interval.ms", "1000", e) < 0) {
        rd_kafka_conf_destroy(cc);
        goto fail;
    }
    if (!(w->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, sizeof errstr))) {
        rd_kafka_conf_destroy(cc);
        err_set(e, ERRC_FATAL, "consumer: %s", errstr);
        goto fail;
    }
    rd_kafka_poll_set_consumer(w->consumer);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, w->t_callbacks, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t serr = rd_kafka_subscribe(w->consumer, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (serr) {
        err_set(e, ERRC_FATAL, "subscribe: %s", rd_kafka_err2str(serr));
        goto fail;
    }
    log_kv(LOGL_INFO, "worker_started", "instance_id", w->instance_id, "group", w->group_id,
           "transactional_id", w->txn_id, "topic", w->t_callbacks);
    return w;
fail:
    worker_close(w);
    return NULL;
}

int worker_run(worker_t *w, volatile sig_atomic_t *stop, err_t *e)
{
    size_t cap = (size_t)w->cfg.worker_batch;
    rd_kafka_message_t **msgs = calloc(cap, sizeof *msgs);
    if (!msgs)
        return err_set(e, ERRC_FATAL, "out of memory");
    int rc = 0;
    while (!*stop) {
        size_t n = 0;
        int64_t until = now_ms() + 100;
        while (n < cap) {
            int64_t left = until - now_ms();
            rd_kafka_message_t *m =
                rd_kafka_consumer_poll(w->consumer, n == 0 && left > 0 ? (int)left : 0);
            if (w->fatal)
                break;
            if (!m)
                break;
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    log_kv(LOGL_WARN, "consumer_error", "reason", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                if (n == 0 && now_ms() < until)
                    continue;
                break;
            }
            msgs[n++] = m;
        }
        if (w->fatal) {
            *e = w->fatal_err;
            rc = -1;
        } else if (process(w, msgs, n, e) < 0) {
            rc = -1;
        }
        for (size_t i = 0; i < n; i++)
            rd_kafka_message_destroy(msgs[i]);
        if (rc < 0)
            break;
        update_lag(w);
    }
    free(msgs);
    return rc;
}

void worker_close(worker_t *w)
{
    if (!w)
        return;
    if (w->http)
        httpd_stop(w->http);
    if (w->consumer) {
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
    batch_reset(w);
    free(w->items);
    free(w->dlqs);
    exchange_free(w->x);
    keyring_free(w->data_keys);
    providers_free(w->providers);
    crypto_wipe(w->secrets, sizeof w->secrets);
    metrics_free(w->metrics);
    free(w);
}
