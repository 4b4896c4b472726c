/*
 * bench_util — small helpers shared by the benchmark tools of SPEC §9
 * (bench/bench-*.c): clocks, percentiles, a fast PRNG for made-up ids and
 * codes, a growable sample array and the status-topic reader.
 * Not part of the product; never linked into a product binary.
 */
#ifndef OAUTHQ_BENCH_UTIL_H
#define OAUTHQ_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "common/config.h"
#include "common/err.h"

/* Monotonic time in milliseconds (fractional). */
double bench_mono_ms(void);

/* Sleep ms milliseconds (fractional). */
void bench_sleep_ms(double ms);

/* A growable array of samples (milliseconds). */
typedef struct {
    double *v;
    size_t n, cap;
} bench_samples;

int bench_samples_add(bench_samples *s, double v);
void bench_samples_free(bench_samples *s);

/* Nearest-rank percentile q in [0, 100] of s (sorts s->v); 0 when empty. */
double bench_percentile(bench_samples *s, double q);

/* xorshift64* PRNG, seeded from the clock and pid when *state is 0. */
uint64_t bench_rand(uint64_t *state);

/* n random base64url characters into out (NUL-terminated, out[n + 1]). */
void bench_rand_b64url(uint64_t *state, char *out, size_t n);

/* Parse a decimal option value in [lo, hi]; -1 when it is not one. */
int bench_parse_long(const char *s, long lo, long hi, long *out);
int bench_parse_double(const char *s, double lo, double hi, double *out);

/* A read_committed, group-less consumer assigned to every partition of
 * topic from the beginning, tuned for low fetch latency (the benchmarks
 * time "final" from when a committed record becomes visible). */
rd_kafka_t *bench_consumer(const config_t *c, const char *topic, int timeout_ms, err_t *e);

#endif
