/* decide — records and due work through the state machine (SPEC §4, §5,
 * §5b, §6): every schema the callbacks topic carries, the disconnects'
 * revocations, and the due scan. Poison (undecodable, unknown provider, a
 * stored row that cannot be read) goes to the DLQ and the partition keeps
 * flowing; the transitions themselves are machine.c's. */
#include "worker/worker_int.h"

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

/* item_get failed for message m: a key whose stored state cannot be read
 * is held (SPEC §6: fail closed) and the record dead-lettered, so the
 * partition keeps flowing; any other error is the caller's. */
static int held(worker_t *w, const rd_kafka_message_t *m, err_t *e)
{
    if (e->cls != ERRC_PERMANENT)
        return -1;
    wk_add_dlq(w, m, e->msg);
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
        wk_add_dlq(w, m, de.msg[0] ? de.msg : "replay: key is not its connection_id");
        return 0;
    }
    int fresh;
    item_t *it = wk_item_get(w, key, "unknown", m->partition, &fresh, e);
    if (!it)
        return held(w, m, e);
    if (it->exchange || it->claimed_now || it->inflight)
        return 0; /* already being exchanged */
    machine_action a =
        machine_on_replay(it->c, fresh, wk_paused_until(w, it->c->provider), now_ms());
    if (!fresh) /* an unknown id: nothing to record */
        wk_item_apply(it, a);
    log_kv(LOGL_INFO, "replay", "connection_id", key, "requested_by", rp.requested_by, "result",
           a == MACHINE_EXCHANGE ? "exchange"
           : fresh               ? "unknown connection"
                                 : it->c->last_error);
    return 0;
}

/* A provider.v1 record (oauthqctl provider pause|resume). Every partition
 * carries a copy, so every worker sees one; handling is idempotent. */
static int on_provider(worker_t *w, const rd_kafka_message_t *m, err_t *e)
{
    records_provider pr;
    err_t de = {0};
    if (records_provider_decode(m->payload, m->len, &pr, &de) < 0) {
        wk_add_dlq(w, m, de.msg);
        return 0;
    }
    int pi = wk_provider_index(w, pr.provider);
    if (pi < 0) {
        wk_add_dlq(w, m, "provider record: unknown provider");
        return 0;
    }
    const provider_t *pv = providers_at(w->providers, (size_t)pi);
    int64_t now = now_ms();
    /* Every partition's changelog keeps the provider's state (a copy of
     * the record reaches each partition): a restarted or newly assigned
     * worker restores it (SPEC §5). */
    wk_pstate_mark(w, m->partition, pi);
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
        if (store_due(w->parts[p].store, INT64_MAX / 2, 10000, wk_collect_id, &l, e) < 0) {
            free(l.ids);
            return -1;
        }
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
            if (fresh || it->exchange || strcmp(it->c->provider, pv->name) != 0 ||
                it->c->phase != PHASE_RETRYING)
                continue;
            wk_item_apply(it, machine_on_resume(it->c, now));
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
        wk_add_dlq(w, m, de.msg[0] ? de.msg : "disconnect: key is not its connection_id");
        return 0;
    }
    int fresh;
    item_t *it = wk_item_get(w, key, "unknown", m->partition, &fresh, e);
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
        wk_add_dlq(w, m, de.msg[0] ? de.msg : "refresh: key is not its connection_id");
        return 0;
    }
    int fresh;
    item_t *it = wk_item_get(w, key, rr.provider, m->partition, &fresh, e);
    if (!it)
        return held(w, m, e);
    machine_action a = MACHINE_UNCHANGED;
    const char *result = "coalesced";
    if (fresh || strcmp(it->c->provider, rr.provider) != 0) {
        result = fresh ? "unknown connection" : "provider mismatch";
    } else if (it->exchange || it->claimed_now || it->inflight) {
        result = "coalesced: in flight";
    } else {
        machine_refresh_policy rp = wk_refresh_policy(w, it->c->provider);
        a = machine_on_refresh_request(it->c, 0, &rp, wk_paused_until(w, it->c->provider),
                                       now_ms());
        wk_item_apply(it, a);
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
        wk_items_gc(w, 0);
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
        wk_add_dlq(w, m, de.msg[0] ? de.msg : "session: key is not its connection_id");
        return 0;
    }
    if (wk_provider_index(w, s.provider) < 0) {
        char why[64];
        snprintf(why, sizeof why, "unknown_provider: %.32s", s.provider);
        wk_add_dlq(w, m, why);
        return 0;
    }
    int fresh;
    item_t *it = wk_item_get(w, key, s.provider, m->partition, &fresh, e);
    if (!it)
        return held(w, m, e);
    machine_action a =
        machine_on_session(it->c, fresh, &s, w->cfg.session_expiry_margin_ms, now_ms());
    wk_item_apply(it, a);
    log_kv(LOGL_INFO, "session_recorded", "connection_id", key, "result",
           a == MACHINE_UNCHANGED ? "known already" : "awaiting callback", "request_id",
           s.request_id);
    if (a == MACHINE_UNCHANGED && fresh)
        wk_items_gc(w, 0);
    return 0;
}

