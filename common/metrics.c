/*
 * metrics — see metrics.h for the contract.
 *
 * Layout: the registry owns two arrays of pointers, families (name, help,
 * type; in first-registration order) and series (family index, labels and
 * the value cells), each element allocated once and never moved, so handles
 * stay valid until metrics_free. The registry mutex guards the arrays
 * (registration, render, free); the value cells are C11 atomics updated
 * without the lock (relaxed order: each cell is an independent statistic).
 * Histogram buckets are stored non-cumulative (one increment per
 * observation) and accumulated at render time; _count is their total.
 * The histogram sum is a double kept as its bit pattern in an atomic
 * uint64 and updated with a compare-and-swap loop.
 */
#include "common/metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

typedef enum { MT_COUNTER, MT_GAUGE, MT_HISTOGRAM } mtype;

struct metric_counter {
    _Atomic uint64_t v;
};

struct metric_gauge {
    _Atomic int64_t v;
};

struct metric_histogram {
    size_t nb;
    double bounds[METRICS_BUCKETS_MAX];
    _Atomic uint64_t buckets[METRICS_BUCKETS_MAX + 1]; /* last: (bounds[nb-1], +Inf] */
    _Atomic uint64_t sum_bits;                         /* double bits */
};

typedef struct {
    char name[METRICS_NAME_MAX];
    char help[METRICS_HELP_MAX];
    mtype type;
} family;

typedef struct {
    size_t fam;
    char labels[METRICS_LABELS_MAX];
    struct metric_counter c;
    struct metric_gauge g;
    struct metric_histogram h;
} series;

struct metrics {
    pthread_mutex_t mu;
    size_t nfam, nser;
    family *fam[METRICS_SERIES_MAX]; /* a family has ≥ 1 series, so nfam ≤ nser */
    series *ser[METRICS_SERIES_MAX];
};

static const char *const type_names[] = {"counter", "gauge", "histogram"};

metrics_t *metrics_new(void)
{
    metrics_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void metrics_free(metrics_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nser; i++)
        free(m->ser[i]);
    for (size_t i = 0; i < m->nfam; i++)
        free(m->fam[i]);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* ---- validation ------------------------------------------------------------ */

static int name_valid(const char *s)
{
    if (!s || !*s || strlen(s) >= METRICS_NAME_MAX)
        return 0;
    for (const char *p = s; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
        if (!alpha && !(p > s && *p >= '0' && *p <= '9'))
            return 0;
    }
    return 1;
}

/* name="value"(,name="value")* with only \\ \" \n escapes; "le" refused for histograms. */
static int labels_valid(const char *s, int histogram)
{
    if (strlen(s) >= METRICS_LABELS_MAX)
        return 0;
    const char *p = s;
    while (*p) {
        const char *n0 = p;
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_'))
            return 0;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
               (*p >= '0' && *p <= '9'))
            p++;
        if (histogram && p - n0 == 2 && memcmp(n0, "le", 2) == 0)
            return 0;
        if (*p++ != '=' || *p++ != '"')
            return 0;
        while (*p != '"') {
            if (*p == '\0' || *p == '\n')
                return 0;
            if (*p == '\\') {
                p++;
                if (*p != '\\' && *p != '"' && *p != 'n')
                    return 0;
            }
            p++;
        }
        p++; /* closing quote */
        if (*p == ',' && p[1] != '\0')
            p++;
        else if (*p != '\0')
            return 0;
    }
    return 1;
}

static int bounds_valid(const double *b, size_t nb)
{
    if (nb > METRICS_BUCKETS_MAX || (nb > 0 && !b))
        return 0;
    for (size_t i = 0; i < nb; i++) {
        if (!isfinite(b[i]) || (i > 0 && !(b[i] > b[i - 1])))
            return 0;
    }
    return 1;
}

/* Copy help, cutting at a UTF-8 character boundary. */
static void copy_help(char *out, const char *help)
{
    size_t n = help ? strlen(help) : 0;
    if (n >= METRICS_HELP_MAX) {
        n = METRICS_HELP_MAX - 1;
        while (n > 0 && ((unsigned char)help[n] & 0xC0) == 0x80)
            n--;
    }
    if (n)
        memcpy(out, help, n);
    out[n] = '\0';
}

/* ---- registration ------------------------------------------------------------ */

