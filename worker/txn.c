/* txn — the worker's Kafka transactions (SPEC §6): one transaction per
 * commit round carries the changed states, pause states, DLQ records and
 * the offsets of every owned partition, fenced by the group metadata; after
 * a commit the stores take the committed states, after an abort the
 * consumer rewinds. Errors are classed as librdkafka's transactions example
 * does: retry the call, abort the transaction, or fatal. */
#include "worker/worker_int.h"

void wk_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
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
rd_kafka_topic_partition_list_t *wk_current_offsets(worker_t *w)
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
void wk_count_final(worker_t *w, item_t *it)
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
            char *rec = wk_pstate_encode(w, (int)pi, NULL);
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
        wk_set_fatal(w, "bench commit: %s", rd_kafka_err2str(err));
        return TXN_FATAL;
    }
    metrics_counter_add(w->m_committed, 1);
    return TXN_COMMITTED;
}

/* One transaction: the changed states (settles, claims, takeovers), the
 * DLQ records and the offsets of every owned partition, fenced by the
 * consumer's group metadata. */
txn_result wk_commit_txn(worker_t *w, rd_kafka_topic_partition_list_t *offsets)
{
    if (w->cfg.worker_bench_no_txn)
        return commit_plain(w, offsets);
    int64_t t0 = mono_us();
    rd_kafka_error_t *err = rd_kafka_begin_transaction(w->producer);
    if (err) {
        wk_set_fatal(w, "begin_transaction: %s", rd_kafka_error_string(err));
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
                wk_set_fatal(w, "send_offsets_to_transaction: %s", rd_kafka_error_string(err));
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
            wk_set_fatal(w, "commit_transaction: %s", rd_kafka_error_string(err));
            rd_kafka_error_destroy(err);
            return TXN_FATAL;
        }
        rd_kafka_error_destroy(err);
    }
    err = rd_kafka_abort_transaction(w->producer, TXN_TIMEOUT_MS);
    if (err) {
        wk_set_fatal(w, "abort_transaction: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
        return TXN_FATAL;
    }
    log_kv(LOGL_WARN, "transaction_aborted");
    metrics_counter_add(w->m_aborted, 1);
    return TXN_ABORTED;
}

/* After a commit: write the committed states into the partition stores,
 * with the changelog offsets of their records. */
int wk_apply_to_stores(worker_t *w, err_t *e)
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
            if (!(recs[n] = wk_pstate_encode(w, (int)pi, e))) {
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
int wk_rewind_consumer(worker_t *w, err_t *e)
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
