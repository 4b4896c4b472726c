/*
 * metrics — a tiny thread-safe Prometheus registry rendered in the text
 * exposition format 0.0.4 (served by GET /metrics, SPEC §4).
 *
 * A series is (metric name, label set); a metric name has one type and one
 * help text (from its first registration). Series are created with
 * get-or-create calls and live until metrics_free; the handles returned
 * point into the registry and are never freed individually.
 *
 * Threads: registration (metrics_counter/gauge/histogram) and rendering take
 * the registry mutex and may be called from any thread. Updates
 * (metrics_*_add/set/observe) are lock-free C11 atomics (relaxed order) and
 * may be called from any thread concurrently; a histogram's sum is an atomic
 * uint64 holding the double's bits, updated by a compare-and-swap loop.
 * A render is not a snapshot across series, but each histogram's _count is
 * derived from its buckets so it always equals the +Inf bucket.
 * metrics_free must only be called once no other thread uses the registry
 * or any handle from it.
 *
 * Limits: METRICS_SERIES_MAX series in total; names ≤ METRICS_NAME_MAX-1
 * bytes matching [a-zA-Z_:][a-zA-Z0-9_:]*; labels ≤ METRICS_LABELS_MAX-1
 * bytes of well-formed name="value" pairs; histograms ≤ METRICS_BUCKETS_MAX
 * bounds. Registration past a limit or with bad input returns NULL, and every
 * update function accepts NULL and does nothing, so callers need not check.
 */
#ifndef OAUTHQ_COMMON_METRICS_H
#define OAUTHQ_COMMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define METRICS_SERIES_MAX  512
#define METRICS_BUCKETS_MAX 32
#define METRICS_NAME_MAX    128
#define METRICS_LABELS_MAX  512
#define METRICS_HELP_MAX    256
#define METRICS_TEXT_MAX                                                                           \
    (32u * 1024 * 1024) /* bound of one rendering (above what the limits allow) */

typedef struct metrics metrics_t;
typedef struct metric_counter metric_counter;
typedef struct metric_gauge metric_gauge;
typedef struct metric_histogram metric_histogram;

/* New empty registry, or NULL when out of memory. */
metrics_t *metrics_new(void);

/* Free the registry and every series in it (NULL is fine); handles become invalid. */
void metrics_free(metrics_t *m);

/* Get-or-create the counter (name, labels); labels is the inside of {...} with values escaped
 * by metrics_label_escape, or NULL/"". NULL on a bad name/labels, type conflict or limit. */
metric_counter *metrics_counter(metrics_t *m, const char *name, const char *help,
                                const char *labels);

/* Add n to a counter (NULL: no-op). Lock-free. */
void metrics_counter_add(metric_counter *c, uint64_t n);

/* Get-or-create the gauge (name, labels); same rules as metrics_counter. */
metric_gauge *metrics_gauge(metrics_t *m, const char *name, const char *help, const char *labels);

/* Set a gauge to v (NULL: no-op). Lock-free. */
void metrics_gauge_set(metric_gauge *g, int64_t v);

/* Add delta (may be negative) to a gauge (NULL: no-op). Lock-free. */
void metrics_gauge_add(metric_gauge *g, int64_t delta);

/* Get-or-create the histogram (name, labels) with strictly ascending finite upper bounds
 * (nb ≤ METRICS_BUCKETS_MAX; +Inf implicit; labels must not use "le"). An existing series
 * with different bounds is refused (NULL). Observations are in seconds by convention. */
metric_histogram *metrics_histogram(metrics_t *m, const char *name, const char *help,
                                    const char *labels, const double *bounds, size_t nb);

/* Record one observation (NULL: no-op). Lock-free. */
void metrics_histogram_observe(metric_histogram *h, double v);

/* Render every series grouped by name (one # HELP and # TYPE per name, names in registration
 * order; HELP omitted when empty); histograms as cumulative _bucket{le}, _sum, _count.
 * *out is malloc'd and NUL-terminated, *len its length; caller frees. ERRC_FATAL when out of
 * memory or longer than METRICS_TEXT_MAX. */
int metrics_render(metrics_t *m, char **out, size_t *len, err_t *e);

/* Escape a label value (\\, \", \n) into out[cap] (cap ≥ 1); truncates safely, never
 * splitting an escape sequence. */
void metrics_label_escape(const char *in, char *out, size_t cap);

#endif
