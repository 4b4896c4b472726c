/* pipeline — the exchange pipeline (SPEC §6): claims as far as the
 * scheduler's slots allow (sched.c), committed claims handed to the exchange
 * driver within their lease, settles of finished requests, and the commit
 * round that ties them to one transaction; plus the loop's read and wait
 * budgets. The loop never waits for a token request. */
#include "worker/worker_int.h"

/* Give a claimed item's slot back without an answer (never sent); a probe
 * that never left lets the next one go. */
void wk_release_slot(worker_t *w, item_t *it)
{
    sched_release(&w->sched, it->slot);
    if (it->probe) {
        int pi = wk_provider_index(w, it->c->provider);
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
        int pi = wk_provider_index(w, it->c->provider);
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
void wk_on_exchange_done(exchange_req *req, void *ud)
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
            sched_probe_done(&w->sched, wk_provider_index(w, it->c->provider), -1, now,
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
        wk_set_fatal(w, "sealing tokens: %s", e.msg);
        crypto_wipe(r, sizeof *r);
        return;
    }
    int pause = 0;
    machine_refresh_policy rp = wk_refresh_policy(w, it->c->provider);
    machine_on_result(it->c, r, acc, ref, &rp, now, &pause);
    crypto_wipe(acc, sizeof acc);
    crypto_wipe(ref, sizeof ref);
    it->changed = 1;
    it->settled = 1;
    record_outcome(w, it, r);
    int pi = wk_provider_index(w, it->c->provider);
    if (pause) /* held with the others: due again at the next probe time (the machine's
                * own re-probe delay is MACHINE_PAUSE_MS) */
        machine_due_by(it->c, now + w->cfg.worker_probe_interval_ms);
    if (it->probe) {
        it->probe = 0;
        int was = pi >= 0 && w->sched.pause[pi] == SCHED_PAUSED_INVALID_CLIENT;
        sched_probe_done(&w->sched, pi, pause, now, w->cfg.worker_probe_interval_ms);
        if (was && w->sched.pause[pi] == SCHED_RUNNING) {
            log_kv(LOGL_INFO, "provider_resumed", "provider", it->c->provider, "by",
                   "probe: the credentials work again; held codes follow");
            wk_pstate_mark(w, -1, pi);
        }
    } else if (pause && pi >= 0 &&
               sched_pause_set(&w->sched, pi, SCHED_PAUSED_INVALID_CLIENT,
                               now + w->cfg.worker_probe_interval_ms, now)) {
        wk_pstate_mark(w, -1, pi);
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
    wk_release_slot(w, it);
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
            wk_add_dlq_raw(w, it->partition, -1, it->c->id, NULL, 0,
                           "unsealable: refresh token sealed with an unknown data key");
            wk_release_slot(w, it);
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
        wk_add_dlq_raw(w, it->partition, -1, it->c->id, NULL, 0,
                       "unsealable: code sealed with an unknown data key");
        wk_release_slot(w, it);
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
        wk_on_exchange_done(&it->req, w);
        return;
    }
    wk_release_slot(w, it);
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
int wk_work_pending(const worker_t *w)
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
int wk_urgent_work(const worker_t *w)
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
size_t wk_read_budget(worker_t *w, size_t cap, int active)
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
int wk_commit_wait_ms(const worker_t *w, int pending, int max_wait_ms)
{
    int wait = sched_wait_ms(w->last_commit_mono, mono_ms(), w->cfg.worker_commit_ms, pending,
                             max_wait_ms);
    if (wait > 0 && wk_urgent_work(w)) {
        int64_t left = w->last_commit_end_mono + w->cfg.worker_commit_gap_ms - mono_ms();
        if (left < wait)
            wait = left > 0 ? (int)left : 0;
    }
    return wait;
}

/* One commit round: revoke what asked, claim, commit, then start the
 * claimed requests. Returns 0, or -1 on a fatal error (e filled). */
int wk_commit_round(worker_t *w, err_t *e)
{
    if (wk_deauthorize_items(w, e) < 0)
        return -1;
    claim_items(w);
    if (!wk_work_pending(w))
        return 0;
    rd_kafka_topic_partition_list_t *offsets = wk_current_offsets(w);
    if (!offsets) {
        /* Nothing owned: nothing may be committed (the partitions' new
         * owners resolve any open claim). */
        for (size_t i = 0; i < w->nitems; i++) {
            item_t *it = w->items[i];
            it->orphan = 1;
            if (it->claimed_now) { /* never sent */
                wk_release_slot(w, it);
                it->slot = -1;
                it->claimed_now = 0;
            }
        }
        wk_dlq_reset(w);
        wk_items_gc(w, 1);
        return 0;
    }
    metrics_counter_add(w->m_dlq, w->ndlq);
    /* The cadence runs start to start: a transaction every commit_ms, or
     * back to back when one takes longer, never commit_ms + its duration. */
    w->last_commit_mono = mono_ms();
    txn_result t = wk_commit_txn(w, offsets);
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
                wk_release_slot(w, it);
                it->slot = -1;
                it->claimed_now = 0;
                it->changed = 0;
            } else if (!it->settled && !it->inflight) {
                it->changed = 0;
            }
            it->exchange = 0;
            it->deauthorize = 0;
        }
        wk_dlq_reset(w);
        wk_items_gc(w, 0);
        return wk_rewind_consumer(w, e);
    }
    if (wk_apply_to_stores(w, e) < 0)
        return -1;
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = w->items[i];
        if (it->changed && !it->orphan) {
            it->pub_hash = it->pub_next; /* what the status topic now shows */
            it->pub_known = 1;
            wk_count_final(w, it);
        }
        it->changed = 0;
        it->settled = 0;
    }
    wk_dlq_reset(w);
    memset(w->pstate_dirty, 0, sizeof w->pstate_dirty);
    w->offsets_dirty = 0;
    start_claimed(w); /* may settle at once (changed again: next round) */
    wk_items_gc(w, 0);
    return 0;
}
