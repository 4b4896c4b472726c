/* pauses — provider pause states in the changelog (SPEC §5): one
 * provider_state.v1 record per partition and provider, so pauses survive
 * restarts and rebalances; the rules themselves are sched.c's. */
#include "worker/worker_int.h"

/* Write provider pi's pause state to partition p's changelog (all owned
 * partitions when p < 0) with the next transaction. */
void wk_pstate_mark(worker_t *w, int p, int pi)
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
char *wk_pstate_encode(const worker_t *w, int pi, err_t *e)
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
int wk_pstate_load(worker_t *w, int32_t p, err_t *e)
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