static series *get_or_create(metrics_t *m, const char *name, const char *help, const char *labels,
                             mtype t, const double *bounds, size_t nb)
{
    if (!labels)
        labels = "";
    if (!m || !name_valid(name) || !labels_valid(labels, t == MT_HISTOGRAM))
        return NULL;
    if (t == MT_HISTOGRAM && !bounds_valid(bounds, nb))
        return NULL;
    series *found = NULL;
    pthread_mutex_lock(&m->mu);
    size_t fi = m->nfam;
    for (size_t i = 0; i < m->nfam; i++) {
        if (strcmp(m->fam[i]->name, name) == 0) {
            fi = i;
            break;
        }
    }
    if (fi < m->nfam) {
        if (m->fam[fi]->type != t)
            goto out; /* type conflict */
        for (size_t i = 0; i < m->nser; i++) {
            series *s = m->ser[i];
            if (s->fam == fi && strcmp(s->labels, labels) == 0) {
                if (t == MT_HISTOGRAM &&
                    (s->h.nb != nb || (nb && memcmp(s->h.bounds, bounds, nb * sizeof *bounds))))
                    goto out; /* same series, other buckets */
                found = s;
                goto out;
            }
        }
    }
    if (m->nser >= METRICS_SERIES_MAX)
        goto out;
    series *s = calloc(1, sizeof *s);
    family *f = NULL;
    if (!s)
        goto out;
    if (fi == m->nfam) {
        f = calloc(1, sizeof *f);
        if (!f) {
            free(s);
            goto out;
        }
        snprintf(f->name, sizeof f->name, "%s", name);
        copy_help(f->help, help);
        f->type = t;
        m->fam[m->nfam++] = f;
    }
    s->fam = fi;
    snprintf(s->labels, sizeof s->labels, "%s", labels);
    atomic_init(&s->c.v, 0);
    atomic_init(&s->g.v, 0);
    s->h.nb = nb;
    if (nb)
        memcpy(s->h.bounds, bounds, nb * sizeof *bounds);
    for (size_t i = 0; i <= METRICS_BUCKETS_MAX; i++)
        atomic_init(&s->h.buckets[i], 0);
    atomic_init(&s->h.sum_bits, 0); /* all-zero bits == 0.0 */
    m->ser[m->nser++] = s;
    found = s;
out:
    pthread_mutex_unlock(&m->mu);
    return found;
}

metric_counter *metrics_counter(metrics_t *m, const char *name, const char *help,
                                const char *labels)
{
    series *s = get_or_create(m, name, help, labels, MT_COUNTER, NULL, 0);
    return s ? &s->c : NULL;
}

metric_gauge *metrics_gauge(metrics_t *m, const char *name, const char *help, const char *labels)
{
    series *s = get_or_create(m, name, help, labels, MT_GAUGE, NULL, 0);
    return s ? &s->g : NULL;
}

metric_histogram *metrics_histogram(metrics_t *m, const char *name, const char *help,
                                    const char *labels, const double *bounds, size_t nb)
{
    series *s = get_or_create(m, name, help, labels, MT_HISTOGRAM, bounds, nb);
    return s ? &s->h : NULL;
}

/* ---- updates (lock-free) ------------------------------------------------------ */

