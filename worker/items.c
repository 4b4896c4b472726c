/* items — the worker's working set (see worker_int.h): one live item per
 * key from the record or due row that touched it until its state committed
 * and no request of it is in flight, and the dead letters queued for the
 * next transaction. Items are heap-allocated so curl may hold pointers into
 * them; their secrets are wiped when they go. */
#include "worker/worker_int.h"

void wk_set_fatal(worker_t *w, const char *fmt, const char *detail)
{
    if (atomic_load(&w->fatal))
        return;
    atomic_store(&w->fatal, 1);
    err_set(&w->fatal_err, ERRC_FATAL, fmt, detail);
}

int wk_provider_index(const worker_t *w, const char *name)
{
    for (size_t i = 0; i < providers_count(w->providers); i++)
        if (strcmp(providers_at(w->providers, i)->name, name) == 0)
            return (int)i;
    return -1;
}

/* Until when a provider's codes are held (0: not paused, or unknown provider). */
int64_t wk_paused_until(const worker_t *w, const char *provider)
{
    int pi = wk_provider_index(w, provider);
    return pi >= 0 ? sched_paused_until(&w->sched, pi, now_ms()) : 0;
}

/* The refresh rules of a provider (SPEC §5b); unknown: the safe side. */
machine_refresh_policy wk_refresh_policy(const worker_t *w, const char *provider)
{
    const provider_t *pv = providers_find(w->providers, provider);
    machine_refresh_policy rp = {pv ? pv->refresh_rotation : 1, pv ? pv->refresh_ahead_s : 0,
                                 w->cfg.refresh_skew_s};
    return rp;
}

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

void wk_item_free(item_t *it)
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
item_t *wk_item_get(worker_t *w, const char *id, const char *provider, int32_t partition,
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
        wk_item_free(it);
        return NULL;
    }
    if (got == 1) {
        err_t de = {0};
        int ok = conn_decode(rec, strlen(rec), it->c, &de) == 0;
        crypto_wipe(rec, strlen(rec));
        free(rec);
        if (!ok) {
            log_kv(LOGL_ERROR, "store_record_unreadable", "connection_id", id, "reason", de.msg);
            wk_item_free(it);
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
void wk_item_apply(item_t *it, machine_action a)
{
    if (a != MACHINE_UNCHANGED)
        it->changed = 1;
    if (a == MACHINE_EXCHANGE)
        it->exchange = 1;
}

/* Drop the live items nothing refers to any more (committed, not in
 * flight); all == 1 drops every item not held by curl. */
void wk_items_gc(worker_t *w, int all)
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
            wk_item_free(it);
    }
    w->nitems = k;
}

void wk_dlq_reset(worker_t *w)
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
            wk_set_fatal(w, "dead-letter record: %s", "out of memory");
            return;
        }
        w->dlqs = nd;
        w->cap_dlq = nc;
    }
    dlq_t *d = &w->dlqs[w->ndlq];
    d->value = conn_dlq_json(reason, w->t_callbacks, partition, offset, key, key_len, original,
                             orig_len, 1, reason, reason, now_ms(), NULL);
    if (!d->value) {
        wk_set_fatal(w, "dead-letter record: %s", "out of memory");
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
void wk_add_dlq_raw(worker_t *w, int32_t partition, int64_t offset, const char *key,
                    const char *original, size_t orig_len, const char *reason)
{
    dlq_push(w, partition, offset, key, strlen(key), original, orig_len, reason, "record_to_dlq");
}

void wk_add_dlq(worker_t *w, const rd_kafka_message_t *m, const char *reason)
{
    dlq_push(w, m->partition, m->offset, m->key, m->key_len, m->payload, m->len, reason,
             "callback_to_dlq");
}

int wk_collect_id(const char *id, const char *record, int64_t version, void *ud)
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
