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
    s->probe_timeout_ms = 60000;
}

int sched_free(const sched_t *s, int p)
{
    if (p < 0 || p >= s->n)
        return 0;
    int total_ahead = 0;
    for (int i = 0; i < s->n; i++)
        total_ahead += s->ahead[i];
    int own = s->limit[p] + s->ahead[p] - s->used[p];
    int all = s->total_limit + total_ahead - s->total_used;
    int f = own < all ? own : all;
    return f > 0 ? f : 0;
}

void sched_set_ahead(sched_t *s, int p, int n)
{
    if (p < 0 || p >= s->n)
        return;
    if (n > s->limit[p])
        n = s->limit[p];
    s->ahead[p] = n > 0 ? n : 0;
}

int sched_total_free(const sched_t *s)
{
    int total_ahead = 0, own = 0;
    for (int i = 0; i < s->n; i++) {
        total_ahead += s->ahead[i];
        int f = s->limit[i] + s->ahead[i] - s->used[i];
        own += f > 0 ? f : 0;
    }
    int all = s->total_limit + total_ahead - s->total_used;
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

int sched_commit_due_urgent(int64_t last_start_mono_ms, int64_t last_end_mono_ms,
                            int64_t now_mono_ms, int commit_ms, int gap_ms, int urgent)
{
    if (sched_commit_due(last_start_mono_ms, now_mono_ms, commit_ms, 1))
        return 1;
    return urgent && (last_end_mono_ms < 0 || now_mono_ms - last_end_mono_ms >= gap_ms);
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

static int valid(const sched_t *s, int p)
{
    return p >= 0 && p < s->n;
}

int sched_pause_set(sched_t *s, int p, sched_pause_kind kind, int64_t until_ms, int64_t as_of_ms)
{
    if (!valid(s, p) || as_of_ms < s->pause_as_of[p] ||
        (as_of_ms == s->pause_as_of[p] && s->pause_as_of[p] != 0))
        return 0;
    s->pause[p] = kind;
    s->pause_until[p] = kind == SCHED_PAUSED_INVALID_CLIENT ? until_ms : 0;
    s->pause_as_of[p] = as_of_ms;
    s->probe_since[p] = 0;
    return 1;
}

int64_t sched_paused_until(const sched_t *s, int p, int64_t now_ms)
{
    if (!valid(s, p))
        return 0;
    switch (s->pause[p]) {
    case SCHED_PAUSED_OPERATOR:
        return INT64_MAX / 2;
    case SCHED_PAUSED_INVALID_CLIENT:
        return s->pause_until[p] > now_ms ? s->pause_until[p] : 0;
    case SCHED_RUNNING:
        break;
    }
    return 0;
}

static int probe_out(const sched_t *s, int p, int64_t now_ms)
{
    return s->probe_since[p] != 0 && now_ms - s->probe_since[p] < s->probe_timeout_ms;
}

int sched_claimable(const sched_t *s, int p, int64_t now_ms)
{
    if (!valid(s, p))
        return 0;
    int f = sched_free(s, p);
    switch (s->pause[p]) {
    case SCHED_PAUSED_OPERATOR:
        return 0;
    case SCHED_PAUSED_INVALID_CLIENT:
        if (s->pause_until[p] > now_ms || probe_out(s, p, now_ms))
            return 0;
        return f > 0 ? 1 : 0;
    case SCHED_RUNNING:
        break;
    }
    return f;
}

int sched_claim_note(sched_t *s, int p, int64_t now_ms)
{
    if (!valid(s, p) || s->pause[p] != SCHED_PAUSED_INVALID_CLIENT)
        return 0;
    s->probe_since[p] = now_ms > 0 ? now_ms : 1;
    return 1;
}

void sched_probe_done(sched_t *s, int p, int still_invalid, int64_t now_ms, int64_t interval_ms)
{
    if (!valid(s, p))
        return;
    s->probe_since[p] = 0;
    if (s->pause[p] != SCHED_PAUSED_INVALID_CLIENT || still_invalid < 0)
        return;
    if (still_invalid) {
        s->pause_until[p] = now_ms + interval_ms;
        return;
    }
    /* as_of stays the pause's: an operator's later pause or resume still applies. */
    s->pause[p] = SCHED_RUNNING;
    s->pause_until[p] = 0;
}

void sched_set_probe_timeout(sched_t *s, int64_t probe_timeout_ms)
{
    s->probe_timeout_ms = probe_timeout_ms > 0 ? probe_timeout_ms : 1;
}
