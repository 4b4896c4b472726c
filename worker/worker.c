/* worker — see worker.h and worker_int.h: lifecycle (open, close) and
 * the loop. */
#include "worker/worker_int.h"

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
    if (instance_id(w, e) < 0 || wk_open_observability(w, e) < 0)
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
    rd_kafka_conf_set_dr_msg_cb(pc, wk_on_delivery);
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
    if (!(w->consumer = kafka_group_consumer_new(c, w->group_id, wk_on_rebalance, w, topics, 1, e)))
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
            if (wk_serve_revoke(w, e) < 0) {
                rc = -1;
                break;
            }
        } else if (w->assign_pending) {
            if (wk_serve_assign(w, e) < 0) {
                rc = -1;
                break;
            }
        }
        /* Settle what finished first (it piled up while the last
         * transaction ran): the slots it frees belong in this turn's read
         * budget, so the next claim round claims them. */
        if (exchange_active(w->x) > 0)
            exchange_perform(w->x, 0, wk_on_exchange_done, w);
        int pending = wk_work_pending(w);
        int active = exchange_active(w->x);
        int wait = wk_commit_wait_ms(w, pending, MAX_WAIT_MS);
        /* Consumer first: block on it only when no request needs driving. */
        size_t budget = wk_read_budget(w, cap, active);
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
            int r = wk_on_message(w, m, e);
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
            int wt = wk_commit_wait_ms(w, wk_work_pending(w), 5);
            exchange_perform(w->x, wt, wk_on_exchange_done, w);
        }
        metrics_gauge_set(w->m_inflight, exchange_active(w->x) - exchange_waiting(w->x));
        metrics_gauge_set(w->m_waiting, exchange_waiting(w->x));
        if (w->fatal)
            continue;
        if (!sched_commit_due_urgent(w->last_commit_mono, w->last_commit_end_mono, mono_ms(),
                                     w->cfg.worker_commit_ms, w->cfg.worker_commit_gap_ms,
                                     wk_urgent_work(w)))
            continue;
        /* Scheduled work that is due, as far as slots are free. */
        if (wk_collect_due(w, now_ms(), e) < 0) {
            rc = -1;
            break;
        }
        int any = wk_work_pending(w);
        for (size_t i = 0; !any && i < w->nitems; i++)
            any = w->items[i]->exchange || w->items[i]->deauthorize;
        if (any) {
            metrics_counter_add(w->m_batches, 1);
            if (wk_commit_round(w, e) < 0) {
                rc = -1;
                break;
            }
        } else {
            w->last_commit_mono = mono_ms();
        }
        wk_update_lag(w);
    }
    if (rc == 0 && *stop)
        rc = wk_drain(w, e);
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
    wk_close_partitions(w);
    if (w->producer)
        rd_kafka_destroy(w->producer);
    if (w->restorer) {
        rd_kafka_consumer_close(w->restorer);
        rd_kafka_destroy(w->restorer);
    }
    exchange_free(w->x); /* before the items its transfers point into */
    for (size_t i = 0; i < w->nitems; i++)
        wk_item_free(w->items[i]);
    free(w->items);
    wk_dlq_reset(w);
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
