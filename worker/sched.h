/*
 * sched — the exchange pipeline's scheduling rules (SPEC §6) as pure
 * functions over a small value: in-flight slots per provider (bulkheads)
 * under the worker's total concurrency, the claim lease, the takeover hold
 * and the commit cadence. No I/O, no clock: the worker passes the times,
 * the unit tests drive every rule (tests/unit/test_sched.c).
 *
 * Why it exists: "claim only what can start now". A code is claimed only
 * when sched_take grants a slot, and its request is handed to curl only
 * while sched_lease_valid holds, so a claimed request never waits behind
 * others long enough for another worker to take the partition over.
 *
 * Threads: a sched_t belongs to the worker loop's thread.
 */
#ifndef OAUTHQ_WORKER_SCHED_H
#define OAUTHQ_WORKER_SCHED_H

#include <stdint.h>

#define SCHED_PROVIDERS_MAX 64

typedef struct {
    int total_limit, total_used;
    int n; /* providers */
    int limit[SCHED_PROVIDERS_MAX];
    int used[SCHED_PROVIDERS_MAX];
} sched_t;

/* Slots: concurrency in all; provider i may hold max_in_flight[i], or when 0 the default share
 * concurrency / nproviders (at least 1). max_in_flight may be NULL (all defaults). */
void sched_init(sched_t *s, int concurrency, int nproviders, const int *max_in_flight);

/* Slots provider p could take now (0 for an unknown p). */
int sched_free(const sched_t *s, int p);

/* Take one slot for provider p: 1 granted, 0 none free (nothing changed). */
int sched_take(sched_t *s, int p);

/* Give back a slot taken by sched_take (a request finished or was never sent). */
void sched_release(sched_t *s, int p);

/* May a request claimed at claim_mono_ms still leave at now_mono_ms (monotonic clock)? */
int sched_lease_valid(int64_t claim_mono_ms, int64_t now_mono_ms, int64_t lease_ms);

/* How long after its claim time a new owner waits before re-sending an open claim:
 * lease + exchange timeout + skew margin (the old owner's request is over by then). */
int64_t sched_takeover_hold_ms(int64_t lease_ms, int64_t exchange_timeout_ms, int64_t margin_ms);

/* Is a transaction due: work is pending and commit_ms passed since the last one (or the last one
 * never happened: last_mono_ms < 0)? */
int sched_commit_due(int64_t last_mono_ms, int64_t now_mono_ms, int commit_ms, int pending);

/* How long the loop may wait for input before the next transaction is due (0..max_wait_ms). */
int sched_wait_ms(int64_t last_mono_ms, int64_t now_mono_ms, int commit_ms, int pending,
                  int max_wait_ms);

#endif
