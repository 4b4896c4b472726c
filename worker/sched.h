/*
 * sched — the exchange pipeline's scheduling rules (SPEC §6) as pure
 * functions over a small value: in-flight slots per provider (bulkheads)
 * under the worker's total concurrency, the claim lease, the takeover hold
 * and the commit cadence. No I/O, no clock: the worker passes the times,
 * the unit tests drive every rule (tests/unit/test_sched.c).
 *
 * Why it exists: "claim only what can start now". A code is claimed only
 * when sched_take grants a claim, and its request is handed over only
 * while sched_lease_valid holds, so a claimed request never waits behind
 * others long enough for another worker to take the partition over.
 *
 * Claims may run ahead of the free slots by the slots expected to free
 * while the claim itself commits (sched_set_ahead: the worker passes how
 * many requests of the provider finished during its last commit cycle).
 * Why: a claim costs one transaction before its request may leave (10-20
 * ms here); claimed only once a slot is free, every slot would idle that
 * long per request — a third of the concurrency at 50 ms of provider
 * latency. The exchange driver keeps the wire within the limits
 * (exchange_set_lanes) and starts an ahead claim the moment a slot frees,
 * so in the steady state "claimed and waiting" is what the slots freeing
 * during the claim's commit absorb, as SPEC §6 asks; one that still finds
 * none before its lease lapses is "not sent", never sent late. When
 * nothing finishes (hangs), ahead is 0 and claims wait for free slots.
 *
 * Provider pauses (SPEC §5, issue 14 defects 2 and 6) live here too: an
 * operator pause holds every code of the provider until a resume; an
 * invalid_client answer pauses the provider for a probe interval, after
 * which exactly ONE held code goes out as a probe (never all of them with
 * the same secret); its answer either extends the pause or ends it, and
 * then the rest follow under the normal slot limits. Each pause carries
 * the time it was decided (as_of), so copies restored from several
 * partitions' changelogs and records read late agree: the newest wins.
 *
 * Threads: a sched_t belongs to the worker loop's thread.
 */
#ifndef OAUTHQ_WORKER_SCHED_H
#define OAUTHQ_WORKER_SCHED_H

#include <stdint.h>

#define SCHED_PROVIDERS_MAX 64

typedef enum {
    SCHED_RUNNING = 0,          /* not paused */
    SCHED_PAUSED_OPERATOR,      /* oauthqctl provider pause: until a resume */
    SCHED_PAUSED_INVALID_CLIENT /* invalid_client: until a probe succeeds (or a resume) */
} sched_pause_kind;

typedef struct {
    int total_limit, total_used;
    int n; /* providers */
    int limit[SCHED_PROVIDERS_MAX];
    int used[SCHED_PROVIDERS_MAX];  /* claims held: waiting for a slot or on the wire */
    int ahead[SCHED_PROVIDERS_MAX]; /* claims allowed past the limit (sched_set_ahead) */
    sched_pause_kind pause[SCHED_PROVIDERS_MAX];
    int64_t pause_until[SCHED_PROVIDERS_MAX]; /* wall ms: invalid_client's next probe */
    int64_t pause_as_of[SCHED_PROVIDERS_MAX]; /* wall ms the pause state was decided */
    int64_t probe_since[SCHED_PROVIDERS_MAX]; /* wall ms a probe was claimed, 0 none */
    int64_t probe_timeout_ms;
} sched_t;

/* Slots: concurrency in all; provider i may hold max_in_flight[i], or when 0 the default share
 * concurrency / nproviders (at least 1). max_in_flight may be NULL (all defaults). */
void sched_init(sched_t *s, int concurrency, int nproviders, const int *max_in_flight);

/* Claims provider p could make now: its free slots plus its ahead allowance, within the total's
 * (0 for an unknown p). */
int sched_free(const sched_t *s, int p);

/* Take one claim for provider p: 1 granted, 0 none free (nothing changed). */
int sched_take(sched_t *s, int p);

/* Give back a claim taken by sched_take (its request finished, or was never sent). */
void sched_release(sched_t *s, int p);

/* Provider p's ahead allowance: n requests finished during the last commit cycle; clamped to
 * 0..its limit. */
void sched_set_ahead(sched_t *s, int p, int n);

/* Claims all providers together could make now (the total's room, ahead included). */
int sched_total_free(const sched_t *s);

/* May a request claimed at claim_mono_ms still leave at now_mono_ms (monotonic clock)? */
int sched_lease_valid(int64_t claim_mono_ms, int64_t now_mono_ms, int64_t lease_ms);

/* How long after its claim time a new owner waits before re-sending an open claim:
 * lease + exchange timeout + skew margin (the old owner's request is over by then). */
int64_t sched_takeover_hold_ms(int64_t lease_ms, int64_t exchange_timeout_ms, int64_t margin_ms);

/* Is a transaction due: work is pending and commit_ms passed since the last one (or the last one
 * never happened: last_mono_ms < 0)? */
int sched_commit_due(int64_t last_mono_ms, int64_t now_mono_ms, int commit_ms, int pending);

/* Settles and claims are urgent: a user waits for the one, a free slot for the other. They go
 * in a transaction as soon as gap_ms passed since the previous one ENDED (back to back under
 * load), not at the next commit_ms tick; other work keeps the commit_ms cadence. 1 when a
 * transaction is due now by either rule. */
int sched_commit_due_urgent(int64_t last_start_mono_ms, int64_t last_end_mono_ms,
                            int64_t now_mono_ms, int commit_ms, int gap_ms, int urgent);

/* How long the loop may wait for input before the next transaction is due (0..max_wait_ms). */
int sched_wait_ms(int64_t last_mono_ms, int64_t now_mono_ms, int commit_ms, int pending,
                  int max_wait_ms);

/* Set provider p's pause state as decided at as_of_ms (kind SCHED_RUNNING = resume; until_ms is
 * the next probe time for SCHED_PAUSED_INVALID_CLIENT). Ignored (returns 0) when an equal or newer
 * state is already known; 1 when applied. */
int sched_pause_set(sched_t *s, int p, sched_pause_kind kind, int64_t until_ms, int64_t as_of_ms);

/* Until when provider p's codes are held, for the state machine (wall ms; 0 = not paused; an
 * operator pause is effectively forever; an invalid_client pause past its probe time is "now"
 * minus nothing: 0, and sched_claimable lets one probe out). */
int64_t sched_paused_until(const sched_t *s, int p, int64_t now_ms);

/* How many claims provider p may make now: the free slots when running, at most one (the
 * probe) when an invalid_client pause reached its probe time and no probe is out, else 0. */
int sched_claimable(const sched_t *s, int p, int64_t now_ms);

/* A claim for provider p is being made: 1 when it is the probe (the caller marks its item and
 * reports its answer with sched_probe_done), 0 for a normal claim. Call only after
 * sched_claimable(p) > 0. */
int sched_claim_note(sched_t *s, int p, int64_t now_ms);

/* The probe's answer: still_invalid = 1 extends the pause to now + interval_ms, 0 ends it. A
 * probe that never got an answer (not sent) passes still_invalid = -1: the next probe may go at
 * once. A probe out longer than probe_timeout_ms is forgotten by sched_claimable. */
void sched_probe_done(sched_t *s, int p, int still_invalid, int64_t now_ms, int64_t interval_ms);

/* A probe claimed at probe_since and unanswered for this long no longer blocks the next one
 * (its request is over: lease + exchange timeout have passed). */
void sched_set_probe_timeout(sched_t *s, int64_t probe_timeout_ms);

#endif
