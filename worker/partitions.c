/* partitions — assignment, restore, takeover, revocation and drain (SPEC
 * §6). The rebalance callback only records what changed; the loop serves it
 * here: stable committed offsets first, then each partition's store brought
 * up to date from the changelog (many records per SQLite transaction), its
 * pause states, and its open claims resolved as unknown outcomes. */
#include "worker/worker_int.h"

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
    if (store_claimed(w->parts[p].store, wk_collect_id, &l, e) < 0) {
        free(l.ids);
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < l.n; i++) {
        int fresh;
        item_t *it = wk_item_get(w, l.ids[i], "unknown", p, &fresh, e);
        if (!it && e->cls == ERRC_PERMANENT) {
            err_clear(e);
            continue;
        }
        if (!it) {
            free(l.ids);
            return -1;
        }
        machine_refresh_policy rp = wk_refresh_policy(w, it->c->provider);
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

void wk_close_partitions(worker_t *w)
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
void wk_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
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
int wk_serve_revoke(worker_t *w, err_t *e)
{
    int lost = rd_kafka_assignment_lost(w->consumer);
    /* Nothing new leaves once the partitions go: requests still waiting
     * for a slot come back unsent and settle with the last transaction. */
    exchange_cancel_waiting(w->x);
    if (!lost && exchange_active(w->x) > 0 && mono_ms() < w->revoke_deadline_mono)
        return 0; /* keep driving the requests */
    if (!lost && wk_commit_round(w, e) < 0)
        return -1;
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = w->items[i];
        it->orphan = 1;
        it->exchange = 0;
        it->changed = 0;
        it->deauthorize = 0;
        if (it->claimed_now) { /* never sent */
            wk_release_slot(w, it);
            it->slot = -1;
            it->claimed_now = 0;
        }
    }
    wk_dlq_reset(w);
    wk_items_gc(w, 1);
    wk_close_partitions(w);
    rd_kafka_assign(w->consumer, NULL);
    w->revoke_pending = 0;
    return 0;
}

/* Stop requested: the same as a revocation (finish the requests in flight
 * within the exchange timeout, commit their settles, give the partitions
 * up), so rd_kafka_consumer_close afterwards has nothing left to do. */
int wk_drain(worker_t *w, err_t *e)
{
    w->revoke_deadline_mono = mono_ms() + w->cfg.exchange_timeout_ms + 2000;
    w->revoke_pending = 1;
    for (int guard = 0; w->revoke_pending && !w->fatal && guard < 1000000; guard++) {
        if (wk_serve_revoke(w, e) < 0)
            return -1;
        if (w->revoke_pending)
            exchange_perform(w->x, 5, wk_on_exchange_done, w);
    }
    if (w->fatal) {
        *e = w->fatal_err;
        return -1;
    }
    return 0;
}

/* An assignment: restore and take over each partition, then start
 * consuming it from its committed offset. */
int wk_serve_assign(worker_t *w, err_t *e)
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
            restore_partition(w, p, e) < 0 || wk_pstate_load(w, p, e) < 0 ||
            takeover(w, p, e) < 0) {
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