void metrics_counter_add(metric_counter *c, uint64_t n)
{
    if (c)
        atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

void metrics_gauge_set(metric_gauge *g, int64_t v)
{
    if (g)
        atomic_store_explicit(&g->v, v, memory_order_relaxed);
}

void metrics_gauge_add(metric_gauge *g, int64_t delta)
{
    if (g)
        atomic_fetch_add_explicit(&g->v, delta, memory_order_relaxed);
}

void metrics_histogram_observe(metric_histogram *h, double v)
{
    if (!h)
        return;
    size_t i = 0;
    while (i < h->nb && !(v <= h->bounds[i]))
        i++; /* NaN lands in +Inf */
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
    for (;;) {
        double d;
        memcpy(&d, &old, sizeof d);
        d += v;
        uint64_t nw;
        memcpy(&nw, &d, sizeof nw);
        if (atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, nw, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
}

/* ---- rendering ------------------------------------------------------------------ */

/* Shortest text that reads back as v; Prometheus spellings for NaN/±Inf. */
static void fmt_double(double v, char *out, size_t cap)
{
    if (isnan(v)) {
        snprintf(out, cap, "NaN");
    } else if (isinf(v)) {
        snprintf(out, cap, "%s", v > 0 ? "+Inf" : "-Inf");
    } else if (fabs(v) < 1e15 && v == (double)(int64_t)v) {
        snprintf(out, cap, "%" PRId64, (int64_t)v);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(out, cap, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                return;
        }
    }
}

/* HELP text escaping: \\ and \n. */
static void sb_help(buf_t *b, const char *help)
{
    for (const char *p = help; *p; p++) {
        if (*p == '\\')
            buf_printf(b, "\\\\");
        else if (*p == '\n')
            buf_printf(b, "\\n");
        else
            buf_printf(b, "%c", *p);
    }
}

static void render_series(buf_t *b, const family *f, const series *s)
{
    const char *l = s->labels;
    const char *lo = *l ? "{" : "", *lc = *l ? "}" : "";
    char num[64];
    switch (f->type) {
    case MT_COUNTER:
        buf_printf(b, "%s%s%s%s %" PRIu64 "\n", f->name, lo, l, lc,
                   atomic_load_explicit(&s->c.v, memory_order_relaxed));
        break;
    case MT_GAUGE:
        buf_printf(b, "%s%s%s%s %" PRId64 "\n", f->name, lo, l, lc,
                   atomic_load_explicit(&s->g.v, memory_order_relaxed));
        break;
    case MT_HISTOGRAM: {
        const struct metric_histogram *h = &s->h;
        const char *sep = *l ? "," : "";
        uint64_t cum = 0;
        for (size_t i = 0; i <= h->nb; i++) {
            cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
            if (i < h->nb)
                fmt_double(h->bounds[i], num, sizeof num);
            else
                snprintf(num, sizeof num, "+Inf");
            buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", f->name, l, sep, num, cum);
        }
        uint64_t bits = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
        double sum;
        memcpy(&sum, &bits, sizeof sum);
        fmt_double(sum, num, sizeof num);
        buf_printf(b, "%s_sum%s%s%s %s\n", f->name, lo, l, lc, num);
        buf_printf(b, "%s_count%s%s%s %" PRIu64 "\n", f->name, lo, l, lc, cum);
        break;
    }
    }
}

int metrics_render(metrics_t *m, char **out, size_t *len, err_t *e)
{
    if (!m || !out)
        return err_set(e, ERRC_PERMANENT, "metrics_render: bad arguments");
    buf_t b;
    buf_init(&b, METRICS_TEXT_MAX, 0);
    pthread_mutex_lock(&m->mu);
    for (size_t fi = 0; fi < m->nfam && !buf_error(&b); fi++) {
        const family *f = m->fam[fi];
        if (f->help[0]) {
            buf_printf(&b, "# HELP %s ", f->name);
            sb_help(&b, f->help);
            buf_printf(&b, "\n");
        }
        buf_printf(&b, "# TYPE %s %s\n", f->name, type_names[f->type]);
        for (size_t si = 0; si < m->nser; si++)
            if (m->ser[si]->fam == fi)
                render_series(&b, f, m->ser[si]);
    }
    pthread_mutex_unlock(&m->mu);
    int err = buf_error(&b);
    *out = buf_take(&b, len);
    if (!*out)
        return err_set(e, ERRC_FATAL, "metrics_render: %s",
                       err == BUF_TOO_LARGE ? "text larger than METRICS_TEXT_MAX"
                                            : "out of memory");
    return 0;
}

/* ---- label escaping --------------------------------------------------------------- */

void metrics_label_escape(const char *in, char *out, size_t cap)
{
    if (!out || cap == 0)
        return;
    size_t o = 0;
    int cut = 0;
    for (const char *p = in ? in : ""; *p; p++) {
        const char *rep = NULL;
        if (*p == '\\')
            rep = "\\\\";
        else if (*p == '"')
            rep = "\\\"";
        else if (*p == '\n')
            rep = "\\n";
        size_t need = rep ? 2 : 1;
        if (o + need >= cap) {
            cut = 1;
            break;
        }
        if (rep) {
            memcpy(out + o, rep, 2);
        } else {
            out[o] = *p;
        }
        o += need;
    }
    if (cut) {
        /* Drop a UTF-8 sequence left incomplete by the cut. */
        size_t k = o;
        while (k > 0 && o - k < 4 && ((unsigned char)out[k - 1] & 0xC0) == 0x80)
            k--;
        if (k > 0 && ((unsigned char)out[k - 1] & 0x80)) {
            unsigned char lead = (unsigned char)out[k - 1];
            size_t want = (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : 4;
            if (o - (k - 1) < want)
                o = k - 1;
        }
    }
    out[o] = '\0';
}