/* Revoke at the provider for the items that asked, before the claim
 * transaction commits their offsets: a crash in between re-consumes the
 * request and revokes again, which providers treat as already done. */
int wk_deauthorize_items(worker_t *w, err_t *e)
{
    for (size_t i = 0; i < w->nitems; i++) {
        item_t *it = w->items[i];
        if (!it->deauthorize)
            continue;
        it->deauthorize = 0;
        const provider_t *pv = providers_find(w->providers, it->c->provider);
        int pi = wk_provider_index(w, it->c->provider);
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

int wk_on_message(worker_t *w, const rd_kafka_message_t *m, err_t *e)
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
    } else if (wk_provider_index(w, cb.provider) < 0) {
        snprintf(why, sizeof why, "unknown_provider: %.32s", cb.provider);
        reason = why;
    }
    if (reason) {
        wk_add_dlq(w, m, reason);
        if (usable) {
            int fresh;
            item_t *it = wk_item_get(w, key, "unknown", m->partition, &fresh, e);
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
    item_t *it = wk_item_get(w, key, cb.provider, m->partition, &fresh, e);
    if (!it) {
        crypto_wipe(&cb, sizeof cb);
        return held(w, m, e);
    }
    if (strcmp(it->c->provider, cb.provider) != 0) {
        if (wk_provider_index(w, it->c->provider) >= 0) {
            /* The state token named the provider; a record that names
             * another one is not from our intake. */
            wk_add_dlq(w, m, "provider_mismatch: record names another provider");
            crypto_wipe(&cb, sizeof cb);
            return 0;
        }
        /* State created by an earlier malformed record: adopt it. */
        machine_adopt_provider(it->c, cb.provider);
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
    crypto_wipe(&cb, sizeof cb); /* holds the code: nothing below reads cb */
    int64_t paused = wk_paused_until(w, it->c->provider); /* cb is wiped by now */
    if (a == MACHINE_EXCHANGE && paused > now_ms()) {
        machine_hold(it->c, paused, now_ms()); /* paused: held, not sent */
        a = MACHINE_CHANGED;
    }
    wk_item_apply(it, a);
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
int wk_collect_due(worker_t *w, int64_t now, err_t *e)
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
            if (store_due_provider(w->parts[p].store, name, now, want + DUE_PER_PART, wk_collect_id,
                                   &l, e) < 0) {
                free(l.ids);
                return -1;
            }
            for (size_t i = 0; i < l.n && want > 0; i++) {
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
                if (fresh || it->exchange || it->claimed_now || it->inflight)
                    continue;
                if (it->c->status == CONN_PENDING && it->c->phase == PHASE_AWAITING_CALLBACK &&
                    callbacks_handled_before(w, p) < it->c->retry_at_ms)
                    continue; /* a session: its callback may still be queued behind */
                if (paused <= now && allow <= 0 &&
                    (it->c->status == CONN_CONNECTED || now < it->c->deadline_ms))
                    continue; /* waits for the probe's answer */
                machine_action a = machine_on_due(it->c, paused, now);
                wk_item_apply(it, a);
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
