/* sched — see sched.h. Pure. */
#include "worker/sched.h"

#include <string.h>

void sched_init(sched_t *s, int concurrency, int nproviders, const int *max_in_flight)
{
    memset(s, 0, sizeof *s);
    if (concurrency < 1)
        concurrency = 1;
    if (nproviders < 0)
        nproviders = 0;
    if (nproviders > SCHED_PROVIDERS_MAX)
        nproviders = SCHED_PROVIDERS_MAX;
    s->total_limit = concurrency;
    s->n = nproviders;
    int share = nproviders > 0 ? concurrency / nproviders : concurrency;
    if (share < 1)
        share = 1;
    for (int i = 0; i < nproviders; i++) {
        int m = max_in_flight && max_in_flight[i] > 0 ? max_in_flight[i] : share;
        s->limit[i] = m < concurrency ? m : concurrency;
    }
}

int sched_free(const sched_t *s, int p)
{
    if (p < 0 || p >= s->n)
        return 0;
    int own = s->limit[p] - s->used[p];
    int all = s->total_limit - s->total_used;
    int f = own < all ? own : all;
    return f > 0 ? f : 0;
}

int sched_take(sched_t *s, int p)
{
    if (sched_free(s, p) <= 0)
        return 0;
    s->used[p]++;
    s->total_used++;
    return 1;
}

void sched_release(sched_t *s, int p)
{
    if (p < 0 || p >= s->n || s->used[p] <= 0)
        return;
    s->used[p]--;
    s->total_used--;
}

int sched_lease_valid(int64_t claim_mono_ms, int64_t now_mono_ms, int64_t lease_ms)
{
    return now_mono_ms >= claim_mono_ms && now_mono_ms - claim_mono_ms <= lease_ms;
}

int64_t sched_takeover_hold_ms(int64_t lease_ms, int64_t exchange_timeout_ms, int64_t margin_ms)
{
    return lease_ms + exchange_timeout_ms + margin_ms;
}

int sched_commit_due(int64_t last_mono_ms, int64_t now_mono_ms, int commit_ms, int pending)
{
    if (!pending)
        return 0;
    return last_mono_ms < 0 || now_mono_ms - last_mono_ms >= commit_ms;
}

int sched_wait_ms(int64_t last_mono_ms, int64_t now_mono_ms, int commit_ms, int pending,
                  int max_wait_ms)
{
    if (!pending)
        return max_wait_ms;
    if (last_mono_ms < 0)
        return 0;
    int64_t left = last_mono_ms + commit_ms - now_mono_ms;
    if (left <= 0)
        return 0;
    return left < max_wait_ms ? (int)left : max_wait_ms;
}
