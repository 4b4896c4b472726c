/*
 * clock — the two clocks of oauthq, named for what they measure.
 *
 * clock_wall_ms: CLOCK_REALTIME, milliseconds since the Unix epoch. For
 * timestamps that leave the process (records, status documents, logs,
 * deadlines stored in Kafka or SQLite). It can jump (NTP, operator).
 *
 * clock_mono_ms (and _us): CLOCK_MONOTONIC, since an arbitrary start. For
 * durations, timeouts and deadlines inside one process only; never stored,
 * never compared across processes.
 *
 * Both are thread-safe and never fail on Linux.
 */
#ifndef OAUTHQ_COMMON_CLOCK_H
#define OAUTHQ_COMMON_CLOCK_H

#include <stdint.h>

/* Wall-clock time, ms since the epoch. */
int64_t clock_wall_ms(void);

/* Monotonic time, ms since an arbitrary point (durations and in-process deadlines only). */
int64_t clock_mono_ms(void);

/* Monotonic time in µs, for durations shorter than a few ms (latency histograms). */
int64_t clock_mono_us(void);

#endif
